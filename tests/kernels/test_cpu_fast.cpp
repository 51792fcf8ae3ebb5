// The fast f32 CPU paths (kernels/cpu_fast.h) against the plain references of kernels/*.cpp: bitwise
// where the header promises it (dropout, masks, Gumbel sampling), within stated bounds otherwise
// (erf against libm, GELU and the linear epilogue against the f64 reference, the gradient norm);
// every result bitwise the same for 1, 2 and 3 threads. Also the CPU backend's start-up facts: the
// BLAS kernel matches the CPU's vector units, and OpenBLAS's kernel can be re-selected.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "engine/runtime/cpu_backend.h"
#include "kernels/attention.h"
#include "kernels/cpu_fast.h"
#include "kernels/cross_entropy.h"
#include "kernels/dropout.h"
#include "kernels/gelu.h"
#include "kernels/layernorm.h"
#include "kernels/loss_scale.h"
#include "kernels/matmul.h"
#include "kernels/sampling.h"

namespace coco::kernels {
namespace {

namespace cpu_backend = runtime::cpu;

std::vector<float> random_floats(size_t n, float scale, uint32_t seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = normal(generator);
  return v;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs `compute` at 1, 2 and 3 threads and requires bitwise equal results; restores the thread count.
template <class Result>
Result same_for_every_thread_count(const std::function<Result()>& compute) {
  const int saved = cpu_backend::threads();
  cpu_backend::set_threads(1);
  const Result one = compute();
  for (int threads : {2, 3}) {
    cpu_backend::set_threads(threads);
    const Result other = compute();
    EXPECT_TRUE(std::memcmp(&one, &other, sizeof(Result)) == 0 || one == other) << threads << " threads";
  }
  cpu_backend::set_threads(saved);
  return one;
}

TEST(CpuFast, ErfIsWithin5e7OfLibm) {
  double worst = 0;
  for (float x = -6.0f; x <= 6.0f; x += 1.0f / 4096)
    worst = std::max(worst, std::fabs(cpu_fast::erf(x) - std::erf(double(x))));
  EXPECT_LT(worst, 5e-7);
  EXPECT_EQ(cpu_fast::erf(0.0f), 0.0f);
  EXPECT_EQ(cpu_fast::erf(30.0f), 1.0f);
  EXPECT_EQ(cpu_fast::erf(-std::numeric_limits<float>::infinity()), -1.0f);
  EXPECT_TRUE(std::isnan(cpu_fast::erf(NAN)));
}

TEST(CpuFast, GeluMatchesTheF64ReferenceForBothForms) {
  // A sweep over [-12, 12] plus the special values; bound: 2e-6 * max(1, |x|) absolute (the erf error
  // times |x| / 2, plus f32 rounding), against the f64 reference of kernels/gelu.cpp.
  std::vector<float> x;
  for (float v = -12.0f; v <= 12.0f; v += 1.0f / 512) x.push_back(v);
  const size_t n = x.size();
  x.insert(x.end(), {0.0f, -0.0f, 1e-30f, -1e-30f, 40.0f, -40.0f});
  std::vector<double> xd(x.begin(), x.end()), ref(x.size()), dref(x.size()), ones(x.size(), 1.0);
  for (GeluApproximation form : {GeluApproximation::erf, GeluApproximation::tanh}) {
    cpu::gelu_forward<double>(ref.data(), xd.data(), static_cast<int64_t>(x.size()), form);
    cpu::gelu_backward<double>(dref.data(), ones.data(), xd.data(), static_cast<int64_t>(x.size()), form);
    std::vector<float> out(x.size()), dx(x.size()), dy(x.size(), 1.0f);
    cpu_fast::gelu_forward(out.data(), x.data(), static_cast<int64_t>(x.size()), form);
    cpu_fast::gelu_backward(dx.data(), dy.data(), x.data(), static_cast<int64_t>(x.size()), form);
    for (size_t i = 0; i < x.size(); ++i) {
      const double bound = 2e-6 * std::max(1.0, std::fabs(xd[i]));
      EXPECT_NEAR(out[i], ref[i], bound) << "gelu x = " << x[i];
      EXPECT_NEAR(dx[i], dref[i], bound) << "gelu' x = " << x[i];
    }
    (void)n;
    // Special values as the reference: NaN propagates, gelu(+inf) = +inf, gelu(-inf) = NaN.
    const float specials[] = {NAN, INFINITY, -INFINITY};
    float got[3];
    cpu_fast::gelu_forward(got, specials, 3, form);
    EXPECT_TRUE(std::isnan(got[0]));
    EXPECT_EQ(got[1], INFINITY);
    EXPECT_TRUE(std::isnan(got[2]));
  }
}

TEST(CpuFast, LinearForwardWithBiasAndGeluMatchesTheReference) {
  const int64_t rows = 37, in = 19, out = 301;
  const std::vector<float> x = random_floats(rows * in, 1.0f, 1), W = random_floats(out * in, 0.3f, 2),
                           bias = random_floats(out, 0.5f, 3);
  for (Activation act : {Activation::none, Activation::gelu_erf, Activation::gelu_tanh}) {
    std::vector<float> y_ref(rows * out), pre_ref(rows * out), y(rows * out), pre(rows * out);
    cpu::linear_forward<float>(x.data(), W.data(), bias.data(), act, rows, in, out, y_ref.data(), pre_ref.data());
    cpu_fast::linear_forward(x.data(), W.data(), bias.data(), act, rows, in, out, y.data(), pre.data());
    for (int64_t i = 0; i < rows * out; ++i) {
      EXPECT_NEAR(y[i], y_ref[i], 2e-6 * std::max(1.0f, std::fabs(pre_ref[i]))) << activation_name(act) << " " << i;
      if (act != Activation::none) {
        EXPECT_EQ(pre[i], pre_ref[i]) << i;  // bias add: the same f32 operation
      }
    }
    std::vector<float> dy = random_floats(rows * out, 1.0f, 4), d_ref(rows * out), d(rows * out);
    cpu::activation_backward<float>(act, dy.data(), pre_ref.data(), d_ref.data(), rows * out);
    cpu_fast::activation_backward(act, dy.data(), pre_ref.data(), d.data(), rows * out);
    for (int64_t i = 0; i < rows * out; ++i)
      EXPECT_NEAR(d[i], d_ref[i], 4e-6 * std::max(1.0f, std::fabs(dy[i] * pre_ref[i]))) << activation_name(act);
    const std::vector<float> bits = same_for_every_thread_count<std::vector<float>>([&] {
      std::vector<float> r(rows * out);
      cpu_fast::linear_forward(x.data(), W.data(), bias.data(), act, rows, in, out, r.data(), nullptr);
      return r;
    });
    EXPECT_TRUE(same_bits(bits, y));
  }
}

TEST(CpuFast, DropoutAndMasksEqualTheReferenceBitwiseAtEveryThreadCount) {
  const rng::Stream stream(1234, 7, rng::Purpose::dropout_residual, 3);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{15}, int64_t{17}, int64_t{40000}, int64_t{100003}}) {
    for (uint64_t offset : {uint64_t{0}, uint64_t{5}, (uint64_t{1} << 32) - 3}) {
      const std::vector<float> x = random_floats(static_cast<size_t>(n), 1.0f, 9);
      std::vector<float> ref(x.size());
      cpu::dropout_apply<float>(ref.data(), x.data(), n, 0.1, stream, offset);
      const std::vector<float> fast = same_for_every_thread_count<std::vector<float>>([&] {
        std::vector<float> r(x.size());
        cpu_fast::dropout_apply(r.data(), x.data(), n, 0.1, stream, offset);
        return r;
      });
      EXPECT_TRUE(same_bits(fast, ref)) << "n " << n << " offset " << offset;
      std::vector<uint8_t> mask_ref(x.size()), mask(x.size()), keep(x.size());
      cpu::dropout_mask(mask_ref.data(), n, 0.25, stream, offset);
      cpu_fast::dropout_mask(mask.data(), n, 0.25, stream, offset);
      EXPECT_EQ(mask, mask_ref) << "n " << n;
      cpu_fast::attention_keep_mask(stream, 0.25f, offset, n, keep.data());
      for (int64_t e = 0; e < n; ++e)
        ASSERT_EQ(keep[e], detail::dropout_keeps(stream, offset + static_cast<uint64_t>(e), 0.25f) ? 1 : 0) << e;
    }
  }
  float out = 0;
  EXPECT_THROW(cpu_fast::dropout_apply(&out, &out, 1, 1.5, stream, 0), std::invalid_argument);
}

TEST(CpuFast, GumbelSamplingEqualsTheReferenceBitwise) {
  const rng::Stream stream(99, 3, rng::Purpose::gumbel_sample);
  for (int64_t V : {int64_t{1}, int64_t{7}, int64_t{64}, int64_t{8192}, int64_t{30522}}) {
    const int64_t N = 23;
    std::vector<float> logits = random_floats(static_cast<size_t>(N * V), 2.0f, 5);
    if (V > 7) logits[3 * V + 5] = NAN;  // NaN wins the argmax in both
    std::vector<int32_t> ref(N), fast(N);
    cpu::gumbel_sample(logits.data(), N, V, 1.0f, stream, ref.data());
    for (int threads : {1, 2, 3}) {
      cpu_backend::set_threads(threads);
      cpu_fast::gumbel_sample(logits.data(), N, V, 1.0f, stream, fast.data());
      EXPECT_EQ(fast, ref) << "V " << V << ", " << threads << " threads";
    }
    cpu::gumbel_sample(logits.data(), N, V, 0.7f, stream, ref.data());
    cpu_fast::gumbel_sample(logits.data(), N, V, 0.7f, stream, fast.data());
    EXPECT_EQ(fast, ref) << "temperature 0.7, V " << V;
  }
  cpu_backend::set_threads(0);
  int32_t sample = 0;
  float logit = 0;
  EXPECT_THROW(cpu_fast::gumbel_sample(&logit, 1, 1, 0.0f, stream, &sample), std::invalid_argument);
}

TEST(CpuFast, GradientNormAndNonFiniteCheck) {
  const std::vector<float> a = random_floats(100003, 1.0f, 11), b = random_floats(5, 3.0f, 12);
  std::vector<double> c(40000, 0.5);
  std::vector<__nv_bfloat16> d(333);
  for (size_t i = 0; i < d.size(); ++i) d[i] = __float2bfloat16(0.01f * static_cast<float>(i));
  std::vector<NormTensorDesc> descs = {{a.data(), static_cast<int64_t>(a.size()), 0, DType::f32},
                                       {b.data(), 5, 0, DType::f32},
                                       {nullptr, 0, 0, DType::f32},
                                       {c.data(), static_cast<int64_t>(c.size()), 0, DType::f64},
                                       {d.data(), static_cast<int64_t>(d.size()), 0, DType::bf16}};
  const double ref = cpu::sum_of_squares(descs);
  const double fast = same_for_every_thread_count<double>([&] { return cpu_fast::sum_of_squares(descs); });
  EXPECT_NEAR(fast, ref, 1e-12 * ref);
  EXPECT_FALSE(cpu_fast::any_nonfinite(descs));
  EXPECT_EQ(cpu_fast::sum_of_squares({}), 0.0);

  std::vector<float> poisoned = a;
  for (size_t where : {size_t{0}, size_t{16383}, size_t{16384}, size_t{100002}}) {
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      poisoned = a;
      poisoned[where] = bad;
      std::vector<NormTensorDesc> p = descs;
      p[0].data = poisoned.data();
      EXPECT_TRUE(cpu_fast::any_nonfinite(p)) << where;
      EXPECT_EQ(cpu::any_nonfinite(p), true);
      EXPECT_FALSE(std::isfinite(cpu_fast::sum_of_squares(p))) << where;
    }
  }
  std::vector<__half> h(10, __float2half(1.0f));
  h[7] = __float2half(INFINITY);
  EXPECT_TRUE(cpu_fast::any_nonfinite({{h.data(), 10, 0, DType::f16}}));
  std::vector<NormTensorDesc> bad = {{a.data(), -1, 0, DType::f32}};
  EXPECT_THROW(cpu_fast::sum_of_squares(bad), std::invalid_argument);
  bad = {{a.data(), 3, 0, DType::i32}};
  EXPECT_THROW(cpu_fast::any_nonfinite(bad), std::invalid_argument);
}

