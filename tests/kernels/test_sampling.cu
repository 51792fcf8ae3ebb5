// Gumbel-max and multinomial sampling: CUDA (emulated here) bitwise against the CPU reference (f32
// and bf16 logits, odd vocabulary sizes, several temperatures), row keys, chi-squared goodness of fit on a
// fixed small distribution for both samplers on both backends, zero-probability entries, non-finite
// rows, the deterministic log/exp, schedule invariance and bad arguments.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "kernels/sampling.h"
#include "kernels/sampling_math.h"
#include "engine/ops/sampling.h"
#include "engine/simt/schedule_oracle.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::rng::Purpose;
using coco::rng::Stream;
using coco::testing::from_floats;
using coco::testing::GuardedDeviceBuffer;
using coco::testing::random_floats;

// The emulator's schedule-invariance oracle as a gtest assertion.
::testing::AssertionResult schedule_invariant(const std::function<std::vector<uint8_t>()>& run, int random_seeds) {
  const emu::OracleResult result = emu::check_schedule_invariance(run, random_seeds);
  if (result.identical) return ::testing::AssertionSuccess() << result.runs << " schedules identical";
  return ::testing::AssertionFailure() << result.message;
}

enum class Sampler { gumbel, multinomial };

const char* sampler_name(Sampler s) { return s == Sampler::gumbel ? "gumbel" : "multinomial"; }

Stream stream_for(Sampler s, uint64_t step = 3) {
  return Stream(42, step, s == Sampler::gumbel ? Purpose::gumbel_sample : Purpose::multinomial_sample);
}

template <class L>
std::vector<int32_t> sample_cpu(Sampler s, const std::vector<L>& logits, int64_t N, int64_t V, float temperature,
                                const Stream& stream) {
  std::vector<int32_t> out(static_cast<size_t>(N), -5);
  if (s == Sampler::gumbel)
    coco::kernels::cpu::gumbel_sample(logits.data(), N, V, temperature, stream, out.data());
  else
    coco::kernels::cpu::multinomial_sample(logits.data(), N, V, temperature, stream, out.data());
  return out;
}

template <class L>
std::vector<int32_t> sample_cuda(Sampler s, const std::vector<L>& logits, int64_t N, int64_t V, float temperature,
                                 const Stream& stream) {
  GuardedDeviceBuffer<L> d_logits(logits);
  GuardedDeviceBuffer<int32_t> d_out(static_cast<size_t>(N));
  d_out.poison();
  if (s == Sampler::gumbel)
    coco::kernels::cuda::gumbel_sample(d_logits.data(), N, V, temperature, stream, d_out.data(), nullptr);
  else
    coco::kernels::cuda::multinomial_sample(d_logits.data(), N, V, temperature, stream, d_out.data(), nullptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_TRUE(d_out.guards_intact());
  EXPECT_TRUE(d_logits.guards_intact());
  return d_out.download();
}

// The same logits repeated in every row.
std::vector<float> repeat_rows(const std::vector<float>& row, int64_t N) {
  std::vector<float> out;
  out.reserve(row.size() * static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) out.insert(out.end(), row.begin(), row.end());
  return out;
}

std::vector<double> softmax_f64(const std::vector<float>& logits, double temperature) {
  double max = -INFINITY;
  for (float x : logits) max = std::max(max, x / temperature);
  std::vector<double> p(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) sum += p[i] = std::exp(logits[i] / temperature - max);
  for (double& x : p) x /= sum;
  return p;
}

// Pearson chi-squared over the categories of positive probability; every draw must land on one.
// The bound is the chi-squared mean plus 5 standard deviations, far outside a correct sampler's
// range and far below a biased one's at these sample sizes.
::testing::AssertionResult fits_distribution(const std::vector<int32_t>& samples, const std::vector<double>& probs) {
  std::vector<double> counts(probs.size(), 0.0);
  for (int32_t s : samples) {
    if (s < 0 || s >= static_cast<int32_t>(probs.size()))
      return ::testing::AssertionFailure() << "sample " << s << " outside [0, " << probs.size() << ")";
    if (probs[static_cast<size_t>(s)] == 0.0)
      return ::testing::AssertionFailure() << "drew index " << s << " of probability 0";
    counts[static_cast<size_t>(s)] += 1;
  }
  double chi2 = 0.0;
  int categories = 0;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] == 0.0) continue;
    const double expected = probs[i] * static_cast<double>(samples.size());
    chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    ++categories;
  }
  const double df = categories - 1;
  const double bound = df + 5.0 * std::sqrt(2.0 * df);
  if (chi2 > bound) return ::testing::AssertionFailure() << "chi-squared " << chi2 << " above " << bound;
  return ::testing::AssertionSuccess() << "chi-squared " << chi2;
}

