// Model statistics: parameters, MACs, bytes, sparsity, entropy bound.
//
// Conventions (also in README):
//  - params: elements of initializers that are weights, biases or normalisation scale/shift, plus other
//    float tensors with more than one element (e.g. a bias added after MatMul). Not counted: BatchNorm
//    running mean/variance (reported separately as bn_running_stats), quantization scales/zero points,
//    integer shape/index constants and float scalars (reported as constants). This matches
//    sum(p.numel() for p in model.parameters()) in PyTorch. Tensors held in Constant nodes count
//    by the same rules, as initializers would.
//  - MACs: multiply-accumulates of Conv, ConvTranspose, Gemm, MatMul and their integer/QLinear
//    forms; FLOPs = 2 x MACs. Everything else is counted separately as other_ops: one per output
//    element for elementwise ops, the window size per output element for pooling, one per input
//    element for reductions, two per element for normalisations.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "lwc/graph.h"

namespace lwc {

enum class InitRole { Weight, Bias, NormParam, BnStat, QuantParam, OtherParam, Constant };
std::string_view roleName(InitRole r);

/// Role of each initializer, from how nodes consume it.
std::map<std::string, InitRole> initializerRoles(const Graph& g);

struct LayerStats {
  std::string name;
  std::string op_type;
  int64_t params = 0;
  int64_t macs = -1;  ///< -1: shapes unknown
  int64_t other_ops = 0;
  int64_t weight_elements = 0;
  int64_t weight_zeros = 0;
  std::string output_shape;
};

struct ModelStats {
  int64_t batch = 1;
  size_t nodes = 0;
  std::map<std::string, int64_t> op_histogram;
  int64_t params = 0;
  int64_t bn_running_stats = 0;
  int64_t constants = 0;
  int64_t macs = 0;
  bool macs_complete = true;
  int64_t other_ops = 0;
  std::map<std::string, int64_t> weight_bytes_by_dtype;  ///< bytes of params by dtype name
  int64_t weight_bytes = 0;
  int64_t weight_elements = 0;  ///< elements of Weight-role tensors (sparsity is over these)
  int64_t weight_zeros = 0;
  double entropy_bytes = 0;  ///< Shannon bound of all parameter tensors, per-tensor value histograms
  /// Bytes of the parameters as plain tensors: weight_bytes, except in a Huffman-coded file
  /// (weight_bytes is then the coded bytes), where it is the decoded weights' (what entropy_bytes bounds).
  int64_t plain_weight_bytes = 0;
  int64_t file_bytes = -1;   ///< model file + external data, -1 when not loaded from a file
  std::vector<LayerStats> layers;  ///< nodes with parameters or MACs, graph order
};

struct AnalyzeOptions {
  /// Batch size for symbolic first dimensions (MACs are per this many samples).
  int64_t batch = 1;
  /// Compute entropy_bytes, the Shannon bound of the parameters. It sorts every parameter
  /// tensor's values (about a second for 11 M parameters); skip it where only counts are needed
  /// (the per-stage metrics of a pipeline, channel pruning's MACs search). entropy_bytes is 0 then.
  bool entropy = true;
};

ModelStats analyzeModel(const Model& m, const AnalyzeOptions& opts = {});

/// A copy of `m` whose Constant nodes holding a tensor (`value`, `value_float(s)`, `value_int(s)`) are initializers instead, as the
/// engine and fold_constants read them; `m` itself when it has none.
Model constantsAsInitializers(const Model& m);

/// For the error a compression pass gives when it finds nothing to work on: " (its weights are
/// Huffman-coded, ...: run `lwc decode` first ...)" when the model holds ai.lwc weight-coding
/// nodes; " (its weights are float16, e.g. Conv 'c1': lwc prunes and quantizes float32 models;
/// convert it to float32 first)" when a Conv/ConvTranspose/Gemm/MatMul holds float16 or float64 constant
/// weights; else "".
std::string float16WeightsHint(const Model& m);

/// Activation bytes of one sample in a run of `m` in graph order, from shapes inferred at batch 1
/// (values of unknown size count nothing; weights are not activations).
struct ActivationBytes {
  /// Held at the busiest point: each value from its producer (graph inputs from the start) to its
  /// last reader (graph outputs to the end).
  int64_t peak = 0;
  /// Every value the run computes, graph inputs included: what an observer that keeps them all holds.
  int64_t total = 0;
};
ActivationBytes activationBytesPerSample(const Model& m);

/// `requested`, lowered so that batch · per_sample stays within `budget_bytes`; at least 1, and
/// `requested` when per_sample is unknown (≤ 0).
int64_t batchWithin(int64_t per_sample, int64_t requested, int64_t budget_bytes);

/// The model quantizes activations at run time (DynamicQuantizeLinear): its scales are taken over
/// the whole batch, so its outputs depend on the batch, which evaluation then does not lower.
bool quantizesAtRunTime(const Model& m);

/// The activations one batch may hold where evaluation lowers a batch that was not given (lwc
/// eval, lwc compare, a pipeline's eval data): at the default of 100, torchvision resnet50 at
/// 224×224 took 1.25 GB in lwc eval and `lwc compare --per-layer` 3.9 GB at batch 20. The
/// estimate is about half of the real growth (per-node reorders, buffers awaiting reuse).
inline constexpr int64_t kEvalActivationBytes = int64_t{256} << 20;

/// The batch evaluation runs at when none was given: `requested`, lowered by batchWithin to
/// kEvalActivationBytes at `per_sample` bytes each. When it is lowered and `why` is set, *why gets
/// "batches of N, not R: about X MB of activations per sample" for the message that says so.
int64_t evaluationBatch(int64_t per_sample, int64_t requested, std::string* why = nullptr);

/// Empirical Shannon entropy of a tensor's values (bits per element; exact value histogram).
double entropyBitsPerElement(const Tensor& t);
/// Number of elements equal to zero (for floats: +0 and -0).
int64_t countZeros(const Tensor& t);

}  // namespace lwc
