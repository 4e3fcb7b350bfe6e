// oneDNN int8 fast paths (dnnl_int8.cpp) against the reference integer kernels (the oracle):
// int32 outputs bit for bit, requantized outputs within one step and >= 99% exact.
#include <dnnl.hpp>
#include <omp.h>

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <iostream>
#include <random>

#include "engine/kernels/dw_int8.h"
#include "engine/kernels/int8_avx512.h"
#include "engine/kernels/few_int8.h"
#include "engine/kernels/pw_int8.h"
#include "lwc/model_io.h"
#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {
// The int8 fast paths run only where oneDNN's int8 kernels are exact: VNNI (same test as the kernel).
bool int8FastPathHere() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  auto has = [&](dnnl::cpu_isa i) { return (isa & static_cast<unsigned>(i)) == static_cast<unsigned>(i); };
  return has(dnnl::cpu_isa::avx512_core_vnni) || has(dnnl::cpu_isa::avx2_vnni);
}
bool haveAvx512Vnni() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto want = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_vnni);
  return (isa & want) == want;
}
bool haveAmx() {
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  const auto want = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_amx);
  return (isa & want) == want;
}
/// `avx512_only`: oneDNN has a fast kernel for the case only with AVX-512 (e.g. few channels per
/// group); elsewhere the factory sees a `ref` implementation and declines.
std::string expectedImpl(bool avx512_only = false) {
  return int8FastPathHere() && (!avx512_only || haveAvx512Vnni()) ? "dnnl" : "ref";
}

/// QLinearConv (run in NHWC by the session): without VNNI an exact fp32 convolution of the centred
/// integers runs instead of oneDNN's int8 kernels, for every 2-D case with bounded accumulators.
std::string expectedQLinearConvImpl(bool avx512_only = false) {
  return int8FastPathHere() ? expectedImpl(avx512_only) : "dnnl";
}

/// The integer matrix products (QLinearMatMul, MatMulInteger and lwc's fused forms) with constant
/// B: oneDNN's int8 kernels with VNNI, exact fp32 products in parts of K without (F32QMatMul).
std::string expectedQMatMulImpl() { return "dnnl"; }

std::pair<int64_t, int64_t> rangeOf(DType t) {
  return t == DType::Int8 ? std::pair<int64_t, int64_t>{-128, 127} : std::pair<int64_t, int64_t>{0, 255};
}
Tensor randomQ(DType t, Shape s, uint32_t seed) {
  const auto [lo, hi] = rangeOf(t);
  return randomInt(t, std::move(s), seed, lo, hi);
}
Tensor scalarQ(DType t, int64_t v) { return Tensor::scalar<int64_t>(v).cast(t); }
Tensor vectorQ(DType t, const std::vector<int64_t>& v) {
  return Tensor::fromVector<int64_t>({static_cast<int64_t>(v.size())}, v).cast(t);
}

// Element-wise comparison of two 8-bit tensors: how many differ, and by how much at most.
struct QDiff {
  int64_t total = 0, differ = 0, max_abs = 0;
};
QDiff diffQ(const Tensor& got, const Tensor& want) {
  REQUIRE(got.dtype() == want.dtype());
  REQUIRE(got.shape() == want.shape());
  QDiff d;
  d.total = got.numel();
  for (int64_t i = 0; i < got.numel(); ++i) {
    const auto e = static_cast<int64_t>(std::llround(std::abs(got.at(i) - want.at(i))));
    d.differ += e != 0;
    d.max_abs = std::max(d.max_abs, e);
  }
  return d;
}
// Most requantized outputs lie inside the type's range, not on its ends: a comparison saw the sums.
void checkMostlyInside(const Tensor& want) {
  const auto [lo, hi] = rangeOf(want.dtype());
  int64_t inside = 0;
  for (int64_t i = 0; i < want.numel(); ++i) inside += want.at(i) > lo && want.at(i) < hi;
  CHECK(inside * 2 > want.numel());
}
// Requantized results: within one step everywhere, exact on at least 99% of the elements, and not
// saturated everywhere (the scales of the random cases keep most outputs inside the range).
void checkRequantized(const Tensor& got, const Tensor& want) {
  const QDiff d = diffQ(got, want);
  INFO(d.differ << " of " << d.total << " elements differ, by at most " << d.max_abs);
  CHECK(d.max_abs <= 1);
  CHECK(d.differ * 100 <= d.total);
  checkMostlyInside(want);
}

// Inputs 1.. n-1 except `runtime` are constants (input 0, the activations, is always fed).
std::vector<size_t> indicesExcept(size_t n, std::initializer_list<size_t> runtime) {
  std::vector<size_t> r;
  for (size_t i = 1; i < n; ++i)
    if (std::find(runtime.begin(), runtime.end(), i) == runtime.end()) r.push_back(i);
  return r;
}

// ---- Convolutions ----

struct QConvCase {
  const char* name;
  Shape x, w;
  int64_t group = 1;
  std::vector<int64_t> strides{1, 1}, pads{0, 0, 0, 0}, dilations{1, 1};
  DType xt = DType::UInt8, yt = DType::UInt8;
  DType wt = DType::Int8;  ///< UInt8: weights with zero point 128
  bool per_channel = false, bias = false;
  bool runtime_zp = false;  ///< x (and y) zero points fed at run time
  std::string auto_pad;
  bool avx512_only = false;  ///< see expectedImpl
  /// Per-channel: channel 0's weight scale times 10^6, so its multiplier rules out the four-at-a-time
  /// requantization of the own kernels (int8k::saturationExact fails) and channel 0 saturates.
  bool huge_first_channel = false;
};

std::vector<onnx::AttributeProto> convAttrs(const QConvCase& c) {
  std::vector<onnx::AttributeProto> a{attrInt("group", c.group), attrInts("strides", c.strides),
                                      attrInts("dilations", c.dilations)};
  if (c.auto_pad.empty()) a.push_back(attrInts("pads", c.pads));
  else a.push_back(attrString("auto_pad", c.auto_pad));
  return a;
}

int64_t zpOf(DType t, uint32_t seed) { return t == DType::UInt8 ? 100 + seed % 50 : -10 + static_cast<int64_t>(seed % 20); }

NodeSpec qlinearConvSpec(const QConvCase& c, uint32_t seed) {
  const int64_t M = c.w[0], K = numelOf(c.w) / M;
  const Tensor x = randomQ(c.xt, c.x, seed);
  const Tensor w = randomQ(c.wt, c.w, seed + 1);
  // acc has a standard deviation of about sqrt(K) * 74 * 74: aim the outputs at about +-40 steps.
  const float xs = 0.05f, ws_base = 0.01f;
  const float mult = 40.0f / (std::sqrt(static_cast<float>(K)) * 5500.0f);
  const float ys = xs * ws_base / mult;
  std::vector<float> ws(c.per_channel ? M : 1);
  for (size_t m = 0; m < ws.size(); ++m) ws[m] = ws_base * (0.6f + 0.8f * static_cast<float>((m * 37 + seed) % 64) / 64.0f);
  if (c.huge_first_channel) ws[0] *= 1e6f;
  const Shape pshape = c.per_channel ? Shape{M} : Shape{};
  const int64_t wzp = c.wt == DType::UInt8 ? 128 : 0;
  NodeSpec s;
  s.op_type = "QLinearConv";
  s.opset = 10;
  s.attrs = convAttrs(c);
  s.inputs = {x,
              Tensor::scalar(xs),
              scalarQ(c.xt, zpOf(c.xt, seed)),
              w,
              Tensor::fromVector<float>(pshape, ws),
              Tensor::fromVector<int64_t>(pshape, std::vector<int64_t>(ws.size(), wzp)).cast(c.wt),
              Tensor::scalar(ys),
              scalarQ(c.yt, zpOf(c.yt, seed + 7))};
  if (c.bias) s.inputs.push_back(randomInt(DType::Int32, {M}, seed + 2, -30000, 30000));
  s.constant_inputs = c.runtime_zp ? indicesExcept(s.inputs.size(), {2, 7}) : indicesExcept(s.inputs.size(), {});
  return s;
}

NodeSpec convIntegerSpec(const QConvCase& c, uint32_t seed, bool with_x_zp = true) {
  NodeSpec s;
  s.op_type = "ConvInteger";
  s.opset = 10;
  s.attrs = convAttrs(c);
  s.inputs = {randomQ(c.xt, c.x, seed), randomQ(c.wt, c.w, seed + 1)};
  if (with_x_zp) s.inputs.push_back(scalarQ(c.xt, zpOf(c.xt, seed)));
  if (c.wt == DType::UInt8) {
    if (!with_x_zp) s.inputs.push_back(Tensor());
    s.inputs.push_back(c.per_channel ? vectorQ(c.wt, std::vector<int64_t>(c.w[0], 128)) : scalarQ(c.wt, 128));
  }
  s.constant_inputs = c.runtime_zp ? indicesExcept(s.inputs.size(), {2}) : indicesExcept(s.inputs.size(), {});
  return s;
}

const std::vector<QConvCase>& convCases() {
  static const std::vector<QConvCase> cases = [] {
    std::vector<QConvCase> v;
    QConvCase c;
    c = {"3x3 pad 1, u8 -> u8, per-channel, bias, batch 2", {2, 16, 12, 12}, {32, 16, 3, 3}};
    c.pads = {1, 1, 1, 1}, c.per_channel = true, c.bias = true;
    v.push_back(c);
    c = {"stride 2, asymmetric pads, s8 -> s8, per-tensor", {1, 8, 15, 13}, {16, 8, 3, 3}};
    c.strides = {2, 2}, c.pads = {0, 1, 1, 0}, c.xt = DType::Int8, c.yt = DType::Int8;
    v.push_back(c);
    c = {"depthwise, u8 -> u8, per-channel, bias, batch 2", {2, 32, 10, 10}, {32, 1, 3, 3}, 32};
    c.pads = {1, 1, 1, 1}, c.per_channel = true, c.bias = true;
    v.push_back(c);
    c = {"depthwise stride 2, s8 -> u8", {1, 24, 11, 11}, {24, 1, 3, 3}, 24};
    c.strides = {2, 2}, c.pads = {1, 1, 1, 1}, c.xt = DType::Int8;
    v.push_back(c);
    c = {"grouped, u8 -> s8, bias", {1, 16, 9, 9}, {24, 4, 3, 3}, 4};
    c.yt = DType::Int8, c.bias = true, c.per_channel = true, c.avx512_only = true;  // AVX2-VNNI: ref only
    v.push_back(c);
    c = {"dilated, pad 2", {1, 8, 16, 16}, {8, 8, 3, 3}};
    c.dilations = {2, 2}, c.pads = {2, 2, 2, 2}, c.bias = true;
    v.push_back(c);
    c = {"1x1, batch 3, s8 -> u8, per-channel", {3, 64, 7, 7}, {48, 64, 1, 1}};
    c.xt = DType::Int8, c.per_channel = true;
    v.push_back(c);
    c = {"uint8 weights with zero point 128", {2, 8, 10, 10}, {16, 8, 3, 3}};
    c.wt = DType::UInt8, c.pads = {1, 1, 1, 1}, c.bias = true;
    v.push_back(c);
    c = {"runtime zero points, stride 2", {2, 16, 14, 14}, {32, 16, 3, 3}};
    c.runtime_zp = true, c.strides = {2, 2}, c.pads = {1, 1, 1, 1}, c.per_channel = true, c.bias = true;
    v.push_back(c);
    c = {"runtime zero points, depthwise, s8", {1, 16, 8, 8}, {16, 1, 3, 3}, 16};
    c.runtime_zp = true, c.pads = {1, 1, 1, 1}, c.xt = DType::Int8, c.yt = DType::Int8;
    v.push_back(c);
    c = {"first layer: 1 channel, 5x5, batch 4", {4, 1, 28, 28}, {6, 1, 5, 5}};
    c.pads = {2, 2, 2, 2}, c.bias = true;
    v.push_back(c);
    c = {"SAME_UPPER stride 2", {1, 8, 11, 11}, {8, 8, 3, 3}};
    c.strides = {2, 2}, c.auto_pad = "SAME_UPPER";
    v.push_back(c);
    return v;
  }();
  return cases;
}
}  // namespace

TEST_CASE("dnnl QLinearConv matches the reference within one step", "[dnnl][quant]") {
  uint32_t seed = 100;
  for (const auto& c : convCases()) {
    INFO(c.name);
    const NodeSpec s = qlinearConvSpec(c, seed += 10);
    // Without VNNI the fp32 path exists only in NHWC, where the session does not take runtime zero
    // points or auto_pad.
    const bool nhwc = !c.runtime_zp && c.auto_pad.empty();
    CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearConv") ==
          (int8FastPathHere() || nhwc ? expectedQLinearConvImpl(c.avx512_only) : "ref"));
    const Tensor got = runNode(s)[0], want = runNode(s, /*reference_only=*/true)[0];
    checkRequantized(got, want);
    if (!int8FastPathHere()) CHECK(got.bitEqual(want));  // the fp32 path is exact
  }
}

TEST_CASE("dnnl ConvInteger matches the reference exactly", "[dnnl][quant]") {
  uint32_t seed = 500;
  for (const auto& c : convCases()) {
    INFO(c.name);
    for (bool with_zp : {true, false}) {
      if (c.runtime_zp && !with_zp) continue;
      INFO("x zero point " << (with_zp ? "given" : "absent"));
      const NodeSpec s = convIntegerSpec(c, seed += 10, with_zp);
      CHECK(implOf(engine::Session(singleNodeModel(s)), "ConvInteger") == expectedImpl(c.avx512_only));
      const Tensor got = runNode(s)[0], want = runNode(s, true)[0];
      CHECK(got.bitEqual(want));
    }
  }
  SECTION("accumulators near 2^24 stay exact") {
    // 255 * 127 * 512 = 16,581,120 <= 2^24: the largest values the fast path accepts here.
    QConvCase c{"", {1, 512, 3, 3}, {16, 512, 1, 1}};
    NodeSpec s = convIntegerSpec(c, 1, false);
    s.inputs[0] = Tensor::fromVector<uint8_t>(c.x, std::vector<uint8_t>(512 * 9, 255));
    std::vector<int8_t> w(16 * 512, 127);
    for (size_t i = 0; i < w.size(); i += 7) w[i] = 126;  // odd sums: any float32 rounding shows
    s.inputs[1] = Tensor::fromVector<int8_t>(c.w, w);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "ConvInteger") == expectedImpl());
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
    // The same through oneDNN's zero-point compensation: x = 0 with zero point 255.
    s.inputs[0] = Tensor::fromVector<uint8_t>(c.x, std::vector<uint8_t>(512 * 9, 0));
    s.inputs.push_back(scalarQ(DType::UInt8, 255));
    s.constant_inputs = {1, 2};
    CHECK(implOf(engine::Session(singleNodeModel(s)), "ConvInteger") == expectedImpl());
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
  }
  SECTION("weights whose accumulators may pass 2^24 go to the reference") {
    QConvCase c{"", {1, 512, 5, 5}, {8, 512, 3, 3}};
    const NodeSpec s = convIntegerSpec(c, 3);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "ConvInteger") == "ref");
    // QLinearConv runs them: with VNNI on oneDNN's int8 kernel, without in fp32 parts (test below).
    const NodeSpec q = qlinearConvSpec(c, 4);
    CHECK(implOf(engine::Session(singleNodeModel(q)), "QLinearConv") == "dnnl");
  }
}