// A fixed small distribution with one impossible entry.
const std::vector<float> kSmallLogits = {-1.0f, 0.5f, 2.0f, -0.3f, -INFINITY, 1.2f, 0.0f, -2.0f};

TEST(Sampling, CudaMatchesCpuBitwise) {
  struct Shape {
    int64_t N, V;
  };
  const Shape shapes[] = {{3, 1}, {5, 7}, {4, 33}, {3, 130}, {2, 1000}, {3, 5003}};
  for (Sampler s : {Sampler::gumbel, Sampler::multinomial}) {
    for (const Shape& shape : shapes) {
      for (float temperature : {1.0f, 0.7f, 2.5f}) {
        const std::string what = std::string(sampler_name(s)) + " N=" + std::to_string(shape.N) +
                                 " V=" + std::to_string(shape.V) + " temperature=" + std::to_string(temperature);
        const std::vector<float> logits = random_floats(static_cast<size_t>(shape.N * shape.V),
                                                        static_cast<unsigned>(shape.V + shape.N), -4.0f, 4.0f);
        const Stream stream = stream_for(s);
        EXPECT_EQ(sample_cpu(s, logits, shape.N, shape.V, temperature, stream),
                  sample_cuda(s, logits, shape.N, shape.V, temperature, stream))
            << what << " f32";
        const auto bf16 = from_floats<__nv_bfloat16>(logits);
        EXPECT_EQ(sample_cpu(s, bf16, shape.N, shape.V, temperature, stream),
                  sample_cuda(s, bf16, shape.N, shape.V, temperature, stream))
            << what << " bf16";
      }
    }
  }
}

TEST(Sampling, ChiSquaredOnCpuWithManyDraws) {
  const int64_t N = 100000;
  for (Sampler s : {Sampler::gumbel, Sampler::multinomial}) {
    for (float temperature : {1.0f, 0.6f}) {
      const auto samples = sample_cpu(s, repeat_rows(kSmallLogits, N), N, static_cast<int64_t>(kSmallLogits.size()),
                                      temperature, stream_for(s, 11));
      EXPECT_TRUE(fits_distribution(samples, softmax_f64(kSmallLogits, temperature)))
          << sampler_name(s) << " temperature " << temperature;
    }
  }
}

TEST(Sampling, ChiSquaredOnDeviceAndSameDrawsAsCpu) {
  const int64_t N = 3000, V = static_cast<int64_t>(kSmallLogits.size());
  const auto logits = repeat_rows(kSmallLogits, N);
  for (Sampler s : {Sampler::gumbel, Sampler::multinomial}) {
    const auto device = sample_cuda(s, logits, N, V, 1.0f, stream_for(s, 12));
    EXPECT_TRUE(fits_distribution(device, softmax_f64(kSmallLogits, 1.0))) << sampler_name(s);
    EXPECT_EQ(device, sample_cpu(s, logits, N, V, 1.0f, stream_for(s, 12))) << sampler_name(s);
  }
}

