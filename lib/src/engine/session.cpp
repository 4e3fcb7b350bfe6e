// Session: prepares kernels, plans buffer lifetimes, runs nodes in topological order.
#include <omp.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <unordered_map>

#include "engine/kernel.h"
#include "lwc/metrics.h"
#include "lwc/weight_coding.h"
#include "engine/optimize.h"

namespace lwc::engine {

void configureThreads(int threads) {
  // Pinned threads avoid the multi-millisecond stalls unpinned OpenMP threads show under load.
  // Only effective before the OpenMP runtime starts, hence also done in main().
  ::setenv("OMP_PROC_BIND", "close", 0);
  ::setenv("OMP_PLACES", "cores", 0);
  if (!std::getenv("OMP_WAIT_POLICY")) ::setenv("GOMP_SPINCOUNT", "20000", 0);
  const int n = threads > 0 ? threads : omp_get_num_procs();
  omp_set_num_threads(n);
}

int configuredThreads() { return omp_get_max_threads(); }

bool hostX86WithoutVnni() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return !__builtin_cpu_supports("avx512vnni") && !__builtin_cpu_supports("avxvnni");
#else
  return false;
#endif
}

struct Session::Impl {
  Graph graph;  // own copy: kernels refer to its nodes
  SessionOptions opts;
  std::vector<std::unique_ptr<Kernel>> kernels;
  std::vector<std::string> impl_names;
  std::unordered_map<std::string, int> slot_of;
  std::vector<std::string> slot_names;
  std::vector<Tensor> constants;         // per slot: initializer value or empty
  std::vector<std::vector<int>> node_in, node_out;
  std::vector<std::vector<int>> release_after;  // per node: slots whose last reader it is
  std::vector<std::string> input_names, output_names;
  std::vector<int> input_slots, output_slots;
  std::vector<const ValueInfo*> input_infos;
  ValueTypes types;
  OptimizeStats stats;
  BufferPool pool;
  std::vector<std::vector<float>> node_ms;  ///< profile: per node, the time of every call
  std::string label;                        ///< the model's name for messages
  /// Node name -> how the model's file describes it, for nodes the engine rewrote into its own
  /// op types: errors name the node the user can find in the file.
  std::unordered_map<std::string, std::string> file_desc;

  // Batch splitting (runOrdered). A run's first nodes may compute a few samples at a time when
  // each of them computes every sample on its own (convolutions, pooling, activations, arithmetic
  // with constants ...): roles per input, 'b' carries the batch, 'c' must be a constant, 'e' an
  // elementwise operand (the batch, or a constant that broadcasts along it).
  std::vector<std::string> split_roles;  ///< per leading node that may be split
  std::vector<int64_t> const_bytes;      ///< per such node: bytes of its constant inputs
  std::vector<int> last_reader;          ///< per slot: last node reading it, nodes.size() for outputs, -1 none
  struct SplitPlan {
    size_t nodes = 0;         ///< nodes [0, nodes) run per slice; 0: no split
    int64_t batch = 0, slices = 0;
    std::vector<int> inputs;  ///< input indices (into input_slots) those nodes read
    std::vector<int> cut;     ///< slots they produce that later nodes (or the caller) read
    std::string text;
  };
  std::map<std::vector<Shape>, SplitPlan> split_plans;  ///< by the shapes of the graph inputs
  std::string last_split;

  void runNode(size_t i, std::vector<Tensor>& values, const TensorMap& inputs, const Observer& observer,
               float* ms_acc);
  const SplitPlan& splitPlan(const std::vector<Tensor>& values, const TensorMap& inputs);

  // A kernel refused its inputs at run time (a shape the model cannot take): names the model, the
  // node as the file names it (not the engine's rewrite of it) and the inputs that were fed.
  [[noreturn]] void failRun(const Node& n, const Error& e, const TensorMap& inputs) const {
    std::string msg = e.what();
    if (n.domain == kInternalDomain)
      if (auto it = file_desc.find(n.name); it != file_desc.end() && !it->second.empty())
        if (const std::string internal = n.describe(); msg.compare(0, 5 + internal.size(), "node " + internal) == 0)
          msg = "node " + it->second + msg.substr(5 + internal.size());
    // Valid ONNX that a kernel lacks (Resize linear on uint8): neither the inputs nor the model are
    // at fault, as the messages below would say.
    if (dynamic_cast<const UnsupportedError*>(&e))
      fail(label, ": ", msg, ": valid ONNX that the lwc engine does not compute yet; `lwc ops` lists the supported ops, "
           "and exporting this node for float32 avoids it");
    std::string fed;
    // Every input fed has a declared shape whose dimensions, the batch aside, are all fixed, and
    // the fed shape has them. (Free dimensions do not clear the inputs: a 1x1 image fits
    // [N,8,H,W] and is still too small for a 2x2 window.)
    bool as_declared = true;
    for (size_t k = 0; k < input_names.size(); ++k) {
      auto it = inputs.find(input_names[k]);
      if (it == inputs.end()) continue;
      const Shape& got = it->second.shape();
      fed += (fed.empty() ? "" : ", ") + ("'" + input_names[k] + "' " + shapeStr(got));
      if (!input_infos[k]->shape) {
        as_declared = false;
        continue;
      }
      const SymShape& want = *input_infos[k]->shape;
      fed += " (declared " + symShapeStr(want) + ")";
      const bool fixed = want.empty() || std::all_of(want.begin() + 1, want.end(), [](const Dim& x) { return x.known(); });
      as_declared = as_declared && fixed && shapeFits(want, got);
    }
    // Inputs of the declared shapes leave the model itself at fault (a kernel_shape the weights do
    // not have): pointing at the inputs sent users the wrong way.
    if (as_declared && !fed.empty())
      fail(label, ": ", msg, "; inputs fed: ", fed, ", as the model declares them, so the model itself is inconsistent: "
           "`lwc info` checks it; repair it or export it again");
    fail(label, ": ", msg, "; inputs fed: ", fed, "; feed inputs the model accepts (the shape it was exported for)");
  }

