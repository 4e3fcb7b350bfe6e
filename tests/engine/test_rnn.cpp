// RNN, GRU and LSTM reference kernels (rnn.cpp): a hand-computed LSTM, layout 1 against layout 0,
// the element types, and the errors. ONNX's backend cases (forward, layout 1, sequence_lens) run in
// tests/conformance; reverse and bidirectional directions, peepholes, input_forget and the
// activation list are checked against ONNX Runtime by CTest ops_ort (scripts/gen_op_models.py).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;

namespace {

onnx::AttributeProto attrStrings(const std::string& name, const std::vector<std::string>& v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::STRINGS);
  for (const auto& s : v) a.add_strings(s);
  return a;
}

double sig(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// [a, b, c] -> [b, a, c] (layout 0 <-> 1 of X and of the states)
Tensor swap01(const Tensor& t) {
  const int64_t a = t.dim(0), b = t.dim(1), c = t.numel() / (a * b);
  Shape s = t.shape();
  std::swap(s[0], s[1]);
  Tensor r(t.dtype(), s);
  for (int64_t i = 0; i < a; ++i)
    for (int64_t j = 0; j < b; ++j)
      for (int64_t k = 0; k < c; ++k) r.data<float>()[(j * a + i) * c + k] = t.data<float>()[(i * b + j) * c + k];
  return r;
}

}  // namespace

TEST_CASE("LSTM: two steps of one unit by hand, with peepholes and an initial state", "[nn][rnn]") {
  // gates i, o, f, c: W [1, 4, 1], R [1, 4, 1], B [1, 8], P [1, 3] (i, o, f)
  const std::vector<float> w{0.5f, -0.3f, 0.8f, 0.2f}, r{0.1f, 0.4f, -0.6f, 0.7f}, wb{0.05f, -0.1f, 0.2f, 0.0f},
      rb{0.01f, 0.02f, -0.03f, 0.04f}, p{0.3f, -0.2f, 0.5f};
  const std::vector<float> xs{1.0f, -2.0f};
  std::vector<float> b(wb);
  b.insert(b.end(), rb.begin(), rb.end());
  NodeSpec s = makeSpec("LSTM",
                        {Tensor::fromVector<float>({2, 1, 1}, xs), Tensor::fromVector<float>({1, 4, 1}, w),
                         Tensor::fromVector<float>({1, 4, 1}, r), Tensor::fromVector<float>({1, 8}, b), Tensor(),
                         Tensor::fromVector<float>({1, 1, 1}, {0.25f}), Tensor::fromVector<float>({1, 1, 1}, {-0.5f}),
                         Tensor::fromVector<float>({1, 3}, p)},
                        {attrInt("hidden_size", 1)}, 14);
  s.num_outputs = 3;
  const auto out = runNode(s, true);
  double h = 0.25, c = -0.5;
  std::vector<double> ys;
  for (float x : xs) {
    auto pre = [&](int g) { return w[g] * x + r[g] * h + wb[g] + rb[g]; };
    const double i = sig(pre(0) + p[0] * c), f = sig(pre(2) + p[2] * c), cand = std::tanh(pre(3));
    c = f * c + i * cand;
    const double o = sig(pre(1) + p[1] * c);
    h = o * std::tanh(c);
    ys.push_back(h);
  }
  REQUIRE(out[0].shape() == Shape{2, 1, 1, 1});
  CHECK(out[0].data<float>()[0] == Approx(ys[0]).epsilon(1e-6));
  CHECK(out[0].data<float>()[1] == Approx(ys[1]).epsilon(1e-6));
  CHECK(out[1].data<float>()[0] == Approx(h).epsilon(1e-6));
  CHECK(out[2].data<float>()[0] == Approx(c).epsilon(1e-6));
}

