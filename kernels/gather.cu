// CUDA row gather and deterministic scatter-add (semantics in kernels/gather.h).
//
// Scatter-add without float atomics:
//   1. histogram_kernel   rows_count[n] = #positions with index n      (int atomics: order-free)
//   2. scan_kernel        bucket_start = exclusive scan, one block; cursor = bucket_start
//   3. place_kernel       order[cursor[n]++] = m                        (arbitrary order in a bucket)
//   4. sort_buckets_kernel one thread per destination row sorts its (usually 1-long) bucket
//   5. accumulate_kernel  one block per non-empty bucket adds its rows in increasing m, in f32, onto out
#include <algorithm>
#include <climits>
#include <stdexcept>
#include <string>

#include "engine/runtime/cuda_calls.h"
#include "engine/runtime/launch.cuh"
#include "kernels/device_convert.cuh"
#include "kernels/gather.h"

namespace coco::kernels::detail {
namespace {

constexpr int kRowThreads = 128;
constexpr int64_t kMaxRowBlocks = 65535;
constexpr int kScanThreads = 1024;
constexpr int kElementwiseThreads = 256;
constexpr int64_t kMaxElementwiseBlocks = 4096;

// src: (src_rows, dim), index: (count) -> out: (count, dim); a bad index gives a zero row.
template <class T>
__global__ void __launch_bounds__(kRowThreads)
    gather_rows_kernel(const T* __restrict__ src, int64_t src_rows, int dim, const int32_t* __restrict__ index,
                       int64_t count, T* __restrict__ out, int32_t* __restrict__ invalid) {
  for (int64_t m = blockIdx.x; m < count; m += gridDim.x) {
    const int32_t n = index[m];
    T* dst = out + m * dim;
    if (n < 0 || n >= src_rows) {
      if (threadIdx.x == 0) atomicAdd(invalid, 1);
      for (int d = threadIdx.x; d < dim; d += blockDim.x) dst[d] = from_f32<T>(0.0f);
      continue;
    }
    const T* row = src + static_cast<int64_t>(n) * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) dst[d] = row[d];
  }
}

// Scratch layout (int32): rows_count[out_rows] (becomes the cursor), bucket_start[out_rows],
// order[count], placed[1] (number of valid positions).
struct ScatterScratch {
  int32_t* cursor;
  int32_t* bucket_start;
  int32_t* order;
  int32_t* placed;
};

ScatterScratch scratch_of(void* workspace, int64_t count, int64_t out_rows) {
  int32_t* base = static_cast<int32_t*>(workspace);
  return ScatterScratch{base, base + out_rows, base + 2 * out_rows, base + 2 * out_rows + count};
}

__global__ void __launch_bounds__(kElementwiseThreads)
    histogram_kernel(const int32_t* __restrict__ index, int64_t count, int64_t out_rows,
                     int32_t* __restrict__ rows_count, int32_t* __restrict__ invalid) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t m = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; m < count; m += stride) {
    const int32_t n = index[m];
    if (n >= 0 && n < out_rows)
      atomicAdd(&rows_count[n], 1);
    else
      atomicAdd(invalid, 1);
  }
}

// rows_count -> bucket_start (exclusive scan), rows_count := bucket_start (the placement cursor),
// *placed = total. One block of kScanThreads; thread t owns a contiguous chunk of rows.
__global__ void __launch_bounds__(kScanThreads)
    scan_kernel(int32_t* __restrict__ rows_count, int32_t* __restrict__ bucket_start, int64_t out_rows,
                int32_t* __restrict__ placed) {
  __shared__ int32_t chunk_sum[kScanThreads];
  const int64_t chunk = (out_rows + kScanThreads - 1) / kScanThreads;
  const int64_t first = static_cast<int64_t>(threadIdx.x) * chunk;
  const int64_t begin = first < out_rows ? first : out_rows;
  const int64_t end = begin + chunk < out_rows ? begin + chunk : out_rows;
  int32_t local = 0;
  for (int64_t i = begin; i < end; ++i) local += rows_count[i];
  chunk_sum[threadIdx.x] = local;
  __syncthreads();
  // Hillis-Steele inclusive scan over the chunk sums.
  for (int offset = 1; offset < kScanThreads; offset <<= 1) {
    const int32_t add = static_cast<int>(threadIdx.x) >= offset ? chunk_sum[threadIdx.x - offset] : 0;
    __syncthreads();
    chunk_sum[threadIdx.x] += add;
    __syncthreads();
  }
  int32_t running = chunk_sum[threadIdx.x] - local;  // exclusive prefix of this chunk
  for (int64_t i = begin; i < end; ++i) {
    const int32_t c = rows_count[i];
    bucket_start[i] = running;
    rows_count[i] = running;
    running += c;
  }
  if (threadIdx.x == kScanThreads - 1) *placed = chunk_sum[kScanThreads - 1];
}

