#include "passes/float16_weights.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <set>
#include <sstream>

#include "lwc/dtype.h"
#include "lwc/graph_edit.h"
#include "lwc/model_io.h"
#include "passes/weight_layers.h"

namespace lwc::passes {

using nlohmann::json;

std::vector<OptionSpec> Float16Weights::optionSpecs() const {
  OptionSpec mine{"min_elements", OptionType::Int, 16,
                  "Leave tensors with fewer elements as they are (scalars such as epsilons and clip bounds)"};
  mine.min = 1;
  return {mine,
          {"include", OptionType::StringList, json::array(), "Only these initializers (default: all that qualify)"},
          {"exclude", OptionType::StringList, json::array(), "Initializers to keep in float32"}};
}

namespace {

// Why a reader of a float32 constant needs it to stay a float32 initializer; empty when it need not.
std::string readerNeedsFloat32(const Node& n, size_t slot) {
  const std::string& op = n.op_type;
  if (!isDefaultDomain(n.domain))
    return "read by " + n.describe() + " of domain " + n.domain;
  if (op == "QuantizeLinear" || op == "DequantizeLinear" || op == "DynamicQuantizeLinear" || op.rfind("QLinear", 0) == 0 ||
      (op.size() > 7 && op.compare(op.size() - 7, 7, "Integer") == 0))
    return "read by " + n.describe() + ": quantization ops keep constant inputs (ONNX Runtime fuses Q/DQ only around constant scales)";
  if ((op == "Resize" || op == "Upsample") && slot >= 1) return "scales or roi of " + n.describe() + " (they fix shapes)";
  return {};
}

// float32 initializers of subgraphs (If / Loop / Scan bodies), which the pass leaves as they are.
int64_t subgraphFloatInitializers(const onnx::GraphProto& g, int depth) {
  int64_t k = 0;
  for (const auto& t : g.initializer()) k += t.data_type() == onnx::TensorProto::FLOAT;
  if (depth < 64)
    for (const auto& n : g.node())
      for (const auto& a : n.attribute()) {
        if (a.has_g()) k += subgraphFloatInitializers(a.g(), depth + 1);
        for (const auto& sg : a.graphs()) k += subgraphFloatInitializers(sg, depth + 1);
      }
  return k;
}

struct Rounded {
  Tensor half;
  int64_t flushed = 0;     ///< non-zero values that became 0
  int64_t subnormal = 0;   ///< values stored as float16 subnormals (coarser steps)
  double err2 = 0, sig2 = 0;
};

}  // namespace

PassResult Float16Weights::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  const PassOptions& o = options_;
  const auto include = o.getStrings("include"), exclude = o.getStrings("exclude");
  for (const auto* list : {&include, &exclude})
    for (const auto& e : *list) {
      const std::string key = o.key(list == &include ? "include" : "exclude");
      const Tensor* t = g.initializers.find(e);
      if (!t) fail(key, ": no initializer named '", e, "' in ", m.label());
      if (t->dtype() != DType::Float32)
        fail(key, ": initializer '", e, "' is ", dtypeName(t->dtype()), ", not float32; this pass stores only float32 tensors as float16");
    }
  refuseInBoth(include, exclude, o);
  auto listed = [](const std::vector<std::string>& l, const std::string& n) { return std::find(l.begin(), l.end(), n) != l.end(); };
  const int64_t min_elements = o.getInt("min_elements");

  // Readers of each value at each input slot (top-level nodes), and the values subgraphs read.
  std::map<std::string, std::vector<std::pair<size_t, size_t>>> readers;
  std::set<std::string> subgraph_reads;
  for (size_t ni = 0; ni < g.nodes.size(); ++ni) {
    for (size_t s = 0; s < g.nodes[ni].inputs.size(); ++s)
      if (!g.nodes[ni].inputs[s].empty()) readers[g.nodes[ni].inputs[s]].emplace_back(ni, s);
    for (auto& v : implicitInputs(g.nodes[ni])) subgraph_reads.insert(std::move(v));
  }

