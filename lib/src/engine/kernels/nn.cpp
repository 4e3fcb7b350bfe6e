// Reference kernels of the neural-network ops: convolution, GEMM, pooling, normalisation, softmax.
//
// Readable first, but not naive: these kernels are the test oracle of the fast paths *and* the
// fallback that runs whole evaluations when no fast path takes a node. So Conv is im2col + a blocked
// GEMM, and loops over batch x channels run under OpenMP. Spatial ops handle 1 to 3 spatial dims by
// padding the window geometry to 3-D with unit dims, so each loop nest is written once.
//
// Float16 tensors are converted to float32 on entry and back on exit; float64 runs the same
// templates; statistics (means, variances, softmax sums) accumulate in double.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <type_traits>

#include "engine/kernels/common.h"
#include "engine/kernels/nn_ref.h"
#include "engine/optimize.h"

namespace lwc::engine {

namespace {

template <typename... Args>
[[noreturn]] void nodeFail(const Node& n, Args&&... args) {
  fail("node ", n.describe(), ": ", std::forward<Args>(args)...);
}

int64_t product(const std::vector<int64_t>& v, size_t from = 0, size_t to = SIZE_MAX) {
  int64_t p = 1;
  for (size_t i = from; i < std::min(to, v.size()); ++i) p *= v[i];
  return p;
}

int64_t ceilDiv(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// ---------------------------------------------------------------- window geometry

enum class AutoPad { NotSet, SameUpper, SameLower, Valid };

AutoPad parseAutoPad(const Node& n) {
  const std::string s = n.attrString("auto_pad", "NOTSET");
  if (s == "NOTSET" || s.empty()) return AutoPad::NotSet;
  if (s == "SAME_UPPER") return AutoPad::SameUpper;
  if (s == "SAME_LOWER") return AutoPad::SameLower;
  if (s == "VALID") return AutoPad::Valid;
  nodeFail(n, "auto_pad '", s, "' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID");
}

std::vector<int64_t> spatialAttr(const Node& n, const char* name, size_t count, int64_t dflt, int64_t min) {
  std::vector<int64_t> v = n.attrInts(name, std::vector<int64_t>(count, dflt));
  if (v.size() != count)
    nodeFail(n, "attribute '", name, "' has ", v.size(), " values ", shapeStr(v), ", expected ", count);
  for (int64_t x : v)
    if (x < min) nodeFail(n, "attribute '", name, "' ", shapeStr(v), " has a value below ", min);
  return v;
}

void checkSpatialRank(const Node& n, const Shape& x, const char* what) {
  if (x.size() < 3 || x.size() > 5)
    nodeFail(n, what, " has shape ", shapeStr(x), "; expected [N, C, D1, ...] with 1 to 3 spatial dims");
}

// Strides, dilations and pads (defaults 1, 1, 0) and the output size of a forward window
// (Conv, pooling). ceil_mode keeps a last partial window unless it would start in the end padding,
// as PyTorch and ONNX Runtime do.
WindowGeometry forwardWindow(const Node& n, const Shape& x, std::vector<int64_t> kernel, bool ceil_mode) {
  const size_t r = x.size() - 2;
  WindowGeometry g;
  g.in.assign(x.begin() + 2, x.end());
  g.kernel = std::move(kernel);
  g.strides = spatialAttr(n, "strides", r, 1, 1);
  g.dilations = spatialAttr(n, "dilations", r, 1, 1);
  const AutoPad ap = parseAutoPad(n);
  const std::vector<int64_t> pads =
      ap == AutoPad::NotSet ? spatialAttr(n, "pads", 2 * r, 0, 0) : std::vector<int64_t>(2 * r, 0);
  g.pads_begin.resize(r);
  g.pads_end.resize(r);
  g.out.resize(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t in = g.in[i], s = g.strides[i];
    const int64_t ek = (g.kernel[i] - 1) * g.dilations[i] + 1;
    if (ap == AutoPad::SameUpper || ap == AutoPad::SameLower) {
      g.out[i] = ceilDiv(in, s);
      const int64_t total = std::max<int64_t>(0, (g.out[i] - 1) * s + ek - in);
      g.pads_begin[i] = ap == AutoPad::SameUpper ? total / 2 : total - total / 2;
      g.pads_end[i] = total - g.pads_begin[i];
      continue;
    }
    g.pads_begin[i] = pads[i];
    g.pads_end[i] = pads[i + r];
    const int64_t span = in + g.pads_begin[i] + g.pads_end[i] - ek;
    if (span < 0)
      nodeFail(n, "the window (kernel ", shapeStr(g.kernel), ", dilations ", shapeStr(g.dilations),
               ") is larger than the padded input ", shapeStr(x), " in spatial dim ", i);
    int64_t out = (ceil_mode ? ceilDiv(span, s) : span / s) + 1;
    if (ceil_mode && (out - 1) * s >= in + g.pads_begin[i]) --out;
    g.out[i] = out;
  }
  return g;
}

std::vector<int64_t> kernelFromWeights(const Node& n, const Shape& w) {
  std::vector<int64_t> k(w.begin() + 2, w.end());
  if (n.hasAttr("kernel_shape") && n.attrInts("kernel_shape") != k)
    nodeFail(n, "kernel_shape ", shapeStr(n.attrInts("kernel_shape")), " does not match the weights ", shapeStr(w));
  for (int64_t d : k)
    if (d < 1) nodeFail(n, "weights ", shapeStr(w), " have an empty kernel");
  return k;
}

// The geometry padded to 3 spatial dims with leading unit dims.
struct Win3 {
  int64_t in[3], k[3], s[3], d[3], pb[3], pe[3], out[3];
  int64_t inSize() const { return in[0] * in[1] * in[2]; }
  int64_t outSize() const { return out[0] * out[1] * out[2]; }
  int64_t kSize() const { return k[0] * k[1] * k[2]; }
};

Win3 to3d(const WindowGeometry& g) {
  Win3 w;
  const size_t off = 3 - g.rank();
  for (size_t i = 0; i < 3; ++i) {
    const bool pad = i < off;
    w.in[i] = pad ? 1 : g.in[i - off];
    w.k[i] = pad ? 1 : g.kernel[i - off];
    w.s[i] = pad ? 1 : g.strides[i - off];
    w.d[i] = pad ? 1 : g.dilations[i - off];
    w.pb[i] = pad ? 0 : g.pads_begin[i - off];
    w.pe[i] = pad ? 0 : g.pads_end[i - off];
    w.out[i] = pad ? 1 : g.out[i - off];
  }
  return w;
}

template <typename F>
void dispatchRef(DType t, const char* what, F&& f) {
  switch (t) {
    case DType::Float32: f(float{}); return;
    case DType::Float64: f(double{}); return;
    default: LWC_CHECK(false, what, " called with ", dtypeName(t));
  }
}

}  // namespace

// ---------------------------------------------------------------- GEMM

namespace {

// Four rows of C at once, so every B element loaded feeds four multiply-adds.
template <typename T>
void gemmMicroLoop(int64_t rows, int64_t cols, int64_t kc, T alpha, const T* a, int64_t lda, const T* b, int64_t ldb,
                   T* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    T* __restrict c0 = c + i * ldc;
    T* __restrict c1 = c0 + ldc;
    T* __restrict c2 = c1 + ldc;
    T* __restrict c3 = c2 + ldc;
    const T* ar = a + i * lda;
    for (int64_t p = 0; p < kc; ++p) {
      const T a0 = alpha * ar[p], a1 = alpha * ar[lda + p], a2 = alpha * ar[2 * lda + p], a3 = alpha * ar[3 * lda + p];
      const T* __restrict bp = b + p * ldb;
      for (int64_t j = 0; j < cols; ++j) {
        const T bv = bp[j];
        c0[j] += a0 * bv;
        c1[j] += a1 * bv;
        c2[j] += a2 * bv;
        c3[j] += a3 * bv;
      }
    }
  }
  for (; i < rows; ++i) {
    T* __restrict c0 = c + i * ldc;
    for (int64_t p = 0; p < kc; ++p) {
      const T a0 = alpha * a[i * lda + p];
      const T* __restrict bp = b + p * ldb;
      for (int64_t j = 0; j < cols; ++j) c0[j] += a0 * bp[j];
    }
  }
}

using v8f = float __attribute__((vector_size(32)));

// A 4 x 16 block of C held in registers over the whole kc loop, where gemmMicroLoop reads and
// writes C from memory at every step. Each element still gets its products added one at a time in
// ascending p, each a separate multiply and add (the avx2 clone does not enable fused multiply-add),
// so the bits are the loop's (a unit test compares them). 16 x 16 x 16 in 0.16 us instead of 0.52.
LWC_AVX2_CLONE void gemmTile4x16(int64_t kc, float alpha, const float* a, int64_t lda, const float* b, int64_t ldb,
                                 float* c, int64_t ldc) {
  // Eight named accumulators: GCC keeps them in registers (as an array they went through memory).
  v8f c00, c01, c10, c11, c20, c21, c30, c31;  // memcpy: unaligned whole-vector loads and stores
  std::memcpy(&c00, c, 32), std::memcpy(&c01, c + 8, 32);
  std::memcpy(&c10, c + ldc, 32), std::memcpy(&c11, c + ldc + 8, 32);
  std::memcpy(&c20, c + 2 * ldc, 32), std::memcpy(&c21, c + 2 * ldc + 8, 32);
  std::memcpy(&c30, c + 3 * ldc, 32), std::memcpy(&c31, c + 3 * ldc + 8, 32);
  for (int64_t p = 0; p < kc; ++p) {
    v8f b0, b1;
    std::memcpy(&b0, b + p * ldb, 32), std::memcpy(&b1, b + p * ldb + 8, 32);
    const float a0 = alpha * a[p], a1 = alpha * a[lda + p], a2 = alpha * a[2 * lda + p], a3 = alpha * a[3 * lda + p];
    c00 += a0 * b0, c01 += a0 * b1;
    c10 += a1 * b0, c11 += a1 * b1;
    c20 += a2 * b0, c21 += a2 * b1;
    c30 += a3 * b0, c31 += a3 * b1;
  }
  std::memcpy(c, &c00, 32), std::memcpy(c + 8, &c01, 32);
  std::memcpy(c + ldc, &c10, 32), std::memcpy(c + ldc + 8, &c11, 32);
  std::memcpy(c + 2 * ldc, &c20, 32), std::memcpy(c + 2 * ldc + 8, &c21, 32);
  std::memcpy(c + 3 * ldc, &c30, 32), std::memcpy(c + 3 * ldc + 8, &c31, 32);
}

template <typename T>
void gemmMicro(int64_t rows, int64_t cols, int64_t kc, T alpha, const T* a, int64_t lda, const T* b, int64_t ldb, T* c,
               int64_t ldc) {
  if constexpr (std::is_same_v<T, float>) {
    const int64_t rows4 = rows / 4 * 4, cols16 = cols / 16 * 16;
    if (rows4 > 0 && cols16 > 0) {
      for (int64_t i = 0; i < rows4; i += 4)
        for (int64_t j = 0; j < cols16; j += 16) gemmTile4x16(kc, alpha, a + i * lda, lda, b + j, ldb, c + i * ldc + j, ldc);
      if (cols16 < cols) gemmMicroLoop(rows4, cols - cols16, kc, alpha, a, lda, b + cols16, ldb, c + cols16, ldc);
      if (rows4 < rows) gemmMicroLoop(rows - rows4, cols, kc, alpha, a + rows4 * lda, lda, b, ldb, c + rows4 * ldc, ldc);
      return;
    }
  }
  gemmMicroLoop(rows, cols, kc, alpha, a, lda, b, ldb, c, ldc);
}

/// Multiply-adds from which a product (gemmBlocked) or a batch of them (matMulRef) is split over
/// the threads; below, the OpenMP region costs more than it saves.
constexpr int64_t kParallelMacs = int64_t{1} << 16;

}  // namespace

template <typename T>
void gemmBlocked(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a, int64_t lda,
                 const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  for (int64_t i = 0; i < m; ++i) {
    T* row = c + i * ldc;
    if (beta == T(0)) std::fill(row, row + n, T(0));
    else if (beta != T(1)) for (int64_t j = 0; j < n; ++j) row[j] *= beta;
  }
  if (k <= 0) return;
  // Transposed operands are packed once so the inner loop always streams rows of B and C. Small
  // packs reuse this thread's buffers: batched products (attention's q·kᵀ: 16 x 16 per head, a few
  // hundred calls per node) would otherwise allocate for every call.
  constexpr size_t kKeptPack = size_t{1} << 18;  // elements kept per thread and operand
  thread_local std::vector<T> kept_a, kept_b;
  std::vector<T> own_a, own_b;
  auto packBuffer = [&](std::vector<T>& kept, std::vector<T>& own, int64_t elems) -> std::vector<T>& {
    std::vector<T>& buf = static_cast<size_t>(elems) <= kKeptPack ? kept : own;
    if (buf.size() < static_cast<size_t>(elems)) buf.resize(static_cast<size_t>(elems));
    return buf;
  };
  if (trans_a) {
    std::vector<T>& at = packBuffer(kept_a, own_a, m * k);
    for (int64_t p = 0; p < k; ++p)
      for (int64_t i = 0; i < m; ++i) at[i * k + p] = a[p * lda + i];
    a = at.data();
    lda = k;
  }
  if (trans_b) {
    std::vector<T>& bt = packBuffer(kept_b, own_b, k * n);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p) bt[p * n + j] = b[j * ldb + p];
    b = bt.data();
    ldb = n;
  }
  // A kKc x kNc panel of B (256 KiB in float) stays in L2 while a task's rows sweep over it.
  constexpr int64_t kNc = 256, kKc = 256;
  const bool parallel = !omp_in_parallel() && m * n * k >= kParallelMacs;
  const int64_t col_blocks = ceilDiv(n, kNc);
  int64_t mc = 64;
  if (parallel)
    while (mc > 4 && ceilDiv(m, mc) * col_blocks < 2 * omp_get_max_threads()) mc /= 2;
  const int64_t row_blocks = ceilDiv(m, mc);
  parallelFor(row_blocks * col_blocks, parallel, [&](int64_t blk) {
    const int64_t rb = blk / col_blocks, cb = blk % col_blocks;
    const int64_t i0 = rb * mc, rows = std::min(mc, m - i0);
    const int64_t j0 = cb * kNc, cols = std::min(kNc, n - j0);
    for (int64_t p0 = 0; p0 < k; p0 += kKc)
      gemmMicro(rows, cols, std::min(kKc, k - p0), alpha, a + i0 * lda + p0, lda, b + p0 * ldb + j0, ldb,
                c + i0 * ldc + j0, ldc);
  });
}

