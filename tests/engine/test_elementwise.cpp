// Elementwise kernels: values against hand-computed or std:: results, broadcasting (flat, scalar,
// per-channel, general) against a naive index-by-index reference, integer types, float16, opset
// differences, errors, and the parallel path on large tensors.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>

#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {

Tensor run(const std::string& op, std::vector<Tensor> inputs, std::vector<onnx::AttributeProto> attrs = {},
           int64_t opset = 17) {
  return runNode(makeSpec(op, std::move(inputs), std::move(attrs), opset), true).at(0);
}

template <typename T>
Tensor vec(Shape shape, std::vector<T> v) {
  return Tensor::fromVector<T>(std::move(shape), v);
}
Tensor f32(Shape shape, std::vector<float> v) { return vec<float>(std::move(shape), std::move(v)); }

template <typename T>
std::vector<T> values(const Tensor& t) {
  const T* p = t.data<T>();
  return std::vector<T>(p, p + t.numel());
}

/// Index of output element i in an input of shape `in` broadcast (numpy rules) to `out`.
int64_t sourceIndex(int64_t i, const Shape& in, const Shape& out) {
  int64_t idx = 0, stride = 1;
  for (size_t k = 0; k < out.size(); ++k) {
    const int64_t n_out = out[out.size() - 1 - k];
    const int64_t coord = i % n_out;
    i /= n_out;
    if (k < in.size()) {
      const int64_t n_in = in[in.size() - 1 - k];
      if (n_in != 1) idx += coord * stride;
      stride *= n_in;
    }
  }
  return idx;
}

/// Naive float broadcast reference: one element at a time, indices computed from scratch.
Tensor naiveBinary(const Tensor& a, const Tensor& b, const Shape& out, const std::function<float(float, float)>& f) {
  Tensor r(DType::Float32, out);
  for (int64_t i = 0; i < r.numel(); ++i)
    r.data<float>()[i] = f(a.data<float>()[sourceIndex(i, a.shape(), out)], b.data<float>()[sourceIndex(i, b.shape(), out)]);
  return r;
}

std::string close(const Tensor& got, const Tensor& want, double rtol = 1e-6, double atol = 1e-6) {
  return compareTensors(got, want, rtol, atol);
}

/// Applies f elementwise (float32 in and out), the oracle for unary ops.
Tensor mapFloat(const Tensor& x, const std::function<double(double)>& f) {
  Tensor r(DType::Float32, x.shape());
  for (int64_t i = 0; i < x.numel(); ++i) r.data<float>()[i] = static_cast<float>(f(x.data<float>()[i]));
  return r;
}

const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

}  // namespace

TEST_CASE("arithmetic on float32 of equal shapes", "[elementwise]") {
  const Tensor a = f32({2, 2}, {1, -2, 3.5f, 8});
  const Tensor b = f32({2, 2}, {4, 0.5f, -1, 2});
  CHECK(values<float>(run("Add", {a, b})) == std::vector<float>{5, -1.5f, 2.5f, 10});
  CHECK(values<float>(run("Sub", {a, b})) == std::vector<float>{-3, -2.5f, 4.5f, 6});
  CHECK(values<float>(run("Mul", {a, b})) == std::vector<float>{4, -1, -3.5f, 16});
  CHECK(values<float>(run("Div", {a, b})) == std::vector<float>{0.25f, -4, -3.5f, 4});
  CHECK(run("Add", {a, b}).shape() == Shape{2, 2});
  const Tensor d = vec<double>({3}, {1.5, -2, 0.25});
  CHECK(values<double>(run("Mul", {d, d})) == std::vector<double>{2.25, 4, 0.0625});
  // Float division by zero follows IEEE.
  CHECK(std::isinf(values<float>(run("Div", {f32({1}, {1}), f32({1}, {0})}))[0]));
}

