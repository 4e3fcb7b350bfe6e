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
// each input row is regrouped once for all the output rows that read it. With stride 1 the ring
// holds quadruplets [x(iw), .., x(iw+3)] for pairs of output columns instead: the pair's left pixel
// takes weights [w0, w1, w2, 0], its right one [0, w0, w1, w2], so a pixel costs 1.5 loads and half
// a regrouping (standalone, 32 x 14 x 14 x 96 on 2 threads: 52-55 -> 47-50 us). Taps outside the input
// read the input zero point; their products are cancelled by bias_eff, which subtracts
// x_zp * sum(w) once per channel, so the accumulator is bias + sum (x - x_zp) * w, the reference's.

#ifdef LWC_DW_X86
bool available() {
  return int8k::haveAvx512Vnni() && __builtin_cpu_supports("avx512vbmi");
}
#else
bool available() { return false; }
#endif

std::vector<int8_t> packWeights(const int8_t* w, int64_t c, int64_t k) {
  const int64_t blocks = (c + 15) / 16, groups = k == 5 ? 4 : 1;
  std::vector<int8_t> p(static_cast<size_t>(blocks * k * groups * 64), 0);
  for (int64_t b = 0; b < blocks; ++b)
    for (int64_t kh = 0; kh < k; ++kh)
      for (int64_t ch = 0; ch < 16 && b * 16 + ch < c; ++ch) {
        const int8_t* r = w + ((b * 16 + ch) * k + kh) * k;  // the channel's kernel row
        int8_t* g = p.data() + ((b * k + kh) * groups) * 64 + ch * 4;
        if (k == 3) {
          g[0] = r[0], g[1] = r[1], g[2] = r[2];
          continue;
        }
        g[0] = r[0], g[1] = r[1], g[2] = r[2], g[3] = r[3];  // [w0, w1, w2, w3]
        g[64 + 2] = r[4];                                     // [0, 0, w4, 0]
        g[128 + 1] = r[0], g[128 + 2] = r[1], g[128 + 3] = r[2];  // [0, w0, w1, w2]
        g[192 + 2] = r[3], g[192 + 3] = r[4];                 // [0, 0, w3, w4]
      }
  return p;
}

#ifdef LWC_DW_X86
namespace {

// Output columns per pass: the three triplet rows of a pass (cols * blocks * 64 bytes each) stay
// within about 24 KB, so they are still in the L1 cache when the next output rows read them.
// With stride 1 the ring holds quadruplets for pairs of columns (half the bytes per column), so
// twice the columns, an even number (a pair never straddles two passes).
// 5 x 5: five ring rows of about 76 / blocks quadruplets each (the same bytes as 3 x 3's three).
int64_t chunkCols(const Geometry& g) {
  const int64_t blocks = (g.c + 15) / 16;
  if (g.k == 5) {
    const int64_t units = std::max<int64_t>(1, 76 / blocks);
    return std::min(g.stride_w == 1 ? std::max<int64_t>(4, 2 * units) & ~int64_t{1} : std::max<int64_t>(4, units), g.ow);
  }
  const int64_t cols =
      g.stride_w == 1 ? std::max<int64_t>(4, 256 / blocks) & ~int64_t{1} : std::max<int64_t>(4, 128 / blocks);
  return std::min(cols, g.ow);
}

// The 64-byte groups per block a ring row holds for `cols` output columns: 3 x 3 one triplet per
// column, or (stride 1) one quadruplet per pair; 5 x 5 quadruplets every second input column, one
// past the last pair (stride 1) or column (stride 2), since a window reads two.
int64_t ringEntries(const Geometry& g, int64_t cols) {
  if (g.k == 5) return (g.stride_w == 1 ? (cols + 1) / 2 : cols) + 1;
  return g.stride_w == 1 ? (cols + 1) / 2 : cols;
}

class Rows {
 public:
  Rows(const Geometry& g, const uint8_t* x, const int8_t* packed, const Requant& q, uint8_t* y, const uint8_t* zrow,
       uint8_t* ring, const uint8_t* zp_row)
      : g_(g), x_(x), w_(reinterpret_cast<const __m512i*>(packed)), q_(q), y_(y), zrow_(zrow), ring_(ring),
        zp_row_(zp_row), blocks_((g.c + 15) / 16), full_blocks_(g.c % 16 == 0 ? blocks_ : blocks_ - 1),
        tail_(static_cast<__mmask16>((1u << (g.c % 16 == 0 ? 16 : g.c % 16)) - 1u)), quad_(g.stride_w == 1),
        k_(g.k), cols_(chunkCols(g)), row_bytes_(ringEntries(g, cols_) * blocks_ * 64),
        in0_((g.pad_l + g.stride_w - 1) / g.stride_w),
        in1_(g.w - 3 + g.pad_l >= 0 ? (g.w - 3 + g.pad_l) / g.stride_w + 1 : 0) {}

