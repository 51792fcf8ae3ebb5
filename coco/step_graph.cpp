#include "coco/step_graph.h"

#include <stdexcept>

#include "engine/config.h"
#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"

namespace coco::train {

bool use_cuda_graph(const TrainConfig& config, bool data_parallel, const std::string& source) {
  if (config.device != Device::cuda) return false;  // an explicit true was refused by parse_train_config
  if (data_parallel && config.optim.zero == 1 && config.cuda_graph.value_or(false))
    throw ConfigError(source +
                      ": key 'runtime.cuda_graph': true cannot be honoured with optim.zero = 1 in a data-parallel "
                      "launch (the ZeRO-1 step is not captured); expected false or no key, or optim.zero = 0");
  // Data parallel: on by default for plain data parallelism (the step's collectives are captured with it); the
  // ZeRO-1 step is not captured.
  return config.cuda_graph.value_or(!(data_parallel && config.optim.zero == 1));
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

void StepGraph::run(const std::function<void()>& work) {
  switch (next_phase()) {
    case Phase::warm_up:
      work();
      break;
    case Phase::capture:
      try {
        graph_.capture(stream_.get(), work);
      } catch (const CudaError& e) {
        throw std::runtime_error(std::string("runtime.cuda_graph: capturing the training step failed (set "
                                             "runtime.cuda_graph to false to train without the graph): ") +
                                 e.what());
      }
      graph_.replay(stream_.get());
      break;
    case Phase::replay:
      graph_.replay(stream_.get());
      break;
  }
  ++runs_;
}

}  // namespace coco::train
