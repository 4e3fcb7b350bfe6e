// Reference kernels of the elementwise family: arithmetic, comparison, logic, math, activations, Cast.
//
// Every op reduces to one of three loops: unary (flat), binary (numpy broadcasting) and Where
// (three-way broadcasting). Broadcasting is planned once per call: size-1 output dims are dropped
// and adjacent dims merged wherever every input stays contiguous (or stays broadcast) across them,
// so the innermost loop is as long as possible and each input's inner stride is 1 or 0. Identical
// shapes thus run as one flat loop, a scalar operand as a loop against a constant, and a per-channel
// operand ([C,1,1] against [N,C,H,W]) as N*C rows of H*W elements, each against one constant: all
// simple loops the compiler vectorises. Large outputs are cut into chunks run with OpenMP; checks
// that can fail (integer division by zero) run before the loops, since nothing may throw inside.
//
// float16 is computed in float32 and rounded back, so the loops see only float/double, integers
// and bool.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numbers>
#include <type_traits>

#include "engine/kernels/common.h"

// lwc never reads floating-point exception flags. Under GCC's default -ftrapping-math the vectoriser
// will not turn `x < 0 ? a * x : x` into a select (computing a * x for every x might raise a flag),
// which leaves LeakyRelu, PRelu, HardSigmoid, HardSwish ... scalar; results are the same either way.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace lwc::engine {
namespace {

constexpr int kMaxOpset = 21;
/// Elements per parallel work item, and the output size from which loops run in parallel.
constexpr int64_t kGrain = 16384;
constexpr int64_t kParallelMin = 32768;

// ---------------------------------------------------------------------------------------------
// Element types

/// The element types an op accepts (ONNX type constraints; float16 is widened before dispatch).
enum class Kinds { Float, Numeric, NumericOrBool, Bool, Unsigned };

constexpr bool acceptsFloat(Kinds k) { return k == Kinds::Float || k == Kinds::Numeric || k == Kinds::NumericOrBool; }

template <Kinds K, typename F>
auto dispatch(DType t, const KernelContext& ctx, F&& f) {
  if constexpr (K == Kinds::Float) {
    return dispatchFloat(t, ctx, f);
  } else if constexpr (K == Kinds::Numeric) {
    return dispatchNumeric(t, ctx, f);
  } else if constexpr (K == Kinds::NumericOrBool) {
    if (t == DType::Bool) return f(bool{});
    return dispatchNumeric(t, ctx, f);
  } else if constexpr (K == Kinds::Bool) {
    if (t == DType::Bool) return f(bool{});
    ctx.unsupported("element type ", dtypeName(t), " is not supported by this op (bool expected)");
  } else {
    switch (t) {
      case DType::UInt8: return f(uint8_t{});
      case DType::UInt16: return f(uint16_t{});
      case DType::UInt32: return f(uint32_t{});
      case DType::UInt64: return f(uint64_t{});
      default: break;
    }
    ctx.unsupported("element type ", dtypeName(t), " is not supported by this op (unsigned integer expected)");
  }
}

/// Element type of an op's result: bool for predicates, else the input type (int8 + int8 is int in
/// C++, but stays int8 in ONNX).
template <typename Op, typename T, typename... Args>
using ResultOf = std::conditional_t<std::is_same_v<std::invoke_result_t<const Op&, Args...>, bool>, bool, T>;

/// lo where v < lo, hi where v > hi (hi wins when lo > hi), NaN stays NaN.
template <typename T>
T clampTo(T v, T lo, T hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

template <typename T>
constexpr bool isNeg(T x) {
  if constexpr (std::is_unsigned_v<T>) return false;
  else return x < T(0);
}

/// Runs f on x with float16 widened to float32; a float32 result is rounded back to float16.
template <Kinds K, typename F>
Tensor viaFloat32(const Tensor& x, const KernelContext& ctx, F&& f) {
  if (x.dtype() != DType::Float16) return f(x);
  if (!acceptsFloat(K)) ctx.unsupported("element type float16 is not supported by this op");
  Tensor y = f(x.cast(DType::Float32));
  return y.dtype() == DType::Float32 ? y.cast(DType::Float16) : y;
}

// ---------------------------------------------------------------------------------------------
// Loops

/// Runs f(begin, end) over [0, n) in chunks, in parallel when n is large.
template <typename F>
void forChunks(int64_t n, const F& f) {
  const int64_t chunks = (n + kGrain - 1) / kGrain;
  parallelFor(chunks, n >= kParallelMin, [&](int64_t c) { f(c * kGrain, std::min(n, (c + 1) * kGrain)); });
}

/// Whether one operand of a broadcast binary op is a single element or a vector along the other's
/// last axis, and of the same or lower rank (so the output has the other operand's shape): 1 when
/// that operand is `a`, 2 when it is `b`, 0 otherwise (and when the shapes are equal).
int trailingVector(const Shape& a, const Shape& b) {
  auto fits = [](const Shape& small, const Shape& big) {
    if (small.size() > big.size()) return false;
    const int64_t n = numelOf(small);
    if (n != 1 && (big.empty() || small.empty() || small.back() != big.back() || n != big.back())) return false;
    return numelOf(big) > 0;
  };
  if (a == b) return 0;
  if (fits(b, a)) return 2;
  if (fits(a, b)) return 1;
  return 0;
}

/// Output buffer for a loop that writes every element: not zero-filled first.
Tensor newOutput(DType dtype, const Shape& shape) { return Tensor::uninitialized(dtype, shape); }

/// Inputs the session lets a kernel write its output into (KernelContext::donor), by position.
using Donors = std::array<Tensor*, 2>;

/// newOutput, or the buffer of a donated input of the output's type and shape: the loops below
/// read each element of an input of the output's shape at the index they write, so they may
/// write over it (a residual Add or a squeeze-excite product whose activation dies there then
/// writes into lines already in cache instead of a fresh buffer).
Tensor outputBuffer(const Donors& donors, DType dtype, const Shape& shape) {
  for (Tensor* d : donors)
    if (d && d->dtype() == dtype && d->shape() == shape) return std::move(*d);
  return newOutput(dtype, shape);
}

// Row loops take pointers and the op by value so the compiler knows nothing aliases them; each has
// an AVX2 copy with the same bits (LWC_AVX2_CLONE: no FMA, so each operation rounds as in the SSE2 copy).
template <typename T, typename U, typename Op>
LWC_AVX2_CLONE void unaryRow(const T* x, U* y, int64_t n, Op op) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<U>(op(x[i]));
}

/// va/vb: whether a/b vary along the row (stride 1) or stay fixed (stride 0).
template <typename T, typename U, typename Op>
LWC_AVX2_CLONE void binaryRow(const T* a, bool va, const T* b, bool vb, U* o, int64_t n, Op op) {
  if (va && vb) {
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<U>(op(a[i], b[i]));
  } else if (va) {
    const T y = b[0];
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<U>(op(a[i], y));
  } else if (vb) {
    const T x = a[0];
    for (int64_t i = 0; i < n; ++i) o[i] = static_cast<U>(op(x, b[i]));
  } else {
    std::fill(o, o + n, static_cast<U>(op(a[0], b[0])));
  }
}

// ---------------------------------------------------------------------------------------------
// Unary and binary drivers

template <typename T, typename Op>
Tensor unaryTyped(const Tensor& x, const Op& op) {
  using U = ResultOf<Op, T, T>;
  Tensor y = newOutput(dtypeOf<U>(), x.shape());
  const T* px = x.data<T>();
  U* py = y.data<U>();
  forChunks(x.numel(), [&](int64_t i0, int64_t i1) { unaryRow(px + i0, py + i0, i1 - i0, op); });
  return y;
}

template <Kinds K, typename Op>
Tensor unaryValues(const Tensor& x, const Op& op, const KernelContext& ctx) {
  return viaFloat32<K>(x, ctx, [&](const Tensor& xf) {
    return dispatch<K>(xf.dtype(), ctx, [&](auto tag) { return unaryTyped<decltype(tag)>(xf, op); });
  });
}

template <Kinds K, typename Op>
void unary(KernelContext& ctx, const Op& op) {
  ctx.outputs[0] = unaryValues<K>(ctx.in(0), op, ctx);
}

/// Ops marked kDivides reject a zero divisor for integers instead of trapping.
template <typename Op>
constexpr bool kRejectsZeroDivisor = requires { Op::kDivides; };

template <typename T, typename Op>
Tensor binaryTyped(const Tensor& a, const Tensor& b, const Op& op, const KernelContext& ctx, const Donors& donors) {
  using U = ResultOf<Op, T, T, T>;
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  if constexpr (std::is_integral_v<T> && kRejectsZeroDivisor<Op>) {
    if (a.numel() > 0 && std::find(pb, pb + b.numel(), T(0)) != pb + b.numel())
      ctx.error("integer division by zero (the divisor, input 1, holds a 0)");
  }
  if (a.shape() == b.shape()) {
    Tensor out = outputBuffer(donors, dtypeOf<U>(), a.shape());
    U* po = out.data<U>();
    forChunks(out.numel(), [&](int64_t i0, int64_t i1) { binaryRow(pa + i0, true, pb + i0, true, po + i0, i1 - i0, op); });
    return out;
  }
  // The broadcasts of most models without a plan (whose vectors cost more than a small op's
  // arithmetic): one operand a single element, or a vector along the other's last axis (a bias).
  // Same per-element operations as the planned loop, so the same bits.
  if (const int vec = trailingVector(a.shape(), b.shape()); vec != 0) {
    const Tensor& big = vec == 1 ? b : a;
    Tensor out = outputBuffer(donors, dtypeOf<U>(), big.shape());
    U* po = out.data<U>();
    const int64_t n = big.numel(), len = vec == 1 ? a.numel() : b.numel();
    if (len == 1) {
      forChunks(n, [&](int64_t i0, int64_t i1) {
        if (vec == 1) binaryRow(pa, false, pb + i0, true, po + i0, i1 - i0, op);
        else binaryRow(pa + i0, true, pb, false, po + i0, i1 - i0, op);
      });
      return out;
    }
    const int64_t rows = n / len, rows_per_item = std::max<int64_t>(1, kGrain / len);
    parallelFor((rows + rows_per_item - 1) / rows_per_item, n >= kParallelMin, [&](int64_t it) {
      for (int64_t r = it * rows_per_item, r1 = std::min(rows, r + rows_per_item); r < r1; ++r) {
        if (vec == 1) binaryRow(pa, true, pb + r * len, true, po + r * len, len, op);
        else binaryRow(pa + r * len, true, pb, true, po + r * len, len, op);
      }
    });
    return out;
  }
  const auto plan = planBroadcast<2>({&a.shape(), &b.shape()}, ctx);
  Tensor out = outputBuffer(donors, dtypeOf<U>(), plan.out);
  U* po = out.data<U>();
  const bool va = plan.strides[0].back() != 0, vb = plan.strides[1].back() != 0;
  forEachRow(plan, [&](int64_t o, const std::array<int64_t, 2>& off, int64_t n) {
    binaryRow(pa + off[0], va, pb + off[1], vb, po + o, n, op);
  });
  return out;
}

template <Kinds K, typename Op>
Tensor binaryValues(const Tensor& a, const Tensor& b, const Op& op, const KernelContext& ctx, const Donors& donors = {}) {
  if (a.dtype() != b.dtype())
    ctx.error("inputs have different element types (", dtypeName(a.dtype()), " and ", dtypeName(b.dtype()), ")");
  return viaFloat32<K>(a, ctx, [&](const Tensor& af) {
    Tensor b_half;
    const Tensor& bf = asFloat32IfHalf(b, b_half);
    return dispatch<K>(af.dtype(), ctx, [&](auto tag) { return binaryTyped<decltype(tag)>(af, bf, op, ctx, donors); });
  });
}

/// Opset 1-6 binary ops broadcast only with broadcast=1 and then align B at A's `axis` (trailing
/// alignment, the numpy rule, when axis is absent). Returns B reshaped for numpy broadcasting.
Tensor alignLegacy(const KernelContext& ctx, const Tensor& a, const Tensor& b) {
  if (ctx.node.attrInt("broadcast", 0) == 0 || !ctx.node.hasAttr("axis")) return b;
  const int64_t rank = static_cast<int64_t>(a.rank());
  const int64_t axis = normAxis(ctx.node.attrInt("axis", 0), rank, ctx);
  if (axis + static_cast<int64_t>(b.rank()) > rank)
    ctx.error("B of shape ", shapeStr(b.shape()), " does not fit A of shape ", shapeStr(a.shape()), " at axis ", axis);
  Shape s = b.shape();
  s.resize(static_cast<size_t>(rank - axis), 1);
  return b.reshaped(s);
}

template <Kinds K, typename Op>
void binary(KernelContext& ctx, const Op& op) {
  // Handles, not references: an input taken as the output buffer leaves its slot empty.
  const Tensor a = ctx.in(0), b = ctx.in(1);
  // Only the opset 1-6 form makes a reshaped copy of B (a copy allocates its shape).
  ctx.outputs[0] = ctx.node.attrInt("broadcast", 0) != 0 ? binaryValues<K>(a, alignLegacy(ctx, a, b), op, ctx)
                                                         : binaryValues<K>(a, b, op, ctx, {ctx.donor(0), ctx.donor(1)});
}

/// Sum, Max, Min: a left fold of the binary op over all inputs (each step broadcasts).
template <Kinds K, typename Op>
Tensor foldValues(KernelContext& ctx, const Op& op) {
  if (ctx.inputs.empty()) ctx.error("needs at least one input");
  Tensor acc = ctx.in(0);
  for (size_t i = 1; i < ctx.inputs.size(); ++i) acc = binaryValues<K>(acc, ctx.in(i), op, ctx);
  return ctx.inputs.size() == 1 ? acc.clone() : acc;
}

// ---------------------------------------------------------------------------------------------
// Ops that need more than a one-line lambda

struct DivOp {
  static constexpr bool kDivides = true;
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
      if (b == T(-1)) return static_cast<T>(0 - static_cast<std::make_unsigned_t<T>>(a));  // MIN / -1 traps
    }
    return static_cast<T>(a / b);  // integers truncate toward zero, as in C
  }
};