TEST_CASE("RNN GRU and LSTM: layout 1 gives layout 0's outputs with batch and sequence swapped", "[nn][rnn]") {
  const int64_t seq = 4, batch = 3, in = 5, hid = 3;
  for (const std::string op : {"RNN", "GRU", "LSTM"}) {
    for (const std::string dir : {"forward", "reverse", "bidirectional"}) {
      INFO(op << " " << dir);
      const int64_t g = op == "RNN" ? 1 : op == "GRU" ? 3 : 4, d = dir == "bidirectional" ? 2 : 1;
      const Tensor x = randomFloat({seq, batch, in}, 1), w = randomFloat({d, g * hid, in}, 2), r = randomFloat({d, g * hid, hid}, 3),
                   b = randomFloat({d, 2 * g * hid}, 4), h0 = randomFloat({d, batch, hid}, 5), c0 = randomFloat({d, batch, hid}, 6);
      const Tensor lens = Tensor::fromVector<int32_t>({batch}, {4, 1, 3});
      auto make = [&](int64_t layout) {
        std::vector<Tensor> ins{layout ? swap01(x) : x, w, r, b, lens, layout ? swap01(h0) : h0};
        if (op == "LSTM") ins.push_back(layout ? swap01(c0) : c0);
        NodeSpec s = makeSpec(op, ins, {attrInt("hidden_size", hid), attrString("direction", dir), attrInt("layout", layout)}, 14);
        s.num_outputs = op == "LSTM" ? 3 : 2;
        return runNode(s, true);
      };
      const auto a = make(0), bl = make(1);
      REQUIRE(bl[0].shape() == Shape{batch, seq, d, hid});
      for (int64_t t = 0; t < seq; ++t)
        for (int64_t k = 0; k < d; ++k)
          for (int64_t n = 0; n < batch; ++n)
            for (int64_t j = 0; j < hid; ++j)
              CHECK(bl[0].data<float>()[((n * seq + t) * d + k) * hid + j] == a[0].data<float>()[((t * d + k) * batch + n) * hid + j]);
      // Past a sample's length its Y is zero (sample 1 has length 1).
      CHECK(a[0].data<float>()[((2 * d) * batch + 1) * hid] == 0.0f);
      for (size_t o = 1; o < a.size(); ++o) CHECK(swap01(a[o]).bitEqual(bl[o]));
    }
  }
}

TEST_CASE("LSTM on float64 and float16 gives the float32 outputs in that type", "[nn][rnn]") {
  const Tensor x = randomFloat({3, 2, 4}, 11), w = randomFloat({2, 12, 4}, 12), r = randomFloat({2, 12, 3}, 13);
  auto run = [&](DType t) {
    NodeSpec s = makeSpec("LSTM", {x.cast(t), w.cast(t), r.cast(t)}, {attrInt("hidden_size", 3), attrString("direction", "bidirectional")}, 14);
    s.num_outputs = 2;
    auto out = runNode(s, true);
    CHECK(out[0].dtype() == t);
    return out[0].cast(DType::Float32);
  };
  const Tensor f = run(DType::Float32), d = run(DType::Float64), h = run(DType::Float16);
  for (int64_t i = 0; i < f.numel(); ++i) {
    CHECK(d.data<float>()[i] == Approx(f.data<float>()[i]).margin(1e-6));
    CHECK(h.data<float>()[i] == Approx(f.data<float>()[i]).margin(2e-3));
  }
}

TEST_CASE("RNN GRU and LSTM errors name the node and the problem", "[nn][rnn]") {
  const Tensor x = randomFloat({3, 2, 4}, 1), w = randomFloat({1, 4, 4}, 2), r = randomFloat({1, 4, 1}, 3);
  auto lstm = [&](std::vector<onnx::AttributeProto> attrs, std::vector<Tensor> extra = {}) {
    std::vector<Tensor> ins{x, w, r};
    ins.insert(ins.end(), extra.begin(), extra.end());
    return makeSpec("LSTM", ins, std::move(attrs), 14);
  };
  CHECK(nodeError(lstm({attrInt("hidden_size", 1)})) == "(no error)");
  CHECK_THAT(nodeError(lstm({attrInt("hidden_size", 1), attrFloat("clip", 3.0f)})), Contains("clip attribute is not supported"));
  CHECK_THAT(nodeError(lstm({attrInt("hidden_size", 1), attrStrings("activations", {"Sigmoid", "Tanh"})})),
             Contains("activations lists 2 functions; expected 3"));
  CHECK_THAT(nodeError(lstm({attrInt("hidden_size", 1), attrStrings("activations", {"Sigmoid", "Tanh", "Swish"})})),
             Contains("activation 'Swish' is not one of the spec's"));
  CHECK_THAT(nodeError(lstm({attrInt("hidden_size", 2)})), Contains("W has shape [1,4,4], expected [1,8,4]"));
  CHECK_THAT(nodeError(lstm({attrInt("hidden_size", 1)}, {Tensor(), Tensor::fromVector<int32_t>({2}, {3, 4})})),
             Contains("sequence_lens[1] is 4; expected 0 to 3"));
  CHECK_THAT(nodeError(lstm({attrInt("hidden_size", 1), attrString("direction", "both")})), Contains("direction 'both'"));
  CHECK_THAT(nodeError(lstm({attrInt("hidden_size", 1)}, {Tensor(), Tensor(), randomFloat({1, 3, 1}, 4)})),
             Contains("initial_h has shape [1,3,1], expected [1,2,1]"));
}

