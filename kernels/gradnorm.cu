// CUDA global sum of squares over many tensors: per-chunk f32 partials, then one block sums them in
// f64. Both stages use fixed per-thread strides and a fixed shared-memory tree, so the bits do not
// depend on how blocks or threads are scheduled.
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine/runtime/launch.cuh"
#include "kernels/multi_tensor_chunks.cuh"
#include "kernels/gradnorm.h"

namespace coco::kernels::detail {
namespace {

constexpr int kNormBlock = 256;  // power of two (tree reduction)

template <class G>
__device__ inline float load_element(const void* data, int64_t i) {
  if constexpr (std::is_same_v<G, __nv_bfloat16>)
    return __bfloat162float(static_cast<const __nv_bfloat16*>(data)[i]);
  else if constexpr (std::is_same_v<G, __half>)
    return __half2float(static_cast<const __half*>(data)[i]);
  else
    return static_cast<const float*>(data)[i];
}

template <class G>
__device__ inline float strided_sum_sq(const void* data, int64_t begin, int64_t end) {
  float acc = 0.0f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float x = load_element<G>(data, i);
    acc += x * x;
  }
  return acc;
}

// Fixed pairwise tree over kNormBlock shared values; the sum ends in values[0].
template <class T>
__device__ inline void block_tree_sum(T* values) {
  for (int width = kNormBlock / 2; width > 0; width /= 2) {
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < width) values[threadIdx.x] += values[threadIdx.x + width];
  }
  __syncthreads();
}

// descs: (num_tensors); partials: (gridDim.x)
__global__ void __launch_bounds__(kNormBlock)
    chunk_sum_sq_kernel(const NormTensorDesc* __restrict__ descs, int num_tensors, float* __restrict__ partials) {
  __shared__ float values[kNormBlock];
  const int64_t chunk = blockIdx.x;
  const TensorChunk<NormTensorDesc> located = locate_chunk(descs, num_tensors, chunk, kGradNormChunk);
  const NormTensorDesc& d = located.desc;
  const int64_t begin = located.begin, end = located.end;
  float acc;
  switch (d.dtype) {
    case DType::bf16:
      acc = strided_sum_sq<__nv_bfloat16>(d.data, begin, end);
      break;
    case DType::f16:
      acc = strided_sum_sq<__half>(d.data, begin, end);
      break;
    default:
      acc = strided_sum_sq<float>(d.data, begin, end);
      break;
  }
  values[threadIdx.x] = acc;
  block_tree_sum(values);
  if (threadIdx.x == 0) partials[chunk] = values[0];
}

// partials: (count); sum_sq: (1). One block.
__global__ void __launch_bounds__(kNormBlock)
    final_sum_kernel(const float* __restrict__ partials, int64_t count, double* __restrict__ sum_sq) {
  __shared__ double values[kNormBlock];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += static_cast<double>(partials[i]);
  values[threadIdx.x] = acc;
  block_tree_sum(values);
  if (threadIdx.x == 0) *sum_sq = values[0];
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

void sum_of_squares(const NormTensorDesc* device_descs, int num_tensors, int64_t total_chunks, float* partials,
                    double* sum_sq, cudaStream_t stream) {
  if (num_tensors < 0 || total_chunks < 0)
    throw std::invalid_argument("kernels::cuda::sum_of_squares: negative count (num_tensors " +
                                std::to_string(num_tensors) + ", total_chunks " + std::to_string(total_chunks) + ")");
  if (!sum_sq) throw std::invalid_argument("kernels::cuda::sum_of_squares: null result pointer");
  if (total_chunks > 0) {
    if (num_tensors == 0 || !device_descs || !partials)
      throw std::invalid_argument("kernels::cuda::sum_of_squares: " + std::to_string(total_chunks) +
                                  " chunks but no descriptors or no partials buffer");
    if (total_chunks > 0x7fffffffLL)
      throw std::invalid_argument("kernels::cuda::sum_of_squares: " + std::to_string(total_chunks) +
                                  " chunks exceed the grid limit 2^31-1");
    COCO_LAUNCH(detail::chunk_sum_sq_kernel, dim3(static_cast<unsigned>(total_chunks)), dim3(detail::kNormBlock), 0,
                stream, device_descs, num_tensors, partials);
  }
  COCO_LAUNCH(detail::final_sum_kernel, dim3(1), dim3(detail::kNormBlock), 0, stream, partials, total_chunks, sum_sq);
}

}  // namespace coco::kernels::cuda
