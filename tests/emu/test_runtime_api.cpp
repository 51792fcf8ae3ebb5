// The runtime API layer from plain C++: memory, copies, streams, events, device properties, errors.
// Assertions about the virtual device and the emulator's bookkeeping apply in emulated mode only.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "engine/runtime/check.h"
#if defined(COCO_CUDA_EMULATED)
#include "engine/simt/emu_control.h"
#endif

namespace {

TEST(RuntimeApi, MemcpyMemsetAndTwoDimensionalCopies) {
  const size_t n = 1000;
  std::vector<uint8_t> host(n), back(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<uint8_t>(i * 7);
  uint8_t *a = nullptr, *b = nullptr;
  COCO_CUDA_CHECK(cudaMalloc(&a, n));
  COCO_CUDA_CHECK(cudaMalloc(&b, n));
  COCO_CUDA_CHECK(cudaMemcpy(a, host.data(), n, cudaMemcpyHostToDevice));
  COCO_CUDA_CHECK(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
  COCO_CUDA_CHECK(cudaMemcpy(back.data(), b, n, cudaMemcpyDeviceToHost));
  EXPECT_EQ(back, host);

  COCO_CUDA_CHECK(cudaMemset(b + 10, 0xAB, 20));
  COCO_CUDA_CHECK(cudaMemsetAsync(b + 40, 0xCD, 5, nullptr));
  COCO_CUDA_CHECK(cudaMemcpyAsync(back.data(), b, n, cudaMemcpyDefault, nullptr));
  for (size_t i = 0; i < n; ++i) {
    const uint8_t expected = (i >= 10 && i < 30) ? 0xAB : (i >= 40 && i < 45) ? 0xCD : host[i];
    ASSERT_EQ(back[i], expected) << i;
  }

  // 2-D: copy a 5 x 7 window out of rows of pitch 20 into rows of pitch 8.
  COCO_CUDA_CHECK(cudaMemcpy2D(b, 8, a + 3, 20, 7, 5, cudaMemcpyDeviceToDevice));
  std::vector<uint8_t> window(40);
  COCO_CUDA_CHECK(cudaMemcpy(window.data(), b, window.size(), cudaMemcpyDeviceToHost));
  for (int r = 0; r < 5; ++r)
    for (int c = 0; c < 7; ++c) ASSERT_EQ(window[r * 8 + c], host[3 + r * 20 + c]) << r << "," << c;
  EXPECT_EQ(cudaMemcpy2D(b, 4, a, 20, 7, 5, cudaMemcpyDeviceToDevice), cudaErrorInvalidPitchValue);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidPitchValue);
  EXPECT_EQ(cudaMemcpy(b, a, 4, static_cast<cudaMemcpyKind>(17)), cudaErrorInvalidMemcpyDirection);
  (void)cudaGetLastError();
  COCO_CUDA_CHECK(cudaFree(a));
  COCO_CUDA_CHECK(cudaFree(b));
}

TEST(RuntimeApi, StreamsAndEventsAreSynchronousButValidated) {
  cudaStream_t stream = nullptr;
  COCO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t start = nullptr, stop = nullptr, untimed = nullptr;
  COCO_CUDA_CHECK(cudaEventCreate(&start));
  COCO_CUDA_CHECK(cudaEventCreate(&stop));
  COCO_CUDA_CHECK(cudaEventCreateWithFlags(&untimed, cudaEventDisableTiming));
  COCO_CUDA_CHECK(cudaEventRecord(start, stream));
  float* d = nullptr;
  COCO_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&d), 1024, stream));
  COCO_CUDA_CHECK(cudaMemsetAsync(d, 0, 1024, stream));
  COCO_CUDA_CHECK(cudaFreeAsync(d, stream));
  COCO_CUDA_CHECK(cudaEventRecord(stop, stream));
  COCO_CUDA_CHECK(cudaEventRecord(untimed, stream));
  COCO_CUDA_CHECK(cudaStreamWaitEvent(stream, stop, 0));
  COCO_CUDA_CHECK(cudaEventSynchronize(stop));
  EXPECT_EQ(cudaEventQuery(stop), cudaSuccess);
  EXPECT_EQ(cudaStreamQuery(stream), cudaSuccess);
  COCO_CUDA_CHECK(cudaStreamSynchronize(stream));
  float ms = -1.0f;
  COCO_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
  EXPECT_GE(ms, 0.0f);
  EXPECT_LT(ms, 10000.0f);
  EXPECT_EQ(cudaEventElapsedTime(&ms, start, untimed), cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
  COCO_CUDA_CHECK(cudaEventDestroy(start));
  COCO_CUDA_CHECK(cudaEventDestroy(stop));
  COCO_CUDA_CHECK(cudaEventDestroy(untimed));
  COCO_CUDA_CHECK(cudaStreamDestroy(stream));
  COCO_CUDA_CHECK(cudaDeviceSynchronize());
#if defined(COCO_CUDA_EMULATED)
  // Destroyed handles are errors here (undefined behaviour on a GPU).
  EXPECT_EQ(cudaEventDestroy(start), cudaErrorInvalidResourceHandle);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaErrorInvalidResourceHandle);
  (void)cudaGetLastError();
