// Kernel interface and registry (engine-internal).
//
// A kernel is created once per node when a Session is built (it may pre-process constant inputs,
// e.g. reorder weights for oneDNN) and run many times. One line registers a kernel for an op and
// the range of model opsets it implements; several implementations of an op may be registered,
// the first whose factory accepts the node wins (fast paths are registered before reference ones).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "lwc/engine.h"
#include "lwc/graph.h"
#include "lwc/shape_inference.h"

namespace lwc::engine {

/// What a kernel factory can see when the session is built.
struct KernelInfo {
  const Node& node;
  int64_t opset;  ///< opset the model imports for the node's domain
  /// Per input: the constant value if the input is an initializer, else nullptr.
  std::vector<const Tensor*> constants;
  /// Per input: inferred type/shape when known (shape may have symbolic batch).
  std::vector<const ValueInfo*> input_types;
  const SessionOptions& options;

  const Tensor* constant(size_t i) const { return i < constants.size() ? constants[i] : nullptr; }
  bool hasInput(size_t i) const { return node.hasInput(i); }
};

/// Inputs and outputs of one kernel invocation.
struct KernelContext {
  const Node& node;
  /// nullptr for an omitted optional input.
  std::span<const Tensor* const> inputs;
  /// One slot per node output; the kernel assigns a freshly allocated tensor to each it produces.
  std::span<Tensor> outputs;
  /// Per input: the session's value when this kernel may take its buffer as an output (see donor).
  std::span<Tensor* const> donors = {};

  const Tensor& in(size_t i) const;
  /// Input i's value, for the kernel to move into an output and write in place, when the session
  /// would release it after this node anyway: this node is its last reader (and reads it at no
  /// other input), it is no model output or constant, and no other tensor shares its buffer (no
  /// caller's input, view or handle kept elsewhere). nullptr otherwise. Once taken, in(i) is empty.
  Tensor* donor(size_t i) const { return i < donors.size() ? donors[i] : nullptr; }
  bool has(size_t i) const { return i < inputs.size() && inputs[i] != nullptr; }
  size_t numOutputs() const { return outputs.size(); }
  /// Allocates output i.
  Tensor& alloc(size_t i, DType dt, Shape shape) {
    outputs[i] = Tensor(dt, std::move(shape));
    return outputs[i];
  }
  /// Allocates output i without zeroing it: for kernels that write every element.
  Tensor& allocUninit(size_t i, DType dt, Shape shape) {
    outputs[i] = Tensor::uninitialized(dt, std::move(shape));
    return outputs[i];
  }
  /// Throws lwc::Error prefixed with the node's description.
  template <typename... Args>
  [[noreturn]] void error(Args&&... args) const {
    fail("node ", node.describe(), ": ", std::forward<Args>(args)...);
  }
  /// Throws lwc::UnsupportedError prefixed with the node's description: valid ONNX this kernel
  /// does not compute (an element type the op allows).
  template <typename... Args>
  [[noreturn]] void unsupported(Args&&... args) const {
    throw UnsupportedError(detail::concat("node ", node.describe(), ": ", std::forward<Args>(args)...));
  }
};

class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual void run(KernelContext& ctx) = 0;
  /// The library implementation the last call ran on, e.g. oneDNN's "jit_int8_1x1:avx512_core_vnni";
  /// empty where the kernel has none to name (or the call took a reference fallback).
  virtual std::string primitive() const { return {}; }
};

/// Returns nullptr when this implementation does not handle the node (e.g. a fast path that only
/// supports some attribute combinations); the registry then tries the next one.
using KernelFactory = std::function<std::unique_ptr<Kernel>(const KernelInfo&)>;
using KernelFn = std::function<void(KernelContext&)>;

class KernelRegistry {
 public:
  struct Entry {
    std::string domain, op_type;
    int since, until;
    std::string impl;  ///< "ref", "dnnl" ...
    KernelFactory factory;
  };
  void add(const std::string& domain, const std::string& op, int since, int until, std::string impl, KernelFactory f);
  /// A stateless reference kernel given as a function.
  void addFn(const std::string& op, int since, int until, KernelFn fn, const std::string& domain = "");
  /// Candidates for an op at a model opset, in registration order.
  std::vector<const Entry*> find(const std::string& domain, const std::string& op, int64_t opset) const;
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  std::vector<Entry> entries_;
};

/// The registry with every built-in kernel (built on first use).
const KernelRegistry& builtinKernels();

// Registration functions, one per kernel family (explicit, no static initialisers).
void registerElementwiseKernels(KernelRegistry& r);
void registerShapeKernels(KernelRegistry& r);
void registerReduceKernels(KernelRegistry& r);
void registerNnKernels(KernelRegistry& r);
void registerRnnKernels(KernelRegistry& r);  ///< RNN, GRU, LSTM
void registerDetectionKernels(KernelRegistry& r);  ///< NonMaxSuppression, GridSample
void registerEinsumKernel(KernelRegistry& r);
void registerLossKernels(KernelRegistry& r);  ///< NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss
void registerTrainingKernels(KernelRegistry& r);  ///< ai.onnx.preview.training Adagrad, Momentum, Adam
void registerSignalKernels(KernelRegistry& r);  ///< DFT, STFT, windows, MelWeightMatrix
void registerControlFlowKernels(KernelRegistry& r);  ///< If, Loop
void registerQuantKernels(KernelRegistry& r);
void registerCodingKernels(KernelRegistry& r);  ///< ai.lwc::HuffmanDecode
void registerDnnlKernels(KernelRegistry& r);
void registerDnnlInt8Kernels(KernelRegistry& r);  ///< called by registerDnnlKernels

}  // namespace lwc::engine
