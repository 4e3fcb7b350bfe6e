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

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

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

std::string consumers(const onnx::GraphProto& g, const std::string& value) {
  std::string out;
  for (const auto& n : g.node())
    for (int k = 0; k < n.input_size(); ++k)
      if (n.input(k) == value) out += (out.empty() ? "" : ",") + n.op_type() + ":" + std::to_string(k);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const fs::path root = argc > 1 ? argv[1] : "/usr/share/libonnx-testdata/data";
  const int64_t values[] = {-1000, -7, -2, -1, 0, 1, 2, 7, 1000, int64_t(1) << 40, std::numeric_limits<int64_t>::min(),
                            std::numeric_limits<int64_t>::max()};
  int rank_edits = 0, rank_crashes = 0, attr_edits = 0, attr_crashes = 0, dim_edits = 0, dim_crashes = 0;
  for (const char* set : {"node", "pytorch-converted", "pytorch-operator"}) {
    std::vector<fs::path> files;
    if (!fs::is_directory(root / set)) continue;
    for (const auto& d : fs::directory_iterator(root / set))
      if (fs::exists(d.path() / "model.onnx")) files.push_back(d.path() / "model.onnx");
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) {
      onnx::ModelProto m;
      std::ifstream in(f, std::ios::binary);
      if (!m.ParseFromIstream(&in)) continue;
      const std::string name = std::string(set) + "/" + f.parent_path().filename().string();
      for (int i = 0; i < m.graph().input_size(); ++i) {
        const auto& input = m.graph().input(i);
        if (!input.type().has_tensor_type()) continue;
        const auto& orig = input.type().tensor_type().shape();
        for (int r = 0; r <= 5; ++r) {
          if (r == orig.dim_size()) continue;
          onnx::ModelProto v = m;
          auto* sh = v.mutable_graph()->mutable_input(i)->mutable_type()->mutable_tensor_type()->mutable_shape();
          sh->clear_dim();
          for (int d = 0; d < r; ++d)
            sh->add_dim()->set_dim_value(d < orig.dim_size() && orig.dim(d).has_dim_value() ? orig.dim(d).dim_value() : 3);
          v.mutable_graph()->clear_value_info();
          ++rank_edits;
          if (const int sig = inferInChild(v)) {
            ++rank_crashes;
            std::cout << name << ": input '" << input.name() << "' (read by " << consumers(m.graph(), input.name())
                      << ") rank " << orig.dim_size() << " -> " << r << ": signal " << sig << "\n"
                      << std::flush;
          }
        }
      }
      for (int i = 0; i < m.graph().input_size(); ++i) {
        const auto& input = m.graph().input(i);
        if (!input.type().has_tensor_type()) continue;
        for (int d = 0; d < input.type().tensor_type().shape().dim_size(); ++d)
          for (const int64_t value : {int64_t(0), int64_t(1), int64_t(1) << 40}) {
            onnx::ModelProto v = m;
            v.mutable_graph()->mutable_input(i)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(d)->set_dim_value(value);
            v.mutable_graph()->clear_value_info();
            ++dim_edits;
            if (const int sig = inferInChild(v)) {
              ++dim_crashes;
              std::cout << name << ": input '" << input.name() << "' (read by " << consumers(m.graph(), input.name())
                        << ") dimension " << d << " = " << value << ": signal " << sig << "\n"
                        << std::flush;
            }
          }
      }
      for (int n = 0; n < m.graph().node_size(); ++n)
        for (int a = 0; a < m.graph().node(n).attribute_size(); ++a) {
          const auto& attr = m.graph().node(n).attribute(a);
          const bool ints = attr.type() == onnx::AttributeProto::INTS && attr.ints_size() > 0;
          if (attr.type() != onnx::AttributeProto::INT && !ints) continue;
          for (const int64_t value : values)
            for (int k = 0; k < (ints ? attr.ints_size() : 1); ++k) {
              onnx::ModelProto v = m;
              auto* e = v.mutable_graph()->mutable_node(n)->mutable_attribute(a);
              if (ints) e->set_ints(k, value);
              else e->set_i(value);
              v.mutable_graph()->clear_value_info();
              ++attr_edits;
              if (const int sig = inferInChild(v)) {
                ++attr_crashes;
                std::cout << name << ": " << m.graph().node(n).op_type() << " " << attr.name() << "[" << k
                          << "] = " << value << ": signal " << sig << "\n"
                          << std::flush;
              }
            }
        }
    }
  }
  std::cout << "rank edits: " << rank_edits << ", " << rank_crashes << " crashed ONNX's inference; attribute edits: "
            << attr_edits << ", " << attr_crashes << " crashed; dimension edits: " << dim_edits << ", " << dim_crashes
            << " crashed or hung\n";
  return 0;
}
