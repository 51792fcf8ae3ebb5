// CPU attention: the reference (plain loops with double accumulation, one query row at a time; the
// oracle for the CUDA path and the f64 gradcheck, and the f64 CPU tensor path) and the fast path (the
// f32 CPU tensor path, checked against the reference by tests/kernels/test_attention_cpu_fast.cpp).
#include "kernels/attention.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/runtime/cpu_backend.h"
#include "kernels/cpu_fast.h"
#include "kernels/matmul.h"
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

// ---------------------------------------------------------------------------------------------------
// Fast path. perf on a CPU `coco train` of configs/demo.json (B=16, H=4, T=64, Dh=32) put the
// reference's time in its scalar double dot products (S and P_drop v, the four backward products),
// one out-of-line Philox block per element (two per element in the backward) and double exp. Here the
// products are GEMMs, the mask of a (b, h) is drawn once in a loop GCC vectorises (Philox is integer
// arithmetic, so the mask is bit-identical to detail::dropout_keeps), and the row work is in T.

namespace {

// The mask loop is integer Philox arithmetic plus an exact float compare, so every instruction set
// gives the same bits; GCC clones it for AVX-512 / AVX2 (3.5x / 2x the SSE2 default: 4 or 8 lanes of
// 32x32->64 multiplies per instruction instead of 2) and picks one at load time. The float row loops
// are not cloned: an FMA-capable clone could contract multiply-adds, and the bits would then depend
// on the CPU beyond what the choice of OpenBLAS kernel already does.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define COCO_ATTENTION_INTEGER_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define COCO_ATTENTION_INTEGER_CLONES
#endif

// keep: (count) bytes, 1 where element first + e of the (B, H, T, T) probabilities survives dropout.
COCO_ATTENTION_INTEGER_CLONES
void draw_keep_mask(const AttentionDropout& dropout, uint64_t first, int64_t count, uint8_t* keep) {
  // Bitwise detail::dropout_keeps per element, 16 Philox blocks at a time.
  cpu_fast::attention_keep_mask(dropout.stream, dropout.p, first, count, keep);
}

// Row reductions keep kLanes partial results (element j goes to lane j % kLanes) and add the lanes in
// order at the end: the compiler vectorises the lane loop, and the order is fixed, so the result does
// not depend on the machine or the run.
constexpr int64_t kLanes = 8;

template <class T>
T lane_dot(const T* a, const T* b, int64_t n) {
  T lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += a[j + l] * b[j + l];
  for (int64_t l = 0; j < n; ++j, ++l) lanes[l] += a[j] * b[j];
  T total = 0;
  for (int64_t l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

template <class T>
T lane_sum(const T* a, int64_t n) {
  T lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] += a[j + l];
  for (int64_t l = 0; j < n; ++j, ++l) lanes[l] += a[j];
  T total = 0;
  for (int64_t l = 0; l < kLanes; ++l) total += lanes[l];
  return total;
}

// exp(x) for x <= 0 or -Inf (not NaN), as plain float arithmetic that GCC vectorises (a libm expf
// call per element cost as much as the rest of the softmax): Cephes' expf, i.e. x = n ln2 + r with
// n = round(x log2 e) by the 1.5 * 2^23 trick, ln 2 split in two so that r is exact, a degree-6
// polynomial for e^r and 2^n assembled in the exponent bits. Error <= 1 ulp against the exact value
// (scanned over [-87, 0]); below -87 (e^x < 1.7e-38, about FLT_MIN) it returns 0 rather than a
// subnormal, an absolute error under 2e-38. The range test is on the bits (for x <= 0 the float order
// is the unsigned order of the bits reversed, -Inf above every finite value): a float compare there
// lets GCC constant-fold the clamped branch into control flow that it then cannot vectorise.
inline float exp_nonpositive(float x) {
  constexpr uint32_t kLowestBits = 0xC2AE0000u;  // -87.0f
  constexpr float kRound = 12582912.0f;          // 1.5 * 2^23
  const uint32_t x_bits = std::bit_cast<uint32_t>(x);
  const bool in_range = x_bits <= kLowestBits;
  const float clamped = std::bit_cast<float>(in_range ? x_bits : kLowestBits);
  const float n = (clamped * 1.44269504088896341f + kRound) - kRound;  // in [-126, 0]
  const float r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
  float poly = 1.9875691500e-4f;
  poly = poly * r + 1.3981999507e-3f;
  poly = poly * r + 8.3334519073e-3f;
  poly = poly * r + 4.1665795894e-2f;
  poly = poly * r + 1.6666665459e-1f;
  poly = poly * r + 5.0000001201e-1f;
  const float e_r = poly * (r * r) + r + 1.0f;
  const uint32_t two_to_n_bits = static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23;
  return e_r * std::bit_cast<float>(in_range ? two_to_n_bits : 0u);
}

inline double exp_nonpositive(double x) { return std::exp(x); }

template <class T>
bool row_has_nan(const T* row, int64_t n) {
  int32_t any = 0;
  for (int64_t j = 0; j < n; ++j) any |= row[j] != row[j] ? 1 : 0;
  return any != 0;
}

// Maximum of a row without NaN (n >= 1). GCC keeps a float max reduction scalar (NaN and signed-zero
// rules), so the floats are compared as integer keys in float order: negatives get their magnitude
// bits flipped.
template <class T>
T row_max(const T* row, int64_t n) {
  using Key = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  constexpr Key kMagnitude = std::numeric_limits<Key>::max();
  Key best = std::numeric_limits<Key>::min();
  for (int64_t j = 0; j < n; ++j) {
    const Key bits = std::bit_cast<Key>(row[j]);
    const Key key = bits >= 0 ? bits : bits ^ kMagnitude;
    best = key > best ? key : best;
  }
  return std::bit_cast<T>(best >= 0 ? best : best ^ kMagnitude);
}

// In-place softmax of one row of masked scores (n >= 1), with the special cases of
// kernels/softmax_math.h: a NaN makes the row NaN, an all -Inf row gives zeros, and a +Inf takes the
// reference's online rule (NaN at the +Inf, or everywhere for two of them). Finite maximum:
// exp(x - max) * (1 / sum).
template <class T>
void softmax_row(T* row, int64_t n) {
  constexpr T kInf = std::numeric_limits<T>::infinity();
  if (row_has_nan(row, n)) {
    std::fill(row, row + n, std::numeric_limits<T>::quiet_NaN());
    return;
  }
  const T max = row_max(row, n);
  if (max == -kInf) {
    std::fill(row, row + n, T(0));
  } else if (max == kInf) {
    detail::SoftmaxStats<T> st = detail::softmax_stats_empty<T>();
    for (int64_t j = 0; j < n; ++j) detail::softmax_stats_add(st, row[j]);
    const T inv_sum = T(1) / st.sum;
    for (int64_t j = 0; j < n; ++j) row[j] = detail::softmax_value(row[j], st, inv_sum);
  } else {
    for (int64_t j = 0; j < n; ++j) row[j] = exp_nonpositive(row[j] - max);
    const T inv_sum = T(1) / lane_sum(row, n);
    for (int64_t j = 0; j < n; ++j) row[j] *= inv_sum;
  }
}

// keep ? value * keep_scale : 0, where a dropped element is 0 even if value is NaN or Inf (as in the
// reference). A bit mask rather than a conditional multiply: GCC does not vectorise a multiply that
// only happens on one side of a branch (it might raise an FP exception the branch avoided).
template <class T>
T kept_value(uint8_t keep, T value, T keep_scale) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const Bits all = keep != 0 ? ~Bits{0} : Bits{0};
  return std::bit_cast<T>(std::bit_cast<Bits>(value * keep_scale) & all);
}

// dst (n) = kept_value(keep, src) where dst and src do not overlap; scale_kept does it in place.
template <class T>
void apply_keep(const T* src, const uint8_t* keep, T keep_scale, int64_t n, T* dst) {
  for (int64_t e = 0; e < n; ++e) dst[e] = kept_value(keep[e], src[e], keep_scale);
}

template <class T>
void scale_kept(T* values, const uint8_t* keep, T keep_scale, int64_t n) {
  for (int64_t e = 0; e < n; ++e) values[e] = kept_value(keep[e], values[e], keep_scale);
}

}  // namespace

