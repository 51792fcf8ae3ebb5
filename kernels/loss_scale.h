// Non-finite detection over all gradients (one flag), the device half of dynamic loss scaling. The
// scaler's state machine is host code (coco::optim::GradScaler in engine/ops/optim.h).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/runtime/cuda_api.h"
#include "kernels/gradnorm.h"

namespace coco::kernels::cpu {

// True when any element of any tensor (host pointers; f32, bf16, f16 or f64) is NaN or +-Inf.
bool any_nonfinite(const std::vector<NormTensorDesc>& descs);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// device_descs: (num_tensors) planned by plan_norm_chunks (the same chunking as the norm).
// flag: (1) i32 on the device. Sets *flag = 1 when any element is NaN or +-Inf and leaves it
// untouched otherwise, so several calls can OR into one flag (zero it before the first). The result
// is a pure OR, independent of the schedule. Asynchronous on `stream`.
void mark_nonfinite(const NormTensorDesc* device_descs, int num_tensors, int64_t total_chunks, int32_t* flag,
                    cudaStream_t stream);

}  // namespace coco::kernels::cuda