// 7-bit weights (|w| <= 64, what `lwc quantize --reduce-range` writes) with uint8 sources: oneDNN's
// int8 kernels are exact on any x86 CPU, VNNI or not (255 * 64 * 2 = 32640 fits the int16 pair sums
// of vpmaddubsw), so they run everywhere. ConvInteger and MatMulInteger have no other fast path,
// so "dnnl" there means oneDNN's int8 kernel ran, and their int32 outputs must be bit-exact.
TEST_CASE("dnnl int8 kernels run 7-bit weights with uint8 sources on any CPU", "[dnnl][quant]") {
  QConvCase c{"", {2, 32, 6, 6}, {16, 32, 3, 3}};
  c.pads = {1, 1, 1, 1};
  SECTION("ConvInteger at the saturation edge: x = 255, w = +-64") {
    for (int sign : {1, -1}) {
      INFO("sign " << sign);
      NodeSpec s = convIntegerSpec(c, 11, /*with_x_zp=*/false);
      s.inputs[0] = Tensor::fromVector<uint8_t>(c.x, std::vector<uint8_t>(static_cast<size_t>(numelOf(c.x)), 255));
      std::vector<int8_t> w(static_cast<size_t>(numelOf(c.w)), static_cast<int8_t>(64 * sign));
      for (size_t i = 0; i < w.size(); i += 5) w[i] = static_cast<int8_t>(63 * sign);  // one step off: wrong sums show
      s.inputs[1] = Tensor::fromVector<int8_t>(c.w, w);
      CHECK(implOf(engine::Session(singleNodeModel(s)), "ConvInteger") == "dnnl");
      CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
    }
  }
  SECTION("ConvInteger and QLinearConv, random 7-bit weights, every uint8 case") {
    uint32_t seed = 2000;
    for (QConvCase k : convCases()) {
      if (k.xt != DType::UInt8 || k.wt != DType::Int8) continue;
      INFO(k.name);
      NodeSpec s = convIntegerSpec(k, seed += 10);
      s.inputs[1] = randomInt(DType::Int8, k.w, seed, -64, 64);
      CHECK(implOf(engine::Session(singleNodeModel(s)), "ConvInteger") == (haveAvx512Vnni() || !k.avx512_only ? "dnnl" : "ref"));
      CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
      NodeSpec q = qlinearConvSpec(k, seed + 1);
      q.inputs[3] = randomInt(DType::Int8, k.w, seed + 2, -64, 64);
      checkRequantized(runNode(q)[0], runNode(q, true)[0]);
    }
  }
  SECTION("one weight of 65, or an int8 source: not oneDNN's int8 kernel without VNNI") {
    NodeSpec s = convIntegerSpec(c, 12);
    s.inputs[1] = randomInt(DType::Int8, c.w, 13, -64, 64);
    s.inputs[1].data<int8_t>()[7] = 65;
    CHECK(implOf(engine::Session(singleNodeModel(s)), "ConvInteger") == expectedImpl());
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
    QConvCase k = c;
    k.xt = DType::Int8;
    s = convIntegerSpec(k, 14);
    s.inputs[1] = randomInt(DType::Int8, k.w, 15, -64, 64);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "ConvInteger") == expectedImpl());
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
  }
}

TEST_CASE("dnnl int8 convolutions decline what they do not run exactly", "[dnnl][quant]") {
  QConvCase c{"", {1, 8, 6, 6}, {8, 8, 3, 3}};
  SECTION("asymmetric int8 weights whose shifted values leave int8") {
    NodeSpec s = qlinearConvSpec(c, 1);
    s.inputs[5] = scalarQ(DType::Int8, 3);
    std::vector<int8_t> w(8 * 8 * 9, 5);
    w[0] = -128;  // -128 - 3 does not fit
    s.inputs[3] = Tensor::fromVector<int8_t>(c.w, w);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearConv") == "ref");
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
  }
  SECTION("asymmetric int8 weights that still fit int8 run shifted") {
    NodeSpec s = qlinearConvSpec(c, 2);
    s.inputs[5] = scalarQ(DType::Int8, 3);
    s.inputs[3] = randomInt(DType::Int8, c.w, 9, -100, 100);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearConv") == expectedQLinearConvImpl());
    checkRequantized(runNode(s)[0], runNode(s, true)[0]);
  }
  SECTION("runtime weights") {
    NodeSpec s = qlinearConvSpec(c, 3);
    s.constant_inputs = indicesExcept(s.inputs.size(), {3});
    CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearConv") == "ref");
  }
  SECTION("runtime scales") {
    NodeSpec s = qlinearConvSpec(c, 4);
    s.constant_inputs = indicesExcept(s.inputs.size(), {6});
    CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearConv") == "ref");
  }
  SECTION("1-D and 3-D convolutions") {
    QConvCase c1{"", {1, 4, 9}, {4, 4, 3}};
    c1.strides = {1}, c1.pads = {1, 1}, c1.dilations = {1};
    NodeSpec s = qlinearConvSpec(c1, 5);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearConv") == "ref");
    QConvCase c3{"", {1, 4, 5, 5, 5}, {4, 4, 3, 3, 3}};
    c3.strides = {1, 1, 1}, c3.pads = {0, 0, 0, 0, 0, 0}, c3.dilations = {1, 1, 1};
    s = convIntegerSpec(c3, 6);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "ConvInteger") == "ref");
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
  }
}

// Without VNNI a QLinearConv runs as an fp32 convolution of the centred integers, exact while every
// partial sum stays within 2^24. Where the weights' bounds allow more (a 3x3 layer over 512 channels
// of full-range weights), its input channels are split into parts that each stay within it
// (exactF32Parts), one fp32 convolution per part, and the parts' integer results are added in
// int32: the reference's bits. Until 2026-12-07 such layers ran the reference kernel (deeplabv3's
// 3x3 convolutions over 960 channels: 30-90 ms each at batch 1 on a 2-core AVX2 EPYC, 6.6-7.0 ms in
// parts). With VNNI oneDNN's int8 kernel runs them, within one step of the reference.
TEST_CASE("without VNNI a QLinearConv whose sums may pass 2^24 runs in fp32 parts of its input channels with the reference's bits", "[dnnl][quant][f32parts]") {
  struct Case {
    QConvCase c;
    int64_t x_lo, x_hi, x_zp, w_lo, w_hi;
    float y_steps;  ///< y_scale: the typical |acc| lands this many steps from the zero point
  };
  std::vector<Case> cases;
  QConvCase c{"3x3 over 512 channels, u8 with zero point 0, sums past 2^24, per-channel, bias", {1, 512, 6, 6}, {8, 512, 3, 3}};
  c.pads = {1, 1, 1, 1}, c.per_channel = c.bias = true;
  cases.push_back({c, 128, 255, 0, -20, 127, 60});
  c = {"1x1 over 4096 channels, s8 with zero point -10, batch 2", {2, 4096, 3, 3}, {16, 4096, 1, 1}};
  c.xt = DType::Int8;
  cases.push_back({c, -128, 127, -10, -127, 127, 30});
  c = {"3x3 dilated 2 over 256 channels, pad 2, u8 -> s8", {1, 256, 9, 9}, {8, 256, 3, 3}};
  c.dilations = {2, 2}, c.pads = {2, 2, 2, 2}, c.yt = DType::Int8, c.bias = true;
  cases.push_back({c, 0, 255, 0, -30, 127, 40});
  c = {"3x3 stride 2 over 384 channels, asymmetric pads, batch 3", {3, 384, 7, 8}, {16, 384, 3, 3}};
  c.strides = {2, 2}, c.pads = {0, 1, 1, 0}, c.per_channel = true;
  cases.push_back({c, 100, 255, 7, -127, 127, 30});
  uint32_t seed = 900;
  for (const auto& [qc, x_lo, x_hi, x_zp, w_lo, w_hi, y_steps] : cases) {
    INFO(qc.name);
    NodeSpec s = qlinearConvSpec(qc, seed += 10);
    s.inputs[0] = randomInt(qc.xt, qc.x, seed + 3, x_lo, x_hi);
    s.inputs[2] = scalarQ(qc.xt, x_zp);
    s.inputs[3] = randomInt(DType::Int8, qc.w, seed + 4, w_lo, w_hi);
    // |acc| is about K * E|x - zp| * E|w|; y_scale puts it y_steps steps from the zero point.
    const int64_t K = numelOf(qc.w) / qc.w[0];
    const double acc = static_cast<double>(K) * std::max(std::abs(x_lo - x_zp), std::abs(x_hi - x_zp)) / 2 *
                       std::max(std::abs(w_lo), std::abs(w_hi)) / 2;
    s.inputs[6] = Tensor::scalar(static_cast<float>(0.05 * 0.01 * acc / y_steps));
    const Tensor want = runNode(s, /*reference_only=*/true)[0];
    for (int threads : {1, 2, 3}) {
      INFO("threads " << threads);
      const auto [got, prof] = runProfiledOnThreads(s, "QLinearConv", threads);
      INFO(prof.impl << " " << prof.primitive);
      CHECK(prof.impl == "dnnl");
      const QDiff d = diffQ(got, want);
      INFO(d.differ << " of " << d.total << " elements differ, by at most " << d.max_abs);
      if (int8FastPathHere()) {
        CHECK(d.max_abs <= 1);
        CHECK(d.differ * 100 <= d.total);
      } else {
        CHECK(prof.primitive.find(" parts") != std::string::npos);
        CHECK(d.differ == 0);
      }
    }
    engine::configureThreads(0);
    checkMostlyInside(want);
  }
  SECTION("a grouped convolution whose groups would need parts goes to the reference") {
    QConvCase g{"", {1, 1024, 4, 4}, {8, 512, 3, 3}, 2};
    g.pads = {1, 1, 1, 1};
    NodeSpec s = qlinearConvSpec(g, 7);
    s.inputs[2] = scalarQ(DType::UInt8, 0);
    s.inputs[3] = randomInt(DType::Int8, g.w, 8, 60, 127);
    if (!int8FastPathHere()) CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearConv") == "ref");
    CHECK(diffQ(runNode(s)[0], runNode(s, true)[0]).max_abs <= (int8FastPathHere() ? 1 : 0));
  }
}

TEST_CASE("dnnl QLinearConv handles a batch change between runs", "[dnnl][quant]") {
  QConvCase c{"", {1, 8, 9, 9}, {16, 8, 3, 3}};
  c.pads = {1, 1, 1, 1}, c.per_channel = true, c.bias = true;
  const NodeSpec s = qlinearConvSpec(c, 42);
  Model m = singleNodeModel(s);
  m.graph.inputs[0].shape->at(0) = Dim{-1, "N"};
  engine::Session fast(m);
  engine::Session ref(m, engine::SessionOptions{0, true});
  CHECK(implOf(fast, "QLinearConv") == expectedQLinearConvImpl());
  for (int64_t n : {1, 3, 2}) {
    engine::TensorMap feeds{{"in0", randomQ(DType::UInt8, {n, 8, 9, 9}, static_cast<uint32_t>(n))}};
    const auto a = fast.runOrdered(feeds), b = ref.runOrdered(feeds);
    CHECK(a[0].shape() == Shape{n, 16, 9, 9});
    checkRequantized(a[0], b[0]);
  }
}

TEST_CASE("dnnl QLinearConv depthwise layers match the reference on 1, 2 and 3 threads", "[dnnl][quant]") {
  // Shapes the mobile networks have and the cases above do not: channels not a multiple of 8,
  // 5x5, dilation, int8 weights with a zero point, and a layer large enough for all threads.
  // Exact without VNNI (the fp32 path), within one step with it.
  std::vector<QConvCase> cases;
  QConvCase c{"3x3 pad 1, 13 channels, u8 -> u8, per-channel, bias, batch 3", {3, 13, 9, 7}, {13, 1, 3, 3}, 13};
  c.pads = {1, 1, 1, 1}, c.per_channel = c.bias = true;
  cases.push_back(c);
  c = {"5x5 stride 2, asymmetric pads, s8 -> s8", {1, 24, 15, 12}, {24, 1, 5, 5}, 24};
  c.strides = {2, 2}, c.pads = {2, 1, 1, 2}, c.xt = DType::Int8, c.yt = DType::Int8;
  cases.push_back(c);
  c = {"3x3 dilation 2, no padding, u8 -> s8, per-tensor", {2, 40, 12, 12}, {40, 1, 3, 3}, 40};
  c.dilations = {2, 2}, c.yt = DType::Int8, c.bias = true;
  cases.push_back(c);
  c = {"large enough for all threads: 2 x 64 x 40 x 40, stride 1", {2, 64, 40, 40}, {64, 1, 3, 3}, 64};
  c.pads = {1, 1, 1, 1}, c.per_channel = c.bias = true;
  cases.push_back(c);
  c = {"uint8 weights with zero point 128, stride 2", {1, 32, 14, 14}, {32, 1, 3, 3}, 32};
  c.wt = DType::UInt8, c.strides = {2, 2}, c.pads = {1, 1, 1, 1}, c.per_channel = true;
  cases.push_back(c);
  uint32_t seed = 900;
  for (const auto& cc : cases) {
    INFO(cc.name);
    const NodeSpec s = qlinearConvSpec(cc, seed += 10);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearConv") == "dnnl");
    const Tensor want = runNode(s, /*reference_only=*/true)[0];
    for (int threads : {1, 2, 3}) {
      engine::configureThreads(threads);
      const Tensor got = runNode(s)[0];
      checkRequantized(got, want);
      if (!int8FastPathHere()) CHECK(got.bitEqual(want));
    }
    engine::configureThreads(0);
  }
}

// ---- Matrix products ----

