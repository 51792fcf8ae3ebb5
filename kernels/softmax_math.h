// Row-softmax arithmetic shared by the CPU references and the CUDA kernels (softmax, log-softmax,
// attention), so that both backends agree on every special case, whatever order they reduce in.
//
// A row is summarised by a running pair (max m, sum s = sum_j exp(x_j - m)). Semantics:
//   * a NaN anywhere in the row makes the whole output row NaN;
//   * two or more +Inf make the row NaN; exactly one +Inf gives NaN at that element and 0 (softmax) /
//     -Inf (log-softmax) elsewhere, like exp(x - max) / sum evaluated literally;
//   * -Inf elements get probability 0;
//   * a row whose elements are all -Inf (a fully masked row) is "empty": softmax outputs zeros,
//     log-softmax outputs -Inf, and the backward gives a zero gradient;
//   * the log-softmax backward gives a zero gradient wherever the output is -Inf (masked inputs).
// These rules only depend on the multiset of values, not on the reduction order, so a sequential CPU
// loop and a tree reduction produce NaN/Inf at the same positions.
#pragma once
#include <cmath>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels::detail {

__host__ __device__ inline float softmax_exp(float x) { return expf(x); }
__host__ __device__ inline double softmax_exp(double x) { return exp(x); }
__host__ __device__ inline float softmax_log(float x) { return logf(x); }
__host__ __device__ inline double softmax_log(double x) { return log(x); }

template <class Acc>
struct SoftmaxStats {
  Acc max;
  Acc sum;
};

template <class Acc>
__host__ __device__ inline SoftmaxStats<Acc> softmax_stats_empty() {
  return {-static_cast<Acc>(INFINITY), Acc(0)};
}

// Folds one element into the running statistics.
template <class Acc>
__host__ __device__ inline void softmax_stats_add(SoftmaxStats<Acc>& st, Acc x) {
  if (x != x) {
    st.sum = x;  // NaN poisons the sum and so the whole row
  } else if (x > st.max) {
    st.sum = st.sum * softmax_exp(st.max - x) + Acc(1);
    st.max = x;
  } else if (x != -static_cast<Acc>(INFINITY)) {
    st.sum += softmax_exp(x - st.max);  // x == max == +Inf gives NaN on purpose
  }
}

// Merges two partial statistics (any order; used by tree reductions).
template <class Acc>
__host__ __device__ inline SoftmaxStats<Acc> softmax_stats_merge(SoftmaxStats<Acc> a, SoftmaxStats<Acc> b) {
  if (b.max > a.max) {
    const SoftmaxStats<Acc> t = a;
    a = b;
    b = t;
  }
  // b.max == -Inf: b holds no finite element; its sum is 0 or NaN, and b.sum * 0 keeps exactly that.
  const Acc scaled = b.max == -static_cast<Acc>(INFINITY) ? b.sum * Acc(0) : b.sum * softmax_exp(b.max - a.max);
  return {a.max, a.sum + scaled};
}

template <class Acc>
__host__ __device__ inline bool softmax_row_empty(const SoftmaxStats<Acc>& st) {
  return st.sum == Acc(0);
}

// exp(x - max) / sum, with the empty-row rule. `inv_sum` = 1 / sum (unused for empty rows).
template <class Acc>
__host__ __device__ inline Acc softmax_value(Acc x, const SoftmaxStats<Acc>& st, Acc inv_sum) {
  if (softmax_row_empty(st)) return Acc(0);
  return softmax_exp(x - st.max) * inv_sum;
}

// x - max - log(sum), with the empty-row rule. `log_sum` = log(sum).
template <class Acc>
__host__ __device__ inline Acc log_softmax_value(Acc x, const SoftmaxStats<Acc>& st, Acc log_sum) {
  if (softmax_row_empty(st)) return -static_cast<Acc>(INFINITY);
  return x - st.max - log_sum;
}

}  // namespace coco::kernels::detail
