#include <catch2/catch.hpp>

#include <cstring>
#include <random>

#include "lwc/engine.h"
#include "lwc/model_io.h"
#include "passes/activation_cut.h"
#include "passes/lsq_recovery.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;

namespace {

// Seeded batches of 4, 4 and 2 Fashion-MNIST-shaped inputs.
std::vector<Tensor> inputBatches() {
  std::vector<Tensor> batches;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t n : {4, 4, 2}) {
    Tensor t(DType::Float32, {n, 1, 28, 28});
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = u(rng);
    batches.push_back(t);
  }
  return batches;
}

bool sameBits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), static_cast<size_t>(a.numel()) * dtypeSize(a.dtype())) == 0;
}

std::vector<size_t> convNodes(const Model& m) {
  std::vector<size_t> idx;
  for (size_t i = 0; i < m.graph.nodes.size(); ++i)
    if (m.graph.nodes[i].op_type == "Conv" || m.graph.nodes[i].op_type == "Gemm") idx.push_back(i);
  return idx;
}

// One pass of `cut` for tensor `value` (cut at `upto`) against a session of the model truncated to it.
void checkPass(passes::ActivationCut& cut, const Model& m, size_t upto, const std::string& value,
               const std::vector<Tensor>& batches) {
  engine::Session whole(passes::truncatedTo(m, value));
  cut.begin(m, upto, value);
  for (size_t b = 0; b < batches.size(); ++b) {
    const Tensor got = cut.get(b, batches[b]);
    const Tensor want = whole.runOrdered({{whole.inputNames().at(0), batches[b]}}).at(0);
    INFO("value " << value << ", batch " << b << ", cut at node " << cut.position());
    REQUIRE(sameBits(got, want));
  }
  cut.finish();
}

}  // namespace

TEST_CASE("ActivationCut gives the bits of the whole model, layer after layer, and keeps the cut",
          "[activation_cut]") {
  const Model m = loadModel(test::testdataDir() / "resnet_fmnist.onnx");  // residual Adds: cuts cross two tensors
  const auto batches = inputBatches();
  const auto layers = convNodes(m);
  REQUIRE(layers.size() > 8);
  const auto safe = passes::ActivationCut::safeCuts(m.graph, "input");
  // Not before the projection shortcut's Conv (node 22): the block's second BatchNormalization
  // output crosses it, and only the Add reads it, which the engine fuses into the Conv before it
  // in the whole model but into the shortcut Conv in a graph that starts at the cut.
  REQUIRE(m.graph.nodes.at(22).name == "/layers/layers.2/shortcut/shortcut.0/Conv");
  CHECK(!safe[22]);
  CHECK(safe[17]);  // before the block: one tensor, read by two Convs
  // Not inside an identity block nor before it: its input crosses, and the block's Add reads it
  // (fused as a sum post-op into the block's last Conv in the whole model; a separate Add when
  // the tensor is fed).
  CHECK(!safe[29]);
  CHECK(!safe[26]);
  passes::ActivationCut cut(10, {}, int64_t{1} << 30);
  size_t moved = 0;
  for (size_t k = 1; k < layers.size(); ++k) {
    const size_t idx = layers[k];
    const size_t before = cut.position();
    checkPass(cut, m, idx, m.graph.nodes[idx].inputs[0], batches);
    size_t last_safe = idx;
    while (!safe[last_safe]) --last_safe;
    CHECK(cut.position() == std::max(before, last_safe));
    moved += cut.position() > before;
  }
  CHECK(moved >= 2);  // before the two projection blocks
  CHECK(cut.keptBytes() > 0);
  // A tensor before the cut that the cut does not keep: starts again from the input.
  const size_t first = layers[1];
  checkPass(cut, m, first, m.graph.nodes[first].outputs[0], batches);
  CHECK(cut.position() <= first);
}

TEST_CASE("ActivationCut sees changes to nodes after the cut, as lsq makes them", "[activation_cut]") {
  Model m = loadModel(test::testdataDir() / "mnv2_fmnist.onnx");
  const auto batches = inputBatches();
  const auto layers = convNodes(m);
  passes::ActivationCut cut(10, {}, int64_t{1} << 30);
  for (size_t k = 1; k < 6; ++k) {
    const size_t idx = layers[k];
    checkPass(cut, m, idx, m.graph.nodes[idx].inputs[0], batches);
    // Re-fit this layer: scale its weights (a new tensor, as lsqRecover writes one).
    const std::string w = m.graph.nodes[idx].inputs[1];
    Tensor scaled = m.graph.initializers.find(w)->clone();
    for (int64_t i = 0; i < scaled.numel(); ++i) scaled.data<float>()[i] *= 0.5f;
    m.graph.initializers.set(w, std::move(scaled));
  }
}

