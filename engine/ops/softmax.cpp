#include "engine/ops/softmax.h"

#include <string>
#include <type_traits>

#include "engine/ops/float_dispatch.h"
#include "engine/tape.h"
#include "kernels/softmax.h"

namespace coco::ops {
namespace {

using detail::describe;
using detail::dispatch_float;

// y = softmax / log-softmax of x over the last dimension.
Tensor forward(const char* op, const Tensor& x, bool log) {
  check_defined(op, x, "the input");
  if (x.rank() < 1) throw TensorError(std::string(op) + ": needs at least one dimension, got " + describe(x));
  const int64_t width = x.shape().last(), rows = x.shape().rows();
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  dispatch_float(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda()) {
      if (log)
        kernels::cuda::log_softmax_forward<T>(x.data_as<T>(), y.data_as<T>(), rows, width, current_stream());
      else
        kernels::cuda::softmax_forward<T>(x.data_as<T>(), y.data_as<T>(), rows, width, current_stream());
    } else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      if (log)
        kernels::cpu::log_softmax_forward<T>(x.data_as<T>(), y.data_as<T>(), rows, width);
      else
        kernels::cpu::softmax_forward<T>(x.data_as<T>(), y.data_as<T>(), rows, width);
    }
  });
  return y;
}

// dx from the saved output y and the incoming gradient dy (converted to y's dtype).
Tensor backward(const char* op, const Tensor& y, const Tensor& dy_in, bool log) {
  const Tensor dy = detail::as_dtype(dy_in, y.dtype());
  const int64_t width = y.shape().last(), rows = y.shape().rows();
  Tensor dx = Tensor::empty(y.shape(), y.dtype(), y.device());
  dispatch_float(op, y, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (y.is_cuda()) {
      if (log)
        kernels::cuda::log_softmax_backward<T>(y.data_as<T>(), dy.data_as<T>(), dx.data_as<T>(), rows, width,
                                               current_stream());
      else
        kernels::cuda::softmax_backward<T>(y.data_as<T>(), dy.data_as<T>(), dx.data_as<T>(), rows, width,
                                           current_stream());
    } else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      if (log)
        kernels::cpu::log_softmax_backward<T>(y.data_as<T>(), dy.data_as<T>(), dx.data_as<T>(), rows, width);
      else
        kernels::cpu::softmax_backward<T>(y.data_as<T>(), dy.data_as<T>(), dx.data_as<T>(), rows, width);
    }
  });
  return dx;
}

Tensor softmax_op(const char* op, const Tensor& x, bool log) {
  Tensor y = forward(op, x, log);
  if (Tape* tape = Tape::recording_for({&x})) {
    tape->record(op, {x}, {y}, [op, saved = y.detach(), log](BackwardContext& ctx) {
      ctx.accumulate(0, backward(op, saved, ctx.grad_output(0), log));
    });
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x) { return softmax_op("softmax", x, false); }
Tensor log_softmax(const Tensor& x) { return softmax_op("log_softmax", x, true); }

}  // namespace coco::ops
