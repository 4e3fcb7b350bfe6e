// Session behaviour: inputs checked, errors name the node, observers see every produced tensor.
#include <catch2/catch.hpp>

#include "lwc/model_io.h"
#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {
Model twoNodes() {
  return parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y)
{
  a = Neg (x)
  y = Abs (a)
}
)");
}
}  // namespace

TEST_CASE("session runs and observes", "[session]") {
  engine::Session s(twoNodes());
  CHECK(s.inputNames() == std::vector<std::string>{"x"});
  CHECK(s.outputNames() == std::vector<std::string>{"y"});
  std::vector<std::string> seen;
  Tensor x = Tensor::fromVector<float>({1, 4}, {1, -2, 3, -4});
  auto out = s.run({{"x", x}}, [&](const std::string& name, const Tensor& t) {
    seen.push_back(name);
    CHECK(t.shape() == Shape{1, 4});
  });
  CHECK(seen == std::vector<std::string>{"a", "y"});
  CHECK(out.at("y").data<float>()[1] == 2.0f);
  // dynamic batch
  auto out3 = s.run({{"x", randomFloat({3, 4}, 1)}});
  CHECK(out3.at("y").shape() == Shape{3, 4});
}

TEST_CASE("session profile: per-node calls and median since the last reset", "[session]") {
  engine::SessionOptions so;
  so.profile = true;
  engine::Session s(twoNodes(), so);
  const Tensor x = randomFloat({64, 4}, 3);
  for (int i = 0; i < 5; ++i) s.run({{"x", x}});
  auto p = s.profile();
  REQUIRE(p.size() == 2);
  CHECK(p[0].calls == 5);
  s.resetProfile();
  for (int i = 0; i < 3; ++i) s.run({{"x", x}});
  p = s.profile();
  REQUIRE(p.size() == 2);
  for (const auto& n : p) {
    INFO(n.node);
    CHECK(n.calls == 3);
    CHECK(n.median_ms > 0);
    CHECK(n.median_ms <= n.total_ms);  // one of three non-negative times
  }
  CHECK(p[0].op_type == "Neg");
  CHECK(engine::Session(twoNodes()).profile().empty());  // off unless asked for
}

TEST_CASE("session input errors", "[session]") {
  engine::Session s(twoNodes());
  CHECK_THROWS_WITH(s.run({}), Catch::Contains("'x'") && Catch::Contains("not given"));
  CHECK_THROWS_WITH(s.run({{"x", randomFloat({2, 5}, 1)}}), Catch::Contains("[N,4]") && Catch::Contains("[2,5]"));
  CHECK_THROWS_WITH(s.run({{"x", Tensor(DType::Int32, {1, 4})}}), Catch::Contains("float32"));
}

TEST_CASE("unsupported op names op, domain, opset and node", "[session]") {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13, "com.example" : 1]>
g (float[2] x) => (float[2] y)
{
  y = com.example.Frobnicate (x)
}
)");
  m.graph.nodes[0].name = "frob1";
  CHECK_THROWS_WITH(engine::Session(m), Catch::Contains("com.example.Frobnicate") && Catch::Contains("opset 1") &&
                                            Catch::Contains("'frob1'") && Catch::Contains("lwc ops"));
  auto un = engine::unsupportedOps(m);
  REQUIRE(un.size() == 1);
  CHECK_THAT(un[0], Catch::Contains("Frobnicate"));
}

