// f64 finite-difference checks of the matmul / linear backward: first at kernel level (the CPU GEMM,
// activation backward and column sums composed by hand), then through ops::matmul / bmm / linear and
// the tape.
#include <gtest/gtest.h>

#include <span>
#include <string>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/linear.h"
#include "engine/tape.h"
#include "kernels/matmul.h"
#include "kernels/reduce.h"

namespace coco {
namespace {

using kernels::Activation;

std::vector<double> random_values(size_t count, unsigned seed, double scale = 1.0) {
  std::vector<double> values = gradcheck_weights(count, seed);
  for (double& v : values) v *= scale;
  return values;
}

struct LinearShape {
  int64_t rows, in, out;
};

const LinearShape kLinearShapes[] = {{1, 1, 1}, {3, 7, 5}, {7, 4, 9}, {2, 13, 3}};
const Activation kActivations[] = {Activation::none, Activation::gelu_erf, Activation::gelu_tanh};

// Kernel level: y = act(x W^T + b), loss = sum(y * w). The analytic gradients are computed the way
// ops::linear's backward does: dpre = act'(pre) * w; dx = dpre W; dW += dpre^T x; db += colsum(dpre).
// dW and db start from non-zero values to check the beta = 1 accumulation.
TEST(LinearGrad, KernelLevelBackward) {
  for (const LinearShape& s : kLinearShapes) {
    for (Activation act : kActivations) {
      std::vector<double> x = random_values(s.rows * s.in, 1, 2.0), W = random_values(s.out * s.in, 2),
                          b = random_values(s.out, 3);
      const std::vector<double> w = gradcheck_weights(s.rows * s.out, 4);
      std::vector<double> y(s.rows * s.out), pre(s.rows * s.out);
      auto loss = [&] {
        kernels::cpu::linear_forward<double>(x.data(), W.data(), b.data(), act, s.rows, s.in, s.out, y.data(),
                                             pre.data());
        double total = 0.0;
        for (size_t i = 0; i < y.size(); ++i) total += y[i] * w[i];
        return total;
      };
      loss();
      std::vector<double> dpre(y.size());
      kernels::cpu::activation_backward<double>(act, w.data(), pre.data(), dpre.data(), static_cast<int64_t>(y.size()));
      std::vector<double> dx(x.size()), dW(W.size(), 0.25), db(b.size(), -0.5);
      kernels::cpu::gemm<double, double>(false, false, s.rows, s.in, s.out, 1.0, dpre.data(), s.out, W.data(), s.in,
                                         0.0, dx.data(), s.in);
      kernels::cpu::gemm<double, double>(true, false, s.out, s.in, s.rows, 1.0, dpre.data(), s.out, x.data(), s.in, 1.0,
                                         dW.data(), s.in);
      kernels::cpu::column_sum<double>(dpre.data(), s.rows, s.out, 1.0, db.data());
      for (double& v : dW) v -= 0.25;
      for (double& v : db) v += 0.5;
      const GradcheckReport report =
          gradcheck_raw({{"x", x, dx}, {"W", W, dW}, {"b", b, db}}, loss, {.eps = 1e-6, .atol = 1e-7, .rtol = 1e-6});
      EXPECT_TRUE(report.ok) << kernels::activation_name(act) << " rows=" << s.rows << " in=" << s.in
                             << " out=" << s.out << ": " << report.worst;
    }
  }
}

// Kernel level: C = op(A) op(B) for all four transposes; the gradients use the formulas of
// ops::matmul's backward.
TEST(LinearGrad, KernelLevelMatmulTransposes) {
  const int64_t M = 5, N = 4, K = 3;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int64_t lda = ta ? M : K, ldb = tb ? K : N;
      std::vector<double> A = random_values(M * K, 10), B = random_values(K * N, 11), C(M * N);
      const std::vector<double> w = gradcheck_weights(M * N, 12);
      auto loss = [&] {
        kernels::cpu::gemm<double, double>(ta, tb, M, N, K, 1.0, A.data(), lda, B.data(), ldb, 0.0, C.data(), N);
        double total = 0.0;
        for (size_t i = 0; i < C.size(); ++i) total += C[i] * w[i];
        return total;
      };
      std::vector<double> dA(A.size()), dB(B.size());
      if (!ta)
        kernels::cpu::gemm<double, double>(false, !tb, M, K, N, 1.0, w.data(), N, B.data(), ldb, 0.0, dA.data(), K);
      else
        kernels::cpu::gemm<double, double>(tb, true, K, M, N, 1.0, B.data(), ldb, w.data(), N, 0.0, dA.data(), M);
      if (!tb)
        kernels::cpu::gemm<double, double>(!ta, false, K, N, M, 1.0, A.data(), lda, w.data(), N, 0.0, dB.data(), N);
      else
        kernels::cpu::gemm<double, double>(true, ta, N, K, M, 1.0, w.data(), N, A.data(), lda, 0.0, dB.data(), K);
      const GradcheckReport report = gradcheck_raw({{"A", A, dA}, {"B", B, dB}}, loss);
      EXPECT_TRUE(report.ok) << "ta=" << ta << " tb=" << tb << ": " << report.worst;
    }
  }
}

