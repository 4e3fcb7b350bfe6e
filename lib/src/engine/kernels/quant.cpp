// Reference kernels of the integer/quantization family: QuantizeLinear, DequantizeLinear,
// DynamicQuantizeLinear, ConvInteger, QLinearConv, MatMulInteger and QLinearMatMul.
//
// Integer ops accumulate in int32 exactly as ONNX defines them; the rounding, saturation and
// requantization formulas live in quant_ref.h so that fast paths share them.
#include <limits>
#include <optional>
#include <string>
#include <utility>

#include "engine/kernels/common.h"
#include "engine/kernels/int8_avx512.h"
#include "engine/kernels/quant_ref.h"
#include "engine/optimize.h"

#ifdef LWC_INT8_X86
// GCC 12's AVX-512 intrinsics start their results from _mm512_undefined_*() (`__m512i __Y = __Y;`),
// which -Wmaybe-uninitialized reports at every use once inlined; nothing here is uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace lwc::engine::quant {

namespace {

// Below this many output elements the elementwise ops stay single-threaded.
constexpr int64_t kParallelMin = 1 << 14;

int64_t ceilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }  // b > 0

// ---------------------------------------------------------------------------------------------
// QuantizeLinear's division without a divider. x / scale, rounded to nearest as the division
// rounds it, is q0 = x * r, e = x - q0 * scale (exact with a fused multiply-add), q0 + e * r, where
// r = 1 / scale rounded to nearest (Markstein's theorem: r within half an ulp of 1 / scale and q0
// within an ulp of the quotient make the corrected value the correctly rounded one, barring
// underflow of e; scales within 2^-100..2^100 rule that out wherever the quotient reaches 0.5, the
// first value that rounds away from zero). A vdivps of 16 lanes costs 10-16 cycles, the two fused
// multiply-adds 1: the kernels that divide per element (the squeeze-excite products, the input's
// QuantizeLinear, QAdd) were bound by it. Checked against the division on every float x in
// 2^-40..2^40 for 2000 scales in 2^-30..2^10 (no difference); a unit test checks the kernels next
// to every half-integer quotient for 300 scales.
#ifdef LWC_INT8_X86
#define LWC_Q512 __attribute__((target("avx512f,avx512bw,avx512vl")))

// AVX-512 F/BW/VL: the 16-lane quantization kernels below.
bool haveAvx512() {
  static const bool ok = int8k::haveAvx512Bw();
  return ok;
}

// A scale whose reciprocal divides exactly as above (and whose reciprocal is a normal float).
bool reciprocalDivides(float scale) { return scale >= 0x1p-100f && scale <= 0x1p100f; }

// a / b per lane, rounded as the division rounds it (rb = 1.0f / b); where a * rb is infinite the
// correction is NaN, and the quotient is then infinite or beyond the largest float as well, so q0 is
// kept: only its clamp to the output range matters.
LWC_Q512 inline __m512 divideLanes(__m512 a, __m512 b, __m512 rb) {
  const __m512 q0 = _mm512_mul_ps(a, rb);
  const __m512 q1 = _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, b, a), rb, q0);
  return _mm512_mask_mov_ps(q1, _mm512_cmp_ps_mask(_mm512_abs_ps(q0), _mm512_set1_ps(INFINITY), _CMP_EQ_OQ), q0);
}

// quantizeValue after the division, per lane: NaN to 0, clamp to [lo, hi] (integers), round half
// to even, add the zero point.
LWC_Q512 inline __m512i quantizeLanes(__m512 q, __m512 lo, __m512 hi, __m512i zp) {
  q = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(q, q, _CMP_ORD_Q), q);
  q = _mm512_min_ps(_mm512_max_ps(q, lo), hi);
  return _mm512_add_epi32(_mm512_cvt_roundps_epi32(q, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zp);
}

// The low 8 or 16 bits of 16 int32 lanes (values already within T's range), the first `m` of them.
template <typename T>
LWC_Q512 inline void storeLanes(T* y, __mmask16 m, __m512i v) {
  static_assert(sizeof(T) <= 2);
  if constexpr (sizeof(T) == 1)
    _mm512_mask_cvtepi32_storeu_epi8(y, m, v);
  else
    _mm512_mask_cvtepi32_storeu_epi16(y, m, v);
}

// 16 (the first `m`) 8-bit values from p as int32 lanes.
template <typename T>
LWC_Q512 inline __m512i widenLanes(const T* p, __mmask16 m) {
  static_assert(sizeof(T) == 1);
  const __m128i v = _mm_maskz_loadu_epi8(m, p);
  if constexpr (std::is_same_v<T, uint8_t>)
    return _mm512_cvtepu8_epi32(v);
  else
    return _mm512_cvtepi8_epi32(v);
}

// dequantizeValue of 16 (the first `m`) 8-bit values from p: float(x - zp) * scale.
template <typename T>
LWC_Q512 inline __m512 dequantizeLanes(const T* p, __mmask16 m, __m512i zp, __m512 scale) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(widenLanes(p, m), zp)), scale);
}

inline __mmask16 firstLanes(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u); }
#endif

// Calls f(T{}) for an 8-bit quantized dtype.
template <typename F>
void dispatch8(DType t, const KernelContext& ctx, const char* what, F&& f) {
  switch (t) {
    case DType::UInt8: return f(uint8_t{});
    case DType::Int8: return f(int8_t{});
    default: break;
  }
  ctx.error(what, " must be int8 or uint8, got ", dtypeName(t));
}

// Calls f(T{}) for the dtypes QuantizeLinear produces and DequantizeLinear reads (16-bit: opset 21).
template <typename F>
void dispatchQuantized(DType t, const KernelContext& ctx, const char* what, F&& f) {
  switch (t) {
    case DType::UInt8: return f(uint8_t{});
    case DType::Int8: return f(int8_t{});
    case DType::UInt16: return f(uint16_t{});
    case DType::Int16: return f(int16_t{});
    default: break;
  }
  ctx.error(what, " must be int8, uint8, int16 or uint16, got ", dtypeName(t));
}

void require8(DType t, const KernelContext& ctx, const char* what) {
  if (t != DType::UInt8 && t != DType::Int8) ctx.error(what, " must be int8 or uint8, got ", dtypeName(t));
}

// A scale and its zero point describe one quantization: both a single value, or the same shape.
void checkPair(const Tensor& scale, const Tensor& zp, const KernelContext& ctx, const char* scale_name,
               const char* zp_name) {
  if ((scale.numel() == 1 && zp.numel() == 1) || scale.shape() == zp.shape()) return;
  ctx.error(zp_name, " has shape ", shapeStr(zp.shape()), " but ", scale_name, " has shape ", shapeStr(scale.shape()),
            "; they must match");
}

void requireSingle(const Tensor& t, const KernelContext& ctx, const char* what) {
  if (t.numel() != 1 || t.rank() > 1)
    ctx.error(what, " has shape ", shapeStr(t.shape()), "; it must be a scalar (per-tensor quantization)");
}

// A per-tensor or per-output-channel parameter: one value, or a 1-D tensor of `channels`.
void requirePerChannel(const Tensor& t, int64_t channels, const KernelContext& ctx, const char* what) {
  if ((t.numel() == 1 && t.rank() <= 1) || (t.rank() == 1 && t.dim(0) == channels)) return;
  ctx.error(what, " has shape ", shapeStr(t.shape()), "; expected a scalar or a 1-D tensor of ", channels,
            " (one per output channel)");
}

// ---------------------------------------------------------------------------------------------
// QuantizeLinear / DequantizeLinear: how scales and zero points map onto x.

// x is viewed as [outer, axis_len, inner] around the quantization axis; element (o, a, i) uses
// parameter base(o, a) + i * innerStep(). Per-tensor parameters view x as one long inner run.
struct AxisLayout {
  enum class Kind { PerTensor, PerAxis, Blocked };
  Kind kind = Kind::PerTensor;
  int64_t outer = 1, axis_len = 1, inner = 1;
  int64_t block = 0;

  int64_t base(int64_t o, int64_t a) const {
    switch (kind) {
      case Kind::PerTensor: return 0;
      case Kind::PerAxis: return a;
      case Kind::Blocked: return (o * ceilDiv(axis_len, block) + a / block) * inner;
    }
    return 0;
  }
  int64_t innerStep() const { return kind == Kind::Blocked ? 1 : 0; }
};

AxisLayout axisLayout(const KernelContext& ctx, const Shape& x, const Shape& scale, const char* scale_name) {
  AxisLayout l;
  const int64_t block = ctx.node.attrInt("block_size", 0);
  if (block < 0) ctx.error("block_size must be >= 0, got ", block);
  if (block == 0 && numelOf(scale) == 1 && scale.size() <= 1) {  // per tensor: axis is ignored
    l.inner = numelOf(x);
    return l;
  }
  const int64_t rank = static_cast<int64_t>(x.size());
  if (rank == 0) ctx.error(scale_name, " has shape ", shapeStr(scale), ", but a scalar input takes a single scale");
  const int64_t axis = normAxis(ctx.node.attrInt("axis", 1), rank, ctx);
  for (int64_t d = 0; d < rank; ++d) (d < axis ? l.outer : d > axis ? l.inner : l.axis_len) *= x[d];
  if (block == 0) {
    if (scale.size() != 1 || scale[0] != x[axis])
      ctx.error(scale_name, " has shape ", shapeStr(scale), "; expected a scalar or a 1-D tensor of ", x[axis],
                " (dim ", axis, " of input shape ", shapeStr(x), ")");
    l.kind = AxisLayout::Kind::PerAxis;
  } else {
    Shape want = x;
    want[axis] = ceilDiv(x[axis], block);
    if (scale != want)
      ctx.error(scale_name, " has shape ", shapeStr(scale), "; block_size ", block, " along axis ", axis,
                " of input shape ", shapeStr(x), " needs ", shapeStr(want));
    l.kind = AxisLayout::Kind::Blocked;
    l.block = block;
  }
  return l;
}

// Applies f(value, scale, zero_point) to every element of x under the layout, writing y.
template <typename TX, typename TY, typename F>
void mapWithParams(const AxisLayout& l, const TX* x, TY* y, const std::vector<float>& scale,
                   const std::vector<int32_t>& zp, F&& f) {
  const int64_t total = l.outer * l.axis_len * l.inner;
  if (l.kind == AxisLayout::Kind::PerTensor) {
    parallelRanges(total, total > kParallelMin, [&](int64_t i0, int64_t i1) {
      const float s0 = scale[0];  // locals, so that stores to y cannot make them reload
      const int32_t z0 = zp[0];
      for (int64_t i = i0; i < i1; ++i) y[i] = f(x[i], s0, z0);
    });
    return;
  }
  const int64_t step = l.innerStep();
  parallelFor(l.outer * l.axis_len, total > kParallelMin, [&](int64_t oa) {
    const int64_t o = oa / l.axis_len, a = oa % l.axis_len;
    const int64_t row = oa * l.inner;
    const int64_t p = l.base(o, a);
    for (int64_t i = 0; i < l.inner; ++i) y[row + i] = f(x[row + i], scale[p + i * step], zp[p + i * step]);
  });
}