namespace {
struct QMatCase {
  const char* name;
  Shape a;
  int64_t n;
  DType at = DType::UInt8, yt = DType::UInt8;
  DType bt = DType::Int8;  ///< UInt8: per-column zero points near 128
  bool per_column = false;
  bool runtime_zp = false;
};

std::vector<int64_t> columnZeroPoints(const QMatCase& c) {
  std::vector<int64_t> z(c.per_column ? c.n : 1, 0);
  if (c.bt == DType::UInt8)
    for (size_t i = 0; i < z.size(); ++i) z[i] = 120 + static_cast<int64_t>(i % 9);
  return z;
}
// uint8 B with values whose distance to the zero point fits int8.
Tensor randomB(const QMatCase& c, int64_t k, uint32_t seed) {
  return c.bt == DType::UInt8 ? randomInt(DType::UInt8, {k, c.n}, seed, 0, 247) : randomQ(DType::Int8, {k, c.n}, seed);
}

NodeSpec qlinearMatMulSpec(const QMatCase& c, uint32_t seed) {
  const int64_t K = c.a.back(), N = c.n;
  const float as = 0.03f, bs_base = 0.01f;
  const float mult = 40.0f / (std::sqrt(static_cast<float>(K)) * 5500.0f);
  const float ys = as * bs_base / mult;
  std::vector<float> bs(c.per_column ? N : 1);
  for (size_t i = 0; i < bs.size(); ++i) bs[i] = bs_base * (0.6f + 0.8f * static_cast<float>((i * 29 + seed) % 64) / 64.0f);
  const Shape psh = c.per_column ? Shape{N} : Shape{};
  NodeSpec s;
  s.op_type = "QLinearMatMul";
  s.opset = 10;
  s.inputs = {randomQ(c.at, c.a, seed),
              Tensor::scalar(as),
              scalarQ(c.at, zpOf(c.at, seed)),
              randomB(c, K, seed + 1),
              Tensor::fromVector<float>(psh, bs),
              Tensor::fromVector<int64_t>(psh, columnZeroPoints(c)).cast(c.bt),
              Tensor::scalar(ys),
              scalarQ(c.yt, zpOf(c.yt, seed + 3))};
  s.constant_inputs = c.runtime_zp ? indicesExcept(8, {2, 7}) : indicesExcept(8, {});
  return s;
}

// acc · a_scale · b_scale of a QLinearMatMul spec's inputs 0-5 (per-tensor a), row-major [M, N], in
// double: the definition the fused kernels are checked against.
std::vector<double> scaledProducts(const NodeSpec& s) {
  const Tensor &a = s.inputs[0], &b = s.inputs[3], &bs = s.inputs[4], &bz = s.inputs[5];
  const double as = s.inputs[1].at(0), az = s.inputs[2].at(0);
  const int64_t K = b.dim(0), N = b.dim(1), M = a.numel() / K;
  std::vector<double> v(static_cast<size_t>(M * N));
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      const int64_t pc = bs.numel() == 1 ? 0 : n;
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += (a.at(m * K + k) - az) * (b.at(k * N + n) - bz.at(pc));
      v[static_cast<size_t>(m * N + n)] = acc * as * bs.at(pc);
    }
  return v;
}

NodeSpec matMulIntegerSpec(const QMatCase& c, uint32_t seed) {
  NodeSpec s;
  s.op_type = "MatMulInteger";
  s.opset = 10;
  s.inputs = {randomQ(c.at, c.a, seed), randomB(c, c.a.back(), seed + 1), scalarQ(c.at, zpOf(c.at, seed))};
  const auto z = columnZeroPoints(c);
  if (c.bt == DType::UInt8 || c.per_column)
    s.inputs.push_back(c.per_column ? vectorQ(c.bt, z) : scalarQ(c.bt, z[0]));
  s.constant_inputs = c.runtime_zp ? indicesExcept(s.inputs.size(), {2}) : indicesExcept(s.inputs.size(), {});
  return s;
}

const std::vector<QMatCase>& matCases() {
  static const std::vector<QMatCase> cases = [] {
    std::vector<QMatCase> v;
    QMatCase c;
    c = {"2-D, u8 x s8 -> u8", {7, 64}, 48};
    v.push_back(c);
    c = {"rank 3 (leading dims flattened), per-column, s8 -> s8", {2, 5, 96}, 40};
    c.at = DType::Int8, c.yt = DType::Int8, c.per_column = true;
    v.push_back(c);
    c = {"uint8 B with per-column zero points", {3, 33}, 17};
    c.bt = DType::UInt8, c.per_column = true;
    v.push_back(c);
    c = {"runtime zero points, one row", {1, 128}, 64};
    c.runtime_zp = true, c.per_column = true, c.yt = DType::Int8;
    v.push_back(c);
    c = {"rank 4, s8 -> u8", {2, 2, 3, 50}, 30};
    c.at = DType::Int8;
    v.push_back(c);
    return v;
  }();
  return cases;
}
}  // namespace

TEST_CASE("dnnl QLinearMatMul matches the reference within one step", "[dnnl][quant][f32parts]") {
  uint32_t seed = 900;
  for (const auto& c : matCases()) {
    INFO(c.name);
    const NodeSpec s = qlinearMatMulSpec(c, seed += 10);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearMatMul") == expectedQMatMulImpl());
    const Tensor got = runNode(s)[0], want = runNode(s, true)[0];
    checkRequantized(got, want);
    if (!int8FastPathHere()) CHECK(got.bitEqual(want));  // F32QMatMul is exact
  }
}

// Without VNNI, QLinearMatMul (and lwc's form with a bias) over a long K whose sums pass 2^24 runs
// as fp32 products over parts of K (F32QMatMul): the reference's bits. With VNNI oneDNN's int8
// kernel runs them, within one step.
TEST_CASE("without VNNI QLinearMatMul with 8-bit B and sums past 2^24 runs in fp32 parts of K with the reference's bits", "[dnnl][quant][f32parts]") {
  for (const bool bias : {false, true}) {
    for (const DType at : {DType::UInt8, DType::Int8}) {
      INFO((bias ? "with bias, " : "") << dtypeName(at) << " A");
      QMatCase c{"", {2, 3, 4096}, 40};
      c.at = at, c.per_column = true;
      NodeSpec s = qlinearMatMulSpec(c, 77);
      const bool u8 = at == DType::UInt8;
      s.inputs[0] = randomInt(at, c.a, 78, u8 ? 128 : -128, u8 ? 255 : 127);
      s.inputs[2] = scalarQ(at, u8 ? 0 : -5);
      s.inputs[3] = randomInt(DType::Int8, {4096, 40}, 79, u8 ? -20 : -127, 127);
      // Typical |acc|: 4096 * 191 * 53 (u8 A, mostly positive B) or about sqrt(4096) * 74 * 73 (s8
      // A, symmetric B); about 50 steps.
      const float acc = u8 ? 4096.0f * 191.0f * 53.0f : 64.0f * 74.0f * 73.0f;
      s.inputs[6] = Tensor::scalar(0.03f * 0.01f * acc / 50.0f);
      if (bias) {
        s.domain = "lwc.internal";
        s.opset = 1;
        std::vector<float> bv(40);
        for (size_t j = 0; j < bv.size(); ++j) bv[j] = 0.5f * (static_cast<float>(j % 9) - 4.0f);
        s.inputs.push_back(Tensor::fromVector<float>({40}, bv));
        s.constant_inputs = indicesExcept(9, {});
      }
      const Tensor want = runNode(s, /*reference_only=*/true)[0];
      if (u8) {  // the sums do pass 2^24
        const std::vector<double> p = scaledProducts(s);
        CHECK(std::any_of(p.begin(), p.end(), [](double v) { return std::abs(v) / (0.03 * 0.01 * 1.4) > (1 << 24); }));
      }
      for (int threads : {1, 2, 3}) {
        INFO("threads " << threads);
        const auto [got, prof] = runProfiledOnThreads(s, "QLinearMatMul", threads);
        INFO(prof.impl << " " << prof.primitive);
        CHECK(prof.impl == "dnnl");
        const QDiff d = diffQ(got, want);
        if (int8FastPathHere()) {
          CHECK(d.max_abs <= 1);
        } else {
          if (u8) CHECK(prof.primitive.find(" parts") != std::string::npos);
          CHECK(d.differ == 0);
        }
      }
      engine::configureThreads(0);
      checkMostlyInside(want);
    }
  }
}

TEST_CASE("lwc.internal.QLinearMatMul adds its float bias to the accumulator in oneDNN and in the reference", "[dnnl][quant][f32parts]") {
  // What the engine runs for DQ -> MatMul -> Add(bias) -> Q (a Linear layer on 3-D inputs): y =
  // saturate(rne((acc + c / (a_scale * b_scale)) * M) + y_zp). The bias is large enough to move most
  // outputs by several steps, so a kernel that dropped it or added it in the wrong units fails.
  uint32_t seed = 3100;
  for (const auto& c : matCases()) {
    if (c.runtime_zp) continue;
    INFO(c.name);
    NodeSpec s = qlinearMatMulSpec(c, seed += 10);
    s.domain = "lwc.internal";
    s.opset = 1;
    const float ys = s.inputs[6].data<float>()[0];
    std::vector<float> bias(static_cast<size_t>(c.n));
    for (size_t j = 0; j < bias.size(); ++j) bias[j] = ys * (static_cast<float>(j % 13) - 6.0f) * 1.7f;
    s.inputs.push_back(Tensor::fromVector<float>(c.n % 2 ? Shape{c.n} : Shape{1, c.n}, bias));
    s.constant_inputs = indicesExcept(9, {});
    CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearMatMul") == expectedQMatMulImpl());
    const Tensor got = runNode(s)[0], want = runNode(s, true)[0];
    checkRequantized(got, want);
    if (!int8FastPathHere()) CHECK(got.bitEqual(want));  // F32QMatMul is exact
    // The reference against the definition, in double.
    const std::vector<double> p = scaledProducts(s);
    const double yz = s.inputs[7].at(0);
    const auto [ilo, ihi] = rangeOf(want.dtype());
    const double lo = static_cast<double>(ilo), hi = static_cast<double>(ihi);
    int64_t off = 0, moved = 0;
    for (size_t i = 0; i < p.size(); ++i) {
      const double q = std::clamp(std::nearbyint((p[i] + bias[i % bias.size()]) / ys) + yz, lo, hi);
      const double q0 = std::clamp(std::nearbyint(p[i] / ys) + yz, lo, hi);
      off = std::max<int64_t>(off, static_cast<int64_t>(std::llround(std::abs(q - want.at(static_cast<int64_t>(i))))));
      moved += std::abs(q - q0) >= 2;
    }
    CHECK(off <= 1);
    CHECK(moved * 3 > static_cast<int64_t>(p.size()));
  }
  SECTION("a bias that is not one float per output column is refused by name") {
    NodeSpec s = qlinearMatMulSpec(matCases()[0], 7);
    s.domain = "lwc.internal";
    s.opset = 1;
    s.inputs.push_back(Tensor::fromVector<float>({3}, {1, 2, 3}));
    s.constant_inputs = indicesExcept(9, {});
    CHECK(implOf(engine::Session(singleNodeModel(s)), "QLinearMatMul") == "ref");
    CHECK_THROWS_WITH(runNode(s), Catch::Contains("bias must be float32 with one value per output column (48)"));
  }
}

TEST_CASE("lwc.internal.MatMulIntegerToFloat computes acc times the scales plus the bias in oneDNN and in the reference", "[dnnl][quant][f32parts]") {
  // DQ(a) -> MatMul(DQ(b)) -> Add(bias) with a float output (engine fusion of a Linear layer read
  // by float ops): y = acc * a_scale * b_scale + bias, against the definition in double.
  uint32_t seed = 3300;
  for (const auto& c : matCases()) {
    if (c.runtime_zp) continue;
    INFO(c.name);
    const NodeSpec q = qlinearMatMulSpec(c, seed += 10);
    NodeSpec s;
    s.op_type = "MatMulIntegerToFloat";
    s.domain = "lwc.internal";
    s.opset = 1;
    s.inputs = {q.inputs[0], q.inputs[1], q.inputs[2], q.inputs[3], q.inputs[4], q.inputs[5]};
    std::vector<float> bias(static_cast<size_t>(c.n));
    for (size_t j = 0; j < bias.size(); ++j) bias[j] = 0.25f * (static_cast<float>(j % 7) - 3.0f);
    s.inputs.push_back(Tensor::fromVector<float>(c.n % 2 ? Shape{c.n} : Shape{1, c.n}, bias));
    s.constant_inputs = indicesExcept(7, {});
    CHECK(implOf(engine::Session(singleNodeModel(s)), "MatMulIntegerToFloat") == expectedQMatMulImpl());
    const std::vector<double> p = scaledProducts(s);
    for (bool reference : {false, true}) {
      const Tensor y = runNode(s, reference)[0];
      REQUIRE(y.numel() == static_cast<int64_t>(p.size()));
      double worst = 0, largest = 0;
      for (size_t i = 0; i < p.size(); ++i) {
        const double want = p[i] + bias[i % bias.size()];
        worst = std::max(worst, std::abs(y.at(static_cast<int64_t>(i)) - want));
        largest = std::max(largest, std::abs(want));
      }
      INFO((reference ? "reference" : "fast") << ": worst error " << worst << " of values up to " << largest);
      CHECK(worst <= 1e-5 * largest);
      CHECK(largest > 1.0);
    }
  }
  SECTION("sums past 2^24, which oneDNN's float post-processing would round: the reference's bits") {
    // K = 2000, B near +127 in half the columns, A near 255 with zero point 3 (int8 A: -128 ..,
    // zero point -100): the raw products in oneDNN, finished as the reference finishes them.
    for (const DType at : {DType::UInt8, DType::Int8}) {
      INFO(dtypeName(at));
      const int64_t K = 2000, N = 32;
      Tensor b = randomInt(DType::Int8, {K, N}, 61, -127, 127);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N / 2; ++n) b.data<int8_t>()[k * N + n] = static_cast<int8_t>(105 + (k + 3 * n) % 22);
      std::vector<float> bs(N), bias(N);
      for (int64_t j = 0; j < N; ++j) {
        bs[static_cast<size_t>(j)] = 1e-3f * static_cast<float>(1 + j % 5);
        bias[static_cast<size_t>(j)] = 0.5f * static_cast<float>(j) - 4.0f;
      }
      NodeSpec s;
      s.op_type = "MatMulIntegerToFloat";
      s.domain = "lwc.internal";
      s.opset = 1;
      const bool u8 = at == DType::UInt8;
      s.inputs = {u8 ? randomInt(at, {3, 5, K}, 62, 200, 255) : randomInt(at, {3, 5, K}, 62, 60, 127), Tensor::scalar(0.02f),
                  scalarQ(at, u8 ? 3 : -100), b, Tensor::fromVector<float>({N}, bs), Tensor(DType::Int8, {N}),
                  Tensor::fromVector<float>({N}, bias)};
      s.constant_inputs = indicesExcept(7, {});
      CHECK(implOf(engine::Session(singleNodeModel(s)), "MatMulIntegerToFloat") == expectedQMatMulImpl());
      const Tensor want = runNode(s, true)[0];
      const std::vector<double> p = scaledProducts(s);
      double largest_acc = 0;
      for (size_t i = 0; i < p.size(); ++i) largest_acc = std::max(largest_acc, std::abs(p[i]) / (0.02 * bs[i % N]));
      CHECK(largest_acc > double(1 << 24));
      for (int threads : {1, 2, 3}) {
        INFO("threads " << threads);
        const auto [got, prof] = runProfiledOnThreads(s, "MatMulIntegerToFloat", threads);
        CHECK(prof.impl == expectedQMatMulImpl());
        CHECK(got.bitEqual(want));
      }
      engine::configureThreads(0);
    }
  }
  SECTION("a bias that is not one float per output column is refused by name") {
    const NodeSpec q = qlinearMatMulSpec(matCases()[0], 7);
    NodeSpec s;
    s.op_type = "MatMulIntegerToFloat";
    s.domain = "lwc.internal";
    s.opset = 1;
    s.inputs = {q.inputs[0], q.inputs[1], q.inputs[2], q.inputs[3], q.inputs[4], q.inputs[5], Tensor::fromVector<float>({48, 1}, std::vector<float>(48, 1.0f))};
    s.constant_inputs = indicesExcept(7, {});
    CHECK(implOf(engine::Session(singleNodeModel(s)), "MatMulIntegerToFloat") == "ref");
    CHECK_THROWS_WITH(runNode(s), Catch::Contains("bias must be float32 with one value per output column (48)"));
  }
}

