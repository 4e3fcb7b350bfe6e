// fuse_reshape: computed Reshape targets become constants, flattening Reshapes become Flatten.
#include <catch2/catch.hpp>

#include "support/pass_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {
const Node* nodeOf(const Model& m, const std::string& op) {
  for (const auto& n : m.graph.nodes)
    if (n.op_type == op) return &n;
  return nullptr;
}

std::vector<int64_t> ints(const Tensor& t) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(static_cast<int64_t>(t.at(i)));
  return v;
}
}  // namespace

TEST_CASE("fuse_reshape turns x.view(x.size(0), -1) and x.view(-1, C*H*W) into Flatten", "[fuse_reshape]") {
  SECTION("the target computed from the input's Shape (torch.onnx.export of x.view(x.size(0), -1))") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 3, 3] x) => (float[N, 36] y) {
  r = Relu (x)
  s = Shape (r)
  i0 = Constant <value=int64 {0}> ()
  b = Gather <axis=0> (s, i0)
  ax = Constant <value=int64[1] {0}> ()
  bu = Unsqueeze (b, ax)
  m1 = Constant <value=int64[1] {-1}> ()
  t = Concat <axis=0> (bu, m1)
  y = Reshape (r, t)
})");
    const Model before = m;
    runPass(m, "fold_constants");
    auto r = runPass(m, "fuse_reshape");
    CHECK(r.changed);
    CHECK(r.stats["flattened"] == 1);
    CHECK(r.stats["removed_shape_nodes"] == 4);  // Shape, Gather, Unsqueeze, Concat
    REQUIRE(m.graph.nodes.size() == 2);
    const Node* f = nodeOf(m, "Flatten");
    REQUIRE(f);
    CHECK(f->inputs == std::vector<std::string>{"r"});
    CHECK(f->attrInt("axis", 0) == 1);
    CHECK(f->outputs == std::vector<std::string>{"y"});
    CHECK(m.graph.initializers.size() == 0);
    CHECK(compareModels(before, m, 0.0, 3).empty());
  }
  SECTION("known dimensions multiplied (x.reshape(x.shape[0], x.shape[1] * x.shape[2] * x.shape[3]))") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 3, 3] x) => (float[N, 36] y) {
  s = Shape (x)
  i0 = Constant <value=int64 {0}> ()
  i1 = Constant <value=int64 {1}> ()
  i2 = Constant <value=int64 {2}> ()
  i3 = Constant <value=int64 {3}> ()
  d0 = Gather <axis=0> (s, i0)
  d1 = Gather <axis=0> (s, i1)
  d2 = Gather <axis=0> (s, i2)
  d3 = Gather <axis=0> (s, i3)
  p12 = Mul (d1, d2)
  p = Mul (p12, d3)
  ax = Constant <value=int64[1] {0}> ()
  u0 = Unsqueeze (d0, ax)
  up = Unsqueeze (p, ax)
  t = Concat <axis=0> (u0, up)
  y = Reshape (x, t)
})");
    const Model before = m;
    runPass(m, "fold_constants");
    auto r = runPass(m, "fuse_reshape");
    CHECK(r.stats["flattened"] == 1);
    REQUIRE(m.graph.nodes.size() == 1);
    CHECK(m.graph.nodes[0].op_type == "Flatten");
    CHECK(m.graph.initializers.size() == 0);
    CHECK(compareModels(before, m, 0.0, 2).empty());
  }
  SECTION("a constant [-1, C*H*W] target (x.view(-1, 36))") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 3, 3] x) => (float[N, 36] y) {
  t = Constant <value=int64[2] {-1, 36}> ()
  y = Reshape (x, t)
})");
    const Model before = m;
    runPass(m, "fold_constants");
    auto r = runPass(m, "fuse_reshape");
    CHECK(r.stats["flattened"] == 1);
    CHECK(nodeOf(m, "Flatten"));
    CHECK(m.graph.initializers.size() == 0);
    CHECK(compareModels(before, m, 0.0, 2).empty());
  }
  SECTION("a computed target that does not flatten becomes a constant with 0 for the copied dimension") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 3, 3] x) => (float[N, 4, 9] y) {
  s = Shape (x)
  i = Constant <value=int64[2] {0, 1}> ()
  nc = Gather <axis=0> (s, i)
  m1 = Constant <value=int64[1] {-1}> ()
  t = Concat <axis=0> (nc, m1)
  y = Reshape (x, t)
})");
    const Model before = m;
    runPass(m, "fold_constants");
    auto r = runPass(m, "fuse_reshape");
    CHECK(r.stats["fused"] == 1);
    REQUIRE(m.graph.nodes.size() == 1);
    const Node& n = m.graph.nodes[0];
    CHECK(n.op_type == "Reshape");
    // Dimensions 0 and 1 are read at their own positions: copied (0).
    CHECK(ints(m.graph.initializers.at(n.inputs[1])) == std::vector<int64_t>{0, 0, -1});
    CHECK(compareModels(before, m, 0.0, 2).empty());
  }
}

