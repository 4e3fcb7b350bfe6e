#include <catch2/catch.hpp>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>

#include "lwc/analysis.h"
#include "lwc/model_io.h"
#include "lwc/shape_inference.h"

using namespace lwc;

namespace {
// Conv(3->8, 3x3, pad 1) + BN + Relu + GlobalAveragePool + Flatten + Gemm(8->10)
Model smallCnn() {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 16, 16] x, float[8,3,3,3] w, float[10,8] gw) => (float[N, 10] y)
<float[8] s = {1,1,1,1,1,1,1,1}, float[8] b = {0,0,0,0,0,0,0,0}, float[8] mu = {0,0,0,0,0,0,0,0},
 float[8] var = {1,1,1,1,1,1,1,1}, float[10] gb = {0,0,0,0,0,0,0,0,0,0}, int64[2] shp = {-1, 8}>
{
  c = Conv <pads=[1,1,1,1], kernel_shape=[3,3]> (x, w)
  n = BatchNormalization (c, s, b, mu, var)
  r = Relu (n)
  p = GlobalAveragePool (r)
  f = Reshape (p, shp)
  y = Gemm <transB=1> (f, gw, gb)
}
)");
  return m;
}

// The small CNN's two weight tensors; every 4th conv weight is zero.
std::vector<std::pair<std::string, Tensor>> smallCnnWeights() {
  Tensor w(DType::Float32, {8, 3, 3, 3});
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = (i % 4 == 0) ? 0.0f : 0.1f * float(i);
  Tensor gw(DType::Float32, {10, 8});
  for (int64_t i = 0; i < gw.numel(); ++i) gw.data<float>()[i] = 0.01f * float(i + 1);
  return {{"w", w}, {"gw", gw}};
}

Node constantNode(const std::string& output, const Tensor& t) {
  Node c;
  c.op_type = "Constant";
  c.outputs = {output};
  onnx::AttributeProto a;
  a.set_name("value");
  a.set_type(onnx::AttributeProto::TENSOR);
  *a.mutable_t() = tensorToProto(t, output);
  c.attrs.push_back(a);
  return c;
}
}  // namespace

TEST_CASE("parameters and MACs of a small CNN", "[analysis]") {
  Model m = smallCnn();
  // Weights as initializers (the text format above leaves w/gw as inputs of nothing; add them).
  for (auto& [name, t] : smallCnnWeights()) m.graph.initializers.set(name, t);

  auto roles = initializerRoles(m.graph);
  CHECK(roles["w"] == InitRole::Weight);
  CHECK(roles["gw"] == InitRole::Weight);
  CHECK(roles["gb"] == InitRole::Bias);
  CHECK(roles["s"] == InitRole::NormParam);
  CHECK(roles["mu"] == InitRole::BnStat);
  CHECK(roles["var"] == InitRole::BnStat);
  CHECK(roles["shp"] == InitRole::Constant);

  for (int64_t batch : {1, 4}) {
    ModelStats st = analyzeModel(m, AnalyzeOptions{batch});
    CHECK(st.params == 8 * 3 * 9 + 8 + 8 + 80 + 10);
    CHECK(st.bn_running_stats == 16);
    CHECK(st.constants == 2);
    CHECK(st.macs_complete);
    // Conv: N*8*16*16 outputs x 27 MACs; Gemm: N*10*8
    CHECK(st.macs == batch * (8 * 16 * 16 * 27 + 80));
    CHECK(st.weight_elements == 216 + 80);
    CHECK(st.weight_zeros == 54);  // every 4th conv weight
    REQUIRE(st.layers.size() == 3);  // Conv, BN, Gemm carry params or MACs
    CHECK(st.layers[0].op_type == "Conv");
    CHECK(st.layers[0].output_shape == shapeStr({batch, 8, 16, 16}));
  }
}

