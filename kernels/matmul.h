// Matrix multiplication: general row-major GEMM, strided-batched GEMM, and the fused linear forward
// (GEMM + bias + GELU epilogue) with the GELU backward.
//
// Conventions (all row-major, like the rest of the engine):
//   C (M, N) = alpha * op(A) . op(B) + beta * C,  op(A): (M, K), op(B): (K, N).
//   A is stored (M, K) with row stride lda, or (K, M) when trans_a; B is stored (K, N) with row stride
//   ldb, or (N, K) when trans_b; C is (M, N) with row stride ldc. beta == 0 ignores C's old contents
//   (NaN included), as in BLAS.
//
// CPU: OpenBLAS sgemm/dgemm for float/double; bf16/f16 operands are widened to f32, multiplied by
// sgemm with f32 accumulation, and the result is rounded to the output type once.
// CUDA: cuBLASLt with CUBLAS_COMPUTE_32F (64F for double), bias/GELU epilogues, one handle per
// device and a 32 MiB workspace per (device, stream). The `emulated` build runs the same code; its
// cuBLASLt is the runtime layer's CPU implementation (engine/simt/emu_cublaslt.cpp), so the
// descriptors, layouts and epilogues are exercised in CI.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

enum class Activation : uint8_t { none, gelu_erf, gelu_tanh };

constexpr const char* activation_name(Activation act) {
  switch (act) {
    case Activation::none:
      return "none";
    case Activation::gelu_erf:
      return "gelu_erf";
    case Activation::gelu_tanh:
      return "gelu_tanh";
  }
  return "?";
}

namespace detail {

// GELU and its derivative in precision C (float or double), shared by the CPU and CUDA paths (the
// same formulas as the standalone GELU in kernels/gelu_math.h).
//   gelu_erf(x)  = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
//   gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (the approximation cuBLASLt's
//                  GELU epilogue and GPT-2 / llm.c use)
template <class C>
__host__ __device__ inline C apply_activation(Activation act, C x) {
  if (act == Activation::gelu_erf) {
    const C inv_sqrt2 = C(0.70710678118654752440);
    if constexpr (std::is_same_v<C, float>)
      return C(0.5) * x * (C(1) + erff(x * inv_sqrt2));
    else
      return C(0.5) * x * (C(1) + erf(x * inv_sqrt2));
  }
  if (act == Activation::gelu_tanh) {
    const C sqrt_2_over_pi = C(0.79788456080286535588), cubic = C(0.044715);
    const C inner = sqrt_2_over_pi * (x + cubic * x * x * x);
    if constexpr (std::is_same_v<C, float>)
      return C(0.5) * x * (C(1) + tanhf(inner));
    else
      return C(0.5) * x * (C(1) + tanh(inner));
  }
  return x;
}

// d act(x) / dx.
template <class C>
__host__ __device__ inline C activation_derivative(Activation act, C x) {
  if (act == Activation::gelu_erf) {
    const C inv_sqrt2 = C(0.70710678118654752440), inv_sqrt_2pi = C(0.39894228040143267794);
    if constexpr (std::is_same_v<C, float>)
      return C(0.5) * (C(1) + erff(x * inv_sqrt2)) + x * inv_sqrt_2pi * expf(C(-0.5) * x * x);
    else
      return C(0.5) * (C(1) + erf(x * inv_sqrt2)) + x * inv_sqrt_2pi * exp(C(-0.5) * x * x);
  }
  if (act == Activation::gelu_tanh) {
    const C sqrt_2_over_pi = C(0.79788456080286535588), cubic = C(0.044715);
    const C inner = sqrt_2_over_pi * (x + cubic * x * x * x);
    C t;
    if constexpr (std::is_same_v<C, float>)
      t = tanhf(inner);
    else
      t = tanh(inner);
    const C sech2 = C(1) - t * t;
    // For large |x| sech2 is exactly 0 while x^2 may overflow: skip the term rather than form 0 * inf.
    const C slope = sech2 == C(0) ? C(0) : C(0.5) * x * sech2 * sqrt_2_over_pi * (C(1) + C(3) * cubic * x * x);
    return C(0.5) * (C(1) + t) + slope;
  }
  return C(1);
}

}  // namespace detail
}  // namespace coco::kernels

