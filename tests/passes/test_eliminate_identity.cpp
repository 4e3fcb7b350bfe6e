// eliminate_identity: removes pass-through nodes, keeps graph interfaces intact.
#include <catch2/catch.hpp>

#include "support/pass_util.h"

using namespace lwc;
using namespace lwc::test;

TEST_CASE("eliminate_identity removes pass-through nodes", "[eliminate_identity]") {
  SECTION("Identity, Dropout, same-type Cast, identity Transpose, no-op Reshape and Pad") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 6] x) => (float[N, 4, 6] y) {
  a = Identity (x)
  b = Dropout (a)
  c = Cast <to=1> (b)
  d = Transpose <perm=[0,1,2]> (c)
  shp = Constant <value=int64[3] {0, 4, -1}> ()
  e = Reshape (d, shp)
  pads = Constant <value=int64[6] {0, 0, 0, 0, 0, 0}> ()
  f = Pad (e, pads)
  y = Relu (f)
})");
    Model before = m;
    // Constants must be initializers for the Reshape/Pad checks: fold them first.
    runPass(m, "fold_constants");
    auto r = runPass(m, "eliminate_identity");
    CHECK(r.stats["removed"] == 6);
    CHECK(m.graph.nodes.size() == 1);
    CHECK(m.graph.nodes[0].op_type == "Relu");
    CHECK(m.graph.nodes[0].inputs[0] == "x");
    CHECK(m.graph.initializers.size() == 0);
    CHECK(compareModels(before, m).empty());
  }
  SECTION("identity producing a graph output: the producer is renamed") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y) {
  r = Relu (x)
  y = Identity (r)
})");
    Model before = m;
    CHECK(runPass(m, "eliminate_identity").changed);
    REQUIRE(m.graph.nodes.size() == 1);
    CHECK(m.graph.nodes[0].outputs[0] == "y");
    CHECK(compareModels(before, m).empty());
  }
}

TEST_CASE("eliminate_identity leaves real work and interfaces alone", "[eliminate_identity]") {
  SECTION("graph input passed straight to a graph output") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y) {
  y = Identity (x)
})");
    const std::string before = serialized(m);
    auto r = runPass(m, "eliminate_identity");
    CHECK_FALSE(r.changed);
    CHECK(r.stats["left_alone"] == 1);
    CHECK(serialized(m) == before);
  }
  SECTION("Cast to another type, real Transpose, shape-changing Reshape, non-zero Pad, used Dropout mask") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 6] x) => (double[N, 4, 6] a, float[N, 6, 4] b, float[N, 24] c, float[N, 4, 8] d, bool[N, 4, 6] mask, float[N, 4, 6] o) {
  a = Cast <to=11> (x)
  b = Transpose <perm=[0,2,1]> (x)
  c = Reshape (x, shp)
  d = Pad (x, pads)
  o, mask = Dropout (x)
})");
    m.graph.initializers.set("shp", Tensor::fromVector<int64_t>({2}, {0, -1}));
    m.graph.initializers.set("pads", Tensor::fromVector<int64_t>({6}, {0, 0, 1, 0, 0, 1}));
    const std::string before = serialized(m);
    CHECK_FALSE(runPass(m, "eliminate_identity").changed);
    CHECK(serialized(m) == before);
  }
}
