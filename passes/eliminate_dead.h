// eliminate_dead: removes what does not contribute to a graph output.
//
//   Before: X -> A -> Y (graph output);  X -> B -> Z (read by nobody);  initializer W (unused)
//   After:  X -> A -> Y
//
// A node is live when one of its outputs is a graph output or is read by a live node (subgraph
// reads included); everything else goes, in one backward sweep over the topologically sorted
// graph. Then unused initializers (and their graph-input entries, for models that list
// initializers as inputs) and value_info entries of values that no longer exist are removed.
// Real graph inputs stay even when unused: they are the model's interface.
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class EliminateDead : public Pass {
 public:
  std::string name() const override { return "eliminate_dead"; }
  std::string help() const override { return "Remove unused nodes, initializers and value_info entries"; }
  PassResult run(Model& m, PassContext& ctx) override;
};

}  // namespace lwc::passes
