#include "passes/prune_channels.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <cmath>
#include <iomanip>
#include <map>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <unordered_map>

#include "lwc/analysis.h"
#include "lwc/dataset.h"
#include "lwc/engine.h"
#include "lwc/graph_edit.h"
#include "lwc/shape_inference.h"
#include "passes/weight_layers.h"
#include "passes/lsq_recovery.h"
#include "passes/quantize_static.h"

namespace lwc::passes {

using nlohmann::json;

std::vector<OptionSpec> PruneChannels::optionSpecs() const {
  OptionSpec ratio{"ratio", OptionType::Float, 0.3, "Fraction of each prunable group's channels to remove, in [0, 1)"};
  ratio.min = 0;
  ratio.max = 1;
  ratio.max_exclusive = true;
  OptionSpec macs{"macs_reduction", OptionType::Float, 0.0,
                  "> 0: instead of ratio, remove the same fraction of every group so that MACs drop by at least this much"};
  macs.min = 0;
  macs.max = 0.95;
  OptionSpec imp{"importance", OptionType::String, "l1", "l1 | l2 (filter norms) | bn_gamma (|γ| of BatchNormalization; before fuse_batchnorm)"};
  imp.choices = {"l1", "l2", "bn_gamma"};
  OptionSpec minc{"min_channels", OptionType::Int, 4, "Keep at least this many channels per group"};
  minc.min = 1;
  OptionSpec round{"round_to", OptionType::Int, 0,
                   "Round each group's kept channel count up to a multiple of this; 0 = auto: 16 (or 8) where the "
                   "group's original count is a multiple of it, so blocked CPU kernels (ONNX Runtime's NCHWc) still apply"};
  round.min = 0;
  round.max = 256;
  OptionSpec recover{"recover", OptionType::String, "none",
                     "none | lsq: re-fit each consumer layer from the kept channels by least squares (needs calibration data)"};
  recover.choices = {"none", "lsq"};
  OptionSpec rows{"lsq_rows", OptionType::Int, 16, "lsq: sampled output positions per calibration sample"};
  rows.min = 1;
  rows.max = 4096;
  OptionSpec damp{"lsq_damping", OptionType::Float, 1e-3, "lsq: ridge towards the layer before the pipeline's first lsq step (on one step: the current weights), relative to the mean input energy"};
  damp.min = 0;
  damp.max = 1e3;
  return {ratio, macs, imp,
          {"exclude", OptionType::StringList, json::array(), "Producer node names or op types whose channels stay"},
          minc, round, recover, rows, damp, lsqCvRowsOption()};
}

bool PruneChannels::needsCalibration(const PassOptions& o) const { return o.getString("recover") != "none"; }

bool PruneChannels::usesCalibration(const PassOptions& o) const {
  return needsCalibration(o) || o.getFloat("macs_reduction") > 0;
}

void PruneChannels::validate(const PassOptions& o) const {
  if (o.getFloat("macs_reduction") > 0 && o.given("ratio"))
    fail(o.key("ratio"), ": ", o.ref("macs_reduction"), " sets the fraction of channels per group; give one of them");
  checkLsqOptionsApply(o);
}

namespace {

enum class Role { Source, Sink, DwConv, BatchNorm, ConstOperand };

struct Member {
  std::string tensor;  // the tensor of the group this member touches
  size_t node;
  Role role;
  size_t input = 0;  // ConstOperand: which input is the constant
  int axis = 0;      // ConstOperand: channel axis within the constant
  int64_t spread = 1;  // Sink after a Flatten of [N, C, H, W]: each channel is `spread` consecutive inputs
};

struct Group {
  std::vector<std::string> tensors;
  std::vector<Member> members;
  std::string blocked;  // reason, empty when prunable
  int64_t channels = -1;
  std::vector<int64_t> keep;
  /// The output of this Concat (node index) along the channels, with no channels of its own: it
  /// keeps what its inputs' groups keep. -1 for a group whose channels layers produce.
  int64_t concat = -1;
  /// The output `split_output` of this Split (node index) along the channels: it keeps what the
  /// Split's input keeps of its segment, and layers whose outputs meet it (a residual Add) keep
  /// the same channels. -1 for other groups.
  int64_t split = -1, split_output = -1;
  bool derived() const { return concat >= 0 || split >= 0; }
  bool hasSource() const {
    return std::any_of(members.begin(), members.end(), [](const Member& x) { return x.role == Role::Source; });
  }
};

/// A Concat along the channels: its output group and, per input in order, the input's group (-1:
/// channels nothing prunes, such as the image) and channel count.
struct ConcatLink {
  size_t node;
  size_t out_group;
  std::vector<std::pair<int64_t, int64_t>> segments;
};

/// A Split along the channels: its input's group (-1: channels nothing prunes) and, per output in
/// order, the output's group and segment size.
struct SplitLink {
  size_t node;
  int64_t in_group;
  std::vector<std::pair<size_t, int64_t>> outputs;
};

class UnionFind {
 public:
  void add(const std::string& a) { parent_.try_emplace(a, a); }
  std::string find(const std::string& a) {
    add(a);
    std::string r = a;
    while (parent_[r] != r) r = parent_[r];
    for (std::string x = a; parent_[x] != r;) {
      std::string nx = parent_[x];
      parent_[x] = r;
      x = nx;
    }
    return r;
  }
  void unite(const std::string& a, const std::string& b) {
    const std::string ra = find(a), rb = find(b);
    if (ra != rb) parent_[std::max(ra, rb)] = std::min(ra, rb);  // deterministic representative
  }
  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    for (const auto& [a, b] : parent_) k.push_back(a);
    std::sort(k.begin(), k.end());
    return k;
  }

 private:
  std::unordered_map<std::string, std::string> parent_;
};

const std::set<std::string> kUnary = {"Relu",  "Clip",     "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish",
                                      "Tanh",  "Identity", "Elu",       "Selu",    "Softplus",    "Mish",
                                      "Gelu",  "Neg",       "Abs",     "Sqrt",        "Exp",      "Erf"};
const std::set<std::string> kPool = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"};
const std::set<std::string> kBinary = {"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"};
const std::set<std::string> kReduce = {"ReduceMean", "ReduceMax",  "ReduceMin",       "ReduceSum",       "ReduceProd",
                                       "ReduceL1",   "ReduceL2",   "ReduceSumSquare", "ReduceLogSum",    "ReduceLogSumExp"};

/// Where a tensor of rank >= 3 keeps a group's channels: axis 1 (NCHW convolutions) or the last
/// axis (Linear layers on tokens, channels-last MLPs: MatMul with constant [K, N] weights). In a
/// rank-2 tensor [N, C] the two are the same axis.
constexpr int kAxis1 = 1, kLastAxis = 2, kEitherAxis = kAxis1 | kLastAxis;

/// The axes a Reduce*, Squeeze or Unsqueeze node names: its `axes` attribute, or its constant second
/// input (Squeeze/Unsqueeze/ReduceSum from opset 13, every Reduce from 18); nullopt when it names
/// none (all axes) or they are computed at run time.
std::optional<std::vector<int64_t>> namedAxes(const Graph& g, const Node& n) {
  if (n.hasInput(1)) {
    const Tensor* t = intConstant(g, n.inputs[1]);
    if (!t) return std::nullopt;
    return intValues(*t);
  }
  if (n.hasAttr("axes")) return n.attrInts("axes");
  return std::nullopt;
}

/// Copy of `t` keeping only indices `keep` along `axis`.
Tensor sliceAxis(const Tensor& t, int axis, const std::vector<int64_t>& keep) {
  LWC_CHECK(axis >= 0 && axis < static_cast<int>(t.rank()), "sliceAxis: axis " + std::to_string(axis) +
                                                                 " of a rank-" + std::to_string(t.rank()) + " tensor");
  Shape s = t.shape();
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < axis; ++d) outer *= s[static_cast<size_t>(d)];
  for (size_t d = static_cast<size_t>(axis) + 1; d < s.size(); ++d) inner *= s[d];
  const int64_t len = s[static_cast<size_t>(axis)];
  s[static_cast<size_t>(axis)] = static_cast<int64_t>(keep.size());
  Tensor r(t.dtype(), s);
  const size_t es = dtypeSize(t.dtype());
  const auto* src = static_cast<const uint8_t*>(t.raw());
  auto* dst = static_cast<uint8_t*>(r.raw());
  for (int64_t o = 0; o < outer; ++o)
    for (size_t k = 0; k < keep.size(); ++k)
      std::memcpy(dst + ((o * int64_t(keep.size()) + int64_t(k)) * inner) * es, src + ((o * len + keep[k]) * inner) * es,
                  static_cast<size_t>(inner) * es);
  return r;
}

