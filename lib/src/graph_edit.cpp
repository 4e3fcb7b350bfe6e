#include "lwc/graph_edit.h"

#include <cmath>

#include "lwc/status.h"

namespace lwc {

size_t useCount(const Graph& g, const std::string& value) {
  size_t c = 0;
  for (const auto& n : g.nodes) {
    for (const auto& i : n.inputs) c += i == value;
    for (const auto& i : implicitInputs(n)) c += i == value;
  }
  for (const auto& o : g.outputs) c += o.name == value;
  return c;
}

bool readBySubgraph(const Graph& g, const std::string& value) {
  for (const auto& n : g.nodes)
    for (const auto& i : implicitInputs(n))
      if (i == value) return true;
  return false;
}

void replaceUses(Graph& g, const std::string& from, const std::string& to) {
  for (auto& n : g.nodes)
    for (auto& i : n.inputs)
      if (i == from) i = to;
}

bool bypassNode(Graph& g, size_t index, const std::string& x, const std::string& y) {
  if (readBySubgraph(g, y)) return false;
  if (!g.isGraphOutput(y)) {
    replaceUses(g, y, x);
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(index));
    return true;
  }
  // y is a graph output: x's producer must produce y instead.
  if (g.isGraphOutput(x) || g.isGraphInput(x) || g.initializers.contains(x) || readBySubgraph(g, x)) return false;
  Node* producer = nullptr;
  for (auto& n : g.nodes)
    for (auto& o : n.outputs)
      if (o == x) producer = &n;
  if (!producer) return false;
  for (auto& o : producer->outputs)
    if (o == x) o = y;
  replaceUses(g, x, y);
  g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(index));
  for (auto it = g.value_info.begin(); it != g.value_info.end();)
    it = it->name == x ? g.value_info.erase(it) : it + 1;
  return true;
}

std::string replaceConstant(Graph& g, const std::string& name, const std::string& base, Tensor t) {
  if (!name.empty() && useCount(g, name) == 1 && !g.isGraphInput(name)) {
    g.initializers.set(name, std::move(t));
    return name;
  }
  const std::string fresh = g.uniqueName(base);
  g.initializers.set(fresh, std::move(t));
  return fresh;
}

int64_t dropUnusedConstants(Graph& g, const std::vector<std::string>& names) {
  int64_t erased = 0;
  for (const auto& n : names)
    if (!n.empty() && g.initializers.contains(n) && !g.isGraphInput(n) && useCount(g, n) == 0) {
      g.initializers.erase(n);
      ++erased;
    }
  return erased;
}

int producerIndex(const Graph& g, const std::string& value) {
  if (value.empty()) return -1;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (const auto& o : g.nodes[i].outputs)
      if (o == value) return static_cast<int>(i);
  return -1;
}

const Tensor* floatConstant(const Graph& g, const std::string& name, int64_t numel) {
  if (name.empty()) return nullptr;
  const Tensor* t = g.initializers.find(name);
  return t && t->dtype() == DType::Float32 && (numel < 0 || t->numel() == numel) ? t : nullptr;
}

TrailingBias trailingBiasAdd(const Graph& g, const GraphIndex& index, const std::string& value, int64_t channels) {
  if (g.isGraphOutput(value) || index.numConsumers(value) != 1) return {};
  const int a = index.consumers(value)[0];
  const Node& add = g.nodes[static_cast<size_t>(a)];
  if (add.op_type != "Add" || !add.domain.empty() || add.inputs.size() != 2) return {};
  const size_t k = add.inputs[0] == value ? 1 : 0;
  const Tensor* b = g.initializers.find(add.inputs[k]);
  if (!b || add.inputs[k] == value || g.isGraphInput(add.inputs[k]) || !isColumnBias(*b, channels)) return {};
  return {a, k};
}

