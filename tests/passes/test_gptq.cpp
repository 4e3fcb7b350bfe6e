// GPTQ weight rounding: the rounding itself against errors computed here, and quantize_static's
// weight_rounding option on small graphs.
#include <catch2/catch.hpp>

#include <cmath>

#include "lwc/dataset.h"
#include "lwc/engine.h"
#include "lwc/graph_edit.h"
#include "lwc/metrics.h"
#include "lwc/model_io.h"
#include "lwc/npy.h"
#include "passes/gptq.h"
#include "passes/quantize_static.h"
#include "support/engine_util.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;
using nlohmann::json;

namespace {

// A Gemm (transB) layer W [out, K] with bias, and input rows X [rows, K] whose features are
// correlated (each is a mix of a few shared sources plus its own noise), as real activations are.
struct Layer {
  int64_t out = 6, K = 24, rows = 600;
  std::vector<double> X, W, b;
  Layer() {
    const Tensor z = randomFloat({rows, 4}, 7), own = randomFloat({rows, K}, 8), mix = randomFloat({4, K}, 9);
    X.resize(static_cast<size_t>(rows * K));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < K; ++k) {
        double v = 0.2 * own.data<float>()[r * K + k];
        for (int64_t j = 0; j < 4; ++j) v += z.data<float>()[r * 4 + j] * mix.data<float>()[j * K + k];
        X[static_cast<size_t>(r * K + k)] = float(v);
      }
    const Tensor w = randomFloat({out, K}, 10, -0.5f, 0.5f), bb = randomFloat({out}, 11, -0.1f, 0.1f);
    W.assign(w.data<float>(), w.data<float>() + w.numel());
    b.assign(bb.data<float>(), bb.data<float>() + bb.numel());
  }
  Tensor weights() const {
    Tensor t(DType::Float32, {out, K});
    for (int64_t i = 0; i < out * K; ++i) t.data<float>()[i] = float(W[static_cast<size_t>(i)]);
    return t;
  }
  std::vector<float> bias() const { return {b.begin(), b.end()}; }
  passes::LayerGram gram() const {
    passes::LayerGram g;
    g.form.kind = passes::LayerForm::Kind::Gemm;
    g.form.trans = true;
    g.form.K = K;
    g.form.out = g.form.ocg = out;
    g.form.bias = true;
    g.form.wshape = {out, K};
    const int64_t Kb = K + 1;
    g.G.assign(1, std::vector<double>(static_cast<size_t>(Kb * Kb), 0.0));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < Kb; ++i)
        for (int64_t j = 0; j < Kb; ++j) {
          const double xi = i == K ? 1.0 : X[static_cast<size_t>(r * K + i)], xj = j == K ? 1.0 : X[static_cast<size_t>(r * K + j)];
          g.G[0][static_cast<size_t>(i * Kb + j)] += xi * xj;
        }
    g.rows = rows;
    return g;
  }
  // Σ_rows (x·w_o + b_o − x·ŵ_o − b̂_o)² for channel o, computed on the rows themselves.
  double error(int64_t o, const int8_t* q, float s, double bias_q) const {
    double e = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double d = b[static_cast<size_t>(o)] - bias_q;
      for (int64_t k = 0; k < K; ++k)
        d += X[static_cast<size_t>(r * K + k)] * (W[static_cast<size_t>(o * K + k)] - double(q[o * K + k]) * s);
      e += d * d;
    }
    return e;
  }
};

Tensor channelScales(const Tensor& w, float qmax) {
  const int64_t out = w.dim(0), K = w.dim(1);
  Tensor s(DType::Float32, {out});
  for (int64_t o = 0; o < out; ++o) {
    float m = 0;
    for (int64_t k = 0; k < K; ++k) m = std::max(m, std::fabs(w.data<float>()[o * K + k]));
    s.data<float>()[o] = m / qmax;
  }
  return s;
}

