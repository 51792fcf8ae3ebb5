// Data-parallel gradient synchronisation overlapped with backward. The parameters' gradients are
// grouped into buckets of about `bucket_bytes`, in the reverse of the order the forward uses the
// parameters (the order backward finishes them). A hook on the tape (Tape::set_leaf_grad_hook) sees
// each parameter's gradient become final, copies it into its bucket's flat buffer, and when the
// bucket's last gradient is in, starts the bucket's all-reduce (average over ranks) on the
// communicator while backward goes on; finish() waits and writes the averaged gradients back.
//
// The first step lays the buckets out in reverse registration order and records the order in which
// the gradients actually became final; if that differs, the buckets are laid out again from it for
// the following steps (the same on every rank: every rank runs the same graph). A parameter held
// twice (tied weights) is one parameter here, synchronised once. With gradient accumulation, attach
// the hook only for the last micro-batch: earlier ones accumulate locally.
#pragma once
#include <cstddef>
#include <unordered_map>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/tape.h"
#include "engine/tensor.h"

namespace coco::dist {

// What a training loop drives around the backward of a step's last micro-batch: attach the hook to the
// tape, run backward (buckets start from the hook while it runs), detach, finish. GradSync all-reduces
// buckets (plain data parallelism); ZeroAdamW (engine/dist/zero.h) reduce-scatters them into its shards.
class BackwardSync {
 public:
  virtual ~BackwardSync() = default;
  virtual void attach(Tape& tape) = 0;
  virtual void detach(Tape& tape) = 0;
  // After backward: starts the buckets the hook did not, and waits for all of them.
  virtual void finish() = 0;
  virtual size_t bucket_count() const = 0;
  // Buckets of the last step started from the hook while backward still had gradients to finish.
  virtual size_t overlapped_buckets() const = 0;
};

struct GradSyncOptions {
  size_t bucket_bytes = size_t{25} << 20;  // PyTorch DDP's default bucket size
  DType reduce_dtype = DType::f32;         // f32 or bf16: the dtype the buckets are reduced in
};

class GradSync final : public BackwardSync {
 public:
  // `params`: the trainable tensors (requires_grad, on the communicator's device); repeats (tied
  // weights) are dropped. Throws CommError for a tensor that does not require grad or lives on another
  // device, DistConfigError for a reduce dtype other than f32/bf16 or a zero bucket size.
  GradSync(Communicator& comm, const std::vector<Tensor>& params, GradSyncOptions options = {});

  // Installs (detach: removes) the hook that starts buckets during `tape`'s backward.
  void attach(Tape& tape) override;
  void detach(Tape& tape) override;

  // After backward: buckets not started yet (parameters that no gradient reached count as zeros) are
  // started, all are waited for (wait(): later work on the caller's stream sees them), and every
  // parameter's .grad holds the average over the ranks (created, in its grad dtype, where backward
  // gave it none). Then the next step may begin.
  void finish() override;

  size_t bucket_count() const override { return buckets_.size(); }
  // Bucket b's parameters, as indices into the deduplicated parameter list.
  const std::vector<size_t>& bucket(size_t b) const { return buckets_.at(b).params; }
  // Buckets of the last step whose all-reduce started from the hook, while backward still had
  // parameter gradients to finish (the overlap).
  size_t overlapped_buckets() const override { return overlapped_; }
  const std::vector<Tensor>& parameters() const { return params_; }

 private:
  struct Bucket {
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // element offset of each parameter in `buffer`
    Tensor buffer;                 // flat, reduce dtype
    size_t pending = 0;            // gradients not final yet this step
    bool started = false;
  };
  void layout(const std::vector<size_t>& order);
  void on_final(AutogradMeta& leaf);
  void stage(size_t param);  // copies the parameter's gradient into its bucket
  void start(Bucket& bucket);

  Communicator& comm_;
  GradSyncOptions options_;
  std::vector<Tensor> params_;
  std::unordered_map<const AutogradMeta*, size_t> index_of_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_, slot_of_;  // per parameter: its bucket and position there
  std::vector<bool> final_;
  size_t finals_this_step_ = 0;
  std::vector<size_t> observed_order_;
  bool relaid_ = false;
  size_t overlapped_ = 0;
};

}  // namespace coco::dist
