// huffman_decode: turns every ai.lwc::HuffmanDecode node back into a plain initializer, so the
// model is standard ONNX that any runtime runs (the inverse of huffman_encode; bit-exact).
//
//   Before: W = ai.lwc::HuffmanDecode(W__stream, W__codebook) <shape=...>      After: W (initializer)
//
// The ai.lwc opset import is dropped when no ai.lwc node is left.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class HuffmanDecode : public Pass {
 public:
  std::string name() const override { return "huffman_decode"; }
  std::string help() const override { return "Decode ai.lwc::HuffmanDecode weights back into plain initializers"; }
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
