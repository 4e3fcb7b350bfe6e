#include "lwc/graph.h"

#include <algorithm>
#include <queue>
#include <set>
#include <sstream>
#include <unordered_set>

namespace lwc {

ValueInfo valueInfoOf(const std::string& name, const Tensor& t) {
  ValueInfo v;
  v.name = name;
  v.dtype = t.dtype();
  SymShape s;
  for (int64_t d : t.shape()) s.push_back(Dim{d, {}});
  v.shape = std::move(s);
  return v;
}

bool shapeFits(const SymShape& want, const Shape& got) {
  if (want.size() != got.size()) return false;
  for (size_t i = 0; i < want.size(); ++i)
    if (want[i].known() && want[i].value != got[i]) return false;
  return true;
}

std::string symShapeStr(const SymShape& s) {
  std::ostringstream os;
  os << '[';
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) os << ',';
    if (s[i].known()) os << s[i].value;
    else os << (s[i].param.empty() ? "?" : s[i].param);
  }
  os << ']';
  return os.str();
}

// ---------------------------------------------------------------- Node

const onnx::AttributeProto* Node::attr(std::string_view n) const {
  for (const auto& a : attrs)
    if (a.name() == n) return &a;
  return nullptr;
}

namespace {
[[noreturn]] void badAttr(const Node& node, std::string_view n, const char* want) {
  fail("node ", node.describe(), ": attribute '", n, "' must be ", want);
}
}  // namespace

int64_t Node::attrInt(std::string_view n, int64_t dflt) const {
  const auto* a = attr(n);
  if (!a) return dflt;
  if (a->type() != onnx::AttributeProto::INT && !(a->type() == 0 && a->has_i())) badAttr(*this, n, "an int");
  return a->i();
}
float Node::attrFloat(std::string_view n, float dflt) const {
  const auto* a = attr(n);
  if (!a) return dflt;
  if (a->type() != onnx::AttributeProto::FLOAT && !(a->type() == 0 && a->has_f())) badAttr(*this, n, "a float");
  return a->f();
}
std::string Node::attrString(std::string_view n, const std::string& dflt) const {
  const auto* a = attr(n);
  if (!a) return dflt;
  if (a->type() != onnx::AttributeProto::STRING && !(a->type() == 0 && a->has_s())) badAttr(*this, n, "a string");
  return a->s();
}
std::vector<int64_t> Node::attrInts(std::string_view n, const std::vector<int64_t>& dflt) const {
  if (!attr(n)) return dflt;
  const std::span<const int64_t> v = attrIntsView(n);
  return {v.begin(), v.end()};
}
std::span<const int64_t> Node::attrIntsView(std::string_view n) const {
  const auto* a = attr(n);
  if (!a) return {};
  if (a->type() != onnx::AttributeProto::INTS && a->type() != 0) badAttr(*this, n, "a list of ints");
  return {a->ints().data(), static_cast<size_t>(a->ints().size())};
}
std::vector<float> Node::attrFloats(std::string_view n, const std::vector<float>& dflt) const {
  const auto* a = attr(n);
  if (!a) return dflt;
  if (a->type() != onnx::AttributeProto::FLOATS && a->type() != 0) badAttr(*this, n, "a list of floats");
  return {a->floats().begin(), a->floats().end()};
}

namespace {
onnx::AttributeProto& slot(std::vector<onnx::AttributeProto>& attrs, const std::string& n) {
  for (auto& a : attrs)
    if (a.name() == n) {
      a.Clear();
      a.set_name(n);
      return a;
    }
  attrs.emplace_back().set_name(n);
  return attrs.back();
}
}  // namespace