// Round-to-nearest integers of a [out, K] weight at per-channel scales s (max|w| maps to qmax, so
// no clamp is needed).
Tensor nearestInts(const Tensor& w, const Tensor& s) {
  const int64_t K = w.dim(1);
  Tensor q(DType::Int8, w.shape());
  for (int64_t i = 0; i < w.numel(); ++i)
    q.data<int8_t>()[i] = static_cast<int8_t>(std::nearbyint(w.data<float>()[i] / s.data<float>()[i / K]));
  return q;
}

}  // namespace

TEST_CASE("gptqRound: lower output error than round-to-nearest on correlated inputs, never worse per channel", "[gptq]") {
  const Layer L;
  const Tensor W = L.weights();
  for (const float qmax : {127.0f, 63.0f}) {
    INFO("qmax " << qmax);
    const Tensor s = channelScales(W, qmax);
    const Tensor rtn = nearestInts(W, s);
    const auto r = passes::gptqRound(L.gram(), W, rtn, L.bias(), s, qmax);
    REQUIRE(r.q.shape() == W.shape());
    REQUIRE(r.bias.size() == 6u);
    double near_total = 0, gptq_total = 0;
    for (int64_t o = 0; o < L.out; ++o) {
      const float so = s.data<float>()[o];
      const double en = L.error(o, rtn.data<int8_t>(), so, L.b[static_cast<size_t>(o)]);
      const double eg = L.error(o, r.q.data<int8_t>(), so, r.bias[static_cast<size_t>(o)]);
      CHECK(eg <= en * (1 + 1e-9));
      near_total += en;
      gptq_total += eg;
      for (int64_t k = 0; k < L.K; ++k) CHECK(std::abs(int(r.q.data<int8_t>()[o * L.K + k])) <= int(qmax));
    }
    INFO("output error: nearest " << near_total << ", gptq " << gptq_total);
    CHECK(gptq_total < 0.5 * near_total);
    // The errors it reports are the ones measured on the rows.
    CHECK(r.error_nearest == Approx(near_total).epsilon(1e-6));
    CHECK(r.error == Approx(gptq_total).epsilon(1e-6));
    CHECK(r.channels == 6);
  }
}

