// Calibration statistics (bounded histograms, exact merging) and the calibrators.
#include <catch2/catch.hpp>

#include <algorithm>

#include <random>

#include "lwc/model_io.h"
#include "lwc/npy.h"
#include "passes/calibration.h"
#include "passes/quantize_static.h"
#include "support/engine_util.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;
using namespace lwc::passes;
using namespace lwc::test;

namespace {
std::vector<float> dyadic(int n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-256, 256);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<float>(d(rng)) / 64.0f * scale;  // exact in binary
  return v;
}
// x [N, 3, 6, 6] -> Conv 3x3 -> c [N, 4, 4, 4] -> Relu -> y.
Model convRelu() {
  Model m = parseGraph(R"(<ir_version: 8, opset_import: ["" : 13]>
g (float[N, 3, 6, 6] x) => (float[N, 4, 4, 4] y) {
  c = Conv (x, w)
  y = Relu (c)
})");
  addConst(m, "w", {4, 3, 3, 3}, 1);
  return m;
}
int64_t histSum(const TensorStats& s) {
  int64_t t = 0;
  for (auto c : s.hist()) t += c;
  return t;
}
}  // namespace

TEST_CASE("tensor statistics keep min, max, counts and a fixed-size histogram", "[calibration]") {
  TensorStats s;
  const std::vector<float> a = {0, 0, 0};
  s.add(a.data(), 3);  // zeros first: no range yet
  CHECK(s.range() == 0);
  const auto b = dyadic(1000, 1, 1.0f);
  s.add(b.data(), 1000);
  CHECK(s.count() == 1003);
  CHECK(histSum(s) == 1003);
  CHECK(s.zeros() >= 3);
  CHECK(s.hist().size() == TensorStats::kBins);
  const double r1 = s.range();
  const auto c = dyadic(1000, 2, 16.0f);  // grows the range: bins merge
  s.add(c.data(), 1000);
  CHECK(s.range() > r1);
  CHECK(histSum(s) == 2003);
  CHECK(s.hist().size() == TensorStats::kBins);
  CHECK(s.max() <= s.range());
  CHECK(-s.min() <= s.range());
}

TEST_CASE("merging statistics equals collecting them in one go", "[calibration]") {
  const auto a = dyadic(5000, 3, 0.5f), b = dyadic(5000, 4, 8.0f);
  TensorStats whole, sa, sb;
  whole.add(a.data(), 5000);
  whole.add(b.data(), 5000);
  sa.add(a.data(), 5000);
  sb.add(b.data(), 5000);
  TensorStats m1 = sa, m2 = sb;
  m1.merge(sb);
  m2.merge(sa);
  for (const auto* m : {&m1, &m2}) {
    CHECK(m->count() == whole.count());
    CHECK(m->zeros() == whole.zeros());
    CHECK(m->min() == whole.min());
    CHECK(m->max() == whole.max());
    CHECK(m->range() == whole.range());
    CHECK(m->hist() == whole.hist());
  }
  const TensorStats back = TensorStats::fromJson(whole.toJson(), "t");
  CHECK(back.hist() == whole.hist());
  CHECK(back.count() == whole.count());
}

TEST_CASE("calibrators clip outliers, minmax does not", "[calibration]") {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> v(200000);
  for (auto& x : v) x = nd(rng);
  v[0] = 60.0f;  // one outlier
  TensorStats s;
  s.add(v.data(), static_cast<int64_t>(v.size()));
  const Range mm = computeRange(s, Calibrator::MinMax, 99.99, false);
  CHECK(mm.hi == Approx(60.0));
  const Range pc = computeRange(s, Calibrator::Percentile, 99.99, true);
  CHECK(pc.hi > 3.0);
  CHECK(pc.hi < 6.0);
  CHECK(pc.lo == -pc.hi);
  for (bool sym : {true, false}) {
    INFO("symmetric " << sym);
    const Range e = computeRange(s, Calibrator::Entropy, 99.99, sym);
    CHECK(e.hi < 20.0);
    CHECK(e.hi > 1.5);
    CHECK(e.lo < -1.0);
    // MSE weighs the outlier's own clipping error: it clips, but far less than entropy.
    const Range m = computeRange(s, Calibrator::Mse, 99.99, sym);
    CHECK(m.hi < 59.0);
    CHECK(m.hi > e.hi);
  }
  // Non-negative data (ReLU-like): ranges start at the data's minimum, 0.
  for (auto& x : v) x = std::max(0.0f, x);
  TensorStats r;
  r.add(v.data(), static_cast<int64_t>(v.size()));
  CHECK(r.zeros() > 90000);
  for (auto c : {Calibrator::MinMax, Calibrator::Percentile, Calibrator::Entropy, Calibrator::Mse}) {
    const Range x = computeRange(r, c, 99.99, false);
    CHECK(x.lo == 0.0);
    CHECK(x.hi > 1.5);
  }
}

