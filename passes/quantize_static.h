// quantize_static: INT8 post-training static quantization to QDQ form.
//
//   Before: X -> Conv(W, b) -> Relu -> Y
//   After:  X -> Q -> DQ -> Conv(DQ(W_q), DQ(b_q)) -> Q -> DQ -> Y      (Relu absorbed by Q, uint8)
//
// Which tensors: the float activation inputs of every selected node (Conv, Gemm and MatMul with
// constant 2-D weights; Add, MaxPool, AveragePool, GlobalAveragePool, Concat) and the outputs of the
// compute nodes (Conv/Gemm/MatMul) unless they are graph outputs. Every reader of a quantized
// tensor reads the DequantizeLinear output, so ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv
// and the lwc engine runs the same integer kernel.
//
// Math (per tensor, range [lo, hi] from the calibrator):
//   uint8 (asymmetric): lo' = min(lo, 0), hi' = max(hi, 0), s = (hi' - lo')/255, zp = round(-lo'/s)
//   int8 (symmetric):   s = max(|lo|, |hi|)/127, zp = 0
//   weights: int8 symmetric, per output channel (axis 0 for Conv and Gemm with transB, axis 1 for
//            MatMul and Gemm without), s_w[o] = max|W[o]|/127, W_q = round(W/s_w) in [-127, 127]
//            (reduce_range: /63 and [-63, 63], 7 bits, for x86 CPUs without VNNI)
//            weight_rounding gptq: the same scales, W_q chosen by GPTQ (passes/gptq.h) on the
//            calibration data instead of round-to-nearest; the float bias moves with it
//   bias:    int32, s_b[o] = s_x · s_w[o], b_q = round(b/s_b), zero point 0
// A Linear layer on 3-D inputs, which exporters write as MatMul + Add(constant bias along the last
// axis), is one layer: the MatMul's own output is not quantized and the Add keeps the float bias.
// The Add's output is quantized where a quantized node reads it (a residual Add, the next layer):
// one rounding, as for a Conv or Gemm with its bias; the lwc engine runs DQ -> MatMul -> Add -> Q
// as one integer matmul with the bias in its accumulator, ONNX Runtime as MatMulIntegerToFloat,
// Add and Q. Read only by float ops (attention, GELU) it stays float: DQ -> MatMul -> Add runs as
// one integer matmul with a float output in both runtimes (lwc.internal.MatMulIntegerToFloat,
// ONNX Runtime's MatMulIntegerToFloat). With format qoperator, which has neither, the MatMul's
// output is quantized and the Add stays in float between DQ and Q.
// Relu, and Clip with minimum 0, directly after a compute node (or its bias Add) are absorbed with uint8
// activations: their output range starts at 0, so zp = 0 and QuantizeLinear's saturation is the
// activation (exact). With int8 activations they stay.
//
// Statistics come from running the float model on calibration data (see calibration.h) or from
// saved statistics (load_calib). Left alone: nodes excluded by name or op type, keep_fp32
// first/last, weights that are not constant float tensors, and models opset < 13 get per-tensor
// weights (per-channel DequantizeLinear needs opset 13).
#pragma once

#include <optional>

#include "lwc/pass.h"
#include "passes/calibration.h"

namespace lwc::passes {

class QuantizeStatic : public Pass {
 public:
  std::string name() const override { return "quantize_static"; }
  std::string help() const override {
    return "INT8 post-training static quantization (QDQ): calibrate activations, int8 per-channel weights, int32 bias";
  }
  std::vector<OptionSpec> optionSpecs() const override;
  bool needsCalibration(const PassOptions& o) const override;
  PassResult run(Model& m, PassContext& ctx) override;

  /// The statistics used by the last run (for reports).
  const CalibrationStats& lastStats() const { return stats_; }
  /// Quantized activation name -> the name its dequantized value has in the output model.
  const std::map<std::string, std::string>& dequantizedNames() const { return dq_names_; }
  /// Quantized weight name -> the name of its dequantized value in the output model.
  const std::map<std::string, std::string>& dequantizedWeights() const { return dq_weights_; }
  /// With format qoperator: the model in QDQ form, before the conversion (the same integers; the
  /// per-tensor error table reads its DequantizeLinear outputs). nullptr for format qdq.
  const Model* qdqForm() const { return qdq_ ? &*qdq_ : nullptr; }

 protected:
  void validate(const PassOptions& o) const override;

 private:
  CalibrationStats stats_;
  std::map<std::string, std::string> dq_names_;
  std::map<std::string, std::string> dq_weights_;
  std::optional<Model> qdq_;
};

/// Whether a Transpose reads `value` and a QuantizeLinear reads the Transpose's output. ONNX
/// Runtime 1.30's graph rewrites hand a graph output there the quantized values, so quantize_static
/// writes such a graph output through an Identity, and eliminate_identity keeps that Identity.
bool transposedToQuantizeLinear(const Graph& g, const GraphIndex& index, const std::string& value);

/// Error of one quantized tensor against its float counterpart.
struct TensorError {
  std::string tensor;
  std::string kind;  ///< "activation" or "weight"
  double sqnr_db = 0;
  double cosine = 1;
  int64_t elements = 0;
};

/// Per-tensor SQNR of a quantized model against the float model it came from: weights directly,
/// activations on up to `max_samples` samples of `data`, both models run node by node with every
/// tensor observable (the QDQ graph's values are those of the integer kernels up to rare one-step
/// differences in requantization ties). Sorted worst first. `samples_option` names what set
/// max_samples in messages ("--layer-samples").
std::vector<TensorError> quantizationErrors(const Model& fp32, const Model& q, const QuantizeStatic& pass,
                                            const DataSpec& data, int64_t max_samples, const std::string& samples_option,
                                            int threads);

/// Throws lwc::Error naming the first node that shows the model is already quantized; `action`
/// ("quantize", "prune") says what to run on the float model instead.
void checkNotQuantized(const Model& m, const std::string& action = "quantize");

/// The note for a recurrent layer (RNN, GRU, LSTM), which both quantizers leave in float; empty for
/// any other node.
std::string recurrentLayerNote(const Node& n);

/// A model whose default-domain opset is below `want` is converted to opset 13 with ONNX's version
/// converter (raising the opset import alone would change what older ops mean). Returns the note
/// for the report: the conversion, or why the converter could not do it (the model is then as it
/// was); empty when the opset is already high enough. `what` names the op that needs `want`.
std::string upgradeOpset(Model& m, int64_t want, const std::string& what);

/// For an --exclude name that matches nothing: "; the layers here are Gemm '/fc1/Gemm', ..." (the
/// names after the cleanup before quantization, which may have merged a MatMul and its Add into a Gemm).
std::string excludeHint(const Graph& g);

/// Throws lwc::Error when the model's default-domain opset predates the ops quantization writes
/// (`min_opset`: 10 for QuantizeLinear/DequantizeLinear, 11 for DynamicQuantizeLinear), after
/// upgradeOpset could not convert it; `upgrade_note` (upgradeOpset's) says why.
void checkQuantizableOpset(const Model& m, int64_t min_opset, const std::string& ops, const std::string& upgrade_note = "");

/// "i/n" -> (i, n) with 0 <= i < n; fails naming `what` ("--shard", "quantize.calib_shard").
std::pair<int, int> parseShard(const std::string& s, const std::string& what);

}  // namespace lwc::passes
