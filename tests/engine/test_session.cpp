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
