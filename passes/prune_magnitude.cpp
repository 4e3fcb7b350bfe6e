#include "passes/prune_magnitude.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <tuple>
#include <set>
#include <sstream>

#include "lwc/graph_edit.h"
#include "passes/quantize_static.h"

namespace lwc::passes {

using nlohmann::json;

std::vector<OptionSpec> PruneMagnitude::optionSpecs() const {
  OptionSpec sp{"sparsity", OptionType::Float, 0.5, "Fraction of weights to zero, in [0, 1) (unstructured patterns)"};
  sp.min = 0;
  sp.max = 0.999999;
  OptionSpec scope{"scope", OptionType::String, "layer", "layer: same sparsity per layer; global: one threshold over all layers"};
  scope.choices = {"layer", "global"};
  OptionSpec minp{"min_params", OptionType::Int, 1000, "Skip layers with fewer weights than this"};
  minp.min = 0;
  return {sp,
          scope,
          {"pattern", OptionType::String, "unstructured", "unstructured, or N:M (keep N of every M weights along the input channels, e.g. 2:4)"},
          {"include", OptionType::StringList, json::array(), "Only these node names or op types (default: every Conv/ConvTranspose/Gemm/MatMul)"},
          {"exclude", OptionType::StringList, json::array(), "Node names or op types to leave dense"},
          minp};
}

std::pair<int, int> parseNM(const std::string& s, const std::string& where) {
  int n = 0, m = 0;
  char colon = 0;
  std::istringstream is(s);
  if (!(is >> n >> colon >> m) || colon != ':' || !is.eof() || n < 1 || m < 2 || n >= m)
    fail(where, ".pattern: \"", s, "\" is not unstructured or N:M with 1 <= N < M (e.g. 2:4)");
  return {n, m};
}

void PruneMagnitude::validate(const PassOptions& o) const {
  if (o.getString("pattern") != "unstructured") parseNM(o.getString("pattern"), o.where());
}

namespace {

struct Layer {
  size_t node;
  std::string weight;
  int64_t reduce_axis;  // axis summed over (for N:M groups)
};

// Reduction axis of the weight: input channels of a Conv [O, I, k..] (1), ConvTranspose [I, O, k..] (0),
// K of Gemm B ([K,N] -> 0, transB [N,K] -> 1) and MatMul B [K, N] (0).
int64_t reductionAxis(const Node& n) {
  if (n.op_type == "Conv") return 1;
  if (n.op_type == "ConvTranspose") return 0;
  if (n.op_type == "Gemm") return n.attrInt("transB", 0) ? 1 : 0;
  return 0;
}

}  // namespace

PassResult PruneMagnitude::run(Model& m, PassContext&) {
  checkNotQuantized(m, "prune");
  Graph& g = m.graph;
  const PassOptions& o = options_;
  const auto include = o.getStrings("include"), exclude = o.getStrings("exclude");
  for (const auto* list : {&include, &exclude})
    for (const auto& e : *list) {
      bool found = false;
      for (const auto& n : g.nodes) found = found || n.name == e || n.op_type == e;
      if (!found) fail(o.where(), list == &include ? ".include" : ".exclude", ": no node or op type named '", e, "' in ", m.label());
    }
  auto listed = [](const std::vector<std::string>& l, const Node& n) {
    return std::find(l.begin(), l.end(), n.name) != l.end() || std::find(l.begin(), l.end(), n.op_type) != l.end();
  };
  PassResult r;
  std::vector<Layer> layers;
  std::set<std::string> seen;
  const int64_t min_params = o.getInt("min_params");
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (!n.domain.empty() || (n.op_type != "Conv" && n.op_type != "ConvTranspose" && n.op_type != "Gemm" && n.op_type != "MatMul"))
      continue;
    const Tensor* w = n.inputs.size() > 1 ? floatConstant(g, n.inputs[1]) : nullptr;
    if (!w || g.isGraphInput(n.inputs[1]) || w->rank() < 2) continue;
    if ((!include.empty() && !listed(include, n)) || listed(exclude, n)) {
      r.notes.push_back(n.describe() + ": left dense (include/exclude)");
      continue;
    }
    if (w->numel() < min_params) {
      r.notes.push_back(n.describe() + ": left dense: " + std::to_string(w->numel()) + " weights < min_params " +
                        std::to_string(min_params));
      continue;
    }
    if (seen.count(n.inputs[1])) continue;  // shared weight: pruned once
    seen.insert(n.inputs[1]);
    layers.push_back({i, n.inputs[1], reductionAxis(n)});
  }
  if (layers.empty()) fail(m.label(), ": no layer to prune (no Conv/ConvTranspose/Gemm/MatMul with constant weights of at least min_params)");

