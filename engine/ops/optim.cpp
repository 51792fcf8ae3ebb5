#include "engine/ops/optim.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include "engine/device.h"
#include "engine/ops/descriptor_cache.h"
#include "engine/ops/step_control.h"
#include "engine/ops/float_dispatch.h"
#include "kernels/cpu_fast.h"
#include "kernels/adamw.h"
#include "kernels/gradnorm.h"
#include "kernels/loss_scale.h"

namespace coco::optim {
namespace {

using ops::detail::describe;

std::string param_label(const AdamWParam& p, size_t i) {
  return "parameter " + std::to_string(i) + (p.name.empty() ? "" : " '" + p.name + "'");
}

// A small device copy of a host array of descriptors (kept alive by the returned tensor; the caching
// allocator reuses the block only after the stream has moved past the kernel that reads it).
//
// A training step passes the same descriptors every time (the gradient buffers and weights stay put),
// so the last few uploads are kept, keyed by their bytes: a repeated array is not uploaded again, and a
// step issues no host-to-device copy (which would synchronise from pageable memory). Keying by content
// keeps a reused address safe: equal bytes describe the same pointers, sizes and chunks.
// The fields of a descriptor as bytes (not the struct's bytes: its padding is indeterminate).
template <class T>
void append_bytes(std::string& key, const T& value) {
  key.append(reinterpret_cast<const char*>(&value), sizeof value);
}
void append_key(std::string& key, const kernels::NormTensorDesc& d) {
  append_bytes(key, d.data);
  append_bytes(key, d.numel);
  append_bytes(key, d.first_chunk);
  append_bytes(key, d.dtype);
}
void append_key(std::string& key, const kernels::AdamWTensorDesc& d) {
  append_bytes(key, d.param);
  append_bytes(key, d.grad);
  append_bytes(key, d.exp_avg);
  append_bytes(key, d.exp_avg_sq);
  append_bytes(key, d.param_bf16);
  append_bytes(key, d.numel);
  append_bytes(key, d.first_chunk);
  append_bytes(key, d.grad_dtype);
  append_bytes(key, d.apply_weight_decay);
}

template <class Desc>
Tensor upload_descriptors(const std::vector<Desc>& descs) {
  constexpr size_t kCachedUploads = 8;
  struct Entry {
    std::string bytes;
    Tensor device;
  };
  static std::mutex mutex;
  static std::list<Entry> cache;  // most recent first
  std::string key;
  for (const Desc& d : descs) append_key(key, d);
  std::lock_guard<std::mutex> lock(mutex);
  for (auto it = cache.begin(); it != cache.end(); ++it)
    if (it->bytes == key) {
      cache.splice(cache.begin(), cache, it);
      return cache.front().device;
    }
  Tensor device = Tensor::from_host(descs.data(), Shape{static_cast<int64_t>(descs.size() * sizeof(Desc))}, DType::u8,
                                    Device::cuda);
  cache.push_front(Entry{std::move(key), device});
  if (cache.size() > kCachedUploads) cache.pop_back();
  return device;
}

}  // namespace

namespace detail {
Tensor cached_device_copy(const std::vector<kernels::NormTensorDesc>& descs) { return upload_descriptors(descs); }
Tensor cached_device_copy(const std::vector<kernels::AdamWTensorDesc>& descs) { return upload_descriptors(descs); }
}  // namespace detail

namespace {

bool is_norm_dtype(DType d, Device device) {
  return d == DType::f32 || d == DType::bf16 || d == DType::f16 || (device == Device::cpu && d == DType::f64);
}

// Gradients split by device as kernel descriptors; throws TensorError for an unsupported dtype.
struct DeviceDescs {
  std::vector<kernels::NormTensorDesc> cpu, cuda;
};

DeviceDescs norm_descriptors(const char* op, const std::vector<Tensor>& gradients) {
  DeviceDescs out;
  for (size_t i = 0; i < gradients.size(); ++i) {
    const Tensor& g = gradients[i];
    if (!g.defined()) throw TensorError(std::string(op) + ": gradient " + std::to_string(i) + " is undefined");
    if (!is_norm_dtype(g.dtype(), g.device()))
      throw TensorError(std::string(op) + ": gradient " + std::to_string(i) +
                        " must be f32, bf16 or f16 (CPU also f64), got " + describe(g));
    const kernels::NormTensorDesc d{g.data(), g.numel(), 0, g.dtype()};
    (g.is_cuda() ? out.cuda : out.cpu).push_back(d);
  }
  return out;
}

void require_finite(double value, const char* what, const char* op) {
  if (!std::isfinite(value))
    throw std::invalid_argument(std::string(op) + ": " + what + " must be finite, got " + std::to_string(value));
}

}  // namespace

// ---------------------------------------------------------------------------------------------- AdamW

AdamW::AdamW(std::vector<AdamWParam> params, AdamWOptions options) : params_(std::move(params)), options_(options) {
  // Validates the options once (adamw_scalars throws naming the bad value).
  kernels::AdamWHyper probe;
  probe.beta1 = options_.beta1;
  probe.beta2 = options_.beta2;
  probe.eps = options_.eps;
  probe.weight_decay = options_.weight_decay;
  (void)kernels::adamw_scalars(probe);
  state_.resize(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const AdamWParam& p = params_[i];
    const std::string label = "optim::AdamW: " + param_label(p, i);
    if (!p.master.defined()) throw TensorError(label + ": the master tensor is undefined");
    const bool f64_cpu = p.master.dtype() == DType::f64 && !p.master.is_cuda();
    if (p.master.dtype() != DType::f32 && !f64_cpu)
      throw TensorError(label + ": masters must be f32 (CPU also f64), got " + describe(p.master));
    if (p.working.defined()) {
      if (p.working.dtype() != DType::bf16 || p.working.shape() != p.master.shape() ||
          p.working.device() != p.master.device())
        throw TensorError(label + ": the working copy must be bf16 with the master's shape and device; master " +
                          describe(p.master) + ", working " + describe(p.working));
      if (f64_cpu) throw TensorError(label + ": an f64 master cannot have a bf16 working copy");
    }
    const Tensor& source = grad_source(i);
    if (source.shape() != p.master.shape() || source.device() != p.master.device())
      throw TensorError(label + ": the grad source must have the master's shape and device; master " +
                        describe(p.master) + ", grad source " + describe(source));
    state_[i].exp_avg = Tensor::zeros(p.master.shape(), p.master.dtype(), p.master.device());
    state_[i].exp_avg_sq = Tensor::zeros(p.master.shape(), p.master.dtype(), p.master.device());
  }
}

namespace {
std::vector<AdamWParam> from_named(const std::vector<NamedParameter>& named) {
  std::vector<AdamWParam> params;
  params.reserve(named.size());
  for (const NamedParameter& n : named)
    params.push_back(AdamWParam{n.name, n.tensor, Tensor(), Tensor(), n.weight_decay});
  return params;
}
}  // namespace

AdamW::AdamW(const std::vector<NamedParameter>& params, AdamWOptions options) : AdamW(from_named(params), options) {}

const Tensor& AdamW::grad_source(size_t i) const {
  const AdamWParam& p = params_[i];
  if (p.grad_source.defined()) return p.grad_source;
  return p.working.defined() ? p.working : p.master;
}

void AdamW::step(double lr, double grad_scale) {
  const char* op = "optim::AdamW::step";
  if (!(lr >= 0.0) || !std::isfinite(lr))
    throw std::invalid_argument(std::string(op) + ": lr must be finite and >= 0, got " + std::to_string(lr));
  require_finite(grad_scale, "grad_scale", op);

  // Parameters with a gradient, grouped by (device, step count): one launch per group.
  std::map<std::pair<int, int64_t>, std::vector<size_t>> groups;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!checked_grad(i, op).defined()) continue;
    if (state_[i].controlled)
      throw std::invalid_argument(std::string(op) + ": " + param_label(params_[i], i) +
                                  ": it is updated by step(StepControl), which keeps its step count on the device");
    groups[{static_cast<int>(params_[i].master.device()), state_[i].step + 1}].push_back(i);
  }

  for (const auto& [key, members] : groups) {
    kernels::AdamWHyper hyper;
    hyper.lr = lr;
    hyper.beta1 = options_.beta1;
    hyper.beta2 = options_.beta2;
    hyper.eps = options_.eps;
    hyper.weight_decay = options_.weight_decay;
    hyper.step = key.second;
    hyper.grad_scale = grad_scale;
    const kernels::AdamWScalars scalars = kernels::adamw_scalars(hyper);
    const bool cuda = key.first == static_cast<int>(Device::cuda);
    std::vector<kernels::AdamWTensorDesc> descs;
    for (size_t i : members) {
      const AdamWParam& p = params_[i];
      const Tensor grad = grad_source(i).grad();
      if (p.master.dtype() == DType::f64) {  // CPU-only f64 reference path
        kernels::cpu::adamw_update<double, double>(
            p.master.data_as<double>(), grad.data_as<double>(), state_[i].exp_avg.data_as<double>(),
            state_[i].exp_avg_sq.data_as<double>(), nullptr, p.master.numel(), p.weight_decay, scalars);
        continue;
      }
      descs.push_back(descriptor(i, grad));
    }
    if (!descs.empty()) {
      const int64_t chunks = kernels::plan_adamw_chunks(descs);
      if (cuda) {
        const Tensor device_descs = upload_descriptors(descs);
        kernels::cuda::adamw_multi_tensor(static_cast<const kernels::AdamWTensorDesc*>(device_descs.data()),
                                          static_cast<int>(descs.size()), chunks, scalars, current_stream());
      } else {
        kernels::cpu::adamw_multi_tensor(descs, scalars);
      }
    }
    for (size_t i : members) state_[i].step = key.second;
  }
}

