// lwc's own 3x3 and 5x5 depthwise int8 convolution (NHWC, uint8 activations, int8 weights) for CPUs
// with AVX-512 VNNI and VBMI. On a Xeon with AMX, oneDNN 2.6 lists one fast int8 depthwise kernel
// (jit_int8:avx512_core_vnni), and its fixed cost per call dominated the small layers of mobile
// networks: in mnv2_fmnist INT8 at batch 1 every 7x7 or smaller depthwise layer took 6-9 us there
// and 2-5 us here. Since its requantization runs four accumulators at a time (requant64, where
// the multipliers allow) it is also faster than oneDNN's on larger layers: DnnlQConv uses it for
// every stride-1 layer and strided ones of up to 2^18 outputs (see its build()).
// Exact: int32 accumulators, then the reference's requantization, bit for bit (oneDNN's is within
// one step of it).
#pragma once

#include <cstdint>
#include <vector>

#include "engine/kernels/int8_avx512.h"

namespace lwc::engine::dw {

/// Shape of one depthwise k x k convolution (k 3 or 5) over an NHWC tensor [n, h, w, c] ->
/// [n, oh, ow, c]. Dilation 1; padding any (taps outside the input read the input zero point);
/// any stride for k = 3, horizontal stride 1 or 2 for k = 5 (fits()).
struct Geometry {
  int64_t n = 0, h = 0, w = 0, c = 0, oh = 0, ow = 0;
  int64_t stride_h = 1, stride_w = 1, pad_t = 0, pad_l = 0;
  int64_t k = 3;
};

/// True when the kernel takes a k x k window with horizontal stride sw.
inline bool fits(int64_t k, int64_t sw) { return k == 3 || (k == 5 && (sw == 1 || sw == 2)); }

/// True when this CPU has the instructions the kernel needs (AVX-512 F/BW/VL, VNNI and VBMI).
bool available();

/// The kernel's weight layout from [c][k][k] int8 weights (already shifted by their zero point):
/// per block of 16 channels and kernel row, k = 3: one 64-byte group of the row's taps per channel
/// ([w0, w1, w2, 0]); k = 5: four, [w0, w1, w2, w3], [0, 0, w4, 0], [0, w0, w1, w2], [0, 0, w3, w4]
/// (see dw_int8.cpp).
std::vector<int8_t> packWeights(const int8_t* w, int64_t c, int64_t k = 3);

/// The requantization's constants (shared with the other own kernels).
using Requant = int8k::Requant;

/// Output rows [row_begin, row_end) of the n * oh rows; y is uint8 or int8 (the same bytes: the
/// clamp above keeps each value within its type).
void runRows(const Geometry& g, const uint8_t* x, const int8_t* packed, const Requant& q, uint8_t* y,
             int64_t row_begin, int64_t row_end);

}  // namespace lwc::engine::dw
