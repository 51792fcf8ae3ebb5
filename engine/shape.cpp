#include "engine/shape.h"

#include <stdexcept>

namespace coco {

Shape::Shape(std::initializer_list<int64_t> dims) : Shape(std::span<const int64_t>(dims.begin(), dims.size())) {}

Shape::Shape(std::span<const int64_t> dims) {
  if (dims.size() > static_cast<size_t>(kMaxDims))
    throw std::invalid_argument("Shape: " + std::to_string(dims.size()) + " dimensions given, at most " +
                                std::to_string(kMaxDims) + " supported");
  for (size_t i = 0; i < dims.size(); ++i) {
    if (dims[i] < 0)
      throw std::invalid_argument("Shape: dimension " + std::to_string(i) + " is negative (" + std::to_string(dims[i]) +
                                  ")");
    dims_[i] = dims[i];
  }
  rank_ = static_cast<int>(dims.size());
}

int64_t Shape::operator[](int dim) const {
  const int index = dim < 0 ? dim + rank_ : dim;
  if (index < 0 || index >= rank_)
    throw std::out_of_range("Shape" + str() + ": dimension " + std::to_string(dim) + " out of range");
  return dims_[index];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

int64_t Shape::rows() const {
  int64_t n = 1;
  for (int i = 0; i + 1 < rank_; ++i) n *= dims_[i];
  return n;
}

Shape Shape::with_dim(int dim, int64_t size) const {
  const int index = dim < 0 ? dim + rank_ : dim;
  if (index < 0 || index >= rank_)
    throw std::out_of_range("Shape" + str() + ": dimension " + std::to_string(dim) + " out of range");
  Shape copy = *this;
  copy.dims_[index] = size;
  return copy;
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[i]);
  }
  return s + (rank_ == 1 ? ",)" : ")");
}

bool Shape::operator==(const Shape& other) const {
  if (rank_ != other.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[i] != other.dims_[i]) return false;
  return true;
}

}  // namespace coco
