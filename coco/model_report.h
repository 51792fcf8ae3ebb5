// The start-up report: parameter counts per part and an estimate of the activation memory one
// micro-batch keeps alive for the backward pass.
#pragma once
#include <cstdint>
#include <string>

#include "coco/objective.h"

namespace coco::objective {

struct ModelReport {
  int64_t generator_parameters = 0;      // generator.* and generator_head.* not shared with the discriminator
  int64_t discriminator_parameters = 0;  // discriminator.* (incl. the shared embeddings)
  int64_t head_parameters = 0;           // rtd/copy, clm, scl heads and cl_theta
  int64_t total_parameters = 0;          // unique tensors
  double activation_bytes = 0;           // saved for backward, one micro-batch (estimate)
  std::string text() const;              // a few lines for the terminal
};

// `activation_bytes_per_element`: 4 for f32 activations, 2 for bf16/f16.
ModelReport describe_model(const CocoModel& model, const model::ModelConfig& config, const ObjectiveConfig& objective,
                           int64_t micro_batch, int64_t seq_len, int activation_bytes_per_element);

}  // namespace coco::objective
