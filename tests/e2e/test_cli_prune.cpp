// lwc prune end to end: sparsity reached, iterative = one-shot without recovery, bad input.
#include <catch2/catch.hpp>
#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lwc/analysis.h"
#include "lwc/metrics.h"
#include "lwc/model_io.h"
#include "lwc/npy.h"
#include "support/test_util.h"

using namespace lwc;
using lwc::test::runLwc;
using lwc::test::TempDir;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
std::string q(const fs::path& p) { return "'" + p.string() + "'"; }
fs::path td(const std::string& f) { return test::testdataDir() / f; }
std::string graphBytes(const fs::path& p) {
  Model m = loadModel(p);
  m.metadata_props.clear();
  return modelToProto(m).SerializeAsString();
}
}  // namespace

TEST_CASE("lwc prune reaches the sparsity, without recovery, 3 steps end where one step does", "[cli][prune]") {
  TempDir d;
  auto one = runLwc("-q prune " + q(td("resnet_fmnist.onnx")) + " --sparsity 0.6 -o " + q(d / "one.onnx") + " --eval " +
                    q(td("fmnist_sample")) + " --report " + q(d / "r.json"));
  INFO(one.err);
  REQUIRE(one.exit_code == 0);
  auto three = runLwc("-q prune " + q(td("resnet_fmnist.onnx")) + " --sparsity 0.6 --iters 3 -o " + q(d / "three.onnx"));
  REQUIRE(three.exit_code == 0);
  CHECK(graphBytes(d / "one.onnx") == graphBytes(d / "three.onnx"));
  const ModelStats st = analyzeModel(loadModel(d / "one.onnx"));
  // Every Conv with >= 1000 weights is at 60 %; the small first conv and the classifier stay dense.
  CHECK(double(st.weight_zeros) / double(st.weight_elements) > 0.55);
  std::ifstream f(d / "r.json");
  const auto rep = nlohmann::json::parse(f);
  CHECK(rep["final"]["weight_sparsity"].get<double>() > 0.55);
  CHECK(rep["stages"].back()["stats"]["layers_pruned"].get<int>() > 10);
  // The top-1 change as a paired test against the input model: the samples only one of the two
  // gets right account for the whole difference, and the p-value is McNemar's on them.
  const auto& ev = rep["final"]["eval"];
  const int64_t only_in = ev["only_input_right"], only_out = ev["only_this_right"], samples = ev["samples"];
  CHECK(only_in + only_out > 0);
  CHECK(double(only_out - only_in) / double(samples) ==
        Approx(ev["top1"].get<double>() - rep["input"]["eval"]["top1"].get<double>()).margin(1e-12));
  CHECK(ev["mcnemar_p"].get<double>() == Approx(mcnemarExactP(only_in, only_out)));
  CHECK(rep["input"]["eval"]["mcnemar_p"] == 1.0);
  // The report names the preprocessing the eval data got (preprocess.json beside the sample).
  CHECK(rep["eval_preprocessing"]["from"] == (td("fmnist_sample") / "preprocess.json").string());
  CHECK(rep["eval_preprocessing"]["std"][0].get<double>() == Approx(0.353));
  CHECK(rep["calib_data"].is_null());
  // Calibration images without their preprocessing: a warning naming the data, in the report too.
  auto bare = runLwc("prune " + q(td("resnet_fmnist.onnx")) + " --sparsity 0.3 --recover bias -o " + q(d / "b.onnx") +
                     " --calib " + q(td("fmnist_sample") / "png") + " --calib-limit 20 --report " + q(d / "b.json"));
  INFO(bare.err);
  REQUIRE(bare.exit_code == 0);
  CHECK_THAT(bare.err, Catch::Contains("warning: --calib: ImageFolder") && Catch::Contains("only scaled to [0, 1]"));
  std::ifstream fb(d / "b.json");
  const auto rb = nlohmann::json::parse(fb);
  CHECK_THAT(rb["calib_data"].get<std::string>(), Catch::Contains("ImageFolder"));
  CHECK(rb["calib_preprocessing"]["from"] == "default preprocessing");
  // Float arrays are fed as stored: a preprocess.json beside them does not reach them, and says so.
  fs::create_directories(d / "floats");
  writeNpy(d / "floats" / "images.npy", Tensor(DType::Float32, {4, 1, 28, 28}));
  fs::copy_file(td("fmnist_sample") / "preprocess.json", d / "floats" / "preprocess.json");
  auto stored = runLwc("prune " + q(td("resnet_fmnist.onnx")) + " --sparsity 0.3 --recover bias -o " + q(d / "c.onnx") +
                       " --calib " + q(d / "floats"));
  INFO(stored.err);
  REQUIRE(stored.exit_code == 0);
  CHECK_THAT(stored.err, Catch::Contains("warning: --calib: NumPy") && Catch::Contains("preprocess.json is not applied"));
}

