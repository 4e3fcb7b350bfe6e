#include "passes/weight_share.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <set>
#include <sstream>

#include "lwc/graph_edit.h"
#include "passes/lsq_recovery.h"
#include "passes/weight_layers.h"
#include "passes/quantize_static.h"

namespace lwc::passes {

using nlohmann::json;

std::vector<OptionSpec> WeightShare::optionSpecs() const {
  OptionSpec bits{"bits", OptionType::Int, 5, "Index width: 2^bits shared values per layer (Deep Compression: 5 for FC)"};
  bits.min = 2;
  bits.max = 8;
  OptionSpec cbits{"conv_bits", OptionType::Int, 0, "Index width for Conv/ConvTranspose (0 = bits; the paper used 8)"};
  cbits.min = 0;
  cbits.max = 8;
  OptionSpec minp{"min_params", OptionType::Int, 256, "Skip layers with fewer weights than this"};
  minp.min = 0;
  OptionSpec iters{"max_iters", OptionType::Int, 100, "Lloyd iterations at most"};
  iters.min = 1;
  iters.max = 10000;
  OptionSpec recover{"recover", OptionType::String, "none",
                     "none | lsq: re-fit each layer's shared values and biases by least squares to the pipeline's input "
                     "model on calibration data (every weight keeps its cluster)"};
  recover.choices = {"none", "lsq"};
  OptionSpec rows{"lsq_rows", OptionType::Int, 16, "lsq: sampled output positions per calibration sample"};
  rows.min = 1;
  rows.max = 4096;
  OptionSpec damp{"lsq_damping", OptionType::Float, 1e-3, "lsq: ridge towards the k-means centroids, relative to the mean energy"};
  damp.min = 0;
  damp.max = 1e3;
  return {bits,
          cbits,
          {"include", OptionType::StringList, json::array(), "Only these node names or op types (default: every Conv/ConvTranspose/Gemm/MatMul)"},
          {"exclude", OptionType::StringList, json::array(), "Node names or op types to leave alone"},
          minp,
          iters,
          recover,
          rows,
          damp};
}

std::vector<double> kmeans1d(const std::vector<float>& values, int k, int max_iters, std::vector<int>& assign,
                             int* iterations) {
  const size_t n = values.size();
  assign.assign(n, 0);
  if (iterations) *iterations = 0;
  if (n == 0 || k < 1) return {};
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return values[a] < values[b]; });
  // Distinct values (in order): when there are no more than k, they are the centroids.
  std::vector<double> distinct;
  for (size_t i : order)
    if (distinct.empty() || double(values[i]) != distinct.back()) distinct.push_back(values[i]);
  std::vector<double> c;
  if (distinct.size() <= static_cast<size_t>(k)) {
    c = distinct;
  } else {
    const double lo = distinct.front(), hi = distinct.back();
    for (int j = 0; j < k; ++j) c.push_back(lo + (hi - lo) * double(j) / double(k - 1));
  }
  // Lloyd iterations on the sorted values: cluster j takes the values below the midpoint to j+1.
  std::vector<int> a(n, -1);
  for (int it = 0; it < max_iters; ++it) {
    bool changed = false;
    size_t j = 0;
    std::vector<double> sum(c.size(), 0.0);
    std::vector<int64_t> cnt(c.size(), 0);
    for (size_t r = 0; r < n; ++r) {
      const double v = values[order[r]];
      while (j + 1 < c.size() && v > 0.5 * (c[j] + c[j + 1])) ++j;
      if (a[r] != int(j)) {
        a[r] = int(j);
        changed = true;
      }
      sum[j] += v;
      ++cnt[j];
    }
    if (iterations) *iterations = it + 1;
    if (!changed && it > 0) break;
    for (size_t q = 0; q < c.size(); ++q)
      if (cnt[q] > 0) c[q] = sum[q] / double(cnt[q]);
    // Means of sorted, contiguous groups stay sorted; equal neighbours are harmless.
  }
  for (size_t r = 0; r < n; ++r) assign[order[r]] = a[r];
  return c;
}

