// float16_weights: float32 weights stored as float16 beside a Cast to float32.
#include <catch2/catch.hpp>

#include <cmath>

#include "lwc/dtype.h"
#include "lwc/graph_edit.h"
#include "lwc/model_io.h"
#include "support/pass_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;

namespace {
Model convGemm() {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 10] y) {
  c = Conv <pads=[1,1,1,1]> (x, w, b)
  r = Relu (c)
  p = GlobalAveragePool (r)
  f = Flatten (p)
  y = Gemm <transB=1> (f, fw, fb)
})");
  addConst(m, "w", {64, 3, 3, 3}, 1);
  addConst(m, "b", {64}, 2);
  addConst(m, "fw", {10, 64}, 3);
  addConst(m, "fb", {10}, 4);
  return m;
}
}  // namespace

TEST_CASE("float16_weights stores each weight rounded to float16 behind a Cast", "[float16_weights]") {
  Model m = convGemm();
  const Model before = m;
  auto r = runPass(m, "float16_weights");
  // w (1728), b (64), fw (640) qualify; fb has 10 < 16 elements.
  CHECK(r.stats["tensors_converted"] == 3);
  CHECK(r.stats["float32_bytes"] == (1728 + 64 + 640) * 4);
  CHECK(r.stats["float16_bytes"] == (1728 + 64 + 640) * 2);
  CHECK(countOps(m, "Cast") == 3);
  CHECK(m.graph.initializers.at("fb").dtype() == DType::Float32);
  for (const char* name : {"w", "b", "fw"}) {
    INFO(name);
    CHECK_FALSE(m.graph.initializers.contains(name));
    const Tensor& h = m.graph.initializers.at(std::string(name) + "__float16");
    const Tensor& f = before.graph.initializers.at(name);
    REQUIRE(h.dtype() == DType::Float16);
    REQUIRE(h.shape() == f.shape());
    const auto* hb = static_cast<const uint16_t*>(h.raw());
    for (int64_t i = 0; i < f.numel(); ++i) REQUIRE(hb[i] == floatToHalf(f.data<float>()[i]));
    // The Cast to float32 produces the old name, which the readers still read.
    const int c = producerIndex(m.graph, name);
    REQUIRE(c >= 0);
    CHECK(m.graph.nodes[size_t(c)].op_type == "Cast");
    CHECK(m.graph.nodes[size_t(c)].attrInt("to", 0) == 1);
  }
  CHECK(notesWith(r.notes, "3 float32 tensors stored as float16: 9728 -> 4864 B; lowest weight SQNR") == 1);
  // Outputs within float16's rounding of the weights; not bit-equal (the test can tell).
  CHECK(compareModels(before, m, 2e-3).empty());
  CHECK_FALSE(compareModels(before, m, 1e-7).empty());
  // A second run finds no float32 weight left to store.
  const std::string once = serialized(m);
  auto again = runPass(m, "float16_weights");
  CHECK_FALSE(again.changed);
  CHECK(serialized(m) == once);
  // lwc's passes widen them back: fold_constants makes float32 weights holding the float16 values.
  Model w = m;
  auto f = runPass(w, "fold_constants");
  CHECK(notesWith(f.notes, "3 float16 constants read through a Cast to float32 are stored as float32 now") == 1);
  CHECK(countOps(w, "Cast") == 0);
  const Tensor& ww = w.graph.initializers.at("w");
  REQUIRE(ww.dtype() == DType::Float32);
  for (int64_t i = 0; i < ww.numel(); ++i)
    REQUIRE(ww.data<float>()[i] == halfToFloat(floatToHalf(before.graph.initializers.at("w").data<float>()[i])));
}

