#include "lwc/dtype.h"

#include <iterator>
#include <string>

#include <onnx/onnx_pb.h>

#include <bit>
#include <cmath>
#include <cstring>

namespace lwc {

size_t dtypeSize(DType t) {
  switch (t) {
    case DType::Float32: return 4;
    case DType::Float16: return 2;
    case DType::Float64: return 8;
    case DType::Int8: return 1;
    case DType::UInt8: return 1;
    case DType::Int16: return 2;
    case DType::UInt16: return 2;
    case DType::Int32: return 4;
    case DType::Int64: return 8;
    case DType::UInt32: return 4;
    case DType::UInt64: return 8;
    case DType::Bool: return 1;
    case DType::Undefined: return 0;
  }
  return 0;
}

std::string_view dtypeName(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::Float64: return "float64";
    case DType::Int8: return "int8";
    case DType::UInt8: return "uint8";
    case DType::Int16: return "int16";
    case DType::UInt16: return "uint16";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::UInt32: return "uint32";
    case DType::UInt64: return "uint64";
    case DType::Bool: return "bool";
    case DType::Undefined: return "undefined";
  }
  return "undefined";
}

int toOnnxType(DType t) {
  using TP = onnx::TensorProto;
  switch (t) {
    case DType::Float32: return TP::FLOAT;
    case DType::Float16: return TP::FLOAT16;
    case DType::Float64: return TP::DOUBLE;
    case DType::Int8: return TP::INT8;
    case DType::UInt8: return TP::UINT8;
    case DType::Int16: return TP::INT16;
    case DType::UInt16: return TP::UINT16;
    case DType::Int32: return TP::INT32;
    case DType::Int64: return TP::INT64;
    case DType::UInt32: return TP::UINT32;
    case DType::UInt64: return TP::UINT64;
    case DType::Bool: return TP::BOOL;
    case DType::Undefined: return TP::UNDEFINED;
  }
  return TP::UNDEFINED;
}

DType fromOnnxType(int t) {
  using TP = onnx::TensorProto;
  switch (t) {
    case TP::FLOAT: return DType::Float32;
    case TP::FLOAT16: return DType::Float16;
    case TP::DOUBLE: return DType::Float64;
    case TP::INT8: return DType::Int8;
    case TP::UINT8: return DType::UInt8;
    case TP::INT16: return DType::Int16;
    case TP::UINT16: return DType::UInt16;
    case TP::INT32: return DType::Int32;
    case TP::INT64: return DType::Int64;
    case TP::UINT32: return DType::UInt32;
    case TP::UINT64: return DType::UInt64;
    case TP::BOOL: return DType::Bool;
    default: return DType::Undefined;
  }
}

bool isFloat(DType t) { return t == DType::Float32 || t == DType::Float16 || t == DType::Float64; }
bool isInteger(DType t) { return t != DType::Undefined && !isFloat(t) && t != DType::Bool; }

float halfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal half -> normal float
      const float v = std::ldexp(static_cast<float>(mant), -24);
      return sign ? -v : v;
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

uint16_t floatToHalf(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u) {  // Inf or NaN
    return sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u);
  }
  if (absx >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520 -> Inf
  if (absx < 0x38800000u) {                         // below the smallest normal half: subnormal
    const float a = std::bit_cast<float>(absx);
    // a / 2^-24 rounded to nearest even
    const float scaled = a * 16777216.0f;
    const uint16_t m = static_cast<uint16_t>(std::nearbyint(scaled));
    return sign | m;
  }
  const uint32_t mant = absx & 0x7fffffu;
  uint32_t e = (absx >> 23) - 112u;
  uint32_t m = mant >> 13;
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (m & 1u))) {
    if (++m == 0x400u) {
      m = 0;
      ++e;
    }
  }
  return static_cast<uint16_t>(sign | (e << 10) | m);
}

std::string onnxTypeName(int t) {
  static constexpr const char* kNames[] = {
      "UNDEFINED", "FLOAT", "UINT8",  "INT8",      "UINT16",    "INT16",     "INT32",        "INT64",
      "STRING",    "BOOL",  "FLOAT16", "DOUBLE",   "UINT32",    "UINT64",    "COMPLEX64",    "COMPLEX128",
      "BFLOAT16",  "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1",
      "FLOAT8E8M0"};
  if (t >= 0 && t < static_cast<int>(std::size(kNames))) return kNames[t];
  return "type code " + std::to_string(t);
}

}  // namespace lwc
