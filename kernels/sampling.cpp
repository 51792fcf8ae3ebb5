// CPU reference of Gumbel-max and multinomial sampling (see kernels/sampling.h for the draws and the
// multinomial's summation order, which this file follows step by step).
#include "kernels/sampling.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/sampling_math.h"

namespace coco::kernels::cpu {

namespace {

template <class L>
float load(const L& x) {
  if constexpr (std::is_same_v<L, __nv_bfloat16>)
    return __bfloat162float(x);
  else
    return x;
}

void check_args(int64_t N, int64_t V, float temperature, const char* op) {
  if (N < 0 || V < 1 || V > 0x7fffffffLL)
    throw std::invalid_argument(std::string(op) + ": logits (" + std::to_string(N) + ", " + std::to_string(V) +
                                "), expected N >= 0 and 1 <= V < 2^31");
  if (!(temperature > 0.0f) || !std::isfinite(temperature))
    throw std::invalid_argument(std::string(op) + ": temperature must be finite and > 0, got " +
                                std::to_string(temperature));
}

int32_t argmax_index(const std::vector<float>& values) {
  int64_t best = 0;
  for (int64_t v = 1; v < static_cast<int64_t>(values.size()); ++v)
    if (detail::argmax_better(values[v], v, values[best], best)) best = v;
  return static_cast<int32_t>(best);
}

}  // namespace

template <class L>
void gumbel_sample(const L* logits, int64_t N, int64_t V, float temperature, const rng::Stream& stream,
                   int32_t* samples, const int32_t* row_keys) {
  check_args(N, V, temperature, "kernels::cpu::gumbel_sample");
  const int64_t groups = (V + 3) / 4;
  std::vector<float> scores(static_cast<size_t>(V));
  for (int64_t n = 0; n < N; ++n) {
    const L* x = logits + n * V;
    for (int64_t g = 0; g < groups; ++g) {
      const rng::Word4 words =
          stream.block(sample_key(row_keys, n) * static_cast<uint64_t>(groups) + static_cast<uint64_t>(g));
      for (int lane = 0; lane < 4 && 4 * g + lane < V; ++lane) {
        const int64_t v = 4 * g + lane;
        scores[v] = load(x[v]) / temperature + detail::gumbel_noise(words.lane(lane));
      }
    }
    samples[n] = argmax_index(scores);
  }
}

template <class L>
void multinomial_sample(const L* logits, int64_t N, int64_t V, float temperature, const rng::Stream& stream,
                        int32_t* samples, const int32_t* row_keys) {
  check_args(N, V, temperature, "kernels::cpu::multinomial_sample");
  const int64_t segment = (V + kSampleThreads - 1) / kSampleThreads;
  std::vector<float> scaled(static_cast<size_t>(V));
  for (int64_t n = 0; n < N; ++n) {
    const L* x = logits + n * V;
    bool any_nan = false;
    float row_max = -INFINITY;
    for (int64_t v = 0; v < V; ++v) {
      scaled[v] = load(x[v]) / temperature;
      if (scaled[v] != scaled[v])
        any_nan = true;
      else if (scaled[v] > row_max)
        row_max = scaled[v];
    }
    if (any_nan || row_max == INFINITY || row_max == -INFINITY) {
      samples[n] = argmax_index(scaled);
      continue;
    }
    float segment_sum[kSampleThreads], prefix[kSampleThreads + 1];
    for (int t = 0; t < kSampleThreads; ++t) {
      float sum = 0.0f;
      for (int64_t v = t * segment; v < std::min(V, (t + 1) * segment); ++v)
        sum += detail::det_exp_nonpositive(scaled[v] - row_max);
      segment_sum[t] = sum;
    }
    float running = 0.0f;
    int last_positive = -1;
    for (int t = 0; t < kSampleThreads; ++t) {
      prefix[t] = running;
      running += segment_sum[t];
      if (segment_sum[t] > 0.0f) last_positive = t;
    }
    prefix[kSampleThreads] = running;
    const float target = stream.uniform(sample_key(row_keys, n), 0) * running;
    int32_t chosen = -1;
    for (int t = 0; t < kSampleThreads && chosen < 0; ++t) {
      if (!(segment_sum[t] > 0.0f && prefix[t] <= target && (target < prefix[t + 1] || t == last_positive))) continue;
      float acc = prefix[t];
      int64_t last = -1;
      for (int64_t v = t * segment; v < std::min(V, (t + 1) * segment); ++v) {
        const float e = detail::det_exp_nonpositive(scaled[v] - row_max);
        if (e > 0.0f) last = v;
        acc += e;
        if (acc > target) {
          chosen = static_cast<int32_t>(v);
          break;
        }
      }
      if (chosen < 0) chosen = static_cast<int32_t>(last);
    }
    samples[n] = chosen;
  }
}

template void gumbel_sample<float>(const float*, int64_t, int64_t, float, const rng::Stream&, int32_t*, const int32_t*);
template void gumbel_sample<__nv_bfloat16>(const __nv_bfloat16*, int64_t, int64_t, float, const rng::Stream&, int32_t*,
                                           const int32_t*);
template void multinomial_sample<float>(const float*, int64_t, int64_t, float, const rng::Stream&, int32_t*,
                                        const int32_t*);
template void multinomial_sample<__nv_bfloat16>(const __nv_bfloat16*, int64_t, int64_t, float, const rng::Stream&,
                                                int32_t*, const int32_t*);

}  // namespace coco::kernels::cpu
