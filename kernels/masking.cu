// CUDA mask selection and crop views: one block per row. A position's Philox sort key and its
// position form a unique 64-bit key in shared memory; a position is chosen when fewer than K keys of
// the row are smaller (its rank), which is the CPU reference's sort order without sorting. Counts are
// integer shared-memory atomics (order-free), so every schedule gives the same bits.
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/masking.h"

namespace coco::kernels::detail {
namespace {

constexpr int kMaskBlock = 256;
constexpr uint64_t kIneligibleKey = ~uint64_t(0);  // above every (u32 << 32 | pos) key

__device__ inline bool lucidrains_eligible(int32_t token, const MaskKernelParams& p) {
  return token != p.pad_id && token != p.cls_id && !p.ignore_ids.contains(token);
}

__device__ inline uint64_t sort_key(const rng::Stream& stream, int64_t row, int T, int pos) {
  return (static_cast<uint64_t>(stream.u32(static_cast<uint64_t>(row * T + pos))) << 32) | static_cast<uint32_t>(pos);
}

// Number of keys[0..T) below `key`, stopping early once it reaches `limit`.
__device__ inline int rank_below(const uint64_t* keys, int T, uint64_t key, int limit) {
  int rank = 0;
  for (int j = 0; j < T && rank < limit; ++j) rank += keys[j] < key ? 1 : 0;
  return rank;
}

// The k-th (0-based) id of [0, vocab) that is not in the sorted `excluded` set.
__device__ inline int32_t allowed_token(uint32_t k, const TokenIdSet& excluded) {
  int64_t id = k;
  for (int32_t i = 0; i < excluded.count; ++i)
    if (excluded.ids[i] <= id) ++id;
  return static_cast<int32_t>(id);
}

// tokens, selected, generator_input: (B, T); row_count: (B); grid (B); dynamic smem: T u64 keys.
__global__ void __launch_bounds__(kMaskBlock)
    select_mask_kernel(const int32_t* __restrict__ tokens, int T, MaskKernelParams p, uint8_t* __restrict__ selected,
                       int32_t* __restrict__ generator_input, int32_t* __restrict__ row_count) {
  uint64_t* keys = dynamic_smem<uint64_t>();
  __shared__ int eligible_count, selected_count, k_shared;
  const int64_t row = blockIdx.x;
  const int32_t* tok = tokens + row * T;
  const bool paper = p.preset == MaskPreset::paper;
  if (threadIdx.x == 0) {
    eligible_count = 0;
    selected_count = 0;
  }
  __syncthreads();
  int local = 0;
  for (int pos = threadIdx.x; pos < T; pos += blockDim.x) {
    const int32_t t = tok[pos];
    const bool ok = paper ? t != p.pad_id : lucidrains_eligible(t, p);
    keys[pos] = ok ? sort_key(p.select_stream, row, T, pos) : kIneligibleKey;
    local += ok ? 1 : 0;
  }
  if (local) atomicAdd(&eligible_count, local);
  __syncthreads();
  if (threadIdx.x == 0) {
    const int n = eligible_count;
    const int k = paper ? fraction_floor_plus_uniform(p.mask_fraction, n, p.select_stream.u32(row * T, 1))
                        : fraction_ceil(p.mask_fraction, n);
    k_shared = k < n ? k : n;
  }
  __syncthreads();
  const int k = k_shared;
  int local_selected = 0;
  for (int pos = threadIdx.x; pos < T; pos += blockDim.x) {
    const int64_t i = row * T + pos;
    const int32_t t = tok[pos];
    const uint64_t key = keys[pos];
    bool sel = key != kIneligibleKey && rank_below(keys, T, key, k) < k;
    if (paper && t == p.cls_id) sel = false;  // a drawn [CLS] is dropped, not redrawn
    int32_t shown = t;
    if (sel) {
      ++local_selected;
      if (p.replace_stream.u32(static_cast<uint64_t>(i), 0) < p.replace_threshold) {
        shown = p.mask_id;
      } else if (p.replace_stream.u32(static_cast<uint64_t>(i), 1) < p.random_token_threshold) {
        shown = allowed_token(
            p.token_stream.below(static_cast<uint32_t>(p.allowed_token_count), static_cast<uint64_t>(i), 0),
            p.random_token_excluded);
      }
    }
    selected[i] = sel ? 1 : 0;
    generator_input[i] = shown;
  }
  if (local_selected) atomicAdd(&selected_count, local_selected);
  __syncthreads();
  if (threadIdx.x == 0) row_count[row] = selected_count;
}

// tokens, crop_tokens: (B, T); crop_length: (B); grid (B); dynamic smem: T u64 keys + T u8 flags.
__global__ void __launch_bounds__(kMaskBlock)
    crop_view_kernel(const int32_t* __restrict__ tokens, int T, MaskKernelParams p, int32_t* __restrict__ crop_tokens,
                     int32_t* __restrict__ crop_length) {
  uint64_t* keys = dynamic_smem<uint64_t>();
  uint8_t* kept = reinterpret_cast<uint8_t*>(keys + T);
  __shared__ int nonpad_count, eligible_count, kept_shared, start_shared;
  const int64_t row = blockIdx.x;
  const int32_t* tok = tokens + row * T;
  int32_t* out = crop_tokens + row * T;
  const bool paper = p.preset == MaskPreset::paper;
  if (threadIdx.x == 0) {
    nonpad_count = 0;
    eligible_count = 0;
  }
  __syncthreads();
  int local_nonpad = 0, local_eligible = 0;
  for (int pos = threadIdx.x; pos < T; pos += blockDim.x) {
    const int32_t t = tok[pos];
    local_nonpad += t != p.pad_id ? 1 : 0;
    if (!paper) {
      const bool ok = lucidrains_eligible(t, p);
      keys[pos] = ok ? sort_key(p.crop_stream, row, T, pos) : kIneligibleKey;
      local_eligible += ok ? 1 : 0;
    }
  }
  if (local_nonpad) atomicAdd(&nonpad_count, local_nonpad);
  if (local_eligible) atomicAdd(&eligible_count, local_eligible);
  __syncthreads();
  if (threadIdx.x == 0) {
    const int n_row = nonpad_count;
    int m = fraction_floor(p.crop_fraction, n_row);
    if (paper) {
      m = m < n_row ? m : n_row;
      m = m < T - 1 ? m : T - 1;
      start_shared = static_cast<int>(p.crop_stream.below(static_cast<uint32_t>(n_row - m + 1), row * T, 1));
    } else {
      m = m < eligible_count ? m : eligible_count;
      m = m < T - 1 ? m : T - 1;
      start_shared = 0;
    }
    kept_shared = m;
    crop_length[row] = 1 + m;
  }
  __syncthreads();
  const int m = kept_shared;
  if (paper) {
    const int start = start_shared;
    for (int j = threadIdx.x; j < T; j += blockDim.x)
      out[j] = j == 0 ? p.cls_id : (j - 1 < m ? tok[start + j - 1] : p.pad_id);
    return;
  }
  for (int pos = threadIdx.x; pos < T; pos += blockDim.x) {
    const uint64_t key = keys[pos];
    kept[pos] = key != kIneligibleKey && rank_below(keys, T, key, m) < m ? 1 : 0;
  }
  __syncthreads();
  for (int pos = threadIdx.x; pos < T; pos += blockDim.x) {
    if (pos == 0) out[0] = p.cls_id;
    if (pos > m) out[pos] = p.pad_id;
    if (kept[pos]) {
      int before = 0;  // kept tokens stay in their original order
      for (int j = 0; j < pos; ++j) before += kept[j];
      out[1 + before] = tok[pos];
    }
  }
}

// selected: (B, T); row_count: (B); positions: (capacity); grid (B).
__global__ void __launch_bounds__(kMaskBlock)
    masked_positions_kernel(const uint8_t* __restrict__ selected, const int32_t* __restrict__ row_count, int T,
                            int32_t* __restrict__ positions, int64_t capacity) {
  __shared__ int segment_offset[kMaskBlock];
  __shared__ long long row_offset;
  const int64_t row = blockIdx.x;
  if (threadIdx.x == 0) row_offset = 0;
  __syncthreads();
  long long local = 0;
  for (int64_t r = threadIdx.x; r < row; r += blockDim.x) local += row_count[r] > 0 ? row_count[r] : 0;
  if (local) atomicAdd(reinterpret_cast<unsigned long long*>(&row_offset), static_cast<unsigned long long>(local));
  // Each thread owns a contiguous segment of the row; thread 0 scans the segment counts in order.
  const int segment = (T + blockDim.x - 1) / blockDim.x;
  const int begin = threadIdx.x * segment;
  const int end = begin + segment < T ? begin + segment : T;
  const uint8_t* flags = selected + row * T;
  int count = 0;
  for (int pos = begin; pos < end; ++pos) count += flags[pos] ? 1 : 0;
  segment_offset[threadIdx.x] = count;
  __syncthreads();
  if (threadIdx.x == 0) {
    int running = 0;
    for (unsigned t = 0; t < blockDim.x; ++t) {
      const int c = segment_offset[t];
      segment_offset[t] = running;
      running += c;
    }
  }
  __syncthreads();
  const int limit = row_count[row] > 0 ? row_count[row] : 0;
  int rank = segment_offset[threadIdx.x];
  for (int pos = begin; pos < end && rank < limit; ++pos) {
    if (!flags[pos]) continue;
    const long long slot = row_offset + rank;
    if (slot < capacity) positions[slot] = static_cast<int32_t>(row * T + pos);
    ++rank;
  }
}

void check_dims(int64_t B, int64_t T, const char* op) {
  if (B < 0 || T < 1 || T > kMaxMaskRowLength || B * T > 0x7fffffffLL)
    throw std::invalid_argument(std::string(op) + ": shape (" + std::to_string(B) + ", " + std::to_string(T) +
                                "), expected B >= 0, 1 <= T <= " + std::to_string(kMaxMaskRowLength) +
                                " and B * T < 2^31");
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

void select_mask(const int32_t* tokens, int64_t B, int64_t T, const MaskKernelParams& params, uint8_t* selected,
                 int32_t* generator_input, int32_t* row_count, cudaStream_t stream) {
  detail::check_dims(B, T, "kernels::cuda::select_mask");
  if (B == 0) return;
  COCO_LAUNCH(detail::select_mask_kernel, dim3(static_cast<unsigned>(B)), dim3(detail::kMaskBlock),
              static_cast<size_t>(T) * sizeof(uint64_t), stream, tokens, static_cast<int>(T), params, selected,
              generator_input, row_count);
}

void crop_view(const int32_t* tokens, int64_t B, int64_t T, const MaskKernelParams& params, int32_t* crop_tokens,
               int32_t* crop_length, cudaStream_t stream) {
  detail::check_dims(B, T, "kernels::cuda::crop_view");
  if (B == 0) return;
  COCO_LAUNCH(detail::crop_view_kernel, dim3(static_cast<unsigned>(B)), dim3(detail::kMaskBlock),
              static_cast<size_t>(T) * (sizeof(uint64_t) + 1), stream, tokens, static_cast<int>(T), params, crop_tokens,
              crop_length);
}

void masked_positions(const uint8_t* selected, const int32_t* row_count, int64_t B, int64_t T, int32_t* positions,
                      int64_t capacity, cudaStream_t stream) {
  detail::check_dims(B, T, "kernels::cuda::masked_positions");
  if (B == 0) return;
  COCO_LAUNCH(detail::masked_positions_kernel, dim3(static_cast<unsigned>(B)), dim3(detail::kMaskBlock), 0, stream,
              selected, row_count, static_cast<int>(T), positions, capacity);
}

}  // namespace coco::kernels::cuda
