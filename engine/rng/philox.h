// Philox4x32-10 (Salmon et al., "Parallel Random Numbers: As Easy as 1, 2, 3", SC'11): a counter-based
// RNG. Every draw is a pure function of (key, counter), so any thread on any backend (CPU, CUDA, the
// SIMT emulator) computes the same numbers for the same element without sharing state, and a run can be
// replayed from (seed, step) alone. Header-only; compiles as plain C++, as emulated CUDA and with nvcc.
//
// Stream mapping (part of checkpoint reproducibility -- never change it):
//
//   key     = (k0, k1)     = (seed & 0xffffffff, seed >> 32)
//   counter = (c0, c1, c2, c3)
//     c0 = index & 0xffffffff
//     c1 = (index >> 32) ^ (purpose << 16)      index bits 32..47 in the low 16 bits, purpose above
//     c2 = step & 0xffffffff
//     c3 = step >> 32
//
// For index < 2^48 and purpose < 2^16 the low and high halves of c1 never overlap, so distinct
// (seed, step, purpose, index) tuples give distinct (key, counter) pairs: every step (any uint64), every
// purpose and every element index up to 2.8e14 has its own Philox block. (Indices >= 2^48 still produce
// numbers, but they may repeat another purpose's blocks.)
//
// The purpose is 16 bits: the low 8 bits hold a Purpose value (below), the high 8 bits an instance
// number (e.g. the layer of a dropout site), see `purpose_code`.
//
// Index base (data parallelism): `with_index_base(b)` returns the stream whose index i is index b + i of
// this one. A rank that holds rows [r0, r0 + B) of the global batch draws through a stream based at
// r0 * (elements per row), so every element is keyed by its global row and position: N ranks with B rows
// each see the numbers one process with N B rows sees (the base is 0 unless set, which is the mapping above).
//
// Step source (CUDA graphs): a stream built from a StepKey that points at a counter in memory reads the
// step from there at every draw instead of holding it, so a kernel captured once in a CUDA graph draws
// the numbers of whatever step the counter holds when the graph is replayed. The counter must live
// where the draws happen: device memory for CUDA kernels, host memory for the CPU backend. Both kinds
// of stream give the same numbers for the same step.
//
// One scalar draw per index: u32/uniform/below take lane `lane` (default 0) of block(index); normal and
// uniform_f64 use lanes 0 and 1. Lanes a draw does not use are simply discarded -- a Philox block is
// ten 32x32->64 multiplies, cheaper than coordinating threads to share one.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define COCO_HOST_DEVICE __host__ __device__
#else
#include <cmath>
#define COCO_HOST_DEVICE
#endif

namespace coco::rng {

// Four 32-bit words: a Philox counter or one output block.
struct Word4 {
  uint32_t x, y, z, w;

  COCO_HOST_DEVICE constexpr uint32_t lane(unsigned i) const { return i == 0 ? x : i == 1 ? y : i == 2 ? z : w; }
  COCO_HOST_DEVICE constexpr bool operator==(const Word4& o) const {
    return x == o.x && y == o.y && z == o.z && w == o.w;
  }
};

struct Key2 {
  uint32_t k0, k1;
};

struct Philox4x32 {
  static constexpr uint32_t kM0 = 0xD2511F53u;
  static constexpr uint32_t kM1 = 0xCD9E8D57u;
  static constexpr uint32_t kW0 = 0x9E3779B9u;  // golden ratio
  static constexpr uint32_t kW1 = 0xBB67AE85u;  // sqrt(3) - 1
  static constexpr int kRounds = 10;

  // 32x32 -> 64 product; the compiler emits mul.hi/mul.lo on the GPU and one imul on x86.
  COCO_HOST_DEVICE static constexpr uint32_t mul_hi(uint32_t a, uint32_t b) {
    return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
  }
  COCO_HOST_DEVICE static constexpr uint32_t mul_lo(uint32_t a, uint32_t b) { return a * b; }

