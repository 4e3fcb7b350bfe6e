#include "lwc/json_text.h"

#include <cmath>

#include "lwc/model_io.h"

#include <set>
#include <vector>

#include "lwc/status.h"

namespace lwc {

namespace {
struct DuplicateKey {
  std::string key;
};
}  // namespace

nlohmann::json parseJsonText(const std::string& text, const std::string& where) {
  // nlohmann keeps the last of two equal keys in an object; a user who wrote {"sparsity": 0.5,
  // "sparsity": 0.7} meant one of them, and lwc cannot know which. The parser's callback sees every
  // key with the objects it belongs to opening and closing around it.
  std::vector<std::set<std::string>> open;
  const auto check = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (ev == E::object_start) open.emplace_back();
    else if (ev == E::object_end && !open.empty()) open.pop_back();
    else if (ev == E::key && !open.empty() && !open.back().insert(parsed.get<std::string>()).second)
      throw DuplicateKey{parsed.get<std::string>()};
    return true;
  };
  try {
    return nlohmann::json::parse(text, check);
  } catch (const DuplicateKey& d) {
    fail(where, ": key \"", d.key, "\" appears twice in one object; keep one");
  } catch (const nlohmann::json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 7, column 17: ...": the tag is the
    // library's, the rest says where and what.
    std::string what = e.what();
    if (what.rfind("[json.exception.", 0) == 0)
      if (const size_t end = what.find("] "); end != std::string::npos) what.erase(0, end + 2);
    fail(where, ": not valid JSON: ", what);
  }
}

nlohmann::json readJsonFile(const std::filesystem::path& path, const std::string& what) {
  return parseJsonText(readUserFile(path, what), path.string());
}

std::string dumpJson(const nlohmann::json& v, int indent) {
  return v.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string briefJson(const nlohmann::json& v, size_t max_chars) {
  std::string s = dumpJson(v, -1);
  if (s.size() > max_chars) s = s.substr(0, max_chars) + "...";
  return s;
}

nlohmann::json jsonNumber(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

}  // namespace lwc
