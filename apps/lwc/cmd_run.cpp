// lwc run PIPELINE.json MODEL -o OUT (or --passes "a,b{k=v}") and lwc fuse MODEL -o OUT: run a
// pipeline, check the result, write it atomically, report, and gate.
#include <onnx/defs/printer.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>

#include "cleanup_config.h"
#include "commands.h"
#include "format.h"
#include "run_common.h"
#include "status_line.h"
#include "lwc/dataset.h"
#include "lwc/engine.h"
#include "lwc/json_text.h"
#include "lwc/metrics.h"
#include "lwc/model_io.h"
#include "lwc/pipeline.h"
#include "passes/registry.h"
#include "passes/fold_constants.h"

namespace lwc::app {

namespace fs = std::filesystem;

void addRunOptions(CLI::App* cmd, RunArgs& a, bool calibration) {
  cmd->add_option("-o,--output", a.output, "Output ONNX file (written atomically)")->required();
  cmd->add_flag("--external-data", a.external_data,
                "Write the weights (each initializer of 1 KiB or more) to OUTPUT.data beside the ONNX file, as ONNX's "
                "external data; a model over protobuf's 2 GB limit is written so without this flag");
  cmd->add_option("--report", a.report, "Write the report as JSON (schema lwc.report)");
  cmd->add_option("--report-md", a.report_md, "Write the report as Markdown (for a CI job summary)");
  cmd->add_option("--eval", a.eval, "Evaluation data (lwc run: replaces the pipeline's data.eval)");
  cmd->add_option("--eval-limit", a.eval_limit, "Use only N evaluation samples (0 = all; default: lwc run: the pipeline's data.eval.limit, else all)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-batch", a.eval_batch,
                  "Evaluation batch size (default: lwc run: the pipeline's data.eval.batch, else 100, lowered for models "
                  "whose activations would pass 256 MB)")
      ->check(CLI::Range(int64_t(1), kMaxBatch));
  if (calibration) {
    cmd->add_option("--calib", a.calib, "Calibration data (lwc run: replaces the pipeline's data.calib)");
    cmd->add_option("--calib-limit", a.calib_limit, "Use only N calibration samples (0 = all; default: lwc run: the pipeline's data.calib.limit, else all)")->check(CLI::NonNegativeNumber);
  }
  cmd->add_option("--preprocess", a.preprocess,
                  calibration ? "Preprocessing JSON for --eval/--calib data (default: preprocess.json next to the data)"
                              : "Preprocessing JSON for --eval data (default: preprocess.json next to the data)");
  cmd->add_flag("--print-after-all", a.print_after_all, "Print the graph (ONNX text form) to stderr after every pass");
  cmd->add_flag("--time-passes", a.time_passes, "Show the time spent in each pass in the table (--json always has each stage's seconds)");
  cmd->add_flag("--json", a.json, "Print the JSON report on stdout instead of the table");
  addThreadsOption(cmd, a.threads);
}

namespace {

void applyDataOverride(std::optional<DataSpec>& spec, const std::string& path, int64_t limit, const std::string& preprocess,
                       const char* flag) {
  if (!path.empty()) {
    // The flag's data replaces the pipeline's entry whole: its labels, preprocessing and limit
    // belong to the pipeline's data (the limit used to stay while the preprocessing went).
    if (spec && (spec->options.preprocess || spec->options.limit > 0 || !spec->options.labels.empty())) {
      std::string dropped;
      if (!spec->options.labels.empty())
        dropped = "its labels file '" + spec->options.labels.string() + "' (labels beside the new data are found as usual)";
      if (spec->options.preprocess && preprocess.empty())
        dropped += (dropped.empty() ? "" : ", ") + std::string("its preprocessing (give --preprocess FILE for ") + flag +
                   "'s data)";
      if (spec->options.limit > 0 && limit < 0)
        dropped += (dropped.empty() ? "its limit of " : ", its limit of ") + std::to_string(spec->options.limit) +
                   " samples (give " + flag + "-limit N)";
      if (!dropped.empty())
        spdlog::warn("{} replaces the pipeline's data entry ({}) whole, so {} no longer applies", flag, spec->origin, dropped);
    }
    spec = DataSpec{.options = {},
                    .batch = spec ? spec->batch : DataSpec{}.batch,
                    .batch_given = spec && spec->batch_given,
                    .origin = flag};
    spec->options.path = path;
    if (!preprocess.empty()) spec->options.preprocess = Preprocess::load(preprocess);
  }
  if (!spec) return;
  if (limit >= 0) spec->options.limit = limit;
  const std::string limit_flag = std::string(flag) + "-limit";
  spec->options.limit_hint =
      spec->options.limit_hint.empty() || !path.empty() ? limit_flag : limit_flag + " or " + spec->options.limit_hint;
}

void printGraph(const std::string& pass, const Model& m) {
  clearStatus();
  onnx::ModelProto p = modelToProto(m);
  auto* g = p.mutable_graph();
  std::cerr << "// ----- after " << pass << ": " << g->node_size() << " nodes, " << g->initializer_size()
            << " initializers -----\n";
  for (const auto& t : g->initializer()) {
    std::cerr << "//   " << t.name() << ": " << dtypeName(static_cast<DType>(t.data_type())) << "[";
    for (int d = 0; d < t.dims_size(); ++d) std::cerr << (d ? "," : "") << t.dims(d);
    std::cerr << "]\n";
  }
  g->clear_initializer();
  std::cerr << *g << "\n";
}

}  // namespace

int64_t benchBatchFor(const Model& m, int64_t requested) {
  const int64_t fixed = fixedBatchSize(m);
  return fixed > 0 ? fixed : requested;
}

std::string fixedBatchNote(int64_t used, int64_t requested) {
  if (used == requested) return "";
  return "latency measured at batch " + std::to_string(used) + ", the model input's fixed batch size (not --bench-batch " +
         std::to_string(requested) + ")";
}

int64_t reportBenchBatch(const Model& m, int64_t requested, bool given, std::string& note) {
  int64_t b = benchBatchFor(m, requested);
  note = fixedBatchNote(b, requested);
  if (given || b != requested || b <= 1) return b;
  const double macs = static_cast<double>(analyzeModel(m, AnalyzeOptions{1, /*entropy=*/false}).macs);
  double budget = kBenchBudgetMacs;
  if (const char* e = std::getenv("LWC_BENCH_BUDGET_MACS")) budget = std::atof(e);  // for tests, on small models
  while (b > 1 && macs * static_cast<double>(b) > budget) b /= 2;
  if (b != requested)
    note = "latency measured at batch " + std::to_string(b) + ", not the default " + std::to_string(requested) +
           ": one run at batch " + std::to_string(requested) + " is " + humanCount(macs * static_cast<double>(requested)) +
           " multiply-adds (--bench-batch " + std::to_string(requested) + " measures it there, --bench-batch 0 skips it)";
  return b;
}

namespace {
// The declared shape of a real input with its unknown dimensions after the first filled from a
// data sample's shape (when its rank fits); nullopt when one stays unknown.
std::optional<Shape> timingShape(const ValueInfo& in, const Shape* sample, int64_t batch) {
  if (!in.shape) return std::nullopt;
  const SymShape& s = *in.shape;
  const bool fits = sample && sample->size() + 1 == s.size();
  Shape out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i].known()) out.push_back(s[i].value);
    else if (i == 0) out.push_back(batch);
    else if (fits) out.push_back((*sample)[i - 1]);
    else return std::nullopt;
  }
  return out;
}
}  // namespace