  LWC_DW_TARGET void run(int64_t r0, int64_t r1) {
    alignas(64) uint8_t idx_bytes[64];  // vpermb: byte 4 * ch + kw takes byte 16 * kw + ch
    for (int ch = 0; ch < 16; ++ch)
      for (int kw = 0; kw < 4; ++kw) idx_bytes[4 * ch + kw] = static_cast<uint8_t>(16 * kw + ch);
    const __m512i idx = _mm512_load_si512(idx_bytes);
    // Tiles of 8 output rows x cols_ output columns, column tiles inner: the input rows of 8
    // output rows stay in the L2 cache while the column tiles pass over them.
    // Where one column tile spans the row, the triplet rows stay valid from one row tile to the
    // next, so the whole range is one tile: each input row is regrouped once, not again for the
    // next 8 rows (with 8-row tiles a 14 x 14 image had about 17 rows regrouped for its 14).
    const int64_t oh_n = g_.oh, ow_n = g_.ow, tile_rows = cols_ >= ow_n ? r1 - r0 : 8;
    for (int64_t rb = r0; rb < r1; rb += tile_rows) {
      const int64_t re = std::min(rb + tile_rows, r1);
      for (int64_t c0 = 0; c0 < ow_n; c0 += cols_) {
        const int64_t c1 = std::min(c0 + cols_, ow_n);
        std::fill(std::begin(tag_), std::end(tag_), -1);
        int64_t n = rb / oh_n, oh = rb % oh_n;
        for (int64_t r = rb; r < re; ++r) {
          const uint8_t* t[5];
          uint8_t* out = y_ + (r * ow_n + c0) * g_.c;
          if (k_ == 5) {  // quadruplets from every second input column, from the chunk's first window
            const int64_t iw0 = c0 * g_.stride_w - g_.pad_l, entries = ringEntries(g_, c1 - c0);
            for (int kh = 0; kh < 5; ++kh) t[kh] = quadRow(n, oh * g_.stride_h - g_.pad_t + kh, iw0, entries, idx);
            if (quad_)
              q_.sat ? outputRow5<true, false>(t, out, c1 - c0) : outputRow5<false, false>(t, out, c1 - c0);
            else
              q_.sat ? outputRow5<true, true>(t, out, c1 - c0) : outputRow5<false, true>(t, out, c1 - c0);
            if (++oh == oh_n) oh = 0, ++n;
            continue;
          }
          if (quad_) {
            for (int kh = 0; kh < 3; ++kh) t[kh] = quadRow(n, oh * g_.stride_h - g_.pad_t + kh, c0 - g_.pad_l, (c1 - c0 + 1) / 2, idx);
            if (q_.sat)
              outputRowQuad<true>(t[0], t[1], t[2], out, c1 - c0);
            else
              outputRowQuad<false>(t[0], t[1], t[2], out, c1 - c0);
            if (++oh == oh_n) oh = 0, ++n;
            continue;
          }
          for (int kh = 0; kh < 3; ++kh) t[kh] = tripletRow(n, oh * g_.stride_h - g_.pad_t + kh, c0, c1, idx);
          if (q_.sat)
            outputRow<true>(t[0], t[1], t[2], out, c1 - c0);
          else
            outputRow<false>(t[0], t[1], t[2], out, c1 - c0);
          if (++oh == oh_n) oh = 0, ++n;
        }
      }
    }
  }