TEST(Sampling, Bf16LogitsSampleTheirOwnDistribution) {
  const int64_t N = 60000;
  const std::vector<float> rounded = coco::testing::round_through<__nv_bfloat16>({0.33f, -1.7f, 1.1f, 0.05f, -0.6f});
  const auto logits = from_floats<__nv_bfloat16>(repeat_rows(rounded, N));
  for (Sampler s : {Sampler::gumbel, Sampler::multinomial})
    EXPECT_TRUE(fits_distribution(sample_cpu(s, logits, N, 5, 1.0f, stream_for(s, 13)), softmax_f64(rounded, 1.0)))
        << sampler_name(s);
}

TEST(Sampling, LargeVocabularyWithOneDominantRegion) {
  // V = 3001 with all mass on indices 1500..1503 (others -Inf): the multinomial's segment search
  // must land inside the right segment, the Gumbel argmax must never pick an impossible index.
  const int64_t N = 2000, V = 3001;
  std::vector<float> row(static_cast<size_t>(V), -INFINITY);
  row[1500] = 0.0f;
  row[1501] = 1.0f;
  row[1502] = -0.5f;
  row[1503] = 0.25f;
  std::vector<double> probs(static_cast<size_t>(V), 0.0);
  const auto p4 = softmax_f64({0.0f, 1.0f, -0.5f, 0.25f}, 1.0);
  for (int i = 0; i < 4; ++i) probs[static_cast<size_t>(1500 + i)] = p4[static_cast<size_t>(i)];
  for (Sampler s : {Sampler::gumbel, Sampler::multinomial})
    EXPECT_TRUE(fits_distribution(sample_cpu(s, repeat_rows(row, N), N, V, 1.0f, stream_for(s, 14)), probs))
        << sampler_name(s);
}

TEST(Sampling, NonFiniteRowsFallBackToArgmax) {
  const int64_t V = 9;
  std::vector<float> logits;
  std::vector<int32_t> expected;
  const auto add = [&](std::vector<float> row, int32_t want) {
    logits.insert(logits.end(), row.begin(), row.end());
    expected.push_back(want);
  };
  const float inf = INFINITY, nan = NAN;
  add({0, 1, 2, nan, 5, nan, 0, 0, 0}, 3);                         // first NaN
  add({0, inf, 2, 1, inf, 0, 0, 0, 0}, 1);                         // first +Inf
  add({-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf}, 0);  // no distribution
  add({-inf, -inf, -inf, -inf, -inf, 3.0f, -inf, -inf, -inf}, 5);  // one possible token
  const int64_t N = static_cast<int64_t>(expected.size());
  for (Sampler s : {Sampler::gumbel, Sampler::multinomial}) {
    EXPECT_EQ(sample_cpu(s, logits, N, V, 1.0f, stream_for(s)), expected) << sampler_name(s);
    EXPECT_EQ(sample_cuda(s, logits, N, V, 1.0f, stream_for(s)), expected) << sampler_name(s);
  }
}

TEST(Sampling, SingleTokenVocabulary) {
  const std::vector<float> logits = {0.3f, -2.0f, 7.0f};
  for (Sampler s : {Sampler::gumbel, Sampler::multinomial}) {
    EXPECT_EQ(sample_cpu(s, logits, 3, 1, 1.0f, stream_for(s)), std::vector<int32_t>(3, 0));
    EXPECT_EQ(sample_cuda(s, logits, 3, 1, 1.0f, stream_for(s)), std::vector<int32_t>(3, 0));
  }
}

