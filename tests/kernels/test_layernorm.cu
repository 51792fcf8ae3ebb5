// LayerNorm kernels: CUDA (emulated here) against the CPU reference at odd shapes, f32 and bf16
// (f16 spot check), the fused residual variant, NaN/Inf propagation, and bitwise schedule invariance
// of the deterministic backward.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/layernorm.h"
#include "tests/common/kernel_check.h"
#include "engine/simt/schedule_oracle.h"

namespace {

using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

constexpr float kEps = 1e-5f;

// f32: reference accumulates in double, the kernel in f32 over <= 1000 terms: NMSE ~1e-13.
constexpr double kF32Threshold = 1e-10;
// bf16 keeps 8 significant bits: one output rounding is <= 2^-8 relative, so NMSE <= 2^-16 = 1.5e-5
// (about a third of that on average); 3e-5 leaves room for f32-vs-f64 statistics flipping a rounding.
constexpr double kBf16Threshold = 3e-5;

template <class T>
constexpr double threshold_for() {
  return std::is_same_v<T, float> ? kF32Threshold : kBf16Threshold;
}

struct Shape {
  int64_t rows, C;
};
std::string label(const Shape& s) { return "rows=" + std::to_string(s.rows) + " C=" + std::to_string(s.C); }

const Shape kShapes[] = {{1, 5}, {7, 37}, {33, 100}, {130, 61}, {4, 768}, {2, 1}};

struct Inputs {
  std::vector<float> x, residual, gamma, beta, dout, dx_extra;
};

Inputs make_inputs(const Shape& s, unsigned seed) {
  Inputs in;
  const size_t n = static_cast<size_t>(s.rows * s.C), c = static_cast<size_t>(s.C);
  in.x = random_floats(n, seed, -2.0f, 3.0f);
  in.residual = random_floats(n, seed + 1, -1.0f, 1.0f);
  in.gamma = random_floats(c, seed + 2, 0.5f, 1.5f);
  in.beta = random_floats(c, seed + 3, -0.5f, 0.5f);
  in.dout = random_floats(n, seed + 4, -1.0f, 1.0f);
  in.dx_extra = random_floats(n, seed + 5, -0.5f, 0.5f);
  return in;
}

template <class T>
void round_inputs(Inputs& in) {
  for (auto* v : {&in.x, &in.residual, &in.gamma, &in.beta, &in.dout, &in.dx_extra}) *v = round_through<T>(*v);
}

template <class T>
class LayerNormCuda : public ::testing::Test {};
using ActivationTypes = ::testing::Types<float, __nv_bfloat16>;
TYPED_TEST_SUITE(LayerNormCuda, ActivationTypes);

TYPED_TEST(LayerNormCuda, ForwardMatchesCpu) {
  using T = TypeParam;
  for (const Shape& s : kShapes) {
    Inputs in = make_inputs(s, 17);
    round_inputs<T>(in);
    const size_t n = static_cast<size_t>(s.rows * s.C), rows = static_cast<size_t>(s.rows);
    std::vector<float> out(n), mean(rows), rstd(rows);
    coco::kernels::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), in.x.data(), in.gamma.data(),
                                          in.beta.data(), s.rows, s.C, kEps);
    GuardedDeviceBuffer<T> d_x(coco::testing::from_floats<T>(in.x)), d_gamma(coco::testing::from_floats<T>(in.gamma)),
        d_beta(coco::testing::from_floats<T>(in.beta)), d_out(n);
    GuardedDeviceBuffer<float> d_mean(rows), d_rstd(rows);
    d_out.poison();
    d_mean.poison();
    d_rstd.poison();
    coco::kernels::cuda::layernorm_forward(d_out.data(), d_mean.data(), d_rstd.data(), d_x.data(), d_gamma.data(),
                                           d_beta.data(), s.rows, s.C, kEps, nullptr);
    EXPECT_TRUE(matches_reference(to_f64(out), to_f64(d_out.download()), threshold_for<T>(), "out " + label(s)));
    // mean/rstd are f32 for every T: f32 threshold.
    EXPECT_TRUE(matches_reference(to_f64(mean), to_f64(d_mean.download()), kF32Threshold, "mean " + label(s)));
    EXPECT_TRUE(matches_reference(to_f64(rstd), to_f64(d_rstd.download()), kF32Threshold, "rstd " + label(s)));
    EXPECT_TRUE(d_out.guards_intact() && d_mean.guards_intact() && d_rstd.guards_intact()) << label(s);
  }
}

