#include "passes/fuse_reshape.h"

#include <optional>

#include "lwc/graph_edit.h"
#include "lwc/shape_inference.h"

namespace lwc::passes {

namespace {

/// One element of a Reshape target: a number, or dimension `dim` of `src`, the shape of the tensor a Shape
/// node read (the Reshape's data input, or another tensor whose shape is known).
struct Elem {
  int64_t value = 0;
  int dim = -1;
  const SymShape* src = nullptr;
};

/// A constant integer scalar or vector (lwc::intConstant of rank <= 1).
const Tensor* intVector(const Graph& g, const std::string& name) {
  const Tensor* t = intConstant(g, name);
  return t && t->rank() <= 1 ? t : nullptr;
}

class TargetReader {
 public:
  TargetReader(const Model& m, const GraphIndex& gi, const ValueTypes& types)
      : m_(m), g_(m.graph), gi_(gi), types_(types) {}

  /// Appends the elements tensor `t` holds; false when they are not all known.
  bool read(const std::string& t, std::vector<Elem>& out) {
    if (const Tensor* c = intVector(g_, t)) {
      for (int64_t i = 0; i < c->numel(); ++i) out.push_back({static_cast<int64_t>(c->at(i)), -1});
      return true;
    }
    const int p = gi_.producer(t);
    if (p < 0) return false;
    const Node& n = g_.nodes[static_cast<size_t>(p)];
    if (!n.domain.empty() || n.outputs.size() != 1) return false;
    visited.push_back(static_cast<size_t>(p));
    if (n.op_type == "Concat") {
      if (n.attrInt("axis", 0) != 0 && n.attrInt("axis", 0) != -1) return false;
      for (const auto& in : n.inputs)
        if (in.empty() || !read(in, out)) return false;
      return true;
    }
    if (n.op_type == "Unsqueeze") {  // a scalar made 1-D
      std::vector<int64_t> axes;
      if (m_.opsetFor("") >= 13) {
        const Tensor* a = n.hasInput(1) ? intVector(g_, n.inputs[1]) : nullptr;
        if (!a) return false;
        for (int64_t i = 0; i < a->numel(); ++i) axes.push_back(static_cast<int64_t>(a->at(i)));
      } else {
        axes = n.attrInts("axes");
      }
      const size_t before = out.size();
      if (axes.size() != 1 || (axes[0] != 0 && axes[0] != -1) || !read(n.inputs[0], out)) return false;
      return out.size() == before + 1;
    }
    if (n.op_type == "Gather") {
      const int sp = gi_.producer(n.inputs[0]);
      if (sp < 0 || n.attrInt("axis", 0) != 0 || !n.hasInput(1)) return false;
      const Node& shape = g_.nodes[static_cast<size_t>(sp)];
      const Tensor* idx = intVector(g_, n.inputs[1]);
      const SymShape* src = shapeRead(shape);
      if (!idx || !src) return false;
      visited.push_back(static_cast<size_t>(sp));
      const auto rank = static_cast<int64_t>(src->size());
      for (int64_t i = 0; i < idx->numel(); ++i) {
        int64_t d = static_cast<int64_t>(idx->at(i));
        if (d < 0) d += rank;
        if (d < 0 || d >= rank) return false;
        out.push_back({0, static_cast<int>(d), src});
      }
      return true;
    }
    if (n.op_type == "Mul" || n.op_type == "Add" || n.op_type == "Sub") {
      // Arithmetic on single known elements (x.shape[1] * x.shape[2] * x.shape[3]).
      std::vector<Elem> a, b;
      if (n.numInputs() != 2 || !read(n.inputs[0], a) || !read(n.inputs[1], b) || a.size() != 1 || b.size() != 1)
        return false;
      const auto va = known(a[0]), vb = known(b[0]);
      if (!va || !vb) return false;
      const int64_t v = n.op_type == "Mul" ? *va * *vb : n.op_type == "Add" ? *va + *vb : *va - *vb;
      out.push_back({v, -1});
      return true;
    }
    if (const SymShape* src = n.op_type == "Shape" ? shapeRead(n) : nullptr) {
      for (int d = 0; d < static_cast<int>(src->size()); ++d) out.push_back({0, d, src});
      return true;
    }
    return false;
  }

  std::vector<size_t> visited;  ///< nodes of the target's subgraph

