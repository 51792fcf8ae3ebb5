// CPU reference of the sequence contrastive losses (semantics in kernels/contrastive.h).
#include "kernels/contrastive.h"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace coco::kernels {

int64_t contrastive_saved_size(ContrastiveKind kind, int64_t batch) {
  return kind == ContrastiveKind::info_nce ? batch * batch + 2 * batch : 4 * batch * batch + 2 * batch;
}

}  // namespace coco::kernels

namespace coco::kernels::cpu {

namespace {

void check_sizes(int64_t batch, int64_t dim, const char* op) {
  if (batch < 1 || dim < 1)
    throw std::invalid_argument(std::string(op) + ": expected batch >= 1 and dim >= 1, got batch " +
                                std::to_string(batch) + ", dim " + std::to_string(dim));
}

// Scores of one anchor: values[j * stride] for j < count, index `excluded` skipped (-1: none).
template <class T>
struct AnchorView {
  const T* values;
  int64_t stride;
  int64_t count;
  int64_t excluded;
  T at(int64_t j) const { return values[j * stride]; }
};

// log-sum-exp over the anchor's candidates as max + log(sum), with the special cases the CUDA
// kernels share: NaN or +inf -> NaN, all -inf -> -inf.
template <class T>
struct AnchorLogSumExp {
  T max;
  double log_sum;
  T lse;
};

template <class T>
AnchorLogSumExp<T> anchor_logsumexp(const AnchorView<T>& v) {
  constexpr T inf = std::numeric_limits<T>::infinity();
  T max_value = -inf;
  bool has_nan = false;
  for (int64_t j = 0; j < v.count; ++j) {
    if (j == v.excluded) continue;
    const T x = v.at(j);
    if (std::isnan(x))
      has_nan = true;
    else if (x > max_value)
      max_value = x;
  }
  if (has_nan || max_value == inf) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    return {max_value, static_cast<double>(nan), nan};
  }
  if (max_value == -inf) return {max_value, -static_cast<double>(inf), max_value};
  double sum = 0.0;
  for (int64_t j = 0; j < v.count; ++j)
    if (j != v.excluded) sum += std::exp(static_cast<double>(v.at(j)) - static_cast<double>(max_value));
  const double log_sum = std::log(sum);
  return {max_value, log_sum, static_cast<T>(static_cast<double>(max_value) + log_sum)};
}

template <class T>
int64_t anchor_argmax(const AnchorView<T>& v) {
  int64_t best = -1;
  for (int64_t j = 0; j < v.count; ++j) {
    if (j == v.excluded) continue;
    if (best < 0) {
      best = j;
      continue;
    }
    if (std::isnan(v.at(best))) break;
    if (std::isnan(v.at(j)) || v.at(j) > v.at(best)) best = j;
  }
  return best;
}

// Adds anchor `view`'s CE (positive `positive`) to loss/correct and stores its lse.
template <class T>
void score_anchor(const AnchorView<T>& view, int64_t positive, double& loss_sum, int32_t& correct, T& lse_out) {
  const AnchorLogSumExp<T> stats = anchor_logsumexp(view);
  lse_out = stats.lse;
  // (max - s_pos) + log(sum): exact when the positive is the maximum (as the CUDA kernel).
  loss_sum += std::isnan(stats.lse) ? static_cast<double>(stats.lse)
                                    : static_cast<double>(stats.max - view.at(positive)) + stats.log_sum;
  if (anchor_argmax(view) == positive) ++correct;
}

// Row k of Z = (a_0, b_0, a_1, b_1, ...).
template <class T>
const T* interleaved_row(const T* a, const T* b, int64_t k, int64_t dim) {
  return ((k & 1) ? b : a) + (k >> 1) * dim;
}

template <class T>
T dot(const T* x, const T* y, int64_t dim) {
  double sum = 0.0;
  for (int64_t d = 0; d < dim; ++d) sum += static_cast<double>(x[d]) * static_cast<double>(y[d]);
  return static_cast<T>(sum);
}

}  // namespace

template <class T>
void info_nce_forward(const T* a, const T* b, const T* theta, int64_t batch, int64_t dim, T* loss, T* saved,
                      int32_t* counts) {
  check_sizes(batch, dim, "kernels::cpu::info_nce_forward");
  const int64_t n = batch;
  T* S = saved;
  T* lse_rows = saved + n * n;
  T* lse_cols = lse_rows + n;
  const T scale = std::exp(*theta);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) S[i * n + j] = scale * dot(a + i * dim, b + j * dim, dim);
  double loss_sum = 0.0;
  int32_t correct = 0;
  for (int64_t i = 0; i < n; ++i) score_anchor(AnchorView<T>{S + i * n, 1, n, -1}, i, loss_sum, correct, lse_rows[i]);
  for (int64_t j = 0; j < n; ++j) score_anchor(AnchorView<T>{S + j, n, n, -1}, j, loss_sum, correct, lse_cols[j]);
  *loss = static_cast<T>(loss_sum / static_cast<double>(2 * n));
  counts[kContrastiveCountCorrect] = correct;
  counts[kContrastiveCountAnchors] = static_cast<int32_t>(2 * n);
}

