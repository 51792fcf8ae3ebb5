// Row L2 normalisation as F.normalize(x, p=2, dim=-1, eps): y = x / max(||x||, eps).
//
//   n     = ||x_row||_2
//   y     = x / (n < eps ? eps : n)          (a NaN norm propagates to the whole row, as in PyTorch)
//   dx    = dy / n - x * (x . dy) / n^3      when n >= eps (the gradient through the norm)
//   dx    = dy / eps                          when n < eps (the clamp's gradient is zero)
// The backward takes the input and the saved row norms, not y, so bf16 outputs do not round the
// gradient's projection term.
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels::cpu {

// x: (rows, dim) -> y: (rows, dim), norms: (rows)
template <class T>
void l2_normalize_forward(const T* x, int64_t rows, int64_t dim, double eps, T* y, T* norms);

// x: (rows, dim), norms: (rows), dy: (rows, dim) -> dx: (rows, dim) (overwritten)
template <class T>
void l2_normalize_backward(const T* x, const T* norms, const T* dy, int64_t rows, int64_t dim, double eps, T* dx);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// T: float, __nv_bfloat16, __half; norms f32; one warp per row, f32 accumulation.
template <class T>
void l2_normalize_forward(const T* x, int64_t rows, int64_t dim, float eps, T* y, float* norms, cudaStream_t stream);

template <class T>
void l2_normalize_backward(const T* x, const float* norms, const T* dy, int64_t rows, int64_t dim, float eps, T* dx,
                           cudaStream_t stream);

}  // namespace coco::kernels::cuda