TEST_CASE("weights held in Constant nodes count as parameters", "[analysis]") {
  Model with_inits = smallCnn();
  Model with_nodes = smallCnn();
  for (auto& [name, t] : smallCnnWeights()) {
    with_inits.graph.initializers.set(name, t);
    with_nodes.graph.nodes.insert(with_nodes.graph.nodes.begin(), constantNode(name, t));
  }
  const ModelStats a = analyzeModel(with_inits);
  const ModelStats b = analyzeModel(with_nodes);
  CHECK(b.params == a.params);
  CHECK(b.params == 8 * 3 * 9 + 8 + 8 + 80 + 10);
  CHECK(b.weight_bytes == a.weight_bytes);
  CHECK(b.weight_elements == a.weight_elements);
  CHECK(b.weight_zeros == a.weight_zeros);
  CHECK(b.entropy_bytes == a.entropy_bytes);
  CHECK(b.macs == a.macs);
  REQUIRE(b.layers.size() == a.layers.size());
  CHECK(b.layers[0].params == a.layers[0].params);
  // The file's own nodes are reported as they are.
  CHECK(b.nodes == a.nodes + 2);
  CHECK(b.op_histogram.at("Constant") == 2);
  // A Constant holding an integer shape is not a parameter.
  Model shape_node = with_inits;
  shape_node.graph.nodes.insert(shape_node.graph.nodes.begin(),
                               constantNode("shp2", Tensor::fromVector<int64_t>({2}, {-1, 8})));
  for (auto& n : shape_node.graph.nodes)
    if (n.op_type == "Reshape") n.inputs[1] = "shp2";
  shape_node.graph.initializers.erase("shp");
  const ModelStats c = analyzeModel(shape_node);
  CHECK(c.constants == a.constants);
  CHECK(analyzeModel(shape_node).params == a.params);
}

TEST_CASE("float16 weights stored beside a Cast to float32 count as the layer's weights", "[analysis]") {
  // A float32 compute graph whose initializers are stored as float16, each behind a Cast (as
  // converters that keep float32 inputs write): the same parameters, roles and per-layer counts.
  Model plain = smallCnn();
  for (auto& [name, t] : smallCnnWeights()) plain.graph.initializers.set(name, t);
  Model stored = plain;
  std::vector<Node> casts;
  for (const auto& [name, t] : plain.graph.initializers.items()) {
    if (t.dtype() != DType::Float32) continue;
    stored.graph.initializers.erase(name);
    stored.graph.initializers.set(name + "_h", t.cast(DType::Float16));
    Node c;
    c.op_type = "Cast";
    c.inputs = {name + "_h"};
    c.outputs = {name};
    onnx::AttributeProto to;
    to.set_name("to");
    to.set_type(onnx::AttributeProto::INT);
    to.set_i(onnx::TensorProto::FLOAT);
    c.attrs.push_back(to);
    casts.push_back(c);
  }
  REQUIRE(casts.size() == 7);
  stored.graph.nodes.insert(stored.graph.nodes.begin(), casts.begin(), casts.end());
  auto roles = initializerRoles(stored.graph);
  CHECK(roles["w_h"] == InitRole::Weight);
  CHECK(roles["gb_h"] == InitRole::Bias);
  CHECK(roles["s_h"] == InitRole::NormParam);
  CHECK(roles["var_h"] == InitRole::BnStat);
  CHECK(roles["shp"] == InitRole::Constant);
  const ModelStats a = analyzeModel(plain);
  const ModelStats b = analyzeModel(stored);
  CHECK(b.params == a.params);
  CHECK(b.bn_running_stats == a.bn_running_stats);
  CHECK(b.constants == a.constants);
  CHECK(b.weight_elements == a.weight_elements);
  CHECK(b.weight_zeros == a.weight_zeros);
  CHECK(b.weight_bytes * 2 == a.weight_bytes);
  CHECK(b.weight_bytes_by_dtype.at("float16") == b.weight_bytes);
  // The weights belong to the Conv, BatchNormalization and Gemm, not to the Casts.
  REQUIRE(b.layers.size() == a.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    CHECK(b.layers[i].op_type == a.layers[i].op_type);
    CHECK(b.layers[i].params == a.layers[i].params);
  }
}

TEST_CASE("weights behind a chain of Casts belong to the layer, and a Cast to a graph output keeps its own", "[analysis]") {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 4] x, float[4, 8] w, float16[4, 8] wh) => (float[2, 8] y, float[4, 8] wc)
{
  h = Cast <to = 10> (w)
  f = Cast <to = 1> (h)
  y = MatMul (x, f)
  wc = Cast <to = 1> (wh)
}
)");
  Tensor w(DType::Float32, {4, 8});
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = i % 3 == 0 ? 0.0f : 0.5f;
  m.graph.initializers.set("w", w);
  m.graph.initializers.set("wh", w.cast(DType::Float16));
  const ModelStats st = analyzeModel(m);
  CHECK(st.params == 64);
  CHECK(st.weight_elements == 32);  // w, read by the MatMul through two Casts
  CHECK(st.weight_zeros == 11);
  int64_t rows = 0;
  for (const auto& L : st.layers) {
    rows += L.params;
    if (L.op_type == "MatMul") CHECK(L.params == 32);
    if (L.op_type == "Cast") CHECK(L.name == "wc");  // the only Cast with a row: nothing reads its output
  }
  CHECK(rows == st.params);  // the rows add up to the total (wh's 32 were in neither)
}

