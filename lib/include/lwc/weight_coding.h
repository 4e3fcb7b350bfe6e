// Huffman-coded weights inside an ONNX model (Deep Compression's last stage, Han et al. 2016).
//
// A coded weight tensor W becomes two initializers and one node in lwc's own operator domain:
//
//   W__stream   uint8 [B]   the canonical Huffman bitstream of lwc/huffman.h (format documented there)
//   W__codebook T     [K]   the K distinct values of W (ascending bit patterns); symbol i means codebook[i]
//   W = ai.lwc::HuffmanDecode(W__stream, W__codebook)   attribute shape: ints, W's shape
//
// Operator ai.lwc::HuffmanDecode, version 1 (opset_import {"ai.lwc", 1}):
//   inputs   stream (tensor(uint8), 1-D), codebook (any numeric tensor type T, 1-D)
//   output   tensor of type T and shape `shape`: output[i] = codebook[symbol i of the stream]
//   In sparse streams, the zero symbol is the codebook entry whose bits are all zero (+0.0 / 0).
// The file stays a valid ONNX protobuf: ONNX's checker and shape inference accept the node once
// registerOnnxSchemas() has run (lwc registers it before it checks or infers anything), lwc's
// engine decodes it once when a session is built, and `lwc decode` / the huffman_decode pass turn
// it back into a plain initializer that every runtime reads. Decoding is lossless: the bytes of W
// come back exactly.
#pragma once

#include <optional>
#include <string>

#include "lwc/huffman.h"
#include "lwc/tensor.h"

namespace lwc {
class Model;
}

namespace lwc::weight_coding {

inline constexpr const char* kDomain = "ai.lwc";
inline constexpr const char* kDecodeOp = "HuffmanDecode";

/// Registers ai.lwc::HuffmanDecode (type and shape inference) with ONNX's schema registry. Idempotent.
void registerOnnxSchemas();

struct EncodedTensor {
  Tensor stream;    ///< uint8 [B]
  Tensor codebook;  ///< dtype of the input, [K]
  huffman::EncodeStats stats;
  bool sparse = false;
  int64_t symbols = 0;  ///< K
};

/// Encodes `t` (any fixed-size dtype) losslessly: dense, or sparse when `t` has zeros and that is
/// smaller. nullopt (with the reason in `why`) when it has more than `max_symbols` distinct values.
std::optional<EncodedTensor> encodeTensor(const Tensor& t, int64_t max_symbols, std::string* why = nullptr);

/// Decodes a HuffmanDecode node's inputs. Throws lwc::Error on any inconsistency (wrong dtypes,
/// stream that does not decode to shape's element count, symbols beyond the codebook).
Tensor decodeTensor(const Tensor& stream, const Tensor& codebook, const Shape& shape);

/// Replaces every ai.lwc::HuffmanDecode node whose inputs are initializers by the decoded
/// initializer, drops the streams and codebooks, and the ai.lwc opset import when no ai.lwc node
/// is left. Returns the number of tensors decoded. Throws lwc::Error naming the node.
int64_t decodeAll(Model& m);

}  // namespace lwc::weight_coding
