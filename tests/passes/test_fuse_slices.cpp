// fuse_slices: Slices that cut a tensor into consecutive pieces along one axis become one Split;
// gaps, overlaps, steps and single Slices are left alone.
#include <catch2/catch.hpp>

#include "support/pass_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;

namespace {
const Node* findOp(const Model& m, const std::string& op) {
  for (const auto& n : m.graph.nodes)
    if (n.op_type == op) return &n;
  return nullptr;
}
}  // namespace

TEST_CASE("fuse_slices turns consecutive Slices into one Split", "[fuse_slices]") {
  SECTION("input form (opset 13), pieces out of order, negative and past-the-end bounds") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 6, 2] x) => (float[N, 6, 2] y) {
  r = Relu (x)
  c = Slice (r, m2, big, one)
  a = Slice (r, zero, two, one)
  b = Slice (r, two, four, one)
  y = Concat <axis=1> (b, a, c)
})");
    for (auto [name, v] : std::vector<std::pair<std::string, int64_t>>{
             {"zero", 0}, {"one", 1}, {"two", 2}, {"four", 4}, {"m2", -2}, {"big", INT64_MAX}})
      m.graph.initializers.set(name, Tensor::fromVector<int64_t>({1}, {v}));
    Model before = m;
    auto r = runPass(m, "fuse_slices");
    CHECK(r.stats["splits"] == 1);
    CHECK(r.stats["slices_replaced"] == 3);
    CHECK(countOps(m, "Slice") == 0);
    const Node* split = findOp(m, "Split");
    REQUIRE(split);
    CHECK(split->outputs == std::vector<std::string>{"a", "b", "c"});
    CHECK(split->attrInt("axis", 0) == 1);
    const Tensor& sizes = m.graph.initializers.at(split->inputs[1]);
    CHECK((sizes.numel() == 3 && sizes.at(0) == 2 && sizes.at(1) == 2 && sizes.at(2) == 2));
    CHECK(m.graph.nodes[1].op_type == "Split");  // where the first Slice stood, before every reader
    CHECK(unusedInitializers(m.graph).empty());
    CHECK(compareModels(before, m).empty());
  }
  SECTION("attribute form (opset 9)") {
    Model m = parseGraph(R"(<ir_version: 4, opset_import: ["" : 9]>
g (float[N, 5, 2] x) => (float[N, 3, 2] a, float[N, 2, 2] b) {
  a = Slice <starts=[0], ends=[3], axes=[1]> (x)
  b = Slice <starts=[3], ends=[5], axes=[-2]> (x)
})");
    Model before = m;
    auto r = runPass(m, "fuse_slices");
    CHECK(r.changed);
    const Node* split = findOp(m, "Split");
    REQUIRE(split);
    CHECK(split->attrInts("split") == std::vector<int64_t>{3, 2});
    CHECK(split->inputs.size() == 1);
    CHECK(compareModels(before, m).empty());
  }
  SECTION("overlaps, gaps, steps, other axes and single Slices are left alone") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"a = Slice (x, zero, four, one)\n  b = Slice (x, two, six, one)", "gaps or overlap"},
        {"a = Slice (x, zero, two, one)\n  b = Slice (x, four, six, one)", "gaps or overlap"},
        {"a = Slice (x, zero, four, one, one)\n  b = Slice (x, four, six, one, two)", ""},
        {"a = Slice (x, zero, four, one)\n  b = Slice (x, four, six, zero)", ""},
        {"a = Slice (x, zero, six, one)\n  b = Relu (x)", ""}};
    for (const auto& [lines, why] : cases) {
      INFO(lines);
      Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 6, 6] x) => (float a, float b) {
  )" + lines + R"(
})");
      for (auto [name, v] : std::vector<std::pair<std::string, int64_t>>{{"zero", 0}, {"one", 1}, {"two", 2}, {"four", 4}, {"six", 6}})
        m.graph.initializers.set(name, Tensor::fromVector<int64_t>({1}, {v}));
      const std::string before = serialized(m);
      auto r = runPass(m, "fuse_slices");
      CHECK_FALSE(r.changed);
      CHECK(serialized(m) == before);
      if (!why.empty()) CHECK_THAT(r.notes.at(0), Contains(why));
    }
  }
}
