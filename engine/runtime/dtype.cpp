#include "engine/runtime/dtype.h"

namespace coco {

std::optional<DType> dtype_from_name(std::string_view name) {
  static constexpr struct {
    std::string_view lower, upper;
    DType type;
  } kNames[] = {{"f32", "F32", DType::f32}, {"f64", "F64", DType::f64}, {"bf16", "BF16", DType::bf16},
                {"f16", "F16", DType::f16}, {"i32", "I32", DType::i32}, {"i64", "I64", DType::i64},
                {"u8", "U8", DType::u8}};
  for (const auto& n : kNames)
    if (name == n.lower || name == n.upper) return n.type;
  return std::nullopt;
}

const char* dtype_safetensors_name(DType t) {
  switch (t) {
    case DType::f32:
      return "F32";
    case DType::f64:
      return "F64";
    case DType::bf16:
      return "BF16";
    case DType::f16:
      return "F16";
    case DType::i32:
      return "I32";
    case DType::i64:
      return "I64";
    case DType::u8:
      return "U8";
  }
  return "?";
}

}  // namespace coco
