// Reference kernels of the shape / data-movement family, against hand-computed values.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <string>

#include "lwc/engine.h"
#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {

Tensor F(Shape s, std::vector<float> v) { return Tensor::fromVector<float>(std::move(s), v); }
Tensor I(Shape s, std::vector<int64_t> v) { return Tensor::fromVector<int64_t>(std::move(s), v); }
Tensor I32(Shape s, std::vector<int32_t> v) { return Tensor::fromVector<int32_t>(std::move(s), v); }
Tensor B(Shape s, std::vector<bool> v) { return Tensor::fromVector<bool>(std::move(s), v); }
Tensor iota(DType dt, Shape s) {
  Tensor t(DType::Int64, std::move(s));
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int64_t>()[i] = i;
  return t.cast(dt);
}

NodeSpec node(std::string op, std::vector<Tensor> inputs, std::vector<onnx::AttributeProto> attrs = {},
              int64_t opset = 17, size_t outputs = 1) {
  NodeSpec s;
  s.op_type = std::move(op);
  s.inputs = std::move(inputs);
  s.attrs = std::move(attrs);
  s.opset = opset;
  s.num_outputs = outputs;
  return s;
}

Tensor run1(const NodeSpec& s) { return runNode(s).at(0); }

/// Exact equality with a readable failure message.
void checkEq(const Tensor& got, const Tensor& want) {
  INFO("got " << dtypeName(got.dtype()) << shapeStr(got.shape()) << ", want " << dtypeName(want.dtype())
              << shapeStr(want.shape()) << ": " << compareTensors(got, want, 0, 1e-12));
  CHECK(got.bitEqual(want));
}

/// Output element of a transpose computed one index at a time (the oracle for the fast loop).
Tensor naiveTranspose(const Tensor& x, const std::vector<int64_t>& perm) {
  Shape out;
  for (auto p : perm) out.push_back(x.dim(p));
  Tensor y(x.dtype(), out);
  std::vector<int64_t> xs(x.rank(), 1);
  for (int k = static_cast<int>(x.rank()) - 2; k >= 0; --k) xs[k] = xs[k + 1] * x.dim(k + 1);
  for (int64_t i = 0; i < y.numel(); ++i) {
    int64_t rem = i, off = 0;
    for (int k = static_cast<int>(out.size()) - 1; k >= 0; --k) {
      off += (rem % out[k]) * xs[perm[k]];
      rem /= out[k];
    }
    y.data<float>()[i] = x.data<float>()[off];
  }
  return y;
}

constexpr int64_t kIntMax = std::numeric_limits<int64_t>::max();
constexpr int64_t kIntMin = std::numeric_limits<int64_t>::min();

// A naive transcription of ONNX's reference cubic Resize (onnx/reference/ops/op_resize.py): one
// output element at a time, interpolating the first axis over the interpolations of the others,
// picking the 4 taps as the nearest indices of the edge-padded input by sorting.
struct CubicRef {
  std::string coord = "half_pixel";
  double a = -0.75;
  bool exclude = false;
  double extrapolation = 0;
};

double refCubic1d(const std::vector<double>& data, double scale, int64_t out_int, int64_t x, double roi0, double roi1,
                  const CubicRef& o) {
  const auto in = static_cast<int64_t>(data.size());
  const double ow = scale * static_cast<double>(in), xr = static_cast<double>(x), in1 = static_cast<double>(in - 1);
  double xo = 0;
  if (o.coord == "align_corners") {
    xo = ow == 1 ? 0.0 : xr * in1 / (ow - 1);
  } else if (o.coord == "asymmetric") {
    xo = xr / scale;
  } else if (o.coord == "tf_crop_and_resize") {
    xo = ow == 1 ? (roi1 - roi0) * in1 / 2 : xr * (roi1 - roi0) * in1 / (ow - 1);
    xo += roi0 * in1;
    if (xo < 0 || xo > in1) return o.extrapolation;
  } else if (o.coord == "pytorch_half_pixel") {
    xo = ow == 1 ? -0.5 : (xr + 0.5) / scale - 0.5;
  } else if (o.coord == "half_pixel") {
    xo = (xr + 0.5) / scale - 0.5;
  } else if (o.coord == "half_pixel_symmetric") {
    const double adjustment = static_cast<double>(out_int) / ow;
    xo = static_cast<double>(in) / 2 * (1 - adjustment) + (xr + 0.5) / scale - 0.5;
  } else if (o.coord == "tf_half_pixel_for_nn") {
    xo = (xr + 0.5) / scale;
  }
  const double ratio = xo == std::floor(xo) ? 1.0 : xo - std::floor(xo);
  const double A = o.a, r1 = ratio + 1, q = 1 - ratio, q1 = q + 1;
  std::vector<double> coeffs = {((A * r1 - 5 * A) * r1 + 8 * A) * r1 - 4 * A,
                                ((A + 2) * ratio - (A + 3)) * ratio * ratio + 1, ((A + 2) * q - (A + 3)) * q * q + 1,
                                ((A * q1 - 5 * A) * q1 + 8 * A) * q1 - 4 * A};
  // _get_neighbor: pad by 2 in edge mode, take the 4 indices nearest to xo + 2 (ties: smaller).
  std::vector<int64_t> padded(static_cast<size_t>(in + 4));
  std::iota(padded.begin(), padded.end(), 0);
  const double xp = xo + 2;
  std::sort(padded.begin(), padded.end(), [&](int64_t i, int64_t j) {
    const double di = std::abs(xp - static_cast<double>(i)), dj = std::abs(xp - static_cast<double>(j));
    return di != dj ? di < dj : i < j;
  });
  std::vector<int64_t> idx(padded.begin(), padded.begin() + 4);
  std::sort(idx.begin(), idx.end());
  if (o.exclude) {
    double sum = 0;
    for (size_t t = 0; t < 4; ++t) {
      if (idx[t] - 2 < 0 || idx[t] - 2 >= in) coeffs[t] = 0;
      sum += coeffs[t];
    }
    for (double& c : coeffs) c /= sum;
  }
  double v = 0;
  for (size_t t = 0; t < 4; ++t) v += coeffs[t] * data[static_cast<size_t>(std::clamp<int64_t>(idx[t] - 2, 0, in - 1))];
  return v;
}

/// Resizes x (float32) to `out` with per-axis scale factors; roi holds all starts then all ends.
Tensor refCubic(const Tensor& x, const std::vector<double>& scales, const Shape& out, std::vector<double> roi,
                const CubicRef& o) {
  const size_t r = x.rank();
  if (roi.empty()) {
    roi.assign(r, 0.0);
    roi.resize(2 * r, 1.0);
  }
  std::vector<int64_t> xs(r, 1);
  for (size_t k = r - 1; k-- > 0;) xs[k] = xs[k + 1] * x.dim(k + 1);
  Tensor y(DType::Float32, out);
  std::vector<int64_t> pos(r);
  // interp(axis, offset): the value at output position `pos` of the sub-array at `offset` over axes >= axis.
  std::function<double(size_t, int64_t)> interp = [&](size_t axis, int64_t offset) {
    std::vector<double> line;
    for (int64_t i = 0; i < x.dim(axis); ++i)
      line.push_back(axis + 1 == r ? x.at(offset + i * xs[axis]) : interp(axis + 1, offset + i * xs[axis]));
    return refCubic1d(line, scales[axis], out[axis], pos[axis], roi[axis], roi[r + axis], o);
  };
  for (int64_t i = 0; i < y.numel(); ++i) {
    int64_t rem = i;
    for (size_t k = r; k-- > 0;) {
      pos[k] = rem % out[k];
      rem /= out[k];
    }
    y.data<float>()[i] = static_cast<float>(interp(0, 0));
  }
  return y;
}

}  // namespace

TEST_CASE("Reshape: 0 copies, -1 infers, allowzero, zero-copy", "[shape]") {
  const Tensor x = iota(DType::Float32, {2, 3, 4});
  SECTION("0 and -1") {
    Tensor y = run1(node("Reshape", {x, I({2}, {0, -1})}));
    CHECK(y.shape() == Shape{2, 12});
    CHECK(y.raw() == x.raw());  // shares the input's buffer
  }
  SECTION("-1 alone flattens") { CHECK(run1(node("Reshape", {x, I({1}, {-1})})).shape() == Shape{24}); }
  SECTION("allowzero keeps a literal 0") {
    const Tensor e(DType::Float32, {0, 3});
    CHECK(run1(node("Reshape", {e, I({2}, {3, 0})}, {attrInt("allowzero", 1)}, 14)).shape() == Shape{3, 0});
    CHECK(run1(node("Reshape", {e, I({2}, {0, 3})}, {}, 14)).shape() == Shape{0, 3});
  }
  SECTION("opset 1-4 takes the shape as an attribute") {
    CHECK(run1(node("Reshape", {x}, {attrInts("shape", {4, 0, -1})}, 4)).shape() == Shape{4, 3, 2});
  }
  SECTION("errors") {
    CHECK_THROWS_AS(run1(node("Reshape", {x, I({2}, {5, -1})})), lwc::Error);
    CHECK_THROWS_AS(run1(node("Reshape", {x, I({2}, {-1, -1})})), lwc::Error);
    CHECK_THROWS_AS(run1(node("Reshape", {x, I({2}, {7, 7})})), lwc::Error);
  }
}

