#include "passes/lsq_recovery.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <cmath>
#include <iomanip>
#include <map>
#include <memory>
#include <sstream>

#include "engine/kernels/dnnl_common.h"
#include "engine/kernels/nn_ref.h"
#include "lwc/dataset.h"
#include "lwc/engine.h"
#include "lwc/graph_edit.h"
#include "lwc/shape_inference.h"
#include "passes/activation_cut.h"
#include "passes/eliminate_dead.h"

namespace lwc::passes {

namespace {

struct Accum {
  Accum(int64_t kb, int64_t ocg)
      : Kb(kb), G(static_cast<size_t>(kb * kb), 0.0), C(static_cast<size_t>(kb * ocg), 0.0), yy(static_cast<size_t>(ocg), 0.0) {}
  int64_t Kb = 0;              // K + bias column
  std::vector<double> G, C;    // Kb x Kb, Kb x ocg
  std::vector<double> yy;      // ocg
  int64_t rows = 0;
};

/// c[m x n] = aᵀ b for a [k x m] and b [k x n], row-major, with the same bits on any number of
/// threads (blocks of 64 columns of c).
void gemmTN(int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c, int threads) {
  if (!engine::dnnl_util::sgemmFixedBlocks('T', m, n, k, a, m, b, n, c, n, std::max<int64_t>(m, 1), 64, threads))
    throw InternalError("dnnl_sgemm failed");
}

void accumulate(Accum& acc, const std::vector<float>& A, const std::vector<float>& Y, int64_t rows, int64_t ocg,
                int threads) {
  if (rows == 0) return;
  const int64_t Kb = acc.Kb;
  std::vector<float> tmp(static_cast<size_t>(Kb * std::max(Kb, ocg)));
  gemmTN(Kb, Kb, rows, A.data(), A.data(), tmp.data(), threads);
  for (int64_t i = 0; i < Kb * Kb; ++i) acc.G[static_cast<size_t>(i)] += tmp[static_cast<size_t>(i)];
  gemmTN(Kb, ocg, rows, A.data(), Y.data(), tmp.data(), threads);
  for (int64_t i = 0; i < Kb * ocg; ++i) acc.C[static_cast<size_t>(i)] += tmp[static_cast<size_t>(i)];
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < ocg; ++o) {
      const double y = Y[static_cast<size_t>(r * ocg + o)];
      acc.yy[static_cast<size_t>(o)] += y * y;
    }
  acc.rows += rows;
}

/// Solves L Lᵀ x = rhs in place, for the factor choleskyLower leaves in L (L in the lower
/// triangle, Lᵀ in the upper one, so both sweeps read rows).
void choleskySubstitute(const std::vector<double>& L, std::vector<double>& rhs, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    double s = rhs[static_cast<size_t>(i)];
    for (int64_t k = 0; k < i; ++k) s -= L[static_cast<size_t>(i * n + k)] * rhs[static_cast<size_t>(k)];
    rhs[static_cast<size_t>(i)] = s / L[static_cast<size_t>(i * n + i)];
  }
  for (int64_t i = n - 1; i >= 0; --i) {
    double s = rhs[static_cast<size_t>(i)];
    for (int64_t k = i + 1; k < n; ++k) s -= L[static_cast<size_t>(i * n + k)] * rhs[static_cast<size_t>(k)];
    rhs[static_cast<size_t>(i)] = s / L[static_cast<size_t>(i * n + i)];
  }
}

/// Solves M x = rhs in place by Cholesky (M symmetric, n x n, row-major). False when not
/// positive definite.
bool choleskySolve(std::vector<double>& M, std::vector<double>& rhs, int64_t n) {
  if (!choleskyLower(M, n)) return false;
  choleskySubstitute(M, rhs, n);
  return true;
}

}  // namespace

Model truncatedTo(const Model& m, const std::string& value) { return truncatedTo(m, std::vector<std::string>{value}); }

Model truncatedTo(const Model& m, const std::vector<std::string>& values) {
  Model t = m;
  t.graph.outputs.clear();
  for (const auto& v : values) {
    ValueInfo vi;
    vi.name = v;
    vi.dtype = DType::Float32;
    t.graph.outputs.push_back(vi);
  }
  PassContext none;
  EliminateDead().run(t, none);
  return t;
}

void forEachBatch(const Model& model, const std::vector<std::string>& values, Dataset& data, const std::string& input,
                  int64_t batch, int threads, const std::function<void(const std::vector<Tensor>&)>& fn) {
  engine::SessionOptions so;
  so.threads = threads;
  engine::Session sess(truncatedTo(model, values), so);
  data.reset();
  // Every requested tensor of a batch is alive at once: the first batch is one sample, which sizes
  // the others so that they hold at most ~256 MB of outputs (all of a 224x224 network's layers
  // for 64 images would be ~2 GB).
  constexpr int64_t kOutputBudget = int64_t{256} << 20;
  int64_t n = 1;
  while (auto b = data.next(n)) {
    const std::vector<Tensor> out = sess.runOrdered({{input, b->inputs}});
    if (n == 1 && batch > 1) {
      int64_t bytes = 0;
      for (const auto& t : out) bytes += static_cast<int64_t>(t.nbytes());
      n = std::clamp<int64_t>(kOutputBudget / std::max<int64_t>(bytes, 1), 1, batch);
    }
    fn(out);
  }
}

std::vector<std::vector<double>> channelMeans(const Model& model, const std::vector<std::string>& values, Dataset& data,
                                              const std::string& input, int64_t batch, int threads,
                                              const std::vector<int>& axes) {
  std::vector<std::vector<double>> sums(values.size());
  if (values.empty()) return sums;
  std::vector<int64_t> count(values.size(), 0);
  forEachBatch(model, values, data, input, batch, threads, [&](const std::vector<Tensor>& out) {
    for (size_t k = 0; k < values.size(); ++k) {
      const Tensor& v = out.at(k);
      if (v.dtype() != DType::Float32 || v.rank() < 2) continue;
      const int axis = k < axes.size() ? axes[k] : 1;
      const int64_t ai = axis < 0 ? static_cast<int64_t>(v.rank()) + axis : axis;
      if (ai <= 0 || ai >= static_cast<int64_t>(v.rank())) continue;
      const size_t a = static_cast<size_t>(ai);
      int64_t inner = 1;
      for (size_t d = a + 1; d < v.rank(); ++d) inner *= v.dim(d);
      const int64_t c = v.dim(a);
      sums[k].resize(static_cast<size_t>(c), 0.0);
      const float* x = v.data<float>();
      for (int64_t i = 0; i < v.numel(); ++i) sums[k][static_cast<size_t>((i / inner) % c)] += x[i];
      count[k] += v.numel() / c;
    }
  });
  for (size_t k = 0; k < values.size(); ++k)
    for (auto& v : sums[k]) v /= double(std::max<int64_t>(count[k], 1));
  return sums;
}

