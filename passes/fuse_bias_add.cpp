#include "passes/fuse_bias_add.h"

#include "lwc/graph_edit.h"
#include "lwc/shape_inference.h"

namespace lwc::passes {

namespace {

// The per-channel vector (length ch) that constant c adds to an output of rank `rank` whose
// channel axis is `axis`, or nullopt when c is not of that form.
std::optional<std::vector<float>> channelVector(const Tensor& c, size_t rank, size_t axis, int64_t ch) {
  if (c.rank() > rank) return std::nullopt;
  const size_t lead = rank - c.rank();
  int64_t along = 1;
  for (size_t d = 0; d < c.rank(); ++d) {
    const size_t out_axis = d + lead;
    if (out_axis == axis) along = c.dim(d);
    else if (c.dim(d) != 1) return std::nullopt;
  }
  if (along != 1 && along != ch) return std::nullopt;
  std::vector<float> v(static_cast<size_t>(ch));
  for (int64_t o = 0; o < ch; ++o) v[static_cast<size_t>(o)] = c.data<float>()[along == 1 ? 0 : o];
  return v;
}

Tensor addVectors(const Tensor* base, const std::vector<float>& v, double scale_v) {
  Tensor t(DType::Float32, {static_cast<int64_t>(v.size())});
  for (size_t o = 0; o < v.size(); ++o)
    t.data<float>()[o] = static_cast<float>((base ? base->at(base->numel() == 1 ? 0 : static_cast<int64_t>(o)) : 0.0) +
                                            v[o] * scale_v);
  return t;
}

}  // namespace

PassResult FuseBiasAdd::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  const ValueTypes types = inferShapes(m);
  PassResult r;
  int64_t fused = 0, to_gemm = 0, left = 0;
  for (size_t ai = 0; ai < g.nodes.size(); ++ai) {
    const Node add = g.nodes[ai];
    if (add.op_type != "Add" || !add.domain.empty() || add.inputs.size() != 2) continue;
    int side = floatConstant(g, add.inputs[1]) && !g.isGraphInput(add.inputs[1]) ? 1
               : floatConstant(g, add.inputs[0]) && !g.isGraphInput(add.inputs[0]) ? 0 : -1;
    if (side < 0) continue;
    const std::string& y = add.inputs[static_cast<size_t>(1 - side)];
    const Tensor& c = g.initializers.at(add.inputs[static_cast<size_t>(side)]);
    const int pi = producerIndex(g, y);
    if (pi < 0) continue;
    const Node& p = g.nodes[static_cast<size_t>(pi)];
    if (!p.domain.empty() || p.outputs.size() != 1) continue;
    const std::string& op = p.op_type;
    if (op != "Conv" && op != "ConvTranspose" && op != "Gemm" && op != "MatMul") continue;
    auto leave = [&](const std::string& why) {
      r.notes.push_back(add.describe() + " after " + p.describe() + ": left alone: " + why);
      ++left;
    };
    if (g.isGraphOutput(y) || useCount(g, y) != 1) {
      leave("the layer's output has other readers or is a graph output");
      continue;
    }
    const Tensor* w = p.inputs.size() > 1 ? floatConstant(g, p.inputs[1]) : nullptr;
    if (!w) {
      leave("the layer has no constant float weights");
      continue;
    }
    const std::string base = p.name.empty() ? op : p.name;
    Node q = p;
    const std::string old_bias = p.hasInput(2) ? p.inputs[2] : "";
    if (op == "Conv" || op == "ConvTranspose") {
      const int64_t ch = op == "Conv" ? w->dim(0) : w->dim(1) * p.attrInt("group", 1);
      auto v = channelVector(c, w->rank(), 1, ch);
      const Tensor* b = p.hasInput(2) ? floatConstant(g, p.inputs[2], ch) : nullptr;
      if (!v || (p.hasInput(2) && !b)) {
        leave(v ? "the layer's bias is not constant" : "the added constant is not one value per output channel");
        continue;
      }
      const std::string bn = replaceConstant(g, p.hasInput(2) ? p.inputs[2] : "", base + "_bias", addVectors(b, *v, 1.0));
      if (q.inputs.size() < 3) q.inputs.resize(3);
      q.inputs[2] = bn;
    } else {
      const bool gemm = op == "Gemm";
      if (w->rank() != 2) {
        leave("B is not a 2-D matrix");
        continue;
      }
      const int64_t n = gemm && p.attrInt("transB", 0) ? w->dim(0) : w->dim(1);
      if (!gemm) {
        auto xs = types.find(p.inputs[0]);
        if (xs == types.end() || !xs->second.shape || xs->second.shape->size() != 2) {
          leave("the MatMul input is not known to be 2-D (batched MatMul stays)");
          continue;
        }
      }
      auto v = channelVector(c, 2, 1, n);
      if (!v) {
        leave("the added constant is not a row vector of the output width");
        continue;
      }
      const double beta = gemm ? p.attrFloat("beta", 1.0f) : 1.0;
      const Tensor* old_c = gemm && p.hasInput(2) ? floatConstant(g, p.inputs[2]) : nullptr;
      if (gemm && p.hasInput(2) && (!old_c || !(old_c->numel() == 1 || (old_c->numel() == n && old_c->shape().back() == n)))) {
        leave("the Gemm's C is not a constant scalar or row vector");
        continue;
      }
      if (gemm && beta == 0.0) old_c = nullptr;
      // New C with beta = 1: beta·C_old + v.
      Tensor nc(DType::Float32, {n});
      for (int64_t o = 0; o < n; ++o)
        nc.data<float>()[o] = static_cast<float>((old_c ? beta * old_c->at(old_c->numel() == 1 ? 0 : o) : 0.0) +
                                                 (*v)[static_cast<size_t>(o)]);
      const std::string cn = replaceConstant(g, old_c ? p.inputs[2] : "", base + "_bias", std::move(nc));
      if (!gemm) {
        q.op_type = "Gemm";
        q.attrs.clear();
        ++to_gemm;
      } else {
        q.setAttr("beta", 1.0f);
      }
      if (q.inputs.size() < 3) q.inputs.resize(3);
      q.inputs[2] = cn;
    }
    q.outputs[0] = add.outputs[0];
    const std::string c_name = add.inputs[static_cast<size_t>(side)];
    g.nodes[static_cast<size_t>(pi)] = q;
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(ai));
    dropUnusedConstants(g, {c_name, old_bias});
    std::erase_if(g.value_info, [&](const ValueInfo& vi) { return vi.name == y; });
    --ai;
    ++fused;
  }
  r.stats = {{"fused", fused}, {"matmul_to_gemm", to_gemm}, {"left_alone", left}};
  r.changed = fused > 0;
  return r;
}

}  // namespace lwc::passes
