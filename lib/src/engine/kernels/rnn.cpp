// Recurrent layers: RNN, GRU and LSTM (ONNX opsets 1-22): a reference kernel in double and a
// float32 kernel on oneDNN's sgemm.
//
// Each direction: the input projections of every time step (X W^T + Wb + Rb) first, as one
// product, then the recurrence step by step, all samples together (H R^T per step), the gate
// arithmetic shared by both kernels (runCells). The reference uses plain loops in double; float32
// uses sgemm in fixed blocks (the same bits on any thread count), vectorised gates with its own exp
// (Activation::expFast) and, for a bidirectional layer, one thread per direction. Layout 0 is
// [seq, batch, ...], layout 1 (opset 14) [batch, seq, ...]. sequence_lens: a sample of length L runs
// L steps (the reverse direction from L - 1 down to 0), its Y is zero past L and its Y_h / Y_c are
// the states after its last step (the initial ones for L = 0), as ONNX Runtime computes them.
// Activations are the spec's list (Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu,
// ScaledTanh, HardSigmoid, Elu, Softsign, Softplus), alpha and beta consumed in order by the
// functions that take them, as ONNX Runtime reads them. `clip` is refused: runtimes differ on which
// activation inputs it bounds.
#include <algorithm>
#include <bit>
#include <cstdint>
#include <exception>
#include <cctype>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <omp.h>

#include "engine/kernel.h"
#include "engine/kernels/common.h"
#include "engine/kernels/dnnl_common.h"

namespace lwc::engine {

namespace {

enum class Cell { rnn, gru, lstm };

struct Activation {
  enum Kind { relu, tanh_, sigmoid, affine, leaky_relu, thresholded_relu, scaled_tanh, hard_sigmoid, elu, softsign, softplus };
  Kind kind = tanh_;
  double alpha = 0, beta = 0;

  // v[0, n) = f(v) in T: float32 for the fast kernel, double for the reference. One switch per
  // array, so that the float32 loops vectorise (expFast below instead of libm's expf and tanhf,
  // which took three quarters of a float32 LSTM's time).
  template <typename T>
  LWC_AVX2_CLONE void apply(T* __restrict v, int64_t n) const {
    const T a = static_cast<T>(alpha), b = static_cast<T>(beta);
    switch (kind) {
      case relu:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = v[i] > 0 ? v[i] : T(0);
        return;
      case tanh_:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = tanhOf(v[i]);
        return;
      case sigmoid:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = T(1) / (T(1) + expOf(-v[i]));
        return;
      case affine:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = a * v[i] + b;
        return;
      case leaky_relu:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = v[i] >= 0 ? v[i] : a * v[i];
        return;
      case thresholded_relu:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = v[i] > a ? v[i] : T(0);
        return;
      case scaled_tanh:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = a * tanhOf(b * v[i]);
        return;
      case hard_sigmoid:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = std::clamp(a * v[i] + b, T(0), T(1));
        return;
      case elu:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = v[i] >= 0 ? v[i] : a * (expOf(v[i]) - T(1));
        return;
      case softsign:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = v[i] / (T(1) + std::fabs(v[i]));
        return;
      case softplus:
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) v[i] = std::log1p(std::exp(-std::fabs(v[i]))) + std::max(v[i], T(0));
        return;
    }
  }

