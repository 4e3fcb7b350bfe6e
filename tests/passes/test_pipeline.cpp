// The pass framework: option validation, registry, pipeline parsing (JSON and text), checks
// before work starts, transactional passes, gates.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>

#include "lwc/model_io.h"
#include "lwc/pipeline.h"
#include "passes/fold_constants.h"
#include "passes/registry.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;
using namespace lwc::test;
using nlohmann::json;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

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
// Drops every Identity whose output is not a graph output, rewiring the node inputs that read it
// (as a pass that knows nothing of subgraphs would).
class DroppingPass : public Pass {
 public:
  std::string name() const override { return "dropping"; }
  std::string help() const override { return "test: removes Identity nodes"; }
  std::vector<OptionSpec> optionSpecs() const override { return {}; }
  PassResult run(Model& m, PassContext&) override {
    Graph& g = m.graph;
    PassResult r;
    for (size_t i = 0; i < g.nodes.size();) {
      const Node n = g.nodes[i];
      if (n.op_type != "Identity" || g.isGraphOutput(n.outputs[0])) {
        ++i;
        continue;
      }
      for (auto& c : g.nodes)
        for (auto& in : c.inputs)
          if (in == n.outputs[0]) in = n.inputs[0];
      g.nodes.erase(g.nodes.begin() + static_cast<std::ptrdiff_t>(i));
      r.changed = true;
    }
    return r;
  }
};

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

