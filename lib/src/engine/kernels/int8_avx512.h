// Shared by lwc's own int8 convolution kernels (dw_int8.cpp, few_int8.cpp, pw_int8.cpp): the
// requantization parameters and, on x86, the CPU check, the 16-lane form of the reference's
// requantization and the 4-byte broadcast.
#pragma once

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
};

#ifdef LWC_INT8_X86
/// True when this CPU has what the own int8 kernels use: AVX-512 F/BW/VL and VNNI.
inline bool haveAvx512Vnni() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

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
