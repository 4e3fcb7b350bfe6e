// lwc eval MODEL --data D: accuracy and throughput of a model on real data, in the lwc engine.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "data_args.h"
#include "format.h"
#include "lwc/engine.h"
#include "lwc/json_text.h"
#include "lwc/metrics.h"
#include "lwc/model_io.h"

namespace lwc::app {

namespace {
struct EvalOptions {
  std::string model;
  DataArgs data;
  int threads = 0;
  bool json = false;
  bool reference = false;
};
}  // namespace

void addEvalCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto o = std::make_shared<EvalOptions>();
  auto* cmd = app.add_subcommand("eval", "Top-1/top-5 accuracy and images/s of a model on real data");
  cmd->add_option("model", o->model, "ONNX model file")->required();
  o->data.add(cmd, true);
  addThreadsOption(cmd, o->threads);
  cmd->add_flag("--json", o->json, "Machine-readable output (schema lwc.eval)");
  cmd->add_flag("--reference", o->reference, "Use only the reference kernels");
  cmd->callback([&action, o] {
    action = [o] {
      engine::configureThreads(o->threads);
      const Model m = loadInputModel(o->model);
      auto ds = o->data.open(m);
      const int64_t batch = o->data.batchFor(m);
      engine::SessionOptions so;
      so.threads = o->threads;
      so.reference_only = o->reference;
      engine::Session s(m, so);
      const std::string in_name = s.inputNames().at(0);
      AccuracyMeter acc;
      int64_t count = 0, batch_run = 0;
      double busy = 0;  // preprocessing + inference, excluding model load
      Progress bar("eval", ds->size());
      using clock = std::chrono::steady_clock;
      auto t0 = clock::now();
      while (auto b = ds->next(batch)) {
        auto outs = s.runOrdered({{in_name, b->inputs}});
        auto t1 = clock::now();
        busy += std::chrono::duration<double>(t1 - t0).count();
        if (ds->hasLabels()) {
          try {
            acc.add(outs.at(0), b->labels, b->first_index);
          } catch (const Error& e) {  // the scores' shape or a label: name the model and the data
            fail(o->model, " on ", ds->describe(), ": ", e.what());
          }
        }
        count += b->inputs.dim(0);
        batch_run = std::max(batch_run, b->inputs.dim(0));  // the model's fixed batch size overrides --batch
        bar.update(count);
        t0 = clock::now();
      }
      if (count == 0) fail(o->data.data, ": no samples to evaluate");
      const double ips = busy > 0 ? double(count) / busy : 0.0;
      if (o->json) {
        nlohmann::json j{{"schema", "lwc.eval"}, {"schema_version", 1}, {"model", o->model},
                         {"data", ds->describe()}, {"count", count}, {"images_per_s", ips}, {"seconds", busy},
                         {"batch", batch_run}, {"threads", engine::configuredThreads()}};
        if (ds->hasLabels()) {
          j["top1"] = acc.top1();
          j["top5"] = acc.top5();
          j["top1_correct"] = acc.top1Correct();
          j["top5_correct"] = acc.top5Correct();
        }
        std::cout << dumpJson(j) << "\n";
      } else {
        std::printf("model   %s\ndata    %s\n", o->model.c_str(), ds->describe().c_str());
        if (ds->hasLabels())
          std::printf("top-1   %.2f %% (%lld / %lld)\ntop-5   %.2f %% (%lld / %lld)\n", 100 * acc.top1(),
                      static_cast<long long>(acc.top1Correct()), static_cast<long long>(count), 100 * acc.top5(),
                      static_cast<long long>(acc.top5Correct()), static_cast<long long>(count));
        else
          std::printf("labels  none: accuracy not computed\n");
        std::printf("speed   %.0f images/s (%.2f s for %lld images in batches of %lld, %s, preprocessing included)\n",
                    ips, busy, static_cast<long long>(count), static_cast<long long>(batch_run),
                    threadsText(engine::configuredThreads()).c_str());
      }
      return 0;
    };
  });
}

}  // namespace lwc::app
