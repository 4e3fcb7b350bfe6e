// Reference kernels of the quantization family: hand-computed cases, spec examples, and the integer
// ops against a naive loop written here (exact) and a float computation (within one step).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <type_traits>

#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {

template <typename T>
std::vector<T> valuesOf(const Tensor& t) {
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

Tensor floats(Shape s, std::vector<float> v) { return Tensor::fromVector<float>(std::move(s), v); }
Tensor u8(Shape s, std::vector<uint8_t> v) { return Tensor::fromVector<uint8_t>(std::move(s), v); }
Tensor i8(Shape s, std::vector<int8_t> v) { return Tensor::fromVector<int8_t>(std::move(s), v); }

Tensor run1(const std::string& op, std::vector<Tensor> inputs, std::vector<onnx::AttributeProto> attrs = {},
            int64_t opset = 13) {
  NodeSpec s;
  s.op_type = op;
  s.opset = opset;
  s.inputs = std::move(inputs);
  s.attrs = std::move(attrs);
  return runNode(s, /*reference_only=*/true).at(0);
}

// ---- An independent N-d convolution over plain vectors (zero points already subtracted). ----

struct ConvSpec {
  Shape x, w;  // N x C x D..., M x C/group x k...
  int64_t group = 1;
  std::vector<int64_t> pads, strides, dilations;  // empty: defaults
};

std::vector<onnx::AttributeProto> convAttrs(const ConvSpec& c) {
  std::vector<onnx::AttributeProto> a;
  if (c.group != 1) a.push_back(attrInt("group", c.group));
  if (!c.pads.empty()) a.push_back(attrInts("pads", c.pads));
  if (!c.strides.empty()) a.push_back(attrInts("strides", c.strides));
  if (!c.dilations.empty()) a.push_back(attrInts("dilations", c.dilations));
  return a;
}

// Unravels a flat index over `dims`.
std::vector<int64_t> coords(int64_t flat, const std::vector<int64_t>& dims) {
  std::vector<int64_t> c(dims.size());
  for (size_t k = dims.size(); k-- > 0;) {
    c[k] = flat % dims[k];
    flat /= dims[k];
  }
  return c;
}

template <typename T>
std::vector<T> naiveConv(const ConvSpec& c, const std::vector<T>& x, const std::vector<T>& w, Shape& out_shape) {
  const size_t sp = c.x.size() - 2;
  auto at = [](const std::vector<int64_t>& v, size_t i, int64_t d) { return v.empty() ? d : v[i]; };
  std::vector<int64_t> in(c.x.begin() + 2, c.x.end()), k(c.w.begin() + 2, c.w.end()), out(sp);
  for (size_t d = 0; d < sp; ++d) {
    const int64_t span = at(c.dilations, d, 1) * (k[d] - 1) + 1;
    out[d] = (in[d] + at(c.pads, d, 0) + at(c.pads, d + sp, 0) - span) / at(c.strides, d, 1) + 1;
  }
  const int64_t N = c.x[0], C = c.x[1], M = c.w[0], cpg = C / c.group, mpg = M / c.group;
  int64_t in_size = 1, out_size = 1, k_size = 1;
  for (size_t d = 0; d < sp; ++d) in_size *= in[d], out_size *= out[d], k_size *= k[d];
  out_shape = {N, M};
  out_shape.insert(out_shape.end(), out.begin(), out.end());
  std::vector<T> y(N * M * out_size, T(0));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t o = 0; o < out_size; ++o) {
        const auto oc = coords(o, out);
        T acc = 0;
        for (int64_t ci = 0; ci < cpg; ++ci)
          for (int64_t t = 0; t < k_size; ++t) {
            const auto kc = coords(t, k);
            int64_t flat = 0;
            bool inside = true;
            for (size_t d = 0; d < sp; ++d) {
              const int64_t p = oc[d] * at(c.strides, d, 1) - at(c.pads, d, 0) + kc[d] * at(c.dilations, d, 1);
              inside = inside && p >= 0 && p < in[d];
              flat = flat * in[d] + p;
            }
            if (!inside) continue;
            const int64_t channel = (m / mpg) * cpg + ci;
            acc += x[(n * C + channel) * in_size + flat] * w[(m * cpg + ci) * k_size + t];
          }
        y[(n * M + m) * out_size + o] = acc;
      }
  return y;
}

// Quantized values minus their zero point, as T; `zp_of(i)` gives the zero point of element i.
template <typename T, typename ZP>
std::vector<T> centered(const Tensor& q, ZP zp_of) {
  std::vector<T> v(q.numel());
  for (int64_t i = 0; i < q.numel(); ++i) v[i] = static_cast<T>(q.at(i) - zp_of(i));
  return v;
}

// The requantization step as ONNX Runtime computes it: float32 multiplier, ties to even.
int64_t requantOrt(int64_t acc, float xs, float ws, float ys, int64_t zp, int64_t lo, int64_t hi) {
  const float mult = xs * ws / ys;
  const float v = std::nearbyint(static_cast<float>(acc) * mult);
  return std::clamp<int64_t>(static_cast<int64_t>(v) + zp, lo, hi);
}

std::pair<int64_t, int64_t> rangeOf(DType t) {
  return t == DType::Int8 ? std::pair<int64_t, int64_t>{-128, 127} : std::pair<int64_t, int64_t>{0, 255};
}

// Random tensor covering the whole range of an 8-bit dtype.
Tensor randomQ(DType t, Shape s, uint32_t seed) {
  const auto [lo, hi] = rangeOf(t);
  return randomInt(t, std::move(s), seed, lo, hi);
}

Tensor scalarQ(DType t, int64_t v) { return Tensor::scalar<int64_t>(v).cast(t); }

struct QConvCase {
  ConvSpec conv;
  DType xt = DType::UInt8, wt = DType::UInt8, yt = DType::UInt8;
  bool per_channel = false, bias = false;
};

// Runs QLinearConv on seeded random data; checks it exactly against the naive integer loop plus the
// ORT-style requantization, and within one step against dequantize -> float conv -> quantize.
void checkQLinearConv(const QConvCase& c, uint32_t seed) {
  const int64_t M = c.conv.w[0];
  const Tensor x = randomQ(c.xt, c.conv.x, seed);
  const Tensor w = randomQ(c.wt, c.conv.w, seed + 1);
  const float xs = 0.02f, ys = 0.9f;
  const int64_t x_zp = c.xt == DType::UInt8 ? 131 : -3, y_zp = c.yt == DType::UInt8 ? 120 : 5;
  std::vector<float> ws(c.per_channel ? M : 1);
  std::vector<int64_t> wzp(ws.size());
  for (size_t m = 0; m < ws.size(); ++m) {
    ws[m] = 0.01f + 0.003f * static_cast<float>(m);
    wzp[m] = (c.wt == DType::UInt8 ? 125 : 0) + static_cast<int64_t>(m % 3);
  }
  const Shape pshape = c.per_channel ? Shape{M} : Shape{};
  Tensor bias;
  if (c.bias) bias = randomInt(DType::Int32, {M}, seed + 2, -5000, 5000);
  const Tensor wzp_t = Tensor::fromVector<int64_t>(pshape, wzp).cast(c.wt);

  NodeSpec s;
  s.op_type = "QLinearConv";
  s.opset = 10;
  s.attrs = convAttrs(c.conv);
  s.inputs = {x, Tensor::scalar(xs), scalarQ(c.xt, x_zp), w, Tensor::fromVector<float>(pshape, ws), wzp_t,
              Tensor::scalar(ys), scalarQ(c.yt, y_zp)};
  if (c.bias) s.inputs.push_back(bias);
  const Tensor y = runNode(s, /*reference_only=*/true).at(0);

  const int64_t k_per_m = w.numel() / M;
  auto chan = [&](int64_t i) { return c.per_channel ? i / k_per_m : 0; };
  Shape out_shape;
  const auto acc = naiveConv<int64_t>(c.conv, centered<int64_t>(x, [&](int64_t) { return x_zp; }),
                                      centered<int64_t>(w, [&](int64_t i) { return wzp[chan(i)]; }), out_shape);
  std::vector<double> xf(x.numel()), wf(w.numel());
  for (int64_t i = 0; i < x.numel(); ++i) xf[i] = (x.at(i) - x_zp) * xs;
  for (int64_t i = 0; i < w.numel(); ++i) wf[i] = (w.at(i) - wzp[chan(i)]) * ws[chan(i)];
  const auto real = naiveConv<double>(c.conv, xf, wf, out_shape);

  REQUIRE(y.dtype() == c.yt);
  REQUIRE(y.shape() == out_shape);
  const auto [lo, hi] = rangeOf(c.yt);
  const int64_t plane = y.numel() / (out_shape[0] * M);
  int64_t off_by_one = 0;
  for (int64_t i = 0; i < y.numel(); ++i) {
    const int64_t m = (i / plane) % M;
    const int64_t b = c.bias ? bias.data<int32_t>()[m] : 0;
    const float wsm = ws[c.per_channel ? m : 0];
    INFO("element " << i);
    REQUIRE(y.at(i) == requantOrt(acc[i] + b, xs, wsm, ys, y_zp, lo, hi));
    const double v = (real[i] + b * static_cast<double>(xs) * wsm) / ys;
    const int64_t want = std::clamp<int64_t>(static_cast<int64_t>(std::nearbyint(v)) + y_zp, lo, hi);
    REQUIRE(std::abs(y.at(i) - want) <= 1);
    off_by_one += y.at(i) != want;
  }
  CHECK(off_by_one * 100 <= y.numel());  // float32 vs float64 rounding differs only near ties
}