std::optional<LayerForm> layerForm(const Node& n, const Tensor& W, bool bias_column, std::string& why) {
  LayerForm f;
  f.wshape = W.shape();
  if (n.op_type == "Conv" && W.rank() == 4) {
    f.kind = LayerForm::Kind::Conv;
    f.groups = n.attrInt("group", 1);
    f.out = W.dim(0);
    f.ocg = f.out / std::max<int64_t>(f.groups, 1);
    f.K = W.dim(1) * W.dim(2) * W.dim(3);
    f.bias = bias_column;
    if (f.groups < 1 || f.out % f.groups != 0) {
      why = "group does not divide the output channels";
      return std::nullopt;
    }
  } else if (n.op_type == "Gemm" && W.rank() == 2) {
    if (n.attrInt("transA", 0) != 0 || n.attrFloat("alpha", 1.0f) != 1.0f ||
        (n.hasInput(2) && n.attrFloat("beta", 1.0f) != 1.0f)) {
      why = "Gemm with transA, alpha or beta is not supported";
      return std::nullopt;
    }
    f.kind = LayerForm::Kind::Gemm;
    f.trans = n.attrInt("transB", 0) != 0;
    f.K = f.trans ? W.dim(1) : W.dim(0);
    f.out = f.trans ? W.dim(0) : W.dim(1);
    f.ocg = f.out;
    f.bias = bias_column;
  } else if (n.op_type == "MatMul" && W.rank() == 2) {
    f.kind = LayerForm::Kind::MatMul;
    f.K = W.dim(0);
    f.out = W.dim(1);
    f.ocg = f.out;
  } else {
    why = n.op_type + " with " + std::to_string(W.rank()) + "-D weights is not supported";
    return std::nullopt;
  }
  return f;
}

std::optional<LayerForm> layerFormIn(const Graph& g, const GraphIndex& index, const Node& n, const Tensor& W, bool bias_column,
                                     std::string& why, TrailingBias* tb) {
  auto f = layerForm(n, W, bias_column, why);
  const TrailingBias add = f && f->kind == LayerForm::Kind::MatMul && bias_column
                               ? trailingBiasAdd(g, index, n.outputs.at(0), f->out)
                               : TrailingBias{};
  if (add.node >= 0) f->bias = true;
  if (tb) *tb = add;
  return f;
}

namespace {

/// Fills A (rows x Kb; the bias column is 1) with group gi's sampled rows of the layer on input X,
/// a batch whose first sample is sample `sample_base` of the data (the phase of the evenly spaced
/// positions moves with it, deterministically): im2col patches at up to `rows_per_sample` output
/// positions per sample for Conv, input rows for Gemm/MatMul. With Y (the reference output), Yg
/// (rows x ocg) gets the output at the same positions, channel refChannel(o). Returns the rows.
/// The caller has checked that X and Y fit the layer.
int64_t sampleRows(const Node& n, const LayerForm& f, const Tensor& X, const Tensor* Y, int64_t gi, int64_t rows_per_sample,
                   int64_t sample_base, const std::function<int64_t(int64_t)>& refChannel, std::vector<float>& A,
                   std::vector<float>& Yg) {
  const int64_t N = X.dim(0), Kb = f.Kb();
  int64_t row = 0;
  if (f.kind == LayerForm::Kind::Conv) {
    const engine::ConvParams cp = engine::parseConvParams(n, X.shape(), f.wshape);
    const auto& geo = cp.geo;
    const int64_t C = X.dim(1), H = X.dim(2), Wd = X.dim(3), OW = geo.out[1], P = geo.out[0] * OW;
    const int64_t R = std::min(P, rows_per_sample), step = std::max<int64_t>(P / std::max<int64_t>(R, 1), 1);
    const int64_t cin_g = C / f.groups, kh = geo.kernel[0], kw = geo.kernel[1];
    const int64_t yc = Y ? Y->dim(1) : 0;
    const float* x = X.data<float>();
    A.assign(static_cast<size_t>(N * R * Kb), 0.0f);
    if (Y) Yg.assign(static_cast<size_t>(N * R * f.ocg), 0.0f);
    for (int64_t s = 0; s < N; ++s) {
      const int64_t phase = (sample_base + s) % step;
      for (int64_t j = 0; j < R; ++j, ++row) {
        const int64_t p = std::min(j * P / R + phase, P - 1), oh = p / OW, ow = p % OW;
        float* a = &A[static_cast<size_t>(row * Kb)];
        for (int64_t ci = 0; ci < cin_g; ++ci) {
          const float* xc = x + ((s * C) + gi * cin_g + ci) * H * Wd;
          for (int64_t ky = 0; ky < kh; ++ky) {
            const int64_t ih = oh * geo.strides[0] - geo.pads_begin[0] + ky * geo.dilations[0];
            for (int64_t kx = 0; kx < kw; ++kx) {
              const int64_t iw = ow * geo.strides[1] - geo.pads_begin[1] + kx * geo.dilations[1];
              a[(ci * kh + ky) * kw + kx] = ih >= 0 && ih < H && iw >= 0 && iw < Wd ? xc[ih * Wd + iw] : 0.0f;
            }
          }
        }
        if (f.bias) a[f.K] = 1.0f;
        if (Y)
          for (int64_t o = 0; o < f.ocg; ++o)
            Yg[static_cast<size_t>(row * f.ocg + o)] = Y->data<float>()[((s * yc) + refChannel(gi * f.ocg + o)) * P + p];
      }
    }
    return row;
  }
  const int64_t rows_total = X.numel() / f.K, per = rows_total / std::max<int64_t>(N, 1);
  const int64_t R = std::min(per, rows_per_sample), step = std::max<int64_t>(per / std::max<int64_t>(R, 1), 1);
  const int64_t yc = Y ? Y->dim(Y->rank() - 1) : 0;
  A.assign(static_cast<size_t>(N * R * Kb), 0.0f);
  if (Y) Yg.assign(static_cast<size_t>(N * R * f.ocg), 0.0f);
  for (int64_t s = 0; s < N; ++s) {
    const int64_t phase = (sample_base + s) % step;
    for (int64_t j = 0; j < R; ++j, ++row) {
      const int64_t src = s * per + std::min(j * per / R + phase, per - 1);
      std::copy_n(X.data<float>() + src * f.K, f.K, &A[static_cast<size_t>(row * Kb)]);
      if (f.bias) A[static_cast<size_t>(row * Kb + f.K)] = 1.0f;
      if (Y)
        for (int64_t o = 0; o < f.out; ++o)
          Yg[static_cast<size_t>(row * f.ocg + o)] = Y->data<float>()[src * yc + refChannel(o)];
    }
  }
  return row;
}

/// Why input X cannot feed the layer's rows ("" when it can).
std::string inputMismatch(const LayerForm& f, const Tensor& X) {
  if (X.empty() || X.dtype() != DType::Float32) return "its input is not a float tensor";
  if (f.kind == LayerForm::Kind::Conv) return X.rank() == 4 ? "" : "only 2-D convolutions are supported";
  if (X.rank() < 1 || X.dim(X.rank() - 1) != f.K) return "input " + shapeStr(X.shape()) + " does not match the weights";
  return "";
}

}  // namespace