struct Analysis {
  std::vector<Group> groups;
  std::vector<ConcatLink> links;  ///< in node order
  std::vector<SplitLink> splits;  ///< in node order
  /// Layers with weights whose output channels no group covers (a Conv1d, a ConvTranspose, a
  /// grouped convolution feeding nothing prunable): "channels of X: left alone (why)", so the
  /// report names every layer it does not prune.
  std::vector<std::string> unhandled;
};

/// Segment sizes of a Split node along axis 1 of a [N, C, ...] input: its `split` attribute
/// (opset < 13) or constant input, else equal parts; an empty vector (and `why`) when they cannot be read.
std::vector<int64_t> splitSizes(const Graph& g, const Node& n, int64_t opset, int64_t C, std::string& why) {
  std::vector<int64_t> sizes;
  if (opset < 13) {
    if (n.hasAttr("split")) sizes = n.attrInts("split");
  } else if (n.hasInput(1)) {
    const Tensor* t = intConstant(g, n.inputs[1]);
    if (!t || t->dtype() != DType::Int64) {
      why = " (its split sizes are computed at run time)";
      return {};
    }
    sizes = intValues(*t);
  }
  if (sizes.empty()) {
    const auto k = static_cast<int64_t>(n.outputs.size());
    if (k == 0 || C % k != 0) {
      why = " (its " + std::to_string(C) + " channels do not split evenly into " + std::to_string(k) + " outputs)";
      return {};
    }
    sizes.assign(static_cast<size_t>(k), C / k);
  }
  const bool ok = sizes.size() == n.outputs.size() &&
                  std::all_of(sizes.begin(), sizes.end(), [](int64_t s) { return s > 0; }) &&
                  std::accumulate(sizes.begin(), sizes.end(), int64_t{0}) == C;
  if (!ok) {
    why = " (its split sizes do not cover the " + std::to_string(C) + " channels)";
    return {};
  }
  return sizes;
}