namespace {
// GPTQ as the paper writes it, independently of gptq.cpp: explicit H⁻¹ by Gauss-Jordan, its
// Cholesky factor by the textbook loop, the same column order (act order, bias last), no
// per-channel fallback. Returns the integer weights (row-major [out, K]) and the moved biases.
std::pair<std::vector<int>, std::vector<double>> referenceGptq(const passes::LayerGram& g, const std::vector<double>& W,
                                                               const std::vector<double>& b, const Tensor& s, double qmax) {
  const int64_t K = g.form.K, out = g.form.out, n = K + 1;
  const auto& G = g.G[0];
  std::vector<int64_t> perm(static_cast<size_t>(K));
  for (int64_t k = 0; k < K; ++k) perm[static_cast<size_t>(k)] = k;
  std::stable_sort(perm.begin(), perm.end(), [&](int64_t x, int64_t y) { return G[static_cast<size_t>(x * n + x)] > G[static_cast<size_t>(y * n + y)]; });
  perm.push_back(K);
  double mean = 0;
  for (int64_t k = 0; k < K; ++k) mean += G[static_cast<size_t>(k * n + k)];
  const double lambda = 0.01 * mean / double(K);
  std::vector<std::vector<double>> H(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(2 * n), 0.0));
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) H[static_cast<size_t>(i)][static_cast<size_t>(j)] = G[static_cast<size_t>(perm[static_cast<size_t>(i)] * n + perm[static_cast<size_t>(j)])];
    H[static_cast<size_t>(i)][static_cast<size_t>(i)] += lambda;
    H[static_cast<size_t>(i)][static_cast<size_t>(n + i)] = 1.0;
  }
  for (int64_t c = 0; c < n; ++c) {  // Gauss-Jordan with partial pivoting
    int64_t piv = c;
    for (int64_t r = c + 1; r < n; ++r)
      if (std::fabs(H[static_cast<size_t>(r)][static_cast<size_t>(c)]) > std::fabs(H[static_cast<size_t>(piv)][static_cast<size_t>(c)])) piv = r;
    std::swap(H[static_cast<size_t>(c)], H[static_cast<size_t>(piv)]);
    const double d = H[static_cast<size_t>(c)][static_cast<size_t>(c)];
    for (auto& v : H[static_cast<size_t>(c)]) v /= d;
    for (int64_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = H[static_cast<size_t>(r)][static_cast<size_t>(c)];
      for (int64_t j = 0; j < 2 * n; ++j) H[static_cast<size_t>(r)][static_cast<size_t>(j)] -= f * H[static_cast<size_t>(c)][static_cast<size_t>(j)];
    }
  }
  // Upper U with Hinv = Uᵀ U: U = Lᵀ for the lower Cholesky factor L of Hinv.
  std::vector<std::vector<double>> L(static_cast<size_t>(n), std::vector<double>(static_cast<size_t>(n), 0.0));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double v = H[static_cast<size_t>(i)][static_cast<size_t>(n + j)];
      for (int64_t k = 0; k < j; ++k) v -= L[static_cast<size_t>(i)][static_cast<size_t>(k)] * L[static_cast<size_t>(j)][static_cast<size_t>(k)];
      L[static_cast<size_t>(i)][static_cast<size_t>(j)] = i == j ? std::sqrt(v) : v / L[static_cast<size_t>(j)][static_cast<size_t>(j)];
    }
  std::vector<int> q(static_cast<size_t>(out * K));
  std::vector<double> bias(b);
  for (int64_t o = 0; o < out; ++o) {
    const double so = s.data<float>()[o];
    std::vector<double> v(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = perm[static_cast<size_t>(i)] == K ? b[static_cast<size_t>(o)] : W[static_cast<size_t>(o * K + perm[static_cast<size_t>(i)])];
    for (int64_t i = 0; i < K; ++i) {
      const double qi = std::clamp(std::nearbyint(v[static_cast<size_t>(i)] / so), -qmax, qmax);
      q[static_cast<size_t>(o * K + perm[static_cast<size_t>(i)])] = int(qi);
      const double e = (v[static_cast<size_t>(i)] - qi * so) / L[static_cast<size_t>(i)][static_cast<size_t>(i)];
      for (int64_t j = i + 1; j < n; ++j) v[static_cast<size_t>(j)] -= e * L[static_cast<size_t>(j)][static_cast<size_t>(i)];
    }
    bias[static_cast<size_t>(o)] = v[static_cast<size_t>(n - 1)];
  }
  return {q, bias};
}
}  // namespace

TEST_CASE("gptqRound keeps zero weights zero (pruned before), and still lowers the error", "[gptq]") {
  // Rounding the compensated value of a pruned weight filled it in again: lenet300 pruned to 90 %
  // came out 86.7 % sparse, and 2:4 groups got a third non-zero.
  Layer L;
  for (size_t i = 0; i < L.W.size(); ++i)
    if (i % 2 == 1 || i % 3 == 0) L.W[i] = 0.0;  // two thirds pruned
  const Tensor W = L.weights();
  const Tensor s = channelScales(W, 127.0f);
  const Tensor rtn = nearestInts(W, s);
  const auto r = passes::gptqRound(L.gram(), W, rtn, L.bias(), s, 127.0f);
  int64_t filled = 0, zeros = 0;
  for (int64_t i = 0; i < W.numel(); ++i)
    if (W.data<float>()[i] == 0.0f) {
      ++zeros;
      filled += r.q.data<int8_t>()[i] != 0;
    }
  REQUIRE(zeros > W.numel() / 2);
  CHECK(filled == 0);
  double near_total = 0, gptq_total = 0;
  for (int64_t o = 0; o < L.out; ++o) {
    near_total += L.error(o, rtn.data<int8_t>(), s.data<float>()[o], L.b[static_cast<size_t>(o)]);
    gptq_total += L.error(o, r.q.data<int8_t>(), s.data<float>()[o], r.bias[static_cast<size_t>(o)]);
  }
  CHECK(gptq_total < near_total);
}