  int slot(const std::string& name) {
    auto [it, fresh] = slot_of.emplace(name, static_cast<int>(slot_names.size()));
    if (fresh) {
      slot_names.push_back(name);
      constants.emplace_back();
    }
    return it->second;
  }
};

namespace {
// Evaluates nodes whose inputs are all constants (Constant nodes, shape arithmetic on initializers)
// once, with the reference kernels, and stores their outputs as initializers. Later rewrites then
// see constants (e.g. the min/max of a Clip) and kernels can pre-process them. `keep_dequantize`
// leaves DequantizeLinear of constant weights for the QDQ fusion.
int foldConstantNodes(Graph& g, const Model& model, bool keep_dequantize) {
  int folded = 0;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (keep_dequantize && n.op_type == "DequantizeLinear") continue;
    std::vector<const Tensor*> ins;
    bool all_const = true;
    for (const auto& in : n.inputs) {
      const Tensor* t = in.empty() ? nullptr : g.initializers.find(in);
      all_const = all_const && (in.empty() || t);
      ins.push_back(t);
    }
    if (!all_const) continue;
    std::optional<std::vector<Tensor>> outs;
    try {
      outs = evaluateNode(model, n, ins);
    } catch (const Error& e) {
      // A damaged coded weight named the node only (lwc exec, eval and bench; info and decode name
      // the file).
      if (n.domain != weight_coding::kDomain) throw;
      fail(model.label(), ": ", e.what(), "; the file's Huffman-coded weights are damaged: encode it again from the "
           "plain model (lwc encode)");
    }
    if (!outs) continue;
    for (size_t o = 0; o < outs->size(); ++o)
      if (!n.outputs[o].empty()) g.initializers.set(n.outputs[o], (*outs)[o]);
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    --i;
    ++folded;
  }
  return folded;
}
}  // namespace