#define LWC_INSTANTIATE_GEMM(T)                                                                                   \
  template void gemmBlocked<T>(bool, bool, int64_t, int64_t, int64_t, T, const T*, int64_t, const T*, int64_t, T, \
                               T*, int64_t);
LWC_INSTANTIATE_GEMM(float)
LWC_INSTANTIATE_GEMM(double)
LWC_INSTANTIATE_GEMM(int32_t)
LWC_INSTANTIATE_GEMM(int64_t)
LWC_INSTANTIATE_GEMM(uint32_t)
LWC_INSTANTIATE_GEMM(uint64_t)
#undef LWC_INSTANTIATE_GEMM

namespace {
template <typename F>
void dispatchGemm(DType t, F&& f) {
  switch (t) {
    case DType::Float32: f(float{}); return;
    case DType::Float64: f(double{}); return;
    case DType::Int32: f(int32_t{}); return;
    case DType::Int64: f(int64_t{}); return;
    case DType::UInt32: f(uint32_t{}); return;
    case DType::UInt64: f(uint64_t{}); return;
    default: LWC_CHECK(false, "gemm called with ", dtypeName(t));
  }
}
}  // namespace

GemmParams parseGemmParams(const Node& n, const Shape& a, const Shape& b, const Shape* c) {
  if (a.size() != 2 || b.size() != 2)
    nodeFail(n, "Gemm expects 2-D A and B, got ", shapeStr(a), " and ", shapeStr(b), " (use MatMul for batches)");
  GemmParams p;
  p.trans_a = n.attrInt("transA", 0) != 0;
  p.trans_b = n.attrInt("transB", 0) != 0;
  p.alpha = n.attrFloat("alpha", 1.0f);
  p.beta = n.attrFloat("beta", 1.0f);
  p.m = p.trans_a ? a[1] : a[0];
  p.k = p.trans_a ? a[0] : a[1];
  const int64_t kb = p.trans_b ? b[1] : b[0];
  p.n = p.trans_b ? b[0] : b[1];
  if (p.k != kb)
    nodeFail(n, "A ", shapeStr(a), (p.trans_a ? " (transposed)" : ""), " and B ", shapeStr(b),
             (p.trans_b ? " (transposed)" : ""), " do not agree on the inner dimension (", p.k, " vs ", kb, ")");
  if (c) {
    bool ok = c->size() <= 2;
    const Shape target{p.m, p.n};
    for (size_t i = 0; ok && i < c->size(); ++i) {
      const int64_t d = (*c)[c->size() - 1 - i], t = target[1 - i];
      ok = d == t || d == 1;
    }
    if (!ok) nodeFail(n, "C ", shapeStr(*c), " cannot be broadcast to the result ", shapeStr(target));
  }
  return p;
}

Tensor gemmRef(const Tensor& a, const Tensor& b, const Tensor* c, const GemmParams& p) {
  Tensor y(a.dtype(), {p.m, p.n});
  dispatchGemm(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    T* yd = y.data<T>();
    T beta = T(0);
    if (c && p.beta != 0) {
      const auto st = broadcastStrides(c->shape(), y.shape());
      const T* cd = c->data<T>();
      for (int64_t i = 0; i < p.m; ++i)
        for (int64_t j = 0; j < p.n; ++j) yd[i * p.n + j] = cd[i * st[0] + j * st[1]];
      beta = static_cast<T>(p.beta);
    }
    gemmBlocked<T>(p.trans_a, p.trans_b, p.m, p.n, p.k, static_cast<T>(p.alpha), a.data<T>(), a.dim(1), b.data<T>(),
                   b.dim(1), beta, yd, p.n);
  });
  return y;
}

MatMulParams parseMatMulParams(const Node& n, const Shape& a, const Shape& b) {
  if (a.empty() || b.empty())
    nodeFail(n, "MatMul operands must have rank >= 1, got ", shapeStr(a), " and ", shapeStr(b));
  const Shape as = a.size() == 1 ? Shape{1, a[0]} : a;
  const Shape bs = b.size() == 1 ? Shape{b[0], 1} : b;
  MatMulParams p;
  p.m = as[as.size() - 2];
  p.k = as.back();
  p.n = bs.back();
  if (bs[bs.size() - 2] != p.k)
    nodeFail(n, "A ", shapeStr(a), " and B ", shapeStr(b), " do not agree on the inner dimension (", p.k, " vs ",
             bs[bs.size() - 2], ")");
  const size_t r = std::max(as.size(), bs.size()) - 2;
  p.a_batch.assign(r - (as.size() - 2), 1);
  p.a_batch.insert(p.a_batch.end(), as.begin(), as.end() - 2);
  p.b_batch.assign(r - (bs.size() - 2), 1);
  p.b_batch.insert(p.b_batch.end(), bs.begin(), bs.end() - 2);
  p.batch.resize(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t da = p.a_batch[i], db = p.b_batch[i];
    if (da != db && da != 1 && db != 1)
      nodeFail(n, "batch dims of A ", shapeStr(a), " and B ", shapeStr(b), " cannot be broadcast together");
    p.batch[i] = da == 1 ? db : da;
  }
  p.out = p.batch;
  if (a.size() > 1) p.out.push_back(p.m);
  if (b.size() > 1) p.out.push_back(p.n);
  return p;
}

