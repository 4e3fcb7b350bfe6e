// Models newer than Debian's ONNX 1.12 (opset 17, IR 8): read by lowering them (lwc/opset_lowering.h).
#include <catch2/catch.hpp>

#include <cmath>

#include <onnx/defs/parser.h>

#include "lwc/engine.h"
#include "lwc/graph_edit.h"
#include "lwc/model_fixups.h"
#include "lwc/model_io.h"
#include "lwc/opset_lowering.h"
#include "lwc/pipeline.h"
#include "lwc/status.h"
#include "support/engine_util.h"
#include "support/pass_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

const Node* nodeWithOutput(const Model& m, const std::string& out) {
  for (const auto& n : m.graph.nodes)
    if (!n.outputs.empty() && n.outputs[0] == out) return &n;
  return nullptr;
}

Tensor runOne(const Model& m, const Tensor& x, const std::string& out) {
  engine::Session s(m);
  return s.run({{"x", x}}).at(out);
}

}  // namespace

TEST_CASE("an opset-20 model reads as opset 17 and computes what its ops define", "[opset_lowering]") {
  REQUIRE(knownOpset() == 17);
  Model m = parseModelText(R"(
<ir_version: 10, opset_import: ["" : 20]>
g (float[2, 3, 4, 5] x) => (float[2, 3] mean, float[2, 3, 4, 5] same, float[2, 3, 2, 5] lo, float[2, 3, 2, 5] hi,
                            float[2, 3, 4, 5] mish, float[2, 3, 4, 5] gelu, float[2, 3, 4, 5] gelu_tanh,
                            float[2, 3, 4, 5] cast, float[2, 3, 3, 4] pool, float[2, 3, 4, 5] sq, float[2, 3, 4, 5] kept)
<int64[2] axes = {2, 3}>
{
  mean = ReduceMean <keepdims = 0> (x, axes)
  same = ReduceL2 <noop_with_empty_axes = 1> (x)
  sq = ReduceSumSquare <noop_with_empty_axes = 1> (x)
  kept = ReduceMax <noop_with_empty_axes = 1> (x)
  lo, hi = Split <axis = 2, num_outputs = 2> (x)
  mish = Mish (x)
  gelu = Gelu (x)
  gelu_tanh = Gelu <approximate = "tanh"> (x)
  cast = Cast <to = 1, saturate = 1> (x)
  pool = AveragePool <kernel_shape = [2, 2], dilations = [1, 1]> (x)
}
)");
  CHECK(m.opsetFor("") == 17);
  CHECK(m.ir_version == 8);
  const std::string notes = joined(m.load_notes);
  INFO(notes);
  CHECK_THAT(notes, Catch::Contains("reads opset 20 as opset 17") && Catch::Contains("ReduceMean: axes input -> attribute (1)") &&
                        Catch::Contains("no axes: Abs (1)") && Catch::Contains("no axes: Mul (1)") &&
                        Catch::Contains("no axes: Identity (1)") && Catch::Contains("Split: num_outputs dropped (equal parts) (1)") &&
                        Catch::Contains("Mish -> Softplus, Tanh, Mul (1)") && Catch::Contains("Gelu -> Div, Erf") &&
                        Catch::Contains("Gelu (tanh)") && Catch::Contains("Cast: saturate dropped (1)") &&
                        Catch::Contains("AveragePool: dilations left at its default, dropped (1)") &&
                        Catch::Contains("reads IR version 10 as IR version 8"));
  // The model is now one ONNX 1.12 checks and infers, and lwc writes it at opset 17, IR 8.
  CHECK_NOTHROW(checkModelForOutput(m));
  const onnx::ModelProto p = modelToProto(m);
  CHECK(p.ir_version() == 8);
  CHECK(p.opset_import(0).version() == 17);
  const Node* mean = nodeWithOutput(m, "mean");
  REQUIRE(mean);
  CHECK(mean->inputs.size() == 1);
  CHECK(mean->attrInts("axes") == std::vector<int64_t>{2, 3});
  // Nothing reduced, the element-wise part kept (onnx/onnx#7394; ONNX Runtime 1.30): |x|, x², x.
  CHECK(nodeWithOutput(m, "same")->op_type == "Abs");
  CHECK(nodeWithOutput(m, "sq")->op_type == "Mul");
  CHECK(nodeWithOutput(m, "kept")->op_type == "Identity");
  CHECK_FALSE(nodeWithOutput(m, "lo")->hasAttr("num_outputs"));
  // An all-float32 model gets float32 constants, no CastLike.
  for (const auto& n : m.graph.nodes) CHECK(n.op_type != "CastLike");

  // normalizeModel hands the notes on once.
  const auto lines = normalizeModel(m);
  CHECK(lines.size() == 2);
  CHECK(m.load_notes.empty());

  const Tensor x = randomFloat({2, 3, 4, 5}, 11, -3.0f, 3.0f);
  engine::Session s(m);
  const auto out = s.run({{"x", x}});
  const float* xv = x.data<float>();
  const float* mv = out.at("mean").data<float>();
  for (int i = 0; i < 6; ++i) {
    double sum = 0;
    for (int j = 0; j < 20; ++j) sum += xv[i * 20 + j];
    CHECK(mv[i] == Approx(sum / 20).margin(1e-6));
  }
  CHECK(out.at("kept").bitEqual(x));
  for (int64_t i = 0; i < x.numel(); ++i) {
    CHECK(out.at("same").data<float>()[i] == std::fabs(xv[i]));
    CHECK(out.at("sq").data<float>()[i] == xv[i] * xv[i]);
  }
  CHECK(out.at("lo").shape() == Shape{2, 3, 2, 5});
  CHECK(out.at("hi").data<float>()[0] == xv[10]);
  const float* mish = out.at("mish").data<float>();
  const float* gelu = out.at("gelu").data<float>();
  const float* gelu_tanh = out.at("gelu_tanh").data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = xv[i];
    CHECK(mish[i] == Approx(v * std::tanh(std::log1p(std::exp(v)))).margin(1e-5));
    CHECK(gelu[i] == Approx(0.5 * v * (1 + std::erf(v / std::sqrt(2.0)))).margin(1e-5));
    CHECK(gelu_tanh[i] ==
          Approx(0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)))).margin(1e-5));
  }
  CHECK(out.at("cast").bitEqual(x));
  CHECK(out.at("pool").data<float>()[0] == Approx((xv[0] + xv[1] + xv[5] + xv[6]) / 4).margin(1e-6));
}