TEST(Sampling, DeterministicLogExpAreAccurate) {
  using coco::kernels::detail::det_exp_nonpositive;
  using coco::kernels::detail::det_log;
  double worst_log = 0.0, worst_exp = 0.0;
  for (int i = 0; i <= 200000; ++i) {
    // Logs over [2^-24, 17] (the samplers' range), exps over [-86, 0].
    const float x = std::ldexp(1.0f, -24) + (17.0f - std::ldexp(1.0f, -24)) * static_cast<float>(i) / 200000.0f;
    const double ref_log = std::log(static_cast<double>(x));
    if (ref_log != 0.0) worst_log = std::max(worst_log, std::fabs(det_log(x) - ref_log) / std::fabs(ref_log));
    const float y = -86.0f * static_cast<float>(i) / 200000.0f;
    const double ref_exp = std::exp(static_cast<double>(y));
    worst_exp = std::max(worst_exp, std::fabs(det_exp_nonpositive(y) - ref_exp) / ref_exp);
  }
  // A few f32 ulp: enough for sampling, and reproducible to the bit everywhere.
  EXPECT_LT(worst_log, 4e-7);
  EXPECT_LT(worst_exp, 4e-7);
  EXPECT_EQ(det_exp_nonpositive(0.0f), 1.0f);
  EXPECT_EQ(det_exp_nonpositive(-INFINITY), 0.0f);
  EXPECT_EQ(det_log(1.0f), 0.0f);
  // Every open uniform stays strictly inside (0, 1), so the Gumbel noise is always finite.
  for (uint32_t w : {0u, 1u, 511u, 512u, 0x80000000u, 0xfffffe00u, 0xffffffffu}) {
    const float u = coco::kernels::detail::open_uniform(w);
    EXPECT_GT(u, 0.0f);
    EXPECT_LT(u, 1.0f);
    EXPECT_TRUE(std::isfinite(coco::kernels::detail::gumbel_noise(w)));
  }
}

TEST(Sampling, ScheduleInvariant) {
  const int64_t N = 5, V = 1000;
  const std::vector<float> logits = random_floats(static_cast<size_t>(N * V), 77, -3.0f, 3.0f);
  for (Sampler s : {Sampler::gumbel, Sampler::multinomial}) {
    EXPECT_TRUE(schedule_invariant(
        [&] {
          const auto out = sample_cuda(s, logits, N, V, 1.0f, stream_for(s));
          const auto* raw = reinterpret_cast<const uint8_t*>(out.data());
          return std::vector<uint8_t>(raw, raw + out.size() * sizeof(int32_t));
        },
        3))
        << sampler_name(s);
  }
}

TEST(Sampling, RejectsBadArguments) {
  const std::vector<float> logits(8, 0.0f);
  int32_t out[2];
  const Stream stream = stream_for(Sampler::gumbel);
  EXPECT_THROW(coco::kernels::cpu::gumbel_sample(logits.data(), 2, 4, 0.0f, stream, out), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::multinomial_sample(logits.data(), 2, 4, NAN, stream, out), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cpu::gumbel_sample(logits.data(), 2, 0, 1.0f, stream, out), std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::gumbel_sample(logits.data(), -1, 4, 1.0f, stream, out, nullptr),
               std::invalid_argument);
  EXPECT_THROW(coco::kernels::cuda::multinomial_sample(logits.data(), 2, 4, -1.0f, stream, out, nullptr),
               std::invalid_argument);
}

// ------------------------------------------------------------ ops wrapper on coco::Tensor

TEST(SamplingOps, CpuAndCudaTensorsGiveIdenticalSamples) {
  const int64_t N = 9, V = 301;
  const std::vector<float> values = random_floats(static_cast<size_t>(N * V), 91, -5.0f, 5.0f);
  for (coco::ops::Sampler sampler : {coco::ops::Sampler::gumbel, coco::ops::Sampler::multinomial}) {
    for (coco::DType dtype : {coco::DType::f32, coco::DType::bf16}) {
      std::vector<int32_t> out[2];
      for (int d = 0; d < 2; ++d) {
        const coco::Device device = d == 0 ? coco::Device::cpu : coco::Device::cuda;
        const coco::Tensor logits = coco::Tensor::from_vector(values, coco::Shape{N, V}, device).to(dtype);
        out[d] = coco::ops::sample_tokens(logits, sampler, 1.0f, 42, 3).to(coco::Device::cpu).to_vector<int32_t>();
      }
      EXPECT_EQ(out[0], out[1]);
      // The op draws from the documented stream.
      const Sampler s = sampler == coco::ops::Sampler::gumbel ? Sampler::gumbel : Sampler::multinomial;
      if (dtype == coco::DType::f32) {
        EXPECT_EQ(out[0], sample_cpu(s, values, N, V, 1.0f, stream_for(s, 3)));
      }
    }
  }
  // Another instance number is another stream.
  const coco::Tensor logits = coco::Tensor::from_vector(values, coco::Shape{N, V});
  EXPECT_NE(coco::ops::sample_tokens(logits, coco::ops::Sampler::gumbel, 1.0f, 42, 3, 0).to_vector<int32_t>(),
            coco::ops::sample_tokens(logits, coco::ops::Sampler::gumbel, 1.0f, 42, 3, 1).to_vector<int32_t>());
}

