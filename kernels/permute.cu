// CUDA head split/merge permutes: one thread per 16-byte pack (or per element, when head_dim or a
// pointer does not allow packs) of the tensor being written (coalesced stores, reads contiguous over
// head_dim). Index arithmetic in 32 bits when everything fits.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/permute.h"
#include "kernels/vector_access.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kPermuteBlock = 256;
constexpr int64_t kMaxPermuteBlocks = 65535;

template <class Index>
struct PermuteDims {
  Index seq, heads, head_dim, parts;
  Index head_numel;   // B*H*T*Dh: elements of one head-layout tensor
  Index token_width;  // parts*H*Dh: last dimension of the token layout
};

// Both kernels visit the written tensor in packs of N = kPackElements<T> consecutive elements along
// head_dim: with head_dim % N == 0 and every pointer 16-byte aligned a pack is contiguous on both sides
// and moves as one 128-bit load and store; otherwise packs of one element (the same copies).
template <class T, class Index, class Move>
__device__ __forceinline__ void for_each_permute_pack(Index total, bool vector_ok, Move&& move) {
  constexpr int N = kPackElements<T>;
  const Index stride = static_cast<Index>(gridDim.x) * blockDim.x;
  const Index thread = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (vector_ok) {
    for (Index p = thread; p < total / N; p += stride) move(std::integral_constant<int, N>{}, p * N);
  } else {
    for (Index i = thread; i < total; i += stride) move(std::integral_constant<int, 1>{}, i);
  }
}

// tokens (B, T, parts*H*Dh) -> heads0..heads{parts-1} (B, H, T, Dh). Grid-stride over parts*B*H*T*Dh.
template <class T, class Index>
__global__ void gather_heads_kernel(T* __restrict__ heads0, T* __restrict__ heads1, T* __restrict__ heads2,
                                    const T* __restrict__ tokens, PermuteDims<Index> dims) {
  constexpr int N = kPackElements<T>;
  const bool vector_ok = dims.head_dim % N == 0 && packs_aligned<N>(heads0, heads1, heads2, tokens);
  for_each_permute_pack<T>(dims.head_numel * dims.parts, vector_ok, [&](auto width, Index i) {
    constexpr int W = decltype(width)::value;
    const Index part = i / dims.head_numel, j = i % dims.head_numel;
    const Index d = j % dims.head_dim, row = j / dims.head_dim;  // row = (b*H + h)*T + t
    const Index t = row % dims.seq, bh = row / dims.seq;
    const Index h = bh % dims.heads, b = bh / dims.heads;
    T* heads = part == 0 ? heads0 : part == 1 ? heads1 : heads2;
    store_pack<W>(heads + j, load_pack<W>(tokens + (b * dims.seq + t) * dims.token_width +
                                          (part * dims.heads + h) * dims.head_dim + d));
  });
}

// heads0..heads{parts-1} (B, H, T, Dh) -> tokens (B, T, parts*H*Dh). Grid-stride over the tokens.
template <class T, class Index>
__global__ void scatter_heads_kernel(T* __restrict__ tokens, const T* __restrict__ heads0, const T* __restrict__ heads1,
                                     const T* __restrict__ heads2, PermuteDims<Index> dims) {
  constexpr int N = kPackElements<T>;
  const bool vector_ok = dims.head_dim % N == 0 && packs_aligned<N>(tokens, heads0, heads1, heads2);
  for_each_permute_pack<T>(dims.head_numel * dims.parts, vector_ok, [&](auto width, Index i) {
    constexpr int W = decltype(width)::value;
    const Index column = i % dims.token_width, bt = i / dims.token_width;  // bt = b*T + t
    const Index t = bt % dims.seq, b = bt / dims.seq;
    const Index d = column % dims.head_dim, part_head = column / dims.head_dim;
    const Index h = part_head % dims.heads, part = part_head / dims.heads;
    const T* heads = part == 0 ? heads0 : part == 1 ? heads1 : heads2;
    store_pack<W>(tokens + i, load_pack<W>(heads + ((b * dims.heads + h) * dims.seq + t) * dims.head_dim + d));
  });
}

void check_shape(const char* op, const HeadShape& s) {
  if (s.batch < 0 || s.seq < 0 || s.heads < 0 || s.head_dim < 0)
    throw std::invalid_argument(std::string(op) + ": negative dimension in (B=" + std::to_string(s.batch) +
                                ", T=" + std::to_string(s.seq) + ", H=" + std::to_string(s.heads) +
                                ", Dh=" + std::to_string(s.head_dim) + ")");
}

