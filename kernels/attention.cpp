// CPU attention reference: plain loops with double accumulation, one query row at a time. It is the
// oracle for the CUDA path and the f64 gradcheck, and the CPU tensor path.
#include "kernels/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/softmax_math.h"

namespace coco::kernels {

void check_attention_arguments(const AttentionShape& s, const AttentionDropout& dropout, const char* op) {
  const std::string where = std::string(op) + ": ";
  if (s.batch < 0 || s.heads < 0 || s.seq_len < 0 || s.head_dim < 0)
    throw std::invalid_argument(where + "negative size in (B=" + std::to_string(s.batch) +
                                ", H=" + std::to_string(s.heads) + ", T=" + std::to_string(s.seq_len) +
                                ", Dh=" + std::to_string(s.head_dim) + ")");
  if (s.head_dim == 0 && s.batch * s.heads * s.seq_len > 0)
    throw std::invalid_argument(where + "head_dim must be at least 1 (B=" + std::to_string(s.batch) +
                                ", H=" + std::to_string(s.heads) + ", T=" + std::to_string(s.seq_len) + ")");
  // Element counts of the (B, H, T, T) scores must fit in int64 (and the dropout index in 2^48).
  const double scores = static_cast<double>(s.batch) * s.heads * s.seq_len * s.seq_len;
  const double qkv = static_cast<double>(s.batch) * s.heads * s.seq_len * s.head_dim;
  if (scores > 0x1.0p48 || qkv > 0x1.0p62)
    throw std::invalid_argument(where + "shape (B=" + std::to_string(s.batch) + ", H=" + std::to_string(s.heads) +
                                ", T=" + std::to_string(s.seq_len) + ", Dh=" + std::to_string(s.head_dim) +
                                ") is too large (B*H*T*T must stay below 2^48)");
  if (!(dropout.p >= 0.0f && dropout.p < 1.0f))
    throw std::invalid_argument(where + "dropout probability " + std::to_string(dropout.p) + " outside [0, 1)");
}

}  // namespace coco::kernels

namespace coco::kernels::cpu {

namespace {

double attention_scale(int64_t head_dim) { return head_dim > 0 ? 1.0 / std::sqrt(static_cast<double>(head_dim)) : 1.0; }

// The dropped probability exactly as the CUDA kernels form it: from P rounded to T, times the float
// keep scale, rounded to T.
template <class T>
T dropped_probability(T p, const AttentionDropout& dropout, uint64_t index) {
  if (!dropout.active()) return p;
  if (!detail::dropout_keeps(dropout.stream, index, dropout.p)) return T(0);
  return static_cast<T>(static_cast<double>(p) * static_cast<double>(detail::dropout_keep_scale(dropout.p)));
}

}  // namespace

template <class T, class Mask>
void attention_forward(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias,
                       const AttentionShape& shape, const AttentionDropout& dropout, T* out, T* probs) {
  check_attention_arguments(shape, dropout, "kernels::cpu::attention_forward");
  const int64_t B = shape.batch, H = shape.heads, L = shape.seq_len, D = shape.head_dim;
  const double scale = attention_scale(D);
  std::vector<double> logits(static_cast<size_t>(L)), acc(static_cast<size_t>(D));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h;
      const T* qh = q + bh * L * D;
      const T* kh = k + bh * L * D;
      const T* vh = v + bh * L * D;
      for (int64_t i = 0; i < L; ++i) {
        detail::SoftmaxStats<double> st = detail::softmax_stats_empty<double>();
        for (int64_t j = 0; j < L; ++j) {
          double s;
          if (key_mask && key_mask[b * L + j] == 0) {
            s = -std::numeric_limits<double>::infinity();
          } else {
            s = 0.0;
            for (int64_t d = 0; d < D; ++d)
              s += static_cast<double>(qh[i * D + d]) * static_cast<double>(kh[j * D + d]);
            s *= scale;
            if (bias) s += static_cast<double>(bias[(h * L + i) * L + j]);
          }
          logits[static_cast<size_t>(j)] = s;
          detail::softmax_stats_add(st, s);
        }
        const double inv_sum = 1.0 / st.sum;
        const int64_t row = bh * L + i;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t j = 0; j < L; ++j) {
          const T p = static_cast<T>(detail::softmax_value(logits[static_cast<size_t>(j)], st, inv_sum));
          probs[row * L + j] = p;
          const double pd = static_cast<double>(dropped_probability(p, dropout, static_cast<uint64_t>(row * L + j)));
          // No skipping of zero probabilities: 0 * Inf must give NaN here exactly as in a GEMM.
          for (int64_t d = 0; d < D; ++d) acc[static_cast<size_t>(d)] += pd * static_cast<double>(vh[j * D + d]);
        }
        for (int64_t d = 0; d < D; ++d) out[row * D + d] = static_cast<T>(acc[static_cast<size_t>(d)]);
      }
    }
  }
}

