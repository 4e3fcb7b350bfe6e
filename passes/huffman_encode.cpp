#include "passes/huffman_encode.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <set>
#include <sstream>

#include "lwc/graph_edit.h"
#include "lwc/model_io.h"
#include "lwc/weight_coding.h"
#include "passes/weight_layers.h"

namespace lwc::passes {

using nlohmann::json;

std::vector<OptionSpec> HuffmanEncode::optionSpecs() const {
  OptionSpec mine{"min_elements", OptionType::Int, 1024, "Leave tensors with fewer elements as they are"};
  mine.min = 1;
  OptionSpec maxs{"max_symbols", OptionType::Int, 65536, "Leave tensors with more distinct values as they are"};
  maxs.min = 1;
  maxs.max = 65536;
  return {mine, maxs,
          {"include", OptionType::StringList, json::array(), "Only these initializers (default: all that qualify)"},
          {"exclude", OptionType::StringList, json::array(), "Initializers to leave as they are"}};
}

namespace {
int bitsFor(int64_t k) {
  int b = 0;
  while ((int64_t{1} << b) < k) ++b;
  return std::max(b, 1);
}

// A message as an entry of its parent's repeated field (nodes, initializers, inputs).
int64_t framed(const google::protobuf::MessageLite& msg) { return framedFieldBytes(msg.ByteSizeLong()); }

// framed(tensorToProto(t, name)) without copying the data to measure it.
int64_t framedTensor(const Tensor& t, const std::string& name) {
  return framedFieldBytes(static_cast<size_t>(tensorProtoBytes(t, name)));
}
}  // namespace

PassResult HuffmanEncode::run(Model& m, PassContext&) {
  Graph& g = m.graph;
  const PassOptions& o = options_;
  const auto include = o.getStrings("include"), exclude = o.getStrings("exclude");
  for (const auto* list : {&include, &exclude})
    for (const auto& e : *list)
      if (!g.initializers.contains(e))
        fail(o.key(list == &include ? "include" : "exclude"), ": no initializer named '", e, "' in ", m.label());
  refuseInBoth(include, exclude, o);
  auto listed = [](const std::vector<std::string>& l, const std::string& n) { return std::find(l.begin(), l.end(), n) != l.end(); };
  PassResult r;
  int64_t coded = 0, raw = 0, sparse_b = 0, shared_b = 0, huff_b = 0, book_b = 0;
  std::vector<Node> decoders;
  std::vector<std::string> names;
  for (const auto& [name, t] : g.initializers.items()) names.push_back(name);
  // A coded tensor's stream and codebook (a file encoded before) stay as they are.
  std::set<std::string> coded_parts;
  for (const auto& n : g.nodes)
    if (n.domain == weight_coding::kDomain && n.op_type == weight_coding::kDecodeOp)
      for (const auto& in : n.inputs) coded_parts.insert(in);
  for (const auto& name : names) {
    const Tensor t = g.initializers.at(name);
    if (coded_parts.count(name)) {
      if (t.numel() >= o.getInt("min_elements")) r.notes.push_back(name + ": left as is (already Huffman-coded)");
      continue;
    }
    if (g.isGraphInput(name) || t.numel() < o.getInt("min_elements")) continue;
    if ((!include.empty() && !listed(include, name)) || listed(exclude, name)) continue;
    std::string why;
    auto e = weight_coding::encodeTensor(t, o.getInt("max_symbols"), &why);
    if (!e) {
      r.notes.push_back(name + ": left as is (" + why + ")");
      continue;
    }
    const int64_t es = static_cast<int64_t>(dtypeSize(t.dtype()));
    const int64_t bytes = t.numel() * es, coded_bytes = e->stream.numel() + e->codebook.numel() * es;
    if (coded_bytes >= bytes) {
      r.notes.push_back(name + ": left as is (coded " + std::to_string(coded_bytes) + " B >= raw " + std::to_string(bytes) + " B)");
      continue;
    }
    // The file must shrink, not just the weights: the decode node, the two initializers' names,
    // shapes and framing (and the ai.lwc opset import, once) count against the saving. An INT8
    // transformer's 12,288-byte weight coded into 12,283 bytes grew the file by 150 bytes.
    const std::string sname = g.uniqueName(name + "__stream");
    const std::string cname = g.uniqueName(name + "__codebook");
    Node d;
    d.name = g.uniqueName(name + "__decode");
    d.op_type = weight_coding::kDecodeOp;
    d.domain = weight_coding::kDomain;
    d.inputs = {sname, cname};
    d.outputs = {name};
    d.setAttr("shape", std::vector<int64_t>(t.shape().begin(), t.shape().end()));
    onnx::OperatorSetIdProto opset;
    opset.set_domain(weight_coding::kDomain);
    opset.set_version(1);
    int64_t file_before = framedTensor(t, name);
    int64_t file_after = framedTensor(e->stream, sname) + framedTensor(e->codebook, cname) +
                         framed(nodeToProto(d, m.opsetFor(""))) +
                         (decoders.empty() && m.opsetFor(weight_coding::kDomain) <= 0 ? framed(opset) : 0);
    if (m.ir_version > 0 && m.ir_version < 4) {  // every initializer is listed as a graph input too
      file_before += framed(valueInfoToProto(valueInfoOf(name, t)));
      file_after += framed(valueInfoToProto(valueInfoOf(sname, e->stream))) +
                    framed(valueInfoToProto(valueInfoOf(cname, e->codebook)));
    }
    if (file_after >= file_before) {
      r.notes.push_back(name + ": left as is (coded " + std::to_string(coded_bytes) + " B < raw " + std::to_string(bytes) +
                        " B, but with its decode node and names the file would grow by " +
                        std::to_string(file_after - file_before) + " B)");
      continue;
    }
    // Deep Compression's stages, for the report. Sparse: every non-zero (and a filler entry per 256
    // zeros of a gap) stored as value + 8-bit relative index; shared: the same entries with
    // ceil(log2 K)-bit cluster indices instead of values, plus the codebook; dense tensors: no index.
    const auto* p = static_cast<const uint8_t*>(t.raw());
    int64_t entries = 0, gap = 0, zeros = 0, fillers = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      bool zero = true;
      for (int64_t b = 0; b < es; ++b) zero = zero && p[i * es + b] == 0;
      if (zero) {
        ++zeros;
        if (++gap == 256) {
          ++entries;
          ++fillers;
          gap = 0;
        }
      } else {
        ++entries;
        gap = 0;
      }
    }
    // A filler entry stores the value 0, so its cluster index needs a code too.
    const int64_t nz_symbols = e->symbols - (zeros > 0 && fillers == 0 ? 1 : 0);
    const bool use_index = zeros > 0 && entries * (es + 1) < bytes;
    const int64_t sparse_bytes = use_index ? entries * (es + 1) : bytes;
    const int64_t kbits = bitsFor(std::max<int64_t>(nz_symbols, 1));
    const int64_t shared_bytes = (use_index ? (entries * (kbits + 8) + 7) / 8 : (t.numel() * bitsFor(e->symbols) + 7) / 8) +
                                 e->codebook.numel() * es;
    raw += bytes;
    sparse_b += sparse_bytes;
    shared_b += shared_bytes;
    huff_b += coded_bytes;
    book_b += e->codebook.numel() * es;
    ++coded;
    std::ostringstream note;
    // Deep Compression's stages as that paper counts them; "shared" is the cluster indices and the
    // codebook even where it is not smaller than the sparse index (values not shared: no gain).
    const double per_weight = 8.0 / double(std::max<int64_t>(t.numel(), 1));
    note << name << ": " << bytes << " B -> sparse index " << sparse_bytes << " B -> shared (" << e->symbols
         << " values) " << shared_bytes << " B" << (shared_bytes >= sparse_bytes ? " (not smaller)" : "") << " -> huffman "
         << coded_bytes << " B (codebook " << e->codebook.numel() * es << " B, " << (e->sparse ? "sparse" : "dense") << ", "
         << std::setprecision(3) << double(e->stats.payload_bytes) * per_weight << " bits/weight in codes, "
         << double(coded_bytes) * per_weight << " with stream header and codebook)";
    r.notes.push_back(note.str());
    g.initializers.set(sname, std::move(e->stream));
    g.initializers.set(cname, std::move(e->codebook));
    g.initializers.erase(name);
    decoders.push_back(std::move(d));
  }
  // Decoders first: they read only initializers, and every reader of a coded tensor comes after them.
  g.nodes.insert(g.nodes.begin(), decoders.begin(), decoders.end());
  if (coded > 0 && m.opsetFor(weight_coding::kDomain) <= 0) m.opset_imports.push_back({weight_coding::kDomain, 1});
  r.stats = {{"tensors_coded", coded},     {"raw_bytes", raw},       {"sparse_index_bytes", sparse_b},
             {"shared_bytes", shared_b},   {"huffman_bytes", huff_b}, {"codebook_bytes", book_b}};
  r.changed = coded > 0;
  return r;
}

}  // namespace lwc::passes