template <class Index>
PermuteDims<Index> make_dims(const HeadShape& s, int parts) {
  return PermuteDims<Index>{static_cast<Index>(s.seq),      static_cast<Index>(s.heads),
                            static_cast<Index>(s.head_dim), static_cast<Index>(parts),
                            static_cast<Index>(s.numel()),  static_cast<Index>(parts * s.heads * s.head_dim)};
}

// One thread per pack.
template <class T>
unsigned permute_blocks(int64_t total) {
  return pack_grid<T>(total, kPermuteBlock, kMaxPermuteBlocks);
}

template <class T>
void gather(T* heads0, T* heads1, T* heads2, const T* tokens, const HeadShape& s, int parts, cudaStream_t stream) {
  const int64_t total = s.numel() * parts;
  if (total == 0) return;
  // 32-bit indices while the largest intermediate (index + one grid stride) stays below 2^32.
  if (total < (int64_t{1} << 31))
    COCO_LAUNCH((gather_heads_kernel<T, uint32_t>), dim3(permute_blocks<T>(total)), dim3(kPermuteBlock), 0, stream,
                heads0, heads1, heads2, tokens, make_dims<uint32_t>(s, parts));
  else
    COCO_LAUNCH((gather_heads_kernel<T, uint64_t>), dim3(permute_blocks<T>(total)), dim3(kPermuteBlock), 0, stream,
                heads0, heads1, heads2, tokens, make_dims<uint64_t>(s, parts));
}

template <class T>
void scatter(T* tokens, const T* heads0, const T* heads1, const T* heads2, const HeadShape& s, int parts,
             cudaStream_t stream) {
  const int64_t total = s.numel() * parts;
  if (total == 0) return;
  if (total < (int64_t{1} << 31))
    COCO_LAUNCH((scatter_heads_kernel<T, uint32_t>), dim3(permute_blocks<T>(total)), dim3(kPermuteBlock), 0, stream,
                tokens, heads0, heads1, heads2, make_dims<uint32_t>(s, parts));
  else
    COCO_LAUNCH((scatter_heads_kernel<T, uint64_t>), dim3(permute_blocks<T>(total)), dim3(kPermuteBlock), 0, stream,
                tokens, heads0, heads1, heads2, make_dims<uint64_t>(s, parts));
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T>
void split_heads(T* out, const T* in, const HeadShape& shape, cudaStream_t stream) {
  detail::check_shape("kernels::cuda::split_heads", shape);
  detail::gather<T>(out, nullptr, nullptr, in, shape, 1, stream);
}

template <class T>
void merge_heads(T* out, const T* in, const HeadShape& shape, cudaStream_t stream) {
  detail::check_shape("kernels::cuda::merge_heads", shape);
  detail::scatter<T>(out, in, nullptr, nullptr, shape, 1, stream);
}

template <class T>
void split_qkv(T* q, T* k, T* v, const T* qkv, const HeadShape& shape, cudaStream_t stream) {
  detail::check_shape("kernels::cuda::split_qkv", shape);
  detail::gather<T>(q, k, v, qkv, shape, 3, stream);
}

template <class T>
void merge_qkv(T* qkv, const T* q, const T* k, const T* v, const HeadShape& shape, cudaStream_t stream) {
  detail::check_shape("kernels::cuda::merge_qkv", shape);
  detail::scatter<T>(qkv, q, k, v, shape, 3, stream);
}

#define COCO_INSTANTIATE_PERMUTE_CUDA(T)                                            \
  template void split_heads<T>(T*, const T*, const HeadShape&, cudaStream_t);       \
  template void merge_heads<T>(T*, const T*, const HeadShape&, cudaStream_t);       \
  template void split_qkv<T>(T*, T*, T*, const T*, const HeadShape&, cudaStream_t); \
  template void merge_qkv<T>(T*, const T*, const T*, const T*, const HeadShape&, cudaStream_t);
COCO_INSTANTIATE_PERMUTE_CUDA(float)
COCO_INSTANTIATE_PERMUTE_CUDA(double)
COCO_INSTANTIATE_PERMUTE_CUDA(__nv_bfloat16)
COCO_INSTANTIATE_PERMUTE_CUDA(__half)
#undef COCO_INSTANTIATE_PERMUTE_CUDA

}  // namespace coco::kernels::cuda