TEST_CASE("dnnl MatMulInteger matches the reference exactly", "[dnnl][quant][f32parts]") {
  uint32_t seed = 1300;
  for (const auto& c : matCases()) {
    INFO(c.name);
    const NodeSpec s = matMulIntegerSpec(c, seed += 10);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "MatMulInteger") == expectedQMatMulImpl());
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
  }
  SECTION("A without a zero point") {
    NodeSpec s = matMulIntegerSpec(matCases()[0], 7);
    s.inputs.resize(2);
    s.constant_inputs = {1};
    CHECK(implOf(engine::Session(singleNodeModel(s)), "MatMulInteger") == expectedQMatMulImpl());
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
  }
  SECTION("per-row zero points of A go to the reference") {
    NodeSpec s = matMulIntegerSpec(matCases()[0], 8);
    s.inputs[2] = vectorQ(DType::UInt8, {1, 2, 3, 4, 5, 6, 7});
    CHECK(implOf(engine::Session(singleNodeModel(s)), "MatMulInteger") == "ref");
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
  }
  SECTION("runtime B goes to the reference") {
    NodeSpec s = matMulIntegerSpec(matCases()[0], 9);
    s.constant_inputs = {2};
    CHECK(implOf(engine::Session(singleNodeModel(s)), "MatMulInteger") == "ref");
  }
}

TEST_CASE("dnnl MatMulInteger with sums far past 2^24 and any zero point of A is exact", "[dnnl][quant][f32parts]") {
  // K = 4096, B near +127 in half the columns, A near the top of its range: sums up to 1.3e8.
  // oneDNN takes a zero point of A through float32, where sums over 2^24 lose bits (a K = 1280
  // product with sums up to 3.3e7: 53-94 of 512 outputs off), so the kernel gives oneDNN the raw A
  // and subtracts a_zp * colsum(B) itself. A dynamically quantized vit_h_14 (K = 1280 and 5120)
  // ran every such layer on the reference kernel: 19.7 s against the float model's 1.1 s.
  NodeSpec s;
  s.op_type = "MatMulInteger";
  s.opset = 10;
  const int64_t K = 4096;
  Tensor b = randomInt(DType::Int8, {K, 64}, 41, -128, 127);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < 32; ++n) b.data<int8_t>()[k * 64 + n] = static_cast<int8_t>(100 + (k * 7 + n) % 28);
  struct Case {
    DType at;
    std::optional<int64_t> zp;  ///< nullopt: no zero point input
    bool zp_const = false;
  };
  const std::vector<Case> cases{{DType::UInt8, std::nullopt}, {DType::UInt8, 0},   {DType::UInt8, 1},
                                {DType::UInt8, 60},           {DType::UInt8, 255}, {DType::UInt8, 60, true},
                                {DType::Int8, std::nullopt},  {DType::Int8, -128}, {DType::Int8, 5}};
  for (const Case& c : cases) {
    INFO("A " << dtypeName(c.at) << " zero point " << (c.zp ? std::to_string(*c.zp) : "none") << (c.zp_const ? " (constant)" : ""));
    const Tensor a = c.at == DType::UInt8 ? randomInt(c.at, {2, 4, K}, 42, 200, 255) : randomInt(c.at, {2, 4, K}, 42, 80, 127);
    s.inputs = {a, b};
    if (c.zp) s.inputs.push_back(scalarQ(c.at, *c.zp));
    s.constant_inputs = {1};  // the zero point at run time, as DynamicQuantizeLinear gives it
    if (c.zp_const) s.constant_inputs.push_back(2);
    const Tensor want = runNode(s, /*reference_only=*/true)[0];
    int64_t largest = 0;
    for (int64_t i = 0; i < want.numel(); ++i) largest = std::max<int64_t>(largest, std::abs(int64_t{want.data<int32_t>()[i]}));
    // (A - 255 is small: there only oneDNN's raw product is large)
    if (!(c.at == DType::UInt8 && c.zp == 255)) CHECK(largest > (int64_t{1} << 25));
    for (int threads : {1, 2, 3}) {
      INFO("threads " << threads);
      const auto [got, prof] = runProfiledOnThreads(s, "MatMulInteger", threads);
      INFO(prof.impl << " " << prof.primitive);
      CHECK(prof.impl == expectedQMatMulImpl());
      CHECK(got.bitEqual(want));
    }
    engine::configureThreads(0);
  }
}

TEST_CASE("dnnl int8 matrix products run 7-bit B with uint8 A on any CPU", "[dnnl][quant]") {
  uint32_t seed = 2500;
  for (const auto& c : matCases()) {
    if (c.at != DType::UInt8 || c.bt != DType::Int8) continue;
    INFO(c.name);
    NodeSpec s = matMulIntegerSpec(c, seed += 10);
    s.inputs[1] = randomInt(DType::Int8, {c.a.back(), c.n}, seed, -64, 64);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "MatMulInteger") == "dnnl");
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
    NodeSpec q = qlinearMatMulSpec(c, seed + 1);
    q.inputs[3] = randomInt(DType::Int8, {c.a.back(), c.n}, seed + 2, -64, 64);
    CHECK(implOf(engine::Session(singleNodeModel(q)), "QLinearMatMul") == "dnnl");
    checkRequantized(runNode(q)[0], runNode(q, true)[0]);
  }
  SECTION("at the saturation edge: A = 255, B = +-64") {
    QMatCase c{"", {5, 96}, 24};
    NodeSpec s = matMulIntegerSpec(c, 17);
    s.inputs[0] = Tensor::fromVector<uint8_t>(c.a, std::vector<uint8_t>(5 * 96, 255));
    std::vector<int8_t> b(96 * 24, 64);
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<int8_t>((i % 24) % 2 ? -64 : (i % 5 ? 64 : 63));  // same sign along K
    s.inputs[1] = Tensor::fromVector<int8_t>({96, 24}, b);
    CHECK(implOf(engine::Session(singleNodeModel(s)), "MatMulInteger") == "dnnl");
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
  }
}

TEST_CASE("dnnl QLinearConv speed (printed, not asserted)", "[dnnl][quant]") {
  QConvCase c{"", {1, 64, 56, 56}, {64, 64, 3, 3}};
  c.pads = {1, 1, 1, 1}, c.per_channel = true, c.bias = true;
  const NodeSpec s = qlinearConvSpec(c, 77);
  Model m = singleNodeModel(s);
  engine::Session fast(m), ref(m, engine::SessionOptions{0, true});
  engine::TensorMap feeds{{"in0", s.inputs[0]}};
  auto time = [&](engine::Session& session, int iters) {
    session.runOrdered(feeds);  // warm-up: primitive creation, weight reorder
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) session.runOrdered(feeds);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / iters;
  };
  const double f = time(fast, 50), r = time(ref, 3);
  std::cout << "QLinearConv 64->64 3x3 56x56 batch 1: " << implOf(fast, "QLinearConv") << " " << f << " ms, reference "
            << r << " ms (" << r / f << "x)\n";
  checkRequantized(fast.runOrdered(feeds)[0], ref.runOrdered(feeds)[0]);
}

TEST_CASE("a dequantized Gemm/MatMul with float output runs as MatMulInteger where oneDNN is exact", "[dnnl][quant]") {
  // The last layer of a QDQ model: DQ(x) -> Gemm(DQ(W), DQ(b)) -> float output (no QuantizeLinear
  // after it). The engine runs Cast(MatMulInteger(x_q, W_q, x_zp) + b_q) * (s_x * s_w) instead of a
  // float Gemm on dequantized weights: the integers exactly, then one float32 multiply.
  const std::string text = R"(<ir_version: 8, opset_import: ["" : 13]>
g (uint8[N, 64] xq) => (float[N, 16] y, float[N, 16] z, float[N, 16] u) {
  x = DequantizeLinear (xq, sx, zx)
  w = DequantizeLinear <axis = 0> (wq, sw, zw)
  b = DequantizeLinear <axis = 0> (bq, sb, zb)
  y = Gemm <transB = 1> (x, w, b)
  v = DequantizeLinear <axis = 1> (vq, sv, zv)
  z = MatMul (x, v)
  c = DequantizeLinear <axis = 0> (cq, sc, zb)
  u = Gemm (x, v, c)
})";
  for (const int64_t wmax : {int64_t{63}, int64_t{127}}) {
    INFO("weights in [-" << wmax << ", " << wmax << "]");
    Model m = parseModelText(text, LoadOptions{false});
    auto& init = m.graph.initializers;
    const float sx = 0.02f;
    const int64_t x_zp = 37;
    init.set("sx", Tensor::scalar<float>(sx));
    init.set("zx", Tensor::scalar<uint8_t>(static_cast<uint8_t>(x_zp)));
    Tensor wq = randomInt(DType::Int8, {16, 64}, 3, -wmax, wmax), vq = randomInt(DType::Int8, {64, 16}, 4, -wmax, wmax);
    wq.data<int8_t>()[5] = static_cast<int8_t>(wmax);  // the bound is reached
    vq.data<int8_t>()[7] = static_cast<int8_t>(-wmax);
    Tensor sw = randomFloat({16}, 5, 0.001f, 0.01f), sv = randomFloat({16}, 6, 0.001f, 0.01f);
    Tensor bq = randomInt(DType::Int32, {16}, 7, -5000, 5000), sb(DType::Float32, {16});
    for (int64_t n = 0; n < 16; ++n) sb.data<float>()[n] = sx * sw.data<float>()[n];
    init.set("wq", wq);
    init.set("sw", sw);
    init.set("zw", Tensor(DType::Int8, {16}));
    init.set("bq", bq);
    init.set("sb", sb);
    init.set("zb", Tensor(DType::Int32, {16}));
    init.set("vq", vq);
    init.set("sv", sv);
    init.set("zv", Tensor(DType::Int8, {16}));
    Tensor cq = randomInt(DType::Int32, {16}, 9, -5000, 5000), sc(DType::Float32, {16});
    for (int64_t n = 0; n < 16; ++n) sc.data<float>()[n] = sx * sv.data<float>()[n];
    init.set("cq", cq);
    init.set("sc", sc);

    engine::Session fast(m);
    const bool integer = wmax <= 64 || int8FastPathHere();  // 8-bit weights saturate without VNNI
    CHECK(implOf(fast, "MatMulInteger") == (integer ? "dnnl" : "none"));
    CHECK(implOf(fast, "Gemm") == (integer ? "none" : "dnnl"));
    const Tensor xq = randomInt(DType::UInt8, {5, 64}, 8, 0, 255);
    const auto out = fast.runOrdered({{"xq", xq}});
    // The definition, in the same arithmetic: exact int32 sums, one float32 rounding, one multiply.
    Tensor want_y(DType::Float32, {5, 16}), want_z(DType::Float32, {5, 16}), want_u(DType::Float32, {5, 16});
    for (int64_t r = 0; r < 5; ++r)
      for (int64_t n = 0; n < 16; ++n) {
        int32_t ay = bq.data<int32_t>()[n], az = 0;
        for (int64_t k = 0; k < 64; ++k) {
          const int32_t xv = static_cast<int32_t>(xq.data<uint8_t>()[r * 64 + k]) - static_cast<int32_t>(x_zp);
          ay += xv * wq.data<int8_t>()[n * 64 + k];
          az += xv * vq.data<int8_t>()[k * 16 + n];
        }
        want_y.data<float>()[r * 16 + n] = static_cast<float>(ay) * (sx * sw.data<float>()[n]);
        want_z.data<float>()[r * 16 + n] = static_cast<float>(az) * (sx * sv.data<float>()[n]);
        want_u.data<float>()[r * 16 + n] = static_cast<float>(az + cq.data<int32_t>()[n]) * (sx * sv.data<float>()[n]);
      }
    if (integer) {
      CHECK(out[0].bitEqual(want_y));
      CHECK(out[1].bitEqual(want_z));
      CHECK(out[2].bitEqual(want_u));  // Gemm without transB, with a bias
    }
    // And the float graph (no rewrites) computes the same function up to float rounding.
    engine::Session plain(m, engine::SessionOptions{0, false, true});
    const auto ref = plain.runOrdered({{"xq", xq}});
    CHECK(compareTensors(out[0], ref[0], 1e-5, 1e-5).empty());
    CHECK(compareTensors(out[1], ref[1], 1e-5, 1e-5).empty());
    CHECK(compareTensors(out[2], ref[2], 1e-5, 1e-5).empty());
    CHECK(compareTensors(ref[0], want_y, 1e-5, 1e-5).empty());
  }
}

