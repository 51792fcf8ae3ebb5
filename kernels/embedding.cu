// CUDA embedding: row-per-block lookup (16-byte packs where the row allows) with id clamping + error
// flag, and a deterministic backward
// (stable LSD radix sort of positions by token id, then one block per run of equal ids).
#include <algorithm>
#include <bit>
#include <stdexcept>
#include <string>

#include "engine/runtime/cuda_calls.h"
#include "engine/runtime/launch.cuh"
#include "kernels/cast_convert.h"
#include "kernels/embedding.h"
#include "kernels/embedding_error.h"
#include "kernels/vector_access.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kRadixBits = 8;
constexpr int kRadixBins = 1 << kRadixBits;
constexpr int kSortChunk = kRadixBins;  // elements per block in the radix passes = threads per block
constexpr int kScanThreads = 1024;
constexpr int kGradTileColumns = 32;
constexpr int kGradTileRows = 8;
constexpr int64_t kMaxRunBlocks = 2048;
constexpr int kPositionGradBlock = 256;

template <class T>
__device__ __forceinline__ float load_f32(const T* p) {
  return convert_element<float>(*p);
}

// ids: (rows = B*T); tok: (vocab, dim); pos: (>= seq, dim) or nullptr; out: (rows, dim). One block per
// row. An id outside [0, vocab) is clamped for the read and its position recorded (smallest wins).
template <class T>
__global__ void embedding_forward_kernel(T* __restrict__ out, const int32_t* __restrict__ ids,
                                         const T* __restrict__ tok, const T* __restrict__ pos, int64_t seq,
                                         int64_t vocab, int dim, uint32_t* __restrict__ bad_position) {
  const int64_t row = blockIdx.x;
  const int64_t t = row % seq;
  int64_t id = ids[row];
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0 && bad_position != nullptr) atomicMin(bad_position, static_cast<unsigned>(row));
    id = id < 0 ? 0 : vocab - 1;
  }
  const T* tok_row = tok + id * dim;
  T* out_row = out + row * dim;
  constexpr int N = kPackElements<T>;
  const bool vector_ok = dim % N == 0 && packs_aligned<N>(out, tok, pos);
  const T* pos_row = pos != nullptr ? pos + t * dim : nullptr;
  for_each_pack_of_worker<N>(
      dim, vector_ok, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x), [&](auto width, int64_t e) {
        constexpr int W = decltype(width)::value;
        if (pos_row != nullptr) {
          const Pack<T, W> a = load_pack<W>(tok_row + e), b = load_pack<W>(pos_row + e);
          Pack<T, W> sum;
#pragma unroll
          for (int k = 0; k < W; ++k)
            sum.v[k] = convert_from_f32<T>(convert_element<float>(a.v[k]) + convert_element<float>(b.v[k]));
          store_pack<W>(out_row + e, sum);
        } else {
          store_pack<W>(out_row + e, load_pack<W>(tok_row + e));
        }
      });
}

// dpos[t, e] += sum_b dout[b, t, e], b in order. dout: (batch, seq, dim); dpos: (>= seq, dim).
template <class T, class GradT>
__global__ void embedding_position_grad_kernel(GradT* __restrict__ dpos, const T* __restrict__ dout, int64_t batch,
                                               int64_t seq, int64_t dim) {
  const int64_t n = seq * dim;
  constexpr int N = kPackElements<T, GradT>;
  // Each batch's slice starts n elements after the previous one: aligned only when n % N == 0.
  for_each_pack<N>(n, n % N == 0 && packs_aligned<N>(dpos, dout), [&](auto width, int64_t i) {
    constexpr int W = decltype(width)::value;
    float total[W];
#pragma unroll
    for (int k = 0; k < W; ++k) total[k] = 0.0f;
    for (int64_t b = 0; b < batch; ++b) {
      const Pack<T, W> g = load_pack<W>(dout + b * n + i);
#pragma unroll
      for (int k = 0; k < W; ++k) total[k] += convert_element<float>(g.v[k]);
    }
    Pack<GradT, W> d = load_pack<W>(dpos + i);
#pragma unroll
    for (int k = 0; k < W; ++k) d.v[k] = convert_from_f32<GradT>(convert_element<float>(d.v[k]) + total[k]);
    store_pack<W>(dpos + i, d);
  });
}

