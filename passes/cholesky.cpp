// Built with -ffp-contract=off (passes/CMakeLists.txt): a multiply and the subtraction after it
// must stay two roundings, as in the textbook form, also in the AVX-512 kernel (whose ISA has FMA).
#include "passes/cholesky.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lwc::passes {

namespace {

// Left-looking by panels of kPanel columns. Element (i, j) of L is
//   (M[i][j] − Σ_{k<j} L[i][k]·L[j][k]) / L[j][j],  k ascending (the diagonal likewise, then √),
// the row-by-row textbook form. The terms k < j0 (columns finished before j's panel) are
// subtracted first for the whole panel, in register tiles of R rows x kTileCols columns, then
// k = j0 … j−1 column by column: every element is the textbook's sequence of separate multiplies
// and subtractions, so the bits are the textbook's whatever the tile, vector width or thread
// count. Finished columns are also kept transposed in the upper triangle, which the factorisation
// does not otherwise read (A[k][i] = L[i][k] for i > k): a tile reads kTileCols contiguous values
// of it per k.
//
// Measured on one thread of the 2-core AMD EPYC (AVX-512), best of 3, n = 2305 (a 3x3 convolution
// of 512 input channels at 50 % sparsity): the scalar tiles the compiler was left to vectorise
// 0.37 s (it interleaved k into the vectors with shuffles and spills), explicit 4-wide vectors in
// 6 x 8 tiles 0.12 s, 8-wide in 8 x 8 tiles 0.085 s.
constexpr int64_t kPanel = 16, kTileCols = 8;
// Rows per tile of each kernel (panelUpdate steps through the rows by these).
constexpr int64_t kRowsPortable = 4, kRowsAvx2 = 6, kRowsAvx512 = 8;

// The portable tile, kRowsPortable rows x kTileCols columns of scalars.
void tilePortable(double* A, int64_t n, int64_t i0, int64_t j0, int64_t jc) {
  constexpr int64_t R = kRowsPortable;
  double acc[R][kTileCols];
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < kTileCols; ++c) acc[r][c] = A[(i0 + r) * n + jc + c];
  for (int64_t k = 0; k < j0; ++k) {
    const double* t = A + k * n + jc;
    for (int64_t r = 0; r < R; ++r) {
      const double l = A[(i0 + r) * n + k];
      for (int64_t c = 0; c < kTileCols; ++c) acc[r][c] -= l * t[c];
    }
  }
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < kTileCols; ++c) A[(i0 + r) * n + jc + c] = acc[r][c];
}

static_assert(kTileCols == 8, "the vector tiles hold 8 columns: two 4-wide or one 8-wide vector per row");
typedef double v4d __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

// kRowsAvx2 (6) rows x 8 columns in 4-wide vectors: 12 accumulators, enough to hide the
// subtraction's latency.
__attribute__((target("avx2"))) void tileAvx2(double* A, int64_t n, int64_t i0, int64_t j0, int64_t jc) {
  constexpr int R = kRowsAvx2;
  v4d a[R][2];
  for (int r = 0; r < R; ++r) std::memcpy(a[r], A + (i0 + r) * n + jc, sizeof a[r]);
  const double* l0 = A + i0 * n;
  for (int64_t k = 0; k < j0; ++k) {
    v4d t[2];
    std::memcpy(t, A + k * n + jc, sizeof t);
    for (int r = 0; r < R; ++r) {
      const double l = l0[r * n + k];
      const v4d lv = {l, l, l, l};
      a[r][0] -= lv * t[0];
      a[r][1] -= lv * t[1];
    }
  }
  for (int r = 0; r < R; ++r) std::memcpy(A + (i0 + r) * n + jc, a[r], sizeof a[r]);
}

