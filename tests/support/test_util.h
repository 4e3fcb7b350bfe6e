// Helpers shared by the tests: temp folders, running the lwc executable, paths of testdata.
#pragma once

#include <filesystem>
#include <string>

#include <onnx/onnx_pb.h>

#include "lwc/graph.h"

namespace lwc::test {

/// A fresh folder under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

struct RunResult {
  int exit_code = -1;
  std::string out;  ///< stdout
  std::string err;  ///< stderr
};

/// Runs the lwc executable with a shell-quoted argument string.
RunResult runLwc(const std::string& args);
/// Runs any shell command, capturing stdout and stderr.
RunResult runCommand(const std::string& cmd);
/// Checks (Catch2 CHECKs) that a command failed the way bad input must: exit code 1 and exactly
/// one line on stderr, which contains `expect`.
void checkOneLineError(const RunResult& r, const std::string& expect);

std::filesystem::path sourceDir();
std::filesystem::path testdataDir();
/// Folder for generated models shared between tests (build/test_models).
std::filesystem::path generatedModelsDir();

void writeFile(const std::filesystem::path& p, const std::string& bytes);
std::string readFile(const std::filesystem::path& p);

/// A model in ONNX's text format exactly as written: no lwc lowering or checks (parseModelText
/// applies those), for files lwc itself must read. A text the parser refuses fails the test.
onnx::ModelProto protoFromText(const std::string& text);
void writeProto(const std::filesystem::path& p, const onnx::ModelProto& m);

}  // namespace lwc::test
