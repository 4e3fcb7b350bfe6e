// Reference kernels of the shape and data-movement family: Reshape, Transpose, Concat, Slice,
// Gather, Scatter, Pad, Resize ...
//
// Data movement is dtype-generic: elements are moved as bytes of dtypeSize(), so these kernels work
// for every element type (bool and float16 included) without per-type code. Only ops that look at
// values (TopK, ArgMax, CumSum, Range, linear Resize ...) dispatch on the type.
//
// Reshape, Flatten, Squeeze, Unsqueeze, Identity and Dropout are zero-copy: the output shares the
// input's buffer (kernels never write into their inputs, so sharing is safe). Every strided copy
// (Transpose, Slice, Expand, Tile, DepthToSpace ...) goes through viewCopy(), which coalesces
// dimensions and copies contiguous runs with memcpy.
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <optional>
#include <tuple>

#include "engine/kernels/common.h"
#include "lwc/model_io.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <emmintrin.h>
#define LWC_SHAPE_SSE2 1
#endif

namespace lwc::engine {

namespace {

constexpr int kMaxOpset = 22;
/// Shapes computed from data (shape inputs, repeats, ranges) above this many elements are refused
/// instead of allocated: a corrupt model must not take the machine down.
constexpr int64_t kMaxElements = int64_t{1} << 31;
/// Copies below this many bytes stay on one thread.
constexpr int64_t kParallelBytes = int64_t{1} << 20;

std::byte* bytesOf(Tensor& t) { return static_cast<std::byte*>(t.raw()); }
const std::byte* bytesOf(const Tensor& t) { return static_cast<const std::byte*>(t.raw()); }

/// Row-major element strides of a shape.
InlineVec<int64_t> stridesOf(const Shape& s) {
  InlineVec<int64_t> st(s.size());
  int64_t acc = 1;
  for (size_t k = s.size(); k-- > 0;) {
    st[k] = acc;
    acc *= s[k];
  }
  return st;
}

int64_t prod(std::span<const int64_t> s, size_t from, size_t to) {
  int64_t n = 1;
  for (size_t k = from; k < to; ++k) n *= s[k];
  return n;
}

/// Validates a shape that comes from data: no negative dimension, at most kMaxElements elements.
void checkShape(const Shape& s, const KernelContext& ctx, const char* what) {
  int64_t n = 1;
  for (int64_t d : s) {
    if (d < 0) ctx.error(what, " ", shapeStr(s), " has a negative dimension");
    if (d != 0 && n > kMaxElements / d)
      ctx.error(what, " ", shapeStr(s), " has more than 2^31 elements; refusing to allocate it");
    n *= d;
  }
}

/// Runs body(begin, end) over [0, n) on several threads when the work is large.
template <typename F>
void parallelRange(int64_t n, int64_t bytes, F&& body) {
  parallelRanges(n, bytes >= kParallelBytes && omp_get_max_threads() > 1 && !omp_in_parallel(), body);
}

template <typename T>
void copyStrided(std::byte* dst, const std::byte* src, int64_t n, int64_t stride) {
  T* d = reinterpret_cast<T*>(dst);
  const T* s = reinterpret_cast<const T*>(src);
  for (int64_t i = 0; i < n; ++i) d[i] = s[i * stride];
}

/// Copies n elements read `stride` elements apart into a contiguous destination.
void copyRow(std::byte* dst, const std::byte* src, int64_t n, int64_t stride, size_t es) {
  if (stride == 1) {
    std::memcpy(dst, src, static_cast<size_t>(n) * es);
    return;
  }
  switch (es) {
    case 1:
      return copyStrided<uint8_t>(dst, src, n, stride);
    case 2:
      return copyStrided<uint16_t>(dst, src, n, stride);
    case 4:
      return copyStrided<uint32_t>(dst, src, n, stride);
    case 8:
      return copyStrided<uint64_t>(dst, src, n, stride);
    default:
      for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * es, src + i * stride * es, es);
  }
}

/// `count` rows of B bytes read `step` bytes apart, written one after another; B known at compile
/// time, so each copy is a few vector moves instead of a call to memcpy.
template <size_t B>
void copyRowsOf(std::byte* dst, const std::byte* src, int64_t count, int64_t step) {
  for (int64_t j = 0; j < count; ++j) std::memcpy(dst + j * static_cast<int64_t>(B), src + j * step, B);
}

/// `count` contiguous rows of `row_bytes` read `step` bytes apart into a contiguous destination.
void copyRows(std::byte* dst, const std::byte* src, int64_t count, int64_t step, size_t row_bytes) {
  switch (row_bytes) {
    case 4: return copyRowsOf<4>(dst, src, count, step);
    case 8: return copyRowsOf<8>(dst, src, count, step);
    case 16: return copyRowsOf<16>(dst, src, count, step);
    case 32: return copyRowsOf<32>(dst, src, count, step);
    case 64: return copyRowsOf<64>(dst, src, count, step);
    case 128: return copyRowsOf<128>(dst, src, count, step);
    default:
      for (int64_t j = 0; j < count; ++j)
        std::memcpy(dst + j * static_cast<int64_t>(row_bytes), src + j * step, row_bytes);
  }
}

#ifdef LWC_SHAPE_SSE2
/// A 16 x 16 block of bytes: d[i * ds + j] = s[i + j * ss] for i, j < 16. Four rounds of byte
/// unpacks of register pairs (2k, 2k + 1) into k and k + 8 each move one bit of the row index into
/// the byte index and one of the column index into the register index, bit-reversed: so the rows
/// are loaded in bit-reversed order, and register r holds destination row rev4(r). 64 unpacks and
/// 32 moves per 256 bytes, where the element loop took about a cycle per byte (shufflenet_v2's
/// layout transposes of uint8 feature maps).
inline void transpose16x16(uint8_t* d, int64_t ds, const uint8_t* s, int64_t ss) {
  static constexpr int kRev4[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
  __m128i x[16], y[16];
  for (int k = 0; k < 16; ++k) x[k] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + kRev4[k] * ss));
  for (int round = 0; round < 4; ++round) {
    for (int k = 0; k < 8; ++k) {
      y[k] = _mm_unpacklo_epi8(x[2 * k], x[2 * k + 1]);
      y[k + 8] = _mm_unpackhi_epi8(x[2 * k], x[2 * k + 1]);
    }
    for (int k = 0; k < 16; ++k) x[k] = y[k];
  }
  for (int k = 0; k < 16; ++k) _mm_storeu_si128(reinterpret_cast<__m128i*>(d + kRev4[k] * ds), x[k]);
}

/// A 4 x 4 block of 4-byte elements (float32 feature maps): d[i * ds + j] = s[i + j * ss].
inline void transpose4x4(uint32_t* d, int64_t ds, const uint32_t* s, int64_t ss) {
  auto load = [&](int k) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k * ss)); };
  const __m128i r0 = load(0), r1 = load(1), r2 = load(2), r3 = load(3);
  const __m128i t0 = _mm_unpacklo_epi32(r0, r1), t1 = _mm_unpacklo_epi32(r2, r3);  // columns 0, 1
  const __m128i t2 = _mm_unpackhi_epi32(r0, r1), t3 = _mm_unpackhi_epi32(r2, r3);  // columns 2, 3
  _mm_storeu_si128(reinterpret_cast<__m128i*>(d), _mm_unpacklo_epi64(t0, t1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(d + ds), _mm_unpackhi_epi64(t0, t1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 2 * ds), _mm_unpacklo_epi64(t2, t3));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(d + 3 * ds), _mm_unpackhi_epi64(t2, t3));
}
#endif

/// dst[i * dst_stride + j] = src[i + j * src_stride] for i < a, j < n, in tiles that stay in cache
/// (bytes in 16 x 16 blocks, 4-byte elements in 4 x 4 blocks, where the CPU has SSE2).
template <typename T>
void transposeTiles(std::byte* dst, const std::byte* src, int64_t a, int64_t n, int64_t dst_stride,
                    int64_t src_stride) {
  constexpr int64_t kTile = 32;
  T* d = reinterpret_cast<T*>(dst);
  const T* s = reinterpret_cast<const T*>(src);
  for (int64_t i0 = 0; i0 < a; i0 += kTile)
    for (int64_t j0 = 0; j0 < n; j0 += kTile) {
      const int64_t i1 = std::min(a, i0 + kTile), j1 = std::min(n, j0 + kTile);
      int64_t i_done = i0, j_done = j0;  // [i0, i_done) x [j0, j_done) is written by whole blocks
#ifdef LWC_SHAPE_SSE2
      if constexpr (sizeof(T) == 1) {
        i_done = i0 + (i1 - i0) / 16 * 16, j_done = j0 + (j1 - j0) / 16 * 16;
        for (int64_t i = i0; i < i_done; i += 16)
          for (int64_t j = j0; j < j_done; j += 16)
            transpose16x16(reinterpret_cast<uint8_t*>(d + i * dst_stride + j), dst_stride,
                           reinterpret_cast<const uint8_t*>(s + i + j * src_stride), src_stride);
      } else if constexpr (sizeof(T) == 4) {
        i_done = i0 + (i1 - i0) / 4 * 4, j_done = j0 + (j1 - j0) / 4 * 4;
        for (int64_t i = i0; i < i_done; i += 4)
          for (int64_t j = j0; j < j_done; j += 4)
            transpose4x4(reinterpret_cast<uint32_t*>(d + i * dst_stride + j), dst_stride,
                         reinterpret_cast<const uint32_t*>(s + i + j * src_stride), src_stride);
      }
#endif
      for (int64_t i = i0; i < i1; ++i)
        for (int64_t j = i < i_done ? j_done : j0; j < j1; ++j) d[i * dst_stride + j] = s[i + j * src_stride];
    }
}

/// transposeTiles where the destination's rows hold N (2-4) elements, one from each of N source rows
/// (an image's planes interleaved into pixels: NCHW -> NHWC of RGB input). A fixed N lets the
/// compiler vectorize the interleave; the tiled loop ran its 3-element inner loop element by element
/// (a 224 x 224 x 3 uint8 image in 64 us on one thread).
template <typename T, int N>
LWC_AVX2_CLONE void interleaveRows(T* __restrict d, const T* __restrict s, int64_t a, int64_t src_stride) {
  for (int64_t i = 0; i < a; ++i)
    for (int j = 0; j < N; ++j) d[i * N + j] = s[i + j * src_stride];
}

/// interleaveRows where it applies (n 2-4, dst_stride == n); false otherwise.
template <typename T>
bool interleaved(std::byte* dst, const std::byte* src, int64_t a, int64_t n, int64_t dst_stride, int64_t src_stride) {
  T* d = reinterpret_cast<T*>(dst);
  const T* s = reinterpret_cast<const T*>(src);
  if (dst_stride != n) return false;
  switch (n) {
    case 2: return interleaveRows<T, 2>(d, s, a, src_stride), true;
    case 3: return interleaveRows<T, 3>(d, s, a, src_stride), true;
    case 4: return interleaveRows<T, 4>(d, s, a, src_stride), true;
    default: return false;
  }
}

/// dst[i * dst_stride + j] = src[i + j * src_stride]: interleaveRows where it applies, else transposeTiles.
template <typename T>
void transposeRows(std::byte* dst, const std::byte* src, int64_t a, int64_t n, int64_t dst_stride, int64_t src_stride) {
  if (!interleaved<T>(dst, src, a, n, dst_stride, src_stride)) transposeTiles<T>(dst, src, a, n, dst_stride, src_stride);
}

/// The case of viewCopy where the inner destination axis is strided in the source but another
/// axis p is contiguous there (NCHW <-> NHWC): a batch of 2-D transposes of axes p and last.
void tiledCopy(std::byte* dst, const std::byte* src, std::span<const int64_t> dims, std::span<const int64_t> strides,
               size_t p, size_t es) {
  const size_t r = dims.size();
  InlineVec<int64_t> dst_strides(r);
  for (size_t k = r; k-- > 0;) dst_strides[k] = k + 1 == r ? 1 : dst_strides[k + 1] * dims[k + 1];
  InlineVec<size_t> rest;
  for (size_t k = 0; k + 1 < r; ++k)
    if (k != p) rest.push_back(k);
  int64_t jobs = 1;
  for (size_t k : rest) jobs *= dims[k];
  const int64_t a = dims[p], n = dims[r - 1], total = jobs * a * n * static_cast<int64_t>(es);
  // Work units: each job's axis p cut into slices of kSlice rows, so that one image (jobs = 1,
  // e.g. a batch-1 NCHW -> NHWC) still spreads over the threads.
  constexpr int64_t kSlice = 256;
  const int64_t slices = (a + kSlice - 1) / kSlice;
  parallelRange(jobs * slices, total, [&](int64_t u0, int64_t u1) {
    for (int64_t unit = u0; unit < u1; ++unit) {
      const int64_t job = unit / slices, i0 = (unit % slices) * kSlice, rows = std::min(kSlice, a - i0);
      int64_t rem = job, soff = i0 * strides[p], doff = i0 * dst_strides[p];
      for (size_t i = rest.size(); i-- > 0;) {
        const size_t k = rest[i];
        soff += (rem % dims[k]) * strides[k];
        doff += (rem % dims[k]) * dst_strides[k];
        rem /= dims[k];
      }
      std::byte* d = dst + doff * static_cast<int64_t>(es);
      const std::byte* s = src + soff * static_cast<int64_t>(es);
      switch (es) {
        case 1:
          transposeRows<uint8_t>(d, s, rows, n, dst_strides[p], strides[r - 1]);
          break;
        case 2:
          transposeRows<uint16_t>(d, s, rows, n, dst_strides[p], strides[r - 1]);
          break;
        case 4:
          transposeRows<uint32_t>(d, s, rows, n, dst_strides[p], strides[r - 1]);
          break;
        default:
          transposeRows<uint64_t>(d, s, rows, n, dst_strides[p], strides[r - 1]);
          break;
      }
    }
  });
}

