#include "engine/optimize.h"

#include "engine/kernels/quant_ref.h"

#include "lwc/analysis.h"
#include "lwc/engine.h"
#include "lwc/graph_edit.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <cmath>
#include <limits>
#include <map>
#include <numbers>
#include <numeric>
#include <optional>
#include <set>
#include <unordered_map>

namespace lwc::engine {

namespace {

const std::vector<int64_t> kToNhwc{0, 2, 3, 1};
const std::vector<int64_t> kToNchw{0, 3, 1, 2};

bool isFloatConst(const Graph& g, const std::string& name, int64_t numel = -1) {
  const Tensor* t = g.initializers.find(name);
  return t && t->dtype() == DType::Float32 && (numel < 0 || t->numel() == numel);
}

int consumersOf(const Graph& g, const std::string& v) {
  int c = 0;
  for (const auto& n : g.nodes) {
    for (const auto& i : n.inputs) c += i == v;
    for (const auto& i : implicitInputs(n)) c += i == v;
  }
  return c;
}

// Every value some node reads (subgraphs included) or the graph outputs.
std::set<std::string> valuesRead(const Graph& g) {
  std::set<std::string> read;
  for (const auto& n : g.nodes) {
    for (const auto& i : n.inputs) read.insert(i);
    for (const auto& i : implicitInputs(n)) read.insert(i);
  }
  for (const auto& o : g.outputs) read.insert(o.name);
  return read;
}

void removeDeadNodes(Graph& g) {
  bool changed = true;
  while (changed) {
    changed = false;
    const std::set<std::string> used = valuesRead(g);
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      if (n.domain != "" && n.domain != kInternalDomain) continue;
      const bool any_used = std::any_of(n.outputs.begin(), n.outputs.end(), [&](const auto& o) { return used.count(o); });
      if (!any_used && (n.op_type == "Transpose" || n.op_type == "DequantizeLinear" || n.domain == kInternalDomain)) {
        g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
        changed = true;
        break;
      }
    }
  }
}

Node makeTranspose(Graph& g, const std::string& in, const std::string& out, const std::vector<int64_t>& perm) {
  Node t;
  t.op_type = "Transpose";
  t.name = g.uniqueName("lwc_transpose");
  t.inputs = {in};
  t.outputs = {out};
  t.setAttr("perm", perm);
  return t;
}

Tensor transposeToNhwc(const Tensor& c) {
  Shape s = c.shape();
  while (s.size() < 4) s.insert(s.begin(), 1);
  Tensor src = c.reshaped(s);
  Tensor r(c.dtype(), {s[0], s[2], s[3], s[1]});
  const size_t es = dtypeSize(c.dtype());
  const auto* in = static_cast<const uint8_t*>(src.raw());
  auto* out = static_cast<uint8_t*>(r.raw());
  for (int64_t n = 0; n < s[0]; ++n)
    for (int64_t ch = 0; ch < s[1]; ++ch)
      for (int64_t h = 0; h < s[2]; ++h)
        for (int64_t w = 0; w < s[3]; ++w)
          std::memcpy(out + static_cast<size_t>(((n * s[2] + h) * s[3] + w) * s[1] + ch) * es,
                      in + static_cast<size_t>(((n * s[1] + ch) * s[2] + h) * s[3] + w) * es, es);
  return r;
}

// ------------------------------------------------------------------ BN folding

int foldBatchNorms(Graph& g) {
  int folded = 0;
  for (size_t bi = 0; bi < g.nodes.size(); ++bi) {
    const Node& bn = g.nodes[bi];
    if (bn.op_type != "BatchNormalization" || !bn.domain.empty() || bn.outputs.size() != 1) continue;
    if (bn.attrInt("training_mode", 0) != 0) continue;
    auto cit = std::find_if(g.nodes.begin(), g.nodes.end(),
                            [&](const Node& n) { return !n.outputs.empty() && n.outputs[0] == bn.inputs[0]; });
    if (cit == g.nodes.end() || cit->op_type != "Conv" || !cit->domain.empty()) continue;
    Node& conv = *cit;
    if (!isFloatConst(g, conv.inputs[1]) || (conv.hasInput(2) && !isFloatConst(g, conv.inputs[2]))) continue;
    if (consumersOf(g, conv.outputs[0]) != 1 || g.isGraphOutput(conv.outputs[0])) continue;
    const Tensor& w0 = g.initializers.at(conv.inputs[1]);
    if (w0.rank() < 3) continue;  // not a Conv's weights: the Conv kernel names the problem
    const int64_t oc = w0.dim(0);
    bool ok = true;
    for (size_t k = 1; k <= 4; ++k) ok = ok && bn.hasInput(k) && isFloatConst(g, bn.inputs[k], oc);
    if (!ok) continue;
    const Tensor b0 = conv.hasInput(2) ? g.initializers.at(conv.inputs[2]) : Tensor();
    const auto affine = batchNormAffine(g.initializers.at(bn.inputs[1]), g.initializers.at(bn.inputs[2]),
                                        g.initializers.at(bn.inputs[3]), g.initializers.at(bn.inputs[4]),
                                        bn.attrFloat("epsilon", 1e-5f));
    auto [w, b] = foldAffineIntoLinear(w0, b0, 0, affine);
    const std::string wn = g.uniqueName(conv.inputs[1] + "_bnfolded");
    g.initializers.set(wn, w);
    const std::string bname = g.uniqueName((conv.hasInput(2) ? conv.inputs[2] : conv.inputs[1]) + "_bnbias");
    g.initializers.set(bname, b);
    conv.inputs.resize(3);
    conv.inputs[1] = wn;
    conv.inputs[2] = bname;
    conv.outputs[0] = bn.outputs[0];
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(bi));
    --bi;
    ++folded;
  }
  return folded;
}

// A BatchNormalization that no Conv before it absorbs (DenseNet's, after a Concat) becomes a
// depthwise 1x1 Conv of its affine map, where its input is known to be 4-D with as many channels:
// the Conv then runs in NHWC with the following activation fused, where the reference
// BatchNormalization had kept the layout in NCHW around it. The same function; the last bits
// differ (scale·x + shift instead of (x − μ)/√(var+ε)·γ + β).
int batchNormsToDepthwise(Graph& g, const ValueTypes& types) {
  int done = 0;
  for (auto& bn : g.nodes) {
    if (bn.op_type != "BatchNormalization" || !bn.domain.empty() || bn.outputs.size() != 1 || bn.inputs.size() != 5) continue;
    if (bn.attrInt("training_mode", 0) != 0) continue;
    const auto xt = types.find(bn.inputs[0]);
    if (xt == types.end() || xt->second.dtype != DType::Float32 || !xt->second.shape || xt->second.shape->size() != 4) continue;
    const Dim& cd = (*xt->second.shape)[1];
    if (!cd.known() || cd.value < 1) continue;
    const int64_t c = cd.value;
    bool ok = true;
    for (size_t k = 1; k <= 4; ++k) ok = ok && isFloatConst(g, bn.inputs[k], c);
    if (!ok) continue;
    const auto affine = batchNormAffine(g.initializers.at(bn.inputs[1]), g.initializers.at(bn.inputs[2]),
                                        g.initializers.at(bn.inputs[3]), g.initializers.at(bn.inputs[4]),
                                        bn.attrFloat("epsilon", 1e-5f));
    Tensor w(DType::Float32, {c, 1, 1, 1}), b(DType::Float32, {c});
    for (int64_t i = 0; i < c; ++i) {
      w.data<float>()[i] = static_cast<float>(affine.scale[static_cast<size_t>(i)]);
      b.data<float>()[i] = static_cast<float>(affine.shift[static_cast<size_t>(i)]);
    }
    const std::string wn = g.uniqueName(bn.inputs[0] + "_bn_scale"), bname = g.uniqueName(bn.inputs[0] + "_bn_shift");
    g.initializers.set(wn, w);
    g.initializers.set(bname, b);
    Node conv;
    conv.op_type = "Conv";
    conv.name = bn.name;
    conv.inputs = {bn.inputs[0], wn, bname};
    conv.outputs = bn.outputs;
    conv.setAttr("group", c);
    conv.setAttr("kernel_shape", std::vector<int64_t>{1, 1});
    bn = conv;
    ++done;
  }
  return done;
}

// A Pad of all-zero pads (DenseNet's before each average pooling) is dropped: its readers read its
// input.
int dropZeroPads(Graph& g) {
  int dropped = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op_type != "Pad" || !n.domain.empty() || n.outputs.size() != 1 || g.isGraphOutput(n.outputs[0])) continue;
    std::vector<int64_t> pads;
    if (n.hasInput(1)) {
      const Tensor* t = g.initializers.find(n.inputs[1]);
      if (!t || (t->dtype() != DType::Int64 && t->dtype() != DType::Int32)) continue;
      pads = intValues(*t);
    } else {
      pads = n.attrInts("pads");
    }
    if (pads.empty() || std::any_of(pads.begin(), pads.end(), [](int64_t p) { return p != 0; })) continue;
    replaceUses(g, std::string(n.outputs[0]), std::string(n.inputs[0]));  // copies: it rewrites inputs
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    --i;
    ++dropped;
  }
  return dropped;
}

// ------------------------------------------------------------------ QDQ -> integer ops

// A DequantizeLinear whose scale and zero point are constants: (quantized input, scale, zero point).
struct DqInfo {
  const Node* node = nullptr;
  std::string q, scale, zp;
  int64_t axis = 1;
};

std::optional<DqInfo> dqProducing(const Graph& g, const std::string& v) {
  const int p = producerIndex(g, v);
  if (p < 0) return std::nullopt;
  const Node& n = g.nodes[static_cast<size_t>(p)];
  if (n.op_type != "DequantizeLinear" || !n.domain.empty() || !n.hasInput(2)) return std::nullopt;
  if (!g.initializers.contains(n.inputs[1]) || !g.initializers.contains(n.inputs[2])) return std::nullopt;
  // The rewrites read the scale as float32; any other type is the DequantizeLinear kernel's to reject.
  if (g.initializers.at(n.inputs[1]).dtype() != DType::Float32) return std::nullopt;
  return DqInfo{&n, n.inputs[0], n.inputs[1], n.inputs[2], n.attrInt("axis", 1)};
}

bool is8Bit(DType t) { return t == DType::Int8 || t == DType::UInt8; }

bool isScalarConst(const Graph& g, const std::string& name) {
  const Tensor* t = g.initializers.find(name);
  return t && t->numel() == 1;
}

// The int32 bias behind DequantizeLinear output `v` as the integer kernels read it: constant int32
// values, zero point 0, and a scale equal to x_scale * w_scale per channel (or one value), so that
// acc + b_q shares the accumulator's scale. Its initializer name, or nullopt.
// One value per output channel (`channels` of them): a bias that broadcasts ([1], or [M, N] for a
// Gemm) is left to the float path, and the weight scales are read only where they exist (a [M, N]
// bias with per-channel weights read past the scales).
std::optional<std::string> int32Bias(const Graph& g, const std::string& v, float sx, const Tensor& sw, int64_t channels) {
  auto db = dqProducing(g, v);
  if (!db) return std::nullopt;
  const Tensor* bq = g.initializers.find(db->q);
  const Tensor& sb = g.initializers.at(db->scale);
  const Tensor& zb = g.initializers.at(db->zp);
  if (!bq || bq->dtype() != DType::Int32 || countZeros(zb) != zb.numel() || sb.dtype() != DType::Float32) return std::nullopt;
  if (bq->numel() != channels || (sw.numel() != 1 && sw.numel() != channels)) return std::nullopt;
  if (sb.numel() != bq->numel() && sb.numel() != 1) return std::nullopt;
  for (int64_t c = 0; c < bq->numel(); ++c) {
    const float want = sx * sw.data<float>()[sw.numel() == 1 ? 0 : c];
    const float have = sb.data<float>()[sb.numel() == 1 ? 0 : c];
    if (std::fabs(want - have) > 1e-6f * std::fabs(want)) return std::nullopt;
  }
  return db->q;
}

// The node that alone reads `v` (any input), or -1.
int soleReader(const Graph& g, const std::string& v) {
  if (g.isGraphOutput(v) || useCount(g, v) != 1) return -1;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (std::find(g.nodes[i].inputs.begin(), g.nodes[i].inputs.end(), v) != g.nodes[i].inputs.end()) return static_cast<int>(i);
  return -1;
}

// soleReader when that node is in the default domain (an op the exporter wrote), else -1.
int soleDefaultReader(const Graph& g, const std::string& v) {
  const int i = soleReader(g, v);
  return i >= 0 && g.nodes[static_cast<size_t>(i)].domain.empty() ? i : -1;
}

// The Add that alone reads a MatMul's output `y` and adds a constant bias of `n` columns
// (isFusedMatMulBias): a Linear layer on 3-D inputs as exporters write it. The engine's graph
// changes as it is rewritten, so this scans instead of using a GraphIndex (trailingBiasAdd).
struct BiasAdd {
  int node = -1;
  std::string bias;
};
std::optional<BiasAdd> fusableBiasAdd(const Graph& g, const std::string& y, int64_t n) {
  const int ai = soleReader(g, y);
  if (ai < 0) return std::nullopt;
  const Node& add = g.nodes[static_cast<size_t>(ai)];
  if (add.op_type != "Add" || !add.domain.empty() || add.inputs.size() != 2 || add.inputs[0] == add.inputs[1])
    return std::nullopt;
  const std::string& c = add.inputs[add.inputs[0] == y ? 1 : 0];
  const Tensor* ct = g.isGraphInput(c) ? nullptr : g.initializers.find(c);
  if (!ct || !isFusedMatMulBias(*ct, n)) return std::nullopt;
  return BiasAdd{ai, c};
}

