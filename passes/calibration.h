// Calibration: per-tensor activation statistics with bounded memory, and the calibrators that turn
// them into quantization ranges.
//
// Each observed tensor keeps its running min/max and a 2048-bin histogram over [-R, R], where R is
// a power of two that doubles when a value falls outside (merging bin pairs, which is exact because
// the old bins align with the new ones). Memory is therefore fixed per tensor, whatever the number
// of samples, and statistics from several runs (shards) merge exactly: rebin to the larger R, add.
//
// Calibrators (range [lo, hi] of one tensor):
//   minmax      [min, max]
//   percentile  the p-th percentile (default 99.999) of |x| for symmetric ranges; for asymmetric
//               ones the (100-p)-th and p-th percentiles of x
//   entropy     the clipping minimising KL(P || Q) between the histogram clipped there and its
//               quantization, as TensorRT: a threshold T on |x| with 128 levels for int8 and 255 for
//               non-negative tensors; for signed tensors quantized to uint8, [-T, T] ∩ [min, max] on
//               the signed histogram with 255 levels
//   mse         the clipping of [min, max] (factors 1.0 down to 0.01) minimising the expected squared
//               quantization error over the histogram
#pragma once

#include <optional>

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "lwc/analysis.h"
#include "lwc/pass.h"

namespace lwc::passes {

class TensorStats {
 public:
  static constexpr int kBins = 2048;
  void add(const float* x, int64_t n);
  void merge(const TensorStats& o);
  double min() const { return min_; }
  double max() const { return max_; }
  int64_t count() const { return count_; }
  /// Values exactly 0 (e.g. after ReLU); they are in the histogram too.
  int64_t zeros() const { return zeros_; }
  double range() const { return range_; }
  const std::vector<int64_t>& hist() const { return hist_; }
  nlohmann::json toJson() const;
  static TensorStats fromJson(const nlohmann::json& j, const std::string& where);

 private:
  void growTo(double absmax);
  double min_ = 0, max_ = 0;
  int64_t count_ = 0;
  int64_t zeros_ = 0;
  double range_ = 0;  ///< histogram covers [-range_, range_]; 0 until the first non-zero value
  std::vector<int64_t> hist_;
};

enum class Calibrator { MinMax, Percentile, Entropy, Mse };
Calibrator parseCalibrator(const std::string& s, const std::string& where);
std::string calibratorName(Calibrator c);

struct Range {
  double lo = 0, hi = 0;
};
/// The range a calibrator picks. `symmetric`: the range will be used as [-a, a] (int8 activations).
Range computeRange(const TensorStats& s, Calibrator c, double percentile, bool symmetric);

/// "i/n" with 0 <= i < n as (i, n); nullopt for anything else.
std::optional<std::pair<int, int>> shardOf(const std::string& s);

/// Statistics of many tensors, as saved by --save-calib and merged by --load-calib.
/// A 16-hex-digit digest (FNV-1a, 64 bits) of a graph's nodes (op, domain, inputs, outputs) and
/// initializers (name, type, shape, bytes): equal for the same model after the same cleanup.
std::string graphDigest(const Graph& g);

struct CalibrationStats {
  std::string model;  ///< file name of the model they were collected on
  /// graphDigest of the graph they were collected on ("" in files from before 2026-12-06): statistics of
  /// another model with the same tensor names (lenet5's for lenet300: /fc1/Gemm_output_0, ...) were used
  /// without a word.
  std::string model_digest;
  /// The --act-type they were collected for ("" in files from before 2026-12-05): int8 activations
  /// quantize the tensors before a ReLU that uint8 ones absorb, so each needs its own tensors.
  std::string act_type;
  /// "i/n" for statistics of one shard of the data ("" where unknown or merged).
  std::string shard;
  /// The data they were collected from, before it was split into shards: the data set's
  /// description (its path and the samples taken of it) and a fingerprint of its content ("" in
  /// files from before 2026-12-07 and after merging different data). --load-calib refuses two files of the same data from
  /// different splits (a whole-data file with a shard of it counted those samples twice).
  std::string data;
  int64_t samples = 0;
  std::map<std::string, TensorStats> tensors;
  /// Time this run spent collecting them: 0 for statistics read from files, and not written to
  /// one (a wall-clock figure made two runs' files differ, and --load-calib reported the shards'
  /// summed times as its own).
  double seconds = 0;
  bool loaded = false;  ///< read from a file (--load-calib), not collected in this run

  void merge(const CalibrationStats& o);
  nlohmann::json toJson() const;
  static CalibrationStats fromJson(const nlohmann::json& j, const std::string& where);
  static CalibrationStats load(const std::string& path);
};

struct CollectOptions {
  int64_t max_samples = 0;  ///< 0 = all
  int shard = 0, shards = 1;  ///< take only the samples of this shard (contiguous blocks)
  int threads = 0;
  /// Gets "calibrating: k/n samples" after each batch (a status line); may be empty.
  std::function<void(const std::string&)> status;
};

/// The batch calibration runs: batchWithinActivations (lwc/analysis.h) with a low budget, as the
/// observers' reads and per-node reorders about double the real per-sample growth. The statistics do not depend on the batch (min/max, and
/// histograms whose range doubles by merging bin pairs exactly), so neither does the output file.
int64_t calibrationBatch(const Model& m, int64_t requested, int64_t budget_bytes = int64_t{128} << 20);

/// Runs the float model over the data and collects statistics of `tensors` (value names).
CalibrationStats collectStats(const Model& m, const std::vector<std::string>& tensors, const DataSpec& data,
                              const CollectOptions& opts);

}  // namespace lwc::passes
