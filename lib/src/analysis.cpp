#include "lwc/analysis.h"

#include "lwc/weight_coding.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "lwc/model_io.h"
#include "lwc/shape_inference.h"

namespace lwc {

std::string_view roleName(InitRole r) {
  switch (r) {
    case InitRole::Weight: return "weight";
    case InitRole::Bias: return "bias";
    case InitRole::NormParam: return "norm_param";
    case InitRole::BnStat: return "bn_stat";
    case InitRole::QuantParam: return "quant_param";
    case InitRole::OtherParam: return "other_param";
    case InitRole::Constant: return "constant";
  }
  return "constant";
}

namespace {

bool isWeightSlot(const std::string& op, size_t i) {
  if (op == "Conv" || op == "ConvTranspose" || op == "ConvInteger" || op == "MatMulInteger") return i == 1;
  if (op == "Gemm" || op == "MatMul") return i == 0 || i == 1;
  if (op == "QLinearConv" || op == "QLinearMatMul") return i == 3 || (op == "QLinearMatMul" && i == 0);
  return false;
}
bool isBiasSlot(const std::string& op, size_t i) {
  if (op == "Conv" || op == "ConvTranspose" || op == "Gemm") return i == 2;
  if (op == "QLinearConv") return i == 8;
  return false;
}
bool isQuantSlot(const std::string& op, size_t i) {
  if (op == "QuantizeLinear" || op == "DequantizeLinear") return i == 1 || i == 2;
  if (op == "QLinearConv") return i != 0 && i != 3 && i != 8;
  if (op == "QLinearMatMul") return i != 0 && i != 3;
  if (op == "ConvInteger" || op == "MatMulInteger") return i == 2 || i == 3;
  if (op.rfind("QLinear", 0) == 0) return i != 0;
  return false;
}
bool isNormSlot(const std::string& op, size_t i) {
  if (op == "BatchNormalization" || op == "LayerNormalization" || op == "InstanceNormalization")
    return i == 1 || i == 2;
  if (op == "PRelu") return i == 1;
  return false;
}

/// a * b, or -1 (unknown) when either is unknown or the product does not fit in 64 bits: the
/// shapes counted are declared or inferred ones, which a corrupt model may make anything (a
/// fuzzed model declared [206158430205, 268435455], and the count wrapped).
int64_t mulKnown(int64_t a, int64_t b) {
  int64_t r = 0;
  return a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) ? -1 : r;
}

/// The product of s[from:], or -1 when a dimension is negative or the product does not fit.
int64_t prod(const Shape& s, size_t from = 0) {
  int64_t p = 1;
  for (size_t i = from; i < s.size(); ++i) p = mulKnown(p, s[i]);
  return p;
}

/// MACs of a one- or two-operand Einsum: the product of every index's size for two operands (each
/// combination of indices is one multiply-add), 0 for one (a transpose or sum); -1 (not counted)
/// for an ellipsis, more operands or an unknown shape.
template <typename ShapeAt>
int64_t einsumMacs(const Node& n, ShapeAt shapeAt) {
  const std::string eq = n.attrString("equation", "");
  const std::string lhs = eq.substr(0, eq.find("->"));
  if (eq.find("...") != std::string::npos || n.inputs.size() > 2 || n.inputs.empty()) return -1;
  std::map<char, int64_t> size;
  size_t operand = 0, pos = 0;
  for (size_t i = 0; i <= lhs.size(); ++i) {
    if (i < lhs.size() && lhs[i] != ',') continue;
    const auto s = shapeAt(operand);
    std::string letters;
    for (char c : lhs.substr(pos, i - pos))
      if (c != ' ') letters += c;
    if (!s || s->size() != letters.size()) return -1;
    for (size_t k = 0; k < letters.size(); ++k) size[letters[k]] = std::max(size[letters[k]], (*s)[k]);
    ++operand;
    pos = i + 1;
  }
  if (operand != n.inputs.size()) return -1;
  if (operand == 1) return 0;
  int64_t macs = 1;
  for (const auto& [c, d] : size) macs = mulKnown(macs, d);
  return macs;
}

bool subgraphHasMacs(const onnx::AttributeProto& a) {
  static const std::set<std::string> kMacOps = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "Gemm", "MatMul",
                                                "MatMulInteger", "QLinearMatMul", "LSTM", "GRU", "RNN", "Einsum"};
  std::vector<const onnx::GraphProto*> todo;
  if (a.has_g()) todo.push_back(&a.g());
  for (const auto& g : a.graphs()) todo.push_back(&g);
  while (!todo.empty()) {
    const onnx::GraphProto* g = todo.back();
    todo.pop_back();
    for (const auto& n : g->node()) {
      if (kMacOps.count(n.op_type())) return true;
      for (const auto& sa : n.attribute()) {
        if (sa.has_g()) todo.push_back(&sa.g());
        for (const auto& sg : sa.graphs()) todo.push_back(&sg);
      }
    }
  }
  return false;
}

