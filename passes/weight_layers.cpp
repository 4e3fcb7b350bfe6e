#include "passes/weight_layers.h"

#include <algorithm>
#include <map>
#include <set>

#include "lwc/dtype.h"
#include "lwc/graph_edit.h"
#include "lwc/status.h"
#include "lwc/weight_coding.h"

namespace lwc::passes {

namespace {
bool listed(const std::vector<std::string>& l, const Node& n) {
  return std::find(l.begin(), l.end(), n.name) != l.end() || std::find(l.begin(), l.end(), n.op_type) != l.end();
}
bool isWeightOp(const Node& n) {
  return n.domain.empty() && (n.op_type == "Conv" || n.op_type == "ConvTranspose" || n.op_type == "Gemm" || n.op_type == "MatMul");
}
}  // namespace

std::vector<std::string> resolveNodeList(const Graph& g, const PassOptions& o, const std::string& key,
                                         const std::string& label, const std::string& hint) {
  std::set<std::string> names;
  for (const auto& n : g.nodes) {
    if (!n.name.empty()) names.insert(n.name);
    names.insert(n.op_type);
  }
  std::vector<std::string> out;
  for (const auto& entry : o.getStrings(key)) {
    if (names.count(entry) || entry.find(',') == std::string::npos) {
      if (!names.count(entry)) fail(o.key(key), ": no node or op type named '", entry, "' in ", label, hint);
      out.push_back(entry);
      continue;
    }
    std::vector<std::string> pieces;
    for (size_t at = 0;;) {
      const size_t comma = entry.find(',', at);
      pieces.push_back(entry.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
      if (comma == std::string::npos) break;
      at = comma + 1;
    }
    // From each piece, the longest run of pieces whose joined text is a name; a piece alone else.
    for (size_t i = 0; i < pieces.size();) {
      size_t end = i + 1;
      std::string joined = pieces[i], longest;
      for (size_t j = i + 1; j < pieces.size(); ++j) {
        joined += "," + pieces[j];
        if (names.count(joined)) end = j + 1, longest = joined;
      }
      const std::string& item = end > i + 1 ? longest : pieces[i];
      if (item.empty()) fail(o.key(key), ": '", entry, "' has an empty entry; separate names with single commas");
      if (!names.count(item)) fail(o.key(key), ": no node or op type named '", item, "' in ", label, hint);
      out.push_back(item);
      i = end;
    }
  }
  return out;
}

void resolveIncludeExclude(const Graph& g, WeightLayerFilter& f, const PassOptions& o, const std::string& label) {
  f.include = resolveNodeList(g, o, "include", label);
  f.exclude = resolveNodeList(g, o, "exclude", label);
}

std::string codedWeightsReason(const Graph& g, const std::string& value) {
  const int p = producerIndex(g, value);
  if (p < 0 || g.nodes[static_cast<size_t>(p)].domain != weight_coding::kDomain) return "";
  return "its weights are Huffman-coded (" + g.nodes[static_cast<size_t>(p)].describe() +
         "): decode them first (lwc decode, or the huffman_decode pass)";
}

std::vector<WeightLayer> selectWeightLayers(const Graph& g, const WeightLayerFilter& f, std::vector<std::string>& notes) {
  // The constant float32 weight of a layer, or null (with `why` set where the user can act on it).
  auto weightOf = [&](const Node& n, std::string& why) -> const Tensor* {
    if (!isWeightOp(n) || n.inputs.size() < 2) return nullptr;
    const Tensor* w = floatConstant(g, n.inputs[1]);
    if (w && !g.isGraphInput(n.inputs[1])) return w->rank() >= 2 ? w : nullptr;
    const Tensor* other = g.isGraphInput(n.inputs[1]) ? nullptr : g.initializers.find(n.inputs[1]);
    if (other && isFloat(other->dtype()) && other->rank() >= 2)
      why = std::string("its weights are ") + std::string(dtypeName(other->dtype())) + "; convert the model to float32 first";
    else if (n.op_type == "MatMul" && !n.inputs[0].empty() && floatConstant(g, n.inputs[0]) && !g.isGraphInput(n.inputs[0]))
      why = "its constant operand is the first input (only B = the second input is changed)";
    else
      why = codedWeightsReason(g, n.inputs[1]);  // left out silently: a chain after huffman_encode did a fraction of its work
    return nullptr;
  };
  auto keptByRequest = [&](const Node& n) { return (!f.include.empty() && !listed(f.include, n)) || listed(f.exclude, n); };
  // A weight one of its readers keeps as it is stays so for all of them.
  std::map<std::string, std::string> held;  // weight -> why
  for (const Node& n : g.nodes) {
    std::string why;
    const Tensor* w = weightOf(n, why);
    if (!w) continue;
    if (keptByRequest(n))
      held.emplace(n.inputs[1], "its weights '" + n.inputs[1] + "' are shared with " + n.describe() + ", which include/exclude leaves alone");
    else if (w->numel() < f.min_params)
      held.emplace(n.inputs[1], std::to_string(w->numel()) + " weights < min_params " + std::to_string(f.min_params));
  }
  std::vector<WeightLayer> layers;
  std::set<std::string> seen;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    std::string why;
    const Tensor* w = weightOf(n, why);
    if (!w) {
      if (!why.empty()) notes.push_back(n.describe() + ": " + f.kept + " (" + why + ")");
      continue;
    }
    if (keptByRequest(n)) {
      notes.push_back(n.describe() + ": " + f.kept + " (include/exclude)");
      continue;
    }
    if (const auto h = held.find(n.inputs[1]); h != held.end()) {
      notes.push_back(n.describe() + ": " + f.kept + " (" + h->second + ")");
      continue;
    }
    if (!seen.insert(n.inputs[1]).second) continue;  // shared weight: once
    layers.push_back({i, n.inputs[1]});
  }
  return layers;
}

}  // namespace lwc::passes
