// CPU head split/merge permutes.
#include "kernels/permute.h"

#include <cstring>
#include <stdexcept>
#include <string>

namespace coco::kernels::cpu {

namespace {

void check_shape(const char* op, const HeadShape& s) {
  if (s.batch < 0 || s.seq < 0 || s.heads < 0 || s.head_dim < 0)
    throw std::invalid_argument(std::string(op) + ": negative dimension in (B=" + std::to_string(s.batch) +
                                ", T=" + std::to_string(s.seq) + ", H=" + std::to_string(s.heads) +
                                ", Dh=" + std::to_string(s.head_dim) + ")");
}

// Calls copy_run(token_offset, head_offset) for every head_dim-long run: the run of head h at
// column `offset` + h*Dh of token (b, t) in the (B, T, token_stride) layout, and row (b, h, t) of the
// (B, H, T, Dh) layout.
template <class CopyRun>
void for_each_run(int64_t token_stride, int64_t offset, const HeadShape& s, CopyRun copy_run) {
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < s.heads; ++h)
      for (int64_t t = 0; t < s.seq; ++t)
        copy_run((b * s.seq + t) * token_stride + offset + h * s.head_dim,
                 ((b * s.heads + h) * s.seq + t) * s.head_dim);
}

// tokens (B, T, token_stride) at column `offset` -> heads (B, H, T, Dh)
template <class T>
void gather_heads(T* heads, const T* tokens, int64_t token_stride, int64_t offset, const HeadShape& s) {
  const size_t run_bytes = static_cast<size_t>(s.head_dim) * sizeof(T);
  for_each_run(token_stride, offset, s, [&](int64_t token_offset, int64_t head_offset) {
    std::memcpy(heads + head_offset, tokens + token_offset, run_bytes);
  });
}

// heads (B, H, T, Dh) -> tokens (B, T, token_stride) at column `offset`
template <class T>
void scatter_heads(T* tokens, const T* heads, int64_t token_stride, int64_t offset, const HeadShape& s) {
  const size_t run_bytes = static_cast<size_t>(s.head_dim) * sizeof(T);
  for_each_run(token_stride, offset, s, [&](int64_t token_offset, int64_t head_offset) {
    std::memcpy(tokens + token_offset, heads + head_offset, run_bytes);
  });
}

}  // namespace

template <class T>
void split_heads(T* out, const T* in, const HeadShape& shape) {
  check_shape("kernels::cpu::split_heads", shape);
  gather_heads(out, in, shape.heads * shape.head_dim, 0, shape);
}

template <class T>
void merge_heads(T* out, const T* in, const HeadShape& shape) {
  check_shape("kernels::cpu::merge_heads", shape);
  scatter_heads(out, in, shape.heads * shape.head_dim, 0, shape);
}

template <class T>
void split_qkv(T* q, T* k, T* v, const T* qkv, const HeadShape& shape) {
  check_shape("kernels::cpu::split_qkv", shape);
  const int64_t width = shape.heads * shape.head_dim;
  gather_heads(q, qkv, 3 * width, 0, shape);
  gather_heads(k, qkv, 3 * width, width, shape);
  gather_heads(v, qkv, 3 * width, 2 * width, shape);
}

template <class T>
void merge_qkv(T* qkv, const T* q, const T* k, const T* v, const HeadShape& shape) {
  check_shape("kernels::cpu::merge_qkv", shape);
  const int64_t width = shape.heads * shape.head_dim;
  scatter_heads(qkv, q, 3 * width, 0, shape);
  scatter_heads(qkv, k, 3 * width, width, shape);
  scatter_heads(qkv, v, 3 * width, 2 * width, shape);
}

#define COCO_INSTANTIATE_PERMUTE_CPU(T)                               \
  template void split_heads<T>(T*, const T*, const HeadShape&);       \
  template void merge_heads<T>(T*, const T*, const HeadShape&);       \
  template void split_qkv<T>(T*, T*, T*, const T*, const HeadShape&); \
  template void merge_qkv<T>(T*, const T*, const T*, const T*, const HeadShape&);
COCO_INSTANTIATE_PERMUTE_CPU(float)
COCO_INSTANTIATE_PERMUTE_CPU(double)
COCO_INSTANTIATE_PERMUTE_CPU(__nv_bfloat16)
COCO_INSTANTIATE_PERMUTE_CPU(__half)
#undef COCO_INSTANTIATE_PERMUTE_CPU

}  // namespace coco::kernels::cpu
