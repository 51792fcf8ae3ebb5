// cuBLASLt through its own API: in `emulated` mode the runtime layer's CPU implementation
// (engine/simt/emu_cublaslt.cpp). Results against an f64 reference for column and row orders,
// transposes, batches, alpha/beta, in-place C == D, host and device scalars, and the BIAS / GELU /
// GELU_AUX epilogues and the backward ones (DGELU, DGELU_BGRAD, BGRADA, BGRADB); then the refusals the documentation
// prescribes: attribute buffer sizes, leading dimensions, shapes, batch strides, types, epilogue arguments, alignment
// promises, handles and algorithms. A planted layout mistake (wrong leading dimension, wrong transpose, wrong batch
// stride) is refused or produces a result the reference comparison rejects.
#include <cublasLt.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "tests/common/kernel_check.h"
#if defined(COCO_CUDA_EMULATED)
#include "engine/simt/emu_control.h"
#endif

namespace {

using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

// RAII holders for the descriptors.
struct Handle {
  cublasLtHandle_t h = nullptr;
  Handle() { COCO_CUBLAS_CHECK(cublasLtCreate(&h)); }
  ~Handle() { (void)cublasLtDestroy(h); }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  Layout(cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld, int32_t batch = 1, int64_t stride = 0,
         cublasLtOrder_t order = CUBLASLT_ORDER_COL) {
    COCO_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld));
    COCO_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_ORDER, &order, sizeof(int32_t)));
    COCO_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch));
    COCO_CUBLAS_CHECK(
        cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
  }
  ~Layout() { (void)cublasLtMatrixLayoutDestroy(l); }
};
struct Desc {
  cublasLtMatmulDesc_t d = nullptr;
  explicit Desc(cublasComputeType_t compute = CUBLAS_COMPUTE_32F, cudaDataType_t scale = CUDA_R_32F) {
    COCO_CUBLAS_CHECK(cublasLtMatmulDescCreate(&d, compute, scale));
  }
  ~Desc() { (void)cublasLtMatmulDescDestroy(d); }
  template <class V>
  cublasStatus_t set(cublasLtMatmulDescAttributes_t attribute, const V& value) {
    return cublasLtMatmulDescSetAttribute(d, attribute, &value, sizeof value);
  }
};
struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  Preference() { COCO_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p)); }
  ~Preference() { (void)cublasLtMatmulPreferenceDestroy(p); }
  template <class V>
  void set(cublasLtMatmulPreferenceAttributes_t attribute, const V& value) {
    COCO_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, attribute, &value, sizeof value));
  }
};

// Element (r, c) of a stored matrix (rows x cols, leading dimension ld) in either order.
int64_t at(bool row_order, int64_t ld, int64_t r, int64_t c) { return row_order ? r * ld + c : c * ld + r; }

// One problem: D (m, n) = alpha op(A) op(B) + beta C, every operand in its own layout.
struct Gemm {
  int64_t m, n, k;
  bool ta = false, tb = false;
  bool row_order = false;
  int32_t batch = 1;
  int64_t pad = 0;  // extra leading-dimension elements
  double alpha = 1.0, beta = 0.0;
  int64_t a_rows() const { return ta ? k : m; }
  int64_t a_cols() const { return ta ? m : k; }
  int64_t b_rows() const { return tb ? n : k; }
  int64_t b_cols() const { return tb ? k : n; }
  int64_t ld(int64_t rows, int64_t cols) const { return (row_order ? cols : rows) + pad; }
  int64_t size(int64_t rows, int64_t cols) const { return ld(rows, cols) * (row_order ? rows : cols); }
  int64_t stride(int64_t rows, int64_t cols) const { return size(rows, cols) + 3; }  // batches apart
};

// Reference for one batch entry, in f64.
void reference(const Gemm& g, const float* A, const float* B, const float* C, double* D) {
  const int64_t lda = g.ld(g.a_rows(), g.a_cols()), ldb = g.ld(g.b_rows(), g.b_cols()), ldc = g.ld(g.m, g.n);
  for (int64_t i = 0; i < g.m; ++i)
    for (int64_t j = 0; j < g.n; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < g.k; ++p) {
        const double a = g.ta ? A[at(g.row_order, lda, p, i)] : A[at(g.row_order, lda, i, p)];
        const double b = g.tb ? B[at(g.row_order, ldb, j, p)] : B[at(g.row_order, ldb, p, j)];
        sum += a * b;
      }
      const int64_t e = at(g.row_order, ldc, i, j);
      D[e] = g.alpha * sum + (g.beta != 0.0 ? g.beta * C[e] : 0.0);
    }
}