void layerGrams(const Model& model, const std::vector<size_t>& nodes, Dataset& data, const std::string& input, int64_t batch,
                int threads, int64_t rows_per_sample, bool bias_column, const std::function<void(size_t, LayerGram&)>& done) {
  const Graph& g = model.graph;
  const GraphIndex index(g);
  std::vector<LayerGram> out(nodes.size());
  std::vector<size_t> todo;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = g.nodes.at(nodes[i]);
    const Tensor* w = n.inputs.size() > 1 ? floatConstant(g, n.inputs[1]) : nullptr;
    if (!w || g.isGraphInput(n.inputs[1])) {
      out[i].unsupported = "weights are not a float constant";
      done(i, out[i]);
      continue;
    }
    std::string why;
    auto f = layerFormIn(g, index, n, *w, bias_column, why);
    if (!f) {
      out[i].unsupported = why;
      done(i, out[i]);
      continue;
    }
    out[i].form = *f;
    todo.push_back(i);
  }
  // Layers in chunks whose matrices fit the budget together; one data pass per chunk.
  constexpr int64_t kGramBudget = int64_t{512} << 20;
  size_t at = 0;
  std::vector<float> A, none, tmp;
  while (at < todo.size()) {
    std::vector<size_t> chunk;
    int64_t bytes = 0;
    for (; at < todo.size(); ++at) {
      const LayerForm& f = out[todo[at]].form;
      const int64_t Kb = f.Kb(), need = f.groups * Kb * Kb * 8;
      if (!chunk.empty() && bytes + need > kGramBudget) break;
      bytes += need;
      chunk.push_back(todo[at]);
    }
    std::vector<std::string> values;
    for (size_t i : chunk) {
      LayerGram& lg = out[i];
      const int64_t Kb = lg.form.Kb();
      lg.G.assign(static_cast<size_t>(lg.form.groups), std::vector<double>(static_cast<size_t>(Kb * Kb), 0.0));
      values.push_back(g.nodes[nodes[i]].inputs[0]);
    }
    int64_t sample_base = 0;
    forEachBatch(model, values, data, input, batch, threads, [&](const std::vector<Tensor>& xs) {
      for (size_t c = 0; c < chunk.size(); ++c) {
        LayerGram& lg = out[chunk[c]];
        if (!lg.unsupported.empty()) continue;
        const Tensor& X = xs.at(c);
        lg.unsupported = inputMismatch(lg.form, X);
        if (!lg.unsupported.empty()) {
          lg.G.clear();
          continue;
        }
        const int64_t Kb = lg.form.Kb();
        tmp.resize(static_cast<size_t>(Kb * Kb));
        for (int64_t gi = 0; gi < lg.form.groups; ++gi) {
          const int64_t rows = sampleRows(g.nodes[nodes[chunk[c]]], lg.form, X, nullptr, gi, rows_per_sample, sample_base,
                                          [](int64_t o) { return o; }, A, none);
          if (rows == 0) continue;
          gemmTN(Kb, Kb, rows, A.data(), A.data(), tmp.data(), threads);
          auto& G = lg.G[static_cast<size_t>(gi)];
          for (size_t e = 0; e < G.size(); ++e) G[e] += tmp[e];
          if (gi == 0) lg.rows += rows;
        }
      }
      sample_base += xs.empty() ? 0 : xs.front().dim(0);
    });
    for (size_t i : chunk) {
      done(i, out[i]);
      out[i].G = {};  // free before the next chunk
    }
  }
}

namespace {

/// Σ‖y − Xw − b‖² of output o on the accumulated rows, over w's non-zero entries (+ bias).
double outputError(const Accum& a, const LayerForm& f, int64_t o, const float* w, float bias) {
  const int64_t oi = o % f.ocg;
  std::vector<int64_t> S;
  std::vector<double> v;
  for (int64_t k = 0; k < f.K; ++k)
    if (w[f.windex(o, k)] != 0.0f) {
      S.push_back(k);
      v.push_back(w[f.windex(o, k)]);
    }
  if (f.bias) {
    S.push_back(f.K);
    v.push_back(bias);
  }
  double e = a.yy[static_cast<size_t>(oi)];
  for (size_t i = 0; i < S.size(); ++i) {
    double gv = 0;
    for (size_t j = 0; j < S.size(); ++j) gv += a.G[static_cast<size_t>(S[i] * a.Kb + S[j])] * v[j];
    e += v[i] * (gv - 2.0 * a.C[static_cast<size_t>(S[i] * f.ocg + oi)]);
  }
  return e;
}

/// Weight sharing: re-fits the layer's shared values (and biases) jointly, keeping every weight's
/// cluster: w[o,k] = c[a(o,k)] with a() read off the current weights (each non-zero weight equals
/// its centroid). One least-squares system over (centroids, biases) for the whole layer.
bool solveShared(const LayerForm& f, const std::vector<Accum>& acc, const Tensor& W, const std::vector<float>& bias0,
                 Tensor& Wn, std::vector<float>& bias1, double damping) {
  const float* w0 = W.data<float>();
  std::map<float, int64_t> cluster;
  for (int64_t i = 0; i < W.numel(); ++i)
    if (w0[i] != 0.0f) cluster.emplace(w0[i], 0);
  int64_t K = 0;
  std::vector<double> c0;
  for (auto& [v, j] : cluster) {
    j = K++;
    c0.push_back(v);
  }
  if (K == 0) return false;
  const int64_t nb = f.bias ? f.out : 0, n = K + nb;
  std::vector<double> M(static_cast<size_t>(n * n), 0.0), rhs(static_cast<size_t>(n), 0.0), x0(static_cast<size_t>(n));
  for (int64_t j = 0; j < K; ++j) x0[static_cast<size_t>(j)] = c0[static_cast<size_t>(j)];
  for (int64_t o = 0; o < nb; ++o) x0[static_cast<size_t>(K + o)] = bias0[static_cast<size_t>(o)];
  std::vector<int64_t> ks, js;
  for (int64_t o = 0; o < f.out; ++o) {
    const Accum& a = acc[static_cast<size_t>(o / f.ocg)];
    const int64_t oi = o % f.ocg;
    ks.clear();
    js.clear();
    for (int64_t k = 0; k < f.K; ++k) {
      const float v = w0[f.windex(o, k)];
      if (v == 0.0f) continue;
      ks.push_back(k);
      js.push_back(cluster.at(v));
    }
    for (size_t p = 0; p < ks.size(); ++p) {
      const int64_t jp = js[p];
      for (size_t q = 0; q < ks.size(); ++q)
        M[static_cast<size_t>(jp * n + js[q])] += a.G[static_cast<size_t>(ks[p] * a.Kb + ks[q])];
      rhs[static_cast<size_t>(jp)] += a.C[static_cast<size_t>(ks[p] * f.ocg + oi)];
      if (f.bias) {
        const double gb = a.G[static_cast<size_t>(ks[p] * a.Kb + f.K)];
        M[static_cast<size_t>(jp * n + K + o)] += gb;
        M[static_cast<size_t>((K + o) * n + jp)] += gb;
      }
    }
    if (f.bias) {
      M[static_cast<size_t>((K + o) * n + K + o)] += a.G[static_cast<size_t>(f.K * a.Kb + f.K)];
      rhs[static_cast<size_t>(K + o)] += a.C[static_cast<size_t>(f.K * f.ocg + oi)];
    }
  }
  double diag = 0;
  for (int64_t i = 0; i < n; ++i) diag += M[static_cast<size_t>(i * n + i)];
  const double lambda = diag > 0 ? damping * diag / double(n) : 1.0;
  for (int64_t i = 0; i < n; ++i) {
    M[static_cast<size_t>(i * n + i)] += lambda;
    rhs[static_cast<size_t>(i)] += lambda * x0[static_cast<size_t>(i)];
  }
  if (!choleskySolve(M, rhs, n)) return false;
  float* w1 = Wn.data<float>();
  for (int64_t i = 0; i < W.numel(); ++i)
    if (w0[i] != 0.0f) {
      const float v = static_cast<float>(rhs[static_cast<size_t>(cluster.at(w0[i]))]);
      w1[i] = v == 0.0f ? w0[i] : v;  // a shared value must not turn into a pruned zero
    }
  for (int64_t o = 0; o < nb; ++o) bias1[static_cast<size_t>(o)] = static_cast<float>(rhs[static_cast<size_t>(K + o)]);
  return true;
}

/// The per-channel least-squares systems of one layer, on its accumulated sums: channel o's
/// unknowns are its non-zero weights in `w` (+ the bias), pulled by the ridge towards the anchor
/// (`wa`, `ba`). `w` is read on every call, so zeroing weights in it changes the systems.
struct ChannelSystems {
  const LayerForm& f;
  const std::vector<Accum>& acc;  // per group
  const float* w;
  const std::vector<float>& bias;
  const float* wa;
  const std::vector<float>& ba;

