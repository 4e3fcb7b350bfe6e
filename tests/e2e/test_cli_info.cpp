// `lwc info` end to end: output, JSON schema, exit codes, published figures.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>

#include "lwc/model_io.h"
#include "lwc/npy.h"
#include "support/pass_util.h"
#include "support/test_util.h"

using namespace lwc;
using lwc::test::runLwc;
using lwc::test::TempDir;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {
fs::path writeSmallModel(const TempDir& d) {
  Model m = parseModelText(R"(
<ir_version: 8, opset_import: ["" : 13], producer_name: "lwc-test">
g (float[N, 3, 8, 8] x, float[4, 3, 3, 3] w) => (float[N, 4, 8, 8] y)
<float[4] b = {1, 2, 3, 4}>
{
  c = Conv <pads=[1,1,1,1]> (x, w, b)
  y = Relu (c)
}
)");
  Tensor w(DType::Float32, {4, 3, 3, 3});
  for (int64_t i = 0; i < w.numel(); ++i) w.data<float>()[i] = i < 54 ? 0.0f : 1.0f;
  m.graph.initializers.set("w", w);
  const fs::path p = d / "small.onnx";
  saveModel(m, p);
  return p;
}

std::string q(const fs::path& p) { return "'" + p.string() + "'"; }
}  // namespace

TEST_CASE("lwc info prints a summary", "[cli][info]") {
  TempDir d;
  const fs::path p = writeSmallModel(d);
  auto r = runLwc("info " + q(p));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("lwc-test"));
  CHECK_THAT(r.out, Catch::Contains("x  float32 [N,3,8,8]"));
  CHECK_THAT(r.out, Catch::Contains("params      112"));
  CHECK_THAT(r.out, Catch::Contains("50.00 %"));  // 54 of 108 weights are zero
  auto pl = runLwc("info --per-layer " + q(p));
  CHECK_THAT(pl.out, Catch::Contains("Conv"));
  CHECK_THAT(pl.out, Catch::Contains("6,912"));  // 4*8*8 outputs x 27 MACs
}

TEST_CASE("lwc info --json is stable and complete", "[cli][info]") {
  TempDir d;
  const fs::path p = writeSmallModel(d);
  auto r = runLwc("info --json --batch 2 " + q(p));
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["schema"] == "lwc.info");
  CHECK(j["schema_version"] == 1);
  CHECK(j["batch"] == 2);
  CHECK(j["params"] == 112);
  CHECK(j["macs"] == 2 * 6912);
  CHECK(j["flops"] == 4 * 6912);
  CHECK(j["file_bytes"] == static_cast<int64_t>(fs::file_size(p)));
  CHECK(j["weights"]["zeros"] == 54);
  CHECK(j["weight_bytes_by_dtype"]["float32"] == 112 * 4);
  CHECK(j["inputs"][0]["shape"] == nlohmann::json::array({"N", 3, 8, 8}));
  CHECK(j["op_histogram"]["Conv"] == 1);
  CHECK(j["layers"][0]["macs"] == 2 * 6912);
  CHECK(j["entropy_bound_bytes"].get<int64_t>() > 0);
  CHECK(j["checks"]["passed"] == true);
  CHECK(j["checks"]["problem"] == "");
}

TEST_CASE("names that are not UTF-8 reach JSON output as U+FFFD instead of an internal error", "[cli][info]") {
  // ONNX's protobuf schema (proto2) does not check that names are UTF-8, so a model may hold any
  // bytes there; nlohmann/json's dump threw on them (exit code 2).
  TempDir d;
  Model m = loadModel(writeSmallModel(d));
  m.graph.nodes.at(0).name = "conv\xff\xfe";
  saveModel(m, d / "latin1.onnx");
  auto r = runLwc("info --json " + q(d / "latin1.onnx"));
  REQUIRE(r.exit_code == 0);
  CHECK(nlohmann::json::parse(r.out)["layers"][0]["name"] == "conv\xef\xbf\xbd\xef\xbf\xbd");
  r = runLwc("prune " + q(d / "latin1.onnx") + " --sparsity 0.5 --min-params 0 --bench-batch 0 -o " +
             q(d / "out.onnx") + " --report " + q(d / "report.json"));
  CHECK(r.exit_code == 0);
  CHECK_NOTHROW(nlohmann::json::parse(test::readFile(d / "report.json")));
  CHECK(fs::exists(d / "out.onnx"));
}

