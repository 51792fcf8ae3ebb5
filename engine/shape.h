// Tensor shapes: up to five dimensions, row-major.
#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

namespace coco {

class Shape {
 public:
  static constexpr int kMaxDims = 5;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims);
  explicit Shape(std::span<const int64_t> dims);

  int rank() const { return rank_; }
  // Negative indices count from the end: shape[-1] is the last dimension.
  int64_t operator[](int dim) const;
  int64_t numel() const;
  // Product of all dimensions but the last: the number of rows of a (rows, last) view.
  int64_t rows() const;
  int64_t last() const { return rank_ ? dims_[rank_ - 1] : 1; }
  std::vector<int64_t> vec() const { return {dims_.begin(), dims_.begin() + rank_}; }
  Shape with_dim(int dim, int64_t size) const;
  std::string str() const;  // "(4, 128, 768)"

  bool operator==(const Shape& other) const;
  bool operator!=(const Shape& other) const { return !(*this == other); }

 private:
  std::array<int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

}  // namespace coco
