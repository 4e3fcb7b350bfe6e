// lwc quantize / calibrate end to end: real models and data, reports, shards, bad input.
#include <catch2/catch.hpp>
#include <sched.h>
#include <array>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lwc/engine.h"
#include "lwc/model_io.h"
#include "lwc/npy.h"
#include "support/engine_util.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;
using lwc::test::runLwc;
using lwc::test::TempDir;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
std::string q(const fs::path& p) { return "'" + p.string() + "'"; }
fs::path td(const std::string& f) { return test::testdataDir() / f; }

/// lenet5_fmnist re-declared with a fixed batch size of `batch`, written to `path`.
void saveFixedBatchLenet5(int64_t batch, const fs::path& path) {
  Model m = loadModel(td("lenet5_fmnist.onnx"));
  for (auto* vs : {&m.graph.inputs, &m.graph.outputs})
    for (auto& v : *vs) (*v.shape)[0] = Dim{batch, ""};
  saveModel(m, path);
}

nlohmann::json readJson(const fs::path& p) {
  std::ifstream f(p);
  REQUIRE(f.good());
  return nlohmann::json::parse(f);
}

// lwc quantize on lenet5 with the bundled sample as calibration and evaluation data, writing dir/out;
// the JSON report.
nlohmann::json quantizeLenet5(const fs::path& dir, const std::string& out, const std::string& extra) {
  auto r = runLwc("quantize " + q(td("lenet5_fmnist.onnx")) + " --calib " + q(td("fmnist_sample")) + " --eval " +
                  q(td("fmnist_sample")) + " -o " + q(dir / out) + " --bench-batch 0 --layer-samples 0 --json" + extra);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return nlohmann::json::parse(r.out);
}

// How many initializers of model file b differ from those of a (same names); each that differs
// must have one of the dtypes in `may_differ`.
int differingInitializers(const fs::path& a, const fs::path& b, const std::vector<DType>& may_differ) {
  const Model ma = loadModel(a), mb = loadModel(b);
  int differ = 0;
  for (const auto& [n, t] : ma.graph.initializers.items()) {
    const bool same = t.bitEqual(mb.graph.initializers.at(n));
    CHECK((same || std::count(may_differ.begin(), may_differ.end(), t.dtype()) > 0));
    differ += !same;
  }
  return differ;
}

int countOp(const Model& m, const std::string& op) {
  int c = 0;
  for (const auto& n : m.graph.nodes) c += n.op_type == op;
  return c;
}
}  // namespace

TEST_CASE("lwc quantize: QDQ model, report with accuracy, per-layer error and latency", "[cli][quantize]") {
  TempDir d;
  const fs::path sample = td("fmnist_sample");
  auto r = runLwc("-q quantize " + q(td("resnet_fmnist.onnx")) + " --calib " + q(sample) + " -o " + q(d / "q.onnx") +
                  " --eval " + q(sample) + " --report " + q(d / "r.json") + " --calibrator percentile --bench-batch 8 --ort-bench");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("per-tensor error") && Contains("latency"));
  const Model m = loadModel(d / "q.onnx");
  CHECK(countOp(m, "QuantizeLinear") > 10);
  CHECK(countOp(m, "BatchNormalization") == 0);
  int int8 = 0;
  for (const auto& [n, t] : m.graph.initializers.items()) int8 += t.dtype() == DType::Int8 && t.rank() == 4;
  CHECK(int8 == 15);  // every convolution's weights
  const auto rep = readJson(d / "r.json");
  const double drop = rep["input"]["eval"]["top1"].get<double>() - rep["final"]["eval"]["top1"].get<double>();
  CHECK(drop <= 0.005);
  CHECK(rep["input"]["weight_bytes"].get<double>() / rep["final"]["weight_bytes"].get<double>() > 3.5);
  const auto& details = rep["stages"].back()["details"];
  CHECK(details["calibration"]["samples"] == 500);
  CHECK(details["layers"].size() > 20);
  CHECK(details["latency_ms"]["int8"].get<double>() > 0);
  // The threads the engine's figures were measured with, as ONNX Runtime's say theirs.
  CHECK(details["latency_ms"]["threads"].get<int>() == details["ort_latency_ms"]["threads"].get<int>());
  CHECK_THAT(r.out, Contains("latency      lwc engine, batch 8, " + std::to_string(details["ort_latency_ms"]["threads"].get<int>()) + " threads: fp32 "));
  // --ort-bench: the same two models timed in ONNX Runtime.
  const auto& ort = details["ort_latency_ms"];
  CHECK(ort["runtime"].get<std::string>() == "onnxruntime-node 1.30.0");
  CHECK(ort["batch"].get<int>() == 8);
  CHECK(ort["fp32"].get<double>() > 0);
  CHECK(ort["int8"].get<double>() > 0);
  CHECK(ort["speedup"].get<double>() == Approx(ort["fp32"].get<double>() / ort["int8"].get<double>()));
  CHECK_THAT(r.out, Contains("latency      ONNX Runtime 1.30.0, batch 8, " + std::to_string(ort["threads"].get<int>()) +
                             " threads: fp32 "));
  // Worst first.
  CHECK(details["layers"][0]["sqnr_db"].get<double>() <= details["layers"][1]["sqnr_db"].get<double>());
}

TEST_CASE("lwc quantize --ort-bench on one CPU: ONNX Runtime gets the CPUs and the thread count lwc has", "[cli][quantize]") {
  // Under `taskset -c 0` lwc's engine ran 1 thread and ONNX Runtime 2 (the machine's count, on
  // every CPU): the speedups then compared unlike runs.
  TempDir d;
  cpu_set_t cpus;  // the first CPU this process may use (a container's cpuset need not hold CPU 0)
  REQUIRE(::sched_getaffinity(0, sizeof cpus, &cpus) == 0);
  int first = 0;
  while (first < CPU_SETSIZE && !CPU_ISSET(first, &cpus)) ++first;
  REQUIRE(first < CPU_SETSIZE);
  auto r = test::runCommand("taskset -c " + std::to_string(first) + " '" + LWC_EXE + "' -q quantize " + q(td("lenet5_fmnist.onnx")) +
                            " --calib " + q(td("fmnist_sample")) + " -o " + q(d / "q.onnx") + " --report " + q(d / "r.json") +
                            " --layer-samples 0 --bench-batch 4 --ort-bench");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto details = readJson(d / "r.json")["stages"].back()["details"];
  CHECK(details["latency_ms"]["threads"] == 1);
  CHECK(details["ort_latency_ms"]["threads"] == 1);
}

