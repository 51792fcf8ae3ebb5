// ZeRO stage 1: AdamW whose f32 masters and moments are sharded across the ranks, with the gradients'
// reduce-scatter overlapped with backward.
//
// Layout: the parameters are grouped into buckets of about `bucket_bytes`, in the order backward
// finishes their gradients (the reverse of registration order at first; after the first hooked step,
// the order observed then, like GradSync), and laid end to end in one flat f32 vector, each bucket
// padded to a multiple of the world size W. Rank r owns the r-th of the W equal slices of every bucket;
// its shard is those slices end to end. So a bucket's reduce-scatter (average over ranks) writes each
// rank's slice of the bucket's gradient straight into its shard, and can start from the tape hook as
// soon as the bucket's last gradient is final, while backward continues (attach/detach/finish, the
// BackwardSync interface the trainer drives for GradSync too). A step then computes the global gradient
// norm from the shards' squared norms (one all-reduce of a scalar), runs the existing fused AdamW
// (engine/ops/optim.h) on the shard (one AdamW tensor per piece of a parameter in the shard, so
// per-parameter weight decay is kept), and all-gathers the updated slices back, bucket by bucket, into
// the parameters. Memory for the optimizer state is 1 / W of plain data parallelism's; the result
// equals it up to the reduction order.
//
// Parameters are f32 tensors that require grad, on the communicator's device (the mixed-precision
// master/working split of the single-process trainer is not sharded yet). Repeated tensors (tied
// weights) are one parameter.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/dist/grad_sync.h"
#include "engine/module.h"
#include "engine/ops/optim.h"

namespace coco::dist {

class ZeroAdamW final : public BackwardSync {
 public:
  ZeroAdamW(Communicator& comm, const std::vector<NamedParameter>& params, optim::AdamWOptions options = {},
            size_t bucket_bytes = size_t{25} << 20);

  struct StepResult {
    double grad_norm;    // global L2 norm of the averaged gradients, times grad_scale
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

  // step() in two halves, for a caller that decides between them (skip a non-finite step, clip):
  // reduce_gradients() completes the reduce-scatter (finish(), unless the hooked backward already did)
  // and returns the global L2 norm of the averaged gradients times grad_scale (the same on every rank;
  // not finite when any gradient is not finite); apply() then runs AdamW on the shard with the gradients
  // multiplied by grad_scale and all-gathers the weights. A step that is skipped calls only
  // reduce_gradients() (and zero_grad()).
  double reduce_gradients(double grad_scale = 1.0);
  void apply(double lr, double grad_scale = 1.0);

  int64_t total_elements() const { return total_; }  // unpadded
  int64_t shard_size() const { return shard_; }
  const std::vector<NamedParameter>& parameters() const { return params_; }

  // The whole optimizer state, gathered from the shards (a collective: every rank calls it), per
  // parameter in parameters() order, f32 on the communicator's device: what a checkpoint stores, so
  // that a run on any number of ranks can resume it.
  struct ParamState {
    int64_t step = 0;
    Tensor exp_avg, exp_avg_sq;
  };
  std::vector<ParamState> gathered_state();
  // Loads a whole-model state (as gathered_state returns, from any world size): each rank keeps its
  // shard. Shapes must match parameters(); throws TensorError otherwise.
  void load_state(const std::vector<ParamState>& state);

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
  // Lays the buckets out in `order` (parameter indices), rebuilds the buffers, the shard of masters from
  // the parameters' current values, and a fresh AdamW over the shard's pieces.
  void layout(const std::vector<size_t>& order);
  void on_final(AutogradMeta& leaf);
  void stage(size_t param);  // copies the parameter's gradient into the flat gradient
  void start(Bucket& bucket);
  Tensor bucket_range(const Tensor& flat, const Bucket& b) const;
  Tensor shard_range(const Tensor& shard, const Bucket& b) const;
  Tensor gather_flat(const Tensor& shard_values);  // shard (S) -> whole flat vector, bucket by bucket

  Communicator& comm_;
  optim::AdamWOptions options_;
  size_t bucket_bytes_;
  std::vector<NamedParameter> params_;
  std::unordered_map<const AutogradMeta*, size_t> index_of_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // per parameter
  std::vector<int64_t> offsets_;   // each parameter's start in the flat vector
  int64_t total_ = 0, padded_ = 0, shard_ = 0;
  Tensor flat_grad_, grad_shard_, master_shard_, flat_params_;
  std::vector<Piece> pieces_;
  std::unique_ptr<optim::AdamW> adamw_;  // null when this rank's shard is all padding
  Tensor norm_buffer_;                   // 1 element f64: the squared norm's all-reduce

  // The hook's state for the current step.
  FinalGradients finals_;
  bool attached_ = false, reduced_ = false;
  // Order learning: the first hooked step records the order gradients became final; when it differs
  // from the layout's, the next attach() lays the buckets out again (the state moves along).
  std::vector<size_t> relayout_order_;
  bool order_learned_ = false;
};

}  // namespace coco::dist
