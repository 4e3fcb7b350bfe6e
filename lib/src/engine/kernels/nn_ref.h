// Reference convolution, GEMM and pooling as plain functions (engine-internal).
//
// They are the test oracle of the fast paths and their fallback. A fast path resolves its node with
// the same parse*Params function, so both always agree on pads, output shapes and what is an error.
// parse*Params validate everything and throw lwc::Error naming the node; the *Ref functions trust
// their params and take float32 or float64 tensors (gemm/matmul also int32, int64, uint32, uint64;
// max pooling also int8, uint8). Float16 is converted by the kernels before calling them.
#pragma once

#include <cstdint>
#include <vector>

#include "lwc/graph.h"
#include "lwc/tensor.h"

namespace lwc::engine {

struct KernelContext;

/// A sliding window over the spatial dims of an [N, C, D1, ..., Dr] tensor, with every attribute
/// resolved (auto_pad applied, defaults filled in); one entry per spatial dim.
struct WindowGeometry {
  std::vector<int64_t> in, kernel, strides, dilations, pads_begin, pads_end, out;
  size_t rank() const { return in.size(); }
};

/// Conv: X [N, C, D...], W [M, C/group, K...], optional B [M] -> Y [N, M, O...].
struct ConvParams {
  int64_t batch = 0, in_channels = 0, out_channels = 0, group = 1;
  WindowGeometry geo;
  Shape outShape() const;
};
ConvParams parseConvParams(const Node& n, const Shape& x, const Shape& w);
/// im2col + blocked GEMM, OpenMP over batch x group (or inside the GEMM when there are few of those).
Tensor convRef(const Tensor& x, const Tensor& w, const Tensor* b, const ConvParams& p);

/// ConvTranspose: X [N, C, D...], W [C, M/group, K...], optional B [M] -> Y [N, M, O...].
/// Same fields as ConvParams (a distinct type so the two parsers' results cannot be mixed up):
/// geo.in is the input's spatial size, geo.out the output's; pads are those of the equivalent Conv.
struct ConvTransposeParams : ConvParams {};
ConvTransposeParams parseConvTransposeParams(const Node& n, const Shape& x, const Shape& w);
/// GEMM (W^T x X) + col2im scatter.
Tensor convTransposeRef(const Tensor& x, const Tensor& w, const Tensor* b, const ConvTransposeParams& p);

/// MaxPool, AveragePool, LpPool: X [N, C, D...] -> Y [N, C, O...].
struct PoolParams {
  int64_t batch = 0, channels = 0;
  WindowGeometry geo;
  bool count_include_pad = false;  ///< AveragePool
  int64_t storage_order = 0;       ///< MaxPool Indices: 0 row-major, 1 column-major
  double p = 2;                    ///< LpPool
  Shape outShape() const;
};
/// `opset` decides how LpPool's `p` is read (a float before opset 2).
PoolParams parsePoolParams(const Node& n, int64_t opset, const Shape& x);
/// Padding never wins. `indices` (optional) receives int64 flat positions in X as ONNX defines them.
Tensor maxPoolRef(const Tensor& x, const PoolParams& p, Tensor* indices = nullptr);
Tensor averagePoolRef(const Tensor& x, const PoolParams& p);
Tensor lpPoolRef(const Tensor& x, const PoolParams& p);

/// Gemm: Y [M, N] = alpha * op(A) * op(B) + beta * C, C unidirectionally broadcast to [M, N].
struct GemmParams {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  double alpha = 1, beta = 1;
};
/// `c` is the shape of C, nullptr when C is omitted.
GemmParams parseGemmParams(const Node& n, const Shape& a, const Shape& b, const Shape* c);
Tensor gemmRef(const Tensor& a, const Tensor& b, const Tensor* c, const GemmParams& p);

/// MatMul with numpy semantics (1-D operands promoted, batch dims broadcast).
struct MatMulParams {
  int64_t m = 0, n = 0, k = 0;
  Shape batch;             ///< broadcast batch dims of the result
  Shape a_batch, b_batch;  ///< each operand's batch dims, left-padded with 1s to batch.size()
  Shape out;               ///< result shape, promoted dims removed
};
MatMulParams parseMatMulParams(const Node& n, const Shape& a, const Shape& b);
/// A scalar the product is multiplied or divided by afterwards, element by element, as a Mul or
/// Div node after it would (lwc.internal.MatMulTransB's `scale`: attention's 1/sqrt(d)).
struct ProductScale {
  float value = 1.0f;
  bool divide = false;
};
/// With trans_b, b holds B with its last two axes swapped ([..., N, K]); p is parsed for B.
/// `scale` (float32 only) is applied to each product's outputs right after they are computed.
/// `merge_heads`: a rank-4 result [B, H, M, N] is written as [B, M, H, N] (what a Transpose with
/// perm [0, 2, 1, 3] after it makes of it: attention's heads merged back), each product in place.
/// One float32 product C[m, n] = A[m, k] · B (B [k, n], or [n, k] with trans_b; row strides lda,
/// ldb, ldc) by a faster library routine; returns false to leave it to the reference loop. Must
/// give the same bits on any number of threads.
using FloatProduct = bool (*)(bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                              const float* b, int64_t ldb, float* c, int64_t ldc);
/// `fast` is offered each product of a batched float32 MatMul (B with batch dims, or merge_heads);
/// `*used_fast` (when given) says whether it took any.
Tensor matMulRef(const Tensor& a, const Tensor& b, const MatMulParams& p, bool trans_b = false,
                 const ProductScale* scale = nullptr, bool merge_heads = false, FloatProduct fast = nullptr,
                 bool* used_fast = nullptr);
/// The MatMul kernel (ONNX MatMul, lwc.internal.MatMulTransB with trans_b, MatMulMergeHeads) on
/// the reference loops, products offered to `fast` as matMulRef does.
void matMulAnyKernel(KernelContext& ctx, bool trans_b, FloatProduct fast = nullptr, bool* used_fast = nullptr);

/// Row-major C[M,N] = alpha * op(A) * op(B) + beta * C (beta == 0 ignores C's contents).
/// Blocked, OpenMP-parallel unless already inside a parallel region. Instantiated for float, double,
/// int32_t, int64_t, uint32_t, uint64_t.
template <typename T>
void gemmBlocked(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                 const T* b, int64_t ldb, T beta, T* c, int64_t ldc);

/// The reference LayerNormalization and Softmax kernels (the fast paths fall back to them).
void layerNormReference(KernelContext& ctx);
/// The reference lwc.internal.MatMul (A, B, c): MatMul(A, B) + c (optimize.cpp, fuseMatMulBias).
void matMulBiasReference(KernelContext& ctx);
void softmaxReference(KernelContext& ctx, bool coerce_2d);

}  // namespace lwc::engine
