// Element types of tensors and their mapping to ONNX's TensorProto.DataType.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace lwc {

enum class DType : uint8_t {
  Undefined = 0,
  Float32,
  Float16,
  Float64,
  Int8,
  UInt8,
  Int16,
  UInt16,
  Int32,
  Int64,
  UInt32,
  UInt64,
  Bool,
};

/// Size of one element in bytes (0 for Undefined).
size_t dtypeSize(DType t);
/// Lower-case short name as used in reports: "float32", "int8" ...
std::string_view dtypeName(DType t);
/// ONNX TensorProto.DataType enum value.
int toOnnxType(DType t);
/// Maps an ONNX TensorProto.DataType; returns Undefined for types lwc does not handle (string, complex, bfloat16).
DType fromOnnxType(int onnx_type);
/// ONNX's name of a TensorProto.DataType ("BFLOAT16"), including the types newer than Debian's ONNX
/// 1.12 (FLOAT8E4M3FN ... INT4, FLOAT4E2M1, FLOAT8E8M0: its DataType_Name gave "" for them), and
/// "type code N" for a number ONNX does not define.
std::string onnxTypeName(int onnx_type);
bool isFloat(DType t);
bool isInteger(DType t);

template <typename T>
constexpr DType dtypeOf();
template <> constexpr DType dtypeOf<float>() { return DType::Float32; }
template <> constexpr DType dtypeOf<double>() { return DType::Float64; }
template <> constexpr DType dtypeOf<int8_t>() { return DType::Int8; }
template <> constexpr DType dtypeOf<uint8_t>() { return DType::UInt8; }
template <> constexpr DType dtypeOf<int16_t>() { return DType::Int16; }
template <> constexpr DType dtypeOf<uint16_t>() { return DType::UInt16; }
template <> constexpr DType dtypeOf<int32_t>() { return DType::Int32; }
template <> constexpr DType dtypeOf<int64_t>() { return DType::Int64; }
template <> constexpr DType dtypeOf<uint32_t>() { return DType::UInt32; }
template <> constexpr DType dtypeOf<uint64_t>() { return DType::UInt64; }
template <> constexpr DType dtypeOf<bool>() { return DType::Bool; }

/// Calls f(T{}) with the C++ type of `t` (every dtype but Float16 and Undefined, and Bool unless
/// kWithBool, which call unsupported() instead; it must not return normally).
template <bool kWithBool = true, typename F, typename G>
decltype(auto) visitDType(DType t, F&& f, G&& unsupported) {
  switch (t) {
    case DType::Float32: return f(float{});
    case DType::Float64: return f(double{});
    case DType::Int8: return f(int8_t{});
    case DType::UInt8: return f(uint8_t{});
    case DType::Int16: return f(int16_t{});
    case DType::UInt16: return f(uint16_t{});
    case DType::Int32: return f(int32_t{});
    case DType::Int64: return f(int64_t{});
    case DType::UInt32: return f(uint32_t{});
    case DType::UInt64: return f(uint64_t{});
    case DType::Bool:
      if constexpr (kWithBool) return f(bool{});
      break;
    case DType::Float16:
    case DType::Undefined: break;
  }
  unsupported();
  __builtin_unreachable();
}

/// IEEE 754 half <-> single conversion (round to nearest even; NaN and Inf preserved).
float halfToFloat(uint16_t h);
uint16_t floatToHalf(float f);

}  // namespace lwc
