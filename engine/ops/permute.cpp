#include "engine/ops/permute.h"

#include <string>
#include <type_traits>
#include <utility>

#include "engine/ops/float_dispatch.h"
#include "engine/tape.h"
#include "kernels/permute.h"

namespace coco::ops {
namespace {

using detail::describe;
using kernels::HeadShape;

// Pure data movement: every float dtype on both backends.
template <class Fn>
void dispatch_element(const char* op, const Tensor& t, Fn&& fn) {
  switch (t.dtype()) {
    case DType::f32:
      return fn(std::type_identity<float>{});
    case DType::f64:
      return fn(std::type_identity<double>{});
    case DType::bf16:
      return fn(std::type_identity<__nv_bfloat16>{});
    case DType::f16:
      return fn(std::type_identity<__half>{});
    default:
      throw TensorError(std::string(op) + ": expected an f32, f64, bf16 or f16 tensor, got " + describe(t));
  }
}

HeadShape token_layout_shape(const char* op, const Tensor& x, int64_t heads, int64_t parts) {
  check_defined(op, x, "the input");
  if (x.rank() != 3)
    throw TensorError(std::string(op) + ": expected (B, T, " + (parts == 3 ? "3*" : "") + "H*Dh), got " + describe(x));
  if (heads < 1 || x.size(2) % (parts * heads) != 0)
    throw TensorError(std::string(op) + ": the last dimension of " + describe(x) + " is not divisible into " +
                      std::to_string(parts) + " x " + std::to_string(heads) + " heads");
  return HeadShape{x.size(0), x.size(1), heads, x.size(2) / (parts * heads)};
}

HeadShape head_layout_shape(const char* op, const Tensor& x) {
  check_defined(op, x, "the input");
  if (x.rank() != 4) throw TensorError(std::string(op) + ": expected (B, H, T, Dh), got " + describe(x));
  return HeadShape{x.size(0), x.size(2), x.size(1), x.size(3)};
}

Shape heads_shape(const HeadShape& s) { return Shape{s.batch, s.heads, s.seq, s.head_dim}; }
Shape tokens_shape(const HeadShape& s, int64_t parts) { return Shape{s.batch, s.seq, parts * s.heads * s.head_dim}; }

Tensor split_forward(const char* op, const Tensor& x, const HeadShape& s) {
  Tensor out = Tensor::empty(heads_shape(s), x.dtype(), x.device());
  dispatch_element(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda())
      kernels::cuda::split_heads<T>(out.data_as<T>(), x.data_as<T>(), s, current_stream());
    else
      kernels::cpu::split_heads<T>(out.data_as<T>(), x.data_as<T>(), s);
  });
  return out;
}

Tensor merge_forward(const char* op, const Tensor& x, const HeadShape& s) {
  Tensor out = Tensor::empty(tokens_shape(s, 1), x.dtype(), x.device());
  dispatch_element(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda())
      kernels::cuda::merge_heads<T>(out.data_as<T>(), x.data_as<T>(), s, current_stream());
    else
      kernels::cpu::merge_heads<T>(out.data_as<T>(), x.data_as<T>(), s);
  });
  return out;
}

}  // namespace

Tensor split_heads(const Tensor& x, int64_t heads) {
  constexpr const char* op = "split_heads";
  const HeadShape s = token_layout_shape(op, x, heads, 1);
  Tensor out = split_forward(op, x, s);
  if (Tape* tape = Tape::recording_for({&x})) {
    // Saved: nothing but the shape.
    tape->record(op, {x}, {out}, [s, dtype = x.dtype()](BackwardContext& ctx) {
      ctx.accumulate(0, merge_forward("split_heads backward", detail::as_dtype(ctx.grad_output(0), dtype), s));
    });
  }
  return out;
}

Tensor merge_heads(const Tensor& x) {
  constexpr const char* op = "merge_heads";
  const HeadShape s = head_layout_shape(op, x);
  Tensor out = merge_forward(op, x, s);
  if (Tape* tape = Tape::recording_for({&x})) {
    tape->record(op, {x}, {out}, [s, dtype = x.dtype()](BackwardContext& ctx) {
      ctx.accumulate(0, split_forward("merge_heads backward", detail::as_dtype(ctx.grad_output(0), dtype), s));
    });
  }
  return out;
}

QkvHeads split_qkv(const Tensor& qkv, int64_t heads) {
  constexpr const char* op = "split_qkv";
  const HeadShape s = token_layout_shape(op, qkv, heads, 3);
  QkvHeads out;
  out.q = Tensor::empty(heads_shape(s), qkv.dtype(), qkv.device());
  out.k = Tensor::empty(heads_shape(s), qkv.dtype(), qkv.device());
  out.v = Tensor::empty(heads_shape(s), qkv.dtype(), qkv.device());
  dispatch_element(op, qkv, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (qkv.is_cuda())
      kernels::cuda::split_qkv<T>(out.q.data_as<T>(), out.k.data_as<T>(), out.v.data_as<T>(), qkv.data_as<T>(), s,
                                  current_stream());
    else
      kernels::cpu::split_qkv<T>(out.q.data_as<T>(), out.k.data_as<T>(), out.v.data_as<T>(), qkv.data_as<T>(), s);
  });
  if (Tape* tape = Tape::recording_for({&qkv})) {
    tape->record(op, {qkv}, {out.q, out.k, out.v}, [s, dtype = qkv.dtype()](BackwardContext& ctx) {
      // Outputs no gradient reached arrive as zeros, so the merged gradient is complete.
      const Tensor dq = detail::as_dtype(ctx.grad_output(0), dtype);
      const Tensor dk = detail::as_dtype(ctx.grad_output(1), dtype);
      const Tensor dv = detail::as_dtype(ctx.grad_output(2), dtype);
      Tensor dqkv = Tensor::empty(tokens_shape(s, 3), dtype, dq.device());
      dispatch_element("split_qkv backward", dqkv, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (dqkv.is_cuda())
          kernels::cuda::merge_qkv<T>(dqkv.data_as<T>(), dq.data_as<T>(), dk.data_as<T>(), dv.data_as<T>(), s,
                                      current_stream());
        else
          kernels::cpu::merge_qkv<T>(dqkv.data_as<T>(), dq.data_as<T>(), dk.data_as<T>(), dv.data_as<T>(), s);
      });
      ctx.accumulate(0, std::move(dqkv));
    });
  }
  return out;
}

}  // namespace coco::ops
