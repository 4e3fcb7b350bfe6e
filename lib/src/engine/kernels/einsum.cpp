// Einsum (opsets 12-22), reference kernel: explicit ("ij,jk->ik") and implicit ("ij,jk", output =
// the labels that appear once, in ASCII order, after the ellipsis) forms, ellipses (broadcast,
// right-aligned), a label repeated within a term (its diagonal), size-1 broadcasting of a label.
// One loop over every label's range; each output element sums the product of the operands'
// elements, in double for floats and in int64 for integers.
#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/kernel.h"
#include "engine/kernels/common.h"
#include "engine/kernels/dnnl_common.h"

namespace lwc::engine {

namespace {

// Labels are ints: letters as their character codes, the ellipsis' dims as 256 + position.
constexpr int kEllipsisBase = 256;

struct Term {
  std::vector<int> labels;  ///< per dim of the operand (after the ellipsis is expanded)
};

// A term's labels before the ellipsis is expanded: letters, and -1 where "..." stands.
std::vector<int> parseTerm(const KernelContext& ctx, const std::string& t, const std::string& eq) {
  std::vector<int> out;
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '.') {
      if (t.compare(i, 3, "...") != 0 || std::count(out.begin(), out.end(), -1))
        ctx.error("equation '", eq, "': a term may hold one ellipsis written '...'");
      out.push_back(-1);
      i += 2;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      out.push_back(static_cast<unsigned char>(c));
    } else {
      ctx.error("equation '", eq, "': '", std::string(1, c), "' is not a letter");
    }
  }
  return out;
}

template <typename Acc, typename T>
void contract(KernelContext& ctx, const std::vector<const Tensor*>& ops, const std::vector<Term>& terms,
              const std::vector<int>& out_labels, const std::map<int, int64_t>& sizes, DType dt) {
  // Every label: its range, the output's stride and each operand's stride (0 where it is absent
  // or broadcast; summed over a repeated label: the diagonal).
  std::vector<int> labels;
  for (const auto& [l, n] : sizes) labels.push_back(l);
  const size_t nl = labels.size(), no = ops.size();
  std::vector<int64_t> extent(nl), out_stride(nl, 0);
  std::vector<std::vector<int64_t>> op_stride(no, std::vector<int64_t>(nl, 0));
  Shape out_shape;
  for (int l : out_labels) out_shape.push_back(sizes.at(l));
  for (size_t k = 0; k < nl; ++k) {
    extent[k] = sizes.at(labels[k]);
    int64_t s = 1;
    for (size_t j = out_labels.size(); j-- > 0;) {
      if (out_labels[j] == labels[k]) out_stride[k] = s;
      s *= out_shape[j];
    }
    for (size_t o = 0; o < no; ++o) {
      const Shape& sh = ops[o]->shape();
      int64_t st = 1;
      for (size_t d = sh.size(); d-- > 0;) {
        if (terms[o].labels[d] == labels[k] && sh[d] != 1) op_stride[o][k] += st;
        st *= sh[d];
      }
    }
  }
  std::vector<Acc> acc(static_cast<size_t>(numelOf(out_shape)), Acc(0));
  int64_t total = 1;
  for (int64_t e : extent) total *= e;
  std::vector<const T*> data(no);
  for (size_t o = 0; o < no; ++o) data[o] = ops[o]->data<T>();
  std::vector<int64_t> idx(nl, 0), off(no, 0);
  int64_t out_off = 0;
  for (int64_t it = 0; it < total; ++it) {
    Acc p = Acc(1);
    for (size_t o = 0; o < no; ++o) p *= static_cast<Acc>(data[o][off[o]]);
    acc[static_cast<size_t>(out_off)] += p;
    for (size_t k = nl; k-- > 0;) {  // next index, last label fastest
      if (++idx[k] < extent[k]) {
        out_off += out_stride[k];
        for (size_t o = 0; o < no; ++o) off[o] += op_stride[o][k];
        break;
      }
      idx[k] = 0;
      out_off -= out_stride[k] * (extent[k] - 1);
      for (size_t o = 0; o < no; ++o) off[o] -= op_stride[o][k] * (extent[k] - 1);
    }
  }
  Tensor y(dt, out_shape);
  std::transform(acc.begin(), acc.end(), y.data<T>(), [](Acc v) { return static_cast<T>(v); });
  ctx.outputs[0] = std::move(y);
}

// The equation read against the inputs: each input's labels, the output's, every label's size.
struct Plan {
  std::vector<const Tensor*> ops;
  std::vector<Term> terms;
  std::vector<int> out_labels;
  std::map<int, int64_t> sizes;
  DType dt;
};