TEST_CASE("float16_weights keeps what must stay float32 and says why", "[float16_weights]") {
  SECTION("a value beyond float16's range") {
    Model m = convGemm();
    Tensor big = m.graph.initializers.at("fw").clone();
    big.data<float>()[7] = 70000.0f;
    m.graph.initializers.set("fw", big);
    auto r = runPass(m, "float16_weights");
    CHECK(r.stats["tensors_converted"] == 2);
    CHECK(r.stats["tensors_kept_float32"] == 1);
    CHECK(m.graph.initializers.at("fw").dtype() == DType::Float32);
    CHECK(notesWith(r.notes, "fw: kept in float32 (value 70000 at element 7 is beyond float16's range (65504))") == 1);
  }
  SECTION("quantization parameters and Resize scales") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 16, 4, 4] x) => (float[N, 16, 8, 8] y) {
  d = DequantizeLinear <axis=0> (wq, ws)
  c = Conv (x, d)
  y = Resize <mode="nearest"> (c, roi, scales)
})");
    Tensor wq(DType::Int8, {16, 16, 1, 1});
    m.graph.initializers.set("wq", wq);
    addConst(m, "ws", {16}, 1, 0.01f, 0.02f);
    m.graph.initializers.set("roi", Tensor::fromVector<float>({0}, {}));
    m.graph.initializers.set("scales", Tensor::fromVector<float>({4}, {1, 1, 2, 2}));
    const std::string before = serialized(m);
    auto r = runPass(m, "float16_weights", {{"min_elements", 1}});
    CHECK_FALSE(r.changed);
    CHECK(serialized(m) == before);
    CHECK(notesWith(r.notes, "ws: kept in float32 (read by DequantizeLinear") == 1);
    CHECK(notesWith(r.notes, "quantization ops keep constant inputs (ONNX Runtime fuses Q/DQ only around constant scales)") == 1);
    CHECK(notesWith(r.notes, "scales: kept in float32 (scales or roi of Resize") == 1);
  }
  SECTION("values below float16's smallest step are counted") {
    Model m = convGemm();
    Tensor w = m.graph.initializers.at("w").clone();
    w.data<float>()[0] = 1e-9f;
    w.data<float>()[1] = 1e-6f;  // a float16 subnormal
    w.data<float>()[2] = 4e-8f;  // rounds up to the smallest subnormal, 2^-24, not to 0
    m.graph.initializers.set("w", w);
    auto r = runPass(m, "float16_weights");
    CHECK(r.stats["values_flushed_to_zero"] == 1);
    CHECK(r.stats["values_subnormal"] >= 1);
    CHECK(notesWith(r.notes, "w: 1 of 1728 non-zero values are at most 3e-8 (half float16's smallest step) and became 0") == 1);
  }
  SECTION("include and exclude") {
    Model m = convGemm();
    auto r = runPass(m, "float16_weights", {{"exclude", {"w"}}});
    CHECK(r.stats["tensors_converted"] == 2);
    CHECK(m.graph.initializers.at("w").dtype() == DType::Float32);
    Model m2 = convGemm();
    auto r2 = runPass(m2, "float16_weights", {{"include", {"fw"}}});
    CHECK(r2.stats["tensors_converted"] == 1);
    CHECK(m2.graph.initializers.at("fw__float16").dtype() == DType::Float16);
    // An excluded tensor is kept with a note, and counted.
    CHECK(r.stats["tensors_kept_float32"] == 1);
    CHECK(notesWith(r.notes, "w: kept in float32 (") == 1);
    Model m3 = convGemm();
    CHECK_THROWS_WITH(runPass(m3, "float16_weights", {{"exclude", {"nope"}}}), Contains("exclude: no initializer named 'nope'"));
    m3.graph.initializers.set("q", Tensor(DType::Int8, {32}));
    CHECK_THROWS_WITH(runPass(m3, "float16_weights", {{"include", {"q"}}}),
                      Contains("include: initializer 'q' is int8, not float32; this pass stores only float32 tensors as float16"));
  }
}

