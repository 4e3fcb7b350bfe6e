#include "lwc/shape_inference.h"

#include "lwc/weight_coding.h"

#include <onnx/defs/schema.h>
#include <onnx/defs/shape_inference.h>
#include <onnx/defs/tensor_proto_util.h>
#include <onnx/shape_inference/implementation.h>

#include "lwc/model_io.h"

#include <algorithm>
#include <climits>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <set>

namespace lwc {

namespace {
// The value of a small integer tensor (rank 0 or 1) that a shape computation produces.
struct IntValue {
  std::vector<int64_t> v;
  bool scalar = false;
  DType dtype = DType::Int64;  ///< Int64 or Int32, as the node produces it
  /// Computed from the Shape of a value whose dimensions are partly symbolic (the batch): entries
  /// kUnknown are not known, and `sym` names their symbol (dim_param; empty when none). Gather,
  /// Slice, Unsqueeze/Squeeze, Concat and integer Casts carry such a value; arithmetic does not.
  /// A Reshape target whose unknown entries each copy its data input's dimension at that position
  /// (the same symbol) is given to ONNX's inference as 0 there ("copy"), which is exact.
  bool partial = false;
  std::vector<std::string> sym;  ///< per entry when partial
};
constexpr int64_t kUnknown = std::numeric_limits<int64_t>::min();
constexpr size_t kMaxIntValue = 64;

std::optional<IntValue> intValueOf(const Tensor& t) {
  if (t.rank() > 1 || t.numel() > static_cast<int64_t>(kMaxIntValue)) return std::nullopt;
  IntValue r;
  r.scalar = t.rank() == 0;
  r.dtype = t.dtype();
  if (t.dtype() == DType::Int64) r.v.assign(t.data<int64_t>(), t.data<int64_t>() + t.numel());
  else if (t.dtype() == DType::Int32) r.v.assign(t.data<int32_t>(), t.data<int32_t>() + t.numel());
  else return std::nullopt;
  return r;
}

// Elementwise integer arithmetic with numpy broadcasting of a one-element operand.
std::optional<IntValue> arith(const std::string& op, const IntValue& a, const IntValue& b) {
  const size_t n = std::max(a.v.size(), b.v.size());
  if ((a.v.size() != n && a.v.size() != 1) || (b.v.size() != n && b.v.size() != 1)) return std::nullopt;
  IntValue r;
  r.scalar = a.scalar && b.scalar;
  r.dtype = a.dtype;
  for (size_t i = 0; i < n; ++i) {
    const int64_t x = a.v[a.v.size() == 1 ? 0 : i], y = b.v[b.v.size() == 1 ? 0 : i];
    int64_t z = 0;
    bool overflow = false;
    if (op == "Add") overflow = __builtin_add_overflow(x, y, &z);
    else if (op == "Sub") overflow = __builtin_sub_overflow(x, y, &z);
    else if (op == "Mul") overflow = __builtin_mul_overflow(x, y, &z);
    else if (y == 0 || (y == -1 && x == std::numeric_limits<int64_t>::min())) overflow = true;
    else z = x / y;  // Div on integers truncates (ONNX Runtime, C++)
    if (overflow) return std::nullopt;  // left to the runtime, as before
    r.v.push_back(z);
  }
  return r;
}

// Evaluates one node of a shape computation when its inputs' values (or, for Shape and Size, its
// input's dimensions) are known. Integer tensors of rank <= 1 only.
std::optional<IntValue> evalShapeNode(const onnx::NodeProto& n, const std::map<std::string, IntValue>& vals,
                                      const ValueTypes& types) {
  if (!n.domain().empty() && n.domain() != "ai.onnx") return std::nullopt;
  const std::string& op = n.op_type();
  auto value = [&](int i, bool partial_ok) -> const IntValue* {
    if (i >= n.input_size() || n.input(i).empty()) return nullptr;
    auto it = vals.find(n.input(i));
    return it == vals.end() || (it->second.partial && !partial_ok) ? nullptr : &it->second;
  };
  auto in = [&](int i) { return value(i, false); };
  // Entries picked from a (partly known) value: fully known, or partial with their symbols.
  auto pick = [](const IntValue& d, IntValue r, const std::vector<int64_t>& at) -> std::optional<IntValue> {
    for (int64_t k : at) {
      r.v.push_back(d.v[static_cast<size_t>(k)]);
      r.sym.push_back(d.partial ? d.sym[static_cast<size_t>(k)] : std::string());
    }
    r.partial = std::find(r.v.begin(), r.v.end(), kUnknown) != r.v.end();
    if (!r.partial) r.sym.clear();
    return r;
  };
  if (op == "Size") {
    auto s = n.input_size() < 1 ? std::nullopt : concreteShape(types, n.input(0));
    if (!s) return std::nullopt;
    IntValue r;
    r.scalar = true;
    r.v.push_back(numelOf(*s));
    return r;
  }
  if (op == "Shape") {
    // Symbolic dimensions (the batch) are kUnknown with their symbol; the known ones still answer
    // Gather(Shape(x), 1) (x.size(1)).
    const auto it = n.input_size() < 1 ? types.end() : types.find(n.input(0));
    if (it == types.end() || !it->second.shape) return std::nullopt;
    IntValue whole;
    whole.partial = true;  // pick() reads the symbols and decides
    for (const auto& d : *it->second.shape) {
      whole.v.push_back(d.known() ? d.value : kUnknown);
      whole.sym.push_back(d.known() ? std::string() : d.param);
    }
    const auto rank = static_cast<int64_t>(whole.v.size());
    const auto* a_start = findAttribute(n, "start");
    const auto* a_end = findAttribute(n, "end");
    const auto [start, end] = shapeSliceBounds(rank, a_start ? a_start->i() : 0, a_end ? a_end->i() : rank);
    std::vector<int64_t> at;
    for (int64_t i = start; i < end; ++i) at.push_back(i);
    return pick(whole, IntValue{}, at);
  }
  if (op == "Identity" || op == "Cast") {
    if (op == "Cast") {
      const auto* to = findAttribute(n, "to");
      if (!to || (to->i() != onnx::TensorProto::INT64 && to->i() != onnx::TensorProto::INT32)) return std::nullopt;
    }
    const IntValue* a = value(0, true);
    if (!a) return std::nullopt;
    IntValue r = *a;
    if (op == "Cast") r.dtype = findAttribute(n, "to")->i() == onnx::TensorProto::INT32 ? DType::Int32 : DType::Int64;
    return r;
  }
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
    const IntValue *a = in(0), *b = in(1);
    return a && b ? arith(op, *a, *b) : std::nullopt;
  }
  if (op == "Gather") {
    const IntValue *d = value(0, true), *idx = in(1);
    const auto* axis = findAttribute(n, "axis");
    if (!d || !idx || d->scalar || (axis && axis->i() != 0)) return std::nullopt;
    IntValue r;
    r.scalar = idx->scalar;
    r.dtype = d->dtype;
    const auto size = static_cast<int64_t>(d->v.size());
    std::vector<int64_t> at;
    for (int64_t k : idx->v) {
      if (k < 0) k += size;
      if (k < 0 || k >= size) return std::nullopt;
      at.push_back(k);
    }
    return pick(*d, r, at);
  }
  if (op == "Unsqueeze" || op == "Squeeze") {
    const IntValue* a = value(0, true);
    if (!a || (op == "Unsqueeze") != a->scalar || (op == "Squeeze" && a->v.size() != 1)) return std::nullopt;
    IntValue r = *a;
    r.scalar = op == "Squeeze";
    return r;
  }
  if (op == "Concat") {
    IntValue d;
    for (int i = 0; i < n.input_size(); ++i) {
      const IntValue* a = value(i, true);
      if (!a || a->scalar) return std::nullopt;
      d.dtype = a->dtype;
      d.v.insert(d.v.end(), a->v.begin(), a->v.end());
      if (a->partial) d.sym.insert(d.sym.end(), a->sym.begin(), a->sym.end());
      else d.sym.resize(d.v.size());
      d.partial = d.partial || a->partial;
    }
    if (d.v.size() > kMaxIntValue) return std::nullopt;
    if (!d.partial) d.sym.clear();
    return d;
  }
  if (op == "Slice") {
    const IntValue *d = value(0, true), *st = in(1), *en = in(2), *ax = in(3), *sp = in(4);
    if (!d || d->scalar || !st || !en || st->v.size() != 1 || en->v.size() != 1) return std::nullopt;
    if (ax && (ax->v.size() != 1 || (ax->v[0] != 0 && ax->v[0] != -1))) return std::nullopt;
    const int64_t step = sp ? (sp->v.size() == 1 ? sp->v[0] : 0) : 1;
    if (step <= 0) return std::nullopt;  // forward slices only
    const auto size = static_cast<int64_t>(d->v.size());
    int64_t b = st->v[0], e = en->v[0];
    if (b < 0) b += size;
    if (e < 0) e += size;
    b = std::clamp<int64_t>(b, 0, size);
    e = std::clamp<int64_t>(e, 0, size);
    IntValue r;
    r.dtype = d->dtype;
    std::vector<int64_t> at;
    for (int64_t i = b; i < e; i += step) at.push_back(i);
    return pick(*d, r, at);
  }
  return std::nullopt;
}

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
/// The inputs (X, W) of the convolutions whose ONNX inference reads W's rank into X unchecked.
std::optional<std::pair<int, int>> convLikeInputs(const std::string& op, const std::string& domain) {
  if (!isDefaultDomain(domain)) return std::nullopt;
  if (op == "Conv" || op == "ConvInteger" || op == "ConvTranspose") return std::pair{0, 1};
  if (op == "QLinearConv") return std::pair{0, 3};
  return std::nullopt;
}

/// Ranks as the graph declares them, read from the protobuf itself (whatever its element type
/// says: a declaration lwc cannot read still has a rank ONNX's inference reads), and initializers'.
std::map<std::string, int64_t> declaredRanks(const onnx::GraphProto& g) {
  std::map<std::string, int64_t> out;
  for (const auto* list : {&g.input(), &g.output(), &g.value_info()})
    for (const auto& v : *list)
      if (v.type().has_tensor_type() && v.type().tensor_type().has_shape())
        out[v.name()] = v.type().tensor_type().shape().dim_size();
  for (const auto& t : g.initializer()) out[t.name()] = t.dims_size();
  return out;
}

/// The rank of `v` from the initializers or `types`, -1 when unknown.
int64_t rankOf(const std::string& v, const Model& m, const ValueTypes& types) {
  if (const Tensor* t = m.graph.initializers.find(v)) return static_cast<int64_t>(t->shape().size());
  const auto it = types.find(v);
  return it == types.end() || !it->second.shape ? -1 : static_cast<int64_t>(it->second.shape->size());
}

/// ONNX's inference functions trust that the checker has run: Scan's reads `num_scan_inputs`
/// without looking, so a Scan without it segfaulted every command (found by fuzzing model files).
/// A node that lacks an attribute its schema requires, or holds one of another type, is left out
/// of the copy that is inferred, in the graph and in every subgraph: its outputs stay untyped, and
/// the checks that report such a model run where they always did.
void dropNodesTheirSchemaRefuses(onnx::GraphProto& g, const std::map<std::string, int64_t>& opsets) {
  auto* nodes = g.mutable_node();
  for (int i = nodes->size() - 1; i >= 0; --i) {
    onnx::NodeProto& n = *nodes->Mutable(i);
    for (auto& a : *n.mutable_attribute()) {
      if (a.has_g()) dropNodesTheirSchemaRefuses(*a.mutable_g(), opsets);
      for (auto& sub : *a.mutable_graphs()) dropNodesTheirSchemaRefuses(sub, opsets);
    }
    const std::string domain = normalizedDomain(n.domain());
    const auto version = opsets.find(domain);
    if (version == opsets.end()) continue;
    const onnx::OpSchema* schema =
        onnx::OpSchemaRegistry::Schema(n.op_type(), static_cast<int>(std::min<int64_t>(version->second, INT32_MAX)), domain);
    if (!schema) continue;
    bool refused = false;
    for (const auto& entry : schema->attributes()) {
      const onnx::OpSchema::Attribute& attr = entry.second;
      const auto given = std::find_if(n.attribute().begin(), n.attribute().end(),
                                      [&](const onnx::AttributeProto& a) { return a.name() == entry.first; });
      if (given == n.attribute().end())
        refused = attr.required;
      else  // an attribute without a type (old exporters) is read as its schema says
        refused = given->type() != onnx::AttributeProto::UNDEFINED && given->type() != attr.type;
      if (refused) break;
    }
    if (refused) nodes->DeleteSubrange(i, 1);
  }
}

}  // namespace

