// T5-style relative-position bias (COCO-LM's bucket function, kernels/relpos.h), recorded on the tape.
#pragma once
#include <cstdint>

#include "engine/tensor.h"
#include "kernels/relpos.h"

namespace coco::ops {

using RelativePositionConfig = kernels::RelativePositionConfig;

// The (T, T) int32 bucket table, bucket[i, j] of key j for query i, on `device`.
Tensor relative_position_buckets(int64_t seq_len, const RelativePositionConfig& config, Device device = Device::cpu);

// table: (num_buckets, H), the nn.Embedding(num_buckets, H) layout fairseq uses
// -> bias: (H, T, T) of the table's dtype and device, bias[h, i, j] = table[bucket(i, j), h].
// The backward scatters into the table's gradient buffer (f32 buffers of bf16/f16 tables supported)
// with a deterministic, batch-order-free gather over each bucket's positions. The bucket tables are
// computed once per (T, config, device) and cached.
Tensor relative_position_bias(const Tensor& table, int64_t seq_len, const RelativePositionConfig& config);

}  // namespace coco::ops