// Both passes run the (b, h) pairs on the CPU pool. Every (b, h) is computed by the same calls
// whichever thread runs it (its GEMMs are single panels or, nested in the pool, run inline), and the
// bias gradient is summed over the batch afterwards in batch order, so the results have the same
// bits for any thread count.
template <class T, class Mask>
void attention_forward_fast(const T* q, const T* k, const T* v, const Mask* key_mask, const T* bias,
                            const AttentionShape& shape, const AttentionDropout& dropout, T* out, T* probs) {
  check_attention_arguments(shape, dropout, "kernels::cpu::attention_forward_fast");
  const int64_t B = shape.batch, H = shape.heads, L = shape.seq_len, D = shape.head_dim;
  if (B * H * L == 0) return;
  const double scale = attention_scale(D);
  const T keep_scale = static_cast<T>(detail::dropout_keep_scale(dropout.p));
  constexpr T kInf = std::numeric_limits<T>::infinity();
  runtime::cpu::parallel_for(B * H, 1, [&](int64_t lo, int64_t hi) {
    std::vector<uint8_t> keep_buffer(dropout.active() ? static_cast<size_t>(L * L) : 0);
    std::vector<T> dropped_buffer(keep_buffer.size());  // P_drop of one (b, h)
    uint8_t* const keep = keep_buffer.data();
    T* const dropped = dropped_buffer.data();
    for (int64_t bh = lo; bh < hi; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const Mask* mask_row = key_mask ? key_mask + b * L : nullptr;
      T* const P = probs + bh * L * L;  // (L, L): the scores, then in place their softmax
      // S (L, L) = scale * q_bh (L, D) . k_bh^T
      gemm<T, T>(false, true, L, L, D, scale, q + bh * L * D, D, k + bh * L * D, D, 0.0, P, L);
      for (int64_t i = 0; i < L; ++i) {
        T* const row = P + i * L;
        if (bias) {
          const T* bias_row = bias + (h * L + i) * L;
          for (int64_t j = 0; j < L; ++j) row[j] += bias_row[j];
        }
        // After the bias, so that a padded key is -Inf whatever its score and bias (NaN included).
        if (mask_row)
          for (int64_t j = 0; j < L; ++j) row[j] = mask_row[j] != 0 ? row[j] : -kInf;
        softmax_row(row, L);
      }
      const T* weights = P;
      if (dropout.active()) {
        draw_keep_mask(dropout, static_cast<uint64_t>(bh * L * L), L * L, keep);
        // P rounded to T times the float keep scale, rounded to T: exactly the reference's value.
        apply_keep(P, keep, keep_scale, L * L, dropped);
        weights = dropped;
      }
      // out_bh (L, D) = P_drop (L, L) . v_bh (L, D)
      gemm<T, T>(false, false, L, D, L, 1.0, weights, L, v + bh * L * D, D, 0.0, out + bh * L * D, D);
    }
  });
}

