#include "engine/ops/elementwise.h"

#include <string>

#include "engine/ops/float_dispatch.h"
#include "engine/tape.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace coco::ops {
namespace {

using detail::describe;
using detail::dispatch_float;

void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  check_defined(op, a, "the first operand");
  check_defined(op, b, "the second operand");
  check_same_device(op, a, b);
  check_same_dtype(op, a, b);
  check_same_shape(op, a, b);
}

// out = a (op) b on a's backend.
Tensor binary_forward(kernels::BinaryOp op, const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  dispatch_float(kernels::binary_op_name(op), a, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (a.is_cuda())
      kernels::cuda::binary<T>(op, a.data_as<T>(), b.data_as<T>(), out.data_as<T>(), a.numel(), current_stream());
    else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
      kernels::cpu::binary<T>(op, a.data_as<T>(), b.data_as<T>(), out.data_as<T>(), a.numel());
  });
  return out;
}

// a + s * b, or s * b when `a` is undefined.
Tensor axpy_forward(const char* op, const Tensor& a, const Tensor& b, double s) {
  Tensor out = Tensor::empty(b.shape(), b.dtype(), b.device());
  dispatch_float(op, b, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a_data = a.defined() ? a.data_as<T>() : nullptr;
    if (b.is_cuda()) {
      if (a_data)
        kernels::cuda::add_scaled<T>(a_data, b.data_as<T>(), s, out.data_as<T>(), b.numel(), current_stream());
      else
        kernels::cuda::scale<T>(b.data_as<T>(), s, out.data_as<T>(), b.numel(), current_stream());
    } else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      if (a_data)
        kernels::cpu::add_scaled<T>(a_data, b.data_as<T>(), s, out.data_as<T>(), b.numel());
      else
        kernels::cpu::scale<T>(b.data_as<T>(), s, out.data_as<T>(), b.numel());
    }
  });
  return out;
}

// scale * sum(x) as a 0-d tensor.
Tensor sum_forward(const char* op, const Tensor& x, double scale) {
  Tensor out = Tensor::empty(Shape{}, x.dtype(), x.device());
  dispatch_float(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda()) {
      Tensor workspace = detail::cuda_workspace(kernels::cuda::sum_workspace_bytes(x.numel()));
      kernels::cuda::sum<T>(x.data_as<T>(), x.numel(), scale, out.data_as<T>(), workspace.data(), current_stream());
    } else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      kernels::cpu::sum<T>(x.data_as<T>(), x.numel(), scale, out.data_as<T>());
    }
  });
  return out;
}

// dx = scale * dy broadcast to `shape`.
Tensor sum_backward(const char* op, const Tensor& dy, const Shape& shape, double scale) {
  Tensor dx = Tensor::empty(shape, dy.dtype(), dy.device());
  dispatch_float(op, dy, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (dy.is_cuda())
      kernels::cuda::sum_backward<T>(dy.data_as<T>(), dx.numel(), scale, dx.data_as<T>(), current_stream());
    else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
      kernels::cpu::sum_backward<T>(dy.data_as<T>(), dx.numel(), scale, dx.data_as<T>());
  });
  return dx;
}

// sum(x), or its mean when `divide_by_count`.
Tensor reduction(const char* op, const Tensor& x, bool divide_by_count) {
  check_defined(op, x, "the input");
  if (divide_by_count && x.numel() == 0)
    throw TensorError(std::string(op) + ": the mean of an empty tensor " + describe(x) + " is undefined");
  const double scale = divide_by_count ? 1.0 / static_cast<double>(x.numel()) : 1.0;
  Tensor out = sum_forward(op, x, scale);
  if (Tape* tape = Tape::recording_for({&x})) {
    tape->record(op, {x}, {out}, [op, shape = x.shape(), dtype = x.dtype(), scale](BackwardContext& ctx) {
      ctx.accumulate(0, sum_backward(op, detail::as_dtype(ctx.grad_output(0), dtype), shape, scale));
    });
  }
  return out;
}

}  // namespace