TEST_CASE("lwc quantize --format qoperator reports the per-tensor error table of its QDQ form, and dynamic says it has none", "[cli][quantize]") {
  // The table was empty for QOperator files ("layers": []) and --layer-samples silently did nothing for dynamic.
  TempDir d;
  const fs::path sample = td("fmnist_sample"), model = td("lenet5_fmnist.onnx");
  auto layers = [&](const std::string& format) {
    auto r = runLwc("-q quantize " + q(model) + " --calib " + q(sample) + " --format " + format + " -o " + q(d / (format + ".onnx")) +
                    " --bench-batch 0 --layer-samples 50 --report " + q(d / (format + ".json")));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return readJson(d / (format + ".json"))["stages"].back()["details"]["layers"];
  };
  const auto qdq = layers("qdq"), qop = layers("qoperator");
  REQUIRE(qdq.size() > 5);
  CHECK(qop == qdq);  // the same integers
  auto dyn = runLwc("quantize " + q(model) + " --mode dynamic --eval " + q(sample) + " -o " + q(d / "dyn.onnx") + " --bench-batch 0");
  REQUIRE(dyn.exit_code == 0);
  CHECK_THAT(dyn.err, Contains("per-tensor error table: not measured for --mode dynamic"));
}

TEST_CASE("lwc quantize --layer-samples: the table keeps to the data's limit, and says when it has no data", "[cli][quantize]") {
  TempDir d;
  const fs::path sample = td("fmnist_sample"), model = td("lenet5_fmnist.onnx");
  auto run = [&](const std::string& args, const std::string& name) {
    auto r = runLwc("quantize " + q(model) + " " + args + " -o " + q(d / (name + ".onnx")) + " --bench-batch 0 --report " +
                    q(d / (name + ".json")));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return r;
  };
  // --calib-limit 32 bounds the table too: 100 layer samples then read the same 32 as 32 do (the
  // table read samples the limit left out).
  run("--calib " + q(sample) + " --calib-limit 32 --layer-samples 100", "a");
  run("--calib " + q(sample) + " --calib-limit 32 --layer-samples 32", "b");
  run("--calib " + q(sample) + " --calib-limit 32 --layer-samples 8", "c");
  const auto a = readJson(d / "a.json")["stages"].back()["details"]["layers"];
  REQUIRE(a.size() > 5);
  CHECK(a == readJson(d / "b.json")["stages"].back()["details"]["layers"]);
  CHECK(a != readJson(d / "c.json")["stages"].back()["details"]["layers"]);
  // Saved statistics with --calib: the data is read for the table, which the summary says.
  REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(sample) + " -o " + q(d / "s.json")).exit_code == 0);
  auto r = run("--load-calib " + q(d / "s.json") + " --calib " + q(sample) + " --layer-samples 16", "e");
  CHECK_THAT(r.out, Contains("--calib data read for the per-tensor error table"));
  // Without any data, a --layer-samples the user gave is named as not measured.
  r = run("--load-calib " + q(d / "s.json") + " --layer-samples 50", "f");
  CHECK_THAT(r.err, Contains("--layer-samples: the per-tensor error table needs data (--eval or --calib); not measured"));
  CHECK_FALSE(readJson(d / "f.json")["stages"].back()["details"].contains("layers"));
}

TEST_CASE("lwc quantize and prune --channels on a model exported with batch 1", "[cli][quantize]") {
  // A fixed batch dimension accepts no other batch: calibration and evaluation feed one sample at a
  // time and the latency is measured at batch 1, with a note (was: "expects shape [1,1,28,28] but
  // got [16,1,28,28]" and no output).
  TempDir d;
  saveFixedBatchLenet5(1, d / "b1.onnx");
  const fs::path sample = td("fmnist_sample");
  auto r = runLwc("quantize " + q(d / "b1.onnx") + " --calib " + q(sample) + " --eval " + q(sample) + " -o " +
                  q(d / "q.onnx") + " --bench-batch 8 --layer-samples 16 --json");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const auto rep = nlohmann::json::parse(r.out);
  const auto& st = rep["stages"].back();
  CHECK(st["details"]["calibration"]["samples"] == 500);
  CHECK(st["details"]["latency_ms"]["batch"] == 1);
  CHECK_THAT(st["notes"].dump(), Contains("the model input's fixed batch size (not --bench-batch 8)"));
  CHECK(rep["final"]["eval"]["samples"] == 500);
  CHECK(rep["input"]["eval"]["top1"].get<double>() - rep["final"]["eval"]["top1"].get<double>() <= 0.01);
  auto p = runLwc("prune " + q(d / "b1.onnx") + " --channels 0.3 -o " + q(d / "c.onnx") + " --json");
  INFO(p.err);
  REQUIRE(p.exit_code == 0);
  CHECK(nlohmann::json::parse(p.out)["stages"].back()["details"]["latency_ms"]["batch"] == 1);
  // bench times (and counts items per second at) the batch the model takes; compare feeds both
  // models batches the fixed one accepts, whichever side it is on.
  auto b = runLwc("bench " + q(d / "b1.onnx") + " --batch 8 --iters 3 --json");
  INFO(b.err);
  REQUIRE(b.exit_code == 0);
  CHECK(nlohmann::json::parse(b.out)["batch"] == 1);
  CHECK_THAT(b.err, Contains("the model input's fixed batch size (not --batch 8)"));
  for (const std::string& pair : {q(td("lenet5_fmnist.onnx")) + " " + q(d / "b1.onnx"),
                                 q(d / "b1.onnx") + " " + q(td("lenet5_fmnist.onnx"))}) {
    auto c = runLwc("compare " + pair + " --data " + q(sample) + " --limit 50");
    INFO(c.err);
    CHECK(c.exit_code == 0);
  }
}

