// lwc prune MODEL --sparsity S [--iters N] [--recover bias|lsq --calib D] -o OUT: cleanup, then magnitude
// pruning to the target sparsity in N steps (cubic schedule, as gradual pruning), each followed by the
// recovery step, evaluated after each step.
#include <cmath>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "lwc/pipeline.h"
#include "passes/prune_magnitude.h"
#include "passes/registry.h"
#include "run_common.h"

namespace lwc::app {

namespace {
struct PruneArgs {
  RunArgs run;
  double sparsity = 0.5;
  int iters = 1;
  std::string scope = "layer", pattern = "unstructured";
  std::vector<std::string> include, exclude;
  int64_t min_params = 1000;
  std::string recover = "none";
};
}  // namespace

void addPruneCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto a = std::make_shared<PruneArgs>();
  auto* cmd = app.add_subcommand("prune", "Magnitude pruning (cleanup + prune_magnitude, optionally in several steps)");
  cmd->add_option("model", a->run.positional, "ONNX model file (float)")->required()->expected(1);
  addRunOptions(cmd, a->run);
  cmd->add_option("--sparsity", a->sparsity, "Target fraction of zero weights, in [0, 1)");
  cmd->add_option("--iters", a->iters, "Steps from 0 to the target (cubic schedule)");
  cmd->add_option("--scope", a->scope, "layer | global")->check(CLI::IsMember({"layer", "global"}));
  cmd->add_option("--pattern", a->pattern, "unstructured | N:M (e.g. 2:4)");
  cmd->add_option("--include", a->include, "Only these node names or op types (comma-separated)")->delimiter(',');
  cmd->add_option("--exclude", a->exclude, "Node names or op types to leave dense (comma-separated)")->delimiter(',');
  cmd->add_option("--recover", a->recover,
                  "none | bias (mean-shift correction) | lsq (least-squares re-fit of each layer); after each step, needs --calib")
      ->check(CLI::IsMember({"none", "bias", "lsq"}));
  cmd->add_option("--min-params", a->min_params, "Skip layers with fewer weights")->check(CLI::NonNegativeNumber);
  cmd->callback([&action, a] {
    action = [a] {
      if (!(a->sparsity >= 0.0 && a->sparsity < 1.0))
        fail("prune: --sparsity ", a->sparsity, " is outside [0, 1); e.g. 0.5 zeroes half of the weights");
      if (a->iters < 1) fail("prune: --iters ", a->iters, ": give at least 1 step");
      if (a->pattern != "unstructured" && a->iters != 1)
        fail("prune: --pattern ", a->pattern, " is reached in one step; drop --iters");
      Pipeline p = cleanupPipeline();
      p.name = "prune";
      p.origin = "lwc prune";
      for (int t = 1; t <= a->iters; ++t) {
        // Gradual pruning (Zhu & Gupta 2017): s_t = s_f · (1 - (1 - t/n)^3).
        const double s_t = a->sparsity * (1.0 - std::pow(1.0 - double(t) / a->iters, 3.0));
        PipelineStep st;
        st.where = "prune step " + std::to_string(t);
        st.pass = passes::builtinPasses().create("prune_magnitude", st.where);
        st.pass->configure({{"sparsity", s_t},
                            {"scope", a->scope},
                            {"pattern", a->pattern},
                            {"include", a->include},
                            {"exclude", a->exclude},
                            {"min_params", a->min_params},
                            {"recover", a->recover}},
                           st.where);
        p.steps.push_back(std::move(st));
      }
      return runPipelineCommand(std::move(p), a->run.positional.at(0), a->run);
    };
  });
}

}  // namespace lwc::app
