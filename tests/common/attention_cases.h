// Attention problems shared by the attention kernel tests (CUDA vs reference, fast CPU vs reference):
// a shape with optional bias, dropout and right-padded keys, its key mask and random inputs.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/rng/philox.h"
#include "kernels/attention.h"
#include "tests/common/kernel_check.h"

namespace coco::testing {

struct AttentionCase {
  kernels::AttentionShape shape;
  bool bias;
  float dropout_p;
  int padded_keys;  // keys padded at the end of every batch row but the first (which has none)
};

inline std::string describe(const AttentionCase& c) {
  return "B=" + std::to_string(c.shape.batch) + " H=" + std::to_string(c.shape.heads) +
         " T=" + std::to_string(c.shape.seq_len) + " Dh=" + std::to_string(c.shape.head_dim) + (c.bias ? " bias" : "") +
         " p=" + std::to_string(c.dropout_p) + " pad=" + std::to_string(c.padded_keys);
}

inline kernels::AttentionDropout attention_test_dropout(float p) {
  return kernels::AttentionDropout{p, rng::Stream(1234, 7, rng::Purpose::dropout_attention, 3)};
}

// (B, T) key mask: 1 = attend; every row but the first loses its last `padded_keys` keys.
template <class Mask>
std::vector<Mask> attention_key_mask(const AttentionCase& c) {
  std::vector<Mask> mask(static_cast<size_t>(c.shape.batch * c.shape.seq_len), Mask(1));
  for (int64_t b = 1; b < c.shape.batch; ++b)
    for (int64_t j = std::max<int64_t>(0, c.shape.seq_len - c.padded_keys); j < c.shape.seq_len; ++j)
      mask[static_cast<size_t>(b * c.shape.seq_len + j)] = Mask(0);
  return mask;
}

struct AttentionInputs {
  std::vector<float> q, k, v, bias, dout;  // q, k, v, dout: (B, H, T, Dh); bias: (H, T, T) or empty
};

// Uniform inputs (q and k in [-qk_range, qk_range], the rest in [-1, 1]) rounded to T's precision.
template <class T>
AttentionInputs attention_inputs(const AttentionCase& c, unsigned seed, float qk_range = 2.0f) {
  const size_t n = static_cast<size_t>(c.shape.qkv_elements());
  AttentionInputs in;
  in.q = round_through<T>(random_floats(n, seed, -qk_range, qk_range));
  in.k = round_through<T>(random_floats(n, seed + 1, -qk_range, qk_range));
  in.v = round_through<T>(random_floats(n, seed + 2));
  if (c.bias) in.bias = round_through<T>(random_floats(static_cast<size_t>(c.shape.bias_elements()), seed + 3));
  in.dout = round_through<T>(random_floats(n, seed + 4));
  return in;
}

// Inputs whose V is the identity (needs Dh == T), so that the attention output is P_drop itself: the
// dropout pattern and keep scale can be read off the output.
inline AttentionInputs identity_value_inputs(const AttentionCase& c, unsigned seed) {
  AttentionInputs in = attention_inputs<float>(c, seed);
  std::fill(in.v.begin(), in.v.end(), 0.0f);
  for (int64_t bh = 0; bh < c.shape.batch * c.shape.heads; ++bh)
    for (int64_t j = 0; j < c.shape.seq_len; ++j)
      in.v[static_cast<size_t>((bh * c.shape.seq_len + j) * c.shape.seq_len + j)] = 1.0f;
  return in;
}

}  // namespace coco::testing
