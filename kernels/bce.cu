// CUDA binary cross-entropy with logits (semantics in kernels/bce.h).
//
// Forward: bce_partials_kernel runs a fixed number of blocks (a function of n only), each writing
// its (loss sum, correct, valid) partial; bce_finish_kernel (1 block) adds the partials in a fixed
// tree order. The result is therefore bitwise reproducible for a given n.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/device_convert.cuh"
#include "kernels/bce.h"

namespace coco::kernels::detail {
namespace {

constexpr int kBceThreads = 256;
constexpr int64_t kBceMaxBlocks = 1024;  // partial slots; also the finishing block's loop bound
constexpr int kElementwiseThreads = 256;
constexpr int64_t kMaxElementwiseBlocks = 4096;

__device__ __forceinline__ bool target_is_one(uint8_t replaced, int labels) {
  return labels == static_cast<int>(BceLabels::replaced_is_one) ? replaced != 0 : replaced == 0;
}

__device__ __forceinline__ float softplus_loss(float x, bool target_one) {
  const float z = target_one ? -x : x;
  return (z > 0.0f ? z : 0.0f) + log1pf(expf(-fabsf(x)));
}

__device__ __forceinline__ float stable_sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}

// Workspace layout: float loss[kBceMaxBlocks], int32 correct[kBceMaxBlocks], int32 valid[kBceMaxBlocks].
struct BcePartials {
  float* loss;
  int32_t* correct;
  int32_t* valid;
};

__host__ __device__ inline BcePartials partials_of(void* workspace) {
  char* base = static_cast<char*>(workspace);
  return BcePartials{reinterpret_cast<float*>(base), reinterpret_cast<int32_t*>(base + kBceMaxBlocks * sizeof(float)),
                     reinterpret_cast<int32_t*>(base + kBceMaxBlocks * (sizeof(float) + sizeof(int32_t)))};
}

// Sums (loss, correct, valid) over the block in a fixed tree; the result lands in slot 0.
__device__ void block_sum_triplet(float* loss, int32_t* correct, int32_t* valid) {
  for (int half = kBceThreads / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) {
      loss[threadIdx.x] += loss[threadIdx.x + half];
      correct[threadIdx.x] += correct[threadIdx.x + half];
      valid[threadIdx.x] += valid[threadIdx.x + half];
    }
    __syncthreads();
  }
}

// logits: (n), replaced: (n), valid: (n) or null -> partials[blockIdx.x]
template <class T>
__global__ void __launch_bounds__(kBceThreads)
    bce_partials_kernel(const T* __restrict__ logits, const uint8_t* __restrict__ replaced,
                        const uint8_t* __restrict__ valid, int64_t n, int labels, void* workspace) {
  __shared__ float loss_sum[kBceThreads];
  __shared__ int32_t correct_sum[kBceThreads];
  __shared__ int32_t valid_sum[kBceThreads];
  float loss = 0.0f;
  int32_t correct = 0, count = 0;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (valid && !valid[i]) continue;
    const float x = to_f32(logits[i]);
    const bool one = target_is_one(replaced[i], labels);
    loss += softplus_loss(x, one);
    ++count;
    if ((x > 0.0f) == one) ++correct;
  }
  loss_sum[threadIdx.x] = loss;
  correct_sum[threadIdx.x] = correct;
  valid_sum[threadIdx.x] = count;
  __syncthreads();
  block_sum_triplet(loss_sum, correct_sum, valid_sum);
  if (threadIdx.x == 0) {
    const BcePartials partials = partials_of(workspace);
    partials.loss[blockIdx.x] = loss_sum[0];
    partials.correct[blockIdx.x] = correct_sum[0];
    partials.valid[blockIdx.x] = valid_sum[0];
  }
}

