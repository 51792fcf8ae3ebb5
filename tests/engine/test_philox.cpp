// Philox4x32-10: Random123 known-answer vectors, the documented stream mapping, distinctness of
// streams, and the statistics of the derived draws (uniform, below, normal).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <tuple>
#include <vector>

#include "engine/rng/philox.h"

namespace {

using coco::rng::Key2;
using coco::rng::Philox4x32;
using coco::rng::Purpose;
using coco::rng::Stream;
using coco::rng::Word4;

// Random123 kat_vectors, "philox4x32 10 <counter x4> <key x2> <expected x4>".
TEST(Philox, KnownAnswerAllZero) {
  const Word4 out = Philox4x32::generate(Word4{0, 0, 0, 0}, Key2{0, 0});
  EXPECT_EQ(out, (Word4{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}));
}

TEST(Philox, KnownAnswerAllOnes) {
  const uint32_t f = 0xffffffffu;
  const Word4 out = Philox4x32::generate(Word4{f, f, f, f}, Key2{f, f});
  EXPECT_EQ(out, (Word4{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}));
}

TEST(Philox, KnownAnswerPiDigits) {
  const Word4 out =
      Philox4x32::generate(Word4{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}, Key2{0xa4093822u, 0x299f31d0u});
  EXPECT_EQ(out, (Word4{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}));
}

TEST(Philox, UsableAtCompileTime) {
  constexpr Word4 out = Philox4x32::generate(Word4{0, 0, 0, 0}, Key2{0, 0});
  static_assert(out.x == 0x6627e8d5u && out.w == 0x9b00dbd8u);
  EXPECT_EQ(out.lane(1), 0xe169c58du);
  EXPECT_EQ(out.lane(2), 0xbc57ac4cu);
}

// An index base moves the stream's indices: based at b, index i is index b + i of the plain stream (bases add).
TEST(PhiloxStream, IndexBaseShiftsTheIndices) {
  const Stream plain(7, 11, Purpose::dropout_residual, 2);
  const Stream based = plain.with_index_base(1000).with_index_base(24);
  EXPECT_EQ(based.index_base(), 1024u);
  EXPECT_EQ(plain.index_base(), 0u);
  for (uint64_t i : {uint64_t{0}, uint64_t{5}, uint64_t{1} << 33}) {
    EXPECT_EQ(based.block(i), plain.block(1024 + i));
    EXPECT_EQ(based.uniform(i, 2), plain.uniform(1024 + i, 2));
  }
}

// The mapping documented in philox.h is a reproducibility contract: pin it.
TEST(PhiloxStream, CounterAndKeyFollowTheDocumentedMapping) {
  const uint64_t seed = 0x0123456789abcdefull, step = 0x0000fedcba987654ull;
  const Stream s(seed, step, Purpose::dropout_attention, /*instance=*/3);
  EXPECT_EQ(s.key().k0, 0x89abcdefu);
  EXPECT_EQ(s.key().k1, 0x01234567u);
  const uint64_t index = 0x0000abcd12345678ull;
  const uint32_t code = 8u | (3u << 8);
  EXPECT_EQ(coco::rng::purpose_code(Purpose::dropout_attention, 3), code);
  EXPECT_EQ(s.counter(index), (Word4{0x12345678u, 0xabcdu ^ (code << 16), 0xba987654u, 0x0000fedcu}));
  EXPECT_EQ(s.block(index), Philox4x32::generate(s.counter(index), s.key()));
  for (unsigned lane = 0; lane < 4; ++lane) EXPECT_EQ(s.u32(index, lane), s.block(index).lane(lane));
}

TEST(PhiloxStream, PurposeValuesAreFixed) {
  // These numbers are in every checkpoint's random streams; changing one breaks bitwise resume.
  const std::pair<Purpose, uint32_t> expected[] = {{Purpose::generator_mask_select, 1},
                                                   {Purpose::mask_replace, 2},
                                                   {Purpose::random_token, 3},
                                                   {Purpose::crop, 4},
                                                   {Purpose::gumbel_sample, 5},
                                                   {Purpose::multinomial_sample, 6},
                                                   {Purpose::dropout_embedding, 7},
                                                   {Purpose::dropout_attention, 8},
                                                   {Purpose::dropout_residual, 9},
                                                   {Purpose::dropout_activation, 10},
                                                   {Purpose::init, 11},
                                                   {Purpose::data_shuffle, 12}};
  for (auto [p, v] : expected) EXPECT_EQ(static_cast<uint32_t>(p), v);
}

TEST(PhiloxStream, CountersAreDistinctAcrossTheDocumentedRange) {
  // Corners of the guaranteed range: index < 2^48, purpose < 2^16, any step.
  const uint64_t indices[] = {0, 1, 0xffffffffull, 0x100000000ull, (1ull << 40) - 1, (1ull << 48) - 1};
  const uint32_t purposes[] = {0, 1, 12, 0xff, 0x100, 0xffff};
  const uint64_t steps[] = {0, 1, 0xffffffffull, 1ull << 32, (1ull << 48) - 1, ~0ull};
  std::set<std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>> seen;
  for (uint64_t step : steps)
    for (uint32_t purpose : purposes)
      for (uint64_t index : indices) {
        const Word4 c = Stream(7, step, purpose).counter(index);
        EXPECT_TRUE(seen.insert({c.x, c.y, c.z, c.w}).second) << step << " " << purpose << " " << index;
      }
}

TEST(PhiloxStream, DifferentSeedStepPurposeGiveDifferentNumbers) {
  // Every (seed, step, purpose, index) block in a small grid is unique; equal blocks would mean two
  // consumers reuse the same randomness.
  const uint64_t seeds[] = {0, 1, 2, 1ull << 32, 0xdeadbeefcafef00dull};
  const uint64_t steps[] = {0, 1, 2, 1000, 1ull << 32};
  std::set<std::tuple<uint32_t, uint32_t, uint32_t, uint32_t>> seen;
  size_t draws = 0;
  for (uint64_t seed : seeds)
    for (uint64_t step : steps)
      for (uint32_t p = 1; p <= 12; ++p)
        for (uint32_t instance = 0; instance < 3; ++instance)
          for (uint64_t index = 0; index < 16; ++index) {
            const Word4 b = Stream(seed, step, static_cast<Purpose>(p), instance).block(index);
            seen.insert({b.x, b.y, b.z, b.w});
            ++draws;
          }
  EXPECT_EQ(seen.size(), draws);
}

TEST(PhiloxStream, NeighbouringStreamsAreUncorrelated) {
  const int n = 100000;
  const Stream a(1234, 10, Purpose::dropout_residual), b(1234, 11, Purpose::dropout_residual),
      c(1234, 10, Purpose::dropout_activation), d(1235, 10, Purpose::dropout_residual);
  for (const Stream* other : {&b, &c, &d}) {
    double sum_ab = 0, sum_a = 0, sum_b = 0, sum_aa = 0, sum_bb = 0;
    int equal = 0;
    for (int i = 0; i < n; ++i) {
      const double x = a.uniform(i), y = other->uniform(i);
      sum_a += x, sum_b += y, sum_ab += x * y, sum_aa += x * x, sum_bb += y * y;
      equal += a.u32(i) == other->u32(i);
    }
    const double cov = sum_ab / n - (sum_a / n) * (sum_b / n);
    const double corr = cov / std::sqrt((sum_aa / n - sum_a * sum_a / n / n) * (sum_bb / n - sum_b * sum_b / n / n));
    EXPECT_LT(std::abs(corr), 6.0 / std::sqrt(n));  // 6 sigma of the null distribution
    EXPECT_LE(equal, 2);                            // expected 100000 / 2^32 coincidences
  }
}

TEST(PhiloxStream, UniformRangeMeanVariance) {
  const Stream s(20240607, 3, Purpose::generator_mask_select);
  const int n = 1000000;
  double sum = 0, sum_sq = 0;
  float lo = 1, hi = 0;
  for (int i = 0; i < n; ++i) {
    const float u = s.uniform(i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    // 24 random bits: u * 2^24 is an integer.
    ASSERT_EQ(std::floor(u * 16777216.0f), u * 16777216.0f);
    lo = std::min(lo, u), hi = std::max(hi, u);
    sum += u, sum_sq += static_cast<double>(u) * u;
  }
  const double mean = sum / n, var = sum_sq / n - mean * mean;
  // sd of the mean: sqrt(1/12 / n) = 2.9e-4; of the variance: sqrt(1/180 / n) = 7.5e-5.
  EXPECT_NEAR(mean, 0.5, 6 * 2.9e-4);
  EXPECT_NEAR(var, 1.0 / 12.0, 6 * 7.5e-5);
  EXPECT_LT(lo, 1e-5f);
  EXPECT_GT(hi, 1.0f - 1e-5f);
}

TEST(PhiloxStream, UniformLanesAreIndependentDraws) {
  const Stream s(5, 0, Purpose::mask_replace);
  double sum_01 = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) sum_01 += (s.uniform(i, 0) - 0.5) * (s.uniform(i, 1) - 0.5);
  EXPECT_NEAR(sum_01 / n, 0.0, 6 * (1.0 / 12.0) / std::sqrt(n));
}

TEST(PhiloxStream, UniformF64RangeAndMean) {
  const Stream s(99, 1, Purpose::data_shuffle);
  const int n = 200000;
  double sum = 0;
  bool used_low_bits = false;
  for (int i = 0; i < n; ++i) {
    const double u = s.uniform_f64(i);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    const double scaled = u * 9007199254740992.0;  // 2^53
    ASSERT_EQ(std::floor(scaled), scaled);
    used_low_bits |= std::fmod(scaled, 2.0) != 0.0;  // not a float-precision value in disguise
    sum += u;
  }
  EXPECT_TRUE(used_low_bits);
  EXPECT_NEAR(sum / n, 0.5, 6 * std::sqrt(1.0 / 12.0 / n));
}

// Chi-squared critical value at p ~ 1e-6 (z = 4.75) by the Wilson-Hilferty approximation.
double chi_squared_critical(double dof) {
  const double z = 4.75, k = 2.0 / (9.0 * dof);
  return dof * std::pow(1.0 - k + z * std::sqrt(k), 3.0);
}

double chi_squared_of_below(const Stream& s, uint32_t n, int draws) {
  std::vector<int64_t> counts(n, 0);
  for (int i = 0; i < draws; ++i) {
    const uint32_t v = s.below(n, i);
    if (v >= n) {
      ADD_FAILURE() << "below(" << n << ") returned " << v;
      return 1e300;
    }
    ++counts[v];
  }
  const double expected = static_cast<double>(draws) / n;
  double chi2 = 0;
  for (int64_t c : counts) chi2 += (c - expected) * (c - expected) / expected;
  return chi2;
}

TEST(PhiloxStream, BelowIsUniformByChiSquared) {
  const Stream s(777, 12, Purpose::random_token);
  for (uint32_t n : {2u, 3u, 10u, 97u, 1000u}) {
    const double chi2 = chi_squared_of_below(s, n, 500000);
    EXPECT_LT(chi2, chi_squared_critical(n - 1)) << "n = " << n;
  }
  // A vocabulary-sized range, fewer draws per bucket but still ~16 each.
  const double chi2 = chi_squared_of_below(Stream(777, 12, Purpose::random_token, 1), 30522, 500000);
  EXPECT_LT(chi2, chi_squared_critical(30521));
}

TEST(PhiloxStream, ChiSquaredDetectsABiasedGenerator) {
  // The test above can fail: a generator that favours 0 is rejected at the same threshold.
  const Stream s(777, 12, Purpose::random_token);
  const uint32_t n = 97;
  std::vector<int64_t> counts(n, 0);
  const int draws = 500000;
  for (int i = 0; i < draws; ++i) {
    uint32_t v = s.below(n, i);
    if (i % 200 == 0) v = 0;  // 0.5% bias
    ++counts[v];
  }
  const double expected = static_cast<double>(draws) / n;
  double chi2 = 0;
  for (int64_t c : counts) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_GT(chi2, chi_squared_critical(n - 1));
}

TEST(PhiloxStream, BelowEdgeCases) {
  const Stream s(1, 2, Purpose::crop);
  for (int i = 0; i < 1000; ++i) {
    EXPECT_EQ(s.below(1, i), 0u);
    EXPECT_EQ(s.below(0, i), 0u);
    EXPECT_LT(s.below(0xffffffffu, i), 0xffffffffu);
    // multiply-high is monotone in the word: below(n) = floor(u32 * n / 2^32)
    EXPECT_EQ(s.below(1000, i), static_cast<uint32_t>((static_cast<uint64_t>(s.u32(i)) * 1000) >> 32));
  }
}

TEST(PhiloxStream, NormalMeanVarianceAndTails) {
  const Stream s(31337, 0, Purpose::init);
  const int n = 200000;
  double sum = 0, sum_sq = 0;
  int beyond_3 = 0;
  for (int i = 0; i < n; ++i) {
    const float z = s.normal(i);
    ASSERT_TRUE(std::isfinite(z));
    sum += z, sum_sq += static_cast<double>(z) * z;
    beyond_3 += std::abs(z) > 3.0f;
  }
  const double mean = sum / n, var = sum_sq / n - mean * mean;
  EXPECT_NEAR(mean, 0.0, 6 / std::sqrt(n));
  EXPECT_NEAR(var, 1.0, 6 * std::sqrt(2.0 / n));
  // P(|z| > 3) = 0.0027 -> 540 expected, sd ~23
  EXPECT_NEAR(beyond_3, 540, 6 * 23);
}

TEST(PhiloxStream, DefaultStreamIsSeedZeroStepZeroPurposeZero) {
  const Stream s;
  EXPECT_EQ(s.block(0), Philox4x32::generate(Word4{0, 0, 0, 0}, Key2{0, 0}));
}

}  // namespace