/// fmod=1: the result has the sign of the dividend (C's fmod / %); fmod=0: of the divisor (Python).
struct ModOp {
  static constexpr bool kDivides = true;
  bool fmod;
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      return std::fmod(a, b);
    } else {
      if constexpr (std::is_signed_v<T>) {
        if (b == T(-1)) return T(0);  // MIN % -1 traps
      }
      T r = static_cast<T>(a % b);
      if (!fmod && r != 0 && isNeg(r) != isNeg(b)) r = static_cast<T>(r + b);
      return r;
    }
  }
};

struct PowOp {
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      return b == T(2) ? a * a : std::pow(a, b);
    } else {
      if (isNeg(b)) return a == T(1) ? T(1) : a == T(-1) ? ((b & 1) ? T(-1) : T(1)) : T(0);
      using W = std::make_unsigned_t<T>;  // wraps on overflow like numpy, without signed UB
      W r = 1, base = static_cast<W>(a);
      for (W e = static_cast<W>(b); e; e >>= 1) {
        if (e & 1) r = static_cast<W>(r * base);
        base = static_cast<W>(base * base);
      }
      return static_cast<T>(r);
    }
  }
};

/// Max and Min propagate NaN, like numpy and the ONNX reference.
struct MaxOp {
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      if (std::isnan(a)) return a;
    }
    return a > b ? a : b;
  }
};
struct MinOp {
  template <typename T>
  T operator()(T a, T b) const {
    if constexpr (std::is_floating_point_v<T>) {
      if (std::isnan(a)) return a;
    }
    return a < b ? a : b;
  }
};