/// Copies the n-d view of `src` with element strides `st` (any sign, 0 = broadcast) into the
/// contiguous `dst` of shape `shape`. Size-1 dimensions are dropped and dimensions that are
/// contiguous in both are merged, so the inner loop is as long as possible.
void viewCopy(std::byte* dst, const std::byte* src, std::span<const int64_t> shape, std::span<const int64_t> st,
              size_t es) {
  InlineVec<int64_t> dims, strides;
  for (size_t k = 0; k < shape.size(); ++k) {
    if (shape[k] == 0) return;
    if (shape[k] == 1) continue;
    if (!dims.empty() && strides.back() == st[k] * shape[k]) {
      dims.back() *= shape[k];
      strides.back() = st[k];
    } else {
      dims.push_back(shape[k]);
      strides.push_back(st[k]);
    }
  }
  if (dims.empty()) {
    std::memcpy(dst, src, es);
    return;
  }
  const size_t outer = dims.size() - 1;
  const int64_t n = dims.back(), s = strides.back();
  if (s != 1 && n >= 2 && es <= 8 && (es & (es - 1)) == 0)
    for (size_t p = 0; p < outer; ++p)
      if (strides[p] == 1 && dims[p] >= 8) return tiledCopy(dst, src, dims, strides, p, es);
  const int64_t rows = prod(dims, 0, outer);
  if (s == 1 && outer > 0) {
    // Contiguous source rows (e.g. attention's head split, inner axis kept): the last outer axis
    // is walked in one loop of fixed-size copies, in units of up to kChunk rows; the rows before
    // it by an odometer per unit. (Per row, the index update and the memcpy call had cost more
    // than the 64-byte copies themselves.)
    constexpr int64_t kChunk = 256;
    const size_t last = outer - 1;
    const int64_t count = dims[last], step = strides[last] * static_cast<int64_t>(es);
    const int64_t chunks = (count + kChunk - 1) / kChunk, blocks = rows / count;
    const size_t row_bytes = static_cast<size_t>(n) * es;
    parallelRange(blocks * chunks, rows * n * static_cast<int64_t>(es), [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t block = u / chunks, j0 = (u % chunks) * kChunk, m = std::min(kChunk, count - j0);
        int64_t off = j0 * strides[last], rest = block;
        for (size_t k = last; k-- > 0;) {
          off += (rest % dims[k]) * strides[k];
          rest /= dims[k];
        }
        copyRows(dst + (block * count + j0) * static_cast<int64_t>(row_bytes), src + off * static_cast<int64_t>(es), m,
                 step, row_bytes);
      }
    });
    return;
  }
  parallelRange(rows, rows * n * static_cast<int64_t>(es), [&](int64_t r0, int64_t r1) {
    InlineVec<int64_t> idx(outer);
    int64_t off = 0, r = r0;
    for (size_t k = outer; k-- > 0;) {
      idx[k] = r % dims[k];
      r /= dims[k];
      off += idx[k] * strides[k];
    }
    for (int64_t row = r0; row < r1; ++row) {
      copyRow(dst + row * n * es, src + off * static_cast<int64_t>(es), n, s, es);
      for (size_t k = outer; k-- > 0;) {
        off += strides[k];
        if (++idx[k] < dims[k]) break;
        off -= strides[k] * dims[k];
        idx[k] = 0;
      }
    }
  });
}

/// Fills n elements with the element at `value` (es bytes).
void fillElems(std::byte* dst, int64_t n, const std::byte* value, size_t es) {
  bool zero = true;
  for (size_t b = 0; b < es; ++b) zero = zero && value[b] == std::byte{0};
  if (zero) {
    std::memset(dst, 0, static_cast<size_t>(n) * es);
    return;
  }
  for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * es, value, es);
}

/// A one-element tensor of dtype `dt` holding `v` (the value 1 of bool is true).
Tensor scalarOf(DType dt, double v) { return Tensor::scalar<double>(v).cast(dt); }

/// Attribute ints (opset where the value was an attribute) or input ints (later opsets).
std::vector<int64_t> intsFrom(const KernelContext& ctx, bool from_input, size_t input, const char* attr) {
  if (from_input) return ctx.has(input) ? readInts(ctx.in(input), ctx) : std::vector<int64_t>{};
  return ctx.node.attrInts(attr);
}

/// Normalises a list of axes for rank r; errors on out-of-range and repeated axes.
std::vector<int64_t> normAxes(const std::vector<int64_t>& axes, int64_t r, const KernelContext& ctx) {
  std::vector<int64_t> out;
  for (int64_t a : axes) {
    if (a < -r || a >= r) ctx.error("axis ", a, " is out of range for rank ", r);
    const int64_t n = a < 0 ? a + r : a;
    if (std::find(out.begin(), out.end(), n) != out.end()) ctx.error("axis ", a, " is repeated");
    out.push_back(n);
  }
  return out;
}

/// Normalises an index into [0, dim); errors when out of range.
int64_t normIndex(int64_t i, int64_t dim, const KernelContext& ctx) {
  if (i < -dim || i >= dim) ctx.error("index ", i, " is out of range for a dimension of size ", dim);
  return i < 0 ? i + dim : i;
}

// ---------------------------------------------------------------------------------------------
// Zero-copy reshapes

void reshape(KernelContext& ctx, bool shape_from_input) {
  const Tensor& x = ctx.in(0);
  const std::vector<int64_t> spec = shape_from_input ? readInts(ctx.in(1), ctx) : ctx.node.attrInts("shape");
  const bool allowzero = ctx.node.attrInt("allowzero", 0) != 0;
  Shape out(spec.size());
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < spec.size(); ++i) {
    int64_t d = spec[i];
    if (d == 0 && !allowzero) {
      if (i >= x.rank())
        ctx.error("shape ", shapeStr(spec), " copies dimension ", i, " (0) but the input has rank ", x.rank());
      d = x.dim(i);
    }
    if (d == -1) {
      if (infer >= 0) ctx.error("shape ", shapeStr(spec), " has more than one -1");
      infer = static_cast<int64_t>(i);
      continue;
    }
    if (d < 0) ctx.error("shape ", shapeStr(spec), " has a negative dimension");
    if (d != 0 && known > (int64_t{1} << 62) / d)
      ctx.error("cannot reshape ", shapeStr(x.shape()), " (", x.numel(), " elements) to ", shapeStr(spec));
    out[i] = d;
    known *= d;
  }
  if (infer >= 0) {
    if (known == 0) {
      if (x.numel() != 0) ctx.error("cannot infer the -1 of shape ", shapeStr(spec), " next to a zero dimension");
      out[infer] = 0;
    } else {
      if (x.numel() % known != 0)
        ctx.error("cannot reshape ", shapeStr(x.shape()), " (", x.numel(), " elements) to ", shapeStr(spec));
      out[infer] = x.numel() / known;
    }
  }
  if (numelOf(out) != x.numel())
    ctx.error("cannot reshape ", shapeStr(x.shape()), " (", x.numel(), " elements) to ", shapeStr(out), " (",
              numelOf(out), " elements)");
  ctx.outputs[0] = x.reshaped(std::move(out));
}

void flatten(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x.rank());
  int64_t axis = ctx.node.attrInt("axis", 1);
  if (axis < -r || axis > r) ctx.error("axis ", axis, " is out of range for rank ", r);
  if (axis < 0) axis += r;
  const Shape& s = x.shape();
  ctx.outputs[0] = x.reshaped({prod(s, 0, axis), prod(s, axis, s.size())});
}

void squeeze(KernelContext& ctx, bool axes_from_input) {
  const Tensor& x = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x.rank());
  const std::vector<int64_t> axes = normAxes(intsFrom(ctx, axes_from_input, 1, "axes"), r, ctx);
  Shape out;
  for (int64_t k = 0; k < r; ++k) {
    const bool listed = std::find(axes.begin(), axes.end(), k) != axes.end();
    if (listed && x.dim(k) != 1)
      ctx.error("cannot squeeze axis ", k, " of size ", x.dim(k), " in ", shapeStr(x.shape()));
    if (listed || (axes.empty() && x.dim(k) == 1)) continue;
    out.push_back(x.dim(k));
  }
  ctx.outputs[0] = x.reshaped(std::move(out));
}

void unsqueeze(KernelContext& ctx, bool axes_from_input) {
  const Tensor& x = ctx.in(0);
  const std::vector<int64_t> raw = intsFrom(ctx, axes_from_input, 1, "axes");
  const int64_t r = static_cast<int64_t>(x.rank() + raw.size());
  const std::vector<int64_t> axes = normAxes(raw, r, ctx);
  Shape out;
  size_t next = 0;
  for (int64_t k = 0; k < r; ++k)
    out.push_back(std::find(axes.begin(), axes.end(), k) != axes.end() ? 1 : x.dim(next++));
  ctx.outputs[0] = x.reshaped(std::move(out));
}

bool readTruth(const Tensor& t) { return t.numel() > 0 && t.at(0) != 0; }

void identity(KernelContext& ctx) { ctx.outputs[0] = ctx.in(0); }

void dropout(KernelContext& ctx, int since) {
  const Tensor& x = ctx.in(0);
  if (since >= 12 && ctx.has(2) && readTruth(ctx.in(2))) {
    const double ratio = ctx.has(1) ? ctx.in(1).at(0) : 0.5;
    if (ratio != 0)
      ctx.error("training-mode Dropout (random) is not supported by the lwc engine; export the model for inference");
  }
  ctx.outputs[0] = x;
  if (ctx.numOutputs() > 1) {
    // The mask is bool from opset 10, the input's type before.
    const DType mt = since >= 10 ? DType::Bool : x.dtype();
    Tensor& m = ctx.alloc(1, mt, x.shape());
    const Tensor one = scalarOf(mt, 1);
    fillElems(bytesOf(m), m.numel(), bytesOf(one), dtypeSize(mt));
  }
}

// ---------------------------------------------------------------------------------------------
// Copies: Transpose, Concat, Split, Slice, Expand, Tile, DepthToSpace, SpaceToDepth

void transpose(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x.rank());
  // Read in place (InlineVec, the attribute's own array): a Transpose makes no vectors per call but
  // its output's shape.
  InlineVec<int64_t> perm(ctx.node.attrIntsView("perm"));
  if (perm.empty())
    for (int64_t k = r - 1; k >= 0; --k) perm.push_back(k);
  InlineVec<uint8_t> seen(static_cast<size_t>(r), 0);
  bool ok = static_cast<int64_t>(perm.size()) == r;
  for (size_t k = 0; ok && k < perm.size(); ++k) {
    ok = perm[k] >= 0 && perm[k] < r && !seen[perm[k]];
    if (ok) seen[perm[k]] = 1;
  }
  if (!ok)
    ctx.error("perm ", shapeStr(Shape(perm.begin(), perm.end())), " is not a permutation of the ", r, " axes of ",
              shapeStr(x.shape()));
  const auto xs = stridesOf(x.shape());
  Shape out(r);
  InlineVec<int64_t> st(static_cast<size_t>(r));
  for (int64_t k = 0; k < r; ++k) {
    out[k] = x.dim(perm[k]);
    st[k] = xs[perm[k]];
  }
  // A permutation that only moves axes of size 1 keeps the elements in memory order (e.g. NCHW ->
  // NHWC of a [N, C, 1, 1] pooled tensor): a view of the same buffer, as Reshape gives.
  bool same_order = true;
  for (int64_t k = 0, last = -1; k < r && same_order; ++k) {
    if (out[k] == 1) continue;
    same_order = perm[k] > last;
    last = perm[k];
  }
  if (same_order) {
    ctx.outputs[0] = x.reshaped(std::move(out));
    return;
  }
  Tensor& y = ctx.allocUninit(0, x.dtype(), std::move(out));
  viewCopy(bytesOf(y), bytesOf(x), y.shape(), st, dtypeSize(x.dtype()));
}