const std::set<std::string> kShapeOps = {
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Gather",
    "Shape", "Size", "Identity", "Constant", "ConstantOfShape", "Expand", "Tile", "Pad", "Dropout",
    "Range", "DepthToSpace", "SpaceToDepth", "GatherElements", "ScatterND", "NonZero", "Cast", "CastLike"};

}  // namespace

std::map<std::string, InitRole> initializerRoles(const Graph& g) {
  std::map<std::string, InitRole> roles;
  GraphIndex idx(g);
  // DequantizeLinear outputs that feed weight/bias slots make their int8/int32 input a weight/bias.
  std::unordered_map<std::string, InitRole> dq_role;
  for (const auto& n : g.nodes)
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      const int p = idx.producer(n.inputs[i]);
      if (p < 0 || g.nodes[p].op_type != "DequantizeLinear") continue;
      if (isWeightSlot(n.op_type, i)) dq_role[n.inputs[i]] = InitRole::Weight;
      else if (isBiasSlot(n.op_type, i)) dq_role[n.inputs[i]] = InitRole::Bias;
    }
  // Dynamic quantization multiplies the input's run-time scale (DynamicQuantizeLinear's second
  // output) by the weight's scales: those are quantization parameters, as a DequantizeLinear's are.
  auto isDynamicScale = [&](const std::string& v) {
    const int p = idx.producer(v);
    const Node* n = p < 0 ? nullptr : &g.nodes[static_cast<size_t>(p)];
    return n && n->domain.empty() && n->op_type == "DynamicQuantizeLinear" && n->outputs.size() > 1 && n->outputs[1] == v;
  };
  // A layer's output, float: a MatMul/Gemm/Conv, or dynamic quantization's product rescaled by the
  // run-time scale. A one-element constant added to it is that layer's bias (a Linear(64, 1) head
  // after quantize --mode dynamic lost its bias from the parameter count), not a scalar constant
  // (rank 0, as torch exports `x @ w + 1.0`).
  auto isLayerOutput = [&](const std::string& v) {
    const int p = idx.producer(v);
    if (p < 0) return false;
    const Node& n = g.nodes[static_cast<size_t>(p)];
    if (!n.domain.empty()) return false;
    if (n.op_type == "MatMul" || n.op_type == "Gemm" || n.op_type == "Conv" || n.op_type == "ConvTranspose") return true;
    if (n.op_type != "Mul" || n.inputs.size() != 2) return false;
    // MatMulInteger / ConvInteger -> Cast -> Mul (by the scales' product)
    for (const auto& in : n.inputs) {
      const int c = idx.producer(in);
      if (c < 0 || g.nodes[size_t(c)].op_type != "Cast" || g.nodes[size_t(c)].inputs.empty()) continue;
      const int q = idx.producer(g.nodes[size_t(c)].inputs[0]);
      if (q >= 0 && (g.nodes[size_t(q)].op_type == "MatMulInteger" || g.nodes[size_t(q)].op_type == "ConvInteger")) return true;
    }
    return false;
  };
  for (const auto& [name, t] : g.initializers.items()) {
    InitRole best = InitRole::Constant;
    bool seen_quant = false, seen_stat = false, seen_weight = false, seen_bias = false, seen_norm = false;
    bool seen_layer_add = false;
    // Uses of the tensor, through any Cast: float16 weights stored beside a Cast to float32 (a
    // float32 compute graph) are the layer's weights, not constants.
    std::vector<std::pair<int, std::string>> uses;  // (consumer, the value it reads)
    std::vector<std::string> values = {name};
    for (size_t v = 0; v < values.size() && v < 64; ++v)
      for (int ni : idx.consumers(values[v])) {
        const Node& c = g.nodes[size_t(ni)];
        if (c.domain.empty() && c.op_type == "Cast" && c.inputs.size() == 1 && c.outputs.size() == 1)
          values.push_back(c.outputs[0]);
        else uses.emplace_back(ni, values[v]);
      }
    for (const auto& [ni, value] : uses) {
      const Node& n = g.nodes[size_t(ni)];
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        if (n.inputs[i] != value) continue;
        if (n.op_type == "DequantizeLinear" && i == 0 && !n.outputs.empty()) {
          auto it = dq_role.find(n.outputs[0]);
          if (it != dq_role.end()) (it->second == InitRole::Weight ? seen_weight : seen_bias) = true;
          else seen_norm = seen_norm || t.numel() > 1;  // quantized tensor of another kind
        } else if (isWeightSlot(n.op_type, i)) seen_weight = true;
        else if (isBiasSlot(n.op_type, i)) seen_bias = true;
        else if (isNormSlot(n.op_type, i)) seen_norm = true;
        else if (n.op_type == "BatchNormalization" && (i == 3 || i == 4)) seen_stat = true;
        else if (isQuantSlot(n.op_type, i)) seen_quant = true;
        else if (n.op_type == "Mul" && n.inputs.size() == 2 && isDynamicScale(n.inputs[1 - i])) seen_quant = true;
        else if (n.op_type == "Add" && n.domain.empty() && n.inputs.size() == 2 && isLayerOutput(n.inputs[1 - i]))
          seen_layer_add = true;
      }
    }
    if (seen_weight) best = InitRole::Weight;
    else if (seen_bias) best = InitRole::Bias;
    else if (seen_norm) best = InitRole::NormParam;
    else if (seen_stat) best = InitRole::BnStat;
    else if (seen_quant) best = InitRole::QuantParam;
    else if (isFloat(t.dtype()) && (t.numel() > 1 || (t.numel() == 1 && t.rank() == 1 && seen_layer_add))) best = InitRole::OtherParam;
    roles[name] = best;
  }
  return roles;
}

