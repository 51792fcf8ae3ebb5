// CUDA fused vocabulary cross-entropy (semantics in kernels/cross_entropy.h).
//
// Forward: three launches on the stream.
//   1. count_targets_kernel (1 block): contributing / invalid rows, zeroes the correct count.
//   2. cross_entropy_rows_kernel (one block per row): a single sweep over the row keeps a running
//      (max, sum of exp(x - max)) pair and the running argmax per thread; a fixed-shape warp/block
//      tree combines them. Optionally a second sweep over the same row (still in L2) writes dlogits.
//   3. reduce_row_losses_kernel (1 block): sum_i w_i * ce_i in a fixed order (deterministic).
// Backward: one block per row, one read and one write of the row.
//
// Memory access (kernels/vector_access.cuh): the rows are long (the vocabulary) and the work per
// logit small, so the sweeps move 16 bytes per thread per access where they can.
//   - The statistics sweep gives thread t the packs of N = kPackElements<T> logits t, t + 256, ... in
//     element order, read 128 bits at a time when the row starts on a pack boundary and element by
//     element otherwise: the same order either way, so a row's statistics do not depend on where it
//     sits in memory. (A vocabulary that is not a multiple of N leaves only some rows aligned, e.g.
//     every 2nd f32 / 4th bf16 row of BERT's 30522.)
//   - The gradient and zero writes are per element, so every row takes 128-bit accesses between its
//     first and last pack boundary when logits and dlogits share the offset within a pack (always
//     when they alias); the few elements outside go one by one.
#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/device_convert.cuh"
#include "kernels/online_logsumexp.cuh"
#include "kernels/cross_entropy.h"
#include "kernels/vector_access.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kRowThreads = 256;  // threads per row block
constexpr int kRowWarps = kRowThreads / 32;
constexpr int64_t kMaxRowBlocks = 65535;  // more rows loop inside the kernel
constexpr int kReduceThreads = 256;       // single-block count / loss reductions
constexpr int kScaleThreads = 256;
constexpr int64_t kMaxScaleBlocks = 4096;

__device__ __forceinline__ bool row_contributes(int32_t target, int32_t ignore_index, int vocab) {
  return target != ignore_index && target >= 0 && target < vocab;
}

// Running softmax statistics and argmax of a set of logits. The sum of exp(x - max) is kept as
// 1 + rest, the 1 being the maximum's own term, so that log(sum) = log1p(rest) stays accurate when
// one logit dominates (a loss near zero keeps its relative precision). An empty set has rest = -1.
using RowState = LogSumExpState;

__device__ __forceinline__ RowState empty_row_state() { return empty_logsumexp_state(); }

// Every thread of the block gets the combined state. Contains two __syncthreads (call uniformly).
__device__ RowState block_reduce_row_state(RowState s, RowState* warp_states, RowState* result) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    RowState other;
    other.max = __shfl_xor_sync(0xffffffffu, s.max, offset);
    other.rest = __shfl_xor_sync(0xffffffffu, s.rest, offset);
    other.best_value = __shfl_xor_sync(0xffffffffu, s.best_value, offset);
    other.best_index = __shfl_xor_sync(0xffffffffu, s.best_index, offset);
    merge(s, other);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_states[warp] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    RowState total = warp_states[0];
    for (int w = 1; w < kRowWarps; ++w) merge(total, warp_states[w]);
    *result = total;
  }
  __syncthreads();
  return *result;
}

