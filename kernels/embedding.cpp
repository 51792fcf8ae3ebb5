// CPU embedding forward/backward (reference and CPU training path).
#include "kernels/embedding.h"

#include <algorithm>
#include <string>

#include "engine/runtime/cpu_backend.h"

#include "kernels/embedding_error.h"

namespace coco::kernels::cpu {

template <class T>
void embedding_forward(T* out, const int32_t* ids, const T* tok, const T* pos, const EmbeddingShape& shape) {
  detail::check_embedding_shape("kernels::cpu::embedding_forward", shape);
  const int64_t E = shape.dim;
  for (int64_t b = 0; b < shape.batch; ++b)
    for (int64_t t = 0; t < shape.seq; ++t) {
      const int64_t position = b * shape.seq + t;
      const int32_t id = ids[position];
      if (id < 0 || id >= shape.vocab) throw TokenIdError(detail::bad_token_message(id, b, t, shape.vocab));
      const T* tok_row = tok + static_cast<int64_t>(id) * E;
      T* out_row = out + position * E;
      if (pos != nullptr) {
        const T* pos_row = pos + t * E;
        for (int64_t e = 0; e < E; ++e) out_row[e] = tok_row[e] + pos_row[e];
      } else {
        for (int64_t e = 0; e < E; ++e) out_row[e] = tok_row[e];
      }
    }
}

template <class T>
void embedding_backward(T* dtok, T* dpos, const T* dout, const int32_t* ids, const EmbeddingShape& shape,
                        int64_t padding_id) {
  detail::check_embedding_shape("kernels::cpu::embedding_backward", shape);
  const int64_t E = shape.dim;
  // Ranges of the embedding dimension on the CPU pool: every element still adds the positions in
  // order, so repeated ids accumulate with the same bits for any thread count.
  const int64_t positions = shape.batch * shape.seq;
  runtime::cpu::parallel_for(E, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, positions)),
                             [&](int64_t lo, int64_t hi) {
                               for (int64_t b = 0; b < shape.batch; ++b)
                                 for (int64_t t = 0; t < shape.seq; ++t) {
                                   const int64_t position = b * shape.seq + t;
                                   const T* dout_row = dout + position * E;
                                   if (dpos != nullptr)
                                     for (int64_t e = lo; e < hi; ++e) dpos[t * E + e] += dout_row[e];
                                   const int32_t id = ids[position];
                                   if (dtok == nullptr || id < 0 || id >= shape.vocab || id == padding_id) continue;
                                   T* dtok_row = dtok + static_cast<int64_t>(id) * E;
                                   for (int64_t e = lo; e < hi; ++e) dtok_row[e] += dout_row[e];
                                 }
                             });
}

template void embedding_forward<float>(float*, const int32_t*, const float*, const float*, const EmbeddingShape&);
template void embedding_forward<double>(double*, const int32_t*, const double*, const double*, const EmbeddingShape&);
template void embedding_backward<float>(float*, float*, const float*, const int32_t*, const EmbeddingShape&, int64_t);
template void embedding_backward<double>(double*, double*, const double*, const int32_t*, const EmbeddingShape&,
                                         int64_t);

}  // namespace coco::kernels::cpu
