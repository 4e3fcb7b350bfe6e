// oneDNN fast paths. Each kernel here declines (factory returns nullptr) anything it does not
// handle exactly, so the reference kernel takes over; tests compare both on random inputs.
//
// Conv (fp32, 2-D, constant weights): oneDNN picks its preferred blocked layouts (format_tag::any);
// activations are reordered from/to plain NCHW at the kernel's edges, weights once per input shape.
#include <dnnl.hpp>
#include <map>
#include <mutex>

#include "engine/kernels/common.h"

namespace lwc::engine {

namespace {

using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

dnnl::engine& cpuEngine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}

/// Conv geometry for a 2-D convolution at a concrete input shape.
struct Conv2dGeometry {
  int64_t group = 1;
  memory::dims strides{1, 1}, dilations{0, 0} /* oneDNN: dilation - 1 */, pad_l{0, 0}, pad_r{0, 0};
  memory::dims out_hw{0, 0};
};

bool conv2dGeometry(const Node& n, const Shape& x, const Shape& w, Conv2dGeometry& g) {
  g.group = n.attrInt("group", 1);
  auto strides = n.attrInts("strides", {1, 1});
  auto dil = n.attrInts("dilations", {1, 1});
  auto pads = n.attrInts("pads", {0, 0, 0, 0});
  const std::string auto_pad = n.attrString("auto_pad", "NOTSET");
  if (strides.size() != 2 || dil.size() != 2 || pads.size() != 4) return false;
  const int64_t kh = w[2], kw = w[3];
  const int64_t k[2] = {kh, kw};
  for (int i = 0; i < 2; ++i) {
    const int64_t in = x[2 + i];
    const int64_t ek = (k[i] - 1) * dil[i] + 1;
    int64_t pl = pads[i], pr = pads[i + 2];
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      const int64_t out = (in + strides[i] - 1) / strides[i];
      const int64_t total = std::max<int64_t>(0, (out - 1) * strides[i] + ek - in);
      pl = auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2;
      pr = total - pl;
    } else if (auto_pad == "VALID") {
      pl = pr = 0;
    } else if (auto_pad != "NOTSET") {
      return false;
    }
    const int64_t out = (in + pl + pr - ek) / strides[i] + 1;
    if (out <= 0) return false;
    g.strides[i] = strides[i];
    g.dilations[i] = dil[i] - 1;
    g.pad_l[i] = pl;
    g.pad_r[i] = pr;
    g.out_hw[i] = out;
  }
  return true;
}

