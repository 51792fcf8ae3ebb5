// ZeRO stage 1: AdamW whose f32 masters and moments are sharded across the ranks, with the gradients'
// reduce-scatter overlapped with backward.
//
// Layout: the parameters are grouped into buckets of about `bucket_bytes` (of the reduce dtype), in the
// order backward finishes their gradients (the reverse of registration order at first; after the first
// hooked step, the order observed then, like GradSync), and laid end to end in one flat vector, each bucket
// padded to a multiple of the world size W. Rank r owns the r-th of the W equal slices of every bucket;
// its shard is those slices end to end. So a bucket's reduce-scatter (sum over ranks) writes each
// rank's slice of the bucket's gradient straight into its shard, and can start from the tape hook as
// soon as the bucket's last gradient is final, while backward continues (attach/detach/finish, the
// BackwardSync interface the trainer drives for GradSync too). A step then computes the global gradient
// norm and non-finite flag from the shards' (one all-reduce of two scalars), runs the existing fused AdamW
// (engine/ops/optim.h) on the shard (one AdamW tensor per piece of a parameter in the shard, so
// per-parameter weight decay is kept), and all-gathers the updated slices back, bucket by bucket, into
// the parameters. Memory for the optimizer state and masters is 1 / W of plain data parallelism's; the
// result equals it up to the reduction order.
//
// Mixed precision: the parameters may be the 16-bit working copies a mixed-precision forward uses (bf16,
// or f16 with dynamic loss scaling), with the f32 masters' values given separately at construction. Each
// rank then keeps the f32 masters of its shard only (and the caller may free its whole copies); the shard's
// AdamW updates them and writes the shard's working copies (bf16: rounded by the AdamW kernel in the same
// pass, as the single-process step does; f16: converted after the update, as refresh_working_copies does),
// and the all-gather moves the 16-bit working copies: half the bytes of f32. Gradients (any of f32, bf16,
// f16, as the backward accumulates them) are reduce-scattered in ZeroOptions::reduce_dtype (f32 or bf16).
// A loss scale is undone inside the norm and the update through grad_scale (1 / scale), as in
// optim::AdamW::step.
//
// The gradients are summed over the ranks, not averaged (as in GradSync, engine/dist/grad_sync.h): the caller
// seeds each rank's backward with its share of the step's global micro-batches, so the sum is their mean.
//
// Repeated tensors (tied weights) are one parameter.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dist/grad_sync.h"
#include "engine/module.h"
#include "engine/ops/optim.h"

namespace coco::dist {

struct ZeroOptions {
  size_t bucket_bytes = size_t{25} << 20;  // bytes of the reduce dtype per gradient bucket
  DType reduce_dtype = DType::f32;         // f32 or bf16: the dtype the gradients are reduce-scattered in
};

class ZeroAdamW final : public BackwardSync {
 public:
  // f32 parameters that require grad on the communicator's device, their own masters.
  ZeroAdamW(Communicator& comm, const std::vector<NamedParameter>& params, optim::AdamWOptions options = {},
            size_t bucket_bytes = size_t{25} << 20);
  // Mixed precision: `params` are working copies, all of one dtype (f32, bf16 or f16), that require grad on
  // the communicator's device; `masters[i]` holds the f32 value of params[i] (same shape; any device; only
  // this rank's shard of it is copied). Throws TensorError for a parameter or master that does not fit,
  // DistConfigError for a reduce dtype other than f32/bf16 or a bucket size of 0 bytes.
  ZeroAdamW(Communicator& comm, const std::vector<NamedParameter>& params, const std::vector<Tensor>& masters,
            optim::AdamWOptions options, ZeroOptions zero_options);

  struct StepResult {
    double grad_norm;    // global L2 norm of the summed gradients, times grad_scale
    double clip_factor;  // min(1, max_norm / (norm + 1e-6)), 1 without clipping (max_norm <= 0)
  };
  // After backward: one update of every parameter at `lr`, gradients multiplied by grad_scale and the
  // clipping factor. Parameters without a gradient count as zero gradients. Throws
  // TensorError/std::invalid_argument like optim::AdamW.
  StepResult step(double lr, double max_norm = 0.0, double grad_scale = 1.0);
  void zero_grad();

  // The gradients' reduce-scatter overlapped with backward (BackwardSync): attach() before the backward
  // of the step's last micro-batch (earlier ones accumulate locally), detach() and finish() after it.
  // Without them, reduce_gradients() stages and reduce-scatters every bucket itself.
  void attach(Tape& tape) override;
  void detach(Tape& tape) override;
  void finish() override;
  size_t bucket_count() const override { return buckets_.size(); }
  size_t overlapped_buckets() const override { return finals_.overlapped(); }

  // step() in two halves, for a caller that decides between them (skip a non-finite step, clip, the
  // loss scaler's update): reduce_gradients() completes the reduce-scatter (finish(), unless the hooked
  // backward already did) and returns the global L2 norm of the summed gradients times grad_scale and
  // whether any element of any rank's shard is NaN or +-Inf (both the same on every rank, from one
  // all-reduce); apply() then runs AdamW on the shard with the gradients multiplied by grad_scale, writes
  // the shard's working copies and all-gathers the weights. A step that is skipped calls only
  // reduce_gradients() (and zero_grad()).
  optim::GradientStats reduce_gradients(double grad_scale = 1.0);
  void apply(double lr, double grad_scale = 1.0);

