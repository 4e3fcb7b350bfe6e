// The pass framework: option validation, registry, pipeline parsing (JSON and text), checks
// before work starts, transactional passes, gates.
#include <catch2/catch.hpp>

#include <filesystem>

#include "lwc/model_io.h"
#include "lwc/pipeline.h"
#include "passes/registry.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;
using namespace lwc::test;
using nlohmann::json;
using Catch::Matchers::Contains;

namespace {
std::string errorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

Pipeline parse(const json& j) { return Pipeline::fromJson(j, "p.json", testdataDir(), passes::builtinPasses()); }

// A pass that edits the model and then fails, to check that the runner restores the model.
class BreakingPass : public Pass {
 public:
  std::string name() const override { return "breaking"; }
  std::string help() const override { return "test: edits, then throws"; }
  std::vector<OptionSpec> optionSpecs() const override {
    OptionSpec mode{"mode", OptionType::String, "fast", "test option"};
    mode.choices = {"fast", "slow"};
    OptionSpec ratio{"ratio", OptionType::Float, 0.5, "test option"};
    ratio.min = 0;
    ratio.max = 1;
    return {mode, ratio, {"names", OptionType::StringList, json::array(), "test option"}};
  }
  PassResult run(Model& m, PassContext&) override {
    m.graph.nodes.clear();
    m.graph.initializers.clear();
    fail("deliberate failure");
  }
};
}  // namespace

TEST_CASE("pass options are validated against the pass's declaration", "[pipeline]") {
  BreakingPass p;
  CHECK_THAT(errorOf([&] { p.configure({{"speed", 1}}, "passes[0].options"); }),
             Contains("passes[0].options.speed: unknown option") && Contains("valid options: mode, ratio, names"));
  CHECK_THAT(errorOf([&] { p.configure({{"ratio", "high"}}, "x"); }), Contains("x.ratio: expected float"));
  CHECK_THAT(errorOf([&] { p.configure({{"ratio", 1.5}}, "x"); }), Contains("outside the valid range"));
  CHECK_THAT(errorOf([&] { p.configure({{"mode", "medium"}}, "x"); }), Contains("not one of fast, slow"));
  CHECK_THAT(errorOf([&] { p.configure(json::array(), "x"); }), Contains("must be a JSON object"));
  p.configure({{"names", "conv1"}}, "x");
  CHECK(p.options().getStrings("names") == std::vector<std::string>{"conv1"});
  CHECK(p.options().getString("mode") == "fast");  // default filled in
  CHECK(p.options().getFloat("ratio") == 0.5);
}

TEST_CASE("the registry knows the built-in passes and rejects unknown names", "[pipeline]") {
  const auto names = passes::builtinPasses().names();
  for (const char* n : {"fuse_batchnorm", "eliminate_identity", "fold_constants", "eliminate_dead", "fuse_pad_into_conv",
                        "fuse_bias_add"})
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
  CHECK_THAT(errorOf([] { passes::builtinPasses().create("fuse_bn", "passes[3]"); }),
             Contains("passes[3]: unknown pass 'fuse_bn'") && Contains("fuse_batchnorm"));
}

TEST_CASE("pipeline JSON is validated before any work starts", "[pipeline]") {
  SECTION("valid pipeline") {
    Pipeline p = parse({{"name", "t"},
                        {"data", {{"eval", {{"path", "fmnist_sample"}, {"limit", 20}}}}},
                        {"passes", {"fuse_batchnorm", {{"pass", "fold_constants"}, {"options", {{"max_growth_kb", 8}}}}}},
                        {"gates", {{"max_top1_drop", 0.5}}}});
    CHECK(p.steps.size() == 2);
    CHECK(p.steps[1].pass->options().getInt("max_growth_kb") == 8);
    CHECK(p.eval->options.path == testdataDir() / "fmnist_sample");
    CHECK_NOTHROW(p.check());
  }
  SECTION("errors name the JSON path") {
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"pases", 1}}); }),
               Contains("p.json: pases: unknown key"));
    CHECK_THAT(errorOf([] { parse({{"passes", {"fuse_batchnorm", "nope"}}}); }),
               Contains("p.json: passes[1]: unknown pass 'nope'"));
    CHECK_THAT(errorOf([] { parse({{"passes", {{{"pass", "fold_constants"}, {"options", {{"max_growth_kb", "big"}}}}}}}); }),
               Contains("passes[0].options.max_growth_kb: expected int"));
    CHECK_THAT(errorOf([] { parse({{"passes", {{{"pass", "fold_constants"}, {"options", {{"size", 1}}}}}}}); }),
               Contains("passes[0].options.size: unknown option; valid options: max_growth_kb"));
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"gates", {{"max_top1_dorp", 1}}}}); }),
               Contains("gates.max_top1_dorp: unknown gate"));
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"gates", {{"max_top1_drop", "1"}}}}); }),
               Contains("gates.max_top1_drop: expected a number"));
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"data", {{"eval", {{"labels", "x"}}}}}}); }),
               Contains("data.eval.path: required"));
  }
  SECTION("missing data and gates without data are caught by check()") {
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"data", {{"eval", "no_such_dir"}}}}).check(); }),
               Contains("data.eval.path") && Contains("does not exist"));
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"gates", {{"max_top1_drop", 1}}}}).check(); }),
               Contains("gates.max_top1_drop needs evaluation data"));
    CHECK_NOTHROW(parse({{"passes", {"fuse_batchnorm"}}, {"gates", {{"min_size_ratio", 1}}}}).check());
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}}).check(); }), Contains("no passes"));
  }
}

