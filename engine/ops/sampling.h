// Sampling token ids from generator logits (kernels/sampling.h holds the exact semantics): Gumbel-max
// (preset lucidrains) or multinomial from the f32 softmax (preset paper). Not differentiable: the
// result carries no gradient and nothing is recorded on the tape. CPU and CUDA tensors give
// bitwise-identical samples for the same (seed, step, instance).
#pragma once
#include <cstdint>

#include "engine/rng/philox.h"
#include "engine/tensor.h"

namespace coco::ops {

enum class Sampler : uint8_t { gumbel, multinomial };

// logits: (N, V) f32 or bf16 (f64 is converted to f32) on the CPU or CUDA -> (N) i32 on the same
// device. The stream is Philox (seed, step, Purpose::gumbel_sample / multinomial_sample, instance).
// Sample n draws from Philox row key_base + row_keys[n] (row_keys: (N) i32 >= 0 on the logits' device,
// e.g. the flat position of the token it replaces) or key_base + n without row_keys (kernels/sampling.h).
// Throws TensorError for a bad shape/dtype and std::invalid_argument for a temperature that is not
// finite and positive.
Tensor sample_tokens(const Tensor& logits, Sampler sampler, float temperature, uint64_t seed, rng::StepKey step,
                     uint32_t instance = 0, const Tensor& row_keys = Tensor(), uint64_t key_base = 0);

}  // namespace coco::ops