namespace {
// The input roles (see Session::Impl::split_roles) of a node that computes each sample of the batch
// on its own, given the batch on axis 0 of its 'b' inputs; nullopt for any other node. The ranks
// and axes that also decide it are checked on a run's inputs and shapes (splitInputsOk,
// splitShapesOk).
std::optional<std::string> perSampleRoles(const Node& n) {
  const size_t ni = n.inputs.size();
  if (ni == 0) return std::nullopt;
  auto first = [&](char rest) {
    std::string r(ni, rest);
    r[0] = 'b';
    return r;
  };
  const std::string& op = n.op_type;
  if (n.domain == kInternalDomain) {
    if (op == "ConvNhwc") {
      auto r = first('c');
      if (ni > 3) r[3] = 'b';  // the residual of a fused Add
      return r;
    }
    if (op == "QLinearConvNhwc" || op == "QLinearConvNhwcLut" || op == "Gelu" || op == "QLut" || op == "QLutChannels" ||
        op == "QGlobalAvgPoolNhwc")
      return first('c');
    if (op == "PoolNhwc" || op == "GlobalAvgPoolNhwc") return n.outputs.size() == 1 ? first('c') : std::optional<std::string>();
    if (op == "QLinearConvNhwcAdd") {
      if (ni < 10) return std::nullopt;
      auto r = first('c');
      r[9] = 'b';
      return r;
    }
    if (op == "QMulLut" && ni == 7) {
      std::string r(ni, 'c');
      r[0] = r[3] = 'e';
      return r;
    }
    if (op == "QAdd" && ni == 8) {
      std::string r(ni, 'c');
      r[0] = r[3] = 'e';
      return r;
    }
    return std::nullopt;
  }
  if (!n.domain.empty()) return std::nullopt;
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" || op == "PRelu") return std::string(ni, 'e');
  if (op == "Transpose") {
    const auto perm = n.attrInts("perm");
    return !perm.empty() && perm[0] == 0 ? first('c') : std::optional<std::string>();
  }
  if (op == "Concat") return n.attrInt("axis", 0) != 0 ? std::string(ni, 'b') : std::optional<std::string>();
  static const std::set<std::string> kOneInput = {"Relu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish",
                                                  "LeakyRelu", "Identity", "Erf", "Conv", "GlobalAveragePool",
                                                  "GlobalMaxPool", "QuantizeLinear", "DequantizeLinear"};
  if (kOneInput.count(op)) return first('c');
  // One output: MaxPool's Indices count across the batch, BatchNormalization's running statistics
  // (training mode) average over it.
  if ((op == "MaxPool" || op == "AveragePool" || op == "BatchNormalization") && n.outputs.size() == 1) return first('c');
  return std::nullopt;
}

// Whether input k carries the batch: a 'b' input, or an elementwise operand that is not constant.
bool carriesBatch(const std::string& roles, const std::vector<char>& in_const, size_t k) {
  return roles[k] == 'b' || (roles[k] == 'e' && !in_const[k]);
}

// What the inputs alone tell before node n runs on one sample (splitInputsOk), then what the
// run's shapes tell (splitShapesOk). The inputs: a constant elementwise operand whose leading
// dimension lines up with the batch and is not 1 (a PRelu slope of [B,1,1,1]), or that has more
// dimensions than the batch-carrying inputs, and a per-axis QuantizeLinear/DequantizeLinear on axis
// 0 have parameters per sample, which a one-sample run refuses (the probe's error ended the run);
// a Concat along axis 0 joins samples.
bool splitInputsOk(const Node& n, const std::string& roles, std::span<const Tensor* const> ins,
                   const std::vector<char>& in_const) {
  size_t rank = 0;
  for (size_t k = 0; k < ins.size(); ++k)
    if (ins[k] && carriesBatch(roles, in_const, k)) rank = std::max(rank, ins[k]->rank());
  if (rank == 0) return false;
  for (size_t k = 0; k < ins.size(); ++k)
    if (ins[k] && roles[k] == 'e' && in_const[k] &&
        (ins[k]->rank() > rank || (ins[k]->rank() == rank && ins[k]->dim(0) != 1)))
      return false;
  const auto axis_is_batch = [&](int64_t dflt) {
    int64_t a = n.attrInt("axis", dflt);
    if (a < 0) a += static_cast<int64_t>(rank);
    return a == 0;
  };
  if (n.domain.empty() && n.op_type == "Concat") return !axis_is_batch(0);
  if (n.domain.empty() && (n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear"))
    return ins.size() < 2 || !ins[1] || ins[1]->numel() == 1 || !axis_is_batch(1);
  return true;
}

// After the run: every output and every batch-carrying input has the output's rank and one sample
// (the rank splitInputsOk took the axes in).
bool splitShapesOk(const std::string& roles, std::span<const Tensor* const> ins, const std::vector<Tensor>& outs,
                   const std::vector<char>& in_const) {
  if (outs.empty() || outs[0].empty() || outs[0].rank() == 0) return false;
  const size_t rank = outs[0].rank();
  for (const auto& o : outs)
    if (!o.empty() && (o.rank() != rank || o.dim(0) != 1)) return false;
  for (size_t k = 0; k < ins.size(); ++k)
    if (ins[k] && carriesBatch(roles, in_const, k) && (ins[k]->rank() != rank || ins[k]->dim(0) != 1))
      return false;
  return true;
}

// Rows [off, off + n) of axis 0, in place where they start on a 64-byte boundary (kernels may
// assume the alignment of a fresh buffer), else copied.
Tensor batchRows(const Tensor& t, int64_t off, int64_t n) {
  Shape s = t.shape();
  const int64_t per = t.numel() / s[0];
  s[0] = n;
  Tensor v = t.view(off * per, s);
  return (off * per * static_cast<int64_t>(dtypeSize(t.dtype()))) % 64 == 0 ? v : v.clone();
}

Tensor concatRows(const std::vector<Tensor>& parts) {
  Shape s = parts.at(0).shape();
  s[0] = 0;
  for (const auto& p : parts) {
    if (p.dtype() != parts[0].dtype() || p.rank() != s.size() ||
        !std::equal(p.shape().begin() + 1, p.shape().end(), s.begin() + 1))
      throw InternalError("batch slices of one value differ in type or shape: " + shapeStr(parts[0].shape()) +
                          " and " + shapeStr(p.shape()));
    s[0] += p.dim(0);
  }
  Tensor t = Tensor::uninitialized(parts[0].dtype(), s);
  auto* dst = static_cast<std::byte*>(t.raw());
  for (const auto& p : parts) {
    std::memcpy(dst, p.raw(), p.nbytes());
    dst += p.nbytes();
  }
  return t;
}

// Where splitting pays (measured 2026-12-05 on a 2-core Xeon with torchvision mobilenet_v2,
// resnet18 and resnet50 at batch 32): a node bound by memory (fewer than
// kMemoryBoundMacsPerElement multiply-adds per activation element read or written, 6 per byte of
// float32, where int8 kernels also do about 4 times the multiply-adds per second: pointwise
// convolutions of few channels, depthwise ones, pooling, activations) whose activations (inputs
// and outputs) over the whole batch take kSplitFromBytes or more gains when a slice's take at most
// kSliceBytes: mobilenet_v2 97-107 -> 70-74 ms. Nodes bound by compute (resnet's 3x3 convolutions)
// neither gain nor lose; nodes with more than kSplitMaxWeightBytes of weights would be read again
// for every slice and end the split.
constexpr int64_t kSplitFromBytes = 24ll << 20;
constexpr int64_t kSliceBytes = 16ll << 20;
constexpr int64_t kSplitMaxWeightBytes = 1ll << 20;
constexpr int64_t kMemoryBoundMacsPerElement = 24;
constexpr size_t kSplitCutWindow = 8;  ///< nodes after the last large one where the cut may go
}  // namespace

bool isRandomOp(const Node& n) {
  static const std::set<std::string> kNondeterministic = {"RandomNormal", "RandomUniform", "RandomNormalLike",
                                                          "RandomUniformLike", "Multinomial", "Bernoulli"};
  return kNondeterministic.count(n.op_type) > 0;
}

std::optional<std::vector<Tensor>> evaluateNode(const Model& model, const Node& n,
                                                const std::vector<const Tensor*>& inputs) {
  return evaluateNodeAt(n, model.opsetFor(n.domain), inputs);
}

std::optional<std::vector<Tensor>> evaluateNodeAt(const Node& n, int64_t opset, const std::vector<const Tensor*>& inputs) {
  // ai.lwc (coded weights) is deterministic and decodes once when a session is built.
  if ((!n.domain.empty() && n.domain != "ai.lwc") || isRandomOp(n) || !implicitInputs(n).empty())
    return std::nullopt;
  const auto cands = builtinKernels().find(n.domain, n.op_type, opset);
  const KernelRegistry::Entry* ref = nullptr;
  for (const auto* e : cands)
    if (e->impl == "ref") ref = e;
  if (!ref) return std::nullopt;
  SessionOptions ref_opts;
  ref_opts.reference_only = true;
  KernelInfo info{n, opset, inputs, std::vector<const ValueInfo*>(inputs.size(), nullptr), ref_opts};
  auto k = ref->factory(info);
  if (!k) return std::nullopt;
  std::vector<Tensor> outs(n.outputs.size());
  KernelContext ctx{n, inputs, outs};
  k->run(ctx);
  for (size_t o = 0; o < outs.size(); ++o)
    if (!n.outputs[o].empty() && outs[o].empty()) return std::nullopt;
  return outs;
}

Session::Session(const Model& model, SessionOptions opts) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.graph = model.graph;
  s.opts = opts;
  s.label = model.label();
  Graph& g = s.graph;
  topoSort(g, model.label());
  // If, Loop and Scan read the outer values their subgraphs use as extra inputs after their own
  // (see kernels/control_flow.cpp), so that buffer planning and the graph rewrites see those reads.
  // (Other ops with subgraphs have no kernel: the op is reported as unsupported below.)
  for (auto& n : g.nodes)
    if (n.domain.empty() && (n.op_type == "If" || n.op_type == "Loop" || n.op_type == "Scan")) {
      const auto outer = implicitInputs(n);
      n.inputs.insert(n.inputs.end(), outer.begin(), outer.end());
    }
  s.types = inferShapes(model);
  if (!s.opts.reference_only) {
    // Weight DequantizeLinear nodes stay until the QDQ fusion has turned them into integer kernels.
    foldConstantNodes(g, model, !s.opts.observable);
    if (!s.opts.observable) {
      s.stats = optimizeForExecution(g, &s.types, model.opsetFor(""));
      foldConstantNodes(g, model, false);
    }
  }

  for (const auto& n : g.nodes)
    if (n.domain == kInternalDomain && !n.name.empty()) s.file_desc.emplace(n.name, std::string());
  if (!s.file_desc.empty())
    for (const auto& n : model.graph.nodes)
      if (auto it = s.file_desc.find(n.name); it != s.file_desc.end() && it->second.empty()) it->second = n.describe();
  for (const auto& [name, t] : g.initializers.items()) s.constants[s.slot(name)] = t;
  for (const auto* v : g.realInputs()) {
    s.input_names.push_back(v->name);
    s.input_slots.push_back(s.slot(v->name));
    s.input_infos.push_back(v);
  }
  const KernelRegistry& reg = builtinKernels();
  for (const auto& n : g.nodes) {
    std::vector<int> ins, outs;
    for (const auto& i : n.inputs) ins.push_back(i.empty() ? -1 : s.slot(i));
    for (const auto& o : n.outputs) outs.push_back(o.empty() ? -1 : s.slot(o));
    s.node_in.push_back(std::move(ins));
    s.node_out.push_back(std::move(outs));

    const int64_t opset = n.domain == kInternalDomain ? 1 : model.opsetFor(n.domain);
    KernelInfo info{n, opset, {}, {}, s.opts};
    for (const auto& i : n.inputs) {
      info.constants.push_back(i.empty() ? nullptr : g.initializers.find(i));
      auto it = s.types.find(i);
      info.input_types.push_back(it == s.types.end() ? nullptr : &it->second);
    }
    std::unique_ptr<Kernel> k;
    std::string impl;
    for (const auto* e : reg.find(n.domain, n.op_type, opset)) {
      if (s.opts.reference_only && e->impl != "ref") continue;
      k = e->factory(info);
      if (k) {
        impl = e->impl;
        break;
      }
    }
    if (!k) {
      const std::string op = (n.domain.empty() ? std::string() : n.domain + ".") + n.op_type;
      if (reg.find(n.domain, n.op_type, 1 << 20).empty() && reg.find(n.domain, n.op_type, opset).empty() &&
          [&] {
            for (const auto& e : reg.entries())
              if (e.op_type == n.op_type && e.domain == n.domain) return false;
            return true;
          }())
        fail(model.label(), ": node ", n.describe(), ": op ", op, " (opset ", opset,
             ") is not supported by the lwc engine; `lwc ops` lists what is");
      fail(model.label(), ": node ", n.describe(), ": op ", op, " is supported, but not at opset ", opset,
           " or with these attributes; `lwc ops` lists the supported opset ranges");
    }
    s.kernels.push_back(std::move(k));
    s.impl_names.push_back(impl);
  }
  s.node_ms.assign(g.nodes.size(), {});
  for (const auto& o : g.outputs) {
    s.output_names.push_back(o.name);
    s.output_slots.push_back(s.slot(o.name));
  }
  // Buffer lifetimes: a value is released after its last reader, unless it is an output or constant.
  std::vector<int> last(s.slot_names.size(), -1);
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (int sl : s.node_in[i])
      if (sl >= 0) last[sl] = static_cast<int>(i);
  for (int sl : s.output_slots) last[sl] = static_cast<int>(g.nodes.size());
  s.release_after.resize(g.nodes.size());
  for (size_t sl = 0; sl < last.size(); ++sl) {
    if (!s.constants[sl].empty()) continue;
    if (last[sl] >= 0 && last[sl] < static_cast<int>(g.nodes.size())) s.release_after[last[sl]].push_back(static_cast<int>(sl));
  }
  // Outputs of nodes nobody reads are released right away.
  for (size_t i = 0; i < g.nodes.size(); ++i)
    for (int sl : s.node_out[i])
      if (sl >= 0 && last[sl] < 0) s.release_after[i].push_back(sl);
  s.last_reader = last;

  // The leading nodes that may run on slices of the batch: inputs with a symbolic first dimension
  // carry the batch, and so does every output of a node that computes each sample on its own.
  if (s.opts.split_batch && !s.opts.reference_only && !s.opts.observable) {
    std::vector<char> batched(s.slot_names.size(), 0);
    for (size_t k = 0; k < s.input_slots.size(); ++k) {
      const auto& shape = s.input_infos[k]->shape;
      if (shape && !shape->empty() && !(*shape)[0].known()) batched[s.input_slots[k]] = 1;
    }
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const auto roles = perSampleRoles(g.nodes[i]);
      if (!roles) break;
      // Every input fits its role, and one carries the batch.
      bool fits = true, any = false;
      int64_t const_bytes = 0;
      for (size_t k = 0; k < roles->size(); ++k) {
        const int sl = s.node_in[i][k];
        if (sl < 0) continue;
        const bool is_const = !s.constants[sl].empty();
        const char r = (*roles)[k];
        fits = fits && !(r == 'c' && !is_const) && !(r == 'b' && !batched[sl]) && !(r == 'e' && !is_const && !batched[sl]);
        any = any || batched[sl];
        if (is_const) const_bytes += static_cast<int64_t>(s.constants[sl].nbytes());
      }
      if (!fits || !any) break;
      for (int sl : s.node_out[i])
        if (sl >= 0) batched[sl] = 1;
      s.split_roles.push_back(*roles);
      s.const_bytes.push_back(const_bytes);
    }
  }
}

