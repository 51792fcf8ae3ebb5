// Softmax and log-softmax over the last dimension of a (rows, width) array, forward and backward.
// Special values follow kernels/softmax_math.h (NaN rows, +-Inf, fully -Inf rows give zeros / -Inf
// and zero gradient). CPU: float and double, reductions in double. CUDA: float, bf16 and half
// activations with float statistics (and double with double statistics); a warp per row up to kWarpRowMaxWidth, a block
// per row above. The CUDA kernels are deterministic (fixed reduction trees).
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

// Widths up to this many elements are handled by one warp per row; wider rows by a whole block.
inline constexpr int64_t kSoftmaxWarpRowMaxWidth = 1024;

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// x: (rows, width) -> y: (rows, width), y = exp(x - max) / sum exp(x - max). x and y may alias.
template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t width);

// x: (rows, width) -> y: (rows, width), y = x - max - log sum exp(x - max). x and y may alias.
template <class T>
void log_softmax_forward(const T* x, T* y, int64_t rows, int64_t width);

// y: softmax output (rows, width), dy: (rows, width) -> dx: (rows, width), overwritten:
// dx = y * (dy - sum_j dy_j y_j). dx may alias dy.
template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t width);

// y: log-softmax output (rows, width), dy: (rows, width) -> dx: (rows, width), overwritten:
// dx = dy - exp(y) * sum_j dy_j (0 where y = -Inf). dx may alias dy.
template <class T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t width);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Same contracts as the CPU versions, on device pointers, asynchronous on `stream`.
// T = float, double, __nv_bfloat16 or __half; statistics and accumulation in float (double for double).
template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t width, cudaStream_t stream);
template <class T>
void log_softmax_forward(const T* x, T* y, int64_t rows, int64_t width, cudaStream_t stream);
template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t width, cudaStream_t stream);
template <class T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t width, cudaStream_t stream);

}  // namespace coco::kernels::cuda