// ---- Matmul reference: a [B?, M, K] x b [B?, K, N], batch 1 broadcasting by hand. ----

struct QMatCase {
  Shape a, b;
  DType at = DType::UInt8, bt = DType::UInt8, yt = DType::UInt8;
  bool a_per_row = false, b_per_col = false;
};

void checkQLinearMatMul(const QMatCase& c, uint32_t seed) {
  const Tensor a = randomQ(c.at, c.a, seed);
  const Tensor b = randomQ(c.bt, c.b, seed + 1);
  const int64_t M = c.a[c.a.size() - 2], K = c.a.back(), N = c.b.back();
  const int64_t Ba = c.a.size() == 3 ? c.a[0] : 1, Bb = c.b.size() == 3 ? c.b[0] : 1, B = std::max(Ba, Bb);
  std::vector<float> as(c.a_per_row ? M : 1), bs(c.b_per_col ? N : 1);
  std::vector<int64_t> azp(as.size()), bzp(bs.size());
  for (size_t i = 0; i < as.size(); ++i) {
    as[i] = 0.015f + 0.002f * static_cast<float>(i);
    azp[i] = (c.at == DType::UInt8 ? 128 : 1) - static_cast<int64_t>(i % 4);
  }
  for (size_t i = 0; i < bs.size(); ++i) {
    bs[i] = 0.007f + 0.001f * static_cast<float>(i);
    bzp[i] = (c.bt == DType::UInt8 ? 110 : -2) + static_cast<int64_t>(i % 5);
  }
  const float ys = 0.2f;
  const int64_t y_zp = c.yt == DType::UInt8 ? 128 : 0;
  const Shape ash = c.a_per_row ? Shape{M} : Shape{}, bsh = c.b_per_col ? Shape{N} : Shape{};
  NodeSpec s;
  s.op_type = "QLinearMatMul";
  s.opset = 10;
  s.inputs = {a,
              Tensor::fromVector<float>(ash, as),
              Tensor::fromVector<int64_t>(ash, azp).cast(c.at),
              b,
              Tensor::fromVector<float>(bsh, bs),
              Tensor::fromVector<int64_t>(bsh, bzp).cast(c.bt),
              Tensor::scalar(ys),
              scalarQ(c.yt, y_zp)};
  const Tensor y = runNode(s, /*reference_only=*/true).at(0);
  Shape want_shape = c.a.size() == 3 || c.b.size() == 3 ? Shape{B, M, N} : Shape{M, N};
  REQUIRE(y.shape() == want_shape);
  REQUIRE(y.dtype() == c.yt);
  const auto [lo, hi] = rangeOf(c.yt);
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        const float asm_ = as[c.a_per_row ? m : 0], bsn = bs[c.b_per_col ? n : 0];
        const int64_t azpm = azp[c.a_per_row ? m : 0], bzpn = bzp[c.b_per_col ? n : 0];
        int64_t acc = 0;
        double real = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int64_t av = static_cast<int64_t>(a.at(((Ba > 1 ? bi : 0) * M + m) * K + k)) - azpm;
          const int64_t bv = static_cast<int64_t>(b.at(((Bb > 1 ? bi : 0) * K + k) * N + n)) - bzpn;
          acc += av * bv;
          real += (av * static_cast<double>(asm_)) * (bv * static_cast<double>(bsn));
        }
        const double got = y.at((bi * M + m) * N + n);
        INFO("batch " << bi << " row " << m << " col " << n);
        REQUIRE(got == requantOrt(acc, asm_, bsn, ys, y_zp, lo, hi));
        const int64_t approx = std::clamp<int64_t>(static_cast<int64_t>(std::nearbyint(real / ys)) + y_zp, lo, hi);
        REQUIRE(std::abs(got - approx) <= 1);
      }
}

}  // namespace

TEST_CASE("QuantizeLinear rounds half to even and saturates", "[quant]") {
  SECTION("ties go to the even neighbour") {
    const Tensor x = floats({10}, {0.5f, 1.5f, 2.5f, 3.5f, -0.5f, -1.5f, -2.5f, -3.5f, 2.4999f, 2.5001f});
    const Tensor y = run1("QuantizeLinear", {x, Tensor::scalar(1.0f), Tensor::scalar<int8_t>(0)});
    CHECK(valuesOf<int8_t>(y) == std::vector<int8_t>{0, 2, 2, 4, 0, -2, -2, -4, 2, 3});
    // x / scale = 2.5 and 3.5 with a non-unit scale; the zero point is added after rounding.
    const Tensor y2 = run1("QuantizeLinear", {floats({3}, {5.0f, 7.0f, -5.0f}), Tensor::scalar(2.0f), Tensor::scalar<uint8_t>(10)});
    CHECK(valuesOf<uint8_t>(y2) == std::vector<uint8_t>{12, 14, 8});
  }
  SECTION("saturation: uint8 vs int8") {
    const Tensor x = floats({6}, {-1000.0f, 1000.0f, 300.0f, -129.0f, 127.4f, -11.0f});
    const Tensor yu = run1("QuantizeLinear", {x, Tensor::scalar(1.0f), Tensor::scalar<uint8_t>(10)});
    CHECK(valuesOf<uint8_t>(yu) == std::vector<uint8_t>{0, 255, 255, 0, 137, 0});
    const Tensor yi = run1("QuantizeLinear", {x, Tensor::scalar(1.0f), Tensor::scalar<int8_t>(0)});
    CHECK(valuesOf<int8_t>(yi) == std::vector<int8_t>{-128, 127, 127, -128, 127, -11});
  }
  SECTION("no zero point: uint8 with zero point 0") {
    const Tensor y = run1("QuantizeLinear", {floats({4}, {-3.0f, 3.7f, 0.25f, 600.0f}), Tensor::scalar(0.5f)});
    REQUIRE(y.dtype() == DType::UInt8);
    CHECK(valuesOf<uint8_t>(y) == std::vector<uint8_t>{0, 7, 0, 255});
  }
  SECTION("ONNX example, opset 10") {
    const Tensor x = floats({6}, {0.0f, 2.0f, 3.0f, 1000.0f, -254.0f, -1000.0f});
    const Tensor y = run1("QuantizeLinear", {x, Tensor::scalar(2.0f), Tensor::scalar<uint8_t>(128)}, {}, 10);
    CHECK(valuesOf<uint8_t>(y) == std::vector<uint8_t>{128, 129, 130, 255, 1, 0});
  }
  SECTION("NaN gives the zero point, infinities saturate") {
    const float inf = std::numeric_limits<float>::infinity();
    const Tensor x = floats({3}, {std::nanf(""), inf, -inf});
    const Tensor y = run1("QuantizeLinear", {x, Tensor::scalar(1.0f), Tensor::scalar<int8_t>(3)});
    CHECK(valuesOf<int8_t>(y) == std::vector<int8_t>{3, 127, -128});
  }
  SECTION("int32 and float16 inputs") {
    const Tensor yi = run1("QuantizeLinear", {Tensor::fromVector<int32_t>({3}, {5, -7, 1000}), Tensor::scalar(2.0f),
                                              Tensor::scalar<int8_t>(0)});
    CHECK(valuesOf<int8_t>(yi) == std::vector<int8_t>{2, -4, 127});
    const Tensor xh = floats({3}, {2.5f, 3.5f, -1.0f}).cast(DType::Float16);
    const Tensor yh = run1("QuantizeLinear", {xh, Tensor::scalar(1.0f).cast(DType::Float16), Tensor::scalar<uint8_t>(1)},
                           {}, 19);
    CHECK(valuesOf<uint8_t>(yh) == std::vector<uint8_t>{3, 5, 0});
  }
}

