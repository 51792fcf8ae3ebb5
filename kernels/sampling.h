// Sampling generator outputs: Gumbel-max (preset lucidrains) and multinomial from the f32 softmax by
// inverse CDF (preset paper). Philox-driven and bitwise identical on the CPU reference and the CUDA
// kernels: the draws are keyed by (row, vocabulary index), the arithmetic is kernels/sampling_math.h,
// and the multinomial's sums follow one fixed order on both backends (below).
//
// Draws (stream = Purpose::gumbel_sample or Purpose::multinomial_sample of the step):
//   Gumbel:      the noise of logit (row, v) is from u32(key * ceil(V / 4) + v / 4, lane v % 4)
//   multinomial: the row's uniform is u32(key, lane 0)
// where key = row_keys[row] when row_keys is given (>= 0; negative keys count as 0), else row. The
// objective keys a sample by the flat position (row * T + pos) of the token it replaces, and the stream's
// index base adds the position of the batch in the global batch, so a sample does not depend on how many
// masked positions precede it in the batch (data parallelism: N ranks draw what one process draws).
//
// Non-finite rows: a row with a NaN or +Inf (after the temperature), or with every logit -Inf, has
// no distribution; both samplers then return its argmax (first NaN, else first +Inf, else index 0),
// so the output is always a valid index. -Inf logits alone just get probability 0.
#pragma once
#include <cstdint>

#include "engine/rng/philox.h"
#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

// The multinomial's fixed summation order: the V entries of a row are cut into kSampleThreads
// contiguous segments of ceil(V / kSampleThreads) entries; each segment is summed left to right
// (segment sums), the segment sums are scanned left to right (prefixes and total). The sample is the
// first index whose running sum (segment prefix + entries so far) exceeds u * total, searched in the
// segment whose [prefix, next prefix) holds u * total; rounding leftovers fall to the last index of
// positive weight.
inline constexpr int kSampleThreads = 256;

// The Philox row of sample `row` (see the draws above).
__host__ __device__ inline uint64_t sample_key(const int32_t* row_keys, int64_t row) {
  return static_cast<uint64_t>(row_keys ? (row_keys[row] > 0 ? row_keys[row] : 0) : row);
}

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// logits: (N, V) of L = float or __nv_bfloat16; samples: (N) i32 in [0, V).
// argmax_v(logits[n, v] / temperature + Gumbel noise): an exact sample of softmax(logits / temperature).
template <class L>
void gumbel_sample(const L* logits, int64_t N, int64_t V, float temperature, const rng::Stream& stream,
                   int32_t* samples, const int32_t* row_keys = nullptr);

// A draw from softmax(logits / temperature) computed in f32 (torch.multinomial(softmax(x.float()), 1)
// at temperature 1), by inverse CDF with one uniform per row.
template <class L>
void multinomial_sample(const L* logits, int64_t N, int64_t V, float temperature, const rng::Stream& stream,
                        int32_t* samples, const int32_t* row_keys = nullptr);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers (row_keys too), one block per row; same results as the CPU versions. Asynchronous.
// Throw std::invalid_argument for N < 0, V < 1, V >= 2^31, or a temperature that is not finite and > 0.
template <class L>
void gumbel_sample(const L* logits, int64_t N, int64_t V, float temperature, const rng::Stream& stream,
                   int32_t* samples, cudaStream_t cuda_stream, const int32_t* row_keys = nullptr);
template <class L>
void multinomial_sample(const L* logits, int64_t N, int64_t V, float temperature, const rng::Stream& stream,
                        int32_t* samples, cudaStream_t cuda_stream, const int32_t* row_keys = nullptr);

}  // namespace coco::kernels::cuda
