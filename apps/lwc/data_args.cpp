#include "data_args.h"

#include "commands.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

#include "lwc/analysis.h"

namespace lwc::app {

void DataArgs::add(CLI::App* cmd, bool required) {
  auto* d = cmd->add_option("--data", data,
                            "Data: image folder (class subfolders), folder + labels, .npy/.npz, test_data_set_*, or IDX file");
  if (required) d->required();
  cmd->add_option("--labels", labels, "Labels file (CSV file,label / one int per line / .npy / IDX)");
  cmd->add_option("--preprocess", preprocess, "Preprocessing JSON (default: preprocess.json next to the data)");
  cmd->add_option("--limit", limit, "Use only N samples: the first N (an image folder, ordered by class: N evenly spaced) (0 = all)")
      ->default_val(0)
      ->check(CLI::NonNegativeNumber);
  batch_option = cmd->add_option("--batch", batch, "Batch size (not given: 100, lowered where a batch's activations would pass 256 MB)")->default_val(100)->check(CLI::Range(int64_t(1), kMaxBatch));
}

DataOptions DataArgs::optionsFor(const Model& m) const {
  DataOptions o;
  o.path = data;
  o.labels = labels;
  if (!preprocess.empty()) o.preprocess = Preprocess::load(preprocess);
  o.limit = limit;
  o.limit_hint = "--limit";
  fitToModel(o, m);
  return o;
}

std::unique_ptr<Dataset> DataArgs::open(const Model& m, const Model* also) const {
  DataOptions o = optionsFor(m);
  if (also) {
    DataOptions other;
    fitToModel(other, *also);  // the second model must take the same data: one input ("input 'b2' was not given")
    const int64_t b = fixedBatchSize(*also);
    if (b > 0 && o.fixed_batch > 0 && b != o.fixed_batch)
      fail(also->label(), ": its input's fixed batch size is ", b, " but ", m.label(), "'s is ", o.fixed_batch,
           "; the two models cannot be fed the same batches");
    if (b > 0) o.fixed_batch = b;
  }
  // As lwc info and lwc bench: a given --batch that the model's fixed batch size overrides is named.
  if (batch_option && batch_option->count() > 0 && o.fixed_batch > 0 && o.fixed_batch != batch)
    spdlog::warn("{}: the model's input fixes the batch size at {}; batches are {} (--batch {} ignored)", m.label(),
                 o.fixed_batch, o.fixed_batch, batch);
  auto ds = openDataset(o);
  if (const std::string w = preprocessingWarning(*ds); !w.empty()) spdlog::warn("--data {}", w);
  return ds;
}

int64_t DataArgs::batchFor(const Model& m, const Model* also, bool keep_all) const {
  if ((batch_option && batch_option->count() > 0) || fixedBatchSize(m) > 0 || (also && fixedBatchSize(*also) > 0))
    return batch;
  // A dynamically quantized model's outputs depend on the batch: every command evaluates it at the
  // same one, the pipelines' included.
  if (quantizesAtRunTime(m) || (also && quantizesAtRunTime(*also))) return batch;
  const ActivationBytes a = activationBytesPerSample(m);
  int64_t per_sample = a.peak;
  if (also) {
    const int64_t b = activationBytesPerSample(*also).peak;
    per_sample = keep_all ? a.total + b : std::max(a.peak, b);
  }
  std::string why;
  const int64_t n = evaluationBatch(per_sample, batch, &why);
  if (!why.empty()) spdlog::info("{}{} (--batch sets it)", why, keep_all ? " with every layer's output kept" : "");
  return n;
}

Progress::Progress(std::string what, int64_t total)
    : what_(std::move(what)), total_(total), tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()), last_(start_) {}

void Progress::update(int64_t done) {
  if (!tty_) return;
  const auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const int width = 30;
  const int filled = total_ > 0 ? static_cast<int>(width * done / total_) : 0;
  std::fprintf(stderr, "\r%s [%s%s] %lld/%lld  %.0f/s ", what_.c_str(), std::string(filled, '#').c_str(),
               std::string(width - filled, ' ').c_str(), static_cast<long long>(done), static_cast<long long>(total_),
               secs > 0 ? double(done) / secs : 0.0);
  std::fflush(stderr);
}

Progress::~Progress() {
  if (tty_) std::fprintf(stderr, "\r%*s\r", 80, "");
}

}  // namespace lwc::app
