// Mask selection and crop views for both presets: CUDA (emulated here) bitwise against the CPU
// reference at odd shapes, exact counts per row, eligibility, replace/keep/random proportions within
// binomial bounds, uniformity (chi-squared), crop lengths / order / contiguity, masked-position
// compaction, the fixed-point count arithmetic, schedule invariance and bad configurations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/masking.h"
#include "engine/ops/masking.h"
#include "engine/simt/schedule_oracle.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::kernels::MaskingConfig;
using coco::kernels::MaskKernelParams;
using coco::kernels::MaskPreset;
using coco::testing::GuardedDeviceBuffer;

// The emulator's schedule-invariance oracle as a gtest assertion.
::testing::AssertionResult schedule_invariant(const std::function<std::vector<uint8_t>()>& run, int random_seeds) {
  const emu::OracleResult result = emu::check_schedule_invariance(run, random_seeds);
  if (result.identical) return ::testing::AssertionSuccess() << result.runs << " schedules identical";
  return ::testing::AssertionFailure() << result.message;
}

constexpr int32_t kPad = 0, kCls = 1, kMask = 2, kSep = 3, kIgnored = 4, kVocab = 500;

MaskingConfig lucidrains_config() {
  MaskingConfig c;
  c.preset = MaskPreset::lucidrains;
  c.pad_id = kPad;
  c.cls_id = kCls;
  c.mask_id = kMask;
  c.ignore_ids = {kIgnored};
  c.special_ids = {kSep};
  c.vocab_size = kVocab;
  c.mask_prob = 0.15;
  c.replace_prob = 0.85;
  c.random_token_prob = 0.0;
  c.crop_fraction = 0.5;
  return c;
}

MaskingConfig paper_config() {
  MaskingConfig c = lucidrains_config();
  c.preset = MaskPreset::paper;
  c.ignore_ids = {};
  c.crop_fraction = 0.9;
  return c;
}

// Rows of [CLS] + random tokens (a few [SEP] and ignored ids among them) + right padding, with
// lengths cycling through full, empty, 1 and random. distinct = true makes every content token
// unique within its row (token = 10 + position) so crops can be mapped back to positions.
std::vector<int32_t> make_batch(int64_t B, int64_t T, unsigned seed, bool distinct = false) {
  std::mt19937 rng(seed);
  std::vector<int32_t> tokens(static_cast<size_t>(B * T), kPad);
  for (int64_t b = 0; b < B; ++b) {
    int64_t len;
    switch (b % 5) {
      case 0:
        len = T;
        break;
      case 1:
        len = 0;
        break;
      case 2:
        len = std::min<int64_t>(T, 1);
        break;
      default:
        len = 1 + static_cast<int64_t>(rng() % static_cast<unsigned>(T));
        break;
    }
    for (int64_t t = 0; t < len; ++t) {
      int32_t token;
      if (t == 0)
        token = kCls;
      else if (distinct)
        token = static_cast<int32_t>(10 + t);
      else {
        const unsigned r = rng() % 100;
        token = r < 4 ? kSep : r < 8 ? kIgnored : static_cast<int32_t>(10 + rng() % (kVocab - 10));
      }
      tokens[static_cast<size_t>(b * T + t)] = token;
    }
  }
  return tokens;
}

struct MaskResult {
  std::vector<uint8_t> selected;
  std::vector<int32_t> generator_input, row_count, crop_tokens, crop_length, positions;
};

MaskResult run_cpu(const std::vector<int32_t>& tokens, int64_t B, int64_t T, const MaskKernelParams& p) {
  MaskResult r;
  const size_t n = static_cast<size_t>(B * T);
  r.selected.assign(n, 0xCD);
  r.generator_input.assign(n, -7);
  r.row_count.assign(static_cast<size_t>(B), -7);
  r.crop_tokens.assign(n, -7);
  r.crop_length.assign(static_cast<size_t>(B), -7);
  coco::kernels::cpu::select_mask(tokens.data(), B, T, p, r.selected.data(), r.generator_input.data(),
                                  r.row_count.data());
  coco::kernels::cpu::crop_view(tokens.data(), B, T, p, r.crop_tokens.data(), r.crop_length.data());
  int64_t total = 0;
  for (int32_t c : r.row_count) total += c;
  r.positions.assign(static_cast<size_t>(total), -7);
  coco::kernels::cpu::masked_positions(r.selected.data(), r.row_count.data(), B, T, r.positions.data(), total);
  return r;
}

