#include "passes/quantize_dynamic.h"
#include "passes/weight_layers.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>

#include "lwc/analysis.h"
#include "lwc/graph_edit.h"
#include "passes/quantize_static.h"

namespace lwc::passes {

using nlohmann::json;

std::vector<OptionSpec> QuantizeDynamic::optionSpecs() const {
  return {{"per_channel", OptionType::Bool, true, "Per-output-column weight scales (false: one scale per tensor)"},
          {"exclude", OptionType::StringList, json::array(), "Node names or op types to keep in float"}};
}

namespace {

Node node(const std::string& op, const std::string& name, std::vector<std::string> in, std::vector<std::string> out) {
  Node n;
  n.op_type = op;
  n.name = name;
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  return n;
}

}  // namespace

PassResult QuantizeDynamic::run(Model& m, PassContext&) {
  checkNotQuantized(m);
  const std::string upgraded = upgradeOpset(m, 11, "DynamicQuantizeLinear");
  checkQuantizableOpset(m, 11, "DynamicQuantizeLinear", upgraded);
  Graph& g = m.graph;
  topoSort(g, m.label());
  const bool per_channel = options_.getBool("per_channel");
  std::set<std::string> exclude;
  for (const auto& e : resolveNodeList(g, options_, "exclude", m.label(), excludeHint(g))) exclude.insert(e);
  PassResult r;
  if (!upgraded.empty()) r.notes.push_back(upgraded);
  std::map<std::string, std::array<std::string, 3>> dyn;  // activation -> (q, scale, zero point)
  std::vector<Node> out;
  int64_t layers = 0;
  std::set<std::string> taken;
  auto fresh = [&](const std::string& base) {
    std::string n = g.uniqueName(base);
    for (int k = 1; taken.count(n); ++k) n = g.uniqueName(base + "_" + std::to_string(k));
    taken.insert(n);
    return n;
  };
  std::vector<std::string> old_weights;
  std::string skipped_why;
  for (const Node& n : g.nodes) {
    if (const std::string note = recurrentLayerNote(n); !note.empty() && !exclude.count(n.name) && !exclude.count(n.op_type))
      r.notes.push_back(note);
    const bool mm = n.op_type == "MatMul", gemm = n.op_type == "Gemm";
    const Tensor* w = (mm || gemm) && n.domain.empty() && n.inputs.size() >= 2 ? floatConstant(g, n.inputs[1]) : nullptr;
    bool ok = w && w->rank() == 2 && !g.isGraphInput(n.inputs[1]) && !exclude.count(n.name) && !exclude.count(n.op_type);
    // A layer with constant weights left in float says why (a Gemm with transA stayed silently).
    auto leave = [&](const std::string& why) {
      r.notes.push_back(n.describe() + ": left in float (" + why + ")");
      skipped_why = why;
      ok = false;
    };
    if (!ok && (mm || gemm) && n.domain.empty() && n.inputs.size() >= 2 && !exclude.count(n.name) && !exclude.count(n.op_type))
      if (const std::string coded = codedWeightsReason(g, n.inputs[1]); !coded.empty()) leave(coded);
    if (ok && gemm && n.attrInt("transA", 0) != 0) leave("transA = 1: MatMulInteger has no transposed input");
    const ValueInfo* xi = ok ? g.findValueInfo(n.inputs[0]) : nullptr;
    if (ok && xi && xi->dtype != DType::Float32 && xi->dtype != DType::Undefined)
      leave("its input is " + std::string(dtypeName(xi->dtype)) + ", not float32");
    if (!ok) {
      out.push_back(n);
      continue;
    }
    // Gemm's alpha goes into the weights: alpha·(A·B) = A·(alpha·B) (it stayed in float, silently).
    const float alpha = gemm ? n.attrFloat("alpha", 1.0f) : 1.0f;
    const bool trans = gemm && n.attrInt("transB", 0) != 0;
    const int64_t K = trans ? w->dim(1) : w->dim(0), N = trans ? w->dim(0) : w->dim(1);
    // W as [K, N] int8, one scale per column n.
    std::vector<float> s(per_channel ? static_cast<size_t>(N) : 1, 0.0f);
    auto at = [&](int64_t k, int64_t c) { return alpha * w->data<float>()[trans ? c * K + k : k * N + c]; };
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < N; ++c) {
        float& v = s[per_channel ? static_cast<size_t>(c) : 0];
        v = std::max(v, std::fabs(at(k, c)));
      }
    for (auto& v : s) v = v > 0 ? v / 127.0f : 1.0f;
    Tensor wq(DType::Int8, {K, N});
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < N; ++c)
        wq.data<int8_t>()[k * N + c] = static_cast<int8_t>(
            std::clamp(std::nearbyint(at(k, c) / s[per_channel ? static_cast<size_t>(c) : 0]), -127.0f, 127.0f));
    const std::string base = n.name.empty() ? n.op_type : n.name;
    const std::string& x = n.inputs[0];
    if (!dyn.count(x)) {
      const std::array<std::string, 3> q{fresh(x + "_quantized"), fresh(x + "_scale"), fresh(x + "_zero_point")};
      out.push_back(node("DynamicQuantizeLinear", fresh(x + "_DynamicQuantizeLinear"), {x}, {q[0], q[1], q[2]}));
      dyn[x] = q;
    }
    const auto& q = dyn.at(x);
    const std::string wn = fresh(n.inputs[1] + "_quantized"), wz = fresh(n.inputs[1] + "_zero_point"),
                      ws = fresh(n.inputs[1] + "_scale");
    g.initializers.set(wn, wq);
    g.initializers.set(wz, per_channel ? Tensor(DType::Int8, {N}) : Tensor::scalar<int8_t>(0));
    g.initializers.set(ws, per_channel ? Tensor::fromVector<float>({N}, s) : Tensor::scalar<float>(s[0]));
    old_weights.push_back(n.inputs[1]);
    const std::string acc = fresh(base + "_MatMulInteger_output"), accf = fresh(base + "_cast_output"),
                      scale = fresh(base + "_output_scale"), y0 = fresh(base + "_scaled_output");
    out.push_back(node("MatMulInteger", fresh(base + "_MatMulInteger"), {q[0], wn, q[2], wz}, {acc}));
    Node cast = node("Cast", fresh(base + "_Cast"), {acc}, {accf});
    cast.setAttr("to", int64_t(1));
    out.push_back(cast);
    out.push_back(node("Mul", fresh(base + "_scale_Mul"), {q[1], ws}, {scale}));
    const bool bias = gemm && n.hasInput(2);
    out.push_back(node("Mul", fresh(base + "_Mul"), {accf, scale}, {bias ? y0 : n.outputs[0]}));
    if (bias) {
      std::string c = n.inputs[2];
      const float beta = n.attrFloat("beta", 1.0f);
      if (beta != 1.0f) {
        const std::string bname = fresh(base + "_beta"), cb = fresh(base + "_beta_C");
        g.initializers.set(bname, Tensor::scalar<float>(beta));
        out.push_back(node("Mul", fresh(base + "_beta_Mul"), {c, bname}, {cb}));
        c = cb;
      }
      out.push_back(node("Add", fresh(base + "_bias_Add"), {y0, c}, {n.outputs[0]}));
    }
    ++layers;
  }
  g.nodes = std::move(out);
  dropUnusedConstants(g, old_weights);
  topoSort(g, m.label());
  if (layers == 0)
    fail(m.label(), ": nothing to quantize dynamically (no MatMul/Gemm with constant 2-D weights",
         skipped_why.empty() ? ")" + float16WeightsHint(m) : "; a layer there is left in float: " + skipped_why + ")");
  r.stats = {{"layers_quantized", layers}, {"activations_quantized", static_cast<int64_t>(dyn.size())}};
  r.changed = true;
  return r;
}

}  // namespace lwc::passes