#endif
}

TEST(RuntimeApi, DevicePropertiesAndAttributesDescribeAnH100LikeDevice) {
  int count = 0, device = -1;
  COCO_CUDA_CHECK(cudaGetDeviceCount(&count));
  COCO_CUDA_CHECK(cudaGetDevice(&device));
  EXPECT_GE(count, 1);
  EXPECT_EQ(device, 0);
  COCO_CUDA_CHECK(cudaSetDevice(0));
  EXPECT_EQ(cudaSetDevice(count), cudaErrorInvalidDevice);
  (void)cudaGetLastError();
  cudaDeviceProp prop{};
  COCO_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  EXPECT_EQ(prop.warpSize, 32);
  EXPECT_EQ(prop.maxThreadsPerBlock, 1024);
  EXPECT_EQ(prop.sharedMemPerBlock, 48u * 1024);
  int value = 0;
  const struct {
    cudaDeviceAttr attribute;
    long long expected;
  } attributes[] = {
      {cudaDevAttrMaxThreadsPerBlock, prop.maxThreadsPerBlock},
      {cudaDevAttrMaxBlockDimZ, prop.maxThreadsDim[2]},
      {cudaDevAttrMaxGridDimY, prop.maxGridSize[1]},
      {cudaDevAttrWarpSize, prop.warpSize},
      {cudaDevAttrMultiProcessorCount, prop.multiProcessorCount},
      {cudaDevAttrMaxSharedMemoryPerBlock, static_cast<long long>(prop.sharedMemPerBlock)},
      {cudaDevAttrMaxSharedMemoryPerBlockOptin, static_cast<long long>(prop.sharedMemPerBlockOptin)},
      {cudaDevAttrComputeCapabilityMajor, prop.major},
      {cudaDevAttrComputeCapabilityMinor, prop.minor},
  };
  for (const auto& a : attributes) {
    COCO_CUDA_CHECK(cudaDeviceGetAttribute(&value, a.attribute, 0));
    EXPECT_EQ(value, a.expected) << "attribute " << static_cast<int>(a.attribute);
  }
  size_t free_bytes = 0, total_bytes = 0;
  COCO_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  EXPECT_GT(total_bytes, 0u);
  EXPECT_LE(free_bytes, total_bytes);
#if defined(COCO_CUDA_EMULATED)
  EXPECT_STREQ(prop.name, "cocolm emulated sm_90");
  EXPECT_EQ(prop.major, 9);
  EXPECT_EQ(prop.minor, 0);
  EXPECT_EQ(prop.multiProcessorCount, 132);
  EXPECT_EQ(prop.sharedMemPerBlockOptin, 232448u);
  EXPECT_EQ(prop.maxGridSize[0], 2147483647);
  EXPECT_EQ(prop.totalGlobalMem, total_bytes);
#endif
}

