// eliminate_identity: removes nodes that pass their input through unchanged.
//
//   Before: X -> Identity -> Y -> Relu        After: X -> Relu
//
// Removed: Identity; Dropout in inference (no training_mode, or a constant false one) whose mask
// output is unused; Cast to the input's own type; Transpose with the identity permutation;
// Reshape to the input's own shape (constant target, checked dimension by dimension, so a symbolic
// batch dimension kept by 0 or -1 counts); Pad whose pads are all zero. Readers of Y read X instead;
// when Y is a graph output, X's producer is renamed to produce Y. Left alone (and reported) when that
// rewiring is impossible (X a graph input and Y a graph output, values read by subgraphs).
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class EliminateIdentity : public Pass {
 public:
  std::string name() const override { return "eliminate_identity"; }
  std::string help() const override {
    return "Remove Identity, inference Dropout and no-op Cast/Transpose/Reshape/Pad nodes";
  }
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
