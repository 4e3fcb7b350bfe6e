// oneDNN fast paths must match the reference kernels (the oracle) on seeded random inputs.
#include <catch2/catch.hpp>
#include <omp.h>

#include <cstring>
#include <functional>

#include "engine/kernels/dnnl_common.h"
#include "lwc/model_io.h"
#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {
struct ConvCase {
  const char* name;
  Shape x, w;
  int64_t group;
  std::vector<int64_t> strides, pads, dilations;
  std::string auto_pad;
  bool bias;
};

NodeSpec convSpec(const ConvCase& c, uint32_t seed) {
  NodeSpec s;
  s.op_type = "Conv";
  s.opset = 13;
  s.inputs = {randomFloat(c.x, seed), randomFloat(c.w, seed + 1)};
  if (c.bias) s.inputs.push_back(randomFloat({c.w[0]}, seed + 2));
  s.constant_inputs = {1, 2};
  s.attrs.push_back(attrInt("group", c.group));
  s.attrs.push_back(attrInts("strides", c.strides));
  s.attrs.push_back(attrInts("dilations", c.dilations));
  if (c.auto_pad.empty()) s.attrs.push_back(attrInts("pads", c.pads));
  else s.attrs.push_back(attrString("auto_pad", c.auto_pad));
  return s;
}

/// A dense layer with constant weights w: Gemm for a 2-D input a (with a constant bias of w[1]
/// values when `bias`), MatMul otherwise (no bias); inputs seeded from `seed`.
NodeSpec denseSpec(const Shape& a, const Shape& w, bool bias, uint32_t seed) {
  NodeSpec s;
  s.op_type = a.size() == 2 ? "Gemm" : "MatMul";
  s.opset = 13;
  s.inputs = {randomFloat(a, seed), randomFloat(w, seed + 1)};
  const bool with_bias = bias && s.op_type == "Gemm";
  if (with_bias) s.inputs.push_back(randomFloat({w[1]}, seed + 2));
  s.constant_inputs = with_bias ? std::vector<size_t>{1, 2} : std::vector<size_t>{1};
  return s;
}

/// Runs `s` on 1, 2 and 3 threads (the process default restored after), requires oneDNN's kernel for
/// `op` under each count, checks that the three results have the same bits and returns the first.
Tensor sameBitsOnThreads(const NodeSpec& s, const std::string& op) {
  std::vector<Tensor> ys;
  for (int threads : {1, 2, 3}) {
    engine::configureThreads(threads);
    REQUIRE(implOf(engine::Session(singleNodeModel(s)), op) == "dnnl");
    ys.push_back(runNode(s)[0]);
  }
  engine::configureThreads(0);
  CHECK(ys[0].bitEqual(ys[1]));
  CHECK(ys[0].bitEqual(ys[2]));
  return ys[0];
}
}  // namespace

TEST_CASE("dnnl Conv matches the reference Conv", "[dnnl][nn]") {
  const std::vector<ConvCase> cases = {
      {"3x3 pad 1", {2, 8, 12, 12}, {16, 8, 3, 3}, 1, {1, 1}, {1, 1, 1, 1}, {1, 1}, "", true},
      {"stride 2 asymmetric pads", {1, 3, 15, 13}, {8, 3, 3, 3}, 1, {2, 2}, {0, 1, 1, 0}, {1, 1}, "", false},
      {"depthwise", {2, 16, 10, 10}, {16, 1, 3, 3}, 16, {1, 1}, {1, 1, 1, 1}, {1, 1}, "", true},
      {"grouped", {1, 8, 9, 9}, {12, 2, 3, 3}, 4, {1, 1}, {0, 0, 0, 0}, {1, 1}, "", true},
      {"dilated", {1, 4, 16, 16}, {4, 4, 3, 3}, 1, {1, 1}, {2, 2, 2, 2}, {2, 2}, "", true},
      {"1x1", {3, 32, 7, 7}, {24, 32, 1, 1}, 1, {1, 1}, {0, 0, 0, 0}, {1, 1}, "", true},
      {"SAME_UPPER stride 2", {1, 4, 11, 11}, {4, 4, 3, 3}, 1, {2, 2}, {}, {1, 1}, "SAME_UPPER", false},
      {"SAME_LOWER", {1, 4, 10, 10}, {4, 4, 4, 4}, 1, {1, 1}, {}, {1, 1}, "SAME_LOWER", true},
      {"5x5 first layer", {4, 1, 28, 28}, {6, 1, 5, 5}, 1, {1, 1}, {2, 2, 2, 2}, {1, 1}, "", true},
  };
  uint32_t seed = 1;
  for (const auto& c : cases) {
    INFO(c.name);
    const NodeSpec s = convSpec(c, seed += 10);
    Model m = singleNodeModel(s);
    engine::Session fast(m);
    REQUIRE(implOf(fast, "Conv") == "dnnl");
    const auto ref = runNode(s, /*reference_only=*/true);
    const auto got = runNode(s, false);
    CHECK(compareTensors(got[0], ref[0], 1e-4, 1e-5).empty());
  }
}