namespace coco::kernels::cpu {

// C = alpha * op(A) . op(B) + beta * C (see the conventions above). Instantiated for In == Out in
// {float, double, __nv_bfloat16, __half} and for an f32 C with bf16/f16 A and B.
template <class In, class Out>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const In* A, int64_t lda,
          const In* B, int64_t ldb, double beta, Out* C, int64_t ldc);

// `batch` independent GEMMs; matrix i of A starts at A + i * stride_a (likewise B, C).
template <class In, class Out>
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const In* A,
                          int64_t lda, int64_t stride_a, const In* B, int64_t ldb, int64_t stride_b, double beta,
                          Out* C, int64_t ldc, int64_t stride_c, int64_t batch);

// Linear forward, PyTorch nn.Linear layout:
//   pre = x . W^T + bias, y = act(pre).
//   x: (rows, in), W: (out, in), bias: (out) or null, y: (rows, out), pre_act: (rows, out) or null.
// pre_act receives the pre-activation (needed by the backward) when act != none; with act == none
// it is not written. Instantiated for float and double.
template <class T>
void linear_forward(const T* x, const T* W, const T* bias, Activation act, int64_t rows, int64_t in, int64_t out, T* y,
                    T* pre_act);

// dpre = dy * act'(pre).  dy, pre, dpre: (n); dpre may alias dy.
template <class T>
void activation_backward(Activation act, const T* dy, const T* pre, T* dpre, int64_t n);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers; same contracts as the CPU versions; asynchronous on `stream`.
template <class In, class Out>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const In* A, int64_t lda,
          const In* B, int64_t ldb, double beta, Out* C, int64_t ldc, cudaStream_t stream);

template <class In, class Out>
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const In* A,
                          int64_t lda, int64_t stride_a, const In* B, int64_t ldb, int64_t stride_b, double beta,
                          Out* C, int64_t ldc, int64_t stride_c, int64_t batch, cudaStream_t stream);

// Fused linear forward: bias (and GELU where cuBLASLt has it: gelu_tanh, 16-bit T, out % 8 == 0)
// in the GEMM epilogue. The pre-activation is rounded to T once; y = round(act(p)) where p is the
// f32 pre-activation when the epilogue applies the activation, else the saved pre-activation (already
// rounded to T, the value the backward differentiates at). Instantiated for float, double,
// __nv_bfloat16, __half.
template <class T>
void linear_forward(const T* x, const T* W, const T* bias, Activation act, int64_t rows, int64_t in, int64_t out, T* y,
                    T* pre_act, cudaStream_t stream);

template <class T>
void activation_backward(Activation act, const T* dy, const T* pre, T* dpre, int64_t n, cudaStream_t stream);

// Linear backward, weight and bias gradients from one GEMM:
//   dW (out, in) += dy^T . x        dy: (rows, out), x: (rows, in)
//   db (out)     += column sums of dy   (when db and db_scratch are non-null)
// The column sums come from cuBLASLt's BGRADB epilogue of the dW GEMM, written into db_scratch (out
// elements of Out: cuBLASLt writes the bias gradient, it cannot accumulate) and added to db by one
// kernel; a separate column-sum reduction is saved. Returns whether db was updated: false (dW still
// updated) for f64, an empty product or no BGRADB algorithm, and the caller sums the columns
// itself. Out is In, or f32 for bf16/f16 In (f32 gradient buffers); the same instantiations as gemm.
template <class In, class Out>
bool linear_backward_weight(const In* dy, const In* x, int64_t rows, int64_t in, int64_t out, Out* dW, Out* db,
                            Out* db_scratch, cudaStream_t stream);

// Releases the per-device cuBLASLt handles and workspaces. Optional: they are otherwise reclaimed
// at process exit.
void release_gemm_resources();

}  // namespace coco::kernels::cuda