  PassResult r;
  // The Cast needs the default domain; a model of other domains only (ai.onnx.ml) imports none.
  if (m.opsetFor("") <= 0) {
    r.notes.push_back("nothing stored as float16: " + m.label() + " imports no ai.onnx opset, which the Cast to float32 needs");
    return r;
  }
  int64_t in_subgraphs = 0;
  for (const auto& n : g.nodes)
    for (const auto& a : n.attrs) {
      if (a.has_g()) in_subgraphs += subgraphFloatInitializers(a.g(), 1);
      for (const auto& sg : a.graphs()) in_subgraphs += subgraphFloatInitializers(sg, 1);
    }
  if (in_subgraphs > 0)
    r.notes.push_back(std::to_string(in_subgraphs) + " float32 initializers inside If / Loop / Scan bodies left as they are");
  int64_t converted = 0, bytes_before = 0, bytes_after = 0, flushed = 0, subnormal = 0, kept = 0, not_smaller = 0;
  double worst_sqnr = std::numeric_limits<double>::infinity();
  std::string worst_name;
  std::vector<Node> casts;
  std::vector<std::string> names;
  for (const auto& [name, t] : g.initializers.items())
    if (t.dtype() == DType::Float32) names.push_back(name);
  auto used = g.usedNames();
  for (const auto& name : names) {
    const Tensor t = g.initializers.at(name);
    // A graph input that an initializer only defaults (models built in memory: reading a file makes
    // such initializers weights) is the caller's to feed, in float32.
    if (t.numel() < min_elements || g.isGraphInput(name)) continue;
    if (!include.empty() && !listed(include, name)) continue;
    if (listed(exclude, name)) {
      r.notes.push_back(name + ": kept in float32 (" + o.key("exclude") + ")");
      ++kept;
      continue;
    }
    // Inside an If / Loop body the reader is not visible here (it may be a DequantizeLinear).
    std::string why = subgraph_reads.count(name) ? "read inside a subgraph (If / Loop / Scan body)" : "";
    if (auto it = readers.find(name); it != readers.end())
      for (const auto& [ni, s] : it->second)
        if (why.empty()) why = readerNeedsFloat32(g.nodes[ni], s);
    const float* p = t.data<float>();
    if (why.empty())
      for (int64_t i = 0; i < t.numel(); ++i)
        if (std::isfinite(p[i]) && std::fabs(p[i]) > 65504.0f) {
          std::ostringstream s;
          s << "value " << p[i] << " at element " << i << " is beyond float16's range (65504)";
          why = s.str();
          break;
        }
    if (!why.empty()) {
      r.notes.push_back(name + ": kept in float32 (" + why + ")");
      ++kept;
      continue;
    }
    Rounded q{Tensor(DType::Float16, t.shape())};
    auto* h = static_cast<uint16_t*>(q.half.raw());
    for (int64_t i = 0; i < t.numel(); ++i) {
      const uint16_t b = floatToHalf(p[i]);
      h[i] = b;
      const float back = halfToFloat(b);
      if (p[i] != 0.0f && back == 0.0f) ++q.flushed;
      if ((b & 0x7c00u) == 0 && (b & 0x03ffu) != 0) ++q.subnormal;
      if (std::isfinite(p[i])) {
        const double e = double(back) - double(p[i]);
        q.err2 += e * e;
        q.sig2 += double(p[i]) * double(p[i]);
      }
    }
    const double sqnr = q.err2 > 0 ? 10.0 * std::log10(q.sig2 / q.err2) : std::numeric_limits<double>::infinity();
    const std::string hname = claimName(used, name + "__float16");
    Node c;
    c.name = claimName(used, name + "__to_float32");
    c.op_type = "Cast";
    c.inputs = {hname};
    c.outputs = {name};
    // Cast-1 (opsets 1-5) names the type as a string.
    if (m.opsetFor("") < 6) c.setAttr("to", std::string("FLOAT"));
    else c.setAttr("to", int64_t{static_cast<int>(onnx::TensorProto::FLOAT)});
    // The file must shrink, not only the tensor: the Cast node and the new name count against the
    // saving (a 16-value bias saves 32 bytes and its Cast costs about as much).
    int64_t file_before = framedFieldBytes(static_cast<size_t>(tensorProtoBytes(t, name)));
    int64_t file_after = framedFieldBytes(static_cast<size_t>(tensorProtoBytes(q.half, hname))) +
                         framedFieldBytes(nodeToProto(c, m.opsetFor("")).ByteSizeLong());
    if (m.ir_version > 0 && m.ir_version < 4) {  // every initializer is listed as a graph input too
      file_before += framedFieldBytes(valueInfoToProto(valueInfoOf(name, t)).ByteSizeLong());
      file_after += framedFieldBytes(valueInfoToProto(valueInfoOf(hname, q.half)).ByteSizeLong());
    }
    if (file_after >= file_before) {
      used.erase(hname);
      used.erase(c.name);
      ++not_smaller;
      continue;
    }
    if (sqnr < worst_sqnr) worst_sqnr = sqnr, worst_name = name;
    flushed += q.flushed;
    subnormal += q.subnormal;
    if (q.flushed > 0)
      r.notes.push_back(name + ": " + std::to_string(q.flushed) + " of " + std::to_string(t.numel()) +
                        " non-zero values are at most 3e-8 (half float16's smallest step) and became 0");
    bytes_before += static_cast<int64_t>(t.nbytes());
    bytes_after += static_cast<int64_t>(q.half.nbytes());
    g.initializers.erase(name);
    g.initializers.set(hname, std::move(q.half));
    casts.push_back(std::move(c));
    ++converted;
  }
  // Casts first: they read only initializers, and every reader of a weight comes after them.
  g.nodes.insert(g.nodes.begin(), casts.begin(), casts.end());
  if (converted > 0) {
    std::ostringstream s;
    s << converted << " float32 tensors stored as float16: " << bytes_before << " -> " << bytes_after << " B";
    if (std::isfinite(worst_sqnr))
      s << "; lowest weight SQNR " << std::fixed << std::setprecision(1) << worst_sqnr << " dB (" << worst_name << ")";
    r.notes.insert(r.notes.begin(), s.str());
  }
  if (not_smaller > 0)
    r.notes.push_back(not_smaller == 1 ? std::string("1 tensor left in float32: with its Cast node and name, it would not make the file smaller")
                                       : std::to_string(not_smaller) +
                                             " tensors left in float32: with its Cast node and name, each would not make the file smaller");
  r.stats = {{"tensors_converted", converted}, {"tensors_kept_float32", kept}, {"float32_bytes", bytes_before},
             {"float16_bytes", bytes_after},   {"values_flushed_to_zero", flushed}, {"values_subnormal", subnormal},
             {"tensors_not_smaller", not_smaller}};
  r.changed = converted > 0;
  return r;
}

}  // namespace lwc::passes
