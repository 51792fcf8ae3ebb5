#include "engine/ops/step_control.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "engine/device.h"
#include "engine/ops/descriptor_cache.h"
#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"
#include "kernels/gradnorm.h"
#include "kernels/loss_scale.h"

namespace coco::optim {
namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("optim::StepControl: " + what);
}

}  // namespace

StepControl::StepControl(Device device, StepControlOptions options, const AdamWOptions& adam) : device_(device) {
  const int64_t steps = static_cast<int64_t>(options.lr.size());
  require(steps >= 1, "the learning-rate table is empty: expected one entry per training step");
  require(steps <= kMaxSteps, "a schedule of " + std::to_string(steps) + " steps is longer than the " +
                                  std::to_string(kMaxSteps) + " steps the device-side step supports");
  require(options.grad_accum >= 1, "grad_accum must be >= 1, got " + std::to_string(options.grad_accum));
  require(std::isfinite(options.clip_norm), "clip_norm must be finite, got " + std::to_string(options.clip_norm));
  // The AdamW options, checked once as adamw_scalars checks them (it names the bad value).
  kernels::AdamWHyper probe;
  probe.beta1 = adam.beta1;
  probe.beta2 = adam.beta2;
  probe.eps = adam.eps;
  probe.weight_decay = adam.weight_decay;
  const kernels::AdamWScalars scalars = kernels::adamw_scalars(probe);
  constants_ = {scalars.lerp_weight, scalars.beta2, scalars.one_minus_beta2, scalars.eps};

  settings_.clip_norm = options.clip_norm;
  settings_.seed_divisor = static_cast<double>(options.grad_accum);
  settings_.table_steps = steps;
  if (options.loss_scaler) {
    const GradScaler checked(*options.loss_scaler);  // GradScaler's option checks
    const GradScalerOptions& o = checked.options();
    settings_.dynamic_scale = 1;
    settings_.growth_factor = o.growth_factor;
    settings_.backoff_factor = o.backoff_factor;
    settings_.min_scale = o.min_scale;
    settings_.growth_interval = o.growth_interval;
    settings_.hysteresis = o.hysteresis;
    initial_scale_ = o.initial_scale;
    hysteresis_ = o.hysteresis;
  }

  // The tables, in double on the host: the same expressions adamw_scalars evaluates for a host step.
  std::vector<double> host(static_cast<size_t>(4 * steps));
  double* lr = host.data();
  double* decay = lr + steps;
  double* bias1 = decay + steps;
  double* bias2_sqrt = bias1 + steps;
  for (int64_t s = 0; s < steps; ++s) {
    const double rate = options.lr[static_cast<size_t>(s)];
    require(std::isfinite(rate) && rate >= 0.0,
            "the learning rate of step " + std::to_string(s) + " must be finite and >= 0, got " + std::to_string(rate));
    lr[s] = rate;
    decay[s] = 1.0 - rate * adam.weight_decay;
    const double t = static_cast<double>(s + 1);
    bias1[s] = 1.0 - std::pow(adam.beta1, t);
    bias2_sqrt[s] = std::sqrt(1.0 - std::pow(adam.beta2, t));
  }
  table_storage_ = Tensor::from_vector(host, Shape{4 * steps}, device_);
  const double* base = table_storage_.data_as<double>();
  tables_ = {base, base + steps, base + 2 * steps, base + 3 * steps};

  const kernels::StepState initial = initial_state();
  state_ = Tensor::from_host(&initial, Shape{static_cast<int64_t>(sizeof initial)}, DType::u8, device_);
  seed_ = Tensor::full(Shape{1}, static_cast<double>(initial.backward_seed), DType::f32, device_);
  sum_sq_ = Tensor::zeros(Shape{1}, DType::f64, device_);
  nonfinite_ = Tensor::zeros(Shape{1}, DType::i32, device_);
}

kernels::StepState StepControl::initial_state() const {
  kernels::StepState s;
  s.loss_scale = settings_.dynamic_scale ? initial_scale_ : 1.0;
  s.hysteresis_left = settings_.dynamic_scale ? hysteresis_ : 0;
  s.backward_seed = static_cast<float>(s.loss_scale / settings_.seed_divisor);
  return s;
}

void StepControl::decide(const std::vector<Tensor>& gradients, const Tensor& loss_sum) {
  decide(gradients, loss_sum, nullptr);
}

