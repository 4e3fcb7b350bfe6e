// Shared by lwc's own int8 convolution kernels (dw_int8.cpp, few_int8.cpp, pw_int8.cpp): the
// requantization parameters and, on x86, the CPU check, the 16-lane form of the reference's
// requantization and the 4-byte broadcast.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LWC_INT8_X86 1
#endif

namespace lwc::engine::int8k {

/// Per-call constants of the requantization, y = clamp(rne(clamp(float(acc) * mul[c], flo, fhi)) +
/// y_zp) with acc = bias[c] + sum_taps (x - x_zp) * w (int32, wrapping), as quant::requantizeValue.
struct Requant {
  const int32_t* bias_eff = nullptr;  ///< bias[c] - x_zp * sum(w[c]) (wrapping), c entries
  const float* mul = nullptr;         ///< c entries
  float flo = 0, fhi = 0;             ///< lo - y_zp, hi - y_zp
  int32_t y_zp = 0;
  uint8_t x_zp = 0;
  /// Every accumulator's float(acc) * mul is within +-2^30 (bounded by the weights, the bias and the
  /// multiplier: see saturationExact), so converting without the float clamp cannot overflow and
  /// saturating packs followed by a byte clamp to [lo, hi] give the same bytes (requant64).
  bool sat = false;
  int32_t lo = 0, hi = 255;  ///< the output type's clamp (flo + y_zp, fhi + y_zp)
  bool y_signed = false;     ///< int8 output (else uint8)
};

/// True when |bias_eff[c] + sum over the window of x * w| * |mul[c]| <= 2^30 for every uint8 input
/// x and every channel: abs_wsum[c] is sum |w| of channel c's (zero-point-free) weights.
inline bool saturationExact(const int32_t* bias_eff, const float* mul, const int64_t* abs_wsum, int64_t channels) {
  for (int64_t c = 0; c < channels; ++c) {
    const double bound = (std::abs(static_cast<double>(bias_eff[c])) + 255.0 * static_cast<double>(abs_wsum[c])) *
                         std::abs(static_cast<double>(mul[c]));
    if (!(bound <= 1073741824.0)) return false;
  }
  return true;
}

#ifdef LWC_INT8_X86
/// True when this CPU has AVX-512 F, BW and VL (the 16-lane quantization kernels of quant.cpp).
inline bool haveAvx512Bw() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

/// True when this CPU has what the own int8 kernels use: AVX-512 F/BW/VL and VNNI.
inline bool haveAvx512Vnni() { return haveAvx512Bw() && __builtin_cpu_supports("avx512vnni"); }

/// The reference's requantization of 16 int32 sums of products (without bias): add bias, float
/// multiply, clamp, round to nearest even, add the zero point; each lane's value as int32.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512i requantLanes(__m512i acc, __m512i bias, __m512 mul,
                                                                                 __m512 flo, __m512 fhi, __m512i yzp) {
  __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc, bias)), mul);
  f = _mm512_min_ps(_mm512_max_ps(f, flo), fhi);
  return _mm512_add_epi32(_mm512_cvt_roundps_epi32(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), yzp);
}

/// requantLanes, then the low byte of each lane.
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m128i requant16(__m512i acc, __m512i bias, __m512 mul,
                                                                              __m512 flo, __m512 fhi, __m512i yzp) {
  return _mm512_cvtepi32_epi8(requantLanes(acc, bias, mul, flo, fhi, yzp));
}

