// oneDNN fast paths of the integer ops: QLinearConv, ConvInteger (2-D), QLinearMatMul and
// MatMulInteger (runtime A, constant 2-D B). The reference kernels (quant.cpp, arithmetic in
// quant_ref.h) are the oracle; a factory here declines (returns nullptr) whatever it cannot run
// exactly, and run() hands a call to the reference kernel when the runtime inputs turn out to be
// something the prepared primitive does not cover (dtype, rank, zero-point shape), so the reference
// also produces every error message.
//
// What is covered:
//   * weights constant, int8, or uint8/int8 with a constant zero point such that w - w_zp fits int8
//     for every element (per-tensor or per-output-channel zero point; e.g. uint8 weights with zero
//     point 128). The shifted weights are what oneDNN sees, with no weight zero point.
//   * activations uint8 or int8, per-tensor scale and zero point; the zero points of x and y may be
//     constants (baked into the primitive) or runtime inputs (oneDNN runtime zero points).
//   * scales constant (oneDNN 2.6 int8 convolutions have no runtime output scales); the output
//     scale is quant::requantMultiplier(x_scale, w_scale[m], y_scale), the reference's float32 value.
//   * QLinearConv bias: int32, passed to oneDNN as an s32 bias.
//   * a CPU whose int8 instructions are VNNI (AVX512-VNNI or AVX-VNNI). Without VNNI oneDNN's int8
//     kernels use vpmaddubsw, which adds two u8 x s8 products in a saturating int16 (and weights get
//     pre-scaled by 1/2 for int8 sources): exact only when |x| * 2 * max|w| <= 32767, that is for
//     uint8 sources and weights within [-64, 64] ("7-bit" weights, `lwc quantize --reduce-range`,
//     the remedy ONNX Runtime and oneDNN document for such CPUs). Those run oneDNN's int8 kernels
//     there too (int8Exact); other NHWC QLinearConvs run exact fp32 convolutions of the centred
//     integers (DnnlQConv::runF32, in parts of the input channels where the sums could pass 2^24),
//     the matrix products exact fp32 products in parts of K (F32QMatMul), everything else the
//     reference.
//
// Activations are plain NCHW tensors; the convolution primitive itself is NHWC (oneDNN's int8
// kernels for plain NCHW are its `ref` implementation, ~1000x slower), with reorders at the edges.
// Any shape for which oneDNN would only offer a `ref` implementation also goes to the reference.
//
// Numerics, compared with quant_ref.h:
//   * oneDNN converts the int32 accumulator (after its own int32 compensations for the zero point
//     and for int8 sources) to float32 for post-processing even when the output is int32. For the
//     int32-output ops that is exact while |acc| <= 2^24: ConvInteger's factory proves that from
//     the constant weights (max |x - x_zp| * max over outputs of sum |w|) and otherwise declines.
//     MatMulInteger (and the float-output products whose sums could pass 2^24) give oneDNN the
//     raw A and subtract the zero point's share themselves; where those raw sums could pass 2^24
//     they run only on oneDNN's brgemm matmul, which stores int32 sums without float32 (see
//     DnnlQMatMul::exactInt32). Their results are then bit-identical to the reference.
//   * QLinearConv/QLinearMatMul: oneDNN computes rne(clamp(float(acc) + float(bias)) * M + y_zp)),
//     the reference rne(float(acc + bias) * M) + y_zp. They agree except (a) when float(acc) * M lies
//     within float32 rounding of a .5 tie: adding y_zp in float32 before rounding can move it across
//     the tie (or an exact tie rounds to even after instead of before adding an odd y_zp), one step
//     of difference; and (b) when |acc| or |bias| exceeds 2^24, where float(acc) + float(bias) is
//     rounded differently from float(acc + bias) (and the reference wraps int32 on overflow where
//     oneDNN does not). Both are rare (tests: >= 99% of elements exact, all within one step); the
//     rounding of a fused int8 library's post-processing cannot be changed to match more closely.
#include <algorithm>
#include <array>
#include <cstring>
#include <cmath>
#include <dnnl.hpp>
#include <map>
#include <optional>
#include <string>
#include <type_traits>

#include "engine/kernels/common.h"
#include "engine/kernels/dnnl_common.h"
#include "engine/kernels/dw_int8.h"
#include "engine/kernels/few_int8.h"
#include "engine/kernels/nn_ref.h"
#include "engine/kernels/pw_int8.h"
#include "engine/optimize.h"
#include "engine/kernels/quant_ref.h"

namespace lwc::engine {

namespace {

using dnnl_util::memory;
using dnnl_util::tag;
using dnnl_util::ExecArgs;
using dnnl_util::dt;
using dnnl_util::cpuEngine;
using dnnl_util::cpuStream;
using dnnl_util::scratchMemory;
using dnnl_util::convDims;
using dnnl_util::SingleThreadIf;
using dnnl_util::oneThreadCall;
using dnnl_util::kOneThreadSuffix;

/// True when oneDNN's int8 kernels use VNNI (exact u8 x s8 -> s32 dot products).
bool haveVnni() {
  static const bool v = [] {
    const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    auto has = [&](dnnl::cpu_isa i) { return (isa & static_cast<unsigned>(i)) == static_cast<unsigned>(i); };
    return has(dnnl::cpu_isa::avx512_core_vnni) || has(dnnl::cpu_isa::avx2_vnni);
  }();
  return v;
}

bool is8(DType t) { return t == DType::UInt8 || t == DType::Int8; }
dt dnnlType(DType t) {
  return t == DType::UInt8 ? dt::u8 : t == DType::Int8 ? dt::s8 : t == DType::Float32 ? dt::f32 : dt::s32;
}

/// Accumulators up to this magnitude survive oneDNN's float32 post-processing exactly.
constexpr int64_t kExactAcc = int64_t{1} << 24;

/// Largest |w - w_zp| for which the int16 pair sums of oneDNN's non-VNNI int8 kernels cannot
/// saturate with uint8 sources: 255 * 64 * 2 = 32640 <= 32767.
constexpr int64_t kNoSaturationWeight = 64;

// ---------------------------------------------------------------------------------------------
// Constant inputs as the reference would read them; nullopt where the reference would raise an
// error (the factory then declines, so the reference runs and reports it).

std::optional<std::vector<float>> constScales(const Tensor* t) {
  if (!t || (t->dtype() != DType::Float32 && t->dtype() != DType::Float16)) return std::nullopt;
  const Tensor f = toFloat32IfHalf(*t);
  std::vector<float> s(f.data<float>(), f.data<float>() + f.numel());
  for (float v : s)
    if (!std::isfinite(v) || v <= 0.0f) return std::nullopt;
  return s;
}

std::vector<int32_t> intValues(const Tensor& t) {
  std::vector<int32_t> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = static_cast<int32_t>(t.at(i));
  return v;
}

bool single(const Tensor& t) { return t.numel() == 1 && t.rank() <= 1; }

/// Known dtype of input i, or Undefined.
DType inputType(const KernelInfo& info, size_t i) {
  const Tensor* c = info.constant(i);
  if (c) return c->dtype();
  const ValueInfo* v = i < info.input_types.size() ? info.input_types[i] : nullptr;
  return v ? v->dtype : DType::Undefined;
}

/// Largest |x - x_zp| an 8-bit activation can give; `zp` nullopt when only known at run time.
int64_t maxCentered(DType x, std::optional<int32_t> zp) {
  if (!zp) return 255;  // |x - zp| <= 255 for any uint8 or int8 pair
  if (x == DType::UInt8) return std::max<int64_t>(*zp, 255 - *zp);
  if (x == DType::Int8) return std::max<int64_t>(*zp + 128, 127 - *zp);
  return 255;
}

/// Constant weights minus their zero point as int8 (zp_of(i) gives element i's zero point), and the
/// largest sum of |w - zp| over the elements feeding one output (group_of(i) names that output).
/// nullopt when some shifted value leaves int8's range.
struct ShiftedWeights {
  std::vector<int8_t> w;
  int64_t max_abs_sum = 0;
  int64_t max_abs = 0;  ///< largest |w - zp|
};
template <typename ZpOf, typename OutOf>
std::optional<ShiftedWeights> shiftWeights(const Tensor& w, int64_t outputs, ZpOf&& zp_of, OutOf&& out_of) {
  ShiftedWeights r;
  r.w.resize(static_cast<size_t>(w.numel()));
  std::vector<int64_t> sums(static_cast<size_t>(outputs), 0);
  const bool u8 = w.dtype() == DType::UInt8;
  const uint8_t* wu = u8 ? w.data<uint8_t>() : nullptr;
  const int8_t* ws = u8 ? nullptr : w.data<int8_t>();
  for (int64_t i = 0; i < w.numel(); ++i) {
    const int32_t v = (u8 ? static_cast<int32_t>(wu[i]) : static_cast<int32_t>(ws[i])) - zp_of(i);
    if (v < -128 || v > 127) return std::nullopt;
    r.w[i] = static_cast<int8_t>(v);
    sums[out_of(i)] += v < 0 ? -v : v;
    r.max_abs = std::max<int64_t>(r.max_abs, v < 0 ? -v : v);
  }
  for (int64_t s : sums) r.max_abs_sum = std::max(r.max_abs_sum, s);
  return r;
}

/// The range of x - x_zp for an 8-bit activation: [-below, above]; with `zp` nullopt (known only
/// at run time) [-255, 255].
struct Centred {
  int64_t above = 255, below = 255;
};
Centred centredRange(DType x, std::optional<int32_t> zp) {
  if (!zp || (x != DType::UInt8 && x != DType::Int8)) return {};
  return x == DType::UInt8 ? Centred{255 - *zp, *zp} : Centred{127 - *zp, 128 + *zp};
}

/// Boundaries [c_0 = 0, c_1, ..., c_K = inputs] of the parts of a product's reduction whose fp32
/// sums stay exact. Each product w * (x - x_zp) lies in an interval that holds 0, so every partial
/// sum, in whatever order, lies between the sum of the products' lower bounds and the sum of their
/// upper bounds; a part is exact when both stay within 2^24 for every output. `weights(o, i)` gives
/// the weights output o takes from input i (one for a matrix product, kh * kw for a convolution).
/// Greedy in input order, so the fewest contiguous parts. Empty when one input alone could pass
/// 2^24 (kh * kw above 518 with full-range weights), or when `one_part` and one part would not do.
template <typename Weights>
std::vector<int64_t> exactF32Parts(int64_t outputs, int64_t inputs, Centred x, bool one_part, Weights&& weights) {
  std::vector<int64_t> parts{0};
  std::vector<std::pair<int64_t, int64_t>> sums(static_cast<size_t>(outputs)), one(static_cast<size_t>(outputs));
  for (int64_t c = 0; c < inputs; ++c) {
    bool over = false;
    for (int64_t m = 0; m < outputs; ++m) {
      int64_t pos = 0, neg = 0;
      weights(m, c, [&](int8_t v) { (v > 0 ? pos : neg) += v < 0 ? -v : v; });
      // The sums of the products' upper and (negated) lower bounds.
      one[m] = {pos * x.above + neg * x.below, pos * x.below + neg * x.above};
      if (one[m].first > kExactAcc || one[m].second > kExactAcc) return {};
      over = over || sums[m].first + one[m].first > kExactAcc || sums[m].second + one[m].second > kExactAcc;
    }
    if (over) {
      if (one_part) return {};
      parts.push_back(c);
      std::fill(sums.begin(), sums.end(), std::pair<int64_t, int64_t>{0, 0});
    }
    for (int64_t m = 0; m < outputs; ++m) sums[m] = {sums[m].first + one[m].first, sums[m].second + one[m].second};
  }
  parts.push_back(inputs);
  return parts;
}

/// exactF32Parts over the input channels of a convolution (weights [oc][icg][kh][kw], shifted); a
/// grouped convolution only in one part.
std::vector<int64_t> convF32Parts(const ShiftedWeights& w, const Shape& ws, int64_t group, Centred x) {
  const int64_t icg = ws[1], taps = ws[2] * ws[3];
  return exactF32Parts(ws[0], icg, x, group != 1, [&](int64_t m, int64_t c, auto&& add) {
    const int8_t* t = w.w.data() + (m * icg + c) * taps;
    for (int64_t k = 0; k < taps; ++k) add(t[k]);
  });
}

/// exactF32Parts over the rows of B [k, n] (shifted) of a matrix product.
std::vector<int64_t> matMulF32Parts(const ShiftedWeights& b, int64_t k, int64_t n, Centred a) {
  return exactF32Parts(n, k, a, false, [&](int64_t j, int64_t r, auto&& add) { add(b.w[static_cast<size_t>(r * n + j)]); });
}

/// oneDNN's int8 kernels are exact for these operands on this CPU: always with VNNI, otherwise for
/// uint8 sources (known when the session is built) and weights within +-64 (see the header).
bool int8Exact(DType x_type, const ShiftedWeights& w) {
  return haveVnni() || (x_type == DType::UInt8 && w.max_abs <= kNoSaturationWeight);
}

/// A zero-point input: a constant value, or read at run time.
struct ZeroPoint {
  bool present = false;          ///< input given (absent = 0)
  std::optional<int32_t> value;  ///< constant value (or 0 when absent); nullopt: runtime
  int32_t at(const KernelContext& ctx, size_t i) const {
    if (value) return *value;
    return static_cast<int32_t>(ctx.in(i).at(0));
  }
  bool runtime() const { return !value.has_value(); }
};

/// Reads a per-tensor zero point input; nullopt when a constant one is not a single value.
std::optional<ZeroPoint> zeroPoint(const KernelInfo& info, size_t i) {
  ZeroPoint z;
  if (!info.hasInput(i)) {
    z.value = 0;
    return z;
  }
  z.present = true;
  if (const Tensor* c = info.constant(i)) {
    if (!single(*c) || !is8(c->dtype())) return std::nullopt;
    z.value = static_cast<int32_t>(c->at(0));
  }
  return z;
}

/// Sets a per-tensor zero point of `arg` on the attributes: constant (omitted when 0) or runtime.
void setZeroPoint(dnnl::primitive_attr& attr, int arg, const ZeroPoint& z) {
  if (z.runtime()) attr.set_zero_points(arg, 0, {DNNL_RUNTIME_S32_VAL});
  else if (*z.value != 0) attr.set_zero_points(arg, 0, {*z.value});
}

/// A kernel's runtime zero points (of the source and the destination) for oneDNN: the values and
/// their one-element memory objects are members, made on the first call and re-pointed after.
/// Making two memory objects per call cost more allocator calls than the rest of a small
/// convolution's call (mnv2_fmnist INT8 at batch 1: about 230 of its 680 per run).
class RuntimeZeroPoints {
 public:
  /// Adds zero point `value` for `arg` (DNNL_ARG_SRC or DNNL_ARG_DST) to `args`; valid until the
  /// next add for the same arg.
  void add(ExecArgs& args, int arg, int32_t value) {
    const int i = arg == DNNL_ARG_SRC ? 0 : 1;
    value_[i] = value;
    if (!mem_[i]) mem_[i] = memory(memory::desc({1}, dt::s32, tag::x), cpuEngine(), nullptr);
    mem_[i].set_data_handle(&value_[i]);
    args.add(DNNL_ARG_ATTR_ZERO_POINTS | arg, mem_[i]);
  }