TEST_CASE("names and paths with control characters cannot split lines, forge rows or colour the terminal", "[cli][info]") {
  TempDir d;
  // An error naming a path with ESC and a newline: one line, the characters escaped.
  const std::string odd = "no\x1b[31mRED\nx.onnx";
  auto r = runLwc("info " + q(d / odd));
  test::checkOneLineError(r, "no\\x1b[31mRED\\nx.onnx: not found");
  // A layer named "c\nFORGED": one row in info's table, escaped; a long CJK name is cut on a
  // character boundary (stdout was invalid UTF-8) and padded by characters, not bytes.
  Model m = loadModel(writeSmallModel(d));
  m.graph.nodes.at(0).name = "c\nFORGED ROW" + [] { std::string s; for (int i = 0; i < 40; ++i) s += "\xe6\x97\xa5"; return s; }();
  saveModel(m, d / "names.onnx");
  r = runLwc("info --per-layer " + q(d / "names.onnx"));
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Contains("c\\nFORGED ROW\xe6\x97\xa5") && !Contains("\nFORGED ROW"));
  auto validUtf8 = [](const std::string& s) {
    for (size_t i = 0; i < s.size();) {
      const auto c = static_cast<unsigned char>(s[i]);
      const size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
      if (n == 0 || i + n > s.size()) return false;
      for (size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
      i += n;
    }
    return true;
  };
  CHECK(validUtf8(r.out));
  CHECK_THAT(r.out, Contains("\xe6\x97\xa5...\xe6\x97\xa5"));
  // The Markdown report: a model path with a backtick, a newline and a table row stays in its
  // code span on the heading's line (it put a forged table into the report).
  const fs::path forged = d / "x`y\n| a | b |\n|---|---|\n| forged | row |.onnx";
  fs::copy_file(d / "small.onnx", forged);
  r = runLwc("-q run --passes fold_constants " + q(forged) + " -o " + q(d / "o.onnx") + " --report-md " + q(d / "r.md"));
  REQUIRE(r.exit_code == 0);
  const std::string md = test::readFile(d / "r.md");
  CHECK_THAT(md, !Contains("\n| forged | row |") && Contains("``") && Contains("\\n| forged | row |"));
}

TEST_CASE("lwc info counts MACs whose sizes are computed at run time (swin_t's window reshapes)", "[cli][info]") {
  // Reshape(x, [-1, x.size(1) % 3]): shape inference does not evaluate Mod, so only the copy with
  // the batch fixed and the sizes folded knows the MatMul's input.
  TempDir d;
  const Model m = lwc::test::runTimeSizedMatMul();
  const fs::path p = d / "mod.onnx";
  saveModel(m, p);
  auto r = runLwc("info --json --batch 3 " + q(p));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  CHECK(j["macs"] == 3 * 4 * 2 * 5);
  CHECK(j["macs_complete"] == true);
  CHECK(j["nodes"] == 11);  // the model as it is, not the folded copy
  auto h = runLwc("info " + q(p));
  CHECK_THAT(h.out, Catch::Contains("MACs        40 at batch 1;"));
}

TEST_CASE("lwc info rejects bad input with one line and exit 1", "[cli][info]") {
  TempDir d;
  test::writeFile(d / "junk.onnx", "this is not a model");
  for (const std::string& args : {"info " + q(d / "junk.onnx"), "info " + q(d / "missing.onnx")}) {
    auto r = runLwc(args);
    CHECK(r.exit_code == 1);
    CHECK(r.err.rfind("lwc: error: ", 0) == 0);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
    CHECK(r.out.empty());
  }
}

