#include "passes/quantize_static.h"
#include "passes/weight_layers.h"

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <iomanip>
#include <set>
#include <sstream>
#include <tuple>

#include "lwc/analysis.h"
#include "lwc/engine.h"
#include "lwc/graph_edit.h"
#include "lwc/json_text.h"
#include "lwc/metrics.h"
#include "lwc/model_fixups.h"
#include "lwc/model_io.h"
#include "lwc/shape_inference.h"
#include "passes/gptq.h"
#include "passes/lsq_recovery.h"

namespace lwc::passes {

using nlohmann::json;

std::vector<OptionSpec> QuantizeStatic::optionSpecs() const {
  OptionSpec cal{"calibrator", OptionType::String, "minmax", "Activation range: minmax, percentile, entropy (KL) or mse"};
  cal.choices = {"minmax", "percentile", "entropy", "mse"};
  OptionSpec pct{"percentile", OptionType::Float, 99.999, "Percentile for the percentile calibrator"};
  pct.min = 50;
  pct.max = 100;
  OptionSpec samples{"calib_samples", OptionType::Int, 0, "Calibration samples to use (0 = all the data has)"};
  samples.min = 0;
  OptionSpec act{"act_type", OptionType::String, "uint8", "Activations: uint8 (asymmetric) or int8 (symmetric)"};
  act.choices = {"uint8", "int8"};
  OptionSpec fmt{"format", OptionType::String, "qdq",
                 "qdq (QuantizeLinear/DequantizeLinear around float ops) or qoperator (QLinearConv/QLinearMatMul)"};
  fmt.choices = {"qdq", "qoperator"};
  OptionSpec rounding{"weight_rounding", OptionType::String, "nearest",
                      "nearest (each weight to its closest step) or gptq (GPTQ, Frantar et al. 2022: round one input "
                      "channel at a time and move the weights not yet rounded, and the bias, to cancel the error on the "
                      "calibration data)"};
  rounding.choices = {"nearest", "gptq"};
  OptionSpec load{"load_calib", OptionType::StringList, json::array(),
                  "Use saved statistics (lwc.calib files, merged) instead of running calibration"};
  load.is_path = true;
  OptionSpec save{"save_calib", OptionType::String, "", "Write the collected statistics to this file"};
  save.is_path = true;
  OptionSpec shard{"calib_shard", OptionType::String, "0/1", "i/n: calibrate on the i-th of n equal parts of the data (0-based)"};
  shard.pattern = "^[0-9]+/[1-9][0-9]*$";
  return {cal,
          pct,
          samples,
          act,
          {"per_channel", OptionType::Bool, true, "Per-output-channel weight scales (false: one scale per tensor)"},
          {"reduce_range", OptionType::Bool, false,
           "7-bit weights ([-63, 63]) for x86 CPUs without VNNI, whose u8 x s8 kernels saturate in int16 (ONNX Runtime's reduce_range)"},
          {"exclude", OptionType::StringList, json::array(), "Node names or op types to keep in float"},
          {"keep_fp32", OptionType::StringList, json::array(), "\"first\" and/or \"last\": keep the first/last compute layer in float"},
          load,
          save,
          shard,
          {"bias_correction", OptionType::Bool, false,
           "Move each quantized layer's int32 bias by the mean shift quantization causes in its output on the calibration data "
           "(empirical bias correction, Nagel et al. 2019)"},
          rounding,
          fmt};
}

bool QuantizeStatic::needsCalibration(const PassOptions& o) const {
  return o.getStrings("load_calib").empty() || o.getBool("bias_correction") || o.getString("weight_rounding") == "gptq";
}

std::pair<int, int> parseShard(const std::string& s, const std::string& what) {
  const auto shard = shardOf(s);
  if (!shard) fail(what, ": \"", s, "\" is not i/n with 0 <= i < n <= 2147483647 (e.g. 0/4)");
  return *shard;
}

namespace {
}  // namespace

void QuantizeStatic::validate(const PassOptions& o) const {
  parseShard(o.getString("calib_shard"), o.key("calib_shard"));
  if (o.given("percentile") && o.getString("calibrator") != "percentile")
    fail(o.key("percentile"), ": applies to calibrator percentile (the calibrator is ", o.getString("calibrator"),
         "); set calibrator percentile or drop it");
  for (const auto& k : o.getStrings("keep_fp32"))
    if (k != "first" && k != "last") fail(o.key("keep_fp32"), ": \"", k, "\" is not first or last");
  // Saved statistics are used as they are: the sample count and the shard apply to collecting them
  // (and the sample count to the layer measurements of bias correction and GPTQ).
  if (!o.getStrings("load_calib").empty()) {
    if (o.getInt("calib_samples") > 0 && !o.getBool("bias_correction") && o.getString("weight_rounding") != "gptq")
      fail(o.key("calib_samples"), ": the statistics come from ", o.ref("load_calib"),
           " as they were collected; the sample count applies when calibrating (or to bias correction and GPTQ): drop it");
    if (o.getString("calib_shard") != "0/1")
      fail(o.key("calib_shard"), ": applies when collecting statistics (lwc calibrate --shard), not to ",
           o.ref("load_calib"), ": drop it");
  }
}

std::string recurrentLayerNote(const Node& n) {
  if (!n.domain.empty() || (n.op_type != "RNN" && n.op_type != "GRU" && n.op_type != "LSTM")) return "";
  return n.describe() + ": left in float (ONNX has no integer " + n.op_type +
         "; ONNX Runtime's DynamicQuantizeLSTM is a contrib op that other runtimes lack)";
}

void checkNotQuantized(const Model& m, const std::string& action) {
  static const std::set<std::string> kQuantOps = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                                                  "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"};
  for (const auto& n : m.graph.nodes)
    if (kQuantOps.count(n.op_type))
      fail(m.label(), ": already quantized (node ", n.describe(),
           "); ", action, " the float model it came from instead");
}

std::string upgradeOpset(Model& m, int64_t want, const std::string& what) {
  const int64_t from = m.opsetFor("");
  if (from >= want) return "";
  const std::string why = convertOpset(m, 13);
  if (why.empty())
    return "opset " + std::to_string(from) + " -> 13 with ONNX's version converter (" + what + " needs " +
           std::to_string(want) + ")";
  // Where 13 fails (Softmax-13 needs a known input shape), the opset the ops need may still do.
  if (want < 13 && convertOpset(m, want).empty())
    return "opset " + std::to_string(from) + " -> " + std::to_string(want) + " with ONNX's version converter (" + what +
           " needs " + std::to_string(want) + "; to 13 it failed: " + why + ")";
  return "opset " + std::to_string(from) + " kept: ONNX's version converter could not convert the model to " +
         std::to_string(want) + (want < 13 ? " or 13" : "") + " (" + why + ")";
}

std::string excludeHint(const Graph& g) {
  std::string s;
  int shown = 0, total = 0;
  for (const auto& n : g.nodes) {
    if (!n.domain.empty() || (n.op_type != "Conv" && n.op_type != "Gemm" && n.op_type != "MatMul" && n.op_type != "ConvTranspose"))
      continue;
    if (++total > 4) continue;
    s += (shown++ ? ", " : "") + n.describe();
  }
  if (total == 0) return "";
  return "; its layers after the cleanup before quantization (a MatMul and its bias Add become a Gemm) are " + s +
         (total > 4 ? " and " + std::to_string(total - 4) + " more" : "") + " (lwc info --per-layer on `lwc fuse`'s output lists them)";
}

void checkQuantizableOpset(const Model& m, int64_t min_opset, const std::string& ops, const std::string& upgrade_note) {
  const int64_t v = m.opsetFor("");
  if (v < min_opset)
    fail(m.label(), ": opset ", v, " has no ", ops, " (introduced in opset ", min_opset, "), and ",
         upgrade_note.empty() ? std::string("ONNX's version converter could not convert it") : upgrade_note,
         ": export the model again at opset 13");
}

