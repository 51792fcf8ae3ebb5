#include "engine/ops/gather.h"

#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/ops/activation_dispatch.h"
#include "engine/ops/device_checks.h"
#include "engine/ops/float_dispatch.h"
#include "engine/tape.h"
#include "kernels/gather.h"

namespace coco::ops {
namespace {

using detail::describe;

template <class T>
constexpr bool kCpuType = std::is_same_v<T, float> || std::is_same_v<T, double>;
template <class T>
constexpr bool kCudaType = std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;

template <class Fn>
void dispatch_row_type(const char* op, const Tensor& t, Fn&& fn) {
  detail::dispatch_activation(op, t, std::forward<Fn>(fn));
}

struct RowView {
  int64_t rows, dim;
};

RowView row_view(const char* op, const Tensor& t) {
  if (t.rank() < 2 || t.shape().last() < 1)
    throw TensorError(std::string(op) + ": expected rows of a non-empty last dimension (rank >= 2), got " +
                      describe(t));
  return RowView{t.numel() / t.shape().last(), t.shape().last()};
}

void check_index(const char* op, const Tensor& index, const Tensor& like) {
  check_defined(op, index, "the index");
  check_same_device(op, like, index);
  if (index.dtype() != DType::i32 || index.rank() != 1)
    throw TensorError(std::string(op) + ": the index must be a rank-1 i32 tensor, got " + describe(index));
}

// Throws TensorError for a non-zero CUDA invalid-index counter or a CPU kernel's rejection.
[[noreturn]] void throw_bad_index(const char* op, const std::string& detail, const Tensor& index, int64_t rows) {
  throw TensorError(std::string(op) + ": " + detail + " (index " + describe(index) + ", valid range [0, " +
                    std::to_string(rows) + "))");
}

// out (rows, dim) += scatter of src (count, dim). out may be f32 while src is bf16/f16 (CUDA); on
// the CPU a differing src is converted first.
void scatter_add(const char* op, const Tensor& src, const Tensor& index, Tensor& out, int64_t rows, int64_t dim) {
  const int64_t count = index.numel();
  if (!out.is_cuda()) {
    const Tensor converted = detail::as_dtype(src, out.dtype());
    dispatch_row_type(op, out, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (kCpuType<T>) {
        try {
          kernels::cpu::scatter_add_rows<T>(converted.data_as<T>(), index.data_as<int32_t>(), count, dim,
                                            out.data_as<T>(), rows);
        } catch (const std::invalid_argument& e) {
          throw_bad_index(op, e.what(), index, rows);
        }
      }
    });
    return;
  }
  Tensor workspace = detail::cuda_workspace(kernels::cuda::scatter_workspace_bytes(count, rows));
  Tensor invalid = Tensor::empty(Shape{1}, DType::i32, Device::cuda);
  const cudaStream_t stream = current_stream();
  const bool f32_target = out.dtype() == DType::f32;
  if (f32_target && src.dtype() == DType::bf16) {
    kernels::cuda::scatter_add_rows<__nv_bfloat16, float>(src.data_as<__nv_bfloat16>(), index.data_as<int32_t>(), count,
                                                          dim, out.data_as<float>(), rows, invalid.data_as<int32_t>(),
                                                          workspace.data(), stream);
  } else if (f32_target && src.dtype() == DType::f16) {
    kernels::cuda::scatter_add_rows<__half, float>(src.data_as<__half>(), index.data_as<int32_t>(), count, dim,
                                                   out.data_as<float>(), rows, invalid.data_as<int32_t>(),
                                                   workspace.data(), stream);
  } else {
    const Tensor converted = detail::as_dtype(src, out.dtype());
    dispatch_row_type(op, out, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (kCudaType<T>)
        kernels::cuda::scatter_add_rows<T, T>(converted.data_as<T>(), index.data_as<int32_t>(), count, dim,
                                              out.data_as<T>(), rows, invalid.data_as<int32_t>(), workspace.data(),
                                              stream);
    });
  }
  // The invalid-index counter is not read back: callers validate the indices beforehand (gather's
  // forward, scatter_rows' host check), so the scatter never synchronises.
}

}  // namespace

