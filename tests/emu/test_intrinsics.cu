// Semantics of the device intrinsics as CUDA defines them: shuffles (with width), votes, block
// votes, match/reduce, bit and conversion intrinsics, fp16/bf16 helpers and fast math. The same
// expectations hold on a GPU (this file also compiles with nvcc).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/runtime/launch.cuh"
#include "tests/common/kernel_check.h"

namespace {

using coco::testing::GuardedDeviceBuffer;

constexpr unsigned kFull = 0xffffffffu;
constexpr int kShuffleOutputs = 10;

// out: (threads, kShuffleOutputs)
__global__ void shuffle_kernel(int* out, float* out_f, double* out_d) {
  const int lane = threadIdx.x % 32;
  int* o = out + threadIdx.x * kShuffleOutputs;
  o[0] = __shfl_sync(kFull, lane * 10, 5);
  o[1] = __shfl_sync(kFull, lane, 3, 16);
  o[2] = __shfl_up_sync(kFull, lane, 2);
  o[3] = __shfl_up_sync(kFull, lane, 3, 8);
  o[4] = __shfl_down_sync(kFull, lane, 3);
  o[5] = __shfl_down_sync(kFull, lane, 2, 8);
  o[6] = __shfl_xor_sync(kFull, lane, 1, 16);
  o[7] = __shfl_xor_sync(kFull, lane, 16, 16);  // later groups read their own value
  o[8] = __shfl_sync(kFull, lane, lane + 33);   // source lanes wrap modulo the width
  o[9] = static_cast<int>(__shfl_xor_sync(kFull, 1000u + lane, 31));
  out_f[threadIdx.x] = __shfl_xor_sync(kFull, lane * 0.5f, 4);
  out_d[threadIdx.x] = __shfl_down_sync(kFull, lane + 0.25, 1);
}

TEST(Intrinsics, ShufflesHonourDeltaAndWidth) {
  const int threads = 64;
  GuardedDeviceBuffer<int> out(threads * kShuffleOutputs);
  GuardedDeviceBuffer<float> out_f(threads);
  GuardedDeviceBuffer<double> out_d(threads);
  COCO_LAUNCH(shuffle_kernel, dim3(1), dim3(threads), 0, nullptr, out.data(), out_f.data(), out_d.data());
  const std::vector<int> r = out.download();
  const std::vector<float> rf = out_f.download();
  const std::vector<double> rd = out_d.download();
  for (int t = 0; t < threads; ++t) {
    const int l = t % 32;
    const int expected[kShuffleOutputs] = {50,
                                           (l & ~15) + 3,
                                           l >= 2 ? l - 2 : l,
                                           (l % 8) < 3 ? l : l - 3,
                                           l + 3 < 32 ? l + 3 : l,
                                           (l % 8) + 2 >= 8 ? l : l + 2,
                                           l ^ 1,
                                           l < 16 ? l : l - 16,
                                           (l + 33) % 32,
                                           1000 + (l ^ 31)};
    for (int k = 0; k < kShuffleOutputs; ++k)
      EXPECT_EQ(r[t * kShuffleOutputs + k], expected[k]) << "thread " << t << " output " << k;
    EXPECT_EQ(rf[t], (l ^ 4) * 0.5f) << t;
    EXPECT_EQ(rd[t], (l + 1 < 32 ? l + 1 : l) + 0.25) << t;
  }
  EXPECT_TRUE(out.guards_intact());
}

constexpr int kVoteOutputs = 16;

// out: (threads, kVoteOutputs)
__global__ void vote_kernel(unsigned* out) {
  const unsigned lane = threadIdx.x % 32, t = threadIdx.x;
  unsigned* o = out + t * kVoteOutputs;
  o[0] = __ballot_sync(kFull, lane % 3 == 0);
  o[1] = __any_sync(kFull, lane == 7);
  o[2] = __all_sync(kFull, lane < 31);
  o[3] = __all_sync(kFull, 1);
  o[4] = __syncthreads_count(t % 5 == 0);
  o[5] = __syncthreads_and(t < 1000);
  o[6] = __syncthreads_and(t != 50);
  o[7] = __syncthreads_or(t == 77);
  o[8] = __syncthreads_or(0);
  // disjoint half-warp masks in divergent branches
  if (lane < 16)
    o[9] = __ballot_sync(0x0000ffffu, lane & 1);
  else
    o[9] = __ballot_sync(0xffff0000u, lane & 1);
  o[10] = __match_any_sync(kFull, lane / 4);
  o[11] = __reduce_add_sync(kFull, lane);
  o[12] = static_cast<unsigned>(__reduce_min_sync(kFull, static_cast<int>(lane) - 5));
  o[13] = __reduce_or_sync(kFull, 1u << (lane % 8));
  int predicate = 0;
  o[14] = __match_all_sync(kFull, t / 32, &predicate);
  o[15] = static_cast<unsigned>(predicate) * 2 + (__reduce_max_sync(kFull, lane * 3u) == 93u);
}

TEST(Intrinsics, WarpAndBlockVotesMatchAndReduce) {
  const int threads = 96;
  GuardedDeviceBuffer<unsigned> out(threads * kVoteOutputs);
  COCO_LAUNCH(vote_kernel, dim3(2), dim3(threads), 0, nullptr, out.data());
  const std::vector<unsigned> r = out.download();
  unsigned every_third = 0;
  for (unsigned l = 0; l < 32; l += 3) every_third |= 1u << l;
  for (int t = 0; t < threads; ++t) {
    const unsigned l = t % 32;
    const unsigned expected[kVoteOutputs] = {every_third,
                                             1,
                                             0,
                                             1,
                                             20,
                                             1,
                                             0,
                                             1,
                                             0,
                                             l < 16 ? 0x0000aaaau : 0xaaaa0000u,
                                             0xFu << (l / 4 * 4),
                                             496,
                                             static_cast<unsigned>(-5),
                                             0xFF,
                                             kFull,
                                             3};
    for (int k = 0; k < kVoteOutputs; ++k)
      EXPECT_EQ(r[t * kVoteOutputs + k], expected[k]) << "thread " << t << " output " << k;
  }
}

// A block of 48 threads: the second warp has only 16 lanes; absent lanes vote as not present.
__global__ void partial_warp_kernel(unsigned* out) {
  out[threadIdx.x * 3 + 0] = __ballot_sync(kFull, 1);
  out[threadIdx.x * 3 + 1] = __activemask();
  out[threadIdx.x * 3 + 2] = __shfl_down_sync(kFull, threadIdx.x, 8, 16);
}

TEST(Intrinsics, PartialLastWarp) {
  GuardedDeviceBuffer<unsigned> out(48 * 3);
  COCO_LAUNCH(partial_warp_kernel, dim3(1), dim3(48), 0, nullptr, out.data());
  const std::vector<unsigned> r = out.download();
  for (unsigned t = 0; t < 48; ++t) {
    const unsigned present = t < 32 ? kFull : 0xffffu;
    EXPECT_EQ(r[t * 3 + 0], present) << t;
    EXPECT_EQ(r[t * 3 + 1], present) << t;
    EXPECT_EQ(r[t * 3 + 2], (t % 16) + 8 < 16 ? t + 8 : t) << t;
  }
}

__global__ void bit_kernel(unsigned long long* out) {
  int k = 0;
  out[k++] = __popc(0xF0F0u);
  out[k++] = __popcll(~0ull);
  out[k++] = __clz(1);
  out[k++] = __clz(0);
  out[k++] = __clzll(1ll);
  out[k++] = __ffs(0x50);
  out[k++] = __ffs(0);
  out[k++] = __ffsll(1ll << 40);
  out[k++] = __brev(1u);
  out[k++] = __brevll(1ull);
  out[k++] = __byte_perm(0x33221100u, 0x77665544u, 0x5140u);
  out[k++] = __funnelshift_l(0x80000000u, 1u, 1u);
  out[k++] = __funnelshift_r(0x00000001u, 0x3u, 1u);
  out[k++] = __umulhi(0x80000000u, 4u);
  out[k++] = __umul64hi(1ull << 63, 6ull);
  out[k++] = __float_as_uint(1.0f);
  out[k++] = static_cast<unsigned>(__float_as_int(-2.0f));
  out[k++] = __int_as_float(0x40490fdb) == 3.14159274101257324f;
  out[k++] = static_cast<unsigned>(__float2int_rn(2.5f));
  out[k++] = static_cast<unsigned>(__float2int_rn(3.5f));
  out[k++] = static_cast<unsigned>(__float2int_rz(-2.7f));
  out[k++] = static_cast<unsigned>(__float2int_rd(-2.2f));
  out[k++] = static_cast<unsigned>(__float2int_ru(2.2f));
  out[k++] = __usad(3u, 10u, 1u);
  out[k++] = static_cast<unsigned>(__mulhi(-2, 0x40000000));
  out[k++] = static_cast<unsigned>(min(-3, 4)) + 100u * max(7u, 5u);
  out[k++] = __double_as_longlong(1.0) == 0x3FF0000000000000ll;
}

TEST(Intrinsics, BitAndConversionIntrinsics) {
  GuardedDeviceBuffer<unsigned long long> out(27);
  COCO_LAUNCH(bit_kernel, dim3(1), dim3(1), 0, nullptr, out.data());
  const std::vector<unsigned long long> r = out.download();
  const unsigned long long expected[27] = {8,
                                           64,
                                           31,
                                           32,
                                           63,
                                           5,
                                           0,
                                           41,
                                           0x80000000ull,
                                           1ull << 63,
                                           0x55114400ull,
                                           3,
                                           0x80000000ull,
                                           2,
                                           3,
                                           0x3f800000ull,
                                           0xc0000000ull,
                                           1,
                                           2,
                                           4,
                                           static_cast<unsigned>(-2),
                                           static_cast<unsigned>(-3),
                                           3,
                                           8,
                                           static_cast<unsigned>(-1),
                                           static_cast<unsigned>(-3) + 700u,
                                           1};
  for (int k = 0; k < 27; ++k) EXPECT_EQ(r[k], expected[k]) << "output " << k;
}

constexpr int kHalfOutputs = 24;

// out: (kHalfOutputs) floats from thread 0, then (32) shuffled halves and bf16 pairs
__global__ void half_kernel(float* out, float* shuffled) {
  const __half a = __float2half(1.5f), b = __float2half(-2.0f), c = __float2half(0.25f);
  const __nv_bfloat16 x = __float2bfloat16_rn(1.5f), y = __float2bfloat16_rn(-2.0f), z = __float2bfloat16_rn(0.25f);
  if (threadIdx.x == 0) {
    int k = 0;
    out[k++] = __half2float(__hadd(a, c));
    out[k++] = __half2float(__hmul(a, b));
    out[k++] = __half2float(__hsub(a, c));
    out[k++] = __half2float(__hfma(a, b, c));
    out[k++] = __half2float(hexp(__float2half(0.0f)));
    out[k++] = __half2float(hlog(__float2half(1.0f)));
    out[k++] = __half2float(hsqrt(__float2half(4.0f)));
    out[k++] = __half2float(hrcp(__float2half(4.0f)));
    out[k++] = __bfloat162float(__float2bfloat16_rn(1.00390625f));  // tie: rounds to even (1.0)
    out[k++] = __bfloat162float(__float2bfloat16_rn(1.01171875f));  // tie: rounds to even (1.015625)
    out[k++] = __bfloat162float(__hadd(x, z));
    out[k++] = __bfloat162float(__hmul(x, y));
    out[k++] = __bfloat162float(__hfma(x, y, z));
    out[k++] = __bfloat162float(hexp(__float2bfloat16_rn(0.0f)));
    out[k++] = __bfloat162float(hsqrt(__float2bfloat16_rn(9.0f)));
    const __nv_bfloat162 xy = __floats2bfloat162_rn(1.5f, -2.0f);
    const __nv_bfloat162 sq = __hmul2(xy, xy);
    out[k++] = __low2float(sq);
    out[k++] = __high2float(sq);
    const __half2 h = __hfma2(__floats2half2_rn(1.0f, 2.0f), __floats2half2_rn(3.0f, 4.0f), __float2half2_rn(0.5f));
    out[k++] = __low2float(h);
    out[k++] = __high2float(h);
    out[k++] = static_cast<float>(__half2int_rn(__float2half(2.5f)));
    out[k++] = __half2float(__hmax(a, b));
    out[k++] = __half2float(__hfma_relu(a, b, c));
    out[k++] = __bfloat162float(__hfma_relu(x, y, z));
    out[k++] = __half2float(__hneg(a));
  }
  const int lane = threadIdx.x % 32;
  const __half h = __shfl_xor_sync(kFull, __float2half(static_cast<float>(lane)), 1);
  const __nv_bfloat16 bf = __shfl_down_sync(kFull, __float2bfloat16_rn(static_cast<float>(lane)), 2);
  const __nv_bfloat162 pair = __shfl_sync(kFull, __floats2bfloat162_rn(static_cast<float>(lane), -1.0f), 7);
  shuffled[threadIdx.x * 4 + 0] = __half2float(h);
  shuffled[threadIdx.x * 4 + 1] = __bfloat162float(bf);
  shuffled[threadIdx.x * 4 + 2] = __low2float(pair);
  shuffled[threadIdx.x * 4 + 3] = __high2float(pair);
}

TEST(Intrinsics, HalfAndBfloat16Helpers) {
  GuardedDeviceBuffer<float> out(kHalfOutputs), shuffled(32 * 4);
  COCO_LAUNCH(half_kernel, dim3(1), dim3(32), 0, nullptr, out.data(), shuffled.data());
  const std::vector<float> r = out.download();
  const float expected[kHalfOutputs] = {1.75f, -3.0f,     1.25f, -2.75f, 1.0f,   0.0f, 2.0f, 0.25f,
                                        1.0f,  1.015625f, 1.75f, -3.0f,  -2.75f, 1.0f, 3.0f, 2.25f,
                                        4.0f,  3.5f,      8.5f,  2.0f,   1.5f,   0.0f, 0.0f, -1.5f};
  for (int k = 0; k < kHalfOutputs; ++k) EXPECT_EQ(r[k], expected[k]) << "output " << k;
  const std::vector<float> s = shuffled.download();
  for (int l = 0; l < 32; ++l) {
    EXPECT_EQ(s[l * 4 + 0], static_cast<float>(l ^ 1)) << l;
    EXPECT_EQ(s[l * 4 + 1], static_cast<float>(l + 2 < 32 ? l + 2 : l)) << l;
    EXPECT_EQ(s[l * 4 + 2], 7.0f) << l;
    EXPECT_EQ(s[l * 4 + 3], -1.0f) << l;
  }
}

constexpr int kMathOutputs = 16;

__global__ void math_kernel(float* out, float x) {
  int k = 0;
  out[k++] = __expf(x);
  out[k++] = __logf(x);
  out[k++] = __fdividef(x, 4.0f);
  out[k++] = rsqrtf(x);
  out[k++] = __frcp_rn(x);
  out[k++] = erff(x);
  out[k++] = erfcf(x);
  out[k++] = tanhf(x);
  out[k++] = fmaxf(nanf(""), x);  // NaN operands are ignored
  out[k++] = fminf(x, -x);
  out[k++] = __saturatef(x);
  out[k++] = __saturatef(-x);
  out[k++] = normcdff(0.0f);
  out[k++] = __sinf(x);
  out[k++] = __powf(x, 2.0f);
  out[k++] = __fmaf_rn(x, 2.0f, 1.0f);
}

TEST(Intrinsics, FastMathAgreesWithTheStandardFunctions) {
  const float x = 1.25f;
  GuardedDeviceBuffer<float> out(kMathOutputs);
  COCO_LAUNCH(math_kernel, dim3(1), dim3(1), 0, nullptr, out.data(), x);
  const std::vector<float> r = out.download();
  const double expected[kMathOutputs] = {std::exp(1.25),
                                         std::log(1.25),
                                         0.3125,
                                         1.0 / std::sqrt(1.25),
                                         0.8,
                                         std::erf(1.25),
                                         std::erfc(1.25),
                                         std::tanh(1.25),
                                         1.25,
                                         -1.25,
                                         1.0,
                                         0.0,
                                         0.5,
                                         std::sin(1.25),
                                         1.5625,
                                         3.5};
  // GPU fast-math intrinsics are approximate (a few ulp); the emulator is exact.
  for (int k = 0; k < kMathOutputs; ++k)
    EXPECT_NEAR(r[k], expected[k], 4e-6 * std::max(1.0, std::fabs(expected[k]))) << "output " << k;
}

}  // namespace
