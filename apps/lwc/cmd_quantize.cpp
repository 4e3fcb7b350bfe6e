// lwc quantize MODEL --calib D -o OUT: cleanup + INT8 static quantization (QDQ), with a report of
// accuracy, size, per-layer error and latency. lwc calibrate: only the statistics (for shards).
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "format.h"
#include "ort_peer.h"
#include "status_line.h"
#include "lwc/engine.h"
#include "lwc/model_io.h"
#include "lwc/pipeline.h"
#include "passes/quantize_static.h"
#include "passes/registry.h"
#include "run_common.h"

namespace lwc::app {

namespace {

struct QuantArgs {
  RunArgs run;
  std::string calibrator = "minmax";
  double percentile = 99.999;
  bool percentile_given = false;  ///< passed on only when given, so the pass can refuse it beside another calibrator
  int64_t calib_samples = 0;
  bool per_tensor = false;
  bool reduce_range = false;
  bool bias_correction = false;
  std::string weight_rounding = "nearest";
  std::string act_type = "uint8";
  std::vector<std::string> exclude, keep_fp32, load_calib;
  std::string save_calib;
  std::string shard = "0/1";
  std::string mode = "static";
  std::string format = "qdq";
  int64_t bench_batch = 32;
  OrtBenchOptions ort;
  int64_t layer_samples = 100;
};

void addQuantOptions(CLI::App* cmd, QuantArgs& q) {
  cmd->add_option("--calibrator", q.calibrator, "minmax | percentile | entropy | mse")
      ->check(CLI::IsMember({"minmax", "percentile", "entropy", "mse"}));
  cmd->add_option("--percentile", q.percentile, "Percentile for --calibrator percentile")
      ->check(kFinite)
      ->check(CLI::Range(50.0, 100.0));
  cmd->add_option("--calib-samples", q.calib_samples, "Calibration samples (0 = all)")->check(CLI::NonNegativeNumber);
  cmd->add_flag("--per-tensor", q.per_tensor, "One weight scale per tensor instead of per output channel");
  cmd->add_flag("--reduce-range", q.reduce_range,
                "7-bit weights, for models that will run on x86 CPUs without VNNI (AVX2/AVX-512 only), where "
                "ONNX Runtime's u8 x s8 kernels saturate");
  cmd->add_flag("--bias-correction", q.bias_correction,
                "Correct each layer's int32 bias for the output mean shift quantization causes (calibration data)");
  cmd->add_option("--weight-rounding", q.weight_rounding,
                  "nearest (default) or gptq: round weights one input channel at a time, moving the rest to cancel "
                  "the output error on the calibration data (GPTQ)")
      ->check(CLI::IsMember({"nearest", "gptq"}));
  cmd->add_option("--act-type", q.act_type, "Activations: uint8 (asymmetric) or int8 (symmetric)")
      ->check(CLI::IsMember({"uint8", "int8"}));
  cmd->add_option("--exclude", q.exclude, "Node names or op types to keep in float (comma-separated)");
  cmd->add_option("--keep-fp32", q.keep_fp32, "first,last: keep the first and/or last layer in float")->delimiter(',');
}

nlohmann::json quantOptions(const QuantArgs& q) {
  nlohmann::json o = {{"calibrator", q.calibrator},     {"calib_samples", q.calib_samples},
          {"per_channel", !q.per_tensor},   {"reduce_range", q.reduce_range}, {"act_type", q.act_type},      {"exclude", q.exclude},
          {"keep_fp32", q.keep_fp32},       {"load_calib", q.load_calib},  {"save_calib", q.save_calib},
          {"calib_shard", q.shard},         {"format", q.format},          {"bias_correction", q.bias_correction},
          {"weight_rounding", q.weight_rounding}};
  if (q.percentile_given) o["percentile"] = q.percentile;
  return o;
}

// The flags messages name (PassOptions::key) instead of the passes' option keys.
const OptionNames kQuantFlags = {
    {"calibrator", "--calibrator"},   {"percentile", "--percentile"}, {"calib_samples", "--calib-samples"},
    {"per_channel", "--per-tensor"},  {"reduce_range", "--reduce-range"}, {"act_type", "--act-type"},
    {"exclude", "--exclude"},         {"keep_fp32", "--keep-fp32"},   {"load_calib", "--load-calib"},
    {"save_calib", "--save-calib"},   {"calib_shard", "--shard"},     {"format", "--format"},
    {"bias_correction", "--bias-correction"}, {"weight_rounding", "--weight-rounding"}};

Pipeline quantPipeline(const QuantArgs& q) {
  Pipeline p = cleanupPipeline();
  p.name = "quantize (" + q.mode + ")";
  p.origin = "lwc quantize";
  PipelineStep s;
  s.where = "quantize";
  if (q.mode == "dynamic") {
    s.pass = passes::builtinPasses().create("quantize_dynamic", "quantize");
    s.pass->configure({{"per_channel", !q.per_tensor}, {"exclude", q.exclude}}, "quantize", kQuantFlags);
  } else {
    s.pass = passes::builtinPasses().create("quantize_static", "quantize");
    s.pass->configure(quantOptions(q), "quantize", kQuantFlags);
  }
  p.steps.push_back(std::move(s));
  return p;
}

}  // namespace

void addQuantizeCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto q = std::make_shared<QuantArgs>();
  auto* cmd = app.add_subcommand("quantize", "INT8 post-training quantization: static with calibration data (default) or --mode dynamic; QDQ output (default) or --format qoperator (cleanup + quantize_static or quantize_dynamic)");
  cmd->add_option("model", q->run.positional, "ONNX model file (float)")->required()->expected(1);
  addRunOptions(cmd, q->run);
  addQuantOptions(cmd, *q);
  cmd->add_option("--save-calib", q->save_calib, "Write the calibration statistics (lwc.calib JSON) for reuse");
  cmd->add_option("--load-calib", q->load_calib, "Use saved statistics instead of calibrating (several files merge)")
      ->expected(1, -1);
  cmd->add_option("--format", q->format, "qdq (default) or qoperator (QLinearConv/QLinearMatMul nodes)")
      ->check(CLI::IsMember({"qdq", "qoperator"}));
  cmd->add_option("--mode", q->mode, "static (calibrated activations, QDQ) or dynamic (activations quantized at run time)")
      ->check(CLI::IsMember({"static", "dynamic"}));
  cmd->add_option("--bench-batch", q->bench_batch, "Batch for the FP32 vs INT8 latency in the report (0 = skip)")
      ->check(CLI::Range(int64_t(0), kMaxBatch));
  q->ort.add(cmd, "FP32 vs INT8 latency");
  cmd->add_option("--layer-samples", q->layer_samples, "Samples for the per-layer error table (0 = skip)")
      ->check(CLI::NonNegativeNumber);
  cmd->callback([&action, q, cmd] {
    // Options that only static quantization reads: an error in dynamic mode rather than ignored.
    std::string static_only;
    for (const char* o : {"--calibrator", "--percentile", "--calib-samples", "--reduce-range", "--bias-correction", "--weight-rounding", "--act-type", "--keep-fp32",
                          "--save-calib", "--load-calib", "--format"})
      if (static_only.empty() && cmd->count(o) > 0) static_only = o;
    const bool percentile_given = cmd->count("--percentile") > 0, calib_given = cmd->count("--calib") > 0;
    q->percentile_given = percentile_given;
    const bool both_limits = cmd->count("--calib-limit") > 0 && cmd->count("--calib-samples") > 0;
    const bool layer_samples_given = cmd->count("--layer-samples") > 0, bench_given = cmd->count("--bench-batch") > 0;
    action = [q, static_only, percentile_given, calib_given, both_limits, layer_samples_given, bench_given] {
      // Both cap the calibration samples (the data's limit and the pass option); two different
      // values would silently mean the smaller one.
      if (both_limits && q->run.calib_limit != q->calib_samples)
        fail("quantize: --calib-limit ", q->run.calib_limit, " and --calib-samples ", q->calib_samples,
             " both limit the calibration samples; give one of them");
      if (percentile_given && q->calibrator != "percentile")
        fail("quantize: --percentile applies to --calibrator percentile (the calibrator is ", q->calibrator,
             "); add --calibrator percentile or drop --percentile");
      if (q->mode == "dynamic" && calib_given)
        fail("quantize: --mode dynamic quantizes activations at run time and reads no calibration data; drop --calib");
      if (q->mode == "dynamic" && !static_only.empty())
        fail("quantize: ", static_only, " applies to --mode static; dynamic mode has no calibration and writes ",
             "DynamicQuantizeLinear + MatMulInteger (drop ", static_only, ")");
      if (q->mode == "static" && q->bias_correction && q->run.calib.empty())
        fail("quantize: --bias-correction measures layer outputs on calibration data: give --calib DIR (with --load-calib too)");
      if (q->mode == "static" && q->weight_rounding == "gptq" && q->run.calib.empty())
        fail("quantize: --weight-rounding gptq measures layer inputs on calibration data: give --calib DIR (with --load-calib too)");
      if (q->mode == "static" && q->run.calib.empty() && q->load_calib.empty())
        fail("quantize: give calibration data with --calib DIR (or saved statistics with --load-calib FILE), or use --mode dynamic");
      const std::string ort_tool = q->ort.resolve("quantize", q->bench_batch);
      Pipeline p = quantPipeline(*q);
      RunHooks hooks;
      auto ort = std::make_shared<OrtPair>();
      auto table = std::make_shared<std::vector<passes::TensorError>>();
      auto lat = std::make_shared<std::pair<double, double>>(0.0, 0.0);
      auto bench_batch = std::make_shared<int64_t>(q->bench_batch);
      hooks.on_stage = [q, table, lat, ort, ort_tool, bench_batch, layer_samples_given, bench_given](
                           const Pass& pass, const Model& before, const Model& after, StageRecord& rec) {
        if (pass.name().rfind("quantize", 0) != 0) return;
        const auto* qs = dynamic_cast<const passes::QuantizeStatic*>(&pass);
        nlohmann::json d = nlohmann::json::object();
        const DataSpec* data = nullptr;
        DataSpec spec;
        if (!q->run.eval.empty() || !q->run.calib.empty()) {
          const bool eval = !q->run.eval.empty();
          spec.options.path = eval ? q->run.eval : q->run.calib;
          if (!q->run.preprocess.empty()) spec.options.preprocess = Preprocess::load(q->run.preprocess);
          // The data's limit holds here too (the table read samples --calib-limit left out).
          if (const int64_t limit = eval ? q->run.eval_limit : q->run.calib_limit; limit > 0) spec.options.limit = limit;
          spec.batch = 16;
          spec.origin = eval ? "--eval" : "--calib";
          data = &spec;
        }
        if (qs) {
          const auto& st = qs->lastStats();
          // Statistics read with --load-calib took no time here: no time or rate is claimed for them.
          d["calibration"] = {{"samples", st.samples}, {"from_saved_statistics", st.loaded}};
          d["calibration"]["seconds"] = st.loaded ? nlohmann::json() : nlohmann::json(st.seconds);
          d["calibration"]["images_per_s"] =
              st.loaded ? nlohmann::json() : nlohmann::json(st.seconds > 0 ? double(st.samples) / st.seconds : 0.0);
          d["calibration"]["threads"] = engine::configuredThreads();
          // With saved statistics, bias correction, GPTQ and the error table still read --calib
          // data: said, not "no data read".
          std::vector<std::string> reads;
          if (q->bias_correction) reads.push_back("bias correction");
          if (q->weight_rounding == "gptq") reads.push_back("GPTQ");
          if (data && data->origin == "--calib" && q->layer_samples > 0) reads.push_back("the per-tensor error table");
          if (st.loaded && !reads.empty()) d["calibration"]["data_read_for"] = reads;
        }
        if (layer_samples_given && !data && q->layer_samples > 0)  // accepted and silently did nothing
          rec.result.notes.push_back("--layer-samples: the per-tensor error table needs data (--eval or --calib); not measured");
        if (qs && data && q->layer_samples > 0) {
          // A QOperator file is measured in its QDQ form: the same integers, with DequantizeLinear outputs to compare.
          const Model& measured = qs->qdqForm() ? *qs->qdqForm() : after;
          progress("measuring each quantized tensor's error (--layer-samples " + std::to_string(q->layer_samples) + ")");
          *table = passes::quantizationErrors(before, measured, *qs, *data, q->layer_samples, "--layer-samples", q->run.threads);
          nlohmann::json layers = nlohmann::json::array();
          for (const auto& e : *table)
            layers.push_back({{"tensor", e.tensor}, {"kind", e.kind}, {"sqnr_db", e.sqnr_db}, {"cosine", e.cosine},
                              {"elements", e.elements}});
          d["layers"] = layers;
        }
        if (!qs && data && q->layer_samples > 0)  // --layer-samples was accepted and silently did nothing
          rec.result.notes.push_back(
              "per-tensor error table: not measured for --mode dynamic (its activations are quantized per batch at run "
              "time, with no DequantizeLinear to compare); lwc compare MODEL OUT --data D --per-layer compares the models' tensors");
        std::string batch_note;
        int64_t bb = q->bench_batch > 0 ? reportBenchBatch(before, q->bench_batch, bench_given, batch_note) : 0;
        std::optional<Shape> sample;  // the data's, for dimensions the model leaves open
        if (bb > 0 && !prepareTiming(before, q->run, sample, rec.result.notes)) bb = 0;
        const Shape* sp = sample ? &*sample : nullptr;
        *bench_batch = bb;
        if (bb > 0) {
          *lat = pairedMedianLatencyMs(before, after, bb, q->run.threads, sp);
          d["latency_ms"] = {{"batch", bb}, {"threads", engine::configuredThreads()}, {"fp32", lat->first}, {"int8", lat->second},
                             {"speedup", lat->second > 0 ? lat->first / lat->second : 0.0}};
          if (sp) d["latency_ms"]["sample_shape"] = *sp;
          if (!batch_note.empty()) rec.result.notes.push_back(batch_note);
        }
        if (!ort_tool.empty() && bb > 0 && sp) {
          rec.result.notes.push_back(kOrtOpenShapeNote);
        } else if (!ort_tool.empty() && bb > 0) {
          *ort = ortBenchPair(ort_tool, before, after, bb, q->run.threads);
          d["ort_latency_ms"] = ort->toJson(bb, "fp32", "int8");
        }
        if (qs && !q->reduce_range && engine::hostX86WithoutVnni()) {
          const std::string note =
              "this CPU has no VNNI: ONNX Runtime's u8 x s8 kernels on CPUs like it saturate with 8-bit weights and can "
              "lose accuracy that lwc's exact engine does not show (mnv2_fmnist: 90.63 % vs 92.51 %); quantize with "
              "--reduce-range for models that will run on such CPUs";
          rec.result.notes.push_back(note);  // logged on stderr with the other notes, and in the report
        }
        rec.details = d;
      };
      hooks.print_extra = [table, lat, ort, bench_batch](const PipelineReport& rep) {
        const auto& d = rep.stages.back().details;
        if (d.contains("calibration") && d["calibration"]["from_saved_statistics"].get<bool>()) {
          std::string reads;
          for (const auto& r : d["calibration"].value("data_read_for", nlohmann::json::array()))
            reads += (reads.empty() ? "" : " and ") + r.get<std::string>();
          std::printf("\ncalibration  activation ranges from %lld samples' statistics read from --load-calib (%s)\n",
                      static_cast<long long>(d["calibration"]["samples"].get<int64_t>()),
                      reads.empty() ? "no data read in this run" : ("--calib data read for " + reads).c_str());
        }
        else if (d.contains("calibration"))
          std::printf("\ncalibration  %lld samples in %.2f s (%.0f images/s, %s)\n",
                      static_cast<long long>(d["calibration"]["samples"].get<int64_t>()),
                      d["calibration"]["seconds"].get<double>(), d["calibration"]["images_per_s"].get<double>(),
                      threadsText(d["calibration"]["threads"].get<int>()).c_str());
        if (lat->first > 0)
          std::printf("latency      lwc engine, batch %lld, %s: fp32 %.3f ms, int8 %.3f ms (%.2fx)\n",
                      static_cast<long long>(*bench_batch), threadsText(engine::configuredThreads()).c_str(), lat->first, lat->second,
                      lat->first / lat->second);
        if (ort->a_ms > 0)
          std::printf("latency      ONNX Runtime %s, batch %lld, %s: fp32 %.3f ms, int8 %.3f ms (%.2fx)\n",
                      ort->version.c_str(), static_cast<long long>(*bench_batch), threadsText(ort->threads).c_str(), ort->a_ms, ort->b_ms,
                      ort->a_ms / ort->b_ms);
        if (!table->empty()) {
          std::printf("\nper-tensor error, worst first (SQNR of the int8 tensor against fp32):\n");
          std::printf("  %-64s %-10s %9s %9s\n", "tensor", "kind", "SQNR dB", "cosine");
          const size_t show = std::min<size_t>(table->size(), 12);
          for (size_t i = 0; i < show; ++i) {
            const auto& e = (*table)[i];
            std::printf("  %s %-10s %9.2f %9.5f\n", column(e.tensor, 64).c_str(), e.kind.c_str(), e.sqnr_db, e.cosine);
          }
          if (table->size() > show)
            std::printf("  ... %zu more in the JSON report (--report)\n", table->size() - show);
        }
      };
      q->run.extra_output = q->save_calib;
      return runPipelineCommand(std::move(p), q->run.positional.at(0), q->run, hooks);
    };
  });
}

void addCalibrateCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto q = std::make_shared<QuantArgs>();
  auto* cmd = app.add_subcommand("calibrate", "Collect calibration statistics only (for lwc quantize --load-calib; shardable)");
  cmd->add_option("model", q->run.positional, "ONNX model file (float)")->required()->expected(1);
  cmd->add_option("--calib", q->run.calib, "Calibration data")->required();
  cmd->add_option("--preprocess", q->run.preprocess, "Preprocessing JSON (default: preprocess.json next to the data)");
  cmd->add_option("-o,--output", q->save_calib, "Statistics file to write (lwc.calib JSON)")->required();
  cmd->add_option("--shard", q->shard, "i/n: only the i-th of n equal parts of the data (0-based)");
  cmd->add_option("--calib-samples", q->calib_samples, "Calibration samples (0 = all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--act-type", q->act_type, "Activations the statistics are for: uint8 or int8")
      ->check(CLI::IsMember({"uint8", "int8"}));
  cmd->add_option("--exclude", q->exclude, "Node names or op types that will stay float");
  cmd->add_option("--keep-fp32", q->keep_fp32, "first,last")->delimiter(',');
  addThreadsOption(cmd, q->run.threads);
  cmd->callback([&action, q] {
    action = [q] {
      const std::string& model_path = q->run.positional.at(0);
      if (q->save_calib.empty()) fail("-o: the output path is empty; give the file to write");
      passes::parseShard(q->shard, "--shard");  // named as the user gave it, not as the pass option
      std::vector<NamedPath> inputs{{"the input model", model_path}, {"the --preprocess file", q->run.preprocess}};
      addDataInputs(inputs, "--calib", q->run.calib);
      engine::configureThreads(q->run.threads);
      Model m = loadPipelineInputFor(model_path, {{"-o", q->save_calib}}, std::move(inputs));
      Pipeline p = quantPipeline(*q);
      p.steps.back().where = "calibrate";  // errors name the command the user ran
      p.calib = DataSpec{};
      p.calib->options.path = q->run.calib;
      if (!q->run.preprocess.empty()) p.calib->options.preprocess = Preprocess::load(q->run.preprocess);
      p.calib->origin = "--calib";
      p.calib->options.limit_hint = "--calib-samples";
      RunOptions ro;
      ro.threads = q->run.threads;
      ro.log = [](const std::string& s) { progress(s); };
      ro.status = [](const std::string& s) { showStatus(s); };
      ro.warn = [](const std::string& s) { spdlog::warn("{}", s); };
      OutputSet outputs;  // the statistics go in place only when the whole run succeeds
      ro.outputs = &outputs;
      PipelineReport rep = [&] {
        const StatusScope status;
        return runPipeline(p, m, ro);
      }();
      const auto& st = rep.stages.back().result.stats;
      std::printf("wrote %s: statistics of %lld tensors over %lld samples (shard %s)\n", q->save_calib.c_str(),
                  static_cast<long long>(st.at("tensors_calibrated")),
                  static_cast<long long>(st.at("calibration_samples")), q->shard.c_str());
      flushStdoutOrFail();  // before the file goes in place: a failed run leaves none
      outputs.commit();
      return 0;
    };
  });
}

}  // namespace lwc::app