TEST_CASE("a uint8 MaxPool between QLinearConvs runs on the integers in the NHWC chain", "[dnnl][quant]") {
  // QOperator files (ONNX Runtime's quantizer, `lwc quantize --format qoperator` of other graphs)
  // pool the uint8 output of a QLinearConv directly. The engine moves the pool into its NHWC chain;
  // the pooling kernel used to accept float32 only and failed here.
  Model m = parseModelText(R"(<ir_version: 8, opset_import: ["" : 13]>
g (uint8[N, 4, 8, 8] x) => (uint8[N, 8, 4, 4] y, int8[N, 8, 4, 4] z) {
  c = QLinearConv <pads = [1, 1, 1, 1]> (x, xs, xz, w, ws, wz, cs, cz)
  p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (c)
  y = QLinearConv (p, cs, cz, w2, ws2, wz2, ys, yz)
  c8 = QLinearConv <pads = [1, 1, 1, 1]> (x, xs, xz, w, ws, wz, cs, z8)
  z = MaxPool <kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]> (c8)
})",
                           LoadOptions{false});
  auto& init = m.graph.initializers;
  init.set("xs", Tensor::scalar(0.02f));
  init.set("xz", Tensor::scalar<uint8_t>(128));
  init.set("w", randomInt(DType::Int8, {8, 4, 3, 3}, 1, -60, 60));
  init.set("ws", Tensor::scalar(0.01f));
  init.set("wz", Tensor::scalar<int8_t>(0));
  init.set("cs", Tensor::scalar(0.05f));
  init.set("cz", Tensor::scalar<uint8_t>(10));
  init.set("z8", Tensor::scalar<int8_t>(-5));
  init.set("w2", randomInt(DType::Int8, {8, 8, 1, 1}, 2, -60, 60));
  init.set("ws2", Tensor::scalar(0.02f));
  init.set("wz2", Tensor::scalar<int8_t>(0));
  init.set("ys", Tensor::scalar(0.1f));
  init.set("yz", Tensor::scalar<uint8_t>(128));
  validateGraph(m.graph);
  engine::Session fast(m), ref(m, engine::SessionOptions{0, true});
  CHECK(implOf(fast, "PoolNhwc") == "dnnl");
  const Tensor x = randomInt(DType::UInt8, {2, 4, 8, 8}, 3, 0, 255);
  const auto a = fast.runOrdered({{"x", x}}), b = ref.runOrdered({{"x", x}});
  checkRequantized(a[0], b[0]);
  checkRequantized(a[1], b[1]);
  // The pooling kernel keeps its memory objects per shape and re-points them per call.
  const Tensor x2 = randomInt(DType::UInt8, {2, 4, 8, 8}, 4, 0, 255), x3 = randomInt(DType::UInt8, {1, 4, 8, 8}, 5, 0, 255);
  CHECK(runsDifferingFromFresh(m, {x, x2, x3, x}).empty());
}

// Pointwise convolutions run as one matrix product over every pixel of the batch (the batch folded
// into the pixels); integer accumulation is exact, so each image must get the bits it gets alone.
TEST_CASE("dnnl pointwise QLinearConv gives each image of a batch the bits it gets alone", "[dnnl][quant]") {
  std::vector<QConvCase> cases;
  QConvCase c{"1x1 pixels, u8 -> u8, per-channel, bias", {5, 32, 1, 1}, {64, 32, 1, 1}};
  c.per_channel = true, c.bias = true;
  cases.push_back(c);
  c = {"2x2 pixels, s8 -> u8", {4, 48, 2, 2}, {96, 48, 1, 1}};
  c.xt = DType::Int8;
  cases.push_back(c);
  uint32_t seed = 3000;
  for (const auto& qc : cases) {
    INFO(qc.name);
    const NodeSpec s = qlinearConvSpec(qc, seed += 10);
    Model m = singleNodeModel(s);
    m.graph.inputs[0].shape->at(0) = Dim{-1, "N"};
    engine::Session fast(m);
    REQUIRE(implOf(fast, "QLinearConv") == expectedQLinearConvImpl());
    CHECK(imagesDifferingFromBatch(fast, s.inputs[0]).empty());
    const Tensor y = fast.runOrdered({{"in0", s.inputs[0]}}).at(0);
    checkRequantized(y, runNode(s, true)[0]);
  }
}

namespace {
struct OwnKernelCase {
  QConvCase c;
  bool own;  ///< one of lwc's own kernels takes it on a CPU that has the instructions
};

/// Runs each case on 1, 2 and 3 threads: where `own` and `own_cpu`, the profile must name
/// `primitive` and the output must be the reference's bit for bit; elsewhere another kernel runs
/// and the output must be within one requantization step of the reference.
void checkOwnKernel(const std::vector<OwnKernelCase>& cases, const std::string& primitive, bool own_cpu,
                    uint32_t seed) {
  for (const auto& [qc, own] : cases) {
    INFO(qc.name);
    const NodeSpec s = qlinearConvSpec(qc, seed += 10);
    const Tensor want = runNode(s, /*reference_only=*/true)[0];
    for (int threads : {1, 2, 3}) {
      INFO("threads " << threads);
      const auto [got, prof] = runProfiledOnThreads(s, "QLinearConv", threads);
      INFO(prof.impl << " " << prof.primitive);
      const bool named = prof.primitive.rfind(primitive, 0) == 0;  // the pointwise kernel adds ", 1 thread" on small calls
      CHECK(named == (own && own_cpu));
      if (named) CHECK(got.bitEqual(want));
      else checkRequantized(got, want);
    }
    engine::configureThreads(0);
  }
}
}  // namespace

TEST_CASE("the profile names oneDNN's implementation, and convolutions under 2^23 multiply-adds, pointwise under 256 channels and pointwise projections under 2^25 avoid AMX", "[dnnl][quant]") {
  // On CPUs with AMX oneDNN 2.6 lists its AMX kernels first, which are slower on small layers,
  // narrow pointwise ones and pointwise ones into no more channels than they read up to 2^25
  // multiply-adds (dnnl_int8.cpp, avoidSmallAmx); elsewhere the check holds trivially.
  struct Case {
    const char* name;
    QConvCase c;
  };
  std::vector<Case> cases;
  QConvCase c{"", {32, 16, 14, 14}, {8, 16, 1, 1}};
  c.per_channel = true, c.bias = true;
  cases.push_back({"1x1 16 -> 8, batch 32 (pixels folded into one image)", c});
  c = {"", {1, 160, 7, 7}, {96, 160, 1, 1}};
  c.per_channel = true;
  cases.push_back({"1x1 160 -> 96, batch 1 on 7x7", c});
  c = {"", {1, 288, 4, 4}, {48, 288, 1, 1}};  // mnv2_fmnist's features.12 projection
  c.per_channel = true, c.bias = true;
  cases.push_back({"1x1 288 -> 48, batch 1 on 4x4 (under 2^23 multiply-adds)", c});
  c = {"", {32, 480, 2, 2}, {160, 480, 1, 1}};  // mnv2_fmnist's features.17 projection at batch 32
  c.per_channel = true, c.bias = true;
  cases.push_back({"1x1 480 -> 160, batch 32 on 2x2 (9.8 M multiply-adds, fewer outputs than inputs)", c});
  c = {"", {4, 320, 14, 14}, {128, 320, 1, 1}};
  c.per_channel = true;
  cases.push_back({"1x1 320 -> 128, batch 4 on 14x14 (32 M multiply-adds, under 2^25, fewer outputs than inputs)", c});
  c = {"", {8, 320, 14, 14}, {128, 320, 1, 1}};
  c.per_channel = true;
  cases.push_back({"1x1 320 -> 128, batch 8 on 14x14 (64 M multiply-adds: AMX where the CPU has it)", c});
  c = {"", {1, 320, 7, 7}, {1280, 320, 1, 1}};  // mobilenet_v2's last expansion at batch 1
  c.per_channel = true;
  cases.push_back({"1x1 320 -> 1280, batch 1 on 7x7 (20 M multiply-adds, more outputs than inputs: AMX where the CPU has it)", c});
  c = {"", {2, 16, 12, 12}, {32, 16, 3, 3}};
  c.pads = {1, 1, 1, 1};
  cases.push_back({"3x3 16 -> 32, batch 2 on 12x12 (under 2^23 multiply-adds)", c});
  c = {"", {4, 64, 14, 14}, {64, 64, 3, 3}};
  c.pads = {1, 1, 1, 1}, c.per_channel = true;
  cases.push_back({"3x3 64 -> 64, batch 4 on 14x14 (29 M multiply-adds: AMX where the CPU has it)", c});
  const bool amx = haveAmx();
  uint32_t seed = 900;
  for (const auto& [name, qc] : cases) {
    INFO(name);
    const NodeSpec s = qlinearConvSpec(qc, seed += 10);
    const auto [got, prof] = runProfiled(s, "QLinearConv");
    checkRequantized(got, runNode(s, /*reference_only=*/true)[0]);
    INFO(prof.impl << " " << prof.primitive);
    REQUIRE(prof.impl == expectedQLinearConvImpl());
    if (prof.impl == "dnnl") {
      CHECK_FALSE(prof.primitive.empty());
      CHECK(prof.primitive.rfind("ref", 0) != 0);
      // stride 1 and "same" padding in these cases: the output has the input's pixels
      const int64_t macs = qc.x[0] * qc.x[2] * qc.x[3] * qc.w[0] * qc.w[1] * qc.w[2] * qc.w[3];
      const bool large = macs >= (int64_t{1} << 23);
      const bool pointwise = qc.w[2] == 1 && qc.w[3] == 1;
      const bool projection = qc.w[0] <= qc.w[1] && macs < (int64_t{1} << 25);
      // oneDNN's AMX kernels are named "...avx512_core_amx..."; lwc's own pointwise kernel, which
      // takes such pointwise layers on AMX CPUs, is "lwc_pw_int8:avx512_vnni+amx" (its own tiles).
      const bool onednn_amx = prof.primitive.find("avx512_core_amx") != std::string::npos;
      if (!large || (pointwise && (qc.w[1] < 256 || projection))) CHECK_FALSE(onednn_amx);
      else if (amx) CHECK(onednn_amx);
    } else {
      CHECK(prof.primitive.empty());  // the reference names no library kernel
    }
  }
}

TEST_CASE("pointwise int8 layers of 27-48 pixels (multiples of 3) avoid oneDNN's AMX 1x1 kernel, which writes past its output there", "[dnnl][quant]") {
  // oneDNN 2.6's jit_1x1:avx512_core_amx_int8 writes pixels / 3 rows beyond its destination when
  // the image it is given has 27, 33, ... 48 pixels (dnnl_int8.cpp, avoidAmx1x1Overrun): a heap
  // corruption that aborted mobilenet_v3_small's INT8 file at batch 33 (its classifiers run as one
  // image of `batch` pixels). These layers are large enough for AMX otherwise; next to each, a batch
  // of 40 (not in that set) keeps AMX where the CPU has it, so the rule is no wider than the bug.
  const bool amx = haveAmx();
  uint32_t seed = 3300;
  for (const int64_t batch : {33, 36, 48, 40}) {
    const bool risky = batch != 40;
    SECTION("Gemm-shaped 1x1 QLinearConv 576 -> 1024, batch " + std::to_string(batch)) {
      QConvCase c{"", {batch, 576, 1, 1}, {1024, 576, 1, 1}};
      c.per_channel = true, c.bias = true;
      const NodeSpec s = qlinearConvSpec(c, seed += 10);
      const auto [got, prof] = runProfiled(s, "QLinearConv");
      checkRequantized(got, runNode(s, /*reference_only=*/true)[0]);
      INFO(prof.impl << " " << prof.primitive);
      REQUIRE(prof.impl == expectedQLinearConvImpl());
      if (risky) CHECK(prof.primitive.find("jit_1x1:avx512_core_amx") == std::string::npos);
      else if (amx && prof.impl == "dnnl") CHECK(prof.primitive.find("avx512_core_amx") != std::string::npos);
    }
    SECTION("MatMulInteger 1024 x 1000, " + std::to_string(batch) + " rows") {
      QMatCase c{"", {batch, 1024}, 1000};
      const NodeSpec s = matMulIntegerSpec(c, seed += 10);
      const auto [got, prof] = runProfiled(s, "MatMulInteger");
      CHECK(got.bitEqual(runNode(s, true)[0]));
      INFO(prof.impl << " " << prof.primitive);
      REQUIRE(prof.impl == expectedQMatMulImpl());
      if (risky) CHECK(prof.primitive.find("jit_1x1:avx512_core_amx") == std::string::npos);
      else if (amx && prof.impl == "dnnl") CHECK(prof.primitive.find("avx512_core_amx") != std::string::npos);
    }
  }
}

