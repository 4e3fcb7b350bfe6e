// prune_channels: coupled channels (residual Add, depthwise conv, BatchNormalization), blocked
// groups, numeric equivalence with "channels zeroed", bn_gamma ranking, MACs targets, lsq, errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>

#include "lwc/analysis.h"
#include "lwc/engine.h"
#include "lwc/npy.h"
#include "passes/registry.h"
#include "support/engine_util.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;

namespace {
/// Multiplies the odd output channels of each named weight or bias of `channels` outputs by `factor`: 0.01f
/// makes the l1 ranking remove exactly those, 0 gives the model that computes what the pruned one does.
void scaleOddChannels(Model& m, std::initializer_list<const char*> names, float factor, int64_t channels = 8) {
  for (const char* name : names) {
    Tensor& t = *m.graph.initializers.find(name);
    const int64_t per = t.numel() / channels;
    for (int64_t o = 1; o < channels; o += 2)
      for (int64_t k = 0; k < per; ++k) t.data<float>()[o * per + k] *= factor;
  }
}

std::string joinNotes(const std::vector<std::string>& notes) {
  std::string s;
  for (const auto& n : notes) s += n + "\n";
  return s;
}


// Two coupled producers (A and B, joined by the residual Add), two consumers (B and C).
Model residualNet() {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 5] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  r = Relu (a)
  b = Conv <pads=[1,1,1,1]> (r, wb, bb)
  s = Add (b, r)
  c = Conv (s, wc, bc)
  p = GlobalAveragePool (c)
  f = Flatten (p)
  y = Gemm <transB=1> (f, wf, bf)
})");
  addConst(m, "wa", {8, 3, 3, 3}, 1);
  addConst(m, "ba", {8}, 2);
  addConst(m, "wb", {8, 8, 3, 3}, 3);
  addConst(m, "bb", {8}, 4);
  addConst(m, "wc", {6, 8, 1, 1}, 5);
  addConst(m, "bc", {6}, 6);
  addConst(m, "wf", {5, 6}, 7);
  addConst(m, "bf", {5}, 8);
  // Odd output channels of A and B are nearly zero: the l1 ranking must remove exactly those.
  scaleOddChannels(m, {"wa", "wb"}, 0.01f);
  return m;
}

Shape weightShape(const Model& m, const std::string& node_output) {
  for (const auto& n : m.graph.nodes)
    if (n.outputs[0] == node_output) return m.graph.initializers.at(n.inputs[1]).shape();
  return {};
}
}  // namespace

TEST_CASE("prune_channels removes coupled channels together and computes what zeroed channels compute", "[prune_channels]") {
  Model m = residualNet();
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"min_channels", 1}, {"round_to", 1}});
  CHECK(r.changed);
  CHECK(r.stats["groups_pruned"] == 2);  // {a, r, b, s} and {c}
  CHECK(weightShape(m, "a") == Shape{4, 3, 3, 3});
  CHECK(weightShape(m, "b") == Shape{4, 4, 3, 3});
  CHECK(weightShape(m, "c") == Shape{3, 4, 1, 1});
  CHECK(weightShape(m, "y") == Shape{5, 3});
  // Reference: the original model with the removed channels' filters zeroed at their producers.
  Model z = residualNet();
  scaleOddChannels(z, {"wa", "wb", "ba", "bb"}, 0.0f);
  // ... and for group {c}: the channels pruned there are whichever 3 the ranking chose; zero the
  // same rows of wc/bc (found by matching the kept rows) and their columns of wf.
  const Tensor& wc1 = m.graph.initializers.at(m.graph.nodes[4].inputs[1]);
  const Tensor& wc0 = z.graph.initializers.at("wc");
  std::vector<bool> kept(6, false);
  for (int64_t k = 0; k < 3; ++k)
    for (int64_t o = 0; o < 6; ++o)
      if (wc0.at(o * 8) == wc1.at(k * 4)) kept[static_cast<size_t>(o)] = true;
  CHECK(std::count(kept.begin(), kept.end(), true) == 3);
  for (int64_t o = 0; o < 6; ++o) {
    if (kept[static_cast<size_t>(o)]) continue;
    for (int64_t k = 0; k < 8; ++k) z.graph.initializers.find("wc")->data<float>()[o * 8 + k] = 0;
    z.graph.initializers.find("bc")->data<float>()[o] = 0;
    for (int64_t j = 0; j < 5; ++j) z.graph.initializers.find("wf")->data<float>()[j * 6 + o] = 0;
  }
  CHECK(compareModels(z, m, 1e-5) == "");
  CHECK(analyzeModel(m).macs < analyzeModel(residualNet()).macs / 2);
}

TEST_CASE("prune_channels names min_channels where it keeps channels the ratio would remove", "[prune_channels]") {
  // "kept 8 of 8 channels", without a reason, was all a min_channels above the groups' sizes said.
  Model m = residualNet();
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"min_channels", 100}, {"round_to", 1}});
  CHECK_FALSE(r.changed);
  bool named = false;
  for (const auto& n : r.notes) named = named || n.find("(min_channels 100 keeps all of them)") != std::string::npos;
  CHECK(named);
}

TEST_CASE("prune_channels refuses float64 weights as it refuses float16 ones", "[prune_channels]") {
  // A float64 model passed with exit 0 and nothing pruned; float16 was refused with what to do.
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (double[N, 3, 8, 8] x) => (double[N, 5] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa)
  r = Relu (a)
  p = GlobalAveragePool (r)
  f = Flatten (p)
  y = Gemm (f, wf)
})");
  m.graph.initializers.set("wa", Tensor(DType::Float64, {16, 3, 3, 3}));
  m.graph.initializers.set("wf", Tensor(DType::Float64, {16, 5}));
  CHECK_THROWS_WITH(runPass(m, "prune_channels", {{"ratio", 0.5}}),
                    Catch::Contains("its weights are float64") && Catch::Contains("convert it to float32 first"));
}

