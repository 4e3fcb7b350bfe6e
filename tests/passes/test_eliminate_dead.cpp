// eliminate_dead: unused nodes, initializers and value_info go; the interface stays.
#include <catch2/catch.hpp>

#include "support/pass_util.h"

using namespace lwc;
using namespace lwc::test;

TEST_CASE("eliminate_dead removes what no output needs", "[eliminate_dead]") {
  SECTION("dead chain, unused initializer, stale value_info") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x, float[N, 4] unused_input) => (float[N, 4] y) {
  y = Relu (x)
  a = Add (x, w)
  b = Sigmoid (a)
})");
    addConst(m, "w", {4}, 1);
    addConst(m, "orphan", {8}, 2);
    ValueInfo stale;
    stale.name = "gone";
    stale.dtype = DType::Float32;
    m.graph.value_info.push_back(stale);
    Model before = m;
    auto r = runPass(m, "eliminate_dead");
    CHECK(r.stats["nodes_removed"] == 2);
    CHECK(r.stats["initializers_removed"] == 2);
    CHECK(r.stats["value_info_removed"] == 1);
    CHECK(m.graph.nodes.size() == 1);
    CHECK(m.graph.inputs.size() == 2);  // real inputs are the interface
    CHECK(compareModels(before, m).empty());
  }
  SECTION("everything live: unchanged") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y, float[N, 4] z) {
  a = Add (x, w)
  y = Relu (a)
  z = Sigmoid (a)
})");
    addConst(m, "w", {4}, 1);
    const std::string before = serialized(m);
    CHECK_FALSE(runPass(m, "eliminate_dead").changed);
    CHECK(serialized(m) == before);
  }
}
