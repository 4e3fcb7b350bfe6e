// The CPU inference engine: runs a Model on the CPU, observable tensor by tensor.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "lwc/graph.h"

namespace lwc::engine {

struct SessionOptions {
  /// Recorded for the caller's bookkeeping only: the kernels (OpenMP and oneDNN) use the
  /// process-wide thread count that configureThreads() sets (the lwc commands call it with
  /// --threads); a Session does not change it.
  int threads = 0;
  /// Use only the plain reference kernels (the test oracle); no oneDNN fast paths.
  bool reference_only = false;
  /// Keep every tensor of the original graph observable under its own name: no graph rewrites (BN
  /// folding, NHWC layout, fusion). Fast kernels are still used node by node. For calibration and
  /// per-layer comparisons.
  bool observable = false;
  /// Accumulate the time spent in each node (see Session::profile()).
  bool profile = false;
  /// Run the graph's first layers, those of large activations and small weights, on a few samples
  /// of a large batch at a time, so that their activations stay in the cache (see
  /// Session::batchSplit()). A function of the input shapes only: the same inputs give the same
  /// bits. Never done for runs with an observer.
  bool split_batch = true;
};

/// Time spent in one node over the runs since the session was built (or resetProfile()).
struct NodeProfile {
  std::string node;  ///< node description
  std::string op_type;
  std::string impl;
  /// The library implementation the node's last call ran on (oneDNN's name, e.g.
  /// "jit_int8_1x1:avx512_core_vnni"); empty for kernels that do not say.
  std::string primitive;
  double total_ms = 0;
  int64_t calls = 0;
  /// Median over those calls: on a shared machine a few slow calls (the process descheduled) raise
  /// the mean, and more for multi-threaded kernels, which wait for every core.
  double median_ms = 0;
};

/// Called once for every tensor a node produces, right after it is produced (graph outputs included).
/// The tensor is only valid during the call: copy what you need.
using Observer = std::function<void(const std::string& name, const Tensor& value)>;

using TensorMap = std::unordered_map<std::string, Tensor>;

/// A model prepared for execution: kernels chosen, constant weights pre-processed, buffers planned.
/// Not thread-safe: one run at a time per Session.
class Session {
 public:
  /// Throws lwc::Error naming the first node whose op (or opset) the engine does not support.
  explicit Session(const Model& model, SessionOptions opts = {});
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Runs the graph. `inputs` must hold every real graph input; returns the graph outputs by name.
  TensorMap run(const TensorMap& inputs, const Observer& observer = {});
  /// Graph outputs in declaration order.
  std::vector<Tensor> runOrdered(const TensorMap& inputs, const Observer& observer = {});

  const std::vector<std::string>& inputNames() const;
  const std::vector<std::string>& outputNames() const;
  /// Implementation chosen for each node ("ref", "dnnl", ...), for diagnostics and tests.
  std::vector<std::pair<std::string, std::string>> kernelChoices() const;
  /// Per-node timings (empty unless SessionOptions::profile).
  std::vector<NodeProfile> profile() const;
  /// Forgets the timings so far (e.g. of warm-up runs, whose first call prepares the kernels).
  void resetProfile();
  /// How the last run split its batch: "" when it did not, else e.g. "the first 27 of 65 nodes
  /// in 8 slices of 4 samples (working set 5.6 MB per sample)".
  std::string batchSplit() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// An op the engine supports, with the model opset range it handles.
struct OpSupport {
  std::string domain;
  std::string op_type;
  int since = 1;
  int until = 1;
  std::string impls;  ///< e.g. "ref,dnnl"
};
std::vector<OpSupport> supportedOps();

/// Ops of the model the engine cannot run at the model's opset: "Domain.Op (opset N) in node 'x'".
std::vector<std::string> unsupportedOps(const Model& m);

/// True for ops whose output differs from run to run (RandomNormal, Bernoulli, ...): never folded
/// into constants.
bool isRandomOp(const Node& n);

/// Runs one node on constant inputs with the reference kernels (for constant folding). Returns
/// nullopt when the node cannot be evaluated that way (other domain, random op, subgraphs, no
/// reference kernel); throws lwc::Error when the kernel rejects the inputs.
std::optional<std::vector<Tensor>> evaluateNode(const Model& model, const Node& n,
                                                const std::vector<const Tensor*>& inputs);

/// The standard-ONNX part of the engine's QDQ fusion: DQ -> Conv/MatMul/Gemm -> Q become
/// QLinearConv / QLinearMatMul (Gemm as Reshape -> 1x1 QLinearConv -> Reshape), DQ -> [Flatten,
/// Reshape, Squeeze, Unsqueeze] -> Q with equal parameters runs the shape op on the integers, dead
/// DequantizeLinear nodes are removed. Returns the number of layers converted (for QOperator files).
int qdqToQOperator(Graph& g);

/// Sets the thread count for OpenMP and oneDNN and pins threads (call before the first run).
void configureThreads(int threads);
/// The thread count runs use now (what configureThreads set; 0 there means every core).
int configuredThreads();

/// True on an x86 CPU without VNNI (AVX512-VNNI or AVX-VNNI), where int8 kernels built on
/// vpmaddubsw (ONNX Runtime's u8 x s8, oneDNN's) add product pairs in a saturating int16: the CPUs
/// `lwc quantize --reduce-range` is for. False on other architectures.
bool hostX86WithoutVnni();

}  // namespace lwc::engine
