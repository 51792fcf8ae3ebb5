// Deterministic reductions: full sum (and mean through `scale`), row sums over the last dimension,
// column sums accumulated into a bias gradient, and the broadcasts that are their backwards.
//
// CUDA: f32 accumulation for float/bf16/f16 (f64 for double), fixed reduction trees and a fixed
// number of partial sums that depends only on the shape, so results are bitwise reproducible run to
// run and independent of block scheduling. No float atomics.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels::cpu {

// out[0] = scale * sum_i x[i] (accumulated in double).  x: (n), out: (1)
template <class T>
void sum(const T* x, int64_t n, double scale, T* out);

// out[r] = sum_c x[r, c].  x: (rows, cols), out: (rows)
template <class T>
void row_sum(const T* x, int64_t rows, int64_t cols, T* out);

// out[c] = beta * out[c] + sum_r x[r, c] (beta == 0 ignores out's old contents, NaN included).
// x: (rows, cols), out: (cols)
template <class T>
void column_sum(const T* x, int64_t rows, int64_t cols, double beta, T* out);

// dx[i] = scale * dy[0].  dy: (1), dx: (n)
template <class T>
void sum_backward(const T* dy, int64_t n, double scale, T* dx);

// dx[r, c] = dy[r].  dy: (rows), dx: (rows, cols)
template <class T>
void row_sum_backward(const T* dy, int64_t rows, int64_t cols, T* dx);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Bytes of device scratch the CUDA sum needs for n elements (per-block partials).
size_t sum_workspace_bytes(int64_t n);
// Device pointers; `workspace` holds at least sum_workspace_bytes(n) bytes (any alignment of 16).
template <class T>
void sum(const T* x, int64_t n, double scale, T* out, void* workspace, cudaStream_t stream);

template <class T>
void row_sum(const T* x, int64_t rows, int64_t cols, T* out, cudaStream_t stream);

// Bytes of scratch column_sum needs (per-row-chunk partials; 0 when one chunk covers all rows).
size_t column_sum_workspace_bytes(int64_t rows, int64_t cols);
// out[c] = beta * out[c] + sum_r x[r, c], summed in f32 (f64 for double) and rounded once to Out.
// Instantiated for In == Out and for an f32 out with bf16/f16 x (f32 bias gradients).
template <class In, class Out>
void column_sum(const In* x, int64_t rows, int64_t cols, double beta, Out* out, void* workspace, cudaStream_t stream);

// dy is a device pointer to one element.
template <class T>
void sum_backward(const T* dy, int64_t n, double scale, T* dx, cudaStream_t stream);

template <class T>
void row_sum_backward(const T* dy, int64_t rows, int64_t cols, T* dx, cudaStream_t stream);

}  // namespace coco::kernels::cuda
