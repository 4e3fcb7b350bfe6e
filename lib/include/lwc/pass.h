// Passes: the unit of every model transformation lwc performs.
//
// A pass has a snake_case name, declares its options (name, type, default, one-line help), validates
// a JSON object of option values against them, and rewrites a Model, returning what changed and
// statistics. Passes match first and rewrite second: every new tensor is computed before the graph is
// touched, and the pipeline runner restores the model if a pass throws, so a failing pass leaves the
// model unchanged. Passes never write into an existing tensor's buffer (tensors share buffers when a
// Model is copied); they build new tensors and replace initializers.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "lwc/dataset.h"
#include "lwc/graph.h"

namespace lwc {

enum class OptionType { Bool, Int, Float, String, StringList };
std::string_view optionTypeName(OptionType t);

/// One option a pass accepts. `lwc passes` prints these, so the documentation cannot drift.
struct OptionSpec {
  std::string name;
  OptionType type = OptionType::Bool;
  nlohmann::json default_value;      ///< null: no default (then the option is optional and unset)
  std::string help;
  std::vector<std::string> choices;  ///< for String: the allowed values (empty = any)
  double min = -1e300, max = 1e300;  ///< for Int/Float: the range, inclusive unless max_exclusive
  /// For Float: the value must be below `max` ([min, max)), as a fraction of weights to remove: a
  /// sparsity of 0.9999995 is valid, 1 is not.
  bool max_exclusive = false;
  /// For String/StringList: file paths. In a pipeline file, relative ones resolve against the
  /// file's folder, as its data paths do.
  bool is_path = false;
  /// For String: a regular expression (JSON Schema "pattern") the value must match, for editors;
  /// lwc's own check may be stricter (N < M in N:M).
  std::string pattern;
};

/// How messages name a pass's options when a command builds the pass from its own flags: option key
/// -> flag ("exclude" -> "--exclude"). Keys not in the map are named by their JSON path.
using OptionNames = std::map<std::string, std::string>;

/// Validated option values of one pass instance: every declared option, defaults filled in.
class PassOptions {
 public:
  PassOptions() = default;
  /// Checks `given` (a JSON object) against `specs`. Unknown key, wrong type, value out of range or
  /// not among the choices -> lwc::Error naming the key (key()) and the valid keys.
  PassOptions(const std::vector<OptionSpec>& specs, const nlohmann::json& given, const std::string& where,
              OptionNames names = {});
  bool has(const std::string& name) const;
  /// True when the options given set `name` (not only its default): cross-option checks refuse an
  /// option that another one makes inert.
  bool given(const std::string& name) const;
  bool getBool(const std::string& name) const;
  int64_t getInt(const std::string& name) const;
  double getFloat(const std::string& name) const;
  std::string getString(const std::string& name) const;
  std::vector<std::string> getStrings(const std::string& name) const;
  /// The values in effect (defaults included), for reports.
  const nlohmann::json& values() const { return values_; }
  const std::string& where() const { return where_; }
  /// How a message names option `name`: its flag when the pass was built from a command's flags
  /// ("--exclude"), else its JSON path ("passes[2].options.exclude").
  std::string key(const std::string& name) const;
  /// How the rest of a message refers to another option: its flag, or its bare name ("recover").
  std::string ref(const std::string& name) const;

