// GELU kernels: CUDA (emulated) against the CPU reference, both approximations, f32/bf16/f16, odd
// sizes, NaN/Inf, large-|x| derivatives, and a check of the formulas against finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/gelu.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::kernels::GeluApproximation;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::round_through;
using coco::testing::to_f64;

// f32: same f32 formula on both sides, only libm vs device erf/tanh/exp last-bit differences.
constexpr double kF32Threshold = 1e-12;
// bf16 keeps 8 significant bits: one output rounding is <= 2^-8 relative, NMSE <= 2^-16 = 1.5e-5
// (f16: far less); 3e-5 leaves room for libm-vs-device differences flipping a rounding.
constexpr double kHalfThreshold = 3e-5;

const char* name(GeluApproximation a) { return a == GeluApproximation::erf ? "erf" : "tanh"; }

template <class T>
void check_against_cpu(int64_t n, GeluApproximation approximation, double threshold) {
  std::vector<float> x = round_through<T>(
      coco::testing::random_floats(static_cast<size_t>(n), 100 + static_cast<unsigned>(n), -6.0f, 6.0f));
  std::vector<float> dout = round_through<T>(coco::testing::random_floats(static_cast<size_t>(n), 7, -1.0f, 1.0f));
  std::vector<float> out(x.size()), dx(x.size());
  coco::kernels::cpu::gelu_forward(out.data(), x.data(), n, approximation);
  coco::kernels::cpu::gelu_backward(dx.data(), dout.data(), x.data(), n, approximation);
  GuardedDeviceBuffer<T> d_x(coco::testing::from_floats<T>(x)), d_dout(coco::testing::from_floats<T>(dout)),
      d_out(x.size()), d_dx(x.size());
  d_out.poison();
  d_dx.poison();
  coco::kernels::cuda::gelu_forward(d_out.data(), d_x.data(), n, approximation, nullptr);
  coco::kernels::cuda::gelu_backward(d_dx.data(), d_dout.data(), d_x.data(), n, approximation, nullptr);
  const std::string what = std::string(name(approximation)) + " n=" + std::to_string(n);
  EXPECT_TRUE(matches_reference(to_f64(out), to_f64(d_out.download()), threshold, "forward " + what));
  EXPECT_TRUE(matches_reference(to_f64(dx), to_f64(d_dx.download()), threshold, "backward " + what));
  EXPECT_TRUE(d_out.guards_intact() && d_dx.guards_intact()) << what;
}

TEST(GeluCuda, MatchesCpuAtOddSizes) {
  for (GeluApproximation a : {GeluApproximation::erf, GeluApproximation::tanh})
    for (int64_t n : {1, 7, 33, 130, 1037}) {
      check_against_cpu<float>(n, a, kF32Threshold);
      check_against_cpu<__nv_bfloat16>(n, a, kHalfThreshold);
    }
  check_against_cpu<__half>(517, GeluApproximation::erf, kHalfThreshold);
  check_against_cpu<__half>(517, GeluApproximation::tanh, kHalfThreshold);
}

TEST(GeluCuda, NanInfAndHugeValues) {
  const std::vector<float> x = {NAN, INFINITY, -INFINITY, 1e30f, -1e30f, 3e19f, -3e19f, 0.0f, -0.0f, 12.0f, -12.0f};
  const std::vector<float> dout(x.size(), 1.0f);
  for (GeluApproximation a : {GeluApproximation::erf, GeluApproximation::tanh}) {
    std::vector<float> out(x.size()), dx(x.size());
    coco::kernels::cpu::gelu_forward(out.data(), x.data(), static_cast<int64_t>(x.size()), a);
    coco::kernels::cpu::gelu_backward(dx.data(), dout.data(), x.data(), static_cast<int64_t>(x.size()), a);
    EXPECT_TRUE(std::isnan(out[0]) && std::isnan(dx[0])) << name(a);
    EXPECT_EQ(out[1], INFINITY) << name(a);
    EXPECT_EQ(out[3], 1e30f) << name(a);
    EXPECT_EQ(out[4], 0.0f) << name(a);
    // Far out the derivative is exactly 1 (right) and 0 (left), never 0 * inf = NaN.
    EXPECT_EQ(dx[3], 1.0f) << name(a);
    EXPECT_EQ(dx[4], 0.0f) << name(a);
    EXPECT_EQ(dx[5], 1.0f) << name(a);
    EXPECT_EQ(dx[6], 0.0f) << name(a);
    EXPECT_FLOAT_EQ(dx[7], 0.5f) << name(a);
    GuardedDeviceBuffer<float> d_x(x), d_dout(dout), d_out(x.size()), d_dx(x.size());
    coco::kernels::cuda::gelu_forward(d_out.data(), d_x.data(), static_cast<int64_t>(x.size()), a, nullptr);
    coco::kernels::cuda::gelu_backward(d_dx.data(), d_dout.data(), d_x.data(), static_cast<int64_t>(x.size()), a,
                                       nullptr);
    EXPECT_TRUE(
        matches_reference(to_f64(out), to_f64(d_out.download()), kF32Threshold, std::string("forward ") + name(a)));
    EXPECT_TRUE(
        matches_reference(to_f64(dx), to_f64(d_dx.download()), kF32Threshold, std::string("backward ") + name(a)));
  }
}

TEST(GeluCpu, KnownValues) {
  // PyTorch: gelu(1) = 0.8413447460685429 (erf), 0.8411919906082768 (tanh).
  double x = 1.0, out = 0.0;
  coco::kernels::cpu::gelu_forward(&out, &x, 1, GeluApproximation::erf);
  EXPECT_NEAR(out, 0.8413447460685429, 1e-15);
  coco::kernels::cpu::gelu_forward(&out, &x, 1, GeluApproximation::tanh);
  EXPECT_NEAR(out, 0.8411919906082768, 1e-15);
  x = -2.0;
  coco::kernels::cpu::gelu_forward(&out, &x, 1, GeluApproximation::erf);
  EXPECT_NEAR(out, -0.04550026389635842, 1e-15);
}

TEST(GeluCpu, DerivativeMatchesFiniteDifferences) {
  for (GeluApproximation a : {GeluApproximation::erf, GeluApproximation::tanh})
    for (double x : {-4.0, -1.3, -0.2, 0.0, 0.7, 2.5, 5.0}) {
      const double h = 1e-6, one = 1.0;
      double plus_x = x + h, minus_x = x - h, plus = 0, minus = 0, derivative = 0;
      coco::kernels::cpu::gelu_forward(&plus, &plus_x, 1, a);
      coco::kernels::cpu::gelu_forward(&minus, &minus_x, 1, a);
      coco::kernels::cpu::gelu_backward(&derivative, &one, &x, 1, a);
      EXPECT_NEAR(derivative, (plus - minus) / (2 * h), 1e-8) << name(a) << " x=" << x;
    }
}

TEST(GeluCuda, RejectsBadArguments) {
  float value = 0.0f;
  EXPECT_THROW(coco::kernels::cuda::gelu_forward(&value, &value, -1, GeluApproximation::erf, nullptr),
               std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::gelu_forward(&value, &value, 1, static_cast<GeluApproximation>(9), nullptr),
               std::invalid_argument);
}

}  // namespace
