// CUDA softmax / log-softmax over the last dimension. Rows up to kSoftmaxWarpRowMaxWidth wide are
// handled by one warp each (4 rows per 128-thread block); wider rows by one 512-thread block each.
// Each thread walks its row in 16-byte packs with a stride of the group size (coalesced; element by
// element in the same order when the row is not 16-byte aligned), folds the elements into (max, sum)
// statistics in float (double for double rows), and the group merges them with a fixed tree; a second
// pass over the row (hot in L1/L2) writes the outputs.
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/softmax.h"
#include "kernels/softmax_reduce.cuh"
#include "kernels/vector_access.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kWarpRowsPerBlock = 4;
constexpr int kWideRowThreads = 512;
template <class T>
constexpr size_t wide_row_scratch_bytes() {
  return 2 * kWarpSize * sizeof(AccumulatorOf<T>);
}

// A row is split among the group's `workers` threads in packs of N = kPackElements<T> elements: worker
// w takes the packs w * N, (w + workers) * N, ... and folds them in element order, reading 128 bits at
// a time when the row allows (width % N == 0, aligned pointers) and one element at a time otherwise,
// with the same order either way (kernels/vector_access.cuh), so the results do not depend on the
// pointers' alignment.
template <class T>
__device__ __forceinline__ bool row_packs_ok(int64_t width, const T* a, const T* b, const T* c = nullptr) {
  constexpr int N = kPackElements<T>;
  return width % N == 0 && packs_aligned<N>(a, b, c);
}

template <class T>
__device__ __forceinline__ SoftmaxStats<AccumulatorOf<T>> softmax_row_stats(const T* xr, int64_t width, bool vector_ok,
                                                                            int worker, int workers) {
  using Acc = AccumulatorOf<T>;
  SoftmaxStats<Acc> st = softmax_stats_empty<Acc>();
  for_each_pack_of_worker<kPackElements<T>>(width, vector_ok, worker, workers, [&](auto w, int64_t j) {
    constexpr int W = decltype(w)::value;
    const Pack<T, W> v = load_pack<W>(xr + j);
#pragma unroll
    for (int k = 0; k < W; ++k) softmax_stats_add(st, convert_element<Acc>(v.v[k]));
  });
  return st;
}

// Writes one row of outputs from its statistics.
template <class T, bool Log>
__device__ __forceinline__ void write_softmax_row(const T* xr, T* yr, int64_t width, bool vector_ok, int worker,
                                                  int workers, const SoftmaxStats<AccumulatorOf<T>>& st) {
  using Acc = AccumulatorOf<T>;
  const Acc log_sum = Log ? softmax_log(st.sum) : Acc(0);
  const Acc inv_sum = Log ? Acc(0) : Acc(1) / st.sum;
  for_each_pack_of_worker<kPackElements<T>>(width, vector_ok, worker, workers, [&](auto w, int64_t j) {
    constexpr int W = decltype(w)::value;
    const Pack<T, W> v = load_pack<W>(xr + j);
    Pack<T, W> out;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      if constexpr (Log)
        out.v[k] = convert_element<T>(log_softmax_value(convert_element<Acc>(v.v[k]), st, log_sum));
      else
        out.v[k] = convert_element<T>(softmax_value(convert_element<Acc>(v.v[k]), st, inv_sum));
    }
    store_pack<W>(yr + j, out);
  });
}

// x, y: (rows, width); one warp per row.
template <class T, bool Log>
__global__ void softmax_forward_warp_kernel(const T* x, T* y, int64_t rows, int64_t width) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;  // whole warps leave together
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const T* xr = x + row * width;
  T* yr = y + row * width;
  const bool vector_ok = row_packs_ok(width, x, y);
  const auto st = warp_merge_stats(softmax_row_stats(xr, width, vector_ok, lane, kWarpSize));
  write_softmax_row<T, Log>(xr, yr, width, vector_ok, lane, kWarpSize, st);
}