Session::~Session() = default;

const std::vector<std::string>& Session::inputNames() const { return impl_->input_names; }
const std::vector<std::string>& Session::outputNames() const { return impl_->output_names; }

std::vector<std::pair<std::string, std::string>> Session::kernelChoices() const {
  std::vector<std::pair<std::string, std::string>> r;
  for (size_t i = 0; i < impl_->graph.nodes.size(); ++i)
    r.emplace_back(impl_->graph.nodes[i].describe(), impl_->impl_names[i]);
  return r;
}

std::vector<NodeProfile> Session::profile() const {
  std::vector<NodeProfile> r;
  if (!impl_->opts.profile) return r;
  for (size_t i = 0; i < impl_->graph.nodes.size(); ++i) {
    const Node& n = impl_->graph.nodes[i];
    const std::vector<double> t(impl_->node_ms[i].begin(), impl_->node_ms[i].end());
    double total = 0;
    for (double v : t) total += v;
    r.push_back({n.describe(), n.domain.empty() ? n.op_type : n.domain + "." + n.op_type, impl_->impl_names[i],
                 impl_->kernels[i]->primitive(), total, static_cast<int64_t>(t.size()), percentile(t, 0.5)});
  }
  return r;
}

void Session::resetProfile() {
  for (auto& t : impl_->node_ms) t.clear();
}

