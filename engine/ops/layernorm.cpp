#include "engine/ops/layernorm.h"

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>

#include "engine/ops/activation_dispatch.h"
#include "engine/ops/elementwise.h"
#include "engine/tape.h"
#include "kernels/cpu_fast.h"
#include "kernels/layernorm.h"

namespace coco::ops {
namespace {

using detail::describe;

struct RowShape {
  int64_t rows, C;
};

RowShape check_layernorm_args(const char* op, const Tensor& x, const Tensor* residual, const Tensor& gamma,
                              const Tensor& beta, double eps) {
  check_defined(op, x, "the input");
  check_defined(op, gamma, "gamma");
  check_defined(op, beta, "beta");
  if (x.rank() < 1 || x.shape().last() < 1)
    throw TensorError(std::string(op) + ": the input needs a non-empty last dimension, got " + describe(x));
  const int64_t C = x.shape().last();
  if (gamma.shape() != Shape{C} || beta.shape() != Shape{C})
    throw TensorError(std::string(op) + ": gamma and beta must be (" + std::to_string(C) + ") for input " +
                      describe(x) + ", got gamma " + describe(gamma) + " and beta " + describe(beta));
  for (const Tensor* t : {&gamma, &beta}) {
    check_same_device(op, x, *t);
    check_same_dtype(op, x, *t);
  }
  if (residual != nullptr) {
    check_defined(op, *residual, "the residual");
    check_same_shape(op, x, *residual);
    check_same_device(op, x, *residual);
    check_same_dtype(op, x, *residual);
  }
  if (!(eps > 0.0) || !std::isfinite(eps))
    throw TensorError(std::string(op) + ": eps must be positive and finite, got " + std::to_string(eps));
  return RowShape{x.numel() / C, C};
}

struct ForwardResult {
  Tensor out, sum, mean, rstd;
};

// Runs the forward kernel; `residual` undefined selects plain LayerNorm. mean/rstd are produced only
// when `save_statistics`.
ForwardResult run_forward(const char* op, const Tensor& x, const Tensor& residual, const Tensor& gamma,
                          const Tensor& beta, double eps, const RowShape& shape, bool save_statistics) {
  ForwardResult r;
  r.out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (residual.defined()) r.sum = Tensor::empty(x.shape(), x.dtype(), x.device());
  // Statistics are f32 for every CUDA dtype and for CPU f32; f64 for CPU f64.
  const DType stat_dtype = x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  if (save_statistics) {
    r.mean = Tensor::empty(Shape{shape.rows}, stat_dtype, x.device());
    r.rstd = Tensor::empty(Shape{shape.rows}, stat_dtype, x.device());
  }
  detail::dispatch_activation(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda()) {
      if constexpr (detail::is_cuda_activation_v<T>) {
        float* mean = save_statistics ? r.mean.data_as<float>() : nullptr;
        float* rstd = save_statistics ? r.rstd.data_as<float>() : nullptr;
        if (residual.defined())
          kernels::cuda::residual_layernorm_forward<T>(
              r.out.data_as<T>(), r.sum.data_as<T>(), mean, rstd, x.data_as<T>(), residual.data_as<T>(),
              gamma.data_as<T>(), beta.data_as<T>(), shape.rows, shape.C, static_cast<float>(eps), current_stream());
        else
          kernels::cuda::layernorm_forward<T>(r.out.data_as<T>(), mean, rstd, x.data_as<T>(), gamma.data_as<T>(),
                                              beta.data_as<T>(), shape.rows, shape.C, static_cast<float>(eps),
                                              current_stream());
      }
    } else if constexpr (detail::is_cpu_activation_v<T>) {
      T* mean = save_statistics ? r.mean.data_as<T>() : nullptr;
      T* rstd = save_statistics ? r.rstd.data_as<T>() : nullptr;
      if constexpr (std::is_same_v<T, float>)  // the f32 fast path (kernels/cpu_fast.h)
        kernels::cpu_fast::layernorm_forward(
            r.out.data_as<float>(), residual.defined() ? r.sum.data_as<float>() : nullptr, mean, rstd,
            x.data_as<float>(), residual.defined() ? residual.data_as<float>() : nullptr, gamma.data_as<float>(),
            beta.data_as<float>(), shape.rows, shape.C, eps);
      else if (residual.defined())
        kernels::cpu::residual_layernorm_forward<T>(r.out.data_as<T>(), r.sum.data_as<T>(), mean, rstd, x.data_as<T>(),
                                                    residual.data_as<T>(), gamma.data_as<T>(), beta.data_as<T>(),
                                                    shape.rows, shape.C, eps);
      else
        kernels::cpu::layernorm_forward<T>(r.out.data_as<T>(), mean, rstd, x.data_as<T>(), gamma.data_as<T>(),
                                           beta.data_as<T>(), shape.rows, shape.C, eps);
    }
  });
  return r;
}