// dx[j] = scale * (exp(x[j] - lse) - [j == target]) for j < vocab; dx may alias x.
template <class T>
__device__ __forceinline__ void write_row_gradient(const T* x, T* dx, int vocab, int target, float lse, float scale) {
  constexpr int N = kPackElements<T>;
  for_each_aligned_pack_of_worker<N>(x, vocab, same_pack_offset<N>(x, dx), static_cast<int>(threadIdx.x),
                                     static_cast<int>(blockDim.x), [&](auto width, int j) {
                                       constexpr int W = decltype(width)::value;
                                       const Pack<T, W> v = load_pack<W>(x + j);
                                       Pack<T, W> g;
#pragma unroll
                                       for (int k = 0; k < W; ++k) {
                                         const float p = expf(to_f32(v.v[k]) - lse);
                                         g.v[k] = from_f32<T>(scale * (p - (j + k == target ? 1.0f : 0.0f)));
                                       }
                                       store_pack<W>(dx + j, g);
                                     });
}

template <class T>
__device__ __forceinline__ void zero_row(T* dx, int vocab) {
  constexpr int N = kPackElements<T>;
  for_each_aligned_pack_of_worker<N>(dx, vocab, true, static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x),
                                     [&](auto width, int j) {
                                       constexpr int W = decltype(width)::value;
                                       Pack<T, W> z;
#pragma unroll
                                       for (int k = 0; k < W; ++k) z.v[k] = from_f32<T>(0.0f);
                                       store_pack<W>(dx + j, z);
                                     });
}

// The row's running statistics over this thread's packs (see the top of the file).
template <class T>
__device__ __forceinline__ RowState absorb_row(const T* x, int vocab) {
  constexpr int N = kPackElements<T>;
  RowState s = empty_row_state();
  for_each_pack_of_worker<N>(vocab, pack_aligned<N>(x), static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x),
                             [&](auto width, int64_t j) {
                               constexpr int W = decltype(width)::value;
                               const Pack<T, W> v = load_pack<W>(x + j);
#pragma unroll
                               for (int k = 0; k < W; ++k) absorb(s, to_f32(v.v[k]), static_cast<int>(j) + k);
                             });
  return s;
}

__device__ __forceinline__ float mean_denominator(int reduction, const int32_t* counts) {
  const int32_t n = counts[kCountRows];
  return reduction == static_cast<int>(LossReduction::mean) ? static_cast<float>(n > 0 ? n : 1) : 1.0f;
}

// targets: (rows) -> counts[kCountRows], counts[kCountInvalid]; counts[kCountCorrect] = 0.
// One block of kReduceThreads.
__global__ void __launch_bounds__(kReduceThreads)
    count_targets_kernel(const int32_t* __restrict__ targets, int64_t rows, int vocab, int32_t ignore_index,
                         int32_t* __restrict__ counts) {
  __shared__ int32_t valid_partial[kReduceThreads];
  __shared__ int32_t invalid_partial[kReduceThreads];
  int32_t valid = 0, invalid = 0;
  for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) {
    const int32_t t = targets[i];
    if (row_contributes(t, ignore_index, vocab))
      ++valid;
    else if (t != ignore_index)
      ++invalid;
  }
  valid_partial[threadIdx.x] = valid;
  invalid_partial[threadIdx.x] = invalid;
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) {
      valid_partial[threadIdx.x] += valid_partial[threadIdx.x + half];
      invalid_partial[threadIdx.x] += invalid_partial[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    counts[kCountCorrect] = 0;
    counts[kCountRows] = valid_partial[0];
    counts[kCountInvalid] = invalid_partial[0];
  }
}