Analysis analyze(const Model& m, const std::vector<std::string>& exclude) {
  const Graph& g = m.graph;
  // With a concrete batch, shape inference also resolves reshapes to sizes computed from the
  // input's shape (ShuffleNet's channel shuffle, x.view(x.size(0), ...)); only ranks and the
  // dimensions after the batch are read here.
  const ValueTypes types = inferShapes(m, ShapeOptions{1});
  auto rankOf = [&](const std::string& t) -> int {
    auto it = types.find(t);
    return it != types.end() && it->second.shape ? int(it->second.shape->size()) : -1;
  };
  auto dimOf = [&](const std::string& t, size_t d) -> int64_t {
    auto it = types.find(t);
    if (it == types.end() || !it->second.shape || it->second.shape->size() <= d) return -1;
    const auto& dim = (*it->second.shape)[d];
    return dim.known() ? dim.value : -1;
  };
  UnionFind uf;
  std::map<std::string, std::string> blocked;
  std::map<std::string, int64_t> channels;
  std::vector<Member> members;
  struct PendingConcat {
    size_t node;
    std::vector<int64_t> sizes;
  };
  std::vector<PendingConcat> concats, splits;
  // Tensors that are a Flatten of channels x positions (value: positions per channel). Only
  // element-wise ops and Gemm/MatMul consumers may read them.
  std::map<std::string, int64_t> spread;
  auto spreadOf = [&](const std::string& t) {
    const auto it = spread.find(t);
    return it == spread.end() ? int64_t{1} : it->second;
  };
  auto isConst = [&](const std::string& t) { return g.initializers.contains(t) && !g.isGraphInput(t); };
  auto block = [&](const std::string& t, const std::string& why) {
    if (t.empty() || isConst(t)) return;
    uf.add(t);
    blocked.try_emplace(t, why);
  };
  auto blockNode = [&](const Node& n, const std::string& why) {
    for (const auto& t : n.inputs) block(t, why);
    for (const auto& t : n.outputs) block(t, why);
  };
  // A layer with weights whose output channels this pass cannot prune: named in the notes even
  // where no prunable group reaches its output (its group has no producer, so it is not listed).
  std::vector<std::pair<size_t, std::string>> unhandled_layers;
  auto blockLayer = [&](size_t i, const std::string& why) {  // why: "is a ConvTranspose"
    const Node& n = g.nodes[i];
    for (const auto& t : n.inputs) block(t, "read by " + n.describe() + ", which " + why);
    for (const auto& t : n.outputs) block(t, n.describe() + " " + why);
    unhandled_layers.emplace_back(i, why);
  };
  auto excluded = [&](const Node& n) {
    return std::find(exclude.begin(), exclude.end(), n.name) != exclude.end() ||
           std::find(exclude.begin(), exclude.end(), n.op_type) != exclude.end();
  };
  // Per tensor of rank >= 3, the first op that ruled out the last axis, and the first that ruled
  // out axis 1, as its channel axis: a group with both cannot be pruned.
  std::map<std::string, std::string> not_last_why, not_axis1_why;
  auto allowAxes = [&](const std::string& t, int allowed, const std::string& by) {
    if (t.empty() || isConst(t) || allowed == kEitherAxis || rankOf(t) == 2) return;
    if (!(allowed & kLastAxis)) not_last_why.try_emplace(t, by);
    if (!(allowed & kAxis1)) not_axis1_why.try_emplace(t, by);
  };
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    const std::string what = n.describe();
    if (!n.domain.empty()) {
      blockNode(n, "read by " + what);
      continue;
    }
    const std::string& op = n.op_type;
    int64_t in_spread = 1;
    for (const auto& t : n.inputs) in_spread = std::max(in_spread, t.empty() ? int64_t{1} : spreadOf(t));
    if (in_spread > 1 && !(op == "Gemm" || op == "MatMul" || kUnary.count(op) || op == "Dropout")) {
      blockNode(n, "read by " + what + " after a Flatten of channels and positions");
      continue;
    }
    if (op == "ConvTranspose" && n.inputs.size() > 1 && floatConstant(g, n.inputs[1])) {
      blockLayer(i, "is a transposed convolution, not supported here");
      continue;
    }
    if (op == "Conv" || op == "Gemm" || op == "MatMul") {
      const Tensor* w = n.inputs.size() > 1 ? floatConstant(g, n.inputs[1]) : nullptr;
      const Tensor* b = n.hasInput(2) ? floatConstant(g, n.inputs[2]) : nullptr;
      if (!w || (n.hasInput(2) && !b)) {
        blockNode(n, what + " has non-constant weights");
        continue;
      }
      if (op == "Conv") {
        const int64_t group = n.attrInt("group", 1);
        if (w->rank() != 4) {
          blockLayer(i, "is not a 2-D convolution");
          continue;
        }
        const int64_t cin = w->dim(1) * group, out = w->dim(0);
        allowAxes(n.inputs[0], kAxis1, what);
        allowAxes(n.outputs[0], kAxis1, what);
        if (group == 1) {
          members.push_back({n.inputs[0], i, Role::Sink});
          channels[n.inputs[0]] = cin;
          uf.add(n.inputs[0]);
          if (excluded(n)) {
            block(n.outputs[0], what + " is excluded");
          } else {
            members.push_back({n.outputs[0], i, Role::Source});
            channels[n.outputs[0]] = out;
            uf.add(n.outputs[0]);
          }
        } else if (group == cin && out == cin && w->dim(1) == 1) {
          uf.unite(n.inputs[0], n.outputs[0]);
          members.push_back({n.inputs[0], i, Role::DwConv});
          channels[n.inputs[0]] = cin;
        } else {
          blockLayer(i, "is a grouped convolution (group " + std::to_string(group) + ")");
        }
        continue;
      }
      // Gemm / MatMul: [rows, K] x W -> [rows, N]; a MatMul also [..., T, K] x W -> [..., T, N],
      // channels on the last axis (Linear on tokens: a transformer MLP's hidden width).
      const int rin = rankOf(n.inputs[0]);
      if (w->rank() != 2 || (op == "Gemm" ? rin != 2 : rin < 2) || (op == "Gemm" && n.attrInt("transA", 0) != 0)) {
        blockLayer(i, "is not a 2-D layer with constant weights");
        continue;
      }
      allowAxes(n.inputs[0], kLastAxis, what);
      allowAxes(n.outputs[0], kLastAxis, what);
      const bool trans = op == "Gemm" && n.attrInt("transB", 0) != 0;
      const int64_t K = trans ? w->dim(1) : w->dim(0), N = trans ? w->dim(0) : w->dim(1);
      if (b && !(b->numel() == N || b->numel() == 1)) {
        blockNode(n, what + " has a bias that is not per output");
        continue;
      }
      const int64_t per = spreadOf(n.inputs[0]);
      if (K % per != 0) {
        blockNode(n, what + " reads " + std::to_string(K) + " inputs, not a multiple of the Flatten's " +
                         std::to_string(per) + " positions per channel");
        continue;
      }
      members.push_back({n.inputs[0], i, Role::Sink, 0, 0, per});
      channels[n.inputs[0]] = K / per;
      uf.add(n.inputs[0]);
      if (excluded(n)) {
        block(n.outputs[0], what + " is excluded");
      } else {
        members.push_back({n.outputs[0], i, Role::Source});
        channels[n.outputs[0]] = N;
        uf.add(n.outputs[0]);
      }
      continue;
    }
    if (op == "BatchNormalization") {
      bool ok = n.outputs.size() == 1 || std::all_of(n.outputs.begin() + 1, n.outputs.end(), [](auto& s) { return s.empty(); });
      for (size_t k = 1; k < 5; ++k) ok = ok && n.hasInput(k) && floatConstant(g, n.inputs[k]);
      if (!ok) {
        blockNode(n, what + " has non-constant parameters or training outputs");
        continue;
      }
      uf.unite(n.inputs[0], n.outputs[0]);
      allowAxes(n.inputs[0], kAxis1, what);
      members.push_back({n.inputs[0], i, Role::BatchNorm});
      continue;
    }
    const bool extra_outputs = std::any_of(n.outputs.begin() + 1, n.outputs.end(), [](auto& s) { return !s.empty(); });
    if ((kUnary.count(op) || kPool.count(op) || op == "Dropout") && !extra_outputs) {
      bool ok = true;
      for (size_t k = 1; k < n.inputs.size(); ++k) ok = ok && (n.inputs[k].empty() || isConst(n.inputs[k]));
      if (!ok || rankOf(n.inputs[0]) < 2) {
        blockNode(n, "read by " + what);
        continue;
      }
      uf.unite(n.inputs[0], n.outputs[0]);
      if (kPool.count(op)) allowAxes(n.inputs[0], kAxis1, what);
      if (in_spread > 1) spread[n.outputs[0]] = in_spread;
      continue;
    }
    if ((kReduce.count(op) || op == "Squeeze" || op == "Unsqueeze") && !extra_outputs) {
      // Over axes after the channels only (x.mean([2, 3]), x.amax(-1), x.squeeze(-1)), channel c
      // stays at axis 1, and a [N, C] result is read like a Flatten of [N, C, 1, 1].
      const int r = op == "Unsqueeze" ? rankOf(n.outputs[0]) : rankOf(n.inputs[0]);
      const auto axes = namedAxes(g, n);
      if (r < 2 || !axes || axes->empty()) {
        blockNode(n, "read by " + what + (r < 2 ? "" : " (its axes are all, or computed at run time)"));
        continue;
      }
      bool ok = true;
      for (int64_t a : *axes) ok = ok && (a < 0 ? a + r : a) >= 2 && (a < 0 ? a + r : a) < r;
      if (!ok) {
        blockNode(n, "read by " + what + " (its axes include the batch or the channels)");
        continue;
      }
      uf.unite(n.inputs[0], n.outputs[0]);
      allowAxes(n.inputs[0], kAxis1, what);
      allowAxes(n.outputs[0], kAxis1, what);
      continue;
    }
    if (op == "Concat") {
      // Along the channels, the output's channels are the inputs' one after another: its group
      // keeps what the inputs' groups keep (DenseNet, Inception, SqueezeNet's fire modules).
      const int r = rankOf(n.outputs[0]);
      int64_t axis = n.attrInt("axis", 0);
      if (axis < 0) axis += r;
      bool ok = r >= 2 && axis == 1 && !n.inputs.empty();
      std::vector<int64_t> sizes;
      for (const auto& t : n.inputs) {
        ok = ok && !t.empty() && !isConst(t) && rankOf(t) == r && dimOf(t, 1) > 0;
        sizes.push_back(t.empty() ? -1 : dimOf(t, 1));
      }
      if (!ok) {
        blockNode(n, "read by " + what + (r >= 2 && axis != 1 ? " (not along the channels)" : ""));
        continue;
      }
      for (const auto& t : n.inputs) {
        uf.add(t);
        allowAxes(t, kAxis1, what);
      }
      uf.add(n.outputs[0]);
      allowAxes(n.outputs[0], kAxis1, what);
      channels[n.outputs[0]] = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
      concats.push_back({i, std::move(sizes)});
      continue;
    }
    if (op == "Split") {
      // Along the channels, each output is a run of the input's channels: it keeps what the
      // input's group keeps there, and the split sizes follow (YOLOv8's C2f, ShuffleNetV2, GhostNet).
      const int r = rankOf(n.inputs[0]);
      int64_t axis = n.attrInt("axis", 0);
      if (axis < 0) axis += r;
      const int64_t C = r >= 2 ? dimOf(n.inputs[0], 1) : -1;
      std::string why;
      std::vector<int64_t> sizes;
      if (r >= 2 && axis == 1 && C > 0 && !isConst(n.inputs[0])) sizes = splitSizes(g, n, m.opsetFor(""), C, why);
      const bool ok = !sizes.empty() && std::all_of(n.outputs.begin(), n.outputs.end(), [](auto& s) { return !s.empty(); });
      if (!ok) {
        blockNode(n, "read by " + what + (r >= 2 && axis != 1 ? " (not along the channels)" : why));
        continue;
      }
      uf.add(n.inputs[0]);
      allowAxes(n.inputs[0], kAxis1, what);
      channels[n.inputs[0]] = C;
      for (size_t k = 0; k < n.outputs.size(); ++k) {
        uf.add(n.outputs[k]);
        allowAxes(n.outputs[k], kAxis1, what);
        channels[n.outputs[k]] = sizes[k];
      }
      splits.push_back({i, std::move(sizes)});
      continue;
    }
    if (op == "Flatten") {
      // [N, C, d2, ...] -> [N, C * d2 * ...]: channel c becomes the positions' consecutive inputs
      // c * P ... c * P + P - 1 of the layers that read it.
      const int r = rankOf(n.inputs[0]);
      const int64_t axis = n.attrInt("axis", 1);
      int64_t positions = 1;
      for (int d = 2; d < r && positions > 0; ++d) positions *= std::max<int64_t>(dimOf(n.inputs[0], size_t(d)), 0);
      if (axis != 1 && !(axis == -(r - 1) && r >= 2)) {
        blockNode(n, "read by " + what + " (flattens from axis " + std::to_string(axis) + ", not the channels)");
        continue;
      }
      if (r < 2 || positions <= 0) {
        blockNode(n, "read by " + what + " (the size of its positions is unknown)");
        continue;
      }
      uf.unite(n.inputs[0], n.outputs[0]);
      allowAxes(n.inputs[0], kAxis1, what);
      if (positions > 1) spread[n.outputs[0]] = positions;
      continue;
    }
    if (kBinary.count(op) && n.numInputs() == 2) {
      const std::string &a = n.inputs[0], &b = n.inputs[1], &y = n.outputs[0];
      const bool ca = isConst(a), cb = isConst(b);
      const int ry = rankOf(y);
      if (ca && cb) continue;
      if (!ca && !cb) {
        // Both operands carry the same channels: on axis 1 or on the last axis, whichever sizes match.
        const bool same_rank = ry >= 2 && rankOf(a) == ry && rankOf(b) == ry;
        const auto last = static_cast<size_t>(std::max(ry - 1, 0));
        const int allowed = (same_rank && dimOf(a, 1) > 1 && dimOf(a, 1) == dimOf(b, 1) ? kAxis1 : 0) |
                            (same_rank && dimOf(a, last) > 1 && dimOf(a, last) == dimOf(b, last) ? kLastAxis : 0);
        if (allowed != 0) {
          uf.unite(a, y);
          uf.unite(b, y);
          for (const auto* t : {&a, &b, &y}) allowAxes(*t, allowed, what);
        } else {
          blockNode(n, "read by " + what + " (operands' channels do not match)");
        }
        continue;
      }
      const std::string& x = ca ? b : a;
      const Tensor& c = g.initializers.at(ca ? a : b);
      if (ry < 2 || rankOf(x) != ry) {
        blockNode(n, "read by " + what);
        continue;
      }
      if (c.numel() == 1) {
        uf.unite(x, y);
        continue;
      }
      // A per-channel constant has one axis of size > 1, at the output's axis 1 or its last axis.
      int axis = -1, wide = 0;
      for (int d = 0; d < int(c.rank()); ++d)
        if (c.dim(static_cast<size_t>(d)) != 1) axis = d, ++wide;
      const int at = ry - int(c.rank()) + axis;  // the output axis it runs along
      const int allowed = (at == 1 ? kAxis1 : 0) | (at == ry - 1 ? kLastAxis : 0);
      if (int(c.rank()) > ry || wide != 1 || allowed == 0) {
        blockNode(n, "read by " + what + " (constant operand is not per-channel)");
        continue;
      }
      uf.unite(x, y);
      allowAxes(x, allowed, what);
      members.push_back({x, i, Role::ConstOperand, ca ? size_t(0) : size_t(1), axis});
      channels[x] = c.dim(static_cast<size_t>(axis));
      continue;
    }
    blockNode(n, "read by " + what);
  }
  for (const auto& v : g.inputs) block(v.name, "graph input");
  for (const auto& v : g.outputs) block(v.name, "graph output");

  std::map<std::string, Group> by_root;
  for (const auto& t : uf.keys()) by_root[uf.find(t)].tensors.push_back(t);
  for (const auto& mb : members) by_root[uf.find(mb.tensor)].members.push_back(mb);
  for (const auto& c : concats) {
    Group& out = by_root[uf.find(g.nodes[c.node].outputs[0])];
    if (out.concat >= 0 && out.blocked.empty())
      out.blocked = "the outputs of " + g.nodes[size_t(out.concat)].describe() + " and " + g.nodes[c.node].describe() + " meet";
    out.concat = static_cast<int64_t>(c.node);
  }
  for (const auto& sp : splits) {
    const Node& n = g.nodes[sp.node];
    for (size_t k = 0; k < n.outputs.size(); ++k) {
      Group& out = by_root[uf.find(n.outputs[k])];
      if (out.split == static_cast<int64_t>(sp.node) && out.blocked.empty())
        out.blocked = "outputs of " + n.describe() + " meet";
      else if (out.derived() && out.blocked.empty())
        out.blocked = "the outputs of " + g.nodes[size_t(out.concat >= 0 ? out.concat : out.split)].describe() + " and " +
                      n.describe() + " meet";
      out.split = static_cast<int64_t>(sp.node);
      out.split_output = static_cast<int64_t>(k);
    }
  }
  Analysis a;
  std::map<std::string, size_t> index_of_root;
  for (auto& [root, grp] : by_root) {
    const std::string *on_axis1 = nullptr, *on_last = nullptr;
    for (const auto& t : grp.tensors) {
      auto it = blocked.find(t);
      if (it != blocked.end() && grp.blocked.empty()) grp.blocked = it->second;
      if (auto w = not_last_why.find(t); w != not_last_why.end() && !on_axis1) on_axis1 = &w->second;
      if (auto w = not_axis1_why.find(t); w != not_axis1_why.end() && !on_last) on_last = &w->second;
      auto c = channels.find(t);
      if (c != channels.end()) {
        if (grp.channels >= 0 && grp.channels != c->second && grp.blocked.empty())
          grp.blocked = "its layers disagree on the channel count (" + std::to_string(grp.channels) + " vs " +
                        std::to_string(c->second) + ")";
        grp.channels = c->second;
      }
    }
    if (on_axis1 && on_last && grp.blocked.empty())
      grp.blocked = "its channels are on axis 1 for " + *on_axis1 + " but on the last axis for " + *on_last;
    const bool has_source = grp.hasSource();
    if (!has_source && !grp.derived()) continue;  // nothing produces these channels from weights (e.g. the input image)
    if (has_source && grp.concat >= 0 && grp.blocked.empty())
      grp.blocked = "layers' channels meet the output of " + g.nodes[size_t(grp.concat)].describe();
    std::sort(grp.members.begin(), grp.members.end(), [](const Member& x, const Member& y) {
      return std::tie(x.node, x.role, x.input) < std::tie(y.node, y.role, y.input);
    });
    index_of_root[root] = a.groups.size();
    a.groups.push_back(std::move(grp));
  }
  for (const auto& c : concats) {
    const Node& n = g.nodes[c.node];
    ConcatLink link{c.node, index_of_root.at(uf.find(n.outputs[0])), {}};
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      const auto it = index_of_root.find(uf.find(n.inputs[k]));
      link.segments.emplace_back(it == index_of_root.end() ? -1 : static_cast<int64_t>(it->second), c.sizes[k]);
    }
    a.links.push_back(std::move(link));
  }
  // A Split's segments are chosen within its input's group, so that group must have channels of
  // its own, and no segment may meet the input again.
  for (const auto& sp : splits) {
    const Node& n = g.nodes[sp.node];
    const auto it = index_of_root.find(uf.find(n.inputs[0]));
    SplitLink link{sp.node, it == index_of_root.end() ? -1 : static_cast<int64_t>(it->second), {}};
    for (size_t k = 0; k < n.outputs.size(); ++k) link.outputs.emplace_back(index_of_root.at(uf.find(n.outputs[k])), sp.sizes[k]);
    if (link.in_group >= 0) {
      Group& in = a.groups[size_t(link.in_group)];
      const bool meets = std::any_of(link.outputs.begin(), link.outputs.end(),
                                     [&](const auto& o) { return static_cast<int64_t>(o.first) == link.in_group; });
      if (in.blocked.empty() && (in.derived() || meets))
        in.blocked = "split by " + n.describe() + (meets ? ", whose outputs meet its input" : ", not by layers");
      for (const auto& other : a.splits)
        if (other.in_group == link.in_group && in.blocked.empty())
          in.blocked = "split by both " + g.nodes[other.node].describe() + " and " + n.describe();
    }
    a.splits.push_back(std::move(link));
  }
  for (const auto& [i, why] : unhandled_layers)
    if (!index_of_root.count(uf.find(g.nodes[i].outputs.at(0))))
      a.unhandled.push_back("channels of " + g.nodes[i].describe() + ": left alone (it " + why + ")");
  // Channels a Concat's output shows can only go where its output's group may lose channels.
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& link : a.links) {
      if (a.groups[link.out_group].blocked.empty()) continue;
      for (const auto& [gi, size] : link.segments)
        if (gi >= 0 && a.groups[size_t(gi)].blocked.empty()) {
          a.groups[size_t(gi)].blocked = "concatenated by " + g.nodes[link.node].describe() + ", whose channels are left alone";
          changed = true;
        }
    }
  }
  return a;
}

