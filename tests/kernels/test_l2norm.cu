// Row L2 normalisation: the CUDA kernels (emulated here) against the CPU reference at odd shapes,
// f32 / bf16 (f16 spot check), rows below eps (the clamped branch), zero rows, NaN/Inf inputs, and
// bitwise schedule invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "kernels/l2norm.h"
#include "tests/common/kernel_check.h"
#include "engine/simt/schedule_oracle.h"

namespace {

using coco::testing::expect_schedule_invariant;

using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

// f32: f32 sums over <= 1025 terms vs double: NMSE ~1e-14.
constexpr double kF32Threshold = 1e-10;
// bf16 outputs: one round-to-nearest at unit roundoff 2^-8 per element: NMSE ~5e-6 over many
// elements, at most 1.5e-5 for a single element (several cases have 1 to 5 outputs).
constexpr double kBf16Threshold = 2e-5;

template <class T>
constexpr double threshold_for() {
  return std::is_same_v<T, float> ? kF32Threshold : kBf16Threshold;
}

struct RowShape {
  int64_t rows, dim;
};
std::string label(const RowShape& s, float eps) {
  return "rows=" + std::to_string(s.rows) + " dim=" + std::to_string(s.dim) + " eps=" + std::to_string(eps);
}

const RowShape kShapes[] = {{1, 1}, {7, 33}, {33, 130}, {130, 7}, {4, 768}, {3, 1025}};

struct Result {
  std::vector<double> y, norms, dx;
};

Result cpu_run(const std::vector<float>& x, const std::vector<float>& dy, const RowShape& s, float eps) {
  std::vector<float> y(x.size()), norms(static_cast<size_t>(s.rows)), dx(x.size());
  coco::kernels::cpu::l2_normalize_forward(x.data(), s.rows, s.dim, eps, y.data(), norms.data());
  coco::kernels::cpu::l2_normalize_backward(x.data(), norms.data(), dy.data(), s.rows, s.dim, eps, dx.data());
  return Result{to_f64(y), to_f64(norms), to_f64(dx)};
}

template <class T>
Result cuda_run(const std::vector<float>& x, const std::vector<float>& dy, const RowShape& s, float eps,
                bool* guards_ok = nullptr) {
  GuardedDeviceBuffer<T> d_x(from_floats<T>(x)), d_dy(from_floats<T>(dy)), d_y(x.size()), d_dx(x.size());
  GuardedDeviceBuffer<float> d_norms(static_cast<size_t>(s.rows));
  d_y.poison();
  d_dx.poison();
  d_norms.poison();
  coco::kernels::cuda::l2_normalize_forward(d_x.data(), s.rows, s.dim, eps, d_y.data(), d_norms.data(), nullptr);
  coco::kernels::cuda::l2_normalize_backward(d_x.data(), d_norms.data(), d_dy.data(), s.rows, s.dim, eps, d_dx.data(),
                                             nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  if (guards_ok) *guards_ok = d_y.guards_intact() && d_dx.guards_intact() && d_norms.guards_intact();
  return Result{to_f64(d_y.download()), to_f64(d_norms.download()), to_f64(d_dx.download())};
}

template <class T>
void expect_matches(const Result& ref, const Result& got, const std::string& what) {
  EXPECT_TRUE(matches_reference(ref.y, got.y, threshold_for<T>(), "y " + what));
  EXPECT_TRUE(matches_reference(ref.norms, got.norms, kF32Threshold, "norms " + what));  // f32 for every T
  EXPECT_TRUE(matches_reference(ref.dx, got.dx, threshold_for<T>(), "dx " + what));
}

template <class T>
class L2NormCuda : public ::testing::Test {};
using ActivationTypes = ::testing::Types<float, __nv_bfloat16>;
TYPED_TEST_SUITE(L2NormCuda, ActivationTypes);

TYPED_TEST(L2NormCuda, MatchesCpu) {
  using T = TypeParam;
  for (const RowShape& s : kShapes) {
    const size_t n = static_cast<size_t>(s.rows * s.dim);
    const std::vector<float> x = round_through<T>(random_floats(n, 7 + static_cast<unsigned>(n), -2.0f, 2.0f));
    const std::vector<float> dy = round_through<T>(random_floats(n, 8 + static_cast<unsigned>(n)));
    bool guards_ok = false;
    expect_matches<T>(cpu_run(x, dy, s, 1e-12f), cuda_run<T>(x, dy, s, 1e-12f, &guards_ok), label(s, 1e-12f));
    EXPECT_TRUE(guards_ok) << label(s, 1e-12f);
  }
}

TYPED_TEST(L2NormCuda, RowsBelowEpsUseTheClampedBranch) {
  using T = TypeParam;
  // Rows scaled so that about half of the norms fall below eps = 1; one row is exactly zero.
  const RowShape s{12, 37};
  const size_t n = static_cast<size_t>(s.rows * s.dim);
  std::vector<float> x = random_floats(n, 3, -0.3f, 0.3f);
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t d = 0; d < s.dim; ++d) x[static_cast<size_t>(r * s.dim + d)] *= (r % 2 ? 0.1f : 1.0f);
  for (int64_t d = 0; d < s.dim; ++d) x[static_cast<size_t>(5 * s.dim + d)] = 0.0f;
  x = round_through<T>(x);
  const std::vector<float> dy = round_through<T>(random_floats(n, 4));
  const Result ref = cpu_run(x, dy, s, 1.0f);
  int below = 0;
  for (double norm : ref.norms) below += norm < 1.0 ? 1 : 0;
  ASSERT_GT(below, 2);
  ASSERT_LT(below, 12);
  const Result got = cuda_run<T>(x, dy, s, 1.0f);
  expect_matches<T>(ref, got, "eps=1");
  // The zero row: y = 0, dx = dy / eps.
  for (int64_t d = 0; d < s.dim; ++d) {
    EXPECT_EQ(got.y[static_cast<size_t>(5 * s.dim + d)], 0.0);
    EXPECT_EQ(got.dx[static_cast<size_t>(5 * s.dim + d)], static_cast<double>(dy[static_cast<size_t>(5 * s.dim + d)]));
  }
}

TEST(L2NormCuda, F16SpotCheck) {
  // f16 keeps 11 significant bits: NMSE ~1e-8; 1e-5 as for bf16.
  const RowShape s{5, 70};
  const size_t n = static_cast<size_t>(s.rows * s.dim);
  const std::vector<float> x = round_through<__half>(random_floats(n, 1));
  const std::vector<float> dy = round_through<__half>(random_floats(n, 2));
  expect_matches<__half>(cpu_run(x, dy, s, 1e-12f), cuda_run<__half>(x, dy, s, 1e-12f), "f16");
}

TEST(L2NormCuda, OutputRowsHaveUnitNormAndTheGradientIsOrthogonalToThem) {
  const RowShape s{3, 50};
  const size_t n = static_cast<size_t>(s.rows * s.dim);
  const std::vector<float> x = random_floats(n, 11, -5.0f, 5.0f), dy = random_floats(n, 12);
  const Result got = cuda_run<float>(x, dy, s, 1e-12f);
  for (int64_t r = 0; r < s.rows; ++r) {
    double sq = 0.0, dot = 0.0;
    for (int64_t d = 0; d < s.dim; ++d) {
      sq += got.y[static_cast<size_t>(r * s.dim + d)] * got.y[static_cast<size_t>(r * s.dim + d)];
      dot += got.dx[static_cast<size_t>(r * s.dim + d)] * x[static_cast<size_t>(r * s.dim + d)];
    }
    EXPECT_NEAR(sq, 1.0, 1e-6);
    EXPECT_NEAR(dot, 0.0, 1e-5);  // scaling x does not change y
  }
}

TEST(L2NormCuda, NanAndInfPropagateLikeTheReference) {
  const RowShape s{4, 40};
  const size_t n = static_cast<size_t>(s.rows * s.dim);
  std::vector<float> x = random_floats(n, 21), dy = random_floats(n, 22);
  x[1 * 40 + 3] = NAN;
  x[2 * 40 + 8] = INFINITY;
  const Result ref = cpu_run(x, dy, s, 1e-12f);
  ASSERT_TRUE(std::isnan(ref.y[1 * 40 + 20]) && std::isfinite(ref.y[0]) && std::isfinite(ref.y[3 * 40]));
  expect_matches<float>(ref, cuda_run<float>(x, dy, s, 1e-12f), "non-finite");
}

TEST(L2NormCuda, IsScheduleInvariant) {
  using T = __nv_bfloat16;
  const RowShape s{9, 300};
  const size_t n = static_cast<size_t>(s.rows * s.dim);
  GuardedDeviceBuffer<T> d_x(from_floats<T>(random_floats(n, 1))), d_dy(from_floats<T>(random_floats(n, 2))), d_y(n),
      d_dx(n);
  GuardedDeviceBuffer<float> d_norms(static_cast<size_t>(s.rows));
  expect_schedule_invariant(
      [&] {
        d_y.poison(0xFF);
        d_dx.poison(0x00);
        coco::kernels::cuda::l2_normalize_forward(d_x.data(), s.rows, s.dim, 1e-12f, d_y.data(), d_norms.data(),
                                                  nullptr);
        coco::kernels::cuda::l2_normalize_backward(d_x.data(), d_norms.data(), d_dy.data(), s.rows, s.dim, 1e-12f,
                                                   d_dx.data(), nullptr);
        COCO_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<uint8_t> bytes;
        for (const auto& part : {d_y.download_bytes(), d_norms.download_bytes(), d_dx.download_bytes()})
          bytes.insert(bytes.end(), part.begin(), part.end());
        return bytes;
      },
      3);
}

TEST(L2NormCuda, RejectsBadArguments) {
  float dummy = 0.0f;
  EXPECT_THROW(coco::kernels::cuda::l2_normalize_forward(&dummy, 1, 0, 1e-12f, &dummy, &dummy, nullptr),
               std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::l2_normalize_forward(&dummy, 1, 1, 0.0f, &dummy, &dummy, nullptr),
               std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::l2_normalize_forward(&dummy, 1, 1, -1.0, &dummy, &dummy), std::invalid_argument);
}

}  // namespace