// Relative closeness of the fast path to the f64-accumulating reference, element by element.
void expect_close(const std::vector<float>& fast, const std::vector<float>& ref, double tolerance, const char* what) {
  ASSERT_EQ(fast.size(), ref.size()) << what;
  for (size_t i = 0; i < ref.size(); ++i)
    ASSERT_NEAR(fast[i], ref[i], tolerance * (1.0 + std::fabs(ref[i]))) << what << " element " << i;
}

TEST(CpuFast, LayerNormMatchesTheReference) {
  // C = 256 (the larger bench shape), 37 (ragged: not a multiple of the 16 lanes), 3; 70 rows span
  // three dgamma blocks, the last one partial.
  for (const int64_t C : {int64_t{256}, int64_t{37}, int64_t{3}}) {
    constexpr int64_t rows = 70;
    const size_t n = static_cast<size_t>(rows * C);
    std::vector<float> x = random_floats(n, 2.0f, 41), residual = random_floats(n, 1.0f, 42);
    for (size_t i = 0; i < n; ++i) x[i] += 3.0f;  // a mean well away from 0
    const std::vector<float> gamma = random_floats(C, 1.0f, 43), beta = random_floats(C, 1.0f, 44);
    const std::vector<float> dout = random_floats(n, 1.0f, 45), extra = random_floats(n, 1.0f, 46);
    const std::vector<float> dgamma0 = random_floats(C, 1.0f, 47), dbeta0 = random_floats(C, 1.0f, 48);
    for (const bool with_residual : {false, true}) {
      std::vector<float> ref_out(n), ref_sum(n), ref_mean(rows), ref_rstd(rows);
      if (with_residual)
        cpu::residual_layernorm_forward<float>(ref_out.data(), ref_sum.data(), ref_mean.data(), ref_rstd.data(),
                                               x.data(), residual.data(), gamma.data(), beta.data(), rows, C, 1e-5);
      else
        cpu::layernorm_forward<float>(ref_out.data(), ref_mean.data(), ref_rstd.data(), x.data(), gamma.data(),
                                      beta.data(), rows, C, 1e-5);
      const std::vector<float>& normalized = with_residual ? ref_sum : x;
      std::vector<float> ref_dx(n), ref_dgamma = dgamma0, ref_dbeta = dbeta0;
      cpu::layernorm_backward<float>(ref_dx.data(), ref_dgamma.data(), ref_dbeta.data(), dout.data(),
                                     with_residual ? extra.data() : nullptr, normalized.data(), gamma.data(),
                                     ref_mean.data(), ref_rstd.data(), rows, C);
      struct Out {
        std::vector<float> out, sum, mean, rstd, dx, dgamma, dbeta, dx_only;
      };
      const auto run = [&](int threads) {
        cpu_backend::set_threads(threads);
        Out o{std::vector<float>(n),
              std::vector<float>(n, -1.0f),
              std::vector<float>(rows),
              std::vector<float>(rows),
              std::vector<float>(n),
              dgamma0,
              dbeta0,
              std::vector<float>(n)};
        cpu_fast::layernorm_forward(o.out.data(), o.sum.data(), o.mean.data(), o.rstd.data(), x.data(),
                                    with_residual ? residual.data() : nullptr, gamma.data(), beta.data(), rows, C,
                                    1e-5);
        // The backward on the reference's statistics, so each half is checked on its own.
        cpu_fast::layernorm_backward(o.dx.data(), o.dgamma.data(), o.dbeta.data(), dout.data(),
                                     with_residual ? extra.data() : nullptr, normalized.data(), gamma.data(),
                                     ref_mean.data(), ref_rstd.data(), rows, C);
        // dx alone (no parameter gradients wanted) is the same dx.
        cpu_fast::layernorm_backward(o.dx_only.data(), nullptr, nullptr, dout.data(),
                                     with_residual ? extra.data() : nullptr, normalized.data(), gamma.data(),
                                     ref_mean.data(), ref_rstd.data(), rows, C);
        return o;
      };
      const Out one = run(1);
      SCOPED_TRACE("C " + std::to_string(C) + (with_residual ? ", residual" : ", plain"));
      expect_close(one.out, ref_out, 1e-5, "out");
      expect_close(one.mean, ref_mean, 1e-6, "mean");
      expect_close(one.rstd, ref_rstd, 1e-5, "rstd");
      if (with_residual) {
        EXPECT_TRUE(same_bits(one.sum, ref_sum)) << "sum = x + residual exactly";
      }
      expect_close(one.dx, ref_dx, 1e-5, "dx");
      expect_close(one.dgamma, ref_dgamma, 1e-5, "dgamma");
      expect_close(one.dbeta, ref_dbeta, 1e-5, "dbeta");
      EXPECT_TRUE(same_bits(one.dx_only, one.dx));
      for (int threads : {2, 3}) {
        const Out other = run(threads);
        EXPECT_TRUE(same_bits(other.out, one.out) && same_bits(other.mean, one.mean) &&
                    same_bits(other.rstd, one.rstd) && same_bits(other.dx, one.dx) &&
                    same_bits(other.dgamma, one.dgamma) && same_bits(other.dbeta, one.dbeta))
            << threads << " threads";
      }
    }
  }
  cpu_backend::set_threads(0);
}

