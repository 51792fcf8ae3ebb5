// Misuse detection: divergent __syncthreads, warp-synchronous deadlocks and shuffles outside their
// mask are diagnosed with the kernel, block and thread. Strict mode (the default) aborts; with
// strict = false the emulator warns, counts and carries on. Emulated mode only: on a GPU these
// kernels hang or read garbage, so the test bodies are compiled out there.
#include <gtest/gtest.h>

#include <string>

#include "engine/runtime/launch.cuh"
#include "tests/common/kernel_check.h"
#if defined(COCO_CUDA_EMULATED)
#include "engine/simt/emu_control.h"
#endif

// The kernels have external linkage: on a GPU build (where the tests are compiled out) nvcc would
// otherwise warn that they are unused.
namespace emu_misuse_test {

// Block 3, thread 5 takes a different __syncthreads() than everyone else.
__global__ void divergent_barrier_kernel(int* out) {
  if (blockIdx.x == 3 && threadIdx.x == 5) {
    __syncthreads();
    out[blockIdx.x] = 1;
  } else {
    __syncthreads();
  }
}

// Lanes 0..15 wait for the whole block while lanes 16..31 wait for the whole warp.
__global__ void warp_deadlock_kernel(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x % 32 < 16)
    __syncthreads();
  else
    v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

// Lanes 0..15 shuffle among themselves but read lane 16, which is outside the mask.
__global__ void shuffle_outside_mask_kernel(float* out) {
  float v = static_cast<float>(threadIdx.x);
  if (threadIdx.x < 16) v = __shfl_sync(0x0000ffffu, v, 16);
  out[threadIdx.x] = v;
}

// A barrier after an early exit of some threads is fine (exited threads count as arrived).
__global__ void early_exit_kernel(int* out) {
  if (threadIdx.x >= 40) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

}  // namespace emu_misuse_test

namespace {

using coco::testing::GuardedDeviceBuffer;
using namespace emu_misuse_test;

#if defined(COCO_CUDA_EMULATED)

class Misuse : public ::testing::Test {
 protected:
  void SetUp() override { GTEST_FLAG_SET(death_test_style, "threadsafe"); }
};

TEST_F(Misuse, DivergentBarrierWarnsWithKernelBlockAndThread) {
  emu::ScopedConfig scope;
  scope->strict = false;
  GuardedDeviceBuffer<int> out(4);
  const uint64_t warnings = emu::stats().warnings;
  COCO_LAUNCH(divergent_barrier_kernel, dim3(4), dim3(32), 0, nullptr, out.data());
  EXPECT_EQ(emu::stats().warnings - warnings, 1u);
  const std::string message = emu::last_diagnostic();
  EXPECT_NE(message.find("kernel divergent_barrier_kernel block (3,0,0) thread (5,0,0): divergent barrier"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("test_misuse.cu:"), std::string::npos) << message;
}

TEST_F(Misuse, DivergentBarrierAbortsInStrictMode) {
  EXPECT_DEATH(
      {
        emu::config().strict = true;
        GuardedDeviceBuffer<int> out(4);
        (void)coco::launch_named("divergent_barrier_kernel", divergent_barrier_kernel, dim3(4), dim3(32), 0, nullptr,
                                 out.data());
      },
      "kernel divergent_barrier_kernel block \\(3,0,0\\) thread \\(5,0,0\\): divergent barrier");
}

TEST_F(Misuse, WarpSyncDeadlockIsDiagnosedThenBroken) {
  emu::ScopedConfig scope;
  scope->strict = false;
  GuardedDeviceBuffer<float> out(64);
  const uint64_t warnings = emu::stats().warnings;
  COCO_LAUNCH(warp_deadlock_kernel, dim3(1), dim3(64), 0, nullptr, out.data());  // returns instead of hanging
  EXPECT_GE(emu::stats().warnings - warnings, 1u);
  const std::string message = emu::last_diagnostic();
  EXPECT_NE(message.find("kernel warp_deadlock_kernel block (0,0,0) thread ("), std::string::npos) << message;
  EXPECT_NE(message.find("deadlock: __shfl_xor_sync"), std::string::npos) << message;
  EXPECT_NE(message.find("waiting at __syncthreads()"), std::string::npos) << message;
}

TEST_F(Misuse, WarpSyncDeadlockAbortsInStrictMode) {
  EXPECT_DEATH(
      {
        emu::config().strict = true;
        GuardedDeviceBuffer<float> out(64);
        COCO_LAUNCH(warp_deadlock_kernel, dim3(1), dim3(64), 0, nullptr, out.data());
      },
      "kernel warp_deadlock_kernel block \\(0,0,0\\) thread \\(16,0,0\\): deadlock: __shfl_xor_sync");
}

TEST_F(Misuse, ShuffleFromALaneOutsideTheMaskIsReported) {
  emu::ScopedConfig scope;
  scope->strict = false;
  GuardedDeviceBuffer<float> out(32);
  const uint64_t warnings = emu::stats().warnings;
  COCO_LAUNCH(shuffle_outside_mask_kernel, dim3(1), dim3(32), 0, nullptr, out.data());
  EXPECT_EQ(emu::stats().warnings - warnings, 16u);  // every reading lane
  EXPECT_NE(emu::last_diagnostic().find("reads lane 16, which is not in the mask"), std::string::npos)
      << emu::last_diagnostic();
}

TEST_F(Misuse, EarlyExitBeforeABarrierIsNotMisuse) {
  GuardedDeviceBuffer<int> out(64);
  const uint64_t warnings = emu::stats().warnings;
  COCO_LAUNCH(early_exit_kernel, dim3(2), dim3(64), 0, nullptr, out.data());
  EXPECT_EQ(emu::stats().warnings, warnings);
  const std::vector<int> r = out.download();
  for (int t = 0; t < 64; ++t) EXPECT_EQ(r[t], t < 40 ? 1 : 0) << t;
}

#endif  // COCO_CUDA_EMULATED

}  // namespace
