// ZeRO stage 1: AdamW whose f32 masters and moments are sharded across the ranks. The parameters are
// laid end to end in one flat f32 vector, padded to a multiple of the world size; rank r owns the
// contiguous shard [r S, (r + 1) S). A step reduce-scatters the gradients (average over ranks) so each
// rank holds the gradient of its shard, computes the global gradient norm from the shards' squared
// norms (one all-reduce of a scalar), runs the existing fused AdamW (engine/ops/optim.h) on its shard
// (one AdamW tensor per piece of a parameter in the shard, so per-parameter weight decay is kept),
// and all-gathers the updated shards back into the parameters. Memory for the optimizer state is
// 1 / world size of plain data parallelism's; the result equals it up to the reduction order.
//
// Parameters are f32 tensors that require grad, on the communicator's device (the mixed-precision
// master/working split of the single-process trainer is not sharded yet). Repeated tensors (tied
// weights) are one parameter.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/module.h"
#include "engine/ops/optim.h"

namespace coco::dist {

class ZeroAdamW {
 public:
  ZeroAdamW(Communicator& comm, const std::vector<NamedParameter>& params, optim::AdamWOptions options = {});

  struct StepResult {
    double grad_norm;    // global L2 norm of the averaged gradients, times grad_scale
    double clip_factor;  // min(1, max_norm / (norm + 1e-6)), 1 without clipping (max_norm <= 0)
  };
  // After backward (no GradSync: the reduce-scatter here is the synchronisation): one update of every
  // parameter at `lr`, gradients multiplied by grad_scale and the clipping factor. Parameters without a
  // gradient count as zero gradients. Throws TensorError/std::invalid_argument like optim::AdamW.
  StepResult step(double lr, double max_norm = 0.0, double grad_scale = 1.0);
  void zero_grad();

  // step() in two halves, for a caller that decides between them (skip a non-finite step, clip):
  // reduce_gradients() reduce-scatters the gradients and returns the global L2 norm of the averaged
  // gradients times grad_scale (the same on every rank; not finite when any gradient is not finite);
  // apply() then runs AdamW on the shard with the gradients multiplied by grad_scale and all-gathers the
  // weights. A step that is skipped calls only reduce_gradients() (and zero_grad()).
  double reduce_gradients(double grad_scale = 1.0);
  void apply(double lr, double grad_scale = 1.0);

  int64_t total_elements() const { return total_; }  // unpadded
  int64_t shard_begin() const { return shard_ * comm_.rank(); }
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
  struct Piece {
    size_t param;          // index into params_
    int64_t param_offset;  // first element of the parameter in this piece
    int64_t shard_offset;  // where the piece sits in the shard
    int64_t size;
  };
  void flatten_gradients();
  Tensor gather_flat(const Tensor& shard_values);  // shard (S) -> whole flat (P)

  Communicator& comm_;
  std::vector<NamedParameter> params_;
  std::vector<int64_t> offsets_;  // each parameter's start in the flat vector
  int64_t total_ = 0, padded_ = 0, shard_ = 0;
  Tensor flat_grad_, grad_shard_, master_shard_, flat_params_;
  std::vector<Piece> pieces_;
  std::vector<Tensor> piece_masters_;
  std::unique_ptr<optim::AdamW> adamw_;  // null when this rank's shard is all padding
  Tensor norm_buffer_;                   // 1 element f64: the squared norm's all-reduce
};

}  // namespace coco::dist
