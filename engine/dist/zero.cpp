#include "engine/dist/zero.h"

#include <algorithm>
#include <cmath>

namespace coco::dist {

ZeroAdamW::ZeroAdamW(Communicator& comm, const std::vector<NamedParameter>& params, optim::AdamWOptions options,
                     size_t bucket_bytes)
    : comm_(comm), options_(options), bucket_bytes_(bucket_bytes) {
  if (bucket_bytes_ == 0) throw DistConfigError("ZeRO-1: bucket size 0 bytes");
  for (const NamedParameter& p : params) {
    if (!p.tensor.defined() || p.tensor.dtype() != DType::f32 || p.tensor.device() != comm.device() ||
        !p.tensor.requires_grad())
      throw TensorError("ZeRO-1: parameter '" + p.name + "' must be an f32 tensor that requires grad on " +
                        device_name(comm.device()));
    const AutogradMeta* meta = p.tensor.autograd_meta().get();
    if (index_of_.count(meta)) continue;  // tied
    index_of_[meta] = params_.size();
    total_ += p.tensor.numel();
    params_.push_back(p);
  }
  norm_buffer_ = Tensor::zeros({1}, DType::f64, comm.device());
  std::vector<size_t> reverse(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) reverse[i] = params_.size() - 1 - i;
  layout(reverse);
}

void ZeroAdamW::layout(const std::vector<size_t>& order) {
  const int64_t world = comm_.world_size(), me = comm_.rank();
  buckets_.clear();
  bucket_of_.assign(params_.size(), 0);
  offsets_.assign(params_.size(), 0);
  // Buckets in `order`, each padded to W equal slices.
  int64_t flat = 0, bytes = 0, in_bucket = 0;
  for (size_t p : order) {
    const int64_t n = params_[p].tensor.numel();
    if (buckets_.empty() || (bytes > 0 && static_cast<size_t>(bytes + n * 4) > bucket_bytes_)) {
      if (!buckets_.empty()) flat += buckets_.back().slice * world;
      buckets_.emplace_back();
      buckets_.back().flat_begin = flat;
      bytes = in_bucket = 0;
    }
    Bucket& b = buckets_.back();
    bucket_of_[p] = buckets_.size() - 1;
    offsets_[p] = b.flat_begin + in_bucket;
    b.params.push_back(p);
    in_bucket += n;
    bytes += n * 4;
    b.slice = (in_bucket + world - 1) / world;
  }
  shard_ = 0;
  for (Bucket& b : buckets_) {
    b.shard_begin = shard_;
    shard_ += b.slice;
    b.pending = b.params.size();
    b.started = false;
  }
  padded_ = buckets_.empty() ? 0 : buckets_.back().flat_begin + buckets_.back().slice * world;

  const Device device = comm_.device();
  flat_grad_ = Tensor::zeros({padded_}, DType::f32, device);  // the padding stays zero
  grad_shard_ = Tensor::zeros({shard_}, DType::f32, device);
  flat_params_ = Tensor::zeros({padded_}, DType::f32, device);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& t = params_[i].tensor;
    flat_params_.rows(offsets_[i], offsets_[i] + t.numel()).copy_from(t.view({t.numel()}));
  }
  master_shard_ = Tensor::zeros({shard_}, DType::f32, device);
  pieces_.clear();
  std::vector<optim::AdamWParam> pieces;
  for (const Bucket& b : buckets_) {
    const int64_t begin = b.flat_begin + me * b.slice, end = begin + b.slice;  // this rank's slice
    shard_range(master_shard_, b).copy_from(flat_params_.rows(begin, end));
    for (size_t i : b.params) {
      const int64_t a = std::max(begin, offsets_[i]), z = std::min(end, offsets_[i] + params_[i].tensor.numel());
      if (a >= z) continue;
      const int64_t at = b.shard_begin + (a - begin);
      pieces_.push_back({i, a - offsets_[i], at, z - a});
      Tensor master = master_shard_.rows(at, at + (z - a));
      master.set_requires_grad(true);
      master.autograd_meta()->grad = grad_shard_.rows(at, at + (z - a));
      optim::AdamWParam piece;
      piece.name =
          params_[i].name + "[" + std::to_string(a - offsets_[i]) + ":" + std::to_string(z - offsets_[i]) + "]";
      piece.master = master;
      piece.weight_decay = params_[i].weight_decay;
      pieces.push_back(std::move(piece));
    }
  }
  adamw_ = pieces.empty() ? nullptr : std::make_unique<optim::AdamW>(std::move(pieces), options_);
  finals_.reset(params_.size());
}