TEST_CASE("ReduceLogSum with noop_with_empty_axes on integers is refused by node, not turned into an integer Log", "[opset_lowering]") {
  CHECK_THROWS_WITH(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (int32[2, 3] x) => (int32[2, 3] y)
{ y = ReduceLogSum <noop_with_empty_axes = 1> (x) }
)"),
                    Catch::Contains("node ReduceLogSum (output 'y')") && Catch::Contains("noop_with_empty_axes on int32"));
  // On floats it is the element-wise log.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[2, 3] x) => (float[2, 3] y)
{ y = ReduceLogSum <noop_with_empty_axes = 1> (x) }
)");
  const Tensor x = randomFloat({2, 3}, 4, 0.5f, 3.0f);
  const Tensor y = runOne(m, x, "y");
  for (int64_t i = 0; i < x.numel(); ++i) CHECK(y.data<float>()[i] == Approx(std::log(x.data<float>()[i])).margin(1e-6));
}

TEST_CASE("opset lowering: constants in Constant nodes, subgraphs, and a float16 model", "[opset_lowering]") {
  SECTION("axes from a Constant node, in an If branch") {
    Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[2, 4] x, bool c) => (float[2] y)
{
  y = If (c) <then_branch = g1 () => (float[2] a) {
      k = Constant <value = int64[1] {1}> ()
      a = ReduceMax <keepdims = 0> (x, k)
    }, else_branch = g2 () => (float[2] b) {
      b = ReduceMin <keepdims = 0, axes = [1]> (x)
    }>
}
)");
    CHECK(m.opsetFor("") == 17);
    CHECK_NOTHROW(checkModelForOutput(m));
    // (The engine does not run If; the branch's node is checked as ONNX 1.12 reads it.)
    const onnx::GraphProto& branch = m.graph.nodes.at(0).attr("then_branch")->g();
    const onnx::NodeProto& reduce = branch.node(branch.node_size() - 1);
    CHECK(reduce.op_type() == "ReduceMax");
    CHECK(reduce.input_size() == 1);
    REQUIRE(reduce.attribute_size() == 2);
    const auto& axes = reduce.attribute(0).name() == "axes" ? reduce.attribute(0) : reduce.attribute(1);
    CHECK(axes.name() == "axes");
    CHECK(std::vector<int64_t>(axes.ints().begin(), axes.ints().end()) == std::vector<int64_t>{1});
  }
  SECTION("a float16 model's Gelu gets float16 constants") {
    Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 20]>
