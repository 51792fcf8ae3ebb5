// Standalone GELU (exact erf form or tanh approximation), recorded on the tape. Semantics:
// kernels/gelu.h. CPU tensors f32 or f64; CUDA tensors f32, bf16 or f16 (math in f32). For GELU fused
// into a linear layer's epilogue see ops::linear.
#pragma once
#include "engine/tensor.h"
#include "kernels/gelu.h"

namespace coco::ops {

using GeluApproximation = kernels::GeluApproximation;

// x: any shape -> same shape. Saved for the backward: x.
Tensor gelu(const Tensor& x, GeluApproximation approximation = GeluApproximation::erf);

}  // namespace coco::ops
