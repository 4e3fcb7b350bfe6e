// Shared by the subcommands that run pipelines (run, fuse, quantize, calibrate).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "lwc/engine.h"
#include "lwc/model_io.h"
#include "lwc/pipeline.h"

namespace lwc::app {

struct RunArgs {
  std::vector<std::string> positional;
  std::string passes;
  std::string output;
  std::string report, report_md;
  std::string eval, calib, preprocess;
  int64_t eval_limit = -1, calib_limit = -1;
  int64_t eval_batch = 0;  ///< 0: the pipeline's data.eval.batch, else 100 lowered for large activations
  bool print_after_all = false, time_passes = false, json = false, keep_failed = false, external_data = false;
  int threads = 0;
  /// Set when the command writes --save-calib (quantize): names that output in messages.
  std::string extra_output;
  /// The pipeline JSON file the run reads (lwc run), so that no output overwrites it.
  std::string pipeline_file;
};

/// -o, --external-data, --report, --report-md, --eval, --calib, --preprocess, limits, --print-after-all, --time-passes,
/// --json, --keep-failed, --threads.
/// `calibration`: false for commands whose passes never read calibration data (fuse, encode, decode).
void addRunOptions(CLI::App* cmd, RunArgs& a, bool calibration = true);

struct RunHooks {
  std::function<void(const Pass&, const Model& before, const Model& after, StageRecord& rec)> on_stage;
  /// Prints command-specific sections after the report table (not with --json).
  std::function<void(const PipelineReport&)> print_extra;
};

/// Checks paths, loads the model, runs the pipeline, checks and writes the output and reports.
/// Returns the exit code (0, or 3 when a gate failed).
int runPipelineCommand(Pipeline p, const std::string& model_path, const RunArgs& a, const RunHooks& hooks = {});

/// Adds the files a data source (`origin`: "--eval", "data.calib") reads to `inputs` (for checkOutputPaths): its path (a file or a
/// folder), its labels and preprocessing files, and for a file those the loaders find beside it
/// (preprocess.json, labels.npy/.txt/.csv, an IDX images file's labels twin).
void addDataInputs(std::vector<NamedPath>& inputs, const std::string& origin, const std::filesystem::path& path,
                   const std::filesystem::path& labels = {}, const std::filesystem::path& preprocess = {});
/// checkOutputPaths(outputs, inputs), then loadPipelineInput, then checkOutputPaths again with the
/// model's external data files among the inputs: every output checked before any work.
Model loadPipelineInputFor(const std::string& model_path, const std::vector<NamedPath>& outputs,
                           std::vector<NamedPath> inputs);

/// Median latencies (ms) of `a` and `b` in the lwc engine on deterministic inputs of their shape at
/// `batch`: 3 warm-up runs each, then the two take turns in blocks of 0.25 s for about 3 s (at
/// least 5 and at most 2000 runs each), so that both see the same load on a shared machine.
/// Measured one after the other (1.5 s each), a load that came or went between them skewed the
/// ratio (a quantize report on a busy 2-core machine said 17x for resnet_fmnist). Needs
/// benchShapeProblem empty for both.
std::pair<double, double> pairedMedianLatencyMs(const Model& a, const Model& b, int64_t batch, int threads,
                                                const Shape* sample = nullptr);
/// Why random inputs of `m`'s declared shape cannot be made: a real input with no shape, or with
/// an unknown dimension other than the first (a fully convolutional export with dynamic height and
/// width, say) that `sample` (one data sample's shape, without the batch) does not fill. Empty when
/// they can.
std::string benchShapeProblem(const Model& m, const Shape* sample = nullptr);
/// Inputs for timing `m`: every real input at its declared shape with `batch` for an unknown first
/// dimension and `sample`'s dimensions for unknown others (needs benchShapeProblem(m, sample)
/// empty); floats uniform in [-1, 1), 8-bit integers over their range, other types zero (valid
/// indices and token ids).
engine::TensorMap randomFeeds(const Model& m, int64_t batch, std::mt19937& rng, const Shape* sample = nullptr);
/// One random input of randomFeeds: floats (float32, float16, float64) uniform in [-1, 1), 8-bit
/// integers over their range, other types zero.
Tensor randomTensor(DType dtype, const Shape& shape, std::mt19937& rng);
/// How a report can time `m` with random inputs. When the model input leaves dimensions open,
/// `sample` gets the shape of the first sample (without the batch) of the command's --eval data,
/// else its --calib data. Returns false when `m` cannot be timed (no data, or it cannot be read:
/// the run reports that itself). Either way the note for the report goes to `notes`.
bool prepareTiming(const Model& m, const RunArgs& a, std::optional<Shape>& sample, std::vector<std::string>& notes);
/// The report note when ONNX Runtime's timing is skipped because prepareTiming needed `sample`.
inline constexpr const char* kOrtOpenShapeNote =
    "ONNX Runtime latency not measured: its timing tool makes inputs of the declared shape, and this model's leaves "
    "dimensions open";
/// The batch to time a model at: its input's batch size when the model fixes it (exported with
/// batch 1, say), else `requested`.
int64_t benchBatchFor(const Model& m, int64_t requested);
/// The note a command adds when it timed at `used` (benchBatchFor) instead of the --bench-batch
/// asked for; empty when they are the same.
std::string fixedBatchNote(int64_t used, int64_t requested);
/// Multiply-adds one timing run of a report may cost when --bench-batch is left at its default:
/// about 2 s on 2 cores (torchvision resnet50 at batch 32 is 131 G). A report's latency takes at
/// least 16 runs, 8 of each model: vit_h_14 (167 G at batch 1) at the default batch 32 was still
/// timing after 8 minutes (killed).
inline constexpr double kBenchBudgetMacs = 256e9;
/// The batch a report times `m` at: benchBatchFor(m, requested), then, for the default batch
/// (`given` false), halved while one run costs more than kBenchBudgetMacs multiply-adds, down to
/// 1. `note` gets the reason when the batch is not `requested` (empty otherwise). The environment
/// variable LWC_BENCH_BUDGET_MACS replaces the budget (CLI tests try it on small models).
int64_t reportBenchBatch(const Model& m, int64_t requested, bool given, std::string& note);

/// The standard cleanup pipeline (configs/cleanup.json, compiled in).
Pipeline cleanupPipeline();

}  // namespace lwc::app
