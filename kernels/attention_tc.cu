// Tensor-core attention (kernels/attention_tc.h): FlashAttention-2 forward, deterministic backward.
//
// Warp tiling, shared by the three main kernels: a CTA has 4 warps and works on 64 rows (queries, or
// keys in the dK/dV kernel); warp w owns rows 16w..16w+15 and multiplies them against a 64-row tile of
// the other operand with mma.sync m16n8k16 (engine/runtime/ptx.cuh), so each warp holds a 16 x 64 f32
// score block: 8 column chunks of 8, 4 values per lane at rows g, g + 8 (g = lane / 4) and columns
// 2 (lane % 4) + {0, 1}. The scores are turned in registers into the A fragments of the next product
// (P V, dS K, P^T dO, dS^T Q), the FlashAttention-2 register reuse. Tiles are staged in shared memory
// with rows padded by 8 elements (16 bytes) so that the 8 rows an ldmatrix reads fall in different banks.
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/runtime/cuda_calls.h"
#include "engine/runtime/launch.cuh"
#include "engine/runtime/ptx.cuh"
#include "kernels/attention_tc.h"
#include "kernels/relpos.h"
#include "kernels/softmax_reduce.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kTcRows = 64;  // rows per CTA and per streamed tile
constexpr int kTcWarps = 4;
constexpr int kTcThreads = kTcWarps * 32;
constexpr int kTcChunks = kTcRows / 8;  // 8-column chunks of a warp's 16 x 64 score block
constexpr size_t kDefaultSharedLimit = 48 * 1024;
constexpr size_t kMaxSharedBytes = 227 * 1024;  // per block after opt-in (sm_80: 163 KB, checked by the launch)

// The second __launch_bounds__ argument per kernel and head dim: the CTAs per SM that the register
// file must hold, i.e. a cap of 65536 / (128 n) registers per thread: 128 (n = 4), 168 (3), 255 (2).
// Each is at or above what ptxas uses unconstrained at sm_80 and sm_90 (bench/README.md), so it costs no
// spills; code that grows past it then spills, which scripts/cu_check.sh fails, instead of silently
// losing occupancy.
enum class TcKernel { forward, dq, dkdv };
template <TcKernel Kernel, int D>
constexpr int tc_min_blocks() {
  if (D >= 128) return 2;
  if (D >= 64 || (Kernel == TcKernel::dq && D >= 32)) return 3;
  return 4;
}

template <int D>
constexpr int smem_stride() {
  return D + 8;
}

template <class T>
__device__ __forceinline__ float to_float(T v) {
  return convert_element<float>(v);
}

// Copies rows [0, valid_rows) of a (rows x D) row-major global tile into shared memory (row stride
// `stride`) with 16-byte cp.async; rows past valid_rows are zero-filled (src-size 0, a valid address).
template <class T, int D, int Rows = kTcRows>
__device__ __forceinline__ void load_tile_async(T* smem, const T* global, int64_t valid_rows, int stride) {
  constexpr int kChunksPerRow = D / 8;
  for (int c = static_cast<int>(threadIdx.x); c < Rows * kChunksPerRow; c += kTcThreads) {
    const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    const bool inside = r < valid_rows;
    ptx::cp_async_cg(smem + r * stride + col, global + static_cast<int64_t>(inside ? r : 0) * D + col,
                     inside ? 16u : 0u);
  }
}

// Double buffering: when there is a next tile, `prefetch` issues its cp.async loads into the other
// buffer and they are committed as one group; then this thread waits for the group of the current tile
// (all but the newest group). The caller's __syncthreads publishes the current tile to the CTA.
template <class Prefetch>
__device__ __forceinline__ void prefetch_next_and_wait(bool has_next, Prefetch&& prefetch) {
  if (has_next) {
    prefetch();
    ptx::cp_async_commit();
    ptx::cp_async_wait<1>();
  } else {
    ptx::cp_async_wait<0>();
  }
}

// acc (16 x N) += A B^T: A = 16 rows of `a` (K contiguous), B^T = the N rows of `b` (K contiguous).
template <class T, int K, int N = kTcRows>
__device__ __forceinline__ void warp_mma_abt(float (&acc)[N / 8][4], const T* a, const T* b, int stride) {
  const int lane = static_cast<int>(threadIdx.x % 32), m = lane / 8;
#pragma unroll
  for (int k0 = 0; k0 < K; k0 += 16) {
    uint32_t fa[4];
    // matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15) = a0..a3
    ptx::ldmatrix_x4(fa, a + (lane % 16) * stride + k0 + (lane / 16) * 8);
#pragma unroll
    for (int n0 = 0; n0 < N; n0 += 16) {
      uint32_t fb[4];
      // matrices (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15): b0b1, b2b3 of two chunks
      ptx::ldmatrix_x4(fb, b + (n0 + (m >> 1) * 8 + lane % 8) * stride + k0 + (m & 1) * 8);
      ptx::mma_m16n8k16<T>(acc[n0 / 8], fa, fb, acc[n0 / 8]);
      ptx::mma_m16n8k16<T>(acc[n0 / 8 + 1], fa, fb + 2, acc[n0 / 8 + 1]);
    }
  }
}

// acc (16 x N) += A B: A = the 16 x 16 fragment `fa` (k = k0..k0+15), B = rows k0..k0+15 of `b` (N contiguous).
template <class T, int N>
__device__ __forceinline__ void warp_mma_ab(float (&acc)[N / 8][4], const uint32_t (&fa)[4], const T* b, int stride,
                                            int k0) {
  const int lane = static_cast<int>(threadIdx.x % 32), m = lane / 8;
#pragma unroll
  for (int n0 = 0; n0 < N; n0 += 16) {
    uint32_t fb[4];
    // transposed matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15)
    ptx::ldmatrix_x4_trans(fb, b + (k0 + (m & 1) * 8 + lane % 8) * stride + n0 + (m >> 1) * 8);
    ptx::mma_m16n8k16<T>(acc[n0 / 8], fa, fb, acc[n0 / 8]);
    ptx::mma_m16n8k16<T>(acc[n0 / 8 + 1], fa, fb + 2, acc[n0 / 8 + 1]);
  }
}

