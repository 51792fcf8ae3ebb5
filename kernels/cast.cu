// CUDA casts, fill and copy. Memory-bound elementwise kernels with a grid-stride loop and 128-bit
// accesses where the pointers allow (kernels/vector_access.cuh); the
// conversions are the ones in kernels/cast_convert.h, shared with the CPU path.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "engine/runtime/cuda_calls.h"
#include "engine/runtime/launch.cuh"
#include "kernels/cast.h"
#include "kernels/cast_convert.h"
#include "kernels/vector_access.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kElementwiseBlock = 256;
// Enough blocks to fill any current GPU several times over; larger inputs loop inside the kernel.
constexpr int64_t kMaxElementwiseBlocks = 8192;

template <class... Ts>
unsigned elementwise_blocks(int64_t n) {
  const int64_t threads = (n + kPackElements<Ts...> - 1) / kPackElements<Ts...>;
  return static_cast<unsigned>(
      std::min<int64_t>(kMaxElementwiseBlocks, (threads + kElementwiseBlock - 1) / kElementwiseBlock));
}

// src: (n), dst: (n)
template <class Src, class Dst>
__global__ void cast_kernel(const Src* __restrict__ src, Dst* __restrict__ dst, int64_t n) {
  map_elements(
      n, [](int64_t, Src x) { return convert_element<Dst>(x); }, dst, src);
}

// dst: (n)
template <class T>
__global__ void fill_kernel(T* __restrict__ dst, T value, int64_t n) {
  map_elements(
      n, [value](int64_t) { return value; }, dst);
}

void check_count(int64_t n, const char* op) {
  if (n < 0) throw std::invalid_argument(std::string(op) + ": negative element count " + std::to_string(n));
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream) {
  detail::check_count(n, "kernels::cuda::cast");
  if (n == 0) return;
  if (src_dtype == dst_dtype) {
    if (src != dst)
      COCO_CUDA_CHECK(runtime::memcpy_async(dst, src, static_cast<size_t>(n) * dtype_size(src_dtype),
                                            cudaMemcpyDeviceToDevice, stream));
    return;
  }
  detail::visit_dtype(src_dtype, "kernels::cuda::cast", [&](auto src_tag) {
    using Src = typename decltype(src_tag)::type;
    detail::visit_dtype(dst_dtype, "kernels::cuda::cast", [&](auto dst_tag) {
      using Dst = typename decltype(dst_tag)::type;
      COCO_LAUNCH((detail::cast_kernel<Src, Dst>), dim3(detail::elementwise_blocks<Src, Dst>(n)),
                  dim3(detail::kElementwiseBlock), 0, stream, static_cast<const Src*>(src), static_cast<Dst*>(dst), n);
    });
  });
}

void fill(void* dst, DType dtype, double value, int64_t n, cudaStream_t stream) {
  detail::check_count(n, "kernels::cuda::fill");
  if (n == 0) return;
  detail::visit_dtype(dtype, "kernels::cuda::fill", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T element = detail::convert_from_f64<T>(value);
    COCO_LAUNCH(detail::fill_kernel<T>, dim3(detail::elementwise_blocks<T>(n)), dim3(detail::kElementwiseBlock), 0,
                stream, static_cast<T*>(dst), element, n);
  });
}

void copy(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0 || dst == src) return;
  COCO_CUDA_CHECK(runtime::memcpy_async(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
}

}  // namespace coco::kernels::cuda
