// CPU casts, fill and copy (reference for the CUDA versions and the CPU tensor path).
#include "kernels/cast.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cast_convert.h"

namespace coco::kernels::cpu {

namespace {

void check_count(int64_t n, const char* op) {
  if (n < 0) throw std::invalid_argument(std::string(op) + ": negative element count " + std::to_string(n));
}

}  // namespace

void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  check_count(n, "kernels::cpu::cast");
  if (n == 0) return;
  if (src_dtype == dst_dtype) {
    if (src != dst) std::memcpy(dst, src, static_cast<size_t>(n) * dtype_size(src_dtype));
    return;
  }
  detail::visit_dtype(src_dtype, "kernels::cpu::cast", [&](auto src_tag) {
    using Src = typename decltype(src_tag)::type;
    detail::visit_dtype(dst_dtype, "kernels::cpu::cast", [&](auto dst_tag) {
      using Dst = typename decltype(dst_tag)::type;
      const Src* in = static_cast<const Src*>(src);
      Dst* out = static_cast<Dst*>(dst);
      for (int64_t i = 0; i < n; ++i) out[i] = detail::convert_element<Dst>(in[i]);
    });
  });
}

void fill(void* dst, DType dtype, double value, int64_t n) {
  check_count(n, "kernels::cpu::fill");
  detail::visit_dtype(dtype, "kernels::cpu::fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T element = detail::convert_from_f64<T>(value);
    T* out = static_cast<T*>(dst);
    for (int64_t i = 0; i < n; ++i) out[i] = element;
  });
}

void copy(void* dst, const void* src, size_t bytes) {
  if (bytes != 0 && dst != src) std::memcpy(dst, src, bytes);
}

}  // namespace coco::kernels::cpu
