// prune_magnitude: zeroes the smallest-magnitude weights of Conv, ConvTranspose, Gemm and MatMul
// layers with constant float weights.
//
//   Before: Conv(W)        After: Conv(W ⊙ mask), mask[i] = 0 for the k smallest |W[i]|
//
// scope "layer": every selected layer gets the same sparsity (k = floor(sparsity · numel) per
// layer); scope "global": one threshold over all selected layers together (k = floor(sparsity ·
// total)), so layers with many small weights lose more. Ties are broken by position, so exactly k
// weights are zeroed and the result is deterministic. pattern "N:M" keeps the N largest |w| of every
// M consecutive weights along the reduction axis (input channels of Conv, K of Gemm/MatMul), the
// layout sparse tensor cores accelerate (2:4); a trailing group shorter than M is left dense.
// Layers with fewer than `min_params` weights are skipped (first/classifier layers of small models
// are both tiny and sensitive) and named in the notes, as are layers excluded by `exclude` or not
// matched by `include`. Weights already zero count towards the target.
//
// recover "bias" (needs calibration data) then restores each pruned Conv/Gemm layer's output mean:
//   b'[o] = b[o] + Σ_{c,k} (W − W')[o, c, k] · E[x_c],
// with E[x_c] the per-channel mean of the layer's input in the pruned model on the calibration data.
// recover "lsq" re-solves each pruned layer's surviving weights and bias by least squares so its
// outputs match the pipeline's input model on the calibration data (see lsq_recovery.h).
//
// criterion "obs" (with recover lsq): scope and sparsity (or the N:M pattern) still decide how many
// weights each layer (or group) loses, but which ones is decided in the lsq step, layer by
// layer on the pruned model's inputs: the weights whose removal raises the layer's output error on
// the calibration data least, by the Optimal Brain Surgeon saliency at the least-squares fit
// (LsqOptions::select_zeros), in `obs_rounds` rounds. Layers lsq cannot re-fit fall back to magnitude.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class PruneMagnitude : public Pass {
 public:
  std::string name() const override { return "prune_magnitude"; }
  std::string help() const override {
    return "Zero the smallest-magnitude weights of Conv/ConvTranspose/Gemm/MatMul (per layer, global, or N:M)";
  }
  std::vector<OptionSpec> optionSpecs() const override;
  bool needsCalibration(const PassOptions& o) const override;
  PassResult run(Model& m, PassContext& ctx) override;

 protected:
  void validate(const PassOptions& o) const override;
};

/// Parses "N:M" (1 <= N < M); throws lwc::Error naming `key` (the option, PassOptions::key) otherwise.
std::pair<int, int> parseNM(const std::string& s, const std::string& key);

}  // namespace lwc::passes