// keys[i] = ids[i] when it takes part in dtok (inside [0, vocab), not padding), else vocab (sorts
// last and is skipped); vals[i] = i.
__global__ void sort_init_kernel(uint32_t* __restrict__ keys, uint32_t* __restrict__ vals,
                                 const int32_t* __restrict__ ids, uint32_t n, int64_t vocab, int64_t padding_id) {
  const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int64_t id = ids[i];
  keys[i] = (id >= 0 && id < vocab && id != padding_id) ? static_cast<uint32_t>(id) : static_cast<uint32_t>(vocab);
  vals[i] = i;
}

// counts[d * chunks + c] = occurrences of digit d in chunk c (kSortChunk keys per block).
__global__ void radix_histogram_kernel(uint32_t* __restrict__ counts, const uint32_t* __restrict__ keys, uint32_t n,
                                       int shift, uint32_t chunks) {
  __shared__ uint32_t digits[kSortChunk];
  const uint32_t i = blockIdx.x * kSortChunk + threadIdx.x;
  digits[threadIdx.x] = i < n ? (keys[i] >> shift) & (kRadixBins - 1) : kRadixBins;  // kRadixBins: no element
  __syncthreads();
  uint32_t count = 0;
  for (int j = 0; j < kSortChunk; ++j) count += digits[j] == threadIdx.x;
  counts[threadIdx.x * chunks + blockIdx.x] = count;
}

// In-place exclusive prefix sum of values[0, n) by one block: each thread scans a contiguous segment.
__global__ void exclusive_scan_kernel(uint32_t* __restrict__ values, uint32_t n) {
  __shared__ uint32_t segment_offsets[kScanThreads];
  const uint32_t per_thread = (n + kScanThreads - 1) / kScanThreads;
  const uint32_t begin = min(n, threadIdx.x * per_thread), end = min(n, begin + per_thread);
  uint32_t total = 0;
  for (uint32_t i = begin; i < end; ++i) total += values[i];
  segment_offsets[threadIdx.x] = total;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t running = 0;
    for (int k = 0; k < kScanThreads; ++k) {
      const uint32_t segment_total = segment_offsets[k];
      segment_offsets[k] = running;
      running += segment_total;
    }
  }
  __syncthreads();
  uint32_t running = segment_offsets[threadIdx.x];
  for (uint32_t i = begin; i < end; ++i) {
    const uint32_t value = values[i];
    values[i] = running;
    running += value;
  }
}

// Stable scatter of one radix pass: an element's destination is its digit's offset for its chunk
// plus the number of earlier elements of the chunk with the same digit.
__global__ void radix_scatter_kernel(uint32_t* __restrict__ keys_out, uint32_t* __restrict__ vals_out,
                                     const uint32_t* __restrict__ keys_in, const uint32_t* __restrict__ vals_in,
                                     const uint32_t* __restrict__ offsets, uint32_t n, int shift, uint32_t chunks) {
  __shared__ uint32_t digits[kSortChunk];
  const uint32_t i = blockIdx.x * kSortChunk + threadIdx.x;
  const uint32_t key = i < n ? keys_in[i] : 0u;
  const uint32_t digit = i < n ? (key >> shift) & (kRadixBins - 1) : kRadixBins;
  digits[threadIdx.x] = digit;
  __syncthreads();
  if (i >= n) return;
  uint32_t rank = 0;
  for (uint32_t j = 0; j < threadIdx.x; ++j) rank += digits[j] == digit;
  const uint32_t destination = offsets[digit * chunks + blockIdx.x] + rank;
  keys_out[destination] = key;
  vals_out[destination] = vals_in[i];
}