TEST(CpuFast, CrossEntropyMatchesTheReference) {
  constexpr int64_t rows = 41, vocab = 1037;  // a ragged vocabulary (not a multiple of the 16 lanes)
  std::vector<float> logits = random_floats(rows * vocab, 4.0f, 21);
  const std::vector<float> weights = random_floats(rows, 1.0f, 22);
  std::vector<int32_t> targets(rows);
  for (int64_t i = 0; i < rows; ++i) targets[static_cast<size_t>(i)] = static_cast<int32_t>((i * 97) % vocab);
  targets[3] = -100;  // ignored
  // Special rows: NaN, +Inf, all -Inf, -Inf entries next to finite ones, the target as the maximum.
  logits[5 * vocab + 10] = NAN;
  logits[6 * vocab + 11] = INFINITY;
  std::fill(logits.begin() + 7 * vocab, logits.begin() + 8 * vocab, -INFINITY);
  for (int64_t j = 0; j < vocab; j += 3) logits[static_cast<size_t>(8 * vocab + j)] = -INFINITY;
  targets[8] = 1;
  logits[9 * vocab + targets[9]] = 40.0f;
  for (LossReduction reduction : {LossReduction::mean, LossReduction::sum}) {
    std::vector<float> ref_loss(1), ref_row_loss(rows), ref_lse(rows), ref_d(logits.size()), ref_d2(logits.size());
    std::vector<int32_t> ref_counts(kCrossEntropyCounts);
    cpu::cross_entropy_forward<float>(logits.data(), targets.data(), weights.data(), rows, vocab, -100, reduction,
                                      ref_loss.data(), ref_row_loss.data(), ref_lse.data(), ref_counts.data(),
                                      ref_d.data(), 0.5f);
    const float dloss = 0.5f;
    cpu::cross_entropy_backward<float>(logits.data(), targets.data(), weights.data(), ref_lse.data(), ref_counts.data(),
                                       rows, vocab, -100, reduction, &dloss, ref_d2.data());
    struct Out {
      std::vector<float> loss, row_loss, lse, d, d2;
      std::vector<int32_t> counts;
      bool operator==(const Out& o) const {
        return same_bits(loss, o.loss) && same_bits(row_loss, o.row_loss) && same_bits(lse, o.lse) &&
               same_bits(d, o.d) && same_bits(d2, o.d2) && counts == o.counts;
      }
    };
    const Out fast = same_for_every_thread_count<Out>([&] {
      Out o{std::vector<float>(1), std::vector<float>(rows), std::vector<float>(rows), logits, {}, {}};
      o.counts.resize(kCrossEntropyCounts);
      // dlogits aliases the logits (as the ops layer does when it owns them).
      cpu_fast::cross_entropy_forward(o.d.data(), targets.data(), weights.data(), rows, vocab, -100, reduction,
                                      o.loss.data(), o.row_loss.data(), o.lse.data(), o.counts.data(), o.d.data(),
                                      0.5f);
      o.d2 = logits;
      cpu_fast::cross_entropy_backward(o.d2.data(), targets.data(), weights.data(), o.lse.data(), o.counts.data(), rows,
                                       vocab, -100, reduction, &dloss, o.d2.data());
      return o;
    });
    EXPECT_EQ(fast.counts, ref_counts);
    const auto close = [](float a, float b) {
      if (std::isnan(b)) return std::isnan(a);
      if (std::isinf(b)) return a == b;
      return std::fabs(a - b) <= 1e-5f * std::max(1.0f, std::fabs(b));
    };
    EXPECT_PRED2(close, fast.loss[0], ref_loss[0]);  // NaN: the NaN and +Inf rows contribute
    for (int64_t i = 0; i < rows; ++i) {
      EXPECT_PRED2(close, fast.lse[i], ref_lse[i]) << "row " << i;
      EXPECT_PRED2(close, fast.row_loss[i], ref_row_loss[i]) << "row " << i;
    }
    for (size_t e = 0; e < logits.size(); ++e) {
      ASSERT_PRED2(close, fast.d[e], ref_d[e]) << "forward gradient element " << e;
      ASSERT_PRED2(close, fast.d2[e], ref_d2[e]) << "backward gradient element " << e;
    }
  }
  float loss, row_loss, lse;
  int32_t counts[kCrossEntropyCounts], target = 0;
  EXPECT_THROW(cpu_fast::cross_entropy_forward(&loss, &target, nullptr, 1, 0, -1, LossReduction::mean, &loss, &row_loss,
                                               &lse, counts, nullptr, 1.0f),
               std::invalid_argument);
}

