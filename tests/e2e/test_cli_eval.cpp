// lwc eval and lwc compare end to end on the committed models and real data.
#include <catch2/catch.hpp>
#include <sched.h>
#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "lwc/analysis.h"
#include "lwc/metrics.h"
#include "lwc/model_io.h"
#include "lwc/npy.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;
using lwc::test::runLwc;
using lwc::test::TempDir;
namespace fs = std::filesystem;

namespace {
const fs::path kIdx = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }

nlohmann::json models() {
  std::ifstream f(test::testdataDir() / "models.json");
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

// lwc compare A B ARGS --json, which must succeed.
nlohmann::json compareJson(const fs::path& a, const fs::path& b, const std::string& args) {
  auto r = runLwc("compare " + q(a) + " " + q(b) + args + " --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.out);
}

nlohmann::json evalJson(const fs::path& model, const std::string& data_args) {
  auto r = runLwc("eval " + q(model) + " " + data_args + " --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.out);
}
}  // namespace

TEST_CASE("lwc eval reproduces PyTorch's accuracy on the 10 000 test images (IDX)", "[cli][eval]") {
  REQUIRE(fs::exists(kIdx));  // dataset-fashion-mnist (scripts/setup.sh)
  const fs::path pre = test::testdataDir() / "fmnist_sample/preprocess.json";
  const auto all = models();
  for (const auto& [name, m] : all.items()) {
    INFO(name);
    const auto j = evalJson(test::testdataDir() / m["file"].get<std::string>(),
                            "--data " + q(kIdx) + " --preprocess " + q(pre));
    CHECK(j["count"] == 10000);
    const int64_t want = m["top1_correct"].get<int64_t>();
    CHECK(std::abs(j["top1_correct"].get<int64_t>() - want) <= 2);
    CHECK(j["images_per_s"].get<double>() > 0);
    CHECK(j["batch"] == 100);  // the speed's batch and threads are part of the figure
    CHECK(j["threads"].get<int>() >= 1);
  }
}

TEST_CASE("lwc eval on the bundled PNG and .npy samples", "[cli][eval]") {
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  const auto all = models();
  for (const auto& [name, m] : all.items()) {
    INFO(name);
    const fs::path model = test::testdataDir() / m["file"].get<std::string>();
    const int64_t want = m["sample500_top1_correct"].get<int64_t>();
    const auto png = evalJson(model, "--data " + q(sample / "png") + " --preprocess " + q(sample / "preprocess.json"));
    CHECK(png["count"] == 500);
    CHECK(png["top1_correct"].get<int64_t>() == want);
    const auto npy = evalJson(model, "--data " + q(sample / "images.npy") + " --labels " + q(sample / "labels.npy") +
                                         " --preprocess " + q(sample / "preprocess.json"));
    CHECK(npy["top1_correct"].get<int64_t>() == want);
  }
}

TEST_CASE("integer options are decimal: leading zeros do not make them octal", "[cli][eval]") {
  // CLI11 reads integers in base 0: --limit 010 evaluated 8 samples.
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  const auto j = evalJson(test::testdataDir() / "lenet5_fmnist.onnx", "--data " + q(sample / "images.npy") + " --limit 010");
  CHECK(j["count"] == 10);
  CHECK(evalJson(test::testdataDir() / "lenet5_fmnist.onnx", "--data " + q(sample / "images.npy") + " --limit 000")["count"] == 500);
}

TEST_CASE("lwc compare: a model against itself, and against a perturbed copy", "[cli][compare]") {
  TempDir d;
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  const fs::path model = test::testdataDir() / "resnet_fmnist.onnx";
  const std::string data = " --data " + q(sample / "png") + " --preprocess " + q(sample / "preprocess.json") + " --limit 100";

  const auto js = compareJson(model, model, data + " --per-layer");
  CHECK(js["outputs"][0]["top1_agreement"] == 1.0);
  CHECK(js["outputs"][0]["sqnr_db"] == "inf");
  CHECK(js["outputs"][0]["max_abs_diff"] == 0.0);
  CHECK(js["layers"].size() > 40);
  // The sample's labels: both models the same, nothing only one gets right, McNemar p = 1.
  const auto& ls = js["outputs"][0]["labels"];
  CHECK(ls["samples"] == 100);
  CHECK(ls["reference_top1"] == ls["candidate_top1"]);
  CHECK(ls["reference_top1"].get<double>() > 0.8);
  CHECK(ls["only_reference_right"] == 0);
  CHECK(ls["only_candidate_right"] == 0);
  CHECK(ls["mcnemar_p"] == 1.0);

  // Perturb one layer (the scale of a BatchNormalization late in the network): its output must come
  // out as the worst tensor and as the first that differs.
  Model m = loadModel(model);
  std::string perturbed_out;
  for (const auto& n : m.graph.nodes)
    if (n.name == "/layers/layers.5/bn2/BatchNormalization") {
      Tensor* w = m.graph.initializers.find(n.inputs[1]);
      REQUIRE(w);
      Tensor nw = w->clone();
      std::mt19937 rng(5);
      std::normal_distribution<float> noise(0.0f, 1.0f);
      float* p = nw.data<float>();
      for (int64_t i = 0; i < nw.numel(); ++i) p[i] += 0.5f * std::fabs(p[i]) * noise(rng);
      *w = nw;
      perturbed_out = n.outputs[0];
    }
  REQUIRE(!perturbed_out.empty());
  saveModel(m, d / "perturbed.onnx");
  const auto jp = compareJson(model, d / "perturbed.onnx", data + " --per-layer");
  CHECK(jp["layers"][0]["name"] == perturbed_out);
  CHECK(jp["first_divergence"] == perturbed_out);
  CHECK(jp["layers"][0]["sqnr_db"].get<double>() < 40.0);
  // everything before the perturbed conv is untouched
  for (const auto& l : jp["layers"])
    if (l["name"] == "/stem/stem.0/Conv_output_0") CHECK(l["sqnr_db"] == "inf");
  CHECK(jp["outputs"][0]["top1_agreement"].get<double>() < 1.0 + 1e-12);
  // The top-1 difference is exactly the samples only one model gets right, and the p-value is the
  // McNemar test on those counts; the human-readable form prints the same.
  const auto& lp = jp["outputs"][0]["labels"];
  const int64_t only_a = lp["only_reference_right"], only_b = lp["only_candidate_right"];
  CHECK(lp["reference_top1"].get<double>() - lp["candidate_top1"].get<double>() == Approx(double(only_a - only_b) / 100.0));
  CHECK(lp["reference_top1"] == ls["reference_top1"]);
  CHECK(lp["mcnemar_p"].get<double>() == Approx(mcnemarExactP(only_a, only_b)));
  auto text = runLwc("compare " + q(model) + " " + q(d / "perturbed.onnx") + data);
  REQUIRE(text.exit_code == 0);
  CHECK_THAT(text.out, Catch::Contains("samples only the reference gets right") && Catch::Contains("exact McNemar p = "));
  // Unlabelled data (the images without their labels.npy): no label section.
  fs::create_directory(d / "bare");
  fs::copy_file(sample / "images.npy", d / "bare" / "images.npy");
  auto bare = runLwc("compare " + q(model) + " " + q(model) + " --data " + q(d / "bare" / "images.npy") +
                     " --preprocess " + q(sample / "preprocess.json") + " --limit 20 --json");
  INFO(bare.err);
  REQUIRE(bare.exit_code == 0);
  CHECK_FALSE(nlohmann::json::parse(bare.out)["outputs"][0].contains("labels"));
}

TEST_CASE("lwc compare --per-layer of a model and its quantized copy: each shared name holds the same quantity",
          "[cli][compare][quantize]") {
  // The quantizer absorbs a ReLU into the uint8 QuantizeLinear after its Conv. It used to give the
  // Conv's output the ReLU's output name: compare then set the unclipped Conv output against the
  // float ReLU output and showed lenet5's ReLUs at -5 to +0.5 dB (the quantizer's own table: 38-42).
  TempDir d;
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  const fs::path model = test::testdataDir() / "lenet5_fmnist.onnx";
  auto r = runLwc("quantize " + q(model) + " --calib " + q(sample / "images.npy") + " --preprocess " +
                  q(sample / "preprocess.json") + " --layer-samples 0 -o " + q(d / "q.onnx"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = compareJson(model, d / "q.onnx", " --data " + q(sample / "images.npy") + " --preprocess " +
                                                       q(sample / "preprocess.json") + " --limit 100 --per-layer");
  REQUIRE(j["layers"].size() >= 6);
  for (const auto& l : j["layers"]) {
    INFO(l.dump());
    CHECK(l["sqnr_db"].get<double>() > 30.0);
  }
  // The QDQ file's QuantizeLinear outputs are int8 copies of float tensors compared above: none is
  // counted as left out.
  CHECK(j["candidate_integer_tensors"] == 0);

  // In QOperator form the integer ops' outputs have no float twin, so fewer tensors are shared; the
  // ones left out were skipped without a word. They are counted and the text says what to do.
  r = runLwc("quantize " + q(model) + " --calib " + q(sample / "images.npy") + " --preprocess " +
             q(sample / "preprocess.json") + " --layer-samples 0 --format qoperator -o " + q(d / "qop.onnx"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const std::string data = " --data " + q(sample / "images.npy") + " --preprocess " + q(sample / "preprocess.json") +
                           " --limit 20 --per-layer";
  const auto jq = compareJson(model, d / "qop.onnx", data);
  CHECK(jq["layers"].size() < j["layers"].size());
  CHECK(jq["candidate_integer_tensors"].get<int>() >= 4);  // at least the four QLinearConv outputs
  const auto text = runLwc("compare " + q(model) + " " + q(d / "qop.onnx") + data);
  REQUIRE(text.exit_code == 0);
  CHECK_THAT(text.out, Catch::Contains("of the candidate are 8-bit integers with no 8-bit counterpart in the reference"));
  CHECK_THAT(text.out, Catch::Contains("compare the model's QDQ form (lwc quantize --format qdq)"));
  // Two QOperator files share their 8-bit tensors by name: nothing is reported as left out.
  CHECK(compareJson(d / "qop.onnx", d / "qop.onnx", data)["candidate_integer_tensors"] == 0);
}

TEST_CASE("lwc compare --per-layer: float rounding is no divergence, a channel-pruned tensor is one", "[cli][compare]") {
  TempDir d;
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  const fs::path model = test::testdataDir() / "resnet_fmnist.onnx";
  const std::string data = " --data " + q(sample / "images.npy") + " --preprocess " + q(sample / "preprocess.json") +
                           " --limit 50 --per-layer";
  // BatchNorm folded: every tensor after the first BatchNorm differs in the last bits (above 120 dB),
  // which used to name the stem's BatchNorm output as where "the damage starts".
  REQUIRE(runLwc("fuse " + q(model) + " -o " + q(d / "fused.onnx")).exit_code == 0);
  const auto jf = compareJson(model, d / "fused.onnx", data);
  CHECK(jf["first_divergence"].is_null());
  CHECK(jf["other_shapes"].empty());
  bool some_rounding = false;
  for (const auto& l : jf["layers"]) some_rounding = some_rounding || l["max_abs_diff"].get<double>() > 0;
  CHECK(some_rounding);  // so the rule, not identical tensors, decided
  CHECK_THAT(runLwc("compare " + q(model) + " " + q(d / "fused.onnx") + data).out,
             Catch::Contains("no shared tensor differs beyond float rounding"));

  // Channels removed: those tensors have fewer channels; listed, not silently left out, and the
  // first of them is where the models part.
  auto r = runLwc("prune " + q(model) + " --channels 0.3 -o " + q(d / "slim.onnx"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto js = compareJson(model, d / "slim.onnx", data);
  REQUIRE(js["other_shapes"].size() > 0);
  const auto& first = js["other_shapes"][0];  // in execution order: the first is where they part
  CHECK(first["name"] == js["first_divergence"]);
  CHECK(first["reference_shape"][1].get<int64_t>() > first["candidate_shape"][1].get<int64_t>());
  bool listed = false;
  for (const auto& o : js["other_shapes"]) listed = listed || o["name"] == js["first_divergence"];
  CHECK(listed);
  for (const auto& l : js["layers"])
    for (const auto& o : js["other_shapes"]) CHECK(l["name"] != o["name"]);
  CHECK_THAT(runLwc("compare " + q(model) + " " + q(d / "slim.onnx") + data).out,
             Catch::Contains("with another shape in the candidate (not compared)"));
}

TEST_CASE("lwc compare reads [N, C, 1, 1] scores as eval does, and refuses labels the model cannot predict",
          "[cli][compare]") {
  TempDir d;
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  // lenet5 with its logits reshaped to [N, 10, 1, 1], a convolutional head's shape: agreement and
  // the labels section were missing for it.
  Model m = loadModel(test::testdataDir() / "lenet5_fmnist.onnx");
  const std::string logits = m.graph.outputs[0].name;
  for (auto& n : m.graph.nodes)
    for (auto& o : n.outputs)
      if (o == logits) o = "flat_logits";
  Tensor shape(DType::Int64, {4});
  const int64_t dims[4] = {-1, 10, 1, 1};
  std::copy(dims, dims + 4, shape.data<int64_t>());
  m.graph.initializers.set("head_shape", shape);
  Node r;
  r.op_type = "Reshape";
  r.name = "head";
  r.inputs = {"flat_logits", "head_shape"};
  r.outputs = {logits};
  m.graph.nodes.push_back(r);
  m.graph.outputs[0].shape.reset();  // no declared class count: only compare's own check sees the labels
  saveModel(m, d / "nc11.onnx");
  const std::string data = " --data " + q(sample / "images.npy") + " --preprocess " + q(sample / "preprocess.json");
  const auto j = compareJson(d / "nc11.onnx", d / "nc11.onnx", data)["outputs"][0];
  CHECK(j["top1_agreement"] == 1.0);
  REQUIRE(j.contains("labels"));
  CHECK(j["labels"]["samples"] == 500);
  // The same images with one label out of the 10 classes: an error, as in lwc eval (compare
  // counted it as a wrong answer of both models).
  fs::create_directory(d / "bad");
  fs::copy_file(sample / "images.npy", d / "bad" / "images.npy");
  Tensor labels = readNpy(sample / "labels.npy");
  labels.data<int64_t>()[3] = 12;
  writeNpy(d / "bad" / "labels.npy", labels);
  test::checkOneLineError(runLwc("compare " + q(d / "nc11.onnx") + " " + q(d / "nc11.onnx") + " --data " +
                                 q(d / "bad" / "images.npy") + " --preprocess " + q(sample / "preprocess.json")),
                          "label 12 of sample 3 is outside the 10 classes of output");
}

TEST_CASE("lwc pins its OpenMP threads only when they take every CPU it may use", "[cli][bench]") {
  // --threads 1 on two CPUs was pinned to the first, with the main thread: with another process
  // busy there it ran at half speed while the other CPU idled.
  cpu_set_t cpus;
  REQUIRE(::sched_getaffinity(0, sizeof cpus, &cpus) == 0);
  const int n = CPU_COUNT(&cpus);
  const fs::path model = test::testdataDir() / "lenet5_fmnist.onnx";
  auto binding = [&](const std::string& threads) {  // libgomp's OMP_PROC_BIND in the process that ran
    auto r = test::runCommand("OMP_DISPLAY_ENV=TRUE '" + std::string(LWC_EXE) + "' bench " + q(model) + " --iters 1 " + threads);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const std::string key = "OMP_PROC_BIND = '";
    const size_t at = r.err.rfind(key);  // printed again after lwc re-executes itself with its settings
    REQUIRE(at != std::string::npos);
    return r.err.substr(at + key.size(), r.err.find('\'', at + key.size()) - at - key.size());
  };
  CHECK(binding("") == "CLOSE");
  CHECK(binding("--threads " + std::to_string(n)) == "CLOSE");
  CHECK(binding("--threads 0") == "CLOSE");
  if (n > 1) {
    CHECK(binding("--threads 1") == "FALSE");
    CHECK(binding("--threads=1") == "FALSE");
  } else {
    WARN("one CPU: the unpinned case (fewer threads than CPUs) cannot occur here");
  }
}

TEST_CASE("lwc bench on random inputs and on data", "[cli][bench]") {
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  const fs::path model = test::testdataDir() / "lenet5_fmnist.onnx";
  for (const std::string& extra : {std::string(), " --data " + q(sample / "png") + " --preprocess " + q(sample / "preprocess.json")}) {
    auto r = runLwc("bench " + q(model) + " --batch 4 --iters 5 --warmup 1 --json" + extra);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    auto j = nlohmann::json::parse(r.out);
    CHECK(j["batch"] == 4);
    CHECK(j["iters"] == 5);
    CHECK(j["median_ms"].get<double>() > 0);
    CHECK(j["p90_ms"].get<double>() >= j["median_ms"].get<double>());
    CHECK(j["items_per_s"].get<double>() > 0);
    CHECK(j["threads"].get<int>() > 0);  // the count it ran with, not the option's 0
  }
  auto one = runLwc("bench " + q(model) + " --iters 2 --threads 1 --json");
  REQUIRE(one.exit_code == 0);
  CHECK(nlohmann::json::parse(one.out)["threads"] == 1);
  // --profile (on stdout, with the results): time per op type; with -v also every node (lenet5's
  // two Conv nodes, run in NHWC, each listed by name).
  auto by_op = runLwc("bench " + q(model) + " --batch 2 --iters 3 --warmup 0 --profile");
  REQUIRE(by_op.exit_code == 0);
  CHECK_THAT(by_op.out, Catch::Contains("ConvNhwc [dnnl]"));
  CHECK_THAT(by_op.out, !Catch::Contains("node "));
  CHECK_THAT(by_op.out, Catch::Contains("sum of the nodes' medians over 3 timed runs"));
  // Warm-up runs (the first prepares the kernels) are left out of the profile.
  auto warm = runLwc("bench " + q(model) + " --batch 2 --iters 4 --warmup 2 --profile");
  REQUIRE(warm.exit_code == 0);
  CHECK_THAT(warm.out, Catch::Contains("over 4 timed runs"));
  auto per_node = runLwc("-v bench " + q(model) + " --batch 2 --iters 3 --warmup 0 --profile");
  REQUIRE(per_node.exit_code == 0);
  size_t convs = 0;
  for (size_t at = per_node.out.find("ConvNhwc '/conv"); at != std::string::npos; at = per_node.out.find("ConvNhwc '/conv", at + 1))
    ++convs;
  CHECK(convs == 2);
  auto too_big = runLwc("bench " + q(model) + " --batch 1000 --iters 1 --data " + q(sample / "png"));
  CHECK(too_big.exit_code == 1);
  CHECK_THAT(too_big.err, Catch::Contains("fewer than --batch 1000"));
}

TEST_CASE("lwc bench and lwc exec split a large batch, say so, and --no-split-batch turns it off", "[cli][bench]") {
  // mnv2_fmnist at batch 500: its first layers' activations take more than 24 MB over the batch.
  TempDir d;
  const fs::path model = test::testdataDir() / "mnv2_fmnist.onnx";
  auto split = runLwc("bench " + q(model) + " --batch 500 --iters 1 --warmup 0 --json");
  INFO(split.err);
  REQUIRE(split.exit_code == 0);
  CHECK_THAT(nlohmann::json::parse(split.out)["batch_split"].get<std::string>(),
             Catch::StartsWith("the first ") && Catch::Contains(" slices of "));
  auto verbose = runLwc("-v bench " + q(model) + " --batch 500 --iters 1 --warmup 0");
  CHECK_THAT(verbose.err, Catch::Contains("batch split: the first "));
  auto whole = runLwc("bench " + q(model) + " --batch 500 --iters 1 --warmup 0 --json --no-split-batch");
  REQUIRE(whole.exit_code == 0);
  CHECK(nlohmann::json::parse(whole.out)["batch_split"] == "");
  // The same bytes either way.
  REQUIRE(runLwc("exec " + q(model) + " --random-batch 500 --seed 4 --outdir " + q(d / "a")).exit_code == 0);
  REQUIRE(runLwc("exec " + q(model) + " --random-batch 500 --seed 4 --no-split-batch --outdir " + q(d / "b")).exit_code == 0);
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(d / "a")) {
    if (e.path().extension() != ".npy") continue;  // inputs/ holds the random inputs
    ++files;
    CHECK(readNpy(e.path()).bitEqual(readNpy(d / "b" / e.path().filename())));
  }
  CHECK(files == 1);
}

TEST_CASE("an input whose dimensions only the data fixes: bench asks for --data, quantize times at the data's shape",
          "[cli][bench]") {
  // As torch.onnx.export with dynamic_axes on height and width writes it (here every dimension).
  // Before 2026-12-01 bench filled the unknown dimensions with 1 and failed inside MaxPool, and
  // quantize's and prune's latency filled them with the batch size, so the whole command ended in
  // "input has 32 channels but the weights expect 1" after quantizing. Now the reports time at the
  // shape of the command's data, and without data they leave the latency out and say why.
  TempDir d;
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  Model m = loadModel(test::testdataDir() / "lenet5_fmnist.onnx");
  for (auto& dim : *m.graph.inputs[0].shape) dim = Dim{};
  saveModel(m, d / "dyn.onnx");
  auto r = runLwc("bench " + q(d / "dyn.onnx") + " --iters 2");
  CHECK(r.exit_code == 1);
  CHECK(r.err == "lwc: error: " + (d / "dyn.onnx").string() +
                     ": input 'input' has unknown dimensions besides the batch ([?,?,?,?]); lwc bench makes random inputs of "
                     "the declared shape: give --data DIR to feed real samples instead\n");
  r = runLwc("bench " + q(d / "dyn.onnx") + " --batch 4 --iters 2 --json --data " + q(sample));
  CHECK(r.exit_code == 0);
  const std::string note = "latency not measured: input 'input' has unknown dimensions besides the batch ([?,?,?,?])";
  r = runLwc("quantize " + q(d / "dyn.onnx") + " --calib " + q(sample) + " --calib-samples 16 --layer-samples 0 -o " +
             q(d / "q.onnx") + " --report " + q(d / "q.json"));
  INFO(r.err);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("latency measured at the data's sample shape [1,28,28], which the model input leaves open"));
  CHECK(fs::exists(d / "q.onnx"));
  const auto lat = nlohmann::json::parse(std::ifstream(d / "q.json"))["stages"].back()["details"]["latency_ms"];
  CHECK(lat["sample_shape"] == nlohmann::json::array({1, 28, 28}));
  CHECK(lat["fp32"].get<double>() > 0);
  CHECK(lat["int8"].get<double>() > 0);
  r = runLwc("quantize " + q(d / "dyn.onnx") + " --mode dynamic -o " + q(d / "qd.onnx"));
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains(note));
  r = runLwc("prune " + q(d / "dyn.onnx") + " --channels 0.3 -o " + q(d / "p.onnx"));
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains(note));
  CHECK_THAT(r.out, !Catch::Contains("latency"));
  CHECK(fs::exists(d / "p.onnx"));
}

TEST_CASE("a float16 model: eval and compare feed it half-precision images, quantize and prune say why they stop",
          "[cli][eval]") {
  // lenet5 with every weight and its input and output in float16, as a GPU export writes it.
  TempDir d;
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  Model m = loadModel(test::testdataDir() / "lenet5_fmnist.onnx");
  for (auto& [name, t] : m.graph.initializers.items())
    if (t.dtype() == DType::Float32) t = t.cast(DType::Float16);
  m.graph.inputs[0].dtype = m.graph.outputs[0].dtype = DType::Float16;
  m.graph.value_info.clear();
  saveModel(m, d / "half.onnx");
  auto r = runLwc("eval " + q(d / "half.onnx") + " --data " + q(sample) + " --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto float_run = runLwc("eval " + q(test::testdataDir() / "lenet5_fmnist.onnx") + " --data " + q(sample) + " --json");
  REQUIRE(float_run.exit_code == 0);
  const double top1 = nlohmann::json::parse(r.out)["top1"].get<double>();
  CHECK(std::abs(top1 - nlohmann::json::parse(float_run.out)["top1"].get<double>()) <= 0.004);  // 2 of 500 images
  r = runLwc("compare " + q(test::testdataDir() / "lenet5_fmnist.onnx") + " " + q(d / "half.onnx") + " --data " +
             q(sample) + " --json");
  REQUIRE(r.exit_code == 0);
  const auto c = nlohmann::json::parse(r.out);
  INFO(r.out);
  CHECK(c["outputs"][0]["top1_agreement"].get<double>() >= 0.99);
  CHECK(c["outputs"][0]["sqnr_db"].get<double>() > 40);
  const std::string hint = "(its weights are float16, e.g. Conv '/conv1/Conv': lwc prunes and quantizes float32 models; "
                           "convert it to float32 first)";
  for (const std::string& cmd : {"quantize --calib " + q(sample), std::string("quantize --mode dynamic"),
                                 std::string("prune --sparsity 0.5"), std::string("prune --channels 0.3")}) {
    INFO(cmd);
    r = runLwc(cmd + " " + q(d / "half.onnx") + " -o " + q(d / "out.onnx"));
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains(hint));
    CHECK_FALSE(fs::exists(d / "out.onnx"));
  }
}

TEST_CASE("exec, eval and compare reject bad arguments with one line and exit 1", "[cli][eval]") {
  TempDir d;
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  const fs::path lenet = test::testdataDir() / "lenet5_fmnist.onnx";
  Model two = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 1, 28, 28] a, float[N, 1, 28, 28] b) => (float[N, 1, 28, 28] y, float[N, 1, 28, 28] z)
{
  y = Add (a, b)
  z = Sub (a, b)
}
)");
  saveModel(two, d / "two.onnx");
  writeNpy(d / "wide.npy", Tensor(DType::Float32, {2, 3, 28, 28}));
  writeNpy(d / "two.npy", Tensor(DType::Float32, {2, 1, 28, 28}));
  saveModel(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g () => (float[2] y) {
  y = Constant <value = float[2] {1, 2}> ()
}
)"),
            d / "noin.onnx");
  saveModel(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 1, H, W] x) => (float[N, 1, H2, W2] y) {
  y = MaxPool <kernel_shape = [2, 2]> (x)
}
)"),
            d / "hw.onnx");
  const std::string data = " --data " + q(sample / "png") + " --preprocess " + q(sample / "preprocess.json");
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"exec " + q(lenet) + " --input nonsense --outdir " + q(d / "o1"), "expected NAME=FILE.npy"},
      {"exec " + q(lenet) + " --input ghost=" + q(sample / "images.npy") + " --outdir " + q(d / "o2"), "no input of that name"},
      {"eval " + q(d / "two.onnx") + data, "2 inputs"},
      {"compare " + q(lenet) + " " + q(d / "two.onnx") + data, "2 outputs"},
      {"eval " + q(lenet) + " --data " + q(d / "nowhere"), "nowhere"},
      // The last of two files for one input was used without a word.
      {"exec " + q(lenet) + " --input input=" + q(sample / "images.npy") + " --input input=" + q(sample / "images.npy") +
           " --outdir " + q(d / "o3"),
       "--input 'input' is given twice"},
      {"exec " + q(lenet) + " --input input= --outdir " + q(d / "o4"), "--input 'input=': expected NAME=FILE.npy"},
      // The dtype error named neither the option nor the file.
      {"exec " + q(lenet) + " --input input=" + q(sample / "labels.npy") + " --outdir " + q(d / "o5"),
       "model input 'input' expects float32 but " + (sample / "labels.npy").string() + " holds int64"},
      // A folder given as the labels: "corrupt gzip data (... Is a directory)".
      {"eval " + q(lenet) + " --data " + q(sample / "images.npy") + " --labels " + q(d.path()),
       ": is a folder; give the labels file itself"},
      // An array of another shape: the engine's message named neither the option nor the file.
      {"exec " + q(lenet) + " --input input=" + q(d / "wide.npy") + " --outdir " + q(d / "o7"),
       "model input 'input' expects shape [N,1,28,28] but " + (d / "wide.npy").string() + " holds [2,3,28,28]"},
      // An input neither given nor made up: the message said only "was not given".
      {"exec " + q(lenet) + " --outdir " + q(d / "o6"),
       "model input 'input' was not given; give --input input=FILE.npy, or --random-batch N for random values"},
      // Options that do nothing here were accepted without a word.
      {"exec " + q(lenet) + " --input input=" + q(sample / "images.npy") + " --seed 3 --outdir " + q(d / "o8"),
       "--seed requires --random-batch"},
      {"exec " + q(d / "noin.onnx") + " --random-batch 2 --outdir " + q(d / "o10"),
       (d / "noin.onnx").string() + " has no inputs to make random values for; drop --random-batch"},
      {"exec " + q(lenet) + " --input input=" + q(d / "two.npy") + " --random-batch 2 --outdir " + q(d / "o9"),
       "--random-batch: --input gives every input of " + lenet.string() + ", so no random input is made"},
      // Unknown height and width were made 1: the MaxPool's window failed, naming no input.
      {"exec " + q(d / "hw.onnx") + " --random-batch 2 --outdir " + q(d / "o11"),
       "input 'x' has unknown dimensions besides the batch ([N,1,H,W]); --random-batch chooses only the batch: give this "
       "one with --input x=FILE.npy"},
  };
  for (const auto& c : cases) {
    INFO(c.args);
    auto r = runLwc(c.args);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::StartsWith("lwc: error: ") && Catch::Contains(c.expect));
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}

