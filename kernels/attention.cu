// CUDA attention, first version: strided-batched GEMMs (kernels/matmul.h, one batch entry per (b, h))
// around fused row kernels.
//
// Forward:   S = Dh^-0.5 Q K^T (f32)  ->  probs kernel: + bias, key mask, softmax, dropout  ->  O = P_drop V
// Backward:  P_drop (regenerated)  ->  dV = P_drop^T dO;  dP_drop = dO V^T (f32)
//            -> probs backward kernel: dropout, softmax backward, dbias (batch-ordered sum)
//            -> dQ = Dh^-0.5 dS K;  dK = Dh^-0.5 dS^T Q
// The row kernels give one warp per row of T scores (any T: lanes stride over the row) and reduce
// with fixed butterflies, so every output is deterministic.
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/runtime/cuda_calls.h"
#include "engine/runtime/launch.cuh"
#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "kernels/softmax_reduce.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kRowsPerBlock = 4;  // one warp per row
constexpr int kElementwiseThreads = 256;
constexpr int64_t kMaxElementwiseBlocks = 8192;

// P rounded to T, then the kept value rounded to T: the CPU reference forms P_drop the same way.
template <class T>
__device__ __forceinline__ T dropped_probability(T p, const AttentionDropout& dropout, float keep_scale,
                                                 uint64_t index) {
  using Acc = AccumulatorOf<T>;
  if (!dropout_keeps(dropout.stream, index, dropout.p)) return convert_element<T>(0.0f);
  return convert_element<T>(convert_element<Acc>(p) * static_cast<Acc>(keep_scale));
}

// scores: (B, H, T, T) Acc, already scaled; key_mask: (B, T) or null; bias: (H, T, T) or null
// -> probs: (B, H, T, T); dropped: (B, H, T, T) or null (written when dropout is active).
template <class T, class Mask>
__global__ void __launch_bounds__(kRowsPerBlock* kWarpSize)
    attention_probs_forward_kernel(const AccumulatorOf<T>* scores, const Mask* key_mask, const T* bias, T* probs,
                                   T* dropped, int64_t rows, int64_t heads, int64_t seq_len, AttentionDropout dropout,
                                   float keep_scale) {
  using Acc = AccumulatorOf<T>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= rows) return;  // whole warps leave together
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int64_t i = row % seq_len;
  const int64_t bh = row / seq_len;
  const int64_t h = bh % heads, b = bh / heads;
  const Acc* score_row = scores + row * seq_len;
  const T* bias_row = bias ? bias + (h * seq_len + i) * seq_len : nullptr;
  const Mask* mask_row = key_mask ? key_mask + b * seq_len : nullptr;
  auto logit = [&](int64_t j) {
    if (mask_row && mask_row[j] == 0) return -static_cast<Acc>(INFINITY);
    Acc s = score_row[j];
    if (bias_row) s += load_as<Acc>(bias_row + j);
    return s;
  };
  SoftmaxStats<Acc> st = softmax_stats_empty<Acc>();
  for (int64_t j = lane; j < seq_len; j += kWarpSize) softmax_stats_add(st, logit(j));
  st = warp_merge_stats(st);
  const Acc inv_sum = Acc(1) / st.sum;
  T* prob_row = probs + row * seq_len;
  for (int64_t j = lane; j < seq_len; j += kWarpSize) {
    const T p = convert_element<T>(softmax_value(logit(j), st, inv_sum));
    prob_row[j] = p;
    if (dropped)
      dropped[row * seq_len + j] =
          dropped_probability(p, dropout, keep_scale, static_cast<uint64_t>(row * seq_len + j));
  }
}

// probs -> dropped, both (B, H, T, T) flattened to n elements.
template <class T>
__global__ void __launch_bounds__(kElementwiseThreads)
    attention_dropout_kernel(const T* probs, T* dropped, int64_t n, AttentionDropout dropout, float keep_scale) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride)
    dropped[e] = dropped_probability(probs[e], dropout, keep_scale, static_cast<uint64_t>(e));
}

