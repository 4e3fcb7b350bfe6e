// ONNX's backend test models (node, pytorch-converted, pytorch-operator) edited the way broken
// exporters and hand edits break them: one graph input re-declared at another rank (0 to 5), one
// integer attribute set out of range, or one input dimension set to 0, 1 or 2^40
// (support/model_edits.h). Each edit goes through what every lwc command does first: model
// building, lwc's shape inference (with and without a batch size), the analysis `lwc info` prints,
// and the input checks (ONNX's checker and strict shape inference). Each must answer or
// throw lwc::Error. ONNX 1.12's inference functions index dimensions and divide by attributes
// without checking them in several ops, and loop or allocate per unit of a dimension in others
// (guardOnnxInference lists them): a crash there ends this test, as it ended every lwc command on
// such a model; a hang or an allocation of 2^40 protobuf messages times it out or gets it killed.
#include <onnx/onnx_pb.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <limits>

#include "lwc/analysis.h"
#include "lwc/model_io.h"
#include "lwc/pipeline.h"
#include "lwc/shape_inference.h"
#include "lwc/status.h"
#include "support/model_edits.h"

using namespace lwc;
namespace fs = std::filesystem;

namespace {

struct Tally {
  int variants = 0, refused = 0;
};

// Every edit of `kind` of every backend test model, through what every command does first: an
// answer or lwc::Error, nothing else.
Tally readEditsAsLwcDoes(test::EditKind kind) {
  const std::vector<fs::path> models = test::backendTestModels();
  REQUIRE(models.size() > 1000);  // node (932) and both pytorch sets
  Tally t;
  for (const fs::path& file : models) {
    onnx::ModelProto proto;
    std::ifstream in(file, std::ios::binary);
    REQUIRE(proto.ParseFromIstream(&in));
    test::forEachEdit(proto, kind, [&](onnx::ModelProto& v, const std::string& what) {
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
        FAIL(file.parent_path().filename().string() << ", " << what << ": " << e.what());
      }
    });
  }
  return t;
}

}  // namespace

TEST_CASE("backend test models with an input declared at another rank get answers or lwc errors",
          "[conformance][robustness]") {
  const Tally t = readEditsAsLwcDoes(test::EditKind::Rank);
  INFO(t.variants << " variants, " << t.refused << " refused");
  CHECK(t.variants > 9000);
  CHECK(t.refused > 0);
}

TEST_CASE("backend test models with an integer attribute set out of range get answers or lwc errors",
          "[conformance][robustness]") {
  const Tally t = readEditsAsLwcDoes(test::EditKind::Attribute);
  INFO(t.variants << " variants, " << t.refused << " refused");
  CHECK(t.variants > 20000);
  CHECK(t.refused > 0);
}

TEST_CASE("backend test models with an input dimension set to 0, 1 or 2^40 get answers or lwc errors",
          "[conformance][robustness]") {
  const Tally t = readEditsAsLwcDoes(test::EditKind::Dimension);
  INFO(t.variants << " variants, " << t.refused << " refused");
  CHECK(t.variants > 12000);
  CHECK(t.refused > 0);
}

TEST_CASE("a zero stride inside a subgraph does not crash inference", "[conformance][robustness]") {
  // Model loading refuses strides below 1 by name, also inside subgraphs (test_model_io), but
  // inference also runs on models built without that validation (LoadOptions::validate = false,
  // pass outputs), and ONNX 1.12's inference of a Conv with a zero stride divides by it (the
  // inference probe crashes on this model). guardOnnxInference gives the node an inference error.
  const Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (bool c, float[1, 1, 8, 8] x, float[1, 1, 3, 3] w) => (float[1, 1, 8, 8] out, float[1, 1, 8, 8] r)
{
  out = If (c) <then_branch = t () => (float[1, 1, 8, 8] y) {
    y = Conv <strides = [0, 1], auto_pad = "SAME_UPPER"> (x, w)
  }, else_branch = e () => (float[1, 1, 8, 8] z) {
    z = Identity (x)
  }>
  r = Relu (x)
}
)", LoadOptions{.validate = false});
  ValueTypes types;
  REQUIRE_NOTHROW(types = inferShapes(m));
  CHECK(concreteShape(types, "r") == Shape{1, 1, 8, 8});
  REQUIRE_NOTHROW(inputModelProblem(m));
  CHECK_THROWS_WITH(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 17]>