TEST_CASE("gptqRound matches a textbook GPTQ (explicit inverse, Cholesky of the inverse)", "[gptq]") {
  // Where GPTQ beats round-to-nearest on every channel (checked), the result must be the
  // reference's exactly: same integers, biases to 1e-9.
  const Layer L;
  const Tensor W = L.weights();
  for (const float qmax : {127.0f, 63.0f}) {
    INFO("qmax " << qmax);
    const Tensor s = channelScales(W, qmax);
    const passes::LayerGram g = L.gram();
    const auto r = passes::gptqRound(g, W, nearestInts(W, s), L.bias(), s, qmax);
    REQUIRE(r.channels_nearest == 0);
    std::vector<double> w64(W.data<float>(), W.data<float>() + W.numel());
    const auto [q, bias] = referenceGptq(g, w64, L.b, s, qmax);
    int differ = 0;
    for (int64_t i = 0; i < W.numel(); ++i) differ += int(r.q.data<int8_t>()[i]) != q[static_cast<size_t>(i)];
    CHECK(differ == 0);
    for (int64_t o = 0; o < L.out; ++o) CHECK(r.bias[static_cast<size_t>(o)] == Approx(bias[static_cast<size_t>(o)]).epsilon(1e-6).margin(1e-9));
  }
}

TEST_CASE("gptqRound: with uncorrelated inputs (diagonal Xᵀ X) it is round-to-nearest", "[gptq]") {
  // Nothing to compensate through: the inverse Hessian is diagonal, so no weight moves.
  const Layer L;
  const Tensor W = L.weights();
  const Tensor s = channelScales(W, 127.0f);
  passes::LayerGram g = L.gram();
  const int64_t Kb = L.K + 1;
  for (int64_t i = 0; i < Kb; ++i)
    for (int64_t j = 0; j < Kb; ++j)
      if (i != j) g.G[0][static_cast<size_t>(i * Kb + j)] = 0.0;
  const Tensor rtn = nearestInts(W, s);
  const auto r = passes::gptqRound(g, W, rtn, L.bias(), s, 127.0f);
  CHECK(r.q.bitEqual(rtn));
  for (int64_t o = 0; o < L.out; ++o) CHECK(r.bias[static_cast<size_t>(o)] == L.bias()[static_cast<size_t>(o)]);
  CHECK(r.error == Approx(r.error_nearest));
}

namespace {
// Conv -> Relu -> depthwise Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm.
Model dwCnn() {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 12, 12] x) => (float[N, 5] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <pads=[1,1,1,1], group=8> (r1, w2, b2)
  r2 = Relu (c2)
  p = GlobalAveragePool (r2)
  f = Flatten (p)
  y = Gemm <transB=1> (f, wf, bf)
})");
  addConst(m, "w1", {8, 3, 3, 3}, 1, -0.5f, 0.5f);
  addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
  addConst(m, "w2", {8, 1, 3, 3}, 3, -0.5f, 0.5f);
  addConst(m, "b2", {8}, 4, -0.1f, 0.1f);
  addConst(m, "wf", {5, 8}, 5);
  addConst(m, "bf", {5}, 6);
  return m;
}

// Inputs whose pixels are correlated (smooth images): a coarse random field, upsampled, plus noise.
Tensor smoothImages(int64_t n, uint32_t seed) {
  const Tensor coarse = randomFloat({n, 3, 4, 4}, seed, 0.0f, 1.0f), noise = randomFloat({n, 3, 12, 12}, seed + 1, 0.0f, 0.1f);
  Tensor x(DType::Float32, {n, 3, 12, 12});
  for (int64_t i = 0; i < n * 3; ++i)
    for (int64_t h = 0; h < 12; ++h)
      for (int64_t w = 0; w < 12; ++w)
        x.data<float>()[(i * 12 + h) * 12 + w] = coarse.data<float>()[(i * 4 + h / 3) * 4 + w / 3] + noise.data<float>()[(i * 12 + h) * 12 + w];
  return x;
}
}  // namespace