TEST_CASE("lwc exec makes random float16 and float64 inputs, and refuses to make up integer ones", "[cli][eval]") {
  TempDir d;
  // --random-batch refused float16 and float64 inputs, which lwc bench makes.
  for (const std::string type : {"float16", "double"}) {
    INFO(type);
    saveModel(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g ()" + type + R"([N, 3] x) => (float[N, 3] y) {
  y = Cast <to = 1> (x)
}
)"),
              d / (type + ".onnx"));
    auto r = runLwc("exec " + q(d / (type + ".onnx")) + " --random-batch 4 -o " + q(d / type));
    REQUIRE(r.exit_code == 0);
    const Tensor x = readNpy(d / type / "inputs" / "x.npy");
    CHECK(x.dtype() == (type == "float16" ? DType::Float16 : DType::Float64));
    CHECK(x.shape() == Shape{4, 3});
    const Tensor y = readNpy(d / type / "y.npy");
    const Tensor xf = x.cast(DType::Float32);
    float lo = 1, hi = -1;
    for (int64_t i = 0; i < y.numel(); ++i) {
      CHECK(y.data<float>()[i] == xf.data<float>()[i]);
      lo = std::min(lo, xf.data<float>()[i]);
      hi = std::max(hi, xf.data<float>()[i]);
    }
    CHECK(lo >= -1.0f);
    CHECK(hi <= 1.0f);
    CHECK(hi > lo);  // not all zero
  }
  saveModel(parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (int64[N, 3] ids) => (float[N, 3] y) {
  y = Cast <to = 1> (ids)
}
)"),
            d / "ids.onnx");
  test::checkOneLineError(runLwc("exec " + q(d / "ids.onnx") + " --random-batch 4 -o " + q(d / "ids")),
                          "input 'ids': --random-batch needs a float input (float32, float16 or float64) with a declared "
                          "shape; give this one with --input ids=FILE.npy");
  CHECK_FALSE(fs::exists(d / "ids"));
}