std::string groupName(const Graph& g, const Group& grp) {
  if (!grp.hasSource() && grp.concat >= 0) return "channels of " + g.nodes[size_t(grp.concat)].describe();
  std::string s;
  int k = 0;
  for (const auto& mb : grp.members)
    if (mb.role == Role::Source) {
      if (k++ < 3) s += (s.empty() ? "" : ", ") + g.nodes[mb.node].describe();
    }
  if (k > 3) s += " and " + std::to_string(k - 3) + " more";
  if (grp.split >= 0)
    return "channels of output " + std::to_string(grp.split_output) + " of " + g.nodes[size_t(grp.split)].describe() +
           (s.empty() ? "" : " and of " + s);
  return "channels of " + s;
}

/// Per-channel importance of a group (higher = keep).
std::vector<double> importance(const Graph& g, const Group& grp, const std::string& kind, bool& used_bn) {
  std::vector<double> imp(static_cast<size_t>(grp.channels), 0.0);
  used_bn = false;
  if (kind == "bn_gamma") {
    for (const auto& mb : grp.members)
      if (mb.role == Role::BatchNorm) {
        const Tensor& gamma = *floatConstant(g, g.nodes[mb.node].inputs[1]);
        for (int64_t c = 0; c < grp.channels && c < gamma.numel(); ++c) imp[static_cast<size_t>(c)] += std::fabs(gamma.at(c));
        used_bn = true;
      }
    if (used_bn) return imp;
  }
  const bool l2 = kind == "l2";
  for (const auto& mb : grp.members) {
    if (mb.role != Role::Source) continue;
    const Node& n = g.nodes[mb.node];
    const Tensor& w = *floatConstant(g, n.inputs[1]);
    const bool rows = n.op_type == "Conv" || (n.op_type == "Gemm" && n.attrInt("transB", 0) != 0);
    const int64_t C = grp.channels, per = w.numel() / C;
    for (int64_t c = 0; c < C; ++c) {
      double s = 0;
      for (int64_t k = 0; k < per; ++k) {
        const double v = rows ? w.at(c * per + k) : w.at(k * C + c);
        s += l2 ? v * v : std::fabs(v);
      }
      imp[static_cast<size_t>(c)] += (l2 ? std::sqrt(s) : s) / double(per);
    }
  }
  return imp;
}

