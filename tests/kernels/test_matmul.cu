// GEMM entry points (CPU GEMM behind the CUDA API in the emulated build, cuBLASLt on a GPU) and the
// fused linear forward with its bias/GELU epilogue kernel, against a naive f64 reference: every
// combination of M, N, K in {1, 7, 33, 130}, all four transposes, padded leading dimensions, alpha
// and beta, strided batches, f32 / bf16 / f16 / f64 and f32 output from 16-bit operands.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/runtime/counters.h"
#include "engine/simt/schedule_oracle.h"
#include "kernels/matmul.h"
#include "tests/common/kernel_check.h"

namespace coco {
namespace {

using kernels::Activation;
using testing::from_floats;
using testing::GuardedDeviceBuffer;
using testing::matches_reference;
using testing::random_floats;
using testing::round_through;
using testing::to_f64;

const int64_t kDims[] = {1, 7, 33, 130};

// NMSE limits against an f64 reference over the same rounded inputs:
//   f32 output: f32 accumulation over K <= 130 terms; the rounding errors are random-signed, NMSE
//               ~ K * 2^-48 ~ 5e-13, so 1e-10 (the same limit holds for f32 output of 16-bit inputs).
//   bf16 output: one rounding to 8 significant bits, relative error <= 2^-8 -> NMSE <= 1.5e-5; 2e-5.
//   f16 output: one rounding to 11 bits, relative error <= 2^-11 -> NMSE <= 2.4e-7; 1e-6.
//   f64: 1e-24.
template <class T>
constexpr double threshold() {
  return testing::rounded_output_threshold<T>(1e-10);
}

template <class T>
std::vector<float> random_rounded(size_t count, unsigned seed) {
  return round_through<T>(random_floats(count, seed));
}

// Element (r, c) of op(X) where X is stored row-major with row stride ld.
double element(const std::vector<float>& X, bool trans, int64_t ld, int64_t r, int64_t c) {
  return trans ? X[c * ld + r] : X[r * ld + c];
}

// C (M, N) = alpha op(A) op(B) + beta C, in f64; C is stored with row stride ldc.
void reference_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const std::vector<float>& A,
                    int64_t lda, const std::vector<float>& B, int64_t ldb, double beta, std::vector<double>& C,
                    int64_t ldc) {
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double total = 0.0;
      for (int64_t k = 0; k < K; ++k) total += element(A, ta, lda, i, k) * element(B, tb, ldb, k, j);
      C[i * ldc + j] = alpha * total + (beta == 0.0 ? 0.0 : beta * C[i * ldc + j]);
    }
}

struct GemmCase {
  bool ta, tb;
  int64_t M, N, K, lda, ldb, ldc;
  std::string str() const {
    return "ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " M=" + std::to_string(M) +
           " N=" + std::to_string(N) + " K=" + std::to_string(K) + " lda=" + std::to_string(lda) +
           " ldb=" + std::to_string(ldb) + " ldc=" + std::to_string(ldc);
  }
};

// Runs one GEMM case through kernels::cuda::gemm<In, Out> and compares with the f64 reference.
template <class In, class Out>
void check_gemm(const GemmCase& g, double alpha, double beta, unsigned seed) {
  const int64_t a_rows = g.ta ? g.K : g.M, b_rows = g.tb ? g.N : g.K;
  const std::vector<float> A = random_rounded<In>(a_rows * g.lda, seed),
                           B = random_rounded<In>(b_rows * g.ldb, seed + 1);
  const std::vector<float> C0 = random_rounded<Out>(g.M * g.ldc, seed + 2);
  std::vector<double> reference(C0.begin(), C0.end());
  reference_gemm(g.ta, g.tb, g.M, g.N, g.K, alpha, A, g.lda, B, g.ldb, beta, reference, g.ldc);
  GuardedDeviceBuffer<In> dA(from_floats<In>(A)), dB(from_floats<In>(B));
  GuardedDeviceBuffer<Out> dC(g.M * g.ldc);
  if (beta == 0.0)
    dC.poison();  // beta == 0 ignores C's old contents, NaN included
  else
    dC.upload(from_floats<Out>(C0));
  kernels::cuda::gemm<In, Out>(g.ta, g.tb, g.M, g.N, g.K, alpha, dA.data(), g.lda, dB.data(), g.ldb, beta, dC.data(),
                               g.ldc, nullptr);
  std::vector<double> got = to_f64(dC.download());
  // Padding columns of C (ldc > N) are not part of the result: compare the M x N block only.
  std::vector<double> ref_block, got_block;
  for (int64_t i = 0; i < g.M; ++i)
    for (int64_t j = 0; j < g.N; ++j) {
      ref_block.push_back(reference[i * g.ldc + j]);
      got_block.push_back(got[i * g.ldc + j]);
    }
  ASSERT_TRUE(matches_reference(ref_block, got_block, threshold<Out>(), g.str()))
      << "alpha=" << alpha << " beta=" << beta;
  ASSERT_TRUE(dC.guards_intact()) << g.str();
  if (beta != 0.0) {  // padding columns are left untouched
    for (int64_t i = 0; i < g.M; ++i)
      for (int64_t j = g.N; j < g.ldc; ++j) ASSERT_EQ(got[i * g.ldc + j], static_cast<double>(C0[i * g.ldc + j]));
  }
}