// The A fragment (16 x 16, columns 16 kk .. 16 kk + 15) of a score block held as mma accumulators.
template <class T, int Chunks>
__device__ __forceinline__ void scores_to_a(const float (&s)[Chunks][4], int kk, uint32_t (&fa)[4]) {
  fa[0] = ptx::pack2<T>(s[2 * kk][0], s[2 * kk][1]);
  fa[1] = ptx::pack2<T>(s[2 * kk][2], s[2 * kk][3]);
  fa[2] = ptx::pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
  fa[3] = ptx::pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
}

template <class Mask>
__device__ __forceinline__ bool key_attends(const Mask* mask_row, int64_t j) {
  return mask_row == nullptr || mask_row[j] != 0;
}

// Where the additive bias comes from: a dense (H, T, T) tensor, or the relative-position table
// (buckets x heads per `layout`), whose per-head values for every relative position j - i in
// [-(T-1), T-1] a CTA gathers once into shared memory (2T - 1 floats after its tiles).
template <class T>
struct BiasArgs {
  const T* dense = nullptr;
  const T* table = nullptr;
  BiasTableLayout layout = BiasTableLayout::buckets_by_heads;
  RelativePositionConfig config{};
  __host__ __device__ bool from_table() const { return table != nullptr; }
};

// Fills rel_bias[r + T - 1] = table(h, bucket(r)) for r in [-(T-1), T-1] (table mode only); the
// caller's next __syncthreads publishes it.
template <class T>
__device__ void gather_relative_bias(const BiasArgs<T>& bias, float* rel_bias, int64_t h, int64_t heads,
                                     int64_t seq_len) {
  if (!bias.from_table()) return;
  for (int64_t r = threadIdx.x; r < 2 * seq_len - 1; r += kTcThreads) {
    const int bucket = relative_position_bucket(0, r - (seq_len - 1), bias.config);
    rel_bias[r] = to_float(bias.table[bias_table_offset(bias.layout, h, bucket, heads, bias.config.num_buckets)]);
  }
}

// The bias of score (i, j) of head h (0 without a bias).
template <class T>
__device__ __forceinline__ float bias_at(const BiasArgs<T>& bias, const float* rel_bias, int64_t h, int64_t i,
                                         int64_t j, int64_t seq_len) {
  if (bias.dense) return to_float(bias.dense[(h * seq_len + i) * seq_len + j]);
  if (bias.table) return rel_bias[j - i + seq_len - 1];
  return 0.0f;
}

// q, k, v, out: (B, H, T, D); lse: (B, H, T). Grid (query tiles, B*H).
template <class T, class Mask, int D>
__global__ void __launch_bounds__(kTcThreads, (tc_min_blocks<TcKernel::forward, D>()))
    tc_attention_forward_kernel(const T* q, const T* k, const T* v, const Mask* key_mask, BiasArgs<T> bias, T* out,
                                float* lse, int64_t heads, int64_t seq_len, float scale, AttentionDropout dropout,
                                float keep_scale) {
  constexpr int S = smem_stride<D>();
  T* qs = dynamic_smem<T>();
  T* ks = qs + kTcRows * S;      // two buffers
  T* vs = ks + 2 * kTcRows * S;  // two buffers
  float* rel_bias = reinterpret_cast<float*>(vs + 2 * kTcRows * S);
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kTcRows;
  const int64_t bh = blockIdx.y, b = bh / heads, h = bh % heads;
  const int64_t base = bh * seq_len * D;
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int g = lane >> 2, t = lane & 3;
  const Mask* mask_row = key_mask ? key_mask + b * seq_len : nullptr;
  const bool use_dropout = dropout.active();
  gather_relative_bias(bias, rel_bias, h, heads, seq_len);
  const int key_tiles = static_cast<int>((seq_len + kTcRows - 1) / kTcRows);

  load_tile_async<T, D>(qs, q + base + q0 * D, seq_len - q0, S);
  load_tile_async<T, D>(ks, k + base, seq_len, S);
  load_tile_async<T, D>(vs, v + base, seq_len, S);
  ptx::cp_async_commit();

  float o[D / 8][4] = {};
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};  // this lane's share of the sum
  for (int kt = 0; kt < key_tiles; ++kt) {
    const int buf = kt & 1;
    prefetch_next_and_wait(kt + 1 < key_tiles, [&] {  // the next K/V tile into the other buffer
      const int64_t next = static_cast<int64_t>(kt + 1) * kTcRows;
      load_tile_async<T, D>(ks + (buf ^ 1) * kTcRows * S, k + base + next * D, seq_len - next, S);
      load_tile_async<T, D>(vs + (buf ^ 1) * kTcRows * S, v + base + next * D, seq_len - next, S);
    });
    __syncthreads();
    float s[kTcChunks][4] = {};
    warp_mma_abt<T, D>(s, qs + warp * 16 * S, ks + buf * kTcRows * S, S);
    const int64_t k0 = static_cast<int64_t>(kt) * kTcRows;
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < kTcChunks; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t i = q0 + warp * 16 + g + (e >> 1) * 8, j = k0 + n * 8 + 2 * t + (e & 1);
        float x = -INFINITY;
        if (i < seq_len && j < seq_len && key_attends(mask_row, j)) {
          x = s[n][e] * scale + bias_at(bias, rel_bias, h, i, j, seq_len);
        }
        s[n][e] = x;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
      }
    float rescale[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float new_max = fmaxf(row_max[r], tile_max[r]);
      // An unchanged maximum keeps the sums as they are (exp(Inf - Inf) would poison a row whose one
      // +Inf came in an earlier tile).
      rescale[r] = row_max[r] == new_max ? 1.0f : expf(row_max[r] - new_max);
      row_max[r] = new_max;
      row_sum[r] *= rescale[r];
    }
