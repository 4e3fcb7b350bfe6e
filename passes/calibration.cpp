#include "passes/calibration.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "lwc/engine.h"
#include "lwc/graph_edit.h"
#include "lwc/json_text.h"

namespace lwc::passes {

using nlohmann::json;

// ------------------------------------------------------------------ TensorStats

void TensorStats::growTo(double absmax) {
  if (range_ == 0) {
    int e = 0;
    std::frexp(absmax, &e);  // absmax < 2^e
    range_ = std::ldexp(1.0, e);
    if (range_ / 2 >= absmax) range_ /= 2;  // the smallest power of two >= absmax, as growth keeps it
    const int64_t zeros = count_;  // values seen so far were all zero (they are not yet binned)
    hist_.assign(kBins, 0);
    hist_[kBins / 2] = zeros;
    return;
  }
  while (absmax > range_) {
    std::vector<int64_t> h(kBins, 0);
    for (int j = 0; j < kBins; ++j) h[kBins / 4 + j / 2] += hist_[j];
    hist_ = std::move(h);
    range_ *= 2;
  }
}

void TensorStats::add(const float* x, int64_t n) {
  if (n <= 0) return;
  float mn = std::numeric_limits<float>::infinity(), mx = -mn;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) fail("calibration: a tensor contains NaN; check the model and the data's preprocessing");
    zeros_ += x[i] == 0.0f;
    mn = std::min(mn, x[i]);
    mx = std::max(mx, x[i]);
  }
  if (count_ == 0) {
    min_ = mn;
    max_ = mx;
  } else {
    min_ = std::min<double>(min_, mn);
    max_ = std::max<double>(max_, mx);
  }
  const double am = std::max(std::fabs(double(mn)), std::fabs(double(mx)));
  if (am > 0 && !std::isinf(am)) growTo(am);
  count_ += n;
  if (range_ == 0) return;  // all zero so far: counted, binned when a range exists
  const double k = kBins / (2 * range_);
  for (int64_t i = 0; i < n; ++i) {
    // Clamped as a double: an infinity (an activation that overflowed; the range check refuses it
    // later) cast to int64 was undefined behaviour, and put +inf in the lowest bin.
    const double pos = std::clamp((double(x[i]) + range_) * k, 0.0, double(kBins - 1));
    ++hist_[static_cast<size_t>(pos)];
  }
}

void TensorStats::merge(const TensorStats& o) {
  if (o.count_ == 0) return;
  if (count_ == 0) {
    *this = o;
    return;
  }
  min_ = std::min(min_, o.min_);
  max_ = std::max(max_, o.max_);
  TensorStats b = o;
  const double r = std::max(range_, b.range_);
  if (r > 0) {
    // Zero-range stats hold only zeros: growTo bins them at the centre.
    if (range_ == 0) {
      const int64_t c = count_;
      growTo(r);
      hist_[kBins / 2] = c;
    } else {
      growTo(r);
    }
    if (b.range_ == 0) {
      b.growTo(r);
      b.hist_[kBins / 2] = b.count_;
    } else {
      b.growTo(r);
    }
    for (int j = 0; j < kBins; ++j) hist_[static_cast<size_t>(j)] += b.hist_[static_cast<size_t>(j)];
  }
  count_ += o.count_;
  zeros_ += o.zeros_;
}

json TensorStats::toJson() const {
  // Dense counts: the same size whatever the number of samples (memory and file stay bounded).
  return json{{"min", min_}, {"max", max_}, {"count", count_}, {"zeros", zeros_}, {"range", range_}, {"bins", kBins},
              {"hist", hist_}};
}

namespace {

// Typed fields of a calibration file, each error naming the key and what it must hold.
const json& field(const json& j, const char* key, const std::string& where) {
  if (!j.is_object()) fail(where, ": must be a JSON object");
  const auto it = j.find(key);
  if (it == j.end()) fail(where, ": missing \"", key, "\"");
  return *it;
}
double numberField(const json& j, const char* key, const std::string& where) {
  const json& v = field(j, key, where);
  if (!v.is_number()) fail(where, ": \"", key, "\" must be a number, not ", briefJson(v));
  return v.get<double>();
}
int64_t countField(const json& v, const std::string& what, const std::string& where) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) ||
      v.get<int64_t>() < 0)
    fail(where, ": ", what, " must be a count (an integer >= 0), not ", briefJson(v));
  return v.get<int64_t>();
}

}  // namespace