Tensor matMulRef(const Tensor& a, const Tensor& b, const MatMulParams& p, bool trans_b, const ProductScale* scale,
                 bool merge_heads, FloatProduct fast, bool* used_fast) {
  if (used_fast) *used_fast = false;
  LWC_CHECK(!scale || a.dtype() == DType::Float32, "a scaled product must be float32");
  LWC_CHECK(!merge_heads || p.out.size() == 4, "merging heads needs a 4-D product");
  // With merge_heads the product of batch (b, h) goes to rows [b, :, h, :] of y [B, M, H, N].
  const int64_t heads = merge_heads ? p.out[1] : 1;
  Tensor y = Tensor::uninitialized(
      a.dtype(), merge_heads ? Shape{p.out[0], p.out[2], p.out[1], p.out[3]} : p.out);  // every element written below
  const int64_t batches = numelOf(p.batch), mk = p.m * p.k, kn = p.k * p.n, mn = p.m * p.n;
  dispatchGemm(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* ad = a.data<T>();
    const T* bd = b.data<T>();
    T* yd = y.data<T>();
    const int64_t ldb = trans_b ? p.k : p.n;
    // The scale of a fused Mul/Div, on outputs still in cache: the same float operation per
    // element as the node it replaces, so the same bits.
    auto scaleOutputs = [&](T* out, int64_t count) {
      if constexpr (std::is_same_v<T, float>) {
        if (!scale) return;
        const float s = scale->value;
        if (scale->divide)
          for (int64_t i = 0; i < count; ++i) out[i] = out[i] / s;
        else
          for (int64_t i = 0; i < count; ++i) out[i] = out[i] * s;
      }
    };
    // Activations [B..., M, K] times one weight matrix: a single GEMM with B*M rows.
    if (numelOf(p.b_batch) == 1 && p.a_batch == p.batch && !merge_heads) {
      gemmBlocked<T>(false, trans_b, batches * p.m, p.n, p.k, T(1), ad, p.k, bd, ldb, T(0), yd, p.n);
      scaleOutputs(yd, batches * mn);
      return;
    }
    // One product; `fast` may take it (float32 only). Whether it does depends on the shapes alone,
    // and it gives the same bits on any thread count, so the result does too.
    std::atomic<bool> took_fast{false};
    auto product = [&](const T* pa, const T* pb, T* pc, int64_t ldc) {
      if constexpr (std::is_same_v<T, float>) {
        if (fast && fast(trans_b, p.m, p.n, p.k, pa, p.k, pb, ldb, pc, ldc)) {
          took_fast.store(true, std::memory_order_relaxed);
          return;
        }
      }
      gemmBlocked<T>(false, trans_b, p.m, p.n, p.k, T(1), pa, p.k, pb, ldb, T(0), pc, ldc);
    };
    // Element strides of each operand's batch dims, 0 where broadcast.
    const size_t r = p.batch.size();
    std::vector<int64_t> as(r), bs(r);
    int64_t sa = mk, sb = kn;
    for (size_t i = r; i-- > 0;) {
      as[i] = p.a_batch[i] == 1 ? 0 : sa;
      bs[i] = p.b_batch[i] == 1 ? 0 : sb;
      sa *= p.a_batch[i];
      sb *= p.b_batch[i];
    }
    // Over the batch when there is work for the threads (kParallelMacs, as gemmBlocked's own
    // split); else on this thread without an OpenMP region, which cost more than the products
    // themselves on attention's heads at batch 1 (tinyformer_fmnist: four 4 x 16x16x16 products,
    // 6 us each on two threads). Each product is computed the same way either way.
    parallelFor(batches, batches >= omp_get_max_threads() && batches * p.m * p.n * p.k >= kParallelMacs, [&](int64_t bi) {
      int64_t ao = 0, bo = 0, rest = bi;
      for (size_t i = r; i-- > 0;) {
        const int64_t idx = rest % p.batch[i];
        rest /= p.batch[i];
        ao += idx * as[i];
        bo += idx * bs[i];
      }
      if (merge_heads) {
        const int64_t bb = bi / heads, h = bi % heads, ldc = heads * p.n;
        T* out = yd + bb * p.m * ldc + h * p.n;
        product(ad + ao, bd + bo, out, ldc);
        for (int64_t i = 0; i < p.m; ++i) scaleOutputs(out + i * ldc, p.n);
        return;
      }
      product(ad + ao, bd + bo, yd + bi * mn, p.n);
      scaleOutputs(yd + bi * mn, mn);
    });
    if (used_fast) *used_fast = took_fast.load();
  });
  return y;
}

// ---------------------------------------------------------------- Conv

Shape ConvParams::outShape() const {
  Shape s{batch, out_channels};
  s.insert(s.end(), geo.out.begin(), geo.out.end());
  return s;
}

ConvParams parseConvParams(const Node& n, const Shape& x, const Shape& w) {
  checkSpatialRank(n, x, "input X");
  if (w.size() != x.size())
    nodeFail(n, "weights W ", shapeStr(w), " do not match the input X ", shapeStr(x),
             "; W must be [M, C/group, K...] of the same rank as X");
  ConvParams p;
  p.group = n.attrInt("group", 1);
  if (p.group < 1) nodeFail(n, "group ", p.group, " must be >= 1");
  p.batch = x[0];
  p.in_channels = x[1];
  p.out_channels = w[0];
  if (x[1] != w[1] * p.group)
    nodeFail(n, "input X ", shapeStr(x), " has ", x[1], " channels but W ", shapeStr(w), " with group ", p.group,
             " expects ", w[1] * p.group);
  if (w[0] % p.group != 0)
    nodeFail(n, "W ", shapeStr(w), " has ", w[0], " output channels, which group ", p.group, " does not divide");
  p.geo = forwardWindow(n, x, kernelFromWeights(n, w), false);
  try {  // before a kernel prepares for it (oneDNN refuses such sizes with its own error)
    Tensor::checkAllocatable(DType::Float32, p.outShape());
  } catch (const Error& e) {
    nodeFail(n, "the output ", e.what());
  }
  return p;
}

namespace {

// Rows (c, kd, kh, kw), columns (od, oh, ow): the input patches each output position sees.
template <typename T>
void im2col(const T* x, int64_t channels, const Win3& g, T* col) {
  const int64_t os = g.outSize();
  int64_t row = 0;
  for (int64_t c = 0; c < channels; ++c) {
    const T* xc = x + c * g.inSize();
    for (int64_t kd = 0; kd < g.k[0]; ++kd)
      for (int64_t kh = 0; kh < g.k[1]; ++kh)
        for (int64_t kw = 0; kw < g.k[2]; ++kw, ++row) {
          T* dst = col + row * os;
          for (int64_t od = 0; od < g.out[0]; ++od) {
            const int64_t id = od * g.s[0] - g.pb[0] + kd * g.d[0];
            for (int64_t oh = 0; oh < g.out[1]; ++oh) {
              const int64_t ih = oh * g.s[1] - g.pb[1] + kh * g.d[1];
              T* o = dst + (od * g.out[1] + oh) * g.out[2];
              if (id < 0 || id >= g.in[0] || ih < 0 || ih >= g.in[1]) {
                std::fill(o, o + g.out[2], T(0));
                continue;
              }
              const T* xr = xc + (id * g.in[1] + ih) * g.in[2];
              for (int64_t ow = 0; ow < g.out[2]; ++ow) {
                const int64_t iw = ow * g.s[2] - g.pb[2] + kw * g.d[2];
                o[ow] = iw >= 0 && iw < g.in[2] ? xr[iw] : T(0);
              }
            }
          }
        }
  }
}

// Runs task(t, scratch) for t in [0, tasks): in parallel when there are enough tasks to occupy the
// threads, else serially so the GEMM inside parallelises instead.
template <typename T, typename F>
void forTasks(int64_t tasks, F&& task) {
  if (tasks > 1 && tasks >= omp_get_max_threads()) {
#pragma omp parallel
    {
      std::vector<T> scratch;
#pragma omp for schedule(static)
      for (int64_t t = 0; t < tasks; ++t) task(t, scratch);
    }
  } else {
    std::vector<T> scratch;
    for (int64_t t = 0; t < tasks; ++t) task(t, scratch);
  }
}

template <typename T>
void convImpl(const T* x, const T* w, const T* b, T* y, const ConvParams& p) {
  const Win3 g = to3d(p.geo);
  const int64_t groups = p.group, icg = p.in_channels / groups, ocg = p.out_channels / groups;
  const int64_t is = g.inSize(), os = g.outSize(), kk = icg * g.kSize();
  bool pointwise = true;
  for (int i = 0; i < 3; ++i) pointwise = pointwise && g.k[i] == 1 && g.s[i] == 1 && g.pb[i] == 0 && g.pe[i] == 0;
  forTasks<T>(p.batch * groups, [&](int64_t t, std::vector<T>& col) {
    const int64_t nb = t / groups, gi = t % groups;
    const T* xg = x + (nb * p.in_channels + gi * icg) * is;
    T* yg = y + (nb * p.out_channels + gi * ocg) * os;
    const T* src = xg;
    if (!pointwise) {
      col.resize(static_cast<size_t>(kk * os));
      im2col(xg, icg, g, col.data());
      src = col.data();
    }
    if (b)
      for (int64_t oc = 0; oc < ocg; ++oc) std::fill(yg + oc * os, yg + (oc + 1) * os, b[gi * ocg + oc]);
    gemmBlocked<T>(false, false, ocg, os, kk, T(1), w + gi * ocg * kk, kk, src, os, b ? T(1) : T(0), yg, os);
  });
}

}  // namespace

Tensor convRef(const Tensor& x, const Tensor& w, const Tensor* b, const ConvParams& p) {
  Tensor y(x.dtype(), p.outShape());
  dispatchRef(x.dtype(), "convRef", [&](auto tag) {
    using T = decltype(tag);
    convImpl<T>(x.data<T>(), w.data<T>(), b ? b->data<T>() : nullptr, y.data<T>(), p);
  });
  return y;
}

// ---------------------------------------------------------------- ConvTranspose

