#include "lwc/pipeline.h"

#include "lwc/weight_coding.h"

#include <onnx/checker.h>
#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>

#include <algorithm>
#include <optional>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "lwc/analysis.h"
#include "lwc/engine.h"
#include "lwc/json_text.h"
#include "lwc/metrics.h"
#include "lwc/model_io.h"
#include "lwc/shape_inference.h"

namespace lwc {

namespace fs = std::filesystem;
using nlohmann::json;

const std::vector<GateInfo>& gateInfos() {
  static const std::vector<GateInfo> k = {
      {"max_top1_drop", "top-1 may drop at most this many percentage points (e.g. 0.5)", true, true, 0, 100},
      {"max_top5_drop", "top-5 may drop at most this many percentage points", true, true, 0, 100},
      {"min_top1", "final top-1 in percent must be at least this", true, true, 0, 100},
      {"min_top1_agreement", "percent of samples whose top-1 class matches the input model's, at least", true, false, 0, 100},
      {"min_output_sqnr_db", "SQNR of the first output against the input model's, in dB, at least", true, false},
      {"min_size_ratio", "input file bytes / output file bytes, at least (e.g. 3.5 for INT8)", false, false, 0},
      {"max_params_ratio", "output params / input params, at most", false, false, 0},
      {"max_macs_ratio", "output MACs / input MACs, at most", false, false, 0},
  };
  return k;
}

namespace {

const GateInfo* findGate(const std::string& name) {
  for (const auto& g : gateInfos())
    if (g.name == name) return &g;
  return nullptr;
}

std::string keyList(const std::vector<std::string>& keys) {
  std::string s;
  for (const auto& k : keys) s += (s.empty() ? "" : ", ") + k;
  return s;
}

void checkKeys(const json& j, const std::string& where, const std::vector<std::string>& valid) {
  if (!j.is_object()) fail(where.empty() ? "the top level" : where, ": expected a JSON object, got ", briefJson(j));
  for (const auto& [k, v] : j.items())
    if (std::find(valid.begin(), valid.end(), k) == valid.end())
      fail(where.empty() ? "" : where + ".", k, ": unknown key", didYouMean(k, valid), "; valid keys: ", keyList(valid));
}

std::string join(const std::string& where, const std::string& key) { return where.empty() ? key : where + "." + key; }

DataSpec parseData(const json& j, const std::string& where, const fs::path& base_dir) {
  if (j.is_string()) return parseData(json{{"path", j}}, where, base_dir);
  if (!j.is_object()) fail(where, ": expected a path or a {\"path\": ...} object, got ", briefJson(j));
  checkKeys(j, where, {"path", "labels", "preprocess", "limit", "batch"});
  DataSpec d;
  d.origin = where;
  if (!j.contains("path") || !j["path"].is_string())
    fail(join(where, "path"), ": required string (a data folder or file)");
  // An empty string resolved to the pipeline's own folder: "labels": "" was ignored and the labels
  // beside the data were used.
  auto resolve = [&](const std::string& key) {
    const std::string p = j[key].get<std::string>();
    if (p.empty()) fail(join(where, key), ": an empty path; give the file or folder, or leave the key out");
    return fs::path(p).is_absolute() ? fs::path(p) : base_dir / p;
  };
  d.options.path = resolve("path");
  if (j.contains("labels")) {
    if (!j["labels"].is_string()) fail(join(where, "labels"), ": expected a string (labels file)");
    d.options.labels = resolve("labels");
  }
  if (j.contains("preprocess")) {
    const json& p = j["preprocess"];
    if (p.is_string()) d.options.preprocess = Preprocess::load(resolve("preprocess"));
    else d.options.preprocess = Preprocess::fromJson(p, join(where, "preprocess"));
  }
  if (j.contains("limit")) {
    if (!j["limit"].is_number_integer() || j["limit"].get<int64_t>() < 0)
      fail(join(where, "limit"), ": expected a non-negative integer (0 = all samples)");
    d.options.limit = j["limit"].get<int64_t>();
  }
  d.options.limit_hint = join(where, "limit");
  if (j.contains("batch")) {
    if (!j["batch"].is_number_integer() || j["batch"].get<int64_t>() < 1)
      fail(join(where, "batch"), ": expected a positive integer");
    d.batch = j["batch"].get<int64_t>();
    d.batch_given = true;
  }
  return d;
}

PipelineStep makeStep(const std::string& name, const json& options, const std::string& where,
                      const PassRegistry& registry, const fs::path& base_dir = {}) {
  PipelineStep s;
  s.where = where;
  s.pass = registry.create(name, where);
  // File options of a pipeline file resolve against its folder, as its data paths do (they
  // resolved against the current folder: the same pipeline wrote its statistics elsewhere
  // depending on where it was run from).
  json resolved = options;
  if (!base_dir.empty() && resolved.is_object())
    for (const auto& spec : s.pass->optionSpecs()) {
      if (!spec.is_path || !resolved.contains(spec.name)) continue;
      auto fix = [&](json& v) {
        if (v.is_string() && !v.get<std::string>().empty() && fs::path(v.get<std::string>()).is_relative())
          v = (base_dir / v.get<std::string>()).string();  // as data paths are joined
      };
      json& v = resolved[spec.name];
      if (v.is_array())
        for (auto& e : v) fix(e);
      else
        fix(v);
    }
  s.pass->configure(resolved, join(where, "options"));
  return s;
}

// Splits at top-level commas (not inside {} or []).
std::vector<std::string> splitTopLevel(const std::string& s, const std::string& origin) {
  std::vector<std::string> parts;
  std::string cur;
  int depth = 0;
  for (char c : s) {
    if (c == '{' || c == '[') ++depth;
    if (c == '}' || c == ']') --depth;
    if (depth < 0) fail(origin, ": unbalanced '", c, "' in \"", s, "\"");
    if (c == ',' && depth == 0) {
      parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (depth != 0) fail(origin, ": unbalanced braces in \"", s, "\"");
  parts.push_back(cur);
  return parts;
}

std::string trim(const std::string& s) {
  const auto a = s.find_first_not_of(" \t\n");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\n") - a + 1);
}

}  // namespace

Pipeline Pipeline::fromJson(const json& j, const std::string& origin, const fs::path& base_dir,
                            const PassRegistry& registry) {
  Pipeline p;
  p.origin = origin;
  try {
    checkKeys(j, "", {"$schema", "schema_version", "name", "description", "data", "passes", "gates", "eval_every_pass"});
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  auto str = [&](const char* key) -> std::string {
    if (!j.contains(key)) return "";
    if (!j[key].is_string()) fail(origin, ": ", key, ": expected a string");
    return j[key].get<std::string>();
  };
  p.name = str("name");
  p.description = str("description");
  str("$schema");  // a string where given, as the schema says
  if (j.contains("schema_version") && j["schema_version"] != 1)
    fail(origin, ": schema_version ", briefJson(j["schema_version"]), " is not supported by this lwc: it must be the number 1",
         j["schema_version"].is_string() ? " (a number, not a string)" : "");
  try {
    if (j.contains("eval_every_pass")) {
      if (!j["eval_every_pass"].is_boolean()) fail("eval_every_pass: expected true or false");
      p.eval_every_pass = j["eval_every_pass"].get<bool>();
    }
    if (j.contains("data")) {
      checkKeys(j["data"], "data", {"calib", "eval"});
      if (j["data"].contains("calib")) p.calib = parseData(j["data"]["calib"], "data.calib", base_dir);
      if (j["data"].contains("eval")) p.eval = parseData(j["data"]["eval"], "data.eval", base_dir);
    }
    if (!j.contains("passes"))
      fail("passes: required: a list of pass names or {\"pass\": name, \"options\": {...}} objects");
    if (!j["passes"].is_array())
      fail("passes: expected a list of pass names or {\"pass\": name, \"options\": {...}} objects, got ",
           briefJson(j["passes"]));
    const json& passes = j["passes"];
    for (size_t i = 0; i < passes.size(); ++i) {
      const std::string where = "passes[" + std::to_string(i) + "]";
      const json& s = passes[i];
      if (s.is_string()) {
        p.steps.push_back(makeStep(s.get<std::string>(), json::object(), where, registry));
        continue;
      }
      if (!s.is_object()) fail(where, ": expected a pass name or a {\"pass\": name, \"options\": {...}} object, got ", briefJson(s));
      checkKeys(s, where, {"pass", "options"});
      if (!s.contains("pass") || !s["pass"].is_string()) fail(where, ".pass: required string (the pass name)");
      p.steps.push_back(makeStep(s["pass"].get<std::string>(), s.value("options", json::object()), where, registry, base_dir));
    }
    if (j.contains("gates")) {
      const json& gates = j["gates"];
      if (!gates.is_object()) fail("gates: expected an object like {\"max_top1_drop\": 0.5}");
      for (const auto& [k, v] : gates.items()) {
        if (!findGate(k)) {
          std::vector<std::string> names;
          for (const auto& g : gateInfos()) names.push_back(g.name);
          fail("gates.", k, ": unknown gate", didYouMean(k, names), "; valid gates: ", keyList(names));
        }
        if (!v.is_number()) fail("gates.", k, ": expected a number, got ", briefJson(v));
        // A limit no run can meet (min_top1 150) or that means nothing (a negative drop or ratio)
        // is a typo: refused before the work, not reported as a failed gate after it.
        const GateInfo& info = *findGate(k);
        const double limit = v.get<double>();
        if (!(limit >= info.min && limit <= info.max))  // 1e301 was "below 0"
          fail("gates.", k, ": ", limit, " is outside [", info.min, ", ", info.max, "]; ", info.help);
        p.gates.push_back(Gate{k, limit});
      }
    }
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what());
  }
  return p;
}

Pipeline Pipeline::load(const fs::path& file, const PassRegistry& registry) {
  const json j = readJsonFile(file, "the pipeline file");
  Pipeline p = fromJson(j, file.string(), file.parent_path(), registry);
  if (p.name.empty()) p.name = file.stem().string();
  return p;
}

namespace {
// A value of the text form: a JSON literal, a bare word (a string), or a list of either in
// brackets, so that include=[Gemm,Conv] is the list of two op types that the README shows (it
// was the one string "[Gemm,Conv]", refused as an unknown node name).
json textValue(const std::string& val, const std::string& where) {
  json v = json::parse(val, nullptr, false);
  if (!v.is_discarded()) return v;
  if (val.size() >= 2 && val.front() == '[' && val.back() == ']') {
    json list = json::array();
    const std::string inner = trim(val.substr(1, val.size() - 2));
    if (!inner.empty())
      for (const auto& e : splitTopLevel(inner, where)) list.push_back(textValue(trim(e), where));
    return list;
  }
  return val;  // a bare word is a string
}
}  // namespace

Pipeline Pipeline::fromText(const std::string& text, const PassRegistry& registry) {
  const std::string origin = "--passes";
  Pipeline p;
  p.origin = origin;
  p.name = text;
  if (trim(text).empty())
    fail(origin, ": no passes given; list them, e.g. --passes \"fuse_batchnorm,prune_magnitude{sparsity=0.5}\" "
         "(lwc passes lists them all)");
  // Option values are read recursively (textValue) and quoted by nlohmann's recursive dump: a list
  // 60 000 levels deep overflowed the stack.
  if (jsonNestingDepth(text) > kMaxJsonDepth)
    fail(origin, ": brackets nested more than ", kMaxJsonDepth, " levels deep; options take values and lists of values");
  const auto items = splitTopLevel(text, origin);
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string item = trim(items[i]);
    // The item names the place; a long one is cut (a 10 kB item made every error 10 kB long).
    const std::string shown = item.size() > 80 ? item.substr(0, 60) + "..." + item.substr(item.size() - 16) : item;
    const std::string where = origin + " item " + std::to_string(i + 1) + " (" + shown + ")";
    if (item.empty()) fail(origin, ": empty pass name in \"", text, "\"");
    const auto brace = item.find('{');
    const std::string name = trim(item.substr(0, brace));
    if (name.empty()) fail(where, ": no pass name before '{'; write it as NAME{key=value,...}, e.g. prune_magnitude{sparsity=0.5}");
    json options = json::object();
    if (brace != std::string::npos) {
      if (item.back() != '}') fail(where, ": options must end with '}'");
      const std::string body = item.substr(brace + 1, item.size() - brace - 2);
      for (const auto& kv : trim(body).empty() ? std::vector<std::string>{} : splitTopLevel(body, where)) {
        // An empty option ({sparsity=0.5,}) is refused as an empty pass name is ("a,,b").
        if (trim(kv).empty()) fail(where, ": empty option in {", body, "}; remove the extra comma");
        const auto eq = kv.find('=');
        if (eq == std::string::npos) fail(where, ": option \"", trim(kv), "\" must be key=value");
        const std::string key = trim(kv.substr(0, eq)), val = trim(kv.substr(eq + 1));
        if (key.empty()) fail(where, ": option \"", trim(kv), "\" has no key; write key=value");
        // As in JSON pipelines, a key given twice is an error, not the last one silently winning.
        if (options.contains(key)) fail(where, ": option \"", key, "\" is given twice; give it once");
        options[key] = textValue(val, where);
      }
    }
    p.steps.push_back(makeStep(name, options, where, registry));
  }
  return p;
}

void Pipeline::check() const {
  for (const auto* d : {&calib, &eval}) {
    if (*d && !fs::exists((*d)->options.path))
      fail(origin, ": ", (*d)->origin, ".path: ", (*d)->options.path.string(), " does not exist");
    // The labels too (named without the pipeline or the key, and only once the data was opened).
    if (*d && !(*d)->options.labels.empty() && !fs::exists((*d)->options.labels))
      fail(origin, ": ", (*d)->origin, ".labels: ", (*d)->options.labels.string(), " does not exist");
  }
  for (const auto& g : gates) {
    const GateInfo* info = findGate(g.name);
    if (info->needs_eval && !eval)
      fail(origin, ": gates.", g.name, " needs evaluation data: add data.eval to the pipeline or pass --eval DIR");
  }
  for (const auto& s : steps)
    if (s.pass->needsCalibration(s.pass->options()) && !calib) {
      // A --passes item's place already holds its origin and pass name ("--passes item 1
      // (quantize_static)"): both were repeated.
      const bool has_origin = s.where.rfind(origin, 0) == 0, has_name = s.where.find("(" + s.pass->name()) != std::string::npos;
      fail(has_origin ? "" : origin + ": ", s.where, has_name ? "" : " (" + s.pass->name() + ")",
           " needs calibration data: add data.calib to the pipeline or pass --calib DIR");
    }
  if (steps.empty())
    fail(origin, ": no passes: list at least one (to evaluate a model without changing it, use lwc eval)");
  // float16_weights hides each weight behind a Cast: a later pass would find no constant weights
  // (prune_magnitude: "no layer to prune") or widen them back to float32 (quantize). Only Huffman
  // coding, which stores the float16 tensors losslessly, may follow it.
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].pass->name() != "float16_weights") continue;
    for (size_t k = i + 1; k < steps.size(); ++k)
      if (steps[k].pass->name() != "huffman_encode") {
        const std::string& w = steps[k].where;
        const bool has_origin = w.rfind(origin, 0) == 0, has_name = w.find("(" + steps[k].pass->name()) != std::string::npos;
        fail(has_origin ? "" : origin + ": ", w, has_name ? "" : " (" + steps[k].pass->name() + ")",
             " comes after float16_weights, which leaves the weights behind Casts that lwc's passes do not change: put "
             "float16_weights last (only huffman_encode may follow it)");
      }
  }
}

