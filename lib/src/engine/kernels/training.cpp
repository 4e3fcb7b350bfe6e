// The optimizer update rules of ONNX's ai.onnx.preview.training domain (opset 1): Adagrad, Momentum
// (standard and Nesterov) and Adam, so a model exported with its update step runs. Each takes the
// learning rate R and the update count T (scalars), then n tensors to optimize, their n gradients
// and their n state tensors (Adam: two groups of state), and returns the updated tensors and states.
// Element-wise, in the tensors' type (float32 or float64), with the scalar factors (learning rate
// schedules, bias corrections) in double, as ONNX's reference implementation computes them.
#include <cmath>
#include <string>
#include <vector>

#include "engine/kernel.h"
#include "engine/kernels/common.h"

namespace lwc::engine {

namespace {

constexpr const char* kTrainingDomain = "ai.onnx.preview.training";

double scalarOf(const KernelContext& ctx, size_t i, const char* what) {
  const Tensor& t = ctx.in(i);
  if (t.numel() != 1) ctx.error(what, " must be a scalar, got shape ", shapeStr(t.shape()));
  return t.at(0);
}

// Checks the inputs R, T, then `groups` groups of n tensors of equal shapes and type, and returns n.
int64_t tensorCount(const KernelContext& ctx, int64_t groups) {
  const int64_t rest = static_cast<int64_t>(ctx.inputs.size()) - 2;
  if (rest <= 0 || rest % groups != 0)
    ctx.error("expects R, T and ", groups, " groups of equally many tensors; got ", ctx.inputs.size(), " inputs");
  const int64_t n = rest / groups;
  if (static_cast<int64_t>(ctx.numOutputs()) != (groups - 1) * n)
    ctx.error("expects ", (groups - 1) * n, " outputs for ", n, " tensors; got ", ctx.numOutputs());
  for (int64_t k = 0; k < n; ++k)
    for (int64_t g = 1; g < groups; ++g) {
      const Tensor& x = ctx.in(size_t(2 + k)), &o = ctx.in(size_t(2 + g * n + k));
      if (o.shape() != x.shape() || o.dtype() != x.dtype())
        ctx.error("input ", 2 + g * n + k, " is ", dtypeName(o.dtype()), " ", shapeStr(o.shape()), ", input ", 2 + k, " is ",
                  dtypeName(x.dtype()), " ", shapeStr(x.shape()), "; each group's tensors must match");
    }
  return n;
}

void adagrad(KernelContext& ctx) {
  const int64_t n = tensorCount(ctx, 3);
  const double decay = ctx.node.attrFloat("decay_factor", 0.0f), eps = ctx.node.attrFloat("epsilon", 0.0f),
               norm = ctx.node.attrFloat("norm_coefficient", 0.0f);
  const double r = scalarOf(ctx, 0, "R") / (1.0 + scalarOf(ctx, 1, "T") * decay);
  for (int64_t k = 0; k < n; ++k) {
    const Tensor &x = ctx.in(size_t(2 + k)), &g = ctx.in(size_t(2 + n + k)), &h = ctx.in(size_t(2 + 2 * n + k));
    dispatchFloat(x.dtype(), ctx, [&](auto tag) {
      using T = decltype(tag);
      T* xo = ctx.alloc(size_t(k), x.dtype(), x.shape()).template data<T>();
      T* ho = ctx.alloc(size_t(n + k), x.dtype(), x.shape()).template data<T>();
      const T *xp = x.data<T>(), *gp = g.data<T>(), *hp = h.data<T>();
      for (int64_t i = 0; i < x.numel(); ++i) {
        const T gr = T(norm) * xp[i] + gp[i];
        ho[i] = hp[i] + gr * gr;
        xo[i] = xp[i] - T(r) * gr / (std::sqrt(ho[i]) + T(eps));
      }
    });
  }
}

void momentum(KernelContext& ctx) {
  const int64_t n = tensorCount(ctx, 3);
  const double alpha = ctx.node.attrFloat("alpha", 0.0f), beta = ctx.node.attrFloat("beta", 0.0f),
               norm = ctx.node.attrFloat("norm_coefficient", 0.0f);
  if (!ctx.node.hasAttr("alpha") || !ctx.node.hasAttr("beta") || !ctx.node.hasAttr("mode") || !ctx.node.hasAttr("norm_coefficient"))
    ctx.error("attributes alpha, beta, mode and norm_coefficient are required");
  const std::string mode = ctx.node.attrString("mode");
  if (mode != "standard" && mode != "nesterov") ctx.error("mode is '", mode, "'; expected standard or nesterov");
  const bool nesterov = mode == "nesterov";
  const double r = scalarOf(ctx, 0, "R");
  // The gradient's coefficient is 1 on the first update (T = 0).
  const double b = scalarOf(ctx, 1, "T") > 0 ? beta : 1.0;
  for (int64_t k = 0; k < n; ++k) {
    const Tensor &x = ctx.in(size_t(2 + k)), &g = ctx.in(size_t(2 + n + k)), &v = ctx.in(size_t(2 + 2 * n + k));
    dispatchFloat(x.dtype(), ctx, [&](auto tag) {
      using T = decltype(tag);
      T* xo = ctx.alloc(size_t(k), x.dtype(), x.shape()).template data<T>();
      T* vo = ctx.alloc(size_t(n + k), x.dtype(), x.shape()).template data<T>();
      const T *xp = x.data<T>(), *gp = g.data<T>(), *vp = v.data<T>();
      for (int64_t i = 0; i < x.numel(); ++i) {
        const T gr = T(norm) * xp[i] + gp[i];
        vo[i] = T(alpha) * vp[i] + T(b) * gr;
        xo[i] = nesterov ? xp[i] - T(r) * (gr + T(alpha) * vo[i]) : xp[i] - T(r) * vo[i];
      }
    });
  }
}

void adam(KernelContext& ctx) {
  const int64_t n = tensorCount(ctx, 4);
  const double alpha = ctx.node.attrFloat("alpha", 0.9f), beta = ctx.node.attrFloat("beta", 0.999f),
               eps = ctx.node.attrFloat("epsilon", 1e-6f), norm = ctx.node.attrFloat("norm_coefficient", 0.0f),
               post = ctx.node.attrFloat("norm_coefficient_post", 0.0f);
  const double r = scalarOf(ctx, 0, "R"), t = scalarOf(ctx, 1, "T");
  // Bias correction of both moments from the second update on.
  const double ra = t > 0 ? r * std::sqrt(1.0 - std::pow(beta, t)) / (1.0 - std::pow(alpha, t)) : r;
  for (int64_t k = 0; k < n; ++k) {
    const Tensor &x = ctx.in(size_t(2 + k)), &g = ctx.in(size_t(2 + n + k)), &v = ctx.in(size_t(2 + 2 * n + k)),
                 &h = ctx.in(size_t(2 + 3 * n + k));
    dispatchFloat(x.dtype(), ctx, [&](auto tag) {
      using T = decltype(tag);
      T* xo = ctx.alloc(size_t(k), x.dtype(), x.shape()).template data<T>();
      T* vo = ctx.alloc(size_t(n + k), x.dtype(), x.shape()).template data<T>();
      T* ho = ctx.alloc(size_t(2 * n + k), x.dtype(), x.shape()).template data<T>();
      const T *xp = x.data<T>(), *gp = g.data<T>(), *vp = v.data<T>(), *hp = h.data<T>();
      for (int64_t i = 0; i < x.numel(); ++i) {
        const T gr = T(norm) * xp[i] + gp[i];
        vo[i] = T(alpha) * vp[i] + T(1.0 - alpha) * gr;
        ho[i] = T(beta) * hp[i] + T(1.0 - beta) * (gr * gr);
        const T xn = xp[i] - T(ra) * (vo[i] / (std::sqrt(ho[i]) + T(eps)));
        xo[i] = T(1.0 - post) * xn;
      }
    });
  }
}

}  // namespace

void registerTrainingKernels(KernelRegistry& r) {
  r.addFn("Adagrad", 1, 1, adagrad, kTrainingDomain);
  r.addFn("Momentum", 1, 1, momentum, kTrainingDomain);
  r.addFn("Adam", 1, 1, adam, kTrainingDomain);
}

}  // namespace lwc::engine
