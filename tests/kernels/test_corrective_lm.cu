// Corrective LM loss: the CUDA kernel (emulated here) against the CPU reference for both forms at odd
// row counts (one to several strides of the block), with ignored rows and copied rows, the closed
// forms of special rows, extreme and non-finite inputs, guard bytes, and bitwise schedule invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "kernels/corrective_lm.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::kernels::CorrectiveLmForm;
using coco::testing::expect_schedule_invariant;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::to_f64;

constexpr int32_t kIgnore = -100;

// Row terms are a few f32 transcendental calls each (softplus, log1p, exp): ~1e-7 relative error per
// row, NMSE ~1e-14 against the double reference.
constexpr double kWeightThreshold = 1e-10;
// The loss is a double sum of f32 row terms divided by the row count: NMSE ~1e-14.
constexpr double kLossThreshold = 1e-10;

struct Problem {
  std::vector<float> row_ce, copy_logits;
  std::vector<int32_t> targets, samples;
};

// ce in [0, 8], copy logits in [-6, 6], every 5th row ignored, about a third of the rows copied.
Problem make_problem(int64_t rows, unsigned seed) {
  Problem p;
  p.row_ce = random_floats(static_cast<size_t>(rows), seed, 0.0f, 8.0f);
  p.copy_logits = random_floats(static_cast<size_t>(rows), seed + 1, -6.0f, 6.0f);
  std::mt19937 generator(seed + 2);
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t target = static_cast<int32_t>(generator() % 50);
    p.targets.push_back(i % 5 == 3 ? kIgnore : target);
    p.samples.push_back(generator() % 3 == 0 ? target : static_cast<int32_t>(50 + generator() % 50));
  }
  return p;
}

struct Result {
  std::vector<double> loss, weights;
};

Result cpu_run(const Problem& p, CorrectiveLmForm form) {
  const int64_t rows = static_cast<int64_t>(p.row_ce.size());
  std::vector<float> loss(1), weights(p.row_ce.size());
  coco::kernels::cpu::corrective_lm_loss(p.row_ce.data(), p.copy_logits.data(), p.targets.data(), p.samples.data(),
                                         rows, kIgnore, form, loss.data(), weights.data());
  return {to_f64(loss), to_f64(weights)};
}

