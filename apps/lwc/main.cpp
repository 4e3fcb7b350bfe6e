// lwc: the command-line driver. Exit codes: 0 ok, 1 usage or input error, 2 internal error,
// 3 a quality gate failed (see README, "Exit codes").
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <optional>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <malloc.h>
#include <csignal>
#include <sched.h>
#include <unistd.h>
#include <iostream>
#include <regex>
#include <string>
#include <vector>

#include "commands.h"
#include "ort_peer.h"
#include "status_line.h"
#include "lwc/engine.h"
#include "lwc/pipeline.h"
#include "lwc/status.h"

namespace {
// The value a range check refused, as a number; nullopt with `why` set when it is none (CLI11's
// range checks refuse an empty or non-numeric value with the same words as one out of range).
std::optional<double> rangeValue(const std::string& v, std::string& why) {
  char* end = nullptr;
  const double x = v.empty() ? 0.0 : std::strtod(v.c_str(), &end);
  if (v.empty()) why = "an empty value is not a number";
  else if (!end || *end != '\0' || std::isnan(x)) why = "'" + v + "' is not a number";
  else return x;
  return std::nullopt;
}

// CLI11's range validators print their bound with %f, so a lower bound only ("NonNegativeNumber",
// "PositiveNumber") reads "Value -1 not in range 0.000000 to 1797693134862315708...". Say what the
// rule is instead; every other message is kept as CLI11 wrote it, on one line.
std::string parseErrorMessage(std::string msg) {
  // CLI11's PositiveNumber / NonNegativeNumber checks say "Value V not in range LOW to <300 digits>",
  // for a value that is not a number too ("abc must be greater than 0").
  static const std::regex open_range(R"(Value ?(\S*) not in range \S+ to \d{100,}\.\d+)");
  std::smatch m;
  if (std::regex_search(msg, m, open_range)) {
    const std::string v = m[1].str();
    std::string what;  // (the bound does not tell the two checks apart: CLI11 prints both as 0.000000)
    if (const std::optional<double> x = rangeValue(v, what))
      what = !std::isfinite(*x) ? "'" + v + "' is out of range" : v + (*x < 0 ? " cannot be negative" : " must be greater than 0");
    msg = m.prefix().str() + what + m.suffix().str();
  }
  // "Value 101 not in range 50.000000 to 100.000000" -> "101 is outside [50, 100]".
  static const std::regex closed_range(R"(Value ?(\S*) not in range (-?[0-9.]+) to (-?[0-9.]+))");
  if (std::regex_search(msg, m, closed_range)) {
    auto bound = [](std::string b) {
      if (b.find('.') != std::string::npos) {
        while (!b.empty() && b.back() == '0') b.pop_back();
        if (!b.empty() && b.back() == '.') b.pop_back();
      }
      return b;
    };
    const std::string v = m[1].str();
    std::string what;
    if (rangeValue(v, what)) what = v + " is outside [" + bound(m[2].str()) + ", " + bound(m[3].str()) + "]";
    msg = m.prefix().str() + what + m.suffix().str();
  }
  // "Could not convert: --sparsity = abc" -> "--sparsity: 'abc' is not a value it takes".
  static const std::regex convert(R"(Could not convert: (\S+) = (.*))");
  if (std::regex_match(msg, m, convert))
    msg = m[1].str() + ": '" + m[2].str() + "' is not a value it takes";
  // "args: At Most 2 required but received 3" and "The following argument was not expected: b".
  static const std::regex at_most(R"((\S+): At Most (\d+) required but received (\d+))");
  if (std::regex_search(msg, m, at_most)) {
    // An option given twice (--sparsity 0.3 --sparsity 0.6) read as "too many arguments", naming none.
    if (m[1].str().rfind("-", 0) == 0 && m[2].str() == "1")
      msg = m.prefix().str() + m[1].str() + " is given " + m[3].str() + " times; give it once" + m.suffix().str();
    else
      msg = m.prefix().str() + "too many arguments: " + m[3].str() + " given, at most " + m[2].str() + " taken" + m.suffix().str();
  }
  static const std::regex unexpected(R"(The following arguments? (?:was|were) not expected: (.*))");
  if (std::regex_search(msg, m, unexpected))
    msg = m.prefix().str() + (m[1].str().find(' ') == std::string::npos ? "unexpected argument '" : "unexpected arguments '") +
          m[1].str() + "' (a value for an option that takes none, or a file too many?)";
  for (char& c : msg)
    if (c == '\n') c = ' ';
  return msg;
}

// Blanks around a number are dropped, before as after it (strtod had taken ' 0.5' and refused '0.5 ').
void trimBlanks(std::string& v) {
  const auto blank = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!v.empty() && blank(static_cast<unsigned char>(v.back()))) v.pop_back();
  size_t i = 0;
  while (i < v.size() && blank(static_cast<unsigned char>(v[i]))) ++i;
  v.erase(0, i);
}