// A pass that changes the model's weights (a new tensor, as passes set them) but reports no change.
class SilentPass : public Pass {
 public:
  std::string name() const override { return "silent"; }
  std::string help() const override { return "test: changes weights, says it did not"; }
  PassResult run(Model& m, PassContext&) override {
    for (auto& [name, t] : m.graph.initializers.items())
      if (t.dtype() == DType::Float32 && t.rank() == 2) {  // the Gemm weights: negated
        Tensor n = t.clone();
        for (int64_t i = 0; i < n.numel(); ++i) n.data<float>()[i] = -n.data<float>()[i];
        m.graph.initializers.set(name, n);
        break;
      }
    return {};
  }
};
// A pass that changes nothing and leaves notes: four alike, one with a quote in a name, three of their own.
class NotingPass : public Pass {
 public:
  std::string name() const override { return "noting"; }
  std::string help() const override { return "test: leaves notes"; }
  PassResult run(Model&, PassContext&) override {
    PassResult r;
    for (const char* n : {"a", "b's", "c", "d"}) r.notes.push_back(std::string("Add '") + n + "' after MatMul '/m': left alone: 3-D");
    r.notes.push_back("Conv 'x': 8 channels");
    r.notes.push_back("Conv 'y': 16 channels");
    r.notes.push_back("Conv 'z': 16 channels");
    return r;
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
  CHECK(p.options().given("names"));
  CHECK_FALSE(p.options().given("mode"));
  // A command that builds the pass from its flags has messages name the flags.
  CHECK_THAT(errorOf([&] { p.configure({{"ratio", 1.5}}, "lwc x", {{"ratio", "--ratio"}}); }),
             StartsWith("--ratio: 1.5 is outside the valid range"));
  CHECK_THAT(errorOf([&] { p.configure({{"mode", "medium"}}, "lwc x", {{"ratio", "--ratio"}}); }),
             StartsWith("lwc x.mode: \"medium\" is not one of fast, slow"));
}

TEST_CASE("an option that another option makes inert is refused, not ignored", "[pipeline]") {
  // Each was accepted and changed nothing: the sparsity of an N:M pattern, a ratio beside
  // macs_reduction, least-squares settings without lsq recovery.
  const auto& reg = passes::builtinPasses();
  auto configureError = [&](const std::string& pass, const json& o) {
    return errorOf([&] { reg.create(pass, "s")->configure(o, "s"); });
  };
  CHECK_THAT(configureError("prune_magnitude", {{"pattern", "2:4"}, {"sparsity", 0.9}}),
             StartsWith("s.sparsity: 0.9 does not apply to pattern 2:4, which zeroes 2 of every 4 weights"));
  CHECK_THAT(configureError("prune_magnitude", {{"pattern", "2:4"}, {"scope", "global"}}),
             StartsWith("s.scope: global applies to unstructured pruning"));
  CHECK_THAT(configureError("prune_channels", {{"ratio", 0.2}, {"macs_reduction", 0.3}}),
             StartsWith("s.ratio: macs_reduction sets the fraction of channels per group"));
  for (const char* pass : {"prune_magnitude", "prune_channels", "weight_share"})
    for (const auto& [k, v] : {std::pair<std::string, json>{"lsq_rows", 8}, {"lsq_damping", 0.01}, {"lsq_cv_rows", 8}}) {
      INFO(pass << " " << k);
      if (std::string(pass) == "weight_share" && k == "lsq_cv_rows") continue;  // not an option of weight_share
      CHECK_THAT(configureError(pass, {{k, v}}),
                 StartsWith("s." + k + ": applies to the least-squares recovery, but recover is none"));
      CHECK(configureError(pass, {{k, v}, {"recover", "lsq"}}) == "(no error)");
    }
  // What stays accepted: the sparsity an N:M pattern gives. lsq_cv_rows 0, its default, is refused
  // without lsq as obs_rounds 1 is without obs (it was accepted while lwc prune passed it always).
  CHECK(configureError("prune_magnitude", {{"pattern", "2:4"}, {"sparsity", 0.5}}) == "(no error)");
  CHECK(configureError("prune_magnitude", {{"pattern", "1:4"}}) == "(no error)");
  CHECK_THAT(configureError("prune_magnitude", {{"lsq_cv_rows", 0}}),
             StartsWith("s.lsq_cv_rows: applies to the least-squares recovery, but recover is none"));
  CHECK(configureError("prune_channels", {{"lsq_cv_rows", 0}, {"recover", "lsq"}}) == "(no error)");
  CHECK_THAT(configureError("quantize_static", {{"load_calib", {"s.json"}}, {"calib_samples", 10}}),
             StartsWith("s.calib_samples: the statistics come from load_calib as they were collected"));
  CHECK(configureError("quantize_static", {{"load_calib", {"s.json"}}, {"calib_samples", 10}, {"bias_correction", true}}) == "(no error)");
  CHECK_THAT(configureError("quantize_static", {{"load_calib", {"s.json"}}, {"calib_shard", "1/2"}}),
             StartsWith("s.calib_shard: applies when collecting statistics"));
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
    // Limits no run can meet or that mean nothing: refused before the work (the run used to
    // happen, then exit 3 on a failed gate).
    // File options resolve against the pipeline's folder, as its data paths do.
    {
      const Pipeline p = Pipeline::fromJson(
          {{"passes", {{{"pass", "quantize_static"}, {"options", {{"save_calib", "s.json"}, {"load_calib", {"a.json", "/abs/b.json"}}}}}}}},
          "p.json", "/pipes/here", passes::builtinPasses());
      const PassOptions& o = p.steps.at(0).pass->options();
      CHECK(o.getString("save_calib") == "/pipes/here/s.json");
      CHECK(o.getStrings("load_calib") == std::vector<std::string>{"/pipes/here/a.json", "/abs/b.json"});
    }
    // What the schema refuses, lwc refuses too.
    CHECK_NOTHROW(parse({{"passes", {{{"pass", "fuse_batchnorm"}, {"options", nullptr}}}}}));  // null: the defaults, as the schema says
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"$schema", 5}}); }), Contains("$schema: expected a string"));
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"gates", {{"min_top1", 150}}}}); }),
               Contains("gates.min_top1: 150 is outside [0, 100]"));
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"gates", {{"max_top1_drop", -5}}}}); }),
               Contains("gates.max_top1_drop: -5 is outside [0, 100]"));
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"gates", {{"min_size_ratio", -1}}}}); }),
               Contains("gates.min_size_ratio: -1 is outside [0, 1e+300]"));
    CHECK_THAT(errorOf([] { parse({{"pases", json::array()}}); }), Contains("pases: unknown key (did you mean 'passes'?)"));
    // Wrong types said "required" (the key was there) or "expected a JSON object" (a string is fine too).
    CHECK_THAT(errorOf([] { parse({{"passes", "x"}}); }), Contains("passes: expected a list of pass names") && Contains("got \"x\""));
    CHECK_THAT(errorOf([] { parse({{"passes", {nullptr}}}); }), Contains("passes[0]: expected a pass name or a"));
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"data", {{"eval", nullptr}}}}); }),
               Contains("data.eval: expected a path or a {\"path\": ...} object, got null"));
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"gates", {{"max_top1_dorp", 1}}}}); }),
               Contains("gates.max_top1_dorp: unknown gate (did you mean 'max_top1_drop'?)"));
    // Above the bound that stands for "none": it said "is below 0".
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"gates", {{"min_size_ratio", 1e301}}}}); }),
               Contains("gates.min_size_ratio: 1e+301 is outside [0, 1e+300]"));
    CHECK_NOTHROW(parse({{"passes", json::array()}, {"gates", {{"min_top1", 100}, {"max_top1_drop", 0}, {"min_output_sqnr_db", -3}}}}));
    CHECK_THAT(errorOf([] { parse({{"passes", json::array()}, {"data", {{"eval", {{"labels", "x"}}}}}}); }),
               Contains("data.eval.path: required"));
    CHECK_THAT(errorOf([] { parse(json::array({1, 2})); }), Contains("p.json: the top level: expected a JSON object, got [1,2]"));
    // A large value in the wrong place is quoted in part, so the error stays one readable line.
    const std::string e = errorOf([] { parse({{"passes", {{{"pass", "fold_constants"}, {"options", std::vector<int>(1000, 7)}}}}}); });
    CHECK_THAT(e, Contains("options must be a JSON object") && Contains("[7,7,7") && Contains("..."));
    CHECK(e.size() < 200);
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
  CHECK_THAT(errorOf([] { Pipeline::fromText("prune_magnitude{sparsity=0.5,}", passes::builtinPasses()); }),
             Contains("empty option in {sparsity=0.5,}"));
  CHECK(Pipeline::fromText("fuse_batchnorm{ }", passes::builtinPasses()).steps.size() == 1);
  // A near miss is named, as the CLI names a mistyped flag.
  CHECK_THAT(errorOf([] { Pipeline::fromText("fuse_batchnrom", passes::builtinPasses()); }),
             Contains("unknown pass 'fuse_batchnrom' (did you mean 'fuse_batchnorm'?); known passes: "));
  CHECK_THAT(errorOf([] { Pipeline::fromText("prune_magnitude{sparsty=0.5}", passes::builtinPasses()); }),
             Contains("sparsty: unknown option (did you mean 'sparsity'?); valid options: "));
  CHECK_THAT(errorOf([] { Pipeline::fromText("prune_magnitude{zzz=0.5}", passes::builtinPasses()); }),
             Contains("zzz: unknown option; valid options: "));
  // Options without a pass name said "unknown pass ''"; an option without a key "options.: unknown option".
  CHECK_THAT(errorOf([] { Pipeline::fromText("{sparsity=0.5}", passes::builtinPasses()); }),
             Contains("no pass name before '{'"));
  CHECK_THAT(errorOf([] { Pipeline::fromText("prune_magnitude{=0.5}", passes::builtinPasses()); }),
             Contains("option \"=0.5\" has no key"));
  // A long item is cut where the error names it (every error repeated the whole item).
  const std::string long_item = "prune_magnitude{sparsity=0.5,include=[" + std::string(5000, 'a') + "],bogus=1}";
  const std::string long_err = errorOf([&] { Pipeline::fromText(long_item, passes::builtinPasses()); });
  CHECK_THAT(long_err, Contains("...") && Contains("bogus: unknown option"));
  CHECK(long_err.size() < 1000);
  // A key given twice, as in JSON pipelines: an error (the last one used to win).
  CHECK_THAT(errorOf([] { Pipeline::fromText("prune_magnitude{sparsity=0.5,sparsity=0.6}", passes::builtinPasses()); }),
             Contains("option \"sparsity\" is given twice"));
  CHECK_THAT(errorOf([] { Pipeline::fromText("fuse_batchnorm,,eliminate_dead", passes::builtinPasses()); }),
             Contains("empty pass name"));
  // An empty --passes: `lwc run` said to give a pipeline file, as if the option were missing.
  CHECK_THAT(errorOf([] { Pipeline::fromText(" ", passes::builtinPasses()); }),
             Contains("--passes: no passes given; list them, e.g."));
  // The place of a --passes item holds its origin and pass name: neither is repeated.
  CHECK(errorOf([] { Pipeline::fromText("quantize_static", passes::builtinPasses()).check(); }) ==
        "--passes item 1 (quantize_static) needs calibration data: add data.calib to the pipeline or pass --calib DIR");
  // A bare value is taken as a string and quoted back in the error; bytes that are not UTF-8 made
  // quoting it throw (an internal error, exit code 2).
  CHECK_THAT(errorOf([] { Pipeline::fromText("fold_constants{max_growth_kb=\xff\xfe}", passes::builtinPasses()); }),
             Contains("max_growth_kb: expected int, got \""));
  // Lists of bare words (the README's key2=[x,y]) are lists of strings, as the JSON form; they were
  // the one string "[Gemm,Conv]".
  for (const char* text : {"prune_magnitude{include=[Gemm,Conv]}", "prune_magnitude{include=[\"Gemm\", Conv]}",
                           "prune_magnitude{include=[ Gemm , Conv ]}"}) {
    INFO(text);
    const Pipeline l = Pipeline::fromText(text, passes::builtinPasses());
    CHECK(l.steps.at(0).pass->options().getStrings("include") == std::vector<std::string>{"Gemm", "Conv"});
  }
  CHECK(Pipeline::fromText("prune_magnitude{include=[]}", passes::builtinPasses()).steps.at(0).pass->options().getStrings("include").empty());
}