// The per-tensor kernel is a vectorised loop (rne by adding 1.5 * 2^23); on a large tensor of
// ties, fractions, huge values, infinities and NaN it must give what the definition gives:
// saturate(rint(x / scale) + zp), NaN -> zp, for every 8- and 16-bit type.
TEST_CASE("QuantizeLinear per tensor agrees with the definition on every kind of value", "[quant]") {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v;
  for (int i = -70000; i <= 70000; ++i) v.push_back(0.5f * static_cast<float>(i));  // every tie up to 35000
  for (int i = 0; i < 20000; ++i) v.push_back(std::ldexp(static_cast<float>(i % 97) - 48.3f, i % 40 - 20));
  for (float e : {inf, -inf, std::nanf(""), 1e30f, -1e30f, 4194304.5f, -8388609.0f, 0.49999997f, -0.0f}) v.push_back(e);
  const Tensor x = floats({static_cast<int64_t>(v.size())}, v);
  auto check = [&](auto tag, int32_t lo, int32_t hi, int32_t zp, float scale) {
    using T = decltype(tag);
    INFO("range [" << lo << ", " << hi << "], zero point " << zp << ", scale " << scale);
    const Tensor y = run1("QuantizeLinear", {x, Tensor::scalar(scale), Tensor::scalar<T>(static_cast<T>(zp))}, {}, 21);
    const auto got = valuesOf<T>(y);
    REQUIRE(got.size() == v.size());
    int64_t wrong = 0;
    for (size_t i = 0; i < v.size(); ++i) {
      const float q = v[i] / scale;
      const double r = std::isnan(q) ? 0.0 : std::nearbyint(std::clamp(static_cast<double>(q), double(lo - zp), double(hi - zp)));
      wrong += static_cast<int64_t>(got[i]) != static_cast<int64_t>(r) + zp;
    }
    CHECK(wrong == 0);
  };
  check(uint8_t{}, 0, 255, 128, 1.0f);
  check(uint8_t{}, 0, 255, 3, 0.37f);
  check(int8_t{}, -128, 127, 0, 1.0f);
  check(int8_t{}, -128, 127, -5, 2.5f);
  check(uint16_t{}, 0, 65535, 30000, 1.0f);
  check(int16_t{}, -32768, 32767, 7, 0.5f);
}

// DequantizeLinear per tensor is a vectorised range function (with an AVX2 clone); over every value
// of each type, repeated past the parallel threshold, it must give (float(q - zp)) * scale exactly.
TEST_CASE("DequantizeLinear per tensor agrees with the definition bit for bit", "[quant]") {
  auto check = [](auto tag, int32_t zp, float scale) {
    using T = decltype(tag);
    const int64_t lo = std::numeric_limits<T>::min(), hi = std::numeric_limits<T>::max();
    const int64_t span = std::min<int64_t>(hi - lo + 1, 70001);
    std::vector<T> q;
    for (int64_t i = 0; i < 3 * span; ++i) q.push_back(static_cast<T>(lo + (i * 7919) % span));
    const Tensor x = Tensor::fromVector<T>({static_cast<int64_t>(q.size())}, q);
    INFO("zero point " << zp << ", scale " << scale);
    const Tensor zp_t = std::is_same_v<T, int32_t> ? Tensor::scalar<int32_t>(0) : Tensor::scalar<T>(static_cast<T>(zp));
    const Tensor y = run1("DequantizeLinear", {x, Tensor::scalar(scale), zp_t});
    REQUIRE(y.numel() == x.numel());
    int64_t wrong = 0;
    for (size_t i = 0; i < q.size(); ++i) {
      const float want = static_cast<float>(static_cast<int32_t>(q[i]) - (std::is_same_v<T, int32_t> ? 0 : zp)) * scale;
      wrong += std::memcmp(&want, y.data<float>() + i, sizeof(float)) != 0;
    }
    CHECK(wrong == 0);
  };
  check(uint8_t{}, 131, 0.0173f);
  check(int8_t{}, -3, 3.1e-5f);
  check(uint16_t{}, 30001, 0.7f);
  check(int16_t{}, 12, 1.3e-3f);
  check(int32_t{}, 0, 2.9e-7f);
}

// A scalar float32 scale with an 8-bit scalar zero point (or none) is read in place, without the
// parameter vectors of the general path: per-tensor results must equal the general path's per-axis
// results with that one scale repeated, bit for bit, for QuantizeLinear (uint8 and int8, zero point
// given, absent, or typed by output_dtype) and DequantizeLinear; parameters the fast path does not
// take (a 1-element scale of rank 2, a float16 scale) still give the definition.
TEST_CASE("per-tensor 8-bit QuantizeLinear and DequantizeLinear equal the per-axis path with one repeated scale",
          "[quant]") {
  std::vector<float> v;
  for (int i = 0; i < 3 * 40000; ++i) v.push_back(std::ldexp(static_cast<float>(i % 1013) - 506.5f, i % 9 - 6));
  const Tensor x = floats({3, 40000}, v);  // above the parallel threshold
  const float scale = 0.0371f;
  const Tensor axis_scale = floats({3}, {scale, scale, scale});
  auto same = [](const Tensor& a, const Tensor& b) { return a.bitEqual(b); };
  SECTION("QuantizeLinear") {
    CHECK(same(run1("QuantizeLinear", {x, Tensor::scalar(scale), Tensor::scalar<uint8_t>(131)}),
               run1("QuantizeLinear", {x, axis_scale, u8({3}, {131, 131, 131})}, {attrInt("axis", 0)})));
    CHECK(same(run1("QuantizeLinear", {x, Tensor::scalar(scale), Tensor::scalar<int8_t>(-7)}),
               run1("QuantizeLinear", {x, axis_scale, i8({3}, {-7, -7, -7})}, {attrInt("axis", 0)})));
    const Tensor no_zp = run1("QuantizeLinear", {x, Tensor::scalar(scale)});
    CHECK(no_zp.dtype() == DType::UInt8);
    CHECK(same(no_zp, run1("QuantizeLinear", {x, axis_scale}, {attrInt("axis", 0)})));
    const Tensor typed = run1("QuantizeLinear", {x, Tensor::scalar(scale)}, {attrInt("output_dtype", 3 /* INT8 */)}, 21);
    CHECK(typed.dtype() == DType::Int8);
    CHECK(same(typed, run1("QuantizeLinear", {x, axis_scale}, {attrInt("axis", 0), attrInt("output_dtype", 3)}, 21)));
    CHECK(same(run1("QuantizeLinear", {x, floats({1}, {scale}), u8({1}, {131})}),
               run1("QuantizeLinear", {x, Tensor::scalar(scale), Tensor::scalar<uint8_t>(131)})));
  }
  SECTION("DequantizeLinear") {
    std::vector<uint8_t> qu(v.size());
    std::vector<int8_t> qi(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      qu[i] = static_cast<uint8_t>(i * 7919 % 256);
      qi[i] = static_cast<int8_t>(static_cast<int>(i * 104729 % 256) - 128);
    }
    const Tensor xu = u8({3, 40000}, qu), xi = i8({3, 40000}, qi);
    CHECK(same(run1("DequantizeLinear", {xu, Tensor::scalar(scale), Tensor::scalar<uint8_t>(131)}),
               run1("DequantizeLinear", {xu, axis_scale, u8({3}, {131, 131, 131})}, {attrInt("axis", 0)})));
    CHECK(same(run1("DequantizeLinear", {xi, Tensor::scalar(scale), Tensor::scalar<int8_t>(-7)}),
               run1("DequantizeLinear", {xi, axis_scale, i8({3}, {-7, -7, -7})}, {attrInt("axis", 0)})));
    CHECK(same(run1("DequantizeLinear", {xi, Tensor::scalar(scale)}),
               run1("DequantizeLinear", {xi, axis_scale}, {attrInt("axis", 0)})));
    // A float16 scale takes the general path: the float32 result of the half-rounded scale, as float16.
    const Tensor half = run1("DequantizeLinear", {xu, Tensor::scalar(scale).cast(DType::Float16)}, {}, 21);
    CHECK(half.dtype() == DType::Float16);
    const float rounded = halfToFloat(floatToHalf(scale));
    CHECK(same(half, run1("DequantizeLinear", {xu, axis_scale.cast(DType::Float16)}, {attrInt("axis", 0)}, 21)));
    CHECK(same(half, run1("DequantizeLinear", {xu, Tensor::scalar(rounded)}, {}, 21).cast(DType::Float16)));
  }
}