  /// Channel o's unknowns S (row indices; K = the bias), their current values v0 and anchor va.
  void unknowns(int64_t o, std::vector<int64_t>& S, std::vector<double>& v0, std::vector<double>& va) const {
    S.clear();
    for (int64_t k = 0; k < f.K; ++k)
      if (w[f.windex(o, k)] != 0.0f) S.push_back(k);
    if (f.bias) S.push_back(f.K);
    v0.resize(S.size());
    va.resize(S.size());
    for (size_t i = 0; i < S.size(); ++i) {
      const bool b = S[i] == f.K;
      v0[i] = b ? double(bias[static_cast<size_t>(o)]) : double(w[f.windex(o, S[i])]);
      va[i] = b ? double(ba[static_cast<size_t>(o)]) : double(wa[f.windex(o, S[i])]);
    }
  }

  /// Error of weights v on S for output oi of the sums a: vᵀ G v − 2 cᵀ v + yy.
  double err(const Accum& a, int64_t oi, const std::vector<int64_t>& S, const std::vector<double>& v) const {
    const int64_t s = static_cast<int64_t>(S.size());
    double e = a.yy[static_cast<size_t>(oi)];
    for (int64_t i = 0; i < s; ++i) {
      const int64_t ki = S[static_cast<size_t>(i)];
      double gv = 0;
      for (int64_t j = 0; j < s; ++j) gv += a.G[static_cast<size_t>(ki * a.Kb + S[static_cast<size_t>(j)])] * v[static_cast<size_t>(j)];
      e += v[static_cast<size_t>(i)] * (gv - 2.0 * a.C[static_cast<size_t>(ki * f.ocg + oi)]);
    }
    return e;
  }

  /// G_SS + λI of the sums a (less `minus`, a held-out fold, when given), λ = damp · mean(diag
  /// G_SS), factorised by choleskyLower into L (`threads` for it). Channels with the same S share
  /// it. False when not positive definite.
  bool factor(const Accum& a, const Accum* minus, const std::vector<int64_t>& S, double damp, std::vector<double>& L,
              double& lambda, int threads) const {
    const int64_t s = static_cast<int64_t>(S.size());
    auto G = [&](int64_t i, int64_t j) {
      const size_t at = static_cast<size_t>(i * a.Kb + j);
      return minus ? a.G[at] - minus->G[at] : a.G[at];
    };
    L.resize(static_cast<size_t>(s * s));
    double diag = 0;
    for (int64_t i = 0; i < s; ++i) diag += G(S[static_cast<size_t>(i)], S[static_cast<size_t>(i)]);
    lambda = diag > 0 ? damp * diag / double(s) : 1.0;
    for (int64_t i = 0; i < s; ++i) {
      const int64_t ki = S[static_cast<size_t>(i)];
      for (int64_t j = 0; j < s; ++j) L[static_cast<size_t>(i * s + j)] = G(ki, S[static_cast<size_t>(j)]);
      L[static_cast<size_t>(i * s + i)] += lambda;
    }
    return choleskyLower(L, s, threads);
  }

  /// The ridge solution for output oi, pulling towards `anchor`, with the factor L and λ that
  /// factor() gave for the same sums (and `minus`) and S.
  void solveWith(const Accum& a, const Accum* minus, int64_t oi, const std::vector<int64_t>& S,
                 const std::vector<double>& anchor, const std::vector<double>& L, double lambda,
                 std::vector<double>& x) const {
    const int64_t s = static_cast<int64_t>(S.size());
    x.assign(static_cast<size_t>(s), 0.0);
    for (int64_t i = 0; i < s; ++i) {
      const size_t c = static_cast<size_t>(S[static_cast<size_t>(i)] * f.ocg + oi);
      x[static_cast<size_t>(i)] = (minus ? a.C[c] - minus->C[c] : a.C[c]) + lambda * anchor[static_cast<size_t>(i)];
    }
    choleskySubstitute(L, x, s);
  }

  /// The ridge solution on the sums a (less `minus`) with λ = damp · mean(diag G_SS), pulling
  /// towards `anchor`: factor() then solveWith(). `L` receives the Cholesky factor of G_SS + λI
  /// (lower triangle); callers reuse it from channel to channel (a fresh matrix per channel spent
  /// most of its time in page faults and zeroing).
  bool solve(const Accum& a, const Accum* minus, int64_t oi, const std::vector<int64_t>& S,
             const std::vector<double>& anchor, double damp, std::vector<double>& x, std::vector<double>& L) const {
    double lambda = 0;
    const bool ok = factor(a, minus, S, damp, L, lambda, 1);
    if (ok) solveWith(a, minus, oi, S, anchor, L, lambda, x);
    return ok;
  }

