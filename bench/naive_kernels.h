// "Naive" baselines for coco-bench: the straightforward one-thread-per-element or one-thread-per-row
// CUDA kernel a first attempt would write (no vectorised loads, no warp reductions, no shared-memory
// tiling). They show what the tuned kernels gain; each is validated against the same CPU reference
// as the kernel it is compared with. Element type: bf16 storage, f32 math. All asynchronous on
// `stream`.
#pragma once
#include <cstdint>

#include "engine/rng/philox.h"
#include "engine/runtime/cuda_api.h"

namespace coco::bench::naive {

// One thread per row. x, out: (rows, C) bf16; gamma, beta: (C) bf16.
void layernorm_forward(__nv_bfloat16* out, const __nv_bfloat16* x, const __nv_bfloat16* gamma,
                       const __nv_bfloat16* beta, int64_t rows, int64_t C, float eps, cudaStream_t stream);

// One thread per element, exact (erf) GELU. x, out, dout, dx: (n)
void gelu_forward(__nv_bfloat16* out, const __nv_bfloat16* x, int64_t n, cudaStream_t stream);
void gelu_backward(__nv_bfloat16* dx, const __nv_bfloat16* dout, const __nv_bfloat16* x, int64_t n,
                   cudaStream_t stream);

// One thread per row. x, y: (rows, width)
void softmax_forward(__nv_bfloat16* y, const __nv_bfloat16* x, int64_t rows, int64_t width, cudaStream_t stream);

// One thread per output element. in (B, T, H*Dh) -> out (B, H, T, Dh)
void split_heads(__nv_bfloat16* out, const __nv_bfloat16* in, int64_t B, int64_t T, int64_t H, int64_t Dh,
                 cudaStream_t stream);

// One thread per element, the same Philox mask as kernels/dropout.h (index i, no offset).
void dropout_apply(__nv_bfloat16* out, const __nv_bfloat16* x, int64_t n, float p, const rng::Stream& rng,
                   cudaStream_t stream);

// One thread per element. bf16 -> f32.
void cast_bf16_to_f32(float* out, const __nv_bfloat16* in, int64_t n, cudaStream_t stream);

// One thread per output element: out[b,t,:] = tok[ids[b,t],:] + pos[t,:] (ids assumed valid).
void embedding_forward(__nv_bfloat16* out, const int32_t* ids, const __nv_bfloat16* tok, const __nv_bfloat16* pos,
                       int64_t B, int64_t T, int64_t E, cudaStream_t stream);

// One thread per row: row_lse[r] = logsumexp(logits[r,:]), row_loss[r] = row_lse[r] - logits[r, target[r]]
// (0 for targets outside [0, V)). logits: (rows, V) bf16.
void cross_entropy_rows(float* row_loss, float* row_lse, const __nv_bfloat16* logits, const int32_t* targets,
                        int64_t rows, int64_t V, cudaStream_t stream);

// One thread per row: y = x / max(||x||, eps), norms: (rows) f32. x, y: (rows, dim)
void l2_normalize_forward(__nv_bfloat16* y, float* norms, const __nv_bfloat16* x, int64_t rows, int64_t dim, float eps,
                          cudaStream_t stream);

// One thread per element: out[m, :] = src[index[m], :] (index assumed valid).
void gather_rows(__nv_bfloat16* out, const __nv_bfloat16* src, const int32_t* index, int64_t count, int64_t dim,
                 cudaStream_t stream);

// One thread per element of one flat buffer (torch.optim.AdamW with f32 master weights and grads).
// decay_factor = 1 - lr*wd, step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t).
void adamw_flat(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, float decay_factor,
                float beta1, float beta2, float step_size, float bc2_sqrt, float eps, cudaStream_t stream);

// The naive three-kernel attention forward without dropout (the baseline that stands in for cuDNN's
// fused SDPA): S = scale * q k^T + bias (-inf where key_mask == 0), one thread per score; row softmax,
// one thread per row; out = P v, one thread per output element.
// q, k, v, out: (B, H, T, Dh) bf16; key_mask: (B, T) u8 or null; bias: (H, T, T) bf16 or null;
// scores: (B, H, T, T) f32 scratch, holding P afterwards.
void attention_forward(__nv_bfloat16* out, float* scores, const __nv_bfloat16* q, const __nv_bfloat16* k,
                       const __nv_bfloat16* v, const uint8_t* key_mask, const __nv_bfloat16* bias, int64_t B, int64_t H,
                       int64_t T, int64_t Dh, cudaStream_t stream);

}  // namespace coco::bench::naive