// ------------------------------------------------------------------ running

namespace {

using Clock = std::chrono::steady_clock;
double secondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// Whether two graphs compute the same thing: the same nodes (with attributes) and inputs/outputs,
// and bit-identical initializers. (Declarations such as value_info do not count.)
bool sameComputation(const Graph& a, const Graph& b) {
  if (a.nodes.size() != b.nodes.size() || a.initializers.size() != b.initializers.size() ||
      a.inputs.size() != b.inputs.size() || a.outputs.size() != b.outputs.size())
    return false;
  for (size_t i = 0; i < a.inputs.size(); ++i)
    if (a.inputs[i].name != b.inputs[i].name) return false;
  for (size_t i = 0; i < a.outputs.size(); ++i)
    if (a.outputs[i].name != b.outputs[i].name) return false;
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    const Node &x = a.nodes[i], &y = b.nodes[i];
    if (x.op_type != y.op_type || x.domain != y.domain || x.inputs != y.inputs || x.outputs != y.outputs ||
        x.attrs.size() != y.attrs.size())
      return false;
    for (size_t k = 0; k < x.attrs.size(); ++k)
      if (x.attrs[k].SerializeAsString() != y.attrs[k].SerializeAsString()) return false;
  }
  for (const auto& [name, t] : a.initializers.items()) {
    const Tensor* u = b.initializers.find(name);
    if (!u) return false;
    const bool shared = t.raw() == u->raw() && t.dtype() == u->dtype() && t.shape() == u->shape();  // copies share buffers
    if (!shared && !t.bitEqual(*u)) return false;
  }
  return true;
}