class DnnlConv final : public Kernel {
 public:
  DnnlConv(const Node& n, Tensor w, Tensor b) : node_(n), w_(std::move(w)), b_(std::move(b)) {}

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    if (x.dtype() != DType::Float32 || x.rank() != 4) ctx.error("expects a float32 NCHW input, got ", shapeStr(x.shape()));
    const int64_t group = node_.attrInt("group", 1);
    if (x.dim(1) != w_.dim(1) * group)
      ctx.error("input has ", x.dim(1), " channels but the weights expect ", w_.dim(1) * group);
    Prepared& p = prepare(x.shape(), ctx);
    Tensor& y = ctx.alloc(0, DType::Float32, p.out_shape);
    auto& eng = cpuEngine();
    dnnl::stream s(eng);
    memory x_user(p.x_plain, eng, const_cast<void*>(x.raw()));
    memory y_user(p.y_plain, eng, y.raw());
    memory x_mem = x_user, y_mem = y_user;
    if (p.pd.src_desc() != p.x_plain) {
      x_mem = memory(p.pd.src_desc(), eng);
      dnnl::reorder(x_user, x_mem).execute(s, x_user, x_mem);
    }
    if (p.pd.dst_desc() != p.y_plain) y_mem = memory(p.pd.dst_desc(), eng);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, x_mem}, {DNNL_ARG_WEIGHTS, p.w_mem}, {DNNL_ARG_DST, y_mem}};
    if (!b_.empty()) args[DNNL_ARG_BIAS] = p.b_mem;
    p.conv.execute(s, args);
    if (y_mem != y_user) dnnl::reorder(y_mem, y_user).execute(s, y_mem, y_user);
    s.wait();
  }

 private:
  struct Prepared {
    dnnl::convolution_forward::primitive_desc pd;
    dnnl::convolution_forward conv;
    memory::desc x_plain, y_plain;
    memory w_mem, b_mem;
    Shape out_shape;
  };

  Prepared& prepare(const Shape& xs, const KernelContext& ctx) {
    auto it = cache_.find(xs);
    if (it != cache_.end()) return it->second;
    Conv2dGeometry g;
    if (!conv2dGeometry(node_, xs, w_.shape(), g)) ctx.error("input ", shapeStr(xs), " is too small for the kernel");
    auto& eng = cpuEngine();
    const int64_t oc = w_.dim(0), icg = w_.dim(1), kh = w_.dim(2), kw = w_.dim(3);
    memory::dims xd{xs[0], xs[1], xs[2], xs[3]};
    memory::dims yd{xs[0], oc, g.out_hw[0], g.out_hw[1]};
    memory::dims wd = g.group == 1 ? memory::dims{oc, icg, kh, kw} : memory::dims{g.group, oc / g.group, icg, kh, kw};
    memory::desc x_any(xd, dt::f32, tag::any), y_any(yd, dt::f32, tag::any), w_any(wd, dt::f32, tag::any);
    memory::desc b_md = b_.empty() ? memory::desc() : memory::desc({oc}, dt::f32, tag::a);
    dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, x_any,
                                      w_any, b_md, y_any, g.strides, g.dilations, g.pad_l, g.pad_r);
    Prepared p{dnnl::convolution_forward::primitive_desc(d, eng), {}, {}, {}, {}, {}, {}};
    p.conv = dnnl::convolution_forward(p.pd);
    p.x_plain = memory::desc(xd, dt::f32, tag::nchw);
    p.y_plain = memory::desc(yd, dt::f32, tag::nchw);
    memory w_user(memory::desc(wd, dt::f32, g.group == 1 ? tag::oihw : tag::goihw), eng, const_cast<void*>(w_.raw()));
    p.w_mem = memory(p.pd.weights_desc(), eng);
    dnnl::stream s(eng);
    dnnl::reorder(w_user, p.w_mem).execute(s, w_user, p.w_mem);
    if (!b_.empty()) p.b_mem = memory(b_md, eng, const_cast<void*>(b_.raw()));
    s.wait();
    p.out_shape = {xs[0], oc, g.out_hw[0], g.out_hw[1]};
    return cache_.emplace(xs, std::move(p)).first->second;
  }

  Node node_;
  Tensor w_, b_;
  std::map<Shape, Prepared> cache_;
};

std::unique_ptr<Kernel> makeDnnlConv(const KernelInfo& info) {
  const Node& n = info.node;
  const Tensor* w = info.constant(1);
  if (!w || w->dtype() != DType::Float32 || w->rank() != 4) return nullptr;
  const Tensor* b = info.hasInput(2) ? info.constant(2) : nullptr;
  if (info.hasInput(2) && (!b || b->dtype() != DType::Float32 || b->numel() != w->dim(0))) return nullptr;
  const auto* xt = info.input_types.empty() ? nullptr : info.input_types[0];
  if (xt && xt->dtype != DType::Undefined && xt->dtype != DType::Float32) return nullptr;
  const int64_t group = n.attrInt("group", 1);
  if (group < 1 || w->dim(0) % group != 0) return nullptr;
  const auto ks = n.attrInts("kernel_shape", {w->dim(2), w->dim(3)});
  if (ks.size() != 2 || ks[0] != w->dim(2) || ks[1] != w->dim(3)) return nullptr;
  if (n.attrInts("strides", {1, 1}).size() != 2 || n.attrInts("dilations", {1, 1}).size() != 2) return nullptr;
  return std::make_unique<DnnlConv>(n, *w, b ? *b : Tensor());
}