  // exp(x) in float32 without a library call: 2^m * p(r), m = round(x / ln 2), r = x - m ln 2
  // (|r| <= ln 2 / 2, ln 2 in two parts), p the degree-6 Taylor polynomial (truncation 1.2e-7
  // relative). x is held to [-87, 88] (e^-87 ~ 1.6e-38 is still a normal float); NaN stays NaN.
  // The exponent is built in unsigned arithmetic from the bits of x / ln 2 + 1.5 * 2^23, whose low
  // mantissa bits hold m.
  static float expFast(float x) {
    x = x < -87.0f ? -87.0f : x;  // values, not std::min/max's references: the loops stay branch-free
    x = x > 88.0f ? 88.0f : x;
    const float shifted = x * 1.44269504089f + 12582912.0f;
    const float m = shifted - 12582912.0f;
    const float r = (x - m * 0.693145751953125f) - m * 1.428606765330187e-06f;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const uint32_t e = (std::bit_cast<uint32_t>(shifted) - 0x4B400000u + 127u) << 23;
    return p * std::bit_cast<float>(e);
  }
  static float expOf(float x) { return expFast(x); }
  static double expOf(double x) { return std::exp(x); }
  // tanh from one exp; its error near 0 is absolute (about 1e-7), not relative.
  static float tanhOf(float x) {
    const float t = expFast(-2.0f * std::fabs(x));
    return std::copysign((1.0f - t) / (1.0f + t), x);
  }
  static double tanhOf(double x) { return std::tanh(x); }
};

// The activation functions of every direction, from the node's attributes (defaults per cell).
std::vector<Activation> activations(const KernelContext& ctx, Cell cell, int64_t dirs) {
  const size_t per = cell == Cell::rnn ? 1 : cell == Cell::gru ? 2 : 3;
  std::vector<std::string> names;
  if (const auto* a = ctx.node.attr("activations")) names.assign(a->strings().begin(), a->strings().end());
  if (names.empty()) {
    const std::vector<std::string> d = cell == Cell::rnn   ? std::vector<std::string>{"Tanh"}
                                       : cell == Cell::gru ? std::vector<std::string>{"Sigmoid", "Tanh"}
                                                           : std::vector<std::string>{"Sigmoid", "Tanh", "Tanh"};
    for (int64_t k = 0; k < dirs; ++k) names.insert(names.end(), d.begin(), d.end());
  }
  if (names.size() != per * static_cast<size_t>(dirs))
    ctx.error("activations lists ", names.size(), " functions; expected ", per * static_cast<size_t>(dirs), " (", per,
              " per direction, ", dirs, dirs == 1 ? " direction)" : " directions)");
  const std::vector<float> alphas = ctx.node.attrFloats("activation_alpha"), betas = ctx.node.attrFloats("activation_beta");
  size_t ai = 0, bi = 0;
  auto take = [](const std::vector<float>& v, size_t& i, double dflt) { return i < v.size() ? static_cast<double>(v[i++]) : dflt; };
  std::vector<Activation> out;
  for (const auto& raw : names) {
    std::string n;
    for (char c : raw) n += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    // Each function, and its alpha and beta defaults where it takes them.
    struct Known {
      const char* name;
      Activation::Kind kind;
      std::optional<double> alpha, beta;
    };
    static const Known known[] = {{"relu", Activation::relu, {}, {}},
                                  {"tanh", Activation::tanh_, {}, {}},
                                  {"sigmoid", Activation::sigmoid, {}, {}},
                                  {"softsign", Activation::softsign, {}, {}},
                                  {"softplus", Activation::softplus, {}, {}},
                                  {"affine", Activation::affine, 1.0, 0.0},
                                  {"leakyrelu", Activation::leaky_relu, 0.01, {}},
                                  {"thresholdedrelu", Activation::thresholded_relu, 1.0, {}},
                                  {"scaledtanh", Activation::scaled_tanh, 1.0, 1.0},
                                  {"hardsigmoid", Activation::hard_sigmoid, 0.2, 0.5},
                                  {"elu", Activation::elu, 1.0, {}}};
    const auto* k = std::find_if(std::begin(known), std::end(known), [&](const Known& e) { return n == e.name; });
    if (k == std::end(known))
      ctx.error("activation '", raw, "' is not one of the spec's (Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, "
                "ScaledTanh, HardSigmoid, Elu, Softsign, Softplus)");
    Activation f;
    f.kind = k->kind;
    if (k->alpha) f.alpha = take(alphas, ai, *k->alpha);
    if (k->beta) f.beta = take(betas, bi, *k->beta);
    out.push_back(f);
  }
  return out;
}

// Everything a run needs from the node and its inputs, checked.
struct Setup {
  Cell cell;
  DType dt;
  int64_t layout, dirs, seq, batch, in, hid, gates;
  bool bidirectional, reverse_only, linear_before_reset, input_forget;
  std::vector<Activation> acts;
  std::vector<int64_t> lens;
  Shape state_shape;
  // Row of X (and of the input projections) for step t of sample b; offset of Y's (t, d, b) row;
  // offset of a state's (d, b) row.
  int64_t xRow(int64_t t, int64_t b) const { return layout == 0 ? t * batch + b : b * seq + t; }
  int64_t yOffset(int64_t t, int64_t d, int64_t b) const {
    return (layout == 0 ? ((t * dirs + d) * batch + b) : ((b * seq + t) * dirs + d)) * hid;
  }
  int64_t stateOffset(int64_t d, int64_t b) const { return (layout == 0 ? (d * batch + b) : (b * dirs + d)) * hid; }
};

Setup setUp(const KernelContext& ctx, Cell cell) {
  const Node& node = ctx.node;
  const Tensor& x = ctx.in(0);
  Setup u;
  u.cell = cell;
  u.dt = x.dtype();
  if (u.dt != DType::Float32 && u.dt != DType::Float64 && u.dt != DType::Float16)
    ctx.error("input X is ", dtypeName(u.dt), "; this op takes float16, float32 or float64");
  if (x.rank() != 3) ctx.error("input X has shape ", shapeStr(x.shape()), "; expected rank 3");
  u.layout = node.attrInt("layout", 0);
  if (u.layout != 0 && u.layout != 1) ctx.error("layout ", u.layout, " is not 0 or 1");
  if (node.hasAttr("clip"))
    ctx.unsupported("the clip attribute is not supported (runtimes differ on which activation inputs it bounds); "
                    "export the model without it");
  const std::string direction = node.attrString("direction", "forward");
  if (direction != "forward" && direction != "reverse" && direction != "bidirectional")
    ctx.error("direction '", direction, "' is not forward, reverse or bidirectional");
  u.bidirectional = direction == "bidirectional";
  u.reverse_only = direction == "reverse";
  u.dirs = u.bidirectional ? 2 : 1;
  u.seq = x.dim(u.layout == 0 ? 0 : 1);
  u.batch = x.dim(u.layout == 0 ? 1 : 0);
  u.in = x.dim(2);
  u.gates = cell == Cell::rnn ? 1 : cell == Cell::gru ? 3 : 4;
  const Tensor& r = ctx.in(2);
  if (r.rank() != 3)
    ctx.error("input R has shape ", shapeStr(r.shape()), "; expected [num_directions, ", u.gates, " * hidden_size, hidden_size]");
  u.hid = node.attrInt("hidden_size", r.dim(2));
  if (u.hid <= 0) ctx.error("hidden_size is ", u.hid, "; expected a positive number");
  const int64_t gh = u.gates * u.hid;
  u.state_shape = u.layout == 0 ? Shape{u.dirs, u.batch, u.hid} : Shape{u.batch, u.dirs, u.hid};
  const std::pair<size_t, Shape> shapes[] = {{1, {u.dirs, gh, u.in}}, {2, {u.dirs, gh, u.hid}}, {3, {u.dirs, 2 * gh}},
                                             {5, u.state_shape},      {6, u.state_shape},      {7, {u.dirs, 3 * u.hid}}};
  const char* names[] = {"X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"};
  for (const auto& [i, want] : shapes) {
    if (i >= 6 && cell != Cell::lstm) break;
    if (!ctx.has(i)) continue;
    const Tensor& t = ctx.in(i);
    if (t.dtype() != u.dt) ctx.error(names[i], " is ", dtypeName(t.dtype()), " but X is ", dtypeName(u.dt));
    if (t.shape() != want) ctx.error(names[i], " has shape ", shapeStr(t.shape()), ", expected ", shapeStr(want));
  }
  u.lens.assign(static_cast<size_t>(u.batch), u.seq);
  if (ctx.has(4)) {
    const Tensor& sl = ctx.in(4);
    if (sl.dtype() != DType::Int32 && sl.dtype() != DType::Int64)
      ctx.error("sequence_lens is ", dtypeName(sl.dtype()), "; expected int32");
    if (sl.shape() != Shape{u.batch}) ctx.error("sequence_lens has shape ", shapeStr(sl.shape()), ", expected [", u.batch, "]");
    for (int64_t i = 0; i < u.batch; ++i) {
      const int64_t v = sl.dtype() == DType::Int32 ? sl.data<int32_t>()[i] : sl.data<int64_t>()[i];
      if (v < 0 || v > u.seq) ctx.error("sequence_lens[", i, "] is ", v, "; expected 0 to ", u.seq, " (the length of X)");
      u.lens[static_cast<size_t>(i)] = v;
    }
  }
  u.acts = activations(ctx, cell, u.dirs);
  u.linear_before_reset = cell == Cell::gru && node.attrInt("linear_before_reset", 0) != 0;
  u.input_forget = cell == Cell::lstm && node.attrInt("input_forget", 0) != 0;
  return u;
}

// Input i in T (empty for an omitted optional input).
template <typename T>
std::vector<T> valuesOf(const KernelContext& ctx, size_t i) {
  if (!ctx.has(i)) return {};
  const Tensor t = ctx.in(i).dtype() == dtypeOf<T>() ? ctx.in(i) : ctx.in(i).cast(dtypeOf<T>());
  return std::vector<T>(t.data<T>(), t.data<T>() + t.numel());
}

// c [m, n] (row stride ldc) = a [m, k] (stride lda) . b [k, n] (stride ldb) + bias [n] (or none).
template <typename T>
using Gemm = std::function<void(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                                int64_t ldc, const T* bias)>;

// The recurrence in T with products by `gemm`; outputs in the node's element type.
template <typename T>
void runCells(KernelContext& ctx, const Setup& u, const Gemm<T>& gemm) {
  const int64_t hid = u.hid, gh = u.gates * hid, batch = u.batch;
  const std::vector<T> x = valuesOf<T>(ctx, 0), w = valuesOf<T>(ctx, 1), r = valuesOf<T>(ctx, 2), b = valuesOf<T>(ctx, 3),
                       h0 = valuesOf<T>(ctx, 5);
  const std::vector<T> c0 = u.cell == Cell::lstm ? valuesOf<T>(ctx, 6) : std::vector<T>(),
                       p = u.cell == Cell::lstm ? valuesOf<T>(ctx, 7) : std::vector<T>();
  std::vector<T> y(static_cast<size_t>(u.seq * u.dirs * batch * hid), T(0));
  std::vector<T> yh(static_cast<size_t>(u.dirs * batch * hid)), yc(u.cell == Cell::lstm ? yh.size() : 0);
  int64_t longest = 0;
  for (int64_t l : u.lens) longest = std::max(longest, l);
  // The two directions of a bidirectional layer on two threads, each with its products and gates
  // on its own (nested regions run on one thread): a step's work is too small to share, and every
  // shared step cost two thread meetings. Each direction's arithmetic is the same either way.
  const bool split = u.dirs == 2 && omp_get_max_threads() > 1 && u.seq * batch * gh * (u.in + hid) >= (1 << 16);
  auto direction = [&](int64_t d) {
    std::vector<T> xw(static_cast<size_t>(u.seq * batch * gh)), rh(static_cast<size_t>(batch * gh));
    std::vector<T> h(static_cast<size_t>(batch * hid)), c(static_cast<size_t>(batch * hid)), next(h.size()), rhh(h.size()),
        reset(h.size()), gate(static_cast<size_t>(batch * gh));
    const bool reverse = u.reverse_only || d == 1;
    const std::vector<T> wt = transposed(w.data() + d * gh * u.in, {gh, u.in}, {1, 0});  // [in, gh]
    const std::vector<T> rt = transposed(r.data() + d * gh * hid, {gh, hid}, {1, 0});    // [hid, gh]
    // Input projections of every step, with Wb + Rb (GRU's hidden gate: Wb only; its Rb goes with
    // the recurrent product, inside the reset where linear_before_reset).
    std::vector<T> bias(static_cast<size_t>(gh), T(0)), rbh(static_cast<size_t>(hid), T(0));
    if (!b.empty()) {
      const T* wb = b.data() + d * 2 * gh;
      for (int64_t j = 0; j < gh; ++j) bias[static_cast<size_t>(j)] = wb[j] + (u.cell == Cell::gru && j >= 2 * hid ? T(0) : wb[gh + j]);
      if (u.cell == Cell::gru) std::copy_n(wb + gh + 2 * hid, hid, rbh.begin());
    }
    gemm(u.seq * batch, gh, u.in, x.data(), u.in, wt.data(), gh, xw.data(), gh, bias.data());
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t k = 0; k < hid; ++k) {
        const size_t at = static_cast<size_t>(n * hid + k);
        h[at] = h0.empty() ? T(0) : h0[static_cast<size_t>(u.stateOffset(d, n) + k)];
        c[at] = c0.empty() ? T(0) : c0[static_cast<size_t>(u.stateOffset(d, n) + k)];
      }
    }
    const Activation* f = u.acts.data() + static_cast<size_t>(d) * (u.cell == Cell::rnn ? 1 : u.cell == Cell::gru ? 2 : 3);
    const T* pd = p.empty() ? nullptr : p.data() + d * 3 * hid;
    for (int64_t step = 0; step < longest; ++step) {
      // H . R^T for every sample (GRU: the update and reset gates; its hidden gate below)
      const int64_t direct = u.cell == Cell::gru && !u.linear_before_reset ? 2 * hid : gh;
      gemm(batch, direct, hid, h.data(), hid, rt.data(), gh, rh.data(), gh, nullptr);
      // Samples in parallel where there is enough work (each sample's arithmetic is the same on any
      // thread count).
      const bool parallel = batch > 1 && batch * gh >= 4096;
      // Sample n's time index at this step; -1 once its sequence has ended.
      auto timeOf = [&](int64_t n) {
        const int64_t len = u.lens[static_cast<size_t>(n)];
        return step >= len ? int64_t{-1} : reverse ? len - 1 - step : step;
      };
      if (u.cell == Cell::gru && !u.linear_before_reset) {  // (r . H) Rh^T
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t n = 0; n < batch; ++n) {
          const int64_t t = timeOf(n);
          if (t < 0) continue;
          const T* xt = xw.data() + u.xRow(t, n) * gh;
          T* rg = reset.data() + n * hid;
          for (int64_t k = 0; k < hid; ++k) rg[k] = xt[hid + k] + rh[static_cast<size_t>(n * gh + hid + k)];
          f[0].apply(rg, hid);
          for (int64_t k = 0; k < hid; ++k) rg[k] *= h[static_cast<size_t>(n * hid + k)];
        }
        gemm(batch, hid, hid, reset.data(), hid, rt.data() + 2 * hid, gh, rhh.data(), hid, rbh.data());
      }
#pragma omp parallel for schedule(static) if (parallel)
      for (int64_t n = 0; n < batch; ++n) {
        const int64_t t = timeOf(n);
        if (t < 0) continue;
        const T* xt = xw.data() + u.xRow(t, n) * gh;
        const T* rn = rh.data() + n * gh;
        T* hn = h.data() + n * hid;
        T* cn = c.data() + n * hid;
        T* out = next.data() + n * hid;
        T* g = gate.data() + n * gh;  // this sample's pre-activations, then gates
        if (u.cell == Cell::rnn) {
          for (int64_t k = 0; k < hid; ++k) out[k] = xt[k] + rn[k];
          f[0].apply(out, hid);
        } else if (u.cell == Cell::gru) {  // gates z, r, h
          for (int64_t k = 0; k < hid; ++k) g[k] = xt[k] + rn[k];
          f[0].apply(g, hid);
          if (u.linear_before_reset) {
            for (int64_t k = 0; k < hid; ++k) g[hid + k] = xt[hid + k] + rn[hid + k];
            f[0].apply(g + hid, hid);
            for (int64_t k = 0; k < hid; ++k) g[2 * hid + k] = xt[2 * hid + k] + g[hid + k] * (rn[2 * hid + k] + rbh[static_cast<size_t>(k)]);
          } else {
            for (int64_t k = 0; k < hid; ++k) g[2 * hid + k] = xt[2 * hid + k] + rhh[static_cast<size_t>(n * hid + k)];
          }
          f[1].apply(g + 2 * hid, hid);
          for (int64_t k = 0; k < hid; ++k) out[k] = (T(1) - g[k]) * g[2 * hid + k] + g[k] * hn[k];
        } else {  // gates i, o, f, c; the output gate's peephole reads the new cell state
          for (int64_t k = 0; k < hid; ++k) {
            g[k] = xt[k] + rn[k] + (pd ? pd[k] * cn[k] : T(0));
            g[2 * hid + k] = xt[2 * hid + k] + rn[2 * hid + k] + (pd ? pd[2 * hid + k] * cn[k] : T(0));
            g[3 * hid + k] = xt[3 * hid + k] + rn[3 * hid + k];
          }
          f[0].apply(g, hid);
          if (u.input_forget) {
            for (int64_t k = 0; k < hid; ++k) g[2 * hid + k] = T(1) - g[k];
          } else {
            f[0].apply(g + 2 * hid, hid);
          }
          f[1].apply(g + 3 * hid, hid);
          for (int64_t k = 0; k < hid; ++k) {
            cn[k] = g[2 * hid + k] * cn[k] + g[k] * g[3 * hid + k];
            g[hid + k] = xt[hid + k] + rn[hid + k] + (pd ? pd[hid + k] * cn[k] : T(0));
            out[k] = cn[k];
          }
          f[0].apply(g + hid, hid);
          f[2].apply(out, hid);
          for (int64_t k = 0; k < hid; ++k) out[k] *= g[hid + k];
        }
        std::copy_n(out, hid, hn);
        std::copy_n(hn, hid, y.begin() + u.yOffset(t, d, n));
      }
    }
    for (int64_t n = 0; n < batch; ++n) {
      std::copy_n(h.begin() + n * hid, hid, yh.begin() + u.stateOffset(d, n));
      if (u.cell == Cell::lstm) std::copy_n(c.begin() + n * hid, hid, yc.begin() + u.stateOffset(d, n));
    }
  };
  std::exception_ptr failed;