// QuantizeLinear with one scale and zero point (the activations' case) on one range, written so
// that it vectorises: plain parameters and restrict pointers, so nothing is reloaded per element (a
// lambda's captures would be reloaded after every 8-bit store, which may alias them). The same
// values as quantizeValue: NaN becomes 0 by a select, clamping comes before rounding (the bounds
// are integers), and rne is adding and subtracting 1.5 * 2^23 in the default rounding mode (exact
// for |v| <= 2^22, which the bounds of 8- and 16-bit types guarantee).
template <typename T>
LWC_AVX2_CLONE void quantizeRange(const float* __restrict x, T* __restrict y, int64_t n, float scale, int32_t zp,
                                  float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] / scale;
    v = v == v ? v : 0.0f;
    v = std::min(std::max(v, lo), hi);
    v = (v + 12582912.0f) - 12582912.0f;
    y[i] = static_cast<T>(static_cast<int32_t>(v) + zp);
  }
}

// DequantizeLinear with one scale and zero point on one range: dequantizeValue's arithmetic with
// plain parameters, so that it vectorises (and gets an AVX2 clone).
template <typename T>
LWC_AVX2_CLONE void dequantizeRange(const T* __restrict x, float* __restrict y, int64_t n, float scale, int32_t zp) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(static_cast<int32_t>(x[i]) - zp) * scale;
}

template <typename T>
void dequantizePerTensor(const T* x, float* y, int64_t n, float scale, int32_t zp) {
  parallelRanges(n, n > kParallelMin,
                 [=](int64_t i0, int64_t i1) { dequantizeRange(x + i0, y + i0, i1 - i0, scale, zp); });
}

#ifdef LWC_INT8_X86
// quantizeRange with the division by a reciprocal (divideLanes), 16 values at a time: the same values.
template <typename T>
LWC_Q512 void quantizeRange512(const float* __restrict x, T* __restrict y, int64_t n, float scale, int32_t zp, float lo,
                               float hi) {
  const __m512 b = _mm512_set1_ps(scale), rb = _mm512_set1_ps(1.0f / scale);
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const __m512i vzp = _mm512_set1_epi32(zp);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {  // two independent chains per iteration
    const __m512 a0 = _mm512_loadu_ps(x + i), a1 = _mm512_loadu_ps(x + i + 16);
    storeLanes(y + i, 0xFFFF, quantizeLanes(divideLanes(a0, b, rb), vlo, vhi, vzp));
    storeLanes(y + i + 16, 0xFFFF, quantizeLanes(divideLanes(a1, b, rb), vlo, vhi, vzp));
  }
  for (; i < n; i += 16) {
    const __mmask16 m = firstLanes(n - i);
    storeLanes(y + i, m, quantizeLanes(divideLanes(_mm512_maskz_loadu_ps(m, x + i), b, rb), vlo, vhi, vzp));
  }
}
#endif

#ifdef LWC_INT8_X86
// The smallest and largest of x[0..n) and 0, NaNs ignored, 16 lanes at a time: min_ps(v, acc) keeps
// acc where v is NaN, as std::min(acc, v) does (min and max are exact in any order).
LWC_Q512 std::pair<float, float> rangeWithZero512(const float* x, int64_t n) {
  __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    lo = _mm512_min_ps(v, lo);
    hi = _mm512_max_ps(v, hi);
  }
  if (i < n) {  // masked-off lanes load 0, which the range already holds
    const __m512 v = _mm512_maskz_loadu_ps(firstLanes(n - i), x + i);
    lo = _mm512_min_ps(v, lo);
    hi = _mm512_max_ps(v, hi);
  }
  alignas(64) float l[16], h[16];
  _mm512_store_ps(l, lo);
  _mm512_store_ps(h, hi);
  float rl = 0.0f, rh = 0.0f;
  for (int j = 0; j < 16; ++j) {
    rl = std::min(rl, l[j]);
    rh = std::max(rh, h[j]);
  }
  return {rl, rh};
}
#endif

// The smallest and largest of x[0..n) and 0, NaNs ignored.
std::pair<float, float> rangeWithZero(const float* x, int64_t n) {
#ifdef LWC_INT8_X86
  if (haveAvx512()) return rangeWithZero512(x, n);
#endif
  float l = 0.0f, h = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    l = std::min(l, x[i]);
    h = std::max(h, x[i]);
  }
  return {l, h};
}

template <typename T>
void quantizePerTensor(const float* __restrict x, T* __restrict y, int64_t n, float scale, int32_t zp, QRange r) {
  static_assert(sizeof(T) <= 2);
  const float lo = static_cast<float>(r.lo - zp), hi = static_cast<float>(r.hi - zp);
#ifdef LWC_INT8_X86
  if (haveAvx512() && reciprocalDivides(scale)) {
    parallelRanges(n, n > kParallelMin,
                   [=](int64_t i0, int64_t i1) { quantizeRange512(x + i0, y + i0, i1 - i0, scale, zp, lo, hi); });
    return;
  }
#endif
  parallelRanges(n, n > kParallelMin,
                 [=](int64_t i0, int64_t i1) { quantizeRange(x + i0, y + i0, i1 - i0, scale, zp, lo, hi); });
}

// ---------------------------------------------------------------------------------------------
// Convolution.

