#include "lwc/metrics.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

namespace lwc {

std::string formatFigure(double v, int digits, bool fixed) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  std::ostringstream os;
  if (fixed) os << std::fixed;
  os << std::setprecision(digits) << v;
  return os.str();
}

namespace {
// Rows of a [N, C, (1, 1)] score tensor as float values.
void checkScores(const Tensor& s, int64_t& n, int64_t& c) {
  if (s.rank() < 2) fail("model output has shape ", shapeStr(s.shape()), "; expected [N, classes] scores");
  n = s.dim(0);
  c = s.numel() / std::max<int64_t>(n, 1);
  for (size_t i = 2; i < s.rank(); ++i)
    if (s.dim(i) != 1) fail("model output has shape ", shapeStr(s.shape()), "; expected [N, classes] scores");
}

// A row holding a NaN score is no prediction (every comparison with NaN is false).
bool hasNan(const float* row, int64_t c) {
  return std::any_of(row, row + c, [](float v) { return std::isnan(v); });
}
}  // namespace

bool isClassScores(const Tensor& t) {
  if (t.rank() < 2 || t.dim(1) < 2 || !isFloat(t.dtype())) return false;
  for (size_t i = 2; i < t.rank(); ++i)
    if (t.dim(i) != 1) return false;
  return true;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double idx = p * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(idx);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

std::vector<int64_t> argmaxRows(const Tensor& scores) {
  int64_t n, c;
  checkScores(scores, n, c);
  const Tensor f = scores.dtype() == DType::Float32 ? scores : scores.cast(DType::Float32);
  std::vector<int64_t> r(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = f.data<float>() + i * c;
    r[i] = hasNan(row, c) ? -1 : std::max_element(row, row + c) - row;
  }
  return r;
}

double mcnemarExactP(int64_t only_a, int64_t only_b) {
  if (only_a < 0 || only_b < 0) fail("mcnemarExactP: negative counts ", only_a, ", ", only_b);
  const int64_t n = only_a + only_b, k = std::min(only_a, only_b);
  if (n == 0) return 1.0;
  // Σ_{i<=k} C(n, i) / 2^n, each term in log space (n may be in the tens of thousands).
  const double log_half_n = double(n) * std::log(0.5), lg_n1 = std::lgamma(double(n) + 1.0);
  double tail = 0;
  for (int64_t i = 0; i <= k; ++i)
    tail += std::exp(lg_n1 - std::lgamma(double(i) + 1.0) - std::lgamma(double(n - i) + 1.0) + log_half_n);
  return std::min(1.0, 2.0 * tail);
}

void AccuracyMeter::add(const Tensor& scores, const std::vector<int64_t>& labels, int64_t first_index) {
  int64_t n, c;
  checkScores(scores, n, c);
  if (static_cast<int64_t>(labels.size()) != n)
    throw InternalError("accuracy: " + std::to_string(labels.size()) + " labels for " + std::to_string(n) + " rows");
  const Tensor f = scores.dtype() == DType::Float32 ? scores : scores.cast(DType::Float32);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t y = labels[i];
    if (y < 0 || y >= c)
      fail("label ", y, " of sample ", first_index + i, " is outside the model's ", c, " classes");
    const float* row = f.data<float>() + i * c;
    // A row with a NaN score is no prediction: wrong at top-1 and top-5 (every comparison with NaN
    // is false, so the rank below put the label first and counted it right).
    if (hasNan(row, c)) continue;
    // rank of the true class: number of classes scoring strictly higher (ties favour the label
    // only if it comes first, as argmax does)
    int64_t higher = 0;
    for (int64_t k = 0; k < c; ++k) higher += row[k] > row[y] || (row[k] == row[y] && k < y);
    top1_ += higher == 0;
    top5_ += higher < 5;
  }
  count_ += n;
}

void ErrorMeter::add(const Tensor& reference, const Tensor& test) {
  if (reference.shape() != test.shape())
    fail("shapes differ: ", shapeStr(reference.shape()), " vs ", shapeStr(test.shape()));
  for (int64_t i = 0; i < reference.numel(); ++i) {
    const double a = reference.at(i), b = test.at(i);
    // Equal infinities do not differ (inf − inf would be a NaN difference) and add nothing to the
    // sums (inf² would make the SQNR of otherwise different outputs inf); they are counted. A NaN
    // differs from everything, itself too: outputs that hold NaN are never reported identical.
    if (a == b && std::isinf(a)) continue;
    const double d = a - b;
    // NaN (in either tensor) sticks: std::max would drop it and report 0 for a NaN output.
    if (std::isnan(d) || std::fabs(d) > max_abs_) max_abs_ = std::fabs(d);
    sig_ += a * a;
    noise_ += d * d;
    dot_ += a * b;
    ref_sq_ += a * a;
    test_sq_ += b * b;
  }
  n_ += reference.numel();
}

double ErrorMeter::sqnrDb() const {
  if (noise_ == 0) return std::numeric_limits<double>::infinity();
  // An infinity against a number: infinitely noisy, whatever the signal (inf / inf was NaN).
  if (std::isinf(noise_)) return -std::numeric_limits<double>::infinity();
  if (sig_ == 0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(sig_ / noise_);
}

double ErrorMeter::cosine() const {
  if (ref_sq_ == 0 && test_sq_ == 0) return 1.0;
  if (ref_sq_ == 0 || test_sq_ == 0) return 0.0;
  return dot_ / (std::sqrt(ref_sq_) * std::sqrt(test_sq_));
}

}  // namespace lwc