__global__ void __launch_bounds__(kElementwiseThreads)
    place_kernel(const int32_t* __restrict__ index, int64_t count, int64_t out_rows, int32_t* __restrict__ cursor,
                 int32_t* __restrict__ order) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t m = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; m < count; m += stride) {
    const int32_t n = index[m];
    if (n >= 0 && n < out_rows) order[atomicAdd(&cursor[n], 1)] = static_cast<int32_t>(m);
  }
}

// Sorts every bucket's positions ascending; one thread per destination row. Insertion sort:
// buckets are short (repeated indices are rare).
__global__ void __launch_bounds__(kElementwiseThreads)
    sort_buckets_kernel(const int32_t* __restrict__ bucket_start, const int32_t* __restrict__ bucket_end,
                        int64_t out_rows, int32_t* __restrict__ order) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; n < out_rows; n += stride) {
    const int32_t begin = bucket_start[n], end = bucket_end[n];
    for (int32_t i = begin + 1; i < end; ++i) {
      const int32_t key = order[i];
      int32_t j = i - 1;
      while (j >= begin && order[j] > key) {
        order[j + 1] = order[j];
        --j;
      }
      order[j + 1] = key;
    }
  }
}

// One block per bucket: grid-stride over the placed positions, the block at a bucket's first
// position owns it and adds the bucket's rows in increasing position order. bucket_end is the
// cursor after place_kernel.
template <class Src, class Dst>
__global__ void __launch_bounds__(kRowThreads)
    accumulate_kernel(const Src* __restrict__ src, const int32_t* __restrict__ index, int dim,
                      const int32_t* __restrict__ bucket_start, const int32_t* __restrict__ bucket_end,
                      const int32_t* __restrict__ order, const int32_t* __restrict__ placed, Dst* __restrict__ out) {
  const int64_t total = *placed;
  for (int64_t p = blockIdx.x; p < total; p += gridDim.x) {
    const int32_t n = index[order[p]];
    const int32_t begin = bucket_start[n];
    if (p != begin) continue;
    const int32_t end = bucket_end[n];
    Dst* dst = out + static_cast<int64_t>(n) * dim;
    for (int d = threadIdx.x; d < dim; d += blockDim.x) {
      float acc = 0.0f;
      for (int32_t i = begin; i < end; ++i) acc += to_f32(src[static_cast<int64_t>(order[i]) * dim + d]);
      dst[d] = from_f32<Dst>(to_f32(dst[d]) + acc);
    }
  }
}

void check_sizes(int64_t count, int64_t rows, int64_t dim, const char* op) {
  if (count < 0 || count > INT_MAX || rows < 0 || rows > INT_MAX || dim < 1 || dim > INT_MAX)
    throw std::invalid_argument(
        std::string(op) + ": expected 0 <= count, rows <= 2^31-1 and 1 <= dim <= 2^31-1; got count " +
        std::to_string(count) + ", rows " + std::to_string(rows) + ", dim " + std::to_string(dim));
}

