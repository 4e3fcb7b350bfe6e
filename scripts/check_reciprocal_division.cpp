// Exhaustive check of the division the engine's AVX-512 quantization kernels use (quant.cpp,
// divideLanes): for a scale b, q0 = a * r with r = 1.0f / b, then q0 + (a - q0 * b) * r with
// fused multiply-adds, must equal a / b, bit for bit, for every float a in 2^-40..2^40 (both
// signs behave alike under round-to-nearest). Scales: 1, three with extreme mantissas, then
// random ones with exponents 2^-30..2^10 (fixed seed).
//
//   g++ -O2 -mavx512f -mfma -o /tmp/check_division scripts/check_reciprocal_division.cpp
//   /tmp/check_division 2000      # scales to try; about 0.11 s each on one core
//
// Prints every scale with a difference and the total; exit status 1 if there is any.
#include <immintrin.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>

static float fromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Differences for scale b over a in [2^e0, 2^e1); the first one's bits in *first.
static long check(float b, int e0, int e1, uint32_t* first) {
  const __m512 B = _mm512_set1_ps(b), R = _mm512_set1_ps(1.0f / b), NB = _mm512_set1_ps(-b);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  long bad = 0;
  const uint32_t lo = static_cast<uint32_t>(e0 + 127) << 23, hi = static_cast<uint32_t>(e1 + 127) << 23;
  for (uint32_t u = lo; u < hi; u += 16) {
    const __m512 a = _mm512_castsi512_ps(_mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(u)), lane));
    const __m512 want = _mm512_div_ps(a, B);
    const __m512 q0 = _mm512_mul_ps(a, R);
    const __m512 q1 = _mm512_fmadd_ps(_mm512_fmadd_ps(NB, q0, a), R, q0);
    const __mmask16 m = _mm512_cmpneq_epi32_mask(_mm512_castps_si512(want), _mm512_castps_si512(q1));
    if (m) {
      if (!bad) *first = u + static_cast<uint32_t>(__builtin_ctz(m));
      bad += __builtin_popcount(m);
    }
  }
  return bad;
}

int main(int argc, char** argv) {
  const int scales = argc > 1 ? std::atoi(argv[1]) : 50;
  std::mt19937 rng(1);
  long total = 0;
  for (int i = 0; i < scales; ++i) {
    uint32_t bits;
    if (i == 0) bits = 0x3F800000;       // 1
    else if (i == 1) bits = 0x3F7FFFFF;  // just below 1
    else if (i == 2) bits = 0x3C7FFFFF;  // all-ones mantissa
    else if (i == 3) bits = 0x3C000001;  // mantissa 1
    else bits = (rng() & 0x7FFFFF) | (static_cast<uint32_t>(127 + 10 - static_cast<int>(rng() % 40)) << 23);
    uint32_t first = 0;
    const long bad = check(fromBits(bits), -40, 40, &first);
    if (bad) std::printf("scale %a: %ld differences, the first at a = %a\n", fromBits(bits), bad, fromBits(first));
    total += bad;
  }
  std::printf("%ld differences over %d scales\n", total, scales);
  return total ? 1 : 0;
}
