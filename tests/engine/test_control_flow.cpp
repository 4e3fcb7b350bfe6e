// If, Loop and Scan (control_flow.cpp): outer values read from two scopes up, a loop of no iterations, a scan of no steps,
// and the errors. Against ONNX Runtime: CTest ops_ort (scripts/gen_op_models.py: both branches of
// an If after a convolution, Loop with a trip count and a scan output, Loop ended by its body with
// an If inside); ONNX's backend cases (test_if, test_loop11, Range's expanded form): conformance.
#include <catch2/catch.hpp>

#include "lwc/model_io.h"
#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;

namespace {

Tensor f32(Shape s, std::vector<float> v) { return Tensor::fromVector<float>(std::move(s), v); }

Tensor boolean(bool v) {
  Tensor t(DType::Bool, {});
  t.data<bool>()[0] = v;
  return t;
}

std::string buildError(const std::string& text) {
  try {
    engine::Session s(parseModelText(text));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("If: a branch's own If reads a value from two scopes up, on both engines", "[control_flow]") {
  const Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (bool c1, bool c2, float[2] x) => (float[2] y) {
  s = Add (x, x)
  y = If (c1) <
    then_branch = t1 () => (float[2] o1) {
      o1 = If (c2) <
        then_branch = t2 () => (float[2] o2) { o2 = Mul (s, x) },
        else_branch = e2 () => (float[2] o3) { o3 = Neg (s) }
      >
    },
    else_branch = e1 () => (float[2] o4) { o4 = Identity (x) }
  >
}
)");
  for (bool reference : {true, false}) {
    engine::SessionOptions opts;
    opts.reference_only = reference;
    engine::Session s(m, opts);
    const Tensor x = f32({2}, {1.5f, -2.0f});
    const auto run = [&](bool a, bool b) { return s.runOrdered({{"c1", boolean(a)}, {"c2", boolean(b)}, {"x", x}}).at(0); };
    CHECK(run(true, true).data<float>()[1] == 8.0f);    // (x + x) * x
    CHECK(run(true, false).data<float>()[0] == -3.0f);  // -(x + x)
    CHECK(run(false, true).data<float>()[0] == 1.5f);   // x
  }
}

TEST_CASE("Loop: no iterations keep the initial values and give empty scan outputs of the body's type and slice shape", "[control_flow]") {
  // snap's slice shape comes from the body's shape inference ([3], from a), its declaration leaves it
  // open; ONNX Runtime gives [0, 3] too.
  const Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (int64 trips, float[3] x) => (float[3] v, int64[?] seen, float[?, ?] snaps) {
  v, seen, snaps = Loop (trips, , x) <
    body = b (int64 i, bool cin, float[3] a) => (bool cout, float[3] a2, int64 iter, float[?] snap) {
      cout = Identity (cin)
      a2 = Add (a, a)
      iter = Identity (i)
      snap = Identity (a2)
    }
  >
}
)");
  engine::Session s(m);
  const Tensor x = f32({3}, {1, 2, 3});
  auto out = s.runOrdered({{"trips", Tensor::scalar<int64_t>(0)}, {"x", x}});
  CHECK(out.at(0).bitEqual(x));
  CHECK(out.at(1).shape() == Shape{0});
  CHECK(out.at(1).dtype() == DType::Int64);
  CHECK(out.at(2).shape() == Shape{0, 3});
  out = s.runOrdered({{"trips", Tensor::scalar<int64_t>(3)}, {"x", x}});
  CHECK(out.at(0).data<float>()[2] == 24.0f);
  REQUIRE(out.at(1).shape() == Shape{3});
  CHECK(out.at(1).data<int64_t>()[2] == 2);
  CHECK(out.at(2).shape() == Shape{3, 3});
}

TEST_CASE("Control flow errors name the node: branch outputs, a scan output that changes shape, opset 8 Scan", "[control_flow]") {
  CHECK_THAT(buildError(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[2] x) => (float[2] y) {
  y = If (c) <
    then_branch = t () => (float[2] a, float[2] b) { a = Identity (x)  b = Identity (x) },
    else_branch = e () => (float[2] d) { d = Identity (x) }
  >
}
)"),
             Contains("its branches give 2 and 1 outputs; the node has 1"));
  const Model grows = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[1] x) => (float[?] v, float[?, ?] all)