Tensor AdamW::checked_grad(size_t i, const char* op) const {
  Tensor grad = grad_source(i).grad();
  if (!grad.defined()) return grad;
  const AdamWParam& p = params_[i];
  const std::string label = std::string(op) + ": " + param_label(p, i);
  if (grad.shape() != p.master.shape() || grad.device() != p.master.device())
    throw TensorError(label + ": gradient " + describe(grad) + " does not match the master " + describe(p.master));
  const bool f64 = p.master.dtype() == DType::f64;
  const DType g = grad.dtype();
  if (f64 ? g != DType::f64 : (g != DType::f32 && g != DType::bf16 && g != DType::f16))
    throw TensorError(label + ": gradient " + describe(grad) + " must be " +
                      (f64 ? "f64 for an f64 master" : "f32, bf16 or f16"));
  return grad;
}

kernels::AdamWTensorDesc AdamW::descriptor(size_t i, const Tensor& grad) {
  const AdamWParam& p = params_[i];
  kernels::AdamWTensorDesc d;
  d.param = p.master.data_as<float>();
  d.grad = grad.data();
  d.exp_avg = state_[i].exp_avg.data_as<float>();
  d.exp_avg_sq = state_[i].exp_avg_sq.data_as<float>();
  d.param_bf16 = p.working.defined() ? p.working.data_as<__nv_bfloat16>() : nullptr;
  d.numel = p.master.numel();
  d.grad_dtype = grad.dtype();
  d.apply_weight_decay = p.weight_decay ? 1 : 0;
  return d;
}