// Runs `g` for In/Out storage types with compute 32F (64F for double) and checks against the
// reference; `in_place` makes C and D one buffer.
template <class In, class Out>
void check_gemm(const Gemm& g, bool in_place, unsigned seed, double threshold) {
  const bool f64 = std::is_same_v<In, double>;
  const cudaDataType_t in_type = f64                                 ? CUDA_R_64F
                                 : std::is_same_v<In, float>         ? CUDA_R_32F
                                 : std::is_same_v<In, __nv_bfloat16> ? CUDA_R_16BF
                                                                     : CUDA_R_16F;
  const cudaDataType_t out_type = std::is_same_v<Out, In>       ? in_type
                                  : std::is_same_v<Out, double> ? CUDA_R_64F
                                                                : CUDA_R_32F;
  const int64_t sa = g.stride(g.a_rows(), g.a_cols()), sb = g.stride(g.b_rows(), g.b_cols()), sc = g.stride(g.m, g.n);
  const std::vector<float> A = round_through<In>(random_floats(sa * g.batch, seed)),
                           B = round_through<In>(random_floats(sb * g.batch, seed + 1)),
                           C = round_through<Out>(random_floats(sc * g.batch, seed + 2));
  std::vector<double> expected(sc * g.batch);
  for (int64_t i = 0; i < sc * g.batch; ++i) expected[i] = C[i];
  for (int32_t b = 0; b < g.batch; ++b) reference(g, &A[b * sa], &B[b * sb], &C[b * sc], &expected[b * sc]);

  GuardedDeviceBuffer<In> dA(from_floats<In>(A)), dB(from_floats<In>(B));
  GuardedDeviceBuffer<Out> dC(from_floats<Out>(C)), dD(sc * g.batch);
  if (in_place) dD.upload(from_floats<Out>(C));
  Out* d_out = in_place ? dC.data() : dD.data();

  Handle handle;
  Desc desc(f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F, f64 ? CUDA_R_64F : CUDA_R_32F);
  COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_TRANSA, int32_t(g.ta ? CUBLAS_OP_T : CUBLAS_OP_N)));
  COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_TRANSB, int32_t(g.tb ? CUBLAS_OP_T : CUBLAS_OP_N)));
  const cublasLtOrder_t order = g.row_order ? CUBLASLT_ORDER_ROW : CUBLASLT_ORDER_COL;
  Layout a(in_type, g.a_rows(), g.a_cols(), g.ld(g.a_rows(), g.a_cols()), g.batch, sa, order);
  Layout b(in_type, g.b_rows(), g.b_cols(), g.ld(g.b_rows(), g.b_cols()), g.batch, sb, order);
  Layout c(out_type, g.m, g.n, g.ld(g.m, g.n), g.batch, sc, order);
  Preference pref;
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  COCO_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(handle.h, desc.d, a.l, b.l, c.l, c.l, pref.p, 1, &result, &found));
  ASSERT_EQ(found, 1);
  const float alpha32 = static_cast<float>(g.alpha), beta32 = static_cast<float>(g.beta);
  const void* alpha = f64 ? static_cast<const void*>(&g.alpha) : &alpha32;
  const void* beta = f64 ? static_cast<const void*>(&g.beta) : &beta32;
  COCO_CUBLAS_CHECK(cublasLtMatmul(handle.h, desc.d, alpha, dA.data(), a.l, dB.data(), b.l, beta, dC.data(), c.l, d_out,
                                   c.l, &result.algo, nullptr, 0, nullptr));
  const std::vector<double> got = to_f64(in_place ? dC.download() : dD.download());
  // Compare the written elements only (padding and batch gaps keep C's values when in place).
  std::vector<double> ref_block, got_block;
  const int64_t ldc = g.ld(g.m, g.n);
  for (int32_t bt = 0; bt < g.batch; ++bt)
    for (int64_t i = 0; i < g.m; ++i)
      for (int64_t j = 0; j < g.n; ++j) {
        ref_block.push_back(expected[bt * sc + at(g.row_order, ldc, i, j)]);
        got_block.push_back(got[bt * sc + at(g.row_order, ldc, i, j)]);
      }
  const std::string what = "m=" + std::to_string(g.m) + " n=" + std::to_string(g.n) + " k=" + std::to_string(g.k) +
                           " ta=" + std::to_string(g.ta) + " tb=" + std::to_string(g.tb) +
                           " row=" + std::to_string(g.row_order) + " batch=" + std::to_string(g.batch);
  EXPECT_TRUE(matches_reference(ref_block, got_block, threshold, what));
  EXPECT_TRUE(dC.guards_intact() && dD.guards_intact()) << what;
}

TEST(CublasLt, MatmulMatchesReferenceInEveryLayout) {
  unsigned seed = 1;
  for (bool row_order : {false, true})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        Gemm g{33, 7, 19};
        g.ta = ta;
        g.tb = tb;
        g.row_order = row_order;
        g.pad = 2;
        g.batch = 3;
        g.alpha = 0.5;
        g.beta = -1.5;
        check_gemm<float, float>(g, false, seed += 3, 1e-10);
        check_gemm<__nv_bfloat16, __nv_bfloat16>(g, false, seed += 3, 2e-5);
        check_gemm<__half, float>(g, false, seed += 3, 1e-10);
        check_gemm<double, double>(g, false, seed += 3, 1e-24);
        g.batch = 1;
        check_gemm<float, float>(g, true, seed += 3, 1e-10);  // C == D
      }
}

// beta == 0 must not read C: NaN there stays out of D.
TEST(CublasLt, BetaZeroIgnoresC) {
  const int64_t m = 4, n = 3, k = 2;
  GuardedDeviceBuffer<float> A(std::vector<float>(m * k, 1.0f)), B(std::vector<float>(k * n, 2.0f)), D(m * n);
  D.poison();
  Handle handle;
  Desc desc;
  Layout a(CUDA_R_32F, m, k, m), b(CUDA_R_32F, k, n, k), d(CUDA_R_32F, m, n, m);
  const float alpha = 1.0f, beta = 0.0f;
  COCO_CUBLAS_CHECK(cublasLtMatmul(handle.h, desc.d, &alpha, A.data(), a.l, B.data(), b.l, &beta, D.data(), d.l,
                                   D.data(), d.l, nullptr, nullptr, 0, nullptr));
  for (float v : D.download()) EXPECT_EQ(v, 4.0f);
}

