// Reference kernels of the nn and reduction families: hand-computed cases, and naive loops written
// independently of the kernels where hand values are impractical.
#include <algorithm>
#include <catch2/catch.hpp>
#include <omp.h>
#include <cmath>
#include <cstring>
#include <functional>

#include "engine/kernels/common.h"
#include "engine/kernels/nn_ref.h"
#include "lwc/model_io.h"
#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {

NodeSpec spec(const std::string& op, std::vector<Tensor> inputs, std::vector<onnx::AttributeProto> attrs = {},
              int64_t opset = 17) {
  return makeSpec(op, std::move(inputs), std::move(attrs), opset);
}

Tensor run1(const NodeSpec& s) { return runNode(s, /*reference_only=*/true).at(0); }

Tensor f32(Shape shape, std::vector<float> v) { return Tensor::fromVector<float>(std::move(shape), v); }

std::vector<float> values(const Tensor& t) {
  std::vector<float> v;
  for (int64_t i = 0; i < t.numel(); ++i) v.push_back(static_cast<float>(t.at(i)));
  return v;
}

void checkClose(const Tensor& got, const Tensor& want, double rtol = 1e-5, double atol = 1e-5) {
  const std::string d = compareTensors(got, want, rtol, atol);
  INFO(d);
  CHECK(d.empty());
}

// Iterates a multi-index over `shape` (row-major), calling f(index).
void forEachIndex(const Shape& shape, const std::function<void(const std::vector<int64_t>&)>& f) {
  std::vector<int64_t> idx(shape.size(), 0);
  if (numelOf(shape) == 0) return;
  while (true) {
    f(idx);
    size_t d = shape.size();
    while (d > 0) {
      if (++idx[d - 1] < shape[d - 1]) break;
      idx[--d] = 0;
    }
    if (d == 0) return;
  }
}

int64_t flat(const Shape& shape, const std::vector<int64_t>& idx) {
  int64_t o = 0;
  for (size_t i = 0; i < shape.size(); ++i) o = o * shape[i] + idx[i];
  return o;
}

struct Geo {
  std::vector<int64_t> strides, pads, dilations;  // pads: begins then ends
};

// Direct-definition convolution for any spatial rank.
Tensor naiveConv(const Tensor& x, const Tensor& w, const Tensor* b, int64_t group, const Geo& g) {
  const size_t r = x.rank() - 2;
  const int64_t n = x.dim(0), c = x.dim(1), m = w.dim(0), icg = c / group, ocg = m / group;
  Shape out{n, m};
  for (size_t i = 0; i < r; ++i) {
    const int64_t ek = (w.dim(2 + i) - 1) * g.dilations[i] + 1;
    out.push_back((x.dim(2 + i) + g.pads[i] + g.pads[r + i] - ek) / g.strides[i] + 1);
  }
  Tensor y(DType::Float32, out);
  const Shape ks(w.shape().begin() + 2, w.shape().end());
  forEachIndex(out, [&](const std::vector<int64_t>& o) {
    const int64_t gi = o[1] / ocg;
    double acc = b ? b->at(o[1]) : 0.0;
    for (int64_t ci = 0; ci < icg; ++ci)
      forEachIndex(ks, [&](const std::vector<int64_t>& k) {
        std::vector<int64_t> xi{o[0], gi * icg + ci};
        for (size_t i = 0; i < r; ++i) {
          const int64_t p = o[2 + i] * g.strides[i] - g.pads[i] + k[i] * g.dilations[i];
          if (p < 0 || p >= x.dim(2 + i)) return;
          xi.push_back(p);
        }
        std::vector<int64_t> wi{o[1], ci};
        wi.insert(wi.end(), k.begin(), k.end());
        acc += x.at(flat(x.shape(), xi)) * w.at(flat(w.shape(), wi));
      });
    y.data<float>()[flat(out, o)] = static_cast<float>(acc);
  });
  return y;
}

// Scatter definition of the transposed convolution (pads crop the full output).
Tensor naiveConvTranspose(const Tensor& x, const Tensor& w, const Tensor* b, int64_t group, const Geo& g,
                          const std::vector<int64_t>& out_pad) {
  const size_t r = x.rank() - 2;
  const int64_t c = x.dim(1), icg = c / group, ocg = w.dim(1), m = ocg * group;
  Shape out{x.dim(0), m};
  for (size_t i = 0; i < r; ++i)
    out.push_back(g.strides[i] * (x.dim(2 + i) - 1) + out_pad[i] + (w.dim(2 + i) - 1) * g.dilations[i] + 1 - g.pads[i] -
                  g.pads[r + i]);
  Tensor y(DType::Float32, out);
  float* yd = y.data<float>();
  const Shape ks(w.shape().begin() + 2, w.shape().end());
  forEachIndex(x.shape(), [&](const std::vector<int64_t>& xi) {
    const int64_t gi = xi[1] / icg;
    for (int64_t oc = 0; oc < ocg; ++oc)
      forEachIndex(ks, [&](const std::vector<int64_t>& k) {
        std::vector<int64_t> yi{xi[0], gi * ocg + oc};
        for (size_t i = 0; i < r; ++i) {
          const int64_t p = xi[2 + i] * g.strides[i] - g.pads[i] + k[i] * g.dilations[i];
          if (p < 0 || p >= out[2 + i]) return;
          yi.push_back(p);
        }
        std::vector<int64_t> wi{xi[1], oc};
        wi.insert(wi.end(), k.begin(), k.end());
        yd[flat(out, yi)] += static_cast<float>(x.at(flat(x.shape(), xi)) * w.at(flat(w.shape(), wi)));
      });
  });
  if (b)
    forEachIndex(out, [&](const std::vector<int64_t>& o) { yd[flat(out, o)] += static_cast<float>(b->at(o[1])); });
  return y;
}

std::vector<onnx::AttributeProto> geoAttrs(const Geo& g, int64_t group) {
  return {attrInts("strides", g.strides), attrInts("pads", g.pads), attrInts("dilations", g.dilations),
          attrInt("group", group)};
}

}  // namespace

// ---------------------------------------------------------------- Conv

