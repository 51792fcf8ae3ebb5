// A training step decided on the device (issue #14): the owner of kernels/step_control.h's state and
// schedule tables. Each step queues the gradients' non-finite flag and sum of squares and one
// decision kernel; AdamW::step(const StepControl&) then reads the update's scalars where the decision
// left them. The host reads nothing: the state comes back only when the owner asks (read(), at its
// logging cadence or for a checkpoint), or asynchronously (state()).
//
//   optim::StepControl control(Device::cuda, {lr_per_step, clip_norm, grad_accum, scaler}, adam_options);
//   ...backward...
//   control.decide(optimizer.gradients(), loss_sum);   // no read
//   optimizer.step(control);                           // applies or leaves the weights alone
//   optimizer.zero_grad();
//
// On the CPU the same decision runs at once (kernels::cpu::decide_step) on host memory.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "engine/ops/optim.h"
#include "engine/tensor.h"
#include "kernels/step_control.h"

namespace coco::optim {

struct StepControlOptions {
  // The learning rate of every step the run may take: step s uses lr[s]; a step beyond is refused.
  std::vector<double> lr;
  double clip_norm = 0.0;  // <= 0: no clipping
  // The backward seed is loss_scale / grad_accum: the number of micro-batches whose gradients make one step,
  // over every rank with data parallelism (train.grad_accum x world size; the gradients are summed over ranks).
  int64_t grad_accum = 1;
  // f16 dynamic loss scaling with these options; none: the loss scale stays 1.
  std::optional<GradScalerOptions> loss_scaler;
};

class StepControl {
 public:
  // The longest schedule a run may have (the tables take 32 bytes per step on the device).
  static constexpr int64_t kMaxSteps = int64_t{1} << 22;

  // Throws std::invalid_argument for an empty or too long lr table (naming kMaxSteps), a negative or
  // non-finite learning rate, grad_accum < 1, bad scaler options (GradScaler's checks) or AdamW
  // options adamw_scalars refuses.
  StepControl(Device device, StepControlOptions options, const AdamWOptions& adam);

  // Queues the decision of the next step from `gradients` (all on this control's device) and, when
  // defined, the step's loss sum `loss_sum` (a one-element f64 tensor on the device; a non-finite
  // sum skips the step). Throws std::out_of_range when the lr table is used up.
  void decide(const std::vector<Tensor>& gradients, const Tensor& loss_sum = Tensor());
  // The gradients' statistics a decision reads, on this control's device: `sum_sq`, (1) f64, the sum of
  // squares (still scaled by the loss scale), and `nonfinite`, (1) i32, non-zero when an element is NaN
  // or Inf. A combine function may change them in place between their computation and the decision,
  // queued on the current stream (no host read needed): a data-parallel caller whose `gradients` are
  // this rank's shard of the summed gradients (ZeRO-1) sums both over the ranks, so that every rank
  // decides from the global norm and flag.
  using CombineStatistics = std::function<void(const Tensor& sum_sq, const Tensor& nonfinite)>;
  // decide() with `combine` run on the statistics before the decision.
  void decide(const std::vector<Tensor>& gradients, const Tensor& loss_sum, const CombineStatistics& combine);
  // The next decision skips the step whatever the gradients (a test hook; one launch on CUDA).
  void force_skip();

  // One blocking device-to-host copy on CUDA: the state after the decisions queued so far.
  kernels::StepState read() const;
  // Restores a state (a checkpoint's counters and scaler); the outputs of the last decision are reset.
  // Throws std::invalid_argument for counters outside the table or an inconsistent scaler state.
  void load(const kernels::StepState& state);
  // The state on the device (sizeof(StepState) bytes, u8): for asynchronous copies.
  const Tensor& state() const { return state_; }
  const kernels::StepState* device_state() const { return static_cast<const kernels::StepState*>(state_.data()); }
  // The backward seed loss_scale / options.grad_accum as a (1) f32 tensor on the device, updated by each
  // decision: multiply the loss by it so that the seed is never a host value.
  const Tensor& backward_seed() const { return seed_; }
  // A fresh state: step 0, no update applied, the scaler's initial scale.
  kernels::StepState initial_state() const;

  Device device() const { return device_; }
  const kernels::AdamWConstants& constants() const { return constants_; }
  const kernels::StepControlSettings& settings() const { return settings_; }
  // Decisions queued so far plus the step a load() started from: the host's count of the device's step.
  int64_t steps() const { return steps_; }
  // AdamW's step count when this control started counting (load(): its applied count; else 0).
  int64_t applied_at_start() const { return applied_at_start_; }

 private:
  Device device_;
  kernels::StepControlSettings settings_;
  kernels::AdamWConstants constants_;
  kernels::StepTables tables_;
  Tensor table_storage_;  // (4 * table_steps) f64: lr, decay factor, bias corrections 1 and 2
  Tensor state_;          // (sizeof(StepState)) u8
  Tensor seed_;           // (1) f32
  Tensor sum_sq_;         // (1) f64: the gradients' sum of squares
  Tensor nonfinite_;      // (1) i32: the gradients' non-finite flag
  Tensor partials_;       // f32 per chunk of the gradients (grown when they need more)
  double initial_scale_ = 1.0;
  int64_t hysteresis_ = 2;
  int64_t steps_ = 0, applied_at_start_ = 0;
};

}  // namespace coco::optim
