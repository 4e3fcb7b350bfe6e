#include "passes/fold_constants.h"

#include "lwc/engine.h"
#include "lwc/graph_edit.h"
#include "lwc/shape_inference.h"

namespace lwc::passes {

std::vector<OptionSpec> FoldConstants::optionSpecs() const {
  OptionSpec growth{"max_growth_kb", OptionType::Int, 1024,
                    "Skip a node whose outputs exceed its inputs by more than this many KiB"};
  growth.min = 0;
  return {growth};
}

PassResult FoldConstants::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  const int64_t max_growth = options_.getInt("max_growth_kb") * 1024;
  const ValueTypes types = inferShapes(m);
  PassResult r;
  int64_t folded = 0, skipped_size = 0, skipped_output = 0;
  std::vector<std::string> maybe_unused;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (!n.domain.empty() || n.op_type == "DequantizeLinear") continue;
    std::optional<std::vector<Tensor>> outs;
    int64_t in_bytes = 0;
    if ((n.op_type == "Shape" || n.op_type == "Size") && n.hasInput(0) && !g.initializers.contains(n.inputs[0])) {
      auto s = concreteShape(types, n.inputs[0]);
      if (!s || n.hasAttr("start") || n.hasAttr("end")) continue;
      outs = std::vector<Tensor>{n.op_type == "Size" ? Tensor::scalar<int64_t>(numelOf(*s))
                                                     : Tensor::fromVector<int64_t>({static_cast<int64_t>(s->size())}, *s)};
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
        ++skipped_output;
        r.notes.push_back(n.describe() + ": left alone: it produces a graph output");
        continue;
      }
      outs = engine::evaluateNode(m, n, ins);
    }
    if (!outs) continue;
    int64_t out_bytes = 0;
    for (const auto& t : *outs) out_bytes += static_cast<int64_t>(t.nbytes());
    if (out_bytes > in_bytes + max_growth) {
      ++skipped_size;
      r.notes.push_back(n.describe() + ": left alone: folding would add " + std::to_string((out_bytes - in_bytes) / 1024) +
                        " KiB (max_growth_kb " + std::to_string(max_growth / 1024) + ")");
      continue;
    }
    for (size_t o = 0; o < outs->size(); ++o)
      if (!n.outputs[o].empty()) g.initializers.set(n.outputs[o], (*outs)[o]);
    maybe_unused.insert(maybe_unused.end(), n.inputs.begin(), n.inputs.end());
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    --i;
    ++folded;
  }
  // Folded outputs no longer need value_info entries (initializers carry their own type).
  std::erase_if(g.value_info, [&](const ValueInfo& v) { return g.initializers.contains(v.name); });
  const int64_t dropped = dropUnusedConstants(g, maybe_unused);
  r.stats = {{"folded", folded}, {"initializers_removed", dropped}, {"skipped_growth", skipped_size},
             {"skipped_graph_output", skipped_output}};
  r.changed = folded > 0;
  return r;
}

}  // namespace lwc::passes