std::string benchShapeProblem(const Model& m, const Shape* sample) {
  const auto inputs = m.graph.realInputs();
  for (const ValueInfo* in : inputs) {
    // A tensor of a type lwc has no kernels for (bfloat16) keeps its declaration verbatim: it was
    // called shapeless.
    if (in->other_type && in->other_type->has_tensor_type())
      return "input '" + in->name + "' is a " +
             onnxTypeName(in->other_type->tensor_type().elem_type()) +
             " tensor, an element type lwc does not compute with";
    if (!in->shape) return "input '" + in->name + "' declares no shape";
    if (!timingShape(*in, inputs.size() == 1 ? sample : nullptr, 1))
      return "input '" + in->name + "' has unknown dimensions besides the batch (" + symShapeStr(*in->shape) + ")";
  }
  return "";
}

engine::TensorMap randomFeeds(const Model& m, int64_t batch, std::mt19937& rng, const Shape* sample) {
  if (const std::string why = benchShapeProblem(m, sample); !why.empty()) throw InternalError("randomFeeds: " + why);
  const auto inputs = m.graph.realInputs();
  engine::TensorMap feeds;
  for (const ValueInfo* v : inputs) {
    const Shape shape = *timingShape(*v, inputs.size() == 1 ? sample : nullptr, batch);
    feeds[v->name] = randomTensor(v->dtype == DType::Undefined ? DType::Float32 : v->dtype, shape, rng);
  }
  return feeds;
}

