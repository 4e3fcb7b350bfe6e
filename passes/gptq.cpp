#include "passes/gptq.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "lwc/status.h"

namespace lwc::passes {

namespace {

/// U with H⁻¹ = Uᵀ U (upper triangular, n x n row-major), for H (n x n, row-major, symmetric
/// positive definite). With J the order reversal: J H J = L Lᵀ gives H = (J L J)(J L J)ᵀ, so
/// U = (J L J)⁻¹ = J L⁻¹ J, the same matrix as the Cholesky factor of H⁻¹, at the cost of one
/// factorisation and one triangular inverse. False when H is not numerically positive definite.
bool upperFactorOfInverse(const std::vector<double>& H, int64_t n, std::vector<double>& U, int threads) {
  auto at = [n](int64_t i, int64_t j) { return static_cast<size_t>(i * n + j); };
  std::vector<double> L(static_cast<size_t>(n * n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) L[at(i, j)] = H[at(n - 1 - i, n - 1 - j)];
  if (!choleskyLower(L, n, threads)) return false;
  U.assign(static_cast<size_t>(n * n), 0.0);
  // Column j of L⁻¹ by forward substitution; U[n-1-i][n-1-j] = (L⁻¹)[i][j]. Columns are
  // independent, each summed in a fixed order. kCols columns at a time, so that each row of L is
  // read from memory once for all of them rather than once per column (at a few thousand columns
  // the substitution was bound by reading L); each column's sums are the same loop as alone.
  constexpr int64_t kCols = 8;
  const int64_t blocks = (n + kCols - 1) / kCols;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads > 0 ? threads : 1) if (threads > 1 && n > 128)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = b * kCols, nc = std::min(kCols, n - j0);
    std::vector<std::vector<double>> xs(static_cast<size_t>(nc), std::vector<double>(static_cast<size_t>(n), 0.0));
    for (int64_t c = 0; c < nc; ++c) xs[static_cast<size_t>(c)][static_cast<size_t>(j0 + c)] = 1.0 / L[at(j0 + c, j0 + c)];
    for (int64_t i = j0 + 1; i < n; ++i) {
      const double* Li = &L[at(i, 0)];
      for (int64_t c = 0; c < nc; ++c) {
        const int64_t j = j0 + c;
        if (i <= j) break;
        std::vector<double>& x = xs[static_cast<size_t>(c)];
        const double* xv = x.data();
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t k = j; k < i; ++k) s += Li[k] * xv[k];
        x[static_cast<size_t>(i)] = -s / Li[i];
      }
    }
    for (int64_t c = 0; c < nc; ++c)
      for (int64_t i = j0 + c; i < n; ++i) U[at(n - 1 - i, n - 1 - (j0 + c))] = xs[static_cast<size_t>(c)][static_cast<size_t>(i)];
  }
  for (double v : U)
    if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace

GptqResult gptqRound(const LayerGram& lg, const Tensor& W, const Tensor& nearest_q, const std::vector<float>& bias,
                     const Tensor& scale, float qmax, double damping, int threads) {
  const LayerForm& f = lg.form;
  if (static_cast<int64_t>(lg.G.size()) != f.groups || W.numel() != f.out * f.K || W.dtype() != DType::Float32)
    throw InternalError("gptqRound: the Gram matrices do not fit the weights");
  if (nearest_q.dtype() != DType::Int8 || nearest_q.shape() != W.shape())
    throw InternalError("gptqRound: the round-to-nearest integers do not fit the weights");
  if (!(scale.numel() == 1 || scale.numel() == f.out)) throw InternalError("gptqRound: one scale or one per output channel");
  if (f.K + 1 > kGptqMaxColumns) throw InternalError("gptqRound: more input columns than kGptqMaxColumns");
  const bool has_bias = f.bias && static_cast<int64_t>(bias.size()) == f.out;
  const int64_t Kb = f.Kb(), n = f.K + (has_bias ? 1 : 0);
  GptqResult r;
  r.q = Tensor(DType::Int8, W.shape());
  if (has_bias) r.bias = bias;
  r.channels = f.out;
  const float* w = W.data<float>();
  const float* sc = scale.data<float>();
  int8_t* Q = r.q.data<int8_t>();
  const int8_t* qn = nearest_q.data<int8_t>();
  std::vector<double> e_near(static_cast<size_t>(f.out), 0.0), e_gptq(static_cast<size_t>(f.out), 0.0);
  std::vector<char> nearest(static_cast<size_t>(f.out), 0);
  std::vector<char> failed(static_cast<size_t>(f.groups), 0);  // 1: not positive definite, 2: not finite
  const int nt = threads > 0 ? threads : omp_get_max_threads();

  auto group = [&](int64_t gi, bool parallel_outputs) {
    const std::vector<double>& G = lg.G[static_cast<size_t>(gi)];
    // Column order: weights by decreasing H_kk (the inputs with most energy first), the bias last.
    std::vector<int64_t> perm(static_cast<size_t>(f.K));
    std::iota(perm.begin(), perm.end(), int64_t{0});
    std::stable_sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) {
      return G[static_cast<size_t>(a * Kb + a)] > G[static_cast<size_t>(b * Kb + b)];
    });
    if (has_bias) perm.push_back(f.K);
    std::vector<double> Gp(static_cast<size_t>(n * n));
    double mean = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        Gp[static_cast<size_t>(i * n + j)] = G[static_cast<size_t>(perm[static_cast<size_t>(i)] * Kb + perm[static_cast<size_t>(j)])];
    for (int64_t k = 0; k < f.K; ++k) mean += G[static_cast<size_t>(k * Kb + k)];
    mean /= double(std::max<int64_t>(f.K, 1));
    const double lambda = mean > 0 && std::isfinite(mean) ? damping * mean : 1.0;
    bool finite = std::isfinite(lambda);
    for (double v : Gp) finite = finite && std::isfinite(v);
    std::vector<double> U;
    bool ok = false;
    if (finite) {
      std::vector<double> H = Gp;
      for (int64_t i = 0; i < n; ++i) H[static_cast<size_t>(i * n + i)] += lambda;
      ok = upperFactorOfInverse(H, n, U, parallel_outputs ? nt : 1);
    }
    if (!ok) failed[static_cast<size_t>(gi)] = finite ? 1 : 2;

