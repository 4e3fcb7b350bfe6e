// fuse_reshape: a Reshape whose target is computed from its own input's shape gets a constant
// target, and a Reshape that keeps the batch and flattens the rest becomes Flatten.
//
//   Before: X -> Shape -> Gather(0) -> Unsqueeze -> Concat(., [-1]) -> T;  Reshape(X, T)
//           (what torch.onnx.export writes for x.view(x.size(0), -1))
//   After:  Flatten(X, axis=1)
//
// The target's elements may be constants, dimensions of X read through Shape(X) -> Gather
// (constant indices) -> Unsqueeze -> Concat, or Mul/Add/Sub of single known ones
// (x.reshape(x.shape[0], x.shape[1] * x.shape[2] * x.shape[3])). Dimension i read at position i becomes 0 ("copy",
// when allowzero is 0), another known dimension its value; anything else leaves the Reshape
// alone. A rank-2 target equal to "dimension 0, then everything else" ([0, -1], [-1, C*H*W],
// [N, C*H*W] with N and C*H*W known, ...) on an input of rank 2 or more becomes Flatten(axis=1),
// which channel pruning can see through. ONNX Runtime does the first half as ReshapeFusion.
// The shape nodes no longer read are removed.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class FuseReshape : public Pass {
 public:
  std::string name() const override { return "fuse_reshape"; }
  std::string help() const override {
    return "Give a Reshape whose target comes from its input's Shape a constant target; Reshape to [batch, -1] becomes Flatten";
  }
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