g (bool c, float[1, 1, 8, 8] x) => (float[1, 1, 8, 8] out)
{
  out = If (c) <then_branch = t () => (float[1, 1, 8, 8] y) {
    y = MaxPool <kernel_shape = [1, 1], strides = [0, 1]> (x)
  }, else_branch = e () => (float[1, 1, 8, 8] z) {
    z = Identity (x)
  }>
}
)"), Catch::Contains("node MaxPool (output 'y') in attribute 'then_branch' of node If (output 'out') has strides [0,1]"));
}

TEST_CASE("a Scan whose num_scan_inputs exceeds its inputs is refused by name, not by an 8 TiB allocation",
          "[conformance][robustness]") {
  // ONNX 1.12's Scan inference builds vectors of num_scan_inputs entries: 2^40 (this test's
  // integer-attribute edits) ended in std::bad_alloc, and aborted lwc under AddressSanitizer.
  const fs::path file = "/usr/share/libonnx-testdata/data/node/test_scan9_sum/model.onnx";
  onnx::ModelProto proto;
  std::ifstream in(file, std::ios::binary);
  REQUIRE(proto.ParseFromIstream(&in));
  bool edited = false;
  for (auto& n : *proto.mutable_graph()->mutable_node())
    if (n.op_type() == "Scan")
      for (auto& a : *n.mutable_attribute())
        if (a.name() == "num_scan_inputs") {
          a.set_i(int64_t(1) << 40);
          edited = true;
        }
  REQUIRE(edited);
  const Model m = modelFromProto(proto, file.parent_path(), file.string());
  const std::string problem = inputModelProblem(m);
  CHECK_THAT(problem, Catch::Contains("num_scan_inputs 1099511627776 is out of range (it must lie in [1, "));
  CHECK_THAT(problem, !Catch::Contains("bad_alloc"));
}

TEST_CASE("shape inference infers the same types without the weights' data", "[conformance]") {
  // inferShapes gives ONNX's inference large non-integer initializers as typed graph inputs
  // (ShapeOptions::weight_data_over): every backend test model and bundled model must get the same
  // types and shapes as with every value given, with and without a batch size. Checked here with
  // every non-integer initializer left out, not only those over the 4096 bytes inferShapes uses
  // (few backend test models hold a weight that large).
  std::vector<fs::path> models = test::backendTestModels();
  REQUIRE(models.size() > 1000);
  for (const auto& e : fs::directory_iterator(fs::path(LWC_SOURCE_DIR) / "testdata"))
    if (e.path().extension() == ".onnx") models.push_back(e.path());
  auto same = [](const ValueTypes& a, const ValueTypes& b) -> std::string {
    if (a.size() != b.size()) return "value counts " + std::to_string(a.size()) + " and " + std::to_string(b.size());
    for (const auto& [name, v] : a) {
      const auto it = b.find(name);
      if (it == b.end()) return "'" + name + "' only with the data";
      const ValueInfo& w = it->second;
      if (v.dtype != w.dtype || v.shape != w.shape || v.other_type.has_value() != w.other_type.has_value())
        return "'" + name + "' differs";
    }
    return "";
  };
  int compared = 0, stripped = 0;
  for (const fs::path& file : models) {
    Model m;
    try {
      m = loadModel(file);
    } catch (const Error&) {
      continue;  // refused models are the load tests' business
    }
    ++compared;
    for (const auto& [name, t] : m.graph.initializers.items())
      if (t.dtype() != DType::Int64 && t.dtype() != DType::Int32) {
        ++stripped;
        break;
      }
    for (int64_t batch : {0, 2}) {
      ShapeOptions lean, full;
      lean.weight_data_over = 0;
      lean.batch = full.batch = batch;
      full.weight_data_over = std::numeric_limits<int64_t>::max();
      const std::string why = same(inferShapes(m, full), inferShapes(m, lean));
      INFO(file.string() << " batch " << batch);
      CHECK(why == "");
    }
  }
  INFO(compared << " models, " << stripped << " with a non-integer initializer");
  CHECK(compared > 1000);
  CHECK(stripped > 50);
}