namespace {
void checkInput(const std::string& name, const ValueInfo* info, const Tensor& t) {
  if (!info) return;
  if (info->dtype != DType::Undefined && info->dtype != t.dtype())
    fail("model input '", name, "' expects ", dtypeName(info->dtype), " but got ", dtypeName(t.dtype()));
  if (!info->shape) return;
  const SymShape& want = *info->shape;
  if (!shapeFits(want, t.shape()))
    fail("model input '", name, "' expects shape ", symShapeStr(want), " but got ", shapeStr(t.shape()),
         "; check the data's shape and layout");
}
}  // namespace

void Session::Impl::runNode(size_t i, std::vector<Tensor>& values, const TensorMap& inputs, const Observer& observer,
                            float* ms_acc) {
  const Node& n = graph.nodes[i];
  std::array<const Tensor*, 16> small{};
  std::vector<const Tensor*> big;
  const auto& in_slots = node_in[i];
  const Tensor** in_ptrs = small.data();
  if (in_slots.size() > small.size()) {
    big.resize(in_slots.size());
    in_ptrs = big.data();
  }
  for (size_t k = 0; k < in_slots.size(); ++k) {
    const int sl = in_slots[k];
    if (sl < 0) {
      in_ptrs[k] = nullptr;
      continue;
    }
    const Tensor& v = values[sl].empty() ? constants[sl] : values[sl];
    if (v.empty()) throw InternalError("value '" + slot_names[sl] + "' read before it was produced");
    in_ptrs[k] = &v;
  }
  // Inputs whose buffers the kernel may take over (KernelContext::donor).
  std::array<Tensor*, 16> donors{};
  const size_t n_donors = std::min(in_slots.size(), donors.size());
  for (size_t k = 0; k < n_donors; ++k) {
    const int sl = in_slots[k];
    if (sl < 0 || last_reader[sl] != static_cast<int>(i) || values[sl].empty() || !values[sl].uniqueBuffer()) continue;
    if (std::count(in_slots.begin(), in_slots.end(), sl) == 1) donors[k] = &values[sl];
  }
  std::vector<Tensor> outs(n.outputs.size());
  KernelContext ctx{n, std::span<const Tensor* const>(in_ptrs, in_slots.size()), outs,
                    std::span<Tensor* const>(donors.data(), n_donors)};
  try {
    if (opts.profile) {
      const auto t0 = std::chrono::steady_clock::now();
      kernels[i]->run(ctx);
      const float ms = std::chrono::duration<float, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (ms_acc) *ms_acc += ms;
      else node_ms[i].push_back(ms);
    } else {
      kernels[i]->run(ctx);
    }
  } catch (const Error& e) {
    failRun(n, e, inputs);
  }
  for (size_t o = 0; o < n.outputs.size(); ++o) {
    const int sl = node_out[i][o];
    if (sl < 0) continue;
    if (outs[o].empty()) throw InternalError("node " + n.describe() + " did not produce output " + std::to_string(o));
    values[sl] = std::move(outs[o]);
    if (observer) observer(slot_names[sl], values[sl]);
  }
  for (int sl : release_after[i]) values[sl] = Tensor();
}

