// Vocabulary cross-entropy (generator MLM loss, corrective LM loss): log-softmax + NLL over rows of
// logits fused into one pass per row, with an ignore index, optional per-row weights, mean or sum
// reduction, and the count of rows whose argmax is the target. No probability tensor is ever stored:
// the forward keeps only each row's log-sum-exp; the gradient (softmax - onehot) * row_scale is
// written by the backward, or by the forward when the caller asks for it (dlogits != nullptr).
//
// Semantics (both backends):
//   contributing row i:  targets[i] != ignore_index and 0 <= targets[i] < V
//   ce_i   = logsumexp(logits[i, :]) - logits[i, targets[i]]
//   loss   = sum_i w_i * ce_i / denom        w_i = row_weights[i] (1 when row_weights is null)
//            denom = number of contributing rows (mean; loss = 0 when there are none), 1 (sum)
//   dlogits[i, j] = g * w_i / denom * (softmax(logits[i, :])_j - [j == targets[i]]), 0 for other rows
//   correct: contributing rows whose argmax equals the target (argmax: NaN ranks first, then larger
//            values, ties go to the lowest index)
// Rows whose target is neither ignore_index nor in range contribute nothing and are counted in
// counts[kCountInvalid]; the ops layer turns a non-zero count into an error. A row containing NaN
// or +inf has a NaN log-sum-exp (so a NaN loss when it contributes); a row of -inf has -inf.
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

enum class LossReduction : int32_t { mean = 0, sum = 1 };

// Slots of the int32 `counts` array (length kCrossEntropyCounts) the forward fills.
inline constexpr int kCountCorrect = 0;  // contributing rows whose argmax equals the target
inline constexpr int kCountRows = 1;     // contributing rows (the mean's denominator)
inline constexpr int kCountInvalid = 2;  // rows with a target outside [0, V) that is not ignore_index
inline constexpr int kCrossEntropyCounts = 3;

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// logits: (rows, vocab), targets: (rows), row_weights: (rows) or nullptr
// loss: (1), row_loss: (rows) unweighted ce_i (0 for rows that do not contribute),
// row_lse: (rows) logsumexp of every row, counts: (kCrossEntropyCounts)
// dlogits: (rows, vocab) or nullptr; when given, also writes the gradient for an upstream gradient
// g = dlogits_scale. dlogits may alias logits (each element is read before it is overwritten).
template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, const T* row_weights, int64_t rows, int64_t vocab,
                           int32_t ignore_index, LossReduction reduction, T* loss, T* row_loss, T* row_lse,
                           int32_t* counts, T* dlogits = nullptr, T dlogits_scale = T(1));

// Gradient for an upstream gradient *dloss (1), from the forward's row_lse and counts.
// dlogits: (rows, vocab), fully written; may alias logits.
template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* row_weights, const T* row_lse,
                            const int32_t* counts, int64_t rows, int64_t vocab, int32_t ignore_index,
                            LossReduction reduction, const T* dloss, T* dlogits);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers; same contract as the CPU versions with f32 statistics. T: float, __nv_bfloat16,
// __half (f32 math throughout). row_weights (rows) f32 or nullptr; loss (1), row_loss (rows),
// row_lse (rows) f32; counts (kCrossEntropyCounts) int32. Asynchronous on `stream`.
template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, const float* row_weights, int64_t rows,
                           int64_t vocab, int32_t ignore_index, LossReduction reduction, float* loss, float* row_loss,
                           float* row_lse, int32_t* counts, T* dlogits, float dlogits_scale, cudaStream_t stream);

// dloss: (1) f32 on the device (read by the kernel, no host synchronisation).
template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const float* row_weights, const float* row_lse,
                            const int32_t* counts, int64_t rows, int64_t vocab, int32_t ignore_index,
                            LossReduction reduction, const float* dloss, T* dlogits, cudaStream_t stream);

// dlogits *= *scale in place (n elements): turns a gradient the forward wrote for g = 1 into the
// gradient for the actual upstream gradient.
template <class T>
void scale_by_device_scalar(T* values, int64_t n, const float* scale, cudaStream_t stream);

}  // namespace coco::kernels::cuda