// lwc.internal.QAdd on equal shapes is a vectorised range function (with an AVX2 clone): for every
// pair of 8-bit values, several scales, with and without the fused Relu, it must give the
// definition: saturate(rint(max(float(a - za) * sa + float(b - zb) * sb, 0 if relu) / sy) + zy).
TEST_CASE("QAdd on equal shapes agrees with the definition on every pair of values", "[quant]") {
  auto check = [](auto ta, auto ty, float sa, int32_t za, float sb, int32_t zb, float sy, int32_t zy, bool relu) {
    using TA = decltype(ta);
    using TY = decltype(ty);
    std::vector<TA> a, b;
    for (int i = 0; i < 65536; ++i) {
      a.push_back(static_cast<TA>(i & 255));  // the bytes' values in TA: every pair once
      b.push_back(static_cast<TA>(i >> 8));
    }
    const Tensor A = Tensor::fromVector<TA>({256, 256}, a), B = Tensor::fromVector<TA>({256, 256}, b);
    NodeSpec s;
    s.op_type = "QAdd";
    s.domain = "lwc.internal";
    s.opset = 1;
    s.inputs = {A, Tensor::scalar(sa), Tensor::scalar<TA>(static_cast<TA>(za)), B, Tensor::scalar(sb),
                Tensor::scalar<TA>(static_cast<TA>(zb)), Tensor::scalar(sy), Tensor::scalar<TY>(static_cast<TY>(zy))};
    if (relu) s.attrs.push_back(attrInt("relu", 1));
    const Tensor y = runNode(s).at(0);
    REQUIRE(y.numel() == 65536);
    const double lo = std::numeric_limits<TY>::min(), hi = std::numeric_limits<TY>::max();
    int64_t wrong = 0;
    for (int i = 0; i < 65536; ++i) {
      volatile float pa = static_cast<float>(static_cast<int32_t>(a[i]) - za) * sa;  // two roundings, no FMA
      volatile float pb = static_cast<float>(static_cast<int32_t>(b[i]) - zb) * sb;
      float v = pa + pb;
      if (relu) v = std::max(v, 0.0f);
      const float q = v / sy;
      const double want = std::clamp(std::nearbyint(static_cast<double>(q)) + zy, lo, hi);
      wrong += y.data<TY>()[i] != static_cast<TY>(want);
    }
    INFO("sa " << sa << " za " << za << " sb " << sb << " zb " << zb << " sy " << sy << " zy " << zy
               << " relu " << relu);
    CHECK(wrong == 0);
  };
  for (bool relu : {false, true}) {
    check(uint8_t{}, uint8_t{}, 0.031f, 128, 0.027f, 120, 0.05f, 125, relu);
    check(uint8_t{}, uint8_t{}, 0.5f, 0, 0.5f, 0, 1.0f, 0, relu);  // sums of halves: every tie
    check(uint8_t{}, uint8_t{}, 1.7e-3f, 7, 0.0123f, 250, 0.0131f, 3, relu);
    check(int8_t{}, int8_t{}, 0.02f, 0, 0.03f, -5, 0.04f, 0, relu);
    check(int8_t{}, int8_t{}, 0.25f, 0, 0.25f, 0, 0.5f, -2, relu);  // ties again
  }
}

