#include "lwc/npy.h"

#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "lwc/model_io.h"

namespace lwc {

namespace {

DType dtypeFromDescr(const std::string& d, const std::string& where) {
  // '|' = not applicable (1-byte), '<' = little-endian, '=' = native (little on our targets)
  if (d.size() < 3 || (d[0] != '<' && d[0] != '|' && d[0] != '='))
    fail(where, ": unsupported .npy dtype '", d, "' (big-endian or unknown); save it little-endian");
  const std::string t = d.substr(1);
  if (t == "f4") return DType::Float32;
  if (t == "f2") return DType::Float16;
  if (t == "f8") return DType::Float64;
  if (t == "i1") return DType::Int8;
  if (t == "u1") return DType::UInt8;
  if (t == "i2") return DType::Int16;
  if (t == "u2") return DType::UInt16;
  if (t == "i4") return DType::Int32;
  if (t == "i8") return DType::Int64;
  if (t == "u4") return DType::UInt32;
  if (t == "u8") return DType::UInt64;
  if (t == "b1") return DType::Bool;
  fail(where, ": unsupported .npy dtype '", d, "'");
}

std::string descrOf(DType t) {
  switch (t) {
    case DType::Float32: return "<f4";
    case DType::Float16: return "<f2";
    case DType::Float64: return "<f8";
    case DType::Int8: return "|i1";
    case DType::UInt8: return "|u1";
    case DType::Int16: return "<i2";
    case DType::UInt16: return "<u2";
    case DType::Int32: return "<i4";
    case DType::Int64: return "<i8";
    case DType::UInt32: return "<u4";
    case DType::UInt64: return "<u8";
    case DType::Bool: return "|b1";
    case DType::Undefined: break;
  }
  throw InternalError("no .npy dtype for undefined");
}

}  // namespace

Tensor parseNpy(const std::string& b, const std::string& where) {
  static const char kMagic[] = "\x93NUMPY";
  if (b.size() < 10 || std::memcmp(b.data(), kMagic, 6) != 0) fail(where, ": not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(b[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(b[8]) | (static_cast<size_t>(static_cast<unsigned char>(b[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) fail(where, ": truncated .npy header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(b[8 + i])) << (8 * i);
    offset = 12;
  } else {
    fail(where, ": unsupported .npy format version ", major);
  }
  if (offset + header_len > b.size()) fail(where, ": truncated .npy header");
  const std::string header = b.substr(offset, header_len);
  std::smatch m;
  static const std::regex descr_re(R"('descr'\s*:\s*'([^']*)')");
  static const std::regex order_re(R"('fortran_order'\s*:\s*(True|False))");
  static const std::regex shape_re(R"('shape'\s*:\s*\(([^)]*)\))");
  if (!std::regex_search(header, m, descr_re)) fail(where, ": .npy header has no 'descr'");
  const DType dt = dtypeFromDescr(m[1], where);
  if (!std::regex_search(header, m, order_re)) fail(where, ": .npy header has no 'fortran_order'");
  if (m[1] == "True") fail(where, ": Fortran-ordered arrays are not supported; save with np.ascontiguousarray");
  if (!std::regex_search(header, m, shape_re)) fail(where, ": .npy header has no 'shape'");
  Shape shape;
  std::stringstream ss(m[1].str());
  std::string item;
  double count = 1;
  while (std::getline(ss, item, ',')) {
    if (item.find_first_not_of(" \t") == std::string::npos) continue;
    int64_t d;
    try {
      d = std::stoll(item);
    } catch (const std::exception&) {
      fail(where, ": bad .npy shape '", m[1].str(), "'");
    }
    if (d < 0) fail(where, ": negative dimension in .npy shape");
    shape.push_back(d);
    count *= static_cast<double>(d);
  }
  const size_t data_off = offset + header_len;
  if (count * static_cast<double>(dtypeSize(dt)) > static_cast<double>(b.size() - data_off))
    fail(where, ": .npy header declares shape ", shapeStr(shape), " of ", dtypeName(dt), " but the file holds only ",
         b.size() - data_off, " data bytes");
  Tensor t(dt, shape);
  if (t.nbytes()) std::memcpy(t.raw(), b.data() + data_off, t.nbytes());
  t.normalizeBools();
  return t;
}

Tensor readNpy(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path.string(), ": cannot open .npy file");
  std::ostringstream ss;
  ss << f.rdbuf();
  return parseNpy(ss.str(), path.string());
}

std::string toNpy(const Tensor& t) {
  std::string shape = "(";
  for (size_t i = 0; i < t.rank(); ++i) shape += std::to_string(t.dim(i)) + (t.rank() == 1 ? "," : (i + 1 < t.rank() ? ", " : ""));
  shape += ")";
  std::string header = "{'descr': '" + descrOf(t.dtype()) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = std::string("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out.append(static_cast<const char*>(t.raw()), t.nbytes());
  return out;
}

void writeNpy(const std::filesystem::path& path, const Tensor& t) { writeFileAtomic(path, toNpy(t)); }

}  // namespace lwc