TEST_CASE("prune_channels leaves groups it does not understand alone and says why", "[prune_channels]") {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 12, 8, 8] y, float[N, 4, 8, 8] z) {
  a = Conv <pads=[1,1,1,1]> (x, wa)
  b = Conv <pads=[1,1,1,1]> (x, wb)
  y = Concat <axis=1> (a, b)
  c = Conv <pads=[1,1,1,1]> (x, wc)
  z = Relu (c)
})");
  addConst(m, "wa", {4, 3, 3, 3}, 1);
  addConst(m, "wb", {8, 3, 3, 3}, 2);
  addConst(m, "wc", {4, 3, 3, 3}, 3);
  const std::string before = serialized(m);
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
  CHECK_FALSE(r.changed);
  CHECK(serialized(m) == before);
  // a and b: the Concat's output is a graph output; then the Concat's channels and c's
  CHECK(notesWith(r.notes, "left alone (concatenated by Concat") == 2);
  CHECK(notesWith(r.notes, "left alone (graph output)") == 2);
  CHECK(notesWith(r.notes, "no prunable channel group") == 1);
  CHECK(r.stats.at("groups") == 3);  // a, b and c; the report says none was pruned
  CHECK(r.stats.at("groups_pruned") == 0);
}

TEST_CASE("prune_channels names every layer whose channels it cannot prune, and a MACs target then fails", "[prune_channels]") {
  // A Conv1d, a ConvTranspose and a grouped convolution: none starts a prunable group, and their
  // outputs reach no layer that does, so no group lists them; the notes still must.
  auto model = [] {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 8] x, float[N, 4, 6, 6] u) => (float[N, 6, 8] y, float[N, 8, 7, 7] z) {
  a = Conv <pads=[1,1]> (x, w1)
  r = Relu (a)
  y = Conv <pads=[1,1]> (r, w2)
  t = ConvTranspose <kernel_shape=[2,2]> (u, wt)
  s = Relu (t)
  z = Conv <group=2, pads=[1,1,1,1]> (s, wg)
})");
    addConst(m, "w1", {8, 4, 3}, 1);
    addConst(m, "w2", {6, 8, 3}, 2);
    addConst(m, "wt", {4, 8, 2, 2}, 3);
    addConst(m, "wg", {8, 4, 3, 3}, 4);
    return m;
  };
  Model m = model();
  const std::string before = serialized(m);
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
  INFO(joinNotes(r.notes));
  CHECK(serialized(m) == before);
  CHECK(notesWith(r.notes, "(output 'a'): left alone (it is not a 2-D convolution)") == 1);
  CHECK(notesWith(r.notes, "(output 'y'): left alone (it is not a 2-D convolution)") == 1);
  CHECK(notesWith(r.notes, "(output 't'): left alone (it is a transposed convolution") == 1);
  CHECK(notesWith(r.notes, "(output 'z'): left alone (it is a grouped convolution (group 2))") == 1);
  CHECK(notesWith(r.notes, "no prunable channel group") == 1);
  // A MACs target cannot be met by pruning nothing: one error naming the first reason.
  Model t = model();
  auto p = passes::builtinPasses().create("prune_channels");
  p->configure({{"macs_reduction", 0.3}}, "prune_channels");
  PassContext ctx;
  try {
    p->run(t, ctx);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK_THAT(std::string(e.what()), Contains("macs_reduction") && Contains("has no channel group this pass can prune") &&
                                          Contains("first of"));
  }
  CHECK(serialized(t) == before);
}

TEST_CASE("prune_channels slices depthwise convs and BatchNormalization, bn_gamma ranks by |gamma|", "[prune_channels]") {
  auto build = [] {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4, 6, 6] x) => (float[N, 4, 6, 6] y) {
  e = Conv (x, we)
  n = BatchNormalization (e, gamma, beta, mean, var)
  r = Clip (n, lo, hi)
  d = Conv <group=8, pads=[1,1,1,1]> (r, wd, bd)
  y = Conv (d, wp)
})");
    addConst(m, "we", {8, 4, 1, 1}, 1);
    addConst(m, "gamma", {8}, 2, 0.5f, 1.0f);
    addConst(m, "beta", {8}, 3);
    addConst(m, "mean", {8}, 4);
    addConst(m, "var", {8}, 5, 0.5f, 1.5f);
    addConst(m, "wd", {8, 1, 3, 3}, 6);
    addConst(m, "bd", {8}, 7);
    addConst(m, "wp", {4, 8, 1, 1}, 8);
    m.graph.initializers.set("lo", Tensor::scalar(0.0f));
    m.graph.initializers.set("hi", Tensor::scalar(6.0f));
    // Channels 2, 3, 5 and 7 have tiny |gamma| but the largest filters.
    for (int c : {2, 3, 5, 7}) {
      m.graph.initializers.find("gamma")->data<float>()[c] = 0.01f;
      for (int k = 0; k < 4; ++k) m.graph.initializers.find("we")->data<float>()[c * 4 + k] = 5.0f;
    }
    return m;
  };
  Model m = build();
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"importance", "bn_gamma"}, {"round_to", 1}});
  REQUIRE(r.changed);
  const Node& dw = m.graph.nodes[3];
  CHECK(dw.attrInt("group", 0) == 4);
  CHECK(m.graph.initializers.at(dw.inputs[1]).shape() == Shape{4, 1, 3, 3});
  const Tensor& gamma = m.graph.initializers.at(m.graph.nodes[1].inputs[1]);
  REQUIRE(gamma.numel() == 4);
  for (int64_t c = 0; c < 4; ++c) CHECK(gamma.at(c) > 0.4);  // the small ones went
  CHECK(m.graph.initializers.at(m.graph.nodes[4].inputs[1]).shape() == Shape{4, 4, 1, 1});
  // l1 ranks by the filters instead: the big filters (tiny gamma) stay.
  Model l1 = build();
  runPass(l1, "prune_channels", {{"ratio", 0.5}, {"importance", "l1"}, {"round_to", 1}});
  const Tensor& g1 = l1.graph.initializers.at(l1.graph.nodes[1].inputs[1]);
  for (int64_t c = 0; c < 4; ++c) CHECK(g1.at(c) == Approx(0.01f));
  // The model still runs and has the right output shape.
  engine::Session s(m);
  CHECK(s.runOrdered({{"x", randomFloat({2, 4, 6, 6}, 1)}})[0].shape() == Shape{2, 4, 6, 6});
}