// An integer option's value as decimal digits: "010" -> "10"; "0x10", "0b1" and "0o7" are refused
// (CLI11 would read them in base 16, 2 or 8); anything else is left to CLI11's own checks.
std::string decimalInteger(std::string& v) {
  trimBlanks(v);
  // CLI11 reads an empty value as 0 where no range check refuses it (--iters '' was "--iters 0").
  if (v.empty()) return "an empty value is not a number";
  const size_t sign = !v.empty() && (v[0] == '+' || v[0] == '-') ? 1 : 0;
  const bool digits = v.size() > sign && std::all_of(v.begin() + long(sign), v.end(), [](unsigned char c) { return std::isdigit(c); });
  if (!digits) {
    if (v.size() > sign + 1 && v[sign] == '0' && std::isalpha(static_cast<unsigned char>(v[sign + 1])))
      return "'" + v + "' is not a decimal number";
    return "";
  }
  const size_t first = v.find_first_not_of('0', sign);
  v = v.substr(0, sign) + (first == std::string::npos ? "0" : v.substr(first));
  return "";
}

// Floating-point options: CLI11 reads an empty value as 0 (--sparsity '' pruned nothing, exit 0)
// and strtod takes hexadecimal floats (0x0.8p0), where integer options are decimal only.
std::string decimalFloat(std::string& v) {
  trimBlanks(v);
  if (v.empty()) return "an empty value is not a number";
  const size_t sign = v[0] == '+' || v[0] == '-' ? 1 : 0;
  if (v.size() > sign + 1 && v[sign] == '0' && (v[sign + 1] == 'x' || v[sign + 1] == 'X'))
    return "'" + v + "' is not a decimal number";
  return "";
}

// The first "--name" / "-x" on the command line that neither `sub` nor a parent command defines,
// with the closest option it has when one is near ("did you mean --calib-limit?"). CLI11 reports a
// mistyped option that takes a value as a surplus positional ("model: At Most 1 required but
// received 2"), which does not say what is wrong. Empty when every option is known.
// Options before the command name are lwc's own (-v, -q; they take no value, so the command is the
// first word without a dash); an lwc option after it is refused by CLI11 as "argument was not expected".
std::string unknownOptionMessage(const CLI::App& sub, const std::string& command, int argc, char** argv) {
  const CLI::App* root = &sub;
  while (root->get_parent()) root = root->get_parent();
  int command_at = argc;
  for (int i = 1; i < argc; ++i)
    if (argv[i][0] != '-') {
      command_at = i;
      break;
    }
  auto knownIn = [](const CLI::App* a, const std::string& name) { return a->get_option_no_throw(name) != nullptr; };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    if (std::isdigit(static_cast<unsigned char>(arg[1])) || arg[1] == '.') continue;  // a negative number
    const bool long_form = arg[1] == '-';
    if (!long_form && arg.size() != 2) continue;  // "-vq" or a value: leave to CLI11
    const std::string name = arg.substr(0, arg.find('='));
    const bool before_command = i < command_at;
    if (before_command ? knownIn(root, name) : knownIn(&sub, name)) continue;
    if (!before_command && knownIn(root, name) && name != "--help" && name != "-h")
      return "'" + name + "' is an option of lwc itself: give it before the command ('lwc " + name + " " +
             sub.get_name() + " ...')";
    std::string msg = "unknown option '" + name + "' for '" + (before_command ? std::string("lwc") : command) + "'";
    std::string best;
    size_t best_d = 3;  // suggest only a near miss
    for (const CLI::App* a = before_command ? root : &sub; a; a = a->get_parent())  // root has no parent
      for (const CLI::Option* o : a->get_options())
        for (const std::string& l : o->get_lnames())
          if (const size_t d = lwc::editDistance(name, "--" + l); d < best_d) best_d = d, best = "--" + l;
    return msg + (best.empty() ? "" : " (did you mean " + best + "?)");
  }
  return "";
}

// Whether the command line asks for fewer engine threads (--threads N, N >= 1) than the CPUs lwc
// may run on. Read before CLI11 parses it, since OpenMP's binding is set before the re-exec; a
// value that is no number is left to CLI11 to refuse.
bool fewerThreadsThanCpus(int argc, char** argv) {
  long n = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--") break;
    const char* v = a == "--threads" && i + 1 < argc ? argv[i + 1] : a.rfind("--threads=", 0) == 0 ? argv[i] + 10 : nullptr;
    if (!v) continue;
    char* end = nullptr;
    n = std::strtol(v, &end, 10);
    if (end == v || *end) n = 0;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  if (n < 1 || sched_getaffinity(0, sizeof set, &set) != 0) return false;
  return n < CPU_COUNT(&set);
}
}  // namespace