    auto quad = [&](const std::vector<double>& d) {  // dᵀ Gp d, from the upper triangle (Gp is symmetric)
      double e = 0;
      const double* dv = d.data();
      for (int64_t i = 0; i < n; ++i) {
        const double* row = &Gp[static_cast<size_t>(i * n)];
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = i + 1; j < n; ++j) s += row[j] * dv[j];
        e += dv[i] * (row[i] * dv[i] + 2.0 * s);
      }
      return e;
    };
    // kRows output channels at a time: each row of U is then read once for all of them (U is
    // 170 MB at K = 4608, and reading it once per channel bound the rounding).
    // Each channel's arithmetic is the same as alone, in the same order.
    constexpr int64_t kRows = 8;
    const int64_t blocks = (f.ocg + kRows - 1) / kRows;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) if (parallel_outputs)
    for (int64_t bi = 0; bi < blocks; ++bi) {
      const int64_t o0 = gi * f.ocg + bi * kRows, cnt = std::min(kRows, f.ocg - bi * kRows);
      std::vector<std::vector<double>> vs(static_cast<size_t>(cnt), std::vector<double>(static_cast<size_t>(n)));
      std::vector<std::vector<int8_t>> qgs(static_cast<size_t>(cnt), std::vector<int8_t>(static_cast<size_t>(f.K)));
      // The weight errors of one channel: round-to-nearest's first (the bias entry stays 0, it
      // keeps the bias), GPTQ's after the rounding, when every e_near of the block is taken.
      std::vector<double> d(static_cast<size_t>(n), 0.0);
      for (int64_t c = 0; c < cnt; ++c) {
        const int64_t o = o0 + c;
        const float s = sc[scale.numel() == 1 ? 0 : o];
        for (int64_t i = 0; i < f.K; ++i) {
          const int64_t k = perm[static_cast<size_t>(i)];
          d[static_cast<size_t>(i)] = double(w[f.windex(o, k)]) - double(qn[f.windex(o, k)]) * s;
        }
        e_near[static_cast<size_t>(o)] = quad(d);
        std::vector<double>& v = vs[static_cast<size_t>(c)];
        for (int64_t i = 0; i < n; ++i) {
          const int64_t k = perm[static_cast<size_t>(i)];
          v[static_cast<size_t>(i)] = k == f.K ? double(bias[static_cast<size_t>(o)]) : double(w[f.windex(o, k)]);
        }
      }
      if (ok) {
        for (int64_t i = 0; i < f.K; ++i) {  // the bias column (i = K) is never rounded
          const int64_t k = perm[static_cast<size_t>(i)];
          const double* Ui = &U[static_cast<size_t>(i * n)];
          for (int64_t c = 0; c < cnt; ++c) {
            const int64_t o = o0 + c;
            const float s = sc[scale.numel() == 1 ? 0 : o];
            std::vector<double>& v = vs[static_cast<size_t>(c)];
            // A weight that is exactly zero (pruned before) stays zero: its "rounding" to 0 is an
            // error the later columns compensate, as SparseGPT treats a mask. Rounding the
            // compensated value filled pruned weights in again (lenet300 at 90 %: 86.7 % left, 2:4
            // groups broken).
            const double q = w[f.windex(o, k)] == 0.0f
                                 ? 0.0
                                 : std::clamp(std::nearbyint(v[static_cast<size_t>(i)] / s), double(-qmax), double(qmax));
            qgs[static_cast<size_t>(c)][static_cast<size_t>(k)] = static_cast<int8_t>(q);
            const double e = (v[static_cast<size_t>(i)] - q * s) / Ui[i];
            double* vv = v.data();
            for (int64_t j = i + 1; j < n; ++j) vv[j] -= e * Ui[j];
          }
        }
      }
      for (int64_t c = 0; c < cnt; ++c) {
        const int64_t o = o0 + c;
        const float s = sc[scale.numel() == 1 ? 0 : o];
        const std::vector<double>& v = vs[static_cast<size_t>(c)];
        const std::vector<int8_t>& qg = qgs[static_cast<size_t>(c)];
        bool use_gptq = false;
        if (ok) {
          for (int64_t i = 0; i < n; ++i) {
            const int64_t k = perm[static_cast<size_t>(i)];
            d[static_cast<size_t>(i)] = k == f.K ? double(bias[static_cast<size_t>(o)]) - v[static_cast<size_t>(i)]
                                                 : double(w[f.windex(o, k)]) - double(qg[static_cast<size_t>(k)]) * s;
          }
          e_gptq[static_cast<size_t>(o)] = quad(d);
          use_gptq = std::isfinite(e_gptq[static_cast<size_t>(o)]) && e_gptq[static_cast<size_t>(o)] < e_near[static_cast<size_t>(o)];
        }
        if (!use_gptq) {
          e_gptq[static_cast<size_t>(o)] = e_near[static_cast<size_t>(o)];
          nearest[static_cast<size_t>(o)] = 1;
        }
        for (int64_t k = 0; k < f.K; ++k) Q[f.windex(o, k)] = use_gptq ? qg[static_cast<size_t>(k)] : qn[f.windex(o, k)];
        if (use_gptq && has_bias) r.bias[static_cast<size_t>(o)] = static_cast<float>(v[static_cast<size_t>(n - 1)]);
      }
    }
  };
  if (f.groups > 1) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
    for (int64_t gi = 0; gi < f.groups; ++gi) group(gi, false);
  } else {
    group(0, true);
  }
  for (int64_t o = 0; o < f.out; ++o) {
    r.error_nearest += e_near[static_cast<size_t>(o)];
    r.error += e_gptq[static_cast<size_t>(o)];
    r.channels_nearest += nearest[static_cast<size_t>(o)];
  }
  for (char c : failed) {
    r.groups_not_pd += c == 1;
    r.groups_not_finite += c == 2;
  }
  return r;
}

}  // namespace lwc::passes