#pragma unroll
    for (int n = 0; n < kTcChunks; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        // softmax_math.h's rules: NaN gives NaN (poisoning the sum), a +Inf score (then the maximum)
        // counts 1 in the sum and its probability exp(Inf - Inf) is NaN; the finite scores of that row
        // get exp(x - Inf) = 0. Two +Inf make the sum 2, turned into NaN at the end.
        float p = s[n][e] == -INFINITY ? 0.0f : expf(s[n][e] - row_max[r]);
        row_sum[r] += s[n][e] == INFINITY ? 1.0f : p;
        if (use_dropout) {
          const int64_t i = q0 + warp * 16 + g + r * 8, j = k0 + n * 8 + 2 * t + (e & 1);
          p = dropout_keeps(dropout.stream, static_cast<uint64_t>((bh * seq_len + i) * seq_len + j), dropout.p)
                  ? p * keep_scale
                  : 0.0f;
        }
        s[n][e] = p;
      }
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[dn][e] *= rescale[e >> 1];
#pragma unroll
    for (int kk = 0; kk < kTcRows / 16; ++kk) {
      uint32_t fa[4];
      scores_to_a<T, kTcChunks>(s, kk, fa);
      warp_mma_ab<T, D>(o, fa, vs + buf * kTcRows * S, S, kk * 16);
    }
    __syncthreads();  // the buffer is refilled by the prefetch of the next iteration
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 1);
    row_sum[r] += __shfl_xor_sync(0xffffffffu, row_sum[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = q0 + warp * 16 + g + r * 8;
    if (i >= seq_len) continue;
    // The finite scores of a row whose maximum is +Inf add exactly 0: its sum counts the +Inf scores.
    if (row_max[r] == INFINITY && row_sum[r] > 1.0f) row_sum[r] = NAN;
    const bool empty = row_sum[r] == 0.0f;
    const float inv = empty ? 0.0f : 1.0f / row_sum[r];
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      T* dst = out + base + i * D + dn * 8 + 2 * t;
      dst[0] = convert_element<T>(o[dn][2 * r] * inv);
      dst[1] = convert_element<T>(o[dn][2 * r + 1] * inv);
    }
    if (lse && t == 0) lse[bh * seq_len + i] = empty ? -INFINITY : row_max[r] + logf(row_sum[r]);
  }
}

// delta[row] = dout[row, :] . out[row, :] in f32; one warp per row. A row whose log-sum-exp is NaN or
// +Inf holds a NaN probability, and the reference's delta = sum_j dP_j P_j is then NaN whatever dP is:
// so is this one (its dS row becomes NaN, masked keys included, as there).
template <class T>
__global__ void tc_attention_delta_kernel(const T* out, const T* dout, const float* lse, float* delta, int64_t rows,
                                          int head_dim) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kTcWarps + threadIdx.x / 32;
  if (row >= rows) return;
  const int lane = static_cast<int>(threadIdx.x % 32);
  float partial = 0.0f;
  for (int d = lane; d < head_dim; d += 32)
    partial += to_float(dout[row * head_dim + d]) * to_float(out[row * head_dim + d]);
  const float total = warp_sum(partial);
  const float row_lse = lse[row];
  if (lane == 0) delta[row] = row_lse != row_lse || row_lse == INFINITY ? NAN : total;
}

// Recomputed probability and score gradient of one element: p (pre-dropout), p_drop, dS.
struct ElementGrads {
  float p_drop, ds;
};
template <class T, class Mask>
__device__ __forceinline__ ElementGrads element_grads(float score, float dp_drop, int64_t i, int64_t j, int64_t bh,
                                                      int64_t h, int64_t seq_len, float scale, float row_lse,
                                                      float row_delta, const Mask* mask_row, const BiasArgs<T>& bias,
                                                      const float* rel_bias, const AttentionDropout& dropout,
                                                      float keep_scale) {
  if (i >= seq_len || j >= seq_len) return {0.0f, 0.0f};
  // P as the reference has it (softmax_math.h): 0 in an empty row and at masked keys, NaN everywhere in
  // a row whose log-sum-exp is NaN; exp(x - lse) otherwise (NaN at a lone +Inf score, whose lse is +Inf).
  float p;
  if (row_lse == -INFINITY)
    p = 0.0f;
  else if (!key_attends(mask_row, j))
    p = row_lse != row_lse ? row_lse : 0.0f;
  else
    p = expf(score * scale + bias_at(bias, rel_bias, h, i, j, seq_len) - row_lse);
  bool keep = true;
  if (dropout.active())
    keep = dropout_keeps(dropout.stream, static_cast<uint64_t>((bh * seq_len + i) * seq_len + j), dropout.p);
  // Dropped elements are exactly 0 in P_drop and in dP (not 0 * NaN), as in the reference; dS is
  // P (dP - delta) literally, so a non-finite delta reaches the masked keys' dS as it does there.
  return {keep ? p * keep_scale : 0.0f, p * ((keep ? dp_drop * keep_scale : 0.0f) - row_delta)};
}

