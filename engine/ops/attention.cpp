#include "engine/ops/attention.h"

#include <string>
#include <type_traits>

#include "engine/ops/float_dispatch.h"
#include "engine/ops/relpos.h"
#include "engine/tape.h"
#include "kernels/attention.h"
#include "kernels/attention_tc.h"

namespace coco::ops {
namespace {

using detail::describe;
using detail::dispatch_float;

constexpr const char* kOp = "attention";

void check_arguments(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask, const Tensor& bias,
                     double dropout_p) {
  check_defined(kOp, q, "q");
  check_defined(kOp, k, "k");
  check_defined(kOp, v, "v");
  check_rank(kOp, q, 4);
  for (const Tensor* t : {&k, &v}) {
    check_same_shape(kOp, q, *t);
    check_same_dtype(kOp, q, *t);
    check_same_device(kOp, q, *t);
  }
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2);
  if (key_mask.defined()) {
    check_same_device(kOp, q, key_mask);
    if (key_mask.shape() != Shape{B, T} || (key_mask.dtype() != DType::u8 && key_mask.dtype() != DType::i32))
      throw TensorError(std::string(kOp) + ": key_mask must be (B, T) = " + Shape{B, T}.str() + " u8 or i32, got " +
                        describe(key_mask) + " for q " + describe(q));
  }
  if (bias.defined()) {
    check_same_device(kOp, q, bias);
    if (bias.shape() != Shape{H, T, T} || !dtype_is_float(bias.dtype()))
      throw TensorError(std::string(kOp) + ": bias must be (H, T, T) = " + Shape{H, T, T}.str() +
                        " floating point, got " + describe(bias) + " for q " + describe(q));
  }
  if (!(dropout_p >= 0.0 && dropout_p < 1.0))
    throw TensorError(std::string(kOp) + ": dropout probability " + std::to_string(dropout_p) + " outside [0, 1)");
}

kernels::AttentionShape shape_of(const Tensor& q) { return {q.size(0), q.size(1), q.size(2), q.size(3)}; }

// Calls fn(mask_pointer) with the key mask as const uint8_t* or const int32_t* (null when undefined).
template <class Fn>
void with_mask(const Tensor& key_mask, Fn&& fn) {
  if (!key_mask.defined())
    fn(static_cast<const uint8_t*>(nullptr));
  else if (key_mask.dtype() == DType::u8)
    fn(key_mask.data_as<uint8_t>());
  else
    fn(key_mask.data_as<int32_t>());
}

template <class T>
constexpr DType accumulator_dtype() {
  return std::is_same_v<T, double> ? DType::f64 : DType::f32;
}

// bf16/f16 on CUDA with a head dim the tensor-core kernels have (kernels/attention_tc.h).
bool uses_tensor_cores(const Tensor& q, const kernels::AttentionShape& shape) {
  return q.is_cuda() && (q.dtype() == DType::bf16 || q.dtype() == DType::f16) &&
         kernels::cuda::tc_attention_supports(shape);
}

// The tensor-core path: FlashAttention-2 forward saving out and the log-sum-exp (B, H, T) instead of
// the (B, H, T, T) probabilities; its backward recomputes P per tile.
Tensor tensor_core_attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                             const Tensor& bias, const Tensor& bias_used, const kernels::AttentionShape& shape,
                             const kernels::AttentionDropout& dropout) {
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty(Shape{shape.batch, shape.heads, shape.seq_len}, DType::f32, q.device());
  dispatch_float(kOp, q, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) {
      with_mask(key_mask, [&](const auto* mask) {
        kernels::cuda::tc_attention_forward<T>(q.data_as<T>(), k.data_as<T>(), v.data_as<T>(), mask,
                                               bias_used.defined() ? bias_used.data_as<T>() : nullptr, shape, dropout,
                                               out.data_as<T>(), lse.data_as<float>(), current_stream());
      });
    }
  });
  if (Tape* tape = Tape::recording_for({&q, &k, &v, &bias})) {
    tape->record(kOp, {q, k, v, bias}, {out},
                 [q = q.detach(), k = k.detach(), v = v.detach(), out = out.detach(), lse,
                  key_mask = key_mask.defined() ? key_mask.detach() : Tensor(),
                  bias_used = bias_used.defined() ? bias_used.detach() : Tensor(), shape, dropout,
                  bias_grad_dtype = bias.defined() ? bias.grad_dtype() : q.dtype()](BackwardContext& ctx) {
                   const Tensor dout = detail::as_dtype(ctx.grad_output(0), q.dtype());
                   Tensor dq = ctx.needs_grad(0) ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
                   // dK and dV come from one kernel: both are computed when either is needed.
                   const bool kv = ctx.needs_grad(1) || ctx.needs_grad(2);
                   Tensor dk = kv ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
                   Tensor dv = kv ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
                   Tensor dbias = ctx.needs_grad(3) ? Tensor::empty(Shape{shape.heads, shape.seq_len, shape.seq_len},
                                                                    DType::f32, q.device())
                                                    : Tensor();
                   Tensor delta = Tensor::empty(Shape{shape.batch, shape.heads, shape.seq_len}, DType::f32, q.device());
                   dispatch_float(kOp, q, [&](auto tag) {
                     using T = typename decltype(tag)::type;
                     if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) {
                       auto ptr = [](Tensor& t) { return t.defined() ? t.data_as<T>() : nullptr; };
                       with_mask(key_mask, [&](const auto* mask) {
                         kernels::cuda::tc_attention_backward<T>(
                             q.data_as<T>(), k.data_as<T>(), v.data_as<T>(), out.data_as<T>(), dout.data_as<T>(),
                             lse.data_as<float>(), mask, bias_used.defined() ? bias_used.data_as<T>() : nullptr, shape,
                             dropout, ptr(dq), ptr(dk), ptr(dv), dbias.defined() ? dbias.data_as<float>() : nullptr,
                             false, delta.data_as<float>(), current_stream());
                       });
                     }
                   });
                   if (dq.defined()) ctx.accumulate(0, dq);
                   if (ctx.needs_grad(1)) ctx.accumulate(1, dk);
                   if (ctx.needs_grad(2)) ctx.accumulate(2, dv);
                   if (dbias.defined()) ctx.accumulate(3, detail::as_dtype(dbias, bias_grad_dtype));
                 });
  }
  return out;
}

}  // namespace