TEST_CASE("Conv: hand-computed 3x3 input, 2x2 kernel", "[nn]") {
  const Tensor x = f32({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  const Tensor w = f32({1, 1, 2, 2}, {1, 0, 0, -1});  // x[i][j] - x[i+1][j+1]
  SECTION("no bias") { CHECK(values(run1(spec("Conv", {x, w})) ) == std::vector<float>{-4, -4, -4, -4}); }
  SECTION("with bias") {
    CHECK(values(run1(spec("Conv", {x, w, f32({1}, {10})}))) == std::vector<float>{6, 6, 6, 6});
  }
  SECTION("pads 1 and stride 2") {
    // Padded 5x5, windows at rows/cols -1 and 1: x[i][j] - x[i+1][j+1] with zeros outside.
    const Tensor y = run1(spec("Conv", {x, w}, {attrInts("pads", {1, 1, 1, 1}), attrInts("strides", {2, 2})}));
    CHECK(y.shape() == Shape{1, 1, 2, 2});
    CHECK(values(y) == std::vector<float>{-1, -3, -7, -4});
  }
  SECTION("kernel_shape attribute matching W is accepted") {
    CHECK(values(run1(spec("Conv", {x, w}, {attrInts("kernel_shape", {2, 2})}))) == std::vector<float>{-4, -4, -4, -4});
  }
}

TEST_CASE("Conv matches a naive convolution", "[nn]") {
  struct Case {
    const char* name;
    Shape x, w;
    int64_t group;
    Geo g;
    bool bias;
  };
  const std::vector<Case> cases = {
      {"2-D strides pads dilations", {2, 3, 9, 8}, {4, 3, 3, 2}, 1, {{2, 1}, {1, 0, 2, 1}, {2, 3}}, true},
      {"2-D groups", {1, 6, 7, 7}, {9, 2, 3, 3}, 3, {{1, 1}, {1, 1, 1, 1}, {1, 1}}, true},
      {"2-D depthwise", {2, 5, 8, 6}, {5, 1, 3, 3}, 5, {{2, 2}, {1, 1, 1, 1}, {1, 1}}, false},
      {"2-D depthwise with multiplier", {1, 4, 6, 6}, {8, 1, 3, 3}, 4, {{1, 1}, {0, 0, 0, 0}, {1, 1}}, true},
      {"2-D 1x1 pointwise", {3, 8, 5, 5}, {6, 8, 1, 1}, 1, {{1, 1}, {0, 0, 0, 0}, {1, 1}}, true},
      {"2-D 1x1 strided", {1, 4, 6, 6}, {3, 4, 1, 1}, 1, {{2, 2}, {0, 0, 0, 0}, {1, 1}}, true},
      {"1-D", {2, 3, 17}, {5, 3, 4}, 1, {{3}, {2, 1}, {2}}, true},
      {"1-D groups", {1, 4, 10}, {6, 2, 3}, 2, {{1}, {1, 1}, {1}}, false},
      {"3-D", {1, 2, 5, 6, 4}, {3, 2, 2, 3, 2}, 1, {{1, 2, 1}, {1, 0, 1, 0, 1, 1}, {2, 1, 1}}, true},
      {"batch larger than threads", {40, 2, 5, 5}, {3, 2, 3, 3}, 1, {{1, 1}, {1, 1, 1, 1}, {1, 1}}, true},
  };
  uint32_t seed = 100;
  for (const auto& c : cases) {
    INFO(c.name);
    const Tensor x = randomFloat(c.x, ++seed), w = randomFloat(c.w, ++seed), b = randomFloat({c.w[0]}, ++seed);
    NodeSpec s = spec("Conv", {x, w}, geoAttrs(c.g, c.group));
    if (c.bias) s.inputs.push_back(b);
    checkClose(run1(s), naiveConv(x, w, c.bias ? &b : nullptr, c.group, c.g));
    s.constant_inputs = {1, 2};  // constant weights: whichever kernel takes the node must agree
    checkClose(runNode(s).at(0), naiveConv(x, w, c.bias ? &b : nullptr, c.group, c.g), 1e-4, 1e-5);
  }
}

TEST_CASE("Conv auto_pad SAME_UPPER vs SAME_LOWER vs VALID", "[nn]") {
  const Tensor x = f32({1, 1, 4}, {1, 2, 3, 4});
  const Tensor w = f32({1, 1, 2}, {1, 1});
  // One pad in total: SAME_UPPER puts it at the end, SAME_LOWER at the beginning.
  CHECK(values(run1(spec("Conv", {x, w}, {attrString("auto_pad", "SAME_UPPER")}))) == std::vector<float>{3, 5, 7, 4});
  CHECK(values(run1(spec("Conv", {x, w}, {attrString("auto_pad", "SAME_LOWER")}))) == std::vector<float>{1, 3, 5, 7});
  CHECK(values(run1(spec("Conv", {x, w}, {attrString("auto_pad", "VALID"), attrInts("pads", {5, 5})}))) ==
        std::vector<float>{3, 5, 7});
  SECTION("SAME with stride 2 keeps ceil(in / stride) outputs") {
    const Tensor y = run1(spec("Conv", {randomFloat({1, 2, 7, 6}, 1), randomFloat({3, 2, 3, 3}, 2)},
                               {attrString("auto_pad", "SAME_UPPER"), attrInts("strides", {2, 2})}));
    CHECK(y.shape() == Shape{1, 3, 4, 3});
  }
}

TEST_CASE("Conv errors name the node and the problem", "[nn]") {
  const Tensor x = randomFloat({1, 4, 5, 5}, 1);
  CHECK_THROWS_WITH(run1(spec("Conv", {x, randomFloat({2, 3, 3, 3}, 2)})),
                    Catch::Contains("Conv") && Catch::Contains("4 channels") && Catch::Contains("expects 3"));
  CHECK_THROWS_WITH(run1(spec("Conv", {x, randomFloat({2, 2, 3, 3}, 2)}, {attrInt("group", 3)})),
                    Catch::Contains("group 3"));
  CHECK_THROWS_WITH(run1(spec("Conv", {x, randomFloat({2, 4, 3}, 2)})), Catch::Contains("same rank"));
  CHECK_THROWS_WITH(run1(spec("Conv", {randomFloat({4, 5}, 1), randomFloat({2, 4}, 2)})),
                    Catch::Contains("spatial dims"));
  CHECK_THROWS_WITH(run1(spec("Conv", {x, randomFloat({2, 4, 7, 7}, 2)})),
                    Catch::Contains("larger than the padded input"));
  CHECK_THROWS_WITH(run1(spec("Conv", {x, randomFloat({2, 4, 3, 3}, 2)}, {attrString("auto_pad", "SAME")})),
                    Catch::Contains("auto_pad 'SAME'"));
  CHECK_THROWS_WITH(run1(spec("Conv", {x, randomFloat({2, 4, 3, 3}, 2)}, {attrInts("kernel_shape", {2, 2})})),
                    Catch::Contains("kernel_shape"));
  CHECK_THROWS_WITH(run1(spec("Conv", {x, randomFloat({2, 4, 3, 3}, 2), randomFloat({3}, 3)})),
                    Catch::Contains("bias"));
}

TEST_CASE("Conv on float16 and float64", "[nn]") {
  const Tensor x = randomFloat({1, 2, 5, 5}, 3), w = randomFloat({3, 2, 3, 3}, 4);
  const Tensor want = naiveConv(x, w, nullptr, 1, {{1, 1}, {1, 1, 1, 1}, {1, 1}});
  const NodeSpec s = spec("Conv", {x.cast(DType::Float16), w.cast(DType::Float16)}, {attrInts("pads", {1, 1, 1, 1})});
  const Tensor y16 = run1(s);
  CHECK(y16.dtype() == DType::Float16);
  checkClose(y16.cast(DType::Float32), want, 1e-2, 1e-2);
  const Tensor y64 =
      run1(spec("Conv", {x.cast(DType::Float64), w.cast(DType::Float64)}, {attrInts("pads", {1, 1, 1, 1})}));
  checkClose(y64.cast(DType::Float32), want);
}

TEST_CASE("nn_ref: parseConvParams resolves geometry for fast paths", "[nn]") {
  Node n{.name = "c1", .op_type = "Conv"};
  n.setAttr("auto_pad", std::string("SAME_LOWER"));
  n.setAttr("strides", std::vector<int64_t>{2, 1});
  n.setAttr("group", int64_t{2});
  const engine::ConvParams q = engine::parseConvParams(n, {2, 4, 7, 6}, {8, 2, 4, 3});
  CHECK(q.group == 2);
  CHECK(q.outShape() == Shape{2, 8, 4, 6});
  // SAME_LOWER: the odd pad goes first. dim 0: total (4-1)*2+4-7 = 3 -> 2 before, 1 after.
  CHECK(q.geo.pads_begin == std::vector<int64_t>{2, 1});
  CHECK(q.geo.pads_end == std::vector<int64_t>{1, 1});
  CHECK_THROWS_WITH(engine::parseConvParams(n, {2, 4, 7, 6}, {8, 3, 4, 3}), Catch::Contains("Conv 'c1'"));
}

// ---------------------------------------------------------------- ConvTranspose

TEST_CASE("ConvTranspose: hand-computed stride 2 with output_padding", "[nn]") {
  const Tensor x = f32({1, 1, 2}, {1, 2});
  const Tensor w = f32({1, 1, 3}, {1, 1, 1});
  // x[0] covers outputs 0..2, x[1] covers 2..4.
  CHECK(values(run1(spec("ConvTranspose", {x, w}, {attrInts("strides", {2})}))) == std::vector<float>{1, 1, 3, 2, 2});
  const Tensor y = run1(spec("ConvTranspose", {x, w, f32({1}, {10})},
                             {attrInts("strides", {2}), attrInts("output_padding", {1})}));
  CHECK(values(y) == std::vector<float>{11, 11, 13, 12, 12, 10});
  SECTION("pads crop the full output") {
    CHECK(values(run1(spec("ConvTranspose", {x, w}, {attrInts("strides", {2}), attrInts("pads", {1, 2})}))) ==
          std::vector<float>{1, 3});
  }
  SECTION("output_shape decides the pads") {
    const Tensor z = run1(spec("ConvTranspose", {x, w}, {attrInts("strides", {2}), attrInts("output_shape", {4})}));
    CHECK(values(z) == std::vector<float>{1, 3, 2, 2});  // total pad 1, at the beginning (not SAME_UPPER)
    const Tensor u = run1(spec("ConvTranspose", {x, w},
                               {attrInts("strides", {2}), attrString("auto_pad", "SAME_UPPER")}));
    CHECK(values(u) == std::vector<float>{1, 1, 3, 2});  // out = in * stride, the pad at the end
  }
}

TEST_CASE("ConvTranspose matches a naive scatter", "[nn]") {
  struct Case {
    const char* name;
    Shape x, w;
    int64_t group;
    Geo g;
    std::vector<int64_t> out_pad;
  };
  const std::vector<Case> cases = {
      {"2-D stride 2 pads", {2, 3, 4, 5}, {3, 2, 3, 3}, 1, {{2, 2}, {1, 0, 1, 1}, {1, 1}}, {1, 0}},
      {"2-D groups dilations", {1, 4, 3, 3}, {4, 3, 2, 3}, 2, {{1, 2}, {0, 0, 0, 0}, {2, 1}}, {0, 1}},
      {"1-D", {1, 2, 6}, {2, 3, 4}, 1, {{3}, {1, 2}, {1}}, {2}},
      {"3-D", {1, 2, 2, 3, 2}, {2, 2, 2, 2, 2}, 1, {{2, 1, 2}, {0, 0, 1, 0, 0, 0}, {1, 1, 1}}, {0, 0, 1}},
  };
  uint32_t seed = 300;
  for (const auto& c : cases) {
    INFO(c.name);
    const Tensor x = randomFloat(c.x, ++seed), w = randomFloat(c.w, ++seed),
                 b = randomFloat({c.w[1] * c.group}, ++seed);
    auto attrs = geoAttrs(c.g, c.group);
    attrs.push_back(attrInts("output_padding", c.out_pad));
    checkClose(run1(spec("ConvTranspose", {x, w, b}, attrs)), naiveConvTranspose(x, w, &b, c.group, c.g, c.out_pad));
  }
}

TEST_CASE("ConvTranspose: output_shape beyond the input's reach is padded with the bias", "[nn]") {
  const Tensor y = run1(spec("ConvTranspose", {f32({1, 1, 2}, {1, 2}), f32({1, 1, 3}, {1, 1, 1}), f32({1}, {10})},
                             {attrInts("strides", {2}), attrInts("output_shape", {1, 1, 7})}));
  CHECK(values(y) == std::vector<float>{11, 11, 13, 12, 12, 10, 10});
}

TEST_CASE("ConvTranspose errors", "[nn]") {
  CHECK_THROWS_WITH(run1(spec("ConvTranspose", {randomFloat({1, 3, 4, 4}, 1), randomFloat({2, 2, 3, 3}, 2)})),
                    Catch::Contains("3 channels") && Catch::Contains("[C, M/group"));
  CHECK_THROWS_WITH(run1(spec("ConvTranspose", {randomFloat({1, 2, 4}, 1), randomFloat({2, 2, 3}, 2)},
                              {attrInts("pads", {3, 3})})),
                    Catch::Contains("leave no output"));
}

// ---------------------------------------------------------------- Gemm, MatMul

TEST_CASE("Gemm: alpha, beta, transposes, broadcast C", "[nn]") {
  const Tensor a = f32({2, 3}, {1, 2, 3, 4, 5, 6});
  const Tensor b = f32({3, 2}, {1, 0, 0, 1, 1, 1});  // A*B = [[4, 5], [10, 11]]
  SECTION("plain") { CHECK(values(run1(spec("Gemm", {a, b}))) == std::vector<float>{4, 5, 10, 11}); }
  SECTION("alpha, beta and a row vector C") {
    const Tensor y = run1(spec("Gemm", {a, b, f32({2}, {1, 2})}, {attrFloat("alpha", 2), attrFloat("beta", 10)}));
    CHECK(values(y) == std::vector<float>{18, 30, 30, 42});
  }
  SECTION("column C and scalar C") {
    CHECK(values(run1(spec("Gemm", {a, b, f32({2, 1}, {1, 2})}))) == std::vector<float>{5, 6, 12, 13});
    CHECK(values(run1(spec("Gemm", {a, b, f32({}, {1})}))) == std::vector<float>{5, 6, 11, 12});
  }
  SECTION("transA and transB") {
    const Tensor at = f32({3, 2}, {1, 4, 2, 5, 3, 6});
    const Tensor bt = f32({2, 3}, {1, 0, 1, 0, 1, 1});
    CHECK(values(run1(spec("Gemm", {at, bt}, {attrInt("transA", 1), attrInt("transB", 1)}))) ==
          std::vector<float>{4, 5, 10, 11});
  }
  SECTION("errors") {
    CHECK_THROWS_WITH(run1(spec("Gemm", {a, a})), Catch::Contains("inner dimension"));
    CHECK_THROWS_WITH(run1(spec("Gemm", {a, b, f32({3}, {1, 2, 3})})), Catch::Contains("cannot be broadcast"));
  }
}

TEST_CASE("lwc.internal.MatMul adds its bias per output column and refuses any other bias by name", "[nn]") {
  // The engine's fusion of MatMul + Add(bias) (optimize.cpp); its reference kernel.
  NodeSpec s;
  s.op_type = "MatMul";
  s.domain = "lwc.internal";
  s.opset = 1;
  const Tensor x = f32({2, 3}, {1, 2, 3, 4, 5, 6}), w = f32({3, 2}, {1, 0, 0, 1, 1, 1});
  s.inputs = {x, w, f32({2}, {10, -10})};
  CHECK(values(run1(s)) == std::vector<float>{14, -5, 20, 1});
  s.inputs[2] = f32({2, 1}, {10, -10});
  CHECK_THROWS_WITH(run1(s), Catch::Contains("bias must be float32 with one value per output column (2)"));
}

TEST_CASE("lwc.internal.MatMulTransB multiplies by its second input's last two axes swapped", "[nn]") {
  // The engine's rewrite of Transpose -> MatMul input B (optimize.cpp); its kernel on bad input too.
  NodeSpec s;
  s.op_type = "MatMulTransB";
  s.domain = "lwc.internal";
  s.opset = 1;
  const Tensor x = f32({2, 3}, {1, 2, 3, 4, 5, 6}), bt = f32({2, 3}, {1, 0, 1, 0, 1, 1});  // B = btᵀ [3, 2]
  s.inputs = {x, bt};
  CHECK(values(run1(s)) == std::vector<float>{4, 5, 10, 11});
  s.inputs[1] = f32({3}, {1, 0, 1});
  CHECK_THROWS_WITH(run1(s), Catch::Contains("B must have rank 2 or more, got [3]"));
  s.inputs[1] = f32({3, 2}, {1, 0, 1, 0, 1, 1});  // B would be [2, 3]: 3 vs 2 inner
  CHECK_THROWS_AS(run1(s), lwc::Error);
}

TEST_CASE("MatMul: numpy broadcasting and 1-D promotion", "[nn]") {
  auto naive = [](const Tensor& a, const Tensor& b, const Shape& out) {
    // a [2,1,3,4] x b [5,4,2] -> [2,5,3,2]
    Tensor y(DType::Float32, out);
    forEachIndex(out, [&](const std::vector<int64_t>& o) {
      double s = 0;
      for (int64_t k = 0; k < 4; ++k)
        s += a.at(flat(a.shape(), {o[0], 0, o[2], k})) * b.at(flat(b.shape(), {o[1], k, o[3]}));
      y.data<float>()[flat(out, o)] = static_cast<float>(s);
    });
    return y;
  };
  const Tensor a = randomFloat({2, 1, 3, 4}, 1), b = randomFloat({5, 4, 2}, 2);
  checkClose(run1(spec("MatMul", {a, b})), naive(a, b, {2, 5, 3, 2}));

  SECTION("1-D operands") {
    const Tensor m = f32({2, 3}, {1, 2, 3, 4, 5, 6});
    const Tensor v = f32({3}, {1, 1, 2});
    const Tensor mv = run1(spec("MatMul", {m, v}));
    CHECK(mv.shape() == Shape{2});
    CHECK(values(mv) == std::vector<float>{9, 21});
    const Tensor vm = run1(spec("MatMul", {f32({2}, {1, -1}), m}));
    CHECK(vm.shape() == Shape{3});
    CHECK(values(vm) == std::vector<float>{-3, -3, -3});
    const Tensor dot = run1(spec("MatMul", {v, v}));
    CHECK(dot.shape() == Shape{});
    CHECK(values(dot) == std::vector<float>{6});
  }
  SECTION("batched activations x 2-D weights folds into one GEMM") {
    const Tensor x = randomFloat({3, 7, 5}, 3), w = randomFloat({5, 6}, 4);
    const Tensor y = run1(spec("MatMul", {x, w}));
    CHECK(y.shape() == Shape{3, 7, 6});
    double s = 0;
    for (int64_t k = 0; k < 5; ++k) s += x.at(flat({3, 7, 5}, {2, 4, k})) * w.at(flat({5, 6}, {k, 3}));
    CHECK(y.at(flat({3, 7, 6}, {2, 4, 3})) == Approx(s).epsilon(1e-5));
  }
  SECTION("batched products (attention heads) give the same bits on 1, 2 and 3 threads, small and large") {
    // Small batches run on the calling thread, large ones over the team (matMulRef).
    for (const Shape& shape : {Shape{1, 4, 16, 16}, Shape{8, 4, 32, 32}}) {
      INFO(shapeStr(shape));
      const Tensor qa = randomFloat(shape, 5), qb = randomFloat(shape, 6);
      std::vector<Tensor> ys;
      for (int threads : {1, 2, 3}) {
        engine::configureThreads(threads);
        ys.push_back(run1(spec("MatMul", {qa, qb})));
      }
      engine::configureThreads(0);
      CHECK(ys[0].bitEqual(ys[1]));
      CHECK(ys[0].bitEqual(ys[2]));
      const int64_t m = shape[2];
      double s = 0;
      for (int64_t k = 0; k < m; ++k) s += qa.at(flat(shape, {0, 3, 5, k})) * qb.at(flat(shape, {0, 3, k, 7}));
      CHECK(ys[0].at(flat(ys[0].shape(), {0, 3, 5, 7})) == Approx(s).epsilon(1e-5).margin(1e-6));
    }
  }
  SECTION("int32 and int64") {
    const Tensor ai = Tensor::fromVector<int32_t>({2, 2}, {1, 2, 3, 4});
    CHECK(values(run1(spec("MatMul", {ai, ai}))) == std::vector<float>{7, 10, 15, 22});
    const Tensor al = ai.cast(DType::Int64);
    CHECK(run1(spec("MatMul", {al, al})).dtype() == DType::Int64);
  }
  SECTION("errors") {
    CHECK_THROWS_WITH(run1(spec("MatMul", {randomFloat({2, 3}, 1), randomFloat({2, 3}, 2)})),
                      Catch::Contains("inner dimension"));
    CHECK_THROWS_WITH(run1(spec("MatMul", {randomFloat({2, 2, 3}, 1), randomFloat({3, 3, 1}, 2)})),
                      Catch::Contains("cannot be broadcast"));
  }
}

TEST_CASE("nn_ref: gemmBlocked handles transposes, leading dims and beta", "[nn]") {
  const int64_t m = 37, n = 300, k = 270;  // crosses the 256 blocking in n and k, odd rows
  const Tensor a = randomFloat({k, m}, 1), b = randomFloat({n, k + 3}, 2), c0 = randomFloat({m, n}, 3);
  Tensor c = c0.clone();
  engine::gemmBlocked<float>(true, true, m, n, k, 0.5f, a.data<float>(), m, b.data<float>(), k + 3, 2.0f,
                             c.data<float>(), n);
  for (int64_t i : {0L, 17L, 36L})
    for (int64_t j : {0L, 255L, 256L, 299L}) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += a.at(p * m + i) * b.at(j * (k + 3) + p);
      CHECK(c.at(i * n + j) == Approx(0.5 * s + 2.0 * c0.at(i * n + j)).epsilon(1e-4));
    }
}

// gemmBlocked's float tiles keep 4 x 16 blocks of C in registers; every element must still be the
// textbook sum: C scaled by beta (or zeroed), then (alpha * a) * b added in ascending p, one multiply
// and one add at a time, in float. Sizes cover whole tiles, edges in both directions and the 256
// blocking of k.
TEST_CASE("nn_ref: gemmBlocked in float gives the bits of the textbook loop", "[nn]") {
  uint32_t seed = 40;
  for (int64_t m : {1L, 4L, 7L, 16L, 37L})
    for (int64_t n : {3L, 16L, 33L, 300L})
      for (int64_t k : {1L, 16L, 270L})
        for (float beta : {0.0f, 1.0f, 0.75f}) {
          INFO(m << " x " << n << " x " << k << ", beta " << beta);
          const Tensor a = randomFloat({m, k}, ++seed), b = randomFloat({k, n}, ++seed), c0 = randomFloat({m, n}, ++seed);
          const float alpha = 1.25f;
          Tensor c = c0.clone();
          engine::gemmBlocked<float>(false, false, m, n, k, alpha, a.data<float>(), k, b.data<float>(), n, beta,
                                     c.data<float>(), n);
          int64_t differ = 0;
          for (int64_t i = 0; i < m; ++i)
            for (int64_t j = 0; j < n; ++j) {
              float want = beta == 0.0f ? 0.0f : beta == 1.0f ? c0.at(i * n + j) : c0.data<float>()[i * n + j] * beta;
              for (int64_t p = 0; p < k; ++p) {
                const float prod = (alpha * a.data<float>()[i * k + p]) * b.data<float>()[p * n + j];
                want = want + prod;
              }
              const float got = c.data<float>()[i * n + j];
              differ += std::memcmp(&got, &want, sizeof got) != 0;
            }
          CHECK(differ == 0);
        }
}

// ---------------------------------------------------------------- pooling

TEST_CASE("MaxPool: ceil_mode, Indices and storage_order", "[nn]") {
  Tensor x(DType::Float32, {1, 2, 3, 3});
  for (int i = 0; i < 18; ++i) x.data<float>()[i] = static_cast<float>(i < 9 ? i + 1 : 18 - i);  // ch1 descending
  const auto k2s2 = std::vector<onnx::AttributeProto>{attrInts("kernel_shape", {2, 2}), attrInts("strides", {2, 2})};
  SECTION("floor mode drops the partial window") {
    const Tensor y = run1(spec("MaxPool", {x}, k2s2));
    CHECK(y.shape() == Shape{1, 2, 1, 1});
    CHECK(values(y) == std::vector<float>{5, 9});
  }
  SECTION("ceil mode keeps it, Indices are flat positions in X") {
    auto attrs = k2s2;
    attrs.push_back(attrInt("ceil_mode", 1));
    NodeSpec s = spec("MaxPool", {x}, attrs, 12);
    s.num_outputs = 2;
    const auto out = runNode(s, true);
    CHECK(out[0].shape() == Shape{1, 2, 2, 2});
    CHECK(values(out[0]) == std::vector<float>{5, 6, 8, 9, 9, 7, 3, 1});
    CHECK(out[1].dtype() == DType::Int64);
    CHECK(values(out[1]) == std::vector<float>{4, 5, 7, 8, 9, 11, 15, 17});
    SECTION("column-major indices") {
      s.attrs.push_back(attrInt("storage_order", 1));
      const auto cm = runNode(s, true);
      // (h, w) -> h + w * 3, plus 9 per channel.
      CHECK(values(cm[1]) == std::vector<float>{4, 7, 5, 8, 9, 15, 11, 17});
    }
  }
  SECTION("padding never wins, even against negative values") {
    const Tensor neg = f32({1, 1, 2, 2}, {-1, -2, -3, -4});
    const Tensor y = run1(spec("MaxPool", {neg}, {attrInts("kernel_shape", {2, 2}), attrInts("pads", {1, 1, 1, 1})}));
    CHECK(values(y) == std::vector<float>{-1, -1, -2, -1, -1, -2, -3, -3, -4});
  }
  SECTION("dilations and uint8") {
    Tensor u(DType::UInt8, {1, 1, 1, 5});
    for (int i = 0; i < 5; ++i) u.data<uint8_t>()[i] = static_cast<uint8_t>(i == 2 ? 200 : i);
    const Tensor y = run1(spec("MaxPool", {u}, {attrInts("kernel_shape", {1, 2}), attrInts("dilations", {1, 3})}));
    CHECK(y.dtype() == DType::UInt8);
    CHECK(values(y) == std::vector<float>{3, 4});
  }
  SECTION("auto_pad SAME_UPPER") {
    const Tensor y = run1(spec("MaxPool", {f32({1, 1, 4}, {1, 5, 2, 3})},
                               {attrInts("kernel_shape", {2}), attrString("auto_pad", "SAME_UPPER")}));
    CHECK(values(y) == std::vector<float>{5, 5, 3, 3});
  }
}

TEST_CASE("AveragePool: count_include_pad 0 and 1", "[nn]") {
  const Tensor x = f32({1, 1, 2, 2}, {1, 2, 3, 4});
  std::vector<onnx::AttributeProto> attrs{attrInts("kernel_shape", {2, 2}), attrInts("pads", {1, 1, 1, 1})};
  const Tensor excl = run1(spec("AveragePool", {x}, attrs));
  CHECK(values(excl) == std::vector<float>{1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4});
  attrs.push_back(attrInt("count_include_pad", 1));
  const Tensor incl = run1(spec("AveragePool", {x}, attrs));
  CHECK(values(incl) == std::vector<float>{0.25, 0.75, 0.5, 1, 2.5, 1.5, 0.75, 1.75, 1});
  SECTION("ceil mode: the overhang past the pads is not counted") {
    const Tensor y = run1(spec("AveragePool", {f32({1, 1, 3}, {1, 2, 3})},
                               {attrInts("kernel_shape", {2}), attrInts("strides", {2}), attrInt("ceil_mode", 1),
                                attrInt("count_include_pad", 1)}));
    CHECK(values(y) == std::vector<float>{1.5, 3});
  }
  SECTION("3-D") {
    const Tensor y =
        run1(spec("AveragePool", {randomFloat({1, 2, 4, 4, 4}, 5)}, {attrInts("kernel_shape", {2, 2, 2})}));
    CHECK(y.shape() == Shape{1, 2, 3, 3, 3});
  }
  SECTION("kernel_shape is required") {
    CHECK_THROWS_WITH(run1(spec("AveragePool", {x})), Catch::Contains("kernel_shape"));
  }
}

TEST_CASE("GlobalAveragePool, GlobalMaxPool, LpPool", "[nn]") {
  const Tensor x = f32({1, 2, 2, 2}, {1, 2, 3, 4, -1, -2, -3, -8});
  const Tensor avg = run1(spec("GlobalAveragePool", {x}));
  CHECK(avg.shape() == Shape{1, 2, 1, 1});
  CHECK(values(avg) == std::vector<float>{2.5, -3.5});
  CHECK(values(run1(spec("GlobalMaxPool", {x}))) == std::vector<float>{4, -1});
  const Tensor lp =
      run1(spec("LpPool", {f32({1, 1, 3}, {3, -4, 0})}, {attrInts("kernel_shape", {2}), attrInt("p", 2)}));
  CHECK(values(lp) == std::vector<float>{5, 4});
}

// ---------------------------------------------------------------- normalisation

TEST_CASE("BatchNormalization (inference)", "[nn]") {
  const Tensor x = f32({1, 2, 1, 2}, {1, 2, 3, 4});
  const Tensor scale = f32({2}, {1, 2}), bias = f32({2}, {0, 1}), mean = f32({2}, {1, 3}), var = f32({2}, {4, 1});
  const Tensor y = run1(spec("BatchNormalization", {x, scale, bias, mean, var}, {attrFloat("epsilon", 0)}, 15));
  CHECK(values(y) == std::vector<float>{0, 0.5, 1, 3});
  SECTION("training mode is refused with an explanation") {
    CHECK_THROWS_WITH(
        run1(spec("BatchNormalization", {x, scale, bias, mean, var}, {attrInt("training_mode", 1)}, 15)),
        Catch::Contains("BatchNormalization") && Catch::Contains("inference"));
    NodeSpec s = spec("BatchNormalization", {x, scale, bias, mean, var}, {}, 9);
    s.num_outputs = 3;
    CHECK_THROWS_WITH(runNode(s, true), Catch::Contains("inference"));
  }
  SECTION("wrong parameter length") {
    CHECK_THROWS_WITH(run1(spec("BatchNormalization", {x, f32({3}, {1, 1, 1}), bias, mean, var})),
                      Catch::Contains("scale"));
  }
}

TEST_CASE("InstanceNormalization", "[nn]") {
  const Tensor x = f32({1, 2, 4}, {1, 2, 3, 4, 0, 0, 2, 2});
  const Tensor y =
      run1(spec("InstanceNormalization", {x, f32({2}, {1, 2}), f32({2}, {0, 1})}, {attrFloat("epsilon", 0)}));
  const float a = 1 / std::sqrt(1.25f);
  checkClose(y, f32({1, 2, 4}, {-1.5f * a, -0.5f * a, 0.5f * a, 1.5f * a, -1, -1, 3, 3}));
}

TEST_CASE("LayerNormalization: axis, epsilon, Mean and InvStdDev", "[nn]") {
  const Tensor x = f32({2, 4}, {1, 2, 3, 4, 0, 0, 2, 2});
  NodeSpec s =
      spec("LayerNormalization", {x, f32({4}, {1, 1, 2, 2}), f32({4}, {0, 0, 0, 1})}, {attrFloat("epsilon", 0)});
  s.num_outputs = 3;
  SECTION("last axis") {
    const auto out = runNode(s, true);
    const float a = 1 / std::sqrt(1.25f);
    checkClose(out[0], f32({2, 4}, {-1.5f * a, -0.5f * a, 1.0f * a, 3.0f * a + 1, -1, -1, 2, 3}));
    CHECK(out[1].shape() == Shape{2, 1});
    CHECK(out[1].dtype() == DType::Float32);
    CHECK(values(out[1]) == std::vector<float>{2.5, 1});
    CHECK(out[2].at(0) == Approx(a));
    CHECK(out[2].at(1) == Approx(1));
  }
  SECTION("axis 1 of a 3-D input normalises over the last two dims") {
    const Tensor x3 = randomFloat({2, 3, 4}, 9), sc = randomFloat({3, 4}, 10);
    NodeSpec s3 = spec("LayerNormalization", {x3, sc}, {attrInt("axis", 1)});
    const Tensor y = run1(s3);
    for (int64_t b = 0; b < 2; ++b) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < 12; ++i) mean += x3.at(b * 12 + i) / 12;
      for (int64_t i = 0; i < 12; ++i) var += std::pow(x3.at(b * 12 + i) - mean, 2) / 12;
      for (int64_t i = 0; i < 12; ++i)
        CHECK(y.at(b * 12 + i) == Approx((x3.at(b * 12 + i) - mean) / std::sqrt(var + 1e-5) * sc.at(i)).epsilon(1e-4));
    }
  }
}