TEST_CASE("dnnl Conv handles a batch change between runs", "[dnnl][nn]") {
  NodeSpec s = convSpec({"", {1, 4, 8, 8}, {8, 4, 3, 3}, 1, {1, 1}, {1, 1, 1, 1}, {1, 1}, "", true}, 7);
  Model m = singleNodeModel(s);
  m.graph.inputs[0].shape->at(0) = Dim{-1, "N"};
  engine::Session fast(m);
  engine::Session ref(m, engine::SessionOptions{0, true});
  for (int64_t n : {1, 5, 2}) {
    engine::TensorMap feeds{{"in0", randomFloat({n, 4, 8, 8}, static_cast<uint32_t>(n))}};
    auto a = fast.runOrdered(feeds);
    auto b = ref.runOrdered(feeds);
    CHECK(a[0].shape() == Shape{n, 8, 8, 8});
    CHECK(compareTensors(a[0], b[0], 1e-4, 1e-5).empty());
  }
}

TEST_CASE("dnnl Gemm and MatMul match the reference", "[dnnl][nn]") {
  SECTION("Gemm transB with bias (a Linear layer)") {
    NodeSpec s;
    s.op_type = "Gemm";
    s.opset = 13;
    s.inputs = {randomFloat({5, 33}, 1), randomFloat({17, 33}, 2), randomFloat({17}, 3)};
    s.constant_inputs = {1, 2};
    s.attrs = {attrInt("transB", 1)};
    REQUIRE(implOf(engine::Session(singleNodeModel(s)), s.op_type) == "dnnl");
    CHECK(compareTensors(runNode(s)[0], runNode(s, true)[0], 1e-4, 1e-5).empty());
  }
  SECTION("Gemm without bias, no transpose") {
    NodeSpec s;
    s.op_type = "Gemm";
    s.inputs = {randomFloat({3, 8}, 4), randomFloat({8, 6}, 5)};
    s.constant_inputs = {1};
    CHECK(compareTensors(runNode(s)[0], runNode(s, true)[0], 1e-4, 1e-5).empty());
  }
  SECTION("Gemm with alpha falls back to the reference") {
    NodeSpec s;
    s.op_type = "Gemm";
    s.inputs = {randomFloat({3, 8}, 4), randomFloat({8, 6}, 5)};
    s.constant_inputs = {1};
    s.attrs = {attrFloat("alpha", 0.5f)};
    CHECK(implOf(engine::Session(singleNodeModel(s)), "Gemm") == "ref");
  }
  SECTION("MatMul rank 3 activations x constant 2-D weights") {
    NodeSpec s;
    s.op_type = "MatMul";
    s.inputs = {randomFloat({2, 16, 49}, 6), randomFloat({49, 64}, 7)};
    s.constant_inputs = {1};
    REQUIRE(implOf(engine::Session(singleNodeModel(s)), s.op_type) == "dnnl");
    CHECK(compareTensors(runNode(s)[0], runNode(s, true)[0], 1e-4, 1e-5).empty());
  }
}

TEST_CASE("dnnl Gemm and MatMul give the same bits on any number of threads", "[dnnl][nn]") {
  // Shapes for which oneDNN's multi-threaded sgemm splits the K sum between threads (few outputs,
  // long sums: mnv2_fmnist's 1280 -> 10 classifier at batch 32), and larger ones cut into blocks.
  struct Case {
    const char* name;
    Shape a, w;
    bool bias;
  };
  const std::vector<Case> cases = {{"classifier, batch 32", {32, 1280}, {1280, 10}, true},
                                   {"one row, long sum", {1, 4096}, {4096, 3}, false},
                                   {"3-D input, several blocks", {3, 70, 96}, {96, 300}, false}};
  uint32_t seed = 40;
  for (const auto& c : cases) {
    INFO(c.name);
    const NodeSpec s = denseSpec(c.a, c.w, c.bias, seed);
    seed += 10;
    CHECK(compareTensors(sameBitsOnThreads(s, s.op_type), runNode(s, true)[0], 1e-4, 1e-5).empty());
  }
}

TEST_CASE("weights of 2^19 elements or more are reordered once and multiplied in fixed blocks, with the same bits on 1, 2 and 3 threads", "[dnnl][nn]") {
  // PackedWeights: blocks of 128 rows x 384 columns. Rows and columns that do not fill a block
  // (300 = 128 + 128 + 44 rows, 1100 = 384 + 384 + 332 columns), a bias added per block, one
  // block at batch 1 (a row of a classifier), and each call's own tensors through a reused session.
  struct Case {
    const char* name;
    Shape a, w;
    bool bias;
  };
  const std::vector<Case> cases = {{"3-D input, remainder rows and columns", {2, 150, 512}, {512, 1100}, false},
                                   {"Gemm with bias", {200, 1024}, {1024, 520}, true},
                                   {"one row (a 1000-class classifier at batch 1)", {1, 1280}, {1280, 1000}, true}};
  uint32_t seed = 900;
  for (const auto& c : cases) {
    INFO(c.name);
    const NodeSpec s = denseSpec(c.a, c.w, c.bias, seed);
    seed += 10;
    CHECK(compareTensors(sameBitsOnThreads(s, s.op_type), runNode(s, true)[0], 1e-4, 1e-4).empty());
    const ProfiledRun r = runProfiledOnThreads(s, s.op_type, 2);
    engine::configureThreads(0);
    INFO(r.prof.primitive);
    CHECK(r.prof.primitive.find("weights reordered") != std::string::npos);
    // A symbolic first dim, so that a reused session meets other row counts (other remainder blocks).
    Model m = singleNodeModel(s);
    for (auto& v : m.graph.inputs)
      if (v.name == m.graph.nodes[0].inputs[0] && v.shape) (*v.shape)[0] = Dim{-1, "N"};
    for (auto& v : m.graph.outputs)
      if (v.shape) (*v.shape)[0] = Dim{-1, "N"};
    Shape other = c.a;
    other[0] += 1;
    const std::vector<Tensor> xs = {randomFloat(c.a, seed + 3), randomFloat(other, seed + 4), randomFloat(c.a, seed + 5)};
    CHECK(runsDifferingFromFresh(m, xs).empty());
  }
}

