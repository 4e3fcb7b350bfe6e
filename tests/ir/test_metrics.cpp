#include <catch2/catch.hpp>
#include <cmath>

#include "lwc/metrics.h"
#include "lwc/status.h"

using namespace lwc;

TEST_CASE("accuracy meter", "[metrics]") {
  AccuracyMeter m;
  // 3 samples x 6 classes
  Tensor s = Tensor::fromVector<float>({3, 6}, {0.1f, 0.9f, 0.0f, 0.0f, 0.0f, 0.0f,   // argmax 1
                                                 5, 4, 3, 2, 1, 0,                     // argmax 0
                                                 0, 1, 2, 3, 4, 5});                   // argmax 5
  m.add(s, {1, 5, 0}, 0);
  CHECK(m.count() == 3);
  CHECK(m.top1Correct() == 1);  // only the first
  CHECK(m.top5Correct() == 1);  // label 5 of row 2 ranks 6th, label 0 of row 3 ranks 6th
  m.add(s, {1, 4, 1});
  CHECK(m.top5Correct() == 1 + 3);
  CHECK(m.top1() == Approx(2.0 / 6));
  CHECK(argmaxRows(s) == std::vector<int64_t>{1, 0, 5});
  CHECK_THROWS_WITH(m.add(s, {1, 6, 0}, 100), Catch::Contains("label 6 of sample 101"));
}

TEST_CASE("error meter", "[metrics]") {
  ErrorMeter same;
  Tensor a = Tensor::fromVector<float>({4}, {1, -2, 3, 4});
  same.add(a, a);
  CHECK(std::isinf(same.sqnrDb()));
  CHECK(same.sqnrDb() > 0);
  CHECK(same.cosine() == Approx(1.0));
  CHECK(same.maxAbsDiff() == 0.0);
  ErrorMeter e;
  Tensor b = Tensor::fromVector<float>({4}, {1, -2, 3, 5});
  e.add(a, b);
  // signal 1+4+9+16 = 30, noise 1 -> 10*log10(30)
  CHECK(e.sqnrDb() == Approx(10 * std::log10(30.0)));
  CHECK(e.maxAbsDiff() == 1.0);
  CHECK(e.cosine() < 1.0);
  CHECK_THROWS_AS(e.add(a, Tensor(DType::Float32, {5})), Error);
}

TEST_CASE("NaN scores are no prediction: wrong, never agreeing, and a NaN difference is reported", "[metrics]") {
  // A model with a NaN weight gives NaN logits; they used to count as 100 % top-1 (every
  // comparison with NaN is false, so no class outranked the label) and max |diff| 0.
  const float nan = std::nanf("");
  Tensor s = Tensor::fromVector<float>({3, 3}, {nan, nan, nan,   // all NaN
                                                0.1f, nan, 0.2f,  // one NaN
                                                0.1f, 0.7f, 0.2f});
  AccuracyMeter m;
  m.add(s, {0, 2, 1});
  CHECK(m.count() == 3);
  CHECK(m.top1Correct() == 1);  // only the row without NaN
  CHECK(m.top5Correct() == 1);
  CHECK(argmaxRows(s) == std::vector<int64_t>{-1, -1, 1});
  ErrorMeter e;
  e.add(Tensor::fromVector<float>({3}, {1, 2, 3}), Tensor::fromVector<float>({3}, {1, nan, 3}));
  CHECK(std::isnan(e.maxAbsDiff()));
  CHECK(std::isnan(e.sqnrDb()));
  e.add(Tensor::fromVector<float>({1}, {1}), Tensor::fromVector<float>({1}, {5}));  // NaN stays
  CHECK(std::isnan(e.maxAbsDiff()));
}

TEST_CASE("percentile interpolates between order statistics", "[metrics]") {
  CHECK(percentile({3.0, 1.0, 2.0}, 0.5) == 2.0);       // odd count: the middle value
  CHECK(percentile({4.0, 1.0, 3.0, 2.0}, 0.5) == 2.5);  // even count: mean of the middle two
  CHECK(percentile({0.0, 10.0}, 0.9) == Approx(9.0));
  CHECK(percentile({5.0}, 0.9) == 5.0);
  CHECK(percentile({}, 0.5) == 0.0);
}

