// Small kernels that keep a training step's bookkeeping on the device, so the host never reads a
// device value inside a step (issue #14):
//   key_mask          (B, T) u8 key-padding mask of a token batch (token != pad)
//   length_mask       (B, T) u8 mask of the first length[b] positions of each row (crop views)
//   count_nonzero     number of non-zero bytes of a u8 tensor, into one i32 (integer atomics only,
//                     so the count is schedule-free)
//   add_count/_flag   *total += *count (or 1 for a set flag): running error counters
//                     (engine/ops/device_checks.h)
//   gather_scalars    dst[k] (+)= weight_k * *source_k for up to kMaxScalarSources device scalars of
//                     mixed dtypes (f32, f64, i32), widened to f64: the objective's counts and the
//                     step's metric sums in one launch each, sources passed by value (no upload)
#pragma once
#include <cstdint>

#include "engine/dtype.h"
#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

inline constexpr int kMaxScalarSources = 24;

// One device (or, on the CPU path, host) scalar; a null pointer reads as 0.
struct ScalarSource {
  const void* data = nullptr;
  DType dtype = DType::f32;  // f32, f64 or i32
  double weight = 1.0;
};

struct ScalarSources {
  int32_t count = 0;
  ScalarSource sources[kMaxScalarSources] = {};
};

enum class ScalarUpdate : uint8_t { assign, accumulate };

// Throws std::invalid_argument naming `op` for a count outside [0, kMaxScalarSources] or a dtype
// other than f32, f64, i32.
void check_scalar_sources(const ScalarSources& sources, const char* op);

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// tokens: (n) i32 -> mask (n) u8 = tokens[i] != pad_id.
void key_mask(const int32_t* tokens, int64_t n, int32_t pad_id, uint8_t* mask);
// length: (B) i32 -> mask (B, T) u8 = t < length[b].
void length_mask(const int32_t* length, int64_t B, int64_t T, uint8_t* mask);
// *count = number of non-zero bytes of flags (n).
void count_nonzero(const uint8_t* flags, int64_t n, int32_t* count);
// dst (sources.count) f64. Throws std::invalid_argument for a bad count or dtype.
void gather_scalars(const ScalarSources& sources, ScalarUpdate update, double* dst);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers; same contracts and bits as the CPU versions. Asynchronous on `stream`.
void key_mask(const int32_t* tokens, int64_t n, int32_t pad_id, uint8_t* mask, cudaStream_t stream);
void length_mask(const int32_t* length, int64_t B, int64_t T, uint8_t* mask, cudaStream_t stream);
void count_nonzero(const uint8_t* flags, int64_t n, int32_t* count, cudaStream_t stream);
void gather_scalars(const ScalarSources& sources, ScalarUpdate update, double* dst, cudaStream_t stream);
// *total += *count (one thread): folds a kernel's error count into a running counter.
void add_count(const int32_t* count, int32_t* total, cudaStream_t stream);
// *total += (*flag != unset) (one thread): folds a kernel's error flag into a running counter.
void add_flag(const uint32_t* flag, uint32_t unset, int32_t* total, cudaStream_t stream);

}  // namespace coco::kernels::cuda