TYPED_TEST(LayerNormCuda, ResidualForwardMatchesCpuAndReturnsTheSum) {
  using T = TypeParam;
  for (const Shape& s : kShapes) {
    Inputs in = make_inputs(s, 29);
    round_inputs<T>(in);
    const size_t n = static_cast<size_t>(s.rows * s.C), rows = static_cast<size_t>(s.rows);
    // The kernel rounds the sum to T and normalizes the rounded sum; so does this reference.
    std::vector<float> sum(n);
    for (size_t i = 0; i < n; ++i) sum[i] = in.x[i] + in.residual[i];
    sum = round_through<T>(sum);
    std::vector<float> out(n), mean(rows), rstd(rows);
    coco::kernels::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), sum.data(), in.gamma.data(),
                                          in.beta.data(), s.rows, s.C, kEps);
    GuardedDeviceBuffer<T> d_x(coco::testing::from_floats<T>(in.x)),
        d_residual(coco::testing::from_floats<T>(in.residual)), d_gamma(coco::testing::from_floats<T>(in.gamma)),
        d_beta(coco::testing::from_floats<T>(in.beta)), d_out(n), d_sum(n);
    GuardedDeviceBuffer<float> d_mean(rows), d_rstd(rows);
    d_out.poison();
    d_sum.poison();
    coco::kernels::cuda::residual_layernorm_forward(d_out.data(), d_sum.data(), d_mean.data(), d_rstd.data(),
                                                    d_x.data(), d_residual.data(), d_gamma.data(), d_beta.data(),
                                                    s.rows, s.C, kEps, nullptr);
    // One correctly rounded addition on both sides: the sums agree exactly.
    EXPECT_EQ(to_f64(sum), to_f64(d_sum.download())) << label(s);
    EXPECT_TRUE(matches_reference(to_f64(out), to_f64(d_out.download()), threshold_for<T>(), "out " + label(s)));
    EXPECT_TRUE(matches_reference(to_f64(rstd), to_f64(d_rstd.download()), kF32Threshold, "rstd " + label(s)));
    EXPECT_TRUE(d_out.guards_intact() && d_sum.guards_intact()) << label(s);
  }
}