Tensor f64_input(const Shape& shape, unsigned seed, const char* name, double scale = 1.0) {
  Tensor t = Tensor::from_vector(random_values(static_cast<size_t>(shape.numel()), seed, scale), shape);
  t.set_requires_grad(true).set_name(name);
  return t;
}

TEST(LinearGrad, OpsLinearThroughTape) {
  for (Activation act : kActivations) {
    for (bool with_bias : {true, false}) {
      // x of rank 3: (2, 3, 7) is 6 rows of 7 features.
      Tensor x = f64_input({2, 3, 7}, 20, "x", 2.0), W = f64_input({5, 7}, 21, "W"), b = f64_input({5}, 22, "b");
      std::vector<Tensor> inputs = {x, W};
      if (with_bias) inputs.push_back(b);
      const GradcheckReport report = gradcheck(
          [act](const std::vector<Tensor>& in) {
            return ops::linear(in[0], in[1], in.size() > 2 ? in[2] : Tensor(), act);
          },
          inputs);
      EXPECT_TRUE(report.ok) << kernels::activation_name(act) << (with_bias ? " with bias: " : ": ") << report.worst;
    }
  }
}

TEST(LinearGrad, OpsMatmulAndBmmThroughTape) {
  const int64_t M = 4, N = 3, K = 5, batch = 2;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Tensor a = f64_input(ta ? Shape{K, M} : Shape{M, K}, 30, "a"),
             b = f64_input(tb ? Shape{N, K} : Shape{K, N}, 31, "b");
      GradcheckReport report =
          gradcheck([ta, tb](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[1], ta, tb); }, {a, b});
      EXPECT_TRUE(report.ok) << "matmul ta=" << ta << " tb=" << tb << ": " << report.worst;

      Tensor ba = f64_input(ta ? Shape{batch, K, M} : Shape{batch, M, K}, 32, "a");
      Tensor bb = f64_input(tb ? Shape{batch, N, K} : Shape{batch, K, N}, 33, "b");
      report = gradcheck([ta, tb](const std::vector<Tensor>& in) { return ops::bmm(in[0], in[1], ta, tb); }, {ba, bb});
      EXPECT_TRUE(report.ok) << "bmm ta=" << ta << " tb=" << tb << ": " << report.worst;
    }
  }
}

// The same tensor on both sides (x . x^T) accumulates two gradient contributions.
TEST(LinearGrad, SharedOperandAccumulates) {
  Tensor x = f64_input({3, 4}, 40, "x");
  const GradcheckReport report =
      gradcheck([](const std::vector<Tensor>& in) { return ops::matmul(in[0], in[0], false, true); }, {x});
  EXPECT_TRUE(report.ok) << report.worst;
}

// Only some inputs require grad: the others get no gradient, and W's buffer accumulates over two
// backward passes (beta = 1).
TEST(LinearGrad, WeightGradientAccumulatesAcrossSteps) {
  Tensor x = Tensor::from_vector(random_values(12, 50), {3, 4});
  Tensor W = f64_input({2, 4}, 51, "W");
  std::vector<double> first;
  for (int step = 0; step < 2; ++step) {
    Tape tape;
    Tensor y;
    {
      Tape::Recording recording(tape);
      y = ops::linear(x, W, Tensor(), Activation::gelu_tanh);
    }
    tape.backward(y, Tensor::full(y.shape(), 1.0, DType::f64));
    if (step == 0) first = W.grad().to_f64();
  }
  EXPECT_FALSE(x.grad().defined());
  const std::vector<double> twice = W.grad().to_f64();
  ASSERT_EQ(twice.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_NEAR(twice[i], 2.0 * first[i], 1e-12);
}

}  // namespace
}  // namespace coco
