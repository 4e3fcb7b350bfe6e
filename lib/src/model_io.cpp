#include "lwc/model_io.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <csignal>
#include <random>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <onnx/defs/parser.h>
#include <onnx/defs/schema.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include "lwc/opset_lowering.h"
#include "lwc/signal_cleanup.h"

namespace lwc {

namespace fs = std::filesystem;

fs::path folderOf(const fs::path& path) { return path.parent_path().empty() ? fs::path(".") : path.parent_path(); }

namespace {

// Reads an external-data blob into `dst` (`expected_bytes` long), refusing locations that leave the
// model's folder.
void readExternalInto(const onnx::TensorProto& p, const fs::path& base_dir, const std::string& where,
                      size_t expected_bytes, char* dst) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto& kv : p.external_data()) {
    try {
      if (kv.key() == "location") location = kv.value();
      else if (kv.key() == "offset") offset = std::stoll(kv.value());
      else if (kv.key() == "length") length = std::stoll(kv.value());
    } catch (const std::out_of_range&) {
      fail(where, ": external data key '", kv.key(), "' has the value '", kv.value(), "', beyond a 64-bit integer");
    } catch (const std::exception&) {
      fail(where, ": external data key '", kv.key(), "' has a non-numeric value '", kv.value(), "'");
    }
  }
  if (location.empty()) fail(where, ": external data has no 'location'");
  const fs::path loc(location);
  if (loc.is_absolute())
    fail(where, ": external data location '", location,
         "' is an absolute path; ONNX requires a path relative to the model's folder");
  for (const auto& part : loc)
    if (part == "..")
      fail(where, ": external data location '", location,
           "' leaves the model's folder (contains '..'); move the data next to the model");
  if (base_dir.empty()) fail(where, ": tensor uses external data but the model was not loaded from a file");
  const fs::path full = base_dir / loc;
  std::error_code ec;
  const fs::path canon_base = fs::weakly_canonical(base_dir, ec);
  const fs::path canon = fs::weakly_canonical(full, ec);
  const auto rel = canon.lexically_relative(canon_base);
  if (rel.empty() || *rel.begin() == "..")
    fail(where, ": external data location '", location, "' resolves outside the model's folder (symlink?)");
  if (offset < 0 || length < -1) fail(where, ": external data has a negative offset or length");
  // A folder opened and measured -1 bytes ("external data holds -1 bytes").
  if (fs::is_directory(full, ec))
    fail(where, ": external data location '", location, "' is a folder; it must name the file that holds the data");
  std::ifstream in(full, std::ios::binary);
  if (!in) fail(where, ": cannot open external data file '", full.string(), "'");
  const auto fsize = static_cast<int64_t>(fs::file_size(full, ec));
  if (length < 0) length = fsize - offset;
  if (offset + length > fsize)
    fail(where, ": external data '", full.string(), "' is ", fsize, " bytes, but offset ", offset, " + length ",
         length, " runs past its end");
  if (static_cast<size_t>(length) != expected_bytes)
    fail(where, ": external data holds ", length, " bytes but the tensor's shape and type need ", expected_bytes);
  in.seekg(offset);
  in.read(dst, length);
  if (!in) fail(where, ": short read from external data file '", full.string(), "'");
}

std::string readExternal(const onnx::TensorProto& p, const fs::path& base_dir, const std::string& where,
                         size_t expected_bytes) {
  std::string buf(expected_bytes, '\0');
  readExternalInto(p, base_dir, where, expected_bytes, buf.data());
  return buf;
}

template <typename Src, typename Dst>
void copyTyped(const Src& src, Dst* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(src.Get(static_cast<int>(i)));
}

// Bytes per element of an ONNX type in raw_data; 0 for types that cannot be stored raw (string).
size_t rawElementBytes(int type) {
  using TP = onnx::TensorProto;
  switch (type) {
    case TP::COMPLEX128: return 16;
    case TP::DOUBLE: case TP::INT64: case TP::UINT64: case TP::COMPLEX64: return 8;
    case TP::FLOAT: case TP::INT32: case TP::UINT32: return 4;
    case TP::INT16: case TP::UINT16: case TP::FLOAT16: case TP::BFLOAT16: return 2;
    case TP::INT8: case TP::UINT8: case TP::BOOL: return 1;
    default: return 0;
  }
}

// A tensor stored in the file (an initializer, a node's tensor attribute such as a Constant's
// value, in any graph), checked without copying its data: the type is one ONNX defines and the
// data fills the declared shape exactly. tensorFromProto runs it first; model loading runs it on
// the tensors lwc does not read itself (subgraphs, attributes). ONNX's inference reads all of them
// (ParseData), and 1.12 copies all of raw_data into a vector sized in whole elements: 17 bytes for
// an int64 tensor wrote past a heap buffer (AddressSanitizer, found by fuzz_model_load in a Loop
// body's Constant). External data is checked where lwc reads it (tensorFromProto).
void checkStoredTensor(const onnx::TensorProto& p, const std::string& where) {
  using TP = onnx::TensorProto;
  const int type = p.data_type();
  if (type == TP::UNDEFINED || !TP::DataType_IsValid(type))
    fail(where, ": tensor has data type ", type, ", which ONNX does not define: the model is corrupt or was edited by hand");
  double count = 1;
  for (int64_t d : p.dims()) {
    if (d < 0) fail(where, ": negative dimension ", d, " in the tensor's shape: the model is corrupt or was edited by hand");
    count *= static_cast<double>(d);
  }
  if (count > static_cast<double>(int64_t{1} << 40))
    fail(where, ": declared shape with ", count, " elements is implausibly large (corrupt file?)");
  if (p.data_location() == TP::EXTERNAL) return;
  const auto n = static_cast<int64_t>(count);
  const size_t elem = rawElementBytes(type);  // bytes per element in raw_data
  int64_t per = 1;   // typed-field values per element
  int64_t have = 0;  // typed-field values present
  const char* field = "";
  switch (type) {
    case TP::FLOAT: have = p.float_data_size(), field = "float_data"; break;
    case TP::COMPLEX64: per = 2, have = p.float_data_size(), field = "float_data"; break;
    case TP::DOUBLE: have = p.double_data_size(), field = "double_data"; break;
    case TP::COMPLEX128: per = 2, have = p.double_data_size(), field = "double_data"; break;
    case TP::INT64: have = p.int64_data_size(), field = "int64_data"; break;
    case TP::UINT32: case TP::UINT64: have = p.uint64_data_size(), field = "uint64_data"; break;
    case TP::STRING: have = p.string_data_size(), field = "string_data"; break;
    default:  // INT32, INT16, UINT16, FLOAT16, BFLOAT16, INT8, UINT8, BOOL
      have = p.int32_data_size(), field = "int32_data"; break;
  }
  const std::string shape = shapeStr(Shape(p.dims().begin(), p.dims().end()));
  const DType dt = fromOnnxType(type);
  const std::string type_name = dt != DType::Undefined ? std::string(dtypeName(dt)) : onnxTypeName(type);
  if (p.has_raw_data()) {
    if (type == TP::STRING) fail(where, ": a STRING tensor cannot hold raw_data: the model is corrupt or was edited by hand");
    if (p.raw_data().size() != static_cast<size_t>(n) * elem)
      fail(where, ": raw_data holds ", p.raw_data().size(), " bytes but shape ", shape, " of ", type_name, " needs ",
           static_cast<size_t>(n) * elem, "; the tensor is corrupt");
  } else if (have != n * per) {
    fail(where, ": ", field, " holds ", have, " values but shape ", shape, " of ", type_name, " needs ", n * per,
         "; the tensor is corrupt");
  }
}

}  // namespace

