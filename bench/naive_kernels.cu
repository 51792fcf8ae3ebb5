// Naive baseline kernels for coco-bench (see naive_kernels.h): deliberately plain, one thread per
// element or per row, f32 math on bf16 storage.
#include "bench/naive_kernels.h"

#include <cmath>

#include "engine/runtime/launch.cuh"
#include "kernels/cast_convert.h"

namespace coco::bench::naive {
namespace {

using kernels::detail::convert_element;
using kernels::detail::convert_from_f32;
using bf16 = __nv_bfloat16;

constexpr int kBlock = 256;

unsigned blocks_for(int64_t n) { return ceil_div(n, kBlock); }

__device__ inline float f32(bf16 v) { return convert_element<float>(v); }

__global__ void layernorm_forward_kernel(bf16* out, const bf16* x, const bf16* gamma, const bf16* beta, int64_t rows,
                                         int64_t C, float eps) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const bf16* row = x + r * C;
  float mean = 0.0f;
  for (int64_t c = 0; c < C; ++c) mean += f32(row[c]);
  mean /= static_cast<float>(C);
  float var = 0.0f;
  for (int64_t c = 0; c < C; ++c) {
    const float d = f32(row[c]) - mean;
    var += d * d;
  }
  const float rstd = 1.0f / sqrtf(var / static_cast<float>(C) + eps);
  for (int64_t c = 0; c < C; ++c)
    out[r * C + c] = convert_from_f32<bf16>((f32(row[c]) - mean) * rstd * f32(gamma[c]) + f32(beta[c]));
}

__device__ inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ inline float gelu_erf_derivative(float x) {
  return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * 0.39894228040143268f * expf(-0.5f * x * x);
}

__global__ void gelu_forward_kernel(bf16* out, const bf16* x, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = convert_from_f32<bf16>(gelu_erf(f32(x[i])));
}

__global__ void gelu_backward_kernel(bf16* dx, const bf16* dout, const bf16* x, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) dx[i] = convert_from_f32<bf16>(f32(dout[i]) * gelu_erf_derivative(f32(x[i])));
}

__global__ void softmax_forward_kernel(bf16* y, const bf16* x, int64_t rows, int64_t width) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const bf16* row = x + r * width;
  float max_value = -INFINITY;
  for (int64_t c = 0; c < width; ++c) max_value = fmaxf(max_value, f32(row[c]));
  float total = 0.0f;
  for (int64_t c = 0; c < width; ++c) total += expf(f32(row[c]) - max_value);
  for (int64_t c = 0; c < width; ++c) y[r * width + c] = convert_from_f32<bf16>(expf(f32(row[c]) - max_value) / total);
}

__global__ void split_heads_kernel(bf16* out, const bf16* in, int64_t B, int64_t T, int64_t H, int64_t Dh) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * T * H * Dh) return;
  // out index i = ((b*H + h)*T + t)*Dh + d
  const int64_t d = i % Dh, t = (i / Dh) % T, h = (i / (Dh * T)) % H, b = i / (Dh * T * H);
  out[i] = in[(b * T + t) * H * Dh + h * Dh + d];
}

__global__ void dropout_kernel(bf16* out, const bf16* x, int64_t n, float p, float keep_scale, rng::Stream stream) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) {
    const bool dropped = stream.uniform(static_cast<uint64_t>(i)) < p;
    out[i] = convert_from_f32<bf16>(f32(x[i]) * (dropped ? 0.0f : keep_scale));
  }
}

__global__ void cast_kernel(float* out, const bf16* in, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = f32(in[i]);
}

__global__ void embedding_forward_kernel(bf16* out, const int32_t* ids, const bf16* tok, const bf16* pos, int64_t B,
                                         int64_t T, int64_t E) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= B * T * E) return;
  const int64_t e = i % E, bt = i / E, t = bt % T;
  out[i] = convert_from_f32<bf16>(f32(tok[static_cast<int64_t>(ids[bt]) * E + e]) + f32(pos[t * E + e]));
}