TEST_CASE("Flatten", "[shape]") {
  const Tensor x = iota(DType::Float32, {2, 3, 4});
  CHECK(run1(node("Flatten", {x})).shape() == Shape{2, 12});
  CHECK(run1(node("Flatten", {x}, {attrInt("axis", 0)})).shape() == Shape{1, 24});
  CHECK(run1(node("Flatten", {x}, {attrInt("axis", 3)})).shape() == Shape{24, 1});
  CHECK(run1(node("Flatten", {x}, {attrInt("axis", -1)})).shape() == Shape{6, 4});
  CHECK_THROWS_AS(run1(node("Flatten", {x}, {attrInt("axis", 4)})), lwc::Error);
}

TEST_CASE("Squeeze and Unsqueeze: axes attribute before 13, input from 13", "[shape]") {
  const Tensor x = iota(DType::Float32, {1, 3, 1, 2});
  SECTION("Squeeze") {
    CHECK(run1(node("Squeeze", {x}, {attrInts("axes", {0})}, 11)).shape() == Shape{3, 1, 2});
    CHECK(run1(node("Squeeze", {x, I({2}, {0, -2})}, {}, 13)).shape() == Shape{3, 2});
    CHECK(run1(node("Squeeze", {x}, {}, 13)).shape() == Shape{3, 2});
    CHECK_THROWS_AS(run1(node("Squeeze", {x, I({1}, {1})}, {}, 13)), lwc::Error);
    CHECK_THROWS_AS(run1(node("Squeeze", {x, I({1}, {4})}, {}, 13)), lwc::Error);
  }
  SECTION("Unsqueeze") {
    const Tensor v = iota(DType::Float32, {3, 4});
    CHECK(run1(node("Unsqueeze", {v}, {attrInts("axes", {0, 3})}, 11)).shape() == Shape{1, 3, 4, 1});
    CHECK(run1(node("Unsqueeze", {v, I({2}, {-1, 1})}, {}, 13)).shape() == Shape{3, 1, 4, 1});
    Tensor y = run1(node("Unsqueeze", {v, I({1}, {0})}, {}, 13));
    CHECK(y.raw() == v.raw());
    CHECK_THROWS_AS(run1(node("Unsqueeze", {v, I({2}, {0, 0})}, {}, 13)), lwc::Error);
    CHECK_THROWS_AS(run1(node("Unsqueeze", {v, I({1}, {3})}, {}, 13)), lwc::Error);
  }
}

TEST_CASE("Transpose", "[shape]") {
  SECTION("default perm reverses the axes") {
    checkEq(run1(node("Transpose", {iota(DType::Int64, {2, 3})})), I({3, 2}, {0, 3, 1, 4, 2, 5}));
  }
  SECTION("explicit perm on int64, bool and float16") {
    const Tensor x = iota(DType::Int64, {2, 2, 3});
    const auto perm = attrInts("perm", {1, 2, 0});
    const Tensor want = I({2, 3, 2}, {0, 6, 1, 7, 2, 8, 3, 9, 4, 10, 5, 11});
    checkEq(run1(node("Transpose", {x}, {perm})), want);
    checkEq(run1(node("Transpose", {x.cast(DType::Float16)}, {perm})), want.cast(DType::Float16));
    const Tensor b = B({2, 2, 3}, {true, false, false, true, true, false, false, false, true, true, false, true});
    checkEq(run1(node("Transpose", {b}, {perm})),
            B({2, 3, 2}, {true, false, false, false, false, true, true, true, true, false, false, true}));
  }
  SECTION("large tensors match an element-by-element oracle") {
    // Channel shuffle and attention's head split keep a contiguous inner run (copied as whole rows,
    // over threads above 1 MB, in units of up to 256 rows); NCHW -> NHWC does not.
    for (const auto& [shape, perm] : std::vector<std::pair<Shape, std::vector<int64_t>>>{
             {{1, 2, 58, 28, 28}, {0, 2, 1, 3, 4}},
             {{2, 64, 40, 40}, {0, 2, 3, 1}},
             {{3, 5, 7, 11}, {3, 1, 0, 2}},
             {{64, 16, 3, 4, 16}, {2, 0, 3, 1, 4}},
             {{600, 2, 8}, {1, 0, 2}},
             {{5, 300, 3}, {1, 0, 2}}}) {
      INFO(shapeStr(shape));
      const Tensor x = randomFloat(shape, 7);
      checkEq(run1(node("Transpose", {x}, {attrInts("perm", perm)})), naiveTranspose(x, perm));
    }
    const Tensor h = randomFloat({37, 45}, 9).cast(DType::Float16);
    checkEq(run1(node("Transpose", {h})), naiveTranspose(h.cast(DType::Float32), {1, 0}).cast(DType::Float16));
    const Tensor h3 = randomFloat({600, 2, 8}, 10).cast(DType::Float16);  // 16-byte rows
    checkEq(run1(node("Transpose", {h3}, {attrInts("perm", {1, 0, 2})})),
            naiveTranspose(h3.cast(DType::Float32), {1, 0, 2}).cast(DType::Float16));
  }
  SECTION("NCHW -> NHWC of 2-4 channels (planes interleaved into pixels) for 1-, 2-, 4- and 8-byte elements") {
    for (const Shape& shape : std::vector<Shape>{{2, 3, 17, 19}, {1, 3, 224, 224}, {3, 2, 5, 61}, {2, 4, 30, 30}, {1, 3, 1, 7}})
      for (DType dt : {DType::UInt8, DType::Float16, DType::Float32, DType::Int64}) {
        INFO(shapeStr(shape) << " " << dtypeName(dt));
        Tensor v(DType::Int64, shape);  // values below 251: exact in every type
        for (int64_t i = 0; i < v.numel(); ++i) v.data<int64_t>()[i] = (i * 7 + i / 251) % 251;
        const std::vector<int64_t> perm = {0, 2, 3, 1};
        checkEq(run1(node("Transpose", {v.cast(dt)}, {attrInts("perm", perm)})),
                naiveTranspose(v.cast(DType::Float32), perm).cast(dt));
      }
  }
  SECTION("bytes and 4-byte elements: NCHW <-> NHWC and 2-D transposes in 16 x 16 and 4 x 4 blocks, with partial blocks") {
    for (const auto& [shape, perm] : std::vector<std::pair<Shape, std::vector<int64_t>>>{
             {{1, 58, 28, 28}, {0, 2, 3, 1}},
             {{1, 28, 28, 58}, {0, 3, 1, 2}},
             {{2, 116, 14, 14}, {0, 2, 3, 1}},
             {{3, 17, 5, 33}, {0, 2, 3, 1}},
             {{3, 5, 33, 17}, {0, 3, 1, 2}},
             {{1, 1024, 7, 7}, {0, 2, 3, 1}},
             {{1, 7, 7, 464}, {0, 3, 1, 2}},
             {{37, 45}, {1, 0}},
             {{16, 16}, {1, 0}}})
      for (DType dt : {DType::UInt8, DType::Int8, DType::Float32}) {
        INFO(shapeStr(shape) << " " << dtypeName(dt));
        Tensor v(DType::Int64, shape);  // values below 251 (and 127 for int8): exact in every type
        for (int64_t i = 0; i < v.numel(); ++i) v.data<int64_t>()[i] = (i * 7 + i / 251) % (dt == DType::Int8 ? 127 : 251);
        checkEq(run1(node("Transpose", {v.cast(dt)}, {attrInts("perm", perm)})),
                naiveTranspose(v.cast(DType::Float32), perm).cast(dt));
      }
  }
  SECTION("moving only axes of size 1 is a view of the same buffer") {
    // NCHW -> NHWC of a pooled [N, C, 1, 1] tensor, and a size-1 axis moved to the front.
    for (const auto& [shape, perm] : std::vector<std::pair<Shape, std::vector<int64_t>>>{
             {{3, 8, 1, 1}, {0, 2, 3, 1}}, {{4, 1, 5}, {1, 0, 2}}, {{1, 6, 1}, {2, 1, 0}}}) {
      const Tensor x = randomFloat(shape, 11);
      const Tensor y = run1(node("Transpose", {x}, {attrInts("perm", perm)}));
      checkEq(y, naiveTranspose(x, perm));
      CHECK(y.raw() == x.raw());
    }
    // A size-1 axis moves and two others swap: a copy.
    const Tensor x = randomFloat({2, 1, 3}, 12);
    const Tensor y = run1(node("Transpose", {x}, {attrInts("perm", {2, 1, 0})}));
    checkEq(y, naiveTranspose(x, {2, 1, 0}));
    CHECK(y.raw() != x.raw());
  }
  SECTION("ranks above 8 (the kernel's index arrays then leave their inline storage)") {
    // Rank 9 to 11, every axis of size 2 or 3, so each permutation leaves runs of one element and the
    // per-row walk goes through all the dims; the perm reverses pairs of axes.
    for (size_t r : {9, 10, 11}) {
      Shape shape;
      std::vector<int64_t> perm;
      for (size_t k = 0; k < r; ++k) shape.push_back(2 + static_cast<int64_t>(k % 2));
      for (size_t k = 0; k < r; ++k) perm.push_back(static_cast<int64_t>(k % 2 == 0 ? std::min(k + 1, r - 1) : k - 1));
      if (r % 2 == 1) std::swap(perm[r - 1], perm[0]);
      INFO("rank " << r << ", perm " << shapeStr(perm));
      const Tensor x = randomFloat(shape, 13 + static_cast<uint32_t>(r));
      checkEq(run1(node("Transpose", {x}, {attrInts("perm", perm)})), naiveTranspose(x, perm));
      std::reverse(perm.begin(), perm.end());
      checkEq(run1(node("Transpose", {x}, {attrInts("perm", perm)})), naiveTranspose(x, perm));
      checkEq(run1(node("Transpose", {x})), naiveTranspose(x, [&] {
                std::vector<int64_t> rev(r);
                for (size_t k = 0; k < r; ++k) rev[k] = static_cast<int64_t>(r - 1 - k);
                return rev;
              }()));
    }
  }
  SECTION("a perm that is not a permutation") {
    CHECK_THROWS_AS(run1(node("Transpose", {iota(DType::Float32, {2, 3})}, {attrInts("perm", {0, 0})})), lwc::Error);
    CHECK_THROWS_WITH(run1(node("Transpose", {iota(DType::Float32, {2, 3})}, {attrFloat("perm", 1.0f)})),
                      Catch::Contains("perm"));
  }
}

