// Detection post-processing: NonMaxSuppression (opsets 10-22).
//
// Per batch and class, greedy as ONNX Runtime computes it: the boxes whose score is above
// score_threshold (when given), highest score first (ties: lower box index first); a box is kept
// unless its IoU with a kept box exceeds iou_threshold (boxes without area, or not overlapping,
// never suppress), until max_output_boxes_per_class are kept (0, or omitted: none). Corner boxes
// may be flipped ([y1, x1, y2, x2] in any order); center_point_box = 1 reads [x, y, w, h]. IoU in
// the boxes' own precision (float32 for float32 and float16 boxes).
#include <algorithm>
#include <numeric>
#include <vector>

#include "engine/kernel.h"
#include "engine/kernels/common.h"

namespace lwc::engine {

namespace {

template <typename T>
struct Box {
  T y1, x1, y2, x2;
  T area() const { return (y2 - y1) * (x2 - x1); }
};

template <typename T>
Box<T> boxAt(const T* b, bool center) {
  if (center) {
    const T hw = b[2] / 2, hh = b[3] / 2;
    return {b[1] - hh, b[0] - hw, b[1] + hh, b[0] + hw};
  }
  return {std::min(b[0], b[2]), std::min(b[1], b[3]), std::max(b[0], b[2]), std::max(b[1], b[3])};
}

template <typename T>
bool suppresses(const Box<T>& a, const Box<T>& b, T threshold) {
  const T iy = std::min(a.y2, b.y2) - std::max(a.y1, b.y1), ix = std::min(a.x2, b.x2) - std::max(a.x1, b.x1);
  if (iy <= 0 || ix <= 0) return false;
  const T inter = iy * ix, aa = a.area(), ab = b.area(), uni = aa + ab - inter;
  if (aa <= 0 || ab <= 0 || uni <= 0) return false;
  return inter / uni > threshold;
}

// An optional scalar input (one value of any shape), or `dflt` when omitted.
double scalarInput(const KernelContext& ctx, size_t i, const char* what, double dflt) {
  if (!ctx.has(i)) return dflt;
  const Tensor& t = ctx.in(i);
  if (t.numel() != 1) ctx.error(what, " has ", t.numel(), " values; expected one");
  switch (t.dtype()) {
    case DType::Int64: return static_cast<double>(t.data<int64_t>()[0]);
    case DType::Int32: return t.data<int32_t>()[0];
    case DType::Float32: return t.data<float>()[0];
    case DType::Float64: return t.data<double>()[0];
    default: ctx.error(what, " is ", dtypeName(t.dtype()), "; expected ", i == 2 ? "int64" : "float32");
  }
}

template <typename T>
void nms(KernelContext& ctx, const Tensor& boxes, const Tensor& scores) {
  const int64_t batches = boxes.dim(0), n = boxes.dim(1), classes = scores.dim(1);
  const double max_out_d = scalarInput(ctx, 2, "max_output_boxes_per_class", 0);
  const int64_t max_out = max_out_d <= 0 ? 0 : static_cast<int64_t>(std::min(max_out_d, static_cast<double>(n)));
  const double iou = scalarInput(ctx, 3, "iou_threshold", 0);
  if (!(iou >= 0 && iou <= 1)) ctx.error("iou_threshold is ", iou, "; expected a value in [0, 1]");
  const bool has_score = ctx.has(4);
  const T score_min = static_cast<T>(scalarInput(ctx, 4, "score_threshold", 0));
  const int64_t center = ctx.node.attrInt("center_point_box", 0);
  if (center != 0 && center != 1) ctx.error("center_point_box is ", center, "; expected 0 or 1");
  const T* bd = boxes.data<T>();
  const T* sd = scores.data<T>();
  std::vector<int64_t> out;
  std::vector<int64_t> order;
  std::vector<Box<T>> kept;
  for (int64_t b = 0; b < batches && max_out > 0; ++b) {
    const T* bb = bd + b * n * 4;
    for (int64_t c = 0; c < classes; ++c) {
      const T* s = sd + (b * classes + c) * n;
      order.clear();
      for (int64_t i = 0; i < n; ++i)
        if (!has_score || s[i] > score_min) order.push_back(i);
      std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return s[x] > s[y]; });
      kept.clear();
      for (int64_t i : order) {
        const Box<T> box = boxAt(bb + i * 4, center == 1);
        if (std::any_of(kept.begin(), kept.end(), [&](const Box<T>& k) { return suppresses(k, box, static_cast<T>(iou)); }))
          continue;
        kept.push_back(box);
        out.insert(out.end(), {b, c, i});
        if (static_cast<int64_t>(kept.size()) == max_out) break;
      }
    }
  }
  Tensor& y = ctx.alloc(0, DType::Int64, {static_cast<int64_t>(out.size() / 3), 3});
  std::copy(out.begin(), out.end(), y.data<int64_t>());
}

void nonMaxSuppression(KernelContext& ctx) {
  const Tensor& boxes = ctx.in(0);
  const Tensor& scores = ctx.in(1);
  if (boxes.rank() != 3 || boxes.dim(2) != 4)
    ctx.error("boxes have shape ", shapeStr(boxes.shape()), "; expected [num_batches, spatial_dimension, 4]");
  if (scores.rank() != 3 || scores.dim(0) != boxes.dim(0) || scores.dim(2) != boxes.dim(1))
    ctx.error("scores have shape ", shapeStr(scores.shape()), "; expected [", boxes.dim(0), ", num_classes, ", boxes.dim(1),
              "] for boxes ", shapeStr(boxes.shape()));
  if (boxes.dtype() != scores.dtype()) ctx.error("boxes are ", dtypeName(boxes.dtype()), " but scores ", dtypeName(scores.dtype()));
  switch (boxes.dtype()) {
    case DType::Float32: return nms<float>(ctx, boxes, scores);
    case DType::Float64: return nms<double>(ctx, boxes, scores);
    case DType::Float16: return nms<float>(ctx, boxes.cast(DType::Float32), scores.cast(DType::Float32));
    default: ctx.error("boxes are ", dtypeName(boxes.dtype()), "; this op takes float16, float32 or float64");
  }
}

}  // namespace

void registerDetectionKernels(KernelRegistry& r) { r.addFn("NonMaxSuppression", 10, 22, nonMaxSuppression); }

}  // namespace lwc::engine
