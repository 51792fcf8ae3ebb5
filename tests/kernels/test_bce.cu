// Binary cross-entropy with logits: the CUDA kernels (emulated here) against the CPU reference at
// odd sizes (including sizes that use several partial blocks), f32 / bf16 (f16 spot check), both
// label conventions, validity masks, no valid position, extreme and non-finite logits, and bitwise
// schedule invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "kernels/bce.h"
#include "tests/common/kernel_check.h"
#include "engine/simt/schedule_oracle.h"

namespace {

using coco::testing::expect_schedule_invariant;

using coco::kernels::BceLabels;
using coco::kernels::kBceCountCorrect;
using coco::kernels::kBceCounts;
using coco::kernels::kBceCountValid;
using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

// The loss is an f32 sum over <= 3000 terms per thread block tree vs a double sum: NMSE ~1e-14.
constexpr double kLossThreshold = 1e-10;
// f32 gradient: one expf and a multiply per element: NMSE ~1e-14.
constexpr double kF32GradThreshold = 1e-10;
// bf16 outputs: one round-to-nearest at unit roundoff 2^-8 per element: NMSE ~5e-6 over many
// elements, at most 1.5e-5 for a single element (several cases have 1 to 5 outputs).
constexpr double kBf16GradThreshold = 2e-5;

template <class T>
constexpr double grad_threshold() {
  return std::is_same_v<T, float> ? kF32GradThreshold : kBf16GradThreshold;
}

struct Problem {
  std::vector<float> logits;
  std::vector<uint8_t> replaced, valid;
  bool use_mask = true;
};

Problem make_problem(int64_t n, unsigned seed) {
  Problem p;
  p.logits = random_floats(static_cast<size_t>(n), seed, -6.0f, 6.0f);
  std::mt19937 generator(seed + 1);
  p.replaced.resize(static_cast<size_t>(n));
  p.valid.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    p.replaced[static_cast<size_t>(i)] = generator() % 4 == 0 ? 1 : 0;
    p.valid[static_cast<size_t>(i)] = generator() % 7 == 0 ? 0 : 1;
  }
  return p;
}

struct Result {
  std::vector<double> loss, dlogits;
  std::vector<int32_t> counts;
};

Result cpu_run(const Problem& p, BceLabels labels, float dloss) {
  const int64_t n = static_cast<int64_t>(p.logits.size());
  const uint8_t* valid = p.use_mask ? p.valid.data() : nullptr;
  std::vector<float> loss(1), dlogits(p.logits.size());
  Result r;
  r.counts.assign(kBceCounts, -1);
  coco::kernels::cpu::bce_with_logits_forward(p.logits.data(), p.replaced.data(), valid, n, labels, loss.data(),
                                              r.counts.data());
  coco::kernels::cpu::bce_with_logits_backward(p.logits.data(), p.replaced.data(), valid, r.counts.data(), n, labels,
                                               &dloss, dlogits.data());
  r.loss = to_f64(loss);
  r.dlogits = to_f64(dlogits);
  return r;
}