TEST_CASE("entropy bound", "[analysis]") {
  Tensor t = Tensor::fromVector<float>({4}, {1, 1, 2, 3});
  // p = {0.5, 0.25, 0.25} -> 1.5 bits
  CHECK(entropyBitsPerElement(t) == Approx(1.5));
  Tensor z(DType::Int8, {100});
  CHECK(entropyBitsPerElement(z) == 0.0);
}

TEST_CASE("entropy bound has the bits of the histogram summed in ascending bit patterns", "[analysis]") {
  // The reference: counts per exact bit pattern (std::map, ascending), -Σ q log2 q in that order.
  auto reference = [](const Tensor& t) {
    std::map<uint64_t, int64_t> counts;
    const auto* b = static_cast<const uint8_t*>(t.raw());
    const size_t w = dtypeSize(t.dtype());
    for (int64_t i = 0; i < t.numel(); ++i) {
      uint64_t key = 0;
      std::memcpy(&key, b + static_cast<size_t>(i) * w, w);
      ++counts[key];
    }
    double h = 0;
    for (const auto& [key, c] : counts) {
      const double q = static_cast<double>(c) / static_cast<double>(t.numel());
      h -= q * std::log2(q);
    }
    return h;
  };
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int64_t n : {1, 7, 1000, 300000}) {
    Tensor f(DType::Float32, {n}), q(DType::Int8, {n}), h(DType::Float16, {n}), d(DType::Int64, {n});
    for (int64_t i = 0; i < n; ++i) {
      const float v = g(rng);
      // Few distinct values too (shared weights), negatives and both zeros.
      f.data<float>()[i] = i % 3 == 0 ? std::round(v * 4) / 4 : (i % 5 == 0 ? -0.0f : v);
      q.data<int8_t>()[i] = static_cast<int8_t>(std::clamp(v * 40.0f, -128.0f, 127.0f));
      static_cast<uint16_t*>(h.raw())[i] = static_cast<uint16_t>(rng() & 0x3ff);
      d.data<int64_t>()[i] = static_cast<int64_t>(v * 1e6) - (int64_t{1} << 40);
    }
    for (const Tensor* t : {&f, &q, &h, &d}) {
      INFO("n " << n << ", " << dtypeName(t->dtype()));
      CHECK(entropyBitsPerElement(*t) == reference(*t));
    }
  }
}

TEST_CASE("shape inference with symbolic batch", "[analysis]") {
  Model m = smallCnn();
  m.graph.initializers.set("w", Tensor(DType::Float32, {8, 3, 3, 3}));
  m.graph.initializers.set("gw", Tensor(DType::Float32, {10, 8}));
  ValueTypes sym = inferShapes(m);
  REQUIRE(sym.count("c"));
  REQUIRE(sym["c"].shape);
  CHECK(symShapeStr(*sym["c"].shape) == "[N,8,16,16]");
  CHECK(sym["y"].dtype == DType::Float32);
  ValueTypes fixed = inferShapes(m, ShapeOptions{32});
  CHECK(concreteShape(fixed, "f") == Shape{32, 8});
  CHECK(concreteShape(fixed, "y") == Shape{32, 10});
}