// Runs the CUDA backward with GradT parameter gradients on top of `initial` and compares with the CPU
// reference (f32) on the same rounded inputs.
template <class T, class GradT>
void check_backward(const Shape& s, bool with_extra, double param_threshold) {
  Inputs in = make_inputs(s, 41);
  round_inputs<T>(in);
  const size_t n = static_cast<size_t>(s.rows * s.C), rows = static_cast<size_t>(s.rows), c = static_cast<size_t>(s.C);
  std::vector<float> out(n), mean(rows), rstd(rows);
  coco::kernels::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), in.x.data(), in.gamma.data(),
                                        in.beta.data(), s.rows, s.C, kEps);
  // Existing gradient contents (accumulation target), exactly representable in GradT.
  const std::vector<float> initial_gamma = round_through<GradT>(random_floats(c, 5, -1.0f, 1.0f));
  const std::vector<float> initial_beta = round_through<GradT>(random_floats(c, 6, -1.0f, 1.0f));
  std::vector<float> dx(n), dgamma = initial_gamma, dbeta = initial_beta;
  coco::kernels::cpu::layernorm_backward(dx.data(), dgamma.data(), dbeta.data(), in.dout.data(),
                                         with_extra ? in.dx_extra.data() : nullptr, in.x.data(), in.gamma.data(),
                                         mean.data(), rstd.data(), s.rows, s.C);

  GuardedDeviceBuffer<T> d_x(coco::testing::from_floats<T>(in.x)), d_gamma(coco::testing::from_floats<T>(in.gamma)),
      d_dout(coco::testing::from_floats<T>(in.dout)), d_extra(coco::testing::from_floats<T>(in.dx_extra)), d_dx(n);
  GuardedDeviceBuffer<float> d_mean(mean), d_rstd(rstd);
  GuardedDeviceBuffer<GradT> d_dgamma(coco::testing::from_floats<GradT>(initial_gamma)),
      d_dbeta(coco::testing::from_floats<GradT>(initial_beta));
  GuardedDeviceBuffer<uint8_t> workspace(coco::kernels::cuda::layernorm_backward_workspace_bytes(s.rows, s.C));
  workspace.poison();
  d_dx.poison();
  coco::kernels::cuda::layernorm_backward(d_dx.data(), d_dgamma.data(), d_dbeta.data(), d_dout.data(),
                                          with_extra ? d_extra.data() : nullptr, d_x.data(), d_gamma.data(),
                                          d_mean.data(), d_rstd.data(), s.rows, s.C, workspace.data(), nullptr);
  EXPECT_TRUE(matches_reference(to_f64(dx), to_f64(d_dx.download()), threshold_for<T>(), "dx " + label(s)));
  EXPECT_TRUE(matches_reference(to_f64(dgamma), to_f64(d_dgamma.download()), param_threshold, "dgamma " + label(s)));
  EXPECT_TRUE(matches_reference(to_f64(dbeta), to_f64(d_dbeta.download()), param_threshold, "dbeta " + label(s)));
  EXPECT_TRUE(d_dx.guards_intact() && d_dgamma.guards_intact() && d_dbeta.guards_intact() && workspace.guards_intact())
      << label(s);
}

TEST(LayerNormCudaBackward, F32MatchesCpu) {
  for (const Shape& s : kShapes) check_backward<float, float>(s, false, kF32Threshold);
  check_backward<float, float>({33, 100}, true, kF32Threshold);
}

TEST(LayerNormCudaBackward, Bf16WithF32ParamGradsMatchesCpu) {
  // dgamma/dbeta are summed in f32 from bf16 inputs: the only bf16 error is in dx (bf16 threshold);
  // the f32 gradients compare at 1e-8 (inputs identical, f32 accumulation over <= 130 rows).
  for (const Shape& s : kShapes) check_backward<__nv_bfloat16, float>(s, false, 1e-8);
  check_backward<__nv_bfloat16, float>({130, 61}, true, 1e-8);
}

TEST(LayerNormCudaBackward, Bf16WithBf16ParamGradsMatchesCpu) {
  for (const Shape& s : kShapes) check_backward<__nv_bfloat16, __nv_bfloat16>(s, false, kBf16Threshold);
}

TEST(LayerNormCudaBackward, F16MatchesCpu) {
  // f16 has 11 significant bits: rounding NMSE ~1e-7; 1e-5 leaves margin.
  check_backward<__half, float>({33, 100}, true, 1e-8);
  check_backward<__half, __half>({7, 37}, false, kBf16Threshold);
}

TEST(LayerNormCudaBackward, ManyRowsUseSeveralParamChunks) {
  // rows / 32 > 1 chunks with a ragged last chunk, and C spanning two column tiles.
  check_backward<float, float>({1000, 40}, false, kF32Threshold);
}

