#include "lwc/model_fixups.h"

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <onnx/version_converter/convert.h>

#include "lwc/graph.h"
#include "lwc/model_io.h"
#include "lwc/status.h"

namespace lwc {
namespace {

std::string functionKey(const std::string& domain, const std::string& name) { return normalizedDomain(domain) + '\n' + name; }
std::string functionLabel(const onnx::FunctionProto& f) {
  return f.domain().empty() ? f.name() : f.domain() + "." + f.name();
}

bool hasSubgraph(const onnx::NodeProto& n) {
  return std::any_of(n.attribute().begin(), n.attribute().end(),
                     [](const onnx::AttributeProto& a) { return a.has_g() || a.graphs_size() > 0; });
}

}  // namespace

std::vector<std::string> inlineLocalFunctions(Model& m) {
  if (m.functions.empty()) return {};
  const std::string label = m.label();
  std::map<std::string, const onnx::FunctionProto*> fns;
  for (const auto& f : m.functions) fns[functionKey(f.domain(), f.name())] = &f;
  std::set<std::string> fn_domains;
  for (const auto& f : m.functions) fn_domains.insert(normalizedDomain(f.domain()));

  Graph& g = m.graph;
  std::unordered_set<std::string> used = g.usedNames();
  std::map<std::string, int> calls;
  std::vector<Node> out;
  std::vector<std::string> stack;
  std::function<void(const Node&)> expand = [&](const Node& call) {
    const auto it = fns.find(functionKey(call.domain, call.op_type));
    if (it == fns.end()) {
      out.push_back(call);
      return;
    }
    const onnx::FunctionProto& f = *it->second;
    if (std::find(stack.begin(), stack.end(), it->first) != stack.end())
      fail(label, ": model-local function '", functionLabel(f), "' calls itself (node ", call.describe(),
           "); lwc cannot inline recursion: export the model without functions");
    for (const auto& o : f.opset_import()) {
      const std::string d = normalizedDomain(o.domain());
      if (fn_domains.count(d)) continue;  // the domain of local functions: calls, not operators
      const int64_t mine = m.opsetFor(d);
      if (mine == 0) {
        m.setOpset(d, o.version());
      } else if (mine != o.version()) {
        fail(label, ": model-local function '", functionLabel(f), "' imports opset ", o.version(), " of domain '",
             d.empty() ? "ai.onnx" : d, "' and the model opset ", mine,
             "; lwc inlines functions only at the model's opset: export the model again with one opset");
      }
    }
    ++calls[it->first];
    const std::string prefix = call.name.empty() ? claimName(used, f.name()) : call.name;
    std::unordered_map<std::string, std::string> rename;
    for (int i = 0; i < f.input_size(); ++i)
      rename[f.input(i)] = static_cast<size_t>(i) < call.inputs.size() ? call.inputs[i] : "";
    for (int i = 0; i < f.output_size(); ++i)
      rename[f.output(i)] = static_cast<size_t>(i) < call.outputs.size() && !call.outputs[i].empty()
                                ? call.outputs[i]
                                : claimName(used, prefix + "/" + f.output(i));
    const auto map = [&](const std::string& v) -> std::string {
      if (v.empty()) return v;
      const auto r = rename.find(v);
      if (r != rename.end()) return r->second;
      return rename[v] = claimName(used, prefix + "/" + v);
    };
    stack.push_back(it->first);
    for (int k = 0; k < f.node_size(); ++k) {
      const onnx::NodeProto& fn = f.node(k);
      if (hasSubgraph(fn))
        fail(label, ": model-local function '", functionLabel(f), "' has a ", fn.op_type(),
             " node with a subgraph; lwc cannot inline that: export the model without functions");
      Node n;
      n.name = claimName(used, prefix + "/" + (fn.name().empty() ? fn.op_type() + "_" + std::to_string(k) : fn.name()));
      n.op_type = fn.op_type();
      n.domain = normalizedDomain(fn.domain());
      n.doc_string = fn.doc_string();
      for (const auto& v : fn.input()) n.inputs.push_back(map(v));
      for (const auto& v : fn.output()) n.outputs.push_back(map(v));
      for (const auto& a : fn.attribute()) {
        if (a.ref_attr_name().empty()) {
          n.attrs.push_back(a);
          continue;
        }
        // A reference to the call's attribute; one the call does not set is left out, so the
        // operator's default applies.
        const onnx::AttributeProto* given = call.attr(a.ref_attr_name());
        if (!given) continue;
        onnx::AttributeProto copy = *given;
        copy.set_name(a.name());
        n.attrs.push_back(std::move(copy));
      }
      expand(n);
    }
    stack.pop_back();
  };
  for (const auto& n : g.nodes) expand(n);
  if (calls.empty()) return {};
  g.nodes = std::move(out);

  std::vector<std::string> lines;
  for (const auto& [key, count] : calls)
    lines.push_back("lwc inlines model-local function '" + functionLabel(*fns.at(key)) + "' (" + std::to_string(count) +
                    (count == 1 ? " call" : " calls") + "): its nodes replace the calls here and in the model lwc writes");
  // A function is dropped only where nothing calls it any more: a call inside a subgraph (an If
  // branch; not inlined) or in a function that stays keeps it, with its domain's import (the
  // model failed ONNX's checker: "No opset import for domain 'local'").
  std::set<std::string> still, called, visited;
  std::function<void(const onnx::NodeProto&)> visitProto;
  auto visitAttrs = [&](const auto& attrs) {
    for (const auto& a : attrs) {
      if (a.has_g())
        for (const auto& sn : a.g().node()) visitProto(sn);
      for (const auto& sg : a.graphs())
        for (const auto& sn : sg.node()) visitProto(sn);
    }
  };
  visitProto = [&](const onnx::NodeProto& n) {
    still.insert(normalizedDomain(n.domain()));
    called.insert(functionKey(n.domain(), n.op_type()));
    visitAttrs(n.attribute());
  };
  for (const auto& n : g.nodes) {
    still.insert(normalizedDomain(n.domain));
    visitAttrs(n.attrs);
  }
  for (bool grew = true; grew;) {  // functions kept call others in turn
    grew = false;
    for (const auto& f : m.functions) {
      const std::string key = functionKey(f.domain(), f.name());
      if (calls.count(key) && !called.count(key)) continue;
      if (!visited.insert(key).second) continue;
      grew = true;
      for (const auto& fn : f.node()) visitProto(fn);
    }
  }
  std::erase_if(m.functions, [&](const onnx::FunctionProto& f) {
    const std::string key = functionKey(f.domain(), f.name());
    return calls.count(key) && !called.count(key);
  });
  for (const auto& f : m.functions) still.insert(normalizedDomain(f.domain()));
  std::erase_if(m.opset_imports, [&](const OpsetImport& o) {
    const std::string d = normalizedDomain(o.domain);
    return fn_domains.count(d) && !still.count(d);
  });
  topoSort(g, label);
  return lines;
}

std::vector<std::string> initializerInputsToConstants(Model& m) {
  Graph& g = m.graph;
  std::vector<std::string> names;
  std::erase_if(g.inputs, [&](const ValueInfo& v) {
    if (!g.initializers.contains(v.name)) return false;
    names.push_back(v.name);
    return true;
  });
  if (names.empty()) return {};
  const bool one = names.size() == 1;
  return {std::to_string(names.size()) + (one ? " initializer is" : " initializers are") + " also listed as graph " +
          (one ? "input" : "inputs") + " (e.g. '" + names.front() +
          "', as torch.onnx.export writes with keep_initializers_as_inputs=True): lwc treats " + (one ? "it" : "them") +
          " as constant weights, and a model lwc writes lists only the other inputs"};
}

std::vector<std::string> makeNodeNamesUnique(Model& m) {
  Graph& g = m.graph;
  std::unordered_map<std::string, int> count;
  for (const auto& n : g.nodes)
    if (!n.name.empty()) ++count[n.name];
  std::vector<std::string> shared;  // in node order, for a deterministic message
  for (const auto& n : g.nodes)
    if (count[n.name] > 1 && std::find(shared.begin(), shared.end(), n.name) == shared.end()) shared.push_back(n.name);
  if (shared.empty()) return {};
  std::unordered_set<std::string> used;
  for (const auto& n : g.nodes) used.insert(n.name);
  std::unordered_set<std::string> seen;
  std::string first_renamed;  // the name lwc gave the first repeat, as the message's example
  for (auto& n : g.nodes)
    if (!n.name.empty() && !seen.insert(n.name).second) {
      const std::string was = n.name;
      n.name = claimName(used, n.name);
      if (first_renamed.empty()) first_renamed = "'" + was + "' -> '" + n.name + "'";
    }
  std::string examples;
  for (size_t i = 0; i < shared.size() && i < 3; ++i)
    examples += (i ? ", '" : "'") + shared[i] + "' by " + std::to_string(count[shared[i]]);
  if (shared.size() > 3) examples += ", ...";
  return {std::to_string(shared.size()) + (shared.size() == 1 ? " node name is" : " node names are") +
          " shared by several nodes (" + examples + "); lwc renames the repeats (" + first_renamed + ", ...), " +
          "since ONNX Runtime refuses a model with duplicate node names"};
}

std::string convertOpset(Model& m, int64_t target) {
  const int64_t from = m.opsetFor("");
  if (from == target) return "";
  try {
    const onnx::ModelProto converted =
        onnx::version_conversion::ConvertVersion(modelToProto(m), static_cast<int>(target));
    Model c = modelFromProto(converted, ".", m.label());
    if (c.opsetFor("") != target) return "it left the opset at " + std::to_string(c.opsetFor(""));
    // Upsample-9 and Resize-10 map output pixels to input pixels as x / scale ("asymmetric") and
    // pick the nearest one by floor; Resize-11 defaults to half_pixel and round_prefer_floor. The
    // converter of Debian's ONNX adds neither attribute, so a bilinear upsampling at opset 9 or 10
    // computed something else after conversion (6 dB against the original). Set both here.
    // Every Resize of a model from before opset 11 was an Upsample or a Resize-10 (the converter
    // renames some outputs, so they are found by kind, not by name).
    if (from < 11 && target >= 11)
      for (auto& n : c.graph.nodes)
        if (n.domain.empty() && n.op_type == "Resize") {
          if (!n.hasAttr("coordinate_transformation_mode"))
            n.setAttr("coordinate_transformation_mode", std::string("asymmetric"));
          if (n.attrString("mode", "nearest") == "nearest" && !n.hasAttr("nearest_mode"))
            n.setAttr("nearest_mode", std::string("floor"));
        }
    c.source = m.source;
    c.external_data_files = m.external_data_files;
    m = std::move(c);
    return "";
  } catch (const std::exception& e) {
    std::string why = e.what();
    if (const size_t nl = why.find('\n'); nl != std::string::npos) why.resize(nl);
    return why.size() > 200 ? why.substr(0, 200) + "..." : why;
  }
}

std::vector<std::string> normalizeModel(Model& m) {
  std::vector<std::string> lines = std::move(m.load_notes);
  m.load_notes.clear();
  for (auto& s : inlineLocalFunctions(m)) lines.push_back(std::move(s));
  for (auto* step : {&initializerInputsToConstants, &makeNodeNamesUnique})
    for (auto& s : (*step)(m)) lines.push_back(std::move(s));
  return lines;
}

}  // namespace lwc
