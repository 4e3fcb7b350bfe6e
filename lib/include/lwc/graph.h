// lwc's mutable graph IR, shared by the passes and the engine.
//
// The IR keeps what passes and the engine work on in plain C++ form (nodes with named inputs and
// outputs, typed values, initializers as Tensors) and keeps everything else in ONNX's own protobuf
// form (attributes, including subgraphs; functions; non-tensor types), so that whatever lwc does not
// touch survives a load -> save round trip unchanged.
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "lwc/tensor.h"

namespace lwc {

/// One dimension of a value's shape: a known size, a named symbol (dim_param), or unknown.
struct Dim {
  int64_t value = -1;  ///< >= 0 when known
  std::string param;   ///< symbol name when value < 0 (may be empty: unknown)
  bool known() const { return value >= 0; }
  bool operator==(const Dim&) const = default;
};
using SymShape = std::vector<Dim>;
std::string symShapeStr(const SymShape& s);
/// Whether a concrete shape fits a declared one: the same rank, and every known dimension equal.
bool shapeFits(const SymShape& want, const Shape& got);

/// Name and type of a graph input/output or an intermediate value.
struct ValueInfo {
  std::string name;
  DType dtype = DType::Undefined;
  std::optional<SymShape> shape;  ///< nullopt: rank unknown
  std::string doc_string;
  /// Set for types other than dense tensors (sequence, map, optional, sparse); then dtype/shape are unused.
  std::optional<onnx::TypeProto> other_type;
  /// Tensor elem type as stored in the file when it is one lwc cannot represent (e.g. string).
  int raw_elem_type = 0;
};

/// The ValueInfo of a tensor value `name` with t's dtype and (fully known) shape.
ValueInfo valueInfoOf(const std::string& name, const Tensor& t);

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;  ///< "" is the default ONNX domain ("ai.onnx")
  std::vector<std::string> inputs;   ///< "" marks an omitted optional input
  std::vector<std::string> outputs;  ///< "" marks an omitted optional output
  std::vector<onnx::AttributeProto> attrs;
  std::string doc_string;

  const onnx::AttributeProto* attr(std::string_view n) const;
  bool hasAttr(std::string_view n) const { return attr(n) != nullptr; }
  int64_t attrInt(std::string_view n, int64_t dflt) const;
  float attrFloat(std::string_view n, float dflt) const;
  std::string attrString(std::string_view n, const std::string& dflt = "") const;
  std::vector<int64_t> attrInts(std::string_view n, const std::vector<int64_t>& dflt = {}) const;
  /// attrInts without the copy, for kernels that read it on every call: the attribute's own values
  /// (valid while the node is), empty when the attribute is absent.
  std::span<const int64_t> attrIntsView(std::string_view n) const;
  std::vector<float> attrFloats(std::string_view n, const std::vector<float>& dflt = {}) const;
  void setAttr(const std::string& n, int64_t v);
  void setAttr(const std::string& n, float v);
  void setAttr(const std::string& n, const std::string& v);
  void setAttr(const std::string& n, const std::vector<int64_t>& v);
  void setAttr(const std::string& n, const std::vector<float>& v);
  void removeAttr(std::string_view n);
  /// Number of inputs that are present (non-empty names), counting from the front.
  size_t numInputs() const;
  bool hasInput(size_t i) const { return i < inputs.size() && !inputs[i].empty(); }
  /// "Conv 'name'", or "Conv (output 'y')" for an unnamed node, for messages.
  std::string describe() const;
};

/// Node::describe's text from the parts, for nodes still in protobuf form (subgraphs);
/// first_output is null when the node has no outputs.
std::string describeNode(std::string_view domain, std::string_view op_type, std::string_view name,
                         const std::string* first_output);

/// Initializers in file order with O(1) lookup by name.
class InitializerTable {
 public:
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const Tensor* find(const std::string& name) const;
  Tensor* find(const std::string& name);
  const Tensor& at(const std::string& name) const;
  /// Inserts or replaces.
  void set(const std::string& name, Tensor t);
  void erase(const std::string& name);
  size_t size() const { return items_.size(); }
  const std::vector<std::pair<std::string, Tensor>>& items() const { return items_; }
  std::vector<std::pair<std::string, Tensor>>& items() { return items_; }
  void clear() { items_.clear(); index_.clear(); }
  std::unordered_map<std::string, std::string>& docStrings() { return docs_; }
  const std::unordered_map<std::string, std::string>& docStrings() const { return docs_; }