TEST_CASE("fp32 oneDNN products under 2^20 multiply-adds run their blocks on the calling thread, with the bits of the parallel blocks", "[dnnl][nn]") {
  // sgemmFixedBlocks with threads = 1 takes the blocks in turn; with 2 or 3 they go to a parallel
  // loop. Several blocks (3 x 3 of 64 x 128) with and without bias: the same bits either way.
  const int64_t m = 150, k = 70, n = 300;
  const Tensor a = randomFloat({m, k}, 800), b = randomFloat({k, n}, 801), bias = randomFloat({n}, 802);
  for (const float* bp : {static_cast<const float*>(nullptr), bias.data<float>()}) {
    INFO((bp ? "with bias" : "without bias"));
    std::vector<Tensor> cs;
    for (int threads : {1, 2, 3}) {
      Tensor c(DType::Float32, {m, n});
      REQUIRE(engine::dnnl_util::sgemmFixedBlocks('N', m, n, k, a.data<float>(), k, b.data<float>(), n, c.data<float>(), n,
                                                  64, 128, threads, bp));
      cs.push_back(c);
    }
    CHECK(cs[0].bitEqual(cs[1]));
    CHECK(cs[0].bitEqual(cs[2]));
  }
  // MatMul nodes under and over the limit: the profile names the one-thread calls; thread count restored.
  struct Case {
    const char* name;
    Shape a, w;
    bool small;
  };
  // A classifier head at batch 1 (one row, 576 x 1024 weights: 2.4 MB read for 590 000
  // multiply-adds) is bound by reading its weights and takes both threads (kOneThreadWeightElements).
  const std::vector<Case> cases = {{"50 x 64 x 192 (614 400, two blocks)", {1, 50, 64}, {64, 192}, true},
                                   {"210 x 96 x 300 (6 M)", {3, 70, 96}, {96, 300}, false},
                                   {"1 x 511 x 512 (261 632 weights, under 2^18)", {1, 511}, {511, 512}, true},
                                   {"1 x 576 x 1024 (589 824 weights)", {1, 576}, {576, 1024}, false}};
  uint32_t seed = 810;
  for (const auto& c : cases) {
    INFO(c.name);
    NodeSpec s;
    s.op_type = "MatMul";
    s.opset = 13;
    s.inputs = {randomFloat(c.a, seed), randomFloat(c.w, seed + 1)};
    s.constant_inputs = {1};
    seed += 10;
    std::vector<Tensor> ys;
    for (int threads : {2, 1}) {
      INFO("threads " << threads);
      const ProfiledRun r = runProfiledOnThreads(s, "MatMul", threads);
      INFO(r.prof.impl << " " << r.prof.primitive);
      REQUIRE(r.prof.impl == "dnnl");
      CHECK(r.prof.primitive.ends_with(", 1 thread") == c.small);
      ys.push_back(r.y);
    }
    engine::configureThreads(0);
    CHECK(ys[0].bitEqual(ys[1]));
    CHECK(compareTensors(ys[0], runNode(s, true)[0], 1e-4, 1e-4).empty());
  }
}

TEST_CASE("dnnl Conv gives the same bits on 1, 2 and 3 threads", "[dnnl][nn]") {
  const std::vector<ConvCase> cases = {
      {"small 1x1", {1, 16, 4, 4}, {32, 16, 1, 1}, 1, {1, 1}, {0, 0, 0, 0}, {1, 1}, "", true},
      {"3x3, batch 2", {2, 32, 16, 16}, {32, 32, 3, 3}, 1, {1, 1}, {1, 1, 1, 1}, {1, 1}, "", true},
      {"depthwise stride 2", {1, 48, 15, 15}, {48, 1, 3, 3}, 48, {2, 2}, {1, 1, 1, 1}, {1, 1}, "", true},
  };
  uint32_t seed = 70;
  for (const auto& c : cases) {
    INFO(c.name);
    const NodeSpec s = convSpec(c, seed += 10);
    CHECK(compareTensors(sameBitsOnThreads(s, "Conv"), runNode(s, true)[0], 1e-4, 1e-5).empty());
  }
}

