// A piece of CUDA work captured once and replayed as one graph launch (issue #14: one CUDA graph per
// training step). The captured work runs with the arguments of the capture at every replay, so
// whatever must change between replays lives in device memory that the work reads: the Philox step
// (rng::StepKey::from_counter), the learning rate and loss scale (kernels/step_control.h), the token
// ids (a fixed device buffer refilled before the replay).
//
//   CudaGraph graph;
//   step(); // warm-up, uncaptured: the caching allocator now holds every block the step needs
//   graph.capture(stream, [&] { step(); });   // records, runs nothing
//   for (...) { refill inputs; graph.replay(stream); }
//
// The capture allocates from a private pool of the caching allocator (engine/allocator.h), so the
// blocks the graph writes at each replay are never handed to other tensors; the pool is released
// when the graph is destroyed. Capture uses cudaStreamCaptureModeThreadLocal: this thread may not
// synchronise, copy synchronously or cudaMalloc while it captures (CUDA refuses those with
// cudaErrorStreamCaptureUnsupported), other threads (a prefetching loader) are not restricted.
#pragma once
#include <cstddef>
#include <functional>

#include "engine/allocator.h"
#include "engine/runtime/cuda_api.h"

namespace coco {

class CudaGraph {
 public:
  CudaGraph();
  ~CudaGraph();
  CudaGraph(const CudaGraph&) = delete;
  CudaGraph& operator=(const CudaGraph&) = delete;

  // Captures what `work` issues on `stream` (the thread's current stream while it runs), replacing an
  // earlier capture. `stream` must be a created stream, not the legacy default stream. When the work
  // throws or makes a call that capture refuses, the capture is ended and discarded and CudaError is
  // thrown, naming the failing call (the work's own exception message comes first).
  void capture(cudaStream_t stream, const std::function<void()>& work);
  // One graph launch on `stream`. Throws std::logic_error before a capture.
  void replay(cudaStream_t stream) const;

  bool captured() const { return exec_ != nullptr; }
  // Nodes of the captured graph (kernels, copies, memsets, GEMMs).
  size_t nodes() const { return nodes_; }

 private:
  void destroy();

  CachingAllocator::PoolId pool_;
  cudaGraphExec_t exec_ = nullptr;
  size_t nodes_ = 0;
};

}  // namespace coco
