// Stream capture and CUDA graphs: kernels, copies, memsets and cuBLASLt GEMMs captured into a graph
// run only when it is launched, as often as it is launched, with the arguments of the capture;
// fork/join across streams through events; and the rules of capture with CUDA's error codes and
// invalidation (synchronous calls, synchronisation, cudaMalloc in global mode, captured events, the
// legacy stream next to a blocking capture, unjoined forks, merges, isolation, wrong stream or
// thread at the end).
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "engine/runtime/launch.cuh"
#include "kernels/matmul.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::testing::GuardedDeviceBuffer;

__global__ void add_kernel(float* x, float value, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] += value;
}

__global__ void scale_kernel(float* x, float factor, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) x[i] *= factor;
}

// Streams and events that clean up after a failing assertion.
struct Stream {
  cudaStream_t s = nullptr;
  explicit Stream(unsigned flags = cudaStreamNonBlocking) { COCO_CUDA_CHECK(cudaStreamCreateWithFlags(&s, flags)); }
  ~Stream() {
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(s, &status) == cudaSuccess && status != cudaStreamCaptureStatusNone) {
      cudaGraph_t g = nullptr;
      if (cudaStreamEndCapture(s, &g) == cudaSuccess && g) (void)cudaGraphDestroy(g);
    }
    (void)cudaStreamDestroy(s);
    (void)cudaGetLastError();
  }
};
struct Event {
  cudaEvent_t e = nullptr;
  Event() { COCO_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming)); }
  ~Event() { (void)cudaEventDestroy(e); }
};
struct Graph {
  cudaGraph_t g = nullptr;
  Graph() = default;
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph() {
    if (g) (void)cudaGraphDestroy(g);
  }
};
struct Exec {
  cudaGraphExec_t e = nullptr;
  Exec() = default;
  Exec(const Exec&) = delete;
  Exec& operator=(const Exec&) = delete;
  ~Exec() {
    if (e) (void)cudaGraphExecDestroy(e);
  }
};

cudaStreamCaptureStatus capture_status(cudaStream_t s) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  COCO_CUDA_CHECK(cudaStreamIsCapturing(s, &status));
  return status;
}

std::vector<cudaGraphNodeType> node_types(cudaGraph_t g) {
  size_t count = 0;
  COCO_CUDA_CHECK(cudaGraphGetNodes(g, nullptr, &count));
  std::vector<cudaGraphNode_t> nodes(count);
  COCO_CUDA_CHECK(cudaGraphGetNodes(g, nodes.data(), &count));
  std::vector<cudaGraphNodeType> types;
  for (cudaGraphNode_t n : nodes) {
    cudaGraphNodeType t;
    COCO_CUDA_CHECK(cudaGraphNodeGetType(n, &t));
    types.push_back(t);
  }
  return types;
}