// DQ(x) -> Conv/MatMul(DQ(W) [, DQ(b)]) -> Q  becomes  QLinearConv/QLinearMatMul, the integer kernel
// ONNX Runtime also runs for this pattern. Weights must be constant int8/uint8, activations
// per-tensor; a Conv bias must be int32 with scale x_scale * w_scale (as quantizers write it).
// With `internal_ops`, DQ(x) -> MatMul(DQ(W)) -> Add(c) -> Q, a Linear layer on 3-D inputs with its
// float bias c ([N] or [1, N]) quantized after the Add, becomes lwc.internal.QLinearMatMul: the
// same inputs and c, which the kernel adds to the accumulator (c / (x_scale * w_scale)).
int fuseQdq(Graph& g, bool internal_ops) {
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& op = g.nodes[i];
    if (!op.domain.empty() || (op.op_type != "Conv" && op.op_type != "MatMul" && op.op_type != "Gemm") ||
        op.outputs.size() != 1)
      continue;
    const bool gemm = op.op_type == "Gemm";
    if (gemm && (op.attrInt("transA", 0) != 0 || op.attrFloat("alpha", 1.0f) != 1.0f ||
                 (op.hasInput(2) && op.attrFloat("beta", 1.0f) != 1.0f)))
      continue;
    // A Gemm runs as a 1x1 QLinearConv: its bias is handled like a Conv's.
    const bool conv = op.op_type == "Conv" || gemm;
    if (op.inputs.size() < 2 || (op.op_type == "MatMul" && op.inputs.size() != 2)) continue;
    auto dx = dqProducing(g, op.inputs[0]);
    auto dw = dqProducing(g, op.inputs[1]);
    if (!dx || !dw || !isScalarConst(g, dx->scale) || !isScalarConst(g, dx->zp)) continue;
    if (!is8Bit(g.initializers.at(dx->zp).dtype())) continue;  // DQ of int32 activations: the float path
    const Tensor* wq = g.initializers.find(dw->q);
    if (!wq || (wq->dtype() != DType::Int8 && wq->dtype() != DType::UInt8)) continue;
    const Tensor& sw = g.initializers.at(dw->scale);
    const bool trans_b = gemm && op.attrInt("transB", 0) != 0;
    const int64_t w_axis = op.op_type == "Conv" || trans_b ? 0 : 1;  // output-channel axis of the weights
    if (gemm && wq->rank() != 2) continue;
    // Per-channel scales of a batched [B, K, N] MatMul weight: QLinearMatMul's are per column of a
    // 2-D B only (axis 1 or -2 of such a weight was taken for the columns' axis).
    if (op.op_type == "MatMul" && wq->rank() != 2 && sw.numel() > 1) continue;
    if (sw.numel() > 1 && dw->axis != w_axis && dw->axis != w_axis - static_cast<int64_t>(wq->rank())) continue;
    std::string bias;
    if (conv && op.hasInput(2)) {
      const int64_t channels = trans_b || op.op_type == "Conv" ? wq->dim(0) : wq->dim(1);
      const auto b = int32Bias(g, op.inputs[2], g.initializers.at(dx->scale).data<float>()[0], sw, channels);
      if (!b || g.initializers.at(*b).rank() != 1) continue;  // QLinearConv takes a 1-D bias
      bias = *b;
    }
    std::string y = op.outputs[0];
    if (g.isGraphOutput(y) || useCount(g, y) != 1) continue;
    std::optional<BiasAdd> bias_add;  // the MatMul's bias Add (internal_ops)
    if (internal_ops && op.op_type == "MatMul" && wq->rank() == 2) bias_add = fusableBiasAdd(g, y, wq->dim(1));
    if (bias_add) {
      y = g.nodes[static_cast<size_t>(bias_add->node)].outputs[0];
      if (g.isGraphOutput(y) || useCount(g, y) != 1) continue;
    }
    size_t qi = 0;
    while (qi < g.nodes.size() && !(g.nodes[qi].inputs.size() > 0 && g.nodes[qi].inputs[0] == y)) ++qi;
    if (qi == g.nodes.size()) continue;
    const Node& qn = g.nodes[qi];
    if (qn.op_type != "QuantizeLinear" || !qn.domain.empty() || !qn.hasInput(2) || !isScalarConst(g, qn.inputs[1]) ||
        !isScalarConst(g, qn.inputs[2]))
      continue;
    Node f = op;
    f.op_type = conv ? "QLinearConv" : "QLinearMatMul";
    f.inputs = {dx->q, dx->scale, dx->zp, dw->q, dw->scale, dw->zp, qn.inputs[1], qn.inputs[2]};
    if (!bias.empty()) f.inputs.push_back(bias);
    if (bias_add) {
      f.domain = kInternalDomain;
      f.inputs.push_back(bias_add->bias);
    }
    f.outputs = {qn.outputs[0]};
    if (op.op_type != "Conv") f.attrs.clear();
    std::vector<Node> extra;
    if (gemm) {
      // Y[M,N] = X[M,K] W[N,K]^T + b  as  Reshape(X, [M,K,1,1]) -> 1x1 QLinearConv -> Reshape [M,N].
      const Tensor& w = *wq;
      Tensor w4 = Tensor::uninitialized(w.dtype(), {trans_b ? w.dim(0) : w.dim(1), trans_b ? w.dim(1) : w.dim(0), 1, 1});
      const int64_t rows = w.dim(0), cols = w.dim(1);
      const auto* src = static_cast<const uint8_t*>(w.raw());
      auto* dst = static_cast<uint8_t*>(w4.raw());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) dst[trans_b ? r * cols + c : c * rows + r] = src[r * cols + c];
      const std::string wn = g.uniqueName(dw->q + "_1x1");
      g.initializers.set(wn, w4);
      const std::string s4 = g.uniqueName(op.name + "_shape4"), s2 = g.uniqueName(op.name + "_shape2");
      g.initializers.set(s4, Tensor::fromVector<int64_t>({4}, {0, 0, 1, 1}));
      g.initializers.set(s2, Tensor::fromVector<int64_t>({2}, {0, 0}));
      const std::string x4 = g.uniqueName(dx->q + "_4d"), y4 = g.uniqueName(qn.outputs[0] + "_4d");
      Node r_in;
      r_in.op_type = "Reshape";
      r_in.name = g.uniqueName(op.name + "_reshape_in");
      r_in.inputs = {dx->q, s4};
      r_in.outputs = {x4};
      Node r_out;
      r_out.op_type = "Reshape";
      r_out.name = g.uniqueName(op.name + "_reshape_out");
      r_out.inputs = {y4, s2};
      r_out.outputs = {qn.outputs[0]};
      f.inputs[0] = x4;
      f.inputs[3] = wn;
      f.outputs = {y4};
      extra = {r_in, f, r_out};
    }
    std::vector<size_t> gone{qi};
    if (bias_add) gone.push_back(static_cast<size_t>(bias_add->node));
    std::sort(gone.rbegin(), gone.rend());
    for (size_t k : gone) {
      g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(k));
      if (k < i) --i;
    }
    if (extra.empty()) {
      g.nodes[i] = f;
    } else {
      g.nodes[i] = extra[0];
      g.nodes.insert(g.nodes.begin() + static_cast<std::ptrdiff_t>(i) + 1, extra.begin() + 1, extra.end());
      i += 2;
    }
    ++fused;
  }
  return fused;
}

// Q(DQ(q)) with the same per-tensor scale and zero point is q again: x = (q - z) * s in float,
// round(x / s) + z is q - z + z exactly for |q - z| <= 255. So DequantizeLinear -> Q, directly or
// through a shape-only op (Flatten, Reshape, Squeeze, Unsqueeze), becomes the shape op on the
// integers (or nothing): the pattern a quantizer writes after an averaging pool whose output and
// the next layer's input (the Flatten) carry the same parameters. ONNX Runtime drops the same pairs.
bool sameScalar(const Graph& g, const std::string& a, const std::string& b) {
  const Tensor* x = g.initializers.find(a);
  const Tensor* y = g.initializers.find(b);
  return x && y && x->numel() == 1 && y->numel() == 1 && x->dtype() == y->dtype() && x->at(0) == y->at(0);
}

int dropRequantize(Graph& g) {
  static const std::set<std::string> kShapeOnly = {"Flatten", "Reshape", "Squeeze", "Unsqueeze"};
  int dropped = 0;
  for (size_t qi = 0; qi < g.nodes.size(); ++qi) {
    const Node& q = g.nodes[qi];
    if (q.op_type != "QuantizeLinear" || !q.domain.empty() || !q.hasInput(2) || q.outputs.size() != 1 ||
        q.hasAttr("output_dtype") || g.isGraphOutput(q.outputs[0]))
      continue;
    const int pi = producerIndex(g, q.inputs[0]);
    if (pi < 0) continue;
    const Node& p = g.nodes[static_cast<size_t>(pi)];
    const bool shape_op = p.domain.empty() && kShapeOnly.count(p.op_type) && p.outputs.size() == 1;
    const std::string dq_out = shape_op ? p.inputs[0] : q.inputs[0];
    auto dq = dqProducing(g, dq_out);
    if (!dq || !sameScalar(g, dq->scale, q.inputs[1]) || !sameScalar(g, dq->zp, q.inputs[2])) continue;
    // Only where (q - z) * s stays finite for every q of the type: with a scale near float's
    // limit the dequantized value overflows and the QuantizeLinear saturates, which is not q.
    {
      const Tensor& zt = g.initializers.at(dq->zp);
      if (!is8Bit(zt.dtype())) continue;
      const double z = zt.at(0), lo = zt.dtype() == DType::UInt8 ? 0 : -128, hi = zt.dtype() == DType::UInt8 ? 255 : 127;
      const double span = std::max(std::fabs(hi - z), std::fabs(lo - z)) * double(g.initializers.at(dq->scale).at(0));
      if (!(span < double(std::numeric_limits<float>::max()))) continue;
    }
    if (shape_op) {
      if (consumersOf(g, p.outputs[0]) != 1 || g.isGraphOutput(p.outputs[0])) continue;
      Node& m = g.nodes[static_cast<size_t>(pi)];
      m.inputs[0] = dq->q;
      m.outputs[0] = q.outputs[0];
    } else {
      replaceUses(g, q.outputs[0], dq->q);
    }
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(qi));
    --qi;
    ++dropped;
  }
  return dropped;
}

// A Gemm/MatMul with dequantized input and weights whose float output is not requantized (the last
// layer of a QDQ model) runs on the integers too, as ONNX Runtime's QGemm / MatMulIntegerToFloat do:
//   DQ(x) -> Gemm(DQ(W), DQ(b))  becomes  Cast(MatMulInteger(x_q, W_q, x_zp) + b_q) * (x_scale * w_scale)
// one int8 pass over the weights (a quarter of the bytes of the dequantized float copy). Only where
// oneDNN's int8 kernel computes it exactly on this CPU (matMulIntegerFast); elsewhere the float
// path stays (e.g. 8-bit weights on a CPU without VNNI).
int fuseQdqFloatOutput(Graph& g) {
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node op = g.nodes[i];
    if (!op.domain.empty() || (op.op_type != "MatMul" && op.op_type != "Gemm") || op.outputs.size() != 1) continue;
    const bool gemm = op.op_type == "Gemm";
    if (gemm && (op.attrInt("transA", 0) != 0 || op.attrFloat("alpha", 1.0f) != 1.0f ||
                 (op.hasInput(2) && op.attrFloat("beta", 1.0f) != 1.0f)))
      continue;
    if (op.inputs.size() < 2 || (!gemm && op.inputs.size() != 2)) continue;
    auto dx = dqProducing(g, op.inputs[0]);
    auto dw = dqProducing(g, op.inputs[1]);
    if (!dx || !dw || !isScalarConst(g, dx->scale) || !isScalarConst(g, dx->zp)) continue;
    const Tensor& xzp = g.initializers.at(dx->zp);
    const Tensor* wq = g.initializers.find(dw->q);
    const Tensor& sw = g.initializers.at(dw->scale);
    const Tensor& wzp = g.initializers.at(dw->zp);
    if (!wq || wq->dtype() != DType::Int8 || wq->rank() != 2 || countZeros(wzp) != wzp.numel()) continue;
    if (xzp.dtype() != DType::UInt8 && xzp.dtype() != DType::Int8) continue;
    if (sw.dtype() != DType::Float32 || g.initializers.at(dx->scale).dtype() != DType::Float32) continue;
    const bool trans_b = gemm && op.attrInt("transB", 0) != 0;
    const int64_t K = trans_b ? wq->dim(1) : wq->dim(0), N = trans_b ? wq->dim(0) : wq->dim(1);
    const int64_t w_axis = trans_b ? 0 : 1;
    if (sw.numel() != 1 && !(sw.numel() == N && (dw->axis == w_axis || dw->axis == w_axis - 2))) continue;
    const float sx = g.initializers.at(dx->scale).data<float>()[0];
    std::vector<float> mult(static_cast<size_t>(N));
    for (int64_t n = 0; n < N; ++n) mult[n] = sx * sw.data<float>()[sw.numel() == 1 ? 0 : n];
    std::string bias;
    if (gemm && op.hasInput(2)) {
      const auto b = int32Bias(g, op.inputs[2], sx, sw, N);
      if (!b) continue;
      // C of shape [N] or [1, N] (one value per output column), small enough that acc + b_q cannot
      // leave int32 (matMulIntegerFast bounds |acc| by 2^24).
      const Tensor& bq = g.initializers.at(*b);
      if (bq.numel() != N || bq.dim(bq.rank() - 1) != N || bq.rank() > 2) continue;
      int64_t bmax = 0;
      for (int64_t n = 0; n < N; ++n) bmax = std::max<int64_t>(bmax, std::abs(int64_t{bq.data<int32_t>()[n]}));
      if (bmax > int64_t{std::numeric_limits<int32_t>::max()} - (int64_t{1} << 24)) continue;
      bias = *b;
    }
    Tensor wkn = *wq;
    if (trans_b) {
      wkn = Tensor::uninitialized(DType::Int8, {K, N});
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) wkn.data<int8_t>()[k * N + n] = wq->data<int8_t>()[n * K + k];
    }
    if (!matMulIntegerFast(xzp.dtype(), static_cast<int32_t>(xzp.at(0)), wkn)) continue;
    // A Linear layer on 3-D inputs whose output stays float (read by float ops: attention, GELU):
    // DQ(x) -> MatMul(DQ(W)) -> Add(c) becomes lwc.internal.MatMulIntegerToFloat(x, .., W, .., c),
    // one int8 kernel writing acc * x_scale * w_scale + c (ONNX Runtime's MatMulIntegerToFloat).
    if (const auto ba = gemm ? std::nullopt : fusableBiasAdd(g, op.outputs[0], N)) {
      Node f = op;
      f.domain = kInternalDomain;
      f.op_type = "MatMulIntegerToFloat";
      f.inputs = {dx->q, dx->scale, dx->zp, dw->q, dw->scale, dw->zp, ba->bias};
      f.outputs = g.nodes[static_cast<size_t>(ba->node)].outputs;
      f.attrs.clear();
      g.nodes[i] = f;
      g.nodes.erase(g.nodes.begin() + ba->node);
      if (static_cast<size_t>(ba->node) < i) --i;
      ++fused;
      continue;
    }
    const std::string base = op.name.empty() ? op.outputs[0] : op.name;
    const std::string wn = g.uniqueName(dw->q + "_kn"), mn = g.uniqueName(base + "_multiplier");
    g.initializers.set(wn, std::move(wkn));
    g.initializers.set(mn, Tensor::fromVector<float>({N}, mult));
    std::vector<Node> chain;
    auto add = [&](const std::string& type, std::vector<std::string> in, const std::string& out) {
      Node n;
      n.op_type = type;
      n.name = g.uniqueName(base + "_" + type);
      n.inputs = std::move(in);
      n.outputs = {out};
      chain.push_back(n);
      g.nodes.push_back(n);  // reserve the names
      return out;
    };
    std::string acc = add("MatMulInteger", {dx->q, wn, dx->zp}, g.uniqueName(base + "_acc"));
    if (!bias.empty()) acc = add("Add", {acc, bias}, g.uniqueName(base + "_acc_bias"));
    const std::string accf = add("Cast", {acc}, g.uniqueName(base + "_acc_float"));
    chain.back().setAttr("to", int64_t(1));  // FLOAT
    add("Mul", {accf, mn}, op.outputs[0]);
    g.nodes.resize(g.nodes.size() - chain.size());
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    g.nodes.insert(g.nodes.begin() + static_cast<std::ptrdiff_t>(i), chain.begin(), chain.end());
    i += chain.size() - 1;
    ++fused;
  }
  return fused;
}

// A dynamically quantized layer, MatMulInteger(x_q, W, x_zp, w_zp) -> Cast(float) -> Mul(scale)
// [-> Add(c)], as `lwc quantize --mode dynamic` and ONNX Runtime's quantize_dynamic write it,
// becomes lwc.internal.MatMulIntegerScaled(x_q, W, x_zp, w_zp, scale [, c]): one int8 kernel
// writing float(acc) * scale [+ c], the Cast, Mul and Add each rounding once as before (the same
// bits). scale must be known to be one value or one per output column: a constant, or the Mul of
// a DynamicQuantizeLinear's scale (one value) and such a constant, as both quantizers write it.
int fuseMatMulIntegerScaled(Graph& g) {
  int fused = 0;
  auto columnScale = [&](const std::string& v, int64_t n) {
    auto constOk = [&](const std::string& c) {
      const Tensor* t = g.isGraphInput(c) ? nullptr : g.initializers.find(c);
      return t && t->dtype() == DType::Float32 && isScaledMatMulScale(*t, n);
    };
    if (constOk(v)) return true;
    const int p = producerIndex(g, v);
    if (p < 0) return false;
    const Node& mul = g.nodes[static_cast<size_t>(p)];
    if (mul.op_type != "Mul" || !mul.domain.empty() || mul.inputs.size() != 2) return false;
    for (int k = 0; k < 2; ++k) {
      const int q = producerIndex(g, mul.inputs[static_cast<size_t>(k)]);
      if (q < 0) continue;
      const Node& dq = g.nodes[static_cast<size_t>(q)];
      if (dq.op_type == "DynamicQuantizeLinear" && dq.domain.empty() && dq.outputs.size() > 1 &&
          dq.outputs[1] == mul.inputs[static_cast<size_t>(k)] && constOk(mul.inputs[static_cast<size_t>(1 - k)]))
        return true;
    }
    return false;
  };
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node mm = g.nodes[i];
    if (!mm.domain.empty() || mm.op_type != "MatMulInteger" || mm.outputs.size() != 1 || mm.inputs.size() != 4 ||
        !mm.hasInput(2) || !mm.hasInput(3))
      continue;
    const Tensor* b = g.isGraphInput(mm.inputs[1]) ? nullptr : g.initializers.find(mm.inputs[1]);
    if (!b || b->rank() != 2 || !is8Bit(b->dtype())) continue;
    const int64_t n = b->dim(1);
    const int ci = soleDefaultReader(g, mm.outputs[0]);
    if (ci < 0) continue;
    const Node& cast = g.nodes[static_cast<size_t>(ci)];
    if (cast.op_type != "Cast" || cast.attrInt("to", 0) != 1 || cast.outputs.size() != 1) continue;
    const int mi = soleDefaultReader(g, cast.outputs[0]);
    if (mi < 0) continue;
    const Node& mul = g.nodes[static_cast<size_t>(mi)];
    if (mul.op_type != "Mul" || mul.inputs.size() != 2 || mul.outputs.size() != 1 || mul.inputs[0] == mul.inputs[1]) continue;
    const std::string& scale = mul.inputs[mul.inputs[0] == cast.outputs[0] ? 1 : 0];
    if (!columnScale(scale, n)) continue;
    Node f;
    f.name = mm.name;
    f.domain = kInternalDomain;
    f.op_type = "MatMulIntegerScaled";
    f.inputs = {mm.inputs[0], mm.inputs[1], mm.inputs[2], mm.inputs[3], scale};
    f.outputs = mul.outputs;
    std::vector<size_t> chain{i, static_cast<size_t>(ci), static_cast<size_t>(mi)};
    if (const auto ba = fusableBiasAdd(g, mul.outputs[0], n)) {
      f.inputs.push_back(ba->bias);
      f.outputs = g.nodes[static_cast<size_t>(ba->node)].outputs;
      chain.push_back(static_cast<size_t>(ba->node));
    }
    // In the place of the chain's last node, after everything it reads (the scale's Mul may follow
    // the MatMulInteger).
    std::sort(chain.begin(), chain.end());
    g.nodes[chain.back()] = f;
    for (size_t k = chain.size() - 1; k-- > 0;) g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(chain[k]));
    i = chain.front() - 1;  // the loop's ++i then looks at what now stands at chain.front() (unsigned wrap at 0)
    ++fused;
  }
  return fused;
}