TEST_CASE("binary broadcasting matches a naive reference", "[elementwise]") {
  auto add = [](float x, float y) { return x + y; };
  auto sub = [](float x, float y) { return x - y; };
  SECTION("scalar on either side") {
    const Tensor x = randomFloat({2, 3, 4}, 1);
    const Tensor s = Tensor::scalar<float>(0.5f);
    CHECK(close(run("Sub", {x, s}), naiveBinary(x, s, {2, 3, 4}, sub)) == "");
    CHECK(close(run("Sub", {s, x}), naiveBinary(s, x, {2, 3, 4}, sub)) == "");
    const Tensor one = f32({1, 1, 1}, {2});
    CHECK(close(run("Sub", {x, one}), naiveBinary(x, one, {2, 3, 4}, sub)) == "");
  }
  SECTION("per-channel [C,1,1] and [1,C,1,1] against NCHW") {
    const Tensor x = randomFloat({2, 3, 4, 5}, 2);
    const Tensor c3 = randomFloat({3, 1, 1}, 3);
    const Tensor c4 = randomFloat({1, 3, 1, 1}, 4);
    CHECK(close(run("Add", {x, c3}), naiveBinary(x, c3, {2, 3, 4, 5}, add)) == "");
    CHECK(close(run("Sub", {c4, x}), naiveBinary(c4, x, {2, 3, 4, 5}, sub)) == "");
  }
  SECTION("two-sided [2,1,3] op [4,1]") {
    const Tensor a = f32({2, 1, 3}, {1, 2, 3, 4, 5, 6});
    const Tensor b = f32({4, 1}, {10, 20, 30, 40});
    const Tensor y = run("Add", {a, b});
    REQUIRE(y.shape() == Shape{2, 4, 3});
    CHECK(y.data<float>()[0] == 11);
    CHECK(y.data<float>()[4] == 22);   // [0,1,1]
    CHECK(y.data<float>()[23] == 46);  // [1,3,2]
    CHECK(close(y, naiveBinary(a, b, {2, 4, 3}, add)) == "");
  }
  SECTION("assorted shapes, including size-0 and trailing/leading ones") {
    const std::vector<std::pair<Shape, Shape>> cases = {
        {{5}, {1}},          {{3, 1}, {1, 4}},          {{2, 3, 4}, {4}},       {{2, 3, 4}, {3, 1}},
        {{1, 3, 1, 5}, {2, 1, 4, 1}}, {{6, 1, 1}, {6, 5, 1}}, {{2, 1, 3, 1}, {1, 4, 1, 5}}, {{1}, {}},
        {{0, 3}, {3}},       {{2, 0}, {1, 1}},          {{1, 1}, {1, 1, 1}},    {{7, 2, 1, 3}, {2, 5, 3}},
        // One side a single element or a vector along the other's last axis (the unplanned loops),
        // and near misses that need the plan: a higher-rank vector, a column, a 1-element last axis.
        {{4}, {1, 4}},       {{1, 4}, {4}},             {{3, 4}, {1, 1, 4}},    {{1, 1, 4}, {2, 3, 4}},
        {{2, 3, 4}, {1}},    {{1, 1}, {2, 3}},          {{3, 1}, {3}},          {{3, 4}, {3, 1}},
        {{2, 3, 1}, {1}},    {{5, 1}, {1, 1}},
    };
    uint32_t seed = 10;
    for (const auto& [sa, sb] : cases) {
      const Tensor a = randomFloat(sa, seed++);
      const Tensor b = randomFloat(sb, seed++);
      const Tensor y = run("Sub", {a, b});
      Shape want(std::max(sa.size(), sb.size()));
      for (size_t k = 0; k < want.size(); ++k) {
        const int64_t da = k < sa.size() ? sa[sa.size() - 1 - k] : 1, db = k < sb.size() ? sb[sb.size() - 1 - k] : 1;
        want[want.size() - 1 - k] = da == 1 ? db : da;
      }
      INFO(shapeStr(sa) << " - " << shapeStr(sb));
      CHECK(close(y, naiveBinary(a, b, want, sub)) == "");
    }
  }
  SECTION("incompatible shapes name the node") {
    CHECK_THROWS_AS(run("Add", {randomFloat({2, 3}, 1), randomFloat({4}, 2)}), lwc::Error);
    CHECK_THROWS_WITH(run("Mul", {randomFloat({2, 3}, 1), randomFloat({2, 2}, 2)}),
                      Catch::Contains("Mul") && Catch::Contains("[2,3]") && Catch::Contains("[2,2]"));
  }
}

TEST_CASE("integer arithmetic", "[elementwise]") {
  SECTION("wrap-around in the element type") {
    CHECK(values<int8_t>(run("Add", {vec<int8_t>({2}, {100, -100}), vec<int8_t>({2}, {100, -100})})) ==
          std::vector<int8_t>{-56, 56});
    CHECK(values<uint8_t>(run("Sub", {vec<uint8_t>({2}, {1, 200}), vec<uint8_t>({2}, {2, 100})})) ==
          std::vector<uint8_t>{255, 100});
    CHECK(values<int64_t>(run("Mul", {vec<int64_t>({2}, {1ll << 40, -3}), vec<int64_t>({}, {4})})) ==
          std::vector<int64_t>{1ll << 42, -12});
  }
  SECTION("Div truncates toward zero") {
    const Tensor a = vec<int32_t>({4}, {7, -7, 7, -7});
    const Tensor b = vec<int32_t>({4}, {2, 2, -2, -2});
    CHECK(values<int32_t>(run("Div", {a, b})) == std::vector<int32_t>{3, -3, -3, 3});
    CHECK(values<uint16_t>(run("Div", {vec<uint16_t>({2}, {65535, 9}), vec<uint16_t>({}, {4})})) ==
          std::vector<uint16_t>{16383, 2});
    const int32_t lo = std::numeric_limits<int32_t>::min();
    CHECK(values<int32_t>(run("Div", {vec<int32_t>({1}, {lo}), vec<int32_t>({1}, {-1})})) == std::vector<int32_t>{lo});
  }
  SECTION("division by zero is an error naming the node") {
    CHECK_THROWS_AS(run("Div", {vec<int32_t>({2}, {1, 2}), vec<int32_t>({2}, {1, 0})}), lwc::Error);
    CHECK_THROWS_WITH(run("Mod", {vec<int64_t>({2}, {1, 2}), vec<int64_t>({}, {0})}),
                      Catch::Contains("Mod") && Catch::Contains("division by zero"));
  }
  SECTION("Max, Min, Abs, Neg, Sign, Relu on integers") {
    const Tensor a = vec<int16_t>({4}, {-5, 3, 0, 7});
    const Tensor b = vec<int16_t>({4}, {2, 2, -1, 9});
    CHECK(values<int16_t>(run("Max", {a, b})) == std::vector<int16_t>{2, 3, 0, 9});
    CHECK(values<int16_t>(run("Min", {a, b})) == std::vector<int16_t>{-5, 2, -1, 7});
    CHECK(values<int16_t>(run("Abs", {a})) == std::vector<int16_t>{5, 3, 0, 7});
    CHECK(values<int16_t>(run("Neg", {a})) == std::vector<int16_t>{5, -3, 0, -7});
    CHECK(values<int16_t>(run("Sign", {a})) == std::vector<int16_t>{-1, 1, 0, 1});
    CHECK(values<int8_t>(run("Relu", {vec<int8_t>({3}, {-3, 0, 4})}, {}, 14)) == std::vector<int8_t>{0, 0, 4});
    CHECK(values<uint32_t>(run("Abs", {vec<uint32_t>({2}, {0, 4000000000u})})) == std::vector<uint32_t>{0, 4000000000u});
    CHECK(values<uint64_t>(run("Sign", {vec<uint64_t>({2}, {0, 5})})) == std::vector<uint64_t>{0, 1});
  }
}