 private:
  // One block's registers for an output row: its mask, 3 x 3 weights (zero for 5 x 5, whose rows
  // read their own), bias and multipliers, and the sums' starting value (the bias where four are
  // requantized together, Sat on a whole block).
  struct Block {
    bool full;
    __mmask16 m;
    __m512i w0, w1, w2, bi, init;
    __m512 mu;
  };
  // An output row's constants, copied out of the members once (outputRow, outputRowQuad).
  struct RowConstants {
    const __m512i* w;
    const int32_t* bias;
    const float* mul;
    int64_t full_blocks;
    __mmask16 tail;
    __m512 flo, fhi;
    __m512i yzp;
    int8k::Requant4 four;
    LWC_DW_TARGET explicit RowConstants(const Rows& r)
        : w(r.w_), bias(r.q_.bias_eff), mul(r.q_.mul), full_blocks(r.full_blocks_), tail(r.tail_),
          flo(_mm512_set1_ps(r.q_.flo)), fhi(_mm512_set1_ps(r.q_.fhi)), yzp(_mm512_set1_epi32(r.q_.y_zp)),
          four(r.q_) {}
    LWC_DW_TARGET Block block(int64_t b, bool sat, bool weights3 = true) const {
      Block k;
      k.full = b < full_blocks;
      k.m = k.full ? static_cast<__mmask16>(0xFFFF) : tail;
      k.w0 = weights3 ? _mm512_loadu_si512(w + b * 3) : _mm512_setzero_si512();
      k.w1 = weights3 ? _mm512_loadu_si512(w + b * 3 + 1) : _mm512_setzero_si512();
      k.w2 = weights3 ? _mm512_loadu_si512(w + b * 3 + 2) : _mm512_setzero_si512();
      k.bi = _mm512_maskz_loadu_epi32(k.m, bias + b * 16);
      k.mu = _mm512_maskz_loadu_ps(k.m, mul + b * 16);
      k.init = sat && k.full ? k.bi : _mm512_setzero_si512();
      return k;
    }
  };

