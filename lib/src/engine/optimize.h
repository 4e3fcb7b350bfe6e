// Graph rewrites the engine applies to its private copy of a graph before choosing kernels.
//
// 1. BatchNormalization after a Conv with constant weights is folded into the Conv; any other
//    (4-D input, constant parameters) becomes a depthwise 1x1 Conv; a Pad of zeros is dropped. A
//    DequantizeLinear -> [Flatten/Reshape/Squeeze/Unsqueeze] -> QuantizeLinear round trip with equal
//    per-tensor parameters (exact) is dropped, and QDQ patterns become integer kernels. Elementwise
//    float ops between a per-tensor 8-bit DequantizeLinear and QuantizeLinear (an INT8 model's
//    SiLU, HardSwish, Sigmoid, Tanh) become one 256-entry lookup table, lwc.internal.QLut,
//    computed by the reference kernels: the same bytes as the chain. After the layout change
//    (2.), a product of such a chain (a squeeze-excite gate) and another dequantized tensor
//    becomes lwc.internal.QMulLut (same bytes), and DequantizeLinear -> global average pooling ->
//    QuantizeLinear lwc.internal.QGlobalAvgPoolNhwc, integer sums (within one step).
// 2. Each 2-D float Conv with constant weights becomes lwc.internal.ConvNhwc between two Transposes;
//    Transposes are then pushed through layout-agnostic ops (activations, elementwise arithmetic
//    with constants or with other NHWC values, pooling, Concat) and cancelled in pairs, so whole
//    chains of convolutions run in NHWC without reorders; the rest stay at the edges (one copy per
//    value and perm, however many convolutions read it).
// 3. Activations (Relu, Clip, Sigmoid, HardSigmoid, HardSwish, LeakyRelu, SiLU as y * Sigmoid(y), HardSwish as
//    y * HardSigmoid(y)) and a residual Add that follow a
//    ConvNhwc are fused into it as oneDNN post-ops.
// 4. The exact GELU that exporters decompose (x/sqrt2 -> Erf -> +1 -> *x -> *0.5) becomes
//    lwc.internal.Gelu, one oneDNN gelu_erf pass.
//    LayerNormalization as exporters decompose it below opset 17 (ReduceMean, Sub, Pow, ReduceMean,
//    Add, Sqrt, Div, then Mul and Add by constants) becomes lwc.internal.LayerNorm, oneDNN's layer
//    normalization in one pass.
//    Unread optional outputs (Dropout's mask, LayerNormalization's statistics, MaxPool's indices)
//    are not computed.
// 5. A MatMul of a transposed B (attention's q times k transposed) reads B in place
//    (lwc.internal.MatMulTransB), a scalar Mul/Div after it is applied as each product is written,
//    and a Transpose [0, 2, 1, 3] after a MatMul of two activations (heads merged back) is where
//    the products are written (lwc.internal.MatMulMergeHeads, or MatMulTransB's merge_heads).
// 6. Transpose -> Reshape -> Transpose chains that only reshape (the inferred shapes say so) become
//    one Reshape: a ConvNhwc's output flattened into a transformer's tokens is not copied twice.
// The rewritten graph computes the same function; tests compare it with the reference kernels.
#pragma once

#include "lwc/graph.h"
#include "lwc/shape_inference.h"

namespace lwc::engine {

inline constexpr const char* kInternalDomain = "lwc.internal";

struct OptimizeStats {
  int bn_folded = 0;
  int bn_depthwise = 0;  ///< BatchNormalizations no Conv absorbs, made depthwise 1x1 Convs (4-D input)
  int pads_dropped = 0;  ///< Pads of all-zero pads
  int qdq_fused = 0;
  int lookup_tables = 0;  ///< DQ -> elementwise float ops -> Q chains made one lookup (QLut), gated products (QMulLut)
  int convs_nhwc = 0;
  int transposes_left = 0;
  int fused_post_ops = 0;
  int gelu_fused = 0;
  int outputs_dropped = 0;  ///< unread optional outputs (Dropout's mask, ...) no longer computed
  int layernorm_fused = 0;  ///< decomposed LayerNormalizations (ReduceMean ... Div [Mul] [Add]) made one op
  int matmul_bias_fused = 0;
  int matmul_trans_b = 0;
  int matmul_scaled = 0;  ///< scalar Mul/Div after a MatMulTransB folded into it
  int matmul_merge_heads = 0;  ///< Transpose [0, 2, 1, 3] after a MatMul of two activations folded into it
  int transposes_folded = 0;  ///< Transpose -> Reshape -> Transpose chains that became one Reshape
};

/// `types`: the inferred types of the model's values (inferShapes); rewrites that depend on
/// shapes (6.) are skipped without them. `opset`: the model's default-domain opset, at which the
/// lookup tables of 1. are computed; 0 skips that rewrite.
OptimizeStats optimizeForExecution(Graph& g, const ValueTypes* types = nullptr, int64_t opset = 0);

/// evaluateNode (lwc/engine.h) at a given opset of the node's domain: the node on constant inputs
/// with the reference kernels.
std::optional<std::vector<Tensor>> evaluateNodeAt(const Node& n, int64_t opset, const std::vector<const Tensor*>& inputs);

/// The bias the fused MatMul + Add ops (lwc.internal.MatMul, QLinearMatMul, MatMulIntegerToFloat)
/// take: float32, `n` values along the last axis, [n] or [1, n] (at most rank 2, so that adding it
/// to a product of rank >= 2 keeps the product's shape).
bool isFusedMatMulBias(const Tensor& c, int64_t n);
/// The scale lwc.internal.MatMulIntegerScaled takes: one value or `n` along the last axis, rank <= 2.
bool isScaledMatMulScale(const Tensor& s, int64_t n);

/// True when MatMulInteger with an `a_type` input of constant zero point `a_zp` and the constant
/// int8 B [K, N] (zero point 0) runs on oneDNN's int8 kernel, exactly, on this CPU (dnnl_int8.cpp).
bool matMulIntegerFast(DType a_type, int32_t a_zp, const Tensor& b);


}  // namespace lwc::engine
