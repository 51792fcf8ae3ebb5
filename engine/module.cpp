#include "engine/module.h"

#include <algorithm>
#include <stdexcept>

namespace coco {

namespace {
void check_name(const std::string& name, const char* what) {
  if (name.empty() || name.find('.') != std::string::npos)
    throw std::invalid_argument(std::string("Module: ") + what + " name '" + name +
                                "' must be non-empty and contain no '.'");
}
}  // namespace

Tensor& Module::register_parameter(const std::string& name, Tensor tensor, bool weight_decay) {
  check_name(name, "parameter");
  check_defined("Module::register_parameter", tensor, name.c_str());
  for (const auto& p : parameters_)
    if (p.name == name) throw std::invalid_argument("Module: parameter '" + name + "' registered twice");
  for (const auto& c : children_)
    if (c.first == name) throw std::invalid_argument("Module: parameter '" + name + "' clashes with a submodule");
  tensor.set_requires_grad(true);
  if (tensor.name().empty()) tensor.set_name(name);
  parameters_.push_back({name, std::move(tensor), weight_decay});
  return parameters_.back().tensor;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_name(name, "submodule");
  if (!module) throw std::invalid_argument("Module: submodule '" + name + "' is null");
  for (const auto& c : children_)
    if (c.first == name) throw std::invalid_argument("Module: submodule '" + name + "' registered twice");
  for (const auto& p : parameters_)
    if (p.name == name) throw std::invalid_argument("Module: submodule '" + name + "' clashes with a parameter");
  children_.emplace_back(name, std::move(module));
}

void Module::collect(const std::string& prefix, std::vector<NamedParameter>& out,
                     std::vector<const void*>& seen) const {
  for (const auto& p : parameters_) {
    const void* id = p.tensor.storage().get();
    if (std::find(seen.begin(), seen.end(), id) != seen.end()) continue;
    seen.push_back(id);
    out.push_back({prefix + p.name, p.tensor, p.weight_decay});
  }
  for (const auto& [name, child] : children_) child->collect(prefix + name + ".", out, seen);
}

std::vector<NamedParameter> Module::named_parameters(const std::string& prefix) const {
  std::vector<NamedParameter> out;
  std::vector<const void*> seen;
  collect(prefix.empty() ? "" : prefix + ".", out, seen);
  return out;
}

Tensor Module::parameter(const std::string& dotted_name) const {
  const auto all = named_parameters();
  for (const auto& p : all)
    if (p.name == dotted_name) return p.tensor;
  // Tied parameters are listed once; look them up through the tree as well.
  const Module* module = this;
  std::string rest = dotted_name;
  while (true) {
    const size_t dot = rest.find('.');
    if (dot == std::string::npos) {
      for (const auto& p : module->parameters_)
        if (p.name == rest) return p.tensor;
      break;
    }
    const std::string head = rest.substr(0, dot);
    const Module* next = nullptr;
    for (const auto& [name, child] : module->children_)
      if (name == head) next = child.get();
    if (!next) break;
    module = next;
    rest = rest.substr(dot + 1);
  }
  std::string hint;
  for (const auto& p : all)
    if (p.name.find(dotted_name.substr(0, dotted_name.rfind('.') + 1)) == 0 && hint.size() < 200)
      hint += (hint.empty() ? "" : ", ") + p.name;
  throw std::out_of_range("Module: no parameter named '" + dotted_name + "'" +
                          (hint.empty() ? "" : " (near: " + hint + ")"));
}

size_t Module::parameter_count() const {
  size_t total = 0;
  for (const auto& p : named_parameters()) total += static_cast<size_t>(p.tensor.numel());
  return total;
}

void Module::train(bool training) {
  training_ = training;
  for (auto& [name, child] : children_) child->train(training);
}

}  // namespace coco
