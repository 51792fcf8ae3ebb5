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
// run() runs the work uncaptured (warm-up) until the step is steady, captures it the next time (from the graph's
// private pool, so no cudaMalloc) and replays it then and at every later call. The capture must find every block the
// step needs in the caching allocator's cache, so the step before it must be one that leaves the device memory as it
// found it: a warm-up step is "settled" when the bytes in use after it equal those before it (every block it took
// went back to the cache, and nothing it kept took a block the next step will want). The first step never is
// (lazily built tables and descriptors appear in it, and its backward adopts each parameter's first gradient as the
// gradient buffer), and a step that changes what it keeps is not either: ZeRO-1's first step lays its buckets out
// again in the order backward produced them, so its second step uploads the new shard's descriptors (measured:
// capturing the step after that one needed a new 1536-byte block). So at least kWarmupSteps warm-up steps run, then
// more until one is settled; other work between steps (an evaluation, a checkpoint) that keeps device memory it
// did not hold before unsettles it again (OtherWork; measured: an evaluation right before the capture made it need
// a new 512-byte block). A step that never settles (it keeps new memory every time) is never captured: it trains
// uncaptured, as with runtime.cuda_graph false, and the trainer says so after kMaxWarmupSteps. Under a
// data-parallel launch every rank must capture the same step (the captured collectives' argument checks run at the
// capture): the trainer agrees the verdict between the ranks (set_settled) before the next step.
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
// training micro-batch is train.micro_batch x data.seq_len), in one process and under a data-parallel launch
// (plain or ZeRO-1), where the step's collectives (the gradient buckets' all-reduce or reduce-scatter, the metric
// sums, ZeRO-1's statistics and all-gather) are captured with it (NCCL calls on the communication stream, joined
// to the capture by events). True on the cpu device was refused when the config was parsed.
bool use_cuda_graph(const TrainConfig& config);

class StepGraph {
 public:
  enum class Phase { warm_up, capture, replay };
  static constexpr int kWarmupSteps = 2;     // at least
  static constexpr int kMaxWarmupSteps = 8;  // a step not settled by then is reported (it stays uncaptured)

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

  // Runs the step's device work: a warm-up (measuring whether it settled), the capture (then its replay), or a
  // replay (next_phase()). A failed capture throws std::runtime_error naming runtime.cuda_graph and the call the
  // capture refused.
  void run(const std::function<void()>& work);
  Phase next_phase() const {
    if (captured_) return Phase::replay;
    return warm_ups_ >= kWarmupSteps && settled_ ? Phase::capture : Phase::warm_up;
  }
  // Whether the last warm-up step left the device memory as it found it (this process's measurement, or the
  // verdict set_settled() gave).
  bool settled() const { return settled_; }
  // The verdict of all ranks (settled on every rank), under a launch, before the next run().
  void set_settled(bool settled) {
    if (!captured_) settled_ = settled;
  }
  // Other device work ran between steps before the capture and changed what the caching allocator holds: one more
  // warm-up step runs before the capture. No effect once the step is captured.
  void other_work_ran() { set_settled(false); }
  // Other device work between steps (an evaluation, a checkpoint's gathering), for its lifetime: when it ends with
  // more or less device memory in use than it began with (a lazily built table of its first run), other_work_ran().
  // Work that only takes blocks from the cache and gives them back leaves the cache as the step needs it.
  class OtherWork {
   public:
    explicit OtherWork(StepGraph* graph);  // null: no graph, nothing to do
    ~OtherWork();
    OtherWork(const OtherWork&) = delete;
    OtherWork& operator=(const OtherWork&) = delete;

   private:
    StepGraph* graph_;
    size_t in_use_before_ = 0;
  };
  int64_t warm_up_steps() const { return warm_ups_; }  // the uncaptured runs so far
  bool captured() const { return captured_; }
  // Nodes of the captured graph (0 before the capture).
  size_t nodes() const { return graph_.nodes(); }

 private:
  Stream stream_;
  PinnedUpload uploads_;
  std::vector<Tensor> inputs_;
  CudaGraph graph_;  // destroyed first: its private pool goes back to the cache before the buffers it used
  int64_t warm_ups_ = 0;
  bool settled_ = false, captured_ = false;
};

}  // namespace coco::train