// dQ: grid (query tiles, B*H). K/V tiles double-buffered as in the forward.
template <class T, class Mask, int D>
__global__ void __launch_bounds__(kTcThreads, (tc_min_blocks<TcKernel::dq, D>()))
    tc_attention_dq_kernel(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta,
                           const Mask* key_mask, BiasArgs<T> bias, T* dq, int64_t heads, int64_t seq_len, float scale,
                           AttentionDropout dropout, float keep_scale) {
  constexpr int S = smem_stride<D>();
  T* qs = dynamic_smem<T>();
  T* dos = qs + kTcRows * S;
  T* ks = dos + kTcRows * S;     // two buffers
  T* vs = ks + 2 * kTcRows * S;  // two buffers
  float* rel_bias = reinterpret_cast<float*>(vs + 2 * kTcRows * S);
  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kTcRows;
  const int64_t bh = blockIdx.y, b = bh / heads, h = bh % heads;
  const int64_t base = bh * seq_len * D;
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int g = lane >> 2, t = lane & 3;
  const Mask* mask_row = key_mask ? key_mask + b * seq_len : nullptr;
  gather_relative_bias(bias, rel_bias, h, heads, seq_len);
  const int key_tiles = static_cast<int>((seq_len + kTcRows - 1) / kTcRows);
  float row_lse[2], row_delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = q0 + warp * 16 + g + r * 8;
    row_lse[r] = i < seq_len ? lse[bh * seq_len + i] : -INFINITY;
    row_delta[r] = i < seq_len ? delta[bh * seq_len + i] : 0.0f;
  }

  load_tile_async<T, D>(qs, q + base + q0 * D, seq_len - q0, S);
  load_tile_async<T, D>(dos, dout + base + q0 * D, seq_len - q0, S);
  load_tile_async<T, D>(ks, k + base, seq_len, S);
  load_tile_async<T, D>(vs, v + base, seq_len, S);
  ptx::cp_async_commit();

  float dq_acc[D / 8][4] = {};
  for (int kt = 0; kt < key_tiles; ++kt) {
    const int buf = kt & 1;
    prefetch_next_and_wait(kt + 1 < key_tiles, [&] {  // the next K/V tile into the other buffer
      const int64_t next = static_cast<int64_t>(kt + 1) * kTcRows;
      load_tile_async<T, D>(ks + (buf ^ 1) * kTcRows * S, k + base + next * D, seq_len - next, S);
      load_tile_async<T, D>(vs + (buf ^ 1) * kTcRows * S, v + base + next * D, seq_len - next, S);
    });
    __syncthreads();
    float s[kTcChunks][4] = {}, dp[kTcChunks][4] = {};
    warp_mma_abt<T, D>(s, qs + warp * 16 * S, ks + buf * kTcRows * S, S);
    warp_mma_abt<T, D>(dp, dos + warp * 16 * S, vs + buf * kTcRows * S, S);
    const int64_t k0 = static_cast<int64_t>(kt) * kTcRows;
#pragma unroll
    for (int n = 0; n < kTcChunks; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const int64_t i = q0 + warp * 16 + g + r * 8, j = k0 + n * 8 + 2 * t + (e & 1);
        s[n][e] = element_grads(s[n][e], dp[n][e], i, j, bh, h, seq_len, scale, row_lse[r], row_delta[r], mask_row,
                                bias, rel_bias, dropout, keep_scale)
                      .ds;
      }
#pragma unroll
    for (int kk = 0; kk < kTcRows / 16; ++kk) {
      uint32_t fa[4];
      scores_to_a<T, kTcChunks>(s, kk, fa);
      warp_mma_ab<T, D>(dq_acc, fa, ks + buf * kTcRows * S, S, kk * 16);
    }
    __syncthreads();
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int64_t i = q0 + warp * 16 + g + r * 8;
    if (i >= seq_len) continue;
#pragma unroll
    for (int dn = 0; dn < D / 8; ++dn) {
      T* dst = dq + base + i * D + dn * 8 + 2 * t;
      dst[0] = convert_element<T>(dq_acc[dn][2 * r] * scale);
      dst[1] = convert_element<T>(dq_acc[dn][2 * r + 1] * scale);
    }
  }
}

// dK, dV (and the bias gradient): grid (key tiles, B*H), or (key tiles, H) walking the batch in order
// when the dense dbias is wanted. The warp's score block is transposed: rows are its 16 keys, columns a
// step of kDkdvQueries queries (32: the dK and dV accumulators of 128-wide heads leave no registers for
// 64 columns). The query-side tiles (Q, dO, lse, delta) are double-buffered: the next step's cp.async
// loads are in flight while this step multiplies.
constexpr int kDkdvQueries = 32;
constexpr int kDkdvChunks = kDkdvQueries / 8;
constexpr int kDiagonalStride = kDkdvQueries + 1;  // the (16 x 32) dS scratch of a warp, padded

// Table mode: the per-warp dS scratch and diagonal sums (after the 2T - 1 relative biases).
__host__ __device__ constexpr int64_t warp_diagonals(int64_t seq_len) { return seq_len + 15; }
__host__ __device__ constexpr int64_t cta_diagonals(int64_t seq_len) { return seq_len + kTcRows - 1; }
inline size_t table_grad_smem_bytes(int64_t seq_len) {
  return (static_cast<size_t>(kTcWarps) * 16 * kDiagonalStride +
          static_cast<size_t>(kTcWarps) * warp_diagonals(seq_len)) *
         sizeof(float);
}

// The relative-position gradient of one warp's 16 x 32 dS block, exactly: the block goes through shared
// scratch, lane d sums diagonal (key - query) = d - 31 (and d + 1 on the second pass) in ascending key
// order, adding it to the warp's running sum of that relative position (one owner per cell, a fixed
// order: no atomics, deterministic). sums[r - (first key of the warp) + T - 1] holds r = j - i.
__device__ __forceinline__ void add_warp_diagonals(const float (&ds)[kDkdvChunks][4], float* scratch, float* sums,
                                                   int64_t key0, int64_t query0, int64_t seq_len) {
  const int lane = static_cast<int>(threadIdx.x % 32), g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int n = 0; n < kDkdvChunks; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) scratch[(g + (e >> 1) * 8) * kDiagonalStride + n * 8 + 2 * t + (e & 1)] = ds[n][e];
  __syncwarp();
  for (int d = lane - (kDkdvQueries - 1); d < 16; d += 32) {  // d = key - query within the block
    float sum = 0.0f;
    for (int key = d > 0 ? d : 0; key < 16 && key - d < kDkdvQueries; ++key) {
      const int query = key - d;
      if (key0 + key < seq_len && query0 + query < seq_len) sum += scratch[key * kDiagonalStride + query];
    }
    const int64_t slot = d + seq_len - 1 - query0;  // negative only for diagonals past the last query
    if (slot >= 0) sums[slot] += sum;
  }
  __syncwarp();  // the scratch is rewritten by the next step
}

