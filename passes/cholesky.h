// Dense Cholesky factorisation for the least-squares passes (lsq recovery, OBS selection, GPTQ):
// double precision, every element with the bits of the textbook row-by-row form on every CPU and
// thread count, vectorised where the CPU allows.
#pragma once

#include <cstdint>
#include <vector>

namespace lwc::passes {

/// Cholesky factor M = L Lᵀ in place (M symmetric n x n, row-major; only its lower triangle is
/// read). Afterwards L is in the lower triangle and Lᵀ in the upper one. False when M is not
/// positive definite. `threads` > 1 splits large columns across threads; the result is the same on
/// any number, and each element has the bits of the textbook row-by-row form.
bool choleskyLower(std::vector<double>& M, int64_t n, int threads = 1);

/// The inner kernels choleskyLower can use: the widest the CPU has is taken. All give the same
/// bits (each element's products subtracted one by one, in the textbook order, never fused).
enum class CholeskyKernel { Portable, Avx2, Avx512 };
/// The one choleskyLower uses on this CPU.
CholeskyKernel choleskyKernel();
/// choleskyLower with a given kernel (tests compare them); one this CPU lacks is replaced by the
/// widest it has.
bool choleskyLowerWith(CholeskyKernel kernel, std::vector<double>& M, int64_t n, int threads = 1);

}  // namespace lwc::passes