void AdamW::step(const StepControl& control) {
  const char* op = "optim::AdamW::step(StepControl)";
  std::vector<size_t> members;
  std::vector<kernels::AdamWTensorDesc> descs;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor grad = checked_grad(i, op);
    if (!grad.defined()) continue;
    const AdamWParam& p = params_[i];
    if (p.master.device() != control.device() || p.master.dtype() != DType::f32)
      throw TensorError(std::string(op) + ": " + param_label(p, i) + ": the master " + describe(p.master) +
                        " must be f32 on the control's device (" + device_name(control.device()) + ")");
    if (!state_[i].controlled && state_[i].step != control.applied_at_start())
      throw std::invalid_argument(std::string(op) + ": " + param_label(p, i) + " has taken " +
                                  std::to_string(state_[i].step) + " steps, the control started counting from " +
                                  std::to_string(control.applied_at_start()));
    members.push_back(i);
    descs.push_back(descriptor(i, grad));
  }
  if (descs.empty()) return;
  const int64_t chunks = kernels::plan_adamw_chunks(descs);
  if (control.device() == Device::cuda) {
    const Tensor device_descs = upload_descriptors(descs);
    kernels::cuda::adamw_multi_tensor_controlled(static_cast<const kernels::AdamWTensorDesc*>(device_descs.data()),
                                                 static_cast<int>(descs.size()), chunks, control.constants(),
                                                 control.device_state(), current_stream());
  } else {
    const kernels::StepState& state = *control.device_state();  // host memory on the CPU
    if (state.apply) kernels::cpu::adamw_multi_tensor(descs, kernels::adamw_scalars(control.constants(), state));
  }
  for (size_t i : members) state_[i].controlled = true;
}

