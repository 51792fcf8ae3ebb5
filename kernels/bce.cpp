// CPU reference of binary cross-entropy with logits (semantics in kernels/bce.h).
#include "kernels/bce.h"

#include <cmath>
#include <stdexcept>
#include <string>

namespace coco::kernels::cpu {

namespace {

void check_count(int64_t n, const char* op) {
  if (n < 0) throw std::invalid_argument(std::string(op) + ": negative position count " + std::to_string(n));
}

bool target_is_one(uint8_t replaced, BceLabels labels) {
  return labels == BceLabels::replaced_is_one ? replaced != 0 : replaced == 0;
}

template <class T>
T softplus_loss(T x, bool target_one) {
  const T z = target_one ? -x : x;
  return (z > T(0) ? z : T(0)) + std::log1p(std::exp(-std::fabs(x)));
}

template <class T>
T sigmoid(T x) {
  if (x >= T(0)) return T(1) / (T(1) + std::exp(-x));
  const T e = std::exp(x);
  return e / (T(1) + e);
}

}  // namespace

template <class T>
void bce_with_logits_forward(const T* logits, const uint8_t* replaced, const uint8_t* valid, int64_t n,
                             BceLabels labels, T* loss, int32_t* counts) {
  check_count(n, "kernels::cpu::bce_with_logits_forward");
  double total = 0.0;
  int32_t correct = 0, count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (valid && !valid[i]) continue;
    const bool one = target_is_one(replaced[i], labels);
    total += static_cast<double>(softplus_loss(logits[i], one));
    ++count;
    if ((logits[i] > T(0)) == one) ++correct;
  }
  *loss = count > 0 ? static_cast<T>(total / count) : T(0);
  counts[kBceCountCorrect] = correct;
  counts[kBceCountValid] = count;
}

template <class T>
void bce_with_logits_backward(const T* logits, const uint8_t* replaced, const uint8_t* valid, const int32_t* counts,
                              int64_t n, BceLabels labels, const T* dloss, T* dlogits) {
  check_count(n, "kernels::cpu::bce_with_logits_backward");
  const int32_t count = counts[kBceCountValid];
  const T scale = count > 0 ? *dloss / static_cast<T>(count) : T(0);
  for (int64_t i = 0; i < n; ++i) {
    if (valid && !valid[i]) {
      dlogits[i] = T(0);
      continue;
    }
    const T y = target_is_one(replaced[i], labels) ? T(1) : T(0);
    dlogits[i] = scale * (sigmoid(logits[i]) - y);
  }
}

#define COCO_INSTANTIATE_BCE(T)                                                                                \
  template void bce_with_logits_forward<T>(const T*, const uint8_t*, const uint8_t*, int64_t, BceLabels, T*,   \
                                           int32_t*);                                                          \
  template void bce_with_logits_backward<T>(const T*, const uint8_t*, const uint8_t*, const int32_t*, int64_t, \
                                            BceLabels, const T*, T*);
COCO_INSTANTIATE_BCE(float)
COCO_INSTANTIATE_BCE(double)
#undef COCO_INSTANTIATE_BCE

}  // namespace coco::kernels::cpu
