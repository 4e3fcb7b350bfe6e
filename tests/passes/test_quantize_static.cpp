// quantize_static: QDQ structure, integer execution in the engine, options and bad input.
#include <catch2/catch.hpp>

#include "lwc/analysis.h"
#include "lwc/engine.h"
#include "lwc/graph_edit.h"
#include "lwc/pipeline.h"
#include "lwc/metrics.h"
#include "lwc/model_io.h"
#include "lwc/npy.h"
#include "lwc/dataset.h"
#include "passes/lsq_recovery.h"
#include "passes/quantize_static.h"
#include "passes/registry.h"
#include "support/engine_util.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;
using nlohmann::json;

namespace {
// Conv -> Relu -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm, with a residual Add.
Model smallCnn() {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 5] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <pads=[1,1,1,1]> (r1, w2, b2)
  r2 = Relu (c2)
  s = Add (r1, r2)
  p = GlobalAveragePool (s)
  f = Flatten (p)
  y = Gemm <transB=1> (f, wf, bf)
})");
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.5f, 0.5f);
  addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
  addConst(m, "w2", {8, 8, 3, 3}, 3, -0.3f, 0.3f);
  addConst(m, "b2", {8}, 4, -0.1f, 0.1f);
  addConst(m, "wf", {5, 8}, 5);
  addConst(m, "bf", {5}, 6);
  return m;
}

// Calibration data: seeded uniform [0, 1) samples of `shape` (first dim: samples) in an .npy file.
struct Calib {
  TempDir dir;
  DataSpec spec;
  explicit Calib(const Shape& shape = {64, 3, 12, 12}, uint32_t seed = 42) {
    writeNpy(dir / "x.npy", randomFloat(shape, seed, 0.0f, 1.0f));
    spec.options.path = dir / "x.npy";
    spec.batch = 16;
  }
};

PassResult quantize(Model& m, const Calib& c, const json& options = json::object(), passes::QuantizeStatic* keep = nullptr) {
  passes::QuantizeStatic local;
  passes::QuantizeStatic& p = keep ? *keep : local;
  p.configure(options, "quantize_static");
  PassContext ctx;
  ctx.calib = &c.spec;
  PassResult r = p.run(m, ctx);
  validateGraph(m.graph);
  return r;
}

double outputSqnr(const Model& a, const Model& b, uint32_t seed) {
  engine::Session sa(a), sb(b);
  const Tensor x = randomFloat({8, 3, 12, 12}, seed, 0.0f, 1.0f);
  ErrorMeter e;
  e.add(sa.runOrdered({{"x", x}})[0], sb.runOrdered({{"x", x}})[0]);
  return e.sqnrDb();
}

// The weights of a three-convolution chain x -> c1 (8 of 3 channels, 3x3) -> c2 (`w2`) -> y (4 of
// 8 channels, 1x1), as the float-layer tests below write it.
void addChainWeights(Model& m, const Shape& w2) {
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.5f, 0.5f);
  addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
  addConst(m, "w2", w2, 3, -0.3f, 0.3f);
  addConst(m, "b2", {8}, 4, -0.1f, 0.1f);
  addConst(m, "w3", {4, 8, 1, 1}, 5, -0.3f, 0.3f);
  addConst(m, "b3", {4}, 6, -0.1f, 0.1f);
}

// The op type of the node writing the first input of the node `which` picks ("" if none).
std::string inputProducerOp(const Model& m, const std::function<bool(const Node&)>& which) {
  const GraphIndex idx(m.graph);
  for (const auto& n : m.graph.nodes)
    if (which(n)) {
      const int p = idx.producer(n.inputs[0]);
      return p < 0 ? "" : m.graph.nodes[static_cast<size_t>(p)].op_type;
    }
  return "";
}

std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("quantize_static writes QDQ with int8 weights and int32 biases", "[quantize]") {
  Calib c;
  Model fp = smallCnn(), m = smallCnn();
  auto r = quantize(m, c);
  CHECK(r.stats["layers_quantized"] == 3);
  CHECK(r.stats["activations_absorbed"] == 2);
  CHECK(countOps(m, "Relu") == 0);  // absorbed by uint8 QuantizeLinear (zero point 0)
  CHECK(countOps(m, "QuantizeLinear") > 0);
  int int8_weights = 0, int32_biases = 0;
  for (const auto& [name, t] : m.graph.initializers.items()) {
    int8_weights += t.dtype() == DType::Int8 && t.rank() >= 2;
    int32_biases += t.dtype() == DType::Int32 && t.numel() > 1 && countZeros(t) < t.numel();
  }
  CHECK(int8_weights == 3);
  CHECK(int32_biases == 3);
  for (const auto& n : m.graph.nodes)
    if (n.op_type == "QuantizeLinear") {
      const Tensor& zp = m.graph.initializers.at(n.inputs[2]);
      CHECK(zp.dtype() == DType::UInt8);
    }
  CHECK_NOTHROW(checkModelForOutput(m));
  // The pool's output is quantized too (DQ -> GlobalAveragePool -> Q, as ONNX Runtime fuses it),
  // with the parameters of the Flatten's output after it: the same values.
  const GraphIndex index(m.graph);
  const Node* pool = nullptr;
  for (const auto& n : m.graph.nodes) pool = n.op_type == "GlobalAveragePool" ? &n : pool;
  REQUIRE(pool);
  REQUIRE(index.numConsumers(pool->outputs[0]) == 1);
  const Node& pq = m.graph.nodes[static_cast<size_t>(index.consumers(pool->outputs[0])[0])];
  CHECK(pq.op_type == "QuantizeLinear");
  int flatten_q = 0;
  for (const auto& n : m.graph.nodes)
    if (n.op_type == "QuantizeLinear" && n.inputs[0] == "f") {
      ++flatten_q;
      CHECK(m.graph.initializers.at(n.inputs[1]).at(0) == m.graph.initializers.at(pq.inputs[1]).at(0));
      CHECK(m.graph.initializers.at(n.inputs[2]).at(0) == m.graph.initializers.at(pq.inputs[2]).at(0));
    }
  CHECK(flatten_q == 1);
  // The quantized model runs with integer kernels and stays close to the float one.
  engine::Session s(m);
  CHECK(implOf(s, "QLinearConv") != "none");
  // DQ, DQ -> Add -> Q fused: a QAdd, or part of the convolution feeding it (QLinearConvNhwcAdd)
  CHECK((implOf(s, "QAdd") != "none" || implOf(s, "QLinearConvNhwcAdd") != "none"));
  CHECK(outputSqnr(fp, m, 7) > 25.0);
  // The fused integer graph computes what the plain QDQ graph computes, up to oneDNN's documented
  // rounding of requantization ties (one step of an int8 value, rarely).
  engine::Session ref(m, engine::SessionOptions{0, true});
  const Tensor x = randomFloat({4, 3, 12, 12}, 3, 0.0f, 1.0f);
  const Tensor a = s.runOrdered({{"x", x}})[0], b = ref.runOrdered({{"x", x}})[0];
  ErrorMeter e;
  e.add(b, a);
  CHECK(e.sqnrDb() > 40.0);
}

