// fuse_batchnorm: folded where the math allows, left alone (and reported) everywhere else.
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>

#include "lwc/model_io.h"
#include "support/pass_util.h"

using namespace lwc;
using namespace lwc::test;

namespace {
void addBn(Model& m, const std::string& p, int64_t c, uint32_t seed) {
  addConst(m, p + "_g", {c}, seed, 0.5f, 1.5f);
  addConst(m, p + "_b", {c}, seed + 1);
  addConst(m, p + "_m", {c}, seed + 2);
  addConst(m, p + "_v", {c}, seed + 3, 0.2f, 2.0f);
}

bool noteMentions(const PassResult& r, const std::string& text) {
  for (const auto& n : r.notes)
    if (n.find(text) != std::string::npos) return true;
  return false;
}
}  // namespace

TEST_CASE("fuse_batchnorm folds into the preceding layer", "[fuse_batchnorm]") {
  SECTION("Conv without bias") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
  c = Conv <pads=[1,1,1,1]> (x, w)
  y = BatchNormalization <epsilon=0.001> (c, bn_g, bn_b, bn_m, bn_v)
})");
    addConst(m, "w", {4, 3, 3, 3}, 1);
    addBn(m, "bn", 4, 10);
    Model before = m;
    auto r = runPass(m, "fuse_batchnorm");
    CHECK(r.changed);
    CHECK(r.stats["folded_into_producer"] == 1);
    CHECK(countOps(m, "BatchNormalization") == 0);
    CHECK(m.graph.nodes.size() == 1);
    CHECK(m.graph.nodes[0].outputs[0] == "y");
    CHECK(m.graph.initializers.size() == 2);  // folded weights and the new bias; BN parameters gone
    CHECK(compareModels(before, m, 1e-5).empty());
  }
  SECTION("grouped Conv with bias") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 8, 8] x) => (float[N, 8, 6, 6] y) {
  c = Conv <group=2> (x, w, b)
  y = BatchNormalization (c, bn_g, bn_b, bn_m, bn_v)
})");
    addConst(m, "w", {8, 2, 3, 3}, 2);
    addConst(m, "b", {8}, 3);
    addBn(m, "bn", 8, 20);
    Model before = m;
    CHECK(runPass(m, "fuse_batchnorm").stats["folded_into_producer"] == 1);
    CHECK(countOps(m, "BatchNormalization") == 0);
    CHECK(compareModels(before, m, 1e-5).empty());
  }
  SECTION("ConvTranspose, one and two groups") {
    for (int group : {1, 2}) {
      INFO("group " << group);
      Model m = parseGraph(std::string(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 5, 5] x) => (float[N, 6, 11, 11] y) {
  c = ConvTranspose <strides=[2,2], group=)") + std::to_string(group) + R"(> (x, w)
  y = BatchNormalization (c, bn_g, bn_b, bn_m, bn_v)
})");
      addConst(m, "w", {4, 6 / group, 3, 3}, 4);
      addBn(m, "bn", 6, 30);
      Model before = m;
      CHECK(runPass(m, "fuse_batchnorm").stats["folded_into_producer"] == 1);
      CHECK(countOps(m, "BatchNormalization") == 0);
      CHECK(compareModels(before, m, 1e-5).empty());
    }
  }
  SECTION("Gemm with transB and C, and Gemm with beta and no C") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 16] x) => (float[N, 5] y) {
  a = Gemm <transB=1, beta=0.5> (x, w1, c1)
  an = BatchNormalization (a, p_g, p_b, p_m, p_v)
  r = Relu (an)
  z = Gemm <alpha=2.0, beta=3.0> (r, w2)
  y = BatchNormalization (z, q_g, q_b, q_m, q_v)
})");
    addConst(m, "w1", {8, 16}, 5);
    addConst(m, "c1", {8}, 6);
    addConst(m, "w2", {8, 5}, 7);
    addBn(m, "p", 8, 40);
    addBn(m, "q", 5, 50);
    Model before = m;
    CHECK(runPass(m, "fuse_batchnorm").stats["folded_into_producer"] == 2);
    CHECK(countOps(m, "BatchNormalization") == 0);
    CHECK(compareModels(before, m, 1e-5).empty());
  }
  SECTION("MatMul with 2-D output: BN becomes a bias Add; 3-D MatMul is left alone") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 16] x, float[N, 8, 16] x3) => (float[N, 8] y, float[N, 8, 8] y3) {
  a = MatMul (x, w)
  y = BatchNormalization (a, p_g, p_b, p_m, p_v)
  a3 = MatMul (x3, w)
  y3 = BatchNormalization (a3, q_g, q_b, q_m, q_v)
})");
    addConst(m, "w", {16, 8}, 8);
    addBn(m, "p", 8, 60);
    addBn(m, "q", 8, 70);
    Model before = m;
    auto r = runPass(m, "fuse_batchnorm");
    CHECK(r.stats["folded_into_producer"] == 1);
    CHECK(r.stats["left_alone"] == 1);
    CHECK(countOps(m, "BatchNormalization") == 1);
    CHECK(countOps(m, "Add") == 1);
    CHECK(noteMentions(r, "not known to be 2-D"));
    CHECK(compareModels(before, m, 1e-5).empty());
  }
}

