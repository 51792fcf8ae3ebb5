#include "engine/cuda_graph.h"

#include <exception>
#include <stdexcept>
#include <string>

#include "engine/device.h"
#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"

namespace coco {

CudaGraph::CudaGraph() : pool_(CachingAllocator::instance().create_pool()) {}

CudaGraph::~CudaGraph() {
  destroy();
  CachingAllocator::instance().release_pool(pool_);
}

void CudaGraph::destroy() {
  if (exec_) (void)cudaGraphExecDestroy(exec_);
  exec_ = nullptr;
  nodes_ = 0;
}

void CudaGraph::capture(cudaStream_t stream, const std::function<void()>& work) {
  if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread)
    throw std::invalid_argument("CudaGraph::capture: expected a created stream, not a default stream");
  destroy();
  COCO_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  std::string failure;
  {
    StreamScope on_stream(stream);
    CachingAllocator::PoolScope in_pool(pool_, stream);
    try {
      work();
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (!failure.empty() || ended != cudaSuccess) {
    (void)cudaGetLastError();
    if (graph) (void)cudaGraphDestroy(graph);
    // The hint only where the capture itself refused a call (else the work failed on its own).
    throw CudaError("CudaGraph::capture: " + (failure.empty() ? std::string() : failure + "; ") +
                    "cudaStreamEndCapture: " + cudaGetErrorString(ended) +
                    (ended == cudaSuccess ? std::string()
                                          : " (a call inside the captured work is not allowed in a capture: a "
                                            "synchronisation, a synchronous copy, a cudaMalloc or a read of a "
                                            "device value)"));
  }
  try {
    COCO_CUDA_CHECK(cudaGraphGetNodes(graph, nullptr, &nodes_));
    COCO_CUDA_CHECK(cudaGraphInstantiate(&exec_, graph, 0));
  } catch (...) {
    (void)cudaGraphDestroy(graph);
    exec_ = nullptr;
    nodes_ = 0;
    throw;
  }
  COCO_CUDA_CHECK(cudaGraphDestroy(graph));
}

void CudaGraph::replay(cudaStream_t stream) const {
  if (!exec_) throw std::logic_error("CudaGraph::replay: nothing was captured");
  COCO_CUDA_CHECK(runtime::graph_launch(exec_, stream));
}

}  // namespace coco
