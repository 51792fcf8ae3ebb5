// CUDA reductions with fixed reduction trees (see kernels/reduce.h for the determinism contract).
#include <algorithm>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine/runtime/launch.cuh"
#include "kernels/cast_convert.h"
#include "kernels/reduce.h"

namespace coco::kernels::detail {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// ---- full sum: per-block partials, then one block adds them in a fixed order.
constexpr int kSumBlock = 256;  // power of two (tree reduction)
constexpr int64_t kSumMaxBlocks = 256;
constexpr int64_t kSumElementsPerThread = 8;

int64_t sum_blocks(int64_t n) {
  return std::clamp<int64_t>((n + kSumBlock * kSumElementsPerThread - 1) / (kSumBlock * kSumElementsPerThread), 1,
                             kSumMaxBlocks);
}

// Reduces buffer[0 .. kSumBlock) into buffer[0]. Called by every thread of the block.
template <class A>
__device__ void block_tree_sum(A* buffer) {
  __syncthreads();
  for (int half = kSumBlock / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) buffer[threadIdx.x] += buffer[threadIdx.x + half];
    __syncthreads();
  }
}

// x: (n) -> partials: (gridDim.x)
template <class T>
__global__ void __launch_bounds__(kSumBlock)
    sum_partials_kernel(const T* __restrict__ x, int64_t n, Acc<T>* __restrict__ partials) {
  using A = Acc<T>;
  __shared__ A buffer[kSumBlock];
  COCO_POISON_SHARED(buffer);
  A total = A(0);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kSumBlock;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kSumBlock + threadIdx.x; i < n; i += stride)
    total += convert_element<A>(x[i]);
  buffer[threadIdx.x] = total;
  block_tree_sum(buffer);
  if (threadIdx.x == 0) partials[blockIdx.x] = buffer[0];
}

// partials: (count) -> out: (1) = scale * sum. One block.
template <class T>
__global__ void __launch_bounds__(kSumBlock)
    sum_finalize_kernel(const Acc<T>* __restrict__ partials, int count, Acc<T> scale, T* __restrict__ out) {
  using A = Acc<T>;
  __shared__ A buffer[kSumBlock];
  COCO_POISON_SHARED(buffer);
  A total = A(0);
  for (int i = threadIdx.x; i < count; i += kSumBlock) total += partials[i];
  buffer[threadIdx.x] = total;
  block_tree_sum(buffer);
  if (threadIdx.x == 0) out[0] = convert_element<T>(buffer[0] * scale);
}

// ---- row sums: one warp per row, butterfly shuffle reduction.
constexpr int kRowsPerBlock = 8;

// x: (rows, cols) -> out: (rows)
template <class T>
__global__ void __launch_bounds__(32 * kRowsPerBlock)
    row_sum_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, T* __restrict__ out) {
  using A = Acc<T>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y;
  if (row >= rows) return;  // uniform across the warp: every lane of a warp shares threadIdx.y
  const T* row_x = x + row * cols;
  A total = A(0);
  for (int64_t c = threadIdx.x; c < cols; c += 32) total += convert_element<A>(row_x[c]);
  for (int offset = 16; offset > 0; offset >>= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
  if (threadIdx.x == 0) out[row] = convert_element<T>(total);
}

// ---- column sums: 32-column tiles x row chunks; chunk partials summed in chunk order.
constexpr int kColumnTile = 32;
constexpr int kColumnThreadsY = 8;
constexpr int64_t kColumnRowsPerChunkMin = 128;
constexpr int64_t kColumnMaxChunks = 128;

struct ColumnSplit {
  int64_t chunks;
  int64_t rows_per_chunk;
};

ColumnSplit column_split(int64_t rows) {
  const int64_t chunks =
      std::clamp<int64_t>((rows + kColumnRowsPerChunkMin - 1) / kColumnRowsPerChunkMin, 1, kColumnMaxChunks);
  return {chunks, std::max<int64_t>(1, (rows + chunks - 1) / chunks)};
}

// x: (rows, cols). Block (kColumnTile, kColumnThreadsY) sums rows [chunk * rows_per_chunk, ...) of 32
// columns. With `partials` null (one chunk) it finishes out[c] = beta * out[c] + sum; otherwise it
// writes partials: (chunks, cols).
template <class In, class Out>
__global__ void __launch_bounds__(kColumnTile* kColumnThreadsY)
    column_partials_kernel(const In* __restrict__ x, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                           Acc<Out>* __restrict__ partials, Acc<Out> beta, Out* __restrict__ out) {
  using A = Acc<Out>;
  __shared__ A buffer[kColumnThreadsY][kColumnTile + 1];
  COCO_POISON_SHARED(buffer);
  const int64_t column = static_cast<int64_t>(blockIdx.x) * kColumnTile + threadIdx.x;
  const int64_t begin = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t end = begin + rows_per_chunk < rows ? begin + rows_per_chunk : rows;
  A total = A(0);
  if (column < cols)
    for (int64_t r = begin + threadIdx.y; r < end; r += kColumnThreadsY)
      total += convert_element<A>(x[r * cols + column]);
  buffer[threadIdx.y][threadIdx.x] = total;
  __syncthreads();
  for (int half = kColumnThreadsY / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.y) < half)
      buffer[threadIdx.y][threadIdx.x] += buffer[threadIdx.y + half][threadIdx.x];
    __syncthreads();
  }
  if (threadIdx.y != 0 || column >= cols) return;
  const A sum = buffer[0][threadIdx.x];
  if (partials) {
    partials[blockIdx.y * cols + column] = sum;
  } else {
    const A previous = beta == A(0) ? A(0) : beta * convert_element<A>(out[column]);
    out[column] = convert_element<Out>(previous + sum);
  }
}