__global__ void cross_entropy_rows_kernel(float* row_loss, float* row_lse, const bf16* logits, const int32_t* targets,
                                          int64_t rows, int64_t V) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const bf16* row = logits + r * V;
  float max_value = -INFINITY;
  for (int64_t c = 0; c < V; ++c) max_value = fmaxf(max_value, f32(row[c]));
  float total = 0.0f;
  for (int64_t c = 0; c < V; ++c) total += expf(f32(row[c]) - max_value);
  const float lse = max_value + logf(total);
  row_lse[r] = lse;
  const int32_t target = targets[r];
  row_loss[r] = target >= 0 && target < V ? lse - f32(row[target]) : 0.0f;
}

__global__ void l2_normalize_kernel(bf16* y, float* norms, const bf16* x, int64_t rows, int64_t dim, float eps) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float sum_sq = 0.0f;
  for (int64_t c = 0; c < dim; ++c) sum_sq += f32(x[r * dim + c]) * f32(x[r * dim + c]);
  const float norm = sqrtf(sum_sq);
  norms[r] = norm;
  const float denominator = norm < eps ? eps : norm;
  for (int64_t c = 0; c < dim; ++c) y[r * dim + c] = convert_from_f32<bf16>(f32(x[r * dim + c]) / denominator);
}

__global__ void gather_rows_kernel(bf16* out, const bf16* src, const int32_t* index, int64_t count, int64_t dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count * dim) out[i] = src[static_cast<int64_t>(index[i / dim]) * dim + i % dim];
}

__global__ void adamw_kernel(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
                             float decay_factor, float beta1, float beta2, float step_size, float bc2_sqrt, float eps) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float g = grad[i];
  const float p = param[i] * decay_factor;
  const float m = beta1 * exp_avg[i] + (1.0f - beta1) * g;
  const float v = beta2 * exp_avg_sq[i] + (1.0f - beta2) * g * g;
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  param[i] = p - step_size * m / (sqrtf(v) / bc2_sqrt + eps);
}

// scores (B*H, T, T): one thread per (bh, i, j).
__global__ void attention_scores_kernel(float* scores, const bf16* q, const bf16* k, const uint8_t* key_mask,
                                        const bf16* bias, int64_t B, int64_t H, int64_t T, int64_t Dh) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= B * H * T * T) return;
  const int64_t j = idx % T, i = (idx / T) % T, bh = idx / (T * T), h = bh % H, b = bh / H;
  if (key_mask && key_mask[b * T + j] == 0) {
    scores[idx] = -INFINITY;
    return;
  }
  float dot = 0.0f;
  for (int64_t d = 0; d < Dh; ++d) dot += f32(q[(bh * T + i) * Dh + d]) * f32(k[(bh * T + j) * Dh + d]);
  scores[idx] = dot * rsqrtf(static_cast<float>(Dh)) + (bias ? f32(bias[(h * T + i) * T + j]) : 0.0f);
}

// In place over each row of T scores; a fully masked row becomes zeros.
__global__ void attention_softmax_kernel(float* scores, int64_t rows, int64_t T) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  float* row = scores + r * T;
  float max_value = -INFINITY;
  for (int64_t j = 0; j < T; ++j) max_value = fmaxf(max_value, row[j]);
  if (max_value == -INFINITY) {
    for (int64_t j = 0; j < T; ++j) row[j] = 0.0f;
    return;
  }
  float total = 0.0f;
  for (int64_t j = 0; j < T; ++j) total += expf(row[j] - max_value);
  for (int64_t j = 0; j < T; ++j) row[j] = expf(row[j] - max_value) / total;
}

// out (B*H, T, Dh): one thread per (bh, i, d).
__global__ void attention_pv_kernel(bf16* out, const float* probs, const bf16* v, int64_t BH, int64_t T, int64_t Dh) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= BH * T * Dh) return;
  const int64_t d = idx % Dh, i = (idx / Dh) % T, bh = idx / (Dh * T);
  float acc = 0.0f;
  for (int64_t j = 0; j < T; ++j) acc += probs[(bh * T + i) * T + j] * f32(v[(bh * T + j) * Dh + d]);
  out[idx] = convert_from_f32<bf16>(acc);
}

}  // namespace

void layernorm_forward(bf16* out, const bf16* x, const bf16* gamma, const bf16* beta, int64_t rows, int64_t C,
                       float eps, cudaStream_t stream) {
  COCO_LAUNCH(layernorm_forward_kernel, dim3(blocks_for(rows)), dim3(kBlock), 0, stream, out, x, gamma, beta, rows, C,
              eps);
}