// DQ(a), DQ(b) -> Add [-> Relu] -> Q  becomes  lwc.internal.QAdd(a, .., b, .., y_scale, y_zp){relu}:
// one pass over 8-bit data instead of three float tensors (residual connections of QDQ models).
int fuseQAdd(Graph& g) {
  int fused = 0;
  for (size_t qi = 0; qi < g.nodes.size(); ++qi) {
    const Node& q = g.nodes[qi];
    if (q.op_type != "QuantizeLinear" || !q.domain.empty() || !q.hasInput(2) || !isScalarConst(g, q.inputs[1]) ||
        !isScalarConst(g, q.inputs[2]))
      continue;
    int ai = producerIndex(g, q.inputs[0]);
    if (ai < 0) continue;
    int ri = -1;
    if (g.nodes[static_cast<size_t>(ai)].op_type == "Relu" && g.nodes[static_cast<size_t>(ai)].domain.empty()) {
      ri = ai;
      const std::string& v = g.nodes[static_cast<size_t>(ri)].inputs[0];
      if (g.isGraphOutput(v) || useCount(g, v) != 1) continue;
      ai = producerIndex(g, v);
      if (ai < 0) continue;
    }
    const Node& add = g.nodes[static_cast<size_t>(ai)];
    if (add.op_type != "Add" || !add.domain.empty() || add.inputs.size() != 2) continue;
    if (g.isGraphOutput(q.inputs[0]) || useCount(g, q.inputs[0]) != 1) continue;
    auto da = dqProducing(g, add.inputs[0]), db = dqProducing(g, add.inputs[1]);
    if (!da || !db || !isScalarConst(g, da->scale) || !isScalarConst(g, da->zp) || !isScalarConst(g, db->scale) ||
        !isScalarConst(g, db->zp))
      continue;
    if (!is8Bit(g.initializers.at(da->zp).dtype()) || !is8Bit(g.initializers.at(db->zp).dtype())) continue;
    Node f;
    f.domain = kInternalDomain;
    f.op_type = "QAdd";
    f.name = add.name;
    f.inputs = {da->q, da->scale, da->zp, db->q, db->scale, db->zp, q.inputs[1], q.inputs[2]};
    f.outputs = {q.outputs[0]};
    f.setAttr("relu", int64_t(ri >= 0));
    std::vector<size_t> drop{qi, static_cast<size_t>(ai)};
    if (ri >= 0) drop.push_back(static_cast<size_t>(ri));
    std::sort(drop.begin(), drop.end());
    g.nodes[drop[0]] = f;  // the earliest position keeps the graph sorted
    for (size_t k = drop.size(); k-- > 1;) g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(drop[k]));
    qi = drop[0];
    ++fused;
  }
  return fused;
}

// ------------------------------------------------------------------ lookup tables

// Elementwise float ops a lookup table may replace: deterministic, one output, and each output
// element a function of the same element of the inputs alone (scalar constants broadcast).
const std::set<std::string> kLutOps = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu",
                                       "Selu", "Celu", "Tanh", "Neg", "Abs", "Exp", "Log", "Sqrt", "Reciprocal",
                                       "Erf", "Identity", "Softplus", "Softsign", "Mish", "Add", "Sub", "Mul",
                                       "Div", "Max", "Min", "Pow"};
constexpr size_t kLutMaxNodes = 16;

// A value computed by elementwise float ops (kLutOps) from one per-tensor 8-bit DequantizeLinear:
// every op reads only the dequantized value, the other ops' outputs or scalar float constants
// that add no axes, and nothing but the chain and node `reader` reads their outputs. The value is
// then a function of each byte of the DequantizeLinear's input alone. `nodes` is empty when the
// value is the DequantizeLinear's output itself. `types` (when known) gives the dequantized
// value's rank, which a constant operand must not exceed; without it only rank-0 constants.
struct LutChain {
  DqInfo root;
  std::set<size_t> nodes;
};

std::optional<LutChain> lutChain(const Graph& g, const std::string& value, size_t reader, const ValueTypes* types) {
  std::set<size_t> chain;
  std::optional<DqInfo> root;
  std::vector<std::string> todo{value};
  while (!todo.empty()) {
    const std::string v = todo.back();
    todo.pop_back();
    const int pi = producerIndex(g, v);
    if (pi < 0) return std::nullopt;
    const Node& n = g.nodes[static_cast<size_t>(pi)];
    if (n.op_type == "DequantizeLinear" && n.domain.empty()) {
      auto d = dqProducing(g, v);
      if (!d || (root && root->node != d->node) || !isScalarConst(g, d->scale) || !isScalarConst(g, d->zp)) return std::nullopt;
      root = d;
      continue;
    }
    if (chain.count(static_cast<size_t>(pi))) continue;
    if (!n.domain.empty() || !kLutOps.count(n.op_type) || n.outputs.size() != 1 || chain.size() >= kLutMaxNodes)
      return std::nullopt;
    chain.insert(static_cast<size_t>(pi));
    for (const auto& in : n.inputs) {
      if (in.empty()) continue;
      const Tensor* c = g.isGraphInput(in) ? nullptr : g.initializers.find(in);
      if (!c) todo.push_back(in);
      else if (c->dtype() != DType::Float32 || c->numel() != 1) return std::nullopt;  // one value (rank: below)
    }
  }
  if (!root) return std::nullopt;
  const DType xt = g.initializers.at(root->zp).dtype();
  if (xt != DType::UInt8 && xt != DType::Int8) return std::nullopt;
  size_t root_rank = 0;
  if (types) {
    auto it = types->find(root->node->outputs[0]);
    if (it != types->end() && it->second.shape) root_rank = it->second.shape->size();
  }
  for (size_t ci : chain) {
    const Node& n = g.nodes[ci];
    for (const auto& in : n.inputs) {
      const Tensor* c = in.empty() || g.isGraphInput(in) ? nullptr : g.initializers.find(in);
      if (c && c->rank() > root_rank) return std::nullopt;
    }
    const std::string& o = n.outputs[0];
    if (o.empty() || g.isGraphOutput(o) || readBySubgraph(g, o)) return std::nullopt;
    for (size_t k = 0; k < g.nodes.size(); ++k) {
      if (k == reader || chain.count(k)) continue;
      const auto& ins = g.nodes[k].inputs;
      if (std::find(ins.begin(), ins.end(), o) != ins.end()) return std::nullopt;
    }
  }
  return LutChain{*root, std::move(chain)};
}

// The chain's value for each of the 256 bytes its DequantizeLinear may read (byte order), then
// `last`'s (a QuantizeLinear reading it) when given: the reference kernels of those very nodes,
// in graph order (the graph is sorted). nullopt when a kernel rejects its operands (the session
// then reports it when it runs the chain).
std::optional<Tensor> lutValues(const Graph& g, const LutChain& c, int64_t opset, const Node* last) {
  Tensor bytes(g.initializers.at(c.root.zp).dtype(), {256});
  for (int b = 0; b < 256; ++b) static_cast<uint8_t*>(bytes.raw())[b] = static_cast<uint8_t>(b);
  std::map<std::string, Tensor> vals;
  auto eval = [&](const Node& n) {
    std::vector<const Tensor*> ins;
    for (const auto& in : n.inputs) {
      auto it = vals.find(in);
      ins.push_back(in.empty() ? nullptr : it != vals.end() ? &it->second : g.initializers.find(in));
    }
    auto outs = evaluateNodeAt(n, opset, ins);
    if (!outs || outs->size() != 1 || (*outs)[0].numel() != 256) return false;
    vals[n.outputs[0]] = std::move((*outs)[0]);
    return true;
  };
  try {
    vals[c.root.q] = bytes;
    bool ok = eval(*c.root.node);
    for (size_t k = 0; ok && k < g.nodes.size(); ++k)
      if (c.nodes.count(k)) ok = eval(g.nodes[k]);
    if (ok && last) ok = eval(*last);
    if (!ok) return std::nullopt;
    const std::string& out = last ? last->outputs[0] : c.nodes.empty() ? c.root.node->outputs[0] : g.nodes[*c.nodes.rbegin()].outputs[0];
    return vals.at(out).reshaped({256});
  } catch (const Error&) {
    return std::nullopt;
  }
}

// Erases the chain's nodes; returns `keep` (an index) as it is after the erasures.
size_t eraseChain(Graph& g, const LutChain& c, size_t keep) {
  for (auto it = c.nodes.rbegin(); it != c.nodes.rend(); ++it) {
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(*it));
    if (*it < keep) --keep;
  }
  return keep;
}

// A per-tensor QuantizeLinear with constant parameters of 8-bit output type; else nullopt.
std::optional<DType> scalarQuantize(const Graph& g, const Node& q) {
  if (q.op_type != "QuantizeLinear" || !q.domain.empty() || q.inputs.size() != 3 || q.outputs.size() != 1 ||
      !isScalarConst(g, q.inputs[1]) || !isScalarConst(g, q.inputs[2]) || g.isGraphOutput(q.inputs[0]))
    return std::nullopt;
  const DType yt = g.initializers.at(q.inputs[2]).dtype();
  if (yt != DType::UInt8 && yt != DType::Int8) return std::nullopt;
  return yt;
}

// lwc.internal.QLut(x, table) -> y named `name`, its 256-entry table stored as a new initializer.
Node lutNode(Graph& g, const std::string& name, const std::string& x, Tensor table, const std::string& y) {
  Node f;
  f.domain = kInternalDomain;
  f.op_type = "QLut";
  f.name = name;
  const std::string tn = g.uniqueName(y + "_lut");
  g.initializers.set(tn, std::move(table));
  f.inputs = {x, tn};
  f.outputs = {y};
  return f;
}

// x (8-bit) -> DequantizeLinear -> elementwise float ops -> QuantizeLinear -> y (8-bit), per-tensor
// parameters (lutChain): y is a function of each byte of x, so the chain becomes
// lwc.internal.QLut(x, table), its 256 results, computed by the reference kernels of those very
// nodes (lutValues): the same bytes as the chain. INT8 files keep activation functions in float
// between their DQ and Q: torchvision's SiLU (y * Sigmoid(y)) in efficientnet, HardSwish in
// mobilenet_v3, a Sigmoid gate.
int fuseLookupTables(Graph& g, int64_t opset, const ValueTypes* types) {
  int fused = 0;
  for (size_t qi = 0; qi < g.nodes.size(); ++qi) {
    const Node& q = g.nodes[qi];
    const auto yt = scalarQuantize(g, q);
    if (!yt) continue;
    auto chain = lutChain(g, q.inputs[0], qi, types);
    if (!chain || chain->nodes.empty()) continue;
    auto table = lutValues(g, *chain, opset, &q);
    if (!table || table->dtype() != *yt) continue;
    g.nodes[qi] = lutNode(g, q.name, chain->root.q, std::move(*table), q.outputs[0]);  // the Q's place: after the chain, so x is ready
    qi = eraseChain(g, *chain, qi);
    ++fused;
  }
  return fused;
}

// DQ(x) -> MaxPool -> Q with the same per-tensor parameters becomes MaxPool(x), as ONNX Runtime's
// QDQ fusions do: the max of dequantized values is the dequantized max (the scale is positive),
// and Q(DQ(q)) = q, so the float path's bytes. torchvision googlenet's INT8 file ran its 13 pools
// in float between a DQ and a Q. The pool must be read by the Q alone. (Its concatenations are
// regions of fuseIntegerDataMovement.)
int fuseIntegerMaxPool(Graph& g) {
  int fused = 0;
  for (size_t qi = 0; qi < g.nodes.size(); ++qi) {
    const Node& q = g.nodes[qi];
    if (!scalarQuantize(g, q)) continue;
    const int pi = producerIndex(g, q.inputs[0]);
    if (pi < 0) continue;
    const Node& p = g.nodes[static_cast<size_t>(pi)];
    if (!p.domain.empty() || p.op_type != "MaxPool" || p.outputs.size() != 1 || g.isGraphOutput(p.outputs[0]) ||
        consumersOf(g, p.outputs[0]) != 1)
      continue;
    auto dq = dqProducing(g, p.inputs[0]);
    if (!dq || !sameScalar(g, dq->scale, q.inputs[1]) || !sameScalar(g, dq->zp, q.inputs[2]) ||
        !(g.initializers.at(dq->scale).at(0) > 0))
      continue;
    Node m = p;
    m.inputs[0] = dq->q;
    m.outputs[0] = q.outputs[0];
    // In the Q's place (after the pool, so x is ready), the pool gone.
    g.nodes[qi] = std::move(m);
    g.nodes.erase(g.nodes.begin() + pi);
    --qi;
    ++fused;
  }
  return fused;
}