void concat(KernelContext& ctx, int since) {
  const Tensor& x0 = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x0.rank());
  if (r == 0) ctx.error("cannot concatenate scalars");
  if (since >= 4 && !ctx.node.hasAttr("axis")) ctx.error("attribute 'axis' is required");
  const int64_t axis = normAxis(ctx.node.attrInt("axis", 1), r, ctx);
  Shape out = x0.shape();
  out[axis] = 0;
  for (size_t i = 0; i < ctx.inputs.size(); ++i) {
    const Tensor& x = ctx.in(i);
    bool ok = x.dtype() == x0.dtype() && x.rank() == x0.rank();
    for (int64_t k = 0; ok && k < r; ++k) ok = k == axis || x.dim(k) == x0.dim(k);
    if (!ok)
      ctx.error("input ", i, " (", dtypeName(x.dtype()), " ", shapeStr(x.shape()), ") does not match input 0 (",
                dtypeName(x0.dtype()), " ", shapeStr(x0.shape()), ") outside axis ", axis);
    out[axis] += x.dim(axis);
  }
  Tensor& y = ctx.allocUninit(0, x0.dtype(), out);  // every byte is copied below
  const size_t es = dtypeSize(y.dtype());
  const int64_t rows = prod(out, 0, axis);
  const int64_t row_bytes = prod(out, axis, r) * static_cast<int64_t>(es);
  std::byte* dst = bytesOf(y);
  // Each input's bytes per row, worked out once (NHWC concatenation along the channels copies a
  // few hundred bytes per pixel, millions of times).
  std::vector<std::pair<const std::byte*, int64_t>> srcs;
  for (size_t i = 0; i < ctx.inputs.size(); ++i)
    srcs.emplace_back(bytesOf(*ctx.inputs[i]), prod(ctx.inputs[i]->shape(), axis, r) * static_cast<int64_t>(es));
  parallelRange(rows, static_cast<int64_t>(y.nbytes()), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      std::byte* d = dst + row * row_bytes;
      for (const auto& [src, chunk] : srcs) {
        std::memcpy(d, src + row * chunk, static_cast<size_t>(chunk));
        d += chunk;
      }
    }
  });
}

void split(KernelContext& ctx, int since) {
  const Tensor& x = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x.rank());
  const int64_t axis = normAxis(ctx.node.attrInt("axis", 0), r, ctx);
  const int64_t dim = x.dim(axis);
  const int64_t n = static_cast<int64_t>(ctx.numOutputs());
  std::vector<int64_t> sizes;
  if (since >= 13) {
    if (ctx.has(1)) sizes = readInts(ctx.in(1), ctx);
  } else if (ctx.node.hasAttr("split")) {
    sizes = ctx.node.attrInts("split");
  } else if (ctx.has(1)) {
    sizes = readInts(ctx.in(1), ctx);  // opset 1 took the sizes as an optional input
  }
  if (sizes.empty()) {
    if (since >= 18 && ctx.node.hasAttr("num_outputs")) {
      if (ctx.node.attrInt("num_outputs", 0) != n)
        ctx.error("num_outputs is ", ctx.node.attrInt("num_outputs", 0), " but the node has ", n, " outputs");
      // Chunks of ceil(dim / n); the last one takes what is left.
      const int64_t chunk = (dim + n - 1) / n;
      sizes.assign(n, chunk);
      sizes.back() = dim - chunk * (n - 1);
      if (sizes.back() < 0) ctx.error("cannot split a dimension of ", dim, " into ", n, " chunks of ", chunk);
    } else {
      if (dim % n != 0) ctx.error("cannot split a dimension of ", dim, " into ", n, " equal parts");
      sizes.assign(n, dim / n);
    }
  }
  if (static_cast<int64_t>(sizes.size()) != n)
    ctx.error("split has ", sizes.size(), " sizes but the node has ", n, " outputs");
  int64_t total = 0;
  for (int64_t s : sizes) {
    if (s < 0 || s > dim) ctx.error("split ", shapeStr(sizes), " does not fit the dimension ", dim, " of axis ", axis);
    total += s;
  }
  if (total != dim) ctx.error("split ", shapeStr(sizes), " does not add up to the dimension ", dim, " of axis ", axis);
  const size_t es = dtypeSize(x.dtype());
  const int64_t rows = prod(x.shape(), 0, axis), inner_elems = prod(x.shape(), axis + 1, r);
  const int64_t inner = inner_elems * static_cast<int64_t>(es);
  int64_t offset = 0;
  // The copied parts: (output, chunk bytes per row, offset along the axis).
  std::vector<std::tuple<std::byte*, int64_t, int64_t>> parts;
  for (int64_t i = 0; i < n; ++i) {
    Shape s = x.shape();
    s[axis] = sizes[i];
    if (rows == 1 && numelOf(s) > 0) {  // the outermost axis of any size: contiguous parts, views
      ctx.outputs[static_cast<size_t>(i)] = x.view(offset * inner_elems, std::move(s));
      offset += sizes[i];
      continue;
    }
    Tensor& y = ctx.allocUninit(i, x.dtype(), s);  // every byte is copied below
    parts.emplace_back(bytesOf(y), sizes[i] * inner, offset);
    offset += sizes[i];
  }
  if (parts.empty()) return;
  // Row by row over the threads, each input row read once (a transformer's q, k, v split of
  // [N, 197, 576] floats went at 26 GB/s on one thread, zero-filling its outputs first).
  const std::byte* src = bytesOf(x);
  parallelRange(rows, static_cast<int64_t>(x.nbytes()), [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row)
      for (const auto& [dst, chunk, off] : parts)
        if (chunk > 0) std::memcpy(dst + row * chunk, src + (row * dim + off) * inner, static_cast<size_t>(chunk));
  });
}

void slice(KernelContext& ctx, bool from_inputs) {
  const Tensor& x = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x.rank());
  std::vector<int64_t> starts, ends, axes, steps;
  if (from_inputs) {
    starts = readInts(ctx.in(1), ctx);
    ends = readInts(ctx.in(2), ctx);
    if (ctx.has(3)) axes = readInts(ctx.in(3), ctx);
    if (ctx.has(4)) steps = readInts(ctx.in(4), ctx);
  } else {
    starts = ctx.node.attrInts("starts");
    ends = ctx.node.attrInts("ends");
    axes = ctx.node.attrInts("axes");
  }
  const size_t m = starts.size();
  if (ends.size() != m) ctx.error("starts has ", m, " values but ends has ", ends.size());
  // Defaults only where the input is not given: an empty axes or steps tensor beside non-empty
  // starts is a length mismatch (as ONNX Runtime refuses it), not "every axis" or "steps of 1".
  if (axes.empty() && !(from_inputs && ctx.has(3)))
    for (size_t i = 0; i < m; ++i) axes.push_back(static_cast<int64_t>(i));
  if (steps.empty() && !(from_inputs && ctx.has(4))) steps.assign(m, 1);
  if (axes.size() != m || steps.size() != m)
    ctx.error("starts, ends, axes and steps must have the same length (", m, ", ", ends.size(), ", ", axes.size(), ", ",
              steps.size(), ")");
  axes = normAxes(axes, r, ctx);
  Shape out = x.shape();
  std::vector<int64_t> begin(r, 0), step(r, 1);
  for (size_t i = 0; i < m; ++i) {
    const int64_t a = axes[i], dim = x.dim(a);
    const int64_t s = std::max(steps[i], -std::numeric_limits<int64_t>::max());
    if (s == 0) ctx.error("step of axis ", a, " is 0");
    int64_t b = starts[i], e = ends[i];
    if (b < 0) b += dim;
    if (e < 0) e += dim;
    if (s > 0) {
      b = std::clamp<int64_t>(b, 0, dim);
      e = std::clamp<int64_t>(e, 0, dim);
      out[a] = e > b ? (e - b - 1) / s + 1 : 0;
    } else if (dim == 0) {
      b = 0;
      out[a] = 0;
    } else {
      b = std::clamp<int64_t>(b, 0, dim - 1);
      e = std::clamp<int64_t>(e, -1, dim - 1);
      out[a] = b > e ? (b - e - 1) / -s + 1 : 0;
    }
    begin[a] = b;
    step[a] = s;
  }
  const auto xs = stridesOf(x.shape());
  int64_t offset = 0;
  std::vector<int64_t> st(r);
  for (int64_t k = 0; k < r; ++k) {
    offset += begin[k] * xs[k];
    st[k] = step[k] * xs[k];
  }
  // A contiguous block (single indices on the outer axes, then one range with step 1, then whole
  // axes) is a view of x, no copy.
  int64_t k0 = 0;
  while (k0 < r && out[k0] == 1) ++k0;
  bool block = k0 == r || step[k0] == 1;
  for (int64_t k = k0 + 1; block && k < r; ++k) block = out[k] == x.dim(k) && step[k] == 1;
  if (block && numelOf(out) > 0) {
    ctx.outputs[0] = x.view(offset, std::move(out));
    return;
  }
  Tensor& y = ctx.allocUninit(0, x.dtype(), out);  // viewCopy writes every element
  if (y.numel() == 0) return;
  const size_t es = dtypeSize(x.dtype());
  viewCopy(bytesOf(y), bytesOf(x) + offset * static_cast<int64_t>(es), out, st, es);
}

void expand(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const Shape shape = readInts(ctx.in(1), ctx);
  checkShape(shape, ctx, "shape");
  const Shape out = broadcastShapes(x.shape(), shape, ctx);
  checkShape(out, ctx, "output shape");
  Tensor& y = ctx.alloc(0, x.dtype(), out);
  viewCopy(bytesOf(y), bytesOf(x), out, broadcastStrides(x.shape(), out), dtypeSize(x.dtype()));
}

void tile(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const std::vector<int64_t> reps = readInts(ctx.in(1), ctx);
  if (reps.size() != x.rank()) ctx.error("repeats has ", reps.size(), " values for an input of rank ", x.rank());
  const auto xs = stridesOf(x.shape());
  // Tiling is a broadcast copy of the view [rep0, d0, rep1, d1, ...] with stride 0 on the repeats.
  Shape view, out;
  std::vector<int64_t> st;
  for (size_t k = 0; k < reps.size(); ++k) {
    if (reps[k] < 0) ctx.error("repeats ", shapeStr(reps), " has a negative value");
    if (x.dim(k) != 0 && reps[k] > kMaxElements / x.dim(k)) ctx.error("repeats ", shapeStr(reps), " are too large");
    view.insert(view.end(), {reps[k], x.dim(k)});
    st.insert(st.end(), {0, xs[k]});
    out.push_back(reps[k] * x.dim(k));
  }
  checkShape(out, ctx, "output shape");
  Tensor& y = ctx.alloc(0, x.dtype(), out);
  viewCopy(bytesOf(y), bytesOf(x), view, st, dtypeSize(x.dtype()));
}

void depthToSpace(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const int64_t b = ctx.node.attrInt("blocksize", 0);
  const std::string mode = ctx.node.attrString("mode", "DCR");
  if (x.rank() != 4) ctx.error("expects a 4-D NCHW input, got ", shapeStr(x.shape()));
  if (b <= 0 || x.dim(1) % (b * b) != 0)
    ctx.error("blocksize ", b, " does not divide the ", x.dim(1), " channels into blocks");
  if (mode != "DCR" && mode != "CRD") ctx.error("mode '", mode, "' is not DCR or CRD");
  const int64_t n = x.dim(0), c = x.dim(1) / (b * b), h = x.dim(2), w = x.dim(3), hw = h * w;
  // Output viewed as [N, c, H, b1, W, b2]; strides of the matching input elements.
  const Shape view{n, c, h, b, w, b};
  const std::vector<int64_t> st = mode == "DCR" ? std::vector<int64_t>{x.dim(1) * hw, hw, w, b * c * hw, 1, c * hw}
                                                : std::vector<int64_t>{x.dim(1) * hw, b * b * hw, w, b * hw, 1, hw};
  Tensor& y = ctx.alloc(0, x.dtype(), {n, c, h * b, w * b});
  viewCopy(bytesOf(y), bytesOf(x), view, st, dtypeSize(x.dtype()));
}

