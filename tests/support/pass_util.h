// Helpers for pass tests: build graphs from ONNX text, run a pass, compare models numerically.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "lwc/graph.h"
#include "lwc/pass.h"

namespace lwc::test {

/// Parses ONNX text without validation (initializers are added afterwards with addConst).
Model parseGraph(const std::string& text);
/// Adds a seeded random float32 initializer with values in [lo, hi).
void addConst(Model& m, const std::string& name, Shape shape, uint32_t seed, float lo = -1.0f, float hi = 1.0f);
/// One Gemm y = x·wᵀ + b, x [N, in] -> y [N, out], with seeded random w [out, in] (seed) and
/// b [out] (seed + 1), values in [-1, 1).
Model gemmModel(int64_t in, int64_t out, uint32_t seed);
/// Two Linear layers on sequences as exporters write them: x [N, seq, in] -> MatMul(w) -> Add(c)
/// -> Relu -> MatMul(w2) -> Add(c2, ·) -> y [N, seq, out] (opset 13). Seeded weights w [in, hidden]
/// (1), w2 [hidden, out] (3) in [-0.5, 0.5) and biases c (2), c2 (4) in [-0.1, 0.1); one bias is
/// [1, N], the other [N]: c when `first_bias_2d`, else c2.
Model twoLinearLayers(int64_t seq, int64_t in, int64_t hidden, int64_t out, bool first_bias_2d);
/// y = MatMul(Reshape(x, [-1, x.size(1) % 3]), w), x [N, 8] -> y [4N, 5], 11 nodes, seeded random
/// w [2, 5]: shape inference does not evaluate Mod, so the MatMul's MACs (N·4·2·5) are only known
/// once the target is folded at a fixed batch.
Model runTimeSizedMatMul();
/// Runs a built-in pass by name with options. Throws when the pass leaves an initializer that a
/// node read before the pass unread after it (a pass must drop the constants it orphans).
PassResult runPass(Model& m, const std::string& pass, const nlohmann::json& options = nlohmann::json::object());
/// The same with a caller's context (calibration data, reference model, recovery anchors).
PassResult runPass(Model& m, const std::string& pass, const nlohmann::json& options, PassContext& ctx);
/// Initializers that no node (nor a subgraph) reads and that are not graph outputs, sorted.
std::vector<std::string> unusedInitializers(const Graph& g);
/// How many of a pass's notes contain `text`.
int notesWith(const std::vector<std::string>& notes, const std::string& text);
/// Number of nodes of an op type.
int countOps(const Model& m, const std::string& op);
/// Serialized bytes of the model (to check "unchanged" exactly).
std::string serialized(const Model& m);
/// Runs both models with the reference kernels on the same seeded random inputs (batch `batch` for
/// symbolic dims) and returns "" when every output agrees within rtol (relative to the output's
/// largest magnitude), else a description of the difference.
std::string compareModels(const Model& a, const Model& b, double rtol = 1e-5, int64_t batch = 2);
/// Writes `x` to the .npy `file` and returns calibration/evaluation data reading it in batches of `batch`.
DataSpec npyData(const std::filesystem::path& file, const Tensor& x, int64_t batch);
/// Σ (y − y0)² of the model's first output on input `input` = x against the reference output y0.
double squaredError(const Model& m, const std::string& input, const Tensor& x, const Tensor& y0);

}  // namespace lwc::test