 private:
  int32_t value_[2] = {0, 0};
  memory mem_[2];
};

bool isRef(const char* impl) { return std::string(impl).rfind("ref", 0) == 0; }

/// oneDNN 2.6 lists its brgemm int8 convolutions first, but on the shapes of mobile networks its
/// direct kernels are faster (standalone, NHWC, median of 300-400 calls, AVX512-VNNI):
/// - depthwise: brdgmm_dw -> jit_int8: 96 channels 14x14 batch 32 113 -> 91 us, 16 channels 28x28
///   89 -> 69 us, batch 1 96 channels 4.6 -> 4.0 us; level on 7x7 and 4x4;
/// - 1x1: brgconv_1x1 -> jit_int8_1x1: over the 1x1 layers of mnv2_fmnist, torchvision
///   mobilenet_v2 and resnet50 at batch 1 and 32 (38 shapes) the time ratio is 0.70-1.10, median
///   0.95; e.g. mobilenet_v2 144 -> 24 on 56x56 at batch 32 2027 -> 1433 us, mnv2_fmnist 8 -> 48 on
///   28x28 at batch 32 89 -> 78 us; the worst, 256 -> 64 on 56x56 at batch 32, 4289 -> 4646 us.
/// All accumulate exactly in int32 and requantize alike (outputs compared byte for byte on every
/// shape and on the INT8 models). Moves `pd` to the first implementation named `to...` when the
/// chosen one is named `from...` and such an implementation follows; else leaves it.
void preferImpl(dnnl::convolution_forward::primitive_desc& pd, const char* from, const char* to) {
  if (std::string(pd.impl_info_str()).rfind(from, 0) != 0) return;
  auto probe = pd;
  while (probe.next_impl())
    if (std::string(probe.impl_info_str()).rfind(to, 0) == 0) {
      pd = probe;
      return;
    }
}

/// On CPUs with AMX (Sapphire Rapids), an int8 convolution of fewer than 2^23 multiply-adds per call
/// (`macs`), or a pointwise one over `ic` < 256 input channels or of fewer than 2^25 multiply-adds
/// into no more output channels (`oc`) than it reads, takes oneDNN's VNNI kernel
/// (jit_int8_1x1 or jit_int8) rather than the AMX kernel oneDNN 2.6 lists first there
/// (`jit_1x1:avx512_core_amx_int8`, `brgconv:avx512_core_amx_int8`; `jit:avx512_core_amx_int8` for
/// one image of few pixels). AMX multiplies tiles 64 bytes deep along the input channels; on narrow
/// or small layers its tile set-up and padding cost more than they save.
/// - Pointwise channels, standalone on a 2-core Xeon with AMX (NHWC, the attributes lwc sets, median
///   of 300 calls on 2 threads, geometric mean of two runs; jit_int8_1x1 time / AMX time over the 1x1
///   layers of mnv2_fmnist, torchvision mobilenet_v2 and resnet50 at batch 1 and 32): with ic < 256,
///   54 of 57 shapes 0.34-0.97 (mobilenet_v2 32 -> 192 on 28x28 at batch 32 1985 -> 848 us), the
///   other three 1.10-1.26; with ic >= 256 it is mixed, 14 of 26 below 1 (0.50-2.18).
/// - Size, in the networks (per-node profiles of INT8 files, `lwc -v bench --profile`, the lower of
///   two runs each way): every pointwise layer of ic >= 256 under 2^23 multiply-adds was as fast or
///   faster on VNNI, 0.28-1.00 (mnv2_fmnist at batch 1 0.28-0.55 and at batch 32 0.56-0.81,
///   mobilenet_v2 at batch 1 0.57-0.71, mobilenet_v3_large's and efficientnet_b0's squeeze-excite
///   and projection layers 0.40-1.00, lenet300's 784 -> 300 Gemm at batch 32 0.90), while from
///   about 10^7 on AMX won some (efficientnet_b0's 672 -> 112 and 1152 -> 192 projections at batch
///   1 1.15-1.41, mobilenet_v2 320 -> 1280 on 7x7 1.30, everything at batch 32 on 224x224 inputs
///   1.38-1.63). The same held for the 3x3 and 5x5 layers under 2^23: resnet_fmnist's at batch 1
///   0.50-1.00 (0.71 summed), lenet5's 6 -> 16 5x5 0.52-0.98; larger 3x3 layers keep AMX (at batch
///   32 it was 1.47-2.13x faster on 9 of 10 shapes of 16-512 channels standalone).
/// - Pointwise layers of 2^23 to 2^25 multiply-adds with ic >= 256 (2026-12-05, same machine,
///   per-node profiles of the INT8 files, the lower of two runs each way, AMX -> VNNI): those with
///   oc <= ic ran faster on VNNI, every one of them: mnv2_fmnist's 480 -> 160 on 2x2 at batch 32
///   65 -> 17 us, at batch 1 efficientnet_b0's 480 -> 112 75 -> 24, 672 -> 112 79 -> 30 and
///   1152 -> 192 (with its residual add) 67 -> 39, 1152 -> 320 61 -> 35, mnasnet1_0's 480 -> 96
///   65 -> 15, mobilenet_v2's 960 -> 320 52 -> 29, regnet_y_400mf's 440 -> 440 45 -> 19 (the
///   earlier measurement that kept AMX for efficientnet_b0's projections is not reproduced by this
///   build); the expansions 320 -> 1280 on 7x7 (2x10^7) stay faster on AMX, 37 vs 51 and 40 vs 61 us.
/// Both accumulate exactly in int32: the INT8 files' outputs are byte-identical with AMX everywhere,
/// with this choice, and without AMX.
/// Whether avoidSmallAmx leaves oneDNN's AMX kernel in place for such a convolution.
bool dnnlKeepsAmx(int64_t ic, int64_t oc, int64_t macs, bool pointwise) {
  const bool small = macs < (int64_t{1} << 23);
  const bool narrow_pointwise = pointwise && (ic < 256 || (oc <= ic && macs < (int64_t{1} << 25)));
  return !small && !narrow_pointwise;
}

void avoidSmallAmx(dnnl::convolution_forward::primitive_desc& pd, int64_t ic, int64_t oc, int64_t macs, bool pointwise) {
  const std::string chosen = pd.impl_info_str();
  if (chosen.find("avx512_core_amx") == std::string::npos) return;
  if (!dnnlKeepsAmx(ic, oc, macs, pointwise)) preferImpl(pd, chosen.c_str(), pointwise ? "jit_int8_1x1:" : "jit_int8:");
}

/// oneDNN 2.6's AMX int8 1x1 convolution (`jit_1x1:avx512_core_amx_int8`, unit strides) writes
/// past the end of its destination when an image has 27, 33, 36, 39, 42, 45 or 48 output pixels
/// (pixels / 3 rows of extra output, for any batch, channel count and output type; measured with a
/// canary region after the destination over 1-4096 pixels in one column, square images up to
/// 400 x 400 and batches 1-8; stride 2 did not). In lwc that was a heap corruption: the classifiers
/// of mobilenet_v3 and efficientnet_b0 run as one 1 x m image, and batch 33 aborted. Such
/// convolutions take the VNNI kernel (byte-identical); false when `pd` is still that kernel (no
/// alternative listed): the caller must not run it.
bool avoidAmx1x1Overrun(dnnl::convolution_forward::primitive_desc& pd, int64_t pixels) {
  auto risky = [&] {
    return std::string(pd.impl_info_str()).rfind("jit_1x1:avx512_core_amx", 0) == 0 && pixels % 3 == 0 &&
           pixels >= 27 && pixels <= 48;
  };
  if (!risky()) return true;
  preferImpl(pd, "jit_1x1:avx512_core_amx", "jit_int8_1x1:");
  return !risky();
}

// ---------------------------------------------------------------------------------------------
// QLinearConv and ConvInteger.

/// Inputs of the two convolution ops: QLinearConv (x, x_scale, x_zp, w, w_scale, w_zp, y_scale,
/// y_zp, B) and ConvInteger (x, w, x_zp, w_zp).
struct QConvInputs {
  bool qlinear;
  size_t x_zp, w, y_zp, bias;
};
constexpr QConvInputs kQLinearConv{true, 2, 3, 7, 8};
constexpr QConvInputs kConvInteger{false, 2, 1, 0, 0};

// NHWC <-> NCHW copies for the reference fallback of lwc.internal.QLinearConvNhwc.
Tensor permute4(const Tensor& t, const std::array<int, 4>& perm) {
  const Shape& s = t.shape();
  const Shape o{s[perm[0]], s[perm[1]], s[perm[2]], s[perm[3]]};
  Tensor r = Tensor::uninitialized(t.dtype(), o);
  const size_t es = dtypeSize(t.dtype());
  std::array<int64_t, 4> st{s[1] * s[2] * s[3], s[2] * s[3], s[3], 1};
  const auto* in = static_cast<const uint8_t*>(t.raw());
  auto* out = static_cast<uint8_t*>(r.raw());
  int64_t k = 0;
  for (int64_t a = 0; a < o[0]; ++a)
    for (int64_t b = 0; b < o[1]; ++b)
      for (int64_t c = 0; c < o[2]; ++c)
        for (int64_t d = 0; d < o[3]; ++d, ++k)
          std::memcpy(out + k * es, in + (a * st[perm[0]] + b * st[perm[1]] + c * st[perm[2]] + d * st[perm[3]]) * es, es);
  return r;
}

// The reference QLinearConv on NCHW copies of an NHWC input, result back in NHWC.
void qlinearConvNhwcReference(KernelContext& ctx) {
  if (ctx.in(0).rank() != 4) ctx.error("expects a 4-D NHWC input, got ", shapeStr(ctx.in(0).shape()));
  const Tensor x = permute4(ctx.in(0), {0, 3, 1, 2});
  std::vector<const Tensor*> ins(ctx.inputs.begin(), ctx.inputs.end());
  ins[0] = &x;
  std::vector<Tensor> outs(1);
  KernelContext rc{ctx.node, ins, outs};
  quant::qlinearConv(rc);
  ctx.outputs[0] = permute4(outs[0], {0, 2, 3, 1});
}

// One pixel's channels of DnnlQConv's f32 mode: acc = bias + a (int32, wrapping), then
// rne(clamp(float(acc) * M, lo - zp, hi - zp)) + zp, which is quant::requantizeValue (clamping
// before rounding is the same, the bounds are integers). rne for |v| < 2^22 by adding and
// subtracting 1.5 * 2^23 in the default rounding mode (ties to even), without a libm call; restrict
// pointers so that the 8-bit stores do not stop the loop from vectorising.
// `a`: float accumulators (exact integers below 2^24) or int32 ones (the sum of several parts).
template <typename A, typename T>
void requantRow(const A* __restrict a, const int32_t* __restrict bias, const float* __restrict mul,
                T* __restrict o, int64_t n, float flo, float fhi, int32_t zp) {
  for (int64_t m = 0; m < n; ++m) {
    const int32_t acc =
        static_cast<int32_t>(static_cast<uint32_t>(bias[m]) + static_cast<uint32_t>(static_cast<int32_t>(a[m])));
    const float v = std::min(std::max(static_cast<float>(acc) * mul[m], flo), fhi);
    const float r = (v + 12582912.0f) - 12582912.0f;
    o[m] = static_cast<T>(static_cast<int32_t>(r) + zp);
  }
}

/// x - zp as float32 (exact), for DnnlQConv's f32 mode.
template <typename T>
void centreRange(const T* __restrict x, float* __restrict out, int64_t n, int32_t zp) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<int32_t>(x[i]) - zp);
}
template <typename T>
void centre(const T* x, float* out, int64_t n, int32_t zp) {
  parallelRanges(n, n >= (1 << 16), [=](int64_t i0, int64_t i1) { centreRange(x + i0, out + i0, i1 - i0, zp); });
}

/// Columns [c0, c0 + n) of the `rows` rows of an 8-bit x (`stride` values a row), minus zp, as
/// float32 into out [rows, n]: one part of the f32 modes' inputs.
void centreColumns(const Tensor& x, int64_t rows, int64_t stride, int64_t c0, int64_t n, int32_t zp, float* out,
                   bool parallel) {
  auto go = [&](const auto* xd) {
    parallelRanges(rows, parallel, [&](int64_t a, int64_t b) {
      for (int64_t i = a; i < b; ++i) centreRange(xd + i * stride + c0, out + i * n, n, zp);
    });
  };
  if (x.dtype() == DType::UInt8) go(x.data<uint8_t>());
  else go(x.data<int8_t>());
}

/// One fp32 product of the f32 modes (a convolution, or a matrix product as a 1x1 convolution),
/// from x into y through its memory objects.
void execF32(const dnnl::primitive& prim, memory& w_mem, memory& x_mem, memory& y_mem, float* x, float* y) {
  x_mem.set_data_handle(x);
  y_mem.set_data_handle(y);
  dnnl::stream& s = cpuStream();
  ExecArgs{{DNNL_ARG_SRC, &x_mem}, {DNNL_ARG_WEIGHTS, &w_mem}, {DNNL_ARG_DST, &y_mem}}.execute(prim, s);
  s.wait();
}

/// acc = int32(part) for the first part, else acc + int32(part) wrapping as the reference's sums:
/// the parts' results are exact integers within 2^24.
void addPart(const float* part, int32_t* acc, int64_t n, bool first, bool parallel) {
  parallelRanges(n, parallel, [&](int64_t a, int64_t b) {
    if (first)
      for (int64_t i = a; i < b; ++i) acc[i] = static_cast<int32_t>(part[i]);
    else
      for (int64_t i = a; i < b; ++i) acc[i] = quant::wrapAdd(acc[i], static_cast<int32_t>(part[i]));
  });
}

class RefQLinearConvNhwc final : public Kernel {
 public:
  void run(KernelContext& ctx) override { qlinearConvNhwcReference(ctx); }
};

class DnnlQConv final : public Kernel {
  struct Prepared;