// A region of data-movement ops (Concat, Split, Slice, Reshape, Transpose, ...) whose inputs are
// all per-tensor DequantizeLinears of 8-bit tensors and whose outputs are all read by per-tensor
// QuantizeLinears with one set of parameters moves bytes instead of floats: each entry reads its
// 8-bit tensor (through a 256-entry requantization table, QLut, where its parameters differ from
// the Qs': Q(DQ(byte)) by the reference kernels of those very nodes, lutValues), and the Qs'
// readers read the region's outputs. The ops only move values, so the same bytes. The inception
// and fire modules' DQs -> Concat -> Q (googlenet's and squeezenet's INT8 files spent a third of
// their time at batch 32 around those and their pools) and ShuffleNet's channel shuffles (Concat,
// Reshape, Transpose, Reshape between dequantized branches and a Q; a Split between a DQ and two
// Qs of the same parameters, as `lwc quantize` writes them since 2026-12-05) ran in float. One
// region per call.
bool fuseIntegerDataMovementOnce(Graph& g, int64_t opset) {
  static const std::set<std::string> kMove = {"Concat",   "Split",    "Slice",        "Reshape",     "Transpose", "Flatten",
                                              "Squeeze",  "Unsqueeze", "Identity",    "DepthToSpace", "SpaceToDepth"};
  auto dataInputs = [](const Node& n) -> size_t { return n.op_type == "Concat" ? n.inputs.size() : 1; };
  for (size_t qi = 0; qi < g.nodes.size(); ++qi) {
    const Node q0 = g.nodes[qi];
    const auto yt = scalarQuantize(g, q0);
    if (!yt) continue;
    const int p0 = producerIndex(g, q0.inputs[0]);
    if (p0 < 0 || !g.nodes[static_cast<size_t>(p0)].domain.empty() || !kMove.count(g.nodes[static_cast<size_t>(p0)].op_type))
      continue;
    auto isExit = [&](const Node& n) {
      return scalarQuantize(g, n) == yt && sameScalar(g, n.inputs[1], q0.inputs[1]) && sameScalar(g, n.inputs[2], q0.inputs[2]);
    };
    // The region: walk from the Q's input through producers and readers. A value produced in the
    // region is read only by region ops (as data) or by exits; its inputs come from region ops or
    // from entries (DequantizeLinears, which other nodes may read too).
    std::set<size_t> region, entries, exits;
    std::set<std::string> seen;
    std::vector<std::string> todo = {q0.inputs[0]};
    bool ok = true;
    while (ok && !todo.empty()) {
      const std::string v = todo.back();
      todo.pop_back();
      if (!seen.insert(v).second) continue;
      const int pi = producerIndex(g, v);
      if (pi < 0 || g.isGraphOutput(v)) {
        ok = false;
        break;
      }
      if (auto dq = dqProducing(g, v)) {
        const DType xt = g.initializers.at(dq->zp).dtype();
        ok = isScalarConst(g, dq->scale) && isScalarConst(g, dq->zp) && (xt == DType::UInt8 || xt == DType::Int8);
        entries.insert(static_cast<size_t>(pi));
        continue;
      }
      const Node& p = g.nodes[static_cast<size_t>(pi)];
      if (!p.domain.empty() || !kMove.count(p.op_type)) {
        ok = false;
        break;
      }
      region.insert(static_cast<size_t>(pi));
      for (size_t k = 0; k < dataInputs(p); ++k)
        if (!p.inputs[k].empty()) todo.push_back(p.inputs[k]);
      for (const auto& o : p.outputs) {
        if (o.empty()) continue;
        if (g.isGraphOutput(o)) ok = false;
        for (size_t k = 0; k < g.nodes.size() && ok; ++k) {
          const Node& r = g.nodes[k];
          for (size_t j = 0; j < r.inputs.size() && ok; ++j) {
            if (r.inputs[j] != o) continue;
            if (r.domain.empty() && kMove.count(r.op_type) && j < dataInputs(r)) {
              for (const auto& ro : r.outputs)
                if (!ro.empty()) todo.push_back(ro);
            } else if (j == 0 && isExit(r)) {
              exits.insert(k);
            } else {
              ok = false;
            }
          }
        }
      }
    }
    if (!ok || region.empty() || entries.empty() || exits.empty()) continue;
    // The entries' 8-bit values, through a requantization table where their parameters differ.
    std::map<std::string, std::string> repl;  // entry DQ output -> 8-bit value
    std::vector<Node> luts;
    for (size_t e : entries) {
      const std::string dq_out = g.nodes[e].outputs[0];
      auto dq = dqProducing(g, dq_out);
      if (!dq) {
        ok = false;
        break;
      }
      if (sameScalar(g, dq->scale, q0.inputs[1]) && sameScalar(g, dq->zp, q0.inputs[2])) {
        repl[dq_out] = dq->q;
        continue;
      }
      Node requantize = q0;
      requantize.inputs[0] = dq_out;
      auto table = lutValues(g, LutChain{*dq, {}}, opset, &requantize);
      if (!table || table->dtype() != *yt) {
        ok = false;
        break;
      }
      const std::string y = g.uniqueName(dq_out + "_requantized");
      luts.push_back(lutNode(g, q0.name + "_" + dq_out, dq->q, std::move(*table), y));
      repl[dq_out] = y;
    }
    if (!ok) continue;
    for (size_t k : region)
      for (auto& in : g.nodes[k].inputs)
        if (auto it = repl.find(in); it != repl.end()) in = it->second;
    // The exits' readers read the region's values; a Q whose output is a model output becomes an
    // Identity of it.
    std::vector<size_t> erase;
    for (size_t x : exits) {
      Node& qn = g.nodes[x];
      if (g.isGraphOutput(qn.outputs[0])) {
        qn.op_type = "Identity";
        qn.inputs.resize(1);
        continue;
      }
      replaceUses(g, std::string(qn.outputs[0]), std::string(qn.inputs[0]));
      erase.push_back(x);
    }
    std::sort(erase.rbegin(), erase.rend());
    for (size_t x : erase) g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(x));
    for (auto& lut : luts) g.nodes.push_back(std::move(lut));  // placed by the sort
    topoSort(g);
    return true;
  }
  return false;
}

int fuseIntegerDataMovement(Graph& g, int64_t opset) {
  int fused = 0;
  while (fuseIntegerDataMovementOnce(g, opset)) ++fused;
  return fused;
}

// Channels of x along axis 1 from the inferred types; 0 when unknown.
int64_t channelsOf(const ValueTypes& types, const std::string& v) {
  const auto it = types.find(v);
  if (it == types.end() || !it->second.shape || it->second.shape->size() < 2) return 0;
  const Dim& d = (*it->second.shape)[1];
  return d.known() && d.value > 0 ? d.value : 0;
}

// A pre-activation block of an INT8 file, DQ(x) -> BatchNormalization -> [Relu] -> Q, or DenseNet's
// Concat(DQ(x_1), ..., DQ(x_k)) along the channels -> BatchNormalization -> [Relu] -> Q, all
// per-tensor 8-bit parameters: each output byte is a function of the input byte and its channel,
// so the chain becomes [Concat(x_1, ..., x_k) ->] lwc.internal.QLutChannels(x, table){axis = 1},
// table [C, 256] the Q of the chain of each channel's 256 dequantized values by the reference
// kernels of those very nodes: the reference's bytes (where the float path ran the normalization
// as a depthwise convolution, within a rounding of them). Runs before BatchNormalizations become
// depthwise convolutions. DenseNet-121's INT8 file spent half its time at batch 32 in the float
// concatenations, normalizations and their DequantizeLinear / QuantizeLinear.
int fuseChannelLookupTables(Graph& g, int64_t opset, const ValueTypes& types) {
  int fused = 0;
  for (size_t qi = 0; qi < g.nodes.size(); ++qi) {
    const Node q = g.nodes[qi];
    const auto yt = scalarQuantize(g, q);
    if (!yt) continue;
    // Walk back: [Relu] <- BatchNormalization <- DQ | Concat of DQs; each value read once.
    auto single = [&](const std::string& v) -> const Node* {
      const int pi = producerIndex(g, v);
      if (pi < 0 || g.isGraphOutput(v) || consumersOf(g, v) != 1) return nullptr;
      const Node* n = &g.nodes[static_cast<size_t>(pi)];
      return n->domain.empty() && n->outputs.size() == 1 ? n : nullptr;
    };
    const Node* relu = single(q.inputs[0]);
    const Node* bn = relu;
    if (relu && relu->op_type == "Relu") bn = single(relu->inputs[0]);
    else relu = nullptr;
    if (!bn || bn->op_type != "BatchNormalization" || bn->inputs.size() != 5 || bn->attrInt("training_mode", 0) != 0)
      continue;
    const int64_t c = channelsOf(types, bn->inputs[0]);
    if (c == 0) continue;
    bool ok = true;
    for (size_t k = 1; k <= 4; ++k) ok = ok && isFloatConst(g, bn->inputs[k], c);
    if (!ok) continue;
    // The root: one DQ, or a Concat along axis 1 of DQs of one 8-bit type.
    std::vector<DqInfo> parts;
    std::vector<int64_t> widths;
    const Node* cat = single(bn->inputs[0]);
    if (cat && cat->op_type == "Concat") {
      if (cat->attrInt("axis", 0) != 1) continue;
      for (const auto& in : cat->inputs) {
        auto dq = in.empty() ? std::nullopt : dqProducing(g, in);
        const int64_t w = in.empty() ? 0 : channelsOf(types, in);
        if (!dq || w == 0) {
          ok = false;
          break;
        }
        parts.push_back(*dq);
        widths.push_back(w);
      }
    } else {
      cat = nullptr;
      auto dq = dqProducing(g, bn->inputs[0]);
      if (dq) {
        parts.push_back(*dq);
        widths.push_back(c);
      } else {
        ok = false;
      }
    }
    if (!ok || parts.empty()) continue;
    int64_t total = 0;
    const DType xt = g.initializers.at(parts[0].zp).dtype();
    for (size_t k = 0; k < parts.size(); ++k) {
      total += widths[k];
      ok = ok && isScalarConst(g, parts[k].scale) && isScalarConst(g, parts[k].zp) &&
           g.initializers.at(parts[k].zp).dtype() == xt;
    }
    if (!ok || total != c || (xt != DType::UInt8 && xt != DType::Int8)) continue;
    // The table: each channel's 256 dequantized values through the chain, by the reference kernels.
    std::optional<Tensor> table;
    try {
      Tensor bytes(xt, {256});
      for (int b = 0; b < 256; ++b) static_cast<uint8_t*>(bytes.raw())[b] = static_cast<uint8_t>(b);
      Tensor x(DType::Float32, {1, c, 256, 1});
      int64_t c0 = 0;
      for (size_t k = 0; k < parts.size() && ok; ++k) {
        auto v = evaluateNodeAt(*parts[k].node, opset,
                                {&bytes, g.initializers.find(parts[k].scale), g.initializers.find(parts[k].zp)});
        if (!v || v->size() != 1 || (*v)[0].dtype() != DType::Float32 || (*v)[0].numel() != 256) {
          ok = false;
          break;
        }
        for (int64_t ch = c0; ch < c0 + widths[k]; ++ch)
          std::memcpy(x.data<float>() + ch * 256, (*v)[0].data<float>(), 256 * sizeof(float));
        c0 += widths[k];
      }
      std::vector<const Tensor*> bn_in{&x};
      for (size_t k = 1; k <= 4; ++k) bn_in.push_back(g.initializers.find(bn->inputs[k]));
      auto y = ok ? evaluateNodeAt(*bn, opset, bn_in) : std::nullopt;
      if (y && y->size() == 1 && relu) y = evaluateNodeAt(*relu, opset, {&(*y)[0]});
      if (y && y->size() == 1)
        y = evaluateNodeAt(q, opset, {&(*y)[0], g.initializers.find(q.inputs[1]), g.initializers.find(q.inputs[2])});
      if (y && y->size() == 1 && (*y)[0].dtype() == *yt && (*y)[0].numel() == c * 256) table = (*y)[0].reshaped({c, 256});
    } catch (const Error&) {
      table.reset();
    }
    if (!table) continue;
    std::vector<Node> replacement;
    std::string x = parts[0].q;
    if (cat) {
      Node m = *cat;
      m.inputs.clear();
      for (const auto& d : parts) m.inputs.push_back(d.q);
      x = g.uniqueName(cat->outputs[0] + "_q");
      m.outputs = {x};
      replacement.push_back(std::move(m));
    }
    Node f;
    f.domain = kInternalDomain;
    f.op_type = "QLutChannels";
    f.name = q.name;
    const std::string tn = g.uniqueName(q.outputs[0] + "_channel_lut");
    g.initializers.set(tn, std::move(*table));
    f.inputs = {x, tn};
    f.outputs = {q.outputs[0]};
    f.setAttr("axis", int64_t{1});
    replacement.push_back(std::move(f));
    // In the Q's place (every x_i is ready there); the float chain, now unread, goes (its
    // DequantizeLinears with removeDeadNodes, where nothing else reads them).
    std::vector<std::string> chain_outputs = {bn->outputs[0]};
    if (relu) chain_outputs.push_back(relu->outputs[0]);
    if (cat) chain_outputs.push_back(cat->outputs[0]);
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(qi));
    g.nodes.insert(g.nodes.begin() + static_cast<std::ptrdiff_t>(qi), replacement.begin(), replacement.end());
    qi += replacement.size() - 1;
    for (const auto& o : chain_outputs) {
      const int pi = producerIndex(g, o);
      if (pi < 0) continue;
      g.nodes.erase(g.nodes.begin() + pi);
      if (static_cast<size_t>(pi) < qi) --qi;
    }
    ++fused;
  }
  return fused;
}

// DQ(x) * gate -> Q, per-tensor 8-bit parameters, where the gate is a lutChain of another 8-bit
// tensor g (a Sigmoid of a dequantized tensor: a squeeze-excite block's scaling) or a second
// dequantized tensor, becomes lwc.internal.QMulLut(x, x_scale, x_zp, g, table, y_scale, y_zp):
// table the gate's 256 float values (lutValues), the product and its quantization the reference
// Mul's and QuantizeLinear's float operations, so the same bytes. The Mul's output is read by the
// Q alone. Runs after the NHWC conversion, on whatever layout the operands have.
int fuseQMulLut(Graph& g, int64_t opset) {
  int fused = 0;
  for (size_t qi = 0; qi < g.nodes.size(); ++qi) {
    const Node& q = g.nodes[qi];
    if (!scalarQuantize(g, q)) continue;
    const int mi = producerIndex(g, q.inputs[0]);
    if (mi < 0 || useCount(g, q.inputs[0]) != 1) continue;
    const Node& mul = g.nodes[static_cast<size_t>(mi)];
    if (mul.op_type != "Mul" || !mul.domain.empty() || mul.inputs.size() != 2 || mul.inputs[0] == mul.inputs[1]) continue;
    for (size_t k = 0; k < 2; ++k) {
      auto dx = dqProducing(g, mul.inputs[k]);
      if (!dx || !isScalarConst(g, dx->scale) || !isScalarConst(g, dx->zp)) continue;
      const DType xt = g.initializers.at(dx->zp).dtype();
      if (xt != DType::UInt8 && xt != DType::Int8) continue;
      auto gate = lutChain(g, mul.inputs[1 - k], static_cast<size_t>(mi), nullptr);
      if (!gate || gate->root.node == dx->node) continue;
      auto table = lutValues(g, *gate, opset, nullptr);
      if (!table || table->dtype() != DType::Float32) continue;
      Node f;
      f.domain = kInternalDomain;
      f.op_type = "QMulLut";
      f.name = mul.name;
      const std::string tn = g.uniqueName(mul.outputs[0] + "_gate");
      g.initializers.set(tn, std::move(*table));
      f.inputs = {dx->q, dx->scale, dx->zp, gate->root.q, tn, q.inputs[1], q.inputs[2]};
      f.outputs = {q.outputs[0]};
      const LutChain erase{gate->root, [&] {
                             auto e = gate->nodes;
                             e.insert(static_cast<size_t>(mi));
                             return e;
                           }()};
      g.nodes[qi] = f;
      qi = eraseChain(g, erase, qi);
      ++fused;
      break;
    }
  }
  return fused;
}

// QMulLut(x, .., g, ..) where one of x and g is a QLut of the other (SiLU once `lwc quantize` has
// quantized the Sigmoid's output: Q(DQ(x) * DQ(Q(Sigmoid(DQ(x)))))) is again a function of each
// byte of one tensor: one QLut, its table the QMulLut kernel's own operations on the 256 bytes
// (the reference DequantizeLinear, the gate's table, the float product, QuantizeLinear).
int fuseSelfGatedLookups(Graph& g) {
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& m = g.nodes[i];
    if (m.domain != kInternalDomain || m.op_type != "QMulLut" || m.inputs.size() != 7) continue;
    const std::string &xq = m.inputs[0], &gq = m.inputs[3];
    const int xi = producerIndex(g, xq), gi = producerIndex(g, gq);
    auto isLutOf = [&](int li, const std::string& of) {
      if (li < 0) return false;
      const Node& l = g.nodes[static_cast<size_t>(li)];
      return l.domain == kInternalDomain && l.op_type == "QLut" && l.inputs.size() == 2 && l.inputs[0] == of;
    };
    const bool gate_of_x = isLutOf(gi, xq), x_of_gate = !gate_of_x && isLutOf(xi, gq);
    if (!gate_of_x && !x_of_gate) continue;
    const Node& lut = g.nodes[static_cast<size_t>(gate_of_x ? gi : xi)];
    const Tensor* inner = g.initializers.find(lut.inputs[1]);
    const Tensor *sx = g.initializers.find(m.inputs[1]), *zx = g.initializers.find(m.inputs[2]);
    const Tensor *table = g.initializers.find(m.inputs[4]), *sy = g.initializers.find(m.inputs[5]), *zy = g.initializers.find(m.inputs[6]);
    if (!inner || !sx || !zx || !table || !sy || !zy || inner->numel() != 256 || table->numel() != 256 ||
        table->dtype() != DType::Float32 || sx->dtype() != DType::Float32 || sy->dtype() != DType::Float32 ||
        sx->numel() != 1 || sy->numel() != 1 || zx->numel() != 1 || zy->numel() != 1)
      continue;
    const DType xt = zx->dtype(), yt = zy->dtype();
    if ((xt != DType::UInt8 && xt != DType::Int8) || (yt != DType::UInt8 && yt != DType::Int8)) continue;
    auto value = [](DType t, uint8_t byte) { return t == DType::Int8 ? int32_t(int8_t(byte)) : int32_t(byte); };
    const float sxv = sx->data<float>()[0], syv = sy->data<float>()[0];
    const int32_t zxv = static_cast<int32_t>(zx->at(0)), zyv = static_cast<int32_t>(zy->at(0));
    const quant::QRange range = yt == DType::Int8 ? quant::QRange{-128, 127} : quant::QRange{0, 255};
    const auto* L = static_cast<const uint8_t*>(inner->raw());
    const float* T = table->data<float>();
    Tensor out(yt, {256});
    for (int b = 0; b < 256; ++b) {
      const uint8_t xb = gate_of_x ? static_cast<uint8_t>(b) : L[b], gb = gate_of_x ? L[b] : static_cast<uint8_t>(b);
      const float v = T[gb] * quant::dequantizeValue(value(xt, xb), zxv, sxv);
      static_cast<uint8_t*>(out.raw())[b] = static_cast<uint8_t>(quant::quantizeValue(v, syv, zyv, range));
    }
    // The inner QLut stays for any other reader (removeDeadNodes drops it otherwise).
    g.nodes[i] = lutNode(g, m.name, lut.inputs[0], std::move(out), m.outputs[0]);
    ++fused;
  }
  return fused;
}