/// The requantization of four 16-lane accumulators that already hold bias + products, for calls
/// with q.sat: float multiply, round to nearest even, saturate to int16, add the zero point with
/// saturation, saturate to bytes and clamp to [lo, hi]: the reference's bytes, since the float clamp
/// bounds are integers (so clamping before or after rounding is the same) and q.sat rules out
/// overflow in the conversion. Returns a's 16 bytes, then b's, c's and d's. `perm` is
/// requant64Perm(); lo8 / hi8 are lo and hi in every byte.
template <bool Signed>
__attribute__((target("avx512f,avx512bw,avx512vl"))) inline __m512i requant64(__m512i a, __m512i b, __m512i c, __m512i d,
                                                                              __m512 ma, __m512 mb, __m512 mc, __m512 md,
                                                                              __m512i yzp16, __m512i lo8, __m512i hi8,
                                                                              __m512i perm) {
  constexpr int kRne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m512i ia = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(a), ma), kRne);
  const __m512i ib = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(b), mb), kRne);
  const __m512i ic = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(c), mc), kRne);
  const __m512i id = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_cvtepi32_ps(d), md), kRne);
  // Per 128-bit lane i: packs give words [a 4i..4i+3, b 4i..4i+3], then bytes [a, b, c, d] 4 each.
  const __m512i ab = _mm512_adds_epi16(_mm512_packs_epi32(ia, ib), yzp16);
  const __m512i cd = _mm512_adds_epi16(_mm512_packs_epi32(ic, id), yzp16);
  __m512i v;
  if constexpr (Signed) {
    v = _mm512_packs_epi16(ab, cd);
    v = _mm512_min_epi8(_mm512_max_epi8(v, lo8), hi8);
  } else {
    v = _mm512_packus_epi16(ab, cd);
    v = _mm512_min_epu8(_mm512_max_epu8(v, lo8), hi8);
  }
  return _mm512_permutexvar_epi32(perm, v);  // dword 4i + j (vector j, group i) -> 4j + i
}

/// requant64's dword order: out[4j + i] = in[4i + j].
__attribute__((target("avx512f"))) inline __m512i requant64Perm() {
  return _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
}

/// Stores the first n (1-4) 16-byte pieces of v, a requant64 result (four pixels' bytes of one block
/// of 16 channels), at o, o + pitch, o + 2 * pitch and o + 3 * pitch: one 64-byte store where the
/// pieces are consecutive (pitch 16, all four).
__attribute__((target("avx512f"))) inline void storePieces(uint8_t* o, int64_t pitch, __m512i v, int64_t n = 4) {
  if (pitch == 16 && n == 4) {
    _mm512_storeu_si512(o, v);
    return;
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm512_castsi512_si128(v));
  if (n > 1) _mm_storeu_si128(reinterpret_cast<__m128i*>(o + pitch), _mm512_extracti32x4_epi32(v, 1));
  if (n > 2) _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 2 * pitch), _mm512_extracti32x4_epi32(v, 2));
  if (n > 3) _mm_storeu_si128(reinterpret_cast<__m128i*>(o + 3 * pitch), _mm512_extracti32x4_epi32(v, 3));
}

/// requant64 for one call's Requant: its constants made once, the output type chosen per call.
struct Requant4 {
  __m512i yzp16, lo8, hi8, perm;
  bool y_signed;
  __attribute__((target("avx512f,avx512bw"))) explicit Requant4(const Requant& q)
      : yzp16(_mm512_set1_epi16(static_cast<int16_t>(q.y_zp))), lo8(_mm512_set1_epi8(static_cast<char>(q.lo))),
        hi8(_mm512_set1_epi8(static_cast<char>(q.hi))), perm(requant64Perm()), y_signed(q.y_signed) {}
  /// Sums a, b, c, d (holding the bias) with multipliers ma ... md: a's 16 bytes, then b's, c's, d's.
  __attribute__((target("avx512f,avx512bw,avx512vl"))) __m512i operator()(__m512i a, __m512i b, __m512i c, __m512i d,
                                                                          __m512 ma, __m512 mb, __m512 mc,
                                                                          __m512 md) const {
    return y_signed ? requant64<true>(a, b, c, d, ma, mb, mc, md, yzp16, lo8, hi8, perm)
                    : requant64<false>(a, b, c, d, ma, mb, mc, md, yzp16, lo8, hi8, perm);
  }
};

/// Four bytes from p (any alignment) in every lane: the input operand of a vpdpbusd.
__attribute__((target("avx512f"))) inline __m512i bcast4(const uint8_t* p) {
  int32_t v;
  __builtin_memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}
#else
inline bool haveAvx512Vnni() { return false; }
#endif

}  // namespace lwc::engine::int8k