TEST_CASE("quantize_static leaves an Add with a constant operand in float", "[quantize]") {
  // GELU's erf + 1 (and a bias Add): quantizing the Erf output would only add rounding error; the
  // residual Add of two activations is still quantized (smallCnn, QAdd in the test above).
  Calib c;
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 12, 12] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  e = Erf (c1)
  a = Add (e, one)
  y = Conv (a, w2, b2)
})");
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.5f, 0.5f);
  addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
  addConst(m, "w2", {4, 8, 1, 1}, 3, -0.3f, 0.3f);
  addConst(m, "b2", {4}, 4, -0.1f, 0.1f);
  m.graph.initializers.set("one", Tensor::scalar(1.0f));
  Model fp = m;
  quantize(m, c);
  CHECK(countOps(m, "QuantizeLinear") == 3);  // x, c1 (a layer output) and a (the next layer's input)
  for (const auto& n : m.graph.nodes) CHECK_FALSE((n.op_type == "QuantizeLinear" && n.inputs[0] == "e"));
  CHECK(outputSqnr(fp, m, 5) > 25.0);
}

TEST_CASE("quantize_static quantizes a Sigmoid gate and its product (SiLU, squeeze-excite), not other products", "[quantize]") {
  // x * Sigmoid(y): the Sigmoid's output and the Mul's inputs are quantized, so that ONNX Runtime
  // fuses QLinearSigmoid and QLinearMul (a GELU-like x * (erf + 1) product stays float).
  Calib c;
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 12, 12] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  s1 = Sigmoid (c1)
  m1 = Mul (c1, s1)
  p = GlobalAveragePool (m1)
  f = Conv (p, wf, bf)
  sg = Sigmoid (f)
  m2 = Mul (sg, m1)
  c2 = Conv (m2, w2, b2)
  e = Erf (c2)
  a = Add (e, one)
  gm = Mul (c2, a)
  y = Conv (gm, w3, b3)
})");
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.5f, 0.5f);
  addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
  addConst(m, "wf", {8, 8, 1, 1}, 3, -0.5f, 0.5f);
  addConst(m, "bf", {8}, 4, -0.1f, 0.1f);
  addConst(m, "w2", {8, 8, 1, 1}, 5, -0.3f, 0.3f);
  addConst(m, "b2", {8}, 6, -0.1f, 0.1f);
  addConst(m, "w3", {4, 8, 1, 1}, 7, -0.3f, 0.3f);
  addConst(m, "b3", {4}, 8, -0.1f, 0.1f);
  m.graph.initializers.set("one", Tensor::scalar(1.0f));
  Model fp = m;
  quantize(m, c);
  auto quantized = [&](const std::string& v) {
    return std::any_of(m.graph.nodes.begin(), m.graph.nodes.end(),
                       [&](const Node& n) { return n.op_type == "QuantizeLinear" && n.inputs[0] == v; });
  };
  CHECK(quantized("s1"));  // the gates' outputs
  CHECK(quantized("sg"));
  CHECK(quantized("m1"));  // the products, read by quantized nodes
  CHECK(quantized("m2"));
  CHECK_FALSE(quantized("a"));  // the other product's operand
  CHECK_FALSE(quantized("e"));
  // Each Mul of a gate reads two dequantized values.
  for (const auto& n : m.graph.nodes)
    if (n.op_type == "Mul" && (n.outputs[0] == "m1" || n.outputs[0] == "m2"))
      for (const auto& in : n.inputs) {
        const int p = producerIndex(m.graph, in);
        REQUIRE(p >= 0);
        CHECK(m.graph.nodes[static_cast<size_t>(p)].op_type == "DequantizeLinear");
      }
  CHECK(outputSqnr(fp, m, 5) > 25.0);
}

TEST_CASE("quantize_static absorbs Clip(0, 6) and drops the bounds no other node reads", "[quantize]") {
  // ReLU6 as PyTorch exports it: Clip with its bounds as initializers. The first two are absorbed
  // into uint8 QuantizeLinears; the last writes the graph output and stays, still reading lo and hi.
  Calib c;
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 12, 12] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Clip (c1, lo, hi)
  c2 = Conv <pads=[1,1,1,1]> (r1, w2, b2)
  r2 = Clip (c2, lo2, hi2)
  c3 = Conv (r2, w3, b3)
  y = Clip (c3, lo, hi)
})");
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.5f, 0.5f);
  addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
  addConst(m, "w2", {8, 8, 3, 3}, 3, -0.3f, 0.3f);
  addConst(m, "b2", {8}, 4, -0.1f, 0.1f);
  addConst(m, "w3", {4, 8, 1, 1}, 5, -0.3f, 0.3f);
  addConst(m, "b3", {4}, 6, -0.1f, 0.1f);
  for (const char* lo : {"lo", "lo2"}) m.graph.initializers.set(lo, Tensor::scalar(0.0f));
  for (const char* hi : {"hi", "hi2"}) m.graph.initializers.set(hi, Tensor::scalar(6.0f));
  Model fp = m;
  auto r = quantize(m, c);
  CHECK(r.stats["activations_absorbed"] == 2);
  CHECK(countOps(m, "Clip") == 1);
  CHECK_FALSE(m.graph.initializers.contains("lo2"));
  CHECK_FALSE(m.graph.initializers.contains("hi2"));
  CHECK(m.graph.initializers.contains("lo"));
  CHECK(m.graph.initializers.contains("hi"));
  CHECK(unusedInitializers(m.graph).empty());
  CHECK(outputSqnr(fp, m, 9) > 25.0);
}

TEST_CASE("quantize_static removes a Clip that its QuantizeLinear's saturation makes inert and keeps one that cuts", "[quantize]") {
  // A residual Add, then a Clip whose bounds the calibrated range reaches: uint8's range lies inside
  // them, so the Clip changes no output. ONNX Runtime removes such a Clip itself and then refused to
  // load some of these graphs (its QDQ rewrites left a DequantizeLinear output without a producer).
  Calib c;
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 12, 12] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  c2 = Conv <pads=[1,1,1,1]> (c1, w2, b2)
  s = Add (c1, c2)
  k = Clip (s, lo, hi)
  c3 = Conv (k, w3, b3)
  t = Clip (c3, lo3, hi3)
  y = Conv (t, w4, b4)
})");
  addChainWeights(m, {8, 8, 3, 3});
  addConst(m, "w4", {4, 4, 1, 1}, 7, -0.3f, 0.3f);
  addConst(m, "b4", {4}, 8, -0.1f, 0.1f);
  // Bounds the data crosses on both sides (so the calibrated range is the bounds), away from a
  // rounding tie; the second Clip's bounds lie far outside its input's range, so its output's range
  // comes from the data and its bounds cut nothing either.
  m.graph.initializers.set("lo", Tensor::scalar(-0.213f));
  m.graph.initializers.set("hi", Tensor::scalar(0.371f));
  m.graph.initializers.set("lo3", Tensor::scalar(-50.0f));
  m.graph.initializers.set("hi3", Tensor::scalar(50.0f));
  Model fp = m;
  auto r = quantize(m, c);
  CHECK(r.stats["clips_saturated"] == 2);
  CHECK(countOps(m, "Clip") == 0);
  CHECK(unusedInitializers(m.graph).empty());
  CHECK(outputSqnr(fp, m, 9) > 25.0);
  // A lower bound above 0: the range the QuantizeLinear represents includes 0, so the Clip cuts
  // values it could represent and stays (the far-away second Clip still goes).
  Model cuts_fp = fp;
  cuts_fp.graph.initializers.set("lo", Tensor::scalar(0.05f));
  Model cuts = cuts_fp;
  auto rc = quantize(cuts, c);
  CHECK(rc.stats["clips_saturated"] == 1);
  CHECK(countOps(cuts, "Clip") == 1);
  CHECK(outputSqnr(cuts_fp, cuts, 9) > 25.0);
}