// DQ(x) -> GlobalAvgPoolNhwc -> Q with per-tensor parameters (8-bit x and y), the pooling's output
// read by the Q alone, becomes lwc.internal.QGlobalAvgPoolNhwc(x, x_scale, x_zp, y_scale, y_zp):
// integer sums over the 8-bit input instead of a float copy of it (the head of a classifier, the
// squeeze of a squeeze-excite block). Runs after the NHWC conversion made the pooling NHWC.
int fuseQGlobalAvgPool(Graph& g) {
  int fused = 0;
  for (size_t qi = 0; qi < g.nodes.size(); ++qi) {
    const Node& q = g.nodes[qi];
    if (!scalarQuantize(g, q)) continue;
    const int pi = producerIndex(g, q.inputs[0]);
    if (pi < 0) continue;
    const Node& pool = g.nodes[static_cast<size_t>(pi)];
    if (pool.domain != kInternalDomain || pool.op_type != "GlobalAvgPoolNhwc" || pool.outputs.size() != 1 ||
        g.isGraphOutput(q.inputs[0]) || useCount(g, q.inputs[0]) != 1)
      continue;
    auto dx = dqProducing(g, pool.inputs[0]);
    if (!dx || !isScalarConst(g, dx->scale) || !isScalarConst(g, dx->zp)) continue;
    const DType xt = g.initializers.at(dx->zp).dtype();
    if (xt != DType::UInt8 && xt != DType::Int8) continue;
    Node f;
    f.domain = kInternalDomain;
    f.op_type = "QGlobalAvgPoolNhwc";
    f.name = pool.name;
    f.inputs = {dx->q, dx->scale, dx->zp, q.inputs[1], q.inputs[2]};
    f.outputs = {q.outputs[0]};
    g.nodes[qi] = f;  // the Q's place, after the pooling's input
    g.nodes.erase(g.nodes.begin() + pi);
    if (static_cast<size_t>(pi) < qi) --qi;
    ++fused;
  }
  return fused;
}

// ------------------------------------------------------------------ NHWC conversion

// True where the graph declares `v` with a shape whose rank is not 4: a Conv on such an input is
// left to its reference kernel, whose error names the Conv, not an inserted layout Transpose.
bool notRank4(const Graph& g, const std::string& v) {
  const ValueInfo* vi = g.findValueInfo(v);
  return vi && vi->shape && vi->shape->size() != 4;
}

bool convEligible(const Graph& g, const Node& n) {
  if (n.op_type != "Conv" || !n.domain.empty() || n.inputs.size() < 2 || notRank4(g, n.inputs[0])) return false;
  const Tensor* w = g.initializers.find(n.inputs[1]);
  if (!w || w->dtype() != DType::Float32 || w->rank() != 4 || w->numel() == 0) return false;
  if (n.hasInput(2) && !isFloatConst(g, n.inputs[2], w->dim(0))) return false;
  const int64_t group = n.attrInt("group", 1);
  if (group < 1 || w->dim(0) % group != 0) return false;
  const auto ks = n.attrInts("kernel_shape", {w->dim(2), w->dim(3)});
  return ks.size() == 2 && ks[0] == w->dim(2) && ks[1] == w->dim(3);
}

int convertConvs(Graph& g) {
  int converted = 0;
  std::vector<Node> out;
  out.reserve(g.nodes.size() * 2);
  std::vector<Node> nodes = std::move(g.nodes);
  g.nodes.clear();
  // uniqueName() looks at g.nodes: keep every node placed so far there, so new names never collide.
  for (auto& n : nodes) g.nodes.push_back(n);
  for (auto& n : nodes) {
    if (!convEligible(g, n)) {
      out.push_back(std::move(n));
      continue;
    }
    const std::string x_nhwc = g.uniqueName(n.inputs[0] + "_nhwc");
    const std::string y_nhwc = g.uniqueName(n.outputs[0] + "_nhwc");
    out.push_back(makeTranspose(g, n.inputs[0], x_nhwc, kToNhwc));
    g.nodes.push_back(out.back());  // reserve the new names
    Node c = n;
    c.domain = kInternalDomain;
    c.op_type = "ConvNhwc";
    c.inputs[0] = x_nhwc;
    const std::string y = c.outputs[0];
    c.outputs[0] = y_nhwc;
    out.push_back(std::move(c));
    out.push_back(makeTranspose(g, y_nhwc, y, kToNchw));
    g.nodes.push_back(out.back());
    ++converted;
  }
  g.nodes = std::move(out);
  return converted;
}

// QLinearConv with constant int8 weights and per-tensor activation parameters runs as
// lwc.internal.QLinearConvNhwc between Transposes, like the float convolutions.
int convertQConvs(Graph& g) {
  int converted = 0;
  std::vector<Node> nodes = std::move(g.nodes);
  g.nodes.clear();
  for (auto& n : nodes) g.nodes.push_back(n);
  std::vector<Node> out;
  for (auto& n : nodes) {
    bool ok = n.op_type == "QLinearConv" && n.domain.empty() && n.inputs.size() >= 8 && !notRank4(g, n.inputs[0]);
    const Tensor* w = ok ? g.initializers.find(n.inputs[3]) : nullptr;
    ok = ok && w && w->rank() == 4 && (w->dtype() == DType::Int8 || w->dtype() == DType::UInt8);
    for (size_t k : {1, 2, 6, 7}) ok = ok && isScalarConst(g, n.inputs[k]);
    if (ok) {
      const auto ks = n.attrInts("kernel_shape", {w->dim(2), w->dim(3)});
      ok = ks.size() == 2 && ks[0] == w->dim(2) && ks[1] == w->dim(3) && n.attrString("auto_pad", "NOTSET") == "NOTSET";
    }
    if (!ok) {
      out.push_back(std::move(n));
      continue;
    }
    const std::string x_nhwc = g.uniqueName(n.inputs[0] + "_nhwc");
    const std::string y_nhwc = g.uniqueName(n.outputs[0] + "_nhwc");
    out.push_back(makeTranspose(g, n.inputs[0], x_nhwc, kToNhwc));
    g.nodes.push_back(out.back());
    Node c = n;
    c.domain = kInternalDomain;
    c.op_type = "QLinearConvNhwc";
    c.inputs[0] = x_nhwc;
    const std::string y = c.outputs[0];
    c.outputs[0] = y_nhwc;
    out.push_back(std::move(c));
    out.push_back(makeTranspose(g, y_nhwc, y, kToNchw));
    g.nodes.push_back(out.back());
    ++converted;
  }
  g.nodes = std::move(out);
  return converted;
}

const std::set<std::string> kUnary = {"Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu",
                                      "Selu", "Tanh", "Neg", "Abs", "Exp", "Log", "Sqrt", "Erf", "Identity",
                                      "Softplus", "Mish", "Gelu", "Celu"};
const std::set<std::string> kBinary = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow", "Sum", "PRelu"};

const Node* producerOf(const Graph& g, const std::string& v) {
  for (const auto& n : g.nodes)
    for (const auto& o : n.outputs)
      if (o == v) return &n;
  return nullptr;
}

bool isToNchw(const Node* n) {
  return n && n->op_type == "Transpose" && n->domain.empty() && n->attrInts("perm") == kToNchw;
}

// The reduced axes of a ReduceMean / ReduceSum / ReduceMax / ReduceMin `n` when they are exactly
// the spatial axes 2 and 3 of a 4-D NCHW input (attribute, or a constant second input); nullopt
// otherwise. Those reductions visit each channel's values in the same (h, w) order in NHWC, over
// axes 1 and 2, so the result's bits are the same.
std::optional<bool> reducesSpatialAxes(const Graph& g, const Node& n) {
  const std::string& op = n.op_type;
  if (!n.domain.empty() || (op != "ReduceMean" && op != "ReduceSum" && op != "ReduceMax" && op != "ReduceMin") ||
      n.outputs.size() != 1)
    return std::nullopt;
  std::vector<int64_t> axes;
  if (n.hasInput(1)) {
    const Tensor* t = g.isGraphInput(n.inputs[1]) ? nullptr : g.initializers.find(n.inputs[1]);
    if (!t || t->dtype() != DType::Int64 || t->rank() != 1) return std::nullopt;
    axes.assign(t->data<int64_t>(), t->data<int64_t>() + t->numel());
  } else {
    if (n.inputs.size() > 2) return std::nullopt;
    axes = n.attrInts("axes");
  }
  for (int64_t& a : axes)
    if (a < 0) a += 4;
  std::sort(axes.begin(), axes.end());
  if (axes != std::vector<int64_t>{2, 3}) return std::nullopt;
  return n.attrInt("keepdims", 1) != 0;
}

// Sizes of the rank-4 values, as keys that are equal only where the sizes are: a known size as its
// number; a symbolic one by the name the graph gives it ("$H"), carried through the ops that keep
// it and through convolutions and pools as "f(in,a,s)" for floor((in + a) / s) + 1 (a = the pads'
// sum - dilation * (kernel - 1) - 1), so that the two branches of a residual block on images of
// any size get the same key; anything else a key of its own. ONNX's inference names every unknown
// size afresh (unk__N), which says nothing, so such names count as unknown.
using SizeKeys = std::unordered_map<std::string, std::vector<std::string>>;

SizeKeys sizeKeys(const Graph& g, const ValueTypes& types) {
  SizeKeys keys;
  auto base = [&](const std::string& v) -> const std::vector<std::string>* {
    if (auto it = keys.find(v); it != keys.end()) return &it->second;
    const auto t = types.find(v);
    if (t == types.end() || !t->second.shape || t->second.shape->size() != 4) return nullptr;
    std::vector<std::string> k;
    for (size_t d = 0; d < 4; ++d) {
      const Dim& dim = (*t->second.shape)[d];
      if (dim.known()) k.push_back(std::to_string(dim.value));
      else if (!dim.param.empty() && dim.param.rfind("unk__", 0) != 0) k.push_back("$" + dim.param);
      else k.push_back("?" + v + "#" + std::to_string(d));
    }
    return &keys.emplace(v, std::move(k)).first->second;
  };
  for (const Node& n : g.nodes) {
    if (!n.domain.empty() || n.outputs.empty() || n.inputs.empty() || n.inputs[0].empty()) continue;
    const std::vector<std::string>* in = base(n.inputs[0]);
    const std::vector<std::string>* out = base(n.outputs[0]);
    if (!in || !out) continue;
    std::vector<std::string> k = *out;
    const std::string& op = n.op_type;
    if (kUnary.count(op) || op == "BatchNormalization" || op == "Dropout") {
      k = *in;
    } else if (kBinary.count(op) && n.inputs.size() == 2) {
      const std::vector<std::string>* b = base(n.inputs[1]);
      if (!b) continue;
      for (size_t d = 0; d < 4; ++d)  // equal sizes, or one side 1 (broadcast): the other side's
        if ((*in)[d] == (*b)[d] || (*b)[d] == "1") k[d] = (*in)[d];
        else if ((*in)[d] == "1") k[d] = (*b)[d];
    } else if ((op == "Conv" || op == "MaxPool" || op == "AveragePool") && n.attrString("auto_pad", "NOTSET") == "NOTSET" &&
               n.attrInt("ceil_mode", 0) == 0) {
      std::vector<int64_t> ks = n.attrInts("kernel_shape");
      if (ks.empty() && op == "Conv" && n.inputs.size() > 1)
        if (const Tensor* w = g.initializers.find(n.inputs[1]); w && w->rank() == 4) ks = {w->dim(2), w->dim(3)};
      const auto st = n.attrInts("strides", {1, 1}), dl = n.attrInts("dilations", {1, 1}), pd = n.attrInts("pads", {0, 0, 0, 0});
      if (ks.size() != 2 || st.size() != 2 || dl.size() != 2 || pd.size() != 4) continue;
      k[0] = (*in)[0];
      if (op != "Conv") k[1] = (*in)[1];
      for (size_t d = 0; d < 2; ++d) {
        const int64_t a = pd[d] + pd[d + 2] - dl[d] * (ks[d] - 1) - 1;
        const std::string& i = (*in)[d + 2];
        if (!(*out)[d + 2].empty() && std::isdigit(static_cast<unsigned char>((*out)[d + 2][0]))) continue;  // known
        k[d + 2] = st[d] == 1 && a == -1 ? i : "f(" + i + "," + std::to_string(a) + "," + std::to_string(st[d]) + ")";
      }
    } else {
      continue;
    }
    keys[n.outputs[0]] = std::move(k);
  }
  return keys;
}

// True when the sizes of `a` and `b` are provably equal in every dimension (sizeKeys), so that an
// Add of the two cannot broadcast.
bool sameSizes(const SizeKeys& keys, const std::string& a, const std::string& b) {
  const auto ia = keys.find(a), ib = keys.find(b);
  return ia != keys.end() && ib != keys.end() && ia->second == ib->second;
}