namespace {

const std::set<std::string> kCompute = {"Conv", "Gemm", "MatMul"};
// GPTQ's Gram matrices: im2col patches (Conv) or input rows (MatMul on sequences) per sample.
constexpr int64_t kGptqRowsPerSample = 16;
const std::set<std::string> kPropagate = {"Add", "MaxPool", "AveragePool", "GlobalAveragePool", "Concat"};
const std::set<std::string> kAveragingPools = {"AveragePool", "GlobalAveragePool"};

struct QParams {
  float scale = 1;
  int32_t zero_point = 0;
};

QParams activationParams(const Range& r, bool symmetric) {
  QParams q;
  if (symmetric) {
    const double a = std::max(std::fabs(r.lo), std::fabs(r.hi));
    q.scale = a > 0 ? static_cast<float>(a / 127.0) : 1.0f;
    return q;
  }
  const double lo = std::min(r.lo, 0.0), hi = std::max(r.hi, 0.0);
  const double s = (hi - lo) / 255.0;
  if (!(s > 0)) return q;
  q.scale = static_cast<float>(s);
  q.zero_point = static_cast<int32_t>(std::clamp(std::nearbyint(-lo / double(q.scale)), 0.0, 255.0));
  return q;
}

// Elements a Softmax normalises over (its axis, or from the axis on before opset 13), or -1 when
// the shape does not say.
int64_t softmaxLength(const Node& n, int64_t opset, const ValueTypes& types) {
  const auto it = n.inputs.empty() ? types.end() : types.find(n.inputs[0]);
  if (it == types.end() || !it->second.shape) return -1;
  const SymShape& s = *it->second.shape;
  const auto rank = static_cast<int64_t>(s.size());
  int64_t axis = n.attrInt("axis", opset < 13 ? 1 : -1);
  if (axis < 0) axis += rank;
  if (axis < 0 || axis >= rank) return -1;
  int64_t d = 1;
  for (int64_t k = axis; k < (opset < 13 ? rank : axis + 1); ++k) {
    if (!s[static_cast<size_t>(k)].known()) return -1;
    d *= s[static_cast<size_t>(k)].value;
  }
  return d;
}

// ONNX Runtime fuses DequantizeLinear -> Softmax -> QuantizeLinear into its QLinearSoftmax, whose
// float arithmetic overflows when 1 / output scale exceeds about 148 x the number of elements
// normalised (e^5 x D: its exp table is scaled up to FLT_MAX / (D e^5)); its outputs are then
// garbage (0 where 255 is due). A Softmax close to uniform on the calibration data gets such a
// scale (max output < 1.7 / D). The output scale is raised to at least 1 / (128 D), D = 2 (a floor
// of 1/256) when the shape does not say; a Softmax with a sharper peak keeps its calibrated scale.
// Only a Softmax ONNX Runtime can fuse is touched: its output not a graph output, and its input
// quantized too, or reached from a quantized value through ops that ONNX Runtime's QDQ propagation
// moves a DequantizeLinear across (DQ -> MaxPool -> Softmax became MaxPool -> DQ -> Softmax there:
// testdata/ort_faults/flat_softmax.onnx). Returns how many were raised.
int64_t raiseSoftmaxScales(const Model& m, const ValueTypes& types, bool symmetric, std::map<std::string, QParams>& qp,
                           std::vector<std::string>& notes) {
  int64_t raised = 0;
  for (const Node& n : m.graph.nodes) {
    if (!n.domain.empty() || n.op_type != "Softmax" || n.inputs.empty() || n.outputs.empty()) continue;
    const auto it = qp.find(n.outputs[0]);
    if (it == qp.end() || m.graph.isGraphOutput(n.outputs[0])) continue;
    // Back from the input through data-movement ops to a quantized value (a superset of what ONNX
    // Runtime propagates across: raising one scale too many costs a little resolution only).
    static const std::set<std::string> kMovesDq = {"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"};
    std::string v = n.inputs[0];
    for (int hops = 0; !qp.count(v) && hops < 16; ++hops) {
      const int p = producerIndex(m.graph, v);
      if (p < 0) break;
      const Node& pn = m.graph.nodes[static_cast<size_t>(p)];
      if (!pn.domain.empty() || !kMovesDq.count(pn.op_type) || pn.inputs.empty()) break;
      v = pn.inputs[0];
    }
    if (!qp.count(v)) continue;
    const int64_t d = softmaxLength(n, m.opsetFor(""), types);
    const double min_scale = 1.0 / (128.0 * double(d > 0 ? d : 2));
    QParams& q = it->second;
    if (!(q.scale < min_scale)) continue;
    // The same zero point (0 for a Softmax's non-negative outputs), a range that reaches further up.
    const double lo = symmetric ? 0.0 : -double(q.zero_point) * min_scale;
    const QParams wider = activationParams(Range{lo, lo + (symmetric ? 127.0 : 255.0) * min_scale}, symmetric);
    notes.push_back(detail::concat(n.describe(), ": output scale ", q.scale, " raised to ", wider.scale,
                                   " (ONNX Runtime's QLinearSoftmax overflows below about 1/(148 x ",
                                   d > 0 ? std::to_string(d) : std::string("the axis length"), " elements))"));
    q = wider;
    ++raised;
  }
  return raised;
}

// A graph output that a Transpose reads on the way to a QuantizeLinear (transposedToQuantizeLinear):
// ONNX Runtime 1.30's basic graph rewrites (QDQ propagation through the Transpose) hand the graph
// output the quantized value, clipped and rounded to the QuantizeLinear's range (the
// QuantizeLinear's own path stays right; with a Reshape, Flatten, MaxPool or Unsqueeze there ONNX
// Runtime gets both right). With the graph output written by an Identity of the producer's value,
// which the Transpose reads, both stay right. A graph input (or initializer) there has no producer
// to rename and is left alone. eliminate_identity keeps this Identity. Returns how many graph
// outputs got such an Identity.
int64_t shieldTransposedGraphOutputs(Model& m, std::vector<std::string>& notes) {
  Graph& g = m.graph;
  const GraphIndex index(g);
  std::set<std::string> outputs;
  for (const ValueInfo& o : g.outputs)
    if (!g.isGraphInput(o.name) && index.producer(o.name) >= 0 && transposedToQuantizeLinear(g, index, o.name))
      outputs.insert(o.name);
  for (const std::string& y : outputs) {
    const std::string value = g.uniqueName(y + "_value");
    // Renaming outputs and adding nodes at the end leaves the index's producers of the others valid.
    for (auto& out : g.nodes[static_cast<size_t>(index.producer(y))].outputs)
      if (out == y) out = value;
    replaceUses(g, y, value);
    Node id;
    id.name = g.uniqueName(y + "_output");
    id.op_type = "Identity";
    id.inputs = {value};
    id.outputs = {y};
    g.nodes.push_back(std::move(id));
    notes.push_back("graph output '" + printable(y) + "' is written by an Identity: a Transpose reads it on the way to a "
                    "QuantizeLinear, and ONNX Runtime's graph rewrites would hand the graph output the quantized values");
  }
  if (!outputs.empty()) topoSort(g, m.label());
  return static_cast<int64_t>(outputs.size());
}

// Why a Conv, Gemm or MatMul has no weights this pass quantizes; "" where it has, with `axis` the
// weights' output-channel axis.
std::string weightLayoutProblem(const Graph& g, const Node& n, int& axis) {
  const std::string wn = n.inputs.size() > 1 ? n.inputs[1] : std::string();
  const Tensor* w = wn.empty() ? nullptr : g.initializers.find(wn);
  if (!w) return "its second input is computed at run time, not constant weights (a product of two activations stays float)";
  if (g.isGraphInput(wn)) return "its weights are also a graph input, which a caller may replace";
  if (w->dtype() != DType::Float32) return "its weights are " + std::string(dtypeName(w->dtype())) + ", not float32";
  if (n.op_type == "Conv") {
    axis = 0;
    return w->rank() >= 3 ? "" : "its weights have rank " + std::to_string(w->rank()) + ", not 3 or more";
  }
  if (w->rank() != 2) return "its weights have rank " + std::to_string(w->rank()) + ", not 2";
  if (n.op_type == "Gemm") {
    if (n.attrInt("transA", 0) != 0) return "transA = 1 (its first input is transposed)";
    axis = n.attrInt("transB", 0) ? 0 : 1;
    return "";
  }
  axis = 1;  // MatMul [K, N]
  return "";
}

// A Clip whose only reader is a per-tensor QuantizeLinear that saturates everything the Clip would
// cut (its lower bound at or below the values that round to the lowest integer, its upper bound at
// or above those that round to the highest, ties to even) changes no output: it is removed and
// the QuantizeLinear reads the Clip's input. ONNX Runtime's ClipQuantFusion removes such a Clip
// too, and its later QDQ rewrites then broke some of these graphs (a residual Add or a SiLU's Mul
// before the Clip: "Node input 'x_dequantized/duplicated' is not a graph input ...", so the file
// did not load at the default optimization level); without the Clip they load. Returns the count.
int64_t dropInertClips(Model& m) {
  Graph& g = m.graph;
  const GraphIndex index(g);
  // A float32 scalar constant, where no graph input can override it.
  auto constant = [&](const std::string& name) { return g.isGraphInput(name) ? nullptr : floatConstant(g, name, 1); };
  std::vector<size_t> inert;  // ascending
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& c = g.nodes[i];
    if (!c.domain.empty() || c.op_type != "Clip" || c.inputs.empty() || c.outputs.size() != 1 ||
        g.isGraphOutput(c.outputs[0]) || index.numConsumers(c.outputs[0]) != 1)
      continue;
    const Node& q = g.nodes[static_cast<size_t>(index.consumers(c.outputs[0])[0])];
    if (!q.domain.empty() || q.op_type != "QuantizeLinear" || q.inputs.size() < 2 || q.inputs[0] != c.outputs[0]) continue;
    const Tensor* scale = constant(q.inputs[1]);
    const Tensor* zp = q.hasInput(2) && !g.isGraphInput(q.inputs[2]) ? g.initializers.find(q.inputs[2]) : nullptr;
    if (!scale || (q.hasInput(2) && (!zp || zp->numel() != 1))) continue;
    const DType qt = zp ? zp->dtype() : DType::UInt8;
    if (qt != DType::UInt8 && qt != DType::Int8) continue;
    const double s = scale->at(0), z = zp ? zp->at(0) : 0.0;
    const double qmin = qt == DType::UInt8 ? 0 : -128, qmax = qt == DType::UInt8 ? 255 : 127;
    double lo = -std::numeric_limits<double>::infinity(), hi = std::numeric_limits<double>::infinity();
    if (m.opsetFor("") < 11) {
      lo = c.attrFloat("min", -std::numeric_limits<float>::infinity());
      hi = c.attrFloat("max", std::numeric_limits<float>::infinity());
    } else {
      const Tensor* l = c.hasInput(1) ? constant(c.inputs[1]) : nullptr;
      const Tensor* h = c.hasInput(2) ? constant(c.inputs[2]) : nullptr;
      if ((c.hasInput(1) && !l) || (c.hasInput(2) && !h)) continue;
      if (l) lo = l->at(0);
      if (h) hi = h->at(0);
    }
    // x / s rounds half to even: (qmin - zp) + 0.5 still rounds to qmin - zp when that is even.
    const double b_lo = qmin - z, b_hi = qmax - z;
    const bool even_lo = std::fmod(std::fabs(b_lo), 2.0) == 0.0, even_hi = std::fmod(std::fabs(b_hi), 2.0) == 0.0;
    const double lo_edge = (b_lo + 0.5) * s, hi_edge = (b_hi - 0.5) * s;
    if (!(s > 0) || !(even_lo ? lo <= lo_edge : lo < lo_edge) || !(even_hi ? hi >= hi_edge : hi > hi_edge)) continue;
    inert.push_back(i);
  }
  std::vector<std::string> bounds;
  int64_t dropped = 0;
  for (auto it = inert.rbegin(); it != inert.rend(); ++it) {  // from the back: earlier indices stay valid
    const Node c = g.nodes[*it];
    if (!bypassNode(g, *it, c.inputs[0], c.outputs[0])) continue;
    bounds.insert(bounds.end(), c.inputs.begin() + 1, c.inputs.end());
    ++dropped;
  }
  dropUnusedConstants(g, bounds);
  return dropped;
}