Tensor tensorFromProto(const onnx::TensorProto& p, const fs::path& base_dir, const std::string& where) {
  const DType dt = fromOnnxType(p.data_type());
  if (dt == DType::Undefined && onnxTypeName(p.data_type()).starts_with("type code"))
    fail(where, ": tensor type code ", p.data_type(), " is not a type ONNX defines; the model is corrupt");
  if (dt == DType::Undefined)
    fail(where, ": tensor type ", onnxTypeName(p.data_type()),
         " (", p.data_type(), ") is not supported by lwc",
         p.data_type() != onnx::TensorProto::BFLOAT16 && (p.data_type() < 17 || p.data_type() > 24)
             ? ""
             : std::string("; lwc computes with float32, float16, float64 and integer tensors: ") +
                   (where.find("initializer '") != std::string::npos
                        ? "export the model in float32 (in PyTorch, model.float() before torch.onnx.export)"
                        : "convert it to float32"));
  if (p.has_segment()) fail(where, ": segmented tensors are not supported");
  checkStoredTensor(p, where);  // dimensions, and (stored inline) data that fills them
  Shape shape(p.dims().begin(), p.dims().end());
  double count = 1;
  for (auto d : shape) count *= static_cast<double>(d);
  if (count * static_cast<double>(dtypeSize(dt)) > 16.0 * (1ull << 30))
    fail(where, ": declared shape ", shapeStr(shape), " is implausibly large (corrupt file?)");
  const int64_t n = numelOf(shape);
  const size_t bytes = static_cast<size_t>(n) * dtypeSize(dt);

  if (p.data_location() == onnx::TensorProto::EXTERNAL) {
    // Straight into the tensor: a 2 GB weight was zeroed twice and copied once more on the way.
    Tensor t = Tensor::uninitialized(dt, shape);
    readExternalInto(p, base_dir, where, bytes, static_cast<char*>(t.raw()));
    t.normalizeBools();
    return t;
  }
  if (p.has_raw_data()) {
    Tensor t(dt, shape);
    if (bytes) std::memcpy(t.raw(), p.raw_data().data(), bytes);
    t.normalizeBools();
    return t;
  }
  Tensor t(dt, shape);
  switch (dt) {
    case DType::Float32:
      copyTyped(p.float_data(), t.data<float>(), n);
      break;
    case DType::Float64:
      copyTyped(p.double_data(), t.data<double>(), n);
      break;
    case DType::Int64:
      copyTyped(p.int64_data(), t.data<int64_t>(), n);
      break;
    case DType::UInt32:
      copyTyped(p.uint64_data(), t.data<uint32_t>(), n);
      break;
    case DType::UInt64:
      copyTyped(p.uint64_data(), t.data<uint64_t>(), n);
      break;
    case DType::Int32:
      copyTyped(p.int32_data(), t.data<int32_t>(), n);
      break;
    case DType::Int8:
      copyTyped(p.int32_data(), t.data<int8_t>(), n);
      break;
    case DType::UInt8:
      copyTyped(p.int32_data(), t.data<uint8_t>(), n);
      break;
    case DType::Int16:
      copyTyped(p.int32_data(), t.data<int16_t>(), n);
      break;
    case DType::UInt16:
    case DType::Float16:
      copyTyped(p.int32_data(), static_cast<uint16_t*>(t.raw()), n);
      break;
    case DType::Bool:
      for (int64_t i = 0; i < n; ++i) t.data<bool>()[i] = p.int32_data(static_cast<int>(i)) != 0;
      break;
    case DType::Undefined: break;
  }
  return t;
}

namespace {
// tensorToProto without the data: the name, type and dims.
onnx::TensorProto tensorHeaderToProto(const Tensor& t, const std::string& name) {
  onnx::TensorProto p;
  p.set_name(name);
  p.set_data_type(toOnnxType(t.dtype()));
  for (auto d : t.shape()) p.add_dims(d);
  return p;
}
}  // namespace

onnx::TensorProto tensorToProto(const Tensor& t, const std::string& name) {
  onnx::TensorProto p = tensorHeaderToProto(t, name);
  p.set_raw_data(static_cast<const char*>(t.raw()), t.nbytes());
  return p;
}

int64_t framedFieldBytes(size_t body) {
  return static_cast<int64_t>(1 + google::protobuf::io::CodedOutputStream::VarintSize64(body) + body);
}

// raw_data is field 9 of TensorProto: a one-byte tag.
int64_t tensorProtoBytes(const Tensor& t, const std::string& name) {
  return static_cast<int64_t>(tensorHeaderToProto(t, name).ByteSizeLong()) + framedFieldBytes(t.nbytes());
}

ValueInfo valueInfoFromProto(const onnx::ValueInfoProto& p) {
  ValueInfo v;
  v.name = p.name();
  v.doc_string = p.doc_string();
  if (!p.has_type()) return v;
  const auto& type = p.type();
  if (type.value_case() != onnx::TypeProto::kTensorType) {
    v.other_type = type;
    return v;
  }
  const auto& tt = type.tensor_type();
  v.dtype = fromOnnxType(tt.elem_type());
  if (v.dtype == DType::Undefined && tt.elem_type() != 0) {
    v.other_type = type;  // e.g. string tensors: keep verbatim
    v.raw_elem_type = tt.elem_type();
    return v;
  }
  if (tt.has_shape()) {
    SymShape s;
    for (const auto& d : tt.shape().dim()) {
      Dim dim;
      if (d.has_dim_value()) dim.value = d.dim_value();
      else if (d.has_dim_param()) dim.param = d.dim_param();
      s.push_back(dim);
    }
    v.shape = std::move(s);
  }
  return v;
}

onnx::ValueInfoProto valueInfoToProto(const ValueInfo& v) {
  onnx::ValueInfoProto p;
  p.set_name(v.name);
  if (!v.doc_string.empty()) p.set_doc_string(v.doc_string);
  if (v.other_type) {
    *p.mutable_type() = *v.other_type;
    return p;
  }
  if (v.dtype == DType::Undefined && !v.shape) return p;
  auto* tt = p.mutable_type()->mutable_tensor_type();
  if (v.dtype != DType::Undefined) tt->set_elem_type(toOnnxType(v.dtype));
  if (v.shape) {
    auto* sh = tt->mutable_shape();
    for (const auto& d : *v.shape) {
      auto* pd = sh->add_dim();
      if (d.known()) pd->set_dim_value(d.value);
      else if (!d.param.empty()) pd->set_dim_param(d.param);
    }
  }
  return p;
}

namespace {
// Node::attr for either form of a node's attribute list.
template <class Attrs>
const onnx::AttributeProto* findAttr(const Attrs& attrs, std::string_view name) {
  for (const auto& a : attrs)
    if (a.name() == name) return &a;
  return nullptr;
}

// Each standard-domain node against its ONNX schema at the model's opset: how many inputs and
// outputs, and no required one left empty (everything that reads a node -- analysis, passes, the
// engine's graph rewrites -- may then index the inputs the op requires; a node with a missing
// weight input had crashed `lwc info` and `lwc exec`), and for convolutions and pools the window
// attributes; then every tensor the node's attributes hold, and its subgraphs, node by node, the
// same way (ONNX's inference walks into them: a zero stride inside an If divided by zero there).
// Ops libonnx has no schema for are left to the engine, which names them as unsupported.
class NodeValidator {
 public:
  NodeValidator(const Model& m, std::string label) : label_(std::move(label)) {
    for (const auto& o : m.opset_imports)
      if (isDefaultDomain(o.domain)) opset_ = o.version;
  }