  COCO_HOST_DEVICE static constexpr Word4 round(Word4 c, Key2 k) {
    const uint32_t hi0 = mul_hi(kM0, c.x), lo0 = mul_lo(kM0, c.x);
    const uint32_t hi1 = mul_hi(kM1, c.z), lo1 = mul_lo(kM1, c.z);
    return Word4{hi1 ^ c.y ^ k.k0, lo1, hi0 ^ c.w ^ k.k1, lo0};
  }

  // Random123's philox4x32_R(10, counter, key): the key is bumped by the Weyl constants between rounds.
  COCO_HOST_DEVICE static constexpr Word4 generate(Word4 counter, Key2 key) {
    Word4 c = counter;
    Key2 k = key;
#if defined(__CUDACC__)
#pragma unroll
#endif
    for (int r = 0; r < kRounds; ++r) {
      if (r > 0) {
        k.k0 += kW0;
        k.k1 += kW1;
      }
      c = round(c, k);
    }
    return c;
  }
};

// Where a stream's numbers are used. The numeric values are fixed forever: they enter the counter, so
// changing one changes every number drawn for that purpose (and breaks bitwise resume of old runs).
// Values must stay below 256 (the high byte of the 16-bit purpose is the instance, see purpose_code).
enum class Purpose : uint32_t {
  generator_mask_select = 1,  // which positions the generator's MLM masks
  mask_replace = 2,           // [MASK] / random / keep decision for a masked position
  random_token = 3,           // the random replacement token
  crop = 4,                   // sequence cropping for the SCL view
  gumbel_sample = 5,          // Gumbel noise for sampling generator outputs
  multinomial_sample = 6,     // inverse-CDF sampling of generator outputs
  dropout_embedding = 7,
  dropout_attention = 8,
  dropout_residual = 9,
  dropout_activation = 10,
  init = 11,          // parameter initialization
  data_shuffle = 12,  // epoch order of the training data
};

// 16-bit purpose code: the Purpose in the low byte, `instance` (< 256, e.g. a layer index so every
// layer's dropout gets its own stream) in the high byte.
COCO_HOST_DEVICE constexpr uint32_t purpose_code(Purpose p, uint32_t instance = 0) {
  return (static_cast<uint32_t>(p) & 0xffu) | ((instance & 0xffu) << 8);
}

// The step a stream is keyed by: a value, or a counter in memory read at every draw (see "Step source"
// above). Converts implicitly from a step value.
struct StepKey {
  uint64_t value = 0;                 // the step when `counter` is null
  const uint64_t* counter = nullptr;  // else the step is *counter at the time of each draw

  COCO_HOST_DEVICE constexpr StepKey(uint64_t step = 0) : value(step) {}
  // A key read from `step_counter` (never null: a null counter would silently mean step 0).
  COCO_HOST_DEVICE static constexpr StepKey from_counter(const uint64_t* step_counter) {
    StepKey key;
    key.counter = step_counter;
    return key;
  }
  COCO_HOST_DEVICE constexpr bool in_memory() const { return counter != nullptr; }
};

// A stream of random numbers for one (seed, step, purpose), with an index base (0 by default). A plain
// value; pass it to kernels by value.
class Stream {
 public:
  COCO_HOST_DEVICE constexpr Stream() : Stream(0, StepKey(0), 0u) {}
  // `purpose` is the raw 16-bit code (see purpose_code); bits above 16 are dropped.
  COCO_HOST_DEVICE constexpr Stream(uint64_t seed, StepKey step, uint32_t purpose)
      : key_{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)},
        purpose_high_((purpose & 0xffffu) << 16),
        step_lo_(static_cast<uint32_t>(step.value)),
        step_hi_(static_cast<uint32_t>(step.value >> 32)),
        step_counter_(step.counter) {}
  COCO_HOST_DEVICE constexpr Stream(uint64_t seed, StepKey step, Purpose purpose, uint32_t instance = 0)
      : Stream(seed, step, purpose_code(purpose, instance)) {}

  // The same stream with index i moved to index base + i (bases add up).
  COCO_HOST_DEVICE constexpr Stream with_index_base(uint64_t base) const {
    Stream s = *this;
    s.base_ += base;
    return s;
  }
  COCO_HOST_DEVICE constexpr uint64_t index_base() const { return base_; }