// The backward shared by both ops. `normalized` is the tensor that was normalized (x, or the sum);
// `dsum` (may be undefined) is added into the input gradient. Returns that input gradient
// (undefined when `want_dx` is false); dgamma/dbeta go into `dgamma_buffer`/`dbeta_buffer` (either
// may be undefined).
Tensor run_backward(const char* op, const Tensor& dout, const Tensor& dsum, const Tensor& normalized,
                    const Tensor& gamma, const Tensor& mean, const Tensor& rstd, const RowShape& shape, bool want_dx,
                    Tensor dgamma_buffer, Tensor dbeta_buffer) {
  Tensor dx = want_dx ? Tensor::empty(normalized.shape(), normalized.dtype(), normalized.device()) : Tensor();
  // Parameter gradients that cannot be written in place (buffer dtype differs) are computed into
  // fresh zeroed tensors of the parameter dtype and added afterwards.
  Tensor dgamma_target = dgamma_buffer, dbeta_target = dbeta_buffer;
  detail::dispatch_activation(op, normalized, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* dsum_data = dsum.defined() ? dsum.data_as<T>() : nullptr;
    T* dx_data = dx.defined() ? dx.data_as<T>() : nullptr;
    if (normalized.is_cuda()) {
      if constexpr (detail::is_cuda_activation_v<T>) {
        const bool direct =
            (!dgamma_buffer.defined() || !dbeta_buffer.defined() || dgamma_buffer.dtype() == dbeta_buffer.dtype());
        const Tensor& probe = dgamma_buffer.defined() ? dgamma_buffer : dbeta_buffer;
        bool done = false;
        if (direct && probe.defined()) {
          done = detail::dispatch_cuda_grad_buffer<T>(probe, [&](auto grad_tag) {
            using G = typename decltype(grad_tag)::type;
            Tensor workspace =
                detail::cuda_workspace(kernels::cuda::layernorm_backward_workspace_bytes(shape.rows, shape.C));
            kernels::cuda::layernorm_backward<T, G>(
                dx_data, dgamma_buffer.defined() ? dgamma_buffer.data_as<G>() : nullptr,
                dbeta_buffer.defined() ? dbeta_buffer.data_as<G>() : nullptr, dout.data_as<T>(), dsum_data,
                normalized.data_as<T>(), gamma.data_as<T>(), mean.data_as<float>(), rstd.data_as<float>(), shape.rows,
                shape.C, workspace.data(), current_stream());
          });
        }
        if (!done) {
          if (dgamma_buffer.defined()) dgamma_target = Tensor::zeros(gamma.shape(), gamma.dtype(), gamma.device());
          if (dbeta_buffer.defined()) dbeta_target = Tensor::zeros(gamma.shape(), gamma.dtype(), gamma.device());
          const bool params = dgamma_target.defined() || dbeta_target.defined();
          Tensor workspace =
              params ? detail::cuda_workspace(kernels::cuda::layernorm_backward_workspace_bytes(shape.rows, shape.C))
                     : Tensor();
          kernels::cuda::layernorm_backward<T, T>(
              dx_data, dgamma_target.defined() ? dgamma_target.data_as<T>() : nullptr,
              dbeta_target.defined() ? dbeta_target.data_as<T>() : nullptr, dout.data_as<T>(), dsum_data,
              normalized.data_as<T>(), gamma.data_as<T>(), mean.data_as<float>(), rstd.data_as<float>(), shape.rows,
              shape.C, params ? workspace.data() : nullptr, current_stream());
        }
      }
    } else if constexpr (detail::is_cpu_activation_v<T>) {
      if (dgamma_buffer.defined() && dgamma_buffer.dtype() != normalized.dtype())
        dgamma_target = Tensor::zeros(gamma.shape(), gamma.dtype(), gamma.device());
      if (dbeta_buffer.defined() && dbeta_buffer.dtype() != normalized.dtype())
        dbeta_target = Tensor::zeros(gamma.shape(), gamma.dtype(), gamma.device());
      T* dgamma_data = dgamma_target.defined() ? dgamma_target.data_as<T>() : nullptr;
      T* dbeta_data = dbeta_target.defined() ? dbeta_target.data_as<T>() : nullptr;
      if constexpr (std::is_same_v<T, float>)
        kernels::cpu_fast::layernorm_backward(dx_data, dgamma_data, dbeta_data, dout.data_as<T>(), dsum_data,
                                              normalized.data_as<T>(), gamma.data_as<T>(), mean.data_as<T>(),
                                              rstd.data_as<T>(), shape.rows, shape.C);
      else
        kernels::cpu::layernorm_backward<T>(dx_data, dgamma_data, dbeta_data, dout.data_as<T>(), dsum_data,
                                            normalized.data_as<T>(), gamma.data_as<T>(), mean.data_as<T>(),
                                            rstd.data_as<T>(), shape.rows, shape.C);
    }
  });
  if (dgamma_buffer.defined() && !dgamma_target.same(dgamma_buffer)) add_inplace(dgamma_buffer, dgamma_target);
  if (dbeta_buffer.defined() && !dbeta_target.same(dbeta_buffer)) add_inplace(dbeta_buffer, dbeta_target);
  return dx;
}