 public:
  struct Config {
    QConvInputs in;
    Shape w_shape;
    ShiftedWeights w;
    std::vector<float> scales;  ///< per output channel or one; empty for ConvInteger
    ZeroPoint x_zp, y_zp;
    DType y_type = DType::Int32;
    bool bias = false;
    bool bias_const = false;  ///< the bias is an initializer (the same on every call)
    /// lwc.internal.QLinearConvNhwc: x and y are NHWC tensors (logical shape [N,H,W,C]).
    bool nhwc = false;
    /// CPUs without VNNI: an fp32 convolution of the centred integers (exact, the factory checks
    /// that every accumulator stays within float32's integers), then the reference's requantization.
    bool f32 = false;
    /// f32 mode: input-channel boundaries of the parts run as separate fp32 convolutions, whose
    /// integer results are added in int32 (exactF32Parts); {0, icg} for one part.
    std::vector<int64_t> f32_parts;
    /// CPUs without VNNI, 7-bit weights: oneDNN's int8 kernels, exact for uint8 sources only.
    bool u8_only = false;
  };
  DnnlQConv(const Node& n, Config c) : node_(n), c_(std::move(c)) {
    own_ = ownKernel();
    if (c_.f32 || own_ != Own::none) {  // per-channel multipliers and a zero bias: requantization without branches
      const int64_t oc = c_.w_shape[0];
      for (int64_t m = 0; m < oc; ++m) mul_.push_back(c_.scales[c_.scales.size() > 1 ? m : 0]);
      zero_bias_.assign(static_cast<size_t>(oc), 0);
    }
    if (own_ != Own::none) {
      const int64_t oc = c_.w_shape[0], per = c_.w_shape[1] * c_.w_shape[2] * c_.w_shape[3];
      own_w_ = own_ == Own::dw   ? dw::packWeights(c_.w.w.data(), oc, c_.w_shape[2])
               : own_ == Own::pw ? pw::packWeights(c_.w.w.data(), oc, c_.w_shape[1])
                                 : few::packWeights(c_.w.w.data(), oc, c_.w_shape[1], c_.w_shape[2], c_.w_shape[3]);
      for (int64_t m = 0; m < oc; ++m) {
        int32_t sum = 0;
        int64_t abs_sum = 0;
        for (int64_t k = 0; k < per; ++k) {
          const int8_t w = c_.w.w[static_cast<size_t>(m * per + k)];
          sum += w;
          abs_sum += std::abs(static_cast<int64_t>(w));
        }
        own_wsum_.push_back(sum);
        own_wabs_.push_back(abs_sum);
      }
    }
  }

  void run(KernelContext& ctx) override {
    last_ = nullptr;
    if (c_.nhwc) return runNhwc(ctx);
    const Tensor& x = ctx.in(0);
    if (!runnable(ctx)) return reference(ctx);
    Prepared& p = prepare(x.shape(), x.dtype());
    if (!p.ok) return reference(ctx);
    last_ = &p;
    const Shape& xs = x.shape();
    Tensor& y = ctx.allocUninit(0, c_.y_type, p.out_shape);
    auto& eng = cpuEngine();
    dnnl::stream& s = cpuStream();
    // NCHW <-> NHWC at the edges; no reorder where the two layouts coincide (one channel or 1x1).
    memory x_mem, y_mem;
    Tensor x_blocked, y_blocked;
    const bool x_same = xs[1] == 1 || xs[2] * xs[3] == 1;
    const bool y_same = p.out_shape[1] == 1 || p.out_shape[2] * p.out_shape[3] == 1;
    if (x_same) {
      x_mem = memory(p.pd.src_desc(), eng, const_cast<void*>(x.raw()));
    } else {
      memory x_user(p.x_plain, eng, const_cast<void*>(x.raw()));
      x_mem = scratchMemory(p.pd.src_desc(), x_blocked);
      dnnl::reorder(x_user, x_mem).execute(s, x_user, x_mem);
    }
    memory y_user(p.y_plain, eng, y.raw());
    y_mem = y_same ? memory(p.pd.dst_desc(), eng, y.raw()) : scratchMemory(p.pd.dst_desc(), y_blocked);
    ExecArgs args{{DNNL_ARG_SRC, &x_mem}, {DNNL_ARG_WEIGHTS, &p.w_mem}, {DNNL_ARG_DST, &y_mem}};
    memory b_mem;  // live until execute() returns
    if (c_.bias) {
      b_mem = memory(memory::desc({c_.w_shape[0]}, dt::s32, tag::a), eng, const_cast<void*>(ctx.in(c_.in.bias).raw()));
      args.add(DNNL_ARG_BIAS, b_mem);
    }
    if (c_.x_zp.runtime()) zps_.add(args, DNNL_ARG_SRC, c_.x_zp.at(ctx, c_.in.x_zp));
    if (c_.in.qlinear && c_.y_zp.runtime()) zps_.add(args, DNNL_ARG_DST, c_.y_zp.at(ctx, c_.in.y_zp));
    const SingleThreadIf one(p.one_thread);
    args.execute(p.prim, s);
    if (!y_same) dnnl::reorder(y_mem, y_user).execute(s, y_mem, y_user);
    s.wait();
  }

  /// Builds the primitive for an input shape known when the session is built; false when oneDNN
  /// has no fast implementation for it (the factory then declines).
  bool probe(const Shape& xs, DType xt) { return prepare(xs, xt).ok; }

  /// lwc.internal.QLinearConvNhwcAdd: runs the convolution with `add` fused into the own pointwise
  /// kernel's output (ctx's inputs: the convolution's; its output: the add's) where this call takes
  /// that kernel, everything is uint8 and the residual `r` has the output's (NHWC) shape; false,
  /// with nothing written, where it does not.
  bool runFusedAdd(KernelContext& ctx, pw::Add add, const Tensor& r) {
    last_ = nullptr;
    if (!c_.nhwc || own_ != Own::pw || c_.y_type != DType::UInt8) return false;
    Prepared* p = prepareNhwc(ctx);
    if (!p || !p->ok || p->own != Own::pw || r.dtype() != DType::UInt8 || r.shape() != nhwcOutShape(*p)) return false;
    last_ = p;
    add.r = r.data<uint8_t>();
    runOwn(ctx, *p, &add);
    return true;
  }

  /// lwc.internal.QLinearConvNhwcLut: runs the convolution with the lookup `table` applied to its
  /// outputs as an own kernel writes them (each thread's rows in pieces of up to kLutPiece bytes,
  /// looked up while still in cache) where this call takes an own kernel; false, with nothing
  /// written, where it does not.
  bool runWithLut(KernelContext& ctx, const uint8_t* table) {
    last_ = nullptr;
    if (!c_.nhwc || own_ == Own::none) return false;
    Prepared* p = prepareNhwc(ctx);
    if (!p || !p->ok || p->own == Own::none) return false;
    last_ = p;
    runOwn(ctx, *p, nullptr, table);
    return true;
  }

  std::string primitive() const override {
    if (!last_) return std::string();
    if (last_->own == Own::dw) return last_->dw.k == 5 ? kOwnDepthwise5Name : kOwnDepthwiseName;
    if (last_->own == Own::few) return kOwnFewName;
    if (last_->own == Own::pw) {  // "+amx": its 16-pixel tiles multiply on AMX (pw::amxFits)
      const std::string name = std::string(kOwnPointwiseName) + (pw::amxFits(last_->pw.ic, last_->pw.oc) ? "+amx" : "");
      return last_->one_thread ? name + kOneThreadSuffix : name;
    }
    if (!last_->parts.empty())  // f32 mode in parts: "jit:avx2 x 3 parts"
      return std::string(last_->parts[0].pd.impl_info_str()) + " x " + std::to_string(last_->parts.size()) + " parts";
    return std::string(last_->pd.impl_info_str()) + (last_->one_thread ? kOneThreadSuffix : "");
  }

 private:
  static constexpr const char* kOwnDepthwiseName = "lwc_dw3x3_int8:avx512_vnni_vbmi";
  static constexpr const char* kOwnDepthwise5Name = "lwc_dw5x5_int8:avx512_vnni_vbmi";
  static constexpr const char* kOwnFewName = "lwc_few_ic_int8:avx512_vnni";
  static constexpr const char* kOwnPointwiseName = "lwc_pw_int8:avx512_vnni";

  /// lwc's own kernels, shapes permitting: `dw` (dw_int8.h), a 3x3 or 5x5 depthwise QLinearConv, on CPUs
  /// with AVX-512 VNNI and VBMI (oneDNN 2.6's int8 depthwise kernel, the only fast one it lists on
  /// such CPUs, was slower than its float one there); `few` (few_int8.h), a convolution over few
  /// input channels, on CPUs with AVX-512 VNNI; `pw` (pw_int8.h), a small pointwise convolution, on
  /// CPUs with AVX-512 VNNI. All on NHWC tensors.
  enum class Own { none, dw, few, pw };
  Own ownKernel() const {
    if (!c_.nhwc || !c_.in.qlinear || c_.f32 || c_.w_shape.size() != 4) return Own::none;
    static const bool dw_cpu = dw::available(), few_cpu = few::available(), pw_cpu = pw::available();
    const int64_t group = node_.attrInt("group", 1), icg = c_.w_shape[1], kh = c_.w_shape[2], kw = c_.w_shape[3];
    if (dw_cpu && group == c_.w_shape[0] && icg == 1 && kh == kw && (kh == 3 || kh == 5)) return Own::dw;
    if (few_cpu && group == 1 && few::fits(icg, kh, kw)) return Own::few;
    if (pw_cpu && group == 1 && kh == 1 && kw == 1) return Own::pw;
    return Own::none;
  }

  // The requantization constants of an own kernel for this call: bias - x_zp * sum(w) per output
  // channel (wrapping, as the reference's int32 sums) and the reference's bounds.
  // With constant zero points and bias (as quantized models have) they are the same on every call
  // and are worked out once: for a 4x4 layer at batch 1 the per-call loop over the output channels
  // was a visible part of the call.
  int8k::Requant ownRequant(KernelContext& ctx) {
    const bool fixed = c_.x_zp.value && c_.y_zp.value && (!c_.bias || c_.bias_const);
    if (fixed && own_fixed_) return *own_fixed_;
    const int32_t x_zp = c_.x_zp.at(ctx, c_.in.x_zp), y_zp = c_.y_zp.at(ctx, c_.in.y_zp);
    const int64_t oc = c_.w_shape[0];
    const int32_t* bias = c_.bias ? ctx.in(c_.in.bias).data<int32_t>() : zero_bias_.data();
    own_bias_.resize(static_cast<size_t>(oc));
    for (int64_t m = 0; m < oc; ++m)
      own_bias_[static_cast<size_t>(m)] = static_cast<int32_t>(static_cast<uint32_t>(bias[m]) -
                                                               static_cast<uint32_t>(x_zp) * static_cast<uint32_t>(own_wsum_[static_cast<size_t>(m)]));
    const quant::QRange yr = quant::qrange(c_.y_type, ctx, "y_zero_point");
    int8k::Requant q;
    q.bias_eff = own_bias_.data();
    q.mul = mul_.data();
    q.flo = static_cast<float>(yr.lo - y_zp);
    q.fhi = static_cast<float>(yr.hi - y_zp);
    q.y_zp = y_zp;
    q.x_zp = static_cast<uint8_t>(x_zp);
    q.lo = static_cast<int32_t>(yr.lo);
    q.hi = static_cast<int32_t>(yr.hi);
    q.y_signed = c_.y_type == DType::Int8;
    q.sat = int8k::saturationExact(q.bias_eff, q.mul, own_wabs_.data(), oc);
    if (fixed) own_fixed_ = q;
    return q;
  }

  // Bytes of output an own kernel writes before a fused lookup (runWithLut) passes over them: small
  // enough to be still in the L2 cache, large enough that the depthwise kernel's input rows are
  // seldom regrouped twice (each piece starts its ring afresh).
  static constexpr int64_t kLutPiece = 256 << 10;

  // y = requantize(bias + sum (x - x_zp) * w) by an own kernel over the output rows; the same
  // arithmetic as the reference (see dw_int8.h, few_int8.h), so the same bytes.
  // `add`: the residual add fused into the pointwise kernel (runFusedAdd); pw only.
  // `lut`: a lookup applied to the outputs (runWithLut), piece by piece on each thread.
  void runOwn(KernelContext& ctx, const Prepared& p, const pw::Add* add = nullptr, const uint8_t* lut = nullptr) {
    const Tensor& x = ctx.in(0);
    const int8k::Requant q = ownRequant(ctx);
    Tensor& y = ctx.allocUninit(0, c_.y_type, nhwcOutShape(p));
    const uint8_t* xd = x.data<uint8_t>();
    auto* yd = static_cast<uint8_t*>(y.raw());
    const bool parallel = y.numel() >= (1 << 15);
    // Units [u0, u1) of `unit_bytes` output bytes each, by run(a, b) on pieces followed by the lookup.
    auto pieces = [&](int64_t u0, int64_t u1, int64_t unit_bytes, int64_t align, auto&& run) {
      if (!lut) return run(u0, u1);
      const int64_t step = std::max<int64_t>(align, kLutPiece / std::max<int64_t>(1, unit_bytes) / align * align);
      for (int64_t a = u0; a < u1; a += step) {
        const int64_t b = std::min(u1, a + step);
        run(a, b);
        quant::lookupBytes(yd + a * unit_bytes, lut, yd + a * unit_bytes, (b - a) * unit_bytes);
      }
    };
    if (p.own == Own::dw) {
      const dw::Geometry& g = p.dw;
      parallelRanges(g.n * g.oh, parallel, [&](int64_t r0, int64_t r1) {
        pieces(r0, r1, g.ow * g.c, 1, [&](int64_t a, int64_t b) { dw::runRows(g, xd, own_w_.data(), q, yd, a, b); });
      });
      return;
    }
    if (p.own == Own::pw) {
      auto px = [&](int64_t a, int64_t b) { pw::runPixels(p.pw, xd, own_w_.data(), q, yd, a, b, add); };
      if (p.one_thread) return pieces(0, p.pw.pixels, p.pw.oc, 64, px);
      parallelRanges((p.pw.pixels + 63) / 64, true, [&](int64_t c0, int64_t c1) {
        pieces(c0 * 64, std::min(p.pw.pixels, c1 * 64), p.pw.oc, 64, px);
      });
      return;
    }
    const few::Geometry& g = p.few;
    few_pad_.resize(few::paddedBytes(g));
    few::pad(g, xd, q.x_zp, few_pad_.data());
    parallelRanges(g.n * g.oh, parallel, [&](int64_t r0, int64_t r1) {
      pieces(r0, r1, g.ow * g.oc, 1,
             [&](int64_t a, int64_t b) { few::runRows(g, few_pad_.data(), own_w_.data(), q, yd, a, b); });
    });
  }

  // NHWC in, NHWC out: no reorders. Where oneDNN has no fast primitive (or the inputs are not what
  // it was prepared for), the reference runs on NCHW copies.
  // The prepared form for this call's NHWC input; null where the inputs are not what the fast
  // paths take (runnable).
  Prepared* prepareNhwc(KernelContext& ctx) {
    const Tensor& x = ctx.in(0);
    if (x.rank() != 4) ctx.error("expects a 4-D NHWC input, got ", shapeStr(x.shape()));
    const std::array<int64_t, 4> xs{x.dim(0), x.dim(3), x.dim(1), x.dim(2)};
    return runnable(ctx) ? &prepare(xs, x.dtype()) : nullptr;
  }
  static Shape nhwcOutShape(const Prepared& p) {
    const Shape& ys = p.out_shape;
    return Shape{ys[0], ys[2], ys[3], ys[1]};
  }