TEST_CASE("the report's latency lowers the default batch of a costly model, and keeps one the user gives", "[cli][quantize]") {
  // At the default --bench-batch 32 a dynamically quantized vit_h_14 (167 G multiply-adds a run at
  // batch 1) was still timing after 8 minutes. The budget is lowered here so that a small model
  // shows it: lenet5's 0.42 M multiply-adds a sample make 13 M at batch 32, over 4e6, and 3.3 M at 8.
  TempDir d;
  const std::string args = " -q quantize " + q(td("lenet5_fmnist.onnx")) + " --mode dynamic -o " + q(d / "q.onnx") + " --json";
  auto run = [&](const std::string& extra) {
    const auto r = test::runCommand("LWC_BENCH_BUDGET_MACS=4e6 '" + std::string(LWC_EXE) + "'" + args + extra);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    return nlohmann::json::parse(r.out)["stages"].back();
  };
  const auto st = run("");
  CHECK(st["details"]["latency_ms"]["batch"] == 8);
  CHECK_THAT(st["notes"].dump(), Contains("latency measured at batch 8, not the default 32: one run at batch 32 is ") &&
                                     Contains(" multiply-adds (--bench-batch 32 measures it there, --bench-batch 0 skips it)"));
  const auto given = run(" --bench-batch 32");
  CHECK(given["details"]["latency_ms"]["batch"] == 32);
  CHECK_THAT(given["notes"].dump(), !Contains("latency measured at batch"));
  // Without the variable the budget is the built-in one: lenet5 is timed at 32.
  const auto r = runLwc(args);
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["stages"].back()["details"]["latency_ms"]["batch"] == 32);
}

TEST_CASE("a sample count that leaves a partial fixed batch names the limit option the user has there", "[cli][quantize]") {
  // Before, every such error listed --calib-limit, --eval-limit and --limit, whichever the
  // command had and whichever limit was in effect.
  TempDir d;
  saveFixedBatchLenet5(4, d / "b4.onnx");
  const fs::path sample = td("fmnist_sample");
  const std::string common = " -o " + q(d / "q.onnx") + " --bench-batch 0 --layer-samples 0";
  test::writeFile(d / "p.json", R"({"schema_version": 1, "passes": ["quantize_static"],
      "data": {"calib": {"path": ")" + sample.generic_string() + R"(", "limit": 6}}})");
  struct Case {
    std::string args, names;
  };
  for (const Case& c : std::vector<Case>{
           {"quantize " + q(d / "b4.onnx") + " --calib " + q(sample) + " --calib-limit 6" + common, "(--calib-limit)"},
           {"quantize " + q(d / "b4.onnx") + " --calib " + q(sample) + " --calib-samples 6" + common,
            "(the pass option calib_samples, --calib-samples of lwc quantize)"},
           {"quantize " + q(d / "b4.onnx") + " --calib " + q(sample) + " --eval " + q(sample) + " --eval-limit 6" + common,
            "(--eval-limit)"},
           {"run " + q(d / "p.json") + " " + q(d / "b4.onnx") + " -o " + q(d / "q.onnx"), "(--calib-limit or data.calib.limit)"},
           {"eval " + q(d / "b4.onnx") + " --data " + q(sample) + " --limit 6", "(--limit)"},
           {"calibrate " + q(d / "b4.onnx") + " --calib " + q(sample) + " --calib-samples 6 -o " + q(d / "q.onnx"),
            "(the pass option calib_samples, --calib-samples of lwc quantize)"},
           {"quantize " + q(d / "b4.onnx") + " --calib " + q(sample) + " -o " + q(d / "q.onnx") +
                " --bench-batch 0 --layer-samples 6",
            "(--layer-samples)"}}) {
    INFO(c.args);
    auto r = runLwc(c.args);
    INFO(r.err);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Contains("6 samples do not fill batches of 4") && Contains(c.names));
    CHECK(!fs::exists(d / "q.onnx"));
  }
  // Batch 8 and the 500 sample images (not whole batches): --calib-samples 16 takes whole batches
  // and runs (the pipeline checked the whole data first and refused it, naming --calib-limit;
  // lwc calibrate, which has no --calib-limit, could not calibrate such a model at all).
  saveFixedBatchLenet5(8, d / "b8.onnx");
  auto q8 = runLwc("quantize " + q(d / "b8.onnx") + " --calib " + q(sample) + " --calib-samples 16 -o " + q(d / "q8.onnx") +
                   " --bench-batch 0 --layer-samples 0");
  INFO(q8.err);
  CHECK(q8.exit_code == 0);
  CHECK(runLwc("-q calibrate " + q(d / "b8.onnx") + " --calib " + q(sample) + " --calib-samples 16 -o " + q(d / "c8.json"))
            .exit_code == 0);
  // lwc quantize has both the data's limit and the pass option: two different values are an error.
  auto r = runLwc("quantize " + q(td("lenet5_fmnist.onnx")) + " --calib " + q(sample) + " --calib-limit 100 --calib-samples 50" +
                  common);
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Contains("--calib-limit 100 and --calib-samples 50 both limit the calibration samples; give one of them"));
  CHECK(!fs::exists(d / "q.onnx"));
}

TEST_CASE("lwc quantize --reduce-range: 7-bit weights for CPUs without VNNI", "[cli][quantize]") {
  TempDir d;
  const fs::path sample = td("fmnist_sample");
  for (const std::string rr : {"", " --reduce-range"}) {
    INFO("options:" << rr);
    auto r = runLwc("quantize " + q(td("lenet5_fmnist.onnx")) + " --calib " + q(sample) + " -o " + q(d / "q.onnx") +
                    " --bench-batch 0 --layer-samples 0 --json" + rr);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    // --json: stdout is the report alone (log lines go to stderr). On a host without VNNI, 8-bit
    // weights get a note on stderr and in the report that --reduce-range avoids.
    const auto rep = nlohmann::json::parse(r.out);
    const bool warned = rr.empty() && engine::hostX86WithoutVnni();
    CHECK((rep["stages"].back()["notes"].dump().find("this CPU has no VNNI") != std::string::npos) == warned);
    CHECK((r.err.find("quantize_static: this CPU has no VNNI") != std::string::npos) == warned);
    const Model m = loadModel(d / "q.onnx");
    int max_abs = 0, tensors = 0;
    for (const auto& [n, t] : m.graph.initializers.items())
      if (t.dtype() == DType::Int8 && t.rank() >= 2) {
        ++tensors;
        for (int64_t i = 0; i < t.numel(); ++i) max_abs = std::max(max_abs, std::abs(int(t.data<int8_t>()[i])));
      }
    CHECK(tensors >= 4);
    CHECK(max_abs == (rr.empty() ? 127 : 63));  // symmetric per channel: the largest weight maps to qmax
  }
}

