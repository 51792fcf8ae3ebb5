#include "engine/ops/losses.h"

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/ops/activation_dispatch.h"
#include "engine/ops/device_checks.h"
#include "engine/ops/float_dispatch.h"
#include "engine/tape.h"
#include "kernels/contrastive.h"
#include "kernels/corrective_lm.h"
#include "kernels/cpu_fast.h"
#include "kernels/l2norm.h"

namespace coco::ops {
namespace {

using detail::as_dtype;
using detail::describe;

template <class T>
constexpr bool kCpuType = std::is_same_v<T, float> || std::is_same_v<T, double>;
template <class T>
constexpr bool kCudaType = std::is_same_v<T, float> || std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;

// fn(std::type_identity<T>{}) with the element type the loss kernels take: f32 or f64 on the CPU;
// f32, bf16 or f16 on CUDA.
template <class Fn>
void dispatch_loss_type(const char* op, const Tensor& t, Fn&& fn) {
  detail::dispatch_activation(op, t, std::forward<Fn>(fn));
}

// dtype of scalar results and statistics: f32 on CUDA, the input's dtype on the CPU.
DType stat_dtype_for(const Tensor& t) { return t.is_cuda() ? DType::f32 : t.dtype(); }

// Rows of a (..., last) tensor; throws when the last dimension is empty or the tensor is 0-d.
int64_t rows_of(const char* op, const Tensor& t, const char* what) {
  if (t.rank() < 1 || t.shape().last() < 1)
    throw TensorError(std::string(op) + ": " + what + " must have a non-empty last dimension, got " + describe(t));
  return t.numel() / t.shape().last();
}

void check_mask(const char* op, const Tensor& mask, const Tensor& like, const char* what) {
  check_same_device(op, like, mask);
  if (mask.dtype() != DType::u8 || mask.numel() != like.numel())
    throw TensorError(std::string(op) + ": " + what + " must be u8 with " + std::to_string(like.numel()) +
                      " elements (one per logit), got " + describe(mask));
}

// The first target that is neither ignore_index nor in [0, vocab), for the error message.
std::string describe_bad_target(const Tensor& targets, int32_t ignore_index, int64_t vocab) {
  const std::vector<int32_t> host = targets.to_vector<int32_t>();
  for (size_t i = 0; i < host.size(); ++i)
    if (host[i] != ignore_index && (host[i] < 0 || host[i] >= vocab))
      return "targets[" + std::to_string(i) + "] = " + std::to_string(host[i]);
  return "a target";
}

// values *= *scale (a one-element tensor of the statistics dtype) in place.
void scale_in_place(const char* op, Tensor& values, const Tensor& scale) {
  dispatch_loss_type(op, values, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (values.is_cuda()) {
      if constexpr (kCudaType<T>)
        kernels::cuda::scale_by_device_scalar<T>(values.data_as<T>(), values.numel(), scale.data_as<float>(),
                                                 current_stream());
    } else if constexpr (kCpuType<T>) {
      const T s = *scale.data_as<T>();
      T* v = values.data_as<T>();
      for (int64_t i = 0; i < values.numel(); ++i) v[i] *= s;
    }
  });
}

}  // namespace

// Every loss kernel puts its correct count in slot 0 and its denominator in slot 1 (LossResult::counts).
static_assert(kernels::kCountCorrect == 0 && kernels::kCountRows == 1);
static_assert(kernels::kBceCountCorrect == 0 && kernels::kBceCountValid == 1);
static_assert(kernels::kContrastiveCountCorrect == 0 && kernels::kContrastiveCountAnchors == 1);

int64_t LossResult::read(int64_t slot) const {
  if (!counts.defined() || counts.numel() <= slot) throw TensorError("LossResult: no counts");
  return counts.to_vector<int32_t>()[static_cast<size_t>(slot)];
}

// ---------------------------------------------------------------- cross-entropy

