// Reading models newer than the ONNX library lwc is built with.
//
// Debian 12's libonnx (ONNX 1.12) knows the default-domain opsets up to 17 and IR version 8: its
// checker refuses a newer IR version, and for a newer opset it checks and infers every node against
// the opset-17 schema, which for the ops changed since (ReduceMean's axes became an input in opset
// 18, Split gained num_outputs, ...) is the wrong one. Exporters write newer files by default
// (torch 2.x's dynamo exporter opset 18, onnx >= 1.14's helpers IR 9 and 10), so lwc reads them by
// rewriting them into the form libonnx knows, as ONNX's version converter would if it could go
// down: the models lwc writes from them import opset 17 and IR 8, which every runtime reads.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <vector>

namespace lwc {

/// The newest default-domain opset and IR version the ONNX library here knows (17 and 8 for ONNX 1.12).
int64_t knownOpset();
int64_t knownIrVersion();

/// The newest default-domain opset lwc reads, by lowering it to knownOpset(). Opsets 18 to 25
/// (ONNX 1.13 to 1.20) changed the ops listed in opset_lowering.cpp; later ones are not checked.
inline constexpr int64_t kMaxReadableOpset = 25;

/// True when the model's IR version or default-domain opset is above those the library knows:
/// what lowerToKnownVersions rewrites (it returns at once for any other model).
bool newerThanKnown(const onnx::ModelProto& p);

/// Rewrites a model whose default-domain opset is above knownOpset() (up to kMaxReadableOpset)
/// into opset knownOpset(), node by node and in every subgraph: ReduceL1 ... ReduceSumSquare read a
/// constant `axes` input as the attribute (noop_with_empty_axes with no axes: Identity), Split
/// trades num_outputs for its sizes (chunks of ceil(d / n): a constant where the input's declared
/// shape gives d, else computed from Shape at run time; none where d divides evenly), Mish, Gelu,
/// Swish, GroupNormalization, RMSNormalization and Attention (without a key/value cache) become the
/// opset-17 ops that compute them, and attributes newer ops
/// added are dropped where they hold their defaults (Resize antialias, pool dilations of 1, Cast
/// saturate, Q/DQ block_size 0, ...). A node that has no such form (an `axes` input computed at run
/// time, Pad's axes or wrap mode, a new op such as Col2Im) throws lwc::Error naming the node and
/// what to do. An IR version above knownIrVersion() becomes knownIrVersion() unless a tensor uses
/// an element type that came later (float8, int4, ...), which throws. Returns one line per kind of
/// change for the user (empty: the model was already in the known versions).
std::vector<std::string> lowerToKnownVersions(onnx::ModelProto& p, const std::string& label);

}  // namespace lwc
