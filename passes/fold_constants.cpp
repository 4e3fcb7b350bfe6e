#include "passes/fold_constants.h"

#include <map>
#include <set>

#include "lwc/engine.h"
#include "lwc/graph_edit.h"
#include "lwc/shape_inference.h"

namespace lwc::passes {

namespace {

/// Gather(Shape(x), k) with constant indices k whose dimensions of x are known, though others
/// (the batch) are not: torch.onnx.export sizes x.chunk(2, 1) and views from x.size(1) this way.
std::optional<Tensor> knownShapeDims(const Model& m, const ValueTypes& types, const Node& n) {
  const Graph& g = m.graph;
  if (n.op_type != "Gather" || n.inputs.size() != 2 || n.attrInt("axis", 0) != 0) return std::nullopt;
  const int p = producerIndex(g, n.inputs[0]);
  if (p < 0) return std::nullopt;
  const Node& shape = g.nodes[static_cast<size_t>(p)];
  if (shape.op_type != "Shape" || !shape.domain.empty() || shape.hasAttr("start") || shape.hasAttr("end")) return std::nullopt;
  const Tensor* idx = intConstant(g, n.inputs[1]);
  const auto it = types.find(shape.inputs[0]);
  if (!idx || it == types.end() || !it->second.shape) return std::nullopt;
  const SymShape& s = *it->second.shape;
  const auto rank = static_cast<int64_t>(s.size());
  std::vector<int64_t> v;
  for (int64_t k : intValues(*idx)) {
    if (k < 0) k += rank;
    if (k < 0 || k >= rank || !s[static_cast<size_t>(k)].known()) return std::nullopt;
    v.push_back(s[static_cast<size_t>(k)].value);
  }
  return Tensor::fromVector<int64_t>(idx->shape(), v);
}

/// Shape(x): the dimensions it selects (all, or start/end of opset 15) when each of them is known,
/// though others may not be (an uneven Split of a newer opset reads its axis' size this way).
std::optional<Tensor> knownShapeSlice(const ValueTypes& types, const Node& n) {
  const auto it = types.find(n.inputs[0]);
  if (it == types.end() || !it->second.shape) return std::nullopt;
  const SymShape& s = *it->second.shape;
  const auto rank = static_cast<int64_t>(s.size());
  const auto [start, end] = shapeSliceBounds(rank, n.attrInt("start", 0), n.attrInt("end", rank));
  std::vector<int64_t> v;
  for (int64_t k = start; k < end; ++k) {
    if (!s[static_cast<size_t>(k)].known()) return std::nullopt;
    v.push_back(s[static_cast<size_t>(k)].value);
  }
  return Tensor::fromVector<int64_t>({static_cast<int64_t>(v.size())}, v);
}

}  // namespace

std::vector<OptionSpec> FoldConstants::optionSpecs() const {
  OptionSpec growth{"max_growth_kb", OptionType::Int, 1024,
                    "Skip a node whose outputs exceed its inputs by more than this many KiB"};
  growth.min = 0;
  return {growth};
}

PassResult FoldConstants::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  const int64_t max_growth = options_.getInt("max_growth_kb") * 1024;
  PassResult r;
  int64_t folded = 0, bypassed = 0, skipped_size = 0, skipped_output = 0, widened = 0, widened_bytes = 0;
  std::vector<std::string> maybe_unused;
  std::set<std::string> noted;  // first outputs of the nodes left alone with a note
  // A fold can make later shapes known (a Reshape's target, a Slice's bounds, dimensions read from
  // a Shape), and with them more folds: infer again and repeat while a round folds anything.
  // torchvision's swin_t at a fixed batch needs one round per chain of window reshapes.
  for (int64_t round = 0, again = 1; again > 0 && round < 64; ++round) {
    again = 0;
    const ValueTypes types = inferShapes(m);
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      if (!n.domain.empty() || n.op_type == "DequantizeLinear") continue;
      std::optional<std::vector<Tensor>> outs;
      int64_t in_bytes = 0;
      if ((n.op_type == "Shape" || n.op_type == "Size") && n.hasInput(0) && !g.initializers.contains(n.inputs[0])) {
        if (n.op_type == "Shape") {
          auto dims = knownShapeSlice(types, n);
          if (!dims) continue;
          outs = std::vector<Tensor>{std::move(*dims)};
        } else {
          auto s = concreteShape(types, n.inputs[0]);
          if (!s) continue;
          outs = std::vector<Tensor>{Tensor::scalar<int64_t>(numelOf(*s))};
        }
      } else if (auto dims = knownShapeDims(m, types, n)) {
        outs = std::vector<Tensor>{std::move(*dims)};
      } else {
        std::vector<const Tensor*> ins;
        bool all_const = true;
        for (const auto& in : n.inputs) {
          const Tensor* t = in.empty() ? nullptr : g.initializers.find(in);
          all_const = all_const && (in.empty() || (t && !g.isGraphInput(in)));
          ins.push_back(t);
          if (t) in_bytes += static_cast<int64_t>(t->nbytes());
        }
        if (!all_const) continue;
        bool makes_output = false;
        for (const auto& o : n.outputs) makes_output = makes_output || (!o.empty() && g.isGraphOutput(o));
        if (makes_output) {
          if (noted.insert(n.outputs.front()).second) {
            ++skipped_output;
            r.notes.push_back(n.describe() + ": left alone: it produces a graph output");
          }
          continue;
        }
        // An Identity of a constant (torch's export shares a parameter, such as the ones and zeros of
        // freshly initialised LayerNorms, this way): its readers read the constant itself, so the
        // parameter stays shared instead of becoming one copy per reader.
        if (n.op_type == "Identity" && n.inputs.size() == 1 && n.outputs.size() == 1 &&
            bypassNode(g, i, n.inputs[0], n.outputs[0])) {
          --i;
          ++folded;
          ++bypassed;
          continue;
        }
        outs = engine::evaluateNode(m, n, ins);
      }
      if (!outs) continue;
      int64_t out_bytes = 0;
      for (const auto& t : *outs) out_bytes += static_cast<int64_t>(t.nbytes());
      if (out_bytes > in_bytes + max_growth) {
        if (!noted.insert(n.outputs.front()).second) continue;
        ++skipped_size;
        r.notes.push_back(n.describe() + ": left alone: folding would add " + std::to_string((out_bytes - in_bytes) / 1024) +
                          " KiB (max_growth_kb " + std::to_string(max_growth / 1024) + ")");
        continue;
      }
      // float16 weights stored beside a Cast to float32 become float32 weights: the file grows,
      // which the report's bytes show and a note says (lwc's passes work on float32 weights).
      if (n.op_type == "Cast" && n.inputs.size() == 1 && outs->size() == 1) {
        const Tensor* src = g.initializers.find(n.inputs[0]);
        if (src && (src->dtype() == DType::Float16) && (*outs)[0].dtype() == DType::Float32) {
          ++widened;
          widened_bytes += static_cast<int64_t>((*outs)[0].nbytes() - src->nbytes());
        }
      }
      for (size_t o = 0; o < outs->size(); ++o)
        if (!n.outputs[o].empty()) g.initializers.set(n.outputs[o], (*outs)[o]);
      maybe_unused.insert(maybe_unused.end(), n.inputs.begin(), n.inputs.end());
      g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
      --i;
      ++folded;
      ++again;
    }
  }
  // Folded outputs no longer need value_info entries (initializers carry their own type).
  std::erase_if(g.value_info, [&](const ValueInfo& v) { return g.initializers.contains(v.name); });
  const int64_t dropped = dropUnusedConstants(g, maybe_unused);
  if (widened > 0)
    r.notes.push_back(std::to_string(widened) + " float16 constants read through a Cast to float32 are stored as float32 now (+" +
                      std::to_string(widened_bytes / 1024) + " KiB): lwc's passes work on float32 weights");
  r.stats = {{"folded", folded}, {"identities_bypassed", bypassed}, {"initializers_removed", dropped}, {"skipped_growth", skipped_size},
             {"skipped_graph_output", skipped_output}};
  r.changed = folded > 0;
  return r;
}

