#include "engine/dist/grad_sync.h"

#include <algorithm>

namespace coco::dist {

GradSync::GradSync(Communicator& comm, const std::vector<Tensor>& params, GradSyncOptions options)
    : comm_(comm), options_(options) {
  if (options_.reduce_dtype != DType::f32 && options_.reduce_dtype != DType::bf16)
    throw DistConfigError(std::string("gradient sync: reduce dtype ") + dtype_name(options_.reduce_dtype) +
                          "; expected f32 or bf16");
  if (options_.bucket_bytes == 0) throw DistConfigError("gradient sync: bucket size 0 bytes");
  for (const Tensor& p : params) {
    if (!p.defined() || !p.requires_grad())
      throw CommError("gradient sync: parameter '" + (p.defined() ? p.name() : std::string("?")) +
                      "' does not require grad");
    if (p.device() != comm_.device())
      throw CommError("gradient sync: parameter '" + p.name() + "' is on " + device_name(p.device()) +
                      ", the communicator on " + device_name(comm_.device()));
    const AutogradMeta* meta = p.autograd_meta().get();
    if (index_of_.count(meta)) continue;  // tied: the same tensor again
    index_of_[meta] = params_.size();
    params_.push_back(p);
  }
  std::vector<size_t> reverse(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) reverse[i] = params_.size() - 1 - i;
  layout(reverse);
}

void GradSync::layout(const std::vector<size_t>& order) {
  buckets_.clear();
  bucket_of_.assign(params_.size(), 0);
  slot_of_.assign(params_.size(), 0);
  const size_t element = dtype_size(options_.reduce_dtype);
  size_t bytes = 0;
  for (size_t p : order) {
    const size_t size = static_cast<size_t>(params_[p].numel()) * element;
    if (buckets_.empty() || (bytes > 0 && bytes + size > options_.bucket_bytes)) {
      buckets_.emplace_back();
      bytes = 0;
    }
    Bucket& b = buckets_.back();
    bucket_of_[p] = buckets_.size() - 1;
    slot_of_[p] = b.params.size();
    b.offsets.push_back(b.params.empty() ? 0 : b.offsets.back() + params_[b.params.back()].numel());
    b.params.push_back(p);
    bytes += size;
  }
  for (Bucket& b : buckets_) {
    const int64_t total = b.offsets.back() + params_[b.params.back()].numel();
    b.buffer = Tensor::zeros({total}, options_.reduce_dtype, comm_.device());
    b.pending = b.params.size();
  }
  finals_.reset(params_.size());
}

void GradSync::attach(Tape& tape) {
  tape.set_leaf_grad_hook([this](AutogradMeta& leaf) { on_final(leaf); });
}
void GradSync::detach(Tape& tape) { tape.set_leaf_grad_hook(nullptr); }

void GradSync::on_final(AutogradMeta& leaf) {
  const auto it = index_of_.find(&leaf);
  if (it == index_of_.end()) return;  // not a parameter (an input requiring grad)
  const size_t p = it->second;
  if (!finals_.mark(p, !relaid_)) return;
  stage(p);
  Bucket& b = buckets_[bucket_of_[p]];
  if (--b.pending == 0) {
    finals_.bucket_started();
    start(b);
  }
}

void GradSync::stage(size_t p) {
  const Bucket& b = buckets_[bucket_of_[p]];
  const int64_t offset = b.offsets[slot_of_[p]];
  Tensor slot = b.buffer.rows(offset, offset + params_[p].numel());
  const Tensor grad = params_[p].grad();
  if (!grad.defined()) {
    slot.zero_();
    return;
  }
  const Tensor flat = grad.view({grad.numel()});
  slot.copy_from(flat.dtype() == options_.reduce_dtype ? flat : flat.to(options_.reduce_dtype));
}

void GradSync::start(Bucket& b) {
  b.started = true;
  comm_.all_reduce(b.buffer, ReduceOp::sum);
}

void GradSync::finish() {
  // Parameters backward did not reach: zeros, and their buckets start now, in bucket order (the
  // same on every rank).
  finals_.mark_remaining(!relaid_, [this](size_t p) {
    stage(p);
    --buckets_[bucket_of_[p]].pending;
  });
  for (Bucket& b : buckets_)
    if (!b.started) start(b);
  comm_.wait();
  for (Bucket& b : buckets_)
    for (size_t slot = 0; slot < b.params.size(); ++slot) {
      Tensor& param = params_[b.params[slot]];
      Tensor grad = param.grad();
      if (!grad.defined()) {
        param.autograd_meta()->grad = Tensor::zeros(param.shape(), param.grad_dtype(), param.device());
        grad = param.grad();
      }
      const Tensor reduced = b.buffer.rows(b.offsets[slot], b.offsets[slot] + param.numel()).view(grad.shape());
      grad.copy_from(reduced.dtype() == grad.dtype() ? reduced : reduced.to(grad.dtype()));
    }
  for (Bucket& b : buckets_) {
    b.pending = b.params.size();
    b.started = false;
  }
  finals_.reset(params_.size());
  if (!relaid_) {
    relaid_ = true;
    const std::vector<size_t> order = finals_.take_order();
    if (!order.empty()) layout(order);
  }
}

}  // namespace coco::dist
