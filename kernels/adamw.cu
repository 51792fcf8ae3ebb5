// CUDA fused multi-tensor AdamW: one block per chunk of kAdamWChunk elements of one tensor; each
// block finds its tensor by binary search over the descriptors' first_chunk. Elementwise, so every
// schedule gives the same bits.
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine/runtime/launch.cuh"
#include "kernels/multi_tensor_chunks.cuh"
#include "kernels/adamw.h"

namespace coco::kernels::detail {
namespace {

constexpr int kAdamWBlock = 256;

struct AdamWScalarsF32 {
  float decay_factor, lerp_weight, beta2, one_minus_beta2, step_size, bc2_sqrt, eps, grad_scale;
};

template <class G>
__device__ inline float load_grad(const void* grad, int64_t i) {
  if constexpr (std::is_same_v<G, __nv_bfloat16>)
    return __bfloat162float(static_cast<const __nv_bfloat16*>(grad)[i]);
  else if constexpr (std::is_same_v<G, __half>)
    return __half2float(static_cast<const __half*>(grad)[i]);
  else
    return static_cast<const float*>(grad)[i];
}

template <class G>
__device__ inline void adamw_chunk(const AdamWTensorDesc& d, int64_t begin, int64_t end, const AdamWScalarsF32& s) {
  const bool decay = d.apply_weight_decay != 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float g = load_grad<G>(d.grad, i) * s.grad_scale;
    float p = d.param[i];
    if (decay) p = p * s.decay_factor;
    const float m = adamw_lerp(d.exp_avg[i], g, s.lerp_weight);
    const float v = d.exp_avg_sq[i] * s.beta2 + (s.one_minus_beta2 * g) * g;
    const float denom = sqrtf(v) / s.bc2_sqrt + s.eps;
    p = p + (-s.step_size) * (m / denom);
    d.param[i] = p;
    d.exp_avg[i] = m;
    d.exp_avg_sq[i] = v;
    if (d.param_bf16) d.param_bf16[i] = __float2bfloat16(p);
  }
}

// descs: (num_tensors); grid: (total_chunks)
__global__ void __launch_bounds__(kAdamWBlock)
    adamw_multi_tensor_kernel(const AdamWTensorDesc* __restrict__ descs, int num_tensors, AdamWScalarsF32 s) {
  const int64_t chunk = blockIdx.x;
  const TensorChunk<AdamWTensorDesc> located = locate_chunk(descs, num_tensors, chunk, kAdamWChunk);
  const AdamWTensorDesc& d = located.desc;
  const int64_t begin = located.begin, end = located.end;
  switch (d.grad_dtype) {
    case DType::bf16:
      adamw_chunk<__nv_bfloat16>(d, begin, end, s);
      break;
    case DType::f16:
      adamw_chunk<__half>(d, begin, end, s);
      break;
    default:
      adamw_chunk<float>(d, begin, end, s);
      break;
  }
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

void adamw_multi_tensor(const AdamWTensorDesc* device_descs, int num_tensors, int64_t total_chunks,
                        const AdamWScalars& scalars, cudaStream_t stream) {
  if (num_tensors < 0 || total_chunks < 0)
    throw std::invalid_argument("kernels::cuda::adamw_multi_tensor: negative count (num_tensors " +
                                std::to_string(num_tensors) + ", total_chunks " + std::to_string(total_chunks) + ")");
  if (total_chunks == 0) return;
  if (num_tensors == 0 || !device_descs)
    throw std::invalid_argument("kernels::cuda::adamw_multi_tensor: " + std::to_string(total_chunks) +
                                " chunks but no descriptors");
  if (total_chunks > 0x7fffffffLL)
    throw std::invalid_argument("kernels::cuda::adamw_multi_tensor: " + std::to_string(total_chunks) +
                                " chunks exceed the grid limit 2^31-1");
  const detail::AdamWScalarsF32 s{
      static_cast<float>(scalars.decay_factor), static_cast<float>(scalars.lerp_weight),
      static_cast<float>(scalars.beta2),        static_cast<float>(scalars.one_minus_beta2),
      static_cast<float>(scalars.step_size),    static_cast<float>(scalars.bias_correction2_sqrt),
      static_cast<float>(scalars.eps),          static_cast<float>(scalars.grad_scale)};
  COCO_LAUNCH(detail::adamw_multi_tensor_kernel, dim3(static_cast<unsigned>(total_chunks)), dim3(detail::kAdamWBlock),
              0, stream, device_descs, num_tensors, s);
}

}  // namespace coco::kernels::cuda
