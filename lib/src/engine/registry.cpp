#include <algorithm>
#include <map>
#include <mutex>

#include "engine/kernel.h"
#include "engine/optimize.h"
#include "lwc/graph.h"

namespace lwc::engine {

const Tensor& KernelContext::in(size_t i) const {
  if (!has(i)) error("required input ", i, " is missing");
  return *inputs[i];
}

namespace {
class FnKernel final : public Kernel {
 public:
  explicit FnKernel(KernelFn fn) : fn_(std::move(fn)) {}
  void run(KernelContext& ctx) override { fn_(ctx); }

 private:
  KernelFn fn_;
};

bool sameDomain(const std::string& a, const std::string& b) {
  return normalizedDomain(a) == normalizedDomain(b);
}
}  // namespace

void KernelRegistry::add(const std::string& domain, const std::string& op, int since, int until, std::string impl,
                         KernelFactory f) {
  entries_.push_back({domain, op, since, until, std::move(impl), std::move(f)});
}

void KernelRegistry::addFn(const std::string& op, int since, int until, KernelFn fn, const std::string& domain) {
  add(domain, op, since, until, "ref", [fn = std::move(fn)](const KernelInfo&) { return std::make_unique<FnKernel>(fn); });
}

std::vector<const KernelRegistry::Entry*> KernelRegistry::find(const std::string& domain, const std::string& op,
                                                               int64_t opset) const {
  std::vector<const Entry*> r;
  for (const auto& e : entries_)
    if (e.op_type == op && sameDomain(e.domain, domain) && opset >= e.since && opset <= e.until) r.push_back(&e);
  return r;
}

const KernelRegistry& builtinKernels() {
  static const KernelRegistry reg = [] {
    KernelRegistry r;
    registerDnnlKernels(r);  // fast paths first: tried before the reference kernels
    registerElementwiseKernels(r);
    registerShapeKernels(r);
    registerReduceKernels(r);
    registerNnKernels(r);
    registerRnnKernels(r);
    registerDetectionKernels(r);
    registerEinsumKernel(r);
    registerLossKernels(r);
    registerTrainingKernels(r);
    registerSignalKernels(r);
    registerControlFlowKernels(r);
    registerQuantKernels(r);
    registerCodingKernels(r);
    return r;
  }();
  return reg;
}

std::vector<OpSupport> supportedOps() {
  std::map<std::pair<std::string, std::string>, OpSupport> m;
  for (const auto& e : builtinKernels().entries()) {
    if (e.domain == kInternalDomain) continue;
    auto& s = m[{e.domain, e.op_type}];
    if (s.op_type.empty()) {
      s = OpSupport{e.domain, e.op_type, e.since, e.until, e.impl};
    } else {
      s.since = std::min(s.since, e.since);
      s.until = std::max(s.until, e.until);
      if (("," + s.impls + ",").find("," + e.impl + ",") == std::string::npos) s.impls += "," + e.impl;
    }
  }
  std::vector<OpSupport> r;
  for (auto& [k, v] : m) r.push_back(std::move(v));
  return r;
}

std::vector<std::string> unsupportedOps(const Model& m) {
  std::vector<std::string> r;
  for (const auto& n : m.graph.nodes) {
    const int64_t opset = m.opsetFor(n.domain);
    if (builtinKernels().find(n.domain, n.op_type, opset).empty())
      r.push_back((n.domain.empty() ? std::string() : n.domain + ".") + n.op_type + " (opset " + std::to_string(opset) +
                  ") in node " + n.describe());
  }
  return r;
}

}  // namespace lwc::engine