TEST_CASE("prune_channels macs_reduction reaches the target, bad options are refused", "[prune_channels]") {
  Model m = residualNet();
  const int64_t before = analyzeModel(m).macs;
  auto r = runPass(m, "prune_channels", {{"macs_reduction", 0.3}, {"min_channels", 1}, {"round_to", 1}});
  const int64_t after = analyzeModel(m).macs;
  CHECK(after <= 0.7 * double(before));
  CHECK(after > 0.4 * double(before));  // the smallest ratio that reaches 30 %, not far more
  auto err = [](const nlohmann::json& o) {
    try {
      Model x = residualNet();
      runPass(x, "prune_channels", o);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK_THAT(err({{"importance", "bn_gamma"}}), Contains("bn_gamma needs BatchNormalization"));
  CHECK_THAT(err({{"exclude", {"nope"}}}), Contains("no node or op type named 'nope'"));
  CHECK_THAT(err({{"ratio", 1.0}}), Contains("ratio"));
  // A MatMul whose input is sized at run time (x.size(1) % 4): a MACs target over the other layers
  // alone would be wrong, so it is refused.
  Model partial = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 6] y, float[M, 3] z) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  r = Relu (a)
  c = Conv (r, wc, bc)
  p = GlobalAveragePool (c)
  y = Flatten (p)
  s = Shape (y)
  i1 = Constant <value=int64 {1}> ()
  d = Gather <axis=0> (s, i1)
  four = Constant <value=int64 {4}> ()
  md = Mod (d, four)
  ax = Constant <value=int64[1] {0}> ()
  mu = Unsqueeze (md, ax)
  m1 = Constant <value=int64[1] {-1}> ()
  t = Concat <axis=0> (m1, mu)
  f = Reshape (y, t)
  z = MatMul (f, wz)
})");
  addConst(partial, "wa", {8, 3, 3, 3}, 1);
  addConst(partial, "ba", {8}, 2);
  addConst(partial, "wc", {6, 8, 1, 1}, 5);
  addConst(partial, "bc", {6}, 6);
  addConst(partial, "wz", {2, 3}, 7);
  REQUIRE_FALSE(analyzeModel(partial).macs_complete);
  std::string partial_err = "(no error)";
  try {
    runPass(partial, "prune_channels", {{"macs_reduction", 0.3}});
  } catch (const Error& e) {
    partial_err = e.what();
  }
  CHECK_THAT(partial_err, Contains("computed at run time") && Contains("use ratio"));
  auto p = passes::builtinPasses().create("prune_channels");
  p->configure({{"recover", "lsq"}}, "p");
  CHECK(p->needsCalibration(p->options()));
}

TEST_CASE("prune_channels keeps channel counts aligned by default and refines MACs targets per group",
          "[prune_channels]") {
  auto chain = [] {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 16, 16] x) => (float[N, 5] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa)
  ra = Relu (a)
  b = Conv <pads=[1,1,1,1]> (ra, wb)
  rb = Relu (b)
  c = Conv <pads=[1,1,1,1]> (rb, wc)
  p = GlobalAveragePool (c)
  f = Flatten (p)
  y = Gemm <transB=1> (f, wf)
})");
    addConst(m, "wa", {32, 3, 3, 3}, 1);
    addConst(m, "wb", {64, 32, 3, 3}, 2);
    addConst(m, "wc", {24, 64, 3, 3}, 3);  // 24: a multiple of 8, not of 16
    addConst(m, "wf", {5, 24}, 4);
    return m;
  };
  const int64_t before = analyzeModel(chain()).macs;
  // MACs (16x16 maps): a 221 184, b 4 718 592, c 3 538 944. Uniform ratios aligned to 16/16/8 give
  // 24.3 % (b 64->48), 34.8 % (and c 24->16), then 70.9 % (a 32->16, b 32, c 16); for 50 % the
  // refinement stops one step short of that: b 48->32 alone gives 55.7 %.
  for (auto [target, want] : {std::pair{0.1, 0.2435}, {0.3, 0.3478}, {0.5, 0.5565}}) {
    Model m = chain();
    runPass(m, "prune_channels", {{"macs_reduction", target}});
    const double red = 1.0 - double(analyzeModel(m).macs) / double(before);
    INFO("target " << target << " reached " << red);
    CHECK(red == Approx(want).margin(0.001));
    CHECK(weightShape(m, "a")[0] % 16 == 0);
    CHECK(weightShape(m, "b")[0] % 16 == 0);
    CHECK(weightShape(m, "c")[0] % 8 == 0);
    CHECK(weightShape(m, "b")[1] == weightShape(m, "a")[0]);
  }
  // An explicit round_to wins; 1 allows any count.
  Model m = chain();
  runPass(m, "prune_channels", {{"ratio", 0.3}, {"round_to", 1}});
  CHECK(weightShape(m, "a")[0] == 32 - 9);
  CHECK(weightShape(m, "b")[0] == 64 - 19);
  // A group the alignment alone keeps whole says so: a = 32 at ratio 0.1 wants 29, which rounds
  // up to 32 (a second channel pruning of a pruned model changed nothing without a word).
  Model w = chain();
  const auto r = runPass(w, "prune_channels", {{"ratio", 0.1}});
  CHECK(weightShape(w, "a")[0] == 32);
  CHECK(notesWith(r.notes, "kept 32 of 32 channels (29 rounded up to a multiple of 16, as round_to 0 (auto) aligns them") == 1);
}

TEST_CASE("prune_channels recover lsq re-fits the consumers from the kept channels", "[prune_channels][lsq]") {
  TempDir d;
  const DataSpec calib = npyData(d / "x.npy", randomFloat({128, 3, 8, 8}, 21, -1.0f, 2.0f), 32);
  const Model fp = residualNet();
  auto prune = [&](const char* recover) {
    Model m = residualNet();
    auto p = passes::builtinPasses().create("prune_channels");
    p->configure({{"ratio", 0.25}, {"recover", recover}, {"round_to", 1}}, "p");
    PassContext ctx;
    ctx.calib = &calib;
    p->run(m, ctx);
    return m;
  };
  const Model plain = prune("none"), fitted = prune("lsq");
  const Tensor x = randomFloat({32, 3, 8, 8}, 22, -1.0f, 2.0f);
  const Tensor y0 = engine::Session(fp).runOrdered({{"x", x}})[0];
  auto err = [&](const Model& m) { return squaredError(m, "x", x, y0); };
  INFO("plain " << err(plain) << " lsq " << err(fitted));
  CHECK(err(fitted) < 0.5 * err(plain));
  CHECK(weightShape(fitted, "c") == weightShape(plain, "c"));
}

