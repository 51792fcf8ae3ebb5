// f64 finite-difference checks of the softmax / log-softmax backward (CPU kernels), and through the
// ops wrappers on the tape.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/softmax.h"
#include "engine/tensor.h"
#include "kernels/softmax.h"

namespace {

struct RowShape {
  int64_t rows, width;
};

template <bool Log>
void check_kernel_gradient(const RowShape& s, unsigned seed) {
  const size_t n = static_cast<size_t>(s.rows * s.width);
  std::vector<double> x = coco::gradcheck_weights(n, seed);
  for (double& v : x) v *= 3.0;  // logits spread over a few units so probabilities differ
  const std::vector<double> w = coco::gradcheck_weights(n, seed + 1);
  auto forward = [&](std::vector<double>& y) {
    if constexpr (Log)
      coco::kernels::cpu::log_softmax_forward(x.data(), y.data(), s.rows, s.width);
    else
      coco::kernels::cpu::softmax_forward(x.data(), y.data(), s.rows, s.width);
  };
  std::vector<double> y(n), dx(n);
  forward(y);
  if constexpr (Log)
    coco::kernels::cpu::log_softmax_backward(y.data(), w.data(), dx.data(), s.rows, s.width);
  else
    coco::kernels::cpu::softmax_backward(y.data(), w.data(), dx.data(), s.rows, s.width);
  auto loss = [&] {
    std::vector<double> out(n);
    forward(out);
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) total += out[i] * w[i];
    return total;
  };
  const coco::GradcheckReport report = coco::gradcheck_raw({{"x", x, dx}}, loss);
  EXPECT_TRUE(report.ok) << (Log ? "log_softmax" : "softmax") << " rows=" << s.rows << " width=" << s.width << ": "
                         << report.worst;
  EXPECT_EQ(report.elements_checked, static_cast<long long>(n));
}

TEST(SoftmaxGradcheck, SoftmaxKernel) {
  unsigned seed = 1;
  for (const RowShape& s : {RowShape{3, 1}, RowShape{4, 7}, RowShape{2, 33}, RowShape{1, 130}})
    check_kernel_gradient<false>(s, seed += 2);
}

TEST(SoftmaxGradcheck, LogSoftmaxKernel) {
  unsigned seed = 50;
  for (const RowShape& s : {RowShape{3, 1}, RowShape{4, 7}, RowShape{2, 33}, RowShape{1, 130}})
    check_kernel_gradient<true>(s, seed += 2);
}

coco::Tensor random_input(const coco::Shape& shape, unsigned seed, const char* name) {
  std::vector<double> values = coco::gradcheck_weights(static_cast<size_t>(shape.numel()), seed);
  for (double& v : values) v *= 3.0;
  coco::Tensor t = coco::Tensor::from_vector(values, shape);
  t.set_requires_grad(true).set_name(name);
  return t;
}

TEST(SoftmaxGradcheck, OpsOnTheTape) {
  for (const coco::Shape& shape : {coco::Shape{5}, coco::Shape{3, 7}, coco::Shape{2, 3, 9}}) {
    const coco::Tensor x = random_input(shape, 7, "x");
    const coco::GradcheckReport soft = coco::gradcheck([](const auto& in) { return coco::ops::softmax(in[0]); }, {x});
    EXPECT_TRUE(soft.ok) << "softmax " << shape.str() << ": " << soft.worst;
    const coco::GradcheckReport log =
        coco::gradcheck([](const auto& in) { return coco::ops::log_softmax(in[0]); }, {x});
    EXPECT_TRUE(log.ok) << "log_softmax " << shape.str() << ": " << log.worst;
    // Composition: both recorded ops in one graph.
    const coco::GradcheckReport both = coco::gradcheck(
        [](const auto& in) { return coco::ops::mul(coco::ops::softmax(in[0]), coco::ops::log_softmax(in[0])); }, {x});
    EXPECT_TRUE(both.ok) << "softmax * log_softmax " << shape.str() << ": " << both.worst;
  }
}

}  // namespace
