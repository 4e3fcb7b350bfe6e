#include "passes/activation_cut.h"

#include <algorithm>
#include <limits>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "lwc/status.h"
#include "passes/eliminate_dead.h"

namespace lwc::passes {

namespace {
constexpr size_t kInput = std::numeric_limits<size_t>::max();
}  // namespace

std::vector<char> ActivationCut::constantNodes(const Graph& g) {
  std::vector<char> c(g.nodes.size(), 0);
  std::unordered_set<std::string> values;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (engine::isRandomOp(n) || !implicitInputs(n).empty()) continue;
    bool all = true;
    for (const auto& in : n.inputs) all = all && (in.empty() || values.count(in) || g.initializers.contains(in));
    if (!all) continue;
    c[i] = 1;
    for (const auto& o : n.outputs) values.insert(o);
  }
  return c;
}

std::vector<char> ActivationCut::safeCuts(const Graph& g, const std::string& input) {
  // The engine rewrites a model before running it (engine/optimize.cpp): BatchNorm folding and
  // post-op fusion merge a Conv with its reader, and Convs run in NHWC with the elementwise ops,
  // pools and Concats after them (an Add reading two NHWC tensors becomes a sum post-op of one
  // Conv, rounded differently from a separate Add). A graph that starts at a cut gets the cut's
  // tensors in the model's layout (NCHW), so a cut gives the whole model's bits only where
  //  (a) no crossing tensor's producer would be merged with a reader: the tensor has two or more
  //      readers, or one that no rewrite absorbs; and
  //  (b) the crossing tensors, and what exact layout-free ops compute from them, reach only
  //      layers (Conv, Gemm, MatMul: their outputs are in the same layout either way), ops that
  //      run in NCHW in the whole model too, and those exact ops; never an Add, a pool that sums
  //      or a transcendental op, whose kernel or fusion depends on the layout.
  static const std::set<std::string> kPlainReaders = {"Conv",    "ConvTranspose", "Gemm",
                                                       "MatMul",  "Concat",        "MaxPool",
                                                       "AveragePool", "GlobalAveragePool", "Flatten",
                                                       "Reshape"};
  static const std::set<std::string> kLayers = {"Conv", "ConvTranspose", "Gemm", "MatMul"};
  // What the engine moves into NHWC after a Conv (optimize.cpp: kUnary, kBinary, pools, Concat, Q/DQ).
  static const std::set<std::string> kLayoutFollowers = {
      "Relu",  "Clip",        "Sigmoid",     "HardSigmoid",       "HardSwish", "LeakyRelu", "Elu",
      "Selu",  "Tanh",        "Neg",         "Abs",               "Exp",       "Log",       "Sqrt",
      "Erf",   "Identity",    "Softplus",    "Mish",              "Gelu",      "Celu",      "Add",
      "Sub",   "Mul",         "Div",         "Max",               "Min",       "Pow",       "Sum",
      "PRelu", "MaxPool",     "AveragePool", "GlobalAveragePool", "Concat",    "QuantizeLinear",
      "DequantizeLinear"};
  // Of those, the ones with the same bits in any layout and never fused into a Conv's post-ops
  // from this side: one rounding per element, or none.
  static const std::set<std::string> kExact = {"Relu", "Clip", "Identity", "Neg", "Abs", "Concat", "MaxPool",
                                               "Mul",  "Sub",  "Div",      "Max", "Min", "LeakyRelu", "PRelu"};
  const size_t N = g.nodes.size();
  for (const auto& n : g.nodes)
    if (!implicitInputs(n).empty()) {  // subgraphs: never cut
      std::vector<char> none(N + 1, 0);
      none[0] = 1;
      return none;
    }
  // Constants computed by nodes (Constant, shape arithmetic on initializers) never cross: every
  // graph after a cut computes them again, and the engine folds them as in the whole model.
  const std::vector<char> constant = constantNodes(g);
  std::unordered_map<std::string, std::vector<size_t>> readers;
  std::unordered_map<std::string, size_t> producer;
  for (size_t i = 0; i < N; ++i) {
    for (const auto& in : g.nodes[i].inputs)
      if (!in.empty()) readers[in].push_back(i);
    if (constant[i]) continue;
    for (const auto& o : g.nodes[i].outputs)
      if (!o.empty()) producer.emplace(o, i);
  }
  // (a): a tensor produced by node i and last read by node j crosses the cuts at i+1 ... j; an
  // unsafe one rules them out (difference array over positions 0 ... N).
  std::vector<int> blocked(N + 2, 0);
  for (size_t i = 0; i < N; ++i)
    for (const auto& o : g.nodes[i].outputs) {
      if (constant[i]) break;
      const auto it = readers.find(o);
      if (o.empty() || it == readers.end() || o == input) continue;
      const auto& r = it->second;
      const Node& r0 = g.nodes[r[0]];
      if (r.size() >= 2 || (r0.domain.empty() && kPlainReaders.count(r0.op_type))) continue;
      const size_t last = *std::max_element(r.begin(), r.end());
      if (last <= i) continue;
      ++blocked[i + 1];
      --blocked[last + 1];
    }
  std::vector<char> ok(N + 1, 0);
  int open = 0;
  for (size_t p = 0; p <= N; ++p) {
    open += blocked[p];
    ok[p] = open == 0;
  }
  // (b): follow the crossing tensors forward from each remaining cut.
  std::unordered_set<std::string> fed;
  for (size_t p = 1; p <= N; ++p) {
    if (!ok[p]) continue;
    fed.clear();
    for (size_t j = p; j < N && ok[p]; ++j) {
      const Node& n = g.nodes[j];
      bool reads_fed = false;
      for (const auto& in : n.inputs) {
        if (in.empty()) continue;
        const auto pi = producer.find(in);
        reads_fed = reads_fed || fed.count(in) || (pi != producer.end() && pi->second < p);
      }
      if (!reads_fed) continue;
      const bool standard = n.domain.empty();
      if (standard && kLayers.count(n.op_type)) continue;
      if (!standard || !kLayoutFollowers.count(n.op_type)) continue;  // runs in NCHW in the whole model too
      if (!kExact.count(n.op_type)) {
        ok[p] = 0;
        break;
      }
      for (const auto& o : n.outputs) fed.insert(o);
    }
  }
  ok[0] = 1;
  return ok;
}

