// Command-line data options shared by eval, compare (and later calibrate/quantize/prune).
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <memory>
#include <cstdio>
#include <string>

#include "lwc/dataset.h"
#include "lwc/graph.h"

namespace lwc::app {

struct DataArgs {
  std::string data;
  std::string labels;
  std::string preprocess;
  int64_t limit = 0;
  int64_t batch = 100;
  CLI::Option* batch_option = nullptr;  ///< to tell a given --batch from the default

  /// Adds --data (required or not), --labels, --preprocess, --limit, --batch.
  void add(CLI::App* cmd, bool required);
  /// DataOptions checked against the model's first input and first output.
  DataOptions optionsFor(const Model& m) const;
  /// The data for model m; warns (once, on stderr) when image data get the default preprocessing.
  /// `also`: a second model fed the same batches (lwc compare); its fixed batch size counts too.
  std::unique_ptr<Dataset> open(const Model& m, const Model* also = nullptr) const;
  /// The batch to ask the data for: --batch when given, else the default lowered so that about
  /// kEvalActivationBytes of activations are live (says so on stderr). `also`: a second model run
  /// after m on each batch; `keep_all`: every activation of m is kept while `also` runs (lwc
  /// compare --per-layer). A model's fixed batch size overrides it anyway (open).
  int64_t batchFor(const Model& m, const Model* also = nullptr, bool keep_all = false) const;
};

/// A one-line progress bar on stderr, only when stderr is a terminal.
class Progress {
 public:
  Progress(std::string what, int64_t total);
  void update(int64_t done);
  ~Progress();

 private:
  std::string what_;
  int64_t total_;
  bool tty_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace lwc::app