TEST_CASE("fuse_batchnorm folds a BN into the following unpadded Conv", "[fuse_batchnorm]") {
  SECTION("no padding: folded, including a depthwise consumer") {
    for (int group : {1, 4}) {
      INFO("group " << group);
      Model m = parseGraph(std::string(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 8, 8] x) => (float[N, 4, 6, 6] y) {
  r = Relu (x)
  n = BatchNormalization (r, bn_g, bn_b, bn_m, bn_v)
  y = Conv <group=)") + std::to_string(group) + R"(> (n, w, b)
})");
      addConst(m, "w", {4, 4 / group, 3, 3}, 9);
      addConst(m, "b", {4}, 10);
      addBn(m, "bn", 4, 80);
      Model before = m;
      auto r = runPass(m, "fuse_batchnorm");
      CHECK(r.stats["folded_into_consumer"] == 1);
      CHECK(countOps(m, "BatchNormalization") == 0);
      CHECK(compareModels(before, m, 1e-5).empty());
    }
  }
  SECTION("padded Conv: left alone with a reason") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 8, 8] x) => (float[N, 4, 8, 8] y) {
  r = Relu (x)
  n = BatchNormalization (r, bn_g, bn_b, bn_m, bn_v)
  y = Conv <pads=[1,1,1,1]> (n, w)
})");
    addConst(m, "w", {4, 4, 3, 3}, 11);
    addBn(m, "bn", 4, 90);
    const std::string before = serialized(m);
    auto r = runPass(m, "fuse_batchnorm");
    CHECK_FALSE(r.changed);
    CHECK(r.stats["left_alone"] == 1);
    CHECK(noteMentions(r, "pads its input"));
    CHECK(serialized(m) == before);
  }
}

