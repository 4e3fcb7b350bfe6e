#include "lwc/weight_coding.h"

#include <onnx/defs/schema.h>
#include <onnx/defs/shape_inference.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "lwc/graph.h"
#include "lwc/graph_edit.h"
#include "lwc/status.h"

namespace lwc::weight_coding {

void registerOnnxSchemas() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto& domains = onnx::OpSchemaRegistry::DomainToVersionRange::Instance();
    if (domains.Map().count(kDomain) == 0) domains.AddDomainToVersion(kDomain, 1, 1);
    onnx::OpSchema s;
    s.SetName(kDecodeOp)
        .SetDomain(kDomain)
        .SinceVersion(1)
        .SetDoc("Decodes a canonical Huffman bitstream (lwc/huffman.h) into a tensor of codebook values.")
        .Input(0, "stream", "Huffman bitstream", "T1")
        .Input(1, "codebook", "Distinct values; symbol i decodes to codebook[i]", "T2")
        .Output(0, "output", "Decoded tensor of shape `shape`", "T2")
        .TypeConstraint("T1", {"tensor(uint8)"}, "Bytes")
        .TypeConstraint("T2",
                        {"tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)", "tensor(int8)",
                         "tensor(uint8)", "tensor(int16)", "tensor(uint16)", "tensor(int32)", "tensor(uint32)",
                         "tensor(int64)", "tensor(uint64)", "tensor(bool)"},
                        "Weight types")
        .Attr("shape", "Shape of the decoded tensor", onnx::AttributeProto::INTS)
        .TypeAndShapeInferenceFunction([](onnx::InferenceContext& ctx) {
          onnx::propagateElemTypeFromInputToOutput(ctx, 1, 0);
          const auto* a = ctx.getAttribute("shape");
          if (!a) return;
          auto* shape = onnx::getOutputShape(ctx, 0);
          for (int64_t d : a->ints()) shape->add_dim()->set_dim_value(d);
        });
    onnx::RegisterSchema(std::move(s));
  });
}

namespace {
uint64_t bitsAt(const uint8_t* p, size_t es) {
  uint64_t v = 0;
  std::memcpy(&v, p, es);
  return v;
}
}  // namespace

std::optional<EncodedTensor> encodeTensor(const Tensor& t, int64_t max_symbols, std::string* why) {
  const size_t es = dtypeSize(t.dtype());
  if (es == 0 || es > 8) {
    if (why) *why = "dtype " + std::string(dtypeName(t.dtype())) + " is not a fixed-size number type";
    return std::nullopt;
  }
  const auto* p = static_cast<const uint8_t*>(t.raw());
  const int64_t n = t.numel();
  std::map<uint64_t, uint32_t> index;
  for (int64_t i = 0; i < n; ++i) {
    index.emplace(bitsAt(p + static_cast<size_t>(i) * es, es), 0);
    if (static_cast<int64_t>(index.size()) > std::min<int64_t>(max_symbols, huffman::kMaxSymbols)) {
      if (why) *why = "more than " + std::to_string(std::min<int64_t>(max_symbols, huffman::kMaxSymbols)) +
                      " distinct values (share or quantize the weights first)";
      return std::nullopt;
    }
  }
  EncodedTensor e;
  e.symbols = static_cast<int64_t>(index.size());
  e.codebook = Tensor(t.dtype(), {e.symbols});
  uint32_t k = 0;
  for (auto& [bits, sym] : index) {
    sym = k;
    std::memcpy(static_cast<uint8_t*>(e.codebook.raw()) + size_t(k) * es, &bits, es);
    ++k;
  }
  std::vector<uint32_t> symbols(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) symbols[static_cast<size_t>(i)] = index.at(bitsAt(p + static_cast<size_t>(i) * es, es));
  const uint32_t K = static_cast<uint32_t>(e.symbols == 0 ? 1 : e.symbols);
  huffman::Encoded best = huffman::encode(symbols, K, -1);
  auto zero = index.find(0);
  // Sparse too when zero is the only value (a layer pruned away): no values, no gaps, a header and
  // two empty tables instead of a bit per weight (29 KB for lenet300's fc1).
  if (zero != index.end()) {
    huffman::Encoded sp = huffman::encode(symbols, K, static_cast<int32_t>(zero->second));
    if (sp.bytes.size() < best.bytes.size()) {
      best = std::move(sp);
      e.sparse = true;
    }
  }
  if (e.symbols == 0) e.codebook = Tensor(t.dtype(), {1});  // empty tensor: one (unused) entry keeps K >= 1
  e.stream = Tensor(DType::UInt8, {static_cast<int64_t>(best.bytes.size())});
  std::memcpy(e.stream.raw(), best.bytes.data(), best.bytes.size());
  e.stats = best.stats;
  return e;
}