Tensor ZeroAdamW::bucket_range(const Tensor& flat, const Bucket& b) const {
  return flat.rows(b.flat_begin, b.flat_begin + b.slice * comm_.world_size());
}
Tensor ZeroAdamW::shard_range(const Tensor& shard, const Bucket& b) const {
  return shard.rows(b.shard_begin, b.shard_begin + b.slice);
}

void ZeroAdamW::attach(Tape& tape) {
  if (!relayout_order_.empty()) {
    // The state moves to the new layout through its whole-model form (once per run, a collective).
    const std::vector<ParamState> state = gathered_state();
    layout(relayout_order_);
    load_state(state);
    relayout_order_.clear();
  }
  attached_ = true;
  tape.set_leaf_grad_hook([this](AutogradMeta& leaf) { on_final(leaf); });
}

void ZeroAdamW::detach(Tape& tape) { tape.set_leaf_grad_hook(nullptr); }

void ZeroAdamW::on_final(AutogradMeta& leaf) {
  const auto it = index_of_.find(&leaf);
  if (it == index_of_.end()) return;  // not a parameter (an input requiring grad)
  const size_t p = it->second;
  if (!finals_.mark(p, !order_learned_)) return;
  stage(p);
  Bucket& b = buckets_[bucket_of_[p]];
  if (--b.pending == 0) {
    finals_.bucket_started();
    start(b);
  }
}

void ZeroAdamW::stage(size_t p) {
  const Tensor& t = params_[p].tensor;
  Tensor slot = flat_grad_.rows(offsets_[p], offsets_[p] + t.numel());
  const Tensor grad = t.grad();
  if (!grad.defined()) {
    slot.zero_();
    return;
  }
  const Tensor flat = grad.view({grad.numel()});
  slot.copy_from(flat.dtype() == DType::f32 ? flat : flat.to(DType::f32));
}

void ZeroAdamW::start(Bucket& b) {
  b.started = true;
  comm_.reduce_scatter(bucket_range(flat_grad_, b), shard_range(grad_shard_, b), ReduceOp::average);
}

void ZeroAdamW::finish() {
  if (!attached_) finals_.clear_overlapped();
  // Parameters backward did not reach (or all of them, without the hook): their gradients (zeros where
  // none) are staged now, and the buckets not started yet start in bucket order (the same on every rank).
  finals_.mark_remaining(attached_ && !order_learned_, [this](size_t p) {
    stage(p);
    --buckets_[bucket_of_[p]].pending;
  });
  for (Bucket& b : buckets_)
    if (!b.started) start(b);
  comm_.wait();
  for (Bucket& b : buckets_) {
    b.pending = b.params.size();
    b.started = false;
  }
  finals_.reset(params_.size());
  reduced_ = true;
  if (attached_ && !order_learned_) {
    order_learned_ = true;
    relayout_order_ = finals_.take_order();  // empty: the layout already follows the order
  }
  attached_ = false;
}

ZeroAdamW::StepResult ZeroAdamW::step(double lr, double max_norm, double grad_scale) {
  const double norm = reduce_gradients(grad_scale);
  const double factor = max_norm > 0 ? std::min(1.0, max_norm / (norm + 1e-6)) : 1.0;
  apply(lr, grad_scale * factor);
  return {norm, factor};
}