  void runNhwc(KernelContext& ctx) {
    const Tensor& x = ctx.in(0);
    Prepared* p = prepareNhwc(ctx);
    if (!p || !p->ok) return qlinearConvNhwcReference(ctx);
    last_ = p;
    if (p->own != Own::none) return runOwn(ctx, *p);
    if (c_.f32) return p->parts.empty() ? runF32(ctx, *p) : runF32Parts(ctx, *p);
    Tensor& y = ctx.allocUninit(0, c_.y_type, nhwcOutShape(*p));
    auto& eng = cpuEngine();
    dnnl::stream& s = cpuStream();
    // Memory objects are made once per prepared shape and re-pointed per call: creating them costs
    // microseconds, which add up over the many small convolutions of a batch-1 run.
    if (!p->x_mem) {
      p->x_mem = memory(p->pd.src_desc(), eng, nullptr);
      p->y_mem = memory(p->pd.dst_desc(), eng, nullptr);
      if (c_.bias) p->b_mem = memory(memory::desc({c_.w_shape[0]}, dt::s32, tag::a), eng, nullptr);
    }
    p->x_mem.set_data_handle(const_cast<void*>(x.raw()));
    p->y_mem.set_data_handle(y.raw());
    ExecArgs args{{DNNL_ARG_SRC, &p->x_mem}, {DNNL_ARG_WEIGHTS, &p->w_mem}, {DNNL_ARG_DST, &p->y_mem}};
    if (c_.bias) {
      p->b_mem.set_data_handle(const_cast<void*>(ctx.in(c_.in.bias).raw()));
      args.add(DNNL_ARG_BIAS, p->b_mem);
    }
    if (c_.x_zp.runtime()) zps_.add(args, DNNL_ARG_SRC, c_.x_zp.at(ctx, c_.in.x_zp));
    if (c_.y_zp.runtime()) zps_.add(args, DNNL_ARG_DST, c_.y_zp.at(ctx, c_.in.y_zp));
    const SingleThreadIf one(p->one_thread);
    args.execute(p->prim, s);
    s.wait();
  }

  // fp32 convolution of (x - x_zp) and (w - w_zp), both exact small integers in float32; every
  // partial sum is an integer of magnitude <= max|x - x_zp| * max sum|w - w_zp| <= 2^24 (checked by
  // the factory), so the float result is the integer accumulator whatever the summation order.
  // Then acc += bias and y = saturate(rne(float(acc) * M) + y_zp), the reference's own arithmetic:
  // bit-identical to it.
  void runF32(KernelContext& ctx, Prepared& p) {
    const Tensor& x = ctx.in(0);
    const int32_t x_zp = c_.x_zp.at(ctx, c_.in.x_zp), y_zp = c_.y_zp.at(ctx, c_.in.y_zp);
    Tensor& y = ctx.allocUninit(0, c_.y_type, nhwcOutShape(p));
    const int64_t nx = x.numel(), ny = y.numel(), oc = p.out_shape[1];
    xf_.resize(static_cast<size_t>(nx));
    yf_.resize(static_cast<size_t>(ny));
    float* xf = xf_.data();
    if (x.dtype() == DType::UInt8) centre(x.data<uint8_t>(), xf, nx, x_zp);
    else centre(x.data<int8_t>(), xf, nx, x_zp);
    if (!p.x_mem) {
      p.x_mem = memory(p.pd.src_desc(), cpuEngine(), nullptr);
      p.y_mem = memory(p.pd.dst_desc(), cpuEngine(), nullptr);
    }
    execF32(p.prim, p.w_mem, p.x_mem, p.y_mem, xf, yf_.data());
    requantOut(ctx, y, yf_.data(), y_zp, oc);
  }

  // f32 mode's output: y = the reference's requantization of bias + acc, acc the accumulators
  // (float, exact integers below 2^24 in magnitude; or int32, the sum of several parts), per
  // pixel of oc channels. quant::requantizeValue written out per row so that it vectorises: bias
  // is added in int32 with wrap-around, then rne(clamp(float(acc) * M)) + y_zp (clamping first is
  // the same, the bounds are integers).
  template <typename A>
  void requantOut(KernelContext& ctx, Tensor& y, const A* acc, int32_t y_zp, int64_t oc) const {
    const int32_t* bias = c_.bias ? ctx.in(c_.in.bias).data<int32_t>() : zero_bias_.data();
    const float* mul = mul_.data();
    const quant::QRange yr = quant::qrange(c_.y_type, ctx, "y_zero_point");
    const float flo = static_cast<float>(yr.lo - y_zp), fhi = static_cast<float>(yr.hi - y_zp);
    const int64_t ny = y.numel();
    auto emit = [&](auto* dst) {
      parallelFor(ny / oc, ny >= (1 << 16),
                  [&](int64_t px) { requantRow(acc + px * oc, bias, mul, dst + px * oc, oc, flo, fhi, y_zp); });
    };
    if (c_.y_type == DType::UInt8) emit(y.data<uint8_t>());
    else emit(y.data<int8_t>());
  }

 public:

 private:
  /// One part of the input channels in f32 mode (buildF32Parts).
  struct F32Part {
    dnnl::convolution_forward::primitive_desc pd;
    dnnl::convolution_forward prim;
    memory w_mem, x_mem, y_mem;
  };
  struct Prepared {
    bool ok = false;
    std::vector<F32Part> parts;  ///< f32 mode in several parts; empty: one primitive (pd, prim)
    Own own = Own::none;  ///< dw: dw::runRows with `dw`; few: few::runRows with `few`; pw: pw::runPixels with `pw`; none: oneDNN
    dw::Geometry dw;
    few::Geometry few;
    pw::Geometry pw;
    dnnl::convolution_forward::primitive_desc pd;
    dnnl::convolution_forward prim;
    memory::desc x_plain, y_plain;
    memory w_mem;
    memory x_mem, y_mem, b_mem;  ///< NHWC path: created on first use, re-pointed per call
    Shape out_shape;
    bool one_thread = false;  ///< made and run on one thread (oneThreadCall)
  };

  void reference(KernelContext& ctx) const { c_.in.qlinear ? quant::qlinearConv(ctx) : quant::convInteger(ctx); }

  // Runtime inputs the primitive covers; anything else goes to the reference (which may raise).
  bool runnable(const KernelContext& ctx) const {
    const Tensor& x = ctx.in(0);
    if (x.rank() != 4 || !is8(x.dtype()) || x.numel() == 0) return false;
    if (c_.u8_only && x.dtype() != DType::UInt8) return false;
    if (c_.x_zp.present) {
      const Tensor& z = ctx.in(c_.in.x_zp);
      if (!single(z) || z.dtype() != x.dtype()) return false;
    }
    if (c_.in.qlinear) {
      const Tensor& z = ctx.in(c_.in.y_zp);
      if (!single(z) || z.dtype() != c_.y_type) return false;
    }
    if (c_.bias) {
      const Tensor& b = ctx.in(c_.in.bias);
      if (b.dtype() != DType::Int32 || b.rank() != 1 || b.dim(0) != c_.w_shape[0]) return false;
    }
    return true;
  }

  Prepared& prepare(std::span<const int64_t> xs, DType xt) {
    auto it = cache_.find(std::make_pair(xs, xt));  // no copy of the shape to look it up
    if (it != cache_.end()) return it->second;
    const Shape shape(xs.begin(), xs.end());
    Prepared p;
    try {
      p = build(shape, xt);
    } catch (const std::exception&) {
      p.ok = false;  // bad attributes or shapes, or no oneDNN primitive: the reference decides
    }
    return cache_.emplace(std::make_pair(shape, xt), std::move(p)).first->second;
  }