TEST_CASE("shape inference evaluates integer shape computations ONNX does not propagate", "[analysis]") {
  // ShuffleNet's channel shuffle as torch exports view(b, g, c // g, h, w): the Reshape target
  // goes through Div and Cast, where ONNX's data propagation stops. Twice in a row, so the second
  // Reshape's target is only known once the first Reshape's output shape is.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8, 4, 4] x) => (float[N, 8, 4, 4] y)
<int64 i0 = {0}, int64 i1 = {1}, int64 i2 = {2}, int64 i3 = {3}, int64 two = {2}, int64[1] ax = {0},
 int64[1] g2 = {2}, int64[1] m1 = {-1}>
{
  s = Shape (x)
  b = Gather <axis=0> (s, i0)
  c = Gather <axis=0> (s, i1)
  h = Gather <axis=0> (s, i2)
  w = Gather <axis=0> (s, i3)
  cg = Div (c, two)
  c32 = Cast <to=6> (cg)
  cgc = Cast <to=7> (c32)
  bu = Unsqueeze (b, ax)
  cu = Unsqueeze (cgc, ax)
  hu = Unsqueeze (h, ax)
  wu = Unsqueeze (w, ax)
  t1 = Concat <axis=0> (bu, g2, cu, hu, wu)
  r1 = Reshape (x, t1)
  p = Transpose <perm=[0,2,1,3,4]> (r1)
  t2 = Concat <axis=0> (bu, m1, hu, wu)
  f = Reshape (p, t2)
  s2 = Shape (f)
  n2 = Slice (s2, i1, i2)
  n2s = Squeeze (n2, ax)
  c2 = Div (n2s, two)
  c2u = Unsqueeze (c2, ax)
  t3 = Concat <axis=0> (bu, g2, c2u, hu, wu)
  r2 = Reshape (f, t3)
  t4 = Concat <axis=0> (bu, m1, hu, wu)
  y = Reshape (r2, t4)
}
)");
  // Symbolic batch: the known dimensions are evaluated, the batch entry of each target copies the
  // data's batch in place, so every shape is known up to the symbol.
  ValueTypes sym = inferShapes(m);
  CHECK_FALSE(concreteShape(sym, "r1"));
  for (const auto& [name, shape] : std::vector<std::pair<std::string, std::string>>{
           {"r1", "[N,2,4,4,4]"}, {"p", "[N,4,2,4,4]"}, {"f", "[N,8,4,4]"}, {"r2", "[N,2,4,4,4]"}}) {
    INFO(name);
    REQUIRE(sym.count(name));
    REQUIRE(sym.at(name).shape);
    CHECK(symShapeStr(*sym.at(name).shape) == shape);
  }
  ValueTypes fixed = inferShapes(m, ShapeOptions{2});
  CHECK(concreteShape(fixed, "r1") == Shape{2, 2, 4, 4, 4});
  CHECK(concreteShape(fixed, "f") == Shape{2, 8, 4, 4});
  CHECK(concreteShape(fixed, "r2") == Shape{2, 2, 4, 4, 4});
  CHECK(concreteShape(fixed, "y") == Shape{2, 8, 4, 4});
  CHECK(fixed.at("cgc").dtype == DType::Int64);
  CHECK(fixed.at("c32").dtype == DType::Int32);  // the evaluated value keeps the type its node makes
}

TEST_CASE("shape inference keeps the ranks of a Pad and a Reshape whose sizes are computed at run time", "[analysis]") {
  // ONNX 1.12 gives these no shape at all; their ranks are the data's and the target's length, and
  // the ops after them get theirs (swin_t pads and partitions its windows so).
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 5, 6] x, int64[6] pads, int64[4] target) => (float[?, ?, ?, ?] y)
{
  p = Pad (x, pads)
  r = Relu (p)
  t = Reshape (r, target)
  y = Transpose <perm=[0, 2, 1, 3]> (t)
}
)");
  for (const auto& types : {inferShapes(m), inferShapes(m, ShapeOptions{2})})
    for (const auto& [name, rank] : std::vector<std::pair<std::string, size_t>>{{"p", 3}, {"r", 3}, {"t", 4}, {"y", 4}}) {
      INFO(name);
      REQUIRE(types.count(name));
      REQUIRE(types.at(name).shape);
      CHECK(types.at(name).shape->size() == rank);
      CHECK(types.at(name).dtype == DType::Float32);
    }
}

TEST_CASE("shape inference keeps the batch symbol through a copied dimension learnt in a later round", "[analysis]") {
  // A cleaned-up shuffle: r2's target is a constant [0, ...] (copy), but its input is only known
  // after the first round resolves f; ONNX's first pass names r2's batch unk__0, which must not
  // outlive that round, or y's target (the input's batch symbol N) would no longer match it.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8, 4, 4] x) => (float[?, ?, ?, ?] o)
<int64 i0 = {0}, int64[1] ax = {0}, int64[4] shuffle = {2, 4, 4, 4}, int64[3] back = {-1, 4, 4},
 int64[5] copy = {0, 2, 4, 4, 4}>
{
  s = Shape (x)
  b = Gather <axis=0> (s, i0)
  bu = Unsqueeze (b, ax)
  t1 = Concat <axis=0> (bu, shuffle)
  r1 = Reshape (x, t1)
  p = Transpose <perm=[0,2,1,3,4]> (r1)
  t2 = Concat <axis=0> (bu, back)
  f = Reshape (p, t2)
  r2 = Reshape (f, copy)
  p2 = Transpose <perm=[0,2,1,3,4]> (r2)
  y = Reshape (p2, t2)
  o = Relu (y)
}
)");
  ValueTypes sym = inferShapes(m);
  for (const auto& [name, shape] : std::vector<std::pair<std::string, std::string>>{
           {"f", "[N,8,4,4]"}, {"r2", "[N,2,4,4,4]"}, {"y", "[N,8,4,4]"}}) {
    INFO(name);
    REQUIRE(sym.count(name));
    REQUIRE(sym.at(name).shape);
    CHECK(symShapeStr(*sym.at(name).shape) == shape);
  }
}

