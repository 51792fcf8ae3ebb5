// Differentiable dtype conversion (mixed precision: a bf16 working copy of an f32 tensor, or f32
// logits from bf16 activations). Conversion rules: kernels/cast_convert.h.
#pragma once
#include "engine/tensor.h"

namespace coco::ops {

// x converted to `dtype` on its device; x itself when the dtype already matches. Recorded on the
// tape when both dtypes are floating point: the backward converts the gradient back to x's dtype.
// Integer conversions are not differentiable (not recorded).
Tensor cast(const Tensor& x, DType dtype);

}  // namespace coco::ops