  /// OBS saliency (row index k, x_k² / [H⁻¹]_kk at the ridge fit) of each surviving weight of
  /// channel o; the diagonal estimate w_k² (G_kk + λ) where H is not positive definite. `L`:
  /// scratch for the factor.
  void saliencies(int64_t o, double damping, std::vector<std::pair<double, int64_t>>& out, std::vector<double>& L) const {
    const int64_t oi = o % f.ocg;
    const Accum& a = acc[static_cast<size_t>(o / f.ocg)];
    std::vector<int64_t> S;
    std::vector<double> v0, va, x;
    unknowns(o, S, v0, va);
    const int64_t s = static_cast<int64_t>(S.size());
    out.clear();
    if (solve(a, nullptr, oi, S, va, damping, x, L)) {
      // [H⁻¹]_ii = ‖L⁻¹ e_i‖²: forward substitution from row i on.
      std::vector<double> y(static_cast<size_t>(s));
      for (int64_t i = 0; i < s; ++i) {
        if (S[static_cast<size_t>(i)] == f.K) continue;  // the bias is never removed
        double d = 0;
        for (int64_t j = i; j < s; ++j) {
          double t = j == i ? 1.0 : 0.0;
          const double* Lj = &L[static_cast<size_t>(j * s)];
          for (int64_t k = i; k < j; ++k) t -= Lj[k] * y[static_cast<size_t>(k)];
          y[static_cast<size_t>(j)] = t / Lj[j];
          d += y[static_cast<size_t>(j)] * y[static_cast<size_t>(j)];
        }
        const double xi = x[static_cast<size_t>(i)];
        out.emplace_back(xi * xi / d, S[static_cast<size_t>(i)]);
      }
      return;
    }
    double diag = 0;
    for (int64_t i = 0; i < s; ++i) diag += a.G[static_cast<size_t>(S[static_cast<size_t>(i)] * (a.Kb + 1))];
    const double lambda = diag > 0 ? damping * diag / double(std::max<int64_t>(s, 1)) : 1.0;
    for (int64_t i = 0; i < s; ++i) {
      const int64_t k = S[static_cast<size_t>(i)];
      if (k == f.K) continue;
      const double wk = v0[static_cast<size_t>(i)];
      out.emplace_back(wk * wk * (a.G[static_cast<size_t>(k * (a.Kb + 1))] + lambda), k);
    }
  }
};

/// OBS selection (LsqOptions::select_zeros): zeroes, in `w` (the buffer cs.w reads) and `w1`, the
/// weights with the lowest saliencies: layer-wide up to `target` zeros, or per N:M group
/// (opts.select_m > 0), in opts.select_rounds rounds each scored after the ones before. Adds the
/// count to `selected`.
void selectObs(const ChannelSystems& cs, float* w, float* w1, int64_t numel, int64_t target, const LsqOptions& opts,
               int threads, int64_t& selected) {
  const LayerForm& f = cs.f;
  auto zero = [&](int64_t flat) {
    w[flat] = 0.0f;
    w1[flat] = 0.0f;
    ++selected;
  };
  const int64_t rounds = std::max<int64_t>(1, opts.select_rounds);
  std::vector<std::vector<std::pair<double, int64_t>>> scores(static_cast<size_t>(f.out));
  if (opts.select_m > 0) {
    // N:M along the input channels: a group is M consecutive input channels at one kernel
    // position of one output channel; a trailing group shorter than M stays dense.
    const int64_t M = opts.select_m, drop = opts.select_m - opts.select_n;
    const int64_t inner = f.kind == LayerForm::Kind::Conv ? f.wshape[2] * f.wshape[3] : 1, cin = f.K / inner;
    for (int64_t t = 0; t < rounds; ++t) {
      std::vector<std::vector<int64_t>> removals(static_cast<size_t>(f.out));
#pragma omp parallel num_threads(threads)
      {
        std::vector<double> L;  // this thread's scratch
#pragma omp for schedule(dynamic, 1)
        for (int64_t o = 0; o < f.out; ++o) {
          auto& sc = scores[static_cast<size_t>(o)];
          cs.saliencies(o, opts.damping, sc, L);
          std::map<int64_t, std::vector<std::pair<double, int64_t>>> groups;  // group key -> (score, k)
          for (const auto& [v, k] : sc) {
            const int64_t c = k / inner, grp = c / M;
            if ((grp + 1) * M <= cin) groups[grp * inner + k % inner].emplace_back(v, k);
          }
          for (auto& [key, members] : groups) {
            const int64_t need = drop - (M - static_cast<int64_t>(members.size()));  // zeros still missing
            if (need <= 0) continue;
            const int64_t take = (need + (rounds - t) - 1) / (rounds - t);
            std::sort(members.begin(), members.end());
            for (int64_t j = 0; j < take; ++j) removals[static_cast<size_t>(o)].push_back(f.windex(o, members[static_cast<size_t>(j)].second));
          }
        }
      }
      for (const auto& rm : removals)
        for (int64_t flat : rm) zero(flat);
    }
    return;
  }
  int64_t zeros = 0;
  for (int64_t i = 0; i < numel; ++i) zeros += w[i] == 0.0f;
  target = std::min(target, numel);
  for (int64_t t = 0; t < rounds && target > zeros; ++t) {
    const int64_t want = (target - zeros + (rounds - t) - 1) / (rounds - t);  // the rest spread evenly
#pragma omp parallel num_threads(threads)
    {
      std::vector<double> L;  // this thread's scratch
#pragma omp for schedule(dynamic, 1)
      for (int64_t o = 0; o < f.out; ++o) cs.saliencies(o, opts.damping, scores[static_cast<size_t>(o)], L);
    }
    std::vector<std::pair<double, int64_t>> all;  // (score, flat index): ties by position
    for (int64_t o = 0; o < f.out; ++o)
      for (const auto& [v, k] : scores[static_cast<size_t>(o)]) all.emplace_back(v, f.windex(o, k));
    const auto k = static_cast<size_t>(std::min<int64_t>(want, static_cast<int64_t>(all.size())));
    if (k == 0) break;
    std::nth_element(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k - 1), all.end());
    for (size_t i = 0; i < k; ++i) zero(all[i].second);
    zeros += static_cast<int64_t>(k);
  }
}

}  // namespace

// A relative error that is not finite (the reference output overflowed to inf, so the ratio is
// inf/inf) reads "not finite", not "-nan".
std::string describeError(double before, double after) {
  std::ostringstream s;
  auto put = [&](double v) {
    if (std::isfinite(v)) s << v;
    else s << "not finite";
  };
  s << std::setprecision(3) << "relative output error ";
  put(before);
  s << " -> ";
  put(after);
  return s.str();
}

RecoveryReference::RecoveryReference(const Model* reference, const Model& unmodified) : reference_(reference) {
  if (!reference_) return;
  ref_types_ = inferShapes(*reference_, ShapeOptions{1});
  step_types_ = inferShapes(unmodified, ShapeOptions{1});
}

bool RecoveryReference::usePipelineInput(const std::string& value) const {
  if (!reference_ || producerIndex(reference_->graph, value) < 0) return false;
  const auto a = ref_types_.find(value), b = step_types_.find(value);
  if (a == ref_types_.end() || b == step_types_.end() || !a->second.shape || !b->second.shape) return true;
  const SymShape &x = *a->second.shape, &y = *b->second.shape;
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i].known() && y[i].known() && x[i].value != y[i].value) return false;
  return true;
}

OptionSpec lsqCvRowsOption() {
  OptionSpec cv{"lsq_cv_rows", OptionType::Float, 0.0,
                "lsq: a Gemm/MatMul layer with fewer calibration rows than this times its inputs + 1 chooses its "
                "damping by 4-fold cross-validation, e.g. 8 (0 = never)"};
  cv.min = 0;
  cv.max = 1e6;
  return cv;
}

void checkLsqOptionsApply(const PassOptions& o) {
  if (o.getString("recover") == "lsq") return;
  // Given at all, their defaults included (lwc prune passes --lsq-cv-rows only when given).
  for (const char* k : {"lsq_rows", "lsq_damping", "lsq_cv_rows"})
    if (o.has(k) && o.given(k))
      fail(o.key(k), ": applies to the least-squares recovery, but ", o.ref("recover"), " is ", o.getString("recover"),
           "; drop it or set ", o.ref("recover"), " lsq");
}

