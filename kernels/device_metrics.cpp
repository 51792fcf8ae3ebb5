#include "kernels/device_metrics.h"

#include <stdexcept>
#include <string>

namespace coco::kernels {
namespace {

void check_sources(const ScalarSources& s, const char* op) {
  if (s.count < 0 || s.count > kMaxScalarSources)
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(s.count) + " sources, expected 0.." +
                                std::to_string(kMaxScalarSources));
  for (int32_t k = 0; k < s.count; ++k) {
    const DType d = s.sources[k].dtype;
    if (d != DType::f32 && d != DType::f64 && d != DType::i32)
      throw std::invalid_argument(std::string(op) + ": source " + std::to_string(k) + " has dtype " + dtype_name(d) +
                                  ", expected f32, f64 or i32");
  }
}

}  // namespace

void check_scalar_sources(const ScalarSources& sources, const char* op) { check_sources(sources, op); }

}  // namespace coco::kernels

namespace coco::kernels::cpu {

void key_mask(const int32_t* tokens, int64_t n, int32_t pad_id, uint8_t* mask) {
  for (int64_t i = 0; i < n; ++i) mask[i] = tokens[i] != pad_id ? 1 : 0;
}

void length_mask(const int32_t* length, int64_t B, int64_t T, uint8_t* mask) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t) mask[b * T + t] = t < length[b] ? 1 : 0;
}

void count_nonzero(const uint8_t* flags, int64_t n, int32_t* count) {
  int32_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += flags[i] != 0;
  *count = c;
}

void gather_scalars(const ScalarSources& s, ScalarUpdate update, double* dst) {
  check_sources(s, "kernels::cpu::gather_scalars");
  for (int32_t k = 0; k < s.count; ++k) {
    const ScalarSource& src = s.sources[k];
    double value = 0.0;
    if (src.data) {
      if (src.dtype == DType::f32) value = static_cast<double>(*static_cast<const float*>(src.data));
      if (src.dtype == DType::f64) value = *static_cast<const double*>(src.data);
      if (src.dtype == DType::i32) value = static_cast<double>(*static_cast<const int32_t*>(src.data));
    }
    const double term = src.weight * value;
    dst[k] = update == ScalarUpdate::accumulate ? dst[k] + term : term;
  }
}

}  // namespace coco::kernels::cpu