TEST_CASE("lwc quantize --bias-correction: int32 biases corrected, output closer to FP32", "[cli][quantize]") {
  TempDir d;
  const auto plain = quantizeLenet5(d.path(), "plain.onnx", ""), corrected = quantizeLenet5(d.path(), "corrected.onnx", " --bias-correction");
  CHECK(plain["stages"].back()["stats"]["biases_corrected"] == 0);
  CHECK(corrected["stages"].back()["stats"]["biases_corrected"] == 5);  // 2 Conv + 3 Gemm
  CHECK(corrected["final"]["eval"]["output_sqnr_db"].get<double>() > plain["final"]["eval"]["output_sqnr_db"].get<double>());
  // Only int32 biases differ.
  CHECK(differingInitializers(d / "plain.onnx", d / "corrected.onnx", {DType::Int32}) == 5);
  // Deterministic: the same command writes the same bytes.
  quantizeLenet5(d.path(), "again.onnx", " --bias-correction");
  CHECK(test::readFile(d / "again.onnx") == test::readFile(d / "corrected.onnx"));
}

TEST_CASE("lwc quantize --weight-rounding gptq: int8 weights re-rounded, output closer to FP32", "[cli][quantize]") {
  TempDir d;
  const auto plain = quantizeLenet5(d.path(), "plain.onnx", ""), gptq = quantizeLenet5(d.path(), "gptq.onnx", " --weight-rounding gptq");
  CHECK(plain["stages"].back()["stats"]["layers_gptq"] == 0);
  CHECK(gptq["stages"].back()["stats"]["layers_gptq"] == 5);  // 2 Conv + 3 Gemm
  const double sp = plain["final"]["eval"]["output_sqnr_db"].get<double>(), sg = gptq["final"]["eval"]["output_sqnr_db"].get<double>();
  INFO("logit SQNR nearest " << sp << " dB, gptq " << sg << " dB");
  CHECK(sg > sp + 0.5);
  // Same scales and zero points: only the int8 weights and the int32 biases (moved by GPTQ) differ.
  CHECK(differingInitializers(d / "plain.onnx", d / "gptq.onnx", {DType::Int32, DType::Int8}) == 10);
  quantizeLenet5(d.path(), "again.onnx", " --weight-rounding gptq");
  CHECK(test::readFile(d / "again.onnx") == test::readFile(d / "gptq.onnx"));
}

TEST_CASE("lwc calibrate shards merge into the same model as one calibration", "[cli][quantize]") {
  TempDir d;
  const fs::path model = td("lenet5_fmnist.onnx"), sample = td("fmnist_sample");
  REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(sample) + " --shard 0/2 -o " + q(d / "a.json")).exit_code == 0);
  REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(sample) + " --shard 1/2 -o " + q(d / "b.json")).exit_code == 0);
  auto m1 = runLwc("-q quantize " + q(model) + " --load-calib " + q(d / "a.json") + " " + q(d / "b.json") + " -o " +
                   q(d / "sharded.onnx") + " --bench-batch 0 --layer-samples 0 --report " + q(d / "sharded.json"));
  INFO(m1.err);
  REQUIRE(m1.exit_code == 0);
  // No data was read: no calibration time or rate is claimed (the shards' summed times were).
  const auto cal = readJson(d / "sharded.json")["stages"].back()["details"]["calibration"];
  CHECK(cal["from_saved_statistics"] == true);
  CHECK(cal["seconds"].is_null());
  CHECK(cal["images_per_s"].is_null());
  CHECK_THAT(m1.out, Contains("read from --load-calib (no data read in this run)"));
  CHECK_FALSE(cal.contains("data_read_for"));
  // Bias correction still reads --calib data: said so (it printed "no data read in this run").
  auto bc = runLwc("quantize " + q(model) + " --load-calib " + q(d / "a.json") + " " + q(d / "b.json") + " --calib " +
                   q(sample) + " --bias-correction -o " + q(d / "bc.onnx") + " --bench-batch 0 --layer-samples 0 --report " +
                   q(d / "bc.json"));
  INFO(bc.err);
  REQUIRE(bc.exit_code == 0);
  CHECK_THAT(bc.out, Contains("read from --load-calib (--calib data read for bias correction)"));
  CHECK(readJson(d / "bc.json")["stages"].back()["details"]["calibration"]["data_read_for"] == nlohmann::json{"bias correction"});
  // A calibration file is the same bytes on every run (it held the run's wall-clock time).
  REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(sample) + " --shard 0/2 -o " + q(d / "a2.json")).exit_code == 0);
  CHECK(test::readFile(d / "a2.json") == test::readFile(d / "a.json"));
  auto m2 = runLwc("-q quantize " + q(model) + " --calib " + q(sample) + " --save-calib " + q(d / "all.json") + " -o " +
                   q(d / "whole.onnx") + " --bench-batch 0 --layer-samples 0");
  REQUIRE(m2.exit_code == 0);
  CHECK(readJson(d / "a.json")["samples"].get<int>() + readJson(d / "b.json")["samples"].get<int>() == 500);
  // minmax ranges of merged shards equal those of the whole set: identical models.
  CHECK(test::readFile(d / "sharded.onnx") == test::readFile(d / "whole.onnx"));
  // The files say which activation type they were collected for; int8 activations need the
  // tensors before the ReLUs that uint8 ones absorb, and the error says to recollect for int8
  // (it used to say only "collect them on this model", though they were).
  CHECK(readJson(d / "a.json")["act_type"] == "uint8");
  test::checkOneLineError(runLwc("quantize " + q(model) + " --act-type int8 --load-calib " + q(d / "a.json") + " " +
                                 q(d / "b.json") + " -o " + q(d / "int8.onnx")),
                          "they were collected for --act-type uint8, which quantizes other tensors; collect them for "
                          "int8 with lwc calibrate --act-type int8");
  CHECK_FALSE(fs::exists(d / "int8.onnx"));
  // Each file and each shard once (s0 twice used to count its samples twice without a word); a
  // missing shard is named.
  CHECK(readJson(d / "b.json")["shard"] == "1/2");
  // A bad --shard is named as given (it was "quantize.calib_shard", the pass option behind it).
  test::checkOneLineError(runLwc("calibrate " + q(model) + " --calib " + q(sample) + " --shard 2/2 -o " + q(d / "c.json")),
                          "--shard: \"2/2\" is not i/n with 0 <= i < n <= 2147483647");
  test::checkOneLineError(runLwc("quantize " + q(model) + " --load-calib " + q(d / "a.json") + " " + q(d / "a.json") +
                                 " -o " + q(d / "twice.onnx")),
                          "a.json is given twice");
  fs::copy_file(d / "a.json", d / "copy.json");
  test::checkOneLineError(runLwc("quantize " + q(model) + " --load-calib " + q(d / "a.json") + " " + q(d / "copy.json") +
                                 " -o " + q(d / "twice.onnx")),
                          "copy.json holds shard 0/2 of the data, as");
  CHECK_FALSE(fs::exists(d / "twice.onnx"));
  auto half = runLwc("quantize " + q(model) + " --load-calib " + q(d / "a.json") + " -o " + q(d / "half.onnx") +
                     " --bench-batch 0 --layer-samples 0");
  CHECK(half.exit_code == 0);
  CHECK_THAT(half.err, Contains("--load-calib: 1 of 2 shards (missing 1/2)"));
  // Shards of different splits overlap (0/2 with 1/3): refused; so are files of different
  // activation types (they were merged as "mixed"). Whole-data files (0/1) of different data merge.
  REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(sample) + " --shard 1/3 -o " + q(d / "c3.json")).exit_code == 0);
  test::checkOneLineError(runLwc("quantize " + q(model) + " --load-calib " + q(d / "a.json") + " " + q(d / "c3.json") +
                                 " -o " + q(d / "mixed.onnx")),
                          "are shards of different splits of the data");
  // A whole-data file beside a shard of the same data, or two whole-data files of it, counted
  // samples twice without a word (until 2026-12-07): the files record their data.
  test::checkOneLineError(runLwc("quantize " + q(model) + " --load-calib " + q(d / "all.json") + " " + q(d / "b.json") +
                                 " -o " + q(d / "mixed.onnx")),
                          "all.json and " + (d / "b.json").string() + " hold statistics of the same data (");
  REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(sample) + " -o " + q(d / "all2.json")).exit_code == 0);
  test::checkOneLineError(runLwc("quantize " + q(model) + " --load-calib " + q(d / "all.json") + " " + q(d / "all2.json") +
                                 " -o " + q(d / "mixed.onnx")),
                          "both hold statistics of all of the same data (");
  // Other data at the same path (another machine's folder of the same name and size) is not the
  // same data: the files record a fingerprint of the content, and they merge.
  {
    const auto all = lwc::readNpy(sample / "images.npy");
    fs::create_directories(d / "local");
    lwc::writeNpy(d / "local" / "images.npy", all.view(0, {100, 1, 28, 28}));
    REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(d / "local" / "images.npy") + " -o " + q(d / "m1.json")).exit_code == 0);
    lwc::writeNpy(d / "local" / "images.npy", all.view(100 * 28 * 28, {100, 1, 28, 28}));
    REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(d / "local" / "images.npy") + " -o " + q(d / "m2.json")).exit_code == 0);
    auto other = runLwc("-q quantize " + q(model) + " --load-calib " + q(d / "m1.json") + " " + q(d / "m2.json") + " -o " +
                        q(d / "other.onnx") + " --bench-batch 0 --layer-samples 0");
    INFO(other.err);
    CHECK(other.exit_code == 0);
  }
  REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(sample) + " --calib-samples 100 -o " + q(d / "w1.json")).exit_code == 0);
  auto whole = runLwc("-q quantize " + q(model) + " --load-calib " + q(d / "all.json") + " " + q(d / "w1.json") + " -o " +
                      q(d / "whole2.onnx") + " --bench-batch 0 --layer-samples 0");
  INFO(whole.err);
  CHECK(whole.exit_code == 0);
  REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(sample) + " --shard 1/2 --act-type int8 -o " +
                 q(d / "b8.json")).exit_code == 0);
  test::checkOneLineError(runLwc("quantize " + q(model) + " --load-calib " + q(d / "a.json") + " " + q(d / "b8.json") +
                                 " -o " + q(d / "mixed.onnx")),
                          "b8.json was collected for --act-type int8 but");
  CHECK_FALSE(fs::exists(d / "mixed.onnx"));
}