TEST_CASE("shape inference evaluates known dimensions of a Shape whose batch is symbolic", "[analysis]") {
  // torch's x.chunk(2, 1): the Slice's end is x.size(1) // 2, through Div, with the batch symbolic.
  // The channel count is known, so the end is too; the batch Gather stays unknown.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8, 4] x) => (float[?, ?, ?] o, int64 b)
<int64 i0 = {0}, int64 i1 = {1}, int64 two = {2}, int64[1] ax = {0}, int64[1] z = {0}, int64[1] one = {1}>
{
  s = Shape (x)
  c = Gather <axis=0> (s, i1)
  h = Div (c, two)
  hu = Unsqueeze (h, ax)
  y = Slice (x, z, hu, one)
  o = Relu (y)
  b = Gather <axis=0> (s, i0)
}
)");
  ValueTypes sym = inferShapes(m);
  REQUIRE(sym.count("y"));
  REQUIRE(sym["y"].shape);
  CHECK(symShapeStr(*sym["y"].shape) == "[N,4,4]");
}

TEST_CASE("shape-value evaluation leaves overflowing integer arithmetic alone", "[analysis]") {
  // 8 * (2^62) overflows int64: no wrapped value may become a Reshape target.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 8] x) => (float[?] y)
<int64 i1 = {1}, int64[1] big = {4611686018427387904}, int64[1] ax = {0}>
{
  s = Shape (x)
  c = Gather <axis=0> (s, i1)
  cu = Unsqueeze (c, ax)
  t = Mul (cu, big)
  y = Reshape (x, t)
}
)");
  ValueTypes types;
  REQUIRE_NOTHROW(types = inferShapes(m, ShapeOptions{2}));
  CHECK_FALSE(concreteShape(types, "y"));
  CHECK(concreteShape(types, "cu") == Shape{1});
}

TEST_CASE("shape inference survives a Shape of a value nothing can type", "[analysis]") {
  // ONNX 1.12's data propagation for Shape reads its input's type unchecked: a custom op's output
  // or a Reshape that cannot be inferred (12 is no multiple of 5) used to crash every command here.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
g (float[N, 4, 12] x) => (int64[3] s1, int64[1] s2, float[N, 4, 12] r)
<int64[4] t = {0, 0, 5, -1}>
{
  c = com.example.Custom (x)
  s1 = Shape (c)
  bad = Reshape (x, t)
  s2 = Shape <start = -1> (bad)
  r = Relu (x)
  rs = Shape (r)
}
)");
  ValueTypes types;
  REQUIRE_NOTHROW(types = inferShapes(m));
  // What could be inferred still is; nothing is declared for the values that could not be typed.
  REQUIRE(types.count("rs"));
  CHECK(concreteShape(types, "rs") == Shape{3});
  CHECK_FALSE(types.count("c"));
  CHECK_FALSE(types.count("bad"));
  // A graph input declared without any type (a fuzzed backend-test model) crashed the same way.
  Model untyped = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 15]>
g (float[3, 4] x) => (int64[2] y)
{
  y = Shape (x)
}
)");
  untyped.graph.inputs.at(0).dtype = DType::Undefined;
  untyped.graph.inputs.at(0).shape.reset();
  REQUIRE_FALSE(modelToProto(untyped).graph().input(0).has_type());
  REQUIRE_NOTHROW(types = inferShapes(untyped));
}

TEST_CASE("shape inference survives shape arithmetic on values of no elements", "[analysis]") {
  // ONNX 1.12's data propagation for Add/Sub/Mul reads an operand of no elements as if it had
  // one: the Shape of a scalar plus [1] (a valid model: the result has no elements either), a
  // Shape slice past the rank, an empty constant. Each crashed every command before.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float x, float[2, 3] z) => (int64[0] a, int64[0] b, int64[0] c, float[2, 3] r)
<int64[1] one = {1}, int64[0] none = {}>
{
  s = Shape (x)
  a = Add (s, one)
  past = Shape <start = 5, end = 6> (z)
  b = Sub (one, past)
  c = Mul (none, one)
  r = Relu (z)
  rs = Shape (r)
  two = Add (rs, one)
}
)");
  ValueTypes types;
  REQUIRE_NOTHROW(types = inferShapes(m));
  CHECK(concreteShape(types, "a") == Shape{0});
  CHECK(concreteShape(types, "two") == Shape{2});
}

