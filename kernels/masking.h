// Mask selection and crop views for the COCO-LM presets (see shared/reference/coco-spec.md).
//
// Every random decision is a Philox draw keyed by (row, position), never by thread scheduling, so the
// CPU reference and the CUDA kernels produce bitwise-identical masks and crops for the same streams:
//
//   select_stream (Purpose::generator_mask_select)
//     u32(row*T + pos, lane 0)   sort key of a position (the K smallest keys, ties by position, are
//                                selected: a uniform K-subset, i.e. the first K of a random permutation)
//     u32(row*T, lane 1)         paper: the U in num_mask = floor(mask_prob * n + U)
//   replace_stream (Purpose::mask_replace), lucidrains
//     u32(row*T + pos, lane 0)   [MASK] when below replace_prob * 2^32
//     u32(row*T + pos, lane 1)   otherwise a random token when below random_token_prob * 2^32
//   token_stream (Purpose::random_token)
//     below(n_allowed, row*T + pos, lane 0)   index of the random token among the allowed ids
//   crop_stream (Purpose::crop)
//     u32(row*T + pos, lane 0)   lucidrains: sort key of a position for the crop subset
//     below(n - span + 1, row*T, lane 1)      paper: start of the contiguous span
//
// Probabilities and fractions are 32.32 fixed point (p * 2^32, see to_fixed_fraction), and the counts
// derived from them are integer arithmetic, so ceil(0.15 * 100) is 15 on every backend (in floating
// point 0.15 * 100 = 15.000000000000002). A product within n * 2^-32 of an integer counts as that
// integer.
//
// Rows are right-padded: n_row = the number of non-pad tokens of a row. `row` is the global row: the
// streams carry the index base first_row * T (rng::Stream::with_index_base) of a batch that holds rows
// first_row.. of a larger (data-parallel) global batch, so its rows draw what they draw there.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/rng/philox.h"
#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

enum class MaskPreset : uint8_t { lucidrains, paper };

// A small set of token ids, passed to kernels by value. Sorted ascending, no duplicates.
inline constexpr int kMaxTokenIdSet = 32;
struct TokenIdSet {
  int32_t count = 0;
  int32_t ids[kMaxTokenIdSet] = {};

  __host__ __device__ bool contains(int32_t id) const {
    for (int32_t i = 0; i < count; ++i)
      if (ids[i] == id) return true;
    return false;
  }
};

// Sorted, deduplicated set; throws std::invalid_argument naming `what` when it has more than
// kMaxTokenIdSet distinct ids or a negative id.
TokenIdSet make_token_id_set(const std::vector<int32_t>& ids, const char* what);

// p in [0, 1] as round(p * 2^32); throws std::invalid_argument naming `what` otherwise.
uint64_t to_fixed_fraction(double p, const char* what);

// p * n in 32.32 fixed point for a 32.32 fraction p and 0 <= n < 2^31, snapped to the nearest
// integer when within n * 2^-32 of it (more than the rounding error of p, at most n / 2 units), so
// counts of exact products such as 0.15 * 20 = 3 come out exact.
__host__ __device__ inline uint64_t fraction_times(uint64_t fraction, int32_t n) {
  const uint64_t un = static_cast<uint64_t>(n);
  const uint64_t x = fraction * un;
  const uint64_t nearest = (x + un) >> 32;
  return x + un - (nearest << 32) <= 2 * un ? nearest << 32 : x;
}
// floor(p * n), ceil(p * n) and floor(p * n + U) with U = draw * 2^-32 uniform in [0, 1) (the
// paper's probabilistic rounding), all in exact integer arithmetic.
__host__ __device__ inline int32_t fraction_floor(uint64_t fraction, int32_t n) {
  return static_cast<int32_t>(fraction_times(fraction, n) >> 32);
}
__host__ __device__ inline int32_t fraction_ceil(uint64_t fraction, int32_t n) {
  return static_cast<int32_t>((fraction_times(fraction, n) + 0xffffffffull) >> 32);
}
__host__ __device__ inline int32_t fraction_floor_plus_uniform(uint64_t fraction, int32_t n, uint32_t draw) {
  return static_cast<int32_t>((fraction_times(fraction, n) + draw) >> 32);
}

