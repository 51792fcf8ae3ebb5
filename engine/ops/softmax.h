// Softmax and log-softmax over the last dimension, recorded on the tape.
//
// x: (..., C) -> (..., C), same dtype and device. CPU tensors f32 / f64; CUDA tensors f32, f64, bf16,
// f16 (16-bit values with f32 statistics). Special values follow kernels/softmax_math.h: a row of all
// -Inf (fully masked) gives zeros (softmax) / -Inf (log-softmax) and a zero gradient; NaN poisons its
// row. The backward saves only the output.
#pragma once
#include "engine/tensor.h"

namespace coco::ops {

Tensor softmax(const Tensor& x);
Tensor log_softmax(const Tensor& x);

}  // namespace coco::ops