g (float16[3] x) => (float16[3] y)
{
  y = Gelu (x)
}
)");
    int half_constants = 0;
    for (const auto& [name, t] : m.graph.initializers.items()) half_constants += t.dtype() == DType::Float16;
    CHECK(half_constants == 3);
    CHECK_NOTHROW(checkModelForOutput(m));
  }
  SECTION("a model with float16 and float32 tensors casts the constants like x") {
    Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 20]>
g (float16[3] x) => (float[3] y)
{
  g = Gelu (x)
  y = Cast <to = 1> (g)
}
)");
    int cast_like = 0;
    for (const auto& n : m.graph.nodes) cast_like += n.op_type == "CastLike";
    CHECK(cast_like == 3);
    CHECK_NOTHROW(checkModelForOutput(m));
  }
}

TEST_CASE("an IR-9 model at opset 17 runs as the IR-8 model", "[opset_lowering]") {
  onnx::ModelProto p = modelToProto(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 4] x) => (float[2] y)
{
  y = ReduceMean <keepdims = 0, axes = [1]> (x)
}
)"));
  p.set_ir_version(9);
  const Model m9 = modelFromProto(p, {}, "m9");
  CHECK(m9.ir_version == 8);
  CHECK(runOne(m9, Tensor::fromVector<float>({2, 4}, {1, 2, 3, 4, 5, 6, 7, 8}), "y").data<float>()[1] == 6.5f);
}

TEST_CASE("an opset-18 Split with num_outputs cuts chunks of ceil(dim / n), the last one smaller", "[opset_lowering]") {
  // Rows 0..d-1 of x hold their own index, so each output's first and last values name its rows.
  auto rows = [](int64_t d) {
    std::vector<float> v(static_cast<size_t>(d * 2));
    for (int64_t i = 0; i < d * 2; ++i) v[static_cast<size_t>(i)] = static_cast<float>(i / 2);
    return Tensor::fromVector<float>({d, 2}, v);
  };
  auto expectChunks = [&](const Model& m, int64_t d, const std::vector<int64_t>& sizes) {
    engine::Session s(m);
    const auto out = s.run({{"x", rows(d)}});
    int64_t first = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const Tensor& y = out.at(std::string(1, static_cast<char>('a' + i)));
      INFO("dimension " << d << ", output " << i);
      REQUIRE(y.shape() == Shape{sizes[i], 2});
      if (sizes[i] == 0) continue;
      CHECK(y.data<float>()[0] == static_cast<float>(first));
      CHECK(y.data<float>()[y.numel() - 1] == static_cast<float>(first + sizes[i] - 1));
      first += sizes[i];
    }
  };
  SECTION("a declared dimension: the sizes become a constant") {
    Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[5, 2] x) => (float[3, 2] a, float[2, 2] b)
{
  a, b = Split <num_outputs = 2> (x)
}
)");
    CHECK_THAT(joined(m.load_notes), Catch::Contains("Split: num_outputs -> split sizes (uneven parts) (1)"));
    const Node* sp = nodeWithOutput(m, "a");
    REQUIRE(sp->inputs.size() == 2);
    REQUIRE(m.graph.initializers.contains(sp->inputs[1]));
    CHECK(intValues(m.graph.initializers.at(sp->inputs[1])) == std::vector<int64_t>{3, 2});
    CHECK_NOTHROW(checkModelForOutput(m));
    expectChunks(m, 5, {3, 2});
  }
  SECTION("a dimension only known at run time: the sizes come from the input's shape") {
    Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[D, 2] x) => (float[?, 2] a, float[?, 2] b, float[?, 2] c)
{
  a, b, c = Split <axis = -2, num_outputs = 3> (x)
}
)");
    CHECK_THAT(joined(m.load_notes), Catch::Contains("Split: num_outputs -> split sizes from the input's shape (1)"));
    CHECK_NOTHROW(checkModelForOutput(m));
    expectChunks(m, 7, {3, 3, 1});
    expectChunks(m, 9, {3, 3, 3});
    expectChunks(m, 8, {3, 3, 2});
  }
  SECTION("in a model-local function body: the constants are Constant nodes") {
    Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 18, "local" : 1]>
