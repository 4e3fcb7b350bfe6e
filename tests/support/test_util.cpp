#include "support/test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <onnx/defs/parser.h>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace lwc::test {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "lwc-test-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}
TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void writeFile(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f << bytes;
  if (!f) throw std::runtime_error("cannot write " + p.string());
}

std::string readFile(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + p.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void checkOneLineError(const RunResult& r, const std::string& expect) {
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains(expect));
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
}

RunResult runCommand(const std::string& cmd) {
  TempDir d;
  const fs::path out = d / "out", err = d / "err";
  const std::string full = cmd + " >" + out.string() + " 2>" + err.string() + " </dev/null";
  const int st = std::system(full.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  r.out = readFile(out);
  r.err = readFile(err);
  return r;
}

RunResult runLwc(const std::string& args) { return runCommand(std::string("'") + LWC_EXE + "' " + args); }

fs::path sourceDir() { return LWC_SOURCE_DIR; }
fs::path testdataDir() { return sourceDir() / "testdata"; }
fs::path generatedModelsDir() {
  const fs::path p = fs::path(LWC_BINARY_DIR) / "test_models";
  fs::create_directories(p);
  return p;
}

onnx::ModelProto protoFromText(const std::string& text) {
  onnx::ModelProto p;
  const auto st = onnx::OnnxParser::Parse(p, text.c_str());
  INFO(st.ErrorMessage());
  REQUIRE(st.IsOK());
  return p;
}

void writeProto(const fs::path& p, const onnx::ModelProto& m) {
  std::string bytes;
  REQUIRE(m.SerializeToString(&bytes));
  writeFile(p, bytes);
}

}  // namespace lwc::test