  Prepared build(const Shape& xs, DType xt) const {
    const ConvParams cp = parseConvParams(node_, xs, c_.w_shape);  // shared with the fp32 paths
    const WindowGeometry& geo = cp.geo;
    Prepared p;
    if (geo.rank() != 2) return p;
    const memory::dims strides(geo.strides.begin(), geo.strides.end());
    const memory::dims pad_l(geo.pads_begin.begin(), geo.pads_begin.end()), pad_r(geo.pads_end.begin(), geo.pads_end.end());
    memory::dims dil;
    for (auto d : geo.dilations) dil.push_back(d - 1);  // oneDNN counts dilation from 0
    const int64_t oc = c_.w_shape[0], icg = c_.w_shape[1], kh = c_.w_shape[2], kw = c_.w_shape[3], group = cp.group;
    // The own depthwise kernel for every stride-1 layer, and strided ones of up to 2^18 outputs.
    // Per-node profiles in the networks (2026-12-05, 2-core AMX Xeon, the lower of two runs, own
    // against oneDNN's jit_int8): stride 1 0.67-0.79 on mnv2_fmnist's 28x28 and 14x14 layers at
    // batch 1 and 32, 0.82-0.95 on mobilenet_v2's at batch 1, level at batch 8 (0.88-1.06, its
    // 112x112 layer 1.00), mnasnet1_0 0.68-1.00, shufflenet_v2 0.56-0.75; strided ones won on small
    // calls (mnv2_fmnist's 14x14 -> 7x7 at batch 32, 1.5e5 outputs, 0.86; shufflenet_v2's 0.50-0.73)
    // and lost on larger ones (28x28 -> 14x14 at batch 32, 3.0e5 outputs, 1.10; mobilenet_v2's
    // 112x112 -> 56x56 at batch 8 1.08). 5x5 layers take it at any size (efficientnet_b0 at batch
    // 32: the stride-1 ones 0.66-0.91 of oneDNN's time, the stride-2 ones 0.90-0.95, 3.6e6 and
    // 2.0e5 outputs; at batch 1 all of them 0.67-0.89).
    const bool own_ok = xt == DType::UInt8 && geo.dilations[0] == 1 && geo.dilations[1] == 1;
    const bool own_dw_size = (geo.strides[0] == 1 && geo.strides[1] == 1) || kh == 5
                                 ? true
                                 : xs[0] * geo.out[0] * geo.out[1] * oc <= (int64_t{1} << 18);
    if (own_ == Own::dw && own_ok && group == oc && xs[1] == oc && own_dw_size && dw::fits(kh, geo.strides[1])) {
      p.own = Own::dw;
      p.dw = dw::Geometry{xs[0], xs[2], xs[3], oc, geo.out[0], geo.out[1],
                          geo.strides[0], geo.strides[1], geo.pads_begin[0], geo.pads_begin[1], kh};
      p.out_shape = cp.outShape();
      p.ok = true;
      return p;
    }
    if (own_ == Own::few && own_ok && group == 1 && xs[1] == icg) {
      p.own = Own::few;
      p.few = few::Geometry{xs[0], xs[2], xs[3], icg, oc, kh, kw, geo.out[0], geo.out[1],
                            geo.strides[0], geo.strides[1], geo.pads_begin[0], geo.pads_begin[1]};
      p.out_shape = cp.outShape();
      p.ok = true;
      return p;
    }
    // The own pointwise kernel where oneDNN's call would run on one thread (oneThreadCall): there
    // its fixed cost was most of the time (pw_int8.h). On larger calls, over all threads, where the
    // weights fit the L1 cache (ic * oc <= 32 K) and the output channels fill whole blocks of 16 (so
    // four sums are requantized at a time): per-node profiles (2026-12-05, 2-core AMX Xeon) gave
    // 0.64-0.98 of oneDNN's time on mnv2_fmnist at batch 32 (the residual adds fused in: 0.64-0.96)
    // and 0.75-0.87 on mobilenet_v2's layers of up to 24.6 K weights at batch 1, while larger
    // weights lost (576 -> 96 1.25, 960 -> 160 1.5-1.7, 960 -> 320 2.1: reloaded from L2 for every
    // tile of pixels) and 16 -> 8 on 28x28 (a partial block) 1.36. Eight output channels now take
    // two pixels per vector (pw_int8.cpp, pairTiles): that layer at batch 32 0.035 -> 0.016 ms.
    // On CPUs with AMX (pw::amxFits) the own kernel multiplies 16-pixel tiles on AMX and also takes
    // every layer on which oneDNN would run its VNNI kernel (dnnlKeepsAmx false): per-node profiles
    // (2026-12-05, AMX Xeon, the lower of two runs, own AMX against oneDNN or the own vpdpbusd
    // tiles) gave 0.52-0.92 on mnv2_fmnist's layers at batch 32 (160 -> 1280 0.048 -> 0.030 ms,
    // 480 -> 80 with its add 0.015 -> 0.009), 0.57-1.00 on mobilenet_v2's at batch 1 and 0.54-1.01
    // at batch 32. Where oneDNN keeps its own AMX kernel (large layers) ours lost (960 -> 320 at
    // batch 32 1.49, 576 -> 96 1.13-1.19: every 16 pixels reload all weights), so those stay.
    const int64_t macs = xs[0] * geo.out[0] * geo.out[1] * icg * oc * kh * kw;
    const bool unit = geo.strides[0] == 1 && geo.strides[1] == 1 && geo.pads_begin[0] == 0 && geo.pads_begin[1] == 0 &&
                      geo.pads_end[0] == 0 && geo.pads_end[1] == 0;
    const bool one_thread = oneThreadCall(macs, false);
    if (own_ == Own::pw && own_ok && unit && group == 1 && xs[1] == icg &&
        (one_thread || ((oc % 16 == 0 || oc == 8) && icg * oc <= (int64_t{1} << 15)) ||
         (pw::amxFits(icg, oc) && !dnnlKeepsAmx(icg, oc, macs, true)))) {
      p.own = Own::pw;
      p.pw = pw::Geometry{xs[0] * xs[2] * xs[3], icg, oc};
      p.one_thread = one_thread;
      p.out_shape = cp.outShape();
      p.ok = true;
      return p;
    }
    // Folds pointwise convolutions (see convDims); NCHW with one pixel per image has the NHWC bytes.
    const auto [xd, yd] = convDims(xs, oc, kh, kw, geo.strides, geo.pads_begin, geo.pads_end, geo.out,
                                   c_.nhwc || xs[2] * xs[3] == 1);
    const memory::dims wd = group == 1 ? memory::dims{oc, icg, kh, kw} : memory::dims{group, oc / group, icg, kh, kw};
    const dt xdt = c_.f32 ? dt::f32 : dnnlType(xt), ydt = c_.f32 ? dt::f32 : dnnlType(c_.y_type), wdt = c_.f32 ? dt::f32 : dt::s8;
    const memory::desc x_md(xd, xdt, tag::nhwc), y_md(yd, ydt, tag::nhwc), w_any(wd, wdt, tag::any);
    const memory::desc b_md = c_.bias && !c_.f32 ? memory::desc({oc}, dt::s32, tag::a) : memory::desc();
    p.x_plain = memory::desc(xd, xdt, tag::nchw);
    p.y_plain = memory::desc(yd, ydt, tag::nchw);
    if (c_.f32 && c_.f32_parts.size() > 2) return buildF32Parts(std::move(p), cp, xd, y_md, strides, dil, pad_l, pad_r);
    dnnl::primitive_attr attr;  // f32 mode: none, scales, zero points and bias are applied around it
    if (!c_.f32) {
      if (c_.in.qlinear) {
        const bool per_channel = c_.scales.size() > 1;
        attr.set_output_scales(per_channel ? 1 << 1 : 0, c_.scales);
        setZeroPoint(attr, DNNL_ARG_DST, c_.y_zp);
      }
      setZeroPoint(attr, DNNL_ARG_SRC, c_.x_zp);
    }
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, x_md,
                                      w_any, b_md, y_md, strides, dil, pad_l, pad_r);
    auto& eng = cpuEngine();
    p.one_thread = !c_.f32 && oneThreadCall(macs, group > 1 && icg == 1);  // f32 mode: float kernels
    const SingleThreadIf one(p.one_thread);  // the primitive plans its threads when it is made
    p.pd = dnnl::convolution_forward::primitive_desc(d, attr, eng);
    if (group == oc && icg == 1 && !c_.f32) preferImpl(p.pd, "brdgmm_dw", "jit_int8:");
    if (kh == 1 && kw == 1 && !c_.f32) preferImpl(p.pd, "brgconv_1x1:", "jit_int8_1x1:");
    if (!c_.f32) avoidSmallAmx(p.pd, icg, oc, macs, kh * kw == 1);
    if (isRef(p.pd.impl_info_str()) || !avoidAmx1x1Overrun(p.pd, yd[2] * yd[3])) return p;  // pixels as oneDNN sees them
    p.prim = dnnl::convolution_forward(p.pd);
    std::vector<float> wf;
    if (c_.f32) wf.assign(c_.w.w.begin(), c_.w.w.end());
    memory w_user(memory::desc(wd, wdt, group == 1 ? tag::oihw : tag::goihw), eng,
                  c_.f32 ? static_cast<void*>(wf.data()) : static_cast<void*>(const_cast<int8_t*>(c_.w.w.data())));
    p.w_mem = memory(p.pd.weights_desc(), eng);
    dnnl::stream& s = cpuStream();
    dnnl::reorder(w_user, p.w_mem).execute(s, w_user, p.w_mem);
    s.wait();
    p.out_shape = cp.outShape();
    p.ok = true;
    return p;
  }

  // f32 mode in several parts: one fp32 convolution per part of the input channels (its slice of
  // the weights), each writing the same float output, which runF32Parts adds up in int32.
  Prepared buildF32Parts(Prepared p, const ConvParams& conv, const memory::dims& xd, const memory::desc& y_md,
                         const memory::dims& strides, const memory::dims& dil, const memory::dims& pad_l,
                         const memory::dims& pad_r) const {
    auto& eng = cpuEngine();
    dnnl::stream& s = cpuStream();
    const int64_t oc = c_.w_shape[0], icg = c_.w_shape[1], kh = c_.w_shape[2], kw = c_.w_shape[3], taps = kh * kw;
    for (size_t k = 0; k + 1 < c_.f32_parts.size(); ++k) {
      const int64_t c0 = c_.f32_parts[k], n = c_.f32_parts[k + 1] - c0;
      memory::dims xk = xd;
      xk[1] = n;
      const memory::desc x_md(xk, dt::f32, tag::nhwc), w_any({oc, n, kh, kw}, dt::f32, tag::any);
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                        x_md, w_any, memory::desc(), y_md, strides, dil, pad_l, pad_r);
      F32Part part;
      part.pd = dnnl::convolution_forward::primitive_desc(d, eng);
      if (isRef(part.pd.impl_info_str())) return Prepared{};
      part.prim = dnnl::convolution_forward(part.pd);
      std::vector<float> wf(static_cast<size_t>(oc * n * taps));
      for (int64_t m = 0; m < oc; ++m)
        for (int64_t i = 0; i < n * taps; ++i) wf[(m * n) * taps + i] = c_.w.w[(m * icg + c0) * taps + i];
      memory w_user(memory::desc({oc, n, kh, kw}, dt::f32, tag::oihw), eng, wf.data());
      part.w_mem = memory(part.pd.weights_desc(), eng);
      dnnl::reorder(w_user, part.w_mem).execute(s, w_user, part.w_mem);
      s.wait();
      part.x_mem = memory(part.pd.src_desc(), eng, nullptr);
      part.y_mem = memory(part.pd.dst_desc(), eng, nullptr);
      p.parts.push_back(std::move(part));
    }
    p.out_shape = conv.outShape();
    p.ok = true;
    return p;
  }

  // runF32 with the input channels in parts (exactF32Parts): each part's channels are centred into
  // their own NHWC buffer and convolved with their slice of the weights; every part's result is an
  // exact integer, and the parts add up in int32 (wrapping, as the reference's sums). Then the
  // reference's requantization: bit-identical to it.
  void runF32Parts(KernelContext& ctx, Prepared& p) {
    const Tensor& x = ctx.in(0);
    const int32_t x_zp = c_.x_zp.at(ctx, c_.in.x_zp), y_zp = c_.y_zp.at(ctx, c_.in.y_zp);
    Tensor& y = ctx.allocUninit(0, c_.y_type, nhwcOutShape(p));
    const int64_t ny = y.numel(), oc = p.out_shape[1], ch = x.dim(3), px_in = x.numel() / ch;
    yf_.resize(static_cast<size_t>(ny));
    acc_.resize(static_cast<size_t>(ny));
    const bool par_in = x.numel() >= (1 << 16), par_out = ny >= (1 << 16);
    for (size_t k = 0; k < p.parts.size(); ++k) {
      F32Part& part = p.parts[k];
      const int64_t c0 = c_.f32_parts[k], n = c_.f32_parts[k + 1] - c0;
      xf_.resize(static_cast<size_t>(px_in * n));
      centreColumns(x, px_in, ch, c0, n, x_zp, xf_.data(), par_in);
      execF32(part.prim, part.w_mem, part.x_mem, part.y_mem, xf_.data(), yf_.data());
      addPart(yf_.data(), acc_.data(), ny, k == 0, par_out);
    }
    requantOut(ctx, y, acc_.data(), y_zp, oc);
  }

  Node node_;
  Config c_;
  /// Orders (shape, type) keys and looks them up by a view of the shape.
  struct ShapeKeyLess {
    using is_transparent = void;
    using View = std::pair<std::span<const int64_t>, DType>;
    static View view(const std::pair<Shape, DType>& k) { return {k.first, k.second}; }
    static View view(const View& k) { return k; }
    template <typename A, typename B>
    bool operator()(const A& a, const B& b) const {
      const View x = view(a), y = view(b);
      const ShapeLess less;
      if (less(x.first, y.first)) return true;
      if (less(y.first, x.first)) return false;
      return x.second < y.second;
    }
  };
  std::map<std::pair<Shape, DType>, Prepared, ShapeKeyLess> cache_;
  const Prepared* last_ = nullptr;  ///< what the last call ran (map nodes do not move); null: the reference
  RuntimeZeroPoints zps_;  ///< runtime zero points of the oneDNN calls
  std::vector<float> xf_, yf_;  ///< f32 mode: centred input and float accumulators (NHWC)
  std::vector<int32_t> acc_;    ///< f32 mode in parts: the parts' sums
  std::vector<float> mul_;      ///< f32 mode and own kernels: multiplier per output channel
  std::vector<int32_t> zero_bias_;
  Own own_ = Own::none;             ///< the own kernel this node's weights are packed for
  std::vector<int8_t> own_w_;       ///< own kernel: packed weights (dw::packWeights, few::packWeights)
  std::vector<int32_t> own_wsum_;   ///< own kernel: sum of each output channel's weights
  std::vector<int64_t> own_wabs_;   ///< own kernel: sum of each output channel's absolute weights
  std::vector<int32_t> own_bias_;   ///< own kernel: bias - x_zp * sum(w), per call (or once, see ownRequant)
  std::optional<int8k::Requant> own_fixed_;  ///< own kernel: the constants, where they cannot change
  std::vector<uint8_t> few_pad_;    ///< few: the input framed by its zero point, per call
};

/// Per-output-channel parameter as the reference accepts it: a single value or a 1-D tensor of M.
bool perChannelShape(const Tensor& t, int64_t m) { return single(t) || (t.rank() == 1 && t.dim(0) == m); }

std::unique_ptr<Kernel> makeQConv(const KernelInfo& info, const QConvInputs& in, bool nhwc = false) {
  const Node& n = info.node;
  const Tensor* w = info.constant(in.w);
  if (!w || !is8(w->dtype()) || w->rank() != 4 || w->numel() == 0) return nullptr;
  const int64_t M = w->dim(0);
  const int64_t group = n.attrInt("group", 1);
  if (group < 1 || M % group != 0) return nullptr;
  const auto ks = n.attrInts("kernel_shape", {w->dim(2), w->dim(3)});
  if (ks.size() != 2 || ks[0] != w->dim(2) || ks[1] != w->dim(3)) return nullptr;
  if (n.attrInts("strides", {1, 1}).size() != 2 || n.attrInts("dilations", {1, 1}).size() != 2) return nullptr;

  const DType xt = inputType(info, 0);
  if (xt != DType::Undefined && !is8(xt)) return nullptr;
  const auto* x_info = info.input_types.empty() ? nullptr : info.input_types[0];
  if (x_info && x_info->shape && x_info->shape->size() != 4) return nullptr;

  DnnlQConv::Config c;
  c.in = in;
  c.w_shape = w->shape();
  const auto x_zp = zeroPoint(info, in.x_zp);
  if (!x_zp) return nullptr;
  c.x_zp = *x_zp;
  const DType x_type = xt != DType::Undefined ? xt : x_zp->present && info.constant(in.x_zp) ? info.constant(in.x_zp)->dtype()
                                                                                             : DType::Undefined;

  // Weight zero point: constant, per tensor or per output channel, of the weights' type.
  std::vector<int32_t> w_zp{0};
  const Tensor* wzp_t = info.hasInput(in.w + 2) ? info.constant(in.w + 2) : nullptr;
  if (info.hasInput(in.w + 2)) {
    if (!wzp_t || wzp_t->dtype() != w->dtype() || !perChannelShape(*wzp_t, M)) return nullptr;
    w_zp = intValues(*wzp_t);
  }
  const int64_t per_out = w->numel() / M;
  auto shifted = shiftWeights(
      *w, M, [&](int64_t i) { return w_zp[w_zp.size() == 1 ? 0 : i / per_out]; },
      [&](int64_t i) { return i / per_out; });
  if (!shifted) return nullptr;
  c.w = std::move(*shifted);
  // Where oneDNN's int8 kernels would not be exact, only the NHWC QLinearConv has a fast path:
  // fp32, exact (DnnlQConv::runF32).
  const bool f32 = !int8Exact(x_type, c.w);
  if (f32 && !(nhwc && in.qlinear)) return nullptr;
  c.u8_only = !f32 && !haveVnni();

  if (in.qlinear) {
    const Tensor *xs_t = info.constant(1), *ws_t = info.constant(4), *ys_t = info.constant(6);
    if (!xs_t || !ws_t || !ys_t || !wzp_t || !single(*xs_t) || !single(*ys_t) || !perChannelShape(*ws_t, M)) return nullptr;
    // The reference pairs w_scale with w_zero_point: both single, or the same shape.
    if (!((wzp_t->numel() == 1 && ws_t->numel() == 1) || wzp_t->shape() == ws_t->shape())) return nullptr;
    const auto xs = constScales(xs_t), ws = constScales(ws_t), ys = constScales(ys_t);
    if (!xs || !ws || !ys) return nullptr;
    for (float s : *ws) c.scales.push_back(quant::requantMultiplier((*xs)[0], s, (*ys)[0]));
    const auto y_zp = zeroPoint(info, in.y_zp);
    if (!y_zp) return nullptr;
    c.y_zp = *y_zp;
    c.y_type = inputType(info, in.y_zp);
    if (!is8(c.y_type)) return nullptr;
    if (info.hasInput(in.bias)) {
      const DType bt = inputType(info, in.bias);
      if (bt != DType::Undefined && bt != DType::Int32) return nullptr;
      c.bias = true;
      c.bias_const = info.constant(in.bias) != nullptr;
    }
  }
  // int32 output (oneDNN's float post-processing) and the fp32 path: exact only while every
  // accumulator stays within float32's integers.
  // The fp32 path splits the input channels into parts whose sums stay exact (exactF32Parts) and
  // adds the parts' integer results.
  if (!in.qlinear && maxCentered(x_type, c.x_zp.value) * c.w.max_abs_sum > kExactAcc) return nullptr;
  if (f32) {
    c.f32_parts = convF32Parts(c.w, c.w_shape, group, centredRange(x_type, c.x_zp.value));
    if (c.f32_parts.empty()) return nullptr;
  }
  c.f32 = f32;
  c.nhwc = nhwc;
  auto k = std::make_unique<DnnlQConv>(n, std::move(c));
  if (nhwc) return k;  // input types describe NCHW values; the kernel falls back itself
  // With a fully known input shape, decline now if oneDNN would run it with a slow implementation.
  if (x_info && x_info->shape && is8(xt)) {
    Shape xs;
    for (const Dim& d : *x_info->shape) xs.push_back(d.value);
    const bool known = std::all_of(xs.begin(), xs.end(), [](int64_t v) { return v > 0; });
    if (known && !k->probe(xs, xt)) return nullptr;
  }
  return k;
}

// ---------------------------------------------------------------------------------------------
// QLinearMatMul and MatMulInteger: Y[..., N] = A[..., K] x B[K, N], A's leading dims flattened.

/// QLinearMatMul (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp), lwc.internal.QLinearMatMul (the
/// same and a float bias per column), lwc.internal.MatMulIntegerToFloat (a, a_scale, a_zp, b,
/// b_scale, b_zp, bias: float output, acc * a_scale * b_scale + bias) and MatMulInteger (A, B, a_zp, b_zp).
struct QMatMulInputs {
  bool qlinear;  ///< scales at inputs 1 and 4 (and 6 unless float_out)
  size_t a_zp, b, b_zp, y_zp;
  size_t bias = 0;  ///< 0: none
  bool float_out = false;
  size_t scale = 0;  ///< lwc.internal.MatMulIntegerScaled's scale (0: not that op)
};
constexpr QMatMulInputs kQLinearMatMul{true, 2, 3, 5, 7};
constexpr QMatMulInputs kQLinearMatMulBias{true, 2, 3, 5, 7, 8};
constexpr QMatMulInputs kMatMulIntegerToFloat{true, 2, 3, 5, 0, 6, true};
constexpr QMatMulInputs kMatMulInteger{false, 2, 1, 3, 0};
/// lwc.internal.MatMulIntegerScaled (A, B, a_zp, b_zp, scale [, bias]): float(acc) * scale [+ bias].
constexpr QMatMulInputs kMatMulIntegerScaled{false, 2, 1, 3, 0, 5, false, 4};