 private:
  void reindex();
  std::vector<std::pair<std::string, Tensor>> items_;
  std::unordered_map<std::string, size_t> index_;
  std::unordered_map<std::string, std::string> docs_;
};

class Graph {
 public:
  std::string name;
  std::string doc_string;
  std::vector<Node> nodes;
  std::vector<ValueInfo> inputs;
  std::vector<ValueInfo> outputs;
  std::vector<ValueInfo> value_info;
  InitializerTable initializers;
  /// Kept as protobuf: lwc does not use them but must not lose them. (Sparse initializers are
  /// made dense initializers when a model is read.)
  std::vector<onnx::TensorAnnotation> quantization_annotation;

  /// Inputs that are not initializers (what a user feeds).
  std::vector<const ValueInfo*> realInputs() const;
  const ValueInfo* findValueInfo(const std::string& name) const;  ///< inputs, outputs, value_info
  bool isGraphOutput(const std::string& name) const;
  bool isGraphInput(const std::string& name) const;
  /// A name not used by any value, node or initializer, derived from `base`.
  std::string uniqueName(const std::string& base) const;
  /// Every name a node, value, initializer or declaration uses, inside subgraphs too (for many fresh
  /// names at once: claimName).
  std::unordered_set<std::string> usedNames() const;
};

/// `base`, or the first of base_1, base_2, ... not in `used`; added to `used`.
std::string claimName(std::unordered_set<std::string>& used, const std::string& base);

struct OpsetImport {
  std::string domain;
  int64_t version = 0;
};

class Model {
 public:
  int64_t ir_version = 8;
  std::vector<OpsetImport> opset_imports;
  std::string producer_name;
  std::string producer_version;
  std::string domain;
  int64_t model_version = 0;
  std::string doc_string;
  std::vector<std::pair<std::string, std::string>> metadata_props;
  std::vector<onnx::FunctionProto> functions;
  std::vector<onnx::TrainingInfoProto> training_info;
  Graph graph;
  /// File the model was loaded from (empty for models built in memory); used in messages.
  std::filesystem::path source;
  /// External data files the initializers were read from (for "bytes on disk").
  std::vector<std::filesystem::path> external_data_files;
  /// What reading the file changed (a newer opset or IR version lowered: lwc/opset_lowering.h),
  /// one line each; normalizeModel hands them to the commands, which print them as warnings.
  std::vector<std::string> load_notes;
  /// The last pipeline pass that changed the model ("pass 2 (quantize_dynamic)"), empty before
  /// the first: messages about the model then say it is no longer the file as read.
  std::string stage;

  /// Opset version imported for a domain ("" and "ai.onnx" are the same), 0 if not imported.
  int64_t opsetFor(std::string_view domain) const;
  void setOpset(const std::string& domain, int64_t version);
  /// Name for messages: the file name, or "<model>", and "as changed by <stage>" after a pass.
  std::string label() const;
};

/// Producer and consumers of every value name, built on demand; rebuild after edits.
class GraphIndex {
 public:
  explicit GraphIndex(const Graph& g);
  /// Index of the node producing `value`, or -1 (graph input, initializer or unknown).
  int producer(const std::string& value) const;
  /// Nodes reading `value` (a node reading it twice appears twice); includes reads from subgraphs.
  const std::vector<int>& consumers(const std::string& value) const;
  size_t numConsumers(const std::string& value) const { return consumers(value).size(); }

 private:
  std::unordered_map<std::string, int> producer_;
  std::unordered_map<std::string, std::vector<int>> consumers_;
  std::vector<int> none_;
};

/// True for the default ONNX domain, written "" or "ai.onnx".
bool isDefaultDomain(std::string_view domain);
/// The domain as lwc stores it: "" for the default domain (whether written "" or "ai.onnx").
std::string normalizedDomain(std::string_view domain);

/// The attribute `name` of a node still in protobuf form (subgraph and function-body nodes), or null.
const onnx::AttributeProto* findAttribute(const onnx::NodeProto& n, std::string_view name);

/// Outer-scope names a node's subgraph attributes read (their implicit inputs).
std::vector<std::string> implicitInputs(const Node& n);

/// Reorders nodes topologically (stable: keeps the given order where dependencies allow).
/// Throws lwc::Error naming a node on the cycle if there is one.
void topoSort(Graph& g, const std::string& label = "<model>");

/// Structural checks: every node input is produced by some node, graph input or initializer;
/// no value is produced twice; graph outputs are produced. Throws lwc::Error naming the node/value.
void validateGraph(const Graph& g, const std::string& label = "<model>");

}  // namespace lwc