std::vector<LsqLayerResult> lsqRecover(Model& m, const Model& unmodified, const std::vector<size_t>& nodes,
                                       PassContext& ctx, PassResult& r, const LsqOptions& opts) {
  if (!ctx.calib) fail("lsq recovery needs calibration data (--calib DIR or data.calib)");
  std::vector<LsqLayerResult> results;
  Graph& g = m.graph;
  auto ds = openCalibration(ctx, m);
  engine::SessionOptions so;  // plain sessions: the truncated graphs' outputs are the tensors we need
  so.threads = ctx.threads;
  // Each layer's input (in m) and reference output (in the pipeline's input, or in `unmodified`)
  // are computed from the tensors kept at a cut just before the layer, not from the model input:
  // work linear in depth, not quadratic. Up to kCutBudget per model kept (twice that while a cut
  // moves); a cut that needs more is not kept and the layer runs from the last one kept.
  constexpr int64_t kCutBudget = int64_t{512} << 20;
  ActivationCut cur_cut(ds->size(), so, kCutBudget), ref_cut(ds->size(), so, kCutBudget),
      unmodified_cut(ds->size(), so, kCutBudget);
  const RecoveryReference references(ctx.reference, unmodified);

  // Which node reads which activation does not change below (only constants are replaced).
  const GraphIndex graph_index(g);
  size_t done = 0;
  for (size_t idx : nodes) {
    const Node n = g.nodes[idx];
    ++done;
    LsqLayerResult res;
    res.node = n.describe();
    auto skip = [&](const std::string& why) { r.notes.push_back(n.describe() + ": not reconstructed (" + why + ")"); };
    const Tensor* wp = n.inputs.size() > 1 ? floatConstant(g, n.inputs[1]) : nullptr;
    if (!wp || g.isGraphInput(n.inputs[1])) {
      skip("weights are not a float constant");
      continue;
    }
    // A weight tensor other nodes read too: a re-fit for this node's inputs would have to be
    // written under a new name, untying the weights and growing the model (a shared conv of 2304
    // weights became two). Left as the pass made it, for every reader.
    if (const size_t uses = useCount(g, n.inputs[1]); uses > 1) {
      skip("its weights '" + n.inputs[1] + "' are read by " + std::to_string(uses) +
           " nodes; a re-fit for this one would untie them");
      continue;
    }
    const auto select_it = opts.shared ? opts.select_zeros.end() : opts.select_zeros.find(n.outputs.at(0));
    const bool select = select_it != opts.select_zeros.end();
    Tensor W = select ? wp->clone() : *wp;  // OBS selection zeroes weights in its own copy
    std::string why;
    // A MatMul's bias, when it has one, is the constant of the Add after it: the fit then matches
    // that Add's output and writes the bias back there.
    TrailingBias tb;
    auto form = layerFormIn(g, graph_index, n, W, opts.fit_bias, why, &tb);
    if (!form) {
      skip(why);
      continue;
    }
    const int bias_add = tb.node;
    const size_t bias_input = tb.input;
    const LayerForm& f = *form;
    // One line per layer: on large layers the exact per-channel solves take minutes (each channel
    // with its own mask factorises a matrix of its unknowns).
    const std::string layer_label = "lsq: layer " + std::to_string(done) + "/" + std::to_string(nodes.size()) + " " +
                                    n.describe();
    if (ctx.progress)
      ctx.progress(layer_label + ": " + std::to_string(f.out) + " channels, up to " + std::to_string(f.Kb()) +
                   " unknowns each");
    // Existing bias (Conv B, Gemm C) must be a constant vector of `out` (or one) values.
    std::vector<float> bias0(static_cast<size_t>(f.out), 0.0f);
    if (f.bias && n.hasInput(2)) {
      const Tensor* b = floatConstant(g, n.inputs[2]);
      if (!b || !(b->numel() == f.out || b->numel() == 1)) {
        skip("bias is not a constant vector");
        continue;
      }
      for (int64_t o = 0; o < f.out; ++o) bias0[static_cast<size_t>(o)] = static_cast<float>(b->at(b->numel() == 1 ? 0 : o));
    }
    if (bias_add >= 0) {
      const Tensor& b = *floatConstant(g, g.nodes[size_t(bias_add)].inputs[bias_input]);
      for (int64_t o = 0; o < f.out; ++o) bias0[static_cast<size_t>(o)] = b.data<float>()[o];
    }

    // Reference: the pipeline's input model when it computes this tensor, else this step's input.
    const std::string& yname = bias_add >= 0 ? g.nodes[size_t(bias_add)].outputs.at(0) : n.outputs.at(0);
    // The ridge's anchor: this layer's weights before the pipeline first re-fitted it (recorded now
    // when this is the first time, or when its shape changed since).
    const float* wa = W.data<float>();
    const std::vector<float>* ba = &bias0;
    if (ctx.recovery_anchors && !opts.shared) {
      auto& anchors = *ctx.recovery_anchors;
      auto it = anchors.find(yname);
      if (it == anchors.end() || it->second.weights.shape() != W.shape() || it->second.bias.size() != bias0.size())
        it = anchors.insert_or_assign(yname, RecoveryAnchor{W.clone(), bias0}).first;
      wa = it->second.weights.data<float>();
      ba = &it->second.bias;
    }
    const bool use_ref = references.usePipelineInput(yname);
    const Model& ref_model = use_ref ? *ctx.reference : unmodified;
    ActivationCut& ref = use_ref ? ref_cut : unmodified_cut;
    ref.begin(ref_model, static_cast<size_t>(producerIndex(ref_model.graph, yname) + 1), yname);
    const std::string& xname = n.inputs[0];
    std::string in_name;
    for (const auto& vi : g.inputs)
      if (!g.initializers.contains(vi.name)) {
        in_name = vi.name;
        break;
      }
    if (xname != in_name) cur_cut.begin(m, idx, xname);  // nodes before this layer are final

    // Channel o of this layer is channel refChannel(o) of the reference output.
    const auto kept_it = opts.ref_channels.find(n.outputs.at(0));
    const std::vector<int64_t>* kept = kept_it == opts.ref_channels.end() ? nullptr : &kept_it->second;
    auto refChannel = [&](int64_t o) { return kept ? (*kept)[static_cast<size_t>(o)] : o; };
    auto channelsFit = [&](int64_t ref_out) {
      if (!kept) return ref_out == f.out;
      if (static_cast<int64_t>(kept->size()) != f.out) return false;
      return std::all_of(kept->begin(), kept->end(), [&](int64_t c) { return c >= 0 && c < ref_out; });
    };
    const int64_t Kb = f.Kb();
    std::vector<Accum> acc;
    for (int64_t gi = 0; gi < f.groups; ++gi) acc.emplace_back(Kb, f.ocg);
    // Per-fold sums (folds by sample) for choosing the damping of an under-determined Gemm/MatMul
    // by cross-validation; the whole-data sums above stay as they are. Up to 2048 inputs: the four
    // folds then take at most 4 x 32 MB.
    constexpr int kFolds = 4;
    const bool cv_possible = opts.cv_rows_per_weight > 0 && !opts.shared && f.kind != LayerForm::Kind::Conv &&
                             f.groups == 1 && Kb <= 2049;
    std::vector<Accum> folds;
    for (int k = 0; cv_possible && k < kFolds; ++k) folds.emplace_back(Kb, f.ocg);
    std::vector<float> A, Yg, Af, Yf;
    int64_t sample_base = 0;
    size_t batch_index = 0;
    ds->reset();
    while (auto b = ds->next(ctx.calib->batch)) {
      const Tensor X = xname == in_name ? b->inputs : cur_cut.get(batch_index, b->inputs);
      const Tensor Y = ref.get(batch_index, b->inputs);
      ++batch_index;
      if (X.empty() || Y.empty() || X.dtype() != DType::Float32 || Y.dtype() != DType::Float32)
        fail(n.describe(), ": lsq recovery could not observe the layer's float input and output");
      const int64_t N = X.dim(0);
      if (f.kind == LayerForm::Kind::Conv) {
        if (X.rank() != 4 || Y.rank() != 4) fail(n.describe(), ": lsq recovery supports 2-D convolutions only");
        const engine::ConvParams cp = engine::parseConvParams(n, X.shape(), W.shape());
        if (!channelsFit(Y.dim(1)) || Y.dim(2) != cp.geo.out[0] || Y.dim(3) != cp.geo.out[1])
          fail(n.describe(), ": reference output ", shapeStr(Y.shape()), " does not match the layer");
      } else {
        const int64_t yc = Y.dim(Y.rank() - 1);
        if (X.dim(X.rank() - 1) != f.K || !channelsFit(yc) || X.numel() / f.K != Y.numel() / yc)
          fail(n.describe(), ": input ", shapeStr(X.shape()), " / output ", shapeStr(Y.shape()), " do not match the weights");
      }
      for (int64_t gi = 0; gi < f.groups; ++gi) {
        const int64_t rows = sampleRows(n, f, X, &Y, gi, opts.rows_per_sample, sample_base, refChannel, A, Yg);
        accumulate(acc[static_cast<size_t>(gi)], A, Yg, rows, f.ocg, ctx.threads);
        if (!folds.empty() && rows > 0) {
          const int64_t R = rows / N;  // each sample's rows are contiguous
          for (int k = 0; k < kFolds; ++k) {
            Af.clear();
            Yf.clear();
            int64_t fr = 0;
            for (int64_t si = 0; si < N; ++si) {
              if ((sample_base + si) % kFolds != k) continue;
              Af.insert(Af.end(), A.begin() + si * R * Kb, A.begin() + (si + 1) * R * Kb);
              Yf.insert(Yf.end(), Yg.begin() + si * R * f.ocg, Yg.begin() + (si + 1) * R * f.ocg);
              fr += R;
            }
            accumulate(folds[static_cast<size_t>(k)], Af, Yf, fr, f.ocg, ctx.threads);
          }
        }
      }
      sample_base += N;
    }
    ref.finish();
    if (xname != in_name) cur_cut.finish();

    // Solve each output channel over its surviving weights (+ bias).
    Tensor Wn = W.clone();
    std::vector<float> bias1 = bias0;
    const float* w0 = W.data<float>();
    float* w1 = Wn.data<float>();
    std::vector<double> e_before(static_cast<size_t>(f.out), 0.0), e_after(static_cast<size_t>(f.out), 0.0),
        yy(static_cast<size_t>(f.out), 0.0);
    std::vector<char> failed(static_cast<size_t>(f.out), 0);
    if (opts.shared) {
      const bool solved = solveShared(f, acc, W, bias0, Wn, bias1, opts.damping);
      double before = 0, after = 0;
      for (int64_t o = 0; o < f.out; ++o) {
        const Accum& a = acc[static_cast<size_t>(o / f.ocg)];
        const float* wn = Wn.data<float>();
        e_before[static_cast<size_t>(o)] = outputError(a, f, o, w0, bias0[static_cast<size_t>(o)]);
        e_after[static_cast<size_t>(o)] = outputError(a, f, o, wn, bias1[static_cast<size_t>(o)]);
        yy[static_cast<size_t>(o)] = a.yy[static_cast<size_t>(o % f.ocg)];
        before += e_before[static_cast<size_t>(o)];
        after += e_after[static_cast<size_t>(o)];
      }
      if (!solved || !(after <= before)) {  // keep the layer as it was
        Wn = W.clone();
        bias1 = bias0;
        e_after = e_before;
        if (!solved) std::fill(failed.begin(), failed.end(), 1);
      }
    }
    const int nt = ctx.threads > 0 ? ctx.threads : omp_get_max_threads();
    const ChannelSystems cs{f, acc, w0, bias0, wa, *ba};
    if (select) selectObs(cs, W.data<float>(), w1, W.numel(), select_it->second, opts, nt, res.selected);
    // Under-determined Gemm/MatMul: the damping with the least cross-validated error.
    res.damping = opts.damping;
    if (!folds.empty() && double(acc[0].rows) < opts.cv_rows_per_weight * double(Kb)) {
      const double grid[] = {1, 10, 100, 1000};
      constexpr int64_t kGrid = 4;
      std::vector<int64_t> chans;
      const int64_t nc = std::min<int64_t>(8, f.out);
      for (int64_t j = 0; j < nc; ++j) chans.push_back(j * f.out / nc);
      const int64_t tasks = static_cast<int64_t>(chans.size()) * kGrid * kFolds;
      std::vector<double> cverr(static_cast<size_t>(tasks), 0.0);
      std::vector<char> cvok(static_cast<size_t>(tasks), 1);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
      for (int64_t t = 0; t < tasks; ++t) {
        const int64_t o = chans[static_cast<size_t>(t / (kGrid * kFolds))], gv = (t / kFolds) % kGrid, k = t % kFolds;
        std::vector<int64_t> S;
        std::vector<double> v0, va, x, L;
        cs.unknowns(o, S, v0, va);
        if (S.empty()) continue;
        const Accum& held = folds[static_cast<size_t>(k)];
        if (!cs.solve(acc[0], &held, o, S, va, opts.damping * grid[gv], x, L))
          cvok[static_cast<size_t>(t)] = 0;
        else
          cverr[static_cast<size_t>(t)] = cs.err(held, o, S, x);
      }
      int64_t best = -1;
      double best_err = 0;
      for (int64_t gv = 0; gv < kGrid; ++gv) {
        double e = 0;
        bool ok = true;
        for (int64_t t = 0; t < tasks; ++t)
          if ((t / kFolds) % kGrid == gv) {
            ok = ok && cvok[static_cast<size_t>(t)];
            e += cverr[static_cast<size_t>(t)];
          }
        if (ok && (best < 0 || e < best_err)) {
          best = gv;
          best_err = e;
        }
      }
      if (best >= 0) res.damping = opts.damping * grid[best];
      res.cv = true;
    }
    // Channels with the same unknowns (every channel of a dense layer, such as the consumers
    // re-fitted after channel pruning) share G_SS + λI: one factorisation per distinct set, then
    // each channel's own right-hand side. The same bits as a factorisation per channel (the
    // factor does not depend on the thread count); resnet18's consumers have 4608 unknowns and
    // 512 channels each.
    struct Family {
      int64_t gi;
      std::vector<int64_t> S;
      std::vector<int64_t> channels;
    };
    std::vector<Family> families;
    int64_t max_unknowns = 0;  // of one output channel: its surviving weights (+ the bias)
    if (!opts.shared) {
      std::map<std::pair<int64_t, std::vector<int64_t>>, size_t> index;
      std::vector<int64_t> S;
      std::vector<double> v0, va;
      for (int64_t o = 0; o < f.out; ++o) {
        cs.unknowns(o, S, v0, va);
        const auto [it, fresh] = index.try_emplace({o / f.ocg, S}, families.size());
        if (fresh) families.push_back({o / f.ocg, S, {}});
        families[it->second].channels.push_back(o);
        max_unknowns = std::max<int64_t>(max_unknowns, static_cast<int64_t>(S.size()));
      }
    }
    // Channel o of family fam, with its family's factor (ok: positive definite).
    auto fitChannel = [&](const Family& fam, int64_t o, const std::vector<double>& L, double lambda, bool ok) {
      const int64_t oi = o % f.ocg;
      const Accum& a = acc[static_cast<size_t>(fam.gi)];
      std::vector<int64_t> S;
      std::vector<double> v0, va, x;
      cs.unknowns(o, S, v0, va);
      const int64_t s = static_cast<int64_t>(S.size());
      auto err = [&](const std::vector<double>& v) { return cs.err(a, oi, S, v); };
      yy[static_cast<size_t>(o)] = a.yy[static_cast<size_t>(oi)];
      const double eb = err(v0);
      e_before[static_cast<size_t>(o)] = eb;
      e_after[static_cast<size_t>(o)] = eb;
      if (s == 0) return;
      if (!ok) {
        failed[static_cast<size_t>(o)] = 1;
        return;
      }
      cs.solveWith(a, nullptr, oi, S, va, L, lambda, x);
      const double ea = err(x);
      if (!(ea <= eb)) return;  // never make a channel worse on the data it was fitted to
      e_after[static_cast<size_t>(o)] = ea;
      for (int64_t i = 0; i < s; ++i) {
        const int64_t ki = S[static_cast<size_t>(i)];
        if (ki == f.K)
          bias1[static_cast<size_t>(o)] = static_cast<float>(x[static_cast<size_t>(i)]);
        else
          w1[f.windex(o, ki)] = static_cast<float>(x[static_cast<size_t>(i)]);
      }
    };
    if (static_cast<int64_t>(families.size()) < nt) {
      // Few large families: each factorisation on every thread, then its channels in parallel.
      for (const Family& fam : families) {
        std::vector<double> L;
        double lambda = 0;
        const bool ok = !fam.S.empty() && cs.factor(acc[static_cast<size_t>(fam.gi)], nullptr, fam.S, res.damping, L, lambda, nt);
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
        for (size_t c = 0; c < fam.channels.size(); ++c) fitChannel(fam, fam.channels[c], L, lambda, ok);
      }
    } else {
      // Channels with masks of their own: one factorisation each, minutes on a large layer, so the
      // status line counts them: from whichever thread holds the lock (never two calls at once; a
      // count is skipped rather than waited for), and an exception from it must not leave the
      // parallel region.
      std::atomic<int64_t> fitted{0};
      std::mutex status_mu;
#pragma omp parallel num_threads(nt)
      {
        // One factor buffer per thread, reused: a fresh one per channel (42 MB at 2305 unknowns) was
        // about half of the time, in page faults and zeroing.
        std::vector<double> L;
#pragma omp for schedule(dynamic, 1)
        for (size_t fi = 0; fi < families.size(); ++fi) {
          const Family& fam = families[fi];
          double lambda = 0;
          const bool ok = !fam.S.empty() && cs.factor(acc[static_cast<size_t>(fam.gi)], nullptr, fam.S, res.damping, L, lambda, 1);
          for (int64_t o : fam.channels) fitChannel(fam, o, L, lambda, ok);
          const int64_t k = fitted += static_cast<int64_t>(fam.channels.size());
          if (std::unique_lock<std::mutex> lock(status_mu, std::try_to_lock); ctx.status && lock) {
            try {
              ctx.status(layer_label + ": " + std::to_string(k) + "/" + std::to_string(f.out) + " channels fitted");
            } catch (...) {  // progress only
            }
          }
        }
      }
    }
    double eb = 0, ea = 0, ys = 0;
    for (int64_t o = 0; o < f.out; ++o) {
      eb += e_before[static_cast<size_t>(o)];
      ea += e_after[static_cast<size_t>(o)];
      ys += yy[static_cast<size_t>(o)];
      res.channels_kept += failed[static_cast<size_t>(o)];
    }
    res.channels = f.out;
    res.error_before = ys > 0 ? std::max(eb, 0.0) / ys : 0;
    res.error_after = ys > 0 ? std::max(ea, 0.0) / ys : 0;
    // Write back: the weights (they may be shared: a fresh name then) and the bias.
    const std::string base = n.name.empty() ? n.op_type : n.name;
    const std::string wname = replaceConstant(g, n.inputs[1], base + "_w", std::move(Wn));
    g.nodes[idx].inputs[1] = wname;
    if (bias_add >= 0) {
      const Node& a = g.nodes[size_t(bias_add)];
      Tensor nb(DType::Float32, g.initializers.at(a.inputs[bias_input]).shape());
      std::copy(bias1.begin(), bias1.end(), nb.data<float>());
      const std::string bname =
          replaceConstant(g, a.inputs[bias_input], (a.name.empty() ? a.op_type : a.name) + "_bias", std::move(nb));
      g.nodes[size_t(bias_add)].inputs[bias_input] = bname;
    } else if (f.bias) {
      Tensor nb(DType::Float32, {f.out});
      std::copy(bias1.begin(), bias1.end(), nb.data<float>());
      const std::string bname = replaceConstant(g, n.hasInput(2) ? n.inputs[2] : "", base + "_bias", std::move(nb));
      Node& q = g.nodes[idx];
      if (q.inputs.size() < 3) q.inputs.resize(3);
      q.inputs[2] = bname;
    }
    res.applied = true;
    std::string note = n.describe() + ": " +
                       (res.selected ? "obs selected " + std::to_string(res.selected) + " weights to zero, " : "") + "lsq " +
                       describeError(res.error_before, res.error_after);
    if (res.cv) {
      std::ostringstream d;
      d << ", damping " << res.damping << " (4-fold cross-validation: " << acc[0].rows << " rows for " << Kb << " weights)";
      note += d.str();
    }
    if (res.channels_kept) note += " (" + std::to_string(res.channels_kept) + " channels kept: not positive definite)";
    // Fewer calibration rows than a channel's unknowns (its surviving weights): the fit can match
    // the few samples and not the data (resnet re-fitted on 1 calibration image: "0.125 -> 0",
    // 94.5 -> 43.6 % top-1, without a word). Counting the dense width instead fired on lenet300's
    // fc1 with the bundled 500 images, where half the weights survive and the fit generalises.
    // Half as many rows as unknowns, not just fewer: the ridge towards the original weights keeps a
    // nearly determined fit sound (lenet300's fc1: 500 rows for up to 532 unknowns generalises).
    if (!res.cv && max_unknowns > 0 && 2 * acc[0].rows < max_unknowns)
      note += " (only " + std::to_string(acc[0].rows) + " calibration rows for up to " + std::to_string(max_unknowns) +
              " unknowns per output: underdetermined, it can match those samples rather than the data; give more "
              "calibration data)";
    r.notes.push_back(note);
    results.push_back(res);
  }
  return results;
}

}  // namespace lwc::passes
