// lwc compare A B --data D: how far model B's outputs (and, with --per-layer, every tensor the two
// models share by name) are from model A's on the same inputs. The first tool to reach for when a
// compressed model goes wrong: the worst layer is usually where the damage starts. With labelled
// data, also both models' top-1 and whether the difference is more than chance: the samples only
// one of them gets right, and the exact McNemar test on them.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "format.h"
#include "data_args.h"
#include "lwc/engine.h"
#include "lwc/json_text.h"
#include "lwc/metrics.h"
#include "lwc/model_io.h"

namespace lwc::app {

namespace {
// SQNR below which a shared tensor "differs" (see first_div).
constexpr double kRoundingDb = 100.0;

struct CompareOptions {
  std::string a, b;
  DataArgs data;
  bool per_layer = false;
  bool json = false;
  int threads = 0;
};

struct Row {
  std::string name;
  ErrorMeter err;
  int64_t agree = 0, rows = 0;  // top-1 agreement for [N, C] outputs
  bool scores = false;
  // With labels: samples each model gets right, and those only one of them does.
  int64_t labelled = 0, right_a = 0, right_b = 0, only_a = 0, only_b = 0;
};

nlohmann::json rowJson(const Row& r) {
  nlohmann::json j{{"name", r.name},
                   {"elements", r.err.elements()},
                   {"max_abs_diff", jsonNumber(r.err.maxAbsDiff())},
                   {"sqnr_db", jsonNumber(r.err.sqnrDb())},
                   {"cosine", jsonNumber(r.err.cosine())}};
  if (r.scores) j["top1_agreement"] = r.rows ? double(r.agree) / double(r.rows) : 0.0;
  if (r.labelled > 0)
    j["labels"] = {{"samples", r.labelled},
                   {"reference_top1", double(r.right_a) / double(r.labelled)},
                   {"candidate_top1", double(r.right_b) / double(r.labelled)},
                   {"only_reference_right", r.only_a},
                   {"only_candidate_right", r.only_b},
                   {"mcnemar_p", mcnemarExactP(r.only_a, r.only_b)}};
  return j;
}

}  // namespace

void addCompareCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto o = std::make_shared<CompareOptions>();
  auto* cmd = app.add_subcommand("compare", "Compare two models' outputs (and shared tensors) on the same inputs");
  cmd->add_option("reference", o->a, "Reference ONNX model (e.g. the original)")->required();
  cmd->add_option("candidate", o->b, "Model to compare (e.g. the compressed one)")->required();
  o->data.add(cmd, true);
  cmd->add_flag("--per-layer", o->per_layer,
                "Also compare every tensor name the two models share, worst first (runs both models unfused, so that "
                "every tensor exists: output figures can differ in the last bits from a run without it)");
  cmd->add_flag("--json", o->json, "Machine-readable output (schema lwc.compare)");
  addThreadsOption(cmd, o->threads);
  cmd->callback([&action, o] {
    action = [o] {
      engine::configureThreads(o->threads);
      const Model ma = loadInputModel(o->a), mb = loadInputModel(o->b);
      if (ma.graph.outputs.size() != mb.graph.outputs.size())
        fail(o->b, ": has ", mb.graph.outputs.size(), " outputs but ", o->a, " has ", ma.graph.outputs.size());
      auto ds = o->data.open(ma, &mb);
      const int64_t batch_size = o->data.batchFor(ma, &mb, o->per_layer);
      engine::SessionOptions so;
      so.threads = o->threads;
      so.observable = o->per_layer;
      engine::Session sa(ma, so), sb(mb, so);
      const std::string ina = sa.inputNames().at(0), inb = sb.inputNames().at(0);
      // A float16 copy of a float32 model (or the reverse) gets the same samples in its own precision,
      // and its outputs are compared in float32.
      auto isHalfOrSingle = [](DType t) { return t == DType::Float16 || t == DType::Float32; };
      auto feed = [&](const Tensor& x, const Model& m) {
        const DType want = m.graph.realInputs().at(0)->dtype;
        return isHalfOrSingle(x.dtype()) && isHalfOrSingle(want) && x.dtype() != want ? x.cast(want) : x;
      };
      auto f32 = [](const Tensor& t) { return t.dtype() == DType::Float16 ? t.cast(DType::Float32) : t; };

      std::vector<Row> outs(ma.graph.outputs.size());
      for (size_t i = 0; i < outs.size(); ++i) outs[i].name = ma.graph.outputs[i].name;
      // Outputs pair by name when B has each of A's output names (compressing keeps them, the order
      // may change); otherwise by position (a converter renamed them).
      std::vector<size_t> in_b(outs.size());
      {
        std::map<std::string, size_t> b_at;
        for (size_t i = 0; i < mb.graph.outputs.size(); ++i) b_at.emplace(mb.graph.outputs[i].name, i);
        const bool by_name = std::all_of(outs.begin(), outs.end(), [&](const Row& r) { return b_at.count(r.name) > 0; });
        for (size_t i = 0; i < outs.size(); ++i) in_b[i] = by_name ? b_at.at(outs[i].name) : i;
      }
      std::map<std::string, Row> layers;
      // Names both models compute with other shapes (a channel-pruned layer): not comparable, listed.
      std::map<std::string, std::pair<Shape, Shape>> other_shapes;
      std::map<std::string, size_t> first_seen;  // topological position in A, for reports
      // 8-bit tensors of B with no 8-bit counterpart in A and no float twin: the outputs of B's integer
      // ops (QLinearConv ...) in QOperator form. A QuantizeLinear's output is the int8 copy of its float
      // input, which is compared where A has it (the QDQ form), so it is not one of them.
      std::set<std::string> integer_only, quantize_outputs;
      for (const auto& n : mb.graph.nodes)
        if (n.op_type == "QuantizeLinear" || n.op_type == "DynamicQuantizeLinear") quantize_outputs.insert(n.outputs[0]);
      Progress bar("compare", ds->size());
      int64_t done = 0;
      while (auto batch = ds->next(batch_size)) {
        std::map<std::string, Tensor> acts;
        auto ra = sa.runOrdered({{ina, feed(batch->inputs, ma)}},
                                o->per_layer ? engine::Observer([&](const std::string& n, const Tensor& t) {
                                  acts[n] = f32(t);  // shares the buffer; the engine allocates fresh outputs
                                  first_seen.emplace(n, first_seen.size());
                                })
                                             : engine::Observer());
        auto rb = sb.runOrdered({{inb, feed(batch->inputs, mb)}},
                                o->per_layer ? engine::Observer([&](const std::string& n, const Tensor& half) {
                                  const Tensor t = f32(half);
                                  auto it = acts.find(n);
                                  // An 8-bit tensor with no 8-bit counterpart: a quantized activation of a
                                  // QOperator file (QLinearConv's output), which has no float twin to meet.
                                  if ((t.dtype() == DType::UInt8 || t.dtype() == DType::Int8) &&
                                      (it == acts.end() || isFloat(it->second.dtype())) && !quantize_outputs.count(n))
                                    integer_only.insert(n);
                                  if (it == acts.end() || !isFloat(t.dtype()) || !isFloat(it->second.dtype())) return;
                                  if (it->second.shape() != t.shape()) {
                                    other_shapes.emplace(n, std::make_pair(it->second.shape(), t.shape()));
                                    return;
                                  }
                                  Row& r = layers[n];
                                  r.name = n;
                                  r.err.add(it->second, t);
                                })
                                             : engine::Observer());
        for (size_t i = 0; i < outs.size(); ++i) {
          const Tensor ta = f32(ra[i]), tb = f32(rb[in_b[i]]);
          if (ta.shape() != tb.shape())
            fail("output '", outs[i].name, "' has shape ", shapeStr(ta.shape()), " in ", o->a, " but ", shapeStr(tb.shape()),
                 " in ", o->b);
          outs[i].err.add(ta, tb);
          if (isClassScores(ta)) {
            outs[i].scores = true;
            const auto pa = argmaxRows(ta), pb = argmaxRows(tb);
            for (size_t k = 0; k < pa.size(); ++k) outs[i].agree += pa[k] >= 0 && pa[k] == pb[k];
            outs[i].rows += static_cast<int64_t>(pa.size());
            const int64_t classes = ta.dim(1);
            // Labels score the first output only, as lwc eval and pipeline reports read them (a second
            // [N, 84] output is hidden features, not classes).
            if (i == 0 && batch->labels.size() == pa.size())
              for (size_t k = 0; k < pa.size(); ++k) {
                // As lwc eval: a label the model cannot predict is bad data, not a wrong answer.
                if (batch->labels[k] < 0 || batch->labels[k] >= classes)
                  fail(ds->describe(), ": label ", batch->labels[k], " of sample ", batch->first_index + int64_t(k),
                       " is outside the ", classes, " classes of output '", outs[i].name, "'");
                const bool a_ok = pa[k] == batch->labels[k], b_ok = pb[k] == batch->labels[k];
                Row& r = outs[i];
                ++r.labelled;
                r.right_a += a_ok;
                r.right_b += b_ok;
                r.only_a += a_ok && !b_ok;
                r.only_b += b_ok && !a_ok;
              }
          }
        }
        done += batch->inputs.dim(0);
        bar.update(done);
      }
      std::vector<const Row*> worst;
      for (const auto& [n, r] : layers) worst.push_back(&r);
      // Worst first: NaN SQNR (the tensor holds NaN where the other does not), then lowest SQNR; ties
      // (e.g. equal inf) in graph order. NaN must be ranked explicitly: `<` on it is no ordering.
      std::stable_sort(worst.begin(), worst.end(), [&](const Row* x, const Row* y) {
        const double sx = x->err.sqnrDb(), sy = y->err.sqnrDb();
        if (std::isnan(sx) != std::isnan(sy)) return std::isnan(sx);
        if (!std::isnan(sx) && sx != sy) return sx < sy;
        return first_seen[x->name] < first_seen[y->name];
      });
      // Where the damage starts: the first tensor, in the reference's execution order, that differs
      // beyond float rounding or has another shape. Rounding alone (a model against its `lwc fuse`
      // copy, BatchNorm folded) leaves every tensor above 120 dB on the bundled models; an int8
      // tensor is near 40, float16 near 70. Every tensor that differs at all named the first
      // folded BatchNorm of each fused model.
      std::string first_div;
      {
        size_t best = SIZE_MAX;
        auto consider = [&](const std::string& name) {
          if (first_seen[name] < best) {
            best = first_seen[name];
            first_div = name;
          }
        };
        for (const auto* r : worst)
          if (!(r->err.sqnrDb() >= kRoundingDb)) consider(r->name);  // NaN SQNR too
        for (const auto& [name, shapes] : other_shapes) consider(name);
      }
      std::vector<std::string> reshaped;  // other_shapes in the reference's execution order
      for (const auto& [name, shapes] : other_shapes) reshaped.push_back(name);
      std::sort(reshaped.begin(), reshaped.end(),
                [&](const std::string& x, const std::string& y) { return first_seen[x] < first_seen[y]; });
      if (o->json) {
        nlohmann::json j{{"schema", "lwc.compare"}, {"schema_version", 1}, {"reference", o->a}, {"candidate", o->b},
                         {"data", ds->describe()}, {"samples", done}};
        j["outputs"] = nlohmann::json::array();
        for (const auto& r : outs) j["outputs"].push_back(rowJson(r));
        if (o->per_layer) {
          j["layers"] = nlohmann::json::array();
          for (const auto* r : worst) j["layers"].push_back(rowJson(*r));
          j["first_divergence"] = first_div.empty() ? nlohmann::json(nullptr) : nlohmann::json(first_div);
          j["other_shapes"] = nlohmann::json::array();
          for (const auto& name : reshaped)
            j["other_shapes"].push_back({{"name", name},
                                         {"reference_shape", other_shapes.at(name).first},
                                         {"candidate_shape", other_shapes.at(name).second}});
          j["candidate_integer_tensors"] = integer_only.size();
        }
        std::cout << dumpJson(j) << "\n";
        return 0;
      }
      std::printf("reference  %s\ncandidate  %s\ndata       %s (%lld samples)\n\n", o->a.c_str(), o->b.c_str(),
                  ds->describe().c_str(), static_cast<long long>(done));
      std::printf("%-32s %10s %12s %10s %10s\n", "output", "top-1 agr", "max |diff|", "SQNR dB", "cosine");
      for (const auto& r : outs) {
        char agr[32] = "-";
        if (r.scores) std::snprintf(agr, sizeof agr, "%.2f %%", 100.0 * double(r.agree) / double(std::max<int64_t>(r.rows, 1)));
        std::printf("%s %10s %12s %10s %10s\n", column(r.name, 32).c_str(), agr, formatFigure(r.err.maxAbsDiff(), 4, false).c_str(),
                    formatFigure(r.err.sqnrDb(), 2, true).c_str(), formatFigure(r.err.cosine(), 6, true).c_str());
      }
      for (const auto& r : outs) {
        if (r.labelled == 0) continue;
        const double pv = mcnemarExactP(r.only_a, r.only_b);
        std::printf("\n%s against the labels: top-1 %.2f %% (reference) vs %.2f %% (candidate); %lld %s only "
                    "the reference gets right, %lld only the candidate; exact McNemar p = %.3g%s\n",
                    printable(r.name).c_str(), 100.0 * double(r.right_a) / double(r.labelled),
                    100.0 * double(r.right_b) / double(r.labelled), static_cast<long long>(r.only_a),
                    r.only_a == 1 ? "sample" : "samples",
                    static_cast<long long>(r.only_b), pv,
                    pv < 0.05 ? " (significant at the 5 % level)" : " (not significant at the 5 % level)");
      }
      if (o->per_layer) {
        if (first_div.empty())
          std::printf("\nno shared tensor differs beyond float rounding (all at %.0f dB SQNR or more)\n", kRoundingDb);
        else if (const auto os = other_shapes.find(first_div); os != other_shapes.end())
          std::printf("\nfirst tensor that differs: %s (shape %s, was %s)\n", printable(first_div).c_str(),
                      shapeStr(os->second.second).c_str(), shapeStr(os->second.first).c_str());
        else
          std::printf("\nfirst tensor that differs: %s (SQNR %s dB)\n", printable(first_div).c_str(),
                      formatFigure(layers.at(first_div).err.sqnrDb(), 2, true).c_str());
        std::printf("\n%zu shared tensors, worst first:\n%-48s %12s %10s %10s\n", worst.size(), "tensor", "max |diff|",
                    "SQNR dB", "cosine");
        for (const auto* r : worst)
          std::printf("%s %12s %10s %10s\n", column(r->name, 48).c_str(), formatFigure(r->err.maxAbsDiff(), 4, false).c_str(),
                      formatFigure(r->err.sqnrDb(), 2, true).c_str(), formatFigure(r->err.cosine(), 6, true).c_str());
        if (!other_shapes.empty()) {
          std::printf("\n%zu shared tensor%s with another shape in the candidate (not compared):\n", other_shapes.size(),
                      other_shapes.size() == 1 ? "" : "s");
          for (const auto& name : reshaped)
            std::printf("%s %s -> %s\n", column(name, 48).c_str(), shapeStr(other_shapes.at(name).first).c_str(),
                        shapeStr(other_shapes.at(name).second).c_str());
        }
        if (!integer_only.empty())
          std::printf("\n%zu tensor%s of the candidate %s 8-bit integers with no 8-bit counterpart in the reference "
                      "(e.g. '%s'), not compared: a QOperator file's quantized activations have no float twin. For "
                      "per-layer figures, compare the model's QDQ form (lwc quantize --format qdq).\n",
                      integer_only.size(), integer_only.size() == 1 ? "" : "s", integer_only.size() == 1 ? "is" : "are",
                      integer_only.begin()->c_str());
      }
      return 0;
    };
  });
}

}  // namespace lwc::app