TEST_CASE("Concat", "[shape]") {
  const Tensor a = I({2, 1}, {1, 2});
  const Tensor b = I({2, 2}, {3, 4, 5, 6});
  checkEq(run1(node("Concat", {a, b}, {attrInt("axis", 1)})), I({2, 3}, {1, 3, 4, 2, 5, 6}));
  checkEq(run1(node("Concat", {b, b}, {attrInt("axis", -2)})), I({4, 2}, {3, 4, 5, 6, 3, 4, 5, 6}));
  checkEq(run1(node("Concat", {B({2}, {true, false}), B({0}, {}), B({1}, {true})}, {attrInt("axis", 0)})),
          B({3}, {true, false, true}));
  const Tensor big = randomFloat({1, 256, 32, 32}, 1);
  const Tensor y = run1(node("Concat", {big, big}, {attrInt("axis", 1)}));
  CHECK(std::memcmp(y.data<float>() + 256 * 1024, big.raw(), big.nbytes()) == 0);
  CHECK_THROWS_AS(run1(node("Concat", {a, b}, {attrInt("axis", 0)})), lwc::Error);
  CHECK_THROWS_AS(run1(node("Concat", {a, a}, {attrInt("axis", 2)})), lwc::Error);
}

TEST_CASE("Split: attribute (<13), input (13), num_outputs (18)", "[shape]") {
  const Tensor x = iota(DType::Int64, {6});
  SECTION("opset 11 split attribute") {
    auto y = runNode(node("Split", {x}, {attrInts("split", {2, 4})}, 11, 2));
    checkEq(y[0], I({2}, {0, 1}));
    checkEq(y[1], I({4}, {2, 3, 4, 5}));
  }
  SECTION("opset 13 split input, 2-D along axis 1") {
    auto y = runNode(node("Split", {iota(DType::Int64, {2, 3}), I({2}, {1, 2})}, {attrInt("axis", 1)}, 13, 2));
    checkEq(y[0], I({2, 1}, {0, 3}));
    checkEq(y[1], I({2, 2}, {1, 2, 4, 5}));
  }
  SECTION("equal parts by default") {
    auto y = runNode(node("Split", {x.cast(DType::Float16)}, {}, 13, 3));
    checkEq(y[2], I({2}, {4, 5}).cast(DType::Float16));
  }
  SECTION("opset 18 num_outputs: the last chunk is smaller") {
    auto y = runNode(node("Split", {iota(DType::Int64, {5})}, {attrInt("num_outputs", 3)}, 18, 3));
    checkEq(y[0], I({2}, {0, 1}));
    checkEq(y[1], I({2}, {2, 3}));
    checkEq(y[2], I({1}, {4}));
  }
  SECTION("errors") {
    CHECK_THROWS_AS(runNode(node("Split", {x, I({2}, {2, 3})}, {}, 13, 2)), lwc::Error);
    CHECK_THROWS_AS(runNode(node("Split", {iota(DType::Int64, {5})}, {}, 13, 2)), lwc::Error);
  }
}

TEST_CASE("Slice: attributes (<10), inputs, negative steps, clamping", "[shape]") {
  const Tensor m = iota(DType::Int64, {3, 4});
  const Tensor v = iota(DType::Int64, {10});
  SECTION("opset 9 attributes") {
    checkEq(run1(node("Slice", {m}, {attrInts("starts", {0, 1}), attrInts("ends", {2, 3})}, 9)),
            I({2, 2}, {1, 2, 5, 6}));
    checkEq(run1(node("Slice", {m}, {attrInts("starts", {1}), attrInts("ends", {1000}), attrInts("axes", {1})}, 9)),
            I({3, 3}, {1, 2, 3, 5, 6, 7, 9, 10, 11}));
  }
  SECTION("opset 13 negative steps to INT64_MIN") {
    checkEq(run1(node("Slice", {v, I({1}, {-1}), I({1}, {kIntMin}), I({1}, {0}), I({1}, {-3})}, {}, 13)),
            I({4}, {9, 6, 3, 0}));
    checkEq(run1(node("Slice", {m, I({1}, {kIntMax}), I({1}, {kIntMin}), I({1}, {-1}), I({1}, {-1})}, {}, 13)),
            I({3, 4}, {3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8}));
    checkEq(run1(node("Slice", {v, I({1}, {7}), I({1}, {2}), I({1}, {0}), I({1}, {-2})}, {}, 13)), I({3}, {7, 5, 3}));
  }
  SECTION("ends of INT64_MAX, out-of-range starts, steps") {
    checkEq(run1(node("Slice", {v, I({1}, {8}), I({1}, {kIntMax})}, {}, 13)), I({2}, {8, 9}));
    checkEq(run1(node("Slice", {v, I({1}, {-100}), I({1}, {3})}, {}, 13)), I({3}, {0, 1, 2}));
    CHECK(run1(node("Slice", {v, I({1}, {100}), I({1}, {200})}, {}, 13)).shape() == Shape{0});
    checkEq(run1(node("Slice", {v, I({1}, {1}), I({1}, {9}), I({1}, {0}), I({1}, {3})}, {}, 13)), I({3}, {1, 4, 7}));
    checkEq(run1(node("Slice", {m.cast(DType::Bool), I32({1}, {0}), I32({1}, {1})}, {}, 13)),
            B({1, 4}, {false, true, true, true}));
  }
  SECTION("step 0 is an error") {
    CHECK_THROWS_AS(run1(node("Slice", {v, I({1}, {0}), I({1}, {5}), I({1}, {0}), I({1}, {0})}, {}, 13)), lwc::Error);
  }
  SECTION("empty axes or steps given beside a start are a length mismatch, as ONNX Runtime refuses them") {
    CHECK_THROWS_WITH(run1(node("Slice", {v, I({1}, {1}), I({1}, {5}), I({0}, {})}, {}, 13)),
                      Catch::Matchers::Contains("must have the same length (1, 1, 0, 1)"));
    CHECK_THROWS_WITH(run1(node("Slice", {v, I({1}, {1}), I({1}, {5}), I({1}, {0}), I({0}, {})}, {}, 13)),
                      Catch::Matchers::Contains("must have the same length (1, 1, 1, 0)"));
    // No starts at all: nothing to slice, the input as it is.
    checkEq(run1(node("Slice", {v, I({0}, {}), I({0}, {}), I({0}, {})}, {}, 13)), v);
  }
}

