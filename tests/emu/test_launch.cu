// Launch-helper basics: arguments, grid/block indexing and CUDA-like configuration errors.
#include <gtest/gtest.h>

#include <vector>

#include "engine/runtime/launch.cuh"

namespace {

__global__ void axpy_kernel(float a, const float* x, float* y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

// out: (grid.z*grid.y*grid.x, block.z*block.y*block.x, 4) = (linear block, linear thread, dims check)
__global__ void index_kernel(unsigned* out) {
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  const unsigned thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
  unsigned* o = out + (static_cast<size_t>(block) * threads + thread) * 4;
  o[0] = block;
  o[1] = thread;
  o[2] = gridDim.x * 10000 + gridDim.y * 100 + gridDim.z;
  o[3] = blockDim.x * 10000 + blockDim.y * 100 + blockDim.z;
}

__global__ void smem_kernel(float* out) {
  float* smem = coco::dynamic_smem<float>();
  smem[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = smem[blockDim.x - 1 - threadIdx.x];
}

TEST(Launch, AxpyOverSeveralBlocks) {
  const int n = 1000;
  std::vector<float> x(n), y(n);
  for (int i = 0; i < n; ++i) {
    x[i] = static_cast<float>(i);
    y[i] = 1.0f;
  }
  float *dx = nullptr, *dy = nullptr;
  COCO_CUDA_CHECK(cudaMalloc(&dx, n * sizeof(float)));
  COCO_CUDA_CHECK(cudaMalloc(&dy, n * sizeof(float)));
  COCO_CUDA_CHECK(cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  COCO_CUDA_CHECK(cudaMemcpy(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  COCO_LAUNCH(axpy_kernel, dim3(coco::ceil_div(n, 128)), dim3(128), 0, nullptr, 2.0f, dx, dy, n);
  COCO_CUDA_CHECK(cudaMemcpy(y.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost));
  for (int i = 0; i < n; ++i) ASSERT_EQ(y[i], 2.0f * i + 1.0f) << i;
  COCO_CUDA_CHECK(cudaFree(dx));
  COCO_CUDA_CHECK(cudaFree(dy));
}

TEST(Launch, ThreeDimensionalGridAndBlockIndices) {
  const dim3 grid(3, 2, 2), block(4, 3, 2);
  const size_t blocks = 12, threads = 24;
  unsigned* d = nullptr;
  COCO_CUDA_CHECK(cudaMalloc(&d, blocks * threads * 4 * sizeof(unsigned)));
  COCO_LAUNCH(index_kernel, grid, block, 0, nullptr, d);
  std::vector<unsigned> h(blocks * threads * 4);
  COCO_CUDA_CHECK(cudaMemcpy(h.data(), d, h.size() * sizeof(unsigned), cudaMemcpyDeviceToHost));
  for (size_t b = 0; b < blocks; ++b) {
    for (size_t t = 0; t < threads; ++t) {
      const unsigned* o = &h[(b * threads + t) * 4];
      ASSERT_EQ(o[0], b);
      ASSERT_EQ(o[1], t);
      ASSERT_EQ(o[2], 30202u);
      ASSERT_EQ(o[3], 40302u);
    }
  }
  COCO_CUDA_CHECK(cudaFree(d));
}

TEST(Launch, OversizedBlockIsAConfigurationError) {
  float* dy = nullptr;
  COCO_CUDA_CHECK(cudaMalloc(&dy, sizeof(float)));
  cudaError_t status = coco::launch(axpy_kernel, dim3(1), dim3(2048), 0, nullptr, 1.0f, dy, dy, 1);
  EXPECT_EQ(status, cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);  // launch configuration errors are not sticky
  EXPECT_THROW(COCO_LAUNCH(axpy_kernel, dim3(1), dim3(2048), 0, nullptr, 1.0f, dy, dy, 1), coco::CudaError);
  (void)cudaGetLastError();
  COCO_CUDA_CHECK(cudaFree(dy));
}

TEST(Launch, EveryDimensionLimitAndZeroSizesAreConfigurationErrors) {
  float* dy = nullptr;
  COCO_CUDA_CHECK(cudaMalloc(&dy, sizeof(float)));
  const struct {
    dim3 grid, block;
  } bad[] = {
      {dim3(1), dim3(1025)},      {dim3(1), dim3(1, 1025)},      {dim3(1), dim3(1, 1, 65)}, {dim3(1), dim3(32, 32, 2)},
      {dim3(1, 65536), dim3(32)}, {dim3(1, 1, 65536), dim3(32)}, {dim3(0), dim3(32)},       {dim3(4, 0), dim3(32)},
      {dim3(1), dim3(0)},         {dim3(2147483648u), dim3(32)},
  };
  for (const auto& c : bad) {
    EXPECT_EQ(coco::launch(axpy_kernel, c.grid, c.block, 0, nullptr, 1.0f, dy, dy, 1), cudaErrorInvalidConfiguration)
        << "grid (" << c.grid.x << "," << c.grid.y << "," << c.grid.z << ") block (" << c.block.x << "," << c.block.y
        << "," << c.block.z << ")";
    (void)cudaGetLastError();
  }
  // The largest legal shapes launch (the kernel's bounds check keeps them harmless).
  EXPECT_EQ(coco::launch(axpy_kernel, dim3(1), dim3(1024), 0, nullptr, 1.0f, dy, dy, 0), cudaSuccess);
  EXPECT_EQ(coco::launch(axpy_kernel, dim3(1), dim3(16, 1, 64), 0, nullptr, 1.0f, dy, dy, 0), cudaSuccess);
  COCO_CUDA_CHECK(cudaFree(dy));
}

TEST(Launch, DynamicSharedMemoryLimitsFollowTheKernelAttribute) {
  float* d = nullptr;
  COCO_CUDA_CHECK(cudaMalloc(&d, 64 * sizeof(float)));
  // Up to 48 KB needs nothing.
  EXPECT_EQ(coco::launch(smem_kernel, dim3(1), dim3(64), 48 * 1024, nullptr, d), cudaSuccess);
  // Above 48 KB without opting in is an invalid value, like on an H100.
  EXPECT_EQ(coco::launch(smem_kernel, dim3(1), dim3(64), 64 * 1024, nullptr, d), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  COCO_CUDA_CHECK(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024));
  cudaFuncAttributes attributes{};
  COCO_CUDA_CHECK(cudaFuncGetAttributes(&attributes, smem_kernel));
  EXPECT_EQ(attributes.maxDynamicSharedSizeBytes, 100 * 1024);
  EXPECT_EQ(coco::launch(smem_kernel, dim3(1), dim3(64), 64 * 1024, nullptr, d), cudaSuccess);
  EXPECT_EQ(coco::launch(smem_kernel, dim3(1), dim3(64), 101 * 1024, nullptr, d), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  // The device maximum (227 KB) cannot be exceeded even by the attribute.
  EXPECT_EQ(cudaFuncSetAttribute(smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 228 * 1024),
            cudaErrorInvalidValue);
  (void)cudaGetLastError();
  std::vector<float> h(64);
  COCO_LAUNCH(smem_kernel, dim3(1), dim3(64), 64 * sizeof(float), nullptr, d);
  COCO_CUDA_CHECK(cudaMemcpy(h.data(), d, h.size() * sizeof(float), cudaMemcpyDeviceToHost));
  for (int i = 0; i < 64; ++i) ASSERT_EQ(h[i], static_cast<float>(63 - i));
  COCO_CUDA_CHECK(cudaFree(d));
}

TEST(Launch, FailedLaunchErrorNamesTheKernelAndSite) {
  float* dy = nullptr;
  COCO_CUDA_CHECK(cudaMalloc(&dy, sizeof(float)));
  try {
    COCO_LAUNCH(axpy_kernel, dim3(1), dim3(4096), 0, nullptr, 1.0f, dy, dy, 1);
    ADD_FAILURE() << "an invalid launch did not throw";
  } catch (const coco::CudaError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("axpy_kernel"), std::string::npos) << what;
    EXPECT_NE(what.find("invalid configuration argument"), std::string::npos) << what;
    EXPECT_NE(what.find("test_launch.cu"), std::string::npos) << what;
  }
  (void)cudaGetLastError();
  COCO_CUDA_CHECK(cudaFree(dy));
}

}  // namespace
