// CPU dropout (same mask as the CUDA kernels: both draw rng.uniform(i) and compare in f32).
#include "kernels/dropout.h"

#include <stdexcept>
#include <string>

namespace coco::kernels::detail {

float dropout_threshold(const char* op, double p, int64_t n) {
  if (!(p >= 0.0 && p <= 1.0))
    throw std::invalid_argument(std::string(op) + ": dropout probability " + std::to_string(p) + " is outside [0, 1]");
  if (n < 0) throw std::invalid_argument(std::string(op) + ": negative element count " + std::to_string(n));
  return static_cast<float>(p);
}

}  // namespace coco::kernels::detail

namespace coco::kernels::cpu {

template <class T>
void dropout_apply(T* out, const T* x, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset) {
  const float threshold = detail::dropout_threshold("kernels::cpu::dropout_apply", p, n);
  const T keep_scale = static_cast<T>(1.0 / (1.0 - p));
  for (int64_t i = 0; i < n; ++i) {
    const bool dropped = rng.uniform(index_offset + static_cast<uint64_t>(i)) < threshold;
    out[i] = x[i] * (dropped ? T(0) : keep_scale);
  }
}

void dropout_mask(uint8_t* mask, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset) {
  const float threshold = detail::dropout_threshold("kernels::cpu::dropout_mask", p, n);
  for (int64_t i = 0; i < n; ++i) mask[i] = rng.uniform(index_offset + static_cast<uint64_t>(i)) < threshold ? 0 : 1;
}

template void dropout_apply<float>(float*, const float*, int64_t, double, const rng::Stream&, uint64_t);
template void dropout_apply<double>(double*, const double*, int64_t, double, const rng::Stream&, uint64_t);

}  // namespace coco::kernels::cpu