// logits: (rows, vocab), targets: (rows), row_weights: (rows) or null
// -> row_loss (rows), row_lse (rows), counts[kCountCorrect] += correct rows;
// kWriteGrad: also dlogits (rows, vocab) for upstream gradient dlogits_scale (may alias logits).
template <class T, bool kWriteGrad>
__global__ void __launch_bounds__(kRowThreads)
    cross_entropy_rows_kernel(const T* logits, const int32_t* __restrict__ targets,
                              const float* __restrict__ row_weights, int64_t rows, int vocab, int32_t ignore_index,
                              int reduction, float* __restrict__ row_loss, float* __restrict__ row_lse, int32_t* counts,
                              T* dlogits, float dlogits_scale) {
  __shared__ RowState warp_states[kRowWarps];
  __shared__ RowState row_state;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* x = logits + row * vocab;
    const int32_t target = targets[row];
    const bool counted = row_contributes(target, ignore_index, vocab);
    // Read before the block reduction: with dlogits == logits other threads overwrite the row
    // right after it.
    const float target_logit = (counted && threadIdx.x == 0) ? to_f32(x[target]) : 0.0f;
    RowState s = block_reduce_row_state(absorb_row(x, vocab), warp_states, &row_state);
    const float lse = logsumexp_of(s);
    if (threadIdx.x == 0) {
      row_lse[row] = lse;
      // (max - x_t) + log1p(rest) rather than lse - x_t: exact cancellation when x_t is the
      // maximum, whatever the logits' magnitude, and a small loss keeps its relative precision.
      row_loss[row] = counted ? (lse != lse ? lse : (s.max - target_logit) + log1pf(s.rest)) : 0.0f;
      if (counted && s.best_index == target) atomicAdd(&counts[kCountCorrect], 1);
    }
    if constexpr (kWriteGrad) {
      T* dx = dlogits + row * vocab;
      if (counted) {
        const float weight = row_weights ? row_weights[row] : 1.0f;
        write_row_gradient(x, dx, vocab, target, lse, dlogits_scale * weight / mean_denominator(reduction, counts));
      } else {
        zero_row(dx, vocab);
      }
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kRowThreads)
    cross_entropy_backward_kernel(const T* logits, const int32_t* __restrict__ targets,
                                  const float* __restrict__ row_weights, const float* __restrict__ row_lse,
                                  const int32_t* __restrict__ counts, int64_t rows, int vocab, int32_t ignore_index,
                                  int reduction, const float* __restrict__ dloss, T* dlogits) {
  const float upstream = *dloss;
  const float denom = mean_denominator(reduction, counts);
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int32_t target = targets[row];
    T* dx = dlogits + row * vocab;
    if (!row_contributes(target, ignore_index, vocab)) {
      zero_row(dx, vocab);
      continue;
    }
    const float weight = row_weights ? row_weights[row] : 1.0f;
    write_row_gradient(logits + row * vocab, dx, vocab, target, row_lse[row], upstream * weight / denom);
  }
}

// loss = sum over contributing rows of w_i * row_loss_i / denom, summed in a fixed order.
// One block of kReduceThreads.
__global__ void __launch_bounds__(kReduceThreads)
    reduce_row_losses_kernel(const float* __restrict__ row_loss, const int32_t* __restrict__ targets,
                             const float* __restrict__ row_weights, int64_t rows, int vocab, int32_t ignore_index,
                             int reduction, const int32_t* __restrict__ counts, float* __restrict__ loss) {
  __shared__ double partial[kReduceThreads];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) {
    if (!row_contributes(targets[i], ignore_index, vocab)) continue;
    const double weight = row_weights ? static_cast<double>(row_weights[i]) : 1.0;
    sum += weight * static_cast<double>(row_loss[i]);
  }
  partial[threadIdx.x] = sum;
  __syncthreads();
  for (int half = kReduceThreads / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const int32_t contributing = counts[kCountRows];
    *loss = contributing > 0 ? static_cast<float>(partial[0] / static_cast<double>(mean_denominator(reduction, counts)))
                             : 0.0f;
  }
}

template <class T>
__global__ void __launch_bounds__(kScaleThreads) scale_kernel(T* values, int64_t n, const float* __restrict__ scale) {
  const float s = *scale;
  map_elements(
      n, [s](int64_t, T v) { return from_f32<T>(to_f32(v) * s); }, values, static_cast<const T*>(values));
}