TEST_CASE("prune_channels sees through a Flatten of channels and positions to Gemm and MatMul", "[prune_channels]") {
  // Conv [N,8,6,6] -> MaxPool [N,8,3,3] -> Flatten [N,72]: channel c is inputs 9c ... 9c+8 of
  // both consumers (Gemm with transB, MatMul without).
  auto net = [] {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 5] y, float[N, 4] z) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  r = Relu (a)
  p = MaxPool <kernel_shape=[2,2], strides=[2,2]> (r)
  f = Flatten (p)
  y = Gemm <transB=1> (f, wf, bf)
  z = MatMul (f, wm)
})");
    addConst(m, "wa", {8, 3, 3, 3}, 1);
    addConst(m, "ba", {8}, 2);
    addConst(m, "wf", {5, 72}, 3);
    addConst(m, "bf", {5}, 4);
    addConst(m, "wm", {72, 4}, 5);
    scaleOddChannels(m, {"wa"}, 0.01f);  // odd filters nearly zero: l1 removes exactly those
    return m;
  };
  Model m = net();
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"min_channels", 1}, {"round_to", 1}});
  CHECK(r.stats["groups_pruned"] == 1);
  CHECK(weightShape(m, "a") == Shape{4, 3, 3, 3});
  CHECK(weightShape(m, "y") == Shape{5, 36});
  CHECK(weightShape(m, "z") == Shape{36, 4});
  // The kept columns are those of the even channels, in order.
  const Model original = net();
  const Tensor& wf0 = original.graph.initializers.at("wf");
  const Tensor& wf1 = m.graph.initializers.at(m.graph.nodes[4].inputs[1]);
  for (int64_t j = 0; j < 5; ++j)
    for (int64_t k = 0; k < 4; ++k)
      for (int64_t p = 0; p < 9; ++p) REQUIRE(wf1.at(j * 36 + k * 9 + p) == wf0.at(j * 72 + 2 * k * 9 + p));
  // Numerically: the original with the odd filters zeroed.
  Model zeroed = net();
  scaleOddChannels(zeroed, {"wa", "ba"}, 0.0f);
  CHECK(compareModels(zeroed, m, 1e-5).empty());

  SECTION("anything else after the Flatten leaves the group alone") {
    Model b = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 5] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  p = MaxPool <kernel_shape=[2,2], strides=[2,2]> (a)
  f = Flatten (p)
  s = Add (f, c)
  y = Gemm <transB=1> (s, wf, bf)
})");
    addConst(b, "wa", {8, 3, 3, 3}, 1);
    addConst(b, "ba", {8}, 2);
    addConst(b, "c", {72}, 6);
    addConst(b, "wf", {5, 72}, 3);
    addConst(b, "bf", {5}, 4);
    const std::string before = serialized(b);
    auto rb = runPass(b, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
    CHECK_FALSE(rb.changed);
    CHECK(serialized(b) == before);
    CHECK(notesWith(rb.notes, "after a Flatten of channels and positions") >= 1);
  }
}

TEST_CASE("prune_channels sees through reductions and squeezes over the positions", "[prune_channels]") {
  // x.mean([2, 3]) (ReduceMean, keepdims 0), GlobalMaxPool + squeeze(-1).squeeze(-1) (Squeeze with
  // an axes input) and x.sum([2, 3], keepdim=True) + Flatten (ReduceSum with an axes input) all keep
  // channel c at axis 1; their readers' inputs c go with the channel.
  auto net = [] {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 5] y, float[N, 4] z, float[N, 3] w) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  r = Relu (a)
  m1 = ReduceMean <axes=[2,3], keepdims=0> (r)
  y = Gemm <transB=1> (m1, wf, bf)
  p = GlobalMaxPool (r)
  q = Squeeze (p, sq)
  z = MatMul (q, wm)
  t = ReduceSum <keepdims=1> (r, ax)
  u = Flatten (t)
  w = Gemm (u, wg)
})");
    addConst(m, "wa", {8, 3, 3, 3}, 1);
    addConst(m, "ba", {8}, 2);
    addConst(m, "wf", {5, 8}, 3);
    addConst(m, "bf", {5}, 4);
    addConst(m, "wm", {8, 4}, 5);
    addConst(m, "wg", {8, 3}, 6);
    Tensor sq(DType::Int64, {2}), ax(DType::Int64, {2});
    sq.data<int64_t>()[0] = -1, sq.data<int64_t>()[1] = -2;
    ax.data<int64_t>()[0] = 2, ax.data<int64_t>()[1] = 3;
    m.graph.initializers.set("sq", sq);
    m.graph.initializers.set("ax", ax);
    scaleOddChannels(m, {"wa"}, 0.01f);  // odd filters nearly zero: l1 removes exactly those
    return m;
  };
  Model m = net();
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"min_channels", 1}, {"round_to", 1}});
  CHECK(r.stats["groups_pruned"] == 1);
  CHECK(weightShape(m, "a") == Shape{4, 3, 3, 3});
  CHECK(weightShape(m, "y") == Shape{5, 4});
  CHECK(weightShape(m, "z") == Shape{4, 4});
  CHECK(weightShape(m, "w") == Shape{4, 3});
  Model zeroed = net();
  scaleOddChannels(zeroed, {"wa", "ba"}, 0.0f);
  CHECK(compareModels(zeroed, m, 1e-5).empty());

  SECTION("a reduction over the channels leaves the group alone") {
    Model b = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 6, 6] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  c = Conv (a, wc, bc)
  y = ReduceMean <axes=[1], keepdims=0> (c)
})");
    addConst(b, "wa", {8, 3, 3, 3}, 1);
    addConst(b, "ba", {8}, 2);
    addConst(b, "wc", {4, 8, 1, 1}, 3);
    addConst(b, "bc", {4}, 4);
    auto rb = runPass(b, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
    CHECK(rb.stats["groups_pruned"] == 1);  // a's channels; c's are read by the ReduceMean
    CHECK(weightShape(b, "c") == Shape{4, 4, 1, 1});
    CHECK(notesWith(rb.notes, "(its axes include the batch or the channels)") >= 1);
  }
  SECTION("a reduction over every axis leaves the group alone") {
    Model b = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[1, 1, 1, 1] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  y = ReduceMean (a)
})");
    addConst(b, "wa", {8, 3, 3, 3}, 1);
    addConst(b, "ba", {8}, 2);
    auto rb = runPass(b, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
    CHECK_FALSE(rb.changed);
    CHECK(notesWith(rb.notes, "(its axes are all, or computed at run time)") == 1);
  }
}

