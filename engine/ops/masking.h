// Data-side ops of the COCO-LM objective on coco::Tensor: mask selection, crop views and the
// corrupted sequence (kernels/masking.h and kernels/corrupt.h hold the exact semantics). None of them
// has a gradient; nothing is recorded on the tape. Every random decision comes from the Philox streams
// of (seed, step), so CPU and CUDA tensors give bitwise-identical results.
#pragma once
#include <cstdint>

#include "engine/tensor.h"
#include "kernels/corrupt.h"
#include "kernels/masking.h"

namespace coco::ops {

struct MaskedBatch {
  Tensor selected;         // (B, T) u8, 1 = selected for the generator
  Tensor generator_input;  // (B, T) i32, tokens with [MASK] / random tokens at selected positions
  Tensor row_count;        // (B) i32, selected positions per row
  Tensor positions;        // (N) i32, flat indices row * T + pos of the selected positions, row-major
  Tensor targets;          // (N) i32, the original tokens at `positions` (MLM targets)
  int64_t count = 0;       // N
};

// tokens: (B, T) i32 on the CPU or CUDA (rows right-padded, [CLS] first). On CUDA, N is read back to
// size `positions` (one synchronisation of the current stream). Throws TensorError for a bad shape,
// dtype or device and std::invalid_argument for a bad config.
MaskedBatch select_mask(const Tensor& tokens, const kernels::MaskingConfig& config, uint64_t seed, uint64_t step);

struct CropView {
  Tensor tokens;  // (B, T) i32: [CLS] + kept tokens + pads
  Tensor length;  // (B) i32: non-pad length of each crop row (positions >= length are padding)
};

CropView crop_view(const Tensor& tokens, const kernels::MaskingConfig& config, uint64_t seed, uint64_t step);

struct Corruption {
  Tensor tokens;    // (B, T) i32: original tokens with the samples at the selected positions
  Tensor replaced;  // (B, T) u8: 1 where the sample differs from the original
  Tensor labels;    // (B, T) f32: per `convention`, 0 at pads
};

// tokens: (B, T) i32; positions, samples: (N) i32 on the same device (positions distinct, e.g. from
// select_mask). Positions outside [0, B*T) are rejected with TensorError (checked on the host for CPU
// tensors; on CUDA they are skipped by the kernel, so validate upstream).
Corruption corrupt(const Tensor& tokens, const Tensor& positions, const Tensor& samples, int32_t pad_id,
                   kernels::LabelConvention convention);

}  // namespace coco::ops
