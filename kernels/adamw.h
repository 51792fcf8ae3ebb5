// Fused multi-tensor AdamW: one launch updates every parameter tensor of a model.
//
// The update is torch.optim.AdamW (amsgrad=False, maximize=False, foreach/fused off) applied to
// f32 master weights with f32 moments:
//
//   g  = grad * grad_scale                       (grad_scale folds in clipping and 1/loss_scale)
//   p  = p * (1 - lr * weight_decay)             (only for tensors with apply_weight_decay)
//   m  = lerp(m, g, 1 - beta1)                   (torch's lerp formula, see adamw_lerp)
//   v  = v * beta2 + (1 - beta2) * g * g
//   p  = p - (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
//   bf16 working copy (optional) = round_to_nearest_even(p)
//
// The step-dependent scalars are computed once on the host in double precision, as PyTorch computes
// them in Python floats, then rounded to the parameter type (adamw_scalars).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/dtype.h"
#include "engine/runtime/cuda_api.h"
#include "kernels/step_control.h"

namespace coco::kernels {

struct AdamWHyper {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
  int64_t step = 1;         // 1-based count of this update (bias correction)
  double grad_scale = 1.0;  // multiplies every gradient before the update
};

// Scalars of one step, derived in double from AdamWHyper (the kernels round them to their type).
struct AdamWScalars {
  double decay_factor;  // 1 - lr * weight_decay
  double lerp_weight;   // 1 - beta1
  double beta2;
  double one_minus_beta2;
  double step_size;              // lr / (1 - beta1^step)
  double bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  double eps;
  double grad_scale;
};

// Throws std::invalid_argument naming the bad hyperparameter (lr < 0, betas outside [0, 1), eps <= 0,
// weight_decay < 0, step < 1, non-finite values).
AdamWScalars adamw_scalars(const AdamWHyper& hyper);

// The scalars of the update a device decision made (kernels/step_control.h): the step-dependent
// ones from `state`, the others from `constants`. What the controlled launch computes on the device.
AdamWScalars adamw_scalars(const AdamWConstants& constants, const StepState& state);

// One parameter tensor of a multi-tensor update. Device pointers for the CUDA path.
struct AdamWTensorDesc {
  float* param = nullptr;               // (numel) f32 master weights, updated in place
  const void* grad = nullptr;           // (numel) gradient of dtype grad_dtype (f32, bf16 or f16)
  float* exp_avg = nullptr;             // (numel) first moment m
  float* exp_avg_sq = nullptr;          // (numel) second moment v
  __nv_bfloat16* param_bf16 = nullptr;  // (numel) optional working copy written in the same pass
  int64_t numel = 0;
  int64_t first_chunk = 0;  // set by plan_adamw_chunks
  DType grad_dtype = DType::f32;
  uint8_t apply_weight_decay = 1;
};

// Elements per CUDA block of the multi-tensor launch.
inline constexpr int64_t kAdamWChunk = 4096;

// Fills first_chunk of every descriptor (chunks of kAdamWChunk elements, tensors back to back) and
// returns the total number of chunks. Throws std::invalid_argument on a negative numel, a null
// pointer in a non-empty tensor, or an unsupported grad dtype, naming the descriptor index.
int64_t plan_adamw_chunks(std::vector<AdamWTensorDesc>& descs);

// torch.lerp(start, end, weight) for scalars (aten/src/ATen/native/Lerp.h).
template <class T>
__host__ __device__ inline T adamw_lerp(T start, T end, T weight) {
  return weight < T(0.5) ? start + weight * (end - start) : end - (end - start) * (T(1) - weight);
}

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// Reference update of one tensor. T = float (G = float, bf16 or f16) or double (G = double).
// param, exp_avg, exp_avg_sq, grad: (numel); param_bf16: (numel) or nullptr.
template <class T, class G>
void adamw_update(T* param, const G* grad, T* exp_avg, T* exp_avg_sq, __nv_bfloat16* param_bf16, int64_t numel,
                  bool apply_weight_decay, const AdamWScalars& scalars);

// All tensors of `descs` (host pointers), same contract as the CUDA launch.
void adamw_multi_tensor(const std::vector<AdamWTensorDesc>& descs, const AdamWScalars& scalars);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// device_descs: device array of `num_tensors` descriptors planned by plan_adamw_chunks (total_chunks
// from it). One launch, one block per chunk; elementwise, so the result does not depend on the
// schedule. Asynchronous on `stream`.
void adamw_multi_tensor(const AdamWTensorDesc* device_descs, int num_tensors, int64_t total_chunks,
                        const AdamWScalars& scalars, cudaStream_t stream);

// The same update with its step-dependent scalars read on the device from *state (written by
// kernels::cuda::decide_step earlier on the stream): adamw_scalars(constants, *state), and nothing
// changes when state->apply == 0 (a skipped step). The launch is the same every step.
void adamw_multi_tensor_controlled(const AdamWTensorDesc* device_descs, int num_tensors, int64_t total_chunks,
                                   const AdamWConstants& constants, const StepState* state, cudaStream_t stream);

}  // namespace coco::kernels::cuda
