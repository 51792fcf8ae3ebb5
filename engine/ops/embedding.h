// Token + absolute position embedding lookup, recorded on the tape. Semantics: kernels/embedding.h.
// CPU tables f32 or f64; CUDA tables f32, bf16 or f16. ids are i32 on the tables' device.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace coco::ops {

// ids: (B, T) i32, token_table: (V, E), position_table: (Tmax >= T, E) or undefined (no position
// term) -> (B, T, E) with out[b, t] = token_table[ids[b, t]] + position_table[t].
//
// An id outside [0, V) throws kernels::TokenIdError (a std::out_of_range) naming the id and its
// (b, t); on CUDA the lookup is clamped (no out-of-bounds read) and the wrapper reads back a flag,
// which synchronizes the current stream.
//
// Backward (deterministic, bitwise reproducible): accumulates into the tables' gradient buffers
// (so a token table tied to an output projection sums both contributions); positions whose id equals
// padding_id (negative: none) add nothing to the token table. Saved: ids.
Tensor embedding(const Tensor& ids, const Tensor& token_table, const Tensor& position_table = Tensor(),
                 int64_t padding_id = -1);

}  // namespace coco::ops
