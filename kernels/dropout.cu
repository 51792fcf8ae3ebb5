// CUDA dropout: one Philox block per element (rng.uniform(i)), grid-stride, f32 scaling; the apply
// kernel reads and writes 128 bits at a time where the pointers allow (kernels/vector_access.cuh).
#include <algorithm>

#include "engine/runtime/launch.cuh"
#include "kernels/cast_convert.h"
#include "kernels/dropout.h"
#include "kernels/vector_access.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kDropoutBlock = 256;
constexpr int64_t kMaxDropoutBlocks = 8192;

unsigned dropout_blocks(int64_t n) {
  return static_cast<unsigned>(std::min<int64_t>(kMaxDropoutBlocks, (n + kDropoutBlock - 1) / kDropoutBlock));
}

// x, out: (n)
template <class T>
__global__ void dropout_apply_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t n, float threshold,
                                     float keep_scale, rng::Stream rng, uint64_t index_offset) {
  map_elements(
      n,
      [&](int64_t i, T value) {
        const bool dropped = rng.uniform(index_offset + static_cast<uint64_t>(i)) < threshold;
        return convert_from_f32<T>(convert_element<float>(value) * (dropped ? 0.0f : keep_scale));
      },
      out, x);
}

// mask: (n)
__global__ void dropout_mask_kernel(uint8_t* __restrict__ mask, int64_t n, float threshold, rng::Stream rng,
                                    uint64_t index_offset) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    mask[i] = rng.uniform(index_offset + static_cast<uint64_t>(i)) < threshold ? 0 : 1;
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T>
void dropout_apply(T* out, const T* x, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset,
                   cudaStream_t stream) {
  const float threshold = detail::dropout_threshold("kernels::cuda::dropout_apply", p, n);
  if (n == 0) return;
  // Rounded once on the host, so f32 results equal the CPU f32 path bit for bit.
  const float keep_scale = static_cast<float>(1.0 / (1.0 - p));
  COCO_LAUNCH(detail::dropout_apply_kernel<T>,
              dim3(detail::pack_grid<T>(n, detail::kDropoutBlock, detail::kMaxDropoutBlocks)),
              dim3(detail::kDropoutBlock), 0, stream, out, x, n, threshold, keep_scale, rng, index_offset);
}

void dropout_mask(uint8_t* mask, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset,
                  cudaStream_t stream) {
  const float threshold = detail::dropout_threshold("kernels::cuda::dropout_mask", p, n);
  if (n == 0) return;
  COCO_LAUNCH(detail::dropout_mask_kernel, dim3(detail::dropout_blocks(n)), dim3(detail::kDropoutBlock), 0, stream,
              mask, n, threshold, rng, index_offset);
}

template void dropout_apply<float>(float*, const float*, int64_t, double, const rng::Stream&, uint64_t, cudaStream_t);
template void dropout_apply<__nv_bfloat16>(__nv_bfloat16*, const __nv_bfloat16*, int64_t, double, const rng::Stream&,
                                           uint64_t, cudaStream_t);
template void dropout_apply<__half>(__half*, const __half*, int64_t, double, const rng::Stream&, uint64_t,
                                    cudaStream_t);

}  // namespace coco::kernels::cuda
