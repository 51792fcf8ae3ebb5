#include "model/layers.h"

#include "engine/ops/layernorm.h"

namespace coco::model {

Linear::Linear(int64_t in, int64_t out, bool bias, Initializer& init, Device device) {
  weight_ = register_parameter("weight", init.linear_weight(out, in, device));
  if (bias) bias_ = register_parameter("bias", init.linear_bias(out, in, device), /*weight_decay=*/false);
}

Tensor Linear::forward(const Tensor& x, ops::Activation act) const { return ops::linear(x, weight_, bias_, act); }

LayerNorm::LayerNorm(int64_t dim, double eps, Initializer& init, Device device) : eps_(eps) {
  gamma_ = register_parameter("weight", init.constant(Shape{dim}, 1.0, device), /*weight_decay=*/false);
  beta_ = register_parameter("bias", init.constant(Shape{dim}, 0.0, device), /*weight_decay=*/false);
}

Tensor LayerNorm::forward(const Tensor& x) const { return ops::layernorm(x, gamma_, beta_, eps_); }

}  // namespace coco::model
