// Element types of tensors and of serialized data.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace coco {

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, u8 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f64:
    case DType::i64:
      return 8;
    case DType::f32:
    case DType::i32:
      return 4;
    case DType::bf16:
    case DType::f16:
      return 2;
    case DType::u8:
      return 1;
  }
  return 0;
}

// Lower-case engine name: "f32", "bf16", ...
constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::f64:
      return "f64";
    case DType::bf16:
      return "bf16";
    case DType::f16:
      return "f16";
    case DType::i32:
      return "i32";
    case DType::i64:
      return "i64";
    case DType::u8:
      return "u8";
  }
  return "?";
}

constexpr bool dtype_is_float(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}

// Parses the engine name ("f32") or the safetensors name ("F32"); nullopt when unknown.
std::optional<DType> dtype_from_name(std::string_view name);
// Upper-case safetensors name: "F32", "BF16", ...
const char* dtype_safetensors_name(DType t);

}  // namespace coco