TEST_CASE("lwc prune --recover lsq beats no recovery and is deterministic", "[cli][prune][lsq]") {
  TempDir d;
  auto prune = [&](const std::string& recover, const std::string& out) {
    const fs::path rep = d / (out + ".json");
    auto r = runLwc("-q prune " + q(td("resnet_fmnist.onnx")) + " --sparsity 0.7 --scope global --recover " + recover +
                    " --calib " + q(td("fmnist_sample")) + " --eval " + q(td("fmnist_sample")) + " -o " +
                    q(d / (out + ".onnx")) + " --report " + q(rep));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::ifstream f(rep);
    return nlohmann::json::parse(f);
  };
  const auto none = prune("none", "none"), lsq = prune("lsq", "lsq"), again = prune("lsq", "again");
  const double fp32 = none["input"]["eval"]["top1"].get<double>();
  const double t_none = none["final"]["eval"]["top1"].get<double>(), t_lsq = lsq["final"]["eval"]["top1"].get<double>();
  INFO("fp32 " << fp32 << " none " << t_none << " lsq " << t_lsq);
  CHECK(t_lsq > t_none + 0.1);  // measured: 0.092 -> 0.926 (FP32 0.952) on the 500-image sample
  CHECK(t_lsq > fp32 - 0.04);
  CHECK(lsq["final"]["weight_sparsity"].get<double>() == none["final"]["weight_sparsity"].get<double>());
  CHECK(lsq["stages"].back()["stats"]["layers_reconstructed"].get<int>() > 10);
  CHECK(graphBytes(d / "lsq.onnx") == graphBytes(d / "again.onnx"));
}

TEST_CASE("lwc prune warns that --calib without --recover is not used to recover accuracy", "[cli][prune]") {
  TempDir d;
  const std::string base = "prune " + q(td("lenet5_fmnist.onnx")) + " --sparsity 0.5 --calib " + q(td("fmnist_sample"));
  auto r = runLwc(base + " -o " + q(d / "a.onnx"));
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("--calib is given but --recover is none") && Contains("add --recover lsq"));
  r = runLwc(base + " --recover bias -o " + q(d / "b.onnx"));
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, !Contains("--recover is none"));
  // With --macs-reduction the data does choose the channels (it said the data was not used).
  r = runLwc("prune " + q(td("resnet_fmnist.onnx")) + " --macs-reduction 0.3 --bench-batch 0 --calib " +
             q(td("fmnist_sample")) + " --calib-limit 64 -o " + q(d / "c.onnx"));
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("the --calib data only chooses which groups' channels go") && Contains("add --recover lsq"));
}

TEST_CASE("lwc prune --pattern N:M sets the sparsity, --help shows the defaults", "[cli][prune]") {
  TempDir d;
  // 1:4 zeroes three of every four weights without a --sparsity; a --sparsity that agrees is fine.
  for (const std::string args : {"--pattern 1:4", "--pattern 2:4 --sparsity 0.5"}) {
    INFO(args);
    auto r = runLwc("-q prune " + q(td("lenet300_fmnist.onnx")) + " " + args + " -o " + q(d / "p.onnx"));
    REQUIRE(r.exit_code == 0);
    const ModelStats st = analyzeModel(loadModel(d / "p.onnx"));
    CHECK(double(st.weight_zeros) / double(st.weight_elements) ==
          Approx(args == "--pattern 1:4" ? 0.75 : 0.5).margin(0.01));
  }
  // lwc prune without --sparsity prunes 50 %: --help says so.
  auto h = runLwc("prune --help");
  CHECK_THAT(h.out, Contains("--sparsity FLOAT=0.5") && Contains("--min-params INT:NONNEGATIVE=1000") &&
                        Contains("--scope TEXT:{layer,global}=layer"));
  CHECK_THAT(h.out, !Contains("=[]") && !Contains("=-1") && !Contains("--channels FLOAT=0"));
}