template <class T>
void info_nce_backward(const T* a, const T* b, const T* theta, const T* saved, int64_t batch, int64_t dim,
                       const T* dloss, T* da, T* db, T* dtheta) {
  check_sizes(batch, dim, "kernels::cpu::info_nce_backward");
  const int64_t n = batch;
  const T* S = saved;
  const T* lse_rows = saved + n * n;
  const T* lse_cols = lse_rows + n;
  const T scale = std::exp(*theta);
  const T g = *dloss / static_cast<T>(2 * n);
  std::vector<T> dS(static_cast<size_t>(n * n));
  T theta_grad = T(0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) {
      const T s = S[i * n + j];
      const T delta = i == j ? T(1) : T(0);
      const T grad = g * (std::exp(s - lse_rows[i]) - delta + std::exp(s - lse_cols[j]) - delta);
      dS[static_cast<size_t>(i * n + j)] = grad;
      theta_grad += grad * s;
    }
  *dtheta = theta_grad;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t d = 0; d < dim; ++d) {
      T sa = T(0), sb = T(0);
      for (int64_t j = 0; j < n; ++j) {
        sa += dS[static_cast<size_t>(i * n + j)] * b[j * dim + d];
        sb += dS[static_cast<size_t>(j * n + i)] * a[j * dim + d];
      }
      da[i * dim + d] = scale * sa;
      db[i * dim + d] = scale * sb;
    }
}

template <class T>
void nt_xent_forward(const T* a, const T* b, int64_t batch, int64_t dim, double tau, T* loss, T* saved,
                     int32_t* counts) {
  check_sizes(batch, dim, "kernels::cpu::nt_xent_forward");
  if (!(tau > 0.0))
    throw std::invalid_argument("kernels::cpu::nt_xent_forward: tau must be > 0, got " + std::to_string(tau));
  const int64_t m = 2 * batch;
  T* S = saved;
  T* lse = saved + m * m;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < m; ++c)
      S[r * m + c] = dot(interleaved_row(a, b, r, dim), interleaved_row(a, b, c, dim), dim) / static_cast<T>(tau);
  double loss_sum = 0.0;
  int32_t correct = 0;
  for (int64_t k = 0; k < m; ++k) score_anchor(AnchorView<T>{S + k * m, 1, m, k}, k ^ 1, loss_sum, correct, lse[k]);
  *loss = static_cast<T>(loss_sum / static_cast<double>(m));
  counts[kContrastiveCountCorrect] = correct;
  counts[kContrastiveCountAnchors] = static_cast<int32_t>(m);
}

template <class T>
void nt_xent_backward(const T* a, const T* b, const T* saved, int64_t batch, int64_t dim, double tau, const T* dloss,
                      T* da, T* db) {
  check_sizes(batch, dim, "kernels::cpu::nt_xent_backward");
  const int64_t m = 2 * batch;
  const T* S = saved;
  const T* lse = saved + m * m;
  const T g = *dloss / static_cast<T>(m);
  // dS_sym[r][c] = dL/dS_rc + dL/dS_cr (S is symmetric in Z), zero on the diagonal.
  std::vector<T> dS(static_cast<size_t>(m * m), T(0));
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < m; ++c) {
      if (r == c) continue;
      const T delta = c == (r ^ 1) ? T(1) : T(0);
      dS[static_cast<size_t>(r * m + c)] =
          g * (std::exp(S[r * m + c] - lse[r]) + std::exp(S[c * m + r] - lse[c]) - T(2) * delta);
    }
  for (int64_t r = 0; r < m; ++r) {
    T* out = ((r & 1) ? db : da) + (r >> 1) * dim;
    for (int64_t d = 0; d < dim; ++d) {
      T sum = T(0);
      for (int64_t c = 0; c < m; ++c) sum += dS[static_cast<size_t>(r * m + c)] * interleaved_row(a, b, c, dim)[d];
      out[d] = sum / static_cast<T>(tau);
    }
  }
}

#define COCO_INSTANTIATE_CONTRASTIVE(T)                                                                               \
  template void info_nce_forward<T>(const T*, const T*, const T*, int64_t, int64_t, T*, T*, int32_t*);                \
  template void info_nce_backward<T>(const T*, const T*, const T*, const T*, int64_t, int64_t, const T*, T*, T*, T*); \
  template void nt_xent_forward<T>(const T*, const T*, int64_t, int64_t, double, T*, T*, int32_t*);                   \
  template void nt_xent_backward<T>(const T*, const T*, const T*, int64_t, int64_t, double, const T*, T*, T*);
COCO_INSTANTIATE_CONTRASTIVE(float)
COCO_INSTANTIATE_CONTRASTIVE(double)
#undef COCO_INSTANTIATE_CONTRASTIVE

}  // namespace coco::kernels::cpu