bool isColumnBias(const Tensor& t, int64_t n) {
  if (t.dtype() != DType::Float32 || t.numel() != n || t.rank() < 1) return false;
  for (size_t d = 0; d + 1 < t.rank(); ++d)
    if (t.dim(d) != 1) return false;
  return true;
}

const Tensor* intConstant(const Graph& g, const std::string& name) {
  if (name.empty() || g.isGraphInput(name)) return nullptr;
  const Tensor* t = g.initializers.find(name);
  return t && (t->dtype() == DType::Int64 || t->dtype() == DType::Int32) ? t : nullptr;
}

std::vector<int64_t> intValues(const Tensor& t) {
  LWC_CHECK(t.dtype() == DType::Int64 || t.dtype() == DType::Int32, "intValues of a " + std::string(dtypeName(t.dtype())) + " tensor");
  if (t.dtype() == DType::Int64) return {t.data<int64_t>(), t.data<int64_t>() + t.numel()};
  return {t.data<int32_t>(), t.data<int32_t>() + t.numel()};
}

void setSplitSizes(Graph& g, size_t node, int64_t opset, const std::vector<int64_t>& sizes, const std::string& base) {
  Node& n = g.nodes[node];
  if (opset < 13) {
    n.setAttr("split", sizes);
    return;
  }
  Tensor t = Tensor::fromVector<int64_t>({static_cast<int64_t>(sizes.size())}, sizes);
  if (n.hasInput(1)) {
    n.inputs[1] = replaceConstant(g, n.inputs[1], base, std::move(t));
    return;
  }
  const std::string name = g.uniqueName(base);
  g.initializers.set(name, std::move(t));
  n.inputs.resize(2);
  n.inputs[1] = name;
  n.removeAttr("num_outputs");
}

ChannelAffine batchNormAffine(const Tensor& gamma, const Tensor& beta, const Tensor& mean, const Tensor& var,
                              double epsilon) {
  const int64_t c = gamma.numel();
  LWC_CHECK(beta.numel() == c && mean.numel() == c && var.numel() == c, "BatchNormalization parameter sizes differ");
  ChannelAffine a;
  a.scale.resize(static_cast<size_t>(c));
  a.shift.resize(static_cast<size_t>(c));
  for (int64_t i = 0; i < c; ++i) {
    const double s = gamma.at(i) / std::sqrt(var.at(i) + epsilon);
    a.scale[static_cast<size_t>(i)] = s;
    a.shift[static_cast<size_t>(i)] = beta.at(i) - mean.at(i) * s;
  }
  return a;
}

std::pair<Tensor, Tensor> foldAffineIntoLinear(const Tensor& w, const Tensor& b, int out_axis, const ChannelAffine& a) {
  const int64_t oc = w.dim(static_cast<size_t>(out_axis));
  LWC_CHECK(static_cast<int64_t>(a.scale.size()) == oc, "affine size ", a.scale.size(), " vs ", oc, " channels");
  LWC_CHECK(b.empty() || b.numel() == oc, "bias size mismatch");
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < out_axis; ++d) outer *= w.dim(static_cast<size_t>(d));
  for (size_t d = static_cast<size_t>(out_axis) + 1; d < w.rank(); ++d) inner *= w.dim(d);
  Tensor w2 = w.clone();
  Tensor b2(DType::Float32, {oc});
  float* W = w2.data<float>();
  float* B = b2.data<float>();
  for (int64_t o = 0; o < oc; ++o) {
    const double s = a.scale[static_cast<size_t>(o)];
    for (int64_t x = 0; x < outer; ++x)
      for (int64_t k = 0; k < inner; ++k) {
        float& v = W[(x * oc + o) * inner + k];
        v = static_cast<float>(v * s);
      }
    const double bias = b.empty() ? 0.0 : b.at(o);
    B[o] = static_cast<float>(bias * s + a.shift[static_cast<size_t>(o)]);
  }
  return {w2, b2};
}

}  // namespace lwc
