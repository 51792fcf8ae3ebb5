// A training step's metric sums, accumulated on the device (issue #14): each micro-batch adds its
// row-weighted losses and its counts with one launch and no read; the owner reads the sums when it
// needs them (one device-to-host copy) and starts the next step from zero.
#pragma once
#include <cstdint>

#include "coco/objective.h"

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

 private:
  Tensor sums_;  // (kSlots) f64
};

}  // namespace coco::objective
