// ONNX Runtime as a peer runtime for the reports: lwc runs scripts/ort/ort_tool.js (onnxruntime-node,
// installed by scripts/setup.sh) in a child process and reads its JSON. Optional: only the commands'
// --ort-bench flags use it.
#pragma once

#include <sched.h>

#include <nlohmann/json.hpp>
#include <string>

#include "lwc/graph.h"

namespace CLI {
class App;
}

namespace lwc::app {

/// --ort-bench and --ort-tool of a command that times two models in ONNX Runtime (lwc quantize:
/// FP32 vs INT8; lwc prune: before vs after channel pruning).
struct OrtBenchOptions {
  bool enabled = false;
  std::string tool;
  /// Registers both flags; `measures` completes "--ort-bench: also measure ...".
  void add(CLI::App* cmd, const std::string& measures);
  /// The tool to run, or "" when --ort-bench is off. Fails with one line (naming `command`) when
  /// `bench_batch` < 1 or the tool, onnxruntime-node or node is missing.
  std::string resolve(const char* command, int64_t bench_batch) const;
};

/// The ort_tool.js to use: `given` if not empty, else $LWC_ORT_TOOL, else the one in the source tree
/// lwc was built from. Fails with one line (naming the flag) when it or `node` is missing.
std::string findOrtTool(const std::string& given, const char* flag);

/// Records the CPUs the process may run on (in the environment, as lwc re-executes itself to set
/// OpenMP up; call before any thread is pinned), for child processes: pinned OpenMP threads would
/// otherwise hand their one core down to the ONNX Runtime benchmark.
void saveStartAffinity();
/// The CPUs recorded by saveStartAffinity; false when none were.
bool startAffinity(cpu_set_t& cpus);

/// Latency (ms) of two models in ONNX Runtime at `batch`, measured alternately (a, b, a, b, ...,
/// `rounds` each, `seconds` per measurement) so that a change in machine load hits both; each is
/// the lowest of its rounds' medians. Models are written to a private temp folder, removed after.
/// `threads` 0 = every core, as lwc's --threads.
struct OrtPair {
  double a_ms = 0, b_ms = 0;
  int threads = 0;
  std::string version;
  /// {runtime, batch, threads, <a_key>, <b_key>, speedup = a / b} for a report's details.
  nlohmann::json toJson(int64_t batch, const char* a_key, const char* b_key) const;
};
OrtPair ortBenchPair(const std::string& tool, const Model& a, const Model& b, int64_t batch, int threads,
                     int rounds = 2, double seconds = 1.0);

}  // namespace lwc::app
