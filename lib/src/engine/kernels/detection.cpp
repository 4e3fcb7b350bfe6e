// Detection and spatial sampling: NonMaxSuppression (opsets 10-22), GridSample (opsets 16-19),
// RoiAlign (opsets 10-22).
//
// NonMaxSuppression, per batch and class, greedy as ONNX Runtime computes it: the boxes whose
// score is above score_threshold (when given; a NaN score never is), highest score first (ties:
// lower box index first); a box is kept unless its IoU with a kept box exceeds iou_threshold (boxes
// without area, or not overlapping, never suppress), until max_output_boxes_per_class are kept (0,
// or omitted: none). Corner boxes may be flipped ([y1, x1, y2, x2] in any order);
// center_point_box = 1 reads [x, y, w, h]. IoU in the boxes' own precision (float32 for float32
// and float16 boxes).
// A box is only compared with the kept boxes that overlap it along x (KeptIndex): the others
// cannot suppress it, so the result is the all-pairs greedy's. Detection heads give one
// NonMaxSuppression tens of thousands of boxes (torchvision's batched NMS shifts each class's boxes
// apart and runs them as one class: SSDlite 320 with a score threshold of 0, 26 000 boxes), where
// comparing each with every kept box took most of the run (the whole model 329-352 ms, now 74-81
// ms at batch 1 on a 2-core AVX2 EPYC, 2026-12-07).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
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

// The kept boxes of one class, for the question "does a kept box suppress this one?". A kept box k
// can only suppress b if they overlap along x: k.x1 < b.x2 and k.x2 > b.x1 (suppresses() needs
// min(x2) - max(x1) > 0), and k.x2 > b.x1 needs k.x1 > b.x1 - (k.x2 - k.x1) >= b.x1 - W, W the
// widest kept box. So the candidates are the kept boxes with x1 in (b.x1 - W, b.x2), found in a
// vector ordered by x1 (each kept box inserted in place: contiguous scans beat a tree's, SSDlite
// 97-98 -> 72-74 ms); the bound is computed in double with a margin, a superset of the exact one.
// Boxes with a coordinate that is not finite are kept aside and compared with every box, and a
// query box with one is compared with every kept box (such boxes never suppress or are suppressed,
// but that is the all-pairs test's outcome, not an assumption here).
template <typename T>
class KeptIndex {
 public:
  void clear() {
    by_x1_.clear();
    odd_.clear();
    width_ = 0;
  }
  size_t size() const { return by_x1_.size() + odd_.size(); }
  void add(const Box<T>& b) {
    if (!finite(b)) return odd_.push_back(b);
    const auto at = std::upper_bound(by_x1_.begin(), by_x1_.end(), b.x1, [](T v, const Box<T>& k) { return v < k.x1; });
    by_x1_.insert(at, b);
    width_ = std::max(width_, static_cast<double>(b.x2) - static_cast<double>(b.x1));
  }
  bool suppressed(const Box<T>& b, T threshold) const {
    auto by = [&](const Box<T>& k) { return suppresses(k, b, threshold); };
    if (std::any_of(odd_.begin(), odd_.end(), by)) return true;
    if (!finite(b)) return std::any_of(by_x1_.begin(), by_x1_.end(), by);
    // lo below b.x1 - W with room for the rounding of the subtraction, then a T at or below it.
    const double x1 = b.x1, lo = std::max<double>(x1 - width_ - (std::abs(x1) + width_) * 1e-9,
                                                  std::numeric_limits<T>::lowest());
    T lo_t = static_cast<T>(lo);
    if (static_cast<double>(lo_t) > lo) lo_t = std::nextafter(lo_t, std::numeric_limits<T>::lowest());
    auto it = std::lower_bound(by_x1_.begin(), by_x1_.end(), lo_t, [](const Box<T>& k, T v) { return k.x1 < v; });
    for (; it != by_x1_.end() && it->x1 < b.x2; ++it)
      if (by(*it)) return true;
    return false;
  }

