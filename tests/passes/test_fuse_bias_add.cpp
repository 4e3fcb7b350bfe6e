// fuse_bias_add: per-channel constant Adds become biases; MatMul+Add becomes Gemm.
#include <catch2/catch.hpp>

#include "support/pass_util.h"

using namespace lwc;
using namespace lwc::test;

TEST_CASE("fuse_bias_add folds per-channel Adds into biases", "[fuse_bias_add]") {
  SECTION("Conv with and without bias, constant on either side") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 6, 6] y, float[N, 4, 6, 6] z) {
  c = Conv (x, w)
  y = Add (c, cb)
  d = Conv (x, w2, b2)
  z = Add (sb, d)
})");
    addConst(m, "w", {4, 3, 3, 3}, 1);
    addConst(m, "cb", {1, 4, 1, 1}, 2);
    addConst(m, "w2", {4, 3, 3, 3}, 3);
    addConst(m, "b2", {4}, 4);
    addConst(m, "sb", {4, 1, 1}, 5);
    Model before = m;
    auto r = runPass(m, "fuse_bias_add");
    CHECK(r.stats["fused"] == 2);
    CHECK(countOps(m, "Add") == 0);
    CHECK(compareModels(before, m).empty());
  }
  SECTION("2-D MatMul + Add becomes Gemm; Gemm + Add folds into C") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 16] x) => (float[N, 8] y, float[N, 8] z) {
  a = MatMul (x, w)
  y = Add (a, v)
  g1 = Gemm <transB=1, beta=2.0> (x, wt, c)
  z = Add (g1, v)
})");
    addConst(m, "w", {16, 8}, 1);
    addConst(m, "v", {8}, 2);
    addConst(m, "wt", {8, 16}, 3);
    addConst(m, "c", {1, 8}, 4);
    Model before = m;
    auto r = runPass(m, "fuse_bias_add");
    CHECK(r.stats["fused"] == 2);
    CHECK(r.stats["matmul_to_gemm"] == 1);
    CHECK(countOps(m, "Gemm") == 2);
    CHECK(countOps(m, "MatMul") == 0);
    CHECK(compareModels(before, m).empty());
  }
}

TEST_CASE("fuse_bias_add leaves other Adds alone", "[fuse_bias_add]") {
  SECTION("non-channel constant, batched MatMul, shared output, two activations") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x, float[N, 5, 16] x3) => (float[N, 4, 6, 6] a, float[N, 5, 8] b, float[N, 4, 6, 6] c, float[N, 4, 6, 6] e, float[N, 4, 6, 6] f) {
  c1 = Conv (x, w)
  a = Add (c1, spatial)
  m3 = MatMul (x3, w3)
  b = Add (m3, v)
  c2 = Conv (x, w)
  c = Add (c2, cb)
  e = Relu (c2)
  c3 = Conv (x, w)
  f = Add (c3, c1)
})");
    addConst(m, "w", {4, 3, 3, 3}, 1);
    addConst(m, "spatial", {6, 6}, 2);
    addConst(m, "w3", {16, 8}, 3);
    addConst(m, "v", {8}, 4);
    addConst(m, "cb", {4, 1, 1}, 5);
    const std::string before = serialized(m);
    auto r = runPass(m, "fuse_bias_add");
    CHECK_FALSE(r.changed);
    CHECK(r.stats["left_alone"] == 3);
    CHECK(serialized(m) == before);
  }
}
