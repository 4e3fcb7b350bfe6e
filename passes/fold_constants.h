// fold_constants: evaluates every node whose inputs are all constants and stores its outputs as
// initializers.
//
//   Before: Constant -> c; Shape(W) -> Gather -> Concat -> Reshape(X, shape)
//   After:  Reshape(X, shape_const)
//
// Nodes are evaluated in topological order with the engine's reference kernels, so chains fold
// completely. Shape (and Size) of a value whose shape is fully known fold too, and so does a Gather
// of known dimensions from a Shape whose other dimensions are not (x.size(1) with a symbolic batch). Left alone: random
// ops, nodes with subgraphs, ops in other domains, DequantizeLinear (folding it would turn int8
// weights back into float32 and undo quantization), nodes producing graph outputs, and nodes whose
// outputs are more than `max_growth_kb` larger than their inputs (Expand, Tile, ConstantOfShape
// would otherwise bloat the file). Inputs nobody reads afterwards are removed.
#pragma once

#include "lwc/analysis.h"
#include "lwc/pass.h"

namespace lwc::passes {

class FoldConstants : public Pass {
 public:
  std::string name() const override { return "fold_constants"; }
  std::string help() const override { return "Evaluate subgraphs whose inputs are all constants, once, with the engine"; }
  std::vector<OptionSpec> optionSpecs() const override;
  PassResult run(Model& m, PassContext& ctx) override;
};

/// analyzeModel(m, opts), except that when it cannot count every MAC (shapes computed at run time
/// from the symbolic batch, as torchvision's swin_t sizes its window partitions), the MACs, other
/// ops and the layers' MACs come from a copy of `m` whose symbolic batch is opts.batch and whose
/// constant computations fold_constants has folded. Params and bytes are always `m`'s own.
ModelStats analyzeFolded(const Model& m, const AnalyzeOptions& opts = {});

}  // namespace lwc::passes
