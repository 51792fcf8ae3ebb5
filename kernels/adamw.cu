// CUDA fused multi-tensor AdamW: one block per chunk of kAdamWChunk elements of one tensor; each
// block finds its tensor by binary search over the descriptors' first_chunk. Elementwise, so every
// schedule gives the same bits.
#include <cstdint>
#include <cstring>
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

// One element: p, m, v updated in place from the (unscaled) gradient g.
__device__ inline void adamw_update(float& p, float& m, float& v, float g, bool decay, const AdamWScalarsF32& s) {
  g = g * s.grad_scale;
  if (decay) p = p * s.decay_factor;
  m = adamw_lerp(m, g, s.lerp_weight);
  v = v * s.beta2 + (s.one_minus_beta2 * g) * g;
  const float denom = sqrtf(v) / s.bc2_sqrt + s.eps;
  p = p + (-s.step_size) * (m / denom);
}

template <class G>
__device__ inline void adamw_scalar(const AdamWTensorDesc& d, int64_t begin, int64_t end, bool decay,
                                    const AdamWScalarsF32& s) {
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    float p = d.param[i], m = d.exp_avg[i], v = d.exp_avg_sq[i];
    adamw_update(p, m, v, load_grad<G>(d.grad, i), decay, s);
    d.param[i] = p;
    d.exp_avg[i] = m;
    d.exp_avg_sq[i] = v;
    if (d.param_bf16) d.param_bf16[i] = __float2bfloat16(p);
  }
}

__host__ __device__ inline bool aligned_to(const void* pointer, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(pointer) % bytes == 0;
}

// Four gradient elements from one 128-bit (f32) or 64-bit (16-bit) load.
template <class G>
__device__ inline float4 load_grad4(const void* grad, int64_t i) {
  if constexpr (std::is_same_v<G, float>) {
    return *reinterpret_cast<const float4*>(static_cast<const float*>(grad) + i);
  } else {
    const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const G*>(grad) + i);
    G h[4];
    memcpy(static_cast<void*>(h), &raw, sizeof raw);  // the bits of four 16-bit values
    float f[4];
    for (int k = 0; k < 4; ++k) f[k] = load_grad<G>(h, k);
    return make_float4(f[0], f[1], f[2], f[3]);
  }
}

// The chunk [begin, end): 128-bit loads and stores of four elements per thread when every array is
// aligned for them (the masters and moments to 16 bytes, a 16-bit gradient and the bf16 copy to 8),
// the scalar loop otherwise and for the last (end - begin) % 4 elements. The arithmetic per element
// is the same either way, so the bits are too.
template <class G>
__device__ inline void adamw_chunk(const AdamWTensorDesc& d, int64_t begin, int64_t end, const AdamWScalarsF32& s) {
  const bool decay = d.apply_weight_decay != 0;
  const bool vector = aligned_to(d.param + begin, 16) && aligned_to(d.exp_avg + begin, 16) &&
                      aligned_to(d.exp_avg_sq + begin, 16) &&
                      aligned_to(static_cast<const G*>(d.grad) + begin, 4 * sizeof(G)) &&
                      (!d.param_bf16 || aligned_to(d.param_bf16 + begin, 8));
  if (!vector) {
    adamw_scalar<G>(d, begin, end, decay, s);
    return;
  }
  const int64_t quads = (end - begin) / 4;
  for (int64_t q = threadIdx.x; q < quads; q += blockDim.x) {
    const int64_t i = begin + 4 * q;
    float4 p = *reinterpret_cast<const float4*>(d.param + i);
    float4 m = *reinterpret_cast<const float4*>(d.exp_avg + i);
    float4 v = *reinterpret_cast<const float4*>(d.exp_avg_sq + i);
    const float4 g = load_grad4<G>(d.grad, i);
    adamw_update(p.x, m.x, v.x, g.x, decay, s);
    adamw_update(p.y, m.y, v.y, g.y, decay, s);
    adamw_update(p.z, m.z, v.z, g.z, decay, s);
    adamw_update(p.w, m.w, v.w, g.w, decay, s);
    *reinterpret_cast<float4*>(d.param + i) = p;
    *reinterpret_cast<float4*>(d.exp_avg + i) = m;
    *reinterpret_cast<float4*>(d.exp_avg_sq + i) = v;
    if (d.param_bf16) {
      const __nv_bfloat16 h[4] = {__float2bfloat16(p.x), __float2bfloat16(p.y), __float2bfloat16(p.z),
                                  __float2bfloat16(p.w)};
      uint2 raw;
      memcpy(&raw, h, sizeof raw);
      *reinterpret_cast<uint2*>(d.param_bf16 + i) = raw;
    }
  }
  adamw_scalar<G>(d, begin + 4 * quads, end, decay, s);
}

// The chunk blockIdx.x of the update with scalars s.
__device__ inline void adamw_block(const AdamWTensorDesc* __restrict__ descs, int num_tensors,
                                   const AdamWScalarsF32& s) {
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

// descs: (num_tensors); grid: (total_chunks)
__global__ void __launch_bounds__(kAdamWBlock)
    adamw_multi_tensor_kernel(const AdamWTensorDesc* __restrict__ descs, int num_tensors, AdamWScalarsF32 s) {
  adamw_block(descs, num_tensors, s);
}

// descs: (num_tensors); state: (1) written by decide_step; grid: (total_chunks)
__global__ void __launch_bounds__(kAdamWBlock)
    adamw_multi_tensor_controlled_kernel(const AdamWTensorDesc* __restrict__ descs, int num_tensors, AdamWConstants c,
                                         const StepState* __restrict__ state) {
  if (state->apply == 0) return;  // a skipped step: every block leaves its chunk alone
  const AdamWScalarsF32 s{static_cast<float>(state->decay_factor),
                          static_cast<float>(c.lerp_weight),
                          static_cast<float>(c.beta2),
                          static_cast<float>(c.one_minus_beta2),
                          static_cast<float>(state->step_size),
                          static_cast<float>(state->bias_correction2_sqrt),
                          static_cast<float>(c.eps),
                          static_cast<float>(state->grad_scale)};
  adamw_block(descs, num_tensors, s);
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

void adamw_multi_tensor_controlled(const AdamWTensorDesc* device_descs, int num_tensors, int64_t total_chunks,
                                   const AdamWConstants& constants, const StepState* state, cudaStream_t stream) {
  if (num_tensors < 0 || total_chunks < 0)
    throw std::invalid_argument("kernels::cuda::adamw_multi_tensor_controlled: negative count (num_tensors " +
                                std::to_string(num_tensors) + ", total_chunks " + std::to_string(total_chunks) + ")");
  if (total_chunks == 0) return;
  if (num_tensors == 0 || !device_descs || !state)
    throw std::invalid_argument("kernels::cuda::adamw_multi_tensor_controlled: " + std::to_string(total_chunks) +
                                " chunks but no descriptors or no step state");
  if (total_chunks > 0x7fffffffLL)
    throw std::invalid_argument("kernels::cuda::adamw_multi_tensor_controlled: " + std::to_string(total_chunks) +
                                " chunks exceed the grid limit 2^31-1");
  COCO_LAUNCH(detail::adamw_multi_tensor_controlled_kernel, dim3(static_cast<unsigned>(total_chunks)),
              dim3(detail::kAdamWBlock), 0, stream, device_descs, num_tensors, constants, state);
}

}  // namespace coco::kernels::cuda
