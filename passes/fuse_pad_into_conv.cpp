#include "passes/fuse_pad_into_conv.h"

#include "lwc/graph_edit.h"

namespace lwc::passes {

namespace {

std::optional<std::vector<int64_t>> constInts(const Graph& g, const Node& n, size_t i) {
  if (!n.hasInput(i)) return std::nullopt;
  const Tensor* t = g.initializers.find(n.inputs[i]);
  if (!t || (t->dtype() != DType::Int64 && t->dtype() != DType::Int32) || g.isGraphInput(n.inputs[i]))
    return std::nullopt;
  std::vector<int64_t> v;
  for (int64_t k = 0; k < t->numel(); ++k) v.push_back(static_cast<int64_t>(t->at(k)));
  return v;
}

// Per-axis (begin, end) pads of a Pad node over `rank` axes, or why it cannot be merged.
std::string padsOf(const Model& m, const Node& p, size_t rank, std::vector<int64_t>& begin, std::vector<int64_t>& end) {
  const Graph& g = m.graph;
  const int64_t opset = m.opsetFor("");
  if (p.attrString("mode", "constant") != "constant") return "mode is not constant";
  std::vector<int64_t> pads;
  if (opset < 11) {
    pads = p.attrInts(p.hasAttr("pads") ? "pads" : "paddings");
    if (p.attrFloat("value", 0.0f) != 0.0f) return "pad value is not 0";
  } else {
    auto v = constInts(g, p, 1);
    if (!v) return "pads are not constant";
    pads = *v;
    if (p.hasInput(2)) {
      const Tensor* cv = g.initializers.find(p.inputs[2]);
      if (!cv || cv->numel() != 1 || cv->at(0) != 0.0) return "pad value is not a constant 0";
    }
  }
  std::vector<int64_t> axes;
  if (p.hasInput(3)) {
    auto a = constInts(g, p, 3);
    if (!a) return "axes are not constant";
    axes = *a;
  } else {
    for (size_t i = 0; i < pads.size() / 2; ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (pads.size() != 2 * axes.size()) return "pads do not match the axes";
  begin.assign(rank, 0);
  end.assign(rank, 0);
  for (size_t k = 0; k < axes.size(); ++k) {
    int64_t ax = axes[k] < 0 ? axes[k] + static_cast<int64_t>(rank) : axes[k];
    if (ax < 0 || ax >= static_cast<int64_t>(rank)) return "pad axes do not fit the Conv input rank";
    begin[static_cast<size_t>(ax)] += pads[k];
    end[static_cast<size_t>(ax)] += pads[k + axes.size()];
  }
  for (size_t ax = 0; ax < rank; ++ax) {
    if (begin[ax] < 0 || end[ax] < 0) return "negative pads (cropping)";
    if (ax < 2 && (begin[ax] != 0 || end[ax] != 0)) return "it pads the batch or channel axis";
  }
  return "";
}

}  // namespace

PassResult FusePadIntoConv::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  PassResult r;
  int64_t fused = 0, left = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node pad = g.nodes[i];
    if (pad.op_type != "Pad" || !pad.domain.empty() || pad.outputs.size() != 1) continue;
    const std::string& p_out = pad.outputs[0];
    if (g.isGraphOutput(p_out) || useCount(g, p_out) != 1) continue;
    size_t ci = 0;
    while (ci < g.nodes.size() && !(!g.nodes[ci].inputs.empty() && g.nodes[ci].inputs[0] == p_out)) ++ci;
    if (ci == g.nodes.size() || g.nodes[ci].op_type != "Conv" || !g.nodes[ci].domain.empty()) continue;
    const Node& conv = g.nodes[ci];
    const Tensor* w = conv.inputs.size() > 1 ? g.initializers.find(conv.inputs[1]) : nullptr;
    const std::string auto_pad = conv.attrString("auto_pad", "NOTSET");
    std::string why;
    std::vector<int64_t> begin, end;
    if (!w) why = "the Conv's weights are not constant (rank unknown)";
    else if (auto_pad != "NOTSET") why = "the Conv uses auto_pad " + auto_pad;
    else why = padsOf(m, pad, w->rank(), begin, end);
    if (!why.empty()) {
      r.notes.push_back(pad.describe() + ": left alone: " + why);
      ++left;
      continue;
    }
    const size_t spatial = w->rank() - 2;
    std::vector<int64_t> cp = conv.attrInts("pads", std::vector<int64_t>(2 * spatial, 0));
    if (cp.size() != 2 * spatial) {
      r.notes.push_back(pad.describe() + ": left alone: the Conv's pads attribute has the wrong length");
      ++left;
      continue;
    }
    for (size_t s = 0; s < spatial; ++s) {
      cp[s] += begin[s + 2];
      cp[s + spatial] += end[s + 2];
    }
    Node& c = g.nodes[ci];
    c.setAttr("pads", cp);
    c.inputs[0] = pad.inputs[0];
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    dropUnusedConstants(g, std::vector<std::string>(pad.inputs.begin() + 1, pad.inputs.end()));
    --i;
    ++fused;
  }
  r.stats = {{"fused", fused}, {"left_alone", left}};
  r.changed = fused > 0;
  return r;
}

}  // namespace lwc::passes