bool isZeroClip(const Model& m, const Node& n) {
  if (n.op_type == "Relu") return true;
  if (n.op_type != "Clip") return false;
  if (m.opsetFor("") < 11) return n.attrFloat("min", -3.4e38f) == 0.0f;
  if (!n.hasInput(1)) return false;
  const Tensor* lo = m.graph.initializers.find(n.inputs[1]);
  return lo && lo->numel() == 1 && lo->at(0) == 0.0;
}

// `floor`: per channel (or one value per tensor), the smallest scale allowed; empty for none.
Tensor quantizeWeights(const Tensor& w, int axis, bool per_channel, Tensor& scale, Tensor& zp, float qmax,
                       const std::vector<float>& floor = {}) {
  const int64_t ch = per_channel ? w.dim(static_cast<size_t>(axis)) : 1;
  int64_t outer = 1, inner = 1;
  if (per_channel) {
    for (int d = 0; d < axis; ++d) outer *= w.dim(static_cast<size_t>(d));
    for (size_t d = static_cast<size_t>(axis) + 1; d < w.rank(); ++d) inner *= w.dim(d);
  } else {
    inner = w.numel();
  }
  std::vector<float> s(static_cast<size_t>(ch), 0.0f);
  const float* W = w.data<float>();
  for (int64_t a = 0; a < outer; ++a)
    for (int64_t c = 0; c < ch; ++c)
      for (int64_t k = 0; k < inner; ++k)
        s[static_cast<size_t>(c)] = std::max(s[static_cast<size_t>(c)], std::fabs(W[(a * ch + c) * inner + k]));
  for (auto& v : s) v = v > 0 ? v / qmax : 1.0f;
  for (size_t c = 0; c < floor.size() && c < s.size(); ++c) s[c] = std::max(s[c], floor[c]);
  Tensor q(DType::Int8, w.shape());
  int8_t* Q = q.data<int8_t>();
  for (int64_t a = 0; a < outer; ++a)
    for (int64_t c = 0; c < ch; ++c)
      for (int64_t k = 0; k < inner; ++k) {
        const int64_t i = (a * ch + c) * inner + k;
        Q[i] = static_cast<int8_t>(std::clamp(std::nearbyint(W[i] / s[static_cast<size_t>(c)]), -qmax, qmax));
      }
  if (per_channel) {
    scale = Tensor::fromVector<float>({ch}, s);
    zp = Tensor(DType::Int8, {ch});
  } else {
    scale = Tensor::scalar<float>(s[0]);
    zp = Tensor::scalar<int8_t>(0);
  }
  return q;
}

Node makeNode(const std::string& op, const std::string& name, std::vector<std::string> in, std::string out) {
  Node n;
  n.op_type = op;
  n.name = name;
  n.inputs = std::move(in);
  n.outputs = {std::move(out)};
  return n;
}


// A quantized layer whose int32 bias bias correction may move.
struct BiasFix {
  std::string layer;    ///< for notes
  std::string out;      ///< the layer's output (before an absorbed activation), same name in both models
  std::string bias;     ///< its int32 bias initializer, or the float constant of the Add after a MatMul
  std::vector<float> bias_scale;  ///< int32 bias: s_b per channel; empty for a float bias
  int axis = 1;                   ///< channel axis of the output (-1: last, MatMul)
};

// Empirical bias correction (Nagel et al. 2019, "Data-free quantization", section 4.2; OpenVINO's
// and NNCF's bias correction): quantizing weights and inputs shifts the mean of a layer's output;
// each layer's int32 bias moves by round((E[y_fp32] − E[y_q]) / s_b) per output channel, measured on
// the calibration data layer by layer in graph order, so later layers see the earlier corrections
// (and absorb what is left of them). y_q is the layer's output in the QDQ model (float arithmetic on
// dequantized values: what the integer kernels compute up to their final rounding).
int64_t correctQuantizedBiases(Model& m, const Model& fp32, std::vector<BiasFix> fixes, const PassContext& ctx,
                               int64_t max_samples, PassResult& r) {
  auto ds = openCalibration(ctx, m, max_samples);
  const std::string input = m.graph.realInputs().at(0)->name;
  std::stable_sort(fixes.begin(), fixes.end(), [&](const BiasFix& a, const BiasFix& b) {
    return producerIndex(m.graph, a.out) < producerIndex(m.graph, b.out);
  });
  std::vector<std::string> refs;
  std::vector<int> axes;
  for (const auto& f : fixes) {
    refs.push_back(f.out);
    axes.push_back(f.axis);
  }
  const auto want = channelMeans(fp32, refs, *ds, input, ctx.calib->batch, ctx.threads, axes);
  int64_t corrected = 0;
  for (size_t k = 0; k < fixes.size(); ++k) {
    const BiasFix& f = fixes[k];
    const auto have = channelMeans(m, {f.out}, *ds, input, ctx.calib->batch, ctx.threads, {f.axis}).at(0);
    const Tensor& b = m.graph.initializers.at(f.bias);
    const bool int32 = !f.bias_scale.empty();
    if ((int32 && have.size() != f.bias_scale.size()) || want[k].size() != have.size() ||
        b.numel() != static_cast<int64_t>(have.size())) {
      r.notes.push_back(f.layer + ": bias not corrected (its output does not have one bias per channel)");
      continue;
    }
    bool finite = true;
    for (size_t c = 0; c < have.size(); ++c) finite = finite && std::isfinite(want[k][c] - have[c]);
    if (!finite) {
      r.notes.push_back(f.layer + ": bias not corrected (its output mean on the calibration data is not finite)");
      continue;
    }
    Tensor nb(b.dtype(), b.shape());
    for (size_t c = 0; c < have.size(); ++c) {
      if (int32) {
        const double v = double(b.data<int32_t>()[c]) + std::nearbyint((want[k][c] - have[c]) / double(f.bias_scale[c]));
        nb.data<int32_t>()[c] = static_cast<int32_t>(std::clamp(v, -2147483647.0, 2147483647.0));
      } else {
        nb.data<float>()[c] = static_cast<float>(double(b.data<float>()[c]) + want[k][c] - have[c]);
      }
    }
    m.graph.initializers.set(f.bias, std::move(nb));
    ++corrected;
  }
  return corrected;
}

}  // namespace