// partials[0, blocks) -> loss (1), counts (kBceCounts). One block of kBceThreads.
__global__ void __launch_bounds__(kBceThreads)
    bce_finish_kernel(const void* workspace, int blocks, float* __restrict__ loss, int32_t* __restrict__ counts) {
  __shared__ float loss_sum[kBceThreads];
  __shared__ int32_t correct_sum[kBceThreads];
  __shared__ int32_t valid_sum[kBceThreads];
  const BcePartials partials = partials_of(const_cast<void*>(workspace));
  float l = 0.0f;
  int32_t c = 0, v = 0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) {
    l += partials.loss[b];
    c += partials.correct[b];
    v += partials.valid[b];
  }
  loss_sum[threadIdx.x] = l;
  correct_sum[threadIdx.x] = c;
  valid_sum[threadIdx.x] = v;
  __syncthreads();
  block_sum_triplet(loss_sum, correct_sum, valid_sum);
  if (threadIdx.x == 0) {
    *loss = valid_sum[0] > 0 ? loss_sum[0] / static_cast<float>(valid_sum[0]) : 0.0f;
    counts[kBceCountCorrect] = correct_sum[0];
    counts[kBceCountValid] = valid_sum[0];
  }
}

template <class T>
__global__ void __launch_bounds__(kElementwiseThreads)
    bce_backward_kernel(const T* __restrict__ logits, const uint8_t* __restrict__ replaced,
                        const uint8_t* __restrict__ valid, const int32_t* __restrict__ counts, int64_t n, int labels,
                        const float* __restrict__ dloss, T* __restrict__ dlogits) {
  const int32_t count = counts[kBceCountValid];
  const float scale = count > 0 ? *dloss / static_cast<float>(count) : 0.0f;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    if (valid && !valid[i]) {
      dlogits[i] = from_f32<T>(0.0f);
      continue;
    }
    const float y = target_is_one(replaced[i], labels) ? 1.0f : 0.0f;
    dlogits[i] = from_f32<T>(scale * (stable_sigmoid(to_f32(logits[i])) - y));
  }
}

int64_t partial_blocks(int64_t n) { return std::clamp<int64_t>((n + kBceThreads - 1) / kBceThreads, 1, kBceMaxBlocks); }

void check_count(int64_t n, const char* op) {
  if (n < 0) throw std::invalid_argument(std::string(op) + ": negative position count " + std::to_string(n));
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

size_t bce_workspace_bytes(int64_t) {
  return static_cast<size_t>(detail::kBceMaxBlocks) * (sizeof(float) + 2 * sizeof(int32_t));
}

template <class T>
void bce_with_logits_forward(const T* logits, const uint8_t* replaced, const uint8_t* valid, int64_t n,
                             BceLabels labels, float* loss, int32_t* counts, void* workspace, cudaStream_t stream) {
  detail::check_count(n, "kernels::cuda::bce_with_logits_forward");
  const int64_t blocks = detail::partial_blocks(n);
  COCO_LAUNCH(detail::bce_partials_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(detail::kBceThreads), 0, stream,
              logits, replaced, valid, n, static_cast<int>(labels), workspace);
  COCO_LAUNCH(detail::bce_finish_kernel, dim3(1), dim3(detail::kBceThreads), 0, stream, workspace,
              static_cast<int>(blocks), loss, counts);
}

template <class T>
void bce_with_logits_backward(const T* logits, const uint8_t* replaced, const uint8_t* valid, const int32_t* counts,
                              int64_t n, BceLabels labels, const float* dloss, T* dlogits, cudaStream_t stream) {
  detail::check_count(n, "kernels::cuda::bce_with_logits_backward");
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(
      detail::kMaxElementwiseBlocks, (n + detail::kElementwiseThreads - 1) / detail::kElementwiseThreads));
  COCO_LAUNCH(detail::bce_backward_kernel<T>, dim3(blocks), dim3(detail::kElementwiseThreads), 0, stream, logits,
              replaced, valid, counts, n, static_cast<int>(labels), dloss, dlogits);
}

#define COCO_INSTANTIATE_BCE(T)                                                                                  \
  template void bce_with_logits_forward<T>(const T*, const uint8_t*, const uint8_t*, int64_t, BceLabels, float*, \
                                           int32_t*, void*, cudaStream_t);                                       \
  template void bce_with_logits_backward<T>(const T*, const uint8_t*, const uint8_t*, const int32_t*, int64_t,   \
                                            BceLabels, const float*, T*, cudaStream_t);
COCO_INSTANTIATE_BCE(float)
COCO_INSTANTIATE_BCE(__nv_bfloat16)
COCO_INSTANTIATE_BCE(__half)
#undef COCO_INSTANTIATE_BCE

}  // namespace coco::kernels::cuda