TEST_CASE("Mod with fmod 0 (sign of divisor) and 1 (sign of dividend)", "[elementwise]") {
  const Tensor a = vec<int32_t>({4}, {7, -7, 7, -7});
  const Tensor b = vec<int32_t>({4}, {3, 3, -3, -3});
  CHECK(values<int32_t>(run("Mod", {a, b})) == std::vector<int32_t>{1, 2, -2, -1});
  CHECK(values<int32_t>(run("Mod", {a, b}, {attrInt("fmod", 1)})) == std::vector<int32_t>{1, -1, 1, -1});
  CHECK(values<uint8_t>(run("Mod", {vec<uint8_t>({2}, {200, 5}), vec<uint8_t>({}, {7})})) == std::vector<uint8_t>{4, 5});
  const Tensor fa = f32({3}, {5.5f, -5.5f, 5.5f});
  const Tensor fb = f32({3}, {2, 2, -2});
  CHECK(values<float>(run("Mod", {fa, fb}, {attrInt("fmod", 1)})) == std::vector<float>{1.5f, -1.5f, 1.5f});
  CHECK_THROWS_AS(run("Mod", {fa, fb}), lwc::Error);  // fmod=0 is undefined for floats
}

TEST_CASE("Pow of floats, integers and mixed types", "[elementwise]") {
  CHECK(values<float>(run("Pow", {f32({3}, {2, 3, 4}), f32({3}, {3, 2, 0.5f})})) == std::vector<float>{8, 9, 2});
  CHECK(values<float>(run("Pow", {f32({2}, {-3, 1.5f}), f32({}, {2})})) == std::vector<float>{9, 2.25f});
  CHECK(values<int64_t>(run("Pow", {vec<int64_t>({4}, {2, -3, 10, 2}), vec<int64_t>({4}, {10, 3, 0, -1})})) ==
        std::vector<int64_t>{1024, -27, 1, 0});
  // Mixed: output type is the base's.
  const Tensor y = run("Pow", {f32({3}, {2, 3, 0.5f}), vec<int64_t>({3}, {3, -1, 2})});
  CHECK(y.dtype() == DType::Float32);
  CHECK(close(y, f32({3}, {8, 1.0f / 3, 0.25f})) == "");
  CHECK(values<int32_t>(run("Pow", {vec<int32_t>({3}, {1, 2, 4}), f32({3}, {1, 2, 0.5f})})) ==
        std::vector<int32_t>{1, 4, 2});
}

TEST_CASE("variadic Max, Min, Sum, Mean broadcast and propagate NaN", "[elementwise]") {
  const Tensor a = f32({2, 2}, {1, 5, -2, 0});
  const Tensor b = f32({2}, {3, 4});
  const Tensor c = Tensor::scalar<float>(2);
  CHECK(values<float>(run("Max", {a, b, c})) == std::vector<float>{3, 5, 3, 4});
  CHECK(values<float>(run("Min", {a, b, c})) == std::vector<float>{1, 2, -2, 0});
  CHECK(values<float>(run("Sum", {a, b, c})) == std::vector<float>{6, 11, 3, 6});
  CHECK(close(run("Mean", {a, b, c}), f32({2, 2}, {2, 11.0f / 3, 1, 2})) == "");
  CHECK(values<float>(run("Sum", {a})) == values<float>(a));
  CHECK(values<float>(run("Max", {a})) == values<float>(a));
  const auto mx = values<float>(run("Max", {f32({3}, {kNaN, 1, 2}), f32({3}, {0, kNaN, 1})}));
  CHECK((std::isnan(mx[0]) && std::isnan(mx[1]) && mx[2] == 2));
  const auto mn = values<float>(run("Min", {f32({2}, {kNaN, 1}), f32({2}, {0, kNaN})}));
  CHECK((std::isnan(mn[0]) && std::isnan(mn[1])));
  CHECK(values<uint8_t>(run("Max", {vec<uint8_t>({2}, {1, 200}), vec<uint8_t>({2}, {3, 100})}, {}, 13)) ==
        std::vector<uint8_t>{3, 200});
}

TEST_CASE("comparisons yield bool", "[elementwise]") {
  const Tensor a = f32({4}, {1, 2, 3, kNaN});
  const Tensor b = f32({}, {2});
  auto bools = [](const Tensor& t) {
    REQUIRE(t.dtype() == DType::Bool);
    return values<bool>(t);
  };
  CHECK(bools(run("Equal", {a, b})) == std::vector<bool>{false, true, false, false});
  CHECK(bools(run("Less", {a, b})) == std::vector<bool>{true, false, false, false});
  CHECK(bools(run("Greater", {a, b})) == std::vector<bool>{false, false, true, false});
  CHECK(bools(run("LessOrEqual", {a, b})) == std::vector<bool>{true, true, false, false});
  CHECK(bools(run("GreaterOrEqual", {a, b})) == std::vector<bool>{false, true, true, false});
  CHECK(bools(run("Equal", {vec<int64_t>({3}, {1, 2, 3}), vec<int64_t>({3}, {1, 0, 3})})) ==
        std::vector<bool>{true, false, true});
  CHECK(bools(run("Equal", {vec<bool>({2}, {true, false}), vec<bool>({1}, {false})})) == std::vector<bool>{false, true});
  CHECK(bools(run("Less", {vec<uint32_t>({2}, {1, 5}), vec<uint32_t>({2}, {3, 3})})) == std::vector<bool>{true, false});
  // float16 inputs compare in float32; the result stays bool.
  CHECK(bools(run("Greater", {f32({2}, {1, 3}).cast(DType::Float16), f32({2}, {2, 2}).cast(DType::Float16)})) ==
        std::vector<bool>{false, true});
}