// Counts and bytes of a stage. For the input model as read (`input_file_bytes` given), "bytes" is
// its size on disk, external data included, and is also stored there (-1 for a model built in
// memory, whose bytes are then its serialised size); for later stages it is the size of the file
// lwc writes for the model.
StageMetrics sizeMetrics(const Model& m, const RunOptions& opts, int64_t* input_file_bytes = nullptr) {
  StageMetrics s;
  const ModelStats st = analyzeModel(m, AnalyzeOptions{1, /*entropy=*/false});
  s.nodes = static_cast<int64_t>(st.nodes);
  s.params = st.params;
  s.macs = st.macs;
  s.macs_complete = st.macs_complete;
  s.weight_bytes = st.weight_bytes;
  s.weight_elements = st.weight_elements;
  s.weight_zeros = st.weight_zeros;
  if (input_file_bytes) *input_file_bytes = st.file_bytes;
  s.file_bytes = input_file_bytes && st.file_bytes >= 0
                     ? st.file_bytes
                     : savedModelBytes(m, opts.output.empty() ? fs::path("model.onnx") : opts.output, opts.save);
  return s;
}

// The input's and the final model's MACs, where the plain count is incomplete and the caller can
// count them all (RunOptions::full_count).
void fullCount(const RunOptions& opts, const Model& m, StageMetrics& s) {
  if (s.macs_complete || !opts.full_count) return;
  const ModelStats st = opts.full_count(m);
  s.macs = st.macs;
  s.macs_complete = st.macs_complete;
}

// Evaluates models on the eval data and compares their first output with the input model's. The
// input model's outputs are kept in memory when they fit in kMaxCachedBytes, else recomputed.
class Evaluator {
 public:
  /// `run_time_quantization`: a model of the pipeline quantizes activations at run time, so the
  /// batch is not lowered (its outputs depend on it).
  Evaluator(const DataSpec& spec, const Model& input, int threads, bool run_time_quantization)
      : spec_(spec), threads_(threads) {
    DataOptions o = spec.options;
    fitToModel(o, input);
    ds_ = openDataset(o);
    if (ds_->size() == 0) fail(spec.origin, ": ", o.path.string(), ": no samples");
    input_ = &input;
    // Every model of the pipeline is evaluated at the batch the input model allows (the cached
    // outputs and the paired counts go batch by batch).
    if (o.fixed_batch > 0) {
      spec_.batch = o.fixed_batch;  // the data set gives batches of that size
      if (spec.batch_given && spec.batch != o.fixed_batch)
        lowered_ = "the model's input fixes the batch size at " + std::to_string(o.fixed_batch) + "; evaluation batches are " +
                   std::to_string(o.fixed_batch) + " (" + batchKey() + " " + std::to_string(spec.batch) + " ignored)";
    } else if (!spec.batch_given && !run_time_quantization) {
      std::string why;
      spec_.batch = evaluationBatch(activationBytesPerSample(input).peak, spec.batch, &why);
      if (!why.empty()) lowered_ = "evaluating in " + why + " (" + batchKey() + " sets it)";
    }
  }
  const Dataset& dataset() const { return *ds_; }
  int64_t batch() const { return spec_.batch; }
  /// The option or key that sets the batch: --eval-batch or data.eval.batch.
  std::string batchKey() const { return spec_.origin == "--eval" ? std::string("--eval-batch") : spec_.origin + ".batch"; }
  /// Why the batch differs from the default or the one asked for; empty when it does not.
  const std::string& loweredBatch() const { return lowered_; }

  /// `status`, when set, gets "<what>: k/n samples" after each batch.
  void evaluate(const Model& m, StageMetrics& out, bool is_input, const std::string& what,
                const std::function<void(const std::string&)>& status) {
    const auto t0 = Clock::now();
    engine::SessionOptions so;
    so.threads = threads_;
    engine::Session s(m, so);
    std::unique_ptr<engine::Session> ref;
    if (!is_input && !cached_) ref = std::make_unique<engine::Session>(*input_, so);
    const std::string in_name = s.inputNames().at(0);
    AccuracyMeter acc;
    ErrorMeter err;
    int64_t agree = 0, n = 0, only_input = 0, only_this = 0;
    size_t bi = 0;
    // Top-1 agreement needs class scores; another output (an image, boxes) is compared by SQNR
    // alone (every --eval of an autoencoder stopped with "expected [N, classes] scores").
    bool scores = true;
    if (is_input) input_right_.clear();
    ds_->reset();
    while (auto b = ds_->next(spec_.batch)) {
      Tensor y = s.runOrdered({{in_name, b->inputs}}).at(0);
      scores = scores && isClassScores(y);
      if (!scores && ds_->hasLabels())
        fail(m.label(), " on ", ds_->describe(), ": the first output has shape ", shapeStr(y.shape()),
             ", not class scores [N, classes], so labels cannot score it; give data without labels (the output is "
             "then compared with the input model's by SQNR)");
      // This model's top-1 class per sample, computed once for the labels and the agreement.
      std::vector<int64_t> pred_cache;
      auto predictions = [&]() -> const std::vector<int64_t>& {
        if (pred_cache.empty()) pred_cache = argmaxRows(y);
        return pred_cache;
      };
      if (ds_->hasLabels()) {
        try {
          acc.add(y, b->labels, b->first_index);
        } catch (const Error& e) {  // the scores' shape or a label: name the model and the data
          fail(m.label(), " on ", ds_->describe(), ": ", e.what());
        }
        // Per-sample correctness (argmax, ties to the lower class as AccuracyMeter ranks), paired
        // with the input model's for the McNemar test.
        const auto& pred = predictions();
        for (size_t k = 0; k < pred.size() && k < b->labels.size(); ++k) {
          const bool right = pred[k] == b->labels[k];
          const size_t at = static_cast<size_t>(n) + k;  // position in this pass over the data
          if (is_input) {
            if (input_right_.size() <= at) input_right_.resize(at + 1, 0);
            input_right_[at] = right;
          } else if (at < input_right_.size()) {
            only_input += input_right_[at] && !right;
            only_this += right && !input_right_[at];
          }
        }
      }
      if (is_input) {
        if (cache_bytes_ + y.nbytes() <= kMaxCachedBytes) {
          cache_.push_back(y.clone());
          cache_bytes_ += y.nbytes();
        } else {
          overflow_ = true;
        }
      } else {
        const Tensor r = cached_ ? cache_.at(bi) : ref->runOrdered({{input_->graph.realInputs()[0]->name, b->inputs}}).at(0);
        if (r.dtype() == DType::Float32 && y.dtype() == DType::Float32) {
          err.add(r, y);
          if (scores) {
            const auto ar = argmaxRows(r);
            const auto& ay = predictions();
            for (size_t k = 0; k < ar.size() && k < ay.size(); ++k) agree += ar[k] >= 0 && ar[k] == ay[k];
          }
        }
      }
      n += b->inputs.dim(0);
      ++bi;
      if (status) status(what + ": " + std::to_string(n) + "/" + std::to_string(ds_->size()) + " samples");
    }
    if (is_input) {
      cached_ = !overflow_;
      if (!cached_) cache_.clear();
    }
    out.evaluated = true;
    out.samples = n;
    if (ds_->hasLabels()) {
      out.top1 = acc.top1();
      out.top5 = acc.top5();
      out.only_input_right = only_input;
      out.only_this_right = only_this;
    }
    out.output_sqnr_db = is_input ? std::numeric_limits<double>::infinity() : err.sqnrDb();
    out.top1_agreement = !scores ? std::numeric_limits<double>::quiet_NaN()  // not applicable
                         : is_input || n == 0 ? 1.0
                                              : double(agree) / double(n);
    out.eval_seconds = secondsSince(t0);
  }

 private:
  static constexpr size_t kMaxCachedBytes = size_t(256) << 20;
  DataSpec spec_;
  std::string lowered_;
  int threads_;
  const Model* input_ = nullptr;
  std::unique_ptr<Dataset> ds_;
  std::vector<Tensor> cache_;
  size_t cache_bytes_ = 0;
  bool cached_ = false, overflow_ = false;
  std::vector<char> input_right_;  ///< per sample: the input model's top-1 is right
};