Tensor decodeTensor(const Tensor& stream, const Tensor& codebook, const Shape& shape) {
  if (stream.dtype() != DType::UInt8 || stream.rank() != 1)
    fail("HuffmanDecode: stream must be a 1-D uint8 tensor, got ", dtypeName(stream.dtype()), " ", shapeStr(stream.shape()));
  if (codebook.rank() != 1 || codebook.numel() < 1 || codebook.numel() > huffman::kMaxSymbols)
    fail("HuffmanDecode: codebook must be a 1-D tensor of 1 to ", huffman::kMaxSymbols, " values, got ",
         shapeStr(codebook.shape()));
  for (int64_t d : shape)
    if (d < 0) fail("HuffmanDecode: negative dimension in shape ", shapeStr(shape));
  const size_t es = dtypeSize(codebook.dtype());
  if (es == 0 || es > 8) fail("HuffmanDecode: codebook dtype ", dtypeName(codebook.dtype()), " is not supported");
  // The header first: a stream that cannot fill this shape fails before anything is allocated.
  const std::span<const uint8_t> bytes(static_cast<const uint8_t*>(stream.raw()), static_cast<size_t>(stream.numel()));
  const huffman::StreamInfo info = huffman::inspect(bytes);
  int64_t want = 1;
  for (int64_t d : shape)
    if (__builtin_mul_overflow(want, d, &want))
      fail("HuffmanDecode: shape ", shapeStr(shape), " has more elements than 64 bits count; the stream holds ", info.numel);
  if (info.numel != want)
    fail("HuffmanDecode: the stream holds ", info.numel, " elements but shape ", shapeStr(shape), " needs ", want);
  if (info.num_symbols != static_cast<uint32_t>(codebook.numel()))
    fail("HuffmanDecode: the stream codes ", info.num_symbols, " symbols but the codebook has ", codebook.numel());
  Tensor out = Tensor::uninitialized(codebook.dtype(), shape);  // refuses absurd sizes itself
  std::vector<uint32_t> symbols(static_cast<size_t>(out.numel()));
  huffman::decode(bytes, static_cast<uint32_t>(codebook.numel()), symbols);
  const auto* cb = static_cast<const uint8_t*>(codebook.raw());
  auto* o = static_cast<uint8_t*>(out.raw());
  for (size_t i = 0; i < symbols.size(); ++i) std::memcpy(o + i * es, cb + size_t(symbols[i]) * es, es);
  return out;
}

int64_t decodeAll(Model& m) {
  Graph& g = m.graph;
  int64_t decoded = 0;
  std::vector<std::string> freed;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node n = g.nodes[i];
    if (n.domain != kDomain || n.op_type != kDecodeOp) continue;
    const Tensor* s = n.hasInput(0) ? g.initializers.find(n.inputs[0]) : nullptr;
    const Tensor* c = n.hasInput(1) ? g.initializers.find(n.inputs[1]) : nullptr;
    if (!s || !c) fail(m.label(), ": ", n.describe(), ": stream and codebook must be initializers");
    if (!n.hasAttr("shape") || n.outputs.empty()) fail(m.label(), ": ", n.describe(), ": attribute 'shape' is missing");
    const auto shape = n.attrInts("shape");
    Tensor t;
    try {
      t = decodeTensor(*s, *c, Shape(shape.begin(), shape.end()));
    } catch (const Error& e) {
      fail(m.label(), ": ", n.describe(), ": ", e.what());
    }
    g.initializers.set(n.outputs[0], std::move(t));
    freed.push_back(n.inputs[0]);
    freed.push_back(n.inputs[1]);
    g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
    --i;
    ++decoded;
  }
  dropUnusedConstants(g, freed);
  const bool any = std::any_of(g.nodes.begin(), g.nodes.end(), [](const Node& n) { return n.domain == kDomain; });
  if (!any)
    m.opset_imports.erase(std::remove_if(m.opset_imports.begin(), m.opset_imports.end(),
                                         [](const OpsetImport& o) { return o.domain == kDomain; }),
                          m.opset_imports.end());
  return decoded;
}

}  // namespace lwc::weight_coding