namespace {
// Ascending order of unsigned keys by least-significant-digit radix sort, one pass per byte (a
// byte every key shares is skipped): the order std::sort gives, several times faster on the
// millions of weights of a large layer (the whole `lwc info` of torchvision resnet50: 2.0 -> 0.8 s).
template <typename U>
void radixSort(std::vector<U>& v) {
  std::vector<U> tmp(v.size());
  for (unsigned shift = 0; shift < 8 * sizeof(U); shift += 8) {
    std::array<size_t, 257> count{};
    for (const U x : v) ++count[((x >> shift) & 0xFFu) + 1];
    if (std::any_of(count.begin() + 1, count.end(), [&](size_t c) { return c == v.size(); })) continue;
    for (size_t b = 1; b < count.size(); ++b) count[b] += count[b - 1];
    for (const U x : v) tmp[count[(x >> shift) & 0xFFu]++] = x;
    v.swap(tmp);
  }
}

template <typename U>
double entropyOf(const U* p, int64_t n) {
  std::vector<U> v(p, p + n);
  radixSort(v);
  double h = 0;
  const double total = static_cast<double>(n);
  for (int64_t i = 0; i < n;) {
    int64_t j = i + 1;
    while (j < n && v[j] == v[i]) ++j;
    const double q = static_cast<double>(j - i) / total;
    h -= q * std::log2(q);
    i = j;
  }
  return h;
}
}  // namespace

