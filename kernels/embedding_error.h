// Argument checks and the out-of-range token message shared by the CPU and CUDA embedding paths.
#pragma once
#include <stdexcept>
#include <string>

#include "kernels/embedding.h"

namespace coco::kernels::detail {

inline std::string bad_token_message(int64_t id, int64_t b, int64_t t, int64_t vocab) {
  return "embedding: token id " + std::to_string(id) + " at position (b=" + std::to_string(b) +
         ", t=" + std::to_string(t) + ") is outside the vocabulary [0, " + std::to_string(vocab) + ")";
}

inline void check_embedding_shape(const char* op, const EmbeddingShape& s) {
  if (s.batch < 0 || s.seq < 0 || s.vocab <= 0 || s.dim <= 0 || s.vocab > INT32_MAX ||
      s.positions() >= static_cast<int64_t>(UINT32_MAX))
    throw std::invalid_argument(std::string(op) + ": invalid shape B=" + std::to_string(s.batch) +
                                " T=" + std::to_string(s.seq) + " V=" + std::to_string(s.vocab) + " E=" +
                                std::to_string(s.dim) + " (need B, T >= 0, 0 < V <= 2^31-1, E > 0, B*T < 2^32-1)");
}

}  // namespace coco::kernels::detail
