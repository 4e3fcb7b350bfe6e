// Reading JSON that users write (pipelines, preprocessing, calibration statistics) and quoting it
// back in error messages.
#pragma once

#include <nlohmann/json.hpp>

#include <filesystem>
#include <string>
#include <string_view>

namespace lwc {

/// Parses JSON text that came from `where` (a file name, or an option). Every way the text can fail
/// to parse, bad syntax or a number beyond double's range alike, throws lwc::Error
/// "<where>: not valid JSON: <nlohmann's reason>"; nlohmann reports an overflowing number as
/// out_of_range rather than parse_error, so catching parse_error alone let "1e999" end lwc with
/// an internal error.
/// A key given twice in one object is refused the same way ("key "k" appears twice").
/// Arrays and objects nested deeper than kMaxJsonDepth are refused the same way ("nested more than
/// 64 levels deep"): a value 100 000 levels deep parsed, and quoting it in an error message
/// (nlohmann's dump recurses) overflowed the stack.
nlohmann::json parseJsonText(const std::string& text, const std::string& where);

/// The deepest nesting parseJsonText accepts; lwc's own files nest a few levels.
inline constexpr int kMaxJsonDepth = 64;

/// How deeply '[' and '{' nest in text, outside string literals (an unbalanced text counts what
/// opens): for text that is read by other means than parseJsonText (the --passes text form).
int jsonNestingDepth(std::string_view text);

/// Reads and parses a JSON file; `what` names it in errors ("the pipeline file"): a missing file,
/// a folder and an unreadable file each get one line naming the path.
nlohmann::json readJsonFile(const std::filesystem::path& path, const std::string& what);

/// JSON text for files and standard output (reports, saved statistics): as nlohmann's dump, except
/// that bytes which are not UTF-8 (a node name in a model is any bytes) become U+FFFD instead of
/// throwing, which made `lwc info --json` and `lwc prune --report` internal errors on such models.
std::string dumpJson(const nlohmann::json& v, int indent = 2);

/// A figure for JSON output, which has no inf or NaN: the strings "inf", "-inf" and "nan" for those
/// (lwc.compare and lwc.report alike; null is kept for "not measured" / "not applicable").
nlohmann::json jsonNumber(double v);

/// A JSON value as it appears in an error message: its compact text, cut to about `max_chars`
/// with "..." so that a large object in the wrong place keeps the message to one readable line.
std::string briefJson(const nlohmann::json& v, size_t max_chars = 60);

}  // namespace lwc