TEST_CASE("entropy never clips a tensor that sits away from zero down to a sliver of its values", "[calibration]") {
  // Values clamped to [0.5, 2] (spikes at both ends) and, for int8 activations, to (-inf, 1]: the
  // KL criterion found a near-zero divergence for thresholds just past the lower spike (or below
  // the upper one), which clipped almost everything: [0, 0.502] for the first, 3.8 dB in a model.
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> pos(100000), top(100000);
  for (size_t i = 0; i < pos.size(); ++i) {
    const float x = nd(rng);
    pos[i] = std::clamp(x, 0.5f, 2.0f);
    top[i] = std::min(x, 1.0f);
  }
  TensorStats p, t;
  p.add(pos.data(), static_cast<int64_t>(pos.size()));
  t.add(top.data(), static_cast<int64_t>(top.size()));
  for (bool sym : {false, true}) {
    INFO("symmetric " << sym);
    const Range r = computeRange(p, Calibrator::Entropy, 99.99, sym);
    CHECK(r.hi > 1.9);  // the upper spike (a quarter of the values) is kept
    const Range u = computeRange(t, Calibrator::Entropy, 99.99, sym);
    CHECK(u.hi >= 0.99);  // the spike at 1 (a third of the values) is kept
    // ... and a range of at most 10 % clipped: below the threshold lies at least 90 % of the mass.
    int64_t inside = 0;
    for (float v : top) inside += v >= u.lo && v <= u.hi;
    CHECK(double(inside) >= 0.9 * double(top.size()));
  }
}

