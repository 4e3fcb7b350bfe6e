#include "engine/kernels/common.h"

namespace lwc::engine {

Shape broadcastShapes(const Shape& a, const Shape& b, const KernelContext& ctx) {
  const size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    const int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    if (da != db && da != 1 && db != 1)
      ctx.error("shapes ", shapeStr(a), " and ", shapeStr(b), " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

std::vector<int64_t> broadcastStrides(const Shape& in, const Shape& out) {
  std::vector<int64_t> st(out.size(), 0);
  int64_t s = 1;
  for (size_t k = 0; k < in.size(); ++k) {
    const size_t i = in.size() - 1 - k;
    const size_t o = out.size() - 1 - k;
    st[o] = in[i] == 1 ? 0 : s;
    s *= in[i];
  }
  return st;
}

int64_t normAxis(int64_t axis, int64_t rank, const KernelContext& ctx) {
  if (axis < -rank || axis >= std::max<int64_t>(rank, 1)) ctx.error("axis ", axis, " is out of range for rank ", rank);
  return axis < 0 ? axis + rank : axis;
}

std::vector<int64_t> readInts(const Tensor& t, const KernelContext& ctx) {
  std::vector<int64_t> v(static_cast<size_t>(t.numel()));
  if (t.dtype() == DType::Int64) {
    for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.data<int64_t>()[i];
  } else if (t.dtype() == DType::Int32) {
    for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.data<int32_t>()[i];
  } else {
    ctx.error("expected an int64 or int32 tensor, got ", dtypeName(t.dtype()));
  }
  return v;
}

Tensor toFloat32IfHalf(const Tensor& t) { return t.dtype() == DType::Float16 ? t.cast(DType::Float32) : t; }

const Tensor& asFloat32IfHalf(const Tensor& t, Tensor& storage) {
  if (t.dtype() != DType::Float16) return t;
  storage = t.cast(DType::Float32);
  return storage;
}

}  // namespace lwc::engine
