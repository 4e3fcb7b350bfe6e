// quantize_dynamic: INT8 weights, activations quantized at run time (no calibration data), as
// ONNX Runtime's quantize_dynamic does.
//
//   Before: X -> MatMul(X, W) -> Add(b) -> Y             (or Gemm(X, W, b))
//   After:  X -> DynamicQuantizeLinear -> (X_q, s_x, z_x)
//               MatMulInteger(X_q, W_q, z_x, 0) -> Cast(float) -> Mul(s_x · s_w) [-> Add(b)] -> Y
//
// DynamicQuantizeLinear picks uint8 scale and zero point from each input's own min/max at run time;
// weights are int8 symmetric, per output column (s_w[n] = max|W[:, n]|/127) unless per_channel is
// false; the integer product is scaled back to float by s_x · s_w (one Mul with a [N] vector).
// Applies to MatMul with constant 2-D float B and Gemm with transA = 0, alpha = 1 and constant B
// (transB handled by transposing the stored weights); beta·C stays a float Add. An input read by
// several layers is quantized once.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class QuantizeDynamic : public Pass {
 public:
  std::string name() const override { return "quantize_dynamic"; }
  std::string help() const override {
    return "INT8 dynamic quantization: int8 weights, activations quantized at run time (MatMulInteger)";
  }
  std::vector<OptionSpec> optionSpecs() const override;
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