double gateValue(const std::string& name, const StageMetrics& in, const StageMetrics& out) {
  auto ratio = [](double a, double b) { return b != 0 ? a / b : std::numeric_limits<double>::infinity(); };
  // Percentages of whole samples, rounded to 1e-9 points: 90.8 % - 89.6 % of 500 images came out
  // as 1.200000000000001, and a drop of exactly the limit failed "1.2 <= 1.2".
  auto points = [](double fraction) { return std::round(fraction * 100.0 * 1e9) / 1e9; };
  if (name == "max_top1_drop") return points(*in.top1 - *out.top1);
  if (name == "max_top5_drop") return points(*in.top5 - *out.top5);
  if (name == "min_top1") return points(*out.top1);
  if (name == "min_top1_agreement") return points(out.top1_agreement);
  if (name == "min_output_sqnr_db") return out.output_sqnr_db;
  if (name == "min_size_ratio") return ratio(double(in.file_bytes), double(out.file_bytes));
  if (name == "max_params_ratio") return ratio(double(out.params), double(in.params));
  if (name == "max_macs_ratio") return ratio(double(out.macs), double(in.macs));
  LWC_CHECK(false, "unknown gate ", name);
  return 0;
}

// The values a subgraph (If, Loop, Scan) reads from the outer graph, by name, are kept by every pass
// as graph outputs are: for the pass's run they are appended to the graph's outputs (typed as
// inference finds them), then taken off again. Passes rename and remove intermediate values freely
// (quantization folds a Relu into its Conv and drops the Relu's output name), which left a
// subgraph reading a value nothing produced.
class SubgraphReadsKept {
 public:
  explicit SubgraphReadsKept(Model& m) : g_(m.graph) {
    std::set<std::string> reads;
    for (const auto& n : g_.nodes)
      for (auto& r : implicitInputs(n)) reads.insert(std::move(r));
    for (const auto& r : reads)
      if (!g_.isGraphOutput(r) && !g_.isGraphInput(r) && !g_.initializers.contains(r)) added_.push_back(r);
    if (added_.empty()) return;
    const ValueTypes types = inferShapes(m);
    for (const auto& r : added_) {
      auto it = types.find(r);
      ValueInfo v = it != types.end() ? it->second : ValueInfo{};
      v.name = r;
      g_.outputs.push_back(std::move(v));
    }
  }
  ~SubgraphReadsKept() {
    if (added_.empty()) return;
    const std::set<std::string> added(added_.begin(), added_.end());
    std::erase_if(g_.outputs, [&](const ValueInfo& v) { return added.count(v.name) > 0; });
  }
  SubgraphReadsKept(const SubgraphReadsKept&) = delete;
  SubgraphReadsKept& operator=(const SubgraphReadsKept&) = delete;

 private:
  Graph& g_;
  std::vector<std::string> added_;
};

}  // namespace

double StageMetrics::mcnemarP() const { return mcnemarExactP(only_input_right, only_this_right); }

PipelineReport runPipeline(const Pipeline& p, Model& m, const RunOptions& opts) {
  const auto t_start = Clock::now();
  auto log = [&](const std::string& s) {
    if (opts.log) opts.log(s);
  };
  auto warn = [&](const std::string& s) {
    if (opts.warn) opts.warn(s);
    else if (opts.note) opts.note(s);
    else log(s);
  };
  // The preprocessing a data source applies, for the report, and a warning when it is the default
  // or when one was given that the source's samples do not get.
  auto preprocessing = [&](const Dataset& ds, const std::string& what) {
    if (const std::string w = preprocessingWarning(ds); !w.empty()) warn(what + ": " + w);
    const auto pp = ds.preprocessing();
    if (!pp) return json(nullptr);
    json j = pp->toJson();
    j["from"] = pp->origin;
    return j;
  };
  p.check();
  PipelineReport rep;
  rep.pipeline = p.name.empty() ? p.origin : p.name;
  rep.model = m.source.string();

  // Open and check every data source against the model before any pass runs.
  const Model input = m;
  std::unique_ptr<Evaluator> ev;
  if (p.eval) {
    const bool run_time_quantization =
        quantizesAtRunTime(input) ||
        std::any_of(p.steps.begin(), p.steps.end(), [](const PipelineStep& s) { return s.pass->name() == "quantize_dynamic"; });
    ev = std::make_unique<Evaluator>(*p.eval, input, opts.threads, run_time_quantization);
    rep.eval_data = ev->dataset().describe();
    rep.eval_batch = ev->batch();
    if (const std::string& why = ev->loweredBatch(); !why.empty()) {
      if (opts.note) opts.note(why);
      else log(why);
    }
    rep.eval_preprocessing = preprocessing(ev->dataset(), p.eval->origin);
    for (const auto& g : p.gates)
      for (const auto& info : gateInfos())
        if (info.name == g.name && info.needs_labels && !ev->dataset().hasLabels())
          fail(p.origin, ": gates.", g.name, " needs labelled evaluation data, but ", rep.eval_data,
               " has no labels (add labels, or use min_top1_agreement / min_output_sqnr_db)");
  }
  if (p.calib) {
    DataOptions o = p.calib->options;
    fitToModel(o, input);
    // Opened here to describe and check the data; the passes take their share of it (a
    // calib_samples cap) and check that it fills a fixed batch then (checked on the whole data
    // here, a model with batch 8 refused --calib-samples 16 of 500 images).
    o.fixed_batch = 0;
    auto ds = openDataset(o);
    if (ds->size() == 0) fail(p.calib->origin, ": ", o.path.string(), ": no samples");
    rep.calib_data = ds->describe();
    rep.calib_preprocessing = preprocessing(*ds, p.calib->origin);
  }
  PassContext ctx;
  ctx.calib = p.calib ? &*p.calib : nullptr;
  ctx.threads = opts.threads;
  ctx.progress = opts.log;
  ctx.status = opts.status;
  ctx.outputs = opts.outputs;
  const Model reference = m;
  ctx.reference = &reference;
  std::map<std::string, RecoveryAnchor> anchors;
  ctx.recovery_anchors = &anchors;

  StageRecord first;
  first.pass = "input";
  first.metrics = sizeMetrics(m, opts, &rep.input_file_bytes);
  fullCount(opts, m, first.metrics);
  // Stamped now, so that every later stage's bytes are those of the file lwc writes.
  stampProvenance(m, rep.pipeline);
  if (ev) {
    log("evaluating the input model on " + rep.eval_data);
    ev->evaluate(m, first.metrics, true, "evaluating the input model", opts.status);
  }
  rep.stages.push_back(std::move(first));

  for (size_t i = 0; i < p.steps.size(); ++i) {
    const PipelineStep& step = p.steps[i];
    log("running " + step.pass->name());
    StageRecord rec;
    rec.pass = step.pass->name();
    rec.options = step.pass->options().values();
    Model before = m;
    const auto t0 = Clock::now();
    try {
      {
        SubgraphReadsKept kept(m);
        rec.result = step.pass->run(m, ctx);
      }
      topoSort(m.graph, m.label());
      validateGraph(m.graph, m.label());
    } catch (const Error& e) {
      m = std::move(before);
      // A message that already names the step (an option's error: "<where>.options.include: ...")
      // is not prefixed with it a second time.
      const std::string what = e.what();
      if (!step.where.empty() && what.rfind(step.where, 0) == 0) throw;
      const std::string name = step.pass->name();
      throw Error(step.where.empty() || step.where == name ? name + ": " + what : name + " (" + step.where + "): " + what);
    } catch (...) {
      m = std::move(before);
      throw;
    }
    rec.seconds = secondsSince(t0);
    // "No change" lets the stage reuse the previous stage's evaluation, so it is checked rather than
    // trusted: a pass that moved weights while saying otherwise (prune_magnitude's recovery on a
    // second step that zeroed nothing new) reported the previous stage's top-1, and gates judged it.
    if (!rec.result.changed && !sameComputation(before.graph, m.graph)) rec.result.changed = true;
    if (rec.result.changed) m.stage = "pass " + std::to_string(i + 1) + " (" + step.pass->name() + ")";
    rec.metrics = sizeMetrics(m, opts);
    const bool last = i + 1 == p.steps.size();
    if (last) fullCount(opts, m, rec.metrics);
    const StageMetrics& prev = rep.stages.back().metrics;
    if (ev && !rec.result.changed && prev.evaluated) {
      // The model is the one evaluated before: same numbers.
      rec.metrics.evaluated = true;
      rec.metrics.samples = prev.samples;
      rec.metrics.top1 = prev.top1;
      rec.metrics.top5 = prev.top5;
      rec.metrics.output_sqnr_db = prev.output_sqnr_db;
      rec.metrics.top1_agreement = prev.top1_agreement;
      rec.metrics.only_input_right = prev.only_input_right;
      rec.metrics.only_this_right = prev.only_this_right;
    } else if (ev && (p.eval_every_pass || last)) {
      log("evaluating after " + rec.pass);
      ev->evaluate(m, rec.metrics, false, "evaluating after " + rec.pass, opts.status);
    }
    if (opts.on_stage) opts.on_stage(*step.pass, before, m, rec);
    for (const auto& n : groupNotes(rec.result.notes, opts.note_group)) {
      if (opts.note) opts.note(rec.pass + ": " + n);
      else log(rec.pass + ": " + n);
    }
    if (opts.after_pass) opts.after_pass(rec.pass, m);
    rep.stages.push_back(std::move(rec));
  }

  const StageMetrics& in = rep.stages.front().metrics;
  const StageMetrics& out = rep.stages.back().metrics;
  for (const auto& g : p.gates) {
    GateResult r;
    r.gate = g;
    r.value = gateValue(g.name, in, out);
    r.passed = g.name.rfind("max_", 0) == 0 ? r.value <= g.limit : r.value >= g.limit;
    if (g.name == "max_macs_ratio" && (!in.macs_complete || !out.macs_complete)) {
      r.value = std::numeric_limits<double>::quiet_NaN();  // a ratio of lower bounds proves nothing
      r.passed = false;
      r.no_value = "unknown";
      r.reason = "some layers' MACs are not known before run time";
    } else if (std::isnan(r.value)) {
      if (g.name == "min_top1_agreement") r.no_value = "not applicable";
      r.reason = g.name == "min_top1_agreement" ? "the first output is not class scores; use min_output_sqnr_db"
                                                : "the outputs hold NaN";
    }
    rep.gates.push_back(r);
  }
  rep.total_seconds = secondsSince(t_start);
  return rep;
}

