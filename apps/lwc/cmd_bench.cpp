// lwc bench MODEL: latency and throughput of the lwc engine on random inputs.
#include <algorithm>
#include <map>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "data_args.h"
#include "run_common.h"
#include "lwc/engine.h"
#include "lwc/json_text.h"
#include "lwc/metrics.h"
#include "lwc/model_io.h"

namespace lwc::app {

namespace {
struct BenchOptions {
  std::string model;
  int64_t batch = 1;
  int threads = 0;
  int warmup = 5;
  int iters = 0;
  double seconds = 3.0;
  bool json = false;
  bool reference = false;
  bool profile = false;
  bool no_split = false;
  DataArgs data;
};

/// Time per op type; with `per_node` also every node, slowest first (graph order breaks ties), with
/// the library implementation it ran on where the kernel names one (oneDNN convolutions).
// Per node the median time of its calls (robust to the slow calls a shared machine gives), per op
// type the sum of its nodes' medians; shares of the sum over all nodes. Where the whole run takes
// under a millisecond (small models at batch 1, whose nodes take microseconds) the times get a
// fourth decimal, so that a node's 0.0014 ms is not printed as 0.001.
void printProfile(const std::vector<engine::NodeProfile>& prof, bool per_node) {
  std::map<std::string, std::pair<double, int>> by_op;
  double total = 0;
  for (const auto& p : prof) {
    auto& e = by_op[p.op_type + " [" + p.impl + "]"];
    e.first += p.median_ms;
    ++e.second;
    total += p.median_ms;
  }
  if (total <= 0) total = 1;
  const int dec = total < 1.0 ? 4 : 3;
  std::vector<std::pair<double, std::string>> rows;
  for (const auto& [k, v] : by_op) rows.emplace_back(v.first, k);
  std::sort(rows.rbegin(), rows.rend());
  std::printf("%-40s %6s %10s %7s\n", "op [impl]", "nodes", "ms/run", "share");
  for (const auto& [ms, k] : rows)
    std::printf("%-40s %6d %10.*f %6.1f%%\n", k.c_str(), by_op[k].second, dec, ms, 100.0 * ms / total);
  std::printf("%-40s %6zu %10.*f   (sum of the nodes' medians over %lld timed runs)\n", "all", prof.size(), dec, total,
               static_cast<long long>(prof.empty() ? 0 : prof[0].calls));
  if (!per_node) return;
  std::vector<size_t> order(prof.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return prof[a].median_ms > prof[b].median_ms; });
  std::printf("\n%-64s %-6s %10s %7s  %s\n", "node", "impl", "ms/run", "share", "primitive");
  for (size_t i : order)
    std::printf("%-64s %-6s %10.*f %6.1f%%  %s\n", prof[i].node.c_str(), prof[i].impl.c_str(), dec,
                 prof[i].median_ms, 100.0 * prof[i].median_ms / total, prof[i].primitive.c_str());
}

}  // namespace