TEST(Graphs, CapturedWorkRunsOnlyWhenLaunchedWithTheCapturedArguments) {
  const int n = 100;
  GuardedDeviceBuffer<float> x(std::vector<float>(n, 1.0f)), y(n);
  Stream stream;
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal));
  EXPECT_EQ(capture_status(stream.s), cudaStreamCaptureStatusActive);
  float value = 2.0f;
  COCO_LAUNCH(add_kernel, dim3(4), dim3(32), 0, stream.s, x.data(), value, n);
  value = 100.0f;  // the graph keeps the argument of the capture
  COCO_LAUNCH(scale_kernel, dim3(4), dim3(32), 0, stream.s, x.data(), 3.0f, n);
  COCO_CUDA_CHECK(cudaMemcpyAsync(y.data(), x.data(), n * sizeof(float), cudaMemcpyDeviceToDevice, stream.s));
  COCO_CUDA_CHECK(cudaMemsetAsync(x.data(), 0, sizeof(float), stream.s));
  Graph graph;
  COCO_CUDA_CHECK(cudaStreamEndCapture(stream.s, &graph.g));
  ASSERT_NE(graph.g, nullptr);
  EXPECT_EQ(capture_status(stream.s), cudaStreamCaptureStatusNone);
  EXPECT_EQ(node_types(graph.g), (std::vector<cudaGraphNodeType>{cudaGraphNodeTypeKernel, cudaGraphNodeTypeKernel,
                                                                 cudaGraphNodeTypeMemcpy, cudaGraphNodeTypeMemset}));
  // Nothing ran during the capture.
  EXPECT_EQ(x.download(), std::vector<float>(n, 1.0f));
  Exec exec;
  COCO_CUDA_CHECK(cudaGraphInstantiate(&exec.e, graph.g, 0));
  COCO_CUDA_CHECK(cudaGraphDestroy(graph.g));  // the executable graph outlives its graph
  graph.g = nullptr;
  COCO_CUDA_CHECK(cudaGraphLaunch(exec.e, stream.s));
  COCO_CUDA_CHECK(cudaStreamSynchronize(stream.s));
  std::vector<float> expected_y(n, 9.0f), expected_x(n, 9.0f);  // (1 + 2) * 3
  expected_x[0] = 0.0f;
  EXPECT_EQ(y.download(), expected_y);
  EXPECT_EQ(x.download(), expected_x);
  COCO_CUDA_CHECK(cudaGraphLaunch(exec.e, stream.s));  // each launch replays it: (x + 2) * 3
  COCO_CUDA_CHECK(cudaStreamSynchronize(stream.s));
  expected_y.assign(n, 33.0f);
  expected_y[0] = 6.0f;
  EXPECT_EQ(y.download(), expected_y);
}

// A GEMM through cuBLASLt is captured like a kernel and reads its inputs when the graph runs.
TEST(Graphs, CapturedGemmReadsItsInputsAtLaunch) {
  const int64_t m = 3, n = 2, k = 4;
  GuardedDeviceBuffer<float> A(std::vector<float>(m * k, 1.0f)), B(std::vector<float>(k * n, 1.0f)), C(m * n);
  Stream stream;
  // Warm-up outside the capture: the per-stream workspace is a cudaMalloc, which capture forbids.
  coco::kernels::cuda::gemm<float, float>(false, false, m, n, k, 1.0, A.data(), k, B.data(), n, 0.0, C.data(), n,
                                          stream.s);
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal));
  coco::kernels::cuda::gemm<float, float>(false, false, m, n, k, 1.0, A.data(), k, B.data(), n, 0.0, C.data(), n,
                                          stream.s);
  Graph graph;
  COCO_CUDA_CHECK(cudaStreamEndCapture(stream.s, &graph.g));
  EXPECT_EQ(node_types(graph.g), (std::vector<cudaGraphNodeType>{cudaGraphNodeTypeKernel}));
  A.upload(std::vector<float>(m * k, 2.0f));
  C.poison();
  Exec exec;
  COCO_CUDA_CHECK(cudaGraphInstantiate(&exec.e, graph.g, 0));
  COCO_CUDA_CHECK(cudaGraphLaunch(exec.e, stream.s));
  COCO_CUDA_CHECK(cudaStreamSynchronize(stream.s));
  EXPECT_EQ(C.download(), std::vector<float>(m * n, 8.0f));
}