TEST_CASE("prune_channels slices a Concat along the channels as its inputs were pruned", "[prune_channels]") {
  // Two 8-channel convolutions concatenated (a fire module's expand layers), read by a Conv, then
  // concatenated again with the image (DenseNet) and read through a pool by a Gemm: the Concats
  // keep their inputs' kept channels at each input's offset; the image's 3 stay.
  auto net = [] {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 4, 6, 6] d, float[N, 5] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  b = Conv (x, wb, bb)
  c = Concat <axis=1> (a, b)
  r = Relu (c)
  d = Conv (r, wd, bd)
  e = Concat <axis=-3> (r, x)
  p = GlobalAveragePool (e)
  f = Flatten (p)
  y = Gemm <transB=1> (f, wf, bf)
})");
    addConst(m, "wa", {8, 3, 3, 3}, 1);
    addConst(m, "ba", {8}, 2);
    addConst(m, "wb", {8, 3, 1, 1}, 3);
    addConst(m, "bb", {8}, 4);
    addConst(m, "wd", {4, 16, 1, 1}, 5);
    addConst(m, "bd", {4}, 6);
    addConst(m, "wf", {5, 19}, 7);
    addConst(m, "bf", {5}, 8);
    scaleOddChannels(m, {"wa", "wb"}, 0.01f);  // odd filters nearly zero: l1 removes exactly those
    return m;
  };
  Model m = net();
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"min_channels", 1}, {"round_to", 1}});
  CHECK(r.stats["groups_pruned"] == 2);
  CHECK(r.stats["concats_sliced"] == 2);
  CHECK(weightShape(m, "a") == Shape{4, 3, 3, 3});
  CHECK(weightShape(m, "b") == Shape{4, 3, 1, 1});
  CHECK(weightShape(m, "d") == Shape{4, 8, 1, 1});
  CHECK(weightShape(m, "y") == Shape{5, 11});
  // The Gemm keeps the columns of a's and b's even channels and of the image's three.
  const Model original = net();
  const Tensor& wf0 = original.graph.initializers.at("wf");
  const Tensor& wf1 = m.graph.initializers.at(m.graph.nodes.back().inputs[1]);
  const std::vector<int64_t> cols = {0, 2, 4, 6, 8, 10, 12, 14, 16, 17, 18};
  for (int64_t j = 0; j < 5; ++j)
    for (size_t k = 0; k < cols.size(); ++k) REQUIRE(wf1.at(j * 11 + int64_t(k)) == wf0.at(j * 19 + cols[k]));
  CHECK(notesWith(r.notes, "kept 8 of 16 channels, those its inputs kept") >= 1);
  Model zeroed = net();
  scaleOddChannels(zeroed, {"wa", "ba", "wb", "bb"}, 0.0f);
  CHECK(compareModels(zeroed, m, 1e-5).empty());

  SECTION("a Concat whose output is left alone leaves its inputs alone") {
    Model b = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 16, 6, 6] c) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  b = Conv (x, wb, bb)
  c = Concat <axis=1> (a, b)
})");
    addConst(b, "wa", {8, 3, 3, 3}, 1);
    addConst(b, "ba", {8}, 2);
    addConst(b, "wb", {8, 3, 1, 1}, 3);
    addConst(b, "bb", {8}, 4);
    const std::string before = serialized(b);
    auto rb = runPass(b, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
    CHECK_FALSE(rb.changed);
    CHECK(serialized(b) == before);
    CHECK(notesWith(rb.notes, "whose channels are left alone") == 2);
  }
  SECTION("a Concat's output added to a layer's output, or to another Concat's, leaves the inputs alone") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"e = Conv (x, we, be)", "layers' channels meet the output of Concat"},
        {"e = Concat <axis=1> (b, a)", "the outputs of Concat"}};
    for (const auto& [other, why] : cases) {
      Model b = parseGraph(std::string(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 4, 6, 6] d) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  b = Conv (x, wb, bb)
  c = Concat <axis=1> (a, b)
  )") + other + R"(
  s = Add (c, e)
  d = Conv (s, wd, bd)
})");
      addConst(b, "wa", {8, 3, 3, 3}, 1);
      addConst(b, "ba", {8}, 2);
      addConst(b, "wb", {8, 3, 1, 1}, 3);
      addConst(b, "bb", {8}, 4);
      addConst(b, "we", {16, 3, 1, 1}, 5);
      addConst(b, "be", {16}, 6);
      addConst(b, "wd", {4, 16, 1, 1}, 7);
      addConst(b, "bd", {4}, 8);
      const std::string before = serialized(b);
      auto rb = runPass(b, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
      CHECK_FALSE(rb.changed);
      CHECK(serialized(b) == before);
      CHECK(notesWith(rb.notes, "whose channels are left alone") == 2);
      CHECK(notesWith(rb.notes, why) == 1);
    }
  }
  SECTION("a Concat along another axis leaves its inputs alone") {
    Model b = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 4, 12, 6] d) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  b = Conv (x, wb, bb)
  c = Concat <axis=2> (a, b)
  d = Conv (c, wd, bd)
})");
    addConst(b, "wa", {8, 3, 3, 3}, 1);
    addConst(b, "ba", {8}, 2);
    addConst(b, "wb", {8, 3, 1, 1}, 3);
    addConst(b, "bb", {8}, 4);
    addConst(b, "wd", {4, 8, 1, 1}, 5);
    addConst(b, "bd", {4}, 6);
    auto rb = runPass(b, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
    CHECK_FALSE(rb.changed);
    CHECK(notesWith(rb.notes, "(not along the channels)") >= 1);
  }
}