 private:
  static bool finite(const Box<T>& b) {
    return std::isfinite(static_cast<double>(b.y1)) && std::isfinite(static_cast<double>(b.x1)) &&
           std::isfinite(static_cast<double>(b.y2)) && std::isfinite(static_cast<double>(b.x2));
  }
  std::vector<Box<T>> by_x1_;  ///< the finite kept boxes, ordered by x1
  std::vector<Box<T>> odd_;    ///< the others
  double width_ = 0;
};

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
  KeptIndex<T> kept;
  for (int64_t b = 0; b < batches && max_out > 0; ++b) {
    const T* bb = bd + b * n * 4;
    for (int64_t c = 0; c < classes; ++c) {
      const T* s = sd + (b * classes + c) * n;
      order.clear();
      for (int64_t i = 0; i < n; ++i)  // a NaN score has no rank: left out (sorting it would be undefined)
        if (!std::isnan(static_cast<double>(s[i])) && (!has_score || s[i] > score_min)) order.push_back(i);
      std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return s[x] > s[y]; });
      kept.clear();
      for (int64_t i : order) {
        const Box<T> box = boxAt(bb + i * 4, center == 1);
        if (kept.suppressed(box, static_cast<T>(iou))) continue;
        kept.add(box);
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

// ---------------------------------------------------------------------------------------------
// GridSample (opsets 16-19, 4-D): X [N, C, H, W] read at grid [N, Ho, Wo, 2] (x, y in [-1, 1]), as
// PyTorch's grid_sample and ONNX Runtime compute it: bilinear and nearest sample at the source
// coordinate after border clipping or reflection; bicubic (A = -0.75) pads each of its 16 taps.

// Reflects v into [lo2 / 2, hi2 / 2] (bounds given doubled), as PyTorch's reflect_coordinates.
double reflect(double v, double lo2, double hi2) {
  if (lo2 == hi2) return 0;
  if (!std::isfinite(v)) return v;  // NaN stays NaN (it reads 0); an infinity is clamped by the caller
  const double lo = lo2 / 2, span = (hi2 - lo2) / 2;
  v = std::fabs(v - lo);
  const double extra = std::fmod(v, span);
  const int64_t flips = static_cast<int64_t>(std::floor(v / span));
  return flips % 2 == 0 ? extra + lo : span - extra + lo;
}

struct Sampler {
  int64_t h, w;
  bool align;
  int padding;  // 0 zeros, 1 border, 2 reflection

  double unnormalize(double g, int64_t size) const { return align ? (g + 1) / 2 * (size - 1) : ((g + 1) * size - 1) / 2; }
  // Border and reflection: the coordinate moved inside the image.
  double inside(double v, int64_t size) const {
    if (padding == 1) return std::clamp(v, 0.0, static_cast<double>(size - 1));
    if (padding == 2) {
      v = align ? reflect(v, 0, 2.0 * (size - 1)) : reflect(v, -1, 2.0 * size - 1);
      return std::clamp(v, 0.0, static_cast<double>(size - 1));
    }
    return v;
  }
  // weight * pixel (y, x) of a plane (whole numbers held in doubles), nothing outside it: a tap
  // there adds nothing, whatever its weight (a NaN or infinite grid value reads 0, as in PyTorch's
  // bilinear sampling); the bounds are compared before any conversion to an integer.
  template <typename T>
  double tap(const T* plane, double y, double x, double weight) const {
    if (!(y >= 0 && y < static_cast<double>(h) && x >= 0 && x < static_cast<double>(w))) return 0.0;
    return weight * static_cast<double>(plane[static_cast<int64_t>(y) * w + static_cast<int64_t>(x)]);
  }
};

double cubic1(double x) { return ((1.25 * x) - 2.25) * x * x + 1; }                      // |x| <= 1, A = -0.75
double cubic2(double x) { return ((-0.75 * x + 3.75) * x - 6.0) * x + 3.0; }                // 1 < |x| < 2

template <typename T>
void gridSampleTyped(KernelContext& ctx, const Tensor& x, const Tensor& grid, int mode, const Sampler& base) {
  const int64_t n = x.dim(0), c = x.dim(1), ho = grid.dim(1), wo = grid.dim(2);
  Tensor y(x.dtype(), {n, c, ho, wo});
  const T* xd = x.data<T>();
  const T* gd = grid.data<T>();
  T* yd = y.data<T>();
  const Sampler s = base;
#pragma omp parallel for schedule(static) if (n * c * ho * wo > 16384)
  for (int64_t nc = 0; nc < n * c; ++nc) {
    const int64_t b = nc / c;
    const T* plane = xd + nc * s.h * s.w;
    for (int64_t i = 0; i < ho * wo; ++i) {
      const T* g = gd + (b * ho * wo + i) * 2;
      double ix = s.unnormalize(static_cast<double>(g[0]), s.w), iy = s.unnormalize(static_cast<double>(g[1]), s.h);
      double v = 0;
      if (mode == 2) {  // bicubic: every tap padded on its own
        const double fx = std::floor(ix), fy = std::floor(iy), tx = ix - fx, ty = iy - fy;
        const double cx[4] = {cubic2(tx + 1), cubic1(tx), cubic1(1 - tx), cubic2(2 - tx)};
        const double cy[4] = {cubic2(ty + 1), cubic1(ty), cubic1(1 - ty), cubic2(2 - ty)};
        for (int p = 0; p < 4; ++p)
          for (int q = 0; q < 4; ++q) v += s.tap(plane, s.inside(fy - 1 + p, s.h), s.inside(fx - 1 + q, s.w), cy[p] * cx[q]);
      } else {
        ix = s.inside(ix, s.w);
        iy = s.inside(iy, s.h);
        if (mode == 1) {  // nearest, halves to even
          v = s.tap(plane, std::nearbyint(iy), std::nearbyint(ix), 1.0);
        } else {
          const double x0 = std::floor(ix), y0 = std::floor(iy), tx = ix - x0, ty = iy - y0;
          v = s.tap(plane, y0, x0, (1 - ty) * (1 - tx)) + s.tap(plane, y0, x0 + 1, (1 - ty) * tx) +
              s.tap(plane, y0 + 1, x0, ty * (1 - tx)) + s.tap(plane, y0 + 1, x0 + 1, ty * tx);
        }
      }
      yd[nc * ho * wo + i] = static_cast<T>(v);
    }
  }
  ctx.outputs[0] = std::move(y);
}

void gridSample(KernelContext& ctx) {
  const bool half = ctx.in(0).dtype() == DType::Float16;
  const Tensor x = half ? ctx.in(0).cast(DType::Float32) : ctx.in(0);
  const Tensor grid = ctx.in(1).dtype() == DType::Float16 ? ctx.in(1).cast(DType::Float32) : ctx.in(1);
  if (x.rank() != 4) ctx.unsupported("input X has shape ", shapeStr(x.shape()), "; lwc's GridSample takes 4-D [N, C, H, W] inputs");
  if (grid.rank() != 4 || grid.dim(0) != x.dim(0) || grid.dim(3) != 2)
    ctx.error("grid has shape ", shapeStr(grid.shape()), "; expected [", x.dim(0), ", H_out, W_out, 2]");
  if (grid.dtype() != x.dtype()) ctx.error("grid is ", dtypeName(grid.dtype()), " but X is ", dtypeName(x.dtype()));
  const std::string mode = ctx.node.attrString("mode", "bilinear"), pad = ctx.node.attrString("padding_mode", "zeros");
  const int m = mode == "bilinear" || mode == "linear" ? 0 : mode == "nearest" ? 1 : mode == "bicubic" || mode == "cubic" ? 2 : -1;
  if (m < 0) ctx.error("mode '", mode, "' is not bilinear, nearest or bicubic");
  const int p = pad == "zeros" ? 0 : pad == "border" ? 1 : pad == "reflection" ? 2 : -1;
  if (p < 0) ctx.error("padding_mode '", pad, "' is not zeros, border or reflection");
  const Sampler s{x.dim(2), x.dim(3), ctx.node.attrInt("align_corners", 0) != 0, p};
  switch (x.dtype()) {
    case DType::Float32: gridSampleTyped<float>(ctx, x, grid, m, s); break;
    case DType::Float64: gridSampleTyped<double>(ctx, x, grid, m, s); break;
    default: ctx.error("input X is ", dtypeName(x.dtype()), "; this op takes float16, float32 or float64");
  }
  if (half) ctx.outputs[0] = ctx.outputs[0].cast(DType::Float16);
}

// ---------------------------------------------------------------------------------------------
// RoiAlign (opsets 10-22): per region of interest [x1, y1, x2, y2] (times spatial_scale; opset 16's
// default half_pixel shifts by half a pixel, output_half_pixel and opset 10 do not and make the
// region at least 1 x 1), output_height x output_width bins, each averaging (or, mode max, taking
// the largest) sampling_ratio x sampling_ratio bilinear samples (0: ceil(bin size) per axis), as
// ONNX Runtime computes them: a sample more than one pixel outside the image reads 0; max mode takes
// the largest of each sample's four weighted corners.
void roiAlign(KernelContext& ctx, bool opset16) {
  const Tensor& x = ctx.in(0);
  const Tensor rois = ctx.in(1).cast(DType::Float64);
  const Tensor& bi = ctx.in(2);
  if (x.rank() != 4) ctx.error("input X has shape ", shapeStr(x.shape()), "; expected [N, C, H, W]");
  if (rois.rank() != 2 || rois.dim(1) != 4) ctx.error("rois have shape ", shapeStr(rois.shape()), "; expected [num_rois, 4]");
  if ((bi.dtype() != DType::Int64 && bi.dtype() != DType::Int32) || bi.shape() != Shape{rois.dim(0)})
    ctx.error("batch_indices are ", dtypeName(bi.dtype()), " ", shapeStr(bi.shape()), "; expected int64 [", rois.dim(0), "]");
  const Node& node = ctx.node;
  const std::string mode = node.attrString("mode", "avg");
  if (mode != "avg" && mode != "max") ctx.error("mode '", mode, "' is not avg or max");
  const std::string ctm = node.attrString("coordinate_transformation_mode", "half_pixel");
  if (ctm != "half_pixel" && ctm != "output_half_pixel")
    ctx.error("coordinate_transformation_mode '", ctm, "' is not half_pixel or output_half_pixel");
  const bool half_pixel = opset16 && ctm == "half_pixel";
  const int64_t oh = node.attrInt("output_height", 1), ow = node.attrInt("output_width", 1), ratio = node.attrInt("sampling_ratio", 0);
  if (oh <= 0 || ow <= 0 || ratio < 0) ctx.error("output_height, output_width must be positive and sampling_ratio not negative");
  const double scale = node.attrFloat("spatial_scale", 1.0f);
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), w = x.dim(3), nr = rois.dim(0);
  const DType out_type = ctx.in(0).dtype();
  Tensor y(DType::Float64, {nr, c, oh, ow});
  const Tensor xd = x.cast(DType::Float64);
  for (int64_t r = 0; r < nr; ++r) {
    const int64_t b = bi.dtype() == DType::Int64 ? bi.data<int64_t>()[r] : bi.data<int32_t>()[r];
    if (b < 0 || b >= n) ctx.error("batch_indices[", r, "] is ", b, "; X has ", n, " images");
    const double* roi = rois.data<double>() + r * 4;
    const double off = half_pixel ? 0.5 : 0.0;
    const double sw = roi[0] * scale - off, sh = roi[1] * scale - off;
    double rw = roi[2] * scale - off - sw, rh = roi[3] * scale - off - sh;
    if (!half_pixel) {
      rw = std::max(rw, 1.0);
      rh = std::max(rh, 1.0);
    }
    const double bh = rh / static_cast<double>(oh), bw = rw / static_cast<double>(ow);
    const int64_t gh = ratio > 0 ? ratio : static_cast<int64_t>(std::ceil(rh / static_cast<double>(oh)));
    const int64_t gw = ratio > 0 ? ratio : static_cast<int64_t>(std::ceil(rw / static_cast<double>(ow)));
    const double count = static_cast<double>(std::max<int64_t>(gh * gw, 1));
    for (int64_t ch = 0; ch < c; ++ch) {
      const double* plane = xd.data<double>() + (b * c + ch) * h * w;
      for (int64_t ph = 0; ph < oh; ++ph)
        for (int64_t pw = 0; pw < ow; ++pw) {
          double acc = 0;
          bool first = true;
          for (int64_t iy = 0; iy < gh; ++iy)
            for (int64_t ix = 0; ix < gw; ++ix) {
              double yy = sh + static_cast<double>(ph) * bh + (static_cast<double>(iy) + 0.5) * bh / static_cast<double>(gh);
              double xx = sw + static_cast<double>(pw) * bw + (static_cast<double>(ix) + 0.5) * bw / static_cast<double>(gw);
              double v[4] = {0, 0, 0, 0}, wt[4] = {0, 0, 0, 0};
              if (!(yy < -1.0 || yy > static_cast<double>(h) || xx < -1.0 || xx > static_cast<double>(w))) {
                yy = std::max(yy, 0.0);
                xx = std::max(xx, 0.0);
                auto y0 = static_cast<int64_t>(yy), x0 = static_cast<int64_t>(xx), y1 = y0 + 1, x1 = x0 + 1;
                if (y0 >= h - 1) { y0 = y1 = h - 1; yy = static_cast<double>(y0); }
                if (x0 >= w - 1) { x0 = x1 = w - 1; xx = static_cast<double>(x0); }
                const double ly = yy - static_cast<double>(y0), lx = xx - static_cast<double>(x0), hy = 1 - ly, hx = 1 - lx;
                v[0] = plane[y0 * w + x0]; v[1] = plane[y0 * w + x1]; v[2] = plane[y1 * w + x0]; v[3] = plane[y1 * w + x1];
                wt[0] = hy * hx; wt[1] = hy * lx; wt[2] = ly * hx; wt[3] = ly * lx;
              }
              if (mode == "avg") {
                for (int k = 0; k < 4; ++k) acc += wt[k] * v[k];
              } else {
                const double m = std::max(std::max(wt[0] * v[0], wt[1] * v[1]), std::max(wt[2] * v[2], wt[3] * v[3]));
                acc = first ? m : std::max(acc, m);
                first = false;
              }
            }
          y.data<double>()[((r * c + ch) * oh + ph) * ow + pw] = mode == "avg" ? acc / count : acc;
        }
    }
  }
  ctx.outputs[0] = y.cast(out_type);
}

}  // namespace

void registerDetectionKernels(KernelRegistry& r) {
  r.addFn("NonMaxSuppression", 10, 22, nonMaxSuppression);
  r.addFn("RoiAlign", 10, 15, [](KernelContext& ctx) { roiAlign(ctx, false); });
  r.addFn("RoiAlign", 16, 22, [](KernelContext& ctx) { roiAlign(ctx, true); });  // coordinate_transformation_mode
  r.addFn("GridSample", 16, 19, gridSample);
}

}  // namespace lwc::engine
