// DFT, STFT, the windows and MelWeightMatrix (signal.cpp): identities a transform must satisfy, the
// output types, and the errors. Against ONNX Runtime: CTest ops_ort (scripts/gen_op_models.py: DFT
// forms, the three windows at 1e-6, a log-mel front-end); ONNX's backend cases: the conformance test.
#include <catch2/catch.hpp>
#include <cmath>
#include <numbers>

#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;

namespace {

Tensor i64(int64_t v) { return Tensor::scalar<int64_t>(v); }

NodeSpec dft(Tensor x, std::vector<onnx::AttributeProto> attrs, Tensor len = {}) {
  std::vector<Tensor> ins{std::move(x)};
  if (len.numel()) ins.push_back(std::move(len));
  return makeSpec("DFT", std::move(ins), std::move(attrs), 17);
}

}  // namespace

TEST_CASE("DFT: the inverse of the transform is the input, padded by dft_length - and an impulse has a flat spectrum", "[nn][signal]") {
  const Tensor x = randomFloat({2, 3, 5, 2}, 3).cast(DType::Float64);
  const Tensor y = runNode(dft(x, {attrInt("axis", 2)}, i64(8)), true).at(0);
  REQUIRE(y.shape() == Shape{2, 3, 8, 2});
  const Tensor back = runNode(dft(y, {attrInt("axis", 2), attrInt("inverse", 1)}), true).at(0);
  REQUIRE(back.shape() == Shape{2, 3, 8, 2});
  for (int64_t o = 0; o < 6; ++o)
    for (int64_t k = 0; k < 8; ++k)
      for (int64_t c = 0; c < 2; ++c) {
        const double want = k < 5 ? x.data<double>()[(o * 5 + k) * 2 + c] : 0.0;  // zero padding past 5
        CHECK(back.data<double>()[(o * 8 + k) * 2 + c] == Approx(want).margin(1e-12));
      }
  // A real impulse [1, 0, 0, 0, 0, 0, 0] onesided: 7 / 2 + 1 = 4 bins, each 1 + 0i.
  const Tensor imp = Tensor::fromVector<float>({1, 7, 1}, {1, 0, 0, 0, 0, 0, 0});
  const Tensor s = runNode(dft(imp, {attrInt("onesided", 1)}), true).at(0);
  REQUIRE(s.shape() == Shape{1, 4, 2});
  for (int64_t k = 0; k < 4; ++k) {
    CHECK(s.data<float>()[2 * k] == 1.0f);
    CHECK(s.data<float>()[2 * k + 1] == 0.0f);
  }
}

TEST_CASE("STFT is the DFT of each windowed frame", "[nn][signal]") {
  const Tensor sig = randomFloat({2, 30, 1}, 5);
  const Tensor win = randomFloat({8}, 6, 0.0f, 1.0f);
  const Tensor y = runNode(makeSpec("STFT", {sig, i64(5), win}, {}, 17), true).at(0);
  REQUIRE(y.shape() == Shape{2, 5, 5, 2});  // (30 - 8) / 5 + 1 frames, 8 / 2 + 1 bins
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t f = 0; f < 5; ++f)
      for (int64_t k = 0; k < 5; ++k) {
        double re = 0, im = 0;
        for (int64_t j = 0; j < 8; ++j) {
          const double v = double(sig.data<float>()[b * 30 + f * 5 + j]) * win.data<float>()[j];
          re += v * std::cos(2 * std::numbers::pi * double(k * j) / 8);
          im -= v * std::sin(2 * std::numbers::pi * double(k * j) / 8);
        }
        CHECK(y.data<float>()[((b * 5 + f) * 5 + k) * 2] == Approx(re).margin(1e-5));
        CHECK(y.data<float>()[((b * 5 + f) * 5 + k) * 2 + 1] == Approx(im).margin(1e-5));
      }
}

TEST_CASE("Windows: periodic and symmetric forms and output_datatype", "[nn][signal]") {
  const Tensor hann = runNode(makeSpec("HannWindow", {i64(8)}, {attrInt("output_datatype", 11)}, 17), true).at(0);
  REQUIRE(hann.dtype() == DType::Float64);
  REQUIRE(hann.shape() == Shape{8});
  CHECK(hann.data<double>()[2] == Approx(0.5 - 0.5 * std::cos(2 * std::numbers::pi * 2 / 8)));
  CHECK(hann.data<double>()[4] == Approx(1.0));  // the periodic window peaks at size / 2
  const Tensor sym = runNode(makeSpec("BlackmanWindow", {i64(5)}, {attrInt("periodic", 0)}, 17), true).at(0);
  CHECK(sym.data<float>()[0] == Approx(0.0f).margin(1e-7));  // 0.42 - 0.5 + 0.08
  CHECK(sym.data<float>()[4] == Approx(0.0f).margin(1e-7));  // symmetric: both ends
  CHECK(sym.data<float>()[2] == Approx(1.0f));
}