void addBenchCommand(CLI::App& app, Action& action, const GlobalOptions& g) {
  auto o = std::make_shared<BenchOptions>();
  auto* cmd = app.add_subcommand("bench", "Measure latency and throughput of the lwc engine on random inputs");
  cmd->add_option("model", o->model, "ONNX model file")->required();
  cmd->add_option("--batch", o->batch, "Batch size for symbolic first dimensions")
      ->default_val(1)
      ->check(CLI::Range(int64_t(1), kMaxBatch));
  addThreadsOption(cmd, o->threads);
  cmd->add_option("--warmup", o->warmup, "Untimed runs first")->default_val(5)->check(CLI::NonNegativeNumber);
  auto* iters = cmd->add_option("--iters", o->iters, "Timed runs (0: run for --seconds)")->default_val(0)->check(CLI::NonNegativeNumber);
  auto* seconds = cmd->add_option("--seconds", o->seconds, "Time budget for timed runs (instead of --iters)")
                      ->default_val(3.0)
                      ->check(kFinite)
                      ->check(CLI::PositiveNumber);
  cmd->add_flag("--json", o->json, "Machine-readable output");
  cmd->add_option("--data", o->data.data, "Feed the first --batch samples of this data instead of random inputs");
  cmd->add_option("--preprocess", o->data.preprocess, "Preprocessing JSON for --data")->needs("--data");
  cmd->add_flag("--reference", o->reference, "Use only the reference kernels (no oneDNN)");
  cmd->add_flag("--profile", o->profile, "Print the time per op type (and per node with -v)");
  cmd->add_flag("--no-split-batch", o->no_split,
                "Run every layer on the whole batch (by default the first, memory-bound layers of a large batch run a few "
                "samples at a time; -v says how)");
  cmd->callback([&action, o, &g, iters, seconds] {
    // Both given, one would be ignored; --iters 0 means "run for --seconds", so it may come along.
    if (iters->count() > 0 && seconds->count() > 0 && o->iters > 0)
      throw CLI::ValidationError("--iters " + std::to_string(o->iters) + " and --seconds: give one (--iters 0 runs for --seconds)");
    action = [o, &g] {
      engine::configureThreads(o->threads);
      const Model m = loadInputModel(o->model);
      if (const int64_t fixed = benchBatchFor(m, o->batch); fixed != o->batch) {
        spdlog::info("batch {}: the model input's fixed batch size (not --batch {})", fixed, o->batch);
        o->batch = fixed;  // items/s counts what is run
      }
      engine::SessionOptions so;
      so.threads = o->threads;
      so.reference_only = o->reference;
      so.profile = o->profile;
      so.split_batch = !o->no_split;
      engine::Session s(m, so);
      std::mt19937 rng(42);
      engine::TensorMap feeds;
      if (!o->data.data.empty()) {
        o->data.batch = o->batch;
        auto ds = o->data.open(m);
        auto b = ds->next(o->batch);
        if (!b) fail(o->data.data, ": no samples");
        if (b->inputs.dim(0) != o->batch)
          fail(o->data.data, ": holds ", b->inputs.dim(0), " samples, fewer than --batch ", o->batch);
        feeds[m.graph.realInputs().at(0)->name] = b->inputs;
      } else {
        if (const std::string why = benchShapeProblem(m); !why.empty())
          fail(o->model, ": ", why,
               why.find("element type") != std::string::npos
                   ? std::string("; convert the model's inputs to float32 (or float16)")
                   : std::string("; lwc bench makes random inputs of the declared shape: give --data DIR to feed real samples instead"));
        feeds = randomFeeds(m, o->batch, rng);
      }
      using clock = std::chrono::steady_clock;
      for (int i = 0; i < o->warmup; ++i) s.run(feeds);
      s.resetProfile();  // the profile covers the timed runs only
      std::vector<double> ms;
      const auto start = clock::now();
      for (int i = 0; o->iters > 0 ? i < o->iters : true; ++i) {
        const auto t0 = clock::now();
        s.run(feeds);
        const auto t1 = clock::now();
        ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        if (o->iters == 0 && std::chrono::duration<double>(t1 - start).count() >= o->seconds && ms.size() >= 10) break;
      }
      if (const std::string split = s.batchSplit(); !split.empty()) spdlog::debug("batch split: {}", split);
      const double med = percentile(ms, 0.5), p90 = percentile(ms, 0.9);
      double mean = 0;
      for (double x : ms) mean += x;
      mean /= static_cast<double>(ms.size());
      const double items = static_cast<double>(o->batch) * 1000.0 / mean;
      if (o->json) {
        nlohmann::json j{{"schema", "lwc.bench"}, {"schema_version", 1}, {"runtime", "lwc"},
                         {"model", o->model},     {"batch", o->batch},   {"threads", engine::configuredThreads()},
                         {"median_ms", med},      {"p90_ms", p90},       {"mean_ms", mean},
                         {"items_per_s", items},  {"iters", ms.size()},  {"reference_kernels", o->reference},
                         {"batch_split", s.batchSplit()}};
        if (o->profile) {  // every node, in graph order (the text tables sort them)
          nlohmann::json nodes = nlohmann::json::array();
          for (const auto& p : s.profile())
            nodes.push_back({{"node", p.node}, {"op_type", p.op_type}, {"impl", p.impl}, {"primitive", p.primitive},
                             {"median_ms", p.median_ms}, {"calls", p.calls}});
          j["profile"] = nodes;
        }
        std::cout << dumpJson(j) << "\n";
      } else {
        std::printf("%s  batch %lld  threads %d  runs %zu\n", o->model.c_str(), static_cast<long long>(o->batch),
                    engine::configuredThreads(), ms.size());
        std::printf("latency  median %.3f ms  p90 %.3f ms  mean %.3f ms\nthroughput  %.1f items/s (batch / mean latency)\n", med, p90, mean, items);
      }
      if (o->profile && !o->json) {
        std::printf("\n");
        printProfile(s.profile(), g.verbose);
      }
      return 0;
    };
  });
}

}  // namespace lwc::app
