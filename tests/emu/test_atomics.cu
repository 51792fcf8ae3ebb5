// Atomics under contention: blocks run concurrently on several OS threads, so these are real races.
// Integer results are exact; float sums are order-dependent and compared with a tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/runtime/launch.cuh"
#include "tests/common/kernel_check.h"

namespace {

using coco::testing::GuardedDeviceBuffer;

constexpr int kBins = 17;

// ints: [0, kBins) histogram, then sum, max, min, or, xor, sub, inc counter, exch sink
__global__ void integer_atomics_kernel(int* ints, unsigned* uints, const int* values, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const int v = values[i];
  atomicAdd(&ints[i % kBins], 1);
  atomicAdd(&ints[kBins + 0], v);
  atomicMax(&ints[kBins + 1], v);
  atomicMin(&ints[kBins + 2], v);
  atomicOr(&uints[0], 1u << (i % 32));
  atomicXor(&uints[1], static_cast<unsigned>(i));
  atomicSub(&uints[2], 2u);
  atomicInc(&uints[3], 9u);  // wraps 9 -> 0
  atomicExch(&uints[4], 7u);
  atomicAnd(&uints[5], ~(1u << (i % 16)));
}

TEST(Atomics, IntegerAtomicsAreExactUnderContention) {
  const int n = 64 * 256;
  std::vector<int> values(n);
  for (int i = 0; i < n; ++i) values[i] = (i * 7919) % 20011 - 10000;
  GuardedDeviceBuffer<int> dvalues(values), ints(kBins + 3);
  std::vector<int> init(kBins + 3, 0);
  init[kBins + 1] = -(1 << 30);
  init[kBins + 2] = 1 << 30;
  ints.upload(init);
  GuardedDeviceBuffer<unsigned> uints(6);
  uints.upload({0u, 0u, 1000000u, 0u, 0u, 0xffffffffu});
  COCO_LAUNCH(integer_atomics_kernel, dim3(64), dim3(256), 0, nullptr, ints.data(), uints.data(), dvalues.data(), n);
  const std::vector<int> r = ints.download();
  const std::vector<unsigned> u = uints.download();
  for (int b = 0; b < kBins; ++b) EXPECT_EQ(r[b], n / kBins + (b < n % kBins ? 1 : 0)) << b;
  long long sum = 0;
  unsigned x = 0;
  for (int i = 0; i < n; ++i) {
    sum += values[i];
    x ^= static_cast<unsigned>(i);
  }
  EXPECT_EQ(r[kBins + 0], sum);
  EXPECT_EQ(r[kBins + 1], *std::max_element(values.begin(), values.end()));
  EXPECT_EQ(r[kBins + 2], *std::min_element(values.begin(), values.end()));
  EXPECT_EQ(u[0], 0xffffffffu);
  EXPECT_EQ(u[1], x);
  EXPECT_EQ(u[2], 1000000u - 2u * n);
  EXPECT_EQ(u[3], static_cast<unsigned>(n % 10));
  EXPECT_EQ(u[4], 7u);
  EXPECT_EQ(u[5], 0xffff0000u);
}

// The classic float atomicMax through atomicCAS on the bit pattern.
__device__ float atomic_max_float(float* address, float value) {
  int* word = reinterpret_cast<int*>(address);
  int old = *word, assumed;
  do {
    assumed = old;
    if (__int_as_float(assumed) >= value) break;
    old = atomicCAS(word, assumed, __float_as_int(value));
  } while (old != assumed);
  return __int_as_float(old);
}

// A counter incremented only through compare-and-swap retries.
__device__ void cas_increment(unsigned long long* counter) {
  unsigned long long old = *counter, assumed;
  do {
    assumed = old;
    old = atomicCAS(counter, assumed, assumed + 1);
  } while (old != assumed);
}

__global__ void float_atomics_kernel(float* sums, double* dsum, float* maximum, unsigned long long* counter,
                                     const float* values, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  atomicAdd(&sums[i % 4], values[i]);
  atomicAdd(dsum, static_cast<double>(values[i]));
  atomic_max_float(maximum, values[i]);
  cas_increment(counter);
}

TEST(Atomics, FloatAddWithinToleranceAndCasPatternsExact) {
  const int n = 48 * 256;
  const std::vector<float> values = coco::testing::random_floats(n, 21, -1.0f, 3.0f);
  GuardedDeviceBuffer<float> dvalues(values), sums(4), maximum(1);
  GuardedDeviceBuffer<double> dsum(1);
  GuardedDeviceBuffer<unsigned long long> counter(1);
  maximum.upload({-1e30f});
  COCO_LAUNCH(float_atomics_kernel, dim3(48), dim3(256), 0, nullptr, sums.data(), dsum.data(), maximum.data(),
              counter.data(), dvalues.data(), n);
  double reference[4] = {0, 0, 0, 0}, total = 0;
  for (int i = 0; i < n; ++i) {
    reference[i % 4] += values[i];
    total += values[i];
  }
  const std::vector<float> s = sums.download();
  for (int k = 0; k < 4; ++k) EXPECT_NEAR(s[k], reference[k], 1e-5 * n) << k;
  EXPECT_NEAR(dsum.download()[0], total, 1e-9 * n);
  EXPECT_EQ(maximum.download()[0], *std::max_element(values.begin(), values.end()));
  EXPECT_EQ(counter.download()[0], static_cast<unsigned long long>(n));
}

// Narrow float atomics and shared-memory atomics inside a block.
__global__ void narrow_atomics_kernel(__half* h, __nv_bfloat16* b, __half2* h2, int* block_counts) {
  __shared__ int count;
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  atomicAdd(&count, 1);
  atomicAdd(h, __float2half(0.5f));
  atomicAdd(b, __float2bfloat16_rn(1.0f));
  atomicAdd(h2, __floats2half2_rn(1.0f, -0.25f));
  __syncthreads();
  if (threadIdx.x == 0) block_counts[blockIdx.x] = count;
}

TEST(Atomics, HalfBfloat16AndSharedMemoryAtomics) {
  const int blocks = 4, threads = 64;  // sums stay exactly representable in fp16 / bf16
  GuardedDeviceBuffer<__half> h(1);
  GuardedDeviceBuffer<__nv_bfloat16> b(1);
  GuardedDeviceBuffer<__half2> h2(1);
  GuardedDeviceBuffer<int> counts(blocks);
  COCO_LAUNCH(narrow_atomics_kernel, dim3(blocks), dim3(threads), 0, nullptr, h.data(), b.data(), h2.data(),
              counts.data());
  const int total = blocks * threads;
  EXPECT_EQ(__half2float(h.download()[0]), 0.5f * total);
  EXPECT_EQ(__bfloat162float(b.download()[0]), 1.0f * total);
  const __half2 pair = h2.download()[0];
  EXPECT_EQ(__low2float(pair), 1.0f * total);
  EXPECT_EQ(__high2float(pair), -0.25f * total);
  for (int c : counts.download()) EXPECT_EQ(c, threads);
}

}  // namespace