TEST_CASE("quantize_static weight_rounding gptq: output closer to FP32, same scales, deterministic", "[gptq][quantize]") {
  TempDir dir;
  DataSpec spec;
  writeNpy(dir / "x.npy", smoothImages(96, 42));
  spec.options.path = dir / "x.npy";
  spec.batch = 32;
  PassContext ctx;
  ctx.calib = &spec;
  const Tensor held_out = smoothImages(64, 99);
  auto sqnr = [&](const Model& a, const Model& b) {
    engine::Session sa(a), sb(b);
    ErrorMeter e;
    e.add(sa.runOrdered({{"x", held_out}})[0], sb.runOrdered({{"x", held_out}})[0]);
    return e.sqnrDb();
  };
  for (const bool reduce_range : {false, true}) {
    INFO("reduce_range " << reduce_range);
    Model fp = dwCnn(), nearest = dwCnn(), gptq = dwCnn(), again = dwCnn();
    passes::QuantizeStatic p1, p2;
    p1.configure({{"reduce_range", reduce_range}}, "q");
    p2.configure({{"reduce_range", reduce_range}, {"weight_rounding", "gptq"}}, "q");
    p1.run(nearest, ctx);
    std::vector<std::string> lines;  // one progress line per layer GPTQ rounds
    PassContext with_progress = ctx;
    with_progress.progress = [&](const std::string& s) { lines.push_back(s); };
    const PassResult r = p2.run(gptq, with_progress);
    p2.run(again, ctx);
    validateGraph(gptq.graph);
    std::vector<std::string> gptq_lines;
    for (const auto& l : lines)
      if (l.rfind("gptq: layer ", 0) == 0) gptq_lines.push_back(l);
    REQUIRE(gptq_lines.size() == 3);
    CHECK(gptq_lines[0].find("gptq: layer 1/3 ") == 0);
    CHECK(gptq_lines[2].find("gptq: layer 3/3 Gemm") == 0);
    CHECK(r.stats.at("layers_gptq") == 3);  // the Conv, the depthwise Conv (8 groups) and the Gemm
    bool noted = false;
    for (const auto& n : r.notes) noted = noted || n.find("weight_rounding gptq: 3 of 3 layers") != std::string::npos;
    CHECK(noted);
    const double sn = sqnr(fp, nearest), sg = sqnr(fp, gptq);
    INFO("output SQNR on held-out inputs: nearest " << sn << " dB, gptq " << sg << " dB");
    CHECK(sg > sn + (reduce_range ? 1.0 : 0.3));
    // Same graph and scales; only the int8 weights and the int32 biases differ.
    REQUIRE(nearest.graph.nodes.size() == gptq.graph.nodes.size());
    int int8_changed = 0, int32_changed = 0;
    for (const auto& [name, t] : nearest.graph.initializers.items()) {
      const Tensor& u = gptq.graph.initializers.at(name);
      if (t.dtype() == DType::Int8 && t.numel() > 1) int8_changed += !t.bitEqual(u);
      else if (t.dtype() == DType::Int32) int32_changed += !t.bitEqual(u);
      else CHECK(t.bitEqual(u));
    }
    CHECK(int8_changed == 3);
    CHECK(int32_changed == 3);
    CHECK(serialized(gptq) == serialized(again));
  }
  SECTION("needs calibration data, also with saved statistics") {
    Model a = dwCnn(), b = dwCnn();
    passes::QuantizeStatic save;
    save.configure({{"save_calib", (dir / "s.json").string()}}, "q");
    save.run(a, ctx);
    passes::QuantizeStatic p;
    p.configure({{"load_calib", {(dir / "s.json").string()}}, {"weight_rounding", "gptq"}}, "q");
    CHECK(p.needsCalibration(p.options()));
    PassContext none;
    const std::string before = serialized(b);
    try {
      p.run(b, none);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK_THAT(std::string(e.what()), Contains("weight_rounding gptq needs calibration data"));
    }
    CHECK(serialized(b) == before);
  }
}

