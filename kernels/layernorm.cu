// CUDA LayerNorm: one warp per row (statistics by warp butterfly reductions, so every lane holds the
// same bitwise value) reading 128 bits per lane where the row allows, and a deterministic two-kernel
// column reduction for dgamma/dbeta.
#include <algorithm>
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/cast_convert.h"
#include "kernels/layernorm.h"
#include "kernels/vector_access.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kRowsPerBlock = 8;  // warps per block, one row each
constexpr int kParamTileColumns = 32;
constexpr int kParamTileRows = 8;
constexpr int64_t kMaxParamChunks = 128;
constexpr int64_t kMinRowsPerParamChunk = 32;

template <class T>
__device__ __forceinline__ float load_f32(const T* p) {
  return convert_element<float>(*p);
}

__device__ __forceinline__ float warp_sum(float value) {
  // Butterfly: after each step a lane and its partner hold a + b and b + a, which are equal, so all
  // lanes end with the same bits.
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

// Lane `lane` of a row's warp owns the packs lane * N, (lane + 32) * N, ... of N = kPackElements<T>
// elements and accumulates them in element order, whether it reads them 128 bits at a time (C % N == 0
// and aligned pointers) or one by one, so the statistics do not depend on the pointers' alignment.
template <class T, class Body>
__device__ __forceinline__ void for_each_row_pack(int C, bool vector_ok, int lane, Body&& body) {
  for_each_pack_of_worker<kPackElements<T>>(C, vector_ok, lane, 32, body);
}

// x, out, residual, sum: (rows, C); gamma, beta: (C); mean, rstd: (rows) or nullptr.
// With residual != nullptr the row normalized is sum = x + residual, rounded to T and stored.
template <class T>
__global__ void layernorm_forward_kernel(T* __restrict__ out, T* __restrict__ sum, float* __restrict__ mean_out,
                                         float* __restrict__ rstd_out, const T* __restrict__ x,
                                         const T* __restrict__ residual, const T* __restrict__ gamma,
                                         const T* __restrict__ beta, int64_t rows, int C, float eps) {
  constexpr int N = kPackElements<T>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps only; the kernel has no block barrier
  const bool vector_ok = C % N == 0 && packs_aligned<N>(out, sum, x, residual, gamma, beta);
  const T* input = x + row * C;
  float total = 0.0f;
  if (residual != nullptr) {
    const T* residual_row = residual + row * C;
    T* sum_row = sum + row * C;
    for_each_row_pack<T>(C, vector_ok, lane, [&](auto width, int64_t c) {
      constexpr int W = decltype(width)::value;
      const Pack<T, W> a = load_pack<W>(input + c), b = load_pack<W>(residual_row + c);
      Pack<T, W> s;
#pragma unroll
      for (int k = 0; k < W; ++k) {
        s.v[k] = convert_from_f32<T>(convert_element<float>(a.v[k]) + convert_element<float>(b.v[k]));
        total += convert_element<float>(s.v[k]);
      }
      store_pack<W>(sum_row + c, s);
    });
    input = sum_row;
  } else {
    for_each_row_pack<T>(C, vector_ok, lane, [&](auto width, int64_t c) {
      constexpr int W = decltype(width)::value;
      const Pack<T, W> v = load_pack<W>(input + c);
#pragma unroll
      for (int k = 0; k < W; ++k) total += convert_element<float>(v.v[k]);
    });
  }
  const float mean = warp_sum(total) / static_cast<float>(C);
  float squares = 0.0f;
  for_each_row_pack<T>(C, vector_ok, lane, [&](auto width, int64_t c) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> v = load_pack<W>(input + c);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float d = convert_element<float>(v.v[k]) - mean;
      squares += d * d;
    }
  });
  const float rstd = rsqrtf(warp_sum(squares) / static_cast<float>(C) + eps);
  T* out_row = out + row * C;
  for_each_row_pack<T>(C, vector_ok, lane, [&](auto width, int64_t c) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> v = load_pack<W>(input + c), g = load_pack<W>(gamma + c), b = load_pack<W>(beta + c);
    Pack<T, W> y;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float xhat = (convert_element<float>(v.v[k]) - mean) * rstd;
      y.v[k] = convert_from_f32<T>(xhat * convert_element<float>(g.v[k]) + convert_element<float>(b.v[k]));
    }
    store_pack<W>(out_row + c, y);
  });
  if (lane == 0) {
    if (mean_out != nullptr) mean_out[row] = mean;
    if (rstd_out != nullptr) rstd_out[row] = rstd;
  }
}

