// Sequence contrastive losses on already L2-normalised sequence vectors a, b: (B, D), row i of a
// and row i of b being two views of sequence i.
//
// info_nce (preset `lucidrains`): S = exp(theta) * a b^T, (B, B), theta a learnable log-scale;
//   loss = (CE(S, rows) + CE(S^T, rows)) / 2 with the diagonal as positives, each CE a mean over B,
//   i.e. the mean over 2B anchors (B rows and B columns). Gradients to a, b and theta.
// nt_xent (preset `paper`): Z = (a_0, b_0, a_1, b_1, ...), (2B, D); S = Z Z^T / tau, (2B, 2B), the
//   diagonal excluded; anchor k's positive is its other view k ^ 1; loss = mean over the 2B anchors
//   of logsumexp_{j != k} S_kj - S_k,k^1. tau is a fixed hyper-parameter.
// Accuracy: an anchor is correct when its positive has the largest score among its candidates
// (NaN ranks first, ties go to the lowest index); counts = {correct anchors, 2B}.
// The forward saves the similarity matrix and every anchor's log-sum-exp for the backward.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco::kernels {

enum class ContrastiveKind : int32_t { info_nce = 0, nt_xent = 1 };

// Slots of the int32 `counts` array (length kContrastiveCounts) the forward fills.
inline constexpr int kContrastiveCountCorrect = 0;
inline constexpr int kContrastiveCountAnchors = 1;
inline constexpr int kContrastiveCounts = 2;

// Elements of the `saved` array the forward fills and the backward reads:
//   info_nce: S (B, B), then the log-sum-exp of the B rows, then of the B columns: B*B + 2B
//   nt_xent:  S (2B, 2B), then the log-sum-exp of the 2B rows:                  4*B*B + 2B
int64_t contrastive_saved_size(ContrastiveKind kind, int64_t batch);

}  // namespace coco::kernels

namespace coco::kernels::cpu {

// a, b: (B, D), theta: (1) -> loss (1), saved (contrastive_saved_size), counts (kContrastiveCounts)
template <class T>
void info_nce_forward(const T* a, const T* b, const T* theta, int64_t batch, int64_t dim, T* loss, T* saved,
                      int32_t* counts);
// dloss: (1) -> da, db: (B, D), dtheta: (1), all overwritten
template <class T>
void info_nce_backward(const T* a, const T* b, const T* theta, const T* saved, int64_t batch, int64_t dim,
                       const T* dloss, T* da, T* db, T* dtheta);

template <class T>
void nt_xent_forward(const T* a, const T* b, int64_t batch, int64_t dim, double tau, T* loss, T* saved,
                     int32_t* counts);
template <class T>
void nt_xent_backward(const T* a, const T* b, const T* saved, int64_t batch, int64_t dim, double tau, const T* dloss,
                      T* da, T* db);

}  // namespace coco::kernels::cpu

namespace coco::kernels::cuda {

// f32 elements of device scratch the forward and the backward need (not kept between them).
int64_t contrastive_workspace_size(ContrastiveKind kind, int64_t batch);

// Device pointers. T: float, __nv_bfloat16, __half (f32 math, deterministic tiled dot products).
// theta, loss, saved, workspace: f32; counts: int32. B <= 4096, D <= 2^30.
template <class T>
void info_nce_forward(const T* a, const T* b, const float* theta, int64_t batch, int64_t dim, float* loss, float* saved,
                      int32_t* counts, float* workspace, cudaStream_t stream);
template <class T>
void info_nce_backward(const T* a, const T* b, const float* theta, const float* saved, int64_t batch, int64_t dim,
                       const float* dloss, T* da, T* db, float* dtheta, float* workspace, cudaStream_t stream);

template <class T>
void nt_xent_forward(const T* a, const T* b, int64_t batch, int64_t dim, float tau, float* loss, float* saved,
                     int32_t* counts, float* workspace, cudaStream_t stream);
template <class T>
void nt_xent_backward(const T* a, const T* b, const float* saved, int64_t batch, int64_t dim, float tau,
                      const float* dloss, T* da, T* db, float* workspace, cudaStream_t stream);

}  // namespace coco::kernels::cuda