ConvTransposeParams parseConvTransposeParams(const Node& n, const Shape& x, const Shape& w) {
  checkSpatialRank(n, x, "input X");
  if (w.size() != x.size())
    nodeFail(n, "weights W ", shapeStr(w), " do not match the input X ", shapeStr(x),
             "; W must be [C, M/group, K...] of the same rank as X");
  ConvTransposeParams p;
  p.group = n.attrInt("group", 1);
  if (p.group < 1) nodeFail(n, "group ", p.group, " must be >= 1");
  if (x[1] != w[0])
    nodeFail(n, "input X ", shapeStr(x), " has ", x[1], " channels but W ", shapeStr(w), " expects ", w[0],
             " (ConvTranspose weights are [C, M/group, K...])");
  if (x[1] % p.group != 0) nodeFail(n, "group ", p.group, " does not divide the ", x[1], " input channels");
  p.batch = x[0];
  p.in_channels = x[1];
  p.out_channels = w[1] * p.group;
  const size_t r = x.size() - 2;
  WindowGeometry& g = p.geo;
  g.in.assign(x.begin() + 2, x.end());
  g.kernel = kernelFromWeights(n, w);
  g.strides = spatialAttr(n, "strides", r, 1, 1);
  g.dilations = spatialAttr(n, "dilations", r, 1, 1);
  const std::vector<int64_t> out_pad = spatialAttr(n, "output_padding", r, 0, 0);
  const AutoPad ap = parseAutoPad(n);
  std::vector<int64_t> want;  // requested output size, if any
  if (n.hasAttr("output_shape")) {
    want = n.attrInts("output_shape");
    if (want.size() == r + 2) want.erase(want.begin(), want.begin() + 2);
    if (want.size() != r)
      nodeFail(n, "output_shape ", shapeStr(n.attrInts("output_shape")), " needs ", r, " spatial dims");
  } else if (ap == AutoPad::SameUpper || ap == AutoPad::SameLower) {
    for (size_t i = 0; i < r; ++i) want.push_back(g.in[i] * g.strides[i]);
  }
  const std::vector<int64_t> pads = spatialAttr(n, "pads", 2 * r, 0, 0);
  g.pads_begin.resize(r);
  g.pads_end.resize(r);
  g.out.resize(r);
  for (size_t i = 0; i < r; ++i) {
    const int64_t full = g.strides[i] * (g.in[i] - 1) + out_pad[i] + (g.kernel[i] - 1) * g.dilations[i] + 1;
    if (!want.empty()) {
      // An output larger than the input reaches is allowed: the excess holds only the bias.
      const int64_t total = std::max<int64_t>(0, full - want[i]);
      g.pads_begin[i] = ap == AutoPad::SameUpper ? total / 2 : total - total / 2;
      g.pads_end[i] = total - g.pads_begin[i];
      g.out[i] = want[i];
    } else {
      if (ap != AutoPad::Valid) {
        g.pads_begin[i] = pads[i];
        g.pads_end[i] = pads[i + r];
      }
      g.out[i] = full - g.pads_begin[i] - g.pads_end[i];
      if (g.out[i] <= 0) nodeFail(n, "pads ", shapeStr(pads), " leave no output in spatial dim ", i);
    }
  }
  return p;
}

namespace {

// Adds each column entry to the output position its (kernel offset, input position) maps to.
template <typename T>
void col2im(const T* col, int64_t channels, const Win3& g, T* y) {
  const int64_t is = g.inSize(), os = g.outSize(), ks = g.kSize();
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && channels > 1)
  for (int64_t c = 0; c < channels; ++c) {
    T* yc = y + c * os;
    int64_t row = c * ks;
    for (int64_t kd = 0; kd < g.k[0]; ++kd)
      for (int64_t kh = 0; kh < g.k[1]; ++kh)
        for (int64_t kw = 0; kw < g.k[2]; ++kw, ++row) {
          const T* src = col + row * is;
          for (int64_t id = 0; id < g.in[0]; ++id) {
            const int64_t od = id * g.s[0] - g.pb[0] + kd * g.d[0];
            if (od < 0 || od >= g.out[0]) continue;
            for (int64_t ih = 0; ih < g.in[1]; ++ih) {
              const int64_t oh = ih * g.s[1] - g.pb[1] + kh * g.d[1];
              if (oh < 0 || oh >= g.out[1]) continue;
              const T* sr = src + (id * g.in[1] + ih) * g.in[2];
              T* yr = yc + (od * g.out[1] + oh) * g.out[2];
              for (int64_t iw = 0; iw < g.in[2]; ++iw) {
                const int64_t ow = iw * g.s[2] - g.pb[2] + kw * g.d[2];
                if (ow >= 0 && ow < g.out[2]) yr[ow] += sr[iw];
              }
            }
          }
        }
  }
}

template <typename T>
void convTransposeImpl(const T* x, const T* w, const T* b, T* y, const ConvTransposeParams& p) {
  const Win3 g = to3d(p.geo);
  const int64_t groups = p.group, icg = p.in_channels / groups, ocg = p.out_channels / groups;
  const int64_t is = g.inSize(), os = g.outSize(), rows = ocg * g.kSize();
  forTasks<T>(p.batch * groups, [&](int64_t t, std::vector<T>& col) {
    const int64_t nb = t / groups, gi = t % groups;
    const T* xg = x + (nb * p.in_channels + gi * icg) * is;
    T* yg = y + (nb * p.out_channels + gi * ocg) * os;
    col.resize(static_cast<size_t>(rows * is));
    // col[(oc, k), i] = sum_c W[c, (oc, k)] * X[c, i]
    gemmBlocked<T>(true, false, rows, is, icg, T(1), w + gi * icg * rows, rows, xg, is, T(0), col.data(), is);
    col2im(col.data(), ocg, g, yg);
    if (b)
      for (int64_t oc = 0; oc < ocg; ++oc) {
        const T bv = b[gi * ocg + oc];
        for (int64_t i = 0; i < os; ++i) yg[oc * os + i] += bv;
      }
  });
}

}  // namespace

Tensor convTransposeRef(const Tensor& x, const Tensor& w, const Tensor* b, const ConvTransposeParams& p) {
  Tensor y(x.dtype(), p.outShape());
  dispatchRef(x.dtype(), "convTransposeRef", [&](auto tag) {
    using T = decltype(tag);
    convTransposeImpl<T>(x.data<T>(), w.data<T>(), b ? b->data<T>() : nullptr, y.data<T>(), p);
  });
  return y;
}

// ---------------------------------------------------------------- pooling

Shape PoolParams::outShape() const {
  Shape s{batch, channels};
  s.insert(s.end(), geo.out.begin(), geo.out.end());
  return s;
}

PoolParams parsePoolParams(const Node& n, int64_t opset, const Shape& x) {
  checkSpatialRank(n, x, "input X");
  const size_t r = x.size() - 2;
  if (!n.hasAttr("kernel_shape")) nodeFail(n, "attribute 'kernel_shape' is required");
  const std::vector<int64_t> kernel = spatialAttr(n, "kernel_shape", r, 1, 1);
  PoolParams p;
  p.batch = x[0];
  p.channels = x[1];
  p.geo = forwardWindow(n, x, kernel, n.attrInt("ceil_mode", 0) != 0);
  p.count_include_pad = n.attrInt("count_include_pad", 0) != 0;
  p.storage_order = n.attrInt("storage_order", 0);
  if (p.storage_order != 0 && p.storage_order != 1) nodeFail(n, "storage_order ", p.storage_order, " must be 0 or 1");
  if (n.op_type == "LpPool") {
    p.p = opset < 2 ? n.attrFloat("p", 2.0f) : static_cast<double>(n.attrInt("p", 2));
    if (!(p.p > 0)) nodeFail(n, "p ", p.p, " must be positive");
  }
  return p;
}

namespace {

// Where the window of each output lands, per spatial dim, computed once per call so the inner
// loops need no bounds checks: the first input coordinate, the taps [lo, hi) that fall inside the
// input, and how many taps fall inside input + pads (AveragePool's count_include_pad divisor).
class PoolWindows {
 public:
  explicit PoolWindows(const Win3& g) : g_(g) {
    for (int i = 0; i < 3; ++i) {
      dims_[i].resize(static_cast<size_t>(g.out[i]));
      for (int64_t o = 0; o < g.out[i]; ++o) {
        Span& sp = dims_[i][o];
        sp.start = o * g.s[i] - g.pb[i];
        auto at = [&](int64_t k) { return sp.start + k * g.d[i]; };
        while (sp.lo < g.k[i] && at(sp.lo) < 0) ++sp.lo;
        sp.hi = g.k[i];
        while (sp.hi > sp.lo && at(sp.hi - 1) >= g.in[i]) --sp.hi;
        for (int64_t k = 0; k < g.k[i]; ++k) sp.padded += at(k) >= -g.pb[i] && at(k) < g.in[i] + g.pe[i];
      }
    }
  }

  /// Calls f(offset in the plane, id, ih, iw) for each in-bounds tap of output (od, oh, ow).
  template <typename F>
  void forEach(int64_t od, int64_t oh, int64_t ow, F&& f) const {
    const Span &d = dims_[0][od], &h = dims_[1][oh], &w = dims_[2][ow];
    for (int64_t kd = d.lo; kd < d.hi; ++kd) {
      const int64_t id = d.start + kd * g_.d[0];
      for (int64_t kh = h.lo; kh < h.hi; ++kh) {
        const int64_t ih = h.start + kh * g_.d[1];
        const int64_t row = (id * g_.in[1] + ih) * g_.in[2];
        for (int64_t kw = w.lo; kw < w.hi; ++kw) {
          const int64_t iw = w.start + kw * g_.d[2];
          f(row + iw, id, ih, iw);
        }
      }
    }
  }

  int64_t paddedCount(int64_t od, int64_t oh, int64_t ow) const {
    return dims_[0][od].padded * dims_[1][oh].padded * dims_[2][ow].padded;
  }