namespace {
// stderr's colour sink, with each message passed through lwc::printable() first.
class PrintableSink : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
 public:
  PrintableSink() : inner_(std::make_shared<spdlog::sinks::stderr_color_sink_mt>()) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    lwc::app::clearStatus();  // a message starts its own line
    const std::string text = lwc::printable(std::string_view(msg.payload.data(), msg.payload.size()));
    spdlog::details::log_msg safe = msg;
    safe.payload = text;
    inner_->log(safe);
  }
  void flush_() override { inner_->flush(); }
  void set_pattern_(const std::string& pattern) override { inner_->set_pattern(pattern); }
  void set_formatter_(std::unique_ptr<spdlog::formatter> f) override { inner_->set_formatter(std::move(f)); }

 private:
  std::shared_ptr<spdlog::sinks::stderr_color_sink_mt> inner_;
};
}  // namespace

int main(int argc, char** argv) {
  // OpenMP reads its settings when the runtime library loads, before main(): set them and re-exec
  // once. Idle threads spin briefly, then sleep (GOMP_SPINCOUNT=20000, ~tens of microseconds):
  // measured on mobilenet_v2 at 2 threads, that is as fast as pure spinning on an idle machine
  // (3.3 ms vs 4.5 ms with OMP_WAIT_POLICY=PASSIVE) and degrades gracefully when another process
  // takes a core, where libgomp's default long spin made runs 30-50x slower. Threads are pinned when
  // they take every CPU (below).
  // A user's own OMP_*/GOMP_* settings win.
  if (!std::getenv("LWC_OMP_CONFIGURED")) {
    ::setenv("LWC_OMP_CONFIGURED", "1", 1);
    lwc::app::saveStartAffinity();  // before threads are pinned: the CPUs a child process (ONNX Runtime) may use
    // Pinned only when the threads take every CPU lwc may use. Fewer threads (--threads 1 on two
    // cores) were pinned to the first CPUs, with the main thread: with another process busy on
    // CPU 0, resnet_fmnist at batch 32 took 19-22 ms on one pinned thread and 9.4-9.8 ms on one
    // the OS may move (5.0 ms on a quiet machine); with every CPU used, pinning stays ahead
    // (9.8-10.1 ms pinned, 13.7-18.6 unpinned, same busy process).
    if (!fewerThreadsThanCpus(argc, argv)) {
      ::setenv("OMP_PROC_BIND", "close", 0);
      ::setenv("OMP_PLACES", "cores", 0);
    }
    if (!std::getenv("OMP_WAIT_POLICY")) ::setenv("GOMP_SPINCOUNT", "20000", 0);
    ::execv("/proc/self/exe", argv);  // returns only on failure: then run with the defaults
  }
  // A fixed mmap threshold: tensors over 256 KiB get their own mappings and go back to the OS when
  // freed. glibc's default raises the threshold after each large free, so later large tensors land
  // in the heap and fragment it: calibration's peak RSS then grew with the number of batches
  // (mnv2_fmnist: 145.5 MB at 200 samples, 155.1 MB at 2000; fixed: 140.8 and 140.9 MB). Engine
  // sessions pool their buffers, so steady-state inference does not pay for the extra mmaps
  // (bench mnv2_fmnist b32: same median within noise).
  ::mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  // A file-size limit (ulimit -f) makes a write fail with EFBIG and an error line naming the file,
  // instead of SIGXFSZ ending lwc without a word.
  ::signal(SIGXFSZ, SIG_IGN);
  using namespace lwc::app;
  CLI::App app{"lwc: make trained neural networks small and fast (ONNX in, ONNX out)", "lwc"};
  app.require_subcommand(1);
  // --help shows each option's default ("--sparsity FLOAT=0.5"): lwc prune without --sparsity
  // pruned 50 % with no word of it anywhere.
  app.option_defaults()->always_capture_default();
  app.set_version_flag("--version", std::string("lwc ") + lwc::kProducerVersion);
  GlobalOptions g;
  auto* verbose = app.add_flag("-v,--verbose", g.verbose, "Log details to stderr");
  app.add_flag("-q,--quiet", g.quiet, "Log only errors to stderr (results still go to stdout)")->excludes(verbose);
  Action action;
  addInfoCommand(app, action, g);
  addOpsCommand(app, action, g);
  addBenchCommand(app, action, g);
  addExecCommand(app, action, g);
  addEvalCommand(app, action, g);
  addCompareCommand(app, action, g);
  addPassesCommand(app, action, g);
  addRunCommand(app, action, g);
  addFuseCommand(app, action, g);
  addEncodeCommand(app, action, g);
  addDecodeCommand(app, action, g);
  addFloat16Command(app, action, g);
  addQuantizeCommand(app, action, g);
  addCalibrateCommand(app, action, g);
  addPruneCommand(app, action, g);
  // Defaults that only mean "not given" are not shown: [] (lists, positionals), -1 (the limits).
  // Integers are decimal: CLI11 reads them with strtoll base 0, so --eval-limit 010 used 8 samples
  // and 0x10 used 16; leading zeros are dropped and other bases refused before it converts them.
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    for (CLI::Option* opt : sub->get_options()) {
      if (const std::string d = opt->get_default_str(); d == "[]" || d == "-1") opt->default_str("");
      const std::string type = opt->get_type_name();
      if (type.rfind("INT", 0) == 0 || type.rfind("UINT", 0) == 0) opt->transform(CLI::Validator(decimalInteger, "", ""));
      if (type.rfind("FLOAT", 0) == 0) opt->transform(CLI::Validator(decimalFloat, "", ""));
      // An empty path or name was taken as "not given" (--report '' wrote no report, --eval ''
      // used the pipeline's own data, exit 0).
      if (type.rfind("TEXT", 0) == 0)
        opt->check(CLI::Validator([](std::string& v) { return v.empty() ? std::string("'' (an empty value) is not a value it takes") : ""; },
                                  "", ""));
    }

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string where = "lwc";
    const CLI::App* deepest = &app;
    while (!deepest->get_subcommands().empty()) {
      deepest = deepest->get_subcommands().front();
      where += " " + deepest->get_name();
    }
    std::string msg = parseErrorMessage(e.what());
    if (deepest != &app)
      if (std::string unknown = unknownOptionMessage(*deepest, where, argc, argv); !unknown.empty()) msg = unknown;
    // An error about lwc's own options points to lwc's help, not the command's.
    if (msg.find(" for 'lwc'") != std::string::npos || msg.find("excludes --quiet") != std::string::npos ||
        msg.find("excludes --verbose") != std::string::npos)
      where = "lwc";
    if (where == "lwc" && argc > 1 && argv[1][0] != '-') {
      bool known = false;
      for (const CLI::App* sub : app.get_subcommands({})) known = known || sub->check_name(argv[1]);
      if (!known) msg = std::string("unknown command '") + argv[1] + "'";
    }
    std::fprintf(stderr, "lwc: error: %s (see '%s --help')\n", lwc::printable(msg).c_str(), where.c_str());
    return 1;
  }
  // Log lines go to stderr with the error lines: stdout carries only results (tables, --json).
  // Through printable(): a pass note naming a node "x\nFORGED" printed two lines.
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("lwc", std::make_shared<PrintableSink>()));
  spdlog::set_level(g.quiet ? spdlog::level::err : g.verbose ? spdlog::level::debug : spdlog::level::info);
  spdlog::set_pattern("lwc: %l: %v");
  lwc::app::enableStatusLine(!g.quiet && !g.verbose);
  try {
    const lwc::app::StatusScope status;  // erased before an error is printed
    const int rc = action ? action() : 1;
    // Results go to stdout: a full disk or a closed pipe there (lwc info --json > report.json)
    // is a failed run, not an empty file and exit code 0.
    if (!lwc::app::flushStdout()) {
      std::fprintf(stderr, "lwc: error: cannot write the results to standard output (%s)\n", std::strerror(errno));
      return 1;
    }
    return rc;
  } catch (const lwc::Error& e) {
    // One line whatever the message holds: names and paths come from the model and the user.
    std::fprintf(stderr, "lwc: error: %s\n", lwc::printable(e.what()).c_str());
    return 1;
  } catch (const lwc::InternalError& e) {
    std::fprintf(stderr, "lwc: internal error (please report): %s\n", lwc::printable(e.what()).c_str());
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the system refuses (a name too long, a loop of links, no permission) where lwc asked
    // about it without a std::error_code: the user's path or machine, not a bug.
    std::string paths = "'" + e.path1().string() + "'";
    if (!e.path2().empty()) paths += " and '" + e.path2().string() + "'";
    std::fprintf(stderr, "lwc: error: cannot access %s: %s\n", lwc::printable(paths).c_str(), e.code().message().c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    // Resources, not a bug: the model's tensors at this input size do not fit.
    std::fprintf(stderr, "lwc: error: out of memory (try a smaller --batch or input size, or a machine with more memory)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lwc: internal error (please report): %s\n", e.what());
    return 2;
  }
}