// Device pointer mode reads alpha and beta from device memory.
TEST(CublasLt, DeviceScalars) {
  const int64_t m = 2, n = 2, k = 1;
  GuardedDeviceBuffer<float> A(std::vector<float>{1.0f, 2.0f}), B(std::vector<float>{3.0f, 4.0f}),
      C(std::vector<float>(4, 1.0f)), scalars(std::vector<float>{2.0f, 10.0f});
  Handle handle;
  Desc desc;
  COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_POINTER_MODE, int32_t(CUBLASLT_POINTER_MODE_DEVICE)));
  Layout a(CUDA_R_32F, m, k, m), b(CUDA_R_32F, k, n, k), c(CUDA_R_32F, m, n, m);
  COCO_CUBLAS_CHECK(cublasLtMatmul(handle.h, desc.d, scalars.data(), A.data(), a.l, B.data(), b.l, scalars.data() + 1,
                                   C.data(), c.l, C.data(), c.l, nullptr, nullptr, 0, nullptr));
  // D = 2 * [1 2]^T [3 4] + 10
  EXPECT_EQ(C.download(), (std::vector<float>{16.0f, 22.0f, 18.0f, 26.0f}));
}

double gelu_tanh(double x) { return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))); }

// BIAS and GELU_AUX_BIAS with bf16 data: D = round(gelu(op(A) op(B) + bias)), aux = round(pre).
TEST(CublasLt, BiasAndGeluEpilogues) {
  const int64_t m = 16, n = 5, k = 9, aux_ld = 24;
  const std::vector<float> A = round_through<__nv_bfloat16>(random_floats(m * k, 1, -2.0f, 2.0f)),
                           B = round_through<__nv_bfloat16>(random_floats(k * n, 2, -2.0f, 2.0f)),
                           bias = round_through<__nv_bfloat16>(random_floats(m, 3));
  std::vector<double> pre(m * n), activated(m * n);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      double sum = bias[i];
      for (int64_t p = 0; p < k; ++p) sum += double(A[p * m + i]) * B[j * k + p];
      pre[j * m + i] = sum;
      activated[j * m + i] = gelu_tanh(sum);
    }
  GuardedDeviceBuffer<__nv_bfloat16> dA(from_floats<__nv_bfloat16>(A)), dB(from_floats<__nv_bfloat16>(B)),
      dbias(from_floats<__nv_bfloat16>(bias)), D(m * n), aux(aux_ld * n);
  Handle handle;
  Layout a(CUDA_R_16BF, m, k, m), b(CUDA_R_16BF, k, n, k), d(CUDA_R_16BF, m, n, m);
  const float alpha = 1.0f, beta = 0.0f;
  for (cublasLtEpilogue_t epilogue : {CUBLASLT_EPILOGUE_BIAS, CUBLASLT_EPILOGUE_GELU_AUX_BIAS}) {
    Desc desc;
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(epilogue)));
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(dbias.data())));
    const bool gelu = epilogue == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
    if (gelu) {
      COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(aux.data())));
      COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t{aux_ld}));
    }
    D.poison();
    aux.poison();
    COCO_CUBLAS_CHECK(cublasLtMatmul(handle.h, desc.d, &alpha, dA.data(), a.l, dB.data(), b.l, &beta, D.data(), d.l,
                                     D.data(), d.l, nullptr, nullptr, 0, nullptr));
    EXPECT_TRUE(matches_reference(gelu ? activated : pre, to_f64(D.download()), 2e-5, "D"));
    if (gelu) {
      const std::vector<double> got_aux = to_f64(aux.download());
      std::vector<double> aux_block;
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < m; ++i) aux_block.push_back(got_aux[j * aux_ld + i]);
      EXPECT_TRUE(matches_reference(pre, aux_block, 2e-5, "aux"));
    }
  }
}

double gelu_tanh_derivative(double x) {
  const double c = std::sqrt(2.0 / M_PI), t = std::tanh(c * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * 0.044715 * x * x);
}