  template <class Names, class Attrs>
  void node(const std::string& who, const std::string& op_type, const std::string& domain, const Names& inputs,
            const Names& outputs, const Attrs& attrs) {
    if (domain.empty() && opset_ > 0) schemaChecks(who, op_type, inputs, outputs, attrs);
    for (const auto& a : attrs) {
      // By the fields present, not the declared type: ONNX's inference reads a Constant's value
      // whatever type the attribute claims.
      if (!a.has_t() && a.tensors().empty() && !a.has_sparse_tensor() && a.sparse_tensors().empty() && !a.has_g() &&
          a.graphs().empty())
        continue;
      const std::string at = "attribute '" + a.name() + "' of " + who;
      if (a.has_t()) tensor(a.t(), at);
      for (const auto& t : a.tensors()) tensor(t, at);
      if (a.has_sparse_tensor()) sparse(a.sparse_tensor(), at);
      for (const auto& t : a.sparse_tensors()) sparse(t, at);
      if (a.has_g()) graph(a.g(), at);
      for (const auto& g : a.graphs()) graph(g, at);
    }
  }

  void sparse(const onnx::SparseTensorProto& s, const std::string& where) {
    tensor(s.values(), where + " (values)");
    tensor(s.indices(), where + " (indices)");
  }

 private:
  void tensor(const onnx::TensorProto& t, const std::string& where) { checkStoredTensor(t, label_ + ": " + where); }

  void graph(const onnx::GraphProto& g, const std::string& where) {
    const std::string in = " in " + where;  // "in attribute 'body' of node Loop 'l'"
    for (const auto& t : g.initializer()) tensor(t, "initializer '" + t.name() + "'" + in);
    for (const auto& s : g.sparse_initializer()) sparse(s, "sparse initializer" + in);
    for (const auto& pn : g.node())
      node("node " + describeNode(normalizedDomain(pn.domain()), pn.op_type(), pn.name(), pn.output_size() ? &pn.output(0) : nullptr) + in, pn.op_type(), normalizedDomain(pn.domain()), pn.input(), pn.output(),
           pn.attribute());
  }

  template <class Names, class Attrs>
  void schemaChecks(const std::string& who, const std::string& op_type, const Names& inputs, const Names& outputs,
                    const Attrs& attrs) {
    const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Instance()->GetSchema(op_type, static_cast<int>(opset_), "");
    if (!schema) return;
    auto check = [&](const Names& names, int lo, int hi, const std::vector<onnx::OpSchema::FormalParameter>& formal,
                     const char* what) {
      const int count = static_cast<int>(names.size());
      if (count < lo || count > hi) {
        const std::string range = lo == hi ? std::to_string(lo)
                                  : hi == std::numeric_limits<int>::max() ? "at least " + std::to_string(lo)
                                                                          : std::to_string(lo) + " to " + std::to_string(hi);
        fail(label_, ": ", who, " has ", count, " ", what, count == 1 ? "" : "s", "; ", op_type, " (opset ", opset_,
             ") takes ", range, ": the model is corrupt or was edited by hand");
      }
      for (int i = 0; i < count && i < static_cast<int>(formal.size()); ++i)
        if (names[i].empty() && formal[static_cast<size_t>(i)].GetOption() == onnx::OpSchema::Single)
          fail(label_, ": ", who, " leaves its required ", what, " ", i, " ('", formal[static_cast<size_t>(i)].GetName(),
               "') empty: the model is corrupt or was edited by hand");
    };
    check(inputs, schema->min_input(), schema->max_input(), schema->inputs(), "input");
    check(outputs, schema->min_output(), schema->max_output(), schema->outputs(), "output");
    // Window attributes: libonnx's shape inference for these ops divides by the strides (a zero
    // stride kills the process with SIGFPE), and every runtime needs them positive.
    static const std::set<std::string> kWindowOps = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool",
                                                     "AveragePool", "LpPool", "MaxUnpool"};
    if (!kWindowOps.count(op_type)) return;
    for (const char* a : {"strides", "dilations", "kernel_shape", "pads", "group"}) {
      const onnx::AttributeProto* attr = findAttr(attrs, a);
      if (!attr) continue;
      const bool pads = std::string_view(a) == "pads";
      std::vector<int64_t> v(attr->ints().begin(), attr->ints().end());
      if (attr->type() == onnx::AttributeProto::INT) v = {attr->i()};
      // No model has windows near 2^24; oneDNN's kernels fail to set up with values near 2^31.
      constexpr int64_t kMax = int64_t{1} << 24;
      for (int64_t x : v)
        if (pads ? x < 0 : x < 1) {
          fail(label_, ": ", who, " has ", a, " ", shapeStr(v), "; ",
               pads ? "pads must not be negative" : "each must be at least 1", ": the model is corrupt or was edited by hand");
        } else if (x > kMax) {
          fail(label_, ": ", who, " has ", a, " ", shapeStr(v), "; lwc takes values up to ", kMax,
               ": the model is corrupt or was edited by hand");
        }
    }
  }

  std::string label_;
  int64_t opset_ = 0;
};

void validateNodes(const Model& m, const std::string& label) {
  NodeValidator v(m, label);
  for (const Node& n : m.graph.nodes) v.node("node " + n.describe(), n.op_type, n.domain, n.inputs, n.outputs, n.attrs);
}

// Records the file a tensor stored as external data reads (nothing for a tensor stored inline).
void addExternalFile(const onnx::TensorProto& t, const fs::path& base_dir, std::vector<fs::path>& files) {
  if (t.data_location() != onnx::TensorProto::EXTERNAL) return;
  for (const auto& kv : t.external_data())
    if (kv.key() == "location") {
      // One file named two ways (w.bin, ./w.bin) is one file: it was counted twice on disk.
      const fs::path f = (base_dir / kv.value()).lexically_normal();
      if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
    }
}

// The bytes move into raw_data as they are, whatever the type: a bfloat16 Constant that only a Cast
// reads must load even though lwc computes with no bfloat16 (a typed round trip refused it).
void inlineExternalTensor(onnx::TensorProto& t, const fs::path& base_dir, const std::string& where, std::vector<fs::path>& files) {
  if (t.data_location() != onnx::TensorProto::EXTERNAL) return;
  addExternalFile(t, base_dir, files);
  checkStoredTensor(t, where);  // a type ONNX defines, dimensions that are plausible
  const size_t elem = rawElementBytes(t.data_type());
  if (elem == 0)
    fail(where, ": a ", onnxTypeName(t.data_type()),
         " tensor cannot be stored as external data; store it in the model");
  size_t n = 1;
  for (int64_t d : t.dims()) n *= static_cast<size_t>(d);
  std::string blob = readExternal(t, base_dir, where, n * elem);
  t.clear_external_data();
  t.clear_data_location();
  t.set_raw_data(std::move(blob));
}

void inlineExternalTensors(onnx::GraphProto& g, const fs::path& base_dir, const std::string& where, std::vector<fs::path>& files);

void inlineExternalTensors(onnx::AttributeProto& a, const fs::path& base_dir, const std::string& who, std::vector<fs::path>& files) {
  const std::string where = who + " attribute '" + a.name() + "'";
  if (a.has_t()) inlineExternalTensor(*a.mutable_t(), base_dir, where, files);
  for (auto& t : *a.mutable_tensors()) inlineExternalTensor(t, base_dir, where, files);
  if (a.has_g()) inlineExternalTensors(*a.mutable_g(), base_dir, where, files);
  for (auto& g : *a.mutable_graphs()) inlineExternalTensors(g, base_dir, where, files);
}

void inlineExternalTensors(onnx::GraphProto& g, const fs::path& base_dir, const std::string& where, std::vector<fs::path>& files) {
  for (auto& t : *g.mutable_initializer())
    inlineExternalTensor(t, base_dir, where + ": initializer '" + t.name() + "'", files);
  for (auto& n : *g.mutable_node())
    for (auto& a : *n.mutable_attribute())
      inlineExternalTensors(a, base_dir, where + ": node " + describeNode(normalizedDomain(n.domain()), n.op_type(), n.name(), n.output_size() ? &n.output(0) : nullptr), files);
}

