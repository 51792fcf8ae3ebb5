// Building blocks with parameters: Linear, LayerNorm. Each is a Module, so its tensors appear in the
// registry under dotted names ("layers.3.attn.qkv.weight").
#pragma once
#include <cstdint>

#include "engine/module.h"
#include "engine/ops/linear.h"
#include "model/init.h"

namespace coco::model {

// y = x W^T + b, W (out, in) like torch.nn.Linear. Weight decay applies to the weight only.
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, Initializer& init, Device device);
  // x (..., in) -> (..., out), with an optional fused GELU.
  Tensor forward(const Tensor& x, ops::Activation act = ops::Activation::none) const;
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }

 private:
  Tensor weight_, bias_;
};

class LayerNorm : public Module {
 public:
  LayerNorm(int64_t dim, double eps, Initializer& init, Device device);
  // x (..., dim) -> (..., dim)
  Tensor forward(const Tensor& x) const;
  const Tensor& gamma() const { return gamma_; }
  const Tensor& beta() const { return beta_; }
  double eps() const { return eps_; }

 private:
  Tensor gamma_, beta_;
  double eps_;
};

}  // namespace coco::model
