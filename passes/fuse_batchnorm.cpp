#include "passes/fuse_batchnorm.h"

#include "lwc/graph_edit.h"
#include "lwc/shape_inference.h"
#include "passes/weight_layers.h"

#include <cmath>
#include <cstring>
#include <unordered_set>
#include <optional>

namespace lwc::passes {

namespace {

struct Ctx {
  Graph& g;
  const ValueTypes& types;
};

// Scales ConvTranspose weights [Cin, Cout/g, k...] per output channel o = gi·(Cout/g) + j.
std::pair<Tensor, Tensor> foldIntoConvTranspose(const Tensor& w, const Tensor& b, int64_t group, const ChannelAffine& a) {
  if (group == 1) return foldAffineIntoLinear(w, b, 1, a);
  const int64_t cin = w.dim(0), cout_g = w.dim(1), inner = w.numel() / (cin * cout_g);
  const int64_t cin_g = cin / group;
  Tensor w2 = w.clone();
  float* W = w2.data<float>();
  for (int64_t ci = 0; ci < cin; ++ci)
    for (int64_t j = 0; j < cout_g; ++j) {
      const double s = a.scale[static_cast<size_t>((ci / cin_g) * cout_g + j)];
      float* p = W + (ci * cout_g + j) * inner;
      for (int64_t k = 0; k < inner; ++k) p[k] = static_cast<float>(p[k] * s);
    }
  const int64_t cout = cout_g * group;
  Tensor b2(DType::Float32, {cout});
  for (int64_t o = 0; o < cout; ++o)
    b2.data<float>()[o] = static_cast<float>((b.empty() ? 0.0 : b.at(o)) * a.scale[static_cast<size_t>(o)] +
                                             a.shift[static_cast<size_t>(o)]);
  return {w2, b2};
}

void setBias(Node& n, size_t index, const std::string& name) {
  if (n.inputs.size() <= index) n.inputs.resize(index + 1);
  n.inputs[index] = name;
}

// Why BN must not be folded into weights `w` of `what`: they hold only a few distinct values (a
// weight_share codebook, binary weights), which folding's per-channel scale would multiply into one
// set per channel. `fuse_batchnorm` after `weight_share` undid the sharing without a word: resnet's
// 16 values per layer became about 192 and its Huffman-coded file 2.35x larger. Empty when they do
// not (a dense tensor has about as many distinct values as elements).
std::string sharedWeights(const Tensor& w, const std::string& what) {
  constexpr size_t kMaxShared = 256;  // weight_share's 8 bits at most
  if (w.dtype() != DType::Float32) return "";
  // Non-zero values only: pruned zeros stay zero when scaled, and a pruned small layer has few
  // non-zeros left, each its own value.
  std::unordered_set<uint32_t> seen;
  int64_t nonzero = 0;
  const float* p = w.data<float>();
  for (int64_t i = 0; i < w.numel(); ++i) {
    if (p[i] == 0.0f) continue;
    ++nonzero;
    uint32_t bits;
    std::memcpy(&bits, &p[i], sizeof bits);
    if (seen.insert(bits).second && seen.size() > kMaxShared) return "";
  }
  if (nonzero < 64 || static_cast<int64_t>(seen.size()) * 4 > nonzero) return "";
  return what + "'s weights hold " + std::to_string(seen.size()) + " distinct non-zero values among " +
         std::to_string(nonzero) + " (shared, e.g. by weight_share), which folding the per-channel BatchNormalization "
         "would multiply into a set per channel; run fuse_batchnorm before weight_share";
}

// Why `who` (producer or following layer `n`) has no constant float weights to fold into: they
// are Huffman-coded (decode first), or simply not a float constant.
std::string noWeightsReason(const Graph& g, const Node& n, const std::string& who) {
  const std::string coded = n.inputs.size() > 1 ? codedWeightsReason(g, n.inputs[1]) : "";
  return who + (coded.empty() ? " has no constant float weights" : ": " + coded);
}

// Folds BN (node bi) into the node producing its input. Returns "" on success, else why not.
std::string foldIntoProducer(Ctx& c, size_t bi, const ChannelAffine& a) {
  Graph& g = c.g;
  const Node bn = g.nodes[bi];
  const std::string& x = bn.inputs[0];
  const int pi = producerIndex(g, x);
  if (pi < 0) return "its input is not produced by a node";
  Node& p = g.nodes[static_cast<size_t>(pi)];
  const std::string what = p.describe();
  if (!p.domain.empty() || (p.op_type != "Conv" && p.op_type != "ConvTranspose" && p.op_type != "Gemm" &&
                            p.op_type != "MatMul"))
    return "producer " + what + " is not a Conv/ConvTranspose/Gemm/MatMul";
  if (p.outputs.size() != 1 || useCount(g, x) != 1)
    return "producer " + what + "'s output has other readers or is a graph output";
  const int64_t ch = static_cast<int64_t>(a.scale.size());
  const Tensor* w = floatConstant(g, p.inputs.size() > 1 ? p.inputs[1] : "");
  if (!w) return noWeightsReason(g, p, "producer " + what);
  if (std::string why = sharedWeights(*w, "producer " + what); !why.empty()) return why;
  const std::string base = p.name.empty() ? p.op_type : p.name;

  if (p.op_type == "Conv" || p.op_type == "ConvTranspose") {
    const int64_t group = p.attrInt("group", 1);
    const bool conv = p.op_type == "Conv";
    if (w->rank() < 3 || group < 1) return "producer " + what + " has unexpected weight shape";
    const int64_t out_ch = conv ? w->dim(0) : w->dim(1) * group;
    if (out_ch != ch) return "channel count of " + what + " differs from the BatchNormalization's";
    const Tensor* b = nullptr;
    if (p.hasInput(2) && !(b = floatConstant(g, p.inputs[2], ch))) return "producer " + what + " has a non-constant bias";
    auto [w2, b2] = conv ? foldAffineIntoLinear(*w, b ? *b : Tensor(), 0, a)
                         : foldIntoConvTranspose(*w, b ? *b : Tensor(), group, a);
    const std::string wn = replaceConstant(g, p.inputs[1], p.inputs[1] + "_bnfolded", std::move(w2));
    const std::string bias_old = p.hasInput(2) ? p.inputs[2] : "";
    const std::string bn_name = replaceConstant(g, bias_old, base + "_bias", std::move(b2));
    Node& q = g.nodes[static_cast<size_t>(pi)];
    q.inputs[1] = wn;
    setBias(q, 2, bn_name);
    q.outputs[0] = bn.outputs[0];
  } else if (p.op_type == "Gemm") {
    if (w->rank() != 2) return "producer " + what + " has a non-2-D B";
    const int axis = p.attrInt("transB", 0) ? 0 : 1;
    if (w->dim(static_cast<size_t>(axis)) != ch) return "column count of " + what + " differs from the BatchNormalization's";
    const double beta = p.attrFloat("beta", 1.0f);
    const Tensor* cb = nullptr;
    if (p.hasInput(2)) {
      cb = floatConstant(g, p.inputs[2]);
      if (!cb) return "producer " + what + " has a non-constant C";
      if (!(cb->numel() == 1 || (cb->numel() == ch && cb->shape().back() == ch)))
        return "producer " + what + "'s C is not a scalar or a row vector";
    }
    Tensor bias(DType::Float32, {ch});
    const bool use_c = cb && beta != 0.0;
    for (int64_t o = 0; o < ch; ++o)
      bias.data<float>()[o] = use_c ? static_cast<float>(cb->at(cb->numel() == 1 ? 0 : o) * beta) : 0.0f;
    // Fold into the effective bias beta·C, then store it with beta = 1.
    auto [w2, b2] = foldAffineIntoLinear(*w, bias, axis, a);
    const std::string wn = replaceConstant(g, p.inputs[1], p.inputs[1] + "_bnfolded", std::move(w2));
    const std::string c_old = p.hasInput(2) ? p.inputs[2] : "";
    const std::string cn = replaceConstant(g, c_old, base + "_bias", std::move(b2));
    Node& q = g.nodes[static_cast<size_t>(pi)];
    q.inputs[1] = wn;
    setBias(q, 2, cn);
    q.setAttr("beta", 1.0f);
    q.outputs[0] = bn.outputs[0];
  } else {  // MatMul
    if (w->rank() != 2 || w->dim(1) != ch) return "producer " + what + " has no constant 2-D B with one column per channel";
    const auto xs = c.types.find(x);
    if (xs == c.types.end() || !xs->second.shape || xs->second.shape->size() != 2)
      return "producer " + what + "'s output is not known to be 2-D (the BN channel axis would not be B's columns)";
    auto [w2, b2] = foldAffineIntoLinear(*w, Tensor(), 1, a);
    const std::string wn = replaceConstant(g, p.inputs[1], p.inputs[1] + "_bnfolded", std::move(w2));
    const std::string bname = g.uniqueName(base + "_bias");
    g.initializers.set(bname, std::move(b2));
    g.nodes[static_cast<size_t>(pi)].inputs[1] = wn;
    Node add;
    add.op_type = "Add";
    add.name = bn.name.empty() ? g.uniqueName(base + "_bn_add") : bn.name;
    add.inputs = {x, bname};
    add.outputs = {bn.outputs[0]};
    g.nodes[bi] = add;
    return "";
  }
  g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(bi));
  return "";
}

// Folds BN (node bi) into the unpadded Conv reading its output. Returns "" on success, else why not.
std::string foldIntoConsumer(Ctx& c, size_t bi, const ChannelAffine& a) {
  Graph& g = c.g;
  const Node bn = g.nodes[bi];
  const std::string& y = bn.outputs[0];
  if (g.isGraphOutput(y) || useCount(g, y) != 1) return "its output has several readers or is a graph output";
  size_t ci = 0;
  while (ci < g.nodes.size() && !(g.nodes[ci].inputs.size() > 0 && g.nodes[ci].inputs[0] == y)) ++ci;
  if (ci == g.nodes.size() || g.nodes[ci].op_type != "Conv" || !g.nodes[ci].domain.empty())
    return "its reader is not a Conv";
  const Node& conv = g.nodes[ci];
  const Tensor* w = floatConstant(g, conv.inputs.size() > 1 ? conv.inputs[1] : "");
  if (!w || w->rank() < 3) return noWeightsReason(g, conv, "the following " + conv.describe());
  if (std::string why = sharedWeights(*w, "the following " + conv.describe()); !why.empty()) return why;
  const std::string auto_pad = conv.attrString("auto_pad", "NOTSET");
  bool padded = auto_pad != "NOTSET" && auto_pad != "VALID";
  for (auto p : conv.attrInts("pads")) padded = padded || p != 0;
  if (padded) return "the following " + conv.describe() + " pads its input";
  const int64_t group = conv.attrInt("group", 1);
  const int64_t ch = static_cast<int64_t>(a.scale.size());
  const int64_t oc = w->dim(0), cin_g = w->dim(1), inner = w->numel() / (oc * cin_g);
  if (group < 1 || cin_g * group != ch || oc % group != 0) return "channel count of " + conv.describe() + " differs";
  const Tensor* b = nullptr;
  if (conv.hasInput(2) && !(b = floatConstant(g, conv.inputs[2], oc))) return conv.describe() + " has a non-constant bias";
  Tensor w2 = w->clone();
  Tensor b2(DType::Float32, {oc});
  const int64_t oc_g = oc / group;
  const float* W = w->data<float>();
  float* W2 = w2.data<float>();
  for (int64_t o = 0; o < oc; ++o) {
    double acc = b ? b->at(o) : 0.0;
    for (int64_t i = 0; i < cin_g; ++i) {
      const size_t chan = static_cast<size_t>((o / oc_g) * cin_g + i);
      for (int64_t k = 0; k < inner; ++k) {
        const int64_t idx = (o * cin_g + i) * inner + k;
        acc += static_cast<double>(W[idx]) * a.shift[chan];
        W2[idx] = static_cast<float>(W[idx] * a.scale[chan]);
      }
    }
    b2.data<float>()[o] = static_cast<float>(acc);
  }
  const std::string base = conv.name.empty() ? "conv" : conv.name;
  const std::string wn = replaceConstant(g, conv.inputs[1], conv.inputs[1] + "_bnfolded", std::move(w2));
  const std::string bias_old = conv.hasInput(2) ? conv.inputs[2] : "";
  const std::string bname = replaceConstant(g, bias_old, base + "_bias", std::move(b2));
  Node& q = g.nodes[ci];
  q.inputs[0] = bn.inputs[0];
  q.inputs[1] = wn;
  setBias(q, 2, bname);
  g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(bi));
  return "";
}

}  // namespace

