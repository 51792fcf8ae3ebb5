// Optimizer and precision control on coco::Tensor: fused multi-tensor AdamW (kernels/adamw.h), the
// global gradient norm with its clipping factor (kernels/gradnorm.h), non-finite gradient detection
// and a dynamic loss scaler for f16 (kernels/loss_scale.h + the host state machine below).
//
// A training step with clipping and loss scaling:
//   const double unscale = 1.0 / scaler.scale();
//   const auto grads = optimizer.gradients();
//   const bool overflow = optim::has_nonfinite(grads);
//   if (scaler.update(overflow)) {                         // false: skip this step
//     const optim::ClipResult clip = optim::clip_grad_norm(grads, max_norm, unscale);
//     optimizer.step(lr, unscale * clip.factor);
//   }
//   optimizer.zero_grad();
// Nothing here touches the gradients: clipping and unscaling are folded into the step's grad_scale.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/module.h"
#include "engine/tensor.h"
#include "kernels/adamw.h"

namespace coco::optim {

class StepControl;  // engine/ops/step_control.h

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

struct AdamWParam {
  std::string name;
  // f32 master weights updated in place (a CPU master may also be f64, with f64 gradients).
  Tensor master;
  // Optional bf16 copy of the master (same shape and device), rewritten as round-to-nearest-even of the
  // updated master in the same pass: the weights a mixed-precision forward uses.
  Tensor working;
  // The tensor whose .grad() feeds the update; undefined: `working` when defined, else `master`.
  // Its gradient may be f32, bf16 or f16 (f64 for an f64 master).
  Tensor grad_source;
  bool weight_decay = true;
};

// torch.optim.AdamW (amsgrad=False) over many tensors, one fused launch per device and step count.
// State per parameter: exp_avg, exp_avg_sq (dtype of the master, zero-initialised) and its own step
// count, which advances only on steps where the parameter has a gradient (PyTorch skips parameters
// whose .grad is None).
class AdamW {
 public:
  // Throws TensorError for an undefined master, a master dtype other than f32 (or CPU f64), a working
  // copy that is not bf16 of the master's shape and device, or a grad source of another shape/device;
  // std::invalid_argument for bad options (betas in [0, 1), eps >= 0, weight_decay >= 0).
  explicit AdamW(std::vector<AdamWParam> params, AdamWOptions options = {});
  // The module's registered tensors as masters (no working copies), decay flags from registration.
  explicit AdamW(const std::vector<NamedParameter>& params, AdamWOptions options = {});

  // One update at learning rate `lr`; every gradient is multiplied by `grad_scale` first (clipping
  // factor, 1 / loss scale). Throws TensorError when a gradient has the wrong shape, dtype or device,
  // std::invalid_argument for lr < 0 or a non-finite lr / grad_scale.
  void step(double lr, double grad_scale = 1.0);
  // One update decided on the device by `control`'s last decide(): the scalars are read where the
  // decision left them and a skipped step changes nothing; one launch, the same every step, and no
  // host value. Every parameter with a gradient must live on the control's device and have an f32
  // master; the first time it is updated so, its step count must be the one the control started from
  // (control.applied_at_start()): from then on its count is the control's (sync_step_counts). Throws
  // TensorError for a gradient step() would refuse, std::invalid_argument for a mismatched count.
  // step(lr, grad_scale) refuses parameters updated so (until set_state gives them a count again).
  void step(const StepControl& control);
  // Sets the step count of every parameter updated by step(control) to `applied`, the control's
  // applied count (StepControl::read().applied): before the counts are saved.
  void sync_step_counts(int64_t applied);
  // Hands every parameter's step count to the control, as a first step(control) would, without checking
  // that the count is the one the control started from: for a state loaded (set_state) while a control
  // already counts on the device, as ZeRO-1's re-layout of its shards does in the middle of a run.
  // sync_step_counts gives the parameters their count again.
  void adopt_control_counts();

  // Zeroes the gradients of every grad source (keeps the buffers).
  void zero_grad();
  // The defined gradients of the grad sources, in parameter order (for clip_grad_norm / has_nonfinite).
  std::vector<Tensor> gradients() const;

  size_t size() const { return params_.size(); }
  const AdamWParam& param(size_t i) const { return params_.at(i); }
  const AdamWOptions& options() const { return options_; }