TEST_CASE("Gather", "[shape]") {
  const Tensor x = I({3, 2}, {1, 2, 3, 4, 5, 6});
  checkEq(run1(node("Gather", {x, I({2, 2}, {0, 1, 1, 2})})), I({2, 2, 2}, {1, 2, 3, 4, 3, 4, 5, 6}));
  checkEq(run1(node("Gather", {x, I32({1}, {-1})}, {attrInt("axis", 1)})), I({3, 1}, {2, 4, 6}));
  checkEq(run1(node("Gather", {x, Tensor::scalar<int64_t>(2)})), I({2}, {5, 6}));
  checkEq(run1(node("Gather", {B({3}, {true, false, true}), I({2}, {1, 0})})), B({2}, {false, true}));
  CHECK_THROWS_AS(run1(node("Gather", {x, I({1}, {3})})), lwc::Error);
  CHECK_THROWS_AS(run1(node("Gather", {x, I({1}, {-4})})), lwc::Error);
  CHECK_THROWS_AS(run1(node("Gather", {x, I({1}, {0})}, {attrInt("axis", 2)})), lwc::Error);
}

TEST_CASE("Gather, Slice and Split of a contiguous block are views of the input and other selections copy", "[shape]") {
  // [3, 2, 2, 4]: a stacked q, k, v as attention exports split it.
  const Tensor x = iota(DType::Float32, {3, 2, 2, 4});
  const auto* base = static_cast<const float*>(x.raw());
  auto viewAt = [&](const Tensor& y) -> int64_t {  // element offset into x's buffer, or -1 for a copy
    const auto* p = static_cast<const float*>(y.raw());
    return p >= base && p < base + x.numel() ? p - base : -1;
  };
  auto naive = [&](const Tensor& y, int64_t offset) {  // the block's values, read from x
    Tensor want(DType::Float32, y.shape());
    for (int64_t i = 0; i < want.numel(); ++i) want.data<float>()[i] = x.data<float>()[offset + i];
    checkEq(y, want);
  };
  SECTION("Gather of one index, or consecutive indices, on the outermost axis") {
    const Tensor k = run1(node("Gather", {x, Tensor::scalar<int64_t>(1)}));
    CHECK(k.shape() == Shape{2, 2, 4});
    CHECK(viewAt(k) == 16);
    naive(k, 16);
    const Tensor kv = run1(node("Gather", {x, I({2}, {1, 2})}));
    CHECK(viewAt(kv) == 16);
    naive(kv, 16);
    const Tensor last = run1(node("Gather", {x, I({1, 1}, {-1})}));  // negative, 2-D indices
    CHECK(last.shape() == Shape{1, 1, 2, 2, 4});
    CHECK(viewAt(last) == 32);
    // Leading axes of size 1 count as outermost: axis 1 of a [1, 3, 4].
    const Tensor row = iota(DType::Float32, {1, 3, 4});
    const Tensor r = run1(node("Gather", {row, Tensor::scalar<int64_t>(2)}, {attrInt("axis", 1)}));
    CHECK(static_cast<const float*>(r.raw()) == static_cast<const float*>(row.raw()) + 8);
    // Not a block: reversed or repeated indices, an inner axis.
    CHECK(viewAt(run1(node("Gather", {x, I({2}, {2, 1})}))) == -1);
    CHECK(viewAt(run1(node("Gather", {x, I({2}, {1, 1})}))) == -1);
    CHECK(viewAt(run1(node("Gather", {x, Tensor::scalar<int64_t>(1)}, {attrInt("axis", 1)}))) == -1);
  }
  SECTION("Slice: single indices outside, one range with step 1, then whole axes") {
    const Tensor a = run1(node("Slice", {x, I({1}, {1}), I({1}, {3})}, {}, 13));
    CHECK(a.shape() == Shape{2, 2, 2, 4});
    CHECK(viewAt(a) == 16);
    naive(a, 16);
    // x[2, 1, 0:2, :] and x[0, 1, 1, 1:3]
    const Tensor b = run1(node("Slice", {x, I({2}, {2, 1}), I({2}, {3, 2})}, {}, 13));
    CHECK(viewAt(b) == 40);
    naive(b, 40);
    const Tensor c = run1(node("Slice", {x, I({4}, {0, 1, 1, 1}), I({4}, {1, 2, 2, 3})}, {}, 13));
    CHECK(c.shape() == Shape{1, 1, 1, 2});
    CHECK(viewAt(c) == 13);
    naive(c, 13);
    // Copies: a range on an inner axis, a step, a reversed range.
    const Tensor d = run1(node("Slice", {x, I({1}, {1}), I({1}, {3}), I({1}, {3})}, {}, 13));
    CHECK(viewAt(d) == -1);
    CHECK(d.shape() == Shape{3, 2, 2, 2});
    CHECK(viewAt(run1(node("Slice", {x, I({1}, {0}), I({1}, {3}), I({1}, {0}), I({1}, {2})}, {}, 13))) == -1);
    CHECK(viewAt(run1(node("Slice", {x, I({1}, {2}), I({1}, {kIntMin}), I({1}, {0}), I({1}, {-1})}, {}, 13))) == -1);
  }
  SECTION("Split along the outermost axis; an inner axis copies") {
    auto parts = runNode(node("Split", {x, I({2}, {1, 2})}, {}, 13, 2));
    CHECK(viewAt(parts[0]) == 0);
    CHECK(viewAt(parts[1]) == 16);
    naive(parts[0], 0);
    naive(parts[1], 16);
    auto inner = runNode(node("Split", {x}, {attrInt("axis", 3)}, 13, 2));
    CHECK(viewAt(inner[0]) == -1);
    CHECK(viewAt(inner[1]) == -1);
  }
}

TEST_CASE("GatherElements and GatherND", "[shape]") {
  checkEq(run1(node("GatherElements", {I({2, 2}, {1, 2, 3, 4}), I({2, 2}, {0, 0, 1, 0})}, {attrInt("axis", 1)})),
          I({2, 2}, {1, 1, 4, 3}));
  checkEq(run1(node("GatherElements", {I({3, 2}, {1, 2, 3, 4, 5, 6}), I({1, 2}, {-1, 0})})), I({1, 2}, {5, 2}));
  CHECK_THROWS_AS(run1(node("GatherElements", {I({2, 2}, {1, 2, 3, 4}), I({1, 1}, {2})})), lwc::Error);
  checkEq(run1(node("GatherND", {I({2, 2}, {0, 1, 2, 3}), I({2, 2}, {0, 0, 1, 1})})), I({2}, {0, 3}));
  checkEq(run1(node("GatherND", {I({2, 2}, {0, 1, 2, 3}), I({2, 1}, {1, 0})})), I({2, 2}, {2, 3, 0, 1}));
  checkEq(run1(node("GatherND", {iota(DType::Int64, {2, 2, 2}), I({2, 1}, {1, 0})}, {attrInt("batch_dims", 1)})),
          I({2, 2}, {2, 3, 4, 5}));
}

TEST_CASE("Compress and ReverseSequence", "[shape]") {
  const Tensor x = I({3, 2}, {1, 2, 3, 4, 5, 6});
  checkEq(run1(node("Compress", {x, B({2}, {false, true})}, {attrInt("axis", 0)})), I({1, 2}, {3, 4}));
  checkEq(run1(node("Compress", {x, B({2}, {true, true})}, {attrInt("axis", -1)})), x);
  checkEq(run1(node("Compress", {x, B({5}, {false, true, false, false, true})})), I({2}, {2, 5}));
  CHECK_THROWS_AS(run1(node("Compress", {x, B({3}, {true, true, true})}, {attrInt("axis", 1)})), lwc::Error);
  // [time, batch] by default: batch 0 reverses its first 3 steps, batch 1 its first 2.
  checkEq(run1(node("ReverseSequence", {iota(DType::Int64, {4, 2}), I({2}, {3, 2})})),
          I({4, 2}, {4, 3, 2, 1, 0, 5, 6, 7}));
  checkEq(run1(node("ReverseSequence", {iota(DType::Int64, {2, 3}), I({2}, {1, 3})},
                    {attrInt("batch_axis", 0), attrInt("time_axis", 1)})),
          I({2, 3}, {0, 1, 2, 5, 4, 3}));
  CHECK_THROWS_AS(run1(node("ReverseSequence", {iota(DType::Int64, {4, 2}), I({2}, {5, 1})})), lwc::Error);
}