TEST_CASE("lwc exec --input takes input names and file paths that hold '='", "[cli][eval]") {
  TempDir d;
  // --input split at the first '=': an input named 'k=v' could not be given at all.
  onnx::ModelProto p = test::protoFromText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2] kv, float[2] k) => (float[2] y)
{
  y = Sub (kv, k)
}
)");
  p.mutable_graph()->mutable_node(0)->set_input(0, "k=v");
  p.mutable_graph()->mutable_input(0)->set_name("k=v");
  test::writeProto(d / "m.onnx", p);
  fs::create_directories(d / "x=1");
  writeNpy(d / "x=1" / "a=b.npy", Tensor::fromVector<float>({2}, {5, 7}));
  writeNpy(d / "k.npy", Tensor::fromVector<float>({2}, {1, 2}));
  auto r = runLwc("exec " + q(d / "m.onnx") + " --input " + q("k=v=" + (d / "x=1" / "a=b.npy").string()) + " --input " +
                  q("k=" + (d / "k.npy").string()) + " -o " + q(d / "out"));
  REQUIRE(r.exit_code == 0);
  const Tensor y = readNpy(d / "out" / "y.npy");
  CHECK(y.data<float>()[0] == 4.0f);
  CHECK(y.data<float>()[1] == 5.0f);
  // A name that is no input is still named up to the first '='.
  test::checkOneLineError(runLwc("exec " + q(d / "m.onnx") + " --input " + q("z=w=" + (d / "k.npy").string()) + " -o " +
                                 q(d / "o2")),
                          "--input 'z': the model has no input of that name");
  // A model input without its file: "expected NAME=FILE.npy", not "no input named 'k'".
  test::checkOneLineError(runLwc("exec " + q(d / "m.onnx") + " --input 'k=v=' -o " + q(d / "o3")),
                          "--input 'k=v=': expected NAME=FILE.npy");
}