// The IR of a model whose opset and IR version ONNX's library here knows.
// `owned`: the same message as `proto`, whose initializers' data may be freed once read.
Model modelFromKnownProto(const onnx::ModelProto& proto, const fs::path& base_dir, const std::string& label,
                          const LoadOptions& opts, onnx::ModelProto* owned = nullptr) {
  if (!proto.has_graph() || proto.ir_version() <= 0)
    fail(label, ": not an ONNX model (no graph or no IR version); is this the right file?");
  Model m;
  m.ir_version = proto.ir_version();
  for (const auto& o : proto.opset_import()) m.opset_imports.push_back({o.domain(), o.version()});
  if (m.opset_imports.empty()) fail(label, ": model imports no opset; it is not a valid ONNX model");
  m.producer_name = proto.producer_name();
  m.producer_version = proto.producer_version();
  m.domain = proto.domain();
  m.model_version = proto.model_version();
  m.doc_string = proto.doc_string();
  for (const auto& kv : proto.metadata_props()) m.metadata_props.emplace_back(kv.key(), kv.value());
  m.functions.assign(proto.functions().begin(), proto.functions().end());
  m.training_info.assign(proto.training_info().begin(), proto.training_info().end());

  const auto& g = proto.graph();
  Graph& G = m.graph;
  G.name = g.name();
  G.doc_string = g.doc_string();
  for (const auto& vi : g.input()) G.inputs.push_back(valueInfoFromProto(vi));
  for (const auto& vi : g.output()) G.outputs.push_back(valueInfoFromProto(vi));
  for (const auto& vi : g.value_info()) G.value_info.push_back(valueInfoFromProto(vi));
  for (int k = 0; k < g.initializer_size(); ++k) {
    const auto& t = g.initializer(k);
    if (t.name().empty()) fail(label, ": an initializer has no name");
    if (G.initializers.contains(t.name())) fail(label, ": initializer '", t.name(), "' is defined twice");
    G.initializers.set(t.name(), tensorFromProto(t, base_dir, label + ": initializer '" + t.name() + "'"));
    addExternalFile(t, base_dir, m.external_data_files);
    if (!t.doc_string().empty()) G.initializers.docStrings()[t.name()] = t.doc_string();
    // Loading held each weight three times (file, message, tensor); now at most two at any time.
    if (owned) {
      onnx::TensorProto& o = *owned->mutable_graph()->mutable_initializer(k);
      if (o.has_raw_data()) std::string().swap(*o.mutable_raw_data());
      google::protobuf::RepeatedField<float>().Swap(o.mutable_float_data());
      google::protobuf::RepeatedField<double>().Swap(o.mutable_double_data());
      google::protobuf::RepeatedField<int32_t>().Swap(o.mutable_int32_data());
      google::protobuf::RepeatedField<int64_t>().Swap(o.mutable_int64_data());
      google::protobuf::RepeatedField<uint64_t>().Swap(o.mutable_uint64_data());
    }
  }
  if (m.ir_version < 4) {
    // IR 3 and older list every initializer among the graph inputs. Runtimes treat them as the
    // model's constants (ONNX Runtime lets inputs override initializers only from IR 4 on), and so
    // does lwc: they leave the input list here and come back to it when the model is written.
    std::erase_if(G.inputs, [&](const ValueInfo& v) { return G.initializers.contains(v.name); });
  }
  // Sparse initializers become dense ones (lwc writes weights dense and inline): a Gemm reading
  // one was refused as reading "a value nothing produces".
  for (const auto& sp : g.sparse_initializer()) {
    const std::string& name = sp.values().name();
    const std::string where = label + ": sparse initializer '" + name + "'";
    if (name.empty()) fail(label, ": a sparse initializer has no name");
    if (G.initializers.contains(name)) fail(where, " is defined twice");
    for (const auto* t : {&sp.values(), &sp.indices()}) addExternalFile(*t, base_dir, m.external_data_files);
    const Tensor values = tensorFromProto(sp.values(), base_dir, where + " (values)");
    const Tensor indices = tensorFromProto(sp.indices(), base_dir, where + " (indices)");
    Shape dims(sp.dims().begin(), sp.dims().end());
    for (const int64_t d : dims)
      if (d < 0) fail(where, ": negative dimension ", d);
    Tensor dense(values.dtype(), dims);
    const int64_t nnz = values.numel();
    const auto rank = static_cast<int64_t>(dims.size());
    if (values.rank() != 1 || indices.dtype() != DType::Int64 ||
        !((indices.rank() == 1 && indices.dim(0) == nnz) || (indices.rank() == 2 && indices.dim(0) == nnz && indices.dim(1) == rank)))
      fail(where, ": values must be 1-D [NNZ] and indices int64 [NNZ] or [NNZ, ", rank, "], as the ONNX spec says");
    const size_t es = dtypeSize(values.dtype());
    const int64_t* ix = indices.data<int64_t>();
    for (int64_t k = 0; k < nnz; ++k) {
      int64_t flat = 0;
      if (indices.rank() == 1) flat = ix[k];
      else
        for (int64_t a = 0; a < rank; ++a) {
          const int64_t i = ix[k * rank + a];
          if (i < 0 || i >= dims[static_cast<size_t>(a)]) fail(where, ": index ", i, " out of range for dimension ", a, " of size ", dims[static_cast<size_t>(a)]);
          flat = flat * dims[static_cast<size_t>(a)] + i;
        }
      if (flat < 0 || flat >= dense.numel()) fail(where, ": index ", flat, " out of range for ", dense.numel(), " elements");
      std::memcpy(static_cast<char*>(dense.raw()) + static_cast<size_t>(flat) * es,
                  static_cast<const char*>(values.raw()) + static_cast<size_t>(k) * es, es);
    }
    G.initializers.set(name, std::move(dense));
  }
  G.quantization_annotation.assign(g.quantization_annotation().begin(), g.quantization_annotation().end());
  G.nodes.reserve(static_cast<size_t>(g.node_size()));
  for (const auto& pn : g.node()) {
    Node n;
    n.name = pn.name();
    n.op_type = pn.op_type();
    n.domain = normalizedDomain(pn.domain());
    n.doc_string = pn.doc_string();
    n.inputs.assign(pn.input().begin(), pn.input().end());
    n.outputs.assign(pn.output().begin(), pn.output().end());
    n.attrs.assign(pn.attribute().begin(), pn.attribute().end());
    // Tensors in attributes (a Constant's value with onnx's convert_attribute=True) and in
    // subgraphs (an If branch's initializers) stored as external data are read here, where the
    // model's folder is known: every later reader (the engine's Constant kernel, fold_constants,
    // lwc info, the ONNX checker) had no folder to resolve them against, the output kept the
    // reference (a file ONNX Runtime refused), and their files were not among the model's (so
    // `-o` could replace one).
    for (auto& a : n.attrs) inlineExternalTensors(a, base_dir, label + ": node " + n.describe(), m.external_data_files);
    G.nodes.push_back(std::move(n));
  }
  if (opts.validate) {
    // Nothing could be evaluated, compared or kept by any pass: every node would be dead.
    if (G.outputs.empty()) fail(label, ": the graph declares no outputs; a model needs at least one (export it again)");
    validateGraph(G, label);
    validateNodes(m, label);
    topoSort(G, label);
  }
  return m;
}

// A model of a newer opset or IR version is lowered first (in place), its notes kept for the user.
Model modelFromOwnedProto(onnx::ModelProto& proto, const fs::path& base_dir, const std::string& label,
                          const LoadOptions& opts) {
  std::vector<std::string> notes;
  if (proto.has_graph() && proto.ir_version() > 0 && newerThanKnown(proto)) notes = lowerToKnownVersions(proto, label);
  Model m = modelFromKnownProto(proto, base_dir, label, opts, &proto);
  m.load_notes = std::move(notes);
  return m;
}
}  // namespace