TEST_CASE("fp32 oneDNN convolutions under 2^20 multiply-adds (depthwise 2^18) run on the calling thread, larger ones on all, with the same bits", "[dnnl][nn]") {
  // dnnl_common.h, oneThreadCall: such a primitive is made and run on one thread, and the profile
  // appends ", 1 thread" to its implementation; the process's thread count is restored after.
  struct Case {
    ConvCase c;
    bool small;
  };
  const std::vector<Case> cases = {
      {{"1x1 16 -> 32 on 8x8 (32 768 multiply-adds)", {1, 16, 8, 8}, {32, 16, 1, 1}, 1, {1, 1}, {0, 0, 0, 0}, {1, 1}, "", true}, true},
      {{"depthwise 3x3 96 channels on 14x14 (169 344)", {1, 96, 14, 14}, {96, 1, 3, 3}, 96, {1, 1}, {1, 1, 1, 1}, {1, 1}, "", false}, true},
      {{"depthwise 3x3 192 channels on 14x14 (338 688)", {1, 192, 14, 14}, {192, 1, 3, 3}, 192, {1, 1}, {1, 1, 1, 1}, {1, 1}, "", false}, false},
      {{"1x1 64 -> 64 on 14x14 (802 816)", {1, 64, 14, 14}, {64, 64, 1, 1}, 1, {1, 1}, {0, 0, 0, 0}, {1, 1}, "", true}, true},
      {{"1x1 64 -> 64 on 16x16 (1 048 576, the limit)", {1, 64, 16, 16}, {64, 64, 1, 1}, 1, {1, 1}, {0, 0, 0, 0}, {1, 1}, "", true}, false},
      {{"3x3 32 -> 32, batch 4 on 14x14 (7.2 M)", {4, 32, 14, 14}, {32, 32, 3, 3}, 1, {1, 1}, {1, 1, 1, 1}, {1, 1}, "", true}, false},
  };
  uint32_t seed = 700;
  for (const auto& [c, small] : cases) {
    INFO(c.name);
    const NodeSpec s = convSpec(c, seed += 10);
    const Tensor want = runNode(s, /*reference_only=*/true)[0];
    std::vector<Tensor> got;
    for (int threads : {2, 1, 3}) {
      INFO("threads " << threads);
      const ProfiledRun r = runProfiledOnThreads(s, "Conv", threads);
      got.push_back(r.y);
      CHECK(compareTensors(r.y, want, 1e-4, 1e-5).empty());
      INFO(r.prof.impl << " " << r.prof.primitive);
      REQUIRE(r.prof.impl == "dnnl");
      CHECK(r.prof.primitive.ends_with(", 1 thread") == small);
    }
    engine::configureThreads(0);
    CHECK(got[0].bitEqual(got[1]));
    CHECK(got[0].bitEqual(got[2]));
  }
}

TEST_CASE("dnnl Softmax matches the reference and gives the same bits on 1, 2 and 3 threads", "[dnnl][nn]") {
  struct Case {
    const char* name;
    Shape x;
    int64_t axis;
    int64_t opset;
  };
  const std::vector<Case> cases = {
      {"attention rows, last axis", {8, 4, 16, 16}, -1, 13},
      {"many attention rows (above the one-thread size)", {16, 4, 32, 32}, -1, 13},
      {"middle axis (strided rows)", {3, 7, 5}, 1, 13},
      {"first axis", {6, 10}, 0, 13},
      {"opset 11: trailing dims from axis 1 as one row", {4, 3, 5}, 1, 11},
      {"long rows with large values", {2, 1000}, -1, 13},
  };
  uint32_t seed = 90;
  for (const auto& c : cases) {
    INFO(c.name);
    NodeSpec s = makeSpec("Softmax", {randomFloat(c.x, seed += 3, -30.0f, 30.0f)}, {attrInt("axis", c.axis)}, c.opset);
    CHECK(compareTensors(sameBitsOnThreads(s, "Softmax"), runNode(s, true)[0], 1e-5, 1e-6).empty());
  }
  SECTION("float64 takes the reference kernel") {
    NodeSpec s = makeSpec("Softmax", {randomFloat({3, 4}, 5).cast(DType::Float64)}, {}, 13);
    CHECK(runNode(s)[0].bitEqual(runNode(s, true)[0]));
  }
  SECTION("a row holding NaN or +inf is NaN throughout, as in the reference kernel; -inf gives 0") {
    // oneDNN left NaN at that element and 0 elsewhere.
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    for (const int64_t axis : {int64_t{1}, int64_t{0}}) {
      INFO("axis " << axis);
      const Tensor x = Tensor::fromVector<float>({3, 3}, {inf, 1, 2, 0, nan, 1, -inf, 0, 0});
      NodeSpec s = makeSpec("Softmax", {x}, {attrInt("axis", axis)}, 13);
      const Tensor fast = runNode(s)[0], ref = runNode(s, true)[0];
      for (int64_t i = 0; i < 9; ++i) {
        INFO(i);
        CHECK(std::isnan(fast.data<float>()[i]) == std::isnan(ref.data<float>()[i]));
        if (!std::isnan(ref.data<float>()[i])) CHECK(fast.data<float>()[i] == Approx(ref.data<float>()[i]).margin(1e-6));
      }
    }
    // Large enough to be searched on all threads: one NaN and one +inf deep inside, each row
    // NaN throughout (and only that row).
    Tensor big = randomFloat({3, 4, 97, 101}, 77, -3.0f, 3.0f);
    big.data<float>()[2 * 4 * 97 * 101 + 3 * 97 * 101 + 50 * 101 + 7] = nan;
    big.data<float>()[1 * 4 * 97 * 101 + 60 * 101 + 100] = inf;
    for (int threads : {1, 2, 3}) {
      engine::configureThreads(threads);
      INFO("threads " << threads);
      const Tensor fast = runNode(makeSpec("Softmax", {big}, {attrInt("axis", -1)}, 13))[0];
      int64_t nan_rows = 0;
      for (int64_t r = 0; r < big.numel() / 101; ++r) {
        int64_t nans = 0;
        for (int64_t j = 0; j < 101; ++j) nans += std::isnan(fast.data<float>()[r * 101 + j]);
        CHECK((nans == 0 || nans == 101));
        nan_rows += nans == 101;
      }
      CHECK(nan_rows == 2);
    }
    engine::configureThreads(0);
  }
}