namespace {

/// Rank of input i as inference sees it at this node, -1 when it has none (or no such input).
int64_t inferenceRank(onnx::InferenceContext& ctx, size_t i) {
  if (i >= ctx.getNumInputs()) return -1;
  const onnx::TypeProto* t = ctx.getInputType(i);
  if (!t || !t->has_tensor_type() || !t->tensor_type().has_shape()) return -1;
  return t->tensor_type().shape().dim_size();
}

/// Wraps the inference function of every version of `op` (default domain): `check` runs first and
/// either throws ONNX's inference error (which ONNX records against the node: lenient inference
/// leaves the node's outputs unknown, strict inference reports it) or returns whether the original
/// function may run.
void guardSchema(const char* op, std::function<bool(onnx::InferenceContext&)> check) {
  for (int version = INT_MAX; version > 0;) {
    const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Schema(op, version, "");
    if (!schema) break;
    if (const onnx::InferenceFunction original = schema->GetTypeAndShapeInferenceFunction())
      const_cast<onnx::OpSchema*>(schema)->TypeAndShapeInferenceFunction([original, check](onnx::InferenceContext& ctx) {
        if (check(ctx)) original(ctx);
      });
    version = schema->SinceVersion() - 1;
  }
}

}  // namespace

void guardOnnxInference() {
  static std::once_flag once;
  std::call_once(once, [] {
    // ONNX 1.12's inference functions index dimensions their rank may not have; found by declaring
    // each input of libonnx-testdata's node models at ranks 0-5 (tests/conformance/
    // test_rank_variants.cpp): each crashed every lwc command on such a model.
    // LayerNormalization reads the dimensions before `axis`: axis must lie in [-rank, rank).
    guardSchema("LayerNormalization", [](onnx::InferenceContext& ctx) {
      const int64_t r = inferenceRank(ctx, 0);
      if (r < 0) return true;
      const auto* a = ctx.getAttribute("axis");
      const int64_t axis = a && a->has_i() ? a->i() : -1;
      if (axis < -r || axis >= r)
        fail_shape_inference("axis ", axis, " is out of range for X of rank ", r, " (it must lie in [", -r, ", ", r, "))");
      return true;
    });
    // STFT reads the signal's dimensions 0 and 1: the signal is [batch, length, 1 or 2]. Its output
    // is inferred here whole: ONNX 1.12 counts the frames wrongly when the step does not divide
    // length - frame_length (400 samples, frames of 64 every 32: 12 where there are 11) and reads an
    // absent onesided as 0 (the spec's default is 1), so valid models failed inference and lwc
    // would have written wrong output shapes into them.
    guardSchema("STFT", [](onnx::InferenceContext& ctx) {
      const int64_t r = inferenceRank(ctx, 0);
      if (r >= 0 && r != 3) fail_shape_inference("signal has rank ", r, "; it must be [batch, length, 1 or 2]");
      onnx::propagateElemTypeFromInputToOutput(ctx, 0, 0);
      // A constant scalar input's value, or -1.
      const auto scalar = [&](size_t i) -> int64_t {
        const onnx::TensorProto* t = ctx.getNumInputs() > i ? ctx.getInputData(i) : nullptr;
        if (!t) return -1;
        if (t->data_type() == onnx::TensorProto::INT64) {
          const auto v = onnx::ParseData<int64_t>(t);
          return v.size() == 1 ? v[0] : -1;
        }
        if (t->data_type() == onnx::TensorProto::INT32) {
          const auto v = onnx::ParseData<int32_t>(t);
          return v.size() == 1 ? v[0] : -1;
        }
        return -1;
      };
      int64_t frame = scalar(3);
      if (frame < 0 && ctx.getNumInputs() > 2 && inferenceRank(ctx, 2) == 1) {
        const auto& w = ctx.getInputType(2)->tensor_type().shape().dim(0);
        if (w.has_dim_value()) frame = w.dim_value();
      }
      const int64_t step = scalar(1);
      const auto* a = ctx.getAttribute("onesided");
      const bool onesided = !a || !a->has_i() || a->i() != 0;
      auto* out = onnx::getOutputShape(ctx, 0);
      out->clear_dim();
      for (int d = 0; d < 4; ++d) out->add_dim();
      if (r == 3) {
        const auto& in = ctx.getInputType(0)->tensor_type().shape();
        *out->mutable_dim(0) = in.dim(0);
        if (in.dim(1).has_dim_value() && frame > 0 && step > 0 && frame <= in.dim(1).dim_value())
          out->mutable_dim(1)->set_dim_value((in.dim(1).dim_value() - frame) / step + 1);
      }
      if (frame > 0) out->mutable_dim(2)->set_dim_value(onesided ? frame / 2 + 1 : frame);
      out->mutable_dim(3)->set_dim_value(2);
      return false;
    });
    // Gemm before opset 9 reads two dimensions of A and B (pytorch-converted models).
    guardSchema("Gemm", [](onnx::InferenceContext& ctx) {
      for (size_t i = 0; i < 2; ++i)
        if (const int64_t r = inferenceRank(ctx, i); r >= 0 && r != 2)
          fail_shape_inference(i == 0 ? "A" : "B", " has rank ", r, "; Gemm's A and B must be 2-D");
      return true;
    });
    // Values the convolution and pooling inference divides by or loops over (found by setting each
    // integer attribute and each input dimension of the same models out of range): strides or
    // dilations of 0 divide by zero; with auto_pad SAME and a stride above 1 it finds the padding
    // by subtracting the stride from the input size one step at a time (2^39 steps hang).
    // ConvTranspose has its own inference, without the auto_pad loop. On the main graph, model
    // loading (model_io.cpp, window attributes) refuses strides and dilations below 1 by name
    // before any inference; this check is what reaches the nodes of subgraphs.
    for (const char* op : {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "AveragePool", "MaxPool", "LpPool"})
      guardSchema(op, [padding_loop = std::string(op) != "ConvTranspose"](onnx::InferenceContext& ctx) {
        const auto* pad = ctx.getAttribute("auto_pad");
        if (padding_loop && pad && pad->s() != "NOTSET" && pad->s() != "VALID" && inferenceRank(ctx, 0) >= 3) {
          const auto& shape = ctx.getInputType(0)->tensor_type().shape();
          for (int d = 2; d < shape.dim_size(); ++d)
            if (shape.dim(d).has_dim_value() && shape.dim(d).dim_value() > (int64_t(1) << 31))
              fail_shape_inference("X's dimension ", d, " (", shape.dim(d).dim_value(),
                                   ") is beyond what lwc infers with auto_pad ", pad->s(), " (2^31)");
        }
        for (const char* name : {"strides", "dilations"})
          if (const auto* a = ctx.getAttribute(name))
            for (const int64_t v : a->ints())
              if (v < 1) fail_shape_inference(name, " must be positive, not ", v);
        return true;
      });
    // A DepthToSpace / SpaceToDepth blocksize whose square overflows int64 divides by zero; a
    // negative GatherND batch_dims indexes before the first dimension; ConstantOfShape and Expand
    // add one output dimension per entry of their shape input, so a length of 2^40 declares a rank
    // ONNX then tries to build (memory until the process is killed).
    for (const auto& [op, input] : {std::pair<const char*, size_t>{"ConstantOfShape", 0}, {"Expand", 1}})
      guardSchema(op, [input = input](onnx::InferenceContext& ctx) {
        if (inferenceRank(ctx, input) != 1) return true;
        const auto& d = ctx.getInputType(input)->tensor_type().shape().dim(0);
        if (d.has_dim_value() && d.dim_value() > 1024)
          fail_shape_inference("the shape input lists ", d.dim_value(), " dimensions (lwc reads at most 1024)");
        return true;
      });
    for (const char* op : {"DepthToSpace", "SpaceToDepth"})
      guardSchema(op, [](onnx::InferenceContext& ctx) {
        const auto* a = ctx.getAttribute("blocksize");
        if (a && (a->i() < 1 || a->i() > (int64_t(1) << 31)))
          fail_shape_inference("blocksize ", a->i(), " is out of range (it must lie in [1, 2^31])");
        return true;
      });
    guardSchema("GatherND", [](onnx::InferenceContext& ctx) {
      const auto* a = ctx.getAttribute("batch_dims");
      if (!a) return true;
      const int64_t b = a->i(), rd = inferenceRank(ctx, 0), ri = inferenceRank(ctx, 1);
      if (b < 0 || (rd >= 0 && b >= rd) || (ri >= 0 && b >= ri))
        fail_shape_inference("batch_dims ", b, " is out of range (it must be >= 0 and below the ranks of data and indices)");
      return true;
    });
    // Scan builds vectors of num_scan_inputs entries: 2^40 asked for 8 TiB (std::bad_alloc here,
    // an abort under AddressSanitizer, and possibly the OOM killer where memory is overcommitted).
    guardSchema("Scan", [](onnx::InferenceContext& ctx) {
      const auto* a = ctx.getAttribute("num_scan_inputs");
      if (a && (a->i() < 1 || a->i() > static_cast<int64_t>(ctx.getNumInputs())))
        fail_shape_inference("num_scan_inputs ", a->i(), " is out of range (it must lie in [1, ", ctx.getNumInputs(),
                             "], the node's inputs)");
      return true;
    });
    // MaxUnpool without output_shape reads I's dimension 1, whether I has a shape or not.
    guardSchema("MaxUnpool", [](onnx::InferenceContext& ctx) {
      if (ctx.getNumInputs() != 2 || inferenceRank(ctx, 0) < 0) return true;
      const int64_t ri = inferenceRank(ctx, 1);
      if (ri < 0) {  // the element type only
        onnx::propagateElemTypeFromInputToOutput(ctx, 0, 0);
        return false;
      }
      if (ri != inferenceRank(ctx, 0))
        fail_shape_inference("I has rank ", ri, " but X rank ", inferenceRank(ctx, 0), "; I must have X's shape");
      return true;
    });
  });
}