TEST_CASE("lwc prune --criterion obs: the scope's sparsity, weights chosen in the lsq step, deterministic",
          "[cli][prune][lsq]") {
  TempDir d;
  auto prune = [&](const std::string& extra, const std::string& out) {
    const fs::path rep = d / (out + ".json");
    auto r = runLwc("-q prune " + q(td("lenet5_fmnist.onnx")) + " --sparsity 0.8 --scope global --recover lsq --calib " +
                    q(td("fmnist_sample")) + " -o " + q(d / (out + ".onnx")) + " --report " + q(rep) + " " + extra);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::ifstream f(rep);
    return nlohmann::json::parse(f);
  };
  const auto mag = prune("", "mag"), obs = prune("--criterion obs --obs-rounds 2", "obs"),
             again = prune("--criterion obs --obs-rounds 2", "again");
  const auto& sm = mag["stages"].back()["stats"];
  const auto& so = obs["stages"].back()["stats"];
  CHECK(so["zeros_in_pruned_layers"] == sm["zeros_in_pruned_layers"]);
  CHECK(so["layers_reconstructed"] == sm["layers_reconstructed"]);
  CHECK(obs["final"]["weight_sparsity"].get<double>() == mag["final"]["weight_sparsity"].get<double>());
  CHECK(graphBytes(d / "obs.onnx") != graphBytes(d / "mag.onnx"));
  CHECK(graphBytes(d / "obs.onnx") == graphBytes(d / "again.onnx"));
  CHECK_THAT(obs.dump(), Contains("obs selected"));
}

TEST_CASE("lwc prune --lsq-cv-rows: the classifier's ridge by cross-validation, named in the report", "[cli][prune][lsq]") {
  TempDir d;
  auto prune = [&](const std::string& extra, const std::string& out) {
    auto r = runLwc("-q prune " + q(td("lenet300_fmnist.onnx")) + " --sparsity 0.5 --scope global --recover lsq --calib " +
                    q(td("fmnist_sample")) + " -o " + q(d / (out + ".onnx")) + " --report " + q(d / (out + ".json")) + extra);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::ifstream f(d / (out + ".json"));
    return std::string(std::istreambuf_iterator<char>(f), {});
  };
  const std::string plain = prune("", "plain"), cv = prune(" --lsq-cv-rows 8", "cv");
  CHECK_THAT(plain, !Contains("cross-validation"));
  // 500 sample images: fewer than 8 rows per unknown in all three Gemm layers (785, 301, 101 inputs + 1).
  CHECK_THAT(cv, Contains("(4-fold cross-validation: 500 rows for 785 weights)"));
  CHECK_THAT(cv, Contains("(4-fold cross-validation: 500 rows for 101 weights)"));
  CHECK(graphBytes(d / "plain.onnx") != graphBytes(d / "cv.onnx"));
  auto bad = runLwc("-q prune " + q(td("lenet300_fmnist.onnx")) + " --sparsity 0.5 --recover lsq --calib " +
                    q(td("fmnist_sample")) + " --lsq-cv-rows -1 -o " + q(d / "bad.onnx"));
  CHECK(bad.exit_code == 1);
  CHECK(!fs::exists(d / "bad.onnx"));
}