TEST(Graphs, ForkAndJoinThroughEvents) {
  const int n = 64;
  GuardedDeviceBuffer<float> a(std::vector<float>(n, 1.0f)), b(std::vector<float>(n, 1.0f));
  Stream origin, side;
  Event fork, join;
  COCO_CUDA_CHECK(cudaStreamBeginCapture(origin.s, cudaStreamCaptureModeGlobal));
  COCO_LAUNCH(add_kernel, dim3(2), dim3(32), 0, origin.s, a.data(), 1.0f, n);
  COCO_CUDA_CHECK(cudaEventRecord(fork.e, origin.s));
  COCO_CUDA_CHECK(cudaStreamWaitEvent(side.s, fork.e, 0));  // side joins the capture
  EXPECT_EQ(capture_status(side.s), cudaStreamCaptureStatusActive);
  COCO_LAUNCH(add_kernel, dim3(2), dim3(32), 0, side.s, b.data(), 5.0f, n);
  COCO_LAUNCH(scale_kernel, dim3(2), dim3(32), 0, origin.s, a.data(), 2.0f, n);
  COCO_CUDA_CHECK(cudaEventRecord(join.e, side.s));
  COCO_CUDA_CHECK(cudaStreamWaitEvent(origin.s, join.e, 0));
  COCO_LAUNCH(add_kernel, dim3(2), dim3(32), 0, origin.s, a.data(), 10.0f, n);
  // The next node of the origin depends on both branches.
  const cudaGraphNode_t* dependencies = nullptr;
  size_t count = 0;
  cudaStreamCaptureStatus status;
  unsigned long long id = 0;
  COCO_CUDA_CHECK(cudaStreamGetCaptureInfo(origin.s, &status, &id, nullptr, &dependencies, nullptr, &count));
  EXPECT_EQ(status, cudaStreamCaptureStatusActive);
  EXPECT_EQ(count, 1u);
  EXPECT_NE(id, 0u);
  Graph graph;
  COCO_CUDA_CHECK(cudaStreamEndCapture(origin.s, &graph.g));
  EXPECT_EQ(capture_status(side.s), cudaStreamCaptureStatusNone);
  size_t nodes = 0;
  COCO_CUDA_CHECK(cudaGraphGetNodes(graph.g, nullptr, &nodes));
  EXPECT_EQ(nodes, 4u);
  EXPECT_EQ(a.download(), std::vector<float>(n, 1.0f));
  Exec exec;
  COCO_CUDA_CHECK(cudaGraphInstantiate(&exec.e, graph.g, 0));
  COCO_CUDA_CHECK(cudaGraphLaunch(exec.e, origin.s));
  COCO_CUDA_CHECK(cudaStreamSynchronize(origin.s));
  EXPECT_EQ(a.download(), std::vector<float>(n, 14.0f));  // (1 + 1) * 2 + 10
  EXPECT_EQ(b.download(), std::vector<float>(n, 6.0f));
}

TEST(Graphs, UnjoinedForkFailsTheCapture) {
  GuardedDeviceBuffer<float> a(32);
  Stream origin, side;
  Event fork;
  COCO_CUDA_CHECK(cudaStreamBeginCapture(origin.s, cudaStreamCaptureModeGlobal));
  COCO_CUDA_CHECK(cudaEventRecord(fork.e, origin.s));
  COCO_CUDA_CHECK(cudaStreamWaitEvent(side.s, fork.e, 0));
  COCO_LAUNCH(add_kernel, dim3(1), dim3(32), 0, side.s, a.data(), 1.0f, 32);
  // Ending on the forked stream is not allowed either.
  cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&graph);
  EXPECT_EQ(cudaStreamEndCapture(side.s, &graph), cudaErrorStreamCaptureUnmatched);
  (void)cudaGetLastError();
  EXPECT_EQ(cudaStreamEndCapture(origin.s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);
  (void)cudaGetLastError();

  COCO_CUDA_CHECK(cudaStreamBeginCapture(origin.s, cudaStreamCaptureModeGlobal));
  COCO_CUDA_CHECK(cudaEventRecord(fork.e, origin.s));
  COCO_CUDA_CHECK(cudaStreamWaitEvent(side.s, fork.e, 0));
  COCO_LAUNCH(add_kernel, dim3(1), dim3(32), 0, side.s, a.data(), 1.0f, 32);
  EXPECT_EQ(cudaStreamEndCapture(origin.s, &graph), cudaErrorStreamCaptureUnjoined);
  EXPECT_EQ(graph, nullptr);
  EXPECT_EQ(capture_status(side.s), cudaStreamCaptureStatusNone);
  (void)cudaGetLastError();
}