TEST_CASE("logic ops And, Or, Xor, Not", "[elementwise]") {
  const Tensor a = vec<bool>({2, 2}, {true, true, false, false});
  const Tensor b = vec<bool>({2}, {true, false});
  CHECK(values<bool>(run("And", {a, b})) == std::vector<bool>{true, false, false, false});
  CHECK(values<bool>(run("Or", {a, b})) == std::vector<bool>{true, true, true, false});
  CHECK(values<bool>(run("Xor", {a, b})) == std::vector<bool>{false, true, true, false});
  CHECK(values<bool>(run("Not", {a})) == std::vector<bool>{false, false, true, true});
  CHECK_THROWS_AS(run("And", {f32({1}, {1}), f32({1}, {1})}), lwc::Error);
}

TEST_CASE("Where broadcasts condition, X and Y of any type", "[elementwise]") {
  const Tensor cond = vec<bool>({2, 1}, {true, false});
  const Tensor x = f32({3}, {1, 2, 3});
  const Tensor y = f32({2, 3}, {-1, -2, -3, -4, -5, -6});
  const Tensor r = run("Where", {cond, x, y});
  CHECK(r.shape() == Shape{2, 3});
  CHECK(values<float>(r) == std::vector<float>{1, 2, 3, -4, -5, -6});
  CHECK(values<int64_t>(run("Where", {vec<bool>({3}, {false, true, false}), vec<int64_t>({}, {7}),
                                      vec<int64_t>({3}, {1, 2, 3})})) == std::vector<int64_t>{1, 7, 3});
  const Tensor h = run("Where", {vec<bool>({2}, {true, false}), f32({2}, {1.5f, 2}).cast(DType::Float16),
                                 f32({2}, {3, 4}).cast(DType::Float16)});
  CHECK(h.dtype() == DType::Float16);
  CHECK(h.at(0) == 1.5);
  CHECK(h.at(1) == 4);
  CHECK_THROWS_AS(run("Where", {cond, x, vec<int32_t>({3}, {1, 2, 3})}), lwc::Error);
}

TEST_CASE("unary math matches std::", "[elementwise]") {
  const Tensor x = f32({8}, {-2.5f, -1, -0.3f, 0, 0.2f, 0.5f, 1.5f, 3});
  const Tensor unit = f32({5}, {-0.9f, -0.5f, 0, 0.4f, 0.99f});
  const Tensor pos = f32({5}, {0.1f, 0.5f, 1, 2.5f, 100});
  const Tensor big = f32({4}, {1.0f, 1.5f, 3, 10});
  struct Case {
    const char* op;
    const Tensor* in;
    double (*f)(double);
    int opset;
  };
  const std::vector<Case> cases = {
      {"Abs", &x, [](double v) { return std::abs(v); }, 13},
      {"Neg", &x, [](double v) { return -v; }, 13},
      {"Exp", &x, [](double v) { return std::exp(v); }, 13},
      {"Log", &pos, [](double v) { return std::log(v); }, 13},
      {"Sqrt", &pos, [](double v) { return std::sqrt(v); }, 13},
      {"Reciprocal", &x, [](double v) { return 1 / v; }, 13},
      {"Floor", &x, [](double v) { return std::floor(v); }, 13},
      {"Ceil", &x, [](double v) { return std::ceil(v); }, 13},
      {"Sign", &x, [](double v) { return v > 0 ? 1.0 : v < 0 ? -1.0 : 0.0; }, 13},
      {"Erf", &x, [](double v) { return std::erf(v); }, 13},
      {"Tanh", &x, [](double v) { return std::tanh(v); }, 13},
      {"Sigmoid", &x, [](double v) { return 1 / (1 + std::exp(-v)); }, 13},
      {"Sin", &x, [](double v) { return std::sin(v); }, 7},
      {"Cos", &x, [](double v) { return std::cos(v); }, 7},
      {"Tan", &x, [](double v) { return std::tan(v); }, 7},
      {"Asin", &unit, [](double v) { return std::asin(v); }, 7},
      {"Acos", &unit, [](double v) { return std::acos(v); }, 7},
      {"Atan", &x, [](double v) { return std::atan(v); }, 7},
      {"Sinh", &x, [](double v) { return std::sinh(v); }, 9},
      {"Cosh", &x, [](double v) { return std::cosh(v); }, 9},
      {"Asinh", &x, [](double v) { return std::asinh(v); }, 9},
      {"Acosh", &big, [](double v) { return std::acosh(v); }, 9},
      {"Atanh", &unit, [](double v) { return std::atanh(v); }, 9},
      {"Softsign", &x, [](double v) { return v / (1 + std::abs(v)); }, 13},
      {"Softplus", &x, [](double v) { return std::log(std::exp(v) + 1); }, 13},
      {"Mish", &x, [](double v) { return v * std::tanh(std::log1p(std::exp(v))); }, 18},
      {"Relu", &x, [](double v) { return v > 0 ? v : 0.0; }, 13},
  };
  for (const auto& c : cases) {
    INFO(c.op);
    CHECK(close(run(c.op, {*c.in}, {}, c.opset), mapFloat(*c.in, c.f), 1e-6, 1e-7) == "");
  }
  // In float64 too.
  const Tensor d = vec<double>({3}, {-1.25, 0.5, 2});
  CHECK(values<double>(run("Exp", {d})) == std::vector<double>{std::exp(-1.25), std::exp(0.5), std::exp(2.0)});
  // Float-only ops reject integers.
  CHECK_THROWS_AS(run("Exp", {vec<int32_t>({1}, {1})}), lwc::Error);
}

TEST_CASE("Round halves to even, Softplus does not overflow", "[elementwise]") {
  CHECK(values<float>(run("Round", {f32({8}, {0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 0.4f, 2.6f, -2.51f})})) ==
        std::vector<float>{0, 2, 2, -0.f, -2, 0, 3, -3});
  CHECK(values<float>(run("Softplus", {f32({2}, {100, -100})}))[0] == 100);
  CHECK(values<float>(run("Sigmoid", {f32({2}, {-100, 100})})) == std::vector<float>{0, 1});
}