MaskResult run_cuda(const std::vector<int32_t>& tokens, int64_t B, int64_t T, const MaskKernelParams& p,
                    bool* guards_ok = nullptr) {
  const size_t n = static_cast<size_t>(B * T);
  GuardedDeviceBuffer<int32_t> d_tokens(tokens), d_gen(n), d_count(static_cast<size_t>(B)), d_crop(n),
      d_crop_len(static_cast<size_t>(B));
  GuardedDeviceBuffer<uint8_t> d_selected(n);
  d_gen.poison();
  d_count.poison();
  d_crop.poison();
  d_crop_len.poison();
  d_selected.poison(0x5A);
  coco::kernels::cuda::select_mask(d_tokens.data(), B, T, p, d_selected.data(), d_gen.data(), d_count.data(), nullptr);
  coco::kernels::cuda::crop_view(d_tokens.data(), B, T, p, d_crop.data(), d_crop_len.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  MaskResult r;
  r.selected = d_selected.download();
  r.generator_input = d_gen.download();
  r.row_count = d_count.download();
  r.crop_tokens = d_crop.download();
  r.crop_length = d_crop_len.download();
  int64_t total = 0;
  for (int32_t c : r.row_count) total += c;
  GuardedDeviceBuffer<int32_t> d_positions(static_cast<size_t>(total));
  d_positions.poison();
  coco::kernels::cuda::masked_positions(d_selected.data(), d_count.data(), B, T, d_positions.data(), total, nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  r.positions = d_positions.download();
  if (guards_ok)
    *guards_ok = d_tokens.guards_intact() && d_gen.guards_intact() && d_count.guards_intact() &&
                 d_crop.guards_intact() && d_crop_len.guards_intact() && d_selected.guards_intact() &&
                 d_positions.guards_intact();
  return r;
}

void expect_same(const MaskResult& a, const MaskResult& b, const std::string& what) {
  EXPECT_EQ(a.selected, b.selected) << what << " selected";
  EXPECT_EQ(a.generator_input, b.generator_input) << what << " generator_input";
  EXPECT_EQ(a.row_count, b.row_count) << what << " row_count";
  EXPECT_EQ(a.crop_tokens, b.crop_tokens) << what << " crop_tokens";
  EXPECT_EQ(a.crop_length, b.crop_length) << what << " crop_length";
  EXPECT_EQ(a.positions, b.positions) << what << " positions";
}

struct Shape {
  int64_t B, T;
};
const Shape kShapes[] = {{3, 1}, {5, 7}, {4, 33}, {6, 130}, {5, 512}, {2, 1000}};

// ceil / floor of (percent / 100) * n in exact integers.
int32_t ceil_percent(int percent, int32_t n) { return (percent * n + 99) / 100; }
int32_t floor_percent(int percent, int32_t n) { return percent * n / 100; }

TEST(Masking, CudaMatchesCpuBitwise) {
  for (MaskPreset preset : {MaskPreset::lucidrains, MaskPreset::paper}) {
    for (double random_prob : {0.0, 0.5}) {
      MaskingConfig c = preset == MaskPreset::lucidrains ? lucidrains_config() : paper_config();
      c.random_token_prob = random_prob;
      for (const Shape& s : kShapes) {
        const std::string what = std::string(preset == MaskPreset::lucidrains ? "lucidrains" : "paper") +
                                 " B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) +
                                 " random=" + std::to_string(random_prob);
        const auto tokens = make_batch(s.B, s.T, static_cast<unsigned>(s.T * 31 + s.B));
        const MaskKernelParams p = coco::kernels::make_mask_params(c, 1234, 77);
        bool guards_ok = false;
        expect_same(run_cpu(tokens, s.B, s.T, p), run_cuda(tokens, s.B, s.T, p, &guards_ok), what);
        EXPECT_TRUE(guards_ok) << what;
      }
    }
  }
}

TEST(Masking, LucidrainsExactCountsAndEligibility) {
  MaskingConfig c = lucidrains_config();
  c.random_token_prob = 0.3;
  const int64_t B = 200, T = 64;
  const auto tokens = make_batch(B, T, 5);
  for (uint64_t step = 0; step < 5; ++step) {
    const MaskResult r = run_cpu(tokens, B, T, coco::kernels::make_mask_params(c, 99, step));
    for (int64_t b = 0; b < B; ++b) {
      int32_t eligible = 0, chosen = 0;
      for (int64_t t = 0; t < T; ++t) {
        const size_t i = static_cast<size_t>(b * T + t);
        const int32_t tok = tokens[i];
        const bool ok = tok != kPad && tok != kCls && tok != kIgnored;
        eligible += ok ? 1 : 0;
        if (r.selected[i]) {
          ++chosen;
          ASSERT_TRUE(ok) << "selected ineligible token " << tok << " at row " << b << " position " << t;
        } else {
          ASSERT_EQ(r.generator_input[i], tok) << "unselected position changed";
        }
      }
      ASSERT_EQ(chosen, ceil_percent(15, eligible)) << "row " << b << " with " << eligible << " eligible";
      ASSERT_EQ(r.row_count[static_cast<size_t>(b)], chosen);
    }
  }
}

TEST(Masking, LucidrainsReplaceKeepRandomProportions) {
  MaskingConfig c = lucidrains_config();
  c.random_token_prob = 0.4;
  const int64_t B = 400, T = 128;
  const auto tokens = make_batch(B, T, 6);
  int64_t selected = 0, masked = 0, random_tokens = 0, kept = 0;
  for (uint64_t step = 0; step < 4; ++step) {
    const MaskResult r = run_cpu(tokens, B, T, coco::kernels::make_mask_params(c, 7, step));
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (!r.selected[i]) continue;
      ++selected;
      const int32_t shown = r.generator_input[i];
      if (shown == kMask) {
        ++masked;
      } else if (shown != tokens[i]) {
        ++random_tokens;
        ASSERT_GE(shown, 0);
        ASSERT_LT(shown, kVocab);
        ASSERT_TRUE(shown != kPad && shown != kCls && shown != kSep && shown != kIgnored) << shown;
      } else {
        ++kept;
      }
    }
  }
  ASSERT_GT(selected, 10000);
  // Binomial bounds at 5 standard deviations. A random token equal to the original (probability
  // 1/495 per draw) counts as kept.
  const auto within = [&](int64_t count, double p, const char* what) {
    const double mean = selected * p, sd = std::sqrt(selected * p * (1 - p));
    EXPECT_NEAR(static_cast<double>(count), mean, 5 * sd) << what << ": " << count << " of " << selected;
  };
  const double p_random = 0.15 * 0.4 * (1.0 - 1.0 / 495.0);
  within(masked, 0.85, "[MASK]");
  within(random_tokens, p_random, "random");
  within(kept, 1.0 - 0.85 - p_random, "kept");
}

TEST(Masking, PaperCountsDropClsAndMaskEverything) {
  const MaskingConfig c = paper_config();
  const int64_t B = 300, T = 50;
  const auto tokens = make_batch(B, T, 8);
  double total_count = 0.0, expected_total = 0.0;
  for (uint64_t step = 0; step < 6; ++step) {
    const MaskResult r = run_cpu(tokens, B, T, coco::kernels::make_mask_params(c, 3, step));
    for (int64_t b = 0; b < B; ++b) {
      int32_t n = 0, chosen = 0;
      for (int64_t t = 0; t < T; ++t) {
        const size_t i = static_cast<size_t>(b * T + t);
        n += tokens[i] != kPad ? 1 : 0;
        if (r.selected[i]) {
          ++chosen;
          ASSERT_NE(tokens[i], kPad);
          ASSERT_NE(tokens[i], kCls) << "a drawn [CLS] must be dropped";
          ASSERT_EQ(r.generator_input[i], kMask) << "paper masks every selected position";
        } else {
          ASSERT_EQ(r.generator_input[i], tokens[i]);
        }
      }
      // num_mask = floor(0.15 n + U) is floor(0.15 n) or one more; a drawn [CLS] removes one.
      const int32_t lo = floor_percent(15, n);
      ASSERT_GE(chosen, lo - 1) << "row " << b;
      ASSERT_LE(chosen, lo + 1) << "row " << b;
      ASSERT_EQ(r.row_count[static_cast<size_t>(b)], chosen);
      total_count += chosen;
      // E[num_mask] = 0.15 n; [CLS] is among the drawn positions with probability E[num_mask] / n.
      if (n > 0) expected_total += 0.15 * n - 0.15;
    }
  }
  // Probabilistic rounding keeps the mean at 0.15 n: the sum over 1800 rows is within 5 sd (each row
  // contributes variance < 1/2).
  EXPECT_NEAR(total_count, expected_total, 5 * std::sqrt(0.5 * 6 * B));
}

// Chi-squared of observed counts against expected counts; the bound is the mean plus 5 standard
// deviations of the chi-squared distribution, far outside a correct sampler's range.
double chi_squared(const std::vector<double>& observed, const std::vector<double>& expected) {
  double chi2 = 0.0;
  for (size_t i = 0; i < observed.size(); ++i)
    chi2 += (observed[i] - expected[i]) * (observed[i] - expected[i]) / expected[i];
  return chi2;
}
double chi_squared_bound(size_t categories) {
  const double df = static_cast<double>(categories - 1);
  return df + 5.0 * std::sqrt(2.0 * df);
}

TEST(Masking, SelectionAndCropAreUniformOverPositions) {
  // Full rows of T = 24: 23 eligible positions, each selected with probability 4/23 (K = ceil(3.45))
  // and kept in the crop with probability 12/23 (m = min(floor(0.5 * 24), 23) = 12).
  const int64_t B = 4000, T = 24;
  std::vector<int32_t> tokens(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      tokens[static_cast<size_t>(b * T + t)] = t == 0 ? kCls : static_cast<int32_t>(10 + t);
  const MaskResult r = run_cpu(tokens, B, T, coco::kernels::make_mask_params(lucidrains_config(), 11, 0));
  std::vector<double> selected_at(T - 1, 0.0), cropped_at(T - 1, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 1; t < T; ++t) selected_at[t - 1] += r.selected[static_cast<size_t>(b * T + t)];
    for (int64_t j = 1; j < r.crop_length[static_cast<size_t>(b)]; ++j)
      cropped_at[r.crop_tokens[static_cast<size_t>(b * T + j)] - 11] += 1;
  }
  EXPECT_EQ(r.row_count[0], 4);
  EXPECT_EQ(r.crop_length[0], 13);
  EXPECT_LT(chi_squared(selected_at, std::vector<double>(T - 1, B * 4.0 / 23.0)), chi_squared_bound(T - 1));
  EXPECT_LT(chi_squared(cropped_at, std::vector<double>(T - 1, B * 12.0 / 23.0)), chi_squared_bound(T - 1));
  // Pairs are not tied to each other: positions 1 and 2 are selected together as often as
  // independent-looking uniform subsets predict, C(21,2)/C(23,4) = 4*3/(23*22).
  double both = 0.0;
  for (int64_t b = 0; b < B; ++b)
    both += r.selected[static_cast<size_t>(b * T + 1)] && r.selected[static_cast<size_t>(b * T + 2)];
  const double p_both = 12.0 / (23.0 * 22.0);
  EXPECT_NEAR(both, B * p_both, 5 * std::sqrt(B * p_both));
}

TEST(Masking, LucidrainsCropIsOrderedSubsetOfEligibleTokens) {
  MaskingConfig c = lucidrains_config();
  const int64_t B = 60, T = 40;
  auto tokens = make_batch(B, T, 12, /*distinct=*/true);
  // Sprinkle ignored ids over some positions; they must never appear in a crop.
  for (size_t i = 5; i < tokens.size(); i += 7)
    if (tokens[i] != kPad && tokens[i] != kCls) tokens[i] = kIgnored;
  const MaskResult r = run_cpu(tokens, B, T, coco::kernels::make_mask_params(c, 5, 1));
  for (int64_t b = 0; b < B; ++b) {
    int32_t n_row = 0, eligible = 0;
    for (int64_t t = 0; t < T; ++t) {
      const int32_t tok = tokens[static_cast<size_t>(b * T + t)];
      n_row += tok != kPad;
      eligible += tok != kPad && tok != kCls && tok != kIgnored;
    }
    const int32_t m = std::min(floor_percent(50, n_row), eligible);
    const int32_t* crop = r.crop_tokens.data() + b * T;
    ASSERT_EQ(r.crop_length[static_cast<size_t>(b)], 1 + m) << "row " << b;
    ASSERT_EQ(crop[0], kCls);
    int32_t previous = -1;
    for (int32_t j = 1; j <= m; ++j) {
      ASSERT_GE(crop[j], 11) << "crop holds a special token";
      const int32_t position = crop[j] - 10;
      ASSERT_GT(position, previous) << "crop tokens out of original order";
      ASSERT_EQ(tokens[static_cast<size_t>(b * T + position)], crop[j]);
      previous = position;
    }
    for (int64_t j = 1 + m; j < T; ++j) ASSERT_EQ(crop[j], kPad) << "crop not right-padded";
  }
}

TEST(Masking, PaperCropIsContiguousSpanWithUniformStart) {
  const MaskingConfig c = paper_config();
  const int64_t T = 30;
  // Full rows of n = 30: span = 27 tokens, start uniform over 0..3.
  const int64_t B = 4000;
  std::vector<int32_t> tokens(static_cast<size_t>(B * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      tokens[static_cast<size_t>(b * T + t)] = t == 0 ? kCls : static_cast<int32_t>(10 + t);
  const MaskResult r = run_cpu(tokens, B, T, coco::kernels::make_mask_params(c, 21, 2));
  std::vector<double> starts(4, 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const int32_t* crop = r.crop_tokens.data() + b * T;
    ASSERT_EQ(r.crop_length[static_cast<size_t>(b)], 28);
    ASSERT_EQ(crop[0], kCls);
    const int32_t start = crop[1] == kCls ? 0 : crop[1] - 10;  // position 0 holds the row's [CLS]
    ASSERT_GE(start, 0);
    ASSERT_LE(start, 3);
    for (int32_t j = 0; j < 27; ++j) ASSERT_EQ(crop[1 + j], tokens[static_cast<size_t>(b * T + start + j)]);
    for (int64_t j = 28; j < T; ++j) ASSERT_EQ(crop[j], kPad);
    starts[static_cast<size_t>(start)] += 1;
  }
  EXPECT_LT(chi_squared(starts, std::vector<double>(4, B / 4.0)), chi_squared_bound(4));

  // Padded rows: span = floor(0.9 n) of the n non-pad tokens, never a pad inside.
  const auto padded = make_batch(50, T, 13, /*distinct=*/true);
  const MaskResult p = run_cpu(padded, 50, T, coco::kernels::make_mask_params(c, 21, 3));
  for (int64_t b = 0; b < 50; ++b) {
    int32_t n = 0;
    for (int64_t t = 0; t < T; ++t) n += padded[static_cast<size_t>(b * T + t)] != kPad;
    ASSERT_EQ(p.crop_length[static_cast<size_t>(b)], 1 + floor_percent(90, n)) << "row " << b << " n " << n;
    for (int32_t j = 1; j < p.crop_length[static_cast<size_t>(b)]; ++j)
      ASSERT_NE(p.crop_tokens[static_cast<size_t>(b * T + j)], kPad);
  }
}

TEST(Masking, MaskedPositionsCompactInRowMajorOrder) {
  const int64_t B = 7, T = 33;
  const auto tokens = make_batch(B, T, 14);
  const MaskResult r = run_cpu(tokens, B, T, coco::kernels::make_mask_params(lucidrains_config(), 2, 2));
  std::vector<int32_t> expected;
  for (int64_t i = 0; i < B * T; ++i)
    if (r.selected[static_cast<size_t>(i)]) expected.push_back(static_cast<int32_t>(i));
  EXPECT_EQ(r.positions, expected);

  // A short capacity truncates without writing past the end, on both backends.
  const int64_t capacity = static_cast<int64_t>(expected.size()) / 2;
  std::vector<int32_t> cpu_out(static_cast<size_t>(capacity) + 4, -1);
  coco::kernels::cpu::masked_positions(r.selected.data(), r.row_count.data(), B, T, cpu_out.data(), capacity);
  GuardedDeviceBuffer<uint8_t> d_selected(r.selected);
  GuardedDeviceBuffer<int32_t> d_count(r.row_count), d_out(static_cast<size_t>(capacity));
  coco::kernels::cuda::masked_positions(d_selected.data(), d_count.data(), B, T, d_out.data(), capacity, nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  const auto cuda_out = d_out.download();
  for (int64_t k = 0; k < capacity; ++k) {
    EXPECT_EQ(cpu_out[static_cast<size_t>(k)], expected[static_cast<size_t>(k)]);
    EXPECT_EQ(cuda_out[static_cast<size_t>(k)], expected[static_cast<size_t>(k)]);
  }
  EXPECT_EQ(cpu_out[static_cast<size_t>(capacity)], -1);
  EXPECT_TRUE(d_out.guards_intact());
}

TEST(Masking, DifferentStepsAndSeedsGiveDifferentMasks) {
  const int64_t B = 8, T = 64;
  const auto tokens = make_batch(B, T, 15);
  const MaskingConfig c = lucidrains_config();
  const MaskResult a = run_cpu(tokens, B, T, coco::kernels::make_mask_params(c, 1, 1));
  const MaskResult same = run_cpu(tokens, B, T, coco::kernels::make_mask_params(c, 1, 1));
  const MaskResult next_step = run_cpu(tokens, B, T, coco::kernels::make_mask_params(c, 1, 2));
  const MaskResult other_seed = run_cpu(tokens, B, T, coco::kernels::make_mask_params(c, 2, 1));
  EXPECT_EQ(a.selected, same.selected);
  EXPECT_NE(a.selected, next_step.selected);
  EXPECT_NE(a.selected, other_seed.selected);
  EXPECT_NE(a.crop_tokens, next_step.crop_tokens);
}

TEST(Masking, FixedPointCountsAreExact) {
  // ceil / floor of (a / 100) * n for every percentage and n up to 5000, against exact integers; in
  // doubles, ceil(0.15 * 100) would already be 16.
  for (int a = 0; a <= 100; ++a) {
    const uint64_t f = coco::kernels::to_fixed_fraction(a / 100.0, "test");
    for (int32_t n = 0; n <= 5000; ++n) {
      ASSERT_EQ(coco::kernels::fraction_ceil(f, n), ceil_percent(a, n)) << a << "% of " << n;
      ASSERT_EQ(coco::kernels::fraction_floor(f, n), floor_percent(a, n)) << a << "% of " << n;
      // floor(p n + U) spans exactly [floor(p n), ceil(p n)] as U goes over [0, 1).
      ASSERT_EQ(coco::kernels::fraction_floor_plus_uniform(f, n, 0u), floor_percent(a, n)) << a << "% of " << n;
      ASSERT_EQ(coco::kernels::fraction_floor_plus_uniform(f, n, 0xffffffffu), ceil_percent(a, n)) << a << "% of " << n;
    }
  }
  const uint64_t f15 = coco::kernels::to_fixed_fraction(0.15, "test");
  // floor(0.15 * 20 + U) = 3 for every U.
  EXPECT_EQ(coco::kernels::fraction_floor_plus_uniform(f15, 20, 0u), 3);
  EXPECT_EQ(coco::kernels::fraction_floor_plus_uniform(f15, 20, 0xffffffffu), 3);
  // floor(0.15 * 10 + U) = 1 or 2, switching at U = 0.5.
  EXPECT_EQ(coco::kernels::fraction_floor_plus_uniform(f15, 10, 0x7ffffff0u), 1);
  EXPECT_EQ(coco::kernels::fraction_floor_plus_uniform(f15, 10, 0x80000010u), 2);
}

TEST(Masking, ScheduleInvariant) {
  for (MaskPreset preset : {MaskPreset::lucidrains, MaskPreset::paper}) {
    MaskingConfig c = preset == MaskPreset::lucidrains ? lucidrains_config() : paper_config();
    c.random_token_prob = 0.5;
    const int64_t B = 6, T = 130;
    const auto tokens = make_batch(B, T, 16);
    const MaskKernelParams p = coco::kernels::make_mask_params(c, 8, 9);
    EXPECT_TRUE(schedule_invariant(
        [&] {
          const MaskResult r = run_cuda(tokens, B, T, p);
          std::vector<uint8_t> bytes(r.selected);
          for (const auto* v : {&r.generator_input, &r.row_count, &r.crop_tokens, &r.crop_length, &r.positions}) {
            const auto* raw = reinterpret_cast<const uint8_t*>(v->data());
            bytes.insert(bytes.end(), raw, raw + v->size() * sizeof(int32_t));
          }
          return bytes;
        },
        3));
  }
}

TEST(Masking, RejectsBadConfigurations) {
  MaskingConfig c = lucidrains_config();
  c.mask_prob = 1.5;
  EXPECT_THROW(coco::kernels::make_mask_params(c, 0, 0), std::invalid_argument);
  c = lucidrains_config();
  c.replace_prob = -0.1;
  EXPECT_THROW(coco::kernels::make_mask_params(c, 0, 0), std::invalid_argument);
  c = lucidrains_config();
  c.crop_fraction = NAN;
  EXPECT_THROW(coco::kernels::make_mask_params(c, 0, 0), std::invalid_argument);
  c = lucidrains_config();
  c.cls_id = -1;
  EXPECT_THROW(coco::kernels::make_mask_params(c, 0, 0), std::invalid_argument);
  c = lucidrains_config();
  c.ignore_ids.clear();
  for (int i = 0; i < 40; ++i) c.ignore_ids.push_back(100 + i);
  EXPECT_THROW(coco::kernels::make_mask_params(c, 0, 0), std::invalid_argument);
  c = lucidrains_config();
  c.random_token_prob = 0.1;
  c.vocab_size = 0;
  EXPECT_THROW(coco::kernels::make_mask_params(c, 0, 0), std::invalid_argument);
  c.vocab_size = 4;  // ids 0..3 are all special
  EXPECT_THROW(coco::kernels::make_mask_params(c, 0, 0), std::invalid_argument);

  const MaskKernelParams p = coco::kernels::make_mask_params(lucidrains_config(), 0, 0);
  int32_t dummy = 0;
  uint8_t flag = 0;
  EXPECT_THROW(coco::kernels::cpu::select_mask(&dummy, 1, 0, p, &flag, &dummy, &dummy), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::select_mask(&dummy, 1, coco::kernels::kMaxMaskRowLength + 1, p, &flag, &dummy,
                                                &dummy, nullptr),
               std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::crop_view(&dummy, -1, 4, p, &dummy, &dummy, nullptr), std::invalid_argument);
}

// ------------------------------------------------------------ ops wrappers on coco::Tensor

// first_row keys the draws by global row: the two halves of a batch, each given its first row, select,
// replace and crop exactly what the whole batch does in those rows (data parallelism), on both devices.
TEST(MaskingOps, FirstRowKeysTheDrawsByGlobalRow) {
  const int64_t B = 6, T = 29, half = B / 2;
  const auto host_tokens = make_batch(B, T, 23);
  for (MaskPreset preset : {MaskPreset::lucidrains, MaskPreset::paper}) {
    MaskingConfig c = preset == MaskPreset::lucidrains ? lucidrains_config() : paper_config();
    c.random_token_prob = 0.3;
    for (coco::Device device : {coco::Device::cpu, coco::Device::cuda}) {
      const auto as_i32 = [](const coco::Tensor& t) {
        const coco::Tensor h = t.to(coco::Device::cpu);
        if (h.dtype() == coco::DType::u8) {
          const auto v = h.to_vector<uint8_t>();
          return std::vector<int32_t>(v.begin(), v.end());
        }
        return h.to_vector<int32_t>();
      };
      const auto outputs = [&](const std::vector<int32_t>& rows, int64_t n, uint64_t first_row) {
        const coco::Tensor tokens = coco::Tensor::from_vector(rows, coco::Shape{n, T}, device);
        const coco::ops::MaskedBatch batch = coco::ops::select_mask(tokens, c, 5, 6, first_row);
        const coco::ops::CropView crop = coco::ops::crop_view(tokens, c, 5, 6, first_row);
        return std::vector<std::vector<int32_t>>{as_i32(batch.selected), as_i32(batch.generator_input),
                                                 as_i32(batch.row_count), as_i32(crop.tokens), as_i32(crop.length)};
      };
      const auto whole = outputs(host_tokens, B, 0);
      const auto first = outputs(std::vector<int32_t>(host_tokens.begin(), host_tokens.begin() + half * T), half, 0);
      const auto second = outputs(std::vector<int32_t>(host_tokens.begin() + half * T, host_tokens.end()), half, half);
      for (size_t i = 0; i < whole.size(); ++i) {
        std::vector<int32_t> joined = first[i];
        joined.insert(joined.end(), second[i].begin(), second[i].end());
        EXPECT_EQ(joined, whole[i]) << "output " << i;
      }
      // Without the first row, the second half draws what rows 0.. draw: different masks.
      EXPECT_NE(outputs(std::vector<int32_t>(host_tokens.begin() + half * T, host_tokens.end()), half, 0)[0],
                second[0]);
    }
  }
}

TEST(MaskingOps, CpuAndCudaTensorsGiveIdenticalBatches) {
  const int64_t B = 6, T = 45;
  const auto host_tokens = make_batch(B, T, 17);
  for (MaskPreset preset : {MaskPreset::lucidrains, MaskPreset::paper}) {
    MaskingConfig c = preset == MaskPreset::lucidrains ? lucidrains_config() : paper_config();
    c.random_token_prob = 0.3;
    std::vector<std::vector<int32_t>> results[2];
    for (int d = 0; d < 2; ++d) {
      const coco::Device device = d == 0 ? coco::Device::cpu : coco::Device::cuda;
      const coco::Tensor tokens = coco::Tensor::from_vector(host_tokens, coco::Shape{B, T}, device);
      const coco::ops::MaskedBatch batch = coco::ops::select_mask(tokens, c, 5, 6);
      const coco::ops::CropView crop = coco::ops::crop_view(tokens, c, 5, 6);
      // The generator "samples" the token after the original, so some positions are replaced.
      std::vector<int32_t> samples = batch.targets.to(coco::Device::cpu).to_vector<int32_t>();
      for (size_t k = 0; k < samples.size(); ++k) samples[k] += k % 2 ? 1 : 0;
      const coco::ops::Corruption corrupted = coco::ops::corrupt(
          tokens, batch.positions, coco::Tensor::from_vector(samples, coco::Shape{batch.capacity}, device), kPad,
          coco::kernels::LabelConvention::original_is_one);
      const auto u8_as_i32 = [](const coco::Tensor& t) {
        const auto v = t.to(coco::Device::cpu).to_vector<uint8_t>();
        return std::vector<int32_t>(v.begin(), v.end());
      };
      const auto as_i32 = [](const coco::Tensor& t) { return t.to(coco::Device::cpu).to_vector<int32_t>(); };
      const auto labels = corrupted.labels.to(coco::Device::cpu).to_vector<float>();
      results[d] = {u8_as_i32(batch.selected),     as_i32(batch.generator_input),
                    as_i32(batch.row_count),       as_i32(batch.positions),
                    as_i32(batch.targets),         as_i32(crop.tokens),
                    as_i32(crop.length),           as_i32(corrupted.tokens),
                    u8_as_i32(corrupted.replaced), std::vector<int32_t>(labels.begin(), labels.end())};
      // The ops agree with the kernels they wrap.
      const MaskResult direct = run_cpu(host_tokens, B, T, coco::kernels::make_mask_params(c, 5, 6));
      // The selected positions, then -1 up to the fixed capacity B * ceil(mask_prob * T); the gather
      // rows are the same with 0 for the padding, the targets -1 there.
      const std::vector<int32_t> positions = as_i32(batch.positions), rows = as_i32(batch.gather_rows),
                                 targets = as_i32(batch.targets);
      ASSERT_EQ(batch.capacity, B * coco::ops::max_selected_per_row(c, T));
      ASSERT_EQ(static_cast<int64_t>(positions.size()), batch.capacity);
      ASSERT_LE(direct.positions.size(), positions.size());
      for (size_t k = 0; k < positions.size(); ++k) {
        const bool real = k < direct.positions.size();
        EXPECT_EQ(positions[k], real ? direct.positions[k] : -1) << k;
        EXPECT_EQ(rows[k], real ? direct.positions[k] : 0) << k;
        if (!real) {
          EXPECT_EQ(targets[k], -1) << k;
        }
      }
      EXPECT_EQ(as_i32(crop.tokens), direct.crop_tokens);
    }
    for (size_t k = 0; k < results[0].size(); ++k) EXPECT_EQ(results[0][k], results[1][k]) << "output " << k;
  }
}

TEST(MaskingOps, RejectBadTensors) {
  const MaskingConfig c = lucidrains_config();
  const coco::Tensor floats = coco::Tensor::zeros(coco::Shape{2, 4}, coco::DType::f32);
  EXPECT_THROW(coco::ops::select_mask(floats, c, 0, 0), coco::TensorError);
  const coco::Tensor flat = coco::Tensor::zeros(coco::Shape{8}, coco::DType::i32);
  EXPECT_THROW(coco::ops::crop_view(flat, c, 0, 0), coco::TensorError);
  const coco::Tensor tokens = coco::Tensor::zeros(coco::Shape{2, 4}, coco::DType::i32);
  const coco::Tensor positions = coco::Tensor::from_vector(std::vector<int32_t>{1, 9}, coco::Shape{2});
  const coco::Tensor samples = coco::Tensor::from_vector(std::vector<int32_t>{5, 6}, coco::Shape{2});
  EXPECT_THROW(coco::ops::corrupt(tokens, positions, samples, 0, coco::kernels::LabelConvention::replaced_is_one),
               coco::TensorError);  // position 9 outside the 8 tokens
  EXPECT_THROW(
      coco::ops::corrupt(tokens, positions, samples.rows(0, 1), 0, coco::kernels::LabelConvention::replaced_is_one),
      coco::TensorError);  // count mismatch
}

}  // namespace
