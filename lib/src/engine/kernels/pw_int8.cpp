#include "engine/kernels/pw_int8.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#ifdef LWC_INT8_X86
// GCC 12's AVX-512 intrinsics start their results from _mm512_undefined_*() (`__m512i __Y = __Y;`),
// which -Wmaybe-uninitialized (and, inlined into the fully unrolled tiles, -Wuninitialized) reports
// at every use; nothing here is uninitialised.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define LWC_PW_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#endif

namespace lwc::engine::pw {

// How it works: a tile of NP pixels (up to 8) by NB blocks of 16 output channels (up to 4) keeps its
// NP * NB sums in registers. For each group of four input channels it loads the NB weight vectors
// once and broadcasts each pixel's four input bytes once, then does NP * NB vpdpbusd (lane m of a
// block: output channel m, four products summed into int32, wrapping as the reference's sums). The
// sums start from bias_eff = bias - x_zp * sum(w), which makes each the reference's
// bias + sum (x - x_zp) * w. Input channels past the last whole group of four are read into a
// zeroed word (they meet zero weights), so no byte past a pixel's row is read.

namespace {
int64_t groupsOf(int64_t ic) { return (ic + 3) / 4; }
}  // namespace

bool available() { return int8k::haveAvx512Vnni(); }



std::vector<int8_t> packWeights(const int8_t* w, int64_t oc, int64_t ic) {
  const int64_t blocks = (oc + 15) / 16, groups = groupsOf(ic);
  std::vector<int8_t> p(static_cast<size_t>(blocks * groups * 64), 0);
  for (int64_t o = 0; o < oc; ++o)
    for (int64_t k = 0; k < ic; ++k) {
      const auto at = static_cast<size_t>(((o / 16) * groups + k / 4) * 64 + (o % 16) * 4 + k % 4);
      p[at] = w[o * ic + k];
      if (oc == 8) p[at + 32] = w[o * ic + k];  // lanes 8-15 repeat lanes 0-7 (pairTiles)
    }
  return p;
}

#ifdef LWC_INT8_X86
namespace {

using int8k::bcast4;

// The last `rem` (1-3) input bytes of a row, zero-extended to four, in every lane.
LWC_PW_TARGET inline __m512i bcastTail(const uint8_t* p, int64_t rem) {
  int32_t v = 0;
  std::memcpy(&v, p, static_cast<size_t>(rem));
  return _mm512_set1_epi32(v);
}

// The requantized convolution outputs (as requant16, kept as int32) plus the residual `r`, in the
// reference QAdd's float32 operations (pw_int8.h, Add). This file is compiled with
// -ffp-contract=off (lib/CMakeLists.txt): a fused multiply-add here would change the bits.
LWC_PW_TARGET inline __m128i addResidual(__m512i acc, __m512 mul, __m512 flo, __m512 fhi, __m512i yzp, const Add& a,
                                         const uint8_t* r, __mmask16 m) {
  const __m512i c = int8k::requantLanes(acc, _mm512_setzero_si512(), mul, flo, fhi, yzp);
  const __m512i rv = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, r));
  const __m512 fc = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(c, _mm512_set1_epi32(a.c_zp))), _mm512_set1_ps(a.c_scale));
  const __m512 fr = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(rv, _mm512_set1_epi32(a.r_zp))), _mm512_set1_ps(a.r_scale));
  __m512 v = _mm512_max_ps(_mm512_add_ps(fc, fr), _mm512_set1_ps(a.floor));
  __m512 qv = _mm512_div_ps(v, _mm512_set1_ps(a.y_scale));
  qv = _mm512_min_ps(_mm512_max_ps(qv, _mm512_set1_ps(a.lo)), _mm512_set1_ps(a.hi));
  const __m512 magic = _mm512_set1_ps(12582912.0f);  // 1.5 * 2^23: round half to even, as the reference
  qv = _mm512_sub_ps(_mm512_add_ps(qv, magic), magic);
  return _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_cvttps_epi32(qv), _mm512_set1_epi32(a.y_zp)));
}

