// The step-bookkeeping kernels of kernels/device_metrics.h: CUDA (emulated here) bitwise against the
// CPU reference on random inputs, hand-checked values, guard bytes untouched, and bad arguments.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/device_metrics.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::DType;
using coco::testing::GuardedDeviceBuffer;
namespace k = coco::kernels;

TEST(DeviceMetrics, KeyMaskMatchesTheReference) {
  std::mt19937 generator(11);
  std::vector<int32_t> tokens(1000);
  for (auto& t : tokens) t = static_cast<int32_t>(generator() % 5);
  std::vector<uint8_t> expected(tokens.size());
  k::cpu::key_mask(tokens.data(), static_cast<int64_t>(tokens.size()), 3, expected.data());
  for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ(expected[i], tokens[i] != 3 ? 1 : 0);
  GuardedDeviceBuffer<int32_t> d_tokens(tokens);
  GuardedDeviceBuffer<uint8_t> d_mask(tokens.size());
  d_mask.poison();
  k::cuda::key_mask(d_tokens.data(), static_cast<int64_t>(tokens.size()), 3, d_mask.data(), nullptr);
  EXPECT_EQ(d_mask.download(), expected);
  EXPECT_TRUE(d_mask.guards_intact());
}

TEST(DeviceMetrics, LengthMaskMatchesTheReference) {
  const std::vector<int32_t> length = {0, 1, 7, 12, 20};  // 20 > T: the whole row
  const int64_t B = 5, T = 12;
  std::vector<uint8_t> expected(B * T);
  k::cpu::length_mask(length.data(), B, T, expected.data());
  EXPECT_EQ(expected[0], 0);
  EXPECT_EQ(expected[T], 1);
  EXPECT_EQ(expected[T + 1], 0);
  EXPECT_EQ(expected[2 * T + 6], 1);
  EXPECT_EQ(expected[2 * T + 7], 0);
  GuardedDeviceBuffer<int32_t> d_length(length);
  GuardedDeviceBuffer<uint8_t> d_mask(expected.size());
  d_mask.poison();
  k::cuda::length_mask(d_length.data(), B, T, d_mask.data(), nullptr);
  EXPECT_EQ(d_mask.download(), expected);
  EXPECT_TRUE(d_mask.guards_intact());
}

TEST(DeviceMetrics, CountNonzeroMatchesTheReference) {
  for (int64_t n : {0, 1, 255, 256, 5000, 1 << 20}) {
    std::mt19937 generator(static_cast<uint32_t>(n));
    std::vector<uint8_t> flags(static_cast<size_t>(n));
    int32_t expected = 0;
    for (auto& f : flags) {
      f = generator() % 3 == 0 ? static_cast<uint8_t>(1 + generator() % 200) : 0;
      expected += f != 0;
    }
    int32_t cpu = -1;
    k::cpu::count_nonzero(flags.data(), n, &cpu);
    EXPECT_EQ(cpu, expected) << n;
    GuardedDeviceBuffer<uint8_t> d_flags(flags.empty() ? std::vector<uint8_t>{0} : flags);
    GuardedDeviceBuffer<int32_t> d_count(1);
    d_count.poison();
    k::cuda::count_nonzero(d_flags.data(), n, d_count.data(), nullptr);
    EXPECT_EQ(d_count.download()[0], expected) << n;
  }
}

TEST(DeviceMetrics, GatherScalarsAssignsAndAccumulatesInDouble) {
  const float f = 0.1f;
  const double d = 2.5;
  const int32_t i = 7;
  GuardedDeviceBuffer<float> d_f(std::vector<float>{f});
  GuardedDeviceBuffer<double> d_d(std::vector<double>{d});
  GuardedDeviceBuffer<int32_t> d_i(std::vector<int32_t>{i});
  k::ScalarSources host, device;
  host.count = device.count = 4;
  host.sources[0] = {&f, DType::f32, 3.0};
  host.sources[1] = {&d, DType::f64, 1.0};
  host.sources[2] = {&i, DType::i32, 1.0};
  host.sources[3] = {nullptr, DType::f32, 1.0};
  device.sources[0] = {d_f.data(), DType::f32, 3.0};
  device.sources[1] = {d_d.data(), DType::f64, 1.0};
  device.sources[2] = {d_i.data(), DType::i32, 1.0};
  device.sources[3] = {nullptr, DType::f32, 1.0};
  std::vector<double> expected(4, -1.0);
  k::cpu::gather_scalars(host, k::ScalarUpdate::assign, expected.data());
  EXPECT_EQ(expected, (std::vector<double>{3.0 * static_cast<double>(f), 2.5, 7.0, 0.0}));
  k::cpu::gather_scalars(host, k::ScalarUpdate::accumulate, expected.data());
  EXPECT_EQ(expected[0], 3.0 * static_cast<double>(f) + 3.0 * static_cast<double>(f));
  EXPECT_EQ(expected[2], 14.0);

  GuardedDeviceBuffer<double> d_out(4);
  d_out.poison();
  k::cuda::gather_scalars(device, k::ScalarUpdate::assign, d_out.data(), nullptr);
  k::cuda::gather_scalars(device, k::ScalarUpdate::accumulate, d_out.data(), nullptr);
  EXPECT_EQ(d_out.download(), expected);
  EXPECT_TRUE(d_out.guards_intact());
}

TEST(DeviceMetrics, BadArgumentsAreRejected) {
  k::ScalarSources sources;
  sources.count = k::kMaxScalarSources + 1;
  double out[1];
  EXPECT_THROW(k::cpu::gather_scalars(sources, k::ScalarUpdate::assign, out), std::invalid_argument);
  EXPECT_THROW(k::cuda::gather_scalars(sources, k::ScalarUpdate::assign, out, nullptr), std::invalid_argument);
  sources.count = 1;
  sources.sources[0].dtype = DType::bf16;
  EXPECT_THROW(k::cpu::gather_scalars(sources, k::ScalarUpdate::assign, out), std::invalid_argument);
  EXPECT_THROW(k::cuda::key_mask(nullptr, -1, 0, nullptr, nullptr), std::invalid_argument);
  EXPECT_THROW(k::cuda::length_mask(nullptr, 2, -1, nullptr, nullptr), std::invalid_argument);
}

}  // namespace