void AdamW::sync_step_counts(int64_t applied) {
  if (applied < 0)
    throw std::invalid_argument("optim::AdamW::sync_step_counts: negative count " + std::to_string(applied));
  for (State& s : state_)
    if (s.controlled) s.step = applied;
}

void AdamW::adopt_control_counts() {
  for (State& s : state_) s.controlled = true;
}

void AdamW::zero_grad() {
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor source = grad_source(i);  // a handle: zero_grad acts on the shared tensor
    if (source.grad().defined()) source.zero_grad();
  }
}

std::vector<Tensor> AdamW::gradients() const {
  std::vector<Tensor> out;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = grad_source(i).grad();
    if (g.defined()) out.push_back(std::move(g));
  }
  return out;
}

void AdamW::set_state(size_t i, int64_t step, const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  const std::string label = "optim::AdamW::set_state: " + param_label(params_.at(i), i);
  if (step < 0) throw std::invalid_argument(label + ": negative step count " + std::to_string(step));
  State& s = state_[i];
  const auto load = [&](const Tensor& src, Tensor& dst, const char* what) {
    if (!src.defined() || src.shape() != dst.shape())
      throw TensorError(label + ": " + what + " " + describe(src) + " does not match the state " + describe(dst));
    dst.copy_from(src.dtype() == dst.dtype() ? src : src.to(dst.dtype()));
  };
  load(exp_avg, s.exp_avg, "exp_avg");
  load(exp_avg_sq, s.exp_avg_sq, "exp_avg_sq");
  s.step = step;
  s.controlled = false;
}

// ------------------------------------------------------------------------------------- norm & checks

double grad_norm(const std::vector<Tensor>& gradients, double grad_scale) {
  const char* op = "optim::grad_norm";
  require_finite(grad_scale, "grad_scale", op);
  DeviceDescs descs = norm_descriptors(op, gradients);
  double sum_sq = kernels::cpu_fast::sum_of_squares(descs.cpu);
  if (!descs.cuda.empty()) {
    const int64_t chunks = kernels::plan_norm_chunks(descs.cuda);
    const Tensor device_descs = upload_descriptors(descs.cuda);
    Tensor partials = Tensor::empty(Shape{chunks > 0 ? chunks : 1}, DType::f32, Device::cuda);
    Tensor result = Tensor::empty(Shape{1}, DType::f64, Device::cuda);
    kernels::cuda::sum_of_squares(static_cast<const kernels::NormTensorDesc*>(device_descs.data()),
                                  static_cast<int>(descs.cuda.size()), chunks, partials.data_as<float>(),
                                  result.data_as<double>(), current_stream());
    sum_sq += result.to_vector<double>()[0];
  }
  return std::sqrt(sum_sq) * std::fabs(grad_scale);
}

GradientStats gradient_stats(const std::vector<Tensor>& gradients, double grad_scale) {
  const char* op = "optim::gradient_stats";
  require_finite(grad_scale, "grad_scale", op);
  DeviceDescs descs = norm_descriptors(op, gradients);
  double sum_sq = kernels::cpu::sum_of_squares(descs.cpu);
  bool nonfinite = kernels::cpu::any_nonfinite(descs.cpu);
  if (!descs.cuda.empty()) {
    const int64_t chunks = kernels::plan_norm_chunks(descs.cuda);
    const Tensor device_descs = upload_descriptors(descs.cuda);
    const auto* d = static_cast<const kernels::NormTensorDesc*>(device_descs.data());
    const int n = static_cast<int>(descs.cuda.size());
    Tensor partials = Tensor::empty(Shape{chunks > 0 ? chunks : 1}, DType::f32, Device::cuda);
    // [f64 sum of squares][i32 non-finite flag][pad]: one buffer, one read.
    Tensor result = Tensor::zeros(Shape{16}, DType::u8, Device::cuda);
    auto* sum_sq_device = static_cast<double*>(result.data());
    auto* flag_device = reinterpret_cast<int32_t*>(static_cast<uint8_t*>(result.data()) + sizeof(double));
    kernels::cuda::mark_nonfinite(d, n, chunks, flag_device, current_stream());
    kernels::cuda::sum_of_squares(d, n, chunks, partials.data_as<float>(), sum_sq_device, current_stream());
    const std::vector<uint8_t> host = result.to_vector<uint8_t>();
    double device_sum = 0.0;
    int32_t device_flag = 0;
    std::memcpy(&device_sum, host.data(), sizeof device_sum);
    std::memcpy(&device_flag, host.data() + sizeof(double), sizeof device_flag);
    sum_sq += device_sum;
    nonfinite = nonfinite || device_flag != 0;
  }
  return GradientStats{std::sqrt(sum_sq) * std::fabs(grad_scale), nonfinite};
}

