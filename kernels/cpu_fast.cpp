// Fast f32 CPU paths (see kernels/cpu_fast.h). Structure: a parallel driver per kernel splits the
// work into fixed items (rows, blocks) with runtime::cpu::parallel_for; the element loops live in
// free functions marked COCO_CPU_CLONES, which GCC compiles once per instruction set and dispatches
// at load time. (A lambda inside a cloned function is not cloned, hence free functions.) Everything
// the loops call is inline, so it is compiled for the clone's instruction set too.
#include "kernels/cpu_fast.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "engine/runtime/cpu_backend.h"
#include "kernels/attention.h"
#include "kernels/cast_convert.h"
#include "kernels/dropout.h"
#include "kernels/loss_scale.h"
#include "kernels/sampling.h"
#include "kernels/sampling_math.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define COCO_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define COCO_CPU_CLONES
#endif
#define COCO_INLINE inline __attribute__((always_inline))

namespace coco::kernels::cpu_fast {
namespace {

// ------------------------------------------------------------------------------ Philox, 32 at once

constexpr int kPhiloxBatch = 32;

// Philox4x32-10 blocks first .. first + kPhiloxBatch - 1 of `stream` in structure-of-arrays form:
// the same arithmetic as rng::Philox4x32::generate, written so the compiler vectorises the 32 x 32 ->
// 64 bit products across the blocks.
struct PhiloxBatch {
  alignas(64) uint32_t x[kPhiloxBatch];
  alignas(64) uint32_t y[kPhiloxBatch];
  alignas(64) uint32_t z[kPhiloxBatch];
  alignas(64) uint32_t w[kPhiloxBatch];
};

#if defined(__x86_64__) && defined(__GNUC__)
// The ten rounds on 8 blocks per AVX2 register: vpmuludq forms the 64-bit products of the even and,
// after a shift, the odd 32-bit lanes; blends put high and low halves back in lane order. GCC does
// not vectorise the widening multiply of the portable loop below, which is 4x slower.
__attribute__((target("avx2"))) void philox_rounds_avx2(PhiloxBatch& b, rng::Key2 key) {
  using P = rng::Philox4x32;
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(P::kM0)), m1 = _mm256_set1_epi32(static_cast<int>(P::kM1));
  for (int half = 0; half < kPhiloxBatch; half += 8) {
    __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.x + half));
    __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.y + half));
    __m256i z = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.z + half));
    __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.w + half));
    rng::Key2 k = key;
    for (int r = 0; r < P::kRounds; ++r) {
      if (r > 0) {
        k.k0 += P::kW0;
        k.k1 += P::kW1;
      }
      const __m256i p0_even = _mm256_mul_epu32(x, m0), p0_odd = _mm256_mul_epu32(_mm256_srli_epi64(x, 32), m0);
      const __m256i p1_even = _mm256_mul_epu32(z, m1), p1_odd = _mm256_mul_epu32(_mm256_srli_epi64(z, 32), m1);
      const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(p0_even, 32), p0_odd, 0xaa);
      const __m256i lo0 = _mm256_blend_epi32(p0_even, _mm256_slli_epi64(p0_odd, 32), 0xaa);
      const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(p1_even, 32), p1_odd, 0xaa);
      const __m256i lo1 = _mm256_blend_epi32(p1_even, _mm256_slli_epi64(p1_odd, 32), 0xaa);
      const __m256i k0 = _mm256_set1_epi32(static_cast<int>(k.k0)), k1 = _mm256_set1_epi32(static_cast<int>(k.k1));
      x = _mm256_xor_si256(_mm256_xor_si256(hi1, y), k0);
      y = lo1;
      z = _mm256_xor_si256(_mm256_xor_si256(hi0, w), k1);
      w = lo0;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(b.x + half), x);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(b.y + half), y);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(b.z + half), z);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(b.w + half), w);
  }
}

// The zero-masking forms of the AVX-512 intrinsics: the plain ones pass GCC 12's
// _mm512_undefined_epi32() through, which -Wuninitialized reports.
#define COCO_AVX512 __attribute__((target("avx512f"), always_inline)) inline
COCO_AVX512 __m512i mul_epu32_512(__m512i a, __m512i b) { return _mm512_maskz_mul_epu32(0xff, a, b); }
COCO_AVX512 __m512i mullo_epi32_512(__m512i a, __m512i b) { return _mm512_maskz_mullo_epi32(0xffff, a, b); }
COCO_AVX512 __m512i srli32_epi64_512(__m512i a) { return _mm512_maskz_srli_epi64(0xff, a, 32); }
COCO_AVX512 __m512i set1_epi32_512(uint32_t v) { return _mm512_maskz_set1_epi32(0xffff, static_cast<int>(v)); }

// One Philox round on 16 blocks per AVX-512 register: as the AVX2 round, with the low product
// from vpmulld (no shift and blend) and the high halves merged under a lane mask.
__attribute__((target("avx512f"))) inline void philox_round_avx512(__m512i& x, __m512i& y, __m512i& z, __m512i& w,
                                                                   __m512i m0, __m512i m1, __m512i k0, __m512i k1) {
  const __m512i p0_even = mul_epu32_512(x, m0), p0_odd = mul_epu32_512(srli32_epi64_512(x), m0);
  const __m512i p1_even = mul_epu32_512(z, m1), p1_odd = mul_epu32_512(srli32_epi64_512(z), m1);
  const __m512i hi0 = _mm512_mask_blend_epi32(0xaaaa, srli32_epi64_512(p0_even), p0_odd);
  const __m512i hi1 = _mm512_mask_blend_epi32(0xaaaa, srli32_epi64_512(p1_even), p1_odd);
  const __m512i lo0 = mullo_epi32_512(x, m0), lo1 = mullo_epi32_512(z, m1);
  x = _mm512_xor_si512(_mm512_xor_si512(hi1, y), k0);
  y = lo1;
  z = _mm512_xor_si512(_mm512_xor_si512(hi0, w), k1);
  w = lo0;
}