// Each rule: the call fails with CUDA's code, the capture is invalidated (later work on it and
// cudaStreamEndCapture report cudaErrorStreamCaptureInvalidated, with a null graph), and the stream
// works normally once the capture has ended.
void expect_invalidates(const char* what, cudaError_t expected, const std::function<cudaError_t(cudaStream_t)>& call,
                        unsigned stream_flags = cudaStreamNonBlocking) {
  SCOPED_TRACE(what);
  GuardedDeviceBuffer<float> x(std::vector<float>(32, 1.0f));
  Stream stream(stream_flags);
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal));
  COCO_LAUNCH(add_kernel, dim3(1), dim3(32), 0, stream.s, x.data(), 1.0f, 32);
  EXPECT_EQ(call(stream.s), expected);
  EXPECT_EQ(cudaGetLastError(), expected);
  EXPECT_EQ(capture_status(stream.s), cudaStreamCaptureStatusInvalidated);
  EXPECT_EQ(coco::launch(add_kernel, dim3(1), dim3(32), 0, stream.s, x.data(), 1.0f, 32),
            cudaErrorStreamCaptureInvalidated);
  cudaGraph_t graph = reinterpret_cast<cudaGraph_t>(&graph);
  EXPECT_EQ(cudaStreamEndCapture(stream.s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(graph, nullptr);
  (void)cudaGetLastError();
  EXPECT_EQ(capture_status(stream.s), cudaStreamCaptureStatusNone);
  COCO_LAUNCH(add_kernel, dim3(1), dim3(32), 0, stream.s, x.data(), 1.0f, 32);
  COCO_CUDA_CHECK(cudaStreamSynchronize(stream.s));
  EXPECT_EQ(x.download(), std::vector<float>(32, 2.0f));  // the captured launches never ran
}

TEST(Graphs, CaptureRejectsWhatRealCaptureRejects) {
  GuardedDeviceBuffer<float> device(32);
  std::vector<float> host(32);
  expect_invalidates("cudaStreamSynchronize", cudaErrorStreamCaptureUnsupported, cudaStreamSynchronize);
  expect_invalidates("cudaStreamQuery", cudaErrorStreamCaptureUnsupported, cudaStreamQuery);
  expect_invalidates("cudaDeviceSynchronize", cudaErrorStreamCaptureUnsupported,
                     [](cudaStream_t) { return cudaDeviceSynchronize(); });
  expect_invalidates("cudaMalloc", cudaErrorStreamCaptureUnsupported, [](cudaStream_t) {
    void* p = nullptr;
    return cudaMalloc(&p, 256);
  });
  void* allocation = nullptr;
  COCO_CUDA_CHECK(cudaMalloc(&allocation, 256));
  expect_invalidates("cudaFree", cudaErrorStreamCaptureUnsupported, [&](cudaStream_t) { return cudaFree(allocation); });
  COCO_CUDA_CHECK(cudaFree(allocation));  // refused inside the capture, so still live
  expect_invalidates("cudaMallocHost", cudaErrorStreamCaptureUnsupported, [](cudaStream_t) {
    void* p = nullptr;
    return cudaMallocHost(&p, 256);
  });
  expect_invalidates("synchronous cudaMemcpy", cudaErrorStreamCaptureUnsupported,
                     [&](cudaStream_t) { return cudaMemcpy(host.data(), device.data(), 128, cudaMemcpyDeviceToHost); });
  expect_invalidates("synchronous cudaMemset", cudaErrorStreamCaptureUnsupported,
                     [&](cudaStream_t) { return cudaMemset(device.data(), 0, 128); });
  expect_invalidates("a launch configuration error", cudaErrorInvalidConfiguration, [&](cudaStream_t s) {
    return coco::launch(add_kernel, dim3(1), dim3(2048), 0, s, device.data(), 1.0f, 32);
  });
  expect_invalidates("a query of an event recorded in the capture", cudaErrorCapturedEvent, [](cudaStream_t s) {
    static Event event;
    COCO_CUDA_CHECK(cudaEventRecord(event.e, s));
    return cudaEventQuery(event.e);
  });
  expect_invalidates("waiting on an event recorded outside the capture", cudaErrorStreamCaptureIsolation,
                     [](cudaStream_t s) {
                       static Event event;
                       COCO_CUDA_CHECK(cudaEventRecord(event.e, nullptr));
                       return cudaStreamWaitEvent(s, event.e, 0);
                     });
  // A blocking capturing stream makes the legacy stream unusable.
  expect_invalidates(
      "the legacy stream during a blocking capture", cudaErrorStreamCaptureImplicit,
      [&](cudaStream_t) { return coco::launch(add_kernel, dim3(1), dim3(32), 0, nullptr, device.data(), 1.0f, 32); },
      cudaStreamDefault);
}

TEST(Graphs, CaptureModesDecideWhichThreadsMayMakeUnsafeCalls) {
  Stream stream;
  void* p = nullptr;
  // Relaxed capture: cudaMalloc is allowed and the capture stays valid.
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeRelaxed));
  COCO_CUDA_CHECK(cudaMalloc(&p, 256));
  COCO_CUDA_CHECK(cudaFree(p));
  EXPECT_EQ(capture_status(stream.s), cudaStreamCaptureStatusActive);
  Graph relaxed;
  COCO_CUDA_CHECK(cudaStreamEndCapture(stream.s, &relaxed.g));

  // Global capture: a relaxed thread mode lifts the restriction for this thread.
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal));
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  COCO_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  EXPECT_EQ(mode, cudaStreamCaptureModeGlobal);
  COCO_CUDA_CHECK(cudaMalloc(&p, 256));
  COCO_CUDA_CHECK(cudaFree(p));
  COCO_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&mode));
  // Another thread in global mode may not; one in thread-local mode may.
  cudaError_t global_thread = cudaSuccess, local_thread = cudaErrorUnknown;
  std::thread([&] {
    void* q = nullptr;
    cudaStreamCaptureMode local = cudaStreamCaptureModeThreadLocal;
    COCO_CUDA_CHECK(cudaThreadExchangeStreamCaptureMode(&local));
    local_thread = cudaMalloc(&q, 256);
    if (q) COCO_CUDA_CHECK(cudaFree(q));
  }).join();
  EXPECT_EQ(local_thread, cudaSuccess);
  EXPECT_EQ(capture_status(stream.s), cudaStreamCaptureStatusActive);
  std::thread([&] {
    void* q = nullptr;
    global_thread = cudaMalloc(&q, 256);
    (void)cudaGetLastError();
  }).join();
  EXPECT_EQ(global_thread, cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(capture_status(stream.s), cudaStreamCaptureStatusInvalidated);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream.s, &graph), cudaErrorStreamCaptureInvalidated);
  (void)cudaGetLastError();

  // Thread-local capture ended from another thread.
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeThreadLocal));
  cudaError_t ended = cudaSuccess;
  std::thread([&] {
    cudaGraph_t g = nullptr;
    ended = cudaStreamEndCapture(stream.s, &g);
    (void)cudaGetLastError();
  }).join();
  EXPECT_EQ(ended, cudaErrorStreamCaptureWrongThread);
}