TEST_CASE("lwc exec gives outputs whose safe names meet their own files, numbered as ONNX Runtime's tool numbers them", "[cli][eval][ort]") {
  TempDir d;
  // 'a/b' and 'a_b' both became a_b.npy: the second output was written over the first.
  onnx::ModelProto p = test::protoFromText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[2, 3] x) => (float[2, 3] slash, float[2, 3] a_b)
{
  slash = Relu (x)
  a_b = Neg (x)
}
)");
  p.mutable_graph()->mutable_node(0)->set_output(0, "a/b");
  p.mutable_graph()->mutable_output(0)->set_name("a/b");
  test::writeProto(d / "m.onnx", p);
  auto r = runLwc("exec " + q(d / "m.onnx") + " --random-batch 2 --seed 3 -o " + q(d / "lwc"));
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("a/b: float32 [2,3] -> ") && Catch::Contains("a_b: float32 [2,3] -> "));
  const Tensor x = readNpy(d / "lwc" / "inputs" / "x.npy");
  const Tensor relu = readNpy(d / "lwc" / "a_b.npy"), neg = readNpy(d / "lwc" / "a_b_1.npy");
  for (int64_t i = 0; i < x.numel(); ++i) {
    CHECK(relu.data<float>()[i] == std::max(0.0f, x.data<float>()[i]));
    CHECK(neg.data<float>()[i] == -x.data<float>()[i]);
  }
  // ONNX Runtime's tool writes the same files for the same outputs.
  const std::string tool = "node " + q(test::sourceDir() / "scripts/ort/ort_tool.js");
  REQUIRE(test::runCommand(tool + " run " + q(d / "m.onnx") + " --input x=" + q(d / "lwc" / "inputs" / "x.npy") + " --outdir " +
                           q(d / "ort"))
              .exit_code == 0);
  CHECK(test::readFile(d / "ort" / "a_b.npy") == test::readFile(d / "lwc" / "a_b.npy"));
  CHECK(test::readFile(d / "ort" / "a_b_1.npy") == test::readFile(d / "lwc" / "a_b_1.npy"));
  // A batch no memory holds: one line with lwc's limit (it was a RangeError from a Float32Array).
  const auto huge = test::runCommand(tool + " run " + q(d / "m.onnx") + " --random-batch 1099511627776 --outdir " + q(d / "ort2"));
  CHECK(huge.exit_code == 1);
  CHECK(huge.err == "ort_tool: error: --random-batch 1099511627776 is outside [1, 16777216] (as lwc exec)\n");
  CHECK_FALSE(fs::exists(d / "ort2"));
  // An --outdir that cannot be a folder fails before the model runs, and writes nothing.
  test::writeFile(d / "afile", "x");
  for (const std::string& bad : {(d / "afile").string(), (d / "afile" / "sub").string()}) {
    auto e = runLwc("exec " + q(d / "m.onnx") + " --random-batch 2 --outdir " + q(bad));
    CHECK(e.exit_code == 1);
    CHECK_THAT(e.err, Catch::StartsWith("lwc: error: --outdir '" + bad + "'") && Catch::Contains("not a folder"));
  }
  CHECK(test::readFile(d / "afile") == "x");
}