TEST_CASE("lwc calibrate names the number of tensors its file holds", "[cli][quantize]") {
  // tinyformer's Linear layers (MatMul + bias Add) are quantized after the Add, but the file also holds
  // the MatMul outputs (for --format qoperator): more tensors than the QDQ model quantizes.
  TempDir d;
  auto r = runLwc("calibrate " + q(td("tinyformer_fmnist.onnx")) + " --calib " + q(td("fmnist_sample")) +
                  " --calib-samples 40 -o " + q(d / "t.json"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const size_t held = readJson(d / "t.json")["tensors"].size();
  CHECK_THAT(r.out, Contains("statistics of " + std::to_string(held) + " tensors over 40 samples"));
  auto qz = runLwc("quantize " + q(td("tinyformer_fmnist.onnx")) + " --load-calib " + q(d / "t.json") + " -o " +
                   q(d / "t.onnx") + " --bench-batch 0 --layer-samples 0 --report " + q(d / "r.json"));
  REQUIRE(qz.exit_code == 0);
  const auto stats = readJson(d / "r.json")["stages"].back()["stats"];
  CHECK(stats["tensors_calibrated"].get<size_t>() == held);
  CHECK(stats["tensors_quantized"].get<size_t>() < held);
}

TEST_CASE("lwc quantize: bad input gets one clear error and no output file", "[cli][quantize]") {
  TempDir d;
  const fs::path model = td("lenet5_fmnist.onnx");
  auto bad = [&](const std::string& args, const std::string& expect) {
    INFO(args);
    test::checkOneLineError(runLwc("quantize " + q(model) + " -o " + q(d / "out.onnx") + " " + args), expect);
    CHECK_FALSE(fs::exists(d / "out.onnx"));
  };
  fs::create_directory(d / "empty");
  bad("--calib " + q(d / "empty"), "empty");
  writeNpy(d / "wrong.npy", test::randomFloat({8, 3, 32, 32}, 1));
  bad("--calib " + q(d / "wrong.npy"), "wrong.npy");
  bad("--calib " + q(td("fmnist_sample")) + " --exclude conv_nine", "--exclude: no node or op type named 'conv_nine'");
  bad("--mode dynamic --exclude conv_nine", "--exclude: no node or op type named 'conv_nine'");
  // Saved statistics are used as they are: a sample count was accepted and ignored.
  REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(td("fmnist_sample")) + " --calib-samples 32 -o " +
                 q(d / "s.json")).exit_code == 0);
  bad("--load-calib " + q(d / "s.json") + " --calib-samples 5",
      "--calib-samples: the statistics come from --load-calib as they were collected");
  bad("", "--calib");
  bad("--calib /no/such/dir", "/no/such/dir");
  bad("--calib " + q(td("fmnist_sample")) + " --ort-bench --ort-tool " + q(d / "nope.js"),
      "nope.js: --ort-bench needs ONNX Runtime's ort_tool.js");
  bad("--calib " + q(td("fmnist_sample")) + " --ort-bench --bench-batch 0", "--ort-bench needs --bench-batch");
  bad("--mode dynamic --calibrator entropy", "--calibrator applies to --mode static");
  bad("--mode dynamic --reduce-range", "--reduce-range applies to --mode static");
  bad("--mode dynamic --bias-correction", "--bias-correction applies to --mode static");
  bad("--mode dynamic --weight-rounding gptq", "--weight-rounding applies to --mode static");
  // Accepted and ignored before: the percentile of another calibrator, calibration data in dynamic mode.
  bad("--calib " + q(td("fmnist_sample")) + " --percentile 99", "--percentile applies to --calibrator percentile");
  bad("--calib " + q(td("fmnist_sample")) + " --calibrator percentile --percentile nan", "expected a finite number, got nan");
  bad("--mode dynamic --calib " + q(td("fmnist_sample")), "--mode dynamic quantizes activations at run time");
  // A folder or a missing file as saved statistics: an internal error before (a folder), one line now.
  bad("--calib " + q(td("fmnist_sample")) + " --load-calib " + q(td("fmnist_sample")), "is a folder, expected a calibration file");
  bad("--calib " + q(td("fmnist_sample")) + " --load-calib " + q(d / "none.json"),
      "--load-calib: " + (d / "none.json").string() + " does not exist");  // before the cleanup, not when the pass ran
  bad("--load-calib " + q(d / "none.json") + " --weight-rounding gptq", "--weight-rounding gptq measures layer inputs on calibration data");
  bad("--calib " + q(td("fmnist_sample")) + " --weight-rounding stochastic", "--weight-rounding");
  bad("--load-calib " + q(d / "none.json") + " --bias-correction", "--bias-correction measures layer outputs on calibration data");
  test::writeFile(d / "overflow.json", R"({"version": 1, "tensors": {"x": {"min": -1e999}}})");
  bad("--load-calib " + q(d / "overflow.json"), "overflow.json: not valid JSON");
  // Fields of the wrong JSON type were internal errors (nlohmann's type_error escaped).
  auto calibFile = [&](const std::string& name, const std::string& text) {
    test::writeFile(d / name, text);
    return "--load-calib " + q(d / name);
  };
  const std::string stats = R"("max": 1, "count": 0, "range": 0, "bins": 2048)";
  bad(calibFile("v.json", R"({"schema": "lwc.calib", "schema_version": "1", "tensors": {}})"),
      "v.json: unsupported schema_version \"1\"");
  bad(calibFile("s.json", R"({"schema": 7})"), "s.json: not an lwc calibration file");
  bad(calibFile("n.json", R"({"schema": "lwc.calib", "schema_version": 1, "samples": "x", "tensors": {}})"),
      "n.json: \"samples\" must be a count");
  bad(calibFile("m.json", R"({"schema": "lwc.calib", "schema_version": 1, "tensors": {"t": {"min": "0", )" + stats + "}}}"),
      "m.json: tensor 't': \"min\" must be a number, not \"0\"");
  bad(calibFile("c.json", R"({"schema": "lwc.calib", "schema_version": 1, "tensors": {"t": {"min": 0, "max": 1, "range": 0, "bins": 2048}}})"),
      "c.json: tensor 't': missing \"count\"");
  bad(calibFile("t.json", R"({"schema": "lwc.calib", "schema_version": 1, "tensors": {"t": [1]}})"),
      "t.json: tensor 't': must be a JSON object");
  // Paths the system refuses were internal errors (std::filesystem's exception) wherever lwc
  // asked about them without an error code.
  bad("--calib " + q(d / std::string(300, 'x')), "File name too long");
  {
    const auto r = runLwc("quantize " + q(model) + " --calib " + q(td("fmnist_sample")) + " -o " +
                          q(d / (std::string(300, 'x') + ".onnx")));
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Contains("the file name is 305 bytes long"));
  }
  // An already quantized model.
  REQUIRE(runLwc("-q quantize " + q(model) + " --calib " + q(td("fmnist_sample")) + " -o " + q(d / "q.onnx") +
                 " --bench-batch 0 --layer-samples 0").exit_code == 0);
  auto r = runLwc("quantize " + q(d / "q.onnx") + " --calib " + q(td("fmnist_sample")) + " -o " + q(d / "out.onnx"));
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("already quantized"));
  CHECK_THAT(r.err, !Contains("as changed by"));  // the file itself is quantized
  CHECK_FALSE(fs::exists(d / "out.onnx"));
  // Quantized twice in one pipeline: the message names the pass that quantized it, not the file.
  r = runLwc("run --passes quantize_dynamic,quantize_dynamic " + q(td("lenet300_fmnist.onnx")) + " -o " +
             q(d / "out.onnx"));
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Contains("lenet300_fmnist.onnx as changed by pass 1 (quantize_dynamic): already quantized"));
  CHECK_FALSE(fs::exists(d / "out.onnx"));
  // Statistics of another model whose tensor names fit (lenet5's /fc1/Gemm_output_0 ... for
  // lenet300): they were used, with only a note about a missing shard.
  REQUIRE(runLwc("-q calibrate " + q(model) + " --calib " + q(td("fmnist_sample")) + " --calib-samples 50 --shard 1/2 -o " +
                 q(d / "c.json")).exit_code == 0);
  test::checkOneLineError(runLwc("quantize " + q(td("lenet300_fmnist.onnx")) + " --load-calib " + q(d / "c.json") + " -o " +
                                 q(d / "out.onnx")),
                          "c.json was collected on another model ('lenet5_fmnist.onnx') than");
  CHECK_FALSE(fs::exists(d / "out.onnx"));
}

