#include "model/init.h"

#include <cmath>
#include <stdexcept>
#include <vector>

namespace coco::model {

Initializer::Initializer(uint64_t seed, std::string scheme, DType dtype)
    : stream_(seed, 0, rng::Purpose::init), scheme_(std::move(scheme)), dtype_(dtype) {
  if (scheme_ != "xtransformers" && scheme_ != "bert")
    throw std::invalid_argument("Initializer: unknown scheme '" + scheme_ +
                                "' (expected \"xtransformers\" or \"bert\")");
}

Tensor Initializer::normal(const Shape& shape, double stddev, Device device) {
  std::vector<float> values(static_cast<size_t>(shape.numel()));
  // Box-Muller on doubles from two uniforms per element: bitwise the same on every machine.
  for (float& v : values) {
    const double u1 = 1.0 - stream_.uniform_f64(next_index_++);  // (0, 1]
    const double u2 = stream_.uniform_f64(next_index_++);
    v = static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  return stored(Tensor::from_vector(values, shape, device));
}

Tensor Initializer::uniform(const Shape& shape, double bound, Device device) {
  std::vector<float> values(static_cast<size_t>(shape.numel()));
  for (float& v : values) v = static_cast<float>((2.0 * stream_.uniform_f64(next_index_++) - 1.0) * bound);
  return stored(Tensor::from_vector(values, shape, device));
}

Tensor Initializer::constant(const Shape& shape, double value, Device device) {
  return Tensor::full(shape, value, dtype_, device);
}

Tensor Initializer::linear_weight(int64_t out, int64_t in, Device device) {
  if (scheme_ == "bert") return normal(Shape{out, in}, 0.02, device);
  return uniform(Shape{out, in}, 1.0 / std::sqrt(static_cast<double>(in)), device);
}

Tensor Initializer::linear_bias(int64_t out, int64_t in, Device device) {
  if (scheme_ == "bert") return constant(Shape{out}, 0.0, device);
  return uniform(Shape{out}, 1.0 / std::sqrt(static_cast<double>(in)), device);
}

Tensor Initializer::embedding(int64_t rows, int64_t dim, Device device, int64_t padding_row) {
  Tensor table = normal(Shape{rows, dim}, 0.02, device);
  if (scheme_ == "bert" && padding_row >= 0 && padding_row < rows) table.rows(padding_row, padding_row + 1).zero_();
  return table;
}

}  // namespace coco::model
