#include "engine/ops/linear.h"

#include <string>
#include <type_traits>

#include "engine/ops/float_dispatch.h"
#include "engine/tape.h"
#include "kernels/cpu_fast.h"
#include "kernels/reduce.h"

namespace coco::ops {
namespace {

using detail::describe;
using detail::dispatch_float;

template <class T>
constexpr bool is_16bit_v = std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;
template <class T>
constexpr bool is_cpu_type_v = std::is_same_v<T, float> || std::is_same_v<T, double>;

struct GemmDims {
  int64_t batch = 1, M = 0, N = 0, K = 0;
};

// C (batch, M, N) = op(A) . op(B) + beta * C over contiguous row-major operands. C may be f32 while
// A and B are bf16/f16 (f32 gradient buffers); otherwise all three share a dtype.
void gemm_tensors(const char* op, bool trans_a, bool trans_b, const GemmDims& d, const Tensor& A, const Tensor& B,
                  double beta, const Tensor& C) {
  const int64_t lda = std::max<int64_t>(1, trans_a ? d.M : d.K), ldb = std::max<int64_t>(1, trans_b ? d.K : d.N);
  const int64_t ldc = std::max<int64_t>(1, d.N);
  const int64_t stride_a = d.M * d.K, stride_b = d.K * d.N, stride_c = d.M * d.N;
  dispatch_float(op, A, [&](auto in_tag) {
    using In = typename decltype(in_tag)::type;
    auto run = [&](auto out_tag) {
      using Out = typename decltype(out_tag)::type;
      const In* a = A.data_as<In>();
      const In* b = B.data_as<In>();
      Out* c = C.data_as<Out>();
      if (A.is_cuda()) {
        if (d.batch == 1)
          kernels::cuda::gemm<In, Out>(trans_a, trans_b, d.M, d.N, d.K, 1.0, a, lda, b, ldb, beta, c, ldc,
                                       current_stream());
        else
          kernels::cuda::gemm_strided_batched<In, Out>(trans_a, trans_b, d.M, d.N, d.K, 1.0, a, lda, stride_a, b, ldb,
                                                       stride_b, beta, c, ldc, stride_c, d.batch, current_stream());
      } else if constexpr (is_cpu_type_v<In> && std::is_same_v<In, Out>) {
        kernels::cpu::gemm_strided_batched<In, Out>(trans_a, trans_b, d.M, d.N, d.K, 1.0, a, lda, stride_a, b, ldb,
                                                    stride_b, beta, c, ldc, stride_c, d.batch);
      }
    };
    if (C.dtype() == A.dtype()) {
      run(std::type_identity<In>{});
      return;
    }
    if constexpr (is_16bit_v<In>) {
      if (C.dtype() == DType::f32 && A.is_cuda()) {
        run(std::type_identity<float>{});
        return;
      }
    }
    throw TensorError(std::string(op) + ": cannot write a product of " + describe(A) + " operands into " + describe(C) +
                      " (supported: the operands' dtype, or f32 for bf16/f16 CUDA operands)");
  });
}

void check_operands(const char* op, const Tensor& a, const Tensor& b, int rank) {
  check_defined(op, a, "the first operand");
  check_defined(op, b, "the second operand");
  check_rank(op, a, rank);
  check_rank(op, b, rank);
  check_same_device(op, a, b);
  check_same_dtype(op, a, b);
}

// Shapes of op(a) . op(b) for rank-2 (batch 1) or rank-3 operands.
GemmDims product_dims(const char* op, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  const int offset = a.rank() == 3 ? 1 : 0;
  GemmDims d;
  d.batch = offset ? a.size(0) : 1;
  d.M = trans_a ? a.size(offset + 1) : a.size(offset);
  d.K = trans_a ? a.size(offset) : a.size(offset + 1);
  const int64_t b_k = trans_b ? b.size(offset + 1) : b.size(offset);
  d.N = trans_b ? b.size(offset) : b.size(offset + 1);
  if (b_k != d.K || (offset && b.size(0) != d.batch))
    throw TensorError(std::string(op) + ": inner dimensions do not match: " + describe(a) +
                      (trans_a ? " (transposed)" : "") + " times " + describe(b) + (trans_b ? " (transposed)" : ""));
  return d;
}

// Forward and backward of op(a) . op(b), shared by matmul and bmm.
Tensor product(const char* op, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, int rank) {
  check_operands(op, a, b, rank);
  const GemmDims d = product_dims(op, a, b, trans_a, trans_b);
  const Shape out_shape = rank == 3 ? Shape{d.batch, d.M, d.N} : Shape{d.M, d.N};
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  gemm_tensors(op, trans_a, trans_b, d, a, b, 0.0, out);
  if (Tape* tape = Tape::recording_for({&a, &b})) {
    // Saved: both operands (each one's gradient is a product of the other with dout).
    tape->record(op, {a, b}, {out}, [op, a = a.detach(), b = b.detach(), trans_a, trans_b, d](BackwardContext& ctx) {
      const Tensor dout = detail::as_dtype(ctx.grad_output(0), a.dtype());  // (batch, M, N)
      if (ctx.needs_grad(0)) {
        Tensor da = Tensor::empty(a.shape(), a.dtype(), a.device());
        if (!trans_a)  // da (M, K) = dout (M, N) . op(b)^T
          gemm_tensors(op, false, !trans_b, {d.batch, d.M, d.K, d.N}, dout, b, 0.0, da);
        else  // a stored (K, M): da = op(b) (K, N) . dout^T
          gemm_tensors(op, trans_b, true, {d.batch, d.K, d.M, d.N}, b, dout, 0.0, da);
        ctx.accumulate(0, std::move(da));
      }
      if (ctx.needs_grad(1)) {
        Tensor db = Tensor::empty(b.shape(), b.dtype(), b.device());
        if (!trans_b)  // db (K, N) = op(a)^T (K, M) . dout (M, N)
          gemm_tensors(op, !trans_a, false, {d.batch, d.K, d.N, d.M}, a, dout, 0.0, db);
        else  // b stored (N, K): db = dout^T (N, M) . op(a) (M, K)
          gemm_tensors(op, true, trans_a, {d.batch, d.N, d.K, d.M}, dout, a, 0.0, db);
        ctx.accumulate(1, std::move(db));
      }
    });
  }
  return out;
}

// Writes the activation backward dpre = dy * act'(pre) into a new tensor.
Tensor activation_backward(const Tensor& dy, const Tensor& pre, Activation act) {
  Tensor dpre = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
  dispatch_float("linear backward", dy, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (dy.is_cuda())
      kernels::cuda::activation_backward<T>(act, dy.data_as<T>(), pre.data_as<T>(), dpre.data_as<T>(), dy.numel(),
                                            current_stream());
    else if constexpr (std::is_same_v<T, float>)
      kernels::cpu_fast::activation_backward(act, dy.data_as<T>(), pre.data_as<T>(), dpre.data_as<T>(), dy.numel());
    else if constexpr (is_cpu_type_v<T>)
      kernels::cpu::activation_backward<T>(act, dy.data_as<T>(), pre.data_as<T>(), dpre.data_as<T>(), dy.numel());
  });
  return dpre;
}

// db += column sums of dpre (rows, out); db may be f32 for bf16/f16 dpre.
void accumulate_bias_grad(const Tensor& dpre, int64_t rows, int64_t out, const Tensor& db) {
  constexpr const char* op = "linear backward (bias)";
  dispatch_float(op, dpre, [&](auto tag) {
    using In = typename decltype(tag)::type;
    auto run = [&](auto out_tag) {
      using Out = typename decltype(out_tag)::type;
      if (dpre.is_cuda()) {
        Tensor workspace = detail::cuda_workspace(kernels::cuda::column_sum_workspace_bytes(rows, out));
        kernels::cuda::column_sum<In, Out>(dpre.data_as<In>(), rows, out, 1.0, db.data_as<Out>(), workspace.data(),
                                           current_stream());
      } else if constexpr (is_cpu_type_v<In> && std::is_same_v<In, Out>) {
        kernels::cpu::column_sum<In>(dpre.data_as<In>(), rows, out, 1.0, db.data_as<Out>());
      }
    };
    if (db.dtype() == dpre.dtype()) {
      run(std::type_identity<In>{});
      return;
    }
    if constexpr (is_16bit_v<In>) {
      if (db.dtype() == DType::f32 && dpre.is_cuda()) {
        run(std::type_identity<float>{});
        return;
      }
    }
    throw TensorError(std::string(op) + ": cannot accumulate a " + describe(dpre) + " gradient into " + describe(db));
  });
}

// CUDA: dW (out, in) += dpre^T . x with db += column sums of dpre from the same GEMM's BGRADB
// epilogue (one reduction launch fewer). Returns false, having done nothing, when the dtypes do
// not fit that form (db's dtype must be dW's: cuBLASLt writes the bias gradient in D's type);
// returns true with db still to do when cuBLASLt had no BGRADB algorithm (dW is done).
bool weight_and_bias_grad(const Tensor& dpre, const Tensor& x, int64_t rows, int64_t in, int64_t out, const Tensor& dW,
                          const Tensor& db, bool* bias_done) {
  *bias_done = false;
  if (!dpre.is_cuda() || db.dtype() != dW.dtype()) return false;
  bool handled = false;
  dispatch_float("linear backward (weight)", dpre, [&](auto tag) {
    using In = typename decltype(tag)::type;
    auto run = [&](auto out_tag) {
      using Out = typename decltype(out_tag)::type;
      Tensor scratch = detail::cuda_workspace(static_cast<size_t>(out) * sizeof(Out));
      *bias_done = kernels::cuda::linear_backward_weight<In, Out>(dpre.data_as<In>(), x.data_as<In>(), rows, in, out,
                                                                  dW.data_as<Out>(), db.data_as<Out>(),
                                                                  static_cast<Out*>(scratch.data()), current_stream());
      handled = true;
    };
    if (dW.dtype() == dpre.dtype()) {
      run(std::type_identity<In>{});
    } else if constexpr (is_16bit_v<In>) {
      if (dW.dtype() == DType::f32) run(std::type_identity<float>{});
    }
  });
  return handled;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  return product("matmul", a, b, trans_a, trans_b, 2);
}

Tensor bmm(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  return product("bmm", a, b, trans_a, trans_b, 3);
}

Tensor linear(const Tensor& x, const Tensor& W, const Tensor& bias, Activation act) {
  constexpr const char* op = "linear";
  check_defined(op, x, "the input x");
  check_defined(op, W, "the weight W");
  check_rank(op, W, 2);
  if (x.rank() < 1) throw TensorError(std::string(op) + ": the input must have rank >= 1, got " + describe(x));
  check_same_device(op, x, W);
  check_same_dtype(op, x, W);
  const int64_t out_features = W.size(0), in_features = W.size(1);
  if (x.shape().last() != in_features)
    throw TensorError(std::string(op) + ": input " + describe(x) + " has " + std::to_string(x.shape().last()) +
                      " features, the weight " + describe(W) + " expects " + std::to_string(in_features));
  if (bias.defined()) {
    check_same_device(op, x, bias);
    check_same_dtype(op, x, bias);
    if (bias.rank() != 1 || bias.size(0) != out_features)
      throw TensorError(std::string(op) + ": bias " + describe(bias) + " does not match the weight " + describe(W) +
                        " (expected (" + std::to_string(out_features) + "))");
  }
  if (act != Activation::none && act != Activation::gelu_erf && act != Activation::gelu_tanh)
    throw TensorError(std::string(op) + ": unknown activation code " + std::to_string(static_cast<int>(act)));
  const int64_t rows = x.shape().rows();
  const Shape out_shape = x.shape().with_dim(x.rank() - 1, out_features);
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());
  Tape* tape = Tape::recording_for({&x, &W, &bias});
  // The pre-activation is only kept when a backward will need it.
  Tensor pre = act != Activation::none && tape ? Tensor::empty(out_shape, x.dtype(), x.device()) : Tensor();
  dispatch_float(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* bias_data = bias.defined() ? bias.data_as<T>() : nullptr;
    T* pre_data = pre.defined() ? pre.data_as<T>() : nullptr;
    if (x.is_cuda())
      kernels::cuda::linear_forward<T>(x.data_as<T>(), W.data_as<T>(), bias_data, act, rows, in_features, out_features,
                                       y.data_as<T>(), pre_data, current_stream());
    else if constexpr (std::is_same_v<T, float>)
      kernels::cpu_fast::linear_forward(x.data_as<T>(), W.data_as<T>(), bias_data, act, rows, in_features, out_features,
                                        y.data_as<T>(), pre_data);
    else if constexpr (is_cpu_type_v<T>)
      kernels::cpu::linear_forward<T>(x.data_as<T>(), W.data_as<T>(), bias_data, act, rows, in_features, out_features,
                                      y.data_as<T>(), pre_data);
  });
  if (tape) {
    // Saved: x and W (for dW and dx) and, with an activation, the pre-activation.
    tape->record(op, {x, W, bias}, {y},
                 [x = x.detach(), W = W.detach(), pre, act, rows, in_features, out_features](BackwardContext& ctx) {
                   const Tensor dy = detail::as_dtype(ctx.grad_output(0), x.dtype());  // (rows, out)
                   const Tensor dpre = act == Activation::none ? dy : activation_backward(dy, pre, act);
                   if (ctx.needs_grad(0)) {  // dx (rows, in) = dpre (rows, out) . W (out, in)
                     Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
                     gemm_tensors("linear backward (input)", false, false, {1, rows, in_features, out_features}, dpre,
                                  W, 0.0, dx);
                     ctx.accumulate(0, std::move(dx));
                   }
                   bool bias_done = false;
                   if (ctx.needs_grad(1)) {  // dW (out, in) += dpre^T (out, rows) . x (rows, in)
                     const Tensor dW = ctx.grad_buffer(1);
                     // On CUDA the bias gradient rides on this GEMM (cuBLASLt's BGRADB epilogue).
                     if (!ctx.needs_grad(2) || !weight_and_bias_grad(dpre, x, rows, in_features, out_features, dW,
                                                                     ctx.grad_buffer(2), &bias_done))
                       gemm_tensors("linear backward (weight)", true, false, {1, out_features, in_features, rows}, dpre,
                                    x, 1.0, dW);
                   }
                   if (ctx.needs_grad(2) && !bias_done)
                     accumulate_bias_grad(dpre, rows, out_features, ctx.grad_buffer(2));
                 });
  }
  return y;
}

}  // namespace coco::ops
