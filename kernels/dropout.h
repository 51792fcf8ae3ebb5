// Dropout driven by a counter-based Philox stream (engine/rng/philox.h).
//
//   element i is dropped iff rng.uniform(index_offset + i) < p (compared in f32); kept elements are
//   scaled by
//   1 / (1 - p):  out[i] = x[i] * (dropped ? 0 : 1 / (1 - p))
// index_offset lets two dropout sites share one stream on disjoint index ranges.
//
// The mask is a pure function of (seed, step, purpose, i), so the CPU and CUDA paths drop exactly the
// same elements, and the backward regenerates the mask from the same stream instead of saving one:
// dx[i] = dout[i] * (dropped ? 0 : 1 / (1 - p)). Like PyTorch, the multiply keeps NaN/Inf semantics
// (a dropped NaN stays NaN, a dropped Inf becomes NaN), so non-finite values are never hidden.
// p must lie in [0, 1]; p = 0 is the identity, p = 1 zeroes every finite element.
#pragma once
#include <cstdint>

#include "engine/rng/philox.h"
#include "engine/runtime/cuda_api.h"

namespace coco::kernels::cpu {

// x, out: (n). Also the backward: dropout_apply(dx, dout, n, p, rng, index_offset).
template <class T>
void dropout_apply(T* out, const T* x, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset = 0);

// mask[i] = 1 when element i is kept, 0 when dropped. mask: (n)
void dropout_mask(uint8_t* mask, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset = 0);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// T: float, __nv_bfloat16 or __half (scale applied in f32).
template <class T>
void dropout_apply(T* out, const T* x, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset,
                   cudaStream_t stream);

void dropout_mask(uint8_t* mask, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset,
                  cudaStream_t stream);

}  // namespace coco::kernels::cuda

namespace coco::kernels::detail {

// Validates p (throws std::invalid_argument naming `op` and p) and returns the f32 drop threshold.
float dropout_threshold(const char* op, double p, int64_t n);

}  // namespace coco::kernels::detail
