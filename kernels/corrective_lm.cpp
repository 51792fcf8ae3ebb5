// CPU reference of the corrective LM loss (semantics in kernels/corrective_lm.h): row terms in
// double, summed in row order.
#include "kernels/corrective_lm.h"

#include <stdexcept>
#include <string>

#include "kernels/corrective_lm_math.h"

namespace coco::kernels::cpu {

template <class T>
void corrective_lm_loss(const T* row_ce, const T* copy_logits, const int32_t* targets, const int32_t* samples,
                        int64_t rows, int32_t ignore_index, CorrectiveLmForm form, T* loss, T* row_weights) {
  if (rows < 0)
    throw std::invalid_argument("kernels::cpu::corrective_lm_loss: negative row count " + std::to_string(rows));
  double sum = 0.0;
  int64_t contributing = 0;
  for (int64_t i = 0; i < rows; ++i) {
    if (targets[i] == ignore_index) {
      row_weights[i] = T(0);
      continue;
    }
    const detail::CorrectiveLmRow<double> row = detail::corrective_lm_row<double>(
        static_cast<double>(row_ce[i]), static_cast<double>(copy_logits[i]), samples[i] == targets[i], form);
    row_weights[i] = static_cast<T>(row.weight);
    sum += row.loss;
    ++contributing;
  }
  *loss = contributing > 0 ? static_cast<T>(sum / static_cast<double>(contributing)) : T(0);
}

template void corrective_lm_loss<float>(const float*, const float*, const int32_t*, const int32_t*, int64_t, int32_t,
                                        CorrectiveLmForm, float*, float*);
template void corrective_lm_loss<double>(const double*, const double*, const int32_t*, const int32_t*, int64_t, int32_t,
                                         CorrectiveLmForm, double*, double*);

}  // namespace coco::kernels::cpu
