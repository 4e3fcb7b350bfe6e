// GPTQ weight rounding (Frantar et al. 2022, "GPTQ: Accurate post-training quantization for
// generative pre-trained transformers"; Optimal Brain Quantization, Frantar & Alistarh 2022).
//
// Round-to-nearest picks each quantized weight on its own. GPTQ rounds one input column k at a
// time and moves the weights not yet rounded so that the layer's output on the calibration data
// changes as little as possible:
//
//   H = Xᵀ X + λ I   (X: the layer's input rows on the calibration data, λ = damping · mean diag)
//   U = upper Cholesky factor of H⁻¹ (H⁻¹ = Uᵀ U), columns in order of decreasing H_kk ("act order")
//   for each column k:  q_k = clamp(round(w_k / s), ±qmax) · s,  e = (w_k − q_k) / U_kk,
//                       w_j −= e · U_kj  for the columns j after k
//
// per output channel, with the scales s fixed beforehand (max|w| / qmax, as round-to-nearest). A
// layer with a bias gets the constant-1 column of X as its last column: it is never rounded, so the
// compensation that reaches it is the bias change that best absorbs the rounding's mean error.
// Each output channel keeps whichever of GPTQ and round-to-nearest has the lower output error
// (w − ŵ)ᵀ Xᵀ X (w − ŵ) on the calibration rows.
#pragma once

#include <vector>

#include "lwc/tensor.h"
#include "passes/lsq_recovery.h"

namespace lwc::passes {

/// Largest K (+ bias) gptqRound takes: its work is O(K³) and it holds ~4 K x K doubles (6144:
/// ~1.2 GB); callers round larger layers to nearest.
constexpr int64_t kGptqMaxColumns = 6144;

struct GptqResult {
  Tensor q;                              ///< int8 weights, W's shape
  std::vector<float> bias;               ///< the bias after compensation (when one was given)
  double error_nearest = 0, error = 0;   ///< Σ over channels of (w − ŵ)ᵀ G (w − ŵ): round-to-nearest vs the result
  int64_t channels = 0, channels_nearest = 0;  ///< output channels; those that kept round-to-nearest
  int64_t groups_not_pd = 0, groups_not_finite = 0;  ///< groups left to round-to-nearest: XᵀX + λI not
                                                     ///< positive definite / not finite (NaN or Inf inputs)
};

/// Rounds W (layout of lg.form) to int8 with the given scales (one per output channel, or one for
/// all) in [−qmax, qmax]. `nearest`: the round-to-nearest integers of W at these scales (W's shape,
/// int8; the caller's quantizer made them), what a channel keeps where GPTQ is not better. `bias`:
/// the layer's float bias (lg.form.out values), or empty when it has none (then the Gram's bias
/// column, if any, is ignored). The result is the same on any number of threads.
GptqResult gptqRound(const LayerGram& lg, const Tensor& W, const Tensor& nearest, const std::vector<float>& bias,
                     const Tensor& scale, float qmax, double damping = 0.01, int threads = 0);

}  // namespace lwc::passes
