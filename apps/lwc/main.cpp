// lwc: the command-line driver. Exit codes: 0 ok, 1 usage or input error, 2 internal error,
// 3 a quality gate failed (see README, "Exit codes").
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>
#include <iostream>

#include "commands.h"
#include "lwc/engine.h"
#include "lwc/status.h"

int main(int argc, char** argv) {
  // OpenMP reads its settings when the runtime library loads, before main(): set them and re-exec
  // once. Waiting threads sleep instead of spinning (with spinning, a busy machine turned 8 ms
  // mobilenet_v2 runs into 200-400 ms ones at 2 threads), and threads are pinned. A user's own
  // OMP_* settings win.
  if (!std::getenv("LWC_OMP_CONFIGURED")) {
    ::setenv("LWC_OMP_CONFIGURED", "1", 1);
    ::setenv("OMP_PROC_BIND", "close", 0);
    ::setenv("OMP_PLACES", "cores", 0);
    ::setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
    ::execv("/proc/self/exe", argv);  // returns only on failure: then run with the defaults
  }
  using namespace lwc::app;
  CLI::App app{"lwc: make trained neural networks small and fast (ONNX in, ONNX out)", "lwc"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lwc 0.1.0");
  GlobalOptions g;
  app.add_flag("-v,--verbose", g.verbose, "Log details to stderr");
  app.add_flag("-q,--quiet", g.quiet, "Only print errors");
  Action action;
  addInfoCommand(app, action, g);
  addOpsCommand(app, action, g);
  addBenchCommand(app, action, g);
  addExecCommand(app, action, g);
  addEvalCommand(app, action, g);
  addCompareCommand(app, action, g);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 1;
  }
  spdlog::set_level(g.quiet ? spdlog::level::err : g.verbose ? spdlog::level::debug : spdlog::level::info);
  spdlog::set_pattern("lwc: %l: %v");
  try {
    return action ? action() : 1;
  } catch (const lwc::Error& e) {
    std::fprintf(stderr, "lwc: error: %s\n", e.what());
    return 1;
  } catch (const lwc::InternalError& e) {
    std::fprintf(stderr, "lwc: internal error (please report): %s\n", e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "lwc: error: out of memory\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lwc: internal error (please report): %s\n", e.what());
    return 2;
  }
}
