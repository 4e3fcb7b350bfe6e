#include "lwc/status.h"

#include <algorithm>

namespace lwc {

namespace {
// Length of the well-formed UTF-8 sequence at text[i] (Unicode's table 3-7: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0.
size_t utf8Length(std::string_view text, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = b(i);
  size_t n = 0;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) n = 2;
  else if (c >= 0xe0 && c <= 0xef) n = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
  else if (c >= 0xf0 && c <= 0xf4) n = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
  else return 0;
  if (i + n > text.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xbf) return 0;
  return n;
}
}  // namespace

std::string printable(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  static const char kHex[] = "0123456789abcdef";
  auto hex = [&](unsigned char c) {
    out += "\\x";
    out += kHex[c >> 4];
    out += kHex[c & 15];
  };
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += text[i++];
    } else if (c == '\n') {
      out += "\\n", ++i;
    } else if (c == '\t') {
      out += "\\t", ++i;
    } else if (c == '\r') {
      out += "\\r", ++i;
    } else if (const size_t n = c >= 0x80 ? utf8Length(text, i) : 0; n > 0) {
      // C1 controls (U+0080..U+009F: 0xc2 0x9b is a terminal's CSI) are escaped like C0 ones.
      if (c == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0) {
        hex(c), hex(static_cast<unsigned char>(text[i + 1]));
      } else {
        out.append(text.substr(i, n));
      }
      i += n;
    } else {
      hex(c), ++i;  // a control character, DEL, or a byte that is not well-formed UTF-8
    }
  }
  return out;
}

size_t editDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string didYouMean(std::string_view given, const std::vector<std::string>& candidates) {
  const size_t limit = std::min<size_t>(2, std::max<size_t>(1, given.size() / 3));
  size_t best_d = limit + 1;
  const std::string* best = nullptr;
  bool tie = false;
  for (const auto& c : candidates) {
    const size_t d = editDistance(given, c);
    if (d < best_d) best_d = d, best = &c, tie = false;
    else if (d == best_d && best && *best != c) tie = true;
  }
  return best && !tie && best_d > 0 && best_d < given.size() ? " (did you mean '" + *best + "'?)" : "";
}

}  // namespace lwc
