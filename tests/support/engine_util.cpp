#include "support/engine_util.h"

#include <catch2/catch.hpp>

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

#include "lwc/model_io.h"

namespace lwc::test {

NodeSpec makeSpec(const std::string& op, std::vector<Tensor> inputs, std::vector<onnx::AttributeProto> attrs,
                  int64_t opset) {
  NodeSpec s;
  s.op_type = op;
  s.opset = opset;
  s.inputs = std::move(inputs);
  s.attrs = std::move(attrs);
  return s;
}

Model singleNodeModel(const NodeSpec& spec) {
  Model m;
  m.ir_version = 8;
  m.opset_imports.push_back({"", spec.domain.empty() ? spec.opset : 17});
  if (!spec.domain.empty()) m.opset_imports.push_back({spec.domain, spec.opset});
  Node n;
  n.name = "n0";
  n.op_type = spec.op_type;
  n.domain = spec.domain;
  n.attrs = spec.attrs;
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    const Tensor& t = spec.inputs[i];
    if (t.empty()) {
      n.inputs.push_back("");
      continue;
    }
    const std::string name = "in" + std::to_string(i);
    n.inputs.push_back(name);
    const bool is_const = std::find(spec.constant_inputs.begin(), spec.constant_inputs.end(), i) != spec.constant_inputs.end();
    if (is_const) {
      m.graph.initializers.set(name, t);
    } else {
      m.graph.inputs.push_back(valueInfoOf(name, t));
    }
  }
  for (size_t o = 0; o < spec.num_outputs; ++o) {
    n.outputs.push_back("out" + std::to_string(o));
    ValueInfo v;
    v.name = n.outputs.back();
    m.graph.outputs.push_back(v);
  }
  m.graph.nodes.push_back(std::move(n));
  return m;
}

std::vector<Tensor> runNode(const NodeSpec& spec, bool reference_only) {
  Model m = singleNodeModel(spec);
  engine::SessionOptions o;
  o.reference_only = reference_only;
  engine::Session s(m, o);
  return s.runOrdered(feedsOf(spec));
}

std::string nodeError(const NodeSpec& spec) {
  try {
    runNode(spec, true);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

engine::TensorMap feedsOf(const NodeSpec& spec) {
  engine::TensorMap feeds;
  for (size_t i = 0; i < spec.inputs.size(); ++i) {
    if (spec.inputs[i].empty()) continue;
    if (std::find(spec.constant_inputs.begin(), spec.constant_inputs.end(), i) != spec.constant_inputs.end()) continue;
    feeds["in" + std::to_string(i)] = spec.inputs[i];
  }
  return feeds;
}

onnx::AttributeProto attrInt(const std::string& name, int64_t v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(v);
  return a;
}
onnx::AttributeProto attrFloat(const std::string& name, float v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::FLOAT);
  a.set_f(v);
  return a;
}
onnx::AttributeProto attrString(const std::string& name, const std::string& v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::STRING);
  a.set_s(v);
  return a;
}
onnx::AttributeProto attrInts(const std::string& name, const std::vector<int64_t>& v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INTS);
  for (auto x : v) a.add_ints(x);
  return a;
}
onnx::AttributeProto attrFloats(const std::string& name, const std::vector<float>& v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::FLOATS);
  for (auto x : v) a.add_floats(x);
  return a;
}
onnx::AttributeProto attrTensor(const std::string& name, const Tensor& t) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::TENSOR);
  *a.mutable_t() = tensorToProto(t, "");
  return a;
}

