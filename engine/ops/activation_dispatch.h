// Dtype dispatch for ops whose kernels exist for f32/f64 on the CPU and f32/bf16/f16 on CUDA
// (embedding, layernorm, gelu, dropout, the losses, gather/scatter), plus the parameter-gradient buffer dispatch (an
// f32 buffer for 16-bit parameters, or one of the parameter's own dtype).
#pragma once
#include <string>
#include <type_traits>

#include "engine/ops/float_dispatch.h"
#include "engine/tensor.h"

namespace coco::ops::detail {

template <class T>
inline constexpr bool is_cpu_activation_v = std::is_same_v<T, float> || std::is_same_v<T, double>;
template <class T>
inline constexpr bool is_cuda_activation_v =
    std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;

// Calls fn(std::type_identity<T>{}) with T the element type of `t`; throws TensorError naming `op`
// for dtypes the backend's kernels do not provide.
template <class Fn>
void dispatch_activation(const char* op, const Tensor& t, Fn&& fn) {
  const DType dtype = t.dtype();
  if (t.is_cuda()) {
    if (dtype == DType::f32) return fn(std::type_identity<float>{});
    if (dtype == DType::bf16) return fn(std::type_identity<__nv_bfloat16>{});
    if (dtype == DType::f16) return fn(std::type_identity<__half>{});
    throw TensorError(std::string(op) + ": CUDA tensors must be f32, bf16 or f16, got " + describe(t));
  }
  if (dtype == DType::f32) return fn(std::type_identity<float>{});
  if (dtype == DType::f64) return fn(std::type_identity<double>{});
  throw TensorError(std::string(op) + ": CPU tensors must be f32 or f64 (convert 16-bit tensors with to(DType)), got " +
                    describe(t));
}

// For a CUDA parameter of element type T: calls fn(std::type_identity<G>{}) with G = float for an f32
// gradient buffer or G = T for a buffer of the parameter's dtype, and returns true; returns false
// (fn not called) for any other buffer dtype.
template <class T, class Fn>
bool dispatch_cuda_grad_buffer(const Tensor& buffer, Fn&& fn) {
  if (buffer.dtype() == DType::f32) {
    fn(std::type_identity<float>{});
    return true;
  }
  if (buffer.dtype() == dtype_of<T>()) {
    fn(std::type_identity<T>{});
    return true;
  }
  return false;
}

}  // namespace coco::ops::detail