namespace {

// What the cross-entropy forward leaves for the loss ops and the backward.
struct CrossEntropyForward {
  Tensor loss;      // 0-d, stat dtype
  Tensor row_loss;  // (rows) unweighted ce_i, stat dtype
  Tensor row_lse;   // (rows) stat dtype
  Tensor counts;    // (kCrossEntropyCounts) i32 on the logits' device
  Tensor weights;   // (rows) stat dtype or undefined
  int64_t rows = 0, vocab = 0;
};

// Checks the arguments, runs the forward kernels and throws on out-of-range targets. When `dlogits` is
// defined it receives the gradient for an upstream gradient of 1.
CrossEntropyForward run_cross_entropy_forward(const char* op, const Tensor& logits, const Tensor& targets,
                                              const Tensor& row_weights, int32_t ignore_index, LossReduction reduction,
                                              Tensor* dlogits) {
  check_defined(op, logits, "the logits");
  check_defined(op, targets, "the targets");
  CrossEntropyForward f;
  f.rows = rows_of(op, logits, "the logits");
  f.vocab = logits.shape().last();
  const int64_t rows = f.rows, vocab = f.vocab;
  check_same_device(op, logits, targets);
  if (targets.dtype() != DType::i32 || targets.numel() != rows)
    throw TensorError(std::string(op) + ": targets must be i32 with one element per logits row (" +
                      std::to_string(rows) + "), got " + describe(targets) + " for logits " + describe(logits));
  if (rows > INT32_MAX || vocab > INT32_MAX)
    throw TensorError(std::string(op) + ": logits " + describe(logits) + " exceed 2^31-1 rows or columns");
  const Device device = logits.device();
  const DType stat_dtype = stat_dtype_for(logits);
  if (row_weights.defined()) {
    check_same_device(op, logits, row_weights);
    if (!dtype_is_float(row_weights.dtype()) || row_weights.numel() != rows)
      throw TensorError(std::string(op) + ": row_weights must be a float tensor with one element per row (" +
                        std::to_string(rows) + "), got " + describe(row_weights));
    f.weights = as_dtype(row_weights.detach(), stat_dtype);
  }
  const Tensor& weights = f.weights;
  f.loss = Tensor::empty(Shape{}, stat_dtype, device);
  f.row_loss = Tensor::empty(Shape{rows}, stat_dtype, device);
  f.row_lse = Tensor::empty(Shape{rows}, stat_dtype, device);
  f.counts = Tensor::empty(Shape{kernels::kCrossEntropyCounts}, DType::i32, device);
  const bool fused = dlogits != nullptr && dlogits->defined();

  dispatch_loss_type(op, logits, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (logits.is_cuda()) {
      if constexpr (kCudaType<T>)
        kernels::cuda::cross_entropy_forward<T>(
            logits.data_as<T>(), targets.data_as<int32_t>(), weights.defined() ? weights.data_as<float>() : nullptr,
            rows, vocab, ignore_index, reduction, f.loss.data_as<float>(), f.row_loss.data_as<float>(),
            f.row_lse.data_as<float>(), f.counts.data_as<int32_t>(), fused ? dlogits->data_as<T>() : nullptr, 1.0f,
            current_stream());
    } else if constexpr (std::is_same_v<T, float>) {  // the f32 fast path (kernels/cpu_fast.h)
      kernels::cpu_fast::cross_entropy_forward(
          logits.data_as<T>(), targets.data_as<int32_t>(), weights.defined() ? weights.data_as<T>() : nullptr, rows,
          vocab, ignore_index, reduction, f.loss.data_as<T>(), f.row_loss.data_as<T>(), f.row_lse.data_as<T>(),
          f.counts.data_as<int32_t>(), fused ? dlogits->data_as<T>() : nullptr, T(1));
    } else if constexpr (kCpuType<T>) {
      kernels::cpu::cross_entropy_forward<T>(
          logits.data_as<T>(), targets.data_as<int32_t>(), weights.defined() ? weights.data_as<T>() : nullptr, rows,
          vocab, ignore_index, reduction, f.loss.data_as<T>(), f.row_loss.data_as<T>(), f.row_lse.data_as<T>(),
          f.counts.data_as<int32_t>(), fused ? dlogits->data_as<T>() : nullptr, T(1));
    }
  });
  if (DeviceChecks* checks = DeviceChecks::active(device); checks && device == Device::cuda) {
    checks->add(DeviceChecks::cross_entropy_target, f.counts.data_as<int32_t>() + kernels::kCountInvalid);
    return f;
  }
  const int32_t invalid = f.counts.to_vector<int32_t>()[kernels::kCountInvalid];
  if (invalid > 0)
    throw TensorError(std::string(op) + ": " + std::to_string(invalid) + " target(s) outside [0, " +
                      std::to_string(vocab) + ") and not ignore_index " + std::to_string(ignore_index) + ", first " +
                      describe_bad_target(targets, ignore_index, vocab) + ", for logits " + describe(logits));
  return f;
}

