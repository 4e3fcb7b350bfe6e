#include "status_line.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <mutex>
#include <string>

#include <spdlog/spdlog.h>

#include "lwc/status.h"

namespace lwc::app {

namespace {
std::mutex g_mu;
bool g_enabled = false;
bool g_shown = false;

size_t terminalWidth() {
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}
}  // namespace

void enableStatusLine(bool on) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_enabled = on && ::isatty(STDERR_FILENO) != 0;
}

void showStatus(std::string_view text) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_enabled) return;
  std::string line = printable(text.substr(0, text.find('\n')));
  // One column short of the width, so the terminal does not wrap (a wrapped line would stay on
  // screen: the erase reaches only its last row); cut at a character boundary. A character beyond
  // ASCII counts two columns, as wide (CJK) ones take.
  const size_t width = terminalWidth() > 1 ? terminalWidth() - 1 : 1;
  size_t columns = 0, cut = 0;
  for (; cut < line.size(); ++cut) {
    const auto c = static_cast<unsigned char>(line[cut]);
    if ((c & 0xC0) == 0x80) continue;  // inside a character
    columns += c < 0x80 ? 1 : 2;
    if (columns > width) break;
  }
  line.resize(cut);
  std::fprintf(stderr, "\r%s\033[K", line.c_str());
  std::fflush(stderr);
  g_shown = true;
}

void clearStatus() {
  std::lock_guard<std::mutex> lock(g_mu);
  if (!g_shown) return;
  std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
  g_shown = false;
}

void progress(std::string_view text) {
  spdlog::debug("{}", text);
  showStatus(text);
}

bool flushStdout() {
  std::cout.flush();
  return std::fflush(stdout) == 0 && !std::ferror(stdout) && std::cout;
}

void flushStdoutOrFail() {
  if (!flushStdout())
    fail("cannot write the results to standard output (", std::strerror(errno), "); no output file was written");
}

}  // namespace lwc::app
