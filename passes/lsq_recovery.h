// Least-squares layer reconstruction: the training-free recovery step after pruning (and after
// weight sharing). For each listed layer, in graph order:
//
//   min_w,b  Σ_rows ‖ Y_ref − (X_cur · w + b) ‖²  +  λ ‖ w − w_anchor ‖²      over the surviving weights only
//
// X_cur is the layer's input in the current (already pruned, earlier layers already reconstructed)
// model, Y_ref the same layer's output in the reference model (the pipeline's input model when it
// has a tensor of that name, else the model as the calling pass received it), both on the
// calibration data.
// Zeroed weights stay zero: each output channel is its own small least-squares problem over the
// rows of its non-zero weights (He et al. 2017, ThiNet; the layer-wise OBS family). Using the
// pruned model's inputs lets each layer absorb the error of the layers before it.
//
// Conv (2-D, any group and padding): rows are im2col patches at `rows_per_sample` output positions
// per sample (evenly spaced, deterministic); Gemm (transA = 0, alpha = beta = 1) and MatMul with a
// constant 2-D weight: rows are the input rows (up to `rows_per_sample` per sample). The normal
// equations G = Xᵀ X, C = Xᵀ Y are accumulated over the data (oneDNN sgemm per batch, summed in
// double), then each output channel is solved by Cholesky in double with ridge λ = damping ·
// mean(diag G_SS), pulling towards w_anchor where the data does not determine them: the weights
// (and bias) the layer had before this pipeline's first lsq re-fit of it (ctx.recovery_anchors; the
// current weights without one). So the k-th step of an iterative schedule is regularised towards the
// original layer, as one step is, not towards step k-1's fit, which would let the repeated ridge
// drift to the unregularised fit of the calibration data.
// With `cv_rows_per_weight` > 0, a Gemm/MatMul layer with fewer than that many rows per input
// feature (one row per sample after a global pool: the classifier on a few thousand images) and
// at most 2048 inputs instead takes the damping from {1, 10, 100, 1000} x `damping` with the least 4-fold
// cross-validated output error (folds by sample; up to 8 evenly spaced output channels score each
// value). Plain least squares there fits the calibration images' logits better than unseen ones'.
// With LsqOptions::select_zeros the step also chooses which weights to zero before the re-fit
// (Optimal Brain Surgeon saliencies on the same normal equations; prune_magnitude's criterion obs).
// Channels whose system is not positive definite keep their weights (counted). A layer whose
// reconstruction error would not decrease keeps its weights.
// Each layer's X_cur and Y_ref are computed from activations kept at a cut before the layer
// (ActivationCut, passes/activation_cut.h): the passes run only the nodes since the last cut, with
// the bits of running the model from its input.
#pragma once

#include <unordered_map>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "lwc/dataset.h"
#include "lwc/graph_edit.h"
#include "lwc/pass.h"
#include "passes/cholesky.h"