// One warp per (h, i), looping over the batch in order so that dbias[h, i, :] is a deterministic sum.
//   dprobs_dropped: (B, H, T, T) Acc (= dO V^T); probs: (B, H, T, T)
//   -> dscores: (B, H, T, T) (dS, unscaled); dbias: (H, T, T) Acc or null
template <class T>
__global__ void __launch_bounds__(kRowsPerBlock* kWarpSize)
    attention_probs_backward_kernel(const AccumulatorOf<T>* dprobs_dropped, const T* probs, T* dscores,
                                    AccumulatorOf<T>* dbias, bool accumulate_dbias, int64_t batch, int64_t heads,
                                    int64_t seq_len, AttentionDropout dropout, float keep_scale) {
  using Acc = AccumulatorOf<T>;
  const int64_t head_row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (head_row >= heads * seq_len) return;
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int64_t h = head_row / seq_len, i = head_row % seq_len;
  Acc* dbias_row = dbias ? dbias + head_row * seq_len : nullptr;
  const bool use_dropout = dropout.active();
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t offset = ((b * heads + h) * seq_len + i) * seq_len;
    // g_j = dP_j = dP_drop_j * keep_j / (1 - p)
    auto grad_of = [&](int64_t j) {
      const Acc g = dprobs_dropped[offset + j];
      if (!use_dropout) return g;
      return dropout_keeps(dropout.stream, static_cast<uint64_t>(offset + j), dropout.p)
                 ? g * static_cast<Acc>(keep_scale)
                 : Acc(0);
    };
    Acc partial = Acc(0);
    for (int64_t j = lane; j < seq_len; j += kWarpSize) partial += grad_of(j) * load_as<Acc>(probs + offset + j);
    const Acc dot = warp_sum(partial);
    for (int64_t j = lane; j < seq_len; j += kWarpSize) {
      const Acc ds = load_as<Acc>(probs + offset + j) * (grad_of(j) - dot);
      dscores[offset + j] = convert_element<T>(ds);
      if (dbias_row) dbias_row[j] = (b == 0 && !accumulate_dbias) ? ds : dbias_row[j] + ds;
    }
  }
}

// ---- Fused (flash-style) forward: no (B, H, T, T) intermediates.
// One block of 4 warps per (query tile of kFlashQueryRows rows, b, h). Q of the tile, then each tile of
// kFlashKeyCols keys and values, are staged in shared memory as Acc. A warp owns 4 query rows; lane j
// scores key j of the tile, the warp merges the tile's (max, sum) into the row's running statistics
// (kernels/softmax_math.h, so special values behave exactly as in the unfused path), rescales the
// output accumulators and adds P_drop . V with lane-owned output dimensions d = lane + 32 t.
constexpr int kFlashQueryRows = 16;
constexpr int kFlashKeyCols = kWarpSize;
constexpr int kFlashWarps = 4;
constexpr int kFlashRowsPerWarp = kFlashQueryRows / kFlashWarps;
constexpr int kFlashDimsPerLane = 4;                // head_dim <= 4 * 32
constexpr size_t kFlashMaxSharedBytes = 48 * 1024;  // default dynamic shared memory limit per block

template <class Acc>
size_t flash_forward_smem_bytes(int64_t head_dim) {
  // Qs [rows][Dh], Ks [cols][Dh + 1] (odd stride: lanes read different banks), Vs [cols][Dh], Ps [warps][cols]
  return sizeof(Acc) * static_cast<size_t>(kFlashQueryRows * head_dim + kFlashKeyCols * (head_dim + 1) +
                                           kFlashKeyCols * head_dim + kFlashWarps * kFlashKeyCols);
}