TEST_CASE("prune_channels slices a Split along the channels segment by segment and rewrites its sizes", "[prune_channels]") {
  // YOLOv8's C2f: a layer's channels split in two halves, the second half read by a Conv, and the
  // halves and the Conv's output concatenated. Each half keeps its share of the layer's kept
  // channels, the Split's sizes follow, in each way a Split can state them.
  struct Form {
    int opset;
    std::string split;                  // the Split line
    std::vector<int64_t> sizes_before;  // its "sp" input, if any
  };
  const std::vector<Form> forms = {{11, "s0, s1 = Split <axis=1, split=[4, 4]> (a)", {}},
                                   {13, "s0, s1 = Split <axis=1> (a, sp)", {4, 4}},
                                   {13, "s0, s1 = Split <axis=-3> (a)", {}}};
  for (const auto& form : forms) {
    INFO(form.split);
    auto net = [&] {
      Model m = parseGraph("<ir_version: 8, opset_import: [\"\" : " + std::to_string(form.opset) + R"(]>
g (float[N, 3, 6, 6] x) => (float[N, 4, 6, 6] d) {
  a = Conv (x, wa, ba)
  )" + form.split + R"(
  b = Conv <pads=[1,1,1,1]> (s1, wb, bb)
  c = Concat <axis=1> (s0, s1, b)
  d = Conv (c, wd, bd)
})");
      addConst(m, "wa", {8, 3, 1, 1}, 1);
      addConst(m, "ba", {8}, 2);
      addConst(m, "wb", {8, 4, 3, 3}, 3);
      addConst(m, "bb", {8}, 4);
      addConst(m, "wd", {4, 16, 1, 1}, 5);
      addConst(m, "bd", {4}, 6);
      if (!form.sizes_before.empty()) m.graph.initializers.set("sp", Tensor::fromVector<int64_t>({2}, form.sizes_before));
      scaleOddChannels(m, {"wa", "wb"}, 0.01f);
      return m;
    };
    Model m = net();
    auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"min_channels", 1}, {"round_to", 1}});
    CHECK(r.stats["groups_pruned"] == 2);
    CHECK(r.stats["splits_sliced"] == 1);
    CHECK(r.stats["concats_sliced"] == 1);
    CHECK(weightShape(m, "a") == Shape{4, 3, 1, 1});
    CHECK(weightShape(m, "b") == Shape{4, 2, 3, 3});
    CHECK(weightShape(m, "d") == Shape{4, 8, 1, 1});
    const Node& split = m.graph.nodes[1];
    REQUIRE(split.op_type == "Split");
    if (form.opset < 13) {
      CHECK(split.attrInts("split") == std::vector<int64_t>{2, 2});
    } else {
      REQUIRE(split.hasInput(1));
      const Tensor& sp = m.graph.initializers.at(split.inputs[1]);
      CHECK((sp.numel() == 2 && sp.at(0) == 2 && sp.at(1) == 2));
    }
    CHECK(notesWith(r.notes, "of Split") == 2);
    CHECK(notesWith(r.notes, "kept 2 of 4 channels, those its input kept") == 2);
    Model zeroed = net();
    scaleOddChannels(zeroed, {"wa", "ba", "wb", "bb"}, 0.0f);
    CHECK(compareModels(zeroed, m, 1e-5).empty());
  }

  SECTION("layers added to a segment (C2f's residual bottleneck) keep the segment's channels") {
    auto c2f = [] {
      Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 11]>
g (float[N, 3, 6, 6] x) => (float[N, 4, 6, 6] d) {
  a = Conv (x, wa, ba)
  s0, s1 = Split <axis=1, split=[4, 4]> (a)
  b = Conv <pads=[1,1,1,1]> (s1, wb, bb)
  r = Add (s1, b)
  c = Concat <axis=1> (s0, r)
  d = Conv (c, wd, bd)
})");
      addConst(m, "wa", {8, 3, 1, 1}, 1);
      addConst(m, "ba", {8}, 2);
      addConst(m, "wb", {4, 4, 3, 3}, 3);
      addConst(m, "bb", {4}, 4);
      addConst(m, "wd", {4, 8, 1, 1}, 5);
      addConst(m, "bd", {4}, 6);
      scaleOddChannels(m, {"wa"}, 0.01f);
      scaleOddChannels(m, {"wb"}, 0.01f, 4);
      return m;
    };
    Model m = c2f();
    auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"min_channels", 1}, {"round_to", 1}});
    CHECK(r.stats["splits_sliced"] == 1);
    CHECK(m.graph.nodes[1].attrInts("split") == std::vector<int64_t>{2, 2});
    CHECK(weightShape(m, "a") == Shape{4, 3, 1, 1});
    CHECK(weightShape(m, "b") == Shape{2, 2, 3, 3});
    CHECK(weightShape(m, "d") == Shape{4, 4, 1, 1});
    CHECK(r.stats["groups"] == 2);  // a's and d's; b's follows the Split and is counted there
    CHECK(notesWith(r.notes, "channels of output 1 of Split") == 1);
    CHECK(notesWith(r.notes, "and of Conv (output 'b'): kept 2 of 4 channels, those its input kept") == 1);
    Model zeroed = c2f();
    scaleOddChannels(zeroed, {"wa", "ba"}, 0.0f);
    scaleOddChannels(zeroed, {"wb", "bb"}, 0.0f, 4);
    CHECK(compareModels(zeroed, m, 1e-5).empty());
  }
  SECTION("a segment whose readers are left alone is kept whole, the others are still sliced") {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 11]>
g (float[N, 3, 6, 6] x) => (float[N, 2, 6, 6] s0, float[N, 4, 6, 6] d) {
  a = Conv (x, wa, ba)
  s0, s1 = Split <axis=1, split=[2, 6]> (a)
  d = Conv (s1, wd, bd)
})");
    addConst(m, "wa", {8, 3, 1, 1}, 1);
    addConst(m, "ba", {8}, 2);
    addConst(m, "wd", {4, 6, 1, 1}, 3);
    addConst(m, "bd", {4}, 4);
    scaleOddChannels(m, {"wa"}, 0.01f);  // the second segment (channels 2-7) loses 3, 5 and 7
    const Tensor wd0 = m.graph.initializers.at("wd");
    auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"min_channels", 1}, {"round_to", 1}});
    CHECK(r.stats["splits_sliced"] == 1);
    CHECK(m.graph.nodes[1].attrInts("split") == std::vector<int64_t>{2, 3});
    CHECK(weightShape(m, "a") == Shape{5, 3, 1, 1});
    CHECK(weightShape(m, "d") == Shape{4, 3, 1, 1});
    CHECK(notesWith(r.notes, "channels of output 0 of Split") == 1);
    CHECK(notesWith(r.notes, "left alone (graph output)") >= 1);
    const Tensor& wd1 = m.graph.initializers.at(m.graph.nodes[2].inputs[1]);
    for (int64_t o = 0; o < 4; ++o)
      for (int64_t k = 0; k < 3; ++k) REQUIRE(wd1.at(o * 3 + k) == wd0.at(o * 6 + 2 * k));
    CHECK(compareModels(m, m).empty());  // runs
  }
  SECTION("Splits it cannot follow leave the layer alone and say why") {
    const std::vector<std::pair<std::string, std::string>> cases = {
        {"s0, s1 = Split <axis=2> (a)", "(not along the channels)"},
        {"s0, s1 = Split <axis=1> (a, sp)", "(its split sizes are computed at run time)"},
        {"s0, s1 = Split <axis=1> (c)", "split by Split"},
        {"s0, s1 = Split <axis=1> (a)\n  t = Split <axis=1, split=[8]> (a)", "split by both"},
        {"s0, s1 = Split <axis=1> (a)\n  u = Add (s0, s1)", "outputs of Split"}};
    for (const auto& [line, why] : cases) {
      INFO(line);
      Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x, int64[2] sp) => (float y, float z) {
  a = Conv (x, wa, ba)
  c = Concat <axis=1> (a)
  )" + line + R"(
  y = Conv (s0, wy)
  z = Conv (s1, wy)
})");
      addConst(m, "wa", {8, 3, 1, 1}, 1);
      addConst(m, "ba", {8}, 2);
      addConst(m, "wy", {2, line.find("axis=2") != std::string::npos ? 8 : 4, 1, 1}, 3);
      const std::string before = serialized(m);
      auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
      CHECK_FALSE(r.changed);
      CHECK(serialized(m) == before);
      CHECK(notesWith(r.notes, why) >= 1);
    }
  }
}

