// CPU reference of the corrupted-sequence construction.
#include "kernels/corrupt.h"

#include <stdexcept>
#include <string>

namespace coco::kernels::cpu {

namespace {

void check_sizes(int64_t total, int64_t N, const char* op) {
  if (total < 0 || N < 0)
    throw std::invalid_argument(std::string(op) + ": negative size (total " + std::to_string(total) + ", N " +
                                std::to_string(N) + ")");
}

float label_of(bool was_replaced, bool is_pad, LabelConvention convention) {
  if (is_pad) return 0.0f;
  return (convention == LabelConvention::replaced_is_one) == was_replaced ? 1.0f : 0.0f;
}

}  // namespace

void corrupt_tokens(const int32_t* tokens, int64_t total, const int32_t* positions, const int32_t* samples, int64_t N,
                    int32_t pad_id, LabelConvention convention, int32_t* corrupted, uint8_t* replaced, float* labels) {
  check_sizes(total, N, "kernels::cpu::corrupt_tokens");
  for (int64_t i = 0; i < total; ++i) {
    corrupted[i] = tokens[i];
    replaced[i] = 0;
    if (labels) labels[i] = label_of(false, tokens[i] == pad_id, convention);
  }
  for (int64_t k = 0; k < N; ++k) {
    const int64_t p = positions[k];
    if (p < 0 || p >= total) continue;
    const bool was_replaced = samples[k] != tokens[p];
    corrupted[p] = samples[k];
    replaced[p] = was_replaced ? 1 : 0;
    if (labels) labels[p] = label_of(was_replaced, tokens[p] == pad_id, convention);
  }
}

void gather_tokens(const int32_t* tokens, int64_t total, const int32_t* positions, int64_t N, int32_t* targets) {
  check_sizes(total, N, "kernels::cpu::gather_tokens");
  for (int64_t k = 0; k < N; ++k) {
    const int64_t p = positions[k];
    targets[k] = p >= 0 && p < total ? tokens[p] : -1;
  }
}

}  // namespace coco::kernels::cpu