TEST_CASE("ScatterND and ScatterElements", "[shape]") {
  SECTION("ScatterND") {
    checkEq(
        run1(node("ScatterND", {I({8}, {1, 2, 3, 4, 5, 6, 7, 8}), I({4, 1}, {4, 3, 1, 7}), I({4}, {9, 10, 11, 12})})),
        I({8}, {1, 11, 3, 10, 9, 6, 7, 12}));
    checkEq(run1(node("ScatterND", {I({2, 2}, {1, 2, 3, 4}), I({1, 1}, {1}), I({1, 2}, {7, 8})})),
            I({2, 2}, {1, 2, 7, 8}));
    checkEq(run1(node("ScatterND", {F({3}, {1, 2, 3}), I({2, 1}, {0, 0}), F({2}, {5, 6})},
                      {attrString("reduction", "add")}, 16)),
            F({3}, {12, 2, 3}));
    CHECK_THROWS_AS(run1(node("ScatterND", {F({3}, {1, 2, 3}), I({1, 1}, {3}), F({1}, {5})})), lwc::Error);
  }
  SECTION("ScatterElements") {
    checkEq(run1(node("ScatterElements", {F({3, 3}, {0, 0, 0, 0, 0, 0, 0, 0, 0}), I({2, 3}, {1, 0, 2, 0, 2, 1}),
                                          F({2, 3}, {1, 1.5f, 1.25f, 2, 2.5f, 2.25f})})),
            F({3, 3}, {2, 1.5f, 0, 1, 0, 2.25f, 0, 2.5f, 1.25f}));
    checkEq(run1(node("ScatterElements", {F({1, 5}, {1, 2, 3, 4, 5}), I({1, 2}, {1, -2}), F({1, 2}, {1.5f, 2.5f})},
                      {attrInt("axis", 1)})),
            F({1, 5}, {1, 1.5f, 3, 2.5f, 5}));
    checkEq(run1(node("ScatterElements", {I({1, 3}, {1, 2, 3}), I({1, 2}, {1, 1}), I({1, 2}, {4, 5})},
                      {attrInt("axis", 1), attrString("reduction", "mul")}, 16)),
            I({1, 3}, {1, 40, 3}));
  }
}

TEST_CASE("Shape and Size", "[shape]") {
  const Tensor x(DType::Float16, {2, 3, 4});
  checkEq(run1(node("Shape", {x})), I({3}, {2, 3, 4}));
  checkEq(run1(node("Shape", {x}, {attrInt("start", 1)}, 15)), I({2}, {3, 4}));
  checkEq(run1(node("Shape", {x}, {attrInt("end", -1)}, 15)), I({2}, {2, 3}));
  checkEq(run1(node("Shape", {x}, {attrInt("start", -10), attrInt("end", 10)}, 15)), I({3}, {2, 3, 4}));
  CHECK(run1(node("Shape", {x}, {attrInt("start", 2), attrInt("end", 1)}, 15)).shape() == Shape{0});
  checkEq(run1(node("Size", {x})), Tensor::scalar<int64_t>(24));
}

TEST_CASE("Expand and Tile", "[shape]") {
  const Tensor x = I({2, 1}, {1, 2});
  checkEq(run1(node("Expand", {x, I({2}, {2, 3})})), I({2, 3}, {1, 1, 1, 2, 2, 2}));
  checkEq(run1(node("Expand", {x, I({3}, {2, 1, 1})})), I({2, 2, 1}, {1, 2, 1, 2}));
  checkEq(run1(node("Tile", {I({2, 2}, {1, 2, 3, 4}), I({2}, {1, 2})})), I({2, 4}, {1, 2, 1, 2, 3, 4, 3, 4}));
  checkEq(run1(node("Tile", {B({1, 2}, {true, false}), I({2}, {2, 1})})), B({2, 2}, {true, false, true, false}));
  CHECK_THROWS_AS(run1(node("Expand", {x, I({2}, {2, -3})})), lwc::Error);
  CHECK_THROWS_AS(run1(node("Expand", {x, I({3}, {1 << 20, 1 << 20, 4})})), lwc::Error);
  CHECK_THROWS_AS(run1(node("Tile", {x, I({2}, {1 << 20, 1 << 20})})), lwc::Error);
  CHECK_THROWS_AS(run1(node("Tile", {x, I({2}, {1, -1})})), lwc::Error);
}

TEST_CASE("Pad: opset 2 attributes, opset 11+ inputs, modes, negative pads, axes", "[shape]") {
  const Tensor m = F({2, 2}, {1, 2, 3, 4});
  const Tensor v = F({3}, {1, 2, 3});
  SECTION("opset 2 pads and value attributes") {
    checkEq(run1(node("Pad", {m}, {attrInts("pads", {0, 1, 0, 1}), attrFloat("value", 9)}, 2)),
            F({2, 4}, {9, 1, 2, 9, 9, 3, 4, 9}));
    checkEq(run1(node("Pad", {v}, {attrInts("pads", {2, 2}), attrString("mode", "reflect")}, 2)),
            F({7}, {3, 2, 1, 2, 3, 2, 1}));
  }
  SECTION("opset 13 modes") {
    checkEq(run1(node("Pad", {m, I({4}, {1, 0, 0, 0}), F({}, {7})}, {}, 13)), F({3, 2}, {7, 7, 1, 2, 3, 4}));
    checkEq(run1(node("Pad", {v, I({2}, {2, 2})}, {attrString("mode", "reflect")}, 13)), F({7}, {3, 2, 1, 2, 3, 2, 1}));
    checkEq(run1(node("Pad", {v, I({2}, {2, 2})}, {attrString("mode", "edge")}, 13)), F({7}, {1, 1, 1, 2, 3, 3, 3}));
    checkEq(run1(node("Pad", {m, I({4}, {1, 1, 1, 1})}, {attrString("mode", "edge")}, 13)),
            F({4, 4}, {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}));
  }
  SECTION("negative pads crop") {
    checkEq(run1(node("Pad", {F({4}, {1, 2, 3, 4}), I({2}, {-1, 1})}, {}, 13)), F({4}, {2, 3, 4, 0}));
    checkEq(run1(node("Pad", {m, I({4}, {-1, 0, 0, -1})}, {}, 13)), F({1, 1}, {3}));
  }
  SECTION("opset 18 axes, opset 19 wrap") {
    checkEq(run1(node("Pad", {m, I({2}, {1, 0}), Tensor(), I({1}, {-1})}, {}, 18)), F({2, 3}, {0, 1, 2, 0, 3, 4}));
    checkEq(run1(node("Pad", {v, I({2}, {2, 1})}, {attrString("mode", "wrap")}, 19)), F({6}, {2, 3, 1, 2, 3, 1}));
  }
  SECTION("dtype-generic: float16 and int64") {
    checkEq(run1(node("Pad", {v.cast(DType::Float16), I({2}, {1, 2})}, {attrString("mode", "reflect")}, 13)),
            F({6}, {2, 1, 2, 3, 2, 1}).cast(DType::Float16));
    checkEq(run1(node("Pad", {I({2}, {5, 6}), I({2}, {1, 1}), I({}, {-1})}, {}, 13)), I({4}, {-1, 5, 6, -1}));
  }
  SECTION("errors") {
    CHECK_THROWS_AS(run1(node("Pad", {v, I({2}, {-2, -2})}, {}, 13)), lwc::Error);
    CHECK_THROWS_AS(run1(node("Pad", {v, I({1}, {1})}, {}, 13)), lwc::Error);
    CHECK_THROWS_AS(run1(node("Pad", {v, I({2}, {1, 1})}, {attrString("mode", "wrap")}, 13)), lwc::Error);
  }
}

TEST_CASE("Constant and ConstantOfShape", "[shape]") {
  checkEq(run1(node("Constant", {}, {attrTensor("value", I({2}, {3, 4}))})), I({2}, {3, 4}));
  checkEq(run1(node("Constant", {}, {attrFloat("value_float", 1.5f)}, 13)), Tensor::scalar<float>(1.5f));
  checkEq(run1(node("Constant", {}, {attrInts("value_ints", {1, 2, 3})}, 13)), I({3}, {1, 2, 3}));
  checkEq(run1(node("Constant", {}, {attrFloats("value_floats", {0.5f})}, 13)), F({1}, {0.5f}));
  checkEq(run1(node("ConstantOfShape", {I({2}, {2, 3})})), F({2, 3}, {0, 0, 0, 0, 0, 0}));
  checkEq(run1(node("ConstantOfShape", {I({1}, {3})}, {attrTensor("value", I({1}, {7}))})), I({3}, {7, 7, 7}));
  checkEq(run1(node("ConstantOfShape", {I({0}, {})}, {attrTensor("value", F({1}, {2}))})), Tensor::scalar<float>(2));
  CHECK_THROWS_AS(run1(node("ConstantOfShape", {I({2}, {2, -1})})), lwc::Error);
  CHECK_THROWS_AS(run1(node("ConstantOfShape", {I({2}, {1 << 30, 1 << 30})})), lwc::Error);
}