struct ShiftOp {
  bool left;
  template <typename T>
  T operator()(T a, T b) const {
    if (b >= T(sizeof(T) * 8)) return T(0);  // shifting by the width or more is undefined in C
    return left ? static_cast<T>(a << b) : static_cast<T>(a >> b);
  }
};

struct SignOp {
  template <typename T>
  T operator()(T x) const {
    return isNeg(x) ? T(-1) : x > T(0) ? T(1) : x;  // 0 and NaN map to themselves
  }
};

void modKernel(KernelContext& ctx) {
  const bool fmod = ctx.node.attrInt("fmod", 0) != 0;
  if (!fmod && isFloat(ctx.in(0).dtype()))
    ctx.error("fmod=0 is not defined for floating-point inputs; set fmod=1 (C fmod semantics)");
  binary<Kinds::Numeric>(ctx, ModOp{fmod});
}

void powKernel(KernelContext& ctx) {
  const Tensor& a = ctx.in(0);
  const Tensor b = alignLegacy(ctx, a, ctx.in(1));
  if (a.dtype() == b.dtype()) {
    ctx.outputs[0] = binaryValues<Kinds::Numeric>(a, b, PowOp{}, ctx);
    return;
  }
  // Mixed types (float base with int exponent, or the reverse): computed in float64, then
  // converted to the base's type as the spec's output type T says.
  if (a.dtype() == DType::Bool || b.dtype() == DType::Bool) ctx.error("bool inputs are not supported");
  ctx.outputs[0] = binaryValues<Kinds::Float>(a.cast(DType::Float64), b.cast(DType::Float64), PowOp{}, ctx).cast(a.dtype());
}

