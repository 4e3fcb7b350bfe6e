#include "passes/weight_layers.h"

#include <algorithm>
#include <map>
#include <functional>
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
    for (const auto& p : pieces)
      if (p.empty()) fail(o.key(key), ": '", entry, "' has an empty entry; separate names with single commas");
    // Every way to cut the pieces into runs whose joined text is a name: ways[i] counts (up to 2)
    // the cuts of pieces i.. , from the end.
    const size_t n = pieces.size();
    auto joined = [&](size_t i, size_t j) {  // pieces [i, j)
      std::string t = pieces[i];
      for (size_t k = i + 1; k < j; ++k) t += "," + pieces[k];
      return t;
    };
    std::vector<int> ways(n + 1, 0);
    ways[n] = 1;
    for (size_t i = n; i-- > 0;)
      for (size_t j = i + 1; j <= n; ++j)
        if (ways[j] && names.count(joined(i, j))) ways[i] = std::min(2, ways[i] + ways[j]);
    // The first two cuts (every step taken leads to one, since ways[j] > 0).
    std::vector<std::vector<std::string>> cuts;
    std::vector<std::string> cur;
    std::function<void(size_t)> walk = [&](size_t i) {
      if (i == n) return cuts.push_back(cur);
      for (size_t j = i + 1; j <= n && cuts.size() < 2; ++j)
        if (ways[j] && names.count(joined(i, j))) {
          cur.push_back(joined(i, j));
          walk(j);
          cur.pop_back();
        }
    };
    if (ways[0] == 0) {
      // Name the piece where every reading stops: the furthest one a reading reaches.
      std::vector<bool> reach(n + 1, false);
      reach[0] = true;
      size_t stop = 0;
      for (size_t i = 0; i < n; ++i) {
        if (!reach[i]) continue;
        stop = i;
        for (size_t j = i + 1; j <= n; ++j)
          if (names.count(joined(i, j))) reach[j] = true;
      }
      fail(o.key(key), ": no node or op type named '", pieces[stop], "' in ", label, hint);
    }
    walk(0);
    if (cuts.size() > 1) {
      auto show = [](const std::vector<std::string>& parts) {
        std::string t;
        for (const auto& p : parts) t += (t.empty() ? "'" : " + '") + p + "'";
        return t;
      };
      fail(o.key(key), ": '", entry, "' splits into node names in more than one way (", show(cuts[0]), ", or ", show(cuts[1]),
           "); give each name as its own entry (a name that holds commas is found whole)");
    }
    for (auto& part : cuts[0]) out.push_back(std::move(part));
  }
  return out;
}

WeightLayerFilter weightLayerFilter(const Graph& g, const PassOptions& o, const std::string& label, std::string kept) {
  WeightLayerFilter f{resolveNodeList(g, o, "include", label), resolveNodeList(g, o, "exclude", label), o.getInt("min_params"),
                      std::move(kept)};
  refuseInBoth(f.include, f.exclude, o);
  return f;
}

void refuseInBoth(const std::vector<std::string>& include, const std::vector<std::string>& exclude, const PassOptions& o) {
  for (const auto& e : exclude)
    if (std::find(include.begin(), include.end(), e) != include.end())
      fail(o.key("exclude"), ": '", e, "' is also in ", o.ref("include"), "; keep it in one of them");
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
