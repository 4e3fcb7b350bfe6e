#include "lwc/shape_inference.h"

#include "lwc/weight_coding.h"

#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>

#include "lwc/model_io.h"

namespace lwc {

namespace {
void collect(const onnx::GraphProto& g, ValueTypes& out) {
  for (const auto* list : {&g.input(), &g.output(), &g.value_info()})
    for (const auto& vi : *list) {
      ValueInfo v = valueInfoFromProto(vi);
      auto it = out.find(v.name);
      // Prefer the entry carrying more information.
      if (it == out.end() || (!it->second.shape && v.shape) || it->second.dtype == DType::Undefined)
        out[v.name] = std::move(v);
    }
}
}  // namespace

ValueTypes inferShapes(const Model& m, const ShapeOptions& opts) {
  onnx::ModelProto p = modelToProto(m);
  auto* g = p.mutable_graph();
  if (opts.batch > 0) {
    for (auto& in : *g->mutable_input()) {
      if (m.graph.initializers.contains(in.name())) continue;
      if (!in.type().has_tensor_type() || !in.type().tensor_type().has_shape()) continue;
      auto* sh = in.mutable_type()->mutable_tensor_type()->mutable_shape();
      if (sh->dim_size() > 0 && !sh->dim(0).has_dim_value()) sh->mutable_dim(0)->set_dim_value(opts.batch);
    }
    // Declared shapes of outputs and intermediates may carry the old symbol; let inference redo them.
    g->clear_value_info();
    for (auto& out : *g->mutable_output()) {
      if (!out.type().has_tensor_type() || !out.type().tensor_type().has_shape()) continue;
      auto* sh = out.mutable_type()->mutable_tensor_type()->mutable_shape();
      if (sh->dim_size() > 0 && !sh->dim(0).has_dim_value()) sh->mutable_dim(0)->clear_dim_param();
    }
  }
  try {
    onnx::ShapeInferenceOptions o(/*check_type=*/false, /*error_mode=*/0, /*data_prop=*/true);
    weight_coding::registerOnnxSchemas();  // ai.lwc::HuffmanDecode outputs get their shapes
    onnx::shape_inference::InferShapes(p, onnx::OpSchemaRegistry::Instance(), o);
  } catch (const std::exception&) {
    // Inference conflicts (e.g. a declared shape that disagrees) leave us with what was declared.
  }
  ValueTypes types;
  collect(p.graph(), types);
  for (const auto& [name, t] : m.graph.initializers.items()) {
    ValueInfo v;
    v.name = name;
    v.dtype = t.dtype();
    SymShape s;
    for (auto d : t.shape()) s.push_back(Dim{d, {}});
    v.shape = s;
    types[name] = v;
  }
  return types;
}

std::optional<Shape> concreteShape(const ValueTypes& types, const std::string& name) {
  auto it = types.find(name);
  if (it == types.end() || !it->second.shape) return std::nullopt;
  Shape s;
  for (const auto& d : *it->second.shape) {
    if (!d.known()) return std::nullopt;
    s.push_back(d.value);
  }
  return s;
}

void annotateShapes(Model& m) {
  ValueTypes types = inferShapes(m);
  m.graph.value_info.clear();
  for (const auto& n : m.graph.nodes)
    for (const auto& o : n.outputs) {
      if (o.empty() || m.graph.isGraphOutput(o)) continue;
      auto it = types.find(o);
      if (it != types.end() && it->second.dtype != DType::Undefined) m.graph.value_info.push_back(it->second);
    }
}

}  // namespace lwc