// Geometry of a convolution with 1 to 3 spatial dims, lifted to 3-D with leading unit dims so one
// loop nest serves all ranks. convGeometry is a stand-in for nn_ref.h's parseConvParams: swapping
// means lifting its WindowGeometry into this struct.
struct ConvGeometry {
  int64_t batch = 0, in_channels = 0, out_channels = 0, group = 1;
  int64_t in[3] = {1, 1, 1}, out[3] = {1, 1, 1}, kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1}, dilation[3] = {1, 1, 1}, pad_begin[3] = {0, 0, 0};
  Shape out_shape;  // N x M x spatial..., as ONNX defines it
};
// Resolves auto_pad, pads, strides, dilations, group and kernel_shape of ctx.node for input shape
// `x` (N x C x D...) and weight shape `w` (M x C/group x k...).
ConvGeometry convGeometry(const KernelContext& ctx, const Shape& x, const Shape& w) {
  const Node& node = ctx.node;
  const size_t rank = x.size();
  if (rank < 3 || rank > 5)
    ctx.error("input has shape ", shapeStr(x), "; expected N x C x D1 [x D2 [x D3]] (1 to 3 spatial dims)");
  if (w.size() != rank) ctx.error("weight has shape ", shapeStr(w), ", whose rank differs from input shape ", shapeStr(x));
  const size_t sp = rank - 2;
  ConvGeometry g;
  g.batch = x[0];
  g.in_channels = x[1];
  g.out_channels = w[0];
  g.group = node.attrInt("group", 1);
  if (g.group < 1 || w[1] * g.group != g.in_channels || g.out_channels % g.group != 0)
    ctx.error("input shape ", shapeStr(x), " and weight shape ", shapeStr(w), " do not fit group = ", g.group,
              " (need C == W.shape[1] * group and M divisible by group)");
  auto ints = [&](const char* name, int64_t dflt, size_t count) {
    std::vector<int64_t> v = node.attrInts(name, std::vector<int64_t>(count, dflt));
    if (v.size() != count) ctx.error(name, " has ", v.size(), " values; expected ", count);
    return v;
  };
  const std::vector<int64_t> kernel = ints("kernel_shape", 0, sp);
  const std::vector<int64_t> strides = ints("strides", 1, sp);
  const std::vector<int64_t> dilations = ints("dilations", 1, sp);
  const std::vector<int64_t> pads = ints("pads", 0, 2 * sp);
  const std::string auto_pad = node.attrString("auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "VALID" && auto_pad != "SAME_UPPER" && auto_pad != "SAME_LOWER")
    ctx.error("auto_pad '", auto_pad, "' is not one of NOTSET, VALID, SAME_UPPER, SAME_LOWER");
  g.out_shape = {g.batch, g.out_channels};
  for (size_t d = 0; d < sp; ++d) {
    const size_t k = 3 - sp + d;  // lifted index
    const int64_t in = x[2 + d], ks = w[2 + d], s = strides[d], dil = dilations[d];
    if (node.hasAttr("kernel_shape") && kernel[d] != ks)
      ctx.error("kernel_shape does not match weight shape ", shapeStr(w));
    if (s < 1 || dil < 1) ctx.error("strides and dilations must be >= 1");
    if (pads[d] < 0 || pads[d + sp] < 0) ctx.error("pads must be >= 0");
    const int64_t span = dil * (ks - 1) + 1;  // extent of the dilated kernel
    int64_t out = 0, pad_begin = 0;
    if (auto_pad == "NOTSET" || auto_pad == "VALID") {
      pad_begin = auto_pad == "VALID" ? 0 : pads[d];
      const int64_t room = in + (auto_pad == "VALID" ? 0 : pads[d] + pads[d + sp]) - span;
      out = room < 0 ? 0 : room / s + 1;
    } else {
      out = ceilDiv(in, s);
      const int64_t total = std::max<int64_t>(0, (out - 1) * s + span - in);
      pad_begin = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
    }
    if (out < 1)
      ctx.error("spatial dim ", d, " of the output would be empty (input ", in, ", dilated kernel ", span, ")");
    g.in[k] = in;
    g.out[k] = out;
    g.kernel[k] = ks;
    g.stride[k] = s;
    g.dilation[k] = dil;
    g.pad_begin[k] = pad_begin;
    g.out_shape.push_back(out);
  }
  return g;
}

// Output positions o in [first, last) whose input position o * stride + offset lies in [0, in).
std::pair<int64_t, int64_t> validRange(int64_t offset, int64_t stride, int64_t in, int64_t out) {
  const int64_t first = std::max<int64_t>(0, ceilDiv(-offset, stride));
  const int64_t last = std::min(out, ceilDiv(in - offset, stride));
  return {first, std::max(first, last)};
}

// Calls emit(n, m, acc) for every image n and output channel m, with the int32 accumulators
// acc[spatial] = bias[m] + sum over the group's input channels and kernel taps of (x - x_zp) * (w - w_zp[m]).
// Positions in the padding are skipped: they hold the zero point and contribute nothing. The loop order
// keeps a weight tap fixed while the innermost loop runs along contiguous output and input rows.
template <typename TX, typename TW, typename Emit>
void convAccumulate(const ConvGeometry& g, const TX* x, int32_t x_zp, const TW* w, const std::vector<int32_t>& w_zp,
                    const int32_t* bias, Emit&& emit) {
  const int64_t cpg = g.in_channels / g.group;   // input channels per group
  const int64_t mpg = g.out_channels / g.group;  // output channels per group
  const int64_t in_plane = g.in[0] * g.in[1] * g.in[2];
  const int64_t out_plane = g.out[0] * g.out[1] * g.out[2];
  const int64_t taps = g.kernel[0] * g.kernel[1] * g.kernel[2];
  const int64_t jobs = g.batch * g.out_channels;
#pragma omp parallel
  {
    std::vector<int32_t> acc(static_cast<size_t>(out_plane));
#pragma omp for schedule(static)
    for (int64_t job = 0; job < jobs; ++job) {
      const int64_t n = job / g.out_channels, m = job % g.out_channels;
      const int32_t wzp = w_zp.size() == 1 ? w_zp[0] : w_zp[m];
      std::fill(acc.begin(), acc.end(), bias ? bias[m] : 0);
      for (int64_t c = 0; c < cpg; ++c) {
        const TX* xc = x + (n * g.in_channels + (m / mpg) * cpg + c) * in_plane;
        const TW* wc = w + (m * cpg + c) * taps;
        for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
          for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
            for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
              const int32_t wv = static_cast<int32_t>(wc[(kd * g.kernel[1] + kh) * g.kernel[2] + kw]) - wzp;
              const int64_t off_d = kd * g.dilation[0] - g.pad_begin[0];
              const int64_t off_h = kh * g.dilation[1] - g.pad_begin[1];
              const int64_t off_w = kw * g.dilation[2] - g.pad_begin[2];
              const auto [d0, d1] = validRange(off_d, g.stride[0], g.in[0], g.out[0]);
              const auto [h0, h1] = validRange(off_h, g.stride[1], g.in[1], g.out[1]);
              const auto [w0, w1] = validRange(off_w, g.stride[2], g.in[2], g.out[2]);
              for (int64_t od = d0; od < d1; ++od) {
                const int64_t id = od * g.stride[0] + off_d;
                for (int64_t oh = h0; oh < h1; ++oh) {
                  const TX* xrow = xc + (id * g.in[1] + oh * g.stride[1] + off_h) * g.in[2];
                  int32_t* arow = acc.data() + (od * g.out[1] + oh) * g.out[2];
                  for (int64_t ow = w0; ow < w1; ++ow)
                    arow[ow] = wrapAdd(arow[ow], (static_cast<int32_t>(xrow[ow * g.stride[2] + off_w]) - x_zp) * wv);
                }
              }
            }
      }
      emit(n, m, acc.data());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Matrix multiplication.

// For each linear index into `batch`, the sum of its coordinates times `strides`.
std::vector<int64_t> batchOffsets(const Shape& batch, const std::vector<int64_t>& strides) {
  std::vector<int64_t> off(static_cast<size_t>(numelOf(batch)));
  for (size_t i = 0; i < off.size(); ++i) {
    int64_t rem = static_cast<int64_t>(i), o = 0;
    for (size_t k = batch.size(); k-- > 0;) {
      o += (rem % batch[k]) * strides[k];
      rem /= batch[k];
    }
    off[i] = o;
  }
  return off;
}

// numpy.matmul of a [..., M, K] by b [..., K, N], 1-D operands promoted as numpy does.
struct MatMulDims {
  int64_t M = 1, K = 1, N = 1;
  Shape batch;                        ///< broadcast batch dims of the output
  std::vector<int64_t> a_off, b_off;  ///< per output batch: offset of its a and b matrices
  Shape out;
};

MatMulDims matmulDims(const KernelContext& ctx, const Shape& a, const Shape& b) {
  if (a.empty() || b.empty())
    ctx.error("operands must have rank >= 1, got shapes ", shapeStr(a), " and ", shapeStr(b));
  const Shape a2 = a.size() == 1 ? Shape{1, a[0]} : a;
  const Shape b2 = b.size() == 1 ? Shape{b[0], 1} : b;
  MatMulDims d;
  d.M = a2[a2.size() - 2];
  d.K = a2.back();
  d.N = b2.back();
  if (b2[b2.size() - 2] != d.K)
    ctx.error("inner dimensions differ: a has shape ", shapeStr(a), " and b has shape ", shapeStr(b));
  const Shape ab(a2.begin(), a2.end() - 2), bb(b2.begin(), b2.end() - 2);
  d.batch = broadcastShapes(ab, bb, ctx);
  d.a_off = batchOffsets(d.batch, broadcastStrides(ab, d.batch));
  d.b_off = batchOffsets(d.batch, broadcastStrides(bb, d.batch));
  for (auto& o : d.a_off) o *= d.M * d.K;
  for (auto& o : d.b_off) o *= d.K * d.N;
  d.out = d.batch;
  if (a.size() > 1) d.out.push_back(d.M);
  if (b.size() > 1) d.out.push_back(d.N);
  return d;
}

// Where a matmul operand's quantization parameter is found: value index = batch_off[batch] + step * i,
// i the row (of a) or column (of b); step 0 for a per-tensor parameter.
struct MatParam {
  std::vector<int64_t> batch_off;
  int64_t step = 0;
};

MatParam perTensorParam(const MatMulDims& d) { return {std::vector<int64_t>(d.a_off.size(), 0), 0}; }

// Per the spec a parameter is a scalar, an M-vector (per row of a), an N-vector (per column of b),
// or [..., M, 1] / [..., 1, N]; batch dims may broadcast.
MatParam matParam(const KernelContext& ctx, const Shape& p, const MatMulDims& d, bool per_row, const char* what) {
  if (numelOf(p) == 1) return perTensorParam(d);
  const Shape q = p.size() == 1 && per_row ? Shape{p[0], 1} : p;
  Shape full = d.batch;
  full.push_back(per_row ? d.M : 1);
  full.push_back(per_row ? 1 : d.N);
  bool ok = q.size() <= full.size();
  for (size_t k = 0; ok && k < q.size(); ++k) {
    const int64_t e = full[full.size() - q.size() + k];
    ok = q[k] == e || q[k] == 1;
  }
  if (!ok)
    ctx.error(what, " has shape ", shapeStr(p), "; expected a scalar, a 1-D tensor of ", per_row ? d.M : d.N,
              per_row ? " (per row of a)" : " (per column of b)", " or a shape broadcastable to ", shapeStr(full));
  const std::vector<int64_t> st = broadcastStrides(q, full);
  MatParam mp;
  mp.step = st[full.size() - (per_row ? 2 : 1)];
  mp.batch_off = batchOffsets(d.batch, std::vector<int64_t>(st.begin(), st.end() - 2));
  return mp;
}

// Calls emit(batch, row, acc) for every output row, with acc[n] = sum_k (a[row, k] - a_zp) * (b[k, n] - b_zp[n]).
// The k-outer, n-inner order streams contiguous rows of b.
template <typename TA, typename TB, typename Emit>
void matmulAccumulate(const MatMulDims& d, const TA* a, const std::vector<int32_t>& a_zp, const MatParam& a_zp_at,
                      const TB* b, const std::vector<int32_t>& b_zp, const MatParam& b_zp_at, Emit&& emit) {
  const int64_t rows = static_cast<int64_t>(d.a_off.size()) * d.M;
#pragma omp parallel
  {
    std::vector<int32_t> acc(static_cast<size_t>(d.N)), bzp(static_cast<size_t>(d.N));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t bt = r / d.M, m = r % d.M;
      const TA* arow = a + d.a_off[bt] + m * d.K;
      const TB* bmat = b + d.b_off[bt];
      const int32_t azp = a_zp[a_zp_at.batch_off[bt] + m * a_zp_at.step];
      for (int64_t n = 0; n < d.N; ++n) bzp[n] = b_zp[b_zp_at.batch_off[bt] + n * b_zp_at.step];
      std::fill(acc.begin(), acc.end(), 0);
      for (int64_t k = 0; k < d.K; ++k) {
        const int32_t av = static_cast<int32_t>(arow[k]) - azp;
        const TB* brow = bmat + k * d.N;
        for (int64_t n = 0; n < d.N; ++n) acc[n] = wrapAdd(acc[n], av * (static_cast<int32_t>(brow[n]) - bzp[n]));
      }
      emit(bt, m, acc.data());
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Shared helpers (quant_ref.h).

QRange qrange(DType t, const KernelContext& ctx, const char* what) {
  QRange r{};
  dispatchQuantized(t, ctx, what, [&](auto tag) {
    using T = decltype(tag);
    r = {std::numeric_limits<T>::min(), std::numeric_limits<T>::max()};
  });
  return r;
}

namespace {
/// A scale value, refused by name unless positive and finite.
float checkedScale(float v, const KernelContext& ctx, const char* what) {
  if (!std::isfinite(v) || v <= 0.0f) ctx.error(what, " must be positive and finite, got ", v);
  return v;
}
}  // namespace

std::vector<float> readScales(const Tensor& t, const KernelContext& ctx, const char* what) {
  if (t.dtype() != DType::Float32 && t.dtype() != DType::Float16)
    ctx.error(what, " must be float32 or float16, got ", dtypeName(t.dtype()));
  const Tensor f = toFloat32IfHalf(t);
  std::vector<float> s(f.data<float>(), f.data<float>() + f.numel());
  for (float v : s) checkedScale(v, ctx, what);
  return s;
}

std::vector<int32_t> readZeroPoints(const Tensor& t, DType expect, const KernelContext& ctx, const char* what) {
  if (t.dtype() != expect)
    ctx.error(what, " is ", dtypeName(t.dtype()), " but must be ", dtypeName(expect),
              ", the type of the tensor it belongs to");
  std::vector<int32_t> z(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) z[i] = static_cast<int32_t>(t.at(i));
  return z;
}

// ---------------------------------------------------------------------------------------------
// The kernels.

namespace {
/// Per-tensor parameters of the case every quantized activation takes: a float32 scalar scale that
/// is positive and finite, an 8-bit scalar zero point (or none, and an 8-bit default type), no
/// block size. Read in place, so QuantizeLinear and DequantizeLinear make no vectors per call
/// (readScales and readZeroPoints did: a few hundred allocator calls per batch-1 run of a QDQ
/// transformer). nullopt sends the call to the general path, which also names what is wrong.
struct ScalarParams8 {
  float scale;
  int32_t zp;
  DType type;
};
std::optional<ScalarParams8> scalarParams8(const KernelContext& ctx, const Tensor& scale, size_t zp_input,
                                           DType default_type) {
  if (scale.dtype() != DType::Float32 || scale.numel() != 1 || scale.rank() > 1 ||
      ctx.node.attrInt("block_size", 0) != 0)
    return std::nullopt;
  const float s = scale.data<float>()[0];
  if (!std::isfinite(s) || s <= 0.0f) return std::nullopt;
  ScalarParams8 p{s, 0, default_type};
  if (ctx.has(zp_input)) {
    const Tensor& z = ctx.in(zp_input);
    if (z.numel() != 1) return std::nullopt;
    p.type = z.dtype();
    if (p.type == DType::UInt8) p.zp = z.data<uint8_t>()[0];
    else if (p.type == DType::Int8) p.zp = z.data<int8_t>()[0];
    else return std::nullopt;
  } else if (p.type != DType::UInt8 && p.type != DType::Int8) {
    return std::nullopt;
  }
  return p;
}
}  // namespace

void quantizeLinear(KernelContext& ctx) {
  const Tensor& x_in = ctx.in(0);
  const DType xt = x_in.dtype();
  if (xt != DType::Float32 && xt != DType::Float16 && xt != DType::Int32)
    ctx.error("x must be float32, float16 or int32, got ", dtypeName(xt));
  const Tensor& scale_t = ctx.in(1);
  DType out = DType::UInt8;  // the default without a zero point
  const int64_t out_attr = ctx.node.attrInt("output_dtype", 0);
  if (out_attr != 0) out = fromOnnxType(static_cast<int>(out_attr));
  if (xt == DType::Float32)
    if (const auto p = scalarParams8(ctx, scale_t, 2, out); p && (out_attr == 0 || p->type == out)) {
      Tensor& y = ctx.allocUninit(0, p->type, x_in.shape());
      const QRange range = qrange(p->type, ctx, "y");
      if (p->type == DType::UInt8)
        quantizePerTensor(x_in.data<float>(), y.data<uint8_t>(), x_in.numel(), p->scale, p->zp, range);
      else
        quantizePerTensor(x_in.data<float>(), y.data<int8_t>(), x_in.numel(), p->scale, p->zp, range);
      return;
    }
  // float16 and int32 inputs are divided in float32, as ONNX Runtime does.
  const Tensor x = xt == DType::Float32 ? x_in : x_in.cast(DType::Float32);
  const std::vector<float> scale = readScales(scale_t, ctx, "y_scale");
  std::vector<int32_t> zp(scale.size(), 0);
  if (ctx.has(2)) {
    const Tensor& zp_t = ctx.in(2);
    if (out_attr != 0 && zp_t.dtype() != out)
      ctx.error("output_dtype is ", dtypeName(out), " but y_zero_point is ", dtypeName(zp_t.dtype()));
    out = zp_t.dtype();
    checkPair(scale_t, zp_t, ctx, "y_scale", "y_zero_point");
    zp = readZeroPoints(zp_t, out, ctx, "y_zero_point");
  }
  const QRange range = qrange(out, ctx, "the output type (y_zero_point or output_dtype)");
  const AxisLayout layout = axisLayout(ctx, x.shape(), scale_t.shape(), "y_scale");
  Tensor& y = ctx.allocUninit(0, out, x.shape());
  dispatchQuantized(out, ctx, "y", [&](auto tag) {
    using T = decltype(tag);
    if constexpr (sizeof(T) <= 2) {
      if (layout.kind == AxisLayout::Kind::PerTensor)
        return quantizePerTensor(x.data<float>(), y.data<T>(), x.numel(), scale[0], zp[0], range);
    }
    mapWithParams(layout, x.data<float>(), y.data<T>(), scale, zp, [&](float v, float s, int32_t z) {
      return static_cast<T>(quantizeValue(v, s, z, range));
    });
  });
}

void dequantizeLinear(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const Tensor& scale_t = ctx.in(1);
  const DType xt = x.dtype();
  if (xt != DType::Int8 && xt != DType::UInt8 && xt != DType::Int16 && xt != DType::UInt16 && xt != DType::Int32)
    ctx.error("x must be int8, uint8, int16, uint16 or int32, got ", dtypeName(xt));
  if (const auto p = scalarParams8(ctx, scale_t, 2, xt); p && p->type == xt) {
    Tensor& y = ctx.allocUninit(0, DType::Float32, x.shape());
    if (xt == DType::UInt8) dequantizePerTensor(x.data<uint8_t>(), y.data<float>(), x.numel(), p->scale, p->zp);
    else dequantizePerTensor(x.data<int8_t>(), y.data<float>(), x.numel(), p->scale, p->zp);
    return;
  }
  const std::vector<float> scale = readScales(scale_t, ctx, "x_scale");
  std::vector<int32_t> zp(scale.size(), 0);
  if (ctx.has(2)) {
    checkPair(scale_t, ctx.in(2), ctx, "x_scale", "x_zero_point");
    zp = readZeroPoints(ctx.in(2), xt, ctx, "x_zero_point");
    if (xt == DType::Int32)
      for (int32_t z : zp)
        if (z != 0) ctx.error("x is int32, whose zero point must be 0, got ", z);
  }
  const AxisLayout layout = axisLayout(ctx, x.shape(), scale_t.shape(), "x_scale");
  Tensor y = Tensor::uninitialized(DType::Float32, x.shape());  // every element is written below
  auto run = [&](auto tag) {
    using T = decltype(tag);
    if (layout.kind == AxisLayout::Kind::PerTensor)
      return dequantizePerTensor(x.data<T>(), y.data<float>(), x.numel(), scale[0], zp[0]);
    mapWithParams(layout, x.data<T>(), y.data<float>(), scale, zp, [](T v, float s, int32_t z) {
      return dequantizeValue(static_cast<int32_t>(v), z, s);
    });
  };
  if (xt == DType::Int32) run(int32_t{});
  else dispatchQuantized(xt, ctx, "x", run);
  // Since opset 19 the output has the scale's type.
  ctx.outputs[0] = scale_t.dtype() == DType::Float16 ? y.cast(DType::Float16) : y;
}

void dynamicQuantizeLinear(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  if (x.dtype() != DType::Float32) ctx.error("x must be float32, got ", dtypeName(x.dtype()));
  const float* xs = x.data<float>();
  const int64_t n = x.numel();
  // The range always includes 0, so that 0 is exactly representable. NaNs are ignored.
  // Per-range minima and maxima, combined after: min and max are exact in any order.
  float lo = 0.0f, hi = 0.0f;
  parallelRanges(n, n > kParallelMin, [&](int64_t i0, int64_t i1) {
    const auto [l, h] = rangeWithZero(xs + i0, i1 - i0);
#pragma omp critical(lwc_dynamic_quantize_range)
    {
      lo = std::min(lo, l);
      hi = std::max(hi, h);
    }
  });
  const QRange range{0, 255};
  // For an all-zero input the spec's formula divides 0 by 0; like ONNX Runtime we then use scale 1
  // (zero point 0, every output 0).
  const float scale = hi == lo ? 1.0f : (hi - lo) / 255.0f;
  const int32_t zp = roundSaturate(0.0f - lo / scale, range.lo, range.hi);
  Tensor& y = ctx.allocUninit(0, DType::UInt8, x.shape());
  quantizePerTensor(xs, y.data<uint8_t>(), n, scale, zp, range);  // quantizeValue's values, vectorised
  if (ctx.numOutputs() > 1) ctx.outputs[1] = Tensor::scalar(scale);
  if (ctx.numOutputs() > 2) ctx.outputs[2] = Tensor::scalar(static_cast<uint8_t>(zp));
}

void convInteger(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const Tensor& w = ctx.in(1);
  require8(x.dtype(), ctx, "x");
  require8(w.dtype(), ctx, "w");
  const ConvGeometry g = convGeometry(ctx, x.shape(), w.shape());
  int32_t x_zp = 0;
  if (ctx.has(2)) {
    requireSingle(ctx.in(2), ctx, "x_zero_point");
    x_zp = readZeroPoints(ctx.in(2), x.dtype(), ctx, "x_zero_point")[0];
  }
  std::vector<int32_t> w_zp{0};
  if (ctx.has(3)) {
    requirePerChannel(ctx.in(3), g.out_channels, ctx, "w_zero_point");
    w_zp = readZeroPoints(ctx.in(3), w.dtype(), ctx, "w_zero_point");
  }
  Tensor& y = ctx.alloc(0, DType::Int32, g.out_shape);
  int32_t* ys = y.data<int32_t>();
  const int64_t plane = g.out[0] * g.out[1] * g.out[2];
  dispatch8(x.dtype(), ctx, "x", [&](auto tx) {
    dispatch8(w.dtype(), ctx, "w", [&](auto tw) {
      convAccumulate(g, x.data<decltype(tx)>(), x_zp, w.data<decltype(tw)>(), w_zp, nullptr,
                     [&](int64_t n, int64_t m, const int32_t* acc) {
                       std::copy(acc, acc + plane, ys + (n * g.out_channels + m) * plane);
                     });
    });
  });
}

void qlinearConv(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const Tensor& w = ctx.in(3);
  require8(x.dtype(), ctx, "x");
  require8(w.dtype(), ctx, "w");
  const ConvGeometry g = convGeometry(ctx, x.shape(), w.shape());
  const int64_t M = g.out_channels;

  requireSingle(ctx.in(1), ctx, "x_scale");
  requireSingle(ctx.in(2), ctx, "x_zero_point");
  const float x_scale = readScales(ctx.in(1), ctx, "x_scale")[0];
  const int32_t x_zp = readZeroPoints(ctx.in(2), x.dtype(), ctx, "x_zero_point")[0];
  requirePerChannel(ctx.in(4), M, ctx, "w_scale");
  checkPair(ctx.in(4), ctx.in(5), ctx, "w_scale", "w_zero_point");
  const std::vector<float> w_scale = readScales(ctx.in(4), ctx, "w_scale");
  const std::vector<int32_t> w_zp = readZeroPoints(ctx.in(5), w.dtype(), ctx, "w_zero_point");
  requireSingle(ctx.in(6), ctx, "y_scale");
  requireSingle(ctx.in(7), ctx, "y_zero_point");
  const float y_scale = readScales(ctx.in(6), ctx, "y_scale")[0];
  const DType yt = ctx.in(7).dtype();
  require8(yt, ctx, "y_zero_point");
  const int32_t y_zp = readZeroPoints(ctx.in(7), yt, ctx, "y_zero_point")[0];
  const int32_t* bias = nullptr;
  if (ctx.has(8)) {
    const Tensor& b = ctx.in(8);
    if (b.dtype() != DType::Int32 || b.rank() != 1 || b.dim(0) != M)
      ctx.error("bias must be an int32 1-D tensor of ", M, " (one per output channel), got ", dtypeName(b.dtype()), " ",
                shapeStr(b.shape()));
    bias = b.data<int32_t>();
  }

  std::vector<float> multiplier(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) multiplier[m] = requantMultiplier(x_scale, w_scale[w_scale.size() == 1 ? 0 : m], y_scale);
  const QRange range = qrange(yt, ctx, "y_zero_point");
  Tensor& y = ctx.alloc(0, yt, g.out_shape);
  const int64_t plane = g.out[0] * g.out[1] * g.out[2];
  dispatch8(x.dtype(), ctx, "x", [&](auto tx) {
    dispatch8(w.dtype(), ctx, "w", [&](auto tw) {
      dispatch8(yt, ctx, "y_zero_point", [&](auto ty) {
        using TY = decltype(ty);
        TY* ys = y.data<TY>();
        convAccumulate(g, x.data<decltype(tx)>(), x_zp, w.data<decltype(tw)>(), w_zp, bias,
                       [&](int64_t n, int64_t m, const int32_t* acc) {
                         TY* dst = ys + (n * M + m) * plane;
                         for (int64_t i = 0; i < plane; ++i)
                           dst[i] = static_cast<TY>(requantizeValue(acc[i], multiplier[m], y_zp, range));
                       });
      });
    });
  });
}

namespace {
// MatMulInteger's operands and those of lwc.internal.MatMulIntegerScaled: A and B at inputs 0 and 1,
// their zero points (optional) at 2 and 3, checked and read.
struct IntMatMulOperands {
  MatMulDims d;
  std::vector<int32_t> a_zp{0}, b_zp{0};
  MatParam a_at, b_at;
};
IntMatMulOperands readIntMatMulOperands(const KernelContext& ctx) {
  const Tensor& a = ctx.in(0);
  const Tensor& b = ctx.in(1);
  require8(a.dtype(), ctx, "A");
  require8(b.dtype(), ctx, "B");
  IntMatMulOperands o;
  o.d = matmulDims(ctx, a.shape(), b.shape());
  o.a_at = o.b_at = perTensorParam(o.d);
  if (ctx.has(2)) {
    o.a_zp = readZeroPoints(ctx.in(2), a.dtype(), ctx, "a_zero_point");
    o.a_at = matParam(ctx, ctx.in(2).shape(), o.d, true, "a_zero_point");
  }
  if (ctx.has(3)) {
    o.b_zp = readZeroPoints(ctx.in(3), b.dtype(), ctx, "b_zero_point");
    o.b_at = matParam(ctx, ctx.in(3).shape(), o.d, false, "b_zero_point");
  }
  return o;
}

// The int32 products of `o` (inputs 0 and 1 of ctx), one output row at a time: row(output row, its accumulators).
template <typename RowFn>
void forEachIntAccRow(const KernelContext& ctx, const IntMatMulOperands& o, RowFn&& row) {
  const Tensor& a = ctx.in(0);
  const Tensor& b = ctx.in(1);
  dispatch8(a.dtype(), ctx, "A", [&](auto ta) {
    dispatch8(b.dtype(), ctx, "B", [&](auto tb) {
      matmulAccumulate(o.d, a.data<decltype(ta)>(), o.a_zp, o.a_at, b.data<decltype(tb)>(), o.b_zp, o.b_at,
                       [&](int64_t bt, int64_t m, const int32_t* acc) { row(bt * o.d.M + m, acc); });
    });
  });
}
}  // namespace

void matMulInteger(KernelContext& ctx) {
  const IntMatMulOperands o = readIntMatMulOperands(ctx);
  int32_t* ys = ctx.alloc(0, DType::Int32, o.d.out).data<int32_t>();
  forEachIntAccRow(ctx, o, [&](int64_t row, const int32_t* acc) { std::copy(acc, acc + o.d.N, ys + row * o.d.N); });
}

void qlinearMatMul(KernelContext& ctx) { qlinearMatMulBias(ctx, nullptr); }

namespace {
// The shape MatMul + Add(bias) has: a [1, N] bias after a 1-D A's [N] product makes it [1, N].
Shape withBiasRank(Shape out, const Tensor* bias) {
  if (bias && bias->rank() > out.size()) out.insert(out.begin(), bias->rank() - out.size(), 1);
  return out;
}

// Inputs 0-5 of QLinearMatMul and of lwc.internal.MatMulIntegerToFloat (a, a_scale, a_zero_point,
// b, b_scale, b_zero_point), checked and read.
struct QMatMulOperands {
  MatMulDims d;
  std::vector<float> a_scale, b_scale;
  std::vector<int32_t> a_zp, b_zp;
  MatParam a_at, b_at;
};
QMatMulOperands readQMatMulOperands(const KernelContext& ctx) {
  const Tensor& a = ctx.in(0);
  const Tensor& b = ctx.in(3);
  require8(a.dtype(), ctx, "a");
  require8(b.dtype(), ctx, "b");
  QMatMulOperands o;
  o.d = matmulDims(ctx, a.shape(), b.shape());
  checkPair(ctx.in(1), ctx.in(2), ctx, "a_scale", "a_zero_point");
  o.a_scale = readScales(ctx.in(1), ctx, "a_scale");
  o.a_zp = readZeroPoints(ctx.in(2), a.dtype(), ctx, "a_zero_point");
  o.a_at = matParam(ctx, ctx.in(1).shape(), o.d, true, "a_scale");
  checkPair(ctx.in(4), ctx.in(5), ctx, "b_scale", "b_zero_point");
  o.b_scale = readScales(ctx.in(4), ctx, "b_scale");
  o.b_zp = readZeroPoints(ctx.in(5), b.dtype(), ctx, "b_zero_point");
  o.b_at = matParam(ctx, ctx.in(4).shape(), o.d, false, "b_scale");
  return o;
}

// The integer products of `o` (inputs 0 and 3 of ctx), one output row at a time:
// row(output row, its int32 accumulators, its a_scale, bsOf(n) = column n's b_scale).
template <typename RowFn>
void forEachAccRow(const KernelContext& ctx, const QMatMulOperands& o, RowFn&& row) {
  const Tensor& a = ctx.in(0);
  const Tensor& b = ctx.in(3);
  dispatch8(a.dtype(), ctx, "a", [&](auto ta) {
    dispatch8(b.dtype(), ctx, "b", [&](auto tb) {
      matmulAccumulate(o.d, a.data<decltype(ta)>(), o.a_zp, o.a_at, b.data<decltype(tb)>(), o.b_zp, o.b_at,
                       [&](int64_t bt, int64_t m, const int32_t* acc) {
                         const auto bsOf = [&](int64_t n) { return o.b_scale[o.b_at.batch_off[bt] + n * o.b_at.step]; };
                         row(bt * o.d.M + m, acc, o.a_scale[o.a_at.batch_off[bt] + m * o.a_at.step], bsOf);
                       });
    });
  });
}

// A fused Linear layer's bias: float32, one value per output column ([N] or [1, N]).
void checkColumnBias(const KernelContext& ctx, const Tensor* bias, int64_t n) {
  if (bias && !isFusedMatMulBias(*bias, n))
    ctx.error("bias must be float32 with one value per output column (", n, "), got ", dtypeName(bias->dtype()), " ",
              shapeStr(bias->shape()));
}
}  // namespace

void qlinearMatMulBias(KernelContext& ctx, const Tensor* bias) {
  const QMatMulOperands o = readQMatMulOperands(ctx);
  requireSingle(ctx.in(6), ctx, "y_scale");
  requireSingle(ctx.in(7), ctx, "y_zero_point");
  const float y_scale = readScales(ctx.in(6), ctx, "y_scale")[0];
  const DType yt = ctx.in(7).dtype();
  require8(yt, ctx, "y_zero_point");
  const int32_t y_zp = readZeroPoints(ctx.in(7), yt, ctx, "y_zero_point")[0];
  const QRange range = qrange(yt, ctx, "y_zero_point");
  checkColumnBias(ctx, bias, o.d.N);

  Tensor& y = ctx.alloc(0, yt, withBiasRank(o.d.out, bias));
  dispatch8(yt, ctx, "y_zero_point", [&](auto ty) {
    using TY = decltype(ty);
    TY* ys = y.data<TY>();
    forEachAccRow(ctx, o, [&](int64_t row, const int32_t* acc, float as, const auto& bsOf) {
      TY* dst = ys + row * o.d.N;
      for (int64_t n = 0; n < o.d.N; ++n) {
        const float bs = bsOf(n);
        const float mult = requantMultiplier(as, bs, y_scale);
        // The bias joins the accumulator, as the oneDNN kernel adds it.
        dst[n] = static_cast<TY>(bias ? roundSaturate((static_cast<float>(acc[n]) + bias->data<float>()[n] / (as * bs)) * mult,
                                                      range.lo - y_zp, range.hi - y_zp) +
                                            y_zp
                                      : requantizeValue(acc[n], mult, y_zp, range));
      }
    });
  });
}

void matMulIntegerToFloat(KernelContext& ctx) {
  const QMatMulOperands o = readQMatMulOperands(ctx);
  const Tensor* bias = ctx.has(6) ? &ctx.in(6) : nullptr;
  checkColumnBias(ctx, bias, o.d.N);
  float* ys = ctx.alloc(0, DType::Float32, withBiasRank(o.d.out, bias)).data<float>();
  std::vector<float> mult(static_cast<size_t>(o.d.N)), bias_acc(bias ? mult.size() : 0);
  forEachAccRow(ctx, o, [&](int64_t row, const int32_t* acc, float as, const auto& bsOf) {
    // As the oneDNN kernel: the bias joins the accumulator, then one scale.
    for (int64_t n = 0; n < o.d.N; ++n) {
      mult[static_cast<size_t>(n)] = as * bsOf(n);
      if (bias) bias_acc[static_cast<size_t>(n)] = bias->data<float>()[n] / mult[static_cast<size_t>(n)];
    }
    accumulatorToFloatRow(acc, nullptr, bias ? bias_acc.data() : nullptr, mult.data(), ys + row * o.d.N, o.d.N);
  });
}

void scaleAccumulatorRow(const int32_t* acc, const int32_t* sub, const float* scale, bool per_column,
                         const float* bias, float* y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    // acc - sub wraps as int32 sums do; then Cast, Mul and Add each round once (no contraction:
    // this file is built with -ffp-contract=off).
    const auto v = static_cast<int32_t>(static_cast<uint32_t>(acc[j]) - (sub ? static_cast<uint32_t>(sub[j]) : 0u));
    float f = static_cast<float>(v) * scale[per_column ? j : 0];
    if (bias) f = f + bias[j];
    y[j] = f;
  }
}

void accumulatorToFloatRow(const int32_t* acc, const int32_t* sub, const float* bias_acc, const float* mult, float* y,
                           int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const auto v = static_cast<int32_t>(static_cast<uint32_t>(acc[j]) - (sub ? static_cast<uint32_t>(sub[j]) : 0u));
    y[j] = (static_cast<float>(v) + (bias_acc ? bias_acc[j] : 0.0f)) * mult[j];
  }
}

void matMulIntegerScaled(KernelContext& ctx) {
  const IntMatMulOperands o = readIntMatMulOperands(ctx);
  const int64_t n = o.d.N;
  const Tensor& scale = ctx.in(4);
  if (scale.dtype() != DType::Float32 || !isScaledMatMulScale(scale, n))
    ctx.error("scale must be float32 with one value or one per output column (", n, "), got ", dtypeName(scale.dtype()),
              " ", shapeStr(scale.shape()));
  const Tensor* bias = ctx.has(5) ? &ctx.in(5) : nullptr;
  checkColumnBias(ctx, bias, n);
  float* ys = ctx.alloc(0, DType::Float32, withBiasRank(withBiasRank(o.d.out, &scale), bias)).data<float>();
  forEachIntAccRow(ctx, o, [&](int64_t row, const int32_t* acc) {
    scaleAccumulatorRow(acc, nullptr, scale.data<float>(), scale.numel() > 1, bias ? bias->data<float>() : nullptr,
                        ys + row * n, n);
  });
}

// roundSaturate's arithmetic on a float that is not NaN, in a form the compiler vectorizes: clamp
// first, then round half to even by adding and removing 1.5 * 2^23 (exact for |q| < 2^22, which the
// clamp guarantees).
inline float clampRoundHalfEven(float q, float lo, float hi) {
  constexpr float kMagic = 12582912.0f;
  q = std::min(std::max(q, lo), hi);
  return (q + kMagic) - kMagic;
}

// QAdd on equal shapes: quantizeValue's arithmetic in a form the compiler vectorizes with baseline
// SSE2 (plain parameters and restrict pointers, so nothing is reloaded per element).
template <typename TA, typename TB, typename TY>
LWC_AVX2_CLONE void qaddRange(const TA* __restrict A, const TB* __restrict B, TY* __restrict Y, int64_t n, float sa,
                              int32_t za, float sb, int32_t zb, float sy, int32_t zy, float lo, float hi, float floor_v) {
  for (int64_t i = 0; i < n; ++i) {
    float v = static_cast<float>(static_cast<int32_t>(A[i]) - za) * sa + static_cast<float>(static_cast<int32_t>(B[i]) - zb) * sb;
    v = std::max(v, floor_v);
    Y[i] = static_cast<TY>(static_cast<int32_t>(clampRoundHalfEven(v / sy, lo, hi)) + zy);
  }
}

#ifdef LWC_INT8_X86
// qaddRange on 8-bit tensors, 16 values at a time, dividing as divideLanes does: the same values
// (the two products and their sum each rounded: quant.cpp is built with -ffp-contract=off).
template <typename TA, typename TB, typename TY>
LWC_Q512 void qaddRange512(const TA* __restrict A, const TB* __restrict B, TY* __restrict Y, int64_t n, float sa,
                           int32_t za, float sb, int32_t zb, float sy, int32_t zy, float lo, float hi, float floor_v) {
  const __m512 vsa = _mm512_set1_ps(sa), vsb = _mm512_set1_ps(sb), b = _mm512_set1_ps(sy),
               rb = _mm512_set1_ps(1.0f / sy);
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi), vfloor = _mm512_set1_ps(floor_v);
  const __m512i vza = _mm512_set1_epi32(za), vzb = _mm512_set1_epi32(zb), vzy = _mm512_set1_epi32(zy);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = firstLanes(n - i);
    const __m512 v = _mm512_max_ps(_mm512_add_ps(dequantizeLanes(A + i, m, vza, vsa), dequantizeLanes(B + i, m, vzb, vsb)), vfloor);
    storeLanes(Y + i, m, quantizeLanes(divideLanes(v, b, rb), vlo, vhi, vzy));
  }
}
#endif

template <typename TA, typename TB, typename TY>
void qaddSameShape(const TA* A, const TB* B, TY* Y, int64_t n, float sa, int32_t za, float sb, int32_t zb, float sy,
                   int32_t zy, QRange range, bool relu) {
  const float lo = static_cast<float>(range.lo - zy), hi = static_cast<float>(range.hi - zy);
  const float floor_v = relu ? 0.0f : -std::numeric_limits<float>::infinity();
#ifdef LWC_INT8_X86
  if constexpr (sizeof(TA) == 1 && sizeof(TB) == 1 && sizeof(TY) == 1) {
    if (haveAvx512() && reciprocalDivides(sy)) {
      parallelRanges(n, n > kParallelMin, [=](int64_t i0, int64_t i1) {
        qaddRange512(A + i0, B + i0, Y + i0, i1 - i0, sa, za, sb, zb, sy, zy, lo, hi, floor_v);
      });
      return;
    }
  }
#endif
  parallelRanges(n, n > kParallelMin, [=](int64_t i0, int64_t i1) {
    qaddRange(A + i0, B + i0, Y + i0, i1 - i0, sa, za, sb, zb, sy, zy, lo, hi, floor_v);
  });
}

namespace {
// readScales(t).at(0) and readZeroPoints(t).at(0), with their checks, without their vectors when t
// holds one float32 (one zero point of the expected type): QAdd reads six per call.
float firstScale(const Tensor& t, const KernelContext& ctx, const char* what) {
  if (t.dtype() != DType::Float32 || t.numel() != 1) return readScales(t, ctx, what).at(0);
  return checkedScale(t.data<float>()[0], ctx, what);
}
int32_t firstZeroPoint(const Tensor& t, DType expect, const KernelContext& ctx, const char* what) {
  if (t.dtype() != expect || t.numel() != 1) return readZeroPoints(t, expect, ctx, what).at(0);
  return static_cast<int32_t>(t.at(0));
}
}  // namespace

// lwc.internal.QAdd (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp), attribute relu: the fused
// form of DequantizeLinear x2 -> Add [-> Relu] -> QuantizeLinear with per-tensor parameters (the
// engine's QDQ fusion creates it). Same float32 operations in the same order, so the result is
// bit-identical to the unfused chain, without the float tensors in between.
void qadd(KernelContext& ctx) {
  const Tensor &a = ctx.in(0), &b = ctx.in(3);
  const float sa = firstScale(ctx.in(1), ctx, "a_scale"), sb = firstScale(ctx.in(4), ctx, "b_scale"),
              sy = firstScale(ctx.in(6), ctx, "y_scale");
  const int32_t za = firstZeroPoint(ctx.in(2), a.dtype(), ctx, "a_zero_point"),
                zb = firstZeroPoint(ctx.in(5), b.dtype(), ctx, "b_zero_point");
  const DType yt = ctx.in(7).dtype();
  const int32_t zy = firstZeroPoint(ctx.in(7), yt, ctx, "y_zero_point");
  const QRange range = qrange(yt, ctx, "y_zero_point");
  const bool relu = ctx.node.attrInt("relu", 0) != 0;
  Tensor& y = a.shape() == b.shape() ? ctx.allocUninit(0, yt, a.shape())
                                     : ctx.allocUninit(0, yt, broadcastShapes(a.shape(), b.shape(), ctx));
  const int64_t n = y.numel();
  dispatchQuantized(a.dtype(), ctx, "a", [&](auto ta) {
    using TA = decltype(ta);
    dispatchQuantized(b.dtype(), ctx, "b", [&](auto tb) {
      using TB = decltype(tb);
      dispatchQuantized(yt, ctx, "y_zero_point", [&](auto ty) {
        using TY = decltype(ty);
        const TA* A = a.data<TA>();
        const TB* B = b.data<TB>();
        TY* Y = y.data<TY>();
        auto one = [&](TA av, TB bv) {
          float v = dequantizeValue(av, za, sa) + dequantizeValue(bv, zb, sb);
          if (relu) v = std::max(v, 0.0f);
          return static_cast<TY>(quantizeValue(v, sy, zy, range));
        };
        if (a.shape() == b.shape()) return qaddSameShape(A, B, Y, n, sa, za, sb, zb, sy, zy, range, relu);
        const auto plan = planBroadcast<2>({&a.shape(), &b.shape()}, ctx);
        const int64_t sa_ = plan.strides[0].back(), sb_ = plan.strides[1].back();
        forEachRow(plan, [&](int64_t o, const std::array<int64_t, 2>& at, int64_t len) {
          for (int64_t j = 0; j < len; ++j) Y[o + j] = one(A[at[0] + j * sa_], B[at[1] + j * sb_]);
        });
      });
    });
  });
}

// lwc.internal.QLut (x, table): y = table[x] byte by byte, x uint8 or int8 (as its byte, 0-255),
// table 256 values of y's type (optimize.cpp, fuseLookupTables: an elementwise float chain between
// a DequantizeLinear and a QuantizeLinear, evaluated once). With AVX-512 VBMI 64 bytes at a time:
// two vpermi2b each look up 128 entries and the top bit of each byte picks between them.
namespace {
#ifdef LWC_INT8_X86
__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void lutVbmi(const uint8_t* x, const uint8_t* table, uint8_t* y,
                                                                    int64_t n) {
  const __m512i t0 = _mm512_loadu_si512(table), t1 = _mm512_loadu_si512(table + 64);
  const __m512i t2 = _mm512_loadu_si512(table + 128), t3 = _mm512_loadu_si512(table + 192);
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i v = _mm512_loadu_si512(x + i);
    const __m512i lo = _mm512_permutex2var_epi8(t0, v, t1), hi = _mm512_permutex2var_epi8(t2, v, t3);
    _mm512_storeu_si512(y + i, _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi));
  }
  if (i < n) {
    const __mmask64 m = (uint64_t{1} << (n - i)) - 1;  // n - i < 64
    const __m512i v = _mm512_maskz_loadu_epi8(m, x + i);
    const __m512i lo = _mm512_permutex2var_epi8(t0, v, t1), hi = _mm512_permutex2var_epi8(t2, v, t3);
    _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi));
  }
}
#endif

