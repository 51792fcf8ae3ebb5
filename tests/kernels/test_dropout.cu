// Dropout kernels: the CUDA mask (emulated) equals the CPU mask bit for bit for the same
// (seed, step, purpose); f32 outputs equal bitwise; drop rate and scaling; p = 0 / p = 1; NaN/Inf;
// the backward (same call on dout) uses the same mask; schedule invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "engine/rng/philox.h"
#include "kernels/dropout.h"
#include "tests/common/kernel_check.h"
#include "engine/simt/schedule_oracle.h"

namespace {

using coco::rng::Purpose;
using coco::rng::Stream;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::random_floats;

std::vector<uint8_t> cpu_mask(int64_t n, double p, const Stream& rng) {
  std::vector<uint8_t> mask(static_cast<size_t>(n));
  coco::kernels::cpu::dropout_mask(mask.data(), n, p, rng);
  return mask;
}

TEST(DropoutCuda, MaskMatchesCpuBitwise) {
  for (int64_t n : {1, 7, 33, 130, 4099})
    for (double p : {0.0, 0.1, 0.5, 0.9, 1.0}) {
      const Stream rng(1234567890123ull, 42, Purpose::dropout_residual, 3);
      GuardedDeviceBuffer<uint8_t> d_mask(static_cast<size_t>(n));
      d_mask.poison(0x77);
      coco::kernels::cuda::dropout_mask(d_mask.data(), n, p, rng, 0, nullptr);
      EXPECT_EQ(d_mask.download(), cpu_mask(n, p, rng)) << "n=" << n << " p=" << p;
      EXPECT_TRUE(d_mask.guards_intact());
    }
}

TEST(DropoutCuda, F32OutputMatchesCpuBitwiseAndUsesTheMask) {
  const int64_t n = 1037;
  const double p = 0.3;
  const Stream rng(7, 1001, Purpose::dropout_attention);
  const std::vector<float> x = random_floats(static_cast<size_t>(n), 3, -2.0f, 2.0f);
  std::vector<float> expected(x.size());
  coco::kernels::cpu::dropout_apply(expected.data(), x.data(), n, p, rng);
  GuardedDeviceBuffer<float> d_x(x), d_out(x.size());
  d_out.poison();
  coco::kernels::cuda::dropout_apply(d_out.data(), d_x.data(), n, p, rng, 0, nullptr);
  const std::vector<float> got = d_out.download();
  EXPECT_EQ(std::memcmp(got.data(), expected.data(), got.size() * sizeof(float)), 0);
  const std::vector<uint8_t> mask = cpu_mask(n, p, rng);
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(got[i], mask[i] ? x[i] * scale : 0.0f * x[i]) << i;
  EXPECT_TRUE(d_out.guards_intact());
}

TEST(DropoutCuda, Bf16OutputIsTheRoundedF32Output) {
  const int64_t n = 517;
  const double p = 0.25;
  const Stream rng(99, 5, Purpose::dropout_embedding);
  const std::vector<float> x = coco::testing::round_through<__nv_bfloat16>(random_floats(static_cast<size_t>(n), 4));
  std::vector<float> expected(x.size());
  coco::kernels::cpu::dropout_apply(expected.data(), x.data(), n, p, rng);
  expected = coco::testing::round_through<__nv_bfloat16>(expected);
  GuardedDeviceBuffer<__nv_bfloat16> d_x(coco::testing::from_floats<__nv_bfloat16>(x)), d_out(x.size());
  coco::kernels::cuda::dropout_apply(d_out.data(), d_x.data(), n, p, rng, 0, nullptr);
  EXPECT_EQ(coco::testing::to_f64(d_out.download()), coco::testing::to_f64(expected));
}

TEST(DropoutCpu, DropRateAndScalingAreRight) {
  const int64_t n = 200000;
  const double p = 0.1;
  const Stream rng(2024, 0, Purpose::dropout_activation);
  const std::vector<float> ones(static_cast<size_t>(n), 1.0f);
  std::vector<float> out(ones.size());
  coco::kernels::cpu::dropout_apply(out.data(), ones.data(), n, p, rng);
  int64_t dropped = 0;
  double total = 0.0;
  for (float v : out) {
    if (v == 0.0f)
      ++dropped;
    else
      EXPECT_FLOAT_EQ(v, static_cast<float>(1.0 / 0.9));
    total += v;
  }
  // Binomial(200000, 0.1): standard deviation 134; 6 sigma = 805.
  EXPECT_NEAR(static_cast<double>(dropped), 0.1 * n, 805.0);
  EXPECT_NEAR(total / n, 1.0, 0.01);  // unbiased in expectation
}

TEST(DropoutCuda, IndexOffsetShiftsTheMask) {
  const Stream rng(17, 3, Purpose::dropout_residual);
  const int64_t n = 300, offset = (int64_t{1} << 39) + 5;
  std::vector<uint8_t> long_mask(static_cast<size_t>(n + 40));
  coco::kernels::cpu::dropout_mask(long_mask.data(), n + 40, 0.5, rng, static_cast<uint64_t>(offset - 40));
  GuardedDeviceBuffer<uint8_t> d_mask(static_cast<size_t>(n));
  coco::kernels::cuda::dropout_mask(d_mask.data(), n, 0.5, rng, static_cast<uint64_t>(offset), nullptr);
  EXPECT_EQ(d_mask.download(), std::vector<uint8_t>(long_mask.begin() + 40, long_mask.end()));
  EXPECT_NE(d_mask.download(), cpu_mask(n, 0.5, rng));
}

TEST(DropoutCpu, StreamsDiffer) {
  const int64_t n = 4096;
  const std::vector<uint8_t> base = cpu_mask(n, 0.5, Stream(1, 10, Purpose::dropout_residual));
  EXPECT_NE(base, cpu_mask(n, 0.5, Stream(2, 10, Purpose::dropout_residual)));     // seed
  EXPECT_NE(base, cpu_mask(n, 0.5, Stream(1, 11, Purpose::dropout_residual)));     // step
  EXPECT_NE(base, cpu_mask(n, 0.5, Stream(1, 10, Purpose::dropout_attention)));    // purpose
  EXPECT_NE(base, cpu_mask(n, 0.5, Stream(1, 10, Purpose::dropout_residual, 1)));  // instance (layer)
  EXPECT_EQ(base, cpu_mask(n, 0.5, Stream(1, 10, Purpose::dropout_residual)));     // replay
}

TEST(DropoutCuda, ZeroAndOneProbability) {
  const int64_t n = 130;
  const Stream rng(5, 6, Purpose::dropout_residual);
  const std::vector<float> x = random_floats(static_cast<size_t>(n), 8);
  GuardedDeviceBuffer<float> d_x(x), d_out(x.size());
  coco::kernels::cuda::dropout_apply(d_out.data(), d_x.data(), n, 0.0, rng, 0, nullptr);
  EXPECT_EQ(d_out.download(), x);
  coco::kernels::cuda::dropout_apply(d_out.data(), d_x.data(), n, 1.0, rng, 0, nullptr);
  for (float v : d_out.download()) EXPECT_EQ(v, 0.0f);
}

TEST(DropoutCuda, NanAndInfKeepMultiplySemantics) {
  const Stream rng(11, 12, Purpose::dropout_residual);
  const int64_t n = 64;
  std::vector<float> x(static_cast<size_t>(n), 1.0f);
  for (size_t i = 0; i < x.size(); i += 2) x[i] = NAN;
  for (size_t i = 1; i < x.size(); i += 4) x[i] = INFINITY;
  std::vector<float> expected(x.size());
  coco::kernels::cpu::dropout_apply(expected.data(), x.data(), n, 0.5, rng);
  const std::vector<uint8_t> mask = cpu_mask(n, 0.5, rng);
  bool saw_dropped_inf = false;
  for (size_t i = 1; i < x.size(); i += 4) {
    if (!mask[i]) {
      EXPECT_TRUE(std::isnan(expected[i]));
      saw_dropped_inf = true;
    } else {
      EXPECT_EQ(expected[i], INFINITY);
    }
  }
  EXPECT_TRUE(saw_dropped_inf);
  GuardedDeviceBuffer<float> d_x(x), d_out(x.size());
  coco::kernels::cuda::dropout_apply(d_out.data(), d_x.data(), n, 0.5, rng, 0, nullptr);
  EXPECT_TRUE(coco::testing::matches_reference(coco::testing::to_f64(expected), coco::testing::to_f64(d_out.download()),
                                               0.0, "NaN/Inf dropout"));
}

TEST(DropoutCuda, ScheduleInvariant) {
  const int64_t n = 3001;
  const Stream rng(3, 4, Purpose::dropout_attention, 7);
  GuardedDeviceBuffer<__nv_bfloat16> d_x(
      coco::testing::from_floats<__nv_bfloat16>(random_floats(static_cast<size_t>(n), 2))),
      d_out(static_cast<size_t>(n));
  const emu::OracleResult result = emu::check_schedule_invariance(
      [&] {
        d_out.poison();
        coco::kernels::cuda::dropout_apply(d_out.data(), d_x.data(), n, 0.15, rng, 0, nullptr);
        return d_out.download_bytes();
      },
      2);
  EXPECT_TRUE(result.identical) << result.message;
}

TEST(Dropout, RejectsBadProbability) {
  float value = 1.0f;
  const Stream rng(1, 1, Purpose::dropout_residual);
  for (double p : {-0.1, 1.5, static_cast<double>(NAN)}) {
    EXPECT_THROW(coco::kernels::cpu::dropout_apply(&value, &value, 1, p, rng), std::invalid_argument);
    EXPECT_THROW(coco::kernels::cuda::dropout_apply(&value, &value, 1, p, rng, 0, nullptr), std::invalid_argument);
  }
}

}  // namespace