template <class In, class Out>
void check_all_shapes() {
  unsigned seed = 1;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t M : kDims)
        for (int64_t N : kDims)
          for (int64_t K : kDims) {
            const GemmCase dense{ta, tb, M, N, K, ta ? M : K, tb ? K : N, N};
            check_gemm<In, Out>(dense, 1.0, 0.0, seed += 3);
            if (::testing::Test::HasFatalFailure()) return;
          }
  // Padded leading dimensions with alpha and beta.
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const int64_t M = 33, N = 7, K = 130;
      const GemmCase padded{ta, tb, M, N, K, (ta ? M : K) + 3, (tb ? K : N) + 5, N + 2};
      check_gemm<In, Out>(padded, 0.5, 1.0, seed += 3);
      check_gemm<In, Out>(padded, -2.0, 0.0, seed += 3);
      if (::testing::Test::HasFatalFailure()) return;
    }
}

TEST(MatmulKernel, GemmF32AllShapesAndTransposes) { check_all_shapes<float, float>(); }
TEST(MatmulKernel, GemmBf16AllShapesAndTransposes) { check_all_shapes<__nv_bfloat16, __nv_bfloat16>(); }
TEST(MatmulKernel, GemmF16AllShapesAndTransposes) { check_all_shapes<__half, __half>(); }
TEST(MatmulKernel, GemmF64AllShapesAndTransposes) { check_all_shapes<double, double>(); }
TEST(MatmulKernel, GemmBf16IntoF32) { check_all_shapes<__nv_bfloat16, float>(); }
TEST(MatmulKernel, GemmF16IntoF32) { check_all_shapes<__half, float>(); }

// dW += dY^T X with an f32 accumulator and bf16 operands: beta = 1 adds to what is there.
TEST(MatmulKernel, AccumulatesWithBetaOne) {
  const int64_t rows = 33, in = 7, out = 130;
  const std::vector<float> dy = round_through<__nv_bfloat16>(random_floats(rows * out, 5));
  const std::vector<float> x = round_through<__nv_bfloat16>(random_floats(rows * in, 6));
  const std::vector<float> dW0 = random_floats(out * in, 7);
  std::vector<double> reference(dW0.begin(), dW0.end());
  reference_gemm(true, false, out, in, rows, 1.0, dy, out, x, in, 1.0, reference, in);
  reference_gemm(true, false, out, in, rows, 1.0, dy, out, x, in, 1.0, reference, in);
  GuardedDeviceBuffer<__nv_bfloat16> d_dy(from_floats<__nv_bfloat16>(dy)), d_x(from_floats<__nv_bfloat16>(x));
  GuardedDeviceBuffer<float> dW(dW0);
  for (int step = 0; step < 2; ++step)
    kernels::cuda::gemm<__nv_bfloat16, float>(true, false, out, in, rows, 1.0, d_dy.data(), out, d_x.data(), in, 1.0,
                                              dW.data(), in, nullptr);
  EXPECT_TRUE(matches_reference(reference, to_f64(dW.download()), threshold<float>(), "two accumulated dW steps"));
}