TEST_CASE("shape inference survives nodes that lack an attribute their schema requires", "[analysis]") {
  // ONNX's inference functions trust the checker: Scan's reads num_scan_inputs without looking, and
  // a Scan whose attribute was misspelt (a fuzzed backend-test model) crashed every command. Such
  // nodes, also inside subgraphs, are left out of the inference: their outputs stay untyped.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 11]>
g (float[2] init, float[3, 2] x) => (float[2] y, float[3, 2] z, float[3, 2] r)
{
  y, z = Scan <num_scan_intuts = 1, body = body (float[2] sum_in, float[2] next) => (float[2] sum_out, float[2] scan_out) {
    sum_out = Add (sum_in, next)
    scan_out = Identity (sum_out)
  }> (init, x)
  c = Cast <to = "int64"> (x)
  r = Relu (x)
}
)");
  ValueTypes types;
  REQUIRE_NOTHROW(types = inferShapes(m));
  CHECK(concreteShape(types, "r") == Shape{3, 2});
  // A valid Scan is inferred as before.
  Model ok = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 11]>
g (float[2] init, float[3, 2] x) => (float[2] y, float[3, 2] z)
{
  y, z = Scan <num_scan_inputs = 1, body = body (float[2] sum_in, float[2] next) => (float[2] sum_out, float[2] scan_out) {
    sum_out = Add (sum_in, next)
    scan_out = Identity (sum_out)
  }> (init, x)
}
)");
  REQUIRE_NOTHROW(types = inferShapes(ok));
  CHECK(concreteShape(types, "z") == Shape{3, 2});
}

TEST_CASE("MACs of shapes whose counts do not fit in 64 bits are unknown, not wrapped", "[analysis]") {
  // Declared shapes may be anything in a corrupt model: a fuzzed one declared [206158430205,
  // 268435455], and the element count overflowed (undefined behaviour; a wrapped, wrong count).
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[4294967296, 4294967296] a, float[4294967296, 8] b, float[2, 3] c, float[3, 4] d) => (float[4294967296, 8] y, float[4294967296, 4294967296] r, float[2, 4] e)
{
  y = MatMul (a, b)
  r = Relu (a)
  e = MatMul (c, d)
}
)");
  const ModelStats st = analyzeModel(m);
  CHECK_FALSE(st.macs_complete);  // 2^67 MACs: the product wrapped to 0 before
  CHECK(st.macs == 2 * 4 * 3);    // what is known is still counted
  CHECK(st.other_ops == 0);       // 2^64 Relu outputs do not fit either: not counted
}

TEST_CASE("convolutions whose X and W ranks disagree are left out of inference and named", "[analysis]") {
  // ONNX 1.12's inference of Conv, ConvInteger, QLinearConv and ConvTranspose reads as many
  // dimensions of X as W has, unchecked: an X of lower rank (declared, or from a Flatten)
  // segfaulted every command (fuzzed backend-test models).
  Model bad = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 2] x, float[1, 2, 3, 3] z) => (float[1, 2, 3, 3] y, float[1, 2, 3, 3] y2, float[1, 2, 1, 1] y3, float[1, 2, 3, 3] r)
<float[2, 2, 3, 3] w = {0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0}>
{
  y = ConvTranspose (x, w)
  f = Flatten (z)
  y2 = ConvTranspose (f, w)
  y3 = Conv (f, w)
  r = Relu (z)
}
)");
  ValueTypes types;
  REQUIRE_NOTHROW(types = inferShapes(bad));
  CHECK(concreteShape(types, "r") == Shape{1, 2, 3, 3});
  CHECK_THAT(convRankDisagreement(bad), Catch::Contains("ConvTranspose (output 'y'): X ('x') has rank 2 and W ('w') rank 4"));
  bad.graph.nodes.erase(bad.graph.nodes.begin());  // the declared one; the Flatten's are inferred
  REQUIRE_NOTHROW(types = inferShapes(bad));
  CHECK_THAT(convRankDisagreement(bad), Catch::Contains("X ('f') has rank 2 and W ('w') rank 4"));
  // A W whose element type lwc cannot read (44) still has a rank ONNX's inference reads.
  Model odd = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 11]>
g (float[1, 1, 3] x, float[1] w) => (float[1, 2, 5] y)
{
  y = ConvTranspose (x, w)
}
)");
  onnx::TypeProto t;
  t.mutable_tensor_type()->set_elem_type(44);
  t.mutable_tensor_type()->mutable_shape()->add_dim()->set_dim_value(1);
  odd.graph.inputs.at(1).other_type = t;
  REQUIRE_NOTHROW(types = inferShapes(odd));
  CHECK_THAT(convRankDisagreement(odd), Catch::Contains("X ('x') has rank 3 and W ('w') rank 1"));
  // A chain of valid ones is inferred whole: the second's input rank comes from the first.
  Model ok = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 2, 3, 3] x) => (float[N, 1, 7, 7] y)