TEST_CASE("activations with attributes", "[elementwise]") {
  const Tensor x = f32({5}, {-2, -0.5f, 0, 0.5f, 2});
  auto check = [&](const std::string& op, std::vector<onnx::AttributeProto> attrs, int opset,
                   const std::function<double(double)>& f) {
    INFO(op);
    CHECK(close(run(op, {x}, std::move(attrs), opset), mapFloat(x, f), 1e-6, 1e-7) == "");
  };
  check("LeakyRelu", {}, 16, [](double v) { return v < 0 ? 0.01 * v : v; });
  check("LeakyRelu", {attrFloat("alpha", 0.2f)}, 16, [](double v) { return v < 0 ? 0.2 * v : v; });
  check("Elu", {}, 6, [](double v) { return v < 0 ? std::exp(v) - 1 : v; });
  check("Elu", {attrFloat("alpha", 2)}, 6, [](double v) { return v < 0 ? 2 * (std::exp(v) - 1) : v; });
  check("Selu", {}, 6, [](double v) {
    return 1.0507009873554804934193349852946 * (v > 0 ? v : 1.6732632423543772848170429916717 * (std::exp(v) - 1));
  });
  check("Selu", {attrFloat("alpha", 2), attrFloat("gamma", 3)}, 6,
        [](double v) { return 3 * (v > 0 ? v : 2 * (std::exp(v) - 1)); });
  check("Celu", {attrFloat("alpha", 2)}, 12,
        [](double v) { return std::max(0.0, v) + std::min(0.0, 2 * (std::exp(v / 2) - 1)); });
  check("HardSigmoid", {}, 6, [](double v) { return std::clamp(0.2 * v + 0.5, 0.0, 1.0); });
  check("HardSigmoid", {attrFloat("alpha", 0.5f), attrFloat("beta", 0.6f)}, 6,
        [](double v) { return std::clamp(0.5 * v + 0.6, 0.0, 1.0); });
  check("ThresholdedRelu", {}, 10, [](double v) { return v > 1 ? v : 0; });
  check("ThresholdedRelu", {attrFloat("alpha", 0.25f)}, 10, [](double v) { return v > 0.25 ? v : 0; });
  check("Shrink", {}, 9, [](double v) { return std::abs(v) > 0.5 ? v : 0; });
  check("Shrink", {attrFloat("lambd", 1), attrFloat("bias", 0.5f)}, 9,
        [](double v) { return v < -1 ? v + 0.5 : v > 1 ? v - 0.5 : 0; });
  CHECK(values<int8_t>(run("Shrink", {vec<int8_t>({5}, {-8, -1, 0, 1, 8})}, {attrFloat("lambd", 1), attrFloat("bias", 2)},
                           9)) == std::vector<int8_t>{-6, 0, 0, 0, 6});
  const Tensor wide = f32({7}, {-5, -3, -1, 0, 1, 3, 5});
  CHECK(values<float>(run("HardSwish", {wide}, {}, 14)) ==
        std::vector<float>{0, 0, -1 * (-1.0f / 6 + 0.5f), 0, 1 * (1.0f / 6 + 0.5f), 3, 5});
  CHECK(values<float>(run("Relu", {wide}, {}, 6)) == std::vector<float>{0, 0, 0, 0, 1, 3, 5});
  SECTION("Gelu (opset 20), exact and tanh") {
    check("Gelu", {}, 20, [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); });
    check("Gelu", {attrString("approximate", "tanh")}, 20, [](double v) {
      return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    });
    CHECK_THROWS_AS(run("Gelu", {x}, {attrString("approximate", "fast")}, 20), lwc::Error);
    CHECK_THROWS_AS(run("Gelu", {x}, {}, 17), lwc::Error);  // not in opset 17
  }
}

TEST_CASE("PRelu broadcasts the slope to X only", "[elementwise]") {
  const Tensor x = f32({1, 2, 2, 1}, {-1, 2, -3, 4});
  CHECK(values<float>(run("PRelu", {x, f32({2, 1, 1}, {0.5f, 0.25f})})) == std::vector<float>{-0.5f, 2, -0.75f, 4});
  CHECK(values<float>(run("PRelu", {x, f32({1}, {0.1f})})) == std::vector<float>{-0.1f, 2, -0.3f, 4});
  CHECK(values<int32_t>(run("PRelu", {vec<int32_t>({3}, {-4, 0, 5}), vec<int32_t>({}, {3})}, {}, 16)) ==
        std::vector<int32_t>{-12, 0, 5});
  // The slope may not widen X.
  CHECK_THROWS_AS(run("PRelu", {f32({2}, {1, 2}), f32({3, 1}, {1, 2, 3})}), lwc::Error);
}

TEST_CASE("PRelu before opset 7 reads a 1-D slope of X's channel count per channel", "[elementwise]") {
  // X [1, 2, 2]: channels along axis 1, and a last axis of the same length, where opset 7's numpy
  // rule would align the slope instead.
  const Tensor x = f32({1, 2, 2}, {-1, -2, -3, 4});
  const Tensor slope = f32({2}, {0.5f, 0.25f});
  CHECK(values<float>(run("PRelu", {x, slope}, {}, 6)) == std::vector<float>{-0.5f, -1, -0.75f, 4});
  CHECK(values<float>(run("PRelu", {x, slope}, {}, 7)) == std::vector<float>{-0.5f, -0.5f, -1.5f, 4});
  CHECK(values<float>(run("PRelu", {x, f32({1}, {0.1f})}, {}, 6)) == std::vector<float>{-0.1f, -0.2f, -0.3f, 4});
  // Neither one element, nor the channel count, nor numpy-broadcastable: an error.
  CHECK_THROWS_AS(run("PRelu", {x, f32({3}, {1, 2, 3})}, {}, 6), lwc::Error);
}

