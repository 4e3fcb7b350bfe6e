#include "lwc/opset_lowering.h"

#include <onnx/defs/schema.h>

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "lwc/dtype.h"
#include "lwc/graph.h"
#include "lwc/model_io.h"
#include "lwc/status.h"

namespace lwc {

int64_t knownOpset() {
  const auto& map = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  const auto it = map.find("");
  return it == map.end() ? 17 : it->second.second;
}

int64_t knownIrVersion() { return static_cast<int64_t>(onnx::Version::IR_VERSION); }

namespace {
int64_t defaultOpset(const onnx::ModelProto& p) {
  int64_t v = 0;
  for (const auto& o : p.opset_import())
    if (isDefaultDomain(o.domain())) v = o.version();
  return v;
}
}  // namespace

bool newerThanKnown(const onnx::ModelProto& p) {
  return p.ir_version() > knownIrVersion() || defaultOpset(p) > knownOpset();
}

namespace {

// Ops of the default domain whose opset-18..22 versions differ from their opset-17 versions in
// more than the element types they accept (ONNX's Changelog.md). Element types are left to ONNX's
// checker: a type opset 17 lacks fails it, naming the node.
const std::set<std::string_view> kReduceOps = {"ReduceL1",  "ReduceL2",  "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
                                               "ReduceMean", "ReduceMin", "ReduceProd",   "ReduceSumSquare"};
// Ops added in opsets 18 to 25 that lwc does not rewrite into opset-17 ops.
const std::set<std::string_view> kNewOps = {"BitwiseAnd",     "BitwiseNot",    "BitwiseOr",      "BitwiseXor",
                                            "CenterCropPad",  "Col2Im",        "DeformConv",     "AffineGrid",
                                            "ImageDecoder",   "RegexFullMatch", "StringConcat",  "StringSplit",
                                            "RotaryEmbedding", "TensorScatter"};

std::string describe(const onnx::NodeProto& n) {
  Node d;
  d.name = n.name();
  d.op_type = n.op_type();
  d.outputs.assign(n.output().begin(), n.output().end());
  return d.describe();
}

onnx::AttributeProto* mutableAttr(onnx::NodeProto& n, std::string_view name) {
  for (auto& a : *n.mutable_attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

void removeAttr(onnx::NodeProto& n, std::string_view name) {
  auto* attrs = n.mutable_attribute();
  for (int i = 0; i < attrs->size(); ++i)
    if (attrs->Get(i).name() == name) {
      attrs->DeleteSubrange(i, 1);
      return;
    }
}

int64_t attrInt(const onnx::NodeProto& n, std::string_view name, int64_t dflt) {
  const auto* a = findAttribute(n, name);
  return a ? a->i() : dflt;
}

std::string attrString(const onnx::NodeProto& n, std::string_view name, const std::string& dflt) {
  const auto* a = findAttribute(n, name);
  return a ? a->s() : dflt;
}

// Ranks beyond this are taken for corrupt attributes (ONNX Runtime's kernels stop at far fewer).
constexpr int64_t kMaxRank = 64;

struct Lowering {
  std::string label;
  int64_t from = 0;
  int64_t to = 0;
  std::unordered_set<std::string> used;         // every value and node name in the model, for fresh names
  // What a graph (or function body) says about its values: constants, and the declarations of its
  // inputs, outputs and value_info. Innermost last; a subgraph sees its outer scopes.
  struct Scope {
    std::unordered_map<std::string, const onnx::TensorProto*> constants;
    std::unordered_map<std::string, ValueInfo> declared;
  };
  std::vector<Scope> scopes;
  std::map<std::string, int> changes;          // "what changed" -> how many nodes
  int float_type = 0;                          // the one float element type of the model, 0 when mixed
  bool constants_as_nodes = false;             // in a function body

  [[noreturn]] void refuse(const onnx::NodeProto& n, const std::string& why) const {
    fail(label, ": node ", describe(n), " ", why, "; lwc reads opsets above ", to, " (up to ", kMaxReadableOpset,
         ") by rewriting them into opset ", to, ", which it cannot do here: export the model with opset_version=", to);
  }

  // The innermost scope's entry for `name` in one of its maps, or null.
  template <typename Map>
  const typename Map::mapped_type* lookup(Map Scope::*map, const std::string& name) const {
    for (auto it = scopes.rbegin(); it != scopes.rend(); ++it)
      if (const auto f = ((*it).*map).find(name); f != ((*it).*map).end()) return &f->second;
    return nullptr;
  }

  const onnx::TensorProto* constant(const std::string& name) const {
    const auto* c = lookup(&Scope::constants, name);
    return c ? *c : nullptr;
  }

  // The declared shape of `value` (-1 where a dimension is not fixed), from its declaration or, for a
  // constant, its tensor; nullopt when its rank is not declared.
  std::optional<std::vector<int64_t>> declaredShape(const std::string& value) const {
    if (const auto* v = lookup(&Scope::declared, value); v && v->shape) {
      std::vector<int64_t> dims;
      for (const auto& d : *v->shape) dims.push_back(d.value);
      return dims;
    }
    if (const auto* t = constant(value)) return std::vector<int64_t>(t->dims().begin(), t->dims().end());
    return std::nullopt;
  }

  int64_t declaredRank(const std::string& value) const {
    const auto s = declaredShape(value);
    return s ? static_cast<int64_t>(s->size()) : -1;
  }

  // The declared ONNX element type of `value`, 0 when none is.
  int declaredType(const std::string& value) const {
    if (const auto* v = lookup(&Scope::declared, value); v && v->dtype != DType::Undefined) return toOnnxType(v->dtype);
    if (const auto* t = constant(value)) return t->data_type();
    return 0;
  }

  std::string fresh(const std::string& base) { return claimName(used, base); }

  void count(const std::string& what) { ++changes[what]; }

  // An attribute a later opset added, dropped where it holds its default; else the node is refused.
  void dropDefaultInt(onnx::NodeProto& n, std::string_view name, int64_t dflt) {
    const auto* a = findAttribute(n, name);
    if (!a) return;
    if (a->type() == onnx::AttributeProto::INTS) {
      for (int64_t v : a->ints())
        if (v != dflt) refuse(n, "has " + std::string(name) + " other than " + std::to_string(dflt));
    } else if (a->i() != dflt) {
      refuse(n, "has " + std::string(name) + " " + std::to_string(a->i()));
    }
    removeAttr(n, name);
    count(n.op_type() + ": " + std::string(name) + " left at its default, dropped");
  }

  std::vector<int64_t> constInts(const onnx::NodeProto& n, const std::string& value) const {
    const onnx::TensorProto* t = constant(value);
    if (!t) refuse(n, "reads its axes from '" + value + "', which is computed at run time");
    const Tensor v = tensorFromProto(*t, {}, label + ": '" + value + "'");
    if (v.dtype() != DType::Int64 && v.dtype() != DType::Int32) refuse(n, "has axes '" + value + "' that are not integers");
    std::vector<int64_t> out;
    for (int64_t i = 0; i < v.numel(); ++i)  // exactly: through a double, INT64_MAX would not convert back
      out.push_back(v.dtype() == DType::Int64 ? v.data<int64_t>()[i] : v.data<int32_t>()[i]);
    return out;
  }

  // A node the rewrite reads must have exactly `ins` inputs, all given, and one output.
  void requireArity(const onnx::NodeProto& n, int ins, const char* takes) const {
    bool ok = n.input_size() == ins && n.output_size() == 1 && !n.output(0).empty();
    for (const auto& i : n.input()) ok = ok && !i.empty();
    if (!ok)
      fail(label, ": node ", describe(n), " has ", n.input_size(), " inputs and ", n.output_size(), " outputs; ",
           n.op_type(), " takes ", takes, " and gives one output: the model is corrupt or was edited by hand");
  }

  // One node; appends what replaces it to `out`. `extra` collects initializers the rewrite adds.
  void node(onnx::NodeProto n, std::vector<onnx::NodeProto>& out, std::vector<onnx::TensorProto>& extra) {
    for (auto& a : *n.mutable_attribute()) {
      if (a.has_g()) graph(*a.mutable_g());
      for (auto& g : *a.mutable_graphs()) graph(g);
    }
    if (!isDefaultDomain(n.domain())) {
      out.push_back(std::move(n));
      return;
    }
    const std::string& op = n.op_type();
    if (kReduceOps.count(op)) {
      reduce(n);
    } else if (op == "Split") {
      split(n, out, extra);
    } else if (op == "Pad") {
      if (n.input_size() > 3 && !n.input(3).empty()) refuse(n, "pads only some axes (its axes input, opset 18)");
      if (attrString(n, "mode", "constant") == "wrap") refuse(n, "pads in mode 'wrap' (opset 19)");
    } else if (op == "Resize") {
      dropDefaultInt(n, "antialias", 0);
      if (findAttribute(n, "axes")) refuse(n, "resizes only some axes (its axes attribute, opset 18)");
      if (const auto* a = findAttribute(n, "keep_aspect_ratio_policy")) {
        if (a->s() != "stretch") refuse(n, "has keep_aspect_ratio_policy '" + a->s() + "' (opset 18)");
        removeAttr(n, "keep_aspect_ratio_policy");
        count("Resize: keep_aspect_ratio_policy 'stretch' dropped");
      }
      if (attrString(n, "coordinate_transformation_mode", "") == "half_pixel_symmetric")
        refuse(n, "has coordinate_transformation_mode 'half_pixel_symmetric' (opset 19)");
    } else if (op == "ScatterElements" || op == "ScatterND") {
      const std::string r = attrString(n, "reduction", "none");
      if (r == "max" || r == "min") refuse(n, "has reduction '" + r + "' (opset 18)");
    } else if (op == "LpPool") {
      dropDefaultInt(n, "ceil_mode", 0);
      dropDefaultInt(n, "dilations", 1);
    } else if (op == "AveragePool") {
      dropDefaultInt(n, "dilations", 1);
    } else if (op == "Cast" || op == "CastLike") {
      // Both only act on float8 (saturate, opset 19) and float8e8m0 (round_mode, opset 25)
      // targets, which opset 17 does not have (refused by type).
      for (const char* a : {"saturate", "round_mode"})
        if (findAttribute(n, a)) {
          removeAttr(n, a);
          count(op + ": " + a + " dropped");
        }
    } else if (op == "QuantizeLinear" || op == "DequantizeLinear") {
      if (findAttribute(n, "saturate")) {
        removeAttr(n, "saturate");
        count(op + ": saturate dropped");
      }
      dropDefaultInt(n, "block_size", 0);
      if (const auto* a = findAttribute(n, "output_dtype"); a && op == "QuantizeLinear") {
        // Opset 21: the output type when there is no zero point to give it (uint8 by default).
        const bool has_zero_point = n.input_size() > 2 && !n.input(2).empty();
        if (!has_zero_point && a->i() != 0 && a->i() != onnx::TensorProto::UINT8)
          refuse(n, "sets output_dtype " + std::to_string(a->i()) + " without a zero point (opset 21)");
        removeAttr(n, "output_dtype");
        count(op + ": output_dtype dropped (the zero point's type)");
      } else if (a) {
        // Opset 23: the float output type, the scale's when absent. Only the model's one float type
        // can be the scale's for certain.
        if (a->i() != 0 && a->i() != float_type)
          refuse(n, "sets output_dtype " + std::to_string(a->i()) + " (opset 23), which may differ from its scale's type");
        removeAttr(n, "output_dtype");
        count(op + ": output_dtype dropped (the scale's type)");
      }
      if (const auto* a = findAttribute(n, "precision")) {
        // Opset 23: the type of x / y_scale, the scale's when absent.
        if (a->i() != 0 && a->i() != float_type)
          refuse(n, "sets precision " + std::to_string(a->i()) + " (opset 23), which may differ from its scale's type");
        removeAttr(n, "precision");
        count(op + ": precision dropped (the scale's type)");
      }
    } else if (op == "GridSample") {
      if (auto* a = mutableAttr(n, "mode")) {
        if (a->s() == "linear") a->set_s("bilinear");
        else if (a->s() == "cubic") a->set_s("bicubic");
        else if (a->s() != "nearest") refuse(n, "has mode '" + a->s() + "'");
        count("GridSample: mode renamed to its opset-16 name");
      }
    } else if (op == "DFT" && from >= 20) {
      refuse(n, "is the opset-20 DFT (axis as an input, another default axis)");
    } else if (op == "Mish" || op == "Gelu" || op == "Swish") {
      requireArity(n, 1, "one input");
      if (op == "Mish") mish(n, out);
      else if (op == "Gelu") gelu(n, out, extra);
      else swish(n, out, extra);
      return;
    } else if (op == "RMSNormalization") {
      requireArity(n, 2, "X and scale");
      rmsNorm(n, out, extra);
      return;
    } else if (op == "GroupNormalization") {
      requireArity(n, 3, "X, scale and bias");
      groupNorm(n, out, extra);
      return;
    } else if (op == "Attention") {
      attention(n, out, extra);
      return;
    } else if (kNewOps.count(op)) {
      refuse(n, "is an op opset " + std::to_string(to) + " does not have");
    }
    out.push_back(std::move(n));
  }

  void reduce(onnx::NodeProto& n) {
    const bool noop = attrInt(n, "noop_with_empty_axes", 0) != 0;
    const bool has_axes = n.input_size() > 1 && !n.input(1).empty();
    // An axes input left empty ("", as an optional input may be written) is no axes: opset 17 has
    // no second input, so the node was refused as corrupt.
    if (!has_axes)
      while (n.input_size() > 1) n.mutable_input()->RemoveLast();
    if (!has_axes && !findAttribute(n, "noop_with_empty_axes")) return;  // the same node at opset 17
    removeAttr(n, "noop_with_empty_axes");
    std::vector<int64_t> axes;
    if (has_axes) axes = constInts(n, n.input(1));
    while (n.input_size() > 1) n.mutable_input()->RemoveLast();
    if (axes.empty() && noop) {
      // Nothing is reduced, but the element-wise part still applies (onnx/onnx#7394, as ONNX
      // Runtime 1.30 does): |x| for L1 and L2, x² for SumSquare, log x for LogSum; the others
      // (Sum, Mean, Max, Min, Prod, LogSumExp) are the identity.
      const std::string op = n.op_type();
      n.clear_attribute();
      if (op == "ReduceL1" || op == "ReduceL2") n.set_op_type("Abs");
      else if (op == "ReduceLogSum") {
        // Log takes floats only; ReduceLogSum takes integers too.
        const ValueInfo* v = lookup(&Scope::declared, n.input(0));
        const onnx::TensorProto* const* c = lookup(&Scope::constants, n.input(0));
        const DType dt = v ? v->dtype : c ? fromOnnxType((*c)->data_type()) : DType::Undefined;
        if (dt != DType::Undefined && !isFloat(dt))
          refuse(n, "(noop_with_empty_axes on " + std::string(dtypeName(dt)) + ": log of each element, which opset " +
                        std::to_string(to) + "'s Log computes only for floats)");
        n.set_op_type("Log");
      }
      else if (op == "ReduceSumSquare") {
        n.set_op_type("Mul");
        n.add_input(n.input(0));
      } else n.set_op_type("Identity");
      count("Reduce with noop_with_empty_axes and no axes: " + n.op_type());
      return;
    }
    if (!axes.empty()) {
      auto* a = n.add_attribute();
      a->set_name("axes");
      a->set_type(onnx::AttributeProto::INTS);
      for (int64_t v : axes) a->add_ints(v);
    }
    count(n.op_type() + (has_axes ? ": axes input -> attribute" : ": noop_with_empty_axes 0 dropped"));
  }

  // A constant named after `base`: an initializer, or a Constant node in a function body.
  std::string addConstant(const Tensor& t, const std::string& base, std::vector<onnx::NodeProto>& out,
                       std::vector<onnx::TensorProto>& extra) {
    const std::string name = fresh(base);
    if (constants_as_nodes) {
      onnx::NodeProto c;
      c.set_op_type("Constant");
      c.add_output(name);
      auto* a = c.add_attribute();
      a->set_name("value");
      a->set_type(onnx::AttributeProto::TENSOR);
      *a->mutable_t() = tensorToProto(t, name);
      out.push_back(std::move(c));
    } else {
      extra.push_back(tensorToProto(t, name));
    }
    return name;
  }

  // A float scalar of the model's float type (CastLike to `like` when the model mixes float types).
  std::string scalar(float v, const std::string& like, const std::string& base, std::vector<onnx::NodeProto>& out,
                     std::vector<onnx::TensorProto>& extra) {
    Tensor t = Tensor::scalar(v);
    if (float_type != 0 && float_type != onnx::TensorProto::FLOAT)
      t = t.cast(fromOnnxType(float_type));
    const std::string name = addConstant(t, base, out, extra);
    if (float_type != 0) return name;
    onnx::NodeProto c;
    c.set_op_type("CastLike");
    c.add_input(name);
    c.add_input(like);
    c.add_output(fresh(name + "_like"));
    out.push_back(c);
    return c.output(0);
  }

  // The declared size of `value`'s axis `axis`, or -1 when no declaration in scope fixes it.
  int64_t declaredDim(const std::string& value, int64_t axis) const {
    const auto dims = declaredShape(value);
    if (!dims) return -1;
    const int64_t r = static_cast<int64_t>(dims->size());
    if (axis < -r || axis >= r) return -1;
    return (*dims)[static_cast<size_t>(axis < 0 ? axis + r : axis)];
  }

  // Opset 18's Split with num_outputs n cuts chunks of ceil(dim / n), the last one taking what is
  // left; opset 17's Split without sizes cuts n equal parts, so an uneven split needs its sizes.
  void split(onnx::NodeProto& n, std::vector<onnx::NodeProto>& out, std::vector<onnx::TensorProto>& extra) {
    if (!findAttribute(n, "num_outputs")) return;
    if (n.input_size() > 1 && !n.input(1).empty()) refuse(n, "has both a split input and num_outputs");
    const int64_t parts = attrInt(n, "num_outputs", 0);
    if (parts != n.output_size() || parts < 1)
      refuse(n, "has num_outputs " + std::to_string(parts) + " but " + std::to_string(n.output_size()) + " outputs");
    if (n.input_size() < 1 || n.input(0).empty())
      fail(label, ": node ", describe(n), " has no input; Split takes one: the model is corrupt or was edited by hand");
    removeAttr(n, "num_outputs");
    const int64_t axis = attrInt(n, "axis", 0);
    const int64_t dim = declaredDim(n.input(0), axis);
    if (dim >= 0 && dim % parts == 0) {
      count("Split: num_outputs dropped (equal parts)");
      return;
    }
    const std::string base = n.output(0) + "/split";
    std::string sizes;
    if (dim >= 0) {
      const int64_t chunk = (dim + parts - 1) / parts, last = dim - chunk * (parts - 1);
      if (last < 0)
        fail(label, ": node ", describe(n), " splits a dimension of ", dim, " into ", parts,
             " chunks of ", chunk, ", which leaves none for the last: the model is corrupt or was edited by hand");
      std::vector<int64_t> v(static_cast<size_t>(parts), chunk);
      v.back() = last;
      sizes = addConstant(Tensor::fromVector<int64_t>({parts}, v), base, out, extra);
      count("Split: num_outputs -> split sizes (uneven parts)");
    } else {
      // The sizes from the input's shape at run time: c = ceil(d / n), sizes = [c, ..., c, d - c (n - 1)].
      const std::string d = shapeOf(out, n, n.input(0), axis, axis == -1 ? 0 : axis + 1, base + "/dim");
      const std::string n1 = addConstant(Tensor::fromVector<int64_t>({1}, {parts - 1}), base + "/n_minus_1", out, extra);
      const std::string nn = addConstant(Tensor::fromVector<int64_t>({1}, {parts}), base + "/n", out, extra);
      const std::string up = emit(out, n, "Add", {d, n1}, fresh(base + "/round_up"));
      const std::string chunk = emit(out, n, "Div", {up, nn}, fresh(base + "/chunk"));
      const std::string head = emit(out, n, "Mul", {chunk, n1}, fresh(base + "/head"));
      const std::string last = emit(out, n, "Sub", {d, head}, fresh(base + "/last"));
      std::vector<std::string> all(static_cast<size_t>(parts - 1), chunk);
      all.push_back(last);
      sizes = emit(out, n, "Concat", all, fresh(base + "/sizes"));
      auto* a = out.back().add_attribute();
      a->set_name("axis");
      a->set_type(onnx::AttributeProto::INT);
      a->set_i(0);
      count("Split: num_outputs -> split sizes from the input's shape");
    }
    if (n.input_size() < 2) n.add_input(sizes);
    else n.set_input(1, sizes);
  }

  // Appends op(inputs) -> output, named after the node it replaces; returns the output's name.
  std::string emit(std::vector<onnx::NodeProto>& out, const onnx::NodeProto& from_node, const std::string& op,
                   const std::vector<std::string>& inputs, const std::string& output) {
    onnx::NodeProto k;
    k.set_op_type(op);
    if (!from_node.name().empty()) k.set_name(fresh(from_node.name() + "/" + op));
    for (const auto& i : inputs) k.add_input(i);
    k.add_output(output);
    out.push_back(std::move(k));
    return output;
  }

  // Shape(x) from axis `start` to `end` (0: to the last axis); returns the output's name.
  std::string shapeOf(std::vector<onnx::NodeProto>& out, const onnx::NodeProto& from_node, const std::string& x,
                      int64_t start, int64_t end, const std::string& base) {
    const std::string name = emit(out, from_node, "Shape", {x}, fresh(base));
    setAttr(out.back(), "start", {start}, false);
    if (end != 0) setAttr(out.back(), "end", {end}, false);
    return name;
  }

  // Mish(x) = x * tanh(softplus(x)).
  void mish(const onnx::NodeProto& n, std::vector<onnx::NodeProto>& out) {
    const std::string& x = n.input(0);
    const std::string& base = n.output(0);
    const std::string sp = emit(out, n, "Softplus", {x}, fresh(base + "/softplus"));
    const std::string th = emit(out, n, "Tanh", {sp}, fresh(base + "/tanh"));
    emit(out, n, "Mul", {x, th}, base);
    count("Mish -> Softplus, Tanh, Mul");
  }

  // Gelu(x) = x/2 (1 + erf(x/sqrt 2)); approximate "tanh": x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
  void gelu(const onnx::NodeProto& n, std::vector<onnx::NodeProto>& out, std::vector<onnx::TensorProto>& extra) {
    const std::string& x = n.input(0);
    const std::string& base = n.output(0);
    const std::string approx = attrString(n, "approximate", "none");
    const std::string one = scalar(1.0f, x, base + "/one", out, extra), half = scalar(0.5f, x, base + "/half", out, extra);
    std::string inner;
    if (approx == "none") {
      const std::string sqrt2 = scalar(1.4142135623730951f, x, base + "/sqrt2", out, extra);
      const std::string div = emit(out, n, "Div", {x, sqrt2}, fresh(base + "/div"));
      inner = emit(out, n, "Erf", {div}, fresh(base + "/erf"));
      count("Gelu -> Div, Erf, Add, Mul, Mul");
    } else if (approx == "tanh") {
      const std::string k = scalar(0.044715f, x, base + "/k", out, extra);
      const std::string s = scalar(0.7978845608028654f, x, base + "/sqrt_2_over_pi", out, extra);
      const std::string x2 = emit(out, n, "Mul", {x, x}, fresh(base + "/x2"));
      const std::string x3 = emit(out, n, "Mul", {x2, x}, fresh(base + "/x3"));
      const std::string kx3 = emit(out, n, "Mul", {x3, k}, fresh(base + "/kx3"));
      const std::string poly = emit(out, n, "Add", {x, kx3}, fresh(base + "/poly"));
      const std::string scaled = emit(out, n, "Mul", {poly, s}, fresh(base + "/scaled"));
      inner = emit(out, n, "Tanh", {scaled}, fresh(base + "/tanh"));
      count("Gelu (tanh) -> Mul, Add, Tanh, Mul");
    } else {
      refuse(n, "has approximate '" + approx + "'");
    }
    const std::string plus_one = emit(out, n, "Add", {inner, one}, fresh(base + "/add"));
    const std::string times_x = emit(out, n, "Mul", {x, plus_one}, fresh(base + "/mul"));
    emit(out, n, "Mul", {times_x, half}, base);
  }

  static void setAttr(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& ints, bool list) {
    auto* a = n.add_attribute();
    a->set_name(name);
    if (list) {
      a->set_type(onnx::AttributeProto::INTS);
      for (int64_t v : ints) a->add_ints(v);
    } else {
      a->set_type(onnx::AttributeProto::INT);
      a->set_i(ints.at(0));
    }
  }

  std::string ints(const std::vector<int64_t>& v, const std::string& base, std::vector<onnx::NodeProto>& out,
                   std::vector<onnx::TensorProto>& extra) {
    return addConstant(Tensor::fromVector<int64_t>({static_cast<int64_t>(v.size())}, v), base, out, extra);
  }

  // GroupNormalization (opset 18, 21) in opset-17 ops: X viewed as [N, G, -1], each group
  // normalised over its last axis, then scaled and shifted, per group at opsets 18-20 (scale and
  // bias [G]) and per channel from opset 21 (scale and bias [C]; the statistics in stash_type,
  // float32 by default).
  void groupNorm(const onnx::NodeProto& n, std::vector<onnx::NodeProto>& out, std::vector<onnx::TensorProto>& extra) {
    const std::string &x = n.input(0), &scale = n.input(1), &bias = n.input(2);
    const std::string& base = n.output(0);
    const int64_t groups = attrInt(n, "num_groups", 0);
    if (groups < 1) refuse(n, "has num_groups " + std::to_string(groups));
    const auto* eps_attr = findAttribute(n, "epsilon");
    const float eps = eps_attr ? eps_attr->f() : 1e-5f;
    const bool per_channel = from >= 21;
    const int64_t stash = per_channel ? attrInt(n, "stash_type", onnx::TensorProto::FLOAT) : 0;
    if (per_channel && stash != onnx::TensorProto::FLOAT && stash != onnx::TensorProto::DOUBLE &&
        stash != onnx::TensorProto::FLOAT16 && stash != onnx::TensorProto::BFLOAT16)
      refuse(n, "has stash_type " + std::to_string(stash));
    // The statistics' type: stash_type where the model's float type is another one (or mixed).
    const bool cast = per_channel && float_type != stash;
    std::string xs = x;
    if (cast) {
      xs = emit(out, n, "Cast", {x}, fresh(base + "/stash"));
      setAttr(out.back(), "to", {stash}, false);
    }
    std::string eps_name;
    if (per_channel) {
      Tensor e = Tensor::scalar(eps);
      if (stash != onnx::TensorProto::FLOAT) e = e.cast(fromOnnxType(static_cast<int>(stash)));
      eps_name = addConstant(e, base + "/epsilon", out, extra);
    } else {
      eps_name = scalar(eps, x, base + "/epsilon", out, extra);
    }
    const std::string view = emit(out, n, "Reshape", {xs, ints({0, groups, -1}, base + "/groups", out, extra)},
                                  fresh(base + "/grouped"));
    const std::string mean = emit(out, n, "ReduceMean", {view}, fresh(base + "/mean"));
    setAttr(out.back(), "axes", {2}, true);
    const std::string dev = emit(out, n, "Sub", {view, mean}, fresh(base + "/dev"));
    const std::string sq = emit(out, n, "Mul", {dev, dev}, fresh(base + "/sq"));
    const std::string var = emit(out, n, "ReduceMean", {sq}, fresh(base + "/var"));
    setAttr(out.back(), "axes", {2}, true);
    const std::string ve = emit(out, n, "Add", {var, eps_name}, fresh(base + "/var_eps"));
    const std::string sd = emit(out, n, "Sqrt", {ve}, fresh(base + "/std"));
    std::string norm = emit(out, n, "Div", {dev, sd}, fresh(base + "/norm"));
    if (cast) norm = emit(out, n, "CastLike", {norm, x}, fresh(base + "/norm_cast"));
    const std::string one = ints({1}, base + "/axis1", out, extra);
    const std::string s2 = emit(out, n, "Unsqueeze", {scale, one}, fresh(base + "/scale"));
    const std::string b2 = emit(out, n, "Unsqueeze", {bias, one}, fresh(base + "/bias"));
    std::string view2 = norm;
    if (per_channel) {
      // [N, C, -1], C from the scale's length.
      const std::string c = emit(out, n, "Shape", {scale}, fresh(base + "/channels"));
      const std::string target = emit(out, n, "Concat",
                                      {ints({0}, base + "/keep", out, extra), c, ints({-1}, base + "/rest", out, extra)},
                                      fresh(base + "/per_channel_shape"));
      setAttr(out.back(), "axis", {0}, false);
      view2 = emit(out, n, "Reshape", {norm, target}, fresh(base + "/per_channel"));
    }
    const std::string scaled = emit(out, n, "Mul", {view2, s2}, fresh(base + "/scaled"));
    const std::string shifted = emit(out, n, "Add", {scaled, b2}, fresh(base + "/shifted"));
    const std::string shape = emit(out, n, "Shape", {x}, fresh(base + "/shape"));
    emit(out, n, "Reshape", {shifted, shape}, base);
    count(std::string("GroupNormalization") + (per_channel ? "" : " (opset 18, scale and bias per group)") +
          " -> Reshape, ReduceMean, Sub, Mul, ReduceMean, Add, Sqrt, Div, Mul, Add, Reshape");
  }

  // Swish (opset 24): x * sigmoid(alpha x).
  void swish(const onnx::NodeProto& n, std::vector<onnx::NodeProto>& out, std::vector<onnx::TensorProto>& extra) {
    const std::string& x = n.input(0);
    const std::string& base = n.output(0);
    const auto* alpha_attr = findAttribute(n, "alpha");
    const float alpha = alpha_attr ? alpha_attr->f() : 1.0f;
    std::string arg = x;
    if (alpha != 1.0f) arg = emit(out, n, "Mul", {x, scalar(alpha, x, base + "/alpha", out, extra)}, fresh(base + "/scaled"));
    const std::string sig = emit(out, n, "Sigmoid", {arg}, fresh(base + "/sigmoid"));
    emit(out, n, "Mul", {x, sig}, base);
    count(std::string("Swish -> ") + (alpha != 1.0f ? "Mul, " : "") + "Sigmoid, Mul");
  }

  // RMSNormalization (opset 23): x / sqrt(mean(x^2 over the axes from `axis` on) + epsilon) * scale,
  // the statistics in stash_type (float32 by default).
  void rmsNorm(const onnx::NodeProto& n, std::vector<onnx::NodeProto>& out, std::vector<onnx::TensorProto>& extra) {
    const std::string &x = n.input(0), &scale = n.input(1);
    const std::string& base = n.output(0);
    int64_t axis = attrInt(n, "axis", -1);
    // The axes from `axis` to the last; a positive axis needs the rank, from x's declaration.
    const int64_t rank = declaredRank(x);
    if (rank < 0 && axis >= 0)
      refuse(n, "normalises from axis " + std::to_string(axis) + " of an input whose rank is not declared");
    if ((rank >= 0 && (axis < -rank || axis >= rank)) || axis < -kMaxRank)
      refuse(n, "has axis " + std::to_string(axis) + (rank >= 0 ? " for an input of rank " + std::to_string(rank) : ""));
    if (axis >= 0) axis -= rank;
    std::vector<int64_t> axes;
    for (int64_t a = axis; a < 0; ++a) axes.push_back(a);
    const auto* eps_attr = findAttribute(n, "epsilon");
    const float eps = eps_attr ? eps_attr->f() : 1e-5f;
    const int64_t stash = attrInt(n, "stash_type", onnx::TensorProto::FLOAT);
    if (stash != onnx::TensorProto::FLOAT && stash != onnx::TensorProto::DOUBLE && stash != onnx::TensorProto::FLOAT16 &&
        stash != onnx::TensorProto::BFLOAT16)
      refuse(n, "has stash_type " + std::to_string(stash));
    const bool cast = float_type != stash;
    std::string xs = x;
    if (cast) {
      xs = emit(out, n, "Cast", {x}, fresh(base + "/stash"));
      setAttr(out.back(), "to", {stash}, false);
    }
    Tensor e = Tensor::scalar(eps);
    if (stash != onnx::TensorProto::FLOAT) e = e.cast(fromOnnxType(static_cast<int>(stash)));
    const std::string eps_name = addConstant(e, base + "/epsilon", out, extra);
    const std::string sq = emit(out, n, "Mul", {xs, xs}, fresh(base + "/sq"));
    const std::string ms = emit(out, n, "ReduceMean", {sq}, fresh(base + "/mean_sq"));
    setAttr(out.back(), "axes", axes, true);
    const std::string ve = emit(out, n, "Add", {ms, eps_name}, fresh(base + "/mean_sq_eps"));
    const std::string rms = emit(out, n, "Sqrt", {ve}, fresh(base + "/rms"));
    std::string norm = emit(out, n, "Div", {xs, rms}, fresh(base + "/norm"));
    if (cast) norm = emit(out, n, "CastLike", {norm, x}, fresh(base + "/norm_cast"));
    emit(out, n, "Mul", {norm, scale}, base);
    count("RMSNormalization -> Mul, ReduceMean, Add, Sqrt, Div, Mul");
  }

  // Attention (opsets 23, 24) without a key/value cache: softmax(Q K^T * scale + mask) V, per head,
  // Q and K each scaled by sqrt(scale) first as the op's definition does; 3-D inputs are split into
  // q_num_heads / kv_num_heads heads and joined again after. MQA (one key/value head) broadcasts.
  void attention(const onnx::NodeProto& n, std::vector<onnx::NodeProto>& out, std::vector<onnx::TensorProto>& extra) {
    auto has = [&](int i) { return n.input_size() > i && !n.input(i).empty(); };
    if (!has(0) || !has(1) || !has(2) || n.output_size() < 1 || n.output(0).empty())
      fail(label, ": node ", describe(n), " has ", n.input_size(), " inputs and ", n.output_size(),
           " outputs; Attention takes Q, K and V and gives Y: the model is corrupt or was edited by hand");
    if (has(4) || has(5)) refuse(n, "reads a key/value cache (past_key, past_value)");
    if (has(6)) refuse(n, "reads nonpad_kv_seqlen (opset 24)");
    for (int o = 1; o < n.output_size(); ++o)
      if (!n.output(o).empty()) refuse(n, "gives output " + std::to_string(o) + " (the present cache or the QK product)");
    if (const auto* a = findAttribute(n, "softcap"); a && a->f() != 0.0f) refuse(n, "has softcap");
    if (const auto* a = findAttribute(n, "softmax_precision"); a && a->i() != 0 && a->i() != float_type)
      refuse(n, "has softmax_precision " + std::to_string(a->i()));
    if (float_type != onnx::TensorProto::FLOAT && float_type != onnx::TensorProto::FLOAT16 &&
        float_type != onnx::TensorProto::DOUBLE)
      refuse(n, "is in a model without one float type");
    const std::string &q = n.input(0), &k = n.input(1), &v = n.input(2);
    const std::string& base = n.output(0);
    const int64_t q_heads = attrInt(n, "q_num_heads", 0), kv_heads = attrInt(n, "kv_num_heads", 0);
    int64_t rank = declaredRank(q);
    if (rank < 0) {
      if (q_heads || kv_heads) refuse(n, "has q_num_heads/kv_num_heads for a Q whose rank is not declared");
      rank = 4;
    }
    if (rank != 3 && rank != 4) refuse(n, "has a Q of rank " + std::to_string(rank));
    if (rank == 3 && (q_heads < 1 || kv_heads < 1)) refuse(n, "has 3-D inputs without q_num_heads and kv_num_heads");
    if (rank == 3 && q_heads != kv_heads && kv_heads != 1)
      refuse(n, "groups " + std::to_string(q_heads) + " query heads over " + std::to_string(kv_heads) + " key/value heads");
    if (rank == 4) {
      const int64_t hq = declaredDim(q, 1), hk = declaredDim(k, 1);
      if (hq > 0 && hk > 0 && hq != hk && hk != 1)
        refuse(n, "groups " + std::to_string(hq) + " query heads over " + std::to_string(hk) + " key/value heads");
    }
    // [B, S, H * D] -> [B, H, S, D]
    auto heads = [&](const std::string& x, int64_t h, const std::string& what) {
      const std::string r = emit(out, n, "Reshape", {x, ints({0, 0, h, -1}, base + "/" + what + "_shape", out, extra)},
                                 fresh(base + "/" + what + "_split"));
      const std::string t = emit(out, n, "Transpose", {r}, fresh(base + "/" + what + "_heads"));
      setAttr(out.back(), "perm", {0, 2, 1, 3}, true);
      return t;
    };
    const std::string q4 = rank == 3 ? heads(q, q_heads, "q") : q;
    const std::string k4 = rank == 3 ? heads(k, kv_heads, "k") : k;
    const std::string v4 = rank == 3 ? heads(v, kv_heads, "v") : v;
    // sqrt(scale): the attribute's, else head_size^-1/4, from a declared size or computed.
    std::string root;
    const auto* scale_attr = findAttribute(n, "scale");
    int64_t head_size = rank == 4 ? declaredDim(q, -1) : -1;
    if (rank == 3 && declaredDim(q, -1) > 0 && declaredDim(q, -1) % q_heads == 0) head_size = declaredDim(q, -1) / q_heads;
    if (scale_attr || head_size > 0) {
      const double sc = scale_attr ? scale_attr->f() : 1.0 / std::sqrt(static_cast<double>(head_size));
      if (!(sc > 0)) refuse(n, "has scale " + std::to_string(sc));
      root = scalar(static_cast<float>(std::sqrt(sc)), q, base + "/sqrt_scale", out, extra);
    } else {
      const std::string d = shapeOf(out, n, q4, -1, 0, base + "/head_size");
      const std::string df = emit(out, n, "Cast", {d}, fresh(base + "/head_size_float"));
      setAttr(out.back(), "to", {float_type}, false);
      const std::string r1 = emit(out, n, "Sqrt", {df}, fresh(base + "/head_size_sqrt"));
      const std::string r2 = emit(out, n, "Sqrt", {r1}, fresh(base + "/head_size_root4"));
      root = emit(out, n, "Reciprocal", {r2}, fresh(base + "/sqrt_scale"));
    }
    const std::string qs = emit(out, n, "Mul", {q4, root}, fresh(base + "/q_scaled"));
    const std::string ks = emit(out, n, "Mul", {k4, root}, fresh(base + "/k_scaled"));
    const std::string kt = emit(out, n, "Transpose", {ks}, fresh(base + "/k_transposed"));
    setAttr(out.back(), "perm", {0, 1, 3, 2}, true);
    std::string scores = emit(out, n, "MatMul", {qs, kt}, fresh(base + "/scores"));
    std::string neg_inf;
    auto negInf = [&] {
      if (neg_inf.empty())
        neg_inf = scalar(-std::numeric_limits<float>::infinity(), q, base + "/neg_inf", out, extra);
      return neg_inf;
    };
    if (has(3)) {
      const std::string& mask = n.input(3);
      const int t = declaredType(mask);
      if (t == onnx::TensorProto::BOOL) {
        scores = emit(out, n, "Where", {mask, scores, negInf()}, fresh(base + "/masked"));
      } else if (t == float_type) {
        scores = emit(out, n, "Add", {scores, mask}, fresh(base + "/biased"));
      } else {
        refuse(n, "has an attn_mask '" + mask + "' whose element type is not declared as bool or the model's float type");
      }
    }
    if (attrInt(n, "is_causal", 0) != 0) {
      // Keys after the query's own position are masked: the lower triangle of [S, L] from the top left.
      const std::string sl = shapeOf(out, n, scores, -2, 0, base + "/scores_shape");
      onnx::NodeProto ones;
      ones.set_op_type("ConstantOfShape");
      ones.add_input(sl);
      ones.add_output(fresh(base + "/ones"));
      auto* a = ones.add_attribute();
      a->set_name("value");
      a->set_type(onnx::AttributeProto::TENSOR);
      *a->mutable_t() = tensorToProto(Tensor::fromVector<bool>({1}, {true}), "value");
      const std::string one = ones.output(0);
      out.push_back(std::move(ones));
      const std::string tri = emit(out, n, "Trilu", {one}, fresh(base + "/causal"));
      setAttr(out.back(), "upper", {0}, false);
      scores = emit(out, n, "Where", {tri, scores, negInf()}, fresh(base + "/causal_masked"));
    }
    const std::string probs = emit(out, n, "Softmax", {scores}, fresh(base + "/probs"));
    setAttr(out.back(), "axis", {-1}, false);
    if (rank == 4) {
      emit(out, n, "MatMul", {probs, v4}, base);
    } else {
      const std::string y4 = emit(out, n, "MatMul", {probs, v4}, fresh(base + "/heads_out"));
      const std::string yt = emit(out, n, "Transpose", {y4}, fresh(base + "/heads_back"));
      setAttr(out.back(), "perm", {0, 2, 1, 3}, true);
      emit(out, n, "Reshape", {yt, ints({0, 0, -1}, base + "/joined_shape", out, extra)}, base);
    }
    count(std::string("Attention") + (rank == 3 ? " (3-D)" : "") + " -> Mul, Transpose, MatMul, Softmax, MatMul" +
          (has(3) ? " (with attn_mask)" : "") + (attrInt(n, "is_causal", 0) ? " (causal)" : ""));
  }

  // The nodes of a graph or a function body (whose constants `g` is null for: a body has no
  // initializers, so the scalars a rewrite needs become Constant nodes there).
  void nodes(google::protobuf::RepeatedPtrField<onnx::NodeProto>& ns, onnx::GraphProto* g) {
    Scope scope;
    if (g)
      for (const auto& t : g->initializer()) scope.constants[t.name()] = &t;
    for (const auto& n : ns)
      if (n.op_type() == "Constant" && isDefaultDomain(n.domain()) && n.output_size() == 1)
        if (const auto* a = findAttribute(n, "value"); a && a->has_t()) scope.constants[n.output(0)] = &a->t();
    if (g)
      for (const auto* list : {&g->input(), &g->value_info(), &g->output()})
        for (const auto& v : *list) scope.declared[v.name()] = valueInfoFromProto(v);
    scopes.push_back(std::move(scope));
    const bool outer = constants_as_nodes;
    constants_as_nodes = g == nullptr;
    std::vector<onnx::NodeProto> out;
    std::vector<onnx::TensorProto> extra;
    out.reserve(static_cast<size_t>(ns.size()));
    for (const auto& n : ns) node(n, out, extra);
    constants_as_nodes = outer;
    scopes.pop_back();
    ns.Clear();
    for (auto& n : out) *ns.Add() = std::move(n);
    for (auto& t : extra) *g->add_initializer() = std::move(t);
  }

  void graph(onnx::GraphProto& g) { nodes(*g.mutable_node(), &g); }
};

void collectNames(const onnx::GraphProto& g, std::unordered_set<std::string>& used) {
  for (const auto& v : g.input()) used.insert(v.name());
  for (const auto& v : g.output()) used.insert(v.name());
  for (const auto& v : g.value_info()) used.insert(v.name());
  for (const auto& t : g.initializer()) used.insert(t.name());
  for (const auto& n : g.node()) {
    used.insert(n.name());
    for (const auto& s : n.input()) used.insert(s);
    for (const auto& s : n.output()) used.insert(s);
    for (const auto& a : n.attribute()) {
      if (a.has_g()) collectNames(a.g(), used);
      for (const auto& sg : a.graphs()) collectNames(sg, used);
    }
  }
}

// Element types of tensors and declarations, for the IR-version check and the constants' type.
void collectTypes(const onnx::GraphProto& g, std::set<int>& types) {
  auto vi = [&](const onnx::ValueInfoProto& v) {
    if (v.type().has_tensor_type()) types.insert(v.type().tensor_type().elem_type());
  };
  for (const auto& v : g.input()) vi(v);
  for (const auto& v : g.output()) vi(v);
  for (const auto& v : g.value_info()) vi(v);
  for (const auto& t : g.initializer()) types.insert(t.data_type());
  for (const auto& n : g.node())
    for (const auto& a : n.attribute()) {
      if (a.has_t()) types.insert(a.t().data_type());
      if (a.name() == "to" && a.type() == onnx::AttributeProto::INT) types.insert(static_cast<int>(a.i()));
      if (a.has_g()) collectTypes(a.g(), types);
      for (const auto& sg : a.graphs()) collectTypes(sg, types);
    }
}

}  // namespace

std::vector<std::string> lowerToKnownVersions(onnx::ModelProto& p, const std::string& label) {
  std::vector<std::string> notes;
  const int64_t known_ir = knownIrVersion();
  const int64_t to = knownOpset(), from = defaultOpset(p);
  const bool new_ir = p.ir_version() > known_ir, new_opset = from > to;
  if (!new_ir && !new_opset) return notes;

  std::set<int> types;
  collectTypes(p.graph(), types);
  for (const auto& f : p.functions()) {
    onnx::GraphProto body;  // only its nodes: for their Constant tensors and Cast targets
    *body.mutable_node() = f.node();
    collectTypes(body, types);
  }
  for (int t : types)
    if (t > onnx::TensorProto::BFLOAT16)
      fail(label, ": uses element type ", t,
           " (float8, int4 or a later type, IR version 9 on), which lwc does not support; export the model in "
           "float32 or float16");
  if (new_opset && from > kMaxReadableOpset)
    fail(label, ": imports opset ", from, "; lwc reads opsets up to ", kMaxReadableOpset, " (rewritten into opset ", to,
         ", the newest its ONNX library knows): export the model with opset_version=", to);

  if (new_opset) {
    Lowering l;
    l.label = label;
    l.from = from;
    l.to = to;
    collectNames(p.graph(), l.used);
    for (const auto& f : p.functions())
      for (const auto& n : f.node()) {
        for (const auto& v : n.input()) l.used.insert(v);
        for (const auto& v : n.output()) l.used.insert(v);
      }
    std::set<int> floats;
    for (int t : types)
      if (t == onnx::TensorProto::FLOAT || t == onnx::TensorProto::FLOAT16 || t == onnx::TensorProto::DOUBLE ||
          t == onnx::TensorProto::BFLOAT16)
        floats.insert(t);
    l.float_type = floats.size() == 1 ? *floats.begin() : 0;
    l.graph(*p.mutable_graph());
    for (auto& f : *p.mutable_functions()) {
      l.nodes(*f.mutable_node(), nullptr);
      for (auto& o : *f.mutable_opset_import())
        if (isDefaultDomain(o.domain()) && o.version() > to) o.set_version(to);
    }
    for (auto& o : *p.mutable_opset_import())
      if (isDefaultDomain(o.domain())) o.set_version(to);
    std::string what;
    for (const auto& [k, c] : l.changes) what += (what.empty() ? "" : "; ") + k + " (" + std::to_string(c) + ")";
    notes.push_back("lwc reads opset " + std::to_string(from) + " as opset " + std::to_string(to) +
                    " (the newest its ONNX library knows) and the models it writes import opset " + std::to_string(to) +
                    (what.empty() ? ": no node needed a change" : ": " + what));
  }
  if (new_ir) {
    notes.push_back("lwc reads IR version " + std::to_string(p.ir_version()) + " as IR version " +
                    std::to_string(known_ir) + " (the model uses none of the later types) and writes IR version " +
                    std::to_string(known_ir));
    p.set_ir_version(known_ir);
  }
  return notes;
}

}  // namespace lwc