// Records d loss / d logits = g * w_i / denom * (softmax - onehot) for `loss`, a 0-d output computed
// from `logits`. `weights` (stat dtype, or undefined for 1) are stop-gradient; the mean's denominator
// comes from the forward's counts.
void record_cross_entropy_backward(Tape& tape, const char* op, const Tensor& logits, const Tensor& targets,
                                   const Tensor& loss, const CrossEntropyForward& f, const Tensor& weights,
                                   int32_t ignore_index, LossReduction reduction) {
  const DType stat_dtype = stat_dtype_for(logits);
  tape.record(
      op, {logits}, {loss},
      [logits = logits.detach(), targets = targets.detach(), weights, row_lse = f.row_lse, counts = f.counts,
       ignore_index, reduction, rows = f.rows, vocab = f.vocab, stat_dtype](BackwardContext& ctx) mutable {
        const Tensor upstream = as_dtype(ctx.grad_output(0), stat_dtype);
        Tensor source = std::move(logits);
        // When nothing else references the logits, the gradient overwrites them (the
        // kernels allow dlogits == logits) and the buffer is handed to the gradient.
        Tensor dlogits =
            source.exclusively_owned() ? source : Tensor::empty(source.shape(), source.dtype(), source.device());
        dispatch_loss_type("cross_entropy backward", source, [&](auto tag) {
          using T = typename decltype(tag)::type;
          if (source.is_cuda()) {
            if constexpr (kCudaType<T>)
              kernels::cuda::cross_entropy_backward<T>(source.data_as<T>(), targets.data_as<int32_t>(),
                                                       weights.defined() ? weights.data_as<float>() : nullptr,
                                                       row_lse.data_as<float>(), counts.data_as<int32_t>(), rows, vocab,
                                                       ignore_index, reduction, upstream.data_as<float>(),
                                                       dlogits.data_as<T>(), current_stream());
          } else if constexpr (std::is_same_v<T, float>) {
            kernels::cpu_fast::cross_entropy_backward(
                source.data_as<T>(), targets.data_as<int32_t>(), weights.defined() ? weights.data_as<T>() : nullptr,
                row_lse.data_as<T>(), counts.data_as<int32_t>(), rows, vocab, ignore_index, reduction,
                upstream.data_as<T>(), dlogits.data_as<T>());
          } else if constexpr (kCpuType<T>) {
            kernels::cpu::cross_entropy_backward<T>(
                source.data_as<T>(), targets.data_as<int32_t>(), weights.defined() ? weights.data_as<T>() : nullptr,
                row_lse.data_as<T>(), counts.data_as<int32_t>(), rows, vocab, ignore_index, reduction,
                upstream.data_as<T>(), dlogits.data_as<T>());
          }
        });
        source = Tensor();
        ctx.accumulate(0, std::move(dlogits));
      });
}

}  // namespace