TEST(RuntimeApi, ErrorNamesStringsAndLastErrorSemantics) {
  EXPECT_STREQ(cudaGetErrorString(cudaSuccess), "no error");
  EXPECT_STREQ(cudaGetErrorString(cudaErrorInvalidConfiguration), "invalid configuration argument");
  EXPECT_STREQ(cudaGetErrorString(cudaErrorInvalidValue), "invalid argument");
  EXPECT_STREQ(cudaGetErrorString(cudaErrorMemoryAllocation), "out of memory");
  EXPECT_STREQ(cudaGetErrorName(cudaErrorInvalidConfiguration), "cudaErrorInvalidConfiguration");
  EXPECT_STREQ(cudaGetErrorName(cudaErrorInvalidDevice), "cudaErrorInvalidDevice");
  (void)cudaGetLastError();
  EXPECT_EQ(cudaGetDeviceProperties(nullptr, 0), cudaErrorInvalidValue);
  EXPECT_EQ(cudaPeekAtLastError(), cudaErrorInvalidValue);  // peeking keeps it
  int count = 0;
  COCO_CUDA_CHECK(cudaGetDeviceCount(&count));           // a later success does not clear it
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidValue);  // reading clears it
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  try {
    COCO_CUDA_CHECK(cudaSetDevice(12345));
    ADD_FAILURE() << "no exception";
  } catch (const coco::CudaError& e) {
    EXPECT_NE(std::string(e.what()).find("cudaSetDevice(12345)"), std::string::npos) << e.what();
  }
  (void)cudaGetLastError();
}

#if defined(COCO_CUDA_EMULATED)
TEST(RuntimeApi, AllocationsAreCountedTrackedAndChecked) {
  emu::Stats& s = emu::stats();
  const uint64_t mallocs = s.device_mallocs, frees = s.device_frees, live = s.device_bytes_live;
  const uint64_t host_mallocs = s.host_mallocs, host_frees = s.host_frees;
  void *a = nullptr, *b = nullptr, *zero = reinterpret_cast<void*>(1), *pinned = nullptr;
  COCO_CUDA_CHECK(cudaMalloc(&a, 100));
  COCO_CUDA_CHECK(cudaMalloc(&b, 28));
  COCO_CUDA_CHECK(cudaMalloc(&zero, 0));  // CUDA: success and a null pointer, nothing allocated
  EXPECT_EQ(zero, nullptr);
  EXPECT_EQ(s.device_mallocs - mallocs, 2u);
  EXPECT_EQ(s.device_bytes_live - live, 128u);
  EXPECT_GE(s.device_bytes_peak, s.device_bytes_live.load());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a) % 256, 0u);
  COCO_CUDA_CHECK(cudaMallocHost(&pinned, 64));
  EXPECT_EQ(s.host_mallocs - host_mallocs, 1u);

  cudaPointerAttributes attributes{};
  COCO_CUDA_CHECK(cudaPointerGetAttributes(&attributes, static_cast<char*>(a) + 50));
  EXPECT_EQ(attributes.type, cudaMemoryTypeDevice);
  COCO_CUDA_CHECK(cudaPointerGetAttributes(&attributes, pinned));
  EXPECT_EQ(attributes.type, cudaMemoryTypeHost);
  int on_stack = 0;
  COCO_CUDA_CHECK(cudaPointerGetAttributes(&attributes, &on_stack));
  EXPECT_EQ(attributes.type, cudaMemoryTypeUnregistered);

  // A copy that runs past the end of a device allocation is refused (ASan would also catch it).
  std::vector<char> host(200);
  EXPECT_EQ(cudaMemcpy(a, host.data(), 101, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemset(static_cast<char*>(a) + 90, 0, 11), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  // Freeing something that is not a live allocation of that kind fails like CUDA.
  EXPECT_EQ(cudaFree(&on_stack), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFree(pinned), cudaErrorInvalidValue);
  EXPECT_EQ(cudaFreeHost(a), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  COCO_CUDA_CHECK(cudaFree(a));
  EXPECT_EQ(cudaFree(a), cudaErrorInvalidValue);  // double free
  (void)cudaGetLastError();
  COCO_CUDA_CHECK(cudaFree(b));
  COCO_CUDA_CHECK(cudaFree(nullptr));
  COCO_CUDA_CHECK(cudaFreeHost(pinned));
  EXPECT_EQ(s.device_frees - frees, 2u);
  EXPECT_EQ(s.device_bytes_live, live);
  EXPECT_EQ(s.host_frees - host_frees, 1u);
}
#endif

}  // namespace