// q, k, v: (B, H, T, Dh); key_mask: (B, T) or null; bias: (H, T, T) or null
// -> out: (B, H, T, Dh); lse: (B, H, T) log-sum-exp of each query's scores, or null.
// grid: (ceil(T / kFlashQueryRows), B * H), block: kFlashWarps * 32.
template <class T, class Mask>
__global__ void __launch_bounds__(kFlashWarps* kWarpSize)
    flash_attention_forward_kernel(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias, T* out,
                                   AccumulatorOf<T>* lse, int64_t heads, int64_t seq_len, int64_t head_dim,
                                   AccumulatorOf<T> scale, AttentionDropout dropout, float keep_scale) {
  using Acc = AccumulatorOf<T>;
  Acc* q_tile = dynamic_smem<Acc>();
  Acc* k_tile = q_tile + kFlashQueryRows * head_dim;
  const int64_t k_stride = head_dim + 1;
  Acc* v_tile = k_tile + kFlashKeyCols * k_stride;
  Acc* p_rows = v_tile + kFlashKeyCols * head_dim;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize, lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t bh = blockIdx.y, h = bh % heads, b = bh / heads;
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kFlashQueryRows;
  const int64_t base = bh * seq_len * head_dim;
  const Mask* mask_row = key_mask ? key_mask + b * seq_len : nullptr;
  const bool use_dropout = dropout.active();

  for (int64_t e = threadIdx.x; e < kFlashQueryRows * head_dim; e += blockDim.x) {
    const int64_t i = q0 + e / head_dim;
    q_tile[e] = i < seq_len ? load_as<Acc>(q + base + i * head_dim + e % head_dim) : Acc(0);
  }
  // Fully unrolled loops below keep these in registers.
  SoftmaxStats<Acc> stats[kFlashRowsPerWarp];
  Acc acc[kFlashRowsPerWarp][kFlashDimsPerLane];
#pragma unroll
  for (int r = 0; r < kFlashRowsPerWarp; ++r) {
    stats[r] = softmax_stats_empty<Acc>();
#pragma unroll
    for (int t = 0; t < kFlashDimsPerLane; ++t) acc[r][t] = Acc(0);
  }
  for (int64_t k0 = 0; k0 < seq_len; k0 += kFlashKeyCols) {
    __syncthreads();  // the previous tile is no longer read (and Q is staged, on the first pass)
    for (int64_t e = threadIdx.x; e < kFlashKeyCols * head_dim; e += blockDim.x) {
      const int64_t j = k0 + e / head_dim, d = e % head_dim;
      const bool inside = j < seq_len;
      k_tile[(e / head_dim) * k_stride + d] = inside ? load_as<Acc>(k + base + j * head_dim + d) : Acc(0);
      v_tile[e] = inside ? load_as<Acc>(v + base + j * head_dim + d) : Acc(0);
    }
    __syncthreads();
    const int64_t j = k0 + lane;
    const bool key_attends = j < seq_len && !(mask_row && mask_row[j] == 0);
#pragma unroll
    for (int r = 0; r < kFlashRowsPerWarp; ++r) {
      const int row_in_tile = warp * kFlashRowsPerWarp + r;
      const int64_t i = q0 + row_in_tile;
      if (i >= seq_len) continue;  // uniform across the warp
      Acc s = -static_cast<Acc>(INFINITY);
      if (key_attends) {
        Acc dot = Acc(0);
        for (int64_t d = 0; d < head_dim; ++d) dot += q_tile[row_in_tile * head_dim + d] * k_tile[lane * k_stride + d];
        s = dot * scale;
        if (bias) s += load_as<Acc>(bias + (h * seq_len + i) * seq_len + j);
      }
      SoftmaxStats<Acc> tile = softmax_stats_empty<Acc>();
      softmax_stats_add(tile, s);
      tile = warp_merge_stats(tile);
      const SoftmaxStats<Acc> merged = softmax_stats_merge(stats[r], tile);
      // Equal maxima (both -Inf or both +Inf included) keep the accumulators as they are.
      const Acc rescale = merged.max == stats[r].max ? Acc(1) : softmax_exp(stats[r].max - merged.max);
      stats[r] = merged;
      Acc p = s == -static_cast<Acc>(INFINITY) ? Acc(0) : softmax_exp(s - merged.max);
      if (use_dropout)
        p = dropout_keeps(dropout.stream, static_cast<uint64_t>((bh * seq_len + i) * seq_len + j), dropout.p)
                ? p * static_cast<Acc>(keep_scale)
                : Acc(0);
      p_rows[warp * kFlashKeyCols + lane] = p;
      __syncwarp();
#pragma unroll
      for (int t = 0; t < kFlashDimsPerLane; ++t) {
        const int64_t d = lane + static_cast<int64_t>(t) * kWarpSize;
        if (d < head_dim) {
          Acc sum = acc[r][t] * rescale;
          for (int jj = 0; jj < kFlashKeyCols; ++jj)
            sum += p_rows[warp * kFlashKeyCols + jj] * v_tile[jj * head_dim + d];
          acc[r][t] = sum;
        }
      }
      __syncwarp();  // p_rows is rewritten for the next row
    }
  }
#pragma unroll
  for (int r = 0; r < kFlashRowsPerWarp; ++r) {
    const int64_t i = q0 + warp * kFlashRowsPerWarp + r;
    if (i >= seq_len) continue;
    const bool empty = softmax_row_empty(stats[r]);
    const Acc inv_sum = Acc(1) / stats[r].sum;
#pragma unroll
    for (int t = 0; t < kFlashDimsPerLane; ++t) {
      const int64_t d = lane + static_cast<int64_t>(t) * kWarpSize;
      if (d < head_dim) store_from(out + base + i * head_dim + d, empty ? Acc(0) : acc[r][t] * inv_sum);
    }
    if (lse && lane == 0)
      lse[bh * seq_len + i] = empty ? -static_cast<Acc>(INFINITY) : stats[r].max + softmax_log(stats[r].sum);
  }
}

