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
  Tensor row_count;        // (B) i32, selected positions per row (the real count N is their sum)
  // The selected positions in a fixed capacity, so that nothing downstream needs N on the host:
  Tensor positions;      // (capacity) i32: flat indices row * T + pos, row-major, then -1 (padding)
  Tensor gather_rows;    // (capacity) i32: `positions` with the padding as 0, a valid row for gathers
  Tensor targets;        // (capacity) i32: the original tokens at `positions` (MLM targets), -1 at padding
  int64_t capacity = 0;  // B * max_selected_per_row(config, T)
};

// The most positions select_mask selects in one row of length T: ceil(mask_prob * T) (lucidrains
// selects ceil(mask_prob * n_eligible), the paper floor(mask_prob * n + U), both at most this).
int64_t max_selected_per_row(const kernels::MaskingConfig& config, int64_t T);

// tokens: (B, T) i32 on the CPU or CUDA (rows right-padded, [CLS] first). The shapes depend on B, T
// and the config only: no synchronisation. Throws TensorError for a bad shape, dtype or device and
// std::invalid_argument for a bad config. `first_row`: the global row of tokens' row 0 (a data-parallel
// rank's rows of the global batch); every draw is keyed by the global row (kernels/masking.h).
MaskedBatch select_mask(const Tensor& tokens, const kernels::MaskingConfig& config, uint64_t seed, rng::StepKey step,
                        uint64_t first_row = 0);

// (B, T) u8 key-padding mask of a token batch: 1 where the token is not pad_id.
Tensor key_mask(const Tensor& tokens, int32_t pad_id);
// (B, T) u8 mask of the first length[b] positions of each row; length: (B) i32.
Tensor length_mask(const Tensor& length, int64_t T);
// (1) i32: the number of non-zero elements of a u8 tensor, on its device.
Tensor count_nonzero(const Tensor& flags);

struct CropView {
  Tensor tokens;  // (B, T) i32: [CLS] + kept tokens + pads
  Tensor length;  // (B) i32: non-pad length of each crop row (positions >= length are padding)
};

CropView crop_view(const Tensor& tokens, const kernels::MaskingConfig& config, uint64_t seed, rng::StepKey step,
                   uint64_t first_row = 0);

struct Corruption {
  Tensor tokens;    // (B, T) i32: original tokens with the samples at the selected positions
  Tensor replaced;  // (B, T) u8: 1 where the sample differs from the original
  Tensor labels;    // (B, T) f32: per `convention`, 0 at pads
};

// tokens: (B, T) i32; positions, samples: (N) i32 on the same device (positions distinct, e.g. from
// select_mask; -1 marks padding and is skipped). Other positions outside [0, B*T) are rejected with
// TensorError (checked on the host for CPU tensors; on CUDA they are skipped by the kernel, so
// validate upstream).
Corruption corrupt(const Tensor& tokens, const Tensor& positions, const Tensor& samples, int32_t pad_id,
                   kernels::LabelConvention convention);

}  // namespace coco::ops