void StepControl::decide(const std::vector<Tensor>& gradients, const Tensor& loss_sum,
                         const CombineStatistics& combine) {
  const char* op = "optim::StepControl::decide";
  if (steps_ >= settings_.table_steps)
    throw std::out_of_range(std::string(op) + ": step " + std::to_string(steps_) + " is beyond the schedule of " +
                            std::to_string(settings_.table_steps) + " steps the control was built for");
  std::vector<kernels::NormTensorDesc> descs;
  descs.reserve(gradients.size());
  for (size_t i = 0; i < gradients.size(); ++i) {
    const Tensor& g = gradients[i];
    if (!g.defined() || g.device() != device_ ||
        (g.dtype() != DType::f32 && g.dtype() != DType::bf16 && g.dtype() != DType::f16))
      throw TensorError(std::string(op) + ": gradient " + std::to_string(i) + " must be f32, bf16 or f16 on " +
                        device_name(device_) + ", got " +
                        (g.defined() ? g.shape().str() + " " + dtype_name(g.dtype()) + " on " + device_name(g.device())
                                     : std::string("an undefined tensor")));
    descs.push_back({g.data(), g.numel(), 0, g.dtype()});
  }
  if (loss_sum.defined() && (loss_sum.numel() != 1 || loss_sum.dtype() != DType::f64 || loss_sum.device() != device_))
    throw TensorError(std::string(op) + ": the loss sum must be one f64 element on " + device_name(device_));
  const int64_t chunks = kernels::plan_norm_chunks(descs);
  auto* sum_sq = sum_sq_.data_as<double>();
  auto* flag = nonfinite_.data_as<int32_t>();
  kernels::StepInputs inputs;
  inputs.sum_sq = sum_sq;
  inputs.nonfinite = flag;
  inputs.loss_sum = loss_sum.defined() ? loss_sum.data_as<double>() : nullptr;
  inputs.seed_out = seed_.data_as<float>();
  if (device_ == Device::cuda) {
    if (!partials_.defined() || partials_.numel() < std::max<int64_t>(chunks, 1))
      partials_ = Tensor::empty(Shape{std::max<int64_t>(chunks, 1)}, DType::f32, device_);
    const Tensor device_descs = detail::cached_device_copy(descs);
    const auto* d = static_cast<const kernels::NormTensorDesc*>(device_descs.data());
    const int n = static_cast<int>(descs.size());
    COCO_CUDA_CHECK(runtime::memset_async(flag, 0, sizeof(int32_t), current_stream()));
    kernels::cuda::mark_nonfinite(d, n, chunks, flag, current_stream());
    kernels::cuda::sum_of_squares(d, n, chunks, partials_.data_as<float>(), sum_sq, current_stream());
    if (combine) combine(sum_sq_, nonfinite_);
    kernels::cuda::decide_step(inputs, tables_, settings_, static_cast<kernels::StepState*>(state_.data()),
                               current_stream());
  } else {
    *sum_sq = kernels::cpu::sum_of_squares(descs);
    *flag = kernels::cpu::any_nonfinite(descs) ? 1 : 0;
    if (combine) combine(sum_sq_, nonfinite_);
    kernels::cpu::decide_step(inputs, tables_, settings_, *static_cast<kernels::StepState*>(state_.data()));
  }
  ++steps_;
}

void StepControl::force_skip() {
  if (device_ == Device::cuda)
    kernels::cuda::force_skip(static_cast<kernels::StepState*>(state_.data()), current_stream());
  else
    static_cast<kernels::StepState*>(state_.data())->force_skip = 1;
}

kernels::StepState StepControl::read() const {
  kernels::StepState s;
  const std::vector<uint8_t> bytes = state_.to_vector<uint8_t>();
  std::memcpy(&s, bytes.data(), sizeof s);
  return s;
}

void StepControl::load(const kernels::StepState& loaded) {
  kernels::StepState s = initial_state();
  require(loaded.step >= 0 && loaded.step <= settings_.table_steps && loaded.applied >= 0 &&
              loaded.applied <= loaded.step && loaded.skipped_total >= 0 && loaded.consecutive_skips >= 0 &&
              loaded.scaler_skipped >= 0,
          "inconsistent counters to load (step " + std::to_string(loaded.step) + ", applied " +
              std::to_string(loaded.applied) + ", skipped " + std::to_string(loaded.skipped_total) +
              ") for a schedule of " + std::to_string(settings_.table_steps) + " steps");
  if (settings_.dynamic_scale) {
    GradScalerOptions o;
    o.initial_scale = initial_scale_;
    o.growth_factor = settings_.growth_factor;
    o.backoff_factor = settings_.backoff_factor;
    o.growth_interval = settings_.growth_interval;
    o.hysteresis = settings_.hysteresis;
    o.min_scale = settings_.min_scale;
    GradScaler check(o);  // GradScaler::load_state's consistency checks
    check.load_state({loaded.loss_scale, loaded.growth_tracker, loaded.hysteresis_left, loaded.scaler_skipped});
    s.loss_scale = loaded.loss_scale;
    s.growth_tracker = loaded.growth_tracker;
    s.hysteresis_left = loaded.hysteresis_left;
    s.scaler_skipped = loaded.scaler_skipped;
  }
  s.step = loaded.step;
  s.applied = loaded.applied;
  s.skipped_total = loaded.skipped_total;
  s.consecutive_skips = loaded.consecutive_skips;
  s.backward_seed = static_cast<float>(s.loss_scale / settings_.seed_divisor);
  state_.copy_from(Tensor::from_host(&s, Shape{static_cast<int64_t>(sizeof s)}, DType::u8, Device::cpu));
  seed_.fill_(static_cast<double>(s.backward_seed));
  steps_ = s.step;
  applied_at_start_ = s.applied;
}

}  // namespace coco::optim
