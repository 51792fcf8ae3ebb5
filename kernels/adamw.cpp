// CPU reference of the fused AdamW update (see kernels/adamw.h for the formula).
#include "kernels/adamw.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "engine/runtime/cpu_backend.h"

namespace coco::kernels {

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument("kernels::adamw_scalars: " + what);
}

}  // namespace

AdamWScalars adamw_scalars(const AdamWHyper& h) {
  require(std::isfinite(h.lr) && h.lr >= 0.0, "lr must be finite and >= 0, got " + std::to_string(h.lr));
  require(h.beta1 >= 0.0 && h.beta1 < 1.0, "beta1 must be in [0, 1), got " + std::to_string(h.beta1));
  require(h.beta2 >= 0.0 && h.beta2 < 1.0, "beta2 must be in [0, 1), got " + std::to_string(h.beta2));
  require(std::isfinite(h.eps) && h.eps >= 0.0, "eps must be finite and >= 0, got " + std::to_string(h.eps));
  require(std::isfinite(h.weight_decay) && h.weight_decay >= 0.0,
          "weight_decay must be finite and >= 0, got " + std::to_string(h.weight_decay));
  require(h.step >= 1, "step must be >= 1 (1-based), got " + std::to_string(h.step));
  require(std::isfinite(h.grad_scale), "grad_scale must be finite, got " + std::to_string(h.grad_scale));
  const double t = static_cast<double>(h.step);
  const double bias_correction1 = 1.0 - std::pow(h.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(h.beta2, t);
  AdamWScalars s{};
  s.decay_factor = 1.0 - h.lr * h.weight_decay;
  s.lerp_weight = 1.0 - h.beta1;
  s.beta2 = h.beta2;
  s.one_minus_beta2 = 1.0 - h.beta2;
  s.step_size = h.lr / bias_correction1;
  s.bias_correction2_sqrt = std::sqrt(bias_correction2);
  s.eps = h.eps;
  s.grad_scale = h.grad_scale;
  return s;
}

AdamWScalars adamw_scalars(const AdamWConstants& constants, const StepState& state) {
  AdamWScalars s{};
  s.decay_factor = state.decay_factor;
  s.lerp_weight = constants.lerp_weight;
  s.beta2 = constants.beta2;
  s.one_minus_beta2 = constants.one_minus_beta2;
  s.step_size = state.step_size;
  s.bias_correction2_sqrt = state.bias_correction2_sqrt;
  s.eps = constants.eps;
  s.grad_scale = state.grad_scale;
  return s;
}

int64_t plan_adamw_chunks(std::vector<AdamWTensorDesc>& descs) {
  int64_t chunks = 0;
  for (size_t i = 0; i < descs.size(); ++i) {
    AdamWTensorDesc& d = descs[i];
    const std::string where = "kernels::plan_adamw_chunks: tensor " + std::to_string(i);
    if (d.numel < 0) throw std::invalid_argument(where + ": negative numel " + std::to_string(d.numel));
    if (d.numel > 0 && (!d.param || !d.grad || !d.exp_avg || !d.exp_avg_sq))
      throw std::invalid_argument(where + ": null param/grad/exp_avg/exp_avg_sq pointer");
    if (d.grad_dtype != DType::f32 && d.grad_dtype != DType::bf16 && d.grad_dtype != DType::f16)
      throw std::invalid_argument(where + ": grad dtype " + dtype_name(d.grad_dtype) + ", expected f32, bf16 or f16");
    d.first_chunk = chunks;
    chunks += (d.numel + kAdamWChunk - 1) / kAdamWChunk;
  }
  return chunks;
}

}  // namespace coco::kernels

namespace coco::kernels::cpu {

namespace {

template <class T, class G>
T widen_grad(G g) {
  if constexpr (std::is_same_v<G, __nv_bfloat16>)
    return static_cast<T>(__bfloat162float(g));
  else if constexpr (std::is_same_v<G, __half>)
    return static_cast<T>(__half2float(g));
  else
    return static_cast<T>(g);
}

}  // namespace

template <class T, class G>
void adamw_update(T* param, const G* grad, T* exp_avg, T* exp_avg_sq, __nv_bfloat16* param_bf16, int64_t numel,
                  bool apply_weight_decay, const AdamWScalars& s) {
  const T decay_factor = static_cast<T>(s.decay_factor), lerp_weight = static_cast<T>(s.lerp_weight);
  const T beta2 = static_cast<T>(s.beta2), one_minus_beta2 = static_cast<T>(s.one_minus_beta2);
  const T step_size = static_cast<T>(s.step_size), bc2_sqrt = static_cast<T>(s.bias_correction2_sqrt);
  const T eps = static_cast<T>(s.eps), grad_scale = static_cast<T>(s.grad_scale);
  // Every element on its own: ranges on the CPU pool give the same bits for any thread count.
  runtime::cpu::parallel_for(numel, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T g = widen_grad<T>(grad[i]) * grad_scale;
      T p = param[i];
      if (apply_weight_decay) p = p * decay_factor;
      const T m = adamw_lerp(exp_avg[i], g, lerp_weight);
      const T v = exp_avg_sq[i] * beta2 + (one_minus_beta2 * g) * g;
      const T denom = std::sqrt(v) / bc2_sqrt + eps;
      p = p + (-step_size) * (m / denom);
      param[i] = p;
      exp_avg[i] = m;
      exp_avg_sq[i] = v;
      if (param_bf16) param_bf16[i] = __float2bfloat16(static_cast<float>(p));
    }
  });
}

template void adamw_update<float, float>(float*, const float*, float*, float*, __nv_bfloat16*, int64_t, bool,
                                         const AdamWScalars&);
template void adamw_update<float, __nv_bfloat16>(float*, const __nv_bfloat16*, float*, float*, __nv_bfloat16*, int64_t,
                                                 bool, const AdamWScalars&);
template void adamw_update<float, __half>(float*, const __half*, float*, float*, __nv_bfloat16*, int64_t, bool,
                                          const AdamWScalars&);
template void adamw_update<double, double>(double*, const double*, double*, double*, __nv_bfloat16*, int64_t, bool,
                                           const AdamWScalars&);

void adamw_multi_tensor(const std::vector<AdamWTensorDesc>& descs, const AdamWScalars& scalars) {
  for (size_t i = 0; i < descs.size(); ++i) {
    const AdamWTensorDesc& d = descs[i];
    if (d.numel < 0)
      throw std::invalid_argument("kernels::cpu::adamw_multi_tensor: tensor " + std::to_string(i) +
                                  ": negative numel " + std::to_string(d.numel));
    if (d.numel == 0) continue;
    const bool decay = d.apply_weight_decay != 0;
    switch (d.grad_dtype) {
      case DType::f32:
        adamw_update(d.param, static_cast<const float*>(d.grad), d.exp_avg, d.exp_avg_sq, d.param_bf16, d.numel, decay,
                     scalars);
        break;
      case DType::bf16:
        adamw_update(d.param, static_cast<const __nv_bfloat16*>(d.grad), d.exp_avg, d.exp_avg_sq, d.param_bf16, d.numel,
                     decay, scalars);
        break;
      case DType::f16:
        adamw_update(d.param, static_cast<const __half*>(d.grad), d.exp_avg, d.exp_avg_sq, d.param_bf16, d.numel, decay,
                     scalars);
        break;
      default:
        throw std::invalid_argument("kernels::cpu::adamw_multi_tensor: tensor " + std::to_string(i) + ": grad dtype " +
                                    dtype_name(d.grad_dtype) + ", expected f32, bf16 or f16");
    }
  }
}

}  // namespace coco::kernels::cpu
