#include "format.h"

#include <cmath>
#include <cstdio>
#include <vector>

#include "lwc/status.h"

namespace lwc::app {

namespace {
std::string scaled(double v, const char* const* units, double base) {
  int u = 0;
  double a = std::fabs(v);
  while (a >= base && units[u + 1]) {
    a /= base;
    v /= base;
    ++u;
  }
  char buf[64];
  if (u == 0) std::snprintf(buf, sizeof buf, "%.0f%s%s", v, units[0][0] ? " " : "", units[0]);
  else std::snprintf(buf, sizeof buf, "%.*f %s", a < 10 ? 2 : a < 100 ? 1 : 0, v, units[u]);
  return buf;
}
}  // namespace

std::string humanCount(double v) {
  static const char* const units[] = {"", "K", "M", "G", "T", nullptr};
  return scaled(v, units, 1000.0);
}

std::string humanBytes(double bytes) {
  static const char* const units[] = {"B", "kB", "MB", "GB", "TB", nullptr};
  return scaled(bytes, units, 1000.0);
}

std::string grouped(int64_t v) {
  std::string s = std::to_string(v < 0 ? -v : v);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return v < 0 ? "-" + s : s;
}

std::string percent(double f, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f %%", digits, 100.0 * f);
  return buf;
}

std::string column(const std::string& name, size_t width) {
  const std::string p = printable(name);
  // Start of each UTF-8 character (bytes that are not continuation bytes 10xxxxxx).
  std::vector<size_t> starts;
  for (size_t i = 0; i < p.size(); ++i)
    if ((static_cast<unsigned char>(p[i]) & 0xC0) != 0x80) starts.push_back(i);
  const size_t n = starts.size();
  std::string out;
  size_t shown = n;
  if (n <= width) {
    out = p;
  } else {
    const size_t keep = width > 3 ? width - 3 : 0, head = keep / 2, tail = keep - head;
    out = p.substr(0, starts[head]) + "..." + p.substr(starts[n - tail]);
    shown = width;
  }
  if (shown < width) out.append(width - shown, ' ');
  return out;
}

std::string threadsText(int n) { return std::to_string(n) + (n == 1 ? " thread" : " threads"); }

}  // namespace lwc::app