/// Channel-count granularity of a group: `round_to`, or with 0 the largest of 16 and 8 that divides the count.
int64_t alignmentFor(int64_t channels, int64_t round_to) {
  if (round_to > 0) return round_to;
  for (int64_t a : {16, 8})
    if (channels % a == 0) return a;
  return 1;
}

std::vector<int64_t> keepTop(const std::vector<double>& imp, int64_t keep) {
  const int64_t C = static_cast<int64_t>(imp.size());
  std::vector<int64_t> order(static_cast<size_t>(C));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return imp[size_t(a)] > imp[size_t(b)]; });
  order.resize(static_cast<size_t>(keep));
  std::sort(order.begin(), order.end());
  return order;
}

void setInput(Graph& g, size_t node, size_t input, const std::string& base, Tensor t) {
  const std::string name = replaceConstant(g, g.nodes[node].inputs[input], base, std::move(t));
  g.nodes[node].inputs[input] = name;
}

/// Slices every member of the group to `keep`.
void applyGroup(Graph& g, const Group& grp, const std::vector<int64_t>& keep) {
  for (const auto& mb : grp.members) {
    const Node& n = g.nodes[mb.node];
    const std::string base = n.name.empty() ? n.op_type : n.name;
    auto cur = [&](size_t k) { return g.initializers.at(g.nodes[mb.node].inputs[k]); };
    switch (mb.role) {
      case Role::Source: {
        if (n.op_type == "Conv") {
          setInput(g, mb.node, 1, base + "_w", sliceAxis(cur(1), 0, keep));
          if (n.hasInput(2)) setInput(g, mb.node, 2, base + "_b", sliceAxis(cur(2), 0, keep));
        } else {
          const bool trans = n.op_type == "Gemm" && n.attrInt("transB", 0) != 0;
          setInput(g, mb.node, 1, base + "_w", sliceAxis(cur(1), trans ? 0 : 1, keep));
          if (n.hasInput(2) && cur(2).numel() > 1) {
            const Tensor b = cur(2);
            setInput(g, mb.node, 2, base + "_b", sliceAxis(b, int(b.rank()) - 1, keep));
          }
        }
        break;
      }
      case Role::Sink: {
        const bool trans = n.op_type == "Gemm" && n.attrInt("transB", 0) != 0;
        const int axis = n.op_type == "Conv" ? 1 : (trans ? 1 : 0);
        std::vector<int64_t> rows;  // the inputs of the kept channels
        for (int64_t c : keep)
          for (int64_t p = 0; p < mb.spread; ++p) rows.push_back(c * mb.spread + p);
        setInput(g, mb.node, 1, base + "_w", sliceAxis(cur(1), axis, rows));
        break;
      }
      case Role::DwConv:
        setInput(g, mb.node, 1, base + "_w", sliceAxis(cur(1), 0, keep));
        if (n.hasInput(2)) setInput(g, mb.node, 2, base + "_b", sliceAxis(cur(2), 0, keep));
        g.nodes[mb.node].setAttr("group", static_cast<int64_t>(keep.size()));
        break;
      case Role::BatchNorm:
        for (size_t k = 1; k < 5; ++k) setInput(g, mb.node, k, base + "_p" + std::to_string(k), sliceAxis(cur(k), 0, keep));
        break;
      case Role::ConstOperand:
        setInput(g, mb.node, mb.input, base + "_c", sliceAxis(cur(mb.input), mb.axis, keep));
        break;
    }
  }
}