TEST_CASE("quantize_static raises the output scale of a Softmax close to uniform and keeps a sharp one's", "[quantize]") {
  // ONNX Runtime's QLinearSoftmax overflows when 1 / output scale exceeds about 148 x the elements
  // normalised (0 where 255 is due). Softmax over 8 channels of small logits: every output near
  // 1/8, a calibrated scale near 0.13 / 255, 1 / scale near 2000 > 148 x 8.
  Calib c;
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 12, 12] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  sm = Softmax <axis=1> (c1)
  y = Conv (sm, w2, b2)
})");
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.01f, 0.01f);
  addConst(m, "b1", {8}, 2, -0.01f, 0.01f);
  addConst(m, "w2", {4, 8, 1, 1}, 3, -0.5f, 0.5f);
  addConst(m, "b2", {4}, 4, -0.1f, 0.1f);
  // Another graph around the Softmax, with the same weights.
  auto withWeights = [&m](const std::string& text) {
    Model v = parseGraph(text);
    for (const char* w : {"w1", "b1", "w2", "b2"}) v.graph.initializers.set(w, m.graph.initializers.at(w));
    return v;
  };
  auto softmaxScale = [](const Model& q) {
    for (const Node& n : q.graph.nodes)
      if (n.op_type == "QuantizeLinear" && n.inputs[0] == "sm") return q.graph.initializers.at(n.inputs[1]).at(0);
    FAIL("no QuantizeLinear reads the Softmax output");
    return 0.0;
  };
  Model flat = m;
  auto r = quantize(flat, c);
  CHECK(r.stats["softmax_scales_raised"] == 1);
  CHECK(softmaxScale(flat) >= 1.0 / (128.0 * 8) * (1 - 1e-6));
  CHECK(notesWith(r.notes, "QLinearSoftmax") == 1);
  Model flat_int8 = m;
  // int8's symmetric scale covers twice the range: max / 127 >= 1 / (127 x 8), nothing to raise.
  auto ri = quantize(flat_int8, c, {{"act_type", "int8"}});
  CHECK(ri.stats["softmax_scales_raised"] == 0);
  CHECK(softmaxScale(flat_int8) >= 1.0 / (128.0 * 8));
  // Large logits: outputs reach near 1, the calibrated scale (about 1/255) is kept.
  Model sharp = m;
  sharp.graph.initializers.set("w1", randomFloat({8, 3, 3, 3}, 1, -20.0f, 20.0f));
  auto rs = quantize(sharp, c);
  CHECK(rs.stats["softmax_scales_raised"] == 0);
  CHECK(softmaxScale(sharp) > 1.0 / 300);
  CHECK(softmaxScale(sharp) < 1.0 / 200);
  // A Softmax ONNX Runtime cannot fuse keeps its scale: its input left in float (--exclude on the
  // Conv before it), or its output a graph output.
  Model float_in = m;
  float_in.graph.nodes[0].name = "first_conv";
  auto rf = quantize(float_in, c, {{"exclude", json::array({"first_conv"})}});
  CHECK(rf.stats["softmax_scales_raised"] == 0);
  Model out = withWeights(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 12, 12] y, float[N, 8, 12, 12] sm) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  sm = Softmax <axis=1> (c1)
  y = Conv (sm, w2, b2)
})");
  auto ro = quantize(out, c);
  CHECK(ro.stats["softmax_scales_raised"] == 0);
  // Behind a MaxPool on a quantized value (QOperator output leaves the MaxPool's output float):
  // ONNX Runtime moves the DequantizeLinear across the MaxPool and fuses the Softmax all the same.
  Model pooled = withWeights(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 12, 12] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  p = MaxPool <kernel_shape=[1,1]> (c1)
  sm = Softmax <axis=1> (p)
  y = Conv (sm, w2, b2)
})");
  auto rp = quantize(pooled, c, {{"format", "qoperator"}});
  CHECK(rp.stats["softmax_scales_raised"] == 1);
  // Over an axis of unknown length (12 here on the data): the floor is 1/256 (D taken as 2).
  Model unknown = withWeights(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, H, W] x) => (float[N, 4, H, W] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  sm = Softmax <axis=-1> (c1)
  y = Conv (sm, w2, b2)
})");
  auto ru = quantize(unknown, c);
  CHECK(ru.stats["softmax_scales_raised"] == 1);
  CHECK(softmaxScale(unknown) >= 1.0 / 256 * (1 - 1e-6));
  CHECK(softmaxScale(unknown) < 1.0 / 250);
}

TEST_CASE("quantize_static writes a graph output that a Transpose takes to a QuantizeLinear through an Identity", "[quantize]") {
  // ONNX Runtime 1.30 (basic level and up) hands such a graph output the quantized values; the
  // Transpose reads the producer's value under another name, the graph output comes from an Identity.
  Calib c({64, 4, 6});
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 6] x) => (float[N, 4, 6] h, float[N, 6, 5] z) {
  h = MatMul (x, w1)
  t = Transpose <perm=[0,2,1]> (h)
  z = MatMul (t, w2)
})");
  addConst(m, "w1", {6, 6}, 1, -0.5f, 0.5f);
  addConst(m, "w2", {4, 5}, 2, -0.5f, 0.5f);
  auto r = quantize(m, c);
  CHECK(r.stats["graph_outputs_shielded"] == 1);
  const Node* id = nullptr;
  const Node* tr = nullptr;
  for (const Node& n : m.graph.nodes) {
    if (n.op_type == "Identity" && n.outputs[0] == "h") id = &n;
    if (n.op_type == "Transpose") tr = &n;
  }
  REQUIRE(id);
  REQUIRE(tr);
  CHECK(tr->inputs[0] == id->inputs[0]);
  CHECK(tr->inputs[0] != "h");
  // eliminate_identity (lwc fuse on the INT8 file) keeps it.
  Model cleaned = m;
  auto re = runPass(cleaned, "eliminate_identity");
  CHECK(re.stats["removed"] == 0);
  CHECK(re.stats["left_alone"] == 1);
  CHECK(countOps(cleaned, "Identity") == 1);
  // Without a Transpose there, no Identity.
  Model plain = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 6] x) => (float[N, 4, 6] h, float[N, 4, 5] z) {
  h = MatMul (x, w1)
  z = MatMul (h, w3)
})");
  addConst(plain, "w1", {6, 6}, 1, -0.5f, 0.5f);
  addConst(plain, "w3", {6, 5}, 3, -0.5f, 0.5f);
  auto rp = quantize(plain, c);
  CHECK(rp.stats["graph_outputs_shielded"] == 0);
  CHECK(countOps(plain, "Identity") == 0);
}