Model modelFromProto(const onnx::ModelProto& proto, const fs::path& base_dir, const std::string& label,
                     const LoadOptions& opts) {
  if (!proto.has_graph() || proto.ir_version() <= 0 || !newerThanKnown(proto))
    return modelFromKnownProto(proto, base_dir, label, opts);
  onnx::ModelProto copy = proto;
  return modelFromOwnedProto(copy, base_dir, label, opts);
}

Model loadModel(const fs::path& path, const LoadOptions& opts) {
  onnx::ModelProto proto;
  {  // the file's bytes go before the tensors are built from the parsed message
    const std::string bytes = readUserFile(path, "an ONNX model file");
    if (bytes.empty()) fail(path.string(), ": file is empty, expected an ONNX model");
    google::protobuf::io::ArrayInputStream ais(bytes.data(), static_cast<int>(std::min<size_t>(bytes.size(), INT_MAX)));
    google::protobuf::io::CodedInputStream cis(&ais);
    cis.SetTotalBytesLimit(INT_MAX);
    if (!proto.ParseFromCodedStream(&cis) || !cis.ConsumedEntireMessage())
      fail(path.string(), ": not a valid ONNX protobuf (truncated or not an ONNX file)");
  }
  Model m = modelFromOwnedProto(proto, folderOf(path), path.string(), opts);
  m.source = path;
  return m;
}

onnx::NodeProto nodeToProto(const Node& n, int64_t default_opset) {
  onnx::NodeProto p;
  for (const auto& i : n.inputs) p.add_input(i);
  // Trailing unused optional outputs are left out, as the spec allows: ONNX Runtime's layout
  // optimizer lost a MaxPool's output that was followed by an empty Indices name (a quantized
  // model it then could not run). Only outputs the op's schema calls optional: a Split's or an
  // If's number of outputs means something, even where one is unused.
  size_t outs = n.outputs.size();
  if (n.domain.empty()) {
    const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Instance()->GetSchema(n.op_type, static_cast<int>(default_opset), "");
    auto optional = [&](size_t k) {
      return schema && k < schema->outputs().size() &&
             schema->outputs()[k].GetOption() == onnx::OpSchema::FormalParameterOption::Optional;
    };
    while (outs > 0 && n.outputs[outs - 1].empty() && optional(outs - 1)) --outs;
  }
  for (size_t k = 0; k < outs; ++k) p.add_output(n.outputs[k]);
  if (!n.name.empty()) p.set_name(n.name);
  p.set_op_type(n.op_type);
  if (!n.domain.empty()) p.set_domain(n.domain);
  for (const auto& a : n.attrs) *p.add_attribute() = a;
  if (!n.doc_string.empty()) p.set_doc_string(n.doc_string);
  return p;
}

namespace {
// What modelToProto writes of a large initializer's data: everything, nothing (the tensor stays
// an initializer without its raw_data, for measuring), or nothing with the tensor declared as a
// graph input instead (for shape inference, which reads weights' types and shapes only).
enum class WeightData { All, HeaderOnly, AsInputs };

// Whether `t` is large and its values cannot be a shape, axes or count that ONNX's inference reads
// (those are int32/int64 or a few floats: Resize's scales, Range's scalars).
bool dataNotInferred(const Tensor& t, int64_t over_bytes) {
  return static_cast<int64_t>(t.nbytes()) > over_bytes && t.dtype() != DType::Int64 && t.dtype() != DType::Int32;
}

onnx::ModelProto toProto(const Model& m, WeightData data, int64_t over_bytes) {
  onnx::ModelProto p;
  p.set_ir_version(m.ir_version);
  for (const auto& o : m.opset_imports) {
    auto* op = p.add_opset_import();
    op->set_domain(o.domain);
    op->set_version(o.version);
  }
  if (!m.producer_name.empty()) p.set_producer_name(m.producer_name);
  if (!m.producer_version.empty()) p.set_producer_version(m.producer_version);
  if (!m.domain.empty()) p.set_domain(m.domain);
  if (m.model_version) p.set_model_version(m.model_version);
  if (!m.doc_string.empty()) p.set_doc_string(m.doc_string);
  for (const auto& [k, v] : m.metadata_props) {
    auto* kv = p.add_metadata_props();
    kv->set_key(k);
    kv->set_value(v);
  }
  for (const auto& f : m.functions) *p.add_functions() = f;
  for (const auto& t : m.training_info) *p.add_training_info() = t;

  auto* g = p.mutable_graph();
  const Graph& G = m.graph;
  g->set_name(G.name);
  if (!G.doc_string.empty()) g->set_doc_string(G.doc_string);
  const int64_t opset = m.opsetFor("");
  for (const auto& n : G.nodes) *g->add_node() = nodeToProto(n, opset);
  std::vector<std::pair<const std::string*, const Tensor*>> as_inputs;
  for (const auto& [name, t] : G.initializers.items()) {
    // One also declared as a graph input stays: ONNX checks the two declarations against each other.
    if (data == WeightData::AsInputs && dataNotInferred(t, over_bytes) && !G.isGraphInput(name)) {
      as_inputs.emplace_back(&name, &t);
      continue;
    }
    auto* pt = g->add_initializer();
    *pt = data == WeightData::HeaderOnly ? tensorHeaderToProto(t, name) : tensorToProto(t, name);
    auto it = G.initializers.docStrings().find(name);
    if (it != G.initializers.docStrings().end()) pt->set_doc_string(it->second);
  }
  for (const auto& v : G.inputs) *g->add_input() = valueInfoToProto(v);
  if (m.ir_version > 0 && m.ir_version < 4) {
    // IR version 3 and older: every initializer must also be a graph input. Initializers that a
    // pass created (a folded constant, a quantization scale) are listed after the others.
    for (const auto& [name, t] : G.initializers.items())
      if (!G.isGraphInput(name)) *g->add_input() = valueInfoToProto(valueInfoOf(name, t));
  } else {
    for (const auto& [name, t] : as_inputs) *g->add_input() = valueInfoToProto(valueInfoOf(*name, *t));
  }
  for (const auto& v : G.outputs) *g->add_output() = valueInfoToProto(v);
  for (const auto& v : G.value_info) *g->add_value_info() = valueInfoToProto(v);
  for (const auto& q : G.quantization_annotation) *g->add_quantization_annotation() = q;
  return p;
}

// The serialized size of `shell`'s graph (toProto with WeightData::HeaderOnly) once each initializer
// gets its tensor's raw_data: each entry's length prefix grows with it (initializers are field 5 of
// the graph: a one-byte tag). Initializers with an `offset` of 0 or more are in external data: their
// headers in `shell` already say so and they get no raw_data.
int64_t graphBytesWithData(const onnx::GraphProto& shell, const Model& m, const std::vector<int64_t>& offset = {}) {
  auto bytes = static_cast<int64_t>(shell.ByteSizeLong());
  int k = 0;
  for (const auto& [name, t] : m.graph.initializers.items()) {
    const bool external = !offset.empty() && offset[static_cast<size_t>(k)] >= 0;
    const size_t h = shell.initializer(k++).ByteSizeLong();
    if (!external) bytes += framedFieldBytes(h + static_cast<size_t>(framedFieldBytes(t.nbytes()))) - framedFieldBytes(h);
  }
  return bytes;
}

// The serialized size of the model `shell` stands for, its graph `graph_bytes` long (the graph is
// field 7 of the model: a one-byte tag).
int64_t modelBytesWithData(const onnx::ModelProto& shell, int64_t graph_bytes) {
  return static_cast<int64_t>(shell.ByteSizeLong()) - framedFieldBytes(shell.graph().ByteSizeLong()) +
         framedFieldBytes(static_cast<size_t>(graph_bytes));
}

// ONNX Runtime's defaults for external data it writes itself (align_threshold,
// allocation_granularity): a tensor of 1 MiB or more starts at a multiple of 64 KiB, which lets it
// map the tensor from the file instead of copying it.
constexpr int64_t kAlignFrom = int64_t{1} << 20;
constexpr int64_t kAlignTo = int64_t{1} << 16;
const char kZeros[kAlignTo] = {};

// A model laid out for writing: its shell (headers only; external initializers with their
// external_data entries), where each initializer's data goes (-1: inline raw_data, else its
// offset in the data file), and the sizes.
struct ModelPlan {
  onnx::ModelProto shell;
  std::vector<int64_t> offset;
  fs::path data_path;
  int64_t data_bytes = 0, graph_bytes = 0, model_bytes = 0;
};

ModelPlan planModel(const Model& m, const fs::path& path, const SaveOptions& opts) {
  ModelPlan p;
  p.shell = toProto(m, WeightData::HeaderOnly, 0);
  p.graph_bytes = graphBytesWithData(p.shell.graph(), m);
  p.model_bytes = modelBytesWithData(p.shell, p.graph_bytes);
  if (!opts.external_data && p.model_bytes <= opts.max_single_file) return p;
  p.data_path = externalDataPath(path);
  const std::string location = p.data_path.filename().string();
  int k = 0;
  for (const auto& [name, t] : m.graph.initializers.items()) {
    onnx::TensorProto& head = *p.shell.mutable_graph()->mutable_initializer(k++);
    const auto n = static_cast<int64_t>(t.nbytes());
    if (n < opts.external_min_bytes || n == 0) {
      p.offset.push_back(-1);
      continue;
    }
    int64_t at = p.data_bytes;
    if (n >= kAlignFrom) at = (at + kAlignTo - 1) / kAlignTo * kAlignTo;
    p.offset.push_back(at);
    p.data_bytes = at + n;
    head.set_data_location(onnx::TensorProto::EXTERNAL);
    for (const auto& [key, value] : {std::pair<const char*, std::string>{"location", location},
                                     {"offset", std::to_string(at)},
                                     {"length", std::to_string(n)}}) {
      auto* e = head.add_external_data();
      e->set_key(key);
      e->set_value(value);
    }
  }
  p.graph_bytes = graphBytesWithData(p.shell.graph(), m, p.offset);
  p.model_bytes = modelBytesWithData(p.shell, p.graph_bytes);
  return p;
}
}  // namespace

