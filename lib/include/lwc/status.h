// Errors: what the user caused vs. what we got wrong.
//
// lwc reports user-caused problems (bad model, bad config, unsupported op, unreadable data) by
// throwing lwc::Error with a message that names the file, node or key and says what to do.
// Broken internal invariants throw lwc::InternalError via LWC_CHECK. The driver maps the first to
// exit code 1 and the second to exit code 2, so a CI job can tell "your input" from "our bug".
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <string_view>
#include <utility>

namespace lwc {

/// A problem caused by the input (model, data, options); the message is shown to the user as is.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

/// Valid input that lwc cannot handle yet (a kernel without the element type ONNX allows, say):
/// the message says it is lwc's limit, not a fault of the model.
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

/// A broken internal invariant: a bug in lwc, never the user's fault.
class InternalError : public std::logic_error {
 public:
  explicit InternalError(const std::string& msg) : std::logic_error(msg) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

/// `text` for a terminal: control characters (newline, tab, ESC, other C0 codes and DEL) become
/// escapes (\n, \t, \x1b), so a name or path from a model or the user cannot split an error into
/// two lines, forge a table row or colour the terminal; so do C1 controls (U+0080..U+009F) and
/// bytes that are not well-formed UTF-8 (\xff), so that the line is valid UTF-8. Other text (CJK
/// names, accents) passes unchanged.
std::string printable(std::string_view text);

/// Levenshtein distance between two strings (bytes).
size_t editDistance(std::string_view a, std::string_view b);
/// " (did you mean 'x'?)" for the candidate nearest `given`, when it is within two edits (and a
/// third of the name) and no other is as near; "" otherwise.
std::string didYouMean(std::string_view given, const std::vector<std::string>& candidates);

/// Builds a message from streamable parts and throws lwc::Error.
template <typename... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(detail::concat(std::forward<Args>(args)...));
}

}  // namespace lwc

#define LWC_CHECK(cond, ...)                                                                        \
  do {                                                                                              \
    if (!(cond))                                                                                    \
      throw ::lwc::InternalError(::lwc::detail::concat(__FILE__, ":", __LINE__, ": check failed: ", \
                                                       #cond, " " __VA_OPT__(, ) __VA_ARGS__));     \
  } while (0)