LossResult cross_entropy(const Tensor& logits, const Tensor& targets, const CrossEntropyOptions& options) {
  constexpr const char* op = "cross_entropy";
  check_defined(op, logits, "the logits");
  Tape* tape = Tape::recording_for({&logits});
  const bool fused = options.gradient_in_forward && tape != nullptr;
  Tensor dlogits = fused ? Tensor::empty(logits.shape(), logits.dtype(), logits.device()) : Tensor();
  const DType stat_dtype = stat_dtype_for(logits);
  const CrossEntropyForward f = run_cross_entropy_forward(op, logits, targets, options.row_weights,
                                                          options.ignore_index, options.reduction, &dlogits);
  if (tape) {
    if (fused) {
      // Saved: the gradient for an upstream gradient of 1.
      tape->record(op, {logits}, {f.loss}, [dlogits = std::move(dlogits), stat_dtype](BackwardContext& ctx) mutable {
        const Tensor upstream = as_dtype(ctx.grad_output(0), stat_dtype);
        scale_in_place("cross_entropy backward", dlogits, upstream);
        ctx.accumulate(0, std::move(dlogits));
      });
    } else {
      // Saved: logits, targets, weights, per-row log-sum-exp and the counts (the mean's denominator).
      record_cross_entropy_backward(*tape, op, logits, targets, f.loss, f, f.weights, options.ignore_index,
                                    options.reduction);
    }
  }
  return LossResult{f.loss, f.counts};
}

// ---------------------------------------------------------------- corrective LM

LossResult corrective_lm_loss(const Tensor& logits, const Tensor& targets, const Tensor& copy_logits,
                              const Tensor& samples, const CorrectiveLmOptions& options) {
  constexpr const char* op = "corrective_lm_loss";
  check_defined(op, logits, "the logits");
  check_defined(op, copy_logits, "the copy logits");
  check_defined(op, samples, "the samples");
  const int64_t rows = rows_of(op, logits, "the logits");
  check_same_device(op, logits, copy_logits);
  check_same_device(op, logits, samples);
  if (!dtype_is_float(copy_logits.dtype()) || copy_logits.numel() != rows)
    throw TensorError(std::string(op) + ": copy logits must be a float tensor with one element per logits row (" +
                      std::to_string(rows) + "), got " + describe(copy_logits));
  if (samples.dtype() != DType::i32 || samples.numel() != rows)
    throw TensorError(std::string(op) + ": samples must be i32 with one element per logits row (" +
                      std::to_string(rows) + "), got " + describe(samples));
  const Device device = logits.device();
  const DType stat_dtype = stat_dtype_for(logits);
  const CrossEntropyForward f =
      run_cross_entropy_forward(op, logits, targets, Tensor(), options.ignore_index, LossReduction::mean, nullptr);
  // Stop-gradient input: detached, in the statistics dtype.
  const Tensor copy = as_dtype(copy_logits.detach(), stat_dtype);
  Tensor loss = Tensor::empty(Shape{}, stat_dtype, device);
  Tensor row_weights = Tensor::empty(Shape{rows}, stat_dtype, device);
  if (device == Device::cuda) {
    kernels::cuda::corrective_lm_loss(f.row_loss.data_as<float>(), copy.data_as<float>(), targets.data_as<int32_t>(),
                                      samples.data_as<int32_t>(), rows, options.ignore_index, options.form,
                                      loss.data_as<float>(), row_weights.data_as<float>(), current_stream());
  } else {
    dispatch_loss_type(op, logits, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (kCpuType<T>)
        kernels::cpu::corrective_lm_loss<T>(f.row_loss.data_as<T>(), copy.data_as<T>(), targets.data_as<int32_t>(),
                                            samples.data_as<int32_t>(), rows, options.ignore_index, options.form,
                                            loss.data_as<T>(), row_weights.data_as<T>());
    });
  }
  if (Tape* tape = Tape::recording_for({&logits}))
    record_cross_entropy_backward(*tape, op, logits, targets, loss, f, row_weights, options.ignore_index,
                                  LossReduction::mean);
  return LossResult{loss, f.counts};
}

// ---------------------------------------------------------------- binary cross-entropy