Tensor randomTensor(DType dtype, const Shape& shape, std::mt19937& rng) {
  if (isFloat(dtype)) {
    // Drawn as float32 in every float type, so a float16 or float64 input sees the values a
    // float32 one would (rounded to float16).
    Tensor f(DType::Float32, shape);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (int64_t i = 0; i < f.numel(); ++i) f.data<float>()[i] = u(rng);
    return dtype == DType::Float32 ? f : f.cast(dtype);
  }
  Tensor t(dtype, shape);
  if (dtype == DType::UInt8 || dtype == DType::Int8) {
    auto* p = static_cast<uint8_t*>(t.raw());
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<uint8_t>(rng());
  }  // other types stay zero: valid indices, token ids and masks
  return t;
}

namespace {
std::optional<Shape> dataSampleShape(const RunArgs& a, const Model& m) {
  const std::string& path = !a.eval.empty() ? a.eval : a.calib;
  if (path.empty()) return std::nullopt;
  try {
    DataOptions o;
    o.path = path;
    if (!a.preprocess.empty()) o.preprocess = Preprocess::load(a.preprocess);
    fitToModel(o, m);
    o.limit = 1;
    auto ds = openDataset(o);
    auto b = ds->next(1);
    if (!b || b->inputs.rank() < 1) return std::nullopt;
    return Shape(b->inputs.shape().begin() + 1, b->inputs.shape().end());
  } catch (const Error&) {
    return std::nullopt;
  }
}
}  // namespace

bool prepareTiming(const Model& m, const RunArgs& a, std::optional<Shape>& sample, std::vector<std::string>& notes) {
  sample.reset();
  if (benchShapeProblem(m).empty()) return true;
  sample = dataSampleShape(a, m);
  if (const std::string why = benchShapeProblem(m, sample ? &*sample : nullptr); !why.empty()) {
    notes.push_back("latency not measured: " + why + "; `lwc bench --data` times such a model");
    sample.reset();
    return false;
  }
  notes.push_back("latency measured at the data's sample shape " + shapeStr(*sample) +
                  ", which the model input leaves open");
  return true;
}

// Median latencies of two models in the lwc engine, taking turns (see run_common.h).
std::pair<double, double> pairedMedianLatencyMs(const Model& a, const Model& b, int64_t batch, int threads,
                                                const Shape* sample) {
  progress("measuring latency in lwc at batch " + std::to_string(batch) + ", before and after (about 3 s)");
  using Clock = std::chrono::steady_clock;
  engine::SessionOptions so;
  so.threads = threads;
  engine::Session sa(a, so), sb(b, so);
  std::mt19937 rng_a(42), rng_b(42);  // each model its own inputs, the same as when measured alone
  const engine::TensorMap fa = randomFeeds(a, batch, rng_a, sample), fb = randomFeeds(b, batch, rng_b, sample);
  for (int i = 0; i < 3; ++i) sa.run(fa);
  for (int i = 0; i < 3; ++i) sb.run(fb);
  std::vector<double> ta, tb;
  constexpr size_t kMaxRuns = 2000;  // each: a model of a few microseconds stops early
  auto block = [](engine::Session& s, const engine::TensorMap& feeds, std::vector<double>& t) {
    const auto end = Clock::now() + std::chrono::milliseconds(250);
    do {
      const auto t0 = Clock::now();
      s.run(feeds);
      t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    } while (Clock::now() < end && t.size() < kMaxRuns);
  };
  const auto stop = Clock::now() + std::chrono::milliseconds(3000);
  while (ta.size() < 5 || tb.size() < 5 || (Clock::now() < stop && ta.size() < kMaxRuns && tb.size() < kMaxRuns)) {
    block(sa, fa, ta);
    block(sb, fb, tb);
  }
  auto median = [](std::vector<double>& t) {
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  };
  return {median(ta), median(tb)};
}

