#include "engine/ops/relpos.h"

#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "engine/ops/float_dispatch.h"
#include "engine/tape.h"

namespace coco::ops {
namespace {

using detail::describe;
using detail::dispatch_float;

constexpr kernels::BiasTableLayout kLayout = kernels::BiasTableLayout::buckets_by_heads;

// The bucket table and its inverse index (kernels::cpu::relative_position_bucket_index) on one device.
struct BucketTables {
  Tensor buckets;    // (T, T) i32
  Tensor offsets;    // (num_buckets + 1) i32
  Tensor positions;  // (T * T) i32
};

const BucketTables& bucket_tables(int64_t seq_len, const RelativePositionConfig& config, Device device,
                                  const char* op) {
  kernels::check_relative_position_config(config, seq_len, op);
  using Key = std::tuple<int64_t, int, int, int, Device>;
  // Never destroyed: cached device tensors must not be freed after the CUDA runtime shuts down.
  static auto* cache = new std::map<Key, BucketTables>();
  static std::mutex mutex;
  const Key key{seq_len, config.num_buckets, config.max_distance, config.max_positions, device};
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  const size_t count = static_cast<size_t>(seq_len * seq_len);
  std::vector<int32_t> buckets(count), offsets(static_cast<size_t>(config.num_buckets) + 1), positions(count);
  kernels::cpu::relative_position_buckets(buckets.data(), seq_len, config);
  kernels::cpu::relative_position_bucket_index(buckets.data(), seq_len, config.num_buckets, offsets.data(),
                                               positions.data());
  BucketTables tables{Tensor::from_vector(buckets, Shape{seq_len, seq_len}, device),
                      Tensor::from_vector(offsets, Shape{config.num_buckets + 1}, device),
                      Tensor::from_vector(positions, Shape{seq_len * seq_len}, device)};
  return cache->emplace(key, std::move(tables)).first->second;
}

// dtable (+)= scatter(dbias). dtable: the table's gradient buffer (T, or f32 for 16-bit T on CUDA).
void scatter_into(const char* op, const Tensor& dbias, const BucketTables& tables, Tensor& dtable, int64_t heads,
                  int64_t seq_len, int num_buckets) {
  const int32_t* offsets = tables.offsets.data_as<int32_t>();
  const int32_t* positions = tables.positions.data_as<int32_t>();
  dispatch_float(op, dbias, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (dbias.is_cuda()) {
      if (dtable.dtype() == dbias.dtype())
        kernels::cuda::relative_position_bias_backward<T, T>(dbias.data_as<T>(), offsets, positions,
                                                             dtable.data_as<T>(), kLayout, heads, seq_len, num_buckets,
                                                             true, current_stream());
      else if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>)
        kernels::cuda::relative_position_bias_backward<T, float>(dbias.data_as<T>(), offsets, positions,
                                                                 dtable.data_as<float>(), kLayout, heads, seq_len,
                                                                 num_buckets, true, current_stream());
      else
        throw TensorError(std::string(op) + ": cannot scatter a " + describe(dbias) + " gradient into " +
                          describe(dtable));
    } else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      kernels::cpu::relative_position_bias_backward<T>(dbias.data_as<T>(), offsets, positions, dtable.data_as<T>(),
                                                       kLayout, heads, seq_len, num_buckets, true);
    }
  });
}

// Whether scatter_into can write into a gradient buffer of `grad_dtype` directly.
bool scatters_directly(const Tensor& table, DType grad_dtype) {
  if (grad_dtype == table.dtype()) return true;
  return table.is_cuda() && grad_dtype == DType::f32 && (table.dtype() == DType::bf16 || table.dtype() == DType::f16);
}

}  // namespace

Tensor relative_position_buckets(int64_t seq_len, const RelativePositionConfig& config, Device device) {
  return bucket_tables(seq_len, config, device, "relative_position_buckets").buckets;
}

Tensor relative_position_bias(const Tensor& table, int64_t seq_len, const RelativePositionConfig& config) {
  constexpr const char* op = "relative_position_bias";
  check_defined(op, table, "the bias table");
  if (table.rank() != 2 || table.size(0) != config.num_buckets)
    throw TensorError(std::string(op) + ": the table must be (num_buckets = " + std::to_string(config.num_buckets) +
                      ", heads), got " + describe(table));
  const int64_t heads = table.size(1);
  const BucketTables& tables = bucket_tables(seq_len, config, table.device(), op);
  Tensor bias = Tensor::empty(Shape{heads, seq_len, seq_len}, table.dtype(), table.device());
  dispatch_float(op, table, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (table.is_cuda())
      kernels::cuda::relative_position_bias_forward<T>(table.data_as<T>(), kLayout, tables.buckets.data_as<int32_t>(),
                                                       bias.data_as<T>(), heads, seq_len, config.num_buckets,
                                                       current_stream());
    else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
      kernels::cpu::relative_position_bias_forward<T>(table.data_as<T>(), kLayout, tables.buckets.data_as<int32_t>(),
                                                      bias.data_as<T>(), heads, seq_len, config.num_buckets);
  });
  if (Tape* tape = Tape::recording_for({&table})) {
    tape->record(op, {table}, {bias},
                 [&tables, table_meta = table.detach(), grad_dtype = table.grad_dtype(), heads, seq_len,
                  num_buckets = config.num_buckets](BackwardContext& ctx) {
                   const Tensor dbias = detail::as_dtype(ctx.grad_output(0), table_meta.dtype());  // (H, T, T)
                   if (scatters_directly(table_meta, grad_dtype)) {
                     Tensor buffer = ctx.grad_buffer(0);  // (NB, H)
                     scatter_into(op, dbias, tables, buffer, heads, seq_len, num_buckets);
                   } else {  // e.g. an f64 buffer for an f32 table: scatter in the table's dtype, then convert
                     Tensor dtable = Tensor::zeros(table_meta.shape(), table_meta.dtype(), table_meta.device());
                     scatter_into(op, dbias, tables, dtable, heads, seq_len, num_buckets);
                     ctx.accumulate(0, dtable);
                   }
                 });
  }
  return bias;
}

}  // namespace coco::ops