template <class T>
void check_batched() {
  const int64_t batch = 3;
  unsigned seed = 50;
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (int64_t M : {1, 7, 33})
        for (int64_t N : {7, 33})
          for (int64_t K : {1, 33}) {
            const int64_t lda = ta ? M : K, ldb = tb ? K : N, ldc = N;
            // Strides larger than one matrix: gaps between the matrices of a batch.
            const int64_t stride_a = (ta ? K : M) * lda + 5, stride_b = (tb ? N : K) * ldb + 3, stride_c = M * ldc + 4;
            const std::vector<float> A = random_rounded<T>(batch * stride_a, seed += 3);
            const std::vector<float> B = random_rounded<T>(batch * stride_b, seed += 3);
            std::vector<double> reference(batch * stride_c, 0.0);
            for (int64_t b = 0; b < batch; ++b) {
              std::vector<float> a_slice(A.begin() + b * stride_a, A.begin() + (b + 1) * stride_a);
              std::vector<float> b_slice(B.begin() + b * stride_b, B.begin() + (b + 1) * stride_b);
              std::vector<double> c_slice(M * ldc);
              reference_gemm(ta, tb, M, N, K, 1.0, a_slice, lda, b_slice, ldb, 0.0, c_slice, ldc);
              std::copy(c_slice.begin(), c_slice.end(), reference.begin() + b * stride_c);
            }
            GuardedDeviceBuffer<T> dA(from_floats<T>(A)), dB(from_floats<T>(B)), dC(batch * stride_c);
            dC.poison();
            kernels::cuda::gemm_strided_batched<T, T>(ta, tb, M, N, K, 1.0, dA.data(), lda, stride_a, dB.data(), ldb,
                                                      stride_b, 0.0, dC.data(), ldc, stride_c, batch, nullptr);
            const std::vector<double> got = to_f64(dC.download());
            std::vector<double> ref_block, got_block;
            for (int64_t b = 0; b < batch; ++b)
              for (int64_t i = 0; i < M * ldc; ++i) {
                ref_block.push_back(reference[b * stride_c + i]);
                got_block.push_back(got[b * stride_c + i]);
              }
            const std::string what = "batched ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) +
                                     " M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K);
            ASSERT_TRUE(matches_reference(ref_block, got_block, threshold<T>(), what));
            ASSERT_TRUE(dC.guards_intact()) << what;
          }
}

TEST(MatmulKernel, StridedBatchedF32) { check_batched<float>(); }
TEST(MatmulKernel, StridedBatchedBf16) { check_batched<__nv_bfloat16>(); }
TEST(MatmulKernel, StridedBatchedF16) { check_batched<__half>(); }

double reference_activation(Activation act, double x) {
  if (act == Activation::gelu_erf) return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
  if (act == Activation::gelu_tanh)
    return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  return x;
}

// cuda::linear_forward: GEMM + bias + activation, with the pre-activation saved. Output widths
// include 136 (a multiple of 8), where 16-bit gelu_tanh runs fused in cuBLASLt's GELU_AUX epilogue.
// 16-bit activations: y = round(act(p)) with p the f32 pre-activation when the epilogue applies the
// activation, else the pre-activation rounded to T (which the activation kernel reads back), as
// kernels/matmul.h states; the reference follows the same rule.
template <class T>
void check_linear(Activation act, bool with_bias) {
  constexpr bool is_16bit = std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;
  unsigned seed = 300;
  for (int64_t rows : kDims)
    for (int64_t in : kDims)
      for (int64_t out : {int64_t{1}, int64_t{7}, int64_t{33}, int64_t{130}, int64_t{136}}) {
        const std::vector<float> x = random_rounded<T>(rows * in, seed += 3),
                                 W = random_rounded<T>(out * in, seed += 3);
        const std::vector<float> bias = random_rounded<T>(out, seed += 3);
        std::vector<double> pre(rows * out), y(rows * out);
        reference_gemm(false, true, rows, out, in, 1.0, x, in, W, in, 0.0, pre, out);
        const bool fused = act == Activation::gelu_tanh && out % 8 == 0;
        for (int64_t i = 0; i < rows * out; ++i) {
          if (with_bias) pre[i] += bias[i % out];
          const double activation_input =
              is_16bit && !fused ? to_f64(from_floats<T>({static_cast<float>(pre[i])}))[0] : pre[i];
          y[i] = reference_activation(act, activation_input);
        }
        GuardedDeviceBuffer<T> dx(from_floats<T>(x)), dW(from_floats<T>(W)), db(from_floats<T>(bias)), dy(rows * out),
            dpre(rows * out);
        dy.poison();
        dpre.poison();
        kernels::cuda::linear_forward<T>(dx.data(), dW.data(), with_bias ? db.data() : nullptr, act, rows, in, out,
                                         dy.data(), dpre.data(), nullptr);
        const std::string what = std::string("linear ") + kernels::activation_name(act) + (with_bias ? "+bias" : "") +
                                 " rows=" + std::to_string(rows) + " in=" + std::to_string(in) +
                                 " out=" + std::to_string(out);
        ASSERT_TRUE(matches_reference(y, to_f64(dy.download()), threshold<T>(), what + " y"));
        if (act != Activation::none) {
          ASSERT_TRUE(matches_reference(pre, to_f64(dpre.download()), threshold<T>(), what + " pre"));
        } else {
          for (double v : to_f64(dpre.download()))
            ASSERT_TRUE(std::isnan(v)) << what << ": pre_act written without activation";
        }
        ASSERT_TRUE(dy.guards_intact() && dpre.guards_intact()) << what;
      }
}