TEST_CASE("ONNX Runtime's eval tool reads lwc's preprocess.json and refuses what it cannot apply", "[cli][eval][ort]") {
  TempDir d;
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  const fs::path model = test::testdataDir() / "lenet5_fmnist.onnx";
  const std::string tool = "node " + q(test::sourceDir() / "scripts/ort/ort_tool.js") + " eval " + q(model);
  const std::string npy = " --npy " + q(sample / "images.npy") + " --npy-labels " + q(sample / "labels.npy");
  auto ort = [&](const std::string& pre, const std::string& data) {
    return test::runCommand(tool + data + " --preprocess " + q(pre) + " --json");
  };
  // The file as lwc reads it (with its "color"), and its keys given inline: the same count as lwc's.
  const int64_t want = models()["lenet5"]["sample500_top1_correct"].get<int64_t>();
  auto r = ort((sample / "preprocess.json").string(), npy);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["correct"].get<int64_t>() == want);
  r = ort(R"({"scale": 0.00392156862745098, "mean": [0.286], "std": [0.353]})", npy);
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["correct"].get<int64_t>() == want);
  // What it cannot do, or cannot read: one line naming the file or the key, exit code 1.
  auto bad = [&](const std::string& pre, const std::string& data, const std::string& expect) {
    INFO(pre);
    const auto b = ort(pre, data);
    CHECK(b.exit_code == 1);
    CHECK_THAT(b.err, Catch::StartsWith("ort_tool: error: ") && Catch::Contains(expect));
    CHECK(std::count(b.err.begin(), b.err.end(), '\n') <= 1);
  };
  bad((d / "none.json").string(), npy, "none.json: neither JSON text nor a readable file (ENOENT)");
  test::writeFile(d / "resize.json", R"({"resize": [32, 32]})");
  bad((d / "resize.json").string(), npy, "resize.json: \"resize\" is not done by this tool");
  bad(R"({"crop": [24, 24]})", npy, "--preprocess: \"crop\" is not done by this tool");
  bad(R"({"color": "bgr"})", npy, "\"color\" \"bgr\" is not done by this tool");
  test::writeFile(d / "zero.json", R"({"std": [0]})");
  bad((d / "zero.json").string(), npy, "zero.json: \"std\" has a zero");
  // "gray" for data with three channels: the tool does not convert colours.
  Tensor rgb(DType::UInt8, {2, 3, 28, 28});
  writeNpy(d / "rgb.npy", rgb);
  writeNpy(d / "lab.npy", Tensor::fromVector<int64_t>({2}, {0, 1}));
  bad(R"({"color": "gray"})", " --npy " + q(d / "rgb.npy") + " --npy-labels " + q(d / "lab.npy"),
      "\"color\" \"gray\" but");
}

