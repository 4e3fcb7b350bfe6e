// Label files: CSV "file,label", one integer per line, .npy integer arrays and IDX label files.
#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>

#include "internal.h"

namespace lwc::data {

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string_view unquote(std::string_view s) {
  if (s.size() >= 2 && ((s.front() == '"' && s.back() == '"') || (s.front() == '\'' && s.back() == '\''))) s = s.substr(1, s.size() - 2);
  return s;
}

std::optional<int64_t> parseInt(std::string_view s) {
  int64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

void checkOne(int64_t v, int64_t num_classes, const std::string& at) {
  if (v < 0) fail(at, ": label ", v, " is negative; labels are class indices 0, 1, ...");
  if (num_classes > 0 && v >= num_classes)
    fail(at, ": label ", v, " is out of range for a model with ", num_classes, " classes (0..", num_classes - 1, ")");
}

LabelFile readText(const fs::path& p, int64_t num_classes) {
  const std::string text = readWholeFile(p, uint64_t(1) << 30);
  const std::string name = show(p);
  std::vector<std::string_view> lines;
  // A UTF-8 byte-order mark (Notepad, Excel's "CSV UTF-8") is not part of the first label or file
  // name: it read as "'1' is not an integer label" with the mark invisible.
  const size_t start = text.rfind("\xEF\xBB\xBF", 0) == 0 ? 3 : 0;
  for (size_t pos = start; pos < text.size();) {
    size_t e = text.find('\n', pos);
    if (e == std::string::npos) e = text.size();
    lines.push_back(trim(std::string_view(text).substr(pos, e - pos)));
    pos = e + 1;
  }
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  if (lines.empty()) fail(name, ": the labels file is empty");
  LabelFile out;
  out.unit = "lines";
  const bool csv = lines.front().find(',') != std::string_view::npos;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string at = name + " line " + std::to_string(i + 1);
    std::string_view line = lines[i];
    if (line.empty()) fail(at, ": empty line; give one label per line");
    std::string_view value = line;
    if (csv) {
      const size_t comma = line.rfind(',');
      if (comma == std::string_view::npos) fail(at, ": expected \"file,label\"");
      value = unquote(trim(line.substr(comma + 1)));
      const std::string_view file = unquote(trim(line.substr(0, comma)));
      // "file,label,extra": the last column was read as the label and "file,label" as the name.
      // A name may hold commas, so only a name that then is no image is taken for extra columns.
      if (const size_t first = file.find(','); first != std::string_view::npos && !isImageFile(fs::path(std::string(file))) &&
                                                isImageFile(fs::path(std::string(trim(file.substr(0, first))))))
        fail(at, ": ", std::count(line.begin(), line.end(), ',') + 1, " columns; a labels CSV has two, file,label");
      if (i == 0 && !parseInt(value)) continue;  // a header line
      if (file.empty()) fail(at, ": empty file name");
      out.files.emplace_back(file);
    }
    const auto v = parseInt(value);
    if (!v) fail(at, ": '", std::string(value), "' is not an integer label");
    checkOne(*v, num_classes, at);
    out.labels.push_back(*v);
  }
  return out;
}

LabelFile readNpyLabels(const fs::path& p, int64_t num_classes) {
  const std::string name = show(p);
  auto s = openFileStream(p);
  const NpyHeader h = readNpyHeader(*s, name);
  if (!isInteger(h.dtype) && h.dtype != DType::Bool)
    fail(name, ": labels must be an integer array, not ", dtypeName(h.dtype), "; save them with .astype(np.int64)");
  if (!(h.shape.size() == 1 || (h.shape.size() == 2 && h.shape[1] == 1)))
    fail(name, ": labels must be a 1-D array [N], not ", shapeStr(h.shape));
  const uint64_t fsize = File(p).size();
  if (h.dataBytes() > fsize) fail(name, ": header declares ", shapeStr(h.shape), " but the file holds only ", fsize, " bytes");
  Tensor t(h.dtype, h.shape);
  s->readExact(t.raw(), t.nbytes(), name, "label data");
  t.normalizeBools();
  LabelFile out;
  out.labels = labelValues(t, name);
  checkLabelRange(out.labels, num_classes, name);
  return out;
}

}  // namespace