// The ten rounds on 32 blocks as two independent AVX-512 registers, interleaved so that one
// register's multiplies run while the other waits for its results.
__attribute__((target("avx512f"))) void philox_rounds_avx512(PhiloxBatch& b, rng::Key2 key) {
  static_assert(kPhiloxBatch == 32, "two registers of 16 blocks");
  using P = rng::Philox4x32;
  const __m512i m0 = set1_epi32_512(P::kM0), m1 = set1_epi32_512(P::kM1);
  __m512i xa = _mm512_load_si512(b.x), ya = _mm512_load_si512(b.y), za = _mm512_load_si512(b.z),
          wa = _mm512_load_si512(b.w);
  __m512i xb = _mm512_load_si512(b.x + 16), yb = _mm512_load_si512(b.y + 16), zb = _mm512_load_si512(b.z + 16),
          wb = _mm512_load_si512(b.w + 16);
  rng::Key2 k = key;
  for (int r = 0; r < P::kRounds; ++r) {
    if (r > 0) {
      k.k0 += P::kW0;
      k.k1 += P::kW1;
    }
    const __m512i k0 = set1_epi32_512(k.k0), k1 = set1_epi32_512(k.k1);
    philox_round_avx512(xa, ya, za, wa, m0, m1, k0, k1);
    philox_round_avx512(xb, yb, zb, wb, m0, m1, k0, k1);
  }
  _mm512_store_si512(b.x, xa);
  _mm512_store_si512(b.y, ya);
  _mm512_store_si512(b.z, za);
  _mm512_store_si512(b.w, wa);
  _mm512_store_si512(b.x + 16, xb);
  _mm512_store_si512(b.y + 16, yb);
  _mm512_store_si512(b.z + 16, zb);
  _mm512_store_si512(b.w + 16, wb);
}

const bool kHaveAvx512 = __builtin_cpu_supports("avx512f");
const bool kHaveAvx2 = __builtin_cpu_supports("avx2");
#endif

COCO_INLINE void philox_batch(const rng::Stream& stream, uint64_t first, PhiloxBatch& b) {
  const rng::Word4 c0 = stream.counter(first);
  for (int i = 0; i < kPhiloxBatch; ++i) {
    const rng::Word4 c = stream.counter(first + static_cast<uint64_t>(i));
    b.x[i] = c.x;
    b.y[i] = c.y;
    b.z[i] = c0.z;
    b.w[i] = c0.w;
  }
#if defined(__x86_64__) && defined(__GNUC__)
  if (kHaveAvx512) {
    philox_rounds_avx512(b, stream.key());
    return;
  }
  if (kHaveAvx2) {
    philox_rounds_avx2(b, stream.key());
    return;
  }
#endif
  rng::Key2 k = stream.key();
  using P = rng::Philox4x32;
  for (int r = 0; r < P::kRounds; ++r) {
    if (r > 0) {
      k.k0 += P::kW0;
      k.k1 += P::kW1;
    }
    for (int i = 0; i < kPhiloxBatch; ++i) {
      const uint64_t p0 = static_cast<uint64_t>(P::kM0) * b.x[i];
      const uint64_t p1 = static_cast<uint64_t>(P::kM1) * b.z[i];
      const uint32_t nx = static_cast<uint32_t>(p1 >> 32) ^ b.y[i] ^ k.k0;
      const uint32_t nz = static_cast<uint32_t>(p0 >> 32) ^ b.w[i] ^ k.k1;
      b.y[i] = static_cast<uint32_t>(p1);
      b.w[i] = static_cast<uint32_t>(p0);
      b.x[i] = nx;
      b.z[i] = nz;
    }
  }
}

// rng::Stream::uniform of lane 0.
COCO_INLINE float uniform_of(uint32_t word) { return static_cast<float>(word >> 8) * 0x1.0p-24f; }

COCO_CPU_CLONES void dropout_range(float* out, const float* x, int64_t lo, int64_t hi, float threshold,
                                   float keep_scale, const rng::Stream& rng, uint64_t index_offset) {
  PhiloxBatch b;
  for (int64_t start = lo; start < hi; start += kPhiloxBatch) {
    philox_batch(rng, index_offset + static_cast<uint64_t>(start), b);
    const int64_t count = std::min<int64_t>(kPhiloxBatch, hi - start);
    for (int64_t i = 0; i < count; ++i)
      out[start + i] = x[start + i] * (uniform_of(b.x[i]) < threshold ? 0.0f : keep_scale);
  }
}

COCO_CPU_CLONES void mask_range(uint8_t* mask, int64_t lo, int64_t hi, float threshold, bool keep_value,
                                const rng::Stream& rng, uint64_t index_offset) {
  PhiloxBatch b;
  for (int64_t start = lo; start < hi; start += kPhiloxBatch) {
    philox_batch(rng, index_offset + static_cast<uint64_t>(start), b);
    const int64_t count = std::min<int64_t>(kPhiloxBatch, hi - start);
    // dropout_mask: 1 = kept (u >= threshold); keep_value selects that polarity for both users.
    for (int64_t i = 0; i < count; ++i)
      mask[start + i] = (uniform_of(b.x[i]) >= threshold) == keep_value ? uint8_t{1} : uint8_t{0};
  }
}