// From sorted keys: run_starts[r] = first index of the r-th run of equal keys below `vocab`,
// run_starts[runs] = end of the last run (= number of keys below vocab), *run_count = runs.
__global__ void find_runs_kernel(uint32_t* __restrict__ run_starts, uint32_t* __restrict__ run_count,
                                 const uint32_t* __restrict__ keys, uint32_t n, uint32_t vocab) {
  __shared__ uint32_t segment_offsets[kScanThreads];
  __shared__ uint32_t valid_end;
  const uint32_t per_thread = (n + kScanThreads - 1) / kScanThreads;
  const uint32_t begin = min(n, threadIdx.x * per_thread), end = min(n, begin + per_thread);
  if (threadIdx.x == 0) valid_end = n;
  uint32_t starts = 0;
  for (uint32_t i = begin; i < end; ++i) starts += keys[i] < vocab && (i == 0 || keys[i] != keys[i - 1]);
  segment_offsets[threadIdx.x] = starts;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t running = 0;
    for (int k = 0; k < kScanThreads; ++k) {
      const uint32_t segment_total = segment_offsets[k];
      segment_offsets[k] = running;
      running += segment_total;
    }
    *run_count = running;
  }
  __syncthreads();
  uint32_t run = segment_offsets[threadIdx.x];
  for (uint32_t i = begin; i < end; ++i) {
    if (keys[i] < vocab && (i == 0 || keys[i] != keys[i - 1])) run_starts[run++] = i;
    if (keys[i] >= vocab && (i == 0 || keys[i - 1] < vocab)) valid_end = i;  // keys are sorted: one such i
  }
  __syncthreads();
  if (threadIdx.x == 0) run_starts[*run_count] = valid_end;
}

// dtok[id, c] += sum of dout[p, c] over the run's positions p (ascending). Grid (ceil(dim / 32), Y),
// block (32, 8): blocks stride over runs; the 8 row lanes sum positions start + ty, start + ty + 8, ...
// and lane 0 adds the 8 lane sums in order, so every run's sum has a fixed order.
template <class T, class GradT>
__global__ void embedding_token_grad_kernel(GradT* __restrict__ dtok, const T* __restrict__ dout,
                                            const uint32_t* __restrict__ sorted_keys,
                                            const uint32_t* __restrict__ sorted_positions,
                                            const uint32_t* __restrict__ run_starts,
                                            const uint32_t* __restrict__ run_count, int64_t dim) {
  __shared__ float lane_sums[kGradTileRows][kGradTileColumns + 1];
  const uint32_t runs = *run_count;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kGradTileColumns + threadIdx.x;
  for (uint32_t r = blockIdx.y; r < runs; r += gridDim.y) {  // same trip count for the whole block
    const uint32_t start = run_starts[r], end = run_starts[r + 1];
    float total = 0.0f;
    if (c < dim)
      for (uint32_t i = start + threadIdx.y; i < end; i += kGradTileRows)
        total += load_f32(dout + static_cast<int64_t>(sorted_positions[i]) * dim + c);
    lane_sums[threadIdx.y][threadIdx.x] = total;
    __syncthreads();
    if (threadIdx.y == 0 && c < dim) {
      float run_total = 0.0f;
      for (int k = 0; k < kGradTileRows; ++k) run_total += lane_sums[k][threadIdx.x];
      GradT* target = dtok + static_cast<int64_t>(sorted_keys[start]) * dim + c;
      *target = convert_from_f32<GradT>(convert_element<float>(*target) + run_total);
    }
    __syncthreads();  // lane_sums is rewritten for the next run
  }
}

struct SortLayout {
  uint32_t n = 0, chunks = 0;
  size_t keys_a = 0, keys_b = 0, vals_a = 0, vals_b = 0, counts = 0, run_starts = 0, run_count = 0, total = 0;
};