#pragma omp parallel for schedule(static, 1) num_threads(2) if (split)
  for (int64_t d = 0; d < u.dirs; ++d) {
    try {
      direction(d);
    } catch (...) {  // an exception may not leave an OpenMP region
#pragma omp critical(lwc_rnn_failure)
      failed = std::current_exception();
    }
  }
  if (failed) std::rethrow_exception(failed);
  auto emit = [&](size_t i, const std::vector<T>& v, Shape s) {
    if (i >= ctx.numOutputs() || ctx.node.outputs[i].empty()) return;
    Tensor t(dtypeOf<T>(), std::move(s));
    std::copy(v.begin(), v.end(), t.data<T>());
    ctx.outputs[i] = u.dt == dtypeOf<T>() ? std::move(t) : t.cast(u.dt);
  };
  emit(0, y, u.layout == 0 ? Shape{u.seq, u.dirs, batch, hid} : Shape{batch, u.seq, u.dirs, hid});
  emit(1, yh, u.state_shape);
  if (u.cell == Cell::lstm) emit(2, yc, u.state_shape);
}

// c = a . b + bias in double, plain loops.
void refGemm(int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b, int64_t ldb, double* c,
             int64_t ldc, const double* bias) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = bias ? bias[j] : 0.0;
      for (int64_t q = 0; q < k; ++q) s += a[i * lda + q] * b[q * ldb + j];
      c[i * ldc + j] = s;
    }
}

