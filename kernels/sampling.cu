// CUDA Gumbel-max and multinomial samplers: one block per row. Argmax reductions use a total order
// (kernels/sampling_math.h), so any tree finds the CPU's winner; the multinomial sums follow the
// fixed segment order of kernels/sampling.h, so its prefix sums are the CPU's to the bit.
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine/runtime/launch.cuh"
#include "kernels/sampling.h"
#include "kernels/sampling_math.h"

namespace coco::kernels::detail {
namespace {

static_assert((kSampleThreads & (kSampleThreads - 1)) == 0, "tree reductions need a power of two");

template <class L>
__device__ inline float load_logit(const L* x, int64_t v) {
  if constexpr (std::is_same_v<L, __nv_bfloat16>)
    return __bfloat162float(x[v]);
  else
    return x[v];
}

// Block-wide argmax of one (value, index) candidate per thread; returns the winner's index to every
// thread. values/indices: kSampleThreads shared slots.
__device__ inline int64_t block_argmax(float value, int64_t index, float* values, int64_t* indices) {
  values[threadIdx.x] = value;
  indices[threadIdx.x] = index;
  for (int width = kSampleThreads / 2; width > 0; width /= 2) {
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < width) {
      const int other = threadIdx.x + width;
      if (argmax_better(values[other], indices[other], values[threadIdx.x], indices[threadIdx.x])) {
        values[threadIdx.x] = values[other];
        indices[threadIdx.x] = indices[other];
      }
    }
  }
  __syncthreads();
  const int64_t winner = indices[0];
  __syncthreads();  // the slots may be reused right after
  return winner;
}

// logits: (N, V); samples: (N); grid (N). Thread t handles the groups of 4 logits t, t + 256, ...
// (one Philox block per group).
template <class L>
__global__ void __launch_bounds__(kSampleThreads)
    gumbel_sample_kernel(const L* __restrict__ logits, int64_t V, float temperature, rng::Stream stream,
                         int32_t* __restrict__ samples, const int32_t* __restrict__ row_keys) {
  __shared__ float values[kSampleThreads];
  __shared__ int64_t indices[kSampleThreads];
  const int64_t row = blockIdx.x;
  const L* x = logits + row * V;
  const int64_t groups = (V + 3) / 4;
  const uint64_t key = sample_key(row_keys, row);
  float best = -INFINITY;
  int64_t best_index = V;  // placeholder above every real index
  for (int64_t g = threadIdx.x; g < groups; g += blockDim.x) {
    const rng::Word4 words = stream.block(key * static_cast<uint64_t>(groups) + static_cast<uint64_t>(g));
    for (int lane = 0; lane < 4; ++lane) {
      const int64_t v = 4 * g + lane;
      if (v >= V) break;
      const float score = load_logit(x, v) / temperature + gumbel_noise(words.lane(lane));
      if (argmax_better(score, v, best, best_index)) {
        best = score;
        best_index = v;
      }
    }
  }
  const int64_t winner = block_argmax(best, best_index, values, indices);
  if (threadIdx.x == 0) samples[row] = static_cast<int32_t>(winner);
}

// logits: (N, V); samples: (N); grid (N).
template <class L>
__global__ void __launch_bounds__(kSampleThreads)
    multinomial_sample_kernel(const L* __restrict__ logits, int64_t V, float temperature, rng::Stream stream,
                              int32_t* __restrict__ samples, const int32_t* __restrict__ row_keys) {
  __shared__ float values[kSampleThreads];
  __shared__ int64_t indices[kSampleThreads];
  __shared__ float segment_sum[kSampleThreads];
  __shared__ float prefix[kSampleThreads + 1];
  __shared__ float target_shared;
  __shared__ int last_positive_shared;
  const int64_t row = blockIdx.x;
  const L* x = logits + row * V;

  // Row maximum (order-free) and NaN detection, coalesced.
  float local_max = -INFINITY;
  int local_nan = 0;
  for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
    const float s = load_logit(x, v) / temperature;
    if (s != s)
      local_nan = 1;
    else if (s > local_max)
      local_max = s;
  }
  values[threadIdx.x] = local_max;
  for (int width = kSampleThreads / 2; width > 0; width /= 2) {
    __syncthreads();
    if (static_cast<int>(threadIdx.x) < width && values[threadIdx.x + width] > values[threadIdx.x])
      values[threadIdx.x] = values[threadIdx.x + width];
  }
  const int any_nan = __syncthreads_or(local_nan);
  const float row_max = values[0];
  __syncthreads();
  if (any_nan || row_max == INFINITY || row_max == -INFINITY) {
    float best = -INFINITY;
    int64_t best_index = V;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
      const float s = load_logit(x, v) / temperature;
      if (argmax_better(s, v, best, best_index)) {
        best = s;
        best_index = v;
      }
    }
    const int64_t winner = block_argmax(best, best_index, values, indices);
    if (threadIdx.x == 0) samples[row] = static_cast<int32_t>(winner);
    return;
  }

  // Segment sums in the fixed order, then one thread scans them.
  const int64_t segment = (V + kSampleThreads - 1) / kSampleThreads;
  const int64_t begin = threadIdx.x * segment;
  const int64_t end = begin + segment < V ? begin + segment : V;
  float sum = 0.0f;
  for (int64_t v = begin; v < end; ++v) sum += det_exp_nonpositive(load_logit(x, v) / temperature - row_max);
  segment_sum[threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    float running = 0.0f;
    int last_positive = -1;
    for (int t = 0; t < kSampleThreads; ++t) {
      prefix[t] = running;
      running += segment_sum[t];
      if (segment_sum[t] > 0.0f) last_positive = t;
    }
    prefix[kSampleThreads] = running;
    last_positive_shared = last_positive;
    target_shared = stream.uniform(sample_key(row_keys, row), 0) * running;
  }
  __syncthreads();
  const float target = target_shared;
  const int t = threadIdx.x;
  if (segment_sum[t] > 0.0f && prefix[t] <= target && (target < prefix[t + 1] || t == last_positive_shared)) {
    float acc = prefix[t];
    int64_t last = -1, chosen = -1;
    for (int64_t v = begin; v < end; ++v) {
      const float e = det_exp_nonpositive(load_logit(x, v) / temperature - row_max);
      if (e > 0.0f) last = v;
      acc += e;
      if (acc > target) {
        chosen = v;
        break;
      }
    }
    samples[row] = static_cast<int32_t>(chosen >= 0 ? chosen : last);
  }
}