onnx::ModelProto modelToProto(const Model& m) { return toProto(m, WeightData::All, 0); }

onnx::ModelProto modelToInferenceProto(const Model& m, int64_t over_bytes) {
  return toProto(m, WeightData::AsInputs, over_bytes);
}

int64_t serializedModelBytes(const Model& m) {
  const onnx::ModelProto shell = toProto(m, WeightData::HeaderOnly, 0);
  return modelBytesWithData(shell, graphBytesWithData(shell.graph(), m));
}

fs::path externalDataPath(const fs::path& path) { return path.parent_path() / (path.filename().string() + ".data"); }

int64_t savedModelBytes(const Model& m, const fs::path& path, const SaveOptions& opts) {
  const ModelPlan p = planModel(m, path, opts);
  return p.model_bytes + p.data_bytes;
}

void checkWritable(const fs::path& path) {
  const fs::path dir = folderOf(path);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    if (fs::exists(dir, ec))
      fail("cannot write '", path.string(), "': '", dir.string(), "' is a file, not a folder; choose another path");
    fail("cannot write '", path.string(), "': folder '", dir.string(), "' does not exist");
  }
  if (fs::is_directory(path, ec)) fail("cannot write '", path.string(), "': it is a folder; give a file name");
  if (::access(dir.c_str(), W_OK) != 0)
    fail("cannot write '", path.string(), "': folder '", dir.string(), "' is not writable (", std::strerror(errno), ")");
  const long name_max = ::pathconf(dir.c_str(), _PC_NAME_MAX);
  const size_t name_len = path.filename().string().size();
  if (name_max > 0 && name_len > static_cast<size_t>(name_max))
    fail("cannot write '", path.string(), "': the file name is ", name_len, " bytes long, over the ", name_max,
         "-byte limit of its file system; give a shorter name");
}

namespace {
// The file a write to `path` must replace: `path`, or where a symbolic link there points to
// (resolved through every link of the chain; a dangling link's target is created).
fs::path writeTarget(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_symlink(fs::symlink_status(path, ec))) return path;
  fs::path target = path;
  for (int hops = 0; hops < 40 && fs::is_symlink(fs::symlink_status(target, ec)); ++hops) {
    const fs::path next = fs::read_symlink(target, ec);
    if (ec) fail("cannot write '", path.string(), "': cannot read the symbolic link: ", ec.message());
    // A relative target is relative to the link's real folder (resolved, not by dropping "..":
    // through a linked folder that pointed elsewhere, and once at the input model).
    const fs::path folder = fs::canonical(fs::absolute(target, ec).parent_path(), ec);
    if (ec) fail("cannot write '", path.string(), "': cannot resolve the folder of the link '", target.string(), "'");
    target = next.is_absolute() ? next : folder / next;
    // /dev/stdout and the like lead to a process's descriptors: an atomic write would replace the
    // file a shell redirected to (a whole log), not write to the stream.
    if (target.lexically_normal().string().rfind("/proc/", 0) == 0)
      fail("cannot write '", path.string(), "': it is a link to a process's open file (", target.string(),
           "); give the path of a regular file");
  }
  if (fs::is_symlink(fs::symlink_status(target, ec))) fail("cannot write '", path.string(), "': too many symbolic links");
  return target.lexically_normal();
}

// Whether `a` and `b` name the same file: the same file on disk where both exist, else the same
// absolute path once the existing part of each is resolved (two outputs not written yet).
bool sameFile(const fs::path& a, const fs::path& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) return fs::equivalent(a, b, ec) && !ec;
  const fs::path ca = fs::weakly_canonical(fs::absolute(a, ec), ec), cb = fs::weakly_canonical(fs::absolute(b, ec), ec);
  return !ec && ca == cb;
}

// Creates and removes a file in `path`'s folder, as the atomic write will: access() does not see
// every reason that fails (a pseudo file system such as /proc accepted root's W_OK, and a run
// then wrote its model and failed on the report).
void probeCreate(const fs::path& path) {
  const fs::path dir = folderOf(path);
  std::string tmpl;
  SignalCleanup guard;
  const int fd = createExclusive((dir / ".lwc-probe-").string(), tmpl, guard);
  if (fd < 0)
    fail("cannot write '", path.string(), "': no file can be created in folder '", dir.string(), "' (",
         std::strerror(errno), "); choose another folder");
  ::close(fd);
  ::unlink(tmpl.c_str());
}
}  // namespace

void failSpecialFile(const std::string& named, const std::string& instead) {
  fail("cannot write ", named, ": it exists and is not a regular file (a device, pipe or other special file, which "
       "writing would replace); ", instead);
}