// (No restrict: x and y may be one buffer, lookupBytes.)
void lutScalar(const uint8_t* x, const uint8_t* table, uint8_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = table[x[i]];
}
}  // namespace

void lookupBytes(const uint8_t* x, const uint8_t* table, uint8_t* y, int64_t n) {
#ifdef LWC_INT8_X86
  static const bool vbmi = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                           __builtin_cpu_supports("avx512vbmi");
  if (vbmi) return lutVbmi(x, table, y, n);
#endif
  lutScalar(x, table, y, n);
}

void lookupBytesParallel(const uint8_t* x, const uint8_t* table, uint8_t* y, int64_t n) {
  // Blocks of 64 bytes per thread, so only the last thread has a tail.
  parallelRanges((n + 63) / 64, n > kParallelMin, [&](int64_t b0, int64_t b1) {
    const int64_t i0 = b0 * 64, i1 = std::min(n, b1 * 64);
    lookupBytes(x + i0, table, y + i0, i1 - i0);
  });
}

// lwc.internal.QLutChannels(x, table){axis}: y = table[c][x] for the element's index c along
// `axis`, table [C, 256] of 8-bit values indexed by x's byte: a per-channel float chain between a
// DequantizeLinear and a QuantizeLinear (optimize.cpp, fuseChannelLookupTables).
void qlutChannels(KernelContext& ctx) {
  const Tensor &x = ctx.in(0), &table = ctx.in(1);
  if (x.dtype() != DType::UInt8 && x.dtype() != DType::Int8)
    ctx.error("input must be uint8 or int8, not ", dtypeName(x.dtype()));
  if (x.rank() == 0) ctx.error("input must have an axis of channels");
  const int64_t axis = normAxis(ctx.node.attrInt("axis", 1), static_cast<int64_t>(x.rank()), ctx);
  const int64_t c = x.dim(static_cast<size_t>(axis));
  if ((table.dtype() != DType::UInt8 && table.dtype() != DType::Int8) || table.rank() != 2 || table.dim(0) != c ||
      table.dim(1) != 256)
    ctx.error("the table must hold [", c, ", 256] uint8 or int8 values, not ", dtypeName(table.dtype()), " ",
              shapeStr(table.shape()));
  Tensor& y = ctx.allocUninit(0, table.dtype(), x.shape());
  int64_t inner = 1, outer = 1;
  for (size_t d = 0; d < x.rank(); ++d) {
    if (static_cast<int64_t>(d) < axis) outer *= x.dim(d);
    else if (static_cast<int64_t>(d) > axis) inner *= x.dim(d);
  }
  const auto* xp = static_cast<const uint8_t*>(x.raw());
  const auto* tp = static_cast<const uint8_t*>(table.raw());
  auto* yp = static_cast<uint8_t*>(y.raw());
  if (inner == 1) {
    // Channels last (NHWC): rows of c bytes. Blocks of 64 channels (16 KB of tables, which stay in
    // L1) over all of a thread's rows: over whole rows, each byte's lookup had gone to L2 for
    // tables of more than ~190 channels (DenseNet-121's up to 1024).
    constexpr int64_t kBlock = 64;
    parallelRanges(outer, outer * c > kParallelMin, [&](int64_t r0, int64_t r1) {
      for (int64_t k0 = 0; k0 < c; k0 += kBlock) {
        const int64_t nk = std::min(kBlock, c - k0);
        const uint8_t* tb = tp + k0 * 256;
        for (int64_t r = r0; r < r1; ++r) {
          const uint8_t* xr = xp + r * c + k0;
          uint8_t* yr = yp + r * c + k0;
          int64_t k = 0;
          for (; k + 8 <= nk; k += 8) {  // 8 bytes per load and store
            uint64_t v, o = 0;
            std::memcpy(&v, xr + k, 8);
            for (int j = 0; j < 8; ++j) o |= uint64_t{tb[(k + j) * 256 + ((v >> (8 * j)) & 255)]} << (8 * j);
            std::memcpy(yr + k, &o, 8);
          }
          for (; k < nk; ++k) yr[k] = tb[k * 256 + xr[k]];
        }
      }
    });
    return;
  }
  parallelRanges(outer * c, outer * c * inner > kParallelMin, [&](int64_t p0, int64_t p1) {
    for (int64_t pl = p0; pl < p1; ++pl) lookupBytes(xp + pl * inner, tp + (pl % c) * 256, yp + pl * inner, inner);
  });
}