g (float[7, 2] x) => (float[4, 2] a, float[3, 2] b)
{
  a, b = local.Halves (x)
}
<domain: "local", opset_import: ["" : 18]>
Halves (v) => (p, q)
{
  p, q = Split <num_outputs = 2> (v)
}
)");
    CHECK_THAT(joined(m.load_notes), Catch::Contains("split sizes from the input's shape"));
    normalizeModel(m);  // inlines the function
    CHECK(m.graph.initializers.size() == 0);
    CHECK_NOTHROW(checkModelForOutput(m));
    expectChunks(m, 7, {4, 3});
  }
}

TEST_CASE("GroupNormalization reads as the opset-17 ops that compute it, per channel at 21, per group at 18",
          "[opset_lowering]") {
  // y[n, c, i] = scale * (x - mean) / sqrt(var + eps) + bias, the statistics over the group of c.
  const int64_t N = 2, C = 6, G = 3, S = 5;
  const Tensor x = randomFloat({N, C, S}, 23, -2.0f, 4.0f);
  auto expected = [&](const std::vector<float>& scale, const std::vector<float>& bias, bool per_channel) {
    std::vector<float> y(static_cast<size_t>(N * C * S));
    const float* xv = x.data<float>();
    const int64_t per = C / G * S;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g) {
        const float* p = xv + (n * G + g) * per;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < per; ++i) mean += p[i];
        mean /= static_cast<double>(per);
        for (int64_t i = 0; i < per; ++i) var += (p[i] - mean) * (p[i] - mean);
        var /= static_cast<double>(per);
        for (int64_t i = 0; i < per; ++i) {
          const int64_t c = g * (C / G) + i / S;
          const size_t k = per_channel ? static_cast<size_t>(c) : static_cast<size_t>(g);
          y[static_cast<size_t>((n * G + g) * per + i)] =
              static_cast<float>(scale[k] * (p[i] - mean) / std::sqrt(var + 1e-3) + bias[k]);
        }
      }
    return y;
  };
  SECTION("opset 21: scale and bias per channel") {
    Model m = parseModelText(R"(
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 6, 5] x) => (float[N, 6, 5] y)
<float[6] s = {0.5, -1.0, 2.0, 1.5, 0.25, 3.0}, float[6] b = {0.1, 0.2, -0.3, 0.4, 0.5, -0.6}>
{
  y = GroupNormalization <num_groups = 3, epsilon = 0.001> (x, s, b)
}
)");
    CHECK_THAT(joined(m.load_notes), Catch::Contains("GroupNormalization -> Reshape, ReduceMean"));
    for (const auto& n : m.graph.nodes) CHECK(n.op_type != "Cast");  // a float32 model computes in float32
    CHECK_NOTHROW(checkModelForOutput(m));
    const auto y = runOne(m, x, "y");
    const auto want = expected({0.5f, -1.0f, 2.0f, 1.5f, 0.25f, 3.0f}, {0.1f, 0.2f, -0.3f, 0.4f, 0.5f, -0.6f}, true);
    REQUIRE(y.shape() == x.shape());
    for (size_t i = 0; i < want.size(); ++i) CHECK(y.data<float>()[i] == Approx(want[i]).margin(1e-5));
  }
  SECTION("opset 18: scale and bias per group") {
    Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[N, 6, 5] x) => (float[N, 6, 5] y)
