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

int64_t gatesOf(Cell cell) { return cell == Cell::rnn ? 1 : cell == Cell::gru ? 3 : 4; }

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
  u.gates = gatesOf(cell);
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

// Input i in T: the input itself where it is already, else a converted copy; an empty tensor for
// an omitted optional input.
template <typename T>
Tensor valuesOf(const KernelContext& ctx, size_t i) {
  if (!ctx.has(i)) return {};
  return ctx.in(i).dtype() == dtypeOf<T>() ? ctx.in(i) : ctx.in(i).cast(dtypeOf<T>());
}

template <typename T>
const T* ptrOf(const Tensor& t) {
  return t.numel() > 0 ? t.data<T>() : nullptr;
}

// c [m, n] (row stride ldc) = a [m, k] (stride lda) . b [k, n] (stride ldb) + bias [n] (or none).
template <typename T>
using Gemm = std::function<void(int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
                                int64_t ldc, const T* bias)>;

// What the steps read from W, R and B, per direction: W^T [in, gh], R^T [hid, gh], the bias of the
// input projections (Wb + Rb; GRU's hidden gate: Wb only) and GRU's hidden-gate Rb, which goes with
// the recurrent product. The float32 kernel keeps them between runs when W, R and B are constants.
template <typename T>
struct Prepared {
  std::vector<T> wt, rt, bias, rbh;
};

// w [dirs, gh, in], r [dirs, gh, hid] and b [dirs, 2 gh] (or empty) in T, their shapes checked.
template <typename T>
void prepare(Cell cell, int64_t dirs, int64_t in, int64_t hid, const Tensor& w, const Tensor& r, const Tensor& b, Prepared<T>& pw) {
  const int64_t gh = gatesOf(cell) * hid;
  pw.wt.assign(static_cast<size_t>(dirs * in * gh), T(0));
  pw.rt.assign(static_cast<size_t>(dirs * hid * gh), T(0));
  pw.bias.assign(static_cast<size_t>(dirs * gh), T(0));
  pw.rbh.assign(static_cast<size_t>(dirs * hid), T(0));
  for (int64_t d = 0; d < dirs; ++d) {
    const T* wd = w.data<T>() + d * gh * in;
    const T* rd = r.data<T>() + d * gh * hid;
    T* wt = pw.wt.data() + d * in * gh;
    T* rt = pw.rt.data() + d * hid * gh;
    for (int64_t j = 0; j < gh; ++j) {
      for (int64_t i = 0; i < in; ++i) wt[i * gh + j] = wd[j * in + i];
      for (int64_t i = 0; i < hid; ++i) rt[i * gh + j] = rd[j * hid + i];
    }
    if (b.numel() == 0) continue;
    const T* wb = b.data<T>() + d * 2 * gh;
    for (int64_t j = 0; j < gh; ++j)
      pw.bias[static_cast<size_t>(d * gh + j)] = wb[j] + (cell == Cell::gru && j >= 2 * hid ? T(0) : wb[gh + j]);
    if (cell == Cell::gru) std::copy_n(wb + gh + 2 * hid, hid, pw.rbh.begin() + d * hid);
  }
}

template <typename T>
void prepare(const KernelContext& ctx, const Setup& u, Prepared<T>& pw) {
  prepare(u.cell, u.dirs, u.in, u.hid, valuesOf<T>(ctx, 1), valuesOf<T>(ctx, 2), valuesOf<T>(ctx, 3), pw);
}

