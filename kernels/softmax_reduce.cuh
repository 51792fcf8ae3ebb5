// Device-side reductions for row softmax kernels (softmax.cu, attention.cu). Fixed butterfly / fixed
// order trees only, so results do not depend on thread scheduling. Include from .cu files only.
#pragma once
#include <type_traits>

#include "engine/runtime/launch.cuh"
#include "kernels/cast_convert.h"
#include "kernels/softmax_math.h"

namespace coco::kernels::detail {

inline constexpr unsigned kFullWarpMask = 0xffffffffu;
inline constexpr int kWarpSize = 32;

// Arithmetic type of an element type: double for double, float for float / bf16 / f16.
template <class T>
using AccumulatorOf = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class Acc, class T>
__device__ __forceinline__ Acc load_as(const T* p) {
  return convert_element<Acc>(*p);
}

template <class T>
__device__ __forceinline__ float load_as_float(const T* p) {
  return convert_element<float>(*p);
}

template <class T, class Acc>
__device__ __forceinline__ void store_from(T* p, Acc v) {
  *p = convert_element<T>(v);
}

// Sum over the 32 lanes; every lane receives the same (bitwise) value.
template <class Acc>
__device__ __forceinline__ Acc warp_sum(Acc v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullWarpMask, v, offset);
  return v;
}

template <class Acc>
__device__ __forceinline__ SoftmaxStats<Acc> warp_merge_stats(SoftmaxStats<Acc> st) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    const SoftmaxStats<Acc> other{__shfl_xor_sync(kFullWarpMask, st.max, offset),
                                  __shfl_xor_sync(kFullWarpMask, st.sum, offset)};
    st = softmax_stats_merge(st, other);
  }
  return st;
}

// Block-wide reductions. Every thread of the block must call them (blockDim.x a multiple of 32);
// `scratch` is shared memory of at least 2 * 32 Acc. All threads get the same value.
template <class Acc>
__device__ __forceinline__ Acc block_sum(Acc v, Acc* scratch) {
  v = warp_sum(v);
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int warps = static_cast<int>(blockDim.x) / kWarpSize;
  if (threadIdx.x % kWarpSize == 0) scratch[warp] = v;
  __syncthreads();
  Acc total = Acc(0);
  for (int w = 0; w < warps; ++w) total += scratch[w];
  __syncthreads();  // scratch may be reused right after
  return total;
}

template <class Acc>
__device__ __forceinline__ SoftmaxStats<Acc> block_merge_stats(SoftmaxStats<Acc> st, Acc* scratch) {
  st = warp_merge_stats(st);
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int warps = static_cast<int>(blockDim.x) / kWarpSize;
  if (threadIdx.x % kWarpSize == 0) {
    scratch[warp] = st.max;
    scratch[kWarpSize + warp] = st.sum;
  }
  __syncthreads();
  SoftmaxStats<Acc> total = softmax_stats_empty<Acc>();
  for (int w = 0; w < warps; ++w)
    total = softmax_stats_merge(total, SoftmaxStats<Acc>{scratch[w], scratch[kWarpSize + w]});
  __syncthreads();
  return total;
}

}  // namespace coco::kernels::detail