// dx, dout, x, dx_extra: (rows, C); gamma: (C); mean, rstd: (rows).
template <class T>
__global__ void layernorm_backward_input_kernel(T* __restrict__ dx, const T* __restrict__ dout,
                                                const T* __restrict__ dx_extra, const T* __restrict__ x,
                                                const T* __restrict__ gamma, const float* __restrict__ mean,
                                                const float* __restrict__ rstd, int64_t rows, int C) {
  constexpr int N = kPackElements<T>;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  const bool vector_ok = C % N == 0 && packs_aligned<N>(dx, dout, dx_extra, x, gamma);
  const T* dout_row = dout + row * C;
  const T* x_row = x + row * C;
  const float row_mean = mean[row], row_rstd = rstd[row];
  float sum_g = 0.0f, sum_g_xhat = 0.0f;
  for_each_row_pack<T>(C, vector_ok, lane, [&](auto width, int64_t c) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> d = load_pack<W>(dout_row + c), g = load_pack<W>(gamma + c), v = load_pack<W>(x_row + c);
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float dg = convert_element<float>(d.v[k]) * convert_element<float>(g.v[k]);
      sum_g += dg;
      sum_g_xhat += dg * ((convert_element<float>(v.v[k]) - row_mean) * row_rstd);
    }
  });
  const float mean_g = warp_sum(sum_g) / static_cast<float>(C);
  const float mean_g_xhat = warp_sum(sum_g_xhat) / static_cast<float>(C);
  T* dx_row = dx + row * C;
  const T* extra_row = dx_extra != nullptr ? dx_extra + row * C : nullptr;
  for_each_row_pack<T>(C, vector_ok, lane, [&](auto width, int64_t c) {
    constexpr int W = decltype(width)::value;
    const Pack<T, W> d = load_pack<W>(dout_row + c), g = load_pack<W>(gamma + c), v = load_pack<W>(x_row + c);
    Pack<T, W> e{};
    if (extra_row != nullptr) e = load_pack<W>(extra_row + c);
    Pack<T, W> out;
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const float xhat = (convert_element<float>(v.v[k]) - row_mean) * row_rstd;
      const float dg = convert_element<float>(d.v[k]) * convert_element<float>(g.v[k]);
      float value = (dg - mean_g - xhat * mean_g_xhat) * row_rstd;
      if (extra_row != nullptr) value += convert_element<float>(e.v[k]);
      out.v[k] = convert_from_f32<T>(value);
    }
    store_pack<W>(dx_row + c, out);
  });
}

// Per-chunk column sums: partial_gamma, partial_beta: (chunks, C) with
//   partial_gamma[k, c] = sum over rows r of chunk k of dout[r, c] * xhat[r, c]  (partial_beta: dout).
// Grid (ceil(C / 32), chunks), block (32, 8): the 8 row lanes take rows r0 + ty, r0 + ty + 8, ... in
// order, then lane 0 adds the 8 lane sums in order.
template <class T>
__global__ void layernorm_param_partials_kernel(float* __restrict__ partial_gamma, float* __restrict__ partial_beta,
                                                const T* __restrict__ dout, const T* __restrict__ x,
                                                const float* __restrict__ mean, const float* __restrict__ rstd,
                                                int64_t rows, int C, int64_t rows_per_chunk) {
  __shared__ float gamma_sums[kParamTileRows][kParamTileColumns + 1];
  __shared__ float beta_sums[kParamTileRows][kParamTileColumns + 1];
  const int c = blockIdx.x * kParamTileColumns + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t first_row = chunk * rows_per_chunk;
  const int64_t end_row = first_row + rows_per_chunk < rows ? first_row + rows_per_chunk : rows;
  float sum_gamma = 0.0f, sum_beta = 0.0f;
  if (c < C) {
    for (int64_t r = first_row + threadIdx.y; r < end_row; r += kParamTileRows) {
      const float d = load_f32(dout + r * C + c);
      sum_gamma += d * ((load_f32(x + r * C + c) - mean[r]) * rstd[r]);
      sum_beta += d;
    }
  }
  gamma_sums[threadIdx.y][threadIdx.x] = sum_gamma;
  beta_sums[threadIdx.y][threadIdx.x] = sum_beta;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float total_gamma = 0.0f, total_beta = 0.0f;
    for (int i = 0; i < kParamTileRows; ++i) {
      total_gamma += gamma_sums[i][threadIdx.x];
      total_beta += beta_sums[i][threadIdx.x];
    }
    partial_gamma[chunk * C + c] = total_gamma;
    partial_beta[chunk * C + c] = total_beta;
  }
}

