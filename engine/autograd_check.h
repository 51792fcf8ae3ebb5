// Tape-level gradient check: compares the backward of any composed function of tensors with
// central finite differences, in f64 on the CPU backend.
#pragma once
#include <functional>
#include <vector>

#include "engine/gradcheck.h"
#include "engine/tensor.h"

namespace coco {

// `fn` maps the inputs to one output tensor. Every input must be an f64 CPU tensor; those that
// require grad are checked. The scalar checked is sum(fn(inputs) * W) for a fixed pseudo-random W,
// so every output element contributes with its own weight. Input names (set_name) appear in the report.
GradcheckReport gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options = {},
                          unsigned weight_seed = 1234);

}  // namespace coco
