// CUDA sequence contrastive losses (semantics in kernels/contrastive.h).
//
// B is small (a micro-batch of sequences), so the work is a handful of small launches:
//   similarity_kernel      S = scale * X Y^T, 16x16 tiles, dot products in a fixed k order
//   anchor_stats_kernel    one warp per anchor: log-sum-exp, CE term, argmax (fixed xor tree)
//   finish_loss_kernel     one block: mean of the anchor terms in a fixed tree order
// backward:
//   grad_similarity_kernel one warp per row of dS (+ the row's share of dtheta)
//   weighted_rows_kernel   dX = scale * dS Y (16x16 tiles), written straight into da / db
//   finish_loss_kernel     dtheta = sum of the row shares
// Every reduction has a fixed shape, so results are bitwise reproducible.
#include <algorithm>
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/device_convert.cuh"
#include "kernels/online_logsumexp.cuh"
#include "kernels/contrastive.h"

namespace coco::kernels::detail {
namespace {

constexpr int kTile = 16;
constexpr int kWarpsPerBlock = 4;
constexpr int kWarpThreads = kWarpsPerBlock * 32;
constexpr int kFinishThreads = 256;
constexpr int64_t kMaxBatch = 4096;

// Rows of a (rows, dim) matrix, or of the interleaving (first_0, second_0, first_1, second_1, ...).
template <class T>
struct RowSource {
  T* first;
  T* second;
  int interleaved;
  __device__ __forceinline__ T* row(int r, int dim) const {
    if (!interleaved) return first + static_cast<int64_t>(r) * dim;
    return ((r & 1) ? second : first) + static_cast<int64_t>(r >> 1) * dim;
  }
};

// S: (rows_x, rows_y) = scale * X Y^T, scale = log_scale ? exp(*log_scale) : fixed_scale.
// Block (kTile, kTile), grid (ceil(rows_y / kTile), ceil(rows_x / kTile)).
template <class T>
__global__ void __launch_bounds__(kTile* kTile)
    similarity_kernel(RowSource<const T> x, RowSource<const T> y, int rows_x, int rows_y, int dim,
                      const float* __restrict__ log_scale, float fixed_scale, float* __restrict__ S) {
  __shared__ float x_tile[kTile][kTile + 1];
  __shared__ float y_tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row0 = blockIdx.y * kTile, col0 = blockIdx.x * kTile;
  float acc = 0.0f;
  for (int k0 = 0; k0 < dim; k0 += kTile) {
    const int k = k0 + tx;
    x_tile[ty][tx] = (row0 + ty < rows_x && k < dim) ? to_f32(x.row(row0 + ty, dim)[k]) : 0.0f;
    y_tile[ty][tx] = (col0 + ty < rows_y && k < dim) ? to_f32(y.row(col0 + ty, dim)[k]) : 0.0f;
    __syncthreads();
    for (int kk = 0; kk < kTile; ++kk) acc += x_tile[ty][kk] * y_tile[tx][kk];
    __syncthreads();
  }
  const int r = row0 + ty, c = col0 + tx;
  if (r < rows_x && c < rows_y) {
    const float scale = log_scale ? expf(*log_scale) : fixed_scale;
    S[static_cast<int64_t>(r) * rows_y + c] = scale * acc;
  }
}

// Running softmax statistics and argmax per anchor (kernels/online_logsumexp.cuh).
using AnchorState = LogSumExpState;

__device__ __forceinline__ AnchorState warp_reduce(AnchorState s) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    AnchorState other;
    other.max = __shfl_xor_sync(0xffffffffu, s.max, offset);
    other.rest = __shfl_xor_sync(0xffffffffu, s.rest, offset);
    other.best_value = __shfl_xor_sync(0xffffffffu, s.best_value, offset);
    other.best_index = __shfl_xor_sync(0xffffffffu, s.best_index, offset);
    merge(s, other);
  }
  return s;
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// One warp per anchor k < anchors. info_nce (kind 0, S: (B, B)): anchors 0..B-1 are rows, B..2B-1
// columns; positive = the diagonal. nt_xent (kind 1, S: (2B, 2B)): anchor k is row k, the
// diagonal excluded, positive k ^ 1.
// -> lse[k] (saved), anchor_loss[k], anchor_correct[k] (workspace)
__global__ void __launch_bounds__(kWarpThreads)
    anchor_stats_kernel(const float* __restrict__ S, int batch, int kind, float* __restrict__ lse,
                        float* __restrict__ anchor_loss, float* __restrict__ anchor_correct) {
  const int lane = threadIdx.x % 32;
  const int anchor = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const int anchors = 2 * batch;
  if (anchor >= anchors) return;  // whole warp; no block barrier in this kernel
  const float* values;
  int64_t stride;
  int count, excluded, positive;
  if (kind == static_cast<int>(ContrastiveKind::info_nce)) {
    count = batch;
    excluded = -1;
    if (anchor < batch) {
      values = S + static_cast<int64_t>(anchor) * batch;
      stride = 1;
      positive = anchor;
    } else {
      values = S + (anchor - batch);
      stride = batch;
      positive = anchor - batch;
    }
  } else {
    count = anchors;
    values = S + static_cast<int64_t>(anchor) * anchors;
    stride = 1;
    excluded = anchor;
    positive = anchor ^ 1;
  }
  AnchorState s{-INFINITY, -1.0f, -INFINITY, INT_MAX};
  for (int j = lane; j < count; j += 32)
    if (j != excluded) absorb(s, values[j * stride], j);
  s = warp_reduce(s);
  if (lane == 0) {
    const bool undefined = s.max == INFINITY || s.rest != s.rest;
    lse[anchor] = undefined ? NAN : s.max + log1pf(s.rest);
    // (max - s_pos) + log1p(rest): exact when the positive is the maximum, so a loss near zero keeps
    // its relative precision.
    anchor_loss[anchor] = undefined ? NAN : (s.max - values[positive * stride]) + log1pf(s.rest);
    anchor_correct[anchor] = s.best_index == positive ? 1.0f : 0.0f;
  }
}

// out = scale * sum(values[0, n)) in a fixed tree order; optionally counts = {sum(flags), n}.
// One block of kFinishThreads.
__global__ void __launch_bounds__(kFinishThreads)
    finish_sum_kernel(const float* __restrict__ values, int n, float scale, float* __restrict__ out,
                      const float* __restrict__ flags, int32_t* __restrict__ counts) {
  __shared__ float value_sum[kFinishThreads];
  __shared__ float flag_sum[kFinishThreads];
  float v = 0.0f, f = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    v += values[i];
    if (flags) f += flags[i];
  }
  value_sum[threadIdx.x] = v;
  flag_sum[threadIdx.x] = f;
  __syncthreads();
  for (int half = kFinishThreads / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) {
      value_sum[threadIdx.x] += value_sum[threadIdx.x + half];
      flag_sum[threadIdx.x] += flag_sum[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *out = scale * value_sum[0];
    if (counts) {
      counts[kContrastiveCountCorrect] = static_cast<int32_t>(flag_sum[0]);
      counts[kContrastiveCountAnchors] = n;
    }
  }
}

// dS (rows, rows) for an upstream gradient *dloss; one warp per row r.
// info_nce (rows = B): dS_rc = g (exp(S_rc - lse_row_r) + exp(S_rc - lse_col_c) - 2 [r == c]),
//   theta_share[r] = sum_c dS_rc * S_rc.
// nt_xent (rows = 2B): dS_rc = g (exp(S_rc - lse_r) + exp(S_cr - lse_c) - 2 [c == r ^ 1]), dS_rr = 0.
// g = dloss / (2B) in both cases.
__global__ void __launch_bounds__(kWarpThreads)
    grad_similarity_kernel(const float* __restrict__ saved, int batch, int kind, const float* __restrict__ dloss,
                           float* __restrict__ dS, float* __restrict__ theta_share) {
  const int lane = threadIdx.x % 32;
  const int r = blockIdx.x * kWarpsPerBlock + threadIdx.x / 32;
  const bool info_nce = kind == static_cast<int>(ContrastiveKind::info_nce);
  const int rows = info_nce ? batch : 2 * batch;
  if (r >= rows) return;  // whole warp
  const float g = *dloss / static_cast<float>(2 * batch);
  const float* S = saved;
  const float* lse = saved + static_cast<int64_t>(rows) * rows;
  float share = 0.0f;
  for (int c = lane; c < rows; c += 32) {
    const float s = S[static_cast<int64_t>(r) * rows + c];
    float grad;
    if (info_nce) {
      const float delta = r == c ? 2.0f : 0.0f;
      grad = g * (expf(s - lse[r]) + expf(s - lse[batch + c]) - delta);
      share += grad * s;
    } else if (r == c) {
      grad = 0.0f;
    } else {
      const float delta = c == (r ^ 1) ? 2.0f : 0.0f;
      grad = g * (expf(s - lse[r]) + expf(S[static_cast<int64_t>(c) * rows + r] - lse[c]) - delta);
    }
    dS[static_cast<int64_t>(r) * rows + c] = grad;
  }
  share = warp_sum(share);
  if (lane == 0 && theta_share) theta_share[r] = share;
}

// out.row(r)[d] = scale * sum_s W[r * w_row_stride + s * w_col_stride] * y.row(s)[d]
// for r < rows, s < inner, d < dim. scale = log_scale ? exp(*log_scale) : fixed_scale.
// Block (kTile, kTile), grid (ceil(dim / kTile), ceil(rows / kTile)).
template <class T>
__global__ void __launch_bounds__(kTile* kTile)
    weighted_rows_kernel(const float* __restrict__ W, int64_t w_row_stride, int64_t w_col_stride, RowSource<const T> y,
                         int rows, int inner, int dim, const float* __restrict__ log_scale, float fixed_scale,
                         RowSource<T> out) {
  __shared__ float w_tile[kTile][kTile + 1];
  __shared__ float y_tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int row0 = blockIdx.y * kTile, d0 = blockIdx.x * kTile;
  float acc = 0.0f;
  for (int s0 = 0; s0 < inner; s0 += kTile) {
    w_tile[ty][tx] =
        (row0 + ty < rows && s0 + tx < inner) ? W[(row0 + ty) * w_row_stride + (s0 + tx) * w_col_stride] : 0.0f;
    y_tile[ty][tx] = (s0 + ty < inner && d0 + tx < dim) ? to_f32(y.row(s0 + ty, dim)[d0 + tx]) : 0.0f;
    __syncthreads();
    for (int kk = 0; kk < kTile; ++kk) acc += w_tile[ty][kk] * y_tile[kk][tx];
    __syncthreads();
  }
  const int r = row0 + ty, d = d0 + tx;
  if (r < rows && d < dim) {
    const float scale = log_scale ? expf(*log_scale) : fixed_scale;
    out.row(r, dim)[d] = from_f32<T>(scale * acc);
  }
}

void check_sizes(int64_t batch, int64_t dim, const char* op) {
  if (batch < 1 || batch > kMaxBatch || dim < 1 || dim > (1 << 30))
    throw std::invalid_argument(std::string(op) + ": expected 1 <= batch <= " + std::to_string(kMaxBatch) +
                                " and 1 <= dim <= 2^30, got batch " + std::to_string(batch) + ", dim " +
                                std::to_string(dim));
}

void check_tau(float tau, const char* op) {
  if (!(tau > 0.0f) || !std::isfinite(tau))
    throw std::invalid_argument(std::string(op) + ": tau must be a finite value > 0, got " + std::to_string(tau));
}

dim3 tile_grid(int64_t cols, int64_t rows) { return dim3(ceil_div(cols, kTile), ceil_div(rows, kTile)); }
unsigned warp_blocks(int64_t warps) { return ceil_div(warps, kWarpsPerBlock); }

void launch_anchor_stages(const float* saved_S, float* saved_lse, int batch, ContrastiveKind kind, float* loss,
                          int32_t* counts, float* workspace, cudaStream_t stream) {
  const int anchors = 2 * batch;
  float* anchor_loss = workspace;
  float* anchor_correct = workspace + anchors;
  COCO_LAUNCH(anchor_stats_kernel, dim3(warp_blocks(anchors)), dim3(kWarpThreads), 0, stream, saved_S, batch,
              static_cast<int>(kind), saved_lse, anchor_loss, anchor_correct);
  COCO_LAUNCH(finish_sum_kernel, dim3(1), dim3(kFinishThreads), 0, stream, static_cast<const float*>(anchor_loss),
              anchors, 1.0f / static_cast<float>(anchors), loss, static_cast<const float*>(anchor_correct), counts);
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

int64_t contrastive_workspace_size(ContrastiveKind kind, int64_t batch) {
  const int64_t rows = kind == ContrastiveKind::info_nce ? batch : 2 * batch;
  return std::max<int64_t>(4 * batch, rows * rows + rows);
}

template <class T>
void info_nce_forward(const T* a, const T* b, const float* theta, int64_t batch, int64_t dim, float* loss, float* saved,
                      int32_t* counts, float* workspace, cudaStream_t stream) {
  using namespace detail;
  check_sizes(batch, dim, "kernels::cuda::info_nce_forward");
  const int n = static_cast<int>(batch), d = static_cast<int>(dim);
  COCO_LAUNCH(similarity_kernel<T>, tile_grid(n, n), dim3(kTile, kTile), 0, stream, RowSource<const T>{a, a, 0},
              RowSource<const T>{b, b, 0}, n, n, d, theta, 1.0f, saved);
  launch_anchor_stages(saved, saved + batch * batch, n, ContrastiveKind::info_nce, loss, counts, workspace, stream);
}

template <class T>
void info_nce_backward(const T* a, const T* b, const float* theta, const float* saved, int64_t batch, int64_t dim,
                       const float* dloss, T* da, T* db, float* dtheta, float* workspace, cudaStream_t stream) {
  using namespace detail;
  check_sizes(batch, dim, "kernels::cuda::info_nce_backward");
  const int n = static_cast<int>(batch), d = static_cast<int>(dim);
  float* dS = workspace;
  float* theta_share = workspace + batch * batch;
  COCO_LAUNCH(grad_similarity_kernel, dim3(warp_blocks(n)), dim3(kWarpThreads), 0, stream, saved, n,
              static_cast<int>(ContrastiveKind::info_nce), dloss, dS, theta_share);
  // da = e^theta dS b; db = e^theta dS^T a
  COCO_LAUNCH(weighted_rows_kernel<T>, tile_grid(d, n), dim3(kTile, kTile), 0, stream, static_cast<const float*>(dS),
              static_cast<int64_t>(n), int64_t{1}, RowSource<const T>{b, b, 0}, n, n, d, theta, 1.0f,
              RowSource<T>{da, da, 0});
  COCO_LAUNCH(weighted_rows_kernel<T>, tile_grid(d, n), dim3(kTile, kTile), 0, stream, static_cast<const float*>(dS),
              int64_t{1}, static_cast<int64_t>(n), RowSource<const T>{a, a, 0}, n, n, d, theta, 1.0f,
              RowSource<T>{db, db, 0});
  COCO_LAUNCH(finish_sum_kernel, dim3(1), dim3(kFinishThreads), 0, stream, static_cast<const float*>(theta_share), n,
              1.0f, dtheta, static_cast<const float*>(nullptr), static_cast<int32_t*>(nullptr));
}

template <class T>
void nt_xent_forward(const T* a, const T* b, int64_t batch, int64_t dim, float tau, float* loss, float* saved,
                     int32_t* counts, float* workspace, cudaStream_t stream) {
  using namespace detail;
  check_sizes(batch, dim, "kernels::cuda::nt_xent_forward");
  check_tau(tau, "kernels::cuda::nt_xent_forward");
  const int m = static_cast<int>(2 * batch), d = static_cast<int>(dim);
  const RowSource<const T> z{a, b, 1};
  COCO_LAUNCH(similarity_kernel<T>, tile_grid(m, m), dim3(kTile, kTile), 0, stream, z, z, m, m, d,
              static_cast<const float*>(nullptr), 1.0f / tau, saved);
  launch_anchor_stages(saved, saved + static_cast<int64_t>(m) * m, static_cast<int>(batch), ContrastiveKind::nt_xent,
                       loss, counts, workspace, stream);
}

template <class T>
void nt_xent_backward(const T* a, const T* b, const float* saved, int64_t batch, int64_t dim, float tau,
                      const float* dloss, T* da, T* db, float* workspace, cudaStream_t stream) {
  using namespace detail;
  check_sizes(batch, dim, "kernels::cuda::nt_xent_backward");
  check_tau(tau, "kernels::cuda::nt_xent_backward");
  const int m = static_cast<int>(2 * batch), d = static_cast<int>(dim);
  float* dS = workspace;
  COCO_LAUNCH(grad_similarity_kernel, dim3(warp_blocks(m)), dim3(kWarpThreads), 0, stream, saved,
              static_cast<int>(batch), static_cast<int>(ContrastiveKind::nt_xent), dloss, dS,
              static_cast<float*>(nullptr));
  // dZ = dS_sym Z / tau, de-interleaved into da (even rows) and db (odd rows)
  COCO_LAUNCH(weighted_rows_kernel<T>, tile_grid(d, m), dim3(kTile, kTile), 0, stream, static_cast<const float*>(dS),
              static_cast<int64_t>(m), int64_t{1}, RowSource<const T>{a, b, 1}, m, m, d,
              static_cast<const float*>(nullptr), 1.0f / tau, RowSource<T>{da, db, 1});
}

#define COCO_INSTANTIATE_CONTRASTIVE(T)                                                                              \
  template void info_nce_forward<T>(const T*, const T*, const float*, int64_t, int64_t, float*, float*, int32_t*,    \
                                    float*, cudaStream_t);                                                           \
  template void info_nce_backward<T>(const T*, const T*, const float*, const float*, int64_t, int64_t, const float*, \
                                     T*, T*, float*, float*, cudaStream_t);                                          \
  template void nt_xent_forward<T>(const T*, const T*, int64_t, int64_t, float, float*, float*, int32_t*, float*,    \
                                   cudaStream_t);                                                                    \
  template void nt_xent_backward<T>(const T*, const T*, const float*, int64_t, int64_t, float, const float*, T*, T*, \
                                    float*, cudaStream_t);
COCO_INSTANTIATE_CONTRASTIVE(float)
COCO_INSTANTIATE_CONTRASTIVE(__nv_bfloat16)
COCO_INSTANTIATE_CONTRASTIVE(__half)
#undef COCO_INSTANTIATE_CONTRASTIVE

}  // namespace coco::kernels::cuda