double entropyBitsPerElement(const Tensor& t) {
  if (t.numel() == 0) return 0;
  // Histogram of exact bit patterns (sorting is much faster than hashing for millions of values).
  switch (dtypeSize(t.dtype())) {
    case 1: return entropyOf(static_cast<const uint8_t*>(t.raw()), t.numel());
    case 2: return entropyOf(static_cast<const uint16_t*>(t.raw()), t.numel());
    case 4: return entropyOf(static_cast<const uint32_t*>(t.raw()), t.numel());
    default: return entropyOf(static_cast<const uint64_t*>(t.raw()), t.numel());
  }
}

int64_t countZeros(const Tensor& t) {
  int64_t z = 0;
  if (t.dtype() == DType::Float32) {
    const float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) z += p[i] == 0.0f;
  } else {
    for (int64_t i = 0; i < t.numel(); ++i) z += t.at(i) == 0.0;
  }
  return z;
}

namespace {
// Zeros of a weight as its layer sees them: an integer weight is zero where it equals its zero
// point (a uint8 weight with zero point 128 stores its zeros as 128), read from the node that
// dequantizes it (DequantizeLinear, QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger). A
// float weight, or one no such node reads with a constant zero point, counts exact zeros.
int64_t weightZeros(const Graph& g, const GraphIndex& idx, const std::string& name, const Tensor& t) {
  if (isFloat(t.dtype()) || t.rank() == 0) return countZeros(t);
  for (int ci : idx.consumers(name)) {
    const Node& n = g.nodes[static_cast<size_t>(ci)];
    if (!n.domain.empty()) continue;
    for (size_t i = 0; i < n.inputs.size(); ++i) {
      if (n.inputs[i] != name) continue;
      size_t zi = 0;
      int64_t axis = -1;  // the zero point's axis in the weight, for per-axis zero points
      const auto r = static_cast<int64_t>(t.rank());
      if (n.op_type == "DequantizeLinear" && i == 0) zi = 2, axis = n.attrInt("axis", 1);
      else if (n.op_type == "QLinearConv" && i == 3) zi = 5, axis = 0;
      else if (n.op_type == "QLinearMatMul" && i == 3) zi = 5, axis = r - 1;
      else if (n.op_type == "QLinearMatMul" && i == 0) zi = 2, axis = r - 1;
      else if (n.op_type == "ConvInteger" && i == 1) zi = 3, axis = 0;
      else if (n.op_type == "MatMulInteger" && i == 1) zi = 3, axis = r - 1;
      else continue;
      if (!n.hasInput(zi)) return countZeros(t);  // zero point 0
      const Tensor* zp = g.initializers.find(n.inputs[zi]);
      if (!zp) continue;
      if (axis < 0) axis += r;
      if (zp->numel() == 1) {
        const double z = zp->at(0);
        int64_t c = 0;
        for (int64_t k = 0; k < t.numel(); ++k) c += t.at(k) == z;
        return c;
      }
      if (axis < 0 || axis >= r || zp->numel() != t.dim(static_cast<size_t>(axis))) continue;
      const int64_t inner = prod(t.shape(), static_cast<size_t>(axis) + 1), ch = t.dim(static_cast<size_t>(axis));
      if (inner <= 0) continue;
      int64_t c = 0;
      for (int64_t k = 0; k < t.numel(); ++k) c += t.at(k) == zp->at((k / inner) % ch);
      return c;
    }
  }
  return countZeros(t);
}

std::map<std::string, int64_t> opHistogram(const Graph& g) {
  std::map<std::string, int64_t> h;
  for (const auto& n : g.nodes) ++h[n.domain.empty() ? n.op_type : n.domain + "." + n.op_type];
  return h;
}

ModelStats analyzeStored(const Model& m, const AnalyzeOptions& opts) {
  const int64_t batch = opts.batch;
  ModelStats st;
  st.batch = batch;
  const Graph& g = m.graph;
  st.nodes = g.nodes.size();
  st.op_histogram = opHistogram(g);

  const auto roles = initializerRoles(g);
  const GraphIndex zidx(g);
  for (const auto& [name, t] : g.initializers.items()) {
    const InitRole r = roles.at(name);
    if (r == InitRole::BnStat) {
      st.bn_running_stats += t.numel();
      continue;
    }
    if (r == InitRole::QuantParam || r == InitRole::Constant) {
      st.constants += t.numel();
      continue;
    }
    st.params += t.numel();
    st.weight_bytes += static_cast<int64_t>(t.nbytes());
    st.weight_bytes_by_dtype[std::string(dtypeName(t.dtype()))] += static_cast<int64_t>(t.nbytes());
    if (opts.entropy) st.entropy_bytes += entropyBitsPerElement(t) * static_cast<double>(t.numel()) / 8.0;
    if (r == InitRole::Weight) {
      st.weight_elements += t.numel();
      st.weight_zeros += weightZeros(g, zidx, name, t);
    }
  }
  st.plain_weight_bytes = st.weight_bytes;

  const ValueTypes types = inferShapes(m, ShapeOptions{batch});
  auto shapeOf = [&](const std::string& v) { return concreteShape(types, v); };
  // Input i's shape; none for an input the node lacks (a corrupt model may have a Gemm without any).
  auto inShape = [&](const Node& n, size_t i) { return n.hasInput(i) ? shapeOf(n.inputs[i]) : std::nullopt; };
  std::set<std::string> counted;  // shared initializers count once
  // Weights behind a DequantizeLinear or a Cast (or a chain of them: float32 -> float16 -> float32)
  // belong to the layer that reads the last one's output: value -> the initializer it comes from.
  std::unordered_map<std::string, std::string> dq_src;
  for (bool grew = true; grew;) {  // nodes in any order
    grew = false;
    for (const auto& n : g.nodes) {
      if ((n.op_type != "DequantizeLinear" && !(n.domain.empty() && n.op_type == "Cast")) || n.outputs.empty() ||
          !n.hasInput(0) || dq_src.count(n.outputs[0]))
        continue;
      const auto up = dq_src.find(n.inputs[0]);
      if (up == dq_src.end() && !g.initializers.contains(n.inputs[0])) continue;
      dq_src[n.outputs[0]] = up == dq_src.end() ? n.inputs[0] : up->second;
      grew = true;
    }
  }
  std::unordered_set<std::string> read_by_nodes;
  for (const auto& n : g.nodes) read_by_nodes.insert(n.inputs.begin(), n.inputs.end());
  for (const auto& n : g.nodes) {
    LayerStats L;
    L.name = n.name.empty() ? (n.outputs.empty() ? n.op_type : n.outputs[0]) : n.name;
    L.op_type = n.op_type;
    // Such a DequantizeLinear or Cast passes its weights on; one whose output no node reads (a
    // graph output) keeps them, so the rows still add up to the total.
    const std::string out0 = n.outputs.empty() ? std::string() : n.outputs[0];
    if (!(dq_src.count(out0) && read_by_nodes.count(out0))) {
      for (size_t i = 0; i < n.inputs.size(); ++i) {
        const std::string& in = n.inputs[i];
        auto dq = dq_src.find(in);
        const std::string& src = dq == dq_src.end() ? in : dq->second;
        const Tensor* t = g.initializers.find(src);
        if (!t) continue;
        const InitRole r = roles.at(src);
        if (r == InitRole::BnStat || r == InitRole::QuantParam || r == InitRole::Constant) continue;
        if (counted.insert(src).second) L.params += t->numel();
        if (isWeightSlot(n.op_type, i)) {
          L.weight_elements += t->numel();
          L.weight_zeros += weightZeros(g, zidx, src, *t);
        }
      }
    }

    const std::string& op = n.op_type;
    auto out = n.outputs.empty() ? std::nullopt : shapeOf(n.outputs[0]);
    if (out) L.output_shape = shapeStr(*out);
    bool mac_op = true;
    if (op == "Conv" || op == "ConvInteger" || op == "QLinearConv") {
      const size_t wi = op == "QLinearConv" ? 3 : 1;
      auto w = inShape(n, wi);
      if (out && w && w->size() >= 2) L.macs = mulKnown(prod(*out), prod(*w, 1));
    } else if (op == "ConvTranspose") {
      auto x = inShape(n, 0);
      auto w = inShape(n, 1);
      if (x && w && w->size() >= 2) L.macs = mulKnown(prod(*x), prod(*w, 1));
    } else if (op == "Gemm") {
      auto a = inShape(n, 0);
      if (out && a && a->size() == 2) L.macs = mulKnown(prod(*out), (*a)[n.attrInt("transA", 0) ? 0 : 1]);
    } else if (op == "MatMul" || op == "MatMulInteger" || op == "QLinearMatMul") {
      auto a = inShape(n, 0);
      if (out && a && !a->empty()) L.macs = mulKnown(prod(*out), a->back());
    } else if ((op == "LSTM" || op == "GRU" || op == "RNN") && n.domain.empty()) {
      // Each step of each direction multiplies the input by W [dirs, gates*H, I] and the state by
      // R [dirs, gates*H, H]: (|W| + |R|) per sample and step. X is [seq, batch, I] or, with
      // layout 1, [batch, seq, I]: seq * batch either way.
      auto x = inShape(n, 0), w = inShape(n, 1), r = inShape(n, 2);
      const int64_t wr = w && r && prod(*w) >= 0 && prod(*r) >= 0 ? prod(*w) + prod(*r) : -1;
      L.macs = x && x->size() == 3 && wr >= 0 ? mulKnown(mulKnown((*x)[0], (*x)[1]), wr) : -1;
    } else if (op == "Einsum" && n.domain.empty()) {
      L.macs = einsumMacs(n, [&](size_t i) { return inShape(n, i); });
    } else {
      mac_op = false;
      L.macs = 0;
      if (out && !kShapeOps.count(op) && n.domain.empty()) {
        const int64_t on = prod(*out);
        if (op == "MaxPool" || op == "AveragePool" || op == "LpPool") {
          L.other_ops = mulKnown(on, prod(n.attrInts("kernel_shape")));
        } else if (op.rfind("Global", 0) == 0 || op.rfind("Reduce", 0) == 0 || op == "Softmax" ||
                   op == "LogSoftmax" || op == "ArgMax" || op == "ArgMin") {
          auto x = inShape(n, 0);
          L.other_ops = x ? prod(*x) : on;
        } else if (op == "BatchNormalization" || op == "InstanceNormalization" || op == "LayerNormalization") {
          L.other_ops = mulKnown(2, on);
        } else if (op != "QuantizeLinear" && op != "DequantizeLinear") {
          L.other_ops = on;
        }
      }
    }
    // A subgraph's nodes (If / Loop / Scan bodies) are not counted: with a layer that has MACs in
    // one, the total is a lower bound (a body of Relus leaves it exact: max_macs_ratio failed on it).
    if (std::any_of(n.attrs.begin(), n.attrs.end(), [](const onnx::AttributeProto& a) { return subgraphHasMacs(a); }))
      st.macs_complete = false;
    int64_t sum = 0;
    if (mac_op) {
      if (L.macs < 0 || __builtin_add_overflow(st.macs, L.macs, &sum)) st.macs_complete = false;
      else st.macs = sum;
    }
    if (L.other_ops < 0) L.other_ops = 0;  // sizes that do not fit: not counted
    if (!__builtin_add_overflow(st.other_ops, L.other_ops, &sum)) st.other_ops = sum;
    if (L.params > 0 || mac_op) st.layers.push_back(std::move(L));
  }

  if (!m.source.empty()) {
    std::error_code ec;
    st.file_bytes = static_cast<int64_t>(std::filesystem::file_size(m.source, ec));
    if (ec) st.file_bytes = -1;
    for (const auto& f : m.external_data_files) st.file_bytes += static_cast<int64_t>(std::filesystem::file_size(f, ec));
  }
  return st;
}
}  // namespace