// The split for the inputs in `values` (first call with their shapes: decided from one sample's
// run of the candidate nodes, so it depends on the shapes alone). The nodes split are those up to
// a cut after the last one whose activations over the batch take kSplitFromBytes or more; the cut
// goes where the values crossing it take the fewest bytes, within kSplitCutWindow nodes; a slice
// holds as many samples as keep the largest node's activations within kSliceBytes (at least 2).
const Session::Impl::SplitPlan& Session::Impl::splitPlan(const std::vector<Tensor>& values, const TensorMap& inputs) {
  std::vector<Shape> key;
  for (int sl : input_slots) key.push_back(values[sl].shape());
  auto it = split_plans.find(key);
  if (it != split_plans.end()) return it->second;
  SplitPlan plan;
  // True when one of the first n nodes reads slot sl.
  auto read_by_first = [&](size_t n, int sl) {
    for (size_t i = 0; i < n; ++i)
      if (std::find(node_in[i].begin(), node_in[i].end(), sl) != node_in[i].end()) return true;
    return false;
  };
  // The graph inputs the candidates read, and the batch they share.
  size_t cand = 0;
  while (cand < split_roles.size() && const_bytes[cand] <= kSplitMaxWeightBytes) ++cand;
  int64_t batch = -1;
  std::vector<Tensor> probe(values.size());
  for (size_t k = 0; k < input_slots.size() && cand > 0; ++k) {
    const int sl = input_slots[k];
    if (last_reader[sl] < 0 || !read_by_first(cand, sl)) continue;
    const Tensor& t = values[sl];
    if (t.rank() == 0 || (batch >= 0 && t.dim(0) != batch)) cand = 0;
    else {
      batch = t.dim(0);
      plan.inputs.push_back(static_cast<int>(k));
      if (batch > 0) probe[sl] = batchRows(t, 0, 1);
    }
  }
  if (batch < 4) cand = 0;
  // One sample through the candidates: bytes per sample, and the shape checks.
  std::vector<int64_t> slot_bytes(values.size(), 0), ws(cand, 0), elems(cand, 0), macs(cand, 0);
  for (size_t k : plan.inputs) slot_bytes[input_slots[k]] = static_cast<int64_t>(probe[input_slots[k]].nbytes());
  size_t seg = 0;
  for (; seg < cand; ++seg) {
    std::vector<Tensor> in_vals;  // handles: the run below may release the probe's slots
    std::vector<char> in_const;
    for (int sl : node_in[seg]) {
      in_vals.push_back(sl < 0 ? Tensor() : (probe[sl].empty() ? constants[sl] : probe[sl]));
      in_const.push_back(sl >= 0 && probe[sl].empty() && !constants[sl].empty());
    }
    std::vector<const Tensor*> ins;
    for (const auto& t : in_vals) ins.push_back(t.empty() ? nullptr : &t);
    if (!splitInputsOk(graph.nodes[seg], split_roles[seg], ins, in_const)) break;
    std::vector<Tensor> outs(node_out[seg].size());  // taken as produced: unread ones are freed at once
    float probe_ms = 0;
    runNode(seg, probe, inputs,
            [&](const std::string& name, const Tensor& t) {
              for (size_t o = 0; o < outs.size(); ++o)
                if (node_out[seg][o] >= 0 && slot_names[node_out[seg][o]] == name) outs[o] = t;
            },
            &probe_ms);  // not a run the profile counts
    if (!splitShapesOk(split_roles[seg], ins, outs, in_const)) break;
    for (size_t o = 0; o < outs.size(); ++o)
      if (node_out[seg][o] >= 0) {
        slot_bytes[node_out[seg][o]] = static_cast<int64_t>(outs[o].nbytes());
        ws[seg] += static_cast<int64_t>(outs[o].nbytes());
        elems[seg] += outs[o].numel();
      }
    for (size_t k = 0; k < ins.size(); ++k)
      if (ins[k] && !in_const[k]) {
        ws[seg] += static_cast<int64_t>(ins[k]->nbytes());
        elems[seg] += ins[k]->numel();
      }
    // Multiply-adds per sample: a convolution's weights (the rank-4 constant) give those per output.
    for (size_t k = 0; k < ins.size(); ++k)
      if (ins[k] && in_const[k] && ins[k]->rank() == 4 && ins[k]->dim(0) > 0 && !outs.empty() && !outs[0].empty())
        macs[seg] = std::max(macs[seg], outs[0].numel() * (ins[k]->numel() / ins[k]->dim(0)));
  }
  size_t big = seg;
  for (size_t i = 0; i < seg; ++i)
    if (batch * ws[i] >= kSplitFromBytes && macs[i] < kMemoryBoundMacsPerElement * elems[i]) big = i;
  if (big < seg) {
    // The values crossing a cut after node p: produced up to p and read after it.
    auto crossing_slots = [&](size_t p) {
      std::vector<int> r;
      for (size_t i = 0; i <= p; ++i)
        for (int sl : node_out[i])
          if (sl >= 0 && last_reader[sl] > static_cast<int>(p)) r.push_back(sl);
      return r;
    };
    auto crossing = [&](size_t p) {
      int64_t b = 0;
      for (int sl : crossing_slots(p)) b += slot_bytes[sl];
      return b;
    };
    size_t cut = big;
    int64_t best = crossing(big);
    for (size_t p = big + 1; p < seg && p <= big + kSplitCutWindow; ++p)
      if (const int64_t c = crossing(p); c < best) {
        best = c;
        cut = p;
      }
    int64_t widest = 1;
    for (size_t i = 0; i <= cut; ++i) widest = std::max(widest, ws[i]);
    const int64_t per_slice = std::max<int64_t>(2, kSliceBytes / widest);
    const int64_t slices = (batch + per_slice - 1) / per_slice;
    if (slices >= 2) {
      plan.nodes = cut + 1;
      plan.batch = batch;
      plan.slices = slices;
      plan.cut = crossing_slots(cut);
      const int64_t lo = batch / slices;
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(widest) / 1e6);
      plan.text = "the first " + std::to_string(plan.nodes) + " of " + std::to_string(graph.nodes.size()) +
                  " nodes in " + std::to_string(slices) + " slices of " + std::to_string(lo) +
                  (batch % slices ? "-" + std::to_string(lo + 1) : std::string()) + " samples (activations " + buf +
                  " per sample)";
    }
  }
  // Only the inputs the split nodes read are sliced.
  std::erase_if(plan.inputs, [&](int k) { return !read_by_first(plan.nodes, input_slots[k]); });
  return split_plans.emplace(std::move(key), std::move(plan)).first->second;
}