void add_inplace(Tensor& dst, const Tensor& src) {
  constexpr const char* op = "add_inplace";
  check_defined(op, dst, "the destination");
  check_defined(op, src, "the source");
  check_same_device(op, dst, src);
  check_same_shape(op, dst, src);
  if (!dst.is_cuda()) {
    if (!dtype_is_float(src.dtype()))
      throw TensorError(std::string(op) + ": cannot accumulate " + describe(src) + " into " + describe(dst) +
                        " (the source must be a floating-point tensor)");
    const Tensor converted = detail::as_dtype(src, dst.dtype());
    dispatch_float(op, dst, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
        kernels::cpu::add_inplace<T>(dst.data_as<T>(), converted.data_as<T>(), dst.numel());
    });
    return;
  }
  const cudaStream_t stream = current_stream();
  if (dst.dtype() == DType::f32 && src.dtype() == DType::bf16) {
    kernels::cuda::add_inplace<float, __nv_bfloat16>(dst.data_as<float>(), src.data_as<__nv_bfloat16>(), dst.numel(),
                                                     stream);
    return;
  }
  if (dst.dtype() == DType::f32 && src.dtype() == DType::f16) {
    kernels::cuda::add_inplace<float, __half>(dst.data_as<float>(), src.data_as<__half>(), dst.numel(), stream);
    return;
  }
  if (!dtype_is_float(src.dtype()))
    throw TensorError(std::string(op) + ": cannot accumulate " + describe(src) + " into " + describe(dst) +
                      " (the source must be a floating-point tensor)");
  // Other dtype pairs: convert the source first (one extra pass; the common pairs above are direct).
  const Tensor converted = detail::as_dtype(src, dst.dtype());
  dispatch_float(op, dst, [&](auto tag) {
    using T = typename decltype(tag)::type;
    kernels::cuda::add_inplace<T, T>(dst.data_as<T>(), converted.data_as<T>(), dst.numel(), stream);
  });
}

Tensor add(const Tensor& a, const Tensor& b) {
  check_pair("add", a, b);
  Tensor out = binary_forward(kernels::BinaryOp::add, a, b);
  if (Tape* tape = Tape::recording_for({&a, &b})) {
    tape->record("add", {a, b}, {out}, [](BackwardContext& ctx) {
      const Tensor& dout = ctx.grad_output(0);
      ctx.accumulate(0, dout);
      ctx.accumulate(1, dout);
    });
  }
  return out;
}

Tensor sub(const Tensor& a, const Tensor& b) {
  check_pair("sub", a, b);
  Tensor out = binary_forward(kernels::BinaryOp::sub, a, b);
  if (Tape* tape = Tape::recording_for({&a, &b})) {
    tape->record("sub", {a, b}, {out}, [dtype = a.dtype()](BackwardContext& ctx) {
      const Tensor& dout = ctx.grad_output(0);
      ctx.accumulate(0, dout);
      if (ctx.needs_grad(1))
        ctx.accumulate(1, axpy_forward("sub backward", Tensor(), detail::as_dtype(dout, dtype), -1.0));
    });
  }
  return out;
}

