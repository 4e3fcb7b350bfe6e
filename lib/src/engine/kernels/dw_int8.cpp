#include "engine/kernels/dw_int8.h"

#include <algorithm>
#include <cstring>

#ifdef LWC_INT8_X86
// GCC 12's AVX-512 intrinsics start their results from _mm512_undefined_*() (`__m512i __Y = __Y;`),
// which -Wmaybe-uninitialized reports at every use once inlined; nothing here is uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define LWC_DW_X86 1
#define LWC_DW_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))
#endif

namespace lwc::engine::dw {

// How it works: vpdpbusd multiplies 4 unsigned input bytes by 4 signed weight bytes in each of 16
// 32-bit lanes and adds the four products (exactly) to the lane's int32 accumulator. Lane ch takes
// one row of the 3x3 window of channel ch: input bytes [x(iw-1), x(iw), x(iw+1), any] against
// weights [w0, w1, w2, 0]. Those input quadruples are built once per input row and output column
// ("triplet rows", 64 bytes per 16 channels, regrouped by one vpermb) and kept in a ring of three
// rows, so each output pixel costs three plain 64-byte loads and three vpdpbusd per 16 channels, and
// each input row is regrouped once for all the output rows that read it. Taps outside the input
// read the input zero point; their products are cancelled by bias_eff, which subtracts
// x_zp * sum(w) once per channel, so the accumulator is bias + sum (x - x_zp) * w, the reference's.

#ifdef LWC_DW_X86
bool available() {
  return int8k::haveAvx512Vnni() && __builtin_cpu_supports("avx512vbmi");
}
#else
bool available() { return false; }
#endif

std::vector<int8_t> packWeights(const int8_t* w, int64_t c) {
  const int64_t blocks = (c + 15) / 16;
  std::vector<int8_t> p(static_cast<size_t>(blocks * 3 * 64), 0);
  for (int64_t b = 0; b < blocks; ++b)
    for (int kh = 0; kh < 3; ++kh)
      for (int64_t ch = 0; ch < 16 && b * 16 + ch < c; ++ch)
        for (int kw = 0; kw < 3; ++kw)
          p[static_cast<size_t>((b * 3 + kh) * 64 + ch * 4 + kw)] = w[(b * 16 + ch) * 9 + kh * 3 + kw];
  return p;
}

#ifdef LWC_DW_X86
namespace {

// Output columns per pass: the three triplet rows of a pass (cols * blocks * 64 bytes each) stay
// within about 24 KB, so they are still in the L1 cache when the next output rows read them.
int64_t chunkCols(const Geometry& g) {
  const int64_t blocks = (g.c + 15) / 16;
  const int64_t cols = std::max<int64_t>(4, 128 / blocks);
  return std::min(cols, g.ow);
}

class Rows {
 public:
  Rows(const Geometry& g, const uint8_t* x, const int8_t* packed, const Requant& q, uint8_t* y, const uint8_t* zrow,
       uint8_t* ring, const uint8_t* zp_row)
      : g_(g), x_(x), w_(reinterpret_cast<const __m512i*>(packed)), q_(q), y_(y), zrow_(zrow), ring_(ring),
        zp_row_(zp_row), blocks_((g.c + 15) / 16), full_blocks_(g.c % 16 == 0 ? blocks_ : blocks_ - 1),
        tail_(static_cast<__mmask16>((1u << (g.c % 16 == 0 ? 16 : g.c % 16)) - 1u)), cols_(chunkCols(g)),
        row_bytes_(cols_ * blocks_ * 64) {}