TEST_CASE("LRN", "[nn]") {
  const Tensor x = f32({1, 3, 1, 1}, {1, 2, 3});
  const Tensor y =
      run1(spec("LRN", {x}, {attrInt("size", 2), attrFloat("alpha", 2), attrFloat("beta", 1), attrFloat("bias", 1)}));
  // size 2: channel c sums squares of c and c + 1.
  checkClose(y, f32({1, 3, 1, 1}, {1.0f / (1 + 5), 2.0f / (1 + 13), 3.0f / (1 + 9)}));
}

// ---------------------------------------------------------------- softmax family

TEST_CASE("Softmax: opset 11 coerces to 2-D, opset 13 works along one axis", "[nn]") {
  const Tensor x = f32({1, 2, 2}, {0, 1, 2, 3});
  const auto axis1 = std::vector<onnx::AttributeProto>{attrInt("axis", 1)};
  const Tensor y11 = run1(spec("Softmax", {x}, axis1, 11));
  const Tensor y13 = run1(spec("Softmax", {x}, axis1, 13));
  double z = 0;
  for (int i = 0; i < 4; ++i) z += std::exp(i);
  checkClose(y11,
             f32({1, 2, 2}, {float(1 / z), float(std::exp(1) / z), float(std::exp(2) / z), float(std::exp(3) / z)}));
  const float lo = float(1 / (1 + std::exp(2))), hi = float(std::exp(2) / (1 + std::exp(2)));
  checkClose(y13, f32({1, 2, 2}, {lo, lo, hi, hi}));
  SECTION("defaults: axis 1 before 13, -1 from 13") {
    const Tensor x3 = f32({1, 2, 2}, {0, 1, 2, 3});
    checkClose(run1(spec("Softmax", {x3}, {}, 11)), y11);
    const float a = float(1 / (1 + std::exp(1))), b = float(std::exp(1) / (1 + std::exp(1)));
    checkClose(run1(spec("Softmax", {x3}, {}, 13)), f32({1, 2, 2}, {a, b, a, b}));
  }
  SECTION("large values do not overflow") {
    checkClose(run1(spec("Softmax", {f32({2}, {1000, 1000})}, {}, 13)), f32({2}, {0.5, 0.5}));
  }
}