TEST_CASE("Clip takes bounds from attributes before opset 11, from inputs after", "[elementwise]") {
  const Tensor x = f32({5}, {-3, -1, 0.5f, 4, 9});
  SECTION("opset 6: min/max attributes") {
    CHECK(values<float>(run("Clip", {x}, {attrFloat("min", -1), attrFloat("max", 6)}, 6)) ==
          std::vector<float>{-1, -1, 0.5f, 4, 6});
    CHECK(values<float>(run("Clip", {x}, {attrFloat("max", 1)}, 6)) == std::vector<float>{-3, -1, 0.5f, 1, 1});
  }
  SECTION("opset 13: optional min/max inputs") {
    const Tensor lo = Tensor::scalar<float>(0), hi = Tensor::scalar<float>(6);
    CHECK(values<float>(run("Clip", {x, lo, hi}, {}, 13)) == std::vector<float>{0, 0, 0.5f, 4, 6});
    CHECK(values<float>(run("Clip", {x, Tensor(), hi}, {}, 13)) == std::vector<float>{-3, -1, 0.5f, 4, 6});
    CHECK(values<float>(run("Clip", {x, lo}, {}, 13)) == std::vector<float>{0, 0, 0.5f, 4, 9});
    CHECK(values<float>(run("Clip", {x}, {}, 13)) == values<float>(x));
    // A bound left out is the type's extreme finite value (the spec's default, ONNX Runtime's result).
    const float inf = std::numeric_limits<float>::infinity(), big = std::numeric_limits<float>::max();
    CHECK(values<float>(run("Clip", {f32({2}, {-inf, inf}), lo}, {}, 13)) == std::vector<float>{0, big});
    CHECK(values<float>(run("Clip", {f32({2}, {-inf, inf})}, {}, 13)) == std::vector<float>{-big, big});
    // float16 is clipped to its own extremes (computed in float32, FLT_MAX came back as inf).
    const Tensor h = run("Clip", {f32({2}, {-inf, inf}).cast(DType::Float16)}, {}, 13);
    CHECK(values<float>(h.cast(DType::Float32)) == std::vector<float>{-65504, 65504});
    // min > max: everything becomes max.
    CHECK(values<float>(run("Clip", {x, hi, lo}, {}, 13)) == std::vector<float>(5, 0));
    // Attributes are not read at opset 13.
    CHECK(values<float>(run("Clip", {x}, {attrFloat("min", 0)}, 13)) == values<float>(x));
    const auto n = values<float>(run("Clip", {f32({2}, {kNaN, -kInf}), lo, hi}, {}, 13));
    CHECK((std::isnan(n[0]) && n[1] == 0));
  }
  SECTION("integers at opset 13") {
    CHECK(values<int8_t>(run("Clip", {vec<int8_t>({4}, {-128, -5, 5, 127}), vec<int8_t>({}, {-10}),
                                      vec<int8_t>({}, {10})},
                             {}, 13)) == std::vector<int8_t>{-10, -5, 5, 10});
    CHECK_THROWS_AS(run("Clip", {vec<int8_t>({1}, {1}), f32({}, {0})}, {}, 13), lwc::Error);
  }
}

TEST_CASE("Cast and CastLike", "[elementwise]") {
  auto to = [](int onnx_type) { return std::vector<onnx::AttributeProto>{attrInt("to", onnx_type)}; };
  const Tensor x = f32({5}, {-1.7f, -0.2f, 0, 2.9f, 300});
  SECTION("float to integers truncates (saturating out of range)") {
    CHECK(values<int8_t>(run("Cast", {x}, to(onnx::TensorProto::INT8))) == std::vector<int8_t>{-1, 0, 0, 2, 127});
    CHECK(values<uint8_t>(run("Cast", {f32({3}, {0.9f, 2.9f, 255})}, to(onnx::TensorProto::UINT8))) ==
          std::vector<uint8_t>{0, 2, 255});
    CHECK(values<int64_t>(run("Cast", {x}, to(onnx::TensorProto::INT64))) == std::vector<int64_t>{-1, 0, 0, 2, 300});
  }
  SECTION("integers to float") {
    CHECK(values<float>(run("Cast", {vec<int32_t>({3}, {-5, 0, 1 << 20})}, to(onnx::TensorProto::FLOAT))) ==
          std::vector<float>{-5, 0, 1 << 20});
    CHECK(values<double>(run("Cast", {vec<uint8_t>({2}, {0, 255})}, to(onnx::TensorProto::DOUBLE))) ==
          std::vector<double>{0, 255});
  }
  SECTION("float32 <-> float16") {
    const Tensor h = run("Cast", {f32({4}, {1, -2.5f, 65504, 1e-8f})}, to(onnx::TensorProto::FLOAT16));
    REQUIRE(h.dtype() == DType::Float16);
    CHECK(h.at(0) == 1);
    CHECK(h.at(1) == -2.5);
    CHECK(h.at(2) == 65504);
    CHECK(h.at(3) == 0);
    CHECK(values<float>(run("Cast", {h}, to(onnx::TensorProto::FLOAT))) == std::vector<float>{1, -2.5f, 65504, 0});
    CHECK(values<float>(run("Cast", {f32({1}, {0.1f})}, to(onnx::TensorProto::FLOAT16))
                            .cast(DType::Float32)) == std::vector<float>{halfToFloat(floatToHalf(0.1f))});
  }
  SECTION("to bool: nonzero is true") {
    CHECK(values<bool>(run("Cast", {x}, to(onnx::TensorProto::BOOL))) == std::vector<bool>{true, true, false, true, true});
    CHECK(values<bool>(run("Cast", {vec<int64_t>({2}, {0, -3})}, to(onnx::TensorProto::BOOL))) ==
          std::vector<bool>{false, true});
  }
  SECTION("opset 1 names the type as a string") {
    CHECK(values<int32_t>(run("Cast", {x}, {attrString("to", "INT32")}, 1)) == std::vector<int32_t>{-1, 0, 0, 2, 300});
  }
  SECTION("unsupported targets are errors") {
    CHECK_THROWS_AS(run("Cast", {x}, to(onnx::TensorProto::STRING)), lwc::Error);
    CHECK_THROWS_AS(run("Cast", {x}, {}), lwc::Error);
  }
  SECTION("CastLike takes the type of its second input") {
    const Tensor y = run("CastLike", {x, vec<int16_t>({1}, {0})});
    CHECK(values<int16_t>(y) == std::vector<int16_t>{-1, 0, 0, 2, 300});
    CHECK(run("CastLike", {x, f32({}, {0}).cast(DType::Float16)}).dtype() == DType::Float16);
  }
}

