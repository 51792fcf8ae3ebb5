// CPU reference of the global gradient norm and the clipping factor.
#include "kernels/gradnorm.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace coco::kernels {

int64_t plan_norm_chunks(std::vector<NormTensorDesc>& descs) {
  int64_t chunks = 0;
  for (size_t i = 0; i < descs.size(); ++i) {
    NormTensorDesc& d = descs[i];
    const std::string where = "kernels::plan_norm_chunks: tensor " + std::to_string(i);
    if (d.numel < 0) throw std::invalid_argument(where + ": negative numel " + std::to_string(d.numel));
    if (d.numel > 0 && !d.data) throw std::invalid_argument(where + ": null data pointer");
    if (d.dtype != DType::f32 && d.dtype != DType::bf16 && d.dtype != DType::f16)
      throw std::invalid_argument(where + ": dtype " + dtype_name(d.dtype) + ", expected f32, bf16 or f16");
    d.first_chunk = chunks;
    chunks += (d.numel + kGradNormChunk - 1) / kGradNormChunk;
  }
  return chunks;
}

double clip_factor(double norm, double max_norm) {
  if (!(max_norm > 0.0) || !std::isfinite(max_norm))
    throw std::invalid_argument("kernels::clip_factor: max_norm must be finite and > 0, got " +
                                std::to_string(max_norm));
  if (!std::isfinite(norm)) return NAN;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

}  // namespace coco::kernels

namespace coco::kernels::cpu {

void for_each_value(const char* op, const std::vector<NormTensorDesc>& descs,
                    const std::function<bool(double)>& visit) {
  for (size_t t = 0; t < descs.size(); ++t) {
    const NormTensorDesc& d = descs[t];
    if (d.numel < 0)
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) + ": negative numel");
    for (int64_t i = 0; i < d.numel; ++i) {
      double x = 0.0;
      switch (d.dtype) {
        case DType::f32:
          x = static_cast<const float*>(d.data)[i];
          break;
        case DType::bf16:
          x = __bfloat162float(static_cast<const __nv_bfloat16*>(d.data)[i]);
          break;
        case DType::f16:
          x = __half2float(static_cast<const __half*>(d.data)[i]);
          break;
        case DType::f64:
          x = static_cast<const double*>(d.data)[i];
          break;
        default:
          throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) + ": dtype " +
                                      dtype_name(d.dtype) + ", expected f32, bf16, f16 or f64");
      }
      if (!visit(x)) return;
    }
  }
}

double sum_of_squares(const std::vector<NormTensorDesc>& descs) {
  double total = 0.0;
  for_each_value("kernels::cpu::sum_of_squares", descs, [&](double x) {
    total += x * x;
    return true;
  });
  return total;
}

}  // namespace coco::kernels::cpu