/// The reference kernel of the matrix product `in` names.
void qMatMulReference(KernelContext& ctx, const QMatMulInputs& in) {
  if (in.scale) return quant::matMulIntegerScaled(ctx);
  if (in.float_out) return quant::matMulIntegerToFloat(ctx);
  if (in.bias) return quant::qlinearMatMulBias(ctx, &ctx.in(in.bias));
  in.qlinear ? quant::qlinearMatMul(ctx) : quant::matMulInteger(ctx);
}

/// Whether this call's runtime inputs are what a fast matrix product prepared for A [..., k] x B
/// [k, n] covers (one zero point of A's type, one of y's, a scale and bias of the fused ops'
/// shapes); the rest goes to the reference, which may raise.
bool qMatMulRunnable(const KernelContext& ctx, const QMatMulInputs& in, const ZeroPoint& a_zp, int64_t k, int64_t n,
                     DType y_type) {
  const Tensor& a = ctx.in(0);
  if (a.rank() < 2 || a.shape().back() != k || !is8(a.dtype()) || a.numel() == 0) return false;
  if (a_zp.present) {
    const Tensor& z = ctx.in(in.a_zp);
    if (z.numel() != 1 || z.dtype() != a.dtype()) return false;
  }
  if (in.qlinear && !in.float_out) {
    const Tensor& z = ctx.in(in.y_zp);
    if (!single(z) || z.dtype() != y_type) return false;
  }
  if (in.scale) {
    const Tensor& sc = ctx.in(in.scale);
    if (sc.dtype() != DType::Float32 || !isScaledMatMulScale(sc, n)) return false;
    if (ctx.has(in.bias) && !isFusedMatMulBias(ctx.in(in.bias), n)) return false;
  }
  return true;
}

class DnnlQMatMul final : public Kernel {
 public:
  struct Config {
    QMatMulInputs in;
    int64_t k = 0, n = 0;
    ShiftedWeights b;
    std::vector<float> scales;  ///< per column or one; empty for MatMulInteger
    std::vector<float> bias;    ///< per column in accumulator units (bias / (a_scale * b_scale)); empty: none
    ZeroPoint a_zp, y_zp;
    DType y_type = DType::Int32;
    bool u8_only = false;  ///< CPUs without VNNI, 7-bit B: exact for uint8 A only
    /// MatMulInteger with a zero point of A: oneDNN multiplies the raw A (no zero point, so its
    /// int32 sums never pass through float) and the kernel subtracts a_zp * (B's column sums).
    bool zp_after = false;
    std::vector<int32_t> b_colsum;  ///< with zp_after: B's column sums
    /// int8 A whose raw sums could pass kExactAcc, where oneDNN's s8 x s8 path is not exact
    /// either: A runs as A + 128 in uint8 (zero point + 128).
    bool flip_s8 = false;
    /// MatMulIntegerToFloat whose sums could pass kExactAcc: oneDNN writes the raw int32 products
    /// (zp_after) and the kernel finishes (acc + bias) * mult per column as the reference does.
    bool float_after = false;
    std::vector<float> post_bias, post_mult;  ///< with float_after: bias / (a_scale * b_scale) (empty: none); a_scale * b_scale
  };
  explicit DnnlQMatMul(Config c) : c_(std::move(c)) {}

  void run(KernelContext& ctx) override {
    last_ = nullptr;
    const Tensor& a = ctx.in(0);
    if (!runnable(ctx)) return reference(ctx);
    const int64_t m = a.numel() / c_.k;
    const bool flip = c_.flip_s8 && a.dtype() == DType::Int8;
    Prepared& p = prepare(m, flip ? DType::UInt8 : a.dtype());
    if (!p.ok) return reference(ctx);
    last_ = &p;
    Shape ys = a.shape();
    ys.back() = c_.n;
    const bool scaled = c_.in.scale != 0, post = scaled || c_.float_after;  // float output from acc_
    Tensor& y = ctx.allocUninit(0, post ? DType::Float32 : c_.y_type, std::move(ys));
    if (post) acc_.resize(static_cast<size_t>(m * c_.n));
    dnnl::stream& s = cpuStream();
    const void* src = a.raw();
    if (flip) {
      flipped_.resize(static_cast<size_t>(a.numel()));
      const auto* a8 = static_cast<const uint8_t*>(a.raw());
      for (size_t i = 0; i < flipped_.size(); ++i) flipped_[i] = a8[i] ^ 0x80;  // int8 v -> uint8 v + 128
      src = flipped_.data();
    }
    p.a_mem.set_data_handle(const_cast<void*>(src));
    p.y_mem.set_data_handle(post ? static_cast<void*>(acc_.data()) : y.raw());
    ExecArgs args{{DNNL_ARG_SRC, &p.a_mem}, {DNNL_ARG_WEIGHTS, &p.w_mem}, {DNNL_ARG_DST, &p.y_mem}};
    if (!c_.bias.empty()) args.add(DNNL_ARG_BIAS, p.bias_mem);
    if (c_.a_zp.runtime() && !c_.zp_after) zps_.add(args, DNNL_ARG_SRC, c_.a_zp.at(ctx, c_.in.a_zp));
    if (c_.in.qlinear && !c_.in.float_out && c_.y_zp.runtime()) zps_.add(args, DNNL_ARG_DST, c_.y_zp.at(ctx, c_.in.y_zp));
    {
      const SingleThreadIf one(p.one_thread);
      args.execute(p.prim, s);
      s.wait();
    }
    const int32_t* sub = c_.zp_after ? zeroPointTerms(c_.a_zp.at(ctx, c_.in.a_zp) + (flip ? 128 : 0)) : nullptr;
    if (post) return finishFloat(ctx, y, m, sub, p.one_thread);
    if (sub) subtractZeroPoint(y, m, sub, p.one_thread);
  }

  bool probe(int64_t m, DType at) { return prepare(m, at).ok; }

  std::string primitive() const override { return last_ ? last_->impl : std::string(); }

 private:
  struct Prepared {
    bool ok = false;
    memory::desc src, dst;  ///< [m, k] and [m, n] as the primitive sees them (same bytes as row-major)
    dnnl::primitive prim;
    memory w_mem;
    memory bias_mem;  ///< over Config::bias, when there is one
    memory a_mem, y_mem;  ///< made once, re-pointed per call (creating them per call cost microseconds)
    bool one_thread = false;  ///< made and run on one thread (oneThreadCall)
    std::string impl;  ///< oneDNN's implementation name
  };

  void reference(KernelContext& ctx) const { qMatMulReference(ctx, c_.in); }

  bool runnable(const KernelContext& ctx) const {
    if (c_.u8_only && ctx.in(0).dtype() != DType::UInt8) return false;
    return qMatMulRunnable(ctx, c_.in, c_.a_zp, c_.k, c_.n, c_.y_type);
  }

  Prepared& prepare(int64_t m, DType at) {
    const auto key = std::make_pair(m, at);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    Prepared p;
    try {
      p = build(m, at);
    } catch (const std::exception&) {
      p.ok = false;
    }
    return cache_.emplace(key, std::move(p)).first->second;
  }

  // Raw products (zp_after) that could pass 2^24: oneDNN must store the int32 sums as they are.
  // Its int8 1x1 convolutions do not (they convert every accumulator to float32 and back, even
  // for an int32 output with no scales: on an AMX Xeon, where the AMX choice of a small product
  // gives way to `jit_int8_1x1:avx512_core_vnni`, 27 of 116 checks of the K = 4096 test were off);
  // its brgemm matmuls (`brg:avx512_core_vnni`, `brg:avx512_core_amx_int8`) do, as the tests with
  // sums to 1.3e8 check. Such a product takes a brgemm matmul, or the reference where there is
  // none (other matmul kernels are unverified).
  bool exactInt32() const { return c_.zp_after && 255 * c_.b.max_abs_sum > kExactAcc; }

  // A 1x1 convolution over [1, k, m, 1] NHWC (the same bytes as A [m, k]) when oneDNN has a jit
  // kernel for it: its weights are reordered into a blocked layout once, where the int8 matmul
  // of oneDNN 2.7 on CPUs without AVX-512 is a gemm that packs B on every call (mobilenet_v2's
  // 1280 x 1000 classifier at batch 1: 0.5 ms as a matmul). Otherwise the matmul (always where
  // exactInt32).
  Prepared build(int64_t m, DType at) const {
    auto& eng = cpuEngine();
    const int64_t k = c_.k, n = c_.n;
    dnnl::primitive_attr attr;
    if (c_.in.qlinear && !c_.float_after) {
      attr.set_output_scales(c_.scales.size() > 1 ? 1 << 1 : 0, c_.scales);
      setZeroPoint(attr, DNNL_ARG_DST, c_.y_zp);
    }
    if (!c_.zp_after) setZeroPoint(attr, DNNL_ARG_SRC, c_.a_zp);
    Prepared p;
    p.one_thread = oneThreadCall(m * k * n, false);
    const SingleThreadIf one(p.one_thread);  // the primitive plans its threads when it is made
    memory::desc w_user_md, w_md;  // B [k, n] as stored, and as the primitive wants it
    {
      // One image of m x 1 pixels rather than m images of one pixel (the same bytes): oneDNN then
      // blocks over the rows (see DnnlQConv::build).
      const memory::desc ad({1, k, m, 1}, dnnlType(at), tag::nhwc), yd({1, n, m, 1}, dnnlType(c_.y_type), tag::nhwc);
      const memory::desc wd_any({n, k, 1, 1}, dt::s8, tag::any);
      const memory::desc bd = c_.bias.empty() ? memory::desc() : memory::desc({n}, dt::f32, tag::a);
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, ad,
                                        wd_any, bd, yd, {1, 1}, {0, 0}, {0, 0}, {0, 0});
      dnnl::convolution_forward::primitive_desc pd;
      bool have = true;
      try {
        pd = dnnl::convolution_forward::primitive_desc(d, attr, eng);
        avoidSmallAmx(pd, k, n, m * k * n, /*pointwise=*/true);
        have = avoidAmx1x1Overrun(pd, m);  // one image of m pixels
      } catch (const dnnl::error&) {
        have = false;
      }
      if (exactInt32()) have = false;  // its int8 1x1 kernels store int32 through float32
      if (have && std::string(pd.impl_info_str()).rfind("jit", 0) == 0) {  // jit..., not gemm:jit or ref
        p.src = ad;
        p.dst = yd;
        p.prim = dnnl::convolution_forward(pd);
        p.impl = std::string("convolution ") + pd.impl_info_str();
        // B [k, n] row-major is the OIHW weight [n, k, 1, 1] with strides (1, n, 1, 1).
        w_user_md = memory::desc({n, k, 1, 1}, dt::s8, memory::dims{1, n, 1, 1});
        w_md = pd.weights_desc();
      }
    }
    if (!p.prim) {
      const memory::desc ad({m, k}, dnnlType(at), tag::ab), yd({m, n}, dnnlType(c_.y_type), tag::ab);
      const memory::desc wd_any({k, n}, dt::s8, tag::any);
      const auto md = c_.bias.empty() ? dnnl::matmul::desc(ad, wd_any, yd)
                                      : dnnl::matmul::desc(ad, wd_any, memory::desc({1, n}, dt::f32, tag::ab), yd);
      const auto pd = dnnl::matmul::primitive_desc(md, attr, eng);
      if (isRef(pd.impl_info_str())) return p;
      if (exactInt32() && std::string(pd.impl_info_str()).rfind("brg:", 0) != 0) return p;
      p.src = ad;
      p.dst = yd;
      p.prim = dnnl::matmul(pd);
      p.impl = std::string("matmul ") + pd.impl_info_str();
      w_user_md = memory::desc({k, n}, dt::s8, tag::ab);
      w_md = pd.weights_desc();
    }
    if (!c_.bias.empty())  // [n] and [1, n] have the same bytes
      p.bias_mem = memory(memory::desc({c_.n}, dt::f32, tag::a), eng, const_cast<float*>(c_.bias.data()));
    memory w_user(w_user_md, eng, const_cast<int8_t*>(c_.b.w.data()));
    finishPrepared(p, w_user, w_md);
    return p;
  }

  // The memories of `p` (its src and dst re-pointed per call) and B in the layout its primitive
  // chose, reordered once from `w_user`.
  static void finishPrepared(Prepared& p, memory& w_user, const memory::desc& w_md) {
    auto& eng = cpuEngine();
    p.w_mem = memory(w_md, eng);
    p.a_mem = memory(p.src, eng, nullptr);
    p.y_mem = memory(p.dst, eng, nullptr);
    dnnl::stream& s = cpuStream();
    dnnl::reorder(w_user, p.w_mem).execute(s, w_user, p.w_mem);
    s.wait();
    if (p.one_thread) p.impl += kOneThreadSuffix;
    p.ok = true;
  }

  // The float output from the raw products in acc_, per row as the reference finishes its rows (the
  // same float operations): MatMulIntegerScaled (acc - a_zp * colsum(B)) * scale [+ bias];
  // MatMulIntegerToFloat (float_after) ((acc - a_zp * colsum(B)) + bias / mult) * mult.
  // `sub`: zeroPointTerms (null: none).
  void finishFloat(KernelContext& ctx, Tensor& y, int64_t m, const int32_t* sub, bool one_thread) const {
    const int64_t n = c_.n;
    float* yf = y.data<float>();
    const int32_t* acc = acc_.data();
    if (c_.float_after) {
      const float* bias = c_.post_bias.empty() ? nullptr : c_.post_bias.data();
#pragma omp parallel for schedule(static) if (!one_thread && m * n >= (int64_t{1} << 15))
      for (int64_t r = 0; r < m; ++r) quant::accumulatorToFloatRow(acc + r * n, sub, bias, c_.post_mult.data(), yf + r * n, n);
      return;
    }
    const Tensor& sc = ctx.in(c_.in.scale);
    const float* scale = sc.data<float>();
    const bool per_column = sc.numel() > 1;
    const float* bias = ctx.has(c_.in.bias) ? ctx.in(c_.in.bias).data<float>() : nullptr;
#pragma omp parallel for schedule(static) if (!one_thread && m * n >= (int64_t{1} << 15))
    for (int64_t r = 0; r < m; ++r) quant::scaleAccumulatorRow(acc + r * n, sub, scale, per_column, bias, yf + r * n, n);
  }

  // a_zp * colsum(B) per column in wrapping int32 (sub_), what the zero point of A takes from each
  // raw sum; null when a_zp is 0.
  const int32_t* zeroPointTerms(int32_t a_zp) {
    if (a_zp == 0) return nullptr;
    sub_.resize(static_cast<size_t>(c_.n));
    for (size_t j = 0; j < sub_.size(); ++j)
      sub_[j] = static_cast<int32_t>(static_cast<uint32_t>(a_zp) * static_cast<uint32_t>(c_.b_colsum[j]));
    return sub_.data();
  }

  // y -= sub per column (zeroPointTerms), wrapping as the reference's int32 sums wrap.
  void subtractZeroPoint(Tensor& y, int64_t m, const int32_t* sub, bool one_thread) const {
    auto* yu = static_cast<uint32_t*>(y.raw());
    const int64_t n = c_.n;
    const auto* su = reinterpret_cast<const uint32_t*>(sub);
#pragma omp parallel for schedule(static) if (!one_thread && m * n >= (int64_t{1} << 15))
    for (int64_t r = 0; r < m; ++r) {
      uint32_t* row = yu + r * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) row[j] -= su[j];
    }
  }

  Config c_;
  std::map<std::pair<int64_t, DType>, Prepared> cache_;
  std::vector<uint8_t> flipped_;  ///< A + 128 (flip_s8)
  std::vector<int32_t> acc_, sub_;  ///< float outputs' raw products; zeroPointTerms
  const Prepared* last_ = nullptr;  ///< what the last call ran (map nodes do not move); null: the reference
  RuntimeZeroPoints zps_;  ///< runtime zero points of the oneDNN calls
};