void spaceToDepth(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const int64_t b = ctx.node.attrInt("blocksize", 0);
  if (x.rank() != 4) ctx.error("expects a 4-D NCHW input, got ", shapeStr(x.shape()));
  if (b <= 0 || x.dim(2) % b != 0 || x.dim(3) % b != 0)
    ctx.error("blocksize ", b, " does not divide the spatial size ", x.dim(2), "x", x.dim(3));
  const int64_t n = x.dim(0), c = x.dim(1), hh = x.dim(2), ww = x.dim(3), h = hh / b, w = ww / b;
  // Output viewed as [N, b1, b2, C, h, w].
  const Shape view{n, b, b, c, h, w};
  const std::vector<int64_t> st{c * hh * ww, ww, 1, hh * ww, b * ww, b};
  Tensor& y = ctx.alloc(0, x.dtype(), {n, c * b * b, h, w});
  viewCopy(bytesOf(y), bytesOf(x), view, st, dtypeSize(x.dtype()));
}

void reverseSequence(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const int64_t batch_axis = ctx.node.attrInt("batch_axis", 1), time_axis = ctx.node.attrInt("time_axis", 0);
  if (x.rank() < 2) ctx.error("expects a tensor of rank >= 2, got ", shapeStr(x.shape()));
  if (batch_axis + time_axis != 1 || batch_axis * time_axis != 0)
    ctx.error("batch_axis and time_axis must be 0 and 1 in some order, got ", batch_axis, " and ", time_axis);
  const int64_t nb = x.dim(batch_axis), nt = x.dim(time_axis);
  const std::vector<int64_t> lens = readInts(ctx.in(1), ctx);
  if (static_cast<int64_t>(lens.size()) != nb)
    ctx.error("sequence_lens has ", lens.size(), " values for a batch of ", nb);
  for (int64_t l : lens)
    if (l < 0 || l > nt) ctx.error("sequence length ", l, " is out of range for a time axis of ", nt);
  Tensor& y = ctx.alloc(0, x.dtype(), x.shape());
  const int64_t inner = prod(x.shape(), 2, x.rank()) * static_cast<int64_t>(dtypeSize(x.dtype()));
  auto offset = [&](int64_t b, int64_t t) { return (batch_axis == 0 ? b * nt + t : t * nb + b) * inner; };
  for (int64_t b = 0; b < nb; ++b)
    for (int64_t t = 0; t < nt; ++t)
      std::memcpy(bytesOf(y) + offset(b, t), bytesOf(x) + offset(b, t < lens[b] ? lens[b] - 1 - t : t), inner);
}

// ---------------------------------------------------------------------------------------------
// Indexing: Gather*, Scatter*, Compress

void compress(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const Tensor& cond = ctx.in(1);
  if (cond.rank() != 1) ctx.error("condition must be 1-D, got ", shapeStr(cond.shape()));
  const size_t es = dtypeSize(x.dtype());
  // Without an axis the input is flattened; a condition shorter than the axis keeps only its prefix.
  const bool flat = !ctx.node.hasAttr("axis");
  const int64_t r = static_cast<int64_t>(x.rank());
  const int64_t axis = flat ? 0 : normAxis(ctx.node.attrInt("axis", 0), r, ctx);
  const Shape shape = flat ? Shape{x.numel()} : x.shape();
  const int64_t dim = shape[axis];
  if (cond.numel() > dim) ctx.error("condition has ", cond.numel(), " values for an axis of size ", dim);
  std::vector<int64_t> keep;
  for (int64_t j = 0; j < cond.numel(); ++j)
    if (cond.at(j) != 0) keep.push_back(j);
  Shape out = shape;
  out[axis] = static_cast<int64_t>(keep.size());
  Tensor& y = ctx.alloc(0, x.dtype(), out);
  const int64_t rows = prod(shape, 0, axis), inner = prod(shape, axis + 1, shape.size()) * static_cast<int64_t>(es);
  const int64_t m = static_cast<int64_t>(keep.size());
  for (int64_t o = 0; o < rows; ++o)
    for (int64_t j = 0; j < m; ++j)
      std::memcpy(bytesOf(y) + (o * m + j) * inner, bytesOf(x) + (o * dim + keep[j]) * inner, inner);
}

void gather(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const Tensor& ind = ctx.in(1);
  const int64_t r = static_cast<int64_t>(x.rank());
  if (r == 0) ctx.error("cannot gather from a scalar");
  const int64_t axis = normAxis(ctx.node.attrInt("axis", 0), r, ctx);
  const int64_t dim = x.dim(axis);
  std::vector<int64_t> idx = readInts(ind, ctx);
  for (auto& i : idx) i = normIndex(i, dim, ctx);
  Shape out(x.shape().begin(), x.shape().begin() + axis);
  out.insert(out.end(), ind.shape().begin(), ind.shape().end());
  out.insert(out.end(), x.shape().begin() + axis + 1, x.shape().end());
  const int64_t rows = prod(x.shape(), 0, axis), n = static_cast<int64_t>(idx.size());
  const int64_t inner_elems = prod(x.shape(), axis + 1, r);
  // Consecutive indices on the outermost axis of any size (one index of a stacked q, k, v) select
  // one contiguous block: a view of it, no copy.
  bool block = rows == 1 && n > 0;
  for (int64_t k = 1; block && k < n; ++k) block = idx[k] == idx[0] + k;
  if (block && numelOf(out) > 0) {
    ctx.outputs[0] = x.view(idx[0] * inner_elems, std::move(out));
    return;
  }
  Tensor& y = ctx.alloc(0, x.dtype(), out);
  const int64_t inner = inner_elems * static_cast<int64_t>(dtypeSize(x.dtype()));
  const std::byte* src = bytesOf(x);
  std::byte* dst = bytesOf(y);
  parallelRange(rows * n, static_cast<int64_t>(y.nbytes()), [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) std::memcpy(dst + t * inner, src + ((t / n) * dim + idx[t % n]) * inner, inner);
  });
}

void gatherElements(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const Tensor& ind = ctx.in(1);
  const int64_t r = static_cast<int64_t>(x.rank());
  if (r == 0) ctx.error("cannot gather from a scalar");
  const int64_t axis = normAxis(ctx.node.attrInt("axis", 0), r, ctx);
  bool ok = ind.rank() == x.rank();
  for (int64_t k = 0; ok && k < r; ++k) ok = k == axis || ind.dim(k) <= x.dim(k);
  if (!ok) ctx.error("indices ", shapeStr(ind.shape()), " do not fit data ", shapeStr(x.shape()));
  const std::vector<int64_t> idx = readInts(ind, ctx);
  Tensor& y = ctx.alloc(0, x.dtype(), ind.shape());
  const size_t es = dtypeSize(x.dtype());
  const auto xs = stridesOf(x.shape());
  std::vector<int64_t> pos(r, 0);
  int64_t base = 0;  // offset of pos in x, without the axis term
  for (int64_t t = 0; t < y.numel(); ++t) {
    const int64_t off = base + normIndex(idx[t], x.dim(axis), ctx) * xs[axis];
    std::memcpy(bytesOf(y) + t * es, bytesOf(x) + off * es, es);
    for (int64_t k = r - 1; k >= 0; --k) {
      if (k != axis) base += xs[k];
      if (++pos[k] < ind.dim(k)) break;
      if (k != axis) base -= xs[k] * ind.dim(k);
      pos[k] = 0;
    }
  }
}

void gatherND(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const Tensor& ind = ctx.in(1);
  const int64_t r = static_cast<int64_t>(x.rank()), q = static_cast<int64_t>(ind.rank());
  const int64_t b = ctx.node.attrInt("batch_dims", 0);
  if (q < 1 || b < 0 || b >= std::min(r, q))
    ctx.error("batch_dims ", b, " does not fit data rank ", r, " and indices rank ", q);
  const int64_t k = ind.dim(q - 1);
  if (k < 1 || k > r - b)
    ctx.error("index tuples of length ", k, " do not fit data ", shapeStr(x.shape()), " with batch_dims ", b);
  for (int64_t d = 0; d < b; ++d)
    if (x.dim(d) != ind.dim(d))
      ctx.error("batch dimensions of data ", shapeStr(x.shape()), " and indices ", shapeStr(ind.shape()), " differ");
  Shape out(ind.shape().begin(), ind.shape().end() - 1);
  out.insert(out.end(), x.shape().begin() + b + k, x.shape().end());
  Tensor& y = ctx.alloc(0, x.dtype(), out);
  const std::vector<int64_t> idx = readInts(ind, ctx);
  const size_t es = dtypeSize(x.dtype());
  const auto xs = stridesOf(x.shape());
  const int64_t batches = prod(x.shape(), 0, b), tuples = prod(ind.shape(), b, q - 1);
  const int64_t slice = prod(x.shape(), b + k, r) * static_cast<int64_t>(es);
  const int64_t batch_stride = prod(x.shape(), b, r);
  for (int64_t bi = 0; bi < batches; ++bi)
    for (int64_t t = 0; t < tuples; ++t) {
      const int64_t* tup = idx.data() + (bi * tuples + t) * k;
      int64_t off = bi * batch_stride;
      for (int64_t j = 0; j < k; ++j) off += normIndex(tup[j], x.dim(b + j), ctx) * xs[b + j];
      std::memcpy(bytesOf(y) + (bi * tuples + t) * slice, bytesOf(x) + off * static_cast<int64_t>(es), slice);
    }
}

enum class Reduction { None, Add, Mul, Max, Min };

Reduction reductionOf(const KernelContext& ctx) {
  const std::string s = ctx.node.attrString("reduction", "none");
  if (s == "none") return Reduction::None;
  if (s == "add") return Reduction::Add;
  if (s == "mul") return Reduction::Mul;
  if (s == "max") return Reduction::Max;
  if (s == "min") return Reduction::Min;
  ctx.error("reduction '", s, "' is not none, add, mul, max or min");
}

/// dst[i] = reduce(dst[i], src[i]) for n elements of the tensor's type (bytes copied for None).
void reduceInto(std::byte* dst, const std::byte* src, int64_t n, DType dt, Reduction red, const KernelContext& ctx) {
  if (red == Reduction::None) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dtypeSize(dt));
    return;
  }
  dispatchNumeric(dt, ctx, [&](auto tag) {
    using T = decltype(tag);
    T* d = reinterpret_cast<T*>(dst);
    const T* s = reinterpret_cast<const T*>(src);
    for (int64_t i = 0; i < n; ++i) {
      switch (red) {
        case Reduction::Add:
          d[i] = static_cast<T>(d[i] + s[i]);
          break;
        case Reduction::Mul:
          d[i] = static_cast<T>(d[i] * s[i]);
          break;
        case Reduction::Max:
          d[i] = std::max(d[i], s[i]);
          break;
        case Reduction::Min:
          d[i] = std::min(d[i], s[i]);
          break;
        case Reduction::None:
          break;
      }
    }
  });
}

/// Runs a scatter on data and updates; float16 with a reduction goes through float32.
template <typename F>
void scatterWith(KernelContext& ctx, F&& body) {
  const Tensor& x = ctx.in(0);
  const Tensor& upd = ctx.in(2);
  if (upd.dtype() != x.dtype())
    ctx.error("updates are ", dtypeName(upd.dtype()), " but data is ", dtypeName(x.dtype()));
  const Reduction red = reductionOf(ctx);
  if (x.dtype() == DType::Float16 && red != Reduction::None) {
    Tensor y = x.cast(DType::Float32);
    body(y, upd.cast(DType::Float32), red);
    ctx.outputs[0] = y.cast(DType::Float16);
  } else {
    Tensor y = x.clone();
    body(y, upd, red);
    ctx.outputs[0] = y;
  }
}

void scatterND(KernelContext& ctx) {
  const Tensor& ind = ctx.in(1);
  scatterWith(ctx, [&](Tensor& y, const Tensor& upd, Reduction red) {
    const int64_t r = static_cast<int64_t>(y.rank()), q = static_cast<int64_t>(ind.rank());
    const int64_t k = q >= 1 ? ind.dim(q - 1) : 0;
    if (q < 1 || k < 1 || k > r) ctx.error("indices ", shapeStr(ind.shape()), " do not fit data ", shapeStr(y.shape()));
    Shape want(ind.shape().begin(), ind.shape().end() - 1);
    want.insert(want.end(), y.shape().begin() + k, y.shape().end());
    if (upd.shape() != want) ctx.error("updates have shape ", shapeStr(upd.shape()), ", expected ", shapeStr(want));
    const std::vector<int64_t> idx = readInts(ind, ctx);
    const size_t es = dtypeSize(y.dtype());
    const auto ys = stridesOf(y.shape());
    const int64_t tuples = prod(ind.shape(), 0, q - 1), slice = prod(y.shape(), k, r);
    for (int64_t t = 0; t < tuples; ++t) {
      int64_t off = 0;
      for (int64_t j = 0; j < k; ++j) off += normIndex(idx[t * k + j], y.dim(j), ctx) * ys[j];
      reduceInto(bytesOf(y) + off * static_cast<int64_t>(es), bytesOf(upd) + t * slice * static_cast<int64_t>(es),
                 slice, y.dtype(), red, ctx);
    }
  });
}

