// GELU activation, exact (erf) and tanh-approximated, forward and backward (standalone elementwise
// kernels; GEMM epilogue fusion lives with the linear layer).
//
//   erf:  gelu(x) = 0.5 x (1 + erf(x / sqrt 2)),
//         gelu'(x) = 0.5 (1 + erf(x / sqrt 2)) + x exp(-x^2 / 2) / sqrt(2 pi)
//   tanh: u = sqrt(2 / pi) (x + 0.044715 x^3),  gelu(x) = 0.5 x (1 + tanh u),
//         gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2 / pi) (1 + 3 * 0.044715 x^2)
// NaN propagates; gelu(+inf) = +inf, gelu(-inf) = NaN (-inf * 0, as in PyTorch).
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

enum class GeluApproximation : uint8_t { erf, tanh };

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// x, out: (n)
template <class T>
void gelu_forward(T* out, const T* x, int64_t n, GeluApproximation approximation);
// dx = dout * gelu'(x), written (=). x, dout, dx: (n)
template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, int64_t n, GeluApproximation approximation);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// T: float, __nv_bfloat16 or __half; math in f32.
template <class T>
void gelu_forward(T* out, const T* x, int64_t n, GeluApproximation approximation, cudaStream_t stream);
template <class T>
void gelu_backward(T* dx, const T* dout, const T* x, int64_t n, GeluApproximation approximation, cudaStream_t stream);

}  // namespace coco::kernels::cuda