void bitShiftKernel(KernelContext& ctx) {
  const std::string dir = ctx.node.attrString("direction");
  if (dir != "LEFT" && dir != "RIGHT") ctx.error("attribute 'direction' must be LEFT or RIGHT, got '", dir, "'");
  binary<Kinds::Unsigned>(ctx, ShiftOp{dir == "LEFT"});
}

// X where it is not negative, X * slope where it is; the slope broadcasts to X, never widens it.
void prelu(KernelContext& ctx, const Tensor& x, const Tensor& slope) {
  if (broadcastShapes(x.shape(), slope.shape(), ctx) != x.shape())
    ctx.error("slope of shape ", shapeStr(slope.shape()), " does not broadcast to X's shape ", shapeStr(x.shape()));
  ctx.outputs[0] = binaryValues<Kinds::Numeric>(x, slope, [](auto v, auto s) { return isNeg(v) ? v * s : v; }, ctx);
}

void preluKernel(KernelContext& ctx) { prelu(ctx, ctx.in(0), ctx.in(1)); }

/// PRelu of opsets 1-6 (Caffe2's): a slope of one element is shared, a 1-D slope of X's channel
/// count (axis 1) is per channel (PyTorch's opset-6 exports of nn.PReLU(C)); any other slope shape
/// must broadcast to X by the numpy rule.
void preluLegacyKernel(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const Tensor& slope = ctx.in(1);
  if (slope.rank() == 1 && x.rank() >= 2 && slope.numel() > 1 && slope.shape()[0] == x.shape()[1]) {
    Shape s(x.rank() - 1, 1);
    s[0] = slope.shape()[0];
    return prelu(ctx, x, slope.reshaped(s));
  }
  prelu(ctx, x, slope);
}

