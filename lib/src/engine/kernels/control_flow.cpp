// Control flow: If (opsets 1-22), Loop (opsets 1-22) and Scan (opsets 9-22) run their subgraphs as
// nested Sessions.
//
// The Session gives an If, Loop or Scan node the outer-scope values its subgraphs read (implicitInputs,
// sorted by name) as extra inputs after its own, so the buffer planning keeps them alive until the
// node has run and the graph rewrites see them as read. Each subgraph becomes a Model of the
// node's opset whose graph inputs are the body's own inputs followed by those outer values; a
// subgraph node of another domain is refused when the session is built. Loop: while the trip count
// (M, when given) is not reached and the condition (cond, when given, then the body's first
// output) holds, the body maps (iteration, condition, carried values) to (condition, carried
// values, scan outputs); scan outputs are stacked along a new first axis (each iteration's must
// have the same shape; with no iteration, [0] followed by the slice shape where the body's
// declaration or shape inference knows it, as ONNX Runtime gives it). As in ONNX Runtime,
// a Loop with neither M nor a condition that ever turns false runs until stopped.
#include <onnx/onnx_pb.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "engine/kernel.h"
#include "engine/kernels/common.h"
#include "lwc/model_io.h"
#include "lwc/shape_inference.h"

namespace lwc::engine {

namespace {

// Index of the node's first outer-value input: the Session appended implicitInputs(node) after the
// node's own inputs.
size_t outerFirst(const Node& n) { return n.inputs.size() - implicitInputs(n).size(); }

// One subgraph as a session: formal inputs (the body's declared inputs) then the outer values, the
// node's inputs from `outer_first` on.
class Subgraph {
 public:
  Subgraph(const KernelInfo& info, const char* attr, size_t outer_first) {
    const onnx::AttributeProto* a = info.node.attr(attr);
    if (!a || !a->has_g()) fail("node ", info.node.describe(), ": attribute '", attr, "' (a graph) is missing");
    onnx::ModelProto mp;
    mp.set_ir_version(8);
    auto* op = mp.add_opset_import();
    op->set_domain("");
    op->set_version(info.opset);
    *mp.mutable_graph() = a->g();
    onnx::GraphProto& g = *mp.mutable_graph();
    for (const auto& in : g.input()) formal_.push_back(in.name());
    for (size_t i = outer_first; i < info.node.inputs.size(); ++i) {
      onnx::ValueInfoProto* v = g.add_input();
      const ValueInfo* t = i < info.input_types.size() ? info.input_types[i] : nullptr;
      v->set_name(info.node.inputs[i]);
      // The element type only: the outer value's shape may hold another graph's symbols.
      if (t && t->dtype != DType::Undefined && !t->other_type)
        v->mutable_type()->mutable_tensor_type()->set_elem_type(valueInfoToProto(*t).type().tensor_type().elem_type());
    }
    for (const auto& o : g.output()) {
      outputs_.push_back(o.name());
      const auto& tt = o.type().tensor_type();
      declared_.push_back(o.type().has_tensor_type() ? fromOnnxType(tt.elem_type()) : DType::Undefined);
      std::optional<Shape> shape;
      if (o.type().has_tensor_type() && tt.has_shape()) {
        shape = Shape{};
        for (const auto& d : tt.shape().dim()) {
          if (!d.has_dim_value() || d.dim_value() < 0) {
            shape.reset();
            break;
          }
          shape->push_back(d.dim_value());
        }
      }
      declared_shapes_.push_back(std::move(shape));
    }
    const std::string label = "subgraph '" + std::string(attr) + "' of node " + info.node.describe();
    model_ = modelFromProto(mp, {}, label);
    SessionOptions opts = info.options;
    opts.split_batch = false;
    opts.profile = false;
    session_ = std::make_unique<Session>(model_, opts);
  }

  size_t numFormal() const { return formal_.size(); }
  size_t numOutputs() const { return outputs_.size(); }
  /// Output o's element type, and its shape where every dimension is known: from the body's
  /// declaration, completed by ONNX's shape inference of the body (from the body's own inputs, as
  /// ONNX Runtime does for a Loop of no iterations). The inference runs once, on the first call:
  /// only a Loop or Scan with nothing to run asks.
  std::pair<DType, std::optional<Shape>> sliceType(size_t o) const {
    std::call_once(inferred_, [this] {
      const ValueTypes inferred = inferShapes(model_);
      for (size_t k = 0; k < outputs_.size(); ++k) {
        const auto it = inferred.find(outputs_[k]);
        if (declared_shapes_[k] || it == inferred.end() || !it->second.shape) continue;
        Shape s;
        for (const auto& d : *it->second.shape)
          if (d.known()) s.push_back(d.value);
        if (s.size() == it->second.shape->size()) declared_shapes_[k] = std::move(s);
        if (declared_[k] == DType::Undefined) declared_[k] = it->second.dtype;
      }
    });
    return {declared_[o], declared_shapes_[o]};
  }
  const std::string& outputName(size_t o) const { return outputs_[o]; }