TEST_CASE("prune_channels reads shapes after a channel shuffle sized from the input's shape", "[prune_channels]") {
  // ShuffleNetV2's shuffle as torch exports x.view(b, g, c // g, h, w): sizes computed from Shape,
  // so with a symbolic batch the shapes after it were unknown and every later group was left
  // alone. The shuffle itself stays (Shape and Reshape read a's channels); b's group is pruned.
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 4, 6, 6] y) {
  a = Conv (x, wa, ba)
  sh = Shape (a)
  n = Gather <axis=0> (sh, i0)
  c = Gather <axis=0> (sh, i1)
  h = Gather <axis=0> (sh, i2)
  w = Gather <axis=0> (sh, i3)
  cg = Div (c, two)
  nu = Unsqueeze (n, ax0)
  cgu = Unsqueeze (cg, ax0)
  hu = Unsqueeze (h, ax0)
  wu = Unsqueeze (w, ax0)
  cu = Unsqueeze (c, ax0)
  s5 = Concat <axis=0> (nu, two1, cgu, hu, wu)
  r5 = Reshape (a, s5)
  t = Transpose <perm=[0, 2, 1, 3, 4]> (r5)
  s4 = Concat <axis=0> (nu, cu, hu, wu)
  r4 = Reshape (t, s4)
  b = Conv (r4, wb, bb)
  rb = Relu (b)
  y = Conv (rb, wc, bc)
})");
  for (auto [name, v] : std::vector<std::pair<std::string, int64_t>>{{"i0", 0}, {"i1", 1}, {"i2", 2}, {"i3", 3}, {"two", 2}})
    m.graph.initializers.set(name, Tensor::fromVector<int64_t>({}, {v}));
  m.graph.initializers.set("two1", Tensor::fromVector<int64_t>({1}, {2}));
  m.graph.initializers.set("ax0", Tensor::fromVector<int64_t>({1}, {0}));
  addConst(m, "wa", {8, 3, 1, 1}, 1);
  addConst(m, "ba", {8}, 2);
  addConst(m, "wb", {8, 8, 1, 1}, 3);
  addConst(m, "bb", {8}, 4);
  addConst(m, "wc", {4, 8, 1, 1}, 5);
  addConst(m, "bc", {4}, 6);
  const Model original = m;
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"min_channels", 1}, {"round_to", 1}});
  CHECK(r.stats["groups_pruned"] == 1);
  CHECK(weightShape(m, "b") == Shape{4, 8, 1, 1});
  CHECK(weightShape(m, "y") == Shape{4, 4, 1, 1});
  CHECK(weightShape(m, "a") == Shape{8, 3, 1, 1});
  CHECK(notesWith(r.notes, "left alone (read by Shape") == 1);
  CHECK(compareModels(m, m).empty());  // runs
}

namespace {
// A pre-norm transformer MLP on tokens, as torch exports it at opset 17: Linear layers on the last
// axis (MatMul + Add of the bias), GELU written out with Erf, a residual Add.
Model tokenMlp() {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4, 6] x) => (float[N, 4, 6] y) {
  ln = LayerNormalization <axis=-1> (x, lg, lb)
  h = MatMul (ln, w1)
  hb = Add (b1, h)
  d = Div (hb, sqrt2)
  e = Erf (d)
  e1 = Add (e, one)
  g1 = Mul (hb, e1)
  g2 = Mul (g1, half)
  o = MatMul (g2, w2)
  ob = Add (b2, o)
  y = Add (x, ob)
})");
  addConst(m, "lg", {6}, 1);
  addConst(m, "lb", {6}, 2);
  addConst(m, "w1", {6, 8}, 3);
  addConst(m, "b1", {8}, 4);
  addConst(m, "w2", {8, 6}, 5);
  addConst(m, "b2", {6}, 6);
  m.graph.initializers.set("sqrt2", Tensor::fromVector<float>({}, {1.4142135f}));
  m.graph.initializers.set("one", Tensor::fromVector<float>({}, {1.0f}));
  m.graph.initializers.set("half", Tensor::fromVector<float>({}, {0.5f}));
  return m;
}

/// Multiplies the odd hidden channels (columns of w1, entries of b1) by `factor`.
void scaleOddHidden(Model& m, float factor) {
  float* w = m.graph.initializers.find("w1")->data<float>();
  float* b = m.graph.initializers.find("b1")->data<float>();
  for (int64_t c = 1; c < 8; c += 2) {
    for (int64_t k = 0; k < 6; ++k) w[k * 8 + c] *= factor;
    b[c] *= factor;
  }
}
}  // namespace