TEST_CASE("LogSoftmax and Hardmax", "[nn]") {
  const Tensor x = f32({2, 3}, {1, 3, 3, 0, -1, -2});
  const double l1 = std::log(std::exp(1) + 2 * std::exp(3)), l2 = std::log(1 + std::exp(-1) + std::exp(-2));
  checkClose(run1(spec("LogSoftmax", {x}, {}, 13)),
             f32({2, 3}, {float(1 - l1), float(3 - l1), float(3 - l1), float(-l2), float(-1 - l2), float(-2 - l2)}));
  // First maximum wins ties.
  CHECK(values(run1(spec("Hardmax", {x}, {}, 13))) == std::vector<float>{0, 1, 0, 1, 0, 0});
  CHECK(values(run1(spec("Hardmax", {x}, {attrInt("axis", 0)}, 13))) == std::vector<float>{1, 1, 1, 0, 0, 0});
  CHECK(values(run1(spec("Hardmax", {x}, {attrInt("axis", 0)}, 11))) == std::vector<float>{0, 1, 0, 0, 0, 0});
}

// ---------------------------------------------------------------- reductions

namespace {
// The ONNX documentation's example: shape [3, 2, 2].
Tensor reduceInput() { return f32({3, 2, 2}, {5, 1, 20, 2, 30, 1, 40, 2, 55, 1, 60, 2}); }

Tensor reduce(const std::string& op, const Tensor& x, std::vector<int64_t> axes, int64_t keepdims, int64_t opset,
              std::vector<onnx::AttributeProto> extra = {}) {
  const bool as_input = opset >= (op == "ReduceSum" ? 13 : 18);
  NodeSpec s = spec(op, {x}, std::move(extra), opset);
  s.attrs.push_back(attrInt("keepdims", keepdims));
  if (as_input) {
    if (!axes.empty()) s.inputs.push_back(Tensor::fromVector<int64_t>({static_cast<int64_t>(axes.size())}, axes));
  } else if (!axes.empty()) {
    s.attrs.push_back(attrInts("axes", axes));
  }
  return run1(s);
}
}  // namespace