  // One output row's `cols` pixels from its three triplet rows, block by block (the block's
  // weights, bias and multipliers stay in registers while its pixels pass), four pixels at a time:
  // their accumulate-and-requantize chains (about 45 cycles of latency each) are independent, so
  // they overlap. Sat: accumulators start from the bias and four are requantized together
  // (requant64); otherwise each by requant16.
  template <bool Sat>
  LWC_DW_TARGET void outputRow(const uint8_t* __restrict t0, const uint8_t* __restrict t1,
                               const uint8_t* __restrict t2, uint8_t* __restrict out, int64_t cols) {
    // Locals, not members: the byte stores below may alias anything, which would make the compiler
    // reload every member after each store.
    const int64_t C = g_.c, blocks = blocks_;
    const int64_t stride = blocks * 64;  // triplet bytes per output column
    const RowConstants k(*this);
    const __m512 flo = k.flo, fhi = k.fhi;
    const __m512i yzp = k.yzp;
    const int8k::Requant4& four = k.four;
    for (int64_t b = 0; b < blocks; ++b) {
      const auto [full, m, w0, w1, w2, bi, init, mu] = k.block(b, Sat);
      const uint8_t* p0 = t0 + b * 64;
      const uint8_t* p1 = t1 + b * 64;
      const uint8_t* p2 = t2 + b * 64;
      uint8_t* o = out + b * 16;
      auto acc = [&](int64_t k) LWC_DW_TARGET {
        const int64_t off = k * stride;
        __m512i a = _mm512_dpbusd_epi32(init, _mm512_loadu_si512(p0 + off), w0);
        a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(p1 + off), w1);
        return _mm512_dpbusd_epi32(a, _mm512_loadu_si512(p2 + off), w2);
      };
      auto one = [&](__m512i a) LWC_DW_TARGET { return int8k::requant16(a, bi, mu, flo, fhi, yzp); };
      int64_t ow = 0;
      for (; ow + 4 <= cols; ow += 4, p0 += 4 * stride, p1 += 4 * stride, p2 += 4 * stride, o += 4 * C) {
        const __m512i a0 = acc(0), a1 = acc(1), a2 = acc(2), a3 = acc(3);
        if (Sat && full) {
          int8k::storePieces(o, C, four(a0, a1, a2, a3, mu, mu, mu, mu));
        } else if (full) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o), one(a0));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + C), one(a1));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 2 * C), one(a2));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 3 * C), one(a3));
        } else {
          _mm_mask_storeu_epi8(o, m, one(a0));
          _mm_mask_storeu_epi8(o + C, m, one(a1));
          _mm_mask_storeu_epi8(o + 2 * C, m, one(a2));
          _mm_mask_storeu_epi8(o + 3 * C, m, one(a3));
        }
      }
      const __m512i rest_bias = Sat && full ? _mm512_setzero_si512() : bi;  // init holds the bias already
      for (; ow < cols; ++ow, p0 += stride, p1 += stride, p2 += stride, o += C)
        _mm_mask_storeu_epi8(o, m, int8k::requant16(acc(0), rest_bias, mu, flo, fhi, yzp));
    }
  }

  // Stride 1: one output row's `cols` pixels from its three quadruplet rows. A pair of output
  // columns (ow, ow + 1) reads one quadruplet [x(iw), x(iw+1), x(iw+2), x(iw+3)] per input row:
  // weights [w0, w1, w2, 0] give ow, the same weights one byte up, [0, w0, w1, w2], give ow + 1. So
  // a pixel costs 1.5 loads and the ring is built once per two columns; the products and the
  // requantization are those of outputRow, in the same order (the same bits).
  template <bool Sat>
  LWC_DW_TARGET void outputRowQuad(const uint8_t* __restrict t0, const uint8_t* __restrict t1,
                                   const uint8_t* __restrict t2, uint8_t* __restrict out, int64_t cols) {
    const int64_t C = g_.c, blocks = blocks_;
    const int64_t stride = blocks * 64;  // quadruplet bytes per pair of output columns
    const RowConstants k(*this);
    const __m512 flo = k.flo, fhi = k.fhi;
    const __m512i yzp = k.yzp;
    const int8k::Requant4& four = k.four;
    for (int64_t b = 0; b < blocks; ++b) {
      const auto [full, m, w0, w1, w2, bi, init, mu] = k.block(b, Sat);
      const __m512i v0 = _mm512_slli_epi32(w0, 8), v1 = _mm512_slli_epi32(w1, 8), v2 = _mm512_slli_epi32(w2, 8);
      const uint8_t* p0 = t0 + b * 64;
      const uint8_t* p1 = t1 + b * 64;
      const uint8_t* p2 = t2 + b * 64;
      uint8_t* o = out + b * 16;
      // The sums of pair k's two pixels (from the pointers' current position)
      auto pair = [&](int64_t k, __m512i& even, __m512i& odd) LWC_DW_TARGET {
        const int64_t off = k * stride;
        const __m512i x0 = _mm512_loadu_si512(p0 + off), x1 = _mm512_loadu_si512(p1 + off),
                      x2 = _mm512_loadu_si512(p2 + off);
        even = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, x0, w0), x1, w1), x2, w2);
        odd = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, x0, v0), x1, v1), x2, v2);
      };
      int64_t ow = 0;
      if (Sat && full) {
        for (; ow + 4 <= cols; ow += 4, p0 += 2 * stride, p1 += 2 * stride, p2 += 2 * stride, o += 4 * C) {
          __m512i e0, o0, e1, o1;
          pair(0, e0, o0), pair(1, e1, o1);
          int8k::storePieces(o, C, four(e0, o0, e1, o1, mu, mu, mu, mu));
        }
        if (ow < cols) {  // 1-3 pixels: one or two pairs (the sums past the row are not stored)
          __m512i e0, o0, e1 = _mm512_setzero_si512(), o1 = e1;
          pair(0, e0, o0);
          if (cols - ow > 2) pair(1, e1, o1);
          int8k::storePieces(o, C, four(e0, o0, e1, o1, mu, mu, mu, mu), cols - ow);
        }
        continue;
      }
      const __m512i rest_bias = Sat && full ? _mm512_setzero_si512() : bi;  // init holds the bias already
      for (; ow < cols; ow += 2, p0 += stride, p1 += stride, p2 += stride, o += 2 * C) {
        __m512i e, d;
        pair(0, e, d);
        _mm_mask_storeu_epi8(o, m, int8k::requant16(e, rest_bias, mu, flo, fhi, yzp));
        if (ow + 1 < cols) _mm_mask_storeu_epi8(o + C, m, int8k::requant16(d, rest_bias, mu, flo, fhi, yzp));
      }
    }
  }

  // 5 x 5: one output row's `cols` pixels from its five quadruplet rows, entry e holding
  // [x(iw), .., x(iw+3)] for iw = iw0 + 2e. A window of five reads two entries: with stride 2 (S2)
  // pixel j takes entries j and j + 1 with weights [w0, w1, w2, w3] and [0, 0, w4, 0]; with stride 1
  // the pair of pixels k (columns 2k, 2k + 1) takes entries k and k + 1, the left pixel with those
  // weights, the right one with [0, w0, w1, w2] and [0, 0, w3, w4]. Exact int32 sums, then the
  // requantization of outputRow: the reference's bits.
  template <bool Sat, bool S2>
  LWC_DW_TARGET void outputRow5(const uint8_t* const* t, uint8_t* __restrict out, int64_t cols) {
    const int64_t C = g_.c, blocks = blocks_;
    const int64_t stride = blocks * 64;  // bytes per entry
    const RowConstants k(*this);
    const __m512 flo = k.flo, fhi = k.fhi;
    const __m512i yzp = k.yzp;
    const int8k::Requant4& four = k.four;
    for (int64_t b = 0; b < blocks; ++b) {
      const Block bk = k.block(b, Sat, /*weights3=*/false);  // the weights: w5 below
      const bool full = bk.full;
      const __mmask16 m = bk.m;
      const __m512i bi = bk.bi, init = bk.init;
      const __m512 mu = bk.mu;
      const __m512i* w5 = k.w + b * 20;  // per kernel row: A, B, A', B'
      const uint8_t* p[5];
      for (int r = 0; r < 5; ++r) p[r] = t[r] + b * 64;
      uint8_t* o = out + b * 16;
      // Pixel j's sum (S2), or pair j's two (stride 1), from the entries at j and j + 1.
      auto one = [&](int64_t j) LWC_DW_TARGET {
        __m512i a = init;
        for (int r = 0; r < 5; ++r) {
          a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(p[r] + j * stride), _mm512_loadu_si512(w5 + 4 * r));
          a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(p[r] + (j + 1) * stride), _mm512_loadu_si512(w5 + 4 * r + 1));
        }
        return a;
      };
      auto pair = [&](int64_t j, __m512i& even, __m512i& odd) LWC_DW_TARGET {
        even = odd = init;
        for (int r = 0; r < 5; ++r) {
          const __m512i x0 = _mm512_loadu_si512(p[r] + j * stride), x1 = _mm512_loadu_si512(p[r] + (j + 1) * stride);
          even = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(even, x0, _mm512_loadu_si512(w5 + 4 * r)), x1, _mm512_loadu_si512(w5 + 4 * r + 1));
          odd = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(odd, x0, _mm512_loadu_si512(w5 + 4 * r + 2)), x1, _mm512_loadu_si512(w5 + 4 * r + 3));
        }
      };
      const __m512i rest_bias = Sat && full ? _mm512_setzero_si512() : bi;  // init holds the bias already
      auto store1 = [&](uint8_t* d, __m512i a) LWC_DW_TARGET {
        _mm_mask_storeu_epi8(d, m, int8k::requant16(a, rest_bias, mu, flo, fhi, yzp));
      };
      int64_t ow = 0;
      if constexpr (S2) {
        if (Sat && full) {
          for (; ow + 4 <= cols; ow += 4, o += 4 * C)
            int8k::storePieces(o, C, four(one(ow), one(ow + 1), one(ow + 2), one(ow + 3), mu, mu, mu, mu));
          if (ow < cols) {  // 1-3 pixels (the sums past the row are not stored)
            const __m512i z = _mm512_setzero_si512();
            const int64_t left = cols - ow;
            int8k::storePieces(o, C, four(one(ow), left > 1 ? one(ow + 1) : z, left > 2 ? one(ow + 2) : z, z, mu, mu, mu, mu),
                               left);
          }
          continue;
        }
        for (; ow < cols; ++ow, o += C) store1(o, one(ow));
      } else {
        if (Sat && full) {
          for (; ow + 4 <= cols; ow += 4, o += 4 * C) {
            __m512i e0, o0, e1, o1;
            pair(ow / 2, e0, o0), pair(ow / 2 + 1, e1, o1);
            int8k::storePieces(o, C, four(e0, o0, e1, o1, mu, mu, mu, mu));
          }
          if (ow < cols) {  // 1-3 pixels: one or two pairs
            __m512i e0, o0, e1 = _mm512_setzero_si512(), o1 = e1;
            pair(ow / 2, e0, o0);
            if (cols - ow > 2) pair(ow / 2 + 1, e1, o1);
            int8k::storePieces(o, C, four(e0, o0, e1, o1, mu, mu, mu, mu), cols - ow);
          }
          continue;
        }
        for (; ow < cols; ow += 2, o += 2 * C) {
          __m512i e, d;
          pair(ow / 2, e, d);
          store1(o, e);
          if (ow + 1 < cols) store1(o + C, d);
        }
      }
    }
  }

  // The quadruplet row of input row ih of image n: `entries` entries, entry e holding per channel
  // the bytes [x(iw), x(iw+1), x(iw+2), x(iw+3)], iw = iw0 + 2e (x_zp outside the input). For 3 x 3
  // at stride 1 an entry serves a pair of output columns; for 5 x 5 see outputRow5. Ring slots as
  // tripletRow's.
  LWC_DW_TARGET const uint8_t* quadRow(int64_t n, int64_t ih, int64_t iw0, int64_t entries, __m512i idx) {
    const uint8_t* row;
    uint8_t* dst = slotToBuild(n, ih, row);
    if (!dst) return row;
    const int64_t C = g_.c, W = g_.w;
    const uint8_t* xr = x_ + (n * g_.h + ih) * W * C;
    for (int64_t e = 0; e < entries; ++e) {
      const int64_t iw = iw0 + 2 * e;
      if (iw < 0 || iw + 3 >= W) {
        const uint8_t* px[4] = {pixel(xr, iw), pixel(xr, iw + 1), pixel(xr, iw + 2), pixel(xr, iw + 3)};
        dst = regroup<4>(dst, px, idx);
      } else if (C == 16) {  // the four pixels are 64 consecutive bytes
        _mm512_storeu_si512(dst, _mm512_permutexvar_epi8(idx, _mm512_loadu_si512(xr + iw * 16)));
        dst += 64;
      } else {
        const uint8_t* q = xr + iw * C;
        const uint8_t* px[4] = {q, q + C, q + 2 * C, q + 3 * C};
        dst = regroup<4>(dst, px, idx);
      }
    }
    return row;
  }

  // The triplet row of input row ih of image n: for each output column and channel, the bytes
  // [x(iw-1), x(iw), x(iw+1), x(iw+1)] around the column's centre (x_zp outside the input). Ring
  // slot (n * h + ih) mod k: the k rows one output row reads are consecutive, so distinct.
  LWC_DW_TARGET const uint8_t* tripletRow(int64_t n, int64_t ih, int64_t c0, int64_t c1, __m512i idx) {
    const uint8_t* row;
    uint8_t* dst = slotToBuild(n, ih, row);
    if (!dst) return row;
    const int64_t C = g_.c, W = g_.w;
    const uint8_t* xr = x_ + (n * g_.h + ih) * W * C;
    // Columns whose three pixels all lie inside the input, [in0, in1); the others read zero points.
    // (The fourth lane of a triplet meets zero weights; any bytes do.)
    const int64_t sw = g_.stride_w, pl = g_.pad_l;
    const int64_t in0 = std::min(c1, std::max(c0, in0_)), in1 = std::max(in0, std::min(c1, in1_));
    auto edge = [&](int64_t ow) LWC_DW_TARGET {
      const int64_t iw = ow * sw - pl;
      const uint8_t* px[3] = {pixel(xr, iw), pixel(xr, iw + 1), pixel(xr, iw + 2)};
      dst = regroup<3>(dst, px, idx);
    };
    for (int64_t ow = c0; ow < in0; ++ow) edge(ow);
    if (C == 16) {  // the three pixels are 48 consecutive bytes
      const uint8_t* p = xr + (in0 * sw - pl) * 16;
      uint8_t* __restrict d = dst;
      for (int64_t ow = in0; ow < in1; ++ow, p += sw * 16, d += 64)
        _mm512_storeu_si512(d, _mm512_permutexvar_epi8(idx, _mm512_maskz_loadu_epi8(0xFFFFFFFFFFFFull, p)));
      dst = d;
    } else {
      for (int64_t ow = in0; ow < in1; ++ow) {
        const uint8_t* p = xr + (ow * sw - pl) * C;
        const uint8_t* px[3] = {p, p + C, p + 2 * C};
        dst = regroup<3>(dst, px, idx);
      }
    }
    for (int64_t ow = in1; ow < c1; ++ow) edge(ow);
    return row;
  }

  // Input row ih of image n in the ring (tripletRow, quadRow): the slot to build it into, or null
  // where there is nothing to build, `row` then being the row to read (zp_row_ for rows outside the
  // input; the slot where it still holds that row).
  LWC_DW_TARGET uint8_t* slotToBuild(int64_t n, int64_t ih, const uint8_t*& row) {
    if (ih < 0 || ih >= g_.h) {
      row = zp_row_;
      return nullptr;
    }
    const int64_t key = n * g_.h + ih, slot = key % k_;
    uint8_t* dst = ring_ + slot * row_bytes_;
    row = dst;
    if (tag_[slot] == key) return nullptr;
    tag_[slot] = key;
    return dst;
  }

  // Pixel iw of input row xr, or the pixel of zero points outside the input.
  const uint8_t* pixel(const uint8_t* xr, int64_t iw) const {
    return iw >= 0 && iw < g_.w ? xr + iw * g_.c : zrow_;
  }

  // One column of a ring row: N (3 or 4) pixels' 16 channel bytes side by side per block, regrouped
  // channel by channel by idx, into dst (64 bytes per block); returns dst past them.
  template <int N>
  LWC_DW_TARGET uint8_t* regroup(uint8_t* dst, const uint8_t* const* px, __m512i idx) const {
    static_assert(N == 3 || N == 4);
    const int64_t blocks = blocks_, full_blocks = full_blocks_;  // locals: the stores may alias members
    const __mmask16 tail = tail_;
    int64_t b = 0;
    for (; b < full_blocks; ++b, dst += 64) {
      auto at = [&](int k) LWC_DW_TARGET { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(px[k] + b * 16)); };
      __m512i v = _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(at(0)), at(1), 1), at(2), 2);
      if constexpr (N == 4) v = _mm512_inserti32x4(v, at(3), 3);
      _mm512_storeu_si512(dst, _mm512_permutexvar_epi8(idx, v));
    }
    if (b < blocks) {
      auto at = [&](int k) LWC_DW_TARGET { return _mm_maskz_loadu_epi8(tail, px[k] + b * 16); };
      __m512i v = _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(at(0)), at(1), 1), at(2), 2);
      if constexpr (N == 4) v = _mm512_inserti32x4(v, at(3), 3);
      _mm512_storeu_si512(dst, _mm512_permutexvar_epi8(idx, v));
      dst += 64;
    }
    return dst;
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
  bool quad_;                      ///< stride 1: quadruplet rows (quadRow, outputRowQuad or outputRow5)
  int64_t k_;                      ///< 3 or 5
  int64_t cols_, row_bytes_;
  int64_t in0_, in1_;  ///< output columns whose three input pixels all lie inside the input: [in0_, in1_)
  int64_t tag_[5] = {-1, -1, -1, -1, -1};
};

}  // namespace
#endif