void meanKernel(KernelContext& ctx) {
  const Tensor sum = foldValues<Kinds::Float>(ctx, [](auto a, auto b) { return a + b; });
  const auto n = static_cast<double>(ctx.inputs.size());
  ctx.outputs[0] = unaryValues<Kinds::Float>(sum, [n](auto x) { return x / static_cast<decltype(x)>(n); }, ctx);
}

void whereKernel(KernelContext& ctx) {
  const Tensor& c = ctx.in(0);
  const Tensor& x = ctx.in(1);
  const Tensor& y = ctx.in(2);
  if (c.dtype() != DType::Bool) ctx.error("condition must be bool, got ", dtypeName(c.dtype()));
  if (x.dtype() != y.dtype())
    ctx.error("X and Y have different element types (", dtypeName(x.dtype()), " and ", dtypeName(y.dtype()), ")");
  const auto plan = planBroadcast<3>({&c.shape(), &x.shape(), &y.shape()}, ctx);
  Tensor& out = ctx.outputs[0] = newOutput(x.dtype(), plan.out);
  // Elements are only copied, so any type runs as an unsigned integer of its size.
  auto run = [&](auto tag) {
    using E = decltype(tag);
    const bool* pc = c.data<bool>();
    const E* px = static_cast<const E*>(x.raw());
    const E* py = static_cast<const E*>(y.raw());
    E* po = static_cast<E*>(out.raw());
    const int64_t sc = plan.strides[0].back(), sx = plan.strides[1].back(), sy = plan.strides[2].back();
    forEachRow(plan, [&](int64_t o, const std::array<int64_t, 3>& off, int64_t n) {
      const bool* cc = pc + off[0];
      const E* xx = px + off[1];
      const E* yy = py + off[2];
      E* oo = po + o;
      if (sc && sx && sy) {
        for (int64_t i = 0; i < n; ++i) oo[i] = cc[i] ? xx[i] : yy[i];
      } else {
        for (int64_t i = 0; i < n; ++i) oo[i] = cc[i * sc] ? xx[i * sx] : yy[i * sy];
      }
    });
  };
  switch (dtypeSize(x.dtype())) {
    case 1: run(uint8_t{}); break;
    case 2: run(uint16_t{}); break;
    case 4: run(uint32_t{}); break;
    case 8: run(uint64_t{}); break;
    default: ctx.error("element type ", dtypeName(x.dtype()), " is not supported");
  }
}