std::pair<int64_t, int64_t> shapeSliceBounds(int64_t rank, int64_t start, int64_t end) {
  auto clampAxis = [rank](int64_t a) { return std::clamp<int64_t>(a < 0 ? a + rank : a, 0, rank); };
  return {clampAxis(start), clampAxis(end)};
}

ValueTypes inferShapes(const Model& m, const ShapeOptions& opts) {
  onnx::ModelProto p = modelToInferenceProto(m, opts.weight_data_over);
  auto* g = p.mutable_graph();
  {
    std::map<std::string, int64_t> opsets;
    for (const auto& o : p.opset_import()) opsets[normalizedDomain(o.domain())] = o.version();
    dropNodesTheirSchemaRefuses(*g, opsets);
  }
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
  // Each inference starts from the declared value_info only: a symbol ONNX invented for a
  // dimension it could not follow (unk__1) would otherwise outlive the round that learns it.
  auto declared = g->value_info();
  // ONNX 1.12's data propagation for Shape reads its input's type without checking that there is
  // one, so a Shape of a value nothing could type (a custom op's output, the output of a Reshape
  // whose target does not fit) crashed every command. Such inputs get an empty declaration (no
  // element type, no shape) that inference fills where it can; those still empty are dropped after.
  std::set<std::string> shape_inputs;
  for (auto& in : *g->mutable_input())  // likewise a graph input declared without any type
    if (!in.has_type()) in.mutable_type()->mutable_tensor_type();
  {
    std::set<std::string> typed;
    for (const auto* list : {&g->input(), &g->output(), &g->value_info()})
      for (const auto& v : *list) typed.insert(v.name());
    for (const auto& t : g->initializer()) typed.insert(t.name());
    for (const auto& n : g->node())
      if (n.op_type() == "Shape" && isDefaultDomain(n.domain()) && n.input_size() > 0 && !n.input(0).empty() &&
          !typed.count(n.input(0)))
        shape_inputs.insert(n.input(0));
  }
  // ONNX 1.12's inference of Conv, ConvInteger, QLinearConv and ConvTranspose reads as many
  // dimensions of X as W has, unchecked: an X of lower rank segfaulted every command (fuzzed
  // backend-test models). A node whose declared ranks disagree is left out of the inference; an
  // undeclared X is declared with W's rank and no element type, so that a producer inferring
  // another rank conflicts there (an inference error ONNX records) instead of reaching the node.
  // Placeholders still without an element type are dropped after each inference.
  std::set<std::string> rank_placeholders;
  {
    const std::map<std::string, int64_t> declared_rank = declaredRanks(*g);
    auto rank = [&](const std::string& v) -> int64_t {
      const auto it = declared_rank.find(v);
      return it == declared_rank.end() ? -1 : it->second;
    };
    for (auto& n : *g->mutable_node()) {
      const auto io = convLikeInputs(n.op_type(), n.domain());
      if (!io || n.input_size() <= std::max(io->first, io->second)) continue;
      const std::string& x = n.input(io->first);
      const int64_t xr = rank(x), wr = rank(n.input(io->second));
      if (xr >= 0 && wr >= 0 && (xr != wr || xr < 3)) {
        n.set_domain("lwc.left_out");
      } else if (xr < 0 && wr >= 3 && !x.empty()) {
        auto* v = declared.Add();
        v->set_name(x);
        auto* shape = v->mutable_type()->mutable_tensor_type()->mutable_shape();
        for (int64_t d = 0; d < wr; ++d) shape->add_dim();
        shape_inputs.erase(x);
        rank_placeholders.insert(x);
      }
    }
  }
  // ONNX 1.12's data propagation for Add, Sub and Mul reads an operand of no elements as if it
  // had one (the Shape of a scalar plus 1, a Shape slice past the rank, an empty constant), and a
  // Shape with no input at all: both crashed every command. Such models are inferred without it
  // (lwc's own evaluation of shape computations below still runs). Only models where an Add, Sub
  // or Mul reads two integer values that may carry shape data need the extra inference to tell.
  bool data_prop = true;
  std::vector<const onnx::NodeProto*> shape_math;
  {
    std::set<std::string> int_values;  // integer constants and the outputs of ops that carry shape data
    for (const auto& t : g->initializer())
      if (t.data_type() == onnx::TensorProto::INT64 || t.data_type() == onnx::TensorProto::INT32) int_values.insert(t.name());
    static const std::set<std::string> kShapeOps = {"Shape", "Size", "Gather", "Slice", "Concat", "Squeeze", "Unsqueeze",
                                                    "Cast", "Add", "Sub", "Mul", "Div", "Constant", "ConstantOfShape",
                                                    "Range", "ReduceProd", "Min", "Max", "Identity", "Where"};
    for (const auto& n : g->node()) {
      if (!isDefaultDomain(n.domain())) continue;
      if (n.op_type() == "Shape" && (n.input_size() == 0 || n.input(0).empty())) data_prop = false;
      const bool math = n.op_type() == "Add" || n.op_type() == "Sub" || n.op_type() == "Mul";
      if (math && n.input_size() == 2 && int_values.count(n.input(0)) && int_values.count(n.input(1)))
        shape_math.push_back(&n);
      if (kShapeOps.count(n.op_type()))
        for (const auto& o : n.output()) int_values.insert(o);
    }
  }
  auto infer = [&] {
    *g->mutable_value_info() = declared;
    std::set<std::string> have;
    for (const auto& v : declared) have.insert(v.name());
    for (const auto& name : shape_inputs)
      if (!have.count(name)) {
        auto* v = g->add_value_info();
        v->set_name(name);
        v->mutable_type()->mutable_tensor_type();
      }
    try {
      onnx::ShapeInferenceOptions o(/*check_type=*/false, /*error_mode=*/0, data_prop);
      weight_coding::registerOnnxSchemas();  // ai.lwc::HuffmanDecode outputs get their shapes
      guardOnnxInference();
      onnx::shape_inference::InferShapes(p, onnx::OpSchemaRegistry::Instance(), o);
    } catch (const std::exception&) {
      // Inference conflicts (e.g. a declared shape that disagrees) leave us with what was declared.
    }
    auto* vi = g->mutable_value_info();
    for (int i = vi->size() - 1; i >= 0; --i) {
      const auto& v = vi->Get(i);
      if (shape_inputs.count(v.name()) && v.type().tensor_type().elem_type() == 0 && !v.type().tensor_type().has_shape())
        vi->DeleteSubrange(i, 1);
      else if (rank_placeholders.count(v.name()) && v.type().tensor_type().elem_type() == 0)
        vi->DeleteSubrange(i, 1);
    }
  };
  if (data_prop && !shape_math.empty()) {
    data_prop = false;
    infer();
    ValueTypes first;
    collect(p.graph(), first);
    auto empty = [&](const std::string& v) {
      if (m.graph.initializers.contains(v)) return m.graph.initializers.at(v).numel() == 0;
      const auto it = first.find(v);
      return it != first.end() && it->second.shape && it->second.shape->size() == 1 && (*it->second.shape)[0].known() &&
             (*it->second.shape)[0].value == 0;
    };
    bool hazard = false;
    for (const auto* n : shape_math) hazard = hazard || empty(n->input(0)) || empty(n->input(1));
    data_prop = !hazard;
  }
  infer();
  ValueTypes types;
  collect(p.graph(), types);

  // ONNX's data propagation stops at ops it does not cover (Div and Cast in ONNX 1.12), so a
  // Reshape whose target torch computed as view(b, g, c // g, h, w) (ShuffleNet's channel
  // shuffle) leaves every shape after it unknown. Evaluate such small integer computations here,
  // turn the nodes that feed anything else than another evaluated node into Constants in the copy,
  // and infer again, until nothing new is learnt (each round can resolve the next Reshape).
  std::map<std::string, IntValue> vals;
  for (const auto& [name, t] : m.graph.initializers.items())
    if (auto v = intValueOf(t)) vals[name] = *v;
  for (int round = 0; round < 64; ++round) {
    bool learnt = false;
    for (auto& n : *g->mutable_node()) {
      if (n.output_size() != 1 || n.output(0).empty()) continue;
      if (const auto it = vals.find(n.output(0)); it != vals.end() && !it->second.partial) continue;
      if (n.op_type() == "Reshape" && n.domain().empty() && n.input_size() == 2) {
        // A target like [N, 2, c // 2, h, w] whose symbolic entries copy the data's dimensions in place.
        const auto target = vals.find(n.input(1));
        const auto data = types.find(n.input(0));
        const auto* allowzero = findAttribute(n, "allowzero");
        if (target == vals.end() || !target->second.partial || target->second.scalar || data == types.end() ||
            !data->second.shape || (allowzero && allowzero->i() != 0))
          continue;
        const IntValue& t = target->second;
        const SymShape& ds = *data->second.shape;
        bool copies = true;
        std::vector<int64_t> v = t.v;
        for (size_t k = 0; k < v.size() && copies; ++k) {
          if (v[k] != kUnknown) continue;
          copies = k < ds.size() && !t.sym[k].empty() && !ds[k].known() && ds[k].param == t.sym[k];
          v[k] = 0;
        }
        if (!copies) continue;
        const std::string name = "lwc_copy_target:" + n.output(0);
        *g->add_initializer() = tensorToProto(Tensor::fromVector<int64_t>({static_cast<int64_t>(v.size())}, v), name);
        n.set_input(1, name);
        learnt = true;
        continue;
      }
      std::optional<IntValue> v;
      if (n.op_type() == "Constant" && n.domain().empty()) {
        if (const auto* a = findAttribute(n, "value"); a && a->has_t())
          if (a->t().data_type() == onnx::TensorProto::INT64 || a->t().data_type() == onnx::TensorProto::INT32) {
            try {
              v = intValueOf(tensorFromProto(a->t(), {}, n.output(0)));
            } catch (const std::exception&) {
            }
          }
      } else {
        v = evalShapeNode(n, vals, types);
        // int32 results outside int32's range would wrap in a runtime: leave them to it.
        if (v && v->dtype == DType::Int32 &&
            std::any_of(v->v.begin(), v->v.end(), [](int64_t x) {
              return x != kUnknown && (x < std::numeric_limits<int32_t>::min() || x > std::numeric_limits<int32_t>::max());
            }))
          v.reset();
      }
      if (!v) continue;
      vals[n.output(0)] = *v;
      if (n.op_type() == "Constant" || v->partial) continue;  // a partial Shape stays for ONNX's propagation
      // The copy's node becomes a Constant holding the value: ONNX's data propagation reads it.
      Tensor t = v->scalar ? Tensor::scalar<int64_t>(v->v[0])
                           : Tensor::fromVector<int64_t>({static_cast<int64_t>(v->v.size())}, v->v);
      if (v->dtype == DType::Int32) t = t.cast(DType::Int32);
      if (t.numel() == 0) data_prop = false;  // an empty value would reach ONNX's Add/Sub/Mul propagation
      const std::string out = n.output(0);
      n.Clear();
      n.set_op_type("Constant");
      n.add_output(out);
      auto* a = n.add_attribute();
      a->set_name("value");
      a->set_type(onnx::AttributeProto::TENSOR);
      *a->mutable_t() = tensorToProto(t, "");
      learnt = true;
    }
    // ONNX 1.12 gives no shape at all to a Reshape whose target is computed at run time, or to a
    // Pad whose pads are, though their ranks are known: the target's length, the data's rank.
    // Declaring those ranks gives the ops after them theirs (swin_t pads its windows and
    // partitions them so; channel pruning and the passes read ranks).
    for (const auto& n : g->node()) {
      if (n.output_size() < 1 || n.output(0).empty() || !n.domain().empty() || n.input_size() < 1) continue;
      if (const auto it = types.find(n.output(0)); it != types.end() && it->second.shape) continue;
      const auto data = types.find(n.input(0));
      if (data == types.end() || data->second.dtype == DType::Undefined) continue;
      int64_t rank = -1;
      if (n.op_type() == "Reshape" && n.input_size() == 2) {
        const auto target = types.find(n.input(1));
        if (target != types.end() && target->second.shape && target->second.shape->size() == 1 &&
            (*target->second.shape)[0].known())
          rank = (*target->second.shape)[0].value;
      } else if (n.op_type() == "Pad" && data->second.shape) {
        rank = static_cast<int64_t>(data->second.shape->size());
      }
      if (rank < 0) continue;
      ValueInfo v;
      v.name = n.output(0);
      v.dtype = data->second.dtype;
      v.shape = SymShape(static_cast<size_t>(rank));
      *declared.Add() = valueInfoToProto(v);
      learnt = true;
    }
    if (!learnt) break;
    infer();
    types.clear();
    collect(p.graph(), types);
  }
  for (const auto& [name, t] : m.graph.initializers.items()) types[name] = valueInfoOf(name, t);
  return types;
}