ClipResult clip_grad_norm(const std::vector<Tensor>& gradients, double max_norm, double grad_scale) {
  const double norm = grad_norm(gradients, grad_scale);
  return ClipResult{norm, kernels::clip_factor(norm, max_norm)};
}

bool has_nonfinite(const std::vector<Tensor>& gradients) {
  DeviceDescs descs = norm_descriptors("optim::has_nonfinite", gradients);
  if (kernels::cpu_fast::any_nonfinite(descs.cpu)) return true;
  if (descs.cuda.empty()) return false;
  const int64_t chunks = kernels::plan_norm_chunks(descs.cuda);
  const Tensor device_descs = upload_descriptors(descs.cuda);
  Tensor flag = Tensor::zeros(Shape{1}, DType::i32, Device::cuda);
  kernels::cuda::mark_nonfinite(static_cast<const kernels::NormTensorDesc*>(device_descs.data()),
                                static_cast<int>(descs.cuda.size()), chunks, flag.data_as<int32_t>(), current_stream());
  return flag.to_vector<int32_t>()[0] != 0;
}

// ----------------------------------------------------------------------------------------- GradScaler

GradScaler::GradScaler(GradScalerOptions options) : options_(options) {
  const auto require = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument("optim::GradScaler: " + what);
  };
  const GradScalerOptions& o = options_;
  require(std::isfinite(o.initial_scale) && o.initial_scale > 0.0,
          "initial_scale must be finite and > 0, got " + std::to_string(o.initial_scale));
  require(std::isfinite(o.growth_factor) && o.growth_factor > 1.0,
          "growth_factor must be finite and > 1, got " + std::to_string(o.growth_factor));
  require(o.backoff_factor > 0.0 && o.backoff_factor < 1.0,
          "backoff_factor must be in (0, 1), got " + std::to_string(o.backoff_factor));
  require(o.growth_interval >= 1, "growth_interval must be >= 1, got " + std::to_string(o.growth_interval));
  require(o.hysteresis >= 1, "hysteresis must be >= 1, got " + std::to_string(o.hysteresis));
  require(std::isfinite(o.min_scale) && o.min_scale > 0.0 && o.min_scale <= o.initial_scale,
          "min_scale must be in (0, initial_scale], got " + std::to_string(o.min_scale));
  scale_ = o.initial_scale;
  hysteresis_left_ = o.hysteresis;
}

bool GradScaler::update(bool found_nonfinite) {
  if (found_nonfinite) {
    ++skipped_steps_;
    growth_tracker_ = 0;
    if (--hysteresis_left_ <= 0) {
      hysteresis_left_ = 0;
      scale_ = std::max(scale_ * options_.backoff_factor, options_.min_scale);
    }
    return false;
  }
  if (++growth_tracker_ == options_.growth_interval) {
    growth_tracker_ = 0;
    hysteresis_left_ = options_.hysteresis;
    const double grown = scale_ * options_.growth_factor;
    if (std::isfinite(grown)) scale_ = grown;
  }
  return true;
}

void GradScaler::load_state(const State& s) {
  if (!(std::isfinite(s.scale) && s.scale > 0.0) || s.growth_tracker < 0 ||
      s.growth_tracker >= options_.growth_interval || s.hysteresis_left < 0 ||
      s.hysteresis_left > options_.hysteresis || s.skipped_steps < 0)
    throw std::invalid_argument("optim::GradScaler::load_state: inconsistent state (scale " + std::to_string(s.scale) +
                                ", growth_tracker " + std::to_string(s.growth_tracker) + ", hysteresis_left " +
                                std::to_string(s.hysteresis_left) + ", skipped_steps " +
                                std::to_string(s.skipped_steps) + ")");
  scale_ = s.scale;
  growth_tracker_ = s.growth_tracker;
  hysteresis_left_ = s.hysteresis_left;
  skipped_steps_ = s.skipped_steps;
}

}  // namespace coco::optim
