// Parameter registry: a tree of modules whose parameters are addressed by dotted names
// ("discriminator.layers.3.attn.q.weight"). Checkpoints, weight-decay masks and the Hugging Face
// name mapping all walk this tree.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace coco {

struct NamedParameter {
  std::string name;
  Tensor tensor;
  bool weight_decay = true;  // false for biases, LayerNorm parameters, ...
};

class Module {
 public:
  virtual ~Module() = default;

  // Registers a trainable leaf: it requires grad and is updated by the optimizer. Returns the tensor.
  Tensor& register_parameter(const std::string& name, Tensor tensor, bool weight_decay = true);
  // Registers a child; its parameters appear under "<name>.".
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

  // Depth-first in registration order. A tensor registered in several places (tied weights) is
  // listed once, under the first name reached.
  std::vector<NamedParameter> named_parameters(const std::string& prefix = "") const;
  // Throws std::out_of_range naming the missing parameter and the closest existing names.
  Tensor parameter(const std::string& dotted_name) const;
  size_t parameter_count() const;  // total elements of the unique parameters

  void train(bool training = true);
  bool training() const { return training_; }

 private:
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void collect(const std::string& prefix, std::vector<NamedParameter>& out, std::vector<const void*>& seen) const;

  std::vector<NamedParameter> parameters_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace coco
