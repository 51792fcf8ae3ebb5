#include "coco/step_profile.h"

#include "engine/runtime/counters.h"

namespace coco::train {

struct StepProfiler::Window {
  runtime::StepProfile profile;
  runtime::Counters figures;
};

StepProfiler::StepProfiler(bool enabled, int64_t warmup_steps)
    : enabled_(enabled), warmup_(warmup_steps), window_(std::make_unique<Window>()) {}

StepProfiler::~StepProfiler() = default;

void StepProfiler::begin(int64_t step, bool logs, bool steady) {
  ++steps_seen_;
  active_ = enabled_ && !measured_ && !logs && steady && steps_seen_ > warmup_;
  if (!active_) return;
  step_ = step;
  window_->profile.restart();
}

bool StepProfiler::end(bool skipped) {
  if (!active_) return false;
  active_ = false;
  if (skipped) return false;
  window_->figures = window_->profile.elapsed();
  measured_ = pending_ = true;
  return true;
}

std::vector<std::pair<std::string, uint64_t>> StepProfiler::fields() const {
  if (!measured_) return {};
  const runtime::Counters& c = window_->figures;
  return {{"launches_per_step", c.launches()},           {"syncs_per_step", c.synchronizations()},
          {"d2h_copies_per_step", c.d2h_copies},         {"h2d_bytes_per_step", c.h2d_bytes},
          {"cuda_mallocs_per_step", c.device_mallocs},   {"kernels_per_step", c.kernel_launches},
          {"graph_launches_per_step", c.graph_launches}, {"gemms_per_step", c.gemm_calls},
          {"collectives_per_step", c.collective_calls},  {"profile_step", static_cast<uint64_t>(step_)}};
}

std::string StepProfiler::line() const {
  if (!measured_) return {};
  const runtime::Counters& c = window_->figures;
  const auto n = [](uint64_t v) { return std::to_string(v); };
  return "step profile (step " + std::to_string(step_) + ", CUDA runtime calls of one steady step): launches " +
         n(c.launches()) + " (kernels " + n(c.kernel_launches) + ", GEMMs " + n(c.gemm_calls) + ", collectives " +
         n(c.collective_calls) + ", graphs " + n(c.graph_launches) + ", copies " +
         n(c.h2d_copies + c.d2h_copies + c.d2d_copies) + ", memsets " + n(c.memsets) + "), syncs " +
         n(c.synchronizations()) + ", d2h copies " + n(c.d2h_copies) + ", h2d bytes " + n(c.h2d_bytes) +
         ", cudaMalloc " + n(c.device_mallocs);
}

}  // namespace coco::train