void check_args(int64_t N, int64_t V, float temperature, const char* op) {
  if (N < 0 || V < 1 || V > 0x7fffffffLL)
    throw std::invalid_argument(std::string(op) + ": logits (" + std::to_string(N) + ", " + std::to_string(V) +
                                "), expected N >= 0 and 1 <= V < 2^31");
  if (!(temperature > 0.0f) || !(temperature < INFINITY))
    throw std::invalid_argument(std::string(op) + ": temperature must be finite and > 0, got " +
                                std::to_string(temperature));
  if (N > 0x7fffffffLL)
    throw std::invalid_argument(std::string(op) + ": " + std::to_string(N) + " rows exceed the grid");
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class L>
void gumbel_sample(const L* logits, int64_t N, int64_t V, float temperature, const rng::Stream& stream,
                   int32_t* samples, cudaStream_t cuda_stream, const int32_t* row_keys) {
  detail::check_args(N, V, temperature, "kernels::cuda::gumbel_sample");
  if (N == 0) return;
  COCO_LAUNCH(detail::gumbel_sample_kernel<L>, dim3(static_cast<unsigned>(N)), dim3(kSampleThreads), 0, cuda_stream,
              logits, V, temperature, stream, samples, row_keys);
}

template <class L>
void multinomial_sample(const L* logits, int64_t N, int64_t V, float temperature, const rng::Stream& stream,
                        int32_t* samples, cudaStream_t cuda_stream, const int32_t* row_keys) {
  detail::check_args(N, V, temperature, "kernels::cuda::multinomial_sample");
  if (N == 0) return;
  COCO_LAUNCH(detail::multinomial_sample_kernel<L>, dim3(static_cast<unsigned>(N)), dim3(kSampleThreads), 0,
              cuda_stream, logits, V, temperature, stream, samples, row_keys);
}

template void gumbel_sample<float>(const float*, int64_t, int64_t, float, const rng::Stream&, int32_t*, cudaStream_t,
                                   const int32_t*);
template void gumbel_sample<__nv_bfloat16>(const __nv_bfloat16*, int64_t, int64_t, float, const rng::Stream&, int32_t*,
                                           cudaStream_t, const int32_t*);
template void multinomial_sample<float>(const float*, int64_t, int64_t, float, const rng::Stream&, int32_t*,
                                        cudaStream_t, const int32_t*);
template void multinomial_sample<__nv_bfloat16>(const __nv_bfloat16*, int64_t, int64_t, float, const rng::Stream&,
                                                int32_t*, cudaStream_t, const int32_t*);

}  // namespace coco::kernels::cuda