// DGELU / DGELU_BGRAD with bf16 data: D = round(op(A) op(B) * gelu'(aux)), the bias gradient (D's
// rows) = round(row sums of the unrounded D); DGELU leaves the bias pointer alone.
TEST(CublasLt, GeluBackwardEpilogues) {
  const int64_t m = 16, n = 7, k = 5, aux_ld = 24;
  const std::vector<float> A = round_through<__nv_bfloat16>(random_floats(m * k, 11, -2.0f, 2.0f)),
                           B = round_through<__nv_bfloat16>(random_floats(k * n, 12, -2.0f, 2.0f)),
                           pre = round_through<__nv_bfloat16>(random_floats(aux_ld * n, 13, -3.0f, 3.0f));
  std::vector<double> expected(m * n), expected_bias(m, 0.0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t i = 0; i < m; ++i) {
      double sum = 0.0;
      for (int64_t p = 0; p < k; ++p) sum += double(A[p * m + i]) * B[j * k + p];
      expected[j * m + i] = sum * gelu_tanh_derivative(pre[j * aux_ld + i]);
      expected_bias[i] += expected[j * m + i];
    }
  GuardedDeviceBuffer<__nv_bfloat16> dA(from_floats<__nv_bfloat16>(A)), dB(from_floats<__nv_bfloat16>(B)),
      aux(from_floats<__nv_bfloat16>(pre)), D(m * n), bias_grad(m);
  Handle handle;
  Layout a(CUDA_R_16BF, m, k, m), b(CUDA_R_16BF, k, n, k), d(CUDA_R_16BF, m, n, m);
  const float alpha = 1.0f, beta = 0.0f;
  for (cublasLtEpilogue_t epilogue : {CUBLASLT_EPILOGUE_DGELU, CUBLASLT_EPILOGUE_DGELU_BGRAD}) {
    Desc desc;
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(epilogue)));
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(aux.data())));
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t{aux_ld}));
    const bool bgrad = epilogue == CUBLASLT_EPILOGUE_DGELU_BGRAD;
    if (bgrad) COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(bias_grad.data())));
    D.poison();
    bias_grad.poison();
    COCO_CUBLAS_CHECK(cublasLtMatmul(handle.h, desc.d, &alpha, dA.data(), a.l, dB.data(), b.l, &beta, D.data(), d.l,
                                     D.data(), d.l, nullptr, nullptr, 0, nullptr));
    EXPECT_TRUE(matches_reference(expected, to_f64(D.download()), 2e-5, "D"));
    if (bgrad) {
      EXPECT_TRUE(matches_reference(expected_bias, to_f64(bias_grad.download()), 2e-5, "bias gradient"));
    }
    EXPECT_TRUE(aux.guards_intact() && bias_grad.guards_intact());
  }
}

// BGRADB in the layout of a linear layer's weight gradient (row-major dW (out, in) += dy^T x is the
// column-major D (in, out) = x (in, rows) . dy^T with dy stored (out, rows), TRANSB = T): the bias
// gradient is the column sums of dy. Batched, with bf16 operands and an f32 D (the bias gradient
// takes D's type), beta = 1. BGRADA likewise sums op(A) over k (D's rows).
TEST(CublasLt, BiasGradientEpilogues) {
  const int64_t in = 12, out = 9, rows = 20;
  const int32_t batch = 2;
  const int64_t stride_x = in * rows + 4, stride_dy = out * rows + 2, stride_d = in * out + 3, stride_bias = out + 5;
  const std::vector<float> x = round_through<__nv_bfloat16>(random_floats(stride_x * batch, 21)),
                           dy = round_through<__nv_bfloat16>(random_floats(stride_dy * batch, 22)),
                           C = random_floats(stride_d * batch, 23);
  std::vector<double> expected_d, expected_bias;
  for (int32_t bt = 0; bt < batch; ++bt) {
    for (int64_t j = 0; j < out; ++j)
      for (int64_t i = 0; i < in; ++i) {
        double sum = C[bt * stride_d + j * in + i];
        for (int64_t r = 0; r < rows; ++r)
          sum += double(x[bt * stride_x + r * in + i]) * dy[bt * stride_dy + r * out + j];
        expected_d.push_back(sum);
      }
    for (int64_t j = 0; j < out; ++j) {
      double sum = 0.0;
      for (int64_t r = 0; r < rows; ++r) sum += dy[bt * stride_dy + r * out + j];
      expected_bias.push_back(sum);
    }
  }
  GuardedDeviceBuffer<__nv_bfloat16> dx(from_floats<__nv_bfloat16>(x)), ddy(from_floats<__nv_bfloat16>(dy));
  GuardedDeviceBuffer<float> D(from_floats<float>(C)), bias_grad(stride_bias * batch);
  bias_grad.poison();
  Handle handle;
  Desc desc;
  COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_TRANSB, int32_t(CUBLAS_OP_T)));
  COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BGRADB)));
  COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(bias_grad.data())));
  COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, int64_t{stride_bias}));
  Layout a(CUDA_R_16BF, in, rows, in, batch, stride_x), b(CUDA_R_16BF, out, rows, out, batch, stride_dy),
      d(CUDA_R_32F, in, out, in, batch, stride_d);
  const float alpha = 1.0f, beta = 1.0f;
  COCO_CUBLAS_CHECK(cublasLtMatmul(handle.h, desc.d, &alpha, dx.data(), a.l, ddy.data(), b.l, &beta, D.data(), d.l,
                                   D.data(), d.l, nullptr, nullptr, 0, nullptr));
  const std::vector<float> got_d = D.download(), got_bias = bias_grad.download();
  std::vector<double> d_block, bias_block;
  for (int32_t bt = 0; bt < batch; ++bt) {
    for (int64_t e = 0; e < in * out; ++e) d_block.push_back(got_d[bt * stride_d + e]);
    for (int64_t j = 0; j < out; ++j) bias_block.push_back(got_bias[bt * stride_bias + j]);
  }
  EXPECT_TRUE(matches_reference(expected_d, d_block, 1e-10, "D"));
  EXPECT_TRUE(matches_reference(expected_bias, bias_block, 1e-12, "bias gradient (BGRADB)"));
  EXPECT_TRUE(bias_grad.guards_intact());

  // BGRADA: op(A) = A^T with A stored (k, m): the sums run along A's columns.
  const int64_t m = 6, n = 4, k = 10;
  const std::vector<float> A = random_floats(k * m, 24), B = random_floats(k * n, 25);
  std::vector<double> expected_a(m, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p) expected_a[i] += A[i * k + p];
  GuardedDeviceBuffer<float> dA(from_floats<float>(A)), dB(from_floats<float>(B)), D2(m * n), bias_a(m);
  Desc desc_a;
  COCO_CUBLAS_CHECK(desc_a.set(CUBLASLT_MATMUL_DESC_TRANSA, int32_t(CUBLAS_OP_T)));
  COCO_CUBLAS_CHECK(desc_a.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BGRADA)));
  COCO_CUBLAS_CHECK(desc_a.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(bias_a.data())));
  Layout la(CUDA_R_32F, k, m, k), lb(CUDA_R_32F, k, n, k), ld(CUDA_R_32F, m, n, m);
  const float zero = 0.0f;
  COCO_CUBLAS_CHECK(cublasLtMatmul(handle.h, desc_a.d, &alpha, dA.data(), la.l, dB.data(), lb.l, &zero, D2.data(), ld.l,
                                   D2.data(), ld.l, nullptr, nullptr, 0, nullptr));
  EXPECT_TRUE(matches_reference(expected_a, to_f64(bias_a.download()), 1e-12, "bias gradient (BGRADA)"));

  // The planted mistake: TRANSB left at N for dy stored (out, rows) would need a (rows, out) dy
  // laid out (rows x out); with the shapes made to fit (square dy), BGRADB then sums along the
  // wrong dimension and the comparison rejects it.
  const int64_t sq = 8;
  const std::vector<float> ysq = random_floats(sq * sq, 26), xsq = random_floats(sq * sq, 27);
  std::vector<double> column_sums(sq, 0.0);  // the intended gradient: sums over the rows of row-major dy
  for (int64_t r = 0; r < sq; ++r)
    for (int64_t j = 0; j < sq; ++j) column_sums[j] += ysq[r * sq + j];
  GuardedDeviceBuffer<float> dysq(from_floats<float>(ysq)), dxsq(from_floats<float>(xsq)), Dsq(sq * sq), bsq(sq);
  Desc wrong;
  COCO_CUBLAS_CHECK(wrong.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BGRADB)));
  COCO_CUBLAS_CHECK(wrong.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(bsq.data())));
  Layout square(CUDA_R_32F, sq, sq, sq);
  COCO_CUBLAS_CHECK(cublasLtMatmul(handle.h, wrong.d, &alpha, dxsq.data(), square.l, dysq.data(), square.l, &zero,
                                   Dsq.data(), square.l, Dsq.data(), square.l, nullptr, nullptr, 0, nullptr));
  EXPECT_FALSE(matches_reference(column_sums, to_f64(bsq.download()), 1e-6, "BGRADB without TRANSB"));
}

