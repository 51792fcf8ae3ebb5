// CUDA corrupted-sequence construction: an elementwise copy with default labels, then a scatter over
// the (distinct) masked positions, on one stream. No two threads write one element, so the result is
// schedule-free.
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/corrupt.h"

namespace coco::kernels::detail {
namespace {

constexpr int kCorruptBlock = 256;
constexpr int64_t kMaxCorruptBlocks = 4096;

__device__ inline float label_of(bool was_replaced, bool is_pad, LabelConvention convention) {
  if (is_pad) return 0.0f;
  return (convention == LabelConvention::replaced_is_one) == was_replaced ? 1.0f : 0.0f;
}

unsigned blocks_for(int64_t n) {
  const int64_t blocks = (n + kCorruptBlock - 1) / kCorruptBlock;
  return static_cast<unsigned>(blocks < kMaxCorruptBlocks ? blocks : kMaxCorruptBlocks);
}

// tokens, corrupted, replaced, labels: (total)
__global__ void __launch_bounds__(kCorruptBlock)
    copy_original_kernel(const int32_t* __restrict__ tokens, int64_t total, int32_t pad_id, LabelConvention convention,
                         int32_t* __restrict__ corrupted, uint8_t* __restrict__ replaced, float* __restrict__ labels) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int32_t t = tokens[i];
    corrupted[i] = t;
    replaced[i] = 0;
    if (labels) labels[i] = label_of(false, t == pad_id, convention);
  }
}

// positions, samples: (N); the rest: (total)
__global__ void __launch_bounds__(kCorruptBlock)
    scatter_samples_kernel(const int32_t* __restrict__ tokens, int64_t total, const int32_t* __restrict__ positions,
                           const int32_t* __restrict__ samples, int64_t N, int32_t pad_id, LabelConvention convention,
                           int32_t* __restrict__ corrupted, uint8_t* __restrict__ replaced,
                           float* __restrict__ labels) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < N; k += stride) {
    const int64_t p = positions[k];
    if (p < 0 || p >= total) continue;
    const int32_t s = samples[k], t = tokens[p];
    corrupted[p] = s;
    replaced[p] = s != t ? 1 : 0;
    if (labels) labels[p] = label_of(s != t, t == pad_id, convention);
  }
}

// positions, targets: (N)
__global__ void __launch_bounds__(kCorruptBlock)
    gather_tokens_kernel(const int32_t* __restrict__ tokens, int64_t total, const int32_t* __restrict__ positions,
                         int64_t N, int32_t* __restrict__ targets) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < N; k += stride) {
    const int64_t p = positions[k];
    targets[k] = p >= 0 && p < total ? tokens[p] : -1;
  }
}

void check_sizes(int64_t total, int64_t N, const char* op) {
  if (total < 0 || N < 0)
    throw std::invalid_argument(std::string(op) + ": negative size (total " + std::to_string(total) + ", N " +
                                std::to_string(N) + ")");
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

void corrupt_tokens(const int32_t* tokens, int64_t total, const int32_t* positions, const int32_t* samples, int64_t N,
                    int32_t pad_id, LabelConvention convention, int32_t* corrupted, uint8_t* replaced, float* labels,
                    cudaStream_t stream) {
  detail::check_sizes(total, N, "kernels::cuda::corrupt_tokens");
  if (total == 0) return;
  COCO_LAUNCH(detail::copy_original_kernel, dim3(detail::blocks_for(total)), dim3(detail::kCorruptBlock), 0, stream,
              tokens, total, pad_id, convention, corrupted, replaced, labels);
  if (N == 0) return;
  COCO_LAUNCH(detail::scatter_samples_kernel, dim3(detail::blocks_for(N)), dim3(detail::kCorruptBlock), 0, stream,
              tokens, total, positions, samples, N, pad_id, convention, corrupted, replaced, labels);
}

void gather_tokens(const int32_t* tokens, int64_t total, const int32_t* positions, int64_t N, int32_t* targets,
                   cudaStream_t stream) {
  detail::check_sizes(total, N, "kernels::cuda::gather_tokens");
  if (N == 0) return;
  COCO_LAUNCH(detail::gather_tokens_kernel, dim3(detail::blocks_for(N)), dim3(detail::kCorruptBlock), 0, stream, tokens,
              total, positions, N, targets);
}

}  // namespace coco::kernels::cuda