void qlut(KernelContext& ctx) {
  const Tensor &x = ctx.in(0), &table = ctx.in(1);
  if (x.dtype() != DType::UInt8 && x.dtype() != DType::Int8)
    ctx.error("input must be uint8 or int8, not ", dtypeName(x.dtype()));
  if ((table.dtype() != DType::UInt8 && table.dtype() != DType::Int8) || table.numel() != 256)
    ctx.error("the table must hold 256 uint8 or int8 values");
  Tensor& y = ctx.allocUninit(0, table.dtype(), x.shape());
  const auto* xp = static_cast<const uint8_t*>(x.raw());
  const auto* tp = static_cast<const uint8_t*>(table.raw());
  auto* yp = static_cast<uint8_t*>(y.raw());
  lookupBytesParallel(xp, tp, yp, x.numel());
}

// lwc.internal.QMulLut (x, x_scale, x_zp, g, table, y_scale, y_zp): QuantizeLinear(
// DequantizeLinear(x) * table[g]) with numpy broadcasting (optimize.cpp, fuseQMulLut: a
// squeeze-excite block's gate, table the gate's 256 float values). The reference Mul's and
// QuantizeLinear's float operations: the product of the dequantized x and the gate, then
// quantizeValue (NaN to the zero point, clamp, round half to even), in a form the compiler
// vectorizes where g broadcasts along the rows of x (its last axis runs with x's).
template <typename TX, typename TY>
LWC_AVX2_CLONE void qmulRow(const TX* __restrict X, const float* __restrict gate, TY* __restrict Y, int64_t n, float sx,
                            int32_t zx, float sy, int32_t zy, float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) {
    const float q = gate[i] * (static_cast<float>(static_cast<int32_t>(X[i]) - zx) * sx) / sy;
    Y[i] = static_cast<TY>(static_cast<int32_t>(clampRoundHalfEven(q == q ? q : 0.0f, lo, hi)) + zy);
  }
}