// cuda::linear_backward_weight: dW += dy^T x and db += column sums of dy from the same GEMM
// (cuBLASLt's BGRADB epilogue into a scratch vector, then one add kernel), against the f64 reference
// from non-zero starting dW and db. Rows 7 and 300 (the column-sum reduction this replaces needs two
// launches beyond 128 rows); f64 has no epilogue: dW is updated and the call says db was not.
template <class In, class Out>
void check_linear_backward_weight() {
  unsigned seed = 900;
  for (int64_t rows : {int64_t{7}, int64_t{300}})
    for (int64_t in : {int64_t{1}, int64_t{33}})
      for (int64_t out : {int64_t{7}, int64_t{130}}) {
        const std::vector<float> dy = random_rounded<In>(rows * out, seed += 3),
                                 x = random_rounded<In>(rows * in, seed += 3),
                                 W0 = random_rounded<Out>(out * in, seed += 3),
                                 b0 = random_rounded<Out>(out, seed += 3);
        std::vector<double> dW(W0.begin(), W0.end()), db(b0.begin(), b0.end());
        reference_gemm(true, false, out, in, rows, 1.0, dy, out, x, in, 1.0, dW, in);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < out; ++j) db[j] += dy[r * out + j];
        GuardedDeviceBuffer<In> d_dy(from_floats<In>(dy)), d_x(from_floats<In>(x));
        GuardedDeviceBuffer<Out> d_dW(from_floats<Out>(W0)), d_db(from_floats<Out>(b0)), scratch(out);
        scratch.poison();
        const runtime::StepProfile profile;
        const bool bias_done = kernels::cuda::linear_backward_weight<In, Out>(
            d_dy.data(), d_x.data(), rows, in, out, d_dW.data(), d_db.data(), scratch.data(), nullptr);
        const runtime::Counters calls = profile.elapsed();
        const std::string what = "linear_backward_weight rows=" + std::to_string(rows) + " in=" + std::to_string(in) +
                                 " out=" + std::to_string(out);
        ASSERT_TRUE(matches_reference(dW, to_f64(d_dW.download()), threshold<Out>(), what + " dW"));
        ASSERT_TRUE(d_dW.guards_intact() && d_db.guards_intact() && scratch.guards_intact()) << what;
        if (std::is_same_v<In, double>) {
          EXPECT_FALSE(bias_done) << what;
          EXPECT_EQ(to_f64(d_db.download()), std::vector<double>(b0.begin(), b0.end())) << what << ": db touched";
          continue;
        }
        ASSERT_TRUE(bias_done) << what;
        ASSERT_TRUE(matches_reference(db, to_f64(d_db.download()), threshold<Out>(), what + " db"));
        // One GEMM and one kernel, whatever the row count.
        EXPECT_EQ(calls.gemm_calls, 1u) << what << ": " << calls.describe();
        EXPECT_EQ(calls.kernel_launches, 1u) << what << ": " << calls.describe();
      }
  // Without db (or without scratch) the bias is left to the caller.
  GuardedDeviceBuffer<In> d_dy(from_floats<In>(random_rounded<In>(4 * 3, 1))),
      d_x(from_floats<In>(random_rounded<In>(4 * 2, 2)));
  GuardedDeviceBuffer<Out> d_dW(from_floats<Out>(std::vector<float>(3 * 2, 0.0f)));
  EXPECT_FALSE((kernels::cuda::linear_backward_weight<In, Out>(d_dy.data(), d_x.data(), 4, 2, 3, d_dW.data(), nullptr,
                                                               nullptr, nullptr)));
}