// kRowsAvx512 (8) rows x 8 columns in 8-wide vectors.
__attribute__((target("avx512f"))) void tileAvx512(double* A, int64_t n, int64_t i0, int64_t j0, int64_t jc) {
  constexpr int R = kRowsAvx512;
  v8d a[R];
  for (int r = 0; r < R; ++r) std::memcpy(&a[r], A + (i0 + r) * n + jc, sizeof a[r]);
  const double* l0 = A + i0 * n;
  for (int64_t k = 0; k < j0; ++k) {
    v8d t;
    std::memcpy(&t, A + k * n + jc, sizeof t);
    for (int r = 0; r < R; ++r) {
      const double l = l0[r * n + k];
      const v8d lv = {l, l, l, l, l, l, l, l};
      a[r] -= lv * t;
    }
  }
  for (int r = 0; r < R; ++r) std::memcpy(A + (i0 + r) * n + jc, &a[r], sizeof a[r]);
}

// Any rows x columns (the edges), the same arithmetic one element at a time.
void tileEdge(double* A, int64_t n, int64_t i0, int64_t rows, int64_t j0, int64_t jc, int64_t w) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < w; ++c) {
      double s = A[(i0 + r) * n + jc + c];
      for (int64_t k = 0; k < j0; ++k) s -= A[(i0 + r) * n + k] * A[k * n + jc + c];
      A[(i0 + r) * n + jc + c] = s;
    }
}

// Subtracts the terms k < j0 from columns j0 … j0 + w − 1, rows j0 … n − 1.
void panelUpdate(CholeskyKernel kernel, double* A, int64_t n, int64_t j0, int64_t w, int nt) {
  if (j0 == 0) return;
  const int64_t R = kernel == CholeskyKernel::Avx512 ? kRowsAvx512
                    : kernel == CholeskyKernel::Avx2 ? kRowsAvx2
                                                     : kRowsPortable;
  const int64_t rows = n - j0, tiles = (rows + R - 1) / R;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && rows * j0 * w > 65536)
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t i0 = j0 + t * R, r = std::min(R, n - i0);
    for (int64_t jc = j0; jc < j0 + w; jc += kTileCols) {
      const int64_t cw = std::min(kTileCols, j0 + w - jc);
      if (r < R || cw < kTileCols)
        tileEdge(A, n, i0, r, j0, jc, cw);
      else if (kernel == CholeskyKernel::Avx512)
        tileAvx512(A, n, i0, j0, jc);
      else if (kernel == CholeskyKernel::Avx2)
        tileAvx2(A, n, i0, j0, jc);
      else
        tilePortable(A, n, i0, j0, jc);
    }
  }
}

}  // namespace

CholeskyKernel choleskyKernel() {
  static const CholeskyKernel best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return CholeskyKernel::Avx512;
    if (__builtin_cpu_supports("avx2")) return CholeskyKernel::Avx2;
    return CholeskyKernel::Portable;
  }();
  return best;
}

bool choleskyLower(std::vector<double>& M, int64_t n, int threads) {
  return choleskyLowerWith(choleskyKernel(), M, n, threads);
}

bool choleskyLowerWith(CholeskyKernel kernel, std::vector<double>& M, int64_t n, int threads) {
  kernel = std::min(kernel, choleskyKernel());  // the enum is ordered by width
  const int nt = threads > 0 ? threads : 1;
  double* A = M.data();
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const int64_t w = std::min(kPanel, n - j0);
    panelUpdate(kernel, A, n, j0, w, nt);
    for (int64_t j = j0; j < j0 + w; ++j) {
      double* Lj = A + j * n;
      double d = Lj[j];
      for (int64_t k = j0; k < j; ++k) d -= Lj[k] * Lj[k];
      if (!(d > 0) || !std::isfinite(d)) return false;
      d = std::sqrt(d);
      Lj[j] = d;
      for (int64_t i = j + 1; i < n; ++i) {
        double* Li = A + i * n;
        double s = Li[j];
        for (int64_t k = j0; k < j; ++k) s -= Li[k] * Lj[k];
        const double v = s / d;
        Li[j] = v;
        Lj[i] = v;
      }
    }
  }
  return true;
}

}  // namespace lwc::passes