// acc + the four-byte dot products of x (uint8) and w (int8) per lane: vpdpbusd, written as inline
// assembly because GCC 12 copied every accumulator of a tile to another register around each
// _mm512_dpbusd_epi32 of the loop (its builtin does not tie the sum to the output register).
LWC_PW_TARGET inline __m512i dp(__m512i acc, __m512i x, __m512i w) {
  asm("vpdpbusd %[w], %[x], %[acc]" : [acc] "+v"(acc) : [x] "v"(x), [w] "vm"(w));
  return acc;
}

// NP pixels from x (rows of g.ic bytes) by NB blocks from block `b0` on; outputs into y (rows of
// g.oc bytes, at the tile's first pixel). NB * NP independent sums keep vpdpbusd's pipeline full:
// 8 or 16 where NB is 1 or 2 (8 pixels), 24 where it is 3 (8 pixels), 16 where it is 4 (4 pixels); a first form with 4
// pixels for every NB left a 32 -> 16 layer at 0.6x of oneDNN's speed (4 chains, each waiting for
// its previous vpdpbusd). The sums are named variables; the ones a tile does not use are never
// touched and compile away.
#define LWC_PW_ACC(B)                                                                                     \
  __m512i a##B##0 = NB > B ? bias(B) : _mm512_setzero_si512(), a##B##1 = a##B##0, a##B##2 = a##B##0, a##B##3 = a##B##0,     \
          a##B##4 = a##B##0, a##B##5 = a##B##0, a##B##6 = a##B##0, a##B##7 = a##B##0;
#define LWC_PW_PIXEL(P, TAIL)                                                  \
  if constexpr (NP > P) {                                                      \
    const __m512i xv = TAIL ? bcastTail(xk + P * ic, rem) : bcast4(xk + P * ic); \
    a0##P = dp(a0##P, xv, w0);                                          \
    if constexpr (NB > 1) a1##P = dp(a1##P, xv, w1);                    \
    if constexpr (NB > 2) a2##P = dp(a2##P, xv, w2);                    \
    if constexpr (NB > 3) a3##P = dp(a3##P, xv, w3);                    \
  }
#define LWC_PW_PIXELS(TAIL)                                                                          \
  LWC_PW_PIXEL(0, TAIL) LWC_PW_PIXEL(1, TAIL) LWC_PW_PIXEL(2, TAIL) LWC_PW_PIXEL(3, TAIL)            \
  LWC_PW_PIXEL(4, TAIL) LWC_PW_PIXEL(5, TAIL) LWC_PW_PIXEL(6, TAIL) LWC_PW_PIXEL(7, TAIL)
