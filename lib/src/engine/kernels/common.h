// Shared helpers for kernels: dtype dispatch, broadcasting, axis handling.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/kernel.h"

namespace lwc::engine {

/// Calls f(T{}) with the C++ type of dtype `t` for the listed kinds; errors for others.
/// Float16 is not dispatched: kernels that accept it convert to float32 first.
template <typename F>
auto dispatchNumeric(DType t, const KernelContext& ctx, F&& f) {
  auto unsupported = [&] { ctx.error("element type ", dtypeName(t), " is not supported by this op"); };
  return visitDType<false>(t, std::forward<F>(f), unsupported);
}

template <typename F>
auto dispatchFloat(DType t, const KernelContext& ctx, F&& f) {
  switch (t) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    default: break;
  }
  ctx.error("element type ", dtypeName(t), " is not supported by this op (float32/float64 expected)");
}

/// Numpy-style broadcast of two shapes; errors naming the node when incompatible.
Shape broadcastShapes(const Shape& a, const Shape& b, const KernelContext& ctx);

/// For an output of shape `out`, the element strides (0 where broadcast) of an input of shape `in`.
std::vector<int64_t> broadcastStrides(const Shape& in, const Shape& out);

/// Normalises a possibly negative axis for a tensor of rank r; errors when out of range.
int64_t normAxis(int64_t axis, int64_t rank, const KernelContext& ctx);

/// Reads an int64 or int32 1-D (or scalar) tensor as int64 values (shape/axes/pads inputs).
std::vector<int64_t> readInts(const Tensor& t, const KernelContext& ctx);

/// Converts a float16 tensor to float32 (other dtypes returned as is).
Tensor toFloat32IfHalf(const Tensor& t);

}  // namespace lwc::engine