TEST(CpuBackend, ParallelForCoversEveryItemOnceAtAnyThreadCount) {
  for (int threads : {1, 2, 3, 8}) {
    cpu_backend::set_threads(threads);
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{5}, int64_t{1000}}) {
      std::vector<int> hits(static_cast<size_t>(n), 0);
      cpu_backend::parallel_for(n, 1, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) ++hits[i];
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << "n " << n << " threads " << threads;
    }
  }
  cpu_backend::set_threads(0);
  EXPECT_EQ(cpu_backend::threads(), cpu_backend::available_cores());
  EXPECT_THROW(cpu_backend::set_threads(-1), std::invalid_argument);
}

TEST(CpuBackend, NestedParallelLoopsAndNamedBodies) {
  // A parallel loop inside a parallel loop (a GEMM inside a per-head attention loop) runs inline on
  // every thread, the caller's range 0 included: it used to take the pool's job lock twice and hang.
  for (int threads : {1, 2, 3, 8}) {
    cpu_backend::set_threads(threads);
    constexpr int64_t kOuter = 7, kInner = 50;
    std::vector<int> hits(static_cast<size_t>(kOuter * kInner), 0);
    const auto inner_body = [&](int64_t outer) {
      return [&hits, outer](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) ++hits[static_cast<size_t>(outer * kInner + i)];
      };
    };
    cpu_backend::parallel_for(kOuter, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t o = lo; o < hi; ++o) {
        auto body = inner_body(o);  // an lvalue body
        cpu_backend::parallel_for(kInner, 1, body);
      }
    });
    for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i], 1) << "item " << i << " threads " << threads;
  }
  cpu_backend::set_threads(0);
}