#define LWC_PW_STORE(B)                                                                              \
  if constexpr (NB > B) {                                                                            \
    store(a##B##0, B, 0), store(a##B##1, B, 1), store(a##B##2, B, 2), store(a##B##3, B, 3);          \
    store(a##B##4, B, 4), store(a##B##5, B, 5), store(a##B##6, B, 6), store(a##B##7, B, 7);          \
  }

template <int NB, int NP, bool ADD>
LWC_PW_TARGET void tile(const Geometry& g, const uint8_t* __restrict x, const __m512i* __restrict wts, int64_t b0,
                        const int8k::Requant& q, uint8_t* __restrict y, const Add* add, int64_t p0) {
  static_assert(NB >= 1 && NB <= 4 && NP >= 1 && NP <= 8);
  const int64_t ic = g.ic, full = ic / 4, rem = ic % 4, groups = groupsOf(ic);
  const __m512i* wb = wts + b0 * groups;
  auto mask = [&](int b) {
    const int64_t left = g.oc - (b0 + b) * 16;
    return static_cast<__mmask16>(left >= 16 ? 0xFFFF : (1u << left) - 1u);
  };
  auto bias = [&](int b) LWC_PW_TARGET { return _mm512_maskz_loadu_epi32(mask(b), q.bias_eff + (b0 + b) * 16); };
  LWC_PW_ACC(0) LWC_PW_ACC(1) LWC_PW_ACC(2) LWC_PW_ACC(3)
  __m512i w0, w1 = _mm512_setzero_si512(), w2 = w1, w3 = w1;
  auto weights = [&](int64_t k) LWC_PW_TARGET {
    w0 = _mm512_loadu_si512(wb + k);
    if constexpr (NB > 1) w1 = _mm512_loadu_si512(wb + groups + k);
    if constexpr (NB > 2) w2 = _mm512_loadu_si512(wb + 2 * groups + k);
    if constexpr (NB > 3) w3 = _mm512_loadu_si512(wb + 3 * groups + k);
  };
  for (int64_t k = 0; k < full; ++k) {
    weights(k);
    const uint8_t* xk = x + 4 * k;
    LWC_PW_PIXELS(false)
  }
  if (rem) {
    weights(full);
    const uint8_t* xk = x + 4 * full;
    LWC_PW_PIXELS(true)
  }
  const __m512 flo = _mm512_set1_ps(q.flo), fhi = _mm512_set1_ps(q.fhi);
  const __m512i yzp = _mm512_set1_epi32(q.y_zp);
  const __m512i none = _mm512_setzero_si512();  // the sums started from the bias
  auto store = [&](__m512i acc, int b, int p) LWC_PW_TARGET __attribute__((always_inline)) {
    if (p >= NP) return;
    const int64_t c0 = (b0 + b) * 16;
    const __mmask16 m = mask(b);
    const __m512 mu = _mm512_maskz_loadu_ps(m, q.mul + c0);
    const __m128i v = ADD ? addResidual(acc, mu, flo, fhi, yzp, *add, add->r + (p0 + p) * g.oc + c0, m)
                          : int8k::requant16(acc, none, mu, flo, fhi, yzp);
    uint8_t* o = y + p * g.oc + c0;
    if (m == 0xFFFF) _mm_storeu_si128(reinterpret_cast<__m128i*>(o), v);  // plain store where the block is whole
    else _mm_mask_storeu_epi8(o, m, v);
  };
  if constexpr (!ADD) {
    // Where saturationExact allows (q.sat), four sums at a time (requant64): the four blocks of a
    // pixel (64 output channels, one store) or, with fewer blocks, four pixels of a block.
    if (q.sat) {
      const int8k::Requant4 four(q);
      if constexpr (NB < 4 && NP * NB % 4 == 0) {
        // The tile holds every output channel (oc = 16 * NB), so its pixels' outputs are consecutive:
        // the sums in memory order (pixel by pixel, block by block) go four at a time into one 64-byte
        // store, with no 16-byte pieces to extract (mnv2_fmnist's 8 -> 48 expansion: 24 stores and 18
        // extractions per tile became 6 stores).
        if (b0 == 0 && NB * 16 == g.oc) {
          const __m512 mb[3] = {_mm512_loadu_ps(q.mul), NB > 1 ? _mm512_loadu_ps(q.mul + 16) : _mm512_setzero_ps(),
                                NB > 2 ? _mm512_loadu_ps(q.mul + 32) : _mm512_setzero_ps()};
          auto at = [&](int i) LWC_PW_TARGET __attribute__((always_inline)) {  // i-th sum in memory order
            const int b = i % NB, p = i / NB;
#define LWC_PW_AT(B)                                                                                  \
  if (b == B) switch (p) {                                                                          \
      case 0: return a##B##0; case 1: return a##B##1; case 2: return a##B##2; case 3: return a##B##3; \
      case 4: return a##B##4; case 5: return a##B##5; case 6: return a##B##6; default: return a##B##7; \
    }
            LWC_PW_AT(0) LWC_PW_AT(1)
            LWC_PW_AT(2)
#undef LWC_PW_AT
            return a00;
          };
          auto group = [&](int k) LWC_PW_TARGET __attribute__((always_inline)) {
            if (4 * k >= NP * NB) return;
            const int i = 4 * k;
            _mm512_storeu_si512(y + 64 * k, four(at(i), at(i + 1), at(i + 2), at(i + 3), mb[i % NB], mb[(i + 1) % NB],
                                                 mb[(i + 2) % NB], mb[(i + 3) % NB]));
          };
          group(0), group(1), group(2), group(3), group(4), group(5);
          return;
        }
      }
      if constexpr (NB == 4) {
        if ((b0 + 4) * 16 <= g.oc) {
          const __m512 m0 = _mm512_loadu_ps(q.mul + b0 * 16), m1 = _mm512_loadu_ps(q.mul + b0 * 16 + 16);
          const __m512 m2 = _mm512_loadu_ps(q.mul + b0 * 16 + 32), m3 = _mm512_loadu_ps(q.mul + b0 * 16 + 48);
          uint8_t* o = y + b0 * 16;
          auto px = [&](__m512i s0, __m512i s1, __m512i s2, __m512i s3, int p) LWC_PW_TARGET __attribute__((always_inline)) {
            if (p < NP) _mm512_storeu_si512(o + p * g.oc, four(s0, s1, s2, s3, m0, m1, m2, m3));
          };
          px(a00, a10, a20, a30, 0), px(a01, a11, a21, a31, 1), px(a02, a12, a22, a32, 2), px(a03, a13, a23, a33, 3);
          return;
        }
      }
      if constexpr (NP == 4 || NP == 8) {
        // s: a block's sums for pixels 0-3 (and 4-7), each group into four 16-byte stores
        auto block = [&](int b, __m512i s0, __m512i s1, __m512i s2, __m512i s3, __m512i s4, __m512i s5, __m512i s6,
                         __m512i s7) LWC_PW_TARGET __attribute__((always_inline)) {
          const int64_t c0 = (b0 + b) * 16;
          const __m512 mu = _mm512_loadu_ps(q.mul + c0);
          uint8_t* o = y + c0;
          const int64_t oc = g.oc;
          int8k::storePieces(o, oc, four(s0, s1, s2, s3, mu, mu, mu, mu));
          if constexpr (NP == 8) int8k::storePieces(o + 4 * oc, oc, four(s4, s5, s6, s7, mu, mu, mu, mu));
        };
        if ((b0 + NB) * 16 <= g.oc) {
          block(0, a00, a01, a02, a03, a04, a05, a06, a07);
          if constexpr (NB > 1) block(1, a10, a11, a12, a13, a14, a15, a16, a17);
          if constexpr (NB > 2) block(2, a20, a21, a22, a23, a24, a25, a26, a27);
          if constexpr (NB > 3) block(3, a30, a31, a32, a33, a34, a35, a36, a37);
          return;
        }
      }
    }
  }
  LWC_PW_STORE(0) LWC_PW_STORE(1) LWC_PW_STORE(2) LWC_PW_STORE(3)
}
#undef LWC_PW_ACC
#undef LWC_PW_PIXEL
#undef LWC_PW_PIXELS
#undef LWC_PW_STORE

// Eight output channels (oc == 8, Requant::sat): a vector holds two pixels, lanes 0-7 the first's
// channels and lanes 8-15 the second's (the weights repeat in lanes 8-15, see packWeights), so no
// lane is idle and each pixel pair's 16 output bytes are consecutive. A tile of 16 pixels keeps 8
// sums; per group of four input channels one weight load, and per pair one broadcast of each
// pixel's four bytes (the second into lanes 8-15). Two requant64 give the tile's 128 output bytes.
// Returns the pixels done (whole tiles from `begin`); the rest go to the other tiles.
LWC_PW_TARGET int64_t pairTiles(const Geometry& g, const uint8_t* __restrict x, const __m512i* __restrict wts,
                                const int8k::Requant& q, uint8_t* __restrict y, int64_t begin, int64_t end) {
  const int64_t ic = g.ic, full = ic / 4, rem = ic % 4;
  const __m256i b8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q.bias_eff));
  const __m256 m8 = _mm256_loadu_ps(q.mul);
  const __m512i bias = _mm512_inserti64x4(_mm512_castsi256_si512(b8), b8, 1);
  const __m512 mul =
      _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(m8)), _mm256_castps_pd(m8), 1));
  const int8k::Requant4 four(q);
  auto pairOf = [&](const uint8_t* p0, bool tail) LWC_PW_TARGET __attribute__((always_inline)) {
    const __m512i lo = tail ? bcastTail(p0, rem) : bcast4(p0);
    int32_t v = 0;
    std::memcpy(&v, p0 + ic, static_cast<size_t>(tail ? rem : 4));
    return _mm512_mask_broadcastd_epi32(lo, 0xFF00, _mm_cvtsi32_si128(v));
  };
  int64_t p = begin;
  for (; p + 16 <= end; p += 16) {
    const uint8_t* xp = x + p * ic;
    __m512i a0 = bias, a1 = bias, a2 = bias, a3 = bias, a4 = bias, a5 = bias, a6 = bias, a7 = bias;
    auto step = [&](int64_t k, bool tail) LWC_PW_TARGET __attribute__((always_inline)) {
      const __m512i w = _mm512_loadu_si512(wts + k);
      const uint8_t* xk = xp + 4 * k;
      a0 = dp(a0, pairOf(xk, tail), w);
      a1 = dp(a1, pairOf(xk + 2 * ic, tail), w);
      a2 = dp(a2, pairOf(xk + 4 * ic, tail), w);
      a3 = dp(a3, pairOf(xk + 6 * ic, tail), w);
      a4 = dp(a4, pairOf(xk + 8 * ic, tail), w);
      a5 = dp(a5, pairOf(xk + 10 * ic, tail), w);
      a6 = dp(a6, pairOf(xk + 12 * ic, tail), w);
      a7 = dp(a7, pairOf(xk + 14 * ic, tail), w);
    };
    for (int64_t k = 0; k < full; ++k) step(k, false);
    if (rem) step(full, true);
    uint8_t* o = y + p * 8;
    _mm512_storeu_si512(o, four(a0, a1, a2, a3, mul, mul, mul, mul));
    _mm512_storeu_si512(o + 64, four(a4, a5, a6, a7, mul, mul, mul, mul));
  }
  return p - begin;
}