// Loads query step `qt` (Q, dO rows and their lse and delta) into one of the two query buffers.
template <class T, int D>
__device__ __forceinline__ void load_query_step(T* qs, T* dos, float* lse_s, float* delta_s, const T* q, const T* dout,
                                                const float* lse, const float* delta, int64_t base, int64_t bh,
                                                int64_t i0, int64_t seq_len) {
  constexpr int S = smem_stride<D>();
  load_tile_async<T, D, kDkdvQueries>(qs, q + base + i0 * D, seq_len - i0, S);
  load_tile_async<T, D, kDkdvQueries>(dos, dout + base + i0 * D, seq_len - i0, S);
  for (int r = static_cast<int>(threadIdx.x); r < kDkdvQueries; r += kTcThreads) {
    const int64_t i = i0 + r;
    lse_s[r] = i < seq_len ? lse[bh * seq_len + i] : -INFINITY;
    delta_s[r] = i < seq_len ? delta[bh * seq_len + i] : 0.0f;
  }
}

template <class T, class Mask, int D>
__global__ void __launch_bounds__(kTcThreads, (tc_min_blocks<TcKernel::dkdv, D>()))
    tc_attention_dkdv_kernel(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta,
                             const Mask* key_mask, BiasArgs<T> bias, T* dk, T* dv, float* dbias, bool accumulate_dbias,
                             float* rel_partials, int64_t batch, int64_t heads, int64_t seq_len, float scale,
                             AttentionDropout dropout, float keep_scale) {
  constexpr int S = smem_stride<D>();
  constexpr int kQueryTile = kDkdvQueries * S;
  T* ks = dynamic_smem<T>();
  T* vs = ks + kTcRows * S;
  T* qs = vs + kTcRows * S;                                       // two buffers
  T* dos = qs + 2 * kQueryTile;                                   // two buffers
  float* lse_s = reinterpret_cast<float*>(dos + 2 * kQueryTile);  // two buffers
  float* delta_s = lse_s + 2 * kDkdvQueries;                      // two buffers
  float* rel_bias = delta_s + 2 * kDkdvQueries;
  // Table mode: dS scratch and the running diagonal sums of each warp.
  float* scratch = rel_bias + (bias.from_table() ? 2 * seq_len - 1 : 0);
  float* warp_sums = scratch + kTcWarps * 16 * kDiagonalStride;
  const int64_t k0 = static_cast<int64_t>(blockIdx.x) * kTcRows;
  const int warp = static_cast<int>(threadIdx.x / 32), lane = static_cast<int>(threadIdx.x % 32);
  const int g = lane >> 2, t = lane & 3;
  const int query_tiles = static_cast<int>((seq_len + kDkdvQueries - 1) / kDkdvQueries);
  const int64_t h = dbias ? static_cast<int64_t>(blockIdx.y) : static_cast<int64_t>(blockIdx.y) % heads;
  const int64_t b_begin = dbias ? 0 : static_cast<int64_t>(blockIdx.y) / heads;
  const int64_t b_end = dbias ? batch : b_begin + 1;
  gather_relative_bias(bias, rel_bias, h, heads, seq_len);
  if (rel_partials)
    for (int64_t e = threadIdx.x; e < kTcWarps * warp_diagonals(seq_len); e += kTcThreads) warp_sums[e] = 0.0f;
  float* my_sums = warp_sums + warp * warp_diagonals(seq_len);
  for (int64_t b = b_begin; b < b_end; ++b) {
    const int64_t bh = b * heads + h;
    const int64_t base = bh * seq_len * D;
    const Mask* mask_row = key_mask ? key_mask + b * seq_len : nullptr;
    __syncthreads();  // the previous batch entry no longer reads the K/V tiles or the query buffers
    load_tile_async<T, D>(ks, k + base + k0 * D, seq_len - k0, S);
    load_tile_async<T, D>(vs, v + base + k0 * D, seq_len - k0, S);
    load_query_step<T, D>(qs, dos, lse_s, delta_s, q, dout, lse, delta, base, bh, 0, seq_len);
    ptx::cp_async_commit();
    float dk_acc[D / 8][4] = {}, dv_acc[D / 8][4] = {};
    for (int qt = 0; qt < query_tiles; ++qt) {
      const int buf = qt & 1;
      const int64_t i0 = static_cast<int64_t>(qt) * kDkdvQueries;
      prefetch_next_and_wait(qt + 1 < query_tiles, [&] {
        const int next = buf ^ 1;
        load_query_step<T, D>(qs + next * kQueryTile, dos + next * kQueryTile, lse_s + next * kDkdvQueries,
                              delta_s + next * kDkdvQueries, q, dout, lse, delta, base, bh, i0 + kDkdvQueries, seq_len);
      });
      __syncthreads();
      const T* q_tile = qs + buf * kQueryTile;
      const T* do_tile = dos + buf * kQueryTile;
      const float* lse_tile = lse_s + buf * kDkdvQueries;
      const float* delta_tile = delta_s + buf * kDkdvQueries;
      float st[kDkdvChunks][4] = {}, dpt[kDkdvChunks][4] = {};
      warp_mma_abt<T, D, kDkdvQueries>(st, ks + warp * 16 * S, q_tile, S);
      warp_mma_abt<T, D, kDkdvQueries>(dpt, vs + warp * 16 * S, do_tile, S);
#pragma unroll
      for (int n = 0; n < kDkdvChunks; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int column = n * 8 + 2 * t + (e & 1);
          const int64_t j = k0 + warp * 16 + g + (e >> 1) * 8, i = i0 + column;
          const ElementGrads grads = element_grads(st[n][e], dpt[n][e], i, j, bh, h, seq_len, scale, lse_tile[column],
                                                   delta_tile[column], mask_row, bias, rel_bias, dropout, keep_scale);
          st[n][e] = grads.p_drop;
          dpt[n][e] = grads.ds;
          if (dbias && i < seq_len && j < seq_len) {
            float* cell = dbias + (h * seq_len + i) * seq_len + j;
            *cell = (b == 0 && !accumulate_dbias) ? grads.ds : *cell + grads.ds;
          }
        }
      if (rel_partials)
        add_warp_diagonals(dpt, scratch + warp * 16 * kDiagonalStride, my_sums, k0 + warp * 16, i0, seq_len);
#pragma unroll
      for (int kk = 0; kk < kDkdvQueries / 16; ++kk) {
        uint32_t fa[4];
        scores_to_a<T, kDkdvChunks>(st, kk, fa);
        warp_mma_ab<T, D>(dv_acc, fa, do_tile, S, kk * 16);
        scores_to_a<T, kDkdvChunks>(dpt, kk, fa);
        warp_mma_ab<T, D>(dk_acc, fa, q_tile, S, kk * 16);
      }
      __syncthreads();  // this query buffer is refilled by the prefetch two steps on
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t j = k0 + warp * 16 + g + r * 8;
      if (j >= seq_len) continue;
#pragma unroll
      for (int dn = 0; dn < D / 8; ++dn) {
        const int64_t offset = base + j * D + dn * 8 + 2 * t;
        if (dk) {
          dk[offset] = convert_element<T>(dk_acc[dn][2 * r] * scale);
          dk[offset + 1] = convert_element<T>(dk_acc[dn][2 * r + 1] * scale);
        }
        if (dv) {
          dv[offset] = convert_element<T>(dv_acc[dn][2 * r]);
          dv[offset + 1] = convert_element<T>(dv_acc[dn][2 * r + 1]);
        }
      }
    }
  }
  if (!rel_partials) return;
  // The CTA's partial of every relative position r = j - i in [k0 - (T - 1), k0 + 63]: the warps' sums
  // added in warp order. Slot c holds r = k0 - (T - 1) + c; warp w's slot for it is c - 16 w.
  __syncthreads();
  float* out = rel_partials + (static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * cta_diagonals(seq_len);
  for (int64_t c = threadIdx.x; c < cta_diagonals(seq_len); c += kTcThreads) {
    float sum = 0.0f;
    for (int w = 0; w < kTcWarps; ++w) {
      const int64_t slot = c - 16 * w;
      if (slot >= 0 && slot < warp_diagonals(seq_len)) sum += warp_sums[w * warp_diagonals(seq_len) + slot];
    }
    out[c] = sum;
  }
}

// rel_partials (B*H, key tiles, T + 63) -> drel (H, 2T - 1): drel[h, r + T - 1] sums, for batch row b
// ascending and then key tile ascending, the partial of every CTA whose range holds r. One thread per
// (h, r): a fixed order, deterministic.
__global__ void tc_relative_partials_sum_kernel(const float* rel_partials, float* drel, int64_t batch, int64_t heads,
                                                int64_t seq_len) {
  const int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t positions = 2 * seq_len - 1;
  if (index >= heads * positions) return;
  const int64_t h = index / positions, r = index % positions - (seq_len - 1);
  const int64_t tiles = (seq_len + kTcRows - 1) / kTcRows;
  float sum = 0.0f;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t kt = 0; kt < tiles; ++kt) {
      const int64_t slot = r - kt * kTcRows + seq_len - 1;  // r - (k0 - (T - 1))
      if (slot >= 0 && slot < cta_diagonals(seq_len))
        sum += rel_partials[((b * heads + h) * tiles + kt) * cta_diagonals(seq_len) + slot];
    }
  drel[index] = sum;
}