Result cuda_run(const Problem& p, CorrectiveLmForm form, bool* guards_ok = nullptr,
                std::vector<uint8_t>* raw = nullptr) {
  const int64_t rows = static_cast<int64_t>(p.row_ce.size());
  GuardedDeviceBuffer<float> ce(p.row_ce), copy(p.copy_logits), loss(1), weights(p.row_ce.size());
  GuardedDeviceBuffer<int32_t> targets(p.targets), samples(p.samples);
  loss.poison();
  weights.poison();
  coco::kernels::cuda::corrective_lm_loss(ce.data(), copy.data(), targets.data(), samples.data(), rows, kIgnore, form,
                                          loss.data(), weights.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  if (guards_ok) *guards_ok = loss.guards_intact() && weights.guards_intact();
  if (raw) {
    *raw = loss.download_bytes();
    const std::vector<uint8_t> w = weights.download_bytes();
    raw->insert(raw->end(), w.begin(), w.end());
  }
  return {to_f64(loss.download()), to_f64(weights.download())};
}

const char* name_of(CorrectiveLmForm form) { return form == CorrectiveLmForm::code ? "code" : "paper"; }

TEST(CorrectiveLmCuda, MatchesCpuForBothForms) {
  // 1, 7, 33, 130: fewer rows than threads; 3001: eleven strides of the 256-thread block with a ragged end.
  for (int64_t rows : {1, 7, 33, 130, 3001}) {
    for (CorrectiveLmForm form : {CorrectiveLmForm::code, CorrectiveLmForm::paper}) {
      const Problem p = make_problem(rows, 20 + static_cast<unsigned>(rows));
      const std::string what = std::string(name_of(form)) + " rows=" + std::to_string(rows);
      bool guards_ok = false;
      const Result ref = cpu_run(p, form), got = cuda_run(p, form, &guards_ok);
      EXPECT_TRUE(matches_reference(ref.loss, got.loss, kLossThreshold, "loss " + what));
      EXPECT_TRUE(matches_reference(ref.weights, got.weights, kWeightThreshold, "weights " + what));
      EXPECT_TRUE(guards_ok) << what;
    }
  }
}

TEST(CorrectiveLmCuda, ClosedFormsOfSpecialRows) {
  // Row 0: replaced (sample != target): paper loss ce + softplus(c), weight 1.
  // Row 1: copied: paper loss -log(p1 + p0 e^-ce), weight p0 e^-ce / (p1 + p0 e^-ce).
  // Row 2: ignored: weight 0, not in the mean.
  Problem p;
  p.row_ce = {2.0f, 1.5f, 9.0f};
  p.copy_logits = {0.5f, -1.0f, 3.0f};
  p.targets = {7, 8, kIgnore};
  p.samples = {9, 8, 1};
  const Result paper = cuda_run(p, CorrectiveLmForm::paper);
  const double p1 = 1.0 / (1.0 + std::exp(1.0)), p0 = 1.0 - p1;  // row 1, c = -1
  const double mix = p1 + p0 * std::exp(-1.5);
  const double row0 = 2.0 + std::log1p(std::exp(0.5));
  EXPECT_NEAR(paper.loss[0], (row0 - std::log(mix)) / 2.0, 1e-6);
  EXPECT_EQ(paper.weights[0], 1.0);
  EXPECT_NEAR(paper.weights[1], p0 * std::exp(-1.5) / mix, 1e-6);
  EXPECT_EQ(paper.weights[2], 0.0);
  const Result code = cuda_run(p, CorrectiveLmForm::code);
  const double q0 = 1.0 / (1.0 + std::exp(0.5));  // row 0's P(replaced)
  EXPECT_NEAR(code.loss[0], (q0 * 2.0 + p0 * 1.5) / 2.0, 1e-6);
  EXPECT_NEAR(code.weights[0], q0, 1e-7);
  EXPECT_NEAR(code.weights[1], p0, 1e-7);
  EXPECT_EQ(code.weights[2], 0.0);
}

TEST(CorrectiveLmCuda, ExtremeInputsStayFinite) {
  // Copy logits far beyond exp's range and a target probability of e^-200 (ce = 200): the log-space
  // evaluation keeps the paper form finite where p1, p0 or p_t underflow in f32.
  Problem p;
  p.row_ce = {200.0f, 200.0f, 0.0f, 0.0f, 50.0f, INFINITY, INFINITY};
  p.copy_logits = {-200.0f, 200.0f, -200.0f, 200.0f, 0.0f, 4.0f, 4.0f};
  p.targets = {1, 1, 1, 1, 1, 1, 1};
  p.samples = {1, 2, 1, 1, 1, 1, 2};
  const Result ref = cpu_run(p, CorrectiveLmForm::paper), got = cuda_run(p, CorrectiveLmForm::paper);
  EXPECT_TRUE(matches_reference(ref.weights, got.weights, kWeightThreshold, "extreme weights"));
  for (size_t i = 0; i + 1 < p.row_ce.size(); ++i) EXPECT_TRUE(std::isfinite(got.weights[i])) << i;
  // Row 0: p1 = e^-200, p_t = e^-200: -log(e^-200 + e^-200) = 200 - log 2.
  // Row 5: copied with p_t = 0: -log(p1) = softplus(-4), weight 0.
  // Row 6: replaced with p_t = 0: infinite loss, weight 1.
  EXPECT_EQ(got.weights[5], 0.0);
  EXPECT_EQ(got.weights[6], 1.0);
  EXPECT_TRUE(std::isinf(got.loss[0]) && got.loss[0] > 0);
  p.row_ce.pop_back();
  p.copy_logits.pop_back();
  p.targets.pop_back();
  p.samples.pop_back();
  const Result finite = cuda_run(p, CorrectiveLmForm::paper), finite_ref = cpu_run(p, CorrectiveLmForm::paper);
  EXPECT_TRUE(matches_reference(finite_ref.loss, finite.loss, kLossThreshold, "extreme loss"));
  const double expected = ((200.0 - std::log(2.0)) + (200.0 + 200.0) + 0.0 + 0.0 +
                           -std::log(0.5 + 0.5 * std::exp(-50.0)) + std::log1p(std::exp(-4.0))) /
                          6.0;
  EXPECT_NEAR(finite.loss[0], expected, 1e-4);
}

TEST(CorrectiveLmCuda, NanPropagatesLikeTheReference) {
  for (CorrectiveLmForm form : {CorrectiveLmForm::code, CorrectiveLmForm::paper}) {
    Problem p = make_problem(40, 7);
    p.row_ce[4] = NAN;
    p.copy_logits[11] = NAN;
    p.targets[4] = 3;
    p.targets[11] = 3;
    const Result ref = cpu_run(p, form), got = cuda_run(p, form);
    EXPECT_TRUE(std::isnan(got.loss[0])) << name_of(form);
    EXPECT_TRUE(matches_reference(ref.weights, got.weights, kWeightThreshold, std::string("nan ") + name_of(form)));
    // The code form's weight is P(replaced): NaN with its copy logit. A replaced row's paper weight is
    // 1 whatever ce and c are.
    if (form == CorrectiveLmForm::code) {
      EXPECT_TRUE(std::isnan(got.weights[11]));
    }
  }
}

TEST(CorrectiveLmCuda, NoContributingRowGivesZero) {
  Problem p = make_problem(9, 3);
  for (int32_t& t : p.targets) t = kIgnore;
  for (CorrectiveLmForm form : {CorrectiveLmForm::code, CorrectiveLmForm::paper}) {
    const Result got = cuda_run(p, form);
    EXPECT_EQ(got.loss[0], 0.0);
    for (double w : got.weights) EXPECT_EQ(w, 0.0);
  }
  const Result empty = cuda_run(Problem{}, CorrectiveLmForm::paper);
  EXPECT_EQ(empty.loss[0], 0.0);
}

TEST(CorrectiveLmCuda, BitwiseIdenticalAcrossSchedules) {
  const Problem p = make_problem(777, 11);
  for (CorrectiveLmForm form : {CorrectiveLmForm::code, CorrectiveLmForm::paper}) {
    expect_schedule_invariant([&] {
      std::vector<uint8_t> raw;
      cuda_run(p, form, nullptr, &raw);
      return raw;
    });
  }
}

TEST(CorrectiveLmCuda, NegativeRowCountIsRejected) {
  float value = 0.0f;
  int32_t id = 0;
  EXPECT_THROW(coco::kernels::cuda::corrective_lm_loss(&value, &value, &id, &id, -1, kIgnore, CorrectiveLmForm::paper,
                                                       &value, &value, nullptr),
               std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::corrective_lm_loss(&value, &value, &id, &id, -1, kIgnore, CorrectiveLmForm::paper,
                                                      &value, &value),
               std::invalid_argument);
}

}  // namespace