unsigned elementwise_blocks(int64_t n) {
  const int64_t blocks = (n + kElementwiseThreads - 1) / kElementwiseThreads;
  return static_cast<unsigned>(blocks < kMaxElementwiseBlocks ? blocks : kMaxElementwiseBlocks);
}

void check_grid_rows(int64_t rows, const char* op) {
  if (rows / kRowsPerBlock + 1 > (int64_t{1} << 31) - 1)
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(rows) + " score rows exceed the grid limit");
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T, class Mask>
void attention_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias,
                       const AttentionShape& shape, const AttentionDropout& dropout, T* out, T* probs,
                       AttentionAccumulator<T>* score_workspace, T* prob_workspace, cudaStream_t stream) {
  using Acc = AttentionAccumulator<T>;
  const char* op = "kernels::cuda::attention_forward";
  check_attention_arguments(shape, dropout, op);
  const int64_t L = shape.seq_len, D = shape.head_dim, batches = shape.batch * shape.heads;
  if (batches == 0 || L == 0) return;
  if (dropout.active() && prob_workspace == nullptr)
    throw std::invalid_argument(std::string(op) + ": dropout is active but no prob_workspace was given");
  const int64_t rows = batches * L;
  detail::check_grid_rows(rows, op);
  const double scale = D > 0 ? 1.0 / std::sqrt(static_cast<double>(D)) : 1.0;

  // S = scale * Q K^T: per (b, h), (T, Dh) . (T, Dh)^T -> (T, T) in f32.
  gemm_strided_batched<T, Acc>(false, true, L, L, D, scale, q, D, L * D, k, D, L * D, 0.0, score_workspace, L, L * L,
                               batches, stream);
  T* dropped = dropout.active() ? prob_workspace : nullptr;
  COCO_LAUNCH((detail::attention_probs_forward_kernel<T, Mask>), dim3(ceil_div(rows, detail::kRowsPerBlock)),
              dim3(detail::kRowsPerBlock * detail::kWarpSize), 0, stream, score_workspace, key_mask, bias, probs,
              dropped, rows, shape.heads, L, dropout, dropout.active() ? detail::dropout_keep_scale(dropout.p) : 1.0f);
  // O = P_drop V: (T, T) . (T, Dh) -> (T, Dh)
  gemm_strided_batched<T, T>(false, false, L, D, L, 1.0, dropped ? dropped : probs, L, L * L, v, D, L * D, 0.0, out, D,
                             L * D, batches, stream);
}