namespace {
// Unknown keys are refused with the valid ones listed, as in every other JSON lwc reads.
void onlyKeys(const json& j, const std::string& where, std::initializer_list<const char*> keys) {
  if (!j.is_object()) return;
  for (const auto& [k, v] : j.items())
    if (std::none_of(keys.begin(), keys.end(), [&](const char* x) { return k == x; })) {
      std::string list;
      for (const char* x : keys) list += (list.empty() ? "" : ", ") + std::string(x);
      fail(where, ": ", k, ": unknown key; valid keys: ", list);
    }
}
}  // namespace

TensorStats TensorStats::fromJson(const json& j, const std::string& where) {
  onlyKeys(j, where, {"min", "max", "count", "zeros", "range", "bins", "hist"});
  TensorStats s;
  s.min_ = numberField(j, "min", where);
  s.max_ = numberField(j, "max", where);
  s.count_ = countField(field(j, "count", where), "\"count\"", where);
  s.zeros_ = j.contains("zeros") ? countField(j["zeros"], "\"zeros\"", where) : 0;
  if (s.zeros_ > s.count_) fail(where, ": zeros exceeds count");
  s.range_ = numberField(j, "range", where);
  const int64_t bins = countField(field(j, "bins", where), "\"bins\"", where);
  if (bins != kBins) fail(where, ": histogram has ", bins, " bins, expected ", kBins);
  if (!std::isfinite(s.min_) || !std::isfinite(s.max_) || !std::isfinite(s.range_) || s.range_ < 0 || s.min_ > s.max_)
    fail(where, ": inconsistent statistics");
  if (s.range_ > 0) {
    int e = 0;
    if (std::frexp(s.range_, &e) != 0.5) fail(where, ": range ", s.range_, " is not a power of two");
    const json& h = field(j, "hist", where);
    if (!h.is_array() || h.size() != static_cast<size_t>(kBins))
      fail(where, ": histogram must be an array of ", kBins, " counts");
    s.hist_.assign(kBins, 0);
    int64_t total = 0;
    for (int b = 0; b < kBins; ++b) {
      const int64_t c = countField(h[static_cast<size_t>(b)], "histogram entry " + std::to_string(b), where);
      if (c > std::numeric_limits<int64_t>::max() - total) fail(where, ": histogram counts overflow");
      s.hist_[static_cast<size_t>(b)] = c;
      total += c;
    }
    if (total != s.count_) fail(where, ": histogram holds ", total, " values, count says ", s.count_);
  }
  return s;
}

// ------------------------------------------------------------------ calibrators

Calibrator parseCalibrator(const std::string& s, const std::string& where) {
  if (s == "minmax") return Calibrator::MinMax;
  if (s == "percentile") return Calibrator::Percentile;
  if (s == "entropy") return Calibrator::Entropy;
  if (s == "mse") return Calibrator::Mse;
  fail(where, ": unknown calibrator \"", s, "\"; valid: minmax, percentile, entropy, mse");
}

std::string calibratorName(Calibrator c) {
  switch (c) {
    case Calibrator::MinMax: return "minmax";
    case Calibrator::Percentile: return "percentile";
    case Calibrator::Entropy: return "entropy";
    case Calibrator::Mse: return "mse";
  }
  return "?";
}

namespace {

constexpr int kHalf = TensorStats::kBins / 2;

// |x| histogram: bin k covers [k·w, (k+1)·w), w = range / kHalf.
std::vector<double> foldAbs(const TensorStats& s) {
  std::vector<double> a(kHalf, 0.0);
  const auto& h = s.hist();
  for (int k = 0; k < kHalf; ++k)
    a[static_cast<size_t>(k)] = double(h[static_cast<size_t>(kHalf + k)] + h[static_cast<size_t>(kHalf - 1 - k)]);
  return a;
}

Range clampTo(const TensorStats& s, double t, bool symmetric) {
  const double am = std::max(std::fabs(s.min()), std::fabs(s.max()));
  t = std::min(t, am);
  if (symmetric) return {-t, t};
  return {std::max(s.min(), -t), std::min(s.max(), t)};
}

double klDivergence(const std::vector<double>& p, const std::vector<double>& q) {
  double sp = 0, sq = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    sp += p[i];
    sq += q[i];
  }
  if (sp <= 0 || sq <= 0) return std::numeric_limits<double>::infinity();
  double kl = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] <= 0) continue;
    const double pi = p[i] / sp;
    const double qi = q[i] > 0 ? q[i] / sq : 1e-12;  // smoothing: a bin P has and Q lost
    kl += pi * std::log(pi / qi);
  }
  return kl;
}

