// Logarithm and exponential for the samplers, built only from operations IEEE 754 rounds exactly
// (bit manipulation, +, -, *, /, fmaf) with every multiply-add written as an explicit fmaf, so the CPU
// reference, the emulated kernels and a real GPU compute bitwise-identical values (libm's logf/expf
// and CUDA's differ in the last bits, which would flip near-tied samples between backends).
// Accuracy is a few ulp, far below what sampling can resolve.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels::detail {

__host__ __device__ inline uint32_t float_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

__host__ __device__ inline float float_from_bits(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

// a * b rounded on its own: nvcc may otherwise fuse a product with a following addition into one
// fma (different rounding from the host). Host builds use ISO C++ mode, where GCC does not contract.
__host__ __device__ inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

// Natural logarithm of a positive normal float (the samplers only pass values in [2^-24, 17]).
// x = m * 2^e with m in [sqrt(1/2), sqrt(2)); log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| < 0.172,
// as an odd series through s^11 (truncation error below 1e-10 relative).
__host__ __device__ inline float det_log(float x) {
  const uint32_t bits = float_bits(x);
  int e = static_cast<int>(bits >> 23) - 127;
  uint32_t mantissa = (bits & 0x007fffffu) | 0x3f800000u;  // m in [1, 2)
  if (mantissa > 0x3fb504f3u) {                            // m > sqrt(2): use m / 2 (exact)
    mantissa -= 0x00800000u;
    e += 1;
  }
  const float f = float_from_bits(mantissa) - 1.0f;  // exact (Sterbenz)
  const float s = f / (2.0f + f);
  const float z = s * s;
  float poly = fmaf(z, 1.0f / 11.0f, 1.0f / 9.0f);
  poly = fmaf(z, poly, 1.0f / 7.0f);
  poly = fmaf(z, poly, 1.0f / 5.0f);
  poly = fmaf(z, poly, 1.0f / 3.0f);
  const float two_s = 2.0f * s;
  const float log_m = fmaf(two_s * z, poly, two_s);
  return fmaf(static_cast<float>(e), 0.693147180559945309f, log_m);
}

// exp(x) for x <= 0 (a logit minus its row maximum): exactly 1 at 0, and 0 below -86 (where exp is
// under 5e-38 of the maximum's weight, and the result would approach the subnormal range).
// Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, and a degree-7 Taylor polynomial for exp(r).
__host__ __device__ inline float det_exp_nonpositive(float x) {
  if (!(x >= -86.0f)) return 0.0f;            // also -Inf
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float shifted = fmaf(x, 1.44269504088896341f, kRoundMagic);
  const float k = shifted - kRoundMagic;
  float r = fmaf(-k, 0.693145751953125f, x);  // ln2 high part: k * it is exact
  r = fmaf(-k, 1.42860682030941723e-6f, r);   // ln2 low part
  float p = 1.0f / 5040.0f;
  p = fmaf(p, r, 1.0f / 720.0f);
  p = fmaf(p, r, 1.0f / 120.0f);
  p = fmaf(p, r, 1.0f / 24.0f);
  p = fmaf(p, r, 1.0f / 6.0f);
  p = fmaf(p, r, 0.5f);
  p = fmaf(p, r, 1.0f);
  p = fmaf(p, r, 1.0f);
  const float scale = float_from_bits(static_cast<uint32_t>(static_cast<int>(k) + 127) << 23);
  return mul_rn(p, scale);
}

// Uniform in the open interval (0, 1) from a 32-bit draw: (floor(word / 2^9) + 1/2) * 2^-23, every
// value exact, in [2^-24, 1 - 2^-24].
__host__ __device__ inline float open_uniform(uint32_t word) {
  return (static_cast<float>(word >> 9) + 0.5f) * 0x1.0p-23f;
}

// Standard Gumbel noise -log(-log(u)) for u in (0, 1); within [-2.81, 16.64].
__host__ __device__ inline float gumbel_noise(uint32_t word) { return -det_log(-det_log(open_uniform(word))); }

// Argmax order: NaN above everything, then larger values; ties go to the lower index. A total order,
// so any reduction tree finds the same winner.
__host__ __device__ inline bool argmax_better(float a, int64_t ia, float b, int64_t ib) {
  const bool a_nan = a != a, b_nan = b != b;
  if (a_nan != b_nan) return a_nan;
  if (!a_nan && a != b) return a > b;
  return ia < ib;
}

}  // namespace coco::kernels::detail