// Moves a to-NCHW Transpose below node `i` when every data input of the node is such a transpose
// (or a constant, which is permuted). Returns true when the graph changed. A binary node whose two
// operands have provably equal sizes (sameSizes of the NCHW values it read) has its NHWC output
// named in `same_shape`: only such an Add can become a convolution's residual post-op, which
// needs the residual in the output's own shape.
bool pushThrough(Graph& g, size_t i, const SizeKeys& sizes, std::set<std::string>& same_shape) {
  Node& n = g.nodes[i];
  const bool qadd = n.domain == kInternalDomain && n.op_type == "QAdd";
  const bool qlut = n.domain == kInternalDomain && n.op_type == "QLut";
  // Per-channel tables along axis 1: layout-free but for the axis, which becomes NHWC's 3.
  const bool qlutc = n.domain == kInternalDomain && n.op_type == "QLutChannels" && n.attrInt("axis", 1) == 1;
  if (!n.domain.empty() && !qadd && !qlut && !qlutc) return false;
  const std::string& op = n.op_type;
  // Per-tensor QuantizeLinear/DequantizeLinear are elementwise with scalar parameters: layout-free.
  const bool qdq = (op == "QuantizeLinear" || op == "DequantizeLinear") && n.inputs.size() >= 2 &&
                   isScalarConst(g, n.inputs[1]) && (!n.hasInput(2) || isScalarConst(g, n.inputs[2]));
  const bool unary = (kUnary.count(op) != 0 && n.domain.empty()) || qdq || qlut || qlutc;
  const bool binary = kBinary.count(op) != 0 || qadd;
  // An AveragePool with ceil_mode and count_include_pad divides a window that overhangs the pads
  // by the taps within input + pads, which oneDNN's pooling cannot: it stays an NCHW op for its
  // reference kernel (the NHWC one stopped the run, even on the model quantize wrote).
  const bool pool = (op == "MaxPool" || op == "AveragePool") && n.outputs.size() == 1 &&
                    n.attrInts("kernel_shape").size() == 2 &&
                    !(op == "AveragePool" && n.attrInt("ceil_mode", 0) != 0 && n.attrInt("count_include_pad", 0) != 0);
  const bool gap = op == "GlobalAveragePool";
  const bool concat = op == "Concat";
  const std::optional<bool> reduce_keepdims = reducesSpatialAxes(g, n);
  const bool reduce = reduce_keepdims.has_value();
  if (!unary && !binary && !pool && !gap && !concat && !reduce) return false;
  if (n.outputs.size() != 1) return false;
  if (concat) {
    const int64_t axis = n.attrInt("axis", 1);
    if (axis < -4 || axis > 3) return false;
  }
  // Which inputs are data inputs that must be NHWC?
  size_t data_inputs = unary || pool || gap || reduce ? 1 : n.inputs.size();
  std::vector<std::string> new_inputs = n.inputs;
  bool any_transposed = false;
  for (size_t k = 0; k < data_inputs; ++k) {
    if (n.inputs[k].empty()) continue;
    const Node* p = producerOf(g, n.inputs[k]);
    if (isToNchw(p)) {
      new_inputs[k] = p->inputs[0];
      any_transposed = true;
      continue;
    }
    const Tensor* c = g.initializers.find(n.inputs[k]);
    if (!binary || !c) return false;
    if (c->numel() == 1 && c->rank() == 0) continue;  // scalar: layout-free
    if (c->rank() > 4) return false;
    const std::string cn = g.uniqueName(n.inputs[k] + "_nhwc");
    g.initializers.set(cn, transposeToNhwc(*c));
    new_inputs[k] = cn;
  }
  if (!any_transposed) return false;
  const bool operands_same_shape = binary && n.inputs.size() == 2 && sameSizes(sizes, n.inputs[0], n.inputs[1]);
  if (reduce) {  // over NHWC's axes 1 and 2
    if (g.nodes[i].hasInput(1)) {
      const std::string an = g.uniqueName(new_inputs[1] + "_nhwc");
      g.initializers.set(an, Tensor::fromVector<int64_t>({2}, {1, 2}));
      new_inputs[1] = an;
    } else {
      g.nodes[i].setAttr("axes", std::vector<int64_t>{1, 2});
    }
    if (!*reduce_keepdims) {  // [N, C] in either layout: no Transpose after
      g.nodes[i].inputs = new_inputs;
      return true;
    }
  }
  Node& m = g.nodes[i];  // initializers.set does not move nodes; re-take the reference for clarity
  m.inputs = new_inputs;
  const std::string y = m.outputs[0];
  const std::string y_nhwc = g.uniqueName(y + "_nhwc");
  m.outputs[0] = y_nhwc;
  if (operands_same_shape) same_shape.insert(y_nhwc);
  if (pool) {
    m.domain = kInternalDomain;
    m.setAttr("mode", std::string(op == "MaxPool" ? "max" : "avg"));
    m.op_type = "PoolNhwc";
  } else if (gap) {
    m.domain = kInternalDomain;
    m.op_type = "GlobalAvgPoolNhwc";
  } else if (concat) {
    int64_t axis = m.attrInt("axis", 1);
    if (axis < 0) axis += 4;
    m.setAttr("axis", kToNchw[static_cast<size_t>(axis)]);
  } else if (qlutc) {
    m.setAttr("axis", int64_t{3});
  }
  g.nodes.insert(g.nodes.begin() + static_cast<std::ptrdiff_t>(i) + 1, makeTranspose(g, y_nhwc, y, kToNchw));
  return true;
}

// T_nhwc(T_nchw(x)) -> x for every reader of the outer transpose.
bool cancelPairs(Graph& g) {
  bool changed = false;
  for (auto& n : g.nodes) {
    if (n.op_type != "Transpose" || !n.domain.empty() || n.attrInts("perm") != kToNhwc) continue;
    const Node* p = producerOf(g, n.inputs[0]);
    if (!isToNchw(p) || g.isGraphOutput(n.outputs[0])) continue;
    replaceUses(g, std::string(n.outputs[0]), std::string(p->inputs[0]));  // copies: it rewrites inputs
    changed = true;
  }
  return changed;
}

// Two Transposes of the same value with the same perm (the to-NHWC copies convertConvs puts in
// front of each convolution that reads a graph input or another non-NHWC value) become one: the
// later one's readers read the earlier one's output.
bool mergeDuplicateTransposes(Graph& g) {
  bool changed = false;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& a = g.nodes[i];
    if (a.op_type != "Transpose" || !a.domain.empty() || a.inputs.size() != 1 || a.outputs.size() != 1) continue;
    for (size_t j = i + 1; j < g.nodes.size(); ++j) {
      const Node& b = g.nodes[j];
      if (b.op_type != "Transpose" || !b.domain.empty() || b.inputs != a.inputs || b.outputs.size() != 1 ||
          b.attrInts("perm") != a.attrInts("perm") || g.isGraphOutput(b.outputs[0]) || useCount(g, b.outputs[0]) == 0)
        continue;
      replaceUses(g, std::string(b.outputs[0]), std::string(a.outputs[0]));  // copies: it rewrites inputs
      changed = true;
    }
  }
  return changed;
}

// ------------------------------------------------------------------ MatMul + bias

// MatMul(A, B) -> Add(c) with a constant float32 B [K, N] and c one value per column ([N] or [1, N]),
// a Linear layer on 3-D inputs as exporters write it, becomes lwc.internal.MatMul(A, B, c): the
// product and the bias in one kernel (the same float additions as the Add, on the rows just
// written) instead of a second pass and a second tensor.
int fuseMatMulBias(Graph& g) {
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& mm = g.nodes[i];
    if (mm.op_type != "MatMul" || !mm.domain.empty() || mm.inputs.size() != 2 || mm.outputs.size() != 1) continue;
    const Tensor* b = g.isGraphInput(mm.inputs[1]) ? nullptr : g.initializers.find(mm.inputs[1]);
    if (!b || b->dtype() != DType::Float32 || b->rank() != 2) continue;
    const auto ba = fusableBiasAdd(g, mm.outputs[0], b->dim(1));
    if (!ba) continue;
    Node f = mm;
    f.domain = kInternalDomain;
    f.inputs.push_back(ba->bias);
    f.outputs = g.nodes[static_cast<size_t>(ba->node)].outputs;
    g.nodes[i] = f;
    g.nodes.erase(g.nodes.begin() + ba->node);
    if (static_cast<size_t>(ba->node) < i) --i;
    ++fused;
  }
  return fused;
}

// ------------------------------------------------------------------ MatMul of a transposed B

// Transpose(Bt) swapping only the last two axes, read by nothing but MatMul(A, ·) as its B (the kᵀ of
// attention as exporters write it), becomes lwc.internal.MatMulTransB(A, Bt): the product reads Bt's
// rows instead of a transposed copy written first. A constant Bt is left alone (weight matrices
// have their own paths).
int fuseMatMulTransB(Graph& g) {
  int fused = 0;
  for (auto& mm : g.nodes) {
    if (mm.op_type != "MatMul" || !mm.domain.empty() || mm.inputs.size() != 2 || mm.outputs.size() != 1) continue;
    const int ti = producerIndex(g, mm.inputs[1]);
    if (ti < 0 || g.isGraphOutput(mm.inputs[1]) || useCount(g, mm.inputs[1]) != 1) continue;
    const Node& t = g.nodes[static_cast<size_t>(ti)];
    if (t.op_type != "Transpose" || !t.domain.empty() || t.inputs.size() != 1 || !t.hasAttr("perm") ||
        g.initializers.contains(t.inputs[0]))
      continue;
    const std::vector<int64_t> perm = t.attrInts("perm");
    const auto r = static_cast<int64_t>(perm.size());
    bool swaps_last = r >= 2 && perm[r - 1] == r - 2 && perm[r - 2] == r - 1;
    for (int64_t k = 0; swaps_last && k + 2 < r; ++k) swaps_last = perm[k] == k;
    if (!swaps_last) continue;
    mm.domain = kInternalDomain;
    mm.op_type = "MatMulTransB";
    mm.inputs[1] = t.inputs[0];
    ++fused;
  }
  return fused;
}

// MatMulTransB -> Mul|Div by a float32 scalar constant (attention's scores times 1/sqrt(d), or
// divided by sqrt(d)) becomes the MatMulTransB with attributes scale / scale_divides: each product's
// outputs are scaled right after they are computed, the same operation per element as the node
// (so the same bits), without a separate pass over the scores. The product must have no other
// reader. Needs the product's type to be float32: Mul and Div take operands of one type, so a
// float32 scalar says so (the kernel refuses anything else).
int fuseMatMulScale(Graph& g) {
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& op = g.nodes[i];
    if ((op.op_type != "Mul" && op.op_type != "Div") || !op.domain.empty() || op.inputs.size() != 2 ||
        op.outputs.size() != 1)
      continue;
    for (size_t side = 0; side < 2; ++side) {
      if (op.op_type == "Div" && side == 1) break;  // s / product is not a scaling
      const std::string& prod = op.inputs[side];
      const Tensor* c = g.initializers.find(op.inputs[1 - side]);
      if (!c || c->dtype() != DType::Float32 || c->numel() != 1 || c->rank() > 1 || g.isGraphInput(op.inputs[1 - side]))
        continue;
      const int pi = producerIndex(g, prod);
      if (pi < 0 || g.isGraphOutput(prod) || useCount(g, prod) != 1) continue;
      Node& mm = g.nodes[static_cast<size_t>(pi)];
      if (mm.domain != kInternalDomain || mm.op_type != "MatMulTransB" || mm.hasAttr("scale")) continue;
      mm.setAttr("scale", c->data<float>()[0]);
      if (op.op_type == "Div") mm.setAttr("scale_divides", int64_t{1});
      mm.outputs[0] = op.outputs[0];
      g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
      --i;
      ++fused;
      break;
    }
  }
  return fused;
}

// A MatMul of two activations (or a MatMulTransB) whose only reader is a Transpose [0, 2, 1, 3]
// (attention's heads merged back: [B, H, T, D] -> [B, T, H, D]) writes each product straight into
// the transposed layout: MatMul becomes lwc.internal.MatMulMergeHeads, MatMulTransB gets
// merge_heads = 1. The same products, placed where the Transpose would copy them: same bits.
int fuseMatMulMergeHeads(Graph& g) {
  int fused = 0;
  const std::vector<int64_t> kSwap12{0, 2, 1, 3};
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& t = g.nodes[i];
    if (t.op_type != "Transpose" || !t.domain.empty() || t.inputs.size() != 1 || t.outputs.size() != 1 ||
        t.attrInts("perm") != kSwap12)
      continue;
    const int pi = producerIndex(g, t.inputs[0]);
    if (pi < 0 || g.isGraphOutput(t.inputs[0]) || useCount(g, t.inputs[0]) != 1) continue;
    Node& mm = g.nodes[static_cast<size_t>(pi)];
    const bool onnx_mm = mm.op_type == "MatMul" && mm.domain.empty();
    const bool trans_b = mm.op_type == "MatMulTransB" && mm.domain == kInternalDomain;
    if ((!onnx_mm && !trans_b) || mm.inputs.size() != 2 || mm.outputs.size() != 1 || mm.hasAttr("merge_heads")) continue;
    // Two activations: a constant B takes the oneDNN kernels, which this does not reach.
    if (g.initializers.contains(mm.inputs[0]) || g.initializers.contains(mm.inputs[1])) continue;
    if (onnx_mm) {
      mm.domain = kInternalDomain;
      mm.op_type = "MatMulMergeHeads";
    }
    mm.setAttr("merge_heads", int64_t{1});
    mm.outputs[0] = t.outputs[0];
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    --i;
    ++fused;
  }
  return fused;
}

// ------------------------------------------------------------------ GELU

// The exact GELU as exporters decompose it, x * 0.5 * (1 + erf(x / sqrt(2))):
//   Div(x, sqrt 2) | Mul(x, 1/sqrt 2) -> Erf -> Add(1) -> Mul(x) -> Mul(0.5)   (or Mul(0.5) -> Mul(x))
// becomes lwc.internal.Gelu(x), one oneDNN eltwise pass (gelu_erf) instead of five elementwise ops
// and a scalar erf per element. Every intermediate must have this one reader.
int fuseGelu(Graph& g) {
  // One value of rank 0 or 1: a [1, 1, 1] constant would widen the output's rank, which Gelu(x) keeps.
  auto scalarIs = [&](const std::string& v, double want) {
    const Tensor* t = g.initializers.find(v);
    return t && t->dtype() == DType::Float32 && t->numel() == 1 && t->rank() <= 1 &&
           std::fabs(t->at(0) - want) <= 1e-6 * std::fabs(want);
  };
  // The other input of binary node n (the one that is not v), or "" if n is not binary on v.
  auto other = [](const Node& n, const std::string& v) -> std::string {
    if (n.inputs.size() != 2 || n.outputs.size() != 1) return "";
    if (n.inputs[0] == v) return n.inputs[1];
    if (n.inputs[1] == v) return n.inputs[0];
    return "";
  };
  int fused = 0;
  for (size_t ei = 0; ei < g.nodes.size(); ++ei) {
    const Node& erf = g.nodes[ei];
    if (erf.op_type != "Erf" || !erf.domain.empty() || erf.inputs.size() != 1 || erf.outputs.size() != 1) continue;
    const int di = producerIndex(g, erf.inputs[0]);
    if (di < 0 || soleDefaultReader(g, erf.inputs[0]) != static_cast<int>(ei)) continue;
    const Node& scale = g.nodes[static_cast<size_t>(di)];
    if (!scale.domain.empty() || scale.inputs.size() != 2) continue;
    const std::string x = scale.inputs[0];
    const bool div = scale.op_type == "Div" && scalarIs(scale.inputs[1], std::numbers::sqrt2);
    const bool mul = scale.op_type == "Mul" && scalarIs(scale.inputs[1], 1 / std::numbers::sqrt2);
    if (!div && !mul) continue;
    const int ai = soleDefaultReader(g, erf.outputs[0]);
    if (ai < 0 || g.nodes[ai].op_type != "Add" || !scalarIs(other(g.nodes[ai], erf.outputs[0]), 1.0)) continue;
    const int m1 = soleDefaultReader(g, g.nodes[ai].outputs[0]);
    if (m1 < 0 || g.nodes[m1].op_type != "Mul") continue;
    const std::string o1 = other(g.nodes[m1], g.nodes[ai].outputs[0]);
    const int m2 = soleDefaultReader(g, g.nodes[m1].outputs[0]);
    if (m2 < 0 || g.nodes[m2].op_type != "Mul") continue;
    const std::string o2 = other(g.nodes[m2], g.nodes[m1].outputs[0]);
    const bool x_then_half = o1 == x && scalarIs(o2, 0.5);
    const bool half_then_x = scalarIs(o1, 0.5) && o2 == x;
    if (!x_then_half && !half_then_x) continue;
    Node gelu;
    gelu.domain = kInternalDomain;
    gelu.op_type = "Gelu";
    gelu.name = g.nodes[ei].name;
    gelu.inputs = {x};
    gelu.outputs = {g.nodes[m2].outputs[0]};
    std::vector<size_t> gone{static_cast<size_t>(di), ei, static_cast<size_t>(ai), static_cast<size_t>(m1), static_cast<size_t>(m2)};
    std::sort(gone.begin(), gone.end());
    const size_t at = gone.back();  // where y was produced: every reader of y comes later
    g.nodes[at] = gelu;
    for (auto it = gone.rbegin() + 1; it != gone.rend(); ++it) g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(*it));
    ei = 0;
    ++fused;
  }
  return fused;
}

// ------------------------------------------------------------------ unread optional outputs

// Trailing optional outputs that nothing reads are dropped: Dropout's mask (torch exports it with
// every Dropout; the kernel would fill a bool tensor of the input's size per call), LayerNormalization's
// Mean and InvStdDev (the oneDNN kernel serves Y alone) and MaxPool's Indices.
int dropUnreadOptionalOutputs(Graph& g) {
  const std::set<std::string> read = valuesRead(g);
  int dropped = 0;
  for (auto& n : g.nodes) {
    if (!n.domain.empty() || (n.op_type != "Dropout" && n.op_type != "LayerNormalization" && n.op_type != "MaxPool"))
      continue;
    while (n.outputs.size() > 1 && (n.outputs.back().empty() || !read.count(n.outputs.back()))) {
      n.outputs.pop_back();
      ++dropped;
    }
  }
  return dropped;
}

// ------------------------------------------------------------------ LayerNorm

// How many trailing axes a ReduceMean averages over when they are the last k axes (in any order,
// negative or, where the rank r is known (r >= 0), non-negative) and it keeps the reduced dims;
// nullopt otherwise. (Opset 18's axes input is never seen here: lwc reads opsets above 17 by
// rewriting them into 17, see opset_lowering.cpp, where constant axes become the attribute.)
std::optional<int64_t> trailingMeanAxes(const Node& n, int64_t r) {
  if (n.op_type != "ReduceMean" || !n.domain.empty() || n.inputs.size() != 1 || n.outputs.size() != 1 ||
      n.attrInt("keepdims", 1) != 1)
    return std::nullopt;
  std::vector<int64_t> axes = n.attrInts("axes");
  if (axes.empty()) return std::nullopt;  // all axes
  for (auto& a : axes) {
    if (a >= 0 && r >= 0 && a < r) a -= r;  // as an offset from the end
    if (a >= 0 || (r >= 0 && a < -r)) return std::nullopt;
  }
  std::sort(axes.begin(), axes.end());
  const auto k = static_cast<int64_t>(axes.size());
  for (int64_t j = 0; j < k; ++j)
    if (axes[static_cast<size_t>(j)] != j - k) return std::nullopt;
  return k;
}

