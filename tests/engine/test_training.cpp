// ai.onnx.preview.training's optimizer updates (training.cpp): float64 tensors by hand, the first
// update's coefficients, and the errors. ONNX's backend cases (float32): the conformance test.
#include <catch2/catch.hpp>
#include <cmath>

#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;

namespace {
NodeSpec training(const std::string& op, std::vector<Tensor> ins, std::vector<onnx::AttributeProto> attrs, size_t outs) {
  NodeSpec s = makeSpec(op, std::move(ins), std::move(attrs), 1);
  s.domain = "ai.onnx.preview.training";
  s.num_outputs = outs;
  return s;
}
const Tensor kR = Tensor::fromVector<float>({}, {0.5f});
Tensor step(int64_t t) { return Tensor::fromVector<int64_t>({}, {t}); }
}  // namespace

TEST_CASE("Momentum on float64: the gradient's coefficient is 1 on the first update, beta after", "[training]") {
  const Tensor x = Tensor::fromVector<double>({2}, {1.0, -2.0}), g = Tensor::fromVector<double>({2}, {0.25, 1.0}),
               v = Tensor::fromVector<double>({2}, {2.0, 0.5});
  for (const std::string mode : {"standard", "nesterov"})
    for (int64_t t : {0, 3}) {
      INFO(mode << " T=" << t);
      const auto out = runNode(training("Momentum", {kR, step(t), x, g, v},
                                        {attrFloat("alpha", 0.75f), attrFloat("beta", 0.5f), attrString("mode", mode),
                                         attrFloat("norm_coefficient", 0.125f)},
                                        2),
                               true);
      REQUIRE(out.at(0).dtype() == DType::Float64);
      for (int i = 0; i < 2; ++i) {
        const double gr = 0.125 * x.data<double>()[i] + g.data<double>()[i];
        const double vn = 0.75 * v.data<double>()[i] + (t > 0 ? 0.5 : 1.0) * gr;
        const double xn = mode == "standard" ? x.data<double>()[i] - 0.5 * vn : x.data<double>()[i] - 0.5 * (gr + 0.75 * vn);
        CHECK(out[1].data<double>()[i] == Approx(vn).epsilon(1e-15));
        CHECK(out[0].data<double>()[i] == Approx(xn).epsilon(1e-15));
      }
    }
}

TEST_CASE("Adam's bias correction starts at the second update", "[training]") {
  const Tensor x = Tensor::fromVector<double>({1}, {1.0}), g = Tensor::fromVector<double>({1}, {-1.0}),
               v = Tensor::fromVector<double>({1}, {2.0}), h = Tensor::fromVector<double>({1}, {0.5});
  for (int64_t t : {0, 2}) {
    INFO("T=" << t);
    const auto out = runNode(training("Adam", {kR, step(t), x, g, v, h}, {attrFloat("alpha", 0.5f), attrFloat("beta", 0.25f)}, 3), true);
    const double vn = 0.5 * 2.0 + 0.5 * -1.0, hn = 0.25 * 0.5 + 0.75 * 1.0;
    const double r = t > 0 ? 0.5 * std::sqrt(1 - std::pow(0.25, 2)) / (1 - std::pow(0.5, 2)) : 0.5;
    CHECK(out.at(1).data<double>()[0] == Approx(vn));
    CHECK(out.at(2).data<double>()[0] == Approx(hn));
    // epsilon's default is 1e-6 (ONNX's test_adam_multiple expects 1e-2 without setting it).
    CHECK(out.at(0).data<double>()[0] == Approx(1.0 - r * vn / (std::sqrt(hn) + 1e-6)).epsilon(1e-12));
  }
}

TEST_CASE("optimizer updates refuse groups that do not match", "[training]") {
  const Tensor x = Tensor::fromVector<float>({2}, {1, 2}), h3 = Tensor::fromVector<float>({3}, {1, 2, 3});
  CHECK_THAT(nodeError(training("Adagrad", {kR, step(0), x, x, h3}, {}, 2)),
             Contains("input 4 is float32 [3], input 2 is float32 [2]; each group's tensors must match"));
  CHECK_THAT(nodeError(training("Adagrad", {kR, step(0), x, x}, {}, 1)), Contains("expects R, T and 3 groups of equally many tensors; got 4 inputs"));
  CHECK_THAT(nodeError(training("Momentum", {kR, step(0), x, x, x}, {attrFloat("alpha", 0.9f)}, 2)),
             Contains("attributes alpha, beta, mode and norm_coefficient are required"));
}
