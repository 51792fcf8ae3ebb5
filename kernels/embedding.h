// Token + learned absolute position embedding.
//
//   out[b, t, :] = tok[ids[b, t], :] + pos[t, :]
//
// Backward accumulates (+=) into the tables' gradients:
//   dtok[v, :] += sum over (b, t) with ids[b, t] == v of dout[b, t, :]   (v == padding_id skipped)
//   dpos[t, :] += sum over b of dout[b, t, :]
// The CUDA backward is deterministic (bitwise reproducible run to run): positions are stably
// radix-sorted by token id, each run of equal ids is summed by one block in position order, and dpos
// sums the batch in order. Integer atomics only (histograms, error flag); no float atomics.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

struct EmbeddingShape {
  int64_t batch = 0, seq = 0;  // ids: (batch, seq)
  int64_t vocab = 0;           // tok: (vocab, dim)
  int64_t dim = 0;             // embedding width E
  int64_t positions() const { return batch * seq; }
};

// Thrown for a token id outside [0, vocab): names the id and its (b, t) position.
class TokenIdError : public std::out_of_range {
 public:
  using std::out_of_range::out_of_range;
};

inline constexpr int64_t kNoPaddingId = -1;

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// ids: (B, T) i32; tok: (V, E); pos: (>= T, E) or nullptr (no position term); out: (B, T, E).
// Throws TokenIdError on the first id outside [0, V) (nothing is written past it).
template <class T>
void embedding_forward(T* out, const int32_t* ids, const T* tok, const T* pos, const EmbeddingShape& shape);

// dout: (B, T, E); dtok: (V, E) or nullptr; dpos: (>= T, E) or nullptr (rows >= T untouched).
// Ids equal to padding_id (kNoPaddingId: none) or outside [0, V) contribute nothing to dtok.
template <class T>
void embedding_backward(T* dtok, T* dpos, const T* dout, const int32_t* ids, const EmbeddingShape& shape,
                        int64_t padding_id);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// T: float, __nv_bfloat16 or __half. Out-of-range ids are clamped into [0, V) for the lookup (no
// out-of-bounds read) and the smallest offending flat position b*T + t is written to
// *bad_position (device memory, one u32; the wrapper resets it to kNoBadPosition first).
// Call embedding_throw_if_bad_id() afterwards to report it.
inline constexpr uint32_t kNoBadPosition = 0xFFFFFFFFu;

template <class T>
void embedding_forward(T* out, const int32_t* ids, const T* tok, const T* pos, const EmbeddingShape& shape,
                       uint32_t* bad_position, cudaStream_t stream);

// Synchronizes `stream`, reads *bad_position and, if set, the offending id, and throws TokenIdError
// with the same message as the CPU path.
void embedding_throw_if_bad_id(const uint32_t* bad_position, const int32_t* ids, const EmbeddingShape& shape,
                               cudaStream_t stream);

// Bytes of device scratch embedding_backward needs (for the token-gradient sort).
size_t embedding_backward_workspace_bytes(const EmbeddingShape& shape);

// GradT (dtok/dpos element type): float, or T itself. workspace: embedding_backward_workspace_bytes()
// bytes (contents ignored), needed when dtok is given.
template <class T, class GradT>
void embedding_backward(GradT* dtok, GradT* dpos, const T* dout, const int32_t* ids, const EmbeddingShape& shape,
                        int64_t padding_id, void* workspace, cudaStream_t stream);

}  // namespace coco::kernels::cuda