TEST_CASE("quantize_static quantizes float values only (a Concat of shape values stays int64)", "[quantize]") {
  // ShuffleNet's channel shuffle as torch exports it: the Reshape targets are Concats of int64
  // values computed from Shape. Quantizing them would write QuantizeLinear on int64 (invalid ONNX).
  Calib c;
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 12, 12] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  s = Shape (c1)
  n = Gather <axis=0> (s, i0)
  nu = Unsqueeze (n, ax0)
  shp = Concat <axis=0> (nu, two, four, twelve, twelve)
  r = Reshape (c1, shp)
  t = Transpose <perm=[0,2,1,3,4]> (r)
  shp2 = Concat <axis=0> (nu, eight, twelve, twelve)
  u = Reshape (t, shp2)
  y = Conv (u, w2, b2)
})");
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.5f, 0.5f);
  addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
  addConst(m, "w2", {4, 8, 1, 1}, 3, -0.3f, 0.3f);
  addConst(m, "b2", {4}, 4, -0.1f, 0.1f);
  m.graph.initializers.set("i0", Tensor::scalar<int64_t>(0));
  m.graph.initializers.set("ax0", Tensor::fromVector<int64_t>({1}, {0}));
  for (const auto& [name, v] : std::vector<std::pair<std::string, int64_t>>{{"two", 2}, {"four", 4}, {"eight", 8}, {"twelve", 12}})
    m.graph.initializers.set(name, Tensor::fromVector<int64_t>({1}, {v}));
  Model fp = m;
  auto r = quantize(m, c);
  CHECK(r.stats["layers_quantized"] == 2);
  for (const auto& n : m.graph.nodes)
    if (n.op_type == "QuantizeLinear") {
      INFO(n.describe());
      CHECK((n.inputs[0] == "x" || n.inputs[0] == "c1" || n.inputs[0] == "u"));
    }
  CHECK_NOTHROW(checkModelForOutput(m));
  CHECK(outputSqnr(fp, m, 11) > 25.0);
}

TEST_CASE("quantize_static options", "[quantize]") {
  Calib c;
  SECTION("int8 symmetric activations keep the ReLUs") {
    Model fp = smallCnn(), m = smallCnn(), u = smallCnn();
    const auto r = quantize(m, c, {{"act_type", "int8"}});
    CHECK(countOps(m, "Relu") == 2);
    // ... and say so, with what it costs in ONNX Runtime; uint8 absorbs them and says nothing.
    CHECK(r.stats.at("activations_kept_float") == 2);
    CHECK(r.stats.at("activations_absorbed") == 0);
    REQUIRE(r.notes.size() == 1);
    CHECK_THAT(r.notes[0], Catch::StartsWith("2 Relu/Clip(0, x) after quantized layers stay as float ops") &&
                               Catch::Contains("For ONNX Runtime, use --act-type uint8"));
    const auto ru = quantize(u, c);
    CHECK(ru.stats.at("activations_kept_float") == 0);
    CHECK(ru.stats.at("activations_absorbed") == 2);
    CHECK(ru.notes.empty());
    for (const auto& n : m.graph.nodes)
      if (n.op_type == "QuantizeLinear") CHECK(m.graph.initializers.at(n.inputs[2]).dtype() == DType::Int8);
    CHECK(outputSqnr(fp, m, 8) > 20.0);
  }
  SECTION("qoperator format: QLinearConv nodes, same values as the QDQ form") {
    Model qdq = smallCnn(), qop = smallCnn();
    quantize(qdq, c);
    auto r = quantize(qop, c, {{"format", "qoperator"}});
    CHECK(r.stats["qoperator_layers"] == 2);  // the two Convs; the Gemm makes the float graph output
    CHECK(countOps(qop, "QLinearConv") >= 2);
    CHECK(countOps(qop, "Conv") == 0);
    // The pool's Q -> DQ -> Flatten -> Q with equal parameters became Flatten on the integers,
    // with no dead DequantizeLinear left behind.
    CHECK(countOps(qop, "QuantizeLinear") == countOps(qdq, "QuantizeLinear") - 3);  // two Convs' outputs, the Flatten's
    for (const auto& n : qop.graph.nodes)
      if (n.op_type == "DequantizeLinear") CHECK(useCount(qop.graph, n.outputs[0]) > 0);
    CHECK_NOTHROW(checkModelForOutput(qop));
    engine::Session a(qdq), b(qop);
    const Tensor x = randomFloat({4, 3, 12, 12}, 5, 0.0f, 1.0f);
    CHECK(a.runOrdered({{"x", x}})[0].bitEqual(b.runOrdered({{"x", x}})[0]));
  }
  SECTION("per-tensor weights have scalar scales") {
    Model m = smallCnn();
    quantize(m, c, {{"per_channel", false}});
    for (const auto& n : m.graph.nodes)
      if (n.op_type == "DequantizeLinear" && m.graph.initializers.contains(n.inputs[0]) &&
          m.graph.initializers.at(n.inputs[0]).dtype() == DType::Int8)
        CHECK(m.graph.initializers.at(n.inputs[1]).numel() == 1);
  }
  SECTION("exclude by op type and keep_fp32 last") {
    Model a = smallCnn(), b = smallCnn();
    auto ra = quantize(a, c, {{"exclude", {"Gemm"}}});
    auto rb = quantize(b, c, {{"keep_fp32", {"last"}}});
    CHECK(ra.stats["layers_quantized"] == 2);
    CHECK(rb.stats["layers_quantized"] == 2);
    CHECK(a.graph.initializers.at("wf").dtype() == DType::Float32);
    CHECK(b.graph.initializers.at("wf").dtype() == DType::Float32);
  }
  SECTION("more calibration samples asked for than the data holds: said, and calibrated on what there is") {
    Model m = smallCnn();
    const auto r = quantize(m, c, {{"calib_samples", 1000}});
    CHECK(r.stats.at("calibration_samples") == 64);
    bool said = false;
    for (const auto& n : r.notes) said = said || n.find("calib_samples 1000: the calibration data holds 64 samples") != std::string::npos;
    CHECK(said);
    Model all = smallCnn();
    for (const auto& n : quantize(all, c, {{"calib_samples", 64}}).notes) CHECK_THAT(n, !Contains("holds"));
  }
  SECTION("a percentile beside another calibrator is refused, not ignored") {
    Model m = smallCnn();
    try {
      quantize(m, c, {{"calibrator", "minmax"}, {"percentile", 50.0}});
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK_THAT(std::string(e.what()), Contains("percentile: applies to calibrator percentile (the calibrator is minmax)"));
    }
  }
  SECTION("every calibrator produces a close model") {
    for (const char* cal : {"minmax", "percentile", "entropy", "mse"}) {
      INFO(cal);
      Model fp = smallCnn(), m = smallCnn();
      quantize(m, c, {{"calibrator", cal}});
      CHECK(outputSqnr(fp, m, 9) > 15.0);
    }
  }
  SECTION("saved statistics reproduce the same model, byte for byte") {
    TempDir d;
    Model a = smallCnn(), b = smallCnn(), again = smallCnn();
    quantize(a, c, {{"save_calib", (d / "s.json").string()}});
    quantize(again, c);
    CHECK(serialized(a) == serialized(again));  // deterministic
    passes::QuantizeStatic p;
    p.configure({{"load_calib", {(d / "s.json").string()}}}, "q");
    PassContext ctx;  // no calibration data needed
    p.run(b, ctx);
    CHECK(serialized(a) == serialized(b));
  }
  SECTION("statistics saved before pool outputs were quantized still load; the pool stays in float") {
    TempDir d;
    Model a = smallCnn(), b = smallCnn();
    quantize(a, c, {{"save_calib", (d / "s.json").string()}});
    json j = json::parse(readFile((d / "s.json").string()));
    REQUIRE(j["tensors"].contains("p"));
    j["tensors"].erase("p");  // the GlobalAveragePool's output, as older files lack it
    writeFileAtomic((d / "old.json").string(), j.dump());
    passes::QuantizeStatic p;
    p.configure({{"load_calib", {(d / "old.json").string()}}}, "q");
    PassContext ctx;
    const PassResult r = p.run(b, ctx);
    CHECK(countOps(b, "QuantizeLinear") == countOps(a, "QuantizeLinear") - 1);
    bool noted = false;
    for (const auto& n : r.notes) noted = noted || n.find("'p': no statistics in") != std::string::npos;
    CHECK(noted);
    CHECK_NOTHROW(checkModelForOutput(b));
    // Only the pool's output lost its Q/DQ (the Flatten after it is quantized with the same values).
    CHECK(outputSqnr(a, b, 3) > 60.0);
  }
}

