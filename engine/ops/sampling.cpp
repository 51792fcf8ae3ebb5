#include "engine/ops/sampling.h"

#include <string>

#include "engine/device.h"
#include "engine/ops/float_dispatch.h"
#include "engine/rng/philox.h"
#include "kernels/cpu_fast.h"
#include "kernels/sampling.h"

namespace coco::ops {

Tensor sample_tokens(const Tensor& logits, Sampler sampler, float temperature, uint64_t seed, rng::StepKey step,
                     uint32_t instance, const Tensor& row_keys, uint64_t key_base) {
  const char* op = "ops::sample_tokens";
  check_defined(op, logits, "the logits");
  if (logits.rank() != 2 || logits.size(1) < 1)
    throw TensorError(std::string(op) + ": logits must be (N, V) with V >= 1, got " + detail::describe(logits));
  if (logits.dtype() != DType::f32 && logits.dtype() != DType::bf16 && logits.dtype() != DType::f64)
    throw TensorError(std::string(op) + ": logits must be f32, bf16 or f64, got " + detail::describe(logits));
  const Tensor input = logits.dtype() == DType::f64 ? logits.to(DType::f32) : logits;
  const int64_t N = input.size(0), V = input.size(1);
  const int32_t* keys = nullptr;
  if (row_keys.defined()) {
    if (row_keys.dtype() != DType::i32 || row_keys.rank() != 1 || row_keys.size(0) != N ||
        row_keys.device() != input.device())
      throw TensorError(std::string(op) + ": row_keys must be (" + std::to_string(N) +
                        ") i32 on the logits' device, got " + detail::describe(row_keys));
    keys = row_keys.data_as<int32_t>();
  }
  // A Gumbel row takes ceil(V / 4) Philox blocks, a multinomial row one.
  const uint64_t blocks_per_row = sampler == Sampler::gumbel ? static_cast<uint64_t>((V + 3) / 4) : 1;
  const rng::Stream stream =
      rng::Stream(seed, step,
                  sampler == Sampler::gumbel ? rng::Purpose::gumbel_sample : rng::Purpose::multinomial_sample, instance)
          .with_index_base(key_base * blocks_per_row);
  Tensor out = Tensor::empty(Shape{N}, DType::i32, input.device());
  int32_t* samples = out.data_as<int32_t>();
  const bool bf16 = input.dtype() == DType::bf16;
  if (input.is_cuda()) {
    const cudaStream_t cuda_stream = current_stream();
    if (sampler == Sampler::gumbel) {
      if (bf16)
        kernels::cuda::gumbel_sample(input.data_as<__nv_bfloat16>(), N, V, temperature, stream, samples, cuda_stream,
                                     keys);
      else
        kernels::cuda::gumbel_sample(input.data_as<float>(), N, V, temperature, stream, samples, cuda_stream, keys);
    } else {
      if (bf16)
        kernels::cuda::multinomial_sample(input.data_as<__nv_bfloat16>(), N, V, temperature, stream, samples,
                                          cuda_stream, keys);
      else
        kernels::cuda::multinomial_sample(input.data_as<float>(), N, V, temperature, stream, samples, cuda_stream,
                                          keys);
    }
  } else {
    if (sampler == Sampler::gumbel) {
      if (bf16)
        kernels::cpu::gumbel_sample(input.data_as<__nv_bfloat16>(), N, V, temperature, stream, samples, keys);
      else
        kernels::cpu_fast::gumbel_sample(input.data_as<float>(), N, V, temperature, stream, samples, keys);
    } else {
      if (bf16)
        kernels::cpu::multinomial_sample(input.data_as<__nv_bfloat16>(), N, V, temperature, stream, samples, keys);
      else
        kernels::cpu::multinomial_sample(input.data_as<float>(), N, V, temperature, stream, samples, keys);
    }
  }
  return out;
}

}  // namespace coco::ops