TEST_CASE("lwc's own 3x3 depthwise int8 kernel gives the reference's bits, and the profile names it", "[dnnl][quant]") {
  // dw_int8.h runs uint8 3x3 depthwise QLinearConvs of stride 1, and strided ones of up to 2^18
  // outputs, on CPUs with AVX-512 VNNI and VBMI, with the reference's requantization: bit-identical
  // to it, where oneDNN is only within one step. The cases reach its branches: 16 channels (one
  // 48-byte load per window row, four pixels in one 64-byte store), channel tails, column tiles
  // (output wider than a tile) and row tiles (more than 8 rows per thread), stride 1 (quadruplets
  // for pairs of columns, odd widths) and 2 (triplets), a multiplier that rules out the
  // four-at-a-time requantization, padded borders and
  // images meeting inside one thread's rows. Elsewhere (other CPUs, int8 inputs, 5x5, larger strided
  // layers) oneDNN runs and the comparison is within one step.
  std::vector<OwnKernelCase> cases;
  QConvCase c{"16 channels, pad 1, batch 3, per-channel, bias", {3, 16, 7, 7}, {16, 1, 3, 3}, 16};
  c.pads = {1, 1, 1, 1}, c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"13 channels, stride 2, asymmetric pads, u8 -> s8", {2, 13, 7, 6}, {13, 1, 3, 3}, 13};
  c.strides = {2, 2}, c.pads = {1, 0, 0, 1}, c.yt = DType::Int8, c.bias = true;
  cases.push_back({c, true});
  c = {"33 channels, one row of 101 columns (two column tiles, the last with an odd column), batch 12, per-channel",
       {12, 33, 1, 101}, {33, 1, 3, 3}, 33};
  c.pads = {1, 1, 1, 1}, c.per_channel = true;
  cases.push_back({c, true});
  c = {"33 channels, stride 2, one row of 101 columns (two column tiles), batch 12", {12, 33, 1, 101}, {33, 1, 3, 3}, 33};
  c.strides = {2, 2}, c.pads = {1, 1, 1, 1}, c.bias = true;
  cases.push_back({c, true});
  c = {"48 channels on 9x9, one multiplier too large for four-at-a-time requantization, u8 -> s8", {2, 48, 9, 9}, {48, 1, 3, 3}, 48};
  c.pads = {1, 1, 1, 1}, c.per_channel = c.bias = c.huge_first_channel = true, c.yt = DType::Int8;
  cases.push_back({c, true});
  c = {"40 channels, stride 2 on 9x9, one multiplier too large for four-at-a-time requantization", {2, 40, 9, 9}, {40, 1, 3, 3}, 40};
  c.strides = {2, 2}, c.pads = {1, 1, 1, 1}, c.per_channel = c.huge_first_channel = true;
  cases.push_back({c, true});
  c = {"200 channels, no padding, uint8 weights with zero point 128", {1, 200, 7, 7}, {200, 1, 3, 3}, 200};
  c.wt = DType::UInt8, c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"96 channels, stride 2 on 7x7, batch 4", {4, 96, 7, 7}, {96, 1, 3, 3}, 96};
  c.strides = {2, 2}, c.pads = {1, 1, 1, 1}, c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"16 channels on 28x28, batch 2, pad 1", {2, 16, 28, 28}, {16, 1, 3, 3}, 16};
  c.pads = {1, 1, 1, 1}, c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"96 channels on 14x14, batch 3, pad 1, u8 -> s8", {3, 96, 14, 14}, {96, 1, 3, 3}, 96};
  c.pads = {1, 1, 1, 1}, c.per_channel = true, c.yt = DType::Int8;
  cases.push_back({c, true});
  c = {"stride 2 to 2^18 outputs (48 channels, 28x28 -> 14x14, batch 8)", {8, 48, 28, 28}, {48, 1, 3, 3}, 48};
  c.strides = {2, 2}, c.pads = {1, 1, 1, 1}, c.per_channel = true;
  cases.push_back({c, true});
  c = {"stride 2 beyond 2^18 outputs (batch 28): oneDNN", {28, 48, 28, 28}, {48, 1, 3, 3}, 48};
  c.strides = {2, 2}, c.pads = {1, 1, 1, 1}, c.per_channel = true;
  cases.push_back({c, false});
  c = {"int8 input: oneDNN", {1, 32, 10, 10}, {32, 1, 3, 3}, 32};
  c.xt = DType::Int8, c.pads = {1, 1, 1, 1};
  cases.push_back({c, false});
  checkOwnKernel(cases, "lwc_dw3x3_int8:avx512_vnni_vbmi", engine::dw::available(), 1300);
}

TEST_CASE("lwc's own 5x5 depthwise int8 kernel gives the reference's bits, and the profile names it", "[dnnl][quant]") {
  // The same kernel with five ring rows of quadruplets from every second input column (dw_int8.cpp,
  // outputRow5): stride 1 (pairs of pixels, two entries each) and horizontal stride 2, channel
  // tails, column tiles (one row of 101 columns; 240 and 672 channels, whose tiles hold 10 and 4
  // columns), odd widths, no padding, a vertical stride only, a multiplier that rules out the
  // four-at-a-time requantization. Elsewhere oneDNN runs (within one step).
  std::vector<OwnKernelCase> cases;
  QConvCase c{"32 channels, pad 2", {1, 32, 10, 10}, {32, 1, 5, 5}, 32};
  c.pads = {2, 2, 2, 2};
  cases.push_back({c, true});
  c = {"13 channels, stride 2, asymmetric pads, batch 2, per-channel, bias, u8 -> s8", {2, 13, 11, 9}, {13, 1, 5, 5}, 13};
  c.strides = {2, 2}, c.pads = {2, 1, 1, 2}, c.per_channel = c.bias = true, c.yt = DType::Int8;
  cases.push_back({c, true});
  c = {"33 channels, one row of 101 columns, batch 3, bias", {3, 33, 1, 101}, {33, 1, 5, 5}, 33};
  c.pads = {2, 2, 2, 2}, c.bias = true;
  cases.push_back({c, true});
  c = {"33 channels, stride 2, one row of 101 columns, batch 3, per-channel", {3, 33, 1, 101}, {33, 1, 5, 5}, 33};
  c.strides = {2, 2}, c.pads = {2, 2, 2, 2}, c.per_channel = true;
  cases.push_back({c, true});
  c = {"48 channels on 9x9, one multiplier too large for four-at-a-time requantization, u8 -> s8", {2, 48, 9, 9}, {48, 1, 5, 5}, 48};
  c.pads = {2, 2, 2, 2}, c.per_channel = c.bias = c.huge_first_channel = true, c.yt = DType::Int8;
  cases.push_back({c, true});
  c = {"40 channels, stride 2 on 9x9, one multiplier too large", {2, 40, 9, 9}, {40, 1, 5, 5}, 40};
  c.strides = {2, 2}, c.pads = {2, 2, 2, 2}, c.per_channel = c.huge_first_channel = true;
  cases.push_back({c, true});
  c = {"240 channels on 14x14, batch 2", {2, 240, 14, 14}, {240, 1, 5, 5}, 240};
  c.pads = {2, 2, 2, 2}, c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"672 channels on 7x7, batch 2", {2, 672, 7, 7}, {672, 1, 5, 5}, 672};
  c.pads = {2, 2, 2, 2}, c.per_channel = true;
  cases.push_back({c, true});
  c = {"16 channels, no padding, 12x12", {1, 16, 12, 12}, {16, 1, 5, 5}, 16};
  cases.push_back({c, true});
  c = {"vertical stride 2 only", {2, 24, 12, 13}, {24, 1, 5, 5}, 24};
  c.strides = {2, 1}, c.pads = {2, 2, 2, 2}, c.bias = true;
  cases.push_back({c, true});
  c = {"horizontal stride 3: oneDNN", {1, 16, 12, 12}, {16, 1, 5, 5}, 16};
  c.strides = {3, 3}, c.pads = {2, 2, 2, 2};
  cases.push_back({c, false});
  c = {"int8 input: oneDNN", {1, 32, 10, 10}, {32, 1, 5, 5}, 32};
  c.xt = DType::Int8, c.pads = {2, 2, 2, 2};
  cases.push_back({c, false});
  c = {"stride 2 beyond 2^18 outputs (batch 28; 3x3 layers of this size stay with oneDNN)", {28, 48, 28, 28}, {48, 1, 5, 5}, 48};
  c.strides = {2, 2}, c.pads = {2, 2, 2, 2}, c.per_channel = true;
  cases.push_back({c, true});
  checkOwnKernel(cases, "lwc_dw5x5_int8:avx512_vnni_vbmi", engine::dw::available(), 1700);
}

namespace {
#ifdef LWC_INT8_X86
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*(), which -Wmaybe-uninitialized reports
// once inlined (as in dw_int8.cpp); nothing here is uninitialised.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
// Four 16-lane accumulators (acc, without the bias) requantized by requant16 one at a time and by
// requant64 (accumulators holding the bias, as the kernels start them), 64 bytes each.
__attribute__((target("avx512f,avx512bw,avx512vl"))) std::pair<std::vector<uint8_t>, std::vector<uint8_t>> requantBothWays(
    const std::vector<int32_t>& acc, const std::vector<int32_t>& bias, const std::vector<float>& mul, int32_t yzp,
    bool y_signed) {
  const int32_t lo = y_signed ? -128 : 0, hi = y_signed ? 127 : 255;
  const __m512 flo = _mm512_set1_ps(static_cast<float>(lo - yzp)), fhi = _mm512_set1_ps(static_cast<float>(hi - yzp));
  const __m512i bi = _mm512_loadu_si512(bias.data());
  const __m512 mu = _mm512_loadu_ps(mul.data());
  std::vector<uint8_t> one(64), four(64);
  __m512i a[4];
  for (int k = 0; k < 4; ++k) {
    const __m512i v = _mm512_loadu_si512(acc.data() + 16 * k);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(one.data() + 16 * k),
                     engine::int8k::requant16(v, bi, mu, flo, fhi, _mm512_set1_epi32(yzp)));
    a[k] = _mm512_add_epi32(v, bi);
  }
  engine::int8k::Requant q;
  q.y_zp = yzp, q.lo = lo, q.hi = hi, q.y_signed = y_signed;
  const __m512i v = engine::int8k::Requant4(q)(a[0], a[1], a[2], a[3], mu, mu, mu, mu);
  _mm512_storeu_si512(four.data(), v);
  return {one, four};
}
#pragma GCC diagnostic pop
#endif
}  // namespace

TEST_CASE("the own kernels' four-at-a-time requantization gives the one-at-a-time bytes wherever saturationExact allows it", "[dnnl][quant]") {
#ifdef LWC_INT8_X86
  if (!engine::int8k::haveAvx512Vnni()) return;  // the kernels do not run on this CPU
  // Multipliers from 1e-4 to 2 and accumulators up to the bound (|acc + bias| * mul <= 2^30):
  // results far beyond int16 and the byte range (both saturations), exact halves (mul 0.5 and odd
  // sums: round half to even), both output types, zero points at the ends of their range.
  std::mt19937 rng(4242);
  int64_t clipped = 0, halves = 0;
  for (int trial = 0; trial < 400; ++trial) {
    const bool y_signed = trial % 2 == 1;
    const int32_t yzp = y_signed ? std::array<int32_t, 3>{-128, 0, 127}[trial % 3] : std::array<int32_t, 3>{0, 128, 255}[trial % 3];
    std::vector<float> mul(16);
    std::vector<int32_t> bias(16), acc(64);
    for (int c = 0; c < 16; ++c) {
      mul[c] = trial % 5 == 0 ? 0.5f : std::exp(std::uniform_real_distribution<float>(std::log(1e-4f), std::log(2.0f))(rng));
      bias[c] = std::uniform_int_distribution<int32_t>(-5000, 5000)(rng);
    }
    for (int i = 0; i < 64; ++i) {
      const double limit = std::min(1073741824.0 / mul[i % 16], 2.0e9) - 5001;
      const double scale = std::pow(10.0, std::uniform_real_distribution<double>(0, std::log10(limit))(rng));
      acc[i] = static_cast<int32_t>(std::uniform_real_distribution<double>(-scale, scale)(rng));
      const double f = (static_cast<double>(acc[i]) + bias[i % 16]) * mul[i % 16];
      clipped += f + yzp > (y_signed ? 127 : 255) || f + yzp < (y_signed ? -128 : 0);
      halves += mul[i % 16] == 0.5f && ((acc[i] + bias[i % 16]) & 1) != 0;
    }
    int64_t abs_w = 0;  // the bound saturationExact checks, for one channel of weights summing to 1
    std::vector<int64_t> abs_wsum(16, abs_w);
    std::vector<int32_t> bias_bound(16);
    for (int c = 0; c < 16; ++c) {
      int64_t m = 0;
      for (int k = 0; k < 4; ++k) m = std::max<int64_t>(m, std::abs(static_cast<int64_t>(acc[16 * k + c]) + bias[c]));
      bias_bound[c] = static_cast<int32_t>(m);
    }
    REQUIRE(engine::int8k::saturationExact(bias_bound.data(), mul.data(), abs_wsum.data(), 16));
    const auto [one, four] = requantBothWays(acc, bias, mul, yzp, y_signed);
    INFO("trial " << trial);
    CHECK(one == four);
  }
  CHECK(clipped > 1000);  // the saturating paths were reached
  CHECK(halves > 100);
  // And the bound refuses what could overflow the float-to-int conversion.
  const int32_t big_bias = 1 << 20;
  const float big_mul = 2048.0f;
  const int64_t w = 0;
  CHECK_FALSE(engine::int8k::saturationExact(&big_bias, &big_mul, &w, 1));
  const int32_t zero_bias = 0;
  const float unit = 1.0f;
  const int64_t heavy = (int64_t{1} << 30) / 255 + 1;  // 255 * sum |w| just over 2^30
  CHECK_FALSE(engine::int8k::saturationExact(&zero_bias, &unit, &heavy, 1));
#endif
}

TEST_CASE("lwc's own int8 kernel for few input channels gives the reference's bits, and the profile names it", "[dnnl][quant]") {
  // few_int8.h runs uint8 QLinearConvs over 1 or 2 input channels (a kernel row of at most 8 input
  // bytes, more than one tap) on CPUs with AVX-512 VNNI, with the reference's requantization: bit-
  // identical to it. The cases reach its branches: one and two 4-byte groups per kernel row, whole
  // 16-channel blocks and channel tails, eight-column groups (one block), four-column steps and the
  // single columns after them, input rows within and over 64 bytes (the padded copy),
  // strides, asymmetric pads, int8 outputs, uint8 weights with a zero point, and outputs large
  // enough to be split over threads. Elsewhere oneDNN runs (within one step).
  std::vector<OwnKernelCase> cases;
  QConvCase c{"1 -> 16, 3x3, pad 1 (mnv2_fmnist's stem), batch 4, per-channel, bias", {4, 1, 28, 28}, {16, 1, 3, 3}};
  c.pads = {1, 1, 1, 1}, c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"1 -> 16, 3x3, stride 2 over 70 columns (input rows over 64 bytes, 35 outputs a row: 8-pixel groups and a tail), u8 -> s8",
       {2, 1, 9, 70}, {16, 1, 3, 3}};
  c.strides = {2, 2}, c.pads = {1, 1, 1, 1}, c.yt = DType::Int8, c.per_channel = true;
  cases.push_back({c, true});
  c = {"1 -> 6, 5x5, pad 2 (lenet5's first layer), batch 3, bias", {3, 1, 28, 28}, {6, 1, 5, 5}};
  c.pads = {2, 2, 2, 2}, c.bias = true;
  cases.push_back({c, true});
  c = {"2 -> 20, 3x3, stride 2, asymmetric pads, u8 -> s8, uint8 weights with zero point 128", {2, 2, 9, 11}, {20, 2, 3, 3}};
  c.strides = {2, 2}, c.pads = {1, 0, 0, 1}, c.yt = DType::Int8, c.wt = DType::UInt8, c.per_channel = true;
  cases.push_back({c, true});
  c = {"1 -> 33, 11x8 kernel (two whole groups per row), pads 5 3 5 4", {1, 1, 13, 10}, {33, 1, 11, 8}};
  c.pads = {5, 3, 5, 4}, c.bias = true;
  cases.push_back({c, true});
  c = {"1 -> 16, 3x3, zero points fed at run time (the node stays NCHW): oneDNN", {2, 1, 6, 7}, {16, 1, 3, 3}};
  c.pads = {1, 1, 1, 1}, c.runtime_zp = true;
  cases.push_back({c, false});
  c = {"3 -> 16, 3x3 (9 bytes a row): oneDNN", {1, 3, 10, 10}, {16, 3, 3, 3}};
  c.pads = {1, 1, 1, 1};
  cases.push_back({c, false});
  c = {"2 -> 16, 1x1: oneDNN", {1, 2, 8, 8}, {16, 2, 1, 1}};
  cases.push_back({c, false});
  c = {"2 -> 4 in 2 groups: oneDNN", {1, 2, 8, 8}, {4, 1, 3, 3}, 2};
  cases.push_back({c, false});
  c = {"int8 input: oneDNN", {1, 1, 10, 10}, {16, 1, 3, 3}};
  c.xt = DType::Int8;
  cases.push_back({c, false});
  checkOwnKernel(cases, "lwc_few_ic_int8:avx512_vnni", engine::few::available(), 1700);
}

