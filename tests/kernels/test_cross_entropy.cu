// Fused vocabulary cross-entropy: the CUDA kernels (emulated here) against the CPU reference at
// V = 1, 7, 1000, 30522 and odd row counts, f32 / bf16 (f16 spot check), ignore index, row weights,
// mean and sum, the gradient written by the forward or by the backward (in place or not), all rows
// ignored, out-of-range targets, extreme and non-finite logits, argmax ties, and bitwise schedule
// invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "kernels/cross_entropy.h"
#include "tests/common/kernel_check.h"
#include "engine/simt/schedule_oracle.h"

namespace {

using coco::testing::expect_schedule_invariant;

using coco::kernels::kCountCorrect;
using coco::kernels::kCountInvalid;
using coco::kernels::kCountRows;
using coco::kernels::kCrossEntropyCounts;
using coco::kernels::LossReduction;
using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

constexpr int32_t kIgnore = -100;
// Statistics (loss, row_loss, row_lse) are f32 on the device for every T: the kernel sums exp in
// f32 over <= 30522 terms, the reference in double: relative error ~1e-6 at worst, NMSE < 1e-10.
constexpr double kStatsThreshold = 1e-10;
// f32 dlogits: one expf and two multiplications per element: NMSE ~1e-13.
constexpr double kF32GradThreshold = 1e-10;
// bf16 outputs: one round-to-nearest at unit roundoff 2^-8 per element: NMSE ~5e-6 over many
// elements, at most 1.5e-5 for a single element (several cases have 1 to 5 outputs).
constexpr double kBf16GradThreshold = 2e-5;

template <class T>
constexpr double grad_threshold() {
  return std::is_same_v<T, float> ? kF32GradThreshold : kBf16GradThreshold;
}

struct Case {
  int64_t rows, vocab;
  bool weighted;
  LossReduction reduction;
};

std::string label(const Case& c) {
  return "N=" + std::to_string(c.rows) + " V=" + std::to_string(c.vocab) + (c.weighted ? " weighted" : "") +
         (c.reduction == LossReduction::mean ? " mean" : " sum");
}

struct Problem {
  std::vector<float> logits, weights;
  std::vector<int32_t> targets;
};

// Targets: every 5th row ignored, the rest uniform in [0, V); logits spread wide enough that the
// argmax is often but not always the target.
Problem make_problem(const Case& c, unsigned seed) {
  Problem p;
  p.logits = random_floats(static_cast<size_t>(c.rows * c.vocab), seed, -4.0f, 4.0f);
  p.weights = random_floats(static_cast<size_t>(c.rows), seed + 1, 0.1f, 1.0f);
  std::mt19937 generator(seed + 2);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.vocab - 1));
  p.targets.resize(static_cast<size_t>(c.rows));
  for (int64_t i = 0; i < c.rows; ++i) {
    p.targets[static_cast<size_t>(i)] = (i % 5 == 3) ? kIgnore : pick(generator);
    // Make some targets the argmax so the correct count is exercised on both sides.
    if (i % 3 == 0 && p.targets[static_cast<size_t>(i)] >= 0)
      p.logits[static_cast<size_t>(i * c.vocab + p.targets[static_cast<size_t>(i)])] = 6.0f;
  }
  return p;
}

struct Result {
  std::vector<double> loss, row_loss, row_lse, dlogits;
  std::vector<int32_t> counts;
};

Result cpu_run(const Case& c, const Problem& p, float dloss) {
  Result r;
  std::vector<float> loss(1), row_loss(static_cast<size_t>(c.rows)), row_lse(static_cast<size_t>(c.rows)),
      dlogits(p.logits.size());
  r.counts.assign(kCrossEntropyCounts, -1);
  coco::kernels::cpu::cross_entropy_forward(p.logits.data(), p.targets.data(), c.weighted ? p.weights.data() : nullptr,
                                            c.rows, c.vocab, kIgnore, c.reduction, loss.data(), row_loss.data(),
                                            row_lse.data(), r.counts.data());
  coco::kernels::cpu::cross_entropy_backward(p.logits.data(), p.targets.data(), c.weighted ? p.weights.data() : nullptr,
                                             row_lse.data(), r.counts.data(), c.rows, c.vocab, kIgnore, c.reduction,
                                             &dloss, dlogits.data());
  r.loss = to_f64(loss);
  r.row_loss = to_f64(row_loss);
  r.row_lse = to_f64(row_lse);
  r.dlogits = to_f64(dlogits);
  return r;
}

