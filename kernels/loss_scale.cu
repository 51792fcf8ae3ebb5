// CUDA non-finite gradient check: one block per chunk (the gradient-norm chunking); a block that
// sees a NaN/Inf sets the flag with an integer atomic, so the result is an order-free OR.
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine/runtime/launch.cuh"
#include "kernels/multi_tensor_chunks.cuh"
#include "kernels/loss_scale.h"

namespace coco::kernels::detail {
namespace {

constexpr int kFlagBlock = 256;

// Exponent bits all ones <=> NaN or Inf, for each storage format.
template <class G>
__device__ inline bool element_nonfinite(const void* data, int64_t i) {
  if constexpr (std::is_same_v<G, float>) {
    const float x = static_cast<const float*>(data)[i];
    return (__float_as_uint(x) & 0x7f800000u) == 0x7f800000u;
  } else {
    unsigned short bits;
    static_assert(sizeof(G) == sizeof(bits));
    memcpy(&bits, static_cast<const G*>(data) + i, sizeof(bits));
    const unsigned short exponent = std::is_same_v<G, __half> ? 0x7c00u : 0x7f80u;
    return (bits & exponent) == exponent;
  }
}

template <class G>
__device__ inline int strided_any_nonfinite(const void* data, int64_t begin, int64_t end) {
  int found = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) found |= element_nonfinite<G>(data, i) ? 1 : 0;
  return found;
}

// descs: (num_tensors); flag: (1); grid: (total_chunks)
__global__ void __launch_bounds__(kFlagBlock)
    mark_nonfinite_kernel(const NormTensorDesc* __restrict__ descs, int num_tensors, int32_t* __restrict__ flag) {
  const int64_t chunk = blockIdx.x;
  const TensorChunk<NormTensorDesc> located = locate_chunk(descs, num_tensors, chunk, kGradNormChunk);
  const NormTensorDesc& d = located.desc;
  const int64_t begin = located.begin, end = located.end;
  int found;
  switch (d.dtype) {
    case DType::bf16:
      found = strided_any_nonfinite<__nv_bfloat16>(d.data, begin, end);
      break;
    case DType::f16:
      found = strided_any_nonfinite<__half>(d.data, begin, end);
      break;
    default:
      found = strided_any_nonfinite<float>(d.data, begin, end);
      break;
  }
  if (__syncthreads_or(found) && threadIdx.x == 0) atomicOr(reinterpret_cast<int*>(flag), 1);
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

void mark_nonfinite(const NormTensorDesc* device_descs, int num_tensors, int64_t total_chunks, int32_t* flag,
                    cudaStream_t stream) {
  if (num_tensors < 0 || total_chunks < 0)
    throw std::invalid_argument("kernels::cuda::mark_nonfinite: negative count (num_tensors " +
                                std::to_string(num_tensors) + ", total_chunks " + std::to_string(total_chunks) + ")");
  if (total_chunks == 0) return;
  if (num_tensors == 0 || !device_descs || !flag)
    throw std::invalid_argument("kernels::cuda::mark_nonfinite: " + std::to_string(total_chunks) +
                                " chunks but no descriptors or no flag");
  if (total_chunks > 0x7fffffffLL)
    throw std::invalid_argument("kernels::cuda::mark_nonfinite: " + std::to_string(total_chunks) +
                                " chunks exceed the grid limit 2^31-1");
  COCO_LAUNCH(detail::mark_nonfinite_kernel, dim3(static_cast<unsigned>(total_chunks)), dim3(detail::kFlagBlock), 0,
              stream, device_descs, num_tensors, flag);
}

}  // namespace coco::kernels::cuda