TEST(CublasLt, AttributeBuffersAreChecked) {
  Desc desc;
  const int64_t wrong_size = 0;
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &wrong_size, sizeof wrong_size),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, nullptr, sizeof(int32_t)),
            CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc.d, static_cast<cublasLtMatmulDescAttributes_t>(9999), &wrong_size,
                                           sizeof(int32_t)),
            CUBLAS_STATUS_INVALID_VALUE);
  size_t written = 0;
  EXPECT_EQ(cublasLtMatmulDescGetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, nullptr, 0, &written),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(written, sizeof(int64_t));
  EXPECT_EQ(cublasLtMatmulDescGetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, nullptr, 0, nullptr),
            CUBLAS_STATUS_INVALID_VALUE);
  uint32_t epilogue = 0;
  EXPECT_EQ(cublasLtMatmulDescGetAttribute(desc.d, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue, nullptr),
            CUBLAS_STATUS_SUCCESS);
  EXPECT_EQ(epilogue, uint32_t(CUBLASLT_EPILOGUE_DEFAULT));
  Layout layout(CUDA_R_32F, 4, 4, 4);
  const int64_t batch64 = 2;  // BATCH_COUNT is int32_t
  EXPECT_EQ(cublasLtMatrixLayoutSetAttribute(layout.l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch64, sizeof batch64),
            CUBLAS_STATUS_INVALID_VALUE);
  Preference pref;
  const uint32_t workspace32 = 1024;  // MAX_WORKSPACE_BYTES is uint64_t
  EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace32,
                                                 sizeof workspace32),
            CUBLAS_STATUS_INVALID_VALUE);
}

// A problem set up through the API; `run` returns the heuristic's status, then cublasLtMatmul's.
struct Attempt {
  Handle handle;
  Desc desc;
  std::unique_ptr<Layout> a, b, c;
  Preference pref;
  GuardedDeviceBuffer<float> A{64 * 64}, B{64 * 64}, C{64 * 64};
  cublasStatus_t heuristic = CUBLAS_STATUS_SUCCESS, matmul = CUBLAS_STATUS_SUCCESS;
  Attempt() {
    a = std::make_unique<Layout>(CUDA_R_32F, 8, 4, 8);
    b = std::make_unique<Layout>(CUDA_R_32F, 4, 6, 4);
    c = std::make_unique<Layout>(CUDA_R_32F, 8, 6, 8);
  }
  void run(const void* a_ptr = nullptr, float* c_ptr = nullptr) {
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    heuristic = cublasLtMatmulAlgoGetHeuristic(handle.h, desc.d, a->l, b->l, c->l, c->l, pref.p, 1, &result, &found);
    const float alpha = 1.0f, beta = 0.0f;
    matmul = cublasLtMatmul(handle.h, desc.d, &alpha, a_ptr ? a_ptr : A.data(), a->l, B.data(), b->l, &beta,
                            c_ptr ? c_ptr : C.data(), c->l, c_ptr ? c_ptr : C.data(), c->l,
                            heuristic == CUBLAS_STATUS_SUCCESS && found ? &result.algo : nullptr, nullptr, 0, nullptr);
  }
};

