// CPU reference of the non-finite gradient check.
#include "kernels/loss_scale.h"

#include <cmath>

namespace coco::kernels::cpu {

bool any_nonfinite(const std::vector<NormTensorDesc>& descs) {
  bool found = false;
  for_each_value("kernels::cpu::any_nonfinite", descs, [&](double x) {
    found = !std::isfinite(x);
    return !found;
  });
  return found;
}

}  // namespace coco::kernels::cpu