TEST(LinearBackwardWeight, F32) { check_linear_backward_weight<float, float>(); }
TEST(LinearBackwardWeight, Bf16) { check_linear_backward_weight<__nv_bfloat16, __nv_bfloat16>(); }
TEST(LinearBackwardWeight, Bf16IntoF32) { check_linear_backward_weight<__nv_bfloat16, float>(); }
TEST(LinearBackwardWeight, F16IntoF32) { check_linear_backward_weight<__half, float>(); }
TEST(LinearBackwardWeight, F64) { check_linear_backward_weight<double, double>(); }

class LinearKernel : public ::testing::TestWithParam<Activation> {};

TEST_P(LinearKernel, F32) {
  check_linear<float>(GetParam(), true);
  check_linear<float>(GetParam(), false);
}
TEST_P(LinearKernel, Bf16) {
  check_linear<__nv_bfloat16>(GetParam(), true);
  check_linear<__nv_bfloat16>(GetParam(), false);
}
TEST_P(LinearKernel, F16) { check_linear<__half>(GetParam(), true); }
TEST_P(LinearKernel, F64) { check_linear<double>(GetParam(), true); }

TEST_P(LinearKernel, CpuMatchesReference) {
  const Activation act = GetParam();
  const int64_t rows = 7, in = 33, out = 130;
  const std::vector<float> x = random_floats(rows * in, 1), W = random_floats(out * in, 2),
                           bias = random_floats(out, 3);
  std::vector<double> pre(rows * out), y(rows * out);
  reference_gemm(false, true, rows, out, in, 1.0, x, in, W, in, 0.0, pre, out);
  for (int64_t i = 0; i < rows * out; ++i) {
    pre[i] += bias[i % out];
    y[i] = reference_activation(act, pre[i]);
  }
  std::vector<float> got_y(rows * out), got_pre(rows * out);
  kernels::cpu::linear_forward<float>(x.data(), W.data(), bias.data(), act, rows, in, out, got_y.data(),
                                      got_pre.data());
  EXPECT_TRUE(matches_reference(y, testing::to_f64(got_y), 1e-10, "cpu linear y"));
  if (act != Activation::none) {
    EXPECT_TRUE(matches_reference(pre, testing::to_f64(got_pre), 1e-10, "cpu linear pre"));
  }
}

// activation_backward: dpre = dy * act'(pre) vs the f64 derivative (central differences of the
// f64 reference activation are accurate to ~1e-10 at h = 1e-5).
template <class T>
void check_activation_backward(Activation act) {
  for (int64_t n : {1, 7, 33, 130, 1031}) {
    std::vector<float> pre = random_floats(n, 70 + n, -4.0f, 4.0f), dy = random_floats(n, 90 + n);
    if constexpr (!std::is_same_v<T, double>) {
      pre = round_through<T>(pre);
      dy = round_through<T>(dy);
    }
    std::vector<double> reference(n);
    const double h = 1e-5;
    for (int64_t i = 0; i < n; ++i)
      reference[i] = dy[i] * (reference_activation(act, pre[i] + h) - reference_activation(act, pre[i] - h)) / (2 * h);
    GuardedDeviceBuffer<T> d_pre(from_floats<T>(pre)), d_dy(from_floats<T>(dy)), d_out(n);
    d_out.poison();
    kernels::cuda::activation_backward<T>(act, d_dy.data(), d_pre.data(), d_out.data(), n, nullptr);
    // f64: finite-difference error ~1e-10 relative -> NMSE ~1e-20; 1e-16.
    const double limit = std::is_same_v<T, double> ? 1e-16 : threshold<T>();
    ASSERT_TRUE(matches_reference(
        reference, to_f64(d_out.download()), limit,
        std::string("activation_backward ") + kernels::activation_name(act) + " n=" + std::to_string(n)));
    ASSERT_TRUE(d_out.guards_intact());
  }
}

TEST_P(LinearKernel, ActivationBackward) {
  check_activation_backward<float>(GetParam());
  check_activation_backward<__nv_bfloat16>(GetParam());
  check_activation_backward<__half>(GetParam());
  check_activation_backward<double>(GetParam());
}

