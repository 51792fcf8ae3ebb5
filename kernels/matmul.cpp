// CPU GEMM on OpenBLAS (single-threaded calls on fixed panels, see panel_gemm), and the CPU linear
// forward / activation backward.
#include "kernels/matmul.h"

#include <cblas.h>

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/runtime/cpu_backend.h"
#include "kernels/cast_convert.h"

namespace coco::kernels::cpu {
namespace {

std::string gemm_shape(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb,
                       int64_t ldc) {
  return "(trans_a=" + std::to_string(trans_a) + ", trans_b=" + std::to_string(trans_b) + ", M=" + std::to_string(M) +
         ", N=" + std::to_string(N) + ", K=" + std::to_string(K) + ", lda=" + std::to_string(lda) +
         ", ldb=" + std::to_string(ldb) + ", ldc=" + std::to_string(ldc) + ")";
}

// Dimensions must be non-negative, fit BLAS's int, and each leading dimension must cover its rows.
void check_gemm_arguments(const char* op, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, int64_t lda,
                          int64_t ldb, int64_t ldc) {
  const auto fail = [&](const std::string& why) {
    throw std::invalid_argument(std::string(op) + ": " + why + " " +
                                gemm_shape(trans_a, trans_b, M, N, K, lda, ldb, ldc));
  };
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (M < 0 || N < 0 || K < 0) fail("negative dimension");
  if (M > kIntMax || N > kIntMax || K > kIntMax || lda > kIntMax || ldb > kIntMax || ldc > kIntMax)
    fail("dimension beyond the 32-bit BLAS range");
  const int64_t a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
  if (lda < std::max<int64_t>(1, a_cols)) fail("lda smaller than the stored row length of A");
  if (ldb < std::max<int64_t>(1, b_cols)) fail("ldb smaller than the stored row length of B");
  if (ldc < std::max<int64_t>(1, N)) fail("ldc smaller than N");
}

// Copies a (rows, cols) matrix with row stride ld into a dense f32 matrix.
template <class In>
std::vector<float> widen(const In* source, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> dense(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      dense[static_cast<size_t>(r * cols + c)] = detail::convert_element<float>(source[r * ld + c]);
  return dense;
}

// C = alpha op(A) op(B) + beta C as a fixed number of row (or column) panels of C, each one
// single-threaded BLAS call, spread over the CPU pool. The panels depend on the shape alone, never on
// the thread count, so every element of C is computed by the same call sequence for any number of
// threads: bitwise-reproducible GEMMs (OpenBLAS's own threading splits the work by thread count and
// rounds differently at 1 and 2 threads). blas(m, n, a, b, c) runs one panel.
template <class T, class Blas>
void panel_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                int64_t ldb, T* C, int64_t ldc, Blas&& blas) {
  constexpr double kFlopsPerPanel = 4.0 * (1 << 20);  // below this a panel does not pay for its packing
  constexpr int64_t kMaxPanels = 16, kAlign = 16;     // panel edges on the BLAS kernels' 16-row/column tiles
  const bool by_rows = M >= N;
  const int64_t extent = by_rows ? M : N;
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  const int64_t wanted = std::clamp<int64_t>(static_cast<int64_t>(flops / kFlopsPerPanel), 1, kMaxPanels);
  const int64_t step = std::max<int64_t>(kAlign, ((extent + wanted - 1) / wanted + kAlign - 1) / kAlign * kAlign);
  const int64_t panels = (extent + step - 1) / step;
  runtime::cpu::parallel_for(panels, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t p = lo; p < hi; ++p) {
      const int64_t start = p * step, len = std::min(step, extent - start);
      if (by_rows)
        blas(len, N, A + (trans_a ? start : start * lda), B, C + start * ldc);
      else
        blas(M, len, A, B + (trans_b ? start * ldb : start), C + start);
    }
  });
}

// gemm on validated arguments.
template <class In, class Out>
void gemm_unchecked(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const In* A, int64_t lda,
                    const In* B, int64_t ldb, double beta, Out* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  if constexpr (std::is_same_v<In, double> && std::is_same_v<Out, double>) {
    if (K == 0) {  // BLAS leaves the K == 0 case to the beta scaling; spell it out (beta == 0 clears NaN)
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = 0; c < N; ++c) C[r * ldc + c] = beta == 0.0 ? 0.0 : beta * C[r * ldc + c];
      return;
    }
    panel_gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc,
               [&](int64_t m, int64_t n, const double* a, const double* b, double* c) {
                 cblas_dgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(K),
                             alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
               });
  } else if constexpr (std::is_same_v<In, float> && std::is_same_v<Out, float>) {
    if (K == 0) {
      const float b = static_cast<float>(beta);
      for (int64_t r = 0; r < M; ++r)
        for (int64_t c = 0; c < N; ++c) C[r * ldc + c] = beta == 0.0 ? 0.0f : b * C[r * ldc + c];
      return;
    }
    panel_gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc,
               [&](int64_t m, int64_t n, const float* a, const float* b, float* c) {
                 cblas_sgemm(CblasRowMajor, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(K),
                             static_cast<float>(alpha), a, static_cast<int>(lda), b, static_cast<int>(ldb),
                             static_cast<float>(beta), c, static_cast<int>(ldc));
               });
  } else {
    // 16-bit operands: widen to f32, sgemm with f32 accumulation (beta * C included), round once.
    const std::vector<float> a = widen(A, trans_a ? K : M, trans_a ? M : K, lda);
    const std::vector<float> b = widen(B, trans_b ? N : K, trans_b ? K : N, ldb);
    std::vector<float> c = beta == 0.0 ? std::vector<float>(static_cast<size_t>(M * N), 0.0f) : widen(C, M, N, ldc);
    gemm_unchecked<float, float>(trans_a, trans_b, M, N, K, alpha, a.data(), trans_a ? M : K, b.data(), trans_b ? K : N,
                                 beta, c.data(), N);
    for (int64_t r = 0; r < M; ++r)
      for (int64_t col = 0; col < N; ++col)
        C[r * ldc + col] = detail::convert_element<Out>(c[static_cast<size_t>(r * N + col)]);
  }
}

}  // namespace