LossResult bce_with_logits(const Tensor& logits, const Tensor& replaced, const BceOptions& options) {
  constexpr const char* op = "bce_with_logits";
  check_defined(op, logits, "the logits");
  check_defined(op, replaced, "the replaced flags");
  check_mask(op, replaced, logits, "the replaced flags");
  if (options.valid.defined()) check_mask(op, options.valid, logits, "the validity mask");
  const int64_t n = logits.numel();
  if (n > INT32_MAX) throw TensorError(std::string(op) + ": logits " + describe(logits) + " exceed 2^31-1 elements");
  const Device device = logits.device();
  const DType stat_dtype = stat_dtype_for(logits);
  const Tensor valid = options.valid.defined() ? options.valid.detach() : Tensor();
  const BceLabels labels = options.labels;

  Tensor loss = Tensor::empty(Shape{}, stat_dtype, device);
  Tensor counts = Tensor::empty(Shape{kernels::kBceCounts}, DType::i32, device);
  dispatch_loss_type(op, logits, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const uint8_t* valid_data = valid.defined() ? valid.data_as<uint8_t>() : nullptr;
    if (logits.is_cuda()) {
      if constexpr (kCudaType<T>) {
        Tensor workspace = detail::cuda_workspace(kernels::cuda::bce_workspace_bytes(n));
        kernels::cuda::bce_with_logits_forward<T>(logits.data_as<T>(), replaced.data_as<uint8_t>(), valid_data, n,
                                                  labels, loss.data_as<float>(), counts.data_as<int32_t>(),
                                                  workspace.data(), current_stream());
      }
    } else if constexpr (kCpuType<T>) {
      kernels::cpu::bce_with_logits_forward<T>(logits.data_as<T>(), replaced.data_as<uint8_t>(), valid_data, n, labels,
                                               loss.data_as<T>(), counts.data_as<int32_t>());
    }
  });
  if (Tape* tape = Tape::recording_for({&logits})) {
    // Saved: logits, flags, mask and the counts (the mean's denominator).
    tape->record(op, {logits}, {loss},
                 [logits = logits.detach(), replaced = replaced.detach(), valid, counts, labels, n,
                  stat_dtype](BackwardContext& ctx) {
                   const Tensor upstream = as_dtype(ctx.grad_output(0), stat_dtype);
                   Tensor dlogits = Tensor::empty(logits.shape(), logits.dtype(), logits.device());
                   dispatch_loss_type("bce_with_logits backward", logits, [&](auto tag) {
                     using T = typename decltype(tag)::type;
                     const uint8_t* valid_data = valid.defined() ? valid.data_as<uint8_t>() : nullptr;
                     if (logits.is_cuda()) {
                       if constexpr (kCudaType<T>)
                         kernels::cuda::bce_with_logits_backward<T>(
                             logits.data_as<T>(), replaced.data_as<uint8_t>(), valid_data, counts.data_as<int32_t>(), n,
                             labels, upstream.data_as<float>(), dlogits.data_as<T>(), current_stream());
                     } else if constexpr (kCpuType<T>) {
                       kernels::cpu::bce_with_logits_backward<T>(logits.data_as<T>(), replaced.data_as<uint8_t>(),
                                                                 valid_data, counts.data_as<int32_t>(), n, labels,
                                                                 upstream.data_as<T>(), dlogits.data_as<T>());
                     }
                   });
                   ctx.accumulate(0, std::move(dlogits));
                 });
  }
  return LossResult{loss, counts};
}

// ---------------------------------------------------------------- L2 normalisation

