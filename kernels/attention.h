// Scaled dot-product attention core with a key padding mask, an optional additive bias shared across
// the batch (the relative-position bias), softmax and dropout on the probabilities.
//
//   S[b,h,i,j]  = Dh^-0.5 * q[b,h,i,:] . k[b,h,j,:] + bias[h,i,j]     (-Inf where key_mask[b,j] == 0)
//   P           = softmax_j(S)        (a row whose keys are all padded is all zeros: kernels/softmax_math.h)
//   P_drop      = P * keep / (1 - p)  keep[b,h,i,j] = Stream.uniform(((b*H + h)*T + i)*T + j) >= p
//   out[b,h,i,:] = sum_j P_drop[b,h,i,j] v[b,h,j,:]
//
// Backward (dO = d out):  dP_drop = dO v^T;  dP = dP_drop * keep / (1 - p);
//   dS = P * (dP - sum_j dP P);  dq = Dh^-0.5 dS k;  dk = Dh^-0.5 dS^T q;  dv = P_drop^T dO;
//   dbias[h,i,j] = sum_b dS[b,h,i,j], summed in batch order (deterministic).
// A fully padded query row outputs zeros and gets a zero gradient (dS = 0).
//
// The dropout mask depends only on (stream, element index), so the CPU and CUDA backends drop the same
// elements bit for bit. The saved probabilities are P (pre-dropout); the backward regenerates the mask.
//
// CUDA "first version": strided-batched GEMMs (kernels/matmul.h) around two fused row kernels
// (scale/bias/mask/softmax/dropout forward; dropout/softmax backward with the bias reduction).
#pragma once
#include <cstdint>
#include <type_traits>

#include "engine/rng/philox.h"
#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

// q, k, v, out: (batch, heads, seq_len, head_dim) contiguous.
struct AttentionShape {
  int64_t batch = 0, heads = 0, seq_len = 0, head_dim = 0;
  int64_t qkv_elements() const { return batch * heads * seq_len * head_dim; }
  int64_t score_elements() const { return batch * heads * seq_len * seq_len; }
  int64_t bias_elements() const { return heads * seq_len * seq_len; }
};

// Dropout on the attention probabilities. `p` in [0, 1); p == 0 disables dropout.
struct AttentionDropout {
  float p = 0.0f;
  rng::Stream stream{};
  __host__ __device__ bool active() const { return p > 0.0f; }
};

// Element type of the f32 (f64 for double) score workspaces and of the CUDA bias gradient.
template <class T>
using AttentionAccumulator = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Throws std::invalid_argument naming `op` on negative sizes, head_dim 0 for a non-empty problem, a
// dropout p outside [0, 1), or sizes whose element counts overflow.
void check_attention_arguments(const AttentionShape& shape, const AttentionDropout& dropout, const char* op);

namespace detail {
// 1 / (1 - p) in float, the factor both backends apply to kept probabilities.
__host__ __device__ inline float dropout_keep_scale(float p) { return 1.0f / (1.0f - p); }
// Whether element `index` of the (B, H, T, T) probabilities survives dropout.
__host__ __device__ inline bool dropout_keeps(const rng::Stream& stream, uint64_t index, float p) {
  return stream.uniform(index) >= p;
}
}  // namespace detail

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// Reference forward. T = float or double; Mask = uint8_t or int32_t (1 = attend, 0 = pad).
//   q, k, v: (B, H, T, Dh); key_mask: (B, T) or null (attend everywhere); bias: (H, T, T) or null
//   -> out: (B, H, T, Dh), probs: (B, H, T, T) (P before dropout, saved for the backward).
// Accumulates in double.
template <class T, class Mask>
void attention_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias,
                       const AttentionShape& shape, const AttentionDropout& dropout, T* out, T* probs);

// Reference backward from the saved probabilities.
//   q, k, v, dout: (B, H, T, Dh); probs: (B, H, T, T)
//   -> dq, dk, dv: (B, H, T, Dh), overwritten (each may be null to skip it);
//      dbias: (H, T, T) or null, overwritten unless accumulate_dbias.
template <class T>
void attention_backward(const T* q, const T* k, const T* v, const T* probs, const T* dout, const AttentionShape& shape,
                        const AttentionDropout& dropout, T* dq, T* dk, T* dv, T* dbias, bool accumulate_dbias);

