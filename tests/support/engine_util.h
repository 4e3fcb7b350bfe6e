// Helpers for engine tests: run one node, compare tensors.
#pragma once

#include <string>
#include <vector>

#include "lwc/engine.h"
#include "lwc/graph.h"

namespace lwc::test {

struct NodeSpec {
  std::string op_type;
  std::string domain;  ///< "" = ai.onnx
  int64_t opset = 17;
  std::vector<onnx::AttributeProto> attrs;
  /// Inputs in order; an empty Tensor marks an omitted optional input.
  std::vector<Tensor> inputs;
  /// Indices of inputs to store as initializers (constants) instead of feeding at run time.
  std::vector<size_t> constant_inputs;
  size_t num_outputs = 1;
};

/// A spec for one default-domain node whose inputs are all fed at run time.
NodeSpec makeSpec(const std::string& op, std::vector<Tensor> inputs, std::vector<onnx::AttributeProto> attrs = {},
                  int64_t opset = 17);

/// Builds a one-node model from the spec.
Model singleNodeModel(const NodeSpec& spec);
/// The run-time inputs of singleNodeModel(spec): "in<i>" for every input that is neither omitted
/// nor stored as a constant.
engine::TensorMap feedsOf(const NodeSpec& spec);
/// Builds and runs a one-node model; returns its outputs in order.
std::vector<Tensor> runNode(const NodeSpec& spec, bool reference_only = false);
/// The message of the error that running the spec on the reference kernels throws, or "(no error)".
std::string nodeError(const NodeSpec& spec);

onnx::AttributeProto attrInt(const std::string& name, int64_t v);
onnx::AttributeProto attrFloat(const std::string& name, float v);
onnx::AttributeProto attrString(const std::string& name, const std::string& v);
onnx::AttributeProto attrInts(const std::string& name, const std::vector<int64_t>& v);
onnx::AttributeProto attrFloats(const std::string& name, const std::vector<float>& v);
onnx::AttributeProto attrTensor(const std::string& name, const Tensor& t);

/// Seeded uniform random float tensor in [lo, hi).
Tensor randomFloat(Shape shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f);
/// Seeded uniform random integer tensor of dtype in [lo, hi].
Tensor randomInt(DType dtype, Shape shape, uint32_t seed, int64_t lo, int64_t hi);

/// Implementation ("ref", "dnnl" ...) chosen for the first node whose description contains `op`, or "none".
std::string implOf(const engine::Session& s, const std::string& op);

/// The entry of the first node whose op type contains `op` in the profile of a session run with
/// profiling (the engine may have given a node its NHWC form, e.g. lwc.internal.ConvNhwc).
engine::NodeProfile profileOf(const engine::Session& session, const std::string& op);

/// Output 0 of singleNodeModel(spec) and the profile entry of its node whose op type contains `op`,
/// from a session made and run with profiling after configureThreads(threads). Checks that the
/// process's thread count is `threads` again after the run (kernels that hold OpenMP to one thread
/// must restore it). Leaves the count at `threads`: callers reset it with configureThreads(0).
struct ProfiledRun {
  Tensor y;
  engine::NodeProfile prof;
};
ProfiledRun runProfiledOnThreads(const NodeSpec& spec, const std::string& op, int threads);
/// The same on the current thread count.
ProfiledRun runProfiled(const NodeSpec& spec, const std::string& op);

/// Runs `s` on batch `x` (its first input) and on each image of `x` alone; returns the indices of
/// the images whose output 0 alone differs, in any byte, from their part of the batch's output.
std::vector<int64_t> imagesDifferingFromBatch(engine::Session& s, const Tensor& x);

/// Runs one session of `m` on each of `xs` (fed as its first input) in turn, every input alive
/// throughout, and a fresh session on each; returns the indices whose outputs differ from the fresh
/// session's in any byte. Kernels that keep state between calls (per-shape primitives, memory
/// objects re-pointed per call) must read and write each call's own tensors.
std::vector<size_t> runsDifferingFromFresh(const Model& m, const std::vector<Tensor>& xs);

/// Max |a-b| / (atol + rtol*|b|) style check; returns an empty string when close, else a description
/// of the worst element (index, both values).
std::string compareTensors(const Tensor& actual, const Tensor& expected, double rtol = 1e-5, double atol = 1e-6);

}  // namespace lwc::test