  std::vector<Tensor> run(const std::vector<Tensor>& formal, const KernelContext& ctx, size_t outer_first) const {
    TensorMap feeds;
    for (size_t i = 0; i < formal.size(); ++i) feeds[formal_[i]] = formal[i];
    for (size_t i = outer_first; i < ctx.inputs.size(); ++i)
      if (ctx.has(i)) feeds.emplace(ctx.node.inputs[i], ctx.in(i));
    TensorMap out = session_->run(feeds);
    std::vector<Tensor> r;
    for (const auto& name : outputs_) r.push_back(out.at(name));
    return r;
  }

 private:
  Model model_;
  std::unique_ptr<Session> session_;
  std::vector<std::string> formal_, outputs_;
  // The outputs' declared types and shapes, completed by sliceType() on its first call.
  mutable std::vector<DType> declared_;
  mutable std::vector<std::optional<Shape>> declared_shapes_;
  mutable std::once_flag inferred_;
};

// The equal-shaped `parts` stacked along a new axis `axis` of the result, the last part first when
// `reverse`.
Tensor stacked(const std::vector<Tensor>& parts, int64_t axis, bool reverse) {
  const Tensor& first = parts.front();
  const int64_t steps = static_cast<int64_t>(parts.size());
  Shape s = first.shape();
  s.insert(s.begin() + axis, steps);
  Tensor y = Tensor::uninitialized(first.dtype(), s);
  const int64_t outer = numelOf(Shape(first.shape().begin(), first.shape().begin() + axis));
  const size_t block = first.nbytes() / static_cast<size_t>(std::max<int64_t>(outer, 1));
  auto* dst = static_cast<char*>(y.raw());
  for (int64_t t = 0; t < steps; ++t) {
    const int64_t at = reverse ? steps - 1 - t : t;
    const auto* src = static_cast<const char*>(parts[static_cast<size_t>(t)].raw());
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(dst + static_cast<size_t>(o * steps + at) * block, src + static_cast<size_t>(o) * block, block);
  }
  return y;
}

// Appends a step's scan output to `parts`, which every step must give in the same shape and type.
void collect(const KernelContext& ctx, std::vector<Tensor>& parts, Tensor t, size_t k, int64_t step) {
  if (!parts.empty() && (t.shape() != parts.front().shape() || t.dtype() != parts.front().dtype()))
    ctx.error("scan output ", k, " is ", shapeStr(t.shape()), " in step ", step, " and ", shapeStr(parts.front().shape()),
              " before; every step must give the same shape");
  parts.push_back(std::move(t));
}

bool truth(const KernelContext& ctx, const Tensor& t, const char* what) {
  if (t.numel() != 1) ctx.error(what, " has shape ", shapeStr(t.shape()), "; expected one boolean");
  return t.at(0) != 0;
}

class IfKernel : public Kernel {
 public:
  explicit IfKernel(const KernelInfo& info)
      : outer_first_(outerFirst(info.node)), then_(info, "then_branch", outer_first_), else_(info, "else_branch", outer_first_) {
    if (then_.numOutputs() != info.node.outputs.size() || else_.numOutputs() != info.node.outputs.size())
      fail("node ", info.node.describe(), ": its branches give ", then_.numOutputs(), " and ", else_.numOutputs(),
           " outputs; the node has ", info.node.outputs.size());
  }
  void run(KernelContext& ctx) override {
    const Subgraph& branch = truth(ctx, ctx.in(0), "cond") ? then_ : else_;
    std::vector<Tensor> outs = branch.run({}, ctx, outer_first_);
    for (size_t o = 0; o < outs.size(); ++o) ctx.outputs[o] = std::move(outs[o]);
  }

