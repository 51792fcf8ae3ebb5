// CPU softmax / log-softmax (reference for the CUDA kernels and the CPU tensor path). Statistics and
// dot products are accumulated in double whatever T is, so the float path is a tight reference.
#include "kernels/softmax.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/runtime/cpu_backend.h"
#include "kernels/softmax_math.h"

namespace coco::kernels::cpu {

namespace {

void check_dims(int64_t rows, int64_t width, const char* op) {
  if (rows < 0 || width < 0)
    throw std::invalid_argument(std::string(op) + ": negative size (rows " + std::to_string(rows) + ", width " +
                                std::to_string(width) + ")");
}

template <class T, bool Log>
void forward_rows(const T* x, T* y, int64_t rows, int64_t width) {
  // Rows are independent: ranges of rows on the CPU pool give the same bits for any thread count.
  runtime::cpu::parallel_for(
      rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, width)), [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const T* xr = x + r * width;
          T* yr = y + r * width;
          detail::SoftmaxStats<double> st = detail::softmax_stats_empty<double>();
          for (int64_t j = 0; j < width; ++j) detail::softmax_stats_add(st, static_cast<double>(xr[j]));
          if constexpr (Log) {
            const double log_sum = std::log(st.sum);
            for (int64_t j = 0; j < width; ++j)
              yr[j] = static_cast<T>(detail::log_softmax_value(static_cast<double>(xr[j]), st, log_sum));
          } else {
            const double inv_sum = 1.0 / st.sum;
            for (int64_t j = 0; j < width; ++j)
              yr[j] = static_cast<T>(detail::softmax_value(static_cast<double>(xr[j]), st, inv_sum));
          }
        }
      });
}

}  // namespace

template <class T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t width) {
  check_dims(rows, width, "kernels::cpu::softmax_forward");
  forward_rows<T, false>(x, y, rows, width);
}

template <class T>
void log_softmax_forward(const T* x, T* y, int64_t rows, int64_t width) {
  check_dims(rows, width, "kernels::cpu::log_softmax_forward");
  forward_rows<T, true>(x, y, rows, width);
}

template <class T>
void softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t width) {
  check_dims(rows, width, "kernels::cpu::softmax_backward");
  runtime::cpu::parallel_for(
      rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, width)), [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const T* yr = y + r * width;
          const T* dyr = dy + r * width;
          T* dxr = dx + r * width;
          double dot = 0.0;
          for (int64_t j = 0; j < width; ++j) dot += static_cast<double>(yr[j]) * static_cast<double>(dyr[j]);
          for (int64_t j = 0; j < width; ++j)
            dxr[j] = static_cast<T>(static_cast<double>(yr[j]) * (static_cast<double>(dyr[j]) - dot));
        }
      });
}

template <class T>
void log_softmax_backward(const T* y, const T* dy, T* dx, int64_t rows, int64_t width) {
  check_dims(rows, width, "kernels::cpu::log_softmax_backward");
  runtime::cpu::parallel_for(
      rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, width)), [&](int64_t lo, int64_t hi) {
        for (int64_t r = lo; r < hi; ++r) {
          const T* yr = y + r * width;
          const T* dyr = dy + r * width;
          T* dxr = dx + r * width;
          double sum = 0.0;
          for (int64_t j = 0; j < width; ++j) sum += static_cast<double>(dyr[j]);
          for (int64_t j = 0; j < width; ++j) {
            const double yj = static_cast<double>(yr[j]);
            dxr[j] = yj == -INFINITY ? T(0) : static_cast<T>(static_cast<double>(dyr[j]) - std::exp(yj) * sum);
          }
        }
      });
}

#define COCO_INSTANTIATE_SOFTMAX_CPU(T)                                        \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t);            \
  template void log_softmax_forward<T>(const T*, T*, int64_t, int64_t);        \
  template void softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t); \
  template void log_softmax_backward<T>(const T*, const T*, T*, int64_t, int64_t);
COCO_INSTANTIATE_SOFTMAX_CPU(float)
COCO_INSTANTIATE_SOFTMAX_CPU(double)
#undef COCO_INSTANTIATE_SOFTMAX_CPU

}  // namespace coco::kernels::cpu