bool attention_uses_tensor_cores(const Tensor& q) {
  check_defined(kOp, q, "q");
  check_rank(kOp, q, 4);
  return uses_tensor_cores(q, shape_of(q));
}

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask, const Tensor& bias,
                 double dropout_p, const rng::Stream& stream, bool training) {
  check_arguments(q, k, v, key_mask, bias, dropout_p);
  const kernels::AttentionShape shape = shape_of(q);
  const kernels::AttentionDropout dropout{training ? static_cast<float>(dropout_p) : 0.0f, stream};
  const Tensor bias_used = bias.defined() ? detail::as_dtype(bias, q.dtype()) : Tensor();
  if (uses_tensor_cores(q, shape)) return tensor_core_attention(q, k, v, key_mask, bias, bias_used, shape, dropout);
  const Shape score_shape{shape.batch, shape.heads, shape.seq_len, shape.seq_len};
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor probs = Tensor::empty(score_shape, q.dtype(), q.device());
  dispatch_float(kOp, q, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* bias_data = bias_used.defined() ? bias_used.data_as<T>() : nullptr;
    with_mask(key_mask, [&](const auto* mask) {
      if (q.is_cuda()) {
        using Acc = kernels::AttentionAccumulator<T>;
        Tensor scores = Tensor::empty(score_shape, accumulator_dtype<T>(), q.device());
        Tensor dropped = dropout.active() ? Tensor::empty(score_shape, q.dtype(), q.device()) : Tensor();
        kernels::cuda::attention_forward<T>(q.data_as<T>(), k.data_as<T>(), v.data_as<T>(), mask, bias_data, shape,
                                            dropout, out.data_as<T>(), probs.data_as<T>(), scores.data_as<Acc>(),
                                            dropped.defined() ? dropped.data_as<T>() : nullptr, current_stream());
      } else if constexpr (std::is_same_v<T, float>) {
        kernels::cpu::attention_forward_fast<T>(q.data_as<T>(), k.data_as<T>(), v.data_as<T>(), mask, bias_data, shape,
                                                dropout, out.data_as<T>(), probs.data_as<T>());
      } else if constexpr (std::is_same_v<T, double>) {
        // f64 stays on the double-accumulating reference, so that the tape gradchecks test against it.
        kernels::cpu::attention_forward<T>(q.data_as<T>(), k.data_as<T>(), v.data_as<T>(), mask, bias_data, shape,
                                           dropout, out.data_as<T>(), probs.data_as<T>());
      }
    });
  });
  if (Tape* tape = Tape::recording_for({&q, &k, &v, &bias})) {
    tape->record(kOp, {q, k, v, bias}, {out},
                 [q = q.detach(), k = k.detach(), v = v.detach(), probs, shape, dropout,
                  bias_grad_dtype = bias.defined() ? bias.grad_dtype() : q.dtype()](BackwardContext& ctx) {
                   const Tensor dout = detail::as_dtype(ctx.grad_output(0), q.dtype());  // (B, H, T, Dh)
                   Tensor dq = ctx.needs_grad(0) ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
                   Tensor dk = ctx.needs_grad(1) ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
                   Tensor dv = ctx.needs_grad(2) ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
                   Tensor dbias;
                   const Shape score_shape = probs.shape();
                   const Shape bias_shape{shape.heads, shape.seq_len, shape.seq_len};
                   dispatch_float(kOp, q, [&](auto tag) {
                     using T = typename decltype(tag)::type;
                     auto ptr = [](Tensor& t) { return t.defined() ? t.data_as<T>() : nullptr; };
                     if (q.is_cuda()) {
                       using Acc = kernels::AttentionAccumulator<T>;
                       if (ctx.needs_grad(3)) dbias = Tensor::empty(bias_shape, accumulator_dtype<T>(), q.device());
                       Tensor scores = Tensor::empty(score_shape, accumulator_dtype<T>(), q.device());
                       Tensor workspace = Tensor::empty(score_shape, q.dtype(), q.device());
                       kernels::cuda::attention_backward<T>(
                           q.data_as<T>(), k.data_as<T>(), v.data_as<T>(), probs.data_as<T>(), dout.data_as<T>(), shape,
                           dropout, ptr(dq), ptr(dk), ptr(dv), dbias.defined() ? dbias.data_as<Acc>() : nullptr, false,
                           scores.data_as<Acc>(), workspace.data_as<T>(), current_stream());
                     } else if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
                       if (ctx.needs_grad(3)) dbias = Tensor::empty(bias_shape, q.dtype(), q.device());
                       if constexpr (std::is_same_v<T, float>)
                         kernels::cpu::attention_backward_fast<T>(q.data_as<T>(), k.data_as<T>(), v.data_as<T>(),
                                                                  probs.data_as<T>(), dout.data_as<T>(), shape, dropout,
                                                                  ptr(dq), ptr(dk), ptr(dv), ptr(dbias), false);
                       else
                         kernels::cpu::attention_backward<T>(q.data_as<T>(), k.data_as<T>(), v.data_as<T>(),
                                                             probs.data_as<T>(), dout.data_as<T>(), shape, dropout,
                                                             ptr(dq), ptr(dk), ptr(dv), ptr(dbias), false);
                     }
                   });
                   if (dq.defined()) ctx.accumulate(0, dq);
                   if (dk.defined()) ctx.accumulate(1, dk);
                   if (dv.defined()) ctx.accumulate(2, dv);
                   if (dbias.defined()) ctx.accumulate(3, detail::as_dtype(dbias, bias_grad_dtype));
                 });
  }
  return out;
}