// ------------------------------------------------------------------------------ Gumbel sampling

// One row: scores = logits / temperature + Gumbel noise of the row's Philox blocks (all four lanes),
// then the argmax in index order, exactly as cpu::gumbel_sample.
COCO_CPU_CLONES int32_t gumbel_row(const float* x, int64_t V, float temperature, const rng::Stream& stream,
                                   uint64_t first_block, float* scores) {
  const int64_t groups = (V + 3) / 4;
  PhiloxBatch b;
  for (int64_t g0 = 0; g0 < groups; g0 += kPhiloxBatch) {
    philox_batch(stream, first_block + static_cast<uint64_t>(g0), b);
    const int64_t count = std::min<int64_t>(kPhiloxBatch, groups - g0);
    if (4 * (g0 + count) <= V) {
      float* s = scores + 4 * g0;
      const float* xs = x + 4 * g0;
      for (int64_t i = 0; i < count; ++i) {
        s[4 * i + 0] = xs[4 * i + 0] / temperature + detail::gumbel_noise(b.x[i]);
        s[4 * i + 1] = xs[4 * i + 1] / temperature + detail::gumbel_noise(b.y[i]);
        s[4 * i + 2] = xs[4 * i + 2] / temperature + detail::gumbel_noise(b.z[i]);
        s[4 * i + 3] = xs[4 * i + 3] / temperature + detail::gumbel_noise(b.w[i]);
      }
    } else {
      for (int64_t i = 0; i < count; ++i) {
        const uint32_t words[4] = {b.x[i], b.y[i], b.z[i], b.w[i]};
        for (int lane = 0; lane < 4 && 4 * (g0 + i) + lane < V; ++lane) {
          const int64_t v = 4 * (g0 + i) + lane;
          scores[v] = x[v] / temperature + detail::gumbel_noise(words[lane]);
        }
      }
    }
  }
  int64_t best = 0;
  for (int64_t v = 1; v < V; ++v)
    if (detail::argmax_better(scores[v], v, scores[best], best)) best = v;
  return static_cast<int32_t>(best);
}

// ------------------------------------------------------------------------------ GELU

COCO_INLINE float erf_inline(float x) {
  // Rational approximation x P(x^2) / Q(x^2) on the clamped argument (the coefficients Eigen and
  // TensorFlow use for f32 erf); erf(+-3.8325) rounds to +-1 in f32.
  constexpr float kClamp = 3.832506856900711f;
  // Selects, not fminf/fmaxf (library calls without -ffinite-math-only); NaN fails both tests and stays.
  float a = x < -kClamp ? -kClamp : x;
  a = a > kClamp ? kClamp : a;
  const float x2 = a * a;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  // The rational form gives 1 - 2^-24 at the clamp; erf is +-1 in f32 there (and gelu(-inf) must be
  // -inf * 0 = NaN, as the reference).
  const float r = a * p / q;
  return x >= kClamp ? 1.0f : (x <= -kClamp ? -1.0f : r);
}

// exp(x) for x <= 0 (NaN propagates), branch-free so loops over it vectorise: x clamped at -87
// (exp(-87) = 1.6e-38, still normal), Cody-Waite reduction x = k ln2 + r and a degree-7 polynomial,
// as detail::det_exp_nonpositive; relative error a few ulp.
COCO_INLINE float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  constexpr float kRoundMagic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const float k = (x * 1.44269504088896341f + kRoundMagic) - kRoundMagic;
  float r = x - k * 0.693145751953125f;
  r = r - k * 1.42860682030941723e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // k is in [-126, 0] (NaN only for a NaN x, whose p is NaN already): a defined conversion and shift.
  const int32_t biased = (static_cast<int32_t>(k == k ? k : 0.0f) + 127) << 23;
  float scale;
  std::memcpy(&scale, &biased, sizeof scale);
  return p * scale;
}

// tanh(u) = sign(u) (1 - e) / (1 + e), e = exp(-2 |u|) <= 1.
COCO_INLINE float tanh_inline(float u) {
  const float e = exp_nonpositive(-2.0f * std::fabs(u));
  const float t = (1.0f - e) / (1.0f + e);
  return u != u ? u : std::copysign(t, u);
}

constexpr float kInvSqrt2 = 0.70710678118654752440f, kInvSqrt2Pi = 0.39894228040143267794f;
constexpr float kSqrt2OverPi = 0.79788456080286535588f, kCubic = 0.044715f;

COCO_INLINE float gelu_erf(float x) { return 0.5f * x * (1.0f + erf_inline(x * kInvSqrt2)); }
COCO_INLINE float gelu_erf_derivative(float x) {
  // exp(-x^2 / 2): the argument is <= 0 (NaN gives NaN through erf's term).
  return 0.5f * (1.0f + erf_inline(x * kInvSqrt2)) + x * kInvSqrt2Pi * exp_nonpositive(-0.5f * x * x);
}
COCO_INLINE float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + tanh_inline(kSqrt2OverPi * (x + kCubic * x * x * x)));
}
COCO_INLINE float gelu_tanh_derivative(float x) {
  const float t = tanh_inline(kSqrt2OverPi * (x + kCubic * x * x * x));
  const float sech2 = 1.0f - t * t;
  const float slope = sech2 == 0.0f ? 0.0f : 0.5f * x * sech2 * kSqrt2OverPi * (1.0f + 3.0f * kCubic * x * x);
  return 0.5f * (1.0f + t) + slope;
}