// LayerNormalization as exporters write it below opset 17 (torch.onnx at opset 13, the opset
// ONNX Runtime's own LayerNormFusion targets):
//   m = ReduceMean(x) -> d = Sub(x, m) -> Pow(d, 2) -> ReduceMean -> Add(eps) -> Sqrt -> Div(d, .)
//   [-> Mul(gamma)] [-> Add(beta)]
// over the same trailing axes becomes lwc.internal.LayerNorm(x, gamma, beta), one pass of oneDNN's
// layer normalization instead of nine ops, two of them reductions, and four full-size temporaries.
// The same function, computed as LayerNormalization computes it (y = (x - mean) * (1 / sqrt(var +
// eps)) * gamma + beta, statistics in float32), so the bits differ from the nine ops' by rounding.
// Needs float32 x (from the inferred types), trailing axes (negative ones where its rank is not
// known), constant float32 scalars for 2 and eps, and no other reader of any intermediate (d: the
// Pow and the Div). gamma and beta are taken in where x's normalized dims are known.
int fuseLayerNorm(Graph& g, const ValueTypes& types) {
  auto scalarConst = [&](const std::string& v) -> std::optional<float> {
    const Tensor* t = g.isGraphInput(v) ? nullptr : g.initializers.find(v);
    // Rank 0 or 1 (x has at least one axis): a [1, 1, 1, 1] eps or exponent would widen the output.
    if (!t || t->dtype() != DType::Float32 || t->numel() != 1 || t->rank() > 1) return std::nullopt;
    return t->data<float>()[0];
  };
  // The sole reader of v when it is `op` in the default domain with one output, or -1.
  auto next = [&](const std::string& v, const char* op) -> int {
    const int i = soleDefaultReader(g, v);
    if (i < 0) return -1;
    const Node& n = g.nodes[static_cast<size_t>(i)];
    return n.op_type == op && n.outputs.size() == 1 ? i : -1;
  };
  // The constant other input of binary node n (the one that is not v), or nullptr.
  auto constOperand = [&](const Node& n, const std::string& v) -> const Tensor* {
    if (n.inputs.size() != 2 || n.inputs[0] == n.inputs[1]) return nullptr;
    const std::string& c = n.inputs[n.inputs[0] == v ? 1 : 0];
    const Tensor* t = g.isGraphInput(c) ? nullptr : g.initializers.find(c);
    return t && t->dtype() == DType::Float32 ? t : nullptr;
  };
  // Fuses the pattern rooted at the ReduceMean g.nodes[i]. Every other node of the pattern reads
  // its output, so comes later in the (topologically sorted) graph.
  auto fuseAt = [&](size_t i) -> bool {
    const Node& mean = g.nodes[i];
    if (mean.op_type != "ReduceMean" || !mean.domain.empty() || mean.inputs.empty()) return false;
    const std::string x = mean.inputs[0];
    auto xt = types.find(x);
    if (xt == types.end() || xt->second.dtype != DType::Float32) return false;
    const SymShape* xs = xt->second.shape ? &*xt->second.shape : nullptr;
    const int64_t r = xs ? static_cast<int64_t>(xs->size()) : -1;
    const auto k = trailingMeanAxes(mean, r);
    if (!k) return false;
    // The normalized dims, when the inferred type knows them; nullopt leaves gamma and beta as
    // they were (their Mul and Add could broadcast x beyond its shape, which LayerNorm cannot).
    std::optional<Shape> norm;
    if (r >= *k) {
      norm.emplace();
      for (int64_t j = r - *k; j < r && norm; ++j) {
        const Dim& dim = (*xs)[static_cast<size_t>(j)];
        if (dim.known() && dim.value > 0) norm->push_back(dim.value);
        else norm.reset();
      }
    }

    const int sub = next(mean.outputs[0], "Sub");
    if (sub < 0 || g.nodes[sub].inputs.size() != 2 || g.nodes[sub].inputs[0] != x) return false;
    const std::string d = g.nodes[sub].outputs[0];
    if (g.isGraphOutput(d) || useCount(g, d) != 2) return false;
    int pow = -1, div = -1;
    for (size_t k = 0; k < g.nodes.size(); ++k) {
      const Node& n = g.nodes[k];
      if (n.inputs.size() == 2 && n.inputs[0] == d && n.domain.empty() && n.outputs.size() == 1) {
        if (n.op_type == "Pow") pow = static_cast<int>(k);
        if (n.op_type == "Div") div = static_cast<int>(k);
      }
    }
    if (pow < 0 || div < 0 || scalarConst(g.nodes[pow].inputs[1]) != 2.0f) return false;
    const int var = soleReader(g, g.nodes[pow].outputs[0]);
    if (var < 0 || trailingMeanAxes(g.nodes[var], r) != k || g.nodes[var].inputs[0] != g.nodes[pow].outputs[0])
      return false;
    const int add = next(g.nodes[var].outputs[0], "Add");
    if (add < 0) return false;
    const Node& add_n = g.nodes[add];
    const std::optional<float> eps =
        add_n.inputs.size() == 2 ? scalarConst(add_n.inputs[add_n.inputs[0] == g.nodes[var].outputs[0] ? 1 : 0])
                                 : std::nullopt;
    if (!eps || !(*eps >= 0.0f) || !std::isfinite(*eps)) return false;
    const int sqrt = next(add_n.outputs[0], "Sqrt");
    if (sqrt < 0 || soleReader(g, g.nodes[sqrt].outputs[0]) != div || g.nodes[div].inputs[1] != g.nodes[sqrt].outputs[0])
      return false;

    // Optional Mul(gamma) and Add(beta), taken in where the normalized dims are known: constants
    // whose dims, right-aligned against x's, are 1 outside the normalized axes, expanded to the
    // normalized shape. Elsewhere the LayerNorm gets a scalar 1 and 0, and the Mul and Add stay.
    auto affine = [&](const Tensor& c) -> std::optional<Tensor> {
      if (!norm || static_cast<int64_t>(c.rank()) > r) return std::nullopt;
      const Shape& nd = *norm;
      const int64_t axis = r - *k, off = r - static_cast<int64_t>(c.rank());  // x's axes of norm[0], c's axis 0
      std::vector<int64_t> strides(nd.size(), 0);  // c's stride along each normalized axis (0: broadcast)
      int64_t st = 1;
      for (int64_t j = static_cast<int64_t>(c.rank()) - 1; j >= 0; --j) {
        const int64_t cd = c.dim(static_cast<size_t>(j)), xa = off + j;
        if (cd != 1 && (xa < axis || cd != nd[static_cast<size_t>(xa - axis)])) return std::nullopt;
        if (cd != 1) strides[static_cast<size_t>(xa - axis)] = st;
        st *= cd;
      }
      Tensor e(DType::Float32, nd);
      for (int64_t f = 0; f < e.numel(); ++f) {
        int64_t rem = f, src = 0;
        for (size_t j = nd.size(); j-- > 0;) {
          src += (rem % nd[j]) * strides[j];
          rem /= nd[j];
        }
        e.data<float>()[f] = c.data<float>()[src];
      }
      return e;
    };
    std::vector<size_t> gone{i, static_cast<size_t>(sub), static_cast<size_t>(pow), static_cast<size_t>(var),
                             static_cast<size_t>(add), static_cast<size_t>(sqrt), static_cast<size_t>(div)};
    std::string y = g.nodes[div].outputs[0];
    Tensor gamma = norm ? Tensor(DType::Float32, *norm) : Tensor::scalar(1.0f);
    Tensor beta = norm ? Tensor(DType::Float32, *norm) : Tensor::scalar(0.0f);
    std::fill(gamma.data<float>(), gamma.data<float>() + gamma.numel(), 1.0f);
    // y's sole reader `op` by a constant that affine() takes in becomes `into`; y moves past it.
    auto takeIn = [&](const char* op, Tensor& into) {
      const int at = next(y, op);
      const Tensor* c = at >= 0 ? constOperand(g.nodes[static_cast<size_t>(at)], y) : nullptr;
      auto e = c ? affine(*c) : std::nullopt;
      if (!e) return;
      into = *e;
      gone.push_back(static_cast<size_t>(at));
      y = g.nodes[static_cast<size_t>(at)].outputs[0];
    };
    takeIn("Mul", gamma);
    takeIn("Add", beta);
    Node ln;
    ln.domain = kInternalDomain;
    ln.op_type = "LayerNorm";
    ln.name = mean.name;
    ln.inputs = {x, g.uniqueName(x + "_ln_scale"), g.uniqueName(x + "_ln_bias")};
    g.initializers.set(ln.inputs[1], gamma);
    g.initializers.set(ln.inputs[2], beta);
    ln.outputs = {y};
    ln.setAttr("axis", -*k);
    ln.setAttr("epsilon", *eps);
    std::sort(gone.begin(), gone.end());
    const size_t at = gone.back();  // where y was produced: every reader of y comes later
    g.nodes[at] = ln;
    for (auto it = gone.rbegin() + 1; it != gone.rend(); ++it) g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(*it));
    return true;
  };
  int fused = 0;
  for (size_t i = 0; i < g.nodes.size();) {
    if (fuseAt(i))
      ++fused;  // the node now at i is the one after the ReduceMean
    else
      ++i;
  }
  return fused;
}

// ------------------------------------------------------------------ post-op fusion

// True when a float initializer holds NaN or an infinity (inf · 0 and inf − inf are NaN, in any
// layer before a fused activation): values that can make NaN activations. Conservative: a -inf
// that is only added (a class mask) also keeps the activations unfused, which costs speed only.
bool makesNan(const Graph& g) {
  for (const auto& [name, t] : g.initializers.items()) {
    if (t.dtype() != DType::Float32) continue;
    const float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i)
      if (!std::isfinite(p[i])) return true;
  }
  return false;
}

// `same_shape`: the NHWC binary nodes whose operands have one shape (pushThrough). `opset`: the
// model's default-domain opset (0: unknown), which decides whether Clip's bounds are attributes.
int fusePostOps(Graph& g, const std::set<std::string>& same_shape, int64_t opset) {
  // oneDNN's eltwise post-ops turn NaN into a number (relu and clip give 0 or a bound), where
  // ONNX's ops, lwc's own kernels and ONNX Runtime keep it: a model with one NaN weight scored 78 %
  // in lwc and 0 % in ONNX Runtime. Such a graph runs its activations as nodes of their own.
  if (makesNan(g)) return 0;
  int fused = 0;
  bool changed = true;
  while (changed) {
    changed = false;
    for (size_t i = 0; i < g.nodes.size() && !changed; ++i) {
      Node& c = g.nodes[i];
      if (c.domain != kInternalDomain || c.op_type != "ConvNhwc") continue;
      const std::string y = c.outputs[0];
      if (g.isGraphOutput(y)) continue;
      auto ops = c.attr("post_ops") ? std::vector<std::string>(c.attr("post_ops")->strings().begin(), c.attr("post_ops")->strings().end())
                                    : std::vector<std::string>{};
      auto alphas = c.attrFloats("post_alpha"), betas = c.attrFloats("post_beta");
      auto append = [&](const std::string& kind, float alpha, float beta, const std::string& out) {
        ops.push_back(kind);
        alphas.push_back(alpha);
        betas.push_back(beta);
        onnx::AttributeProto po;
        po.set_name("post_ops");
        po.set_type(onnx::AttributeProto::STRINGS);
        for (const auto& s : ops) po.add_strings(s);
        c.removeAttr("post_ops");
        c.attrs.push_back(po);
        c.setAttr("post_alpha", alphas);
        c.setAttr("post_beta", betas);
        c.outputs[0] = out;
      };
      // oneDNN 2.6 keeps one eltwise injector per algorithm in a post-op chain: a second relu (or
      // clip, linear, ...) of other parameters ran with the first one's (LeakyRelu 0.2 -> residual
      // Add -> Relu let negative values through, Clip -> Clip kept the first bounds; a differential
      // run against ONNX Runtime found it). Such an op stays a node of its own.
      auto clashes = [&](const std::string& kind, float alpha, float beta) {
        for (size_t k = 0; k < ops.size(); ++k)
          if (ops[k] == kind && (k >= alphas.size() || k >= betas.size() || alphas[k] != alpha || betas[k] != beta))
            return true;
        return false;
      };
      // SiLU, y * Sigmoid(y) (EfficientNet's activation, as torch exports it), and HardSwish as
      // y * HardSigmoid(y) with alpha 1/6 and beta 1/2 (MobileNetV3's, as torch exports it): y read
      // by the gate and by the Mul of y and the gate's output, which nothing else reads. oneDNN's
      // swish and hardswish.
      if (consumersOf(g, y) == 2) {
        std::string gated;
        const int si = [&] {
          for (size_t k = 0; k < g.nodes.size(); ++k) {
            const Node& n = g.nodes[k];
            if (!n.domain.empty() || n.inputs.size() != 1 || n.inputs[0] != y || n.outputs.size() != 1) continue;
            if (n.op_type == "Sigmoid") gated = "swish";
            else if (n.op_type == "HardSigmoid" && std::abs(n.attrFloat("alpha", 0.2f) - 1.0f / 6.0f) < 1e-6f &&
                     n.attrFloat("beta", 0.5f) == 0.5f)
              gated = "hardswish";
            else continue;
            return static_cast<int>(k);
          }
          return -1;
        }();
        if (si < 0) continue;
        const std::string sg = g.nodes[static_cast<size_t>(si)].outputs[0];
        if (g.isGraphOutput(sg) || consumersOf(g, sg) != 1) continue;
        const int mi = [&] {
          for (size_t k = 0; k < g.nodes.size(); ++k) {
            const Node& m = g.nodes[k];
            if (m.domain.empty() && m.op_type == "Mul" && m.inputs.size() == 2 && m.outputs.size() == 1 &&
                ((m.inputs[0] == y && m.inputs[1] == sg) || (m.inputs[0] == sg && m.inputs[1] == y)))
              return static_cast<int>(k);
          }
          return -1;
        }();
        if (mi < 0 || clashes(gated, gated == "swish" ? 1.0f : 0.0f, 0.0f)) continue;
        append(gated, gated == "swish" ? 1.0f : 0.0f, 0.0f, g.nodes[static_cast<size_t>(mi)].outputs[0]);
        g.nodes.erase(g.nodes.begin() + std::max(si, mi));
        g.nodes.erase(g.nodes.begin() + std::min(si, mi));
        ++fused;
        changed = true;
        continue;
      }
      if (consumersOf(g, y) != 1) continue;
      auto it = std::find_if(g.nodes.begin(), g.nodes.end(), [&](const Node& n) {
        return std::find(n.inputs.begin(), n.inputs.end(), y) != n.inputs.end();
      });
      Node& a = *it;
      if (!a.domain.empty() || a.outputs.size() != 1) continue;
      std::string kind;
      float alpha = 0, beta = 0;
      if (a.op_type == "Relu") {
        kind = "relu";
      } else if (a.op_type == "LeakyRelu") {
        kind = "relu";
        alpha = a.attrFloat("alpha", 0.01f);
      } else if (a.op_type == "Sigmoid") {
        kind = "logistic";
      } else if (a.op_type == "HardSwish") {
        kind = "hardswish";
      } else if (a.op_type == "HardSigmoid") {
        // max(0, min(1, alpha * y + beta)): oneDNN's linear, then clip.
        if (clashes("linear", a.attrFloat("alpha", 0.2f), a.attrFloat("beta", 0.5f)) || clashes("clip", 0.0f, 1.0f)) continue;
        append("linear", a.attrFloat("alpha", 0.2f), a.attrFloat("beta", 0.5f), y);
        kind = "clip";
        alpha = 0.0f;
        beta = 1.0f;
      } else if (a.op_type == "Clip") {
        // Missing bounds are float's extreme finite values, as the Clip kernel and the spec have them
        // (an overflowed output stayed infinite here and became FLT_MAX with --reference).
        float lo = std::numeric_limits<float>::lowest(), hi = std::numeric_limits<float>::max();
        if (opset < 11 && (a.hasAttr("min") || a.hasAttr("max"))) {  // inputs from opset 11 (0: unknown)
          lo = a.attrFloat("min", lo);
          hi = a.attrFloat("max", hi);
        }
        if (a.hasInput(1)) {
          if (!isFloatConst(g, a.inputs[1], 1)) continue;
          lo = g.initializers.at(a.inputs[1]).data<float>()[0];
        }
        if (a.hasInput(2)) {
          if (!isFloatConst(g, a.inputs[2], 1)) continue;
          hi = g.initializers.at(a.inputs[2]).data<float>()[0];
        }
        if (lo > hi) continue;  // max everywhere, which oneDNN's clip does not take (the reference does it)
        kind = "clip";
        alpha = lo;
        beta = hi;
      } else if (a.op_type == "Add" && a.inputs.size() == 2 && c.inputs.size() < 4) {
        const std::string other = a.inputs[0] == y ? a.inputs[1] : a.inputs[0];
        // An Add reading a ConvNhwc output directly was moved into NHWC by pushThrough, so its other
        // operand is NHWC too (a permuted constant is excluded). Only an Add whose operands cannot
        // broadcast: the residual is summed into the convolution's own output (x + GAP(y) adds a
        // [N,1,1,C] value, conv(GAP(x)) + y has the smaller operand on the convolution's side).
        if (other == y || g.initializers.contains(other) || !same_shape.count(a.outputs[0])) continue;
        kind = "add";
        c.inputs.resize(3);
        c.inputs.push_back(other);
      } else {
        continue;
      }
      if (kind != "add" && clashes(kind, alpha, beta)) continue;
      append(kind, alpha, beta, a.outputs[0]);
      g.nodes.erase(it);
      ++fused;
      changed = true;
    }
  }
  return fused;
}

}  // namespace


