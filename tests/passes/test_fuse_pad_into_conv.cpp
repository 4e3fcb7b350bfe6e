// fuse_pad_into_conv: zero Pad merged into Conv padding; everything else left alone.
#include <catch2/catch.hpp>

#include "support/pass_util.h"

using namespace lwc;
using namespace lwc::test;

TEST_CASE("fuse_pad_into_conv merges zero padding", "[fuse_pad_into_conv]") {
  SECTION("opset 13 input-form pads added to existing Conv pads") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 10, 9] y) {
  p = Pad (x, pads)
  y = Conv <pads=[1,0,1,0]> (p, w)
})");
    m.graph.initializers.set("pads", Tensor::fromVector<int64_t>({8}, {0, 0, 1, 2, 0, 0, 1, 0}));
    addConst(m, "w", {4, 3, 3, 3}, 1);
    Model before = m;
    auto r = runPass(m, "fuse_pad_into_conv");
    CHECK(r.stats["fused"] == 1);
    REQUIRE(m.graph.nodes.size() == 1);
    CHECK(m.graph.nodes[0].attrInts("pads") == std::vector<int64_t>{2, 2, 2, 0});
    CHECK_FALSE(m.graph.initializers.contains("pads"));
    CHECK(compareModels(before, m).empty());
  }
  SECTION("opset 10 attribute-form pads") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 10]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
  p = Pad <pads=[0,0,1,1,0,0,1,1]> (x)
  y = Conv (p, w)
})");
    addConst(m, "w", {4, 3, 3, 3}, 1);
    Model before = m;
    CHECK(runPass(m, "fuse_pad_into_conv").stats["fused"] == 1);
    CHECK(compareModels(before, m).empty());
  }
}

TEST_CASE("fuse_pad_into_conv leaves other pads alone", "[fuse_pad_into_conv]") {
  SECTION("reflect mode, non-zero value, channel padding, shared Pad output") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] a, float[N, 4, 8, 8] b, float[N, 4, 6, 6] c, float[N, 4, 8, 8] d, float[N, 3, 10, 10] e) {
  p1 = Pad <mode="reflect"> (x, sp)
  a = Conv (p1, w)
  p2 = Pad (x, sp, one)
  b = Conv (p2, w)
  p3 = Pad (x, cp)
  c = Conv (p3, w5)
  e = Pad (x, sp)
  d = Conv (e, w)
})");
    m.graph.initializers.set("sp", Tensor::fromVector<int64_t>({8}, {0, 0, 1, 1, 0, 0, 1, 1}));
    m.graph.initializers.set("cp", Tensor::fromVector<int64_t>({8}, {0, 1, 0, 0, 0, 1, 0, 0}));
    m.graph.initializers.set("one", Tensor::scalar<float>(1.0f));
    addConst(m, "w", {4, 3, 3, 3}, 1);
    addConst(m, "w5", {4, 5, 3, 3}, 2);
    const std::string before = serialized(m);
    auto r = runPass(m, "fuse_pad_into_conv");
    CHECK_FALSE(r.changed);
    CHECK(r.stats["left_alone"] == 3);
    CHECK(serialized(m) == before);
  }
}