TEST_CASE("calibration files are validated", "[calibration]") {
  using Catch::Matchers::Contains;
  auto err = [](const nlohmann::json& j) {
    try {
      CalibrationStats::fromJson(j, "c.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK_THAT(err({{"schema", "other"}}), Contains("not an lwc calibration file"));
  TensorStats s;
  const auto v = dyadic(100, 6, 1.0f);
  s.add(v.data(), 100);
  nlohmann::json t = s.toJson();
  t["count"] = 99;
  CHECK_THAT(err({{"schema", "lwc.calib"}, {"schema_version", 1}, {"tensors", {{"x", t}}}}), Contains("tensor 'x'"));
  t = s.toJson();
  t["range"] = 3.0;
  CHECK_THAT(err({{"schema", "lwc.calib"}, {"schema_version", 1}, {"tensors", {{"x", t}}}}), Contains("power of two"));
  t = s.toJson();
  t["hist"] = {1, 2, 3};
  CHECK_THAT(err({{"schema", "lwc.calib"}, {"schema_version", 1}, {"tensors", {{"x", t}}}}), Contains("array of 2048"));
  // Values of the wrong JSON type are named, not nlohmann's type_error (which escaped as an internal error).
  t = s.toJson();
  t["hist"][5] = "3";
  CHECK_THAT(err({{"schema", "lwc.calib"}, {"schema_version", 1}, {"tensors", {{"x", t}}}}),
             Contains("tensor 'x': histogram entry 5 must be a count (an integer >= 0), not \"3\""));
  t = s.toJson();
  t["count"] = 1.5;
  CHECK_THAT(err({{"schema", "lwc.calib"}, {"schema_version", 1}, {"tensors", {{"x", t}}}}),
             Contains("\"count\" must be a count"));
  t = s.toJson();
  t["hist"][0] = uint64_t(1) << 63;  // above int64's range: was read as a negative count
  CHECK_THAT(err({{"schema", "lwc.calib"}, {"schema_version", 1}, {"tensors", {{"x", t}}}}),
             Contains("histogram entry 0 must be a count"));
  CHECK_THAT(err({{"schema", "lwc.calib"}, {"schema_version", 1}, {"model", 3}, {"tensors", nlohmann::json::object()}}),
             Contains("\"model\" must be a string, not 3"));
  CHECK(err({{"schema", "lwc.calib"}, {"schema_version", 1}, {"tensors", nlohmann::json::object()}}) == "(no error)");
  // Unknown keys (at the top and in a tensor) and values outside what lwc writes were accepted.
  const nlohmann::json ok{{"schema", "lwc.calib"}, {"schema_version", 1}, {"tensors", nlohmann::json::object()}};
  nlohmann::json bad = ok;
  bad["foo"] = 1;
  CHECK_THAT(err(bad), Contains("c.json: foo: unknown key; valid keys: schema, schema_version"));
  t = s.toJson();
  t["foo"] = 1;
  CHECK_THAT(err({{"schema", "lwc.calib"}, {"schema_version", 1}, {"tensors", {{"x", t}}}}),
             Contains("tensor 'x': foo: unknown key"));
  bad = ok;
  bad["act_type"] = "int4";
  CHECK_THAT(err(bad), Contains("\"act_type\" is \"int4\"; expected \"uint8\" or \"int8\""));
  bad = ok;
  bad["shard"] = "3/2";
  CHECK_THAT(err(bad), Contains("\"shard\" is \"3/2\"; expected i/n"));
}

TEST_CASE("a shard is i/n in decimal digits, n up to 2^31 - 1", "[calibration]") {
  CHECK(passes::shardOf("0/1") == std::pair{0, 1});
  CHECK(passes::shardOf("3/4") == std::pair{3, 4});
  CHECK(passes::shardOf("0/2147483647") == std::pair{0, 2147483647});
  for (const char* bad : {"1/1", "4/3", "0/0", "-1/4", "+1/4", " 1/4", "1/4 ", "1 /4", "1/", "/4", "1", "1/4/5", "0x1/4",
                          "0/2147483648", "0/9007199254740993", ""})
    CHECK_FALSE(passes::shardOf(bad));
  CHECK_THROWS_WITH(passes::parseShard("0/9007199254740993", "--shard"),
                    Catch::Matchers::Contains("is not i/n with 0 <= i < n <= 2147483647"));
}

TEST_CASE("statistics collected in shards merge to the statistics of the whole data", "[calibration]") {
  TempDir d;
  writeNpy(d / "x.npy", randomFloat({40, 3, 6, 6}, 9));
  Model m = convRelu();
  DataSpec ds;
  ds.options.path = d / "x.npy";
  ds.batch = 7;  // batches straddle shard boundaries
  const std::vector<std::string> names = {"x", "c", "y"};
  CollectOptions all;
  const CalibrationStats whole = collectStats(m, names, ds, all);
  CHECK(whole.samples == 40);
  CalibrationStats merged;
  for (int i = 0; i < 3; ++i) {
    CollectOptions o;
    o.shard = i;
    o.shards = 3;
    merged.merge(collectStats(m, names, ds, o));
  }
  CHECK(merged.samples == 40);
  for (const auto& n : names) {
    INFO(n);
    CHECK(merged.tensors.at(n).count() == whole.tensors.at(n).count());
    CHECK(merged.tensors.at(n).min() == whole.tensors.at(n).min());
    CHECK(merged.tensors.at(n).max() == whole.tensors.at(n).max());
  }
  CHECK(whole.tensors.at("x").count() == 40 * 3 * 6 * 6);
  CHECK(whole.tensors.at("y").min() == 0.0);
}

TEST_CASE("the calibration batch shrinks for large activations, and the statistics do not depend on it",
          "[calibration]") {
  TempDir d;
  writeNpy(d / "x.npy", randomFloat({40, 3, 6, 6}, 11));
  Model m = convRelu();
  // x (432 bytes) and c (256) live together while the Conv runs; then c and y (256 each).
  CHECK(activationBytesPerSample(m).peak == 432 + 256);
  CHECK(activationBytesPerSample(m).total == 432 + 256 + 256);
  CHECK(calibrationBatch(m, 100, 688 * 5) == 5);
  CHECK(calibrationBatch(m, 100, 688 * 5 + 687) == 5);
  CHECK(calibrationBatch(m, 100, 10) == 1);  // at least one sample
  CHECK(calibrationBatch(m, 3, int64_t{1} << 30) == 3);
  // The histograms merge bin pairs exactly as their range doubles: one sample at a time and all
  // 40 at once give the same statistics, bin for bin.
  const std::vector<std::string> names = {"x", "c", "y"};
  DataSpec one, all;
  one.options.path = all.options.path = d / "x.npy";
  one.batch = 1;
  all.batch = 40;
  const CalibrationStats a = collectStats(m, names, one, {}), b = collectStats(m, names, all, {});
  for (const auto& n : names) {
    INFO(n);
    CHECK(a.tensors.at(n).range() == b.tensors.at(n).range());
    CHECK(a.tensors.at(n).hist() == b.tensors.at(n).hist());
    CHECK(a.tensors.at(n).min() == b.tensors.at(n).min());
    CHECK(a.tensors.at(n).max() == b.tensors.at(n).max());
  }
}
