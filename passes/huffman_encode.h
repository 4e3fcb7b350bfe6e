// huffman_encode: stores weight tensors as canonical Huffman codes of their values inside the ONNX
// model (Deep Compression's last stage; the coded form is described in lwc/weight_coding.h).
//
//   Before: W (initializer, float32 [300, 784])
//   After:  W = ai.lwc::HuffmanDecode(W__stream uint8 [B], W__codebook float32 [K]) <shape=[300,784]>
//
// Lossless: the decoded bytes equal W's. Each initializer with at least `min_elements` elements and
// at most `max_symbols` distinct values is coded, densely or (when it has zeros and that is
// smaller) with the zero runs coded as gaps, Deep Compression's relative indexing; a tensor is kept
// only when stream + codebook are smaller than its raw bytes. Float weights need few distinct values
// to gain: run weight_share or quantize first. The notes give per tensor the sizes of Deep
// Compression's storage stages: raw, sparse with 8-bit relative indices, shared values as fixed-
// width indices plus codebook, and Huffman (stream + codebook); stats sum them.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class HuffmanEncode : public Pass {
 public:
  std::string name() const override { return "huffman_encode"; }
  std::string help() const override {
    return "Store weights as canonical Huffman codes (ai.lwc::HuffmanDecode nodes; lossless; huffman_decode undoes it)";
  }
  std::vector<OptionSpec> optionSpecs() const override;
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
