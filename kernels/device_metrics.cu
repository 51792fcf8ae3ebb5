// CUDA side of kernels/device_metrics.h: elementwise masks, an integer count and a one-thread-per-
// source scalar gather. Integer atomics and per-element writes only, so every result is schedule-free.
#include <stdexcept>
#include <string>

#include "engine/runtime/cuda_calls.h"
#include "engine/runtime/launch.cuh"
#include "kernels/device_metrics.h"

namespace coco::kernels::detail {
namespace {

constexpr int kMetricsBlock = 256;
constexpr int64_t kMaxMetricsBlocks = 4096;

unsigned blocks_for(int64_t n) {
  const int64_t blocks = (n + kMetricsBlock - 1) / kMetricsBlock;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks < kMaxMetricsBlocks ? blocks : kMaxMetricsBlocks);
}

void check_size(int64_t n, const char* op) {
  if (n < 0) throw std::invalid_argument(std::string(op) + ": negative size " + std::to_string(n));
}

__global__ void __launch_bounds__(kMetricsBlock)
    key_mask_kernel(const int32_t* __restrict__ tokens, int64_t n, int32_t pad_id, uint8_t* __restrict__ mask) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    mask[i] = tokens[i] != pad_id ? 1 : 0;
}

__global__ void __launch_bounds__(kMetricsBlock)
    length_mask_kernel(const int32_t* __restrict__ length, int64_t B, int64_t T, uint8_t* __restrict__ mask) {
  const int64_t n = B * T, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    mask[i] = i % T < length[i / T] ? 1 : 0;
}

__global__ void __launch_bounds__(kMetricsBlock)
    count_nonzero_kernel(const uint8_t* __restrict__ flags, int64_t n, int32_t* __restrict__ count) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int32_t local = 0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    local += flags[i] != 0 ? 1 : 0;
  if (local) atomicAdd(count, local);
}

__global__ void __launch_bounds__(kMaxScalarSources)
    gather_scalars_kernel(ScalarSources sources, ScalarUpdate update, double* __restrict__ dst) {
  const int k = static_cast<int>(threadIdx.x);
  if (k >= sources.count) return;
  const ScalarSource& src = sources.sources[k];
  double value = 0.0;
  if (src.data) {
    if (src.dtype == DType::f32) value = static_cast<double>(*static_cast<const float*>(src.data));
    if (src.dtype == DType::f64) value = *static_cast<const double*>(src.data);
    if (src.dtype == DType::i32) value = static_cast<double>(*static_cast<const int32_t*>(src.data));
  }
  const double term = src.weight * value;
  dst[k] = update == ScalarUpdate::accumulate ? dst[k] + term : term;
}

__global__ void __launch_bounds__(1) add_count_kernel(const int32_t* __restrict__ count, int32_t* __restrict__ total) {
  if (threadIdx.x == 0 && blockIdx.x == 0) *total += *count;
}

__global__ void __launch_bounds__(1)
    add_flag_kernel(const uint32_t* __restrict__ flag, uint32_t unset, int32_t* __restrict__ total) {
  if (threadIdx.x == 0 && blockIdx.x == 0 && *flag != unset) *total += 1;
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

void key_mask(const int32_t* tokens, int64_t n, int32_t pad_id, uint8_t* mask, cudaStream_t stream) {
  detail::check_size(n, "kernels::cuda::key_mask");
  if (n == 0) return;
  COCO_LAUNCH(detail::key_mask_kernel, dim3(detail::blocks_for(n)), dim3(detail::kMetricsBlock), 0, stream, tokens, n,
              pad_id, mask);
}

void length_mask(const int32_t* length, int64_t B, int64_t T, uint8_t* mask, cudaStream_t stream) {
  detail::check_size(B, "kernels::cuda::length_mask");
  detail::check_size(T, "kernels::cuda::length_mask");
  if (B * T == 0) return;
  COCO_LAUNCH(detail::length_mask_kernel, dim3(detail::blocks_for(B * T)), dim3(detail::kMetricsBlock), 0, stream,
              length, B, T, mask);
}

void count_nonzero(const uint8_t* flags, int64_t n, int32_t* count, cudaStream_t stream) {
  detail::check_size(n, "kernels::cuda::count_nonzero");
  COCO_CUDA_CHECK(runtime::memset_async(count, 0, sizeof(int32_t), stream));
  if (n == 0) return;
  COCO_LAUNCH(detail::count_nonzero_kernel, dim3(detail::blocks_for(n)), dim3(detail::kMetricsBlock), 0, stream, flags,
              n, count);
}

void gather_scalars(const ScalarSources& sources, ScalarUpdate update, double* dst, cudaStream_t stream) {
  check_scalar_sources(sources, "kernels::cuda::gather_scalars");
  if (sources.count == 0) return;
  COCO_LAUNCH(detail::gather_scalars_kernel, dim3(1), dim3(kMaxScalarSources), 0, stream, sources, update, dst);
}

void add_count(const int32_t* count, int32_t* total, cudaStream_t stream) {
  COCO_LAUNCH(detail::add_count_kernel, dim3(1), dim3(1), 0, stream, count, total);
}

void add_flag(const uint32_t* flag, uint32_t unset, int32_t* total, cudaStream_t stream) {
  COCO_LAUNCH(detail::add_flag_kernel, dim3(1), dim3(1), 0, stream, flag, unset, total);
}

}  // namespace coco::kernels::cuda
