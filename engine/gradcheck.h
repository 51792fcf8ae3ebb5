// Finite-difference gradient checking in f64.
//
// gradcheck_raw() is the core: it perturbs every element of every input by +-eps, evaluates the
// scalar loss, and compares the central difference (L(x+eps) - L(x-eps)) / 2eps with the analytic
// gradient. An element passes when |fd - analytic| <= atol + rtol * max(|fd|, |analytic|).
// Kernel tests use it directly on plain arrays; tensor ops use the tape-level gradcheck() in
// engine/autograd_check.h, which is built on it.
#pragma once
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace coco {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
};

struct GradcheckReport {
  bool ok = true;
  double max_abs_error = 0.0;
  double max_rel_error = 0.0;
  long long elements_checked = 0;
  // Worst element: "input 'gamma'[17]: analytic 0.25 vs finite difference 0.2501 (abs err ..)".
  std::string worst;
};

struct GradcheckInput {
  std::string name;
  std::span<double> values;               // perturbed in place, restored afterwards
  std::span<const double> analytic_grad;  // d loss / d values, same length
};

// `loss` must be a deterministic function of the current contents of the inputs' values.
GradcheckReport gradcheck_raw(const std::vector<GradcheckInput>& inputs, const std::function<double()>& loss,
                              const GradcheckOptions& options = {});

// A fixed pseudo-random weight vector (values in [-1, 1)), used to turn a tensor output y into the
// scalar loss sum(y * w) so that d loss / d y = w exercises every output element differently.
std::vector<double> gradcheck_weights(size_t count, unsigned seed);

}  // namespace coco