TEST_CASE("ONNX Runtime's profile tool: a median per node, their sums per op type and in total", "[cli][ort]") {
  const fs::path tool = test::sourceDir() / "scripts/ort/ort_tool.js";
  const fs::path model = test::testdataDir() / "lenet5_fmnist.onnx";
  const auto r = test::runCommand("node " + q(tool) + " profile " + q(model) + " --batch 4 --warmup 2 --iters 7 --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["batch"] == 4);
  CHECK(j["iters"] == 7);
  REQUIRE(j["nodes"].size() >= 2);  // lenet5 keeps at least its convolutions and its Gemms apart
  double total = 0;
  std::map<std::string, double> by_op;
  for (const auto& n : j["nodes"]) {
    CHECK(n["runs"] == 7);  // the warm-up runs are left out
    CHECK(n["median_us"].get<double>() >= 0);
    total += n["median_us"].get<double>();
    by_op[n["op_type"].get<std::string>()] += n["median_us"].get<double>();
  }
  CHECK(j["total_us"].get<double>() == Approx(total));
  CHECK(by_op.size() == j["op_types"].size());
  for (const auto& [op, us] : by_op) CHECK(j["op_types"][op].get<double>() == Approx(us));
  CHECK(by_op.count("Conv") + by_op.count("FusedConv") >= 1);

  const auto bad = test::runCommand("node " + q(tool) + " profile " + q(test::testdataDir() / "no_such.onnx"));
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.err, Catch::StartsWith("ort_tool: error: ") && Catch::Contains("no_such.onnx: no such file"));
}

