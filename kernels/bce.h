// Binary cross-entropy with logits for the token-level heads: replaced-token detection
// (`lucidrains`, target 1 = replaced) and the copy head (`paper`, target 1 = original). The caller
// always passes the "replaced" flags; the convention picks the target.
//
// Semantics (both backends):
//   valid i:  valid == nullptr or valid[i] != 0
//   y_i    = replaced[i] != 0 (replaced_is_one)   or   replaced[i] == 0 (original_is_one)
//   l_i    = softplus(y_i ? -x_i : x_i) = max(z, 0) + log1p(exp(-|x_i|))   (stable for any x, incl. +-inf)
//   loss   = sum over valid of l_i / count (0 when no position is valid)
//   dx_i   = g / count * (sigmoid(x_i) - y_i) for valid i, 0 otherwise
//   correct: valid positions with (x_i > 0) == y_i
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

enum class BceLabels : int32_t {
  replaced_is_one = 0,  // lucidrains RTD: target 1 = the token was replaced
  original_is_one = 1,  // paper copy head: target 1 = the token is the original
};

// Slots of the int32 `counts` array (length kBceCounts) the forward fills.
inline constexpr int kBceCountCorrect = 0;
inline constexpr int kBceCountValid = 1;
inline constexpr int kBceCounts = 2;

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// logits: (n), replaced: (n) 0/1 flags, valid: (n) or nullptr -> loss (1), counts (kBceCounts)
template <class T>
void bce_with_logits_forward(const T* logits, const uint8_t* replaced, const uint8_t* valid, int64_t n,
                             BceLabels labels, T* loss, int32_t* counts);

// dlogits: (n), fully written; dloss: (1) upstream gradient; counts from the forward.
template <class T>
void bce_with_logits_backward(const T* logits, const uint8_t* replaced, const uint8_t* valid, const int32_t* counts,
                              int64_t n, BceLabels labels, const T* dloss, T* dlogits);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Bytes of device scratch the CUDA forward needs for n positions (per-block partial sums).
size_t bce_workspace_bytes(int64_t n);

// Device pointers. T: float, __nv_bfloat16, __half (f32 math). loss (1) f32, counts (kBceCounts)
// int32, workspace of bce_workspace_bytes(n) bytes (256-byte aligned, as cudaMalloc returns).
// Deterministic: fixed per-block partials, summed in a fixed order by one block.
template <class T>
void bce_with_logits_forward(const T* logits, const uint8_t* replaced, const uint8_t* valid, int64_t n,
                             BceLabels labels, float* loss, int32_t* counts, void* workspace, cudaStream_t stream);

// dloss: (1) f32 on the device.
template <class T>
void bce_with_logits_backward(const T* logits, const uint8_t* replaced, const uint8_t* valid, const int32_t* counts,
                              int64_t n, BceLabels labels, const float* dloss, T* dlogits, cudaStream_t stream);

}  // namespace coco::kernels::cuda
