// weight_share: k-means properties (linear init, Lloyd fixed point, determinism), zeros kept,
// at most 2^bits values per layer, lossless when a layer has few values.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <set>

#include "lwc/engine.h"
#include "lwc/npy.h"
#include "passes/registry.h"
#include "passes/weight_share.h"
#include "support/engine_util.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;
using namespace lwc::test;

TEST_CASE("kmeans1d: Lloyd fixed point from linear initialisation", "[weight_share]") {
  std::vector<float> v;
  for (int i = 0; i < 1000; ++i) v.push_back(std::sin(float(i) * 0.37f) * std::exp(float(i % 7) * 0.3f));
  std::vector<int> a;
  int iters = 0;
  const auto c = passes::kmeans1d(v, 8, 200, a, &iters);
  REQUIRE(c.size() == 8);
  CHECK(std::is_sorted(c.begin(), c.end()));
  CHECK(iters < 200);
  // Fixed point: every value is assigned to its nearest centroid, every centroid is its cluster's mean.
  std::vector<double> sum(8, 0.0);
  std::vector<int> cnt(8, 0);
  for (size_t i = 0; i < v.size(); ++i) {
    const int j = a[i];
    for (size_t q = 0; q < c.size(); ++q) CHECK(std::fabs(v[i] - c[size_t(j)]) <= std::fabs(v[i] - c[q]) + 1e-9);
    sum[size_t(j)] += v[i];
    ++cnt[size_t(j)];
  }
  for (size_t q = 0; q < 8; ++q)
    if (cnt[q]) CHECK(c[q] == Approx(sum[q] / cnt[q]).epsilon(1e-9));
  // Linear initialisation keeps the extremes' clusters: the largest value's centroid is the largest.
  const auto mx = std::max_element(v.begin(), v.end()) - v.begin();
  CHECK(a[size_t(mx)] == 7);
  // Deterministic.
  std::vector<int> a2;
  CHECK(passes::kmeans1d(v, 8, 200, a2) == c);
  CHECK(a2 == a);
  // Few distinct values: kept exactly.
  std::vector<int> a3;
  CHECK(passes::kmeans1d({1.0f, -2.0f, 1.0f, 3.0f}, 8, 10, a3) == std::vector<double>{-2.0, 1.0, 3.0});
}

TEST_CASE("weight_share leaves at most 2^bits non-zero values per layer and keeps zeros", "[weight_share]") {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 64] x) => (float[N, 32] y) {
  h = Gemm <transB=1> (x, w1)
  y = Gemm <transB=1> (h, w2)
})");
  addConst(m, "w1", {32, 64}, 1);
  addConst(m, "w2", {32, 32}, 2);
  Tensor& w1 = *m.graph.initializers.find("w1");
  for (int64_t i = 0; i < w1.numel(); i += 3) w1.data<float>()[i] = 0.0f;  // a third pruned
  const Model before = m;
  auto r = runPass(m, "weight_share", {{"bits", 3}, {"min_params", 0}});
  CHECK(r.stats["layers_shared"] == 2);
  for (const char* name : {"w1", "w2"}) {
    const Tensor& t0 = before.graph.initializers.at(name);
    const Tensor& t1 = m.graph.initializers.at(name);
    std::set<float> values;
    double err = 0, energy = 0;
    for (int64_t i = 0; i < t1.numel(); ++i) {
      CHECK((t0.at(i) == 0.0) == (t1.at(i) == 0.0));
      if (t1.at(i) != 0.0) values.insert(static_cast<float>(t1.at(i)));
      err += std::pow(t1.at(i) - t0.at(i), 2);
      energy += std::pow(t0.at(i), 2);
    }
    CHECK(values.size() <= 8);
    CHECK(values.size() >= 6);
    CHECK(std::sqrt(err / energy) < 0.15);  // 8 levels over a uniform distribution
  }
  // Running it again changes nothing: the layers already have <= 8 values.
  const std::string once = serialized(m);
  CHECK_FALSE(runPass(m, "weight_share", {{"bits", 3}, {"min_params", 0}}).changed);
  CHECK(serialized(m) == once);
}

