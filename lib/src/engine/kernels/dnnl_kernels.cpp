// oneDNN fast paths. Each kernel here declines (factory returns nullptr) anything it does not
// handle exactly, so the reference kernel takes over; tests compare both on random inputs.
//
// Conv (fp32, 2-D, constant weights): oneDNN picks its preferred blocked layouts (format_tag::any);
// activations are reordered from/to plain NCHW at the kernel's edges, weights once per input shape.
#include <array>
#include <cstring>
#include <dnnl.hpp>
#include <map>
#include <mutex>

#include "engine/kernels/common.h"
#include "engine/kernels/dnnl_common.h"
#include "engine/kernels/int8_avx512.h"
#include "engine/kernels/nn_ref.h"
#include "engine/optimize.h"

namespace lwc::engine {

namespace {

using dnnl_util::memory;
using dnnl_util::tag;
using dnnl_util::dt;
using dnnl_util::cpuEngine;
using dnnl_util::cpuStream;
using dnnl_util::scratchMemory;
using dnnl_util::sgemmFixedBlocks;
using dnnl_util::runBlocks;
using dnnl_util::addRowBias;
using dnnl_util::convDims;
using dnnl_util::SingleThreadIf;
using dnnl_util::oneThreadCall;
using dnnl_util::kOneThreadSuffix;
using dnnl_util::kSmallPrimitiveElements;
using dnnl_util::ExecArgs;

struct PostOp {
  std::string kind;  // relu, clip, logistic, hardswish, add
  float alpha = 0, beta = 0;
};

// True when `r` broadcasts to `y` without growing: the same rank, each dimension equal or 1.
bool broadcastsInto(const Shape& r, const Shape& y) {
  if (r.size() != y.size()) return false;
  for (size_t d = 0; d < r.size(); ++d)
    if (r[d] != y[d] && r[d] != 1) return false;
  return true;
}

// out (4-D, float) = r broadcast to out's shape (broadcastsInto(r, out)).
void broadcastFill(const Tensor& r, Tensor& out) {
  const Shape& o = out.shape();
  const Shape& rs = r.shape();
  int64_t st[4];
  int64_t stride = 1;
  for (int d = 3; d >= 0; --d) {
    st[d] = rs[static_cast<size_t>(d)] == 1 ? 0 : stride;
    stride *= rs[static_cast<size_t>(d)];
  }
  const float* R = r.data<float>();
  float* Y = out.data<float>();
  for (int64_t a = 0; a < o[0]; ++a)
    for (int64_t b = 0; b < o[1]; ++b)
      for (int64_t c = 0; c < o[2]; ++c) {
        const float* row = R + a * st[0] + b * st[1] + c * st[2];
        float* dst = Y + ((a * o[1] + b) * o[2] + c) * o[3];
        for (int64_t e = 0; e < o[3]; ++e) dst[e] = row[e * st[3]];
      }
}

std::vector<PostOp> parsePostOps(const Node& n) {
  std::vector<PostOp> r;
  const auto* a = n.attr("post_ops");
  if (!a) return r;
  const auto alphas = n.attrFloats("post_alpha"), betas = n.attrFloats("post_beta");
  for (int i = 0; i < a->strings_size(); ++i)
    r.push_back({a->strings(i), i < static_cast<int>(alphas.size()) ? alphas[i] : 0.0f,
                 i < static_cast<int>(betas.size()) ? betas[i] : 0.0f});
  return r;
}

/// 2-D convolution. `nhwc`: activations are NHWC tensors (lwc.internal.ConvNhwc, logical shape
/// [N,H,W,C]); otherwise plain NCHW tensors reordered to oneDNN's preferred layout at the edges.
/// Post-ops (activations, a residual add from input 3) run inside the oneDNN primitive.
class DnnlConv final : public Kernel {
 public:
  DnnlConv(const Node& n, Tensor w, Tensor b, bool nhwc)
      : node_(n), w_(std::move(w)), b_(std::move(b)), nhwc_(nhwc), post_(parsePostOps(n)) {}

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    if (x.dtype() != DType::Float32 || x.rank() != 4) ctx.error("expects a float32 4-D input, got ", shapeStr(x.shape()));
    // Logical NCHW dims of the input.
    const std::array<int64_t, 4> xs = nhwc_ ? std::array<int64_t, 4>{x.dim(0), x.dim(3), x.dim(1), x.dim(2)}
                                            : std::array<int64_t, 4>{x.dim(0), x.dim(1), x.dim(2), x.dim(3)};
    const int64_t group = node_.attrInt("group", 1);
    if (xs[1] != w_.dim(1) * group)
      ctx.error("input has ", xs[1], " channels but the weights expect ", w_.dim(1) * group);
    Prepared& p = prepare(xs, ctx);
    last_ = &p;
    const SingleThreadIf one(p.one_thread);
    const Shape& ys = p.out_shape;  // NCHW logical
    Shape y_shape = nhwc_ ? Shape{ys[0], ys[2], ys[3], ys[1]} : ys;
    // A fused residual Add is oneDNN's sum post-op: the output buffer holds the residual when the
    // convolution starts (oneDNN's brgconv kernels take a sum but not a same-shape binary add,
    // which fell back to its older direct kernels, 5-15 % slower). The residual's own buffer
    // becomes the output where the session would release it after this node; else it is copied.
    const Tensor* residual = nullptr;
    bool in_place = false, broadcast = false;
    if (p.has_add) {
      residual = &ctx.in(3);
      // The optimizer fuses only an Add whose operands' sizes are provably equal; a residual with
      // sizes of 1 where the output has more (a node written some other way) is broadcast here.
      broadcast = residual->dtype() == DType::Float32 && residual->shape() != y_shape &&
                  broadcastsInto(residual->shape(), y_shape);
      if (residual->dtype() != DType::Float32 || (residual->shape() != y_shape && !broadcast))
        ctx.error("residual input ", dtypeName(residual->dtype()), " ", shapeStr(residual->shape()),
                  " does not match the float32 output ", shapeStr(y_shape));
      if (Tensor* d = p.dst_plain && !broadcast ? ctx.donor(3) : nullptr) {
        ctx.outputs[0] = std::move(*d);
        residual = nullptr;
        in_place = true;
      }
    }
    Tensor& y = in_place ? ctx.outputs[0] : ctx.allocUninit(0, DType::Float32, std::move(y_shape));
    auto& eng = cpuEngine();
    dnnl::stream& s = cpuStream();
    // The plain-layout memory objects are made once per prepared shape and re-pointed per call
    // (creating them costs microseconds per small convolution); blocked copies stay per call so no
    // activation-sized buffer outlives the call.
    if (!p.x_user) {
      p.x_user = memory(p.x_plain, eng, nullptr);
      p.y_user = memory(p.y_plain, eng, nullptr);
      if (p.has_add) p.r_user = memory(p.y_plain, eng, nullptr);
    }
    p.x_user.set_data_handle(const_cast<void*>(x.raw()));
    p.y_user.set_data_handle(y.raw());
    memory x_mem = p.x_user, y_mem = p.y_user;
    Tensor x_blocked, y_blocked;
    if (!p.src_plain) {
      x_mem = scratchMemory(p.pd.src_desc(), x_blocked);
      dnnl::reorder(p.x_user, x_mem).execute(s, p.x_user, x_mem);
    }
    if (!p.dst_plain) y_mem = scratchMemory(p.pd.dst_desc(), y_blocked);
    Tensor full;  // a broadcast residual at the output's shape, where the output is blocked
    if (residual && broadcast) {
      if (p.dst_plain) {
        broadcastFill(*residual, y);
      } else {
        full = Tensor(DType::Float32, y.shape());
        broadcastFill(*residual, full);
        p.r_user.set_data_handle(full.raw());
        dnnl::reorder(p.r_user, y_mem).execute(s, p.r_user, y_mem);
      }
    } else if (residual) {  // not taken over: the sum reads it from the output buffer
      if (p.dst_plain) {
        std::memcpy(y.raw(), residual->raw(), y.nbytes());
      } else {
        p.r_user.set_data_handle(const_cast<void*>(residual->raw()));
        dnnl::reorder(p.r_user, y_mem).execute(s, p.r_user, y_mem);
      }
    }
    ExecArgs args{{DNNL_ARG_SRC, &x_mem}, {DNNL_ARG_WEIGHTS, &p.w_mem}, {DNNL_ARG_DST, &y_mem}};
    if (!b_.empty()) args.add(DNNL_ARG_BIAS, p.b_mem);
    args.execute(p.conv, s);
    if (!p.dst_plain) dnnl::reorder(y_mem, p.y_user).execute(s, y_mem, p.y_user);
    s.wait();
  }

