// What the data-parallel tests share: one communicator per device for the whole test process, smooth
// deterministic test values, and a three-layer model whose first weight is tied to its last layer (read
// twice) plus a parameter that backward never reaches.
#pragma once
#include <cmath>
#include <memory>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dist/launch.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/linear.h"
#include "engine/tensor.h"

namespace coco::dist::testutil {

inline Communicator& comm_for(Device device) {
  static std::unique_ptr<Communicator> comms[2];
  auto& comm = comms[device == Device::cpu ? 0 : 1];
  if (!comm) comm = make_communicator(device, detect_launch());
  return *comm;
}

inline Tensor values(const Shape& shape, int seed, Device device) {
  std::vector<float> v(static_cast<size_t>(shape.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(std::sin(0.37 * (i + 1) + 1.3 * seed));
  return Tensor::from_vector(v, shape, device);
}

// x (rows, 6) -> linear(w1, b1) -> linear(w2) -> linear(w1 again): the tied weight w1 gets two gradient terms.
struct TiedModel {
  Tensor w1, b1, w2, unused;
  TiedModel(Device device, int64_t unused_size)
      : w1(values({6, 8}, 1, device).set_requires_grad().set_name("w1")),
        b1(values({6}, 2, device).set_requires_grad().set_name("b1")),
        w2(values({8, 6}, 3, device).set_requires_grad().set_name("w2")),
        unused(values({unused_size}, 4, device).set_requires_grad().set_name("unused")) {}
  Tensor loss(const Tensor& x) const {
    const Tensor h = ops::linear(x, w1, b1);
    const Tensor y = ops::linear(h, w2);
    const Tensor z = ops::linear(y, w1);
    return ops::mean(ops::mul(z, z));
  }
};

}  // namespace coco::dist::testutil