template <class T>
void attention_backward(const T* q, const T* k, const T* v, const T* probs, const T* dout, const AttentionShape& shape,
                        const AttentionDropout& dropout, T* dq, T* dk, T* dv, AttentionAccumulator<T>* dbias,
                        bool accumulate_dbias, AttentionAccumulator<T>* score_workspace, T* prob_workspace,
                        cudaStream_t stream) {
  using Acc = AttentionAccumulator<T>;
  const char* op = "kernels::cuda::attention_backward";
  check_attention_arguments(shape, dropout, op);
  const int64_t L = shape.seq_len, D = shape.head_dim, batches = shape.batch * shape.heads;
  if (L == 0 || shape.heads == 0) return;
  if (batches == 0) {
    if (dbias && !accumulate_dbias)
      COCO_CUDA_CHECK(
          runtime::memset_async(dbias, 0, static_cast<size_t>(shape.bias_elements()) * sizeof(Acc), stream));
    return;
  }
  if (score_workspace == nullptr || prob_workspace == nullptr)
    throw std::invalid_argument(std::string(op) + ": both workspaces are required");
  detail::check_grid_rows(batches * L, op);
  const double scale = D > 0 ? 1.0 / std::sqrt(static_cast<double>(D)) : 1.0;
  const float keep_scale = dropout.active() ? detail::dropout_keep_scale(dropout.p) : 1.0f;

  // dV = P_drop^T dO: (T, T)^T . (T, Dh) -> (T, Dh). prob_workspace holds P_drop until dS replaces it.
  if (dv) {
    const T* dropped = probs;
    if (dropout.active()) {
      const int64_t n = shape.score_elements();
      COCO_LAUNCH(detail::attention_dropout_kernel<T>, dim3(detail::elementwise_blocks(n)),
                  dim3(detail::kElementwiseThreads), 0, stream, probs, prob_workspace, n, dropout, keep_scale);
      dropped = prob_workspace;
    }
    gemm_strided_batched<T, T>(true, false, L, D, L, 1.0, dropped, L, L * L, dout, D, L * D, 0.0, dv, D, L * D, batches,
                               stream);
  }
  if (!dq && !dk && !dbias) return;
  // dP_drop = dO V^T: (T, Dh) . (T, Dh)^T -> (T, T) in f32.
  gemm_strided_batched<T, Acc>(false, true, L, L, D, 1.0, dout, D, L * D, v, D, L * D, 0.0, score_workspace, L, L * L,
                               batches, stream);
  COCO_LAUNCH(detail::attention_probs_backward_kernel<T>, dim3(ceil_div(shape.heads * L, detail::kRowsPerBlock)),
              dim3(detail::kRowsPerBlock * detail::kWarpSize), 0, stream, score_workspace, probs, prob_workspace, dbias,
              accumulate_dbias, shape.batch, shape.heads, L, dropout, keep_scale);
  // dQ = scale dS K: (T, T) . (T, Dh);  dK = scale dS^T Q: (T, T)^T . (T, Dh)
  if (dq)
    gemm_strided_batched<T, T>(false, false, L, D, L, scale, prob_workspace, L, L * L, k, D, L * D, 0.0, dq, D, L * D,
                               batches, stream);
  if (dk)
    gemm_strided_batched<T, T>(true, false, L, D, L, scale, prob_workspace, L, L * L, q, D, L * D, 0.0, dk, D, L * D,
                               batches, stream);
}