TEST_CASE("weight_share recover lsq re-fits the shared values: same clusters, smaller output error", "[weight_share][lsq]") {
  const Model fp = gemmModel(48, 16, 1);
  TempDir d;
  const Tensor X = randomFloat({256, 48}, 3, -1.0f, 2.0f);
  const DataSpec calib = npyData(d / "x.npy", X, 64);
  auto share = [&](const char* recover) {
    Model m = fp;
    PassContext ctx;
    ctx.calib = &calib;
    ctx.reference = &fp;
    auto r = runPass(m, "weight_share", {{"bits", 2}, {"min_params", 0}, {"recover", recover}}, ctx);
    return std::make_pair(m, r);
  };
  auto [km, rk] = share("none");
  auto [ls, rl] = share("lsq");
  CHECK(rl.stats["layers_refitted"] == 1);
  const Tensor& wk = km.graph.initializers.at(km.graph.nodes[0].inputs[1]);
  const Tensor& wl = ls.graph.initializers.at(ls.graph.nodes[0].inputs[1]);
  // Same partition: weights equal under k-means are equal after the re-fit, and at most 4 values.
  std::set<float> values;
  for (int64_t i = 0; i < wk.numel(); ++i) {
    values.insert(static_cast<float>(wl.at(i)));
    for (int64_t j = i + 1; j < std::min<int64_t>(wk.numel(), i + 40); ++j)
      CHECK((wk.at(i) == wk.at(j)) == (wl.at(i) == wl.at(j)));
  }
  CHECK(values.size() <= 4);
  const Tensor y0 = engine::Session(fp).runOrdered({{"x", X}})[0];
  auto err = [&](const Model& m) { return squaredError(m, "x", X, y0); };
  INFO("k-means " << err(km) << " lsq " << err(ls));
  CHECK(err(ls) < 0.85 * err(km));  // measured 0.78
}

TEST_CASE("weight_share names the layers it leaves alone: not finite, float16, constant first operand, shared with an excluded layer",
          "[weight_share]") {
  SECTION("one inf or NaN weight: the layer stays as it was (it used to become all inf or all NaN)") {
    for (const float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
      Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 30] x) => (float[N, 30] y) {
  h = MatMul (x, w)
  y = MatMul (h, v)
})");
      addConst(m, "w", {30, 30}, 1);
      addConst(m, "v", {30, 30}, 2);
      m.graph.initializers.find("w")->data<float>()[17] = bad;
      const Tensor w_before = m.graph.initializers.at("w").clone();
      auto r = runPass(m, "weight_share", {{"bits", 2}, {"min_params", 0}});
      CHECK(m.graph.initializers.at("w").bitEqual(w_before));
      CHECK(notesWith(r.notes, "left alone (1 of its weights are not finite)") == 1);
      const Tensor& w = m.graph.initializers.at("w");
      int64_t finite = 0;
      for (int64_t i = 0; i < w.numel(); ++i) finite += std::isfinite(w.data<float>()[i]);
      CHECK(finite == 899);
      std::set<float> vals(m.graph.initializers.at("v").data<float>(), m.graph.initializers.at("v").data<float>() + 900);
      CHECK(vals.size() <= 4);  // the other layer is shared as usual
      CHECK(r.stats["layers_shared"] == 1);
    }
  }
  SECTION("float16 weights and a constant first operand are named, not skipped without a word") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[30, 30] x) => (float[30, 30] y) {
  h = MatMul (c, x)
  y = MatMul (h, v)
})");
    addConst(m, "c", {30, 30}, 3);
    Tensor half(DType::Float16, {30, 30});
    std::memset(half.raw(), 0, half.nbytes());
    m.graph.initializers.set("v", half);
    PassContext ctx;
    auto p = passes::builtinPasses().create("weight_share");
    p->configure({{"bits", 2}, {"min_params", 0}}, "weight_share");
    auto r = p->run(m, ctx);
    CHECK(notesWith(r.notes, "left alone (its weights are float16; convert the model to float32 first)") == 1);
    CHECK(notesWith(r.notes, "left alone (its constant operand is the first input") == 1);
    CHECK_FALSE(r.changed);
  }
  SECTION("a weight two layers read stays as it is when one of them is excluded") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 30] x) => (float[N, 30] y) {
  h = MatMul (x, w)
  y = MatMul (h, w)
})");
    addConst(m, "w", {30, 30}, 4);
    m.graph.nodes[1].name = "second";
    const std::string before = serialized(m);
    auto r = runPass(m, "weight_share", {{"bits", 2}, {"min_params", 0}, {"exclude", {"second"}}});
    CHECK(serialized(m) == before);
    CHECK(notesWith(r.notes, "are shared with MatMul 'second', which include/exclude leaves alone") == 1);
  }
}