  // Masks: true = zero this weight.
  std::vector<std::vector<bool>> masks(layers.size());
  const std::string pattern = o.getString("pattern");
  if (pattern != "unstructured") {
    const auto [keep, group] = parseNM(pattern, o.where());
    for (size_t l = 0; l < layers.size(); ++l) {
      const Tensor& w = g.initializers.at(layers[l].weight);
      const auto axis = static_cast<size_t>(layers[l].reduce_axis);
      int64_t outer = 1, inner = 1;
      for (size_t d = 0; d < axis; ++d) outer *= w.dim(d);
      for (size_t d = axis + 1; d < w.rank(); ++d) inner *= w.dim(d);
      const int64_t len = w.dim(axis);
      auto& mask = masks[l];
      mask.assign(static_cast<size_t>(w.numel()), false);
      const float* W = w.data<float>();
      std::vector<int64_t> idx(static_cast<size_t>(group));
      for (int64_t a = 0; a < outer; ++a)
        for (int64_t k = 0; k < inner; ++k)
          for (int64_t c0 = 0; c0 + group <= len; c0 += group) {
            for (int j = 0; j < group; ++j) idx[static_cast<size_t>(j)] = (a * len + c0 + j) * inner + k;
            std::stable_sort(idx.begin(), idx.end(), [&](int64_t x, int64_t y) { return std::fabs(W[x]) < std::fabs(W[y]); });
            for (int j = 0; j < group - keep; ++j) mask[static_cast<size_t>(idx[static_cast<size_t>(j)])] = true;
          }
    }
  } else {
    const double sparsity = o.getFloat("sparsity");
    // Order by (|w|, layer, position): exactly k weights, deterministic.
    auto select = [](std::vector<std::tuple<float, uint32_t, int64_t>>& all, int64_t k) {
      if (k <= 0) return all.clear();
      std::nth_element(all.begin(), all.begin() + (k - 1), all.end());
      all.resize(static_cast<size_t>(k));
    };
    if (o.getString("scope") == "global") {
      std::vector<std::tuple<float, uint32_t, int64_t>> all;
      for (size_t l = 0; l < layers.size(); ++l) {
        const Tensor& w = g.initializers.at(layers[l].weight);
        masks[l].assign(static_cast<size_t>(w.numel()), false);
        for (int64_t i = 0; i < w.numel(); ++i) all.emplace_back(std::fabs(w.data<float>()[i]), static_cast<uint32_t>(l), i);
      }
      select(all, static_cast<int64_t>(std::floor(sparsity * double(all.size()))));
      for (const auto& [v, l, i] : all) masks[l][static_cast<size_t>(i)] = true;
    } else {
      for (size_t l = 0; l < layers.size(); ++l) {
        const Tensor& w = g.initializers.at(layers[l].weight);
        std::vector<std::tuple<float, uint32_t, int64_t>> all;
        for (int64_t i = 0; i < w.numel(); ++i) all.emplace_back(std::fabs(w.data<float>()[i]), 0u, i);
        masks[l].assign(static_cast<size_t>(w.numel()), false);
        select(all, static_cast<int64_t>(std::floor(sparsity * double(w.numel()))));
        for (const auto& [v, z, i] : all) masks[l][static_cast<size_t>(i)] = true;
      }
    }
  }

  // Apply (new tensors; the old ones may be shared with the caller's copy of the model).
  int64_t zeroed = 0, total = 0, zeros_after = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const Tensor& w = g.initializers.at(layers[l].weight);
    Tensor p = w.clone();
    float* P = p.data<float>();
    int64_t layer_zeros = 0;
    for (int64_t i = 0; i < p.numel(); ++i) {
      if (masks[l][static_cast<size_t>(i)] && P[i] != 0.0f) {
        P[i] = 0.0f;
        ++zeroed;
      }
      layer_zeros += P[i] == 0.0f;
    }
    total += p.numel();
    zeros_after += layer_zeros;
    std::ostringstream note;
    note << g.nodes[layers[l].node].describe() << ": sparsity " << std::fixed << std::setprecision(1)
         << 100.0 * double(layer_zeros) / double(p.numel()) << " % of " << p.numel();
    r.notes.push_back(note.str());
    g.initializers.set(layers[l].weight, std::move(p));
  }
  r.stats = {{"layers_pruned", static_cast<int64_t>(layers.size())},
             {"weights_zeroed", zeroed},
             {"weights_in_pruned_layers", total},
             {"zeros_in_pruned_layers", zeros_after}};
  r.changed = zeroed > 0;
  return r;
}

}  // namespace lwc::passes