namespace {
// Whether lwc's data loaders read a file of this name inside a data folder: images, arrays, ONNX
// test data, preprocess.json and labels files.
bool readByDataLoaders(const fs::path& p) {
  std::string ext = p.extension().string(), name = p.filename().string();
  for (auto* s : {&ext, &name})
    std::transform(s->begin(), s->end(), s->begin(), [](unsigned char c) { return char(std::tolower(c)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".npy" || ext == ".npz" || ext == ".pb" ||
         name == "preprocess.json" || name.starts_with("labels");
}
}  // namespace

void checkOutputPaths(const std::vector<NamedPath>& outputs, const std::vector<NamedPath>& inputs) {
  std::error_code ec;
  for (size_t i = 0; i < outputs.size(); ++i) {
    const auto& [what, out] = outputs[i];
    if (out.empty()) continue;
    // A symbolic link is written through: its target is the file written (and checked).
    const fs::path real = writeTarget(out);
    checkWritable(real);
    probeCreate(real);
    const fs::file_status st = fs::status(real, ec);
    if (fs::exists(st) && !fs::is_regular_file(st))
      failSpecialFile("'" + out.string() + "' (" + what + ")", "give the path of a regular file");
    for (const auto& [in_what, in] : inputs) {
      if (in.empty()) continue;
      if (!fs::exists(in, ec)) {
        // A file the run would read if it were there (a data file's preprocess.json or labels
        // beside it): written now, the next run on the same data reads it (a Markdown report
        // named preprocess.json broke it).
        const fs::path want = fs::weakly_canonical(fs::absolute(in, ec), ec);
        if (!ec && want == fs::weakly_canonical(fs::absolute(real, ec), ec) && !ec)
          fail("cannot write '", out.string(), "' (", what, "): the next run would read it as ", in_what, " ('",
               in.string(), "'); choose another path or name");
        ec.clear();
        continue;
      }
      if (sameFile(real, in))
        fail("cannot write '", out.string(), "' (", what, "): it is ", in_what, " ('", in.string(),
             "'), which this run reads; choose another path");
      // A folder the run reads: no file in it, at any depth, is replaced (an image of a class
      // folder), and no new file is made there that the data loaders would read (a report named
      // zz.png broke the image folder for the next run; a second .npy makes an array folder
      // ambiguous). Other new files (a model, a Markdown report) are fine.
      if (fs::is_directory(in, ec)) {
        const fs::path folder = fs::weakly_canonical(fs::absolute(in, ec), ec);
        const fs::path target = fs::weakly_canonical(fs::absolute(real, ec), ec);
        auto [f, t] = std::mismatch(folder.begin(), folder.end(), target.begin(), target.end());
        if (!ec && f == folder.end() && t != target.end()) {
          if (fs::exists(real, ec))
            fail("cannot write '", out.string(), "' (", what, "): it is a file in ", in_what, " ('", in.string(),
                 "'), a folder this run reads; choose another path");
          if (readByDataLoaders(real))
            fail("cannot write '", out.string(), "' (", what, "): a file of that name in ", in_what, " ('", in.string(),
                 "') would be read as data the next time; choose another path or name");
        }
      }
    }
    for (size_t j = 0; j < i; ++j)
      if (!outputs[j].path.empty() && sameFile(real, writeTarget(outputs[j].path)))
        fail("cannot write '", out.string(), "': it is given for both ", outputs[j].what, " and ", what,
             "; give each output its own path");
  }
}

std::string readUserFile(const fs::path& path, const std::string& what) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  // A path the system cannot look up (too long, a loop of links, no permission) is not "not found".
  if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory)
    fail(path.string(), ": cannot access it (", ec.message(), "; expected ", what, ")");
  if (!fs::exists(st)) fail(path.string(), ": not found (expected ", what, ")");
  if (fs::is_directory(st)) fail(path.string(), ": is a folder, expected ", what);
  // A device never ends (lwc info /dev/zero read until memory ran out); a pipe may, so it is read
  // up to protobuf's 2 GiB limit.
  if (fs::is_character_file(st) || fs::is_block_file(st)) fail(path.string(), ": is a device, not a file; expected ", what);
  // protobuf parses at most INT_MAX bytes (a file of exactly 2 GiB was called truncated).
  constexpr size_t kMaxBytes = INT_MAX;
  auto tooLarge = [&] {
    if (what.find("ONNX") != std::string::npos)
      fail(path.string(), ": 2 GiB or larger; lwc reads ONNX files of up to 2 GiB - 1 byte (protobuf's limit): store a ",
           "larger model's weights in an external-data file");
    fail(path.string(), ": 2 GiB or larger; lwc reads JSON files of up to 2 GiB - 1 byte");
  };
  // A regular file is measured before it is read (a 3 GiB file was read whole, then refused).
  if (fs::is_regular_file(st)) {
    const auto size = fs::file_size(path, ec);
    if (!ec && size > kMaxBytes) tooLarge();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path.string(), ": cannot open ", what, ": ", std::strerror(errno));
  std::string text;
  char buf[1 << 16];
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<size_t>(in.gcount()));
    if (text.size() > kMaxBytes) tooLarge();
  }
  if (in.bad()) fail(path.string(), ": cannot read ", what, ": ", std::strerror(errno));
  return text;
}

namespace {
// The process's umask, read from /proc/self/status ("Umask:", Linux 4.7+) without changing it:
// umask() can only be read by setting it, which another thread creating a file would see.
mode_t currentUmask() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Umask:", 0) == 0) return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
  const mode_t m = ::umask(0);
  ::umask(m);
  return m;
}

// Flushes a folder's entries (a rename into it) to disk; file systems that cannot are skipped.
void syncFolder(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}
}  // namespace

int createExclusive(const std::string& prefix, std::string& name, SignalCleanup& guard) {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ (uint64_t(::getpid()) << 32));
  static const char kChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  for (int attempt = 0; attempt < 100; ++attempt) {
    name = prefix;
    for (int k = 0; k < 6; ++k) name += kChars[rng() % (sizeof kChars - 1)];
    // Registered before it exists, so a signal at any moment finds it (unlinking a name not
    // created yet does nothing).
    guard = SignalCleanup(SignalCleanup::Kind::File, name);
    const int fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0) return fd;
    const int err = errno;
    guard.release();  // the name is another's file, or none was made
    if (err != EEXIST) {
      errno = err;
      return -1;
    }
  }
  errno = EEXIST;
  return -1;
}

OutputSet::~OutputSet() {
  for (auto& s : staged_) ::unlink(s.tmp.c_str());
}

void OutputSet::stage(const fs::path& given, std::string_view bytes) { stage(given, std::vector<std::string_view>{bytes}); }

void OutputSet::stage(const fs::path& given, const std::vector<std::string_view>& pieces) {
  // Through a symbolic link to its target: renaming over the link itself replaced the link by a
  // regular file (a link to /dev/null, or root's /dev/stdout) and left its target as it was.
  const fs::path path = writeTarget(given);
  checkWritable(path);
  // Renaming over a device or pipe replaces it with a regular file (lwc exec's outputs, which no
  // other check covered, replaced a device that a link in the output folder pointed to).
  struct stat old {};
  const bool exists = ::stat(path.c_str(), &old) == 0;
  if (exists && !S_ISREG(old.st_mode)) failSpecialFile("'" + given.string() + "'", "give the path of a regular file");
  const fs::path dir = folderOf(path);
  // The temporary name is the file's, shortened where needed to stay within the file system's
  // limit on names (the suffix adds 12 bytes to a name that may be at the limit already).
  const long name_max = ::pathconf(dir.c_str(), _PC_NAME_MAX);
  std::string stem = path.filename().string();
  if (name_max > 12 && stem.size() + 12 > static_cast<size_t>(name_max)) stem.resize(static_cast<size_t>(name_max) - 12);
  Staged st;
  st.target = path;
  const int fd = createExclusive((dir / ("." + stem + ".tmp-")).string(), st.tmp, st.guard);
  if (fd < 0) fail("cannot write '", path.string(), "': ", std::strerror(errno));
  auto cleanup = [&](const char* what) {
    const int err = errno;
    ::close(fd);
    ::unlink(st.tmp.c_str());
    fail("cannot write '", path.string(), "': ", what, ": ", std::strerror(err),
         err == ENOSPC || err == EDQUOT ? " (free some space there, or choose another folder)" : "");
  };
  for (const std::string_view bytes : pieces) {
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t w = ::write(fd, bytes.data() + off, bytes.size() - off);
      if (w < 0) {
        if (errno == EINTR) continue;
        cleanup("write failed");
      }
      off += static_cast<size_t>(w);
    }
  }
  // The mode a plain create would give (0666 less the umask), or the replaced file's own mode:
  // mkstemp's 0600 would hide the file from others, a fixed 0644 ignored both.
  const mode_t mode = exists ? (old.st_mode & 07777) : (0666 & ~currentUmask());
  if (::fchmod(fd, mode) != 0) cleanup("chmod failed");
  if (::fsync(fd) != 0) cleanup("fsync failed");
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(st.tmp.c_str());
    fail("cannot write '", path.string(), "': close failed: ", std::strerror(err));
  }
  staged_.push_back(std::move(st));
}