using TileFn = void (*)(const Geometry&, const uint8_t*, const __m512i*, int64_t, const int8k::Requant&, uint8_t*,
                        const Add*, int64_t);

/// Pixels per whole tile for NB blocks: 8 up to three blocks (24 sums, three weight vectors and a
/// broadcast: 28 of the 32 vector registers), else 4. Three blocks of 8 pixels rather than 4 took
/// mnv2_fmnist's 16 -> 48 expansion at batch 32 from 72 to 66-68 us (per-node profile, two runs
/// each way); the bytes are the same.
constexpr int pixelsFor(int nb) { return nb <= 3 ? 8 : 4; }

// With ADD a separate copy of each tile: a run-time test in the shared one slowed the plain tiles
// (mnv2_fmnist's 42 unfused pointwise layers 0.079 -> 0.084 ms at batch 1).
template <int NB, bool ADD, int NP = 1>
TileFn tileFor(int np) {
  if constexpr (NP < pixelsFor(NB)) {
    if (np > NP) return tileFor<NB, ADD, NP + 1>(np);
  }
  return tile<NB, NP, ADD>;
}
template <bool ADD>
TileFn tileFor(int nb, int np) {
  return nb == 1 ? tileFor<1, ADD>(np) : nb == 2 ? tileFor<2, ADD>(np) : nb == 3 ? tileFor<3, ADD>(np) : tileFor<4, ADD>(np);
}
TileFn tileFor(int nb, int np, bool add) { return add ? tileFor<true>(nb, np) : tileFor<false>(nb, np); }