  std::string primitive() const override {
    return last_ ? std::string(last_->pd.impl_info_str()) + (last_->one_thread ? kOneThreadSuffix : "") : std::string();
  }

 private:
  struct Prepared {
    dnnl::convolution_forward::primitive_desc pd;
    dnnl::convolution_forward conv;
    memory::desc x_plain, y_plain;
    memory w_mem, b_mem;
    Shape out_shape;
    bool has_add = false;
    memory x_user, y_user, r_user;  ///< plain-layout views, re-pointed per call
    bool src_plain = false, dst_plain = false;
    bool one_thread = false;  ///< made and run on one thread (oneThreadCall)
  };

  Prepared& prepare(std::span<const int64_t> key, const KernelContext& ctx) {
    auto it = cache_.find(key);  // looked up by a view: no copy of the shape per call
    if (it != cache_.end()) return it->second;
    const Shape xs(key.begin(), key.end());
    const ConvParams cp = parseConvParams(node_, xs, w_.shape());  // shared with the reference: same shapes, same errors
    const WindowGeometry& geo = cp.geo;
    const memory::dims strides(geo.strides.begin(), geo.strides.end());
    const memory::dims pad_l(geo.pads_begin.begin(), geo.pads_begin.end()), pad_r(geo.pads_end.begin(), geo.pads_end.end());
    memory::dims dil;
    for (auto d : geo.dilations) dil.push_back(d - 1);  // oneDNN counts dilation from 0
    auto& eng = cpuEngine();
    const int64_t oc = w_.dim(0), icg = w_.dim(1), kh = w_.dim(2), kw = w_.dim(3), group = cp.group;
    // NCHW tensors here are reordered to oneDNN's layout at the edges: only NHWC ones fold.
    const auto [xd, yd] = convDims(xs, oc, kh, kw, geo.strides, geo.pads_begin, geo.pads_end, geo.out, nhwc_);
    memory::dims wd = group == 1 ? memory::dims{oc, icg, kh, kw} : memory::dims{group, oc / group, icg, kh, kw};
    const tag act = nhwc_ ? tag::nhwc : tag::any;
    memory::desc x_md(xd, dt::f32, act), y_md(yd, dt::f32, act), w_any(wd, dt::f32, tag::any);
    memory::desc b_md = b_.empty() ? memory::desc() : memory::desc({oc}, dt::f32, tag::a);
    Prepared p{};
    p.x_plain = memory::desc(xd, dt::f32, nhwc_ ? tag::nhwc : tag::nchw);
    p.y_plain = memory::desc(yd, dt::f32, nhwc_ ? tag::nhwc : tag::nchw);
    dnnl::post_ops ops;
    for (size_t i = 0; i < post_.size(); ++i) {
      const PostOp& po = post_[i];
      if (po.kind == "relu") ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, po.alpha, 0.0f);
      else if (po.kind == "clip") ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_clip, po.alpha, po.beta);
      else if (po.kind == "logistic") ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_logistic, 0.0f, 0.0f);
      else if (po.kind == "hardswish") ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_hardswish, 0.0f, 0.0f);
      else if (po.kind == "swish") ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_swish, po.alpha, 0.0f);
      else if (po.kind == "linear") ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_linear, po.alpha, po.beta);
      else if (po.kind == "add") {
        ops.append_sum(1.0f);
        p.has_add = true;
      } else ctx.error("unknown fused post-op '", po.kind, "'");
    }
    dnnl::primitive_attr attr;
    attr.set_post_ops(ops);
    p.one_thread = oneThreadCall(xs[0] * geo.out[0] * geo.out[1] * icg * oc * kh * kw, group > 1 && icg == 1);
    const SingleThreadIf one(p.one_thread);  // the primitive plans its threads when it is made
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, x_md,
                                      w_any, b_md, y_md, strides, dil, pad_l, pad_r);
    p.pd = dnnl::convolution_forward::primitive_desc(d, attr, eng);
    p.conv = dnnl::convolution_forward(p.pd);
    p.src_plain = p.pd.src_desc() == p.x_plain;
    p.dst_plain = p.pd.dst_desc() == p.y_plain;
    memory w_user(memory::desc(wd, dt::f32, group == 1 ? tag::oihw : tag::goihw), eng, const_cast<void*>(w_.raw()));
    p.w_mem = memory(p.pd.weights_desc(), eng);
    dnnl::stream& s = cpuStream();
    dnnl::reorder(w_user, p.w_mem).execute(s, w_user, p.w_mem);
    if (!b_.empty()) p.b_mem = memory(b_md, eng, const_cast<void*>(b_.raw()));
    s.wait();
    p.out_shape = cp.outShape();
    return cache_.emplace(xs, std::move(p)).first->second;
  }

  Node node_;
  Tensor w_, b_;
  bool nhwc_;
  std::vector<PostOp> post_;
  std::map<Shape, Prepared, ShapeLess> cache_;
  const Prepared* last_ = nullptr;  ///< what the last call ran (map nodes do not move)
};

std::unique_ptr<Kernel> makeDnnlConvImpl(const KernelInfo& info, bool nhwc) {
  const Node& n = info.node;
  const Tensor* w = info.constant(1);
  // No channels in or out: oneDNN cannot describe it (an "internal error"); the reference kernel gives the bias.
  if (!w || w->dtype() != DType::Float32 || w->rank() != 4 || w->numel() == 0) return nullptr;
  const Tensor* b = info.hasInput(2) ? info.constant(2) : nullptr;
  if (info.hasInput(2) && (!b || b->dtype() != DType::Float32 || b->numel() != w->dim(0))) return nullptr;
  const auto* xt = info.input_types.empty() ? nullptr : info.input_types[0];
  if (xt && xt->dtype != DType::Undefined && xt->dtype != DType::Float32) return nullptr;
  const int64_t group = n.attrInt("group", 1);
  if (group < 1 || w->dim(0) % group != 0) return nullptr;
  const auto ks = n.attrInts("kernel_shape", {w->dim(2), w->dim(3)});
  if (ks.size() != 2 || ks[0] != w->dim(2) || ks[1] != w->dim(3)) return nullptr;
  if (n.attrInts("strides", {1, 1}).size() != 2 || n.attrInts("dilations", {1, 1}).size() != 2) return nullptr;
  return std::make_unique<DnnlConv>(n, *w, b ? *b : Tensor(), nhwc);
}
std::unique_ptr<Kernel> makeDnnlConv(const KernelInfo& info) { return makeDnnlConvImpl(info, false); }
std::unique_ptr<Kernel> makeDnnlConvNhwc(const KernelInfo& info) {
  auto k = makeDnnlConvImpl(info, true);
  if (!k) fail("node ", info.node.describe(), ": internal ConvNhwc was created for a conv oneDNN cannot run");
  return k;
}