// The recurrence in T with products by `gemm`; outputs in the node's element type. Its outputs and
// working arrays are tensors made on the calling thread, so that in a session they come from its
// buffer pool: fresh std::vectors of a few hundred KiB were new mappings on every run, and their
// page faults took half of a batch-32 LSTM's time on a 2-core EPYC VM.
template <typename T>
void runCells(KernelContext& ctx, const Setup& u, const Gemm<T>& gemm, const Prepared<T>& pw) {
  const int64_t hid = u.hid, gh = u.gates * hid, batch = u.batch;
  const Tensor x = valuesOf<T>(ctx, 0), h0t = valuesOf<T>(ctx, 5);
  const Tensor c0t = u.cell == Cell::lstm ? valuesOf<T>(ctx, 6) : Tensor(), pt = u.cell == Cell::lstm ? valuesOf<T>(ctx, 7) : Tensor();
  const T *h0 = ptrOf<T>(h0t), *c0 = ptrOf<T>(c0t), *p = ptrOf<T>(pt);
  int64_t longest = 0;
  bool full = true;  // every sample runs every step: Y has no rows to leave at zero
  for (int64_t l : u.lens) {
    longest = std::max(longest, l);
    full = full && l == u.seq;
  }
  auto wanted = [&](size_t i) { return i < ctx.numOutputs() && !ctx.node.outputs[i].empty(); };
  const Shape y_shape = u.layout == 0 ? Shape{u.seq, u.dirs, batch, hid} : Shape{batch, u.seq, u.dirs, hid};
  Tensor yt = !wanted(0) ? Tensor() : full ? Tensor::uninitialized(dtypeOf<T>(), y_shape) : Tensor(dtypeOf<T>(), y_shape);
  Tensor yht = Tensor::uninitialized(dtypeOf<T>(), u.state_shape);
  Tensor yct = u.cell == Cell::lstm ? Tensor::uninitialized(dtypeOf<T>(), u.state_shape) : Tensor();
  T* y = yt.numel() > 0 ? yt.data<T>() : nullptr;
  // Per direction: input projections of every step [seq * batch, gh], H . R^T [batch, gh], the
  // gates [batch, gh], and h, c, the next h, (r . H) Rh^T and r . H [batch, hid] each.
  const int64_t per_dir = u.seq * batch * gh + 2 * batch * gh + 5 * batch * hid;
  Tensor work = Tensor::uninitialized(dtypeOf<T>(), {u.dirs * per_dir});
  // The two directions of a bidirectional layer on two threads, each with its products and gates
  // on its own (nested regions run on one thread): a step's work is too small to share, and every
  // shared step cost two thread meetings. Each direction's arithmetic is the same either way.
  const bool split = u.dirs == 2 && omp_get_max_threads() > 1 && u.seq * batch * gh * (u.in + hid) >= (1 << 16);
  auto direction = [&](int64_t d) {
    T* xw = work.data<T>() + d * per_dir;
    T* rh = xw + u.seq * batch * gh;
    T* gate = rh + batch * gh;
    T* h = gate + batch * gh;
    T* c = h + batch * hid;
    T* next = c + batch * hid;
    T* rhh = next + batch * hid;
    T* reset = rhh + batch * hid;
    const bool reverse = u.reverse_only || d == 1;
    const T* rt = pw.rt.data() + d * hid * gh;
    const T* rbh = pw.rbh.data() + d * hid;
    gemm(u.seq * batch, gh, u.in, x.data<T>(), u.in, pw.wt.data() + d * u.in * gh, gh, xw, gh, pw.bias.data() + d * gh);
    for (int64_t n = 0; n < batch; ++n) {
      for (int64_t k = 0; k < hid; ++k) {
        const int64_t at = n * hid + k;
        h[at] = h0 ? h0[u.stateOffset(d, n) + k] : T(0);
        c[at] = c0 ? c0[u.stateOffset(d, n) + k] : T(0);
      }
    }
    const Activation* f = u.acts.data() + static_cast<size_t>(d) * (u.cell == Cell::rnn ? 1 : u.cell == Cell::gru ? 2 : 3);
    const T* pd = p ? p + d * 3 * hid : nullptr;
    for (int64_t step = 0; step < longest; ++step) {
      // H . R^T for every sample (GRU: the update and reset gates; its hidden gate below)
      const int64_t direct = u.cell == Cell::gru && !u.linear_before_reset ? 2 * hid : gh;
      gemm(batch, direct, hid, h, hid, rt, gh, rh, gh, nullptr);
      // Samples in parallel where there is enough work (each sample's arithmetic is the same on any
      // thread count) and no direction's thread runs this: parallelFor opens no OpenMP region
      // otherwise, where a nested one-thread team cost a futex call per step.
      const bool parallel = !split && batch > 1 && batch * gh >= 4096;
      // Sample n's time index at this step; -1 once its sequence has ended.
      auto timeOf = [&](int64_t n) {
        const int64_t len = u.lens[static_cast<size_t>(n)];
        return step >= len ? int64_t{-1} : reverse ? len - 1 - step : step;
      };
      if (u.cell == Cell::gru && !u.linear_before_reset) {  // (r . H) Rh^T
        parallelFor(batch, parallel, [&](int64_t n) {
          const int64_t t = timeOf(n);
          if (t < 0) return;
          const T* xt = xw + u.xRow(t, n) * gh;
          T* rg = reset + n * hid;
          for (int64_t k = 0; k < hid; ++k) rg[k] = xt[hid + k] + rh[n * gh + hid + k];
          f[0].apply(rg, hid);
          for (int64_t k = 0; k < hid; ++k) rg[k] *= h[n * hid + k];
        });
        gemm(batch, hid, hid, reset, hid, rt + 2 * hid, gh, rhh, hid, rbh);
      }
      parallelFor(batch, parallel, [&](int64_t n) {
        const int64_t t = timeOf(n);
        if (t < 0) return;
        const T* xt = xw + u.xRow(t, n) * gh;
        const T* rn = rh + n * gh;
        T* hn = h + n * hid;
        T* cn = c + n * hid;
        T* out = next + n * hid;
        T* g = gate + n * gh;  // this sample's pre-activations, then gates
        if (u.cell == Cell::rnn) {
          for (int64_t k = 0; k < hid; ++k) out[k] = xt[k] + rn[k];
          f[0].apply(out, hid);
        } else if (u.cell == Cell::gru) {  // gates z, r, h
          for (int64_t k = 0; k < hid; ++k) g[k] = xt[k] + rn[k];
          f[0].apply(g, hid);
          if (u.linear_before_reset) {
            for (int64_t k = 0; k < hid; ++k) g[hid + k] = xt[hid + k] + rn[hid + k];
            f[0].apply(g + hid, hid);
            for (int64_t k = 0; k < hid; ++k) g[2 * hid + k] = xt[2 * hid + k] + g[hid + k] * (rn[2 * hid + k] + rbh[k]);
          } else {
            for (int64_t k = 0; k < hid; ++k) g[2 * hid + k] = xt[2 * hid + k] + rhh[n * hid + k];
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
        if (y) std::copy_n(hn, hid, y + u.yOffset(t, d, n));
      });
    }
    for (int64_t n = 0; n < batch; ++n) {
      std::copy_n(h + n * hid, hid, yht.data<T>() + u.stateOffset(d, n));
      if (u.cell == Cell::lstm) std::copy_n(c + n * hid, hid, yct.data<T>() + u.stateOffset(d, n));
    }
  };
  if (split) {
    std::exception_ptr failed;
#pragma omp parallel for schedule(static, 1) num_threads(2)
    for (int64_t d = 0; d < u.dirs; ++d) {
      try {
        direction(d);
      } catch (...) {  // an exception may not leave an OpenMP region
#pragma omp critical(lwc_rnn_failure)
        failed = std::current_exception();
      }
    }
    if (failed) std::rethrow_exception(failed);
  } else {
    for (int64_t d = 0; d < u.dirs; ++d) direction(d);
  }
  auto emit = [&](size_t i, Tensor& t) {
    if (wanted(i)) ctx.outputs[i] = u.dt == dtypeOf<T>() ? std::move(t) : t.cast(u.dt);
  };
  emit(0, yt);
  emit(1, yht);
  if (u.cell == Cell::lstm) emit(2, yct);
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
void runReference(KernelContext& ctx, const Setup& u) {
  Prepared<double> pw;
  prepare(ctx, u, pw);
  runCells<double>(ctx, u, refGemm, pw);
}

void recurrent(KernelContext& ctx, Cell cell) { runReference(ctx, setUp(ctx, cell)); }

// float32 with oneDNN's sgemm in fixed blocks (the same bits on any thread count); float16 and
// float64 go to the reference.
class FastRecurrent final : public Kernel {
 public:
  // W, R and B as the steps read them, made once here when they are float32 constants whose shapes
  // fit each other (run() checks them against X and the attributes before it uses them).
  FastRecurrent(Cell cell, const KernelInfo& info) : cell_(cell) {
    const Tensor *w = info.constant(1), *r = info.constant(2), *b = info.constant(3);
    if (!w || !r || (info.hasInput(3) && !b)) return;
    const bool f32 = w->dtype() == DType::Float32 && r->dtype() == DType::Float32 && (!b || b->dtype() == DType::Float32);
    if (!f32 || w->rank() != 3 || r->rank() != 3) return;
    const int64_t dirs = r->dim(0), hid = r->dim(2), gh = gatesOf(cell) * hid;
    if (w->dim(0) != dirs || w->dim(1) != gh || r->dim(1) != gh || (b && b->shape() != Shape{dirs, 2 * gh})) return;
    prepare(cell, dirs, w->dim(2), hid, *w, *r, b ? *b : Tensor(), constant_);
    has_constant_ = true;
  }
  void run(KernelContext& ctx) override {
    const Setup u = setUp(ctx, cell_);
    fast_ = u.dt == DType::Float32;
    if (!fast_) return runReference(ctx, u);
    Prepared<float> local;
    if (!has_constant_) prepare(ctx, u, local);
    runCells<float>(ctx, u, [](int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b, int64_t ldb,
                               float* c, int64_t ldc, const float* bias) {
      if (k == 0) {
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = bias ? bias[j] : 0.0f;
        return;
      }
      // Inside a direction's thread the blocks run on that thread: a nested region would be a
      // one-thread team and a futex call per product (hidden 256: two per step).
      const int threads = omp_get_level() > 0 ? 1 : 0;
      if (!dnnl_util::sgemmFixedBlocks('N', m, n, k, a, lda, b, ldb, c, ldc, 64, 128, threads, bias)) fail("oneDNN sgemm failed");
    }, has_constant_ ? constant_ : local);
  }
  std::string primitive() const override { return fast_ ? "sgemm" : ""; }

 private:
  Cell cell_;
  bool fast_ = false;
  bool has_constant_ = false;
  Prepared<float> constant_;
};

}  // namespace

void registerRnnKernels(KernelRegistry& r) {
  const std::pair<const char*, Cell> ops[] = {{"RNN", Cell::rnn}, {"GRU", Cell::gru}, {"LSTM", Cell::lstm}};
  for (const auto& [op, cell] : ops)
    r.add("", op, 1, 22, "dnnl", [cell](const KernelInfo& info) -> std::unique_ptr<Kernel> { return std::make_unique<FastRecurrent>(cell, info); });
  r.addFn("RNN", 1, 22, [](KernelContext& ctx) { recurrent(ctx, Cell::rnn); });
  r.addFn("GRU", 1, 22, [](KernelContext& ctx) { recurrent(ctx, Cell::gru); });
  r.addFn("LSTM", 1, 22, [](KernelContext& ctx) { recurrent(ctx, Cell::lstm); });
}

}  // namespace lwc::engine
