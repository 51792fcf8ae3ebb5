// Device scalars gathered into one f64 vector on their device in one launch (kernels/device_metrics.h):
// a forward's metric counts, a step's metric sums. Nothing is read back.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace coco::ops {

// Element `index` of `tensor` (f32, f64 or i32) times `weight`; an undefined tensor reads as 0.
struct ScalarRef {
  Tensor tensor;
  int64_t index = 0;
  double weight = 1.0;
};

enum class ScalarUpdate { assign, accumulate };

// dst: (sources.size()) f64 on the sources' device; dst[k] = (or +=) weight_k * value_k in f64.
// Throws TensorError for a mismatched dst, a source on another device, an out-of-range index, a
// dtype other than f32/f64/i32, or more than kernels::kMaxScalarSources sources.
void gather_scalars(const std::vector<ScalarRef>& sources, Tensor& dst, ScalarUpdate update);

}  // namespace coco::ops
