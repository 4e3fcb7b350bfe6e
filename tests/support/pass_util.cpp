#include "support/pass_util.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>
#include <sstream>

#include "lwc/engine.h"
#include "lwc/model_io.h"
#include "lwc/npy.h"
#include "passes/registry.h"
#include "support/engine_util.h"

namespace lwc::test {

Model parseGraph(const std::string& text) { return parseModelText(text, LoadOptions{false}); }

void addConst(Model& m, const std::string& name, Shape shape, uint32_t seed, float lo, float hi) {
  m.graph.initializers.set(name, randomFloat(std::move(shape), seed, lo, hi));
}

Model runTimeSizedMatMul() {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 8] x) => (float[M, 5] y) {
  s = Shape (x)
  i1 = Constant <value=int64 {1}> ()
  d = Gather <axis=0> (s, i1)
  three = Constant <value=int64 {3}> ()
  r = Mod (d, three)
  ax = Constant <value=int64[1] {0}> ()
  ru = Unsqueeze (r, ax)
  m1 = Constant <value=int64[1] {-1}> ()
  t = Concat <axis=0> (m1, ru)
  f = Reshape (x, t)
  y = MatMul (f, w)
})");
  addConst(m, "w", {2, 5}, 3);
  return m;
}

Model gemmModel(int64_t in, int64_t out, uint32_t seed) {
  Model m = parseGraph("<ir_version: 8, opset_import: [\"\" : 13]>\ng (float[N, " + std::to_string(in) +
                       "] x) => (float[N, " + std::to_string(out) + "] y) {\n  y = Gemm <transB=1> (x, w, b)\n}");
  addConst(m, "w", {out, in}, seed);
  addConst(m, "b", {out}, seed + 1);
  return m;
}

Model twoLinearLayers(int64_t seq, int64_t in, int64_t hidden, int64_t out, bool first_bias_2d) {
  const std::string s = std::to_string(seq);
  Model m = parseGraph("<ir_version: 8, opset_import: [\"\" : 13]>\ng (float[N, " + s + ", " + std::to_string(in) +
                       "] x) => (float[N, " + s + ", " + std::to_string(out) +
                       "] y) {\n  m = MatMul (x, w)\n  a = Add (m, c)\n  r = Relu (a)\n  m2 = MatMul (r, w2)\n"
                       "  y = Add (c2, m2)\n}");
  addConst(m, "w", {in, hidden}, 1, -0.5f, 0.5f);
  addConst(m, "c", first_bias_2d ? Shape{1, hidden} : Shape{hidden}, 2, -0.1f, 0.1f);
  addConst(m, "w2", {hidden, out}, 3, -0.5f, 0.5f);
  addConst(m, "c2", first_bias_2d ? Shape{out} : Shape{1, out}, 4, -0.1f, 0.1f);
  return m;
}

PassResult runPass(Model& m, const std::string& pass, const nlohmann::json& options) {
  PassContext ctx;
  return runPass(m, pass, options, ctx);
}

std::vector<std::string> unusedInitializers(const Graph& g) {
  std::set<std::string> read;
  for (const auto& n : g.nodes) {
    read.insert(n.inputs.begin(), n.inputs.end());
    for (const auto& in : implicitInputs(n)) read.insert(in);
  }
  for (const auto& o : g.outputs) read.insert(o.name);
  std::vector<std::string> unused;
  for (const auto& [name, t] : g.initializers.items())
    if (!read.count(name)) unused.push_back(name);
  std::sort(unused.begin(), unused.end());
  return unused;
}

PassResult runPass(Model& m, const std::string& pass, const nlohmann::json& options, PassContext& ctx) {
  auto p = passes::builtinPasses().create(pass);
  p->configure(options, pass);
  const auto unused_before = unusedInitializers(m.graph);
  PassResult r = p->run(m, ctx);
  topoSort(m.graph);
  validateGraph(m.graph);
  for (const auto& name : unusedInitializers(m.graph))
    if (!std::binary_search(unused_before.begin(), unused_before.end(), name))
      throw std::runtime_error(pass + " left initializer '" + name + "' unused (a pass must drop the constants it orphans)");
  return r;
}

int notesWith(const std::vector<std::string>& notes, const std::string& text) {
  return static_cast<int>(
      std::count_if(notes.begin(), notes.end(), [&](const std::string& n) { return n.find(text) != std::string::npos; }));
}

int countOps(const Model& m, const std::string& op) {
  int c = 0;
  for (const auto& n : m.graph.nodes) c += n.op_type == op;
  return c;
}

std::string serialized(const Model& m) { return modelToProto(m).SerializeAsString(); }

std::string compareModels(const Model& a, const Model& b, double rtol, int64_t batch) {
  engine::SessionOptions so;
  so.reference_only = true;
  engine::Session sa(a, so), sb(b, so);
  engine::TensorMap feeds;
  uint32_t seed = 11;
  for (const auto* in : a.graph.realInputs()) {
    Shape s;
    for (const auto& d : *in->shape) s.push_back(d.known() ? d.value : batch);
    feeds[in->name] = randomFloat(s, seed++);
  }
  auto ya = sa.run(feeds), yb = sb.run(feeds);
  if (ya.size() != yb.size()) return "different number of outputs";
  for (const auto& [name, t] : ya) {
    auto it = yb.find(name);
    if (it == yb.end()) return "output " + name + " missing in the second model";
    if (t.shape() != it->second.shape()) return "output " + name + ": shape " + shapeStr(t.shape()) + " vs " + shapeStr(it->second.shape());
    double scale = 0, err = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      scale = std::max(scale, std::fabs(t.at(i)));
      err = std::max(err, std::fabs(t.at(i) - it->second.at(i)));
    }
    if (err > rtol * scale + 1e-7) {
      std::ostringstream os;
      os << "output " << name << ": max abs diff " << err << " at scale " << scale;
      return os.str();
    }
  }
  return "";
}

DataSpec npyData(const std::filesystem::path& file, const Tensor& x, int64_t batch) {
  writeNpy(file, x);
  DataSpec d;
  d.options.path = file;
  d.batch = batch;
  return d;
}

double squaredError(const Model& m, const std::string& input, const Tensor& x, const Tensor& y0) {
  const Tensor y = engine::Session(m).runOrdered({{input, x}})[0];
  double e = 0;
  for (int64_t i = 0; i < y.numel(); ++i) e += std::pow(y.at(i) - y0.at(i), 2);
  return e;
}

}  // namespace lwc::test