void scatterElements(KernelContext& ctx) {
  const Tensor& ind = ctx.in(1);
  scatterWith(ctx, [&](Tensor& y, const Tensor& upd, Reduction red) {
    const int64_t r = static_cast<int64_t>(y.rank());
    if (r == 0) ctx.error("cannot scatter into a scalar");
    const int64_t axis = normAxis(ctx.node.attrInt("axis", 0), r, ctx);
    bool ok = ind.shape() == upd.shape() && ind.rank() == y.rank();
    for (int64_t k = 0; ok && k < r; ++k) ok = k == axis || ind.dim(k) <= y.dim(k);
    if (!ok)
      ctx.error("indices ", shapeStr(ind.shape()), " and updates ", shapeStr(upd.shape()), " do not fit data ",
                shapeStr(y.shape()));
    const std::vector<int64_t> idx = readInts(ind, ctx);
    const size_t es = dtypeSize(y.dtype());
    const auto ys = stridesOf(y.shape());
    std::vector<int64_t> pos(r, 0);
    int64_t base = 0;
    for (int64_t t = 0; t < ind.numel(); ++t) {
      const int64_t off = base + normIndex(idx[t], y.dim(axis), ctx) * ys[axis];
      reduceInto(bytesOf(y) + off * static_cast<int64_t>(es), bytesOf(upd) + t * static_cast<int64_t>(es), 1, y.dtype(),
                 red, ctx);
      for (int64_t k = r - 1; k >= 0; --k) {
        if (k != axis) base += ys[k];
        if (++pos[k] < ind.dim(k)) break;
        if (k != axis) base -= ys[k] * ind.dim(k);
        pos[k] = 0;
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Pad

int64_t padSource(int64_t i, int64_t n, const std::string& mode) {
  if (i >= 0 && i < n) return i;
  if (mode == "constant") return -1;
  if (mode == "edge") return std::clamp<int64_t>(i, 0, n - 1);
  if (mode == "wrap") return ((i % n) + n) % n;
  if (n == 1) return 0;  // reflect
  const int64_t period = 2 * (n - 1);
  const int64_t m = ((i % period) + period) % period;
  return m < n ? m : period - m;
}

void pad(KernelContext& ctx, int since) {
  const Tensor& x = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x.rank());
  const size_t es = dtypeSize(x.dtype());
  const std::string mode = ctx.node.attrString("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge" && !(mode == "wrap" && since >= 19))
    ctx.error("mode '", mode, "' is not supported (constant, reflect, edge", since >= 19 ? ", wrap" : "", ")");
  std::vector<int64_t> pads, axes;
  Tensor value = scalarOf(x.dtype(), 0);
  if (since < 11) {
    pads = ctx.node.attrInts("pads");
    value = scalarOf(x.dtype(), ctx.node.attrFloat("value", 0.0f));
  } else {
    pads = readInts(ctx.in(1), ctx);
    if (ctx.has(2) && ctx.in(2).numel() > 0) {
      if (ctx.in(2).dtype() != x.dtype())
        ctx.error("constant_value is ", dtypeName(ctx.in(2).dtype()), " but data is ", dtypeName(x.dtype()));
      value = ctx.in(2);
    }
    if (ctx.has(3)) axes = normAxes(readInts(ctx.in(3), ctx), r, ctx);
  }
  if (axes.empty() && !(since >= 18 && ctx.has(3)))
    for (int64_t k = 0; k < r; ++k) axes.push_back(k);
  const int64_t m = static_cast<int64_t>(axes.size());
  if (static_cast<int64_t>(pads.size()) != 2 * m)
    ctx.error("pads has ", pads.size(), " values, expected ", 2 * m, " for ", m, " axes");
  std::vector<int64_t> before(r, 0);
  Shape out = x.shape();
  for (int64_t i = 0; i < m; ++i) {
    const int64_t a = axes[i];
    if (std::abs(pads[i]) > kMaxElements || std::abs(pads[i + m]) > kMaxElements)
      ctx.error("pads ", shapeStr(pads), " are too large");
    before[a] = pads[i];
    out[a] = x.dim(a) + pads[i] + pads[i + m];
    if (out[a] < 0) ctx.error("pads ", shapeStr(pads), " crop axis ", a, " of size ", x.dim(a), " below zero");
  }
  checkShape(out, ctx, "output shape");
  Tensor& y = ctx.alloc(0, x.dtype(), out);
  if (y.numel() == 0) return;
  if (r == 0) {
    std::memcpy(bytesOf(y), bytesOf(x), es);
    return;
  }
  if (x.numel() == 0 && mode != "constant") ctx.error("cannot pad an empty tensor in mode '", mode, "'");
  // Per axis, the source index of every output index (-1: the constant).
  std::vector<std::vector<int64_t>> src(r);
  for (int64_t k = 0; k < r; ++k)
    for (int64_t o = 0; o < out[k]; ++o) src[k].push_back(padSource(o - before[k], x.dim(k), mode));
  const auto xs = stridesOf(x.shape());
  const int64_t n = out[r - 1], rows = y.numel() / n;
  // Output positions [lo, hi) of the last axis that copy a contiguous run of the input row.
  const int64_t lo = std::clamp<int64_t>(before[r - 1], 0, n),
                hi = std::clamp<int64_t>(before[r - 1] + x.dim(r - 1), lo, n);
  const std::byte* xb = bytesOf(x);
  const std::byte* val = bytesOf(value);
  std::byte* yb = bytesOf(y);
  parallelRange(rows, static_cast<int64_t>(y.nbytes()), [&](int64_t r0, int64_t r1) {
    std::vector<int64_t> pos(r - 1);
    int64_t rem = r0;
    for (int64_t k = r - 2; k >= 0; --k) {
      pos[k] = rem % out[k];
      rem /= out[k];
    }
    for (int64_t row = r0; row < r1; ++row) {
      std::byte* d = yb + row * n * static_cast<int64_t>(es);
      int64_t off = 0;
      bool constant = false;
      for (int64_t k = 0; k < r - 1; ++k) {
        const int64_t s = src[k][pos[k]];
        constant = constant || s < 0;
        off += s * xs[k];
      }
      if (constant) {
        fillElems(d, n, val, es);
      } else {
        const std::byte* s = xb + off * static_cast<int64_t>(es);
        for (int64_t j = 0; j < n; ++j) {
          if (j == lo && hi > lo) {
            std::memcpy(d + j * es, s + src[r - 1][j] * es, (hi - lo) * es);
            j = hi - 1;
            continue;
          }
          const int64_t sj = src[r - 1][j];
          std::memcpy(d + j * es, sj < 0 ? val : s + sj * es, es);
        }
      }
      for (int64_t k = r - 2; k >= 0; --k) {
        if (++pos[k] < out[k]) break;
        pos[k] = 0;
      }
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Shapes and constants

void shapeOp(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x.rank());
  auto clampAxis = [&](int64_t a) { return std::clamp<int64_t>(a < 0 ? a + r : a, 0, r); };
  const int64_t start = clampAxis(ctx.node.attrInt("start", 0)), end = clampAxis(ctx.node.attrInt("end", r));
  Tensor& y = ctx.alloc(0, DType::Int64, {std::max<int64_t>(0, end - start)});
  for (int64_t k = start; k < end; ++k) y.data<int64_t>()[k - start] = x.dim(k);
}

void sizeOp(KernelContext& ctx) { ctx.outputs[0] = Tensor::scalar<int64_t>(ctx.in(0).numel()); }

/// The tensor of a Constant node's value attribute, whichever form it takes.
Tensor constantValue(const Node& n) {
  const std::string where = "node " + n.describe();
  if (const auto* a = n.attr("value")) return tensorFromProto(a->t(), {}, where);
  if (const auto* a = n.attr("value_float")) return Tensor::scalar<float>(a->f());
  if (const auto* a = n.attr("value_floats"))
    return Tensor::fromVector<float>({a->floats_size()}, {a->floats().begin(), a->floats().end()});
  if (const auto* a = n.attr("value_int")) return Tensor::scalar<int64_t>(a->i());
  if (const auto* a = n.attr("value_ints"))
    return Tensor::fromVector<int64_t>({a->ints_size()}, {a->ints().begin(), a->ints().end()});
  for (const char* other : {"sparse_value", "value_string", "value_strings"})
    if (n.hasAttr(other)) fail(where, ": Constant with a '", other, "' attribute is not supported by the lwc engine");
  fail(where, ": Constant has no value attribute");
}

/// Produces the same tensor every run (shared, like an initializer).
class ConstantKernel final : public Kernel {
 public:
  explicit ConstantKernel(Tensor t) : t_(std::move(t)) {}
  void run(KernelContext& ctx) override { ctx.outputs[0] = t_; }

 private:
  Tensor t_;
};

class ConstantOfShapeKernel final : public Kernel {
 public:
  explicit ConstantOfShapeKernel(const Node& n) {
    if (const auto* a = n.attr("value")) {
      value_ = tensorFromProto(a->t(), {}, "node " + n.describe());
      if (value_.numel() != 1)
        fail("node ", n.describe(), ": value must hold exactly one element, it has ", value_.numel());
    } else {
      value_ = Tensor::scalar<float>(0.0f);
    }
  }
  void run(KernelContext& ctx) override {
    const Shape shape = readInts(ctx.in(0), ctx);
    checkShape(shape, ctx, "shape");
    Tensor& y = ctx.alloc(0, value_.dtype(), shape);
    fillElems(bytesOf(y), y.numel(), bytesOf(value_), dtypeSize(value_.dtype()));
  }

 private:
  Tensor value_;
};

void range(KernelContext& ctx) {
  const Tensor& start = ctx.in(0);
  const Tensor& limit = ctx.in(1);
  const Tensor& delta = ctx.in(2);
  for (const Tensor* t : {&start, &limit, &delta}) {
    if (t->numel() != 1) ctx.error("start, limit and delta must be scalars, got shape ", shapeStr(t->shape()));
    if (t->dtype() != start.dtype()) ctx.error("start, limit and delta must have the same type");
  }
  dispatchNumeric(start.dtype(), ctx, [&](auto tag) {
    using T = decltype(tag);
    const T s = start.data<T>()[0], l = limit.data<T>()[0], d = delta.data<T>()[0];
    if (d == T{}) ctx.error("delta is 0");
    int64_t n = 0;
    if constexpr (std::is_floating_point_v<T>) {
      const double c = std::ceil((static_cast<double>(l) - static_cast<double>(s)) / static_cast<double>(d));
      if (!(c <= static_cast<double>(kMaxElements))) ctx.error("range of ", c, " elements is too large");
      n = c > 0 ? static_cast<int64_t>(c) : 0;
    } else {
      using Wide = __int128;
      const Wide diff = static_cast<Wide>(l) - static_cast<Wide>(s), dd = static_cast<Wide>(d);
      Wide c = 0;
      if (dd > 0 && diff > 0) c = (diff + dd - 1) / dd;
      if (dd < 0 && diff < 0) c = (-diff + -dd - 1) / -dd;
      if (c > kMaxElements) ctx.error("range is too large");
      n = static_cast<int64_t>(c);
    }
    Tensor& y = ctx.alloc(0, start.dtype(), {n});
    T* out = y.data<T>();
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (std::is_floating_point_v<T>)
        out[i] = static_cast<T>(s + static_cast<T>(i) * d);
      else
        out[i] = static_cast<T>(static_cast<__int128>(s) + static_cast<__int128>(i) * d);
    }
  });
}

void eyeLike(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  if (x.rank() != 2) ctx.error("expects a 2-D input, got ", shapeStr(x.shape()));
  DType dt = x.dtype();
  if (ctx.node.hasAttr("dtype")) {
    dt = fromOnnxType(static_cast<int>(ctx.node.attrInt("dtype", 0)));
    if (dt == DType::Undefined) ctx.error("dtype ", ctx.node.attrInt("dtype", 0), " is not supported");
  }
  const int64_t k = std::clamp<int64_t>(ctx.node.attrInt("k", 0), -x.dim(0), x.dim(1));
  Tensor& y = ctx.alloc(0, dt, x.shape());
  const Tensor one = scalarOf(dt, 1);
  const size_t es = dtypeSize(dt);
  for (int64_t i = 0; i < x.dim(0); ++i) {
    const int64_t j = i + k;
    if (j >= 0 && j < x.dim(1)) std::memcpy(bytesOf(y) + (i * x.dim(1) + j) * es, bytesOf(one), es);
  }
}

void trilu(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  if (x.rank() < 2) ctx.error("expects a tensor of rank >= 2, got ", shapeStr(x.shape()));
  const int64_t h = x.dim(x.rank() - 2), w = x.dim(x.rank() - 1);
  int64_t k = 0;
  if (ctx.has(1)) {
    const auto kv = readInts(ctx.in(1), ctx);
    if (kv.size() != 1) ctx.error("k must be a scalar");
    k = std::clamp<int64_t>(kv[0], -(h + w), h + w);
  }
  const bool upper = ctx.node.attrInt("upper", 1) != 0;
  Tensor& y = ctx.alloc(0, x.dtype(), x.shape());
  const size_t es = dtypeSize(x.dtype());
  const int64_t mats = h * w == 0 ? 0 : x.numel() / (h * w);
  for (int64_t m = 0; m < mats; ++m)
    for (int64_t i = 0; i < h; ++i) {
      // Upper keeps columns j >= i + k, lower keeps j <= i + k.
      const int64_t b = upper ? std::clamp<int64_t>(i + k, 0, w) : 0;
      const int64_t e = upper ? w : std::clamp<int64_t>(i + k + 1, 0, w);
      const int64_t off = ((m * h + i) * w + b) * static_cast<int64_t>(es);
      if (e > b) std::memcpy(bytesOf(y) + off, bytesOf(x) + off, (e - b) * es);
    }
}

// ---------------------------------------------------------------------------------------------
// Value-dependent: TopK, ArgMax/ArgMin, NonZero, OneHot, CumSum

/// Runs f on a view of t whose element type the dispatcher handles (float16 as float32).
template <typename F>
void withNumeric(const Tensor& t, const KernelContext& ctx, F&& f) {
  const Tensor v = toFloat32IfHalf(t);
  dispatchNumeric(v.dtype(), ctx, [&](auto tag) {
    using T = decltype(tag);
    f(v.data<T>(), tag);
  });
}

template <typename T>
bool isNan(T v) {
  if constexpr (std::is_floating_point_v<T>) return std::isnan(v);
  return false;
}

// Unique (opsets 11-22): the distinct values of X (flattened), or its distinct slices along `axis`,
// sorted ascending (slices in lexicographic order) or, with sorted = 0, in order of first
// occurrence, as numpy.unique and ONNX Runtime give them; NaNs sort last and equal each other.
// Outputs: Y, each unique value's first index in X, each element's (slice's) index into Y, counts.
void unique(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x.rank());
  const bool has_axis = ctx.node.hasAttr("axis");
  int64_t axis = 0, outer = 1, n = x.numel(), inner = 1;
  if (has_axis) {
    if (r == 0) ctx.error("axis is set for a scalar input");
    axis = normAxis(ctx.node.attrInt("axis", 0), r, ctx);
    outer = prod(x.shape(), 0, static_cast<size_t>(axis));
    n = x.dim(static_cast<size_t>(axis));
    inner = prod(x.shape(), static_cast<size_t>(axis) + 1, static_cast<size_t>(r));
  }
  std::vector<int64_t> order(static_cast<size_t>(n)), group_of(static_cast<size_t>(n)), firsts, counts;
  std::iota(order.begin(), order.end(), 0);
  withNumeric(x, ctx, [&](const auto* p, auto tag) {
    using T = decltype(tag);
    // Slices a and b compared element by element: < 0, 0 or > 0.
    const auto cmp = [&](int64_t a, int64_t b) {
      for (int64_t o = 0; o < outer; ++o)
        for (int64_t j = 0; j < inner; ++j) {
          const T va = p[(o * n + a) * inner + j], vb = p[(o * n + b) * inner + j];
          const bool na = isNan(va), nb = isNan(vb);
          if (na || nb) {
            if (na && nb) continue;
            return na ? 1 : -1;
          }
          if (va < vb) return -1;
          if (vb < va) return 1;
        }
      return 0;
    };
    // Stable: each run of equal slices starts with its first occurrence.
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return cmp(a, b) < 0; });
    for (size_t i = 0; i < order.size(); ++i) {
      if (i == 0 || cmp(order[i - 1], order[i]) != 0) {
        firsts.push_back(order[i]);
        counts.push_back(0);
      }
      group_of[static_cast<size_t>(order[i])] = static_cast<int64_t>(firsts.size()) - 1;
      ++counts.back();
    }
  });
  const int64_t k = static_cast<int64_t>(firsts.size());
  // Output position of each group: its sorted rank, or with sorted = 0 the rank of its first index.
  std::vector<int64_t> at(static_cast<size_t>(k));
  std::iota(at.begin(), at.end(), 0);
  if (ctx.node.attrInt("sorted", 1) == 0) {
    std::vector<int64_t> by_first(at);
    std::sort(by_first.begin(), by_first.end(), [&](int64_t a, int64_t b) { return firsts[a] < firsts[b]; });
    for (int64_t pos = 0; pos < k; ++pos) at[static_cast<size_t>(by_first[pos])] = pos;
  }
  Shape ys{k};
  if (has_axis) {
    ys = x.shape();
    ys[static_cast<size_t>(axis)] = k;
  }
  Tensor& y = ctx.allocUninit(0, x.dtype(), ys);
  const size_t es = dtypeSize(x.dtype()), block = static_cast<size_t>(inner) * es;
  for (int64_t g = 0; g < k; ++g)
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(bytesOf(y) + static_cast<size_t>(o * k + at[g]) * block, bytesOf(x) + static_cast<size_t>(o * n + firsts[g]) * block,
                  block);
  const auto wanted = [&](size_t i) { return ctx.numOutputs() > i && !ctx.node.outputs[i].empty(); };
  if (wanted(1)) {
    int64_t* d = ctx.allocUninit(1, DType::Int64, {k}).data<int64_t>();
    for (int64_t g = 0; g < k; ++g) d[at[g]] = firsts[g];
  }
  if (wanted(2)) {
    int64_t* d = ctx.allocUninit(2, DType::Int64, {n}).data<int64_t>();
    for (int64_t i = 0; i < n; ++i) d[i] = at[static_cast<size_t>(group_of[static_cast<size_t>(i)])];
  }
  if (wanted(3)) {
    int64_t* d = ctx.allocUninit(3, DType::Int64, {k}).data<int64_t>();
    for (int64_t g = 0; g < k; ++g) d[at[g]] = counts[g];
  }
}

void topK(KernelContext& ctx, int since) {
  const Tensor& x = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x.rank());
  if (r == 0) ctx.error("expects a tensor of rank >= 1");
  const int64_t axis = normAxis(ctx.node.attrInt("axis", -1), r, ctx);
  int64_t k = ctx.node.attrInt("k", -1);
  if (since >= 10) {
    const auto kv = readInts(ctx.in(1), ctx);
    if (kv.size() != 1) ctx.error("K must hold one value, it has ", kv.size());
    k = kv[0];
  }
  const int64_t dim = x.dim(axis);
  if (k < 0 || k > dim) ctx.error("k = ", k, " is out of range for axis ", axis, " of size ", dim);
  const bool largest = ctx.node.attrInt("largest", 1) != 0;
  Shape out = x.shape();
  out[axis] = k;
  Tensor& values = ctx.alloc(0, x.dtype(), out);
  Tensor& indices = ctx.alloc(1, DType::Int64, out);
  const int64_t rows = prod(x.shape(), 0, axis), inner = prod(x.shape(), axis + 1, r);
  const size_t es = dtypeSize(x.dtype());
  int64_t* yi = indices.data<int64_t>();
  withNumeric(x, ctx, [&](const auto* p, auto tag) {
    using T = decltype(tag);
    std::vector<int64_t> ids(dim);
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        const T* base = p + o * dim * inner + i;
        // NaN ranks above every number; equal values keep the lower index first.
        auto before = [&](int64_t a, int64_t b) {
          const T va = base[a * inner], vb = base[b * inner];
          const bool na = isNan(va), nb = isNan(vb);
          if (na || nb) return na == nb ? a < b : (largest ? na : nb);
          if (va != vb) return largest ? va > vb : va < vb;
          return a < b;
        };
        std::iota(ids.begin(), ids.end(), 0);
        std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), before);
        for (int64_t j = 0; j < k; ++j) {
          const int64_t dst = (o * k + j) * inner + i;
          yi[dst] = ids[j];
          std::memcpy(bytesOf(values) + dst * es, bytesOf(x) + ((o * dim + ids[j]) * inner + i) * es, es);
        }
      }
  });
}

