// weight_share: Deep Compression's weight sharing (Han et al., ICLR 2016, section 3). Per layer, the
// non-zero weights are clustered by 1-D k-means into 2^bits shared values and each weight is
// replaced by its cluster's centroid; zeros stay zero (pruned weights are coded by position, not by
// a cluster).
//
//   Before: Conv(W)       After: Conv(W'), W'[i] = c[a(i)] for W[i] != 0, 0 otherwise,
//                         a(i) = argmin_j |W[i] − c_j|, c_j = mean{W[i] : a(i) = j}
//
// Initialisation is linear over [min, max] of the layer's non-zero weights (the paper found it
// best: it keeps the few large weights that matter most); Lloyd iterations run until no weight
// changes cluster (at most max_iters). Deterministic: the values are sorted, ties go to the lower
// cluster, and means are accumulated in double. A layer with no more distinct non-zero values than
// clusters keeps its values exactly. The model stays standard ONNX (float weights with few
// distinct values), so it runs anywhere; huffman_encode then stores the cluster indices.
//
// recover "lsq" (needs calibration data) then re-fits each layer's shared values and bias by least
// squares against the pipeline's input model, every weight keeping its cluster (lsq_recovery.h):
// the cluster structure, and so the coded size, stays; the values move to where the layer's
// outputs match best, which k-means on the weights alone cannot see.
//
// Layers: Conv, ConvTranspose, Gemm, MatMul with constant float weights of at least `min_params`
// elements; `conv_bits` gives convolutions their own width (the paper used 8 for conv, 5 for FC).
#pragma once

#include "lwc/pass.h"

namespace lwc::passes {

class WeightShare : public Pass {
 public:
  std::string name() const override { return "weight_share"; }
  std::string help() const override {
    return "Cluster each layer's non-zero weights into 2^bits shared values (k-means, linear init; zeros stay zero)";
  }
  std::vector<OptionSpec> optionSpecs() const override;
  bool needsCalibration(const PassOptions& o) const override;
  PassResult run(Model& m, PassContext& ctx) override;

 protected:
  void validate(const PassOptions& o) const override;
};

/// 1-D k-means with linear initialisation over [min, max]. Returns the centroids (ascending) and
/// fills `assign` (cluster of each value). Exposed for tests.
std::vector<double> kmeans1d(const std::vector<float>& values, int k, int max_iters, std::vector<int>& assign,
                             int* iterations = nullptr);

}  // namespace lwc::passes
