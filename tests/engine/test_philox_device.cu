// The same Philox streams on the (emulated or real) device as on the host: integer and uniform draws
// bitwise, normal() to within libm-vs-libdevice rounding; a stream keyed by a step counter in device
// memory draws what a stream keyed by that step's value draws, in a CUDA graph replay too.
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

// Uniform draws of `stream` into out[n].
__global__ void uniform_kernel(Stream stream, int n, float* out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = stream.uniform(static_cast<uint64_t>(i));
}

std::vector<float> uniforms_of(const Stream& stream, int n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out[static_cast<size_t>(i)] = stream.uniform(static_cast<uint64_t>(i));
  return out;
}

TEST(PhiloxDevice, StepCounterInMemoryDrawsTheStepItHoldsAtEachDraw) {
  using coco::rng::StepKey;
  const uint64_t big_step = (1ull << 40) + 3;
  // On the host, a counter in host memory.
  uint64_t host_counter = big_step;
  const Stream from_host(9, StepKey::from_counter(&host_counter), Purpose::dropout_residual, 2);
  EXPECT_EQ(uniforms_of(from_host, 64), uniforms_of(Stream(9, big_step, Purpose::dropout_residual, 2), 64));
  host_counter = 4;
  EXPECT_EQ(from_host.step(), 4u);
  EXPECT_EQ(from_host.block(17), Stream(9, 4, Purpose::dropout_residual, 2).block(17));
  const Stream held = from_host.resolved();
  host_counter = 5;
  EXPECT_EQ(held.step(), 4u);
  EXPECT_FALSE(StepKey(7).in_memory());
  EXPECT_TRUE(StepKey::from_counter(&host_counter).in_memory());

  // On the device: one kernel captured in a graph, replayed with the counter at two steps.
  const int n = 300;
  DeviceArray<uint64_t> counter(1);
  DeviceArray<float> out(n);
  const Stream from_device(9, StepKey::from_counter(counter.ptr), Purpose::dropout_residual, 2);
  cudaStream_t stream = nullptr;
  COCO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  COCO_LAUNCH(uniform_kernel, dim3(coco::ceil_div(n, 128)), dim3(128), 0, stream, from_device, n, out.ptr);
  cudaGraph_t graph = nullptr;
  COCO_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  COCO_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  for (uint64_t step : {uint64_t{0}, big_step, uint64_t{1}}) {
    COCO_CUDA_CHECK(cudaMemcpy(counter.ptr, &step, sizeof(step), cudaMemcpyHostToDevice));
    COCO_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    COCO_CUDA_CHECK(cudaStreamSynchronize(stream));
    EXPECT_EQ(out.download(), uniforms_of(Stream(9, step, Purpose::dropout_residual, 2), n)) << "step " << step;
  }
  COCO_CUDA_CHECK(cudaGraphExecDestroy(exec));
  COCO_CUDA_CHECK(cudaGraphDestroy(graph));
  COCO_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace
