// Corrupted-sequence construction and replaced-token labels under both conventions: a hand-checked
// example, CUDA (emulated here) bitwise against the CPU reference on masks from the masking kernels,
// the MLM target gather, out-of-range positions, schedule invariance and bad sizes.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/corrupt.h"
#include "kernels/masking.h"
#include "engine/simt/schedule_oracle.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::kernels::LabelConvention;
using coco::testing::GuardedDeviceBuffer;

// The emulator's schedule-invariance oracle as a gtest assertion.
::testing::AssertionResult schedule_invariant(const std::function<std::vector<uint8_t>()>& run, int random_seeds) {
  const emu::OracleResult result = emu::check_schedule_invariance(run, random_seeds);
  if (result.identical) return ::testing::AssertionSuccess() << result.runs << " schedules identical";
  return ::testing::AssertionFailure() << result.message;
}

struct Corrupted {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> replaced;
  std::vector<float> labels;
  std::vector<int32_t> targets;
};

Corrupted corrupt_cpu(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
                      const std::vector<int32_t>& samples, int32_t pad, LabelConvention convention) {
  const int64_t total = static_cast<int64_t>(tokens.size()), N = static_cast<int64_t>(positions.size());
  Corrupted c{std::vector<int32_t>(tokens.size(), -9), std::vector<uint8_t>(tokens.size(), 0xEE),
              std::vector<float>(tokens.size(), -9.0f), std::vector<int32_t>(positions.size(), -9)};
  coco::kernels::cpu::corrupt_tokens(tokens.data(), total, positions.data(), samples.data(), N, pad, convention,
                                     c.tokens.data(), c.replaced.data(), c.labels.data());
  coco::kernels::cpu::gather_tokens(tokens.data(), total, positions.data(), N, c.targets.data());
  return c;
}