// KL divergence of `bins` clipped to [b0, b1) (outliers added to the edge bins) from its quantization
// to `levels` levels, which is built from the unclipped bins (TensorRT's formulation: clipping shows
// up as the outlier mass at the edges that Q does not have).
double clippedKl(const std::vector<double>& bins, int b0, int b1, int levels) {
  const int n = b1 - b0;
  std::vector<double> p(bins.begin() + b0, bins.begin() + b1);
  for (int k = 0; k < b0; ++k) p.front() += bins[static_cast<size_t>(k)];
  for (size_t k = static_cast<size_t>(b1); k < bins.size(); ++k) p.back() += bins[k];
  std::vector<double> q(static_cast<size_t>(n), 0.0);
  for (int j = 0; j < levels; ++j) {
    const int c0 = static_cast<int>(int64_t(j) * n / levels), c1 = static_cast<int>(int64_t(j + 1) * n / levels);
    double sum = 0;
    int nonzero = 0;
    for (int k = c0; k < c1; ++k) {
      sum += bins[static_cast<size_t>(b0 + k)];
      nonzero += bins[static_cast<size_t>(b0 + k)] > 0;
    }
    if (nonzero == 0) continue;
    for (int k = c0; k < c1; ++k)
      if (bins[static_cast<size_t>(b0 + k)] > 0) q[static_cast<size_t>(k)] = sum / nonzero;
  }
  return klDivergence(p, q);
}

// A threshold may clip at most this fraction of the (non-zero) values. TensorRT's KL criterion
// does not see what a clipping loses once the kept part is a few occupied bins: the clipped mass
// folds into the edge bin, Q has its mass there too, and the divergence is near zero. Values
// clamped to [0.5, 2] got the range [0, 0.502] (every value 0.5 after quantization, 3.8 dB), a
// GlobalMaxPool's outputs in [2.5, 7.0] the range [0, 2.6]. On the testdata models the thresholds
// chosen clip at most 2 % of the values, so the bound changes nothing there.
constexpr double kMaxClippedFraction = 0.10;

// Symmetric threshold T over the |x| histogram (int8 activations, or non-negative tensors).
double entropyThreshold(const TensorStats& s) {
  // Exact zeros (ReLU's spike) are represented exactly whatever the range; left in, they dominate the
  // first chunk's smearing and push the threshold down.
  std::vector<double> a = foldAbs(s);
  a[0] = std::max(0.0, a[0] - double(s.zeros()));
  const int levels = s.min() >= 0 ? 255 : 128;
  const double w = s.range() / kHalf;
  int last = kHalf;
  while (last > 0 && a[static_cast<size_t>(last - 1)] == 0) --last;
  if (last <= levels) return last * w;  // fewer occupied bins than levels: no clipping needed
  double best = std::numeric_limits<double>::infinity();
  int best_i = last;
  double total = 0;
  for (int k = 0; k < last; ++k) total += a[static_cast<size_t>(k)];
  // clipped[i]: the mass at or above bin i.
  std::vector<double> clipped(static_cast<size_t>(last) + 1, 0.0);
  for (int k = last - 1; k >= 0; --k) clipped[static_cast<size_t>(k)] = clipped[static_cast<size_t>(k) + 1] + a[static_cast<size_t>(k)];
  for (int i = levels; i <= last; ++i) {
    if (clipped[static_cast<size_t>(i)] > kMaxClippedFraction * total) continue;
    const double kl = clippedKl(a, 0, i, levels);
    if (kl < best) {
      best = kl;
      best_i = i;
    }
  }
  return best_i * w;
}