#if defined(COCO_CUDA_EMULATED)
#define EXPECT_REASON(text) \
  EXPECT_NE(emu::cublaslt_last_error().find(text), std::string::npos) << emu::cublaslt_last_error()
#else
#define EXPECT_REASON(text) (void)0
#endif

// The planted layout mistakes: each one is refused, or (a transpose that still fits the shapes)
// produces a product that the reference comparison rejects.
TEST(CublasLt, PlantedLayoutMistakesAreCaught) {
  {  // leading dimension smaller than the rows of a COL-order matrix
    Attempt t;
    t.a = std::make_unique<Layout>(CUDA_R_32F, 8, 4, 7);
    t.run();
    EXPECT_EQ(t.heuristic, CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(t.matmul, CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_REASON("leading dimension 7 < 8");
  }
  {  // a transpose that breaks the shapes: op(A) is 4 x 8, op(B) 4 x 6
    Attempt t;
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_TRANSA, int32_t(CUBLAS_OP_T)));
    t.run();
    EXPECT_EQ(t.matmul, CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_REASON("shapes do not agree");
  }
  {  // a transpose that fits (square A) computes A^T B: the reference comparison catches it
    Gemm g{6, 5, 6};
    GuardedDeviceBuffer<float> A(from_floats<float>(random_floats(36, 1))), B(from_floats<float>(random_floats(30, 2))),
        D(30);
    std::vector<double> expected(30);
    const std::vector<float> a_host = A.download(), b_host = B.download();
    reference(g, a_host.data(), b_host.data(), nullptr, expected.data());
    Handle handle;
    Desc desc;
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_TRANSA, int32_t(CUBLAS_OP_T)));  // the mistake
    Layout a(CUDA_R_32F, 6, 6, 6), b(CUDA_R_32F, 6, 5, 6), d(CUDA_R_32F, 6, 5, 6);
    const float alpha = 1.0f, beta = 0.0f;
    COCO_CUBLAS_CHECK(cublasLtMatmul(handle.h, desc.d, &alpha, A.data(), a.l, B.data(), b.l, &beta, D.data(), d.l,
                                     D.data(), d.l, nullptr, nullptr, 0, nullptr));
    EXPECT_FALSE(matches_reference(expected, to_f64(D.download()), 1e-10, "transposed A"));
  }
#if defined(COCO_CUDA_EMULATED)
  // Exactly sized allocations (no guard bytes), so that one element too far is outside.
  struct Exact {
    float* p = nullptr;
    explicit Exact(size_t count) { COCO_CUDA_CHECK(cudaMalloc(&p, count * sizeof(float))); }
    ~Exact() { (void)cudaFree(p); }
  };
  {  // leading dimension too large: A reaches past its allocation (on a GPU the kernel faults)
    Attempt t;
    Exact small(8 * 4);
    t.a = std::make_unique<Layout>(CUDA_R_32F, 8, 4, 9);
    t.run(small.p);
    EXPECT_EQ(t.matmul, CUBLAS_STATUS_EXECUTION_FAILED);
    EXPECT_REASON("runs past the end of its device allocation");
  }
  {  // batch stride of A too large for its buffer
    Handle handle;
    Desc desc;
    Exact A(2 * 32), B(2 * 24), D(2 * 48);
    Layout a(CUDA_R_32F, 8, 4, 8, 2, 40), b(CUDA_R_32F, 4, 6, 4, 2, 24), d(CUDA_R_32F, 8, 6, 8, 2, 48);
    const float alpha = 1.0f, beta = 0.0f;
    EXPECT_EQ(cublasLtMatmul(handle.h, desc.d, &alpha, A.p, a.l, B.p, b.l, &beta, D.p, d.l, D.p, d.l, nullptr, nullptr,
                             0, nullptr),
              CUBLAS_STATUS_EXECUTION_FAILED);
    EXPECT_REASON("matrix A");
  }
#endif
  {  // batch stride of D smaller than one matrix: the outputs would overlap
    Handle handle;
    Desc desc;
    GuardedDeviceBuffer<float> A(2 * 32), B(2 * 24), D(2 * 48);
    Layout a(CUDA_R_32F, 8, 4, 8, 2, 32), b(CUDA_R_32F, 4, 6, 4, 2, 24), d(CUDA_R_32F, 8, 6, 8, 2, 40);
    const float alpha = 1.0f, beta = 0.0f;
    EXPECT_EQ(cublasLtMatmul(handle.h, desc.d, &alpha, A.data(), a.l, B.data(), b.l, &beta, D.data(), d.l, D.data(),
                             d.l, nullptr, nullptr, 0, nullptr),
              CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_REASON("overlap");
  }
  {  // batch counts that differ
    Handle handle;
    Desc desc;
    GuardedDeviceBuffer<float> A(2 * 32), B(2 * 24), D(2 * 48);
    Layout a(CUDA_R_32F, 8, 4, 8, 2, 32), b(CUDA_R_32F, 4, 6, 4, 1, 0), d(CUDA_R_32F, 8, 6, 8, 2, 48);
    const float alpha = 1.0f, beta = 0.0f;
    EXPECT_EQ(cublasLtMatmul(handle.h, desc.d, &alpha, A.data(), a.l, B.data(), b.l, &beta, D.data(), d.l, D.data(),
                             d.l, nullptr, nullptr, 0, nullptr),
              CUBLAS_STATUS_INVALID_VALUE);
  }
}