Tensor randomFloat(Shape shape, uint32_t seed, float lo, float hi) {
  Tensor t(DType::Float32, std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = d(rng);
  return t;
}

Tensor randomInt(DType dtype, Shape shape, uint32_t seed, int64_t lo, int64_t hi) {
  Tensor t(DType::Int64, std::move(shape));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int64_t> d(lo, hi);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int64_t>()[i] = d(rng);
  return t.cast(dtype);
}

std::string implOf(const engine::Session& s, const std::string& op) {
  for (const auto& [desc, impl] : s.kernelChoices())
    if (desc.find(op) != std::string::npos) return impl;
  return "none";
}

engine::NodeProfile profileOf(const engine::Session& session, const std::string& op) {
  const auto prof = session.profile();
  const auto it = std::find_if(prof.begin(), prof.end(),
                               [&](const engine::NodeProfile& p) { return p.op_type.find(op) != std::string::npos; });
  REQUIRE(it != prof.end());
  return *it;
}

ProfiledRun runProfiled(const NodeSpec& spec, const std::string& op) {
  engine::SessionOptions so;
  so.profile = true;
  engine::Session session(singleNodeModel(spec), so);
  ProfiledRun r;
  r.y = session.runOrdered(feedsOf(spec))[0];
  r.prof = profileOf(session, op);
  return r;
}

ProfiledRun runProfiledOnThreads(const NodeSpec& spec, const std::string& op, int threads) {
  engine::configureThreads(threads);
  ProfiledRun r = runProfiled(spec, op);
  CHECK(omp_get_max_threads() == threads);  // the one-thread guards restored the count
  return r;
}

std::string compareTensors(const Tensor& a, const Tensor& e, double rtol, double atol) {
  std::ostringstream os;
  if (a.dtype() != e.dtype()) {
    os << "dtype " << dtypeName(a.dtype()) << " != expected " << dtypeName(e.dtype());
    return os.str();
  }
  if (a.shape() != e.shape()) {
    os << "shape " << shapeStr(a.shape()) << " != expected " << shapeStr(e.shape());
    return os.str();
  }
  double worst = 0;
  int64_t wi = -1;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = a.at(i), y = e.at(i);
    if (std::isnan(y) && std::isnan(x)) continue;
    if (x == y) continue;  // also covers exact comparisons (rtol = atol = 0) and equal infinities
    const double err = std::fabs(x - y) / (atol + rtol * std::fabs(y));
    if (!(err <= 1.0) && (wi < 0 || err > worst || std::isnan(err))) {
      worst = err;
      wi = i;
    }
  }
  if (wi < 0) return {};
  os << "element " << wi << ": got " << a.at(wi) << ", expected " << e.at(wi);
  return os.str();
}

std::vector<int64_t> imagesDifferingFromBatch(engine::Session& s, const Tensor& x) {
  const std::string in = s.inputNames().at(0);
  const Tensor y = s.runOrdered({{in, x}}).at(0);
  const int64_t n = x.dim(0);
  const size_t x_img = x.nbytes() / static_cast<size_t>(n), y_img = y.nbytes() / static_cast<size_t>(n);
  Shape one = x.shape();
  one[0] = 1;
  std::vector<int64_t> differ;
  for (int64_t i = 0; i < n; ++i) {
    Tensor xi(x.dtype(), one);
    std::memcpy(xi.raw(), static_cast<const std::byte*>(x.raw()) + static_cast<size_t>(i) * x_img, x_img);
    const Tensor yi = s.runOrdered({{in, xi}}).at(0);
    if (yi.nbytes() != y_img ||
        std::memcmp(yi.raw(), static_cast<const std::byte*>(y.raw()) + static_cast<size_t>(i) * y_img, y_img) != 0)
      differ.push_back(i);
  }
  return differ;
}

std::vector<size_t> runsDifferingFromFresh(const Model& m, const std::vector<Tensor>& xs) {
  engine::Session kept(m);
  const std::string in = kept.inputNames().at(0);
  std::vector<size_t> differ;
  for (size_t i = 0; i < xs.size(); ++i) {
    const auto got = kept.runOrdered({{in, xs[i]}});
    const auto want = engine::Session(m).runOrdered({{in, xs[i]}});
    bool same = got.size() == want.size();
    for (size_t o = 0; same && o < got.size(); ++o) same = got[o].bitEqual(want[o]);
    if (!same) differ.push_back(i);
  }
  return differ;
}

}  // namespace lwc::test