TEST_CASE("quantize_static bias_correction removes each layer's output mean shift", "[quantize]") {
  // After correction, every quantized layer's per-channel output mean on the calibration data is the
  // float model's within half a bias step (the int32 bias moves in steps of s_b = s_x * s_w[c]);
  // later layers cannot change an earlier layer's output, so this holds for all of them at the end.
  Calib c;
  auto ds = openDataset(c.spec.options);
  // Each layer's output before its activation: the uint8 QuantizeLinear absorbs the ReLUs and reads
  // c1 and c2, named as in the float model.
  const std::vector<std::string> layers{"c1", "c2", "y"};
  // Largest |E[y_fp32] - E[y_q]| / s_b over the channels of every layer.
  auto worstShift = [&](const Model& fp, const Model& q) {
    double worst = 0;
    for (const auto& out : layers) {
      const auto want = passes::channelMeans(fp, {out}, *ds, "x", 16, 0).at(0);
      const auto have = passes::channelMeans(q, {out}, *ds, "x", 16, 0).at(0);
      const Node& n = q.graph.nodes.at(static_cast<size_t>(producerIndex(q.graph, out)));
      const Node& bias_dq = q.graph.nodes.at(static_cast<size_t>(producerIndex(q.graph, n.inputs.at(2))));
      REQUIRE(bias_dq.op_type == "DequantizeLinear");
      const Tensor& sb = q.graph.initializers.at(bias_dq.inputs[1]);
      REQUIRE(want.size() == have.size());
      REQUIRE(sb.numel() == static_cast<int64_t>(have.size()));
      for (size_t ch = 0; ch < have.size(); ++ch) worst = std::max(worst, std::fabs(want[ch] - have[ch]) / sb.data<float>()[ch]);
    }
    return worst;
  };
  for (const bool reduce_range : {false, true}) {
    INFO("reduce_range " << reduce_range);
    Model fp = smallCnn(), plain = smallCnn(), corrected = smallCnn();
    quantize(plain, c, {{"reduce_range", reduce_range}});
    auto r = quantize(corrected, c, {{"reduce_range", reduce_range}, {"bias_correction", true}});
    CHECK(r.stats["biases_corrected"] == 3);
    CHECK(worstShift(fp, plain) > 2.0);       // quantization does shift the means (by many bias steps)
    CHECK(worstShift(fp, corrected) <= 0.51);  // rounding to whole steps, and float summation order
    // Only int32 biases change: same nodes, same int8 weights.
    CHECK(plain.graph.nodes.size() == corrected.graph.nodes.size());
    int biases_changed = 0;
    for (const auto& [name, t] : plain.graph.initializers.items()) {
      const Tensor& u = corrected.graph.initializers.at(name);
      if (t.dtype() == DType::Int32) biases_changed += !t.bitEqual(u);
      else CHECK(t.bitEqual(u));
    }
    CHECK(biases_changed == 3);
    CHECK(outputSqnr(fp, corrected, 11) > outputSqnr(fp, plain, 11));
  }
  SECTION("needs calibration data, also with saved statistics") {
    TempDir d;
    Model a = smallCnn(), b = smallCnn();
    quantize(a, c, {{"save_calib", (d / "s.json").string()}});
    passes::QuantizeStatic p;
    p.configure({{"load_calib", {(d / "s.json").string()}}, {"bias_correction", true}}, "q");
    CHECK(p.needsCalibration(p.options()));
    PassContext ctx;
    CHECK_THAT(errorOf([&] { p.run(b, ctx); }), Contains("bias_correction needs calibration data"));
  }
}

TEST_CASE("quantize_static bias_correction moves the float Add constant after a MatMul", "[quantize]") {
  // Linear layers on 3-D inputs export as MatMul + Add(constant): the constant (per last axis) is
  // the bias that correction moves, in float, so the means then match to float precision.
  auto model = [] { return twoLinearLayers(4, 8, 6, 5, /*first_bias_2d=*/false); };
  TempDir dir;
  DataSpec spec;
  writeNpy(dir / "x.npy", randomFloat({48, 4, 8}, 5, 0.0f, 1.0f));
  spec.options.path = dir / "x.npy";
  spec.batch = 16;
  auto ds = openDataset(spec.options);
  auto worstShift = [&](const Model& fp, const Model& q) {
    double worst = 0;
    for (const std::string v : {"a", "y"}) {
      const auto want = passes::channelMeans(fp, {v}, *ds, "x", 16, 0, {-1}).at(0);
      // The Relu after a is absorbed: the QuantizeLinear reads a.
      const auto have = passes::channelMeans(q, {v}, *ds, "x", 16, 0, {-1}).at(0);
      REQUIRE(want.size() == (v == "a" ? 6u : 5u));
      REQUIRE(have.size() == want.size());
      for (size_t ch = 0; ch < have.size(); ++ch) worst = std::max(worst, std::fabs(want[ch] - have[ch]));
    }
    return worst;
  };
  Model fp = model(), plain = model(), corrected = model();
  passes::QuantizeStatic p1, p2;
  p1.configure(json::object(), "q");
  p2.configure({{"bias_correction", true}}, "q");
  PassContext ctx;
  ctx.calib = &spec;
  p1.run(plain, ctx);
  auto r = p2.run(corrected, ctx);
  validateGraph(corrected.graph);
  CHECK(r.stats["biases_corrected"] == 2);
  const double before = worstShift(fp, plain), after = worstShift(fp, corrected);
  INFO("largest mean shift before " << before << ", after " << after);
  CHECK(before > 5e-4);
  CHECK(after < 1e-6);
  CHECK_FALSE(plain.graph.initializers.at("c").bitEqual(corrected.graph.initializers.at("c")));
  CHECK(corrected.graph.initializers.at("c2").shape() == Shape{1, 5});  // the constant keeps its shape
}

