// Tensor-core attention for bf16 and f16 (FlashAttention-2 structure), same semantics as the attention
// core of kernels/attention.h: scale Dh^-0.5, additive bias (H, T, T), key padding mask, softmax,
// dropout on the probabilities with the same Philox mask (element index ((b*H + h)*T + i)*T + j), and
// a fully padded query row outputting zeros with a zero gradient.
//
// Forward: one CTA of 4 warps per (64-query tile, b, h); K/V tiles of 64 keys stream through shared
// memory with cp.async double buffering; S = Q K^T and O += P_drop V with mma.sync m16n8k16 (f32
// accumulators); the online softmax stays in registers; the log-sum-exp of each row is saved.
// Backward (deterministic, no atomics): delta_i = dO_i . O_i; a dK/dV kernel with a CTA per (64-key
// tile, b, h) walking the query tiles (Q, dO double-buffered with cp.async); a dQ kernel with a CTA
// per (64-query tile, b, h) walking the key tiles; both recompute P from Q, K and the saved log-sum-exp.
// With a dense bias gradient the dK/dV kernel takes one CTA per (key tile, h) and walks the batch in
// order, so dbias[h, i, j] = sum_b dS[b, h, i, j] is summed in batch order by the one CTA that owns
// (i, j); the relative-position table's gradient keeps the (key tile, b, h) grid (see below).
//
// Differences from the reference that the NMSE tests bound: P is rounded to 16 bits before the P V and
// dS products (as in every FlashAttention), and delta is taken from the 16-bit output. NaN and Inf
// follow kernels/softmax_math.h's rules as the reference applies them: a NaN score or two +Inf make the
// row's output, log-sum-exp and gradients NaN; one +Inf gives NaN where it is kept (0 where dropout
// drops it) and lse +Inf; masked keys of a NaN row get NaN gradients as in the reference. (One case is
// left: a NaN row all of whose probabilities dropout drops outputs NaN here, zeros there.)
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"
#include "kernels/attention.h"
#include "kernels/relpos.h"

namespace coco::kernels::cuda {

// Head dims with a tensor-core kernel (16, 32, 64, 128); other shapes stay on the SIMT kernels.
bool tc_attention_supports(const AttentionShape& shape);

// T = __nv_bfloat16 or __half; Mask = uint8_t or int32_t. q, k, v, out: (B, H, T, Dh); key_mask: (B, T)
// or null; bias: (H, T, T) or null; lse: (B, H, T) f32 (natural log; -Inf for a fully padded row).
// Throws std::invalid_argument (naming the op) for an unsupported head dim or grid.
template <class T, class Mask>
void tc_attention_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias,
                          const AttentionShape& shape, const AttentionDropout& dropout, T* out, float* lse,
                          cudaStream_t stream);

// out and lse from the forward; dout: (B, H, T, Dh). dq, dk, dv: (B, H, T, Dh), overwritten (each may be
// null to skip it: dk and dv are computed together); dbias: (H, T, T) f32 or null, overwritten unless
// accumulate_dbias. delta_workspace: (B, H, T) f32, required.
template <class T, class Mask>
void tc_attention_backward(const T* q, const T* k, const T* v, const T* out, const T* dout, const float* lse,
                           const Mask* key_mask, const T* bias, const AttentionShape& shape,
                           const AttentionDropout& dropout, T* dq, T* dk, T* dv, float* dbias, bool accumulate_dbias,
                           float* delta_workspace, cudaStream_t stream);

// Relative-position bias taken from the table inside the kernels: bias[h, i, j] = table(h, bucket(j - i))
// (kernels/relpos.h; table of buckets x heads per `layout`, in T's precision). Each CTA gathers the
// 2T - 1 values of its head into shared memory; no (H, T, T) bias is materialised in the forward.
// T <= config.max_positions.
template <class T, class Mask>
void tc_attention_relpos_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const T* table,
                                 BiasTableLayout layout, const RelativePositionConfig& config,
                                 const AttentionShape& shape, const AttentionDropout& dropout, T* out, float* lse,
                                 cudaStream_t stream);

// Device workspaces of the relative-position backward: delta (B, H, T) f32 always; when dtable is
// wanted, partials (tc_relpos_partials_elements(shape) f32) and drel (H, 2T - 1) f32.
struct TcRelposWorkspace {
  float* delta = nullptr;
  float* partials = nullptr;
  float* drel = nullptr;
};
// B * H * ceil(T / 64) * (T + 63): one partial per (key tile, b, h) and relative position it covers.
int64_t tc_relpos_partials_elements(const AttentionShape& shape);

// dtable (layout as the table) f32, or null. Deterministic, without atomics: each dK/dV CTA (key tile,
// b, h) sums its dS along every diagonal j - i in a fixed order (per warp in shared memory, then the
// warps in order) into its partials; one thread per (h, j - i) adds the partials over b and then the
// key tiles in ascending order; the relative positions of each bucket are added in ascending order.
// Overwritten unless accumulate_dtable.
template <class T, class Mask>
void tc_attention_relpos_backward(const T* q, const T* k, const T* v, const T* out, const T* dout, const float* lse,
                                  const Mask* key_mask, const T* table, BiasTableLayout layout,
                                  const RelativePositionConfig& config, const AttentionShape& shape,
                                  const AttentionDropout& dropout, T* dq, T* dk, T* dv, float* dtable,
                                  bool accumulate_dtable, const TcRelposWorkspace& workspace, cudaStream_t stream);

}  // namespace coco::kernels::cuda