TEST_CASE("Identity and Dropout pass the input through", "[shape]") {
  const Tensor x = randomFloat({2, 3}, 3);
  CHECK(run1(node("Identity", {x})).raw() == x.raw());
  auto y = runNode(node("Dropout", {x}, {}, 13, 2));
  CHECK(y[0].raw() == x.raw());
  checkEq(y[1], B({2, 3}, {true, true, true, true, true, true}));
  auto old = runNode(node("Dropout", {x}, {attrFloat("ratio", 0.3f)}, 7, 2));
  checkEq(old[1], F({2, 3}, {1, 1, 1, 1, 1, 1}));
  checkEq(run1(node("Dropout", {x, F({}, {0.5f}), B({}, {false})}, {}, 13)), x);
  checkEq(run1(node("Dropout", {x, F({}, {0.0f}), B({}, {true})}, {}, 13)), x);
  CHECK_THROWS_AS(run1(node("Dropout", {x, F({}, {0.5f}), B({}, {true})}, {}, 13)), lwc::Error);
}

TEST_CASE("Range", "[shape]") {
  checkEq(run1(node("Range", {I32({}, {1}), I32({}, {6}), I32({}, {2})})), I32({3}, {1, 3, 5}));
  checkEq(run1(node("Range", {I({}, {10}), I({}, {4}), I({}, {-3})})), I({2}, {10, 7}));
  checkEq(run1(node("Range", {F({}, {0}), F({}, {1}), F({}, {0.25f})})), F({4}, {0, 0.25f, 0.5f, 0.75f}));
  CHECK(run1(node("Range", {I({}, {5}), I({}, {1}), I({}, {1})})).shape() == Shape{0});
  CHECK_THROWS_AS(run1(node("Range", {I({}, {0}), I({}, {5}), I({}, {0})})), lwc::Error);
  CHECK_THROWS_AS(run1(node("Range", {I({}, {0}), I({}, {int64_t{1} << 40}), I({}, {1})})), lwc::Error);
  CHECK_THROWS_AS(run1(node("Range", {F({}, {0}), F({}, {1e12f}), F({}, {1})})), lwc::Error);
}

TEST_CASE("DepthToSpace and SpaceToDepth", "[shape]") {
  const Tensor x = iota(DType::Float32, {1, 8, 1, 1});
  checkEq(run1(node("DepthToSpace", {x}, {attrInt("blocksize", 2)})), F({1, 2, 2, 2}, {0, 2, 4, 6, 1, 3, 5, 7}));
  checkEq(run1(node("DepthToSpace", {x}, {attrInt("blocksize", 2), attrString("mode", "CRD")})),
          F({1, 2, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7}));
  checkEq(run1(node("SpaceToDepth", {iota(DType::Float32, {1, 1, 2, 2})}, {attrInt("blocksize", 2)})),
          F({1, 4, 1, 1}, {0, 1, 2, 3}));
  SECTION("SpaceToDepth inverts DepthToSpace (DCR)") {
    const Tensor r = randomFloat({2, 12, 4, 6}, 5);
    const Tensor s = run1(node("SpaceToDepth", {r}, {attrInt("blocksize", 2)}));
    CHECK(s.shape() == Shape{2, 48, 2, 3});
    checkEq(run1(node("DepthToSpace", {s}, {attrInt("blocksize", 2)})), r);
  }
  CHECK_THROWS_AS(run1(node("DepthToSpace", {x}, {attrInt("blocksize", 3)})), lwc::Error);
}

TEST_CASE("TopK", "[shape]") {
  const Tensor x = F({4}, {3, 1, 3, 2});
  auto y = runNode(node("TopK", {x, I({1}, {2})}, {}, 11, 2));
  checkEq(y[0], F({2}, {3, 3}));
  checkEq(y[1], I({2}, {0, 2}));
  y = runNode(node("TopK", {x, I({1}, {3})}, {attrInt("largest", 0)}, 11, 2));
  checkEq(y[0], F({3}, {1, 2, 3}));
  checkEq(y[1], I({3}, {1, 3, 0}));
  y = runNode(node("TopK", {F({2, 3}, {1, 5, 2, 6, 4, 0})}, {attrInt("k", 1), attrInt("axis", 0)}, 9, 2));
  checkEq(y[0], F({1, 3}, {6, 5, 2}));
  checkEq(y[1], I({1, 3}, {1, 0, 0}));
  y = runNode(node("TopK", {x.cast(DType::Float16), I({1}, {1})}, {}, 11, 2));
  checkEq(y[0], F({1}, {3}).cast(DType::Float16));
  CHECK_THROWS_AS(runNode(node("TopK", {x, I({1}, {5})}, {}, 11, 2)), lwc::Error);
}

TEST_CASE("ArgMax and ArgMin", "[shape]") {
  const Tensor x = F({2, 3}, {1, 5, 5, 7, 2, 7});
  checkEq(run1(node("ArgMax", {x}, {attrInt("axis", 1)})), I({2, 1}, {1, 0}));
  checkEq(run1(node("ArgMax", {x}, {attrInt("axis", 1), attrInt("select_last_index", 1), attrInt("keepdims", 0)})),
          I({2}, {2, 2}));
  checkEq(run1(node("ArgMin", {x}, {attrInt("keepdims", 0)})), I({3}, {0, 1, 0}));
  checkEq(run1(node("ArgMin", {I({3}, {4, -2, -2})}, {attrInt("select_last_index", 1)})), I({1}, {2}));
  CHECK_THROWS_AS(run1(node("ArgMax", {x}, {attrInt("axis", 2)})), lwc::Error);
}

TEST_CASE("NonZero, OneHot, Trilu, CumSum, EyeLike", "[shape]") {
  SECTION("NonZero") {
    checkEq(run1(node("NonZero", {F({2, 2}, {1, 0, -0.0f, 3})})), I({2, 2}, {0, 1, 0, 1}));
    checkEq(run1(node("NonZero", {B({3}, {false, true, true})})), I({1, 2}, {1, 2}));
  }
  SECTION("OneHot") {
    const Tensor ind = I({3}, {0, -1, 3});
    checkEq(run1(node("OneHot", {ind, F({}, {3}), F({2}, {0, 5})})), F({3, 3}, {5, 0, 0, 0, 0, 5, 0, 0, 0}));
    checkEq(run1(node("OneHot", {ind, I({1}, {3}), I({2}, {0, 5})}, {attrInt("axis", 0)})),
            I({3, 3}, {5, 0, 0, 0, 0, 0, 0, 5, 0}));
  }
  SECTION("Trilu") {
    const Tensor m = iota(DType::Int64, {3, 3});
    checkEq(run1(node("Trilu", {m})), I({3, 3}, {0, 1, 2, 0, 4, 5, 0, 0, 8}));
    checkEq(run1(node("Trilu", {m, I({}, {1})})), I({3, 3}, {0, 1, 2, 0, 0, 5, 0, 0, 0}));
    checkEq(run1(node("Trilu", {m, I({}, {-1})}, {attrInt("upper", 0)})), I({3, 3}, {0, 0, 0, 3, 0, 0, 6, 7, 0}));
    checkEq(run1(node("Trilu", {m, I({}, {-5})}, {attrInt("upper", 0)})), I({3, 3}, {0, 0, 0, 0, 0, 0, 0, 0, 0}));
  }
  SECTION("CumSum") {
    const Tensor x = F({4}, {1, 2, 3, 4});
    const Tensor ax = I({}, {0});
    checkEq(run1(node("CumSum", {x, ax})), F({4}, {1, 3, 6, 10}));
    checkEq(run1(node("CumSum", {x, ax}, {attrInt("exclusive", 1)})), F({4}, {0, 1, 3, 6}));
    checkEq(run1(node("CumSum", {x, ax}, {attrInt("reverse", 1)})), F({4}, {10, 9, 7, 4}));
    checkEq(run1(node("CumSum", {x, ax}, {attrInt("reverse", 1), attrInt("exclusive", 1)})), F({4}, {9, 7, 4, 0}));
    checkEq(run1(node("CumSum", {I({2, 2}, {1, 2, 3, 4}), I32({}, {-1})})), I({2, 2}, {1, 3, 3, 7}));
  }
  SECTION("EyeLike") {
    checkEq(run1(node("EyeLike", {I({2, 3}, {9, 9, 9, 9, 9, 9})}, {attrInt("k", 1), attrInt("dtype", 1)})),
            F({2, 3}, {0, 1, 0, 0, 0, 1}));
    checkEq(run1(node("EyeLike", {B({2, 2}, {false, false, false, false})})), B({2, 2}, {true, false, false, true}));
  }
}

