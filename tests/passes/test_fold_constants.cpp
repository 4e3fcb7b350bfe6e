// fold_constants: constant subgraphs become initializers; growth, DequantizeLinear and graph
// outputs are left alone.
#include <catch2/catch.hpp>

#include "lwc/analysis.h"
#include "lwc/graph_edit.h"
#include "support/pass_util.h"

using namespace lwc;
using namespace lwc::test;

TEST_CASE("fold_constants evaluates constant chains", "[fold_constants]") {
  SECTION("shape arithmetic chain and constant weight transform") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 2, 3, 4] x) => (float[N, 24] y) {
  s = Shape (w)
  i = Constant <value=int64[1] {0}> ()
  d = Gather (s, i)
  mone = Constant <value=int64[1] {-1}> ()
  shp = Concat <axis=0> (mone, d)
  wt = Transpose <perm=[1,0]> (w)
  f = Reshape (x, shp)
  y = MatMul (f, wt)
})");
    addConst(m, "w", {24, 24}, 3);
    Model before = m;
    auto r = runPass(m, "fold_constants");
    CHECK(r.stats["folded"] == 6);
    CHECK(m.graph.nodes.size() == 2);
    CHECK(countOps(m, "Reshape") == 1);
    CHECK(countOps(m, "MatMul") == 1);
    CHECK_FALSE(m.graph.initializers.contains("w"));  // only the transposed copy is left
    CHECK(m.graph.initializers.at("shp").numel() == 2);
    CHECK(compareModels(before, m).empty());
  }
  SECTION("known dimensions of a Shape whose batch is symbolic, round after round") {
    // torch's x.chunk(2, 1): Slice bounds from x.size(1). Once folded, the Slice's output shape is
    // known, and the next chunk's bounds fold in the next round. The batch stays a Gather.
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 3] x) => (float[N, 1, 3] y, float[N, 12] z) {
  one = Constant <value=int64[1] {1}> ()
  zero = Constant <value=int64[1] {0}> ()
  two = Constant <value=int64[1] {2}> ()
  mone = Constant <value=int64[1] {-1}> ()
  s = Shape (x)
  c = Gather <axis=0> (s, one)
  h = Div (c, two)
  a = Slice (x, zero, h, one)
  s2 = Shape (a)
  c2 = Gather <axis=0> (s2, one)
  h2 = Div (c2, two)
  y = Slice (a, zero, h2, one)
  b = Gather <axis=0> (s, zero)
  t = Concat <axis=0> (b, mone)
  z = Reshape (x, t)
})");
    Model before = m;
    auto r = runPass(m, "fold_constants");
    CHECK(countOps(m, "Gather") == 1);  // the batch
    CHECK(countOps(m, "Div") == 0);
    CHECK(countOps(m, "Slice") == 2);
    REQUIRE(m.graph.initializers.contains("h2"));
    CHECK(m.graph.initializers.at("h2").at(0) == 1);
    CHECK(compareModels(before, m).empty());
  }
  SECTION("Shape with start and end: the dimensions it selects, though the batch is symbolic") {
    // How lwc writes an opset-18 Split with num_outputs in opset 17 (lwc/opset_lowering.h).
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 5, 3] x) => (float[N, 3, 3] y, float[N, 2, 3] z, int64[1] b, float[?, 3] w) {
  r = Relu (x)
  d = Shape <start = 1, end = 2> (r)
  last = Shape <start = -1> (r)
  n1 = Constant <value=int64[1] {1}> ()
  n = Constant <value=int64[1] {2}> ()
  up = Add (d, n1)
  c = Div (up, n)
  l = Sub (d, c)
  sizes = Concat <axis=0> (c, l)
  y, z = Split <axis = 1> (r, sizes)
  b = Shape <end = 1> (r)
  mone = Constant <value=int64[1] {-1}> ()
  t = Concat <axis=0> (mone, last)
  w = Reshape (r, t)
})");
    Model before = m;
    auto r = runPass(m, "fold_constants");
    CHECK(countOps(m, "Shape") == 1);  // the batch, which stays unknown
    CHECK(countOps(m, "Concat") == 0);
    REQUIRE(m.graph.initializers.contains("t"));
    CHECK(intValues(m.graph.initializers.at("t")) == std::vector<int64_t>{-1, 3});
    REQUIRE(m.graph.initializers.contains("sizes"));
    CHECK(m.graph.initializers.at("sizes").at(0) == 3);
    CHECK(m.graph.initializers.at("sizes").at(1) == 2);
    CHECK(compareModels(before, m).empty());
  }
  SECTION("Shape of a value with a fully known shape") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 3, 4] x) => (float[2, 12] y) {
  s = Shape (x)
  k = Constant <value=int64[1] {0}> ()
  b = Gather (s, k)
  mone = Constant <value=int64[1] {-1}> ()
  shp = Concat <axis=0> (b, mone)
  y = Reshape (x, shp)
})");
    Model before = m;
    auto r = runPass(m, "fold_constants");
    CHECK(r.changed);
    CHECK(m.graph.nodes.size() == 1);
    CHECK(compareModels(before, m).empty());
  }
}

