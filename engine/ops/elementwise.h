// Elementwise ops and reductions on tensors, recorded on the tape.
//
// Binary ops take tensors of identical shape, dtype and device (no broadcasting). CPU tensors must be
// f32 or f64; CUDA tensors may be f32, f64, bf16 or f16 (16-bit values are computed in f32).
#pragma once
#include "engine/tensor.h"

namespace coco::ops {

// dst += src, same shape and device, floating-point dtypes. Equal dtypes and an f32 dst with a
// bf16/f16 src (f32 gradient buffers of 16-bit tensors, summed in f32) run as one kernel; any other
// pair converts src to dst's dtype first. Not recorded on the tape: this is the gradient
// accumulation used by BackwardContext.
void add_inplace(Tensor& dst, const Tensor& src);

Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
// s * x for a host scalar s.
Tensor scale(const Tensor& x, double s);
// a + s * b.
Tensor add_scaled(const Tensor& a, const Tensor& b, double s);

// Sum (mean) of all elements: a 0-d tensor of x's dtype. Deterministic on both backends.
Tensor sum(const Tensor& x);
Tensor mean(const Tensor& x);
// Sum over the last dimension: x (..., C) -> (...). A rank-1 x gives a 0-d tensor.
Tensor row_sum(const Tensor& x);

}  // namespace coco::ops