Tensor mul(const Tensor& a, const Tensor& b) {
  check_pair("mul", a, b);
  Tensor out = binary_forward(kernels::BinaryOp::mul, a, b);
  if (Tape* tape = Tape::recording_for({&a, &b})) {
    // Saved: both operands (each one's gradient is the other times dout).
    tape->record("mul", {a, b}, {out}, [a = a.detach(), b = b.detach()](BackwardContext& ctx) {
      const Tensor dout = detail::as_dtype(ctx.grad_output(0), a.dtype());
      Tensor da = ctx.needs_grad(0) ? Tensor::empty(a.shape(), a.dtype(), a.device()) : Tensor();
      Tensor db = ctx.needs_grad(1) ? Tensor::empty(b.shape(), b.dtype(), b.device()) : Tensor();
      dispatch_float("mul backward", a, [&](auto tag) {
        using T = typename decltype(tag)::type;
        T* da_data = da.defined() ? da.data_as<T>() : nullptr;
        T* db_data = db.defined() ? db.data_as<T>() : nullptr;
        if (a.is_cuda())
          kernels::cuda::mul_backward<T>(dout.data_as<T>(), a.data_as<T>(), b.data_as<T>(), da_data, db_data, a.numel(),
                                         current_stream());
        else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
          kernels::cpu::mul_backward<T>(dout.data_as<T>(), a.data_as<T>(), b.data_as<T>(), da_data, db_data, a.numel());
      });
      if (da.defined()) ctx.accumulate(0, std::move(da));
      if (db.defined()) ctx.accumulate(1, std::move(db));
    });
  }
  return out;
}

Tensor scale(const Tensor& x, double s) {
  check_defined("scale", x, "the input");
  Tensor out = axpy_forward("scale", Tensor(), x, s);
  if (Tape* tape = Tape::recording_for({&x})) {
    tape->record("scale", {x}, {out}, [s, dtype = x.dtype()](BackwardContext& ctx) {
      ctx.accumulate(0, axpy_forward("scale backward", Tensor(), detail::as_dtype(ctx.grad_output(0), dtype), s));
    });
  }
  return out;
}

Tensor add_scaled(const Tensor& a, const Tensor& b, double s) {
  check_pair("add_scaled", a, b);
  Tensor out = axpy_forward("add_scaled", a, b, s);
  if (Tape* tape = Tape::recording_for({&a, &b})) {
    tape->record("add_scaled", {a, b}, {out}, [s, dtype = b.dtype()](BackwardContext& ctx) {
      const Tensor& dout = ctx.grad_output(0);
      ctx.accumulate(0, dout);
      if (ctx.needs_grad(1))
        ctx.accumulate(1, axpy_forward("add_scaled backward", Tensor(), detail::as_dtype(dout, dtype), s));
    });
  }
  return out;
}

Tensor sum(const Tensor& x) { return reduction("sum", x, false); }

Tensor mean(const Tensor& x) { return reduction("mean", x, true); }

Tensor row_sum(const Tensor& x) {
  constexpr const char* op = "row_sum";
  check_defined(op, x, "the input");
  if (x.rank() < 1) throw TensorError(std::string(op) + ": needs a tensor of rank >= 1, got " + describe(x));
  const int64_t cols = x.shape().last();
  const int64_t rows = x.shape().rows();
  const std::vector<int64_t> dims = x.shape().vec();
  const Shape out_shape(std::span<const int64_t>(dims.data(), dims.size() - 1));
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  dispatch_float(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda())
      kernels::cuda::row_sum<T>(x.data_as<T>(), rows, cols, out.data_as<T>(), current_stream());
    else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
      kernels::cpu::row_sum<T>(x.data_as<T>(), rows, cols, out.data_as<T>());
  });
  if (Tape* tape = Tape::recording_for({&x})) {
    tape->record(op, {x}, {out}, [shape = x.shape(), dtype = x.dtype(), rows, cols](BackwardContext& ctx) {
      const Tensor dy = detail::as_dtype(ctx.grad_output(0), dtype);
      Tensor dx = Tensor::empty(shape, dtype, dy.device());
      dispatch_float("row_sum backward", dy, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (dy.is_cuda())
          kernels::cuda::row_sum_backward<T>(dy.data_as<T>(), rows, cols, dx.data_as<T>(), current_stream());
        else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>)
          kernels::cpu::row_sum_backward<T>(dy.data_as<T>(), rows, cols, dx.data_as<T>());
      });
      ctx.accumulate(0, std::move(dx));
    });
  }
  return out;
}

}  // namespace coco::ops
