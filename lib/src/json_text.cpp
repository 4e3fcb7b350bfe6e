#include "lwc/json_text.h"

#include <algorithm>
#include <cmath>

#include "lwc/model_io.h"

#include <set>
#include <vector>

#include "lwc/status.h"

namespace lwc {

namespace {
struct DuplicateKey {
  std::string key, path;  ///< path: the JSON path of the object holding it ("data.eval.preprocess"), "" at the top
};
struct TooDeep {
  std::string path;  ///< the JSON path of the innermost object or array open at the limit
};
// An object or array open while parsing: its keys so far and the key being read, or the element
// index.
struct Frame {
  bool array = false;
  std::set<std::string> keys;
  std::string key;
  long index = -1;
};
}  // namespace

nlohmann::json parseJsonText(const std::string& text, const std::string& where) {
  // nlohmann keeps the last of two equal keys in an object; a user who wrote {"sparsity": 0.5,
  // "sparsity": 0.7} meant one of them, and lwc cannot know which. The parser's callback sees every
  // key with the objects it belongs to opening and closing around it, and the error names the
  // object by its JSON path (it named the key alone, also deep inside a pipeline).
  std::vector<Frame> open;
  const auto element = [&] {
    if (!open.empty() && open.back().array) ++open.back().index;
  };
  const auto path = [&] {
    std::string p;
    for (size_t i = 0; i + 1 < open.size(); ++i)
      p += open[i].array ? "[" + std::to_string(open[i].index) + "]" : (p.empty() ? "" : ".") + open[i].key;
    return p;
  };
  const auto check = [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    switch (ev) {
      case E::object_start:
      case E::array_start:
        if (static_cast<int>(open.size()) >= kMaxJsonDepth) {
          std::string p = path();  // 60 levels of "[0]" would make the line long: its start says where
          if (p.size() > 40) p = p.substr(0, 40) + "...";
          throw TooDeep{p};
        }
        element();
        open.emplace_back();
        open.back().array = ev == E::array_start;
        break;
      case E::object_end:
      case E::array_end:
        if (!open.empty()) open.pop_back();
        break;
      case E::key:
        if (!open.empty()) {
          const std::string k = parsed.get<std::string>();
          if (!open.back().keys.insert(k).second) throw DuplicateKey{k, path()};
          open.back().key = k;
        }
        break;
      case E::value:
        element();
        break;
    }
    return true;
  };
  try {
    return nlohmann::json::parse(text, check);
  } catch (const TooDeep& d) {
    fail(where, ": ", d.path.empty() ? "" : d.path + ": ", "arrays and objects nested more than ", kMaxJsonDepth,
         " levels deep; lwc's JSON files need a few");
  } catch (const DuplicateKey& d) {
    fail(where, ": ", d.path.empty() ? "" : d.path + ": ", "key \"", d.key, "\" appears twice in one object; keep one");
  } catch (const nlohmann::json::exception& e) {
    // "[json.exception.parse_error.101] parse error at line 7, column 17: ...": the tag is the
    // library's, the rest says where and what.
    std::string what = e.what();
    if (what.rfind("[json.exception.", 0) == 0)
      if (const size_t end = what.find("] "); end != std::string::npos) what.erase(0, end + 2);
    fail(where, ": not valid JSON: ", what);
  }
}

int jsonNestingDepth(std::string_view text) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
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
