// Attention core (kernels/attention.h), recorded on the tape:
//   out = dropout(softmax(q k^T / sqrt(Dh) + bias, keys masked by key_mask)) v
#pragma once
#include "engine/rng/philox.h"
#include "engine/tensor.h"
#include "kernels/relpos.h"

namespace coco::ops {

// q, k, v: (B, H, T, Dh), same dtype (CPU f32/f64; CUDA f32/f64/bf16/f16) and device.
// key_mask: (B, T) u8 or i32 on the same device, 1 = attend, 0 = padding; undefined = attend everywhere.
// bias: (H, T, T) additive bias shared across the batch (the relative-position bias), any float dtype
//   (used in q's dtype); undefined = none. Its gradient is the batch-ordered sum of dS (deterministic).
// Dropout on the probabilities with probability `dropout_p` in [0, 1) when `training`, drawn from
//   `stream` at element index ((b*H + h)*T + i)*T + j: the same mask on every backend.
// -> (B, H, T, Dh) of q's dtype. A query whose keys are all padded outputs zeros, gradient zero.
// Saved for the backward: q, k, v and the (B, H, T, T) probabilities; bf16/f16 on CUDA with head dim 16,
// 32, 64 or 128 runs the tensor-core kernels (kernels/attention_tc.h) instead, which save out and the
// (B, H, T) log-sum-exp and recompute the probabilities in the backward.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask, const Tensor& bias,
                 double dropout_p, const rng::Stream& stream, bool training);

// The same with the relative-position bias given by its table: table (num_buckets, H) (the model's
// nn.Embedding layout), bias[h, i, j] = table[bucket(j - i), h] (kernels/relpos.h, T <= max_positions).
// bf16/f16 on CUDA with a tensor-core head dim applies the table inside the kernels (no (H, T, T) bias;
// the table's gradient is reduced deterministically from per-(key tile, b, h) partials, no atomics);
// anything else is
// attention(q, k, v, key_mask, relative_position_bias(table, T, config), ...).
Tensor attention_relative(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                          const Tensor& table, const kernels::RelativePositionConfig& config, double dropout_p,
                          const rng::Stream& stream, bool training);

// Whether attention / attention_relative run the tensor-core kernels for q of this shape, dtype and
// device (bf16/f16 on CUDA with head dim 16, 32, 64 or 128): then attention_relative applies the table
// inside the kernels, otherwise it builds the dense (H, T, T) bias, which callers with several layers
// can build once and share through attention() instead.
bool attention_uses_tensor_cores(const Tensor& q);

}  // namespace coco::ops
