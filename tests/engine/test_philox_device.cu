// The same Philox streams on the (emulated or real) device as on the host: integer and uniform draws
// bitwise, normal() to within libm-vs-libdevice rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "engine/rng/philox.h"
#include "engine/runtime/launch.cuh"

namespace {

using coco::rng::Purpose;
using coco::rng::Stream;

// out_words: [n, 4], out_uniform / out_below / out_normal: [n]
__global__ void philox_draws_kernel(Stream stream, uint64_t first_index, uint32_t below_n, int n, uint32_t* out_words,
                                    float* out_uniform, uint32_t* out_below, float* out_normal) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const uint64_t index = first_index + static_cast<uint64_t>(i);
  const coco::rng::Word4 b = stream.block(index);
  out_words[4 * i + 0] = b.x;
  out_words[4 * i + 1] = b.y;
  out_words[4 * i + 2] = b.z;
  out_words[4 * i + 3] = b.w;
  out_uniform[i] = stream.uniform(index, static_cast<unsigned>(i) & 3u);
  out_below[i] = stream.below(below_n, index, 1);
  out_normal[i] = stream.normal(index);
}

template <class T>
struct DeviceArray {
  explicit DeviceArray(size_t n) : count(n) { COCO_CUDA_CHECK(cudaMalloc(&ptr, n * sizeof(T))); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { (void)cudaFree(ptr); }
  std::vector<T> download() const {
    std::vector<T> host(count);
    COCO_CUDA_CHECK(cudaMemcpy(host.data(), ptr, count * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }
  T* ptr = nullptr;
  size_t count;
};

void expect_device_matches_host(const Stream& stream, uint64_t first_index, uint32_t below_n) {
  const int n = 3000;  // several blocks, a partial last one
  DeviceArray<uint32_t> words(4 * n), below(n);
  DeviceArray<float> uniform(n), normal(n);
  COCO_LAUNCH(philox_draws_kernel, dim3(coco::ceil_div(n, 256)), dim3(256), 0, nullptr, stream, first_index, below_n, n,
              words.ptr, uniform.ptr, below.ptr, normal.ptr);
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
  const auto d_words = words.download();
  const auto d_uniform = uniform.download();
  const auto d_below = below.download();
  const auto d_normal = normal.download();
  for (int i = 0; i < n; ++i) {
    const uint64_t index = first_index + static_cast<uint64_t>(i);
    const coco::rng::Word4 b = stream.block(index);
    ASSERT_EQ(d_words[4 * i + 0], b.x) << "index " << index;
    ASSERT_EQ(d_words[4 * i + 1], b.y) << "index " << index;
    ASSERT_EQ(d_words[4 * i + 2], b.z) << "index " << index;
    ASSERT_EQ(d_words[4 * i + 3], b.w) << "index " << index;
    const float u = stream.uniform(index, static_cast<unsigned>(i) & 3u);
    ASSERT_EQ(std::memcmp(&d_uniform[i], &u, sizeof(float)), 0) << "index " << index;
    ASSERT_EQ(d_below[i], stream.below(below_n, index, 1)) << "index " << index;
    const float z = stream.normal(index);
    ASSERT_NEAR(d_normal[i], z, 2e-6f * (1.0f + std::abs(z))) << "index " << index;
  }
}

TEST(PhiloxDevice, StreamsMatchHostBitwise) {
  expect_device_matches_host(Stream(42, 0, Purpose::generator_mask_select), 0, 30522);
  expect_device_matches_host(Stream(0xfedcba9876543210ull, 123456789, Purpose::dropout_attention, 11), 0, 7);
}

TEST(PhiloxDevice, HighIndicesAndStepsMatchHost) {
  // Index words above 2^32 and a step beyond 32 bits exercise the 64-bit splits on the device.
  expect_device_matches_host(Stream(7, (1ull << 40) + 5, Purpose::random_token), (1ull << 47) - 1000, 1u << 31);
}

}  // namespace
