// CPU reference of the device-side step decision (see kernels/step_control.h for the rules).
#include "kernels/step_control.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace coco::kernels::cpu {

void decide_step(const StepInputs& inputs, const StepTables& tables, const StepControlSettings& settings,
                 StepState& state) {
  if (!inputs.sum_sq || !inputs.nonfinite)
    throw std::invalid_argument("kernels::cpu::decide_step: null sum of squares or non-finite flag");
  if (!tables.lr || !tables.decay_factor || !tables.bias_correction1 || !tables.bias_correction2_sqrt)
    throw std::invalid_argument("kernels::cpu::decide_step: null schedule table");
  if (state.step < 0 || state.step >= settings.table_steps || state.applied < 0 || state.applied > state.step)
    throw std::invalid_argument("kernels::cpu::decide_step: step " + std::to_string(state.step) + " (applied " +
                                std::to_string(state.applied) + ") is outside the schedule table of " +
                                std::to_string(settings.table_steps) + " steps");
  const bool dynamic = settings.dynamic_scale != 0;
  const double scale = dynamic ? state.loss_scale : 1.0;
  const double norm = std::sqrt(*inputs.sum_sq) * std::fabs(1.0 / scale);
  const bool skip = *inputs.nonfinite != 0 || (inputs.loss_sum && !std::isfinite(*inputs.loss_sum)) ||
                    !std::isfinite(norm) || state.force_skip != 0;
  const int64_t s = state.step;
  state.force_skip = 0;
  state.lr = tables.lr[s];
  state.step_loss_scale = scale;
  if (skip) {
    ++state.skipped_total;
    const bool scaler_searching = dynamic && scale > settings.min_scale;
    if (!scaler_searching) ++state.consecutive_skips;
    state.apply = 0;
    state.grad_norm = std::numeric_limits<double>::quiet_NaN();
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
        state.loss_scale = std::max(state.loss_scale * settings.backoff_factor, settings.min_scale);
      }
    } else if (++state.growth_tracker == settings.growth_interval) {
      state.growth_tracker = 0;
      state.hysteresis_left = settings.hysteresis;
      const double grown = state.loss_scale * settings.growth_factor;
      if (std::isfinite(grown)) state.loss_scale = grown;
    }
  }
  ++state.step;
  state.backward_seed = static_cast<float>((dynamic ? state.loss_scale : 1.0) / settings.seed_divisor);
  if (inputs.seed_out) *inputs.seed_out = state.backward_seed;
}

}  // namespace coco::kernels::cpu
