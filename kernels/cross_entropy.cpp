// CPU reference of the fused vocabulary cross-entropy (see kernels/cross_entropy.h for semantics).
#include "kernels/cross_entropy.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/runtime/cpu_backend.h"

namespace coco::kernels::cpu {

namespace {

void check_sizes(int64_t rows, int64_t vocab, const char* op) {
  if (rows < 0 || vocab < 1)
    throw std::invalid_argument(std::string(op) + ": expected rows >= 0 and vocab >= 1, got rows " +
                                std::to_string(rows) + ", vocab " + std::to_string(vocab));
}

bool contributes(int32_t target, int32_t ignore_index, int64_t vocab) {
  return target != ignore_index && target >= 0 && target < vocab;
}

// log(sum_j exp(x_j)) = max + log(sum), with the special cases the CUDA kernel shares: NaN or +inf
// anywhere -> NaN, all -inf -> -inf.
template <class T>
struct RowLogSumExp {
  T max;
  double log_sum;
  T lse;
};

template <class T>
RowLogSumExp<T> row_logsumexp(const T* x, int64_t vocab) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  T max_value = -inf;
  bool has_nan = false;
  for (int64_t j = 0; j < vocab; ++j) {
    if (std::isnan(x[j]))
      has_nan = true;
    else if (x[j] > max_value)
      max_value = x[j];
  }
  if (has_nan || max_value == inf) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    return {max_value, static_cast<double>(nan), nan};
  }
  if (max_value == -inf) return {max_value, -static_cast<double>(inf), max_value};
  double sum = 0.0;
  for (int64_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(x[j]) - static_cast<double>(max_value));
  const double log_sum = std::log(sum);
  return {max_value, log_sum, static_cast<T>(static_cast<double>(max_value) + log_sum)};
}

// Argmax order: NaN first, then larger values; ties (and NaN against NaN) go to the lowest index.
template <class T>
int64_t row_argmax(const T* x, int64_t vocab) {
  int64_t best = 0;
  for (int64_t j = 1; j < vocab; ++j) {
    const bool best_nan = std::isnan(x[best]);
    if (best_nan) break;
    if (std::isnan(x[j]) || x[j] > x[best]) best = j;
  }
  return best;
}

template <class T>
T mean_denominator(LossReduction reduction, int32_t contributing) {
  return reduction == LossReduction::mean ? static_cast<T>(contributing > 0 ? contributing : 1) : T(1);
}

template <class T>
void write_row_gradient(const T* x, int64_t vocab, int32_t target, T lse, T scale, T* dx) {
  for (int64_t j = 0; j < vocab; ++j) {
    const T p = static_cast<T>(std::exp(static_cast<double>(x[j]) - static_cast<double>(lse)));
    dx[j] = scale * (p - (j == target ? T(1) : T(0)));
  }
}

}  // namespace

template <class T>
void cross_entropy_forward(const T* logits, const int32_t* targets, const T* row_weights, int64_t rows, int64_t vocab,
                           int32_t ignore_index, LossReduction reduction, T* loss, T* row_loss, T* row_lse,
                           int32_t* counts, T* dlogits, T dlogits_scale) {
  check_sizes(rows, vocab, "kernels::cpu::cross_entropy_forward");
  int32_t correct = 0, contributing = 0, invalid = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t t = targets[i];
    if (contributes(t, ignore_index, vocab))
      ++contributing;
    else if (t != ignore_index)
      ++invalid;
  }
  const T denom = mean_denominator<T>(reduction, contributing);
  // Rows on the CPU pool (each row alone), then the loss and the count of correct rows added in row
  // order: the same bits for any thread count.
  std::vector<uint8_t> row_correct(static_cast<size_t>(rows), 0);
  runtime::cpu::parallel_for(rows, std::max<int64_t>(1, 16384 / vocab), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T* x = logits + i * vocab;
      const int32_t t = targets[i];
      const RowLogSumExp<T> stats = row_logsumexp(x, vocab);
      const T lse = stats.lse;
      row_lse[i] = lse;
      const bool counted = contributes(t, ignore_index, vocab);
      const T weight = row_weights ? row_weights[i] : T(1);
      if (counted) {
        // (max - x_t) + log(sum): exact cancellation when x_t is the maximum (as the CUDA kernel).
        const T ce = std::isnan(lse) ? lse : static_cast<T>(static_cast<double>(stats.max - x[t]) + stats.log_sum);
        row_loss[i] = ce;
        row_correct[static_cast<size_t>(i)] = row_argmax(x, vocab) == t;
      } else {
        row_loss[i] = T(0);
      }
      if (dlogits) {
        T* dx = dlogits + i * vocab;
        if (counted)
          write_row_gradient(x, vocab, t, lse, dlogits_scale * weight / denom, dx);
        else
          for (int64_t j = 0; j < vocab; ++j) dx[j] = T(0);
      }
    }
  });
  double total = 0.0;
  for (int64_t i = 0; i < rows; ++i) {
    if (!contributes(targets[i], ignore_index, vocab)) continue;
    const T weight = row_weights ? row_weights[i] : T(1);
    total += static_cast<double>(weight) * static_cast<double>(row_loss[i]);
    correct += row_correct[static_cast<size_t>(i)];
  }
  *loss = contributing > 0 ? static_cast<T>(total / static_cast<double>(denom)) : T(0);
  counts[kCountCorrect] = correct;
  counts[kCountRows] = contributing;
  counts[kCountInvalid] = invalid;
}

template <class T>
void cross_entropy_backward(const T* logits, const int32_t* targets, const T* row_weights, const T* row_lse,
                            const int32_t* counts, int64_t rows, int64_t vocab, int32_t ignore_index,
                            LossReduction reduction, const T* dloss, T* dlogits) {
  check_sizes(rows, vocab, "kernels::cpu::cross_entropy_backward");
  const T denom = mean_denominator<T>(reduction, counts[kCountRows]);
  runtime::cpu::parallel_for(rows, std::max<int64_t>(1, 16384 / vocab), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const T* x = logits + i * vocab;
      T* dx = dlogits + i * vocab;
      const int32_t t = targets[i];
      if (!contributes(t, ignore_index, vocab)) {
        for (int64_t j = 0; j < vocab; ++j) dx[j] = T(0);
        continue;
      }
      const T weight = row_weights ? row_weights[i] : T(1);
      write_row_gradient(x, vocab, t, row_lse[i], *dloss * weight / denom, dx);
    }
  });
}

#define COCO_INSTANTIATE_CE(T)                                                                                         \
  template void cross_entropy_forward<T>(const T*, const int32_t*, const T*, int64_t, int64_t, int32_t, LossReduction, \
                                         T*, T*, T*, int32_t*, T*, T);                                                 \
  template void cross_entropy_backward<T>(const T*, const int32_t*, const T*, const T*, const int32_t*, int64_t,       \
                                          int64_t, int32_t, LossReduction, const T*, T*);
COCO_INSTANTIATE_CE(float)
COCO_INSTANTIATE_CE(double)
#undef COCO_INSTANTIATE_CE

}  // namespace coco::kernels::cpu
