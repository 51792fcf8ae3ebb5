#include "engine/ops/embedding.h"

#include <string>
#include <utility>

#include "engine/ops/activation_dispatch.h"
#include "engine/ops/device_checks.h"
#include "engine/ops/elementwise.h"
#include "engine/tape.h"
#include "kernels/embedding.h"

namespace coco::ops {
namespace {

using detail::describe;
using kernels::EmbeddingShape;

EmbeddingShape check_embedding_args(const char* op, const Tensor& ids, const Tensor& token, const Tensor& position) {
  check_defined(op, ids, "the ids");
  check_defined(op, token, "the token table");
  if (ids.dtype() != DType::i32 || ids.rank() != 2)
    throw TensorError(std::string(op) + ": ids must be a (B, T) i32 tensor, got " + describe(ids));
  if (token.rank() != 2 || token.size(0) < 1 || token.size(1) < 1)
    throw TensorError(std::string(op) + ": the token table must be a non-empty (V, E) tensor, got " + describe(token));
  check_same_device(op, token, ids);
  const EmbeddingShape shape{ids.size(0), ids.size(1), token.size(0), token.size(1)};
  if (position.defined()) {
    check_same_device(op, token, position);
    check_same_dtype(op, token, position);
    if (position.rank() != 2 || position.size(1) != shape.dim || position.size(0) < shape.seq)
      throw TensorError(std::string(op) + ": the position table must be (Tmax >= " + std::to_string(shape.seq) + ", " +
                        std::to_string(shape.dim) + ") for ids " + describe(ids) + ", got " + describe(position));
  }
  return shape;
}

// dtok (may be undefined) and dpos (may be undefined) accumulate the gradient of dout (B, T, E).
void accumulate_table_grads(const Tensor& dout, const Tensor& ids, const EmbeddingShape& shape, int64_t padding_id,
                            Tensor dtok, Tensor dpos) {
  constexpr const char* op = "embedding backward";
  // Buffers whose dtype the kernels cannot write (e.g. f64 buffers for f32 tables) get a fresh
  // zeroed gradient in the table dtype that is added afterwards.
  const auto writable = [&](const Tensor& buffer) {
    if (!buffer.defined()) return true;
    if (buffer.dtype() == dout.dtype()) return true;
    return dout.is_cuda() && buffer.dtype() == DType::f32;
  };
  const bool same_grad_dtype = !dtok.defined() || !dpos.defined() || dtok.dtype() == dpos.dtype();
  Tensor tok_target = dtok, pos_target = dpos;
  if (!writable(dtok) || !writable(dpos) || !same_grad_dtype) {
    if (dtok.defined()) tok_target = Tensor::zeros(dtok.shape(), dout.dtype(), dout.device());
    if (dpos.defined()) pos_target = Tensor::zeros(dpos.shape(), dout.dtype(), dout.device());
  }
  detail::dispatch_activation(op, dout, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (dout.is_cuda()) {
      if constexpr (detail::is_cuda_activation_v<T>) {
        const Tensor& probe = tok_target.defined() ? tok_target : pos_target;
        detail::dispatch_cuda_grad_buffer<T>(probe, [&](auto grad_tag) {
          using G = typename decltype(grad_tag)::type;
          Tensor workspace = tok_target.defined()
                                 ? detail::cuda_workspace(kernels::cuda::embedding_backward_workspace_bytes(shape))
                                 : Tensor();
          kernels::cuda::embedding_backward<T, G>(tok_target.defined() ? tok_target.data_as<G>() : nullptr,
                                                  pos_target.defined() ? pos_target.data_as<G>() : nullptr,
                                                  dout.data_as<T>(), ids.data_as<int32_t>(), shape, padding_id,
                                                  tok_target.defined() ? workspace.data() : nullptr, current_stream());
        });
      }
    } else if constexpr (detail::is_cpu_activation_v<T>) {
      kernels::cpu::embedding_backward<T>(tok_target.defined() ? tok_target.data_as<T>() : nullptr,
                                          pos_target.defined() ? pos_target.data_as<T>() : nullptr, dout.data_as<T>(),
                                          ids.data_as<int32_t>(), shape, padding_id);
    }
  });
  if (dtok.defined() && !tok_target.same(dtok)) add_inplace(dtok, tok_target);
  if (dpos.defined() && !pos_target.same(dpos)) add_inplace(dpos, pos_target);
}

}  // namespace

Tensor embedding(const Tensor& ids, const Tensor& token_table, const Tensor& position_table, int64_t padding_id) {
  constexpr const char* op = "embedding";
  const EmbeddingShape shape = check_embedding_args(op, ids, token_table, position_table);
  Tensor out = Tensor::empty(Shape{shape.batch, shape.seq, shape.dim}, token_table.dtype(), token_table.device());
  detail::dispatch_activation(op, token_table, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* position = position_table.defined() ? position_table.data_as<T>() : nullptr;
    if (token_table.is_cuda()) {
      if constexpr (detail::is_cuda_activation_v<T>) {
        Tensor bad_position = Tensor::empty(Shape{1}, DType::i32, Device::cuda);
        uint32_t* flag = static_cast<uint32_t*>(bad_position.data());
        kernels::cuda::embedding_forward<T>(out.data_as<T>(), ids.data_as<int32_t>(), token_table.data_as<T>(),
                                            position, shape, flag, current_stream());
        // Inside a DeviceChecks scope a bad id is counted on the device; otherwise it is read back here.
        if (ops::DeviceChecks* checks = ops::DeviceChecks::active(Device::cuda))
          checks->add_flag(ops::DeviceChecks::embedding_id, flag, kernels::cuda::kNoBadPosition);
        else
          kernels::cuda::embedding_throw_if_bad_id(flag, ids.data_as<int32_t>(), shape, current_stream());
      }
    } else if constexpr (detail::is_cpu_activation_v<T>) {
      kernels::cpu::embedding_forward<T>(out.data_as<T>(), ids.data_as<int32_t>(), token_table.data_as<T>(), position,
                                         shape);
    }
  });
  const auto backward = [ids = ids.detach(), shape, padding_id, dtype = token_table.dtype(),
                         has_position = position_table.defined()](BackwardContext& ctx) {
    const Tensor dout = detail::as_dtype(ctx.grad_output(0), dtype);
    Tensor dtok = ctx.needs_grad(0) ? ctx.grad_buffer(0) : Tensor();
    Tensor dpos = has_position && ctx.needs_grad(1) ? ctx.grad_buffer(1) : Tensor();
    if (dtok.defined() || dpos.defined())
      accumulate_table_grads(dout, ids, shape, padding_id, std::move(dtok), std::move(dpos));
  };
  if (position_table.defined()) {
    if (Tape* tape = Tape::recording_for({&token_table, &position_table}))
      tape->record(op, {token_table, position_table}, {out}, backward);
  } else if (Tape* tape = Tape::recording_for({&token_table})) {
    tape->record(op, {token_table}, {out}, backward);
  }
  return out;
}

}  // namespace coco::ops
