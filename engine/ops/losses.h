// Loss ops of the COCO-LM objective, recorded on the tape: vocabulary cross-entropy (generator MLM),
// the corrective LM loss, binary cross-entropy with logits (RTD / copy head), row L2 normalisation, and the
// two sequence contrastive losses. Kernel semantics: kernels/{cross_entropy,corrective_lm,bce,l2norm,
// contrastive}.h.
//
// Backends and dtypes: CPU tensors f32 or f64; CUDA tensors f32, bf16 or f16 (f32 math). Scalar
// losses are 0-d tensors: on the CPU of the input's dtype, on CUDA always f32. Each loss also returns
// its metric counts as a device tensor (read back only when asked). cross_entropy and
// corrective_lm_loss validate the targets: at once (a synchronisation) or, inside an
// ops::DeviceChecks scope, through its counters.
#pragma once
#include <cstdint>

#include "engine/tensor.h"
#include "kernels/bce.h"
#include "kernels/corrective_lm.h"
#include "kernels/cross_entropy.h"

namespace coco::ops {

using kernels::BceLabels;
using kernels::CorrectiveLmForm;
using kernels::LossReduction;

struct LossResult {
  Tensor loss;  // 0-d
  // (>= 2) i32 on the loss's device: [0] positions / rows / anchors predicted correctly, [1] positions /
  // rows / anchors the loss averages over. Stays on the device; correct() / count() read it back.
  Tensor counts;
  int64_t correct() const { return read(0); }  // a device-to-host copy on CUDA
  int64_t count() const { return read(1); }

 private:
  int64_t read(int64_t slot) const;
};

struct CrossEntropyOptions {
  int32_t ignore_index = -100;
  // (N) per-row weights, any float dtype; a stop-gradient input (never receives a gradient).
  Tensor row_weights;
  // mean: sum_i w_i * ce_i / (number of non-ignored rows), 0 when all rows are ignored; sum: no division.
  LossReduction reduction = LossReduction::mean;
  // Write dlogits during the forward (the backward then only scales it by the upstream gradient).
  // Trades the logits' lifetime for the gradient's: the logits may be freed right after the forward.
  bool gradient_in_forward = false;
};

// logits: (N, V) (or (..., V): every leading index is a row), targets: (N) i32 on the same device.
// correct = non-ignored rows whose argmax (ties: lowest index) is the target; count = non-ignored rows.
// A target outside [0, V) that is not ignore_index throws TensorError. When the tape holds the only
// reference to the logits at backward time, dlogits is written into the logits' memory.
LossResult cross_entropy(const Tensor& logits, const Tensor& targets, const CrossEntropyOptions& options = {});

struct CorrectiveLmOptions {
  CorrectiveLmForm form = CorrectiveLmForm::code;
  int32_t ignore_index = -100;
};

// Corrective LM loss of the `paper` preset (semantics in kernels/corrective_lm.h): logits (N, V) of
// the CLM head, targets (N) i32 (the original tokens), copy_logits (N) any float dtype (the copy
// head's logits at the same positions; stop-gradient), samples (N) i32 (the generator's samples).
// Gradient to the logits only; correct/count as for cross_entropy.
LossResult corrective_lm_loss(const Tensor& logits, const Tensor& targets, const Tensor& copy_logits,
                              const Tensor& samples, const CorrectiveLmOptions& options = {});

struct BceOptions {
  Tensor valid;  // u8 mask, same number of elements as the logits (nonzero = counted); undefined: all
  BceLabels labels = BceLabels::replaced_is_one;
};

// logits: any shape, replaced: u8 0/1 flags of the same number of elements ("this token was
// replaced"); the label convention picks the target. Mean over valid positions; correct = valid
// positions with (logit > 0) == target.
LossResult bce_with_logits(const Tensor& logits, const Tensor& replaced, const BceOptions& options = {});

// x / max(||x||, eps) over the last dimension (F.normalize).
Tensor l2_normalize(const Tensor& x, double eps = 1e-12);

// Symmetric cross-view InfoNCE (`lucidrains`): a, b (B, D) L2-normalised, theta a learnable
// log-scale (1 element; f32 on CUDA, the inputs' dtype on the CPU, converted otherwise).
// Gradients to a, b and theta. correct/count over the 2B anchors (rows and columns).
LossResult info_nce(const Tensor& a, const Tensor& b, const Tensor& theta);

// NT-Xent over the 2B x 2B similarity matrix (`paper`), fixed temperature tau > 0.
LossResult nt_xent(const Tensor& a, const Tensor& b, double tau);

}  // namespace coco::ops
