// Attention head split/merge permutes (pure data movement).
//
//   split_heads:  in (B, T, H*Dh)   -> out (B, H, T, Dh)    out[b,h,t,d] = in[b,t,h*Dh+d]
//   merge_heads:  in (B, H, T, Dh)  -> out (B, T, H*Dh)    (inverse; also the backward of split_heads)
//   split_qkv:    qkv (B, T, 3*H*Dh) -> q, k, v (B, H, T, Dh); the last axis of qkv is [q | k | v],
//                 each H*Dh wide (the concatenated output of the three projections)
//   merge_qkv:    dq, dk, dv (B, H, T, Dh) -> dqkv (B, T, 3*H*Dh)  (backward of split_qkv)
// Outputs are written (=), never accumulated. Inputs and outputs must not overlap.
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

struct HeadShape {
  int64_t batch = 0, seq = 0, heads = 0, head_dim = 0;
  int64_t numel() const { return batch * seq * heads * head_dim; }
};

}  // namespace coco::kernels

namespace coco::kernels::cpu {

template <class T>
void split_heads(T* out, const T* in, const HeadShape& shape);
template <class T>
void merge_heads(T* out, const T* in, const HeadShape& shape);
template <class T>
void split_qkv(T* q, T* k, T* v, const T* qkv, const HeadShape& shape);
template <class T>
void merge_qkv(T* qkv, const T* q, const T* k, const T* v, const HeadShape& shape);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// T: float, double, __nv_bfloat16 or __half. Requires numel < 2^31 per tensor.
template <class T>
void split_heads(T* out, const T* in, const HeadShape& shape, cudaStream_t stream);
template <class T>
void merge_heads(T* out, const T* in, const HeadShape& shape, cudaStream_t stream);
template <class T>
void split_qkv(T* q, T* k, T* v, const T* qkv, const HeadShape& shape, cudaStream_t stream);
template <class T>
void merge_qkv(T* qkv, const T* q, const T* k, const T* v, const HeadShape& shape, cudaStream_t stream);

}  // namespace coco::kernels::cuda