TEST_CASE("lwc's own int8 pointwise kernel gives the reference's bits on small calls and on larger ones with few weights, and the profile names it", "[dnnl][quant]") {
  // pw_int8.h runs uint8 1x1 QLinearConvs (groups 1, stride 1, no padding) on CPUs with AVX-512
  // VNNI where oneThreadCall puts the call on one thread (under 2^20 multiply-adds), and larger
  // ones over all threads where ic * oc <= 32 K and oc fills blocks of 16, with the reference's
  // requantization: bit-identical to it. The cases reach its branches: input channels
  // in whole groups of four and with a tail of 1-3, output blocks of 16 and a tail, one to four
  // blocks per pass and a second pass, whole tiles (8 pixels up to three blocks, else 4) and the
  // pixels after them, tiles that hold every output channel (16, 32, 48: stored 64 bytes at a time
  // across pixels), int8 outputs, uint8 weights with a zero point, per-tensor and per-channel
  // scales, with and without bias. Elsewhere oneDNN runs (within one step).
  std::vector<OwnKernelCase> cases;
  QConvCase c{"16 -> 48 on 28x28 (mnv2_fmnist's expansion at batch 1), per-channel, bias", {1, 16, 28, 28}, {48, 16, 1, 1}};
  c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"192 -> 32 on 4x4 (mnv2_fmnist's projection), per-tensor", {1, 192, 4, 4}, {32, 192, 1, 1}};
  cases.push_back({c, true});
  c = {"13 -> 37, 5x7, batch 3 (input and output tails, 105 pixels), u8 -> s8, uint8 weights with zero point 128",
       {3, 13, 5, 7}, {37, 13, 1, 1}};
  c.yt = DType::Int8, c.wt = DType::UInt8, c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"2 -> 70 on 3x3 (two input bytes, a 4-block pass then a 1-block one, 4 + 4 + 1 pixels)", {1, 2, 3, 3}, {70, 2, 1, 1}};
  c.bias = true;
  cases.push_back({c, true});
  c = {"321 -> 131, 2x3 (a 1-byte input tail, 9 blocks, 4 + 2 pixels), per-channel", {1, 321, 2, 3}, {131, 321, 1, 1}};
  c.per_channel = true;
  cases.push_back({c, true});
  c = {"20 -> 80 on 4x4, u8 -> s8 (a whole 4-block pass, then 1 block of 8 + 8 pixels)", {1, 20, 4, 4}, {80, 20, 1, 1}};
  c.yt = DType::Int8, c.per_channel = true;
  cases.push_back({c, true});
  c = {"64 -> 64, batch 2 on 14x14 (1.6 M multiply-adds, over 2^20, 4 K weights: all threads)", {2, 64, 14, 14}, {64, 64, 1, 1}};
  cases.push_back({c, true});
  c = {"24 -> 48, batch 3 on 28x28 (over 2^20, 3-block tiles of 4 pixels, u8 -> s8)", {3, 24, 28, 28}, {48, 24, 1, 1}};
  c.yt = DType::Int8, c.per_channel = true, c.bias = true;
  cases.push_back({c, true});
  c = {"8 -> 16 on 9x9, batch 2 (one block: 8-pixel tiles stored four pixels at a time, then 2 pixels), u8 -> s8",
       {2, 8, 9, 9}, {16, 8, 1, 1}};
  c.yt = DType::Int8, c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"24 -> 48 on 6x6, one multiplier too large for four-at-a-time requantization", {1, 24, 6, 6}, {48, 24, 1, 1}};
  c.per_channel = c.huge_first_channel = c.bias = true;
  cases.push_back({c, true});
  // AMX tiles (pw::amxFits: CPUs with AMX-INT8; elsewhere these cases are the vpdpbusd tiles'
  // or oneDNN's): a 64-byte chunk of input channels and a shorter one, only a short one, groups of
  // four blocks and fewer, 16-pixel tiles and the pixels after them, int8 outputs.
  c = {"96 -> 64, batch 2 on 5x5 (AMX: a 64-byte and a 32-byte chunk, four blocks; 50 pixels: three tiles, then 2)",
       {2, 96, 5, 5}, {64, 96, 1, 1}};
  c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"48 -> 80 on 4x5, u8 -> s8 (AMX: one 48-byte chunk; four blocks, then one; one tile, then 4 pixels)",
       {1, 48, 4, 5}, {80, 48, 1, 1}};
  c.yt = DType::Int8, c.per_channel = true;
  cases.push_back({c, true});
  c = {"64 -> 64 on 6x6, one multiplier too large for four-at-a-time requantization (no AMX: vpdpbusd tiles)",
       {1, 64, 6, 6}, {64, 64, 1, 1}};
  c.per_channel = c.huge_first_channel = true;
  cases.push_back({c, true});
  c = {"256 -> 256, batch 2 on 7x7 (over 2^20, 64 K weights): AMX tiles on all threads, else oneDNN", {2, 256, 7, 7},
       {256, 256, 1, 1}};
  cases.push_back({c, engine::pw::amxFits(256, 256)});
  c = {"256 -> 512, batch 4 on 8x8 (3.4e7 multiply-adds into more channels: oneDNN's AMX kernel stays)", {4, 256, 8, 8},
       {512, 256, 1, 1}};
  cases.push_back({c, false});
  c = {"16 -> 8, batch 12 on 28x28 (over 2^20: eight outputs, two pixels a vector, all threads)", {12, 16, 28, 28}, {8, 16, 1, 1}};
  c.per_channel = c.bias = true;
  cases.push_back({c, true});
  c = {"13 -> 8 on 5x5, batch 3 (75 pixels: four 16-pixel pair tiles, then 11 pixels; an input tail), u8 -> s8",
       {3, 13, 5, 5}, {8, 13, 1, 1}};
  c.yt = DType::Int8, c.per_channel = true;
  cases.push_back({c, true});
  c = {"16 -> 12, batch 12 on 28x28 (over 2^20, a partial block of outputs): oneDNN", {12, 16, 28, 28}, {12, 16, 1, 1}};
  cases.push_back({c, false});
  c = {"stride 2: oneDNN", {1, 32, 8, 8}, {16, 32, 1, 1}};
  c.strides = {2, 2};
  cases.push_back({c, false});
  c = {"padded 1x1: oneDNN", {1, 32, 6, 6}, {16, 32, 1, 1}};
  c.pads = {1, 1, 1, 1};
  cases.push_back({c, false});
  c = {"2 groups: oneDNN", {1, 32, 6, 6}, {16, 16, 1, 1}, 2};
  cases.push_back({c, false});
  c = {"int8 input: oneDNN", {1, 32, 6, 6}, {16, 32, 1, 1}};
  c.xt = DType::Int8;
  cases.push_back({c, false});
  c = {"zero points fed at run time (the node stays NCHW): oneDNN", {1, 32, 6, 6}, {16, 32, 1, 1}};
  c.runtime_zp = true;
  cases.push_back({c, false});
  checkOwnKernel(cases, "lwc_pw_int8:avx512_vnni", engine::pw::available(), 2100);
}

TEST_CASE("a residual QAdd after a pointwise QLinearConv is fused into it, with the two nodes' bits", "[dnnl][quant]") {
  // DQ(conv) + DQ(r) -> Add [-> Relu] -> Q becomes lwc.internal.QAdd, and a QAdd reading the only
  // use of a QLinearConvNhwc becomes lwc.internal.QLinearConvNhwcAdd (optimize.cpp, fuseConvQAdd).
  // Where the convolution runs lwc's own pointwise kernel the add happens as its outputs are
  // written (profile: "... + add"); elsewhere the convolution, then the reference QAdd. The oracle
  // is an unrewritten reference session (observable: no fusion, node by node): the fused own
  // kernel and the fused reference session give its bits; with oneDNN's convolution (large calls)
  // the result is within one step, as oneDNN's own. On 1, 2 and 3 threads, with and without a Relu.
  // Channels 24 -> 40 (vpdpbusd tiles on one thread at 22 x 22, oneDNN at 32 x 32) and 64 -> 48
  // (all threads at both sizes: AMX tiles where the CPU has them).
  for (const auto& [ic, oc] : {std::pair<int64_t, int64_t>{24, 40}, {64, 48}})
  for (const bool relu : {false, true})
    for (const int64_t hw : {22, 32})
    for (const uint8_t az : {100, 97}) {  // the add's zero point for c: the convolution's, or another
      INFO(ic << " -> " << oc << ", relu " << relu << ", " << hw << "x" << hw << ", az " << int{az});
      Model m = parseModelText(std::string(R"(<ir_version: 8, opset_import: ["" : 13]>
g (uint8[N, )") + std::to_string(ic) + ", H, W] x) => (uint8[N, " + std::to_string(oc) + R"(, H, W] y) {
  c = QLinearConv (x, xs, xz, w, ws, wz, cs, cz, b)
  r = QLinearConv (x, xs, xz, w2, ws, wz, rs, rz)
  cd = DequantizeLinear (c, as, az)
  rd = DequantizeLinear (r, rs, rz)
  s = Add (cd, rd)
)" + (relu ? "  t = Relu (s)\n  y = QuantizeLinear (t, ys, yz)\n}" : "  y = QuantizeLinear (s, ys, yz)\n}"),
                               LoadOptions{false});
      auto& init = m.graph.initializers;
      init.set("xs", Tensor::scalar(0.02f));
      init.set("xz", Tensor::scalar<uint8_t>(120));
      init.set("w", randomInt(DType::Int8, {oc, ic, 1, 1}, 11, -90, 90));
      init.set("w2", randomInt(DType::Int8, {oc, ic, 1, 1}, 12, -90, 90));
      init.set("ws", Tensor::fromVector<float>({oc}, std::vector<float>(static_cast<size_t>(oc), 0.004f)));
      init.set("wz", Tensor::fromVector<int8_t>({oc}, std::vector<int8_t>(static_cast<size_t>(oc), 0)));
      init.set("b", randomInt(DType::Int32, {oc}, 13, -2000, 2000));
      init.set("cs", Tensor::scalar(0.05f));
      init.set("cz", Tensor::scalar<uint8_t>(100));
      init.set("as", Tensor::scalar(0.05f));  // the add's view of c: the same parameters, other tensors
      init.set("az", Tensor::scalar<uint8_t>(az));
      init.set("rs", Tensor::scalar(0.03f));
      init.set("rz", Tensor::scalar<uint8_t>(90));
      init.set("ys", Tensor::scalar(0.07f));
      init.set("yz", Tensor::scalar<uint8_t>(relu ? 20 : 110));  // relu: zeros land at 20, inside the range
      validateGraph(m.graph);
      engine::SessionOptions plain;
      plain.observable = true;
      plain.reference_only = true;
      engine::Session ref(m, plain);
      const Tensor x = randomInt(DType::UInt8, {2, ic, hw, hw}, 14 + static_cast<uint32_t>(hw), 0, 255);
      const Tensor want = ref.runOrdered({{"x", x}})[0];
      for (int threads : {1, 2, 3}) {
        INFO("threads " << threads);
        engine::configureThreads(threads);
        engine::SessionOptions so;
        so.profile = true;
        engine::Session fast(m, so);
        const Tensor got = fast.runOrdered({{"x", x}})[0];
        const auto prof = fast.profile();
        const auto it = std::find_if(prof.begin(), prof.end(), [](const auto& p) { return p.op_type.ends_with("QLinearConvNhwcAdd"); });
        REQUIRE(it != prof.end());
        CHECK(std::none_of(prof.begin(), prof.end(), [](const auto& p) { return p.op_type.ends_with("QAdd"); }));
        INFO(it->impl << " " << it->primitive);
        // 24 -> 40 at 22 x 22: 929 280 multiply-adds, one thread; 64 -> 48: 3 K weights in whole blocks
        const bool own = int8FastPathHere() && engine::pw::available() && (hw == 22 || ic == 64);
        CHECK(it->primitive.ends_with(" + add") == own);
        if (own || it->impl == "ref") CHECK(got.bitEqual(want));
        else checkRequantized(got, want);
        engine::Session reference(m, engine::SessionOptions{0, true});
        CHECK(reference.runOrdered({{"x", x}})[0].bitEqual(want));
      }
      engine::configureThreads(0);
    }
}

