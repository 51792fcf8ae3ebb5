// Multi-tensor kernels (AdamW, gradient norm, non-finite check) launch one block per chunk of a fixed
// number of elements, tensors back to back; each descriptor records its first chunk. This is the
// device side of that layout: which tensor a block's chunk belongs to and which elements it covers.
#pragma once
#include <cstdint>

#include "engine/runtime/launch.cuh"

namespace coco::kernels::detail {

template <class Desc>
struct TensorChunk {
  Desc desc;      // the tensor the chunk belongs to
  int64_t begin;  // elements [begin, end) of that tensor
  int64_t end;
};

// descs: (num_tensors) with non-decreasing first_chunk; `chunk` < the total chunk count.
template <class Desc>
__device__ __forceinline__ TensorChunk<Desc> locate_chunk(const Desc* __restrict__ descs, int num_tensors,
                                                          int64_t chunk, int64_t chunk_elements) {
  int lo = 0, hi = num_tensors - 1;  // last descriptor whose first_chunk <= chunk
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (descs[mid].first_chunk <= chunk)
      lo = mid;
    else
      hi = mid - 1;
  }
  const Desc d = descs[lo];
  const int64_t begin = (chunk - d.first_chunk) * chunk_elements;
  const int64_t end = begin + chunk_elements < d.numel ? begin + chunk_elements : d.numel;
  return {d, begin, end};
}

}  // namespace coco::kernels::detail
