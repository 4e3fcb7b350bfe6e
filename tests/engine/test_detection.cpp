// NonMaxSuppression (detection.cpp): the rules ONNX's backend cases leave open, by hand. Random
// boxes against ONNX Runtime: CTest ops_ort.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "support/engine_util.h"

using namespace lwc;
using namespace lwc::test;
using Catch::Matchers::Contains;

namespace {

std::vector<int64_t> selected(const std::vector<float>& boxes, const std::vector<float>& scores, int64_t max_out, float iou,
                              std::optional<float> score = std::nullopt, int64_t center = 0) {
  const int64_t n = static_cast<int64_t>(scores.size());
  std::vector<Tensor> ins{Tensor::fromVector<float>({1, n, 4}, boxes), Tensor::fromVector<float>({1, 1, n}, scores),
                          Tensor::fromVector<int64_t>({1}, {max_out}), Tensor::fromVector<float>({1}, {iou})};
  if (score) ins.push_back(Tensor::fromVector<float>({1}, {*score}));
  const Tensor y = runNode(makeSpec("NonMaxSuppression", ins, {attrInt("center_point_box", center)}, 13), true).at(0);
  REQUIRE(y.rank() == 2);
  std::vector<int64_t> boxes_kept;
  for (int64_t i = 0; i < y.dim(0); ++i) boxes_kept.push_back(y.data<int64_t>()[i * 3 + 2]);
  return boxes_kept;
}

}  // namespace

TEST_CASE("NonMaxSuppression: ties, thresholds and empty boxes as ONNX Runtime decides them", "[nn][nms]") {
  // Three identical unit boxes with equal scores: the lowest index wins, the others go.
  const std::vector<float> same{0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1};
  CHECK(selected(same, {0.5f, 0.5f, 0.5f}, 10, 0.5f) == std::vector<int64_t>{0});
  // Highest score first; a box is kept while its IoU with every kept box is at most the threshold.
  // Boxes 0 and 1 overlap with IoU 1/3 (two unit squares sharing half their width).
  const std::vector<float> half{0, 0, 1, 1, 0, 0.5f, 1, 1.5f, 5, 5, 6, 6};
  CHECK(selected(half, {0.6f, 0.9f, 0.1f}, 10, 0.5f) == std::vector<int64_t>{1, 0, 2});
  CHECK(selected(half, {0.6f, 0.9f, 0.1f}, 10, 0.3f) == std::vector<int64_t>{1, 2});
  CHECK(selected(half, {0.6f, 0.9f, 0.1f}, 2, 0.5f) == std::vector<int64_t>{1, 0});
  CHECK(selected(half, {0.6f, 0.9f, 0.1f}, 0, 0.5f).empty());  // max_output_boxes_per_class 0: nothing
  // score_threshold keeps scores strictly above it.
  CHECK(selected(half, {0.6f, 0.9f, 0.1f}, 10, 0.5f, 0.6f) == std::vector<int64_t>{1});
  // A box without area suppresses nothing and is suppressed by nothing.
  const std::vector<float> flat{0, 0, 1, 1, 0, 0, 1, 0};
  CHECK(selected(flat, {0.9f, 0.8f}, 10, 0.0f) == std::vector<int64_t>{0, 1});
  // A NaN score is left out, with or without score_threshold.
  CHECK(selected(half, {0.6f, std::numeric_limits<float>::quiet_NaN(), 0.1f}, 10, 0.5f) == std::vector<int64_t>{0, 2});
  // Flipped corners are the same box; center_point_box = 1 reads [x, y, w, h].
  CHECK(selected({0, 0, 1, 1, 1, 1, 0, 0}, {0.9f, 0.8f}, 10, 0.5f) == std::vector<int64_t>{0});
  CHECK(selected({0.5f, 0.5f, 1, 1, 0.5f, 1.0f, 1, 1}, {0.9f, 0.8f}, 10, 0.5f, std::nullopt, 1) == std::vector<int64_t>{0, 1});
  CHECK(selected({0.5f, 0.5f, 1, 1, 0.5f, 1.0f, 1, 1}, {0.9f, 0.8f}, 10, 0.3f, std::nullopt, 1) == std::vector<int64_t>{0});
}