template <class In, class Out>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const In* A, int64_t lda,
          const In* B, int64_t ldb, double beta, Out* C, int64_t ldc) {
  check_gemm_arguments("kernels::cpu::gemm", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  gemm_unchecked(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <class In, class Out>
void gemm_strided_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, double alpha, const In* A,
                          int64_t lda, int64_t stride_a, const In* B, int64_t ldb, int64_t stride_b, double beta,
                          Out* C, int64_t ldc, int64_t stride_c, int64_t batch) {
  check_gemm_arguments("kernels::cpu::gemm_strided_batched", trans_a, trans_b, M, N, K, lda, ldb, ldc);
  if (batch < 0 || stride_a < 0 || stride_b < 0 || stride_c < 0)
    throw std::invalid_argument("kernels::cpu::gemm_strided_batched: negative batch " + std::to_string(batch) +
                                " or stride (" + std::to_string(stride_a) + ", " + std::to_string(stride_b) + ", " +
                                std::to_string(stride_c) + ")");
  for (int64_t i = 0; i < batch; ++i)
    gemm_unchecked(trans_a, trans_b, M, N, K, alpha, A + i * stride_a, lda, B + i * stride_b, ldb, beta,
                   C + i * stride_c, ldc);
}

template <class T>
void linear_forward(const T* x, const T* W, const T* bias, Activation act, int64_t rows, int64_t in, int64_t out, T* y,
                    T* pre_act) {
  const int64_t ld = std::max<int64_t>(1, in);
  check_gemm_arguments("kernels::cpu::linear_forward", false, true, rows, out, in, ld, ld, std::max<int64_t>(1, out));
  // y (rows, out) = x (rows, in) . W^T, W stored (out, in)
  gemm_unchecked<T, T>(false, true, rows, out, in, 1.0, x, ld, W, ld, 0.0, y, out);
  for (int64_t r = 0; r < rows; ++r) {
    T* y_row = y + r * out;
    for (int64_t c = 0; c < out; ++c) {
      const T pre = bias ? y_row[c] + bias[c] : y_row[c];
      if (act != Activation::none && pre_act) pre_act[r * out + c] = pre;
      y_row[c] = detail::apply_activation<T>(act, pre);
    }
  }
}

template <class T>
void activation_backward(Activation act, const T* dy, const T* pre, T* dpre, int64_t n) {
  if (n < 0)
    throw std::invalid_argument("kernels::cpu::activation_backward: negative element count " + std::to_string(n));
  for (int64_t i = 0; i < n; ++i) dpre[i] = dy[i] * detail::activation_derivative<T>(act, pre[i]);
}

template void gemm<float, float>(bool, bool, int64_t, int64_t, int64_t, double, const float*, int64_t, const float*,
                                 int64_t, double, float*, int64_t);
template void gemm<double, double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                                   int64_t, double, double*, int64_t);
template void gemm<__nv_bfloat16, __nv_bfloat16>(bool, bool, int64_t, int64_t, int64_t, double, const __nv_bfloat16*,
                                                 int64_t, const __nv_bfloat16*, int64_t, double, __nv_bfloat16*,
                                                 int64_t);
template void gemm<__half, __half>(bool, bool, int64_t, int64_t, int64_t, double, const __half*, int64_t, const __half*,
                                   int64_t, double, __half*, int64_t);
template void gemm<__nv_bfloat16, float>(bool, bool, int64_t, int64_t, int64_t, double, const __nv_bfloat16*, int64_t,
                                         const __nv_bfloat16*, int64_t, double, float*, int64_t);
template void gemm<__half, float>(bool, bool, int64_t, int64_t, int64_t, double, const __half*, int64_t, const __half*,
                                  int64_t, double, float*, int64_t);

#define COCO_INSTANTIATE_BATCHED_CPU(In, Out)                                                                       \
  template void gemm_strided_batched<In, Out>(bool, bool, int64_t, int64_t, int64_t, double, const In*, int64_t,    \
                                              int64_t, const In*, int64_t, int64_t, double, Out*, int64_t, int64_t, \
                                              int64_t);
COCO_INSTANTIATE_BATCHED_CPU(float, float)
COCO_INSTANTIATE_BATCHED_CPU(double, double)
COCO_INSTANTIATE_BATCHED_CPU(__nv_bfloat16, __nv_bfloat16)
COCO_INSTANTIATE_BATCHED_CPU(__half, __half)
COCO_INSTANTIATE_BATCHED_CPU(__nv_bfloat16, float)
COCO_INSTANTIATE_BATCHED_CPU(__half, float)
#undef COCO_INSTANTIATE_BATCHED_CPU

template void linear_forward<float>(const float*, const float*, const float*, Activation, int64_t, int64_t, int64_t,
                                    float*, float*);
template void linear_forward<double>(const double*, const double*, const double*, Activation, int64_t, int64_t, int64_t,
                                     double*, double*);
template void activation_backward<float>(Activation, const float*, const float*, float*, int64_t);
template void activation_backward<double>(Activation, const double*, const double*, double*, int64_t);

}  // namespace coco::kernels::cpu