COCO_CPU_CLONES void epilogue_rows(float* __restrict y, const float* __restrict bias, Activation act, int64_t lo,
                                   int64_t hi, int64_t out, float* __restrict pre_act) {
  for (int64_t r = lo; r < hi; ++r) {
    float* row = y + r * out;
    if (bias)
      for (int64_t c = 0; c < out; ++c) row[c] += bias[c];
    if (act == Activation::none) continue;
    if (pre_act) std::memcpy(pre_act + r * out, row, static_cast<size_t>(out) * sizeof(float));
    if (act == Activation::gelu_erf)
      for (int64_t c = 0; c < out; ++c) row[c] = gelu_erf(row[c]);
    else
      for (int64_t c = 0; c < out; ++c) row[c] = gelu_tanh(row[c]);
  }
}

COCO_CPU_CLONES void gelu_range(float* __restrict out, const float* __restrict x, int64_t lo, int64_t hi,
                                bool tanh_form) {
  if (tanh_form)
    for (int64_t i = lo; i < hi; ++i) out[i] = gelu_tanh(x[i]);
  else
    for (int64_t i = lo; i < hi; ++i) out[i] = gelu_erf(x[i]);
}

COCO_CPU_CLONES void gelu_backward_range(float* __restrict dx, const float* __restrict dy, const float* __restrict x,
                                         int64_t lo, int64_t hi, bool tanh_form) {
  if (tanh_form)
    for (int64_t i = lo; i < hi; ++i) dx[i] = dy[i] * gelu_tanh_derivative(x[i]);
  else
    for (int64_t i = lo; i < hi; ++i) dx[i] = dy[i] * gelu_erf_derivative(x[i]);
}

// ------------------------------------------------------------------------------ cross-entropy

// exp(x) for x <= 0, 0 below -87 and for -Inf (the reference's exp underflows to 0 there too).
COCO_INLINE float exp_nonpositive_or_zero(float x) {
  const float e = exp_nonpositive(x);
  return x < -87.0f ? 0.0f : e;
}

// Maximum of a row as integer keys in float order (GCC keeps a float max reduction scalar: NaN and
// signed-zero rules); the row has no NaN. Negative floats get their magnitude bits flipped.
COCO_INLINE float row_max_no_nan(const float* x, int64_t n) {
  int32_t best = std::numeric_limits<int32_t>::min();
  for (int64_t j = 0; j < n; ++j) {
    int32_t bits;
    std::memcpy(&bits, x + j, sizeof bits);
    const int32_t key = bits >= 0 ? bits : bits ^ 0x7fffffff;
    best = key > best ? key : best;
  }
  const int32_t bits = best >= 0 ? best : best ^ 0x7fffffff;
  float max;
  std::memcpy(&max, &bits, sizeof max);
  return max;
}

struct CeRowStats {
  bool special;  // a NaN or an infinity decides the row: the reference's double path
  float max;
  double log_sum;
};

COCO_CPU_CLONES CeRowStats ce_row_stats(const float* __restrict x, int64_t vocab) {
  uint32_t nonfinite = 0;
  for (int64_t j = 0; j < vocab; ++j) {
    uint32_t bits;
    std::memcpy(&bits, x + j, sizeof bits);
    nonfinite |= (bits & 0x7f800000u) == 0x7f800000u;
  }
  if (nonfinite) return {true, 0.0f, 0.0};
  const float max = row_max_no_nan(x, vocab);
  constexpr int kLanes = 16;
  float lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= vocab; j += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += exp_nonpositive_or_zero(x[j + l] - max);
  for (int l = 0; j < vocab; ++j, ++l) lanes[l] += exp_nonpositive_or_zero(x[j] - max);
  double sum = 0.0;
  for (float lane : lanes) sum += static_cast<double>(lane);
  return {false, max, std::log(sum)};
}

// dx[j] = scale * (exp(x[j] - lse) - [j == target]) for a row with finite values.
COCO_CPU_CLONES void ce_row_gradient(const float* x, int64_t vocab, int32_t target, float lse, float scale, float* dx) {
  const bool has_target = target >= 0 && target < vocab;
  const float x_target = has_target ? x[target] : 0.0f;  // read first: dx may alias x
  for (int64_t j = 0; j < vocab; ++j) dx[j] = scale * exp_nonpositive_or_zero(x[j] - lse);
  if (has_target) dx[target] = scale * (exp_nonpositive_or_zero(x_target - lse) - 1.0f);
}

// ------------------------------------------------------------------------------ layer norm

constexpr int kLnLanes = 16;
constexpr int64_t kLnRowBlock = 32;  // rows per dgamma / dbeta partial

// Sum of a[0, C) (optionally of a * b) in kLnLanes f32 lanes, the lanes added in order in double.
COCO_INLINE double ln_lane_sum(const float* __restrict a, const float* __restrict b, int64_t C) {
  float lanes[kLnLanes] = {};
  int64_t c = 0;
  for (; c + kLnLanes <= C; c += kLnLanes)
    for (int l = 0; l < kLnLanes; ++l) lanes[l] += b ? a[c + l] * b[c + l] : a[c + l];
  for (int l = 0; c < C; ++c, ++l) lanes[l] += b ? a[c] * b[c] : a[c];
  double total = 0.0;
  for (float lane : lanes) total += static_cast<double>(lane);
  return total;
}