/// Clip: bounds from attributes (opset < 11) or from optional scalar inputs 1 and 2 (opset >= 11).
void clipKernel(KernelContext& ctx, bool bounds_from_inputs) {
  ctx.outputs[0] = viaFloat32<Kinds::Numeric>(ctx.in(0), ctx, [&](const Tensor& x) {
    return dispatchNumeric(x.dtype(), ctx, [&](auto tag) {
      using T = decltype(tag);
      using L = std::numeric_limits<T>;
      // The spec's defaults: an infinite input comes out as the type's largest finite value, as in
      // ONNX Runtime (it stayed infinite).
      T lo = L::lowest();
      T hi = L::max();
      if constexpr (std::is_same_v<T, float>)
        if (ctx.in(0).dtype() == DType::Float16) lo = -65504.0f, hi = 65504.0f;  // computed in float32: half's extremes
      auto bound = [&](size_t i, const char* what) {
        const Tensor t = toFloat32IfHalf(ctx.in(i));
        if (t.dtype() != x.dtype() || t.numel() != 1)
          ctx.error(what, " (input ", i, ") must be a scalar of the input's type, got ", dtypeName(ctx.in(i).dtype()), " ",
                    shapeStr(t.shape()));
        return t.data<T>()[0];
      };
      if (bounds_from_inputs) {
        if (ctx.has(1)) lo = bound(1, "min");
        if (ctx.has(2)) hi = bound(2, "max");
      } else {
        if (ctx.node.hasAttr("min")) lo = static_cast<T>(ctx.node.attrFloat("min", 0));
        if (ctx.node.hasAttr("max")) hi = static_cast<T>(ctx.node.attrFloat("max", 0));
      }
      return unaryTyped<T>(x, [lo, hi](T v) { return clampTo(v, lo, hi); });
    });
  });
}

DType castTarget(const KernelContext& ctx, int onnx_type) {
  const DType to = fromOnnxType(onnx_type);
  if (to == DType::Undefined)
    ctx.error("cast to ONNX type ", onnx_type, " is not supported (lwc has no string, bfloat16 or float8 tensors)");
  return to;
}

/// `to` is an int (TensorProto.DataType) from opset 6, a type name such as "FLOAT" before.
void castKernel(KernelContext& ctx) {
  const onnx::AttributeProto* to = ctx.node.attr("to");
  if (!to) ctx.error("attribute 'to' is missing");
  int type = static_cast<int>(to->i());
  if (to->type() == onnx::AttributeProto::STRING) {
    onnx::TensorProto_DataType t;
    if (!onnx::TensorProto_DataType_Parse(to->s(), &t)) ctx.error("attribute 'to' names no ONNX type: '", to->s(), "'");
    type = t;
  }
  ctx.outputs[0] = ctx.in(0).cast(castTarget(ctx, type));
}

void castLikeKernel(KernelContext& ctx) { ctx.outputs[0] = ctx.in(0).cast(ctx.in(1).dtype()); }

// ---------------------------------------------------------------------------------------------
// Activation formulas with attributes, written for any floating type T.

template <typename T>
T softplus(T x) {
  return x > T(0) ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));  // no overflow for large x
}

void registerArithmetic(KernelRegistry& r) {
  using K = Kinds;
  r.addFn("Add", 1, kMaxOpset, [](KernelContext& c) { binary<K::Numeric>(c, [](auto a, auto b) { return a + b; }); });
  r.addFn("Sub", 1, kMaxOpset, [](KernelContext& c) { binary<K::Numeric>(c, [](auto a, auto b) { return a - b; }); });
  r.addFn("Mul", 1, kMaxOpset, [](KernelContext& c) { binary<K::Numeric>(c, [](auto a, auto b) { return a * b; }); });
  r.addFn("Div", 1, kMaxOpset, [](KernelContext& c) { binary<K::Numeric>(c, DivOp{}); });
  r.addFn("Pow", 1, kMaxOpset, powKernel);
  r.addFn("Mod", 10, kMaxOpset, modKernel);
  r.addFn("BitShift", 11, kMaxOpset, bitShiftKernel);
  r.addFn("Max", 1, kMaxOpset, [](KernelContext& c) { c.outputs[0] = foldValues<K::Numeric>(c, MaxOp{}); });
  r.addFn("Min", 1, kMaxOpset, [](KernelContext& c) { c.outputs[0] = foldValues<K::Numeric>(c, MinOp{}); });
  r.addFn("Sum", 1, kMaxOpset, [](KernelContext& c) {
    c.outputs[0] = foldValues<K::Float>(c, [](auto a, auto b) { return a + b; });
  });
  r.addFn("Mean", 1, kMaxOpset, meanKernel);

  r.addFn("Equal", 1, kMaxOpset, [](KernelContext& c) { binary<K::NumericOrBool>(c, [](auto a, auto b) { return a == b; }); });
  r.addFn("Less", 1, kMaxOpset, [](KernelContext& c) { binary<K::Numeric>(c, [](auto a, auto b) { return a < b; }); });
  r.addFn("Greater", 1, kMaxOpset, [](KernelContext& c) { binary<K::Numeric>(c, [](auto a, auto b) { return a > b; }); });
  r.addFn("LessOrEqual", 12, kMaxOpset, [](KernelContext& c) { binary<K::Numeric>(c, [](auto a, auto b) { return a <= b; }); });
  r.addFn("GreaterOrEqual", 12, kMaxOpset, [](KernelContext& c) { binary<K::Numeric>(c, [](auto a, auto b) { return a >= b; }); });

  r.addFn("And", 1, kMaxOpset, [](KernelContext& c) { binary<K::Bool>(c, [](bool a, bool b) { return a && b; }); });
  r.addFn("Or", 1, kMaxOpset, [](KernelContext& c) { binary<K::Bool>(c, [](bool a, bool b) { return a || b; }); });
  r.addFn("Xor", 1, kMaxOpset, [](KernelContext& c) { binary<K::Bool>(c, [](bool a, bool b) { return a != b; }); });
  r.addFn("Not", 1, kMaxOpset, [](KernelContext& c) { unary<K::Bool>(c, [](bool a) { return !a; }); });
  r.addFn("Where", 9, kMaxOpset, whereKernel);
}