INSTANTIATE_TEST_SUITE_P(Activations, LinearKernel,
                         ::testing::Values(Activation::none, Activation::gelu_erf, Activation::gelu_tanh),
                         [](const ::testing::TestParamInfo<Activation>& info) {
                           return std::string(kernels::activation_name(info.param));
                         });

// The epilogue and activation-backward kernels (and the GEMM behind them) give the same bits under
// every emulator schedule.
TEST(MatmulKernel, ScheduleInvariant) {
  const int64_t rows = 33, in = 7, out = 130;
  const std::vector<float> x = random_floats(rows * in, 1), W = random_floats(out * in, 2),
                           bias = random_floats(out, 3);
  GuardedDeviceBuffer<__nv_bfloat16> dx(from_floats<__nv_bfloat16>(x)), dW(from_floats<__nv_bfloat16>(W)),
      db(from_floats<__nv_bfloat16>(bias)), y(rows * out), pre(rows * out), dpre(rows * out);
  const emu::OracleResult result = emu::check_schedule_invariance([&] {
    y.poison();
    pre.poison();
    dpre.poison();
    kernels::cuda::linear_forward<__nv_bfloat16>(dx.data(), dW.data(), db.data(), Activation::gelu_tanh, rows, in, out,
                                                 y.data(), pre.data(), nullptr);
    kernels::cuda::activation_backward<__nv_bfloat16>(Activation::gelu_tanh, y.data(), pre.data(), dpre.data(),
                                                      rows * out, nullptr);
    std::vector<uint8_t> bytes = y.download_bytes();
    for (const auto* buffer : {&pre, &dpre}) {
      const std::vector<uint8_t> more = buffer->download_bytes();
      bytes.insert(bytes.end(), more.begin(), more.end());
    }
    return bytes;
  });
  EXPECT_TRUE(result.identical) << result.message;
}

TEST(MatmulKernel, NanAndInfPropagate) {
  const int64_t M = 4, N = 5, K = 6;
  std::vector<float> A = random_floats(M * K, 1), B = random_floats(K * N, 2, 0.5f, 1.0f);  // B > 0
  A[1 * K + 2] = NAN;                                                                       // row 1 of C is NaN
  A[3 * K + 0] = INFINITY;  // row 3 of C is +Inf (B > 0, no other Inf)
  std::vector<double> reference(M * N);
  reference_gemm(false, false, M, N, K, 1.0, A, K, B, N, 0.0, reference, N);
  GuardedDeviceBuffer<float> dA(A), dB(B), dC(M * N);
  kernels::cuda::gemm<float, float>(false, false, M, N, K, 1.0, dA.data(), K, dB.data(), N, 0.0, dC.data(), N, nullptr);
  EXPECT_TRUE(matches_reference(reference, to_f64(dC.download()), 1e-10, "gemm with NaN/Inf"));

  GuardedDeviceBuffer<float> bias(std::vector<float>(N, 0.0f)), y(M * N), pre(M * N);
  std::vector<float> W(N * K);  // W (N, K) = B^T, so x . W^T = A . B
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < N; ++j) W[j * K + k] = B[k * N + j];
  GuardedDeviceBuffer<float> dW(W);
  kernels::cuda::linear_forward<float>(dA.data(), dW.data(), bias.data(), Activation::gelu_erf, M, K, N, y.data(),
                                       pre.data(), nullptr);
  std::vector<double> activated(M * N);
  for (int64_t i = 0; i < M * N; ++i) activated[i] = reference_activation(Activation::gelu_erf, reference[i]);
  EXPECT_TRUE(matches_reference(activated, to_f64(y.download()), 1e-10, "linear gelu with NaN/Inf"));
}

// Far outside the curved region GELU' is 1 (x > 0) or 0 (x < 0); x^2 overflowing f32 must not turn
// that into NaN.
TEST(MatmulKernel, ActivationBackwardHugeInputs) {
  const std::vector<float> pre = {1e20f, -1e20f, 30.0f, -30.0f}, dy = {2.0f, 2.0f, 2.0f, 2.0f};
  for (Activation act : {Activation::gelu_erf, Activation::gelu_tanh}) {
    GuardedDeviceBuffer<float> d_pre(pre), d_dy(dy), out(4);
    kernels::cuda::activation_backward<float>(act, d_dy.data(), d_pre.data(), out.data(), 4, nullptr);
    EXPECT_EQ(out.download(), (std::vector<float>{2.0f, 0.0f, 2.0f, 0.0f})) << kernels::activation_name(act);
    std::vector<float> cpu_out(4);
    kernels::cpu::activation_backward<float>(act, dy.data(), pre.data(), cpu_out.data(), 4);
    EXPECT_EQ(cpu_out, (std::vector<float>{2.0f, 0.0f, 2.0f, 0.0f})) << kernels::activation_name(act);
  }
}

