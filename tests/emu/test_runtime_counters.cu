// The runtime counters (engine/runtime/counters.h): each counted wrapper and COCO_LAUNCH moves
// exactly its counter, copies are classified by direction (cudaMemcpyDefault by where the pointers
// live), a GEMM is one library call (and the fused bias/GELU epilogue needs no kernel), a graph
// replay is one graph launch. (test_counted_call_sites.cpp checks that the sources use the wrappers.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/runtime/counters.h"
#include "engine/runtime/cuda_calls.h"
#include "engine/runtime/launch.cuh"
#include "kernels/matmul.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::runtime::Counters;
using coco::runtime::StepProfile;
namespace runtime = coco::runtime;

__global__ void increment_kernel(int* x) { atomicAdd(x, 1); }

TEST(RuntimeCounters, EachWrapperMovesItsCounter) {
  StepProfile profile;
  void* device = nullptr;
  void* pinned = nullptr;
  COCO_CUDA_CHECK(runtime::device_malloc(&device, 1024));
  COCO_CUDA_CHECK(runtime::host_malloc(&pinned, 1024));
  std::vector<char> host(1024);
  cudaStream_t stream = nullptr;
  COCO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  COCO_CUDA_CHECK(runtime::memcpy_async(device, host.data(), 100, cudaMemcpyHostToDevice, stream));
  COCO_CUDA_CHECK(runtime::memcpy_async(pinned, device, 200, cudaMemcpyDeviceToHost, stream));
  COCO_CUDA_CHECK(
      runtime::memcpy_async(static_cast<char*>(device) + 512, device, 300, cudaMemcpyDeviceToDevice, stream));
  // cudaMemcpyDefault: the direction comes from where the pointers live.
  COCO_CUDA_CHECK(runtime::memcpy_async(host.data(), device, 7, cudaMemcpyDefault, stream));
  COCO_CUDA_CHECK(runtime::memcpy_async(device, host.data(), 9, cudaMemcpyDefault, stream));
  COCO_CUDA_CHECK(runtime::memcpy_blocking(host.data(), device, 11, cudaMemcpyDeviceToHost));
  COCO_CUDA_CHECK(runtime::memset_async(device, 0, 64, stream));
  COCO_CUDA_CHECK(runtime::stream_synchronize(stream));
  COCO_CUDA_CHECK(runtime::device_synchronize());
  cudaEvent_t event = nullptr;
  COCO_CUDA_CHECK(cudaEventCreate(&event));
  COCO_CUDA_CHECK(cudaEventRecord(event, stream));
  COCO_CUDA_CHECK(runtime::event_synchronize(event));
  COCO_LAUNCH(increment_kernel, dim3(2), dim3(32), 0, stream, static_cast<int*>(device));
  runtime::count_library_call(runtime::LibraryCall::collective);
  COCO_CUDA_CHECK(runtime::device_free(device));
  COCO_CUDA_CHECK(runtime::host_free(pinned));

  Counters expected;
  expected.device_mallocs = expected.device_frees = 1;
  expected.host_allocs = 2;
  expected.h2d_copies = 2;
  expected.h2d_bytes = 109;
  expected.d2h_copies = 3;
  expected.d2h_bytes = 218;
  expected.d2d_copies = 1;
  expected.d2d_bytes = 300;
  expected.blocking_copies = 1;
  expected.memsets = 1;
  expected.stream_syncs = expected.device_syncs = expected.event_syncs = 1;
  expected.kernel_launches = 1;
  expected.collective_calls = 1;
  const Counters got = profile.elapsed();
  EXPECT_EQ(got, expected) << "got " << got.describe() << "\nexpected " << expected.describe();
  EXPECT_EQ(got.synchronizations(), 4u);
  EXPECT_EQ(got.launches(), 1u + 1u + 2u + 3u + 1u + 1u);
  profile.restart();
  EXPECT_EQ(profile.elapsed().describe(), "none");
  COCO_CUDA_CHECK(cudaEventDestroy(event));
  COCO_CUDA_CHECK(cudaStreamDestroy(stream));
}

// A GEMM is one library call; the linear forward with the fused GELU_AUX_BIAS epilogue launches no
// kernel, the unfused one launches the activation kernel after its GEMM.
TEST(RuntimeCounters, GemmsAreLibraryCalls) {
  using coco::kernels::Activation;
  const int64_t rows = 4, in = 8;
  coco::testing::GuardedDeviceBuffer<__nv_bfloat16> x(rows * in), W(16 * in), bias(16), y(rows * 16), pre(rows * 16);
  // Warm-up: the first GEMM on a stream allocates its cuBLASLt workspace.
  coco::kernels::cuda::gemm<__nv_bfloat16, __nv_bfloat16>(false, true, rows, 8, in, 1.0, x.data(), in, W.data(), in,
                                                          0.0, y.data(), 8, nullptr);
  StepProfile profile;
  coco::kernels::cuda::gemm<__nv_bfloat16, __nv_bfloat16>(false, true, rows, 8, in, 1.0, x.data(), in, W.data(), in,
                                                          0.0, y.data(), 8, nullptr);
  Counters step = profile.elapsed();
  EXPECT_EQ(step.gemm_calls, 1u);
  EXPECT_EQ(step.launches(), 1u) << step.describe();
  profile.restart();
  coco::kernels::cuda::linear_forward<__nv_bfloat16>(x.data(), W.data(), bias.data(), Activation::gelu_tanh, rows, in,
                                                     16, y.data(), pre.data(), nullptr);
  step = profile.elapsed();
  EXPECT_EQ(step.gemm_calls, 1u);
  EXPECT_EQ(step.kernel_launches, 0u) << "16-bit gelu_tanh with out % 8 == 0 runs in cuBLASLt's epilogue";
  profile.restart();
  coco::kernels::cuda::linear_forward<__nv_bfloat16>(x.data(), W.data(), bias.data(), Activation::gelu_erf, rows, in,
                                                     16, y.data(), pre.data(), nullptr);
  step = profile.elapsed();
  EXPECT_EQ(step.gemm_calls, 1u);
  EXPECT_EQ(step.kernel_launches, 1u) << "gelu_erf: GEMM with the bias epilogue, then the activation kernel";
  EXPECT_EQ(step.device_mallocs, 0u);
}

// A captured step costs one graph launch per replay, however many kernels it holds.
TEST(RuntimeCounters, GraphReplayIsOneLaunch) {
  coco::testing::GuardedDeviceBuffer<int> x(std::vector<int>{0});
  cudaStream_t stream = nullptr;
  COCO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  for (int i = 0; i < 5; ++i) COCO_LAUNCH(increment_kernel, dim3(1), dim3(1), 0, stream, x.data());
  cudaGraph_t graph = nullptr;
  COCO_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec = nullptr;
  COCO_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  StepProfile profile;
  COCO_CUDA_CHECK(runtime::graph_launch(exec, stream));
  const Counters step = profile.elapsed();
  EXPECT_EQ(step.graph_launches, 1u);
  EXPECT_EQ(step.kernel_launches, 0u);
  EXPECT_EQ(x.download(), std::vector<int>{5});
  COCO_CUDA_CHECK(cudaGraphExecDestroy(exec));
  COCO_CUDA_CHECK(cudaGraphDestroy(graph));
  COCO_CUDA_CHECK(cudaStreamDestroy(stream));
}

}  // namespace