void registerMath(KernelRegistry& r) {
  using K = Kinds;
  r.addFn("Abs", 1, kMaxOpset, [](KernelContext& c) { unary<K::Numeric>(c, [](auto x) { return isNeg(x) ? -x : x; }); });
  r.addFn("Neg", 1, kMaxOpset, [](KernelContext& c) { unary<K::Numeric>(c, [](auto x) { return -x; }); });
  r.addFn("Sign", 9, kMaxOpset, [](KernelContext& c) { unary<K::Numeric>(c, SignOp{}); });
  r.addFn("Exp", 1, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::exp(x); }); });
  r.addFn("Log", 1, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::log(x); }); });
  r.addFn("Sqrt", 1, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::sqrt(x); }); });
  r.addFn("Reciprocal", 1, kMaxOpset, [](KernelContext& c) {
    unary<K::Float>(c, [](auto x) { return decltype(x)(1) / x; });
  });
  r.addFn("Floor", 1, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::floor(x); }); });
  r.addFn("Ceil", 1, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::ceil(x); }); });
  // nearbyint rounds half to even in the default rounding mode, as ONNX Round requires.
  r.addFn("Round", 11, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::nearbyint(x); }); });
  r.addFn("Erf", 9, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::erf(x); }); });
  r.addFn("Sin", 7, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::sin(x); }); });
  r.addFn("Cos", 7, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::cos(x); }); });
  r.addFn("Tan", 7, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::tan(x); }); });
  r.addFn("Asin", 7, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::asin(x); }); });
  r.addFn("Acos", 7, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::acos(x); }); });
  r.addFn("Atan", 7, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::atan(x); }); });
  r.addFn("Sinh", 9, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::sinh(x); }); });
  r.addFn("Cosh", 9, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::cosh(x); }); });
  r.addFn("Asinh", 9, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::asinh(x); }); });
  r.addFn("Acosh", 9, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::acosh(x); }); });
  r.addFn("Atanh", 9, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::atanh(x); }); });
  r.addFn("IsNaN", 9, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::isnan(x); }); });
  r.addFn("IsInf", 10, kMaxOpset, [](KernelContext& c) {
    const bool pos = c.node.attrInt("detect_positive", 1) != 0, neg = c.node.attrInt("detect_negative", 1) != 0;
    unary<K::Float>(c, [pos, neg](auto x) { return std::isinf(x) && (x > 0 ? pos : neg); });
  });
  r.addFn("Cast", 1, kMaxOpset, castKernel);
  r.addFn("CastLike", 15, kMaxOpset, castLikeKernel);
}