TEST(CublasLt, EpilogueArgumentsAreChecked) {
  {  // BIAS without a bias pointer
    Attempt t;
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BIAS)));
    t.run();
    EXPECT_EQ(t.heuristic, CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(t.matmul, CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_REASON("BIAS_POINTER");
  }
  {  // GELU_AUX with an aux leading dimension that is not a multiple of 8
    Attempt t;
    GuardedDeviceBuffer<float> aux(12 * 6);
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_GELU_AUX)));
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(aux.data())));
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t{12}));
    t.run();
    EXPECT_EQ(t.heuristic, CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_REASON("divisible by 8");
  }
  for (cublasLtEpilogue_t bgrad : {CUBLASLT_EPILOGUE_BGRADA, CUBLASLT_EPILOGUE_BGRADB}) {
    Attempt t;  // a bias gradient with nowhere to go
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(bgrad)));
    t.run();
    EXPECT_EQ(t.heuristic, CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(t.matmul, CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_REASON("BIAS_POINTER");
  }
  {  // DGELU without its aux input (the GELU input of the forward)
    Attempt t;
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_DGELU)));
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t{8}));
    t.run();
    EXPECT_EQ(t.matmul, CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_REASON("EPILOGUE_AUX_POINTER");
  }
  {  // DGELU_BGRAD with an aux leading dimension below D's rows, then not divisible by 8
    GuardedDeviceBuffer<float> aux(16 * 6), bias(8);
    for (int64_t aux_ld : {0, 12}) {
      Attempt t;
      COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_DGELU_BGRAD)));
      COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<void*>(aux.data())));
      COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, aux_ld));
      COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(bias.data())));
      t.run();
      EXPECT_EQ(t.heuristic, CUBLAS_STATUS_INVALID_VALUE);
      EXPECT_EQ(t.matmul, CUBLAS_STATUS_INVALID_VALUE);
      EXPECT_REASON("EPILOGUE_AUX_LD");
    }
  }
  {  // a bias gradient of another type than D (cublasLt.h: the output's type)
    Attempt t;
    GuardedDeviceBuffer<__nv_bfloat16> bias(8);
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BGRADA)));
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(bias.data())));
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, int32_t(CUDA_R_16BF)));
    t.run();
    EXPECT_EQ(t.heuristic, CUBLAS_STATUS_NOT_SUPPORTED);
  }
  {  // batched bias gradients that would overlap (stride below the 6 columns of D)
    Handle handle;
    Desc desc;
    GuardedDeviceBuffer<float> A(2 * 32), B(2 * 24), D(2 * 48), bias(2 * 6);
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BGRADB)));
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<void*>(bias.data())));
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, int64_t{5}));
    Layout a(CUDA_R_32F, 8, 4, 8, 2, 32), b(CUDA_R_32F, 4, 6, 4, 2, 24), d(CUDA_R_32F, 8, 6, 8, 2, 48);
    const float alpha = 1.0f, beta = 0.0f;
    EXPECT_EQ(cublasLtMatmul(handle.h, desc.d, &alpha, A.data(), a.l, B.data(), b.l, &beta, D.data(), d.l, D.data(),
                             d.l, nullptr, nullptr, 0, nullptr),
              CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_REASON("overlap");
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE, int64_t{6}));
    EXPECT_EQ(cublasLtMatmul(handle.h, desc.d, &alpha, A.data(), a.l, B.data(), b.l, &beta, D.data(), d.l, D.data(),
                             d.l, nullptr, nullptr, 0, nullptr),
              CUBLAS_STATUS_SUCCESS);
  }
  {  // an epilogue value that does not exist
    Attempt t;
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t{3}));
    t.run();
    EXPECT_EQ(t.heuristic, CUBLAS_STATUS_INVALID_VALUE);
  }
  {  // FP8 scaling factors on f32 data (cublasLt.h: INVALID_VALUE)
    Attempt t;
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(t.A.data())));
    t.run();
    EXPECT_EQ(t.matmul, CUBLAS_STATUS_INVALID_VALUE);
  }
  {  // TRANSC other than N (cublasLt.h: only CUBLAS_OP_N is supported)
    Attempt t;
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_TRANSC, int32_t(CUBLAS_OP_T)));
    t.run();
    EXPECT_EQ(t.matmul, CUBLAS_STATUS_NOT_SUPPORTED);
  }
}

