// LayerNorm over the last dimension, and the fused residual-add + LayerNorm, recorded on the tape.
// Semantics and numerics: kernels/layernorm.h. CPU tensors f32 or f64; CUDA tensors f32, bf16 or f16
// (statistics in f32). x, residual, gamma and beta share dtype and device.
#pragma once
#include "engine/tensor.h"

namespace coco::ops {

inline constexpr double kDefaultLayerNormEps = 1e-5;

// x: (..., C), gamma, beta: (C) -> (..., C).
// Saved for the backward: x, gamma and the per-row f32 mean and rstd (f64 for f64 tensors).
// dgamma/dbeta accumulate into the parameters' gradient buffers (f32 buffers for 16-bit parameters
// are supported) with a deterministic reduction.
Tensor layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps = kDefaultLayerNormEps);

// out = LayerNorm(x + residual); x, residual: (..., C). The sum is computed once, rounded to the
// tensors' dtype and normalized as rounded. Post-norm blocks use this.
Tensor residual_layernorm(const Tensor& x, const Tensor& residual, const Tensor& gamma, const Tensor& beta,
                          double eps = kDefaultLayerNormEps);

struct ResidualLayerNormOutputs {
  Tensor out;  // LayerNorm(x + residual)
  Tensor sum;  // x + residual (the next residual stream, for pre-norm blocks); differentiable too
};

// Both outputs of the fused op. Gradients reaching `sum` are added to those flowing back through
// the normalization.
ResidualLayerNormOutputs residual_layernorm_with_sum(const Tensor& x, const Tensor& residual, const Tensor& gamma,
                                                     const Tensor& beta, double eps = kDefaultLayerNormEps);

}  // namespace coco::ops