<float[2, 4, 3, 3] w1 = {0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,
                         0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0},
 float[4, 1, 3, 3] w2 = {0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0}>
{
  a = ConvTranspose (x, w1)
  b = Relu (a)
  y = ConvTranspose (b, w2)
}
)");
  REQUIRE_NOTHROW(types = inferShapes(ok, ShapeOptions{2}));
  CHECK(concreteShape(types, "a") == Shape{2, 4, 5, 5});
  CHECK(concreteShape(types, "b") == Shape{2, 4, 5, 5});
  CHECK(concreteShape(types, "y") == Shape{2, 1, 7, 7});
  CHECK(convRankDisagreement(ok).empty());
}

TEST_CASE("the analysis reads only the inputs and outputs a node has", "[analysis]") {
  // A fuzzed model had a Gemm with no inputs: the MACs count indexed its first input (out of
  // bounds, a segfault in lwc info); a DequantizeLinear without inputs or outputs likewise.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 3] x) => (float[2, 3] y)
{
  y = Relu (x)
  g = Gemm (x, x)
  d = DequantizeLinear (x, x)
}
)", LoadOptions{false});
  m.graph.nodes.at(1).inputs.clear();
  m.graph.nodes.at(2).inputs.clear();
  ModelStats st;
  REQUIRE_NOTHROW(st = analyzeModel(m));
  CHECK_FALSE(st.macs_complete);
  m.graph.nodes.at(2).outputs.clear();
  REQUIRE_NOTHROW(st = analyzeModel(m));
}

TEST_CASE("a Constant's value_floats / value_ints count as an initializer would", "[analysis]") {
  Model with_inits = smallCnn();
  Model with_floats = smallCnn();
  for (auto& [name, t] : smallCnnWeights()) {
    with_inits.graph.initializers.set(name, t);
    with_floats.graph.initializers.set(name, t);
  }
  // The Gemm's bias as Constant(value_floats=[...]): its 10 values were not counted.
  with_floats.graph.initializers.erase("gb");
  Node c;
  c.op_type = "Constant";
  c.outputs = {"gb"};
  onnx::AttributeProto a;
  a.set_name("value_floats");
  a.set_type(onnx::AttributeProto::FLOATS);
  for (int i = 0; i < 10; ++i) a.add_floats(0.5f);
  c.attrs.push_back(a);
  with_floats.graph.nodes.insert(with_floats.graph.nodes.begin(), c);
  CHECK(analyzeModel(with_floats).params == analyzeModel(with_inits).params);
}

TEST_CASE("dynamic quantization's weight scales are quantization parameters, not parameters", "[analysis]") {
  // The shape of `lwc quantize --mode dynamic`'s (and ONNX Runtime's quantize_dynamic's) layers:
  // the weight's per-column scales multiply DynamicQuantizeLinear's run-time scale.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 3] y)
<int8[4, 3] wq = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, int8[3] wz = {0, 0, 0}, float[3] ws = {0.1, 0.2, 0.3},
 float[3] b = {1, 2, 3}>
{
  xq, xs, xz = DynamicQuantizeLinear (x)
  mm = MatMulInteger (xq, wq, xz, wz)
  f = Cast <to = 1> (mm)
  s = Mul (xs, ws)
  o = Mul (f, s)
  y = Add (o, b)
}
)");
  const auto roles = initializerRoles(m.graph);
  CHECK(roles.at("ws") == InitRole::QuantParam);
  CHECK(roles.at("wq") == InitRole::Weight);
  const ModelStats st = analyzeModel(m);
  CHECK(st.params == 12 + 3);  // the weight and the bias
  CHECK(st.constants == 3 + 3);
}

TEST_CASE("MACs of recurrent layers and Einsum are counted, and a subgraph makes the total a lower bound", "[analysis]") {
  // LSTM: seq 5, batch N, input 3, hidden 4, two directions: W [2, 16, 3], R [2, 16, 4].
  Model lstm = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 14]>
g (float[N, 5, 3] xb, float[2, 16, 3] w, float[2, 16, 4] r) => (float[5, 2, N, 4] y)
{
  x = Transpose <perm = [1, 0, 2]> (xb)
  y = LSTM <hidden_size = 4, direction = "bidirectional"> (x, w, r)
}
)");
  lstm.graph.initializers.set("w", Tensor(DType::Float32, {2, 16, 3}));
  lstm.graph.initializers.set("r", Tensor(DType::Float32, {2, 16, 4}));
  for (int64_t batch : {1, 3}) {
    const ModelStats st = analyzeModel(lstm, AnalyzeOptions{batch});
    CHECK(st.macs == 5 * batch * (2 * 16 * 3 + 2 * 16 * 4));
    CHECK(st.macs_complete);
  }
  // GRU with layout 1 ([batch, seq, input]): 3 gates.
  Model gru = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 14]>