bool WeightShare::needsCalibration(const PassOptions& o) const { return o.getString("recover") != "none"; }

void WeightShare::validate(const PassOptions& o) const { checkLsqOptionsApply(o); }

PassResult WeightShare::run(Model& m, PassContext& ctx) {
  checkNotQuantized(m, "weight-share");
  const Model unshared = m;  // shares the tensors; sharing writes new ones
  std::vector<size_t> shared_nodes;
  Graph& g = m.graph;
  const PassOptions& o = options_;
  const WeightLayerFilter filter = weightLayerFilter(g, o, m.label(), "left alone");
  PassResult r;
  int64_t layers = 0, weights = 0, changed_weights = 0;
  double err = 0, energy = 0;
  for (const auto& [i, wname] : selectWeightLayers(g, filter, r.notes)) {
    const Node& n = g.nodes[i];
    const Tensor* w = &g.initializers.at(wname);
    // k-means over values that include an inf or a NaN has no centroids: every weight of the layer
    // became inf or NaN. Such a layer is named and left as it is.
    const int64_t bad = std::count_if(w->data<float>(), w->data<float>() + w->numel(), [](float v) { return !std::isfinite(v); });
    if (bad > 0) {
      r.notes.push_back(n.describe() + ": left alone (" + std::to_string(bad) + " of its weights are not finite)");
      continue;
    }
    shared_nodes.push_back(i);
    const bool conv = n.op_type == "Conv" || n.op_type == "ConvTranspose";
    const int bits = int(conv && o.getInt("conv_bits") > 0 ? o.getInt("conv_bits") : o.getInt("bits"));
    const float* W = w->data<float>();
    std::vector<float> nz;
    std::vector<int64_t> pos;
    for (int64_t k = 0; k < w->numel(); ++k)
      if (W[k] != 0.0f) {
        nz.push_back(W[k]);
        pos.push_back(k);
      }
    std::vector<int> assign;
    int iters = 0;
    const auto c = kmeans1d(nz, 1 << bits, int(o.getInt("max_iters")), assign, &iters);
    Tensor out = w->clone();
    float* P = out.data<float>();
    double le = 0, ly = 0;
    for (size_t q = 0; q < nz.size(); ++q) {
      const float v = static_cast<float>(c[static_cast<size_t>(assign[q])]);
      le += std::pow(double(v) - nz[q], 2);
      ly += double(nz[q]) * nz[q];
      changed_weights += v != nz[q];
      P[pos[q]] = v;
    }
    err += le;
    energy += ly;
    weights += w->numel();
    ++layers;
    std::set<float> used;
    for (size_t q = 0; q < nz.size(); ++q) used.insert(P[pos[q]]);
    std::ostringstream note;
    note << n.describe() << ": " << used.size() << " shared values (" << bits << " bits) for " << nz.size()
         << " non-zero weights, " << iters << " iterations, relative weight error " << std::setprecision(3)
         << (ly > 0 ? std::sqrt(le / ly) : 0.0);
    r.notes.push_back(note.str());
    g.initializers.set(n.inputs[1], std::move(out));
  }
  int64_t refitted = 0;
  if (o.getString("recover") == "lsq" && !shared_nodes.empty()) {
    LsqOptions lo;
    lo.rows_per_sample = o.getInt("lsq_rows");
    lo.damping = o.getFloat("lsq_damping");
    lo.shared = true;
    for (const auto& res : lsqRecover(m, unshared, shared_nodes, ctx, r, lo)) refitted += res.applied;
  }
  r.stats = {{"layers_shared", layers},
             {"weights_in_shared_layers", weights},
             {"weights_changed", changed_weights},
             {"layers_refitted", refitted}};
  r.changed = changed_weights > 0 || refitted > 0;  // a re-fit moves the shared values (the codebook)
  if (layers > 0) {
    std::ostringstream note;
    note << "all shared layers: relative weight error " << std::setprecision(3) << (energy > 0 ? std::sqrt(err / energy) : 0.0);
    r.notes.push_back(note.str());
  }
  return r;
}

}  // namespace lwc::passes