TEST_CASE("prune_channels slices a transformer MLP's hidden width on the last axis", "[prune_channels]") {
  Model m = tokenMlp();
  scaleOddHidden(m, 0.01f);  // l1 removes exactly the odd hidden channels
  Model zeroed = tokenMlp();
  scaleOddHidden(zeroed, 0.0f);  // GELU(0) = 0: what the pruned model computes
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"min_channels", 1}, {"round_to", 1}});
  INFO(joinNotes(r.notes));
  CHECK(r.stats["groups_pruned"] == 1);
  CHECK(weightShape(m, "h") == Shape{6, 4});
  CHECK(weightShape(m, "o") == Shape{4, 6});
  bool bias_sliced = false;
  for (const auto& n : m.graph.nodes)
    if (n.outputs[0] == "hb") bias_sliced = m.graph.initializers.at(n.inputs[0]).shape() == Shape{4};
  CHECK(bias_sliced);
  // The token stream (the second MatMul's output, the residual) keeps its channels.
  CHECK(notesWith(r.notes, "MatMul (output 'o'): left alone (read by LayerNormalization") == 1);
  CHECK(compareModels(zeroed, m, 1e-5).empty());

  SECTION("lsq re-fits the second MatMul from the kept hidden channels") {
    TempDir d;
    const DataSpec calib = npyData(d / "x.npy", randomFloat({256, 4, 6}, 31, -2.0f, 2.0f), 64);
    auto prune = [&](const char* recover) {
      Model p = tokenMlp();
      auto pass = passes::builtinPasses().create("prune_channels");
      pass->configure({{"ratio", 0.5}, {"recover", recover}, {"round_to", 1}, {"min_channels", 1}}, "p");
      PassContext ctx;
      ctx.calib = &calib;
      pass->run(p, ctx);
      return p;
    };
    const Tensor x = randomFloat({64, 4, 6}, 32, -2.0f, 2.0f);
    const Tensor y0 = engine::Session(tokenMlp()).runOrdered({{"x", x}})[0];
    const Model lsq = prune("lsq");
    const double plain = squaredError(prune("none"), "x", x, y0), fitted = squaredError(lsq, "x", x, y0);
    // The second Linear's bias, the constant of the Add after its MatMul, is fitted with its weights:
    // with the original bias put back the error is larger.
    Model old_bias = lsq;
    for (const auto& n : old_bias.graph.nodes)
      if (n.outputs[0] == "ob") old_bias.graph.initializers.set(n.inputs[0], tokenMlp().graph.initializers.at("b2"));
    const double unbiased = squaredError(old_bias, "x", x, y0);
    INFO("plain " << plain << " lsq " << fitted << " lsq with the original bias " << unbiased);
    CHECK(fitted < 0.5 * plain);
    CHECK(fitted < 0.9 * unbiased);
  }
}

TEST_CASE("prune_channels leaves channels alone that lie on axis 1 in one tensor and on the last axis in another",
          "[prune_channels]") {
  // A MatMul on an NCHW convolution's last axis (the width, 8 like the channels): slicing the
  // Conv's filters and the MatMul's rows together would be wrong.
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 8, 8, 5] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa)
  r = Relu (a)
  y = MatMul (r, wm)
})");
  addConst(m, "wa", {8, 3, 3, 3}, 1);
  addConst(m, "wm", {8, 5}, 2);
  const std::string before = serialized(m);
  auto r = runPass(m, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
  INFO(joinNotes(r.notes));
  CHECK_FALSE(r.changed);
  CHECK(serialized(m) == before);
  CHECK(notesWith(r.notes, "left alone (its channels are on axis 1 for Conv (output 'a') but on the last axis for MatMul (output 'y'))") == 1);

  SECTION("a bias along the width is not per channel") {
    Model b = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 8, 8] x) => (float[N, 4, 8, 8] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa)
  s = Add (a, c)
  y = Conv (s, wb)
})");
    addConst(b, "wa", {8, 3, 3, 3}, 1);
    addConst(b, "c", {8}, 3);  // broadcasts along the last axis (the width), not the channels
    addConst(b, "wb", {4, 8, 1, 1}, 2);
    const std::string before_b = serialized(b);
    auto rb = runPass(b, "prune_channels", {{"ratio", 0.5}, {"round_to", 1}});
    CHECK_FALSE(rb.changed);
    CHECK(serialized(b) == before_b);
    CHECK(notesWith(rb.notes, "on axis 1 for Conv") == 1);
  }
}

TEST_CASE("recovery after an earlier channel-pruning step matches the step's input, not the wider original", "[prune_channels][lsq]") {
  // In one pipeline the original model (ctx.reference) still has c2 with 16 channels after a
  // first step kept 12: a second channel step matched its kept channels by index to the wrong
  // original channels, a later magnitude step with lsq stopped with "reference output ... does not
  // match the layer", and recover bias skipped the layer.
  Model m0 = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 8, 6, 6] y) {
  c1 = Conv <pads=[1,1,1,1]> (x, w1, b1)
  r1 = Relu (c1)
  c2 = Conv <pads=[1,1,1,1]> (r1, w2, b2)
  r2 = Relu (c2)
  y = Conv <pads=[1,1,1,1]> (r2, w3, b3)
})");
  addConst(m0, "w1", {16, 3, 3, 3}, 1);
  addConst(m0, "b1", {16}, 2, -0.1f, 0.1f);
  addConst(m0, "w2", {16, 16, 3, 3}, 3, -0.3f, 0.3f);
  addConst(m0, "b2", {16}, 4, -0.1f, 0.1f);
  addConst(m0, "w3", {8, 16, 3, 3}, 5, -0.3f, 0.3f);
  addConst(m0, "b3", {8}, 6, -0.1f, 0.1f);
  TempDir d;
  const DataSpec calib = npyData(d / "x.npy", randomFloat({64, 3, 6, 6}, 7), 32);
  auto step = [&](Model& m, const Model& reference, const std::string& pass, const nlohmann::json& opts) {
    PassContext ctx;
    ctx.calib = &calib;
    ctx.reference = &reference;
    return runPass(m, pass, opts, ctx);
  };
  const nlohmann::json channels = {{"ratio", 0.25}, {"round_to", 1}, {"min_channels", 1}, {"recover", "lsq"}};
  Model m1 = m0;
  step(m1, m0, "prune_channels", channels);
  REQUIRE(weightShape(m1, "c2")[0] == 12);
  // A second channel step: c2 (no longer the original's shape) is fitted to the step's input, as a
  // separate run would; the output layer, the same shape in both, still to the original.
  Model in_pipeline = m1, separate = m1;
  step(in_pipeline, m0, "prune_channels", channels);
  step(separate, m1, "prune_channels", channels);
  auto weightsOf = [](const Model& m, const std::string& out) {
    for (const auto& n : m.graph.nodes)
      if (n.outputs[0] == out) return m.graph.initializers.at(n.inputs[1]);
    return Tensor();
  };
  REQUIRE(weightShape(in_pipeline, "c2")[0] == 9);
  CHECK(weightsOf(in_pipeline, "c2").bitEqual(weightsOf(separate, "c2")));
  // Magnitude pruning with lsq or bias after the channel step, in the same pipeline.
  for (const char* rec : {"lsq", "bias"}) {
    INFO(rec);
    Model m2 = m1;
    auto r = step(m2, m0, "prune_magnitude", {{"sparsity", 0.5}, {"min_params", 0}, {"recover", rec}});
    CHECK(notesWith(r.notes, "different shape") == 0);
    if (std::string(rec) == "lsq") CHECK(r.stats["layers_reconstructed"] == 3);
    else CHECK(r.stats["biases_corrected"] == 3);
  }
}