TEST_CASE("NonMaxSuppression errors name the node and the problem", "[nn][nms]") {
  const Tensor boxes = randomFloat({1, 3, 4}, 1), scores = randomFloat({1, 2, 3}, 2);
  auto spec = [&](Tensor b, Tensor s, float iou) {
    return makeSpec("NonMaxSuppression", {b, s, Tensor::fromVector<int64_t>({1}, {5}), Tensor::fromVector<float>({1}, {iou})}, {}, 13);
  };
  CHECK(nodeError(spec(boxes, scores, 0.5f)) == "(no error)");
  CHECK_THAT(nodeError(spec(boxes, scores, 1.5f)), Contains("iou_threshold is 1.5; expected a value in [0, 1]"));
  CHECK_THAT(nodeError(spec(randomFloat({1, 3, 5}, 3), scores, 0.5f)), Contains("boxes have shape [1,3,5]; expected"));
  CHECK_THAT(nodeError(spec(boxes, randomFloat({1, 2, 4}, 4), 0.5f)), Contains("scores have shape [1,2,4]; expected [1, num_classes, 3]"));
}

TEST_CASE("GridSample errors name the node and the problem", "[nn][gridsample]") {
  const Tensor x = randomFloat({1, 2, 3, 4}, 1), grid = randomFloat({1, 5, 6, 2}, 2);
  auto spec = [&](Tensor a, Tensor g, std::vector<onnx::AttributeProto> attrs = {}) {
    return makeSpec("GridSample", {a, g}, std::move(attrs), 16);
  };
  CHECK(nodeError(spec(x, grid)) == "(no error)");
  CHECK(runNode(spec(x, grid), true).at(0).shape() == Shape{1, 2, 5, 6});
  CHECK_THAT(nodeError(spec(x, randomFloat({1, 5, 6, 3}, 3))), Contains("grid has shape [1,5,6,3]; expected [1, H_out, W_out, 2]"));
  CHECK_THAT(nodeError(spec(x, grid, {attrString("mode", "area")})), Contains("mode 'area' is not bilinear, nearest or bicubic"));
  CHECK_THAT(nodeError(spec(x, grid, {attrString("padding_mode", "wrap")})), Contains("padding_mode 'wrap'"));
  CHECK_THAT(nodeError(spec(randomFloat({1, 2, 3, 4, 5}, 4), randomFloat({1, 2, 3, 4, 3}, 5))), Contains("takes 4-D [N, C, H, W] inputs"));
}

TEST_CASE("GridSample reads zero at NaN and infinite grid points, in every mode", "[nn][gridsample]") {
  const Tensor x = randomFloat({1, 1, 3, 4}, 1, 0.5f, 1.0f);
  Tensor grid = randomFloat({1, 1, 3, 2}, 2);
  grid.data<float>()[0] = std::numeric_limits<float>::quiet_NaN();
  grid.data<float>()[3] = std::numeric_limits<float>::infinity();
  grid.data<float>()[4] = -std::numeric_limits<float>::infinity();
  for (const std::string mode : {"bilinear", "nearest", "bicubic"})
    for (const std::string pad : {"zeros", "border", "reflection"}) {
      INFO(mode << " " << pad);
      const Tensor y = runNode(makeSpec("GridSample", {x, grid}, {attrString("mode", mode), attrString("padding_mode", pad)}, 16), true).at(0);
      REQUIRE(y.numel() == 3);
      if (pad == "zeros") CHECK(y.data<float>()[0] == 0.0f);
    }
}

TEST_CASE("RoiAlign errors name the node and the problem", "[nn][roialign]") {
  const Tensor x = randomFloat({2, 3, 8, 8}, 1), rois = Tensor::fromVector<float>({1, 4}, {1, 1, 5, 6});
  auto spec = [&](Tensor r, Tensor b, std::vector<onnx::AttributeProto> attrs = {}) {
    return makeSpec("RoiAlign", {x, r, b}, std::move(attrs), 16);
  };
  const Tensor ok_batch = Tensor::fromVector<int64_t>({1}, {1});
  CHECK(nodeError(spec(rois, ok_batch)) == "(no error)");
  CHECK_THAT(nodeError(spec(rois, Tensor::fromVector<int64_t>({1}, {2}))), Contains("batch_indices[0] is 2; X has 2 images"));
  CHECK_THAT(nodeError(spec(Tensor::fromVector<float>({1, 3}, {1, 1, 5}), ok_batch)), Contains("rois have shape [1,3]"));
  CHECK_THAT(nodeError(spec(rois, ok_batch, {attrString("mode", "sum")})), Contains("mode 'sum' is not avg or max"));
}

