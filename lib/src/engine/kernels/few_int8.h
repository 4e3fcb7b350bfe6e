// lwc's own int8 convolution for layers over one or two input channels (NHWC, uint8 activations,
// int8 weights, groups 1) on CPUs with AVX-512 VNNI: the first layer of networks on grayscale images.
// oneDNN 2.6's int8 kernels pad the input channels to a multiple of four there, and were slower
// than its float kernels: mnv2_fmnist's 1 -> 16 3x3 stem took 0.12 ms at batch 32, lenet5's 1 -> 6
// 5x5 first layer 0.31 ms (float 0.27). DnnlQConv uses this kernel where fits() holds.
// Exact: int32 sums, then the reference's requantization, bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/kernels/int8_avx512.h"

namespace lwc::engine::few {

/// One convolution [n, h, w, ic] -> [n, oh, ow, oc] with a kh x kw kernel, dilation 1, any stride
/// and padding (taps outside the input read the input zero point).
struct Geometry {
  int64_t n = 0, h = 0, w = 0, ic = 0, oc = 0, kh = 0, kw = 0, oh = 0, ow = 0;
  int64_t stride_h = 1, stride_w = 1, pad_t = 0, pad_l = 0;
};

/// True when this CPU has the instructions the kernel needs (AVX-512 F/BW/VL and VNNI).
bool available();

/// Shapes the kernel takes: 1 or 2 input channels, a kernel row of at most 8 input bytes (kw * ic,
/// two 4-byte groups), at most 11 kernel rows and more than one tap. Pointwise layers stay on
/// oneDNN (a first form of this kernel that took them took 1.7x oneDNN's time on mnv2_fmnist's
/// 8 -> 48 one at batch 32), and so do 3-channel (RGB) stems, where oneDNN's int8 kernel already
/// ran at about 110 GMAC/s (mobilenet_v2's, batch 1).
bool fits(int64_t ic, int64_t kh, int64_t kw);

/// The kernel's weight layout from OIHW int8 weights (already shifted by their zero point).
std::vector<int8_t> packWeights(const int8_t* w, int64_t oc, int64_t ic, int64_t kh, int64_t kw);

/// Bytes of the padded copy of the input that runRows reads.
size_t paddedBytes(const Geometry& g);

/// Writes that copy: every image framed by x_zp bytes (and a few more at the end of each row, which
/// meet zero weights).
void pad(const Geometry& g, const uint8_t* x, uint8_t x_zp, uint8_t* padded);

/// Output rows [row_begin, row_end) of the n * oh rows, from the padded input; y is uint8 or int8
/// (the same bytes: the requantization's clamp keeps each value within its type).
void runRows(const Geometry& g, const uint8_t* padded, const int8_t* packed, const int8k::Requant& q, uint8_t* y,
             int64_t row_begin, int64_t row_end);

}  // namespace lwc::engine::few