TEST(CpuBackend, BlasRunsAKernelForThisCpusVectorUnits) {
  cpu_backend::configure();
  const cpu_backend::BlasInfo blas = cpu_backend::blas_info();
  const int cpu_bits = cpu_backend::cpu_vector_bits(cpu_backend::cpu_features());
  std::printf("%s\n", cpu_backend::report().c_str());
  if (blas.kernel_vector_bits == 0) GTEST_SKIP() << "the BLAS does not report its kernel: " << blas.library;
  // A generic (SSE) kernel on a CPU with AVX2 or AVX-512 is the failure this test exists for.
  if (cpu_bits >= 256) {
    EXPECT_GE(blas.kernel_vector_bits, 256) << blas.kernel << " on " << cpu_backend::cpu_model();
  }
}

TEST(CpuBackend, OpenBlasIdleWorkerThreadsAreStopped) {
  cpu_backend::configure();
  const cpu_backend::BlasInfo blas = cpu_backend::blas_info();
  if (blas.kernel.empty() || blas.openmp) GTEST_SKIP() << "not a pthreads OpenBLAS: " << blas.library;
  // Every BLAS call is single-threaded, so OpenBLAS's own workers would only spin after load.
  EXPECT_FALSE(cpu_backend::blas_worker_threads_running());
  // GEMMs still compute, on every thread count, and do not start the workers again.
  const int64_t M = 64, N = 48, K = 40;
  const std::vector<float> A = random_floats(M * K, 1.0f, 31), B = random_floats(K * N, 1.0f, 32);
  for (int threads : {1, 2}) {
    cpu_backend::set_threads(threads);
    std::vector<float> C(M * N);
    cpu::gemm<float, float>(false, false, M, N, K, 1.0, A.data(), K, B.data(), N, 0.0, C.data(), N);
    for (int64_t i = 0; i < M; i += 7)
      for (int64_t j = 0; j < N; j += 5) {
        double expected = 0;
        for (int64_t k = 0; k < K; ++k) expected += static_cast<double>(A[i * K + k]) * B[k * N + j];
        EXPECT_NEAR(C[i * N + j], expected, 1e-4 * (1 + std::fabs(expected)));
      }
  }
  cpu_backend::set_threads(0);
  EXPECT_FALSE(cpu_backend::blas_worker_threads_running());
}