// One row: in = x (+ residual, written to sum); out = (in - mean) * rstd * gamma + beta.
COCO_CPU_CLONES void ln_forward_row(float* __restrict out, float* __restrict sum, float* mean_out, float* rstd_out,
                                    const float* __restrict x, const float* __restrict residual,
                                    const float* __restrict gamma, const float* __restrict beta, int64_t C,
                                    double eps) {
  const float* in = x;
  if (residual) {
    for (int64_t c = 0; c < C; ++c) sum[c] = x[c] + residual[c];
    in = sum;
  }
  const float mean = static_cast<float>(ln_lane_sum(in, nullptr, C) / static_cast<double>(C));
  float lanes[kLnLanes] = {};
  int64_t c = 0;
  for (; c + kLnLanes <= C; c += kLnLanes)
    for (int l = 0; l < kLnLanes; ++l) {
      const float d = in[c + l] - mean;
      lanes[l] += d * d;
    }
  for (int l = 0; c < C; ++c, ++l) {
    const float d = in[c] - mean;
    lanes[l] += d * d;
  }
  double squares = 0.0;
  for (float lane : lanes) squares += static_cast<double>(lane);
  const float rstd = static_cast<float>(1.0 / std::sqrt(squares / static_cast<double>(C) + eps));
  for (int64_t k = 0; k < C; ++k) out[k] = (in[k] - mean) * rstd * gamma[k] + beta[k];
  if (mean_out) *mean_out = mean;
  if (rstd_out) *rstd_out = rstd;
}

// Rows [lo, hi): dx (if wanted) and, if wanted, the f64 column sums of dout * xhat and dout over
// these rows (rows in order) into partial_g / partial_b. xhat_row: C floats of scratch.
COCO_CPU_CLONES void ln_backward_rows(float* __restrict dx, double* __restrict partial_g, double* __restrict partial_b,
                                      const float* __restrict dout, const float* __restrict dx_extra,
                                      const float* __restrict x, const float* __restrict gamma,
                                      const float* __restrict mean, const float* __restrict rstd, int64_t lo,
                                      int64_t hi, int64_t C, float* __restrict xhat_row, float* __restrict g_row) {
  for (int64_t r = lo; r < hi; ++r) {
    const float* dout_r = dout + r * C;
    const float* x_r = x + r * C;
    const float m = mean[r], s = rstd[r];
    for (int64_t c = 0; c < C; ++c) xhat_row[c] = (x_r[c] - m) * s;
    if (partial_g)
      for (int64_t c = 0; c < C; ++c) partial_g[c] += static_cast<double>(dout_r[c] * xhat_row[c]);
    if (partial_b)
      for (int64_t c = 0; c < C; ++c) partial_b[c] += static_cast<double>(dout_r[c]);
    if (!dx) continue;
    for (int64_t c = 0; c < C; ++c) g_row[c] = dout_r[c] * gamma[c];
    const float mean_g = static_cast<float>(ln_lane_sum(g_row, nullptr, C) / static_cast<double>(C));
    const float mean_g_xhat = static_cast<float>(ln_lane_sum(g_row, xhat_row, C) / static_cast<double>(C));
    float* dx_r = dx + r * C;
    if (dx_extra) {
      const float* extra_r = dx_extra + r * C;
      for (int64_t c = 0; c < C; ++c) dx_r[c] = (g_row[c] - mean_g - xhat_row[c] * mean_g_xhat) * s + extra_r[c];
    } else {
      for (int64_t c = 0; c < C; ++c) dx_r[c] = (g_row[c] - mean_g - xhat_row[c] * mean_g_xhat) * s;
    }
  }
}

// ------------------------------------------------------------------------------ reductions

template <class T>
COCO_INLINE double widen(T v) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(v);
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(v);
  else
    return static_cast<double>(v);
}

// Sum of squares of a[0, n) in 8 f64 lanes (element i to lane i % 8), lanes added in order.
template <class T>
COCO_INLINE double lane_sum_of_squares(const T* a, int64_t n) {
  double lanes[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      const double v = widen(a[i + l]);
      lanes[l] += v * v;
    }
  for (int l = 0; i < n; ++i, ++l) {
    const double v = widen(a[i]);
    lanes[l] += v * v;
  }
  double total = 0;
  for (double lane : lanes) total += lane;
  return total;
}

COCO_CPU_CLONES double block_sum_f32(const float* a, int64_t n) { return lane_sum_of_squares(a, n); }
COCO_CPU_CLONES double block_sum_f64(const double* a, int64_t n) { return lane_sum_of_squares(a, n); }
COCO_CPU_CLONES double block_sum_bf16(const __nv_bfloat16* a, int64_t n) { return lane_sum_of_squares(a, n); }
COCO_CPU_CLONES double block_sum_f16(const __half* a, int64_t n) { return lane_sum_of_squares(a, n); }

// Whether a[0, n) holds a NaN or Inf: every exponent field all ones, tested on the bits.
COCO_CPU_CLONES bool block_nonfinite_f32(const float* a, int64_t n) {
  uint32_t found = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, a + i, sizeof bits);
    found |= (bits & 0x7f800000u) == 0x7f800000u;
  }
  return found != 0;
}
COCO_CPU_CLONES bool block_nonfinite_f64(const double* a, int64_t n) {
  uint64_t found = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t bits;
    std::memcpy(&bits, a + i, sizeof bits);
    found |= (bits & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
  }
  return found != 0;
}
COCO_CPU_CLONES bool block_nonfinite_16(const uint16_t* a, int64_t n, uint16_t exponent_mask) {
  uint32_t found = 0;
  for (int64_t i = 0; i < n; ++i) found |= (a[i] & exponent_mask) == exponent_mask;
  return found != 0;
}