namespace {
// A tensor held in a Constant node's `value` (how some exporters store weights and shapes) counts
// as an initializer would, by its role: the engine and fold_constants read it as one.
// Also value_float(s) / value_int(s): a Conv bias in Constant(value_floats=[...]) was not counted.
bool isTensorConstantNode(const Node& n) {
  if (n.op_type != "Constant" || !n.domain.empty() || n.outputs.size() != 1) return false;
  if (n.attr("value_float") || n.attr("value_floats") || n.attr("value_int") || n.attr("value_ints")) return true;
  const onnx::AttributeProto* a = n.attr("value");
  return a && a->has_t() && fromOnnxType(a->t().data_type()) != DType::Undefined;
}

Tensor constantNodeTensor(const Node& n, const std::filesystem::path& base) {
  if (const auto* a = n.attr("value_float")) return Tensor::fromVector<float>({}, {a->f()});
  if (const auto* a = n.attr("value_floats"))
    return Tensor::fromVector<float>({a->floats_size()}, std::vector<float>(a->floats().begin(), a->floats().end()));
  if (const auto* a = n.attr("value_int")) return Tensor::fromVector<int64_t>({}, {a->i()});
  if (const auto* a = n.attr("value_ints"))
    return Tensor::fromVector<int64_t>({a->ints_size()}, std::vector<int64_t>(a->ints().begin(), a->ints().end()));
  return tensorFromProto(n.attr("value")->t(), base, n.describe());
}

// Statistics of the model with its Constant nodes read as initializers; nodes and the op
// histogram stay those of the file.
ModelStats analyzeWithConstants(const Model& m, const AnalyzeOptions& opts) {
  if (std::none_of(m.graph.nodes.begin(), m.graph.nodes.end(), isTensorConstantNode)) return analyzeStored(m, opts);
  ModelStats st = analyzeStored(constantsAsInitializers(m), opts);
  st.nodes = m.graph.nodes.size();
  st.op_histogram = opHistogram(m.graph);
  return st;
}
}  // namespace