TEST_CASE("lwc quantize --mode dynamic: MatMulInteger models without calibration data", "[cli][quantize]") {
  TempDir d;
  for (const char* name : {"lenet300", "tinyformer"}) {
    INFO(name);
    const fs::path out = d / (std::string(name) + ".onnx");
    auto r = runLwc(std::string("-q quantize ") + q(td(std::string(name) + "_fmnist.onnx")) + " --mode dynamic -o " + q(out) +
                    " --eval " + q(td("fmnist_sample")) + " --report " + q(d / "r.json") + " --bench-batch 0");
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const Model m = loadModel(out);
    CHECK(countOp(m, "DynamicQuantizeLinear") > 0);
    CHECK(countOp(m, "MatMulInteger") > 0);
    const auto rep = readJson(d / "r.json");
    CHECK(rep["input"]["eval"]["top1"].get<double>() - rep["final"]["eval"]["top1"].get<double>() <= 0.005);
  }
}

TEST_CASE("lwc quantize --exclude takes a node name that holds a comma", "[cli][quantize]") {
  // --exclude was split on every comma: a node named '/fc2,x/Gemm' could not be kept in float.
  TempDir d;
  Model m = loadModel(td("lenet300_fmnist.onnx"));
  for (auto& n : m.graph.nodes)
    if (n.name == "/fc2/Gemm") n.name = "/fc2,x/Gemm";
  saveModel(m, d / "m.onnx");
  auto r = runLwc("-q quantize " + q(d / "m.onnx") + " --mode dynamic --exclude '/fc2,x/Gemm,/fc3/Gemm' -o " + q(d / "q.onnx") +
                  " --bench-batch 0");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(countOp(loadModel(d / "q.onnx"), "MatMulInteger") == 1);  // fc1 only
  test::checkOneLineError(runLwc("quantize " + q(d / "m.onnx") + " --mode dynamic --exclude '/fc2/Gemm' -o " +
                                 q(d / "q2.onnx")),
                          "--exclude: no node or op type named '/fc2/Gemm'");
}

