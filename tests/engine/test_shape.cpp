// Reference kernels of the shape / data-movement family, against hand-computed values.
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>

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
    // Channel shuffle keeps a contiguous inner run; NCHW -> NHWC does not.
    for (const auto& [shape, perm] : std::vector<std::pair<Shape, std::vector<int64_t>>>{
             {{1, 2, 58, 28, 28}, {0, 2, 1, 3, 4}}, {{2, 64, 40, 40}, {0, 2, 3, 1}}, {{3, 5, 7, 11}, {3, 1, 0, 2}}}) {
      const Tensor x = randomFloat(shape, 7);
      checkEq(run1(node("Transpose", {x}, {attrInts("perm", perm)})), naiveTranspose(x, perm));
    }
    const Tensor h = randomFloat({37, 45}, 9).cast(DType::Float16);
    checkEq(run1(node("Transpose", {h})), naiveTranspose(h.cast(DType::Float32), {1, 0}).cast(DType::Float16));
  }
  SECTION("a perm that is not a permutation") {
    CHECK_THROWS_AS(run1(node("Transpose", {iota(DType::Float32, {2, 3})}, {attrInts("perm", {0, 0})})), lwc::Error);
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
  SECTION("cubic is declined, bad inputs are errors") {
    CHECK_THROWS_AS(run1(node("Resize", {x, none, F({4}, {1, 1, 2, 2})}, {attrString("mode", "cubic")}, 13)),
                    lwc::Error);
    CHECK_THROWS_AS(run1(node("Resize", {x, none, F({4}, {1, 1, 2, 2}), I({4}, {1, 1, 4, 4})}, {}, 13)), lwc::Error);
    CHECK_THROWS_AS(run1(node("Resize", {x, none, F({2}, {2, 2})}, {}, 13)), lwc::Error);
  }
}