TEST_CASE("passes keep the values a subgraph reads as they keep graph outputs", "[pipeline]") {
  PassRegistry reg;
  reg.add([] { return std::make_unique<DroppingPass>(); });
  Pipeline p = Pipeline::fromJson({{"passes", {"dropping"}}}, "p.json", ".", reg);
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (bool c, float[4] x) => (float[4] y) {
  r = Relu (x)
  h = Identity (r)
  k = Identity (r)
  y = If (c) <
    then_branch = t () => (float[4] a) { a = Add (h, k) },
    else_branch = e () => (float[4] b) { b = Neg (x) }
  >
})");
  const Model untouched = m;
  runPipeline(p, m);
  // Without the rule the pass dropped both Identities, and the branch read names nothing produced
  // (the pipeline refused the result).
  CHECK(m.graph.nodes.size() == untouched.graph.nodes.size());
  REQUIRE(m.graph.outputs.size() == 1);
  CHECK(m.graph.outputs[0].name == "y");
  // Without subgraph reads the pass does its work.
  Model plain = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[4] x) => (float[4] y) {
  h = Identity (x)
  y = Relu (h)
})");
  runPipeline(p, plain);
  CHECK(plain.graph.nodes.size() == 1);
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

TEST_CASE("notes that differ only in the names they quote are one line in the log, each in the report", "[pipeline]") {
  const std::vector<std::string> notes{"Add 'a' after MatMul 'm': left alone", "Conv 'x': 8 channels", "Add 'b' after MatMul 'n': left alone",
                                       "Add 'c' after MatMul 'o': left alone", "Conv 'y': 16 channels"};
  CHECK(groupNotes(notes, 3) == std::vector<std::string>{"Add 'a' after MatMul 'm': left alone (and 2 more like it; lwc -v lists each)",
                                                         "Conv 'x': 8 channels", "Conv 'y': 16 channels"});
  CHECK(groupNotes(notes, 4) == notes);
  CHECK(groupNotes(notes, 0) == notes);
  CHECK(groupNotes({}, 3).empty());

  PassRegistry reg;
  reg.add([] { return std::make_unique<NotingPass>(); });
  Pipeline p = Pipeline::fromJson({{"passes", {"noting"}}}, "p.json", ".", reg);
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x) => (float[N, 4] y) {
  y = Add (x, w)
})");
  addConst(m, "w", {4}, 1);
  std::vector<std::string> logged;
  RunOptions o;
  o.note = [&](const std::string& s) { logged.push_back(s); };
  const PipelineReport rep = runPipeline(p, m, o);
  // A name with a quote of its own ("b's") shifts the quotes of its note: that one stays apart.
  CHECK(logged == std::vector<std::string>{"noting: Add 'a' after MatMul '/m': left alone: 3-D (and 2 more like it; lwc -v lists each)",
                                           "noting: Add 'b's' after MatMul '/m': left alone: 3-D", "noting: Conv 'x': 8 channels",
                                           "noting: Conv 'y': 16 channels", "noting: Conv 'z': 16 channels"});
  CHECK(rep.toJson()["stages"][1]["notes"].size() == 7);
  logged.clear();
  o.note_group = 0;
  runPipeline(p, m, o);
  CHECK(logged.size() == 7);
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
  CHECK(j["eval_batch"] == 100);  // the pipeline's default; a dynamically quantized model's outputs depend on it
  CHECK_THAT(rep.toText(false), Contains("labels.npy), batches of 100"));
  CHECK(j["schema_version"] == kReportSchemaVersion);
  CHECK(j["status"] == "gate_failed");
  CHECK(j["stages"].size() == 3);
  CHECK(j["delta"]["nodes"].get<int64_t>() < 0);
  CHECK_THAT(rep.toMarkdown(), Contains("| fuse_batchnorm |") && Contains("**FAIL**"));
}

