// lwc's own int8 pointwise (1x1) convolution for small calls (NHWC, uint8 activations, int8
// weights, groups 1, stride 1, no padding) on CPUs with AVX-512 VNNI. A pointwise convolution over
// NHWC is a matrix product of the [pixels, ic] input with the [ic, oc] weights. At batch 1 the
// layers of mobile networks on small images are tiny (mnv2_fmnist's 4x4 192 -> 32 projection: 98 304
// multiply-adds, 0.5 us at one vpdpbusd per cycle), and oneDNN's jit_int8_1x1 took 1.3-2.1 us per
// call there, most of it fixed cost. DnnlQConv uses this kernel for the calls that oneThreadCall
// puts on one thread (dnnl_common.h), on the calling thread, and for larger calls whose weights
// fit the L1 cache and fill whole blocks of 16 output channels, over all threads (chunks of 64
// pixels): there requantizing four sums at a time (requant64) made it faster than oneDNN's. Eight
// output channels count as a whole block: a vector then holds two pixels' outputs. On CPUs with
// AMX-INT8 (Sapphire Rapids on), 16-pixel tiles of layers with at least 32 input channels multiply
// on AMX tiles (amxFits) and DnnlQConv also gives the kernel the layers oneDNN would run on VNNI.
// LWC_NO_AMX=1 in the environment turns the AMX path off (for comparisons).
// Exact: int32 sums, then the reference's requantization, bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/kernels/int8_avx512.h"

namespace lwc::engine::pw {

/// One pointwise convolution: `pixels` rows of `ic` input bytes -> `pixels` rows of `oc` outputs.
struct Geometry {
  int64_t pixels = 0, ic = 0, oc = 0;
};

/// True when this CPU has the instructions the kernel needs (AVX-512 F/BW/VL and VNNI).
bool available();

/// The kernel's weight layout from [oc][ic] int8 weights (already shifted by their zero point):
/// per block of 16 output channels, ceil(ic / 4) 64-byte groups, lane m holding output channel m's
/// four weights for input channels 4g .. 4g+3 (zero past ic and past oc; with oc == 8, lanes 8-15
/// repeat lanes 0-7).
std::vector<int8_t> packWeights(const int8_t* w, int64_t oc, int64_t ic);

/// A residual add fused into the output (lwc.internal.QLinearConvNhwcAdd): with c the uint8 result
/// above and r the uint8 residual at the same place, y = uint8(rne(clamp(max(float(c - c_zp) * c_scale
/// + float(r - r_zp) * r_scale, floor) / y_scale, lo, hi)) + y_zp): the reference QAdd's float32
/// operations in its order (quant.cpp, qaddRange), so the same bits.
struct Add {
  const uint8_t* r = nullptr;  ///< [pixels, oc], as y
  float c_scale = 1, r_scale = 1, y_scale = 1;
  int32_t c_zp = 0, r_zp = 0, y_zp = 0;
  float floor = 0;   ///< 0 with a fused Relu, else -infinity
  float lo = 0, hi = 0;  ///< 0 - y_zp, 255 - y_zp
};

/// True where runPixels multiplies on AMX tiles (CPUs with AMX-INT8 whose kernel grants the tile
/// state): whole blocks of 16 outputs, input channels in groups of four, at least 32 of them, and
/// at least 64 inputs or outputs (smaller layers were faster with vpdpbusd).
bool amxFits(int64_t ic, int64_t oc);

/// y[p][o] = requantize(bias_eff[o] + sum_k x[p][k] * w[o][k]) for pixels [pixel_begin, pixel_end);
/// y is uint8 or int8 (the same bytes: the requantization's clamp keeps each value within its type).
/// With `add`, y is the fused residual add of that (uint8) result and add->r (uint8 output).
void runPixels(const Geometry& g, const uint8_t* x, const int8_t* packed, const int8k::Requant& q, uint8_t* y,
               int64_t pixel_begin, int64_t pixel_end, const Add* add = nullptr);

}  // namespace lwc::engine::pw