// drel (H, 2T - 1) -> dtable (buckets x heads per layout): thread k of block h sums the relative
// positions of bucket k in ascending order.
__global__ void tc_relative_table_grad_kernel(const float* drel, float* dtable, BiasTableLayout layout,
                                              RelativePositionConfig config, int64_t heads, int64_t seq_len,
                                              bool accumulate) {
  const int64_t h = blockIdx.x;
  for (int k = static_cast<int>(threadIdx.x); k < config.num_buckets; k += blockDim.x) {
    float sum = 0.0f;
    for (int64_t r = 0; r < 2 * seq_len - 1; ++r)
      if (relative_position_bucket(0, r - (seq_len - 1), config) == k) sum += drel[h * (2 * seq_len - 1) + r];
    float* out = dtable + bias_table_offset(layout, h, k, heads, config.num_buckets);
    *out = accumulate ? *out + sum : sum;
  }
}

template <int D>
constexpr size_t forward_smem_bytes(size_t element) {
  return 5 * kTcRows * smem_stride<D>() * element;
}
template <int D>
constexpr size_t dq_smem_bytes(size_t element) {
  return 6 * kTcRows * smem_stride<D>() * element;
}
template <int D>
constexpr size_t dkdv_smem_bytes(size_t element) {  // K, V; two buffers of Q, dO, lse and delta
  return 2 * (kTcRows + 2 * kDkdvQueries) * smem_stride<D>() * element + 4 * kDkdvQueries * sizeof(float);
}
// The relative-position bias of every j - i, in table mode.
template <class T>
size_t relative_bias_bytes(const BiasArgs<T>& bias, int64_t seq_len) {
  return bias.from_table() ? static_cast<size_t>(2 * seq_len - 1) * sizeof(float) : 0;
}

// Raises the kernel's dynamic shared memory limit when it needs more than the default 48 KB.
template <class Kernel>
void allow_shared_bytes(Kernel* kernel, size_t bytes, const char* op) {
  if (bytes > kMaxSharedBytes)
    throw std::invalid_argument(std::string(op) + ": the sequence needs " + std::to_string(bytes) +
                                " bytes of shared memory per block, above " + std::to_string(kMaxSharedBytes));
  if (bytes > kDefaultSharedLimit)
    COCO_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

void check_tc_shape(const AttentionShape& shape, const AttentionDropout& dropout, const char* op) {
  check_attention_arguments(shape, dropout, op);
  if (!cuda::tc_attention_supports(shape))
    throw std::invalid_argument(std::string(op) + ": head_dim " + std::to_string(shape.head_dim) +
                                " has no tensor-core kernel (16, 32, 64 or 128)");
  if (shape.batch * shape.heads > 65535)
    throw std::invalid_argument(std::string(op) + ": B*H = " + std::to_string(shape.batch * shape.heads) +
                                " exceeds the grid limit 65535");
}

template <class T, class Mask, int D>
void launch_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const BiasArgs<T>& bias,
                    const AttentionShape& shape, const AttentionDropout& dropout, T* out, float* lse,
                    cudaStream_t stream, const char* op) {
  const size_t smem = forward_smem_bytes<D>(sizeof(T)) + relative_bias_bytes(bias, shape.seq_len);
  allow_shared_bytes(tc_attention_forward_kernel<T, Mask, D>, smem, op);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  COCO_LAUNCH((tc_attention_forward_kernel<T, Mask, D>),
              dim3(ceil_div(shape.seq_len, kTcRows), static_cast<unsigned>(shape.batch * shape.heads)),
              dim3(kTcThreads), smem, stream, q, k, v, key_mask, bias, out, lse, shape.heads, shape.seq_len, scale,
              dropout, dropout.active() ? dropout_keep_scale(dropout.p) : 1.0f);
}