TEST_CASE("lwc prune --macs-reduction: aligned channel counts, the MACs target, lsq beats none, deterministic",
          "[cli][prune][channels]") {
  TempDir d;
  auto prune = [&](const std::string& args, const std::string& out) {
    const fs::path rep = d / (out + ".json");
    auto r = runLwc("-q prune " + q(td("resnet_fmnist.onnx")) + " --macs-reduction 0.3 " + args + " --eval " +
                    q(td("fmnist_sample")) + " -o " + q(d / (out + ".onnx")) + " --report " + q(rep));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::ifstream f(rep);
    return nlohmann::json::parse(f);
  };
  const std::string calib = " --calib " + q(td("fmnist_sample"));
  const auto none = prune("--recover none --bench-batch 4", "none"),
             lsq = prune("--recover lsq --bench-batch 0" + calib, "lsq"),
             again = prune("--recover lsq --bench-batch 0" + calib, "again"), any = prune("--round-to 1 --bench-batch 0", "any");
  // Latency before/after in the lwc engine is in the report of the prune_channels stage.
  const auto& lat = none["stages"].back()["details"]["latency_ms"];
  CHECK(lat["batch"].get<int>() == 4);
  CHECK(lat["before"].get<double>() > 0);
  CHECK(lat["after"].get<double>() > 0);
  // (--bench-batch 0: no details at all; operator[] on a const json's missing key is undefined.)
  CHECK_FALSE(lsq["stages"].back().value("details", nlohmann::json::object()).contains("latency_ms"));
  for (const auto* r : {&none, &lsq, &any})
    CHECK((*r)["final"]["macs"].get<double>() <= 0.7 * (*r)["input"]["macs"].get<double>());
  const double t_none = none["final"]["eval"]["top1"].get<double>(), t_lsq = lsq["final"]["eval"]["top1"].get<double>();
  INFO("none " << t_none << " lsq " << t_lsq << " fp32 " << none["input"]["eval"]["top1"].get<double>());
  CHECK(t_lsq > t_none + 0.2);
  CHECK(graphBytes(d / "lsq.onnx") == graphBytes(d / "again.onnx"));
  // resnet_fmnist's channel counts are 16, 32 and 64: by default they stay multiples of 16.
  auto convChannels = [](const fs::path& p) {
    const Model m = loadModel(p);
    std::vector<int64_t> c;
    for (const auto& n : m.graph.nodes)
      if (n.op_type == "Conv") c.push_back(m.graph.initializers.at(n.inputs[1]).dim(0));
    return c;
  };
  for (int64_t c : convChannels(d / "lsq.onnx")) CHECK(c % 16 == 0);
  const auto free = convChannels(d / "any.onnx");
  CHECK(std::any_of(free.begin(), free.end(), [](int64_t c) { return c % 16 != 0; }));
}

