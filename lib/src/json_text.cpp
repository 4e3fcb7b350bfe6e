#include "lwc/json_text.h"

#include "lwc/status.h"

namespace lwc {

nlohmann::json parseJsonText(const std::string& text, const std::string& where) {
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": not valid JSON: ", e.what());
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
