// CUDA step decision: one thread reads the gradients' statistics and the step's loss sum where the
// previous kernels left them and writes the StepState that AdamW reads (kernels/step_control.h).
#include <cstdint>
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/step_control.h"

namespace coco::kernels::detail {
namespace {

// Finite: neither NaN nor +-Inf (the exponent bits are not all ones).
__device__ inline bool finite_double(double x) {
  return (__double_as_longlong(x) & 0x7ff0000000000000LL) != 0x7ff0000000000000LL;
}

__device__ inline double quiet_nan() { return __longlong_as_double(0x7ff8000000000000LL); }

// inputs: sum_sq (1), nonfinite (1), loss_sum (1) or null; tables: (table_steps) each; state: (1).
// grid: (1), block: (1)
__global__ void decide_step_kernel(StepInputs inputs, StepTables tables, StepControlSettings settings,
                                   StepState* __restrict__ state_ptr) {
  StepState state = *state_ptr;
  const bool dynamic = settings.dynamic_scale != 0;
  const double scale = dynamic ? state.loss_scale : 1.0;
  const double norm = sqrt(*inputs.sum_sq) * fabs(1.0 / scale);
  // The host refuses a step outside the tables before launching; should one get here anyway it is
  // skipped and reads nothing out of range.
  const bool in_range = state.step >= 0 && state.step < settings.table_steps && state.applied >= 0 &&
                        state.applied < settings.table_steps;
  const bool skip = *inputs.nonfinite != 0 || (inputs.loss_sum && !finite_double(*inputs.loss_sum)) ||
                    !finite_double(norm) || state.force_skip != 0 || !in_range;
  const int64_t s = in_range ? state.step : 0;
  state.force_skip = 0;
  state.lr = tables.lr[s];
  state.step_loss_scale = scale;
  if (skip) {
    ++state.skipped_total;
    const bool scaler_searching = dynamic && scale > settings.min_scale;
    if (!scaler_searching) ++state.consecutive_skips;
    state.apply = 0;
    state.grad_norm = quiet_nan();
  } else {
    state.consecutive_skips = 0;
    const int64_t t = ++state.applied;
    const double factor = settings.clip_norm > 0.0 ? step_clip_factor(norm, settings.clip_norm) : 1.0;
    state.apply = 1;
    state.grad_norm = norm;
    state.grad_scale = factor / scale;
    state.decay_factor = tables.decay_factor[s];
    state.step_size = state.lr / tables.bias_correction1[t - 1];
    state.bias_correction2_sqrt = tables.bias_correction2_sqrt[t - 1];
  }
  if (dynamic) {  // optim::GradScaler::update
    if (skip) {
      ++state.scaler_skipped;
      state.growth_tracker = 0;
      if (--state.hysteresis_left <= 0) {
        state.hysteresis_left = 0;
        const double backed_off = state.loss_scale * settings.backoff_factor;
        state.loss_scale = backed_off > settings.min_scale ? backed_off : settings.min_scale;
      }
    } else if (++state.growth_tracker == settings.growth_interval) {
      state.growth_tracker = 0;
      state.hysteresis_left = settings.hysteresis;
      const double grown = state.loss_scale * settings.growth_factor;
      if (finite_double(grown)) state.loss_scale = grown;
    }
  }
  ++state.step;
  state.backward_seed = static_cast<float>((dynamic ? state.loss_scale : 1.0) / settings.seed_divisor);
  *state_ptr = state;
  if (inputs.seed_out) *inputs.seed_out = state.backward_seed;
}

// grid: (1), block: (1)
__global__ void force_skip_kernel(StepState* __restrict__ state) { state->force_skip = 1; }

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

void decide_step(const StepInputs& inputs, const StepTables& tables, const StepControlSettings& settings,
                 StepState* state, cudaStream_t stream) {
  if (!inputs.sum_sq || !inputs.nonfinite || !state)
    throw std::invalid_argument("kernels::cuda::decide_step: null sum of squares, non-finite flag or state");
  if (!tables.lr || !tables.decay_factor || !tables.bias_correction1 || !tables.bias_correction2_sqrt ||
      settings.table_steps < 1)
    throw std::invalid_argument("kernels::cuda::decide_step: no schedule table (table_steps " +
                                std::to_string(settings.table_steps) + ")");
  COCO_LAUNCH(detail::decide_step_kernel, dim3(1), dim3(1), 0, stream, inputs, tables, settings, state);
}

void force_skip(StepState* state, cudaStream_t stream) {
  if (!state) throw std::invalid_argument("kernels::cuda::force_skip: null state");
  COCO_LAUNCH(detail::force_skip_kernel, dim3(1), dim3(1), 0, stream, state);
}

}  // namespace coco::kernels::cuda