TEST_CASE("dnnl LayerNormalization matches the reference", "[dnnl][nn]") {
  struct Case {
    const char* name;
    Shape x, scale;
    int64_t axis;
    bool bias;
  };
  const std::vector<Case> cases = {
      {"tokens, last axis", {8, 16, 64}, {64}, -1, true},
      {"many tokens (above the one-thread size)", {64, 16, 64}, {64}, -1, true},
      {"two trailing dims", {4, 6, 5}, {6, 5}, 1, true},
      {"no bias", {5, 32}, {32}, -1, false},
      {"normalized shape [1, C], Scale [C]", {3, 1, 8}, {8}, -2, true},
  };
  uint32_t seed = 120;
  for (const auto& c : cases) {
    INFO(c.name);
    NodeSpec s = makeSpec("LayerNormalization", {randomFloat(c.x, seed, -3.0f, 5.0f), randomFloat(c.scale, seed + 1, 0.5f, 1.5f)},
                          {attrInt("axis", c.axis), attrFloat("epsilon", 1e-5f)}, 17);
    if (c.bias) s.inputs.push_back(randomFloat(c.scale, seed + 2));
    s.constant_inputs = c.bias ? std::vector<size_t>{1, 2} : std::vector<size_t>{1};
    seed += 10;
    CHECK(compareTensors(sameBitsOnThreads(s, "LayerNormalization"), runNode(s, true)[0], 1e-5, 1e-5).empty());
  }
  SECTION("a Scale that broadcasts, or Mean/InvStdDev outputs, take the reference kernel") {
    NodeSpec b = makeSpec("LayerNormalization", {randomFloat({2, 3, 4}, 1), randomFloat({1}, 2)}, {attrInt("axis", 1)}, 17);
    b.constant_inputs = {1};
    CHECK(runNode(b)[0].bitEqual(runNode(b, true)[0]));
    NodeSpec st = makeSpec("LayerNormalization", {randomFloat({2, 8}, 3), randomFloat({8}, 4)}, {}, 17);
    st.constant_inputs = {1};
    st.num_outputs = 3;
    CHECK(implOf(engine::Session(singleNodeModel(st)), "LayerNormalization") == "ref");
  }
}

TEST_CASE("small oneDNN normalizations run on one thread with the bits of a multi-threaded run", "[dnnl][nn]") {
  // Below dnnl_util::kSmallPrimitiveElements the kernels hold OpenMP to one thread around the
  // primitive (SingleThreadIf); rows of a small input must get the bits they get in a large one.
  SECTION("the guard holds OpenMP to one thread while it lives, and only when asked") {
    engine::configureThreads(2);
    {
      const engine::dnnl_util::SingleThreadIf one(true);
      CHECK(omp_get_max_threads() == 1);
    }
    CHECK(omp_get_max_threads() == 2);
    {
      const engine::dnnl_util::SingleThreadIf none(false);
      CHECK(omp_get_max_threads() == 2);
    }
    engine::configureThreads(0);
  }
  const int64_t rows_small = 8, rows_large = 64, row = 16 * 64;
  REQUIRE(rows_small * row < engine::dnnl_util::kSmallPrimitiveElements);
  REQUIRE(rows_large * row >= engine::dnnl_util::kSmallPrimitiveElements);
  const Tensor large = randomFloat({rows_large, 16, 64}, 300, -3.0f, 5.0f);
  Tensor small(DType::Float32, {rows_small, 16, 64});
  std::memcpy(small.raw(), large.raw(), static_cast<size_t>(rows_small * row) * sizeof(float));
  const Tensor scale = randomFloat({64}, 301, 0.5f, 1.5f), bias = randomFloat({64}, 302);
  auto layerNorm = [&](const Tensor& x) {
    NodeSpec s = makeSpec("LayerNormalization", {x, scale, bias}, {attrInt("axis", -1), attrFloat("epsilon", 1e-5f)}, 17);
    s.constant_inputs = {1, 2};
    return s;
  };
  auto softmax = [](const Tensor& x) { return makeSpec("Softmax", {x}, {attrInt("axis", -1)}, 13); };
  for (int threads : {2, 3}) {
    INFO("threads " << threads);
    engine::configureThreads(threads);
    for (const auto& [op, spec] : {std::pair<std::string, std::function<NodeSpec(const Tensor&)>>{"LayerNormalization", layerNorm},
                                   {"Softmax", softmax}}) {
      INFO(op);
      REQUIRE(implOf(engine::Session(singleNodeModel(spec(small))), op) == "dnnl");
      const Tensor ys = runNode(spec(small))[0], yl = runNode(spec(large))[0];
      CHECK(std::memcmp(ys.raw(), yl.raw(), static_cast<size_t>(rows_small * row) * sizeof(float)) == 0);
    }
  }
  engine::configureThreads(0);
}