 private:
  struct Span {
    int64_t start = 0, lo = 0, hi = 0, padded = 0;
  };
  Win3 g_;
  std::vector<Span> dims_[3];
};

// Runs f(plane, od, oh, ow, flat output offset) over all planes in parallel.
template <typename F>
void forPoolOutputs(int64_t planes, const Win3& g, F&& f) {
#pragma omp parallel for schedule(static) if (planes > 1)
  for (int64_t pl = 0; pl < planes; ++pl) {
    int64_t o = pl * g.outSize();
    for (int64_t od = 0; od < g.out[0]; ++od)
      for (int64_t oh = 0; oh < g.out[1]; ++oh)
        for (int64_t ow = 0; ow < g.out[2]; ++ow, ++o) f(pl, od, oh, ow, o);
  }
}

template <typename T>
void maxPoolImpl(const T* x, T* y, int64_t* indices, const PoolParams& p) {
  const Win3 g = to3d(p.geo);
  const PoolWindows win(g);
  const int64_t is = g.inSize();
  // Column-major index multipliers of the real spatial dims (padded unit dims always sit at 0).
  const size_t off = 3 - p.geo.rank();
  int64_t cm[3] = {0, 0, 0};
  int64_t mult = 1;
  for (size_t i = off; i < 3; ++i) {
    cm[i] = mult;
    mult *= g.in[i];
  }
  forPoolOutputs(p.batch * p.channels, g, [&](int64_t pl, int64_t od, int64_t oh, int64_t ow, int64_t o) {
    const T* xp = x + pl * is;
    T best = std::numeric_limits<T>::lowest();
    int64_t best_at = -1;
    win.forEach(od, oh, ow, [&](int64_t at, int64_t id, int64_t ih, int64_t iw) {
      if (best_at < 0 || xp[at] > best) {
        best = xp[at];
        best_at = p.storage_order ? id * cm[0] + ih * cm[1] + iw * cm[2] : at;
      }
    });
    y[o] = best;
    if (indices) indices[o] = best_at < 0 ? -1 : pl * is + best_at;
  });
}

template <typename T>
void averagePoolImpl(const T* x, T* y, const PoolParams& p) {
  const Win3 g = to3d(p.geo);
  const PoolWindows win(g);
  const int64_t is = g.inSize();
  forPoolOutputs(p.batch * p.channels, g, [&](int64_t pl, int64_t od, int64_t oh, int64_t ow, int64_t o) {
    const T* xp = x + pl * is;
    double sum = 0;
    int64_t count = 0;
    win.forEach(od, oh, ow, [&](int64_t at, int64_t, int64_t, int64_t) {
      sum += xp[at];
      ++count;
    });
    // With count_include_pad, pads count but a ceil_mode window's overhang beyond them does not.
    if (p.count_include_pad) count = win.paddedCount(od, oh, ow);
    y[o] = static_cast<T>(count > 0 ? sum / static_cast<double>(count) : 0.0);
  });
}

template <typename T>
void lpPoolImpl(const T* x, T* y, const PoolParams& p) {
  const Win3 g = to3d(p.geo);
  const PoolWindows win(g);
  const int64_t is = g.inSize();
  forPoolOutputs(p.batch * p.channels, g, [&](int64_t pl, int64_t od, int64_t oh, int64_t ow, int64_t o) {
    const T* xp = x + pl * is;
    double sum = 0;
    win.forEach(od, oh, ow, [&](int64_t at, int64_t, int64_t, int64_t) {
      sum += std::pow(std::fabs(static_cast<double>(xp[at])), p.p);
    });
    y[o] = static_cast<T>(std::pow(sum, 1.0 / p.p));
  });
}

}  // namespace

Tensor maxPoolRef(const Tensor& x, const PoolParams& p, Tensor* indices) {
  Tensor y(x.dtype(), p.outShape());
  if (indices) *indices = Tensor(DType::Int64, p.outShape());
  int64_t* ind = indices ? indices->data<int64_t>() : nullptr;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    maxPoolImpl<T>(x.data<T>(), y.data<T>(), ind, p);
  };
  switch (x.dtype()) {
    case DType::Float32: run(float{}); break;
    case DType::Float64: run(double{}); break;
    case DType::Int8: run(int8_t{}); break;
    case DType::UInt8: run(uint8_t{}); break;
    default: LWC_CHECK(false, "maxPoolRef called with ", dtypeName(x.dtype()));
  }
  return y;
}

Tensor averagePoolRef(const Tensor& x, const PoolParams& p) {
  Tensor y(x.dtype(), p.outShape());
  dispatchRef(x.dtype(), "averagePoolRef", [&](auto tag) {
    using T = decltype(tag);
    averagePoolImpl<T>(x.data<T>(), y.data<T>(), p);
  });
  return y;
}

Tensor lpPoolRef(const Tensor& x, const PoolParams& p) {
  Tensor y(x.dtype(), p.outShape());
  dispatchRef(x.dtype(), "lpPoolRef", [&](auto tag) {
    using T = decltype(tag);
    lpPoolImpl<T>(x.data<T>(), y.data<T>(), p);
  });
  return y;
}

// ---------------------------------------------------------------- kernels

namespace {

class RefKernel final : public Kernel {
 public:
  explicit RefKernel(KernelFn fn) : fn_(std::move(fn)) {}
  void run(KernelContext& ctx) override { fn_(ctx); }

 private:
  KernelFn fn_;
};

const char* kFloatTypes = "float16, float32 or float64";

// Input i as float32 when it is float16 (converted into `storage`), else the input itself, not a copy
// (a copy allocates its shape); optional inputs come back empty.
const Tensor& floatInput(const KernelContext& ctx, size_t i, Tensor& storage) {
  return ctx.has(i) ? asFloat32IfHalf(ctx.in(i), storage) : storage;
}

void requireFloat(const KernelContext& ctx, const Tensor& t, const char* what) {
  if (t.dtype() != DType::Float32 && t.dtype() != DType::Float64)
    ctx.error(what, " is ", dtypeName(t.dtype()), "; this op takes ", kFloatTypes);
}

void requireSameType(const KernelContext& ctx, const Tensor& ref, const Tensor& t, const char* what) {
  if (!t.empty() && t.dtype() != ref.dtype())
    ctx.error(what, " is ", dtypeName(t.dtype()), " but the first input is ", dtypeName(ref.dtype()));
}

// Stores a float32 result as float16 when the op's input was float16.
void setOutput(KernelContext& ctx, size_t i, Tensor t, bool half) {
  if (i < ctx.numOutputs()) ctx.outputs[i] = half ? t.cast(DType::Float16) : std::move(t);
}

bool isHalf(const KernelContext& ctx) { return ctx.in(0).dtype() == DType::Float16; }

void requireVector(const KernelContext& ctx, const Tensor& t, int64_t len, const char* what) {
  if (t.rank() != 1 || t.dim(0) != len) ctx.error(what, " has shape ", shapeStr(t.shape()), ", expected [", len, "]");
}

void convKernel(KernelContext& ctx) {
  const bool half = isHalf(ctx);
  Tensor x_f, w_f, b_f;
  const Tensor &x = floatInput(ctx, 0, x_f), &w = floatInput(ctx, 1, w_f), &b = floatInput(ctx, 2, b_f);
  requireFloat(ctx, x, "input X");
  requireSameType(ctx, x, w, "W");
  requireSameType(ctx, x, b, "B");
  const ConvParams p = parseConvParams(ctx.node, x.shape(), w.shape());
  if (!b.empty()) requireVector(ctx, b, p.out_channels, "bias B");
  setOutput(ctx, 0, convRef(x, w, b.empty() ? nullptr : &b, p), half);
}

void convTransposeKernel(KernelContext& ctx) {
  const bool half = isHalf(ctx);
  Tensor x_f, w_f, b_f;
  const Tensor &x = floatInput(ctx, 0, x_f), &w = floatInput(ctx, 1, w_f), &b = floatInput(ctx, 2, b_f);
  requireFloat(ctx, x, "input X");
  requireSameType(ctx, x, w, "W");
  requireSameType(ctx, x, b, "B");
  const ConvTransposeParams p = parseConvTransposeParams(ctx.node, x.shape(), w.shape());
  if (!b.empty()) requireVector(ctx, b, p.out_channels, "bias B");
  setOutput(ctx, 0, convTransposeRef(x, w, b.empty() ? nullptr : &b, p), half);
}

void requireGemmType(const KernelContext& ctx, const Tensor& t) {
  switch (t.dtype()) {
    case DType::Float32:
    case DType::Float64:
    case DType::Int32:
    case DType::Int64:
    case DType::UInt32:
    case DType::UInt64: return;
    default: ctx.error("element type ", dtypeName(t.dtype()), " is not supported (float16/32/64, int32/64, uint32/64)");
  }
}

void gemmKernel(KernelContext& ctx) {
  const bool half = isHalf(ctx);
  Tensor a_f, b_f, c_f;
  const Tensor &a = floatInput(ctx, 0, a_f), &b = floatInput(ctx, 1, b_f), &c = floatInput(ctx, 2, c_f);
  requireGemmType(ctx, a);
  requireSameType(ctx, a, b, "B");
  requireSameType(ctx, a, c, "C");
  const GemmParams p = parseGemmParams(ctx.node, a.shape(), b.shape(), c.empty() ? nullptr : &c.shape());
  setOutput(ctx, 0, gemmRef(a, b, c.empty() ? nullptr : &c, p), half);
}

}  // namespace

