#include "engine/dist/zero.h"

#include <algorithm>
#include <cmath>

namespace coco::dist {

ZeroAdamW::ZeroAdamW(Communicator& comm, const std::vector<NamedParameter>& params, optim::AdamWOptions options,
                     size_t bucket_bytes)
    : comm_(comm), options_(options), bucket_bytes_(bucket_bytes) {
  for (const NamedParameter& p : params)
    if (p.tensor.defined() && p.tensor.dtype() != DType::f32)
      throw TensorError("ZeRO-1: parameter '" + p.name + "' is " + dtype_name(p.tensor.dtype()) +
                        ": 16-bit working copies need their f32 masters (the constructor with masters)");
  init(params, nullptr);
}

ZeroAdamW::ZeroAdamW(Communicator& comm, const std::vector<NamedParameter>& params, const std::vector<Tensor>& masters,
                     optim::AdamWOptions options, ZeroOptions zero_options)
    : comm_(comm),
      options_(options),
      bucket_bytes_(zero_options.bucket_bytes),
      reduce_dtype_(zero_options.reduce_dtype) {
  if (reduce_dtype_ != DType::f32 && reduce_dtype_ != DType::bf16)
    throw DistConfigError(std::string("ZeRO-1: reduce dtype ") + dtype_name(reduce_dtype_) + "; expected f32 or bf16");
  if (masters.size() != params.size())
    throw TensorError("ZeRO-1: " + std::to_string(masters.size()) + " masters for " + std::to_string(params.size()) +
                      " parameters");
  init(params, &masters);
}

void ZeroAdamW::init(const std::vector<NamedParameter>& params, const std::vector<Tensor>* masters) {
  if (bucket_bytes_ == 0) throw DistConfigError("ZeRO-1: bucket size 0 bytes");
  if (!params.empty() && params.front().tensor.defined()) working_dtype_ = params.front().tensor.dtype();
  if (working_dtype_ != DType::f32 && working_dtype_ != DType::bf16 && working_dtype_ != DType::f16)
    throw TensorError(std::string("ZeRO-1: parameters must be f32, bf16 or f16, got ") + dtype_name(working_dtype_));
  std::vector<Tensor> master_of;  // per parameter (tied repeats dropped)
  for (size_t k = 0; k < params.size(); ++k) {
    const NamedParameter& p = params[k];
    if (!p.tensor.defined() || p.tensor.dtype() != working_dtype_ || p.tensor.device() != comm_.device() ||
        !p.tensor.requires_grad())
      throw TensorError("ZeRO-1: parameter '" + p.name + "' must be a " + dtype_name(working_dtype_) +
                        " tensor (the dtype of the first) that requires grad on " + device_name(comm_.device()));
    const AutogradMeta* meta = p.tensor.autograd_meta().get();
    if (index_of_.count(meta)) continue;  // tied
    if (masters) {
      const Tensor& m = (*masters)[k];
      if (!m.defined() || m.dtype() != DType::f32 || m.shape() != p.tensor.shape())
        throw TensorError("ZeRO-1: the master of '" + p.name + "' must be an f32 tensor of shape " +
                          p.tensor.shape().str() + ", got " +
                          (m.defined() ? std::string(dtype_name(m.dtype())) + " " + m.shape().str() : "none"));
      master_of.push_back(m);
    }
    index_of_[meta] = params_.size();
    total_ += p.tensor.numel();
    params_.push_back(p);
  }
  stats_buffer_ = Tensor::zeros({2}, DType::f64, comm_.device());
  std::vector<size_t> reverse(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) reverse[i] = params_.size() - 1 - i;
  layout(reverse);
  load_masters([&](size_t i) { return masters ? master_of[i] : params_[i].tensor; });
}

void ZeroAdamW::layout(const std::vector<size_t>& order) {
  const int64_t world = comm_.world_size(), me = comm_.rank();
  const int64_t element = static_cast<int64_t>(dtype_size(reduce_dtype_));
  buckets_.clear();
  bucket_of_.assign(params_.size(), 0);
  offsets_.assign(params_.size(), 0);
  // Buckets in `order`, each padded to W equal slices.
  int64_t flat = 0, bytes = 0, in_bucket = 0;
  for (size_t p : order) {
    const int64_t n = params_[p].tensor.numel();
    if (buckets_.empty() || (bytes > 0 && static_cast<size_t>(bytes + n * element) > bucket_bytes_)) {
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
    bytes += n * element;
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
  flat_grad_ = Tensor::zeros({padded_}, reduce_dtype_, device);  // the padding stays zero
  grad_shard_ = Tensor::zeros({shard_}, reduce_dtype_, device);
  flat_params_ = Tensor::zeros({padded_}, working_dtype_, device);
  master_shard_ = Tensor::zeros({shard_}, DType::f32, device);
  working_shard_ = working_dtype_ == DType::f32 ? master_shard_ : Tensor::zeros({shard_}, working_dtype_, device);
  pieces_.clear();
  std::vector<optim::AdamWParam> pieces;
  for (const Bucket& b : buckets_) {
    const int64_t begin = b.flat_begin + me * b.slice, end = begin + b.slice;  // this rank's slice
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
      piece.grad_source = master;  // the gradient shard hangs on the master piece
      // bf16 working copies are rounded from the updated masters by the AdamW kernel itself.
      if (working_dtype_ == DType::bf16) piece.working = working_shard_.rows(at, at + (z - a));
      piece.weight_decay = params_[i].weight_decay;
      pieces.push_back(std::move(piece));
    }
  }
  adamw_ = pieces.empty() ? nullptr : std::make_unique<optim::AdamW>(std::move(pieces), options_);
  finals_.reset(params_.size());
}

void ZeroAdamW::load_masters(const std::function<Tensor(size_t)>& whole) {
  for (const Piece& piece : pieces_) {
    const Tensor value = whole(piece.param);
    const Tensor flat = value.view({value.numel()}).rows(piece.param_offset, piece.param_offset + piece.size);
    master_shard_.rows(piece.shard_offset, piece.shard_offset + piece.size)
        .copy_from(flat.dtype() == DType::f32 ? flat : flat.to(DType::f32));
  }
}

void ZeroAdamW::publish() {
  // f16 working copies: the updated masters converted, as the single-process trainer's
  // refresh_working_copies does (bf16: the AdamW kernel wrote them).
  if (working_dtype_ == DType::f16) working_shard_.copy_from(master_shard_.to(working_dtype_));
  for (const Bucket& b : buckets_) comm_.all_gather(shard_range(working_shard_, b), bucket_range(flat_params_, b));
  comm_.wait();
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& t = params_[i].tensor;
    t.copy_from(flat_params_.rows(offsets_[i], offsets_[i] + t.numel()).view(t.shape()));
  }
}

Tensor ZeroAdamW::bucket_range(const Tensor& flat, const Bucket& b) const {
  return flat.rows(b.flat_begin, b.flat_begin + b.slice * comm_.world_size());
}
Tensor ZeroAdamW::shard_range(const Tensor& shard, const Bucket& b) const {
  return shard.rows(b.shard_begin, b.shard_begin + b.slice);
}

void ZeroAdamW::relayout_if_learned() {
  if (relayout_order_.empty()) return;
  // The state moves to the new layout through its whole-model form (once per run, a collective).
  const std::vector<ParamState> state = gathered_state();
  layout(relayout_order_);
  load_state(state);
  // Under a StepControl the counts gathered are not current (they live on the device until synced): the
  // new shard's AdamW goes on counting there.
  if (controlled_ && adamw_) adamw_->adopt_control_counts();
  relayout_order_.clear();
}

void ZeroAdamW::attach(Tape& tape) {
  relayout_if_learned();  // a first step that only reduced its gradients (skipped), or apply() not called
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
  slot.copy_from(flat.dtype() == reduce_dtype_ ? flat : flat.to(reduce_dtype_));
}

void ZeroAdamW::start(Bucket& b) {
  b.started = true;
  comm_.reduce_scatter(bucket_range(flat_grad_, b), shard_range(grad_shard_, b), ReduceOp::sum);
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
  const double norm = reduce_gradients(grad_scale).norm;
  const double factor = max_norm > 0 ? std::min(1.0, max_norm / (norm + 1e-6)) : 1.0;
  apply(lr, grad_scale * factor);
  return {norm, factor};
}

optim::GradientStats ZeroAdamW::reduce_gradients(double grad_scale) {
  if (!reduced_) finish();
  reduced_ = false;
  // The shards' squared norms and non-finite flags summed over the ranks: one all-reduce, the same result
  // on every rank (so every rank skips, clips and updates its loss scaler alike).
  const optim::GradientStats shard = optim::gradient_stats({grad_shard_});
  stats_buffer_.rows(0, 1).fill_(shard.norm * shard.norm);
  stats_buffer_.rows(1, 2).fill_(shard.nonfinite ? 1.0 : 0.0);
  comm_.all_reduce(stats_buffer_, ReduceOp::sum);
  comm_.synchronize();
  const std::vector<double> global = stats_buffer_.to_vector<double>();
  const double norm = std::sqrt(global[0]) * std::fabs(grad_scale);
  return {norm, global[1] > 0 || !std::isfinite(norm)};
}

void ZeroAdamW::apply(const optim::StepControl& control) {
  reduced_ = false;  // finish() reduced this step's gradients, and the decision used them
  if (adamw_) adamw_->step(control);
  controlled_ = true;
  publish();
  relayout_if_learned();
}

void ZeroAdamW::sync_step_counts(int64_t applied) {
  if (adamw_) adamw_->sync_step_counts(applied);
}

void ZeroAdamW::apply(double lr, double grad_scale) {
  if (adamw_) adamw_->step(lr, grad_scale);
  publish();
  relayout_if_learned();
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
  const Tensor avg = gather_flat(avg_shard), sq = gather_flat(sq_shard), masters = gather_flat(master_shard_);
  comm_.synchronize();
  std::vector<ParamState> out(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& t = params_[i].tensor;
    out[i].step = static_cast<int64_t>(steps.item());
    out[i].exp_avg = avg.rows(offsets_[i], offsets_[i] + t.numel()).view(t.shape()).clone();
    out[i].exp_avg_sq = sq.rows(offsets_[i], offsets_[i] + t.numel()).view(t.shape()).clone();
    out[i].master = masters.rows(offsets_[i], offsets_[i] + t.numel()).view(t.shape()).clone();
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
  const bool masters = std::any_of(state.begin(), state.end(), [](const ParamState& s) { return s.master.defined(); });
  if (masters)
    for (size_t i = 0; i < params_.size(); ++i)
      if (!state[i].master.defined() || state[i].master.shape() != params_[i].tensor.shape())
        throw TensorError("ZeRO-1: the master of '" + params_[i].name + "' in the state does not match the parameter " +
                          params_[i].tensor.shape().str());
  for (size_t i = 0; i < params_.size(); ++i) load_param_state(i, state[i].step, state[i].exp_avg, state[i].exp_avg_sq);
  if (masters) load_masters([&](size_t i) { return state[i].master; });
}

void ZeroAdamW::load_param_state(size_t param, int64_t step, const Tensor& exp_avg, const Tensor& exp_avg_sq) {
  if (param >= params_.size())
    throw TensorError("ZeRO-1: optimizer state for parameter " + std::to_string(param) + ", the model has " +
                      std::to_string(params_.size()));
  const Tensor& t = params_[param].tensor;
  if (!exp_avg.defined() || !exp_avg_sq.defined() || exp_avg.shape() != t.shape() || exp_avg_sq.shape() != t.shape())
    throw TensorError("ZeRO-1: optimizer state of '" + params_[param].name + "' has shape " +
                      (exp_avg.defined() ? exp_avg.shape().str() : std::string("(none)")) + ", the parameter " +
                      t.shape().str());
  for (size_t k = 0; k < pieces_.size(); ++k) {
    const Piece& piece = pieces_[k];
    if (piece.param != param) continue;
    const auto slice = [&](const Tensor& whole) {
      const Tensor flat = whole.view({whole.numel()});
      return flat.rows(piece.param_offset, piece.param_offset + piece.size);
    };
    adamw_->set_state(k, step, slice(exp_avg), slice(exp_avg_sq));
  }
}

}  // namespace coco::dist