std::vector<std::string> groupNotes(const std::vector<std::string>& notes, size_t at_least) {
  if (at_least == 0) return notes;
  // A note's shape: its text with what each pair of quotes holds left out.
  auto shape = [](const std::string& n) {
    std::string s;
    bool quoted = false;
    for (char c : n) {
      if (c == '\'') {
        quoted = !quoted;
        s += c;
      } else if (!quoted) {
        s += c;
      }
    }
    return s;
  };
  std::vector<std::string> shapes;
  std::map<std::string, size_t> count;
  for (const auto& n : notes) ++count[shapes.emplace_back(shape(n))];
  std::vector<std::string> lines;
  std::set<std::string> done;
  for (size_t i = 0; i < notes.size(); ++i) {
    const size_t k = count[shapes[i]];
    if (k < at_least) {
      lines.push_back(notes[i]);
    } else if (done.insert(shapes[i]).second) {
      lines.push_back(notes[i] + " (and " + std::to_string(k - 1) + " more like it; lwc -v lists each)");
    }
  }
  return lines;
}

void stampProvenance(Model& m, const std::string& pipeline) {
  auto setMeta = [&m](const std::string& k, const std::string& v) {
    for (auto& [key, val] : m.metadata_props)
      if (key == k) return void(val = v);
    m.metadata_props.emplace_back(k, v);
  };
  if (!m.producer_name.empty() && m.producer_name != kProducerName)
    setMeta("lwc.source_producer", m.producer_name + " " + m.producer_version);
  setMeta("lwc.pipeline", pipeline);
  m.producer_name = kProducerName;
  m.producer_version = kProducerVersion;
}

