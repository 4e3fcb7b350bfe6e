// A transient status line on stderr while a pipeline runs ("running prune_magnitude", "lsq: layer
// 17/21 Conv '...'"): a long step was silent until it ended unless -v was given. Shown only when
// stderr is a terminal and the log level is the default (with -v the same text is logged as lines,
// with -q nothing is shown). Each update overwrites the last; every log message, and the end of
// the run, erases it first.
#pragma once

#include <string_view>

namespace lwc::app {

/// Called once by main, after the log level is set.
void enableStatusLine(bool on);
/// Replaces the status line with `text` (its first line, cut to the terminal's width).
void showStatus(std::string_view text);
/// Erases the status line, if one is shown.
void clearStatus();
/// Progress of a long step: a debug log line (-v), else the status line.
void progress(std::string_view text);

/// Flushes standard output; false when it could not be written (a full disk, a closed pipe).
bool flushStdout();
/// Flushes standard output and throws lwc::Error when it could not be written (a full disk, a
/// closed pipe). Commands print their results and call this before they put their files in place,
/// so that a run that exits 1 for lost results leaves none of its outputs (the model at -o was
/// replaced, then the run failed).
void flushStdoutOrFail();

/// Erases the status line when the scope ends, also by an exception (before its error is printed).
struct StatusScope {
  StatusScope() = default;
  StatusScope(const StatusScope&) = delete;
  StatusScope& operator=(const StatusScope&) = delete;
  ~StatusScope() { clearStatus(); }
};

}  // namespace lwc::app
