// Corrective language modelling (CLM) loss of the `paper` preset, from the per-row vocabulary
// cross-entropies of the CLM head (kernels/cross_entropy.h, row_loss) and the copy head's logits at
// the same masked positions. The copy probabilities are stop-gradient inputs: they weight the loss
// but receive no gradient from it.
//
//   c_i: copy logit, p1_i = sigmoid(c_i) = P(token is original), p0_i = 1 - p1_i
//   copied_i = (samples[i] == targets[i])   the generator sampled the original token
//   form code  (released loss code):  loss_i = p0_i * ce_i
//                                      weight_i = p0_i
//   form paper (the paper's mixture): loss_i = -log(p1_i * copied_i + p0_i * exp(-ce_i))
//                                      weight_i = p0_i exp(-ce_i) / (p1_i * copied_i + p0_i exp(-ce_i))
//   contributing row: targets[i] != ignore_index; other rows have loss_i = weight_i = 0
//   loss = sum_i loss_i / (number of contributing rows), 0 when there are none
//
// weight_i = d loss_i / d ce_i, so the gradient of `loss` for the logits is the cross-entropy backward
// with row weights weight_i and the mean reduction; for a replaced token (copied_i = 0) the paper
// form's weight is exactly 1 and its loss is ce_i - log p0_i. The paper form is evaluated in log
// space (log p0 = -softplus(c), log p1 = -softplus(-c), log-add-exp), so it stays finite where p_t or
// p1 underflow. A NaN ce_i or copy logit makes loss_i NaN; weight_i is NaN wherever its formula
// reads the NaN (a replaced row's paper weight is 1 whatever ce_i and c_i are).
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

enum class CorrectiveLmForm : int32_t { code = 0, paper = 1 };

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// row_ce, copy_logits: (rows); targets, samples: (rows) i32 -> loss (1), row_weights (rows).
// Sums in double.
template <class T>
void corrective_lm_loss(const T* row_ce, const T* copy_logits, const int32_t* targets, const int32_t* samples,
                        int64_t rows, int32_t ignore_index, CorrectiveLmForm form, T* loss, T* row_weights);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers, f32 throughout (row_ce is the cross-entropy kernel's f32 row_loss); one block,
// a fixed reduction tree (bitwise reproducible). Asynchronous on `stream`.
void corrective_lm_loss(const float* row_ce, const float* copy_logits, const int32_t* targets, const int32_t* samples,
                        int64_t rows, int32_t ignore_index, CorrectiveLmForm form, float* loss, float* row_weights,
                        cudaStream_t stream);

}  // namespace coco::kernels::cuda