TEST_CASE("exact McNemar p-values match the binomial tail", "[metrics]") {
  // References: 2 · Σ_{i<=min} C(n, i) / 2^n in exact integer arithmetic (Python's math.comb).
  CHECK(mcnemarExactP(5, 0) == Approx(0.0625).epsilon(1e-12));
  CHECK(mcnemarExactP(3, 7) == Approx(0.34375).epsilon(1e-12));
  CHECK(mcnemarExactP(7, 3) == mcnemarExactP(3, 7));
  CHECK(mcnemarExactP(68, 48) == Approx(0.07726226461070669).epsilon(1e-9));
  CHECK(mcnemarExactP(40, 38) == Approx(0.9099464518745243).epsilon(1e-9));
  CHECK(mcnemarExactP(600, 520) == Approx(0.018207019279300234).epsilon(1e-9));
  CHECK(mcnemarExactP(4000, 4100) == Approx(0.2713310871439329).epsilon(1e-9));
  // No difference, or no discordant samples: 1 (capped, not 2 · P).
  CHECK(mcnemarExactP(1, 0) == 1.0);
  CHECK(mcnemarExactP(0, 0) == 1.0);
  CHECK(mcnemarExactP(50, 50) == 1.0);
  CHECK_THROWS_AS(mcnemarExactP(-1, 2), Error);
}

TEST_CASE("equal infinities are no difference and leave the other elements' SQNR as it is", "[metrics]") {
  // inf - inf was a NaN difference (SQNR nan for identical outputs); then inf² in the signal made
  // the SQNR of outputs that differ elsewhere "inf" (identical).
  const float inf = INFINITY;
  Tensor a = Tensor::fromVector<float>({5}, {1, -2, 3, 4, -inf});
  ErrorMeter same;
  same.add(a, a);
  CHECK(same.sqnrDb() == INFINITY);
  CHECK(same.maxAbsDiff() == 0.0);
  CHECK(same.elements() == 5);
  ErrorMeter e;
  e.add(a, Tensor::fromVector<float>({5}, {1, -2, 3, 5, -inf}));
  CHECK(e.sqnrDb() == Approx(10 * std::log10(30.0)));  // as without the masked element
  CHECK(e.maxAbsDiff() == 1.0);
  ErrorMeter other;  // an infinity against a number is a difference: infinite noise
  other.add(a, Tensor::fromVector<float>({5}, {1, -2, 3, 4, 0}));
  CHECK(other.sqnrDb() < -1e300);
}

TEST_CASE("table figures: as printf's %f and %g, with nan and inf spelled alike", "[metrics]") {
  CHECK(formatFigure(12.3456, 2, true) == "12.35");
  CHECK(formatFigure(0.000123456, 4, false) == "0.0001235");
  CHECK(formatFigure(1234567.0, 4, false) == "1.235e+06");
  CHECK(formatFigure(-0.5, 0, true) == "-0");  // callers add 0.0 where "-0" would mislead
  CHECK(formatFigure(std::nan(""), 2, true) == "nan");
  CHECK(formatFigure(-std::nan(""), 2, true) == "nan");  // printf: "-nan"
  CHECK(formatFigure(INFINITY, 2, true) == "inf");
  CHECK(formatFigure(-INFINITY, 4, false) == "-inf");
}

TEST_CASE("printable escapes controls and bytes that are not UTF-8, and keeps UTF-8 text", "[status]") {
  CHECK(lwc::printable("plain name/path.onnx") == "plain name/path.onnx");
  CHECK(lwc::printable("a\nb\tc\rd\x1b[31m\x7f") == "a\\nb\\tc\\rd\\x1b[31m\\x7f");
  // CJK, accents and a 4-byte emoji pass unchanged.
  const std::string utf8 = "\xe5\x90\x8d\xe5\x89\x8d caf\xc3\xa9 \xf0\x9f\x98\x80";
  CHECK(lwc::printable(utf8) == utf8);
  // A pipeline file starting with \xff\xfe put those bytes raw into the error line.
  CHECK(lwc::printable("\xff\xfe") == "\\xff\\xfe");
  CHECK(lwc::printable("pass\xc3") == "pass\\xc3");            // truncated sequence at the end
  CHECK(lwc::printable("\xc3(") == "\\xc3(");                  // lead byte without its continuation
  CHECK(lwc::printable("\xc0\xaf") == "\\xc0\\xaf");           // overlong '/'
  CHECK(lwc::printable("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a UTF-16 surrogate
  CHECK(lwc::printable("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  // C1 controls: U+009B is a terminal's CSI.
  CHECK(lwc::printable("x\xc2\x9b" "31my") == "x\\xc2\\x9b31my");
  CHECK(lwc::printable("\xc2\xa0") == "\xc2\xa0");  // U+00A0 is text
}

TEST_CASE("didYouMean names one near miss, not a far or tied one", "[status]") {
  const std::vector<std::string> names = {"sparsity", "scope", "pattern", "max_top1_drop", "max_top5_drop"};
  CHECK(lwc::didYouMean("sparsty", names) == " (did you mean 'sparsity'?)");
  CHECK(lwc::didYouMean("sparsity", names).empty());  // not a miss
  CHECK(lwc::didYouMean("zzz", names).empty());
  CHECK(lwc::didYouMean("max_top3_drop", names).empty());  // as near to top1 as to top5
  CHECK(lwc::didYouMean("scop", names) == " (did you mean 'scope'?)");
  CHECK(lwc::didYouMean("x", {"y"}).empty());  // every letter changed
}
