#include "engine/gradcheck.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <stdexcept>

namespace coco {

GradcheckReport gradcheck_raw(const std::vector<GradcheckInput>& inputs, const std::function<double()>& loss,
                              const GradcheckOptions& options) {
  GradcheckReport report;
  double worst_excess = -1.0;
  for (const GradcheckInput& input : inputs) {
    if (input.values.size() != input.analytic_grad.size())
      throw std::invalid_argument("gradcheck: input '" + input.name + "' has " + std::to_string(input.values.size()) +
                                  " values but " + std::to_string(input.analytic_grad.size()) + " gradient entries");
    for (size_t i = 0; i < input.values.size(); ++i) {
      const double saved = input.values[i];
      input.values[i] = saved + options.eps;
      const double plus = loss();
      input.values[i] = saved - options.eps;
      const double minus = loss();
      input.values[i] = saved;
      const double numeric = (plus - minus) / (2.0 * options.eps);
      const double analytic = input.analytic_grad[i];
      const double abs_err = std::fabs(numeric - analytic);
      const double scale = std::max(std::fabs(numeric), std::fabs(analytic));
      const double rel_err = scale > 0 ? abs_err / scale : 0.0;
      const double allowed = options.atol + options.rtol * scale;
      const bool finite = std::isfinite(numeric) && std::isfinite(analytic);
      ++report.elements_checked;
      report.max_abs_error = std::max(report.max_abs_error, abs_err);
      report.max_rel_error = std::max(report.max_rel_error, rel_err);
      const double excess = finite ? abs_err - allowed : INFINITY;
      if (excess > worst_excess) {
        worst_excess = excess;
        char buffer[256];
        std::snprintf(buffer, sizeof buffer,
                      "input '%s'[%zu]: analytic %.10g vs finite difference %.10g (abs err %.3g, allowed %.3g)",
                      input.name.c_str(), i, analytic, numeric, abs_err, allowed);
        report.worst = buffer;
      }
      if (!finite || abs_err > allowed) report.ok = false;
    }
  }
  return report;
}

std::vector<double> gradcheck_weights(size_t count, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::vector<double> weights(count);
  for (double& w : weights) w = uniform(generator);
  return weights;
}

}  // namespace coco