TEST_CASE("Reductions: keepdims and axes as attribute (opset 13) or input (opset 18)", "[nn]") {
  const Tensor x = reduceInput();
  for (int64_t opset : {13, 18}) {
    INFO("opset " << opset);
    const Tensor k = reduce("ReduceMean", x, {1}, 1, opset);
    CHECK(k.shape() == Shape{3, 1, 2});
    CHECK(values(k) == std::vector<float>{12.5, 1.5, 35, 1.5, 57.5, 1.5});
    const Tensor d = reduce("ReduceMean", x, {-2}, 0, opset);
    CHECK(d.shape() == Shape{3, 2});
    CHECK(values(d) == std::vector<float>{12.5, 1.5, 35, 1.5, 57.5, 1.5});
    const Tensor all = reduce("ReduceMax", x, {}, 1, opset);
    CHECK(all.shape() == Shape{1, 1, 1});
    CHECK(values(all) == std::vector<float>{60});
    CHECK(values(reduce("ReduceMin", x, {0, 2}, 0, opset)) == std::vector<float>{1, 2});
    CHECK(values(reduce("ReduceProd", x, {2}, 0, opset)) == std::vector<float>{5, 40, 30, 80, 55, 120});
    CHECK(values(reduce("ReduceSumSquare", x, {2}, 0, opset)) == std::vector<float>{26, 404, 901, 1604, 3026, 3604});
    CHECK(values(reduce("ReduceL1", f32({2, 2}, {-3, 4, 1, -1}), {1}, 0, opset)) == std::vector<float>{7, 2});
    CHECK(values(reduce("ReduceL2", f32({2, 2}, {-3, 4, 1, -1}), {1}, 0, opset))[0] == Approx(5));
    CHECK(values(reduce("ReduceLogSum", f32({2}, {1, std::exp(2.0f) - 1}), {}, 0, opset))[0] == Approx(2));
    CHECK(values(reduce("ReduceLogSumExp", f32({2}, {1000, 1000}), {}, 0, opset))[0] == Approx(1000 + std::log(2)));
  }
  SECTION("ReduceSum moved axes to an input at opset 13") {
    CHECK(values(reduce("ReduceSum", x, {2}, 0, 11)) == std::vector<float>{6, 22, 31, 42, 56, 62});
    CHECK(values(reduce("ReduceSum", x, {2}, 0, 13)) == std::vector<float>{6, 22, 31, 42, 56, 62});
  }
  SECTION("noop_with_empty_axes") {
    const Tensor same = reduce("ReduceSum", x, {}, 1, 13, {attrInt("noop_with_empty_axes", 1)});
    CHECK(same.bitEqual(x));
    CHECK(values(reduce("ReduceSum", x, {}, 0, 13)) == std::vector<float>{219});
  }
  SECTION("errors") {
    CHECK_THROWS_WITH(reduce("ReduceSum", x, {1, -2}, 1, 13), Catch::Contains("twice"));
    CHECK_THROWS_WITH(reduce("ReduceMean", x, {3}, 1, 13), Catch::Contains("out of range"));
  }
}

