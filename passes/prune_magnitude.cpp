#include "passes/prune_magnitude.h"

#include <algorithm>
#include <numeric>
#include <cmath>
#include <map>
#include <memory>
#include <iomanip>
#include <tuple>
#include <set>
#include <sstream>

#include "lwc/analysis.h"
#include "lwc/engine.h"
#include "lwc/graph_edit.h"
#include "lwc/dataset.h"
#include "passes/lsq_recovery.h"
#include "passes/weight_layers.h"
#include "passes/quantize_static.h"

namespace lwc::passes {

using nlohmann::json;

std::vector<OptionSpec> PruneMagnitude::optionSpecs() const {
  OptionSpec sp{"sparsity", OptionType::Float, 0.5, "Fraction of weights to zero, in [0, 1) (unstructured patterns)"};
  sp.min = 0;
  sp.max = 1;
  sp.max_exclusive = true;
  OptionSpec scope{"scope", OptionType::String, "layer", "layer: same sparsity per layer; global: one threshold over all layers"};
  scope.choices = {"layer", "global"};
  OptionSpec minp{"min_params", OptionType::Int, 1000, "Skip layers with fewer weights than this"};
  minp.min = 0;
  OptionSpec recover{"recover", OptionType::String, "none",
                     "none; bias: correct each pruned layer's bias for the mean shift; lsq: re-fit each pruned layer's "
                     "surviving weights and bias by least squares to the original outputs (both need calibration data)"};
  recover.choices = {"none", "bias", "lsq"};
  OptionSpec rows{"lsq_rows", OptionType::Int, 16, "lsq: sampled output positions per calibration sample"};
  rows.min = 1;
  rows.max = 4096;
  OptionSpec criterion{"criterion", OptionType::String, "magnitude",
                       "magnitude: zero the smallest |w|; obs (needs recover lsq): as many weights per layer (or per N:M "
                       "group) as magnitude, scope and pattern give, but the ones whose removal raises the layer's output error on the "
                       "calibration data least (Optimal Brain Surgeon saliency at the least-squares fit), chosen layer "
                       "by layer on the pruned model's inputs"};
  criterion.choices = {"magnitude", "obs"};
  OptionSpec rounds{"obs_rounds", OptionType::Int, 1,
                    "criterion obs: select each layer's weights in this many rounds, each scored at the re-fit after "
                    "the rounds before (more rounds: closer to removing one weight at a time; each costs one more "
                    "factorisation and inverse diagonal per channel, no data pass)"};
  rounds.min = 1;
  rounds.max = 1000;
  OptionSpec damp{"lsq_damping", OptionType::Float, 1e-3, "lsq: ridge towards the layer before the pipeline's first lsq step (on one step: the pruned weights), relative to the mean input energy"};
  damp.min = 0;
  damp.max = 1e3;
  OptionSpec pattern{"pattern", OptionType::String, "unstructured",
                     "unstructured, or N:M (keep N of every M weights along the input channels, e.g. 2:4)"};
  pattern.pattern = "^(unstructured|[1-9][0-9]*:[1-9][0-9]*)$";
  return {sp,
          scope,
          pattern,
          {"include", OptionType::StringList, json::array(), "Only these node names or op types (default: every Conv/ConvTranspose/Gemm/MatMul)"},
          {"exclude", OptionType::StringList, json::array(), "Node names or op types to leave dense"},
          minp,
          recover,
          criterion,
          rounds,
          rows,
          damp,
          lsqCvRowsOption()};
}

bool PruneMagnitude::needsCalibration(const PassOptions& o) const { return o.getString("recover") != "none"; }

std::pair<int, int> parseNM(const std::string& s, const std::string& key) {
  int n = 0, m = 0;
  char colon = 0;
  std::istringstream is(s);
  if (!(is >> n >> colon >> m) || colon != ':' || !is.eof() || n < 1 || m < 2 || n >= m)
    fail(key, ": \"", s, "\" is not unstructured or N:M with 1 <= N < M (e.g. 2:4)");
  return {n, m};
}

void PruneMagnitude::validate(const PassOptions& o) const {
  if (const std::string pattern = o.getString("pattern"); pattern != "unstructured") {
    const auto [n, m] = parseNM(pattern, o.key("pattern"));
    // N:M fixes the sparsity at 1 - N/M in every layer: a sparsity or a global scope was ignored.
    const double s = 1.0 - double(n) / m;
    if (o.given("sparsity") && std::abs(o.getFloat("sparsity") - s) > 1e-3)
      fail(o.key("sparsity"), ": ", o.getFloat("sparsity"), " does not apply to pattern ", pattern, ", which zeroes ", m - n,
           " of every ", m, " weights (sparsity ", m - n, "/", m, ") in every layer; drop it, or prune unstructured");
    if (o.getString("scope") == "global")
      fail(o.key("scope"), ": global applies to unstructured pruning; pattern ", pattern,
           " prunes every layer alike: drop it");
  }
  checkLsqOptionsApply(o);
  if (o.getString("criterion") != "obs" && o.given("obs_rounds"))  // its default given too, as lsq_rows
    fail(o.key("obs_rounds"), ": applies to criterion obs (lwc prune: --criterion obs); drop it or set criterion obs");
  if (o.getString("criterion") == "obs") {
    if (o.getString("recover") != "lsq")
      fail(o.key("criterion"), ": obs scores weights at the least-squares re-fit; set recover to lsq (lwc prune: --recover lsq --calib DIR)");
  }
}

namespace {

struct Layer {
  size_t node;
  std::string weight;
  int64_t reduce_axis;  // axis summed over (for N:M groups)
};

// Reduction axis of the weight: input channels of a Conv [O, I, k..] (1), ConvTranspose [I, O, k..] (0),
// K of Gemm B ([K,N] -> 0, transB [N,K] -> 1) and of MatMul B [..., K, N] (rank - 2: a batched
// [B, K, N] weight's groups run along K, not along its batch axis).
int64_t reductionAxis(const Node& n, const Tensor& w) {
  if (n.op_type == "Conv") return 1;
  if (n.op_type == "ConvTranspose") return 0;
  if (n.op_type == "Gemm") return n.attrInt("transB", 0) ? 1 : 0;
  return static_cast<int64_t>(w.rank()) - 2;
}

}  // namespace

// Bias correction (empirical, as in Nagel et al. 2019): each pruned layer's bias moves by
// E[y_ref] − E[y], the per-channel difference between the layer's output mean in the reference
// model (the pipeline's input when it computes the tensor, else this step's input) and in the
// pruned model, measured on the calibration data layer by layer in graph order (later layers see
// the earlier corrections). Measuring outputs, not ΔW·E[x], makes it exact for padded
// convolutions and also absorbs the drift of upstream layers; and the result depends only on the
// final weights, not on the path, so an iterative schedule (whose masks are those of one shot:
// biases do not change magnitudes) ends where one shot does. Conv (any group) and Gemm; others are
// named in the notes.
int64_t correctBiases(Model& m, const Model& unmodified, const std::vector<Layer>& layers, PassContext& ctx,
                      PassResult& r) {
  Graph& g = m.graph;
  if (!ctx.calib) fail("prune_magnitude: recover bias needs calibration data (--calib DIR or data.calib)");
  auto ds = openCalibration(ctx, m);
  std::string in_name;
  for (const auto* vi : m.graph.realInputs()) {
    in_name = vi->name;
    break;
  }
  auto outputMeans = [&](const Model& model, const std::vector<std::string>& names) {
    return channelMeans(model, names, *ds, in_name, ctx.calib->batch, ctx.threads);
  };
  // The reference means of every layer in one pass per reference model.
  std::map<std::string, std::vector<double>> ref_means;
  {
    std::vector<std::string> from_ref, from_unmodified;
    const RecoveryReference references(ctx.reference, unmodified);
    for (const auto& L : layers) {
      const std::string& y = g.nodes[L.node].outputs.at(0);
      (references.usePipelineInput(y) ? from_ref : from_unmodified).push_back(y);
    }
    if (!from_ref.empty()) {
      auto v = outputMeans(*ctx.reference, from_ref);
      for (size_t k = 0; k < from_ref.size(); ++k) ref_means[from_ref[k]] = std::move(v[k]);
    }
    auto v = outputMeans(unmodified, from_unmodified);
    for (size_t k = 0; k < from_unmodified.size(); ++k) ref_means[from_unmodified[k]] = std::move(v[k]);
  }
  int64_t corrected = 0;
  for (size_t l = 0; l < layers.size(); ++l) {
    const Node n = g.nodes[layers[l].node];
    const bool supported = n.op_type == "Conv" || (n.op_type == "Gemm" && n.attrInt("transA", 0) == 0);
    if (!supported) {
      r.notes.push_back(n.describe() + ": bias not corrected (" + n.op_type + " is not supported by recover bias)");
      continue;
    }
    if (n.op_type == "Gemm" && n.hasInput(2) && n.attrFloat("beta", 1.0f) != 1.0f) {
      r.notes.push_back(n.describe() + ": bias not corrected (Gemm beta != 1)");
      continue;
    }
    const Tensor& w1 = g.initializers.at(layers[l].weight);
    const bool trans = n.op_type == "Gemm" && n.attrInt("transB", 0) != 0;
    const int64_t out_ch = n.op_type == "Conv" || trans ? w1.dim(0) : w1.dim(1);
    const Tensor* b = n.hasInput(2) ? floatConstant(g, n.inputs[2]) : nullptr;
    if (n.hasInput(2) && (!b || !(b->numel() == out_ch || b->numel() == 1))) {
      r.notes.push_back(n.describe() + ": bias not corrected (bias is not a constant vector)");
      continue;
    }
    const std::vector<double>& want = ref_means[n.outputs.at(0)];
    const std::vector<double> have = outputMeans(m, {n.outputs.at(0)}).at(0);
    if (want.size() != static_cast<size_t>(out_ch) || have.size() != want.size()) {
      r.notes.push_back(n.describe() + ": bias not corrected (reference output has a different shape)");
      continue;
    }
    Tensor nb(DType::Float32, {out_ch});
    for (int64_t o = 0; o < out_ch; ++o) {
      const size_t u = static_cast<size_t>(o);
      nb.data<float>()[o] = static_cast<float>((b ? b->at(b->numel() == 1 ? 0 : o) : 0.0) + want[u] - have[u]);
    }
    const std::string base = n.name.empty() ? n.op_type : n.name;
    const std::string bname = replaceConstant(g, n.hasInput(2) ? n.inputs[2] : "", base + "_bias", std::move(nb));
    Node& q = g.nodes[layers[l].node];
    if (q.inputs.size() < 3) q.inputs.resize(3);
    q.inputs[2] = bname;
    ++corrected;
  }
  return corrected;
}

PassResult PruneMagnitude::run(Model& m, PassContext& ctx) {
  checkNotQuantized(m, "prune");
  const Model unpruned = m;  // shares the tensors; pruning writes new ones
  Graph& g = m.graph;
  const PassOptions& o = options_;
  const WeightLayerFilter filter = weightLayerFilter(g, o, m.label(), "left dense");
  PassResult r;
  std::vector<Layer> layers;
  for (const auto& [node, weight] : selectWeightLayers(g, filter, r.notes))
    layers.push_back({node, weight, reductionAxis(g.nodes[node], g.initializers.at(weight))});
  if (layers.empty()) {
    // The layers passed over say why (a weight shared with a layer left dense, min_params): the
    // first reason goes into the error, the notes are not shown when the pass fails.
    // A float16/float64 or Huffman-coded model gets the model-wide hint alone (its layers' notes
    // said the same thing again), unless the first reason is another one (min_params, say, in a
    // float32 model with a float16 bias somewhere).
    std::string why;
    for (const auto& n : r.notes)
      if (n.find("left dense (") != std::string::npos && n.find("(include/exclude)") == std::string::npos) {
        why = "; e.g. " + n;
        break;
      }
    if (const std::string hint = float16WeightsHint(m);
        !hint.empty() && (why.empty() || why.find("its weights are ") != std::string::npos))
      fail(m.label(), ": no layer to prune", hint);
    fail(m.label(), ": no layer to prune (no Conv/ConvTranspose/Gemm/MatMul with constant weights of at least min_params",
         why, ")");
  }

  // Masks: true = zero this weight.
  std::vector<std::vector<bool>> masks(layers.size());
  const std::string pattern = o.getString("pattern");
  if (pattern != "unstructured") {
    const auto [keep, group] = parseNM(pattern, o.key("pattern"));
    // A pattern no layer is wide enough for prunes nothing: an error, as when no layer is selected
    // (1:100000 wrote the model unchanged with exit 0).
    int64_t widest = 0;
    for (const auto& layer : layers) widest = std::max(widest, g.initializers.at(layer.weight).dim(static_cast<size_t>(layer.reduce_axis)));
    if (widest < group)
      fail(o.key("pattern"), ": ", pattern, " needs groups of ", group, " input channels, and the widest layer of ", m.label(),
           " has ", widest, "; choose a smaller M (e.g. 2:4)");
    for (size_t l = 0; l < layers.size(); ++l) {
      const Tensor& w = g.initializers.at(layers[l].weight);
      const auto axis = static_cast<size_t>(layers[l].reduce_axis);
      int64_t outer = 1, inner = 1;
      for (size_t d = 0; d < axis; ++d) outer *= w.dim(d);
      for (size_t d = axis + 1; d < w.rank(); ++d) inner *= w.dim(d);
      const int64_t len = w.dim(axis);
      if (len % group != 0)
        r.notes.push_back(g.nodes[layers[l].node].describe() + ": " + pattern + " groups cover " +
                          std::to_string(len / group * group) + " of its " + std::to_string(len) +
                          " input channels; the last " + std::to_string(len % group) + " stay dense");
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
    // The k = floor(sparsity * n) smallest of the n weights of the layers `ls` by (|w|, layer,
    // position): exactly k, deterministic. Every weight below
    // the k-th smallest magnitude, then those equal to it in layer and position order. (Sorting
    // (|w|, layer, position) triples took 16 bytes a weight and 81 s for a 604-million-weight
    // MLP; the magnitudes alone take 4 and the same masks come out in a few seconds.)
    auto maskSmallest = [&](const std::vector<size_t>& ls) {
      int64_t n = 0;
      for (size_t l : ls) {
        n += g.initializers.at(layers[l].weight).numel();
        masks[l].assign(static_cast<size_t>(g.initializers.at(layers[l].weight).numel()), false);
      }
      const auto k = static_cast<int64_t>(std::floor(sparsity * double(n)));
      if (k <= 0) return;
      std::vector<float> mags;
      mags.reserve(static_cast<size_t>(n));
      for (size_t l : ls) {
        const Tensor& w = g.initializers.at(layers[l].weight);
        const float* W = w.data<float>();
        for (int64_t i = 0; i < w.numel(); ++i) mags.push_back(std::fabs(W[i]));
      }
      std::nth_element(mags.begin(), mags.begin() + (k - 1), mags.end());
      const float t = mags[static_cast<size_t>(k - 1)];
      const auto below = static_cast<int64_t>(std::count_if(mags.begin(), mags.end(), [t](float v) { return v < t; }));
      mags = {};
      int64_t ties = k - below;  // of the weights at exactly t, the first ones go
      for (size_t l : ls) {
        const Tensor& w = g.initializers.at(layers[l].weight);
        const float* W = w.data<float>();
        auto& mask = masks[l];
        for (int64_t i = 0; i < w.numel(); ++i) {
          const float v = std::fabs(W[i]);
          if (v < t || (v == t && ties-- > 0)) mask[static_cast<size_t>(i)] = true;
        }
      }
    };
    if (o.getString("scope") == "global") {
      std::vector<size_t> all(layers.size());
      std::iota(all.begin(), all.end(), size_t{0});
      maskSmallest(all);
    } else {
      for (size_t l = 0; l < layers.size(); ++l) maskSmallest({l});
    }
  }

  // Apply (new tensors; the old ones may be shared with the caller's copy of the model). With
  // criterion obs, lsq recovery chooses the weights instead, and the magnitude masks only serve the
  // layers it could not re-fit.
  const bool obs = o.getString("criterion") == "obs";
  auto applyMask = [&](size_t l) {
    Tensor p = g.initializers.at(layers[l].weight).clone();
    float* P = p.data<float>();
    for (int64_t i = 0; i < p.numel(); ++i)
      if (masks[l][static_cast<size_t>(i)]) P[i] = 0.0f;
    g.initializers.set(layers[l].weight, std::move(p));
  };
  // A weight several nodes share is masked for all of them before any re-fit, as with magnitude.
  std::vector<char> masked(layers.size(), 0);
  for (size_t l = 0; l < layers.size(); ++l)
    if (!obs || useCount(g, layers[l].weight) > 1) {
      applyMask(l);
      masked[l] = 1;
    }
  const size_t sparsity_notes_at = r.notes.size();  // the per-layer sparsity lines go before recovery's
  int64_t corrected = 0, reconstructed = 0;
  if (o.getString("recover") == "bias") {
    // Every reader of a pruned weight has its own bias to correct (a weight two layers share was
    // corrected for the first reader only).
    std::vector<Layer> readers;
    for (const auto& L : layers)
      for (size_t i = 0; i < g.nodes.size(); ++i)
        if (g.nodes[i].inputs.size() > 1 && g.nodes[i].inputs[1] == L.weight && g.nodes[i].domain.empty())
          readers.push_back({i, L.weight, L.reduce_axis});
    std::sort(readers.begin(), readers.end(), [](const Layer& a, const Layer& b) { return a.node < b.node; });
    corrected = correctBiases(m, unpruned, readers, ctx, r);
  }
  if (o.getString("recover") == "lsq") {
    LsqOptions lo;
    lo.rows_per_sample = o.getInt("lsq_rows");
    lo.damping = o.getFloat("lsq_damping");
    lo.cv_rows_per_weight = o.getFloat("lsq_cv_rows");
    lo.select_rounds = o.getInt("obs_rounds");
    if (pattern != "unstructured") std::tie(lo.select_n, lo.select_m) = parseNM(pattern, o.key("pattern"));
    if (obs)  // the scope's masks give each layer's count; obs chooses which weights
      for (size_t l = 0; l < layers.size(); ++l)
        if (!masked[l])
          lo.select_zeros[g.nodes[layers[l].node].outputs.at(0)] =
              std::count(masks[l].begin(), masks[l].end(), true);
    std::vector<size_t> idx;
    for (const auto& L : layers) idx.push_back(L.node);
    std::set<std::string> refit;
    for (const auto& res : lsqRecover(m, unpruned, idx, ctx, r, lo)) {
      reconstructed += res.applied;
      if (res.applied) refit.insert(res.node);
    }
    for (size_t l = 0; l < layers.size(); ++l) {
      const Node& n = g.nodes[layers[l].node];
      if (masked[l] || refit.count(n.describe())) continue;
      applyMask(l);  // not re-fitted: its weights are still layers[l].weight
      r.notes.push_back(n.describe() + ": magnitude criterion (obs needs the least-squares re-fit)");
    }
  }
  // What changed, layer by layer, against the step's input (lsq may have renamed the weights).
  // Layers count as pruned when they hold zeros: an N:M pattern cannot reach a layer with fewer
  // input channels than M (tinyformer's one-channel embedding: "layers_pruned 9" with 8 pruned, and
  // its 3136 dense weights in weights_in_pruned_layers).
  int64_t zeroed = 0, total = 0, zeros_after = 0, pruned_layers = 0;
  std::vector<std::string> sparsity_notes;
  for (const auto& L : layers) {
    const Node& n = g.nodes[L.node];
    const float* B = unpruned.graph.initializers.at(L.weight).data<float>();
    const Tensor& w = g.initializers.at(n.inputs[1]);
    const float* P = w.data<float>();
    int64_t layer_zeros = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
      zeroed += P[i] == 0.0f && B[i] != 0.0f;
      layer_zeros += P[i] == 0.0f;
    }
    if (layer_zeros > 0) {
      ++pruned_layers;
      total += w.numel();
      zeros_after += layer_zeros;
    }
    std::ostringstream note;
    note << n.describe() << ": sparsity " << std::fixed << std::setprecision(1)
         << 100.0 * double(layer_zeros) / double(w.numel()) << " % of " << w.numel();
    // One global threshold can take every weight of a layer of small weights: its output is then
    // its bias alone, whatever the input. Said plainly, not left for the user to find in the model.
    if (layer_zeros == w.numel() && w.numel() > 0)
      note << "; every weight is zero, so the layer's output no longer depends on its input (lower the sparsity, "
              "use scope layer, or exclude this node)";
    sparsity_notes.push_back(note.str());
  }
  r.notes.insert(r.notes.begin() + static_cast<std::ptrdiff_t>(sparsity_notes_at), sparsity_notes.begin(), sparsity_notes.end());
  r.stats = {{"layers_pruned", pruned_layers},
             {"biases_corrected", corrected},
             {"layers_reconstructed", reconstructed},
             {"weights_zeroed", zeroed},
             {"weights_in_pruned_layers", total},
             {"zeros_in_pruned_layers", zeros_after}};
  // A second step at the same sparsity zeroes nothing new, but its recovery still moves weights.
  r.changed = zeroed > 0 || reconstructed > 0 || corrected > 0;
  return r;
}

}  // namespace lwc::passes
