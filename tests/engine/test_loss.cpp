// NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (loss.cpp): values by hand, the mean's
// denominator, dtypes and the errors. Against ONNX Runtime: CTest ops_ort (scripts/gen_op_models.py);
// ONNX's 86 backend cases: the conformance test.
#include <catch2/catch.hpp>
#include <cmath>

#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;

namespace {

const Tensor kScores = Tensor::fromVector<float>({2, 3}, {1, 2, 3, 0, 0, 0});
const Tensor kTargets = Tensor::fromVector<int64_t>({2}, {2, 0});
const Tensor kWeights = Tensor::fromVector<float>({3}, {1, 2, 3});

NodeSpec sce(const std::string& reduction, std::vector<Tensor> ins, std::vector<onnx::AttributeProto> extra = {}) {
  extra.push_back(attrString("reduction", reduction));
  NodeSpec s = makeSpec("SoftmaxCrossEntropyLoss", std::move(ins), std::move(extra), 13);
  s.num_outputs = 2;
  return s;
}

}  // namespace

TEST_CASE("SoftmaxCrossEntropyLoss by hand: each reduction, class weights and the log_prob output", "[nn][loss]") {
  const double l0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0, l1 = std::log(3.0);
  const auto none = runNode(sce("none", {kScores, kTargets, kWeights}), true);
  REQUIRE(none.at(0).shape() == Shape{2});
  CHECK(none[0].data<float>()[0] == Approx(3 * l0));
  CHECK(none[0].data<float>()[1] == Approx(1 * l1));
  REQUIRE(none.at(1).shape() == Shape{2, 3});
  CHECK(none[1].data<float>()[2] == Approx(-l0));
  CHECK(none[1].data<float>()[3] == Approx(-l1));
  const Tensor sum = runNode(sce("sum", {kScores, kTargets, kWeights}), true).at(0);
  CHECK(sum.shape().empty());
  CHECK(sum.data<float>()[0] == Approx(3 * l0 + l1));
  // The mean divides by the targets' summed weights (3 + 1), not by the number of positions.
  CHECK(runNode(sce("mean", {kScores, kTargets, kWeights}), true).at(0).data<float>()[0] == Approx((3 * l0 + l1) / 4));
  CHECK(runNode(sce("mean", {kScores, kTargets}), true).at(0).data<float>()[0] == Approx((l0 + l1) / 2));
}

TEST_CASE("NegativeLogLikelihoodLoss: ignored positions add nothing and weigh nothing, all ignored is 0 / 0", "[nn][loss]") {
  // [N=1, C=2, D=3] log-probabilities; the middle target is ignore_index -1.
  const Tensor x = Tensor::fromVector<float>({1, 2, 3}, {-0.5f, -1.0f, -2.0f, -0.25f, -4.0f, -8.0f});
  const Tensor t = Tensor::fromVector<int64_t>({1, 3}, {1, -1, 0});
  const auto mean = [&](const Tensor& target) {
    return runNode(makeSpec("NegativeLogLikelihoodLoss", {x, target}, {attrInt("ignore_index", -1)}, 13), true)
        .at(0).data<float>()[0];
  };
  CHECK(mean(t) == Approx((0.25 + 2.0) / 2));
  CHECK(std::isnan(mean(Tensor::fromVector<int64_t>({1, 3}, {-1, -1, -1}))));
  const Tensor none = runNode(makeSpec("NegativeLogLikelihoodLoss", {x, t},
                                       {attrInt("ignore_index", -1), attrString("reduction", "none")}, 13), true).at(0);
  REQUIRE(none.shape() == Shape{1, 3});
  CHECK(none.data<float>()[1] == 0.0f);
}

TEST_CASE("NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss keep float64 and float16 scores' type", "[nn][loss]") {
  const Tensor t32 = Tensor::fromVector<int32_t>({2}, {2, 0});
  for (DType dt : {DType::Float64, DType::Float16}) {
    const auto out = runNode(sce("mean", {kScores.cast(dt), t32}), true);
    CHECK(out.at(0).dtype() == dt);
    CHECK(out.at(1).dtype() == dt);
    const double want = (std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0 + std::log(3.0)) / 2;
    CHECK(out[0].at(0) == Approx(want).epsilon(dt == DType::Float16 ? 1e-3 : 1e-12));
  }
}

TEST_CASE("The losses refuse a class outside the scores, mismatched shapes and an unknown reduction, naming them", "[nn][loss]") {
  CHECK_THAT(nodeError(sce("mean", {kScores, Tensor::fromVector<int64_t>({2}, {3, 0})})),
             Contains("target holds 3 at position 0; expected a class in [0, 3)"));
  CHECK_THAT(nodeError(sce("mean", {kScores, Tensor::fromVector<int64_t>({2}, {1, -2})}, {attrInt("ignore_index", -1)})),
             Contains("target holds -2 at position 1; expected a class in [0, 3) or ignore_index -1"));
  CHECK_THAT(nodeError(sce("mean", {kScores, Tensor::fromVector<int64_t>({3}, {0, 1, 2})})),
             Contains("target has shape [3]; expected [2] for scores of shape [2,3]"));
  CHECK_THAT(nodeError(sce("mean", {kScores, kTargets, Tensor::fromVector<float>({2}, {1, 1})})),
             Contains("weight has shape [2]; expected [3], one per class"));
  CHECK_THAT(nodeError(sce("mean", {kScores, Tensor::fromVector<int64_t>({2}, {0, INT64_MAX})})),
             Contains("target holds 9223372036854775807 at position 1"));
  CHECK_THAT(nodeError(sce("average", {kScores, kTargets})), Contains("reduction is 'average'; expected none, sum or mean"));
  CHECK_THAT(nodeError(makeSpec("NegativeLogLikelihoodLoss", {Tensor::fromVector<float>({3}, {1, 2, 3}), kTargets}, {}, 13)),
             Contains("input has shape [3]; expected [N, C] or [N, C, D1, ...]"));
}
