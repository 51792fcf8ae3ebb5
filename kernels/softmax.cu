// CUDA softmax / log-softmax over the last dimension. Rows up to kSoftmaxWarpRowMaxWidth wide are
// handled by one warp each (4 rows per 128-thread block); wider rows by one 512-thread block each.
// Each thread walks its row with a stride of the group size (coalesced), folds the elements into
// (max, sum) statistics in float (double for double rows), and the group merges them with a fixed tree; a second pass
// over the row (hot in L1/L2) writes the outputs.
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/softmax.h"
#include "kernels/softmax_reduce.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kWarpRowsPerBlock = 4;
constexpr int kWideRowThreads = 512;
template <class T>
constexpr size_t wide_row_scratch_bytes() {
  return 2 * kWarpSize * sizeof(AccumulatorOf<T>);
}

// Writes one row of outputs from its statistics; the group's threads split the row by stride.
template <class T, bool Log>
__device__ __forceinline__ void write_softmax_row(const T* xr, T* yr, int64_t width, int first, int stride,
                                                  const SoftmaxStats<AccumulatorOf<T>>& st) {
  using Acc = AccumulatorOf<T>;
  if constexpr (Log) {
    const Acc log_sum = softmax_log(st.sum);
    for (int64_t j = first; j < width; j += stride)
      store_from(yr + j, log_softmax_value(load_as<Acc>(xr + j), st, log_sum));
  } else {
    const Acc inv_sum = Acc(1) / st.sum;
    for (int64_t j = first; j < width; j += stride)
      store_from(yr + j, softmax_value(load_as<Acc>(xr + j), st, inv_sum));
  }
}

// x, y: (rows, width); one warp per row.
template <class T, bool Log>
__global__ void __launch_bounds__(kWarpRowsPerBlock* kWarpSize)
    softmax_forward_warp_kernel(const T* x, T* y, int64_t rows, int64_t width) {
  using Acc = AccumulatorOf<T>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;  // whole warps leave together
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const T* xr = x + row * width;
  T* yr = y + row * width;
  SoftmaxStats<Acc> st = softmax_stats_empty<Acc>();
  for (int64_t j = lane; j < width; j += kWarpSize) softmax_stats_add(st, load_as<Acc>(xr + j));
  st = warp_merge_stats(st);
  write_softmax_row<T, Log>(xr, yr, width, lane, kWarpSize, st);
}

// x, y: (rows, width); one block per row.
template <class T, bool Log>
__global__ void __launch_bounds__(kWideRowThreads) softmax_forward_block_kernel(const T* x, T* y, int64_t width) {
  using Acc = AccumulatorOf<T>;
  Acc* scratch = dynamic_smem<Acc>();
  const int64_t row = blockIdx.x;
  const T* xr = x + row * width;
  T* yr = y + row * width;
  SoftmaxStats<Acc> st = softmax_stats_empty<Acc>();
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) softmax_stats_add(st, load_as<Acc>(xr + j));
  st = block_merge_stats(st, scratch);
  write_softmax_row<T, Log>(xr, yr, width, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), st);
}

// Backward of one row given the row reduction `total`:
//   softmax:     total = sum_j dy_j y_j, dx = y (dy - total)
//   log-softmax: total = sum_j dy_j,     dx = dy - exp(y) total (0 where y = -Inf)
template <class T, bool Log>
__device__ __forceinline__ AccumulatorOf<T> backward_row_partial(const T* yr, const T* dyr, int64_t width, int first,
                                                                 int stride) {
  using Acc = AccumulatorOf<T>;
  Acc acc = Acc(0);
  for (int64_t j = first; j < width; j += stride) {
    if constexpr (Log)
      acc += load_as<Acc>(dyr + j);
    else
      acc += load_as<Acc>(yr + j) * load_as<Acc>(dyr + j);
  }
  return acc;
}

template <class T, bool Log>
__device__ __forceinline__ void write_backward_row(const T* yr, const T* dyr, T* dxr, int64_t width, int first,
                                                   int stride, AccumulatorOf<T> total) {
  using Acc = AccumulatorOf<T>;
  for (int64_t j = first; j < width; j += stride) {
    const Acc yj = load_as<Acc>(yr + j);
    const Acc dyj = load_as<Acc>(dyr + j);
    Acc dxj;
    if constexpr (Log)
      dxj = yj == -static_cast<Acc>(INFINITY) ? Acc(0) : dyj - softmax_exp(yj) * total;
    else
      dxj = yj * (dyj - total);
    store_from(dxr + j, dxj);
  }
}

