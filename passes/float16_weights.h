// float16_weights: stores float32 weights as float16, each read through a Cast back to float32.
//
//   Before: W (initializer, float32 [64, 32, 3, 3]) -> Conv
//   After:  W__float16 (initializer, float16) -> Cast(to=FLOAT) -> W -> Conv
//
// The file's weights take half the bytes; the computation stays float32 (every runtime folds the
// Cast once when it loads the model, so latency does not change), which is what OpenVINO's
// compress_to_fp16 and onnxconverter-common's float16 conversion with float32 I/O do. Each weight
// is rounded to the nearest float16 (ties to even): a relative error of at most 2^-11 for values
// of magnitude 6.1e-5 to 65504, coarser below (float16 subnormals), and values of at most 2^-25
// (3e-8) become 0, which the stats count. Left as they are, each with a note: tensors with a value
// beyond float16's range (65504), tensors that a quantization op reads (QuantizeLinear,
// DequantizeLinear and the other quantized ops: ONNX Runtime fuses Q/DQ pairs only around constant
// scales) or that fix shapes (Resize, Upsample scales and roi), tensors read by ops of other domains
// (lwc's own HuffmanDecode codebook), tensors read inside a subgraph (whose readers this pass does
// not see), and excluded ones. Counted in one note each: tensors whose Cast node and new name would
// cost more bytes than the float16 copy saves, and initializers of subgraphs (left as they are).
// Tensors under `min_elements` are passed over silently; so is a model without an ai.onnx import
// (one note), which has no Cast.
// lwc reads the output like any float16-beside-Cast file: its passes widen the weights back to
// float32 (fold_constants says so), so this pass belongs at the end of a pipeline.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class Float16Weights : public Pass {
 public:
  std::string name() const override { return "float16_weights"; }
  std::string help() const override {
    return "Store float32 weights as float16 read through a Cast to float32 (half the bytes; float32 compute)";
  }
  std::vector<OptionSpec> optionSpecs() const override;
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
