// Element conversions shared by the CPU (kernels/cast.cpp) and CUDA (kernels/cast.cu) casts, so
// both backends produce bitwise-identical results.
//
// Semantics (for every pair of coco::DType):
//   float -> float   one correctly rounded (round-to-nearest-even) step from the source value;
//                    NaN stays NaN, overflow becomes +-Inf.
//   float -> integer truncation toward zero, saturating at the integer range, NaN -> 0 (what the
//                    GPU's cvt.rzi.sat does; plain C++ would be undefined behaviour).
//   int   -> float   rounded to nearest (i32/u8 are exact in double, so one rounding step).
//   int   -> int     two's-complement wrap (C++20 integral conversion).
#pragma once
#include <cstdint>
#include <type_traits>

#include "engine/dtype.h"
#include "engine/runtime/cuda_api.h"

namespace coco::kernels::detail {

template <class T>
inline constexpr bool is_float_element_v = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                                           std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;

// Integer ranges as plain constants: std::numeric_limits is host-only under nvcc.
template <class Int>
struct IntRange;
template <>
struct IntRange<int32_t> {
  static constexpr int32_t lowest = INT32_MIN, highest = INT32_MAX;
};
template <>
struct IntRange<int64_t> {
  static constexpr int64_t lowest = INT64_MIN, highest = INT64_MAX;
};
template <>
struct IntRange<uint8_t> {
  static constexpr uint8_t lowest = 0, highest = UINT8_MAX;
};

template <class Int>
__host__ __device__ inline Int saturating_truncate(double value) {
  constexpr double lo = static_cast<double>(IntRange<Int>::lowest);
  constexpr double hi = static_cast<double>(IntRange<Int>::highest);
  if (value != value) return Int(0);
  // For i64 `hi` rounds up to 2^63, which is itself out of range; >= catches it.
  if (value >= hi) return IntRange<Int>::highest;
  if (value <= lo) return IntRange<Int>::lowest;
  return static_cast<Int>(value);
}

// Dst from a value whose exact representation is a float (f32, bf16 and f16 widen exactly).
template <class Dst>
__host__ __device__ inline Dst convert_from_f32(float value) {
  if constexpr (std::is_same_v<Dst, float>)
    return value;
  else if constexpr (std::is_same_v<Dst, double>)
    return static_cast<double>(value);
  else if constexpr (std::is_same_v<Dst, __nv_bfloat16>)
    return __float2bfloat16(value);
  else if constexpr (std::is_same_v<Dst, __half>)
    return __float2half(value);
  else
    return saturating_truncate<Dst>(static_cast<double>(value));
}

// Dst from a double (f64 sources, and integers that are exact in double).
template <class Dst>
__host__ __device__ inline Dst convert_from_f64(double value) {
  if constexpr (std::is_same_v<Dst, float>)
    return static_cast<float>(value);
  else if constexpr (std::is_same_v<Dst, double>)
    return value;
  else if constexpr (std::is_same_v<Dst, __nv_bfloat16>)
    return __double2bfloat16(value);
  else if constexpr (std::is_same_v<Dst, __half>)
    return __double2half(value);
  else
    return saturating_truncate<Dst>(value);
}

template <class Dst, class Src>
__host__ __device__ inline Dst convert_element(Src value) {
  if constexpr (std::is_same_v<Dst, Src>) {
    return value;
  } else if constexpr (std::is_same_v<Src, float>) {
    return convert_from_f32<Dst>(value);
  } else if constexpr (std::is_same_v<Src, __nv_bfloat16>) {
    return convert_from_f32<Dst>(__bfloat162float(value));
  } else if constexpr (std::is_same_v<Src, __half>) {
    return convert_from_f32<Dst>(__half2float(value));
  } else if constexpr (std::is_same_v<Src, double>) {
    return convert_from_f64<Dst>(value);
  } else if constexpr (!is_float_element_v<Dst>) {
    return static_cast<Dst>(value);  // integer -> integer
  } else if constexpr (std::is_same_v<Src, int64_t> && (std::is_same_v<Dst, float> || std::is_same_v<Dst, double>)) {
    return static_cast<Dst>(value);  // one rounding step; going through double would be two
  } else {
    return convert_from_f64<Dst>(static_cast<double>(value));
  }
}

}  // namespace coco::kernels::detail

#include <stdexcept>
#include <string>
#include <type_traits>

namespace coco::kernels::detail {

// Calls visitor(std::type_identity<T>{}) with T the element type of `dtype`.
template <class Visitor>
decltype(auto) visit_dtype(DType dtype, const char* op, Visitor&& visitor) {
  switch (dtype) {
    case DType::f32:
      return visitor(std::type_identity<float>{});
    case DType::f64:
      return visitor(std::type_identity<double>{});
    case DType::bf16:
      return visitor(std::type_identity<__nv_bfloat16>{});
    case DType::f16:
      return visitor(std::type_identity<__half>{});
    case DType::i32:
      return visitor(std::type_identity<int32_t>{});
    case DType::i64:
      return visitor(std::type_identity<int64_t>{});
    case DType::u8:
      return visitor(std::type_identity<uint8_t>{});
  }
  throw std::invalid_argument(std::string(op) + ": unknown dtype code " + std::to_string(static_cast<int>(dtype)));
}

}  // namespace coco::kernels::detail
