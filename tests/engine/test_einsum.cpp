// Einsum (einsum.cpp): forms ONNX's backend cases do not hold, checked against loops written here,
// and the errors. More equations against ONNX Runtime: CTest ops_ort (scripts/gen_op_models.py).
#include <catch2/catch.hpp>

#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;

namespace {

NodeSpec einsumSpec(const std::string& eq, std::vector<Tensor> ins) {
  return makeSpec("Einsum", std::move(ins), {attrString("equation", eq)}, 13);
}

}  // namespace

TEST_CASE("Einsum: an ellipsis over more dims in one input than in another broadcasts, right-aligned", "[nn][einsum]") {
  // "...ij,...jk->...ik" with A [2, 3, 2, 4] and B [3, 4, 5]: B's one ellipsis dim meets A's last.
  const Tensor a = randomFloat({2, 3, 2, 4}, 1), b = randomFloat({3, 4, 5}, 2);
  const Tensor y = runNode(einsumSpec("...ij,...jk->...ik", {a, b}), true).at(0);
  REQUIRE(y.shape() == Shape{2, 3, 2, 5});
  for (int64_t p = 0; p < 2; ++p)
    for (int64_t q = 0; q < 3; ++q)
      for (int64_t i = 0; i < 2; ++i)
        for (int64_t k = 0; k < 5; ++k) {
          double s = 0;
          for (int64_t j = 0; j < 4; ++j) s += double(a.data<float>()[((p * 3 + q) * 2 + i) * 4 + j]) * b.data<float>()[(q * 4 + j) * 5 + k];
          CHECK(y.data<float>()[((p * 3 + q) * 2 + i) * 5 + k] == Approx(s).epsilon(1e-6));
        }
}

TEST_CASE("Einsum on integers sums exactly, and implicit output orders labels by character code", "[nn][einsum]") {
  const Tensor a = Tensor::fromVector<int64_t>({2, 3}, {1, 2, 3, 4, 5, 6}), b = Tensor::fromVector<int64_t>({3}, {10, 100, 1000});
  // "Bj,j" implicit: j appears twice (summed), B once: output [2]
  const Tensor y = runNode(einsumSpec("Bj,j", {a, b}), true).at(0);
  CHECK(y.dtype() == DType::Int64);
  CHECK(y.shape() == Shape{2});
  CHECK(y.data<int64_t>()[0] == 3210);
  CHECK(y.data<int64_t>()[1] == 6540);
  // "ba" implicit is the transpose ("ab" in character order)
  const Tensor t = runNode(einsumSpec("ba", {a}), true).at(0);
  REQUIRE(t.shape() == Shape{3, 2});
  CHECK(t.data<int64_t>()[1] == 4);
}

TEST_CASE("Einsum errors name the node, the equation and the problem", "[nn][einsum]") {
  const Tensor a = randomFloat({2, 3}, 1), b = randomFloat({4, 5}, 2);
  CHECK_THAT(nodeError(einsumSpec("ij,jk->ik", {a, b})), Contains("label 'j' is 3 in one input and 4 in input 1"));
  CHECK_THAT(nodeError(einsumSpec("ij->ij", {a, b})), Contains("has 1 terms for 2 inputs"));
  CHECK_THAT(nodeError(einsumSpec("ijk,kl", {a, b})), Contains("term 'ijk' has 3 labels but input 0 has shape [2,3]"));
  CHECK_THAT(nodeError(einsumSpec("i1,kl", {a, b})), Contains("'1' is not a letter"));
  CHECK_THAT(nodeError(einsumSpec("ij,kl->iz", {a, b})), Contains("output label 'z' is in no input"));
  CHECK_THAT(nodeError(einsumSpec("ij,kl->ii", {a, b})), Contains("output label 'i' appears twice"));
  CHECK(nodeError(einsumSpec("ij,kl->ilkj", {a, b})) == "(no error)");
}

TEST_CASE("Einsum of two float32 inputs as a batched sgemm: the reference's values, the same bits on 1-3 threads", "[nn][einsum]") {
  struct Case {
    std::string eq;
    Shape a, b;
  };
  const std::vector<Case> cases{{"bhqd,bhkd->bhqk", {2, 3, 70, 16}, {2, 3, 130, 16}},  // past one 64 x 128 block
                                {"ij,jk->ki", {5, 7}, {7, 3}},
                                {"bij,bjk", {4, 2, 3}, {4, 3, 5}},
                                {"i,j->ji", {4}, {6}},
                                {"ij,ij->", {3, 4}, {3, 4}},
                                {"kbi,bkj->bij", {6, 2, 3}, {2, 6, 4}},
                                {"...ij,...jk->...ik", {2, 3, 4}, {2, 4, 5}},
                                {"ij,jk->ik", {3, 0}, {0, 4}},  // an empty sum: zeros
                                {"ij,kl->ijk", {2, 3}, {4, 5}},  // l summed in one input only: the reference
                                {"ii,ij->ij", {3, 3}, {3, 2}}};  // a diagonal: the reference
  for (const Case& c : cases) {
    INFO(c.eq);
    const NodeSpec s = einsumSpec(c.eq, {randomFloat(c.a, 1), randomFloat(c.b, 2)});
    const Tensor want = runNode(s, true).at(0);
    Tensor first;
    const bool fast = c.eq.rfind("ij,kl", 0) != 0 && c.eq.rfind("ii", 0) != 0;
    for (int threads : {1, 2, 3}) {
      const auto [got, prof] = runProfiledOnThreads(s, "Einsum", threads);
      CHECK(prof.primitive == (fast ? "sgemm" : ""));
      REQUIRE(got.shape() == want.shape());
      for (int64_t i = 0; i < got.numel(); ++i) CHECK(got.data<float>()[i] == Approx(want.data<float>()[i]).margin(1e-5));
      if (threads == 1) first = got;
      else CHECK(got.bitEqual(first));
    }
    engine::configureThreads(0);
  }
}