Tensor attention_relative(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& key_mask,
                          const Tensor& table, const kernels::RelativePositionConfig& config, double dropout_p,
                          const rng::Stream& stream, bool training) {
  check_defined(kOp, table, "table");
  check_arguments(q, k, v, key_mask, Tensor(), dropout_p);
  const kernels::AttentionShape shape = shape_of(q);
  if (!uses_tensor_cores(q, shape))
    return attention(q, k, v, key_mask, relative_position_bias(table, shape.seq_len, config), dropout_p, stream,
                     training);
  check_same_device(kOp, q, table);
  if (table.shape() != Shape{config.num_buckets, shape.heads} || !dtype_is_float(table.dtype()))
    throw TensorError(std::string(kOp) + ": table must be (num_buckets, H) = " +
                      Shape{config.num_buckets, shape.heads}.str() + " floating point, got " + describe(table));
  kernels::check_relative_position_config(config, shape.seq_len, kOp);
  const kernels::AttentionDropout dropout{training ? static_cast<float>(dropout_p) : 0.0f, stream};
  const Tensor table_used = detail::as_dtype(table, q.dtype());
  constexpr auto layout = kernels::BiasTableLayout::buckets_by_heads;
  Tensor out = Tensor::empty(q.shape(), q.dtype(), q.device());
  Tensor lse = Tensor::empty(Shape{shape.batch, shape.heads, shape.seq_len}, DType::f32, q.device());
  dispatch_float(kOp, q, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) {
      with_mask(key_mask, [&](const auto* mask) {
        kernels::cuda::tc_attention_relpos_forward<T>(q.data_as<T>(), k.data_as<T>(), v.data_as<T>(), mask,
                                                      table_used.data_as<T>(), layout, config, shape, dropout,
                                                      out.data_as<T>(), lse.data_as<float>(), current_stream());
      });
    }
  });
  if (Tape* tape = Tape::recording_for({&q, &k, &v, &table})) {
    tape->record(
        kOp, {q, k, v, table}, {out},
        [q = q.detach(), k = k.detach(), v = v.detach(), out = out.detach(), lse,
         key_mask = key_mask.defined() ? key_mask.detach() : Tensor(), table_used = table_used.detach(), config, shape,
         dropout, table_grad_dtype = table.grad_dtype()](BackwardContext& ctx) {
          const Tensor dout = detail::as_dtype(ctx.grad_output(0), q.dtype());
          Tensor dq = ctx.needs_grad(0) ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
          const bool kv = ctx.needs_grad(1) || ctx.needs_grad(2);
          Tensor dk = kv ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
          Tensor dv = kv ? Tensor::empty(q.shape(), q.dtype(), q.device()) : Tensor();
          const bool want_table = ctx.needs_grad(3);
          Tensor dtable = want_table ? Tensor::empty(table_used.shape(), DType::f32, q.device()) : Tensor();
          Tensor delta = Tensor::empty(Shape{shape.batch, shape.heads, shape.seq_len}, DType::f32, q.device());
          Tensor partials = want_table ? Tensor::empty(Shape{kernels::cuda::tc_relpos_partials_elements(shape)},
                                                       DType::f32, q.device())
                                       : Tensor();
          Tensor drel =
              want_table ? Tensor::empty(Shape{shape.heads, 2 * shape.seq_len - 1}, DType::f32, q.device()) : Tensor();
          dispatch_float(kOp, q, [&](auto tag) {
            using T = typename decltype(tag)::type;
            if constexpr (std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>) {
              auto ptr = [](Tensor& t) { return t.defined() ? t.data_as<T>() : nullptr; };
              auto f32 = [](Tensor& t) { return t.defined() ? t.data_as<float>() : nullptr; };
              with_mask(key_mask, [&](const auto* mask) {
                kernels::cuda::tc_attention_relpos_backward<T>(
                    q.data_as<T>(), k.data_as<T>(), v.data_as<T>(), out.data_as<T>(), dout.data_as<T>(),
                    lse.data_as<float>(), mask, table_used.data_as<T>(), kernels::BiasTableLayout::buckets_by_heads,
                    config, shape, dropout, ptr(dq), ptr(dk), ptr(dv), f32(dtable), false,
                    {delta.data_as<float>(), f32(partials), f32(drel)}, current_stream());
              });
            }
          });
          if (dq.defined()) ctx.accumulate(0, dq);
          if (ctx.needs_grad(1)) ctx.accumulate(1, dk);
          if (ctx.needs_grad(2)) ctx.accumulate(2, dv);
          if (want_table) ctx.accumulate(3, detail::as_dtype(dtable, table_grad_dtype));
        });
  }
  return out;
}

}  // namespace coco::ops
