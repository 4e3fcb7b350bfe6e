// fuse_batchnorm: folds inference-mode BatchNormalization into an adjacent linear layer.
//
//   Before: X -> Conv(W, b) -> Y -> BatchNormalization(γ, β, μ, var) -> Z
//   After:  X -> Conv(W', b') -> Z
//
// BN is the per-channel affine map z = s·y + t with s = γ/√(var+ε), t = β − μ·s, so
//   W'[o] = W[o]·s[o],  b'[o] = b[o]·s[o] + t[o]                      (fold into the producer)
// for Conv (output channel = dim 0 of W), ConvTranspose (dim 1 of each group's block of W), Gemm
// (column of B, per transB; C folded as C' = C·s + t/beta) and MatMul with a constant 2-D B whose
// output is 2-D (B' = B·s; the BN becomes Add(t), which fuse_bias_add turns into a Gemm bias).
// Conditions: BN in inference mode with constant float parameters and one output; the producer's
// output feeds only the BN and is not a graph output; the producer's weights are constant.
//
// A BN with no foldable producer is folded into the Conv that reads it when that Conv has no
// padding (with padding, border pixels would see 0 instead of t):
//   W'[o, ci] = W[o, ci]·s[c],  b'[o] = b[o] + Σ_{ci,k} W[o, ci, k]·t[c],  c = group(o)·(C/g) + ci.
// Anything else is left alone and reported in the notes.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class FuseBatchnorm : public Pass {
 public:
  std::string name() const override { return "fuse_batchnorm"; }
  std::string help() const override {
    return "Fold BatchNormalization into the preceding Conv/ConvTranspose/Gemm/MatMul (or the following unpadded Conv)";
  }
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