void check_descs(const char* op, const std::vector<NormTensorDesc>& descs) {
  for (size_t t = 0; t < descs.size(); ++t) {
    const NormTensorDesc& d = descs[t];
    if (d.numel < 0)
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) + ": negative numel");
    if (d.dtype != DType::f32 && d.dtype != DType::bf16 && d.dtype != DType::f16 && d.dtype != DType::f64)
      throw std::invalid_argument(std::string(op) + ": tensor " + std::to_string(t) + ": dtype " + dtype_name(d.dtype) +
                                  ", expected f32, bf16, f16 or f64");
  }
}

// The blocks of all tensors back to back: (tensor, first element, count).
struct Block {
  size_t tensor;
  int64_t begin, count;
};

std::vector<Block> plan_blocks(const std::vector<NormTensorDesc>& descs) {
  std::vector<Block> blocks;
  for (size_t t = 0; t < descs.size(); ++t)
    for (int64_t b = 0; b < descs[t].numel; b += kSumBlock)
      blocks.push_back({t, b, std::min(kSumBlock, descs[t].numel - b)});
  return blocks;
}

}  // namespace

float erf(float x) { return erf_inline(x); }

void dropout_apply(float* out, const float* x, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset) {
  const float threshold = detail::dropout_threshold("kernels::cpu_fast::dropout_apply", p, n);
  const float keep_scale = static_cast<float>(1.0 / (1.0 - p));
  runtime::cpu::parallel_for(n, 16384, [&](int64_t lo, int64_t hi) {
    dropout_range(out, x, lo, hi, threshold, keep_scale, rng, index_offset);
  });
}

void dropout_mask(uint8_t* mask, int64_t n, double p, const rng::Stream& rng, uint64_t index_offset) {
  const float threshold = detail::dropout_threshold("kernels::cpu_fast::dropout_mask", p, n);
  runtime::cpu::parallel_for(
      n, 16384, [&](int64_t lo, int64_t hi) { mask_range(mask, lo, hi, threshold, true, rng, index_offset); });
}

void attention_keep_mask(const rng::Stream& stream, float p, uint64_t first, int64_t count, uint8_t* keep) {
  // keep[e] = uniform(first + e) >= p: dropout_mask's polarity, offset by `first`.
  mask_range(keep, 0, count, p, true, stream, first);
}

void gumbel_sample(const float* logits, int64_t N, int64_t V, float temperature, const rng::Stream& stream,
                   int32_t* samples, const int32_t* row_keys) {
  if (N < 0 || V < 1 || V > 0x7fffffffLL)
    throw std::invalid_argument("kernels::cpu_fast::gumbel_sample: logits (" + std::to_string(N) + ", " +
                                std::to_string(V) + "), expected N >= 0 and 1 <= V < 2^31");
  if (!(temperature > 0.0f) || !std::isfinite(temperature))
    throw std::invalid_argument("kernels::cpu_fast::gumbel_sample: temperature must be finite and > 0, got " +
                                std::to_string(temperature));
  const int64_t groups = (V + 3) / 4;
  runtime::cpu::parallel_for(N, 1, [&](int64_t lo, int64_t hi) {
    std::vector<float> scores(static_cast<size_t>(V));
    for (int64_t n = lo; n < hi; ++n)
      samples[n] = gumbel_row(logits + n * V, V, temperature, stream,
                              sample_key(row_keys, n) * static_cast<uint64_t>(groups), scores.data());
  });
}

void linear_epilogue(float* y, const float* bias, Activation act, int64_t rows, int64_t out, float* pre_act) {
  if (!bias && act == Activation::none) return;
  const int64_t rows_per_range = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, out));
  runtime::cpu::parallel_for(rows, rows_per_range,
                             [&](int64_t lo, int64_t hi) { epilogue_rows(y, bias, act, lo, hi, out, pre_act); });
}

void linear_forward(const float* x, const float* W, const float* bias, Activation act, int64_t rows, int64_t in,
                    int64_t out, float* y, float* pre_act) {
  const int64_t ld = std::max<int64_t>(1, in);
  // y (rows, out) = x (rows, in) . W^T, W stored (out, in); gemm checks the shapes.
  cpu::gemm<float, float>(false, true, rows, out, in, 1.0, x, ld, W, ld, 0.0, y, std::max<int64_t>(1, out));
  linear_epilogue(y, bias, act, rows, out, pre_act);
}

