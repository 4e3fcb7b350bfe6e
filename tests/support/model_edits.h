// Edits of ONNX's backend test models the way broken exporters and hand edits break them, shared by
// tests/conformance/test_rank_variants.cpp (through lwc) and tests/tools/onnx_inference_probe.cpp
// (through ONNX alone). Header-only, ONNX protobuf only.
#pragma once

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace lwc::test {

enum class EditKind {
  Rank,       ///< one graph input declared at another rank (0 to 5)
  Attribute,  ///< one integer attribute (or INTS entry) set out of range
  Dimension,  ///< one input dimension set to 0, 1 or 2^40
};

/// The model.onnx files of libonnx-testdata's node, pytorch-converted and pytorch-operator sets
/// under `root`, sorted within each set; sets that are not there are skipped.
inline std::vector<std::filesystem::path> backendTestModels(
    const std::filesystem::path& root = "/usr/share/libonnx-testdata/data") {
  std::vector<std::filesystem::path> out;
  for (const char* set : {"node", "pytorch-converted", "pytorch-operator"}) {
    if (!std::filesystem::is_directory(root / set)) continue;
    std::vector<std::filesystem::path> models;
    for (const auto& d : std::filesystem::directory_iterator(root / set))
      if (std::filesystem::exists(d.path() / "model.onnx")) models.push_back(d.path() / "model.onnx");
    std::sort(models.begin(), models.end());
    out.insert(out.end(), models.begin(), models.end());
  }
  return out;
}

/// The nodes reading `value`, as "Op:input" entries joined by commas.
inline std::string readersOf(const onnx::GraphProto& g, const std::string& value) {
  std::string out;
  for (const auto& n : g.node())
    for (int k = 0; k < n.input_size(); ++k)
      if (n.input(k) == value) out += (out.empty() ? "" : ",") + n.op_type() + ":" + std::to_string(k);
  return out;
}

/// Calls visit(edited, description) for each edit of `kind` of `m`; `edited` has no value_info (so
/// inference starts from the declarations alone).
inline void forEachEdit(const onnx::ModelProto& m, EditKind kind,
                        const std::function<void(onnx::ModelProto&, const std::string&)>& visit) {
  auto run = [&](onnx::ModelProto& v, const std::string& what) {
    v.mutable_graph()->clear_value_info();
    visit(v, what);
  };
  const onnx::GraphProto& g = m.graph();
  if (kind == EditKind::Attribute) {
    const int64_t values[] = {-1000, -7, -2, -1, 0, 1, 2, 7, 1000, int64_t(1) << 40,
                              std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()};
    for (int n = 0; n < g.node_size(); ++n)
      for (int a = 0; a < g.node(n).attribute_size(); ++a) {
        const onnx::AttributeProto& attr = g.node(n).attribute(a);
        const bool ints = attr.type() == onnx::AttributeProto::INTS && attr.ints_size() > 0;
        if (attr.type() != onnx::AttributeProto::INT && !ints) continue;
        for (const int64_t value : values)
          for (int k = 0; k < (ints ? attr.ints_size() : 1); ++k) {
            onnx::ModelProto v = m;
            auto* edited = v.mutable_graph()->mutable_node(n)->mutable_attribute(a);
            if (ints) edited->set_ints(k, value);
            else edited->set_i(value);
            run(v, "node " + std::to_string(n) + " (" + g.node(n).op_type() + ") attribute " + attr.name() + "[" +
                       std::to_string(k) + "] = " + std::to_string(value));
          }
      }
    return;
  }
  for (int i = 0; i < g.input_size(); ++i) {
    const onnx::ValueInfoProto& input = g.input(i);
    if (!input.type().has_tensor_type()) continue;
    const onnx::TensorShapeProto& original = input.type().tensor_type().shape();
    const std::string name = "input '" + input.name() + "' (read by " + readersOf(g, input.name()) + ")";
    auto shapeOf = [&i](onnx::ModelProto& v) {
      return v.mutable_graph()->mutable_input(i)->mutable_type()->mutable_tensor_type()->mutable_shape();
    };
    if (kind == EditKind::Rank) {
      for (int rank = 0; rank <= 5; ++rank) {
        if (rank == original.dim_size()) continue;
        onnx::ModelProto v = m;
        auto* shape = shapeOf(v);
        shape->clear_dim();
        for (int d = 0; d < rank; ++d) {
          const bool keep = d < original.dim_size() && original.dim(d).has_dim_value();
          shape->add_dim()->set_dim_value(keep ? original.dim(d).dim_value() : 3);
        }
        run(v, name + " rank " + std::to_string(original.dim_size()) + " -> " + std::to_string(rank));
      }
    } else {
      for (int d = 0; d < original.dim_size(); ++d)
        for (const int64_t value : {int64_t(0), int64_t(1), int64_t(1) << 40}) {
          onnx::ModelProto v = m;
          shapeOf(v)->mutable_dim(d)->set_dim_value(value);
          run(v, name + " dimension " + std::to_string(d) + " = " + std::to_string(value));
        }
    }
  }
}

}  // namespace lwc::test