  // The step of the next draw (reads the counter of an in-memory key).
  COCO_HOST_DEVICE constexpr uint64_t step() const {
    return step_counter_ ? *step_counter_ : (static_cast<uint64_t>(step_hi_) << 32) | step_lo_;
  }
  // This stream with its step read now and held: for a loop of draws that need not read it again.
  COCO_HOST_DEVICE constexpr Stream resolved() const {
    Stream s = *this;
    const uint64_t step_now = step();
    s.step_lo_ = static_cast<uint32_t>(step_now);
    s.step_hi_ = static_cast<uint32_t>(step_now >> 32);
    s.step_counter_ = nullptr;
    return s;
  }

  COCO_HOST_DEVICE constexpr Word4 counter(uint64_t local_index) const {
    const uint64_t index = base_ + local_index;
    const uint64_t step_now = step();
    return Word4{static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32) ^ purpose_high_,
                 static_cast<uint32_t>(step_now), static_cast<uint32_t>(step_now >> 32)};
  }
  COCO_HOST_DEVICE constexpr Key2 key() const { return key_; }

  // The four 32-bit words of Philox block `index`.
  COCO_HOST_DEVICE constexpr Word4 block(uint64_t index) const { return Philox4x32::generate(counter(index), key_); }

  COCO_HOST_DEVICE constexpr uint32_t u32(uint64_t index, unsigned lane = 0) const {
    return block(index).lane(lane & 3u);
  }

  // Uniform float in [0, 1): the top 24 bits of the word, scaled by 2^-24. Every value is exactly
  // representable, so this is bitwise identical on every backend.
  COCO_HOST_DEVICE constexpr float uniform(uint64_t index, unsigned lane = 0) const {
    return static_cast<float>(u32(index, lane) >> 8) * 0x1.0p-24f;
  }

  // Uniform double in [0, 1) with 53 random bits (lanes 0 and 1).
  COCO_HOST_DEVICE constexpr double uniform_f64(uint64_t index) const {
    const Word4 b = block(index);
    const uint64_t bits = (static_cast<uint64_t>(b.x) << 32) | b.y;
    return static_cast<double>(bits >> 11) * 0x1.0p-53;
  }

  // Integer in [0, n) by multiply-high: floor(x * n / 2^32). No division, no rejection loop (so no
  // divergence on the GPU). Outcomes get either floor(2^32/n) or ceil(2^32/n) of the 2^32 words, so each
  // probability is off from 1/n by less than 2^-32 -- for a 30522-token vocabulary a relative bias below
  // 7.2e-6, far under sampling noise. n == 0 returns 0.
  COCO_HOST_DEVICE constexpr uint32_t below(uint32_t n, uint64_t index, unsigned lane = 0) const {
    return Philox4x32::mul_hi(u32(index, lane), n);
  }

  // Standard normal by Box-Muller from lanes 0 and 1. It uses logf/sqrtf/cosf, whose last bits may
  // differ between the CUDA libdevice and the host libm, so normal() is reproducible per backend but
  // not bitwise across backends. Masks, dropout and sampling use only the integer and uniform draws
  // above, which are bitwise identical everywhere.
  COCO_HOST_DEVICE float normal(uint64_t index) const {
    const Word4 b = block(index);
    const float u1 = static_cast<float>((b.x >> 8) + 1u) * 0x1.0p-24f;  // (0, 1]: log(u1) is finite
    const float u2 = static_cast<float>(b.y >> 8) * 0x1.0p-24f;         // [0, 1)
    constexpr float kTwoPi = 6.28318530717958647692f;
    return sqrtf(-2.0f * logf(u1)) * cosf(kTwoPi * u2);
  }

 private:
  Key2 key_;
  uint32_t purpose_high_;
  uint32_t step_lo_, step_hi_;
  uint64_t base_ = 0;
  const uint64_t* step_counter_ = nullptr;
};

}  // namespace coco::rng
