// Row gather / scatter by an index list, recorded on the tape (masked positions: gather the hidden
// states of the selected tokens; the gradient is a deterministic scatter-add). Semantics:
// kernels/gather.h. CPU tensors f32 or f64; CUDA tensors f32, bf16 or f16. Indices are i32 on the
// tensor's device; one outside [0, rows) throws TensorError (on CUDA this reads a counter back,
// synchronising the current stream).
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace coco::ops {

// src: (N, D) or (..., D) (every leading index is a row), index: (M) -> (M, D), out[m] = src[index[m]].
// Backward: a scatter-add into src's gradient; repeated indices add in increasing m.
Tensor gather_rows(const Tensor& src, const Tensor& index);

// src: (M, D), index: (M) -> (rows, D), zero except out[index[m]] += src[m] (increasing m).
// Backward: a gather.
Tensor scatter_rows(const Tensor& src, const Tensor& index, int64_t rows);

}  // namespace coco::ops