// y, dy, dx: (rows, width)
template <class T, bool Log>
__global__ void __launch_bounds__(kWarpRowsPerBlock* kWarpSize)
    softmax_backward_warp_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t width) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int64_t offset = row * width;
  const AccumulatorOf<T> total =
      warp_sum(backward_row_partial<T, Log>(y + offset, dy + offset, width, lane, kWarpSize));
  write_backward_row<T, Log>(y + offset, dy + offset, dx + offset, width, lane, kWarpSize, total);
}

template <class T, bool Log>
__global__ void __launch_bounds__(kWideRowThreads)
    softmax_backward_block_kernel(const T* y, const T* dy, T* dx, int64_t width) {
  using Acc = AccumulatorOf<T>;
  Acc* scratch = dynamic_smem<Acc>();
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * width;
  const int first = static_cast<int>(threadIdx.x), stride = static_cast<int>(blockDim.x);
  const Acc total = block_sum(backward_row_partial<T, Log>(y + offset, dy + offset, width, first, stride), scratch);
  write_backward_row<T, Log>(y + offset, dy + offset, dx + offset, width, first, stride, total);
}

void check_dims(int64_t rows, int64_t width, const char* op) {
  if (rows < 0 || width < 0)
    throw std::invalid_argument(std::string(op) + ": negative size (rows " + std::to_string(rows) + ", width " +
                                std::to_string(width) + ")");
  // Grid x is limited to 2^31 - 1 blocks.
  if (rows > (int64_t{1} << 31) - 1)
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(rows) + " rows exceed the 2^31 - 1 limit");
}

template <class T, bool Log>
void launch_forward(const T* x, T* y, int64_t rows, int64_t width, cudaStream_t stream, const char* op) {
  check_dims(rows, width, op);
  if (rows == 0 || width == 0) return;
  if (width <= kSoftmaxWarpRowMaxWidth) {
    COCO_LAUNCH((softmax_forward_warp_kernel<T, Log>), dim3(ceil_div(rows, kWarpRowsPerBlock)),
                dim3(kWarpRowsPerBlock * kWarpSize), 0, stream, x, y, rows, width);
  } else {
    COCO_LAUNCH((softmax_forward_block_kernel<T, Log>), dim3(static_cast<unsigned>(rows)), dim3(kWideRowThreads),
                wide_row_scratch_bytes<T>(), stream, x, y, width);
  }
}

template <class T, bool Log>
void launch_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t width, cudaStream_t stream, const char* op) {
  check_dims(rows, width, op);
  if (rows == 0 || width == 0) return;
  if (width <= kSoftmaxWarpRowMaxWidth) {
    COCO_LAUNCH((softmax_backward_warp_kernel<T, Log>), dim3(ceil_div(rows, kWarpRowsPerBlock)),
                dim3(kWarpRowsPerBlock * kWarpSize), 0, stream, y, dy, dx, rows, width);
  } else {
    COCO_LAUNCH((softmax_backward_block_kernel<T, Log>), dim3(static_cast<unsigned>(rows)), dim3(kWideRowThreads),
                wide_row_scratch_bytes<T>(), stream, y, dy, dx, width);
  }
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t width, cudaStream_t stream) {
  detail::launch_forward<T, false>(x, y, rows, width, stream, "kernels::cuda::softmax_forward");
}

template <class T>
void log_softmax_forward(const T* x, T* y, int64_t rows, int64_t width, cudaStream_t stream) {
  detail::launch_forward<T, true>(x, y, rows, width, stream, "kernels::cuda::log_softmax_forward");
}

template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t width, cudaStream_t stream) {
  detail::launch_backward<T, false>(y, dy, dx, rows, width, stream, "kernels::cuda::softmax_backward");
}

template <class T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t width, cudaStream_t stream) {
  detail::launch_backward<T, true>(y, dy, dx, rows, width, stream, "kernels::cuda::log_softmax_backward");
}

#define COCO_INSTANTIATE_SOFTMAX_CUDA(T)                                                     \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t, cudaStream_t);            \
  template void log_softmax_forward<T>(const T*, T*, int64_t, int64_t, cudaStream_t);        \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t, cudaStream_t); \
  template void log_softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t, cudaStream_t);
COCO_INSTANTIATE_SOFTMAX_CUDA(float)
COCO_INSTANTIATE_SOFTMAX_CUDA(double)
COCO_INSTANTIATE_SOFTMAX_CUDA(__nv_bfloat16)
COCO_INSTANTIATE_SOFTMAX_CUDA(__half)
#undef COCO_INSTANTIATE_SOFTMAX_CUDA

}  // namespace coco::kernels::cuda
