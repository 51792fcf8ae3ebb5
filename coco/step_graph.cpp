#include "coco/step_graph.h"

#include <stdexcept>

#include "engine/allocator.h"
#include "engine/config.h"
#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"

namespace coco::train {

bool use_cuda_graph(const TrainConfig& config) {
  if (config.device != Device::cuda) return false;  // an explicit true was refused by parse_train_config
  // On by default: the step's shapes are static, and under a launch its collectives are captured with it.
  return config.cuda_graph.value_or(true);
}

StepGraph::StepGraph(int64_t micro_batches) : uploads_(static_cast<int>(micro_batches)) {
  if (micro_batches < 1)
    throw std::invalid_argument("StepGraph: micro_batches must be >= 1, got " + std::to_string(micro_batches));
  inputs_.resize(static_cast<size_t>(micro_batches));
  // The step stream does not wait for the legacy default stream by itself (it is non-blocking): the weights,
  // optimizer state and step state written at construction must have landed before the first step reads them.
  COCO_CUDA_CHECK(runtime::device_synchronize());
}

StepGraph::~StepGraph() { (void)runtime::stream_synchronize(stream_.get()); }

void StepGraph::set_input(int64_t micro, const Tensor& tokens) {
  if (micro < 0 || micro >= static_cast<int64_t>(inputs_.size()))
    throw std::out_of_range("StepGraph::set_input: micro-batch " + std::to_string(micro) + " of " +
                            std::to_string(inputs_.size()));
  Tensor& slot = inputs_[static_cast<size_t>(micro)];
  if (next_phase() == Phase::replay && (tokens.data() != slot.data() || tokens.shape() != slot.shape()))
    throw std::logic_error("StepGraph::set_input: micro-batch " + std::to_string(micro) + "'s ids " +
                           tokens.shape().str() + " are not in the buffer the captured step reads (" +
                           slot.shape().str() + "): the step's shapes must stay the same for a CUDA graph");
  slot = tokens;
}

const Tensor& StepGraph::input(int64_t micro) const { return inputs_.at(static_cast<size_t>(micro)); }

StepGraph::OtherWork::OtherWork(StepGraph* graph) : graph_(graph && !graph->captured() ? graph : nullptr) {
  if (graph_) in_use_before_ = CachingAllocator::instance().stats().bytes_in_use;
}

StepGraph::OtherWork::~OtherWork() {
  if (graph_ && CachingAllocator::instance().stats().bytes_in_use != in_use_before_) graph_->other_work_ran();
}

void StepGraph::run(const std::function<void()>& work) {
  switch (next_phase()) {
    case Phase::warm_up: {
      const size_t in_use_before = CachingAllocator::instance().stats().bytes_in_use;
      work();
      settled_ = CachingAllocator::instance().stats().bytes_in_use == in_use_before;
      ++warm_ups_;
      break;
    }
    case Phase::capture:
      try {
        graph_.capture(stream_.get(), work);
      } catch (const CudaError& e) {
        throw std::runtime_error(std::string("runtime.cuda_graph: capturing the training step failed (set "
                                             "runtime.cuda_graph to false to train without the graph): ") +
                                 e.what());
      }
      captured_ = true;
      graph_.replay(stream_.get());
      break;
    case Phase::replay:
      graph_.replay(stream_.get());
      break;
  }
}

}  // namespace coco::train