TEST(LayerNormCuda, NanAndInfPropagateLikeTheReference) {
  const Shape s{4, 37};
  Inputs in = make_inputs(s, 3);
  in.x[1 * 37 + 5] = NAN;
  in.x[2 * 37 + 0] = INFINITY;
  const size_t n = static_cast<size_t>(s.rows * s.C), rows = static_cast<size_t>(s.rows);
  std::vector<float> out(n), mean(rows), rstd(rows);
  coco::kernels::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), in.x.data(), in.gamma.data(),
                                        in.beta.data(), s.rows, s.C, kEps);
  ASSERT_TRUE(std::isnan(out[1 * 37 + 20]) && std::isnan(out[2 * 37 + 3]) && std::isfinite(out[0]));
  GuardedDeviceBuffer<float> d_x(in.x), d_gamma(in.gamma), d_beta(in.beta), d_out(n), d_mean(rows), d_rstd(rows);
  coco::kernels::cuda::layernorm_forward(d_out.data(), d_mean.data(), d_rstd.data(), d_x.data(), d_gamma.data(),
                                         d_beta.data(), s.rows, s.C, kEps, nullptr);
  EXPECT_TRUE(matches_reference(to_f64(out), to_f64(d_out.download()), kF32Threshold, "out with NaN/Inf rows"));

  // Backward: a NaN in dout spreads over its row of dx and its column of dgamma/dbeta only.
  std::vector<float> dout = in.dout;
  std::vector<float> x_finite = make_inputs(s, 3).x;
  coco::kernels::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x_finite.data(), in.gamma.data(),
                                        in.beta.data(), s.rows, s.C, kEps);
  dout[3 * 37 + 11] = NAN;
  std::vector<float> dx(n), dgamma(37, 0.0f), dbeta(37, 0.0f);
  coco::kernels::cpu::layernorm_backward(dx.data(), dgamma.data(), dbeta.data(), dout.data(),
                                         static_cast<const float*>(nullptr), x_finite.data(), in.gamma.data(),
                                         mean.data(), rstd.data(), s.rows, s.C);
  GuardedDeviceBuffer<float> d_xf(x_finite), d_dout(dout), d_dx(n), d_dgamma(37), d_dbeta(37), d_mean2(mean),
      d_rstd2(rstd);
  GuardedDeviceBuffer<uint8_t> workspace(coco::kernels::cuda::layernorm_backward_workspace_bytes(s.rows, s.C));
  coco::kernels::cuda::layernorm_backward(d_dx.data(), d_dgamma.data(), d_dbeta.data(), d_dout.data(),
                                          static_cast<const float*>(nullptr), d_xf.data(), d_gamma.data(),
                                          d_mean2.data(), d_rstd2.data(), s.rows, s.C, workspace.data(), nullptr);
  EXPECT_TRUE(matches_reference(to_f64(dx), to_f64(d_dx.download()), kF32Threshold, "dx with NaN dout"));
  EXPECT_TRUE(matches_reference(to_f64(dgamma), to_f64(d_dgamma.download()), kF32Threshold, "dgamma with NaN dout"));
  EXPECT_TRUE(std::isnan(dgamma[11]) && std::isfinite(dgamma[10]));
}

