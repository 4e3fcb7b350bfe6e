// What a run leaves behind when a signal ends it. The temporary files, folders and child processes
// a run creates are registered here for as long as they exist; a signal whose default action ends
// the process (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGALRM, SIGUSR1, SIGUSR2, SIGXFSZ) first
// ends the children, removes the files and then the folders, and then ends lwc as it would have.
// Ctrl-C during a write left a full-size hidden temp file beside the target; an interrupted
// --ort-bench left its folder of two models in /tmp and a node process running.
//
// A signal the host program handles or ignores (nohup's SIGHUP) stays as it is: the handler goes
// only where the default action is in place when a registration is made.
#pragma once

#include <sys/types.h>

#include <string>

namespace lwc {

class SignalCleanup {
 public:
  enum class Kind { File = 1, Folder = 2 };
  SignalCleanup() = default;
  /// File: unlinked on a fatal signal. Folder: removed after every registered file (rmdir: only
  /// when empty, so register the files it will hold). The path may not exist yet.
  SignalCleanup(Kind kind, const std::string& path);
  /// A child process: sent SIGTERM on a fatal signal.
  explicit SignalCleanup(pid_t child);
  SignalCleanup(SignalCleanup&& o) noexcept : slot_(o.slot_) { o.slot_ = -1; }
  SignalCleanup& operator=(SignalCleanup&& o) noexcept;
  SignalCleanup(const SignalCleanup&) = delete;
  SignalCleanup& operator=(const SignalCleanup&) = delete;
  ~SignalCleanup() { release(); }
  /// Ends the registration: the file is the run's output now, or gone.
  void release();
  bool active() const { return slot_ >= 0; }

 private:
  int slot_ = -1;
};

/// While one lives, a fatal signal is held: the handler records it and returns, and the last
/// DeferSignals to go cleans up and ends the process with it. OutputSet::commit renames its files
/// under one, so a signal cannot leave some of a run's outputs in place and not the others.
class DeferSignals {
 public:
  DeferSignals();
  ~DeferSignals();
  DeferSignals(const DeferSignals&) = delete;
  DeferSignals& operator=(const DeferSignals&) = delete;
};

}  // namespace lwc