// A pointwise convolution of NHWC data runs as one matrix product over every pixel of the batch
// (DnnlConv folds the batch into the pixels): each image must still get the bits it gets alone.
TEST_CASE("dnnl pointwise Conv gives each image of a batch the bits it gets alone", "[dnnl][nn]") {
  const std::vector<ConvCase> cases = {
      {"1x1 pixels (a classifier head)", {5, 32, 1, 1}, {64, 32, 1, 1}, 1, {1, 1}, {0, 0, 0, 0}, {1, 1}, "", true},
      {"2x2 pixels", {4, 48, 2, 2}, {96, 48, 1, 1}, 1, {1, 1}, {0, 0, 0, 0}, {1, 1}, "", true},
      {"7x7 pixels, odd channels, no bias", {3, 33, 7, 7}, {17, 33, 1, 1}, 1, {1, 1}, {0, 0, 0, 0}, {1, 1}, "", false},
  };
  uint32_t seed = 300;
  for (const auto& c : cases) {
    INFO(c.name);
    NodeSpec s = convSpec(c, seed += 10);
    Model m = singleNodeModel(s);
    m.graph.inputs[0].shape->at(0) = Dim{-1, "N"};
    engine::Session fast(m);
    REQUIRE(implOf(fast, "Conv") == "dnnl");
    CHECK(imagesDifferingFromBatch(fast, s.inputs[0]).empty());
    const Tensor y = fast.runOrdered({{"in0", s.inputs[0]}}).at(0);
    CHECK(compareTensors(y, runNode(s, true)[0], 1e-4, 1e-5).empty());
  }
}

// The kernels keep a oneDNN primitive and its memory objects per input shape and re-point the
// memory at each call's tensors: a session reused on other inputs and shapes must give, byte for
// byte, what a fresh session gives on each.
TEST_CASE("oneDNN kernels reused across calls read and write each call's tensors", "[dnnl][nn]") {
  auto dynamicFirstDim = [](const NodeSpec& s) {
    Model m = singleNodeModel(s);
    m.graph.inputs[0].shape->at(0) = Dim{-1, "N"};
    return m;
  };
  SECTION("LayerNormalization, below and above the one-thread size") {
    NodeSpec s = makeSpec("LayerNormalization", {randomFloat({2, 16, 64}, 1), randomFloat({64}, 2, 0.5f, 1.5f), randomFloat({64}, 3)},
                          {attrInt("axis", -1), attrFloat("epsilon", 1e-5f)}, 17);
    s.constant_inputs = {1, 2};
    const Model m = dynamicFirstDim(s);
    CHECK(implOf(engine::Session(m), "LayerNormalization") == "dnnl");
    const Tensor a = randomFloat({2, 16, 64}, 4), b = randomFloat({2, 16, 64}, 5), c = randomFloat({32, 16, 64}, 6);
    CHECK(runsDifferingFromFresh(m, {a, b, c, a, b}).empty());
  }
  SECTION("Softmax") {
    const Model m = dynamicFirstDim(makeSpec("Softmax", {randomFloat({1, 4, 16, 16}, 7)}, {attrInt("axis", -1)}, 13));
    CHECK(implOf(engine::Session(m), "Softmax") == "dnnl");
    const Tensor a = randomFloat({1, 4, 16, 16}, 8, -5.0f, 5.0f), b = randomFloat({1, 4, 16, 16}, 9, -5.0f, 5.0f),
                 c = randomFloat({3, 4, 16, 16}, 10, -5.0f, 5.0f);
    CHECK(runsDifferingFromFresh(m, {a, b, c, a, b}).empty());
  }
  SECTION("max and average pooling in the NHWC chain") {
    // (The pools read the convolution's output, a session buffer that may come back at the same
    // address on every call: this section checks the results more than the re-pointing.)
    Model m = parseModelText(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8, 8, 8] x) => (float[N, 16, 4, 4] y, float[N, 16, 4, 4] z) {
  c = Conv <pads = [1, 1, 1, 1]> (x, w, b)
  r = Relu (c)
  y = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (r)
  z = AveragePool <kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]> (r)
})",
                             LoadOptions{false});
    m.graph.initializers.set("w", randomFloat({16, 8, 3, 3}, 11));
    m.graph.initializers.set("b", randomFloat({16}, 12));
    validateGraph(m.graph);
    CHECK(implOf(engine::Session(m), "PoolNhwc") == "dnnl");
    const Tensor a = randomFloat({2, 8, 8, 8}, 13), b = randomFloat({2, 8, 8, 8}, 14), c = randomFloat({1, 8, 8, 8}, 15);
    CHECK(runsDifferingFromFresh(m, {a, b, c, a}).empty());
  }
}

TEST_CASE("a MatMul of two activations takes oneDNN's sgemm per product from 2^18 multiply-adds, with the same bits on 1, 2 and 3 threads", "[dnnl][nn]") {
  // Each product on one thread: the bits do not depend on the thread count, and the count is the
  // caller's again after the call (runProfiledOnThreads checks).
  auto check = [](const NodeSpec& s, const std::string& primitive) {
    std::vector<Tensor> ys;
    for (int threads : {1, 2, 3}) {
      const ProfiledRun r = runProfiledOnThreads(s, "MatMul", threads);
      CHECK(r.prof.impl == "dnnl");
      CHECK(r.prof.primitive == primitive);
      ys.push_back(r.y);
    }
    engine::configureThreads(0);
    CHECK(ys[0].bitEqual(ys[1]));
    CHECK(ys[0].bitEqual(ys[2]));
    return ys[0];
  };
  auto matMul = [](const Shape& a, const Shape& b, uint32_t seed) {
    NodeSpec s;
    s.op_type = "MatMul";
    s.opset = 13;
    s.inputs = {randomFloat(a, seed), randomFloat(b, seed + 1)};
    return s;
  };
  SECTION("vision-transformer-sized heads: 70 x 64 x 70 per product") {
    const NodeSpec s = matMul({2, 3, 70, 64}, {2, 3, 64, 70}, 1);
    const Tensor y = check(s, "sgemm per product, 1 thread each");
    CHECK(compareTensors(y, runNode(s, true)[0], 1e-4, 1e-5).empty());
  }
  SECTION("small heads stay on the reference loop, bit for bit") {
    const NodeSpec s = matMul({2, 4, 16, 16}, {2, 4, 16, 16}, 3);
    const Tensor y = check(s, "");
    CHECK(y.bitEqual(runNode(s, true)[0]));
  }
}