TEST_CASE("command-line mistakes get one error line that says what is wrong and where help is", "[cli]") {
  const std::string m = q(test::testdataDir() / "lenet5_fmnist.onnx");
  const std::pair<std::string, std::string> cases[] = {
      {"info", "lwc: error: model is required (see 'lwc info --help')"},
      {"frobnicate x", "lwc: error: unknown command 'frobnicate' (see 'lwc --help')"},
      {"prune " + m + " --channels 0.3 --round-to -1 -o x.onnx",
       "lwc: error: --round-to: -1 is outside [0, 256] (see 'lwc prune --help')"},
      {"prune " + m + " --channels 0.3 --min-channels 0 -o x.onnx",
       "lwc: error: --min-channels: 0 must be greater than 0 (see 'lwc prune --help')"},
      {"quantize " + m + " --bench-batch -2 -o x.onnx",
       "lwc: error: --bench-batch: -2 is outside [0, 16777216] (see 'lwc quantize --help')"},
      {"prune " + m + " --channels abc -o x.onnx",
       "lwc: error: --channels: 'abc' is not a value it takes (see 'lwc prune --help')"},
      {"prune " + m + " --bogus -o x.onnx", "lwc: error: unknown option '--bogus' for 'lwc prune' (see 'lwc prune --help')"},
      // A mistyped option that takes a value: CLI11 alone said "model: At Most 1 required but received 2".
      {"quantize " + m + " --calib-limitt 8 -o x.onnx",
       "lwc: error: unknown option '--calib-limitt' for 'lwc quantize' (did you mean --calib-limit?) (see 'lwc quantize "
       "--help')"},
      {"prune " + m + " --iter=3 --sparsity 0.5 -o x.onnx",
       "lwc: error: unknown option '--iter' for 'lwc prune' (did you mean --iters?) (see 'lwc prune --help')"},
      {"-v fuse " + m + " -k -o x.onnx", "lwc: error: unknown option '-k' for 'lwc fuse' (see 'lwc fuse --help')"},
      // Not a number: "abc must be greater than 0"; an empty value leaked CLI11's 300-digit bound.
      {"eval " + m + " --data x --limit abc", "lwc: error: --limit: 'abc' is not a number (see 'lwc eval --help')"},
      {"bench " + m + " --warmup -abc", "lwc: error: --warmup: '-abc' is not a number (see 'lwc bench --help')"},
      {"exec " + m + " --random-batch '' -o x", "lwc: error: --random-batch: an empty value is not a number (see 'lwc exec --help')"},
      // Read as 0 without a word: --sparsity '' pruned nothing (exit 0), --iters '' named a 0 never typed.
      {"prune " + m + " --sparsity '' -o x.onnx", "lwc: error: --sparsity: an empty value is not a number (see 'lwc prune --help')"},
      {"prune " + m + " --iters '' -o x.onnx", "lwc: error: --iters: an empty value is not a number (see 'lwc prune --help')"},
      {"prune " + m + " --sparsity ' ' -o x.onnx", "lwc: error: --sparsity: an empty value is not a number (see 'lwc prune --help')"},
      // Blanks around a number are dropped on both sides ('0.5 ' was refused while ' 0.5' was taken):
      // the values reach the range checks as numbers.
      {"prune " + m + " --sparsity '1.5 ' -o x.onnx", "lwc: error: prune: --sparsity 1.5 is outside [0, 1); e.g. 0.5 zeroes half of the weights"},
      {"prune " + m + " --sparsity 0.5 --iters ' 0 ' -o x.onnx", "lwc: error: prune: --iters 0: give at least 1 step"},
      {"prune " + m + " --sparsity 0.3 --sparsity 0.6 -o x.onnx",
       "lwc: error: --sparsity is given 2 times; give it once (see 'lwc prune --help')"},
      {"prune " + m + " --sparsity 0x0.8p0 -o x.onnx", "lwc: error: --sparsity: '0x0.8p0' is not a decimal number (see 'lwc prune --help')"},
      // lwc's own options: before the command, and named as lwc's (not "for 'lwc info'").
      {"-x info " + m, "lwc: error: unknown option '-x' for 'lwc' (see 'lwc --help')"},
      {"info " + m + " -v",
       "lwc: error: '-v' is an option of lwc itself: give it before the command ('lwc -v info ...') (see 'lwc info --help')"},
      {"-v -q info " + m, "lwc: error: --verbose excludes --quiet (see 'lwc --help')"},
      // Options that the run would ignore.
      {"bench " + m + " --iters 3 --seconds 1",
       "lwc: error: --iters 3 and --seconds: give one (--iters 0 runs for --seconds) (see 'lwc bench --help')"},
      {"bench " + m + " --warmup 1e400", "lwc: error: --warmup: '1e400' is out of range (see 'lwc bench --help')"},
      {"fuse " + m + " --calib x -o x.onnx", "lwc: error: unknown option '--calib' for 'lwc fuse' (see 'lwc fuse --help')"},
      // MACs at batch 3e13 wrapped int64 (FLOPs negative in --json).
      {"info " + m + " --batch 30000000000000",
       "lwc: error: --batch: 30000000000000 is outside [1, 16777216] (see 'lwc info --help')"},
      // Capped to int64 without a word, then a memory error that named no option.
      {"bench " + m + " --batch 99999999999999999999",
       "lwc: error: --batch: 99999999999999999999 is outside [1, 16777216] (see 'lwc bench --help')"},
      {"exec " + m + " --random-batch 99999999999999999999 -o x",
       "lwc: error: --random-batch: 99999999999999999999 is outside [1, 16777216] (see 'lwc exec --help')"},
      // The upper bounds were checked by the pass, and --help did not show them.
      {"prune " + m + " --channels 0.3 --round-to 300 -o x.onnx", "lwc: error: --round-to: 300 is outside [0, 256] (see 'lwc prune --help')"},
      // CLI11's own words were "Could not convert: --seed = -1" and "Value 101 not in range 50.000000 to 100.000000".
      {"exec " + m + " --random-batch 1 --seed -1 -o x", "lwc: error: --seed: '-1' is not a value it takes (see 'lwc exec --help')"},
      {"quantize " + m + " --calib x --percentile 101 -o x.onnx",
       "lwc: error: --percentile: 101 is outside [50, 100] (see 'lwc quantize --help')"},
      // CLI11's own words.
      {"info " + m + " b", "lwc: error: unexpected argument 'b' (a value for an option that takes none, or a file too many?) "
                           "(see 'lwc info --help')"},
      {"run p.json " + m + " extra -o x.onnx", "lwc: error: too many arguments: 3 given, at most 2 taken (see 'lwc run --help')"},
      // CLI11 reads integers in base 0: --limit 0x10 used 16 samples, 010 used 8.
      {"eval " + m + " --data x --limit 0x10", "lwc: error: --limit: '0x10' is not a decimal number (see 'lwc eval --help')"},
      {"exec " + m + " --random-batch 1 --threads 0b1 -o x",
       "lwc: error: --threads: '0b1' is not a decimal number (see 'lwc exec --help')"},
      // An empty path was taken as not given: no report, exit 0.
      {"fuse " + m + " -o x.onnx --report ''", "lwc: error: --report: '' (an empty value) is not a value it takes (see 'lwc fuse --help')"},
      {"info ''", "lwc: error: model: '' (an empty value) is not a value it takes (see 'lwc info --help')"},
  };
  for (const auto& [args, expect] : cases) {
    INFO(args);
    auto r = runLwc(args);
    CHECK(r.exit_code == 1);
    CHECK(r.err == expect + "\n");
    CHECK(r.out.empty());
    CHECK_FALSE(fs::exists("x.onnx"));
  }
}

