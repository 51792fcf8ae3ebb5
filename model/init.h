// Parameter initialisation, reproducible from the seed alone and independent of backend: values are
// drawn on the host from one Philox stream (purpose `init`) in parameter-creation order, then copied
// to the device.
//   "xtransformers": embeddings N(0, 0.02); Linear weight and bias U(+-1/sqrt(fan_in)) (PyTorch's default);
//                    LayerNorm gamma 1, beta 0.
//   "bert":          every Linear and embedding N(0, 0.02), biases 0, the padding row of the token
//                    embedding zeroed; LayerNorm gamma 1, beta 0.
#pragma once
#include <cstdint>
#include <string>

#include "engine/rng/philox.h"
#include "engine/tensor.h"

namespace coco::model {

class Initializer {
 public:
  // Tensors are drawn in f32 and stored as `dtype` (f64 for gradient checks).
  Initializer(uint64_t seed, std::string scheme, DType dtype = DType::f32);

  Tensor normal(const Shape& shape, double stddev, Device device);
  Tensor uniform(const Shape& shape, double bound, Device device);
  Tensor constant(const Shape& shape, double value, Device device);
  // The scheme's Linear weight / bias and embedding tables.
  Tensor linear_weight(int64_t out, int64_t in, Device device);
  Tensor linear_bias(int64_t out, int64_t in, Device device);
  Tensor embedding(int64_t rows, int64_t dim, Device device, int64_t padding_row = -1);
  const std::string& scheme() const { return scheme_; }

 private:
  rng::Stream stream_;
  uint64_t next_index_ = 0;
  std::string scheme_;
  DType dtype_;
  Tensor stored(Tensor t) const { return dtype_ == DType::f32 ? t : t.to(dtype_); }
};

}  // namespace coco::model
