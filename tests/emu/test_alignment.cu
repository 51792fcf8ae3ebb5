// Misaligned memory accesses: a GPU faults ("misaligned address") when a 2/4/8/16-byte global or
// shared access is not aligned to its size, and so must the emulator, or CI cannot catch a 128-bit
// load from a view that is not 16-byte aligned. Every load and store of kernel code (scalar, vector,
// kernels/vector_access.cuh packs, shared memory), the atomics, and kernels replayed by a graph:
// the launch fails with cudaErrorMisalignedAddress and the report names the kernel, block, thread,
// address, access and source line; the same accesses aligned pass. As on a GPU, whose context a fault leaves
// unusable, the error is sticky: every later call that does device work fails with it until the test starts over
// (emu::clear_sticky_error). Emulated mode only.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/runtime/launch.cuh"
#include "kernels/vector_access.cuh"
#include "tests/common/kernel_check.h"
#if defined(COCO_CUDA_EMULATED)
#include "engine/simt/emu_control.h"
#endif

// External linkage: on a GPU build, where the tests are compiled out, nvcc would warn that they are unused.
namespace emu_alignment_test {

// out[t] = the sum of the float4 at in + offset + 4 t (offset in floats: 1 is 4 bytes past a boundary).
__global__ void float4_load_kernel(const float* in, int offset, float* out) {
  const float4 v = *reinterpret_cast<const float4*>(in + offset + 4 * threadIdx.x);
  out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

// Copies 4 floats per thread from in + offset with the 16-byte packs of kernels/vector_access.cuh.
__global__ void pack_copy_kernel(const float* in, int offset, float* out) {
  using coco::kernels::detail::load_pack;
  using coco::kernels::detail::store_pack;
  store_pack<4>(out + 4 * threadIdx.x, load_pack<4>(in + offset + 4 * threadIdx.x));
}

// A float read and a double written at a byte offset into a device buffer.
__global__ void scalar_access_kernel(const char* in, int in_byte_offset, char* out, int out_byte_offset) {
  const float x = *reinterpret_cast<const float*>(in + in_byte_offset);
  *reinterpret_cast<double*>(out + out_byte_offset) = static_cast<double>(x);
}

// Thread 0 reads a float4 of dynamic shared memory at `offset` floats after the others filled it.
__global__ void shared_float4_kernel(int offset, float* out) {
  float* s = coco::dynamic_smem<float>();
  s[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  if (threadIdx.x == 0) {
    const float4 v = *reinterpret_cast<const float4*>(s + offset);
    out[0] = v.x + v.y + v.z + v.w;
  }
}

__global__ void atomic_add_kernel(char* bytes, int byte_offset) {
  atomicAdd(reinterpret_cast<float*>(bytes + byte_offset), 1.0f);
}

}  // namespace emu_alignment_test

namespace {

using coco::testing::GuardedDeviceBuffer;
using namespace emu_alignment_test;

#if defined(COCO_CUDA_EMULATED)

std::string pointer_text(const void* p) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%p", p);
  return buffer;
}

std::vector<float> iota_floats(int n) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = static_cast<float>(i);
  return v;
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE((text).find(part), std::string::npos) << (text)

// Every test provokes a fault on purpose: it starts over after each one it checked, and at its end.
class Alignment : public ::testing::Test {
 protected:
  void TearDown() override { emu::clear_sticky_error(); }
};

TEST_F(Alignment, MisalignedFloat4LoadFailsTheLaunchAndNamesTheAccess) {
  GuardedDeviceBuffer<float> in(iota_floats(40)), out(8);
  EXPECT_EQ(coco::launch_named("float4_load_kernel", float4_load_kernel, dim3(1), dim3(1), 0, nullptr, in.data(), 1,
                               out.data()),
            cudaErrorMisalignedAddress);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMisalignedAddress);
  const std::string message = emu::last_diagnostic();
  EXPECT_CONTAINS(message, "kernel float4_load_kernel block (0,0,0) thread (0,0,0): misaligned address " +
                               pointer_text(in.data() + 1) + ": reference binding to 'const struct float4'");
  EXPECT_CONTAINS(message,
                  "needs 16-byte alignment (the address is 4 bytes past a multiple of 16) at "
                  "test_alignment.cu:");
  emu::clear_sticky_error();
  // Through the launch helper the failure is a CudaError naming the error and the launch.
  try {
    COCO_LAUNCH(float4_load_kernel, dim3(2), dim3(8), 0, nullptr, in.data(), 2, out.data());
    ADD_FAILURE() << "the misaligned launch did not throw";
  } catch (const coco::CudaError& e) {
    const std::string what = e.what();
    EXPECT_CONTAINS(what, "misaligned address");
    EXPECT_CONTAINS(what, "launch of float4_load_kernel");
  }
  EXPECT_CONTAINS(emu::last_diagnostic(), "the address is 8 bytes past a multiple of 16");
}

TEST_F(Alignment, TheErrorIsStickyAndAlignedFloat4LoadsPass) {
  GuardedDeviceBuffer<float> in(iota_floats(40)), out(8);
  EXPECT_EQ(coco::launch(float4_load_kernel, dim3(1), dim3(8), 0, nullptr, in.data(), 3, out.data()),
            cudaErrorMisalignedAddress);
  // As on a GPU, whose context the fault leaves unusable, every later call that does device work fails with it
  // (an aligned launch, a copy, an allocation, a synchronisation, a stream), and cudaGetLastError keeps returning it.
  EXPECT_EQ(cudaGetLastError(), cudaErrorMisalignedAddress);
  EXPECT_EQ(cudaGetLastError(), cudaErrorMisalignedAddress);
  EXPECT_EQ(coco::launch(float4_load_kernel, dim3(1), dim3(8), 0, nullptr, in.data(), 0, out.data()),
            cudaErrorMisalignedAddress);
  float host[8] = {};
  EXPECT_EQ(cudaMemcpy(host, out.data(), sizeof host, cudaMemcpyDeviceToHost), cudaErrorMisalignedAddress);
  void* more = nullptr;
  EXPECT_EQ(cudaMalloc(&more, 256), cudaErrorMisalignedAddress);
  EXPECT_EQ(more, nullptr);
  EXPECT_EQ(cudaDeviceSynchronize(), cudaErrorMisalignedAddress);
  cudaStream_t stream = nullptr;
  EXPECT_EQ(cudaStreamCreate(&stream), cudaErrorMisalignedAddress);
  EXPECT_EQ(cudaMemset(out.data(), 0, sizeof host), cudaErrorMisalignedAddress);
  // Queries that do no device work still answer.
  int devices = 0;
  EXPECT_EQ(cudaGetDeviceCount(&devices), cudaSuccess);
  EXPECT_STREQ(cudaGetErrorName(cudaErrorMisalignedAddress), "cudaErrorMisalignedAddress");
  // The emulator lets a test start over (a GPU process would have to exit): aligned launches (offsets 0 and 4
  // floats: 16-byte boundaries) then succeed.
  emu::clear_sticky_error();
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  for (int offset : {0, 4}) {
    COCO_LAUNCH(float4_load_kernel, dim3(1), dim3(8), 0, nullptr, in.data(), offset, out.data());
    const std::vector<float> sums = out.download();
    for (int t = 0; t < 8; ++t) {
      const float first = static_cast<float>(offset + 4 * t);
      EXPECT_EQ(sums[t], 4 * first + 6) << "offset " << offset << " thread " << t;
    }
  }
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  EXPECT_TRUE(in.guards_intact() && out.guards_intact());
}

TEST_F(Alignment, VectorAccessPacksAreChecked) {
  GuardedDeviceBuffer<float> in(iota_floats(36)), out(32);
  EXPECT_EQ(
      coco::launch_named("pack_copy_kernel", pack_copy_kernel, dim3(1), dim3(8), 0, nullptr, in.data(), 2, out.data()),
      cudaErrorMisalignedAddress);
  const std::string message = emu::last_diagnostic();
  EXPECT_CONTAINS(message, "kernel pack_copy_kernel block (0,0,0) thread (");
  EXPECT_CONTAINS(message, "reference binding to 'const struct Pack'");
  EXPECT_CONTAINS(message, "vector_access.cuh:");
  emu::clear_sticky_error();
  COCO_LAUNCH(pack_copy_kernel, dim3(1), dim3(8), 0, nullptr, in.data(), 4, out.data());
  const std::vector<float> copied = out.download();
  for (int i = 0; i < 32; ++i) EXPECT_EQ(copied[i], static_cast<float>(i + 4)) << i;
}

TEST_F(Alignment, ScalarLoadsAndStoresAreChecked) {
  GuardedDeviceBuffer<char> in(16), out(16);
  EXPECT_EQ(coco::launch_named("scalar_access_kernel", scalar_access_kernel, dim3(1), dim3(1), 0, nullptr, in.data(), 2,
                               out.data(), 0),
            cudaErrorMisalignedAddress);
  EXPECT_CONTAINS(emu::last_diagnostic(), "misaligned address " + pointer_text(in.data() + 2) +
                                              ": load of 'const float' needs 4-byte alignment (the address is 2 "
                                              "bytes past a multiple of 4)");
  emu::clear_sticky_error();
  EXPECT_EQ(coco::launch_named("scalar_access_kernel", scalar_access_kernel, dim3(1), dim3(1), 0, nullptr, in.data(), 4,
                               out.data(), 4),
            cudaErrorMisalignedAddress);
  EXPECT_CONTAINS(emu::last_diagnostic(),
                  "misaligned address " + pointer_text(out.data() + 4) + ": store to 'double' needs 8-byte alignment");
  EXPECT_EQ(cudaGetLastError(), cudaErrorMisalignedAddress);
  emu::clear_sticky_error();
  COCO_LAUNCH(scalar_access_kernel, dim3(1), dim3(1), 0, nullptr, in.data(), 4, out.data(), 8);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
}

TEST_F(Alignment, SharedMemoryAccessesAreChecked) {
  GuardedDeviceBuffer<float> out(1);
  EXPECT_EQ(coco::launch_named("shared_float4_kernel", shared_float4_kernel, dim3(1), dim3(16), 16 * sizeof(float),
                               nullptr, 1, out.data()),
            cudaErrorMisalignedAddress);
  EXPECT_CONTAINS(emu::last_diagnostic(), "kernel shared_float4_kernel block (0,0,0) thread (0,0,0): misaligned");
  EXPECT_CONTAINS(emu::last_diagnostic(), "'const struct float4' needs 16-byte alignment");
  emu::clear_sticky_error();
  COCO_LAUNCH(shared_float4_kernel, dim3(1), dim3(16), 16 * sizeof(float), nullptr, 8, out.data());
  EXPECT_EQ(out.download()[0], 8.0f + 9.0f + 10.0f + 11.0f);
}

TEST_F(Alignment, AtomicsAreChecked) {
  GuardedDeviceBuffer<char> bytes(16);
  EXPECT_EQ(coco::launch_named("atomic_add_kernel", atomic_add_kernel, dim3(2), dim3(4), 0, nullptr, bytes.data(), 6),
            cudaErrorMisalignedAddress);
  EXPECT_CONTAINS(emu::last_diagnostic(), "misaligned address " + pointer_text(bytes.data() + 6) +
                                              ": atomicAdd needs 4-byte alignment (the address is 2 bytes past a "
                                              "multiple of 4) at test_alignment.cu:");
  EXPECT_EQ(cudaGetLastError(), cudaErrorMisalignedAddress);
  emu::clear_sticky_error();
  COCO_LAUNCH(atomic_add_kernel, dim3(2), dim3(4), 0, nullptr, bytes.data(), 12);
  const std::vector<char> raw = bytes.download();
  float sum;
  std::memcpy(&sum, raw.data() + 12, sizeof sum);
  EXPECT_EQ(sum, 8.0f);
}

TEST_F(Alignment, AGraphWithAMisalignedKernelFailsItsLaunch) {
  GuardedDeviceBuffer<float> in(iota_floats(40)), out(8);
  cudaStream_t stream = nullptr;
  COCO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int offset : {1, 0}) {
    COCO_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    // Recorded, not run: the capture itself succeeds.
    COCO_LAUNCH(float4_load_kernel, dim3(1), dim3(8), 0, stream, in.data(), offset, out.data());
    cudaGraph_t graph = nullptr;
    COCO_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec = nullptr;
    COCO_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    EXPECT_EQ(cudaGraphLaunch(exec, stream), offset == 1 ? cudaErrorMisalignedAddress : cudaSuccess) << offset;
    EXPECT_EQ(cudaGetLastError(), offset == 1 ? cudaErrorMisalignedAddress : cudaSuccess) << offset;
    if (offset == 1) {
      EXPECT_CONTAINS(emu::last_diagnostic(), "kernel float4_load_kernel block (0,0,0) thread (");
      // Sticky: the graph's next launch fails too, until the test starts over.
      EXPECT_EQ(cudaGraphLaunch(exec, stream), cudaErrorMisalignedAddress);
      emu::clear_sticky_error();
    }
    COCO_CUDA_CHECK(cudaGraphExecDestroy(exec));
    COCO_CUDA_CHECK(cudaGraphDestroy(graph));
  }
  COCO_CUDA_CHECK(cudaStreamDestroy(stream));
}

#endif  // COCO_CUDA_EMULATED

}  // namespace