// partials: (chunks, cols) -> out: (cols), out[c] = beta * out[c] + sum over chunks in order.
template <class Out>
__global__ void __launch_bounds__(256) column_finalize_kernel(const Acc<Out>* __restrict__ partials, int64_t chunks,
                                                              int64_t cols, Acc<Out> beta, Out* __restrict__ out) {
  using A = Acc<Out>;
  const int64_t column = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (column >= cols) return;
  A sum = A(0);
  for (int64_t k = 0; k < chunks; ++k) sum += partials[k * cols + column];
  const A previous = beta == A(0) ? A(0) : beta * convert_element<A>(out[column]);
  out[column] = convert_element<Out>(previous + sum);
}

// ---- broadcasts (backwards)
constexpr int kBlock = 256;
constexpr int64_t kMaxBlocks = 8192;
unsigned grid_for(int64_t n) { return static_cast<unsigned>(std::min<int64_t>(kMaxBlocks, (n + kBlock - 1) / kBlock)); }

// dy: (1) -> dx: (n)
template <class T>
__global__ void __launch_bounds__(kBlock)
    sum_backward_kernel(const T* __restrict__ dy, int64_t n, Acc<T> scale, T* __restrict__ dx) {
  const T value = convert_element<T>(scale * convert_element<Acc<T>>(dy[0]));
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) dx[i] = value;
}

// dy: (rows) -> dx: (rows, cols)
template <class T>
__global__ void __launch_bounds__(kBlock)
    row_broadcast_kernel(const T* __restrict__ dy, int64_t n, int64_t cols, T* __restrict__ dx) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dx[i] = dy[i / cols];
}

void check_nonnegative(int64_t value, const char* what, const char* op) {
  if (value < 0)
    throw std::invalid_argument(std::string("kernels::cuda::") + op + ": negative " + what + " " +
                                std::to_string(value));
}