namespace {

// ONNX's messages span lines ("... ==> Context: Bad node spec for node. Name: X OpType: Y"); lwc's
// error lines do not.
std::string oneLine(const std::string& s) {
  std::string out;
  for (char c : s) {
    const bool space = c == '\n' || c == '\r' || c == '\t' || c == ' ';
    if (space) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// Empty when `m` passes ONNX's full checker and strict shape inference; else which of the two
// failed and ONNX's reason, on one line.
std::string onnxCheckFailure(const Model& m) {
  // The checker's own message for these does not say which value.
  auto declared = [&](const ValueInfo& v, const char* what) -> std::string {
    if (v.other_type) return "";
    if (v.dtype == DType::Undefined) return std::string("the ONNX checker: ") + what + " '" + v.name + "' declares no type";
    if (!v.shape)
      return std::string("the ONNX checker: ") + what + " '" + v.name +
             "' declares no shape (ONNX requires one on the main graph's inputs and outputs; its dimensions may be "
             "symbolic names)";
    return "";
  };
  for (const auto& v : m.graph.inputs)
    if (!m.graph.initializers.contains(v.name))
      if (std::string why = declared(v, "graph input"); !why.empty()) return why;
  for (const auto& v : m.graph.outputs)
    if (std::string why = declared(v, "graph output"); !why.empty()) return why;
  // Weights as typed graph inputs: lwc built every tensor itself, so the checker has nothing to
  // find in their data, and copying them took half a second per 100 MB.
  onnx::ModelProto proto = modelToInferenceProto(m);
  try {
    weight_coding::registerOnnxSchemas();
    onnx::checker::check_model(proto);
  } catch (const std::exception& e) {
    return "the ONNX checker: " + oneLine(e.what());
  }
  // ONNX 1.12's convolution inference segfaults on an X of another rank than W (lwc's own
  // inference leaves such nodes out): say so before ONNX's strict inference would run into it.
  if (const std::string why = convRankDisagreement(m); !why.empty()) return "ONNX shape inference: " + why;
  try {
    onnx::ShapeInferenceOptions o(/*check_type=*/true, /*error_mode=*/1, /*data_prop=*/false);
    guardOnnxInference();
    onnx::shape_inference::InferShapes(proto, onnx::OpSchemaRegistry::Instance(), o);
  } catch (const std::exception& e) {
    // One node's error cascades into "input has no type" on every node after it: keep the first.
    std::string msg = oneLine(e.what());
    const size_t first = msg.find("(op_type:");
    const size_t second = first == std::string::npos ? first : msg.find(" (op_type:", first + 1);
    if (second != std::string::npos) msg = msg.substr(0, second) + " (and errors on later nodes)";
    return "ONNX shape inference: " + msg;
  }
  return "";
}

// Weights that make NaN outputs: a NaN in the constant weights, bias or normalization parameters
// of a layer, an infinity in one that multiplies (inf · 0 and inf − inf are NaN), or a
// BatchNormalization whose variance + epsilon is not positive (the square root of a negative
// number). Passes computed with them silently: dynamic quantization turned a NaN weight into 0,
// bias correction an Inf weight into NaN biases, BatchNorm folding a negative variance into NaN
// weights. An infinity that is only added (a -inf bias masking a class) or a +inf variance (its
// channel is 0) is valid. Empty when there is none.
std::string nonFiniteWeights(const Model& m) {
  struct Slots {
    std::vector<size_t> scaled, added;
  };
  static const std::map<std::string, Slots> kParams = {
      {"Conv", {{1}, {2}}},        {"ConvTranspose", {{1}, {2}}},
      {"Gemm", {{0, 1}, {2}}},     {"MatMul", {{0, 1}, {}}},
      {"BatchNormalization", {{1, 3}, {2, 4}}},  // scale, mean; bias, variance (checked below)
      {"LayerNormalization", {{1}, {2}}},        {"InstanceNormalization", {{1}, {2}}}};
  for (const Node& n : m.graph.nodes) {
    if (!n.domain.empty()) continue;
    const auto roles = kParams.find(n.op_type);
    if (roles == kParams.end()) continue;
    for (const bool scaled : {true, false})
      for (size_t i : scaled ? roles->second.scaled : roles->second.added) {
        const Tensor* t = n.hasInput(i) ? m.graph.initializers.find(n.inputs[i]) : nullptr;
        if (!t || !isFloat(t->dtype())) continue;
        const bool f32 = t->dtype() == DType::Float32;  // most weights: read directly, not through at()
        for (int64_t k = 0; k < t->numel(); ++k)
          if (const double v = f32 ? double(t->data<float>()[k]) : t->at(k); std::isnan(v) || (scaled && std::isinf(v)))
            return n.describe() + " reads " + (std::isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf") + " in '" + n.inputs[i] +
                   "' (element " + std::to_string(k) + ")";
      }
    if (n.op_type == "BatchNormalization" && n.hasInput(4))
      if (const Tensor* var = m.graph.initializers.find(n.inputs[4]); var && isFloat(var->dtype())) {
        const double eps = n.attrFloat("epsilon", 1e-5f);
        for (int64_t k = 0; k < var->numel(); ++k)
          if (!(var->at(k) + eps > 0))  // NaN too
            return n.describe() + ": variance '" + n.inputs[4] + "' + epsilon is " + std::to_string(var->at(k) + eps) +
                   " at channel " + std::to_string(k) + " (the normalization divides by its square root)";
      }
  }
  return "";
}

// Weight-shape agreements that ONNX's shape inference does not check (its Gemm and Conv rules take
// the output's dimensions from one operand and never compare the shared one) but every runtime
// needs: an input whose shape was edited, or weights from another model, would otherwise pass
// through passes that do not run the model and come out as a file no runtime can run. Only fully
// known shapes are compared. Empty when consistent, else the first disagreement.
std::string shapeDisagreement(const Model& m) {
  const ValueTypes types = inferShapes(m);
  // Inferred shape of input i of n (dimensions possibly symbolic), when its rank is known.
  auto shapeOf = [&](const Node& n, size_t i) -> const SymShape* {
    if (!n.hasInput(i)) return nullptr;
    auto it = types.find(n.inputs[i]);
    return it == types.end() || !it->second.shape ? nullptr : &*it->second.shape;
  };
  auto rank = [&](const Node& n, size_t i) -> std::optional<size_t> {
    const SymShape* s = shapeOf(n, i);
    return s ? std::optional<size_t>(s->size()) : std::nullopt;
  };
  auto dim = [&](const Node& n, size_t i, size_t d) -> std::optional<int64_t> {
    const SymShape* s = shapeOf(n, i);
    if (!s || d >= s->size() || !(*s)[d].known()) return std::nullopt;
    return (*s)[d].value;
  };
  auto num = [](int64_t v) { return std::to_string(v); };
  for (const Node& n : m.graph.nodes) {
    if (!n.domain.empty() && n.domain != "ai.onnx") continue;
    const std::string& op = n.op_type;
    if (op == "Gemm") {
      if (rank(n, 0) != 2u || rank(n, 1) != 2u) continue;
      const int64_t ta = n.attrInt("transA", 0), tb = n.attrInt("transB", 0);
      const auto ka = dim(n, 0, ta ? 0 : 1), kb = dim(n, 1, tb ? 1 : 0);
      if (ka && kb && *ka != *kb)
        return n.describe() + ": A ('" + n.inputs[0] + "') has " + num(*ka) + " columns but B ('" + n.inputs[1] +
               "') has " + num(*kb) + " rows (transA " + num(ta) + ", transB " + num(tb) + ")";
      const auto nb = dim(n, 1, tb ? 0 : 1);
      if (const auto rc = rank(n, 2); rc && nb && *rc >= 1 && *rc <= 2)
        if (const auto c = dim(n, 2, *rc - 1); c && *c != 1 && *c != *nb)
          return n.describe() + ": C ('" + n.inputs[2] + "') has " + num(*c) + " columns, neither 1 nor the output's " +
                 num(*nb);
    } else if (op == "Conv") {
      const auto rx = rank(n, 0), rw = rank(n, 1);
      if (!rx || !rw || *rx < 3 || *rx != *rw) continue;
      const int64_t group = n.attrInt("group", 1);
      const auto c = dim(n, 0, 1), wc = dim(n, 1, 1), m_out = dim(n, 1, 0);
      if (c && wc && group >= 1 && *c != *wc * group)
        return n.describe() + ": input ('" + n.inputs[0] + "') has " + num(*c) + " channels but the weights ('" +
               n.inputs[1] + "') take " + num(*wc) + " per group x " + num(group) + " groups";
      if (m_out && group >= 1 && *m_out % group != 0)
        return n.describe() + ": " + num(*m_out) + " output channels do not divide into " + num(group) + " groups";
      if (const auto rb = rank(n, 2); rb && *rb != 1)
        return n.describe() + ": bias ('" + n.inputs[2] + "') has rank " + num(int64_t(*rb)) + "; it must be 1-D";
      if (const auto b = dim(n, 2, 0); b && m_out && *b != *m_out)
        return n.describe() + ": bias ('" + n.inputs[2] + "') has " + num(*b) + " values for " + num(*m_out) +
               " output channels";
      // ONNX's inference does not compare kernel_shape with the weights: a Conv whose attribute
      // says 5x5 over 3x3 weights passed every check and failed only when run, as an input error.
      // (A kernel_shape of another length is named with the windows' attributes below.)
      const std::vector<int64_t> ks = n.attrInts("kernel_shape");
      for (size_t i = 0; i < ks.size(); ++i)
        if (const auto k = dim(n, 1, 2 + i); k && *k != ks[i])
          return n.describe() + ": kernel_shape " + shapeStr(ks) + " does not match the weights ('" + n.inputs[1] +
                 "') of spatial size " + num(*k) + " in dimension " + num(int64_t(i));
    }
    if (op == "Conv" || op == "MaxPool" || op == "AveragePool") {
      // The window must fit the padded input (ONNX's inference lets a negative size through).
      const std::string auto_pad = n.attrString("auto_pad", "NOTSET");
      const auto rx = rank(n, 0);
      if (!rx || *rx < 3 || (auto_pad != "NOTSET" && auto_pad != "VALID")) continue;
      const size_t sd = *rx - 2;
      std::vector<int64_t> kernel = n.attrInts("kernel_shape");
      if (op == "Conv" && kernel.empty() && rank(n, 1) == rx)
        for (size_t i = 0; i < sd; ++i) kernel.push_back(dim(n, 1, 2 + i).value_or(-1));
      std::vector<int64_t> pads = n.attrInts("pads"), dil = n.attrInts("dilations");
      if (auto_pad == "VALID") pads.clear();
      // An attribute with a value per spatial dimension that has another count (MaxPool
      // kernel_shape [2,2,2] on a 4-D input) passed ONNX's checker and failed only when run.
      for (const auto& [name, v, per] : {std::tuple<const char*, const std::vector<int64_t>&, size_t>{"kernel_shape", kernel, 1},
                                         {"pads", pads, 2}, {"dilations", dil, 1}})
        if (!v.empty() && v.size() != per * sd)
          return n.describe() + ": " + name + " has " + num(int64_t(v.size())) + " values but the input ('" + n.inputs[0] +
                 "') has " + num(int64_t(sd)) + " spatial dimensions (" + (per == 2 ? "2 x " : "") + num(int64_t(sd)) +
                 " expected)";
      if (kernel.size() != sd) continue;
      for (size_t i = 0; i < sd; ++i) {
        const auto x = dim(n, 0, 2 + i);
        const int64_t k = kernel[i], d = dil.empty() ? 1 : dil[i];
        const int64_t p = pads.empty() ? 0 : pads[i] + pads[sd + i];
        if (!x || k < 1 || d < 1) continue;
        if (*x + p < d * (k - 1) + 1)
          return n.describe() + ": the window (kernel " + num(k) + ", dilation " + num(d) + ") is larger than the input ('" +
                 n.inputs[0] + "'), " + num(*x) + " + " + num(p) + " padding, in spatial dimension " + num(int64_t(i));
      }
    }
    if (op == "BatchNormalization") {
      const auto c = dim(n, 0, 1);
      if (!c) continue;
      for (size_t i = 1; i < 5; ++i) {
        if (const auto r = rank(n, i); r && *r != 1)
          return n.describe() + ": '" + n.inputs[i] + "' (input " + num(int64_t(i)) + ") has rank " + num(int64_t(*r)) +
                 "; it must be 1-D with one value per channel";
        if (const auto p = dim(n, i, 0); p && *p != *c)
          return n.describe() + ": input ('" + n.inputs[0] + "') has " + num(*c) + " channels but '" + n.inputs[i] +
                 "' has " + num(*p) + " values";
      }
    }
  }
  return "";
}

}  // namespace

void checkModelForOutput(const Model& m) {
  validateGraph(m.graph, m.label());
  if (const std::string why = onnxCheckFailure(m); !why.empty())
    throw InternalError(m.label() + ": the model lwc produced fails " + why);
}

namespace {
bool undeclared(const ValueInfo& v) { return !v.other_type && (v.dtype == DType::Undefined || !v.shape); }
}  // namespace

std::vector<std::string> undeclaredOutputs(const Model& m) {
  std::vector<std::string> names;
  for (const auto& o : m.graph.outputs)
    if (undeclared(o)) names.push_back(o.name);
  return names;
}

std::vector<std::string> completeOutputDeclarations(Model& m) {
  if (undeclaredOutputs(m).empty()) return {};
  const ValueTypes types = inferShapes(m);
  std::vector<std::string> filled;
  for (auto& o : m.graph.outputs) {
    if (!undeclared(o)) continue;
    const auto it = types.find(o.name);
    if (it == types.end() || it->second.other_type || it->second.dtype == DType::Undefined) continue;
    const ValueInfo& inferred = it->second;
    if (o.dtype != DType::Undefined && o.dtype != inferred.dtype) continue;  // the checker names the conflict
    if (!o.shape && !inferred.shape) continue;
    const bool had_type = o.dtype != DType::Undefined;
    o.dtype = inferred.dtype;
    if (!o.shape) o.shape = inferred.shape;
    filled.push_back("graph output '" + o.name + "' declared no " + (had_type ? "shape" : "type") +
                     "; lwc gives it the inferred " + std::string(dtypeName(o.dtype)) + " " + symShapeStr(*o.shape));
  }
  return filled;
}

std::string inputModelProblem(const Model& input, bool as_is) {
  std::optional<Model> completed;
  if (!undeclaredOutputs(input).empty()) completeOutputDeclarations(completed.emplace(input));
  const Model& m = completed ? *completed : input;
  const bool constant_nodes = std::any_of(m.graph.nodes.begin(), m.graph.nodes.end(), [](const Node& n) {
    return n.op_type == "Constant" && n.domain.empty();
  });
  // Constant nodes' tensors as initializers: for the checker unless `as_is`, and for the weights
  // check always (a NaN in a Constant-held weight went through dynamic quantization unseen).
  std::optional<Model> with_initializers;
  if (constant_nodes) with_initializers = constantsAsInitializers(m);
  if (const std::string why = onnxCheckFailure(with_initializers && !as_is ? *with_initializers : m); !why.empty())
    return "fails " + why;
  if (const std::string why = shapeDisagreement(m); !why.empty()) return "has shapes that disagree: " + why;
  if (const std::string why = nonFiniteWeights(with_initializers ? *with_initializers : m); !why.empty())
    return "has weights that make NaN: " + why;
  return "";
}

void checkModelForInput(const Model& m) {
  const std::string problem = inputModelProblem(m);
  if (problem.empty()) return;
  fail(m.label(), ": the input model ", problem,
       problem.rfind("fails ", 0) == 0
           ? " (lwc writes only models that pass these checks: repair the model or export it again)"
       : problem.rfind("has weights", 0) == 0
           ? " (its outputs would be NaN: repair the weights or train the model again)"
           : " (was the input shape edited, or do the weights belong to another model?)");
}

// ------------------------------------------------------------------ report

bool PipelineReport::gatesPassed() const {
  for (const auto& g : gates)
    if (!g.passed) return false;
  return true;
}

namespace {

// A gate's value and limit, with as many significant digits (4 at least) as it takes for unequal
// numbers to read unequal: "1.016 >= 1.016  FAIL" hid 1.0164733 against 1.016474.
std::pair<std::string, std::string> gateFigures(double value, double limit) {
  value += 0.0, limit += 0.0;  // -0 prints as 0 ("(limit -0)")
  int digits = 4;
  while (digits < 17 && value != limit && formatFigure(value, digits, false) == formatFigure(limit, digits, false)) ++digits;
  return {formatFigure(value, digits, false), formatFigure(limit, digits, false)};
}

json metricsJson(const StageMetrics& s) {
  json j{{"nodes", s.nodes},
         {"params", s.params},
         {"macs", s.macs},
         {"macs_complete", s.macs_complete},
         {"weight_bytes", s.weight_bytes},
         {"file_bytes", s.file_bytes},
         {"weight_sparsity", s.weight_elements ? double(s.weight_zeros) / double(s.weight_elements) : 0.0}};
  if (s.evaluated) {
    json e{{"samples", s.samples},
           {"output_sqnr_db", jsonNumber(s.output_sqnr_db)},
           {"top1_agreement", std::isnan(s.top1_agreement) ? json(nullptr) : json(s.top1_agreement)},  // null: not class scores
           {"seconds", s.eval_seconds}};
    if (s.top1) {
      e["top1"] = *s.top1;
      e["top5"] = *s.top5;
      e["only_input_right"] = s.only_input_right;
      e["only_this_right"] = s.only_this_right;
      e["mcnemar_p"] = s.mcnemarP();
    }
    j["eval"] = e;
  }
  return j;
}

// "p < 0.001" or "p = 0.108", for the reports' McNemar lines.
std::string pValueText(double p) {
  if (p < 0.001) return "p < 0.001";
  std::ostringstream os;
  os << "p = " << std::fixed << std::setprecision(3) << p;
  return os.str();
}

std::string pct(double f) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(2) << 100.0 * f << " %";
  return os.str();
}

// "0.00 % -> 90.00 % of the Conv/Gemm/MatMul weights; non-zero 266200 -> 26620"
std::string zerosText(const StageMetrics& a, const StageMetrics& b) {
  auto share = [](const StageMetrics& m) { return pct(m.weight_elements ? double(m.weight_zeros) / double(m.weight_elements) : 0.0); };
  std::ostringstream os;
  os << share(a) << " -> " << share(b) << " of the Conv/Gemm/MatMul weights; non-zero " << a.weight_elements - a.weight_zeros
     << " -> " << b.weight_elements - b.weight_zeros;
  return os.str();
}

std::string human(int64_t v) {
  std::ostringstream os;
  const double a = std::fabs(double(v));
  os << std::fixed << std::setprecision(a >= 1e9 ? 2 : a >= 1e6 ? 2 : a >= 1e3 ? 1 : 0);
  if (a >= 1e9) os << double(v) / 1e9 << "G";
  else if (a >= 1e6) os << double(v) / 1e6 << "M";
  else if (a >= 1e3) os << double(v) / 1e3 << "k";
  else os << v;
  return os.str();
}

bool anyIncompleteMacs(const std::vector<StageRecord>& stages) {
  return std::any_of(stages.begin(), stages.end(), [](const StageRecord& s) { return !s.metrics.macs_complete; });
}

std::string gateText(const GateResult& g) {
  std::ostringstream os;
  // "unknown (why)" / "not applicable (why)" stand for the value; another reason follows it.
  if (!g.no_value.empty()) {
    os << g.gate.name << ": " << g.no_value << " (" << g.reason << ")  FAIL";
    return os.str();
  }
  const auto [value, limit] = gateFigures(g.value, g.gate.limit);
  os << g.gate.name << ": " << value << (g.reason.empty() ? "" : " (" + g.reason + ")")
     << (g.gate.name.rfind("max_", 0) == 0 ? " <= " : " >= ") << limit << "  " << (g.passed ? "pass" : "FAIL");
  return os.str();
}

std::string changeSummary(const StageRecord& s) {
  std::string out;
  for (const auto& [k, v] : s.result.stats)
    if (v != 0) out += (out.empty() ? "" : ", ") + k + " " + std::to_string(v);
  return out.empty() ? (s.pass == "input" ? "" : "no change") : out;
}

}  // namespace

json PipelineReport::toJson() const {
  json stages_j = json::array();
  for (const auto& s : stages) {
    json j{{"pass", s.pass}, {"metrics", metricsJson(s.metrics)}};
    if (s.pass != "input") {
      j["options"] = s.options;
      j["changed"] = s.result.changed;
      j["stats"] = s.result.stats;
      j["notes"] = s.result.notes;
      j["seconds"] = s.seconds;
      if (!s.details.is_null()) j["details"] = s.details;
    }
    stages_j.push_back(j);
  }
  const StageMetrics& a = stages.front().metrics;
  const StageMetrics& b = stages.back().metrics;
  json delta{{"nodes", b.nodes - a.nodes},
             {"params", b.params - a.params},
             {"macs", b.macs - a.macs},
             {"file_bytes", b.file_bytes - a.file_bytes},
             {"size_ratio", b.file_bytes ? double(a.file_bytes) / double(b.file_bytes) : 0.0}};
  if (a.top1 && b.top1) {
    delta["top1"] = *b.top1 - *a.top1;
    delta["top5"] = *b.top5 - *a.top5;
  }
  json gates_j = json::array();
  for (const auto& g : gates) {
    json gj{{"gate", g.gate.name}, {"limit", g.gate.limit}, {"value", jsonNumber(g.value)}, {"passed", g.passed}};
    if (!g.no_value.empty()) {
      gj["value"] = nullptr;
      gj["reason"] = g.no_value + ": " + g.reason;
    } else if (!g.reason.empty()) {
      gj["reason"] = g.reason;
    }
    gates_j.push_back(gj);
  }
  return json{{"schema", "lwc.report"},
              {"schema_version", kReportSchemaVersion},
              {"pipeline", pipeline},
              {"model", model},
              {"output", output_written && !output.empty() ? json(output) : json(nullptr)},
              {"output_not_written", output_written || output.empty() ? json(nullptr) : json(output)},
              {"output_data", output_written && !output_data.empty() ? json(output_data) : json(nullptr)},
              {"eval_data", eval_data.empty() ? json(nullptr) : json(eval_data)},
              {"eval_batch", eval_data.empty() ? json(nullptr) : json(eval_batch)},
              {"eval_preprocessing", eval_preprocessing},
              {"calib_data", calib_data.empty() ? json(nullptr) : json(calib_data)},
              {"calib_preprocessing", calib_preprocessing},
              {"input_file_bytes", input_file_bytes >= 0 ? json(input_file_bytes) : json(nullptr)},
              {"input", metricsJson(a)},
              {"final", metricsJson(b)},
              {"delta", delta},
              {"stages", stages_j},
              {"gates", gates_j},
              {"status", gatesPassed() ? "ok" : "gate_failed"},
              {"seconds", total_seconds}};
}

namespace {
// An SQNR for the text and Markdown tables: one decimal, "inf" and "nan" as they are, no "-0.0".
std::string sqnrText(double db) {
  std::string t = formatFigure(db, 1, true);
  return t == "-0.0" ? "0.0" : t;
}
}  // namespace

std::string PipelineReport::toText(bool time_passes) const {
  std::ostringstream os;
  const bool eval = stages.front().metrics.evaluated;
  const bool labels = eval && stages.front().metrics.top1.has_value();
  // Names and paths the user chose, escaped (a pipeline name with a newline forged a line).
  os << "pipeline " << printable(pipeline) << "\nmodel    " << printable(model) << "\n";
  if (!output.empty())
    os << "output   " << printable(output)
       << (!output_written ? " (not written: a gate failed)"
           : output_data.empty() ? ""
                                 : " (weights in " + printable(output_data) + ", which must stay beside it)")
       << "\n";
  if (eval) os << "eval     " << printable(eval_data) << ", batches of " << eval_batch << "\n";
  if (!calib_data.empty()) os << "calib    " << printable(calib_data) << "\n";
  os << "\n";
  char line[512];
  std::snprintf(line, sizeof line, "%-22s %7s %10s %10s %11s", "stage", "nodes", "params", "MACs", "bytes");
  os << line;
  if (labels) os << "    top-1    top-5";
  if (eval) os << "  agree  SQNR dB";
  if (time_passes) os << "   time s";
  os << "  changes\n";
  for (const auto& s : stages) {
    const auto& m = s.metrics;
    std::snprintf(line, sizeof line, "%-22s %7lld %10s %10s %11lld", s.pass.c_str(), static_cast<long long>(m.nodes),
                  human(m.params).c_str(), (human(m.macs) + (m.macs_complete ? "" : "+")).c_str(),
                  static_cast<long long>(m.file_bytes));
    os << line;
    if (labels) {
      if (m.evaluated) std::snprintf(line, sizeof line, " %8.2f %8.2f", 100 * *m.top1, 100 * *m.top5);
      else std::snprintf(line, sizeof line, " %8s %8s", "-", "-");
      os << line;
    }
    if (eval) {
      if (m.evaluated && s.pass != "input")
        std::snprintf(line, sizeof line, " %6s %8s",
                      std::isnan(m.top1_agreement) ? "-" : formatFigure(100 * m.top1_agreement, 2, true).c_str(),
                      // One decimal, as the Markdown report shows it (0.99 dB printed as 1).
                      sqnrText(m.output_sqnr_db).c_str());
      else std::snprintf(line, sizeof line, " %6s %8s", "-", "-");
      os << line;
    }
    if (time_passes) {
      std::snprintf(line, sizeof line, " %8.3f", s.seconds);
      os << line;
    }
    os << "  " << changeSummary(s) << "\n";
  }
  const auto& a = stages.front().metrics;
  const auto& b = stages.back().metrics;
  os << "\nparams " << a.params << " -> " << b.params << ", MACs " << a.macs << (a.macs_complete ? "" : "+") << " -> "
     << b.macs << (b.macs_complete ? "" : "+") << ", bytes " << a.file_bytes << " -> " << b.file_bytes;
  // A ratio below 1 reads as "0.57x smaller"; a file that grew says how much larger it is.
  if (a.file_bytes && b.file_bytes && a.file_bytes != b.file_bytes) {
    const bool smaller = b.file_bytes < a.file_bytes;
    os << " (" << std::fixed << std::setprecision(2)
       << (smaller ? double(a.file_bytes) / double(b.file_bytes) : double(b.file_bytes) / double(a.file_bytes))
       << (smaller ? "x smaller)" : "x larger)");
  }
  os << "\n";
  // Pruning leaves params and bytes as they were (ONNX stores zeros): say what it did change.
  if (a.weight_zeros != b.weight_zeros) os << "zeros  " << zerosText(a, b) << "\n";
  if (anyIncompleteMacs(stages))
    os << "MACs marked + are lower bounds: some layers' shapes are only known at run time\n";
  if (labels && b.evaluated)
    os << "top-1 " << pct(*a.top1) << " -> " << pct(*b.top1) << " (" << std::showpos << std::fixed << std::setprecision(2)
       << 100 * (*b.top1 - *a.top1) << std::noshowpos << " points; " << b.only_input_right
       << (b.only_input_right == 1 ? " sample" : " samples") << " only the input "
       << "model gets right, " << b.only_this_right << " only this one: McNemar " << pValueText(b.mcnemarP())
       << (b.mcnemarP() < 0.05 ? ", more than chance" : ", within chance") << ")\n";
  for (const auto& g : gates) os << "gate " << gateText(g) << "\n";
  if (time_passes) os << "total " << std::fixed << std::setprecision(3) << total_seconds << " s\n";
  return os.str();
}

namespace {
// `text` as one Markdown code span: on one line (printable), fenced by more backticks than any run
// inside it. A file name with a backtick and newlines put a forged table into the report.
std::string markdownCode(const std::string& text) {
  const std::string t = printable(text);
  size_t longest = 0, run = 0;
  for (const char c : t) {
    run = c == '`' ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  const std::string fence(longest + 1, '`');
  const bool pad = !t.empty() && (t.front() == '`' || t.back() == '`');
  return fence + (pad ? " " : "") + t + (pad ? " " : "") + fence;
}

// `text` as Markdown prose on one line, its markup characters escaped.
std::string markdownText(const std::string& text) {
  std::string out;
  for (const char c : printable(text)) {
    if (std::string_view("\\`*_|<>[]#").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}
}  // namespace

std::string PipelineReport::toMarkdown() const {
  std::ostringstream os;
  const bool eval = stages.front().metrics.evaluated;
  const bool labels = eval && stages.front().metrics.top1.has_value();
  os << "### lwc: " << markdownText(pipeline) << " on " << markdownCode(model) << "\n\n";
  if (eval) os << "Evaluated on " << markdownText(eval_data) << ".\n\n";
  os << "| stage | nodes | params | MACs | bytes |" << (labels ? " top-1 | top-5 |" : "")
     << (eval ? " top-1 agreement | SQNR dB |" : "") << " changes |\n";
  os << "|---|---:|---:|---:|---:|" << (labels ? "---:|---:|" : "") << (eval ? "---:|---:|" : "") << "---|\n";
  for (const auto& s : stages) {
    const auto& m = s.metrics;
    os << "| " << s.pass << " | " << m.nodes << " | " << m.params << " | " << m.macs << (m.macs_complete ? "" : "+") << " | "
       << m.file_bytes << " |";
    if (labels) os << " " << (m.evaluated ? pct(*m.top1) : "-") << " | " << (m.evaluated ? pct(*m.top5) : "-") << " |";
    if (eval) {
      if (m.evaluated && s.pass != "input") {
        os << " " << (std::isnan(m.top1_agreement) ? "-" : pct(m.top1_agreement)) << " | " << sqnrText(m.output_sqnr_db)
           << " |";
      } else {
        os << " - | - |";
      }
    }
    os << " " << changeSummary(s) << " |\n";
  }
  if (anyIncompleteMacs(stages))
    os << "\nMACs marked + are lower bounds: some layers' shapes are only known at run time.\n";
  const StageMetrics& fin = stages.back().metrics;
  if (const StageMetrics& in = stages.front().metrics; in.weight_zeros != fin.weight_zeros)
    os << "\nExactly-zero weights: " << zerosText(in, fin) << ".\n";
  if (labels && fin.evaluated && stages.size() > 1)
    os << "\nTop-1 change: " << fin.only_input_right << (fin.only_input_right == 1 ? " sample" : " samples")
       << " only the input model gets right, "
       << fin.only_this_right << " only the output model; exact McNemar " << pValueText(fin.mcnemarP()) << ".\n";
  if (!gates.empty()) {
    os << "\n| gate | value | limit | result |\n|---|---:|---:|---|\n";
    for (const auto& g : gates) {
      auto [value, limit] = gateFigures(g.value, g.gate.limit);
      if (!g.no_value.empty()) value = g.no_value;
      else if (!g.reason.empty()) value += " (" + g.reason + ")";
      os << "| " << g.gate.name << " | " << value << " | " << limit << " | " << (g.passed ? "pass" : "**FAIL**") << " |\n";
    }
  }
  if (!output_written && !output.empty()) os << "\nA gate failed: " << markdownCode(output) << " was not written.\n";
  return os.str();
}

}  // namespace lwc