template <class T>
void attention_backward(const T* q, const T* k, const T* v, const T* probs, const T* dout, const AttentionShape& shape,
                        const AttentionDropout& dropout, T* dq, T* dk, T* dv, T* dbias, bool accumulate_dbias) {
  check_attention_arguments(shape, dropout, "kernels::cpu::attention_backward");
  const int64_t B = shape.batch, H = shape.heads, L = shape.seq_len, D = shape.head_dim;
  const double scale = attention_scale(D);
  const double keep_scale = dropout.active() ? static_cast<double>(detail::dropout_keep_scale(dropout.p)) : 1.0;
  std::vector<double> dk_acc(static_cast<size_t>(L * D)), dv_acc(static_cast<size_t>(L * D)),
      dq_row(static_cast<size_t>(D));
  std::vector<double> g(static_cast<size_t>(L)), ds(static_cast<size_t>(L));
  std::vector<double> dbias_acc(dbias ? static_cast<size_t>(H * L * L) : 0, 0.0);
  if (dbias && accumulate_dbias)
    for (size_t e = 0; e < dbias_acc.size(); ++e) dbias_acc[e] = static_cast<double>(dbias[e]);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t bh = b * H + h;
      const T* qh = q + bh * L * D;
      const T* kh = k + bh * L * D;
      const T* vh = v + bh * L * D;
      const T* doh = dout + bh * L * D;
      std::fill(dk_acc.begin(), dk_acc.end(), 0.0);
      std::fill(dv_acc.begin(), dv_acc.end(), 0.0);
      for (int64_t i = 0; i < L; ++i) {
        const int64_t row = bh * L + i;
        double dot_gp = 0.0;
        for (int64_t j = 0; j < L; ++j) {
          double dp = 0.0;  // dP_drop[i, j] = dO_i . v_j
          for (int64_t d = 0; d < D; ++d)
            dp += static_cast<double>(doh[i * D + d]) * static_cast<double>(vh[j * D + d]);
          const bool keep =
              !dropout.active() || detail::dropout_keeps(dropout.stream, static_cast<uint64_t>(row * L + j), dropout.p);
          g[static_cast<size_t>(j)] = keep ? dp * keep_scale : 0.0;
          dot_gp += g[static_cast<size_t>(j)] * static_cast<double>(probs[row * L + j]);
          // dv_j += P_drop[i, j] dO_i
          const double pd =
              static_cast<double>(dropped_probability(probs[row * L + j], dropout, static_cast<uint64_t>(row * L + j)));
          for (int64_t d = 0; d < D; ++d)
            dv_acc[static_cast<size_t>(j * D + d)] += pd * static_cast<double>(doh[i * D + d]);
        }
        std::fill(dq_row.begin(), dq_row.end(), 0.0);
        for (int64_t j = 0; j < L; ++j) {
          const double p = static_cast<double>(probs[row * L + j]);
          const double s = p * (g[static_cast<size_t>(j)] - dot_gp);
          ds[static_cast<size_t>(j)] = s;
          for (int64_t d = 0; d < D; ++d) {
            dq_row[static_cast<size_t>(d)] += s * static_cast<double>(kh[j * D + d]);
            dk_acc[static_cast<size_t>(j * D + d)] += s * static_cast<double>(qh[i * D + d]);
          }
          if (dbias) dbias_acc[static_cast<size_t>((h * L + i) * L + j)] += s;
        }
        if (dq)
          for (int64_t d = 0; d < D; ++d) dq[row * D + d] = static_cast<T>(scale * dq_row[static_cast<size_t>(d)]);
      }
      for (int64_t e = 0; e < L * D; ++e) {
        if (dk) dk[bh * L * D + e] = static_cast<T>(scale * dk_acc[static_cast<size_t>(e)]);
        if (dv) dv[bh * L * D + e] = static_cast<T>(dv_acc[static_cast<size_t>(e)]);
      }
    }
  }
  if (dbias)
    for (size_t e = 0; e < dbias_acc.size(); ++e) dbias[e] = static_cast<T>(dbias_acc[e]);
}

#define COCO_INSTANTIATE_ATTENTION_CPU(T)                                                                      \
  template void attention_forward<T, uint8_t>(const T*, const T*, const T*, const uint8_t*, const T*,          \
                                              const AttentionShape&, const AttentionDropout&, T*, T*);         \
  template void attention_forward<T, int32_t>(const T*, const T*, const T*, const int32_t*, const T*,          \
                                              const AttentionShape&, const AttentionDropout&, T*, T*);         \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*, const AttentionShape&, \
                                      const AttentionDropout&, T*, T*, T*, T*, bool);
COCO_INSTANTIATE_ATTENTION_CPU(float)
COCO_INSTANTIATE_ATTENTION_CPU(double)
#undef COCO_INSTANTIATE_ATTENTION_CPU

}  // namespace coco::kernels::cpu