void check_workspace(const void* workspace, size_t needed, const char* op) {
  if (needed > 0 && workspace == nullptr)
    throw std::invalid_argument(std::string("kernels::cuda::") + op + ": needs " + std::to_string(needed) +
                                " bytes of workspace, got a null pointer");
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

size_t sum_workspace_bytes(int64_t n) {
  detail::check_nonnegative(n, "element count", "sum_workspace_bytes");
  return static_cast<size_t>(detail::sum_blocks(n)) * sizeof(double);
}

template <class T>
void sum(const T* x, int64_t n, double scale, T* out, void* workspace, cudaStream_t stream) {
  using A = detail::Acc<T>;
  detail::check_workspace(workspace, sum_workspace_bytes(n), "sum");
  const int64_t blocks = detail::sum_blocks(n);
  A* partials = static_cast<A*>(workspace);
  COCO_LAUNCH(detail::sum_partials_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(detail::kSumBlock), 0, stream,
              x, n, partials);
  COCO_LAUNCH(detail::sum_finalize_kernel<T>, dim3(1), dim3(detail::kSumBlock), 0, stream,
              static_cast<const A*>(partials), static_cast<int>(blocks), static_cast<A>(scale), out);
}

template <class T>
void row_sum(const T* x, int64_t rows, int64_t cols, T* out, cudaStream_t stream) {
  detail::check_nonnegative(rows, "row count", "row_sum");
  detail::check_nonnegative(cols, "column count", "row_sum");
  if (rows == 0) return;
  COCO_LAUNCH(detail::row_sum_kernel<T>, dim3(ceil_div(rows, detail::kRowsPerBlock)), dim3(32, detail::kRowsPerBlock),
              0, stream, x, rows, cols, out);
}

size_t column_sum_workspace_bytes(int64_t rows, int64_t cols) {
  detail::check_nonnegative(rows, "row count", "column_sum_workspace_bytes");
  detail::check_nonnegative(cols, "column count", "column_sum_workspace_bytes");
  const detail::ColumnSplit split = detail::column_split(rows);
  return split.chunks == 1 ? 0 : static_cast<size_t>(split.chunks * cols) * sizeof(double);
}

template <class In, class Out>
void column_sum(const In* x, int64_t rows, int64_t cols, double beta, Out* out, void* workspace, cudaStream_t stream) {
  using A = detail::Acc<Out>;
  detail::check_nonnegative(rows, "row count", "column_sum");
  detail::check_nonnegative(cols, "column count", "column_sum");
  if (cols == 0) return;
  detail::check_workspace(workspace, column_sum_workspace_bytes(rows, cols), "column_sum");
  const detail::ColumnSplit split = detail::column_split(rows);
  A* partials = split.chunks == 1 ? nullptr : static_cast<A*>(workspace);
  const dim3 grid(ceil_div(cols, detail::kColumnTile), static_cast<unsigned>(split.chunks));
  COCO_LAUNCH((detail::column_partials_kernel<In, Out>), grid, dim3(detail::kColumnTile, detail::kColumnThreadsY), 0,
              stream, x, rows, cols, split.rows_per_chunk, partials, static_cast<A>(beta), out);
  if (partials)
    COCO_LAUNCH(detail::column_finalize_kernel<Out>, dim3(ceil_div(cols, 256)), dim3(256), 0, stream,
                static_cast<const A*>(partials), split.chunks, cols, static_cast<A>(beta), out);
}

template <class T>
void sum_backward(const T* dy, int64_t n, double scale, T* dx, cudaStream_t stream) {
  detail::check_nonnegative(n, "element count", "sum_backward");
  if (n == 0) return;
  COCO_LAUNCH(detail::sum_backward_kernel<T>, dim3(detail::grid_for(n)), dim3(detail::kBlock), 0, stream, dy, n,
              static_cast<detail::Acc<T>>(scale), dx);
}

template <class T>
void row_sum_backward(const T* dy, int64_t rows, int64_t cols, T* dx, cudaStream_t stream) {
  detail::check_nonnegative(rows, "row count", "row_sum_backward");
  detail::check_nonnegative(cols, "column count", "row_sum_backward");
  const int64_t n = rows * cols;
  if (n == 0) return;
  COCO_LAUNCH(detail::row_broadcast_kernel<T>, dim3(detail::grid_for(n)), dim3(detail::kBlock), 0, stream, dy, n, cols,
              dx);
}

#define COCO_INSTANTIATE_REDUCE_CUDA(T)                                                        \
  template void sum<T>(const T*, int64_t, double, T*, void*, cudaStream_t);                    \
  template void row_sum<T>(const T*, int64_t, int64_t, T*, cudaStream_t);                      \
  template void column_sum<T, T>(const T*, int64_t, int64_t, double, T*, void*, cudaStream_t); \
  template void sum_backward<T>(const T*, int64_t, double, T*, cudaStream_t);                  \
  template void row_sum_backward<T>(const T*, int64_t, int64_t, T*, cudaStream_t);

COCO_INSTANTIATE_REDUCE_CUDA(float)
COCO_INSTANTIATE_REDUCE_CUDA(double)
COCO_INSTANTIATE_REDUCE_CUDA(__nv_bfloat16)
COCO_INSTANTIATE_REDUCE_CUDA(__half)
#undef COCO_INSTANTIATE_REDUCE_CUDA

template void column_sum<__nv_bfloat16, float>(const __nv_bfloat16*, int64_t, int64_t, double, float*, void*,
                                               cudaStream_t);
template void column_sum<__half, float>(const __half*, int64_t, int64_t, double, float*, void*, cudaStream_t);

}  // namespace coco::kernels::cuda
