// Number formatting for human-readable reports.
#pragma once

#include <cstdint>
#include <string>

namespace lwc::app {

/// 3504872 -> "3.50 M"; values below 1000 are printed exactly.
std::string humanCount(double v);
/// Bytes with decimal units: 1234567 -> "1.23 MB".
std::string humanBytes(double bytes);
/// 1234567 -> "1,234,567".
std::string grouped(int64_t v);
/// A name for a table column of `width` characters: printable(), shortened to its start and end
/// around "..." on UTF-8 character boundaries, padded with spaces to `width` characters (not bytes).
std::string column(const std::string& name, size_t width);
std::string percent(double fraction, int digits = 2);
/// "1 thread", "2 threads".
std::string threadsText(int n);

}  // namespace lwc::app