void Node::setAttr(const std::string& n, int64_t v) {
  auto& a = slot(attrs, n);
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(v);
}
void Node::setAttr(const std::string& n, float v) {
  auto& a = slot(attrs, n);
  a.set_type(onnx::AttributeProto::FLOAT);
  a.set_f(v);
}
void Node::setAttr(const std::string& n, const std::string& v) {
  auto& a = slot(attrs, n);
  a.set_type(onnx::AttributeProto::STRING);
  a.set_s(v);
}
void Node::setAttr(const std::string& n, const std::vector<int64_t>& v) {
  auto& a = slot(attrs, n);
  a.set_type(onnx::AttributeProto::INTS);
  for (auto x : v) a.add_ints(x);
}
void Node::setAttr(const std::string& n, const std::vector<float>& v) {
  auto& a = slot(attrs, n);
  a.set_type(onnx::AttributeProto::FLOATS);
  for (auto x : v) a.add_floats(x);
}
void Node::removeAttr(std::string_view n) {
  attrs.erase(std::remove_if(attrs.begin(), attrs.end(), [&](const auto& a) { return a.name() == n; }), attrs.end());
}

size_t Node::numInputs() const {
  size_t n = inputs.size();
  while (n > 0 && inputs[n - 1].empty()) --n;
  return n;
}

std::string describeNode(std::string_view domain, std::string_view op_type, std::string_view name,
                         const std::string* first_output) {
  std::string s = isDefaultDomain(domain) ? std::string(op_type) : std::string(domain) + "." + std::string(op_type);
  if (!name.empty()) return s + " '" + std::string(name) + "'";
  if (first_output) return s + " (output '" + *first_output + "')";
  return s;
}

std::string Node::describe() const {
  return describeNode(domain, op_type, name, outputs.empty() ? nullptr : &outputs[0]);
}

// ---------------------------------------------------------------- InitializerTable

const Tensor* InitializerTable::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &items_[it->second].second;
}
Tensor* InitializerTable::find(const std::string& name) {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &items_[it->second].second;
}
const Tensor& InitializerTable::at(const std::string& name) const {
  const Tensor* t = find(name);
  LWC_CHECK(t, "no initializer '", name, "'");
  return *t;
}
void InitializerTable::set(const std::string& name, Tensor t) {
  auto it = index_.find(name);
  if (it != index_.end()) {
    items_[it->second].second = std::move(t);
    return;
  }
  index_[name] = items_.size();
  items_.emplace_back(name, std::move(t));
}
void InitializerTable::erase(const std::string& name) {
  if (!index_.count(name)) return;
  items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(index_[name]));
  docs_.erase(name);
  reindex();
}
void InitializerTable::reindex() {
  index_.clear();
  for (size_t i = 0; i < items_.size(); ++i) index_[items_[i].first] = i;
}

// ---------------------------------------------------------------- Graph

std::vector<const ValueInfo*> Graph::realInputs() const {
  std::vector<const ValueInfo*> r;
  for (const auto& v : inputs)
    if (!initializers.contains(v.name)) r.push_back(&v);
  return r;
}

const ValueInfo* Graph::findValueInfo(const std::string& n) const {
  for (const auto* list : {&inputs, &outputs, &value_info})
    for (const auto& v : *list)
      if (v.name == n) return &v;
  return nullptr;
}

bool Graph::isGraphOutput(const std::string& n) const {
  return std::any_of(outputs.begin(), outputs.end(), [&](const auto& v) { return v.name == n; });
}
bool Graph::isGraphInput(const std::string& n) const {
  return std::any_of(inputs.begin(), inputs.end(), [&](const auto& v) { return v.name == n; });
}

namespace {
// Every name a subgraph (and the subgraphs inside it) defines or reads: a new outer value must not
// take one, or the branch's own value of that name would shadow it (ONNX's checker refuses the file).
void collectSubgraphNames(const onnx::GraphProto& g, std::unordered_set<std::string>& used, int depth) {
  if (depth > 64) return;
  for (const auto& n : g.node()) {
    used.insert(n.name());
    used.insert(n.input().begin(), n.input().end());
    used.insert(n.output().begin(), n.output().end());
    for (const auto& a : n.attribute()) {
      if (a.has_g()) collectSubgraphNames(a.g(), used, depth + 1);
      for (const auto& sg : a.graphs()) collectSubgraphNames(sg, used, depth + 1);
    }
  }
  for (const auto& t : g.initializer()) used.insert(t.name());
  for (const auto* list : {&g.input(), &g.output(), &g.value_info()})
    for (const auto& v : *list) used.insert(v.name());
}
}  // namespace

