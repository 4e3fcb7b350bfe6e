#include "passes/gptq.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "lwc/status.h"

namespace lwc::passes {

namespace {

/// U with H⁻¹ = Uᵀ U (upper triangular, row-major n x n), from H's lower Cholesky factor L (in place
/// in `L`'s lower triangle). False when H⁻¹ is not numerically positive definite.
bool upperFactorOfInverse(const std::vector<double>& L, int64_t n, std::vector<double>& U) {
  auto at = [n](int64_t i, int64_t j) { return static_cast<size_t>(i * n + j); };
  // Li = L⁻¹ (lower), column by column.
  std::vector<double> Li(static_cast<size_t>(n * n), 0.0);
  for (int64_t j = 0; j < n; ++j) {
    Li[at(j, j)] = 1.0 / L[at(j, j)];
    for (int64_t i = j + 1; i < n; ++i) {
      double s = 0;
      for (int64_t k = j; k < i; ++k) s += L[at(i, k)] * Li[at(k, j)];
      Li[at(i, j)] = -s / L[at(i, i)];
    }
  }
  // H⁻¹ = Liᵀ Li.
  std::vector<double> Hi(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t k = i; k < n; ++k) s += Li[at(k, i)] * Li[at(k, j)];
      Hi[at(i, j)] = Hi[at(j, i)] = s;
    }
  if (!choleskyLower(Hi, n)) return false;
  U.assign(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i; j < n; ++j) U[at(i, j)] = Hi[at(j, i)];
  return true;
}

}  // namespace

GptqResult gptqRound(const LayerGram& lg, const Tensor& W, const std::vector<float>& bias, const Tensor& scale, float qmax,
                     double damping, int threads) {
  const LayerForm& f = lg.form;
  if (static_cast<int64_t>(lg.G.size()) != f.groups || W.numel() != f.out * f.K || W.dtype() != DType::Float32)
    throw InternalError("gptqRound: the Gram matrices do not fit the weights");
  if (!(scale.numel() == 1 || scale.numel() == f.out)) throw InternalError("gptqRound: one scale or one per output channel");
  const bool has_bias = f.bias && static_cast<int64_t>(bias.size()) == f.out;
  const int64_t Kb = f.K + (f.bias ? 1 : 0), n = f.K + (has_bias ? 1 : 0);
  GptqResult r;
  r.q = Tensor(DType::Int8, W.shape());
  if (has_bias) r.bias = bias;
  r.channels = f.out;
  const float* w = W.data<float>();
  const float* sc = scale.data<float>();
  int8_t* Q = r.q.data<int8_t>();
  std::vector<double> e_near(static_cast<size_t>(f.out), 0.0), e_gptq(static_cast<size_t>(f.out), 0.0);
  std::vector<char> nearest(static_cast<size_t>(f.out), 0);
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
    std::vector<double> L = Gp, U;
    for (int64_t i = 0; i < n; ++i) L[static_cast<size_t>(i * n + i)] += lambda;
    const bool ok = choleskyLower(L, n) && upperFactorOfInverse(L, n, U);

    auto quad = [&](const std::vector<double>& d) {  // dᵀ Gp d
      double e = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double* row = &Gp[static_cast<size_t>(i * n)];
        double s = 0;
        for (int64_t j = 0; j < n; ++j) s += row[j] * d[static_cast<size_t>(j)];
        e += d[static_cast<size_t>(i)] * s;
      }
      return e;
    };
#pragma omp parallel for schedule(dynamic, 4) num_threads(nt) if (parallel_outputs)
    for (int64_t oi = 0; oi < f.ocg; ++oi) {
      const int64_t o = gi * f.ocg + oi;
      const float s = sc[scale.numel() == 1 ? 0 : o];
      std::vector<double> d(static_cast<size_t>(n), 0.0), v(static_cast<size_t>(n));
      std::vector<int8_t> qn(static_cast<size_t>(f.K)), qg(static_cast<size_t>(f.K));
      // Round-to-nearest exactly as quantize_static's quantizeWeights does it (float division).
      for (int64_t i = 0; i < f.K; ++i) {
        const int64_t k = perm[static_cast<size_t>(i)];
        const float x = w[f.windex(o, k)];
        qn[static_cast<size_t>(k)] = static_cast<int8_t>(std::clamp(std::nearbyint(x / s), -qmax, qmax));
        d[static_cast<size_t>(i)] = double(x) - double(qn[static_cast<size_t>(k)]) * s;
      }
      e_near[static_cast<size_t>(o)] = quad(d);
      bool use_gptq = false;
      if (ok) {
        for (int64_t i = 0; i < n; ++i) {
          const int64_t k = perm[static_cast<size_t>(i)];
          v[static_cast<size_t>(i)] = k == f.K ? double(bias[static_cast<size_t>(o)]) : double(w[f.windex(o, k)]);
        }
        for (int64_t i = 0; i < f.K; ++i) {  // the bias column (i = K) is never rounded
          const int64_t k = perm[static_cast<size_t>(i)];
          const double q = std::clamp(std::nearbyint(v[static_cast<size_t>(i)] / s), double(-qmax), double(qmax));
          qg[static_cast<size_t>(k)] = static_cast<int8_t>(q);
          const double* Ui = &U[static_cast<size_t>(i * n)];
          const double e = (v[static_cast<size_t>(i)] - q * s) / Ui[i];
          for (int64_t j = i + 1; j < n; ++j) v[static_cast<size_t>(j)] -= e * Ui[j];
        }
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
      const std::vector<int8_t>& qs = use_gptq ? qg : qn;
      for (int64_t k = 0; k < f.K; ++k) Q[f.windex(o, k)] = qs[static_cast<size_t>(k)];
      if (use_gptq && has_bias) r.bias[static_cast<size_t>(o)] = static_cast<float>(v[static_cast<size_t>(n - 1)]);
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
  return r;
}

}  // namespace lwc::passes