Corrupted corrupt_cuda(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
                       const std::vector<int32_t>& samples, int32_t pad, LabelConvention convention) {
  const int64_t total = static_cast<int64_t>(tokens.size()), N = static_cast<int64_t>(positions.size());
  GuardedDeviceBuffer<int32_t> d_tokens(tokens), d_positions(positions), d_samples(samples), d_out(tokens.size()),
      d_targets(positions.size());
  GuardedDeviceBuffer<uint8_t> d_replaced(tokens.size());
  GuardedDeviceBuffer<float> d_labels(tokens.size());
  d_out.poison();
  d_targets.poison();
  d_replaced.poison();
  d_labels.poison();
  coco::kernels::cuda::corrupt_tokens(d_tokens.data(), total, d_positions.data(), d_samples.data(), N, pad, convention,
                                      d_out.data(), d_replaced.data(), d_labels.data(), nullptr);
  coco::kernels::cuda::gather_tokens(d_tokens.data(), total, d_positions.data(), N, d_targets.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(d_out.guards_intact() && d_targets.guards_intact() && d_replaced.guards_intact() &&
              d_labels.guards_intact() && d_positions.guards_intact());
  return {d_out.download(), d_replaced.download(), d_labels.download(), d_targets.download()};
}

void expect_same(const Corrupted& a, const Corrupted& b, const std::string& what) {
  EXPECT_EQ(a.tokens, b.tokens) << what;
  EXPECT_EQ(a.replaced, b.replaced) << what;
  EXPECT_EQ(a.labels, b.labels) << what;
  EXPECT_EQ(a.targets, b.targets) << what;
}

TEST(Corrupt, HandCheckedExampleBothConventions) {
  // One row of 8: [CLS] 11 12 13 14 15 pad pad; positions 2, 3, 5 masked; the sample at 3 equals the
  // original (not replaced).
  const std::vector<int32_t> tokens = {1, 11, 12, 13, 14, 15, 0, 0};
  const std::vector<int32_t> positions = {2, 3, 5}, samples = {40, 13, 41};
  const std::vector<int32_t> corrupted = {1, 11, 40, 13, 14, 41, 0, 0};
  const std::vector<uint8_t> replaced = {0, 0, 1, 0, 0, 1, 0, 0};
  const std::vector<float> electra = {0, 0, 1, 0, 0, 1, 0, 0};  // 1 = replaced
  const std::vector<float> copy = {1, 1, 0, 1, 1, 0, 0, 0};     // 1 = original; pads 0
  for (auto* run : {&corrupt_cpu, &corrupt_cuda}) {
    const Corrupted a = (*run)(tokens, positions, samples, 0, LabelConvention::replaced_is_one);
    EXPECT_EQ(a.tokens, corrupted);
    EXPECT_EQ(a.replaced, replaced);
    EXPECT_EQ(a.labels, electra);
    EXPECT_EQ(a.targets, (std::vector<int32_t>{12, 13, 15}));
    const Corrupted b = (*run)(tokens, positions, samples, 0, LabelConvention::original_is_one);
    EXPECT_EQ(b.tokens, corrupted);
    EXPECT_EQ(b.labels, copy);
  }
}

// Masks from the masking kernels, samples uniformly random (some equal to the original).
struct Case {
  std::vector<int32_t> tokens, positions, samples;
};

Case make_case(int64_t B, int64_t T, unsigned seed) {
  std::mt19937 rng(seed);
  Case c;
  c.tokens.assign(static_cast<size_t>(B * T), 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t len = 1 + static_cast<int64_t>(rng() % static_cast<unsigned>(T));
    for (int64_t t = 0; t < len; ++t)
      c.tokens[static_cast<size_t>(b * T + t)] = t == 0 ? 1 : 5 + static_cast<int32_t>(rng() % 6);
  }
  coco::kernels::MaskingConfig config;
  config.mask_prob = 0.4;
  const auto params = coco::kernels::make_mask_params(config, seed, 1);
  std::vector<uint8_t> selected(c.tokens.size());
  std::vector<int32_t> generator_input(c.tokens.size()), row_count(static_cast<size_t>(B));
  coco::kernels::cpu::select_mask(c.tokens.data(), B, T, params, selected.data(), generator_input.data(),
                                  row_count.data());
  int64_t total = 0;
  for (int32_t n : row_count) total += n;
  c.positions.assign(static_cast<size_t>(total), 0);
  coco::kernels::cpu::masked_positions(selected.data(), row_count.data(), B, T, c.positions.data(), total);
  for (size_t k = 0; k < c.positions.size(); ++k) c.samples.push_back(5 + static_cast<int32_t>(rng() % 6));
  return c;
}

TEST(Corrupt, CudaMatchesCpuBitwise) {
  const int64_t shapes[][2] = {{1, 1}, {3, 7}, {4, 33}, {5, 130}, {2, 1000}};
  for (const auto& s : shapes) {
    const Case c = make_case(s[0], s[1], static_cast<unsigned>(s[0] * 100 + s[1]));
    for (LabelConvention convention : {LabelConvention::replaced_is_one, LabelConvention::original_is_one}) {
      const std::string what = "B=" + std::to_string(s[0]) + " T=" + std::to_string(s[1]);
      const Corrupted cpu = corrupt_cpu(c.tokens, c.positions, c.samples, 0, convention);
      expect_same(cpu, corrupt_cuda(c.tokens, c.positions, c.samples, 0, convention), what);
      // Invariants: only masked positions change; replaced exactly where the sample differs.
      int64_t replaced = 0;
      for (size_t k = 0; k < c.positions.size(); ++k) {
        const auto p = static_cast<size_t>(c.positions[k]);
        ASSERT_EQ(cpu.tokens[p], c.samples[k]);
        ASSERT_EQ(cpu.replaced[p], c.samples[k] != c.tokens[p] ? 1 : 0);
        ASSERT_EQ(cpu.targets[k], c.tokens[p]);
        replaced += cpu.replaced[p];
      }
      int64_t changed = 0, label_sum = 0, nonpad = 0;
      for (size_t i = 0; i < c.tokens.size(); ++i) {
        changed += cpu.tokens[i] != c.tokens[i];
        label_sum += static_cast<int64_t>(cpu.labels[i]);
        nonpad += c.tokens[i] != 0;
      }
      EXPECT_EQ(changed, replaced) << what;
      EXPECT_EQ(label_sum, convention == LabelConvention::replaced_is_one ? replaced : nonpad - replaced) << what;
    }
  }
}

TEST(Corrupt, OutOfRangePositionsAreSkipped) {
  const std::vector<int32_t> tokens = {1, 7, 8, 9};
  const std::vector<int32_t> positions = {-1, 2, 4, 1000}, samples = {50, 51, 52, 53};
  for (auto* run : {&corrupt_cpu, &corrupt_cuda}) {
    const Corrupted c = (*run)(tokens, positions, samples, 0, LabelConvention::replaced_is_one);
    EXPECT_EQ(c.tokens, (std::vector<int32_t>{1, 7, 51, 9}));
    EXPECT_EQ(c.targets, (std::vector<int32_t>{-1, 8, -1, -1}));
  }
}

TEST(Corrupt, ScheduleInvariant) {
  const Case c = make_case(6, 130, 5);
  EXPECT_TRUE(schedule_invariant(
      [&] {
        const Corrupted r = corrupt_cuda(c.tokens, c.positions, c.samples, 0, LabelConvention::original_is_one);
        std::vector<uint8_t> bytes(r.replaced);
        const auto append = [&](const void* data, size_t n) {
          const auto* raw = static_cast<const uint8_t*>(data);
          bytes.insert(bytes.end(), raw, raw + n);
        };
        append(r.tokens.data(), r.tokens.size() * 4);
        append(r.labels.data(), r.labels.size() * 4);
        append(r.targets.data(), r.targets.size() * 4);
        return bytes;
      },
      3));
}

TEST(Corrupt, RejectsNegativeSizes) {
  int32_t x = 0;
  uint8_t r = 0;
  EXPECT_THROW(
      coco::kernels::cpu::corrupt_tokens(&x, -1, &x, &x, 0, 0, LabelConvention::replaced_is_one, &x, &r, nullptr),
      std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::corrupt_tokens(&x, 1, &x, &x, -2, 0, LabelConvention::replaced_is_one, &x, &r,
                                                   nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::gather_tokens(&x, 1, &x, -1, &x, nullptr), std::invalid_argument);
}

}  // namespace
