#include "engine/ops/masking.h"

#include <climits>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/ops/float_dispatch.h"
#include "kernels/device_metrics.h"

namespace coco::ops {
namespace {

using detail::describe;

void check_tokens(const char* op, const Tensor& tokens) {
  check_defined(op, tokens, "the tokens");
  if (tokens.dtype() != DType::i32 || tokens.rank() != 2 || tokens.size(1) < 1)
    throw TensorError(std::string(op) + ": tokens must be a (B, T) i32 tensor with T >= 1, got " + describe(tokens));
}

void check_index_vector(const char* op, const Tensor& t, const char* what, const Tensor& like) {
  check_defined(op, t, what);
  check_same_device(op, like, t);
  if (t.dtype() != DType::i32 || t.rank() != 1)
    throw TensorError(std::string(op) + ": " + what + " must be a rank-1 i32 tensor, got " + describe(t));
}

}  // namespace

int64_t max_selected_per_row(const kernels::MaskingConfig& config, int64_t T) {
  if (T < 0 || T > INT32_MAX) throw TensorError("ops::max_selected_per_row: bad row length " + std::to_string(T));
  return kernels::fraction_ceil(kernels::to_fixed_fraction(config.mask_prob, "mask_prob"), static_cast<int32_t>(T));
}

MaskedBatch select_mask(const Tensor& tokens, const kernels::MaskingConfig& config, uint64_t seed, rng::StepKey step,
                        uint64_t first_row) {
  const char* op = "ops::select_mask";
  check_tokens(op, tokens);
  const int64_t B = tokens.size(0), T = tokens.size(1);
  const kernels::MaskKernelParams params =
      kernels::make_mask_params(config, seed, step, first_row * static_cast<uint64_t>(T));
  const Device device = tokens.device();
  MaskedBatch out;
  out.selected = Tensor::empty(Shape{B, T}, DType::u8, device);
  out.generator_input = Tensor::empty(Shape{B, T}, DType::i32, device);
  out.row_count = Tensor::empty(Shape{B}, DType::i32, device);
  out.capacity = B * max_selected_per_row(config, T);
  out.positions = Tensor::full(Shape{out.capacity}, -1.0, DType::i32, device);
  out.gather_rows = Tensor::zeros(Shape{out.capacity}, DType::i32, device);
  out.targets = Tensor::empty(Shape{out.capacity}, DType::i32, device);
  const int64_t n = out.capacity;
  if (device == Device::cpu) {
    kernels::cpu::select_mask(tokens.data_as<int32_t>(), B, T, params, out.selected.data_as<uint8_t>(),
                              out.generator_input.data_as<int32_t>(), out.row_count.data_as<int32_t>());
    for (Tensor* index : {&out.positions, &out.gather_rows})
      kernels::cpu::masked_positions(out.selected.data_as<uint8_t>(), out.row_count.data_as<int32_t>(), B, T,
                                     index->data_as<int32_t>(), n);
    kernels::cpu::gather_tokens(tokens.data_as<int32_t>(), B * T, out.positions.data_as<int32_t>(), n,
                                out.targets.data_as<int32_t>());
  } else {
    kernels::cuda::select_mask(tokens.data_as<int32_t>(), B, T, params, out.selected.data_as<uint8_t>(),
                               out.generator_input.data_as<int32_t>(), out.row_count.data_as<int32_t>(),
                               current_stream());
    for (Tensor* index : {&out.positions, &out.gather_rows})
      kernels::cuda::masked_positions(out.selected.data_as<uint8_t>(), out.row_count.data_as<int32_t>(), B, T,
                                      index->data_as<int32_t>(), n, current_stream());
    kernels::cuda::gather_tokens(tokens.data_as<int32_t>(), B * T, out.positions.data_as<int32_t>(), n,
                                 out.targets.data_as<int32_t>(), current_stream());
  }
  return out;
}

Tensor key_mask(const Tensor& tokens, int32_t pad_id) {
  check_tokens("ops::key_mask", tokens);
  Tensor mask = Tensor::empty(tokens.shape(), DType::u8, tokens.device());
  if (tokens.is_cuda())
    kernels::cuda::key_mask(tokens.data_as<int32_t>(), tokens.numel(), pad_id, mask.data_as<uint8_t>(),
                            current_stream());
  else
    kernels::cpu::key_mask(tokens.data_as<int32_t>(), tokens.numel(), pad_id, mask.data_as<uint8_t>());
  return mask;
}

Tensor length_mask(const Tensor& length, int64_t T) {
  const char* op = "ops::length_mask";
  check_defined(op, length, "the lengths");
  if (length.dtype() != DType::i32 || length.rank() != 1 || T < 0)
    throw TensorError(std::string(op) + ": expected (B) i32 lengths and T >= 0, got " + describe(length) + ", T " +
                      std::to_string(T));
  const int64_t B = length.size(0);
  Tensor mask = Tensor::empty(Shape{B, T}, DType::u8, length.device());
  if (length.is_cuda())
    kernels::cuda::length_mask(length.data_as<int32_t>(), B, T, mask.data_as<uint8_t>(), current_stream());
  else
    kernels::cpu::length_mask(length.data_as<int32_t>(), B, T, mask.data_as<uint8_t>());
  return mask;
}

Tensor count_nonzero(const Tensor& flags) {
  const char* op = "ops::count_nonzero";
  check_defined(op, flags, "the flags");
  if (flags.dtype() != DType::u8) throw TensorError(std::string(op) + ": expected u8 flags, got " + describe(flags));
  Tensor count = Tensor::empty(Shape{1}, DType::i32, flags.device());
  if (flags.is_cuda())
    kernels::cuda::count_nonzero(flags.data_as<uint8_t>(), flags.numel(), count.data_as<int32_t>(), current_stream());
  else
    kernels::cpu::count_nonzero(flags.data_as<uint8_t>(), flags.numel(), count.data_as<int32_t>());
  return count;
}

CropView crop_view(const Tensor& tokens, const kernels::MaskingConfig& config, uint64_t seed, rng::StepKey step,
                   uint64_t first_row) {
  const char* op = "ops::crop_view";
  check_tokens(op, tokens);
  const int64_t B = tokens.size(0), T = tokens.size(1);
  const kernels::MaskKernelParams params =
      kernels::make_mask_params(config, seed, step, first_row * static_cast<uint64_t>(T));
  CropView out;
  out.tokens = Tensor::empty(Shape{B, T}, DType::i32, tokens.device());
  out.length = Tensor::empty(Shape{B}, DType::i32, tokens.device());
  if (tokens.is_cuda())
    kernels::cuda::crop_view(tokens.data_as<int32_t>(), B, T, params, out.tokens.data_as<int32_t>(),
                             out.length.data_as<int32_t>(), current_stream());
  else
    kernels::cpu::crop_view(tokens.data_as<int32_t>(), B, T, params, out.tokens.data_as<int32_t>(),
                            out.length.data_as<int32_t>());
  return out;
}

Corruption corrupt(const Tensor& tokens, const Tensor& positions, const Tensor& samples, int32_t pad_id,
                   kernels::LabelConvention convention) {
  const char* op = "ops::corrupt";
  check_tokens(op, tokens);
  check_index_vector(op, positions, "positions", tokens);
  check_index_vector(op, samples, "samples", tokens);
  if (positions.numel() != samples.numel())
    throw TensorError(std::string(op) + ": " + std::to_string(positions.numel()) + " positions but " +
                      std::to_string(samples.numel()) + " samples (" + describe(positions) + ", " + describe(samples) +
                      ")");
  const int64_t total = tokens.numel(), N = positions.numel();
  const Shape shape = tokens.shape();
  Corruption out;
  out.tokens = Tensor::empty(shape, DType::i32, tokens.device());
  out.replaced = Tensor::empty(shape, DType::u8, tokens.device());
  out.labels = Tensor::empty(shape, DType::f32, tokens.device());
  if (tokens.is_cuda()) {
    kernels::cuda::corrupt_tokens(tokens.data_as<int32_t>(), total, positions.data_as<int32_t>(),
                                  samples.data_as<int32_t>(), N, pad_id, convention, out.tokens.data_as<int32_t>(),
                                  out.replaced.data_as<uint8_t>(), out.labels.data_as<float>(), current_stream());
    return out;
  }
  const int32_t* p = positions.data_as<int32_t>();
  for (int64_t k = 0; k < N; ++k)
    if (p[k] != -1 && (p[k] < 0 || p[k] >= total))
      throw TensorError(std::string(op) + ": position " + std::to_string(p[k]) + " at index " + std::to_string(k) +
                        " is outside [0, " + std::to_string(total) + ") for tokens " + describe(tokens));
  kernels::cpu::corrupt_tokens(tokens.data_as<int32_t>(), total, p, samples.data_as<int32_t>(), N, pad_id, convention,
                               out.tokens.data_as<int32_t>(), out.replaced.data_as<uint8_t>(),
                               out.labels.data_as<float>());
  return out;
}

}  // namespace coco::ops
