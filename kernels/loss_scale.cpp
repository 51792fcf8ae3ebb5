// CPU reference of the non-finite gradient check.
#include "kernels/loss_scale.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace coco::kernels::cpu {

bool any_nonfinite(const std::vector<NormTensorDesc>& descs) {
  for (size_t t = 0; t < descs.size(); ++t) {
    const NormTensorDesc& d = descs[t];
    if (d.numel < 0)
      throw std::invalid_argument("kernels::cpu::any_nonfinite: tensor " + std::to_string(t) + ": negative numel");
    for (int64_t i = 0; i < d.numel; ++i) {
      double x = 0.0;
      switch (d.dtype) {
        case DType::f32: x = static_cast<const float*>(d.data)[i]; break;
        case DType::bf16: x = __bfloat162float(static_cast<const __nv_bfloat16*>(d.data)[i]); break;
        case DType::f16: x = __half2float(static_cast<const __half*>(d.data)[i]); break;
        case DType::f64: x = static_cast<const double*>(d.data)[i]; break;
        default:
          throw std::invalid_argument("kernels::cpu::any_nonfinite: tensor " + std::to_string(t) + ": dtype " +
                                      dtype_name(d.dtype) + ", expected f32, bf16, f16 or f64");
      }
      if (!std::isfinite(x)) return true;
    }
  }
  return false;
}

}  // namespace coco::kernels::cpu
