// A running log-sum-exp with argmax, mergeable in any tree shape: the state the fused cross-entropy
// and the contrastive losses reduce over a row of logits.
//   max:  largest non-NaN value seen (-inf when none)
//   rest: sum of exp(x - max) over the other values; -1 when empty; NaN once a NaN was seen
//   best_value / best_index: the argmax candidate (NaN first, then larger values, then lower index)
// logsumexp = max + log1p(rest): exact for the winning term, so near-zero losses keep their precision.
#pragma once
#include <climits>

#include "engine/runtime/launch.cuh"

namespace coco::kernels::detail {

struct LogSumExpState {
  float max;
  float rest;
  float best_value;
  int best_index;
};

__device__ __forceinline__ LogSumExpState empty_logsumexp_state() {
  return LogSumExpState{-INFINITY, -1.0f, -INFINITY, INT_MAX};
}

// Argmax order: NaN ranks first, then larger values; ties go to the lower index. A total order, so
// the tree's result does not depend on the shape of the tree.
__device__ __forceinline__ bool ranks_before(float v1, int i1, float v2, int i2) {
  const bool nan1 = v1 != v1, nan2 = v2 != v2;
  if (nan1 != nan2) return nan1;
  if (!nan1 && v1 != v2) return v1 > v2;
  return i1 < i2;
}

__device__ __forceinline__ void absorb(LogSumExpState& s, float x, int j) {
  if (x > s.max) {
    s.rest = (1.0f + s.rest) * expf(s.max - x);  // the old terms, rescaled; empty: 0 * 0 = 0
    s.max = x;
  } else if (x != -INFINITY) {  // -inf adds nothing (and -inf - -inf would be NaN)
    s.rest += expf(x - s.max);
  }
  if (ranks_before(x, j, s.best_value, s.best_index)) {
    s.best_value = x;
    s.best_index = j;
  }
}

// a <- a (+) b. The side holding the larger maximum keeps its 1; the other side's whole sum is
// rescaled into rest. An empty side contributes nothing; a NaN rest stays NaN.
__device__ __forceinline__ void merge(LogSumExpState& a, const LogSumExpState& b) {
  if (b.rest != -1.0f) {
    if (a.rest == -1.0f) {
      a.max = b.max;
      a.rest = b.rest;
    } else if (a.max >= b.max) {
      a.rest += (1.0f + b.rest) * expf(b.max - a.max);
    } else {
      a.rest = b.rest + (1.0f + a.rest) * expf(a.max - b.max);
      a.max = b.max;
    }
  }
  if (ranks_before(b.best_value, b.best_index, a.best_value, a.best_index)) {
    a.best_value = b.best_value;
    a.best_index = b.best_index;
  }
}

__device__ __forceinline__ float logsumexp_of(const LogSumExpState& s) {
  if (s.max == INFINITY || s.rest != s.rest) return NAN;
  return s.max + log1pf(s.rest);  // empty or all -inf: -inf + log1p(-1) = -inf
}

}  // namespace coco::kernels::detail