<float[3] s = {0.5, -1.0, 2.0}, float[3] b = {0.1, 0.2, -0.3}>
{
  y = GroupNormalization <num_groups = 3, epsilon = 0.001> (x, s, b)
}
)");
    CHECK_THAT(joined(m.load_notes), Catch::Contains("GroupNormalization (opset 18, scale and bias per group)"));
    CHECK_NOTHROW(checkModelForOutput(m));
    const auto y = runOne(m, x, "y");
    const auto want = expected({0.5f, -1.0f, 2.0f}, {0.1f, 0.2f, -0.3f}, false);
    for (size_t i = 0; i < want.size(); ++i) CHECK(y.data<float>()[i] == Approx(want[i]).margin(1e-5));
  }
  SECTION("opset 21, float16: the statistics in float32 (stash_type), the result in float16") {
    Model m = parseModelText(R"(
<ir_version: 10, opset_import: ["" : 21]>
g (float16[N, 6, 5] x, float16[6] s, float16[6] b) => (float16[N, 6, 5] y)
{
  y = GroupNormalization <num_groups = 3, epsilon = 0.001> (x, s, b)
}
)");
    int casts = 0;
    for (const auto& n : m.graph.nodes) casts += n.op_type == "Cast" || n.op_type == "CastLike";
    CHECK(casts == 2);
    CHECK_NOTHROW(checkModelForOutput(m));
    const Tensor x16 = x.cast(DType::Float16);
    engine::Session s(m);
    const float scale[] = {0.5f, -1.0f, 2.0f, 1.5f, 0.25f, 3.0f}, bias[] = {0.1f, 0.2f, -0.3f, 0.4f, 0.5f, -0.6f};
    const Tensor sv = Tensor::fromVector<float>({6}, std::vector<float>(scale, scale + 6)).cast(DType::Float16);
    const Tensor bv = Tensor::fromVector<float>({6}, std::vector<float>(bias, bias + 6)).cast(DType::Float16);
    const Tensor y = s.run({{"x", x16}, {"s", sv}, {"b", bv}}).at("y").cast(DType::Float32);
    // Against the float32 formula on the float16 input, within float16's rounding of the result.
    const Tensor xr = x16.cast(DType::Float32);
    const float* xv = xr.data<float>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t g = 0; g < G; ++g) {
        const int64_t per = C / G * S, off = (n * G + g) * per;
        double mean = 0, var = 0;
        for (int64_t i = 0; i < per; ++i) mean += xv[off + i];
        mean /= static_cast<double>(per);
        for (int64_t i = 0; i < per; ++i) var += (xv[off + i] - mean) * (xv[off + i] - mean);
        var /= static_cast<double>(per);
        for (int64_t i = 0; i < per; ++i) {
          const int64_t c = g * (C / G) + i / S;
          const double w = scale[c] * (xv[off + i] - mean) / std::sqrt(var + 1e-3) + bias[c];
          CHECK(y.data<float>()[off + i] == Approx(w).margin(4e-3));
        }
      }
  }
}