std::vector<Tensor> Session::runOrdered(const TensorMap& inputs, const Observer& observer) {
  Impl& s = *impl_;
  BufferPool::Scope pool_scope(s.pool);
  // Values produced in this run, by slot. Constant slots stay empty here and are read from
  // s.constants in place: copying them into each run (a Tensor copy allocates its shape) cost a few
  // hundred mallocs per run of a quantized model, about a tenth of a batch-1 run.
  std::vector<Tensor> values(s.constants.size());
  auto value = [&](int sl) -> const Tensor& { return values[sl].empty() ? s.constants[sl] : values[sl]; };
  for (size_t i = 0; i < s.input_names.size(); ++i) {
    auto it = inputs.find(s.input_names[i]);
    if (it == inputs.end()) fail("model input '", s.input_names[i], "' was not given");
    checkInput(s.input_names[i], s.input_infos[i], it->second);
    values[s.input_slots[i]] = it->second;
  }
  size_t first = 0;
  s.last_split.clear();
  if (!s.split_roles.empty() && !observer) {
    const Impl::SplitPlan& plan = s.splitPlan(values, inputs);
    if (plan.nodes > 0) {
      // Each slice runs the first plan.nodes nodes on its own values; what crosses the cut is
      // gathered into whole-batch tensors for the rest of the graph.
      std::vector<float> acc(s.opts.profile ? plan.nodes : 0, 0.0f);
      std::vector<std::vector<Tensor>> parts(plan.cut.size());
      std::vector<Tensor> slice_values(values.size());
      for (int64_t j = 0, off = 0; j < plan.slices; ++j) {
        const int64_t n = plan.batch / plan.slices + (j < plan.batch % plan.slices ? 1 : 0);
        for (int k : plan.inputs) slice_values[s.input_slots[k]] = batchRows(values[s.input_slots[k]], off, n);
        for (size_t i = 0; i < plan.nodes; ++i) s.runNode(i, slice_values, inputs, {}, acc.empty() ? nullptr : &acc[i]);
        for (size_t c = 0; c < plan.cut.size(); ++c) parts[c].push_back(std::move(slice_values[plan.cut[c]]));
        for (auto& v : slice_values) v = Tensor();
        off += n;
      }
      for (size_t c = 0; c < plan.cut.size(); ++c) values[plan.cut[c]] = concatRows(parts[c]);
      for (size_t i = 0; i < acc.size(); ++i) s.node_ms[i].push_back(acc[i]);
      // Inputs whose last reader was split off are released as an unsplit run would have.
      for (size_t i = 0; i < plan.nodes; ++i)
        for (int sl : s.release_after[i]) values[sl] = Tensor();
      first = plan.nodes;
      s.last_split = plan.text;
    }
  }
  for (size_t i = first; i < s.graph.nodes.size(); ++i) s.runNode(i, values, inputs, observer, nullptr);
  std::vector<Tensor> result;
  for (size_t i = 0; i < s.output_slots.size(); ++i) {
    const Tensor& v = value(s.output_slots[i]);
    if (v.empty()) fail("graph output '", s.output_names[i], "' was not produced");
    result.push_back(v);
  }
  return result;
}

std::string Session::batchSplit() const { return impl_->last_split; }

TensorMap Session::run(const TensorMap& inputs, const Observer& observer) {
  std::vector<Tensor> r = runOrdered(inputs, observer);
  TensorMap m;
  for (size_t i = 0; i < r.size(); ++i) m[impl_->output_names[i]] = std::move(r[i]);
  return m;
}

}  // namespace lwc::engine