TEST_CASE("quantize_static weight_rounding gptq: every weight layout, 3-D MatMul inputs, shared weights, any thread count",
          "[gptq][quantize]") {
  // Grouped Conv with 2 input channels per group, Gemm without transB ([K, N]), MatMul ([K, N]).
  const std::string cnn = R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 12, 12] x) => (float[N, 5] y) {
  c1 = Conv <pads=[1,1,1,1], group=2> (x, w1, b1)
  r1 = Relu (c1)
  p = GlobalAveragePool (r1)
  f = Flatten (p)
  h = Gemm (f, wg, bg)
  y = MatMul (h, wm)
})";
  // Sequence model: MatMuls on [N, 6, 8]; the last two share their weights.
  const std::string seq = R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 6, 8] x) => (float[N, 6, 8] y) {
  m1 = MatMul (x, w1)
  r1 = Relu (m1)
  m2 = MatMul (r1, ws)
  r2 = Relu (m2)
  y = MatMul (r2, ws)
})";
  auto build = [&](bool is_cnn) {
    Model m = parseGraph(is_cnn ? cnn : seq);
    if (is_cnn) {
      addConst(m, "w1", {8, 2, 3, 3}, 1, -0.5f, 0.5f);
      addConst(m, "b1", {8}, 2, -0.1f, 0.1f);
      addConst(m, "wg", {8, 6}, 3, -0.5f, 0.5f);
      addConst(m, "bg", {6}, 4, -0.1f, 0.1f);
      addConst(m, "wm", {6, 5}, 5, -0.5f, 0.5f);
    } else {
      addConst(m, "w1", {8, 8}, 6, -0.5f, 0.5f);
      addConst(m, "ws", {8, 8}, 7, -0.5f, 0.5f);
    }
    return m;
  };
  TempDir dir;
  // Correlated inputs: each sample is a few shared random patterns mixed.
  auto mixed = [](Shape shape, uint32_t seed) {
    const int64_t n = shape[0], per = numelOf(shape) / n;
    const Tensor basis = randomFloat({3, per}, 77, 0.0f, 1.0f), coef = randomFloat({n, 3}, seed, 0.0f, 1.0f),
                 noise = randomFloat(shape, seed + 1, 0.0f, 0.05f);
    Tensor x(DType::Float32, shape);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t e = 0; e < per; ++e) {
        float v = noise.data<float>()[i * per + e];
        for (int64_t k = 0; k < 3; ++k) v += coef.data<float>()[i * 3 + k] * basis.data<float>()[k * per + e];
        x.data<float>()[i * per + e] = v;
      }
    return x;
  };
  for (const bool is_cnn : {true, false}) {
    INFO((is_cnn ? "grouped Conv + Gemm + MatMul" : "MatMuls on 3-D inputs, shared weights"));
    const Shape in = is_cnn ? Shape{96, 4, 12, 12} : Shape{96, 6, 8};
    const std::string file = is_cnn ? "cnn.npy" : "seq.npy";
    writeNpy(dir / file, mixed(in, 42));
    DataSpec spec;
    spec.options.path = dir / file;
    spec.batch = 32;
    PassContext ctx;
    ctx.calib = &spec;
    Model fp = build(is_cnn), nearest = build(is_cnn), one = build(is_cnn), three = build(is_cnn);
    passes::QuantizeStatic p1, p2;
    p1.configure({{"reduce_range", true}}, "q");
    p2.configure({{"reduce_range", true}, {"weight_rounding", "gptq"}}, "q");
    p1.run(nearest, ctx);
    ctx.threads = 1;
    const PassResult r = p2.run(one, ctx);
    ctx.threads = 3;
    p2.run(three, ctx);
    validateGraph(one.graph);
    CHECK(serialized(one) == serialized(three));  // the same bytes on 1 and 3 threads
    Shape held = in;
    held[0] = 64;
    const Tensor x = mixed(held, 99);
    engine::Session sf(fp), sn(nearest), sg(one);
    ErrorMeter en, eg;
    const Tensor yf = sf.runOrdered({{"x", x}})[0];
    en.add(yf, sn.runOrdered({{"x", x}})[0]);
    eg.add(yf, sg.runOrdered({{"x", x}})[0]);
    INFO("held-out output SQNR: nearest " << en.sqnrDb() << " dB, gptq " << eg.sqnrDb() << " dB");
    if (is_cnn) {
      CHECK(r.stats.at("layers_gptq") == 3);
      CHECK(eg.sqnrDb() > en.sqnrDb() + 0.5);
    } else {
      CHECK(r.stats.at("layers_gptq") == 1);  // m1; m2 and y share ws and keep round-to-nearest
      int shared = 0;
      for (const auto& n : r.notes) shared += n.find("nearest rounding (its weights are shared with another layer)") != std::string::npos;
      CHECK(shared == 2);
      CHECK(eg.sqnrDb() > en.sqnrDb());
      // The shared weights are exactly round-to-nearest's.
      for (const auto& [name, t] : nearest.graph.initializers.items())
        if (name.rfind("ws", 0) == 0) CHECK(t.bitEqual(one.graph.initializers.at(name)));
    }
  }
}