 private:
  const nlohmann::json& get(const std::string& name) const;
  nlohmann::json values_ = nlohmann::json::object();
  std::string where_;
  OptionNames names_;
  std::vector<std::string> given_;
};

/// What a pass did.
struct PassResult {
  bool changed = false;
  /// Counters, e.g. {"folded": 52, "left_alone": 1}. Keys are snake_case.
  std::map<std::string, int64_t> stats;
  /// Human-readable remarks: what was left alone and why ("BatchNormalization 'bn3': ...").
  std::vector<std::string> notes;
};

/// A data source from the pipeline (or the command line): where, and how to read it.
struct DataSpec {
  DataOptions options;  ///< path, labels, preprocess, limit (sample_shape etc. set per model)
  int64_t batch = 100;
  /// The batch was given (a pipeline's "batch" key). Evaluation lowers one that was not for
  /// models with large activations (kEvalActivationBytes, lwc/analysis.h).
  bool batch_given = false;
  std::string origin;   ///< "pipeline.json: data.eval" or "--eval", for messages
};

/// A layer's weights and bias as the first lsq recovery of a pipeline found them (PassContext).
struct RecoveryAnchor {
  Tensor weights;
  std::vector<float> bias;  ///< one per output channel (zeros when the layer had none)
};

class OutputSet;

/// What passes may use besides the model: data, threads, logging.
struct PassContext {
  const DataSpec* calib = nullptr;  ///< calibration data, when the pipeline has it
  /// The model as it entered the pipeline: the target that recovery steps (lsq) reconstruct
  /// towards, so errors do not accumulate over iterative schedules. May be null (then a pass uses
  /// the model it received).
  const Model* reference = nullptr;
  /// Output tensor name -> the layer's weights before the pipeline's first lsq re-fit of it. Later
  /// re-fits pull their ridge towards these, not towards the previous step's solution: a ridge
  /// towards the last solution, repeated, drifts to the unregularised least-squares fit, so an
  /// n-step schedule would be regularised less than one step. May be null (then the ridge pulls
  /// towards the weights the pass received).
  std::map<std::string, RecoveryAnchor>* recovery_anchors = nullptr;
  int threads = 0;
  /// Progress of a long pass, one line each (the pipeline's log: `lwc -v` prints it); may be empty.
  std::function<void(const std::string&)> progress;
  /// Progress within a pass, many times per pass (RunOptions::status); may be empty. May be called
  /// from a worker thread (never two at once); exceptions from it are ignored there.
  std::function<void(const std::string&)> status;
  /// Where a pass stages the files it writes (quantize_static's save_calib), committed with the
  /// command's other outputs once the run succeeds; null: the pass writes them itself.
  OutputSet* outputs = nullptr;
};

/// ctx.calib's data, fitted to model m (fitToModel), at most `max_samples` samples (the pass's
/// calib_samples option) when that is > 0 and below the data's own limit. Needs ctx.calib.
std::unique_ptr<Dataset> openCalibration(const PassContext& ctx, const Model& m, int64_t max_samples = 0);
/// How messages name the calib_samples pass option (capSamples).
inline constexpr const char* kCalibSamplesHint = "the pass option calib_samples, --calib-samples of lwc quantize";

class Pass {
 public:
  virtual ~Pass() = default;
  /// snake_case name used in JSON, on the command line and in reports.
  virtual std::string name() const = 0;
  /// One line for `lwc passes`.
  virtual std::string help() const = 0;
  /// Options the pass accepts (may be empty).
  virtual std::vector<OptionSpec> optionSpecs() const { return {}; }
  /// True when the pass needs calibration data (the pipeline checks before any work starts).
  virtual bool needsCalibration(const PassOptions&) const { return false; }
  /// True when the pass reads calibration data it is given (needed or not): `lwc run` warns when
  /// no pass of a pipeline with calibration data reads it.
  virtual bool usesCalibration(const PassOptions& o) const { return needsCalibration(o); }
  /// Validates and stores options; `where` is the JSON path for messages, e.g. "passes[2].options";
  /// `names`, the flags a command built them from, name the options in messages instead.
  void configure(const nlohmann::json& options, const std::string& where, OptionNames names = {});
  const PassOptions& options() const { return options_; }
  /// Rewrites the model. Throws lwc::Error for problems the user caused.
  virtual PassResult run(Model& m, PassContext& ctx) = 0;

 protected:
  /// Cross-option checks after the per-option ones (e.g. N < M); throw lwc::Error naming `where`.
  virtual void validate(const PassOptions&) const {}
  PassOptions options_;
};

/// Explicit registry of passes by name (no static-initialiser registration).
class PassRegistry {
 public:
  using Factory = std::function<std::unique_ptr<Pass>()>;
  void add(Factory f);
  bool contains(const std::string& name) const { return factories_.count(name) != 0; }
  /// Throws lwc::Error listing the known passes when `name` is unknown; `where` names the JSON path.
  std::unique_ptr<Pass> create(const std::string& name, const std::string& where = "") const;
  /// One instance of every pass, in name order (for listings).
  std::vector<std::unique_ptr<Pass>> all() const;
  std::vector<std::string> names() const;

 private:
  std::map<std::string, Factory> factories_;
};

}  // namespace lwc