TEST_CASE("NHWC max pooling with dilation 1 runs separably (rows, then columns) with the reference's values on float, uint8 and int8", "[dnnl][nn]") {
  // lwc.internal.PoolNhwc mode=max: maxPoolNhwcSeparable (profile "lwc_maxpool_separable") where
  // every window holds an input pixel; against MaxPool's reference kernel on the NCHW copy, bit for
  // bit, on 1, 2 and 3 threads. Windows cut by the pads and by ceil_mode, asymmetric kernels and
  // strides, a window of one row or one column, channel counts off the vector width.
  struct Case {
    const char* name;
    int64_t n, c, h, w;
    std::vector<int64_t> kernel, strides, pads;
    int64_t ceil = 0;
  };
  const std::vector<Case> cases = {
      {"3x3 s1 p1, 28x28x40", 2, 40, 28, 28, {3, 3}, {1, 1}, {1, 1, 1, 1}},
      {"3x3 s2 ceil, 15x17x19", 1, 19, 15, 17, {3, 3}, {2, 2}, {0, 0, 0, 0}, 1},
      {"3x3 s2 p1, 14x14x64", 3, 64, 14, 14, {3, 3}, {2, 2}, {1, 1, 1, 1}},
      {"2x2 s2, 9x9x7", 2, 7, 9, 9, {2, 2}, {2, 2}, {0, 0, 0, 0}},
      {"5x3 s(1,2) pads 2,1,0,1, 11x10x33", 1, 33, 11, 10, {5, 3}, {1, 2}, {2, 1, 0, 1}},
      {"1x4 s1, 6x8x5 (one row per window)", 2, 5, 6, 8, {1, 4}, {1, 1}, {0, 0, 0, 0}},
      {"4x1 s3 ceil, 13x6x17 (one column per window)", 1, 17, 13, 6, {4, 1}, {3, 1}, {0, 0, 0, 0}, 1},
  };
  uint32_t seed = 900;
  for (const auto& c : cases) {
    for (DType dt : {DType::Float32, DType::UInt8, DType::Int8}) {
      INFO(c.name << " " << dtypeName(dt));
      const Shape nhwc{c.n, c.h, c.w, c.c};
      Tensor x = dt == DType::Float32 ? randomFloat(nhwc, ++seed, -5.0f, 5.0f)
                                      : randomInt(dt, nhwc, ++seed, dt == DType::UInt8 ? 0 : -128, dt == DType::UInt8 ? 255 : 127);
      // The reference on the NCHW copy.
      Tensor x_nchw = Tensor::uninitialized(dt, {c.n, c.c, c.h, c.w});
      const size_t es = dtypeSize(dt);
      for (int64_t b = 0; b < c.n; ++b)
        for (int64_t i = 0; i < c.h * c.w; ++i)
          for (int64_t k = 0; k < c.c; ++k)
            std::memcpy(static_cast<std::byte*>(x_nchw.raw()) + ((b * c.c + k) * c.h * c.w + i) * es,
                        static_cast<const std::byte*>(x.raw()) + ((b * c.h * c.w + i) * c.c + k) * es, es);
      std::vector<onnx::AttributeProto> attrs = {attrInts("kernel_shape", c.kernel), attrInts("strides", c.strides),
                                                 attrInts("pads", c.pads), attrInt("ceil_mode", c.ceil)};
      const Tensor want = runNode(makeSpec("MaxPool", {x_nchw}, attrs, 13), /*reference_only=*/true)[0];
      NodeSpec s;
      s.op_type = "PoolNhwc";
      s.domain = "lwc.internal";
      s.opset = 1;
      s.attrs = attrs;
      s.attrs.push_back(attrString("mode", "max"));
      s.inputs = {x};
      for (int threads : {2, 1, 3}) {
        INFO("threads " << threads);
        const ProfiledRun r = runProfiledOnThreads(s, "PoolNhwc", threads);
        CHECK(r.prof.primitive == "lwc_maxpool_separable");
        REQUIRE(r.y.shape() == Shape{want.dim(0), want.dim(2), want.dim(3), want.dim(1)});
        int64_t bad = 0;
        for (int64_t b = 0; b < want.dim(0); ++b)
          for (int64_t k = 0; k < want.dim(1); ++k)
            for (int64_t i = 0; i < want.dim(2) * want.dim(3); ++i)
              bad += std::memcmp(static_cast<const std::byte*>(want.raw()) + ((b * want.dim(1) + k) * want.dim(2) * want.dim(3) + i) * es,
                                 static_cast<const std::byte*>(r.y.raw()) + ((b * want.dim(2) * want.dim(3) + i) * want.dim(1) + k) * es,
                                 es) != 0;
        CHECK(bad == 0);
      }
      engine::configureThreads(0);
    }
  }
}

TEST_CASE("a MatMul or Gemm with constant weights and an inner dimension of 0 gives zeros or the bias", "[dnnl][nn]") {
  // x.numel() / k divided by zero: the process died of SIGFPE, without a message.
  Model mm = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[3, 0] x) => (float[3, 4] y, float[3, 4] z)
