#include "engine/kernels/few_int8.h"

#include <algorithm>
#include <cstring>

#ifdef LWC_INT8_X86
// GCC 12's AVX-512 intrinsics start their results from _mm512_undefined_*() (`__m512i __Y = __Y;`),
// which -Wmaybe-uninitialized reports at every use once inlined; nothing here is uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#define LWC_FEW_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#endif

namespace lwc::engine::few {

// How it works: in NHWC the kw * ic input bytes of one kernel row are consecutive, so each output
// pixel reads them as one or two 4-byte groups, broadcast to all 16 lanes of a vpdpbusd whose lane m
// holds output channel m's weights for those bytes (zero past kw * ic). Per output pixel and block of
// 16 output channels that is kh * groups vpdpbusd, each with a broadcast load, then the reference's
// requantization. The input is first copied into a frame of x_zp bytes (the padding), so no tap
// needs a bounds test; bias_eff subtracts x_zp * sum(w), which makes the sum the reference's
// bias + sum (x - x_zp) * w.

namespace {
int64_t groupsPerRow(int64_t ic, int64_t kw) { return (kw * ic + 3) / 4; }
int64_t paddedRows(const Geometry& g) { return std::max(g.h + g.pad_t, (g.oh - 1) * g.stride_h + g.kh); }
int64_t rowPitch(const Geometry& g) {
  const int64_t last = (g.ow - 1) * g.stride_w * g.ic;  // first byte the last output column reads
  return std::max({(g.w + g.pad_l) * g.ic, last + g.kw * g.ic, last + 4 * groupsPerRow(g.ic, g.kw)});
}
}  // namespace

bool available() { return int8k::haveAvx512Vnni(); }

bool fits(int64_t ic, int64_t kh, int64_t kw) {
  return ic >= 1 && ic <= 2 && kw >= 1 && kw * ic <= 8 && kh >= 1 && kh <= 11 && kh * kw > 1;
}

std::vector<int8_t> packWeights(const int8_t* w, int64_t oc, int64_t ic, int64_t kh, int64_t kw) {
  const int64_t blocks = (oc + 15) / 16, groups = groupsPerRow(ic, kw);
  std::vector<int8_t> p(static_cast<size_t>(blocks * kh * groups * 64), 0);
  for (int64_t o = 0; o < oc; ++o)
    for (int64_t r = 0; r < kh; ++r)
      for (int64_t j = 0; j < kw * ic; ++j) {  // byte j of a kernel row: column j / ic, channel j % ic
        const int64_t col = j / ic, c = j % ic;
        const int64_t at = (((o / 16) * kh + r) * groups + j / 4) * 64 + (o % 16) * 4 + j % 4;
        p[static_cast<size_t>(at)] = w[((o * ic + c) * kh + r) * kw + col];
      }
  return p;
}

size_t paddedBytes(const Geometry& g) { return static_cast<size_t>(g.n * paddedRows(g) * rowPitch(g)); }

#ifdef LWC_INT8_X86
namespace {
// Rows of up to 64 bytes (the input rows of first layers: 28 bytes for a 28 x 28 x 1 image) as one
// masked load and store each: a memcpy call per row had cost 4 us of the 32 x 28 x 28 stem's 31.
LWC_FEW_TARGET void copyRows(const uint8_t* x, int64_t rows, int64_t bytes, uint8_t* dst, int64_t pitch) {
  const __mmask64 m = bytes >= 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1;
  for (int64_t r = 0; r < rows; ++r)
    _mm512_mask_storeu_epi8(dst + r * pitch, m, _mm512_maskz_loadu_epi8(m, x + r * bytes));
}
}  // namespace
#endif

void pad(const Geometry& g, const uint8_t* x, uint8_t x_zp, uint8_t* padded) {
  const int64_t rows = paddedRows(g), pitch = rowPitch(g), bytes = g.w * g.ic;
  std::memset(padded, x_zp, paddedBytes(g));
  for (int64_t n = 0; n < g.n; ++n) {
    uint8_t* dst = padded + (n * rows + g.pad_t) * pitch + g.pad_l * g.ic;
    const uint8_t* src = x + n * g.h * bytes;
#ifdef LWC_INT8_X86
    if (bytes <= 64) {
      copyRows(src, g.h, bytes, dst, pitch);
      continue;
    }
#endif
    for (int64_t ih = 0; ih < g.h; ++ih) std::memcpy(dst + ih * pitch, src + ih * bytes, static_cast<size_t>(bytes));
  }
}

#ifdef LWC_INT8_X86
namespace {

using int8k::bcast4;

// GROUPS 4-byte groups per kernel row (1 or 2), so the tap loop unrolls.
template <int GROUPS>
LWC_FEW_TARGET void rows(const Geometry& g, const uint8_t* padded, const int8_t* packed, const int8k::Requant& q,
                         uint8_t* y, int64_t r0, int64_t r1) {
  const int64_t kh = g.kh, oc = g.oc, ow_n = g.ow, blocks = (oc + 15) / 16;
  const int64_t pitch = rowPitch(g), prow = paddedRows(g), step = g.stride_w * g.ic;
  const __m512 flo = _mm512_set1_ps(q.flo), fhi = _mm512_set1_ps(q.fhi);
  const __m512i yzp = _mm512_set1_epi32(q.y_zp);
  const int8k::Requant4 four(q);
  const __m512i* __restrict wts = reinterpret_cast<const __m512i*>(packed);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t n = r / g.oh, oh = r % g.oh;
    const uint8_t* __restrict in = padded + (n * prow + oh * g.stride_h) * pitch;
    uint8_t* __restrict out = y + r * ow_n * oc;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t left = oc - b * 16;
      const __mmask16 m = static_cast<__mmask16>(left >= 16 ? 0xFFFF : (1u << left) - 1u);
      const __m512i bi = _mm512_maskz_loadu_epi32(m, q.bias_eff + b * 16);
      const __m512 mu = _mm512_maskz_loadu_ps(m, q.mul + b * 16);
      const __m512i* wb = wts + b * kh * GROUPS;
      const bool sat_block = q.sat && left >= 16;
      int64_t ow = 0;
      if (sat_block && oc == 16) {
        // One block of 16 output channels: eight pixels' outputs are 128 consecutive bytes, stored
        // as two requant64 results; the eight sums are independent chains.
        for (; ow + 8 <= ow_n; ow += 8) {
          const uint8_t* p = in + ow * step;
          __m512i a0 = bi, a1 = bi, a2 = bi, a3 = bi, a4 = bi, a5 = bi, a6 = bi, a7 = bi;
          for (int64_t k = 0; k < kh; ++k) {
            const uint8_t* pk = p + k * pitch;
            for (int gi = 0; gi < GROUPS; ++gi) {
              const __m512i wv = _mm512_loadu_si512(wb + k * GROUPS + gi);
              const uint8_t* pg = pk + 4 * gi;
              a0 = _mm512_dpbusd_epi32(a0, bcast4(pg), wv);
              a1 = _mm512_dpbusd_epi32(a1, bcast4(pg + step), wv);
              a2 = _mm512_dpbusd_epi32(a2, bcast4(pg + 2 * step), wv);
              a3 = _mm512_dpbusd_epi32(a3, bcast4(pg + 3 * step), wv);
              a4 = _mm512_dpbusd_epi32(a4, bcast4(pg + 4 * step), wv);
              a5 = _mm512_dpbusd_epi32(a5, bcast4(pg + 5 * step), wv);
              a6 = _mm512_dpbusd_epi32(a6, bcast4(pg + 6 * step), wv);
              a7 = _mm512_dpbusd_epi32(a7, bcast4(pg + 7 * step), wv);
            }
          }
          uint8_t* o = out + ow * 16;
          _mm512_storeu_si512(o, four(a0, a1, a2, a3, mu, mu, mu, mu));
          _mm512_storeu_si512(o + 64, four(a4, a5, a6, a7, mu, mu, mu, mu));
        }
      }
      // Four output pixels at a time share each weight load; their sums are independent chains.
      for (; ow + 4 <= ow_n; ow += 4) {
        const uint8_t* p = in + ow * step;
        __m512i a0 = sat_block ? bi : _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t k = 0; k < kh; ++k) {
          const uint8_t* pk = p + k * pitch;
          for (int gi = 0; gi < GROUPS; ++gi) {
            const __m512i wv = _mm512_loadu_si512(wb + k * GROUPS + gi);
            a0 = _mm512_dpbusd_epi32(a0, bcast4(pk + 4 * gi), wv);
            a1 = _mm512_dpbusd_epi32(a1, bcast4(pk + step + 4 * gi), wv);
            a2 = _mm512_dpbusd_epi32(a2, bcast4(pk + 2 * step + 4 * gi), wv);
            a3 = _mm512_dpbusd_epi32(a3, bcast4(pk + 3 * step + 4 * gi), wv);
          }
        }
        uint8_t* o = out + ow * oc + b * 16;
        if (sat_block) {  // the accumulators hold the bias: four requantized together
          int8k::storePieces(o, oc, four(a0, a1, a2, a3, mu, mu, mu, mu));
          continue;
        }
        const __m128i y0 = int8k::requant16(a0, bi, mu, flo, fhi, yzp), y1 = int8k::requant16(a1, bi, mu, flo, fhi, yzp);
        const __m128i y2 = int8k::requant16(a2, bi, mu, flo, fhi, yzp), y3 = int8k::requant16(a3, bi, mu, flo, fhi, yzp);
        if (left >= 16) {  // plain stores where the block is whole: masked ones are the slower form
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o), y0);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + oc), y1);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 2 * oc), y2);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 3 * oc), y3);
        } else {
          _mm_mask_storeu_epi8(o, m, y0);
          _mm_mask_storeu_epi8(o + oc, m, y1);
          _mm_mask_storeu_epi8(o + 2 * oc, m, y2);
          _mm_mask_storeu_epi8(o + 3 * oc, m, y3);
        }
      }
      for (; ow < ow_n; ++ow) {
        const uint8_t* p = in + ow * step;
        __m512i a = _mm512_setzero_si512();
        for (int64_t k = 0; k < kh; ++k)
          for (int gi = 0; gi < GROUPS; ++gi)
            a = _mm512_dpbusd_epi32(a, bcast4(p + k * pitch + 4 * gi), _mm512_loadu_si512(wb + k * GROUPS + gi));
        _mm_mask_storeu_epi8(out + ow * oc + b * 16, m, int8k::requant16(a, bi, mu, flo, fhi, yzp));
      }
    }
  }
}

}  // namespace
#endif

void runRows(const Geometry& g, const uint8_t* padded, const int8_t* packed, const int8k::Requant& q, uint8_t* y,
             int64_t row_begin, int64_t row_end) {
#ifdef LWC_INT8_X86
  if (row_begin >= row_end) return;
  if (groupsPerRow(g.ic, g.kw) == 1) rows<1>(g, padded, packed, q, y, row_begin, row_end);
  else rows<2>(g, padded, packed, q, y, row_begin, row_end);
#else
  (void)g, (void)padded, (void)packed, (void)q, (void)y, (void)row_begin, (void)row_end;
#endif
}

}  // namespace lwc::engine::few
