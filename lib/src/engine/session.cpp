// Session: prepares kernels, plans buffer lifetimes, runs nodes in topological order.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <set>
#include <unordered_map>

#include "engine/kernel.h"
#include "lwc/metrics.h"
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

  // A kernel refused its inputs at run time (a shape the model cannot take): names the model, the
  // node as the file names it (not the engine's rewrite of it) and the inputs that were fed.
  [[noreturn]] void failRun(const Node& n, const Error& e, const TensorMap& inputs) const {
    std::string msg = e.what();
    if (n.domain == kInternalDomain)
      if (auto it = file_desc.find(n.name); it != file_desc.end() && !it->second.empty())
        if (const std::string internal = n.describe(); msg.compare(0, 5 + internal.size(), "node " + internal) == 0)
          msg = "node " + it->second + msg.substr(5 + internal.size());
    std::string fed;
    for (size_t k = 0; k < input_names.size(); ++k) {
      auto it = inputs.find(input_names[k]);
      if (it == inputs.end()) continue;
      fed += (fed.empty() ? "" : ", ") + ("'" + input_names[k] + "' " + shapeStr(it->second.shape()));
      if (input_infos[k]->shape) fed += " (declared " + symShapeStr(*input_infos[k]->shape) + ")";
    }
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
    auto outs = evaluateNode(model, n, ins);
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

bool isRandomOp(const Node& n) {
  static const std::set<std::string> kNondeterministic = {"RandomNormal", "RandomUniform", "RandomNormalLike",
                                                          "RandomUniformLike", "Multinomial", "Bernoulli"};
  return kNondeterministic.count(n.op_type) > 0;
}

std::optional<std::vector<Tensor>> evaluateNode(const Model& model, const Node& n,
                                                const std::vector<const Tensor*>& inputs) {
  // ai.lwc (coded weights) is deterministic and decodes once when a session is built.
  if ((!n.domain.empty() && n.domain != "ai.lwc") || isRandomOp(n) || !implicitInputs(n).empty())
    return std::nullopt;
  const auto cands = builtinKernels().find(n.domain, n.op_type, model.opsetFor(n.domain));
  const KernelRegistry::Entry* ref = nullptr;
  for (const auto* e : cands)
    if (e->impl == "ref") ref = e;
  if (!ref) return std::nullopt;
  SessionOptions ref_opts;
  ref_opts.reference_only = true;
  KernelInfo info{n, model.opsetFor(n.domain), inputs, std::vector<const ValueInfo*>(inputs.size(), nullptr), ref_opts};
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
  for (const auto& n : g.nodes)
    if (!implicitInputs(n).empty())
      fail(model.label(), ": node ", n.describe(), " has subgraphs (control flow), which the lwc engine does not run yet");
  s.types = inferShapes(model);
  if (!s.opts.reference_only) {
    // Weight DequantizeLinear nodes stay until the QDQ fusion has turned them into integer kernels.
    foldConstantNodes(g, model, !s.opts.observable);
    if (!s.opts.observable) {
      s.stats = optimizeForExecution(g, &s.types);
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
              if (e.op_type == n.op_type) return false;
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
  bool ok = want.size() == t.rank();
  for (size_t i = 0; ok && i < want.size(); ++i) ok = !want[i].known() || want[i].value == t.dim(i);
  if (!ok)
    fail("model input '", name, "' expects shape ", symShapeStr(want), " but got ", shapeStr(t.shape()),
         "; check the data's shape and layout");
}
}  // namespace

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
  std::vector<const Tensor*> in_ptrs;
  std::vector<Tensor> outs;
  for (size_t i = 0; i < s.graph.nodes.size(); ++i) {
    const Node& n = s.graph.nodes[i];
    in_ptrs.clear();
    for (int sl : s.node_in[i]) {
      if (sl < 0) {
        in_ptrs.push_back(nullptr);
        continue;
      }
      const Tensor& v = value(sl);
      if (v.empty()) throw InternalError("value '" + s.slot_names[sl] + "' read before it was produced");
      in_ptrs.push_back(&v);
    }
    outs.assign(n.outputs.size(), Tensor());
    KernelContext ctx{n, in_ptrs, outs};
    try {
      if (s.opts.profile) {
        const auto t0 = std::chrono::steady_clock::now();
        s.kernels[i]->run(ctx);
        s.node_ms[i].push_back(std::chrono::duration<float, std::milli>(std::chrono::steady_clock::now() - t0).count());
      } else {
        s.kernels[i]->run(ctx);
      }
    } catch (const Error& e) {
      s.failRun(n, e, inputs);
    }
    for (size_t o = 0; o < n.outputs.size(); ++o) {
      const int sl = s.node_out[i][o];
      if (sl < 0) continue;
      if (outs[o].empty()) throw InternalError("node " + n.describe() + " did not produce output " + std::to_string(o));
      values[sl] = std::move(outs[o]);
      if (observer) observer(s.slot_names[sl], values[sl]);
    }
    for (int sl : s.release_after[i]) values[sl] = Tensor();
  }
  std::vector<Tensor> result;
  for (size_t i = 0; i < s.output_slots.size(); ++i) {
    const Tensor& v = value(s.output_slots[i]);
    if (v.empty()) fail("graph output '", s.output_names[i], "' was not produced");
    result.push_back(v);
  }
  return result;
}

TensorMap Session::run(const TensorMap& inputs, const Observer& observer) {
  std::vector<Tensor> r = runOrdered(inputs, observer);
  TensorMap m;
  for (size_t i = 0; i < r.size(); ++i) m[impl_->output_names[i]] = std::move(r[i]);
  return m;
}

}  // namespace lwc::engine