std::unordered_set<std::string> Graph::usedNames() const {
  std::unordered_set<std::string> used;
  for (const auto& n : nodes) {
    used.insert(n.name);
    used.insert(n.inputs.begin(), n.inputs.end());
    used.insert(n.outputs.begin(), n.outputs.end());
    for (const auto& a : n.attrs) {
      if (a.has_g()) collectSubgraphNames(a.g(), used, 1);
      for (const auto& sg : a.graphs()) collectSubgraphNames(sg, used, 1);
    }
  }
  for (const auto& [k, v] : initializers.items()) used.insert(k);
  for (const auto* list : {&inputs, &outputs, &value_info})
    for (const auto& v : *list) used.insert(v.name);
  return used;
}

std::string Graph::uniqueName(const std::string& base) const {
  std::unordered_set<std::string> used = usedNames();
  return claimName(used, base);
}

std::string claimName(std::unordered_set<std::string>& used, const std::string& base) {
  std::string c = base;
  for (int i = 1; used.count(c); ++i) c = base + "_" + std::to_string(i);
  used.insert(c);
  return c;
}

// ---------------------------------------------------------------- Model

bool isDefaultDomain(std::string_view domain) { return domain.empty() || domain == "ai.onnx"; }
std::string normalizedDomain(std::string_view domain) { return isDefaultDomain(domain) ? std::string() : std::string(domain); }

