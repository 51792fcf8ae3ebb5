#include "engine/ops/activation.h"

#include <utility>

#include "engine/ops/activation_dispatch.h"
#include "engine/tape.h"
#include "kernels/cpu_fast.h"

namespace coco::ops {
namespace {

Tensor gelu_backward(const Tensor& dout, const Tensor& x, GeluApproximation approximation) {
  Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
  detail::dispatch_activation("gelu backward", x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda()) {
      if constexpr (detail::is_cuda_activation_v<T>)
        kernels::cuda::gelu_backward<T>(dx.data_as<T>(), dout.data_as<T>(), x.data_as<T>(), x.numel(), approximation,
                                        current_stream());
    } else if constexpr (std::is_same_v<T, float>) {
      kernels::cpu_fast::gelu_backward(dx.data_as<T>(), dout.data_as<T>(), x.data_as<T>(), x.numel(), approximation);
    } else if constexpr (detail::is_cpu_activation_v<T>) {
      kernels::cpu::gelu_backward<T>(dx.data_as<T>(), dout.data_as<T>(), x.data_as<T>(), x.numel(), approximation);
    }
  });
  return dx;
}

}  // namespace

Tensor gelu(const Tensor& x, GeluApproximation approximation) {
  constexpr const char* op = "gelu";
  check_defined(op, x, "the input");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  detail::dispatch_activation(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda()) {
      if constexpr (detail::is_cuda_activation_v<T>)
        kernels::cuda::gelu_forward<T>(out.data_as<T>(), x.data_as<T>(), x.numel(), approximation, current_stream());
    } else if constexpr (std::is_same_v<T, float>) {
      kernels::cpu_fast::gelu_forward(out.data_as<T>(), x.data_as<T>(), x.numel(), approximation);
    } else if constexpr (detail::is_cpu_activation_v<T>) {
      kernels::cpu::gelu_forward<T>(out.data_as<T>(), x.data_as<T>(), x.numel(), approximation);
    }
  });
  if (Tape* tape = Tape::recording_for({&x})) {
    // Saved: the input.
    tape->record(op, {x}, {out}, [x = x.detach(), approximation](BackwardContext& ctx) {
      ctx.accumulate(0, gelu_backward(detail::as_dtype(ctx.grad_output(0), x.dtype()), x, approximation));
    });
  }
  return out;
}

}  // namespace coco::ops