TEST_CASE("Resize and Upsample: nearest and linear", "[shape]") {
  const Tensor x = F({1, 1, 2, 2}, {1, 2, 3, 4});
  const Tensor up = F({1, 1, 4, 4}, {1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4});
  const Tensor none;
  SECTION("nearest, half_pixel, round_prefer_floor (defaults)") {
    checkEq(run1(node("Resize", {x, none, F({4}, {1, 1, 2, 2})}, {}, 13)), up);
    // Nearest moves elements, so it works for any dtype.
    checkEq(run1(node("Resize", {iota(DType::Int64, {1, 1, 2, 2}), none, F({4}, {1, 1, 2, 2})}, {}, 13)),
            I({1, 1, 4, 4}, {0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3}));
  }
  SECTION("nearest via Upsample-9 and Resize-10 (asymmetric)") {
    checkEq(run1(node("Upsample", {x, F({4}, {1, 1, 2, 2})}, {}, 9)), up);
    checkEq(run1(node("Resize", {x, F({4}, {1, 1, 2, 2})}, {}, 10)), up);
  }
  SECTION("Upsample-7 and -8: scales as an attribute") {
    // The scales were copied from iterators of two different temporary vectors (a read of freed
    // memory: random counts, or an internal error).
    for (int opset : {7, 8}) checkEq(run1(node("Upsample", {x}, {attrFloats("scales", {1, 1, 2, 2})}, opset)), up);
  }
  SECTION("linear, align_corners, sizes") {
    checkEq(
        run1(node("Resize", {x, none, none, I({4}, {1, 1, 3, 3})},
                  {attrString("mode", "linear"), attrString("coordinate_transformation_mode", "align_corners")}, 13)),
        F({1, 1, 3, 3}, {1, 1.5f, 2, 2, 2.5f, 3, 3, 3.5f, 4}));
  }
  SECTION("linear, half_pixel, scales; float16") {
    const Tensor row = F({1, 1, 1, 2}, {1, 3});
    const auto mode = attrString("mode", "linear");
    checkEq(run1(node("Resize", {row, none, F({4}, {1, 1, 1, 2})}, {mode}, 13)), F({1, 1, 1, 4}, {1, 1.5f, 2.5f, 3}));
    checkEq(run1(node("Resize", {row.cast(DType::Float16), none, F({4}, {1, 1, 1, 2})}, {mode}, 13)),
            F({1, 1, 1, 4}, {1, 1.5f, 2.5f, 3}).cast(DType::Float16));
  }
  SECTION("nearest_mode floor and ceil, asymmetric downsample") {
    const Tensor r = F({1, 1, 1, 4}, {1, 2, 3, 4});
    const auto asym = attrString("coordinate_transformation_mode", "asymmetric");
    checkEq(
        run1(node("Resize", {r, none, none, I({4}, {1, 1, 1, 3})}, {asym, attrString("nearest_mode", "floor")}, 13)),
        F({1, 1, 1, 3}, {1, 2, 3}));
    checkEq(run1(node("Resize", {r, none, none, I({4}, {1, 1, 1, 3})}, {asym, attrString("nearest_mode", "ceil")}, 13)),
            F({1, 1, 1, 3}, {1, 3, 4}));
  }
  SECTION("bad inputs are errors") {
    CHECK_THROWS_AS(run1(node("Resize", {x, none, F({4}, {1, 1, 2, 2}), I({4}, {1, 1, 4, 4})}, {}, 13)), lwc::Error);
    CHECK_THROWS_AS(run1(node("Resize", {x, none, F({2}, {2, 2})}, {}, 13)), lwc::Error);
  }
}

