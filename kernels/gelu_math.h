// Scalar GELU formulas shared by the CPU reference (f32/f64) and the CUDA kernels (f32).
#pragma once
#include <cmath>

#include "engine/runtime/cuda_api.h"
#include "kernels/gelu.h"

namespace coco::kernels::detail {

template <class F>
struct GeluConstants {
  static constexpr F half = F(0.5);
  static constexpr F one = F(1);
  static constexpr F inv_sqrt2 = F(0.70710678118654752440);
  static constexpr F inv_sqrt_2pi = F(0.39894228040143267794);
  static constexpr F sqrt_2_over_pi = F(0.79788456080286535588);
  static constexpr F cubic = F(0.044715);
};

// F: float or double (std::erf/std::tanh/std::exp pick the matching precision).
template <class F>
__host__ __device__ inline F gelu_value(F x, GeluApproximation approximation) {
  using K = GeluConstants<F>;
  if (approximation == GeluApproximation::erf) return K::half * x * (K::one + erf(x * K::inv_sqrt2));
  const F u = K::sqrt_2_over_pi * (x + K::cubic * x * x * x);
  return K::half * x * (K::one + tanh(u));
}

template <class F>
__host__ __device__ inline F gelu_derivative(F x, GeluApproximation approximation) {
  using K = GeluConstants<F>;
  if (approximation == GeluApproximation::erf)
    return K::half * (K::one + erf(x * K::inv_sqrt2)) + x * exp(F(-0.5) * x * x) * K::inv_sqrt_2pi;
  const F t = tanh(K::sqrt_2_over_pi * (x + K::cubic * x * x * x));
  const F sech2 = K::one - t * t;
  // For |x| > ~10 sech2 is exactly 0 while x^2 may overflow; skip the term rather than form 0 * inf.
  const F slope_term =
      sech2 == F(0) ? F(0) : K::half * x * sech2 * K::sqrt_2_over_pi * (K::one + F(3) * K::cubic * x * x);
  return K::half * (K::one + t) + slope_term;
}

}  // namespace coco::kernels::detail