void argExtreme(KernelContext& ctx, bool is_max) {
  const Tensor& x = ctx.in(0);
  const int64_t r = static_cast<int64_t>(x.rank());
  if (r == 0) ctx.error("expects a tensor of rank >= 1");
  const int64_t axis = normAxis(ctx.node.attrInt("axis", 0), r, ctx);
  const bool keep = ctx.node.attrInt("keepdims", 1) != 0;
  const bool last = ctx.node.attrInt("select_last_index", 0) != 0;
  const int64_t dim = x.dim(axis);
  if (dim == 0) ctx.error("cannot take the arg", is_max ? "max" : "min", " of an empty axis");
  Shape out = x.shape();
  if (keep)
    out[axis] = 1;
  else
    out.erase(out.begin() + axis);
  Tensor& y = ctx.alloc(0, DType::Int64, out);
  const int64_t rows = prod(x.shape(), 0, axis), inner = prod(x.shape(), axis + 1, r);
  int64_t* yi = y.data<int64_t>();
  withNumeric(x, ctx, [&](const auto* p, auto) {
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        const auto* base = p + o * dim * inner + i;
        int64_t best = 0;
        for (int64_t j = 1; j < dim; ++j) {
          const auto v = base[j * inner], b = base[best * inner];
          // Like numpy, the first NaN wins (the last one with select_last_index).
          bool take;
          if (isNan(b))
            take = last && isNan(v);
          else if (isNan(v))
            take = true;
          else
            take = (is_max ? v > b : v < b) || (last && v == b);
          if (take) best = j;
        }
        yi[o * inner + i] = best;
      }
  });
}

void nonZero(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const int64_t n = x.numel();
  std::vector<int64_t> hits;
  if (x.dtype() == DType::Float32 || x.dtype() == DType::Float64 || x.dtype() == DType::Float16) {
    const Tensor f = toFloat32IfHalf(x);
    for (int64_t i = 0; i < n; ++i)
      if (f.dtype() == DType::Float32 ? f.data<float>()[i] != 0.0f : f.data<double>()[i] != 0.0) hits.push_back(i);
  } else {
    // Integers and bool: non-zero exactly when some byte is.
    const size_t es = dtypeSize(x.dtype());
    for (int64_t i = 0; i < n; ++i) {
      const std::byte* e = bytesOf(x) + i * static_cast<int64_t>(es);
      if (std::any_of(e, e + es, [](std::byte b) { return b != std::byte{0}; })) hits.push_back(i);
    }
  }
  const Shape shape = x.rank() == 0 ? Shape{1} : x.shape();
  const int64_t r = static_cast<int64_t>(shape.size()), m = static_cast<int64_t>(hits.size());
  Tensor& y = ctx.alloc(0, DType::Int64, {r, m});
  int64_t* yi = y.data<int64_t>();
  for (int64_t j = 0; j < m; ++j) {
    int64_t rem = hits[j];
    for (int64_t k = r - 1; k >= 0; --k) {
      yi[k * m + j] = rem % shape[k];
      rem /= shape[k];
    }
  }
}

void oneHot(KernelContext& ctx) {
  const Tensor& ind = ctx.in(0);
  const Tensor& depth_t = ctx.in(1);
  const Tensor& values = ctx.in(2);
  if (depth_t.numel() != 1) ctx.error("depth must hold one value, it has ", depth_t.numel());
  if (values.numel() != 2) ctx.error("values must hold [off, on], it has ", values.numel(), " elements");
  const double depth_v = depth_t.at(0);
  if (!(depth_v >= 0 && depth_v <= static_cast<double>(kMaxElements))) ctx.error("depth ", depth_v, " is out of range");
  const int64_t depth = static_cast<int64_t>(depth_v);
  const int64_t q = static_cast<int64_t>(ind.rank());
  int64_t axis = ctx.node.attrInt("axis", -1);
  if (axis < -(q + 1) || axis > q) ctx.error("axis ", axis, " is out of range for rank ", q + 1);
  if (axis < 0) axis += q + 1;
  Shape out = ind.shape();
  out.insert(out.begin() + axis, depth);
  checkShape(out, ctx, "output shape");
  Tensor& y = ctx.alloc(0, values.dtype(), out);
  const size_t es = dtypeSize(values.dtype());
  const std::byte* off = bytesOf(values);
  const std::byte* on = off + es;
  fillElems(bytesOf(y), y.numel(), off, es);
  const Tensor idx = ind.dtype() == DType::Int64 ? ind : ind.cast(DType::Int64);
  const int64_t rows = prod(ind.shape(), 0, axis), inner = prod(ind.shape(), axis, q);
  for (int64_t o = 0; o < rows; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      int64_t v = idx.data<int64_t>()[o * inner + i];
      if (v < 0) v += depth;
      if (v >= 0 && v < depth) std::memcpy(bytesOf(y) + ((o * depth + v) * inner + i) * es, on, es);
    }
}