const onnx::AttributeProto* findAttribute(const onnx::NodeProto& n, std::string_view name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

int64_t Model::opsetFor(std::string_view d) const {
  const bool dflt = isDefaultDomain(d);
  for (const auto& o : opset_imports) {
    if ((dflt && isDefaultDomain(o.domain)) || o.domain == d) return o.version;
  }
  return 0;
}

void Model::setOpset(const std::string& d, int64_t v) {
  for (auto& o : opset_imports)
    if (o.domain == d) {
      o.version = v;
      return;
    }
  opset_imports.push_back({d, v});
}

std::string Model::label() const {
  std::string l = source.empty() ? std::string("<model>") : source.string();
  if (!stage.empty()) l += " as changed by " + stage;
  return l;
}

// ---------------------------------------------------------------- analysis helpers

namespace {
void collectSubgraphReads(const onnx::GraphProto& g, std::set<std::string>& outer_reads) {
  std::unordered_set<std::string> local;
  for (const auto& i : g.input()) local.insert(i.name());
  for (const auto& i : g.initializer()) local.insert(i.name());
  for (const auto& n : g.node())
    for (const auto& o : n.output()) local.insert(o);
  for (const auto& n : g.node()) {
    for (const auto& i : n.input())
      if (!i.empty() && !local.count(i)) outer_reads.insert(i);
    for (const auto& a : n.attribute()) {
      std::set<std::string> inner;
      if (a.has_g()) collectSubgraphReads(a.g(), inner);
      for (const auto& sg : a.graphs()) collectSubgraphReads(sg, inner);
      for (const auto& r : inner)
        if (!local.count(r)) outer_reads.insert(r);
    }
  }
  for (const auto& o : g.output())
    if (!local.count(o.name())) outer_reads.insert(o.name());
}
}  // namespace

std::vector<std::string> implicitInputs(const Node& n) {
  std::set<std::string> reads;
  for (const auto& a : n.attrs) {
    if (a.has_g()) collectSubgraphReads(a.g(), reads);
    for (const auto& g : a.graphs()) collectSubgraphReads(g, reads);
  }
  return {reads.begin(), reads.end()};
}

GraphIndex::GraphIndex(const Graph& g) {
  for (int i = 0; i < static_cast<int>(g.nodes.size()); ++i) {
    const Node& n = g.nodes[i];
    for (const auto& o : n.outputs)
      if (!o.empty()) producer_[o] = i;
    for (const auto& in : n.inputs)
      if (!in.empty()) consumers_[in].push_back(i);
    for (const auto& in : implicitInputs(n)) consumers_[in].push_back(i);
  }
}

int GraphIndex::producer(const std::string& v) const {
  auto it = producer_.find(v);
  return it == producer_.end() ? -1 : it->second;
}

const std::vector<int>& GraphIndex::consumers(const std::string& v) const {
  auto it = consumers_.find(v);
  return it == consumers_.end() ? none_ : it->second;
}

void topoSort(Graph& g, const std::string& label) {
  const size_t n = g.nodes.size();
  std::unordered_map<std::string, size_t> producer;
  for (size_t i = 0; i < n; ++i)
    for (const auto& o : g.nodes[i].outputs)
      if (!o.empty()) producer[o] = i;
  std::vector<std::vector<size_t>> succ(n);
  std::vector<size_t> indeg(n, 0);
  for (size_t i = 0; i < n; ++i) {
    std::vector<std::string> reads = g.nodes[i].inputs;
    for (auto& r : implicitInputs(g.nodes[i])) reads.push_back(std::move(r));
    std::unordered_set<size_t> preds;
    for (const auto& in : reads) {
      if (in.empty()) continue;
      auto it = producer.find(in);
      if (it != producer.end()) preds.insert(it->second);
    }
    for (size_t p : preds) {
      succ[p].push_back(i);
      ++indeg[i];
    }
  }
  // Kahn's algorithm with a min-heap on the original position: stable for already-sorted graphs.
  std::priority_queue<size_t, std::vector<size_t>, std::greater<>> ready;
  for (size_t i = 0; i < n; ++i)
    if (indeg[i] == 0) ready.push(i);
  std::vector<size_t> order;
  order.reserve(n);
  while (!ready.empty()) {
    size_t i = ready.top();
    ready.pop();
    order.push_back(i);
    for (size_t s : succ[i])
      if (--indeg[s] == 0) ready.push(s);
  }
  if (order.size() != n) {
    for (size_t i = 0; i < n; ++i)
      if (indeg[i] > 0)
        fail(label, ": graph has a cycle through node ", g.nodes[i].describe(),
             "; ONNX graphs must be acyclic (use Loop/Scan for recurrence)");
  }
  bool same = true;
  for (size_t i = 0; i < n; ++i) same = same && order[i] == i;
  if (same) return;
  std::vector<Node> sorted;
  sorted.reserve(n);
  for (size_t i : order) sorted.push_back(std::move(g.nodes[i]));
  g.nodes = std::move(sorted);
}

void validateGraph(const Graph& g, const std::string& label) {
  std::unordered_set<std::string> available;
  for (const auto& v : g.inputs) available.insert(v.name);
  for (const auto& [k, t] : g.initializers.items()) available.insert(k);
  std::unordered_set<std::string> produced;
  for (const auto& n : g.nodes)
    for (const auto& o : n.outputs) {
      if (o.empty()) continue;
      if (!produced.insert(o).second || g.isGraphInput(o))
        fail(label, ": value '", o, "' is produced more than once (again by node ", n.describe(),
             "); every value must have a single producer");
      available.insert(o);
    }
  for (const auto& n : g.nodes) {
    if (n.op_type.empty()) fail(label, ": a node has no op_type (node '", n.name, "')");
    for (const auto& in : n.inputs)
      if (!in.empty() && !available.count(in))
        fail(label, ": node ", n.describe(), " reads '", in,
             "', which no node, graph input or initializer produces; the model is incomplete or corrupt");
    for (const auto& in : implicitInputs(n))
      if (!available.count(in))
        fail(label, ": a subgraph of node ", n.describe(), " reads '", in, "', which nothing produces");
  }
  for (const auto& o : g.outputs)
    if (!available.count(o.name))
      fail(label, ": graph output '", o.name, "' is not produced by any node, input or initializer");
}

}  // namespace lwc
