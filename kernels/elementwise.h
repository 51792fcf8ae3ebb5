// Elementwise arithmetic on contiguous buffers of equal length: add, sub, mul, scale by a host
// scalar, a + s*b, in-place accumulation and the mul backward.
//
// CPU references are instantiated for float and double. CUDA kernels are instantiated for float,
// double, __nv_bfloat16 and __half; 16-bit inputs are widened to f32, the arithmetic happens in f32
// (f64 for double) and each output element is rounded once. Every output may alias an input of the
// same call (out == a is an in-place update): each element is read before it is written, by the
// same thread.
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

enum class BinaryOp : uint8_t { add, sub, mul };

constexpr const char* binary_op_name(BinaryOp op) {
  switch (op) {
    case BinaryOp::add:
      return "add";
    case BinaryOp::sub:
      return "sub";
    case BinaryOp::mul:
      return "mul";
  }
  return "?";
}

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// out = a (op) b.  a, b, out: (n)
template <class T>
void binary(BinaryOp op, const T* a, const T* b, T* out, int64_t n);

// out = s * x.  x, out: (n)
template <class T>
void scale(const T* x, double s, T* out, int64_t n);

// out = a + s * b.  a, b, out: (n)
template <class T>
void add_scaled(const T* a, const T* b, double s, T* out, int64_t n);

// dst += src.  dst, src: (n)
template <class T>
void add_inplace(T* dst, const T* src, int64_t n);

// Backward of out = a * b: da = dout * b, db = dout * a (overwritten, not accumulated); a null da
// or db is skipped.  dout, a, b, da, db: (n)
template <class T>
void mul_backward(const T* dout, const T* a, const T* b, T* da, T* db, int64_t n);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// Device pointers; same contracts as the CPU versions; asynchronous on `stream`.
template <class T>
void binary(BinaryOp op, const T* a, const T* b, T* out, int64_t n, cudaStream_t stream);

template <class T>
void scale(const T* x, double s, T* out, int64_t n, cudaStream_t stream);

template <class T>
void add_scaled(const T* a, const T* b, double s, T* out, int64_t n, cudaStream_t stream);

// dst += src with the sum formed in f32 (f64 for double) and rounded once to Dst. Instantiated for
// Dst == Src (float, double, bf16, f16) and for an f32 dst with a bf16 or f16 src (f32 gradient
// buffers of 16-bit parameters).
template <class Dst, class Src>
void add_inplace(Dst* dst, const Src* src, int64_t n, cudaStream_t stream);

template <class T>
void mul_backward(const T* dout, const T* a, const T* b, T* da, T* db, int64_t n, cudaStream_t stream);

}  // namespace coco::kernels::cuda