/// Max/average pooling on NHWC tensors (lwc.internal.PoolNhwc, attribute mode = max|avg). Max
/// pooling also on uint8/int8 (a MaxPool between QLinearConvs in QOperator files; the max of the
/// integers is exact).
/// Max pooling of an NHWC tensor with dilation 1, separably: each output row takes the
/// elementwise max of its window's input rows (whole rows of W x C values: one vector loop), then
/// each output pixel the max of its window's columns of that. kh + kw - 2 comparisons per value
/// instead of kh x kw - 1; a value replaces the running max only when greater, as in the reference
/// (maxPoolImpl). Every window must hold at least one input pixel (checked by the caller).
/// oneDNN's jit pooling took 64 us on 28 x 28 x 256 (3 x 3, stride 1) at batch 1 on two threads.
struct MaxPoolRows {
  int64_t h, w, c, oh_n, ow_n, kh, kw, sh, sw, pt, pl;
};

/// Output row u (image u / oh_n, row u % oh_n) of maxPoolNhwcSeparable; `rows` holds w x c values.
template <typename T>
[[gnu::always_inline]] inline void maxPoolRow(const T* x, T* y, int64_t u, const MaxPoolRows& g, T* __restrict rows) {
  const int64_t row = g.w * g.c, c = g.c;
  const int64_t b = u / g.oh_n, oh = u % g.oh_n;
  const int64_t r0 = std::max<int64_t>(0, oh * g.sh - g.pt), r1 = std::min(g.h, oh * g.sh - g.pt + g.kh);
  const T* src = x + (b * g.h + r0) * row;
  const T* v = src;
  if (r1 - r0 > 1) {
    const T* __restrict s0 = src;
    const T* __restrict s1 = src + row;
    for (int64_t i = 0; i < row; ++i) rows[i] = s1[i] > s0[i] ? s1[i] : s0[i];
    for (int64_t r = 2; r < r1 - r0; ++r) {
      const T* __restrict sr = src + r * row;
      for (int64_t i = 0; i < row; ++i) rows[i] = sr[i] > rows[i] ? sr[i] : rows[i];
    }
    v = rows;
  }
  T* out = y + u * g.ow_n * c;
  for (int64_t ow = 0; ow < g.ow_n; ++ow) {
    const int64_t c0 = std::max<int64_t>(0, ow * g.sw - g.pl), c1 = std::min(g.w, ow * g.sw - g.pl + g.kw);
    T* __restrict o = out + ow * c;
    const T* __restrict a = v + c0 * c;
    if (c1 - c0 == 1) {
      std::memcpy(o, a, static_cast<size_t>(c) * sizeof(T));
      continue;
    }
    const T* __restrict a1 = a + c;
    for (int64_t k = 0; k < c; ++k) o[k] = a1[k] > a[k] ? a1[k] : a[k];
    for (int64_t col = c0 + 2; col < c1; ++col) {
      const T* __restrict ac = v + col * c;
      for (int64_t k = 0; k < c; ++k) o[k] = ac[k] > o[k] ? ac[k] : o[k];
    }
  }
}

template <typename T>
void maxPoolRowPlain(const T* x, T* y, int64_t u, const MaxPoolRows& g, T* rows) {
  maxPoolRow(x, y, u, g, rows);
}
#ifdef LWC_INT8_X86
template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl"))) void maxPoolRow512(const T* x, T* y, int64_t u, const MaxPoolRows& g,
                                                                        T* rows) {
  maxPoolRow(x, y, u, g, rows);
}
#endif

/// Max pooling of an NHWC tensor with dilation 1, separably: each output row takes the
/// elementwise max of its window's input rows (whole rows of W x C values: one vector loop), then
/// each output pixel the max of its window's columns of that. kh + kw - 2 comparisons per value
/// instead of kh x kw - 1; a value replaces the running max only when greater, as in the reference
/// (maxPoolImpl). Every window must hold at least one input pixel (checked by the caller).
/// oneDNN's jit pooling took 64 us on 28 x 28 x 256 (3 x 3, stride 1) at batch 1 on two threads.
template <typename T>
void maxPoolNhwcSeparable(const T* x, T* y, int64_t n, int64_t h, int64_t w, int64_t c, const WindowGeometry& geo) {
  const MaxPoolRows g{h, w, c, geo.out[0], geo.out[1], geo.kernel[0], geo.kernel[1], geo.strides[0], geo.strides[1],
                      geo.pads_begin[0], geo.pads_begin[1]};
  auto row_fn = &maxPoolRowPlain<T>;
#ifdef LWC_INT8_X86
  if (int8k::haveAvx512Bw()) row_fn = &maxPoolRow512<T>;
#endif
  parallelFor(n * g.oh_n, n * g.oh_n * g.ow_n * c * g.kh * g.kw >= (int64_t{1} << 16), [=](int64_t u) {
    thread_local std::vector<T> rows;
    if (rows.size() < static_cast<size_t>(w * c)) rows.resize(static_cast<size_t>(w * c));
    row_fn(x, y, u, g, rows.data());
  });
}