TEST(LayerNormCuda, BackwardIsScheduleInvariant) {
  const Shape s{200, 45};
  Inputs in = make_inputs(s, 9);
  round_inputs<__nv_bfloat16>(in);
  const size_t n = static_cast<size_t>(s.rows * s.C), rows = static_cast<size_t>(s.rows);
  std::vector<float> out(n), mean(rows), rstd(rows);
  coco::kernels::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), in.x.data(), in.gamma.data(),
                                        in.beta.data(), s.rows, s.C, kEps);
  using T = __nv_bfloat16;
  GuardedDeviceBuffer<T> d_x(coco::testing::from_floats<T>(in.x)), d_gamma(coco::testing::from_floats<T>(in.gamma)),
      d_beta(coco::testing::from_floats<T>(in.beta)), d_dout(coco::testing::from_floats<T>(in.dout)),
      d_residual(coco::testing::from_floats<T>(in.residual)), d_out(n), d_sum(n), d_dx(n);
  GuardedDeviceBuffer<float> d_mean(rows), d_rstd(rows), d_dgamma(45), d_dbeta(45);
  GuardedDeviceBuffer<uint8_t> workspace(coco::kernels::cuda::layernorm_backward_workspace_bytes(s.rows, s.C));
  const emu::OracleResult result = emu::check_schedule_invariance(
      [&] {
        for (auto* b : {&d_out, &d_sum, &d_dx}) b->poison(0xFF);
        for (auto* b : {&d_mean, &d_rstd, &d_dgamma, &d_dbeta}) b->poison(0x00);
        workspace.poison(0x7F);
        coco::kernels::cuda::residual_layernorm_forward(d_out.data(), d_sum.data(), d_mean.data(), d_rstd.data(),
                                                        d_x.data(), d_residual.data(), d_gamma.data(), d_beta.data(),
                                                        s.rows, s.C, kEps, nullptr);
        coco::kernels::cuda::layernorm_backward(d_dx.data(), d_dgamma.data(), d_dbeta.data(), d_dout.data(), d_x.data(),
                                                d_sum.data(), d_gamma.data(), d_mean.data(), d_rstd.data(), s.rows, s.C,
                                                workspace.data(), nullptr);
        std::vector<uint8_t> bytes;
        for (const auto* b : {&d_out, &d_sum, &d_dx}) {
          const auto part = b->download_bytes();
          bytes.insert(bytes.end(), part.begin(), part.end());
        }
        for (const auto* b : {&d_mean, &d_rstd, &d_dgamma, &d_dbeta}) {
          const auto part = b->download_bytes();
          bytes.insert(bytes.end(), part.begin(), part.end());
        }
        return bytes;
      },
      3);
  EXPECT_TRUE(result.identical) << result.message;
}

TEST(LayerNormCuda, RejectsBadShapesAndMissingWorkspace) {
  float dummy = 0.0f;
  EXPECT_THROW(
      coco::kernels::cuda::layernorm_forward(&dummy, &dummy, &dummy, &dummy, &dummy, &dummy, 1, 0, kEps, nullptr),
      std::invalid_argument);
  EXPECT_THROW(
      coco::kernels::cuda::layernorm_backward(&dummy, &dummy, &dummy, &dummy, static_cast<const float*>(nullptr),
                                              &dummy, &dummy, &dummy, &dummy, 1, 1, nullptr, nullptr),
      std::invalid_argument);
}

TEST(LayerNormCuda, EpsIsUsed) {
  // A constant row has zero variance: rstd = 1/sqrt(eps) exactly (eps a power of 4), output = beta.
  const std::vector<float> x = {2.0f, 2.0f, 2.0f}, gamma = {1.0f, 2.0f, 3.0f}, beta = {0.5f, -0.5f, 0.25f};
  GuardedDeviceBuffer<float> d_x(x), d_gamma(gamma), d_beta(beta), d_out(3), d_mean(1), d_rstd(1);
  coco::kernels::cuda::layernorm_forward(d_out.data(), d_mean.data(), d_rstd.data(), d_x.data(), d_gamma.data(),
                                         d_beta.data(), 1, 3, 1.0f / 16.0f, nullptr);
  EXPECT_FLOAT_EQ(d_rstd.download()[0], 4.0f);
  EXPECT_EQ(d_out.download(), beta);
}

TEST(LayerNormCpu, EpsIsUsed) {
  // A constant row has zero variance: rstd = 1/sqrt(eps), output = beta.
  const std::vector<float> x = {2.0f, 2.0f, 2.0f}, gamma = {1.0f, 2.0f, 3.0f}, beta = {0.5f, -0.5f, 0.25f};
  std::vector<float> out(3), mean(1), rstd(1);
  coco::kernels::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), gamma.data(), beta.data(), 1, 3,
                                        0.25);
  EXPECT_FLOAT_EQ(rstd[0], 2.0f);
  EXPECT_FLOAT_EQ(mean[0], 2.0f);
  EXPECT_EQ(out, beta);
}

}  // namespace