TEST_CASE("MelWeightMatrix: triangles that peak at 1 over the onesided bins", "[nn][signal]") {
  const Tensor m = runNode(makeSpec("MelWeightMatrix", {i64(4), i64(32), i64(8000), Tensor::scalar<float>(0),
                                                        Tensor::scalar<float>(4000)}, {}, 17), true).at(0);
  REQUIRE(m.shape() == Shape{17, 4});
  for (int64_t c = 0; c < 4; ++c) {
    double peak = 0;
    for (int64_t r = 0; r < 17; ++r) peak = std::max(peak, m.at(r * 4 + c));
    CHECK(peak == 1.0);
  }
}

TEST_CASE("The signal ops refuse what they cannot compute, naming it", "[nn][signal]") {
  const Tensor cplx = randomFloat({1, 6, 2}, 1), real = randomFloat({1, 6, 1}, 2);
  CHECK_THAT(nodeError(dft(cplx, {attrInt("onesided", 1)})), Contains("onesided needs a real input"));
  CHECK_THAT(nodeError(dft(real, {attrInt("onesided", 1), attrInt("inverse", 1)})), Contains("onesided with inverse"));
  CHECK_THAT(nodeError(dft(real, {attrInt("axis", 2)})), Contains("axis 2 is not a signal dimension"));
  CHECK_THAT(nodeError(dft(randomFloat({1, 6, 3}, 3), {})), Contains("its last dimension must be 1 (real) or 2 (complex)"));
  CHECK_THAT(nodeError(makeSpec("STFT", {real, i64(1), Tensor(), i64(7)}, {}, 17)),
             Contains("the frame length is 7; expected 1 to the signal's length 6"));
  CHECK_THAT(nodeError(makeSpec("STFT", {real, i64(1), randomFloat({4}, 4), i64(3)}, {}, 17)),
             Contains("frame_length 3 differs from the window's length 4"));
  CHECK_THAT(nodeError(makeSpec("STFT", {cplx, i64(1), randomFloat({4}, 4)}, {}, 17)),
             Contains("set onesided 0 for a complex one"));
  CHECK_THAT(nodeError(makeSpec("STFT", {real, i64(0), randomFloat({4}, 4)}, {}, 17)), Contains("frame_step is 0"));
  CHECK_THAT(nodeError(makeSpec("STFT", {real, i64(1)}, {}, 17)),
             Contains("neither a window nor frame_length is given; one sets the frame length"));
  CHECK_THAT(nodeError(makeSpec("HannWindow", {i64(4)}, {attrInt("output_datatype", 9)}, 17)),
             Contains("output_datatype 9 is not a numeric type lwc computes"));
  CHECK_THAT(nodeError(makeSpec("MelWeightMatrix", {i64(0), i64(16), i64(8000), Tensor::scalar<float>(0),
                                                    Tensor::scalar<float>(100)}, {}, 17)),
             Contains("num_mel_bins 0, dft_length 16 and sample_rate 8000 must each be at least 1"));
  CHECK_THAT(nodeError(makeSpec("MelWeightMatrix", {i64(4), i64(16), i64(8000), Tensor::scalar<float>(300),
                                                    Tensor::scalar<float>(100)}, {}, 17)),
             Contains("must satisfy 0 <= lower_edge_hertz < upper_edge_hertz"));
  CHECK_THAT(nodeError(makeSpec("HannWindow", {i64(-3)}, {}, 17)), Contains("size is -3"));
  CHECK_THAT(nodeError(makeSpec("HannWindow", {i64(int64_t(1) << 40)}, {}, 17)), Contains("expected a length of 0 to 2^31"));
  CHECK_THAT(nodeError(makeSpec("MelWeightMatrix", {i64(int64_t(1) << 40), i64(int64_t(1) << 40), i64(16000),
                                                    Tensor::scalar<float>(0), Tensor::scalar<float>(100)}, {}, 17)),
             Contains("make a matrix beyond what lwc computes (2^31 values)"));
  CHECK_THAT(nodeError(dft(real, {}, i64(int64_t(1) << 40))), Contains("dft_length is 1099511627776; expected 1 to 2^31"));
  CHECK_THAT(nodeError(makeSpec("MelWeightMatrix", {i64(6), i64(31), i64(16000), Tensor::scalar<float>(0),
                                                    Tensor::scalar<float>(8000)}, {}, 17)),
             Contains("past the 16 bins of a dft_length 31 spectrum at sample_rate 16000; lower upper_edge_hertz"));
}

