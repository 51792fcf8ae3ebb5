// Element-type conversion, fill and copy of contiguous buffers (used by Tensor::to(DType), fill_,
// zero_, clone). Every pair of coco::DType is supported on both backends with the conversion rules
// of kernels/cast_convert.h, so the CPU and CUDA results are bitwise identical.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/dtype.h"
#include "engine/runtime/cuda_api.h"

namespace coco::kernels::cpu {

// dst[i] = convert<dst_dtype>(src[i]) for i < n.  src: (n) of src_dtype, dst: (n) of dst_dtype.
// src and dst must not overlap unless they are the same pointer with the same dtype (then a no-op).
void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);

// dst[i] = convert<dtype>(value) for i < n (float -> int conversions saturate; NaN -> 0).
void fill(void* dst, DType dtype, double value, int64_t n);

// Byte copy of non-overlapping buffers.
void copy(void* dst, const void* src, size_t bytes);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers; same contract as the CPU versions. Asynchronous on `stream`.
void cast(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n, cudaStream_t stream);
void fill(void* dst, DType dtype, double value, int64_t n, cudaStream_t stream);
// Device-to-device byte copy (cudaMemcpyAsync).
void copy(void* dst, const void* src, size_t bytes, cudaStream_t stream);

}  // namespace coco::kernels::cuda
