// Pipelines: a list of passes with options, the data they and the evaluation use, and quality gates;
// read from JSON (configs/pipeline.schema.json documents the format) or from the text form
// "fuse_batchnorm,prune_magnitude{sparsity=0.5,scope=global}". Running one produces a report a CI
// job can gate on: metrics after every pass, deltas against the input model, gate verdicts.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lwc/analysis.h"
#include "lwc/model_io.h"
#include "lwc/pass.h"

namespace lwc {

/// A quality gate: the final model must satisfy `value <op> limit`.
struct Gate {
  std::string name;  ///< one of gateNames()
  double limit = 0;
};

/// The gates a pipeline may set, with their meaning, for validation and `lwc passes`.
struct GateInfo {
  std::string name;
  std::string help;
  bool needs_eval = false;    ///< needs eval data
  bool needs_labels = false;  ///< needs eval data with labels
  double min = -1e300, max = 1e300;  ///< the limits that make sense (percent in [0, 100], ratios >= 0)
};
const std::vector<GateInfo>& gateInfos();

struct PipelineStep {
  std::string where;            ///< JSON path, "passes[2]"
  std::unique_ptr<Pass> pass;   ///< configured
};

struct Pipeline {
  std::string name;
  std::string description;
  std::string origin;  ///< the file, or "--passes", for messages
  std::optional<DataSpec> calib;
  std::optional<DataSpec> eval;
  bool eval_every_pass = true;  ///< evaluate after every pass (else only the input and the final model)
  std::vector<PipelineStep> steps;
  std::vector<Gate> gates;

  /// Parses and validates a pipeline object. Relative data paths resolve against `base_dir`.
  /// Unknown keys, unknown passes, bad options and bad gates -> lwc::Error naming the JSON path.
  static Pipeline fromJson(const nlohmann::json& j, const std::string& origin,
                           const std::filesystem::path& base_dir, const PassRegistry& registry);
  /// Reads a pipeline JSON file; errors name the file.
  static Pipeline load(const std::filesystem::path& file, const PassRegistry& registry);
  /// The text form: comma-separated pass names, each optionally followed by {key=value,...}; values
  /// are JSON literals (numbers, true/false, [lists]) or bare strings.
  static Pipeline fromText(const std::string& text, const PassRegistry& registry);

  /// Checks what can be checked without a model: data paths exist, gates have the data they need,
  /// passes that need calibration data have it. Throws lwc::Error naming the key.
  void check() const;
};

/// Model size and cost after one stage.
struct StageMetrics {
  int64_t nodes = 0;
  int64_t params = 0;
  int64_t macs = 0;
  bool macs_complete = true;
  int64_t weight_bytes = 0;
  int64_t file_bytes = 0;  ///< bytes on disk of the file(s) lwc writes for this model (RunOptions::output, save)
  int64_t weight_elements = 0;
  int64_t weight_zeros = 0;
  // Evaluation (when eval data is given and this stage was evaluated).
  bool evaluated = false;
  int64_t samples = 0;
  std::optional<double> top1, top5;  ///< fractions, when the data has labels
  double output_sqnr_db = 0;         ///< first output against the input model's, +inf when identical
  double top1_agreement = 1;         ///< fraction of samples whose argmax matches the input model's
  /// With labels: samples only the input model / only this one gets right.
  int64_t only_input_right = 0, only_this_right = 0;
  /// The exact McNemar p-value on those two counts: is the top-1 change more than chance?
  double mcnemarP() const;
  double eval_seconds = 0;
};

struct StageRecord {
  std::string pass;           ///< "input" for the input model
  nlohmann::json options;     ///< options in effect
  PassResult result;
  double seconds = 0;         ///< time in the pass
  StageMetrics metrics;
  nlohmann::json details;     ///< pass-specific report data (e.g. per-layer errors); null if none
};

struct GateResult {
  Gate gate;
  double value = 0;
  bool passed = false;
  /// Set when the gate has no value to compare (value is NaN): "unknown" or "not applicable".
  std::string no_value;
  /// Why: why there is no value, or why the value is NaN ("the outputs hold NaN"); empty
  /// otherwise. Every report format shows it.
  std::string reason;
};

struct PipelineReport {
  std::string pipeline;  ///< name or origin
  std::string model;
  std::string output;
  /// The external data file written beside `output` (SaveOptions); empty when the model is one file.
  std::string output_data;
  /// False when a gate failed and the model was not written (the report then says "output": null
  /// and "output_not_written": the path, so that no one takes an older file there for this run's).
  bool output_written = true;
  std::string eval_data;  ///< dataset description, empty without eval data
  /// Samples per batch of the evaluation: outputs of a dynamically quantized model depend on it
  /// (its activations' scales are taken over the whole batch), so the report records it.
  int64_t eval_batch = 0;
  std::string calib_data;  ///< the same for the calibration data
  /// The preprocessing applied to image data (Preprocess::toJson plus "from": the file or option it
  /// came from, or "default preprocessing"); null when there is none or the data are not images.
  nlohmann::json eval_preprocessing, calib_preprocessing;
  int64_t input_file_bytes = -1;  ///< size of the input file(s) on disk, external data included
  std::vector<StageRecord> stages;  ///< stages[0] is the input model
  std::vector<GateResult> gates;
  double total_seconds = 0;