#ifdef LWC_INT8_X86
// qmulRow for `rows` consecutive rows of `cols` values that share one gate row, 16 values at a time,
// with the division by a reciprocal (divideLanes): the same values (float multiplication commutes).
template <typename TX, typename TY>
LWC_Q512 void qmulRows512(const TX* __restrict X, const float* __restrict gate, TY* __restrict Y, int64_t rows,
                          int64_t cols, float sx, int32_t zx, float sy, int32_t zy, float lo, float hi) {
  const __m512 vsx = _mm512_set1_ps(sx), b = _mm512_set1_ps(sy), rb = _mm512_set1_ps(1.0f / sy);
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const __m512i vzx = _mm512_set1_epi32(zx), vzy = _mm512_set1_epi32(zy);
  for (int64_t r = 0; r < rows; ++r, X += cols, Y += cols)
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 m = firstLanes(cols - c);
      const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, gate + c), dequantizeLanes(X + c, m, vzx, vsx));
      storeLanes(Y + c, m, quantizeLanes(divideLanes(p, b, rb), vlo, vhi, vzy));
    }
}

// qmulRowTable for `rows` consecutive rows that share one row of the other operand, 16 values at a
// time (the table's floats gathered by the bytes), dividing as divideLanes does: the same values.
template <typename TY>
LWC_Q512 void qmulRowsTable512(const uint8_t* __restrict G, const float* __restrict T, const float* __restrict row,
                               TY* __restrict Y, int64_t rows, int64_t cols, float sy, int32_t zy, float lo, float hi) {
  const __m512 b = _mm512_set1_ps(sy), rb = _mm512_set1_ps(1.0f / sy);
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const __m512i vzy = _mm512_set1_epi32(zy);
  for (int64_t r = 0; r < rows; ++r, G += cols, Y += cols)
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 m = firstLanes(cols - c);
      const __m512 t = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, widenLanes(G + c, m), T, 4);
      const __m512 p = _mm512_mul_ps(t, _mm512_maskz_loadu_ps(m, row + c));
      storeLanes(Y + c, m, quantizeLanes(divideLanes(p, b, rb), vlo, vhi, vzy));
    }
}
#endif