void activation_backward(Activation act, const float* dy, const float* pre, float* dpre, int64_t n) {
  if (n < 0)
    throw std::invalid_argument("kernels::cpu_fast::activation_backward: negative element count " + std::to_string(n));
  if (act == Activation::none) {
    if (n > 0) std::memcpy(dpre, dy, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  const bool tanh_form = act == Activation::gelu_tanh;
  runtime::cpu::parallel_for(n, 16384,
                             [&](int64_t lo, int64_t hi) { gelu_backward_range(dpre, dy, pre, lo, hi, tanh_form); });
}

void gelu_forward(float* out, const float* x, int64_t n, GeluApproximation approximation) {
  const bool tanh_form = approximation == GeluApproximation::tanh;
  runtime::cpu::parallel_for(n, 16384, [&](int64_t lo, int64_t hi) { gelu_range(out, x, lo, hi, tanh_form); });
}

void gelu_backward(float* dx, const float* dout, const float* x, int64_t n, GeluApproximation approximation) {
  const bool tanh_form = approximation == GeluApproximation::tanh;
  runtime::cpu::parallel_for(n, 16384,
                             [&](int64_t lo, int64_t hi) { gelu_backward_range(dx, dout, x, lo, hi, tanh_form); });
}

namespace {

bool ce_contributes(int32_t target, int32_t ignore_index, int64_t vocab) {
  return target != ignore_index && target >= 0 && target < vocab;
}

// The reference's row statistics in double (kernels/cross_entropy.cpp), for rows holding a NaN or an
// infinity: NaN or +Inf anywhere gives a NaN log-sum-exp, a row of -Inf gives -Inf.
CeRowStats ce_row_stats_reference(const float* x, int64_t vocab, float& lse) {
  constexpr float inf = std::numeric_limits<float>::infinity();
  float max = -inf;
  bool has_nan = false;
  for (int64_t j = 0; j < vocab; ++j) {
    if (std::isnan(x[j]))
      has_nan = true;
    else if (x[j] > max)
      max = x[j];
  }
  if (has_nan || max == inf) {
    lse = std::numeric_limits<float>::quiet_NaN();
    return {true, max, static_cast<double>(lse)};
  }
  if (max == -inf) {
    lse = max;
    return {true, max, -static_cast<double>(inf)};
  }
  double sum = 0.0;
  for (int64_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(x[j]) - static_cast<double>(max));
  const double log_sum = std::log(sum);
  lse = static_cast<float>(static_cast<double>(max) + log_sum);
  return {true, max, log_sum};
}

// The reference's argmax order: NaN first, then larger values, ties to the lowest index.
int64_t ce_row_argmax(const float* x, int64_t vocab) {
  int64_t best = 0;
  for (int64_t j = 1; j < vocab; ++j) {
    if (std::isnan(x[best])) break;
    if (std::isnan(x[j]) || x[j] > x[best]) best = j;
  }
  return best;
}

void ce_check(const char* op, int64_t rows, int64_t vocab) {
  if (rows < 0 || vocab < 1)
    throw std::invalid_argument(std::string(op) + ": expected rows >= 0 and vocab >= 1, got rows " +
                                std::to_string(rows) + ", vocab " + std::to_string(vocab));
}

// One row's gradient: the fast loop for finite rows, the reference's double exp otherwise.
void ce_gradient(const float* x, int64_t vocab, int32_t target, float lse, float scale, float* dx) {
  if (std::isfinite(lse)) {
    ce_row_gradient(x, vocab, target, lse, scale, dx);
    return;
  }
  for (int64_t j = 0; j < vocab; ++j) {
    const float p = static_cast<float>(std::exp(static_cast<double>(x[j]) - static_cast<double>(lse)));
    dx[j] = scale * (p - (j == target ? 1.0f : 0.0f));
  }
}

}  // namespace

void cross_entropy_forward(const float* logits, const int32_t* targets, const float* row_weights, int64_t rows,
                           int64_t vocab, int32_t ignore_index, LossReduction reduction, float* loss, float* row_loss,
                           float* row_lse, int32_t* counts, float* dlogits, float dlogits_scale) {
  ce_check("kernels::cpu_fast::cross_entropy_forward", rows, vocab);
  int32_t correct = 0, contributing = 0, invalid = 0;
  for (int64_t i = 0; i < rows; ++i) {
    if (ce_contributes(targets[i], ignore_index, vocab))
      ++contributing;
    else if (targets[i] != ignore_index)
      ++invalid;
  }
  const float denom = reduction == LossReduction::mean ? static_cast<float>(contributing > 0 ? contributing : 1) : 1.0f;
  std::vector<uint8_t> row_correct(static_cast<size_t>(rows), 0);
  runtime::cpu::parallel_for(rows, std::max<int64_t>(1, 16384 / vocab), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float* x = logits + i * vocab;
      const int32_t t = targets[i];
      CeRowStats stats = ce_row_stats(x, vocab);
      float lse;
      if (stats.special)
        stats = ce_row_stats_reference(x, vocab, lse);
      else
        lse = static_cast<float>(static_cast<double>(stats.max) + stats.log_sum);
      row_lse[i] = lse;
      const bool counted = ce_contributes(t, ignore_index, vocab);
      const float weight = row_weights ? row_weights[i] : 1.0f;
      if (counted) {
        // (max - x_t) + log(sum): exact cancellation when x_t is the maximum (as the reference).
        row_loss[i] = std::isnan(lse) ? lse : static_cast<float>(static_cast<double>(stats.max - x[t]) + stats.log_sum);
        row_correct[static_cast<size_t>(i)] = ce_row_argmax(x, vocab) == t;
      } else {
        row_loss[i] = 0.0f;
      }
      if (dlogits) {
        float* dx = dlogits + i * vocab;
        if (counted)
          ce_gradient(x, vocab, t, lse, dlogits_scale * weight / denom, dx);
        else
          std::fill(dx, dx + vocab, 0.0f);
      }
    }
  });
  double total = 0.0;
  for (int64_t i = 0; i < rows; ++i) {
    if (!ce_contributes(targets[i], ignore_index, vocab)) continue;
    const float weight = row_weights ? row_weights[i] : 1.0f;
    total += static_cast<double>(weight) * static_cast<double>(row_loss[i]);
    correct += row_correct[static_cast<size_t>(i)];
  }
  *loss = contributing > 0 ? static_cast<float>(total / static_cast<double>(denom)) : 0.0f;
  counts[kCountCorrect] = correct;
  counts[kCountRows] = contributing;
  counts[kCountInvalid] = invalid;
}

