// Which edits of ONNX's backend test models crash ONNX's own shape inference (the library lwc links,
// without lwc's guards): each graph input declared at ranks 0-5, each integer attribute set to
// values out of range, each input dimension set to 0, 1 or 2^40. Every inference runs in a child
// process, so a crash is counted, not fatal; a child that runs over 5 s counts as hung (SIGALRM).
// Prints one line per such edit and a summary. Used to find the classes guardOnnxInference
// (lib/src/shape_inference.cpp) checks for; rerun it after an ONNX upgrade.
//   build/tests/onnx_inference_probe [/usr/share/libonnx-testdata/data]
#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "support/model_edits.h"

namespace fs = std::filesystem;

namespace {

// The signal that ended inference of `m` (lenient, then strict; data propagation on), 0 if none.
int inferInChild(const onnx::ModelProto& m) {
  const pid_t pid = fork();
  if (pid == 0) {
    alarm(5);  // a hang is reported as SIGALRM
    for (int strict = 0; strict < 2; ++strict) {
      onnx::ModelProto p = m;
      try {
        onnx::ShapeInferenceOptions o(strict == 1, strict, true);
        onnx::shape_inference::InferShapes(p, onnx::OpSchemaRegistry::Instance(), o);
      } catch (...) {
      }
    }
    _exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const fs::path root = argc > 1 ? argv[1] : "/usr/share/libonnx-testdata/data";
  const std::pair<lwc::test::EditKind, const char*> kinds[] = {
      {lwc::test::EditKind::Rank, "rank"}, {lwc::test::EditKind::Attribute, "attribute"},
      {lwc::test::EditKind::Dimension, "dimension"}};
  int edits[3] = {0, 0, 0}, crashes[3] = {0, 0, 0};
  for (const fs::path& f : lwc::test::backendTestModels(root)) {
    onnx::ModelProto m;
    std::ifstream in(f, std::ios::binary);
    if (!m.ParseFromIstream(&in)) continue;
    const std::string name = f.parent_path().parent_path().filename().string() + "/" + f.parent_path().filename().string();
    for (int k = 0; k < 3; ++k)
      lwc::test::forEachEdit(m, kinds[k].first, [&](onnx::ModelProto& v, const std::string& what) {
        ++edits[k];
        if (const int sig = inferInChild(v)) {
          ++crashes[k];
          std::cout << name << ": " << what << ": signal " << sig << "\n" << std::flush;
        }
      });
  }
  for (int k = 0; k < 3; ++k)
    std::cout << kinds[k].second << " edits: " << edits[k] << ", " << crashes[k] << " crashed or hung"
              << (k < 2 ? "; " : "\n");
  return 0;
}