TEST(MatmulKernel, EmptyDimensions) {
  // K == 0: C = beta * C (beta == 0 clears NaN); M == 0 or N == 0: nothing is touched.
  GuardedDeviceBuffer<float> C(std::vector<float>(6, 2.0f));
  float dummy = 0.0f;
  kernels::cuda::gemm<float, float>(false, false, 2, 3, 0, 1.0, &dummy, 1, &dummy, 3, 0.5, C.data(), 3, nullptr);
  for (float v : C.download()) EXPECT_EQ(v, 1.0f);
  C.poison();
  kernels::cuda::gemm<float, float>(false, false, 2, 3, 0, 1.0, &dummy, 1, &dummy, 3, 0.0, C.data(), 3, nullptr);
  for (float v : C.download()) EXPECT_EQ(v, 0.0f);
  kernels::cuda::gemm<float, float>(false, false, 0, 3, 4, 1.0, &dummy, 4, &dummy, 3, 0.0, C.data(), 3, nullptr);
  for (float v : C.download()) EXPECT_EQ(v, 0.0f);
  // in == 0 features: y = act(bias).
  GuardedDeviceBuffer<__nv_bfloat16> bias(from_floats<__nv_bfloat16>({1.0f, -1.0f})), y(4), pre(4);
  kernels::cuda::linear_forward<__nv_bfloat16>(nullptr, nullptr, bias.data(), Activation::none, 2, 0, 2, y.data(),
                                               pre.data(), nullptr);
  EXPECT_EQ(to_f64(y.download()), (std::vector<double>{1.0, -1.0, 1.0, -1.0}));
}

TEST(MatmulKernel, RejectsInvalidArguments) {
  float value = 0.0f;
  // lda smaller than K for an untransposed A.
  EXPECT_THROW(
      (kernels::cuda::gemm<float, float>(false, false, 2, 2, 3, 1.0, &value, 2, &value, 2, 0.0, &value, 2, nullptr)),
      std::invalid_argument);
  EXPECT_THROW((kernels::cpu::gemm<float, float>(false, true, 2, 2, 3, 1.0, &value, 3, &value, 2, 0.0, &value, 2)),
               std::invalid_argument);
  EXPECT_THROW(
      (kernels::cuda::gemm<float, float>(false, false, -1, 2, 3, 1.0, &value, 3, &value, 2, 0.0, &value, 2, nullptr)),
      std::invalid_argument);
  EXPECT_THROW((kernels::cuda::gemm_strided_batched<float, float>(false, false, 1, 1, 1, 1.0, &value, 1, -1, &value, 1,
                                                                  0, 0.0, &value, 1, 0, 2, nullptr)),
               std::invalid_argument);
  EXPECT_THROW((kernels::cuda::linear_forward<float>(&value, &value, nullptr, static_cast<Activation>(9), 1, 1, 1,
                                                     &value, nullptr, nullptr)),
               std::invalid_argument);
  try {
    kernels::cpu::gemm<float, float>(false, false, 2, 2, 3, 1.0, &value, 2, &value, 2, 0.0, &value, 2);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("lda"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("K=3"), std::string::npos) << e.what();
  }
}

TEST(MatmulKernel, CublasCheckNamesCallAndStatus) {
  try {
    COCO_CUBLAS_CHECK(15);  // CUBLAS_STATUS_NOT_SUPPORTED
    FAIL() << "expected coco::CudaError";
  } catch (const CudaError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("CUBLAS_STATUS_NOT_SUPPORTED"), std::string::npos) << message;
    EXPECT_NE(message.find("15"), std::string::npos) << message;
    EXPECT_NE(message.find("test_matmul.cu"), std::string::npos) << message;
  }
  EXPECT_NO_THROW(COCO_CUBLAS_CHECK(0));
}

}  // namespace
}  // namespace coco