 private:
  size_t outer_first_;
  Subgraph then_, else_;
};

class LoopKernel : public Kernel {
 public:
  explicit LoopKernel(const KernelInfo& info)
      : outer_first_(outerFirst(info.node)), body_(info, "body", outer_first_) {
    carried_ = outer_first_ >= 2 ? outer_first_ - 2 : 0;
    if (outer_first_ < 2 || body_.numFormal() != carried_ + 2 || body_.numOutputs() < carried_ + 1 ||
        info.node.outputs.size() != body_.numOutputs() - 1)
      fail("node ", info.node.describe(), ": Loop takes M, cond and N carried values, its body N + 2 inputs and 1 + N + K "
           "outputs, the node N + K outputs; this one has ", outer_first_, " inputs, a body of ", body_.numFormal(),
           " inputs and ", body_.numOutputs(), " outputs, and ", info.node.outputs.size(), " outputs");
  }
  void run(KernelContext& ctx) override {
    int64_t max_trips = INT64_MAX;
    if (ctx.has(0)) {
      const std::vector<int64_t> m = readInts(ctx.in(0), ctx);
      if (m.size() != 1) ctx.error("M has shape ", shapeStr(ctx.in(0).shape()), "; expected one trip count");
      max_trips = m[0];
    }
    bool keep = ctx.has(1) ? truth(ctx, ctx.in(1), "cond") : true;
    std::vector<Tensor> formal(carried_ + 2);
    for (size_t i = 0; i < carried_; ++i) formal[2 + i] = ctx.in(2 + i);
    const size_t scans = body_.numOutputs() - 1 - carried_;
    std::vector<std::vector<Tensor>> scanned(scans);
    for (int64_t it = 0; it < max_trips && keep; ++it) {
      formal[0] = Tensor::scalar<int64_t>(it);
      formal[1] = Tensor(DType::Bool, {});
      formal[1].data<bool>()[0] = keep;
      std::vector<Tensor> outs = body_.run(formal, ctx, outer_first_);
      keep = truth(ctx, outs[0], "the body's condition output");
      for (size_t i = 0; i < carried_; ++i) formal[2 + i] = std::move(outs[1 + i]);
      for (size_t k = 0; k < scans; ++k) collect(ctx, scanned[k], std::move(outs[1 + carried_ + k]), k, it);
    }
    for (size_t i = 0; i < carried_; ++i) ctx.outputs[i] = std::move(formal[2 + i]);
    for (size_t k = 0; k < scans; ++k) {
      if (scanned[k].empty()) {  // [0] followed by the slice shape where it is known, as in ONNX Runtime
        const auto [dt, slice] = body_.sliceType(1 + carried_ + k);
        Shape s{0};
        if (slice) s.insert(s.end(), slice->begin(), slice->end());
        ctx.outputs[carried_ + k] = Tensor(dt == DType::Undefined ? DType::Float32 : dt, std::move(s));
      } else {
        ctx.outputs[carried_ + k] = stacked(scanned[k], 0, false);
      }
    }
  }

 private:
  size_t outer_first_;
  Subgraph body_;
  size_t carried_ = 0;
};

// Scan (opsets 9-22): the body maps (N states, one slice of each of the M scan inputs along its
// axis) to (N states, K scan output slices); the slices are taken and stacked along each input's
// and output's axis, in reverse where its direction is 1. With no steps, each scan output is empty
// along its axis and otherwise has the slice shape the body declares or its shape inference gives
// (an error where neither knows every dimension). Opset 8's Scan (a batch axis and sequence_lens) is not run.
class ScanKernel : public Kernel {
 public:
  explicit ScanKernel(const KernelInfo& info)
      : outer_first_(outerFirst(info.node)), body_(info, "body", outer_first_) {
    const Node& n = info.node;
    scans_ = static_cast<size_t>(n.attrInt("num_scan_inputs", 0));
    if (scans_ < 1 || scans_ > outer_first_) fail("node ", n.describe(), ": num_scan_inputs is ", scans_, " of its ", outer_first_, " inputs");
    states_ = outer_first_ - scans_;
    if (body_.numFormal() != outer_first_ || body_.numOutputs() != n.outputs.size() || n.outputs.size() < states_)
      fail("node ", n.describe(), ": its body takes ", body_.numFormal(), " inputs and gives ", body_.numOutputs(),
           " outputs; the node has ", outer_first_, " inputs and ", n.outputs.size(), " outputs");
    const size_t outs = n.outputs.size() - states_;
    in_dir_ = n.attrInts("scan_input_directions", std::vector<int64_t>(scans_, 0));
    out_dir_ = n.attrInts("scan_output_directions", std::vector<int64_t>(outs, 0));
    in_axis_ = n.attrInts("scan_input_axes", std::vector<int64_t>(scans_, 0));
    out_axis_ = n.attrInts("scan_output_axes", std::vector<int64_t>(outs, 0));
    if (in_dir_.size() != scans_ || in_axis_.size() != scans_ || out_dir_.size() != outs || out_axis_.size() != outs)
      fail("node ", n.describe(), ": the scan_input_* attributes need ", scans_, " values and the scan_output_* ", outs);
  }