TEST_CASE("RNN GRU and LSTM in float32 with sgemm: the reference's outputs within float rounding, the same bits on 1-3 threads",
          "[nn][rnn]") {
  const int64_t seq = 7, batch = 5, in = 9, hid = 70;  // hid past one 64-row block of the sgemm
  for (const std::string op : {"RNN", "GRU", "LSTM"}) {
    for (const std::string dir : {"forward", "reverse", "bidirectional"}) {
      for (int64_t lbr : {0, 1}) {
        if (lbr && op != "GRU") continue;
        INFO(op << " " << dir << " linear_before_reset " << lbr);
        const int64_t g = op == "RNN" ? 1 : op == "GRU" ? 3 : 4, d = dir == "bidirectional" ? 2 : 1;
        std::vector<Tensor> ins{randomFloat({seq, batch, in}, 1), randomFloat({d, g * hid, in}, 2, -0.3f, 0.3f),
                                randomFloat({d, g * hid, hid}, 3, -0.2f, 0.2f), randomFloat({d, 2 * g * hid}, 4),
                                Tensor::fromVector<int32_t>({batch}, {7, 1, 0, 4, 6}), randomFloat({d, batch, hid}, 5)};
        if (op == "LSTM") {
          ins.push_back(randomFloat({d, batch, hid}, 6));
          ins.push_back(randomFloat({d, 3 * hid}, 7));
        }
        std::vector<onnx::AttributeProto> attrs{attrInt("hidden_size", hid), attrString("direction", dir)};
        if (op == "GRU") attrs.push_back(attrInt("linear_before_reset", lbr));
        NodeSpec s = makeSpec(op, ins, attrs, 14);
        s.num_outputs = op == "LSTM" ? 3 : 2;
        const auto want = runNode(s, true);
        std::vector<Tensor> first;
        for (int threads : {1, 2, 3}) {
          engine::configureThreads(threads);
          const auto got = runNode(s, false);
          REQUIRE(got.size() == want.size());
          for (size_t o = 0; o < got.size(); ++o) {
            REQUIRE(got[o].shape() == want[o].shape());
            float worst = 0;
            for (int64_t i = 0; i < got[o].numel(); ++i)
              worst = std::max(worst, std::fabs(got[o].data<float>()[i] - want[o].data<float>()[i]));
            CHECK(worst < 1e-5f);
            if (threads == 1) first.push_back(got[o]);
            else CHECK(got[o].bitEqual(first[o]));
          }
        }
        engine::configureThreads(0);
        engine::Session fast(singleNodeModel(s));
        fast.runOrdered(feedsOf(s));
        CHECK(implOf(fast, op) == "dnnl");
      }
    }
  }
}

TEST_CASE("LSTM and GRU in float32 saturate like the reference on huge inputs and carry NaN", "[nn][rnn]") {
  for (const std::string op : {"GRU", "LSTM"}) {
    INFO(op);
    const int64_t g = op == "GRU" ? 3 : 4, hid = 20;
    Tensor x = randomFloat({3, 2, 4}, 21, -1.0f, 1.0f);
    float* xv = x.data<float>();
    xv[0] = 1e4f;
    xv[1] = -1e4f;
    xv[2] = std::numeric_limits<float>::infinity();
    xv[5] = -std::numeric_limits<float>::infinity();
    xv[4 * 2 + 6] = std::numeric_limits<float>::quiet_NaN();  // step 1, sample 1
    NodeSpec s = makeSpec(op, {x, randomFloat({1, g * hid, 4}, 22, -3.0f, 3.0f), randomFloat({1, g * hid, hid}, 23)},
                          {attrInt("hidden_size", hid)}, 14);
    s.num_outputs = 2;
    const auto want = runNode(s, true), got = runNode(s, false);
    int nans = 0;
    for (int64_t i = 0; i < want[0].numel(); ++i) {
      const float a = want[0].data<float>()[i], b = got[0].data<float>()[i];
      if (std::isnan(a)) {
        ++nans;
        CHECK(std::isnan(b));
      } else {
        CHECK(std::fabs(a - b) < 1e-5f);
      }
    }
    CHECK(nans > 0);  // sample 1 from step 1 on
    CHECK(std::isnan(got[1].data<float>()[hid]));
    CHECK_FALSE(std::isnan(got[1].data<float>()[0]));  // sample 0 never met the NaN
  }
}