std::string convRankDisagreement(const Model& m) {
  auto convLike = [](const Node& n) { return convLikeInputs(n.op_type, n.domain).has_value(); };
  if (std::none_of(m.graph.nodes.begin(), m.graph.nodes.end(), convLike)) return "";
  const ValueTypes types = inferShapes(m);
  const std::map<std::string, int64_t> declared = declaredRanks(modelToInferenceProto(m).graph());
  auto rankIn = [&](const std::string& v, const ValueTypes& t) -> int64_t {
    const int64_t r = rankOf(v, m, t);
    const auto it = declared.find(v);
    return r >= 0 || it == declared.end() ? r : it->second;
  };
  std::optional<ValueTypes> probe;  // inferred with every such node left out: X's own rank
  for (const Node& n : m.graph.nodes) {
    const auto io = convLikeInputs(n.op_type, n.domain);
    if (!io || !n.hasInput(io->first) || !n.hasInput(io->second)) continue;
    const std::string &x = n.inputs[io->first], &w = n.inputs[io->second];
    int64_t xr = rankIn(x, types);
    const int64_t wr = rankIn(w, types);
    if (xr < 0 && wr >= 0) {
      if (!probe) {
        Model copy = m;
        for (Node& c : copy.graph.nodes)
          if (convLike(c)) c.domain = "lwc.left_out";
        probe = inferShapes(copy);
      }
      xr = rankIn(x, *probe);
    }
    // A W of rank 0 gets ONNX's own error for Conv, ConvInteger and QLinearConv ("Second input
    // tensor has wrong dimension"); ConvTranspose reads its dimension 1 regardless.
    const bool onnx_says = wr == 0 && n.op_type != "ConvTranspose";
    if (xr >= 0 && wr >= 0 && (xr != wr || xr < 3) && !onnx_says)
      return n.describe() + ": X ('" + x + "') has rank " + std::to_string(xr) + " and W ('" + w + "') rank " +
             std::to_string(wr) + "; both must be 2 + the number of spatial dimensions";
  }
  return "";
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