TEST_CASE("lwc exec: an output path that is a folder fails before anything is written", "[cli][eval]") {
  // The random inputs were written (inputs/input.npy) before logits.npy turned out to be a folder.
  TempDir d;
  fs::create_directories(d / "out" / "logits.npy");
  auto r = runLwc("exec " + q(test::testdataDir() / "lenet5_fmnist.onnx") + " --random-batch 2 -o " + q(d / "out"));
  test::checkOneLineError(r, "logits.npy': it is a folder; remove it or choose another --outdir");
  CHECK_FALSE(fs::exists(d / "out" / "inputs"));
}

TEST_CASE("lwc compare: NaN is the worst and where the damage starts, outputs pair by name, labels score the first output",
          "[cli][compare]") {
  TempDir d;
  const fs::path sample = test::testdataDir() / "fmnist_sample";
  const fs::path lenet = test::testdataDir() / "lenet5_fmnist.onnx";
  const std::string data = " --data " + q(sample / "images.npy") + " --limit 20";
  // One NaN weight in conv2: its output was not "the first tensor that differs" (NaN > 0 is false)
  // and the worst-first order put identical tensors between NaN ones (`<` on NaN is no ordering).
  Model m = loadModel(lenet);
  std::string conv2_out;
  for (const auto& n : m.graph.nodes)
    if (n.name == "/conv2/Conv") {
      Tensor w = m.graph.initializers.find(n.inputs[1])->clone();
      w.data<float>()[7] = std::nanf("");
      m.graph.initializers.set(n.inputs[1], w);
      conv2_out = n.outputs[0];
    }
  REQUIRE(!conv2_out.empty());
  saveModel(m, d / "nan.onnx");
  const auto j = compareJson(lenet, d / "nan.onnx", data + " --per-layer");
  CHECK(j["first_divergence"] == conv2_out);
  CHECK(j["outputs"][0]["sqnr_db"] == "nan");
  bool seen_finite = false;
  for (const auto& l : j["layers"]) {  // every NaN row before every other
    if (l["sqnr_db"] != "nan") seen_finite = true;
    else CHECK_FALSE(seen_finite);
  }
  CHECK(j["layers"][0]["name"] == conv2_out);  // ties in graph order
  auto text = runLwc("compare " + q(lenet) + " " + q(d / "nan.onnx") + data + " --per-layer");
  CHECK_THAT(text.out, Catch::Contains("first tensor that differs: " + conv2_out));

  // The same model with two more outputs, listed in the opposite order: they were compared by
  // position (one against the other, SQNR 3 dB), and the labels scored the 84-wide hidden output.
  auto withOutputs = [&](const std::vector<std::string>& names, const fs::path& path) {
    Model x = loadModel(lenet);
    for (const auto& name : names) x.graph.outputs.push_back(ValueInfo{name, DType::Float32, std::nullopt, "", std::nullopt, 0});
    saveModel(x, path);
  };
  withOutputs({"/fc2/Gemm_output_0", "/Relu_3_output_0"}, d / "a.onnx");
  withOutputs({"/Relu_3_output_0", "/fc2/Gemm_output_0"}, d / "b.onnx");
  const auto jo = compareJson(d / "a.onnx", d / "b.onnx", data);
  REQUIRE(jo["outputs"].size() == 3);
  for (const auto& out : jo["outputs"]) {
    INFO(out["name"]);
    CHECK(out["sqnr_db"] == "inf");
  }
  CHECK(jo["outputs"][0].contains("labels"));
  CHECK_FALSE(jo["outputs"][1].contains("labels"));
  CHECK_FALSE(jo["outputs"][2].contains("labels"));
}

TEST_CASE("lwc eval and compare name a --batch that the model's fixed batch size overrides", "[cli][eval]") {
  TempDir d;
  Model m = loadModel(test::testdataDir() / "lenet5_fmnist.onnx");
  m.graph.inputs.at(0).shape->at(0) = Dim{3, ""};
  m.graph.outputs.at(0).shape->at(0) = Dim{3, ""};
  saveModel(m, d / "b3.onnx");
  const std::string data = " --data " + q(test::testdataDir() / "fmnist_sample" / "images.npy") + " --limit 30";
  auto e = runLwc("eval " + q(d / "b3.onnx") + data + " --batch 7");
  INFO(e.err);
  REQUIRE(e.exit_code == 0);
  CHECK_THAT(e.err, Catch::Contains("fixes the batch size at 3; batches are 3 (--batch 7 ignored)"));
  CHECK_THAT(e.out, Catch::Contains("for 30 images in batches of 3,"));  // said 7
  auto quiet = runLwc("eval " + q(d / "b3.onnx") + data);  // no --batch given: nothing to say
  CHECK_THAT(quiet.err, !Catch::Contains("ignored"));
  CHECK(nlohmann::json::parse(runLwc("eval --json " + q(d / "b3.onnx") + data).out)["batch"] == 3);
  auto c = runLwc("compare " + q(d / "b3.onnx") + " " + q(d / "b3.onnx") + data + " --batch 7");
  CHECK_THAT(c.err, Catch::Contains("(--batch 7 ignored)"));
  // A pipeline's --eval-batch too.
  auto p = runLwc("fuse " + q(d / "b3.onnx") + " -o " + q(d / "f.onnx") + " --eval " +
                  q(test::testdataDir() / "fmnist_sample" / "images.npy") + " --eval-limit 30 --eval-batch 7");
  CHECK(p.exit_code == 0);
  CHECK_THAT(p.err, Catch::Contains("the model's input fixes the batch size at 3; evaluation batches are 3 (--eval-batch 7 ignored)"));
}

