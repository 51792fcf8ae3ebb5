// LayerNorm over the last dimension, plus the fused residual-add + LayerNorm used by both pre-norm
// and post-norm blocks.
//
//   mean = sum_c x[r,c] / C,  var = sum_c (x[r,c] - mean)^2 / C,  rstd = 1 / sqrt(var + eps)
//   out[r,c] = (x[r,c] - mean) * rstd * gamma[c] + beta[c]
//
// Backward (xhat = (x - mean) * rstd, g = dout * gamma):
//   dx = rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))        written (=), plus dx_extra if given
//   dgamma += sum_r dout * xhat,  dbeta += sum_r dout             accumulated (+=)
// The CUDA dgamma/dbeta reduction is deterministic: per-chunk partials over a fixed row split, then a
// fixed-order sum over chunks (no atomics), so results are bitwise reproducible run to run.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels::cpu {

// x, out: (rows, C); gamma, beta: (C); mean, rstd: (rows) or nullptr (not saved).
template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* gamma, const T* beta, int64_t rows, int64_t C,
                       double eps);

// sum = x + residual (written to `sum`), out = LayerNorm(sum). All (rows, C) except gamma, beta: (C)
// and mean, rstd: (rows) or nullptr.
template <class T>
void residual_layernorm_forward(T* out, T* sum, T* mean, T* rstd, const T* x, const T* residual, const T* gamma,
                                const T* beta, int64_t rows, int64_t C, double eps);

// dout, x, dx, dx_extra: (rows, C); gamma: (C); mean, rstd: (rows) as saved by the forward.
// dx (nullptr: not wanted) is overwritten with the input gradient plus dx_extra (nullptr: none; the
// residual variant passes the gradient of its `sum` output here). dgamma/dbeta (nullptr: not wanted)
// are accumulated into.
template <class T>
void layernorm_backward(T* dx, T* dgamma, T* dbeta, const T* dout, const T* dx_extra, const T* x, const T* gamma,
                        const T* mean, const T* rstd, int64_t rows, int64_t C);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// T: float, __nv_bfloat16 or __half; statistics and arithmetic in f32; mean/rstd saved in f32.
// Shapes as in the CPU versions.
template <class T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* x, const T* gamma, const T* beta, int64_t rows,
                       int64_t C, float eps, cudaStream_t stream);

template <class T>
void residual_layernorm_forward(T* out, T* sum, float* mean, float* rstd, const T* x, const T* residual, const T* gamma,
                                const T* beta, int64_t rows, int64_t C, float eps, cudaStream_t stream);

// Bytes of device scratch layernorm_backward needs for the dgamma/dbeta partials (0 when neither
// dgamma nor dbeta is wanted is also accepted by passing workspace = nullptr then).
size_t layernorm_backward_workspace_bytes(int64_t rows, int64_t C);

// GradT (type of dgamma/dbeta): float, or T itself. workspace: layernorm_backward_workspace_bytes()
// bytes of device memory (contents ignored), needed when dgamma or dbeta is given.
template <class T, class GradT>
void layernorm_backward(T* dx, GradT* dgamma, GradT* dbeta, const T* dout, const T* dx_extra, const T* x,
                        const T* gamma, const float* mean, const float* rstd, int64_t rows, int64_t C, void* workspace,
                        cudaStream_t stream);

}  // namespace coco::kernels::cuda