namespace {
// The all-pairs greedy NonMaxSuppression of one class, written out from the definition (the
// kernel compares each box only with the kept boxes that overlap it along x): highest score first,
// ties by index, a box goes when its IoU with any kept box, in float, exceeds the threshold.
std::vector<int64_t> allPairsGreedy(const std::vector<float>& boxes, const std::vector<float>& scores, float iou,
                                    int64_t max_out) {
  struct B {
    float y1, x1, y2, x2;
  };
  auto at = [&](size_t i) {
    const float* b = &boxes[i * 4];
    return B{std::min(b[0], b[2]), std::min(b[1], b[3]), std::max(b[0], b[2]), std::max(b[1], b[3])};
  };
  std::vector<size_t> order;
  for (size_t i = 0; i < scores.size(); ++i)
    if (!std::isnan(scores[i])) order.push_back(i);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  std::vector<B> kept;
  std::vector<int64_t> out;
  for (size_t i : order) {
    const B b = at(i);
    bool gone = false;
    for (const B& k : kept) {
      const float iy = std::min(k.y2, b.y2) - std::max(k.y1, b.y1), ix = std::min(k.x2, b.x2) - std::max(k.x1, b.x1);
      if (iy <= 0 || ix <= 0) continue;
      const float inter = iy * ix, ak = (k.y2 - k.y1) * (k.x2 - k.x1), ab = (b.y2 - b.y1) * (b.x2 - b.x1);
      const float uni = ak + ab - inter;
      if (ak <= 0 || ab <= 0 || uni <= 0) continue;
      if (inter / uni > iou) {
        gone = true;
        break;
      }
    }
    if (gone) continue;
    kept.push_back(b);
    out.push_back(static_cast<int64_t>(i));
    if (static_cast<int64_t>(out.size()) == max_out) break;
  }
  return out;
}
}  // namespace

TEST_CASE("NonMaxSuppression over thousands of boxes in shifted classes keeps what the all-pairs greedy keeps", "[nn][nms]") {
  // torchvision's batched NMS: each class's boxes shifted apart by a multiple of the largest
  // coordinate, one NonMaxSuppression over all of them. Random sizes from a pixel to the whole
  // image (the widest kept box bounds the overlap query), flipped corners, boxes without area,
  // exact duplicates, tied scores, and a few coordinates that are not finite.
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  const int64_t classes = 8, per = 500, n = classes * per;
  std::vector<float> boxes(static_cast<size_t>(n * 4)), scores(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float off = static_cast<float>(i / per) * 400.0f;
    const float w = u(rng) < 0.05f ? 320.0f : 1.0f + 80.0f * u(rng) * u(rng), h = 1.0f + 80.0f * u(rng);
    const float y = off + 300.0f * u(rng), x = off + 300.0f * u(rng);
    float* b = &boxes[static_cast<size_t>(i * 4)];
    b[0] = y, b[1] = x, b[2] = y + h, b[3] = x + w;
    if (i % 97 == 0) std::swap(b[1], b[3]);           // flipped
    if (i % 89 == 0) b[2] = b[0];                      // no area
    if (i % 83 == 0 && i >= 4) std::copy(b - 4, b, b);  // the previous box again
    scores[static_cast<size_t>(i)] = std::round(u(rng) * 200.0f) / 200.0f;  // many ties
  }
  boxes[4 * 301 + 1] = std::numeric_limits<float>::quiet_NaN();
  boxes[4 * 1201 + 3] = std::numeric_limits<float>::infinity();
  boxes[4 * 2202 + 0] = -std::numeric_limits<float>::infinity();
  // A wide kept box suppresses a small one at its far end: x1 1000 apart, width 1010.
  CHECK(selected({0, 0, 10, 1010, 0, 1000, 10, 1010, 0, 2000, 10, 2010}, {0.9f, 0.5f, 0.4f}, 10, 0.005f) ==
        std::vector<int64_t>{0, 2});
  for (const float iou : {0.0f, 0.3f, 0.5f, 0.9f}) {
    INFO("iou_threshold " << iou);
    const std::vector<int64_t> want = allPairsGreedy(boxes, scores, iou, n);
    CHECK(want.size() > 200);
    CHECK(want.size() < static_cast<size_t>(n));
    CHECK(selected(boxes, scores, n, iou) == want);
    CHECK(selected(boxes, scores, 100, iou) == std::vector<int64_t>(want.begin(), want.begin() + 100));
  }
}