void registerActivations(KernelRegistry& r) {
  using K = Kinds;
  r.addFn("Relu", 1, kMaxOpset, [](KernelContext& c) {
    unary<K::Numeric>(c, [](auto x) { return isNeg(x) ? decltype(x)(0) : x; });
  });
  r.addFn("LeakyRelu", 1, kMaxOpset, [](KernelContext& c) {
    const float alpha = c.node.attrFloat("alpha", 0.01f);
    unary<K::Float>(c, [alpha](auto x) { return x < 0 ? static_cast<decltype(x)>(alpha) * x : x; });
  });
  r.addFn("PRelu", 1, 6, preluLegacyKernel);
  r.addFn("PRelu", 7, kMaxOpset, preluKernel);
  r.addFn("Elu", 1, kMaxOpset, [](KernelContext& c) {
    const float alpha = c.node.attrFloat("alpha", 1.0f);
    unary<K::Float>(c, [alpha](auto x) { return x < 0 ? static_cast<decltype(x)>(alpha) * std::expm1(x) : x; });
  });
  r.addFn("Selu", 1, kMaxOpset, [](KernelContext& c) {
    const float alpha = c.node.attrFloat("alpha", 1.67326319217681884765625f);
    const float gamma = c.node.attrFloat("gamma", 1.05070102214813232421875f);
    unary<K::Float>(c, [alpha, gamma](auto x) {
      using T = decltype(x);
      return static_cast<T>(gamma) * (x > 0 ? x : static_cast<T>(alpha) * std::expm1(x));
    });
  });
  r.addFn("Celu", 12, kMaxOpset, [](KernelContext& c) {
    const float alpha = c.node.attrFloat("alpha", 1.0f);
    unary<K::Float>(c, [alpha](auto x) {
      using T = decltype(x);
      return x > 0 ? x : static_cast<T>(alpha) * std::expm1(x / static_cast<T>(alpha));
    });
  });
  r.addFn("HardSigmoid", 1, kMaxOpset, [](KernelContext& c) {
    const float alpha = c.node.attrFloat("alpha", 0.2f), beta = c.node.attrFloat("beta", 0.5f);
    unary<K::Float>(c, [alpha, beta](auto x) {
      using T = decltype(x);
      return clampTo(static_cast<T>(alpha) * x + static_cast<T>(beta), T(0), T(1));
    });
  });
  r.addFn("HardSwish", 14, kMaxOpset, [](KernelContext& c) {
    unary<K::Float>(c, [](auto x) {
      using T = decltype(x);
      return x * clampTo(x * static_cast<T>(1.0f / 6) + T(0.5), T(0), T(1));
    });
  });
  r.addFn("Sigmoid", 1, kMaxOpset, [](KernelContext& c) {
    unary<K::Float>(c, [](auto x) { return decltype(x)(1) / (decltype(x)(1) + std::exp(-x)); });
  });
  r.addFn("Tanh", 1, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return std::tanh(x); }); });
  r.addFn("Softplus", 1, kMaxOpset, [](KernelContext& c) { unary<K::Float>(c, [](auto x) { return softplus(x); }); });
  r.addFn("Softsign", 1, kMaxOpset, [](KernelContext& c) {
    unary<K::Float>(c, [](auto x) { return x / (decltype(x)(1) + std::abs(x)); });
  });
  r.addFn("ThresholdedRelu", 10, kMaxOpset, [](KernelContext& c) {
    const float alpha = c.node.attrFloat("alpha", 1.0f);
    unary<K::Float>(c, [alpha](auto x) { return x > static_cast<decltype(x)>(alpha) ? x : decltype(x)(0); });
  });
  r.addFn("Shrink", 9, kMaxOpset, [](KernelContext& c) {
    const float bias = c.node.attrFloat("bias", 0.0f), lambd = c.node.attrFloat("lambd", 0.5f);
    unary<K::Numeric>(c, [bias, lambd](auto x) {
      using T = decltype(x);
      using C = std::conditional_t<std::is_floating_point_v<T>, T, double>;  // integers: compare exactly
      const C v = static_cast<C>(x), b = static_cast<C>(bias), l = static_cast<C>(lambd);
      return static_cast<T>(v < -l ? v + b : v > l ? v - b : C(0));
    });
  });
  r.addFn("Mish", 18, kMaxOpset, [](KernelContext& c) {
    unary<K::Float>(c, [](auto x) { return x * std::tanh(softplus(x)); });
  });
  r.addFn("Gelu", 20, kMaxOpset, [](KernelContext& c) {
    const std::string approx = c.node.attrString("approximate", "none");
    if (approx == "none") {
      unary<K::Float>(c, [](auto x) {
        using T = decltype(x);
        return T(0.5) * x * (T(1) + std::erf(x * static_cast<T>(1 / std::numbers::sqrt2)));
      });
    } else if (approx == "tanh") {
      unary<K::Float>(c, [](auto x) {
        using T = decltype(x);
        const T k = static_cast<T>(std::numbers::sqrt2 * std::numbers::inv_sqrtpi);  // sqrt(2/pi)
        return T(0.5) * x * (T(1) + std::tanh(k * (x + T(0.044715) * x * x * x)));
      });
    } else {
      c.error("attribute 'approximate' must be 'none' or 'tanh', got '", approx, "'");
    }
  });
  r.addFn("Clip", 1, 10, [](KernelContext& c) { clipKernel(c, false); });
  r.addFn("Clip", 11, kMaxOpset, [](KernelContext& c) { clipKernel(c, true); });
}

}  // namespace

void registerElementwiseKernels(KernelRegistry& r) {
  registerArithmetic(r);
  registerMath(r);
  registerActivations(r);
}

}  // namespace lwc::engine