TEST_CASE("DFT and STFT give the same bits on 1-3 threads, for lengths of several factors and a prime", "[nn][signal]") {
  // 1000 frames of 400 = 2^4 5^2 samples; a DFT of 97 (prime) points over 64 signals.
  const NodeSpec stft = makeSpec("STFT", {randomFloat({1, 40360, 1}, 8), i64(40), randomFloat({400}, 9)}, {}, 17);
  const NodeSpec prime = dft(randomFloat({4, 97, 16, 2}, 10), {});
  for (const NodeSpec* s : {&stft, &prime}) {
    Tensor first;
    for (int threads : {1, 2, 3}) {
      engine::configureThreads(threads);
      const Tensor got = runNode(*s, true).at(0);
      if (threads == 1) first = got;
      else CHECK(got.bitEqual(first));
    }
    engine::configureThreads(0);
  }
  CHECK(runNode(stft, true).at(0).shape() == Shape{1, 1000, 201, 2});
}

TEST_CASE("DFT of lengths with factors 3 and 5, a prime and twice a prime match the direct sum", "[nn][signal]") {
  for (int64_t n : {45, 97, 194}) {
    const Tensor x = randomFloat({1, n, 2}, uint32_t(n)).cast(DType::Float64);
    const Tensor y = runNode(dft(x, {}), true).at(0);
    const double* xd = x.data<double>();
    double worst = 0;
    for (int64_t k = 0; k < n; ++k) {
      double re = 0, im = 0;
      for (int64_t j = 0; j < n; ++j) {
        const double a = -2 * std::numbers::pi * double((k * j) % n) / double(n);
        re += xd[2 * j] * std::cos(a) - xd[2 * j + 1] * std::sin(a);
        im += xd[2 * j] * std::sin(a) + xd[2 * j + 1] * std::cos(a);
      }
      worst = std::max({worst, std::fabs(y.data<double>()[2 * k] - re), std::fabs(y.data<double>()[2 * k + 1] - im)});
    }
    CHECK(worst < 1e-12);
  }
}

TEST_CASE("DFT of a real input of even length (half-length FFT, packed) matches the direct sum, both sides", "[nn][signal]") {
  for (int64_t n : {4, 6, 10, 400}) {
    for (int64_t onesided : {0, 1}) {
      const Tensor x = randomFloat({2, n, 1}, uint32_t(n + onesided)).cast(DType::Float64);
      const Tensor y = runNode(dft(x, {attrInt("onesided", onesided)}), true).at(0);
      const int64_t bins = onesided ? n / 2 + 1 : n;
      REQUIRE(y.shape() == Shape{2, bins, 2});
      double worst = 0;
      for (int64_t b = 0; b < 2; ++b)
        for (int64_t k = 0; k < bins; ++k) {
          double re = 0, im = 0;
          for (int64_t j = 0; j < n; ++j) {
            const double a = -2 * std::numbers::pi * double((k * j) % n) / double(n);
            re += x.data<double>()[b * n + j] * std::cos(a);
            im += x.data<double>()[b * n + j] * std::sin(a);
          }
          worst = std::max({worst, std::fabs(y.data<double>()[(b * bins + k) * 2] - re),
                            std::fabs(y.data<double>()[(b * bins + k) * 2 + 1] - im)});
        }
      CHECK(worst < 1e-12);
    }
  }
}

TEST_CASE("DFT of a real input padded to an even length from an odd count of samples matches the direct sum", "[nn][signal]") {
  // 7 samples to dft_length 10: the packed transform's last pair holds one sample and a zero.
  const Tensor x = randomFloat({1, 7, 1}, 77).cast(DType::Float64);
  const Tensor y = runNode(dft(x, {attrInt("onesided", 1)}, i64(10)), true).at(0);
  REQUIRE(y.shape() == Shape{1, 6, 2});
  for (int64_t k = 0; k < 6; ++k) {
    double re = 0, im = 0;
    for (int64_t j = 0; j < 7; ++j) {
      const double a = -2 * std::numbers::pi * double((k * j) % 10) / 10.0;
      re += x.data<double>()[j] * std::cos(a);
      im += x.data<double>()[j] * std::sin(a);
    }
    CHECK(y.data<double>()[2 * k] == Approx(re).margin(1e-12));
    CHECK(y.data<double>()[2 * k + 1] == Approx(im).margin(1e-12));
  }
}