void cumSum(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  const auto av = readInts(ctx.in(1), ctx);
  if (av.size() != 1) ctx.error("axis must be a scalar");
  const int64_t r = static_cast<int64_t>(x.rank());
  const int64_t axis = normAxis(av[0], r, ctx);
  const bool exclusive = ctx.node.attrInt("exclusive", 0) != 0, reverse = ctx.node.attrInt("reverse", 0) != 0;
  const int64_t dim = r == 0 ? 1 : x.dim(axis);
  const int64_t rows = prod(x.shape(), 0, axis), inner = prod(x.shape(), axis + 1, r);
  withNumeric(x, ctx, [&](const auto* p, auto tag) {
    using T = decltype(tag);
    Tensor y(dtypeOf<T>(), x.shape());
    T* out = y.data<T>();
    for (int64_t o = 0; o < rows; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        T acc{};
        for (int64_t s = 0; s < dim; ++s) {
          const int64_t j = reverse ? dim - 1 - s : s;
          const int64_t at = (o * dim + j) * inner + i;
          if (exclusive) {
            out[at] = acc;
            acc = static_cast<T>(acc + p[at]);
          } else {
            acc = static_cast<T>(acc + p[at]);
            out[at] = acc;
          }
        }
      }
    ctx.outputs[0] = x.dtype() == DType::Float16 ? y.cast(DType::Float16) : y;
  });
}

// ---------------------------------------------------------------------------------------------
// Resize (opset 10-22) and Upsample (7-9): nearest, (multi)linear and (multi)cubic. Antialias
// (opset 18+, linear and cubic) is not implemented, so the factory declines such a node and the
// session reports it.
//
// Every mode is separable: per resized axis, each output index reads a fixed number of taps (1 for
// nearest, 2 for linear, 4 for cubic) with weights, and an output element is the sum over the
// product of the per-axis taps (ONNX's reference interpolates one axis after the other, which is
// the same sum).

enum class CoordMode {
  HalfPixel,
  HalfPixelSymmetric,
  PytorchHalfPixel,
  AlignCorners,
  Asymmetric,
  TfHalfPixelForNn,
  TfCropAndResize
};
/// Simple is Upsample's and Resize-10's rule (as ONNX Runtime implements them): floor, ceil when downsampling.
enum class NearestMode { RoundPreferFloor, RoundPreferCeil, Floor, Ceil, Simple };

enum class ResizeMode { Nearest, Linear, Cubic };

struct ResizeSpec {
  int since = 11;  ///< the model opset: selects the input layout and the attributes
  ResizeMode mode = ResizeMode::Nearest;
  double cubic_a = -0.75;        ///< cubic_coeff_a
  bool exclude_outside = false;  ///< cubic: drop the taps outside the input and renormalise
  CoordMode coord = CoordMode::HalfPixel;
  NearestMode nearest = NearestMode::RoundPreferFloor;
  double extrapolation = 0;
  std::string keep_aspect = "stretch";
  std::vector<int64_t> axes;
};

/// Parses the attributes; nullopt for what the engine does not implement (antialias, cubic before
/// Resize-11, which ONNX does not define).
std::optional<ResizeSpec> parseResize(const Node& n, int since) {
  ResizeSpec s;
  s.since = since;
  const std::string mode = n.attrString("mode", "nearest");
  if (mode == "cubic" && since <= 10) return std::nullopt;
  if (mode != "nearest" && mode != "linear" && mode != "cubic" && !(since < 10 && mode == "bilinear"))
    fail("node ", n.describe(), ": mode '", mode, "' is not nearest, linear or cubic");
  s.mode = mode == "nearest" ? ResizeMode::Nearest : mode == "cubic" ? ResizeMode::Cubic : ResizeMode::Linear;
  if (s.mode == ResizeMode::Cubic) {
    s.cubic_a = n.attrFloat("cubic_coeff_a", -0.75f);
    s.exclude_outside = n.attrInt("exclude_outside", 0) != 0;
  }
  if (since <= 10) {
    s.coord = CoordMode::Asymmetric;
    s.nearest = NearestMode::Simple;
    return s;
  }
  if (since >= 18 && n.attrInt("antialias", 0) != 0 && s.mode != ResizeMode::Nearest) return std::nullopt;
  const std::string coord = n.attrString("coordinate_transformation_mode", "half_pixel");
  static const std::pair<const char*, CoordMode> kCoords[] = {{"half_pixel", CoordMode::HalfPixel},
                                                              {"half_pixel_symmetric", CoordMode::HalfPixelSymmetric},
                                                              {"pytorch_half_pixel", CoordMode::PytorchHalfPixel},
                                                              {"align_corners", CoordMode::AlignCorners},
                                                              {"asymmetric", CoordMode::Asymmetric},
                                                              {"tf_half_pixel_for_nn", CoordMode::TfHalfPixelForNn},
                                                              {"tf_crop_and_resize", CoordMode::TfCropAndResize}};
  bool found = false;
  for (const auto& [name, m] : kCoords)
    if (coord == name && (m != CoordMode::HalfPixelSymmetric || since >= 19)) {
      s.coord = m;
      found = true;
    }
  if (!found)
    fail("node ", n.describe(), ": coordinate_transformation_mode '", coord, "' is not supported at opset ", since);
  const std::string nearest = n.attrString("nearest_mode", "round_prefer_floor");
  if (nearest == "round_prefer_floor")
    s.nearest = NearestMode::RoundPreferFloor;
  else if (nearest == "round_prefer_ceil")
    s.nearest = NearestMode::RoundPreferCeil;
  else if (nearest == "floor")
    s.nearest = NearestMode::Floor;
  else if (nearest == "ceil")
    s.nearest = NearestMode::Ceil;
  else
    fail("node ", n.describe(), ": nearest_mode '", nearest, "' is not supported");
  s.extrapolation = n.attrFloat("extrapolation_value", 0.0f);
  if (since >= 18) {
    s.axes = n.attrInts("axes");
    s.keep_aspect = n.attrString("keep_aspect_ratio_policy", "stretch");
    if (s.keep_aspect != "stretch" && s.keep_aspect != "not_larger" && s.keep_aspect != "not_smaller")
      fail("node ", n.describe(), ": keep_aspect_ratio_policy '", s.keep_aspect, "' is not supported");
  }
  return s;
}

/// Source taps of one axis: per output index x, `taps` input indices idx[x*taps + t] (within the
/// input) and their weights w[x*taps + t]. idx[x*taps] < 0 marks an index outside the crop box
/// (tf_crop_and_resize), whose output elements take the extrapolation value.
struct AxisMap {
  int taps = 1;
  std::vector<int64_t> idx;
  std::vector<double> w;
  bool outside(int64_t x) const { return idx[x * taps] < 0; }
};

/// Cubic convolution (Keys) weights of 4 consecutive taps for a source coordinate `ratio` (in
/// (0, 1]) right of the second tap; ONNX's _cubic_coeffs, term for term.
std::array<double, 4> cubicCoeffs(double ratio, double a) {
  const double r1 = ratio + 1, q = 1 - ratio, q1 = q + 1;
  return {((a * r1 - 5 * a) * r1 + 8 * a) * r1 - 4 * a, ((a + 2) * ratio - (a + 3)) * ratio * ratio + 1,
          ((a + 2) * q - (a + 3)) * q * q + 1, ((a * q1 - 5 * a) * q1 + 8 * a) * q1 - 4 * a};
}

/// The cubic taps of source coordinate xo on an axis of `in` elements, as ONNX's reference picks
/// them: the ratio is taken in (0, 1] (an integral coordinate has ratio 1, its taps are xo-2 .. xo+1
/// with weights 0, 0, 1, 0), the 4 taps are the nearest ones in the input edge-padded by 2 (so a
/// window that would leave the padded range is shifted back into it), and the values of taps outside
/// the input are the edge values. exclude_outside zeroes the weights of the taps outside the input
/// and renormalises the others to sum to 1.
void cubicTaps(double xo, int64_t in, const ResizeSpec& s, AxisMap& m) {
  const double f = std::floor(xo);
  const double ratio = xo == f ? 1.0 : xo - f;
  const double base = xo == f ? f - 1 : f;  // the tap left of xo (ratio away from it)
  // First tap, clamped so that the 4 taps stay within the padded range [-2, in + 1] (in double:
  // xo may be far outside).
  const int64_t start = static_cast<int64_t>(std::clamp(base - 1, -2.0, static_cast<double>(in - 2)));
  std::array<double, 4> c = cubicCoeffs(ratio, s.cubic_a);
  if (s.exclude_outside) {
    double sum = 0;
    for (int t = 0; t < 4; ++t) {
      if (start + t < 0 || start + t >= in) c[t] = 0;
      sum += c[t];
    }
    for (double& v : c) v /= sum;
  }
  for (int t = 0; t < 4; ++t) {
    m.idx.push_back(std::clamp<int64_t>(start + t, 0, in - 1));
    m.w.push_back(c[t]);
  }
}

/// `len` is the resized length the coordinate formulas use: like ONNX's reference, in * scale
/// when scales are given (not the floored output size), the size itself when sizes are, in * the
/// common scale under keep_aspect_ratio_policy. The single-output special cases test len == 1 as
/// the reference does (len is below 1 with an output of 1 only under keep_aspect_ratio_policy).
AxisMap mapAxis(int64_t in, int64_t out, double scale, double len, double roi_start, double roi_end,
                const ResizeSpec& s) {
  AxisMap m;
  m.taps = s.mode == ResizeMode::Nearest ? 1 : s.mode == ResizeMode::Linear ? 2 : 4;
  m.idx.reserve(static_cast<size_t>(out * m.taps));
  m.w.reserve(static_cast<size_t>(out * m.taps));
  const double in1 = static_cast<double>(in - 1);
  for (int64_t x = 0; x < out; ++x) {
    const double xr = static_cast<double>(x);
    double xo = 0;
    switch (s.coord) {
      case CoordMode::HalfPixel:
        xo = (xr + 0.5) / scale - 0.5;
        break;
      case CoordMode::HalfPixelSymmetric: {
        const double adj = static_cast<double>(out) / len;
        xo = static_cast<double>(in) / 2 * (1 - adj) + (xr + 0.5) / scale - 0.5;
        break;
      }
      case CoordMode::PytorchHalfPixel:
        xo = len != 1 ? (xr + 0.5) / scale - 0.5 : -0.5;
        break;
      case CoordMode::AlignCorners:
        xo = len == 1 ? 0 : xr * in1 / (len - 1);
        break;
      case CoordMode::Asymmetric:
        xo = xr / scale;
        break;
      case CoordMode::TfHalfPixelForNn:
        xo = (xr + 0.5) / scale;
        break;
      case CoordMode::TfCropAndResize:
        xo = len != 1 ? roi_start * in1 + xr * (roi_end - roi_start) * in1 / (len - 1)
                     : 0.5 * (roi_start + roi_end) * in1;
        break;
    }
    // A non-finite coordinate (from a NaN or infinite roi) is treated as outside the crop box too.
    if ((s.coord == CoordMode::TfCropAndResize && !(xo >= 0 && xo <= in1)) || !std::isfinite(xo)) {
      m.idx.insert(m.idx.end(), static_cast<size_t>(m.taps), -1);
      m.w.insert(m.w.end(), static_cast<size_t>(m.taps), 0.0);
      continue;
    }
    if (s.mode == ResizeMode::Cubic) {
      cubicTaps(xo, in, s, m);
      continue;
    }
    if (s.mode == ResizeMode::Linear) {
      const double c = std::clamp(xo, 0.0, in1);
      const int64_t i = static_cast<int64_t>(std::floor(c));
      const double w = c - static_cast<double>(i);
      m.idx.push_back(i);
      m.idx.push_back(std::min(i + 1, in - 1));
      m.w.push_back(1 - w);
      m.w.push_back(w);
      continue;
    }
    const double f = std::floor(xo);
    double v = 0;
    switch (s.nearest) {
      case NearestMode::RoundPreferFloor:
        v = xo == f + 0.5 ? f : std::round(xo);
        break;
      case NearestMode::RoundPreferCeil:
        v = xo == f + 0.5 ? f + 1 : std::round(xo);
        break;
      case NearestMode::Floor:
        v = f;
        break;
      case NearestMode::Ceil:
        v = std::ceil(xo);
        break;
      case NearestMode::Simple:
        v = scale < 1 ? std::ceil(xo) : f;
        break;
    }
    const int64_t i = static_cast<int64_t>(std::clamp(v, 0.0, in1));
    m.idx.push_back(i);
    m.w.push_back(1);
  }
  return m;
}