template <class T>
Result cuda_run(const Problem& p, BceLabels labels, float dloss, bool* guards_ok = nullptr) {
  const int64_t n = static_cast<int64_t>(p.logits.size());
  GuardedDeviceBuffer<T> d_logits(from_floats<T>(p.logits)), d_dlogits(p.logits.size());
  GuardedDeviceBuffer<uint8_t> d_replaced(p.replaced), d_valid(p.valid),
      workspace(coco::kernels::cuda::bce_workspace_bytes(n));
  GuardedDeviceBuffer<float> d_loss(1), d_dloss(std::vector<float>{dloss});
  GuardedDeviceBuffer<int32_t> d_counts(kBceCounts);
  d_loss.poison();
  d_counts.poison();
  d_dlogits.poison();
  workspace.poison();
  const uint8_t* valid = p.use_mask ? d_valid.data() : nullptr;
  coco::kernels::cuda::bce_with_logits_forward(d_logits.data(), d_replaced.data(), valid, n, labels, d_loss.data(),
                                               d_counts.data(), workspace.data(), nullptr);
  coco::kernels::cuda::bce_with_logits_backward(d_logits.data(), d_replaced.data(), valid, d_counts.data(), n, labels,
                                                d_dloss.data(), d_dlogits.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  if (guards_ok)
    *guards_ok =
        d_dlogits.guards_intact() && d_loss.guards_intact() && d_counts.guards_intact() && workspace.guards_intact();
  return Result{to_f64(d_loss.download()), to_f64(d_dlogits.download()), d_counts.download()};
}

template <class T>
void expect_matches(const Result& ref, const Result& got, const std::string& what) {
  EXPECT_TRUE(matches_reference(ref.loss, got.loss, kLossThreshold, "loss " + what));
  EXPECT_TRUE(matches_reference(ref.dlogits, got.dlogits, grad_threshold<T>(), "dlogits " + what));
  EXPECT_EQ(ref.counts, got.counts) << what;
}

template <class T>
class BceCuda : public ::testing::Test {};
using LogitTypes = ::testing::Types<float, __nv_bfloat16>;
TYPED_TEST_SUITE(BceCuda, LogitTypes);

TYPED_TEST(BceCuda, MatchesCpuForBothConventionsAndMasks) {
  using T = TypeParam;
  // 1, 7, 33, 130: one partial block; 3001: twelve partial blocks with a ragged last one.
  for (int64_t n : {1, 7, 33, 130, 3001}) {
    for (BceLabels labels : {BceLabels::replaced_is_one, BceLabels::original_is_one}) {
      for (bool use_mask : {true, false}) {
        Problem p = make_problem(n, 100 + static_cast<unsigned>(n));
        p.logits = round_through<T>(p.logits);
        p.use_mask = use_mask;
        if (n == 1) p.valid[0] = 1;
        const std::string what = "n=" + std::to_string(n) + " labels=" + std::to_string(static_cast<int>(labels)) +
                                 (use_mask ? " masked" : "");
        bool guards_ok = false;
        expect_matches<T>(cpu_run(p, labels, 0.6f), cuda_run<T>(p, labels, 0.6f, &guards_ok), what);
        EXPECT_TRUE(guards_ok) << what;
      }
    }
  }
}

TEST(BceCuda, F16SpotCheck) {
  // f16 keeps 11 significant bits: gradient NMSE ~1e-8; 1e-5 as for bf16.
  Problem p = make_problem(77, 9);
  p.logits = round_through<__half>(p.logits);
  expect_matches<__half>(cpu_run(p, BceLabels::original_is_one, 1.0f),
                         cuda_run<__half>(p, BceLabels::original_is_one, 1.0f), "f16");
}

TEST(BceCuda, ConventionFlipsTheTarget) {
  // One valid position, replaced, logit 2: replaced_is_one -> target 1 (softplus(-2)), correct;
  // original_is_one -> target 0 (softplus(2)), wrong.
  Problem p;
  p.logits = {2.0f, -50.0f};
  p.replaced = {1, 0};
  p.valid = {1, 0};
  const Result rtd = cuda_run<float>(p, BceLabels::replaced_is_one, 1.0f);
  const Result copy = cuda_run<float>(p, BceLabels::original_is_one, 1.0f);
  EXPECT_NEAR(rtd.loss[0], std::log1p(std::exp(-2.0)), 1e-7);
  EXPECT_NEAR(copy.loss[0], 2.0 + std::log1p(std::exp(-2.0)), 1e-6);
  EXPECT_EQ(rtd.counts, (std::vector<int32_t>{1, 1}));
  EXPECT_EQ(copy.counts, (std::vector<int32_t>{0, 1}));
  const double s = 1.0 / (1.0 + std::exp(-2.0));
  EXPECT_NEAR(rtd.dlogits[0], s - 1.0, 1e-7);
  EXPECT_NEAR(copy.dlogits[0], s, 1e-7);
  EXPECT_EQ(rtd.dlogits[1], 0.0);  // masked out
}

TEST(BceCuda, NoValidPositionGivesZeroLossAndGradient) {
  Problem p = make_problem(40, 3);
  for (uint8_t& v : p.valid) v = 0;
  const Result got = cuda_run<float>(p, BceLabels::replaced_is_one, 1.0f);
  EXPECT_EQ(got.loss[0], 0.0);
  EXPECT_EQ(got.counts, (std::vector<int32_t>{0, 0}));
  for (double g : got.dlogits) ASSERT_EQ(g, 0.0);
  Problem empty;
  empty.use_mask = false;
  const Result none = cuda_run<float>(empty, BceLabels::replaced_is_one, 1.0f);
  EXPECT_EQ(none.loss[0], 0.0);
  EXPECT_EQ(none.counts, (std::vector<int32_t>{0, 0}));
}

TEST(BceCuda, ExtremeLogitsAreStable) {
  Problem p;
  p.logits = {1e4f, -1e4f, 1e4f, -1e4f, INFINITY, -INFINITY};
  p.replaced = {1, 1, 0, 0, 1, 0};
  p.use_mask = false;
  const Result ref = cpu_run(p, BceLabels::replaced_is_one, 1.0f);
  const Result got = cuda_run<float>(p, BceLabels::replaced_is_one, 1.0f);
  expect_matches<float>(ref, got, "extreme");
  // Right with confidence: 0; wrong with confidence: 1e4 each; infinities on the right side: 0.
  EXPECT_NEAR(got.loss[0], 2e4 / 6.0, 1e-2);
  for (double g : got.dlogits) EXPECT_TRUE(std::isfinite(g));
  EXPECT_EQ(got.counts[kBceCountCorrect], 4);
}

TEST(BceCuda, NanPropagatesLikeTheReference) {
  Problem p = make_problem(20, 5);
  p.use_mask = false;
  p.logits[4] = NAN;
  const Result ref = cpu_run(p, BceLabels::original_is_one, 1.0f);
  const Result got = cuda_run<float>(p, BceLabels::original_is_one, 1.0f);
  ASSERT_TRUE(std::isnan(ref.loss[0]) && std::isnan(ref.dlogits[4]) && std::isfinite(ref.dlogits[3]));
  expect_matches<float>(ref, got, "NaN");
}

TEST(BceCuda, IsScheduleInvariant) {
  Problem p = make_problem(2500, 13);
  const int64_t n = static_cast<int64_t>(p.logits.size());
  using T = __nv_bfloat16;
  GuardedDeviceBuffer<T> d_logits(from_floats<T>(p.logits)), d_dlogits(p.logits.size());
  GuardedDeviceBuffer<uint8_t> d_replaced(p.replaced), d_valid(p.valid),
      workspace(coco::kernels::cuda::bce_workspace_bytes(n));
  GuardedDeviceBuffer<float> d_loss(1), d_dloss(std::vector<float>{1.0f});
  GuardedDeviceBuffer<int32_t> d_counts(kBceCounts);
  expect_schedule_invariant(
      [&] {
        workspace.poison(0x7F);
        d_dlogits.poison(0xFF);
        coco::kernels::cuda::bce_with_logits_forward(d_logits.data(), d_replaced.data(), d_valid.data(), n,
                                                     BceLabels::original_is_one, d_loss.data(), d_counts.data(),
                                                     workspace.data(), nullptr);
        coco::kernels::cuda::bce_with_logits_backward(d_logits.data(), d_replaced.data(), d_valid.data(),
                                                      d_counts.data(), n, BceLabels::original_is_one, d_dloss.data(),
                                                      d_dlogits.data(), nullptr);
        COCO_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<uint8_t> bytes;
        for (const auto& part : {d_loss.download_bytes(), d_counts.download_bytes(), d_dlogits.download_bytes()})
          bytes.insert(bytes.end(), part.begin(), part.end());
        return bytes;
      },
      3);
}

TEST(BceCuda, RejectsNegativeSizes) {
  float dummy = 0.0f;
  uint8_t flag = 0;
  int32_t counts[2];
  EXPECT_THROW(coco::kernels::cuda::bce_with_logits_forward(&dummy, &flag, &flag, -1, BceLabels::replaced_is_one,
                                                            &dummy, counts, nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(
      coco::kernels::cpu::bce_with_logits_forward(&dummy, &flag, &flag, -1, BceLabels::replaced_is_one, &dummy, counts),
      std::invalid_argument);
}

}  // namespace