PassResult FuseBatchnorm::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  const ValueTypes types = inferShapes(m);
  Ctx c{g, types};
  PassResult r;
  // A model whose float constants are all float16 (a GPU export) folds in float32, and every
  // constant goes back to float16 afterwards, the folded ones rounded once. Mixed-precision models
  // keep their float16 BatchNormalizations (the note says so).
  bool any_half = false, any_single = false;
  for (const auto& [name, t] : g.initializers.items()) {
    any_half = any_half || t.dtype() == DType::Float16;
    any_single = any_single || t.dtype() == DType::Float32;
  }
  const bool widened = any_half && !any_single;
  if (widened)
    for (auto& [name, t] : g.initializers.items())
      if (t.dtype() == DType::Float16) t = t.cast(DType::Float32);
  int64_t into_producer = 0, into_consumer = 0, left = 0;
  for (size_t bi = 0; bi < g.nodes.size(); ++bi) {
    const Node& bn = g.nodes[bi];
    if (bn.op_type != "BatchNormalization" || !bn.domain.empty()) continue;
    const std::string what = bn.describe();
    auto leave = [&](const std::string& why) {
      r.notes.push_back(what + ": left alone: " + why);
      ++left;
    };
    if (bn.attrInt("training_mode", 0) != 0) { leave("training mode"); continue; }
    bool extra_outputs = false;
    for (size_t o = 1; o < bn.outputs.size(); ++o) extra_outputs = extra_outputs || !bn.outputs[o].empty();
    if (extra_outputs) { leave("it also outputs running statistics"); continue; }
    if (m.opsetFor("") < 9 && bn.attrInt("spatial", 1) == 0) { leave("spatial=0 (per-element statistics)"); continue; }
    const Tensor* gamma = floatConstant(g, bn.inputs.size() > 1 ? bn.inputs[1] : "");
    bool consts = gamma != nullptr && bn.inputs.size() >= 5;
    for (size_t k = 2; consts && k <= 4; ++k) consts = floatConstant(g, bn.inputs[k], gamma->numel()) != nullptr;
    if (!consts) {
      leave(any_half && any_single ? "scale, bias, mean or variance is not a constant float32 tensor (a model that mixes "
                                     "float16 and float32 constants keeps its float16 BatchNormalizations)"
                                   : "scale, bias, mean or variance is not a constant float tensor");
      continue;
    }
    const ChannelAffine a = batchNormAffine(*gamma, g.initializers.at(bn.inputs[2]), g.initializers.at(bn.inputs[3]),
                                            g.initializers.at(bn.inputs[4]), bn.attrFloat("epsilon", 1e-5f));
    const std::vector<std::string> params(bn.inputs.begin() + 1, bn.inputs.end());
    // A float16 model stores the folded values in float16: a fold whose weights or bias leave its
    // range (|v| > 65504, e.g. large weights over a tiny variance) is undone and the BN kept.
    const std::optional<Graph> before = widened ? std::optional<Graph>(g) : std::nullopt;
    auto overflowsHalf = [&]() {
      if (!before) return false;
      for (const auto& [name, t] : g.initializers.items()) {
        const Tensor* old = before->initializers.find(name);
        if (t.dtype() != DType::Float32 || (old && old->raw() == t.raw())) continue;  // unchanged
        for (int64_t i = 0; i < t.numel(); ++i)
          if (!(std::fabs(t.data<float>()[i]) <= 65504.0f)) return true;
      }
      return false;
    };
    const std::string why_p = foldIntoProducer(c, bi, a);
    const std::string why_c = why_p.empty() ? std::string() : foldIntoConsumer(c, bi, a);
    if (!why_p.empty() && !why_c.empty()) {
      leave(why_p + "; " + why_c);
      continue;
    }
    dropUnusedConstants(g, params);
    if (overflowsHalf()) {
      g = *before;
      leave("the folded weights or bias would exceed float16's range (65504), in which the model stores them");
      continue;
    }
    ++(why_p.empty() ? into_producer : into_consumer);
    --bi;
  }
  if (widened)
    for (auto& [name, t] : g.initializers.items())
      if (t.dtype() == DType::Float32) t = t.cast(DType::Float16);
  r.stats = {{"folded_into_producer", into_producer}, {"folded_into_consumer", into_consumer}, {"left_alone", left}};
  r.changed = into_producer + into_consumer > 0;
  return r;
}

}  // namespace lwc::passes