TEST(Graphs, CaptureBeginAndEndArguments) {
  Stream stream, other;
  EXPECT_EQ(cudaStreamBeginCapture(nullptr, cudaStreamCaptureModeGlobal), cudaErrorStreamCaptureUnsupported);
  EXPECT_EQ(cudaStreamBeginCapture(stream.s, static_cast<cudaStreamCaptureMode>(7)), cudaErrorInvalidValue);
  cudaGraph_t graph = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(stream.s, &graph), cudaErrorIllegalState);
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal));
  EXPECT_EQ(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal), cudaErrorIllegalState);
  EXPECT_EQ(cudaStreamEndCapture(stream.s, nullptr), cudaErrorInvalidValue);
  // Merging two captures through an event.
  COCO_CUDA_CHECK(cudaStreamBeginCapture(other.s, cudaStreamCaptureModeGlobal));
  Event event;
  COCO_CUDA_CHECK(cudaEventRecord(event.e, stream.s));
  EXPECT_EQ(cudaStreamWaitEvent(other.s, event.e, 0), cudaErrorStreamCaptureMerge);
  EXPECT_EQ(capture_status(stream.s), cudaStreamCaptureStatusInvalidated);
  EXPECT_EQ(capture_status(other.s), cudaStreamCaptureStatusInvalidated);
  EXPECT_EQ(cudaStreamEndCapture(other.s, &graph), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(cudaStreamEndCapture(stream.s, &graph), cudaErrorStreamCaptureInvalidated);
  // The event still belongs to the ended capture.
  EXPECT_EQ(cudaEventSynchronize(event.e), cudaErrorCapturedEvent);
  COCO_CUDA_CHECK(cudaEventRecord(event.e, stream.s));
  COCO_CUDA_CHECK(cudaEventSynchronize(event.e));
  (void)cudaGetLastError();
  // The legacy stream's capture status while a blocking stream captures is an error, without
  // invalidating the capture.
  Stream blocking(cudaStreamDefault);
  COCO_CUDA_CHECK(cudaStreamBeginCapture(blocking.s, cudaStreamCaptureModeGlobal));
  cudaStreamCaptureStatus status;
  EXPECT_EQ(cudaStreamIsCapturing(nullptr, &status), cudaErrorStreamCaptureImplicit);
  EXPECT_EQ(capture_status(blocking.s), cudaStreamCaptureStatusActive);
  Graph empty;
  COCO_CUDA_CHECK(cudaStreamEndCapture(blocking.s, &empty.g));
  EXPECT_TRUE(node_types(empty.g).empty());
  (void)cudaGetLastError();
}

