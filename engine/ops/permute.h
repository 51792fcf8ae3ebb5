// Attention head split/merge permutes, recorded on the tape (each one's backward is the inverse
// permute). Layouts: kernels/permute.h. f32, f64, bf16 and f16 on both backends.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace coco::ops {

// x: (B, T, H*Dh) -> (B, H, T, Dh). Throws TensorError when the last dimension is not a multiple of heads.
Tensor split_heads(const Tensor& x, int64_t heads);

// x: (B, H, T, Dh) -> (B, T, H*Dh).
Tensor merge_heads(const Tensor& x);

struct QkvHeads {
  Tensor q, k, v;  // each (B, H, T, Dh)
};

// qkv: (B, T, 3*H*Dh), last axis [q | k | v] -> three (B, H, T, Dh) tensors.
// Usable with structured bindings: auto [q, k, v] = ops::split_qkv(qkv, heads);
QkvHeads split_qkv(const Tensor& qkv, int64_t heads);

}  // namespace coco::ops