<int64 three = {3}>
{
  v, all = Loop (three, , x) <
    body = b (int64 i, bool cin, float[?] a) => (bool cout, float[?] a2, float[?] snap) {
      cout = Identity (cin)
      a2 = Concat <axis=0> (a, a)
      snap = Identity (a2)
    }
  >
}
)");
  engine::Session s(grows);
  CHECK_THROWS_WITH(s.runOrdered({{"x", f32({1}, {1})}}),
                    Contains("scan output 0 is [4] in step 1 and [2] before; every step must give the same shape"));
  engine::Session two_trips(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (int64[2] trips, float[1] x) => (float[1] v) {
  v = Loop (trips, , x) <
    body = b (int64 i, bool cin, float[1] a) => (bool cout, float[1] a2) { cout = Identity (cin)  a2 = Neg (a) }
  >
}
)"));
  CHECK_THROWS_WITH(two_trips.runOrdered({{"trips", Tensor::fromVector<int64_t>({2}, {1, 2})}, {"x", f32({1}, {1})}}),
                    Contains("M has shape [2]; expected one trip count"));
  CHECK_THAT(buildError(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (int64 m, bool c, float[1] x) => (float[1] v) {
  v = Loop (m, c, x) <
    body = b (int64 i, float[1] a) => (bool cout, float[1] a2) { cout = Constant <value = bool {0}> ()  a2 = Neg (a) }
  >
}
)"),
             Contains("Loop takes M, cond and N carried values, its body N + 2 inputs"));
  // A running sum over xs with the Scan attributes `attrs`.
  auto scanError = [&](const std::string& attrs) {
    return buildError(R"(
<ir_version: 8, opset_import: ["" : 11]>
g (float[2] init, float[3, 2] xs) => (float[2] last, float[3, 2] ys) {
  last, ys = Scan (init, xs) <
    )" + attrs + R"(,
    body = b (float[2] s, float[2] x) => (float[2] s2, float[2] y) { s2 = Add (s, x)  y = Identity (s2) }
  >
}
)");
  };
  CHECK_THAT(scanError("num_scan_inputs = 3"), Contains("num_scan_inputs is 3 of its 2 inputs"));
  CHECK_THAT(scanError("num_scan_inputs = 1, scan_input_axes = [0, 1]"),
             Contains("the scan_input_* attributes need 1 values and the scan_output_* 1"));
  CHECK_THAT(buildError(R"(
<ir_version: 8, opset_import: ["" : 8]>
g (int64[1] lens, float[1, 2] init, float[1, 3, 2] xs) => (float[1, 2] last, float[1, 3, 2] ys) {
  last, ys = Scan (lens, init, xs) <
    num_scan_inputs = 1,
    body = b (float[2] s, float[2] x) => (float[2] s2, float[2] y) { s2 = Add (s, x)  y = Identity (s2) }
  >
}
)"),
             Contains("op Scan is supported, but not at opset 8"));
}

TEST_CASE("Scan: running sums along axis 1, the input read backwards and the output stacked on axis 1 backwards and no steps giving empty outputs", "[control_flow]") {
  const Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 11]>
g (float[2] init, float[2, ?] xs) => (float[2] last, float[2, ?] ys, float[?, 2] zs) {
  last, ys, zs = Scan (init, xs) <
    num_scan_inputs = 1, scan_input_axes = [1], scan_input_directions = [1],
    scan_output_axes = [1, 0], scan_output_directions = [1, 0],
    body = b (float[2] s, float[2] x) => (float[2] s2, float[2] y, float[2] z) {
      s2 = Add (s, x)
      y = Identity (s2)
      z = Identity (s2)
    }
  >
}
)");
  engine::Session s(m);
  // Columns read last first: sums 3, 3+2, 3+2+1 (row 0) and 6, 11, 15 (row 1).
  const auto out = s.runOrdered({{"init", f32({2}, {0, 0})}, {"xs", f32({2, 3}, {1, 2, 3, 4, 5, 6})}});
  CHECK(out.at(0).data<float>()[0] == 6.0f);
  CHECK(out.at(0).data<float>()[1] == 15.0f);
  // ys: stacked along axis 1 in reverse step order; zs: along axis 0 in step order.
  const std::vector<float> ys(out.at(1).data<float>(), out.at(1).data<float>() + 6);
  CHECK(ys == std::vector<float>{6, 5, 3, 15, 11, 6});
  const std::vector<float> zs(out.at(2).data<float>(), out.at(2).data<float>() + 6);
  CHECK(zs == std::vector<float>{3, 6, 5, 11, 6, 15});
  // No steps: the states pass through, each scan output empty along its own axis with the slice
  // shape the body declares.
  const Tensor init = f32({2}, {1, 2});
  const auto none = s.runOrdered({{"init", init}, {"xs", f32({2, 0}, {})}});
  CHECK(none.at(0).bitEqual(init));
  CHECK(none.at(1).shape() == Shape{2, 0});
  CHECK(none.at(2).shape() == Shape{0, 2});
  CHECK(none.at(2).dtype() == DType::Float32);
}

TEST_CASE("Scan: no steps with a body output of open shape is an error naming that output", "[control_flow]") {
  const Tensor init = f32({2}, {1, 2});
  engine::Session unknown(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 16]>
g (float[2] init, float[?, 2] xs) => (float[2] last, float[?, ?] ys) {
  last, ys = Scan (init, xs) <
    num_scan_inputs = 1,
    body = b (float[?] s, float[2] x) => (float[?] s2, float[?] y) { s2 = Identity (s)  y = Concat <axis = 0> (s, x) }
  >
}
)"));
  CHECK_THROWS_WITH(unknown.runOrdered({{"init", init}, {"xs", f32({0, 2}, {})}}),
                    Contains("scan output 0 has no steps") && Contains("give the body's output 'y' a static shape"));
}
