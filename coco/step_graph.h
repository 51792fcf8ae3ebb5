// One CUDA graph per training step (issue #14, item 2): runtime.cuda_graph. The Trainer's whole optimizer step
// on the device -- every micro-batch's forward and backward, the step's metric sums, the device-side decision
// (optim::StepControl: skip, clip, AdamW scalars, f16 loss scale), the AdamW update, the f16 working copies and
// zero_grad -- is captured once and replayed as one graph launch per step. What changes from step to step is
// read from device memory by the captured work: the token ids from one fixed buffer per micro-batch (refilled by
// an asynchronous copy from its pinned slot before each replay), the Philox step from the StepControl's step
// counter, the learning rate and loss scale from its state. What stays outside the graph: the uploads, the
// fault-injection hook (StepControl::force_skip) and, at the logging cadence, the record copy.
//
//   StepGraph graph(grad_accum);                          // its own stream; the trainer works on it
//   per step:  for micro: graph.set_input(micro, model.device_tokens(ids, &graph.uploads()));
//              graph.run([&] { the step's device work, reading graph.input(micro) });
//
// run() runs the work uncaptured the first kWarmupSteps times, captures it the next time (from the graph's
// private pool, so no cudaMalloc) and replays it then and at every later call. Two warm-up steps, because the
// first step is not yet steady: lazily built tables and descriptors appear in it, and its backward adopts
// each parameter's first gradient as the gradient buffer, where every later backward accumulates into the
// buffer through a temporary, so a later step holds more blocks at once; after the second step the caching
// allocator holds every block a step needs.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "coco/train_config.h"
#include "engine/cuda_graph.h"
#include "engine/device.h"
#include "engine/pinned_upload.h"
#include "engine/tensor.h"

namespace coco::train {

// runtime.cuda_graph resolved: as written, else on for the cuda device (the step's shapes are static: every
// training micro-batch is train.micro_batch x data.seq_len), in one process and under a plain data-parallel launch,
// where the gradient buckets' and metric sums' collectives are captured with the step (NCCL calls on the
// communication stream, joined to the capture by events); off with optim.zero = 1 under a launch (the ZeRO-1 step
// is not captured), where true is a ConfigError naming the key.
// True on the cpu device was refused when the config was parsed.
bool use_cuda_graph(const TrainConfig& config, bool data_parallel, const std::string& source);

class StepGraph {
 public:
  enum class Phase { warm_up, capture, replay };
  static constexpr int kWarmupSteps = 2;

  // `micro_batches`: train.grad_accum (one upload slot and input buffer each). Waits for the work queued so far
  // on the device (the construction of the model and optimizer) so that the step's stream starts after it.
  explicit StepGraph(int64_t micro_batches);
  // Waits for the step stream's work first: the tensors it used may be freed and reused right after.
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // The stream every CUDA call of the training runs on while graphs are on (the capture needs a created stream).
  cudaStream_t stream() const { return stream_.get(); }
  // The upload ring of the step's ids: one pinned slot per micro-batch, taken in turn, so micro-batch k's ids
  // always land in the same device buffer.
  PinnedUpload& uploads() { return uploads_; }
  // Micro-batch `micro`'s ids for this step (what device_tokens returned through uploads()). From the capture on
  // they must be in the buffer the graph reads: another address or shape is a std::logic_error.
  void set_input(int64_t micro, const Tensor& tokens);
  const Tensor& input(int64_t micro) const;

  // Runs the step's device work: the warm-up, the capture (then its replay), or a replay (next_phase()). A failed
  // capture throws std::runtime_error naming runtime.cuda_graph and the call the capture refused.
  void run(const std::function<void()>& work);
  Phase next_phase() const {
    return runs_ < kWarmupSteps ? Phase::warm_up : runs_ == kWarmupSteps ? Phase::capture : Phase::replay;
  }
  // Other device work (an evaluation) ran between steps before the capture: its blocks changed what the
  // caching allocator holds, so one more uncaptured step runs before the capture (the step captured must
  // find every block it needs in the cache; measured: an evaluation right before the capture made it need
  // a new 512-byte block). No effect once the step is captured.
  void other_work_ran() {
    if (runs_ >= kWarmupSteps - 1 && runs_ <= kWarmupSteps) runs_ = kWarmupSteps - 1;
  }
  // Nodes of the captured graph (0 before the capture).
  size_t nodes() const { return graph_.nodes(); }

 private:
  Stream stream_;
  PinnedUpload uploads_;
  std::vector<Tensor> inputs_;
  CudaGraph graph_;  // destroyed first: its private pool goes back to the cache before the buffers it used
  int64_t runs_ = 0;
};

}  // namespace coco::train