void runRows(const Geometry& g, const uint8_t* x, const int8_t* packed, const Requant& q, uint8_t* y,
             int64_t row_begin, int64_t row_end) {
#ifdef LWC_DW_X86
  if (row_begin >= row_end) return;
  const int64_t blocks = (g.c + 15) / 16, row_bytes = ringEntries(g, chunkCols(g)) * blocks * 64, k = g.k;
  // Per thread and reused: the ring of k rows (triplets or quadruplets), then a row of zero points
  // (rows above and below the input), then a pixel of zero points (columns left and right of it).
  thread_local std::vector<uint8_t> buf;
  // 64-byte aligned: the ring rows are written and read 64 bytes at a time, and a store or load
  // across two cache lines costs two accesses.
  const size_t need = static_cast<size_t>((k + 1) * row_bytes + blocks * 16) + 63;
  if (buf.size() < need) buf.resize(need);
  uint8_t* ring = buf.data() + ((64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64);
  std::memset(ring + k * row_bytes, q.x_zp, static_cast<size_t>(row_bytes + blocks * 16));
  Rows(g, x, packed, q, y, ring + (k + 1) * row_bytes, ring, ring + k * row_bytes).run(row_begin, row_end);
#else
  (void)g, (void)x, (void)packed, (void)q, (void)y, (void)row_begin, (void)row_end;
#endif
}

}  // namespace lwc::engine::dw
