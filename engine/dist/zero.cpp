#include "engine/dist/zero.h"

#include <algorithm>
#include <cmath>
#include <unordered_set>

namespace coco::dist {

ZeroAdamW::ZeroAdamW(Communicator& comm, const std::vector<NamedParameter>& params, optim::AdamWOptions options)
    : comm_(comm) {
  std::unordered_set<const AutogradMeta*> seen;
  for (const NamedParameter& p : params) {
    if (!p.tensor.defined() || p.tensor.dtype() != DType::f32 || p.tensor.device() != comm.device() ||
        !p.tensor.requires_grad())
      throw TensorError("ZeRO-1: parameter '" + p.name + "' must be an f32 tensor that requires grad on " +
                        device_name(comm.device()));
    if (!seen.insert(p.tensor.autograd_meta().get()).second) continue;  // tied
    offsets_.push_back(total_);
    total_ += p.tensor.numel();
    params_.push_back(p);
  }
  const int64_t world = comm.world_size();
  shard_ = (total_ + world - 1) / world;
  padded_ = shard_ * world;
  const Device device = comm.device();
  flat_grad_ = Tensor::zeros({padded_}, DType::f32, device);
  grad_shard_ = Tensor::zeros({shard_}, DType::f32, device);
  norm_buffer_ = Tensor::zeros({1}, DType::f64, device);

  // This rank's shard of the weights, and the pieces of parameters it covers.
  flat_params_ = Tensor::zeros({padded_}, DType::f32, device);
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& t = params_[i].tensor;
    flat_params_.rows(offsets_[i], offsets_[i] + t.numel()).copy_from(t.view({t.numel()}));
  }
  const int64_t begin = shard_begin(), end = begin + shard_;
  master_shard_ = flat_params_.rows(begin, end).clone();
  std::vector<optim::AdamWParam> pieces;
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t a = std::max(begin, offsets_[i]), b = std::min(end, offsets_[i] + params_[i].tensor.numel());
    if (a >= b) continue;
    pieces_.push_back({i, a - offsets_[i], a - begin, b - a});
    Tensor master = master_shard_.rows(a - begin, b - begin);
    master.set_requires_grad(true);
    master.autograd_meta()->grad = grad_shard_.rows(a - begin, b - begin);
    piece_masters_.push_back(master);
    optim::AdamWParam p;
    p.name = params_[i].name + "[" + std::to_string(a - offsets_[i]) + ":" + std::to_string(b - offsets_[i]) + "]";
    p.master = master;
    p.weight_decay = params_[i].weight_decay;
    pieces.push_back(std::move(p));
  }
  if (!pieces.empty()) adamw_ = std::make_unique<optim::AdamW>(std::move(pieces), options);
}

void ZeroAdamW::flatten_gradients() {
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& t = params_[i].tensor;
    Tensor slot = flat_grad_.rows(offsets_[i], offsets_[i] + t.numel());
    const Tensor grad = t.grad();
    if (!grad.defined()) {
      slot.zero_();
      continue;
    }
    const Tensor flat = grad.view({grad.numel()});
    slot.copy_from(flat.dtype() == DType::f32 ? flat : flat.to(DType::f32));
  }
}

ZeroAdamW::StepResult ZeroAdamW::step(double lr, double max_norm, double grad_scale) {
  const double norm = reduce_gradients(grad_scale);
  const double factor = max_norm > 0 ? std::min(1.0, max_norm / (norm + 1e-6)) : 1.0;
  apply(lr, grad_scale * factor);
  return {norm, factor};
}

double ZeroAdamW::reduce_gradients(double grad_scale) {
  flatten_gradients();
  comm_.reduce_scatter(flat_grad_, grad_shard_, ReduceOp::average);
  comm_.wait();
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
  comm_.all_gather(master_shard_, flat_params_);
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
  comm_.all_gather(shard_values, flat);
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
  // Every piece advances together; rank 0 always holds one (its shard starts the flat vector).
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