g (float[N, 7, 2] x, float[1, 9, 2] w, float[1, 9, 3] r) => (float[N, 7, 1, 3] y)
{
  y = GRU <hidden_size = 3, layout = 1> (x, w, r)
}
)");
  gru.graph.initializers.set("w", Tensor(DType::Float32, {1, 9, 2}));
  gru.graph.initializers.set("r", Tensor(DType::Float32, {1, 9, 3}));
  CHECK(analyzeModel(gru, AnalyzeOptions{2}).macs == 2 * 7 * (9 * 2 + 9 * 3));
  // Einsum bij,kjl->bikl: one multiply-add per (b, i, j, k, l).
  Model ein = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 4] a, float[5, 4, 6] b) => (float[N, 3, 5, 6] y)
{
  y = Einsum <equation = "bij,kjl->bikl"> (a, b)
}
)");
  {
    const ModelStats st = analyzeModel(ein, AnalyzeOptions{2});
    CHECK(st.macs == 2 * 3 * 4 * 5 * 6);
    CHECK(st.macs_complete);
  }
  // A MatMul inside an If branch is not counted, and the total says so.
  Model with_if = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[4, 4] x) => (float[4, 4] y)
{
  y = If (c) <then_branch = t () => (float[4, 4] ty) { ty = MatMul (x, x) },
              else_branch = e () => (float[4, 4] ey) { ey = Identity (x) }>
}
)");
  CHECK_FALSE(analyzeModel(with_if).macs_complete);
  // Branches without such a layer leave the count exact (a max_macs_ratio gate failed on them).
  Model relu_if = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[4, 4] x) => (float[4, 4] y)
{
  m = MatMul (x, x)
  y = If (c) <then_branch = t () => (float[4, 4] ty) { ty = Relu (m) },
              else_branch = e () => (float[4, 4] ey) { ey = Identity (m) }>
}
)");
  const ModelStats rs = analyzeModel(relu_if);
  CHECK(rs.macs_complete);
  CHECK(rs.macs == 4 * 4 * 4);
}

TEST_CASE("sparsity of an integer weight counts the values equal to its zero point", "[analysis]") {
  // A uint8 weight with zero point 128 stores its zeros as 128 (ONNX Runtime's QUInt8 weights);
  // a raw 0 there is -128 x scale, not a zero.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 2] y)
<uint8[2, 4] wq = {128, 128, 0, 5, 128, 7, 128, 128}, float s = {0.1}, uint8 z = {128},
 int8[2, 2] pq = {3, 0, 2, 2}, float[2] ps = {0.1, 0.2}, int8[2] pz = {0, 2}>
{
  w = DequantizeLinear (wq, s, z)
  t = Gemm <transB = 1> (x, w)
  p = DequantizeLinear <axis = 0> (pq, ps, pz)
  y = Gemm <transB = 1> (t, p)
}
)");
  const ModelStats st = analyzeModel(m);
  CHECK(st.weight_elements == 12);
  // wq: five 128s; pq (per row): row 0 (zero point 0) has one 0, row 1 (zero point 2) two 2s.
  CHECK(st.weight_zeros == 5 + 1 + 2);
  REQUIRE(st.layers.size() == 2);
  CHECK(st.layers[0].weight_zeros == 5);
  CHECK(st.layers[1].weight_zeros == 3);
}

TEST_CASE("STFT's output shape counts whole frames and keeps the onesided default", "[analysis]") {
  // 400 samples, frames of 64 every 32: (400 - 64) / 32 + 1 = 11 frames (ONNX 1.12 infers 12); the
  // first STFT leaves onesided out (default 1: 33 bins; ONNX 1.12 infers 64), the second sets 0.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 400, 1] x, float[64] win) => (float[N, 11, 33, 2] y, float[N, 7, 64, 2] z)
<int64 step = {32}, int64 flen = {64}, int64 step2 = {50}>
{
  y = STFT (x, step, win)
  z = STFT <onesided=0> (x, step2, , flen)
}
)");
  for (ValueInfo& out : m.graph.outputs) out.shape.reset();  // inferred, not read from the declaration
  const auto dims = [](const ValueTypes& types, const std::string& name) {
    std::vector<int64_t> d;
    if (types.count(name) && types.at(name).shape)
      for (const Dim& x : *types.at(name).shape) d.push_back(x.value);
    return d;
  };
  const ValueTypes sym = inferShapes(m), fixed = inferShapes(m, ShapeOptions{2});
  CHECK(symShapeStr(*sym.at("y").shape) == "[N,11,33,2]");
  CHECK(symShapeStr(*sym.at("z").shape) == "[N,7,64,2]");
  CHECK(dims(fixed, "y") == std::vector<int64_t>{2, 11, 33, 2});
  CHECK(dims(fixed, "z") == std::vector<int64_t>{2, 7, 64, 2});
}