TEST_CASE("the text form parses names and options", "[pipeline]") {
  Pipeline p = Pipeline::fromText("fuse_batchnorm, fold_constants{max_growth_kb=16},eliminate_dead", passes::builtinPasses());
  REQUIRE(p.steps.size() == 3);
  CHECK(p.steps[1].pass->name() == "fold_constants");
  CHECK(p.steps[1].pass->options().getInt("max_growth_kb") == 16);
  CHECK_THAT(errorOf([] { Pipeline::fromText("fold_constants{max_growth_kb}", passes::builtinPasses()); }),
             Contains("must be key=value"));
  CHECK_THAT(errorOf([] { Pipeline::fromText("fold_constants{max_growth_kb=1", passes::builtinPasses()); }),
             Contains("unbalanced"));
  CHECK_THAT(errorOf([] { Pipeline::fromText("fuse_batchnorm,,eliminate_dead", passes::builtinPasses()); }),
             Contains("empty pass name"));
}

TEST_CASE("a failing pass leaves the model as it was", "[pipeline]") {
  PassRegistry reg;
  reg.add([] { return std::make_unique<BreakingPass>(); });
  Pipeline p = Pipeline::fromJson({{"passes", {"breaking"}}}, "p.json", ".", reg);
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y) {
  y = Add (x, w)
})");
  addConst(m, "w", {4}, 1);
  // As it was before that pass: the input with lwc's provenance, stamped before the first pass.
  Model expected = m;
  stampProvenance(expected, "p.json");
  const std::string before = serialized(expected);
  CHECK_THAT(errorOf([&] { runPipeline(p, m); }), Contains("breaking (passes[0]): deliberate failure"));
  CHECK(serialized(m) == before);
  CHECK(m.producer_name == "lwc");
}

TEST_CASE("pipelines report per-stage metrics and evaluate gates", "[pipeline]") {
  Model m = loadModel(testdataDir() / "resnet_fmnist.onnx");
  Pipeline p = parse({{"data", {{"eval", {{"path", "fmnist_sample"}, {"limit", 50}}}}},
                      {"passes", {"fuse_batchnorm", "eliminate_dead"}},
                      {"gates", {{"max_top1_drop", 0.0}, {"min_size_ratio", 2.0}, {"min_top1_agreement", 100.0}}}});
  PipelineReport rep = runPipeline(p, m);
  REQUIRE(rep.stages.size() == 3);
  CHECK(rep.stages[0].pass == "input");
  CHECK(rep.stages[0].metrics.samples == 50);
  CHECK(rep.stages[1].result.stats.at("folded_into_producer") > 0);
  CHECK(rep.stages[1].metrics.nodes < rep.stages[0].metrics.nodes);
  CHECK(rep.stages[2].metrics.top1 == rep.stages[0].metrics.top1);
  REQUIRE(rep.gates.size() == 3);
  CHECK(rep.gates[0].passed);
  CHECK_FALSE(rep.gates[1].passed);  // cleanup does not halve the file
  CHECK(rep.gates[2].passed);
  CHECK_FALSE(rep.gatesPassed());
  const json j = rep.toJson();
  CHECK(j["schema"] == "lwc.report");
  CHECK(j["schema_version"] == kReportSchemaVersion);
  CHECK(j["status"] == "gate_failed");
  CHECK(j["stages"].size() == 3);
  CHECK(j["delta"]["nodes"].get<int64_t>() < 0);
  CHECK_THAT(rep.toMarkdown(), Contains("| fuse_batchnorm |") && Contains("**FAIL**"));
}

TEST_CASE("gates on accuracy need labels, checked before any pass runs", "[pipeline]") {
  TempDir d;
  std::filesystem::copy_file(testdataDir() / "fmnist_sample" / "images.npy", d / "images.npy");
  PassRegistry reg;
  reg.add([] { return std::make_unique<BreakingPass>(); });
  Pipeline p = Pipeline::fromJson({{"data", {{"eval", {{"path", (d / "images.npy").string()},
                                                       {"preprocess", (testdataDir() / "fmnist_sample/preprocess.json").string()}}}}},
                                   {"passes", {"breaking"}},
                                   {"gates", {{"max_top1_drop", 1.0}}}},
                                  "p.json", ".", reg);
  Model m = loadModel(testdataDir() / "lenet5_fmnist.onnx");
  CHECK_THAT(errorOf([&] { runPipeline(p, m); }), Contains("needs labelled evaluation data"));
}