TEST_CASE("lwc quantize --mode dynamic and lwc bench time a model with an int64 token input and a second input",
          "[cli][quantize]") {
  // Before 2026-12-01 the report's latency fed one float32 tensor to the first input, so the whole
  // command ended in "model input 'ids' expects int64 but got float32" after quantizing.
  TempDir d;
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (int64[N, 8] ids, float[N, 8, 64] x2, float[100, 64] emb, float[64, 64] w1, float[64, 10] w2) => (float[N, 8, 10] y)
{
  e = Gather (emb, ids)
  h = MatMul (e, w1)
  a = Add (h, x2)
  y = MatMul (a, w2)
}
)");
  auto addWeight = [&m](const std::string& name, Shape shape, float step) {
    Tensor t(DType::Float32, shape);
    for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = std::sin(step * static_cast<float>(i));
    m.graph.initializers.set(name, std::move(t));
  };
  addWeight("emb", {100, 64}, 0.37f);
  addWeight("w1", {64, 64}, 0.11f);
  addWeight("w2", {64, 10}, 0.23f);
  m.graph.inputs.resize(2);  // the weights were declared as inputs only to parse
  saveModel(m, d / "tokens.onnx");
  auto r = runLwc("quantize " + q(d / "tokens.onnx") + " --mode dynamic --bench-batch 4 -o " + q(d / "q.onnx") + " --report " +
                  q(d / "r.json"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(countOp(loadModel(d / "q.onnx"), "MatMulInteger") == 2);
  const auto lat = readJson(d / "r.json")["stages"].back()["details"]["latency_ms"];
  CHECK(lat["batch"] == 4);
  CHECK(lat["fp32"].get<double>() > 0);
  CHECK(lat["int8"].get<double>() > 0);
  r = runLwc("bench " + q(d / "q.onnx") + " --batch 3 --iters 2 --json");
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["batch"] == 3);
}

TEST_CASE("lwc quantize --mode dynamic quantizes a Gemm with alpha, and names one it leaves in float", "[cli][quantize]") {
  // alpha != 1 and transA = 1 were left in float without a word; with only such a layer the error
  // said there was no MatMul/Gemm with constant 2-D weights.
  TempDir d;
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 4] x, float[4, 4] w1, float[4] b1, float[4, 3] w2) => (float[N, 3] y)
{
  h = Gemm <alpha = 2.0, transB = 1> (x, w1, b1)
  t = Transpose (h)
  y = Gemm <transA = 1> (t, w2)
}
)");
  m.graph.initializers.set("w1", test::randomFloat({4, 4}, 3, -1.0f, 1.0f));
  m.graph.initializers.set("b1", test::randomFloat({4}, 4, -1.0f, 1.0f));
  m.graph.initializers.set("w2", test::randomFloat({4, 3}, 5, -1.0f, 1.0f));
  m.graph.inputs.resize(1);
  saveModel(m, d / "g.onnx");
  auto r = runLwc("quantize " + q(d / "g.onnx") + " --mode dynamic --bench-batch 0 -o " + q(d / "q.onnx"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("left in float (transA = 1"));
  const Model qm = loadModel(d / "q.onnx");
  CHECK(countOp(qm, "MatMulInteger") == 1);  // the alpha Gemm
  const Tensor x = test::randomFloat({8, 4}, 6, -1.0f, 1.0f);
  const Tensor a = engine::Session(m).runOrdered({{"x", x}})[0], b = engine::Session(qm).runOrdered({{"x", x}})[0];
  float worst = 0, top = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    worst = std::max(worst, std::fabs(a.data<float>()[i] - b.data<float>()[i]));
    top = std::max(top, std::fabs(a.data<float>()[i]));
  }
  CHECK(worst < 0.03f * top);  // alpha applied once, not dropped or doubled (an error of ~50 %)
  // Only the transA layer: the error says why it is not quantized.
  Model only = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[4, N] x, float[4, 3] w2) => (float[N, 3] y)
{ y = Gemm <transA = 1> (x, w2) }
)");
  only.graph.initializers.set("w2", test::randomFloat({4, 3}, 5, -1.0f, 1.0f));
  only.graph.inputs.resize(1);
  saveModel(only, d / "only.onnx");
  test::checkOneLineError(runLwc("quantize " + q(d / "only.onnx") + " --mode dynamic --bench-batch 0 -o " + q(d / "q2.onnx")),
                          "left in float: transA = 1");
  CHECK_FALSE(fs::exists(d / "q2.onnx"));
}