TEST_CASE("Resize: cubic", "[shape]") {
  const Tensor none;
  const auto cubic = attrString("mode", "cubic");
  const auto asym = attrString("coordinate_transformation_mode", "asymmetric");
  SECTION("hand-computed: asymmetric x2 upsample of 1 2 3 4, A = -0.75") {
    // Source coordinates 0, 0.5, 1 ... 3.5. At ratio 0.5 the weights are -0.09375 0.59375 0.59375
    // -0.09375 (Keys, A = -0.75); taps left of 0 or right of 3 read the edge values.
    //   x=1: -0.09375*1 + 0.59375*1 + 0.59375*2 - 0.09375*3 = 1.40625
    //   x=3: taps 1 2 3 4 -> 2.5;  x=5: taps 2 3 4 4 -> 3.59375;  x=7: taps 3 4 4 4 -> 4.09375
    const Tensor row = F({1, 1, 1, 4}, {1, 2, 3, 4});
    checkEq(run1(node("Resize", {row, none, F({4}, {1, 1, 1, 2})}, {cubic, asym}, 13)),
            F({1, 1, 1, 8}, {1, 1.40625f, 2, 2.5f, 3, 3.59375f, 4, 4.09375f}));
    // The same through sizes, and on a 1-D tensor (Resize is N-D).
    checkEq(run1(node("Resize", {F({4}, {1, 2, 3, 4}), none, none, I({1}, {8})}, {cubic, asym}, 13)),
            F({8}, {1, 1.40625f, 2, 2.5f, 3, 3.59375f, 4, 4.09375f}));
  }
  SECTION("hand-computed: exclude_outside renormalises the taps inside the input") {
    // x=1 reads taps -1 0 1 2: tap -1 is dropped, the others are divided by their sum 1.09375.
    // x=7 reads taps 2 3 4 5 at ratio 0.5: taps 2 and 3 are inside, with weights -0.09375 and
    // 0.59375 summing to 0.5: (-0.09375*3 + 0.59375*4) / 0.5 = 4.1875.
    const Tensor y = run1(
        node("Resize", {F({1, 1, 1, 4}, {1, 2, 3, 4}), none, F({4}, {1, 1, 1, 2})},
             {cubic, asym, attrInt("exclude_outside", 1)}, 13));
    REQUIRE(y.shape() == Shape{1, 1, 1, 8});
    CHECK(y.at(1) == Approx((0.59375 * 1 + 0.59375 * 2 - 0.09375 * 3) / 1.09375));
    CHECK(y.at(3) == 2.5f);
    CHECK(y.at(5) == Approx((-0.09375 * 2 + 0.59375 * 3 + 0.59375 * 4) / 1.09375));
    CHECK(y.at(7) == 4.1875f);
  }
  SECTION("cubic_coeff_a: A = -0.5 at ratio 0.5 weighs -0.0625 0.5625 0.5625 -0.0625") {
    const Tensor y = run1(node("Resize", {F({1, 1, 1, 4}, {1, 2, 3, 5}), none, F({4}, {1, 1, 1, 2})},
                               {cubic, asym, attrFloat("cubic_coeff_a", -0.5f)}, 13));
    CHECK(y.at(3) == Approx(-0.0625 * 1 + 0.5625 * 2 + 0.5625 * 3 - 0.0625 * 5));
  }
  SECTION("integral source coordinates copy the input (scale 1, every mode)") {
    const Tensor x = randomFloat({2, 3, 4, 5}, 7);
    for (const char* mode : {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize",
                             "half_pixel_symmetric"}) {
      INFO(mode);
      const Tensor roi = F({8}, {0, 0, 0, 0, 1, 1, 1, 1});
      checkEq(run1(node("Resize", {x, roi, F({4}, {1, 1, 1, 1})},
                        {cubic, attrString("coordinate_transformation_mode", mode), attrInt("exclude_outside", 1)},
                        19)),
              x);
    }
  }
  SECTION("matches the ONNX reference: every coordinate mode, scales and sizes, all axes resized") {
    const Tensor x = randomFloat({2, 3, 5, 4}, 11, -2.0f, 2.0f);
    struct Case {
      std::vector<float> scales;  // empty: use sizes
      std::vector<int64_t> sizes;
    };
    const std::vector<Case> cases = {{{1, 1, 2, 1.5f}, {}},      {{1, 1, 0.6f, 0.8f}, {}},
                                     {{2, 0.7f, 1.3f, 0.5f}, {}}, {{1, 1, 0.25f, 3}, {}},
                                     {{}, {1, 3, 7, 3}},          {{}, {2, 2, 1, 1}}};
    const std::vector<float> roi = {0, 0.1f, 0.2f, -0.1f, 1, 0.8f, 0.9f, 1.2f};
    for (const char* mode : {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize",
                             "half_pixel_symmetric", "tf_half_pixel_for_nn"})
      for (const bool exclude : {false, true})
        for (const Case& c : cases) {
          CubicRef o;
          o.coord = mode;
          o.exclude = exclude;
          o.a = exclude ? -0.5 : -0.75;
          o.extrapolation = 3.5;
          std::vector<double> scales;
          Shape out;
          for (size_t k = 0; k < 4; ++k) {
            const double in = static_cast<double>(x.dim(k));
            scales.push_back(c.scales.empty() ? static_cast<double>(c.sizes[k]) / in : c.scales[k]);
            out.push_back(c.scales.empty() ? c.sizes[k] : static_cast<int64_t>(std::floor(in * c.scales[k])));
          }
          const bool crop = o.coord == "tf_crop_and_resize";
          const std::vector<double> roi_d = crop ? std::vector<double>(roi.begin(), roi.end()) : std::vector<double>{};
          const Tensor want = refCubic(x, scales, out, roi_d, o);
          std::vector<Tensor> inputs = {x, crop ? F({8}, roi) : none};
          if (c.scales.empty()) {
            inputs.push_back(none);
            inputs.push_back(I({4}, c.sizes));
          } else {
            inputs.push_back(F({4}, c.scales));
          }
          const Tensor got = run1(node("Resize", inputs,
                                       {cubic, attrString("coordinate_transformation_mode", mode),
                                        attrInt("exclude_outside", exclude ? 1 : 0),
                                        attrFloat("cubic_coeff_a", static_cast<float>(o.a)),
                                        attrFloat("extrapolation_value", 3.5f)},
                                       19));
          INFO(mode << " exclude_outside=" << exclude << " out " << shapeStr(out));
          REQUIRE(got.shape() == out);
          CHECK(compareTensors(got, want, 1e-5, 1e-6) == "");
        }
  }
  SECTION("matches the ONNX reference: axes and keep_aspect_ratio_policy (opset 18+)") {
    const Tensor x = randomFloat({1, 2, 5, 7}, 5);
    for (const char* mode : {"half_pixel", "align_corners", "half_pixel_symmetric", "pytorch_half_pixel"})
      for (const char* policy : {"not_larger", "not_smaller"}) {
        // sizes 3 x 4 for axes (2, 3): the scale is min/max(3/5, 4/7), the output round(scale * in).
        const bool not_larger = std::string(policy) == "not_larger";
        const double s = not_larger ? std::min(3.0 / 5, 4.0 / 7) : std::max(3.0 / 5, 4.0 / 7);
        const Shape out = {1, 2, static_cast<int64_t>(s * 5 + 0.5), static_cast<int64_t>(s * 7 + 0.5)};
        CubicRef o;
        o.coord = mode;
        const Tensor want = refCubic(x, {1, 1, s, s}, out, {}, o);
        const Tensor got = run1(node("Resize", {x, none, none, I({2}, {3, 4})},
                                     {cubic, attrString("coordinate_transformation_mode", mode),
                                      attrString("keep_aspect_ratio_policy", policy), attrInts("axes", {2, 3})},
                                     19));
        INFO(mode << " " << policy);
        REQUIRE(got.shape() == out);
        CHECK(compareTensors(got, want, 1e-5, 1e-6) == "");
      }
  }
  SECTION("float64 and float16 inputs") {
    const Tensor x = randomFloat({1, 1, 3, 4}, 3);
    const Tensor sc = F({4}, {1, 1, 1.5f, 0.75f});
    const Tensor y = run1(node("Resize", {x, none, sc}, {cubic}, 13));
    const Tensor y64 = run1(node("Resize", {x.cast(DType::Float64), none, sc}, {cubic}, 13));
    REQUIRE(y64.dtype() == DType::Float64);
    CHECK(compareTensors(y64.cast(DType::Float32), y, 1e-6, 1e-7) == "");
    const Tensor y16 = run1(node("Resize", {x.cast(DType::Float16), none, sc}, {cubic}, 13));
    REQUIRE(y16.dtype() == DType::Float16);
    CHECK(compareTensors(y16.cast(DType::Float32), y, 1e-2, 1e-2) == "");
  }
  SECTION("declined where ONNX does not define it or the engine does not implement it") {
    const Tensor x = F({1, 1, 2, 2}, {1, 2, 3, 4});
    // Resize-10 has no cubic mode; antialias (opset 18+) is not implemented.
    CHECK_THROWS_AS(run1(node("Resize", {x, F({4}, {1, 1, 2, 2})}, {cubic}, 10)), lwc::Error);
    CHECK_THROWS_AS(run1(node("Resize", {x, none, F({4}, {1, 1, 0.5f, 0.5f})}, {cubic, attrInt("antialias", 1)}, 18)),
                    lwc::Error);
  }
}

TEST_CASE("Split of a large tensor along its last axis over the threads gives each output its slices", "[shape]") {
  // The q, k, v split of a transformer's projection: [N, 197, 576] -> three [N, 197, 192] (and an
  // uneven split with an empty part); rows go to the threads, every byte copied once. Against the
  // elements picked by index, on 1, 2 and 3 threads.
  const Tensor x = randomFloat({4, 197, 576}, 17);
  for (const std::vector<int64_t>& sizes : {std::vector<int64_t>{192, 192, 192}, std::vector<int64_t>{100, 0, 476}}) {
    INFO(sizes[0] << ", " << sizes[1] << ", " << sizes[2]);
    NodeSpec s = makeSpec("Split", {x, Tensor::fromVector<int64_t>({3}, sizes)}, {attrInt("axis", -1)}, 13);
    s.constant_inputs = {1};
    s.num_outputs = 3;
    for (int threads : {1, 2, 3}) {
      INFO("threads " << threads);
      engine::configureThreads(threads);
      const auto ys = runNode(s);
      REQUIRE(ys.size() == 3);
      int64_t off = 0, bad = 0;
      for (size_t k = 0; k < 3; ++k) {
        REQUIRE(ys[k].shape() == Shape{4, 197, sizes[k]});
        for (int64_t r = 0; r < 4 * 197; ++r)
          for (int64_t c = 0; c < sizes[k]; ++c)
            bad += ys[k].data<float>()[r * sizes[k] + c] != x.data<float>()[r * 576 + off + c];
        off += sizes[k];
      }
      CHECK(bad == 0);
    }
    engine::configureThreads(0);
  }
}

TEST_CASE("Unique: NaNs sort last and equal each other, first-occurrence order, float16 kept", "[shape][unique]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor x = Tensor::fromVector<float>({7}, {2, nan, -1, 2, nan, 0, -1});
  NodeSpec all = makeSpec("Unique", {x}, {}, 11);
  all.num_outputs = 4;
  auto out = runNode(all, true);
  REQUIRE(out.at(0).shape() == Shape{4});
  CHECK(out[0].data<float>()[0] == -1.0f);
  CHECK(out[0].data<float>()[2] == 2.0f);
  CHECK(std::isnan(out[0].data<float>()[3]));
  CHECK(std::vector<int64_t>(out[1].data<int64_t>(), out[1].data<int64_t>() + 4) == std::vector<int64_t>{2, 5, 0, 1});
  CHECK(std::vector<int64_t>(out[2].data<int64_t>(), out[2].data<int64_t>() + 7) == std::vector<int64_t>{2, 3, 0, 2, 3, 1, 0});
  CHECK(std::vector<int64_t>(out[3].data<int64_t>(), out[3].data<int64_t>() + 4) == std::vector<int64_t>{2, 1, 2, 2});
  all.attrs = {attrInt("sorted", 0)};
  out = runNode(all, true);
  CHECK(out[0].data<float>()[0] == 2.0f);  // first seen first: 2, NaN, -1, 0
  CHECK(std::isnan(out[0].data<float>()[1]));
  CHECK(std::vector<int64_t>(out[2].data<int64_t>(), out[2].data<int64_t>() + 7) == std::vector<int64_t>{0, 1, 2, 0, 1, 3, 2});
  const Tensor h = runNode(makeSpec("Unique", {x.cast(DType::Float16)}, {}, 11), true).at(0);
  CHECK(h.dtype() == DType::Float16);
  CHECK(h.shape() == Shape{4});
  CHECK_THAT(nodeError(makeSpec("Unique", {Tensor::scalar<float>(1)}, {attrInt("axis", 0)}, 11)),
             Catch::Matchers::Contains("axis is set for a scalar input"));
}