TEST_CASE("models with an opset newer than libonnx knows run as opset 17, and what opset 17 cannot say is refused by node", "[cli][info]") {
  TempDir d;
  // Written as the text says, without lwc's lowering (parseModelText would lower them).
  auto saveText = [&](const char* text, const fs::path& path) { test::writeProto(path, test::protoFromText(text)); };
  saveText(R"(
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 4] x) => (float[N, 4] y)
{
  r = Relu (x)
  y = Abs (r)
}
)", d / "relu21.onnx");
  saveText(R"(
<ir_version: 10, opset_import: ["" : 21]>
g (float[N, 4] x) => (float[N, 4] y)
{
  y = DFT (x)
}
)", d / "dft21.onnx");

  auto info = runLwc("info --json " + q(d / "relu21.onnx"));
  REQUIRE(info.exit_code == 0);
  CHECK_THAT(info.err, Catch::Contains("reads opset 21 as opset 17") && Catch::Contains("no node needed a change") &&
                           Catch::Contains("reads IR version 10 as IR version 8"));
  CHECK(nlohmann::json::parse(info.out)["unsupported_ops"].empty());

  writeNpy(d / "x.npy", Tensor::fromVector<float>({1, 4}, {-1, 2, -3, 4}));
  auto ok = runLwc("exec " + q(d / "relu21.onnx") + " --input x=" + q(d / "x.npy") + " --outdir " + q(d / "out"));
  INFO(ok.err);
  REQUIRE(ok.exit_code == 0);
  const Tensor y = readNpy(d / "out" / "y.npy");
  CHECK(y.data<float>()[0] == 0.0f);
  CHECK(y.data<float>()[3] == 4.0f);
  // The opset-20 DFT (axis an input, another default axis) has no opset-17 form lwc writes.
  for (const std::string& args : {"info " + q(d / "dft21.onnx"),
                                 "exec " + q(d / "dft21.onnx") + " --input x=" + q(d / "x.npy") + " --outdir " + q(d / "out2")}) {
    auto bad = runLwc(args);
    INFO(args);
    CHECK(bad.exit_code == 1);
    CHECK_THAT(bad.err, Catch::Contains("dft21.onnx: node DFT (output 'y') is the opset-20 DFT") &&
                            Catch::Contains("export the model with opset_version=17"));
    CHECK(std::count(bad.err.begin(), bad.err.end(), '\n') == 1);
  }
}