ModelStats analyzeFolded(const Model& m, const AnalyzeOptions& opts) {
  ModelStats st = analyzeModel(m, opts);
  if (st.macs_complete) return st;
  Model c = m;
  for (auto& v : c.graph.inputs) {
    if (c.graph.initializers.contains(v.name) || !v.shape || v.shape->empty() || (*v.shape)[0].known()) continue;
    (*v.shape)[0] = Dim{opts.batch, ""};
  }
  for (auto& v : c.graph.outputs)
    if (v.shape && !v.shape->empty() && !(*v.shape)[0].known()) (*v.shape)[0] = Dim{};
  c.graph.value_info.clear();
  try {
    FoldConstants fold;
    fold.configure(nlohmann::json::object(), "fold_constants");
    PassContext ctx;
    fold.run(c, ctx);
  } catch (const std::exception&) {
    return st;  // the plain count, marked incomplete
  }
  const ModelStats f = analyzeModel(c, AnalyzeOptions{opts.batch, /*entropy=*/false});
  if (!f.macs_complete && f.macs <= st.macs) return st;
  st.macs = f.macs;
  st.macs_complete = f.macs_complete;
  st.other_ops = f.other_ops;
  std::map<std::string, const LayerStats*> by_name;
  for (const auto& L : f.layers) by_name[L.name] = &L;
  for (auto& L : st.layers) {
    const auto it = by_name.find(L.name);
    if (L.macs >= 0 || it == by_name.end()) continue;
    L.macs = it->second->macs;
    L.output_shape = it->second->output_shape;
  }
  return st;
}

}  // namespace lwc::passes