  LWC_DW_TARGET void run(int64_t r0, int64_t r1) {
    alignas(64) uint8_t idx_bytes[64];  // vpermb: byte 4 * ch + kw takes byte 16 * kw + ch
    for (int ch = 0; ch < 16; ++ch)
      for (int kw = 0; kw < 4; ++kw) idx_bytes[4 * ch + kw] = static_cast<uint8_t>(16 * kw + ch);
    const __m512i idx = _mm512_load_si512(idx_bytes);
    const __m512 flo = _mm512_set1_ps(q_.flo), fhi = _mm512_set1_ps(q_.fhi);
    const __m512i yzp = _mm512_set1_epi32(q_.y_zp);
    // Locals, not members: the byte stores below may alias anything, which would make the compiler
    // reload every member after each store.
    const int64_t C = g_.c, blocks = blocks_, full_blocks = full_blocks_, ow_n = g_.ow;
    const __mmask16 tail = tail_;
    const __m512i* __restrict wts = w_;
    const int32_t* __restrict bias = q_.bias_eff;
    const float* __restrict mul = q_.mul;
    auto requant = [&](__m512i acc, __m512i bi, __m512 mu) LWC_DW_TARGET {
      return int8k::requant16(acc, bi, mu, flo, fhi, yzp);
    };
    // Tiles of 8 output rows x cols_ output columns, column tiles inner: the input rows of 8
    // output rows stay in the L2 cache while the column tiles pass over them.
    for (int64_t rb = r0; rb < r1; rb += 8) {
      const int64_t re = std::min(rb + 8, r1);
      for (int64_t c0 = 0; c0 < ow_n; c0 += cols_) {
        const int64_t c1 = std::min(c0 + cols_, ow_n);
        tag_[0] = tag_[1] = tag_[2] = -1;
        for (int64_t r = rb; r < re; ++r) {
          const int64_t n = r / g_.oh, oh = r % g_.oh;
          const uint8_t* t[3];
          for (int kh = 0; kh < 3; ++kh) t[kh] = tripletRow(n, oh * g_.stride_h - g_.pad_t + kh, c0, c1, idx);
          const uint8_t* __restrict t0 = t[0];
          const uint8_t* __restrict t1 = t[1];
          const uint8_t* __restrict t2 = t[2];
          uint8_t* __restrict out = y_ + (r * ow_n + c0) * C;
          // Four output pixels at a time: their accumulate-and-requantize chains (about 45 cycles of
          // latency each) are independent, so they overlap.
          auto block = [&](int64_t o, int64_t b) LWC_DW_TARGET {
            const __m512i* w = wts + b * 3;
            __m512i acc = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_loadu_si512(t0 + o), _mm512_loadu_si512(w));
            acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(t1 + o), _mm512_loadu_si512(w + 1));
            return _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(t2 + o), _mm512_loadu_si512(w + 2));
          };
          const int64_t stride = blocks * 64;  // triplet bytes per output column
          int64_t ow = c0;
          for (; ow + 4 <= c1; ow += 4, out += 4 * C) {
            const int64_t o = (ow - c0) * stride;
            for (int64_t b = 0; b < blocks; ++b) {
              const __m512i a0 = block(o + b * 64, b), a1 = block(o + stride + b * 64, b);
              const __m512i a2 = block(o + 2 * stride + b * 64, b), a3 = block(o + 3 * stride + b * 64, b);
              if (b < full_blocks) {
                const __m512i bi = _mm512_loadu_si512(bias + b * 16);
                const __m512 mu = _mm512_loadu_ps(mul + b * 16);
                _mm_storeu_si128(reinterpret_cast<__m128i*>(out + b * 16), requant(a0, bi, mu));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(out + C + b * 16), requant(a1, bi, mu));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * C + b * 16), requant(a2, bi, mu));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 3 * C + b * 16), requant(a3, bi, mu));
              } else {
                const __m512i bi = _mm512_maskz_loadu_epi32(tail, bias + b * 16);
                const __m512 mu = _mm512_maskz_loadu_ps(tail, mul + b * 16);
                _mm_mask_storeu_epi8(out + b * 16, tail, requant(a0, bi, mu));
                _mm_mask_storeu_epi8(out + C + b * 16, tail, requant(a1, bi, mu));
                _mm_mask_storeu_epi8(out + 2 * C + b * 16, tail, requant(a2, bi, mu));
                _mm_mask_storeu_epi8(out + 3 * C + b * 16, tail, requant(a3, bi, mu));
              }
            }
          }
          for (; ow < c1; ++ow, out += C) {
            const int64_t o = (ow - c0) * stride;
            for (int64_t b = 0; b < blocks; ++b) {
              const __mmask16 m = b < full_blocks ? static_cast<__mmask16>(0xFFFF) : tail;
              const __m128i v = requant(block(o + b * 64, b), _mm512_maskz_loadu_epi32(m, bias + b * 16),
                                        _mm512_maskz_loadu_ps(m, mul + b * 16));
              _mm_mask_storeu_epi8(out + b * 16, m, v);
            }
          }
        }
      }
    }
  }

 private:
  // The triplet row of input row ih of image n: for each output column and channel, the bytes
  // [x(iw-1), x(iw), x(iw+1), x(iw+1)] around the column's centre (x_zp outside the input). Ring
  // slot (n * h + ih) mod 3: the three rows one output row reads are consecutive, so distinct.
  LWC_DW_TARGET const uint8_t* tripletRow(int64_t n, int64_t ih, int64_t c0, int64_t c1, __m512i idx) {
    if (ih < 0 || ih >= g_.h) return zp_row_;
    const int64_t key = n * g_.h + ih, slot = key % 3;
    uint8_t* dst = ring_ + slot * row_bytes_;
    if (tag_[slot] == key) return dst;
    tag_[slot] = key;
    const int64_t C = g_.c;
    const uint8_t* xr = x_ + key * g_.w * C;
    const int64_t blocks = blocks_, full_blocks = full_blocks_, W = g_.w;
    const __mmask16 tail = tail_;
    // Three pixels' 16 channel bytes side by side (the fourth lane meets zero weights, any bytes do),
    // regrouped channel by channel.
    auto put = [&](const uint8_t* p0, const uint8_t* p1, const uint8_t* p2) LWC_DW_TARGET {
      int64_t b = 0;
      for (; b < full_blocks; ++b, dst += 64) {
        __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p0 + b * 16)));
        v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1 + b * 16)), 1);
        v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p2 + b * 16)), 2);
        _mm512_storeu_si512(dst, _mm512_permutexvar_epi8(idx, v));
      }
      if (b < blocks) {
        __m512i v = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(tail, p0 + b * 16));
        v = _mm512_inserti32x4(v, _mm_maskz_loadu_epi8(tail, p1 + b * 16), 1);
        v = _mm512_inserti32x4(v, _mm_maskz_loadu_epi8(tail, p2 + b * 16), 2);
        _mm512_storeu_si512(dst, _mm512_permutexvar_epi8(idx, v));
        dst += 64;
      }
    };
    for (int64_t ow = c0; ow < c1; ++ow) {
      const int64_t iw = ow * g_.stride_w - g_.pad_l;
      if (iw >= 0 && iw + 2 < W) {
        const uint8_t* p = xr + iw * C;
        if (C == 16) {  // the three pixels are 48 consecutive bytes
          _mm512_storeu_si512(dst, _mm512_permutexvar_epi8(idx, _mm512_maskz_loadu_epi8(0xFFFFFFFFFFFFull, p)));
          dst += 64;
        } else {
          put(p, p + C, p + 2 * C);
        }
        continue;
      }
      put(iw >= 0 && iw < W ? xr + iw * C : zrow_, iw + 1 >= 0 && iw + 1 < W ? xr + (iw + 1) * C : zrow_,
          iw + 2 >= 0 && iw + 2 < W ? xr + (iw + 2) * C : zrow_);
    }
    return ring_ + slot * row_bytes_;
  }

  const Geometry& g_;
  const uint8_t* x_;
  const __m512i* w_;
  const Requant& q_;
  uint8_t* y_;
  const uint8_t* zrow_;
  uint8_t* ring_;
  const uint8_t* zp_row_;
  int64_t blocks_, full_blocks_;  ///< 16-channel blocks; those without a channel tail
  __mmask16 tail_;                 ///< channels of the last block
  int64_t cols_, row_bytes_;
  int64_t tag_[3] = {-1, -1, -1};
};

}  // namespace
#endif

void runRows(const Geometry& g, const uint8_t* x, const int8_t* packed, const Requant& q, uint8_t* y,
             int64_t row_begin, int64_t row_end) {
#ifdef LWC_DW_X86
  if (row_begin >= row_end) return;
  const int64_t blocks = (g.c + 15) / 16, row_bytes = chunkCols(g) * blocks * 64;
  // Per thread and reused: the ring of three triplet rows, then a triplet row of zero points (rows
  // above and below the input), then a pixel of zero points (columns left and right of it).
  thread_local std::vector<uint8_t> buf;
  const size_t need = static_cast<size_t>(4 * row_bytes + blocks * 16);
  if (buf.size() < need) buf.resize(need);
  uint8_t* ring = buf.data();
  std::memset(ring + 3 * row_bytes, q.x_zp, static_cast<size_t>(row_bytes + blocks * 16));
  Rows(g, x, packed, q, y, ring + 4 * row_bytes, ring, ring + 3 * row_bytes).run(row_begin, row_end);
#else
  (void)g, (void)x, (void)packed, (void)q, (void)y, (void)row_begin, (void)row_end;
#endif
}

}  // namespace lwc::engine::dw
