// CUDA corrective LM loss (semantics in kernels/corrective_lm.h). The rows are the masked positions
// (about 15% of a micro-batch's tokens), so one block walks them all and adds its per-thread double
// partials in a fixed tree: the loss is bitwise reproducible and no second pass is needed.
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/corrective_lm.h"
#include "kernels/corrective_lm_math.h"

namespace coco::kernels::detail {
namespace {

constexpr int kCorrectiveLmThreads = 256;

// row_ce, copy_logits, targets, samples: (rows) -> loss (1), row_weights (rows). One block.
__global__ void __launch_bounds__(kCorrectiveLmThreads)
    corrective_lm_loss_kernel(const float* __restrict__ row_ce, const float* __restrict__ copy_logits,
                              const int32_t* __restrict__ targets, const int32_t* __restrict__ samples, int64_t rows,
                              int32_t ignore_index, int form, float* __restrict__ loss,
                              float* __restrict__ row_weights) {
  __shared__ double partial_loss[kCorrectiveLmThreads];
  __shared__ int64_t partial_count[kCorrectiveLmThreads];
  double sum = 0.0;
  int64_t count = 0;
  for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) {
    const int32_t target = targets[i];
    if (target == ignore_index) {
      row_weights[i] = 0.0f;
      continue;
    }
    const CorrectiveLmRow<float> row =
        corrective_lm_row<float>(row_ce[i], copy_logits[i], samples[i] == target, static_cast<CorrectiveLmForm>(form));
    row_weights[i] = row.weight;
    sum += static_cast<double>(row.loss);
    ++count;
  }
  partial_loss[threadIdx.x] = sum;
  partial_count[threadIdx.x] = count;
  __syncthreads();
  for (int half = kCorrectiveLmThreads / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) {
      partial_loss[threadIdx.x] += partial_loss[threadIdx.x + half];
      partial_count[threadIdx.x] += partial_count[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0)
    *loss = partial_count[0] > 0 ? static_cast<float>(partial_loss[0] / static_cast<double>(partial_count[0])) : 0.0f;
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

void corrective_lm_loss(const float* row_ce, const float* copy_logits, const int32_t* targets, const int32_t* samples,
                        int64_t rows, int32_t ignore_index, CorrectiveLmForm form, float* loss, float* row_weights,
                        cudaStream_t stream) {
  if (rows < 0)
    throw std::invalid_argument("kernels::cuda::corrective_lm_loss: negative row count " + std::to_string(rows));
  COCO_LAUNCH(detail::corrective_lm_loss_kernel, dim3(1), dim3(detail::kCorrectiveLmThreads), 0, stream, row_ce,
              copy_logits, targets, samples, rows, ignore_index, static_cast<int>(form), loss, row_weights);
}

}  // namespace coco::kernels::cuda
