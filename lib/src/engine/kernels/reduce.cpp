// Reference reductions: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
// ReduceSumSquare, ReduceLogSum, ReduceLogSumExp.
//
// Every reduction runs as a loop over [outer, reduced, inner] with contiguous reads: when the
// reduced axes are not one contiguous block (ignoring unit dims), a transposing copy moves them
// last first. Floating-point inputs accumulate in double, integers in their own type (wrapping
// like ONNX Runtime); float16 is reduced in float32.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "engine/kernels/common.h"

namespace lwc::engine {

namespace {

enum class Red { Sum, Mean, Max, Min, Prod, L1, L2, SumSquare, LogSum, LogSumExp };

/// Which axes to reduce. Before opset 18 (ReduceSum: 13) they are the `axes` attribute, later the
/// optional second input; none given means all, unless noop_with_empty_axes makes it the identity.
std::vector<bool> reducedAxes(const KernelContext& ctx, bool axes_input, int64_t rank, bool& noop) {
  std::vector<int64_t> axes;
  if (axes_input) {
    if (ctx.has(1)) axes = readInts(ctx.in(1), ctx);
  } else {
    axes = ctx.node.attrInts("axes");
  }
  noop = false;
  if (axes.empty()) {
    noop = axes_input && ctx.node.attrInt("noop_with_empty_axes", 0) != 0;
    return std::vector<bool>(static_cast<size_t>(rank), true);
  }
  std::vector<bool> red(static_cast<size_t>(rank), false);
  for (int64_t a : axes) {
    const int64_t ax = normAxis(a, rank, ctx);
    if (red[ax]) ctx.error("axis ", a, " is listed twice in axes");
    red[ax] = true;
  }
  return red;
}

/// The input seen as [outer, red, inner] (transposed first when needed) and the output shape.
struct Layout {
  int64_t outer = 1, red = 1, inner = 1;
  std::vector<size_t> perm;  ///< non-empty: transpose the input by this permutation first
  Shape out_shape;
};

Layout plan(const Shape& s, const std::vector<bool>& red, bool keepdims) {
  Layout l;
  for (size_t i = 0; i < s.size(); ++i)
    if (!red[i] || keepdims) l.out_shape.push_back(red[i] ? 1 : s[i]);
  // Contiguous when no kept dim > 1 sits between two reduced dims > 1.
  int first = -1, last = -1;
  for (size_t i = 0; i < s.size(); ++i)
    if (red[i] && s[i] != 1) {
      if (first < 0) first = static_cast<int>(i);
      last = static_cast<int>(i);
    }
  bool contiguous = true;
  for (int i = first; first >= 0 && i <= last; ++i) contiguous = contiguous && (red[i] || s[i] == 1);
  if (contiguous) {
    for (size_t i = 0; i < s.size(); ++i) {
      const bool before = first < 0 || static_cast<int>(i) < first;
      const bool inside = first >= 0 && static_cast<int>(i) >= first && static_cast<int>(i) <= last;
      (inside ? l.red : before ? l.outer : l.inner) *= s[i];
    }
    return l;
  }
  for (size_t i = 0; i < s.size(); ++i)
    if (!red[i]) l.perm.push_back(i), l.outer *= s[i];
  for (size_t i = 0; i < s.size(); ++i)
    if (red[i]) l.perm.push_back(i), l.red *= s[i];
  return l;
}

// acc[o * inner + i] = update(acc[...], x[(o * red + r) * inner + i], o * inner + i) over r; parallel
// over outer x blocks of inner, so threads never share an accumulator.
template <typename T, typename Acc, typename F>
void reduceLoop(const T* x, const Layout& l, Acc* acc, F&& update) {
  if (l.inner == 1) {  // the last axes: one run of `red` values per output, outputs split in ranges
    parallelRanges(l.outer, l.outer > 1 && l.outer * l.red > 16384, [&](int64_t o0, int64_t o1) {
      for (int64_t o = o0; o < o1; ++o) {
        Acc a = acc[o];
        const T* xr = x + o * l.red;
        for (int64_t r = 0; r < l.red; ++r) a = update(a, xr[r], o);
        acc[o] = a;
      }
    });
    return;
  }
  constexpr int64_t kBlock = 512;
  const int64_t blocks = (l.inner + kBlock - 1) / kBlock;
  parallelFor(l.outer * blocks, l.outer * blocks > 1 && l.outer * l.red * l.inner > 16384, [&](int64_t ob) {
    const int64_t o = ob / blocks, b = ob % blocks;
    const int64_t i0 = b * kBlock, i1 = std::min(l.inner, i0 + kBlock);
    Acc* a = acc + o * l.inner;
    for (int64_t r = 0; r < l.red; ++r) {
      const T* xr = x + (o * l.red + r) * l.inner;
      for (int64_t i = i0; i < i1; ++i) a[i] = update(a[i], xr[i], o * l.inner + i);
    }
  });
}

template <typename T>
void reduceTyped(Red op, const T* x, const Layout& l, T* y) {
  using Acc = std::conditional_t<std::is_floating_point_v<T>, double, T>;
  const int64_t n = l.outer * l.inner;
  if (op == Red::LogSumExp) {
    // log(sum(exp(x - max))) + max keeps exp from overflowing.
    std::vector<double> mx(n, -std::numeric_limits<double>::infinity()), sum(n, 0.0);
    reduceLoop(x, l, mx.data(), [](double a, T v, int64_t) { return std::max<double>(a, v); });
    for (double& m : mx)
      if (std::isinf(m)) m = 0;
    reduceLoop(x, l, sum.data(),
               [&](double a, T v, int64_t o) { return a + std::exp(static_cast<double>(v) - mx[o]); });
    for (int64_t o = 0; o < n; ++o) y[o] = static_cast<T>(std::log(sum[o]) + mx[o]);
    return;
  }
  Acc init = Acc(0);
  if (op == Red::Prod) init = Acc(1);
  if (op == Red::Max)
    init = std::numeric_limits<Acc>::has_infinity ? -std::numeric_limits<Acc>::infinity()
                                                  : std::numeric_limits<Acc>::lowest();
  if (op == Red::Min)
    init =
        std::numeric_limits<Acc>::has_infinity ? std::numeric_limits<Acc>::infinity() : std::numeric_limits<Acc>::max();
  std::vector<Acc> acc(n, init);
  auto abs = [](T v) -> Acc {
    if constexpr (std::is_signed_v<T>) return v < 0 ? Acc(-Acc(v)) : Acc(v);
    else return Acc(v);
  };
  switch (op) {
    case Red::Sum:
    case Red::Mean:
    case Red::LogSum: reduceLoop(x, l, acc.data(), [](Acc a, T v, int64_t) { return Acc(a + Acc(v)); }); break;
    case Red::Max: reduceLoop(x, l, acc.data(), [](Acc a, T v, int64_t) { return Acc(v) > a ? Acc(v) : a; }); break;
    case Red::Min: reduceLoop(x, l, acc.data(), [](Acc a, T v, int64_t) { return Acc(v) < a ? Acc(v) : a; }); break;
    case Red::Prod: reduceLoop(x, l, acc.data(), [](Acc a, T v, int64_t) { return Acc(a * Acc(v)); }); break;
    case Red::L1: reduceLoop(x, l, acc.data(), [&](Acc a, T v, int64_t) { return Acc(a + abs(v)); }); break;
    case Red::L2:
    case Red::SumSquare:
      reduceLoop(x, l, acc.data(), [](Acc a, T v, int64_t) { return Acc(a + Acc(v) * Acc(v)); });
      break;
    case Red::LogSumExp: break;
  }
  for (int64_t o = 0; o < n; ++o) {
    const Acc a = acc[o];
    switch (op) {
      case Red::Mean: y[o] = static_cast<T>(l.red ? a / static_cast<Acc>(l.red) : a); break;
      case Red::L2: y[o] = static_cast<T>(std::sqrt(static_cast<double>(a))); break;
      case Red::LogSum: y[o] = static_cast<T>(std::log(static_cast<double>(a))); break;
      default: y[o] = static_cast<T>(a); break;
    }
  }
}

KernelFn reduceKernel(Red op, bool axes_input) {
  return [op, axes_input](KernelContext& ctx) {
    const bool half = ctx.in(0).dtype() == DType::Float16;
    const Tensor x = toFloat32IfHalf(ctx.in(0));
    const auto rank = static_cast<int64_t>(x.rank());
    bool noop = false;
    const std::vector<bool> red = reducedAxes(ctx, axes_input, rank, noop);
    if (noop) {
      ctx.outputs[0] = ctx.in(0).clone();
      return;
    }
    const Layout l = plan(x.shape(), red, ctx.node.attrInt("keepdims", 1) != 0);
    Tensor y(x.dtype(), l.out_shape);
    dispatchNumeric(x.dtype(), ctx, [&](auto tag) {
      using T = decltype(tag);
      const T* xd = x.data<T>();
      std::vector<T> moved;
      if (!l.perm.empty()) {
        moved = transposed(xd, x.shape(), l.perm);
        xd = moved.data();
      }
      reduceTyped<T>(op, xd, l, y.data<T>());
    });
    ctx.outputs[0] = half ? y.cast(DType::Float16) : std::move(y);
  };
}

}  // namespace

void registerReduceKernels(KernelRegistry& r) {
  const std::pair<const char*, Red> ops[] = {
      {"ReduceSum", Red::Sum},     {"ReduceMean", Red::Mean},       {"ReduceMax", Red::Max},
      {"ReduceMin", Red::Min},     {"ReduceProd", Red::Prod},       {"ReduceL1", Red::L1},
      {"ReduceL2", Red::L2},       {"ReduceSumSquare", Red::SumSquare}, {"ReduceLogSum", Red::LogSum},
      {"ReduceLogSumExp", Red::LogSumExp},
  };
  for (const auto& [name, op] : ops) {
    // The opset where `axes` moved from an attribute to an input.
    const int axes_input_since = op == Red::Sum ? 13 : 18;
    r.addFn(name, 1, axes_input_since - 1, reduceKernel(op, false));
    r.addFn(name, axes_input_since, 22, reduceKernel(op, true));
  }
}

}  // namespace lwc::engine