Tensor gather_rows(const Tensor& src, const Tensor& index) {
  constexpr const char* op = "gather_rows";
  check_defined(op, src, "the source");
  check_index(op, index, src);
  const RowView view = row_view(op, src);
  const int64_t count = index.numel();
  Tensor out = Tensor::empty(Shape{count, view.dim}, src.dtype(), src.device());
  dispatch_row_type(op, src, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (src.is_cuda()) {
      if constexpr (kCudaType<T>) {
        // Inside a DeviceChecks scope the invalid-index count goes to its counter, read later; otherwise
        // it is read back here (a synchronisation).
        if (DeviceChecks* checks = DeviceChecks::active(Device::cuda)) {
          kernels::cuda::gather_rows<T>(src.data_as<T>(), view.rows, view.dim, index.data_as<int32_t>(), count,
                                        out.data_as<T>(), checks->counter(DeviceChecks::gather_index), current_stream(),
                                        /*accumulate_invalid=*/true);
          return;
        }
        Tensor invalid = Tensor::empty(Shape{1}, DType::i32, Device::cuda);
        kernels::cuda::gather_rows<T>(src.data_as<T>(), view.rows, view.dim, index.data_as<int32_t>(), count,
                                      out.data_as<T>(), invalid.data_as<int32_t>(), current_stream());
        const int32_t bad = invalid.to_vector<int32_t>()[0];
        if (bad > 0) throw_bad_index(op, std::to_string(bad) + " index value(s) out of range", index, view.rows);
      }
    } else if constexpr (kCpuType<T>) {
      try {
        kernels::cpu::gather_rows<T>(src.data_as<T>(), view.rows, view.dim, index.data_as<int32_t>(), count,
                                     out.data_as<T>());
      } catch (const std::invalid_argument& e) {
        throw_bad_index(op, e.what(), index, view.rows);
      }
    }
  });
  if (Tape* tape = Tape::recording_for({&src})) {
    // Saved: the index only.
    tape->record(op, {src}, {out}, [index = index.detach(), view](BackwardContext& ctx) {
      Tensor grad = ctx.grad_buffer(0);  // src's gradient, accumulated in place
      Tensor rows = grad.view(Shape{view.rows, view.dim});
      scatter_add("gather_rows backward", ctx.grad_output(0), index, rows, view.rows, view.dim);
    });
  }
  return out;
}

Tensor scatter_rows(const Tensor& src, const Tensor& index, int64_t rows) {
  constexpr const char* op = "scatter_rows";
  check_defined(op, src, "the source");
  check_index(op, index, src);
  check_rank(op, src, 2);
  if (src.size(0) != index.numel() || src.size(1) < 1)
    throw TensorError(std::string(op) + ": the source must have one non-empty row per index (" +
                      std::to_string(index.numel()) + "), got " + describe(src));
  if (rows < 0) throw TensorError(std::string(op) + ": negative row count " + std::to_string(rows));
  const int64_t dim = src.size(1);
  Tensor out = Tensor::zeros(Shape{rows, dim}, src.dtype(), src.device());
  if (src.is_cuda()) {
    // Validate first so that a bad index is reported before anything else runs.
    const std::vector<int32_t> host = index.to_vector<int32_t>();
    for (size_t m = 0; m < host.size(); ++m)
      if (host[m] < 0 || host[m] >= rows)
        throw_bad_index(op, "index[" + std::to_string(m) + "] = " + std::to_string(host[m]) + " is out of range", index,
                        rows);
  }
  scatter_add(op, src, index, out, rows, dim);
  if (Tape* tape = Tape::recording_for({&src})) {
    // Saved: the index only.
    tape->record(op, {src}, {out}, [index = index.detach(), dtype = src.dtype()](BackwardContext& ctx) {
      const Tensor dout = detail::as_dtype(ctx.grad_output(0), dtype);
      ctx.accumulate(0, gather_rows(dout, index));
    });
  }
  return out;
}

}  // namespace coco::ops
