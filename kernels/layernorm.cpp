// CPU LayerNorm reference (f32 and f64). Row statistics are accumulated in double.
#include "kernels/layernorm.h"

#include <algorithm>
#include <cmath>

#include "engine/runtime/cpu_backend.h"

namespace coco::kernels::cpu {

namespace {

// Normalizes one row of `input` (C) into `out` and optionally records its statistics.
template <class T>
void normalize_row(T* out, T* mean_out, T* rstd_out, const T* input, const T* gamma, const T* beta, int64_t C,
                   double eps) {
  double sum = 0.0;
  for (int64_t c = 0; c < C; ++c) sum += static_cast<double>(input[c]);
  const double mean = sum / static_cast<double>(C);
  double squares = 0.0;
  for (int64_t c = 0; c < C; ++c) {
    const double d = static_cast<double>(input[c]) - mean;
    squares += d * d;
  }
  const double rstd = 1.0 / std::sqrt(squares / static_cast<double>(C) + eps);
  for (int64_t c = 0; c < C; ++c) {
    const double xhat = (static_cast<double>(input[c]) - mean) * rstd;
    out[c] = static_cast<T>(xhat * static_cast<double>(gamma[c]) + static_cast<double>(beta[c]));
  }
  if (mean_out) *mean_out = static_cast<T>(mean);
  if (rstd_out) *rstd_out = static_cast<T>(rstd);
}

}  // namespace

template <class T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* x, const T* gamma, const T* beta, int64_t rows, int64_t C,
                       double eps) {
  // Rows are independent: ranges of rows on the CPU pool give the same bits for any thread count.
  runtime::cpu::parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(1, C)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r)
      normalize_row(out + r * C, mean ? mean + r : nullptr, rstd ? rstd + r : nullptr, x + r * C, gamma, beta, C, eps);
  });
}

template <class T>
void residual_layernorm_forward(T* out, T* sum, T* mean, T* rstd, const T* x, const T* residual, const T* gamma,
                                const T* beta, int64_t rows, int64_t C, double eps) {
  runtime::cpu::parallel_for(rows * C, 16384, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) sum[i] = x[i] + residual[i];
  });
  layernorm_forward(out, mean, rstd, sum, gamma, beta, rows, C, eps);
}

template <class T>
void layernorm_backward(T* dx, T* dgamma, T* dbeta, const T* dout, const T* dx_extra, const T* x, const T* gamma,
                        const T* mean, const T* rstd, int64_t rows, int64_t C) {
  // dgamma / dbeta accumulate over the rows in row order, column ranges on the CPU pool; dx is per
  // row (the CPU pool). Neither depends on the thread count.
  if (dgamma || dbeta) {
    runtime::cpu::parallel_for(
        C, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, rows)), [&](int64_t lo, int64_t hi) {
          for (int64_t r = 0; r < rows; ++r) {
            const T* dout_row = dout + r * C;
            const T* x_row = x + r * C;
            const double row_mean = static_cast<double>(mean[r]);
            const double row_rstd = static_cast<double>(rstd[r]);
            for (int64_t c = lo; c < hi; ++c) {
              const double xhat = (static_cast<double>(x_row[c]) - row_mean) * row_rstd;
              if (dgamma)
                dgamma[c] = static_cast<T>(static_cast<double>(dgamma[c]) + static_cast<double>(dout_row[c]) * xhat);
              if (dbeta) dbeta[c] = static_cast<T>(static_cast<double>(dbeta[c]) + static_cast<double>(dout_row[c]));
            }
          }
        });
  }
  if (!dx) return;
  runtime::cpu::parallel_for(rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, C)), [&](int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const T* dout_row = dout + r * C;
      const T* x_row = x + r * C;
      const double row_mean = static_cast<double>(mean[r]);
      const double row_rstd = static_cast<double>(rstd[r]);
      double sum_g = 0.0, sum_g_xhat = 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const double g = static_cast<double>(dout_row[c]) * static_cast<double>(gamma[c]);
        sum_g += g;
        sum_g_xhat += g * (static_cast<double>(x_row[c]) - row_mean) * row_rstd;
      }
      const double mean_g = sum_g / static_cast<double>(C);
      const double mean_g_xhat = sum_g_xhat / static_cast<double>(C);
      T* dx_row = dx + r * C;
      for (int64_t c = 0; c < C; ++c) {
        const double xhat = (static_cast<double>(x_row[c]) - row_mean) * row_rstd;
        const double g = static_cast<double>(dout_row[c]) * static_cast<double>(gamma[c]);
        double value = (g - mean_g - xhat * mean_g_xhat) * row_rstd;
        if (dx_extra) value += static_cast<double>(dx_extra[r * C + c]);
        dx_row[c] = static_cast<T>(value);
      }
    }
  });
}

#define COCO_INSTANTIATE_LAYERNORM_CPU(T)                                                                              \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int64_t, int64_t, double);              \
  template void residual_layernorm_forward<T>(T*, T*, T*, T*, const T*, const T*, const T*, const T*, int64_t,         \
                                              int64_t, double);                                                        \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, const T*, const T*, int64_t, \
                                      int64_t);
COCO_INSTANTIATE_LAYERNORM_CPU(float)
COCO_INSTANTIATE_LAYERNORM_CPU(double)
#undef COCO_INSTANTIATE_LAYERNORM_CPU

}  // namespace coco::kernels::cpu