class DnnlPoolNhwc final : public Kernel {
 public:
  explicit DnnlPoolNhwc(const Node& n) : node_(n) {}
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const bool is_max = node_.attrString("mode") == "max";
    const bool int8 = is_max && (x.dtype() == DType::UInt8 || x.dtype() == DType::Int8);
    if ((x.dtype() != DType::Float32 && !int8) || x.rank() != 4)
      ctx.error("expects a float32 NHWC input", is_max ? " (or uint8/int8)" : "", ", got ", dtypeName(x.dtype()), " ",
                shapeStr(x.shape()));
    const Shape xs{x.dim(0), x.dim(3), x.dim(1), x.dim(2)};
    Prepared& p = prepare(xs, x.dtype(), ctx);
    Tensor& y = ctx.allocUninit(0, x.dtype(), {xs[0], p.out_hw[0], p.out_hw[1], xs[1]});
    last_own_ = p.own;
    if (p.own) {
      const int64_t n = xs[0], c = xs[1], h = xs[2], w = xs[3];
      if (x.dtype() == DType::Float32) maxPoolNhwcSeparable(x.data<float>(), y.data<float>(), n, h, w, c, p.geo);
      else if (x.dtype() == DType::UInt8) maxPoolNhwcSeparable(x.data<uint8_t>(), y.data<uint8_t>(), n, h, w, c, p.geo);
      else maxPoolNhwcSeparable(x.data<int8_t>(), y.data<int8_t>(), n, h, w, c, p.geo);
      return;
    }
    dnnl::stream& s = cpuStream();
    p.x.set_data_handle(const_cast<void*>(x.raw()));
    p.y.set_data_handle(y.raw());
    ExecArgs args{{DNNL_ARG_SRC, &p.x}, {DNNL_ARG_DST, &p.y}};
    Tensor ws;
    memory ws_mem;  // live until execute() returns
    if (p.pd.workspace_desc().get_size() > 0) {
      ws_mem = scratchMemory(p.pd.workspace_desc(), ws);
      args.add(DNNL_ARG_WORKSPACE, ws_mem);
    }
    const SingleThreadIf one(x.numel() < kSmallPrimitiveElements);
    args.execute(p.prim, s);
    s.wait();
  }

  std::string primitive() const override { return last_own_ ? "lwc_maxpool_separable" : std::string(); }

 private:
  struct Prepared {
    dnnl::pooling_v2_forward::primitive_desc pd;
    dnnl::pooling_v2_forward prim;
    memory::dims out_hw;
    memory x, y;  ///< made once, re-pointed per call
    bool own = false;  ///< max pooling on maxPoolNhwcSeparable instead of pd
    WindowGeometry geo;
  };
  Prepared& prepare(const Shape& xs, DType dtype, const KernelContext& ctx) {
    Shape key = xs;
    key.push_back(static_cast<int64_t>(dtype));
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    const dt data_type = dtype == DType::UInt8 ? dt::u8 : dtype == DType::Int8 ? dt::s8 : dt::f32;
    const PoolParams pp = parsePoolParams(node_, 13, xs);  // shared with the reference kernels
    const WindowGeometry& geo = pp.geo;
    memory::dims pl(2), pr(2), out(2), st(2), kd(2), dd(2);
    for (int i = 0; i < 2; ++i) {
      pl[i] = geo.pads_begin[i];
      // oneDNN needs explicit right padding covering a ceil_mode window's overhang.
      pr[i] = std::max<int64_t>(geo.pads_end[i], (geo.out[i] - 1) * geo.strides[i] + (geo.kernel[i] - 1) * geo.dilations[i] + 1 -
                                                     geo.in[i] - geo.pads_begin[i]);
      out[i] = geo.out[i];
      st[i] = geo.strides[i];
      kd[i] = geo.kernel[i];
      dd[i] = geo.dilations[i] - 1;
    }
    const bool is_max = node_.attrString("mode") == "max";
    if (is_max && geo.dilations[0] == 1 && geo.dilations[1] == 1 &&
        geo.kernel[0] - geo.pads_begin[0] >= 1 && geo.kernel[1] - geo.pads_begin[1] >= 1 &&
        (geo.out[0] - 1) * geo.strides[0] - geo.pads_begin[0] < geo.in[0] &&
        (geo.out[1] - 1) * geo.strides[1] - geo.pads_begin[1] < geo.in[1]) {
      // Every window holds an input pixel: the first starts before the input's end of its pads,
      // the last starts inside the input.
      Prepared p{};
      p.own = true;
      p.geo = geo;
      p.out_hw = out;
      return cache_.emplace(key, std::move(p)).first->second;
    }
    const bool include_pad = node_.attrInt("count_include_pad", 0) != 0;
    auto alg = is_max ? dnnl::algorithm::pooling_max
                      : (include_pad ? dnnl::algorithm::pooling_avg_include_padding : dnnl::algorithm::pooling_avg_exclude_padding);
    if (!is_max && include_pad && (pr[0] != geo.pads_end[0] || pr[1] != geo.pads_end[1]))
      ctx.error("ceil_mode with count_include_pad is not supported by the NHWC pooling path");
    memory::desc x_md({xs[0], xs[1], xs[2], xs[3]}, data_type, tag::nhwc);
    memory::desc y_md({xs[0], xs[1], out[0], out[1]}, data_type, tag::nhwc);
    dnnl::pooling_v2_forward::desc d(dnnl::prop_kind::forward_inference, alg, x_md, y_md, st, kd, dd, pl, pr);
    const SingleThreadIf one(xs[0] * xs[1] * xs[2] * xs[3] < kSmallPrimitiveElements);  // planned for the threads it runs on
    Prepared p{dnnl::pooling_v2_forward::primitive_desc(d, cpuEngine()), {}, out, {}, {}};
    p.prim = dnnl::pooling_v2_forward(p.pd);
    p.x = memory(p.pd.src_desc(), cpuEngine(), nullptr);
    p.y = memory(p.pd.dst_desc(), cpuEngine(), nullptr);
    return cache_.emplace(key, std::move(p)).first->second;
  }
  Node node_;
  std::map<Shape, Prepared> cache_;
  bool last_own_ = false;
};

/// Mean over H and W of an NHWC tensor -> [N,1,1,C]. Each channel's pixels are summed in float, in
/// order, within chunks of kGapChunk pixels; the chunks' sums are added in order and the total
/// multiplied by 1 / HW. The same bits on any number of threads.
constexpr int64_t kGapChunk = 64;

void globalAvgPoolNhwc(KernelContext& ctx) {
  const Tensor& x = ctx.in(0);
  if (x.dtype() != DType::Float32 || x.rank() != 4) ctx.error("expects a float32 NHWC input");
  const int64_t n = x.dim(0), hw = x.dim(1) * x.dim(2), c = x.dim(3);
  Tensor& y = ctx.allocUninit(0, DType::Float32, {n, 1, 1, c});
  const float* in = x.data<float>();
  float* out = y.data<float>();
  const float inv = 1.0f / static_cast<float>(hw);
  constexpr int64_t kLanes = 16;
  // Sums pixels [i0, i1) of image b's channels [k0, k0 + nk) in order into o[0, nk).
  auto sumPixels = [=](int64_t b, int64_t i0, int64_t i1, int64_t k0, int64_t nk, float* __restrict o) {
    const int64_t C = c;
    const float* __restrict p = in + (b * hw + i0) * C + k0;
    if (nk == kLanes) {
      float acc[kLanes] = {};
      for (int64_t i = 0; i < i1 - i0; ++i)
        for (int64_t k = 0; k < kLanes; ++k) acc[k] += p[i * C + k];
      for (int64_t k = 0; k < kLanes; ++k) o[k] = acc[k];
      return;
    }
    for (int64_t k = 0; k < nk; ++k) o[k] = 0.0f;
    for (int64_t i = 0; i < i1 - i0; ++i)
      for (int64_t k = 0; k < nk; ++k) o[k] += p[i * C + k];
  };
  const int64_t blocks = (c + kLanes - 1) / kLanes;
  if (hw <= kGapChunk) {
    // Units of one image's 16 channels (one cache line of floats), so a batch-1 call spreads over
    // the threads too.
    parallelFor(n * blocks, n * hw * c > 65536, [=](int64_t u) {
      const int64_t b = u / blocks, k0 = (u % blocks) * kLanes, nk = std::min(kLanes, c - k0);
      float* o = out + b * c + k0;
      sumPixels(b, 0, hw, k0, nk, o);
      for (int64_t k = 0; k < nk; ++k) o[k] *= inv;
    });
    return;
  }
  // Larger images: units of kGapChunk pixels of one image, all channels. A thread then reads the
  // pixels the convolution before wrote on its core (oneDNN splits those over rows), where units
  // of channels read every pixel, half of them from the other core's cache. A standalone loop on
  // 112 x 112 x 32 floats two threads had just written by halves: 61 us by channel blocks, 9 by
  // pixel halves. efficientnet_b0 FP32 at batch 1 (2-core AMX Xeon, 2026-12-05): its 17 pools
  // 0.35-0.37 -> 0.19 ms, the 16 squeeze-excite products after them 0.31-0.32 -> 0.25 (they read
  // the same tensors), its first pool 0.090 -> 0.019 ms; chunks of 128 and 256 pixels gave
  // 0.18-0.21 and 0.22.
  const int64_t chunks = (hw + kGapChunk - 1) / kGapChunk;
  // Reused by the calling thread's next call, as quant.cpp's integer pooling does: at batch 32 a
  // fresh vector would be above malloc's mmap threshold (32 x 196 chunks x 32 channels, 800 KB) and
  // page-fault on every call.
  thread_local std::vector<float> part;
  if (part.size() < static_cast<size_t>(n * chunks * c)) part.resize(static_cast<size_t>(n * chunks * c));
  float* parts = part.data();  // the workers' own thread_local `part` would be another vector
  parallelFor(n * chunks, true, [=](int64_t u) {
    const int64_t b = u / chunks, i0 = (u % chunks) * kGapChunk, i1 = std::min(hw, i0 + kGapChunk);
    for (int64_t k0 = 0; k0 < c; k0 += kLanes) sumPixels(b, i0, i1, k0, std::min(kLanes, c - k0), parts + u * c + k0);
  });
  for (int64_t b = 0; b < n; ++b) {
    float* o = out + b * c;
    const float* pb = parts + b * chunks * c;
    for (int64_t k = 0; k < c; ++k) o[k] = pb[k];
    for (int64_t j = 1; j < chunks; ++j)
      for (int64_t k = 0; k < c; ++k) o[k] += pb[j * c + k];
    for (int64_t k = 0; k < c; ++k) o[k] *= inv;
  }
}