  // Per-parameter state, for checkpoints. set_state copies `exp_avg`/`exp_avg_sq` (same shape; any
  // dtype/device, converted) into the state tensors and sets the step count.
  const Tensor& exp_avg(size_t i) const { return state_.at(i).exp_avg; }
  const Tensor& exp_avg_sq(size_t i) const { return state_.at(i).exp_avg_sq; }
  int64_t step_count(size_t i) const { return state_.at(i).step; }
  void set_state(size_t i, int64_t step, const Tensor& exp_avg, const Tensor& exp_avg_sq);

 private:
  struct State {
    Tensor exp_avg, exp_avg_sq;
    int64_t step = 0;
    bool controlled = false;  // updated by step(const StepControl&): the count lives on the device
  };
  const Tensor& grad_source(size_t i) const;
  // The gradient of parameter i (undefined when it has none), checked against its master.
  Tensor checked_grad(size_t i, const char* op) const;
  kernels::AdamWTensorDesc descriptor(size_t i, const Tensor& grad);

  std::vector<AdamWParam> params_;
  std::vector<State> state_;
  AdamWOptions options_;
};

// Global L2 norm of all elements of `gradients` (f32, bf16, f16; CPU also f64), computed in a fixed
// order (deterministic), multiplied by `grad_scale`. Tensors may live on both devices.
double grad_norm(const std::vector<Tensor>& gradients, double grad_scale = 1.0);

struct ClipResult {
  double norm;    // global norm of the gradients times grad_scale
  double factor;  // min(1, max_norm / (norm + 1e-6)); NaN when the norm is not finite
};

// The clipping factor of torch.nn.utils.clip_grad_norm_ for the (grad_scale-scaled) gradients. The
// gradients are not modified: pass `factor` into AdamW::step's grad_scale.
ClipResult clip_grad_norm(const std::vector<Tensor>& gradients, double max_norm, double grad_scale = 1.0);

// The global norm (as grad_norm) and the non-finite flag (as has_nonfinite) of the gradients with one
// read of the device: what a training step needs to decide on skipping and clipping, for one
// synchronisation instead of two.
struct GradientStats {
  double norm;     // global norm times grad_scale (not finite when an element is not)
  bool nonfinite;  // any element NaN or +-Inf
};
GradientStats gradient_stats(const std::vector<Tensor>& gradients, double grad_scale = 1.0);

// True when any element of any gradient is NaN or +-Inf (one flag per device, read back).
bool has_nonfinite(const std::vector<Tensor>& gradients);

// Dynamic loss scaling for f16 training (Megatron's DynamicGradScaler; DeepSpeed's DynamicLossScaler
// defaults: initial 2^16, window 1000, hysteresis 2, min scale 1):
//   overflow:  the step is skipped; growth progress resets; the hysteresis budget drops by one and,
//              when it is exhausted, scale = max(scale * backoff_factor, min_scale).
//   no overflow: after growth_interval consecutive good steps, scale *= growth_factor and the
//              hysteresis budget is refilled.
struct GradScalerOptions {
  double initial_scale = 65536.0;
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 1000;
  int64_t hysteresis = 2;
  double min_scale = 1.0;
};

class GradScaler {
 public:
  // Throws std::invalid_argument naming the bad option (initial_scale > 0 and finite, growth_factor
  // > 1, backoff_factor in (0, 1), growth_interval >= 1, hysteresis >= 1, 0 < min_scale <= initial).
  explicit GradScaler(GradScalerOptions options = {});

  // Multiply the loss by this before backward.
  double scale() const { return scale_; }
  // Records one step's overflow flag; returns true when the step should be applied.
  bool update(bool found_nonfinite);

  struct State {
    double scale;
    int64_t growth_tracker;   // consecutive good steps since the last growth or overflow
    int64_t hysteresis_left;  // overflows tolerated before the next backoff
    int64_t skipped_steps;    // total steps skipped for overflow
  };
  State state() const { return {scale_, growth_tracker_, hysteresis_left_, skipped_steps_}; }
  // Restores a checkpointed state; throws std::invalid_argument for an inconsistent one.
  void load_state(const State& state);
  int64_t skipped_steps() const { return skipped_steps_; }
  const GradScalerOptions& options() const { return options_; }

 private:
  GradScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
  int64_t hysteresis_left_;
  int64_t skipped_steps_ = 0;
};

}  // namespace coco::optim