Tensor l2_normalize(const Tensor& x, double eps) {
  constexpr const char* op = "l2_normalize";
  check_defined(op, x, "the input");
  const int64_t rows = rows_of(op, x, "the input");
  const int64_t dim = x.shape().last();
  if (!(eps > 0.0) || !std::isfinite(eps))
    throw TensorError(std::string(op) + ": eps must be a finite value > 0, got " + std::to_string(eps));
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.device());
  Tensor norms = Tensor::empty(Shape{rows}, stat_dtype_for(x), x.device());
  dispatch_loss_type(op, x, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (x.is_cuda()) {
      if constexpr (kCudaType<T>)
        kernels::cuda::l2_normalize_forward<T>(x.data_as<T>(), rows, dim, static_cast<float>(eps), y.data_as<T>(),
                                               norms.data_as<float>(), current_stream());
    } else if constexpr (kCpuType<T>) {
      kernels::cpu::l2_normalize_forward<T>(x.data_as<T>(), rows, dim, eps, y.data_as<T>(), norms.data_as<T>());
    }
  });
  if (Tape* tape = Tape::recording_for({&x})) {
    // Saved: the input and its row norms.
    tape->record(op, {x}, {y}, [x = x.detach(), norms, rows, dim, eps](BackwardContext& ctx) {
      const Tensor dy = as_dtype(ctx.grad_output(0), x.dtype());
      Tensor dx = Tensor::empty(x.shape(), x.dtype(), x.device());
      dispatch_loss_type("l2_normalize backward", x, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (x.is_cuda()) {
          if constexpr (kCudaType<T>)
            kernels::cuda::l2_normalize_backward<T>(x.data_as<T>(), norms.data_as<float>(), dy.data_as<T>(), rows, dim,
                                                    static_cast<float>(eps), dx.data_as<T>(), current_stream());
        } else if constexpr (kCpuType<T>) {
          kernels::cpu::l2_normalize_backward<T>(x.data_as<T>(), norms.data_as<T>(), dy.data_as<T>(), rows, dim, eps,
                                                 dx.data_as<T>());
        }
      });
      ctx.accumulate(0, std::move(dx));
    });
  }
  return y;
}

// ---------------------------------------------------------------- contrastive losses

