// Activations at a cut through a model's node list, kept for every calibration batch.
//
// Layer-by-layer recovery (lsqRecover) needs, layer after layer in graph order, one tensor of the
// model on all of the calibration data. Running the model from its input for each layer costs
// work that grows with the square of the depth (torchvision densenet121: 120 layers). An
// ActivationCut instead keeps the tensors that cross a cut (computed before node p, read at or
// after it) for every batch, so that the next pass runs only the nodes after the cut, and moves
// the cut forward as the layers are done.
//
// Same bits: the engine rewrites a graph before running it (BatchNorm folding, post-op fusion,
// NHWC layout), and a graph that starts at a cut is rewritten differently where a rewrite would
// span the cut. Cuts are taken only where none can (safeCuts), so every tensor a pass returns has
// the bits of the whole model's, and lsq's results are those of running the model from its input
// for every layer (a unit test compares the bits layer by layer; lwc prune outputs are
// byte-identical to before on the testdata and torchvision models). Where a residual Add reads a
// block's input there is no such cut inside the block: those passes start at the block.
//
// Memory: the kept tensors of all batches. A cut whose tensors would take more than the budget is
// not taken; that pass runs from the last cut kept (or the input), streaming batch by batch.
//
// Use, per pass: begin(model, upto, value), then get(b, input) for every batch b = 0, 1, ... in the
// data's order, then finish(). Nodes before `upto` must not change after begin() (the caller
// re-fits later nodes only); the model's node list and tensor shapes must stay the same between
// passes, and one ActivationCut serves one model.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "lwc/engine.h"
#include "lwc/graph.h"
#include "lwc/shape_inference.h"

namespace lwc::passes {

class ActivationCut {
 public:
  /// `samples`: how many samples one pass reads (to size a cut before keeping it); `budget_bytes`:
  /// the most the kept tensors may take.
  ActivationCut(int64_t samples, engine::SessionOptions opts, int64_t budget_bytes);
  ~ActivationCut();
  ActivationCut(const ActivationCut&) = delete;
  ActivationCut& operator=(const ActivationCut&) = delete;

  /// Starts a pass that computes tensor `value` of `model`, whose nodes before `upto` are final:
  /// at finish() the cut moves to the last safe position at or before `upto` (safeCuts), if its
  /// tensors fit the budget. A `value` computed before the kept cut and not kept there, or an
  /// `upto` before it, starts again from the input.
  void begin(const Model& model, size_t upto, const std::string& value);
  /// `value` for batch b (in data order), computed from the batch's model input `input` or from
  /// the tensors kept at the cut.
  Tensor get(size_t b, const Tensor& input);
  /// Ends the pass.
  void finish();

  /// Nodes before the kept cut (0: none kept, passes run from the model input).
  size_t position() const { return cut_; }
  /// Bytes held at the kept cut.
  int64_t keptBytes() const;

  /// For each position p = 0 ... nodes: whether a cut before node p gives the tensors after it the
  /// bits of the whole model (1 at p = 0).
  static std::vector<char> safeCuts(const Graph& g, const std::string& input);
  /// Nodes that compute constants (Constant, or only constant inputs and not random): every pass
  /// runs them again, so their outputs never cross a cut.
  static std::vector<char> constantNodes(const Graph& g);

 private:
  void reset();

  int64_t samples_;
  engine::SessionOptions opts_;
  int64_t budget_;
  ValueTypes types_;  ///< of the model, inferred at the first begin()
  bool typed_ = false;
  std::string input_;  ///< the model input batches feed
  std::vector<char> safe_;      ///< safeCuts() of the model
  std::vector<char> constant_;  ///< constantNodes() of the model
  std::unordered_map<std::string, size_t> producer_;  ///< producing node of each value that can cross

  size_t cut_ = 0;
  std::vector<ValueInfo> cut_infos_;       ///< the tensors kept at the cut
  std::vector<std::vector<Tensor>> kept_;  ///< per batch, in the order of cut_infos_

  // The pass in progress.
  std::unique_ptr<engine::Session> session_;
  std::vector<std::pair<size_t, size_t>> feeds_;  ///< session input i <- kept tensor j (or the input: j = npos)
  size_t upto_ = 0;
  std::vector<std::string> next_names_;  ///< the new cut's tensors: the session's first outputs
  size_t value_out_ = 0;                 ///< the session output holding `value`
  bool advancing_ = false;
  size_t batches_seen_ = 0;
};

}  // namespace lwc::passes