TEST_CASE("IsNaN and IsInf", "[elementwise]") {
  const Tensor x = f32({4}, {1, kNaN, kInf, -kInf});
  CHECK(values<bool>(run("IsNaN", {x})) == std::vector<bool>{false, true, false, false});
  CHECK(values<bool>(run("IsInf", {x})) == std::vector<bool>{false, false, true, true});
  CHECK(values<bool>(run("IsInf", {x}, {attrInt("detect_negative", 0)})) == std::vector<bool>{false, false, true, false});
  CHECK(values<bool>(run("IsInf", {x}, {attrInt("detect_positive", 0)})) == std::vector<bool>{false, false, false, true});
}

TEST_CASE("BitShift on unsigned integers", "[elementwise]") {
  const Tensor a = vec<uint8_t>({3}, {16, 4, 1});
  const Tensor b = vec<uint8_t>({3}, {1, 2, 3});
  CHECK(values<uint8_t>(run("BitShift", {a, b}, {attrString("direction", "RIGHT")})) == std::vector<uint8_t>{8, 1, 0});
  CHECK(values<uint8_t>(run("BitShift", {a, b}, {attrString("direction", "LEFT")})) == std::vector<uint8_t>{32, 16, 8});
  CHECK(values<uint32_t>(run("BitShift", {vec<uint32_t>({2}, {1, 3}), vec<uint32_t>({}, {31})},
                             {attrString("direction", "LEFT")})) == std::vector<uint32_t>{1u << 31, 1u << 31});
  // Shifts by the width or more give 0 instead of C's undefined behaviour.
  CHECK(values<uint8_t>(run("BitShift", {a, vec<uint8_t>({}, {8})}, {attrString("direction", "LEFT")})) ==
        std::vector<uint8_t>{0, 0, 0});
  CHECK_THROWS_AS(run("BitShift", {a, b}, {attrString("direction", "UP")}), lwc::Error);
  CHECK_THROWS_AS(run("BitShift", {vec<int32_t>({1}, {1}), vec<int32_t>({1}, {1})}, {attrString("direction", "LEFT")}),
                  lwc::Error);
}

TEST_CASE("float16 is computed in float32 and rounded back", "[elementwise]") {
  const Tensor x = f32({4}, {-2, -0.5f, 0.5f, 3}).cast(DType::Float16);
  const Tensor s = run("Sigmoid", {x});
  REQUIRE(s.dtype() == DType::Float16);
  const Tensor want = mapFloat(x.cast(DType::Float32), [](double v) { return 1 / (1 + std::exp(-v)); });
  CHECK(s.bitEqual(want.cast(DType::Float16)));
  const Tensor sum = run("Add", {x, f32({1}, {1}).cast(DType::Float16)});
  CHECK(sum.dtype() == DType::Float16);
  CHECK(values<float>(sum.cast(DType::Float32)) == std::vector<float>{-1, 0.5f, 1.5f, 4});
  CHECK(values<float>(run("Max", {x, f32({}, {0}).cast(DType::Float16)}).cast(DType::Float32)) ==
        std::vector<float>{0, 0, 0.5f, 3});
  CHECK_THROWS_AS(run("Add", {x, f32({1}, {1})}), lwc::Error);  // mixed float16/float32
}

TEST_CASE("opset 1-6 broadcast attribute aligns B at axis", "[elementwise]") {
  const Tensor a = randomFloat({2, 3, 4, 5}, 7);
  const Tensor b = f32({3}, {1, 2, 3});
  const Tensor y = run("Add", {a, b}, {attrInt("broadcast", 1), attrInt("axis", 1)}, 6);
  CHECK(close(y, naiveBinary(a, b.reshaped({3, 1, 1}), {2, 3, 4, 5}, [](float p, float q) { return p + q; })) == "");
  const Tensor c = f32({5}, {1, 2, 3, 4, 5});
  const Tensor z = run("Mul", {a, c}, {attrInt("broadcast", 1)}, 6);  // suffix matching without axis
  CHECK(close(z, naiveBinary(a, c, {2, 3, 4, 5}, [](float p, float q) { return p * q; })) == "");
}