namespace {

void check_views(const char* op, const Tensor& a, const Tensor& b) {
  check_defined(op, a, "the first view");
  check_defined(op, b, "the second view");
  check_rank(op, a, 2);
  check_same_shape(op, a, b);
  check_same_dtype(op, a, b);
  check_same_device(op, a, b);
  if (a.size(0) < 1 || a.size(1) < 1)
    throw TensorError(std::string(op) + ": the views need at least one row and one column, got " + describe(a));
  if (a.is_cuda() && a.size(0) > 4096)
    throw TensorError(std::string(op) + ": at most 4096 sequences per call on CUDA, got " + describe(a));
}

// Runs the forward of either loss; theta undefined selects NT-Xent.
LossResult contrastive(const char* op, kernels::ContrastiveKind kind, const Tensor& a, const Tensor& b,
                       const Tensor& theta_input, double tau) {
  check_views(op, a, b);
  const int64_t batch = a.size(0), dim = a.size(1);
  const Device device = a.device();
  const DType stat_dtype = stat_dtype_for(a);
  const bool info_nce = kind == kernels::ContrastiveKind::info_nce;
  Tensor theta;
  if (info_nce) {
    check_defined(op, theta_input, "theta");
    check_same_device(op, a, theta_input);
    if (theta_input.numel() != 1 || !dtype_is_float(theta_input.dtype()))
      throw TensorError(std::string(op) + ": theta must be a single float element, got " + describe(theta_input));
    theta = as_dtype(theta_input.detach(), stat_dtype);
  } else if (!(tau > 0.0) || !std::isfinite(tau)) {
    throw TensorError(std::string(op) + ": tau must be a finite value > 0, got " + std::to_string(tau));
  }
  Tensor loss = Tensor::empty(Shape{}, stat_dtype, device);
  Tensor saved = Tensor::empty(Shape{kernels::contrastive_saved_size(kind, batch)}, stat_dtype, device);
  Tensor counts = Tensor::empty(Shape{kernels::kContrastiveCounts}, DType::i32, device);
  dispatch_loss_type(op, a, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (a.is_cuda()) {
      if constexpr (kCudaType<T>) {
        Tensor workspace =
            Tensor::empty(Shape{kernels::cuda::contrastive_workspace_size(kind, batch)}, DType::f32, device);
        if (info_nce)
          kernels::cuda::info_nce_forward<T>(a.data_as<T>(), b.data_as<T>(), theta.data_as<float>(), batch, dim,
                                             loss.data_as<float>(), saved.data_as<float>(), counts.data_as<int32_t>(),
                                             workspace.data_as<float>(), current_stream());
        else
          kernels::cuda::nt_xent_forward<T>(a.data_as<T>(), b.data_as<T>(), batch, dim, static_cast<float>(tau),
                                            loss.data_as<float>(), saved.data_as<float>(), counts.data_as<int32_t>(),
                                            workspace.data_as<float>(), current_stream());
      }
    } else if constexpr (kCpuType<T>) {
      if (info_nce)
        kernels::cpu::info_nce_forward<T>(a.data_as<T>(), b.data_as<T>(), theta.data_as<T>(), batch, dim,
                                          loss.data_as<T>(), saved.data_as<T>(), counts.data_as<int32_t>());
      else
        kernels::cpu::nt_xent_forward<T>(a.data_as<T>(), b.data_as<T>(), batch, dim, tau, loss.data_as<T>(),
                                         saved.data_as<T>(), counts.data_as<int32_t>());
    }
  });
  Tape* tape = info_nce ? Tape::recording_for({&a, &b, &theta_input}) : Tape::recording_for({&a, &b});
  if (tape) {
    std::vector<Tensor> inputs = {a, b};
    if (info_nce) inputs.push_back(theta_input);
    // Saved: both views, theta, the similarity matrix and the anchors' log-sum-exp.
    tape->record(
        op, inputs, {loss},
        [a = a.detach(), b = b.detach(), theta, saved, kind, batch, dim, tau, stat_dtype,
         info_nce](BackwardContext& ctx) {
          const Tensor upstream = as_dtype(ctx.grad_output(0), stat_dtype);
          Tensor da = Tensor::empty(a.shape(), a.dtype(), a.device());
          Tensor db = Tensor::empty(b.shape(), b.dtype(), b.device());
          Tensor dtheta = info_nce ? Tensor::empty(theta.shape(), stat_dtype, a.device()) : Tensor();
          dispatch_loss_type(info_nce ? "info_nce backward" : "nt_xent backward", a, [&](auto tag) {
            using T = typename decltype(tag)::type;
            if (a.is_cuda()) {
              if constexpr (kCudaType<T>) {
                Tensor workspace = Tensor::empty(Shape{kernels::cuda::contrastive_workspace_size(kind, batch)},
                                                 DType::f32, a.device());
                if (info_nce)
                  kernels::cuda::info_nce_backward<T>(a.data_as<T>(), b.data_as<T>(), theta.data_as<float>(),
                                                      saved.data_as<float>(), batch, dim, upstream.data_as<float>(),
                                                      da.data_as<T>(), db.data_as<T>(), dtheta.data_as<float>(),
                                                      workspace.data_as<float>(), current_stream());
                else
                  kernels::cuda::nt_xent_backward<T>(a.data_as<T>(), b.data_as<T>(), saved.data_as<float>(), batch, dim,
                                                     static_cast<float>(tau), upstream.data_as<float>(),
                                                     da.data_as<T>(), db.data_as<T>(), workspace.data_as<float>(),
                                                     current_stream());
              }
            } else if constexpr (kCpuType<T>) {
              if (info_nce)
                kernels::cpu::info_nce_backward<T>(a.data_as<T>(), b.data_as<T>(), theta.data_as<T>(),
                                                   saved.data_as<T>(), batch, dim, upstream.data_as<T>(),
                                                   da.data_as<T>(), db.data_as<T>(), dtheta.data_as<T>());
              else
                kernels::cpu::nt_xent_backward<T>(a.data_as<T>(), b.data_as<T>(), saved.data_as<T>(), batch, dim, tau,
                                                  upstream.data_as<T>(), da.data_as<T>(), db.data_as<T>());
            }
          });
          ctx.accumulate(0, std::move(da));
          ctx.accumulate(1, std::move(db));
          if (info_nce) ctx.accumulate(2, std::move(dtheta));
        });
  }
  return LossResult{loss, counts};
}

}  // namespace

LossResult info_nce(const Tensor& a, const Tensor& b, const Tensor& theta) {
  return contrastive("info_nce", kernels::ContrastiveKind::info_nce, a, b, theta, 0.0);
}

LossResult nt_xent(const Tensor& a, const Tensor& b, double tau) {
  return contrastive("nt_xent", kernels::ContrastiveKind::nt_xent, a, b, Tensor(), tau);
}

}  // namespace coco::ops