/// Weight matrices of at least this many elements (K·N) are multiplied on oneDNN's matmul with the
/// weights reordered once, at load, into the layout its kernel reads (as ONNX Runtime prepacks
/// them), instead of sgemm calls that pack each block's panel of W again on every call: a vision
/// transformer's dense layers (ViT-B/16: 768 x 2304, 768 x 3072, 3072 x 768, 768 x 768) and the
/// 1000-class classifiers. The testdata models' dense layers are all smaller (lenet300's largest
/// 784 x 300), so they keep their sgemm bits.
constexpr int64_t kPackedWeightsElements = int64_t{1} << 19;

/// Y = X·W for a constant W of at least kPackedWeightsElements, in fixed blocks of kRows rows x
/// kColumns columns, each a matmul primitive planned for and run on one thread with its panel of W
/// reordered once: each output sums over K in the same order on any number of threads, as
/// sgemmFixedBlocks' blocks do. ViT-B/16's dense layers at 197 rows on the 2-core AMX Xeon
/// (standalone, 2026-12-04): 768 x 3072 4.8 -> 2.9 ms, 3072 x 768 3.7 -> 2.7, 768 x 2304 3.1 -> 2.0,
/// 768 x 768 0.82 -> 0.68 against 64 x 128 sgemm blocks. Costs one more copy of W in memory.
class PackedWeights {
 public:
  static constexpr int64_t kRows = 128, kColumns = 384;

  explicit PackedWeights(const Tensor& w_kn) : k_(w_kn.dim(0)), n_(w_kn.dim(1)) {
    const SingleThreadIf one(true);  // the reorders, and the primitives' plans, for one thread
    for (int64_t c0 = 0; c0 < n_; c0 += kColumns) {
      Panel p;
      p.c0 = c0;
      p.nc = std::min(kColumns, n_ - c0);
      const Prim& full = prim(kRows, p.nc, nullptr);
      p.md = full.pd.weights_desc();
      p.w = memory(p.md, cpuEngine());
      memory src(memory::desc({k_, p.nc}, dt::f32, memory::dims{n_, 1}), cpuEngine(),
                 const_cast<float*>(w_kn.data<float>() + c0));
      dnnl::reorder(src, p.w).execute(cpuStream(), src, p.w);
      cpuStream().wait();
      panels_.push_back(std::move(p));
    }
    impl_ = prims_.begin()->second.pd.impl_info_str();
  }

  /// Makes the primitives an X of m rows needs (before the blocks run on several threads); false
  /// when oneDNN cannot multiply the remainder rows with the packed panels.
  bool prepare(int64_t m) {
    const SingleThreadIf one(true);
    for (const Panel& p : panels_) {
      if (m >= kRows && !prim(kRows, p.nc, &p.md).ok) return false;
      if (m % kRows && !prim(m % kRows, p.nc, &p.md).ok) return false;
    }
    return true;
  }

  int64_t blocks(int64_t m) const { return (m + kRows - 1) / kRows * static_cast<int64_t>(panels_.size()); }

  /// Where a block of Y lies: rows r0 .. r0 + mr - 1, columns c0 .. c0 + nc - 1.
  struct Block {
    int64_t r0, mr, c0, nc;
  };

  /// Block `blk` of Y = X·W (X [m, k] and Y [m, n], row-major), on the calling thread.
  Block runBlock(int64_t blk, int64_t m, const float* x, float* y) {
    const int64_t np = static_cast<int64_t>(panels_.size());
    const Panel& p = panels_[static_cast<size_t>(blk % np)];
    const int64_t r0 = (blk / np) * kRows, mr = std::min(kRows, m - r0);
    Prim& q = prims_.at({mr, p.nc});
    memory a(q.pd.src_desc(), cpuEngine(), const_cast<float*>(x + r0 * k_));
    memory c(q.pd.dst_desc(), cpuEngine(), y + r0 * n_ + p.c0);
    static thread_local std::vector<std::byte> scratch;
    const size_t need = q.pd.scratchpad_desc().get_size();
    if (scratch.size() < need) scratch.resize(need);
    memory sp(q.pd.scratchpad_desc(), cpuEngine(), scratch.data());
    ExecArgs{{DNNL_ARG_SRC, &a}, {DNNL_ARG_WEIGHTS, &p.w}, {DNNL_ARG_DST, &c}, {DNNL_ARG_SCRATCHPAD, &sp}}.execute(
        q.prim, cpuStream());
    cpuStream().wait();
    return {r0, mr, p.c0, p.nc};
  }

  const std::string& impl() const { return impl_; }

 private:
  struct Panel {
    int64_t c0 = 0, nc = 0;
    memory::desc md;
    memory w;
  };
  struct Prim {
    bool ok = false;
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul prim;
  };
  /// The primitive for blocks of mr rows x nc columns: weights in the layout oneDNN picks (`packed`
  /// nullptr) or in the panels' packed layout; a user scratchpad, so that the threads can run one
  /// primitive at once. Made once.
  Prim& prim(int64_t mr, int64_t nc, const memory::desc* packed) {
    auto it = prims_.find({mr, nc});
    if (it != prims_.end()) return it->second;
    Prim q;
    try {
      const memory::desc a({mr, k_}, dt::f32, memory::dims{k_, 1});
      const memory::desc w = packed ? *packed : memory::desc({k_, nc}, dt::f32, tag::any);
      const memory::desc c({mr, nc}, dt::f32, memory::dims{n_, 1});
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      q.pd = dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, w, c), attr, cpuEngine());
      q.prim = dnnl::matmul(q.pd);
      q.ok = !packed || q.pd.weights_desc() == *packed;
    } catch (const dnnl::error&) {
      q.ok = false;
    }
    if (!packed && !q.ok) throw std::runtime_error("oneDNN has no matmul for packed weights");
    return prims_.emplace(std::make_pair(mr, nc), std::move(q)).first->second;
  }

  int64_t k_, n_;
  std::vector<Panel> panels_;
  std::map<std::pair<int64_t, int64_t>, Prim> prims_;
  std::string impl_;
};

/// Y = X·W + b for a runtime X (any rank >= 2, leading dims flattened) and constant 2-D W.
/// Serves Gemm (alpha = beta = 1, transA = 0, C absent or a length-N vector) and MatMul.
/// The same bits on any number of threads (sgemmFixedBlocks: 64-row x 128-column blocks). Products
/// under oneThreadCall's limit run their blocks on the calling thread: tinyformer_fmnist FP32 at
/// batch 1 (qkv 50 x 64 x 192, two blocks) 0.78-0.80 of the time on the 2-core AMD EPYC,
/// 2026-12-04, four alternating pairs; lenet5, lenet300, mnv2_fmnist, mobilenet_v2 level.
/// Weights (elements, fp32: 1 MB) from which a product under oneThreadCall's limit still runs on
/// all threads: with a few rows (a classifier head at batch 1) it is bound by reading the weights,
/// which two cores do faster than one. Per-node profiles at batch 1 (2-core AMX Xeon, 2026-12-05,
/// one thread -> two): mobilenet_v3_small's 1024 -> 1000 head 0.145 -> 0.090 ms and 576 -> 1024
/// 0.084 -> 0.055, resnet18's 512 -> 1000 0.127 -> 0.081, googlenet's 0.255 -> 0.179, densenet121's
/// 0.335 -> 0.219, shufflenet_v2's 0.147 -> 0.099; whole mobilenet_v3_small 0.88-0.90 of the time.
/// Same blocks, same bits.
constexpr int64_t kOneThreadWeightElements = int64_t{1} << 18;