 private:
  static std::optional<int64_t> known(const Elem& e) {
    if (e.dim < 0) return e.value;
    const Dim& d = (*e.src)[static_cast<size_t>(e.dim)];
    return d.known() ? std::optional<int64_t>(d.value) : std::nullopt;
  }
  /// The shape a whole-tensor Shape node reads, when its rank is known.
  const SymShape* shapeRead(const Node& n) const {
    if (n.op_type != "Shape" || !n.domain.empty() || n.inputs.size() != 1 || n.hasAttr("start") || n.hasAttr("end"))
      return nullptr;
    const auto it = types_.find(n.inputs[0]);
    return it != types_.end() && it->second.shape ? &*it->second.shape : nullptr;
  }
  const Model& m_;
  const Graph& g_;
  const GraphIndex& gi_;
  const ValueTypes& types_;
};

}  // namespace

PassResult FuseReshape::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  const ValueTypes types = inferShapes(m);
  PassResult r;
  int64_t fused = 0, flattened = 0;
  std::vector<size_t> maybe_dead;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if (n.op_type != "Reshape" || !n.domain.empty() || n.numInputs() != 2) continue;
    const std::string x = n.inputs[0];
    const auto it = types.find(x);
    if (it == types.end() || !it->second.shape) continue;
    const SymShape& xs = *it->second.shape;
    const int rank = static_cast<int>(xs.size());
    const bool allowzero = n.attrInt("allowzero", 0) != 0;
    const GraphIndex gi(g);
    TargetReader reader(m, gi, types);
    std::vector<Elem> elems;
    if (!reader.read(n.inputs[1], elems)) continue;
    const bool computed = !intVector(g, n.inputs[1]);
    // The constant target: known dimensions are their value; an unknown one is 0 ("copy") at position k when
    // it is the input's dimension k, or has the same symbol as the input's dimension k.
    std::vector<int64_t> target;
    bool ok = true;
    for (size_t k = 0; k < elems.size() && ok; ++k) {
      const Elem& e = elems[k];
      if (e.dim < 0) {
        target.push_back(e.value);
        continue;
      }
      const Dim& d = (*e.src)[static_cast<size_t>(e.dim)];
      const bool same = k < xs.size() && ((e.src == &xs && static_cast<size_t>(e.dim) == k) ||
                                          (!d.param.empty() && d.param == xs[k].param));
      if (same && !allowzero) {
        target.push_back(0);
      } else if (d.known()) {
        target.push_back(d.value);
      } else {
        ok = false;
      }
    }
    if (!ok) continue;
    // Flatten(axis=1): dimension 0 kept, the rest in one.
    int64_t rest = 1;
    for (int d = 1; d < rank; ++d) rest = xs[size_t(d)].known() && rest > 0 ? rest * xs[size_t(d)].value : -1;
    const bool batch_first = (target.size() == 2) && ((target[0] == 0 && !allowzero) ||
                                                      (xs[0].known() && target[0] == xs[0].value) ||
                                                      (target[0] == -1 && rest > 0 && target[1] == rest));
    const bool flatten = rank >= 2 && batch_first && ((target[1] == -1 && target[0] != -1) || (rest > 0 && target[1] == rest));
    if (!flatten && !computed) continue;
    const std::string old_target = n.inputs[1];
    Node& w = g.nodes[i];
    if (flatten) {
      w.op_type = "Flatten";
      w.inputs = {x};
      w.attrs.clear();
      w.setAttr("axis", int64_t{1});
      ++flattened;
      r.notes.push_back(w.describe() + ": a Reshape to [" + std::to_string(target[0]) + ", " + std::to_string(target[1]) +
                        "] of its input, now Flatten");
    } else {
      const std::string name = g.uniqueName((w.name.empty() ? std::string("reshape") : w.name) + "_shape");
      g.initializers.set(name, Tensor::fromVector<int64_t>({static_cast<int64_t>(target.size())}, target));
      w.inputs[1] = name;
      ++fused;
    }
    dropUnusedConstants(g, {old_target});
    maybe_dead.insert(maybe_dead.end(), reader.visited.begin(), reader.visited.end());
  }
  // The target subgraphs' nodes that nothing reads any more.
  std::sort(maybe_dead.begin(), maybe_dead.end());
  maybe_dead.erase(std::unique(maybe_dead.begin(), maybe_dead.end()), maybe_dead.end());
  int64_t removed = 0;
  for (bool again = true; again;) {
    again = false;
    for (auto k = maybe_dead.rbegin(); k != maybe_dead.rend(); ++k) {
      const Node& d = g.nodes[*k];
      if (d.op_type.empty()) continue;  // already removed
      bool used = false;
      for (const auto& o : d.outputs) used = used || (!o.empty() && useCount(g, o) > 0);
      if (used) continue;
      const std::vector<std::string> consts(d.inputs.begin(), d.inputs.end());
      g.nodes[*k].op_type.clear();
      g.nodes[*k].inputs.clear();
      g.nodes[*k].outputs.clear();
      dropUnusedConstants(g, consts);
      ++removed;
      again = true;
    }
  }
  std::erase_if(g.nodes, [](const Node& d) { return d.op_type.empty(); });
  r.stats = {{"flattened", flattened}, {"fused", fused}, {"removed_shape_nodes", removed}};
  r.changed = flattened + fused > 0;
  return r;
}

}  // namespace lwc::passes