/// Per-column parameter of B: a single value, [N] or [1, N].
bool perColumnShape(const Tensor& t, int64_t n) {
  return t.numel() == 1 || (t.rank() == 1 && t.dim(0) == n) || (t.rank() == 2 && t.dim(0) == 1 && t.dim(1) == n);
}

/// Sets `c` up for oneDNN to multiply the raw A, with the zero point of A subtracted after
/// (zp_after, b_colsum) and int8 A with long sums run as A + 128 (flip_s8). oneDNN takes a zero
/// point of A through float32 (a K = 1280 product with sums up to 3.3e7: 53-94 of 512 outputs off),
/// and int8 x int8 sums as well (K = 4096, sums to 6.6e7: outputs off), while uint8 x int8 without a
/// zero point stays in int32 (exact at 1.3e8 with VNNI). Its brgemm also ran at a quarter of its
/// speed with a runtime zero point (vit_b_16 dynamic INT8). False (the reference runs) where sums
/// of 255 * 128 * K could leave int32, or past 2^24 without VNNI (7-bit B, another kernel, never
/// checked there).
bool useRawProducts(DnnlQMatMul::Config& c) {
  if (c.k > std::numeric_limits<int32_t>::max() / (255 * 128)) return false;
  if (!haveVnni() && 255 * c.b.max_abs_sum > kExactAcc) return false;
  c.zp_after = true;
  c.flip_s8 = 128 * c.b.max_abs_sum > kExactAcc;
  c.b_colsum.assign(static_cast<size_t>(c.n), 0);
  for (int64_t r = 0; r < c.k; ++r)
    for (int64_t j = 0; j < c.n; ++j) c.b_colsum[static_cast<size_t>(j)] += c.b.w[static_cast<size_t>(r * c.n + j)];
  return true;
}

// ---------------------------------------------------------------------------------------------
// The integer matrix products on CPUs without VNNI, where B's values pass +-64 (8-bit weights):
// oneDNN's int8 kernels would saturate their int16 pair sums there, and every such product ran the
// reference kernel (tinyformer's QLinearMatMuls at batch 32 on a 2-core AVX2 EPYC: 0.4-0.75 ms
// each, the INT8 model 3.5x slower than its FP32 one). Here A - a_zp and B - b_zp, exact small
// integers in float32, multiply as fp32 1x1 convolutions over parts of K whose partial sums stay
// within 2^24 (matMulF32Parts), so every part's result is an exact integer; the parts add up in
// int32 (wrapping, as the reference's sums), and each op's output is finished from the int32 sums
// with the reference's own float operations: the reference's bits.
class F32QMatMul final : public Kernel {
 public:
  struct Config {
    QMatMulInputs in;
    int64_t k = 0, n = 0;
    ShiftedWeights b;
    std::vector<int64_t> parts;  ///< boundaries of the parts of K
    std::vector<float> mult;     ///< QLinearMatMul: requantMultiplier per column; MatMulIntegerToFloat: a_scale * b_scale
    std::vector<float> bias_acc;  ///< per column, bias / (a_scale * b_scale); empty: none
    ZeroPoint a_zp, y_zp;
    DType y_type = DType::Int32;  ///< QLinearMatMul: its 8-bit type; the others Int32 (MatMulInteger) or Float32
  };
  explicit F32QMatMul(Config c) : c_(std::move(c)) {}

  void run(KernelContext& ctx) override {
    last_ = nullptr;
    if (!runnable(ctx)) return reference(ctx);
    const Tensor& a = ctx.in(0);
    const int64_t m = a.numel() / c_.k, n = c_.n;
    Prepared& p = prepare(m);
    if (!p.ok) return reference(ctx);
    last_ = &p;
    const int32_t a_zp = c_.a_zp.at(ctx, c_.in.a_zp);
    const bool parallel = !p.one_thread;
    const SingleThreadIf one(p.one_thread);
    Shape ys = a.shape();
    ys.back() = n;
    // MatMulInteger's output is the sums themselves: they are added up there.
    const bool sums_out = !c_.in.qlinear && !c_.in.scale;
    if (!sums_out) acc_.resize(static_cast<size_t>(m * n));
    int32_t* acc = sums_out ? ctx.allocUninit(0, DType::Int32, ys).data<int32_t>() : acc_.data();
    yf_.resize(static_cast<size_t>(m * n));
    for (size_t q = 0; q < p.parts.size(); ++q) {
      Part& part = p.parts[q];
      const int64_t r0 = c_.parts[q], kp = c_.parts[q + 1] - r0;
      af_.resize(static_cast<size_t>(m * kp));
      float* af = af_.data();
      centreColumns(a, m, c_.k, r0, kp, a_zp, af, parallel && m * kp >= (1 << 16));
      execF32(part.prim, part.w_mem, part.a_mem, part.y_mem, af, yf_.data());
      addPart(yf_.data(), acc, m * n, q == 0, parallel && m * n >= (1 << 16));
    }
    if (!sums_out) finish(ctx, std::move(ys), m);
  }

  std::string primitive() const override {
    if (!last_) return std::string();
    return last_->impl + (last_->parts.size() > 1 ? " x " + std::to_string(last_->parts.size()) + " parts" : "") +
           (last_->one_thread ? kOneThreadSuffix : "");
  }

 private:
  struct Part {
    dnnl::convolution_forward prim;
    memory w_mem, a_mem, y_mem;
  };
  struct Prepared {
    bool ok = false;
    std::vector<Part> parts;
    bool one_thread = false;
    std::string impl;
  };

  void reference(KernelContext& ctx) const { qMatMulReference(ctx, c_.in); }

  bool runnable(const KernelContext& ctx) const { return qMatMulRunnable(ctx, c_.in, c_.a_zp, c_.k, c_.n, c_.y_type); }

  Prepared& prepare(int64_t m) {
    auto it = cache_.find(m);
    if (it != cache_.end()) return it->second;
    Prepared p;
    try {
      p = build(m);
    } catch (const std::exception&) {
      p = Prepared{};  // no primitive: the reference runs
    }
    return cache_.emplace(m, std::move(p)).first->second;
  }

  // One fp32 1x1 convolution per part over [1, kp, m, 1] NHWC (the bytes of A's part [m, kp]),
  // with B's rows of the part as its weights, writing [m, n]; not oneDNN's reference kernel.
  Prepared build(int64_t m) const {
    auto& eng = cpuEngine();
    dnnl::stream& s = cpuStream();
    const int64_t n = c_.n;
    Prepared p;
    p.one_thread = oneThreadCall(m * c_.k * n, false);
    const SingleThreadIf one(p.one_thread);  // the primitive plans its threads when it is made
    const memory::desc yd({1, n, m, 1}, dt::f32, tag::nhwc);
    for (size_t q = 0; q + 1 < c_.parts.size(); ++q) {
      const int64_t r0 = c_.parts[q], kp = c_.parts[q + 1] - r0;
      const memory::desc ad({1, kp, m, 1}, dt::f32, tag::nhwc), wd_any({n, kp, 1, 1}, dt::f32, tag::any);
      dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, ad,
                                        wd_any, memory::desc(), yd, {1, 1}, {0, 0}, {0, 0}, {0, 0});
      const dnnl::convolution_forward::primitive_desc pd(d, eng);
      if (isRef(pd.impl_info_str())) return Prepared{};  // any other order of the sums is exact too
      Part part;
      part.prim = dnnl::convolution_forward(pd);
      // B's rows r0 .. r0 + kp as float [kp, n]: the OIHW weight [n, kp, 1, 1] with strides (1, n, 1, 1).
      std::vector<float> wf(c_.b.w.begin() + r0 * n, c_.b.w.begin() + (r0 + kp) * n);
      memory w_user(memory::desc({n, kp, 1, 1}, dt::f32, memory::dims{1, n, 1, 1}), eng, wf.data());
      part.w_mem = memory(pd.weights_desc(), eng);
      dnnl::reorder(w_user, part.w_mem).execute(s, w_user, part.w_mem);
      s.wait();
      part.a_mem = memory(pd.src_desc(), eng, nullptr);
      part.y_mem = memory(pd.dst_desc(), eng, nullptr);
      if (p.impl.empty()) p.impl = std::string("convolution ") + pd.impl_info_str();
      p.parts.push_back(std::move(part));
    }
    p.ok = true;
    return p;
  }

  // The output `ys` from the int32 sums in acc_, with the reference's float operations per op
  // (MatMulInteger's output is the sums: run() adds them up there).
  void finish(KernelContext& ctx, Shape ys, int64_t m) {
    const int64_t n = c_.n;
    const int32_t* acc = acc_.data();
    const bool parallel = !last_->one_thread && m * n >= (int64_t{1} << 15);
    if (c_.in.scale) {
      const Tensor& sc = ctx.in(c_.in.scale);
      const float* scale = sc.data<float>();
      const bool per_column = sc.numel() > 1;
      const float* bias = ctx.has(c_.in.bias) ? ctx.in(c_.in.bias).data<float>() : nullptr;
      float* y = ctx.allocUninit(0, DType::Float32, std::move(ys)).data<float>();
      parallelFor(m, parallel, [&](int64_t r) { quant::scaleAccumulatorRow(acc + r * n, nullptr, scale, per_column, bias, y + r * n, n); });
      return;
    }
    if (c_.in.float_out) {
      const float* bias = c_.bias_acc.empty() ? nullptr : c_.bias_acc.data();
      float* y = ctx.allocUninit(0, DType::Float32, std::move(ys)).data<float>();
      parallelFor(m, parallel, [&](int64_t r) { quant::accumulatorToFloatRow(acc + r * n, nullptr, bias, c_.mult.data(), y + r * n, n); });
      return;
    }
    const int32_t y_zp = c_.y_zp.at(ctx, c_.in.y_zp);
    const quant::QRange range = quant::qrange(c_.y_type, ctx, "y_zero_point");
    Tensor& y = ctx.allocUninit(0, c_.y_type, std::move(ys));
    const float* bias = c_.bias_acc.empty() ? nullptr : c_.bias_acc.data();
    const float* mult = c_.mult.data();
    auto emit = [&](auto* dst) {
      using T = std::remove_pointer_t<decltype(dst)>;
      parallelFor(m, parallel, [&](int64_t r) {
        const int32_t* row = acc + r * n;
        T* out = dst + r * n;
        // As quant::qlinearMatMulBias: a bias joins the accumulator before the multiplier.
        if (bias)
          for (int64_t j = 0; j < n; ++j)
            out[j] = static_cast<T>(quant::roundSaturate((static_cast<float>(row[j]) + bias[j]) * mult[j], range.lo - y_zp,
                                                         range.hi - y_zp) + y_zp);
        else
          for (int64_t j = 0; j < n; ++j) out[j] = static_cast<T>(quant::requantizeValue(row[j], mult[j], y_zp, range));
      });
    };
    if (c_.y_type == DType::UInt8) emit(y.data<uint8_t>());
    else emit(y.data<int8_t>());
  }

  Config c_;
  std::map<int64_t, Prepared> cache_;
  std::vector<float> af_, yf_;  ///< a part of A, centred; a part's float sums
  std::vector<int32_t> acc_;    ///< the parts' sums (MatMulInteger adds them up in its output)
  const Prepared* last_ = nullptr;  ///< what the last call ran (map nodes do not move); null: the reference
};

/// The constant scales of a QLinearMatMul-like op `in` (a_scale one value, b_scale one or one per
/// column paired with b_zero_point's shape, y_scale one value; a float output's "y_scale" is 1: the
/// accumulator times a_scale * b_scale); nullopt where the reference must run.
struct QMatMulScales {
  std::vector<float> a, b, y;
};
std::optional<QMatMulScales> readQMatMulScales(const KernelInfo& info, const QMatMulInputs& in, const Tensor* bzp_t,
                                               int64_t n) {
  const Tensor *as_t = info.constant(1), *bs_t = info.constant(4), *ys_t = in.float_out ? nullptr : info.constant(6);
  if (!as_t || !bs_t || (!in.float_out && (!ys_t || !single(*ys_t))) || !bzp_t || as_t->numel() != 1 || !perColumnShape(*bs_t, n))
    return std::nullopt;
  if (!((bzp_t->numel() == 1 && bs_t->numel() == 1) || bzp_t->shape() == bs_t->shape())) return std::nullopt;
  const auto as = constScales(as_t), bs = constScales(bs_t);
  const auto ys = in.float_out ? std::optional<std::vector<float>>(std::vector<float>{1.0f}) : constScales(ys_t);
  if (!as || !bs || !ys) return std::nullopt;
  return QMatMulScales{*as, *bs, *ys};
}

