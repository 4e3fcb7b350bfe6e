// prune_channels: removes whole output channels (filters) and shrinks the graph, so parameters,
// MACs and real latency drop (structured pruning; Li et al. 2017 "Pruning Filters for Efficient
// ConvNets", Liu et al. 2017 "Network Slimming" for bn_gamma).
//
//   Before: Conv1(W1 [64,C,3,3]) -> BN -> Relu -> Conv2(W2 [K,64,3,3])
//   After:  Conv1(W1[keep]) -> BN[keep] -> Relu -> Conv2(W2[:, keep])          |keep| = 64 − removed
//
// Channel groups. Every tensor with a channel axis belongs to a group of tensors whose channels
// must be removed together (union-find over the graph):
//   - producers: Conv (group 1) and Gemm/MatMul with constant weights start a channel space;
//   - channel-wise ops join their input's group and are sliced: depthwise Conv (group = channels,
//     weights [C,1,k,k]: weights, bias and `group` shrink), BatchNormalization (constant
//     parameters), Relu/Clip/LeakyRelu/Sigmoid/HardSigmoid/HardSwish/Tanh/Erf/Gelu/Identity/Dropout,
//     MaxPool/AveragePool/GlobalAveragePool/GlobalMaxPool, Flatten of [N,C,1,1], and Add/Sub/Mul/
//     Div/Max/Min/Pow whose other operand is a scalar or per-channel constant (sliced) or another
//     tensor of the same channels (residual Add, squeeze-excitation Mul: both sides coupled);
//   - consumers: Conv (group 1) and Gemm/MatMul read the group's channels as input channels and
//     lose those rows.
// The channel axis is axis 1 for convolutions and the last axis for a MatMul on [..., T, K] inputs
// (Linear layers on tokens: the hidden width of a transformer MLP, MatMul -> Add(bias) -> GELU
// written out with Erf -> MatMul, or a channels-last ConvNeXt block's). Each tensor of rank >= 3
// allows the axes its readers and producers imply (in [N, C] they are the same axis); a group whose
// tensors need axis 1 in one place and the last axis in another is left alone.
// A group is left alone, and the reason reported, when any of its tensors is a graph input or
// output or is read by an op not listed (Concat, Split, Reshape, Transpose, grouped Conv, ...):
// the pass never produces an invalid model; it prunes what it understands.
//
// Importance of channel c in a group: Σ over the group's producers of the L1 (or L2) norm of the
// producer's output-channel c weights divided by their count, or (bn_gamma) Σ |γ_c| over the
// group's BatchNormalization nodes (run before fuse_batchnorm folds them). Each group loses
// floor(ratio · C) of its least important channels (keeping at least min_channels, the kept
// count rounded up to a multiple of round_to). round_to 0 (the default) aligns each group to 16, or
// 8, when its original count is a multiple of that: ONNX Runtime runs convolutions in its blocked
// NCHWc layout only when channel counts are multiples of the block (16 with AVX-512, 8 with AVX2),
// and unaligned counts made pruned models 2-3x slower there, not faster. With macs_reduction the
// uniform ratio is found by bisection; aligned counts move in coarse steps, so from the largest
// uniform ratio below the target single alignment steps (never past the uniform ratio that reaches
// it) are added until the model's MACs drop by at least that fraction, each chosen by its damage:
// with calibration data the relative output error of the unrecovered model on 128 samples, else
// the share of the group's importance removed.
//
// recover "lsq" (needs calibration data) then re-fits every consumer layer from the kept channels
// by least squares against the pipeline's input model (see lsq_recovery.h).
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class PruneChannels : public Pass {
 public:
  std::string name() const override { return "prune_channels"; }
  std::string help() const override {
    return "Remove whole channels/filters (coupled channels together) and shrink the graph; importance l1, l2 or bn_gamma";
  }
  std::vector<OptionSpec> optionSpecs() const override;
  bool needsCalibration(const PassOptions& o) const override;
  /// macs_reduction also scores its per-group steps on the data, without recovery.
  bool usesCalibration(const PassOptions& o) const override;
  PassResult run(Model& m, PassContext& ctx) override;

 protected:
  void validate(const PassOptions& o) const override;
};

}  // namespace lwc::passes
