// A training step's metric sums, accumulated on the device (issue #14): each micro-batch adds its
// row-weighted losses and its counts with one launch and no read; the owner reads the sums when it
// needs them (one device-to-host copy) and starts the next step from zero.
#pragma once
#include <cstdint>
#include <vector>

#include "coco/objective.h"
#include "engine/device.h"
#include "kernels/step_control.h"

namespace coco::objective {

struct StepSums {
  // Sums over micro-batches of rows * loss (divide by rows for the row-weighted mean).
  double loss = 0, mlm = 0, rtd = 0, clm = 0, cl = 0;
  // Sums of the forward counts (objective::Counts).
  int64_t masked = 0, mlm_correct = 0, rtd_correct = 0, rtd_count = 0, cl_correct = 0, cl_count = 0;
  int64_t clm_correct = 0;
};

class StepMetrics {
 public:
  explicit StepMetrics(Device device);
  // Adds one micro-batch of `rows` sequences (one launch on CUDA).
  void add(const Outputs& out, int64_t rows);
  // The sums since the last reset (one device-to-host copy on CUDA).
  StepSums read() const;
  // Zeroes the sums (one memset).
  void reset();
  // The row-weighted loss sum as a (1) f64 view on the device (a device-side step decision checks
  // that it is finite).
  Tensor loss_sum() const;
  // All sums, (kSlots) f64 on the device, in the slot order read() decodes.
  const Tensor& sums() const { return sums_; }
  // Decodes sums copied off the device (kSlots doubles in slot order).
  static StepSums decode(const double* sums);
  static constexpr int64_t kSlots = 12;

 private:
  Tensor sums_;  // (kSlots) f64
};

// A training step's record, taken off the device only at the logging cadence (issue #14): the metric
// sums and the device-decided step's state (kernels::StepState) go into pinned host memory with
// asynchronous copies that an event completes; the host waits only when it takes the record. On the
// CPU the copy is a plain memcpy.
//
//   record.capture(metrics, control.state());   // queued after the step's work; no wait
//   metrics.reset();                             // stream order: the copy has read the sums first
//   ...
//   const StepRecordCopy::Record r = record.take();   // waits for the copies to land
class StepRecordCopy {
 public:
  explicit StepRecordCopy(Device device);
  ~StepRecordCopy();
  StepRecordCopy(const StepRecordCopy&) = delete;
  StepRecordCopy& operator=(const StepRecordCopy&) = delete;

  // Queues the copies of `metrics`' sums, of `state` (sizeof(kernels::StepState) bytes on the
  // device) and, when defined, of `checks` (ops::DeviceChecks::counters(): the validation counts come
  // with the record, so that a logging step waits once). Throws std::logic_error when a captured record
  // has not been taken yet, TensorError for a state of another size, checks that are not up to kMaxChecks
  // i32 values, or tensors on another device.
  void capture(const StepMetrics& metrics, const Tensor& state, const Tensor& checks = Tensor());
  bool pending() const { return pending_; }
  static constexpr int64_t kMaxChecks = 8;

  struct Record {
    StepSums sums;
    kernels::StepState state;
    std::vector<int32_t> checks;  // the counts of `checks` (empty when none was given)
  };
  // The captured record (waits for its copies when they have not landed). std::logic_error when
  // nothing was captured.
  Record take();

 private:
  Device device_;
  void* pinned_ = nullptr;  // StepMetrics::kSlots doubles, the StepState, then up to kMaxChecks i32
  std::unique_ptr<Event> copied_;
  bool pending_ = false;
  int64_t checks_ = 0;  // i32 counts copied with the pending record
};

}  // namespace coco::objective