TEST_CASE("run-time kernel errors name the model, the node as the file has it and the inputs fed", "[session]") {
  // Dynamic H and W: the shapes are only checked when the kernels run. The engine runs the Conv
  // and the MaxPool as its own NHWC ops; the message must not name those.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8, H, W] x, float[8, 8, 3, 3] w) => (float[N, 8, P, Q] y)
{
  c = Conv <pads = [1, 1, 1, 1]> (x, w)
  r = Relu (c)
  y = MaxPool <kernel_shape = [2, 2]> (r)
}
)");
  m.graph.inputs.pop_back();  // w: a weight, not an input
  m.graph.initializers.set("w", randomFloat({8, 8, 3, 3}, 7));
  m.graph.nodes[0].name = "conv1";
  m.graph.nodes[2].name = "pool1";
  m.source = "dyn.onnx";
  engine::Session s(m);
  CHECK(s.run({{"x", randomFloat({1, 8, 4, 4}, 1)}}).at("y").shape() == Shape{1, 8, 3, 3});  // stride 1
  bool rewritten = false;
  for (const auto& [node, impl] : s.kernelChoices()) rewritten |= node.find("lwc.internal") != std::string::npos;
  CHECK(rewritten);  // otherwise this test does not test the renaming
  CHECK_THROWS_WITH(s.run({{"x", randomFloat({2, 8, 1, 1}, 1)}}),
                    Catch::StartsWith("dyn.onnx: node MaxPool 'pool1': the window") &&
                        Catch::Contains("inputs fed: 'x' [2,8,1,1] (declared [N,8,H,W])") &&
                        Catch::Contains("feed inputs the model accepts") && !Catch::Contains("lwc.internal"));
  // Inputs of the declared, fixed shape leave the model at fault: a kernel_shape its weights do
  // not have was blamed on the inputs.
  Model bad = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8, 6, 6] x, float[8, 8, 3, 3] w) => (float[N, 8, 2, 2] y)
{
  y = Conv <kernel_shape = [5, 5]> (x, w)
}
)");
  bad.graph.inputs.pop_back();
  bad.graph.initializers.set("w", randomFloat({8, 8, 3, 3}, 7));
  bad.source = "bad.onnx";
  engine::Session sb(bad);
  CHECK_THROWS_WITH(sb.run({{"x", randomFloat({2, 8, 6, 6}, 1)}}),
                    Catch::Contains("kernel_shape") && Catch::Contains("as the model declares them, so the model itself is "
                                                                          "inconsistent: `lwc info` checks it") &&
                        !Catch::Contains("feed inputs the model accepts"));
}

namespace {
// Outputs of `m` on `feeds` with and without batch splitting; the split one's description.
std::pair<std::string, std::string> runSplitAndWhole(const Model& m, const engine::TensorMap& feeds,
                                                     const engine::Observer& observer = {}) {
  engine::Session split(m);
  engine::SessionOptions whole_opts;
  whole_opts.split_batch = false;
  engine::Session whole(m, whole_opts);
  const auto a = split.runOrdered(feeds, observer);
  const auto b = whole.runOrdered(feeds);
  CHECK(whole.batchSplit().empty());
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("output " << i << " " << shapeStr(a[i].shape()));
    CHECK(a[i].bitEqual(b[i]));
  }
  return {split.batchSplit(), a.empty() ? std::string() : shapeStr(a[0].shape())};
}

// A memory-bound start (a 1x1 convolution of 3 channels, Relu, Add of a per-channel constant, max
// pooling) on 255x255 images, whose per-sample rows (3*255*255 floats) do not start on 64-byte
// boundaries; `mix` computes m from the convolution's output a.
Model splitModel(const std::string& mix) {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 255, 255] x) => (float[N, 4] y, float[N, 8, 127, 127] p)
<float[8, 3, 1, 1] w1 = {0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, 0.8, -0.9, 1.0, 1.1, -1.2, 0.1, 0.2, 0.3, -0.4, 0.5, 0.6, -0.7, 0.8, 0.9, 1.0, -1.1, 1.2},
 float[8, 1, 1] c = {0.5, -0.5, 0.25, -0.25, 0.125, -0.125, 1.0, -1.0},
 float[4, 8, 1, 1] w2 = {1, 2, 3, 4, 5, 6, 7, 8, -1, -2, -3, -4, -5, -6, -7, -8, 0.5, 0.5, 0.5, 0.5, -0.5, -0.5, -0.5, -0.5, 1, 0, 1, 0, 1, 0, 1, 0},
 int64[2] flat = {-1, 4}, int64[1] st = {1}, int64[1] en = {10}, int64[1] ax = {0},
 float[9, 1, 1, 1] k9 = {1, 2, 3, 4, 5, 6, 7, 8, 9},
 float[9] qs = {0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09}, uint8[9] qz = {128, 120, 110, 100, 90, 80, 70, 60, 50}>
{
  a = Conv (x, w1)
)" + mix + R"(
  r = Relu (m)
  s = Add (r, c)
  p = MaxPool <kernel_shape = [3, 3], strides = [2, 2]> (s)
  q = Conv (p, w2)
  g = GlobalAveragePool (q)
  y = Reshape (g, flat)
}
)");
  return m;
}
}  // namespace