TEST_CASE("ActivationCut keeps no cut over its budget and still gives the right tensors", "[activation_cut]") {
  const Model m = loadModel(test::testdataDir() / "resnet_fmnist.onnx");
  const auto batches = inputBatches();
  const auto layers = convNodes(m);
  passes::ActivationCut none(10, {}, 0);
  for (size_t k = 1; k < 4; ++k) {
    checkPass(none, m, layers[k], m.graph.nodes[layers[k]].inputs[0], batches);
    CHECK(none.position() == 0);
    CHECK(none.keptBytes() == 0);
  }
  // With a budget that one cut fits and a later, larger one does not: the passes after it run from
  // the cut kept, which stays. (The cut is sized from its first batch: 4 of 10 samples, 3 batches.)
  auto probe = [&](size_t k, int64_t& bytes) {
    passes::ActivationCut c(10, {}, int64_t{1} << 30);
    checkPass(c, m, layers[k], m.graph.nodes[layers[k]].inputs[0], batches);
    bytes = c.keptBytes() / 10 * 12;
    return c.position();
  };
  int64_t budget = 0, larger_bytes = 0;
  size_t first = 1, at = 0;
  while (first < layers.size() && (at = probe(first, budget)) == 0) ++first;
  REQUIRE(at > 0);
  size_t larger = first + 1;
  while (larger < layers.size() && (probe(larger, larger_bytes) <= at || larger_bytes <= budget)) ++larger;
  REQUIRE(larger < layers.size());
  passes::ActivationCut small(10, {}, budget);
  checkPass(small, m, layers[first], m.graph.nodes[layers[first]].inputs[0], batches);
  CHECK(small.position() == at);
  const int64_t kept = small.keptBytes();
  checkPass(small, m, layers[larger], m.graph.nodes[layers[larger]].inputs[0], batches);
  CHECK(small.position() == at);
  CHECK(small.keptBytes() == kept);
}

TEST_CASE("ActivationCut does not cut where a fed tensor reaches an Add through a MaxPool", "[activation_cut]") {
  // torchvision resnet's stem: the MaxPool's output is the first block's input and its skip.
  Model m = test::parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 1, 28, 28] x) => (float[N, 8, 14, 14] y) {
  a = Conv <pads=[1,1,1,1]> (x, wa, ba)
  r = Relu (a)
  p = MaxPool <kernel_shape=[2,2], strides=[2,2]> (r)
  b = Conv <pads=[1,1,1,1]> (p, wb, bb)
  rb = Relu (b)
  c = Conv <pads=[1,1,1,1]> (rb, wc, bc)
  s = Add (c, p)
  r2 = Relu (s)
  y = Conv <pads=[1,1,1,1]> (r2, wd, bd)
})");
  test::addConst(m, "wa", {8, 1, 3, 3}, 1);
  test::addConst(m, "ba", {8}, 2);
  test::addConst(m, "wb", {8, 8, 3, 3}, 3);
  test::addConst(m, "bb", {8}, 4);
  test::addConst(m, "wc", {8, 8, 3, 3}, 5);
  test::addConst(m, "bc", {8}, 6);
  test::addConst(m, "wd", {8, 8, 3, 3}, 7);
  test::addConst(m, "bd", {8}, 8);
  const auto safe = passes::ActivationCut::safeCuts(m.graph, "x");
  REQUIRE(safe.size() == 10);
  // Before the MaxPool, before the first block Conv, and inside the block: the MaxPool's output
  // would reach the Add (in the whole model the Add is a sum post-op of Conv c, NHWC).
  for (size_t p : {2, 3, 4, 5, 6, 7}) {
    INFO("cut before node " << p);
    CHECK(!safe[p]);
  }
  CHECK(safe[8]);  // before the last Conv: one tensor, read by a Conv
  const auto batches = inputBatches();
  passes::ActivationCut cut(10, {}, int64_t{1} << 30);
  for (size_t idx : {3, 5, 8}) checkPass(cut, m, idx, m.graph.nodes[idx].inputs[0], batches);
  CHECK(cut.position() == 8);
  checkPass(cut, m, 9, "y", batches);
}

TEST_CASE("ActivationCut recomputes Constant nodes after the cut instead of keeping them", "[activation_cut]") {
  // tinyformer's Reshapes and Gathers read Constant nodes' outputs far from them: fed as inputs,
  // they would no longer be constants to the engine (other kernels, other bits).
  const Model m = loadModel(test::testdataDir() / "tinyformer_fmnist.onnx");
  const auto constant = passes::ActivationCut::constantNodes(m.graph);
  std::vector<size_t> layers;
  for (size_t i = 0; i < m.graph.nodes.size(); ++i) {
    const Node& n = m.graph.nodes[i];
    if (n.op_type == "Constant") CHECK(constant[i]);
    if (n.op_type == "MatMul" && m.graph.initializers.contains(n.inputs[1])) layers.push_back(i);
  }
  REQUIRE(layers.size() >= 8);
  const auto batches = inputBatches();
  passes::ActivationCut cut(10, {}, int64_t{1} << 30);
  for (size_t idx : layers) checkPass(cut, m, idx, m.graph.nodes[idx].inputs[0], batches);
  // Every block's input reaches a residual Add, so the only cut is after the patch embedding.
  CHECK(cut.position() > 0);
}
