// Sequence contrastive losses (InfoNCE with a learnable log-scale, NT-Xent): the CUDA kernels
// (emulated here) against the CPU reference at odd batch sizes and widths, f32 / bf16 (f16 spot
// check), accuracy counts, hand-checked small cases, NaN propagation, and bitwise schedule
// invariance.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#include "kernels/contrastive.h"
#include "tests/common/kernel_check.h"
#include "engine/simt/schedule_oracle.h"

namespace {

using coco::testing::expect_schedule_invariant;

using coco::kernels::contrastive_saved_size;
using coco::kernels::ContrastiveKind;
using coco::kernels::kContrastiveCountAnchors;
using coco::kernels::kContrastiveCountCorrect;
using coco::kernels::kContrastiveCounts;
using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::matches_reference;
using coco::testing::random_floats;
using coco::testing::round_through;
using coco::testing::to_f64;

// Similarities, log-sum-exps, the loss and dtheta are f32 on the device with f32 dot products over
// <= 768 terms and sums over <= 2B terms, against double sums: NMSE ~1e-13.
constexpr double kStatsThreshold = 1e-10;
// f32 da/db: f32 sums over <= 2B terms of f32 products: NMSE ~1e-13.
constexpr double kF32GradThreshold = 1e-10;
// bf16 outputs: one round-to-nearest at unit roundoff 2^-8 per element: NMSE ~5e-6 over many
// elements, at most 1.5e-5 for a single element (several cases have 1 to 5 outputs).
constexpr double kBf16GradThreshold = 2e-5;

template <class T>
constexpr double grad_threshold() {
  return std::is_same_v<T, float> ? kF32GradThreshold : kBf16GradThreshold;
}

struct Case {
  int64_t batch, dim;
};
std::string label(const Case& c, ContrastiveKind kind) {
  return std::string(kind == ContrastiveKind::info_nce ? "info_nce" : "nt_xent") + " B=" + std::to_string(c.batch) +
         " D=" + std::to_string(c.dim);
}

std::vector<float> normalized_rows(std::vector<float> x, int64_t dim) {
  for (size_t r = 0; r < x.size() / static_cast<size_t>(dim); ++r) {
    double sq = 0.0;
    for (int64_t d = 0; d < dim; ++d) sq += double(x[r * dim + d]) * x[r * dim + d];
    const double inv = sq > 0 ? 1.0 / std::sqrt(sq) : 1.0;
    for (int64_t d = 0; d < dim; ++d) x[r * dim + d] = static_cast<float>(x[r * dim + d] * inv);
  }
  return x;
}

struct Views {
  std::vector<float> a, b;
};

// b_i is a noisy copy of a_i, so most (not all) anchors rank their positive first.
Views make_views(const Case& c, unsigned seed) {
  const size_t n = static_cast<size_t>(c.batch * c.dim);
  Views v;
  v.a = normalized_rows(random_floats(n, seed), c.dim);
  const std::vector<float> noise = random_floats(n, seed + 1);
  v.b.resize(n);
  for (size_t i = 0; i < n; ++i) v.b[i] = v.a[i] + 0.08f * noise[i] * std::sqrt(static_cast<float>(c.dim));
  v.b = normalized_rows(v.b, c.dim);
  return v;
}

struct Result {
  std::vector<double> loss, saved, da, db, dtheta;
  std::vector<int32_t> counts;
};

Result cpu_run(ContrastiveKind kind, const Case& c, const Views& v, float theta_or_tau, float dloss) {
  const size_t n = v.a.size();
  std::vector<float> loss(1), saved(static_cast<size_t>(contrastive_saved_size(kind, c.batch))), da(n), db(n),
      dtheta(1, 0.0f);
  Result r;
  r.counts.assign(kContrastiveCounts, -1);
  if (kind == ContrastiveKind::info_nce) {
    coco::kernels::cpu::info_nce_forward(v.a.data(), v.b.data(), &theta_or_tau, c.batch, c.dim, loss.data(),
                                         saved.data(), r.counts.data());
    coco::kernels::cpu::info_nce_backward(v.a.data(), v.b.data(), &theta_or_tau, saved.data(), c.batch, c.dim, &dloss,
                                          da.data(), db.data(), dtheta.data());
  } else {
    coco::kernels::cpu::nt_xent_forward(v.a.data(), v.b.data(), c.batch, c.dim, theta_or_tau, loss.data(), saved.data(),
                                        r.counts.data());
    coco::kernels::cpu::nt_xent_backward(v.a.data(), v.b.data(), saved.data(), c.batch, c.dim, theta_or_tau, &dloss,
                                         da.data(), db.data());
  }
  r.loss = to_f64(loss);
  r.saved = to_f64(saved);
  r.da = to_f64(da);
  r.db = to_f64(db);
  r.dtheta = to_f64(dtheta);
  return r;
}

template <class T>
Result cuda_run(ContrastiveKind kind, const Case& c, const Views& v, float theta_or_tau, float dloss,
                bool* guards_ok = nullptr) {
  const size_t n = v.a.size();
  GuardedDeviceBuffer<T> d_a(from_floats<T>(v.a)), d_b(from_floats<T>(v.b)), d_da(n), d_db(n);
  GuardedDeviceBuffer<float> d_theta(std::vector<float>{theta_or_tau}), d_loss(1),
      d_saved(static_cast<size_t>(contrastive_saved_size(kind, c.batch))), d_dloss(std::vector<float>{dloss}),
      d_dtheta(std::vector<float>{0.0f}),
      workspace(static_cast<size_t>(coco::kernels::cuda::contrastive_workspace_size(kind, c.batch)));
  GuardedDeviceBuffer<int32_t> d_counts(kContrastiveCounts);
  for (auto* buffer : {&d_loss, &d_saved, &workspace}) buffer->poison();
  d_da.poison();
  d_db.poison();
  d_counts.poison();
  if (kind == ContrastiveKind::info_nce) {
    coco::kernels::cuda::info_nce_forward(d_a.data(), d_b.data(), d_theta.data(), c.batch, c.dim, d_loss.data(),
                                          d_saved.data(), d_counts.data(), workspace.data(), nullptr);
    d_dtheta.poison();
    coco::kernels::cuda::info_nce_backward(d_a.data(), d_b.data(), d_theta.data(), d_saved.data(), c.batch, c.dim,
                                           d_dloss.data(), d_da.data(), d_db.data(), d_dtheta.data(), workspace.data(),
                                           nullptr);
  } else {
    coco::kernels::cuda::nt_xent_forward(d_a.data(), d_b.data(), c.batch, c.dim, theta_or_tau, d_loss.data(),
                                         d_saved.data(), d_counts.data(), workspace.data(), nullptr);
    coco::kernels::cuda::nt_xent_backward(d_a.data(), d_b.data(), d_saved.data(), c.batch, c.dim, theta_or_tau,
                                          d_dloss.data(), d_da.data(), d_db.data(), workspace.data(), nullptr);
  }
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  if (guards_ok)
    *guards_ok = d_da.guards_intact() && d_db.guards_intact() && d_loss.guards_intact() && d_saved.guards_intact() &&
                 d_dtheta.guards_intact() && workspace.guards_intact() && d_counts.guards_intact();
  return Result{to_f64(d_loss.download()), to_f64(d_saved.download()),  to_f64(d_da.download()),
                to_f64(d_db.download()),   to_f64(d_dtheta.download()), d_counts.download()};
}

template <class T>
void expect_matches(const Result& ref, const Result& got, const std::string& what) {
  EXPECT_TRUE(matches_reference(ref.loss, got.loss, kStatsThreshold, "loss " + what));
  EXPECT_TRUE(matches_reference(ref.saved, got.saved, kStatsThreshold, "saved S/lse " + what));
  EXPECT_TRUE(matches_reference(ref.da, got.da, grad_threshold<T>(), "da " + what));
  EXPECT_TRUE(matches_reference(ref.db, got.db, grad_threshold<T>(), "db " + what));
  EXPECT_TRUE(matches_reference(ref.dtheta, got.dtheta, kStatsThreshold, "dtheta " + what));
  EXPECT_EQ(ref.counts, got.counts) << what;
}

const Case kCases[] = {{1, 5}, {2, 7}, {7, 33}, {33, 130}, {17, 768}, {130, 17}};

template <class T>
class ContrastiveCuda : public ::testing::Test {};
using ActivationTypes = ::testing::Types<float, __nv_bfloat16>;
TYPED_TEST_SUITE(ContrastiveCuda, ActivationTypes);

TYPED_TEST(ContrastiveCuda, InfoNceMatchesCpu) {
  using T = TypeParam;
  for (const Case& c : kCases) {
    Views v = make_views(c, 40 + static_cast<unsigned>(c.batch));
    v.a = round_through<T>(v.a);
    v.b = round_through<T>(v.b);
    for (float theta : {1.0f, 2.5f}) {
      const std::string what = label(c, ContrastiveKind::info_nce) + " theta=" + std::to_string(theta);
      bool guards_ok = false;
      expect_matches<T>(cpu_run(ContrastiveKind::info_nce, c, v, theta, 0.8f),
                        cuda_run<T>(ContrastiveKind::info_nce, c, v, theta, 0.8f, &guards_ok), what);
      EXPECT_TRUE(guards_ok) << what;
    }
  }
}

TYPED_TEST(ContrastiveCuda, NtXentMatchesCpu) {
  using T = TypeParam;
  for (const Case& c : kCases) {
    Views v = make_views(c, 70 + static_cast<unsigned>(c.batch));
    v.a = round_through<T>(v.a);
    v.b = round_through<T>(v.b);
    for (float tau : {1.0f, 0.1f}) {
      const std::string what = label(c, ContrastiveKind::nt_xent) + " tau=" + std::to_string(tau);
      bool guards_ok = false;
      expect_matches<T>(cpu_run(ContrastiveKind::nt_xent, c, v, tau, 1.3f),
                        cuda_run<T>(ContrastiveKind::nt_xent, c, v, tau, 1.3f, &guards_ok), what);
      EXPECT_TRUE(guards_ok) << what;
    }
  }
}

TEST(ContrastiveCuda, F16SpotCheck) {
  // f16 keeps 11 significant bits: gradient NMSE ~1e-8; 1e-5 as for bf16.
  const Case c{9, 40};
  Views v = make_views(c, 5);
  v.a = round_through<__half>(v.a);
  v.b = round_through<__half>(v.b);
  expect_matches<__half>(cpu_run(ContrastiveKind::info_nce, c, v, 1.0f, 1.0f),
                         cuda_run<__half>(ContrastiveKind::info_nce, c, v, 1.0f, 1.0f), "f16 info_nce");
  expect_matches<__half>(cpu_run(ContrastiveKind::nt_xent, c, v, 1.0f, 1.0f),
                         cuda_run<__half>(ContrastiveKind::nt_xent, c, v, 1.0f, 1.0f), "f16 nt_xent");
}

TEST(ContrastiveCuda, IdenticalOrthogonalViewsAreAllCorrect) {
  // a = b = the first B unit vectors: every positive has cos 1, every negative cos 0.
  const Case c{3, 4};
  Views v;
  v.a.assign(12, 0.0f);
  for (int i = 0; i < 3; ++i) v.a[static_cast<size_t>(i * 4 + i)] = 1.0f;
  v.b = v.a;
  const Result info = cuda_run<float>(ContrastiveKind::info_nce, c, v, 0.0f, 1.0f);
  // theta = 0: S = I; each anchor: log(e + 2) - 1.
  EXPECT_NEAR(info.loss[0], std::log(std::exp(1.0) + 2.0) - 1.0, 1e-6);
  EXPECT_EQ(info.counts, (std::vector<int32_t>{6, 6}));
  const Result nt = cuda_run<float>(ContrastiveKind::nt_xent, c, v, 1.0f, 1.0f);
  // NT-Xent: candidates are the other 5 rows, the positive at cos 1, four negatives at 0.
  EXPECT_NEAR(nt.loss[0], std::log(std::exp(1.0) + 4.0) - 1.0, 1e-6);
  EXPECT_EQ(nt.counts, (std::vector<int32_t>{6, 6}));
}

TEST(ContrastiveCuda, SingleSequenceHasZeroLossAndGradient) {
  const Case c{1, 6};
  const Views v = make_views(c, 1);
  for (ContrastiveKind kind : {ContrastiveKind::info_nce, ContrastiveKind::nt_xent}) {
    const Result got = cuda_run<float>(kind, c, v, 1.0f, 1.0f);
    EXPECT_EQ(got.loss[0], 0.0);
    EXPECT_EQ(got.counts, (std::vector<int32_t>{2, 2}));
    for (double g : got.da) EXPECT_EQ(g, 0.0);
    for (double g : got.db) EXPECT_EQ(g, 0.0);
  }
}

TEST(ContrastiveCuda, NanPropagatesLikeTheReference) {
  const Case c{5, 9};
  Views v = make_views(c, 2);
  v.a[2 * 9 + 4] = NAN;
  for (ContrastiveKind kind : {ContrastiveKind::info_nce, ContrastiveKind::nt_xent}) {
    const Result ref = cpu_run(kind, c, v, 1.0f, 1.0f);
    ASSERT_TRUE(std::isnan(ref.loss[0]));
    const Result got = cuda_run<float>(kind, c, v, 1.0f, 1.0f);
    EXPECT_TRUE(matches_reference(ref.loss, got.loss, kStatsThreshold, "loss with NaN"));
    EXPECT_TRUE(matches_reference(ref.saved, got.saved, kStatsThreshold, "saved with NaN"));
    EXPECT_TRUE(matches_reference(ref.da, got.da, kF32GradThreshold, "da with NaN"));
    EXPECT_TRUE(matches_reference(ref.db, got.db, kF32GradThreshold, "db with NaN"));
  }
}

TEST(ContrastiveCuda, IsScheduleInvariant) {
  using T = __nv_bfloat16;
  const Case c{21, 50};
  const Views v = make_views(c, 9);
  const size_t n = v.a.size();
  GuardedDeviceBuffer<T> d_a(from_floats<T>(v.a)), d_b(from_floats<T>(v.b)), d_da(n), d_db(n), d_da2(n), d_db2(n);
  GuardedDeviceBuffer<float> d_theta(std::vector<float>{1.0f}), d_loss(1), d_loss2(1),
      d_saved(static_cast<size_t>(contrastive_saved_size(ContrastiveKind::info_nce, c.batch))),
      d_saved2(static_cast<size_t>(contrastive_saved_size(ContrastiveKind::nt_xent, c.batch))),
      d_dloss(std::vector<float>{1.0f}), d_dtheta(1),
      workspace(
          static_cast<size_t>(coco::kernels::cuda::contrastive_workspace_size(ContrastiveKind::nt_xent, c.batch)));
  GuardedDeviceBuffer<int32_t> d_counts(kContrastiveCounts), d_counts2(kContrastiveCounts);
  expect_schedule_invariant(
      [&] {
        workspace.poison(0x7F);
        for (auto* buffer : {&d_da, &d_db, &d_da2, &d_db2}) buffer->poison(0xFF);
        coco::kernels::cuda::info_nce_forward(d_a.data(), d_b.data(), d_theta.data(), c.batch, c.dim, d_loss.data(),
                                              d_saved.data(), d_counts.data(), workspace.data(), nullptr);
        coco::kernels::cuda::info_nce_backward(d_a.data(), d_b.data(), d_theta.data(), d_saved.data(), c.batch, c.dim,
                                               d_dloss.data(), d_da.data(), d_db.data(), d_dtheta.data(),
                                               workspace.data(), nullptr);
        coco::kernels::cuda::nt_xent_forward(d_a.data(), d_b.data(), c.batch, c.dim, 0.5f, d_loss2.data(),
                                             d_saved2.data(), d_counts2.data(), workspace.data(), nullptr);
        coco::kernels::cuda::nt_xent_backward(d_a.data(), d_b.data(), d_saved2.data(), c.batch, c.dim, 0.5f,
                                              d_dloss.data(), d_da2.data(), d_db2.data(), workspace.data(), nullptr);
        COCO_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<uint8_t> bytes;
        for (const auto& part :
             {d_loss.download_bytes(), d_saved.download_bytes(), d_counts.download_bytes(), d_da.download_bytes(),
              d_db.download_bytes(), d_dtheta.download_bytes(), d_loss2.download_bytes(), d_saved2.download_bytes(),
              d_counts2.download_bytes(), d_da2.download_bytes(), d_db2.download_bytes()})
          bytes.insert(bytes.end(), part.begin(), part.end());
        return bytes;
      },
      3);
}

TEST(ContrastiveCuda, RejectsBadArguments) {
  float dummy = 0.0f;
  int32_t counts[2];
  EXPECT_THROW(
      coco::kernels::cuda::info_nce_forward(&dummy, &dummy, &dummy, 0, 4, &dummy, &dummy, counts, &dummy, nullptr),
      std::invalid_argument);
  EXPECT_THROW(
      coco::kernels::cuda::nt_xent_forward(&dummy, &dummy, 2, 4, 0.0f, &dummy, &dummy, counts, &dummy, nullptr),
      std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::nt_xent_forward(&dummy, &dummy, 2, 4, -1.0, &dummy, &dummy, counts),
               std::invalid_argument);
}

}  // namespace
