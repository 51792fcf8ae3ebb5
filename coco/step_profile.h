// The step profile of `coco train` (issue #14): the runtime layer's counters (engine/runtime/counters.h) over
// one steady training step on a CUDA device, the first one after `warmup_steps` steps of this process that
// writes no metrics record, is not skipped and is steady (a logging step reads the metrics back, which a steady
// step does not; a skipped step takes another path; with runtime.cuda_graph only a replay of the captured step
// is). The figures go once into the next step record of metrics.jsonl and into one line of the start-up messages
// (docs/metrics.md):
//
//   launches_per_step     kernel launches + graph launches + library calls (GEMMs, collectives) + copies
//                         + memsets: the device work the host queued one call at a time
//   syncs_per_step        stream / device / event synchronizations and synchronous copies
//   d2h_copies_per_step   device-to-host copies
//   h2d_bytes_per_step    host-to-device bytes
//   cuda_mallocs_per_step allocations that reached cudaMalloc (0 once the caching allocator is warm)
//   kernels_per_step, graph_launches_per_step, gemms_per_step, collectives_per_step: the parts of
//                         launches_per_step (a replayed CUDA graph, runtime.cuda_graph, counts one graph launch)
//   profile_step          the step that was measured
//
// The counters are process-wide: in a data-parallel run every process counts its own (rank 0 reports).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace coco::train {

class StepProfiler {
 public:
  // `enabled`: the run is on a CUDA device and writes the run directory (else nothing is ever measured).
  explicit StepProfiler(bool enabled, int64_t warmup_steps = 2);
  ~StepProfiler();
  StepProfiler(const StepProfiler&) = delete;
  StepProfiler& operator=(const StepProfiler&) = delete;

  // Before the step that will be number `step` (1-based); `logs`: it will write a metrics record; `steady`: the
  // step is one the run repeats (with a CUDA graph: a replay), so it may be the one measured.
  void begin(int64_t step, bool logs, bool steady = true);
  // After the step's work (optimizer and scaler included), before its metrics record, evaluation and
  // checkpoint. `skipped`: the step was skipped (non-finite) and is not measured. True when this step
  // was just measured.
  bool end(bool skipped);

  bool measured() const { return measured_; }
  // The figures as (key, value), the metrics.jsonl keys above; empty before a measurement.
  std::vector<std::pair<std::string, uint64_t>> fields() const;
  // The figures for a step record, once: true the first time it is called after the measurement.
  bool take_pending() {
    const bool was = pending_;
    pending_ = false;
    return was;
  }
  // "step profile (step 3, CUDA runtime calls per steady step): launches 836 (kernels 456, GEMMs 212, ...)"
  std::string line() const;

 private:
  bool enabled_;
  int64_t warmup_;
  int64_t steps_seen_ = 0;  // steps begun in this process
  bool active_ = false, measured_ = false, pending_ = false;
  int64_t step_ = 0;
  struct Window;  // the runtime counters (engine/runtime/counters.h is not an installed header)
  std::unique_ptr<Window> window_;
};

}  // namespace coco::train
