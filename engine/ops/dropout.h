// Dropout driven by a Philox stream, recorded on the tape. Semantics: kernels/dropout.h.
// CPU tensors f32 or f64; CUDA tensors f32, bf16 or f16.
#pragma once
#include <cstdint>

#include "engine/rng/philox.h"
#include "engine/tensor.h"

namespace coco::ops {

// Element i of x (flat index) is dropped iff stream.uniform(index_offset + i) < p; kept elements are
// scaled by 1 / (1 - p). Returns x itself (no copy, no tape node) when !training or p == 0.
// The backward regenerates the mask from (stream, index_offset) rather than saving one, so nothing
// is saved but the stream (three integers), p and the offset. Same seed/step/purpose => the same
// mask on the CPU and on CUDA.
Tensor dropout(const Tensor& x, double p, const rng::Stream& stream, bool training, uint64_t index_offset = 0);

}  // namespace coco::ops