// Offsets in uint32 elements into the workspace.
SortLayout sort_layout(const EmbeddingShape& shape) {
  SortLayout l;
  l.n = static_cast<uint32_t>(shape.positions());
  l.chunks = (l.n + kSortChunk - 1) / kSortChunk;
  size_t at = 0;
  l.keys_a = at, at += l.n;
  l.keys_b = at, at += l.n;
  l.vals_a = at, at += l.n;
  l.vals_b = at, at += l.n;
  l.counts = at, at += static_cast<size_t>(kRadixBins) * l.chunks;
  l.run_starts = at, at += l.n + 1;
  l.run_count = at, at += 1;
  l.total = at;
  return l;
}

// One thread per pack.
template <class T, class GradT>
unsigned position_grad_blocks(int64_t n) {
  const int64_t packs = (n + kPackElements<T, GradT> - 1) / kPackElements<T, GradT>;
  return static_cast<unsigned>(std::clamp<int64_t>((packs + kPositionGradBlock - 1) / kPositionGradBlock, 1, 8192));
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T>
void embedding_forward(T* out, const int32_t* ids, const T* tok, const T* pos, const EmbeddingShape& shape,
                       uint32_t* bad_position, cudaStream_t stream) {
  detail::check_embedding_shape("kernels::cuda::embedding_forward", shape);
  if (bad_position != nullptr)
    COCO_CUDA_CHECK(runtime::memset_async(bad_position, 0xFF, sizeof(uint32_t), stream));  // = kNoBadPosition
  const int64_t rows = shape.positions();
  if (rows == 0) return;
  // A warp-multiple of threads, one per 16-byte pack of a row, at most 256.
  const int64_t packs = (shape.dim + detail::kPackElements<T> - 1) / detail::kPackElements<T>;
  const unsigned threads = static_cast<unsigned>(std::clamp<int64_t>((packs + 31) / 32 * 32, 32, 256));
  COCO_LAUNCH(detail::embedding_forward_kernel<T>, dim3(static_cast<unsigned>(rows)), dim3(threads), 0, stream, out,
              ids, tok, pos, shape.seq, shape.vocab, static_cast<int>(shape.dim), bad_position);
}

void embedding_throw_if_bad_id(const uint32_t* bad_position, const int32_t* ids, const EmbeddingShape& shape,
                               cudaStream_t stream) {
  uint32_t position = kNoBadPosition;
  COCO_CUDA_CHECK(runtime::memcpy_async(&position, bad_position, sizeof(position), cudaMemcpyDeviceToHost, stream));
  COCO_CUDA_CHECK(runtime::stream_synchronize(stream));
  if (position == kNoBadPosition) return;
  int32_t id = 0;
  COCO_CUDA_CHECK(runtime::memcpy_blocking(&id, ids + position, sizeof(id), cudaMemcpyDeviceToHost));
  const int64_t seq = shape.seq > 0 ? shape.seq : 1;
  throw TokenIdError(detail::bad_token_message(id, position / seq, position % seq, shape.vocab));
}

size_t embedding_backward_workspace_bytes(const EmbeddingShape& shape) {
  detail::check_embedding_shape("kernels::cuda::embedding_backward_workspace_bytes", shape);
  return detail::sort_layout(shape).total * sizeof(uint32_t);
}

template <class T, class GradT>
void embedding_backward(GradT* dtok, GradT* dpos, const T* dout, const int32_t* ids, const EmbeddingShape& shape,
                        int64_t padding_id, void* workspace, cudaStream_t stream) {
  detail::check_embedding_shape("kernels::cuda::embedding_backward", shape);
  if (shape.positions() == 0) return;
  if (dpos != nullptr) {
    const int64_t n = shape.seq * shape.dim;
    COCO_LAUNCH((detail::embedding_position_grad_kernel<T, GradT>), dim3(detail::position_grad_blocks<T, GradT>(n)),
                dim3(detail::kPositionGradBlock), 0, stream, dpos, dout, shape.batch, shape.seq, shape.dim);
  }
  if (dtok == nullptr) return;
  if (workspace == nullptr)
    throw std::invalid_argument("kernels::cuda::embedding_backward: dtok requested without a workspace of " +
                                std::to_string(embedding_backward_workspace_bytes(shape)) + " bytes");
  const detail::SortLayout layout = detail::sort_layout(shape);
  uint32_t* base = static_cast<uint32_t*>(workspace);
  uint32_t* keys = base + layout.keys_a;
  uint32_t* vals = base + layout.vals_a;
  uint32_t* keys_spare = base + layout.keys_b;
  uint32_t* vals_spare = base + layout.vals_b;
  uint32_t* counts = base + layout.counts;
  uint32_t* run_starts = base + layout.run_starts;
  uint32_t* run_count = base + layout.run_count;
  const uint32_t n = layout.n;

  COCO_LAUNCH(detail::sort_init_kernel, dim3(ceil_div(n, 256)), dim3(256), 0, stream, keys, vals, ids, n, shape.vocab,
              padding_id);
  // Keys are at most `vocab` (the skip sentinel): sort only the digits that can be non-zero.
  const int key_bits = std::bit_width(static_cast<uint64_t>(shape.vocab));
  for (int shift = 0; shift < key_bits; shift += detail::kRadixBits) {
    COCO_LAUNCH(detail::radix_histogram_kernel, dim3(layout.chunks), dim3(detail::kSortChunk), 0, stream, counts, keys,
                n, shift, layout.chunks);
    COCO_LAUNCH(detail::exclusive_scan_kernel, dim3(1), dim3(detail::kScanThreads), 0, stream, counts,
                static_cast<uint32_t>(detail::kRadixBins * layout.chunks));
    COCO_LAUNCH(detail::radix_scatter_kernel, dim3(layout.chunks), dim3(detail::kSortChunk), 0, stream, keys_spare,
                vals_spare, keys, vals, counts, n, shift, layout.chunks);
    std::swap(keys, keys_spare);
    std::swap(vals, vals_spare);
  }
  COCO_LAUNCH(detail::find_runs_kernel, dim3(1), dim3(detail::kScanThreads), 0, stream, run_starts, run_count, keys, n,
              static_cast<uint32_t>(shape.vocab));
  const dim3 grid(ceil_div(shape.dim, detail::kGradTileColumns),
                  static_cast<unsigned>(std::min<int64_t>(n, detail::kMaxRunBlocks)));
  COCO_LAUNCH((detail::embedding_token_grad_kernel<T, GradT>), grid,
              dim3(detail::kGradTileColumns, detail::kGradTileRows), 0, stream, dtok, dout, keys, vals, run_starts,
              run_count, shape.dim);
}

#define COCO_INSTANTIATE_EMBEDDING_CUDA(T)                                                                     \
  template void embedding_forward<T>(T*, const int32_t*, const T*, const T*, const EmbeddingShape&, uint32_t*, \
                                     cudaStream_t);
#define COCO_INSTANTIATE_EMBEDDING_BACKWARD_CUDA(T, GradT)                                                             \
  template void embedding_backward<T, GradT>(GradT*, GradT*, const T*, const int32_t*, const EmbeddingShape&, int64_t, \
                                             void*, cudaStream_t);
COCO_INSTANTIATE_EMBEDDING_CUDA(float)
COCO_INSTANTIATE_EMBEDDING_CUDA(__nv_bfloat16)
COCO_INSTANTIATE_EMBEDDING_CUDA(__half)
COCO_INSTANTIATE_EMBEDDING_BACKWARD_CUDA(float, float)
COCO_INSTANTIATE_EMBEDDING_BACKWARD_CUDA(__nv_bfloat16, float)
COCO_INSTANTIATE_EMBEDDING_BACKWARD_CUDA(__nv_bfloat16, __nv_bfloat16)
COCO_INSTANTIATE_EMBEDDING_BACKWARD_CUDA(__half, float)
COCO_INSTANTIATE_EMBEDDING_BACKWARD_CUDA(__half, __half)
#undef COCO_INSTANTIATE_EMBEDDING_CUDA
#undef COCO_INSTANTIATE_EMBEDDING_BACKWARD_CUDA

}  // namespace coco::kernels::cuda