TEST_CASE("fuse_reshape reads the Shape of another tensor whose dimensions have the same symbols", "[fuse_reshape]") {
  SECTION("x.view(z.size(0), -1)") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 3, 3] x, float[N, 2] z) => (float[N, 36] y, float[N, 2] z2) {
  z2 = Relu (z)
  s = Shape (z)
  i0 = Constant <value=int64[1] {0}> ()
  b = Gather <axis=0> (s, i0)
  m1 = Constant <value=int64[1] {-1}> ()
  t = Concat <axis=0> (b, m1)
  y = Reshape (x, t)
})");
    const Model before = m;
    runPass(m, "fold_constants");
    auto r = runPass(m, "fuse_reshape");
    CHECK(r.stats["flattened"] == 1);
    CHECK(r.stats["removed_shape_nodes"] == 3);  // Shape, Gather, Concat
    REQUIRE(m.graph.nodes.size() == 2);
    const Node* f = nodeOf(m, "Flatten");
    REQUIRE(f);
    CHECK(f->inputs == std::vector<std::string>{"x"});
    CHECK(compareModels(before, m, 0.0, 3).empty());
  }
  SECTION("the second Reshape of a channel shuffle, sized from the block's input") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 3, 3] x) => (float[N, 4, 3, 3] y) {
  t1 = Constant <value=int64[5] {0, 2, 2, 3, 3}> ()
  r = Reshape (x, t1)
  p = Transpose <perm=[0, 2, 1, 3, 4]> (r)
  s = Shape (x)
  i0 = Constant <value=int64 {0}> ()
  b = Gather <axis=0> (s, i0)
  ax = Constant <value=int64[1] {0}> ()
  bu = Unsqueeze (b, ax)
  rest = Constant <value=int64[3] {-1, 3, 3}> ()
  t2 = Concat <axis=0> (bu, rest)
  y = Reshape (p, t2)
})");
    const Model before = m;
    runPass(m, "fold_constants");
    auto r = runPass(m, "fuse_reshape");
    CHECK(r.stats["fused"] == 1);
    CHECK(r.stats["removed_shape_nodes"] == 4);  // Shape, Gather, Unsqueeze, Concat
    REQUIRE(m.graph.nodes.size() == 3);
    const Node& last = m.graph.nodes.back();
    REQUIRE(last.op_type == "Reshape");
    CHECK(ints(m.graph.initializers.at(last.inputs[1])) == std::vector<int64_t>{0, -1, 3, 3});
    CHECK(compareModels(before, m, 0.0, 3).empty());
  }
}

TEST_CASE("fuse_reshape leaves alone what it cannot prove", "[fuse_reshape]") {
  SECTION("an unknown dimension read at another position") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, H, W] x) => (float[N, H, unk] y) {
  s = Shape (x)
  i = Constant <value=int64[2] {0, 2}> ()
  nh = Gather <axis=0> (s, i)
  m1 = Constant <value=int64[1] {-1}> ()
  t = Concat <axis=0> (nh, m1)
  y = Reshape (x, t)
})");
    runPass(m, "fold_constants");
    const std::string before = serialized(m);
    CHECK_FALSE(runPass(m, "fuse_reshape").changed);
    CHECK(serialized(m) == before);
  }
  SECTION("allowzero: a 0 is a zero, not a copy") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 14]>
g (float[N, 4, 3, 3] x) => (float[N, 36] y) {
  t = Constant <value=int64[2] {0, -1}> ()
  y = Reshape <allowzero=1> (x, t)
})");
    runPass(m, "fold_constants");
    const std::string before = serialized(m);
    CHECK_FALSE(runPass(m, "fuse_reshape").changed);
    CHECK(serialized(m) == before);
  }
  SECTION("the Shape of another tensor whose dimension has another symbol") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 3, 3] x, float[M, 2] z) => (float[N, 36] y) {
  s = Shape (z)
  i0 = Constant <value=int64[1] {0}> ()
  b = Gather <axis=0> (s, i0)
  m1 = Constant <value=int64[1] {-1}> ()
  t = Concat <axis=0> (b, m1)
  y = Reshape (x, t)
})");
    runPass(m, "fold_constants");
    const std::string before = serialized(m);
    CHECK_FALSE(runPass(m, "fuse_reshape").changed);
    CHECK(serialized(m) == before);
  }
}