  void run(KernelContext& ctx) override {
    // Each scan input's axis and its length (the same for all).
    int64_t steps = -1;
    std::vector<int64_t> axis(scans_);
    for (size_t j = 0; j < scans_; ++j) {
      const Tensor& x = ctx.in(states_ + j);
      axis[j] = normAxis(in_axis_[j], static_cast<int64_t>(x.rank()), ctx);
      const int64_t len = x.dim(static_cast<size_t>(axis[j]));
      if (steps >= 0 && len != steps) ctx.error("scan input ", j, " has ", len, " steps along its axis and scan input 0 ", steps);
      steps = len;
    }
    std::vector<Tensor> formal(states_ + scans_);
    for (size_t i = 0; i < states_; ++i) formal[i] = ctx.in(i);
    const size_t outs = ctx.numOutputs() - states_;
    std::vector<std::vector<Tensor>> slices(outs);
    for (int64_t t = 0; t < steps; ++t) {
      for (size_t j = 0; j < scans_; ++j)
        formal[states_ + j] = sliceAt(ctx.in(states_ + j), axis[j], in_dir_[j] ? steps - 1 - t : t);
      std::vector<Tensor> r = body_.run(formal, ctx, outer_first_);
      for (size_t i = 0; i < states_; ++i) formal[i] = std::move(r[i]);
      for (size_t k = 0; k < outs; ++k) collect(ctx, slices[k], std::move(r[states_ + k]), k, t);
    }
    for (size_t i = 0; i < states_; ++i) ctx.outputs[i] = std::move(formal[i]);
    for (size_t k = 0; k < outs; ++k) {
      if (!slices[k].empty()) {
        const int64_t a = normAxis(out_axis_[k], static_cast<int64_t>(slices[k].front().rank()) + 1, ctx);
        ctx.outputs[states_ + k] = stacked(slices[k], a, out_dir_[k] != 0);
        continue;
      }
      // No steps: the states stay as they came in, and each scan output is empty along its axis,
      // its other dimensions the slice shape the body declares or infers (ONNX Runtime 1.30 fails here).
      const auto [dt, slice] = body_.sliceType(states_ + k);
      if (!slice || dt == DType::Undefined)
        ctx.error("scan output ", k, " has no steps (the scan inputs are empty along their axes) and neither the body's ",
                  "declaration nor its shape inference gives its slice's type and every dimension; feed at least one step, or give ",
                  "the body's output '", body_.outputName(states_ + k), "' a static shape");
      Shape s = *slice;
      const int64_t a = normAxis(out_axis_[k], static_cast<int64_t>(s.size()) + 1, ctx);
      s.insert(s.begin() + a, 0);
      ctx.outputs[states_ + k] = Tensor(dt, std::move(s));
    }
  }

 private:
  // x's slice at `index` along `axis` (that dimension removed).
  static Tensor sliceAt(const Tensor& x, int64_t axis, int64_t index) {
    Shape s = x.shape();
    const int64_t len = s[static_cast<size_t>(axis)];
    s.erase(s.begin() + axis);
    Tensor y = Tensor::uninitialized(x.dtype(), s);
    const int64_t outer = numelOf(Shape(x.shape().begin(), x.shape().begin() + axis));
    const size_t block = y.nbytes() / static_cast<size_t>(std::max<int64_t>(outer, 1));
    const auto* src = static_cast<const char*>(x.raw());
    auto* dst = static_cast<char*>(y.raw());
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(dst + static_cast<size_t>(o) * block, src + static_cast<size_t>(o * len + index) * block, block);
    return y;
  }

  size_t outer_first_;
  Subgraph body_;
  size_t scans_ = 0, states_ = 0;
  std::vector<int64_t> in_dir_, out_dir_, in_axis_, out_axis_;
};

}  // namespace

void registerControlFlowKernels(KernelRegistry& r) {
  r.add("", "If", 1, 22, "ref", [](const KernelInfo& info) -> std::unique_ptr<Kernel> { return std::make_unique<IfKernel>(info); });
  r.add("", "Loop", 1, 22, "ref",
        [](const KernelInfo& info) -> std::unique_ptr<Kernel> { return std::make_unique<LoopKernel>(info); });
  r.add("", "Scan", 9, 22, "ref",
        [](const KernelInfo& info) -> std::unique_ptr<Kernel> { return std::make_unique<ScanKernel>(info); });
}

}  // namespace lwc::engine
