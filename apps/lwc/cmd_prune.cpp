// lwc prune MODEL --sparsity S [--iters N] [--recover bias|lsq --calib D] -o OUT: cleanup, then magnitude
// pruning to the target sparsity in N steps (cubic schedule, as gradual pruning), each followed by the
// recovery step, evaluated after each step.
// lwc prune MODEL --channels R | --macs-reduction F [--importance l1|l2|bn_gamma] [--recover lsq --calib D]
// -o OUT: channel pruning (prune_channels) with the cleanup passes.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <span>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "format.h"
#include "ort_peer.h"
#include "lwc/engine.h"
#include "lwc/pipeline.h"
#include "passes/prune_magnitude.h"
#include "passes/registry.h"
#include "run_common.h"

namespace lwc::app {

namespace {
constexpr int kMaxPruneIters = 1000;

struct PruneArgs {
  RunArgs run;
  double sparsity = 0.5;
  int iters = 1;
  std::string scope = "layer", pattern = "unstructured";
  std::vector<std::string> include, exclude;
  int64_t min_params = 1000;
  std::string recover = "none";
  std::string criterion = "magnitude";
  int64_t obs_rounds = 1;
  double lsq_cv_rows = 0;
  double channels = 0, macs_reduction = 0;
  std::string importance = "l1";
  int64_t min_channels = 4, round_to = 0;
  int64_t bench_batch = 32;
  OrtBenchOptions ort;
};

// The flags messages name (PassOptions::key) instead of the passes' option keys.
const OptionNames kPruneFlags = {
    {"sparsity", "--sparsity"},       {"scope", "--scope"},           {"pattern", "--pattern"},
    {"include", "--include"},         {"exclude", "--exclude"},       {"min_params", "--min-params"},
    {"recover", "--recover"},         {"criterion", "--criterion"},   {"obs_rounds", "--obs-rounds"},
    {"lsq_cv_rows", "--lsq-cv-rows"}, {"importance", "--importance"}, {"min_channels", "--min-channels"},
    {"round_to", "--round-to"},       {"ratio", "--channels"},        {"macs_reduction", "--macs-reduction"}};
}  // namespace

void addPruneCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto a = std::make_shared<PruneArgs>();
  auto* cmd = app.add_subcommand("prune", "Pruning: zero weights by magnitude (--sparsity, in --iters steps) or remove whole channels (--channels, --macs-reduction), with optional recovery (cleanup + prune_magnitude or prune_channels)");
  cmd->add_option("model", a->run.positional, "ONNX model file (float)")->required()->expected(1);
  addRunOptions(cmd, a->run);
  auto* sp = cmd->add_option("--sparsity", a->sparsity, "Target fraction of zero weights, in [0, 1)");
  cmd->add_option("--iters", a->iters, "Steps from 0 to the target (cubic schedule)");
  cmd->add_option("--scope", a->scope, "layer | global")->check(CLI::IsMember({"layer", "global"}));
  cmd->add_option("--pattern", a->pattern, "unstructured | N:M (e.g. 2:4)");
  cmd->add_option("--include", a->include, "Only these node names or op types (comma-separated)");
  cmd->add_option("--exclude", a->exclude, "Node names or op types to leave dense (comma-separated)");
  cmd->add_option("--recover", a->recover,
                  "none | bias (mean-shift correction) | lsq (least-squares re-fit of each layer); after each step, needs --calib")
      ->check(CLI::IsMember({"none", "bias", "lsq"}));
  cmd->add_option("--criterion", a->criterion,
                  "Which weights to zero: magnitude (smallest |w|) | obs (least increase of each layer's output error "
                  "on the calibration data, Optimal Brain Surgeon; needs --recover lsq)")
      ->check(CLI::IsMember({"magnitude", "obs"}));
  cmd->add_option("--obs-rounds", a->obs_rounds,
                  "--criterion obs: choose each layer's weights in this many rounds, each scored after the re-fit of "
                  "the rounds before (no extra data pass)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--min-params", a->min_params, "Skip layers with fewer weights")->check(CLI::NonNegativeNumber);
  cmd->add_option("--lsq-cv-rows", a->lsq_cv_rows,
                  "lsq: a Gemm/MatMul layer with fewer calibration rows than this times its inputs + 1 (a classifier "
                  "after global pooling: one row per image) chooses its ridge by 4-fold cross-validation; e.g. 8 "
                  "(default 0 = never)")
      ->check(optionRange("prune_magnitude", "lsq_cv_rows"));
  auto* ch = cmd->add_option("--channels", a->channels,
                             "Channel pruning: remove this fraction of every prunable channel group (prune_channels)")
                       ->default_str("");
  auto* mr = cmd->add_option("--macs-reduction", a->macs_reduction,
                             "Channel pruning: remove channels until MACs drop by at least this fraction")
                       ->default_str("");
  ch->excludes(mr);
  sp->excludes(ch);
  sp->excludes(mr);
  cmd->add_option("--importance", a->importance, "Channel pruning: l1 | l2 | bn_gamma")
      ->check(CLI::IsMember({"l1", "l2", "bn_gamma"}));
  cmd->add_option("--min-channels", a->min_channels, "Channel pruning: keep at least this many channels per group")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--round-to", a->round_to,
                  "Channel pruning: kept channels per group rounded up to a multiple of this (default 0 = auto: 16 or 8 "
                  "where the original count is a multiple, so ONNX Runtime keeps its blocked kernels; 1 = any count)")
      ->check(optionRange("prune_channels", "round_to"));
  cmd->add_option("--bench-batch", a->bench_batch,
                  "Channel pruning: batch for the before/after latency in the lwc engine in the report (0 = skip)")
      ->check(CLI::Range(int64_t(0), kMaxBatch));
  a->ort.add(cmd, "the latency before/after channel pruning");
  cmd->callback([&action, a, cmd] {
    action = [a, cmd] {
      // Which kind of pruning is asked for follows from the options given, not their values: a
      // --channels of 0, -0.5 or nan used to fall through to 50 % magnitude pruning.
      const bool channels = cmd->count("--channels") > 0 || cmd->count("--macs-reduction") > 0;
      // Options of the other kind would be ignored without a word: refused instead.
      const char* const magnitude_only[] = {"--sparsity", "--iters", "--scope", "--pattern", "--include",
                                            "--min-params", "--criterion", "--obs-rounds"};
      const char* const channel_only[] = {"--importance", "--min-channels", "--round-to", "--bench-batch", "--ort-bench",
                                          "--ort-tool"};
      // (--bench-batch 0, "no timing", is what magnitude pruning does anyway: scripts pass it to both.)
      for (const char* opt : channels ? std::span<const char* const>(magnitude_only) : std::span<const char* const>(channel_only))
        if (cmd->count(opt) > 0 && !(std::string_view(opt) == "--bench-batch" && a->bench_batch == 0))
          fail("prune: ", opt, channels ? " applies to magnitude pruning (--sparsity), not to channel pruning (--channels, --macs-reduction); drop it"
                                        : " applies to channel pruning (--channels or --macs-reduction); drop it or prune channels");
      if (!(a->sparsity >= 0.0 && a->sparsity < 1.0))
        fail("prune: --sparsity ", a->sparsity, " is outside [0, 1); e.g. 0.5 zeroes half of the weights");
      if (a->iters < 1) fail("prune: --iters ", a->iters, ": give at least 1 step");
      // Each step is a whole prune (and recovery) pass over the model: a typo such as 1000000 would
      // run for days and hold a million pipeline steps.
      if (a->iters > kMaxPruneIters)
        fail("prune: --iters ", a->iters, " is more than ", kMaxPruneIters,
             " steps; gradual pruning uses 10-100 (each step prunes and recovers the whole model)");
      if (!(a->lsq_cv_rows >= 0.0 && std::isfinite(a->lsq_cv_rows)))
        fail("prune: --lsq-cv-rows ", a->lsq_cv_rows, " must be a finite number >= 0");
      // Pruning without recovery reads no data: a user who gave some most likely meant to recover
      // (channel pruning at 30 % cost resnet 43 points on the sample without it).
      // With --macs-reduction the data also scores the per-group steps (their damage on 128 samples).
      if (a->recover == "none" && !a->run.calib.empty())
        spdlog::warn(cmd->count("--macs-reduction")
                         ? "prune: --recover is none, so the --calib data only chooses which groups' channels go (their "
                           "damage on up to 128 samples) and nothing re-fits the pruned layers; add --recover lsq (least-squares "
                           "re-fit of each consumer layer) to recover accuracy"
                         : "prune: --calib is given but --recover is none, so nothing re-fits the pruned layers on that "
                           "data; add --recover lsq (least-squares re-fit of each pruned layer) to recover accuracy");
      if (a->pattern != "unstructured" && a->iters != 1)
        fail("prune: --pattern ", a->pattern, " is reached in one step; drop --iters");
      if (channels) {
        if (cmd->count("--channels") && !(a->channels > 0.0 && a->channels < 1.0))
          fail("prune: --channels ", a->channels, " is outside (0, 1); e.g. 0.3 removes 30 % of the channels");
        if (cmd->count("--macs-reduction") && !(a->macs_reduction > 0.0 && a->macs_reduction <= 0.95))
          fail("prune: --macs-reduction ", a->macs_reduction, " is outside (0, 0.95]; e.g. 0.3 cuts MACs by 30 %");
        if (a->recover == "bias") fail("prune: channel pruning recovers with --recover lsq (or none), not bias");
        const std::string ort_tool = a->ort.resolve("prune", a->bench_batch);
        // l1/l2 rank the filters after BatchNormalization is folded into them; bn_gamma reads the
        // BatchNormalization scales, so it runs before fuse_batchnorm folds them.
        Pipeline clean = cleanupPipeline();
        Pipeline p;
        p.name = "prune-channels";
        p.origin = "lwc prune";
        PipelineStep st;
        st.where = "prune_channels";
        st.pass = passes::builtinPasses().create("prune_channels", st.where);
        nlohmann::json o = {{"importance", a->importance},
                            {"exclude", a->exclude},
                            {"min_channels", a->min_channels},
                            {"round_to", a->round_to},
                            {"recover", a->recover}};
        if (cmd->count("--lsq-cv-rows")) o["lsq_cv_rows"] = a->lsq_cv_rows;  // refused without lsq, as in pipelines
        if (cmd->count("--macs-reduction"))
          o["macs_reduction"] = a->macs_reduction;
        else
          o["ratio"] = a->channels;
        st.pass->configure(o, st.where, kPruneFlags);
        // bn_gamma: the cleanup up to fuse_batchnorm first (constants folded, Reshapes and Slices
        // simplified, so the pass sees the groups it sees with l1), then the pruning, then the rest.
        // Run before the whole cleanup, it found no prunable group in tinyformer and wrote the
        // model unchanged, where l1 prunes its MLP widths and a model without BatchNormalization
        // is an error.
        bool placed = false;
        for (auto& s : clean.steps) {
          if (!placed && a->importance == "bn_gamma" && s.pass->name() == "fuse_batchnorm") {
            p.steps.push_back(std::move(st));
            placed = true;
          }
          p.steps.push_back(std::move(s));
        }
        if (!placed) p.steps.push_back(std::move(st));
        RunHooks hooks;
        auto lat = std::make_shared<std::pair<double, double>>(0.0, 0.0);
        auto ort = std::make_shared<OrtPair>();
        auto bench_batch = std::make_shared<int64_t>(a->bench_batch);
        const bool bench_given = cmd->count("--bench-batch") > 0;
        hooks.on_stage = [a, lat, ort, ort_tool, bench_batch, bench_given](const Pass& pass, const Model& before,
                                                                            const Model& after, StageRecord& rec) {
          if (pass.name() != "prune_channels" || a->bench_batch <= 0) return;
          std::optional<Shape> sample;  // the data's, for dimensions the model leaves open
          if (!prepareTiming(before, a->run, sample, rec.result.notes)) return;
          const Shape* sp = sample ? &*sample : nullptr;
          std::string batch_note;
          const int64_t bb = reportBenchBatch(before, a->bench_batch, bench_given, batch_note);
          *bench_batch = bb;
          *lat = pairedMedianLatencyMs(before, after, bb, a->run.threads, sp);
          rec.details = {{"latency_ms",
                          {{"batch", bb},
                           {"threads", engine::configuredThreads()},
                           {"before", lat->first},
                           {"after", lat->second},
                           {"speedup", lat->second > 0 ? lat->first / lat->second : 0.0}}}};
          if (sp) rec.details["latency_ms"]["sample_shape"] = *sp;
          if (!batch_note.empty()) rec.result.notes.push_back(batch_note);
          if (!ort_tool.empty() && sp) {
            rec.result.notes.push_back(kOrtOpenShapeNote);
          } else if (!ort_tool.empty()) {
            *ort = ortBenchPair(ort_tool, before, after, bb, a->run.threads);
            rec.details["ort_latency_ms"] = ort->toJson(bb, "before", "after");
          }
        };
        hooks.print_extra = [lat, ort, bench_batch](const PipelineReport&) {
          if (lat->first > 0)
            std::printf("latency  lwc engine, batch %lld, %s: %.3f -> %.3f ms (%.2fx)\n",
                        static_cast<long long>(*bench_batch), threadsText(engine::configuredThreads()).c_str(), lat->first, lat->second,
                        lat->first / lat->second);
          if (ort->a_ms > 0)
            std::printf("latency  ONNX Runtime %s, batch %lld, %s: %.3f -> %.3f ms (%.2fx)\n", ort->version.c_str(),
                        static_cast<long long>(*bench_batch), threadsText(ort->threads).c_str(), ort->a_ms, ort->b_ms, ort->a_ms / ort->b_ms);
        };
        return runPipelineCommand(std::move(p), a->run.positional.at(0), a->run, hooks);
      }
      Pipeline p = cleanupPipeline();
      p.name = "prune";
      p.origin = "lwc prune";
      for (int t = 1; t <= a->iters; ++t) {
        // Gradual pruning (Zhu & Gupta 2017): s_t = s_f · (1 - (1 - t/n)^3).
        const double s_t = a->sparsity * (1.0 - std::pow(1.0 - double(t) / a->iters, 3.0));
        PipelineStep st;
        st.where = "prune step " + std::to_string(t);
        st.pass = passes::builtinPasses().create("prune_magnitude", st.where);
        nlohmann::json o = {{"scope", a->scope},         {"pattern", a->pattern},     {"include", a->include},
                            {"exclude", a->exclude},     {"min_params", a->min_params}, {"recover", a->recover},
                            {"criterion", a->criterion}};
        // An N:M pattern sets its own sparsity: --sparsity goes to the pass only when given, which
        // refuses one that disagrees; --obs-rounds and --lsq-cv-rows likewise, refused without
        // --criterion obs and --recover lsq.
        if (a->pattern == "unstructured" || cmd->count("--sparsity")) o["sparsity"] = s_t;
        if (cmd->count("--obs-rounds")) o["obs_rounds"] = a->obs_rounds;
        if (cmd->count("--lsq-cv-rows")) o["lsq_cv_rows"] = a->lsq_cv_rows;
        st.pass->configure(o, st.where, kPruneFlags);
        p.steps.push_back(std::move(st));
      }
      return runPipelineCommand(std::move(p), a->run.positional.at(0), a->run);
    };
  });
}

}  // namespace lwc::app