TEST_CASE("quantize_static weight_rounding gptq moves the float Add constant after a MatMul", "[gptq][quantize]") {
  // Linear layers on 3-D inputs export as MatMul + Add(constant): that constant is the bias GPTQ's
  // compensation reaches, as a Conv's or Gemm's own bias is.
  auto model = [] { return twoLinearLayers(36, 12, 8, 5, /*first_bias_2d=*/true); };
  // Correlated along the last axis: rows of smooth images.
  auto rows = [](int64_t n, uint32_t seed) { return smoothImages(n, seed).reshaped({n, 36, 12}); };
  TempDir dir;
  writeNpy(dir / "x.npy", rows(96, 42));
  DataSpec spec;
  spec.options.path = dir / "x.npy";
  spec.batch = 32;
  PassContext ctx;
  ctx.calib = &spec;
  Model fp = model(), nearest = model(), gptq = model();
  passes::QuantizeStatic p1, p2;
  p1.configure({{"reduce_range", true}}, "q");
  p2.configure({{"reduce_range", true}, {"weight_rounding", "gptq"}}, "q");
  p1.run(nearest, ctx);
  const PassResult r = p2.run(gptq, ctx);
  validateGraph(gptq.graph);
  CHECK(r.stats.at("layers_gptq") == 2);
  for (const std::string c : {"c", "c2"}) {
    INFO(c);
    CHECK_FALSE(gptq.graph.initializers.at(c).bitEqual(nearest.graph.initializers.at(c)));
    CHECK(gptq.graph.initializers.at(c).shape() == fp.graph.initializers.at(c).shape());
  }
  // Held-out output SQNR: GPTQ beats round-to-nearest, and with the original constants put back
  // (GPTQ's weights without their moved bias) it loses part of that.
  const Tensor x = rows(64, 99);
  Model unmoved = gptq;
  for (const std::string c : {"c", "c2"}) unmoved.graph.initializers.set(c, fp.graph.initializers.at(c));
  engine::Session sf(fp), sn(nearest), sg(gptq), su(unmoved);
  ErrorMeter en, eg, eu;
  const Tensor yf = sf.runOrdered({{"x", x}})[0];
  en.add(yf, sn.runOrdered({{"x", x}})[0]);
  eg.add(yf, sg.runOrdered({{"x", x}})[0]);
  eu.add(yf, su.runOrdered({{"x", x}})[0]);
  INFO("held-out output SQNR: nearest " << en.sqnrDb() << " dB, gptq " << eg.sqnrDb() << " dB, gptq without the moved constants "
                                        << eu.sqnrDb() << " dB");
  CHECK(eg.sqnrDb() > en.sqnrDb());
  CHECK(eg.sqnrDb() > eu.sqnrDb());
}