TEST_CASE("Reductions over non-contiguous axes match naive loops", "[nn]") {
  const Tensor x = randomFloat({3, 4, 5, 2}, 11);
  const Tensor y = reduce("ReduceSum", x, {0, 2}, 1, 13);
  CHECK(y.shape() == Shape{1, 4, 1, 2});
  const Tensor m = reduce("ReduceMax", x, {3, 1}, 0, 18);
  CHECK(m.shape() == Shape{3, 5});
  for (int64_t b = 0; b < 4; ++b)
    for (int64_t d = 0; d < 2; ++d) {
      double s = 0;
      for (int64_t a = 0; a < 3; ++a)
        for (int64_t c = 0; c < 5; ++c) s += x.at(flat(x.shape(), {a, b, c, d}));
      CHECK(y.at(b * 2 + d) == Approx(s).epsilon(1e-5));
    }
  for (int64_t a = 0; a < 3; ++a)
    for (int64_t c = 0; c < 5; ++c) {
      double mx = -1e30;
      for (int64_t b = 0; b < 4; ++b)
        for (int64_t d = 0; d < 2; ++d) mx = std::max(mx, x.at(flat(x.shape(), {a, b, c, d})));
      CHECK(m.at(a * 5 + c) == mx);
    }
}

TEST_CASE("Reductions over the last axis (split in ranges of outputs) match a naive loop on 1-3 threads", "[nn]") {
  // 3 x 4000 outputs of 3 values each: above the size at which the outputs are split over threads.
  const Tensor x = randomFloat({3, 4000, 3}, 12);
  for (int threads : {1, 2, 3}) {
    engine::configureThreads(threads);
    const Tensor y = reduce("ReduceSumSquare", x, {-1}, 0, 13);
    REQUIRE(y.shape() == Shape{3, 4000});
    for (int64_t o = 0; o < 12000; o += 997) {
      double s = 0;
      for (int64_t r = 0; r < 3; ++r) s += double(x.data<float>()[o * 3 + r]) * x.data<float>()[o * 3 + r];
      CHECK(y.data<float>()[o] == static_cast<float>(s));
    }
  }
  engine::configureThreads(0);
}