Model constantsAsInitializers(const Model& m) {
  Model copy = m;
  // A model loaded from "m.onnx" has the folder ".", not "not from a file".
  const std::filesystem::path base = m.source.empty() ? std::filesystem::path() : folderOf(m.source);
  std::erase_if(copy.graph.nodes, [&](const Node& n) {
    if (!isTensorConstantNode(n)) return false;
    copy.graph.initializers.set(n.outputs[0], constantNodeTensor(n, base));
    return true;
  });
  return copy;
}

std::string float16WeightsHint(const Model& m) {
  for (const Node& n : m.graph.nodes)
    if (n.domain == weight_coding::kDomain)
      return " (its weights are Huffman-coded, e.g. " + n.describe() +
             ": run `lwc decode` first to restore plain ONNX weights)";
  for (const Node& n : m.graph.nodes) {
    const std::string& op = n.op_type;
    if (!n.domain.empty() || (op != "Conv" && op != "ConvTranspose" && op != "Gemm" && op != "MatMul")) continue;
    // The weight (input 1): a float16 bias beside float32 weights is not what stops pruning.
    if (n.inputs.size() < 2 || n.inputs[1].empty()) continue;
    if (const Tensor* w = m.graph.initializers.find(n.inputs[1]);
        w && (w->dtype() == DType::Float16 || w->dtype() == DType::Float64))
      return std::string(" (its weights are ") + (w->dtype() == DType::Float16 ? "float16" : "float64") + ", e.g. " +
             n.describe() + ": lwc prunes and quantizes float32 models; convert it to float32 first)";
  }
  return "";
}