template <class T, class Mask>
void flash_attention_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias,
                             const AttentionShape& shape, const AttentionDropout& dropout, T* out,
                             AttentionAccumulator<T>* lse, cudaStream_t stream) {
  using Acc = AttentionAccumulator<T>;
  const char* op = "kernels::cuda::flash_attention_forward";
  check_attention_arguments(shape, dropout, op);
  if (shape.head_dim > kFlashAttentionMaxHeadDim)
    throw std::invalid_argument(std::string(op) + ": head_dim " + std::to_string(shape.head_dim) + " exceeds " +
                                std::to_string(kFlashAttentionMaxHeadDim));
  const int64_t L = shape.seq_len, batches = shape.batch * shape.heads;
  if (batches == 0 || L == 0) return;
  if (batches > 65535)
    throw std::invalid_argument(std::string(op) + ": B*H = " + std::to_string(batches) +
                                " exceeds the grid limit 65535");
  const size_t smem = detail::flash_forward_smem_bytes<Acc>(shape.head_dim);
  if (smem > detail::kFlashMaxSharedBytes)
    throw std::invalid_argument(std::string(op) + ": head_dim " + std::to_string(shape.head_dim) + " needs " +
                                std::to_string(smem) + " bytes of shared memory, above the " +
                                std::to_string(detail::kFlashMaxSharedBytes) + " a block gets without opt-in");
  const Acc scale = shape.head_dim > 0 ? Acc(1) / std::sqrt(static_cast<Acc>(shape.head_dim)) : Acc(1);
  COCO_LAUNCH((detail::flash_attention_forward_kernel<T, Mask>),
              dim3(ceil_div(L, detail::kFlashQueryRows), static_cast<unsigned>(batches)),
              dim3(detail::kFlashWarps * detail::kWarpSize), smem, stream, q, k, v, key_mask, bias, out, lse,
              shape.heads, L, shape.head_dim, scale, dropout,
              dropout.active() ? detail::dropout_keep_scale(dropout.p) : 1.0f);
}

#define COCO_INSTANTIATE_ATTENTION_CUDA(T)                                                                     \
  template void attention_forward<T, uint8_t>(const T*, const T*, const T*, const uint8_t*, const T*,          \
                                              const AttentionShape&, const AttentionDropout&, T*, T*,          \
                                              AttentionAccumulator<T>*, T*, cudaStream_t);                     \
  template void attention_forward<T, int32_t>(const T*, const T*, const T*, const int32_t*, const T*,          \
                                              const AttentionShape&, const AttentionDropout&, T*, T*,          \
                                              AttentionAccumulator<T>*, T*, cudaStream_t);                     \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*, const AttentionShape&, \
                                      const AttentionDropout&, T*, T*, T*, AttentionAccumulator<T>*, bool,     \
                                      AttentionAccumulator<T>*, T*, cudaStream_t);                             \
  template void flash_attention_forward<T, uint8_t>(const T*, const T*, const T*, const uint8_t*, const T*,    \
                                                    const AttentionShape&, const AttentionDropout&, T*,        \
                                                    AttentionAccumulator<T>*, cudaStream_t);                   \
  template void flash_attention_forward<T, int32_t>(const T*, const T*, const T*, const int32_t*, const T*,    \
                                                    const AttentionShape&, const AttentionDropout&, T*,        \
                                                    AttentionAccumulator<T>*, cudaStream_t);
COCO_INSTANTIATE_ATTENTION_CUDA(float)
COCO_INSTANTIATE_ATTENTION_CUDA(double)
COCO_INSTANTIATE_ATTENTION_CUDA(__nv_bfloat16)
COCO_INSTANTIATE_ATTENTION_CUDA(__half)
#undef COCO_INSTANTIATE_ATTENTION_CUDA

}  // namespace coco::kernels::cuda
