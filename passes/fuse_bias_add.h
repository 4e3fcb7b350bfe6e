// fuse_bias_add: moves an Add of a constant per-channel vector into the bias of the layer before it.
//
//   Before: X -> Conv(W, b) -> Y -> Add(Y, c) -> Z          After: X -> Conv(W, b + c) -> Z
//   Before: X -> MatMul(X, B) -> Y -> Add(Y, c) -> Z        After: X -> Gemm(X, B, c) -> Z
//
// Conv / ConvTranspose: c broadcasts per output channel (shape [C,1,..], [1,C,1,..], [1] or a
// scalar, rank no higher than the output's). Gemm: c is a row vector [N] / [1,N] or a scalar; the
// new C is C + c/beta. MatMul: X is known to be 2-D and B is a constant 2-D matrix (ONNX Runtime then
// runs one Gemm; batched MatMuls are left alone). In every case Y must be read only by the Add and not
// be a graph output, and all tensors float32.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class FuseBiasAdd : public Pass {
 public:
  std::string name() const override { return "fuse_bias_add"; }
  std::string help() const override {
    return "Fold Add of a constant vector into the bias of the preceding Conv/ConvTranspose/Gemm (MatMul becomes Gemm)";
  }
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