unsigned elementwise_blocks(int64_t n) {
  return static_cast<unsigned>(
      std::clamp<int64_t>((n + kElementwiseThreads - 1) / kElementwiseThreads, 1, kMaxElementwiseBlocks));
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T>
void gather_rows(const T* src, int64_t src_rows, int64_t dim, const int32_t* index, int64_t count, T* out,
                 int32_t* invalid, cudaStream_t stream, bool accumulate_invalid) {
  detail::check_sizes(count, src_rows, dim, "kernels::cuda::gather_rows");
  if (!accumulate_invalid) COCO_CUDA_CHECK(runtime::memset_async(invalid, 0, sizeof(int32_t), stream));
  if (count == 0) return;
  COCO_LAUNCH(detail::gather_rows_kernel<T>, dim3(static_cast<unsigned>(std::min(count, detail::kMaxRowBlocks))),
              dim3(detail::kRowThreads), 0, stream, src, src_rows, static_cast<int>(dim), index, count, out, invalid);
}

size_t scatter_workspace_bytes(int64_t count, int64_t out_rows) {
  return static_cast<size_t>(2 * out_rows + count + 1) * sizeof(int32_t);
}

template <class Src, class Dst>
void scatter_add_rows(const Src* src, const int32_t* index, int64_t count, int64_t dim, Dst* out, int64_t out_rows,
                      int32_t* invalid, void* workspace, cudaStream_t stream) {
  detail::check_sizes(count, out_rows, dim, "kernels::cuda::scatter_add_rows");
  COCO_CUDA_CHECK(runtime::memset_async(invalid, 0, sizeof(int32_t), stream));
  if (count == 0) return;
  const detail::ScatterScratch s = detail::scratch_of(workspace, count, out_rows);
  COCO_CUDA_CHECK(runtime::memset_async(s.cursor, 0, static_cast<size_t>(out_rows) * sizeof(int32_t), stream));
  const unsigned blocks = detail::elementwise_blocks(count);
  COCO_LAUNCH(detail::histogram_kernel, dim3(blocks), dim3(detail::kElementwiseThreads), 0, stream, index, count,
              out_rows, s.cursor, invalid);
  COCO_LAUNCH(detail::scan_kernel, dim3(1), dim3(detail::kScanThreads), 0, stream, s.cursor, s.bucket_start, out_rows,
              s.placed);
  COCO_LAUNCH(detail::place_kernel, dim3(blocks), dim3(detail::kElementwiseThreads), 0, stream, index, count, out_rows,
              s.cursor, s.order);
  COCO_LAUNCH(detail::sort_buckets_kernel, dim3(detail::elementwise_blocks(out_rows)),
              dim3(detail::kElementwiseThreads), 0, stream, static_cast<const int32_t*>(s.bucket_start),
              static_cast<const int32_t*>(s.cursor), out_rows, s.order);
  COCO_LAUNCH((detail::accumulate_kernel<Src, Dst>),
              dim3(static_cast<unsigned>(std::min(count, detail::kMaxRowBlocks))), dim3(detail::kRowThreads), 0, stream,
              src, index, static_cast<int>(dim), static_cast<const int32_t*>(s.bucket_start),
              static_cast<const int32_t*>(s.cursor), static_cast<const int32_t*>(s.order),
              static_cast<const int32_t*>(s.placed), out);
}

template void gather_rows<float>(const float*, int64_t, int64_t, const int32_t*, int64_t, float*, int32_t*,
                                 cudaStream_t, bool);
template void gather_rows<__nv_bfloat16>(const __nv_bfloat16*, int64_t, int64_t, const int32_t*, int64_t,
                                         __nv_bfloat16*, int32_t*, cudaStream_t, bool);
template void gather_rows<__half>(const __half*, int64_t, int64_t, const int32_t*, int64_t, __half*, int32_t*,
                                  cudaStream_t, bool);

#define COCO_INSTANTIATE_SCATTER(Src, Dst)                                                                        \
  template void scatter_add_rows<Src, Dst>(const Src*, const int32_t*, int64_t, int64_t, Dst*, int64_t, int32_t*, \
                                           void*, cudaStream_t);
COCO_INSTANTIATE_SCATTER(float, float)
COCO_INSTANTIATE_SCATTER(__nv_bfloat16, __nv_bfloat16)
COCO_INSTANTIATE_SCATTER(__nv_bfloat16, float)
COCO_INSTANTIATE_SCATTER(__half, __half)
COCO_INSTANTIATE_SCATTER(__half, float)
#undef COCO_INSTANTIATE_SCATTER

}  // namespace coco::kernels::cuda
