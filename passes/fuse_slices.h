// fuse_slices: Slices that together cut a tensor into consecutive pieces along one axis become one
// Split.
//
//   Before: X -> Slice(starts=[0], ends=[c], axes=[1]) -> A
//           X -> Slice(starts=[c], ends=[2c], axes=[1]) -> B          (X has 2c channels)
//   After:  X -> Split(axis=1, split=[c, c]) -> A, B
//
// torch.onnx.export writes x.chunk(2, 1) this way (once fold_constants has made its starts and
// ends constants); channel pruning follows a Split (YOLOv8's C2f), not a set of Slices.
// Conditions: at least two Slices of the same tensor, each along one axis with step 1 and constant
// starts/ends/axes (attributes before opset 10, inputs from 10), whose ranges, after negative and
// out-of-range values are resolved against the known size of that axis, follow one another from 0
// to the end without gap or overlap. Outputs keep their names; the Split stands where the first
// Slice stood. Exact.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class FuseSlices : public Pass {
 public:
  std::string name() const override { return "fuse_slices"; }
  std::string help() const override { return "Merge Slices that cut a tensor into consecutive pieces along one axis into one Split"; }
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
