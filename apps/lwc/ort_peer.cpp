// See ort_peer.h. The child is started with posix_spawnp (no shell, so paths need no quoting); its
// stdout and stderr go to files in the temp folder.
#include "ort_peer.h"

#include "status_line.h"

#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "lwc/engine.h"
#include "lwc/model_io.h"
#include "lwc/status.h"

extern char** environ;

namespace lwc::app {

namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

bool nodeOnPath() {
  const char* path = std::getenv("PATH");
  if (!path) return false;
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':'))
    if (!dir.empty() && ::access((fs::path(dir) / "node").c_str(), X_OK) == 0) return true;
  return false;
}

// The benchmark's private folder: the two models and the tool's output. Removed with everything in
// it when done, and on a fatal signal (SignalCleanup), which an interrupted run used to leave in /tmp.
class TempFolder {
 public:
  TempFolder() {
    std::string t = (fs::temp_directory_path() / "lwc-ort-XXXXXX").string();
    if (!::mkdtemp(t.data()))
      fail(t, ": cannot create a temp folder for the ONNX Runtime benchmark (--ort-bench): ", std::strerror(errno),
           "; set TMPDIR to a writable folder");
    path_ = t;
    guard_ = SignalCleanup(SignalCleanup::Kind::Folder, t);
    for (const char* f : {"before.onnx", "after.onnx", "stdout", "stderr"})
      files_.emplace_back(SignalCleanup::Kind::File, (path_ / f).string());
  }
  ~TempFolder() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
  SignalCleanup guard_;
  std::vector<SignalCleanup> files_;  // the files it will hold (rmdir takes only an empty folder)
};

/// Runs `node tool bench model ... --json`; returns its JSON (fails with the tool's error line).
nlohmann::json benchOnce(const std::string& tool, const fs::path& model, const fs::path& dir, int64_t batch,
                         int threads, double seconds) {
  const fs::path out = dir / "stdout", err = dir / "stderr";
  std::vector<std::string> args = {"node",        tool,          "bench",   model.string(),          "--batch",
                                   std::to_string(batch), "--threads", std::to_string(threads), "--seconds",
                                   std::to_string(seconds), "--json"};
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  // lwc pins its OpenMP threads (OMP_PROC_BIND, see main.cpp), this one included, and a child
  // inherits the affinity of the thread that starts it: ONNX Runtime's two threads then shared one
  // core (mnv2_fmnist b32: 30.9 ms instead of 7.9). The child gets the CPUs lwc was started with
  // (all of them used to be handed over, so `taskset -c 0 lwc ...` timed ONNX Runtime on two).
  cpu_set_t mine, child;
  const bool pinned = ::sched_getaffinity(0, sizeof mine, &mine) == 0;
  if (!startAffinity(child)) {
    CPU_ZERO(&child);
    for (int c = 0; c < CPU_SETSIZE; ++c) CPU_SET(c, &child);
  }
  if (pinned) ::sched_setaffinity(0, sizeof child, &child);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, "node", &fa, nullptr, argv.data(), environ);
  if (pinned) ::sched_setaffinity(0, sizeof mine, &mine);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) fail("node: cannot start it for the ONNX Runtime benchmark (", std::strerror(rc), ")");
  SignalCleanup running(pid);  // a signal that ends lwc ends the benchmark too (it ran on, orphaned)
  // Waited for without reaping, so the pid is not another process's while it is registered.
  siginfo_t info{};
  while (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT) < 0 && errno == EINTR) {
  }
  running.release();
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::string e = slurp(err);
    while (!e.empty() && (e.back() == '\n' || e.back() == '\r')) e.pop_back();
    if (const auto nl = e.rfind('\n'); nl != std::string::npos) e = e.substr(nl + 1);
    fail(tool, ": ONNX Runtime benchmark failed: ", e.empty() ? "exit status " + std::to_string(WEXITSTATUS(st)) : e);
  }
  try {
    return nlohmann::json::parse(slurp(out));
  } catch (const std::exception& e) {
    fail(tool, ": ONNX Runtime benchmark printed no JSON (", e.what(), ")");
  }
}

}  // namespace