PassResult QuantizeStatic::run(Model& m, PassContext& ctx) {
  checkNotQuantized(m);
  const PassOptions& o = options_;
  const bool per_channel_opt = o.getBool("per_channel");
  // Per-channel weight scales need opset 13, QuantizeLinear at all 10: convert older models.
  const std::string upgraded =
      upgradeOpset(m, per_channel_opt ? 13 : 10, per_channel_opt ? "per-channel DequantizeLinear" : "QuantizeLinear");
  checkQuantizableOpset(m, 10, "QuantizeLinear/DequantizeLinear", upgraded);
  Graph& g = m.graph;
  topoSort(g, m.label());
  // Before any edit: what saved statistics record and loaded ones are checked against (hashing every
  // weight costs a pass over them, so only when statistics are saved or loaded).
  const std::string digest =
      o.getStrings("load_calib").empty() && o.getString("save_calib").empty() ? "" : graphDigest(g);
  const bool symmetric = o.getString("act_type") == "int8";
  const float w_qmax = o.getBool("reduce_range") ? 63.0f : 127.0f;
  const bool per_channel = per_channel_opt && m.opsetFor("") >= 13;
  const bool bias_correction = o.getBool("bias_correction");
  if (bias_correction && !ctx.calib)
    fail("quantize_static: bias_correction needs calibration data (--calib DIR or data.calib)");
  const bool gptq = o.getString("weight_rounding") == "gptq";
  if (gptq && !ctx.calib)
    fail("quantize_static: weight_rounding gptq needs calibration data (--calib DIR or data.calib)");
  const Model fp32 = bias_correction ? m : Model();  // shares the tensors; the edits below write new ones
  std::vector<BiasFix> bias_fixes;
  PassResult r;
  if (!upgraded.empty()) r.notes.push_back(upgraded);
  if (per_channel_opt && !per_channel)
    r.notes.push_back("opset " + std::to_string(m.opsetFor("")) +
                      " < 13: per-tensor weight scales (per-channel DequantizeLinear needs opset 13)");

  // --- select nodes
  std::set<std::string> exclude;
  for (const auto& e : resolveNodeList(g, o, "exclude", m.label(), excludeHint(g))) exclude.insert(e);
  std::vector<size_t> compute;
  std::set<size_t> selected;
  std::map<size_t, int> weight_axis;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (!n.domain.empty() || exclude.count(n.name) || exclude.count(n.op_type)) continue;
    if (const std::string note = recurrentLayerNote(n); !note.empty()) r.notes.push_back(note);
    int axis = 0;
    if (kCompute.count(n.op_type)) {
      if (const std::string why = weightLayoutProblem(g, n, axis); !why.empty()) {
        const std::string coded = n.inputs.size() > 1 ? codedWeightsReason(g, n.inputs[1]) : "";
        r.notes.push_back(n.describe() + ": left in float: " + (coded.empty() ? why : coded));
        continue;
      }
      compute.push_back(i);
      weight_axis[i] = axis;
    }
  }
  const auto keep = o.getStrings("keep_fp32");
  if (!compute.empty() && std::count(keep.begin(), keep.end(), "last")) {
    r.notes.push_back(g.nodes[compute.back()].describe() + ": kept in float (keep_fp32 last)");
    compute.pop_back();
  }
  if (!compute.empty() && std::count(keep.begin(), keep.end(), "first")) {
    r.notes.push_back(g.nodes[compute.front()].describe() + ": kept in float (keep_fp32 first)");
    compute.erase(compute.begin());
  }
  if (compute.empty())
    fail(m.label(), ": nothing to quantize (no Conv/Gemm/MatMul with constant weights",
         exclude.empty() && keep.empty() ? "" : " left after exclude/keep_fp32", ")", float16WeightsHint(m));
  selected.insert(compute.begin(), compute.end());
  // Only float values are quantized: a Concat or Add can also compute shapes (int64), as the
  // channel shuffle of ShuffleNet does.
  const ValueTypes types = inferShapes(m);
  auto isFloatValue = [&](const std::string& t) {
    if (const Tensor* c = g.initializers.find(t)) return c->dtype() == DType::Float32;
    const auto it = types.find(t);
    const ValueInfo* vi = it != types.end() ? &it->second : g.findValueInfo(t);
    return !vi || vi->dtype == DType::Float32 || vi->dtype == DType::Undefined;
  };
  std::set<std::string> float_pool_inputs;  // read by an AveragePool left in float (below): not quantized
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (!n.domain.empty() || !kPropagate.count(n.op_type) || exclude.count(n.name) || exclude.count(n.op_type)) continue;
    if (!isFloatValue(n.outputs[0])) continue;
    // An AveragePool with ceil_mode and count_include_pad over pads: ONNX Runtime 1.30's
    // QLinearAveragePool (what it makes of DQ -> AveragePool -> Q) divides the windows that
    // overhang the pads by another count than ONNX's AveragePool (a model that scored 37 dB
    // against its float model in lwc and in ONNX Runtime without fusions scored 22 dB with them).
    // Left in float, with its input, so that no runtime fuses it.
    if (n.op_type == "AveragePool" && n.attrInt("ceil_mode", 0) != 0 && n.attrInt("count_include_pad", 0) != 0) {
      const auto pads = n.attrInts("pads");
      if (std::any_of(pads.begin(), pads.end(), [](int64_t p) { return p != 0; })) {
        float_pool_inputs.insert(n.inputs[0]);
        r.notes.push_back(n.describe() + ": left in float (ceil_mode with count_include_pad over pads: ONNX Runtime's "
                                         "integer pooling divides its edge windows differently)");
        continue;
      }
    }
    // An Add runs on the integers (QLinearAdd) only between two activations, a residual; with a
    // constant operand (a bias after a MatMul, GELU's erf + 1) quantizing its input would only add
    // rounding error, and a DQ between ops that the runtimes fuse.
    if (n.op_type == "Add" && std::any_of(n.inputs.begin(), n.inputs.end(), [&](const std::string& v) {
          return g.initializers.contains(v);
        }))
      continue;
    selected.insert(i);
  }
  // x * Sigmoid(y) of two activations (SiLU when y is x, a squeeze-excite gate otherwise): the
  // Sigmoid's output and the product are quantized too, so that ONNX Runtime runs QLinearSigmoid (a
  // table) and QLinearMul instead of float ops between a DequantizeLinear and a QuantizeLinear: it
  // ran efficientnet_b0's and mobilenet_v3's INT8 files at 0.46-0.76 of their FP32 speed that way.
  // Other products (GELU's x * (erf + 1), attention's) stay float.
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op_type != "Mul" || !n.domain.empty() || n.inputs.size() != 2 || exclude.count(n.name) ||
        exclude.count(n.op_type) || !isFloatValue(n.outputs[0]) || g.isGraphOutput(n.outputs[0]))
      continue;
    if (g.initializers.contains(n.inputs[0]) || g.initializers.contains(n.inputs[1])) continue;
    for (size_t k = 0; k < 2; ++k) {
      const int si = producerIndex(g, n.inputs[k]);
      if (si < 0) continue;
      const Node& sg = g.nodes[static_cast<size_t>(si)];
      if (sg.op_type != "Sigmoid" || !sg.domain.empty() || exclude.count(sg.name) || exclude.count(sg.op_type) ||
          g.isGraphOutput(sg.outputs[0]) || useCount(g, sg.outputs[0]) != 1)
        continue;
      selected.insert(i);
      selected.insert(static_cast<size_t>(si));
      break;
    }
  }

  // --- tensors to quantize; activations to absorb
  const GraphIndex index(g);
  std::vector<std::string> tensors;
  std::set<std::string> tensor_set;
  auto addTensor = [&](const std::string& t) {
    if (t.empty() || g.initializers.contains(t) || tensor_set.count(t) || !isFloatValue(t)) return;
    tensor_set.insert(t);
    tensors.push_back(t);
  };
  std::map<size_t, size_t> absorbed;  // compute node -> activation node
  int64_t kept_activations = 0;       // Relu / Clip(0, x) that uint8 would absorb and int8 keeps
  // A Conv / ConvTranspose / Gemm that stays in float (see keepsFloatInput in the edit below).
  const std::set<size_t> compute_set(compute.begin(), compute.end());
  auto isFloatWeightLayer = [&](size_t i) {
    const Node& n = g.nodes[i];
    return !compute_set.count(i) && n.domain.empty() && (n.op_type == "Conv" || n.op_type == "ConvTranspose" || n.op_type == "Gemm");
  };
  // Whether `v` reaches such a layer directly or through MaxPools: ONNX Runtime's QDQ propagation
  // copies a DequantizeLinear forward across a MaxPool, so a float Conv behind a MaxPool that read
  // a DequantizeLinear was quantized there too (lenet5 with conv2 excluded; googlenet's branches).
  std::function<bool(const std::string&)> readByFloatLayer;
  auto maxPoolToFloatLayer = [&](size_t i) {
    const Node& n = g.nodes[i];
    return n.domain.empty() && n.op_type == "MaxPool" && !n.outputs.empty() && readByFloatLayer(n.outputs[0]);
  };
  readByFloatLayer = [&](const std::string& v) {
    for (int c : index.consumers(v)) {
      const auto ci = static_cast<size_t>(c);
      if (isFloatWeightLayer(ci) || (g.nodes[ci].inputs[0] == v && maxPoolToFloatLayer(ci))) return true;
    }
    return false;
  };
  // MatMul -> its bias Add, as exporters write Linear layers on 3-D inputs: the layer's output is
  // the Add's, quantized once after the bias (QDQ format; see the header).
  std::map<size_t, TrailingBias> bias_adds;
  const bool fold_bias_adds = o.getString("format") == "qdq";
  std::set<std::string> pool_outputs;  // quantized only for the runtimes' sake: optional in saved statistics
  for (size_t i : selected) {
    const Node& n = g.nodes[i];
    const size_t data_inputs = kCompute.count(n.op_type) ? 1 : n.inputs.size();
    for (size_t k = 0; k < data_inputs; ++k) addTensor(n.inputs[k]);
    // An averaging pool's output is quantized too, so that runtimes run the pool on the integers
    // (ONNX Runtime fuses DQ -> GlobalAveragePool/AveragePool -> Q into its QLinear pools, channels
    // last, instead of a float pool between a DQ, a layout Transpose and the next Q).
    if (kAveragingPools.count(n.op_type) && !g.isGraphOutput(n.outputs[0]) && !tensor_set.count(n.outputs[0])) {
      addTensor(n.outputs[0]);
      pool_outputs.insert(n.outputs[0]);
    }
    if (!kCompute.count(n.op_type)) continue;
    std::string out = n.outputs[0];
    if (fold_bias_adds && n.op_type == "MatMul") {
      const int64_t ch = g.initializers.at(n.inputs[1]).dim(static_cast<size_t>(weight_axis.at(i)));
      const TrailingBias tb = trailingBiasAdd(g, index, out, ch);
      if (tb.node >= 0) {
        const Node& add = g.nodes[static_cast<size_t>(tb.node)];
        if (!exclude.count(add.name) && !exclude.count(add.op_type)) {
          bias_adds[i] = tb;
          out = add.outputs[0];
        }
      }
    }
    int act_node = -1;
    bool act_kept = false;  // a Relu / Clip(0, x) that int8's symmetric range cannot absorb
    if (!g.isGraphOutput(out) && index.numConsumers(out) == 1) {
      const int c = index.consumers(out)[0];
      const Node& act = g.nodes[static_cast<size_t>(c)];
      // Not where a layer left in float reads the activation: it reads the float tensor (see
      // keepsFloatInput below), which an absorbed activation would leave unclipped.
      const bool float_layer_reads = readByFloatLayer(act.outputs[0]);
      if (act.domain.empty() && isZeroClip(m, act) && act.inputs[0] == out && !g.isGraphOutput(act.outputs[0]) &&
          !float_layer_reads) {
        if (symmetric) {
          act_kept = true;
        } else {
          act_node = c;
          out = act.outputs[0];
        }
      }
    }
    // A Linear layer's output is quantized only where a quantized node reads it: read by float ops
    // (attention's reshapes, GELU) it stays float, computed from the integers by both runtimes
    // (MatMulIntegerToFloat), without a rounding that nothing needs.
    if (bias_adds.count(i)) {
      bool read_quantized = false;
      for (int c : index.consumers(out)) read_quantized = read_quantized || selected.count(static_cast<size_t>(c)) > 0;
      if (!read_quantized) continue;
    }
    if (float_pool_inputs.count(out)) continue;  // the layer's output stays float for that pool
    if (act_node >= 0) absorbed[i] = static_cast<size_t>(act_node);
    kept_activations += act_kept;
    if (!g.isGraphOutput(out)) addTensor(out);
  }
  for (size_t i : selected) {  // a pool output that a quantized node reads is required, as before
    const Node& n = g.nodes[i];
    for (size_t k = 0; k < (kCompute.count(n.op_type) ? 1 : n.inputs.size()); ++k) pool_outputs.erase(n.inputs[k]);
  }
  // A Split's quantized outputs take the parameters of its input, quantized too (the union of
  // their ranges), as ONNX Runtime's quantizer shares them over such ops: the split then moves
  // bytes in both runtimes instead of running between a DequantizeLinear and two QuantizeLinears
  // with their own scales (ShuffleNet's channel shuffles).
  std::map<std::string, std::string> split_shares;  // output -> the Split's input
  std::set<std::string> split_inputs_added;          // quantized only for that: optional in saved statistics
  for (const auto& n : g.nodes) {
    if (n.op_type != "Split" || !n.domain.empty() || n.inputs.empty() || exclude.count(n.name) ||
        exclude.count(n.op_type) || g.isGraphInput(n.inputs[0]) || !isFloatValue(n.inputs[0]))
      continue;
    for (const auto& out : n.outputs)
      if (tensor_set.count(out)) split_shares[out] = n.inputs[0];
    if (std::any_of(n.outputs.begin(), n.outputs.end(), [&](const std::string& v) { return split_shares.count(v); }) &&
        !tensor_set.count(n.inputs[0])) {
      addTensor(n.inputs[0]);
      split_inputs_added.insert(n.inputs[0]);
    }
  }
  // The first input of the model only counts when it is float.
  for (const auto* in : g.realInputs())
    if (in->dtype != DType::Float32 && tensor_set.count(in->name)) {
      tensor_set.erase(in->name);
      tensors.erase(std::find(tensors.begin(), tensors.end(), in->name));
    }

  // --- statistics
  const auto loads = o.getStrings("load_calib");
  if (!loads.empty()) {
    stats_ = CalibrationStats{};
    // Each file once and each shard once: a shard given twice (s0.json s0.json) counted its
    // samples twice without a word, and with a missing shard the statistics cover part of the data.
    // Shards of different splits (0/2 with 1/3, or a whole-data file 0/1 with shards) overlap, and
    // files of different activation types hold different tensors: both refused.
    std::map<std::string, std::string> shard_file;  // "i/n" -> the file holding it
    std::map<int, std::string> split_file;           // n -> a file of that split
    // data -> (its split's number of parts, a file): a whole-data file "0/1" beside a shard of the
    // same data, or two whole-data files of it, overlap (files that record their data; shards of
    // different splits are refused by split_file, whatever their data).
    std::map<std::string, std::pair<int, std::string>> data_file;
    std::string act_file;                            // a file that records its act_type
    for (size_t k = 0; k < loads.size(); ++k) {
      for (size_t e = 0; e < k; ++e)
        if (std::filesystem::weakly_canonical(loads[e]) == std::filesystem::weakly_canonical(loads[k]))
          fail(o.key("load_calib"), ": ", loads[k], " is given twice; give each statistics file once");
      CalibrationStats one = CalibrationStats::load(loads[k]);
      if (!one.model_digest.empty() && one.model_digest != digest)
        fail(o.key("load_calib"), ": ", loads[k], " was collected on another model",
             one.model.empty() ? std::string() : " ('" + one.model + "')", " than ", m.label(),
             " after the cleanup (its graph or weights differ); collect the statistics on this model with lwc calibrate");
      if (one.model_digest.empty())
        r.notes.push_back("--load-calib: " + loads[k] +
                          " records no model digest (written before 2026-12-06), so lwc cannot check that it was collected "
                          "on this model");
      // The number of parts of the file's split (1: the whole of its data); 0 where it records none.
      const int n = one.shard.empty() ? 0 : parseShard(one.shard, loads[k] + ": shard").second;
      if (!one.data.empty() && n > 0) {
        if (const auto [it, fresh] = data_file.emplace(one.data, std::pair{n, loads[k]}); !fresh) {
          const auto& [other_n, other] = it->second;
          const std::string data = one.data.size() > 80 ? one.data.substr(0, 77) + "..." : one.data;
          const auto parts = [](int p) { return p == 1 ? std::string("the whole of it") : "shards of " + std::to_string(p); };
          if (other_n != n && (other_n == 1 || n == 1))
            fail(o.key("load_calib"), ": ", other, " and ", loads[k], " hold statistics of the same data (", data, "), ",
                 parts(other_n), " and ", parts(n), ", which overlap; give the whole-data file alone, or the shards of one split");
          if (n == 1)
            fail(o.key("load_calib"), ": ", other, " and ", loads[k], " both hold statistics of all of the same data (", data,
                 "); give one of them");
        }
      }
      // "0/1" is the whole of some data: files of different data merge (calibration sets split by
      // folder); only shards of a split (n > 1) are checked against each other.
      if (n > 1) {
        if (const auto [it, fresh] = shard_file.emplace(one.shard, loads[k]); !fresh)
          fail(o.key("load_calib"), ": ", loads[k], " holds shard ", one.shard, " of the data, as ", it->second,
               " does; give each shard once");
        split_file.emplace(n, loads[k]);
        if (split_file.size() > 1)
          fail(o.key("load_calib"), ": ", split_file.begin()->second, " and ", std::next(split_file.begin())->second,
               " are shards of different splits of the data (of ", split_file.begin()->first, " and of ",
               std::next(split_file.begin())->first, " parts), which overlap; give the shards of one split");
      }
      if (!one.act_type.empty() && !stats_.act_type.empty() && one.act_type != stats_.act_type)
        fail(o.key("load_calib"), ": ", loads[k], " was collected for --act-type ", one.act_type, " but ", act_file,
             " for ", stats_.act_type, "; give files of one activation type");
      if (!one.act_type.empty() && act_file.empty()) act_file = loads[k];
      stats_.merge(one);
    }
    if (split_file.size() == 1 && shard_file.size() == loads.size() && static_cast<int>(loads.size()) < split_file.begin()->first) {
      const int n = split_file.begin()->first;
      std::string missing;
      for (int i = 0; i < n; ++i)
        if (!shard_file.count(std::to_string(i) + "/" + std::to_string(n)))
          missing += (missing.empty() ? "" : ", ") + std::to_string(i) + "/" + std::to_string(n);
      r.notes.push_back("--load-calib: " + std::to_string(loads.size()) + " of " + std::to_string(n) +
                        " shards (missing " + missing + "); the statistics cover only their part of the calibration data");
    }
    // Statistics saved before pool outputs were quantized (2026-11-30) lack them: those pools stay
    // in float, as they were then.
    std::erase_if(tensors, [&](const std::string& t) {
      // Statistics saved before Split inputs were quantized (2026-12-05) lack them: those Splits'
      // outputs keep their own parameters.
      if (split_inputs_added.count(t) && (!stats_.tensors.count(t) || stats_.tensors.at(t).count() == 0)) {
        r.notes.push_back("'" + t + "': no statistics in " + loads[0] +
                          "; the Split reading it quantizes its outputs with their own parameters");
        tensor_set.erase(t);
        return true;
      }
      const bool missing = pool_outputs.count(t) && (!stats_.tensors.count(t) || stats_.tensors.at(t).count() == 0);
      if (missing) {
        r.notes.push_back("'" + t + "': no statistics in " + loads[0] +
                          "; the pool producing it stays in float (recollect with lwc calibrate to quantize it)");
        tensor_set.erase(t);
      }
      return missing;
    });
    const std::string act = o.getString("act_type");
    for (const auto& t : tensors)
      if (!stats_.tensors.count(t) || stats_.tensors.at(t).count() == 0) {
        if (!stats_.act_type.empty() && stats_.act_type != act)
          fail(loads[0], ": has no statistics for tensor '", t, "' of ", m.label(), ": they were collected for --act-type ",
               stats_.act_type, ", which quantizes other tensors; collect them for ", act, " with lwc calibrate --act-type ", act);
        fail(loads[0], ": has no statistics for tensor '", t, "' of ", m.label(),
             "; collect them on this model (after the same cleanup, with the same --act-type, --exclude and --keep-fp32) "
             "with lwc calibrate");
      }
  } else {
    if (!ctx.calib) fail(o.where(), ": quantize_static needs calibration data (--calib DIR or data.calib)");
    CollectOptions co;
    co.max_samples = o.getInt("calib_samples");
    std::tie(co.shard, co.shards) = parseShard(o.getString("calib_shard"), o.key("calib_shard"));
    co.threads = ctx.threads;
    co.status = ctx.status;
    // The MatMul outputs inside bias Adds too: saved statistics (lwc calibrate, which quantizes to
    // QDQ) then also serve format qoperator, which quantizes them.
    std::vector<std::string> collect = tensors;
    for (const auto& [i, tb] : bias_adds)
      if (!tensor_set.count(g.nodes[i].outputs[0])) collect.push_back(g.nodes[i].outputs[0]);
    stats_ = collectStats(m, collect, *ctx.calib, co);
    stats_.shard = std::to_string(co.shard) + "/" + std::to_string(co.shards);
    // More samples asked for than the data (or its limit) holds: calibrated on what there is, said.
    if (co.max_samples > 0 && stats_.samples < co.max_samples)
      r.notes.push_back(o.key("calib_samples") + " " + std::to_string(co.max_samples) + ": the calibration data" +
                        (co.shards > 1 ? "'s shard " + stats_.shard : "") + " holds " + std::to_string(stats_.samples) +
                        " samples" + (ctx.calib->options.limit > 0 ? " within its limit of " + std::to_string(ctx.calib->options.limit) : "") +
                        "; calibrated on those");
  }
  if (loads.empty()) stats_.act_type = o.getString("act_type");
  stats_.model_digest = digest;
  const std::string save = o.getString("save_calib");
  if (!save.empty()) {
    const std::string text = dumpJson(stats_.toJson(), -1) + "\n";
    if (ctx.outputs) ctx.outputs->stage(save, text);  // in place with the model, or not at all
    else writeFileAtomic(save, text);
  }

  const Calibrator cal = parseCalibrator(o.getString("calibrator"), o.key("calibrator"));
  std::map<std::string, QParams> qp;
  for (const auto& t : tensors) {
    const TensorStats& st = stats_.tensors.at(t);
    if (!std::isfinite(st.min()) || !std::isfinite(st.max()))
      fail(m.label(), ": tensor '", t, "' takes infinite values on the calibration data (range [", st.min(), ", ", st.max(),
           "]); check the model's weights and the data, or keep its producer in float with --exclude");
    qp[t] = activationParams(computeRange(st, cal, o.getFloat("percentile"), symmetric), symmetric);
  }
  const int64_t softmax_scales_raised = raiseSoftmaxScales(m, types, symmetric, qp, r.notes);
  for (const auto& [out, in] : split_shares)
    if (qp.count(out) && qp.count(in)) qp[out] = qp[in];

  // --- GPTQ: each quantized layer's int8 weights (and moved float bias) from the Gram matrix of
  // its input on the calibration data (float model), layer chunk by layer chunk.
  struct GptqLayer {
    Tensor q;
    Tensor bias;            ///< empty when the layer has no bias GPTQ could move
    std::string add_const;  ///< a MatMul's bias: the constant of the Add after it, moved in place
  };
  std::map<size_t, GptqLayer> gptq_layers_done;
  double gptq_err = 0, nearest_err = 0;
  int64_t gptq_channels_nearest = 0;
  // The float bias of compute node n that quantization would read (Conv B, Gemm C with beta 1).
  auto floatBias = [&](const Node& n) -> const Tensor* {
    const bool gemm_beta_ok = n.op_type != "Gemm" || n.attrFloat("beta", 1.0f) == 1.0f;
    return n.hasInput(2) && gemm_beta_ok ? floatConstant(g, n.inputs[2]) : nullptr;
  };
  // A MatMul (or a Gemm without C) whose bias is the float constant of the one Add after it, as
  // exporters write Linear layers on 3-D inputs, where that Add alone reads the constant: the Add
  // (node -1 otherwise). GPTQ and bias correction move that constant as the layer's bias.
  auto movableBiasAdd = [&](const Node& n, int64_t ch) -> TrailingBias {
    if (n.hasInput(2)) return {};
    const TrailingBias tb = trailingBiasAdd(g, index, n.outputs[0], ch);
    if (tb.node < 0 || index.numConsumers(g.nodes[static_cast<size_t>(tb.node)].inputs[tb.input]) != 1) return {};
    return tb;
  };
  // The smallest weight scale per channel (one for per-tensor weights) at which the layer's bias
  // fits int32 at s_b = s_x · s_w, with room to spare (2^30): a channel whose weights are almost
  // zero (a BatchNormalization switched off by training, gamma ~ 0, beta != 0, folded in) would
  // otherwise need a float bias, which ONNX Runtime's optimized graph miscomputes. Raising the
  // scale costs that channel's weights their resolution, which they hardly had; ONNX Runtime's
  // quantizer does the same. Empty where nothing needs raising.
  auto biasScaleFloor = [&](const Node& n, int64_t ch) -> std::vector<float> {
    const Tensor* b = floatBias(n);
    const auto xq = qp.find(n.inputs[0]);
    if (!b || xq == qp.end() || g.isGraphInput(n.inputs[2]) || b->rank() != 1 || b->numel() != ch) return {};
    std::vector<float> f(static_cast<size_t>(per_channel ? ch : 1), 0.0f);
    bool any = false;
    for (int64_t c = 0; c < ch; ++c) {
      const double need = std::fabs(b->at(c)) / (double(xq->second.scale) * 1073741824.0);
      float& v = f[static_cast<size_t>(per_channel ? c : 0)];
      v = std::max(v, static_cast<float>(need));
      any = any || need > 0;
    }
    return any ? f : std::vector<float>{};
  };
  if (gptq) {
    std::map<std::string, int> uses;
    for (size_t i : compute) ++uses[g.nodes[i].inputs[1]];
    std::vector<size_t> nodes;
    for (size_t i : compute) {
      const Node& n = g.nodes[i];
      const Tensor& w = g.initializers.at(n.inputs[1]);
      if (uses.at(n.inputs[1]) != 1)
        r.notes.push_back(n.describe() + ": nearest rounding (its weights are shared with another layer)");
      else if (w.numel() / w.dim(static_cast<size_t>(weight_axis.at(i))) + 1 > kGptqMaxColumns)
        r.notes.push_back(n.describe() + ": nearest rounding (more than " + std::to_string(kGptqMaxColumns - 1) +
                          " inputs per output: GPTQ's O(K³) work and K x K matrices would not fit)");
      else
        nodes.push_back(i);
    }
    auto ds = openCalibration(ctx, m, o.getInt("calib_samples"));
    layerGrams(m, nodes, *ds, g.realInputs().at(0)->name, ctx.calib->batch, ctx.threads, kGptqRowsPerSample, true,
               [&](size_t k, LayerGram& lg) {
                 const size_t i = nodes[k];
                 const Node& n = g.nodes[i];
                 if (!lg.unsupported.empty()) {
                   r.notes.push_back(n.describe() + ": nearest rounding (" + lg.unsupported + ")");
                   return;
                 }
                 const Tensor& w = g.initializers.at(n.inputs[1]);
                 const int axis = weight_axis.at(i);
                 const int64_t ch = w.dim(static_cast<size_t>(axis));
                 Tensor scale, zp;
                 const Tensor nearest_q =
                     quantizeWeights(w, axis, per_channel, scale, zp, w_qmax, biasScaleFloor(n, ch));  // as the rewrite does
                 const Tensor* b = floatBias(n);
                 std::vector<float> bias;
                 if (b && b->rank() == 1 && b->numel() == ch && !g.isGraphInput(n.inputs[2]))
                   for (int64_t c = 0; c < ch; ++c) bias.push_back(static_cast<float>(b->at(c)));
                 std::string add_const;
                 if (const TrailingBias tb = bias.empty() ? movableBiasAdd(n, ch) : TrailingBias{}; tb.node >= 0) {
                   add_const = g.nodes[static_cast<size_t>(tb.node)].inputs[tb.input];
                   const Tensor& t = g.initializers.at(add_const);
                   bias.assign(t.data<float>(), t.data<float>() + ch);
                 }
                 // One line per layer (`lwc -v`, or the status line): on a large model the rounding
                 // takes minutes (resnet50's 3x3x512 layers: K = 4608, O(K³) each).
                 if (ctx.progress)
                   ctx.progress("gptq: layer " + std::to_string(k + 1) + "/" + std::to_string(nodes.size()) + " " +
                                n.describe() + ": " + std::to_string(ch) + " channels, " +
                                std::to_string(lg.form.Kb()) + " columns");
                 GptqResult gr = gptqRound(lg, w, nearest_q, bias, scale, w_qmax, 0.01, ctx.threads);
                 if (gr.groups_not_pd + gr.groups_not_finite > 0)
                   r.notes.push_back(n.describe() + ": nearest rounding in " +
                                     std::to_string(gr.groups_not_pd + gr.groups_not_finite) + " of " +
                                     std::to_string(lg.form.groups) + " groups (" +
                                     (gr.groups_not_finite ? "non-finite values in its input on the calibration data"
                                                           : "XᵀX + λI not positive definite") +
                                     ")");
                 if (std::isfinite(gr.error) && std::isfinite(gr.error_nearest)) {
                   gptq_err += gr.error;
                   nearest_err += gr.error_nearest;
                 }
                 gptq_channels_nearest += gr.channels_nearest;
                 GptqLayer done{std::move(gr.q), Tensor(), add_const};
                 if (!bias.empty()) done.bias = Tensor::fromVector<float>({ch}, gr.bias);
                 gptq_layers_done.emplace(i, std::move(done));
               });
  }
  const int64_t gptq_layers = static_cast<int64_t>(gptq_layers_done.size());

  // An excluded node between quantized tensors (an Add after two quantized Convs, read by a
  // quantized one) reads DequantizeLinears and feeds only a QuantizeLinear: ONNX Runtime fuses it
  // into an integer op (QLinearAdd) all the same. --exclude Add changed nothing, without a word.
  // Only ops it has such a fusion for, and only where the QuantizeLinear is the value's one reader
  // (a float layer reading it, or a graph output, keeps the op in float).
  static const std::set<std::string> kOrtFusesQdq = {"Add", "Mul", "Concat", "MaxPool", "AveragePool",
                                                     "GlobalAveragePool", "Sigmoid", "LeakyRelu"};
  auto onlyQuantizedReaders = [&](const std::string& v) {
    return tensor_set.count(v) > 0 && !g.isGraphOutput(v) && !readByFloatLayer(v);
  };
  for (const auto& n : g.nodes) {
    if (!n.domain.empty() || !kOrtFusesQdq.count(n.op_type) || (!exclude.count(n.name) && !exclude.count(n.op_type)) ||
        n.outputs.size() != 1)
      continue;
    bool all_in = false;
    for (const auto& in : n.inputs) {
      if (in.empty() || g.initializers.contains(in)) continue;
      if (!tensor_set.count(in)) {
        all_in = false;
        break;
      }
      all_in = true;
    }
    const std::string& out = n.outputs[0];
    bool out_q = onlyQuantizedReaders(out);
    // Through a ReLU to a uint8 QuantizeLinear: ONNX Runtime drops the ReLU into the quantization
    // (with int8 activations' zero point 0 it cannot, and the op stays float).
    if (!out_q && !symmetric && !tensor_set.count(out) && !g.isGraphOutput(out) && index.numConsumers(out) == 1) {
      const Node& a = g.nodes[static_cast<size_t>(index.consumers(out)[0])];
      out_q = a.domain.empty() && (a.op_type == "Relu" || a.op_type == "Clip") && !a.outputs.empty() &&
              onlyQuantizedReaders(a.outputs[0]);
    }
    if (all_in && out_q)
      r.notes.push_back(n.describe() + ": excluded, but its inputs are quantized for the layers before it and its output "
                        "for the layers after it, so ONNX Runtime fuses it into an integer op (e.g. QLinearAdd) all the "
                        "same; exclude those layers too to keep it in float");
  }

  // --- rewrite: compute everything first, then edit the graph
  std::vector<Node> new_nodes;
  std::vector<std::pair<std::string, Tensor>> new_inits;
  std::map<std::string, std::string> dq_of;  // tensor -> its DequantizeLinear output
  std::set<std::string> taken;
  auto fresh = [&](const std::string& base) {
    std::string n = g.uniqueName(base);
    for (int k = 1; taken.count(n); ++k) n = g.uniqueName(base + "_" + std::to_string(k));
    taken.insert(n);
    return n;
  };
  // An absorbed activation's QuantizeLinear reads the layer's output (Conv -> Q, not Conv -> Relu
  // -> Q), which keeps its own name: the activation's output name does not appear in the quantized
  // model, so `lwc compare --per-layer` does not set the unclipped layer output against the float
  // model's ReLU output under one name (-5 dB "errors" on lenet5's ReLUs).
  std::map<std::string, std::string> q_input;
  for (const auto& [ci, ai] : absorbed) {
    const auto ba = bias_adds.find(ci);
    q_input[g.nodes[ai].outputs[0]] = g.nodes[ba == bias_adds.end() ? ci : static_cast<size_t>(ba->second.node)].outputs[0];
  }
  for (const auto& t : tensors) {
    const QParams& q = qp.at(t);
    const std::string s = fresh(t + "_scale"), z = fresh(t + "_zero_point"), tq = fresh(t + "_quantized"),
                      tdq = fresh(t + "_dequantized");
    new_inits.push_back({s, Tensor::scalar<float>(q.scale)});
    new_inits.push_back({z, symmetric ? Tensor::scalar<int8_t>(0) : Tensor::scalar<uint8_t>(static_cast<uint8_t>(q.zero_point))});
    const auto qi = q_input.find(t);
    new_nodes.push_back(makeNode("QuantizeLinear", fresh(t + "_QuantizeLinear"), {qi == q_input.end() ? t : qi->second, s, z}, tq));
    new_nodes.push_back(makeNode("DequantizeLinear", fresh(t + "_DequantizeLinear"), {tq, s, z}, tdq));
    dq_of[t] = tdq;
  }
  std::map<std::string, std::string> weight_dq;  // weight name -> DQ output
  std::map<std::string, Tensor> weight_scale;
  std::map<size_t, std::pair<std::string, std::string>> new_inputs;  // node -> (weight dq, bias dq)
  int64_t weights_q = 0, biases_q = 0;
  for (size_t i : compute) {
    const Node& n = g.nodes[i];
    const std::string& wname = n.inputs[1];
    const int axis = weight_axis.at(i);
    const Tensor* b = floatBias(n);
    Tensor gptq_bias;  // the bias GPTQ moved
    if (!weight_dq.count(wname)) {
      Tensor scale, zp;
      const Tensor& w0 = g.initializers.at(wname);
      Tensor wq = quantizeWeights(w0, axis, per_channel, scale, zp, w_qmax, biasScaleFloor(n, w0.dim(static_cast<size_t>(axis))));
      const auto done = gptq_layers_done.find(i);
      if (done != gptq_layers_done.end()) {
        wq = std::move(done->second.q);
        if (!done->second.add_const.empty()) {  // the Add's constant, in its own shape ([N] or [1, N])
          const std::string& c = done->second.add_const;
          g.initializers.set(c, done->second.bias.reshaped(g.initializers.at(c).shape()));
        } else if (!done->second.bias.empty()) {
          gptq_bias = std::move(done->second.bias);
          b = &gptq_bias;
        }
      }
      const std::string qn = fresh(wname + "_quantized"), sn = fresh(wname + "_scale"), zn = fresh(wname + "_zero_point"),
                        dn = fresh(wname + "_dequantized");
      new_inits.push_back({qn, wq});
      new_inits.push_back({sn, scale});
      new_inits.push_back({zn, zp});
      Node dq = makeNode("DequantizeLinear", fresh(wname + "_DequantizeLinear"), {qn, sn, zn}, dn);
      if (per_channel) dq.setAttr("axis", int64_t(axis));
      new_nodes.push_back(dq);
      weight_dq[wname] = dn;
      weight_scale[wname] = scale;
      ++weights_q;
    }
    std::string bias_dq;
    const auto xq = qp.find(n.inputs[0]);
    if (b && xq != qp.end() && !g.isGraphInput(n.inputs[2])) {
      const Tensor& w = g.initializers.at(wname);
      const int64_t ch = w.dim(static_cast<size_t>(axis));
      if (b->numel() == ch && b->rank() == 1) {
        // s_b = s_x · s_w, as the integer kernels compute it.
        const Tensor& scale = weight_scale.at(wname);
        Tensor bs(DType::Float32, {ch});
        Tensor bq(DType::Int32, {ch});
        bool fits = true;
        for (int64_t c = 0; c < ch; ++c) {
          const float sw = scale.data<float>()[per_channel ? c : 0];
          const float sb = xq->second.scale * sw;
          bs.data<float>()[c] = sb;
          const double v = std::nearbyint(b->at(c) / double(sb));
          fits = fits && std::fabs(v) < 2147483647.0;
          bq.data<int32_t>()[c] = fits ? static_cast<int32_t>(v) : 0;
        }
        if (fits) {
          const std::string& bname = n.inputs[2];
          const std::string qn = fresh(bname + "_quantized"), sn = fresh(bname + "_scale"), zn = fresh(bname + "_zero_point"),
                            dn = fresh(bname + "_dequantized");
          new_inits.push_back({qn, bq});
          // Per-tensor weights (opset < 13, whose DequantizeLinear has no axis): one bias scale.
          new_inits.push_back({sn, per_channel ? bs : Tensor::scalar<float>(bs.data<float>()[0])});
          new_inits.push_back({zn, per_channel ? Tensor(DType::Int32, {ch}) : Tensor::scalar<int32_t>(0)});
          Node dq = makeNode("DequantizeLinear", fresh(bname + "_DequantizeLinear"), {qn, sn, zn}, dn);
          if (per_channel) dq.setAttr("axis", int64_t(0));
          new_nodes.push_back(dq);
          bias_dq = dn;
          ++biases_q;
          bias_fixes.push_back({n.describe(), n.outputs[0], qn, std::vector<float>(bs.data<float>(), bs.data<float>() + ch), 1});
        } else {
          r.notes.push_back(n.describe() + ": bias kept in float (does not fit int32 at scale s_x·s_w)");
        }
      }
    }
    if (bias_dq.empty() && !gptq_bias.empty()) {  // a float bias: GPTQ's moved copy
      bias_dq = fresh(n.inputs[2] + "_gptq");
      new_inits.push_back({bias_dq, gptq_bias});
    }
    new_inputs[i] = {weight_dq.at(wname), bias_dq};
    // Without an int32 bias, bias correction moves the Add constant after a MatMul instead.
    if (bias_correction && bias_dq.empty()) {
      const int64_t ch = g.initializers.at(wname).dim(static_cast<size_t>(axis));
      if (const TrailingBias tb = movableBiasAdd(n, ch); tb.node >= 0) {
        const Node& add = g.nodes[static_cast<size_t>(tb.node)];
        bias_fixes.push_back({add.describe(), add.outputs[0], add.inputs[tb.input], {}, -1});
      }
    }
  }

  // --- edit
  std::set<size_t> drop;
  std::vector<std::string> old_consts;
  for (const auto& [ci, ai] : absorbed) {
    drop.insert(ai);
    // A Clip's bounds go with it (when nothing else reads them).
    for (size_t k = 1; k < g.nodes[ai].inputs.size(); ++k) old_consts.push_back(g.nodes[ai].inputs[k]);
  }
  for (const auto& [i, io] : new_inputs) {
    Node& n = g.nodes[i];
    old_consts.push_back(n.inputs[1]);
    n.inputs[1] = io.first;
    if (!io.second.empty()) {
      old_consts.push_back(n.inputs[2]);
      n.inputs[2] = io.second;
    }
  }
  // A Conv / ConvTranspose / Gemm left in float (excluded, kept, or not quantizable) keeps reading
  // the float tensor, not its DequantizeLinear: ONNX Runtime's WeightBiasQuantization (basic
  // level and up) quantizes the float weights of any such node whose input comes from a
  // DequantizeLinear, per tensor, so the layers a user kept in float ran as INT8 there (mnv2 with
  // its 17 depthwise convolutions excluded: 93.9 % in lwc, 89.9 % in ONNX Runtime).
  // (An activation such a layer reads was not absorbed above, so the float tensor is the clipped one.)
  // So does a MaxPool on the way to one (see readByFloatLayer).
  auto keepsFloatInput = [&](size_t i, size_t k) { return k == 0 && (isFloatWeightLayer(i) || maxPoolToFloatLayer(i)); };
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (size_t k = 0; k < g.nodes[i].inputs.size(); ++k) {
      auto it = dq_of.find(g.nodes[i].inputs[k]);
      if (it != dq_of.end() && !keepsFloatInput(i, k)) g.nodes[i].inputs[k] = it->second;
    }
  std::vector<Node> kept;
  for (size_t i = 0; i < g.nodes.size(); ++i)
    if (!drop.count(i)) kept.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(kept);
  for (auto& n : new_nodes) g.nodes.push_back(std::move(n));
  for (auto& [name, t] : new_inits) g.initializers.set(name, std::move(t));
  dropUnusedConstants(g, old_consts);
  // Absorbed activations' outputs now come from the compute node before saturation: drop stale types.
  std::erase_if(g.value_info, [&](const ValueInfo& v) { return tensor_set.count(v.name) != 0; });
  topoSort(g, m.label());
  const int64_t clips_dropped = dropInertClips(m);
  const int64_t outputs_shielded = shieldTransposedGraphOutputs(m, r.notes);
  if (m.opsetFor("") < 13 && per_channel) m.setOpset("", 13);
  const int64_t biases_corrected =
      bias_correction ? correctQuantizedBiases(m, fp32, bias_fixes, ctx, o.getInt("calib_samples"), r) : 0;
  if (bias_correction && bias_fixes.size() < compute.size())
    r.notes.push_back("bias_correction: " + std::to_string(compute.size() - bias_fixes.size()) + " of " +
                      std::to_string(compute.size()) +
                      " quantized layers have no bias to move (no int32 bias and no float Add constant after them) and are not corrected");

  if (gptq_layers > 0) {
    std::ostringstream note;
    note << std::setprecision(3) << "weight_rounding gptq: " << gptq_layers << " of " << compute.size()
         << " layers; weight-rounding error of their outputs on the calibration rows GPTQ was fitted to (in-sample) "
         << (nearest_err > 0 ? 100.0 * gptq_err / nearest_err : 100.0) << " % of round-to-nearest's";
    if (gptq_channels_nearest > 0) note << " (" << gptq_channels_nearest << " channels kept round-to-nearest: GPTQ was not better there)";
    r.notes.push_back(note.str());
  }

  dq_names_ = dq_of;
  dq_weights_ = weight_dq;
  int64_t qoperator_layers = 0;
  qdq_.reset();
  if (o.getString("format") == "qoperator") {
    qdq_ = m;  // for the per-tensor error table (the table was empty for qoperator files)
    qoperator_layers = engine::qdqToQOperator(g);
    std::vector<std::string> all;
    for (const auto& [name, t] : g.initializers.items()) all.push_back(name);
    dropUnusedConstants(g, all);
  }
  if (kept_activations > 0)
    r.notes.push_back(std::to_string(kept_activations) + " Relu/Clip(0, x) after quantized layers stay as float ops "
                      "between DequantizeLinear and QuantizeLinear: int8 activations are symmetric and cannot absorb "
                      "them as uint8 ones do. TensorRT fuses such a pattern; ONNX Runtime's CPU provider runs it in "
                      "float between its integer kernels, which can leave the INT8 model slower there than the float "
                      "one. For ONNX Runtime, use --act-type uint8 (the default)");
  r.stats = {{"tensors_quantized", static_cast<int64_t>(tensors.size())},
             {"tensors_calibrated", static_cast<int64_t>(stats_.tensors.size())},
             {"weights_quantized", weights_q},
             {"biases_quantized", biases_q},
             {"biases_corrected", biases_corrected},
             {"layers_gptq", gptq_layers},
             {"layers_quantized", static_cast<int64_t>(compute.size())},
             {"activations_absorbed", static_cast<int64_t>(absorbed.size())},
             {"activations_kept_float", kept_activations},
             {"clips_saturated", clips_dropped},
             {"softmax_scales_raised", softmax_scales_raised},
             {"graph_outputs_shielded", outputs_shielded},
             {"bias_adds_inside", static_cast<int64_t>(bias_adds.size())},
             {"calibration_samples", stats_.samples},
             {"qoperator_layers", qoperator_layers}};
  r.changed = true;
  return r;
}

