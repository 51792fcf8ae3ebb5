// Device copies of multi-tensor kernel descriptors, cached by content (engine/ops/optim.cpp): a step
// that passes the same gradient buffers every time uploads its descriptors once, so a steady-state
// step issues no host-to-device copy for them. Internal to engine/ops.
#pragma once
#include <vector>

#include "engine/tensor.h"
#include "kernels/adamw.h"
#include "kernels/gradnorm.h"

namespace coco::optim::detail {

Tensor cached_device_copy(const std::vector<kernels::NormTensorDesc>& descs);
Tensor cached_device_copy(const std::vector<kernels::AdamWTensorDesc>& descs);

}  // namespace coco::optim::detail
