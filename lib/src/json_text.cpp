#include "lwc/json_text.h"

#include "lwc/status.h"

namespace lwc {

nlohmann::json parseJsonText(const std::string& text, const std::string& where) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 7, column 17: ...": the tag is the
    // library's, the rest says where and what.
    std::string what = e.what();
    if (what.rfind("[json.exception.", 0) == 0)
      if (const size_t end = what.find("] "); end != std::string::npos) what.erase(0, end + 2);
    fail(where, ": not valid JSON: ", what);
  }
}

std::string dumpJson(const nlohmann::json& v, int indent) {
  return v.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string briefJson(const nlohmann::json& v, size_t max_chars) {
  std::string s = dumpJson(v, -1);
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

}  // namespace lwc