Plan plan(const KernelContext& ctx) {
  std::string eq;
  for (char c : ctx.node.attrString("equation")) if (c != ' ') eq += c;
  if (eq.empty()) ctx.error("has no equation attribute");
  const size_t arrow = eq.find("->");
  const std::string lhs = eq.substr(0, arrow);
  std::vector<std::string> term_text;
  for (size_t a = 0;;) {
    const size_t b = lhs.find(',', a);
    term_text.push_back(lhs.substr(a, b == std::string::npos ? std::string::npos : b - a));
    if (b == std::string::npos) break;
    a = b + 1;
  }
  const size_t n = ctx.inputs.size();
  if (term_text.size() != n) ctx.error("equation '", eq, "' has ", term_text.size(), " terms for ", n, " inputs");
  std::vector<const Tensor*> ops;
  const DType dt = ctx.in(0).dtype();
  for (size_t i = 0; i < n; ++i) {
    ops.push_back(&ctx.in(i));
    if (ctx.in(i).dtype() != dt) ctx.error("input ", i, " is ", dtypeName(ctx.in(i).dtype()), " but input 0 is ", dtypeName(dt));
  }
  // Expand each term's ellipsis over the dims its letters leave, right-aligned across terms.
  std::vector<Term> terms(n);
  std::map<int, int64_t> sizes;
  std::map<int, int> once;
  int64_t ell_rank = 0;
  std::vector<std::vector<int>> raw(n);
  for (size_t i = 0; i < n; ++i) {
    raw[i] = parseTerm(ctx, term_text[i], eq);
    const int64_t letters = static_cast<int64_t>(raw[i].size()) - (std::count(raw[i].begin(), raw[i].end(), -1) ? 1 : 0);
    const int64_t rank = static_cast<int64_t>(ops[i]->rank());
    const bool has_ell = letters != static_cast<int64_t>(raw[i].size());
    if (has_ell ? rank < letters : rank != letters)
      ctx.error("equation '", eq, "': term '", term_text[i], "' has ", letters, " labels", has_ell ? " and an ellipsis" : "",
                " but input ", i, " has shape ", shapeStr(ops[i]->shape()));
    if (has_ell) ell_rank = std::max(ell_rank, rank - letters);
  }
  for (size_t i = 0; i < n; ++i) {
    const Shape& sh = ops[i]->shape();
    const int64_t covered = static_cast<int64_t>(sh.size()) - (static_cast<int64_t>(raw[i].size()) - 1);
    for (int l : raw[i]) {
      if (l == -1) {
        for (int64_t j = 0; j < covered; ++j) terms[i].labels.push_back(kEllipsisBase + static_cast<int>(ell_rank - covered + j));
      } else {
        terms[i].labels.push_back(l);
      }
    }
    for (size_t d = 0; d < sh.size(); ++d) {
      const int l = terms[i].labels[d];
      auto [it, fresh] = sizes.emplace(l, sh[d]);
      if (!fresh && it->second != sh[d]) {
        if (it->second == 1) it->second = sh[d];
        else if (sh[d] != 1)
          ctx.error("equation '", eq, "': ", l >= kEllipsisBase ? std::string("an ellipsis dim") : "label '" + std::string(1, static_cast<char>(l)) + "'",
                    " is ", it->second, " in one input and ", sh[d], " in input ", i);
      }
      if (l < kEllipsisBase) ++once[l];
    }
  }
  std::vector<int> out_labels;
  if (arrow == std::string::npos) {
    for (int64_t j = 0; j < ell_rank; ++j) out_labels.push_back(kEllipsisBase + static_cast<int>(j));
    for (const auto& [l, k] : once) if (k == 1) out_labels.push_back(l);
  } else {
    for (int l : parseTerm(ctx, eq.substr(arrow + 2), eq)) {
      if (l == -1) {
        for (int64_t j = 0; j < ell_rank; ++j) out_labels.push_back(kEllipsisBase + static_cast<int>(j));
      } else {
        if (!sizes.count(l)) ctx.error("equation '", eq, "': output label '", std::string(1, static_cast<char>(l)), "' is in no input");
        if (std::count(out_labels.begin(), out_labels.end(), l)) ctx.error("equation '", eq, "': output label '", std::string(1, static_cast<char>(l)), "' appears twice");
        out_labels.push_back(l);
      }
    }
  }
  return Plan{ops, terms, out_labels, sizes, dt};
}

// The reference loop over a plan.
void contractPlan(KernelContext& ctx, const Plan& p) {
  const auto& [ops, terms, out_labels, sizes, dt] = p;
  switch (dt) {
    case DType::Float32: return contract<double, float>(ctx, ops, terms, out_labels, sizes, dt);
    case DType::Float64: return contract<double, double>(ctx, ops, terms, out_labels, sizes, dt);
    case DType::Int32: return contract<int64_t, int32_t>(ctx, ops, terms, out_labels, sizes, dt);
    case DType::Int64: return contract<int64_t, int64_t>(ctx, ops, terms, out_labels, sizes, dt);
    case DType::Float16: {
      std::vector<Tensor> f;
      for (const Tensor* t : ops) f.push_back(t->cast(DType::Float32));
      std::vector<const Tensor*> fp;
      for (const Tensor& t : f) fp.push_back(&t);
      contract<double, float>(ctx, fp, terms, out_labels, sizes, DType::Float32);
      ctx.outputs[0] = ctx.outputs[0].cast(DType::Float16);
      return;
    }
    default: ctx.unsupported("inputs are ", dtypeName(dt), "; lwc's Einsum takes float16, float32, float64, int32 or int64");
  }
}