// dgamma[c] += sum_k partial_gamma[k, c] (k in order); same for dbeta. Either may be nullptr.
template <class GradT>
__global__ void layernorm_param_finish_kernel(GradT* __restrict__ dgamma, GradT* __restrict__ dbeta,
                                              const float* __restrict__ partial_gamma,
                                              const float* __restrict__ partial_beta, int64_t chunks, int C) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float total_gamma = 0.0f, total_beta = 0.0f;
  for (int64_t k = 0; k < chunks; ++k) {
    total_gamma += partial_gamma[k * C + c];
    total_beta += partial_beta[k * C + c];
  }
  if (dgamma != nullptr) dgamma[c] = convert_from_f32<GradT>(convert_element<float>(dgamma[c]) + total_gamma);
  if (dbeta != nullptr) dbeta[c] = convert_from_f32<GradT>(convert_element<float>(dbeta[c]) + total_beta);
}

struct ParamChunking {
  int64_t chunks = 0;
  int64_t rows_per_chunk = 0;
};

// Fixed by the shape alone (never by the device), so the summation order is reproducible everywhere.
ParamChunking param_chunking(int64_t rows) {
  ParamChunking p;
  if (rows <= 0) return p;
  const int64_t wanted = std::clamp<int64_t>(rows / kMinRowsPerParamChunk, 1, kMaxParamChunks);
  p.rows_per_chunk = (rows + wanted - 1) / wanted;
  p.chunks = (rows + p.rows_per_chunk - 1) / p.rows_per_chunk;
  return p;
}

