// Small graph-editing helpers shared by the passes and the engine's rewrites.
#pragma once

#include <string>
#include <vector>

#include "lwc/graph.h"

namespace lwc {

/// Number of reads of `value`: node inputs (top level and inside subgraphs) plus graph outputs.
size_t useCount(const Graph& g, const std::string& value);

/// True when a subgraph attribute of some node reads `value` from the outer scope.
bool readBySubgraph(const Graph& g, const std::string& value);

/// Makes every top-level node input reading `from` read `to` instead (graph outputs untouched).
void replaceUses(Graph& g, const std::string& from, const std::string& to);

/// Removes node `index` whose output `y` computes the same values as `x` (an identity), rewiring
/// readers of `y` to `x`. When `y` is a graph output, `x`'s producer is renamed to produce `y`
/// instead. Returns false (and changes nothing) when that is impossible: `x` and `y` both graph
/// outputs, `x` a graph input or initializer while `y` is a graph output, or subgraph reads.
bool bypassNode(Graph& g, size_t index, const std::string& x, const std::string& y);

/// Stores `t` as the new value of constant input `name` of one node: in place when that node is
/// the constant's only reader, else under a fresh name derived from `base`. Returns the name to use.
std::string replaceConstant(Graph& g, const std::string& name, const std::string& base, Tensor t);

/// Erases those of `names` that are initializers nobody reads any more (graph inputs are kept).
/// Returns how many were erased.
int64_t dropUnusedConstants(Graph& g, const std::vector<std::string>& names);

/// Index of the node producing `value`, or -1.
int producerIndex(const Graph& g, const std::string& value);

/// Float32 initializer named `name` (optionally with exactly `numel` elements), else nullptr.
const Tensor* floatConstant(const Graph& g, const std::string& name, int64_t numel = -1);

/// A float32 tensor of `n` values along its last axis ([n] or [1, ..., n]): one value per output
/// column, as a Linear layer's bias.
bool isColumnBias(const Tensor& t, int64_t n);

/// The Add that alone reads `value` (not a graph output) and adds a float32 constant of `channels`
/// values along the last axis ([C] or [1, ..., C]; not a graph input): how exporters write the bias
/// of a Linear layer on 3-D inputs, MatMul + Add. `node` is -1 when there is none.
struct TrailingBias {
  int node = -1;
  size_t input = 0;  ///< which input of the Add is the constant
};
TrailingBias trailingBiasAdd(const Graph& g, const GraphIndex& index, const std::string& value, int64_t channels);

/// Int64 or int32 initializer named `name` that is not also a graph input (a constant), else nullptr.
const Tensor* intConstant(const Graph& g, const std::string& name);
/// The values of an int64 or int32 tensor, read exactly (torch writes "to the end" as INT64_MAX,
/// which a double would round past).
std::vector<int64_t> intValues(const Tensor& t);

/// Sets the segment sizes of Split node `node`: its `split` attribute before opset 13, else its
/// constant `split` input (shared constants are copied under a name from `base`), added where the
/// Split had none (replacing opset 18's `num_outputs`).
void setSplitSizes(Graph& g, size_t node, int64_t opset, const std::vector<int64_t>& sizes, const std::string& base);

/// BatchNormalization as a per-channel affine map y = scale·x + shift:
/// scale = γ/√(var+ε), shift = β − μ·scale (computed in double).
struct ChannelAffine {
  std::vector<double> scale, shift;
};
ChannelAffine batchNormAffine(const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var,
                              double epsilon);

/// Folds a per-output-channel affine map into a linear layer: W'[.., o, ..] = W·scale[o] along
/// `out_axis`, b'[o] = b[o]·scale[o] + shift[o]. Returns new tensors; the inputs are not modified.
/// `b` may be empty (treated as zeros).
std::pair<Tensor, Tensor> foldAffineIntoLinear(const Tensor& w, const Tensor& b, int out_axis,
                                              const ChannelAffine& a);

}  // namespace lwc
