// Internal helpers of the elementwise / reduction / linear ops: dtype dispatch over the floating
// types each backend supports, argument descriptions for error messages, and device scratch.
#pragma once
#include <string>
#include <type_traits>

#include "engine/device.h"
#include "engine/tensor.h"

namespace coco::ops::detail {

// "'name' (4, 7) bf16 on cuda"
inline std::string describe(const Tensor& t) {
  if (!t.defined()) return "an undefined tensor";
  std::string s = t.shape().str() + " " + dtype_name(t.dtype()) + " on " + device_name(t.device());
  if (!t.name().empty()) s = "'" + t.name() + "' " + s;
  return s;
}

// Calls fn(std::type_identity<T>{}) with T the element type of `t`: float or double on the CPU;
// float, double, __nv_bfloat16 or __half on CUDA. Other dtypes throw TensorError naming the op.
template <class Fn>
decltype(auto) dispatch_float(const char* op, const Tensor& t, Fn&& fn) {
  const DType dtype = t.dtype();
  if (dtype == DType::f32) return fn(std::type_identity<float>{});
  if (dtype == DType::f64) return fn(std::type_identity<double>{});
  if (t.device() == Device::cuda) {
    if (dtype == DType::bf16) return fn(std::type_identity<__nv_bfloat16>{});
    if (dtype == DType::f16) return fn(std::type_identity<__half>{});
    throw TensorError(std::string(op) + ": CUDA tensors must be f32, f64, bf16 or f16, got " + describe(t));
  }
  throw TensorError(std::string(op) + ": CPU tensors must be f32 or f64 (convert 16-bit tensors with to(DType)), got " +
                    describe(t));
}

// Device scratch of at least `bytes` bytes (from the caching allocator, so reuse is cheap).
inline Tensor cuda_workspace(size_t bytes) {
  return Tensor::empty(Shape{static_cast<int64_t>(bytes > 0 ? bytes : 1)}, DType::u8, Device::cuda);
}

// The gradient arriving at an op's output, in the dtype its kernels use.
inline Tensor as_dtype(const Tensor& t, DType dtype) { return t.dtype() == dtype ? t : t.to(dtype); }

}  // namespace coco::ops::detail
