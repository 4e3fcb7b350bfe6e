// lwc exec MODEL: run a model once on given (or random) inputs and write every output as .npy.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>
#include <set>
#include <unistd.h>
#include <cstring>
#include <cerrno>
#include <spdlog/spdlog.h>

#include "commands.h"
#include "run_common.h"
#include "status_line.h"
#include "format.h"
#include "lwc/engine.h"
#include "lwc/model_io.h"
#include "lwc/npy.h"

namespace lwc::app {

namespace {
struct ExecOptions {
  std::string model;
  std::vector<std::string> inputs;  // name=file.npy
  int64_t random_batch = 0;
  uint32_t seed = 0;
  std::string outdir;
  int threads = 0;
  bool reference = false;
  bool no_split = false;
};

std::string safeName(std::string s) {
  for (char& c : s)
    if (c == '/' || c == ':' || c == '\\') c = '_';
  return s;
}

// The file name (without .npy) of a tensor: safeName, and where that is taken in `used` (a/b and
// a_b), _1, _2 ... in the order asked, as ort_tool.js numbers them.
std::string fileName(const std::string& name, std::set<std::string>& used) {
  std::string base = safeName(name);
  for (int k = 1; used.count(base); ++k) base = safeName(name) + "_" + std::to_string(k);
  used.insert(base);
  return base;
}
}  // namespace

void addExecCommand(CLI::App& app, Action& action, const GlobalOptions&) {
  auto o = std::make_shared<ExecOptions>();
  auto* cmd = app.add_subcommand("exec", "Run a model once on .npy inputs (or random ones) and write its outputs as .npy");
  cmd->add_option("model", o->model, "ONNX model file")->required();
  cmd->add_option("--input", o->inputs, "NAME=FILE.npy for each model input");
  auto* random = cmd->add_option("--random-batch", o->random_batch,
                                 "Feed seeded random inputs with this batch size to the inputs --input does not give")
                     ->check(CLI::Range(int64_t(1), kMaxBatch))
                     ->default_str("");
  cmd->add_option("--seed", o->seed, "Seed for --random-batch")->default_val(0)->needs(random);
  cmd->add_option("-o,--outdir", o->outdir, "Folder for <output>.npy files (created; / : \\ in a name become _, and a name met twice gets _1, _2 ..., as ort_tool.js names them; random inputs go to inputs/)")->required();
  addThreadsOption(cmd, o->threads);
  cmd->add_flag("--reference", o->reference, "Use only the reference kernels");
  cmd->add_flag("--no-split-batch", o->no_split, "Run every layer on the whole batch (see lwc bench --no-split-batch)");
  cmd->callback([&action, o] {
    action = [o] {
      engine::configureThreads(o->threads);
      const Model m = loadInputModel(o->model);
      engine::TensorMap feeds;
      std::vector<std::filesystem::path> read{o->model};  // every file this run reads
      for (const auto& f : m.external_data_files) read.push_back(f);
      // NAME=FILE split at the '=' after which NAME is a model input: names and paths may hold '='
      // themselves (the longest input name wins); else at the first, to name what was typed.
      auto splitSpec = [&](const std::string& spec) -> size_t {
        size_t at = std::string::npos;
        for (size_t eq = spec.find('='); eq != std::string::npos; eq = spec.find('=', eq + 1))
          if (m.graph.isGraphInput(spec.substr(0, eq))) at = eq;
        return at != std::string::npos ? at : spec.find('=');
      };
      std::set<std::string> given;
      for (const auto& spec : o->inputs) {  // every --input checked before any file is read
        const auto eq = splitSpec(spec);
        if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
          fail("--input '", spec, "': expected NAME=FILE.npy");
        const std::string name = spec.substr(0, eq);
        if (!m.graph.isGraphInput(name)) fail("--input '", name, "': the model has no input of that name");
        if (!given.insert(name).second) fail("--input '", name, "' is given twice; give each model input once");
      }
      for (const auto& spec : o->inputs) {
        const auto eq = splitSpec(spec);
        const std::string name = spec.substr(0, eq), file = spec.substr(eq + 1);
        Tensor t = readNpy(file);
        // Type and shape checked here, naming the file (the engine's check names neither file nor option).
        for (const auto* v : m.graph.realInputs()) {
          if (v->name != name) continue;
          if (v->dtype != DType::Undefined && v->dtype != t.dtype())
            fail("--input '", spec, "': model input '", name, "' expects ", dtypeName(v->dtype), " but ", file, " holds ",
                 dtypeName(t.dtype()), "; convert the array (e.g. numpy's astype) first");
          if (v->shape && !shapeFits(*v->shape, t.shape()))
            fail("--input '", spec, "': model input '", name, "' expects shape ", symShapeStr(*v->shape), " but ", file,
                 " holds ", shapeStr(t.shape()), "; check the array's shape and layout (e.g. NCHW against NHWC)");
        }
        feeds[name] = std::move(t);
        read.push_back(file);
      }
      namespace fs = std::filesystem;
      // Random inputs are made (and checked) before anything is written: a failed run leaves no folder behind.
      std::vector<std::pair<fs::path, Tensor>> writes;
      if (o->random_batch > 0) {
        std::set<std::string> used_inputs;  // named as the outputs are (below)
        std::mt19937 rng(o->seed);
        for (const auto* v : m.graph.realInputs()) {
          if (feeds.count(v->name)) continue;
          // Integer inputs are indices, token ids and masks whose valid values only the model's
          // author knows: they are given, not made up.
          if (!v->shape || !isFloat(v->dtype))
            fail("input '", v->name, "': --random-batch needs a float input (float32, float16 or float64) with a declared shape; ",
                 "give this one with --input ", v->name, "=FILE.npy");
          Shape s;
          for (size_t i = 0; i < v->shape->size(); ++i) {
            // Only the batch is --random-batch's to choose: an image's height made 1 failed later in
            // a kernel (a MaxPool window larger than its input), naming no input.
            if (i > 0 && !(*v->shape)[i].known())
              fail("input '", v->name, "' has unknown dimensions besides the batch (", symShapeStr(*v->shape),
                   "); --random-batch chooses only the batch: give this one with --input ", v->name, "=FILE.npy");
            s.push_back((*v->shape)[i].known() ? (*v->shape)[i].value : o->random_batch);
          }
          if (!s.empty() && (*v->shape)[0].known() && s[0] != o->random_batch)
            spdlog::warn("input '{}' fixes its batch size at {}; it gets {} random samples, not --random-batch {}", v->name,
                         s[0], s[0], o->random_batch);
          Tensor t = randomTensor(v->dtype, s, rng);
          writes.emplace_back(fs::path(o->outdir) / "inputs" / (fileName(v->name, used_inputs) + ".npy"), t);
          feeds[v->name] = t;
        }
        if (writes.empty())
          fail("--random-batch: ", m.graph.realInputs().empty() ? o->model + " has no inputs to make random values for"
                                                                 : "--input gives every input of " + o->model + ", so no random input is made",
               "; drop --random-batch");
      }
      for (const auto* v : m.graph.realInputs())
        if (!feeds.count(v->name))
          fail(o->model, ": model input '", v->name, "' was not given; give --input ", v->name,
               "=FILE.npy, or --random-batch N for random values");
      // Each output's file: its name made file-system safe; names that meet on one file (a/b and
      // a_b) get _1, _2 ... in graph order, as ort_tool.js numbers them (a_b.npy was written twice).
      std::vector<std::pair<std::string, fs::path>> files;
      std::set<std::string> used;
      for (const auto& v : m.graph.outputs) {
        files.emplace_back(v.name, fs::path(o->outdir) / (fileName(v.name, used) + ".npy"));
      }
      // The folder must be one (or creatable) before the model runs, not after.
      std::error_code ec;
      const fs::path outdir(o->outdir);
      if (fs::exists(outdir, ec) && !fs::is_directory(outdir, ec))
        fail("--outdir '", o->outdir, "': exists and is not a folder; give a folder for the .npy outputs");
      // Found before the model runs, not after it (a link to nothing failed with "File exists").
      if (fs::is_symlink(fs::symlink_status(outdir, ec)) && !fs::exists(outdir, ec))
        fail("--outdir '", o->outdir, "': is a link to nothing; give a folder for the .npy outputs");
      if (!writes.empty() && fs::exists(outdir / "inputs", ec) && !fs::is_directory(outdir / "inputs", ec))
        fail("--outdir '", o->outdir, "': '", (outdir / "inputs").string(),
             "' exists and is not a folder, but the random inputs go there; remove it or choose another --outdir");
      fs::path existing = fs::absolute(outdir, ec);
      while (!existing.empty() && !fs::exists(existing, ec) && existing.has_relative_path()) existing = existing.parent_path();
      if (!fs::is_directory(existing, ec))
        fail("--outdir '", o->outdir, "': '", existing.string(), "' is not a folder; give a folder for the .npy outputs");
      if (::access(existing.c_str(), W_OK) != 0)
        fail("--outdir '", o->outdir, "': cannot create files in '", existing.string(), "' (", std::strerror(errno),
             "); give a writable folder");
      // No output file may be one this run reads (an --input .npy in --outdir was overwritten by
      // the output of the same name).
      auto checkNotRead = [&](const fs::path& out) {
        if (fs::is_directory(out, ec))
          fail("cannot write '", out.string(), "': it is a folder; remove it or choose another --outdir");
        if (fs::exists(out, ec) && !fs::is_regular_file(out, ec))  // through links: what would be replaced
          failSpecialFile("'" + out.string() + "'", "remove it or choose another --outdir");
        for (const auto& in : read)
          if (fs::exists(out, ec) && fs::exists(in, ec) && fs::equivalent(out, in, ec))
            fail("cannot write '", out.string(), "': it is '", in.string(), "', which this run reads; choose another --outdir");
      };
      for (const auto& [name, path] : files) checkNotRead(path);
      for (const auto& [path, t] : writes) checkNotRead(path);
      engine::SessionOptions so;
      so.threads = o->threads;
      so.reference_only = o->reference;
      so.split_batch = !o->no_split;
      engine::Session s(m, so);
      const auto outs = s.run(feeds);
      // The folders this run creates, outermost first: removed again (only empty ones go) if the
      // run fails after all, or a signal ends it.
      struct CreatedFolders {
        std::vector<fs::path> paths;
        std::vector<SignalCleanup> on_signal;
        bool keep = false;
        ~CreatedFolders() {
          std::error_code e;
          if (!keep)
            for (auto it = paths.rbegin(); it != paths.rend(); ++it) fs::remove(*it, e);
        }
      } created;
      for (fs::path f = writes.empty() ? outdir : outdir / "inputs"; !f.empty() && !fs::exists(f, ec); f = f.parent_path()) {
        created.paths.insert(created.paths.begin(), f);
        if (!f.has_relative_path() || f.parent_path() == f) break;
      }
      for (const auto& f : created.paths) {
        created.on_signal.emplace_back(SignalCleanup::Kind::Folder, f.string());
        if (!fs::create_directory(f, ec) && ec)
          fail("--outdir '", o->outdir, "': cannot create the folder '", f.string(), "': ", ec.message());
      }
      // Every file in place together, or none: a failure part-way left the random inputs beside
      // an older run's outputs.
      OutputSet staged;
      for (const auto& [path, t] : writes) staged.stage(path, toNpy(t));
      for (const auto& [name, path] : files) staged.stage(path, toNpy(outs.at(name)));
      for (const auto& [name, path] : files) {
        const Tensor& t = outs.at(name);
        std::string dims;
        for (size_t i = 0; i < t.shape().size(); ++i) dims += (i ? "," : "") + std::to_string(t.shape()[i]);
        std::cout << printable(name) << ": " << dtypeName(t.dtype()) << " [" << dims << "] -> " << printable(path.string()) << "\n";
      }
      flushStdoutOrFail();  // before the files go in place: a failed run leaves none
      staged.commit();
      created.keep = true;
      return 0;
    };
  });
}

}  // namespace lwc::app