void saveStartAffinity() {
  cpu_set_t cpus;
  if (::sched_getaffinity(0, sizeof cpus, &cpus) != 0) return;
  std::string list;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &cpus)) list += (list.empty() ? "" : ",") + std::to_string(c);
  ::setenv("LWC_START_CPUS", list.c_str(), 1);
}

bool startAffinity(cpu_set_t& cpus) {
  const char* e = std::getenv("LWC_START_CPUS");
  if (!e || !*e) return false;
  CPU_ZERO(&cpus);
  std::istringstream in(e);
  std::string item;
  while (std::getline(in, item, ',')) {
    char* end = nullptr;
    const long c = std::strtol(item.c_str(), &end, 10);
    if (end == item.c_str() || *end != '\0' || c < 0 || c >= CPU_SETSIZE) return false;
    CPU_SET(static_cast<int>(c), &cpus);
  }
  return CPU_COUNT(&cpus) > 0;
}

std::string findOrtTool(const std::string& given, const char* flag) {
  std::string tool = given;
  if (tool.empty()) {
    const char* env = std::getenv("LWC_ORT_TOOL");
    tool = env && *env ? env : (fs::path(LWC_SOURCE_DIR) / "scripts/ort/ort_tool.js").string();
  }
  if (!fs::is_regular_file(tool))
    fail(tool, ": ", flag, " needs ONNX Runtime's ort_tool.js; give --ort-tool PATH or set LWC_ORT_TOOL ",
         "(scripts/setup.sh installs onnxruntime-node beside it)");
  if (!fs::is_directory(fs::path(tool).parent_path() / "node_modules/onnxruntime-node"))
    fail(tool, ": ", flag, ": onnxruntime-node is not installed beside it; run scripts/setup.sh");
  if (!nodeOnPath()) fail("node: ", flag, " needs Node.js on PATH; run scripts/setup.sh");
  return tool;
}

void OrtBenchOptions::add(CLI::App* cmd, const std::string& measures) {
  auto* bench = cmd->add_flag("--ort-bench", enabled,
                              "Also measure " + measures +
                                  " in ONNX Runtime at --bench-batch (needs Node.js and onnxruntime-node, see scripts/setup.sh)");
  // Without --ort-bench the tool is never run, so a wrong path went unnoticed.
  cmd->add_option("--ort-tool", tool,
                  "ort_tool.js for --ort-bench (default: $LWC_ORT_TOOL, else scripts/ort/ort_tool.js of the source tree)")
      ->needs(bench);
}

std::string OrtBenchOptions::resolve(const char* command, int64_t bench_batch) const {
  if (!enabled) return {};
  if (bench_batch <= 0) fail(command, ": --ort-bench needs --bench-batch of at least 1");
  return findOrtTool(tool, "--ort-bench");
}

OrtPair ortBenchPair(const std::string& tool, const Model& a, const Model& b, int64_t batch, int threads, int rounds,
                     double seconds) {
  // As many threads as lwc's engine uses (its count follows the CPUs lwc may run on; the machine's
  // count gave ONNX Runtime 2 threads beside lwc's 1 under `taskset -c 0`).
  if (threads <= 0) threads = engine::configuredThreads();
  progress("measuring latency in ONNX Runtime at batch " + std::to_string(batch) + ", before and after");
  TempFolder d;
  const fs::path pa = d.path() / "before.onnx", pb = d.path() / "after.onnx";
  saveModel(a, pa);
  saveModel(b, pb);
  OrtPair r;
  r.threads = threads;
  r.a_ms = r.b_ms = 1e300;
  for (int i = 0; i < rounds; ++i) {
    const auto ja = benchOnce(tool, pa, d.path(), batch, threads, seconds);
    const auto jb = benchOnce(tool, pb, d.path(), batch, threads, seconds);
    r.a_ms = std::min(r.a_ms, ja.at("median_ms").get<double>());
    r.b_ms = std::min(r.b_ms, jb.at("median_ms").get<double>());
    r.version = ja.value("version", "");
  }
  return r;
}

nlohmann::json OrtPair::toJson(int64_t batch, const char* a_key, const char* b_key) const {
  return {{"runtime", "onnxruntime-node " + version},
          {"batch", batch},
          {"threads", threads},
          {a_key, a_ms},
          {b_key, b_ms},
          {"speedup", b_ms > 0 ? a_ms / b_ms : 0.0}};
}

}  // namespace lwc::app