TEST_CASE("lwc prune --ort-bench: ONNX Runtime's latency before and after channel pruning in the report",
          "[cli][prune][channels][ort]") {
  TempDir d;
  auto r = runLwc("-q prune " + q(td("resnet_fmnist.onnx")) + " --channels 0.5 --bench-batch 8 --ort-bench -o " +
                  q(d / "p.onnx") + " --report " + q(d / "r.json"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::ifstream f(d / "r.json");
  const auto rep = nlohmann::json::parse(f);
  const auto& ort = rep["stages"].back()["details"]["ort_latency_ms"];
  CHECK(ort["runtime"].get<std::string>() == "onnxruntime-node 1.30.0");
  CHECK(ort["batch"].get<int>() == 8);
  CHECK(ort["before"].get<double>() > 0);
  CHECK(ort["after"].get<double>() > 0);
  CHECK(ort["speedup"].get<double>() == Approx(ort["before"].get<double>() / ort["after"].get<double>()));
  // The models it timed were private temp files: nothing is left beside the output.
  CHECK(std::distance(fs::directory_iterator(d.path()), fs::directory_iterator()) == 2);
}

TEST_CASE("lwc prune: bad input gets one clear error and no output file", "[cli][prune]") {
  TempDir d;
  const fs::path model = td("lenet5_fmnist.onnx");
  auto bad = [&](const fs::path& m, const std::string& args, const std::string& expect) {
    INFO(args);
    test::checkOneLineError(runLwc("prune " + q(m) + " -o " + q(d / "out.onnx") + " " + args), expect);
    CHECK_FALSE(fs::exists(d / "out.onnx"));
  };
  bad(model, "--sparsity 1.0", "outside [0, 1)");
  bad(model, "--sparsity -0.1", "outside [0, 1)");
  bad(model, "--iters 0", "--iters 0");
  bad(model, "--iters 1001", "--iters 1001 is more than 1000 steps");
  // Option errors name the flag, not the pass option behind it ("prune step 1.pattern").
  bad(model, "--pattern 4:2", "lwc: error: --pattern: \"4:2\" is not unstructured or N:M with 1 <= N < M");
  // Wider than every layer: nothing pruned, and the model was written unchanged with exit 0.
  bad(model, "--pattern 1:100000", "--pattern: 1:100000 needs groups of 100000 input channels, and the widest layer of");
  bad(model, "--exclude conv_nine", "--exclude: no node or op type named 'conv_nine'");
  bad(model, "--channels 0.3 --exclude conv_nine", "lwc: error: prune_channels: --exclude: no node or op type named 'conv_nine'");
  bad(model, "--recover bias", "needs calibration data");
  bad(model, "--recover lsq", "needs calibration data");
  bad(model, "--channels 1.0", "--channels 1 is outside (0, 1)");
  // Out-of-range channel fractions used to fall through to 50 % magnitude pruning, exit 0.
  bad(model, "--channels 0", "--channels 0 is outside (0, 1)");
  bad(model, "--channels -0.5", "--channels -0.5 is outside (0, 1)");
  bad(model, "--channels nan", "--channels nan is outside (0, 1)");
  bad(model, "--macs-reduction -0.3", "--macs-reduction -0.3 is outside (0, 0.95]");
  bad(model, "--macs-reduction nan", "--macs-reduction nan is outside (0, 0.95]");
  // Options of the other kind of pruning were accepted and ignored.
  for (const char* opt : {"--include Conv", "--pattern 2:4", "--scope global", "--min-params 100000", "--iters 3"})
    bad(model, std::string("--channels 0.3 ") + opt, std::string(opt).substr(0, std::string(opt).find(' ')) + " applies to magnitude pruning");
  for (const char* opt : {"--importance l2", "--round-to 8", "--min-channels 4", "--bench-batch 8"})
    bad(model, std::string("--sparsity 0.5 ") + opt, std::string(opt).substr(0, std::string(opt).find(' ')) + " applies to channel pruning");
  bad(model, "--lsq-cv-rows nan", "--lsq-cv-rows nan must be a finite number");
  bad(model, "--macs-reduction 0.99", "--macs-reduction 0.99 is outside (0, 0.95]");
  bad(model, "--channels 0.3 --recover lsq", "needs calibration data");
  bad(model, "--criterion obs", "set recover to lsq");
  bad(model, "--obs-rounds 3", "--obs-rounds: applies to criterion obs");
  // Options that others make inert were accepted and changed nothing.
  bad(model, "--pattern 2:4 --sparsity 0.9", "--sparsity: 0.9 does not apply to pattern 2:4");
  bad(model, "--pattern 2:4 --scope global", "--scope: global applies to unstructured pruning");
  bad(model, "--sparsity 0.5 --lsq-cv-rows 8", "--lsq-cv-rows: applies to the least-squares recovery, but --recover is none");
  bad(model, "--channels 0.3 --lsq-cv-rows 8", "--lsq-cv-rows: applies to the least-squares recovery, but --recover is none");
  bad(model, "--sparsity 0.5 --lsq-cv-rows 0", "--lsq-cv-rows: applies to the least-squares recovery, but --recover is none");
  bad(model, "--channels 0.3 --ort-tool " + q(d / "no_such_tool.js"), "--ort-tool requires --ort-bench");
  bad(model, "--sparsity 0.5 --ort-tool " + q(d / "no_such_tool.js"), "--ort-tool requires --ort-bench");
  bad(model, "--channels 0.3 --criterion obs", "--criterion applies to magnitude pruning");
  bad(model, "--sparsity 0.5 --ort-bench", "--ort-bench applies to channel pruning");
  bad(model, "--channels 0.3 --ort-bench --bench-batch 0", "--ort-bench needs --bench-batch of at least 1");
  bad(model, "--channels 0.3 --ort-bench --ort-tool " + q(d / "no_such_tool.js"),
      "no_such_tool.js: --ort-bench needs ONNX Runtime's ort_tool.js");
  // A tool that fails while benchmarking: its error line comes through, and no model is written.
  fs::create_directories(d / "fake" / "node_modules" / "onnxruntime-node");
  test::writeFile(d / "fake" / "ort_tool.js", "console.error('ort_tool: error: m.onnx: cannot load'); process.exit(1);\n");
  bad(model, "--channels 0.3 --bench-batch 1 --ort-bench --ort-tool " + q(d / "fake" / "ort_tool.js"),
      "ONNX Runtime benchmark failed: ort_tool: error: m.onnx: cannot load");
  REQUIRE(runLwc("-q quantize " + q(model) + " --calib " + q(td("fmnist_sample")) + " -o " + q(d / "q.onnx") +
                 " --bench-batch 0 --layer-samples 0").exit_code == 0);
  bad(d / "q.onnx", "--sparsity 0.5", "already quantized");
  // bn_gamma on models without BatchNormalization: lenet5 was refused, while tinyformer, pruned
  // before the constants were folded, showed no prunable group and was written unchanged (exit 0).
  bad(model, "--channels 0.3 --importance bn_gamma", "bn_gamma needs BatchNormalization nodes");
  bad(td("tinyformer_fmnist.onnx"), "--channels 0.3 --importance bn_gamma", "bn_gamma needs BatchNormalization nodes");
}

TEST_CASE("lwc prune --importance bn_gamma runs after the cleanup steps before fuse_batchnorm", "[cli][prune][channels]") {
  TempDir d;
  auto r = runLwc("-q prune " + q(td("resnet_fmnist.onnx")) + " --channels 0.3 --importance bn_gamma --bench-batch 0 -o " +
                  q(d / "b.onnx") + " --report " + q(d / "b.json"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  std::vector<std::string> order;
  std::ifstream f(d / "b.json");
  const auto rep = nlohmann::json::parse(f);
  for (const auto& st : rep["stages"]) order.push_back(st["pass"].get<std::string>());
  const auto at = [&](const std::string& pass) { return std::find(order.begin(), order.end(), pass) - order.begin(); };
  CHECK(at("fold_constants") < at("prune_channels"));
  CHECK(at("prune_channels") < at("fuse_batchnorm"));
  CHECK(at("fuse_batchnorm") < static_cast<long>(order.size()));
  const Model m = loadModel(d / "b.onnx");
  CHECK(std::none_of(m.graph.nodes.begin(), m.graph.nodes.end(),
                     [](const Node& n) { return n.op_type == "BatchNormalization"; }));  // folded after pruning
}

TEST_CASE("lwc prune --channels: a conv before x.view(x.size(0), -1) is pruned as before torch.flatten",
          "[cli][prune][channels]") {
  // lenet5_fmnist with its Flatten replaced by what torch.onnx.export writes for
  // x.view(x.size(0), -1): Shape -> Gather(0) -> Unsqueeze -> Concat(., [-1]) -> Reshape.
  TempDir d;
  Model m = loadModel(td("lenet5_fmnist.onnx"));
  auto& nodes = m.graph.nodes;
  const auto it = std::find_if(nodes.begin(), nodes.end(), [](const Node& n) { return n.op_type == "Flatten"; });
  REQUIRE(it != nodes.end());
  const std::string x = it->inputs[0], y = it->outputs[0];
  m.graph.initializers.set("i0", Tensor::scalar<int64_t>(0));
  m.graph.initializers.set("ax", Tensor::fromVector<int64_t>({1}, {0}));
  m.graph.initializers.set("m1", Tensor::fromVector<int64_t>({1}, {-1}));
  auto node = [](const std::string& op, std::vector<std::string> in, const std::string& out) {
    Node n;
    n.op_type = op;
    n.name = "/view/" + op;
    n.inputs = std::move(in);
    n.outputs = {out};
    return n;
  };
  std::vector<Node> chain = {node("Shape", {x}, "s"), node("Gather", {"s", "i0"}, "b"),
                             node("Unsqueeze", {"b", "ax"}, "bu"), node("Concat", {"bu", "m1"}, "t"),
                             node("Reshape", {x, "t"}, y)};
  chain[3].setAttr("axis", int64_t{0});
  const auto pos = nodes.erase(it);
  nodes.insert(pos, chain.begin(), chain.end());
  saveModel(m, d / "view.onnx");

  auto prune = [&](const fs::path& in, const std::string& out) {
    auto r = runLwc("prune " + q(in) + " --channels 0.5 --round-to 4 --bench-batch 0 -o " + q(d / out));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return r.err;
  };
  const std::string log_flat = prune(td("lenet5_fmnist.onnx"), "flat.onnx"), log_view = prune(d / "view.onnx", "pview.onnx");
  CHECK_THAT(log_view, !Contains("left alone (read by Shape"));
  CHECK_THAT(log_flat, !Contains("channels are not the only non-batch dimension"));
  auto layerShapes = [](const fs::path& p) {
    const Model mm = loadModel(p);
    std::vector<Shape> s;
    for (const auto& n : mm.graph.nodes)
      if (n.op_type == "Conv" || n.op_type == "Gemm") s.push_back(mm.graph.initializers.at(n.inputs[1]).shape());
    return s;
  };
  const auto flat = layerShapes(d / "flat.onnx");
  REQUIRE(flat.size() == 5);
  CHECK(flat[1][0] == 8);                // conv2: 16 -> 8 channels
  CHECK(flat[2] == Shape{60, 200});      // fc1 reads 8 x 5 x 5 inputs
  CHECK(layerShapes(d / "pview.onnx") == flat);
  const Model v = loadModel(d / "pview.onnx");
  CHECK(std::none_of(v.graph.nodes.begin(), v.graph.nodes.end(), [](const Node& n) { return n.op_type == "Shape"; }));
  auto top1 = [&](const std::string& f) {
    auto r = runLwc("eval " + q(d / f) + " --data " + q(td("fmnist_sample")) + " --json");
    REQUIRE(r.exit_code == 0);
    return nlohmann::json::parse(r.out)["top1_correct"].get<int64_t>();
  };
  CHECK(top1("pview.onnx") == top1("flat.onnx"));
}

TEST_CASE("lwc prune --channels on tinyformer: the MLPs' hidden widths shrink, lsq re-fits the second Linear",
          "[cli][prune][channels][lsq]") {
  // The two encoder blocks' MLPs (64 -> 128 -> 64, GELU written out with Erf) run on tokens: their
  // channels are on the last axis. Attention, the residual stream and the embedding stay.
  TempDir d;
  auto prune = [&](const std::string& args, const std::string& out) {
    const fs::path rep = d / (out + ".json");
    auto r = runLwc("-q prune " + q(td("tinyformer_fmnist.onnx")) + " --channels 0.5 --bench-batch 0 " + args +
                    " --eval " + q(td("fmnist_sample")) + " -o " + q(d / (out + ".onnx")) + " --report " + q(rep));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    std::ifstream f(rep);
    return nlohmann::json::parse(f);
  };
  const auto none = prune("--recover none", "none"), lsq = prune("--recover lsq --calib " + q(td("fmnist_sample")), "lsq");
  const auto& stats = none["stages"].back()["stats"];
  CHECK(stats["groups_pruned"].get<int>() == 2);
  CHECK(stats["channels_removed"].get<int>() == 128);
  CHECK(lsq["stages"].back()["stats"]["layers_reconstructed"].get<int>() == 2);
  const Model m = loadModel(d / "lsq.onnx");
  int fc1 = 0, fc2 = 0;
  for (const auto& n : m.graph.nodes) {
    if (n.op_type != "MatMul" || !m.graph.initializers.contains(n.inputs[1])) continue;
    const Shape w = m.graph.initializers.at(n.inputs[1]).shape();
    fc1 += w == Shape{64, 64} && n.name.find("fc1") != std::string::npos;
    fc2 += w == Shape{64, 64} && n.name.find("fc2") != std::string::npos;
  }
  CHECK(fc1 == 2);
  CHECK(fc2 == 2);
  CHECK(none["final"]["params"].get<double>() < none["input"]["params"].get<double>());
  const double s_none = none["final"]["eval"]["output_sqnr_db"].get<double>(),
               s_lsq = lsq["final"]["eval"]["output_sqnr_db"].get<double>();
  INFO("SQNR none " << s_none << " dB, lsq " << s_lsq << " dB");
  CHECK(s_lsq > s_none + 3);
}
