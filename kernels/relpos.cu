// CUDA relative-position buckets, bias gather, and the backward scatter. The backward is a gather
// over the inverse index (kernels::cpu::relative_position_bucket_index): one block per (bucket, head)
// sums its positions with a fixed tree, so the result does not depend on scheduling.
#include <stdexcept>
#include <string>

#include "engine/runtime/launch.cuh"
#include "kernels/relpos.h"
#include "kernels/softmax_reduce.cuh"

namespace coco::kernels::detail {
namespace {

constexpr int kElementwiseThreads = 256;
constexpr int kBucketSumThreads = 128;

// buckets: (T, T)
__global__ void __launch_bounds__(kElementwiseThreads)
    relative_position_buckets_kernel(int32_t* buckets, int64_t seq_len, RelativePositionConfig config) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= seq_len * seq_len) return;
  buckets[p] = relative_position_bucket(p / seq_len, p % seq_len, config);
}

// table: (H, NB) or (NB, H), buckets: (T, T) -> bias: (H, T, T); blockIdx.y = head
template <class T>
__global__ void __launch_bounds__(kElementwiseThreads)
    relative_position_bias_forward_kernel(const T* table, BiasTableLayout layout, const int32_t* buckets, T* bias,
                                          int64_t count, int64_t heads, int num_buckets) {
  const int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (p >= count) return;
  const int64_t h = blockIdx.y;
  const int32_t bucket = buckets[p];
  bias[h * count + p] = bucket >= 0 && bucket < num_buckets
                            ? table[bias_table_offset(layout, h, bucket, heads, num_buckets)]
                            : convert_element<T>(NAN);
}

// dbias: (H, T, T) -> dtable: (H, NB) or (NB, H); block (k, h) sums dbias[h, positions[offsets[k] ..
// offsets[k+1])].
template <class TGrad, class TOut>
__global__ void __launch_bounds__(kBucketSumThreads)
    relative_position_bias_backward_kernel(const TGrad* dbias, const int32_t* offsets, const int32_t* positions,
                                           TOut* dtable, BiasTableLayout layout, int64_t count, int64_t heads,
                                           int num_buckets, bool accumulate) {
  using Acc = AccumulatorOf<TOut>;
  Acc* scratch = dynamic_smem<Acc>();
  const int k = static_cast<int>(blockIdx.x);
  const int64_t h = blockIdx.y;
  const TGrad* dbias_h = dbias + h * count;
  // Clamped so that a corrupt index cannot make the block read outside `positions`.
  const int64_t begin = offsets[k] < 0 ? 0 : offsets[k];
  const int64_t end = offsets[k + 1] > count ? count : offsets[k + 1];
  Acc partial = Acc(0);
  for (int64_t q = begin + threadIdx.x; q < end; q += blockDim.x) {
    const int32_t p = positions[q];
    if (p >= 0 && p < count) partial += load_as<Acc>(dbias_h + p);
  }
  const Acc total = block_sum(partial, scratch);
  if (threadIdx.x == 0) {
    TOut* out = dtable + bias_table_offset(layout, h, k, heads, num_buckets);
    store_from(out, accumulate ? load_as<Acc>(out) + total : total);
  }
}

void check_sizes(int64_t heads, int64_t seq_len, int num_buckets, const char* op) {
  if (heads < 0 || heads > 65535 || seq_len < 0 || seq_len > 46340 || num_buckets < 1)
    throw std::invalid_argument(std::string(op) + ": invalid sizes (heads " + std::to_string(heads) +
                                " must be in [0, 65535], seq_len " + std::to_string(seq_len) +
                                " in [0, 46340], num_buckets " + std::to_string(num_buckets) + " >= 1)");
}

}  // namespace
}  // namespace coco::kernels::detail

namespace coco::kernels::cuda {

void relative_position_buckets(int32_t* buckets, int64_t seq_len, const RelativePositionConfig& config,
                               cudaStream_t stream) {
  check_relative_position_config(config, seq_len, "kernels::cuda::relative_position_buckets");
  const int64_t count = seq_len * seq_len;
  COCO_LAUNCH(detail::relative_position_buckets_kernel, dim3(ceil_div(count, detail::kElementwiseThreads)),
              dim3(detail::kElementwiseThreads), 0, stream, buckets, seq_len, config);
}

template <class T>
void relative_position_bias_forward(const T* table, BiasTableLayout layout, const int32_t* buckets, T* bias,
                                    int64_t heads, int64_t seq_len, int num_buckets, cudaStream_t stream) {
  detail::check_sizes(heads, seq_len, num_buckets, "kernels::cuda::relative_position_bias_forward");
  const int64_t count = seq_len * seq_len;
  if (heads == 0 || count == 0) return;
  COCO_LAUNCH(detail::relative_position_bias_forward_kernel<T>,
              dim3(ceil_div(count, detail::kElementwiseThreads), static_cast<unsigned>(heads)),
              dim3(detail::kElementwiseThreads), 0, stream, table, layout, buckets, bias, count, heads, num_buckets);
}

template <class TGrad, class TOut>
void relative_position_bias_backward(const TGrad* dbias, const int32_t* offsets, const int32_t* positions, TOut* dtable,
                                     BiasTableLayout layout, int64_t heads, int64_t seq_len, int num_buckets,
                                     bool accumulate, cudaStream_t stream) {
  detail::check_sizes(heads, seq_len, num_buckets, "kernels::cuda::relative_position_bias_backward");
  if (heads == 0) return;
  COCO_LAUNCH((detail::relative_position_bias_backward_kernel<TGrad, TOut>),
              dim3(static_cast<unsigned>(num_buckets), static_cast<unsigned>(heads)), dim3(detail::kBucketSumThreads),
              2 * detail::kWarpSize * sizeof(detail::AccumulatorOf<TOut>), stream, dbias, offsets, positions, dtable,
              layout, seq_len * seq_len, heads, num_buckets, accumulate);
}

#define COCO_INSTANTIATE_RELPOS_FORWARD(T)                                                                         \
  template void relative_position_bias_forward<T>(const T*, BiasTableLayout, const int32_t*, T*, int64_t, int64_t, \
                                                  int, cudaStream_t);
#define COCO_INSTANTIATE_RELPOS_BACKWARD(TG, TO)                                                        \
  template void relative_position_bias_backward<TG, TO>(const TG*, const int32_t*, const int32_t*, TO*, \
                                                        BiasTableLayout, int64_t, int64_t, int, bool, cudaStream_t);
COCO_INSTANTIATE_RELPOS_FORWARD(float)
COCO_INSTANTIATE_RELPOS_FORWARD(double)
COCO_INSTANTIATE_RELPOS_FORWARD(__nv_bfloat16)
COCO_INSTANTIATE_RELPOS_FORWARD(__half)
COCO_INSTANTIATE_RELPOS_BACKWARD(float, float)
COCO_INSTANTIATE_RELPOS_BACKWARD(double, double)
COCO_INSTANTIATE_RELPOS_BACKWARD(__nv_bfloat16, __nv_bfloat16)
COCO_INSTANTIATE_RELPOS_BACKWARD(__nv_bfloat16, float)
COCO_INSTANTIATE_RELPOS_BACKWARD(__half, __half)
COCO_INSTANTIATE_RELPOS_BACKWARD(__half, float)
#undef COCO_INSTANTIATE_RELPOS_FORWARD
#undef COCO_INSTANTIATE_RELPOS_BACKWARD

}  // namespace coco::kernels::cuda