/// F32QMatMul for a product whose B (shifted, in `c`) oneDNN's int8 kernels cannot take exactly on
/// this CPU; nullptr where the reference must run (non-constant scales, a bias it would refuse, sums
/// that no part split keeps exact).
std::unique_ptr<Kernel> makeF32QMatMul(const KernelInfo& info, const QMatMulInputs& in, DType a_type,
                                       const Tensor* bzp_t, DnnlQMatMul::Config&& dc) {
  F32QMatMul::Config c;
  c.in = in;
  c.k = dc.k;
  c.n = dc.n;
  c.a_zp = dc.a_zp;
  c.parts = matMulF32Parts(dc.b, c.k, c.n, centredRange(a_type, c.a_zp.value));
  if (c.parts.empty()) return nullptr;
  c.b = std::move(dc.b);
  const int64_t N = c.n;
  if (in.qlinear) {
    const auto sc = readQMatMulScales(info, in, bzp_t, N);
    if (!sc) return nullptr;
    const float as = sc->a[0], ys = sc->y[0];
    auto bsOf = [&](int64_t j) { return sc->b[sc->b.size() == 1 ? 0 : static_cast<size_t>(j)]; };
    // The reference's per-column constants, with its float operations.
    for (int64_t j = 0; j < N; ++j)
      c.mult.push_back(in.float_out ? as * bsOf(j) : quant::requantMultiplier(as, bsOf(j), ys));
    if (in.bias) {
      const Tensor* bias = info.constant(in.bias);
      if (!bias || !isFusedMatMulBias(*bias, N)) return nullptr;
      for (int64_t j = 0; j < N; ++j)
        c.bias_acc.push_back(in.float_out ? bias->data<float>()[j] / c.mult[static_cast<size_t>(j)]
                                          : bias->data<float>()[j] / (as * bsOf(j)));
    }
    if (in.float_out) {
      c.y_type = DType::Float32;
    } else {
      const auto y_zp = zeroPoint(info, in.y_zp);
      if (!y_zp) return nullptr;
      c.y_zp = *y_zp;
      c.y_type = inputType(info, in.y_zp);
      if (!is8(c.y_type)) return nullptr;
    }
  }
  return std::make_unique<F32QMatMul>(std::move(c));
}

std::unique_ptr<Kernel> makeQMatMul(const KernelInfo& info, const QMatMulInputs& in) {
  const Tensor* b = info.constant(in.b);
  if (!b || !is8(b->dtype()) || b->rank() != 2 || b->numel() == 0) return nullptr;
  const DType at = inputType(info, 0);
  if (at != DType::Undefined && !is8(at)) return nullptr;
  const auto* a_info = info.input_types.empty() ? nullptr : info.input_types[0];
  if (a_info && a_info->shape && a_info->shape->size() < 2) return nullptr;

  DnnlQMatMul::Config c;
  c.in = in;
  c.k = b->dim(0);
  c.n = b->dim(1);
  const auto a_zp = zeroPoint(info, in.a_zp);  // per-row zero points of A: the reference's
  if (!a_zp) return nullptr;
  c.a_zp = *a_zp;
  const DType a_type = at != DType::Undefined ? at : a_zp->present && info.constant(in.a_zp) ? info.constant(in.a_zp)->dtype()
                                                                                             : DType::Undefined;

  std::vector<int32_t> b_zp{0};
  const Tensor* bzp_t = info.hasInput(in.b_zp) ? info.constant(in.b_zp) : nullptr;
  if (info.hasInput(in.b_zp)) {
    if (!bzp_t || bzp_t->dtype() != b->dtype() || !perColumnShape(*bzp_t, c.n)) return nullptr;
    b_zp = intValues(*bzp_t);
  }
  const int64_t N = c.n;
  auto shifted = shiftWeights(
      *b, N, [&](int64_t i) { return b_zp[b_zp.size() == 1 ? 0 : i % N]; }, [&](int64_t i) { return i % N; });
  if (!shifted) return nullptr;
  c.b = std::move(*shifted);
  if (!int8Exact(a_type, c.b)) return makeF32QMatMul(info, in, a_type, bzp_t, std::move(c));
  c.u8_only = !haveVnni();

  if (in.qlinear) {
    const auto sc = readQMatMulScales(info, in, bzp_t, N);
    if (!sc) return nullptr;
    const float as = sc->a[0];
    auto bsOf = [&](int64_t j) { return sc->b[sc->b.size() == 1 ? 0 : static_cast<size_t>(j)]; };
    for (float s : sc->b) c.scales.push_back(quant::requantMultiplier(as, s, sc->y[0]));
    if (in.bias) {  // the reference names a bias it cannot use
      const Tensor* bias = info.constant(in.bias);
      if (!bias || !isFusedMatMulBias(*bias, N)) return nullptr;
      for (int64_t j = 0; j < N; ++j)
        c.bias.push_back(bias->data<float>()[j] / (as * bsOf(j)));
    }
    if (in.float_out) {
      c.y_type = DType::Float32;
      c.y_zp.value = 0;
      if (maxCentered(a_type, c.a_zp.value) * c.b.max_abs_sum > kExactAcc) {
        // Sums oneDNN's float post-processing would round: it writes the raw int32 products and
        // the kernel finishes them as the reference does.
        if (!useRawProducts(c)) return nullptr;
        c.float_after = true;
        c.y_type = DType::Int32;
        for (int64_t j = 0; j < N; ++j) c.post_mult.push_back(as * bsOf(j));
        c.post_bias = std::move(c.bias);
        c.bias.clear();
        c.scales.clear();
      }
      return std::make_unique<DnnlQMatMul>(std::move(c));
    }
    const auto y_zp = zeroPoint(info, in.y_zp);
    if (!y_zp) return nullptr;
    c.y_zp = *y_zp;
    c.y_type = inputType(info, in.y_zp);
    if (!is8(c.y_type)) return nullptr;
  } else {
    if (!useRawProducts(c)) return nullptr;
  }
  return std::make_unique<DnnlQMatMul>(std::move(c));
}

}  // namespace

bool matMulIntegerFast(DType a_type, int32_t a_zp, const Tensor& b) {
  if (!is8(a_type) || b.dtype() != DType::Int8 || b.rank() != 2 || b.numel() == 0) return false;
  const int64_t n = b.dim(1);
  auto shifted = shiftWeights(b, n, [](int64_t) { return 0; }, [&](int64_t i) { return i % n; });
  if (!shifted || !int8Exact(a_type, *shifted)) return false;
  if (maxCentered(a_type, a_zp) * shifted->max_abs_sum > kExactAcc) return false;
  try {  // and oneDNN has a real (not reference) implementation for it here
    DnnlQMatMul::Config c;
    c.in = kMatMulInteger;
    c.k = b.dim(0);
    c.n = n;
    c.b = std::move(*shifted);
    c.a_zp.present = true;
    c.a_zp.value = a_zp;
    c.u8_only = !haveVnni();
    return DnnlQMatMul(std::move(c)).probe(1, a_type);
  } catch (const std::exception&) {
    return false;
  }
}

// lwc.internal.QLinearConvNhwcAdd (optimize.cpp, fuseConvQAdd): inputs 0-8 the convolution's
// (bias or none), 9-11 the residual r with its scale and zero point, 12-13 the QAdd's scale and zero
// point for the convolution's output, 14-15 the QAdd's output scale and zero point; attribute relu.
// Where the convolution runs lwc's own pointwise kernel and everything is uint8 with constant add
// parameters, the add happens as its outputs are written; elsewhere the convolution runs (its fast
// kernel or the reference) and then the reference QAdd. Either way the bits of the two nodes.
class QConvAdd final : public Kernel {
 public:
  QConvAdd(std::unique_ptr<Kernel> conv, std::optional<pw::Add> add) : conv_(std::move(conv)), add_(add) {
    fast_ = dynamic_cast<DnnlQConv*>(conv_.get());
  }
  void run(KernelContext& ctx) override {
    if (ctx.inputs.size() != 16) ctx.error("expects 16 inputs, got ", ctx.inputs.size());
    const std::span<const Tensor* const> conv_in = ctx.inputs.first(9);
    fused_ = false;
    if (fast_ && add_) {
      KernelContext cc{ctx.node, conv_in, ctx.outputs};
      if (fast_->runFusedAdd(cc, *add_, ctx.in(9))) {
        fused_ = true;
        return;
      }
    }
    Tensor conv_out[1];
    KernelContext cc{ctx.node, conv_in, conv_out};
    conv_->run(cc);
    const std::array<const Tensor*, 8> add_in{&conv_out[0], ctx.inputs[12], ctx.inputs[13], ctx.inputs[9],
                                              ctx.inputs[10], ctx.inputs[11], ctx.inputs[14], ctx.inputs[15]};
    KernelContext ac{ctx.node, add_in, ctx.outputs};
    quant::qadd(ac);
  }
  std::string primitive() const override { return conv_->primitive() + (fused_ ? " + add" : ""); }

 private:
  std::unique_ptr<Kernel> conv_;
  DnnlQConv* fast_ = nullptr;
  std::optional<pw::Add> add_;  ///< the constant parameters, where all are (else no fused path)
  bool fused_ = false;
};

// lwc.internal.QLinearConvNhwcLut (optimize.cpp, fuseConvQLut): inputs 0-8 the convolution's (bias or
// none), 9 the 256-entry table of the lwc.internal.QLut that alone read its output, of the
// convolution's output type. Where an own kernel runs the convolution, each thread looks its
// outputs up piece by piece as they are written (DnnlQConv::runWithLut); elsewhere the
// convolution runs, then the lookup over the whole output. Either way the bits of the two nodes.
class QConvLut final : public Kernel {
 public:
  explicit QConvLut(std::unique_ptr<Kernel> conv) : conv_(std::move(conv)) { fast_ = dynamic_cast<DnnlQConv*>(conv_.get()); }
  void run(KernelContext& ctx) override {
    if (ctx.inputs.size() != 10) ctx.error("expects 10 inputs, got ", ctx.inputs.size());
    const Tensor& table = ctx.in(9);
    if (!is8(table.dtype()) || table.numel() != 256) ctx.error("the table (input 9) must hold 256 int8 or uint8 values");
    const auto* t = static_cast<const uint8_t*>(table.raw());
    KernelContext cc{ctx.node, ctx.inputs.first(9), ctx.outputs};
    fused_ = fast_ && fast_->runWithLut(cc, t);
    if (!fused_) conv_->run(cc);
    Tensor& y = ctx.outputs[0];
    if (y.dtype() != table.dtype())
      ctx.error("the table is ", dtypeName(table.dtype()), " but the convolution's output is ", dtypeName(y.dtype()));
    if (fused_) return;
    auto* yd = static_cast<uint8_t*>(y.raw());
    quant::lookupBytesParallel(yd, t, yd, y.numel());
  }
  std::string primitive() const override { return conv_->primitive() + (fused_ ? " + lut" : " then lut"); }

 private:
  std::unique_ptr<Kernel> conv_;
  DnnlQConv* fast_ = nullptr;
  bool fused_ = false;
};

/// The fused add's constant parameters, or nullopt where one is not a constant of the expected type.
std::optional<pw::Add> constantAdd(const KernelInfo& info) {
  pw::Add a;
  for (size_t k : {10, 12, 14})
    if (const Tensor* t = info.constant(k); !t || t->dtype() != DType::Float32 || t->numel() != 1) return std::nullopt;
  for (size_t k : {11, 13, 15})
    if (const Tensor* t = info.constant(k); !t || t->dtype() != DType::UInt8 || t->numel() != 1) return std::nullopt;
  a.r_scale = info.constant(10)->data<float>()[0];
  a.c_scale = info.constant(12)->data<float>()[0];
  a.y_scale = info.constant(14)->data<float>()[0];
  if (!(a.r_scale > 0 && a.c_scale > 0 && a.y_scale > 0 && std::isfinite(a.r_scale) && std::isfinite(a.c_scale) &&
        std::isfinite(a.y_scale)))
    return std::nullopt;  // the reference raises the error
  a.r_zp = info.constant(11)->data<uint8_t>()[0];
  a.c_zp = info.constant(13)->data<uint8_t>()[0];
  a.y_zp = info.constant(15)->data<uint8_t>()[0];
  a.floor = info.node.attrInt("relu", 0) ? 0.0f : -std::numeric_limits<float>::infinity();
  a.lo = static_cast<float>(0 - a.y_zp);
  a.hi = static_cast<float>(255 - a.y_zp);
  return a;
}

void registerDnnlInt8Kernels(KernelRegistry& r) {
  const int until = quant::kMaxOpset;
  r.add("", "QLinearConv", 10, until, "dnnl", [](const KernelInfo& i) { return makeQConv(i, kQLinearConv); });
  r.add(kInternalDomain, "QLinearConvNhwc", 1, 1, "dnnl", [](const KernelInfo& i) {
    return makeQConv(i, kQLinearConv, true);
  });
  r.add(kInternalDomain, "QLinearConvNhwc", 1, 1, "ref",
        [](const KernelInfo&) -> std::unique_ptr<Kernel> { return std::make_unique<RefQLinearConvNhwc>(); });
  r.add(kInternalDomain, "QLinearConvNhwcAdd", 1, 1, "dnnl", [](const KernelInfo& i) -> std::unique_ptr<Kernel> {
    auto conv = makeQConv(i, kQLinearConv, true);
    if (!conv) return nullptr;
    return std::make_unique<QConvAdd>(std::move(conv), constantAdd(i));
  });
  r.add(kInternalDomain, "QLinearConvNhwcAdd", 1, 1, "ref", [](const KernelInfo&) -> std::unique_ptr<Kernel> {
    return std::make_unique<QConvAdd>(std::make_unique<RefQLinearConvNhwc>(), std::nullopt);
  });
  r.add(kInternalDomain, "QLinearConvNhwcLut", 1, 1, "dnnl", [](const KernelInfo& i) -> std::unique_ptr<Kernel> {
    auto conv = makeQConv(i, kQLinearConv, true);
    if (!conv) return nullptr;
    return std::make_unique<QConvLut>(std::move(conv));
  });
  r.add(kInternalDomain, "QLinearConvNhwcLut", 1, 1, "ref", [](const KernelInfo&) -> std::unique_ptr<Kernel> {
    return std::make_unique<QConvLut>(std::make_unique<RefQLinearConvNhwc>());
  });
  r.add("", "ConvInteger", 10, until, "dnnl", [](const KernelInfo& i) { return makeQConv(i, kConvInteger); });
  r.add("", "QLinearMatMul", 10, until, "dnnl", [](const KernelInfo& i) { return makeQMatMul(i, kQLinearMatMul); });
  r.add("", "MatMulInteger", 10, until, "dnnl", [](const KernelInfo& i) { return makeQMatMul(i, kMatMulInteger); });
  r.add(kInternalDomain, "QLinearMatMul", 1, 1, "dnnl", [](const KernelInfo& i) { return makeQMatMul(i, kQLinearMatMulBias); });
  r.add(kInternalDomain, "MatMulIntegerToFloat", 1, 1, "dnnl", [](const KernelInfo& i) { return makeQMatMul(i, kMatMulIntegerToFloat); });
  r.add(kInternalDomain, "MatMulIntegerScaled", 1, 1, "dnnl", [](const KernelInfo& i) { return makeQMatMul(i, kMatMulIntegerScaled); });
}

}  // namespace lwc::engine
