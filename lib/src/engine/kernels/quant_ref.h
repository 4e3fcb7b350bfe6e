// Reference arithmetic of the integer/quantization kernels (quant.cpp): the oracle that every fast
// path (oneDNN int8) must reproduce bit for bit.
//
//   QuantizeLinear      y   = saturate(rne(x / scale) + zp)          x / scale: one float32 division
//   DequantizeLinear    y   = float32(q - zp) * scale                 q - zp in int32
//   ConvInteger,        acc = sum (x - x_zp) * (w - w_zp) [+ bias]    int32; wraps on overflow, as ONNX allows
//   MatMulInteger
//   QLinearConv,        y   = saturate(rne(float32(acc) * M) + y_zp)
//   QLinearMatMul       M   = float32(x_scale * w_scale) / y_scale     (float32, in that order)
//
// rne is round-half-to-even; saturate clamps to the output type's range. Padding contributes nothing
// (it holds the zero point, so x - x_zp = 0).
//
// Requantization uses a float32 real multiplier on the int32 accumulator, as ONNX Runtime does
// (output_scales = X_scale * W_scale / Y_scale, then MlasRequantizeOutput: float(acc) * scale, round
// half to even, add the zero point, clamp). ONNX's Python reference multiplies in float64 instead;
// the two can differ by one step when a product lands within float32 rounding of a .5 tie (or for
// |acc| > 2^24, where float32(acc) is inexact). We follow ONNX Runtime because deployed models are
// validated against it, and because float32 is what an int8 library's output scales can reproduce.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/kernels/common.h"

namespace lwc::engine::quant {

/// Largest opset whose definitions of these ops the reference kernels implement.
inline constexpr int kMaxOpset = 21;

/// Value range of a quantized integer dtype.
struct QRange {
  int32_t lo, hi;
};
/// Range of int8, uint8, int16 or uint16; errors naming `what` for any other dtype.
QRange qrange(DType t, const KernelContext& ctx, const char* what);

/// rne(v) clamped to [lo, hi]; NaN gives 0 (clamped), so NaN quantizes to the zero point.
inline int32_t roundSaturate(float v, int32_t lo, int32_t hi) {
  if (std::isnan(v)) return std::clamp(0, lo, hi);
  // Clamping before rounding gives the same result (the bounds are integers) and keeps the cast in range.
  v = std::clamp(v, static_cast<float>(lo), static_cast<float>(hi));
  return static_cast<int32_t>(std::rint(v));  // default rounding mode: to nearest, ties to even
}

/// QuantizeLinear of one value: saturate(rne(x / scale) + zp) into [r.lo, r.hi].
inline int32_t quantizeValue(float x, float scale, int32_t zp, QRange r) {
  return roundSaturate(x / scale, r.lo - zp, r.hi - zp) + zp;
}

/// DequantizeLinear of one value.
inline float dequantizeValue(int32_t q, int32_t zp, float scale) { return static_cast<float>(q - zp) * scale; }

/// Real multiplier that maps an accumulator in units of x_scale * w_scale to units of y_scale.
inline float requantMultiplier(float x_scale, float w_scale, float y_scale) { return x_scale * w_scale / y_scale; }

/// Requantization of one int32 accumulator: saturate(rne(float(acc) * multiplier) + zp).
inline int32_t requantizeValue(int32_t acc, float multiplier, int32_t zp, QRange r) {
  return roundSaturate(static_cast<float>(acc) * multiplier, r.lo - zp, r.hi - zp) + zp;
}

/// a + b with the two's-complement wrap ONNX allows for int32 accumulation (defined, unlike signed overflow).
inline int32_t wrapAdd(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
}

/// Scales of input `what` as float32 (float16 converted); errors unless every one is finite and > 0.
std::vector<float> readScales(const Tensor& t, const KernelContext& ctx, const char* what);
/// Zero points of input `what` as int32; errors unless their dtype is `expect` (that of their tensor).
std::vector<int32_t> readZeroPoints(const Tensor& t, DType expect, const KernelContext& ctx, const char* what);

// The reference kernels, usable as fallbacks by fast paths (they read everything from ctx).
void quantizeLinear(KernelContext& ctx);
void dequantizeLinear(KernelContext& ctx);
void dynamicQuantizeLinear(KernelContext& ctx);
void convInteger(KernelContext& ctx);
void qlinearConv(KernelContext& ctx);
void matMulInteger(KernelContext& ctx);
void qlinearMatMul(KernelContext& ctx);
/// lwc.internal.QLinearMatMul: QLinearMatMul's inputs and a float32 bias per output column (input 8,
/// real units) added to the accumulator: y = saturate(rne((acc + bias / (a_scale * b_scale)) * M) + y_zp).
void qlinearMatMulBias(KernelContext& ctx, const Tensor* bias);
/// lwc.internal.MatMulIntegerToFloat (a, a_scale, a_zp, b, b_scale, b_zp [, bias]): float
/// (acc + bias / (a_scale * b_scale)) * a_scale * b_scale, as ONNX Runtime's MatMulIntegerToFloat.
void matMulIntegerToFloat(KernelContext& ctx);
/// One output row of MatMulIntegerToFloat: y[j] = (float(acc[j] - sub[j]) + bias_acc[j]) * mult[j]
/// for j < n; sub (wrapping int32) and bias_acc may be null.
void accumulatorToFloatRow(const int32_t* acc, const int32_t* sub, const float* bias_acc, const float* mult, float* y,
                           int64_t n);
/// lwc.internal.MatMulIntegerScaled (a, b, a_zp, b_zp, scale [, bias]): float32
/// float(MatMulInteger(a, b, a_zp, b_zp)) * scale [+ bias], rounded as the Cast -> Mul [-> Add]
/// chain it replaces (dynamic quantization's layers): scale one value or one per output column
/// (isScaledMatMulScale), bias as the fused MatMul ops take it.
void matMulIntegerScaled(KernelContext& ctx);
/// One output row of MatMulIntegerScaled: y[j] = float(acc[j] - sub[j]) * scale[per_column ? j : 0]
/// (+ bias[j]) for j < n, sub (null: none) subtracted in wrapping int32.
void scaleAccumulatorRow(const int32_t* acc, const int32_t* sub, const float* scale, bool per_column,
                         const float* bias, float* y, int64_t n);
/// lwc.internal.QAdd (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp){relu}: DequantizeLinear x2
/// -> Add [-> Relu] -> QuantizeLinear in one pass, bit for bit.
void qadd(KernelContext& ctx);
/// y[i] = table[x[i]] for n bytes (x and y may be the same buffer), on the calling thread: the
/// lookup of lwc.internal.QLut (64 bytes at a time with AVX-512 VBMI).
void lookupBytes(const uint8_t* x, const uint8_t* table, uint8_t* y, int64_t n);
/// lookupBytes over all threads (above a size threshold), in blocks of 64 bytes.
void lookupBytesParallel(const uint8_t* x, const uint8_t* table, uint8_t* y, int64_t n);

}  // namespace lwc::engine::quant
