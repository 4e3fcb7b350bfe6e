// Shared helpers for kernels: dtype dispatch, broadcasting, axis handling.
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "engine/kernel.h"

/// On an element loop (or a register tile): also compile an AVX2 version, picked at load time on
/// CPUs that have it (GCC function multiversioning). The release build targets baseline x86-64
/// (SSE2). The avx2 target does not enable fused multiply-add, so each multiply and add still rounds
/// separately and the AVX2 version gives the bits of the SSE2 one; division, min/max and the
/// float/int conversions are exact IEEE operations on any width. (x86-64-v4 or "avx2,fma" would
/// contract a * b + c into one rounding and change results.)
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LWC_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define LWC_AVX2_CLONE
#endif

namespace lwc::engine {

/// Calls f(T{}) with the C++ type of dtype `t` for the listed kinds; errors for others.
/// Float16 is not dispatched: kernels that accept it convert to float32 first.
template <typename F>
auto dispatchNumeric(DType t, const KernelContext& ctx, F&& f) {
  auto unsupported = [&] { ctx.unsupported("element type ", dtypeName(t), " is not supported by this op"); };
  return visitDType<false>(t, std::forward<F>(f), unsupported);
}

template <typename F>
auto dispatchFloat(DType t, const KernelContext& ctx, F&& f) {
  switch (t) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    default: break;
  }
  ctx.unsupported("element type ", dtypeName(t), " is not supported by this op (float32/float64 expected)");
}

/// A vector of trivially copyable values that keeps up to N of them inside itself and moves to the
/// heap only beyond that: for the per-call index arithmetic of kernels (dims, strides, a
/// permutation), which real models keep to a rank of 8 or less but the spec does not bound. A
/// std::vector there cost an allocator call each, several per small op at batch 1.
template <typename T, size_t N = 8>
class InlineVec {
  static_assert(std::is_trivially_copyable_v<T> && !std::is_same_v<T, bool>);  // (vector<bool> has no data())

 public:
  InlineVec() = default;
  explicit InlineVec(size_t n, T v = T{}) { resize(n, v); }
  InlineVec(std::span<const T> values) {
    for (const T& v : values) push_back(v);
  }

  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T* data() { return spilled_ ? heap_.data() : buf_; }
  const T* data() const { return spilled_ ? heap_.data() : buf_; }
  T& operator[](size_t i) { return data()[i]; }
  const T& operator[](size_t i) const { return data()[i]; }
  T& back() { return data()[n_ - 1]; }
  const T& back() const { return data()[n_ - 1]; }
  T* begin() { return data(); }
  T* end() { return data() + n_; }
  const T* begin() const { return data(); }
  const T* end() const { return data() + n_; }
  operator std::span<const T>() const { return {data(), n_}; }

  void push_back(T v) {
    if (!spilled_ && n_ == N) spill();
    if (spilled_) heap_.push_back(v);
    else buf_[n_] = v;
    ++n_;
  }
  void resize(size_t n, T v = T{}) {
    if (!spilled_ && n > N) spill();
    if (spilled_) heap_.resize(n, v);
    else
      for (size_t i = n_; i < n; ++i) buf_[i] = v;
    n_ = n;
  }

 private:
  void spill() {
    heap_.assign(buf_, buf_ + n_);
    spilled_ = true;
  }
  T buf_[N] = {};
  std::vector<T> heap_;
  size_t n_ = 0;
  bool spilled_ = false;
};

/// Lexicographic order of int64 sequences, a Shape or a view of one: a map keyed by Shape with this
/// order finds a key from a view (an array on the stack) without copying it into a Shape.
struct ShapeLess {
  using is_transparent = void;
  bool operator()(std::span<const int64_t> a, std::span<const int64_t> b) const {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end());
  }
};

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
/// The same without copying a tensor that is not float16 (a copy allocates its shape): returns t
/// itself, or its float32 conversion kept in `storage`.
const Tensor& asFloat32IfHalf(const Tensor& t, Tensor& storage);

/// body(i) for i in [0, n): split statically over the OpenMP team when `parallel`, else on this
/// thread without entering an OpenMP construct. libgomp (GCC 12) turns `#pragma omp parallel ...
/// if (false)` into a team of one that still makes a futex system call: 0.39 us a region against
/// 0.006 us for the plain loop (a 16-element loop, 100 000 calls), which was most of a small
/// kernel's time at batch 1. Each i runs the same code either way, so results do not change.
template <typename F>
void parallelFor(int64_t n, bool parallel, const F& body) {
  if (!parallel || n < 2) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) body(i);
}

/// body(begin, end) over [0, n): one contiguous part per thread of the OpenMP team when `parallel`,
/// else body(0, n) on this thread (no OpenMP construct, see parallelFor). For element loops the
/// compiler should vectorize inside body.
template <typename F>
void parallelRanges(int64_t n, bool parallel, const F& body) {
  if (!parallel || n < 2) {
    if (n > 0) body(int64_t{0}, n);
    return;
  }
#pragma omp parallel
  {
    const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t b = n * t / nt, e = n * (t + 1) / nt;
    if (b < e) body(b, e);
  }
}

// Broadcast element loops (elementwise.cpp's binary and variadic ops, the quantized ones of
// quant.cpp).