class DnnlMatMul final : public Kernel {
 public:
  /// `reference`: the kernel for an X that is not float32 or not a matrix (a MatMul whose input type
  /// was not inferred); nullptr: such an X is an error (Gemm).
  DnnlMatMul(Tensor w_kn, Tensor b, KernelFn reference = nullptr)
      : w_(std::move(w_kn)), b_(std::move(b)), reference_(std::move(reference)) {
    if (w_.numel() >= kPackedWeightsElements) {
      try {
        packed_ = std::make_unique<PackedWeights>(w_);
      } catch (const std::exception&) {
        packed_.reset();  // sgemm blocks, as for smaller weights
      }
    }
  }

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t k = w_.dim(0), n = w_.dim(1);
    if (reference_ && (x.dtype() != DType::Float32 || x.rank() < 2)) {
      one_thread_ = false;
      return reference_(ctx);
    }
    if (x.dtype() != DType::Float32 || x.rank() < 2 || x.shape().back() != k)
      ctx.error("input ", shapeStr(x.shape()), " does not match weights ", shapeStr(w_.shape()));
    Shape ys = x.shape();
    ys.back() = n;
    if (k == 0) {  // an empty sum: the bias, or zeros (x.numel() / k divided by zero)
      Tensor& y = ctx.alloc(0, DType::Float32, ys);
      if (!b_.empty())
        for (int64_t i = 0; i < y.numel(); ++i) y.data<float>()[i] = b_.data<float>()[i % n];
      one_thread_ = true;
      used_packed_ = false;
      return;
    }
    const int64_t m = x.numel() / k;
    Tensor& y = ctx.allocUninit(0, DType::Float32, ys);
    float* Y = y.data<float>();
    // The bias is added block by block by the thread that computed the block, while it is in cache.
    // Small products take the blocks in turn on the calling thread (oneThreadCall; the blocks are
    // the same, so are the bits).
    one_thread_ = oneThreadCall(m * k * n, false) && k * n < kOneThreadWeightElements;
    used_packed_ = packed_ && m > 0 && packed_->prepare(m);
    if (used_packed_) return runPacked(ctx, m, x.data<float>(), Y);
    if (!sgemmFixedBlocks('N', m, n, k, x.data<float>(), k, w_.data<float>(), n, Y, n, 64, 128, one_thread_ ? 1 : 0,
                          b_.empty() ? nullptr : b_.data<float>()))
      ctx.error("oneDNN sgemm failed");
  }

  std::string primitive() const override {
    const std::string p = used_packed_ ? "matmul " + packed_->impl() + ", weights reordered at load" : "sgemm";
    return one_thread_ ? p + kOneThreadSuffix : p;
  }

 private:
  /// The blocks of PackedWeights over the threads (or in turn on the calling thread for a small
  /// product), each adding the bias to what it wrote, as sgemmFixedBlocks does.
  void runPacked(KernelContext& ctx, int64_t m, const float* x, float* y) {
    const float* bias = b_.empty() ? nullptr : b_.data<float>();
    std::string error;
    const bool ok = runBlocks(packed_->blocks(m), one_thread_ ? 1 : 0, [&](int64_t blk) {
      try {
        const PackedWeights::Block b = packed_->runBlock(blk, m, x, y);
        addRowBias(y, w_.dim(1), bias, b.r0, b.mr, b.c0, b.nc);
        return true;
      } catch (const std::exception& e) {
#pragma omp critical(lwc_packed_matmul)
        error = e.what();
        return false;
      }
    });
    if (!ok) ctx.error("oneDNN matmul failed: ", error);
  }

  Tensor w_, b_;
  KernelFn reference_;
  std::unique_ptr<PackedWeights> packed_;  ///< for weights of at least kPackedWeightsElements
  bool one_thread_ = false;   ///< the last call ran on the calling thread
  bool used_packed_ = false;  ///< the last call ran on packed_
};

Tensor transpose2d(const Tensor& t) {
  Tensor r(DType::Float32, {t.dim(1), t.dim(0)});
  const float* src = t.data<float>();
  float* dst = r.data<float>();
  for (int64_t i = 0; i < t.dim(0); ++i)
    for (int64_t j = 0; j < t.dim(1); ++j) dst[j * t.dim(0) + i] = src[i * t.dim(1) + j];
  return r;
}

std::unique_ptr<Kernel> makeDnnlGemm(const KernelInfo& info) {
  const Node& n = info.node;
  const Tensor* b = info.constant(1);
  if (!b || b->dtype() != DType::Float32 || b->rank() != 2) return nullptr;
  if (n.attrFloat("alpha", 1.0f) != 1.0f || n.attrInt("transA", 0) != 0) return nullptr;
  const auto* xt = info.input_types.empty() ? nullptr : info.input_types[0];
  if (xt && xt->dtype != DType::Undefined && xt->dtype != DType::Float32) return nullptr;
  Tensor w = n.attrInt("transB", 0) ? transpose2d(*b) : *b;
  Tensor bias;
  if (info.hasInput(2)) {
    const Tensor* c = info.constant(2);
    if (!c || c->dtype() != DType::Float32 || n.attrFloat("beta", 1.0f) != 1.0f) return nullptr;
    // Only a bias broadcast along rows: shape [N] or [1, N].
    const bool row = (c->rank() == 1 && c->dim(0) == w.dim(1)) || (c->rank() == 2 && c->dim(0) == 1 && c->dim(1) == w.dim(1));
    if (!row) return nullptr;
    bias = c->reshaped({w.dim(1)});
  }
  return std::make_unique<DnnlMatMul>(w, bias);
}

/// MatMul (A, B) and lwc.internal.MatMul (A, B, c), a MatMul with its bias Add (optimize.cpp,
/// fuseMatMulBias). An A whose inferred type says float32 of rank >= 2, or says nothing (swin_t's
/// windows at a symbolic batch: no rank from the second stage on), which is then checked per call.
std::unique_ptr<Kernel> makeDnnlMatMul(const KernelInfo& info) {
  const Tensor* b = info.constant(1);
  if (!b || b->dtype() != DType::Float32 || b->rank() != 2) return nullptr;
  const auto* xt = info.input_types.empty() ? nullptr : info.input_types[0];
  if (xt && xt->dtype != DType::Undefined && xt->dtype != DType::Float32) return nullptr;
  if (xt && xt->shape && xt->shape->size() < 2) return nullptr;
  Tensor bias;
  const bool fused = info.hasInput(2);
  if (fused) {
    const Tensor* c = info.constant(2);
    if (!c || !isFusedMatMulBias(*c, b->dim(1))) return nullptr;
    bias = c->reshaped({b->dim(1)});
  }
  KernelFn reference = fused ? KernelFn(matMulBiasReference) : KernelFn([](KernelContext& c) { matMulAnyKernel(c, false); });
  return std::make_unique<DnnlMatMul>(*b, bias, std::move(reference));
}

/// Multiply-adds per product from which a MatMul of two activations takes oneDNN's sgemm: a
/// vision transformer's attention (ViT-B/16: 12 heads of 197 x 64 x 197) and not the small heads
/// the reference loop serves well (tinyformer_fmnist: 16 x 16 x 16; their bits stay those of the
/// reference).
constexpr int64_t kSgemmProductMacs = int64_t{1} << 18;