TEST_CASE("large tensors (parallel path) equal a plain loop", "[elementwise]") {
  const Shape nchw{4, 64, 32, 32};  // 262144 elements: above the parallel threshold
  const Tensor x = randomFloat(nchw, 21, -8, 8);
  const Tensor y = randomFloat(nchw, 22);
  const Tensor ch = randomFloat({64, 1, 1}, 23);
  const int64_t n = x.numel(), hw = 32 * 32;
  const float* px = x.data<float>();
  SECTION("same shape") {
    const Tensor r = run("Add", {x, y});
    Tensor want(DType::Float32, nchw);
    for (int64_t i = 0; i < n; ++i) want.data<float>()[i] = px[i] + y.data<float>()[i];
    CHECK(r.bitEqual(want));
  }
  SECTION("per channel") {
    const Tensor r = run("Mul", {x, ch});
    Tensor want(DType::Float32, nchw);
    for (int64_t i = 0; i < n; ++i) want.data<float>()[i] = px[i] * ch.data<float>()[(i / hw) % 64];
    CHECK(r.bitEqual(want));
  }
  SECTION("a vector along the last axis or a single element, on either side") {
    const Tensor row = randomFloat({32}, 26), one = randomFloat({1, 1}, 27);
    const float* pr = row.data<float>();
    const float s = one.data<float>()[0];
    Tensor w1(DType::Float32, nchw), w2(DType::Float32, nchw), w3(DType::Float32, nchw), w4(DType::Float32, nchw);
    for (int64_t i = 0; i < n; ++i) {
      w1.data<float>()[i] = px[i] - pr[i % 32];
      w2.data<float>()[i] = pr[i % 32] / px[i];
      w3.data<float>()[i] = px[i] * s;
      w4.data<float>()[i] = s - px[i];
    }
    CHECK(run("Sub", {x, row}).bitEqual(w1));
    CHECK(run("Div", {row, x}).bitEqual(w2));
    CHECK(run("Mul", {x, one}).bitEqual(w3));
    CHECK(run("Sub", {one, x}).bitEqual(w4));
  }
  SECTION("general two-sided broadcast") {
    const Tensor a = randomFloat({4, 1, 64, 64}, 24);
    const Tensor b = randomFloat({1, 16, 1, 64}, 25);
    const Tensor r = run("Sub", {a, b});
    CHECK(r.shape() == Shape{4, 16, 64, 64});
    CHECK(r.bitEqual(naiveBinary(a, b, {4, 16, 64, 64}, [](float p, float q) { return p - q; })));
  }
  SECTION("unary, Clip and comparison") {
    const Tensor relu = run("Relu", {x});
    const Tensor clip = run("Clip", {x, Tensor::scalar<float>(0), Tensor::scalar<float>(6)}, {}, 13);
    const Tensor hs = run("HardSwish", {x}, {}, 14);
    const Tensor less = run("Less", {x, y});
    bool ok = true;
    for (int64_t i = 0; i < n && ok; ++i) {
      const float v = px[i];
      const float h = std::min(1.0f, std::max(0.0f, v * (1.0f / 6) + 0.5f));
      ok = relu.data<float>()[i] == std::max(v, 0.0f) && clip.data<float>()[i] == std::min(std::max(v, 0.0f), 6.0f) &&
           hs.data<float>()[i] == v * h && less.data<bool>()[i] == (v < y.data<float>()[i]);
    }
    CHECK(ok);
  }
  SECTION("Where") {
    const Tensor cond = run("Greater", {x, Tensor::scalar<float>(0)});
    const Tensor r = run("Where", {cond, x, ch});
    bool ok = true;
    for (int64_t i = 0; i < n && ok; ++i) ok = r.data<float>()[i] == (px[i] > 0 ? px[i] : ch.data<float>()[(i / hw) % 64]);
    CHECK(ok);
  }
}

TEST_CASE("elementwise errors name the node", "[elementwise]") {
  CHECK_THROWS_WITH(run("Add", {f32({1}, {1}), vec<int32_t>({1}, {1})}), Catch::Contains("'n0'") && Catch::Contains("int32"));
  CHECK_THROWS_AS(run("Sqrt", {vec<bool>({1}, {true})}), lwc::Error);
  CHECK_THROWS_AS(run("Sum", {vec<int32_t>({1}, {1}), vec<int32_t>({1}, {1})}), lwc::Error);  // float only
}

// The row loops have an AVX2 copy (LWC_AVX2_CLONE); every float result must still be the single
// IEEE operation on the two operands, bit for bit: equal shapes (parallel above 32768 elements),
// a row broadcast and a scalar, including infinities, NaN, signed zeros and subnormals.
TEST_CASE("float Add/Sub/Mul/Div give each element the bits of the one IEEE operation", "[elementwise]") {
  std::vector<float> a, b;
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> special{inf, -inf, std::nanf(""), 0.0f, -0.0f, 1e-40f, -3e-39f, 3.4e38f, 1.0f, -7.5f};
  for (int i = 0; i < 70000; ++i) {
    a.push_back(i < 100 ? special[i % 10] : std::ldexp(static_cast<float>((int64_t(i) * 7919) % 2003) - 1001.3f, i % 60 - 30));
    b.push_back(i < 100 ? special[i / 10]
                        : std::ldexp(static_cast<float>((int64_t(i) * 104729) % 997) - 498.7f, (i * 13) % 50 - 25));
  }
  const Tensor A = f32({700, 100}, a), B = f32({700, 100}, b);
  const Tensor Brow = f32({100}, std::vector<float>(b.begin(), b.begin() + 100)), Bs = f32({}, {b[123]});
  auto same = [](float x, float y) { return std::memcmp(&x, &y, sizeof x) == 0 || (std::isnan(x) && std::isnan(y)); };
  const std::vector<std::pair<std::string, std::function<float(float, float)>>> ops{
      {"Add", [](float x, float y) { return x + y; }}, {"Sub", [](float x, float y) { return x - y; }},
      {"Mul", [](float x, float y) { return x * y; }}, {"Div", [](float x, float y) { return x / y; }}};
  for (const auto& [op, f] : ops) {
    INFO(op);
    for (const Tensor* rhs : {&B, &Brow, &Bs}) {
      const Tensor y = run(op, {A, *rhs});
      REQUIRE(y.numel() == A.numel());
      int64_t wrong = 0;
      for (int64_t i = 0; i < A.numel(); ++i) {
        const float r = rhs == &B ? b[i] : rhs == &Brow ? b[i % 100] : b[123];
        wrong += !same(y.data<float>()[i], f(a[i], r));
      }
      CHECK(wrong == 0);
    }
  }
}