std::vector<TensorError> quantizationErrors(const Model& fp32, const Model& q, const QuantizeStatic& pass,
                                            const DataSpec& data, int64_t max_samples, const std::string& samples_option,
                                            int threads) {
  std::vector<TensorError> out;
  // Weights: the dequantized tensor the DQ node computes, against the float original.
  for (const auto& [w, dq] : pass.dequantizedWeights()) {
    const int p = producerIndex(q.graph, dq);
    if (p < 0 || !fp32.graph.initializers.contains(w)) continue;
    const Node& n = q.graph.nodes[static_cast<size_t>(p)];
    std::vector<const Tensor*> ins;
    for (const auto& i : n.inputs) ins.push_back(i.empty() ? nullptr : q.graph.initializers.find(i));
    auto v = engine::evaluateNode(q, n, ins);
    if (!v) continue;
    ErrorMeter e;
    e.add(fp32.graph.initializers.at(w), (*v)[0]);
    out.push_back({w, "weight", e.sqnrDb(), e.cosine(), e.elements()});
  }
  // Activations.
  DataOptions o = data.options;
  fitToModel(o, fp32);
  capSamples(o, max_samples, samples_option);
  auto ds = openDataset(o);
  engine::SessionOptions fo;
  fo.observable = true;
  fo.threads = threads;
  // The quantized model node by node (every DequantizeLinear output observable): the fused integer
  // kernels compute the same values up to rare one-step differences in requantization ties.
  engine::SessionOptions qo;
  qo.threads = threads;
  qo.observable = true;
  engine::Session sf(fp32, fo), sq(q, qo);
  std::map<std::string, std::string> back;  // dq name -> float name
  for (const auto& [t, dq] : pass.dequantizedNames()) back[dq] = t;
  std::map<std::string, ErrorMeter> meters;
  const std::string in_f = sf.inputNames().at(0), in_q = sq.inputNames().at(0);
  // The float values of every quantized tensor of a batch are kept while the quantized model runs:
  // at most 16 samples, fewer where they would pass the evaluation budget (as lwc compare --per-layer).
  const int64_t batch = evaluationBatch(activationBytesPerSample(fp32).total + activationBytesPerSample(q).peak,
                                       std::min<int64_t>(data.batch, 16));
  while (auto b = ds->next(batch)) {
    std::map<std::string, Tensor> ref;
    if (pass.dequantizedNames().count(in_f)) ref[in_f] = b->inputs;
    sf.run({{in_f, b->inputs}}, [&](const std::string& name, const Tensor& v) {
      if (pass.dequantizedNames().count(name)) ref[name] = v.clone();
    });
    sq.run({{in_q, b->inputs}}, [&](const std::string& name, const Tensor& v) {
      auto it = back.find(name);
      if (it == back.end()) return;
      auto r = ref.find(it->second);
      if (r != ref.end() && r->second.shape() == v.shape()) meters[it->second].add(r->second, v);
    });
  }
  for (const auto& [t, e] : meters) out.push_back({t, "activation", e.sqnrDb(), e.cosine(), e.elements()});
  std::stable_sort(out.begin(), out.end(), [](const TensorError& a, const TensorError& b) { return a.sqnr_db < b.sqnr_db; });
  return out;
}

bool transposedToQuantizeLinear(const Graph& g, const GraphIndex& index, const std::string& value) {
  for (const int t : index.consumers(value)) {
    const Node& tn = g.nodes[static_cast<size_t>(t)];
    if (!tn.domain.empty() || tn.op_type != "Transpose" || tn.outputs.size() != 1) continue;
    for (const int q : index.consumers(tn.outputs[0])) {
      const Node& qn = g.nodes[static_cast<size_t>(q)];
      if (qn.domain.empty() && qn.op_type == "QuantizeLinear") return true;
    }
  }
  return false;
}

}  // namespace lwc::passes