// MatMul, and lwc.internal.MatMulTransB (A, Bt) with `trans_b`: MatMul(A, B) where Bt is B with its
// last two axes swapped (the optimizer's rewrite of Transpose -> MatMul input B), read in place of a
// transposed copy. Same element types either way.
void matMulAnyKernel(KernelContext& ctx, bool trans_b, FloatProduct fast, bool* used_fast) {
  if (used_fast) *used_fast = false;
  const bool half = isHalf(ctx);
  Tensor a_f, b_f;
  const Tensor &a = floatInput(ctx, 0, a_f), &b = floatInput(ctx, 1, b_f);
  requireGemmType(ctx, a);
  requireSameType(ctx, a, b, "B");
  Shape b_shape = b.shape();
  if (trans_b) {
    if (b.rank() < 2) ctx.error("B must have rank 2 or more, got ", shapeStr(b.shape()));
    std::swap(b_shape[b_shape.size() - 1], b_shape[b_shape.size() - 2]);
  }
  // lwc.internal.MatMulTransB's fused scalar Mul/Div (optimize.cpp; float32 only).
  std::optional<ProductScale> scale;
  if (trans_b && ctx.node.hasAttr("scale")) {
    if (a.dtype() != DType::Float32 || half) ctx.error("a scaled product takes float32 inputs, got ", dtypeName(a.dtype()));
    scale = ProductScale{ctx.node.attrFloat("scale", 1.0f), ctx.node.attrInt("scale_divides", 0) != 0};
  }
  // lwc.internal.MatMulTransB / MatMulMergeHeads with merge_heads: the Transpose [0, 2, 1, 3]
  // that read the product, folded in (optimize.cpp).
  const MatMulParams p = parseMatMulParams(ctx.node, a.shape(), b_shape);
  const bool merge = ctx.node.domain == "lwc.internal" && ctx.node.attrInt("merge_heads", 0) != 0;
  if (merge && p.out.size() != 4)
    ctx.error("merging heads needs a 4-D product, got ", shapeStr(p.out), " from ", shapeStr(a.shape()), " and ",
              shapeStr(b.shape()));
  // In place only for [B, H] products of matrices; a 4-D product with a 1-D operand (its dim
  // removed) is computed plainly and its axes 1 and 2 swapped after.
  const bool in_place = merge && p.batch.size() == 2 && a.rank() >= 2 && b.rank() >= 2;
  Tensor y = matMulRef(a, b, p, trans_b, scale ? &*scale : nullptr, in_place, half ? nullptr : fast, used_fast);
  if (merge && !in_place) {
    const int64_t d0 = y.dim(0), d1 = y.dim(1), d2 = y.dim(2), d3 = y.dim(3);
    const size_t row = static_cast<size_t>(d3) * dtypeSize(y.dtype());
    Tensor t = Tensor::uninitialized(y.dtype(), {d0, d2, d1, d3});
    const auto* src = static_cast<const std::byte*>(y.raw());
    auto* dst = static_cast<std::byte*>(t.raw());
    for (int64_t i = 0; i < d0; ++i)
      for (int64_t j = 0; j < d1; ++j)
        for (int64_t k = 0; k < d2; ++k)
          std::memcpy(dst + static_cast<size_t>((i * d2 + k) * d1 + j) * row,
                      src + static_cast<size_t>((i * d1 + j) * d2 + k) * row, row);
    y = std::move(t);
  }
  setOutput(ctx, 0, std::move(y), half);
}

// lwc.internal.MatMul (A, B, c): MatMul(A, B) + c, c one float32 value per output column.
void matMulBiasReference(KernelContext& ctx) {
  const Tensor &a = ctx.in(0), &b = ctx.in(1), &c = ctx.in(2);
  requireFloat(ctx, a, "input A");
  requireSameType(ctx, a, b, "B");
  Tensor y = matMulRef(a, b, parseMatMulParams(ctx.node, a.shape(), b.shape()));
  const int64_t n = y.rank() ? y.shape().back() : 1;
  if (!isFusedMatMulBias(c, n))
    ctx.error("bias must be float32 with one value per output column (", n, "), got ", dtypeName(c.dtype()), " ",
              shapeStr(c.shape()));
  float* Y = y.data<float>();
  const float* C = c.data<float>();
  for (int64_t r = 0; r < y.numel() / std::max<int64_t>(n, 1); ++r)
    for (int64_t j = 0; j < n; ++j) Y[r * n + j] += C[j];
  if (c.rank() > y.rank()) {  // a [1, N] bias after a 1-D A: the Add's output is [1, N]
    Shape s = y.shape();
    s.insert(s.begin(), c.rank() - y.rank(), 1);
    y = y.reshaped(s);
  }
  ctx.outputs[0] = std::move(y);
}

