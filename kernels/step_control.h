// The decisions of a training step that depend on device values, made on the device (issue #14):
// skip on non-finite gradients or loss, the clipping factor, the AdamW scalars of the update, the f16
// dynamic loss scaler, the skipped-step counters and the backward seed of the next step. One
// single-thread kernel reads the gradients' sum of squares and non-finite flag (kernels/gradnorm.h,
// kernels/loss_scale.h) and the step's loss sum where they lie and writes a StepState that the AdamW
// kernel (kernels/adamw.h, adamw_multi_tensor_controlled) reads, so the host never waits for a
// device value to decide what to launch. Nothing the host passes changes from step to step: the
// learning rate and the bias corrections come from tables precomputed on the host in double (as
// torch computes them in Python floats), indexed by the step counters in StepState, so a launch is
// the same every step (a CUDA graph can replay it).
//
// The decision, for step s (0-based, optimizer steps taken so far, skipped ones included) and the
// loss scale L in use (1 without dynamic scaling):
//   norm      = sqrt(sum_sq) * (1 / L)
//   skip      = flag != 0 || loss_sum not finite || norm not finite || force_skip
//   skipped:  skipped_total += 1; consecutive_skips += 1 unless the scaler is still searching
//             (dynamic scaling with L > min_scale); grad_norm = NaN; the update is not applied
//   applied:  consecutive_skips = 0; t = ++applied; grad_norm = norm;
//             grad_scale = clip_factor(norm, clip_norm) / L (factor 1 without clipping);
//             lr = lr[s], decay_factor = decay[s], step_size = lr / bias_correction1[t - 1],
//             bias_correction2_sqrt = bias_correction2_sqrt[t - 1]
//   scaler:   (dynamic only) optim::GradScaler::update(skip)
//   step += 1; backward_seed = f32(loss_scale / seed_divisor) for the next step's backward
// Every operation is a correctly rounded IEEE double operation, so the CPU reference, the emulated
// kernel and a GPU give the same bits, and the same bits as the host-decided step they replace.
#pragma once
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

// Fixed for a run: passed by value to every launch.
struct StepControlSettings {
  double clip_norm = 0.0;     // <= 0: no clipping
  double seed_divisor = 1.0;  // the backward seed is loss_scale / seed_divisor (train.grad_accum x world size)
  int32_t dynamic_scale = 0;  // 1: f16 dynamic loss scaling (optim::GradScaler's rules)
  double growth_factor = 2.0, backoff_factor = 0.5, min_scale = 1.0;
  int64_t growth_interval = 1000, hysteresis = 2;
  int64_t table_steps = 0;  // entries of every table; a decision at step >= table_steps is refused
};

// Device (or, on the CPU, host) arrays of table_steps doubles each.
struct StepTables {
  const double* lr = nullptr;                     // [s] learning rate of step s
  const double* decay_factor = nullptr;           // [s] 1 - lr[s] * weight_decay
  const double* bias_correction1 = nullptr;       // [t - 1] 1 - beta1^t
  const double* bias_correction2_sqrt = nullptr;  // [t - 1] sqrt(1 - beta2^t)
};

// The step's state, resident where the training runs. Plain data: copied whole to the host for a
// record or a checkpoint, and from it on resume.
struct StepState {
  // Carried from step to step.
  int64_t step = 0;     // optimizer steps taken (skipped ones included): the lr table's index
  int64_t applied = 0;  // updates applied: AdamW's step count
  int64_t growth_tracker = 0, hysteresis_left = 0;
  int64_t skipped_total = 0;      // steps skipped since the run began
  int64_t consecutive_skips = 0;  // skipped in a row (the scaler's search excluded)
  int64_t scaler_skipped = 0;     // steps the dynamic scaler skipped (optim::GradScaler::skipped_steps)
  double loss_scale = 1.0;        // the scale the next step's loss is multiplied by
  int32_t force_skip = 0;         // set by the host (a test hook) before a decision; the decision clears it
  int32_t apply = 0;              // out: 1 when the last decision applies the update
  // Out: the last decision.
  double grad_norm = 0.0;        // unscaled global norm; NaN when skipped
  double lr = 0.0;               // learning rate of the decided step
  double step_loss_scale = 1.0;  // the loss scale the decided step's gradients carried
  double grad_scale = 1.0;       // clip factor / loss scale, multiplies every gradient
  double step_size = 0.0;        // lr / (1 - beta1^t)
  double decay_factor = 1.0;     // 1 - lr * weight_decay
  double bias_correction2_sqrt = 1.0;
  float backward_seed = 1.0f;  // f32(loss_scale / seed_divisor): the next backward's seed
  int32_t reserved = 0;
};

// The inputs a decision reads, device pointers on CUDA (host pointers for the CPU reference).
struct StepInputs {
  const double* sum_sq = nullptr;      // (1) the gradients' sum of squares (still scaled by the loss scale)
  const int32_t* nonfinite = nullptr;  // (1) non-zero when a gradient element is NaN or Inf
  const double* loss_sum = nullptr;    // (1) the step's loss sum, or nullptr: not checked
  float* seed_out = nullptr;           // (1) receives state.backward_seed too, or nullptr
};

// min(1, max_norm / (norm + 1e-6)); NaN for a non-finite norm (kernels::clip_factor without its check).
__host__ __device__ inline double step_clip_factor(double norm, double max_norm) {
  if (!(norm - norm == 0.0)) return norm - norm;  // NaN for NaN and +-Inf
  const double factor = max_norm / (norm + 1e-6);
  return factor < 1.0 ? factor : 1.0;
}

// The AdamW scalars an update needs whatever the step: copied into every launch.
struct AdamWConstants {
  double lerp_weight;  // 1 - beta1
  double beta2, one_minus_beta2, eps;
};

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// The reference decision on host memory (same contract as the CUDA kernel). Throws
// std::invalid_argument when state.step >= settings.table_steps or a pointer is null.
void decide_step(const StepInputs& inputs, const StepTables& tables, const StepControlSettings& settings,
                 StepState& state);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// One single-thread launch on `stream`: the decision into *state (device memory). The host checks
// the step range before the launch (optim::StepControl counts its decisions); the kernel clamps an
// out-of-range index and marks the decision skipped so that it never reads outside the tables.
void decide_step(const StepInputs& inputs, const StepTables& tables, const StepControlSettings& settings,
                 StepState* state, cudaStream_t stream);

// Sets state->force_skip = 1 (one launch): the next decision skips.
void force_skip(StepState* state, cudaStream_t stream);

}  // namespace coco::kernels::cuda