TEST_CASE("float16_weights writes Cast-1's string type below opset 6", "[float16_weights]") {
  Model m = parseGraph(R"(<ir_version: 3, opset_import: ["" : 5]>
g (float[2, 64] x) => (float[2, 64] y) {
  y = Add (x, w)
})");
  addConst(m, "w", {64}, 1);
  const Model before = m;
  auto r = runPass(m, "float16_weights");
  CHECK(r.stats["tensors_converted"] == 1);
  const int c = producerIndex(m.graph, "w");
  REQUIRE(c >= 0);
  const auto* to = m.graph.nodes[size_t(c)].attr("to");
  REQUIRE(to != nullptr);
  CHECK(to->type() == onnx::AttributeProto::STRING);
  CHECK(to->s() == "FLOAT");
  CHECK(compareModels(before, m, 1e-3).empty());
}

TEST_CASE("float16_weights leaves a tensor whose Cast and name would not make the file smaller", "[float16_weights]") {
  Model m = convGemm();
  auto r = runPass(m, "float16_weights", {{"min_elements", 1}});
  // fb: 40 bytes as float32; 20 as float16, but its Cast node and longer name cost more than 20.
  CHECK(r.stats["tensors_converted"] == 3);
  CHECK(r.stats["tensors_not_smaller"] == 1);
  CHECK(m.graph.initializers.at("fb").dtype() == DType::Float32);
  CHECK(notesWith(r.notes, "1 tensor left in float32: with its Cast node and name, it would not make the file smaller") == 1);
  // What the pass keeps, the file shows: it shrinks by the converted tensors only.
  Model again = convGemm();
  CHECK(serialized(m).size() < serialized(again).size() - (1728 + 64 + 640) * 2 + 200);
}

TEST_CASE("float16_weights keeps a tensor that an If branch reads", "[float16_weights]") {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[64] x) => (float[64] y, float[64] z) {
  z = Add (x, v)
  y = If (c) <
    then_branch = t () => (float[64] a) { a = Add (x, w) },
    else_branch = e () => (float[64] b) { b = Sub (x, w) }
  >
})");
  addConst(m, "w", {64}, 1);
  addConst(m, "v", {64}, 2);
  auto r = runPass(m, "float16_weights");
  CHECK(r.stats["tensors_converted"] == 1);  // v
  CHECK(m.graph.initializers.at("w").dtype() == DType::Float32);
  CHECK(notesWith(r.notes, "w: kept in float32 (read inside a subgraph (If / Loop / Scan body))") == 1);
}

TEST_CASE("float16_weights on a model without the default domain says why it does nothing", "[float16_weights]") {
  Model m = convGemm();
  m.opset_imports = {{"ai.onnx.ml", 3}};
  const std::string before = serialized(m);
  auto r = runPass(m, "float16_weights");
  CHECK_FALSE(r.changed);
  CHECK(serialized(m) == before);
  CHECK(notesWith(r.notes, "imports no ai.onnx opset, which the Cast to float32 needs") == 1);
}

TEST_CASE("float16_weights names its Casts apart from the values of a subgraph and counts the subgraph's initializers",
          "[float16_weights]") {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[64] x) => (float[64] y, float[64] z) {
  z = Add (x, w)
  y = If (c) <
    then_branch = t () => (float[64] w__float16) { w__float16 = Neg (x) },
    else_branch = e () => (float[64] b) { b = Sub (x, inner) }
  >
})");
  addConst(m, "w", {64}, 1);
  // An initializer of the else branch.
  const Tensor inner = Tensor::fromVector<float>({64}, std::vector<float>(64, 0.5f));
  for (auto& n : m.graph.nodes)
    for (auto& a : n.attrs)
      if (a.name() == "else_branch") *a.mutable_g()->add_initializer() = tensorToProto(inner, "inner");
  auto r = runPass(m, "float16_weights");
  CHECK(r.stats["tensors_converted"] == 1);
  CHECK(m.graph.initializers.contains("w__float16_1"));
  CHECK_FALSE(m.graph.initializers.contains("w__float16"));
  CHECK(notesWith(r.notes, "1 float32 initializers inside If / Loop / Scan bodies left as they are") == 1);
}