/// Y = X·W + b for a runtime X (any rank >= 2, leading dims flattened) and constant 2-D W.
/// Serves Gemm (alpha = beta = 1, transA = 0, C absent or a length-N vector) and MatMul.
class DnnlMatMul final : public Kernel {
 public:
  DnnlMatMul(Tensor w_kn, Tensor b) : w_(std::move(w_kn)), b_(std::move(b)) {}

  void run(KernelContext& ctx) override {
    const Tensor& x = ctx.in(0);
    const int64_t k = w_.dim(0), n = w_.dim(1);
    if (x.dtype() != DType::Float32 || x.rank() < 2 || x.shape().back() != k)
      ctx.error("input ", shapeStr(x.shape()), " does not match weights ", shapeStr(w_.shape()));
    const int64_t m = x.numel() / k;
    Shape ys = x.shape();
    ys.back() = n;
    Tensor& y = ctx.alloc(0, DType::Float32, ys);
    Prepared& p = prepare(m);
    auto& eng = cpuEngine();
    dnnl::stream s(eng);
    memory xm(p.pd.src_desc(), eng, const_cast<void*>(x.raw()));
    memory ym(p.pd.dst_desc(), eng, y.raw());
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, xm}, {DNNL_ARG_WEIGHTS, p.w_mem}, {DNNL_ARG_DST, ym}};
    if (!b_.empty()) args[DNNL_ARG_BIAS] = p.b_mem;
    p.prim.execute(s, args);
    s.wait();
  }

 private:
  struct Prepared {
    dnnl::matmul::primitive_desc pd;
    dnnl::matmul prim;
    memory w_mem, b_mem;
  };
  Prepared& prepare(int64_t m) {
    auto it = cache_.find(m);
    if (it != cache_.end()) return it->second;
    auto& eng = cpuEngine();
    const int64_t k = w_.dim(0), n = w_.dim(1);
    memory::desc xd({m, k}, dt::f32, tag::ab), yd({m, n}, dt::f32, tag::ab);
    memory::desc wd_any({k, n}, dt::f32, tag::any);
    memory::desc bd = b_.empty() ? memory::desc() : memory::desc({1, n}, dt::f32, tag::ab);
    dnnl::matmul::desc d(xd, wd_any, bd, yd);
    Prepared p{dnnl::matmul::primitive_desc(d, eng), {}, {}, {}};
    p.prim = dnnl::matmul(p.pd);
    memory w_user(memory::desc({k, n}, dt::f32, tag::ab), eng, const_cast<void*>(w_.raw()));
    p.w_mem = memory(p.pd.weights_desc(), eng);
    dnnl::stream s(eng);
    dnnl::reorder(w_user, p.w_mem).execute(s, w_user, p.w_mem);
    s.wait();
    if (!b_.empty()) p.b_mem = memory(bd, eng, const_cast<void*>(b_.raw()));
    return cache_.emplace(m, std::move(p)).first->second;
  }
  Tensor w_, b_;
  std::map<int64_t, Prepared> cache_;
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

std::unique_ptr<Kernel> makeDnnlMatMul(const KernelInfo& info) {
  const Tensor* b = info.constant(1);
  if (!b || b->dtype() != DType::Float32 || b->rank() != 2) return nullptr;
  const auto* xt = info.input_types.empty() ? nullptr : info.input_types[0];
  if (!xt || xt->dtype != DType::Float32 || !xt->shape || xt->shape->size() < 2) return nullptr;
  return std::make_unique<DnnlMatMul>(*b, Tensor());
}

}  // namespace

void registerDnnlKernels(KernelRegistry& r) {
  r.add("", "Conv", 1, 22, "dnnl", makeDnnlConv);
  r.add("", "Gemm", 1, 22, "dnnl", makeDnnlGemm);
  r.add("", "MatMul", 1, 22, "dnnl", makeDnnlMatMul);
}

}  // namespace lwc::engine
