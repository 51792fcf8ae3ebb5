// Per-row arithmetic of the corrective LM loss (semantics in kernels/corrective_lm.h), shared by the
// CPU reference (in double) and the CUDA kernel (in float) so both backends treat every special
// case alike.
#pragma once
#include <cmath>

#include "engine/runtime/cuda_api.h"
#include "kernels/corrective_lm.h"

namespace coco::kernels::detail {

__host__ __device__ inline float clm_exp(float x) { return expf(x); }
__host__ __device__ inline double clm_exp(double x) { return exp(x); }
__host__ __device__ inline float clm_log1p(float x) { return log1pf(x); }
__host__ __device__ inline double clm_log1p(double x) { return log1p(x); }

// log(1 + exp(x)) without overflow.
template <class F>
__host__ __device__ inline F clm_softplus(F x) {
  const F magnitude = x < F(0) ? -x : x;
  return (x > F(0) ? x : F(0)) + clm_log1p(clm_exp(-magnitude));
}

template <class F>
struct CorrectiveLmRow {
  F loss;    // loss_i
  F weight;  // d loss_i / d ce_i
};

// ce: the row's cross-entropy, copy_logit: c_i, copied: samples[i] == targets[i].
template <class F>
__host__ __device__ inline CorrectiveLmRow<F> corrective_lm_row(F ce, F copy_logit, bool copied,
                                                                CorrectiveLmForm form) {
  const F log_p0 = -clm_softplus(copy_logit);  // log(1 - sigmoid(c))
  if (form == CorrectiveLmForm::code) {
    const F p0 = clm_exp(log_p0);
    return {p0 * ce, p0};
  }
  const F log_lm = log_p0 - ce;  // log(p0 * p_t)
  if (!copied) return {-log_lm, F(1)};
  const F log_p1 = -clm_softplus(-copy_logit);  // log(sigmoid(c))
  // log(p1 + p0 p_t) as a log-add-exp; a NaN in either term lands in `high` and propagates.
  const bool lm_first = !(log_p1 > log_lm);
  const F high = lm_first ? log_lm : log_p1, low = lm_first ? log_p1 : log_lm;
  // p1 = 0 and p_t = 0: the mixture is p0 * p_t alone (weight 1) and its log is -inf.
  if (high == -static_cast<F>(INFINITY)) return {static_cast<F>(INFINITY), F(1)};
  const F log_mixture = high + clm_log1p(clm_exp(low - high));
  return {-log_mixture, clm_exp(log_lm - log_mixture)};
}

}  // namespace coco::kernels::detail