// ---- AMX (Sapphire Rapids and later) ----
// The products as tile multiplications: A = 16 pixels x 64 input bytes (rows of the NHWC input,
// stride ic), B = 16 rows of four input channels x 16 output channels, which is the packed weight
// layout above (one block's groups 16c .. 16c + 15 are 16 consecutive 64-byte rows), C = 16 pixels x
// 16 int32 sums. tdpbusd sums exactly in int32 (wrapping), as vpdpbusd. Up to four C tiles (64 output
// channels) share each A; the last, shorter chunk of input channels uses tiles 2 and 3 configured
// for its depth. The sums are stored to a 4 KB buffer and requantized with the vector code above.
#define LWC_AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni")))

bool amxUsable() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  static const bool ok = [] {
    if (std::getenv("LWC_NO_AMX")) return false;
    if (!__builtin_cpu_supports("avx512vnni")) return false;
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    const bool amx_tile = (d >> 24) & 1, amx_int8 = (d >> 25) & 1;
    if (!amx_tile || !amx_int8) return false;
    // Linux hands out the tile state on request (ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
    return syscall(SYS_arch_prctl, 0x1023, 18) == 0;
  }();
  return ok;
#else
  return false;
#endif
}

struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

template <bool ADD>
LWC_AMX_TARGET int64_t amxTiles(const Geometry& g, const uint8_t* __restrict x, const int8_t* __restrict packed,
                                const int8k::Requant& q, uint8_t* __restrict y, const Add* add, int64_t begin,
                                int64_t end) {
  const int64_t ic = g.ic, oc = g.oc, blocks = oc / 16, groups = ic / 4;
  const int64_t chunks = ic / 64, rem = ic % 64;  // whole 64-byte chunks, then rem bytes (a multiple of 4)
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.rows[t] = 16, cfg.colsb[t] = 64;
  cfg.colsb[2] = static_cast<uint16_t>(rem > 0 ? rem : 64);  // A, last chunk
  cfg.rows[3] = static_cast<uint8_t>(rem > 0 ? rem / 4 : 16);  // B, last chunk
  _tile_loadconfig(&cfg);
  alignas(64) int32_t sums[4][16 * 16];
  const int8k::Requant4 four(q);
  const __m512 flo = _mm512_set1_ps(q.flo), fhi = _mm512_set1_ps(q.fhi);
  const __m512i yzp = _mm512_set1_epi32(q.y_zp);
  int64_t p = begin;
  for (; p + 16 <= end; p += 16) {
    const uint8_t* xp = x + p * ic;
    for (int64_t b0 = 0; b0 < blocks; b0 += 4) {
      const int64_t nb = std::min<int64_t>(4, blocks - b0);
      _tile_zero(4);
      _tile_zero(5);
      _tile_zero(6);
      _tile_zero(7);
      auto bRows = [&](int64_t b, int64_t c) { return packed + ((b0 + b) * groups + 16 * c) * 64; };
      // One chunk of input channels, A in tile TA and each block's B in tile TB, into C tiles 4-7.
      // (The tile intrinsics are asm statements taking tile numbers as literals, hence a macro.)
#define LWC_AMX_CHUNK(TA, TB, c)                  \
  _tile_loadd(TA, xp + 64 * (c), ic);             \
  _tile_loadd(TB, bRows(0, c), 64);               \
  _tile_dpbusd(4, TA, TB);                        \
  if (nb > 1) {                                   \
    _tile_loadd(TB, bRows(1, c), 64);             \
    _tile_dpbusd(5, TA, TB);                      \
  }                                               \
  if (nb > 2) {                                   \
    _tile_loadd(TB, bRows(2, c), 64);             \
    _tile_dpbusd(6, TA, TB);                      \
  }                                               \
  if (nb > 3) {                                   \
    _tile_loadd(TB, bRows(3, c), 64);             \
    _tile_dpbusd(7, TA, TB);                      \
  }
      for (int64_t c = 0; c < chunks; ++c) {
        LWC_AMX_CHUNK(0, 1, c)
      }
      if (rem > 0) {
        LWC_AMX_CHUNK(2, 3, chunks)
      }
#undef LWC_AMX_CHUNK
      _tile_stored(4, sums[0], 64);
      if (nb > 1) _tile_stored(5, sums[1], 64);
      if (nb > 2) _tile_stored(6, sums[2], 64);
      if (nb > 3) _tile_stored(7, sums[3], 64);
      // Row r of sums[b]: pixel p + r, output channels (b0 + b) * 16 ...
      __m512i bias[4];
      __m512 mul[4];
      for (int64_t b = 0; b < nb; ++b) {
        bias[b] = _mm512_loadu_si512(q.bias_eff + (b0 + b) * 16);
        mul[b] = _mm512_loadu_ps(q.mul + (b0 + b) * 16);
      }
      auto acc = [&](int64_t b, int64_t r) LWC_AMX_TARGET {
        return _mm512_add_epi32(_mm512_load_si512(sums[b] + r * 16), bias[b]);
      };
      uint8_t* yo = y + p * oc + b0 * 16;
      if constexpr (ADD) {
        for (int64_t r = 0; r < 16; ++r)
          for (int64_t b = 0; b < nb; ++b)
            _mm_storeu_si128(reinterpret_cast<__m128i*>(yo + r * oc + b * 16),
                             addResidual(acc(b, r), mul[b], flo, fhi, yzp, *add, add->r + (p + r) * oc + (b0 + b) * 16,
                                         static_cast<__mmask16>(0xFFFF)));
      } else if (nb == 4) {  // a pixel's four blocks: 64 consecutive bytes
        for (int64_t r = 0; r < 16; ++r)
          _mm512_storeu_si512(yo + r * oc, four(acc(0, r), acc(1, r), acc(2, r), acc(3, r), mul[0], mul[1], mul[2], mul[3]));
      } else {  // four pixels of a block
        for (int64_t b = 0; b < nb; ++b)
          for (int64_t r = 0; r < 16; r += 4) {
            int8k::storePieces(yo + r * oc + b * 16, oc,
                               four(acc(b, r), acc(b, r + 1), acc(b, r + 2), acc(b, r + 3), mul[b], mul[b], mul[b],
                                    mul[b]));
          }
      }
    }
  }
  _tile_release();
  return p - begin;
}

}  // namespace
#endif

