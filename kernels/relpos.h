// T5-style bucketed relative-position bias (the COCO-LM / fairseq variant: ceil and a sign; see
// coco-lm-research.md section 3.2).
//
//   rel = j - i (key - query); s = sign(rel); n = |rel|
//   half = num_buckets / 2; max_exact = half / 2; max_bucket_val = half - 1 - max_exact
//   large = max_exact + ceil(ln(n / max_exact) / ln((max_distance - 1) / max_exact) * max_bucket_val)
//   signed = s * (n < max_exact ? n : min(large, half - 1))
//   bucket = signed - min(signed over the max_positions x max_positions grid)
//          = signed + offset, offset = -signed(-(max_positions - 1))
//
// The logarithms are evaluated in double on both backends (the reference evaluates them in float;
// the tables agree for |rel| < 512, checked in the research notes and in the tests).
// The bias table is either (H, num_buckets) or, as fairseq's nn.Embedding(num_buckets, H) stores it,
// (num_buckets, H): see BiasTableLayout.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

enum class BiasTableLayout : uint8_t {
  heads_by_buckets,  // table (H, num_buckets)
  buckets_by_heads,  // table (num_buckets, H), fairseq / the model's parameter layout
};

// Offset of element (head h, bucket k) in a table of `heads` x `num_buckets`.
__host__ __device__ inline int64_t bias_table_offset(BiasTableLayout layout, int64_t h, int64_t k, int64_t heads,
                                                     int64_t num_buckets) {
  return layout == BiasTableLayout::heads_by_buckets ? h * num_buckets + k : k * heads + h;
}

struct RelativePositionConfig {
  int num_buckets = 32;
  int max_distance = 128;
  int max_positions = 512;  // the grid over which the minimum bucket is taken (fairseq max_positions)
};

// Throws std::invalid_argument naming the offending field unless num_buckets >= 4,
// max_distance - 1 > num_buckets / 4, max_positions >= 1 and 1 <= seq_len <= max_positions with
// seq_len^2 < 2^31.
void check_relative_position_config(const RelativePositionConfig& config, int64_t seq_len, const char* op);

// The signed bucket of one relative position (key - query), before the offset.
__host__ __device__ inline int relative_position_bucket_signed(int64_t rel, int num_buckets, int max_distance) {
  const int half = num_buckets / 2;
  const int max_exact = half / 2;
  const int max_bucket_val = half - 1 - max_exact;
  const int64_t n = rel < 0 ? -rel : rel;
  int magnitude;
  if (n < max_exact) {
    magnitude = static_cast<int>(n);
  } else {
    const double scaled = log(static_cast<double>(n) / max_exact) /
                          log(static_cast<double>(max_distance - 1) / max_exact) * max_bucket_val;
    const double large = max_exact + ceil(scaled);
    magnitude = large < static_cast<double>(half - 1) ? static_cast<int>(large) : half - 1;
  }
  return rel < 0 ? -magnitude : magnitude;
}

// Bucket index in [0, num_buckets) of key j for query i.
__host__ __device__ inline int relative_position_bucket(int64_t query, int64_t key, const RelativePositionConfig& c) {
  const int offset =
      -relative_position_bucket_signed(-static_cast<int64_t>(c.max_positions - 1), c.num_buckets, c.max_distance);
  return relative_position_bucket_signed(key - query, c.num_buckets, c.max_distance) + offset;
}

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// buckets: (T, T) int32, buckets[i * T + j] = relative_position_bucket(i, j).
void relative_position_buckets(int32_t* buckets, int64_t seq_len, const RelativePositionConfig& config);

// Inverse index of a bucket table for the deterministic backward: the flat positions (i * T + j)
// holding bucket k are positions[offsets[k] .. offsets[k + 1]), ascending.
// buckets: (T, T) -> offsets: (num_buckets + 1), positions: (T * T). Throws on a bucket out of range.
void relative_position_bucket_index(const int32_t* buckets, int64_t seq_len, int num_buckets, int32_t* offsets,
                                    int32_t* positions);

// table: (H, num_buckets) or (num_buckets, H) per `layout`, buckets: (T, T)
// -> bias: (H, T, T), bias[h, i, j] = table(h, buckets[i, j]). Throws on a bucket out of range.
template <class T>
void relative_position_bias_forward(const T* table, BiasTableLayout layout, const int32_t* buckets, T* bias,
                                    int64_t heads, int64_t seq_len, int num_buckets);

// dbias: (H, T, T) -> dtable (layout as the table): dtable(h, k) (+)= sum over positions p of bucket k,
// in ascending order, of dbias[h, p]. Overwrites dtable unless `accumulate`.
template <class T>
void relative_position_bias_backward(const T* dbias, const int32_t* offsets, const int32_t* positions, T* dtable,
                                     BiasTableLayout layout, int64_t heads, int64_t seq_len, int num_buckets,
                                     bool accumulate);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers, asynchronous on `stream`; same contracts as the CPU versions. A bucket outside
// [0, num_buckets) cannot be reported from the device: the forward writes NaN there and the
// backward skips positions outside the (T, T) grid.
void relative_position_buckets(int32_t* buckets, int64_t seq_len, const RelativePositionConfig& config,
                               cudaStream_t stream);

// T = float, double, __nv_bfloat16, __half.
template <class T>
void relative_position_bias_forward(const T* table, BiasTableLayout layout, const int32_t* buckets, T* bias,
                                    int64_t heads, int64_t seq_len, int num_buckets, cudaStream_t stream);

// TGrad: dbias element type (float, double, __nv_bfloat16, __half); TOut: dtable type (TGrad, or float
// for 16-bit TGrad so bf16 tables can keep f32 gradients). Sums in float (double for double) with a
// fixed tree per (h, k): deterministic.
template <class TGrad, class TOut>
void relative_position_bias_backward(const TGrad* dbias, const int32_t* offsets, const int32_t* positions, TOut* dtable,
                                     BiasTableLayout layout, int64_t heads, int64_t seq_len, int num_buckets,
                                     bool accumulate, cudaStream_t stream);

}  // namespace coco::kernels::cuda
