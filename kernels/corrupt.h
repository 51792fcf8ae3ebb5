// The corrupted sequence for the main model and its token labels: the original tokens with the
// generator's samples at the masked positions, replaced = (sample != original), and the label
// convention of each preset:
//   LabelConvention::replaced_is_one  (lucidrains, ELECTRA):  label 1 = replaced, 0 = original
//   LabelConvention::original_is_one  (paper's copy head):    label 1 = original, 0 = replaced
// Labels at pad positions are 0 under both conventions (the losses average over non-pad positions).
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

enum class LabelConvention : uint8_t { replaced_is_one, original_is_one };

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// tokens: (total) i32 original (B * T flattened); positions: (N) distinct flat indices into tokens
// (masked_positions); samples: (N) i32. Outputs: corrupted (total) i32, replaced (total) u8, labels
// (total) f32 or nullptr. Positions outside [0, total) are skipped.
void corrupt_tokens(const int32_t* tokens, int64_t total, const int32_t* positions, const int32_t* samples, int64_t N,
                    int32_t pad_id, LabelConvention convention, int32_t* corrupted, uint8_t* replaced, float* labels);

// targets[k] = tokens[positions[k]] (the generator's MLM targets); -1 for a position outside [0, total).
void gather_tokens(const int32_t* tokens, int64_t total, const int32_t* positions, int64_t N, int32_t* targets);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers; same contracts and bits as the CPU versions. Asynchronous. Throw
// std::invalid_argument for negative sizes.
void corrupt_tokens(const int32_t* tokens, int64_t total, const int32_t* positions, const int32_t* samples, int64_t N,
                    int32_t pad_id, LabelConvention convention, int32_t* corrupted, uint8_t* replaced, float* labels,
                    cudaStream_t stream);
void gather_tokens(const int32_t* tokens, int64_t total, const int32_t* positions, int64_t N, int32_t* targets,
                   cudaStream_t stream);

}  // namespace coco::kernels::cuda
