// CUDA GELU: elementwise grid-stride kernels with 128-bit accesses where the pointers allow
// (kernels/vector_access.cuh), f32 math for every storage type.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/cast_convert.h"
#include "kernels/gelu.h"
#include "kernels/gelu_math.h"
#include "kernels/vector_access.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kGeluBlock = 256;
constexpr int64_t kMaxGeluBlocks = 8192;

template <class T>
unsigned gelu_blocks(int64_t n) {
  return pack_grid<T>(n, kGeluBlock, kMaxGeluBlocks);
}

// x, out: (n)
template <class T>
__global__ void gelu_forward_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t n,
                                    GeluApproximation approximation) {
  map_elements(
      n,
      [approximation](int64_t, T value) {
        return convert_from_f32<T>(gelu_value<float>(convert_element<float>(value), approximation));
      },
      out, x);
}

// dx, dout, x: (n)
template <class T>
__global__ void gelu_backward_kernel(T* __restrict__ dx, const T* __restrict__ dout, const T* __restrict__ x, int64_t n,
                                     GeluApproximation approximation) {
  map_elements(
      n,
      [approximation](int64_t, T g, T value) {
        return convert_from_f32<T>(convert_element<float>(g) *
                                   gelu_derivative<float>(convert_element<float>(value), approximation));
      },
      dx, dout, x);
}

void check_gelu_args(const char* op, int64_t n, GeluApproximation approximation) {
  if (n < 0) throw std::invalid_argument(std::string(op) + ": negative element count " + std::to_string(n));
  if (approximation != GeluApproximation::erf && approximation != GeluApproximation::tanh)
    throw std::invalid_argument(std::string(op) + ": unknown GELU approximation code " +
                                std::to_string(static_cast<int>(approximation)));
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T>
void gelu_forward(T* out, const T* x, int64_t n, GeluApproximation approximation, cudaStream_t stream) {
  detail::check_gelu_args("kernels::cuda::gelu_forward", n, approximation);
  if (n == 0) return;
  COCO_LAUNCH(detail::gelu_forward_kernel<T>, dim3(detail::gelu_blocks<T>(n)), dim3(detail::kGeluBlock), 0, stream, out,
              x, n, approximation);
}

template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, int64_t n, GeluApproximation approximation, cudaStream_t stream) {
  detail::check_gelu_args("kernels::cuda::gelu_backward", n, approximation);
  if (n == 0) return;
  COCO_LAUNCH(detail::gelu_backward_kernel<T>, dim3(detail::gelu_blocks<T>(n)), dim3(detail::kGeluBlock), 0, stream, dx,
              dout, x, n, approximation);
}

#define COCO_INSTANTIATE_GELU_CUDA(T)                                                    \
  template void gelu_forward<T>(T*, const T*, int64_t, GeluApproximation, cudaStream_t); \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t, GeluApproximation, cudaStream_t);
COCO_INSTANTIATE_GELU_CUDA(float)
COCO_INSTANTIATE_GELU_CUDA(__nv_bfloat16)
COCO_INSTANTIATE_GELU_CUDA(__half)
#undef COCO_INSTANTIATE_GELU_CUDA

}  // namespace coco::kernels::cuda
