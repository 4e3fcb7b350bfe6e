// The engine's graph rewrites (BN folding, NHWC, post-op fusion) must not change results.
#include <catch2/catch.hpp>

#include "lwc/model_io.h"
#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {
// Fills every float initializer named w*/b*/g*/m*/v* with seeded values (v* positive: variances).
void randomizeWeights(Model& m, uint32_t seed) {
  for (auto& [name, t] : m.graph.initializers.items()) {
    if (t.dtype() != DType::Float32) continue;
    const bool positive = name[0] == 'v' || name[0] == 'g';
    Tensor r = randomFloat(t.shape(), seed++, positive ? 0.5f : -0.5f, positive ? 1.5f : 0.5f);
    t = r;
  }
}

Tensor zeros(Shape s) { return Tensor(DType::Float32, std::move(s)); }

void addInit(Model& m, const std::string& name, Shape s) { m.graph.initializers.set(name, zeros(std::move(s))); }

void checkSame(const Model& m, const Shape& x_shape, const std::string& what) {
  INFO(what);
  engine::Session fast(m), ref(m, engine::SessionOptions{0, true});
  for (uint32_t seed : {1u, 2u}) {
    engine::TensorMap feeds{{"x", randomFloat(x_shape, seed)}};
    auto a = fast.runOrdered(feeds);
    auto b = ref.runOrdered(feeds);
    REQUIRE(a.size() == b.size());
    for (size_t i = 0; i < a.size(); ++i) CHECK(compareTensors(a[i], b[i], 1e-4, 1e-4).empty());
  }
}
}  // namespace

TEST_CASE("residual block with BN, ReLU, MaxPool, GAP", "[optimize]") {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 16, 16] x) => (float[N, 10] y)
{
  c0 = Conv <pads=[1,1,1,1]> (x, w0)
  n0 = BatchNormalization (c0, g0, b0, m0, v0)
  r0 = Relu (n0)
  p0 = MaxPool <kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]> (r0)
  c1 = Conv <pads=[1,1,1,1]> (p0, w1, bc1)
  n1 = BatchNormalization (c1, g1, b1, m1, v1)
  r1 = Relu (n1)
  c2 = Conv <pads=[1,1,1,1]> (r1, w2)
  n2 = BatchNormalization (c2, g2, b2, m2, v2)
  s = Add (n2, p0)
  r2 = Relu (s)
  gp = GlobalAveragePool (r2)
  f = Flatten (gp)
  y = Gemm <transB=1> (f, wf, bf)
}
)",
                           LoadOptions{false});
  addInit(m, "w0", {8, 3, 3, 3});
  addInit(m, "w1", {8, 8, 3, 3});
  addInit(m, "bc1", {8});
  addInit(m, "w2", {8, 8, 3, 3});
  for (const char* p : {"g", "b", "m", "v"})
    for (int i = 0; i < 3; ++i) addInit(m, p + std::to_string(i), {8});
  addInit(m, "wf", {10, 8});
  addInit(m, "bf", {10});
  randomizeWeights(m, 11);
  validateGraph(m.graph);
  checkSame(m, {2, 3, 16, 16}, "resnet-like");
}

TEST_CASE("inverted residual with Clip, depthwise, constant broadcast, Concat", "[optimize]") {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 12, 12] x) => (float[N, 16, 6, 6] y, float[N, 8, 12, 12] z)
{
  e = Conv (x, we, be)
  e6 = Clip (e, lo, hi)
  d = Conv <group=8, pads=[1,1,1,1]> (e6, wd, bd)
  d6 = Clip (d, lo, hi)
  p = Conv (d6, wp, bp)
  s = Add (p, x2)
  x2 = Conv (x, wx, bx)
  sc = Mul (s, chan)
  z = Sigmoid (sc)
  a = AveragePool <kernel_shape=[2,2], strides=[2,2]> (sc)
  q = Conv (a, wq, bq)
  y = Concat <axis=1> (q, q)
}
)",
                           LoadOptions{false});
  addInit(m, "we", {8, 4, 1, 1});
  addInit(m, "be", {8});
  addInit(m, "wd", {8, 1, 3, 3});
  addInit(m, "bd", {8});
  addInit(m, "wp", {8, 8, 1, 1});
  addInit(m, "bp", {8});
  addInit(m, "wx", {8, 4, 1, 1});
  addInit(m, "bx", {8});
  addInit(m, "chan", {8, 1, 1});
  addInit(m, "wq", {8, 8, 1, 1});
  addInit(m, "bq", {8});
  randomizeWeights(m, 5);
  m.graph.initializers.set("lo", Tensor::scalar(0.0f));
  m.graph.initializers.set("hi", Tensor::scalar(6.0f));
  topoSort(m.graph);
  validateGraph(m.graph);
  checkSame(m, {3, 4, 12, 12}, "mobilenet-like");
}
