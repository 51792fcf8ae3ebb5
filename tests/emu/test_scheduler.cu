// The emulator's scheduler: the configured schedules really change the interleaving, the fast path
// never does, and crashes inside a kernel name the emulated thread. Emulated mode only (on a GPU
// the interleaving is the hardware's), except that the kernels compile with nvcc.
#include <gtest/gtest.h>

#include <vector>

#include "engine/runtime/launch.cuh"
#include "tests/common/kernel_check.h"
#if defined(COCO_CUDA_EMULATED)
#include "engine/simt/emu_control.h"
#endif

// External linkage: on a GPU build the tests using them are compiled out (no "unused" warning).
namespace emu_scheduler_test {

// Appends (phase * 1000 + thread) to trace at each step; some threads exit early, the others pass a
// block barrier and two warp operations. trace: (3 * blockDim.x), counter: (1)
__global__ void trace_kernel(int* trace, int* counter) {
  const int t = threadIdx.x;
  trace[atomicAdd(counter, 1)] = t;
  if (t % 7 == 3) return;
  __syncthreads();
  trace[atomicAdd(counter, 1)] = 1000 + t;
  const unsigned alive = __ballot_sync(0xffffffffu, 1);
  const int total = __reduce_add_sync(alive, t);
  trace[atomicAdd(counter, 1)] = 2000 + (total >= 0 ? t : 0);
}

__global__ void barrier_free_kernel(float* y, const float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = 2.0f * x[i];
}

}  // namespace emu_scheduler_test

namespace {

using coco::testing::GuardedDeviceBuffer;
using namespace emu_scheduler_test;

#if defined(COCO_CUDA_EMULATED)
constexpr int kTraceThreads = 96;

std::vector<int> run_trace(emu::Schedule schedule, uint32_t seed, bool fast_path) {
  emu::ScopedSchedule scope(schedule, seed);
  emu::config().fast_path = fast_path;
  GuardedDeviceBuffer<int> trace(3 * kTraceThreads), counter(1);
  COCO_LAUNCH(trace_kernel, dim3(1), dim3(kTraceThreads), 0, nullptr, trace.data(), counter.data());
  std::vector<int> r = trace.download();
  r.resize(static_cast<size_t>(counter.download()[0]));
  return r;
}

TEST(Scheduler, SchedulesChangeTheOrderReproduciblyAndTheFastPathNever) {
  const std::vector<int> forward = run_trace(emu::Schedule::Forward, 1, true);
  const std::vector<int> reverse = run_trace(emu::Schedule::Reverse, 1, true);
  const std::vector<int> random1 = run_trace(emu::Schedule::Random, 1, true);
  const std::vector<int> random2 = run_trace(emu::Schedule::Random, 2, true);
  const int exited = (kTraceThreads + 3) / 7;  // t % 7 == 3
  ASSERT_EQ(forward.size(), static_cast<size_t>(kTraceThreads + 2 * (kTraceThreads - exited)));
  for (int t = 0; t < kTraceThreads; ++t) {
    EXPECT_EQ(forward[t], t);
    EXPECT_EQ(reverse[t], kTraceThreads - 1 - t);
  }
  EXPECT_NE(random1, forward);
  EXPECT_NE(random1, reverse);
  EXPECT_NE(random1, random2);
  EXPECT_EQ(random1, run_trace(emu::Schedule::Random, 1, true));  // reproducible
  // The fast path changes the stacks, never the order of execution.
  EXPECT_EQ(forward, run_trace(emu::Schedule::Forward, 1, false));
  EXPECT_EQ(reverse, run_trace(emu::Schedule::Reverse, 1, false));
  EXPECT_EQ(random1, run_trace(emu::Schedule::Random, 1, false));
  EXPECT_EQ(random2, run_trace(emu::Schedule::Random, 2, false));
}

TEST(Scheduler, FastPathRunsBarrierFreeBlocksWithoutPerThreadSwitches) {
  const int blocks = 4, threads = 256, n = blocks * threads;
  GuardedDeviceBuffer<float> x(coco::testing::random_floats(n, 41)), y(n);
  emu::Stats& s = emu::stats();
  for (const bool fast_path : {true, false}) {
    emu::ScopedConfig scope;
    scope->fast_path = fast_path;
    const uint64_t switches = s.fiber_switches, executed = s.threads, launches = s.launches;
    COCO_LAUNCH(barrier_free_kernel, dim3(blocks), dim3(threads), 0, nullptr, y.data(), x.data(), n);
    EXPECT_EQ(s.launches - launches, 1u);
    EXPECT_EQ(s.threads - executed, static_cast<uint64_t>(n));
    if (fast_path)
      EXPECT_EQ(s.fiber_switches - switches, static_cast<uint64_t>(blocks));
    else
      EXPECT_EQ(s.fiber_switches - switches, static_cast<uint64_t>(n));
  }
  const std::vector<float> xs = x.download(), ys = y.download();
  for (int i = 0; i < n; ++i) ASSERT_EQ(ys[i], 2.0f * xs[i]);
}

// Recursion deep enough to run off a 64 KB fiber stack.
__device__ int deep_recursion(volatile char* sink, int depth) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(depth);
  frame[1023] = frame[0];
  return depth == 0 ? *sink : deep_recursion(sink, depth - 1) + frame[1023];
}

__global__ void deep_recursion_kernel(int* out) {
  char sink = 1;
  out[threadIdx.x] = deep_recursion(&sink, 1 << 20);
}

TEST(Scheduler, StackOverflowNamesTheEmulatedThread) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        GuardedDeviceBuffer<int> out(1);
        COCO_LAUNCH(deep_recursion_kernel, dim3(1), dim3(1), 0, nullptr, out.data());
      },
      "stack.overflow[^\\n]*\\n?[^\\n]*kernel deep_recursion_kernel block \\(0,0,0\\) thread \\(0,0,0\\)|"
      "kernel deep_recursion_kernel block \\(0,0,0\\) thread \\(0,0,0\\)");
}

#if defined(__SANITIZE_ADDRESS__)
__global__ void out_of_bounds_kernel(float* y, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) y[i] = 1.0f;  // off by one: thread (7,0,0) of block (1,0,0) writes y[n]
}

TEST(Scheduler, AddressSanitizerReportNamesTheEmulatedThread) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* y = nullptr;
        COCO_CUDA_CHECK(cudaMalloc(&y, 39 * sizeof(float)));
        COCO_LAUNCH(out_of_bounds_kernel, dim3(2), dim3(32), 0, nullptr, y, 39);
      },
      "heap-buffer-overflow(.|\\n)*kernel out_of_bounds_kernel block \\(1,0,0\\) thread \\(7,0,0\\)");
}
#endif
#endif  // COCO_CUDA_EMULATED

}  // namespace