TEST_CASE("opsets 23-25: RMSNormalization and Swish compute their definitions, type-only attributes go",
          "[opset_lowering]") {
  Model m = parseModelText(R"(
<ir_version: 10, opset_import: ["" : 25]>
g (float[2, 3, 4] x) => (float[2, 3, 4] rms, float[2, 3, 4] rms12, float[2, 3, 4] swish, float[2, 3, 4] swish7,
                         float[2, 3, 4] cast, float[2, 3, 4] qdq)
<float[4] s = {0.5, 1.0, -2.0, 3.0}, float[3, 4] s12 = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, float qs = {0.05},
 uint8 qz = {128}>
{
  rms = RMSNormalization <epsilon = 0.01> (x, s)
  rms12 = RMSNormalization <axis = 1> (x, s12)
  swish = Swish (x)
  swish7 = Swish <alpha = 0.7> (x)
  cast = Cast <to = 1, round_mode = "up"> (x)
  q = QuantizeLinear <precision = 1> (x, qs, qz)
  qdq = DequantizeLinear <output_dtype = 1> (q, qs, qz)
}
)");
  const std::string notes = joined(m.load_notes);
  INFO(notes);
  CHECK_THAT(notes, Catch::Contains("reads opset 25 as opset 17") && Catch::Contains("RMSNormalization -> Mul, ReduceMean") &&
                        Catch::Contains("Swish -> Sigmoid, Mul (1)") && Catch::Contains("Swish -> Mul, Sigmoid, Mul (1)") &&
                        Catch::Contains("Cast: round_mode dropped (1)") &&
                        Catch::Contains("QuantizeLinear: precision dropped (the scale's type) (1)") &&
                        Catch::Contains("DequantizeLinear: output_dtype dropped (the scale's type) (1)"));
  CHECK_NOTHROW(checkModelForOutput(m));
  const Tensor x = randomFloat({2, 3, 4}, 5, -3.0f, 3.0f);
  engine::Session sess(m);
  const auto out = sess.run({{"x", x}});
  const float* xv = x.data<float>();
  const float s[] = {0.5f, 1.0f, -2.0f, 3.0f};
  for (int r = 0; r < 6; ++r) {  // over the last axis
    double ms = 0;
    for (int j = 0; j < 4; ++j) ms += double(xv[r * 4 + j]) * xv[r * 4 + j];
    ms /= 4;
    for (int j = 0; j < 4; ++j)
      CHECK(out.at("rms").data<float>()[r * 4 + j] == Approx(xv[r * 4 + j] / std::sqrt(ms + 0.01) * s[j]).margin(1e-5));
  }
  for (int b = 0; b < 2; ++b) {  // over axes 1 and 2
    double ms = 0;
    for (int j = 0; j < 12; ++j) ms += double(xv[b * 12 + j]) * xv[b * 12 + j];
    ms /= 12;
    for (int j = 0; j < 12; ++j)
      CHECK(out.at("rms12").data<float>()[b * 12 + j] == Approx(xv[b * 12 + j] / std::sqrt(ms + 1e-5) * (j + 1)).margin(1e-4));
  }
  for (int64_t i = 0; i < x.numel(); ++i) {
    const double v = xv[i];
    CHECK(out.at("swish").data<float>()[i] == Approx(v / (1 + std::exp(-v))).margin(1e-5));
    CHECK(out.at("swish7").data<float>()[i] == Approx(v / (1 + std::exp(-0.7 * v))).margin(1e-5));
    // 0.05 steps around 128: the round trip is x to the nearest step, clamped to [-6.4, 6.35].
    CHECK(out.at("qdq").data<float>()[i] == Approx(std::nearbyint(v / 0.05) * 0.05).margin(1e-5));
  }
  CHECK(out.at("cast").bitEqual(x));
}

TEST_CASE("Attention (opset 23) reads as softmax(Q K^T / sqrt(d) + mask) V per head", "[opset_lowering]") {
  // 1 batch, 2 heads, 3 queries, 4 keys, head size 4; causal: query i sees keys 0..i.
  Model m = parseModelText(R"(
<ir_version: 10, opset_import: ["" : 23]>
g (float[1, 2, 3, 4] q, float[1, 2, 4, 4] k, float[1, 2, 4, 2] v) => (float[1, 2, 3, 2] y)
{
  y = Attention <is_causal = 1> (q, k, v)
}
)");
  CHECK_THAT(joined(m.load_notes), Catch::Contains("Attention -> Mul, Transpose, MatMul, Softmax, MatMul (causal) (1)"));
  CHECK_NOTHROW(checkModelForOutput(m));
  const Tensor q = randomFloat({1, 2, 3, 4}, 31, -1.0f, 1.0f), k = randomFloat({1, 2, 4, 4}, 32, -1.0f, 1.0f),
               v = randomFloat({1, 2, 4, 2}, 33, -1.0f, 1.0f);
  engine::Session s(m);
  const Tensor y = s.run({{"q", q}, {"k", k}, {"v", v}}).at("y");
  REQUIRE(y.shape() == Shape{1, 2, 3, 2});
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < 3; ++i) {
      std::vector<double> w;
      double total = 0;
      for (int j = 0; j <= i; ++j) {
        double dot = 0;
        for (int d = 0; d < 4; ++d) dot += double(q.data<float>()[(h * 3 + i) * 4 + d]) * k.data<float>()[(h * 4 + j) * 4 + d];
        w.push_back(std::exp(dot / 2.0));  // 1 / sqrt(4)
        total += w.back();
      }
      for (int c = 0; c < 2; ++c) {
        double want = 0;
        for (int j = 0; j <= i; ++j) want += w[static_cast<size_t>(j)] / total * v.data<float>()[(h * 4 + j) * 2 + c];
        CHECK(y.data<float>()[(h * 3 + i) * 2 + c] == Approx(want).margin(1e-5));
      }
    }
}