// The config-level description of masking and cropping (coco-spec.md, both presets).
struct MaskingConfig {
  MaskPreset preset = MaskPreset::lucidrains;
  int32_t pad_id = 0;
  int32_t cls_id = 1;
  int32_t mask_id = 2;
  // lucidrains: tokens never selected or cropped besides pad and cls (objective.mask_ignore_token_ids).
  std::vector<int32_t> ignore_ids;
  double mask_prob = 0.15;
  // lucidrains: a selected position becomes [MASK] with replace_prob; otherwise a random token with
  // random_token_prob; otherwise it keeps its token. paper: every selected position becomes [MASK].
  double replace_prob = 0.85;
  double random_token_prob = 0.0;
  // Random tokens are drawn uniformly from [0, vocab_size) minus special_ids (pad/cls/sep/mask/unk ...)
  // and ignore_ids. Only needed when random_token_prob > 0.
  int32_t vocab_size = 0;
  std::vector<int32_t> special_ids;
  // lucidrains: subset of min(floor(crop_fraction * n_row), n_eligible) tokens (default 0.5);
  // paper: contiguous span of floor(crop_fraction * n_row) tokens (default 0.9).
  double crop_fraction = 0.5;
};

// Everything a masking or crop kernel needs, by value.
struct MaskKernelParams {
  MaskPreset preset;
  int32_t pad_id, cls_id, mask_id;
  TokenIdSet ignore_ids;
  uint64_t mask_fraction;
  uint64_t replace_threshold;       // P([MASK]) * 2^32
  uint64_t random_token_threshold;  // P(random token | not [MASK]) * 2^32
  int32_t vocab_size;
  int32_t allowed_token_count;       // vocab_size minus the excluded ids below vocab_size
  TokenIdSet random_token_excluded;  // sorted: special_ids + ignore_ids + pad + cls + mask
  uint64_t crop_fraction;
  rng::Stream select_stream, replace_stream, token_stream, crop_stream;
};

// Validates `config` (ids >= 0, probabilities in [0, 1], a non-empty allowed vocabulary when random
// tokens are on) and builds the streams of (seed, step) for the purposes in the table above, based at
// `index_base` (first_row * T; 0 for a batch that starts at global row 0). Throws std::invalid_argument
// naming the offending key.
MaskKernelParams make_mask_params(const MaskingConfig& config, uint64_t seed, rng::StepKey step,
                                  uint64_t index_base = 0);

// Maximum row length T of the selection and crop kernels (one block per row, keys in shared memory).
inline constexpr int32_t kMaxMaskRowLength = 4096;

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// tokens: (B, T) i32. Outputs: selected (B, T) u8 (1 = position chosen for the generator),
// generator_input (B, T) i32 (tokens with [MASK] / random tokens at selected positions),
// row_count (B) i32 (selected positions per row).
//   lucidrains: K = ceil(mask_prob * n_eligible) uniformly among eligible positions (not pad, not
//               cls, not an ignore id); [MASK] / random / keep per position.
//   paper:      K = floor(mask_prob * n_row + U) uniformly among the n_row non-pad positions, then a
//               selected cls is dropped (not redrawn); all selected positions become [MASK].
void select_mask(const int32_t* tokens, int64_t B, int64_t T, const MaskKernelParams& params, uint8_t* selected,
                 int32_t* generator_input, int32_t* row_count);

// The crop view of the original tokens (B, T) i32: crop_tokens (B, T) i32 = [CLS] + kept tokens +
// pads, crop_length (B) i32 = 1 + number of kept tokens (the non-pad length of the crop row; use it
// as the key-padding mask).
//   lucidrains: m = min(floor(crop_fraction * n_row), n_eligible) eligible tokens, a uniform subset kept
//               in original order.
//   paper:      span = floor(crop_fraction * n_row) consecutive tokens of the row's first n_row
//               positions (position 0, the row's [CLS], included, as the official SpanDataset does),
//               starting uniformly in [0, n_row - span].
void crop_view(const int32_t* tokens, int64_t B, int64_t T, const MaskKernelParams& params, int32_t* crop_tokens,
               int32_t* crop_length);

// Flat indices row * T + pos of the selected positions in row-major order. selected: (B, T) u8,
// row_count: (B) as produced by select_mask; positions: (capacity) i32. Row r fills entries
// [sum(row_count[0..r)), + row_count[r]) with its first row_count[r] selected positions; entries at
// or beyond `capacity` are not written (negative counts count as 0).
void masked_positions(const uint8_t* selected, const int32_t* row_count, int64_t B, int64_t T, int32_t* positions,
                      int64_t capacity);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers; same contracts as the CPU versions, bitwise-identical results. Asynchronous.
// Throw std::invalid_argument for B < 0, T < 1 or T > kMaxMaskRowLength.
void select_mask(const int32_t* tokens, int64_t B, int64_t T, const MaskKernelParams& params, uint8_t* selected,
                 int32_t* generator_input, int32_t* row_count, cudaStream_t stream);
void crop_view(const int32_t* tokens, int64_t B, int64_t T, const MaskKernelParams& params, int32_t* crop_tokens,
               int32_t* crop_length, cudaStream_t stream);
void masked_positions(const uint8_t* selected, const int32_t* row_count, int64_t B, int64_t T, int32_t* positions,
                      int64_t capacity, cudaStream_t stream);

}  // namespace coco::kernels::cuda