Pipeline cleanupPipeline() {
  return Pipeline::fromJson(nlohmann::json::parse(kCleanupConfig), "configs/cleanup.json (built in)", fs::current_path(),
                            passes::builtinPasses());
}

void addDataInputs(std::vector<NamedPath>& inputs, const std::string& origin, const fs::path& path, const fs::path& labels,
                   const fs::path& preprocess) {
  const std::string data = "the data of " + origin, lab = "the labels of " + origin, pre = "the preprocessing of " + origin;
  inputs.push_back({data, path});
  inputs.push_back({lab, labels});
  inputs.push_back({pre, preprocess});
  std::error_code ec;
  if (fs::is_directory(path, ec)) return;  // a folder: every file in it, at any depth (checkOutputPaths)
  // Beside a data file, what the loaders find there by themselves: its preprocessing, the labels
  // of a .npy, the labels twin of an IDX images file (an output written over them was read by
  // this run and broke the next one).
  for (const auto& f : filesReadBeside(path)) inputs.push_back({f.filename() == "preprocess.json" ? pre : lab, f});
}

Model loadPipelineInputFor(const std::string& model_path, const std::vector<NamedPath>& outputs,
                           std::vector<NamedPath> inputs) {
  checkOutputPaths(outputs, inputs);
  Model m = loadPipelineInput(model_path);
  for (const auto& f : m.external_data_files) inputs.push_back({"the input model's external data", f});
  checkOutputPaths(outputs, inputs);
  return m;
}