// The reference: double throughout.
void recurrent(KernelContext& ctx, Cell cell) { runCells<double>(ctx, setUp(ctx, cell), refGemm); }

// float32 with oneDNN's sgemm in fixed blocks (the same bits on any thread count); float16 and
// float64 go to the reference.
class FastRecurrent final : public Kernel {
 public:
  explicit FastRecurrent(Cell cell) : cell_(cell) {}
  void run(KernelContext& ctx) override {
    const Setup u = setUp(ctx, cell_);
    fast_ = u.dt == DType::Float32;
    if (!fast_) return runCells<double>(ctx, u, refGemm);
    runCells<float>(ctx, u, [](int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                               float* c, int64_t ldc, const float* bias) {
      if (k == 0) {
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = bias ? bias[j] : 0.0f;
        return;
      }
      if (!dnnl_util::sgemmFixedBlocks('N', m, n, k, a, lda, b, ldb, c, ldc, 64, 128, 0, bias)) fail("oneDNN sgemm failed");
    });
  }
  std::string primitive() const override { return fast_ ? "sgemm" : ""; }

 private:
  Cell cell_;
  bool fast_ = false;
};

}  // namespace

void registerRnnKernels(KernelRegistry& r) {
  const std::pair<const char*, Cell> ops[] = {{"RNN", Cell::rnn}, {"GRU", Cell::gru}, {"LSTM", Cell::lstm}};
  for (const auto& [op, cell] : ops)
    r.add("", op, 1, 22, "dnnl", [cell](const KernelInfo&) -> std::unique_ptr<Kernel> { return std::make_unique<FastRecurrent>(cell); });
  r.addFn("RNN", 1, 22, [](KernelContext& ctx) { recurrent(ctx, Cell::rnn); });
  r.addFn("GRU", 1, 22, [](KernelContext& ctx) { recurrent(ctx, Cell::gru); });
  r.addFn("LSTM", 1, 22, [](KernelContext& ctx) { recurrent(ctx, Cell::lstm); });
}

}  // namespace lwc::engine
