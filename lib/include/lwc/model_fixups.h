// What lwc changes in a valid model as a command reads it, so that the engine and the passes see
// one form and every model lwc writes loads in ONNX Runtime. Each function returns one line per
// change for the user (empty: nothing changed); the commands print them as warnings.
#pragma once

#include <string>
#include <vector>

#include "lwc/graph.h"

namespace lwc {

/// Replaces every call of a model-local function (ModelProto.functions, as
/// `torch.onnx.export(..., export_modules_as_functions=...)` and onnxscript write them) by the
/// function's body, with its values renamed under the call's name and attribute references
/// (ref_attr_name) taken from the call; nested calls are inlined too. Functions that were called
/// are removed, with opset imports of domains no node uses any more. Throws lwc::Error naming the
/// function for what cannot be inlined: recursion, a body whose opset differs from the model's, a
/// subgraph attribute in the body.
std::vector<std::string> inlineLocalFunctions(Model& m);

/// Initializers that are also listed as graph inputs (IR 4 and later: inputs that may override
/// them, what `torch.onnx.export(..., keep_initializers_as_inputs=True)` writes) leave the input
/// list: lwc treats them as the model's constant weights, as ONNX Runtime's quantization tool does.
std::vector<std::string> initializerInputsToConstants(Model& m);

/// Numbers nodes that share a name ('conv', 'conv_1', ...): ONNX Runtime refuses such a model.
/// Empty names stay empty.
std::vector<std::string> makeNodeNamesUnique(Model& m);

/// Converts the model's default-domain opset to `target` with ONNX's version converter (the
/// adapters of ONNX's own C++ library, as onnx.version_converter.convert_version). Returns "" on
/// success, else why not (the model is then unchanged). For the passes that need a newer opset
/// than the model's (per-channel DequantizeLinear needs 13).
std::string convertOpset(Model& m, int64_t target);

/// What loading changed (Model::load_notes, handed on and cleared), then the three above, in that order.
std::vector<std::string> normalizeModel(Model& m);

}  // namespace lwc