int runPipelineCommand(Pipeline p, const std::string& model_path, const RunArgs& a, const RunHooks& hooks) {
  // Options about data that the run does not have would be ignored without a word.
  if (a.eval_limit >= 0 && a.eval.empty() && !p.eval)
    fail("--eval-limit: this run has no evaluation data; give --eval DATA (or data.eval in the pipeline)");
  if (a.calib_limit >= 0 && a.calib.empty() && !p.calib)
    fail("--calib-limit: this run has no calibration data; give --calib DATA (or data.calib in the pipeline)");
  if (!a.preprocess.empty() && a.eval.empty() && a.calib.empty())
    fail("--preprocess applies to the data given with --eval or --calib; for a pipeline's own data set \"preprocess\" "
         "in its data entry");
  if (a.keep_failed && p.gates.empty())
    fail("--keep-failed: this run has no quality gates, so its model is always written; drop it (gates come from a "
         "pipeline file's \"gates\")");
  if (a.eval_batch > 0 && a.eval.empty() && !p.eval)
    fail("--eval-batch: this run has no evaluation data; give --eval DATA (or data.eval in the pipeline)");
  applyDataOverride(p.eval, a.eval, a.eval_limit, a.preprocess, "--eval");
  if (a.eval_batch > 0) {
    p.eval->batch = a.eval_batch;
    p.eval->batch_given = true;
  }
  applyDataOverride(p.calib, a.calib, a.calib_limit, a.preprocess, "--calib");
  p.check();
  if (a.output.empty()) fail("-o: the output path is empty; give the file to write");
  // Every file the run writes, checked before any work (the model is written before the reports)
  // against each other and every file it reads; the input's external data once it is loaded.
  // The external data file is checked even where the model turns out to fit one file: which it
  // will be is known only at the end, and a data file that would replace an input must not be
  // found then.
  const fs::path data_file = externalDataPath(a.output);
  const char* data_what = "the external data file of -o";
  if (std::error_code ec; fs::is_directory(data_file, ec))
    fail("cannot write '", data_file.string(), "' (", data_what,
         ", written with --external-data or for a model over 2 GB): it is a folder; remove it or choose another -o");
  std::vector<NamedPath> outputs{{"-o", a.output}, {"--report", a.report}, {"--report-md", a.report_md}, {data_what, data_file}};
  std::vector<NamedPath> inputs{{"the input model", model_path}};
  if (!a.pipeline_file.empty()) inputs.push_back({"the pipeline file", a.pipeline_file});
  if (!a.preprocess.empty()) inputs.push_back({"the --preprocess file", a.preprocess});
  for (const auto* d : {&p.eval, &p.calib})
    if (*d)
      addDataInputs(inputs, (*d)->origin, (*d)->options.path, (*d)->options.labels,
                    (*d)->options.preprocess ? (*d)->options.preprocess->file : fs::path());
  for (const auto& step : p.steps) {  // a pass's own files: quantize_static's save_calib and load_calib
    const PassOptions& po = step.pass->options();
    if (po.has("save_calib"))
      outputs.push_back({a.extra_output.empty() ? step.where + ".save_calib" : "--save-calib", po.getString("save_calib")});
    if (po.has("load_calib"))
      for (const auto& f : po.getStrings("load_calib")) {
        // Before any work, as every other file the run reads (it was found missing when its pass ran).
        std::error_code ec;
        if (!fs::exists(f, ec)) fail(po.key("load_calib"), ": ", f, " does not exist; give the statistics file lwc calibrate or --save-calib wrote");
        inputs.push_back({"a --load-calib file", f});
      }
  }
  engine::configureThreads(a.threads);
  Model m = loadPipelineInputFor(model_path, outputs, std::move(inputs));
  RunOptions ro;
  ro.threads = a.threads;
  ro.log = [](const std::string& s) { progress(s); };  // lines with -v, else a status line on a terminal
  ro.status = [](const std::string& s) { showStatus(s); };
  ro.note = [](const std::string& s) { spdlog::info("{}", s); };   // what a pass left alone, and why
  if (spdlog::should_log(spdlog::level::debug)) ro.note_group = 0;  // -v: every note on its own line
  ro.warn = [](const std::string& s) { spdlog::warn("{}", s); };
  ro.full_count = [](const Model& model) { return passes::analyzeFolded(model, AnalyzeOptions{1, /*entropy=*/false}); };
  if (a.print_after_all) ro.after_pass = printGraph;
  ro.on_stage = hooks.on_stage;
  // Every file of the run goes in place together at the end, or none does.
  OutputSet staged;
  ro.outputs = &staged;
  ro.output = a.output;
  ro.save.external_data = a.external_data;
  PipelineReport rep = [&] {
    const StatusScope status;
    return runPipeline(p, m, ro);
  }();
  rep.output = a.output;
  try {
    checkModelForOutput(m);
  } catch (const InternalError&) {
    // The input check forgave what the passes usually repair (Constant nodes); if the input as
    // read already fails ONNX's checks, that is the reason, and the user's to fix.
    if (const std::string problem = inputModelProblem(loadModel(model_path), /*as_is=*/true); !problem.empty())
      fail(model_path, ": the input model ", problem,
           " (lwc writes only models that pass these checks, and its passes did not repair this: repair the model or "
           "export it again)");
    throw;
  }
  const bool ok = rep.gatesPassed();
  rep.output_written = ok || a.keep_failed;
  if (rep.output_written) {
    const SerializedModel written = stageModel(staged, m, a.output, ro.save);
    rep.output_data = written.data_path.string();
    // The report's bytes are those of the files written (stages[0] is the input file as read).
    if (rep.stages.size() > 1 && written.totalBytes() != rep.stages.back().metrics.file_bytes)
      throw InternalError("the report counts " + std::to_string(rep.stages.back().metrics.file_bytes) + " bytes for " +
                          a.output + ", written " + std::to_string(written.totalBytes()));
  }
  if (!a.report.empty()) staged.stage(a.report, dumpJson(rep.toJson()) + "\n");
  if (!a.report_md.empty()) staged.stage(a.report_md, rep.toMarkdown());
  if (a.json) std::cout << dumpJson(rep.toJson()) << "\n";
  else std::cout << rep.toText(a.time_passes);
  if (!a.json && hooks.print_extra) hooks.print_extra(rep);
  flushStdoutOrFail();  // results that cannot be printed fail the run before its files go in place
  staged.commit();
  if (!ok) {
    // Which gates, with their figures, on the error line itself: a CI log often shows stderr alone.
    std::string failed;
    for (const auto& g : rep.gates) {
      if (g.passed) continue;
      failed += (failed.empty() ? "" : ", ") + g.gate.name + " " +
                (g.no_value.empty() ? formatFigure(g.value, 4, false) : g.no_value) + " (limit " +
                formatFigure(g.gate.limit, 4, false) + ")";
    }
    std::error_code ec;
    const std::string older = !a.keep_failed && fs::exists(a.output, ec)
                                  ? " ('" + printable(a.output) + "' is an older file, not this run's output)"
                                  : "";
    std::fprintf(stderr, "lwc: error: a quality gate failed: %s%s%s\n", failed.c_str(),
                 a.keep_failed ? " (output written because of --keep-failed)"
                               : "; the output model was not written (--keep-failed writes it anyway; or relax the gate)",
                 older.c_str());
    return 3;
  }
  return 0;
}