namespace lwc::passes {

struct LsqOptions {
  int64_t rows_per_sample = 16;
  double damping = 1e-3;
  /// Gemm/MatMul layers with fewer rows than this times (K + 1) choose the damping by
  /// cross-validation (0 = never; off by default, see the README's pruning section).
  double cv_rows_per_weight = 0;
  /// Fit a bias too (added when the layer has none; a MatMul's is the constant of an Add that alone
  /// reads its output, as Linear layers on tokens export, and a MatMul without one gets none).
  bool fit_bias = true;
  /// Output tensor name -> which of the reference's output channels the layer still computes
  /// (prune_channels removed the others): the reference output is read at those channels.
  std::map<std::string, std::vector<int64_t>> ref_channels;
  /// Weight sharing: instead of each weight, re-fit the layer's shared values (every non-zero
  /// weight keeps its cluster) and biases, one joint system per layer.
  bool shared = false;
  /// Optimal Brain Surgeon mask selection (not with `shared`): output tensor name -> how many of
  /// that layer's weights should be zero. Before the layer's re-fit, its weights are zeroed up to
  /// that count (weights already zero count), the ones whose removal raises their channel's ridge
  /// objective least: x_q² / [H⁻¹]_qq with x the ridge fit on the channel's surviving weights and
  /// H = G_SS + λI (Hassibi & Stork 1993; LeCun et al.'s w_q² (G_qq + λ) where H is not positive
  /// definite). Saliencies of one layer are in the same units (squared output error on the
  /// calibration rows), so they are ranked layer-wide, ties by position. Each removal is scored as
  /// if it were the only one: removing many in one step ignores their interactions, which an
  /// iterative schedule re-scores after each step.
  std::map<std::string, int64_t> select_zeros;
  /// OBS selection in this many rounds: each removes an even share of the rest, scored at the ridge
  /// fit after the rounds before (the Gram matrix stays: the layer's inputs do not change), so later
  /// removals see the earlier ones (towards the greedy one-at-a-time OBS of Frantar & Alistarh 2022).
  int64_t select_rounds = 1;
  /// With select_m > 0, the selection keeps select_n of every select_m consecutive weights along the
  /// input channels (the N:M groups of prune_magnitude's pattern; per group the lowest saliencies
  /// go, the count in select_zeros is not used; a trailing group shorter than M stays dense).
  int64_t select_n = 0, select_m = 0;
};

struct LsqLayerResult {
  std::string node;
  double error_before = 0, error_after = 0;  ///< Σ‖Y_ref − Y‖² / Σ‖Y_ref‖² on the sampled rows
  int64_t channels = 0, channels_kept = 0;   ///< channels solved / left unchanged (not positive definite)
  bool applied = false;
  int64_t selected = 0;  ///< weights zeroed by the OBS selection (select_sparsity)
  double damping = 0;  ///< the damping used (chosen by cross-validation when `cv` is set)
  bool cv = false;
};

/// How a layer's weight tensor maps to a least-squares problem: per group g, output channel o of
/// the group and row index k < K (im2col order for Conv, input feature for Gemm/MatMul).
struct LayerForm {
  enum class Kind { Conv, Gemm, MatMul } kind = Kind::Conv;
  int64_t groups = 1, ocg = 0, K = 0, out = 0;
  bool trans = false;  ///< Gemm transB: W [N, K]
  bool bias = false;   ///< a bias column (constant 1) follows the K input columns
  Shape wshape;
  /// Columns of the least-squares rows: K, plus the bias column.
  int64_t Kb() const { return K + (bias ? 1 : 0); }
  /// Flat index of W for output channel o (global) and row k.
  int64_t windex(int64_t o, int64_t k) const {
    if (kind == Kind::Conv || trans) return o * K + k;
    return k * out + o;
  }
};

/// The form of `n` with weights `W`: Conv with 4-D weights, Gemm (transA = 0, alpha = beta = 1) and
/// MatMul with 2-D weights. Otherwise nullopt, and `why` says what is not supported.
std::optional<LayerForm> layerForm(const Node& n, const Tensor& W, bool bias_column, std::string& why);
/// layerForm of a node of `g`, where a MatMul's bias is the float constant of the one Add after it
/// (trailingBiasAdd; Linear layers on 3-D inputs export so): with `bias_column` such a MatMul gets
/// the bias column too, and `tb` (when given) gets that Add (node -1 when there is none).
std::optional<LayerForm> layerFormIn(const Graph& g, const GraphIndex& index, const Node& n, const Tensor& W, bool bias_column,
                                     std::string& why, TrailingBias* tb = nullptr);

/// Runs `model` with `values` as its outputs over all of `data` (reset first) and hands each
/// batch's outputs (in the order of `values`) to `fn`. `input` is the model input the batches feed;
/// batches of up to `batch` samples, fewer when the outputs of one batch would pass ~256 MB (the
/// first batch is one sample, which sizes the others).
void forEachBatch(const Model& model, const std::vector<std::string>& values, Dataset& data, const std::string& input,
                  int64_t batch, int threads, const std::function<void(const std::vector<Tensor>&)>& fn);

/// Xᵀ X of a layer's least-squares rows on the calibration data (the Hessian of its output error).
struct LayerGram {
  LayerForm form;
  std::vector<std::vector<double>> G;  ///< per group, Kb x Kb row-major (Kb = K + 1 with the bias column)
  int64_t rows = 0;                    ///< rows accumulated per group
  std::string unsupported;             ///< why this layer has none (empty when it has)
};

/// The Gram matrices of the given nodes of `model` (indices into its nodes; inputs observed in
/// `model` itself), sampled as lsqRecover samples rows: `rows_per_sample` im2col patches or input
/// rows per sample. One data pass for the layers whose matrices fit ~512 MB together (a larger
/// layer gets a pass of its own); `done(k, gram)` gets each nodes[k]'s result (gram.unsupported
/// says why there is none) as soon as it is complete, and the matrices are freed after it returns.
/// The sums are the same on any number of threads.
void layerGrams(const Model& model, const std::vector<size_t>& nodes, Dataset& data, const std::string& input, int64_t batch,
                int threads, int64_t rows_per_sample, bool bias_column, const std::function<void(size_t, LayerGram&)>& done);

/// The part of `m` that computes `value` (made the only graph output; everything else dropped), so
/// per-layer data passes run only the layers before the one they look at.
Model truncatedTo(const Model& m, const std::string& value);
/// The same for several values, which become the graph outputs in this order.
Model truncatedTo(const Model& m, const std::vector<std::string>& values);

/// Per-channel means (axis 1) of float tensors `values` of `model` over all of `data` (reset first),
/// one pass for all; an entry stays empty for a tensor of another type or rank < 2. `input` is the
/// model input the batches feed; batches of up to `batch` samples, fewer when the outputs of one
/// batch would pass ~256 MB. `axes`: the channel axis of each value (default 1; negative counts from the end, -1 = the last).
std::vector<std::vector<double>> channelMeans(const Model& model, const std::vector<std::string>& values, Dataset& data,
                                              const std::string& input, int64_t batch, int threads,
                                              const std::vector<int>& axes = {});

/// The `lsq_cv_rows` option of the passes that run lsqRecover (LsqOptions::cv_rows_per_weight).
// "relative output error 0.12 -> 0.034" for a layer's note; a value that is not finite (the
// reference output overflowed, inf/inf) reads "not finite" rather than the platform's "-nan".
std::string describeError(double before, double after);

/// Which model a recovery step matches a layer's output to: the pipeline's input (`reference`,
/// the original model) where it computes a tensor of that name with the same shape, else the
/// step's input (`unmodified`). After an earlier step pruned channels, the pipeline's input still
/// has the tensor under its name but with more channels (a later lsq step stopped with "reference
/// output does not match the layer", a bias step skipped the layer, and a second channel step
/// matched its kept channels by index to the wrong original channels).
class RecoveryReference {
 public:
  RecoveryReference(const Model* reference, const Model& unmodified);
  bool usePipelineInput(const std::string& value) const;

 private:
  const Model* reference_;
  std::unordered_map<std::string, ValueInfo> ref_types_, step_types_;
};

OptionSpec lsqCvRowsOption();

/// Refuses the lsq_* options of a pass whose `recover` is not lsq (they would be ignored): one given
/// in the options, or lsq_cv_rows above 0 however set.
void checkLsqOptionsApply(const PassOptions& o);

/// Reconstructs the given nodes (indices into m.graph.nodes, Conv/Gemm/MatMul with constant float
/// weights); others are named in r.notes and left alone. `unmodified` is the model before the
/// calling pass changed it: the reference for tensors ctx.reference does not have. Needs
/// ctx.calib. Returns one entry per node reconstructed.
std::vector<LsqLayerResult> lsqRecover(Model& m, const Model& unmodified, const std::vector<size_t>& nodes,
                                       PassContext& ctx, PassResult& r, const LsqOptions& opts = {});

}  // namespace lwc::passes