TEST(CpuBackend, OpenBlasKernelCanBeReselected) {
  cpu_backend::configure();
  const cpu_backend::BlasInfo before = cpu_backend::blas_info();
  if (before.kernel.empty()) GTEST_SKIP() << "not OpenBLAS: " << before.library;
  // What the engine does when OpenBLAS falls back to a generic kernel, here in reverse: select the
  // generic one, check a GEMM still computes, and go back.
  ASSERT_TRUE(cpu_backend::reselect_openblas_kernel("Prescott"));
  EXPECT_EQ(cpu_backend::blas_info().kernel, "Prescott");
  EXPECT_EQ(cpu_backend::blas_info().kernel_vector_bits, 128);
  const int64_t M = 33, N = 65, K = 17;
  const std::vector<float> A = random_floats(M * K, 1.0f, 21), B = random_floats(K * N, 1.0f, 22);
  std::vector<float> generic(M * N), native(M * N);
  cpu::gemm<float, float>(false, false, M, N, K, 1.0, A.data(), K, B.data(), N, 0.0, generic.data(), N);
  ASSERT_TRUE(cpu_backend::reselect_openblas_kernel(before.kernel));
  EXPECT_EQ(cpu_backend::blas_info().kernel, before.kernel);
  cpu::gemm<float, float>(false, false, M, N, K, 1.0, A.data(), K, B.data(), N, 0.0, native.data(), N);
  for (int64_t i = 0; i < M * N; ++i) EXPECT_NEAR(generic[i], native[i], 1e-4f * (1 + std::fabs(native[i])));
}

}  // namespace
}  // namespace coco::kernels