/// One product of a batched MatMul on oneDNN's sgemm, on one thread (the products are spread over
/// the threads by the caller), so the bits do not depend on the thread count.
bool sgemmProduct(bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                  int64_t ldb, float* c, int64_t ldc) {
  if (m * n * k < kSgemmProductMacs) return false;
  const SingleThreadIf one(true);
  return dnnl_sgemm('N', trans_b ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb, 0.0f, c, ldc) == dnnl_success;
}

/// MatMul of two runtime operands (attention's q·kᵀ and scores·v), lwc.internal.MatMulTransB and
/// MatMulMergeHeads: the reference kernel, with each float32 product of a batch of at least
/// kSgemmProductMacs multiply-adds on oneDNN's sgemm (sgemmProduct). torchvision's ViT-B/16 at
/// batch 1 on the 2-core AVX512-VNNI EPYC, 2026-12-04: its 24 attention products 14.2 -> 4.6 ms
/// (`lwc -v bench --profile`), within 1e-4 of ONNX Runtime (scripts/ort_crosscheck.py).
class DnnlActivationMatMul final : public Kernel {
 public:
  explicit DnnlActivationMatMul(bool trans_b) : trans_b_(trans_b) {}
  void run(KernelContext& ctx) override { matMulAnyKernel(ctx, trans_b_, sgemmProduct, &used_sgemm_); }
  std::string primitive() const override { return used_sgemm_ ? "sgemm per product, 1 thread each" : ""; }

 private:
  bool trans_b_;
  bool used_sgemm_ = false;
};

std::unique_ptr<Kernel> makeDnnlActivationMatMul(const KernelInfo& info, bool trans_b) {
  if (info.constant(1)) return nullptr;  // constant B: makeDnnlMatMul, or the reference
  return std::make_unique<DnnlActivationMatMul>(trans_b);
}

/// A oneDNN primitive reading one plain tensor and writing another of the same layout (softmax,
/// eltwise), made once per shape by the kernels that own it. Its memory objects are made with it and
/// re-pointed per call: creating two per call and passing them in a std::unordered_map cost more
/// than a small GELU or softmax itself.
struct SrcDstPrimitive {
  SrcDstPrimitive(const memory::desc& md, dnnl::primitive p)
      : prim(std::move(p)), src(md, cpuEngine(), nullptr), dst(md, cpuEngine(), nullptr) {}
  void run(const Tensor& x, Tensor& y) {
    src.set_data_handle(const_cast<void*>(x.raw()));
    dst.set_data_handle(y.raw());
    dnnl::stream& st = cpuStream();
    const SingleThreadIf one(x.numel() < kSmallPrimitiveElements);
    ExecArgs{{DNNL_ARG_SRC, &src}, {DNNL_ARG_DST, &dst}}.execute(prim, st);
    st.wait();
  }
  dnnl::primitive prim;
  memory src, dst;
};

/// Softmax along one axis of a float32 tensor (opset 13+), or over the trailing dims from `axis`
/// (opset < 13, the input coerced to 2-D), as oneDNN's softmax primitive on [outer, len, inner]:
/// exp(x - max) / sum in float32, each row by one thread (the same bits on any thread count).
/// Other dtypes take the reference kernel.
class DnnlSoftmax final : public Kernel {
 public:
  explicit DnnlSoftmax(bool coerce_2d) : coerce_2d_(coerce_2d) {}
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    if (x.dtype() != DType::Float32 || x.rank() == 0 || x.numel() == 0) return softmaxReference(ctx, coerce_2d_);
    const auto r = static_cast<int64_t>(x.rank());
    const int64_t axis = normAxis(ctx.node.attrInt("axis", coerce_2d_ ? 1 : -1), r, ctx);
    const Shape& s = x.shape();
    int64_t outer = 1, len = 1, inner = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= s[d];
    if (coerce_2d_) {
      for (int64_t d = axis; d < r; ++d) len *= s[d];
    } else {
      len = s[axis];
      for (int64_t d = axis + 1; d < r; ++d) inner *= s[d];
    }
    const memory::dims dims{outer, len, inner};
    auto it = cache_.find(dims);
    if (it == cache_.end()) {
      const SingleThreadIf one(x.numel() < kSmallPrimitiveElements);  // planned for the threads it runs on
      const memory::desc md(dims, dt::f32, tag::abc);
      dnnl::softmax_forward::primitive_desc pd(
          dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, md, 1), cpuEngine());
      it = cache_.emplace(dims, SrcDstPrimitive(md, dnnl::softmax_forward(pd))).first;
    }
    Tensor& y = ctx.allocUninit(0, DType::Float32, s);
    it->second.run(x, y);
    // A row holding NaN or +inf is NaN throughout, as exp(x - max) / sum gives it (the reference
    // kernel, NumPy, ONNX Runtime); oneDNN left NaN at that element and 0 elsewhere.
    const float* xp = x.data<float>();
    float* yp = y.data<float>();
    const int64_t total = x.numel();
    // First whether there is any (a vectorised count over all threads: the element loop below, run
    // on every call, took about half of vit_b_16's Softmax time), then where.
    int64_t bad = 0;
#pragma omp parallel for simd reduction(+ : bad) schedule(static) if (total >= kSmallPrimitiveElements)
    for (int64_t i = 0; i < total; ++i) bad += !(xp[i] < std::numeric_limits<float>::infinity());
    for (int64_t i = 0; bad > 0 && i < total; ++i) {
      if (!(xp[i] < std::numeric_limits<float>::infinity())) {  // NaN or +inf
        const int64_t o = i / (len * inner), in = i % inner;
        for (int64_t j = 0; j < len; ++j) yp[(o * len + j) * inner + in] = std::numeric_limits<float>::quiet_NaN();
      }
    }
  }

 private:
  bool coerce_2d_;
  std::map<memory::dims, SrcDstPrimitive> cache_;
};