ActivationCut::ActivationCut(int64_t samples, engine::SessionOptions opts, int64_t budget_bytes)
    : samples_(samples), opts_(opts), budget_(budget_bytes) {}

ActivationCut::~ActivationCut() = default;

void ActivationCut::reset() {
  cut_ = 0;
  cut_infos_.clear();
  kept_.clear();
}

int64_t ActivationCut::keptBytes() const {
  int64_t bytes = 0;
  for (const auto& batch : kept_)
    for (const auto& t : batch) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

void ActivationCut::begin(const Model& model, size_t upto, const std::string& value) {
  const Graph& g = model.graph;
  if (!typed_) {
    types_ = inferShapes(model);
    for (const auto* vi : g.realInputs()) {
      input_ = vi->name;
      break;
    }
    typed_ = true;
  }
  upto = std::min(upto, g.nodes.size());
  if (safe_.size() != g.nodes.size() + 1) {  // the node list stays the same between passes
    safe_ = safeCuts(g, input_);
    constant_ = constantNodes(g);
    producer_.clear();
    for (size_t i = 0; i < g.nodes.size(); ++i)
      if (!constant_[i])
        for (const auto& o : g.nodes[i].outputs)
          if (!o.empty()) producer_.emplace(o, i);
  }
  // Computed before node k (the input counts as computed before node 0).
  auto before = [&](const std::string& v, size_t k) {
    if (v == input_) return true;
    const auto it = producer_.find(v);
    return it != producer_.end() && it->second < k;
  };
  // The kept cut serves this pass when it lies at or before `upto` and `value` is computed after
  // it or kept there; otherwise start again from the input.
  if (cut_ > 0) {
    bool ok = upto >= cut_ && cut_ <= g.nodes.size();
    if (ok && before(value, cut_))
      ok = std::any_of(cut_infos_.begin(), cut_infos_.end(), [&](const ValueInfo& v) { return v.name == value; });
    if (!ok) reset();
  }

  // The new cut: the last position at or before `upto` where it gives the same bits (see safeCuts).
  upto_ = upto;
  while (upto_ > cut_ && !safe_[upto_]) --upto_;
  advancing_ = upto_ > cut_;
  next_names_.clear();
  if (advancing_) {  // the tensors crossing it: computed before it, read at or after it
    std::set<std::string> seen;
    auto take = [&](const std::string& v) {
      if (!v.empty() && before(v, upto_) && seen.insert(v).second) next_names_.push_back(v);
    };
    for (size_t i = upto_; i < g.nodes.size(); ++i) {
      for (const auto& in : g.nodes[i].inputs) take(in);
      for (const auto& in : implicitInputs(g.nodes[i])) take(in);
    }
  }

  // The nodes after the kept cut, fed by its tensors, with the new cut's tensors and `value` as outputs.
  Model seg = model;
  Graph& sg = seg.graph;
  if (cut_ > 0) {
    sg.nodes.clear();
    for (size_t i = 0; i < g.nodes.size(); ++i)
      if (i >= cut_ || constant_[i]) sg.nodes.push_back(g.nodes[i]);
    std::vector<ValueInfo> ins = cut_infos_;
    for (const auto& vi : g.inputs)
      if (g.initializers.contains(vi.name)) ins.push_back(vi);
    sg.inputs = std::move(ins);
  }
  auto outputInfo = [&](const std::string& v) {
    const auto it = types_.find(v);
    if (it != types_.end() && it->second.dtype != DType::Undefined) return it->second;
    ValueInfo vi;
    vi.name = v;
    vi.dtype = DType::Float32;
    return vi;
  };
  sg.outputs.clear();
  value_out_ = next_names_.size();
  for (size_t k = 0; k < next_names_.size(); ++k) {
    sg.outputs.push_back(outputInfo(next_names_[k]));
    if (next_names_[k] == value) value_out_ = k;
  }
  if (value_out_ == next_names_.size()) sg.outputs.push_back(outputInfo(value));
  PassContext none;
  EliminateDead().run(seg, none);
  session_ = std::make_unique<engine::Session>(seg, opts_);
  feeds_.clear();
  const auto& names = session_->inputNames();
  for (size_t i = 0; i < names.size(); ++i) {
    size_t j = kInput;
    for (size_t k = 0; k < cut_infos_.size(); ++k)
      if (cut_infos_[k].name == names[i]) j = k;
    if (j == kInput && names[i] != input_)
      fail(model.label(), ": activation cut: input '", names[i], "' of the nodes after node ", cut_, " is not kept");
    feeds_.emplace_back(i, j);
  }
  batches_seen_ = 0;
}

Tensor ActivationCut::get(size_t b, const Tensor& input) {
  if (!session_) fail("activation cut: get() outside a pass");
  if (cut_ > 0 && b >= kept_.size())
    fail("activation cut: batch ", b, " was not seen when the cut was kept (", kept_.size(), " batches)");
  engine::TensorMap feeds;
  const auto& names = session_->inputNames();
  for (const auto& [i, j] : feeds_) feeds[names[i]] = j == kInput ? input : kept_[b][j];
  std::vector<Tensor> outs = session_->runOrdered(feeds);
  Tensor v = outs.at(value_out_);
  if (advancing_ && b == 0) {
    // Size the new cut from the first batch: all batches but the last are as large.
    int64_t bytes = 0;
    for (size_t k = 0; k < next_names_.size(); ++k) bytes += static_cast<int64_t>(outs[k].nbytes());
    const int64_t n0 = input.rank() > 0 ? std::max<int64_t>(input.dim(0), 1) : 1;
    const int64_t batches = (std::max<int64_t>(samples_, 1) + n0 - 1) / n0;
    advancing_ = bytes <= budget_ / batches;
  }
  if (advancing_) {
    outs.resize(next_names_.size());
    if (cut_ == 0) {
      if (b != kept_.size()) fail("activation cut: batches must come in order (got ", b, ", expected ", kept_.size(), ")");
      kept_.push_back(std::move(outs));
    } else {
      kept_[b] = std::move(outs);  // batch b at the old cut is not needed again
    }
  }
  ++batches_seen_;
  return v;
}

void ActivationCut::finish() {
  if (advancing_) {
    if (batches_seen_ != kept_.size()) {
      reset();  // a pass that did not read every batch: the kept tensors are of two cuts
    } else {
      cut_ = upto_;
      cut_infos_.clear();
      for (size_t k = 0; k < next_names_.size(); ++k) {
        ValueInfo vi;
        vi.name = next_names_[k];
        const auto it = types_.find(vi.name);
        if (it != types_.end()) vi.shape = it->second.shape;
        vi.dtype = kept_.empty() ? (it != types_.end() ? it->second.dtype : DType::Float32) : kept_[0][k].dtype();
        cut_infos_.push_back(std::move(vi));
      }
    }
  }
  advancing_ = false;
  session_.reset();
}

}  // namespace lwc::passes