TEST_CASE("Reductions on integer and float16 tensors", "[nn]") {
  const Tensor xi = Tensor::fromVector<int32_t>({2, 3}, {1, -2, 3, 4, 5, -6});
  const Tensor s = reduce("ReduceSum", xi, {1}, 0, 13);
  CHECK(s.dtype() == DType::Int32);
  CHECK(values(s) == std::vector<float>{2, 3});
  CHECK(values(reduce("ReduceMax", xi.cast(DType::Int64), {0}, 0, 13)) == std::vector<float>{4, 5, 3});
  CHECK(values(reduce("ReduceProd", xi, {}, 0, 13)) == std::vector<float>{720});
  const Tensor h = reduce("ReduceMean", reduceInput().cast(DType::Float16), {1}, 0, 13);
  CHECK(h.dtype() == DType::Float16);
  CHECK(values(h) == std::vector<float>{12.5, 1.5, 35, 1.5, 57.5, 1.5});
}

TEST_CASE("nn ops run inside a parsed model", "[nn]") {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 1, 6, 6] x, float[4, 1, 3, 3] w) => (float[N, 4] y)
{
  c = Conv <pads = [1, 1, 1, 1]> (x, w)
  p = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (c)
  gp = GlobalAveragePool (p)
  r = ReduceMean <axes = [2, 3], keepdims = 0> (gp)
  y = Softmax (r)
}
)");
  engine::Session s(m, engine::SessionOptions{0, true});
  const auto out = s.run({{"x", randomFloat({3, 1, 6, 6}, 1)}, {"w", randomFloat({4, 1, 3, 3}, 2)}});
  const Tensor& y = out.at("y");
  CHECK(y.shape() == Shape{3, 4});
  for (int64_t b = 0; b < 3; ++b) {
    double sum = 0;
    for (int64_t c = 0; c < 4; ++c) sum += y.at(b * 4 + c);
    CHECK(sum == Approx(1.0));
  }
}