// Row keys (data parallelism): sample n draws from Philox row key_base + row_keys[n], so it equals the sample of
// the same logits placed at that row of a larger batch, on both devices, for both samplers and dtypes.
TEST(SamplingOps, RowKeysPickThePhiloxRowOfTheGlobalBatch) {
  const int64_t N = 5, V = 37, base = 3, rows = 16;
  const std::vector<int32_t> keys = {9, 0, 4, 12, 7};
  const std::vector<float> values = random_floats(static_cast<size_t>(N * V), 17, -3.0f, 3.0f);
  std::vector<float> global(static_cast<size_t>(rows * V), 0.0f);
  for (int64_t n = 0; n < N; ++n)
    std::copy(values.begin() + n * V, values.begin() + (n + 1) * V, global.begin() + (base + keys[n]) * V);
  for (coco::ops::Sampler sampler : {coco::ops::Sampler::gumbel, coco::ops::Sampler::multinomial}) {
    const Sampler s = sampler == coco::ops::Sampler::gumbel ? Sampler::gumbel : Sampler::multinomial;
    const std::vector<int32_t> whole = sample_cpu(s, global, rows, V, 0.8f, stream_for(s, 4));
    std::vector<int32_t> expected;
    for (int64_t n = 0; n < N; ++n) expected.push_back(whole[static_cast<size_t>(base + keys[n])]);
    for (coco::Device device : {coco::Device::cpu, coco::Device::cuda}) {
      const coco::Tensor logits = coco::Tensor::from_vector(values, coco::Shape{N, V}, device);
      const coco::Tensor row_keys = coco::Tensor::from_vector(keys, coco::Shape{N}, device);
      EXPECT_EQ(coco::ops::sample_tokens(logits, sampler, 0.8f, 42, 4, 0, row_keys, base)
                    .to(coco::Device::cpu)
                    .to_vector<int32_t>(),
                expected)
          << sampler_name(s) << " on " << (device == coco::Device::cpu ? "cpu" : "cuda");
    }
  }
  const coco::Tensor logits = coco::Tensor::from_vector(values, coco::Shape{N, V});
  EXPECT_THROW(coco::ops::sample_tokens(logits, coco::ops::Sampler::gumbel, 1.0f, 0, 0, 0,
                                        coco::Tensor::zeros(coco::Shape{N + 1}, coco::DType::i32)),
               coco::TensorError);
}

TEST(SamplingOps, RejectBadTensors) {
  const coco::Tensor ids = coco::Tensor::zeros(coco::Shape{2, 4}, coco::DType::i32);
  EXPECT_THROW(coco::ops::sample_tokens(ids, coco::ops::Sampler::gumbel, 1.0f, 0, 0), coco::TensorError);
  const coco::Tensor flat = coco::Tensor::zeros(coco::Shape{4}, coco::DType::f32);
  EXPECT_THROW(coco::ops::sample_tokens(flat, coco::ops::Sampler::multinomial, 1.0f, 0, 0), coco::TensorError);
  const coco::Tensor logits = coco::Tensor::zeros(coco::Shape{2, 4}, coco::DType::f32);
  EXPECT_THROW(coco::ops::sample_tokens(logits, coco::ops::Sampler::gumbel, 0.0f, 0, 0), std::invalid_argument);
}

}  // namespace
