// CPU relative-position buckets, inverse index, bias gather and its deterministic backward.
#include "kernels/relpos.h"

#include <stdexcept>
#include <string>
#include <vector>

namespace coco::kernels {

void check_relative_position_config(const RelativePositionConfig& c, int64_t seq_len, const char* op) {
  const std::string where = std::string(op) + ": ";
  if (c.num_buckets < 4)
    throw std::invalid_argument(where + "num_buckets " + std::to_string(c.num_buckets) + " must be at least 4");
  const int max_exact = c.num_buckets / 4;
  if (c.max_distance - 1 <= max_exact)
    throw std::invalid_argument(where + "max_distance " + std::to_string(c.max_distance) +
                                " must exceed num_buckets/4 + 1 = " + std::to_string(max_exact + 1));
  if (c.max_positions < 1)
    throw std::invalid_argument(where + "max_positions " + std::to_string(c.max_positions) + " must be at least 1");
  if (seq_len < 1 || seq_len > c.max_positions)
    throw std::invalid_argument(where + "sequence length " + std::to_string(seq_len) +
                                " must be in [1, max_positions = " + std::to_string(c.max_positions) + "]");
  if (seq_len > 46340)
    throw std::invalid_argument(where + "sequence length " + std::to_string(seq_len) + ": T*T must stay below 2^31");
}

}  // namespace coco::kernels

namespace coco::kernels::cpu {

namespace {

void check_bucket(int32_t bucket, int num_buckets, int64_t position, const char* op) {
  if (bucket < 0 || bucket >= num_buckets)
    throw std::invalid_argument(std::string(op) + ": bucket " + std::to_string(bucket) + " at position " +
                                std::to_string(position) + " outside [0, " + std::to_string(num_buckets) + ")");
}

void check_sizes(int64_t heads, int64_t seq_len, int num_buckets, const char* op) {
  if (heads < 0 || seq_len < 0 || num_buckets < 1)
    throw std::invalid_argument(std::string(op) + ": invalid sizes (heads " + std::to_string(heads) + ", seq_len " +
                                std::to_string(seq_len) + ", num_buckets " + std::to_string(num_buckets) + ")");
}

}  // namespace

void relative_position_buckets(int32_t* buckets, int64_t seq_len, const RelativePositionConfig& config) {
  check_relative_position_config(config, seq_len, "kernels::cpu::relative_position_buckets");
  for (int64_t i = 0; i < seq_len; ++i)
    for (int64_t j = 0; j < seq_len; ++j) buckets[i * seq_len + j] = relative_position_bucket(i, j, config);
}

void relative_position_bucket_index(const int32_t* buckets, int64_t seq_len, int num_buckets, int32_t* offsets,
                                    int32_t* positions) {
  const char* op = "kernels::cpu::relative_position_bucket_index";
  check_sizes(1, seq_len, num_buckets, op);
  const int64_t count = seq_len * seq_len;
  if (count > INT32_MAX) throw std::invalid_argument(std::string(op) + ": T*T exceeds the int32 range");
  // Counting sort; filling in ascending position order keeps each bucket's list ascending.
  std::vector<int32_t> next(static_cast<size_t>(num_buckets) + 1, 0);
  for (int64_t p = 0; p < count; ++p) {
    check_bucket(buckets[p], num_buckets, p, op);
    ++next[static_cast<size_t>(buckets[p]) + 1];
  }
  for (int k = 0; k < num_buckets; ++k) next[k + 1] += next[k];
  for (int k = 0; k <= num_buckets; ++k) offsets[k] = next[k];
  for (int64_t p = 0; p < count; ++p) positions[next[buckets[p]]++] = static_cast<int32_t>(p);
}

template <class T>
void relative_position_bias_forward(const T* table, BiasTableLayout layout, const int32_t* buckets, T* bias,
                                    int64_t heads, int64_t seq_len, int num_buckets) {
  const char* op = "kernels::cpu::relative_position_bias_forward";
  check_sizes(heads, seq_len, num_buckets, op);
  const int64_t count = seq_len * seq_len;
  for (int64_t p = 0; p < count; ++p) check_bucket(buckets[p], num_buckets, p, op);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t p = 0; p < count; ++p)
      bias[h * count + p] = table[bias_table_offset(layout, h, buckets[p], heads, num_buckets)];
}

template <class T>
void relative_position_bias_backward(const T* dbias, const int32_t* offsets, const int32_t* positions, T* dtable,
                                     BiasTableLayout layout, int64_t heads, int64_t seq_len, int num_buckets,
                                     bool accumulate) {
  const char* op = "kernels::cpu::relative_position_bias_backward";
  check_sizes(heads, seq_len, num_buckets, op);
  const int64_t count = seq_len * seq_len;
  bool index_ok = offsets[0] == 0 && offsets[num_buckets] == count;
  for (int k = 0; k < num_buckets && index_ok; ++k) index_ok = offsets[k] <= offsets[k + 1];
  if (!index_ok)
    throw std::invalid_argument(std::string(op) + ": bucket offsets are not a non-decreasing cover of the " +
                                std::to_string(count) + " positions of a (T, T) table");
  for (int64_t p = 0; p < count; ++p)
    if (positions[p] < 0 || positions[p] >= count)
      throw std::invalid_argument(std::string(op) + ": position " + std::to_string(positions[p]) +
                                  " outside the table");
  for (int64_t h = 0; h < heads; ++h) {
    for (int k = 0; k < num_buckets; ++k) {
      // Double accumulation keeps the float instantiation a tight reference for the CUDA kernel.
      double sum = 0.0;
      for (int32_t q = offsets[k]; q < offsets[k + 1]; ++q) sum += static_cast<double>(dbias[h * count + positions[q]]);
      T& out = dtable[bias_table_offset(layout, h, k, heads, num_buckets)];
      out = static_cast<T>(accumulate ? static_cast<double>(out) + sum : sum);
    }
  }
}

#define COCO_INSTANTIATE_RELPOS_CPU(T)                                                                             \
  template void relative_position_bias_forward<T>(const T*, BiasTableLayout, const int32_t*, T*, int64_t, int64_t, \
                                                  int);                                                            \
  template void relative_position_bias_backward<T>(const T*, const int32_t*, const int32_t*, T*, BiasTableLayout,  \
                                                   int64_t, int64_t, int, bool);
COCO_INSTANTIATE_RELPOS_CPU(float)
COCO_INSTANTIATE_RELPOS_CPU(double)
#undef COCO_INSTANTIATE_RELPOS_CPU

}  // namespace coco::kernels::cpu