// A graph launched into a capture becomes one node of the outer graph; external event records and
// waits become nodes too.
TEST(Graphs, NestedGraphsAndExternalEventNodes) {
  const int n = 32;
  GuardedDeviceBuffer<float> x(std::vector<float>(n, 0.0f));
  Stream stream;
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal));
  COCO_LAUNCH(add_kernel, dim3(1), dim3(32), 0, stream.s, x.data(), 1.0f, n);
  Graph inner;
  COCO_CUDA_CHECK(cudaStreamEndCapture(stream.s, &inner.g));
  Exec inner_exec;
  COCO_CUDA_CHECK(cudaGraphInstantiate(&inner_exec.e, inner.g, 0));

  Event outside, stamp;
  COCO_CUDA_CHECK(cudaEventRecord(outside.e, stream.s));
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream.s, cudaStreamCaptureModeGlobal));
  COCO_CUDA_CHECK(cudaStreamWaitEvent(stream.s, outside.e, cudaEventWaitExternal));
  COCO_CUDA_CHECK(cudaGraphLaunch(inner_exec.e, stream.s));
  COCO_CUDA_CHECK(cudaGraphLaunch(inner_exec.e, stream.s));
  COCO_CUDA_CHECK(cudaEventRecordWithFlags(stamp.e, stream.s, cudaEventRecordExternal));
  Graph outer;
  COCO_CUDA_CHECK(cudaStreamEndCapture(stream.s, &outer.g));
  EXPECT_EQ(node_types(outer.g),
            (std::vector<cudaGraphNodeType>{cudaGraphNodeTypeWaitEvent, cudaGraphNodeTypeGraph, cudaGraphNodeTypeGraph,
                                            cudaGraphNodeTypeEventRecord}));
  EXPECT_EQ(x.download(), std::vector<float>(n, 0.0f));
  Exec outer_exec;
  COCO_CUDA_CHECK(cudaGraphInstantiate(&outer_exec.e, outer.g, 0));
  COCO_CUDA_CHECK(cudaGraphLaunch(outer_exec.e, stream.s));
  COCO_CUDA_CHECK(cudaStreamSynchronize(stream.s));
  EXPECT_EQ(x.download(), std::vector<float>(n, 2.0f));
  COCO_CUDA_CHECK(cudaEventSynchronize(stamp.e));  // stamped by the replay
  // Handles that are not graphs.
  EXPECT_EQ(cudaGraphLaunch(nullptr, stream.s), cudaErrorInvalidValue);
  EXPECT_EQ(cudaGraphInstantiate(&inner_exec.e, nullptr, 0), cudaErrorInvalidValue);
  (void)cudaGetLastError();
}

#if defined(COCO_CUDA_EMULATED)
// Graph memory nodes are not emulated: stream-ordered allocation inside a capture is refused.
TEST(Graphs, StreamOrderedAllocationInsideCaptureIsRefused) {
  expect_invalidates("cudaMallocAsync", cudaErrorStreamCaptureUnsupported, [](cudaStream_t s) {
    void* p = nullptr;
    return cudaMallocAsync(&p, 256, s);
  });
}
#endif

}  // namespace