TEST_CASE("lwc quantize says it leaves an LSTM in float, in both modes, and the file runs in lwc", "[cli][quantize]") {
  TempDir d;
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 14]>
g (float[N, 5, 4] x, float[1, 24, 4] w, float[1, 24, 6] r, int64[1] zero, float[6, 3] wf) => (float[N, 3] y)
{
  t = Transpose <perm = [1, 0, 2]> (x)
  seq, hn = LSTM <hidden_size = 6> (t, w, r)
  h = Squeeze (hn, zero)
  y = MatMul (h, wf)
}
)");
  m.graph.initializers.set("w", test::randomFloat({1, 24, 4}, 3, -0.5f, 0.5f));
  m.graph.initializers.set("r", test::randomFloat({1, 24, 6}, 4, -0.5f, 0.5f));
  m.graph.initializers.set("zero", Tensor::fromVector<int64_t>({1}, {0}));
  m.graph.initializers.set("wf", test::randomFloat({6, 3}, 5, -1.0f, 1.0f));
  m.graph.inputs.resize(1);
  saveModel(m, d / "g.onnx");
  writeNpy(d / "x.npy", test::randomFloat({16, 5, 4}, 6));
  for (const std::string mode : {"dynamic", "static"}) {
    INFO(mode);
    auto r = runLwc("quantize " + q(d / "g.onnx") + " --mode " + mode + (mode == "static" ? " --calib " + q(d / "x.npy") : "") +
                    " --eval " + q(d / "x.npy") + " --bench-batch 0 -o " + q(d / (mode + ".onnx")));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK_THAT(r.err, Contains("LSTM (output 'seq'): left in float (ONNX has no integer LSTM"));
    CHECK(countOp(loadModel(d / (mode + ".onnx")), "LSTM") == 1);
  }
}

TEST_CASE("lwc quantize --mode dynamic converts an opset-10 model to 11 where 13 fails, and says why", "[cli][quantize]") {
  // Softmax 12 -> 13 needs a known input shape, which a Reshape to a computed shape hides: the
  // model was refused though DynamicQuantizeLinear needs only opset 11, and the reason was lost.
  TempDir d;
  test::writeProto(d / "o10.onnx", test::protoFromText(R"(
<ir_version: 6, opset_import: ["" : 10]>
g (float[N, 4] x) => (float[N, 3] y)
<float[4, 3] w = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2}>
{
  s = Shape (x)
  r = Reshape (x, s)
  m = MatMul (r, w)
  y = Softmax (m)
}
)"));
  auto r = runLwc("quantize " + q(d / "o10.onnx") + " --mode dynamic --bench-batch 0 -o " + q(d / "q.onnx"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("opset 10 -> 11") && Contains("to 13 it failed") && Contains("Softmax"));
  const Model qm = loadModel(d / "q.onnx");
  CHECK(qm.opsetFor("") == 11);
  CHECK(countOp(qm, "MatMulInteger") == 1);
}

TEST_CASE("lwc quantize an opset-11 model: converted to 13 for per-channel scales, or per-tensor at 11",
          "[cli][quantize]") {
  // resnet_fmnist's nodes (Conv, BatchNormalization, Relu, Add, GlobalAveragePool, Flatten, Gemm)
  // mean the same at opset 11, as torch.onnx.export(..., opset_version=11) writes them.
  TempDir d;
  Model m = loadModel(td("resnet_fmnist.onnx"));
  m.setOpset("", 11);
  saveModel(m, d / "o11.onnx");
  const fs::path sample = td("fmnist_sample");
  auto quantize = [&](const std::string& out, const std::string& extra) {
    auto r = runLwc("quantize " + q(d / "o11.onnx") + " --calib " + q(sample) + " --eval " + q(sample) + " -o " +
                    q(d / out) + " --bench-batch 0 --layer-samples 0 --json" + extra);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const auto rep = nlohmann::json::parse(r.out);
    CHECK(rep["input"]["eval"]["top1"].get<double>() - rep["final"]["eval"]["top1"].get<double>() <= 0.01);
    return r.err;
  };
  // What every DequantizeLinear of a file has: {with axis, int32 biases, total}.
  auto dqs = [&](const std::string& f) {
    const Model qm = loadModel(d / f);
    std::array<int, 3> c{0, 0, 0};
    for (const auto& n : qm.graph.nodes) {
      if (n.op_type != "DequantizeLinear") continue;
      c[0] += n.hasAttr("axis");
      c[1] += qm.graph.initializers.contains(n.inputs[0]) && qm.graph.initializers.at(n.inputs[0]).dtype() == DType::Int32;
      ++c[2];
    }
    return std::make_pair(qm.opsetFor(""), c);
  };
  // Per-channel (the default): ONNX's version converter takes the model to opset 13.
  CHECK_THAT(quantize("pc.onnx", ""), Contains("opset 11 -> 13 with ONNX's version converter"));
  const auto [pc_opset, pc] = dqs("pc.onnx");
  CHECK(pc_opset == 13);
  CHECK(pc[0] == 32);  // weights and int32 biases of the 15 convolutions and the Gemm, per channel
  CHECK(pc[1] == 16);
  // Per-tensor: opset 11 stays, and no DequantizeLinear has an axis (opset 11 has none; until
  // 2026-12-01 the int32 biases had one and the command ended in an internal error).
  const std::string err = quantize("pt.onnx", " --per-tensor");
  CHECK_THAT(err, !Contains("version converter"));
  const auto [pt_opset, pt] = dqs("pt.onnx");
  CHECK(pt_opset == 11);
  CHECK(pt[0] == 0);
  CHECK(pt[1] == 16);
  CHECK(pt[2] > 20);
}

TEST_CASE("lwc quantize --mode dynamic keeps a one-output head's bias in the parameter count", "[cli][quantize]") {
  // Linear(20, 64) -> ReLU -> Linear(64, 1): 1409 parameters, "params 1409 -> 1408" after dynamic
  // quantization, whose bias Add holds the head's one-element bias.
  TempDir d;
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 20] x) => (float[N, 1] y)
{
  h = Gemm <transB=1> (x, w1, b1)
  r = Relu (h)
  y = Gemm <transB=1> (r, w2, b2)
}
)", LoadOptions{false});
  test::addConst(m, "w1", {64, 20}, 1, -0.08f, 0.08f);
  test::addConst(m, "b1", {64}, 2, -0.08f, 0.08f);
  test::addConst(m, "w2", {1, 64}, 3, -0.08f, 0.08f);
  test::addConst(m, "b2", {1}, 4, -0.08f, 0.08f);
  saveModel(m, d / "reg.onnx");
  auto r = runLwc("quantize " + q(d / "reg.onnx") + " --mode dynamic --bench-batch 0 -o " + q(d / "q.onnx") + " --report " +
                  q(d / "r.json"));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  std::ifstream f(d / "r.json");
  const auto rep = nlohmann::json::parse(f);
  CHECK(rep["input"]["params"] == 1409);
  CHECK(rep["final"]["params"] == 1409);
}