TEST_CASE("fold_constants says when float16 weights behind a Cast become float32", "[fold_constants]") {
  // A model storing float16 weights with a Cast to float32 came out of lwc fuse 1.8x larger with
  // nothing said but the bytes.
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 3] y) {
  w = Cast <to = 1> (w16)
  y = MatMul (x, w)
})");
  m.graph.initializers.set("w16", Tensor(DType::Float16, {4, 3}));
  auto r = runPass(m, "fold_constants", nlohmann::json::object());
  CHECK(r.changed);
  CHECK(m.graph.initializers.at("w").dtype() == DType::Float32);
  bool noted = false;
  for (const auto& n : r.notes) noted = noted || n.find("1 float16 constants read through a Cast to float32 are stored as float32") != std::string::npos;
  CHECK(noted);
}

TEST_CASE("fold_constants leaves alone what it must not fold", "[fold_constants]") {
  SECTION("nothing constant: unchanged") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y) {
  y = Relu (x)
})");
    const std::string before = serialized(m);
    CHECK_FALSE(runPass(m, "fold_constants").changed);
    CHECK(serialized(m) == before);
  }
  SECTION("growth beyond the limit, DequantizeLinear of weights, graph outputs") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 512] x) => (float[N, 512, 512] y, float[4] k, float[N, 4] z) {
  shp = Constant <value=int64[2] {512, 512}> ()
  big = Expand (one, shp)
  y = Add (x, big)
  k = Relu (kc)
  wf = DequantizeLinear (wq, sc)
  x4 = Slice (x, st, en, ax)
  z = MatMul (x4, wf)
})");
    m.graph.initializers.set("one", Tensor::fromVector<float>({1}, {1.0f}));
    m.graph.initializers.set("kc", Tensor::fromVector<float>({4}, {1, -2, 3, -4}));
    m.graph.initializers.set("wq", Tensor::fromVector<int8_t>({4, 4}, std::vector<int8_t>(16, 3)));
    m.graph.initializers.set("sc", Tensor::scalar<float>(0.5f));
    m.graph.initializers.set("st", Tensor::fromVector<int64_t>({1}, {0}));
    m.graph.initializers.set("en", Tensor::fromVector<int64_t>({1}, {4}));
    m.graph.initializers.set("ax", Tensor::fromVector<int64_t>({1}, {1}));
    auto r = runPass(m, "fold_constants", {{"max_growth_kb", 64}});
    CHECK(r.stats["folded"] == 1);  // only the shape Constant
    CHECK(r.stats["skipped_growth"] == 1);
    CHECK(r.stats["skipped_graph_output"] == 1);
    CHECK(countOps(m, "Expand") == 1);
    CHECK(countOps(m, "DequantizeLinear") == 1);
    CHECK(countOps(m, "Relu") == 1);
  }
}

TEST_CASE("fold_constants keeps a parameter shared through Identity nodes shared", "[fold_constants]") {
  // torch's export shares identical parameters (a fresh LayerNorm's ones, zero biases) as Identity
  // nodes of one initializer; evaluating them would give every reader its own copy.
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 3] y, float[N, 3] z, float[4, 3] w3) {
  w2 = Identity (w)
  w3 = Identity (w)
  y = MatMul (x, w)
  z = MatMul (x, w2)
})");
  addConst(m, "w", {4, 3}, 5);
  const Model before = m;
  const int64_t params_before = analyzeModel(m).params;
  auto r = runPass(m, "fold_constants");
  CHECK(r.stats["identities_bypassed"] == 1);
  CHECK(r.stats["skipped_graph_output"] == 1);  // w3 is a graph output: left alone
  CHECK(countOps(m, "Identity") == 1);
  CHECK(m.graph.initializers.size() == 1);
  CHECK(analyzeModel(m).params == params_before);
  for (const auto& n : m.graph.nodes)
    if (n.op_type == "MatMul") CHECK(n.inputs[1] == "w");
  CHECK(compareModels(before, m).empty());
}