// qmulRow with the full-shape operand the gate's bytes G (values from the table T) and the other
// one dequantized into `row`: the same product (float multiplication commutes) and quantization.
template <typename TY>
LWC_AVX2_CLONE void qmulRowTable(const uint8_t* __restrict G, const float* __restrict T, const float* __restrict row,
                                 TY* __restrict Y, int64_t n, float sy, int32_t zy, float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) {
    const float q = T[G[i]] * row[i] / sy;
    Y[i] = static_cast<TY>(static_cast<int32_t>(clampRoundHalfEven(q == q ? q : 0.0f, lo, hi)) + zy);
  }
}

void qmulLut(KernelContext& ctx) {
  const Tensor &x = ctx.in(0), &g = ctx.in(3), &table = ctx.in(4);
  const float sx = firstScale(ctx.in(1), ctx, "x_scale"), sy = firstScale(ctx.in(5), ctx, "y_scale");
  const int32_t zx = firstZeroPoint(ctx.in(2), x.dtype(), ctx, "x_zero_point");
  const DType yt = ctx.in(6).dtype();
  const int32_t zy = firstZeroPoint(ctx.in(6), yt, ctx, "y_zero_point");
  const QRange range = qrange(yt, ctx, "y_zero_point");
  if ((g.dtype() != DType::UInt8 && g.dtype() != DType::Int8) || table.dtype() != DType::Float32 || table.numel() != 256)
    ctx.error("the gate must be uint8 or int8 with a table of 256 float32 values");
  const float* T = table.data<float>();
  const auto* G = static_cast<const uint8_t*>(g.raw());
  const Shape out = x.shape() == g.shape() ? x.shape() : broadcastShapes(x.shape(), g.shape(), ctx);
  Tensor& y = ctx.allocUninit(0, yt, out);
  const float lo = static_cast<float>(range.lo - zy), hi = static_cast<float>(range.hi - zy);
  const int64_t cols = out.empty() ? 1 : out.back(), rows = cols ? y.numel() / cols : 0;
  const auto gs = broadcastStrides(g.shape(), out);
  // Rows along the output's last axis when one operand has the output's shape (`big`); the other's
  // values for a row (`row`) are gathered into floats once, when its offset changes.
  const bool x_big = x.shape() == out && !out.empty();
  const bool g_big = !x_big && g.shape() == out && !out.empty();
#ifdef LWC_INT8_X86
  const bool fast = haveAvx512() && reciprocalDivides(sy);  // the 16-lane kernels, for 8-bit x and y
#else
  constexpr bool fast = false;
#endif
  const auto xs = broadcastStrides(x.shape(), out);
  dispatchQuantized(x.dtype(), ctx, "x", [&](auto tx) {
    using TX = decltype(tx);
    dispatchQuantized(yt, ctx, "y_zero_point", [&](auto ty) {
      using TY = decltype(ty);
      const TX* X = x.data<TX>();
      TY* Y = y.data<TY>();
      if (x_big || g_big) {
        const auto& ss = x_big ? gs : xs;  // the small operand's strides
        parallelRanges(rows, y.numel() > kParallelMin, [&](int64_t r0, int64_t r1) {
          std::vector<float> row(static_cast<size_t>(cols));
          // The row's index over the output's leading axes (an odometer) and the small operand's
          // offset for it.
          const size_t lead = out.size() - 1;
          std::vector<int64_t> idx(lead);
          int64_t off = 0;
          for (size_t d = lead, rem = static_cast<size_t>(r0); d-- > 0;) {
            idx[d] = static_cast<int64_t>(rem % static_cast<size_t>(out[d]));
            rem /= static_cast<size_t>(out[d]);
            off += idx[d] * ss[d];
          }
          // With the 16-lane kernels, the rows since `run` share the current row of the small
          // operand and go in one call (flush).
          constexpr bool wide = sizeof(TX) == 1 && sizeof(TY) == 1;
          int64_t last_off = -1, run = r0;
          auto flush = [&](int64_t end) {
#ifdef LWC_INT8_X86
            if constexpr (wide) {
              if (fast && end > run) {
                if (x_big)
                  qmulRows512(X + run * cols, row.data(), Y + run * cols, end - run, cols, sx, zx, sy, zy, lo, hi);
                else
                  qmulRowsTable512(G + run * cols, T, row.data(), Y + run * cols, end - run, cols, sy, zy, lo, hi);
              }
            }
#endif
            run = end;
          };
          for (int64_t r = r0; r < r1; ++r) {
            if (off != last_off) {
              flush(r);
              for (int64_t c = 0; c < cols; ++c)
                row[static_cast<size_t>(c)] = x_big ? T[G[off + c * ss.back()]] : dequantizeValue(X[off + c * ss.back()], zx, sx);
              last_off = off;
            }
            if (!(fast && wide)) {
              if (x_big) qmulRow(X + r * cols, row.data(), Y + r * cols, cols, sx, zx, sy, zy, lo, hi);
              else qmulRowTable(G + r * cols, T, row.data(), Y + r * cols, cols, sy, zy, lo, hi);
            }
            for (size_t d = lead; d-- > 0;) {
              off += ss[d];
              if (++idx[d] < out[d]) break;
              off -= ss[d] * out[d];
              idx[d] = 0;
            }
          }
          flush(r1);
        });
        return;
      }
      const auto plan = planBroadcast<2>({&x.shape(), &g.shape()}, ctx);
      const int64_t xj = plan.strides[0].back(), gj = plan.strides[1].back();
      forEachRow(plan, [&](int64_t o, const std::array<int64_t, 2>& at, int64_t len) {
        for (int64_t j = 0; j < len; ++j) {
          const float v = T[G[at[1] + j * gj]] * dequantizeValue(X[at[0] + j * xj], zx, sx);
          Y[o + j] = static_cast<TY>(quantizeValue(v, sy, zy, range));
        }
      });
    });
  });
}