  // For a step decided on the device (optim::StepControl) instead: after finish(), this rank's shard of the
  // summed gradients (reduce dtype; its padding is zero), whose squared norm and non-finite flag summed
  // over the ranks are the global ones.
  const Tensor& gradient_shard() const { return grad_shard_; }
  // The device-decided step, after `control` decided from gradient_shard()'s statistics summed over the ranks
  // (StepControl::decide's combine: the same decision on every rank): AdamW on the shard with the scalars the
  // decision left on the device (a skipped step leaves the shard alone), the working copies written and
  // all-gathered. No value comes back to the host. From then on the shard's step counts live on the device:
  // sync_step_counts(StepControl::read().applied) before gathered_state() saves them.
  void apply(const optim::StepControl& control);
  void sync_step_counts(int64_t applied);

  DType working_dtype() const { return working_dtype_; }  // the parameters' dtype
  int64_t total_elements() const { return total_; }       // unpadded
  int64_t shard_size() const { return shard_; }
  const std::vector<NamedParameter>& parameters() const { return params_; }

  // The whole optimizer state, gathered from the shards (a collective: every rank calls it), per
  // parameter in parameters() order, f32 on the communicator's device: what a checkpoint stores, so
  // that a run on any number of ranks can resume it.
  struct ParamState {
    int64_t step = 0;
    Tensor exp_avg, exp_avg_sq;
    Tensor master;  // the f32 master value (gathered_state fills it; load_state loads it when defined)
  };
  std::vector<ParamState> gathered_state();
  // Loads a whole-model state (as gathered_state returns, from any world size): each rank keeps its
  // shard (of the masters too, when given; the parameters, the working copies, are left as they are).
  // Shapes must match parameters(); throws TensorError otherwise.
  void load_state(const std::vector<ParamState>& state);
  // One parameter's moments and step count (index into parameters(); whole tensors of its shape, any
  // dtype/device): this rank keeps its shard. Not a collective: a caller may stream a checkpoint through it
  // one parameter at a time.
  void load_param_state(size_t param, int64_t step, const Tensor& exp_avg, const Tensor& exp_avg_sq);

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_, in layout order
    int64_t flat_begin = 0;      // first element in the flat vector
    int64_t slice = 0;           // elements per rank (the bucket is W slices, padding at the end)
    int64_t shard_begin = 0;     // where this rank's slice sits in the shard
    size_t pending = 0;          // gradients not final yet this step
    bool started = false;
  };
  struct Piece {
    size_t param;          // index into params_
    int64_t param_offset;  // first element of the parameter in this piece
    int64_t shard_offset;  // where the piece sits in the shard
    int64_t size;
  };
  // After the first hooked step: when backward finished the gradients in another order than the layout's, the
  // buckets are laid out again in that order and the state moves along (a collective, once per run). Runs at the
  // end of that step's update (apply), so the second step is already in the final layout and every step from
  // then on allocates nothing new (what a CUDA graph capture of the step needs), or at the next attach() when
  // the step was skipped on the host path (reduce_gradients() without apply()).
  void relayout_if_learned();
  // Lays the buckets out in `order` (parameter indices), rebuilds the buffers and a fresh AdamW over the
  // shard's pieces (the masters' shard zero: load_masters fills it).
  void layout(const std::vector<size_t>& order);
  // Copies each piece of the shard from whole(param) (the parameter's f32 master value, any dtype/device).
  void load_masters(const std::function<Tensor(size_t)>& whole);
  // After the shard's update: its working copies from its masters where AdamW did not write them (f16),
  // then the all-gather of the working copies into the parameters.
  void publish();
  void on_final(AutogradMeta& leaf);
  void stage(size_t param);  // copies the parameter's gradient into the flat gradient
  void start(Bucket& bucket);
  Tensor bucket_range(const Tensor& flat, const Bucket& b) const;
  Tensor shard_range(const Tensor& shard, const Bucket& b) const;
  Tensor gather_flat(const Tensor& shard_values);  // shard (S) -> whole flat vector, bucket by bucket

  void init(const std::vector<NamedParameter>& params, const std::vector<Tensor>* masters);

  Communicator& comm_;
  optim::AdamWOptions options_;
  size_t bucket_bytes_;
  DType reduce_dtype_ = DType::f32;
  DType working_dtype_ = DType::f32;
  std::vector<NamedParameter> params_;
  std::unordered_map<const AutogradMeta*, size_t> index_of_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // per parameter
  std::vector<int64_t> offsets_;   // each parameter's start in the flat vector
  int64_t total_ = 0, padded_ = 0, shard_ = 0;
  // flat_grad_/grad_shard_: reduce dtype; master_shard_: f32; working_shard_/flat_params_: the working dtype
  // (working_shard_ is master_shard_ itself for f32 parameters).
  Tensor flat_grad_, grad_shard_, master_shard_, working_shard_, flat_params_;
  std::vector<Piece> pieces_;
  std::unique_ptr<optim::AdamW> adamw_;  // null when this rank's shard is all padding
  bool controlled_ = false;              // apply(control) ran: the shard's step counts are the control's
  Tensor stats_buffer_;                  // 2 elements f64: the squared norm and non-finite count's all-reduce

  // The hook's state for the current step.
  FinalGradients finals_;
  bool attached_ = false, reduced_ = false;
  // Order learning: the first hooked step records the order gradients became final; when it differs
  // from the layout's, relayout_if_learned() lays the buckets out again (the state moves along).
  std::vector<size_t> relayout_order_;
  bool order_learned_ = false;
};

}  // namespace coco::dist