TEST_CASE("quantize_static quantizes a Linear layer on 3-D inputs after its bias Add", "[quantize]") {
  // MatMul + Add(constant along the last axis) is one layer: one QuantizeLinear after the Add (with
  // a Relu after it absorbed) where a quantized node reads it, none between MatMul and Add, and the
  // engine runs it as one integer matmul with the bias in its accumulator. Read only by a float op
  // (m5's Add, read by Tanh) its output stays float. A constant that is not one value per column,
  // and the qoperator format, keep the MatMul's own output quantized.
  const std::string text = R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 8] x) => (float[N, 4, 5] y, float[N, 4, 3] t) {
  m = MatMul (x, w)
  a = Add (m, c)
  r = Relu (a)
  m2 = MatMul (r, w2)
  a2 = Add (c2, m2)
  m3 = MatMul (a2, w3)
  a3 = Add (m3, half)
  y = MatMul (a3, w4)
  m5 = MatMul (r, w5)
  a5 = Add (m5, c5)
  t = Tanh (a5)
})";
  auto model = [&] {
    Model m = parseGraph(text);
    addConst(m, "w", {8, 6}, 1, -0.5f, 0.5f);
    addConst(m, "c", {6}, 2, -0.1f, 0.1f);
    addConst(m, "w2", {6, 5}, 3, -0.5f, 0.5f);
    addConst(m, "c2", {1, 5}, 4, -0.1f, 0.1f);
    addConst(m, "w3", {5, 7}, 5, -0.5f, 0.5f);
    m.graph.initializers.set("half", Tensor::scalar(0.5f));
    addConst(m, "w4", {7, 5}, 6, -0.5f, 0.5f);
    addConst(m, "w5", {6, 3}, 7, -0.5f, 0.5f);
    addConst(m, "c5", {3}, 8, -0.1f, 0.1f);
    return m;
  };
  const Calib calib({48, 4, 8}, 5);
  PassContext ctx;
  ctx.calib = &calib.spec;
  auto quantizedInputs = [](const Model& q) {
    std::set<std::string> v;
    for (const auto& n : q.graph.nodes)
      if (n.op_type == "QuantizeLinear") v.insert(n.inputs[0]);
    return v;
  };
  const Model fp = model();
  Model q = model();
  passes::QuantizeStatic p;
  p.configure(json::object(), "q");
  const PassResult r = p.run(q, ctx);
  validateGraph(q.graph);
  CHECK(r.stats.at("bias_adds_inside") == 3);
  CHECK(r.stats.at("activations_absorbed") == 1);
  CHECK(countOps(q, "Relu") == 0);
  // x, a (the first Add's output, its Relu absorbed), a2 (the second's), m3 (its constant is a
  // scalar: the MatMul's own output) and a3 (the last layer's input).
  CHECK(quantizedInputs(q) == std::set<std::string>{"x", "a", "a2", "m3", "a3"});
  engine::Session s(q);
  int fused = 0;
  for (const auto& [desc, impl] : s.kernelChoices()) fused += desc.rfind("lwc.internal.QLinearMatMul ", 0) == 0;
  CHECK(fused == 2);
  engine::Session sf(fp);
  ErrorMeter e, et;
  for (uint32_t seed : {7u, 8u}) {
    const Tensor x = randomFloat({8, 4, 8}, seed, 0.0f, 1.0f);
    const auto want = sf.runOrdered({{"x", x}}), got = s.runOrdered({{"x", x}});
    e.add(want[0], got[0]);
    et.add(want[1], got[1]);
  }
  CHECK(e.sqnrDb() > 25.0);
  CHECK(et.sqnrDb() > 25.0);

  Model qo = model();
  passes::QuantizeStatic po;
  po.configure({{"format", "qoperator"}}, "q");
  const PassResult ro = po.run(qo, ctx);
  validateGraph(qo.graph);
  CHECK(ro.stats.at("bias_adds_inside") == 0);
  CHECK(countOps(qo, "QLinearMatMul") == 4);  // not y: a float graph output
  CHECK(countOps(qo, "Add") == 4);
}

TEST_CASE("quantize_static rejects bad input with one clear error", "[quantize]") {
  Calib c;
  Model m = smallCnn();
  const std::string before = serialized(m);
  // It names the layers there are (a MatMul the cleanup merged with its Add is a Gemm by then).
  CHECK_THAT(errorOf([&] { quantize(m, c, {{"exclude", {"conv_nine"}}}); }),
             Contains("no node or op type named 'conv_nine'") && Contains("its layers after the cleanup") &&
                 Contains("Conv (output 'c1'), Conv (output 'c2'), Gemm (output 'y')"));
  CHECK(serialized(m) == before);
  Model q = smallCnn();
  quantize(q, c);
  CHECK_THAT(errorOf([&] { quantize(q, c); }), Contains("already quantized"));
  CHECK_THAT(errorOf([] { passes::QuantizeStatic p; p.configure({{"calib_shard", "3/2"}}, "q"); }),
             Contains("calib_shard"));
  CHECK_THAT(errorOf([] { passes::QuantizeStatic p; p.configure({{"keep_fp32", {"middle"}}}, "q"); }),
             Contains("keep_fp32"));
  // Nothing left to quantize: "after exclude/keep_fp32" only when either was given.
  Model all_out = smallCnn();
  CHECK_THAT(errorOf([&] { quantize(all_out, c, {{"exclude", {"Conv", "Gemm"}}}); }),
             Contains("nothing to quantize (no Conv/Gemm/MatMul with constant weights left after exclude/keep_fp32)"));
  Model no_layers = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 3, 12, 12] y) { y = Relu (x) })");
  CHECK_THAT(errorOf([&] { quantize(no_layers, c); }),
             Contains("nothing to quantize (no Conv/Gemm/MatMul with constant weights)"));
  TempDir d;
  writeNpy(d / "bad.npy", randomFloat({4, 1, 28, 28}, 1));
  Calib wrong;
  wrong.spec.options.path = d / "bad.npy";
  Model w = smallCnn();
  CHECK_THAT(errorOf([&] { quantize(w, wrong); }), Contains("bad.npy"));
  // Opset 9 has no QuantizeLinear and opset 12 no per-channel DequantizeLinear: ONNX's version
  // converter takes the model to opset 13 first, and the output passes the ONNX checker there.
  for (int64_t opset : {9, 12}) {
    Model old = parseGraph(R"(<ir_version: 4, opset_import: ["" : 9]>
g (float[N, 3, 12, 12] x) => (float[N, 8, 12, 12] y) {
  y = Conv <pads=[1,1,1,1]> (x, w1)
})");
    old.setOpset("", opset);
    addConst(old, "w1", {8, 3, 3, 3}, 1);
    const Model fp32 = old;
    const PassResult r = quantize(old, c);
    CHECK(old.opsetFor("") == 13);
    CHECK(std::any_of(r.notes.begin(), r.notes.end(), [&](const std::string& n) {
      return n.find("opset " + std::to_string(opset) + " -> 13 with ONNX's version converter") != std::string::npos;
    }));
    bool axis = false;  // per-channel weight scales
    for (const auto& n : old.graph.nodes) axis = axis || (n.op_type == "DequantizeLinear" && n.hasAttr("axis"));
    CHECK(axis);
    CHECK_NOTHROW(checkModelForOutput(old));
    CHECK(outputSqnr(fp32, old, 7) > 30.0);
  }
  // Statistics from another model: refused by the graph digest they record, even where the tensor
  // names they hold fit (lenet5's for lenet300 held /fc1/Gemm_output_0 ... and were used).
  TempDir e;
  Model a = smallCnn();
  quantize(a, c, {{"save_calib", (e / "s.json").string()}});
  Model other = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 8, 12, 12] y) {
  y = Conv <pads=[1,1,1,1]> (x, w1)
})");
  addConst(other, "w1", {8, 3, 3, 3}, 1);
  passes::QuantizeStatic p;
  p.configure({{"load_calib", {(e / "s.json").string()}}}, "q");
  PassContext ctx;
  // The tensor "x" exists in both; the Conv output is a graph output, so only x is needed.
  CHECK_THROWS_WITH(p.run(other, ctx), Contains("s.json was collected on another model") && Contains("lwc calibrate"));
  // The same model (another copy of it) is accepted; a file without a digest (written before
  // 2026-12-06) too, with a note that it cannot be checked.
  Model again = smallCnn();
  passes::QuantizeStatic p2;
  p2.configure({{"load_calib", {(e / "s.json").string()}}}, "q");
  CHECK_NOTHROW(p2.run(again, ctx));
  auto j = nlohmann::json::parse(test::readFile(e / "s.json"));
  REQUIRE(j.contains("model_digest"));
  CHECK(j["model_digest"].get<std::string>().size() == 16);
  j.erase("model_digest");
  test::writeFile(e / "old.json", j.dump());
  passes::QuantizeStatic p3;
  p3.configure({{"load_calib", {(e / "old.json").string()}}}, "q");
  Model other2 = other;
  const auto r3 = p3.run(other2, ctx);
  REQUIRE(r3.notes.size() >= 1);
  CHECK_THAT(r3.notes[0], Contains("records no model digest"));
}

