#include "engine/ops/dropout.h"

#include <cmath>
#include <string>

#include "engine/ops/activation_dispatch.h"
#include "engine/tape.h"
#include "kernels/cpu_fast.h"
#include "kernels/dropout.h"

namespace coco::ops {
namespace {

Tensor apply_mask(const char* op, const Tensor& x, double p, const rng::Stream& stream, uint64_t index_offset) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  detail::dispatch_activation(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda()) {
      if constexpr (detail::is_cuda_activation_v<T>)
        kernels::cuda::dropout_apply<T>(out.data_as<T>(), x.data_as<T>(), x.numel(), p, stream, index_offset,
                                        current_stream());
    } else if constexpr (std::is_same_v<T, float>) {
      kernels::cpu_fast::dropout_apply(out.data_as<T>(), x.data_as<T>(), x.numel(), p, stream, index_offset);
    } else if constexpr (detail::is_cpu_activation_v<T>) {
      kernels::cpu::dropout_apply<T>(out.data_as<T>(), x.data_as<T>(), x.numel(), p, stream, index_offset);
    }
  });
  return out;
}

}  // namespace

Tensor dropout(const Tensor& x, double p, const rng::Stream& stream, bool training, uint64_t index_offset) {
  constexpr const char* op = "dropout";
  check_defined(op, x, "the input");
  if (!(p >= 0.0 && p <= 1.0))
    throw TensorError(std::string(op) + ": probability must lie in [0, 1], got " + std::to_string(p) + " for " +
                      detail::describe(x));
  if (!training || p == 0.0) return x;
  Tensor out = apply_mask(op, x, p, stream, index_offset);
  if (Tape* tape = Tape::recording_for({&x})) {
    // Saved: the stream, p and the offset; the mask is regenerated.
    tape->record(op, {x}, {out}, [p, stream, index_offset, dtype = x.dtype()](BackwardContext& ctx) {
      ctx.accumulate(
          0, apply_mask("dropout backward", detail::as_dtype(ctx.grad_output(0), dtype), p, stream, index_offset));
    });
  }
  return out;
}

}  // namespace coco::ops
