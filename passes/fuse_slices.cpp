#include "passes/fuse_slices.h"

#include <algorithm>
#include <map>
#include <optional>

#include "lwc/graph_edit.h"
#include "lwc/shape_inference.h"

namespace lwc::passes {

namespace {

/// The single value of a constant integer input (one element), or nullopt.
std::optional<int64_t> oneInt(const Graph& g, const Node& n, size_t k) {
  const Tensor* t = n.hasInput(k) ? intConstant(g, n.inputs[k]) : nullptr;
  if (!t || t->numel() != 1) return std::nullopt;
  return intValues(*t)[0];
}

struct Piece {
  size_t node;
  int64_t axis, start, end;  // resolved: 0 <= start < end <= size of the axis
};

/// A Slice's one axis and range, resolved against its data input's shape; nullopt when it is not
/// a single-axis, step-1 slice with constant bounds along an axis of known size.
std::optional<Piece> pieceOf(const Graph& g, int64_t opset, const ValueTypes& types, size_t i) {
  const Node& n = g.nodes[i];
  if (n.op_type != "Slice" || !n.domain.empty() || n.inputs.empty() || n.inputs[0].empty() || n.outputs.size() != 1)
    return std::nullopt;
  const auto it = types.find(n.inputs[0]);
  if (it == types.end() || !it->second.shape) return std::nullopt;
  const SymShape& s = *it->second.shape;
  std::optional<int64_t> start, end, axis = 0;
  if (opset < 10) {
    const auto st = n.attrInts("starts"), en = n.attrInts("ends"), ax = n.attrInts("axes", {0});
    if (st.size() != 1 || en.size() != 1 || ax.size() != 1) return std::nullopt;
    start = st[0], end = en[0], axis = ax[0];
  } else {
    start = oneInt(g, n, 1), end = oneInt(g, n, 2);
    if (n.hasInput(3)) axis = oneInt(g, n, 3);
    if (n.hasInput(4) && oneInt(g, n, 4) != std::optional<int64_t>{1}) return std::nullopt;
  }
  if (!start || !end || !axis) return std::nullopt;
  const auto rank = static_cast<int64_t>(s.size());
  int64_t a = *axis < 0 ? *axis + rank : *axis;
  if (a < 0 || a >= rank || !s[static_cast<size_t>(a)].known()) return std::nullopt;
  const int64_t d = s[static_cast<size_t>(a)].value;
  auto resolve = [d](int64_t v) { return std::clamp(v < 0 ? v + d : v, int64_t{0}, d); };
  const int64_t b = resolve(*start), e = resolve(*end);
  if (b >= e) return std::nullopt;
  return Piece{i, a, b, e};
}

}  // namespace

PassResult FuseSlices::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  const int64_t opset = m.opsetFor("");
  PassResult r;
  if (opset < 2) return r;
  const ValueTypes types = inferShapes(m);
  // Pieces per (tensor, axis), in node order.
  std::map<std::pair<std::string, int64_t>, std::vector<Piece>> cuts;
  std::vector<std::pair<std::string, int64_t>> order;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (auto p = pieceOf(g, opset, types, i)) {
      auto key = std::make_pair(g.nodes[i].inputs[0], p->axis);
      if (!cuts.count(key)) order.push_back(key);
      cuts[key].push_back(*p);
    }
  std::vector<size_t> erase;
  std::vector<std::string> maybe_unused;
  int64_t fused = 0, replaced = 0;
  for (const auto& key : order) {
    std::vector<Piece> ps = cuts[key];
    if (ps.size() < 2) continue;
    std::sort(ps.begin(), ps.end(), [](const Piece& x, const Piece& y) { return x.start < y.start; });
    const SymShape& s = *types.at(key.first).shape;
    bool tiles = ps.front().start == 0 && ps.back().end == s[static_cast<size_t>(key.second)].value;
    for (size_t k = 1; k < ps.size(); ++k) tiles = tiles && ps[k].start == ps[k - 1].end;
    if (!tiles) {
      r.notes.push_back(std::to_string(ps.size()) + " Slices of '" + key.first + "' along axis " + std::to_string(key.second) +
                        ": left alone (their ranges leave gaps or overlap)");
      continue;
    }
    // The Split stands where the first Slice in node order stood; the others go.
    const size_t first = std::min_element(ps.begin(), ps.end(), [](const Piece& x, const Piece& y) { return x.node < y.node; })->node;
    std::vector<std::string> outs;
    std::vector<int64_t> sizes;
    for (const auto& p : ps) {
      outs.push_back(g.nodes[p.node].outputs[0]);
      sizes.push_back(p.end - p.start);
      if (p.node != first) erase.push_back(p.node);
      const auto& in = g.nodes[p.node].inputs;
      maybe_unused.insert(maybe_unused.end(), in.begin() + 1, in.end());
    }
    Node split;
    split.op_type = "Split";
    const std::string& base = g.nodes[first].name;
    split.name = base.empty() ? "" : g.uniqueName(base + "_split");
    split.inputs = {key.first};
    split.outputs = outs;
    split.setAttr("axis", key.second);
    std::string what;
    for (const auto& p : ps) what += (what.empty() ? "" : ", ") + g.nodes[p.node].describe();
    r.notes.push_back(what + ": one Split along axis " + std::to_string(key.second));
    g.nodes[first] = std::move(split);
    setSplitSizes(g, first, opset, sizes, key.first + "_split_sizes");
    ++fused;
    replaced += static_cast<int64_t>(ps.size());
  }
  std::sort(erase.begin(), erase.end(), std::greater<>());
  for (size_t i : erase) g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
  const int64_t dropped = dropUnusedConstants(g, maybe_unused);
  r.stats = {{"splits", fused}, {"slices_replaced", replaced},
             {"initializers_removed", dropped}};
  r.changed = fused > 0;
  return r;
}

}  // namespace lwc::passes