TEST_CASE("quantize_static gives a Split's quantized outputs the parameters of its input, quantized too", "[quantize]") {
  // ShuffleNet's unit: x1, x2 = split(x); x2 -> convolutions; concat(x1, x2'). The outputs share the
  // input's scale and zero point (the union of their ranges), as ONNX Runtime's quantizer does, so
  // the split moves bytes in either runtime; the engine then runs the shuffle on the bytes.
  Calib c;
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 12, 12] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (c1)
  a, b = Split <axis = 1> (r1, sizes)
  c2 = Conv <pads=[1,1,1,1]> (b, w2, b2)
  cat = Concat <axis = 1> (a, c2)
  y = Conv (cat, w3, b3)
})");
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.5f, 0.5f);
  addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
  addConst(m, "w2", {4, 4, 3, 3}, 3, -0.3f, 0.3f);
  addConst(m, "b2", {4}, 4, -0.1f, 0.1f);
  addConst(m, "w3", {4, 8, 1, 1}, 5, -0.3f, 0.3f);
  addConst(m, "b3", {4}, 6, -0.1f, 0.1f);
  m.graph.initializers.set("sizes", Tensor::fromVector<int64_t>({2}, {4, 4}));
  Model fp = m;
  quantize(m, c);
  // The Q of each of a, b and of the Split's input: one scale and zero point.
  auto qOf = [&](const std::string& v) -> const Node* {
    for (const auto& n : m.graph.nodes)
      if (n.op_type == "QuantizeLinear" && n.inputs[0] == v) return &n;
    return nullptr;
  };
  const Node* qa = qOf("a");
  const Node* qb = qOf("b");
  const Node* qr = qOf("c1");  // the Relu absorbed: its input
  REQUIRE(qa);
  REQUIRE(qb);
  REQUIRE(qr);
  const auto& init = m.graph.initializers;
  for (const Node* q : {qa, qb}) {
    CHECK(init.at(q->inputs[1]).at(0) == init.at(qr->inputs[1]).at(0));
    CHECK(init.at(q->inputs[2]).at(0) == init.at(qr->inputs[2]).at(0));
  }
  // The Split reads the dequantized input.
  for (const auto& n : m.graph.nodes)
    if (n.op_type == "Split") {
      const int p = producerIndex(m.graph, n.inputs[0]);
      REQUIRE(p >= 0);
      CHECK(m.graph.nodes[static_cast<size_t>(p)].op_type == "DequantizeLinear");
    }
  CHECK(outputSqnr(fp, m, 5) > 25.0);
  // In the engine the split runs on the bytes: no float QuantizeLinear after it.
  engine::Session s(m);
  int quantizes = 0;
  std::string ops;
  for (const auto& [desc, impl] : s.kernelChoices()) {
    quantizes += desc.rfind("QuantizeLinear ", 0) == 0;
    ops += desc + "; ";
  }
  INFO(ops);
  CHECK(quantizes == 1);  // the model input's
}

TEST_CASE("quantize_static raises a channel's weight scale until its bias fits int32", "[quantize]") {
  // A channel whose weights are almost zero and whose bias is not (a BatchNormalization switched
  // off in training, folded in) needs |b| / (s_x · s_w) beyond int32. A float bias there is what
  // ONNX Runtime's optimized graph got wrong (that channel's bias dropped); the scale floor keeps
  // every bias int32, the channel's output within one bias step of b, the other channels as
  // round-to-nearest gives them.
  Model fp = smallCnn();
  Tensor w1 = fp.graph.initializers.at("w1").clone(), b1 = fp.graph.initializers.at("b1").clone();
  for (int64_t k = 0; k < 27; ++k) w1.data<float>()[2 * 27 + k] *= 1e-7f;  // channel 2
  b1.data<float>()[2] = 50.0f;
  fp.graph.initializers.set("w1", w1);
  fp.graph.initializers.set("b1", b1);
  Model m = fp;
  Calib c;
  const PassResult r = quantize(m, c);
  for (const auto& note : r.notes) CHECK_THAT(note, !Contains("kept in float"));
  CHECK(r.stats.at("biases_quantized") == 3);
  const std::string& bq = m.graph.initializers.contains("b1_quantized") ? "b1_quantized" : "";
  REQUIRE(!bq.empty());
  const Tensor& b = m.graph.initializers.at(bq);
  const Tensor& bs = m.graph.initializers.at("b1_scale");
  CHECK(std::fabs(b.data<int32_t>()[2]) <= 1073741824);  // 2^30
  CHECK(b.data<int32_t>()[2] * double(bs.data<float>()[2]) == Approx(50.0).epsilon(1e-6));
  // The other channels keep max|w| / 127.
  const Tensor& ws = m.graph.initializers.at("w1_scale");
  for (int64_t ch : {0, 1, 3}) {
    float mx = 0;
    for (int64_t k = 0; k < 27; ++k) mx = std::max(mx, std::fabs(w1.data<float>()[ch * 27 + k]));
    CHECK(ws.data<float>()[ch] == Approx(mx / 127.0f));
  }
  CHECK(outputSqnr(fp, m, 9) > 25.0);
}

TEST_CASE("quantize_static refuses a tensor that takes infinite values on the calibration data", "[quantize]") {
  Model m = smallCnn();
  Tensor b2 = m.graph.initializers.at("b2").clone();
  b2.data<float>()[1] = std::numeric_limits<float>::infinity();
  m.graph.initializers.set("b2", b2);
  Calib c;
  const std::string e = errorOf([&] { quantize(m, c); });
  CHECK_THAT(e, Contains("takes infinite values on the calibration data"));
  CHECK_THAT(e, Contains("--exclude"));
}