TEST_CASE("a stage reuses the previous stage's evaluation only when the model computes the same", "[pipeline]") {
  // Two prune_magnitude steps at one sparsity, the second with recovery, reported the first step's
  // top-1 for the second (its flag said "no change": no weight newly zeroed), and gates judged that.
  PassRegistry reg;
  reg.add([] { return std::make_unique<SilentPass>(); });
  reg.add([] { return passes::builtinPasses().create("eliminate_dead", ""); });
  Pipeline p = Pipeline::fromJson({{"data", {{"eval", {{"path", "fmnist_sample"}, {"limit", 100}}}}},
                                   {"eval_every_pass", true},
                                   {"passes", {"eliminate_dead", "silent", "eliminate_dead"}}},
                                  "p.json", testdataDir(), reg);
  Model m = loadModel(testdataDir() / "lenet5_fmnist.onnx");
  const PipelineReport rep = runPipeline(p, m);
  REQUIRE(rep.stages.size() == 4);
  CHECK(rep.stages[1].metrics.top1 == rep.stages[0].metrics.top1);  // really nothing changed: reused
  CHECK(rep.stages[2].result.changed);  // the pipeline saw the new weights
  CHECK(*rep.stages[2].metrics.top1 < *rep.stages[0].metrics.top1 - 0.3);
  CHECK(rep.stages[2].metrics.output_sqnr_db < 10);
  CHECK(rep.stages[3].metrics.top1 == rep.stages[2].metrics.top1);
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

TEST_CASE("an input model that fails ONNX's checks or whose weight shapes disagree is the user's error", "[pipeline]") {
  auto inputError = [](const Model& m) {
    try {
      checkModelForInput(m);
    } catch (const Error& e) {
      const std::string msg = e.what();
      CHECK(msg.find('\n') == std::string::npos);  // one line, though ONNX's own messages span several
      return msg;
    } catch (const std::exception& e) {
      FAIL("not lwc::Error (exit code 1) but " << e.what());
    }
    return std::string("(no error)");
  };
  auto model = [](const char* body, const char* sig = "(float[N, 3, 8, 8] x) => (float[N, 4, 6, 6] y)") {
    return parseGraph(std::string("<ir_version: 8, opset_import: [\"\" : 13]>\ng ") + sig + " {\n" + body + "\n}");
  };

  Model ok = model("y = Conv (x, w, b)");
  addConst(ok, "w", {4, 3, 3, 3}, 1);
  addConst(ok, "b", {4}, 1);
  CHECK(inputError(ok) == "(no error)");

  // ONNX's checker: an attribute Relu does not have; the message names the node.
  Model attr = model("y = Relu <perm = [1, 0]> (x)", "(float[N, 3] x) => (float[N, 3] y)");
  attr.graph.nodes[0].name = "act1";
  CHECK_THAT(inputError(attr), Contains("fails the ONNX checker") && Contains("Unrecognized attribute: perm") &&
                                   Contains("act1") && Contains("repair the model"));
  // A graph output with a type and no shape (make_tensor_value_info(name, FLOAT, None)): ONNX's
  // checker refuses it, ONNX Runtime runs it; lwc fills it in from shape inference.
  Model noshape = ok;
  noshape.graph.outputs[0].shape.reset();
  CHECK(undeclaredOutputs(noshape) == std::vector<std::string>{"y"});
  CHECK(inputError(noshape) == "(no error)");
  auto filled = completeOutputDeclarations(noshape);
  REQUIRE(filled.size() == 1);
  CHECK(filled[0] == "graph output 'y' declared no shape; lwc gives it the inferred float32 [N,4,6,6]");
  CHECK(noshape.graph.outputs[0].shape == ok.graph.outputs[0].shape);
  CHECK(undeclaredOutputs(noshape).empty());
  // No type either: both come from inference.
  Model notype = ok;
  notype.graph.outputs[0].shape.reset();
  notype.graph.outputs[0].dtype = DType::Undefined;
  filled = completeOutputDeclarations(notype);
  REQUIRE(filled.size() == 1);
  CHECK_THAT(filled[0], Contains("declared no type") && Contains("float32 [N,4,6,6]"));
  CHECK(notype.graph.outputs[0].dtype == DType::Float32);
  // A declared type that disagrees with inference is not overwritten: the checks name it.
  Model wrongtype = ok;
  wrongtype.graph.outputs[0].shape.reset();
  wrongtype.graph.outputs[0].dtype = DType::Int64;
  CHECK(completeOutputDeclarations(wrongtype).empty());
  CHECK(inputError(wrongtype) != "(no error)");
  // A shape inference cannot find (Reshape to a shape known only at run time) stays missing, and the
  // checker's refusal names the output, which ONNX's own message does not.
  Model unknowable = model("y = Reshape (x, s)", "(float[N, 3] x, int64[K] s) => (float y)");
  unknowable.graph.outputs[0].shape.reset();
  CHECK(completeOutputDeclarations(unknowable).empty());
  CHECK_THAT(inputError(unknowable), Contains("graph output 'y' declares no shape"));

  // ONNX's inference error on one node cascades to every node after it; the message keeps the first.
  Model cascade = model("t = Conv (x, w)\n  u = Relu (t)\n  y = Relu (u)");
  addConst(cascade, "w", {}, 1);  // a scalar: "Second input tensor has wrong dimension"
  const std::string cascaded = inputError(cascade);
  CHECK_THAT(cascaded, Contains("fails ONNX shape inference") && Contains("(op_type:Conv") &&
                           Contains("(and errors on later nodes)"));
  CHECK(cascaded.find("op_type:Relu") == std::string::npos);

  // Disagreements ONNX's shape inference lets through (it passes each of these).
  Model conv = model("y = Conv (x, w)");
  addConst(conv, "w", {4, 2, 3, 3}, 1);
  CHECK_THAT(inputError(conv), Contains("has shapes that disagree") && Contains("input ('x') has 3 channels") &&
                                   Contains("take 2 per group x 1 groups"));
  // kernel_shape against the weights (a 5x5 attribute over 3x3 weights failed only when run, as
  // if the inputs were wrong), and per-dimension attributes of another length.
  Model ks = model("y = Conv <kernel_shape = [5, 5]> (x, w, b)", "(float[N, 3, 8, 8] x) => (float[N, 4, 4, 4] y)");
  addConst(ks, "w", {4, 3, 3, 3}, 1);
  addConst(ks, "b", {4}, 1);
  CHECK_THAT(inputError(ks), Contains("has shapes that disagree") &&
                                 Contains("kernel_shape [5,5] does not match the weights ('w') of spatial size 3"));
  Model ks_ok = model("y = Conv <kernel_shape = [3, 3]> (x, w, b)");
  addConst(ks_ok, "w", {4, 3, 3, 3}, 1);
  addConst(ks_ok, "b", {4}, 1);
  CHECK(inputError(ks_ok) == "(no error)");
  Model dil = model("y = Conv <dilations = [1, 1, 1]> (x, w, b)");
  addConst(dil, "w", {4, 3, 3, 3}, 1);
  addConst(dil, "b", {4}, 1);
  CHECK(inputError(dil) != "(no error)");  // ONNX's inference or lwc's check: either names it
  Model bias = ok;
  bias.graph.initializers.set("b", Tensor(DType::Float32, {5}));
  CHECK_THAT(inputError(bias), Contains("bias ('b') has 5 values for 4 output channels"));
  Model bn = model("y = BatchNormalization (x, s, c, mu, var)", "(float[N, 3, 8, 8] x) => (float[N, 3, 8, 8] y)");
  for (const char* p : {"s", "c", "mu"}) addConst(bn, p, {3}, 1);
  addConst(bn, "var", {4}, 1);
  CHECK_THAT(inputError(bn), Contains("input ('x') has 3 channels but 'var' has 4 values"));
  bn.graph.initializers.set("var", Tensor::scalar<float>(1.f));  // had crashed prune_channels
  CHECK_THAT(inputError(bn), Contains("'var' (input 4) has rank 0; it must be 1-D with one value per channel"));
  Model gemm = model("y = Gemm <transB = 1> (x, w)", "(float[N, 400] x) => (float[N, 10] y)");
  gemm.graph.nodes[0].name = "/fc1/Gemm";
  addConst(gemm, "w", {10, 256}, 1);
  CHECK_THAT(inputError(gemm), Contains("Gemm '/fc1/Gemm': A ('x') has 400 columns but B ('w') has 256 rows"));
  Model gemm_ok = model("y = Gemm <transB = 1> (x, w, c)", "(float[N, 256] x) => (float[N, 10] y)");
  addConst(gemm_ok, "w", {10, 256}, 1);
  addConst(gemm_ok, "c", {10}, 1);
  CHECK(inputError(gemm_ok) == "(no error)");
  Model gemm_c = gemm_ok;
  gemm_c.graph.initializers.set("c", Tensor(DType::Float32, {7}));
  CHECK_THAT(inputError(gemm_c), Contains("C ('c') has 7 columns, neither 1 nor the output's 10"));
  // A window larger than the padded input (ONNX's inference lets the negative size through).
  Model window = model("y = Conv <pads = [1, 1, 1, 1]> (x, w)", "(float[N, 3, 2, 8] x) => (float[N, 4, H, W] y)");
  addConst(window, "w", {4, 3, 5, 3}, 1);
  CHECK_THAT(inputError(window), Contains("the window (kernel 5, dilation 1) is larger than the input ('x'), 2 + 2 "
                                          "padding, in spatial dimension 0"));
  Model pool = model("y = MaxPool <kernel_shape = [3, 3]> (x)", "(float[N, 3, 8, 2] x) => (float[N, 3, H, W] y)");
  CHECK_THAT(inputError(pool), Contains("MaxPool (output 'y'): the window (kernel 3, dilation 1)"));
  Model fits = model("y = Conv <pads = [1, 1, 1, 1]> (x, w)", "(float[N, 3, 3, 8] x) => (float[N, 4, 1, 8] y)");
  addConst(fits, "w", {4, 3, 5, 3}, 1);
  CHECK(inputError(fits) == "(no error)");
  // Symbolic dimensions are not compared.
  Model sym = model("y = Gemm <transB = 1> (x, w)", "(float[N, K] x) => (float[N, 10] y)");
  addConst(sym, "w", {10, 256}, 1);
  CHECK(inputError(sym) == "(no error)");
}

TEST_CASE("MACs that depend on sizes computed at run time are counted on a folded copy, or marked", "[pipeline]") {
  const Model m = runTimeSizedMatMul();
  const ModelStats plain = analyzeModel(m, AnalyzeOptions{3});
  CHECK_FALSE(plain.macs_complete);
  CHECK(plain.macs == 0);
  const ModelStats full = passes::analyzeFolded(m, AnalyzeOptions{3});
  CHECK(full.macs_complete);
  CHECK(full.macs == 3 * 4 * 2 * 5);  // [3, 8] viewed as [12, 2], times [2, 5]
  CHECK(full.params == plain.params);
  CHECK(full.nodes == plain.nodes);  // the model itself is not changed
  REQUIRE(full.layers.size() == 1);
  CHECK(full.layers[0].macs == full.macs);

  // A pipeline without a full count marks its lower bounds and fails a MACs gate on them; with
  // one (as the lwc commands run it), the input and the final model are counted in full.
  Pipeline p = parse({{"passes", {"eliminate_dead"}}, {"gates", {{"max_macs_ratio", 1.0}}}});
  Model a = m;
  PipelineReport rep = runPipeline(p, a);
  CHECK_FALSE(rep.stages.back().metrics.macs_complete);
  CHECK_FALSE(rep.gates.at(0).passed);
  CHECK(std::isnan(rep.gates.at(0).value));
  CHECK_THAT(rep.toText(false), Contains("MACs 0+ -> 0+") && Contains("MACs marked + are lower bounds") &&
                               Contains("max_macs_ratio: unknown (some layers' MACs are not known before run time)  FAIL"));
  CHECK_THAT(rep.toMarkdown(), Contains("| 0+ |") && Contains("| max_macs_ratio | unknown | 1 | **FAIL** |"));
  // No value: null with the reason in JSON (it read "nan", the word for NaN outputs).
  const auto gate = rep.toJson()["gates"][0];
  CHECK(gate["value"].is_null());
  CHECK(gate["reason"] == "unknown: some layers' MACs are not known before run time");
  RunOptions ro;
  ro.full_count = [](const Model& x) { return passes::analyzeFolded(x, AnalyzeOptions{1, false}); };
  Model b = m;
  rep = runPipeline(p, b, ro);
  CHECK(rep.stages.front().metrics.macs == 40);
  CHECK(rep.stages.back().metrics.macs == 40);
  CHECK(rep.stages.back().metrics.macs_complete);
  CHECK(rep.gates.at(0).passed);
  CHECK(rep.gates.at(0).value == 1.0);
}

TEST_CASE("the text report says how many weights pruning zeroed, which params and bytes do not show", "[pipeline]") {
  auto gemm = [] {
    Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 256] x) => (float[N, 10] y) { y = Gemm <transB = 1> (x, w) })");
    addConst(m, "w", {10, 256}, 1);
    return m;
  };
  Model pruned = gemm();
  const std::string text = runPipeline(parse({{"passes", {{{"pass", "prune_magnitude"}, {"options", {{"sparsity", 0.5}}}}}}}), pruned).toText(false);
  CHECK_THAT(text, Contains("params 2560 -> 2560") && Contains("zeros  0.00 % -> 50.00 % of the Conv/Gemm/MatMul weights; "
                                                                 "non-zero 2560 -> 1280"));
  Model pruned_md = gemm();
  CHECK_THAT(runPipeline(parse({{"passes", {{{"pass", "prune_magnitude"}, {"options", {{"sparsity", 0.5}}}}}}}), pruned_md).toMarkdown(),
             Contains("Exactly-zero weights: 0.00 % -> 50.00 % of the Conv/Gemm/MatMul weights; non-zero 2560 -> 1280."));
  Model same = gemm();
  CHECK_THAT(runPipeline(parse({{"passes", {"eliminate_dead"}}}), same).toText(false), !Contains("zeros "));
}
