// Shared by the oneDNN fast paths (engine-internal).
#pragma once

#include <dnnl.hpp>
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <utility>
#include <vector>

#include "lwc/tensor.h"

namespace lwc::engine::dnnl_util {

using memory = dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

/// The process-wide CPU engine.
inline dnnl::engine& cpuEngine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

/// A stream on the CPU engine, one per thread, reused across calls (creating one per primitive
/// call costs microseconds that matter for small convolutions at batch 1).
inline dnnl::stream& cpuStream() {
  static thread_local dnnl::stream s(cpuEngine());
  return s;
}

/// A primitive's arguments held on the stack. oneDNN's C++ `primitive::execute` takes a
/// std::unordered_map and copies it into a std::vector, so every call allocated and freed its nodes,
/// buckets and the vector: at batch 1, where each of mnv2_fmnist's 52 convolutions runs in a few
/// microseconds, malloc and free were about a tenth of the run (`perf`). The memory objects must
/// outlive execute(); add() only records their handles.
class ExecArgs {
 public:
  ExecArgs(std::initializer_list<std::pair<int, const memory*>> args) {
    for (const auto& [arg, m] : args) add(arg, *m);
  }
  void add(int arg, const memory& m) {
    if (n_ == kMax) throw std::logic_error("ExecArgs: more than 8 arguments");
    a_[n_++] = {arg, m.get(true)};
  }
  void execute(const dnnl::primitive& p, dnnl::stream& s) const {
    dnnl::error::wrap_c_api(dnnl_primitive_execute(p.get(), s.get(), n_, a_.data()), "could not execute a primitive");
  }

 private:
  static constexpr int kMax = 8;
  std::array<dnnl_exec_arg_t, kMax> a_{};
  int n_ = 0;
};

/// Holds OpenMP to one thread while it lives, when `one` (then restores the previous count). For
/// small work, where an OpenMP region's start and end cost more than the work itself: oneDNN's
/// eltwise, softmax, layer-normalization and pooling primitives then run their loop on the calling
/// thread (each element or row the same way on any number of threads, so the bits do not change);
/// held around a convolution's creation too, the primitive is planned for one thread
/// (oneThreadCall).
class SingleThreadIf {
 public:
  explicit SingleThreadIf(bool one) : saved_(one ? omp_get_max_threads() : 0) {
    if (one) omp_set_num_threads(1);
  }
  ~SingleThreadIf() {
    if (saved_ > 0) omp_set_num_threads(saved_);
  }
  SingleThreadIf(const SingleThreadIf&) = delete;
  SingleThreadIf& operator=(const SingleThreadIf&) = delete;