TEST_CASE("quantize leaves an AveragePool with ceil_mode and count_include_pad over pads in float, input and all",
          "[quantize]") {
  // ONNX Runtime fuses DQ -> AveragePool -> Q into QLinearAveragePool, which divides the windows
  // that overhang the pads by another count (22 dB against the float model where lwc and ONNX
  // Runtime without fusions gave 37 dB). No DequantizeLinear may feed the pool, and lwc's engine
  // (which could not run the pool in NHWC: the run stopped) runs the file close to the float model.
  Model m = test::parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 6, 6] y) {
  c = Conv <pads=[1,1,1,1]> (x, w1, b1)
  p = AveragePool <kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1], ceil_mode=1, count_include_pad=1> (c)
  y = Conv <pads=[1,1,1,1]> (p, w2, b2)
})");
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.5f, 0.5f);
  addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
  addConst(m, "w2", {4, 8, 3, 3}, 3, -0.3f, 0.3f);
  addConst(m, "b2", {4}, 4, -0.1f, 0.1f);
  const Model fp = m;
  Calib c;
  auto r = quantize(m, c);
  CHECK(notesWith(r.notes, "left in float (ceil_mode with count_include_pad") == 1);
  GraphIndex idx(m.graph);
  for (const auto& n : m.graph.nodes)
    if (n.op_type == "AveragePool") {
      const int p = idx.producer(n.inputs[0]);
      REQUIRE(p >= 0);
      CHECK(m.graph.nodes[static_cast<size_t>(p)].op_type == "Conv");
    }
  CHECK(outputSqnr(fp, m, 7) > 30.0);
}

TEST_CASE("quantize says why a MatMul or Gemm has no weights it quantizes", "[quantize]") {
  // An attention product (two activations) used to read "weights are not a constant float tensor
  // of the expected shape", as if the model were wrong.
  Model m = test::parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x, float[4, 4] w3) => (float[N, 4] y) {
  a = MatMul (x, w)
  t = Transpose (a)
  s = MatMul (t, a)
  k = Gemm <transA = 1> (t, w2)
  u = MatMul (k, w3)
  y = MatMul (u, s)
})");
  addConst(m, "w", {4, 4}, 1, -0.5f, 0.5f);
  addConst(m, "w2", {4, 4}, 2, -0.5f, 0.5f);
  addConst(m, "w3", {4, 4}, 3, -0.5f, 0.5f);  // an initializer that is also a graph input
  Calib c({64, 4});
  auto r = quantize(m, c);
  CHECK(notesWith(r.notes, "MatMul (output 's'): left in float: its second input is computed at run time, not constant weights") == 1);
  CHECK(notesWith(r.notes, "Gemm (output 'k'): left in float: transA = 1") == 1);
  CHECK(notesWith(r.notes, "MatMul (output 'u'): left in float: its weights are also a graph input") == 1);
  CHECK(notesWith(r.notes, "(output 'a')") == 0);
}

TEST_CASE("a layer left in float reads the float tensor, not a DequantizeLinear, and its activation stays", "[quantize]") {
  // ONNX Runtime quantizes the float weights of a Conv/Gemm whose input comes from a
  // DequantizeLinear (WeightBiasQuantization, per tensor): an excluded depthwise Conv read the DQ
  // of its quantized neighbour's ReLU and ran as INT8 there (4 points below lwc's figure on mnv2).
  Calib c;
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 12, 12] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <pads=[1,1,1,1], group=8> (r1, w2, b2)
  r2 = Relu (c2)
  c3 = Conv (r2, w3, b3)
  s = Add (c3, c3)
  y = Relu (s)
})");
  m.graph.nodes[2].name = "dw";
  addChainWeights(m, {8, 1, 3, 3});
  Model fp = m;
  quantize(m, c, {{"exclude", {"dw"}}});
  const Node* dw = nullptr;
  for (const auto& n : m.graph.nodes)
    if (n.name == "dw") dw = &n;
  REQUIRE(dw);
  // Float weights, and an input that no DequantizeLinear writes: the Relu before it, kept.
  CHECK(m.graph.initializers.contains(dw->inputs[1]));
  CHECK(inputProducerOp(m, [](const Node& n) { return n.name == "dw"; }) == "Relu");
  // The other Convs are still quantized, and the model computes what the float one does, closely.
  CHECK(countOps(m, "QuantizeLinear") >= 2);
  CHECK(outputSqnr(fp, m, 9) > 25.0);
}

TEST_CASE("a MaxPool on the way to a layer left in float reads the float tensor too", "[quantize]") {
  // ONNX Runtime copies a DequantizeLinear forward across a MaxPool (QDQ propagation), and then
  // quantized the weights of the float Conv behind it (lenet5 with conv2 excluded).
  Calib c;
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 4, 6, 6] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (c1)
  p = MaxPool <kernel_shape=[2,2], strides=[2,2]> (r1)
  c2 = Conv <pads=[1,1,1,1]> (p, w2, b2)
  r2 = Relu (c2)
  y = Conv (r2, w3, b3)
})");
  m.graph.nodes[3].name = "kept";
  addChainWeights(m, {8, 8, 3, 3});
  Model fp = m;
  quantize(m, c, {{"exclude", {"kept"}}});
  // Not a DequantizeLinear, and the Relu kept.
  CHECK(inputProducerOp(m, [](const Node& n) { return n.op_type == "MaxPool"; }) == "Relu");
  CHECK(outputSqnr(fp, m, 9) > 25.0);
}

TEST_CASE("an excluded Add between quantized layers says runtimes fuse it into an integer add anyway", "[quantize]") {
  // --exclude Add wrote the same file as without it, and said nothing.
  Calib c;
  for (const char* act : {"uint8", "int8"}) {
    INFO(act);
    Model m = smallCnn();  // its Add reads two quantized ReLUs and feeds a pooling and the Gemm
    const auto r = quantize(m, c, {{"exclude", {"Add"}}, {"act_type", act}});
    const int notes = notesWith(r.notes, "excluded, but its inputs are quantized");
    // uint8: both ReLUs are absorbed into quantized outputs, so the Add reads two dequantized
    // tensors and its output is quantized for the pooling. int8: the second ReLU's output is read
    // by the Add alone and stays float, so the Add does run in float: no note.
    CHECK(notes == (std::string(act) == "uint8" ? 1 : 0));
  }
  // An op ONNX Runtime has no integer fusion for (Div), and an Add whose ReLU also feeds a layer
  // kept in float (the ReLU cannot be dropped, so nothing fuses): no note.
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 8, 12, 12] y, float[N, 8, 12, 12] z) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (c1)
  h = Div (r1, two)
  c2 = Conv <pads=[1,1,1,1]> (h, w2, b2)
  r2 = Relu (c2)
  s = Add (r1, r2)
  t = Relu (s)
  y = Conv <pads=[1,1,1,1]> (t, w3, b3)
  z = Conv <pads=[1,1,1,1]> (t, w4, b4)
})");
  m.graph.nodes[2].name = "div";
  m.graph.nodes[5].name = "add";
  m.graph.nodes[7].name = "kept";
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.5f, 0.5f);
  addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
  for (const char* w : {"w2", "w3", "w4"}) addConst(m, w, {8, 8, 3, 3}, 3, -0.3f, 0.3f);
  for (const char* b : {"b2", "b3", "b4"}) addConst(m, b, {8}, 4, -0.1f, 0.1f);
  m.graph.initializers.set("two", Tensor::scalar(2.0f));
  const auto r = quantize(m, c, {{"exclude", {"div", "add", "kept"}}});
  CHECK(notesWith(r.notes, "excluded, but") == 0);
}