struct Plan {
  std::vector<std::vector<int64_t>> keep;  // per prunable group
};

/// Groups with a producer of their own; those that follow a Split are counted by splits_sliced.
int64_t ownGroups(const Analysis& an) {
  return static_cast<int64_t>(
      std::count_if(an.groups.begin(), an.groups.end(), [](const Group& x) { return x.hasSource() && x.split < 0; }));
}

}  // namespace

PassResult PruneChannels::run(Model& m, PassContext& ctx) {
  checkNotQuantized(m, "prune");
  const PassOptions& o = options_;
  const auto exclude = resolveNodeList(m.graph, o, "exclude", m.label());
  const Model unpruned = m;
  Analysis an = analyze(m, exclude);
  PassResult r;
  std::vector<size_t> prunable;
  r.notes = an.unhandled;
  for (size_t i = 0; i < an.groups.size(); ++i) {
    const Group& grp = an.groups[i];
    if (!grp.blocked.empty())
      r.notes.push_back(groupName(m.graph, grp) + ": left alone (" + grp.blocked + ")");
    else if (grp.channels <= 1)
      r.notes.push_back(groupName(m.graph, grp) + ": left alone (a single channel)");
    else if (grp.hasSource() && !grp.derived())
      prunable.push_back(i);
  }
  if (prunable.empty()) {
    // Float16 or float64 weights are a whole-model reason the user can act on; an architecture it does not
    // understand is reported group by group above and the model passes through unchanged. A MACs
    // target cannot be met then: an error, as when the prunable groups cannot reach it.
    if (const std::string half = float16WeightsHint(m); !half.empty())
      fail(m.label(), ": no prunable channel group", half);
    if (o.getFloat("macs_reduction") > 0)
      fail(o.key("macs_reduction"), ": ", m.label(), " has no channel group this pass can prune, so its MACs cannot drop (",
           r.notes.empty() ? std::string("no layer produces channels")
                           : (r.notes.size() > 1 ? "first of " + std::to_string(r.notes.size()) + " reasons: " : std::string()) +
                                 r.notes.front(),
           ")");
    r.notes.push_back("no prunable channel group in " + m.label());
    r.stats = {{"groups", ownGroups(an)}, {"groups_pruned", 0}};
    return r;
  }
  // A group a Split reads keeps channels segment by segment, each aligned on its own.
  std::vector<const SplitLink*> split_of(prunable.size(), nullptr);
  for (const auto& sp : an.splits)
    for (size_t k = 0; k < prunable.size(); ++k)
      if (sp.in_group == static_cast<int64_t>(prunable[k])) split_of[k] = &sp;
  const std::string kind = o.getString("importance");
  std::vector<std::vector<double>> imps;
  int64_t bn_groups = 0;
  for (size_t k = 0; k < prunable.size(); ++k) {
    bool used_bn = false;
    imps.push_back(importance(m.graph, an.groups[prunable[k]], kind, used_bn));
    bn_groups += used_bn;
    // Layers whose outputs meet a segment (C2f's residual bottlenecks) rank its channels too.
    int64_t offset = 0;
    for (const auto& [gi, size] : split_of[k] ? split_of[k]->outputs : std::vector<std::pair<size_t, int64_t>>{}) {
      const Group& out = an.groups[gi];
      bool out_bn = false;
      if (out.blocked.empty() && out.hasSource()) {
        const std::vector<double> more = importance(m.graph, out, kind, out_bn);
        if (out_bn == used_bn)
          for (int64_t c = 0; c < size; ++c) imps.back()[size_t(offset + c)] += more[size_t(c)];
      }
      offset += size;
    }
  }
  if (kind == "bn_gamma" && bn_groups == 0)
    fail(o.key("importance"), ": bn_gamma needs BatchNormalization nodes after the pruned layers, but ", m.label(),
         " has none (without BatchNormalization rank by l1 or l2; where fuse_batchnorm folded them, run prune_channels "
         "before it)");
  if (kind == "bn_gamma" && bn_groups < static_cast<int64_t>(prunable.size()))
    r.notes.push_back(std::to_string(prunable.size() - size_t(bn_groups)) +
                      " groups have no BatchNormalization: ranked by l1 filter norm");

  const int64_t minc = o.getInt("min_channels"), round_to = o.getInt("round_to");
  std::vector<int64_t> align(prunable.size());
  for (size_t k = 0; k < prunable.size(); ++k) {
    const int64_t C = an.groups[prunable[k]].channels;
    align[k] = alignmentFor(C, round_to);
    if (split_of[k]) {
      align[k] = 0;
      for (const auto& [gi, size] : split_of[k]->outputs) align[k] += alignmentFor(size, round_to);
      align[k] = std::min(align[k], C);
    }
  }
  // The kept channels of prunable group k: the `count` most important, or with a Split reading it,
  // the same share of each segment (at least one, aligned; all of a segment whose readers are left alone).
  auto keepFor = [&](size_t k, int64_t count) {
    if (!split_of[k]) return keepTop(imps[k], count);
    const int64_t C = an.groups[prunable[k]].channels;
    std::vector<int64_t> keep;
    int64_t offset = 0;
    for (const auto& [gi, size] : split_of[k]->outputs) {
      int64_t n = size;
      if (an.groups[gi].blocked.empty()) {
        const int64_t a = alignmentFor(size, round_to);
        n = (count * size + C - 1) / C;
        n = std::min(size, std::max<int64_t>(1, (n + a - 1) / a * a));
      }
      const std::vector<double> seg(imps[k].begin() + offset, imps[k].begin() + offset + size);
      for (int64_t c : keepTop(seg, n)) keep.push_back(offset + c);
      offset += size;
    }
    return keep;
  };
  // Kept channel count of every prunable group for a uniform removal ratio (monotone in the ratio).
  auto countsFor = [&](double ratio) {
    std::vector<int64_t> c(prunable.size());
    for (size_t k = 0; k < prunable.size(); ++k) {
      const int64_t C = an.groups[prunable[k]].channels, a = align[k];
      int64_t keep = C - static_cast<int64_t>(std::floor(ratio * double(C)));
      keep = std::max(keep, std::min(minc, C));
      c[k] = std::min(C, (keep + a - 1) / a * a);
    }
    return c;
  };
  auto applyCounts = [&](Model& mm, const std::vector<int64_t>& counts) {
    for (size_t k = 0; k < prunable.size(); ++k) {
      Group& grp = an.groups[prunable[k]];
      grp.keep = keepFor(k, counts[k]);
      if (static_cast<int64_t>(grp.keep.size()) < grp.channels) applyGroup(mm.graph, grp, grp.keep);
    }
    // A Split's outputs keep what its input kept of their segments, and its sizes follow.
    for (const auto& sp : an.splits) {
      const Group* in = sp.in_group >= 0 ? &an.groups[size_t(sp.in_group)] : nullptr;
      const bool sliced = in && in->blocked.empty() && !in->keep.empty() && static_cast<int64_t>(in->keep.size()) < in->channels;
      std::vector<int64_t> sizes;
      int64_t offset = 0;
      for (const auto& [gi, size] : sp.outputs) {
        Group& out = an.groups[gi];
        out.keep.clear();
        if (sliced)
          for (int64_t c : in->keep)
            if (c >= offset && c < offset + size) out.keep.push_back(c - offset);
        sizes.push_back(sliced ? static_cast<int64_t>(out.keep.size()) : size);
        if (!out.blocked.empty()) out.keep.clear();  // kept whole (keepFor kept all of its segment)
        if (!out.keep.empty() && static_cast<int64_t>(out.keep.size()) < size) applyGroup(mm.graph, out, out.keep);
        offset += size;
      }
      if (sliced) {
        const Node& n = mm.graph.nodes[sp.node];
        setSplitSizes(mm.graph, sp.node, mm.opsetFor(""), sizes, (n.name.empty() ? n.op_type : n.name) + "_split");
      }
    }
    // A Concat's output keeps its inputs' kept channels, each input's at its offset (in node order,
    // so a Concat of Concats sees its inputs' choice).
    for (const auto& link : an.links) {
      Group& out = an.groups[link.out_group];
      out.keep.clear();
      if (!out.blocked.empty()) continue;
      int64_t offset = 0;
      for (const auto& [gi, size] : link.segments) {
        const Group* in = gi >= 0 ? &an.groups[size_t(gi)] : nullptr;
        if (in && in->blocked.empty() && !in->keep.empty())
          for (int64_t c : in->keep) out.keep.push_back(offset + c);
        else
          for (int64_t c = 0; c < size; ++c) out.keep.push_back(offset + c);
        offset += size;
      }
      if (static_cast<int64_t>(out.keep.size()) < out.channels) applyGroup(mm.graph, out, out.keep);
    }
    mm.graph.value_info.clear();  // shapes changed; re-inferred on demand
  };
  auto macsOf = [](const Model& t) { return analyzeModel(t, AnalyzeOptions{1, /*entropy=*/false}).macs; };
  const ModelStats stats0 = analyzeModel(m, AnalyzeOptions{1, /*entropy=*/false});
  const int64_t macs0 = stats0.macs;
  double ratio = o.getFloat("ratio");
  std::vector<int64_t> counts = countsFor(ratio);
  const double target = o.getFloat("macs_reduction");
  int64_t refine_steps = 0;
  if (target > 0) {
    if (macs0 <= 0) fail(m.label(), ": macs_reduction needs the model's MACs (shapes could not be inferred); use ratio");
    if (!stats0.macs_complete) {
      // An input whose size beyond the batch is symbolic ([1, 3, H, W]) leaves every layer's MACs
      // unknown; a symbolic batch only those whose sizes are computed from it at run time.
      for (const ValueInfo* in : m.graph.realInputs())
        if (in->shape)
          for (size_t d = 1; d < in->shape->size(); ++d)
            if (!(*in->shape)[d].known())
              fail(m.label(), ": macs_reduction needs every layer's MACs, but input '", in->name, "' has the size ",
                   symShapeStr(*in->shape), "; export the model with a fixed input size, or use ratio");
      fail(m.label(), ": macs_reduction needs every layer's MACs, but some layers' shapes are computed at run time from "
           "the batch; export the model with a fixed batch size (then `lwc fuse` folds the sizes), or use ratio");
    }
    auto pruned = [&](const std::vector<int64_t>& c) {
      Model t = m;
      applyCounts(t, c);
      return t;
    };
    auto reductionOf = [&](const Model& t) { return 1.0 - double(macsOf(t)) / double(macs0); };
    auto reduction = [&](const std::vector<int64_t>& c) { return reductionOf(pruned(c)); };
    double lo = 0, hi = 0.95;
    const std::vector<int64_t> most = countsFor(hi);
    const double best = reduction(most);
    if (best < target)
      fail(o.key("macs_reduction"), ": removing 95 % of every prunable group's channels cuts MACs by only ",
           std::round(1000 * best) / 10, " % in ", m.label(), " (", an.groups.size() - prunable.size(),
           " groups cannot be pruned; see the notes of a ratio run)");
    for (int it = 0; it < 30; ++it) {
      const double mid = 0.5 * (lo + hi);
      (reduction(countsFor(mid)) >= target ? hi : lo) = mid;
    }
    ratio = hi;
    // Rounded channel counts move in steps, so the uniform ratio can overshoot the target by a lot (a 32-channel
    // group aligned to 16 goes 32 -> 16 at once). Start from the largest uniform ratio below the target and take
    // one alignment step at a time, never past the uniform `hi` (pruning some groups far beyond the others cost
    // accuracy: mnv2_fmnist at -30 % MACs lost 2.23 points with lsq instead of 1.18). Each step is scored by its
    // damage: with calibration data, the relative output error of the pruned model (no recovery) on up to 128
    // calibration samples; without, the share of its group's importance it removes. Among steps that reach the
    // target the least damage wins, otherwise the least damage per MAC saved.
    const std::vector<int64_t> upper = countsFor(hi);
    auto share = [&](size_t k, int64_t from, int64_t to) {
      std::vector<double> v = imps[k];
      std::sort(v.begin(), v.end(), std::greater<>());
      double all = 0, cut = 0;
      for (size_t i = 0; i < v.size(); ++i) {
        all += v[i];
        if (static_cast<int64_t>(i) >= to && static_cast<int64_t>(i) < from) cut += v[i];
      }
      return all > 0 ? cut / all : double(from - to) / double(v.size());
    };
    std::vector<Tensor> probe_in, probe_ref;
    std::string in_name;
    engine::SessionOptions so;
    so.threads = ctx.threads;
    if (ctx.calib) {
      for (const auto* vi : m.graph.realInputs()) {
        in_name = vi->name;
        break;
      }
      auto ds = openCalibration(ctx, m);
      engine::Session ref(unpruned, so);
      for (int64_t n = 0; n < 128;) {
        auto b = ds->next(std::min<int64_t>(64, 128 - n));
        if (!b) break;
        n += b->inputs.dim(0);
        probe_ref.push_back(ref.runOrdered({{in_name, b->inputs}}).at(0));
        probe_in.push_back(b->inputs);
      }
    }
    auto outputError = [&](const Model& t) {
      engine::Session s(t, so);
      double num = 0, den = 0;
      for (size_t i = 0; i < probe_in.size(); ++i) {
        const Tensor y = s.runOrdered({{in_name, probe_in[i]}}).at(0);
        const Tensor& yr = probe_ref[i];
        for (int64_t e = 0; e < y.numel(); ++e) {
          const double d = double(y.at(e)) - double(yr.at(e));
          num += d * d;
          den += double(yr.at(e)) * double(yr.at(e));
        }
      }
      return den > 0 ? num / den : num;
    };
    const bool probing = !probe_in.empty();
    std::vector<int64_t> c = countsFor(lo);
    const Model start = pruned(c);
    double red_c = reductionOf(start), err_c = probing ? outputError(start) : 0.0, dmg_c = 0.0;
    while (c != upper && red_c < target) {
      size_t pick = prunable.size(), reach = prunable.size();
      double pick_score = 0, reach_dmg = 0;
      std::vector<double> red_k(prunable.size()), dmg_k(prunable.size());
      for (size_t k = 0; k < prunable.size(); ++k) {
        if (c[k] <= upper[k]) continue;
        std::vector<int64_t> t = c;
        t[k] = std::max(upper[k], (c[k] - 1) / align[k] * align[k]);
        const Model cand = pruned(t);
        red_k[k] = reductionOf(cand);
        dmg_k[k] = probing ? outputError(cand) : dmg_c + share(k, c[k], t[k]);
        if (red_k[k] >= target && (reach == prunable.size() || dmg_k[k] < reach_dmg)) reach = k, reach_dmg = dmg_k[k];
        const double score = (dmg_k[k] - (probing ? err_c : dmg_c)) / std::max(red_k[k] - red_c, 1e-12);
        if (pick == prunable.size() || score < pick_score) pick = k, pick_score = score;
      }
      if (reach < prunable.size()) pick = reach;
      c[pick] = std::max(upper[pick], (c[pick] - 1) / align[pick] * align[pick]);
      red_c = red_k[pick];
      (probing ? err_c : dmg_c) = dmg_k[pick];
      ++refine_steps;
    }
    counts = c;
  }
  applyCounts(m, counts);
  int64_t removed = 0, total = 0, groups_pruned = 0;
  std::map<std::string, std::vector<int64_t>> kept_out;
  std::vector<size_t> sinks;
  for (size_t k = 0; k < prunable.size(); ++k) {
    const Group& grp = an.groups[prunable[k]];
    const int64_t kept = static_cast<int64_t>(grp.keep.size());
    total += grp.channels;
    removed += grp.channels - kept;
    std::ostringstream note;
    note << groupName(m.graph, grp) << ": kept " << kept << " of " << grp.channels << " channels";
    // Kept whole only by the alignment (48 channels at ratio 0.3: 33.6 rounds up to 48, and a
    // second channel pruning of a pruned model changed nothing, without a word).
    const int64_t wanted = std::max(grp.channels - static_cast<int64_t>(std::floor(ratio * double(grp.channels))),
                                    std::min(minc, grp.channels));
    const int64_t by_ratio = grp.channels - static_cast<int64_t>(std::floor(ratio * double(grp.channels)));
    if (target <= 0 && kept == grp.channels && align[k] > 1 && wanted < grp.channels)
      note << " (" << wanted << " rounded up to a multiple of " << align[k]
           << ", as round_to " << (round_to > 0 ? std::to_string(round_to) : std::string("0 (auto)"))
           << " aligns them for ONNX Runtime's blocked kernels; round_to 1 prunes it, unaligned)";
    else if (target <= 0 && kept > by_ratio && minc > by_ratio)  // kept by the floor, not by the ratio: said
      note << " (min_channels " << minc << " keeps " << (minc >= grp.channels ? "all of them" : "that many") << ")";
    r.notes.push_back(note.str());
    if (kept == grp.channels) continue;
    ++groups_pruned;
    for (const auto& mb : grp.members) {
      if (mb.role == Role::Sink) sinks.push_back(mb.node);
      if (mb.role == Role::Source) kept_out[m.graph.nodes[mb.node].outputs[0]] = grp.keep;
    }
  }
  int64_t splits_sliced = 0;
  for (const auto& sp : an.splits) {
    bool sliced = false;
    for (const auto& [gi, size] : sp.outputs) {
      const Group& out = an.groups[gi];
      const int64_t kept = static_cast<int64_t>(out.keep.size());
      if (out.keep.empty() || kept == size) continue;
      sliced = true;
      r.notes.push_back(groupName(m.graph, out) + ": kept " + std::to_string(kept) + " of " + std::to_string(size) +
                        " channels, those its input kept");
      for (const auto& mb : out.members) {
        if (mb.role == Role::Sink) sinks.push_back(mb.node);
        if (mb.role == Role::Source) kept_out[m.graph.nodes[mb.node].outputs[0]] = out.keep;
      }
    }
    splits_sliced += sliced;
  }
  int64_t concats_sliced = 0;
  for (const auto& link : an.links) {
    const Group& out = an.groups[link.out_group];
    const int64_t kept = static_cast<int64_t>(out.keep.size());
    if (!out.blocked.empty() || kept == out.channels) continue;
    ++concats_sliced;
    r.notes.push_back(groupName(m.graph, out) + ": kept " + std::to_string(kept) + " of " +
                      std::to_string(out.channels) + " channels, those its inputs kept");
    for (const auto& mb : out.members)
      if (mb.role == Role::Sink) sinks.push_back(mb.node);
  }
  const int64_t macs1 = macsOf(m);
  std::ostringstream sum;
  sum << "ratio " << std::setprecision(4) << ratio;
  if (refine_steps > 0) sum << " refined by " << refine_steps << " per-group steps";
  sum << ": MACs " << macs0 << " -> " << macs1 << " (-" << std::setprecision(3)
      << (macs0 > 0 ? 100.0 * (1.0 - double(macs1) / double(macs0)) : 0.0) << " %)";
  r.notes.push_back(sum.str());
  int64_t reconstructed = 0;
  if (o.getString("recover") == "lsq" && !sinks.empty()) {
    std::sort(sinks.begin(), sinks.end());
    sinks.erase(std::unique(sinks.begin(), sinks.end()), sinks.end());
    LsqOptions lo;
    lo.rows_per_sample = o.getInt("lsq_rows");
    lo.damping = o.getFloat("lsq_damping");
    lo.cv_rows_per_weight = o.getFloat("lsq_cv_rows");
    lo.ref_channels = kept_out;
    for (const auto& res : lsqRecover(m, unpruned, sinks, ctx, r, lo)) reconstructed += res.applied;
  }
  r.stats = {{"groups", ownGroups(an)},
             {"groups_pruned", groups_pruned},
             {"concats_sliced", concats_sliced},
             {"splits_sliced", splits_sliced},
             {"channels_removed", removed},
             {"channels_in_prunable_groups", total},
             {"layers_reconstructed", reconstructed}};
  r.changed = removed > 0;
  return r;
}

}  // namespace lwc::passes