ModelStats analyzeModel(const Model& m, const AnalyzeOptions& opts) {
  const bool coded = std::any_of(m.graph.nodes.begin(), m.graph.nodes.end(),
                                 [](const Node& n) { return n.domain == weight_coding::kDomain; });
  if (!coded) return analyzeWithConstants(m, opts);
  // Huffman-coded weights (ai.lwc::HuffmanDecode): parameters, sparsity, MACs and layers are those
  // of the decoded weights; nodes, stored weight bytes and file size are what the file holds.
  Model decoded = m;
  weight_coding::decodeAll(decoded);
  ModelStats st = analyzeWithConstants(decoded, opts);
  AnalyzeOptions counts_only = opts;
  counts_only.entropy = false;  // the file's bound is the decoded weights' (st), not the streams'
  const ModelStats stored = analyzeWithConstants(m, counts_only);
  st.nodes = stored.nodes;
  st.op_histogram = stored.op_histogram;
  st.weight_bytes_by_dtype = stored.weight_bytes_by_dtype;
  // The decoders' inputs (streams, codebooks) are the coded weights' bytes. The stored count has
  // already taken those of them it sees as parameters (a float codebook of several values), so
  // they move from their dtype's line to "huffman-coded" instead of being counted twice.
  const auto roles = initializerRoles(m.graph);
  std::set<std::string> coded_inputs;
  for (const auto& n : m.graph.nodes)
    if (n.domain == weight_coding::kDomain)
      for (const auto& in : n.inputs)
        if (m.graph.initializers.contains(in)) coded_inputs.insert(in);
  int64_t coded_bytes = 0, counted_twice = 0;
  for (const auto& name : coded_inputs) {
    const Tensor& t = m.graph.initializers.at(name);
    const auto bytes = static_cast<int64_t>(t.nbytes());
    coded_bytes += bytes;
    const InitRole r = roles.at(name);
    if (r == InitRole::BnStat || r == InitRole::QuantParam || r == InitRole::Constant) continue;
    counted_twice += bytes;
    auto it = st.weight_bytes_by_dtype.find(std::string(dtypeName(t.dtype())));
    if (it != st.weight_bytes_by_dtype.end() && (it->second -= bytes) <= 0) st.weight_bytes_by_dtype.erase(it);
  }
  st.plain_weight_bytes = st.weight_bytes;  // the decoded weights'
  st.weight_bytes = stored.weight_bytes - counted_twice + coded_bytes;
  st.weight_bytes_by_dtype["huffman-coded"] = coded_bytes;
  st.file_bytes = stored.file_bytes;
  return st;
}