// How the CUDA side produces dlogits.
enum class GradMode { backward, backward_in_place, forward, forward_in_place };

template <class T>
Result cuda_run(const Case& c, const Problem& p, float dloss, GradMode mode, bool* guards_ok = nullptr) {
  const size_t rows = static_cast<size_t>(c.rows);
  GuardedDeviceBuffer<T> d_logits(from_floats<T>(p.logits)), d_dlogits(p.logits.size());
  GuardedDeviceBuffer<int32_t> d_targets(p.targets), d_counts(kCrossEntropyCounts);
  GuardedDeviceBuffer<float> d_weights(p.weights), d_loss(1), d_row_loss(rows), d_row_lse(rows),
      d_dloss(std::vector<float>{dloss});
  for (auto* b : {&d_loss, &d_row_loss, &d_row_lse}) b->poison();
  d_counts.poison();
  d_dlogits.poison();
  const bool in_place = mode == GradMode::backward_in_place || mode == GradMode::forward_in_place;
  T* grad = in_place ? d_logits.data() : d_dlogits.data();
  const float* weights = c.weighted ? d_weights.data() : nullptr;
  const bool fused = mode == GradMode::forward || mode == GradMode::forward_in_place;
  coco::kernels::cuda::cross_entropy_forward(d_logits.data(), d_targets.data(), weights, c.rows, c.vocab, kIgnore,
                                             c.reduction, d_loss.data(), d_row_loss.data(), d_row_lse.data(),
                                             d_counts.data(), fused ? grad : nullptr, dloss, nullptr);
  if (!fused)
    coco::kernels::cuda::cross_entropy_backward(d_logits.data(), d_targets.data(), weights, d_row_lse.data(),
                                                d_counts.data(), c.rows, c.vocab, kIgnore, c.reduction, d_dloss.data(),
                                                grad, nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  Result r;
  r.loss = to_f64(d_loss.download());
  r.row_loss = to_f64(d_row_loss.download());
  r.row_lse = to_f64(d_row_lse.download());
  r.dlogits = to_f64(in_place ? d_logits.download() : d_dlogits.download());
  r.counts = d_counts.download();
  if (guards_ok)
    *guards_ok = d_logits.guards_intact() && d_dlogits.guards_intact() && d_loss.guards_intact() &&
                 d_row_loss.guards_intact() && d_row_lse.guards_intact() && d_counts.guards_intact();
  return r;
}

template <class T>
void expect_matches(const Case& c, const Result& ref, const Result& got, const std::string& what) {
  EXPECT_TRUE(matches_reference(ref.loss, got.loss, kStatsThreshold, "loss " + what));
  EXPECT_TRUE(matches_reference(ref.row_loss, got.row_loss, kStatsThreshold, "row_loss " + what));
  EXPECT_TRUE(matches_reference(ref.row_lse, got.row_lse, kStatsThreshold, "row_lse " + what));
  EXPECT_TRUE(matches_reference(ref.dlogits, got.dlogits, grad_threshold<T>(), "dlogits " + what));
  EXPECT_EQ(ref.counts, got.counts) << what << " " << label(c);
}

const Case kCases[] = {
    {3, 1, false, LossReduction::mean},    {7, 7, true, LossReduction::mean},   {33, 1000, false, LossReduction::sum},
    {4, 30522, true, LossReduction::mean}, {130, 61, true, LossReduction::sum}, {1, 257, false, LossReduction::mean},
};

template <class T>
class CrossEntropyCuda : public ::testing::Test {};
using LogitTypes = ::testing::Types<float, __nv_bfloat16>;
TYPED_TEST_SUITE(CrossEntropyCuda, LogitTypes);

TYPED_TEST(CrossEntropyCuda, ForwardAndBackwardMatchCpu) {
  using T = TypeParam;
  for (const Case& c : kCases) {
    Problem p = make_problem(c, 11 + static_cast<unsigned>(c.vocab));
    p.logits = round_through<T>(p.logits);
    const Result ref = cpu_run(c, p, 0.75f);
    bool guards_ok = false;
    const Result got = cuda_run<T>(c, p, 0.75f, GradMode::backward, &guards_ok);
    expect_matches<T>(c, ref, got, label(c));
    EXPECT_TRUE(guards_ok) << label(c);
  }
}

TYPED_TEST(CrossEntropyCuda, GradientFromForwardAndInPlaceAreBitwiseTheBackwardOne) {
  using T = TypeParam;
  const Case c{9, 300, true, LossReduction::mean};
  Problem p = make_problem(c, 5);
  p.logits = round_through<T>(p.logits);
  const Result base = cuda_run<T>(c, p, 1.5f, GradMode::backward);
  for (GradMode mode : {GradMode::backward_in_place, GradMode::forward, GradMode::forward_in_place}) {
    bool guards_ok = false;
    const Result other = cuda_run<T>(c, p, 1.5f, mode, &guards_ok);
    EXPECT_EQ(base.dlogits, other.dlogits) << "mode " << static_cast<int>(mode);
    EXPECT_EQ(base.loss, other.loss);
    EXPECT_EQ(base.counts, other.counts);
    EXPECT_TRUE(guards_ok);
  }
}

TEST(CrossEntropyCuda, F16SpotCheck) {
  // f16 keeps 11 significant bits: gradient NMSE ~1e-8; 1e-5 as for bf16.
  const Case c{7, 513, true, LossReduction::mean};
  Problem p = make_problem(c, 3);
  p.logits = round_through<__half>(p.logits);
  expect_matches<__half>(c, cpu_run(c, p, 1.0f), cuda_run<__half>(c, p, 1.0f, GradMode::backward), "f16");
}

TEST(CrossEntropyCuda, AllRowsIgnoredGivesZeroLossAndZeroGradient) {
  const Case c{6, 50, true, LossReduction::mean};
  Problem p = make_problem(c, 8);
  for (int32_t& t : p.targets) t = kIgnore;
  const Result got = cuda_run<float>(c, p, 1.0f, GradMode::backward);
  EXPECT_EQ(got.loss[0], 0.0);
  EXPECT_EQ(got.counts, (std::vector<int32_t>{0, 0, 0}));
  for (double g : got.dlogits) ASSERT_EQ(g, 0.0);
  for (double l : got.row_loss) ASSERT_EQ(l, 0.0);
  const Result ref = cpu_run(c, p, 1.0f);
  EXPECT_EQ(ref.loss[0], 0.0);
  EXPECT_EQ(ref.counts, got.counts);
  // Zero rows at all: same answer, and nothing is launched over rows.
  const Case empty{0, 50, false, LossReduction::mean};
  const Result none = cuda_run<float>(empty, Problem{}, 1.0f, GradMode::backward);
  EXPECT_EQ(none.loss[0], 0.0);
  EXPECT_EQ(none.counts, (std::vector<int32_t>{0, 0, 0}));
}

TEST(CrossEntropyCuda, OutOfRangeTargetsAreCountedAndContributeNothing) {
  const Case c{6, 40, false, LossReduction::mean};
  Problem p = make_problem(c, 21);
  p.targets = {3, 40, -1, 1 << 30, kIgnore, 39};
  bool guards_ok = false;
  const Result got = cuda_run<float>(c, p, 1.0f, GradMode::forward, &guards_ok);
  EXPECT_TRUE(guards_ok);
  EXPECT_EQ(got.counts[kCountRows], 2);
  EXPECT_EQ(got.counts[kCountInvalid], 3);
  const Result ref = cpu_run(c, p, 1.0f);
  expect_matches<float>(c, ref, got, "invalid targets");
  for (int64_t j = 0; j < c.vocab; ++j) ASSERT_EQ(got.dlogits[static_cast<size_t>(1 * c.vocab + j)], 0.0);
}

Problem extreme_problem(const Case& c) {
  Problem p;
  p.logits.resize(static_cast<size_t>(c.rows * c.vocab));
  p.targets = {0, 1, 999, 500};
  for (int64_t j = 0; j < c.vocab; ++j) {
    p.logits[static_cast<size_t>(0 * c.vocab + j)] = j == 0 ? 1e4f : -1e4f;   // confident and right: ce = 0
    p.logits[static_cast<size_t>(1 * c.vocab + j)] = j == 0 ? 1e4f : -1e4f;   // confident and wrong: ce = 2e4
    p.logits[static_cast<size_t>(2 * c.vocab + j)] = (j % 2 ? 1e4f : -1e4f);  // 500 tied maxima: ce = log 500
    p.logits[static_cast<size_t>(3 * c.vocab + j)] = -1e4f;                   // flat row: ce = log V
  }
  return p;
}

template <class T>
void check_extreme_logits() {
  const Case c{4, 1000, false, LossReduction::sum};
  const Problem p = extreme_problem(c);
  const double big = coco::testing::to_double(coco::testing::from_float<T>(1e4f));  // 9984 in bf16
  const Result got = cuda_run<T>(c, p, 1.0f, GradMode::backward);
  for (double v : got.row_loss) ASSERT_TRUE(std::isfinite(v));
  for (double v : got.dlogits) ASSERT_TRUE(std::isfinite(v));
  EXPECT_NEAR(got.row_loss[0], 0.0, 1e-6);
  EXPECT_NEAR(got.row_loss[1], 2.0 * big, 1e-2);
  EXPECT_NEAR(got.row_loss[2], std::log(500.0), 1e-5);
  EXPECT_NEAR(got.row_loss[3], std::log(1000.0), 1e-5);
  // Row 0 right; row 1 wrong; row 2: argmax is index 1 (first tied maximum), target 999; row 3: index 0.
  EXPECT_EQ(got.counts[kCountCorrect], 1);
}

TEST(CrossEntropyCuda, ExtremeLogitsStayFinite) {
  check_extreme_logits<float>();
  check_extreme_logits<__nv_bfloat16>();
  const Case c{4, 1000, false, LossReduction::sum};
  const Problem p = extreme_problem(c);
  expect_matches<float>(c, cpu_run(c, p, 1.0f), cuda_run<float>(c, p, 1.0f, GradMode::backward), "extreme");
}

TEST(CrossEntropyCuda, NanAndInfPropagateLikeTheReference) {
  const Case c{5, 33, false, LossReduction::mean};
  Problem p = make_problem(c, 4);
  p.targets = {1, 2, 3, 4, 5};
  p.logits[static_cast<size_t>(1 * c.vocab + 7)] = NAN;       // NaN row: NaN lse, loss, gradient row
  p.logits[static_cast<size_t>(2 * c.vocab + 0)] = INFINITY;  // +inf: NaN lse (as the reference)
  for (int64_t j = 0; j < c.vocab; ++j) p.logits[static_cast<size_t>(3 * c.vocab + j)] = -INFINITY;  // -inf lse
  p.logits[static_cast<size_t>(4 * c.vocab + 9)] = -INFINITY;  // one -inf: contributes exp(-inf) = 0
  const Result ref = cpu_run(c, p, 1.0f);
  ASSERT_TRUE(std::isnan(ref.row_lse[1]) && std::isnan(ref.row_lse[2]) && std::isinf(ref.row_lse[3]) &&
              std::isfinite(ref.row_lse[4]));
  const Result got = cuda_run<float>(c, p, 1.0f, GradMode::backward);
  expect_matches<float>(c, ref, got, "non-finite");
  EXPECT_TRUE(std::isnan(got.loss[0]));
  // Rows 0 and 4 stay finite.
  for (int64_t j = 0; j < c.vocab; ++j) EXPECT_TRUE(std::isfinite(got.dlogits[static_cast<size_t>(4 * c.vocab + j)]));
}

TEST(CrossEntropyCuda, ArgmaxTiesGoToTheLowestIndex) {
  const Case c{3, 300, false, LossReduction::mean};
  Problem p;
  p.logits.assign(static_cast<size_t>(c.rows * c.vocab), 0.5f);
  p.logits[static_cast<size_t>(2 * c.vocab + 260)] = 2.0f;
  p.logits[static_cast<size_t>(2 * c.vocab + 290)] = 2.0f;
  p.targets = {0, 1, 260};  // row 0 correct (all tied: index 0), row 1 not, row 2 correct (first of two maxima)
  const Result got = cuda_run<float>(c, p, 1.0f, GradMode::backward);
  EXPECT_EQ(got.counts[kCountCorrect], 2);
  EXPECT_EQ(cpu_run(c, p, 1.0f).counts[kCountCorrect], 2);
  p.targets = {0, 1, 290};
  EXPECT_EQ(cuda_run<float>(c, p, 1.0f, GradMode::backward).counts[kCountCorrect], 1);
}

TEST(CrossEntropyCuda, VocabularyOfOneHasZeroLoss) {
  const Case c{4, 1, true, LossReduction::mean};
  Problem p = make_problem(c, 6);
  p.targets = {0, 0, kIgnore, 0};
  const Result got = cuda_run<float>(c, p, 1.0f, GradMode::backward);
  EXPECT_EQ(got.loss[0], 0.0);
  EXPECT_EQ(got.counts, (std::vector<int32_t>{3, 3, 0}));
  for (double g : got.dlogits) EXPECT_EQ(g, 0.0);
}

TEST(CrossEntropyCuda, ResultsAreScheduleInvariant) {
  using T = __nv_bfloat16;
  const Case c{6, 700, true, LossReduction::mean};
  Problem p = make_problem(c, 31);
  const size_t rows = static_cast<size_t>(c.rows);
  GuardedDeviceBuffer<T> d_logits(from_floats<T>(p.logits)), d_dlogits(p.logits.size()), d_fused(p.logits.size());
  GuardedDeviceBuffer<int32_t> d_targets(p.targets), d_counts(kCrossEntropyCounts);
  GuardedDeviceBuffer<float> d_weights(p.weights), d_loss(1), d_row_loss(rows), d_row_lse(rows),
      d_dloss(std::vector<float>{0.5f});
  expect_schedule_invariant(
      [&] {
        d_dlogits.poison(0xFF);
        d_fused.poison(0x00);
        d_row_loss.poison(0x7F);
        coco::kernels::cuda::cross_entropy_forward(d_logits.data(), d_targets.data(), d_weights.data(), c.rows, c.vocab,
                                                   kIgnore, c.reduction, d_loss.data(), d_row_loss.data(),
                                                   d_row_lse.data(), d_counts.data(), d_fused.data(), 0.5f, nullptr);
        coco::kernels::cuda::cross_entropy_backward(d_logits.data(), d_targets.data(), d_weights.data(),
                                                    d_row_lse.data(), d_counts.data(), c.rows, c.vocab, kIgnore,
                                                    c.reduction, d_dloss.data(), d_dlogits.data(), nullptr);
        COCO_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<uint8_t> bytes;
        for (const auto& part : {d_loss.download_bytes(), d_row_loss.download_bytes(), d_row_lse.download_bytes(),
                                 d_counts.download_bytes(), d_dlogits.download_bytes(), d_fused.download_bytes()})
          bytes.insert(bytes.end(), part.begin(), part.end());
        return bytes;
      },
      3);
}

TEST(CrossEntropyCuda, RejectsBadSizes) {
  float dummy = 0.0f;
  int32_t target = 0, counts[3] = {};
  EXPECT_THROW(
      coco::kernels::cuda::cross_entropy_forward(&dummy, &target, nullptr, 1, 0, kIgnore, LossReduction::mean, &dummy,
                                                 &dummy, &dummy, counts, static_cast<float*>(nullptr), 1.0f, nullptr),
      std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::cross_entropy_forward(&dummy, &target, static_cast<const float*>(nullptr), -1, 3,
                                                         kIgnore, LossReduction::mean, &dummy, &dummy, &dummy, counts),
               std::invalid_argument);
}

TEST(CrossEntropyCpu, MatchesAHandComputedExample) {
  // Two rows of V = 3, the second weighted 2, mean over 2 rows.
  const std::vector<double> logits = {1.0, 2.0, 3.0, 0.0, 0.0, 0.0};
  const std::vector<double> weights = {1.0, 2.0};
  const std::vector<int32_t> targets = {2, 1};
  double loss = 0, row_loss[2], row_lse[2];
  int32_t counts[3];
  coco::kernels::cpu::cross_entropy_forward(logits.data(), targets.data(), weights.data(), 2, 3, kIgnore,
                                            LossReduction::mean, &loss, row_loss, row_lse, counts);
  const double lse0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(row_lse[0], lse0, 1e-15);
  EXPECT_NEAR(row_loss[0], lse0 - 3.0, 1e-15);
  EXPECT_NEAR(row_loss[1], std::log(3.0), 1e-15);
  EXPECT_NEAR(loss, ((lse0 - 3.0) + 2.0 * std::log(3.0)) / 2.0, 1e-15);
  EXPECT_EQ(counts[kCountCorrect], 1);  // row 0 argmax 2 (right); row 1 ties -> 0 (wrong)
  EXPECT_EQ(counts[kCountRows], 2);
  std::vector<double> dlogits(6);
  const double dloss = 1.0;
  coco::kernels::cpu::cross_entropy_backward(logits.data(), targets.data(), weights.data(), row_lse, counts, 2, 3,
                                             kIgnore, LossReduction::mean, &dloss, dlogits.data());
  EXPECT_NEAR(dlogits[3], 2.0 / 2.0 * (1.0 / 3.0), 1e-15);
  EXPECT_NEAR(dlogits[4], 2.0 / 2.0 * (1.0 / 3.0 - 1.0), 1e-15);
}

}  // namespace
