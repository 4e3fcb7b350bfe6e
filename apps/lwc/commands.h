// Subcommand registration: each cmd_*.cpp adds one CLI11 subcommand and its action.
#pragma once

#include <CLI/CLI.hpp>
#include <cmath>
#include <functional>
#include <string>

#include "lwc/graph.h"

namespace lwc::app {

/// The action runs after parsing and returns the process exit code.
using Action = std::function<int()>;

struct GlobalOptions {
  bool verbose = false;
  bool quiet = false;
};

/// Loads a model a command works on, with the changes of lwc/model_fixups.h (local functions
/// inlined, initializers out of the input list, node names unique), each printed as a warning.
Model loadInputModel(const std::string& path);
/// loadInputModel, then what commands that run passes need: graph outputs without a declared
/// shape get the inferred one (a warning each), and the model must pass lwc's input checks.
Model loadPipelineInput(const std::string& path);

/// Most threads a command accepts: OpenMP aborts or crashes when it cannot create the threads asked
/// for (100 000 crashed lwc), and no machine lwc runs on has more cores.
inline constexpr int kMaxThreads = 1024;
/// Largest batch a command accepts (--batch, --random-batch, --bench-batch): beyond it a value was
/// capped to int64 by CLI11 and failed later with a memory error that named no option.
inline constexpr int64_t kMaxBatch = int64_t(1) << 24;

/// The range a pass's option takes (its OptionSpec), as a CLI11 check, so that a flag's --help and
/// error show the bounds the pass enforces without writing them twice.
CLI::Range optionRange(const std::string& pass, const std::string& option);

/// Refuses nan and inf for a floating-point option (CLI11's range checks let nan through: every
/// comparison with it is false, and `bench --seconds nan` never ended).
inline const CLI::Validator kFinite(
    [](std::string& text) {
      double v = 0;
      if (CLI::detail::lexical_cast(text, v) && !std::isfinite(v)) return "expected a finite number, got " + text;
      return std::string();
    },
    "FINITE");

/// --threads N: 0 = all cores, at most kMaxThreads.
inline CLI::Option* addThreadsOption(CLI::App* cmd, int& threads) {
  return cmd->add_option("--threads", threads, "Threads (0 = all cores)")
      ->default_val(0)
      ->check(CLI::Range(0, kMaxThreads));
}

void addInfoCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addOpsCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addBenchCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addExecCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addEvalCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addCompareCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addPassesCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addRunCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addFuseCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addEncodeCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addDecodeCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addFloat16Command(CLI::App& app, Action& action, const GlobalOptions& g);
void addQuantizeCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addCalibrateCommand(CLI::App& app, Action& action, const GlobalOptions& g);
void addPruneCommand(CLI::App& app, Action& action, const GlobalOptions& g);

}  // namespace lwc::app
