// ONNX's backend test models (node, pytorch-converted, pytorch-operator) edited the way broken
// exporters and hand edits break them: one graph input re-declared at another rank (0 to 5), one
// integer attribute set out of range, or one input dimension set to 0, 1 or 2^40. Each edit goes through what every lwc command does first:
// model building, lwc's shape inference (with and without a batch size), the analysis `lwc info`
// prints, and the input checks (ONNX's checker and strict shape inference). Each must answer or
// throw lwc::Error. ONNX 1.12's inference functions index dimensions and divide by attributes
// without checking them in several ops, and loop or allocate per unit of a dimension in others
// (guardOnnxInference lists them): a crash there ends this test, as it ended every lwc command on
// such a model; a hang or an allocation of 2^40 protobuf messages times it out or gets it killed.
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <vector>

#include "lwc/analysis.h"
#include "lwc/model_io.h"
#include "lwc/pipeline.h"
#include "lwc/shape_inference.h"
#include "lwc/status.h"

using namespace lwc;
namespace fs = std::filesystem;

namespace {

struct Tally {
  int variants = 0, refused = 0;
};

// Calls `edit` with each backend test model (parsed) and its path.
void forEachModel(const std::function<void(const onnx::ModelProto&, const fs::path&)>& edit) {
  for (const char* set : {"node", "pytorch-converted", "pytorch-operator"}) {
    const fs::path root = fs::path("/usr/share/libonnx-testdata/data") / set;
    REQUIRE(fs::is_directory(root));
    std::vector<fs::path> models;
    for (const auto& d : fs::directory_iterator(root))
      if (fs::exists(d.path() / "model.onnx")) models.push_back(d.path() / "model.onnx");
    std::sort(models.begin(), models.end());
    for (const fs::path& file : models) {
      onnx::ModelProto proto;
      std::ifstream in(file, std::ios::binary);
      REQUIRE(proto.ParseFromIstream(&in));
      edit(proto, file);
    }
  }
}

// What every command does first, on the edited model: an answer or lwc::Error, nothing else.
void readAsLwcDoes(onnx::ModelProto& v, const fs::path& file, const std::string& what, Tally& t) {
  v.mutable_graph()->clear_value_info();
  ++t.variants;
  try {
    const Model m = modelFromProto(v, file.parent_path(), file.string());
    (void)inferShapes(m);
    ShapeOptions batch;
    batch.batch = 2;
    (void)inferShapes(m, batch);
    AnalyzeOptions a;
    a.batch = 2;
    (void)analyzeModel(m, a);
    if (!inputModelProblem(m).empty()) ++t.refused;
  } catch (const Error&) {
    ++t.refused;
  } catch (const std::exception& e) {
    FAIL(what << ": " << e.what());
  }
}

}  // namespace

TEST_CASE("backend test models with an input declared at another rank get answers or lwc errors",
          "[conformance][robustness]") {
  Tally t;
  forEachModel([&](const onnx::ModelProto& proto, const fs::path& file) {
    for (int i = 0; i < proto.graph().input_size(); ++i) {
      const onnx::ValueInfoProto& input = proto.graph().input(i);
      if (!input.type().has_tensor_type()) continue;
      const onnx::TensorShapeProto& original = input.type().tensor_type().shape();
      for (int rank = 0; rank <= 5; ++rank) {
        if (rank == original.dim_size()) continue;
        onnx::ModelProto v = proto;
        auto* shape = v.mutable_graph()->mutable_input(i)->mutable_type()->mutable_tensor_type()->mutable_shape();
        shape->clear_dim();
        for (int d = 0; d < rank; ++d) {
          const bool keep = d < original.dim_size() && original.dim(d).has_dim_value();
          shape->add_dim()->set_dim_value(keep ? original.dim(d).dim_value() : 3);
        }
        readAsLwcDoes(v, file,
                      file.parent_path().filename().string() + ", input '" + input.name() + "' at rank " +
                          std::to_string(rank),
                      t);
      }
    }
  });
  INFO(t.variants << " variants, " << t.refused << " refused");
  CHECK(t.variants > 9000);
  CHECK(t.refused > 0);
}

TEST_CASE("backend test models with an integer attribute set out of range get answers or lwc errors",
          "[conformance][robustness]") {
  const int64_t values[] = {-1000, -7, -2, -1, 0, 1, 2, 7, 1000, int64_t(1) << 40, std::numeric_limits<int64_t>::min(),
                            std::numeric_limits<int64_t>::max()};
  Tally t;
  forEachModel([&](const onnx::ModelProto& proto, const fs::path& file) {
    for (int n = 0; n < proto.graph().node_size(); ++n) {
      for (int a = 0; a < proto.graph().node(n).attribute_size(); ++a) {
        const onnx::AttributeProto& attr = proto.graph().node(n).attribute(a);
        const bool ints = attr.type() == onnx::AttributeProto::INTS && attr.ints_size() > 0;
        if (attr.type() != onnx::AttributeProto::INT && !ints) continue;
        for (const int64_t value : values) {
          for (int k = 0; k < (ints ? attr.ints_size() : 1); ++k) {
            onnx::ModelProto v = proto;
            auto* edited = v.mutable_graph()->mutable_node(n)->mutable_attribute(a);
            if (ints) edited->set_ints(k, value);
            else edited->set_i(value);
            readAsLwcDoes(v, file,
                          file.parent_path().filename().string() + ", node " + std::to_string(n) + " attribute " +
                              attr.name() + "[" + std::to_string(k) + "] = " + std::to_string(value),
                          t);
          }
        }
      }
    }
  });
  INFO(t.variants << " variants, " << t.refused << " refused");
  CHECK(t.variants > 20000);
  CHECK(t.refused > 0);
}

TEST_CASE("backend test models with an input dimension set to 0, 1 or 2^40 get answers or lwc errors",
          "[conformance][robustness]") {
  Tally t;
  forEachModel([&](const onnx::ModelProto& proto, const fs::path& file) {
    for (int i = 0; i < proto.graph().input_size(); ++i) {
      const onnx::ValueInfoProto& input = proto.graph().input(i);
      if (!input.type().has_tensor_type()) continue;
      const int rank = input.type().tensor_type().shape().dim_size();
      for (int d = 0; d < rank; ++d) {
        for (const int64_t value : {int64_t(0), int64_t(1), int64_t(1) << 40}) {
          onnx::ModelProto v = proto;
          v.mutable_graph()->mutable_input(i)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(d)->set_dim_value(value);
          readAsLwcDoes(v, file,
                        file.parent_path().filename().string() + ", input '" + input.name() + "' dimension " +
                            std::to_string(d) + " = " + std::to_string(value),
                        t);
        }
      }
    }
  });
  INFO(t.variants << " variants, " << t.refused << " refused");
  CHECK(t.variants > 12000);
  CHECK(t.refused > 0);
}
