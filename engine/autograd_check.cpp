#include "engine/autograd_check.h"

#include <span>
#include <string>

#include "engine/tape.h"

namespace coco {

GradcheckReport gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& fn,
                          const std::vector<Tensor>& inputs, const GradcheckOptions& options, unsigned weight_seed) {
  for (size_t i = 0; i < inputs.size(); ++i) {
    check_defined("gradcheck", inputs[i], "an input");
    if (inputs[i].dtype() != DType::f64 || inputs[i].device() != Device::cpu)
      throw TensorError("gradcheck: input #" + std::to_string(i) + " must be an f64 cpu tensor, got " +
                        dtype_name(inputs[i].dtype()) + " on " + device_name(inputs[i].device()));
  }
  for (const Tensor& input : inputs) const_cast<Tensor&>(input).clear_grad();

  Tape tape;
  Tensor output;
  {
    Tape::Recording recording(tape);
    output = fn(inputs);
  }
  check_defined("gradcheck", output, "the function's output");
  if (output.dtype() != DType::f64 || output.device() != Device::cpu)
    throw TensorError("gradcheck: the function must return an f64 cpu tensor");
  const std::vector<double> weights = gradcheck_weights(static_cast<size_t>(output.numel()), weight_seed);
  if (!output.requires_grad()) throw TensorError("gradcheck: the output does not depend on any input requiring grad");
  tape.backward(output, Tensor::from_vector(weights, output.shape()));

  std::vector<std::vector<double>> analytic(inputs.size());
  std::vector<GradcheckInput> checked;
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].requires_grad()) continue;
    Tensor g = inputs[i].grad();
    analytic[i] = g.defined() ? g.to_f64() : std::vector<double>(static_cast<size_t>(inputs[i].numel()), 0.0);
    std::span<double> values(static_cast<double*>(inputs[i].data()), static_cast<size_t>(inputs[i].numel()));
    // Appended rather than `"#" + std::to_string(i)`, which trips GCC 12's -Wrestrict false positive.
    std::string name = inputs[i].name();
    if (name.empty()) name.append("#").append(std::to_string(i));
    checked.push_back({name, values, analytic[i]});
  }
  auto loss = [&] {
    NoGrad no_grad;
    const std::vector<double> y = fn(inputs).to_f64();
    double total = 0.0;
    for (size_t k = 0; k < y.size(); ++k) total += y[k] * weights[k];
    return total;
  };
  return gradcheck_raw(checked, loss, options);
}

}  // namespace coco