// parallelFor / parallelRanges: every index exactly once; when not parallel, body runs outside any
// OpenMP construct (omp_get_level() counts inactive regions too: `parallel if (false)` would show 1),
// since libgomp makes a system call even for a region of one thread.
TEST_CASE("parallelFor and parallelRanges cover each index once, serial runs enter no OpenMP region", "[nn]") {
  for (bool parallel : {false, true})
    for (int64_t n : {0L, 1L, 7L, 1000L}) {
      INFO("parallel " << parallel << ", n " << n);
      std::vector<int> hits(static_cast<size_t>(n), 0);
      std::vector<int> level(static_cast<size_t>(n), -1);
      engine::parallelFor(n, parallel, [&](int64_t i) {
        ++hits[static_cast<size_t>(i)];
        level[static_cast<size_t>(i)] = omp_get_level();
      });
      CHECK(std::all_of(hits.begin(), hits.end(), [](int h) { return h == 1; }));
      if (!parallel || n < 2) CHECK(std::all_of(level.begin(), level.end(), [](int l) { return l == 0; }));
      std::vector<int> covered(static_cast<size_t>(n), 0);
      engine::parallelRanges(n, parallel, [&](int64_t b, int64_t e) {
        CHECK(b < e);
        for (int64_t i = b; i < e; ++i) ++covered[static_cast<size_t>(i)];
        if (!parallel) CHECK(omp_get_level() == 0);
      });
      CHECK(std::all_of(covered.begin(), covered.end(), [](int h) { return h == 1; }));
    }
}

TEST_CASE("MaxUnpool puts values at MaxPool's flat indices and refuses one outside the output", "[nn]") {
  const Tensor x = f32({1, 2, 1, 1}, {5, 7}), ind = Tensor::fromVector<int64_t>({1, 2, 1, 1}, {3, 4});
  const Tensor y = run1(spec("MaxUnpool", {x, ind}, {attrInts("kernel_shape", {2, 2}), attrInts("strides", {2, 2})}, 11));
  REQUIRE(y.shape() == Shape{1, 2, 2, 2});
  CHECK(values(y) == std::vector<float>{0, 0, 0, 5, 7, 0, 0, 0});  // index 4: the second channel's first element
  CHECK_THAT(nodeError(spec("MaxUnpool", {x, Tensor::fromVector<int64_t>({1, 2, 1, 1}, {3, 8})},
                            {attrInts("kernel_shape", {2, 2}), attrInts("strides", {2, 2})}, 11)),
             Catch::Matchers::Contains("index 8 (element 1 of I) is outside the output's 8 elements"));
}

TEST_CASE("Det by hand: a 3x3 matrix that needs a row swap, a singular one, a batch", "[nn]") {
  // [[0, 2, 1], [1, 1, 0], [3, 0, 1]]: det = 0(1) - 2(1 - 0) + 1(0 - 3) = -5
  const Tensor a = f32({2, 3, 3}, {0, 2, 1, 1, 1, 0, 3, 0, 1, 1, 2, 3, 2, 4, 6, 0, 1, 1});
  const Tensor d = run1(spec("Det", {a}, {}, 11));
  REQUIRE(d.shape() == Shape{2});
  CHECK(values(d)[0] == Approx(-5.0f));
  CHECK(values(d)[1] == 0.0f);  // row 2 = 2 x row 1
}

TEST_CASE("Det and MeanVarianceNormalization refuse bad shapes and axes, naming them", "[nn]") {
  CHECK_THAT(nodeError(spec("Det", {randomFloat({2, 3, 4}, 1)}, {}, 11)),
             Catch::Matchers::Contains("input X has shape [2,3,4]; expected [..., M, M]"));
  CHECK_THAT(nodeError(spec("MeanVarianceNormalization", {randomFloat({2, 3, 4, 5}, 2)}, {attrInts("axes", {0, 4})}, 13)),
             Catch::Matchers::Contains("axes holds 4, outside the input's 4 dims"));
  CHECK(nodeError(spec("MeanVarianceNormalization", {randomFloat({2, 3, 4, 5}, 2)}, {attrInts("axes", {-1})}, 13)) == "(no error)");
}
