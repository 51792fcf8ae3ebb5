// Row gather and its gradient, a deterministic scatter-add (masked positions: gather the hidden
// states of the selected tokens, scatter their gradient back).
//
//   gather:       out[m, :] = src[index[m], :]
//   scatter-add:  out[n, :] += sum over m with index[m] == n of src[m, :], the terms added in
//                 increasing m (so repeated indices give the same bits on every run)
// Indices outside [0, rows) never cause an out-of-bounds access: the CPU versions throw before
// writing anything; the CUDA versions skip them (gather writes a zero row) and count them in
// *invalid, which the ops layer turns into an error.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels::cpu {

// src: (src_rows, dim), index: (count) -> out: (count, dim)
template <class T>
void gather_rows(const T* src, int64_t src_rows, int64_t dim, const int32_t* index, int64_t count, T* out);

// src: (count, dim), index: (count) -> out: (out_rows, dim), accumulated into
template <class T>
void scatter_add_rows(const T* src, const int32_t* index, int64_t count, int64_t dim, T* out, int64_t out_rows);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// T: float, __nv_bfloat16, __half. invalid: (1) int32 on the device, overwritten with the number of
// index values outside [0, src_rows) (their rows are zero), or added to when `accumulate_invalid`
// (a running error counter, engine/ops/device_checks.h).
template <class T>
void gather_rows(const T* src, int64_t src_rows, int64_t dim, const int32_t* index, int64_t count, T* out,
                 int32_t* invalid, cudaStream_t stream, bool accumulate_invalid = false);

// Bytes of device scratch scatter_add_rows needs.
size_t scatter_workspace_bytes(int64_t count, int64_t out_rows);

// Counting sort of the positions by destination row (integer atomics only), then one block per
// destination row adds its sources in increasing position order, in f32, onto out.
// (Src, Dst): (float, float), (bf16, bf16), (bf16, float), (half, half), (half, float).
template <class Src, class Dst>
void scatter_add_rows(const Src* src, const int32_t* index, int64_t count, int64_t dim, Dst* out, int64_t out_rows,
                      int32_t* invalid, void* workspace, cudaStream_t stream);

}  // namespace coco::kernels::cuda