 private:
  int saved_;
};

/// Multiply-adds per call below which a convolution or matrix product on oneDNN (int8 in
/// dnnl_int8.cpp, fp32 convolutions and products in dnnl_kernels.cpp) is made and run on the calling thread
/// (SingleThreadIf around the primitive's creation, which fixes the threads its kernel splits the
/// work over, and around each call): at batch 1 the OpenMP region of each such call costs more than
/// the second thread saves. Depthwise convolutions do fewer multiply-adds per microsecond than
/// dense ones (one input channel per output: little reuse; fp32 on one thread of the AMD EPYC below
/// 34-37 per ns against ~75), so theirs is the lower limit.
///
/// Measured with a trial switch, whole files in alternating turns, lwc bench --threads 2. 2-core
/// Xeon (AMX, VNNI), 2026-12-03, int8 at 2^18 against none: INT8 mnv2_fmnist batch 1 0.67
/// (0.60-1.03) of the time, lenet5 0.74, lenet300 0.66, tinyformer 0.79, resnet_fmnist 0.95; 2^20
/// no better; the whole run on one thread was slower there (tinyformer 0.164 vs 0.124 ms); fp32
/// convolutions at 2^18 level (mnv2_fmnist 0.90-1.02, resnet_fmnist 0.96-1.11). Per-node profiles
/// alone favoured two threads even at 30 000 multiply-adds: the cost showed between the calls. 2-core
/// AMD EPYC (AVX512-VNNI; a VM where an empty two-thread OpenMP region costs ~2.9 us), 2026-12-04,
/// four to six pairs per row: fp32 convolutions at 2^18 against none, mnv2_fmnist batch 1 0.48-0.58
/// (each of its 52 convolutions ~5 us slower on two threads), lenet5 0.66, tinyformer 0.91,
/// resnet_fmnist 0.97, batch 32 and torchvision mobilenet_v2 / resnet50 level; then dense layers at
/// 2^20 against 2^18: fp32 mnv2_fmnist batch 1 0.68-0.76, INT8 0.64-0.65 and resnet_fmnist 0.92-0.95,
/// the rest level (batch 32, mobilenet_v2, lenet5, lenet300, tinyformer, shufflenet). Every layer
/// at 2^20 had cost 10-12 % at batch 32 on fp32 mnv2_fmnist and 4-10 % on INT8 mobilenet_v2 at
/// batch 1, all of it in depthwise layers (per-node profiles: fp32 884 736 multiply-add ones 19 us
/// on two threads, 24 on one; int8 ones of 12-27 us, 2-18 us slower on one). Integer sums are
/// exact, and oneDNN's float convolutions sum each output in the same order on any number of
/// threads (unit tests on 1, 2 and 3 threads), so the bits do not change.
constexpr int64_t kOneThreadMacs = int64_t{1} << 20;
constexpr int64_t kOneThreadDepthwiseMacs = int64_t{1} << 18;
/// Whether a call of `macs` multiply-adds runs on one thread (see kOneThreadMacs). `depthwise`: a
/// grouped convolution with one input channel per group.
inline bool oneThreadCall(int64_t macs, bool depthwise) {
  return macs < (depthwise ? kOneThreadDepthwiseMacs : kOneThreadMacs);
}
/// Appended to the implementation name in the profile for such calls.
constexpr const char* kOneThreadSuffix = ", 1 thread";

/// Elements below which the eltwise, softmax, layer-normalization and pooling kernels run their
/// primitive on one thread (SingleThreadIf). Per-node profiles at batch 1 on a 2-core Xeon, in turns
/// with and without (2026-12-03): tinyformer_fmnist's five LayerNormalizations 0.031-0.033 ->
/// 0.021-0.023 ms, its two GELUs 0.009 -> 0.006 ms, lenet5's max pools 3-6 -> 2-5 us each; 2^14 and
/// 2^16 gave the same. The guard is held around the primitive's creation too (as for convolutions):
/// until 2026-12-04 only the calls were, and a softmax made under two threads still cost 5.5 us per
/// call on one against 1.5 us when made under one (tinyformer_fmnist's 4 x 16 x 16 attention
/// softmaxes at batch 1, 2-core AMD EPYC; whole file, four alternating pairs: FP32 0.71-0.79 of the
/// time, INT8 0.70, batch 32 level, lenet5 and mnv2_fmnist level).
constexpr int64_t kSmallPrimitiveElements = int64_t{1} << 14;

/// True when every element of `v` is `value` (a convolution's strides or pads).
inline bool allEqual(const std::vector<int64_t>& v, int64_t value) {
  return std::all_of(v.begin(), v.end(), [value](int64_t e) { return e == value; });
}

/// oneDNN source and destination dims [N, C, H, W] of a 2-D convolution of input `xs` (logical
/// NCHW) to `oc` channels of `out` pixels. `nhwc_bytes`: the activations are stored NHWC (or each
/// image has one pixel, where NCHW has the same bytes). A pointwise convolution (1x1, stride 1, no
/// padding) of such data is one matrix product over all N*H*W pixels: it is given to oneDNN as a
/// single image of N*H*W x 1 pixels, the same bytes, so that its kernels block over every pixel
/// instead of each image's few (mnv2_fmnist's 320 -> 1280 layer on 1x1 pixels at batch 32: int8
/// 83 -> 33 us, fp32 328 -> 122 us; a 784 -> 300 int8 Gemm 45 -> 19 us). The sum over input
/// channels keeps its order, so the bits do not change.
inline std::pair<memory::dims, memory::dims> convDims(const std::vector<int64_t>& xs, int64_t oc, int64_t kh,
                                                      int64_t kw, const std::vector<int64_t>& strides,
                                                      const std::vector<int64_t>& pads_begin,
                                                      const std::vector<int64_t>& pads_end,
                                                      const std::vector<int64_t>& out, bool nhwc_bytes) {
  const bool pointwise = nhwc_bytes && kh == 1 && kw == 1 && xs[0] > 1 && allEqual(strides, 1) &&
                         allEqual(pads_begin, 0) && allEqual(pads_end, 0);
  if (pointwise) {
    const int64_t pixels = xs[0] * xs[2] * xs[3];
    return {{1, xs[1], pixels, 1}, {1, oc, pixels, 1}};
  }
  return {{xs[0], xs[1], xs[2], xs[3]}, {xs[0], oc, out[0], out[1]}};
}

/// A oneDNN memory object for a per-call temporary (a blocked copy of an activation), backed by a
/// buffer from the session's BufferPool instead of oneDNN's own allocator: the buffer is reused by
/// the next call rather than malloc'd and freed each time (which fragmented the heap: calibration's
/// peak RSS grew by ~18 MB between the first and second batch). `keep` must outlive the call.
inline memory scratchMemory(const memory::desc& d, lwc::Tensor& keep) {
  keep = lwc::Tensor::uninitialized(lwc::DType::UInt8, {static_cast<int64_t>(d.get_size())});
  return memory(d, cpuEngine(), keep.raw());
}

/// block(0) .. block(blocks - 1), each on one thread: in turn on the calling thread when there is
/// one block or one thread is asked for (without an OpenMP region: libgomp makes a futex call even
/// for a team of one, see parallelFor in common.h; the caller's thread count is restored), else
/// spread over `threads` threads (<= 0: the process-wide count). False when a block returned false.
template <typename Block>
bool runBlocks(int64_t blocks, int threads, Block&& block) {
  if (blocks == 1 || threads == 1) {
    const SingleThreadIf one(true);
    bool done = true;
    for (int64_t blk = 0; blk < blocks && done; ++blk) done = block(blk);
    return done;
  }
  std::atomic<bool> ok{true};
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads > 0 ? threads : omp_get_max_threads())
  for (int64_t blk = 0; blk < blocks; ++blk) {
    omp_set_num_threads(1);  // this block's oneDNN call on one thread, also outside an active region
    if (!block(blk)) ok = false;
  }
  return ok;
}

