// CPU reference reductions (float and double), accumulated in double.
#include "kernels/reduce.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/runtime/cpu_backend.h"

namespace coco::kernels::cpu {
namespace {

void check_nonnegative(int64_t value, const char* what, const char* op) {
  if (value < 0)
    throw std::invalid_argument(std::string("kernels::cpu::") + op + ": negative " + what + " " +
                                std::to_string(value));
}

}  // namespace

template <class T>
void sum(const T* x, int64_t n, double scale, T* out) {
  check_nonnegative(n, "element count", "sum");
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) total += static_cast<double>(x[i]);
  out[0] = static_cast<T>(total * scale);
}

template <class T>
void row_sum(const T* x, int64_t rows, int64_t cols, T* out) {
  check_nonnegative(rows, "row count", "row_sum");
  check_nonnegative(cols, "column count", "row_sum");
  for (int64_t r = 0; r < rows; ++r) {
    double total = 0.0;
    for (int64_t c = 0; c < cols; ++c) total += static_cast<double>(x[r * cols + c]);
    out[r] = static_cast<T>(total);
  }
}

template <class T>
void column_sum(const T* x, int64_t rows, int64_t cols, double beta, T* out) {
  check_nonnegative(rows, "row count", "column_sum");
  check_nonnegative(cols, "column count", "column_sum");
  // Column ranges on the CPU pool; each column sums its rows in row order whichever thread runs it.
  const int64_t min_columns = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, rows));
  runtime::cpu::parallel_for(cols, min_columns, [&](int64_t lo, int64_t hi) {
    std::vector<double> totals(static_cast<size_t>(hi - lo), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      const T* row = x + r * cols;
      for (int64_t c = lo; c < hi; ++c) totals[static_cast<size_t>(c - lo)] += static_cast<double>(row[c]);
    }
    for (int64_t c = lo; c < hi; ++c) {
      const double previous = beta == 0.0 ? 0.0 : beta * static_cast<double>(out[c]);
      out[c] = static_cast<T>(previous + totals[static_cast<size_t>(c - lo)]);
    }
  });
}

template <class T>
void sum_backward(const T* dy, int64_t n, double scale, T* dx) {
  check_nonnegative(n, "element count", "sum_backward");
  const T value = static_cast<T>(scale * static_cast<double>(dy[0]));
  for (int64_t i = 0; i < n; ++i) dx[i] = value;
}

template <class T>
void row_sum_backward(const T* dy, int64_t rows, int64_t cols, T* dx) {
  check_nonnegative(rows, "row count", "row_sum_backward");
  check_nonnegative(cols, "column count", "row_sum_backward");
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dx[r * cols + c] = dy[r];
}

#define COCO_INSTANTIATE_REDUCE_CPU(T)                                 \
  template void sum<T>(const T*, int64_t, double, T*);                 \
  template void row_sum<T>(const T*, int64_t, int64_t, T*);            \
  template void column_sum<T>(const T*, int64_t, int64_t, double, T*); \
  template void sum_backward<T>(const T*, int64_t, double, T*);        \
  template void row_sum_backward<T>(const T*, int64_t, int64_t, T*);

COCO_INSTANTIATE_REDUCE_CPU(float)
COCO_INSTANTIATE_REDUCE_CPU(double)
#undef COCO_INSTANTIATE_REDUCE_CPU

}  // namespace coco::kernels::cpu