std::vector<int64_t> labelValues(const Tensor& t, const std::string& where) {
  std::vector<int64_t> out(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i) {
    // 64-bit labels are read as integers: through a double, INT64_MAX rounds to 2^63, which no
    // int64_t holds (found by fuzz_dataset under UBSan). Narrower types are exact in a double.
    if (t.dtype() == DType::UInt64) {
      const uint64_t u = t.data<uint64_t>()[i];
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail(where, "[", i, "]: label ", u, " is out of range; labels are class indices 0, 1, ...");
      out[static_cast<size_t>(i)] = static_cast<int64_t>(u);
    } else if (t.dtype() == DType::Int64) {
      out[static_cast<size_t>(i)] = t.data<int64_t>()[i];
    } else {
      out[static_cast<size_t>(i)] = static_cast<int64_t>(t.at(i));
    }
  }
  return out;
}

void checkLabelRange(const std::vector<int64_t>& labels, int64_t num_classes, const std::string& file) {
  for (size_t i = 0; i < labels.size(); ++i)
    if (labels[i] < 0 || (num_classes > 0 && labels[i] >= num_classes)) checkOne(labels[i], num_classes, file + "[" + std::to_string(i) + "]");
}

LabelFile readLabelFile(const fs::path& p, int64_t num_classes) {
  if (!fs::exists(p)) fail(show(p), ": labels file does not exist");
  if (fs::is_directory(p)) fail(show(p), ": is a folder; give the labels file itself (CSV, one label per line, .npy or IDX)");
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (ext == ".npy") return readNpyLabels(p, num_classes);
  // IDX labels (MNIST): magic 00 00 08 01, then the count, big-endian; gzipped or not.
  auto s = openGzipStream(p);
  unsigned char m[8];
  if (s->read(m, 4) == 4 && m[0] == 0 && m[1] == 0 && m[2] == 8 && m[3] == 1) {
    const std::string name = show(p);
    s->readExact(m + 4, 4, name, "IDX header");
    const uint64_t n = uint64_t(m[4]) << 24 | uint64_t(m[5]) << 16 | uint64_t(m[6]) << 8 | m[7];
    LabelFile out;
    std::vector<unsigned char> buf(1 << 16);
    while (out.labels.size() < n) {
      const size_t k = static_cast<size_t>(std::min<uint64_t>(buf.size(), n - out.labels.size()));
      const size_t got = s->read(buf.data(), k);
      out.labels.insert(out.labels.end(), buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(got));
      if (got < k) fail(name, ": header says ", n, " labels but the file holds only ", out.labels.size(), " (truncated?)");
    }
    if (s->read(buf.data(), 1) != 0) fail(name, ": header says ", n, " labels but the file holds more; the header is wrong");
    checkLabelRange(out.labels, num_classes, name);
    return out;
  }
  if (isGzip(p)) fail(show(p), ": a gzipped labels file must be an IDX labels file (magic 0x00000801)");
  return readText(p, num_classes);
}

std::vector<fs::path> labelsCandidates(const fs::path& dir) {
  return {dir / "labels.npy", dir / "labels.txt", dir / "labels.csv"};
}

std::optional<fs::path> findLabelsIn(const fs::path& dir) {
  for (const auto& f : labelsCandidates(dir))
    if (fs::is_regular_file(f)) return f;
  return std::nullopt;
}

std::optional<fs::path> idxLabelsTwin(const fs::path& images) {
  std::string name = images.filename().string();
  const size_t at = name.find("images-idx3");
  if (at == std::string::npos) return std::nullopt;
  name.replace(at, 11, "labels-idx1");
  return images.parent_path() / name;
}

}  // namespace lwc::data
