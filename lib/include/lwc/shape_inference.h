// Types and shapes of every value in a model.
#pragma once

#include <string>
#include <unordered_map>
#include <utility>

#include "lwc/graph.h"

namespace lwc {

struct ShapeOptions {
  /// > 0: replace the symbolic first dimension of every graph input by this batch size.
  int64_t batch = 0;
  /// Initializers of more than this many bytes (int32/int64 ones excepted) reach ONNX's inference
  /// as graph inputs of their type and shape, without their values, which it never reads: copying
  /// them made each inference of a 100 MB model take half a second (modelToInferenceProto).
  int64_t weight_data_over = 4096;
};

using ValueTypes = std::unordered_map<std::string, ValueInfo>;

/// Infers dtype and shape of every value (graph inputs, initializers, node outputs) with ONNX's
/// shape inference (data propagation on, so Shape->Gather->Concat->Reshape chains resolve).
/// Values it cannot infer are absent or have no shape. Never throws for node-level failures.
ValueTypes inferShapes(const Model& m, const ShapeOptions& opts = {});

/// For each Conv, ConvInteger, QLinearConv and ConvTranspose whose X and W ranks are known (X's as
/// its producer infers it), the first whose ranks disagree or are under 3, described; else empty
/// (also for a W of rank 0 where ONNX's inference reports that itself).
/// ONNX 1.12's inference of these reads W's rank into X unchecked and crashes on such a node, so
/// the strict ONNX check asks this first; inferShapes leaves such nodes out by itself.
std::string convRankDisagreement(const Model& m);

/// Puts checks in front of the ONNX 1.12 inference functions that crash, hang or exhaust memory on
/// some ranks, attribute values or dimension sizes (LayerNormalization's axis, STFT's signal,
/// MaxUnpool's I, zero strides, auto_pad SAME over huge inputs, ...; the list is in the source):
/// such a node gets ONNX's inference error instead. Idempotent; every ONNX inference lwc runs
/// calls it first.
void guardOnnxInference();

/// The axes [first, last) a Shape node with these start/end attributes reads from an input of rank
/// `rank` (negative ones count from the back; both clamped to [0, rank], as ONNX defines).
std::pair<int64_t, int64_t> shapeSliceBounds(int64_t rank, int64_t start, int64_t end);

/// Concrete shape of a value if fully known.
std::optional<Shape> concreteShape(const ValueTypes& types, const std::string& name);

/// Replaces the model's value_info with inferred types of intermediate values.
void annotateShapes(Model& m);

}  // namespace lwc