void cross_entropy_backward(const float* logits, const int32_t* targets, const float* row_weights, const float* row_lse,
                            const int32_t* counts, int64_t rows, int64_t vocab, int32_t ignore_index,
                            LossReduction reduction, const float* dloss, float* dlogits) {
  ce_check("kernels::cpu_fast::cross_entropy_backward", rows, vocab);
  const int32_t contributing = counts[kCountRows];
  const float denom = reduction == LossReduction::mean ? static_cast<float>(contributing > 0 ? contributing : 1) : 1.0f;
  runtime::cpu::parallel_for(rows, std::max<int64_t>(1, 16384 / vocab), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const float* x = logits + i * vocab;
      float* dx = dlogits + i * vocab;
      const int32_t t = targets[i];
      if (!ce_contributes(t, ignore_index, vocab)) {
        std::fill(dx, dx + vocab, 0.0f);
        continue;
      }
      const float weight = row_weights ? row_weights[i] : 1.0f;
      ce_gradient(x, vocab, t, row_lse[i], *dloss * weight / denom, dx);
    }
  });
}

void layernorm_forward(float* out, float* sum, float* mean, float* rstd, const float* x, const float* residual,
                       const float* gamma, const float* beta, int64_t rows, int64_t C, double eps) {
  if (rows <= 0 || C <= 0) return;
  runtime::cpu::parallel_for(rows, std::max<int64_t>(1, 8192 / C), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      ln_forward_row(out + r * C, residual ? sum + r * C : nullptr, mean ? mean + r : nullptr,
                     rstd ? rstd + r : nullptr, x + r * C, residual ? residual + r * C : nullptr, gamma, beta, C, eps);
  });
}

void layernorm_backward(float* dx, float* dgamma, float* dbeta, const float* dout, const float* dx_extra,
                        const float* x, const float* gamma, const float* mean, const float* rstd, int64_t rows,
                        int64_t C) {
  if (rows <= 0 || C <= 0) return;
  // Blocks of kLnRowBlock rows: each its own dgamma / dbeta partial, so the column sums do not depend
  // on which thread runs which block.
  const int64_t blocks = (rows + kLnRowBlock - 1) / kLnRowBlock;
  const size_t width = static_cast<size_t>(C);
  std::vector<double> partial_g(dgamma ? static_cast<size_t>(blocks) * width : 0, 0.0);
  std::vector<double> partial_b(dbeta ? static_cast<size_t>(blocks) * width : 0, 0.0);
  runtime::cpu::parallel_for(blocks, std::max<int64_t>(1, 4096 / (kLnRowBlock * C)), [&](int64_t lo, int64_t hi) {
    std::vector<float> scratch(2 * width);
    for (int64_t b = lo; b < hi; ++b)
      ln_backward_rows(dx, dgamma ? partial_g.data() + b * C : nullptr, dbeta ? partial_b.data() + b * C : nullptr,
                       dout, dx_extra, x, gamma, mean, rstd, b * kLnRowBlock, std::min(rows, (b + 1) * kLnRowBlock), C,
                       scratch.data(), scratch.data() + width);
  });
  const auto add_partials = [&](float* target, const std::vector<double>& partial) {
    if (!target) return;
    runtime::cpu::parallel_for(C, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t c = lo; c < hi; ++c) {
        double total = 0.0;
        for (int64_t b = 0; b < blocks; ++b) total += partial[static_cast<size_t>(b * C + c)];
        target[c] = static_cast<float>(static_cast<double>(target[c]) + total);
      }
    });
  };
  add_partials(dgamma, partial_g);
  add_partials(dbeta, partial_b);
}

double sum_of_squares(const std::vector<NormTensorDesc>& descs) {
  check_descs("kernels::cpu_fast::sum_of_squares", descs);
  const std::vector<Block> blocks = plan_blocks(descs);
  std::vector<double> partial(blocks.size(), 0.0);
  runtime::cpu::parallel_for(static_cast<int64_t>(blocks.size()), 2, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const Block& b = blocks[i];
      const NormTensorDesc& d = descs[b.tensor];
      switch (d.dtype) {
        case DType::f32:
          partial[i] = block_sum_f32(static_cast<const float*>(d.data) + b.begin, b.count);
          break;
        case DType::f64:
          partial[i] = block_sum_f64(static_cast<const double*>(d.data) + b.begin, b.count);
          break;
        case DType::bf16:
          partial[i] = block_sum_bf16(static_cast<const __nv_bfloat16*>(d.data) + b.begin, b.count);
          break;
        default:
          partial[i] = block_sum_f16(static_cast<const __half*>(d.data) + b.begin, b.count);
          break;
      }
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

bool any_nonfinite(const std::vector<NormTensorDesc>& descs) {
  check_descs("kernels::cpu_fast::any_nonfinite", descs);
  const std::vector<Block> blocks = plan_blocks(descs);
  std::vector<uint8_t> found(blocks.size(), 0);
  runtime::cpu::parallel_for(static_cast<int64_t>(blocks.size()), 2, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const Block& b = blocks[i];
      const NormTensorDesc& d = descs[b.tensor];
      switch (d.dtype) {
        case DType::f32:
          found[i] = block_nonfinite_f32(static_cast<const float*>(d.data) + b.begin, b.count);
          break;
        case DType::f64:
          found[i] = block_nonfinite_f64(static_cast<const double*>(d.data) + b.begin, b.count);
          break;
        case DType::bf16:
          found[i] = block_nonfinite_16(static_cast<const uint16_t*>(d.data) + b.begin, b.count, 0x7f80u);
          break;
        default:
          found[i] = block_nonfinite_16(static_cast<const uint16_t*>(d.data) + b.begin, b.count, 0x7c00u);
          break;
      }
    }
  });
  for (uint8_t f : found)
    if (f) return true;
  return false;
}

}  // namespace coco::kernels::cpu_fast