// Asymmetric range for signed tensors quantized to uint8: the clipping [-T, T] ∩ [min, max] whose
// 255-level quantization of the signed histogram diverges least.
Range entropyRangeSigned(const TensorStats& s) {
  std::vector<double> h(s.hist().begin(), s.hist().end());
  const int nb = TensorStats::kBins;
  h[static_cast<size_t>(nb / 2)] = std::max(0.0, h[static_cast<size_t>(nb / 2)] - double(s.zeros()));
  const double w = 2 * s.range() / nb;
  int first = 0, last = nb;
  while (first < nb && h[static_cast<size_t>(first)] == 0) ++first;
  while (last > first && h[static_cast<size_t>(last - 1)] == 0) --last;
  constexpr int levels = 255;
  Range best_r{s.min(), s.max()};
  if (last - first <= levels) return best_r;
  double best = std::numeric_limits<double>::infinity();
  double total = 0;
  for (int k = first; k < last; ++k) total += h[static_cast<size_t>(k)];
  for (int i = 1; i <= nb / 2; ++i) {
    const int b0 = std::max(first, nb / 2 - i), b1 = std::min(last, nb / 2 + i);
    if (b1 - b0 < levels) continue;
    double kept = 0;
    for (int k = b0; k < b1; ++k) kept += h[static_cast<size_t>(k)];
    if (total - kept > kMaxClippedFraction * total) continue;
    const double kl = clippedKl(h, b0, b1, levels);
    if (kl < best) {
      best = kl;
      best_r = {std::max(s.min(), -s.range() + b0 * w), std::min(s.max(), -s.range() + b1 * w)};
    }
    if (b0 == first && b1 == last) break;  // larger thresholds clip nothing more
  }
  return best_r;
}

double quantMse(const TensorStats& s, double lo, double hi, bool symmetric) {
  double scale, zp, qmin, qmax;
  if (symmetric) {
    const double a = std::max(std::fabs(lo), std::fabs(hi));
    scale = a / 127.0;
    zp = 0;
    qmin = -127;
    qmax = 127;
  } else {
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
    scale = (hi - lo) / 255.0;
    zp = std::round(-lo / scale);
    qmin = 0;
    qmax = 255;
  }
  if (!(scale > 0)) return std::numeric_limits<double>::infinity();
  const double w = 2 * s.range() / TensorStats::kBins;
  double err = 0;
  for (int j = 0; j < TensorStats::kBins; ++j) {
    const int64_t n = s.hist()[static_cast<size_t>(j)];
    if (!n) continue;
    const double c = -s.range() + (j + 0.5) * w;
    const double q = std::clamp(std::nearbyint(c / scale) + zp, qmin, qmax);
    const double d = c - (q - zp) * scale;
    err += double(n) * d * d;
  }
  return err;
}

}  // namespace

Range computeRange(const TensorStats& s, Calibrator c, double percentile, bool symmetric) {
  if (s.count() == 0) return {0, 0};
  Range mm{s.min(), s.max()};
  if (symmetric) {
    const double a = std::max(std::fabs(s.min()), std::fabs(s.max()));
    mm = {-a, a};
  }
  if (c == Calibrator::MinMax || s.range() == 0) return mm;
  const auto& h = s.hist();
  const double w = 2 * s.range() / TensorStats::kBins;
  switch (c) {
    case Calibrator::MinMax: return mm;
    case Calibrator::Percentile: {
      const double frac = percentile / 100.0;
      if (symmetric || s.min() >= 0) {
        const auto a = foldAbs(s);
        const double target = frac * double(s.count());
        double cum = 0;
        int k = 0;
        for (; k < kHalf; ++k) {
          cum += a[static_cast<size_t>(k)];
          if (cum >= target) break;
        }
        return clampTo(s, (k + 1) * w, symmetric);
      }
      const double tail = (1.0 - frac) * double(s.count());
      double cum = 0;
      int lo_bin = 0;
      for (; lo_bin < TensorStats::kBins; ++lo_bin) {
        cum += double(h[static_cast<size_t>(lo_bin)]);
        if (cum > tail) break;
      }
      cum = 0;
      int hi_bin = TensorStats::kBins - 1;
      for (; hi_bin >= 0; --hi_bin) {
        cum += double(h[static_cast<size_t>(hi_bin)]);
        if (cum > tail) break;
      }
      return {std::max(s.min(), -s.range() + lo_bin * w), std::min(s.max(), -s.range() + (hi_bin + 1) * w)};
    }
    case Calibrator::Entropy:
      if (!symmetric && s.min() < 0) return entropyRangeSigned(s);
      return clampTo(s, entropyThreshold(s), symmetric);
    case Calibrator::Mse: {
      double best = std::numeric_limits<double>::infinity();
      Range r = mm;
      for (int k = 0; k < 100; ++k) {
        const double f = std::pow(0.01, k / 99.0);  // 1 down to 0.01, geometric
        const double e = quantMse(s, mm.lo * f, mm.hi * f, symmetric);
        if (e < best) {
          best = e;
          r = {mm.lo * f, mm.hi * f};
        }
      }
      return r;
    }
  }
  return mm;
}