TEST_CASE("fuse_batchnorm leaves alone what it must not fold", "[fuse_batchnorm]") {
  SECTION("no BatchNormalization: unchanged") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 6, 6] y) {
  c = Conv (x, w)
  y = Relu (c)
})");
    addConst(m, "w", {4, 3, 3, 3}, 1);
    const std::string before = serialized(m);
    auto r = runPass(m, "fuse_batchnorm");
    CHECK_FALSE(r.changed);
    CHECK(serialized(m) == before);
  }
  SECTION("Conv output read by another node too") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 6, 6] y) {
  c = Conv (x, w)
  n = BatchNormalization (c, bn_g, bn_b, bn_m, bn_v)
  y = Add (n, c)
})");
    addConst(m, "w", {4, 3, 3, 3}, 1);
    addBn(m, "bn", 4, 10);
    const std::string before = serialized(m);
    auto r = runPass(m, "fuse_batchnorm");
    CHECK_FALSE(r.changed);
    CHECK(r.stats["left_alone"] == 1);
    CHECK(noteMentions(r, "other readers"));
    CHECK(serialized(m) == before);
  }
  SECTION("Conv output is a graph output") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 6, 6] y, float[N, 4, 6, 6] c) {
  c = Conv (x, w)
  y = BatchNormalization (c, bn_g, bn_b, bn_m, bn_v)
})");
    addConst(m, "w", {4, 3, 3, 3}, 1);
    addBn(m, "bn", 4, 10);
    const std::string before = serialized(m);
    CHECK_FALSE(runPass(m, "fuse_batchnorm").changed);
    CHECK(serialized(m) == before);
  }
  SECTION("BN parameters that are graph inputs, not constants") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x, float[4] s) => (float[N, 4, 6, 6] y) {
  c = Conv (x, w)
  y = BatchNormalization (c, s, bn_b, bn_m, bn_v)
})");
    addConst(m, "w", {4, 3, 3, 3}, 1);
    addBn(m, "bn", 4, 10);
    m.graph.initializers.erase("bn_g");
    const std::string before = serialized(m);
    auto r = runPass(m, "fuse_batchnorm");
    CHECK_FALSE(r.changed);
    CHECK(noteMentions(r, "not a constant"));
    CHECK(serialized(m) == before);
  }
  SECTION("weights shared to a few values (weight_share) stay shared; pruned weights are folded") {
    // Folding multiplies each output channel by its own scale: 16 shared values became one set per
    // channel (resnet after weight_share: its Huffman-coded file 2.35x larger, without a word).
    auto convBn = [] {
      Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8, 8, 8] x) => (float[N, 16, 6, 6] y) {
  c = Conv (x, w)
  y = BatchNormalization (c, bn_g, bn_b, bn_m, bn_v)
})");
      addConst(m, "w", {16, 8, 3, 3}, 1);
      addBn(m, "bn", 16, 10);
      return m;
    };
    Model shared = convBn();
    Tensor w = shared.graph.initializers.at("w").clone();
    for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = 0.05f * float(i % 16) - 0.4f;  // 16 values, one 0
    shared.graph.initializers.set("w", w);
    const std::string before = serialized(shared);
    auto r = runPass(shared, "fuse_batchnorm");
    CHECK_FALSE(r.changed);
    CHECK(noteMentions(r, "weights hold 15 distinct non-zero values among 1080"));
    CHECK(noteMentions(r, "run fuse_batchnorm before weight_share"));
    CHECK(serialized(shared) == before);

    // 90 % zeros: few non-zeros, each its own value; zeros stay zeros when scaled.
    Model pruned = convBn();
    Tensor pw = pruned.graph.initializers.at("w").clone();
    for (int64_t i = 0; i < pw.numel(); ++i)
      if (i % 10) pw.data<float>()[i] = 0.0f;
    pruned.graph.initializers.set("w", pw);
    Model ref = pruned;
    CHECK(runPass(pruned, "fuse_batchnorm").stats["folded_into_producer"] == 1);
    CHECK(compareModels(ref, pruned, 1e-5).empty());
  }
  SECTION("a weight shared by two Convs gets a new folded copy") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 6, 6] y, float[N, 4, 6, 6] z) {
  c = Conv (x, w)
  y = BatchNormalization (c, bn_g, bn_b, bn_m, bn_v)
  z = Conv (x, w)
})");
    addConst(m, "w", {4, 3, 3, 3}, 1);
    addBn(m, "bn", 4, 10);
    Model before = m;
    CHECK(runPass(m, "fuse_batchnorm").changed);
    CHECK(m.graph.initializers.at("w").bitEqual(before.graph.initializers.at("w")));
    CHECK(compareModels(before, m, 1e-5).empty());
  }
}