void OutputSet::commit() {
  const DeferSignals hold;  // all of the renames, or (a signal before this) none
  std::vector<std::string> done;
  for (size_t i = 0; i < staged_.size(); ++i) {
    Staged& s = staged_[i];
    if (::rename(s.tmp.c_str(), s.target.c_str()) != 0) {
      const int err = errno;
      std::string placed;
      for (const auto& d : done) placed += (placed.empty() ? "" : ", ") + d;
      for (size_t j = i; j < staged_.size(); ++j) ::unlink(staged_[j].tmp.c_str());
      staged_.clear();
      fail("cannot write '", s.target.string(), "': rename failed: ", std::strerror(err),
           placed.empty() ? std::string() : "; already written: " + placed);
    }
    s.guard.release();
    done.push_back(s.target.string());
  }
  std::set<fs::path> dirs;
  for (const auto& s : staged_) dirs.insert(folderOf(s.target));
  for (const auto& d : dirs) syncFolder(d);
  staged_.clear();
}

void writeFileAtomic(const fs::path& given, std::string_view bytes) {
  OutputSet out;
  out.stage(given, bytes);
  out.commit();
}

SerializedModel serializeModelFiles(const Model& m, const fs::path& path, const SaveOptions& opts) {
  // modelToProto(m).SerializeAsString() without a second copy of the weights: protobuf writes a
  // message's fields in field-number order, so the file is the model's fields before the graph
  // (1-6), the graph, those after it (8-25); the graph is its nodes and name (1, 2), the
  // initializers (5), the rest (10-15); each initializer its header (dims, type, name: 1, 2, 8),
  // raw_data (9) from the tensor itself, its doc string (12). An initializer in external data is
  // its header alone (doc string, external_data, data_location: 12-14). Unit-tested equal to
  // protobuf's bytes.
  ModelPlan plan = planModel(m, path, opts);
  const bool external = !plan.data_path.empty();
  if (plan.model_bytes > static_cast<int64_t>(INT_MAX)) {
    if (!external) throw InternalError("SaveOptions::max_single_file is over protobuf's 2 GB limit");
    const auto inline_tensors = std::count(plan.offset.begin(), plan.offset.end(), int64_t{-1});
    fail("cannot write '", path.string(), "': even with its weights in '", plan.data_path.string(), "', the model file would be ",
         plan.model_bytes, " bytes, over the 2 GB (", INT_MAX, " bytes) that protobuf allows one ONNX file (its graph and the ",
         inline_tensors, " tensors under ", opts.external_min_bytes, " bytes that stay in it); make it smaller first");
  }
  onnx::ModelProto& shell = plan.shell;
  onnx::GraphProto graph;
  graph.Swap(shell.mutable_graph());
  shell.clear_graph();
  onnx::ModelProto after;  // fields 8-25
  after.mutable_opset_import()->Swap(shell.mutable_opset_import());
  after.mutable_metadata_props()->Swap(shell.mutable_metadata_props());
  after.mutable_training_info()->Swap(shell.mutable_training_info());
  after.mutable_functions()->Swap(shell.mutable_functions());
  google::protobuf::RepeatedPtrField<onnx::TensorProto> inits;
  inits.Swap(graph.mutable_initializer());
  onnx::GraphProto graph_after;  // fields 10-15
  graph_after.set_allocated_doc_string(graph.release_doc_string());
  graph_after.mutable_input()->Swap(graph.mutable_input());
  graph_after.mutable_output()->Swap(graph.mutable_output());
  graph_after.mutable_value_info()->Swap(graph.mutable_value_info());
  graph_after.mutable_quantization_annotation()->Swap(graph.mutable_quantization_annotation());
  graph_after.mutable_sparse_initializer()->Swap(graph.mutable_sparse_initializer());

  SerializedModel r;
  std::string& out = r.model;
  out.reserve(static_cast<size_t>(plan.model_bytes));
  auto field = [&](int number, size_t length) {  // a length-delimited field's tag and length
    uint8_t b[11];
    b[0] = static_cast<uint8_t>((number << 3) | 2);
    const uint8_t* e = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(length, b + 1);
    out.append(reinterpret_cast<const char*>(b), static_cast<size_t>(e - b));
  };
  shell.AppendToString(&out);
  field(7, static_cast<size_t>(plan.graph_bytes));  // ModelProto.graph
  graph.AppendToString(&out);
  int k = 0;
  for (const auto& [name, t] : m.graph.initializers.items()) {
    const int64_t at = external ? plan.offset[static_cast<size_t>(k)] : -1;
    onnx::TensorProto& head = *inits.Mutable(k++);
    const size_t n = t.nbytes();
    if (at >= 0) {
      field(5, head.ByteSizeLong());  // GraphProto.initializer, its data in the data file
      head.AppendToString(&out);
      if (const int64_t pad = at - r.data_bytes; pad > 0) r.data.emplace_back(kZeros, static_cast<size_t>(pad));
      r.data.emplace_back(static_cast<const char*>(t.raw()), n);
      r.data_bytes = at + static_cast<int64_t>(n);
      continue;
    }
    field(5, head.ByteSizeLong() + static_cast<size_t>(framedFieldBytes(n)));  // GraphProto.initializer
    onnx::TensorProto doc;  // field 12, after raw_data
    if (head.has_doc_string()) doc.set_allocated_doc_string(head.release_doc_string());
    head.AppendToString(&out);
    field(9, n);  // TensorProto.raw_data
    out.append(static_cast<const char*>(t.raw()), n);
    doc.AppendToString(&out);
  }
  graph_after.AppendToString(&out);
  after.AppendToString(&out);
  if (static_cast<int64_t>(out.size()) != plan.model_bytes || r.data_bytes != plan.data_bytes)
    throw InternalError("serialised " + std::to_string(out.size()) + " + " + std::to_string(r.data_bytes) + " bytes for " +
                        path.string() + ", counted " + std::to_string(plan.model_bytes) + " + " +
                        std::to_string(plan.data_bytes));
  r.data_path = plan.data_path;
  return r;
}

std::string serializeModel(const Model& m, const fs::path& path) {
  SerializedModel s = serializeModelFiles(m, path, {});
  if (!s.data_path.empty())
    fail("cannot write '", path.string(), "': the model is ", s.totalBytes(),
         " bytes, over the 2 GB that one ONNX file can hold; it needs its weights in an external data file");
  return std::move(s.model);
}

SerializedModel stageModel(OutputSet& out, const Model& m, const fs::path& path, const SaveOptions& opts) {
  SerializedModel s = serializeModelFiles(m, path, opts);
  if (!s.data_path.empty()) out.stage(s.data_path, s.data);
  out.stage(path, s.model);
  s.data.clear();
  return s;
}

void saveModel(const Model& m, const fs::path& path, const SaveOptions& opts) {
  OutputSet out;
  stageModel(out, m, path, opts);
  out.commit();
}

Model parseModelText(std::string_view text, const LoadOptions& opts) {
  onnx::ModelProto p;
  const std::string s(text);
  auto status = onnx::OnnxParser::Parse(p, s.c_str());
  if (!status.IsOK()) fail("cannot parse ONNX text: ", status.ErrorMessage());
  return modelFromOwnedProto(p, {}, "<text model>", opts);
}

}  // namespace lwc