TEST_CASE("lwc info: a model whose input fixes the batch says so, whatever --batch asks", "[cli][info]") {
  // It printed "MACs 1.25 M at batch 1" for lenet5 exported with batch 3 (the MACs of 3 images),
  // and "at batch 4" with --batch 4 for the same figure.
  TempDir d;
  Model m = loadModel(test::testdataDir() / "lenet5_fmnist.onnx");
  const auto base = nlohmann::json::parse(runLwc("info --json " + q(test::testdataDir() / "lenet5_fmnist.onnx")).out);
  m.graph.inputs.at(0).shape->at(0) = Dim{3, ""};
  m.graph.outputs.at(0).shape->at(0) = Dim{3, ""};
  saveModel(m, d / "b3.onnx");
  auto r = runLwc("info " + q(d / "b3.onnx"));
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("at batch 3"));
  r = runLwc("info --json --batch 4 " + q(d / "b3.onnx"));
  REQUIRE(r.exit_code == 0);
  const auto j = nlohmann::json::parse(r.out);
  CHECK(j["batch"] == 3);
  CHECK(j["macs"].get<int64_t>() == 3 * base["macs"].get<int64_t>());
  CHECK_THAT(r.err, Catch::Contains("fixes the batch size at 3") && Catch::Contains("--batch 4 ignored"));
}

TEST_CASE("results that cannot be written to standard output are an error, not exit code 0, and leave no output file", "[cli][info]") {
  // lwc info --json > report.json on a full disk exited 0 with an empty file.
  const std::string model = q(test::testdataDir() / "lenet5_fmnist.onnx");
  auto r = test::runCommand("( '" + std::string(LWC_EXE) + "' info " + model + " --json > /dev/full )");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("cannot write the results to standard output"));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(test::runCommand("( '" + std::string(LWC_EXE) + "' info " + model + " --json > /dev/null )").exit_code == 0);
  // Commands that write files print their results first: exit code 1 and no file (fuse replaced
  // the model at -o and wrote its report, calibrate and exec their files, then exited 1).
  TempDir d;
  test::writeFile(d / "old.onnx", "older");
  const std::string lwc = "'" + std::string(LWC_EXE) + "' ";
  const std::string sample = q(test::testdataDir() / "fmnist_sample");
  for (const std::string& args :
       {"fuse " + model + " -o " + q(d / "old.onnx") + " --report " + q(d / "r.json"),
        "calibrate " + model + " --calib " + sample + " --calib-samples 20 -o " + q(d / "s.json"),
        "exec " + model + " --random-batch 1 --outdir " + q(d / "ex")}) {
    INFO(args);
    r = test::runCommand("( " + lwc + args + " > /dev/full )");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("lwc: error: cannot write the results to standard output") &&
                          Catch::Contains("no output file was written"));
    CHECK(test::readFile(d / "old.onnx") == "older");
    CHECK_FALSE(fs::exists(d / "r.json"));
    CHECK_FALSE(fs::exists(d / "s.json"));
    CHECK_FALSE(fs::exists(d / "ex"));
  }
}

TEST_CASE("lwc info shows a tensor input of an element type lwc does not compute with as that tensor", "[cli][info]") {
  // A bfloat16 input declared [N, 3] was "(non-tensor)".
  TempDir d;
  test::writeProto(d / "bf.onnx", test::protoFromText(R"(
<ir_version: 8, opset_import: ["" : 13]>
g (bfloat16[N, 3] xb) => (float[N, 3] y)
{ y = Cast <to = 1> (xb) }
)"));
  auto r = runLwc("info " + q(d / "bf.onnx"));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("xb  bfloat16 [N,3] (an element type lwc does not compute with)"));
  // lwc bench said the input "declares no shape".
  test::checkOneLineError(runLwc("bench " + q(d / "bf.onnx") + " --iters 1"),
                          "input 'xb' is a BFLOAT16 tensor, an element type lwc does not compute with");
}