// Fast CPU path, used by ops::attention for f32 CPU tensors (~8x the reference forward, ~11x the
// backward at the demo shape B=16, H=4, T=64, Dh=32). Same arguments, semantics, dropout mask and
// special cases (padding, NaN/Inf, fully padded rows) as the reference above; only the rounding
// differs. Per (batch, head): OpenBLAS GEMMs (kernels/matmul.h) for S = scale q k^T, P_drop v and the
// four backward products; vectorisable row loops in T for bias, mask, softmax (a polynomial exp for
// float, <= 1 ulp) and dropout (f32 scores as on the CUDA f32 path, so |q.k| beyond FLT_MAX overflows
// to Inf as it does there); the Philox keep mask of a (b, h) drawn once in one vectorised pass; dbias
// summed in double in batch order. Single-threaded apart from OpenBLAS (which splits GEMMs by output
// blocks, not by sums): bitwise identical run to run. Error vs the reference at the shapes of
// tests/kernels/test_attention_cpu_fast.cpp: NMSE <= 3e-13 for float (test threshold 1e-11), ~3e-31
// for double (instantiated for both; f64 tensors and the gradchecks keep the reference).
template <class T, class Mask>
void attention_forward_fast(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias,
                            const AttentionShape& shape, const AttentionDropout& dropout, T* out, T* probs);

template <class T>
void attention_backward_fast(const T* q, const T* k, const T* v, const T* probs, const T* dout,
                             const AttentionShape& shape, const AttentionDropout& dropout, T* dq, T* dk, T* dv,
                             T* dbias, bool accumulate_dbias);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers, asynchronous on `stream`. T = float, double, __nv_bfloat16 or __half; Mask = uint8_t
// or int32_t; Acc = AttentionAccumulator<T> (float, or double for double). Workspaces (device memory
// the caller owns):
//   score_workspace: (B, H, T, T) Acc
//   prob_workspace:  (B, H, T, T) T — needed only when dropout is active (may be null otherwise)
// Shapes and outputs as in the CPU reference.
template <class T, class Mask>
void attention_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias,
                       const AttentionShape& shape, const AttentionDropout& dropout, T* out, T* probs,
                       AttentionAccumulator<T>* score_workspace, T* prob_workspace, cudaStream_t stream);

// Workspaces: score_workspace (B, H, T, T) Acc and prob_workspace (B, H, T, T) T, both required.
// dq, dk, dv may be null to skip them. dbias: (H, T, T) Acc, or null; overwritten unless
// accumulate_dbias (Acc so that the batch reduction is not rounded to a 16-bit T).
template <class T>
void attention_backward(const T* q, const T* k, const T* v, const T* probs, const T* dout, const AttentionShape& shape,
                        const AttentionDropout& dropout, T* dq, T* dk, T* dv, AttentionAccumulator<T>* dbias,
                        bool accumulate_dbias, AttentionAccumulator<T>* score_workspace, T* prob_workspace,
                        cudaStream_t stream);

// Second variant: a fused flash-style forward (tiles in shared memory, online softmax) that never
// materialises the (B, H, T, T) scores. Same semantics and dropout mask as attention_forward; it
// writes lse: (B, H, T) Acc, the log-sum-exp of each query's masked scores (-Inf for a fully padded
// query), or skips it when null. head_dim <= kFlashAttentionMaxHeadDim (<= 76 for double, whose tiles
// need twice the shared memory); B * H <= 65535.
inline constexpr int64_t kFlashAttentionMaxHeadDim = 128;
template <class T, class Mask>
void flash_attention_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias,
                             const AttentionShape& shape, const AttentionDropout& dropout, T* out,
                             AttentionAccumulator<T>* lse, cudaStream_t stream);

}  // namespace coco::kernels::cuda