/// Adds `bias` (one value per column) to rows r0 .. r0 + mr - 1, columns c0 .. c0 + nc - 1 of the
/// row-major c: each block's thread does so right after computing the block, while it is in cache.
inline void addRowBias(float* c, int64_t ldc, const float* bias, int64_t r0, int64_t mr, int64_t c0, int64_t nc) {
  if (!bias) return;
  for (int64_t r = r0; r < r0 + mr; ++r) {
    float* __restrict row = c + r * ldc;
    for (int64_t j = c0; j < c0 + nc; ++j) row[j] += bias[j];
  }
}

/// c = op(a) · b, row-major (op(a) = a [m x k] for transa 'N', aᵀ of a [k x m] for 'T'; b [k x n]),
/// with the same bits on any number of threads: c is cut into fixed blocks of row_block x col_block,
/// each computed by a single-threaded sgemm over the whole k. oneDNN's multi-threaded sgemm splits
/// the k sum between threads for some shapes (few outputs, long sums), so its last bits would depend
/// on the thread count. threads <= 0: the process-wide count. False when an sgemm call fails.
/// `bias` (n values, optional) is added to every row, by each block's thread right after its sgemm.
inline bool sgemmFixedBlocks(char transa, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                             int64_t ldb, float* c, int64_t ldc, int64_t row_block, int64_t col_block, int threads,
                             const float* bias = nullptr) {
  if (m <= 0 || n <= 0) return true;
  const int64_t rb = (m + row_block - 1) / row_block, cb = (n + col_block - 1) / col_block;
  return runBlocks(rb * cb, threads, [&](int64_t blk) {
    const int64_t r0 = (blk / cb) * row_block, c0 = (blk % cb) * col_block;
    const int64_t mr = std::min(row_block, m - r0), nc = std::min(col_block, n - c0);
    const float* ab = transa == 'N' ? a + r0 * lda : a + r0;
    if (dnnl_sgemm(transa, 'N', mr, nc, k, 1.0f, ab, lda, b + c0, ldb, 0.0f, c + r0 * ldc + c0, ldc) != dnnl_success)
      return false;
    addRowBias(c, ldc, bias, r0, mr, c0, nc);
    return true;
  });
}

}  // namespace lwc::engine::dnnl_util