// ------------------------------------------------------------------ CalibrationStats

std::optional<std::pair<int, int>> shardOf(const std::string& s) {
  // Decimal digits only, as the schema's pattern: a stream read also took "+1/4" and " 1/4".
  const auto slash = s.find('/');
  if (slash == std::string::npos) return std::nullopt;
  auto number = [](std::string_view d) -> std::optional<int> {
    int v = -1;
    if (d.empty() || d.find_first_not_of("0123456789") != std::string_view::npos) return std::nullopt;
    const auto [end, ec] = std::from_chars(d.data(), d.data() + d.size(), v);
    if (ec != std::errc() || end != d.data() + d.size()) return std::nullopt;
    return v;
  };
  const auto i = number(std::string_view(s).substr(0, slash)), n = number(std::string_view(s).substr(slash + 1));
  if (!i || !n || *n < 1 || *i >= *n) return std::nullopt;
  return std::pair{*i, *n};
}

namespace {
// FNV-1a over bytes, 64 bits, printed as 16 hex digits: the model digest and the data fingerprint.
struct Fnv1a {
  uint64_t h = 1469598103934665603ull;
  void bytes(const void* p, size_t n) {
    const auto* c = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 1099511628211ull;
  }
  // A string preceded by its length, so that two strings never run together.
  void str(const std::string& s) {
    const uint64_t n = s.size();
    bytes(&n, sizeof n);
    bytes(s.data(), s.size());
  }
  std::string hex() const {
    char out[17];
    std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
    return out;
  }
};

// What identifies calibration data across machines, whatever path it is read from: for a file, its
// size and its first and last 64 KiB; for a folder, the relative name and size of every file in it
// (in name order). Equal for copies of the same data, different for other data of the same shape
// and count (which the description alone could not tell apart: the same folder name on two
// machines). "" where the path cannot be read.
std::string dataFingerprint(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  Fnv1a f;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    std::vector<std::pair<std::string, uintmax_t>> files;
    for (auto it = fs::recursive_directory_iterator(path, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
      if (it->is_regular_file(ec)) files.emplace_back(fs::relative(it->path(), path, ec).generic_string(), it->file_size(ec));
    if (ec) return "";
    std::sort(files.begin(), files.end());
    for (const auto& [name, size] : files) {
      f.bytes(name.data(), name.size() + 1);
      f.bytes(&size, sizeof size);
    }
  } else {
    const uintmax_t size = fs::file_size(path, ec);
    std::ifstream in(path, std::ios::binary);
    if (ec || !in) return "";
    f.bytes(&size, sizeof size);
    constexpr uintmax_t kEdge = 64 << 10;
    std::vector<char> buf(static_cast<size_t>(std::min(size, kEdge)));
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    f.bytes(buf.data(), static_cast<size_t>(in.gcount()));
    if (size > kEdge) {
      in.seekg(static_cast<std::streamoff>(size - std::min(size - kEdge, kEdge)));
      in.read(buf.data(), static_cast<std::streamsize>(std::min(size - kEdge, kEdge)));
      f.bytes(buf.data(), static_cast<size_t>(in.gcount()));
    }
  }
  return f.hex();
}
}  // namespace

std::string graphDigest(const Graph& g) {
  Fnv1a f;
  for (const Node& n : g.nodes) {
    f.str(n.op_type);
    f.str(n.domain);
    for (const auto& i : n.inputs) f.str(i);
    f.str("->");
    for (const auto& o : n.outputs) f.str(o);
  }
  for (const auto& [name, t] : g.initializers.items()) {
    f.str(name);
    const auto d = static_cast<int>(t.dtype());
    f.bytes(&d, sizeof d);
    for (int64_t x : t.shape()) f.bytes(&x, sizeof x);
    if (t.numel() > 0) f.bytes(t.raw(), t.nbytes());
  }
  return f.hex();
}

void CalibrationStats::merge(const CalibrationStats& o) {
  if (model.empty()) model = o.model;
  if (model_digest.empty()) model_digest = o.model_digest;
  const bool first = samples == 0 && tensors.empty();
  shard = first ? o.shard : "";  // one shard's statistics keep its name
  data = first || data == o.data ? o.data : "";
  if (act_type.empty()) act_type = o.act_type;
  else if (!o.act_type.empty() && o.act_type != act_type) act_type = "mixed";
  samples += o.samples;
  seconds += o.seconds;
  loaded = loaded || o.loaded;
  for (const auto& [name, s] : o.tensors) tensors[name].merge(s);
}

json CalibrationStats::toJson() const {
  json t = json::object();
  for (const auto& [name, s] : tensors) t[name] = s.toJson();
  json j{{"schema", "lwc.calib"}, {"schema_version", 1}, {"model", model}, {"samples", samples}, {"tensors", t}};
  if (!act_type.empty()) j["act_type"] = act_type;
  if (!shard.empty()) j["shard"] = shard;
  if (!data.empty()) j["data"] = data;
  if (!model_digest.empty()) j["model_digest"] = model_digest;
  return j;
}

CalibrationStats CalibrationStats::fromJson(const json& j, const std::string& where) {
  const auto schema = j.is_object() ? j.find("schema") : j.end();
  if (!j.is_object() || schema == j.end() || *schema != "lwc.calib")
    fail(where, ": not an lwc calibration file (schema lwc.calib); write one with --save-calib or lwc calibrate");
  const auto version = j.find("schema_version");
  if (version == j.end() || *version != 1)
    fail(where, ": unsupported schema_version ", version == j.end() ? std::string("(none)") : briefJson(*version),
         "; this lwc reads 1");
  onlyKeys(j, where, {"schema", "schema_version", "model", "model_digest", "act_type", "shard", "data", "samples", "seconds", "tensors"});
  CalibrationStats c;
  if (j.contains("model")) {
    if (!j["model"].is_string()) fail(where, ": \"model\" must be a string, not ", briefJson(j["model"]));
    c.model = j["model"].get<std::string>();
  }
  if (j.contains("model_digest")) {
    if (!j["model_digest"].is_string()) fail(where, ": \"model_digest\" must be a string, not ", briefJson(j["model_digest"]));
    c.model_digest = j["model_digest"].get<std::string>();
  }
  if (j.contains("shard")) {
    if (!j["shard"].is_string()) fail(where, ": \"shard\" must be a string, not ", briefJson(j["shard"]));
    c.shard = j["shard"].get<std::string>();
    if (!shardOf(c.shard)) fail(where, ": \"shard\" is \"", c.shard, "\"; expected i/n with 0 <= i < n <= 2147483647");
  }
  if (j.contains("act_type")) {
    if (!j["act_type"].is_string()) fail(where, ": \"act_type\" must be a string, not ", briefJson(j["act_type"]));
    c.act_type = j["act_type"].get<std::string>();
    if (c.act_type != "uint8" && c.act_type != "int8")
      fail(where, ": \"act_type\" is \"", c.act_type, "\"; expected \"uint8\" or \"int8\"");
  }
  if (j.contains("data")) {
    if (!j["data"].is_string()) fail(where, ": \"data\" must be a string, not ", briefJson(j["data"]));
    c.data = j["data"].get<std::string>();
  }
  c.samples = j.contains("samples") ? countField(j["samples"], "\"samples\"", where) : 0;
  if (j.contains("seconds")) numberField(j, "seconds", where);  // files before 2026-12-05: checked, not used
  c.loaded = true;
  if (!j.contains("tensors") || !j["tensors"].is_object()) fail(where, ": missing \"tensors\"");
  for (const auto& [name, s] : j["tensors"].items()) c.tensors[name] = TensorStats::fromJson(s, where + ": tensor '" + name + "'");
  return c;
}

CalibrationStats CalibrationStats::load(const std::string& path) {
  return fromJson(readJsonFile(path, "a calibration file (lwc.calib JSON, from lwc calibrate or --save-calib)"), path);
}

// ------------------------------------------------------------------ collection

namespace {
Tensor sliceRows(const Tensor& t, int64_t begin, int64_t end) {
  Shape s = t.shape();
  const int64_t row = t.numel() / std::max<int64_t>(s[0], 1);
  s[0] = end - begin;
  Tensor r = Tensor::uninitialized(t.dtype(), s);
  const size_t es = dtypeSize(t.dtype());
  std::memcpy(r.raw(), static_cast<const uint8_t*>(t.raw()) + static_cast<size_t>(begin * row) * es,
              static_cast<size_t>((end - begin) * row) * es);
  return r;
}
}  // namespace

int64_t calibrationBatch(const Model& m, int64_t requested, int64_t budget_bytes) {
  return batchWithin(activationBytesPerSample(m).peak, requested, budget_bytes);
}

CalibrationStats collectStats(const Model& m, const std::vector<std::string>& tensors, const DataSpec& data,
                              const CollectOptions& opts) {
  const auto t0 = std::chrono::steady_clock::now();
  DataOptions o = data.options;
  fitToModel(o, m);
  capSamples(o, opts.max_samples, kCalibSamplesHint);
  auto ds = openDataset(o);
  const int64_t n = ds->size();
  if (n == 0) fail(data.origin, ": ", o.path.string(), ": no calibration samples");
  if (opts.shards < 1 || opts.shard < 0 || opts.shard >= opts.shards)
    fail("shard ", opts.shard, "/", opts.shards, ": expected i/n with 0 <= i < n");
  const int64_t begin = n * opts.shard / opts.shards, end = n * (opts.shard + 1) / opts.shards;
  if (begin == end) fail(data.origin, ": shard ", opts.shard, "/", opts.shards, " of ", n, " samples is empty; split them into at most ", n, " shards");

  CalibrationStats cs;
  cs.model = m.source.filename().string();
  cs.data = ds->describe();
  if (const std::string f = dataFingerprint(o.path); !f.empty()) cs.data += " (content " + f + ")";
  const std::set<std::string> wanted(tensors.begin(), tensors.end());
  for (const auto& t : tensors) cs.tensors[t];
  engine::SessionOptions so;
  so.observable = true;
  so.threads = opts.threads;
  engine::Session s(m, so);
  const std::string in_name = s.inputNames().at(0);
  auto observe = [&](const std::string& name, const Tensor& v) {
    if (v.dtype() != DType::Float32 || !wanted.count(name)) return;
    try {
      cs.tensors[name].add(v.data<float>(), v.numel());
    } catch (const Error& e) {  // name the tensor and the node that makes it
      const int p = producerIndex(m.graph, name);
      fail(e.what(), " (tensor '", name, "'", p >= 0 ? ", the output of " + m.graph.nodes[size_t(p)].describe() : std::string(),
           ")");
    }
  };
  // Large inputs at the default batch of 100 took gigabytes (torchvision resnet50: 64 samples
  // peaked at 1.4 GB, about 15 MB of activations per sample); the statistics do not depend on it.
  const int64_t batch = calibrationBatch(m, data.batch);
  while (auto b = ds->next(batch)) {
    const int64_t bn = b->inputs.dim(0), first = b->first_index;
    const int64_t lo = std::max(begin, first), hi = std::min(end, first + bn);
    if (lo >= hi) continue;
    Tensor x = lo == first && hi == first + bn ? b->inputs : sliceRows(b->inputs, lo - first, hi - first);
    observe(in_name, x);
    s.run({{in_name, x}}, observe);
    cs.samples += hi - lo;
    if (opts.status) opts.status("calibrating: " + std::to_string(cs.samples) + "/" + std::to_string(end - begin) + " samples");
  }
  cs.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return cs;
}

}  // namespace lwc::passes
