// Losses as inference ops: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (opsets 12-22), so a
// model exported with its loss (a training graph, an evaluation graph that reports the loss) runs.
//
// Both read scores [N, C, D1, ...] and integer targets [N, D1, ...]; each position's loss is minus
// the log-probability of its target class, times weight[target] when a weight [C] is given. A target
// equal to `ignore_index` adds nothing and weighs 0; any other target outside [0, C) is an error.
// reduction "none" keeps the [N, D1, ...] losses, "sum" adds them, "mean" divides the sum by the
// summed weights (the count of positions not ignored when no weight is given), as ONNX's function
// bodies and ONNX Runtime define it (0 / 0 is NaN). SoftmaxCrossEntropyLoss takes the log-softmax
// over axis 1 first and can also output it. Computed in double, written in the scores' type.
#include <cmath>
#include <string>
#include <vector>

#include "engine/kernel.h"
#include "engine/kernels/common.h"

namespace lwc::engine {

namespace {

enum class Reduction { None, Sum, Mean };

Reduction reductionOf(const KernelContext& ctx) {
  const std::string r = ctx.node.attrString("reduction", "mean");
  if (r == "none") return Reduction::None;
  if (r == "sum") return Reduction::Sum;
  if (r == "mean") return Reduction::Mean;
  ctx.error("reduction is '", r, "'; expected none, sum or mean");
}

// Scores as double [N, C, D] (D = product of the dims after C; 1 for [N, C]).
struct Scores {
  std::vector<double> v;
  int64_t n = 0, c = 0, d = 1;
  DType dtype = DType::Float32;
};

Scores readScores(const KernelContext& ctx, const char* what) {
  const Tensor& x = ctx.in(0);
  if (!isFloat(x.dtype())) ctx.error(what, " is ", dtypeName(x.dtype()), "; expected float16, float32 or float64");
  if (x.rank() < 2) ctx.error(what, " has shape ", shapeStr(x.shape()), "; expected [N, C] or [N, C, D1, ...]");
  Scores s;
  s.dtype = x.dtype();
  s.n = x.dim(0);
  s.c = x.dim(1);
  for (size_t i = 2; i < x.rank(); ++i) s.d *= x.dim(i);
  const Tensor xd = x.cast(DType::Float64);
  s.v.assign(xd.data<double>(), xd.data<double>() + xd.numel());
  return s;
}

// Log-softmax over the class axis, in place.
void logSoftmax(Scores& s) {
  for (int64_t i = 0; i < s.n; ++i)
    for (int64_t p = 0; p < s.d; ++p) {
      double* row = s.v.data() + i * s.c * s.d + p;
      double mx = -INFINITY;
      for (int64_t k = 0; k < s.c; ++k) mx = std::max(mx, row[k * s.d]);
      double sum = 0;
      for (int64_t k = 0; k < s.c; ++k) sum += std::exp(row[k * s.d] - mx);
      const double lse = mx + std::log(sum);
      for (int64_t k = 0; k < s.c; ++k) row[k * s.d] -= lse;
    }
}

// The loss from log-probabilities `s`, targets (input 1) and optional weights (input 2) into output 0.
void negativeLogLikelihood(KernelContext& ctx, const Scores& s) {
  const Tensor& t = ctx.in(1);
  const Shape& xs = ctx.in(0).shape();
  Shape want{xs[0]};
  want.insert(want.end(), xs.begin() + 2, xs.end());
  if (t.shape() != want)
    ctx.error("target has shape ", shapeStr(t.shape()), "; expected ", shapeStr(want), " for scores of shape ", shapeStr(xs));
  if (t.dtype() != DType::Int64 && t.dtype() != DType::Int32)
    ctx.error("target is ", dtypeName(t.dtype()), "; expected int32 or int64 class indices");
  std::vector<double> weight;
  if (ctx.has(2)) {
    const Tensor& w = ctx.in(2);
    if (w.rank() != 1 || w.dim(0) != s.c)
      ctx.error("weight has shape ", shapeStr(w.shape()), "; expected [", s.c, "], one per class");
    const Tensor wd = w.cast(DType::Float64);
    weight.assign(wd.data<double>(), wd.data<double>() + wd.numel());
  }
  const bool has_ignore = ctx.node.hasAttr("ignore_index");
  const int64_t ignore = ctx.node.attrInt("ignore_index", 0);
  const std::vector<int64_t> classes = readInts(t, ctx);  // exact, unlike a read through double
  const Reduction red = reductionOf(ctx);
  const int64_t positions = s.n * s.d;
  std::vector<double> loss(static_cast<size_t>(positions));
  double sum = 0, weight_sum = 0;
  for (int64_t i = 0; i < s.n; ++i)
    for (int64_t p = 0; p < s.d; ++p) {
      const int64_t at = i * s.d + p;
      const int64_t cls = classes[static_cast<size_t>(at)];
      if (has_ignore && cls == ignore) continue;  // loss 0, weight 0
      if (cls < 0 || cls >= s.c)
        ctx.error("target holds ", cls, " at position ", at, "; expected a class in [0, ", s.c, ")",
                  has_ignore ? " or ignore_index " + std::to_string(ignore) : std::string());
      const double w = weight.empty() ? 1.0 : weight[static_cast<size_t>(cls)];
      const double l = -s.v[static_cast<size_t>((i * s.c + cls) * s.d + p)] * w;
      loss[static_cast<size_t>(at)] = l;
      sum += l;
      weight_sum += w;
    }
  Tensor out;
  if (red == Reduction::None) out = Tensor::fromVector<double>(want, loss);
  else out = Tensor::scalar<double>(red == Reduction::Sum ? sum : sum / weight_sum);
  ctx.outputs[0] = out.cast(s.dtype);
}

void nllLossKernel(KernelContext& ctx) { negativeLogLikelihood(ctx, readScores(ctx, "input")); }

void softmaxCrossEntropyKernel(KernelContext& ctx) {
  Scores s = readScores(ctx, "scores");
  logSoftmax(s);
  negativeLogLikelihood(ctx, s);
  if (ctx.numOutputs() > 1 && !ctx.node.outputs[1].empty())
    ctx.outputs[1] = Tensor::fromVector<double>(ctx.in(0).shape(), s.v).cast(s.dtype);
}

}  // namespace

void registerLossKernels(KernelRegistry& r) {
  r.addFn("NegativeLogLikelihoodLoss", 12, 22, nllLossKernel);
  r.addFn("SoftmaxCrossEntropyLoss", 12, 22, softmaxCrossEntropyKernel);
}

}  // namespace lwc::engine
