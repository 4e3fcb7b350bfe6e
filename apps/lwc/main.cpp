// lwc: the command-line driver. Exit codes: 0 ok, 1 usage or input error, 2 internal error,
// 3 a quality gate failed (see README, "Exit codes").
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "commands.h"
#include "lwc/engine.h"
#include "lwc/status.h"

int main(int argc, char** argv) {
  // Pin OpenMP threads before the runtime starts (see engine::configureThreads).
  ::setenv("OMP_PROC_BIND", "close", 0);
  ::setenv("OMP_PLACES", "cores", 0);
  // Waiting threads sleep instead of spinning: with spinning, a busy machine turned 8 ms runs into
  // 200-400 ms ones (measured on mobilenet_v2, 2 threads, one core loaded); passive costs little when idle.
  ::setenv("OMP_WAIT_POLICY", "PASSIVE", 0);
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