TEST_CASE("a large batch runs its memory-bound first layers a few samples at a time, with the bits of the whole batch", "[session]") {
  const Model m = splitModel("  m = Identity (a)");
  // 9 samples: 4.2 MB of activations per sample in the Add (2.1 MB in, 2.1 MB out), 37 MB for the
  // batch, so slices of at most 4 samples (16 MiB). The split ends after the pooling (the input's
  // transpose to NHWC, the convolution, Identity, Relu, the Add, the pooling): there the fewest
  // bytes cross. The output p comes from the split part, gathered whole.
  auto [split9, shape9] = runSplitAndWhole(m, {{"x", randomFloat({9, 3, 255, 255}, 11)}});
  CHECK(shape9 == "[9,4]");
  CHECK_THAT(split9, Catch::StartsWith("the first 6 of 11 nodes in 3 slices of 3 samples"));
  auto [split10, shape10] = runSplitAndWhole(m, {{"x", randomFloat({10, 3, 255, 255}, 12)}});
  CHECK_THAT(split10, Catch::Contains("3 slices of 3-4 samples"));
  // Small batches run whole.
  CHECK(runSplitAndWhole(m, {{"x", randomFloat({3, 3, 255, 255}, 13)}}).first.empty());
  // A run with an observer sees whole-batch tensors.
  int64_t observed_batch = 0;
  const auto with_observer = runSplitAndWhole(m, {{"x", randomFloat({9, 3, 255, 255}, 11)}},
                                              [&](const std::string&, const Tensor& t) { observed_batch = std::max(observed_batch, t.dim(0)); });
  CHECK(with_observer.first.empty());
  CHECK(observed_batch == 9);
}

TEST_CASE("batch splitting stops before a node that mixes samples", "[session]") {
  const Tensor x = randomFloat({9, 3, 255, 255}, 21);
  // Concat along the batch (then rows 1-9 of it), Softmax over the batch, a constant with a batch-sized first
  // dimension, MaxPool's indices (counted across the batch): each of these runs on the whole batch
  // and the results equal an unsplit run's.
  for (const std::string mix : {"  d = Concat <axis = 0> (a, a)\n  m = Slice (d, st, en, ax)",
                                "  d = Transpose <perm = [1, 0, 2, 3]> (a)\n  e = Softmax <axis = 1> (d)\n"
                                "  m = Transpose <perm = [1, 0, 2, 3]> (e)",
                                "  m = Add (a, k9)",
                                // Parameters per sample that a one-sample probe run refuses (the
                                // probe's error ended the whole run): a PRelu slope, a per-axis
                                // QuantizeLinear on axis 0.
                                "  m = PRelu (a, k9)",
                                "  qa = QuantizeLinear <axis = 0> (a, qs, qz)\n  m = DequantizeLinear <axis = 0> (qa, qs, qz)",
                                "  pp, idx = MaxPool <kernel_shape = [1, 1]> (a)\n  fi = Cast <to = 1> (idx)\n  m = Add (pp, fi)"}) {
    INFO(mix);
    const Model m = splitModel(mix);
    const auto [split, shape] = runSplitAndWhole(m, {{"x", x}});
    CHECK(shape == "[9,4]");
    // The split, if any, ends before the mixing node: at most the input's transpose to NHWC, the
    // convolution and its output's transpose back.
    INFO(split);
    CHECK((split.empty() || split.starts_with("the first 2 of ") || split.starts_with("the first 3 of ")));
  }
}

TEST_CASE("valid ONNX a kernel lacks is called a limit of lwc and not a fault of the model or the inputs", "[session]") {
  // Resize linear on uint8 (ONNX allows it; the kernel computes floats) said "the model itself is
  // inconsistent: `lwc info` checks it", which passes.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (uint8[1, 1, 3, 4] x) => (uint8[1, 1, 6, 8] y)
<float[4] scales = {1, 1, 2, 2}>
{
  y = Resize <mode = "linear"> (x, , scales)
}
)");
  m.source = "r.onnx";
  engine::Session s(m);
  CHECK_THROWS_WITH(s.run({{"x", Tensor(DType::UInt8, {1, 1, 3, 4})}}),
                    Catch::StartsWith("r.onnx: node Resize (output 'y'): element type uint8 is not supported") &&
                        Catch::Contains("valid ONNX that the lwc engine does not compute yet") &&
                        !Catch::Contains("inconsistent") && !Catch::Contains("feed inputs"));
}
