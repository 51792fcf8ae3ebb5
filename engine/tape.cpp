#include "engine/tape.h"

#include <unordered_set>

#include "engine/ops/elementwise.h"

namespace coco {

struct Tape::Node {
  const char* op = "";
  std::vector<std::shared_ptr<AutogradMeta>> inputs;  // null where the input needs no gradient
  std::vector<std::shared_ptr<AutogradMeta>> outputs;
  std::vector<Tensor> materialized_grads;  // zeros for outputs no gradient reached
  BackwardFn backward;
};

namespace {
thread_local Tape* t_current_tape = nullptr;
thread_local bool t_grad_disabled = false;
}  // namespace

Tape::Tape() = default;
Tape::~Tape() = default;

Tape::Recording::Recording(Tape& tape) : previous_(t_current_tape) { t_current_tape = &tape; }
Tape::Recording::~Recording() { t_current_tape = previous_; }

NoGrad::NoGrad() : previous_(t_grad_disabled) { t_grad_disabled = true; }
NoGrad::~NoGrad() { t_grad_disabled = previous_; }

Tape* Tape::current() { return t_grad_disabled ? nullptr : t_current_tape; }

Tape* Tape::recording_for(std::initializer_list<const Tensor*> inputs) {
  Tape* tape = current();
  if (!tape) return nullptr;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return tape;
  return nullptr;
}

void Tape::record(const char* op, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs,
                  BackwardFn backward) {
  if (backward_done_)
    throw std::logic_error(std::string("Tape::record('") + op +
                           "'): this tape already ran backward; call clear() before recording the next step");
  auto node = std::make_unique<Node>();
  node->op = op;
  for (const Tensor& input : inputs)
    node->inputs.push_back(input.defined() && input.requires_grad() ? input.autograd_meta() : nullptr);
  for (const Tensor& output : outputs) {
    Tensor& mutable_output = const_cast<Tensor&>(output);
    mutable_output.set_requires_grad(true);
    const auto& meta = output.autograd_meta();
    meta->is_leaf = false;
    node->outputs.push_back(meta);
  }
  node->backward = std::move(backward);
  nodes_.push_back(std::move(node));
}

void Tape::backward(const Tensor& root, const Tensor& seed) {
  check_defined("Tape::backward", root, "the root tensor");
  if (backward_done_)
    throw std::logic_error(
        "Tape::backward: called twice on the same tape (saved tensors are already released); "
        "clear() the tape and record the step again");
  if (!root.requires_grad())
    throw std::logic_error("Tape::backward: the root tensor of shape " + root.shape().str() +
                           " does not require grad (no recorded op produced it from a tensor requiring grad)");
  const auto& root_meta = root.autograd_meta();
  Tensor root_grad;
  if (seed.defined()) {
    check_same_shape("Tape::backward (seed)", root, seed);
    check_same_device("Tape::backward (seed)", root, seed);
    root_grad = seed.dtype() == root_meta->grad_dtype ? seed.clone() : seed.to(root_meta->grad_dtype);
  } else {
    if (root.numel() != 1)
      throw std::logic_error("Tape::backward: the root has shape " + root.shape().str() +
                             "; a non-scalar root needs an explicit seed gradient");
    root_grad = Tensor::full(root.shape(), 1.0, root_meta->grad_dtype, root.device());
  }
  if (root_meta->grad.defined())
    ops::add_inplace(root_meta->grad, root_grad);
  else
    root_meta->grad = root_grad;

  // With a hook: the leaves whose gradient is final after node i, i.e. whose earliest reader is node i.
  std::vector<std::vector<AutogradMeta*>> final_after;
  if (leaf_grad_hook_) {
    final_after.resize(nodes_.size());
    std::unordered_set<AutogradMeta*> seen;
    for (size_t i = 0; i < nodes_.size(); ++i)
      for (const auto& in : nodes_[i]->inputs)
        if (in && in->is_leaf && seen.insert(in.get()).second) final_after[i].push_back(in.get());
  }

  NoGrad no_grad;
  backward_done_ = true;
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
    Node& node = **it;
    bool any_grad = false;
    for (const auto& out : node.outputs) any_grad |= out->grad.defined();
    bool any_input = false;
    for (const auto& in : node.inputs) any_input |= in != nullptr;
    if (any_grad && any_input) {
      BackwardContext context(node);
      node.backward(context);
    }
    node.backward = nullptr;  // releases the saved tensors now
    node.materialized_grads.clear();
    for (const auto& out : node.outputs)
      if (!out->is_leaf) out->grad = Tensor();
    if (leaf_grad_hook_)
      for (AutogradMeta* leaf : final_after[static_cast<size_t>(nodes_.rend() - it - 1)]) leaf_grad_hook_(*leaf);
  }
}

void Tape::clear() {
  nodes_.clear();
  backward_done_ = false;
}

size_t Tape::size() const { return nodes_.size(); }

std::vector<std::string> Tape::op_names() const {
  std::vector<std::string> names;
  for (const auto& node : nodes_) names.emplace_back(node->op);
  return names;
}

const Tensor& BackwardContext::grad_output(size_t i) {
  if (i >= node_.outputs.size())
    throw std::out_of_range(std::string("BackwardContext::grad_output: op '") + node_.op + "' has " +
                            std::to_string(node_.outputs.size()) + " outputs, asked for #" + std::to_string(i));
  AutogradMeta& meta = *node_.outputs[i];
  if (meta.grad.defined()) return meta.grad;
  if (node_.materialized_grads.size() < node_.outputs.size()) node_.materialized_grads.resize(node_.outputs.size());
  Tensor& zeros = node_.materialized_grads[i];
  if (!zeros.defined()) zeros = Tensor::zeros(meta.shape, meta.grad_dtype, meta.device);
  return zeros;
}

size_t BackwardContext::num_outputs() const { return node_.outputs.size(); }
size_t BackwardContext::num_inputs() const { return node_.inputs.size(); }

bool BackwardContext::needs_grad(size_t i) const { return i < node_.inputs.size() && node_.inputs[i] != nullptr; }

void BackwardContext::accumulate(size_t i, Tensor grad) {
  if (!needs_grad(i)) return;
  AutogradMeta& meta = *node_.inputs[i];
  check_defined(node_.op, grad, "a backward gradient");
  if (grad.shape() != meta.shape)
    throw TensorError(std::string("backward of '") + node_.op + "': gradient of shape " + grad.shape().str() +
                      " for input #" + std::to_string(i) + " of shape " + meta.shape.str());
  if (grad.device() != meta.device)
    throw TensorError(std::string("backward of '") + node_.op + "': gradient on " + device_name(grad.device()) +
                      " for input #" + std::to_string(i) + " on " + device_name(meta.device));
  if (!meta.grad.defined()) {
    if (grad.dtype() != meta.grad_dtype)
      meta.grad = grad.to(meta.grad_dtype);
    else if (grad.exclusively_owned())
      meta.grad = std::move(grad);
    else
      meta.grad = grad.clone();
    return;
  }
  ops::add_inplace(meta.grad, grad);
}

Tensor BackwardContext::grad_buffer(size_t i) {
  if (!needs_grad(i))
    throw std::logic_error(std::string("backward of '") + node_.op + "': grad_buffer(" + std::to_string(i) +
                           ") for an input that needs no gradient");
  AutogradMeta& meta = *node_.inputs[i];
  if (!meta.grad.defined()) meta.grad = Tensor::zeros(meta.shape, meta.grad_dtype, meta.device);
  return meta.grad;
}

}  // namespace coco