bool isFusedMatMulBias(const Tensor& c, int64_t n) { return isColumnBias(c, n) && c.rank() <= 2; }
bool isScaledMatMulScale(const Tensor& s, int64_t n) { return s.rank() <= 2 && (s.numel() == 1 || isFusedMatMulBias(s, n)); }

int qdqToQOperator(Graph& g) {
  const int dropped = dropRequantize(g);
  const int fused = fuseQdq(g, /*internal_ops=*/false);
  if (fused || dropped) removeDeadNodes(g);
  topoSort(g);
  return fused;
}

// QLinearConvNhwc -> QAdd (the convolution's output read by nothing else) becomes
// lwc.internal.QLinearConvNhwcAdd(conv inputs, bias or "", r, r_scale, r_zp, c_scale, c_zp,
// y_scale, y_zp){relu}: the residual add of a QDQ block is done as the convolution's outputs are
// written (for the calls lwc's own pointwise kernel runs; the others add after the convolution),
// saving a node and a pass over the tensor. c_scale/c_zp are the QAdd's for the convolution's
// output, r its other operand. Placed where the QAdd was, so r is ready.
int fuseConvQAdd(Graph& g) {
  int fused = 0;
  for (size_t qi = 0; qi < g.nodes.size(); ++qi) {
    const Node& q = g.nodes[qi];
    if (q.domain != kInternalDomain || q.op_type != "QAdd" || q.inputs.size() != 8) continue;
    bool params = true;
    for (size_t k : {1, 2, 4, 5, 6, 7}) params = params && isScalarConst(g, q.inputs[k]);
    if (!params) continue;
    for (int side : {0, 3}) {
      const std::string& y = q.inputs[static_cast<size_t>(side)];
      const int ci = producerIndex(g, y);
      if (ci < 0 || g.isGraphOutput(y) || useCount(g, y) != 1) continue;
      const Node& c = g.nodes[static_cast<size_t>(ci)];
      if (c.domain != kInternalDomain || c.op_type != "QLinearConvNhwc" || c.inputs.size() < 8) continue;
      const int other = side == 0 ? 3 : 0;
      Node f = c;
      f.op_type = "QLinearConvNhwcAdd";
      f.inputs.resize(9);  // the bias, or "" where the convolution has none
      for (int k : {other, other + 1, other + 2, side + 1, side + 2, 6, 7}) f.inputs.push_back(q.inputs[static_cast<size_t>(k)]);
      f.outputs = {q.outputs[0]};
      f.setAttr("relu", q.attrInt("relu", 0));
      g.nodes[qi] = f;
      g.nodes.erase(g.nodes.begin() + ci);
      if (static_cast<size_t>(ci) < qi) --qi;
      ++fused;
      break;
    }
  }
  return fused;
}

// QLinearConvNhwc -> QLut (the convolution's output read by nothing else: an INT8 model's SiLU or
// HardSwish after a convolution) becomes lwc.internal.QLinearConvNhwcLut(conv inputs, bias or "",
// table): the lookup runs on the outputs as the convolution writes them, while they are in cache,
// instead of a pass of its own over the tensor. Only where the table has the convolution's output
// type (the QLut's output is then the same type) and is a constant.
int fuseConvQLut(Graph& g) {
  int fused = 0;
  for (size_t li = 0; li < g.nodes.size(); ++li) {
    const Node& l = g.nodes[li];
    if (l.domain != kInternalDomain || l.op_type != "QLut" || l.inputs.size() != 2 || l.outputs.size() != 1) continue;
    const Tensor* table = g.isGraphInput(l.inputs[1]) ? nullptr : g.initializers.find(l.inputs[1]);
    const std::string& y = l.inputs[0];
    const int ci = producerIndex(g, y);
    if (!table || table->numel() != 256 || ci < 0 || g.isGraphOutput(y) || useCount(g, y) != 1) continue;
    const Node& c = g.nodes[static_cast<size_t>(ci)];
    if (c.domain != kInternalDomain || c.op_type != "QLinearConvNhwc" || c.inputs.size() < 8 || c.outputs.size() != 1)
      continue;
    const Tensor* y_zp = g.isGraphInput(c.inputs[7]) ? nullptr : g.initializers.find(c.inputs[7]);
    if (!y_zp || y_zp->dtype() != table->dtype()) continue;
    Node f = c;
    f.op_type = "QLinearConvNhwcLut";
    f.inputs.resize(9);  // the bias, or "" where the convolution has none
    f.inputs.push_back(l.inputs[1]);
    f.outputs = {l.outputs[0]};
    g.nodes[li] = f;
    g.nodes.erase(g.nodes.begin() + ci);
    if (static_cast<size_t>(ci) < li) --li;
    ++fused;
  }
  return fused;
}

// ------------------------------------------------------------------ Transpose -> Reshape -> Transpose

/// The per-sample dims (all but the first) of `v` when they are all known and the first is not
/// a known 0; nullopt otherwise.
std::optional<Shape> sampleDims(const ValueTypes& types, const std::string& v) {
  auto it = types.find(v);
  if (it == types.end() || !it->second.shape || it->second.shape->empty()) return std::nullopt;
  const SymShape& s = *it->second.shape;
  Shape d;
  for (size_t k = 1; k < s.size(); ++k) {
    if (!s[k].known() || s[k].value == 0) return std::nullopt;
    d.push_back(s[k].value);
  }
  return d;
}

/// The permutation a Transpose applies (its perm, or the reversal it defaults to), or nullopt when
/// it is not a valid permutation of `rank` axes that keeps axis 0 (the batch) first.
std::optional<std::vector<int64_t>> batchKeepingPerm(const Node& t, size_t rank) {
  std::vector<int64_t> p = t.attrInts("perm");
  if (p.empty())
    for (size_t k = rank; k-- > 0;) p.push_back(static_cast<int64_t>(k));
  if (p.size() != rank || p.empty() || p[0] != 0) return std::nullopt;
  std::vector<bool> seen(rank, false);
  for (int64_t a : p) {
    if (a < 0 || a >= static_cast<int64_t>(rank) || seen[static_cast<size_t>(a)]) return std::nullopt;
    seen[static_cast<size_t>(a)] = true;
  }
  return p;
}

/// Transpose(P1) -> Reshape -> Transpose(P2) whose composition keeps every element where a plain
/// reshape puts it becomes one Reshape of the first Transpose's input: no copy at all. The engine's
/// own layout change makes this chain in front of every vision transformer's token sequence: a
/// patch-embedding ConvNhwc, the to-NCHW Transpose after it, then the model's flatten(2) and
/// transpose(1, 2), which together only reshape the NHWC output to [N, H*W, C]. Decided per sample
/// on the inferred shapes: all dims but the batch known, the batch first and kept first by both
/// Transposes and by the Reshape (same per-sample size), and the element mapping checked
/// index by index. Inputs are checked against the declared shapes, so the inferred ones hold.
int foldTransposeReshapeTranspose(Graph& g, const ValueTypes& types) {
  constexpr int64_t kMaxCheckedElements = int64_t{1} << 22;
  int folded = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& t2 = g.nodes[i];
    if (t2.op_type != "Transpose" || !t2.domain.empty() || t2.inputs.size() != 1 || t2.outputs.size() != 1) continue;
    const int ri = producerIndex(g, t2.inputs[0]);
    if (ri < 0) continue;
    const Node& r = g.nodes[static_cast<size_t>(ri)];
    if (r.op_type != "Reshape" || !r.domain.empty() || r.inputs.empty() || r.outputs.size() != 1) continue;
    if (g.isGraphOutput(r.outputs[0]) || useCount(g, r.outputs[0]) != 1) continue;
    const int t1i = producerIndex(g, r.inputs[0]);
    if (t1i < 0) continue;
    const Node& t1 = g.nodes[static_cast<size_t>(t1i)];
    if (t1.op_type != "Transpose" || !t1.domain.empty() || t1.inputs.size() != 1 || t1.outputs.size() != 1) continue;
    const auto vd = sampleDims(types, t1.outputs[0]);  // V = T1(X), per sample
    const auto rd = sampleDims(types, r.outputs[0]);   // R = Reshape(V)
    if (!vd || !rd) continue;
    const auto p1 = batchKeepingPerm(t1, vd->size() + 1);
    const auto p2 = batchKeepingPerm(t2, rd->size() + 1);
    if (!p1 || !p2) continue;
    const int64_t m = std::accumulate(vd->begin(), vd->end(), int64_t{1}, std::multiplies<>());
    if (m != std::accumulate(rd->begin(), rd->end(), int64_t{1}, std::multiplies<>()) || m > kMaxCheckedElements)
      continue;
    // Per-sample dims (index 0 is the first non-batch axis): X[p1[k]] = V[k], Y[k] = R[p2[k]].
    const size_t a = vd->size(), b = rd->size();
    Shape xd(a), yd(b);
    for (size_t k = 0; k < a; ++k) xd[static_cast<size_t>((*p1)[k + 1] - 1)] = (*vd)[k];
    for (size_t k = 0; k < b; ++k) yd[k] = (*rd)[static_cast<size_t>((*p2)[k + 1] - 1)];
    if (const auto known_y = sampleDims(types, t2.outputs[0]); known_y && *known_y != yd) continue;
    auto stridesOf = [](const Shape& d) {
      std::vector<int64_t> s(d.size(), 1);
      for (size_t k = d.size(); k-- > 1;) s[k - 1] = s[k] * d[k];
      return s;
    };
    const auto xs = stridesOf(xd), vs = stridesOf(*vd), rs = stridesOf(*rd);
    // Walk Y in memory order; Y element y sits at R index r (r[p2[k]] = y[k]), i.e. at V's linear
    // index L = R's linear index of r; V's multi-index v of L sits at X index x (x[p1[k]] = v[k]).
    std::vector<int64_t> y(b, 0);
    bool identity = true;
    for (int64_t lin = 0; lin < m && identity; ++lin) {
      int64_t l = 0;
      for (size_t k = 0; k < b; ++k) l += y[k] * rs[static_cast<size_t>((*p2)[k + 1] - 1)];
      int64_t lx = 0;
      for (size_t k = 0; k < a; ++k) {
        const int64_t v = (l / vs[k]) % (*vd)[k];
        lx += v * xs[static_cast<size_t>((*p1)[k + 1] - 1)];
      }
      identity = lx == lin;
      for (size_t k = b; k-- > 0;) {
        if (++y[k] < yd[k]) break;
        y[k] = 0;
      }
    }
    if (!identity) continue;
    std::vector<int64_t> shape{-1};
    shape.insert(shape.end(), yd.begin(), yd.end());
    const std::string shape_name = g.uniqueName(t2.outputs[0] + "_shape");
    g.initializers.set(shape_name, Tensor::fromVector<int64_t>({static_cast<int64_t>(shape.size())}, shape));
    Node n;
    n.op_type = "Reshape";
    // The model's node name where there is one (the profile then names the Transpose of the file
    // that became a Reshape); the Reshape's when T2 is one the engine added.
    n.name = t2.name.rfind("lwc_transpose", 0) == 0 ? r.name : t2.name;
    n.inputs = {t1.inputs[0], shape_name};
    n.outputs = t2.outputs;
    g.nodes[i] = std::move(n);
    g.nodes.erase(g.nodes.begin() + ri);  // its only reader was T2; T1 goes with removeDeadNodes if unread
    if (static_cast<size_t>(ri) < i) --i;
    ++folded;
  }
  return folded;
}

OptimizeStats optimizeForExecution(Graph& g, const ValueTypes* types, int64_t opset) {
  OptimizeStats st;
  st.bn_folded = foldBatchNorms(g);
  if (types && opset > 0) {
    const int tables = fuseChannelLookupTables(g, opset, *types);
    st.lookup_tables += tables;
    if (tables) removeDeadNodes(g);
  }
  if (types) st.bn_depthwise = batchNormsToDepthwise(g, *types);
  st.pads_dropped = dropZeroPads(g);
  // In this order: the float-output rewrite takes only what fuseQdq left (no QuantizeLinear after).
  if (dropRequantize(g)) removeDeadNodes(g);
  st.qdq_fused = fuseQdq(g, /*internal_ops=*/true);
  st.qdq_fused += fuseQAdd(g);
  st.qdq_fused += fuseQdqFloatOutput(g);
  st.qdq_fused += fuseMatMulIntegerScaled(g);
  if (opset > 0) {
    st.lookup_tables = fuseLookupTables(g, opset, types);
    st.qdq_fused += fuseIntegerMaxPool(g);
    st.qdq_fused += fuseIntegerDataMovement(g, opset);
  }
  if (st.qdq_fused || st.lookup_tables) removeDeadNodes(g);
  st.matmul_bias_fused = fuseMatMulBias(g);
  st.outputs_dropped = dropUnreadOptionalOutputs(g);
  st.gelu_fused = fuseGelu(g);
  if (types) st.layernorm_fused = fuseLayerNorm(g, *types);
  st.matmul_trans_b = fuseMatMulTransB(g);
  if (st.matmul_trans_b) {
    removeDeadNodes(g);  // the Transposes
    st.matmul_scaled = fuseMatMulScale(g);
  }
  st.matmul_merge_heads = fuseMatMulMergeHeads(g);
  const SizeKeys sizes = types ? sizeKeys(g, *types) : SizeKeys{};
  st.convs_nhwc = convertConvs(g) + convertQConvs(g);
  if (st.convs_nhwc > 0) {
    std::set<std::string> same_shape;
    bool changed = true;
    while (changed) {
      changed = false;
      for (size_t i = 0; i < g.nodes.size(); ++i)
        if (pushThrough(g, i, sizes, same_shape)) changed = true;
      if (cancelPairs(g)) changed = true;
      if (mergeDuplicateTransposes(g)) changed = true;
      removeDeadNodes(g);
    }
    st.fused_post_ops = fusePostOps(g, same_shape, opset);
    st.fused_post_ops += fuseConvQAdd(g);
    st.qdq_fused += fuseQGlobalAvgPool(g);
    removeDeadNodes(g);
  }
  // After the layout change, which would stop at this op: it runs on the operands' layout.
  if (opset > 0) {
    const int products = fuseQMulLut(g, opset);
    st.lookup_tables += products + fuseSelfGatedLookups(g);
    if (products) removeDeadNodes(g);
    // After the self-gated products became lookups: a SiLU's QLut then follows its convolution.
    st.fused_post_ops += fuseConvQLut(g);
  }
  if (types) {
    st.transposes_folded = foldTransposeReshapeTranspose(g, *types);
    if (st.transposes_folded) removeDeadNodes(g);
  }
  for (const auto& n : g.nodes) st.transposes_left += n.op_type == "Transpose";
  topoSort(g);
  return st;
}

}  // namespace lwc::engine