template <class T>
void attention_backward_fast(const T* q, const T* k, const T* v, const T* probs, const T* dout,
                             const AttentionShape& shape, const AttentionDropout& dropout, T* dq, T* dk, T* dv,
                             T* dbias, bool accumulate_dbias) {
  check_attention_arguments(shape, dropout, "kernels::cpu::attention_backward_fast");
  const int64_t B = shape.batch, H = shape.heads, L = shape.seq_len, D = shape.head_dim;
  const double scale = attention_scale(D);
  const T keep_scale = static_cast<T>(detail::dropout_keep_scale(dropout.p));
  // With a bias gradient every (b, h) keeps its dS for the batch sum below.
  std::vector<T> ds_all(dbias && B * H * L > 0 ? static_cast<size_t>(B * H * L * L) : 0);
  if (B * H * L > 0) {
    runtime::cpu::parallel_for(B * H, 1, [&](int64_t lo, int64_t hi) {
      std::vector<T> ds_buffer(dbias ? 0 : static_cast<size_t>(L * L));  // (L, L): dP_drop, then dS in place
      std::vector<uint8_t> keep_buffer(dropout.active() ? static_cast<size_t>(L * L) : 0);
      std::vector<T> dropped_buffer(dv ? keep_buffer.size() : 0);  // P_drop of one (b, h)
      uint8_t* const keep = keep_buffer.data();
      T* const dropped = dropped_buffer.data();
      for (int64_t bh = lo; bh < hi; ++bh) {
        T* const ds = dbias ? ds_all.data() + bh * L * L : ds_buffer.data();
        const T* const P = probs + bh * L * L;
        const T* const dout_bh = dout + bh * L * D;
        // dP_drop (L, L) = dO_bh (L, D) . v_bh^T;  dP = dP_drop * keep / (1 - p)
        gemm<T, T>(false, true, L, L, D, 1.0, dout_bh, D, v + bh * L * D, D, 0.0, ds, L);
        if (dropout.active()) {
          draw_keep_mask(dropout, static_cast<uint64_t>(bh * L * L), L * L, keep);
          scale_kept(ds, keep, keep_scale, L * L);
          if (dv) apply_keep(P, keep, keep_scale, L * L, dropped);
        }
        for (int64_t i = 0; i < L; ++i) {
          T* const g = ds + i * L;  // the dP row, overwritten by the dS row
          const T* const p = P + i * L;
          const T dot_gp = lane_dot(g, p, L);
          for (int64_t j = 0; j < L; ++j) g[j] = p[j] * (g[j] - dot_gp);
        }
        // dv_bh (L, D) = P_drop^T (L, L) . dO_bh;  dq_bh = scale dS . k_bh;  dk_bh = scale dS^T . q_bh
        if (dv)
          gemm<T, T>(true, false, L, D, L, 1.0, dropout.active() ? dropped : P, L, dout_bh, D, 0.0, dv + bh * L * D, D);
        if (dq) gemm<T, T>(false, false, L, D, L, scale, ds, L, k + bh * L * D, D, 0.0, dq + bh * L * D, D);
        if (dk) gemm<T, T>(true, false, L, D, L, scale, ds, L, q + bh * L * D, D, 0.0, dk + bh * L * D, D);
      }
    });
  }
  if (!dbias) return;
  // dbias (H, L, L) = sum over b of dS_bh, in double, b in order, rounded once; elements in parallel.
  const int64_t plane = L * L;
  runtime::cpu::parallel_for(H * plane, 4096, [&](int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e) {
      const int64_t h = e / plane, ij = e % plane;
      double acc = accumulate_dbias ? static_cast<double>(dbias[e]) : 0.0;
      for (int64_t b = 0; b < B; ++b) acc += static_cast<double>(ds_all[static_cast<size_t>((b * H + h) * plane + ij)]);
      dbias[e] = static_cast<T>(acc);
    }
  });
}