void einsum(KernelContext& ctx) { contractPlan(ctx, plan(ctx)); }

// Two float32 inputs whose labels are each either batch (both inputs and the output), rows (the
// first input and the output), columns (the second and the output) or summed (both inputs, not
// the output), without diagonals or size-1 broadcasting: a batched matrix product on oneDNN's sgemm
// in fixed blocks (the same bits on any thread count), inputs and output transposed around it
// where their label order needs it. Everything else runs the reference loop.
class FastEinsum final : public Kernel {
 public:
  void run(KernelContext& ctx) override {
    const Plan p = plan(ctx);
    fast_ = p.dt == DType::Float32 && p.ops.size() == 2 && batchedProduct(ctx, p);
    if (!fast_) contractPlan(ctx, p);
  }
  std::string primitive() const override { return fast_ ? "sgemm" : ""; }

 private:
  static bool batchedProduct(KernelContext& ctx, const Plan& p) {
    const auto& a = p.terms[0].labels;
    const auto& b = p.terms[1].labels;
    auto has = [](const std::vector<int>& v, int l) { return std::find(v.begin(), v.end(), l) != v.end(); };
    for (size_t o = 0; o < 2; ++o) {
      const auto& t = p.terms[o].labels;
      for (size_t d = 0; d < t.size(); ++d)
        if (std::count(t.begin(), t.end(), t[d]) > 1 || p.ops[o]->dim(d) != p.sizes.at(t[d])) return false;
    }
    std::vector<int> batch, rows, cols, sum;
    for (int l : p.out_labels) {
      const bool in_a = has(a, l), in_b = has(b, l);
      (in_a && in_b ? batch : in_a ? rows : cols).push_back(l);
    }
    for (int l : a) {
      if (has(p.out_labels, l)) continue;
      if (!has(b, l)) return false;  // summed within one input: the reference
      sum.push_back(l);
    }
    for (int l : b)
      if (!has(p.out_labels, l) && !has(a, l)) return false;
    auto extent = [&](const std::vector<int>& ls) {
      int64_t e = 1;
      for (int l : ls) e *= p.sizes.at(l);
      return e;
    };
    const int64_t nb = extent(batch), m = extent(rows), n = extent(cols), k = extent(sum);
    // Inputs as [batch, rows, sum] and [batch, sum, cols]; a copy only where the order differs.
    auto arranged = [&](const Tensor& t, const std::vector<int>& labels, std::vector<int> want, std::vector<float>& store) {
      std::vector<size_t> perm;
      for (int l : want) perm.push_back(static_cast<size_t>(std::find(labels.begin(), labels.end(), l) - labels.begin()));
      bool identity = true;
      for (size_t i = 0; i < perm.size(); ++i) identity = identity && perm[i] == i;
      if (identity) return t.data<float>();
      store = transposed(t.data<float>(), t.shape(), perm);
      return static_cast<const float*>(store.data());
    };
    std::vector<int> a_order(batch), b_order(batch), c_order(batch);
    a_order.insert(a_order.end(), rows.begin(), rows.end());
    a_order.insert(a_order.end(), sum.begin(), sum.end());
    b_order.insert(b_order.end(), sum.begin(), sum.end());
    b_order.insert(b_order.end(), cols.begin(), cols.end());
    c_order.insert(c_order.end(), rows.begin(), rows.end());
    c_order.insert(c_order.end(), cols.begin(), cols.end());
    std::vector<float> a_store, b_store;
    const float* ad = arranged(*p.ops[0], a, a_order, a_store);
    const float* bd = arranged(*p.ops[1], b, b_order, b_store);
    std::vector<float> c(static_cast<size_t>(nb * m * n), 0.0f);
    if (k > 0)
      for (int64_t i = 0; i < nb && m > 0 && n > 0; ++i)
        if (!dnnl_util::sgemmFixedBlocks('N', m, n, k, ad + i * m * k, k, bd + i * k * n, n, c.data() + i * m * n, n, 64, 128, 0))
          ctx.error("oneDNN sgemm failed");
    Shape out_shape, c_shape;
    for (int l : p.out_labels) out_shape.push_back(p.sizes.at(l));
    for (int l : c_order) c_shape.push_back(p.sizes.at(l));
    Tensor& y = ctx.allocUninit(0, DType::Float32, out_shape);
    std::vector<size_t> perm;
    for (int l : p.out_labels) perm.push_back(static_cast<size_t>(std::find(c_order.begin(), c_order.end(), l) - c_order.begin()));
    const std::vector<float> out = transposed(c.data(), c_shape, perm);
    std::copy(out.begin(), out.end(), y.data<float>());
    return true;
  }
  bool fast_ = false;
};

}  // namespace

void registerEinsumKernel(KernelRegistry& r) {
  r.add("", "Einsum", 12, 22, "dnnl", [](const KernelInfo&) -> std::unique_ptr<Kernel> { return std::make_unique<FastEinsum>(); });
  r.addFn("Einsum", 12, 22, einsum);
}

}  // namespace lwc::engine