#if defined(COCO_CUDA_EMULATED)
// What the emulated cuBLASLt does not implement answers NOT_SUPPORTED, which the caller must handle
// as it would on a device that lacks a kernel for the configuration.
TEST(CublasLt, UnimplementedConfigurationsAreNotSupported) {
  {  // epilogues with f64 compute
    Handle handle;
    Desc desc(CUBLAS_COMPUTE_64F, CUDA_R_64F);
    GuardedDeviceBuffer<double> bias(8);
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(CUBLASLT_EPILOGUE_BIAS)));
    COCO_CUBLAS_CHECK(desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(bias.data())));
    Layout a(CUDA_R_64F, 8, 4, 8), b(CUDA_R_64F, 4, 6, 4), d(CUDA_R_64F, 8, 6, 8);
    Preference pref;
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(handle.h, desc.d, a.l, b.l, d.l, d.l, pref.p, 1, &result, &found),
              CUBLAS_STATUS_NOT_SUPPORTED);
  }
  for (cublasLtEpilogue_t relu : {CUBLASLT_EPILOGUE_DRELU, CUBLASLT_EPILOGUE_DRELU_BGRAD, CUBLASLT_EPILOGUE_RELU}) {
    Attempt t;  // the ReLU family
    COCO_CUBLAS_CHECK(t.desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(relu)));
    t.run();
    EXPECT_EQ(t.heuristic, CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(t.matmul, CUBLAS_STATUS_NOT_SUPPORTED);
  }
  {  // mixed A/B types, and a 16-bit output of f32 inputs
    Handle handle;
    Desc desc;
    Layout a(CUDA_R_16BF, 8, 4, 8), b(CUDA_R_16F, 4, 6, 4), d(CUDA_R_32F, 8, 6, 8);
    Layout a32(CUDA_R_32F, 8, 4, 8), b32(CUDA_R_32F, 4, 6, 4), d16(CUDA_R_16BF, 8, 6, 8);
    Preference pref;
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(handle.h, desc.d, a.l, b.l, d.l, d.l, pref.p, 1, &result, &found),
              CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(handle.h, desc.d, a32.l, b32.l, d16.l, d16.l, pref.p, 1, &result, &found),
              CUBLAS_STATUS_NOT_SUPPORTED);
  }
  {  // TF32 compute
    Handle handle;
    Desc desc(CUBLAS_COMPUTE_32F_FAST_TF32, CUDA_R_32F);
    Layout a(CUDA_R_32F, 8, 4, 8), b(CUDA_R_32F, 4, 6, 4), d(CUDA_R_32F, 8, 6, 8);
    Preference pref;
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(handle.h, desc.d, a.l, b.l, d.l, d.l, pref.p, 1, &result, &found),
              CUBLAS_STATUS_NOT_SUPPORTED);
  }
}

// The heuristic chooses for the alignment the caller promises; a pointer that breaks the promise
// is refused, and so is an algorithm used for another operation.
TEST(CublasLt, AlignmentPromisesAndAlgorithmsAreKept) {
  Attempt t;
  const float* misaligned = t.A.data() + 1;  // 4-byte aligned, the default promise is 256
  t.run(misaligned);
  EXPECT_EQ(t.matmul, CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_REASON("not aligned");
  t.pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t{4});
  t.run(misaligned);
  EXPECT_EQ(t.matmul, CUBLAS_STATUS_SUCCESS);
  t.pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t{2});  // below one f32 element
  t.run();
  EXPECT_EQ(t.heuristic, CUBLAS_STATUS_NOT_SUPPORTED);

  Attempt other;
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  COCO_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(other.handle.h, other.desc.d, other.a->l, other.b->l, other.c->l,
                                                   other.c->l, other.pref.p, 1, &result, &found));
  COCO_CUBLAS_CHECK(other.desc.set(CUBLASLT_MATMUL_DESC_TRANSB, int32_t(CUBLAS_OP_T)));
  other.b = std::make_unique<Layout>(CUDA_R_32F, 6, 4, 6);
  const float alpha = 1.0f, beta = 0.0f;
  EXPECT_EQ(
      cublasLtMatmul(other.handle.h, other.desc.d, &alpha, other.A.data(), other.a->l, other.B.data(), other.b->l,
                     &beta, other.C.data(), other.c->l, other.C.data(), other.c->l, &result.algo, nullptr, 0, nullptr),
      CUBLAS_STATUS_INVALID_VALUE);
  EXPECT_REASON("another operation");
  cublasLtMatmulAlgo_t garbage{};
  EXPECT_EQ(
      cublasLtMatmul(other.handle.h, other.desc.d, &alpha, other.A.data(), other.a->l, other.B.data(), other.b->l,
                     &beta, other.C.data(), other.c->l, other.C.data(), other.c->l, &garbage, nullptr, 0, nullptr),
      CUBLAS_STATUS_INVALID_VALUE);
}

TEST(CublasLt, HandlesAndHeuristicArguments) {
  Attempt t;
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(t.handle.h, t.desc.d, t.a->l, t.b->l, t.c->l, t.c->l, t.pref.p, 0, &result,
                                           &found),
            CUBLAS_STATUS_INVALID_VALUE);
  cublasLtHandle_t never_created = reinterpret_cast<cublasLtHandle_t>(&found);
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(never_created, t.desc.d, t.a->l, t.b->l, t.c->l, t.c->l, t.pref.p, 1,
                                           &result, &found),
            CUBLAS_STATUS_NOT_INITIALIZED);
  cublasLtHandle_t destroyed = nullptr;
  COCO_CUBLAS_CHECK(cublasLtCreate(&destroyed));
  COCO_CUBLAS_CHECK(cublasLtDestroy(destroyed));
  EXPECT_EQ(cublasLtDestroy(destroyed), CUBLAS_STATUS_NOT_INITIALIZED);
  // A layout in caller-allocated space (cublasLtMatrixLayoutInit) works like a created one.
  cublasLtMatrixLayoutOpaque_t preallocated;
  COCO_CUBLAS_CHECK(cublasLtMatrixLayoutInit(&preallocated, CUDA_R_32F, 8, 4, 8));
  EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(t.handle.h, t.desc.d, &preallocated, t.b->l, t.c->l, t.c->l, t.pref.p, 1,
                                           &result, &found),
            CUBLAS_STATUS_SUCCESS);
}
#endif  // COCO_CUDA_EMULATED

}  // namespace