void check_sizes(int64_t rows, int64_t vocab, const char* op) {
  if (rows < 0 || vocab < 1 || vocab > INT_MAX || rows > INT_MAX)
    throw std::invalid_argument(std::string(op) + ": expected 0 <= rows <= 2^31-1 and 1 <= vocab <= 2^31-1, got rows " +
                                std::to_string(rows) + ", vocab " + std::to_string(vocab));
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(std::min(rows, kMaxRowBlocks)); }

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, const float* row_weights, int64_t rows,
                           int64_t vocab, int32_t ignore_index, LossReduction reduction, float* loss, float* row_loss,
                           float* row_lse, int32_t* counts, T* dlogits, float dlogits_scale, cudaStream_t stream) {
  detail::check_sizes(rows, vocab, "kernels::cuda::cross_entropy_forward");
  const int v = static_cast<int>(vocab);
  const int mode = static_cast<int>(reduction);
  COCO_LAUNCH(detail::count_targets_kernel, dim3(1), dim3(detail::kReduceThreads), 0, stream, targets, rows, v,
              ignore_index, counts);
  if (rows > 0) {
    if (dlogits)
      COCO_LAUNCH((detail::cross_entropy_rows_kernel<T, true>), dim3(detail::row_blocks(rows)),
                  dim3(detail::kRowThreads), 0, stream, logits, targets, row_weights, rows, v, ignore_index, mode,
                  row_loss, row_lse, counts, dlogits, dlogits_scale);
    else
      COCO_LAUNCH((detail::cross_entropy_rows_kernel<T, false>), dim3(detail::row_blocks(rows)),
                  dim3(detail::kRowThreads), 0, stream, logits, targets, row_weights, rows, v, ignore_index, mode,
                  row_loss, row_lse, counts, dlogits, dlogits_scale);
  }
  COCO_LAUNCH(detail::reduce_row_losses_kernel, dim3(1), dim3(detail::kReduceThreads), 0, stream, row_loss, targets,
              row_weights, rows, v, ignore_index, mode, counts, loss);
}

template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const float* row_weights, const float* row_lse,
                            const int32_t* counts, int64_t rows, int64_t vocab, int32_t ignore_index,
                            LossReduction reduction, const float* dloss, T* dlogits, cudaStream_t stream) {
  detail::check_sizes(rows, vocab, "kernels::cuda::cross_entropy_backward");
  if (rows == 0) return;
  COCO_LAUNCH(detail::cross_entropy_backward_kernel<T>, dim3(detail::row_blocks(rows)), dim3(detail::kRowThreads), 0,
              stream, logits, targets, row_weights, row_lse, counts, rows, static_cast<int>(vocab), ignore_index,
              static_cast<int>(reduction), dloss, dlogits);
}

template <class T>
void scale_by_device_scalar(T* values, int64_t n, const float* scale, cudaStream_t stream) {
  if (n < 0) throw std::invalid_argument("kernels::cuda::scale_by_device_scalar: negative count " + std::to_string(n));
  if (n == 0) return;
  const unsigned blocks = detail::pack_grid<T>(n, detail::kScaleThreads, detail::kMaxScaleBlocks);
  COCO_LAUNCH(detail::scale_kernel<T>, dim3(blocks), dim3(detail::kScaleThreads), 0, stream, values, n, scale);
}

#define COCO_INSTANTIATE_CE(T)                                                                                       \
  template void cross_entropy_forward<T>(const T*, const int32_t*, const float*, int64_t, int64_t, int32_t,          \
                                         LossReduction, float*, float*, float*, int32_t*, T*, float, cudaStream_t);  \
  template void cross_entropy_backward<T>(const T*, const int32_t*, const float*, const float*, const int32_t*,      \
                                          int64_t, int64_t, int32_t, LossReduction, const float*, T*, cudaStream_t); \
  template void scale_by_device_scalar<T>(T*, int64_t, const float*, cudaStream_t);
COCO_INSTANTIATE_CE(float)
COCO_INSTANTIATE_CE(__nv_bfloat16)
COCO_INSTANTIATE_CE(__half)
#undef COCO_INSTANTIATE_CE

}  // namespace coco::kernels::cuda