bool amxFits(int64_t ic, int64_t oc) {
#ifdef LWC_INT8_X86
  return oc % 16 == 0 && ic % 4 == 0 && ic >= 32 && (ic >= 64 || oc >= 64) && amxUsable();
#else
  (void)ic, (void)oc;
  return false;
#endif
}

void runPixels(const Geometry& g, const uint8_t* x, const int8_t* packed, const int8k::Requant& q, uint8_t* y,
               int64_t pixel_begin, int64_t pixel_end, const Add* add) {
#ifdef LWC_INT8_X86
  const int64_t blocks = (g.oc + 15) / 16;
  const auto* wts = reinterpret_cast<const __m512i*>(packed);
  // Chunks of kChunk pixels, whose input rows stay in the L1 cache while four blocks (64 output
  // channels) at a time pass over them; their weights, 64 * ic bytes, stay in L1 or L2.
  constexpr int64_t kChunk = 64;
  if (g.oc == 8 && q.sat && add == nullptr) pixel_begin += pairTiles(g, x, wts, q, y, pixel_begin, pixel_end);
  if (amxFits(g.ic, g.oc) && q.sat && pixel_end - pixel_begin >= 16)
    pixel_begin += add ? amxTiles<true>(g, x, packed, q, y, add, pixel_begin, pixel_end)
                       : amxTiles<false>(g, x, packed, q, y, add, pixel_begin, pixel_end);
  for (int64_t c0 = pixel_begin; c0 < pixel_end; c0 += kChunk) {
    const int64_t c1 = std::min(pixel_end, c0 + kChunk);
    for (int64_t b0 = 0; b0 < blocks; b0 += 4) {
      const int nb = static_cast<int>(std::min<int64_t>(4, blocks - b0)), np = pixelsFor(nb);
      const TileFn whole = tileFor(nb, np, add != nullptr);
      int64_t p = c0;
      for (; p + np <= c1; p += np) whole(g, x + p * g.ic, wts, b0, q, y + p * g.oc, add, p);
      if (p < c1) tileFor(nb, static_cast<int>(c1 - p), add != nullptr)(g, x + p * g.ic, wts, b0, q, y + p * g.oc, add, p);
    }
  }
#else
  (void)g, (void)x, (void)packed, (void)q, (void)y, (void)pixel_begin, (void)pixel_end, (void)add;
#endif
}

}  // namespace lwc::engine::pw