template <class T, class Mask, int D>
void launch_backward(const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* delta,
                     const Mask* key_mask, const BiasArgs<T>& bias, const AttentionShape& shape,
                     const AttentionDropout& dropout, T* dq, T* dk, T* dv, float* dbias, bool accumulate_dbias,
                     float* rel_partials, cudaStream_t stream, const char* op) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const float keep_scale = dropout.active() ? dropout_keep_scale(dropout.p) : 1.0f;
  const unsigned tiles = ceil_div(shape.seq_len, kTcRows);
  const size_t rel_bytes = relative_bias_bytes(bias, shape.seq_len);
  if (dq) {
    const size_t smem = dq_smem_bytes<D>(sizeof(T)) + rel_bytes;
    allow_shared_bytes(tc_attention_dq_kernel<T, Mask, D>, smem, op);
    COCO_LAUNCH((tc_attention_dq_kernel<T, Mask, D>), dim3(tiles, static_cast<unsigned>(shape.batch * shape.heads)),
                dim3(kTcThreads), smem, stream, q, k, v, dout, lse, delta, key_mask, bias, dq, shape.heads,
                shape.seq_len, scale, dropout, keep_scale);
  }
  if (dk || dv || dbias || rel_partials) {
    const size_t smem =
        dkdv_smem_bytes<D>(sizeof(T)) + rel_bytes + (rel_partials ? table_grad_smem_bytes(shape.seq_len) : 0);
    allow_shared_bytes(tc_attention_dkdv_kernel<T, Mask, D>, smem, op);
    const unsigned rows = static_cast<unsigned>(dbias ? shape.heads : shape.batch * shape.heads);
    COCO_LAUNCH((tc_attention_dkdv_kernel<T, Mask, D>), dim3(tiles, rows), dim3(kTcThreads), smem, stream, q, k, v,
                dout, lse, delta, key_mask, bias, dk, dv, dbias, accumulate_dbias, rel_partials, shape.batch,
                shape.heads, shape.seq_len, scale, dropout, keep_scale);
  }
}

template <class T, class Mask>
void forward(const T* q, const T* k, const T* v, const Mask* key_mask, const BiasArgs<T>& bias,
             const AttentionShape& shape, const AttentionDropout& dropout, T* out, float* lse, cudaStream_t stream,
             const char* op) {
  check_tc_shape(shape, dropout, op);
  if (shape.batch * shape.heads == 0 || shape.seq_len == 0) return;
  switch (shape.head_dim) {
    case 16:
      return launch_forward<T, Mask, 16>(q, k, v, key_mask, bias, shape, dropout, out, lse, stream, op);
    case 32:
      return launch_forward<T, Mask, 32>(q, k, v, key_mask, bias, shape, dropout, out, lse, stream, op);
    case 64:
      return launch_forward<T, Mask, 64>(q, k, v, key_mask, bias, shape, dropout, out, lse, stream, op);
    default:
      return launch_forward<T, Mask, 128>(q, k, v, key_mask, bias, shape, dropout, out, lse, stream, op);
  }
}

// dq, dk, dv and dbias (H, T, T) f32 (overwritten unless accumulate_dbias), or, in table mode, the
// relative-position partials (B*H, key tiles, T + 63) f32.
template <class T, class Mask>
void backward(const T* q, const T* k, const T* v, const T* out, const T* dout, const float* lse, const Mask* key_mask,
              const BiasArgs<T>& bias, const AttentionShape& shape, const AttentionDropout& dropout, T* dq, T* dk,
              T* dv, float* dbias, bool accumulate_dbias, float* rel_partials, float* delta_workspace,
              cudaStream_t stream, const char* op) {
  check_tc_shape(shape, dropout, op);
  const int64_t L = shape.seq_len, batches = shape.batch * shape.heads;
  if (L == 0 || shape.heads == 0) return;
  if (batches == 0) {
    if (dbias && !accumulate_dbias)
      COCO_CUDA_CHECK(
          runtime::memset_async(dbias, 0, static_cast<size_t>(shape.bias_elements()) * sizeof(float), stream));
    return;
  }
  if (delta_workspace == nullptr) throw std::invalid_argument(std::string(op) + ": delta_workspace is required");
  const int64_t rows = batches * L;
  COCO_LAUNCH(tc_attention_delta_kernel<T>, dim3(ceil_div(rows, kTcWarps)), dim3(kTcThreads), 0, stream, out, dout, lse,
              delta_workspace, rows, static_cast<int>(shape.head_dim));
  switch (shape.head_dim) {
    case 16:
      return launch_backward<T, Mask, 16>(q, k, v, dout, lse, delta_workspace, key_mask, bias, shape, dropout, dq, dk,
                                          dv, dbias, accumulate_dbias, rel_partials, stream, op);
    case 32:
      return launch_backward<T, Mask, 32>(q, k, v, dout, lse, delta_workspace, key_mask, bias, shape, dropout, dq, dk,
                                          dv, dbias, accumulate_dbias, rel_partials, stream, op);
    case 64:
      return launch_backward<T, Mask, 64>(q, k, v, dout, lse, delta_workspace, key_mask, bias, shape, dropout, dq, dk,
                                          dv, dbias, accumulate_dbias, rel_partials, stream, op);
    default:
      return launch_backward<T, Mask, 128>(q, k, v, dout, lse, delta_workspace, key_mask, bias, shape, dropout, dq, dk,
                                           dv, dbias, accumulate_dbias, rel_partials, stream, op);
  }
}

