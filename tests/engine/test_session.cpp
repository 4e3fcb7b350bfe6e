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
                        !Catch::Contains("lwc.internal"));
}