// x, y: (rows, width); one block per row.
template <class T, bool Log>
__global__ void softmax_forward_block_kernel(const T* x, T* y, int64_t width) {
  using Acc = AccumulatorOf<T>;
  Acc* scratch = dynamic_smem<Acc>();
  const int64_t row = blockIdx.x;
  const T* xr = x + row * width;
  T* yr = y + row * width;
  const bool vector_ok = row_packs_ok(width, x, y);
  const int worker = static_cast<int>(threadIdx.x), workers = static_cast<int>(blockDim.x);
  const auto st = block_merge_stats(softmax_row_stats(xr, width, vector_ok, worker, workers), scratch);
  write_softmax_row<T, Log>(xr, yr, width, vector_ok, worker, workers, st);
}

// Backward of one row given the row reduction `total`:
//   softmax:     total = sum_j dy_j y_j, dx = y (dy - total)
//   log-softmax: total = sum_j dy_j,     dx = dy - exp(y) total (0 where y = -Inf)
template <class T, bool Log>
__device__ __forceinline__ AccumulatorOf<T> backward_row_partial(const T* yr, const T* dyr, int64_t width,
                                                                 bool vector_ok, int worker, int workers) {
  using Acc = AccumulatorOf<T>;
  Acc acc = Acc(0);
  for_each_pack_of_worker<kPackElements<T>>(width, vector_ok, worker, workers, [&](auto w, int64_t j) {
    constexpr int W = decltype(w)::value;
    const Pack<T, W> dyv = load_pack<W>(dyr + j);
    if constexpr (Log) {
#pragma unroll
      for (int k = 0; k < W; ++k) acc += convert_element<Acc>(dyv.v[k]);
    } else {
      const Pack<T, W> yv = load_pack<W>(yr + j);
#pragma unroll
      for (int k = 0; k < W; ++k) acc += convert_element<Acc>(yv.v[k]) * convert_element<Acc>(dyv.v[k]);
    }
  });
  return acc;
}

template <class T, bool Log>
__device__ __forceinline__ void write_backward_row(const T* yr, const T* dyr, T* dxr, int64_t width, bool vector_ok,
                                                   int worker, int workers, AccumulatorOf<T> total) {
  using Acc = AccumulatorOf<T>;
  for_each_pack_of_worker<kPackElements<T>>(width, vector_ok, worker, workers, [&](auto w, int64_t j) {
    constexpr int W = decltype(w)::value;
    const Pack<T, W> yv = load_pack<W>(yr + j), dyv = load_pack<W>(dyr + j);
    Pack<T, W> out;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const Acc yj = convert_element<Acc>(yv.v[k]);
      const Acc dyj = convert_element<Acc>(dyv.v[k]);
      Acc dxj;
      if constexpr (Log)
        dxj = yj == -static_cast<Acc>(INFINITY) ? Acc(0) : dyj - softmax_exp(yj) * total;
      else
        dxj = yj * (dyj - total);
      out.v[k] = convert_element<T>(dxj);
    }
    store_pack<W>(dxr + j, out);
  });
}

// y, dy, dx: (rows, width)
template <class T, bool Log>
__global__ void softmax_backward_warp_kernel(const T* y, const T* dy, T* dx, int64_t rows, int64_t width) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int64_t offset = row * width;
  const bool vector_ok = row_packs_ok(width, y, dy, dx);
  const AccumulatorOf<T> total =
      warp_sum(backward_row_partial<T, Log>(y + offset, dy + offset, width, vector_ok, lane, kWarpSize));
  write_backward_row<T, Log>(y + offset, dy + offset, dx + offset, width, vector_ok, lane, kWarpSize, total);
}

template <class T, bool Log>
__global__ void softmax_backward_block_kernel(const T* y, const T* dy, T* dx, int64_t width) {
  using Acc = AccumulatorOf<T>;
  Acc* scratch = dynamic_smem<Acc>();
  const int64_t offset = static_cast<int64_t>(blockIdx.x) * width;
  const int worker = static_cast<int>(threadIdx.x), workers = static_cast<int>(blockDim.x);
  const bool vector_ok = row_packs_ok(width, y, dy, dx);
  const Acc total =
      block_sum(backward_row_partial<T, Log>(y + offset, dy + offset, width, vector_ok, worker, workers), scratch);
  write_backward_row<T, Log>(y + offset, dy + offset, dx + offset, width, vector_ok, worker, workers, total);
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
