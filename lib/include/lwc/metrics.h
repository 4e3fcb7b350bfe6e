// Accuracy and error metrics, accumulated batch by batch (bounded memory).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "lwc/tensor.h"

namespace lwc {

/// Top-1/top-5 accuracy of [N, classes] scores against integer labels.
class AccuracyMeter {
 public:
  /// Adds a batch; scores are float32 [N, C] (or [N, C, 1, 1]); labels one per row.
  /// Throws lwc::Error for a label outside [0, C).
  void add(const Tensor& scores, const std::vector<int64_t>& labels, int64_t first_index = 0);
  int64_t count() const { return count_; }
  int64_t top1Correct() const { return top1_; }
  int64_t top5Correct() const { return top5_; }
  double top1() const { return count_ ? double(top1_) / double(count_) : 0.0; }
  double top5() const { return count_ ? double(top5_) / double(count_) : 0.0; }

 private:
  int64_t count_ = 0, top1_ = 0, top5_ = 0;
};

/// The p-quantile of `v` (0 <= p <= 1), interpolating linearly between neighbouring order
/// statistics: p = 0.5 is the median (the mean of the two middle values for an even count).
/// 0 for an empty `v`.
double percentile(std::vector<double> v, double p);

/// True for class scores as the accuracy meter reads them: a float tensor [N, C] or [N, C, 1, ...]
/// with C >= 2 (an image, a box list or one regression value is not).
bool isClassScores(const Tensor& t);

/// Index of the largest score in each row of [N, C] scores (ties: the lowest index); -1 for a row
/// holding a NaN (no prediction: never a label, and callers count no agreement for it).
std::vector<int64_t> argmaxRows(const Tensor& scores);

/// Exact two-sided McNemar test of two classifiers on the same labelled samples: `only_a` samples
/// only the first gets right, `only_b` only the second. The probability, if both were equally
/// accurate, of a split of the b + c discordant samples at least this uneven: 2 · P(X <= min(b, c)),
/// X ~ Binomial(b + c, 1/2), at most 1 (1 when there are none).
double mcnemarExactP(int64_t only_a, int64_t only_b);

/// A figure for text and Markdown tables: "nan", "inf" or "-inf" (printf writes "-nan" for some
/// NaNs on this platform), else `v` with `digits` digits after the point (`fixed`) or `digits`
/// significant digits (as printf's %.<digits>f and %.<digits>g).
std::string formatFigure(double v, int digits, bool fixed);

/// Compares a test tensor stream with a reference stream of the same shapes.
class ErrorMeter {
 public:
  /// Throws lwc::Error when shapes differ.
  void add(const Tensor& reference, const Tensor& test);
  int64_t elements() const { return n_; }
  double maxAbsDiff() const { return max_abs_; }
  /// Signal-to-quantisation-noise ratio in dB: 10·log10(Σref² / Σ(ref−test)²); +inf when identical.
  double sqnrDb() const;
  /// Cosine similarity of the flattened streams (1 when identical; 1 when both are all zero).
  double cosine() const;

 private:
  int64_t n_ = 0;
  double max_abs_ = 0, sig_ = 0, noise_ = 0, dot_ = 0, ref_sq_ = 0, test_sq_ = 0;
};

}  // namespace lwc