namespace {
// Calibration data that no pass reads was accepted without a word (lwc prune says so itself).
void warnUnusedCalibration(const Pipeline& p, const RunArgs& a) {
  if (a.calib.empty() && !p.calib) return;
  for (const auto& st : p.steps)
    if (st.pass->usesCalibration(st.pass->options())) return;
  spdlog::warn("{}: no pass of this pipeline reads calibration data, so it is not used (passes read it to recover "
               "accuracy with recover bias or lsq, to quantize, and for prune_channels' macs_reduction)",
               a.calib.empty() ? "data.calib" : "--calib");
}
}  // namespace

void addRunCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto a = std::make_shared<RunArgs>();
  auto* cmd = app.add_subcommand("run", "Run a pipeline of passes (JSON file or --passes) on a model, report and gate");
  cmd->add_option("args", a->positional, "PIPELINE.json MODEL.onnx, or MODEL.onnx with --passes")->required()->expected(1, 2);
  cmd->add_option("--passes", a->passes, "Passes as text instead of a JSON file: \"fuse_batchnorm,prune_magnitude{sparsity=0.5}\"");
  addRunOptions(cmd, *a);
  // Only lwc run has gates (from a pipeline file); the other commands' pipelines have none.
  cmd->add_flag("--keep-failed", a->keep_failed, "Write the output model even when a gate fails");
  cmd->callback([&action, a, cmd] {
    const bool passes_given = cmd->count("--passes") > 0;  // --passes "" too: it said to give a pipeline file
    action = [a, passes_given] {
      const auto& pos = a->positional;
      if (passes_given) {
        if (pos.size() != 1) fail("run: with --passes give only the model: lwc run --passes \"...\" MODEL -o OUT");
        Pipeline p = Pipeline::fromText(a->passes, passes::builtinPasses());
        warnUnusedCalibration(p, *a);
        return runPipelineCommand(std::move(p), pos[0], *a);
      }
      if (pos.size() != 2) fail("run: give the pipeline and the model: lwc run PIPELINE.json MODEL -o OUT (or use --passes)");
      auto ext = [](const std::string& f) { return fs::path(f).extension().string(); };
      if (ext(pos[0]) == ".onnx" && ext(pos[1]) == ".json")
        fail("run: the pipeline comes first: lwc run ", pos[1], " ", pos[0], " -o OUT");
      a->pipeline_file = pos[0];
      Pipeline p = Pipeline::load(pos[0], passes::builtinPasses());
      warnUnusedCalibration(p, *a);
      return runPipelineCommand(std::move(p), pos[1], *a);
    };
  });
}

void addFuseCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto a = std::make_shared<RunArgs>();
  auto* cmd = app.add_subcommand("fuse", "Standard cleanup: fold BatchNorm, constants, identities, pads and biases (configs/cleanup.json)");
  cmd->add_option("model", a->positional, "ONNX model file")->required()->expected(1);
  addRunOptions(cmd, *a, false);
  cmd->callback([&action, a] {
    action = [a] {
      return runPipelineCommand(cleanupPipeline(), a->positional.at(0), *a);
    };
  });
}

namespace {
Pipeline singlePass(const std::string& pass, const nlohmann::json& options, const std::string& origin,
                    OptionNames names = {}) {
  Pipeline p;
  p.name = pass;
  p.origin = origin;
  PipelineStep st;
  st.where = pass;
  st.pass = passes::builtinPasses().create(pass, st.where);
  st.pass->configure(options, st.where, std::move(names));
  p.steps.push_back(std::move(st));
  return p;
}
}  // namespace

void addEncodeCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto a = std::make_shared<RunArgs>();
  auto min_elements = std::make_shared<int64_t>(1024);
  auto max_symbols = std::make_shared<int64_t>(65536);
  auto* cmd = app.add_subcommand("encode", "Store weights as Huffman codes (huffman_encode; lossless; `lwc decode` undoes it)");
  cmd->add_option("model", a->positional, "ONNX model file")->required()->expected(1);
  addRunOptions(cmd, *a, false);
  cmd->add_option("--min-elements", *min_elements, "Leave tensors with fewer elements as they are")->check(CLI::PositiveNumber);
  cmd->add_option("--max-symbols", *max_symbols, "Leave tensors with more distinct values as they are")
      ->check(CLI::Range(int64_t{1}, int64_t{65536}));
  cmd->callback([&action, a, min_elements, max_symbols] {
    action = [a, min_elements, max_symbols] {
      return runPipelineCommand(
          singlePass("huffman_encode", {{"min_elements", *min_elements}, {"max_symbols", *max_symbols}}, "lwc encode"),
          a->positional.at(0), *a);
    };
  });
}

void addDecodeCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto a = std::make_shared<RunArgs>();
  auto* cmd = app.add_subcommand("decode", "Turn Huffman-coded weights back into plain ONNX initializers (huffman_decode)");
  cmd->add_option("model", a->positional, "ONNX model file with ai.lwc.HuffmanDecode nodes")->required()->expected(1);
  addRunOptions(cmd, *a, false);
  cmd->callback([&action, a] {
    action = [a] { return runPipelineCommand(singlePass("huffman_decode", nlohmann::json::object(), "lwc decode"), a->positional.at(0), *a); };
  });
}

void addFloat16Command(CLI::App& app, Action& action, const GlobalOptions&) {
  auto a = std::make_shared<RunArgs>();
  auto min_elements = std::make_shared<int64_t>(16);
  auto exclude = std::make_shared<std::vector<std::string>>();
  auto* cmd = app.add_subcommand(
      "float16", "Store float32 weights as float16 read through a Cast (float16_weights; half the bytes, float32 compute)");
  cmd->add_option("model", a->positional, "ONNX model file")->required()->expected(1);
  addRunOptions(cmd, *a, false);
  cmd->add_option("--min-elements", *min_elements, "Leave tensors with fewer elements as they are")->check(CLI::PositiveNumber);
  cmd->add_option("--exclude", *exclude, "Initializers to keep in float32 (comma-separated)")->delimiter(',');
  cmd->callback([&action, a, min_elements, exclude] {
    action = [a, min_elements, exclude] {
      return runPipelineCommand(singlePass("float16_weights", {{"min_elements", *min_elements}, {"exclude", *exclude}}, "lwc float16",
                                           {{"min_elements", "--min-elements"}, {"exclude", "--exclude"}}),
                                a->positional.at(0), *a);
    };
  });
}

}  // namespace lwc::app
