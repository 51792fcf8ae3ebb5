// Matrix products on tensors, recorded on the tape: matmul (2-D), bmm (batched 3-D, used by
// attention) and linear (nn.Linear layout with a fused bias + GELU epilogue).
//
// CPU tensors: f32 or f64 (OpenBLAS). CUDA tensors: f32, f64, bf16 or f16 (cuBLASLt with f32
// accumulation; the CPU GEMM in the emulated build). Operands share dtype and device.
#pragma once
#include "engine/tensor.h"
#include "kernels/matmul.h"

namespace coco::ops {

using Activation = kernels::Activation;

// op(a) . op(b) with op(a): (M, K), op(b): (K, N) -> (M, N).
// a is stored (M, K), or (K, M) when trans_a; b is stored (K, N), or (N, K) when trans_b.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// Batched matmul: a (B, M, K) [(B, K, M) when trans_a], b (B, K, N) [(B, N, K) when trans_b]
// -> (B, M, N). Attention uses bmm(q, k, false, true) for q . k^T and bmm(p, v) for p . v.
Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);

// y = act(x . W^T + bias), PyTorch nn.Linear layout:
//   x: (..., in), W: (out, in), bias: (out) or undefined -> y: (..., out).
// The backward accumulates dW (and db) into the parameters' gradient buffers with beta = 1; the
// buffers may be f32 for bf16/f16 parameters (Tensor::set_grad_dtype). With a GELU the
// pre-activation is saved for the backward.
Tensor linear(const Tensor& x, const Tensor& W, const Tensor& bias = Tensor(), Activation act = Activation::none);

}  // namespace coco::ops