namespace {

void matMulKernel(KernelContext& ctx) { matMulAnyKernel(ctx, false); }

KernelFactory poolFactory(const std::string& op) {
  return [op](const KernelInfo& info) -> std::unique_ptr<Kernel> {
    const int64_t opset = info.opset;
    return std::make_unique<RefKernel>([op, opset](KernelContext& ctx) {
      const bool half = isHalf(ctx);
      Tensor x_f;
      const Tensor& x = floatInput(ctx, 0, x_f);
      const bool ints_ok = op == "MaxPool" && (x.dtype() == DType::Int8 || x.dtype() == DType::UInt8);
      if (!ints_ok) requireFloat(ctx, x, "input X");
      const PoolParams p = parsePoolParams(ctx.node, opset, x.shape());
      if (op == "MaxPool") {
        const bool want_indices = ctx.numOutputs() > 1 && !ctx.node.outputs[1].empty();
        Tensor indices;
        setOutput(ctx, 0, maxPoolRef(x, p, want_indices ? &indices : nullptr), half);
        if (want_indices) ctx.outputs[1] = indices;
      } else if (op == "AveragePool") {
        setOutput(ctx, 0, averagePoolRef(x, p), half);
      } else {
        setOutput(ctx, 0, lpPoolRef(x, p), half);
      }
    });
  };
}

template <bool kMax>
void globalPoolKernel(KernelContext& ctx) {
  const bool half = isHalf(ctx);
  Tensor x_f;
  const Tensor& x = floatInput(ctx, 0, x_f);
  requireFloat(ctx, x, "input X");
  if (x.rank() < 3) ctx.error("input X has shape ", shapeStr(x.shape()), "; expected [N, C, D1, ...]");
  Shape os = x.shape();
  std::fill(os.begin() + 2, os.end(), 1);
  Tensor y(x.dtype(), os);
  const int64_t planes = x.dim(0) * x.dim(1), size = numelOf(Shape(x.shape().begin() + 2, x.shape().end()));
  dispatchRef(x.dtype(), "globalPool", [&](auto tag) {
    using T = decltype(tag);
    const T* xd = x.data<T>();
    T* yd = y.data<T>();
#pragma omp parallel for schedule(static) if (planes > 1)
    for (int64_t pl = 0; pl < planes; ++pl) {
      const T* xp = xd + pl * size;
      if constexpr (kMax) {
        yd[pl] = size ? *std::max_element(xp, xp + size) : std::numeric_limits<T>::lowest();
      } else {
        double s = 0;
        for (int64_t i = 0; i < size; ++i) s += xp[i];
        yd[pl] = static_cast<T>(size ? s / static_cast<double>(size) : 0.0);
      }
    }
  });
  setOutput(ctx, 0, y, half);
}

// Applies y = x * a[c] + b[c] per channel of an [N, C, ...] tensor (a and b may vary per spatial
// element too when they hold C * spatial values: BatchNormalization with spatial=0).
void affinePerChannel(const Tensor& x, const std::vector<double>& a, const std::vector<double>& b, Tensor& y) {
  const int64_t n = x.dim(0), c = x.dim(1), size = x.numel() / std::max<int64_t>(1, n * c);
  const bool per_element = static_cast<int64_t>(a.size()) == c * size && size > 1;
  dispatchRef(x.dtype(), "affinePerChannel", [&](auto tag) {
    using T = decltype(tag);
    const T* xd = x.data<T>();
    T* yd = y.data<T>();
#pragma omp parallel for schedule(static) if (n * c > 1)
    for (int64_t pl = 0; pl < n * c; ++pl) {
      const int64_t ch = pl % c;
      const T* xp = xd + pl * size;
      T* yp = yd + pl * size;
      if (per_element) {
        for (int64_t i = 0; i < size; ++i)
          yp[i] = static_cast<T>(xp[i] * a[ch * size + i] + b[ch * size + i]);
      } else {
        const T ac = static_cast<T>(a[ch]), bc = static_cast<T>(b[ch]);
        for (int64_t i = 0; i < size; ++i) yp[i] = xp[i] * ac + bc;
      }
    }
  });
}

std::vector<double> asDoubles(const Tensor& t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.at(i);
  return v;
}

std::unique_ptr<Kernel> makeBatchNorm(const KernelInfo& info) {
  const Node& n = info.node;
  size_t outputs = 0;
  for (const auto& o : n.outputs) outputs += !o.empty();
  if (n.attrInt("training_mode", 0) != 0 || outputs > 1)
    nodeFail(n, "BatchNormalization in training mode (training_mode=1 or running-statistics outputs) is not "
                "supported: lwc runs inference graphs; export the model in eval mode");
  return std::make_unique<RefKernel>([](KernelContext& ctx) {
    const bool half = isHalf(ctx);
    Tensor x_f;
    const Tensor& x = floatInput(ctx, 0, x_f);
    requireFloat(ctx, x, "input X");
    if (x.rank() < 2) ctx.error("input X has shape ", shapeStr(x.shape()), "; expected [N, C, ...]");
    const int64_t c = x.dim(1), per_channel = x.numel() / std::max<int64_t>(1, x.dim(0) * c);
    std::vector<double> params[4];
    const char* names[4] = {"scale", "B", "mean", "var"};
    for (size_t i = 0; i < 4; ++i) {
      params[i] = asDoubles(ctx.in(i + 1));
      const auto len = static_cast<int64_t>(params[i].size());
      if (len != c && len != c * per_channel)
        ctx.error(names[i], " has shape ", shapeStr(ctx.in(i + 1).shape()), "; expected [", c, "]");
    }
    const double eps = ctx.node.attrFloat("epsilon", 1e-5f);
    std::vector<double> a(params[0].size()), b(params[0].size());
    for (size_t i = 0; i < a.size(); ++i) {
      a[i] = params[0][i] / std::sqrt(params[3][i] + eps);
      b[i] = params[1][i] - params[2][i] * a[i];
    }
    Tensor y(x.dtype(), x.shape());
    affinePerChannel(x, a, b, y);
    setOutput(ctx, 0, y, half);
  });
}

template <typename T>
void meanVar(const T* x, int64_t size, double& mean, double& var) {
  double s = 0, sq = 0;
  for (int64_t i = 0; i < size; ++i) s += x[i];
  mean = size ? s / static_cast<double>(size) : 0;
  for (int64_t i = 0; i < size; ++i) sq += (x[i] - mean) * (x[i] - mean);
  var = size ? sq / static_cast<double>(size) : 0;
}

// MeanVarianceNormalization: (X - mean) / (sqrt(variance) + 1e-9) over `axes` (default [0, 2, 3]),
// as ONNX's function body defines it (the variance of the population; computed centred, in double).
void meanVarianceNormKernel(KernelContext& ctx) {
  const bool half = isHalf(ctx);
  Tensor x_f;
  const Tensor& x = floatInput(ctx, 0, x_f);
  requireFloat(ctx, x, "input X");
  const int64_t r = static_cast<int64_t>(x.rank());
  std::vector<bool> reduced(static_cast<size_t>(r), false);
  for (int64_t a : ctx.node.attrInts("axes", {0, 2, 3})) {
    if (a < -r || a >= r) ctx.error("axes holds ", a, ", outside the input's ", r, " dims");
    reduced[static_cast<size_t>(a < 0 ? a + r : a)] = true;
  }
  // Each element's group: its index over the kept axes.
  const Shape& s = x.shape();
  const int64_t n = x.numel();
  std::vector<int64_t> group(static_cast<size_t>(n));
  int64_t groups = 1;
  for (int64_t d = 0; d < r; ++d)
    if (!reduced[static_cast<size_t>(d)]) groups *= s[d];
  std::vector<int64_t> idx(static_cast<size_t>(r), 0);
  for (int64_t i = 0; i < n; ++i) {
    int64_t g = 0;
    for (int64_t d = 0; d < r; ++d)
      if (!reduced[static_cast<size_t>(d)]) g = g * s[d] + idx[static_cast<size_t>(d)];
    group[static_cast<size_t>(i)] = g;
    for (int64_t d = r; d-- > 0;) {
      if (++idx[static_cast<size_t>(d)] < s[d]) break;
      idx[static_cast<size_t>(d)] = 0;
    }
  }
  Tensor y(x.dtype(), s);
  dispatchRef(x.dtype(), "meanVarianceNormalization", [&](auto tag) {
    using T = decltype(tag);
    const T* xd = x.data<T>();
    T* yd = y.data<T>();
    std::vector<double> sum(static_cast<size_t>(groups), 0.0), sq(static_cast<size_t>(groups), 0.0), count(static_cast<size_t>(groups), 0.0);
    for (int64_t i = 0; i < n; ++i) {
      sum[static_cast<size_t>(group[static_cast<size_t>(i)])] += xd[i];
      count[static_cast<size_t>(group[static_cast<size_t>(i)])] += 1;
    }
    for (int64_t g = 0; g < groups; ++g) sum[static_cast<size_t>(g)] /= std::max(1.0, count[static_cast<size_t>(g)]);
    for (int64_t i = 0; i < n; ++i) {
      const double dv = xd[i] - sum[static_cast<size_t>(group[static_cast<size_t>(i)])];
      sq[static_cast<size_t>(group[static_cast<size_t>(i)])] += dv * dv;
    }
    for (int64_t i = 0; i < n; ++i) {
      const size_t g = static_cast<size_t>(group[static_cast<size_t>(i)]);
      const double sd = std::sqrt(sq[g] / std::max(1.0, count[g]));
      yd[i] = static_cast<T>((xd[i] - sum[g]) / (sd + 1e-9));
    }
  });
  setOutput(ctx, 0, y, half);
}

void instanceNormKernel(KernelContext& ctx) {
  const bool half = isHalf(ctx);
  Tensor x_f;
  const Tensor& x = floatInput(ctx, 0, x_f);
  requireFloat(ctx, x, "input X");
  if (x.rank() < 3) ctx.error("input X has shape ", shapeStr(x.shape()), "; expected [N, C, D1, ...]");
  const int64_t c = x.dim(1), planes = x.dim(0) * c, size = x.numel() / std::max<int64_t>(1, planes);
  const std::vector<double> scale = asDoubles(ctx.in(1)), bias = asDoubles(ctx.in(2));
  requireVector(ctx, ctx.in(1), c, "scale");
  requireVector(ctx, ctx.in(2), c, "B");
  const double eps = ctx.node.attrFloat("epsilon", 1e-5f);
  Tensor y(x.dtype(), x.shape());
  dispatchRef(x.dtype(), "instanceNorm", [&](auto tag) {
    using T = decltype(tag);
    const T* xd = x.data<T>();
    T* yd = y.data<T>();
#pragma omp parallel for schedule(static) if (planes > 1)
    for (int64_t pl = 0; pl < planes; ++pl) {
      double mean, var;
      meanVar(xd + pl * size, size, mean, var);
      const double a = scale[pl % c] / std::sqrt(var + eps), b = bias[pl % c] - mean * a;
      for (int64_t i = 0; i < size; ++i) yd[pl * size + i] = static_cast<T>(xd[pl * size + i] * a + b);
    }
  });
  setOutput(ctx, 0, y, half);
}

// Values of t (broadcast unidirectionally to `shape`) laid out densely over `shape`.
std::vector<double> broadcastTo(const KernelContext& ctx, const Tensor& t, const Shape& shape, const char* what) {
  if (broadcastShapes(t.shape(), shape, ctx) != shape)
    ctx.error(what, " ", shapeStr(t.shape()), " cannot be broadcast to the normalized shape ", shapeStr(shape));
  const auto st = broadcastStrides(t.shape(), shape);
  std::vector<double> v(static_cast<size_t>(numelOf(shape)));
  std::vector<int64_t> idx(shape.size(), 0);
  for (size_t i = 0; i < v.size(); ++i) {
    int64_t off = 0;
    for (size_t d = 0; d < shape.size(); ++d) off += idx[d] * st[d];
    v[i] = t.at(off);
    for (size_t d = shape.size(); d-- > 0;) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
  return v;
}

void layerNormKernel(KernelContext& ctx) {
  const bool half = isHalf(ctx);
  Tensor x_f;
  const Tensor& x = floatInput(ctx, 0, x_f);
  requireFloat(ctx, x, "input X");
  const auto r = static_cast<int64_t>(x.rank());
  const int64_t axis = normAxis(ctx.node.attrInt("axis", -1), r, ctx);
  const int64_t stash = ctx.node.attrInt("stash_type", 1);
  if (stash != 1 && stash != 11) ctx.error("stash_type ", stash, " is not supported (1: float32, 11: float64)");
  const Shape norm_shape(x.shape().begin() + axis, x.shape().end());
  const int64_t size = numelOf(norm_shape), outer = numelOf(Shape(x.shape().begin(), x.shape().begin() + axis));
  const std::vector<double> scale = broadcastTo(ctx, ctx.in(1), norm_shape, "Scale");
  const std::vector<double> bias =
      ctx.has(2) ? broadcastTo(ctx, ctx.in(2), norm_shape, "B") : std::vector<double>(size, 0.0);
  const double eps = ctx.node.attrFloat("epsilon", 1e-5f);
  Shape stat_shape = x.shape();
  std::fill(stat_shape.begin() + axis, stat_shape.end(), 1);
  Tensor y(x.dtype(), x.shape());
  std::vector<double> means(outer), inv_std(outer);
  dispatchRef(x.dtype(), "layerNorm", [&](auto tag) {
    using T = decltype(tag);
    const T* xd = x.data<T>();
    T* yd = y.data<T>();
#pragma omp parallel for schedule(static) if (outer > 1)
    for (int64_t o = 0; o < outer; ++o) {
      double mean, var;
      meanVar(xd + o * size, size, mean, var);
      const double is = 1.0 / std::sqrt(var + eps);
      means[o] = mean;
      inv_std[o] = is;
      for (int64_t i = 0; i < size; ++i)
        yd[o * size + i] = static_cast<T>((xd[o * size + i] - mean) * is * scale[i] + bias[i]);
    }
  });
  setOutput(ctx, 0, y, half);
  const DType stat_type = stash == 11 ? DType::Float64 : DType::Float32;
  const std::vector<double>* stats[2] = {&means, &inv_std};
  for (size_t i = 1; i < 3 && i < ctx.numOutputs(); ++i) {
    if (ctx.node.outputs[i].empty()) continue;
    Tensor s(DType::Float64, stat_shape);
    std::copy(stats[i - 1]->begin(), stats[i - 1]->end(), s.data<double>());
    ctx.outputs[i] = s.cast(stat_type);
  }
}

void lrnKernel(KernelContext& ctx) {
  const bool half = isHalf(ctx);
  Tensor x_f;
  const Tensor& x = floatInput(ctx, 0, x_f);
  requireFloat(ctx, x, "input X");
  if (x.rank() < 3) ctx.error("input X has shape ", shapeStr(x.shape()), "; expected [N, C, D1, ...]");
  const Node& n = ctx.node;
  if (!n.hasAttr("size")) ctx.error("attribute 'size' is required");
  const int64_t size = n.attrInt("size", 1);
  if (size < 1) ctx.error("size ", size, " must be >= 1");
  const double alpha = n.attrFloat("alpha", 1e-4f), beta = n.attrFloat("beta", 0.75f), bias = n.attrFloat("bias", 1.0f);
  const int64_t batch = x.dim(0), c = x.dim(1), plane = x.numel() / std::max<int64_t>(1, batch * c);
  const int64_t before = (size - 1) / 2, after = size - 1 - before;
  Tensor y(x.dtype(), x.shape());
  dispatchRef(x.dtype(), "lrn", [&](auto tag) {
    using T = decltype(tag);
    const T* xd = x.data<T>();
    T* yd = y.data<T>();
#pragma omp parallel for schedule(static) if (batch * c > 1)
    for (int64_t pl = 0; pl < batch * c; ++pl) {
      const int64_t nb = pl / c, ch = pl % c;
      const int64_t lo = std::max<int64_t>(0, ch - before), hi = std::min(c - 1, ch + after);
      std::vector<double> sq(static_cast<size_t>(plane), 0.0);
      for (int64_t j = lo; j <= hi; ++j) {
        const T* xj = xd + (nb * c + j) * plane;
        for (int64_t i = 0; i < plane; ++i) sq[i] += static_cast<double>(xj[i]) * xj[i];
      }
      for (int64_t i = 0; i < plane; ++i)
        yd[pl * plane + i] = static_cast<T>(xd[pl * plane + i] / std::pow(bias + alpha / size * sq[i], beta));
    }
  });
  setOutput(ctx, 0, y, half);
}

enum class SoftmaxOp { Softmax, LogSoftmax, Hardmax };

// Before opset 13 the input is coerced to 2-D at `axis` and each row normalised; from 13 on the op
// works along the single dim `axis` (default -1).
KernelFn softmaxKernel(SoftmaxOp op, bool coerce_2d) {
  return [op, coerce_2d](KernelContext& ctx) {
    const bool half = isHalf(ctx);
    Tensor x_f;
    const Tensor& x = floatInput(ctx, 0, x_f);
    requireFloat(ctx, x, "input X");
    const auto r = static_cast<int64_t>(x.rank());
    if (r == 0) ctx.error("input X is a scalar; expected rank >= 1");
    const int64_t axis = normAxis(ctx.node.attrInt("axis", coerce_2d ? 1 : -1), r, ctx);
    const Shape& s = x.shape();
    const int64_t outer = product(s, 0, axis);
    const int64_t len = coerce_2d ? product(s, axis) : s[axis];
    const int64_t inner = coerce_2d ? 1 : product(s, axis + 1);
    Tensor y(x.dtype(), s);
    dispatchRef(x.dtype(), "softmax", [&](auto tag) {
      using T = decltype(tag);
      const T* xd = x.data<T>();
      T* yd = y.data<T>();
#pragma omp parallel for schedule(static) if (outer * inner > 1 && x.numel() > 4096)
      for (int64_t oi = 0; oi < outer * inner; ++oi) {
        const int64_t base = (oi / inner) * len * inner + oi % inner;
        const T* xp = xd + base;
        T* yp = yd + base;
        int64_t arg = 0;
        for (int64_t j = 1; j < len; ++j)
          if (xp[j * inner] > xp[arg * inner]) arg = j;
        const double mx = len ? static_cast<double>(xp[arg * inner]) : 0.0;
        if (op == SoftmaxOp::Hardmax) {
          for (int64_t j = 0; j < len; ++j) yp[j * inner] = T(j == arg ? 1 : 0);
          continue;
        }
        double sum = 0;
        for (int64_t j = 0; j < len; ++j) sum += std::exp(static_cast<double>(xp[j * inner]) - mx);
        const double log_sum = std::log(sum);
        for (int64_t j = 0; j < len; ++j) {
          const double v = static_cast<double>(xp[j * inner]) - mx;
          yp[j * inner] = static_cast<T>(op == SoftmaxOp::Softmax ? std::exp(v) / sum : v - log_sum);
        }
      }
    });
    setOutput(ctx, 0, y, half);
  };
}

// MaxUnpool: Y (zeros) with X's values at the flat indices I holds (MaxPool's Indices output: over
// the whole tensor). Y's shape: output_shape when given, else N, C and
// (in - 1) * stride + kernel - pad_begin - pad_end per spatial dim.
void maxUnpoolKernel(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const Tensor& ind = ctx.in(1);
  if (x.rank() < 3) ctx.error("input X has shape ", shapeStr(x.shape()), "; expected [N, C, D1, ...]");
  if (ind.dtype() != DType::Int64 || ind.shape() != x.shape())
    ctx.error("indices I are ", dtypeName(ind.dtype()), " ", shapeStr(ind.shape()), "; expected int64 of X's shape ", shapeStr(x.shape()));
  const size_t sp = x.rank() - 2;
  const auto kernel = ctx.node.attrInts("kernel_shape");
  if (kernel.size() != sp) ctx.error("kernel_shape has ", kernel.size(), " values for ", sp, " spatial dims");
  const auto pads = ctx.node.attrInts("pads", std::vector<int64_t>(2 * sp, 0));
  const auto strides = ctx.node.attrInts("strides", std::vector<int64_t>(sp, 1));
  if (pads.size() != 2 * sp || strides.size() != sp) ctx.error("pads or strides do not have one value per spatial dim");
  Shape out{x.dim(0), x.dim(1)};
  for (size_t d = 0; d < sp; ++d) out.push_back((x.dim(d + 2) - 1) * strides[d] + kernel[d] - pads[d] - pads[d + sp]);
  if (ctx.has(2)) {
    const Tensor& os = ctx.in(2);
    if (os.dtype() != DType::Int64 || os.rank() != 1 || os.numel() != static_cast<int64_t>(x.rank()))
      ctx.error("output_shape is ", dtypeName(os.dtype()), " ", shapeStr(os.shape()), "; expected int64 [", x.rank(), "]");
    out.assign(os.data<int64_t>(), os.data<int64_t>() + os.numel());
  }
  for (int64_t v : out)
    if (v < 0) ctx.error("the output shape ", shapeStr(out), " has a negative dim");
  Tensor y(x.dtype(), out);  // zeros
  const int64_t n = y.numel(), es = static_cast<int64_t>(dtypeSize(x.dtype()));
  const auto* xs = static_cast<const uint8_t*>(x.raw());
  auto* ys = static_cast<uint8_t*>(y.raw());
  for (int64_t i = 0; i < x.numel(); ++i) {
    const int64_t at = ind.data<int64_t>()[i];
    if (at < 0 || at >= n) ctx.error("index ", at, " (element ", i, " of I) is outside the output's ", n, " elements ", shapeStr(out));
    std::memcpy(ys + at * es, xs + i * es, static_cast<size_t>(es));
  }
  ctx.outputs[0] = std::move(y);
}

// Det: the determinant of each [M, M] matrix of X [..., M, M], by LU decomposition with partial
// pivoting in double.
void detKernel(KernelContext& ctx) {
  const bool half = isHalf(ctx);
  Tensor x_f;
  const Tensor& x = floatInput(ctx, 0, x_f);
  requireFloat(ctx, x, "input X");
  if (x.rank() < 2 || x.dim(x.rank() - 1) != x.dim(x.rank() - 2))
    ctx.error("input X has shape ", shapeStr(x.shape()), "; expected [..., M, M]");
  const int64_t m = x.dim(x.rank() - 1);
  const Shape out(x.shape().begin(), x.shape().end() - 2);
  const int64_t count = numelOf(out);
  Tensor y(x.dtype(), out);
  const Tensor xd = x.cast(DType::Float64);
  std::vector<double> a(static_cast<size_t>(m * m));
  for (int64_t b = 0; b < count; ++b) {
    std::copy_n(xd.data<double>() + b * m * m, m * m, a.begin());
    double det = 1;
    for (int64_t c = 0; c < m && det != 0; ++c) {
      int64_t piv = c;
      for (int64_t r = c + 1; r < m; ++r)
        if (std::fabs(a[static_cast<size_t>(r * m + c)]) > std::fabs(a[static_cast<size_t>(piv * m + c)])) piv = r;
      if (a[static_cast<size_t>(piv * m + c)] == 0) {
        det = 0;
        break;
      }
      if (piv != c) {
        for (int64_t k = 0; k < m; ++k) std::swap(a[static_cast<size_t>(piv * m + k)], a[static_cast<size_t>(c * m + k)]);
        det = -det;
      }
      const double p = a[static_cast<size_t>(c * m + c)];
      det *= p;
      for (int64_t r = c + 1; r < m; ++r) {
        const double f = a[static_cast<size_t>(r * m + c)] / p;
        for (int64_t k = c; k < m; ++k) a[static_cast<size_t>(r * m + k)] -= f * a[static_cast<size_t>(c * m + k)];
      }
    }
    if (x.dtype() == DType::Float32) y.data<float>()[b] = static_cast<float>(det);
    else y.data<double>()[b] = det;
  }
  setOutput(ctx, 0, y, half);
}

}  // namespace

void layerNormReference(KernelContext& ctx) { layerNormKernel(ctx); }
void softmaxReference(KernelContext& ctx, bool coerce_2d) { softmaxKernel(SoftmaxOp::Softmax, coerce_2d)(ctx); }

void registerNnKernels(KernelRegistry& r) {
  r.addFn("Conv", 1, 22, convKernel);
  r.addFn("ConvTranspose", 1, 22, convTransposeKernel);
  r.addFn("Gemm", 1, 22, gemmKernel);
  r.addFn("MatMul", 1, 22, matMulKernel);
  r.add("lwc.internal", "MatMul", 1, 1, "ref", [](const KernelInfo&) -> std::unique_ptr<Kernel> {
    return std::make_unique<RefKernel>(matMulBiasReference);
  });
  r.add("lwc.internal", "MatMulTransB", 1, 1, "ref", [](const KernelInfo&) -> std::unique_ptr<Kernel> {
    return std::make_unique<RefKernel>([](KernelContext& ctx) { matMulAnyKernel(ctx, true); });
  });
  r.add("lwc.internal", "MatMulMergeHeads", 1, 1, "ref", [](const KernelInfo&) -> std::unique_ptr<Kernel> {
    return std::make_unique<RefKernel>([](KernelContext& ctx) { matMulAnyKernel(ctx, false); });
  });
  for (const char* op : {"MaxPool", "AveragePool", "LpPool"}) r.add("", op, 1, 22, "ref", poolFactory(op));
  r.addFn("GlobalAveragePool", 1, 22, globalPoolKernel<false>);
  r.addFn("GlobalMaxPool", 1, 22, globalPoolKernel<true>);
  r.add("", "BatchNormalization", 1, 22, "ref", makeBatchNorm);
  r.addFn("InstanceNormalization", 1, 22, instanceNormKernel);
  r.addFn("MeanVarianceNormalization", 9, 22, meanVarianceNormKernel);
  r.addFn("MaxUnpool", 9, 22, maxUnpoolKernel);
  r.addFn("Det", 11, 22, detKernel);
  r.addFn("LayerNormalization", 17, 22, layerNormKernel);
  r.addFn("LayerNorm", 1, 1, layerNormKernel, kInternalDomain);  // the optimizer's fusion of the decomposed form
  r.addFn("LRN", 1, 22, lrnKernel);
  const std::pair<const char*, SoftmaxOp> softmaxes[] = {
      {"Softmax", SoftmaxOp::Softmax}, {"LogSoftmax", SoftmaxOp::LogSoftmax}, {"Hardmax", SoftmaxOp::Hardmax}};
  for (const auto& [op, kind] : softmaxes) {
    r.addFn(op, 1, 12, softmaxKernel(kind, true));
    r.addFn(op, 13, 22, softmaxKernel(kind, false));
  }
}

}  // namespace lwc::engine
