#include "engine/tensor.h"

#include <cstdlib>
#include <cstring>

#include "engine/allocator.h"
#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"
#include "kernels/cast.h"

namespace coco {

struct Tensor::Impl {
  std::shared_ptr<Storage> storage;
  size_t offset = 0;  // bytes into storage
  Shape shape;
  DType dtype = DType::f32;
  Device device = Device::cpu;
  bool requires_grad = false;
  std::shared_ptr<AutogradMeta> meta;  // created when grad is required
  std::string name;
};

Storage::~Storage() {
  if (!data) return;
  if (device == Device::cuda)
    CachingAllocator::instance().deallocate(data);
  else
    std::free(data);
}

namespace {

std::shared_ptr<Storage> allocate_storage(size_t bytes, Device device) {
  auto storage = std::make_shared<Storage>();
  storage->bytes = bytes;
  storage->device = device;
  if (device == Device::cuda) {
    if (!cuda_available()) throw CudaError("Tensor: a cuda tensor was requested but no CUDA device is available");
    storage->stream = current_stream();
    storage->data = CachingAllocator::instance().allocate(bytes, storage->stream);
  } else {
    constexpr size_t kAlignment = 64;
    const size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    storage->data = std::aligned_alloc(kAlignment, rounded ? rounded : kAlignment);
    if (!storage->data) throw std::bad_alloc();
  }
  return storage;
}

cudaMemcpyKind copy_kind(Device from, Device to) {
  if (from == Device::cpu) return to == Device::cpu ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice;
  return to == Device::cpu ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice;
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::cpu && src_device == Device::cpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
  COCO_CUDA_CHECK(runtime::memcpy_async(dst, src, bytes, copy_kind(src_device, dst_device), current_stream()));
  if (dst_device == Device::cpu || src_device == Device::cpu)
    COCO_CUDA_CHECK(runtime::stream_synchronize(current_stream()));
}

}  // namespace

const Tensor::Impl& Tensor::impl(const char* op) const {
  if (!impl_) throw TensorError(std::string(op) + ": the tensor is undefined");
  return *impl_;
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Device device) {
  auto impl = std::make_shared<Impl>();
  impl->storage = allocate_storage(static_cast<size_t>(shape.numel()) * dtype_size(dtype), device);
  impl->shape = shape;
  impl->dtype = dtype;
  impl->device = device;
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.zero_();
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_host(const void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  copy_bytes(t.data(), device, data, Device::cpu, t.nbytes());
  return t;
}

const Shape& Tensor::shape() const { return impl("shape").shape; }
DType Tensor::dtype() const { return impl("dtype").dtype; }
Device Tensor::device() const { return impl("device").device; }

void* Tensor::data() const {
  const Impl& i = impl("data");
  return static_cast<char*>(i.storage->data) + i.offset;
}

void Tensor::check_dtype(DType expected, const char* op) const {
  if (dtype() != expected)
    throw TensorError(std::string(op) + ": tensor" + (name().empty() ? "" : " '" + name() + "'") + " of shape " +
                      shape().str() + " has dtype " + dtype_name(dtype()) + ", expected " + dtype_name(expected));
}

Tensor Tensor::to(Device device) const {
  const Impl& i = impl("to(device)");
  Tensor out = empty(i.shape, i.dtype, device);
  copy_bytes(out.data(), device, data(), i.device, nbytes());
  return out;
}

Tensor Tensor::to(DType dtype) const {
  const Impl& i = impl("to(dtype)");
  if (dtype == i.dtype) return clone();
  Tensor out = empty(i.shape, dtype, i.device);
  if (i.device == Device::cpu)
    kernels::cpu::cast(data(), i.dtype, out.data(), dtype, numel());
  else
    kernels::cuda::cast(data(), i.dtype, out.data(), dtype, numel(), current_stream());
  return out;
}

Tensor Tensor::clone() const {
  const Impl& i = impl("clone");
  Tensor out = empty(i.shape, i.dtype, i.device);
  copy_bytes(out.data(), i.device, data(), i.device, nbytes());
  return out;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  const Impl& i = impl("rows");
  if (i.shape.rank() == 0) throw TensorError("rows: a 0-d tensor has no rows");
  if (begin < 0 || end < begin || end > i.shape[0])
    throw TensorError("rows: range [" + std::to_string(begin) + ", " + std::to_string(end) +
                      ") is outside the leading dimension of shape " + i.shape.str());
  auto view = std::make_shared<Impl>();
  view->storage = i.storage;
  const int64_t row_elements = i.shape[0] ? i.shape.numel() / i.shape[0] : 0;
  view->offset = i.offset + static_cast<size_t>(begin * row_elements) * dtype_size(i.dtype);
  view->shape = i.shape.with_dim(0, end - begin);
  view->dtype = i.dtype;
  view->device = i.device;
  return Tensor(std::move(view));
}

Tensor Tensor::view(const Shape& shape) const {
  const Impl& i = impl("view");
  if (shape.numel() != i.shape.numel())
    throw TensorError("view: cannot view shape " + i.shape.str() + " as " + shape.str() + " (element counts differ)");
  auto view = std::make_shared<Impl>(i);
  view->shape = shape;
  view->requires_grad = false;
  view->meta.reset();
  view->name.clear();
  return Tensor(std::move(view));
}

void Tensor::copy_from(const Tensor& source) {
  const Impl& i = impl("copy_from");
  check_defined("copy_from", source, "source");
  check_same_shape("copy_from", *this, source);
  check_same_dtype("copy_from", *this, source);
  copy_bytes(data(), i.device, source.data(), source.device(), nbytes());
}

void Tensor::zero_() {
  const Impl& i = impl("zero_");
  if (nbytes() == 0) return;
  if (i.device == Device::cpu)
    std::memset(data(), 0, nbytes());
  else
    COCO_CUDA_CHECK(runtime::memset_async(data(), 0, nbytes(), current_stream()));
}

void Tensor::fill_(double value) {
  const Impl& i = impl("fill_");
  if (i.device == Device::cpu)
    kernels::cpu::fill(data(), i.dtype, value, numel());
  else
    kernels::cuda::fill(data(), i.dtype, value, numel(), current_stream());
}

void Tensor::copy_to_host(void* out) const {
  const Impl& i = impl("to_vector");
  copy_bytes(out, Device::cpu, data(), i.device, nbytes());
}

std::vector<double> Tensor::to_f64() const {
  const Impl& i = impl("to_f64");
  std::vector<uint8_t> raw(nbytes());
  copy_to_host(raw.data());
  std::vector<double> out(static_cast<size_t>(numel()));
  kernels::cpu::cast(raw.data(), i.dtype, out.data(), DType::f64, numel());
  return out;
}

double Tensor::item() const {
  if (numel() != 1)
    throw TensorError("item: tensor of shape " + shape().str() + " has " + std::to_string(numel()) +
                      " elements, expected exactly 1");
  return to_f64()[0];
}

// ---- autograd

namespace {
std::shared_ptr<AutogradMeta> make_meta(const Shape& shape, DType dtype, Device device, const std::string& name) {
  auto meta = std::make_shared<AutogradMeta>();
  meta->shape = shape;
  meta->dtype = dtype;
  meta->grad_dtype = dtype;
  meta->device = device;
  meta->name = name;
  return meta;
}
}  // namespace

bool Tensor::requires_grad() const { return impl_ && impl_->requires_grad; }

Tensor& Tensor::set_requires_grad(bool required) {
  Impl& i = const_cast<Impl&>(impl("set_requires_grad"));
  if (required && !dtype_is_float(i.dtype))
    throw TensorError(
        std::string("set_requires_grad: only floating-point tensors can require gradients, this one is ") +
        dtype_name(i.dtype));
  i.requires_grad = required;
  if (required && !i.meta) i.meta = make_meta(i.shape, i.dtype, i.device, i.name);
  return *this;
}

Tensor Tensor::grad() const {
  const Impl& i = impl("grad");
  return i.meta ? i.meta->grad : Tensor();
}

void Tensor::zero_grad() {
  const Impl& i = impl("zero_grad");
  if (i.meta && i.meta->grad.defined()) i.meta->grad.zero_();
}

void Tensor::clear_grad() {
  const Impl& i = impl("clear_grad");
  if (i.meta) i.meta->grad = Tensor();
}

DType Tensor::grad_dtype() const {
  const Impl& i = impl("grad_dtype");
  return i.meta ? i.meta->grad_dtype : i.dtype;
}

Tensor& Tensor::set_grad_dtype(DType dtype) {
  Impl& i = const_cast<Impl&>(impl("set_grad_dtype"));
  if (!dtype_is_float(dtype))
    throw TensorError(std::string("set_grad_dtype: ") + dtype_name(dtype) + " is not a floating-point dtype");
  if (!i.meta) i.meta = make_meta(i.shape, i.dtype, i.device, i.name);
  if (i.meta->grad.defined() && i.meta->grad.dtype() != dtype) i.meta->grad = i.meta->grad.to(dtype);
  i.meta->grad_dtype = dtype;
  return *this;
}

Tensor Tensor::detach() const {
  const Impl& i = impl("detach");
  auto view = std::make_shared<Impl>();
  view->storage = i.storage;
  view->offset = i.offset;
  view->shape = i.shape;
  view->dtype = i.dtype;
  view->device = i.device;
  view->name = i.name;
  return Tensor(std::move(view));
}

const std::string& Tensor::name() const { return impl("name").name; }

Tensor& Tensor::set_name(std::string name) {
  Impl& i = const_cast<Impl&>(impl("set_name"));
  i.name = std::move(name);
  if (i.meta) i.meta->name = i.name;
  return *this;
}

const std::shared_ptr<AutogradMeta>& Tensor::autograd_meta() const {
  Impl& i = const_cast<Impl&>(impl("autograd_meta"));
  if (i.requires_grad && !i.meta) i.meta = make_meta(i.shape, i.dtype, i.device, i.name);
  return i.meta;
}

const std::shared_ptr<Storage>& Tensor::storage() const { return impl("storage").storage; }

bool Tensor::exclusively_owned() const { return impl_ && impl_.use_count() == 1 && impl_->storage.use_count() == 1; }

// ---- checks

namespace {
std::string describe(const Tensor& t) {
  std::string s = t.shape().str() + " " + dtype_name(t.dtype()) + " on " + device_name(t.device());
  if (!t.name().empty()) s = "'" + t.name() + "' " + s;
  return s;
}
}  // namespace

void check_defined(const char* op, const Tensor& t, const char* what) {
  if (!t.defined()) throw TensorError(std::string(op) + ": " + what + " is undefined");
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape())
    throw TensorError(std::string(op) + ": shape mismatch between " + describe(a) + " and " + describe(b));
}

void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  if (a.device() != b.device())
    throw TensorError(std::string(op) + ": device mismatch between " + describe(a) + " and " + describe(b));
}

void check_same_dtype(const char* op, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype())
    throw TensorError(std::string(op) + ": dtype mismatch between " + describe(a) + " and " + describe(b));
}

void check_rank(const char* op, const Tensor& t, int rank) {
  if (t.rank() != rank)
    throw TensorError(std::string(op) + ": expected a tensor of rank " + std::to_string(rank) + ", got " + describe(t));
}

}  // namespace coco