TEST_CASE("convertOpset keeps Upsample-9 and Resize-10 sampling: asymmetric coordinates, floor for nearest", "[opset]") {
  // ONNX's converter gave these Resize-13 nodes with no coordinate_transformation_mode (half_pixel)
  // and no nearest_mode (round_prefer_floor): a bilinear upsampling quantized from opset 10 had
  // 6 dB SQNR against its float model. Nearest at scale 3 differs too (x/3 rounds, not floors).
  const Tensor x = randomFloat({1, 2, 4, 5}, 11);
  Tensor s2(DType::Float32, {4}), s3(DType::Float32, {4});
  for (int i = 0; i < 4; ++i) {
    s2.data<float>()[i] = i < 2 ? 1.0f : 2.0f;
    s3.data<float>()[i] = i < 2 ? 1.0f : 3.0f;
  }
  for (const char* op : {"Upsample", "Resize"}) {
    INFO(op);
    const int opset = std::string(op) == "Upsample" ? 9 : 10;
    Model m = test::parseGraph(std::string("<ir_version: 5, opset_import: [\"\" : ") + std::to_string(opset) + R"(]>
g (float[1, 2, 4, 5] x) => (float[1, 2, 12, 15] y, float[1, 2, 8, 10] z) {
  y = )" + op + R"( <mode = "nearest"> (x, s3)
  z = )" + op + R"( <mode = "linear"> (x, s2)
})");
    m.graph.initializers.set("s2", s2);
    m.graph.initializers.set("s3", s3);
    Model c = m;
    REQUIRE(convertOpset(c, 13).empty());
    REQUIRE(c.opsetFor("") == 13);
    const auto want = engine::Session(m).runOrdered({{"x", x}});
    const auto got = engine::Session(c).runOrdered({{"x", x}});
    REQUIRE(got.size() == 2);
    for (size_t k = 0; k < 2; ++k) {
      INFO("output " << k);
      REQUIRE(got[k].shape() == want[k].shape());
      double worst = 0;
      for (int64_t i = 0; i < want[k].numel(); ++i) worst = std::max(worst, std::fabs(got[k].at(i) - want[k].at(i)));
      CHECK(worst < 1e-6);
    }
  }
}

TEST_CASE("an opset-18 reduction whose axes input is left empty reduces every axis", "[opset_lowering]") {
  // ReduceMean(x, "") was refused as corrupt: "has 2 inputs; ReduceMean (opset 17) takes 1".
  onnx::ModelProto p;
  REQUIRE(onnx::OnnxParser::Parse(p, R"(
<ir_version: 8, opset_import: ["" : 18]>
g (float[2, 3] x) => (float y, float[1, 1] kept)
{
  y = ReduceMean <keepdims = 0> (x)
  kept = ReduceSumSquare (x)
}
)").IsOK());
  for (auto& n : *p.mutable_graph()->mutable_node()) n.add_input("");
  const Model m = modelFromProto(p, ".", "m.onnx");
  for (const auto& n : m.graph.nodes) CHECK(n.inputs.size() == 1);
  const Tensor x = randomFloat({2, 3}, 5, -2.0f, 2.0f);
  const auto out = engine::Session(m).run({{"x", x}});
  double sum = 0, sq = 0;
  for (int i = 0; i < 6; ++i) {
    sum += x.data<float>()[i];
    sq += double(x.data<float>()[i]) * x.data<float>()[i];
  }
  CHECK(out.at("y").data<float>()[0] == Approx(sum / 6).margin(1e-6));
  CHECK(out.at("kept").shape() == Shape{1, 1});
  CHECK(out.at("kept").data<float>()[0] == Approx(sq).margin(1e-5));
}