  bool gatesPassed() const;
  /// Stable JSON (schema "lwc.report", schema_version kReportSchemaVersion).
  nlohmann::json toJson() const;
  /// Markdown for a CI job summary.
  std::string toMarkdown() const;
  /// The table printed on stdout.
  std::string toText(bool time_passes) const;
};
inline constexpr int kReportSchemaVersion = 1;

struct RunOptions {
  int threads = 0;
  /// Called after every pass with the pass name and the model (for --print-after-all).
  std::function<void(const std::string& pass, const Model& m)> after_pass;
  /// Called after every successful pass with the models before and after it; may fill rec.details.
  std::function<void(const Pass& pass, const Model& before, const Model& after, StageRecord& rec)> on_stage;
  /// Progress messages (one line each) for the log: "running <pass>", "evaluating ...".
  std::function<void(const std::string& line)> log;
  /// Progress within a step, many times per step ("calibrating: 3400/10000 samples"): for a status
  /// line that each call replaces, never for the log. May be empty.
  std::function<void(const std::string& line)> status;
  /// Passes' notes ("<pass>: <note>": what was left alone and why); `log` when not set.
  std::function<void(const std::string& line)> note;
  /// A pass's notes that differ only in the names they quote go to `note` as one line (groupNotes)
  /// when there are at least this many of them; 0: every note on a line of its own. The report keeps
  /// every note either way.
  size_t note_group = 3;
  /// Warnings about the inputs that do not stop the run (image data read with the default
  /// preprocessing); `note` when not set.
  std::function<void(const std::string& line)> warn;
  /// Counts the MACs of the input model and of the final one where the plain analysis cannot count
  /// them all (shapes computed at run time); their MACs and completeness are taken from
  /// it (the summary line, the gates, the report). Unset: the plain count, marked incomplete.
  std::function<ModelStats(const Model& m)> full_count;
  /// Passes stage the files they write here (PassContext::outputs); null: they write them.
  OutputSet* outputs = nullptr;
  /// Where and how the final model will be written: each stage's bytes are those of the files
  /// saveModel(m, output, save) writes (external data included; "model.onnx" when empty).
  std::filesystem::path output;
  SaveOptions save;
};

/// Runs the pipeline on `m` (rewritten in place). Before any pass runs, the data sources are opened
/// and checked against the model and the gates, and `m` is stamped (stampProvenance). A pass that throws leaves `m` as it was before that
/// pass and the error propagates. Gates are evaluated but do not throw: see PipelineReport::gates.
PipelineReport runPipeline(const Pipeline& p, Model& m, const RunOptions& opts = {});

/// The notes of one pass for the log: notes that are the same once each quoted name ('...') is set
/// aside (a transformer's 36 "Add '…' after MatMul '…': left alone: …") become one line, the first of
/// them with "(and N more like it; lwc -v lists each)", where there are at least `at_least` of them
/// (0: none grouped). Lines keep the order of each group's first note.
std::vector<std::string> groupNotes(const std::vector<std::string>& notes, size_t at_least);

/// Who wrote the file and how: producer "lwc" and its version, metadata `lwc.pipeline` (the
/// pipeline's name) and `lwc.source_producer` (the input's producer, when it was not lwc).
/// runPipeline stamps the model before its first pass.
inline constexpr const char* kProducerName = "lwc";
inline constexpr const char* kProducerVersion = "0.1.0";
void stampProvenance(Model& m, const std::string& pipeline);

/// Checks a model before it is written: ONNX's checker (full check, strict shape inference) and
/// lwc's own graph validation. A failure is lwc's bug: throws lwc::InternalError naming the model
/// and ONNX's reason.
void checkModelForOutput(const Model& m);

/// The same ONNX checks on a model as it was read, before any pass runs: an input that already
/// fails them (an attribute its op does not have, an op its opset does not define, inconsistent
/// types or shapes) is the user's to repair, so this throws lwc::Error naming the file and ONNX's
/// reason (which names the node) instead of letting the run end in checkModelForOutput's
/// internal error.
void checkModelForInput(const Model& m);

/// Graph outputs that declare no tensor type or no shape. ONNX's checker requires both, ONNX
/// Runtime only the type, and hand-built graphs often leave the shape out
/// (`make_tensor_value_info(name, FLOAT, None)`).
std::vector<std::string> undeclaredOutputs(const Model& m);

/// Gives each undeclared graph output its type and shape from shape inference (dimensions may be
/// symbolic or unnamed). Returns one line per output it completed, for the user; an output whose
/// type inference cannot find, or whose declared type disagrees with it, is left for the checks
/// to name.
std::vector<std::string> completeOutputDeclarations(Model& m);

/// What checkModelForInput would reject, without throwing: empty when the model passes, else
/// "fails the ONNX checker: ...", "fails ONNX shape inference: ..." or "has shapes that disagree:
/// ..." (one line), judged after completeOutputDeclarations (which the commands run first).
/// `lwc info` shows it. The ONNX checks see Constant nodes holding tensors as initializers, as the engine and fold_constants read them (early PyTorch exports hold int64
/// Constants that ONNX's Constant-1 schema does not allow; lwc's output has initializers there);
/// `as_is` checks the model exactly as read.
std::string inputModelProblem(const Model& m, bool as_is = false);

}  // namespace lwc