ResidualLayerNormOutputs residual_forward(const char* op, const Tensor& x, const Tensor& residual, const Tensor& gamma,
                                          const Tensor& beta, double eps, bool expose_sum) {
  const RowShape shape = check_layernorm_args(op, x, &residual, gamma, beta, eps);
  Tape* tape = Tape::recording_for({&x, &residual, &gamma, &beta});
  ForwardResult r = run_forward(op, x, residual, gamma, beta, eps, shape, tape != nullptr);
  if (tape != nullptr) {
    std::vector<Tensor> outputs = {r.out};
    if (expose_sum) outputs.push_back(r.sum);
    // Saved: the sum (the normalized input), gamma and the row statistics.
    tape->record(op, {x, residual, gamma, beta}, outputs,
                 [op, sum = r.sum.detach(), gamma = gamma.detach(), mean = r.mean, rstd = r.rstd, shape,
                  expose_sum](BackwardContext& ctx) {
                   const Tensor dout = detail::as_dtype(ctx.grad_output(0), sum.dtype());
                   const Tensor dsum = expose_sum ? detail::as_dtype(ctx.grad_output(1), sum.dtype()) : Tensor();
                   const bool want_dx = ctx.needs_grad(0) || ctx.needs_grad(1);
                   Tensor dx = run_backward(op, dout, dsum, sum, gamma, mean, rstd, shape, want_dx,
                                            ctx.needs_grad(2) ? ctx.grad_buffer(2) : Tensor(),
                                            ctx.needs_grad(3) ? ctx.grad_buffer(3) : Tensor());
                   if (ctx.needs_grad(0) && ctx.needs_grad(1)) {
                     ctx.accumulate(0, dx);
                     ctx.accumulate(1, std::move(dx));
                   } else if (ctx.needs_grad(0)) {
                     ctx.accumulate(0, std::move(dx));
                   } else if (ctx.needs_grad(1)) {
                     ctx.accumulate(1, std::move(dx));
                   }
                 });
  }
  return ResidualLayerNormOutputs{r.out, r.sum};
}

}  // namespace

Tensor layernorm(const Tensor& x, const Tensor& gamma, const Tensor& beta, double eps) {
  constexpr const char* op = "layernorm";
  const RowShape shape = check_layernorm_args(op, x, nullptr, gamma, beta, eps);
  Tape* tape = Tape::recording_for({&x, &gamma, &beta});
  ForwardResult r = run_forward(op, x, Tensor(), gamma, beta, eps, shape, tape != nullptr);
  if (tape != nullptr) {
    // Saved: x, gamma and the row statistics.
    tape->record(op, {x, gamma, beta}, {r.out},
                 [x = x.detach(), gamma = gamma.detach(), mean = r.mean, rstd = r.rstd, shape](BackwardContext& ctx) {
                   const Tensor dout = detail::as_dtype(ctx.grad_output(0), x.dtype());
                   Tensor dx = run_backward(op, dout, Tensor(), x, gamma, mean, rstd, shape, ctx.needs_grad(0),
                                            ctx.needs_grad(1) ? ctx.grad_buffer(1) : Tensor(),
                                            ctx.needs_grad(2) ? ctx.grad_buffer(2) : Tensor());
                   if (dx.defined()) ctx.accumulate(0, std::move(dx));
                 });
  }
  return r.out;
}

Tensor residual_layernorm(const Tensor& x, const Tensor& residual, const Tensor& gamma, const Tensor& beta,
                          double eps) {
  return residual_forward("residual_layernorm", x, residual, gamma, beta, eps, /*expose_sum=*/false).out;
}

ResidualLayerNormOutputs residual_layernorm_with_sum(const Tensor& x, const Tensor& residual, const Tensor& gamma,
                                                     const Tensor& beta, double eps) {
  return residual_forward("residual_layernorm_with_sum", x, residual, gamma, beta, eps, /*expose_sum=*/true);
}

}  // namespace coco::ops