/// LayerNormalization of a float32 tensor with constant Scale and B, only Y requested: oneDNN's
/// layer normalization over the flattened trailing dims [outer, size] (mean and variance in float32,
/// each row by one thread). Scale and B have the normalized shape, or, for the optimizer's
/// lwc.internal.LayerNorm where the normalized dims are not known before run time, one value each
/// (`uniform`). Anything else takes the reference kernel.
class DnnlLayerNorm final : public Kernel {
 public:
  DnnlLayerNorm(Tensor scale, Tensor shift, Shape scale_shape, bool uniform)
      : scale_(std::move(scale)), shift_(std::move(shift)), scale_shape_(std::move(scale_shape)), uniform_(uniform) {}
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const auto r = static_cast<int64_t>(x.rank());
    if (x.dtype() != DType::Float32 || r == 0 || x.numel() == 0) return layerNormReference(ctx);
    const int64_t axis = normAxis(ctx.node.attrInt("axis", -1), r, ctx);
    int64_t outer = 1, size = 1;
    for (int64_t d = 0; d < r; ++d) (d < axis ? outer : size) *= x.dim(static_cast<size_t>(d));
    // Scale and B must have the normalized shape (less its leading 1s), or be uniform: other
    // broadcasts, float64 statistics and errors are the reference kernel's.
    Shape norm(x.shape().begin() + axis, x.shape().end());
    while (norm.size() > scale_shape_.size() && norm.front() == 1) norm.erase(norm.begin());
    if ((!uniform_ && norm != scale_shape_) || ctx.node.attrInt("stash_type", 1) != 1) return layerNormReference(ctx);
    const memory::dims dims{outer, size};
    auto it = cache_.find(dims);
    if (it == cache_.end()) {
      const SingleThreadIf one(x.numel() < kSmallPrimitiveElements);  // planned for the threads it runs on
      const memory::desc md(dims, dt::f32, tag::ab);
      const float eps = ctx.node.attrFloat("epsilon", 1e-5f);
      const auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
      dnnl::layer_normalization_forward::primitive_desc pd(
          dnnl::layer_normalization_forward::desc(dnnl::prop_kind::forward_inference, md, eps, flags), cpuEngine());
      auto values = [&](const Tensor& t) {
        const float* v = t.data<float>();
        return uniform_ ? std::vector<float>(static_cast<size_t>(size), v[0]) : std::vector<float>(v, v + size);
      };
      it = cache_.try_emplace(dims, md, pd, values(scale_), values(shift_)).first;
    }
    Prepared& p = it->second;
    Tensor& y = ctx.allocUninit(0, DType::Float32, x.shape());
    dnnl::stream& st = cpuStream();
    p.x.set_data_handle(const_cast<void*>(x.raw()));
    p.y.set_data_handle(y.raw());
    const SingleThreadIf one(x.numel() < kSmallPrimitiveElements);
    ExecArgs{{DNNL_ARG_SRC, &p.x},     {DNNL_ARG_DST, &p.y},   {DNNL_ARG_SCALE, &p.scale},
             {DNNL_ARG_SHIFT, &p.shift}, {DNNL_ARG_MEAN, &p.mean}, {DNNL_ARG_VARIANCE, &p.var}}
        .execute(p.prim, st);
    st.wait();
  }

 private:
  /// The primitive with its memory objects, made once per shape (creating six per call cost more
  /// than a small normalization); x and y are re-pointed per call, scale and shift are this shape's
  /// copies of the constants, the statistics have their own buffers (the primitive writes them,
  /// nothing reads them). Built in place in the map: the memory objects point into the vectors.
  struct Prepared {
    Prepared(const memory::desc& md, const dnnl::layer_normalization_forward::primitive_desc& pd,
             std::vector<float> scale_v, std::vector<float> shift_v)
        : scale_values(std::move(scale_v)),
          shift_values(std::move(shift_v)),
          prim(pd),
          x(md, cpuEngine(), nullptr),
          y(md, cpuEngine(), nullptr),
          scale(memory::desc({static_cast<memory::dim>(scale_values.size())}, dt::f32, tag::a), cpuEngine(),
                scale_values.data()),
          shift(memory::desc({static_cast<memory::dim>(shift_values.size())}, dt::f32, tag::a), cpuEngine(),
                shift_values.data()),
          mean(pd.mean_desc(), cpuEngine()),
          var(pd.variance_desc(), cpuEngine()) {}
    Prepared(const Prepared&) = delete;
    Prepared& operator=(const Prepared&) = delete;
    std::vector<float> scale_values, shift_values;
    dnnl::layer_normalization_forward prim;
    memory x, y, scale, shift, mean, var;
  };
  Tensor scale_, shift_;
  Shape scale_shape_;
  bool uniform_;
  std::map<memory::dims, Prepared> cache_;
};

std::unique_ptr<Kernel> makeDnnlLayerNorm(const KernelInfo& info) {
  const Node& n = info.node;
  // Y only: the Mean and InvStdDev outputs come from the reference kernel.
  for (size_t i = 1; i < n.outputs.size(); ++i)
    if (!n.outputs[i].empty()) return nullptr;
  const Tensor* scale = info.constant(1);
  if (!scale || scale->dtype() != DType::Float32) return nullptr;
  Tensor shift(DType::Float32, {scale->numel()});
  if (info.hasInput(2)) {
    const Tensor* b = info.constant(2);
    if (!b || b->dtype() != DType::Float32 || b->shape() != scale->shape()) return nullptr;
    shift = b->reshaped({scale->numel()});
  }
  const bool uniform = n.domain == kInternalDomain && scale->numel() == 1;
  return std::make_unique<DnnlLayerNorm>(scale->reshaped({scale->numel()}), shift, scale->shape(), uniform);
}

/// lwc.internal.Gelu (the optimizer's fusion of the decomposed exact GELU): oneDNN's eltwise
/// gelu_erf, 0.5·x·(1 + erf(x/√2)) in float32, over the flattened tensor.
class DnnlGelu final : public Kernel {
 public:
  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    if (x.dtype() != DType::Float32) ctx.error("expects float32, got ", dtypeName(x.dtype()));
    Tensor& y = ctx.allocUninit(0, DType::Float32, x.shape());
    if (x.numel() == 0) return;
    const memory::dims dims{x.numel()};
    auto it = cache_.find(dims);
    if (it == cache_.end()) {
      const SingleThreadIf one(x.numel() < kSmallPrimitiveElements);  // planned for the threads it runs on
      const memory::desc md(dims, dt::f32, tag::a);
      dnnl::eltwise_forward::primitive_desc pd(
          dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::eltwise_gelu_erf, md, 0.0f, 0.0f),
          cpuEngine());
      it = cache_.emplace(dims, SrcDstPrimitive(md, dnnl::eltwise_forward(pd))).first;
    }
    it->second.run(x, y);
  }

 private:
  std::map<memory::dims, SrcDstPrimitive> cache_;
};

}  // namespace

void registerDnnlKernels(KernelRegistry& r) {
  r.add("", "Conv", 1, 22, "dnnl", makeDnnlConv);
  r.add(kInternalDomain, "ConvNhwc", 1, 1, "dnnl", makeDnnlConvNhwc);
  r.add(kInternalDomain, "PoolNhwc", 1, 1, "dnnl",
        [](const KernelInfo& info) -> std::unique_ptr<Kernel> { return std::make_unique<DnnlPoolNhwc>(info.node); });
  r.add(kInternalDomain, "GlobalAvgPoolNhwc", 1, 1, "dnnl", [](const KernelInfo&) -> std::unique_ptr<Kernel> {
    struct K final : Kernel {
      void run(KernelContext& ctx) override { globalAvgPoolNhwc(ctx); }
    };
    return std::make_unique<K>();
  });
  r.add("", "Gemm", 1, 22, "dnnl", makeDnnlGemm);
  r.add("", "MatMul", 1, 22, "dnnl", makeDnnlMatMul);
  r.add(kInternalDomain, "MatMul", 1, 1, "dnnl", makeDnnlMatMul);
  r.add("", "MatMul", 1, 22, "dnnl", [](const KernelInfo& i) { return makeDnnlActivationMatMul(i, false); });
  r.add(kInternalDomain, "MatMulTransB", 1, 1, "dnnl", [](const KernelInfo& i) { return makeDnnlActivationMatMul(i, true); });
  r.add(kInternalDomain, "MatMulMergeHeads", 1, 1, "dnnl",
        [](const KernelInfo& i) { return makeDnnlActivationMatMul(i, false); });
  r.add("", "Softmax", 1, 12, "dnnl", [](const KernelInfo&) -> std::unique_ptr<Kernel> { return std::make_unique<DnnlSoftmax>(true); });
  r.add("", "Softmax", 13, 22, "dnnl", [](const KernelInfo&) -> std::unique_ptr<Kernel> { return std::make_unique<DnnlSoftmax>(false); });
  r.add("", "LayerNormalization", 17, 22, "dnnl", makeDnnlLayerNorm);
  r.add(kInternalDomain, "LayerNorm", 1, 1, "dnnl", makeDnnlLayerNorm);
  r.add(kInternalDomain, "Gelu", 1, 1, "dnnl", [](const KernelInfo&) -> std::unique_ptr<Kernel> { return std::make_unique<DnnlGelu>(); });
  registerDnnlInt8Kernels(r);  // dnnl_int8.cpp
}

}  // namespace lwc::engine