TEST_CASE("fuse_batchnorm folds a float16 model in float32 and stores float16", "[fuse_batchnorm]") {
  const char* text = R"(<ir_version: 8, opset_import: ["" : 13]>
g (%s[N, 3, 8, 8] x) => (%s[N, 4, 8, 8] y) {
  c = Conv <pads=[1,1,1,1]> (x, w, b)
  y = BatchNormalization <epsilon=0.001> (c, bn_g, bn_b, bn_m, bn_v)
})";
  auto model = [&](const char* type) {
    char buf[512];
    std::snprintf(buf, sizeof buf, text, type, type);
    Model m = parseGraph(buf);
    addConst(m, "w", {4, 3, 3, 3}, 1);
    addConst(m, "b", {4}, 2);
    addBn(m, "bn", 4, 10);
    return m;
  };
  // The float16 model, and the same values widened to float32 (exact), folded the float32 way.
  Model half = model("float16");
  for (auto& [name, t] : half.graph.initializers.items()) t = t.cast(DType::Float16);
  Model single = model("float");
  for (auto& [name, t] : single.graph.initializers.items()) t = half.graph.initializers.at(name).cast(DType::Float32);
  auto r = runPass(half, "fuse_batchnorm");
  CHECK(r.stats["folded_into_producer"] == 1);
  CHECK(countOps(half, "BatchNormalization") == 0);
  REQUIRE(runPass(single, "fuse_batchnorm").stats["folded_into_producer"] == 1);
  REQUIRE(half.graph.initializers.size() == single.graph.initializers.size());
  for (const auto& [name, t] : half.graph.initializers.items()) {
    INFO(name);
    CHECK(t.dtype() == DType::Float16);
    const Tensor want = single.graph.initializers.at(name).cast(DType::Float16);
    REQUIRE(t.numel() == want.numel());
    CHECK(std::memcmp(t.raw(), want.raw(), static_cast<size_t>(t.numel()) * 2) == 0);
  }
  // A float16 part and a float32 part: mixed precision is left alone, and the note says why.
  Model mixed = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float16[N, 3, 8, 8] x) => (float[N, 4, 8, 8] z) {
  c = Conv <pads=[1,1,1,1]> (x, w, b)
  y = BatchNormalization <epsilon=0.001> (c, bn_g, bn_b, bn_m, bn_v)
  y32 = Cast <to=1> (y)
  z = Add (y32, k)
})");
  addConst(mixed, "w", {4, 3, 3, 3}, 1);
  addConst(mixed, "b", {4}, 2);
  addBn(mixed, "bn", 4, 10);
  for (auto& [name, t] : mixed.graph.initializers.items()) t = t.cast(DType::Float16);
  addConst(mixed, "k", {1}, 3);
  r = runPass(mixed, "fuse_batchnorm");
  CHECK_FALSE(r.changed);
  CHECK(noteMentions(r, "mixes float16 and float32 constants"));
}

TEST_CASE("fuse_batchnorm leaves a float16 BN alone where the folded weights would leave float16's range", "[fuse_batchnorm]") {
  // Weights of 1000 over a variance of 1e-4: folded, 1000 / sqrt(1e-4 + 1e-5) = 95,346 > 65,504,
  // stored as inf (the output inf where the model gives finite values). The fold is undone and the
  // note says why; the model, its values and its other BN are as they were.
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float16[N, 2, 4, 4] x) => (float16[N, 2, 4, 4] y, float16[N, 2, 4, 4] z) {
  c = Conv (x, w)
  y = BatchNormalization (c, g1, b1, m1, v1)
  d = Conv (x, w2)
  z = BatchNormalization (d, g2, b2, m2, v2)
})");
  auto half = [](Shape s, float v) {
    Tensor t(DType::Float32, std::move(s));
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = v;
    return t.cast(DType::Float16);
  };
  m.graph.initializers.set("w", half({2, 2, 1, 1}, 1000.0f));
  m.graph.initializers.set("w2", half({2, 2, 1, 1}, 0.5f));
  for (const char* k : {"1", "2"}) {
    m.graph.initializers.set(std::string("g") + k, half({2}, 1.0f));
    m.graph.initializers.set(std::string("b") + k, half({2}, 0.0f));
    m.graph.initializers.set(std::string("m") + k, half({2}, 0.0f));
    m.graph.initializers.set(std::string("v") + k, half({2}, std::string(k) == "1" ? 1e-4f : 1.0f));
  }
  const Model before = m;
  const auto r = runPass(m, "fuse_batchnorm");
  CHECK(r.stats.at("left_alone") == 1);
  CHECK(r.stats.at("folded_into_producer") == 1);  // the other BN
  CHECK(noteMentions(r, "exceed float16's range"));
  CHECK(countOps(m, "BatchNormalization") == 1);
  for (const auto& [name, t] : m.graph.initializers.items()) {
    INFO(name);
    CHECK(t.dtype() == DType::Float16);
    for (int64_t i = 0; i < t.numel(); ++i) CHECK(std::isfinite(t.cast(DType::Float32).data<float>()[i]));
  }
  CHECK(m.graph.initializers.at("w").bitEqual(before.graph.initializers.at("w")));
}
