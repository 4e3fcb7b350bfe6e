// fuse_pad_into_conv: merges a zero-constant Pad into the Conv that reads it.
//
//   Before: X -> Pad(pads=[0,0,1,1, 0,0,1,1]) -> P -> Conv(pads=[0,0,0,0]) -> Y
//   After:  X -> Conv(pads=[1,1,1,1]) -> Y
//
// Conditions: Pad mode "constant" with value 0 (absent or a constant zero), constant non-negative
// pads that leave the batch and channel axes alone (opset < 11 attribute form, opset >= 11 input
// form, opset >= 18 axes input); P read only by that Conv (as its data input) and not a graph
// output; the Conv uses explicit padding (auto_pad NOTSET). The Conv's pads become the sums.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class FusePadIntoConv : public Pass {
 public:
  std::string name() const override { return "fuse_pad_into_conv"; }
  std::string help() const override { return "Merge a zero Pad into the padding of the Conv that reads it"; }
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