TEST_CASE("eval and compare and pipeline evaluation lower the default batch for large activations but not a given one",
          "[cli][eval]") {
  // 1024 channels of 28x28 after the first Conv: about 3.2 MB of activations per sample, so the
  // default batch of 100 would hold about 320 MB (torchvision resnet50 at 224x224 took 1.25 GB).
  TempDir d;
  Model m = test::parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
wide (float[N, 1, 28, 28] x) => (float[N, 10] y) {
  c = Conv <pads = [1, 1, 1, 1]> (x, w)
  r = Relu (c)
  p = GlobalAveragePool (r)
  f = Flatten (p)
  y = Gemm <transB = 1> (f, fc)
})");
  test::addConst(m, "w", {1024, 1, 3, 3}, 1);
  test::addConst(m, "fc", {10, 1024}, 2, -0.1f, 0.1f);
  const fs::path model = d / "wide.onnx";
  saveModel(m, model);
  const ActivationBytes act = activationBytesPerSample(m);
  CHECK(act.peak == 2 * 28 * 28 * 4 * 1024);  // c and r while the Relu runs
  CHECK(act.total == 28 * 28 * 4 * (1 + 2 * 1024) + 2 * 1024 * 4 + 10 * 4);
  const int64_t want = kEvalActivationBytes / act.peak;
  REQUIRE(want < 100);
  const std::string data = " --data " + q(test::testdataDir() / "fmnist_sample" / "images.npy") + " --limit 200";

  auto e = runLwc("eval --json " + q(model) + data);
  INFO(e.err);
  REQUIRE(e.exit_code == 0);
  const auto lowered = nlohmann::json::parse(e.out);
  CHECK(lowered["batch"] == want);
  CHECK_THAT(e.err, Catch::Contains("batches of " + std::to_string(want) + ", not 100: about 6 MB of activations per sample (--batch sets it)"));
  auto given = runLwc("eval --json " + q(model) + data + " --batch 100");
  REQUIRE(given.exit_code == 0);
  const auto at100 = nlohmann::json::parse(given.out);
  CHECK(at100["batch"] == 100);
  CHECK_THAT(given.err, !Catch::Contains("not 100"));
  CHECK(at100["top1_correct"] == lowered["top1_correct"]);  // a float model's answers do not depend on the batch
  CHECK(at100["count"] == 200);
  CHECK(lowered["count"] == 200);

  // compare: both models' activations; with --per-layer every output of the first is kept too.
  auto c = runLwc("compare " + q(model) + " " + q(model) + data);
  CHECK(c.exit_code == 0);
  CHECK_THAT(c.err, Catch::Contains("batches of " + std::to_string(want) + ", not 100"));
  auto cl = runLwc("compare --per-layer " + q(model) + " " + q(model) + data);
  CHECK(cl.exit_code == 0);
  const int64_t want_kept = kEvalActivationBytes / (act.total + act.peak);
  CHECK(want_kept < want);
  CHECK_THAT(cl.err, Catch::Contains("batches of " + std::to_string(want_kept) + ", not 100: about 12 MB of activations per "
                                     "sample with every layer's output kept"));

  // A pipeline's evaluation: lowered unless --eval-batch (or data.eval.batch) gives it.
  auto run = [&](const std::string& extra) {
    auto r = runLwc("run --json --passes 'prune_magnitude{sparsity=0.5}' " + q(model) + " -o " + q(d / "out.onnx") + " --eval " +
                    q(test::testdataDir() / "fmnist_sample" / "images.npy") + " --eval-limit 200" + extra);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return std::make_pair(nlohmann::json::parse(r.out), r.err);
  };
  const auto [auto_rep, auto_err] = run("");
  CHECK(auto_rep["eval_batch"] == want);
  CHECK_THAT(auto_err, Catch::Contains("evaluating in batches of " + std::to_string(want) +
                                       ", not 100: about 6 MB of activations per sample (--eval-batch sets it)"));
  const auto [given_rep, given_err] = run(" --eval-batch 100");
  CHECK(given_rep["eval_batch"] == 100);
  CHECK_THAT(given_err, !Catch::Contains("evaluating in batches"));
  // The pruned model is evaluated at the same batch as the input (its outputs compared with the
  // input's, kept batch by batch): the same counts and, up to summation order, the same SQNR.
  for (int stage : {0, 1}) {
    INFO("stage " << stage);
    const auto& a = auto_rep["stages"][stage]["metrics"]["eval"];
    const auto& g = given_rep["stages"][stage]["metrics"]["eval"];
    CHECK(a["top1"].get<double>() == g["top1"].get<double>());
    CHECK(a["samples"] == 200);
  }
  const auto& a1 = auto_rep["stages"][1]["metrics"]["eval"];
  const auto& g1 = given_rep["stages"][1]["metrics"]["eval"];
  REQUIRE(a1["output_sqnr_db"].is_number());
  CHECK(a1["output_sqnr_db"].get<double>() == Approx(g1["output_sqnr_db"].get<double>()).epsilon(1e-9));
  CHECK(a1["top1_agreement"].get<double>() == g1["top1_agreement"].get<double>());
  CHECK(a1["top1_agreement"].get<double>() < 1.0);  // the pruned model does differ
  const fs::path pipeline = d / "p.json";
  std::ofstream(pipeline) << R"({"passes": ["fuse_batchnorm"], "data": {"eval": {"path": ")"
                          << (test::testdataDir() / "fmnist_sample" / "images.npy").string()
                          << R"(", "limit": 200, "batch": 50}}})";
  auto r = runLwc("run --json " + q(pipeline) + " " + q(model) + " -o " + q(d / "out2.onnx"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["eval_batch"] == 50);
  CHECK_THAT(r.err, !Catch::Contains("evaluating in batches"));
  // A dynamically quantized model's outputs depend on the batch: no command lowers it, so the
  // pipeline's figures and lwc eval's agree.
  auto dyn = runLwc("quantize --json --mode dynamic " + q(model) + " -o " + q(d / "dyn.onnx") + " --bench-batch 0 --eval " +
                    q(test::testdataDir() / "fmnist_sample" / "images.npy") + " --eval-limit 200");
  INFO(dyn.err);
  REQUIRE(dyn.exit_code == 0);
  const auto dyn_rep = nlohmann::json::parse(dyn.out);
  CHECK(dyn_rep["eval_batch"] == 100);
  CHECK_THAT(dyn.err, !Catch::Contains("evaluating in batches"));
  auto de = runLwc("eval --json " + q(d / "dyn.onnx") + data);
  REQUIRE(de.exit_code == 0);
  CHECK(nlohmann::json::parse(de.out)["batch"] == 100);
  CHECK(nlohmann::json::parse(de.out)["top1"].get<double>() == dyn_rep["final"]["eval"]["top1"].get<double>());
  CHECK_THAT(runLwc("compare " + q(model) + " " + q(d / "dyn.onnx") + data).err, !Catch::Contains("not 100"));
  // --eval-batch without evaluation data is an error, as --eval-limit is.
  test::checkOneLineError(runLwc("run --passes fuse_batchnorm " + q(model) + " -o " + q(d / "out3.onnx") + " --eval-batch 10"),
                          "lwc: error: --eval-batch: this run has no evaluation data; give --eval DATA (or data.eval in the pipeline)");
  CHECK_FALSE(fs::exists(d / "out3.onnx"));
}