ActivationBytes activationBytesPerSample(const Model& m) {
  ShapeOptions so;
  so.batch = 1;
  const ValueTypes types = inferShapes(m, so);
  auto bytes = [&](const std::string& v) -> int64_t {
    if (v.empty() || m.graph.initializers.contains(v)) return 0;
    const auto it = types.find(v);
    const auto shape = concreteShape(types, v);
    if (it == types.end() || !shape || it->second.dtype == DType::Undefined) return 0;
    int64_t n = 1;
    for (const int64_t d : *shape) n *= d;
    return n * static_cast<int64_t>(dtypeSize(it->second.dtype));
  };
  const auto& nodes = m.graph.nodes;
  const auto end = static_cast<int64_t>(nodes.size());
  std::map<std::string, int64_t> last;  // the index of a value's last reader; `end` for graph outputs
  for (int64_t i = 0; i < end; ++i)
    for (const auto& v : nodes[static_cast<size_t>(i)].inputs) last[v] = i;
  for (const auto& o : m.graph.outputs) last[o.name] = end;
  int64_t live = 0;
  for (const auto& in : m.graph.inputs) live += bytes(in.name);
  int64_t peak = live, total = live;
  for (int64_t i = 0; i < end; ++i) {
    const Node& n = nodes[static_cast<size_t>(i)];
    for (const auto& o : n.outputs) {
      live += bytes(o);
      total += bytes(o);
    }
    peak = std::max(peak, live);
    std::set<std::string> done;  // a value read twice by one node is freed once
    for (const auto& v : n.inputs)
      if (const auto it = last.find(v); it != last.end() && it->second == i && done.insert(v).second) live -= bytes(v);
    for (const auto& o : n.outputs)
      if (!last.count(o)) live -= bytes(o);  // nothing reads it
  }
  return {peak, total};
}

bool quantizesAtRunTime(const Model& m) {
  return std::any_of(m.graph.nodes.begin(), m.graph.nodes.end(),
                     [](const Node& n) { return n.op_type == "DynamicQuantizeLinear"; });
}

int64_t batchWithin(int64_t per_sample, int64_t requested, int64_t budget_bytes) {
  if (per_sample <= 0) return requested;
  return std::clamp<int64_t>(budget_bytes / per_sample, 1, requested);
}

int64_t evaluationBatch(int64_t per_sample, int64_t requested, std::string* why) {
  const int64_t batch = batchWithin(per_sample, requested, kEvalActivationBytes);
  if (why && batch < requested)
    *why = "batches of " + std::to_string(batch) + ", not " + std::to_string(requested) + ": about " +
           std::to_string((per_sample + (1 << 19)) >> 20) + " MB of activations per sample";
  return batch;
}

}  // namespace lwc
