// CUDA row L2 normalisation (semantics in kernels/l2norm.h). One warp per row: the lanes stride
// over the row, a fixed xor-butterfly sums the partials, so the result is schedule independent.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/device_convert.cuh"
#include "kernels/l2norm.h"

namespace coco::kernels::detail {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kThreads = kWarpsPerBlock * 32;
constexpr int64_t kMaxBlocks = 16384;  // more rows loop inside the kernel

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// x: (rows, dim) -> y: (rows, dim), norms: (rows)
template <class T>
__global__ void __launch_bounds__(kThreads)
    l2_normalize_forward_kernel(const T* __restrict__ x, int64_t rows, int dim, float eps, T* __restrict__ y,
                                float* __restrict__ norms) {
  const int lane = threadIdx.x % 32;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; row < rows;
       row += warp_stride) {
    const T* xr = x + row * dim;
    float squares = 0.0f;
    for (int d = lane; d < dim; d += 32) {
      const float v = to_f32(xr[d]);
      squares += v * v;
    }
    const float norm = sqrtf(warp_sum(squares));
    if (lane == 0) norms[row] = norm;
    const float inv = 1.0f / (norm < eps ? eps : norm);
    for (int d = lane; d < dim; d += 32) y[row * dim + d] = from_f32<T>(to_f32(xr[d]) * inv);
  }
}

// x, dy: (rows, dim), norms: (rows) -> dx: (rows, dim)
template <class T>
__global__ void __launch_bounds__(kThreads)
    l2_normalize_backward_kernel(const T* __restrict__ x, const float* __restrict__ norms, const T* __restrict__ dy,
                                 int64_t rows, int dim, float eps, T* __restrict__ dx) {
  const int lane = threadIdx.x % 32;
  const int64_t warp_stride = static_cast<int64_t>(gridDim.x) * kWarpsPerBlock;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; row < rows;
       row += warp_stride) {
    const T* xr = x + row * dim;
    const T* dyr = dy + row * dim;
    T* dxr = dx + row * dim;
    const float norm = norms[row];
    if (norm < eps) {  // uniform across the warp
      const float inv_eps = 1.0f / eps;
      for (int d = lane; d < dim; d += 32) dxr[d] = from_f32<T>(to_f32(dyr[d]) * inv_eps);
      continue;
    }
    float dot = 0.0f;
    for (int d = lane; d < dim; d += 32) dot += to_f32(xr[d]) * to_f32(dyr[d]);
    dot = warp_sum(dot);
    const float inv = 1.0f / norm;
    const float projection = dot * inv * inv * inv;
    for (int d = lane; d < dim; d += 32) dxr[d] = from_f32<T>(to_f32(dyr[d]) * inv - to_f32(xr[d]) * projection);
  }
}

void check_sizes(int64_t rows, int64_t dim, float eps, const char* op) {
  if (rows < 0 || dim < 1 || dim > (1 << 30) || !(eps > 0.0f))
    throw std::invalid_argument(std::string(op) + ": expected rows >= 0, 1 <= dim <= 2^30, eps > 0; got rows " +
                                std::to_string(rows) + ", dim " + std::to_string(dim) + ", eps " + std::to_string(eps));
}

unsigned blocks_for(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(kMaxBlocks, (rows + kWarpsPerBlock - 1) / kWarpsPerBlock));
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T>
void l2_normalize_forward(const T* x, int64_t rows, int64_t dim, float eps, T* y, float* norms, cudaStream_t stream) {
  detail::check_sizes(rows, dim, eps, "kernels::cuda::l2_normalize_forward");
  if (rows == 0) return;
  COCO_LAUNCH(detail::l2_normalize_forward_kernel<T>, dim3(detail::blocks_for(rows)), dim3(detail::kThreads), 0, stream,
              x, rows, static_cast<int>(dim), eps, y, norms);
}

template <class T>
void l2_normalize_backward(const T* x, const float* norms, const T* dy, int64_t rows, int64_t dim, float eps, T* dx,
                           cudaStream_t stream) {
  detail::check_sizes(rows, dim, eps, "kernels::cuda::l2_normalize_backward");
  if (rows == 0) return;
  COCO_LAUNCH(detail::l2_normalize_backward_kernel<T>, dim3(detail::blocks_for(rows)), dim3(detail::kThreads), 0,
              stream, x, norms, dy, rows, static_cast<int>(dim), eps, dx);
}

#define COCO_INSTANTIATE_L2NORM(T)                                                                    \
  template void l2_normalize_forward<T>(const T*, int64_t, int64_t, float, T*, float*, cudaStream_t); \
  template void l2_normalize_backward<T>(const T*, const float*, const T*, int64_t, int64_t, float, T*, cudaStream_t);
COCO_INSTANTIATE_L2NORM(float)
COCO_INSTANTIATE_L2NORM(__nv_bfloat16)
COCO_INSTANTIATE_L2NORM(__half)
#undef COCO_INSTANTIATE_L2NORM

}  // namespace coco::kernels::cuda