<float[0, 4] w = {}, float[4] b = {1, 2, 3, 4}>
{
  y = MatMul (x, w)
  z = Gemm (x, w, b)
}
)");
  engine::Session s(mm);
  const auto out = s.run({{"x", Tensor(DType::Float32, {3, 0})}});
  REQUIRE(out.at("y").shape() == Shape{3, 4});
  REQUIRE(out.at("z").shape() == Shape{3, 4});
  for (int64_t i = 0; i < 12; ++i) {
    CHECK(out.at("y").data<float>()[i] == 0.0f);
    CHECK(out.at("z").data<float>()[i] == float(1 + i % 4));
  }
}

TEST_CASE("a Conv with no input or output channels runs (the bias, or an empty output)", "[dnnl][nn]") {
  // oneDNN cannot describe it: "internal error: could not create a descriptor".
  Model ci0 = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[1, 0, 5, 5] x) => (float[1, 4, 3, 3] y)
<float[4, 0, 3, 3] w = {}, float[4] b = {0, 1, 2, 3}>
{ y = Conv (x, w, b) }
)");
  const Tensor y = engine::Session(ci0).runOrdered({{"x", Tensor(DType::Float32, {1, 0, 5, 5})}})[0];
  REQUIRE(y.shape() == Shape{1, 4, 3, 3});
  for (int64_t i = 0; i < y.numel(); ++i) CHECK(y.data<float>()[i] == float(i / 9));
  Model co0 = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[1, 3, 5, 5] x) => (float[1, 0, 3, 3] y)
<float[0, 3, 3, 3] w = {}>
{ y = Conv (x, w) }
)");
  CHECK(engine::Session(co0).runOrdered({{"x", Tensor(DType::Float32, {1, 3, 5, 5})}})[0].shape() == Shape{1, 0, 3, 3});
}

TEST_CASE("a Conv + Clip fused into oneDNN clips an infinite output to float's largest value, as the Clip kernel", "[dnnl][nn]") {
  // The fused post-op's missing bound was infinity; the Clip kernel (and --reference) gives FLT_MAX.
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[1, 1, 4, 4] x) => (float[1, 1, 4, 4] y)
<float[1, 1, 1, 1] w = {1e30}, float lo = {0}>
{
  c = Conv (x, w)
  y = Clip (c, lo)
}
)");
  Tensor x(DType::Float32, {1, 1, 4, 4});
  for (int64_t i = 0; i < 16; ++i) x.data<float>()[i] = i % 2 ? 1e10f : 1.0f;  // 1e40 overflows
  for (bool ref : {false, true}) {
    engine::SessionOptions so;
    so.reference_only = ref;
    const Tensor y = engine::Session(m, so).runOrdered({{"x", x}})[0];
    INFO("reference " << ref);
    CHECK(y.data<float>()[1] == std::numeric_limits<float>::max());
    CHECK(y.data<float>()[0] == 1e30f);
  }
}

TEST_CASE("activations of one kind with other parameters in one fused chain keep their own parameters", "[dnnl][nn]") {
  // oneDNN 2.6 runs every eltwise post-op of one algorithm with the first one's parameters: LeakyRelu
  // 0.2 -> residual Add -> Relu let negative values through (0.81 off), Clip -> Clip kept the first
  // bounds, HardSigmoid -> HardSigmoid the first slope. Found against ONNX Runtime.
  const std::string head = R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 4, 5, 5] x) => (float[2, 3, 5, 5] y)
<float[3, 4, 1, 1] w = {0.5, -1, 0.25, 2, -0.5, 1.5, -2, 0.75, 1, 1, -1, -0.25},
 float[3, 4, 1, 1] w2 = {-1, 0.5, 2, -0.75, 1.25, -1.5, 0.5, 1, -2, 0.25, 1, -0.5},
 float lo = {-0.5}, float hi = {0.5}, float lo2 = {-0.2}, float hi2 = {0.3}>
{
  c = Conv (x, w)
  c2 = Conv (x, w2)
)";
  const std::vector<std::string> bodies = {
      "a = LeakyRelu <alpha = 0.2> (c)\n r = Add (c2, a)\n y = Relu (r)\n}",
      "a = Relu (c)\n r = Add (a, c2)\n y = LeakyRelu <alpha = 0.3> (r)\n}",
      "a = LeakyRelu <alpha = 0.2> (c)\n b = LeakyRelu <alpha = 0.5> (a)\n y = Add (b, c2)\n}",
      "a = Clip (c, lo, hi)\n r = Add (c2, a)\n y = Clip (r, lo2, hi2)\n}",
      "a = HardSigmoid <alpha = 0.3, beta = 0.4> (c)\n b = HardSigmoid <alpha = 0.7, beta = 0.1> (a)\n y = Add (b, c2)\n}",
  };
  Tensor x(DType::Float32, {2, 4, 5, 5});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = static_cast<float>((i * 37) % 23) / 4.0f - 2.8f;
  for (const auto& body : bodies) {
    INFO(body);
    const Model m = parseModelText(head + body);
    engine::SessionOptions ref;
    ref.reference_only = true;
    const Tensor want = engine::Session(m, ref).runOrdered({{"x", x}})[0];
    const Tensor got = engine::Session(m).runOrdered({{"x", x}})[0];
    REQUIRE(got.shape() == want.shape());
    float worst = 0;
    for (int64_t i = 0; i < got.numel(); ++i) worst = std::max(worst, std::abs(got.data<float>()[i] - want.data<float>()[i]));
    CHECK(worst < 1e-5f);
  }
}