#define COCO_INSTANTIATE_ATTENTION_CPU(T)                                                                           \
  template void attention_forward<T, uint8_t>(const T*, const T*, const T*, const uint8_t*, const T*,               \
                                              const AttentionShape&, const AttentionDropout&, T*, T*);              \
  template void attention_forward<T, int32_t>(const T*, const T*, const T*, const int32_t*, const T*,               \
                                              const AttentionShape&, const AttentionDropout&, T*, T*);              \
  template void attention_backward<T>(const T*, const T*, const T*, const T*, const T*, const AttentionShape&,      \
                                      const AttentionDropout&, T*, T*, T*, T*, bool);                               \
  template void attention_forward_fast<T, uint8_t>(const T*, const T*, const T*, const uint8_t*, const T*,          \
                                                   const AttentionShape&, const AttentionDropout&, T*, T*);         \
  template void attention_forward_fast<T, int32_t>(const T*, const T*, const T*, const int32_t*, const T*,          \
                                                   const AttentionShape&, const AttentionDropout&, T*, T*);         \
  template void attention_backward_fast<T>(const T*, const T*, const T*, const T*, const T*, const AttentionShape&, \
                                           const AttentionDropout&, T*, T*, T*, T*, bool);
COCO_INSTANTIATE_ATTENTION_CPU(float)
COCO_INSTANTIATE_ATTENTION_CPU(double)
#undef COCO_INSTANTIATE_ATTENTION_CPU

}  // namespace coco::kernels::cpu
