// Data-parallel gradient synchronisation overlapped with backward. The parameters' gradients are
// grouped into buckets of about `bucket_bytes`, in the reverse of the order the forward uses the
// parameters (the order backward finishes them). A hook on the tape (Tape::set_leaf_grad_hook) sees
// each parameter's gradient become final, copies it into its bucket's flat buffer, and when the
// bucket's last gradient is in, starts the bucket's all-reduce (sum over ranks) on the
// communicator while backward goes on; finish() waits and writes the summed gradients back.
//
// Summed, not averaged: the caller seeds each micro-batch's backward with 1 / (its micro-batches per step
// x world size), the share of the step's global micro-batches, as one process that runs all of them seeds
// with 1 / their number. So N ranks with grad_accum g back-propagate exactly what one process with grad_accum
// N g does (the same magnitudes in f16/bf16 and under a loss scale), and the sum over ranks is the mean over
// the global micro-batches, up to the order of the reduction.
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

// The per-step bookkeeping GradSync and ZeroAdamW share: which parameters' gradients are final, how many
// buckets started from the backward hook while gradients were still to come, and the order in which the
// gradients became final (recorded while a caller still learns it, to lay buckets out in that order).
class FinalGradients {
 public:
  void reset(size_t params) {
    final_.assign(params, false);
    count_ = 0;
  }
  // From the hook: marks p final (false when it already was); the first of a step clears the overlap count.
  bool mark(size_t p, bool record_order) {
    if (final_[p]) return false;
    if (count_ == 0) overlapped_ = 0;
    final_[p] = true;
    ++count_;
    if (record_order) order_.push_back(p);
    return true;
  }
  // A bucket started from the hook: it overlaps backward unless its gradient was the step's last.
  void bucket_started() {
    if (count_ < final_.size()) ++overlapped_;
  }
  // After backward: marks and hands to fn every parameter backward did not reach, in parameter order.
  template <class Fn>
  void mark_remaining(bool record_order, Fn&& fn) {
    for (size_t p = 0; p < final_.size(); ++p)
      if (!final_[p]) {
        final_[p] = true;
        if (record_order) order_.push_back(p);
        fn(p);
      }
  }
  void clear_overlapped() { overlapped_ = 0; }
  size_t overlapped() const { return overlapped_; }
  // The order recorded, cleared; empty when it was plain reverse parameter order (the layout's default).
  std::vector<size_t> take_order() {
    std::vector<size_t> order;
    order.swap(order_);
    for (size_t i = 0; i < order.size(); ++i)
      if (order[i] != order.size() - 1 - i) return order;
    return {};
  }

 private:
  std::vector<bool> final_;
  size_t count_ = 0, overlapped_ = 0;
  std::vector<size_t> order_;
};

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
  // parameter's .grad holds the sum over the ranks (created, in its grad dtype, where backward
  // gave it none). Then the next step may begin.
  void finish() override;

  size_t bucket_count() const override { return buckets_.size(); }
  // Bucket b's parameters, as indices into the deduplicated parameter list.
  const std::vector<size_t>& bucket(size_t b) const { return buckets_.at(b).params; }
  // Buckets of the last step whose all-reduce started from the hook, while backward still had
  // parameter gradients to finish (the overlap).
  size_t overlapped_buckets() const override { return finals_.overlapped(); }
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
  FinalGradients finals_;
  bool relaid_ = false;
};

}  // namespace coco::dist
