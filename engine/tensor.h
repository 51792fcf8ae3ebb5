// Tensor: a contiguous row-major array of up to five dimensions on the CPU or a CUDA device.
//
// Tensors are reference-counted handles: copying a Tensor shares its storage. Views (rows(),
// reshape(), detach()) share storage without copying. Shape, dtype and device mismatches throw
// TensorError with a message naming the op and both shapes.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/shape.h"

namespace coco {

class TensorError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// A block of memory owned by the caching allocator (cuda) or the heap (cpu).
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::cpu;
  cudaStream_t stream = nullptr;  // stream the block was allocated on (caching allocator reuse)
  ~Storage();
};

struct AutogradMeta;

template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::f32;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::f64;
}
template <>
constexpr DType dtype_of<__nv_bfloat16>() {
  return DType::bf16;
}
template <>
constexpr DType dtype_of<__half>() {
  return DType::f16;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::i32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::i64;
}
template <>
constexpr DType dtype_of<uint8_t>() {
  return DType::u8;
}

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dtype, Device device = Device::cpu);
  static Tensor zeros(const Shape& shape, DType dtype, Device device = Device::cpu);
  static Tensor full(const Shape& shape, double value, DType dtype, Device device = Device::cpu);
  // Copies `shape.numel()` elements of `dtype` from host memory.
  static Tensor from_host(const void* data, const Shape& shape, DType dtype, Device device = Device::cpu);
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu) {
    if (static_cast<int64_t>(values.size()) != shape.numel())
      throw TensorError("Tensor::from_vector: " + std::to_string(values.size()) + " values for shape " + shape.str());
    return from_host(values.data(), shape, dtype_of<T>(), device);
  }

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const;
  int rank() const { return shape().rank(); }
  int64_t size(int dim) const { return shape()[dim]; }
  int64_t numel() const { return shape().numel(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  DType dtype() const;
  Device device() const;
  bool is_cuda() const { return device() == Device::cuda; }

  void* data() const;
  // Typed pointer; throws when T does not match the dtype.
  template <class T>
  T* data_as() const {
    check_dtype(dtype_of<T>(), "data_as");
    return static_cast<T*>(data());
  }

  Tensor to(Device device) const;
  Tensor to(DType dtype) const;  // conversion between any two dtypes, on the tensor's device
  Tensor clone() const;
  // Rows [begin, end) of the leading dimension; shares storage.
  Tensor rows(int64_t begin, int64_t end) const;
  // Same elements, another shape of equal numel; shares storage. Not recorded on the tape (use
  // ops::reshape for a differentiable reshape).
  Tensor view(const Shape& shape) const;
  // Copies `source` (same shape and dtype, any device) into this tensor's storage.
  void copy_from(const Tensor& source);
  void zero_();
  void fill_(double value);

  // Host copies. to_vector<T> requires T to match the dtype; to_f64 converts any numeric dtype.
  template <class T>
  std::vector<T> to_vector() const {
    check_dtype(dtype_of<T>(), "to_vector");
    std::vector<T> out(static_cast<size_t>(numel()));
    copy_to_host(out.data());
    return out;
  }
  std::vector<double> to_f64() const;
  double item() const;  // single-element tensor as double

  // ---- autograd
  bool requires_grad() const;
  Tensor& set_requires_grad(bool required = true);
  // Gradient accumulated by Tape::backward (undefined before the first backward reaches it).
  Tensor grad() const;
  void zero_grad();   // sets the accumulated gradient to zeros (keeps the buffer)
  void clear_grad();  // drops the gradient buffer
  // dtype of this tensor's gradient buffer (default: the tensor's dtype). Lets bf16 working weights
  // accumulate f32 gradients.
  DType grad_dtype() const;
  Tensor& set_grad_dtype(DType dtype);
  // A handle to the same storage that is not tracked by autograd.
  Tensor detach() const;

  const std::string& name() const;
  Tensor& set_name(std::string name);

  // Identity: two handles to the same tensor (not merely equal values).
  bool same(const Tensor& other) const { return impl_ == other.impl_; }
  const std::shared_ptr<AutogradMeta>& autograd_meta() const;
  const std::shared_ptr<Storage>& storage() const;
  // True when no other handle or view shares this tensor's storage (its buffer may be adopted).
  bool exclusively_owned() const;

  void check_dtype(DType expected, const char* op) const;

 private:
  struct Impl;
  explicit Tensor(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  const Impl& impl(const char* op) const;
  void copy_to_host(void* out) const;
  std::shared_ptr<Impl> impl_;
};

// Per-tensor autograd state, shared by the tensor and the tape nodes that produce or consume it.
struct AutogradMeta {
  Tensor grad;  // accumulated gradient (leaves: kept after backward)
  DType grad_dtype = DType::f32;
  bool is_leaf = true;  // false once an op recorded on a tape produced it
  Shape shape;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  std::string name;
};

// Argument checks shared by ops: they throw TensorError naming the op and both shapes.
void check_same_shape(const char* op, const Tensor& a, const Tensor& b);
void check_same_device(const char* op, const Tensor& a, const Tensor& b);
void check_same_dtype(const char* op, const Tensor& a, const Tensor& b);
void check_rank(const char* op, const Tensor& t, int rank);
void check_defined(const char* op, const Tensor& t, const char* what);

}  // namespace coco
