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

}  // namespace lwc
