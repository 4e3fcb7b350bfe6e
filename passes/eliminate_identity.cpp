#include "passes/eliminate_identity.h"

#include <cctype>

#include "lwc/graph_edit.h"
#include "lwc/shape_inference.h"
#include "passes/quantize_static.h"

namespace lwc::passes {

namespace {

const Tensor* intConstant(const Graph& g, const Node& n, size_t i) {
  if (!n.hasInput(i)) return nullptr;
  const Tensor* t = g.initializers.find(n.inputs[i]);
  return t && (t->dtype() == DType::Int64 || t->dtype() == DType::Int32) ? t : nullptr;
}

bool isNoOpReshape(const Graph& g, const Node& n, const ValueTypes& types) {
  const Tensor* target = intConstant(g, n, 1);
  auto it = types.find(n.inputs[0]);
  if (!target || it == types.end() || !it->second.shape) return false;
  const SymShape& in = *it->second.shape;
  if (target->rank() != 1 || target->numel() != static_cast<int64_t>(in.size())) return false;
  const bool allowzero = n.attrInt("allowzero", 0) != 0;
  int unresolved = 0;  // dims given as -1
  for (size_t d = 0; d < in.size(); ++d) {
    const int64_t v = static_cast<int64_t>(target->at(static_cast<int64_t>(d)));
    if (v == 0 && !allowzero) continue;  // copies the input dim
    if (v == -1) {
      ++unresolved;
      continue;
    }
    if (!in[d].known() || in[d].value != v) return false;
  }
  // A single -1 is inferred from the others, which all match: it equals the input dim.
  return unresolved <= 1;
}

// Whether node n is an identity on input 0; `why_not` is set when it is one in principle but this
// instance is not (e.g. Dropout whose mask is used).
bool isIdentity(const Model& m, const Node& n, const ValueTypes& types) {
  const Graph& g = m.graph;
  if (!n.domain.empty() || n.inputs.empty() || n.inputs[0].empty() || n.outputs.empty()) return false;
  for (size_t o = 1; o < n.outputs.size(); ++o)
    if (!n.outputs[o].empty() && useCount(g, n.outputs[o]) > 0) return false;
  const std::string& op = n.op_type;
  if (op == "Identity") return true;
  if (op == "Dropout") {
    if (!n.hasInput(2)) return true;
    const Tensor* t = g.initializers.find(n.inputs[2]);
    return t && t->numel() == 1 && t->at(0) == 0.0;
  }
  if (op == "Cast") {
    auto it = types.find(n.inputs[0]);
    return it != types.end() && it->second.dtype != DType::Undefined &&
           static_cast<int64_t>(it->second.dtype) == n.attrInt("to", -1);
  }
  if (op == "Transpose") {
    if (!n.hasAttr("perm")) return false;
    const auto perm = n.attrInts("perm");
    for (size_t i = 0; i < perm.size(); ++i)
      if (perm[i] != static_cast<int64_t>(i)) return false;
    return true;
  }
  if (op == "Reshape") return isNoOpReshape(g, n, types);
  if (op == "Pad") {
    std::vector<int64_t> pads;
    if (m.opsetFor("") < 11) {
      pads = n.attrInts(n.hasAttr("pads") ? "pads" : "paddings");
    } else {
      const Tensor* t = intConstant(g, n, 1);
      if (!t) return false;
      for (int64_t i = 0; i < t->numel(); ++i) pads.push_back(static_cast<int64_t>(t->at(i)));
    }
    for (auto p : pads)
      if (p != 0) return false;
    return true;
  }
  return false;
}

}  // namespace

PassResult EliminateIdentity::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  const ValueTypes types = inferShapes(m);
  PassResult r;
  std::map<std::string, int64_t> removed;
  int64_t left = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node n = g.nodes[i];
    if (!isIdentity(m, n, types)) continue;
    // The Identity quantize_static writes a graph output through (shieldTransposedGraphOutputs there).
    if (n.op_type == "Identity" && g.isGraphOutput(n.outputs[0]) && transposedToQuantizeLinear(g, GraphIndex(g), n.inputs[0])) {
      r.notes.push_back(n.describe() + ": left alone: it keeps a graph output apart from the Transpose -> QuantizeLinear "
                        "that reads the same value (ONNX Runtime's rewrites would hand the graph output quantized values)");
      ++left;
      continue;
    }
    std::vector<std::string> consts(n.inputs.begin() + 1, n.inputs.end());
    if (bypassNode(g, i, n.inputs[0], n.outputs[0])) {
      dropUnusedConstants(g, consts);
      ++removed[n.op_type];
      --i;
    } else {
      r.notes.push_back(n.describe() + ": left alone: it connects a graph input or a subgraph value to a graph output");
      ++left;
    }
  }
  int64_t total = 0;
  for (const auto& [op, c] : removed) {
    std::string key = "removed_";
    for (char ch : op) key += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    r.stats[key] = c;
    total += c;
  }
  r.stats["removed"] = total;
  r.stats["left_alone"] = left;
  r.changed = total > 0;
  return r;
}

}  // namespace lwc::passes