void check_layernorm_shape(const char* op, int64_t rows, int64_t C) {
  if (rows < 0 || C <= 0 || C > (int64_t{1} << 30))
    throw std::invalid_argument(std::string(op) + ": invalid shape rows=" + std::to_string(rows) +
                                " C=" + std::to_string(C) + " (need rows >= 0 and 0 < C <= 2^30)");
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

template <class T>
void layernorm_forward(T* out, float* mean, float* rstd, const T* x, const T* gamma, const T* beta, int64_t rows,
                       int64_t C, float eps, cudaStream_t stream) {
  detail::check_layernorm_shape("kernels::cuda::layernorm_forward", rows, C);
  if (rows == 0) return;
  COCO_LAUNCH(detail::layernorm_forward_kernel<T>, dim3(ceil_div(rows, detail::kRowsPerBlock)),
              dim3(32 * detail::kRowsPerBlock), 0, stream, out, static_cast<T*>(nullptr), mean, rstd, x,
              static_cast<const T*>(nullptr), gamma, beta, rows, static_cast<int>(C), eps);
}

template <class T>
void residual_layernorm_forward(T* out, T* sum, float* mean, float* rstd, const T* x, const T* residual, const T* gamma,
                                const T* beta, int64_t rows, int64_t C, float eps, cudaStream_t stream) {
  detail::check_layernorm_shape("kernels::cuda::residual_layernorm_forward", rows, C);
  if (rows == 0) return;
  COCO_LAUNCH(detail::layernorm_forward_kernel<T>, dim3(ceil_div(rows, detail::kRowsPerBlock)),
              dim3(32 * detail::kRowsPerBlock), 0, stream, out, sum, mean, rstd, x, residual, gamma, beta, rows,
              static_cast<int>(C), eps);
}

size_t layernorm_backward_workspace_bytes(int64_t rows, int64_t C) {
  detail::check_layernorm_shape("kernels::cuda::layernorm_backward_workspace_bytes", rows, C);
  return static_cast<size_t>(2 * detail::param_chunking(rows).chunks * C) * sizeof(float);
}

template <class T, class GradT>
void layernorm_backward(T* dx, GradT* dgamma, GradT* dbeta, const T* dout, const T* dx_extra, const T* x,
                        const T* gamma, const float* mean, const float* rstd, int64_t rows, int64_t C, void* workspace,
                        cudaStream_t stream) {
  detail::check_layernorm_shape("kernels::cuda::layernorm_backward", rows, C);
  if (rows == 0) return;
  if (dx != nullptr)
    COCO_LAUNCH(detail::layernorm_backward_input_kernel<T>, dim3(ceil_div(rows, detail::kRowsPerBlock)),
                dim3(32 * detail::kRowsPerBlock), 0, stream, dx, dout, dx_extra, x, gamma, mean, rstd, rows,
                static_cast<int>(C));
  if (dgamma == nullptr && dbeta == nullptr) return;
  if (workspace == nullptr)
    throw std::invalid_argument("kernels::cuda::layernorm_backward: dgamma/dbeta requested without a workspace of " +
                                std::to_string(layernorm_backward_workspace_bytes(rows, C)) + " bytes");
  const detail::ParamChunking chunking = detail::param_chunking(rows);
  float* partial_gamma = static_cast<float*>(workspace);
  float* partial_beta = partial_gamma + chunking.chunks * C;
  COCO_LAUNCH(detail::layernorm_param_partials_kernel<T>,
              dim3(ceil_div(C, detail::kParamTileColumns), static_cast<unsigned>(chunking.chunks)),
              dim3(detail::kParamTileColumns, detail::kParamTileRows), 0, stream, partial_gamma, partial_beta, dout, x,
              mean, rstd, rows, static_cast<int>(C), chunking.rows_per_chunk);
  COCO_LAUNCH(detail::layernorm_param_finish_kernel<GradT>, dim3(ceil_div(C, 256)), dim3(256), 0, stream, dgamma, dbeta,
              partial_gamma, partial_beta, chunking.chunks, static_cast<int>(C));
}

#define COCO_INSTANTIATE_LAYERNORM_CUDA(T)                                                                             \
  template void layernorm_forward<T>(T*, float*, float*, const T*, const T*, const T*, int64_t, int64_t, float,        \
                                     cudaStream_t);                                                                    \
  template void residual_layernorm_forward<T>(T*, T*, float*, float*, const T*, const T*, const T*, const T*, int64_t, \
                                              int64_t, float, cudaStream_t);
#define COCO_INSTANTIATE_LAYERNORM_BACKWARD_CUDA(T, GradT)                                                             \
  template void layernorm_backward<T, GradT>(T*, GradT*, GradT*, const T*, const T*, const T*, const T*, const float*, \
                                             const float*, int64_t, int64_t, void*, cudaStream_t);
COCO_INSTANTIATE_LAYERNORM_CUDA(float)
COCO_INSTANTIATE_LAYERNORM_CUDA(__nv_bfloat16)
COCO_INSTANTIATE_LAYERNORM_CUDA(__half)
COCO_INSTANTIATE_LAYERNORM_BACKWARD_CUDA(float, float)
COCO_INSTANTIATE_LAYERNORM_BACKWARD_CUDA(__nv_bfloat16, float)
COCO_INSTANTIATE_LAYERNORM_BACKWARD_CUDA(__nv_bfloat16, __nv_bfloat16)
COCO_INSTANTIATE_LAYERNORM_BACKWARD_CUDA(__half, float)
COCO_INSTANTIATE_LAYERNORM_BACKWARD_CUDA(__half, __half)
#undef COCO_INSTANTIATE_LAYERNORM_CUDA
#undef COCO_INSTANTIATE_LAYERNORM_BACKWARD_CUDA

}  // namespace coco::kernels::cuda