double ZeroAdamW::reduce_gradients(double grad_scale) {
  if (!reduced_) finish();
  reduced_ = false;
  // The global norm: the shards' squared norms summed over the ranks (a non-finite shard makes it non-finite
  // on every rank).
  const double shard_norm = optim::grad_norm({grad_shard_}, grad_scale);
  norm_buffer_.fill_(shard_norm * shard_norm);
  comm_.all_reduce(norm_buffer_, ReduceOp::sum);
  comm_.synchronize();
  return std::sqrt(norm_buffer_.item());
}

void ZeroAdamW::apply(double lr, double grad_scale) {
  if (adamw_) adamw_->step(lr, grad_scale);
  for (const Bucket& b : buckets_) comm_.all_gather(shard_range(master_shard_, b), bucket_range(flat_params_, b));
  comm_.wait();
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& t = params_[i].tensor;
    t.copy_from(flat_params_.rows(offsets_[i], offsets_[i] + t.numel()).view(t.shape()));
  }
}

void ZeroAdamW::zero_grad() {
  for (NamedParameter& p : params_) p.tensor.zero_grad();
}

Tensor ZeroAdamW::gather_flat(const Tensor& shard_values) {
  Tensor flat = Tensor::zeros({padded_}, DType::f32, comm_.device());
  for (const Bucket& b : buckets_) comm_.all_gather(shard_range(shard_values, b), bucket_range(flat, b));
  comm_.wait();
  return flat;
}

std::vector<ZeroAdamW::ParamState> ZeroAdamW::gathered_state() {
  Tensor avg_shard = Tensor::zeros({shard_}, DType::f32, comm_.device());
  Tensor sq_shard = Tensor::zeros({shard_}, DType::f32, comm_.device());
  int64_t step = 0;
  for (size_t k = 0; k < pieces_.size(); ++k) {
    const Piece& piece = pieces_[k];
    avg_shard.rows(piece.shard_offset, piece.shard_offset + piece.size).copy_from(adamw_->exp_avg(k));
    sq_shard.rows(piece.shard_offset, piece.shard_offset + piece.size).copy_from(adamw_->exp_avg_sq(k));
    step = adamw_->step_count(k);
  }
  // Every piece advances together; rank 0 always holds one (its slice starts every bucket).
  Tensor steps = Tensor::full({1}, static_cast<double>(step), DType::f64, comm_.device());
  comm_.broadcast(steps, 0);
  const Tensor avg = gather_flat(avg_shard), sq = gather_flat(sq_shard);
  comm_.synchronize();
  std::vector<ParamState> out(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& t = params_[i].tensor;
    out[i].step = static_cast<int64_t>(steps.item());
    out[i].exp_avg = avg.rows(offsets_[i], offsets_[i] + t.numel()).view(t.shape()).clone();
    out[i].exp_avg_sq = sq.rows(offsets_[i], offsets_[i] + t.numel()).view(t.shape()).clone();
  }
  return out;
}

void ZeroAdamW::load_state(const std::vector<ParamState>& state) {
  if (state.size() != params_.size())
    throw TensorError("ZeRO-1: optimizer state for " + std::to_string(state.size()) + " parameters, the model has " +
                      std::to_string(params_.size()));
  for (size_t i = 0; i < params_.size(); ++i)
    if (state[i].exp_avg.shape() != params_[i].tensor.shape() ||
        state[i].exp_avg_sq.shape() != params_[i].tensor.shape())
      throw TensorError("ZeRO-1: optimizer state of '" + params_[i].name + "' has shape " +
                        state[i].exp_avg.shape().str() + ", the parameter " + params_[i].tensor.shape().str());
  for (size_t k = 0; k < pieces_.size(); ++k) {
    const Piece& piece = pieces_[k];
    const ParamState& s = state[piece.param];
    const auto slice = [&](const Tensor& whole) {
      const Tensor flat = whole.view({whole.numel()});
      return flat.rows(piece.param_offset, piece.param_offset + piece.size);
    };
    adamw_->set_state(k, s.step, slice(s.exp_avg), slice(s.exp_avg_sq));
  }
}

}  // namespace coco::dist