template <class T>
BiasArgs<T> table_bias(const T* table, BiasTableLayout layout, const RelativePositionConfig& config,
                       const AttentionShape& shape, const char* op) {
  if (table == nullptr) throw std::invalid_argument(std::string(op) + ": the relative-position table is null");
  check_relative_position_config(config, shape.seq_len, op);
  BiasArgs<T> bias;
  bias.table = table;
  bias.layout = layout;
  bias.config = config;
  return bias;
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

bool tc_attention_supports(const AttentionShape& shape) {
  return shape.head_dim == 16 || shape.head_dim == 32 || shape.head_dim == 64 || shape.head_dim == 128;
}

int64_t tc_relpos_partials_elements(const AttentionShape& shape) {
  if (shape.seq_len <= 0) return 0;
  return shape.batch * shape.heads * static_cast<int64_t>(ceil_div(shape.seq_len, detail::kTcRows)) *
         detail::cta_diagonals(shape.seq_len);
}

template <class T, class Mask>
void tc_attention_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias,
                          const AttentionShape& shape, const AttentionDropout& dropout, T* out, float* lse,
                          cudaStream_t stream) {
  detail::BiasArgs<T> args;
  args.dense = bias;
  detail::forward(q, k, v, key_mask, args, shape, dropout, out, lse, stream, "kernels::cuda::tc_attention_forward");
}

template <class T, class Mask>
void tc_attention_backward(const T* q, const T* k, const T* v, const T* out, const T* dout, const float* lse,
                           const Mask* key_mask, const T* bias, const AttentionShape& shape,
                           const AttentionDropout& dropout, T* dq, T* dk, T* dv, float* dbias, bool accumulate_dbias,
                           float* delta_workspace, cudaStream_t stream) {
  detail::BiasArgs<T> args;
  args.dense = bias;
  detail::backward(q, k, v, out, dout, lse, key_mask, args, shape, dropout, dq, dk, dv, dbias, accumulate_dbias,
                   nullptr, delta_workspace, stream, "kernels::cuda::tc_attention_backward");
}

template <class T, class Mask>
void tc_attention_relpos_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const T* table,
                                 BiasTableLayout layout, const RelativePositionConfig& config,
                                 const AttentionShape& shape, const AttentionDropout& dropout, T* out, float* lse,
                                 cudaStream_t stream) {
  const char* op = "kernels::cuda::tc_attention_relpos_forward";
  if (shape.seq_len == 0 || shape.batch * shape.heads == 0) return detail::check_tc_shape(shape, dropout, op);
  detail::forward(q, k, v, key_mask, detail::table_bias(table, layout, config, shape, op), shape, dropout, out, lse,
                  stream, op);
}

template <class T, class Mask>
void tc_attention_relpos_backward(const T* q, const T* k, const T* v, const T* out, const T* dout, const float* lse,
                                  const Mask* key_mask, const T* table, BiasTableLayout layout,
                                  const RelativePositionConfig& config, const AttentionShape& shape,
                                  const AttentionDropout& dropout, T* dq, T* dk, T* dv, float* dtable,
                                  bool accumulate_dtable, const TcRelposWorkspace& workspace, cudaStream_t stream) {
  const char* op = "kernels::cuda::tc_attention_relpos_backward";
  if (shape.seq_len == 0 || shape.heads == 0) return detail::check_tc_shape(shape, dropout, op);
  const detail::BiasArgs<T> bias = detail::table_bias(table, layout, config, shape, op);
  if (dtable && (workspace.partials == nullptr || workspace.drel == nullptr))
    throw std::invalid_argument(std::string(op) + ": the partials and drel workspaces are required for dtable");
  detail::backward(q, k, v, out, dout, lse, key_mask, bias, shape, dropout, dq, dk, dv, nullptr, false,
                   dtable ? workspace.partials : nullptr, workspace.delta, stream, op);
  if (!dtable) return;
  const int64_t L = shape.seq_len, positions = shape.heads * (2 * L - 1);
  COCO_LAUNCH(detail::tc_relative_partials_sum_kernel, dim3(ceil_div(positions, detail::kTcThreads)),
              dim3(detail::kTcThreads), 0, stream, workspace.partials, workspace.drel, shape.batch, shape.heads, L);
  COCO_LAUNCH(detail::tc_relative_table_grad_kernel, dim3(static_cast<unsigned>(shape.heads)), dim3(32), 0, stream,
              workspace.drel, dtable, layout, config, shape.heads, L, accumulate_dtable);
}

#define COCO_INSTANTIATE_TC_ATTENTION(T, Mask)                                                                        \
  template void tc_attention_forward<T, Mask>(const T*, const T*, const T*, const Mask*, const T*,                    \
                                              const AttentionShape&, const AttentionDropout&, T*, float*,             \
                                              cudaStream_t);                                                          \
  template void tc_attention_backward<T, Mask>(const T*, const T*, const T*, const T*, const T*, const float*,        \
                                               const Mask*, const T*, const AttentionShape&, const AttentionDropout&, \
                                               T*, T*, T*, float*, bool, float*, cudaStream_t);                       \
  template void tc_attention_relpos_forward<T, Mask>(                                                                 \
      const T*, const T*, const T*, const Mask*, const T*, BiasTableLayout, const RelativePositionConfig&,            \
      const AttentionShape&, const AttentionDropout&, T*, float*, cudaStream_t);                                      \
  template void tc_attention_relpos_backward<T, Mask>(                                                                \
      const T*, const T*, const T*, const T*, const T*, const float*, const Mask*, const T*, BiasTableLayout,         \
      const RelativePositionConfig&, const AttentionShape&, const AttentionDropout&, T*, T*, T*, float*, bool,        \
      const TcRelposWorkspace&, cudaStream_t);
COCO_INSTANTIATE_TC_ATTENTION(__nv_bfloat16, uint8_t)
COCO_INSTANTIATE_TC_ATTENTION(__nv_bfloat16, int32_t)
COCO_INSTANTIATE_TC_ATTENTION(__half, uint8_t)
COCO_INSTANTIATE_TC_ATTENTION(__half, int32_t)
#undef COCO_INSTANTIATE_TC_ATTENTION

}  // namespace coco::kernels::cuda