TEST_CASE("a lookup (QLut) after a QLinearConv is fused into it, with the two nodes' bits", "[dnnl][quant]") {
  // DQ(c) -> HardSwish -> Q becomes lwc.internal.QLut, and a QLut reading the only use of a
  // QLinearConvNhwc becomes lwc.internal.QLinearConvNhwcLut (optimize.cpp, fuseConvQLut): where an
  // own kernel runs the convolution each thread looks its outputs up in pieces as it writes them
  // (profile: "... + lut"), elsewhere the lookup follows the convolution ("... then lut"). Oracles:
  // the same model with c also a graph output (no fusion: the convolution, then the QLut) must give
  // the same bits on every path, and where an own kernel runs, the unrewritten reference session
  // too. Cases: own depthwise (3x3, 40 x 40 so that a thread's rows come in several pieces), own
  // pointwise, own few-input-channel stem, int8 output (an int8 table), and a 7x7 depthwise oneDNN runs.
  struct Case {
    const char* name;
    int64_t ic, oc, hw, k, group;
    bool s8, own;
  };
  const bool dw_cpu = int8FastPathHere() && engine::dw::available(), pw_cpu = int8FastPathHere() && engine::pw::available();
  const bool few_cpu = int8FastPathHere() && engine::few::available();
  for (const Case& c : {Case{"depthwise 3x3, 48 channels, 40 x 40", 48, 48, 40, 3, 48, false, dw_cpu},
                        Case{"pointwise 32 -> 64, 20 x 20", 32, 64, 20, 1, 1, false, pw_cpu},
                        Case{"pointwise 24 -> 40, 9 x 9, int8 output", 24, 40, 9, 1, 1, true, pw_cpu},
                        Case{"1 -> 16, 3x3, 28 x 28", 1, 16, 28, 3, 1, false, few_cpu},
                        Case{"depthwise 7x7, 32 channels, 14 x 14", 32, 32, 14, 7, 32, false, false}}) {
    INFO(c.name);
    const std::string yt = c.s8 ? "int8" : "uint8";
    const std::string pad = std::to_string(c.k / 2);
    auto model = [&](bool c_out) {
      Model m = parseModelText(std::string(R"(<ir_version: 8, opset_import: ["" : 14]>
g (uint8[N, )") + std::to_string(c.ic) + ", H, W] x) => (" + yt + " y" + (c_out ? ", " + yt + " c" : std::string()) +
                                   R"() {
  c = QLinearConv <group = )" + std::to_string(c.group) + ", pads = [" + pad + ", " + pad + ", " + pad + ", " + pad +
                                   R"(]> (x, xs, xz, w, ws, wz, cs, cz, b)
  cd = DequantizeLinear (c, cs, cz)
  h = HardSwish (cd)
  y = QuantizeLinear (h, ys, yz)
}
)",
                               LoadOptions{false});
      auto& init = m.graph.initializers;
      init.set("xs", Tensor::scalar(0.02f));
      init.set("xz", Tensor::scalar<uint8_t>(120));
      init.set("w", randomInt(DType::Int8, {c.oc, c.ic / c.group, c.k, c.k}, 21, -90, 90));
      init.set("ws", Tensor::fromVector<float>({c.oc}, std::vector<float>(static_cast<size_t>(c.oc), 0.004f)));
      init.set("wz", Tensor::fromVector<int8_t>({c.oc}, std::vector<int8_t>(static_cast<size_t>(c.oc), 0)));
      init.set("b", randomInt(DType::Int32, {c.oc}, 22, -2000, 2000));
      init.set("cs", Tensor::scalar(0.05f));
      init.set("ys", Tensor::scalar(0.03f));
      if (c.s8) {
        init.set("cz", Tensor::scalar<int8_t>(-10));
        init.set("yz", Tensor::scalar<int8_t>(-100));
      } else {
        init.set("cz", Tensor::scalar<uint8_t>(110));
        init.set("yz", Tensor::scalar<uint8_t>(20));
      }
      validateGraph(m.graph);
      return m;
    };
    const Model fused_m = model(false), split_m = model(true);
    engine::SessionOptions plain;
    plain.observable = true;
    plain.reference_only = true;
    const Tensor x = randomInt(DType::UInt8, {3, c.ic, c.hw, c.hw}, 23, 0, 255);
    const Tensor want = engine::Session(fused_m, plain).runOrdered({{"x", x}})[0];
    for (int threads : {1, 2, 3}) {
      INFO("threads " << threads);
      engine::configureThreads(threads);
      engine::SessionOptions so;
      so.profile = true;
      engine::Session fused(fused_m, so), split(split_m, so);
      const Tensor got = fused.runOrdered({{"x", x}})[0];
      const Tensor apart = split.runOrdered({{"x", x}})[0];
      const auto prof = fused.profile(), split_prof = split.profile();
      const auto it = std::find_if(prof.begin(), prof.end(), [](const auto& p) { return p.op_type.ends_with("QLinearConvNhwcLut"); });
      REQUIRE(it != prof.end());
      INFO(it->impl << " " << it->primitive);
      CHECK(std::none_of(prof.begin(), prof.end(), [](const auto& p) { return p.op_type.ends_with("QLut"); }));
      CHECK(std::any_of(split_prof.begin(), split_prof.end(), [](const auto& p) { return p.op_type.ends_with("QLut"); }));
      CHECK(it->primitive.ends_with(" + lut") == c.own);
      CHECK(got.dtype() == (c.s8 ? DType::Int8 : DType::UInt8));
      CHECK(got.bitEqual(apart));
      if (c.own) CHECK(got.bitEqual(want));
      CHECK(engine::Session(fused_m, engine::SessionOptions{0, true}).runOrdered({{"x", x}})[0].bitEqual(want));
    }
    engine::configureThreads(0);
  }
}

TEST_CASE("int8 calls under 2^20 multiply-adds (depthwise 2^18) run on the calling thread, larger ones on all, with the same bits", "[dnnl][quant]") {
  // dnnl_common.h, oneThreadCall: such a primitive is made and run on one thread, and the
  // profile appends ", 1 thread" to its implementation; small pointwise convolutions run lwc's own
  // kernel there (pw_int8.h) on CPUs with VNNI, also on the calling thread and so named. Without
  // VNNI a QLinearConv runs an exact fp32 convolution, which keeps all threads.
  struct Case {
    const char* name;
    NodeSpec spec;
    std::string op;
    bool small;
  };
  QConvCase cs{"", {1, 16, 8, 8}, {32, 16, 1, 1}};
  cs.per_channel = true;
  QConvCase cl{"", {4, 64, 14, 14}, {64, 64, 3, 3}};
  cl.pads = {1, 1, 1, 1};
  QConvCase cm{"", {1, 64, 14, 14}, {64, 64, 1, 1}};
  QConvCase c3{"", {1, 16, 8, 8}, {16, 16, 3, 3}};  // dense and small, not pointwise: oneDNN on every CPU
  c3.pads = {1, 1, 1, 1};
  QConvCase dws{"", {1, 48, 14, 14}, {48, 1, 3, 3}};  // int8 input: oneDNN (the own kernel reads uint8)
  dws.group = 48;
  dws.pads = {1, 1, 1, 1};
  dws.xt = DType::Int8;
  QConvCase dwl = dws;
  dwl.x = {1, 192, 14, 14};
  dwl.w = {192, 1, 3, 3};
  dwl.group = 192;
  QMatCase ml{"", {512, 256}, 256};
  ml.per_column = true;
  const std::vector<Case> cases = {
      {"QLinearMatMul 7 x 64 x 48 (21 504 multiply-adds)", qlinearMatMulSpec(matCases()[0], 10), "QLinearMatMul", true},
      {"QLinearMatMul 512 x 256 x 256 (33.5 M)", qlinearMatMulSpec(ml, 20), "QLinearMatMul", false},
      {"QLinearConv 1x1 16 -> 32 on 8x8 (32 768)", qlinearConvSpec(cs, 30), "QLinearConv", true},
      {"QLinearConv 1x1 64 -> 64 on 14x14 (802 816)", qlinearConvSpec(cm, 35), "QLinearConv", true},
      {"QLinearConv 3x3 64 -> 64, batch 4 on 14x14 (29 M)", qlinearConvSpec(cl, 40), "QLinearConv", false},
      {"QLinearConv 3x3 16 -> 16 on 8x8 (147 456)", qlinearConvSpec(c3, 45), "QLinearConv", true},
      {"QLinearConv depthwise 3x3, 48 channels on 14x14 (84 672)", qlinearConvSpec(dws, 50), "QLinearConv", true},
      {"QLinearConv depthwise 3x3, 192 channels on 14x14 (338 688)", qlinearConvSpec(dwl, 60), "QLinearConv", false},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    const Tensor want = runNode(c.spec, /*reference_only=*/true)[0];
    std::vector<Tensor> got;
    for (int threads : {2, 1, 3}) {
      INFO("threads " << threads);
      const ProfiledRun r = runProfiledOnThreads(c.spec, c.op, threads);
      got.push_back(r.y);
      checkRequantized(r.y, want);
      INFO(r.prof.impl << " " << r.prof.primitive);
      const bool int8_kernel = c.op == "QLinearMatMul" || int8FastPathHere();  // matrix products: F32QMatMul without VNNI
      if (int8_kernel) REQUIRE(r.prof.impl == "dnnl");
      CHECK(r.prof.primitive.ends_with(", 1 thread") == (int8_kernel && c.small));
    }
    engine::configureThreads(0);
    CHECK(got[0].bitEqual(got[1]));
    CHECK(got[0].bitEqual(got[2]));
  }
}

// Zero points fed at run time reach oneDNN through one-element memory objects that the kernel makes
// once and re-points per call: a session reused over calls with other zero points (and inputs) must
// give, byte for byte, what a fresh session gives on each.
TEST_CASE("a reused session's int8 kernels take each call's runtime zero points", "[dnnl][quant]") {
  std::vector<std::pair<NodeSpec, std::string>> specs;
  for (const auto& c : convCases())
    if (c.runtime_zp) specs.emplace_back(qlinearConvSpec(c, 1200), "QLinearConv");
  for (const auto& c : matCases())
    if (c.runtime_zp) specs.emplace_back(qlinearMatMulSpec(c, 1300), "QLinearMatMul");
  REQUIRE(specs.size() == 3);
  for (const auto& [spec, op] : specs) {
    INFO(op << " " << shapeStr(spec.inputs[0].shape()));
    const Model m = singleNodeModel(spec);
    engine::Session kept(m);
    if (int8FastPathHere()) CHECK(implOf(kept, op) == "dnnl");
    const DType xt = spec.inputs[2].dtype(), yt = spec.inputs[7].dtype();
    int differ = 0;
    for (int call = 0; call < 4; ++call) {
      engine::TensorMap feeds = feedsOf(spec);
      feeds["in0"] = randomQ(xt, spec.inputs[0].shape(), 1400 + call);
      feeds["in2"] = scalarQ(xt, (xt == DType::UInt8 ? 100 : -20) + 9 * call);
      feeds["in7"] = scalarQ(yt, (yt == DType::UInt8 ? 120 : 5) - 7 * call);
      const Tensor got = kept.run(feeds).at("out0");
      differ += !got.bitEqual(engine::Session(m).run(feeds).at("out0"));
    }
    CHECK(differ == 0);
  }
}

TEST_CASE("a reused session's QLinearMatMul reads and writes each call's tensors", "[dnnl][quant]") {
  // DnnlQMatMul keeps a primitive and its memory objects per row count and re-points them per call.
  const NodeSpec s = qlinearMatMulSpec(matCases()[0], 50);  // A [7, 64]
  Model m = singleNodeModel(s);
  m.graph.inputs[0].shape->at(0) = Dim{-1, "M"};
  CHECK(implOf(engine::Session(m), "QLinearMatMul") == expectedQMatMulImpl());
  const Tensor a = randomQ(DType::UInt8, {7, 64}, 51), b = randomQ(DType::UInt8, {7, 64}, 52),
               c = randomQ(DType::UInt8, {300, 64}, 53);
  CHECK(runsDifferingFromFresh(m, {a, b, c, a, b}).empty());
}

TEST_CASE("lwc.internal.MatMulIntegerScaled in oneDNN gives the reference's bits", "[dnnl][quant][f32parts]") {
  // float(acc) * scale [+ bias]: scale one value or one per column, read at run time (dynamic
  // quantization's activation scale times the weights'); long sums past 2^24; a zero scale.
  for (const int64_t K : {96, 3000}) {
    for (const bool per_column : {false, true}) {
      for (const bool bias : {false, true}) {
        INFO("K " << K << (per_column ? " per column" : " one scale") << (bias ? " with bias" : ""));
        NodeSpec s;
        s.op_type = "MatMulIntegerScaled";
        s.domain = "lwc.internal";
        s.opset = 1;
        const int64_t N = 40;
        Tensor b = randomInt(DType::Int8, {K, N}, 51, -127, 127);
        for (int64_t k = 0; k < K; ++k)
          for (int64_t n = 0; n < N / 2; ++n) b.data<int8_t>()[k * N + n] = static_cast<int8_t>(110 + (k + n) % 17);
        std::vector<float> sc(per_column ? N : 1), bv(N);
        for (size_t j = 0; j < sc.size(); ++j) sc[j] = 1e-4f * static_cast<float>(j + 3);
        for (int64_t j = 0; j < N; ++j) bv[static_cast<size_t>(j)] = 0.25f * static_cast<float>(j) - 3.0f;
        s.inputs = {randomInt(DType::UInt8, {3, 7, K}, 52, 150, 255), b, scalarQ(DType::UInt8, 37), Tensor(DType::Int8, {N}),
                    per_column ? Tensor::fromVector<float>({N}, sc) : Tensor::scalar(sc[0])};
        if (bias) s.inputs.push_back(Tensor::fromVector<float>({1, N}, bv));
        s.constant_inputs = {1, 3};
        if (bias) s.constant_inputs.push_back(5);
        CHECK(implOf(engine::Session(singleNodeModel(s)), "MatMulIntegerScaled") == expectedQMatMulImpl());
        const Tensor want = runNode(s, true)[0];
        CHECK(runNode(s)[0].bitEqual(want));
        if (K == 3000) {
          int64_t big = 0;
          for (int64_t i = 0; i < want.numel(); ++i)
            big += std::abs(want.data<float>()[i] / sc[per_column ? static_cast<size_t>(i % N) : 0]) > float(1 << 24);
          CHECK(big > 0);
        }
        s.inputs[4] = per_column ? Tensor(DType::Float32, {N}) : Tensor::scalar(0.0f);
        const Tensor zero = runNode(s)[0];
        CHECK(zero.bitEqual(runNode(s, true)[0]));
        for (int64_t i = 0; i < zero.numel(); ++i) CHECK(zero.data<float>()[i] == (bias ? bv[static_cast<size_t>(i % N)] : 0.0f));
      }
    }
  }
  SECTION("a scale or bias that is not one value or one per output column is refused by name") {
    NodeSpec s;
    s.op_type = "MatMulIntegerScaled";
    s.domain = "lwc.internal";
    s.opset = 1;
    s.inputs = {randomInt(DType::UInt8, {2, 16}, 71, 0, 255), randomInt(DType::Int8, {16, 8}, 72, -127, 127),
                scalarQ(DType::UInt8, 9), Tensor(DType::Int8, {8}), Tensor::fromVector<float>({3}, {0.1f, 0.2f, 0.3f})};
    s.constant_inputs = {1, 3};
    CHECK_THROWS_WITH(runNode(s), Catch::Contains("scale must be float32 with one value or one per output column (8), got float32 [3]"));
    s.inputs[4] = Tensor::scalar(0.1f);
    s.inputs.push_back(Tensor::fromVector<float>({2}, {1.0f, 2.0f}));
    CHECK_THROWS_WITH(runNode(s), Catch::Contains("bias must be float32 with one value per output column (8)"));
  }
}