// lwc.internal.QGlobalAvgPoolNhwc (x, x_scale, x_zp, y_scale, y_zp): DequantizeLinear ->
// GlobalAvgPoolNhwc -> QuantizeLinear with per-tensor parameters (optimize.cpp,
// fuseQGlobalAvgPool), on the 8-bit NHWC [N, H, W, C] input: exact integer sums per channel, then
// (sum - H * W * x_zp) * x_scale / (H * W * y_scale) in double, clamped and rounded half to even
// as QuantizeLinear rounds. The reference rounds each dequantized value, their mean and its
// quotient by y_scale to float on the way, so a result that falls within a few float steps of a
// half-integer can round the other way: within one quantization step of the reference's. Output
// [N, 1, 1, C] (the bytes of NCHW [N, C, 1, 1]).
template <typename TX>
LWC_AVX2_CLONE void sumPixels(const TX* __restrict X, int64_t stride, int64_t pixels, int64_t nc, int32_t* __restrict part) {
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < nc; ++c) part[c] += static_cast<int32_t>(X[p * stride + c]);
}

#ifdef LWC_INT8_X86
// sumPixels for 8-bit X and up to 64 channels with AVX-512: the 64 channels' sums of up to 256
// pixels in 16-bit lanes (255 * 256 and 128 * 256 fit), added into int32 registers after each 256,
// and into `part` once at the end; exact integer sums, so the same values. (The vectorized loop above
// loads, adds and stores `part` for every pixel.)
template <typename TX>
LWC_Q512 void sumPixels512(const TX* __restrict X, int64_t stride, int64_t pixels, int64_t nc, int32_t* __restrict part) {
  static_assert(sizeof(TX) == 1);
  constexpr bool kUnsigned = std::is_same_v<TX, uint8_t>;
  const __mmask64 m = nc >= 64 ? ~__mmask64{0} : (__mmask64{1} << nc) - 1;
  // 32 bytes to 16-bit lanes; 16 such lanes to 32-bit ones (uint8 sums reach 65280: unsigned).
  auto widen16 = [&](__m256i v) LWC_Q512 { return kUnsigned ? _mm512_cvtepu8_epi16(v) : _mm512_cvtepi8_epi16(v); };
  auto widen32 = [&](__m256i v) LWC_Q512 { return kUnsigned ? _mm512_cvtepu16_epi32(v) : _mm512_cvtepi16_epi32(v); };
  __m512i s32[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512()};
  for (int64_t p0 = 0; p0 < pixels; p0 += 256) {
    const int64_t p1 = std::min(pixels, p0 + 256);
    __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();  // channels 0-31, 32-63
    for (int64_t p = p0; p < p1; ++p) {
      const __m512i v = _mm512_maskz_loadu_epi8(m, X + p * stride);
      lo = _mm512_add_epi16(lo, widen16(_mm512_castsi512_si256(v)));
      hi = _mm512_add_epi16(hi, widen16(_mm512_extracti64x4_epi64(v, 1)));
    }
    s32[0] = _mm512_add_epi32(s32[0], widen32(_mm512_castsi512_si256(lo)));
    s32[1] = _mm512_add_epi32(s32[1], widen32(_mm512_extracti64x4_epi64(lo, 1)));
    s32[2] = _mm512_add_epi32(s32[2], widen32(_mm512_castsi512_si256(hi)));
    s32[3] = _mm512_add_epi32(s32[3], widen32(_mm512_extracti64x4_epi64(hi, 1)));
  }
  for (int k = 0; k < 4 && 16 * k < nc; ++k) {
    const __mmask16 mk = firstLanes(nc - 16 * k);
    int32_t* d = part + 16 * k;
    _mm512_mask_storeu_epi32(d, mk, _mm512_add_epi32(_mm512_maskz_loadu_epi32(mk, d), s32[k]));
  }
}
#endif

// One image's results from its channels' sums (int32, without the zero points' part `bias`):
// (sum + bias) * x_scale / (H * W * y_scale) in double (`k`), clamped, rounded half to even, plus
// the zero point; written so that the compiler vectorizes it (as qaddRange).
template <typename TY>
LWC_AVX2_CLONE void quantizeMeans(const int32_t* __restrict sums, int64_t C, int32_t bias, double k, int32_t zy, double lo,
                                  double hi, TY* __restrict Y) {
  constexpr double kMagic = 6755399441055744.0;  // 1.5 * 2^52: adding and removing it rounds half to even
  for (int64_t c = 0; c < C; ++c) {
    double q = static_cast<double>(sums[c] + bias) * k;
    q = std::min(std::max(q, lo), hi);
    q = (q + kMagic) - kMagic;
    Y[c] = static_cast<TY>(static_cast<int32_t>(q) + zy);
  }
}

void qglobalAvgPoolNhwc(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  if (x.rank() != 4) ctx.error("input has shape ", shapeStr(x.shape()), "; expected NHWC [N, H, W, C]");
  const float sx = firstScale(ctx.in(1), ctx, "x_scale"), sy = firstScale(ctx.in(3), ctx, "y_scale");
  const int32_t zx = firstZeroPoint(ctx.in(2), x.dtype(), ctx, "x_zero_point");
  const DType yt = ctx.in(4).dtype();
  const int32_t zy = firstZeroPoint(ctx.in(4), yt, ctx, "y_zero_point");
  const QRange range = qrange(yt, ctx, "y_zero_point");
  const int64_t N = x.dim(0), HW = x.dim(1) * x.dim(2), C = x.dim(3);
  Tensor& y = ctx.allocUninit(0, yt, {N, 1, 1, C});
  const double k = static_cast<double>(sx) / (static_cast<double>(HW) * static_cast<double>(sy));
  if (HW >= (int64_t{1} << 23)) {  // sums that may not fit int32: int64, one channel at a time
    dispatchQuantized(x.dtype(), ctx, "x", [&](auto tx) {
      using TX = decltype(tx);
      const TX* X = x.data<TX>();
      auto* Y = static_cast<uint8_t*>(y.raw());
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) {
          int64_t total = -HW * zx;
          for (int64_t p = 0; p < HW; ++p) total += X[(n * HW + p) * C + c];
          const double q = std::clamp(std::nearbyint(static_cast<double>(total) * k), double(range.lo - zy), double(range.hi - zy));
          Y[n * C + c] = static_cast<uint8_t>(static_cast<int32_t>(q) + zy);  // the value's byte, uint8 or int8
        }
    });
    return;
  }
  constexpr int64_t kBlock = 64;  // channels per unit of work
  const int64_t blocks = (C + kBlock - 1) / kBlock;
  // Pixel chunks per image, so that one image of few channels still runs on every thread: each
  // unit (image, chunk, channel block) sums into its own row of `parts`, added up after. Sums of
  // fewer than 2^23 values of at most 255 fit int32.
  const int64_t chunks = std::clamp<int64_t>(HW / 1024, 1, 16);
  // Reused by the calling thread's next call: a fresh vector above malloc's mmap threshold cost page
  // faults on every call (mnv2_fmnist at batch 32: 164 KB, 0.11 ms of a 0.02 ms node).
  thread_local std::vector<int32_t> parts;
  if (parts.size() < static_cast<size_t>(N * chunks * C)) parts.resize(static_cast<size_t>(N * chunks * C));
  int32_t* const pp = parts.data();  // the workers' own thread_local `parts` would be another vector
  const int32_t bias = static_cast<int32_t>(-HW * zx);
#ifdef LWC_INT8_X86
  const bool wide = haveAvx512();  // sumPixels512 for 8-bit inputs
#endif
  dispatchQuantized(x.dtype(), ctx, "x", [&](auto tx) {
    using TX = decltype(tx);
    dispatchQuantized(yt, ctx, "y_zero_point", [&](auto ty) {
      using TY = decltype(ty);
      const TX* X = x.data<TX>();
      TY* Y = y.data<TY>();
      parallelRanges(N * chunks * blocks, N * HW * C > kParallelMin, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
          const int64_t nk = u / blocks, n = nk / chunks, j = nk % chunks;
          const int64_t c0 = (u % blocks) * kBlock, nc = std::min(kBlock, C - c0);
          const int64_t p0 = HW * j / chunks, p1 = HW * (j + 1) / chunks;
          int32_t* part = pp + nk * C + c0;
          std::fill(part, part + nc, 0);
#ifdef LWC_INT8_X86
          if constexpr (sizeof(TX) == 1) {
            if (wide) {
              sumPixels512(X + (n * HW + p0) * C + c0, C, p1 - p0, nc, part);
              continue;
            }
          }
#endif
          sumPixels(X + (n * HW + p0) * C + c0, C, p1 - p0, nc, part);
        }
      });
      const double lo = range.lo - zy, hi = range.hi - zy;
      parallelRanges(N, N * C > 4096, [&](int64_t n0, int64_t n1) {
        for (int64_t n = n0; n < n1; ++n) {
          int32_t* sums = pp + n * chunks * C;  // the chunks' rows added into the first
          for (int64_t j = 1; j < chunks; ++j)
            for (int64_t c = 0; c < C; ++c) sums[c] += sums[j * C + c];
          quantizeMeans(sums, C, bias, k, zy, lo, hi, Y + n * C);
        }
      });
    });
  });
}

}  // namespace lwc::engine::quant

namespace lwc::engine {

void registerQuantKernels(KernelRegistry& r) {
  using namespace quant;
  r.addFn("QuantizeLinear", 10, kMaxOpset, quantizeLinear);
  r.addFn("DequantizeLinear", 10, kMaxOpset, dequantizeLinear);
  r.addFn("DynamicQuantizeLinear", 11, kMaxOpset, dynamicQuantizeLinear);
  r.addFn("ConvInteger", 10, kMaxOpset, convInteger);
  r.addFn("QLinearConv", 10, kMaxOpset, qlinearConv);
  r.addFn("MatMulInteger", 10, kMaxOpset, matMulInteger);
  r.addFn("QLinearMatMul", 10, kMaxOpset, qlinearMatMul);
  r.addFn("QLinearMatMul", 1, 1, [](KernelContext& ctx) { qlinearMatMulBias(ctx, &ctx.in(8)); }, kInternalDomain);
  r.addFn("MatMulIntegerToFloat", 1, 1, matMulIntegerToFloat, kInternalDomain);
  r.addFn("MatMulIntegerScaled", 1, 1, matMulIntegerScaled, kInternalDomain);
  r.addFn("QGlobalAvgPoolNhwc", 1, 1, qglobalAvgPoolNhwc, kInternalDomain);
  r.addFn("QMulLut", 1, 1, qmulLut, kInternalDomain);
  r.addFn("QLut", 1, 1, qlut, kInternalDomain);
  r.addFn("QLutChannels", 1, 1, qlutChannels, kInternalDomain);
  r.addFn("QAdd", 1, 1, qadd, kInternalDomain);
}

}  // namespace lwc::engine