/// Reads a float tensor (any float type) as doubles.
std::vector<double> readFloats(const Tensor& t, const KernelContext& ctx) {
  if (!isFloat(t.dtype())) ctx.error("expected a float tensor, got ", dtypeName(t.dtype()));
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) v[i] = t.at(i);
  return v;
}

class ResizeKernel final : public Kernel {
 public:
  explicit ResizeKernel(ResizeSpec s) : s_(std::move(s)) {}

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t r = static_cast<int64_t>(x.rank());
    if (r == 0) ctx.error("cannot resize a scalar");
    std::vector<double> scales, roi;
    std::vector<int64_t> sizes;
    if (s_.since < 9) {
      const std::vector<float> given = ctx.node.attrFloats("scales");  // by value: iterators of two calls never met
      scales.assign(given.begin(), given.end());
    } else if (s_.since <= 10) {
      scales = readFloats(ctx.in(1), ctx);
    } else {
      if (ctx.has(1) && s_.coord == CoordMode::TfCropAndResize) roi = readFloats(ctx.in(1), ctx);
      if (ctx.has(2)) scales = readFloats(ctx.in(2), ctx);
      if (ctx.has(3)) sizes = readInts(ctx.in(3), ctx);
    }
    if (scales.empty() == sizes.empty()) ctx.error("exactly one of scales and sizes must be given");
    std::vector<int64_t> axes = s_.axes.empty() ? std::vector<int64_t>{} : normAxes(s_.axes, r, ctx);
    if (axes.empty())
      for (int64_t k = 0; k < r; ++k) axes.push_back(k);
    const size_t m = axes.size();
    if ((!scales.empty() && scales.size() != m) || (!sizes.empty() && sizes.size() != m))
      ctx.error("scales/sizes have ", std::max(scales.size(), sizes.size()), " values for ", m, " axes");
    std::vector<double> scale(r, 1.0), roi_s(r, 0.0), roi_e(r, 1.0), len(r);
    Shape out = x.shape();
    for (int64_t k = 0; k < r; ++k) len[k] = static_cast<double>(x.dim(k));
    if (!scales.empty()) {
      for (size_t i = 0; i < m; ++i) {
        const double o = std::floor(static_cast<double>(x.dim(axes[i])) * scales[i]);
        if (!(scales[i] > 0) || !(o <= static_cast<double>(kMaxElements)))
          ctx.error("scale ", scales[i], " is invalid");
        scale[axes[i]] = scales[i];
        out[axes[i]] = static_cast<int64_t>(o);
        len[axes[i]] = static_cast<double>(x.dim(axes[i])) * scales[i];
      }
    } else {
      checkShape(sizes, ctx, "sizes");
      double keep = s_.keep_aspect == "not_larger" ? std::numeric_limits<double>::max() : 0.0;
      for (size_t i = 0; i < m; ++i) {
        const double s = static_cast<double>(sizes[i]) / static_cast<double>(x.dim(axes[i]));
        keep = s_.keep_aspect == "not_larger" ? std::min(keep, s) : std::max(keep, s);
      }
      for (size_t i = 0; i < m; ++i) {
        const int64_t a = axes[i];
        if (s_.keep_aspect == "stretch") {
          out[a] = sizes[i];
          scale[a] = static_cast<double>(sizes[i]) / static_cast<double>(x.dim(a));
          len[a] = static_cast<double>(sizes[i]);
        } else {
          // Rounded half up, as ONNX's reference does.
          out[a] = static_cast<int64_t>(std::floor(keep * static_cast<double>(x.dim(a)) + 0.5));
          scale[a] = keep;
          len[a] = keep * static_cast<double>(x.dim(a));
        }
      }
    }
    checkShape(out, ctx, "output shape");
    if (!roi.empty()) {
      if (roi.size() != 2 * m) ctx.error("roi has ", roi.size(), " values, expected ", 2 * m);
      for (size_t i = 0; i < m; ++i) {
        roi_s[axes[i]] = roi[i];
        roi_e[axes[i]] = roi[i + m];
      }
    }
    std::vector<AxisMap> maps;
    for (int64_t k = 0; k < r; ++k) {
      if (x.dim(k) == 0 && out[k] > 0) ctx.error("cannot resize an empty axis ", k, " to ", out[k]);
      maps.push_back(mapAxis(x.dim(k), out[k], scale[k], len[k], roi_s[k], roi_e[k], s_));
    }
    if (s_.mode == ResizeMode::Nearest) {
      Tensor& y = ctx.alloc(0, x.dtype(), out);
      const Tensor fill = scalarOf(x.dtype(), s_.extrapolation);
      const size_t es = dtypeSize(x.dtype());
      forEachRow(x, out, maps, [&](int64_t row, const Corners& c, bool outside) {
        const AxisMap& last = maps.back();
        const int64_t n = out.back();
        std::byte* d = bytesOf(y) + row * n * static_cast<int64_t>(es);
        for (int64_t j = 0; j < n; ++j) {
          const bool ext = outside || last.outside(j);
          std::memcpy(d + j * es,
                      ext ? bytesOf(fill) : bytesOf(x) + (c[0].first + last.idx[j]) * static_cast<int64_t>(es), es);
        }
      });
      return;
    }
    const Tensor xf = toFloat32IfHalf(x);
    dispatchFloat(xf.dtype(), ctx, [&](auto tag) {
      using T = decltype(tag);
      Tensor y(xf.dtype(), out);
      const T* p = xf.data<T>();
      T* yp = y.data<T>();
      forEachRow(x, out, maps, [&](int64_t row, const Corners& c, bool outside) {
        const AxisMap& last = maps.back();
        const int64_t n = out.back(), taps = last.taps;
        for (int64_t j = 0; j < n; ++j) {
          double v = s_.extrapolation;
          if (!outside && !last.outside(j)) {
            v = 0;
            for (const auto& [off, wt] : c)
              for (int64_t t = j * taps; t < (j + 1) * taps; ++t)
                if (last.w[t] != 0) v += wt * last.w[t] * static_cast<double>(p[off + last.idx[t]]);
          }
          yp[row * n + j] = static_cast<T>(v);
        }
      });
      ctx.outputs[0] = x.dtype() == DType::Float16 ? y.cast(DType::Float16) : y;
    });
  }

 private:
  /// Offsets (in elements, without the last axis) and weights of the input rows one output row blends.
  using Corners = std::vector<std::pair<int64_t, double>>;

  /// Calls f(row, corners, outside) for every output row (all axes but the last). The corners are
  /// the product of the taps of the row's axes, taps of weight 0 left out (an axis that is not
  /// resized contributes one tap).
  template <typename F>
  static void forEachRow(const Tensor& x, const Shape& out, const std::vector<AxisMap>& maps, F&& f) {
    const int64_t r = static_cast<int64_t>(out.size());
    const int64_t n = out.back(), total = numelOf(out);
    if (total == 0) return;
    const int64_t rows = total / n;
    const auto xs = stridesOf(x.shape());
    parallelRange(rows, total * static_cast<int64_t>(dtypeSize(x.dtype())), [&](int64_t r0, int64_t r1) {
      Corners c, next;
      for (int64_t row = r0; row < r1; ++row) {
        c.assign(1, {0, 1.0});
        bool outside = false;
        int64_t rem = row;
        for (int64_t k = r - 2; k >= 0; --k) {
          const int64_t p = rem % out[k];
          rem /= out[k];
          const AxisMap& a = maps[k];
          if (a.outside(p)) {
            outside = true;
            break;
          }
          next.clear();
          for (int64_t t = p * a.taps; t < (p + 1) * a.taps; ++t)
            if (a.w[t] != 0)
              for (const auto& [off, wt] : c) next.push_back({off + a.idx[t] * xs[k], wt * a.w[t]});
          c.swap(next);
        }
        f(row, c, outside);
      }
    });
  }

  ResizeSpec s_;
};

void addResize(KernelRegistry& r, const std::string& op, int since, int until) {
  r.add("", op, since, until, "ref", [](const KernelInfo& info) -> std::unique_ptr<Kernel> {
    auto spec = parseResize(info.node, static_cast<int>(info.opset));
    if (!spec) return nullptr;
    return std::make_unique<ResizeKernel>(std::move(*spec));
  });
}

}  // namespace

void registerShapeKernels(KernelRegistry& r) {
  constexpr int M = kMaxOpset;
  // Zero-copy
  r.addFn("Reshape", 1, 4, [](KernelContext& c) { reshape(c, false); });
  r.addFn("Reshape", 5, M, [](KernelContext& c) { reshape(c, true); });
  r.addFn("Flatten", 1, M, flatten);
  r.addFn("Squeeze", 1, 12, [](KernelContext& c) { squeeze(c, false); });
  r.addFn("Squeeze", 13, M, [](KernelContext& c) { squeeze(c, true); });
  r.addFn("Unsqueeze", 1, 12, [](KernelContext& c) { unsqueeze(c, false); });
  r.addFn("Unsqueeze", 13, M, [](KernelContext& c) { unsqueeze(c, true); });
  r.addFn("Identity", 1, M, identity);
  r.addFn("Dropout", 1, 9, [](KernelContext& c) { dropout(c, 1); });
  r.addFn("Dropout", 10, 11, [](KernelContext& c) { dropout(c, 10); });
  r.addFn("Dropout", 12, M, [](KernelContext& c) { dropout(c, 12); });
  // Copies
  r.addFn("Transpose", 1, M, transpose);
  r.addFn("Concat", 1, 3, [](KernelContext& c) { concat(c, 1); });
  r.addFn("Concat", 4, M, [](KernelContext& c) { concat(c, 4); });
  r.addFn("Split", 1, 12, [](KernelContext& c) { split(c, 1); });
  r.addFn("Split", 13, 17, [](KernelContext& c) { split(c, 13); });
  r.addFn("Split", 18, M, [](KernelContext& c) { split(c, 18); });
  r.addFn("Slice", 1, 9, [](KernelContext& c) { slice(c, false); });
  r.addFn("Slice", 10, M, [](KernelContext& c) { slice(c, true); });
  r.addFn("Expand", 8, M, expand);
  r.addFn("Tile", 6, M, tile);
  r.addFn("Pad", 2, 10, [](KernelContext& c) { pad(c, 2); });
  r.addFn("Pad", 11, 17, [](KernelContext& c) { pad(c, 11); });
  r.addFn("Pad", 18, 18, [](KernelContext& c) { pad(c, 18); });
  r.addFn("Pad", 19, M, [](KernelContext& c) { pad(c, 19); });
  r.addFn("ReverseSequence", 10, M, reverseSequence);
  r.addFn("DepthToSpace", 1, M, depthToSpace);
  r.addFn("SpaceToDepth", 1, M, spaceToDepth);
  // Indexing
  r.addFn("Gather", 1, M, gather);
  r.addFn("GatherElements", 11, M, gatherElements);
  r.addFn("GatherND", 11, M, gatherND);
  r.addFn("Scatter", 9, 10, scatterElements);
  r.addFn("ScatterElements", 11, M, scatterElements);
  r.addFn("ScatterND", 11, M, scatterND);
  r.addFn("Compress", 9, M, compress);
  // Shapes and constants
  r.addFn("Shape", 1, M, shapeOp);
  r.addFn("Size", 1, M, sizeOp);
  r.add("", "Constant", 1, M, "ref",
        [](const KernelInfo& i) { return std::make_unique<ConstantKernel>(constantValue(i.node)); });
  r.add("", "ConstantOfShape", 9, M, "ref",
        [](const KernelInfo& i) { return std::make_unique<ConstantOfShapeKernel>(i.node); });
  r.addFn("Range", 11, M, range);
  r.addFn("EyeLike", 9, M, eyeLike);
  r.addFn("Trilu", 14, M, trilu);
  // Value-dependent
  r.addFn("TopK", 1, 9, [](KernelContext& c) { topK(c, 1); });
  r.addFn("TopK", 10, M, [](KernelContext& c) { topK(c, 10); });
  r.addFn("ArgMax", 1, M, [](KernelContext& c) { argExtreme(c, true); });
  r.addFn("ArgMin", 1, M, [](KernelContext& c) { argExtreme(c, false); });
  r.addFn("NonZero", 9, M, nonZero);
  r.addFn("Unique", 11, M, unique);
  r.addFn("OneHot", 9, M, oneHot);
  r.addFn("CumSum", 11, M, cumSum);
  // Resampling
  addResize(r, "Upsample", 7, 9);
  addResize(r, "Resize", 10, M);
}

}  // namespace lwc::engine
