// f64 finite-difference checks of the elementwise and reduction backwards: kernel level (CPU
// reference kernels composed by hand) and through the ops with the tape.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/elementwise.h"
#include "kernels/elementwise.h"
#include "kernels/reduce.h"

namespace coco {
namespace {

std::vector<double> random_values(size_t count, unsigned seed) { return gradcheck_weights(count, seed); }

const int64_t kSizes[] = {1, 7, 33};

TEST(ElementwiseGrad, KernelLevelMulBackward) {
  for (int64_t n : kSizes) {
    std::vector<double> a = random_values(n, 1), b = random_values(n, 2), out(n);
    const std::vector<double> w = gradcheck_weights(n, 3);
    auto loss = [&] {
      kernels::cpu::binary<double>(kernels::BinaryOp::mul, a.data(), b.data(), out.data(), n);
      double total = 0.0;
      for (int64_t i = 0; i < n; ++i) total += out[i] * w[i];
      return total;
    };
    std::vector<double> da(n), db(n);
    kernels::cpu::mul_backward<double>(w.data(), a.data(), b.data(), da.data(), db.data(), n);
    const GradcheckReport report = gradcheck_raw({{"a", a, da}, {"b", b, db}}, loss);
    EXPECT_TRUE(report.ok) << "n=" << n << ": " << report.worst;
  }
}

TEST(ElementwiseGrad, KernelLevelReductions) {
  for (int64_t rows : kSizes) {
    for (int64_t cols : {1, 5, 12}) {
      const int64_t n = rows * cols;
      std::vector<double> x = random_values(n, 10 + n);
      // mean: loss = w0 * mean(x)
      const double w0 = 0.7;
      double mean = 0.0;
      std::vector<double> dx(n);
      const double dy = w0;
      kernels::cpu::sum_backward<double>(&dy, n, 1.0 / n, dx.data());
      GradcheckReport report = gradcheck_raw({{"x", x, dx}}, [&] {
        kernels::cpu::sum<double>(x.data(), n, 1.0 / n, &mean);
        return w0 * mean;
      });
      EXPECT_TRUE(report.ok) << "mean " << rows << "x" << cols << ": " << report.worst;

      // row_sum: loss = sum_r w[r] * rowsum(x)[r]
      const std::vector<double> w = gradcheck_weights(rows, 20);
      std::vector<double> sums(rows), drow(n);
      kernels::cpu::row_sum_backward<double>(w.data(), rows, cols, drow.data());
      report = gradcheck_raw({{"x", x, drow}}, [&] {
        kernels::cpu::row_sum<double>(x.data(), rows, cols, sums.data());
        double total = 0.0;
        for (int64_t r = 0; r < rows; ++r) total += w[r] * sums[r];
        return total;
      });
      EXPECT_TRUE(report.ok) << "row_sum " << rows << "x" << cols << ": " << report.worst;

      // column sums (the bias gradient) are linear: d/dx[r, c] of sum_c v[c] colsum[c] = v[c].
      const std::vector<double> v = gradcheck_weights(cols, 21);
      std::vector<double> colsum(cols), dcol(n);
      for (int64_t i = 0; i < n; ++i) dcol[i] = v[i % cols];
      report = gradcheck_raw({{"x", x, dcol}}, [&] {
        kernels::cpu::column_sum<double>(x.data(), rows, cols, 0.0, colsum.data());
        double total = 0.0;
        for (int64_t c = 0; c < cols; ++c) total += v[c] * colsum[c];
        return total;
      });
      EXPECT_TRUE(report.ok) << "column_sum " << rows << "x" << cols << ": " << report.worst;
    }
  }
}

Tensor f64_input(const Shape& shape, unsigned seed, const char* name) {
  Tensor t = Tensor::from_vector(random_values(static_cast<size_t>(shape.numel()), seed), shape);
  t.set_requires_grad(true).set_name(name);
  return t;
}

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

void expect_gradcheck(const char* what, const Fn& fn, const std::vector<Tensor>& inputs) {
  const GradcheckReport report = gradcheck(fn, inputs);
  EXPECT_TRUE(report.ok) << what << ": " << report.worst;
  EXPECT_GT(report.elements_checked, 0) << what;
}

TEST(ElementwiseGrad, OpsThroughTape) {
  for (const Shape& shape : {Shape{1}, Shape{7}, Shape{3, 11}, Shape{2, 3, 5}}) {
    const Tensor a = f64_input(shape, 1, "a"), b = f64_input(shape, 2, "b");
    expect_gradcheck("add", [](const std::vector<Tensor>& in) { return ops::add(in[0], in[1]); }, {a, b});
    expect_gradcheck("sub", [](const std::vector<Tensor>& in) { return ops::sub(in[0], in[1]); }, {a, b});
    expect_gradcheck("mul", [](const std::vector<Tensor>& in) { return ops::mul(in[0], in[1]); }, {a, b});
    expect_gradcheck("scale", [](const std::vector<Tensor>& in) { return ops::scale(in[0], -1.75); }, {a});
    expect_gradcheck("add_scaled", [](const std::vector<Tensor>& in) { return ops::add_scaled(in[0], in[1], 0.3); },
                     {a, b});
    expect_gradcheck("sum", [](const std::vector<Tensor>& in) { return ops::sum(in[0]); }, {a});
    expect_gradcheck("mean", [](const std::vector<Tensor>& in) { return ops::mean(in[0]); }, {a});
    expect_gradcheck("row_sum", [](const std::vector<Tensor>& in) { return ops::row_sum(in[0]); }, {a});
  }
}

// Compositions: a tensor used twice (x * x), a chain feeding a reduction, and an input that does
// not require grad.
TEST(ElementwiseGrad, CompositionsThroughTape) {
  const Tensor x = f64_input({4, 6}, 5, "x"), y = f64_input({4, 6}, 6, "y");
  expect_gradcheck("x * x", [](const std::vector<Tensor>& in) { return ops::mul(in[0], in[0]); }, {x});
  expect_gradcheck("mean((x - y) * (x + 2y))",
                   [](const std::vector<Tensor>& in) {
                     return ops::mean(ops::mul(ops::sub(in[0], in[1]), ops::add_scaled(in[0], in[1], 2.0)));
                   },
                   {x, y});
  expect_gradcheck("row_sum(scale(x)) . sum",
                   [](const std::vector<Tensor>& in) { return ops::sum(ops::row_sum(ops::scale(in[0], 3.0))); }, {x});
  Tensor constant = Tensor::from_vector(random_values(24, 9), {4, 6});
  expect_gradcheck("x * constant", [constant](const std::vector<Tensor>& in) { return ops::mul(in[0], constant); },
                   {x});
}

}  // namespace
}  // namespace coco