/// The output shape of K broadcast inputs and their strides over a collapsed iteration space:
/// `dims` (outer first, never empty) multiply to the output's element count, and each input's
/// innermost stride is 1 or 0.
template <size_t K>
struct BroadcastPlan {
  Shape out;
  std::vector<int64_t> dims;
  std::array<std::vector<int64_t>, K> strides;
};

template <size_t K>
BroadcastPlan<K> planBroadcast(const std::array<const Shape*, K>& in, const KernelContext& ctx) {
  BroadcastPlan<K> p;
  p.out = *in[0];
  for (size_t k = 1; k < K; ++k) p.out = broadcastShapes(p.out, *in[k], ctx);
  std::array<std::vector<int64_t>, K> full;
  for (size_t k = 0; k < K; ++k) full[k] = broadcastStrides(*in[k], p.out);
  // Walk from the innermost dim; a dim joins the current group when every input continues it
  // contiguously (its stride equals the group's stride times the group's size; 0 == 0*n included).
  for (size_t d = p.out.size(); d-- > 0;) {
    if (p.out[d] == 1) continue;
    bool merge = !p.dims.empty();
    for (size_t k = 0; merge && k < K; ++k) merge = full[k][d] == p.strides[k].back() * p.dims.back();
    if (merge) {
      p.dims.back() *= p.out[d];
      continue;
    }
    p.dims.push_back(p.out[d]);
    for (size_t k = 0; k < K; ++k) p.strides[k].push_back(full[k][d]);
  }
  if (p.dims.empty()) {
    p.dims.push_back(1);
    for (size_t k = 0; k < K; ++k) p.strides[k].push_back(0);
  }
  std::reverse(p.dims.begin(), p.dims.end());
  for (auto& s : p.strides) std::reverse(s.begin(), s.end());
  return p;
}

/// Calls row(out_offset, in_offsets, len) for runs along the innermost dim, covering the output
/// once; work items of about `grain` elements run in parallel when the output has at least
/// `parallel_min` elements.
template <size_t K, typename Row>
void forEachRow(const BroadcastPlan<K>& p, const Row& row, int64_t grain = 16384, int64_t parallel_min = 32768) {
  const int64_t numel = numelOf(p.out);
  if (numel == 0) return;
  const size_t r = p.dims.size();
  const int64_t len = p.dims[r - 1];
  const int64_t rows = numel / len;
  const int64_t col_chunk = std::min(len, grain);
  const int64_t col_chunks = (len + col_chunk - 1) / col_chunk;
  const int64_t rows_per_item = std::max<int64_t>(1, grain / len);
  const int64_t items = (rows + rows_per_item - 1) / rows_per_item * col_chunks;
  parallelFor(items, numel >= parallel_min, [&](int64_t it) {
    const int64_t r0 = it / col_chunks * rows_per_item, r1 = std::min(rows, r0 + rows_per_item);
    const int64_t c0 = it % col_chunks * col_chunk, c1 = std::min(len, c0 + col_chunk);
    std::vector<int64_t> idx(r - 1);
    std::array<int64_t, K> off{};
    int64_t rem = r0;
    for (size_t d = r - 1; d-- > 0;) {
      idx[d] = rem % p.dims[d];
      rem /= p.dims[d];
      for (size_t k = 0; k < K; ++k) off[k] += idx[d] * p.strides[k][d];
    }
    for (int64_t i = r0; i < r1; ++i) {
      std::array<int64_t, K> at;
      for (size_t k = 0; k < K; ++k) at[k] = off[k] + c0 * p.strides[k][r - 1];
      row(i * len + c0, at, c1 - c0);
      for (size_t d = r - 1; d-- > 0;) {  // odometer over the outer dims
        for (size_t k = 0; k < K; ++k) off[k] += p.strides[k][d];
        if (++idx[d] < p.dims[d]) break;
        for (size_t k = 0; k < K; ++k) off[k] -= p.strides[k][d] * p.dims[d];
        idx[d] = 0;
      }
    }
  });
}

/// x of shape `s` with its axes in the order `perm` (new axis d = old axis perm[d]), as a new
/// buffer; offsets move by strides as the index runs, last axis fastest.
template <typename T>
std::vector<T> transposed(const T* x, const Shape& s, const std::vector<size_t>& perm) {
  const size_t r = s.size();
  std::vector<int64_t> old_stride(r, 1), ext(r), st(r);
  for (size_t d = r; d-- > 1;) old_stride[d - 1] = old_stride[d] * s[d];
  int64_t total = 1;
  for (size_t i = 0; i < r; ++i) {
    ext[i] = s[perm[i]];
    st[i] = old_stride[perm[i]];
    total *= ext[i];
  }
  std::vector<T> y(static_cast<size_t>(total));
  std::vector<int64_t> idx(r, 0);
  int64_t off = 0;
  for (int64_t it = 0; it < total; ++it) {
    y[static_cast<size_t>(it)] = x[off];
    for (size_t k = r; k-- > 0;) {
      if (++idx[k] < ext[k]) {
        off += st[k];
        break;
      }
      idx[k] = 0;
      off -= st[k] * (ext[k] - 1);
    }
  }
  return y;
}

}  // namespace lwc::engine