// On CPUs with AVX-512 the per-tensor QuantizeLinear, QAdd and QMulLut kernels divide by a scale as
// a multiplication by its reciprocal plus one fused multiply-add correction (quant.cpp,
// divideLanes), which must round every quotient as the division does. A plain reciprocal
// multiplication is off by an ulp often enough to move quotients next to half-integers to the
// other integer: these inputs put the quotients there, for many scales (300 for QuantizeLinear,
// 40 for the others), and every result must be the definition's.
TEST_CASE("QuantizeLinear, QAdd and QMulLut round quotients next to half-integers as the division does", "[quant]") {
  uint32_t seed = 12345;
  auto nextScale = [&] {  // 1.xxx * 2^e, e in -20..2
    seed = seed * 1664525u + 1013904223u;
    const float frac = static_cast<float>(seed >> 9) * 0x1p-23f;
    return std::ldexp(1.0f + frac, static_cast<int>(seed % 23) - 20);
  };
  SECTION("QuantizeLinear") {
    int64_t wrong = 0, checked = 0;
    for (int k = 0; k < 300; ++k) {
      const float s = nextScale();
      std::vector<float> v;
      for (int j = -260; j <= 260; ++j) {  // (j + 0.5) * s and its float neighbours
        float t = (static_cast<float>(j) + 0.5f) * s;
        v.push_back(t);
        float up = t, down = t;
        for (int n = 0; n < 2; ++n) {
          up = std::nextafter(up, INFINITY), down = std::nextafter(down, -INFINITY);
          v.push_back(up), v.push_back(down);
        }
      }
      const Tensor y =
          run1("QuantizeLinear", {floats({static_cast<int64_t>(v.size())}, v), Tensor::scalar(s), Tensor::scalar<uint8_t>(128)});
      for (size_t i = 0; i < v.size(); ++i, ++checked) {
        const double want = std::clamp(std::nearbyint(static_cast<double>(v[i] / s)) + 128, 0.0, 255.0);
        wrong += y.data<uint8_t>()[i] != static_cast<uint8_t>(want);
      }
    }
    INFO(checked << " values");
    CHECK(wrong == 0);
  }
  SECTION("QAdd") {  // a * s / 2 + b * 3s / 4: every pair of bytes, sums of quarters of s
    std::vector<uint8_t> a, b;
    for (int i = 0; i < 65536; ++i) a.push_back(static_cast<uint8_t>(i & 255)), b.push_back(static_cast<uint8_t>(i >> 8));
    const Tensor A = u8({256, 256}, a), B = u8({256, 256}, b);
    int64_t wrong = 0;
    for (int k = 0; k < 40; ++k) {
      const float sy = nextScale(), sa = sy * 0.5f, sb = sy * 0.75f;
      NodeSpec n;
      n.op_type = "QAdd";
      n.domain = "lwc.internal";
      n.opset = 1;
      n.inputs = {A, Tensor::scalar(sa), Tensor::scalar<uint8_t>(128), B, Tensor::scalar(sb), Tensor::scalar<uint8_t>(100),
                  Tensor::scalar(sy), Tensor::scalar<uint8_t>(128)};
      const Tensor y = runNode(n).at(0);
      for (int i = 0; i < 65536; ++i) {
        volatile float pa = static_cast<float>(static_cast<int32_t>(a[i]) - 128) * sa;  // two roundings, no FMA
        volatile float pb = static_cast<float>(static_cast<int32_t>(b[i]) - 100) * sb;
        const float q = (pa + pb) / sy;
        wrong += y.data<uint8_t>()[i] != static_cast<uint8_t>(std::clamp(std::nearbyint(double(q)) + 128, 0.0, 255.0));
      }
    }
    CHECK(wrong == 0);
  }
  SECTION("QMulLut, x full and the gate full") {  // table c_i * sy, c_i a multiple of 1/32; x - zx integers
    std::vector<uint8_t> full(65536), row(256);
    for (int i = 0; i < 65536; ++i) full[static_cast<size_t>(i)] = static_cast<uint8_t>((i * 7 + i / 256) & 255);
    for (int i = 0; i < 256; ++i) row[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
    int64_t wrong = 0;
    for (int k = 0; k < 40; ++k) {
      const float sy = nextScale(), sx = 1.0f;
      std::vector<float> t(256);
      for (int i = 0; i < 256; ++i) t[static_cast<size_t>(i)] = (static_cast<float>(i % 32) / 16.0f + 1.0f / 32.0f) * sy;
      for (bool x_full : {true, false}) {
        const Tensor X = x_full ? u8({256, 256}, full) : u8({1, 256}, row);
        const Tensor G = x_full ? u8({1, 256}, row) : u8({256, 256}, full);
        NodeSpec n;
        n.op_type = "QMulLut";
        n.domain = "lwc.internal";
        n.opset = 1;
        n.inputs = {X, Tensor::scalar(sx), Tensor::scalar<uint8_t>(128), G, Tensor::fromVector<float>({256}, t),
                    Tensor::scalar(sy), Tensor::scalar<uint8_t>(128)};
        n.constant_inputs = {1, 2, 4, 5, 6};
        const Tensor y = runNode(n).at(0);
        REQUIRE(y.numel() == 65536);
        for (int i = 0; i < 65536; ++i) {
          const uint8_t xb = x_full ? full[static_cast<size_t>(i)] : row[static_cast<size_t>(i % 256)];
          const uint8_t gb = x_full ? row[static_cast<size_t>(i % 256)] : full[static_cast<size_t>(i)];
          volatile float dx = static_cast<float>(static_cast<int32_t>(xb) - 128) * sx;
          volatile float p = t[gb] * dx;
          const float q = p / sy;
          wrong += y.data<uint8_t>()[i] != static_cast<uint8_t>(std::clamp(std::nearbyint(double(q)) + 128, 0.0, 255.0));
        }
      }
    }
    CHECK(wrong == 0);
  }
}

// QAdd reads its six per-tensor parameters in place when they are single float32 / 8-bit values;
// a broadcast operand still gives the definition, and bad parameters are still refused by name.
TEST_CASE("QAdd broadcasts and refuses bad parameters by name", "[quant]") {
  auto qadd = [](Tensor a, Tensor sa, Tensor za, Tensor b, Tensor sb, Tensor zb, Tensor sy, Tensor zy) {
    NodeSpec s;
    s.op_type = "QAdd";
    s.domain = "lwc.internal";
    s.opset = 1;
    s.inputs = {a, sa, za, b, sb, zb, sy, zy};
    return runNode(s).at(0);
  };
  const Tensor a = u8({2, 3}, {0, 50, 100, 150, 200, 250}), b = u8({3}, {10, 128, 255});
  const Tensor y = qadd(a, Tensor::scalar(0.1f), Tensor::scalar<uint8_t>(20), b, Tensor::scalar(0.05f),
                        Tensor::scalar<uint8_t>(128), Tensor::scalar(0.2f), Tensor::scalar<uint8_t>(10));
  REQUIRE(y.shape() == Shape{2, 3});
  for (int64_t i = 0; i < 6; ++i) {
    volatile float pa = static_cast<float>(a.data<uint8_t>()[i] - 20) * 0.1f;
    volatile float pb = static_cast<float>(b.data<uint8_t>()[i % 3] - 128) * 0.05f;
    const double want = std::clamp(std::nearbyint(static_cast<double>((pa + pb) / 0.2f)) + 10, 0.0, 255.0);
    CHECK(y.data<uint8_t>()[i] == static_cast<uint8_t>(want));
  }
  CHECK_THROWS_WITH(qadd(a, Tensor::scalar(0.0f), Tensor::scalar<uint8_t>(0), b, Tensor::scalar(1.0f),
                         Tensor::scalar<uint8_t>(0), Tensor::scalar(1.0f), Tensor::scalar<uint8_t>(0)),
                    Catch::Contains("a_scale must be positive and finite"));
  CHECK_THROWS_WITH(qadd(a, Tensor::scalar(1.0f), Tensor::scalar<uint8_t>(0), b, Tensor::scalar(1.0f),
                         Tensor::scalar<int8_t>(0), Tensor::scalar(1.0f), Tensor::scalar<uint8_t>(0)),
                    Catch::Contains("b_zero_point is int8 but must be uint8"));
  CHECK_THROWS_WITH(qadd(a, Tensor::scalar(1.0f), Tensor::scalar<uint8_t>(0), b, Tensor::scalar(1.0f),
                         Tensor::scalar<uint8_t>(0), Tensor::scalar(std::nanf("")), Tensor::scalar<uint8_t>(0)),
                    Catch::Contains("y_scale must be positive and finite"));
}

TEST_CASE("QuantizeLinear per axis and blocked", "[quant]") {
  // x [2, 3, 2]; channel c along axis 1 has scale (c + 1) and zero point 10 * c.
  const Tensor x = floats({2, 3, 2}, {1, 2, 3, 4, 5, 6, -1, -2, -3, -4, -5, -6});
  const Tensor scale = floats({3}, {1, 2, 3});
  const Tensor zp = u8({3}, {0, 10, 20});
  // 1/1, 2/1, 3/2=1.5->2, 4/2=2, 5/3->2, 6/3=2; then negatives clamp at 0 for channel 0.
  const std::vector<uint8_t> want{1, 2, 12, 12, 22, 22, 0, 0, 8, 8, 18, 18};
  SECTION("default axis 1") { CHECK(valuesOf<uint8_t>(run1("QuantizeLinear", {x, scale, zp})) == want); }
  SECTION("negative axis") {
    CHECK(valuesOf<uint8_t>(run1("QuantizeLinear", {x, scale, zp}, {attrInt("axis", -2)})) == want);
  }
  SECTION("axis 0, int8") {
    const Tensor y = run1("QuantizeLinear", {x, floats({2}, {2, 4}), i8({2}, {0, -1})}, {attrInt("axis", 0)});
    // 0.5->0, 1, 1.5->2, 2, 2.5->2, 3 | -0.25->0, -0.5->0, -0.75->-1, -1, -1.25->-1, -1.5->-2; minus 1.
    CHECK(valuesOf<int8_t>(y) == std::vector<int8_t>{0, 1, 2, 2, 2, 3, -1, -1, -2, -2, -2, -3});
  }
  SECTION("per axis matches per tensor slice by slice") {
    const Tensor big = randomFloat({4, 5, 6}, 7, -3.0f, 3.0f);
    const Tensor s3 = floats({5}, {0.01f, 0.02f, 0.05f, 0.1f, 0.3f});
    const Tensor y = run1("QuantizeLinear", {big, s3, i8({5}, {-4, -2, 0, 2, 4})});
    for (int64_t i = 0; i < big.numel(); ++i) {
      const int64_t c = (i / 6) % 5;
      const float q = std::nearbyint(big.data<float>()[i] / s3.data<float>()[c]) + (-4 + 2 * c);
      REQUIRE(y.at(i) == std::clamp(q, -128.0f, 127.0f));
    }
  }
  SECTION("blocked (opset 21): blocks of 2 along axis 1") {
    const Tensor xb = floats({2, 4}, {1, 2, 3, 4, 5, 6, 7, 8});
    const Tensor sb = floats({2, 2}, {1, 2, 4, 8});
    const Tensor y = run1("QuantizeLinear", {xb, sb, u8({2, 2}, {0, 1, 2, 3})},
                          {attrInt("axis", 1), attrInt("block_size", 2)}, 21);
    // row 0: 1, 2 | 1.5->2, 2 (+1); row 1: 1.25->1, 1.5->2 (+2) | 0.875->1, 1 (+3)
    CHECK(valuesOf<uint8_t>(y) == std::vector<uint8_t>{1, 2, 3, 3, 3, 4, 4, 4});
  }
  SECTION("output_dtype (opset 21)") {
    const Tensor y = run1("QuantizeLinear", {floats({3}, {-40000.0f, 2.5f, 40000.0f}), Tensor::scalar(1.0f)},
                          {attrInt("output_dtype", 5 /* INT16 */)}, 21);
    REQUIRE(y.dtype() == DType::Int16);
    CHECK(valuesOf<int16_t>(y) == std::vector<int16_t>{-32768, 2, 32767});
  }
}

TEST_CASE("DequantizeLinear", "[quant]") {
  SECTION("uint8 per tensor (ONNX example)") {
    const Tensor y = run1("DequantizeLinear", {u8({4}, {0, 3, 128, 255}), Tensor::scalar(2.0f), Tensor::scalar<uint8_t>(128)});
    CHECK(valuesOf<float>(y) == std::vector<float>{-256, -250, 0, 254});
  }
  SECTION("int8 without zero point, opset 10") {
    const Tensor y = run1("DequantizeLinear", {i8({3}, {-128, 0, 127}), Tensor::scalar(0.5f)}, {}, 10);
    CHECK(valuesOf<float>(y) == std::vector<float>{-64, 0, 63.5f});
  }
  SECTION("int32 (bias), zero point absent or 0") {
    const Tensor x = Tensor::fromVector<int32_t>({3}, {-1000000, 7, 2147483647});
    const Tensor y = run1("DequantizeLinear", {x, Tensor::scalar(0.5f)});
    CHECK(valuesOf<float>(y) == std::vector<float>{-500000.0f, 3.5f, 1073741824.0f});
    const Tensor y0 = run1("DequantizeLinear", {x, Tensor::scalar(0.5f), Tensor::scalar<int32_t>(0)});
    CHECK(y0.bitEqual(y));
  }
  SECTION("per axis") {
    const Tensor x = u8({1, 3, 2}, {3, 89, 34, 200, 74, 59});
    const Tensor y = run1("DequantizeLinear", {x, floats({3}, {2, 4, 5}), u8({3}, {84, 24, 196})});
    CHECK(valuesOf<float>(y) == std::vector<float>{-162, 10, 40, 704, -610, -685});
  }
  SECTION("float16 scale gives a float16 output (opset 19)") {
    const Tensor y = run1("DequantizeLinear", {i8({2}, {-3, 5}), Tensor::scalar(0.5f).cast(DType::Float16)}, {}, 19);
    REQUIRE(y.dtype() == DType::Float16);
    CHECK(y.at(0) == -1.5);
    CHECK(y.at(1) == 2.5);
  }
  SECTION("round trip through QuantizeLinear is within half a step") {
    const Tensor x = randomFloat({64}, 3, -1.0f, 1.0f);
    const Tensor s = Tensor::scalar(0.01f);
    const Tensor q = run1("QuantizeLinear", {x, s, Tensor::scalar<int8_t>(0)});
    const Tensor back = run1("DequantizeLinear", {q, s, Tensor::scalar<int8_t>(0)});
    CHECK(compareTensors(back, x, 0, 0.005 + 1e-6).empty());
  }
}

TEST_CASE("DynamicQuantizeLinear matches the ONNX examples", "[quant]") {
  auto run = [](const Tensor& x) {
    NodeSpec s;
    s.op_type = "DynamicQuantizeLinear";
    s.opset = 11;
    s.inputs = {x};
    s.num_outputs = 3;
    return runNode(s, /*reference_only=*/true);
  };
  SECTION("mixed signs") {
    const auto out = run(floats({6}, {0, 2, -3, -2.5f, 1.34f, 0.5f}));
    CHECK(valuesOf<uint8_t>(out[0]) == std::vector<uint8_t>{153, 255, 0, 26, 221, 179});
    CHECK(out[1].data<float>()[0] == 5.0f / 255.0f);
    CHECK(out[2].data<uint8_t>()[0] == 153);
  }
  SECTION("all negative: max adjusted to 0") {
    const auto out = run(floats({6}, {-1, -2.1f, -1.3f, -2.5f, -3.34f, -4}));
    CHECK(valuesOf<uint8_t>(out[0]) == std::vector<uint8_t>{191, 121, 172, 96, 42, 0});
    CHECK(out[1].data<float>()[0] == 4.0f / 255.0f);
    CHECK(out[2].data<uint8_t>()[0] == 255);
  }
  SECTION("all positive: min adjusted to 0") {
    const auto out = run(floats({3, 4}, {1, 2.1f, 1.3f, 2.5f, 3.34f, 4, 1.5f, 2.6f, 3.9f, 4, 3, 2.345f}));
    CHECK(valuesOf<uint8_t>(out[0]) == std::vector<uint8_t>{64, 134, 83, 159, 213, 255, 96, 166, 249, 255, 191, 149});
    CHECK(out[2].data<uint8_t>()[0] == 0);
  }
  SECTION("all zero: scale 1, zero point 0 (ONNX Runtime's rule; the formula would divide by 0)") {
    const auto out = run(floats({4}, {0, 0, 0, 0}));
    CHECK(valuesOf<uint8_t>(out[0]) == std::vector<uint8_t>{0, 0, 0, 0});
    CHECK(out[1].data<float>()[0] == 1.0f);
    CHECK(out[2].data<uint8_t>()[0] == 0);
  }
  SECTION("the range over long inputs, in and out of the vector blocks, NaNs ignored") {
    // The extremes in a 16-value block, the tail or across the threads' ranges; a NaN among them.
    for (const int64_t n : {1, 15, 17, 100, 40000, 40013}) {
      for (const int64_t at : {int64_t{0}, n / 2, n - 1}) {
        INFO("n " << n << ", extremes at " << at << " and " << n - 1 - at);
        std::vector<float> v(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = 0.001f * static_cast<float>((i * 37) % 101) - 0.02f;
        v[static_cast<size_t>(n - 1 - at)] = 3.25f;
        v[static_cast<size_t>(at)] = -7.5f;
        if (n > 2) v[1] = std::numeric_limits<float>::quiet_NaN();
        float lo = 0.0f, hi = 0.0f;
        for (float x : v)
          if (!std::isnan(x)) lo = std::min(lo, x), hi = std::max(hi, x);
        CHECK(lo == -7.5f);
        const auto out = run(floats({n}, v));
        const float scale = (hi - lo) / 255.0f;
        CHECK(out[1].data<float>()[0] == scale);
        CHECK(static_cast<int>(out[2].data<uint8_t>()[0]) == static_cast<int>(std::nearbyint(-lo / scale)));
      }
    }
  }
}

TEST_CASE("ConvInteger is exact", "[quant]") {
  const Tensor x = u8({1, 1, 3, 3}, {2, 3, 4, 5, 6, 7, 8, 9, 10});
  const Tensor w = u8({1, 1, 2, 2}, {1, 1, 1, 1});
  SECTION("ONNX example without padding") {
    const Tensor y = run1("ConvInteger", {x, w, Tensor::scalar<uint8_t>(1)}, {}, 10);
    REQUIRE(y.dtype() == DType::Int32);
    CHECK(y.shape() == Shape{1, 1, 2, 2});
    CHECK(valuesOf<int32_t>(y) == std::vector<int32_t>{12, 16, 24, 28});
  }
  SECTION("ONNX example with padding: the padding holds the zero point") {
    const Tensor y = run1("ConvInteger", {x, w, Tensor::scalar<uint8_t>(1)}, {attrInts("pads", {1, 1, 1, 1})}, 10);
    CHECK(valuesOf<int32_t>(y) == std::vector<int32_t>{1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9});
  }
  SECTION("random, per-channel weight zero points, groups, strides, dilations") {
    for (auto [xt, wt] : {std::pair{DType::UInt8, DType::Int8}, std::pair{DType::Int8, DType::UInt8}}) {
      ConvSpec c{{2, 4, 9, 8}, {6, 2, 3, 2}, 2, {1, 0, 2, 1}, {2, 1}, {1, 2}};
      const Tensor xr = randomQ(xt, c.x, 11), wr = randomQ(wt, c.w, 12);
      const int64_t x_zp = xt == DType::UInt8 ? 100 : -7;
      const std::vector<int64_t> wzp{3, 0, 2, 5, 1, 4};
      const Tensor wzp_t = Tensor::fromVector<int64_t>({6}, wzp).cast(wt);
      const Tensor y = run1("ConvInteger", {xr, wr, scalarQ(xt, x_zp), wzp_t}, convAttrs(c), 10);
      Shape out_shape;
      const auto want = naiveConv<int64_t>(c, centered<int64_t>(xr, [&](int64_t) { return x_zp; }),
                                           centered<int64_t>(wr, [&](int64_t i) { return wzp[i / 12]; }), out_shape);
      REQUIRE(y.shape() == out_shape);
      for (int64_t i = 0; i < y.numel(); ++i) REQUIRE(y.data<int32_t>()[i] == want[i]);
    }
  }
  SECTION("1-D and 3-D") {
    const Tensor y1 = run1("ConvInteger", {u8({1, 1, 5}, {1, 2, 3, 4, 5}), u8({1, 1, 2}, {1, 2})}, {}, 10);
    CHECK(valuesOf<int32_t>(y1) == std::vector<int32_t>{5, 8, 11, 14});
    ConvSpec c{{1, 2, 4, 3, 5}, {3, 2, 2, 2, 3}, 1, {1, 0, 1, 0, 1, 1}, {1, 2, 1}, {1, 1, 2}};
    const Tensor xr = randomQ(DType::Int8, c.x, 21), wr = randomQ(DType::Int8, c.w, 22);
    const Tensor y3 = run1("ConvInteger", {xr, wr}, convAttrs(c), 10);
    Shape out_shape;
    const auto want = naiveConv<int64_t>(c, centered<int64_t>(xr, [](int64_t) { return 0; }),
                                         centered<int64_t>(wr, [](int64_t) { return 0; }), out_shape);
    REQUIRE(y3.shape() == out_shape);
    for (int64_t i = 0; i < y3.numel(); ++i) REQUIRE(y3.data<int32_t>()[i] == want[i]);
  }
  SECTION("auto_pad equals the explicit padding it implies") {
    const Tensor xr = randomQ(DType::UInt8, {1, 2, 7, 6}, 31), wr = randomQ(DType::Int8, {3, 2, 3, 4}, 32);
    auto conv = [&](std::vector<onnx::AttributeProto> a) { return run1("ConvInteger", {xr, wr}, a, 10); };
    // H: in 7, k 3, s 2 -> out 4, total pad 2 (1 | 1). W: in 6, k 4, s 2 -> out 3, total pad 2 (1 | 1) ...
    CHECK(conv({attrString("auto_pad", "SAME_UPPER"), attrInts("strides", {2, 2})})
              .bitEqual(conv({attrInts("pads", {1, 1, 1, 1}), attrInts("strides", {2, 2})})));
    // ... with stride 1: H total 2 (1 | 1), W total 3: SAME_UPPER puts the extra at the end, SAME_LOWER at the start.
    CHECK(conv({attrString("auto_pad", "SAME_UPPER")}).bitEqual(conv({attrInts("pads", {1, 1, 1, 2})})));
    CHECK(conv({attrString("auto_pad", "SAME_LOWER")}).bitEqual(conv({attrInts("pads", {1, 2, 1, 1})})));
    CHECK(conv({attrString("auto_pad", "VALID")}).bitEqual(conv({})));
  }
}

TEST_CASE("QLinearConv against integer and float references", "[quant]") {
  SECTION("uint8 x uint8, per tensor, pads and strides") {
    checkQLinearConv({{{1, 3, 8, 7}, {4, 3, 3, 3}, 1, {1, 1, 1, 1}, {2, 1}, {}}}, 100);
  }
  SECTION("int8 x int8 -> int8, per channel, bias, groups, dilations") {
    checkQLinearConv({{{2, 4, 9, 9}, {6, 2, 3, 3}, 2, {2, 0, 1, 2}, {1, 2}, {2, 1}}, DType::Int8, DType::Int8, DType::Int8,
                      true, true},
                     200);
  }
  SECTION("uint8 x int8 -> uint8, depthwise, per channel, bias") {
    checkQLinearConv({{{1, 5, 6, 6}, {5, 1, 3, 3}, 5, {1, 1, 1, 1}, {}, {}}, DType::UInt8, DType::Int8, DType::UInt8,
                      true, true},
                     300);
  }
  SECTION("int8 x uint8 -> uint8, 1-D") {
    checkQLinearConv({{{2, 3, 11}, {2, 3, 4}, 1, {2, 1}, {3}, {}}, DType::Int8, DType::UInt8, DType::UInt8}, 400);
  }
}

TEST_CASE("MatMulInteger is exact", "[quant]") {
  SECTION("ONNX example") {
    const Tensor a = u8({4, 3}, {11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0});
    const Tensor b = u8({3, 2}, {1, 4, 2, 5, 3, 6});
    const Tensor y = run1("MatMulInteger", {a, b, u8({1}, {12}), u8({1}, {0})}, {}, 10);
    REQUIRE(y.dtype() == DType::Int32);
    CHECK(valuesOf<int32_t>(y) == std::vector<int32_t>{-38, -83, -44, -98, -50, -113, -56, -128});
  }
  SECTION("per-row a and per-column b zero points, batch broadcast") {
    const Tensor a = randomQ(DType::Int8, {3, 4, 5}, 41), b = randomQ(DType::UInt8, {5, 6}, 42);
    const std::vector<int8_t> azp{-1, 0, 3, 7};
    const std::vector<uint8_t> bzp{120, 121, 122, 130, 140, 0};
    const Tensor y = run1("MatMulInteger", {a, b, i8({4}, azp), u8({6}, bzp)}, {}, 10);
    const Tensor y2 = run1("MatMulInteger", {a, b, i8({4, 1}, azp), u8({1, 6}, bzp)}, {}, 10);
    CHECK(y2.bitEqual(y));
    REQUIRE(y.shape() == Shape{3, 4, 6});
    for (int64_t bi = 0; bi < 3; ++bi)
      for (int64_t m = 0; m < 4; ++m)
        for (int64_t n = 0; n < 6; ++n) {
          int64_t acc = 0;
          for (int64_t k = 0; k < 5; ++k)
            acc += (static_cast<int64_t>(a.at((bi * 4 + m) * 5 + k)) - azp[m]) * (static_cast<int64_t>(b.at(k * 6 + n)) - bzp[n]);
          REQUIRE(y.data<int32_t>()[(bi * 4 + m) * 6 + n] == acc);
        }
  }
  SECTION("1-D operands as numpy promotes them") {
    const Tensor v = u8({3}, {1, 2, 3});
    const Tensor m = u8({3, 2}, {1, 2, 3, 4, 5, 6});
    const Tensor y = run1("MatMulInteger", {v, m}, {}, 10);
    CHECK(y.shape() == Shape{2});
    CHECK(valuesOf<int32_t>(y) == std::vector<int32_t>{22, 28});
    const Tensor y2 = run1("MatMulInteger", {u8({2, 3}, {1, 2, 3, 4, 5, 6}), v}, {}, 10);
    CHECK(y2.shape() == Shape{2});
    CHECK(valuesOf<int32_t>(y2) == std::vector<int32_t>{14, 32});
  }
  SECTION("int32 accumulation wraps around, as ONNX allows") {
    const int64_t K = 40000;  // 40000 * 255 * 255 > 2^31
    const Tensor a = Tensor::fromVector<uint8_t>({1, K}, std::vector<uint8_t>(K, 255));
    const Tensor b = Tensor::fromVector<uint8_t>({K, 1}, std::vector<uint8_t>(K, 255));
    const Tensor y = run1("MatMulInteger", {a, b}, {}, 10);
    CHECK(y.data<int32_t>()[0] == static_cast<int32_t>(static_cast<uint32_t>(K * 255 * 255)));
  }
}

TEST_CASE("QLinearMatMul against integer and float references", "[quant]") {
  SECTION("uint8 2-D, per tensor") { checkQLinearMatMul({{5, 17}, {17, 9}}, 500); }
  SECTION("int8 x int8 -> int8, per-row a, per-column b") {
    checkQLinearMatMul({{6, 33}, {33, 10}, DType::Int8, DType::Int8, DType::Int8, true, true}, 600);
  }
  SECTION("uint8 x int8 batched with a broadcast b, per-column b") {
    checkQLinearMatMul({{3, 4, 20}, {20, 7}, DType::UInt8, DType::Int8, DType::UInt8, false, true}, 700);
  }
  SECTION("int8 x uint8 batched on both sides") {
    checkQLinearMatMul({{2, 5, 12}, {2, 12, 3}, DType::Int8, DType::UInt8, DType::UInt8}, 800);
  }
  SECTION("ONNX example") {
    const Tensor a = u8({2, 4}, {208, 236, 0, 238, 3, 214, 255, 29});
    const Tensor b = u8({4, 3}, {152, 51, 244, 60, 26, 255, 0, 127, 246, 127, 254, 247});
    const Tensor y = run1("QLinearMatMul", {a, floats({1}, {0.0066f}), u8({1}, {113}), b, floats({1}, {0.00705f}),
                                            u8({1}, {114}), floats({1}, {0.0107f}), u8({1}, {118})},
                          {}, 10);
    CHECK(valuesOf<uint8_t>(y) == std::vector<uint8_t>{168, 115, 255, 1, 66, 151});
  }
}

TEST_CASE("quantization errors name the problem", "[quant]") {
  const Tensor x = floats({2, 3}, {1, 2, 3, 4, 5, 6});
  SECTION("bad scales") {
    for (float s : {0.0f, -1.0f, std::nanf(""), std::numeric_limits<float>::infinity()}) {
      CHECK_THROWS_AS(run1("QuantizeLinear", {x, Tensor::scalar(s)}), Error);
      CHECK_THROWS_AS(run1("DequantizeLinear", {u8({2}, {1, 2}), Tensor::scalar(s)}), Error);
    }
    CHECK_THROWS_WITH(run1("QuantizeLinear", {x, floats({3}, {1, 0, 1})}),
                      Catch::Contains("n0") && Catch::Contains("y_scale must be positive and finite"));
    CHECK_THROWS_AS(run1("QuantizeLinear", {x, Tensor::scalar<int32_t>(1)}), Error);
  }
  SECTION("scale and zero point shapes against the axis") {
    CHECK_THROWS_WITH(run1("QuantizeLinear", {x, floats({2}, {1, 1})}), Catch::Contains("y_scale has shape [2]"));
    CHECK_THROWS_AS(run1("QuantizeLinear", {x, floats({2}, {1, 1})}, {attrInt("axis", 2)}), Error);
    CHECK_THROWS_AS(run1("QuantizeLinear", {x, floats({3}, {1, 1, 1}), u8({2}, {0, 0})}), Error);
    CHECK_THROWS_AS(run1("QuantizeLinear", {x, floats({2, 3}, {1, 1, 1, 1, 1, 1})}), Error);
    CHECK_THROWS_AS(run1("DequantizeLinear", {u8({2, 3}, {1, 2, 3, 4, 5, 6}), floats({2}, {1, 1})}), Error);
    CHECK_THROWS_AS(run1("QuantizeLinear", {x, floats({2, 1}, {1, 1})}, {attrInt("block_size", 2)}, 21), Error);
  }
  SECTION("zero point dtypes") {
    CHECK_THROWS_WITH(run1("DequantizeLinear", {u8({2}, {1, 2}), Tensor::scalar(1.0f), Tensor::scalar<int8_t>(0)}),
                      Catch::Contains("x_zero_point is int8 but must be uint8"));
    CHECK_THROWS_AS(run1("DequantizeLinear", {Tensor::fromVector<int32_t>({1}, {5}), Tensor::scalar(1.0f),
                                              Tensor::scalar<int32_t>(2)}),
                    Error);
    CHECK_THROWS_AS(run1("QuantizeLinear", {x, Tensor::scalar(1.0f), Tensor::scalar<uint8_t>(0)},
                         {attrInt("output_dtype", 3 /* INT8 */)}, 21),
                    Error);
    CHECK_THROWS_AS(run1("QuantizeLinear", {x, Tensor::scalar(1.0f), Tensor::scalar<int32_t>(0)}), Error);
    CHECK_THROWS_AS(run1("MatMulInteger", {u8({2, 2}, {1, 2, 3, 4}), u8({2, 2}, {1, 2, 3, 4}), Tensor::scalar<int8_t>(0)}),
                    Error);
    CHECK_THROWS_AS(run1("ConvInteger", {u8({1, 1, 2, 2}, {1, 2, 3, 4}), i8({1, 1, 1, 1}, {1}), Tensor::scalar<int8_t>(0)}),
                    Error);
  }
  SECTION("unsupported dtypes") {
    CHECK_THROWS_AS(run1("QuantizeLinear", {u8({2}, {1, 2}), Tensor::scalar(1.0f)}), Error);
    CHECK_THROWS_AS(run1("DequantizeLinear", {x, Tensor::scalar(1.0f)}), Error);
    CHECK_THROWS_AS(run1("ConvInteger", {floats({1, 1, 2, 2}, {1, 2, 3, 4}), u8({1, 1, 1, 1}, {1})}), Error);
    CHECK_THROWS_AS(run1("MatMulInteger", {Tensor::fromVector<int16_t>({1, 1}, {1}), u8({1, 1}, {1})}), Error);
    CHECK_THROWS_AS(run1("DynamicQuantizeLinear", {Tensor::fromVector<double>({1}, {1.0})}, {}, 11), Error);
  }
  SECTION("QLinearConv and QLinearMatMul parameters") {
    const Tensor xq = u8({1, 2, 3, 3}, std::vector<uint8_t>(18, 7));
    const Tensor wq = u8({3, 2, 1, 1}, std::vector<uint8_t>(6, 9));
    auto qconv = [&](Tensor ws, Tensor wzp, Tensor bias = {}) {
      return run1("QLinearConv", {xq, Tensor::scalar(0.1f), Tensor::scalar<uint8_t>(0), wq, ws, wzp, Tensor::scalar(0.2f),
                                  Tensor::scalar<uint8_t>(0), bias},
                  {}, 10);
    };
    CHECK_NOTHROW(qconv(floats({3}, {1, 2, 3}), u8({3}, {0, 1, 2})));
    CHECK_THROWS_WITH(qconv(floats({2}, {1, 2}), u8({2}, {0, 1})), Catch::Contains("w_scale has shape [2]"));
    CHECK_THROWS_AS(qconv(floats({3}, {1, 2, 3}), u8({1}, {0})), Error);
    CHECK_THROWS_AS(qconv(Tensor::scalar(1.0f), Tensor::scalar<int8_t>(0)), Error);
    CHECK_THROWS_AS(qconv(Tensor::scalar(1.0f), Tensor::scalar<uint8_t>(0), Tensor::fromVector<int32_t>({2}, {1, 2})),
                    Error);
    CHECK_THROWS_AS(qconv(Tensor::scalar(1.0f), Tensor::scalar<uint8_t>(0), floats({3}, {1, 2, 3})), Error);
    const Tensor a = u8({2, 3}, {1, 2, 3, 4, 5, 6});
    CHECK_THROWS_AS(run1("QLinearMatMul", {a, floats({3}, {1, 1, 1}), u8({3}, {0, 0, 0}), u8({3, 2}, {1, 2, 3, 4, 5, 6}),
                                           Tensor::scalar(1.0f), Tensor::scalar<uint8_t>(0), Tensor::scalar(1.0f),
                                           Tensor::scalar<uint8_t>(0)},
                         {}, 10),
                    Error);
  }
  SECTION("conv geometry") {
    const Tensor xq = u8({1, 2, 3, 3}, std::vector<uint8_t>(18, 7));
    CHECK_THROWS_AS(run1("ConvInteger", {xq, u8({2, 3, 1, 1}, {1, 1, 1, 1, 1, 1})}, {}, 10), Error);  // channels
    CHECK_THROWS_AS(run1("ConvInteger", {xq, u8({1, 2, 4, 4}, std::vector<uint8_t>(32, 1))}, {}, 10), Error);  // empty
    CHECK_THROWS_AS(run1("ConvInteger", {xq, u8({1, 2, 1, 1}, {1, 1})}, {attrInts("strides", {1})}, 10), Error);
    CHECK_THROWS_AS(run1("ConvInteger", {xq, u8({1, 2, 1, 1}, {1, 1})}, {attrString("auto_pad", "SAME")}, 10), Error);
  }
}

TEST_CASE("quantization ops are registered for their ONNX opsets up to 21", "[quant]") {
  std::map<std::string, int> since{{"QuantizeLinear", 10}, {"DequantizeLinear", 10}, {"DynamicQuantizeLinear", 11},
                                   {"ConvInteger", 10},    {"QLinearConv", 10},      {"MatMulInteger", 10},
                                   {"QLinearMatMul", 10}};
  for (const auto& op : engine::supportedOps()) {
    auto it = since.find(op.op_type);
    if (!op.domain.empty() || it == since.end()) continue;
    CHECK(op.since == it->second);
    CHECK(op.until >= 21);
    since.erase(it);
  }
  CHECK(since.empty());
}