void gelu_forward(bf16* out, const bf16* x, int64_t n, cudaStream_t stream) {
  COCO_LAUNCH(gelu_forward_kernel, dim3(blocks_for(n)), dim3(kBlock), 0, stream, out, x, n);
}

void gelu_backward(bf16* dx, const bf16* dout, const bf16* x, int64_t n, cudaStream_t stream) {
  COCO_LAUNCH(gelu_backward_kernel, dim3(blocks_for(n)), dim3(kBlock), 0, stream, dx, dout, x, n);
}

void softmax_forward(bf16* y, const bf16* x, int64_t rows, int64_t width, cudaStream_t stream) {
  COCO_LAUNCH(softmax_forward_kernel, dim3(blocks_for(rows)), dim3(kBlock), 0, stream, y, x, rows, width);
}

void split_heads(bf16* out, const bf16* in, int64_t B, int64_t T, int64_t H, int64_t Dh, cudaStream_t stream) {
  COCO_LAUNCH(split_heads_kernel, dim3(blocks_for(B * T * H * Dh)), dim3(kBlock), 0, stream, out, in, B, T, H, Dh);
}

void dropout_apply(bf16* out, const bf16* x, int64_t n, float p, const rng::Stream& rng, cudaStream_t stream) {
  const float keep_scale = static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
  COCO_LAUNCH(dropout_kernel, dim3(blocks_for(n)), dim3(kBlock), 0, stream, out, x, n, p, keep_scale, rng);
}

void cast_bf16_to_f32(float* out, const bf16* in, int64_t n, cudaStream_t stream) {
  COCO_LAUNCH(cast_kernel, dim3(blocks_for(n)), dim3(kBlock), 0, stream, out, in, n);
}

void embedding_forward(bf16* out, const int32_t* ids, const bf16* tok, const bf16* pos, int64_t B, int64_t T, int64_t E,
                       cudaStream_t stream) {
  COCO_LAUNCH(embedding_forward_kernel, dim3(blocks_for(B * T * E)), dim3(kBlock), 0, stream, out, ids, tok, pos, B, T,
              E);
}

void cross_entropy_rows(float* row_loss, float* row_lse, const bf16* logits, const int32_t* targets, int64_t rows,
                        int64_t V, cudaStream_t stream) {
  COCO_LAUNCH(cross_entropy_rows_kernel, dim3(blocks_for(rows)), dim3(kBlock), 0, stream, row_loss, row_lse, logits,
              targets, rows, V);
}

void l2_normalize_forward(bf16* y, float* norms, const bf16* x, int64_t rows, int64_t dim, float eps,
                          cudaStream_t stream) {
  COCO_LAUNCH(l2_normalize_kernel, dim3(blocks_for(rows)), dim3(kBlock), 0, stream, y, norms, x, rows, dim, eps);
}

void gather_rows(bf16* out, const bf16* src, const int32_t* index, int64_t count, int64_t dim, cudaStream_t stream) {
  COCO_LAUNCH(gather_rows_kernel, dim3(blocks_for(count * dim)), dim3(kBlock), 0, stream, out, src, index, count, dim);
}

void adamw_flat(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, float decay_factor,
                float beta1, float beta2, float step_size, float bc2_sqrt, float eps, cudaStream_t stream) {
  COCO_LAUNCH(adamw_kernel, dim3(blocks_for(n)), dim3(kBlock), 0, stream, param, grad, exp_avg, exp_avg_sq, n,
              decay_factor, beta1, beta2, step_size, bc2_sqrt, eps);
}

void attention_forward(bf16* out, float* scores, const bf16* q, const bf16* k, const bf16* v, const uint8_t* key_mask,
                       const bf16* bias, int64_t B, int64_t H, int64_t T, int64_t Dh, cudaStream_t stream) {
  COCO_LAUNCH(attention_scores_kernel, dim3(blocks_for(B * H * T * T)), dim3(kBlock), 0, stream, scores, q, k, key_mask,
              bias, B, H, T, Dh);
  COCO_LAUNCH(attention_softmax_kernel, dim3(blocks_for(B * H * T)), dim3(kBlock), 0, stream, scores, B * H * T, T);
  COCO_LAUNCH(attention_pv_kernel, dim3(blocks_for(B * H * T * Dh)), dim3(kBlock), 0, stream, out, scores, v, B * H, T,
              Dh);
}

}  // namespace coco::bench::naive
