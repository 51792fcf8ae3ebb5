// LayerNorm gradients: f64 finite differences of the CPU kernels (plain and residual, with the
// sum output's gradient), through ops::layernorm / residual_layernorm(_with_sum) on the tape, and the
// ops on CUDA (emulated) against the CPU, including bf16 activations with f32 parameter gradients.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/layernorm.h"
#include "engine/tape.h"
#include "kernels/layernorm.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;

double weighted_sum(const std::vector<double>& values, const std::vector<double>& weights) {
  double total = 0.0;
  for (size_t i = 0; i < values.size(); ++i) total += values[i] * weights[i];
  return total;
}

const std::tuple<int64_t, int64_t> kShapes[] = {{1, 1}, {1, 7}, {3, 5}, {7, 33}, {4, 130}};

TEST(LayerNormGradcheck, KernelBackward) {
  for (auto [rows, C] : kShapes) {
    const size_t n = static_cast<size_t>(rows * C), c = static_cast<size_t>(C);
    std::vector<double> x = coco::gradcheck_weights(n, 1), gamma = coco::gradcheck_weights(c, 2),
                        beta = coco::gradcheck_weights(c, 3);
    for (double& g : gamma) g += 1.5;  // keep away from zero so every path matters
    const std::vector<double> w = coco::gradcheck_weights(n, 4);
    const double eps = 1e-3;
    std::vector<double> out(n), mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows));
    coco::kernels::cpu::layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), gamma.data(), beta.data(),
                                          rows, C, eps);
    std::vector<double> dx(n), dgamma(c, 0.0), dbeta(c, 0.0);
    coco::kernels::cpu::layernorm_backward(dx.data(), dgamma.data(), dbeta.data(), w.data(),
                                           static_cast<const double*>(nullptr), x.data(), gamma.data(), mean.data(),
                                           rstd.data(), rows, C);
    auto loss = [&] {
      std::vector<double> y(n);
      coco::kernels::cpu::layernorm_forward(y.data(), static_cast<double*>(nullptr), static_cast<double*>(nullptr),
                                            x.data(), gamma.data(), beta.data(), rows, C, eps);
      return weighted_sum(y, w);
    };
    const coco::GradcheckReport report =
        coco::gradcheck_raw({{"x", x, dx}, {"gamma", gamma, dgamma}, {"beta", beta, dbeta}}, loss);
    EXPECT_TRUE(report.ok) << "rows=" << rows << " C=" << C << ": " << report.worst;
  }
}

TEST(LayerNormGradcheck, KernelResidualBackwardWithSumGradient) {
  for (auto [rows, C] : kShapes) {
    const size_t n = static_cast<size_t>(rows * C), c = static_cast<size_t>(C);
    std::vector<double> x = coco::gradcheck_weights(n, 11), residual = coco::gradcheck_weights(n, 12),
                        gamma = coco::gradcheck_weights(c, 13), beta = coco::gradcheck_weights(c, 14);
    const std::vector<double> w_out = coco::gradcheck_weights(n, 15), w_sum = coco::gradcheck_weights(n, 16);
    const double eps = 1e-5;
    std::vector<double> out(n), sum(n), mean(static_cast<size_t>(rows)), rstd(static_cast<size_t>(rows));
    coco::kernels::cpu::residual_layernorm_forward(out.data(), sum.data(), mean.data(), rstd.data(), x.data(),
                                                   residual.data(), gamma.data(), beta.data(), rows, C, eps);
    std::vector<double> dsum_total(n), dgamma(c, 0.0), dbeta(c, 0.0);
    coco::kernels::cpu::layernorm_backward(dsum_total.data(), dgamma.data(), dbeta.data(), w_out.data(), w_sum.data(),
                                           sum.data(), gamma.data(), mean.data(), rstd.data(), rows, C);
    // d/dx = d/dresidual = d/dsum.
    auto loss = [&] {
      std::vector<double> y(n), s(n);
      coco::kernels::cpu::residual_layernorm_forward(y.data(), s.data(), static_cast<double*>(nullptr),
                                                     static_cast<double*>(nullptr), x.data(), residual.data(),
                                                     gamma.data(), beta.data(), rows, C, eps);
      return weighted_sum(y, w_out) + weighted_sum(s, w_sum);
    };
    const coco::GradcheckReport report = coco::gradcheck_raw(
        {{"x", x, dsum_total}, {"residual", residual, dsum_total}, {"gamma", gamma, dgamma}, {"beta", beta, dbeta}},
        loss);
    EXPECT_TRUE(report.ok) << "rows=" << rows << " C=" << C << ": " << report.worst;
  }
}

Tensor f64_param(const std::vector<double>& values, const Shape& shape, const char* name) {
  Tensor t = Tensor::from_vector(values, shape);
  t.set_requires_grad(true).set_name(name);
  return t;
}

TEST(LayerNormGradcheck, OpsOnTheTape) {
  Tensor x = f64_param(coco::gradcheck_weights(2 * 3 * 7, 1), Shape{2, 3, 7}, "x");
  Tensor residual = f64_param(coco::gradcheck_weights(2 * 3 * 7, 2), Shape{2, 3, 7}, "residual");
  std::vector<double> gamma_values = coco::gradcheck_weights(7, 3);
  for (double& g : gamma_values) g += 1.0;
  Tensor gamma = f64_param(gamma_values, Shape{7}, "gamma");
  Tensor beta = f64_param(coco::gradcheck_weights(7, 4), Shape{7}, "beta");
  coco::GradcheckReport report = coco::gradcheck(
      [](const std::vector<Tensor>& in) { return coco::ops::layernorm(in[0], in[1], in[2], 1e-4); }, {x, gamma, beta});
  EXPECT_TRUE(report.ok) << "layernorm: " << report.worst;
  report = coco::gradcheck(
      [](const std::vector<Tensor>& in) { return coco::ops::residual_layernorm(in[0], in[1], in[2], in[3]); },
      {x, residual, gamma, beta});
  EXPECT_TRUE(report.ok) << "residual_layernorm: " << report.worst;
  // Both outputs used downstream (pre-norm style): out feeds on, sum is the next residual stream.
  report = coco::gradcheck(
      [](const std::vector<Tensor>& in) {
        auto [out, sum] = coco::ops::residual_layernorm_with_sum(in[0], in[1], in[2], in[3]);
        return coco::ops::add(coco::ops::mul(out, out), sum);
      },
      {x, residual, gamma, beta});
  EXPECT_TRUE(report.ok) << "residual_layernorm_with_sum: " << report.worst;
  // The same tensor as both operands (x + x).
  report = coco::gradcheck(
      [](const std::vector<Tensor>& in) { return coco::ops::residual_layernorm(in[0], in[0], in[1], in[2]); },
      {x, gamma, beta});
  EXPECT_TRUE(report.ok) << "residual_layernorm(x, x): " << report.worst;
}

struct OpResult {
  std::vector<double> out, sum, dx, dresidual, dgamma, dbeta;
};

// residual_layernorm_with_sum on `device` in `dtype`, parameters' gradients in `grad_dtype`;
// seeds the backward with `seed_out` (out) and `seed_sum` (sum) through a weighted sum.
OpResult run_residual(Device device, DType dtype, DType grad_dtype, const std::vector<float>& x_values,
                      const std::vector<float>& residual_values, const std::vector<float>& gamma_values,
                      const std::vector<float>& beta_values, const std::vector<float>& seed_out,
                      const std::vector<float>& seed_sum, const Shape& shape) {
  const int64_t C = shape[-1];
  Tensor x = Tensor::from_vector(x_values, shape).to(dtype).to(device);
  Tensor residual = Tensor::from_vector(residual_values, shape).to(dtype).to(device);
  Tensor gamma = Tensor::from_vector(gamma_values, Shape{C}).to(dtype).to(device);
  Tensor beta = Tensor::from_vector(beta_values, Shape{C}).to(dtype).to(device);
  for (Tensor* t : {&x, &residual}) t->set_requires_grad(true);
  for (Tensor* t : {&gamma, &beta}) t->set_requires_grad(true).set_grad_dtype(grad_dtype);
  const Tensor w_out = Tensor::from_vector(seed_out, shape).to(dtype).to(device);
  const Tensor w_sum = Tensor::from_vector(seed_sum, shape).to(dtype).to(device);
  coco::Tape tape;
  OpResult r;
  {
    coco::Tape::Recording recording(tape);
    auto [out, sum] = coco::ops::residual_layernorm_with_sum(x, residual, gamma, beta, 1e-5);
    r.out = out.to_f64();
    r.sum = sum.to_f64();
    const Tensor loss =
        coco::ops::add(coco::ops::sum(coco::ops::mul(out, w_out)), coco::ops::sum(coco::ops::mul(sum, w_sum)));
    tape.backward(loss);
  }
  r.dx = x.grad().to_f64();
  r.dresidual = residual.grad().to_f64();
  r.dgamma = gamma.grad().to_f64();
  r.dbeta = beta.grad().to_f64();
  return r;
}

TEST(LayerNormOps, CudaMatchesCpu) {
  const Shape shape{3, 11, 37};
  const size_t n = 3 * 11 * 37;
  using coco::testing::random_floats;
  using coco::testing::round_through;
  const auto x = round_through<__nv_bfloat16>(random_floats(n, 1, -2.0f, 2.0f));
  const auto residual = round_through<__nv_bfloat16>(random_floats(n, 2));
  const auto gamma = round_through<__nv_bfloat16>(random_floats(37, 3, 0.5f, 1.5f));
  const auto beta = round_through<__nv_bfloat16>(random_floats(37, 4));
  const auto seed_out = round_through<__nv_bfloat16>(random_floats(n, 5));
  const auto seed_sum = round_through<__nv_bfloat16>(random_floats(n, 6));
  const OpResult cpu =
      run_residual(Device::cpu, DType::f32, DType::f32, x, residual, gamma, beta, seed_out, seed_sum, shape);
  // f32 on CUDA: the same f32 math in another summation order: NMSE ~1e-13.
  const OpResult cuda =
      run_residual(Device::cuda, DType::f32, DType::f32, x, residual, gamma, beta, seed_out, seed_sum, shape);
  using coco::testing::matches_reference;
  for (auto [name, a, b] :
       {std::tuple<const char*, const std::vector<double>*, const std::vector<double>*>{"out", &cpu.out, &cuda.out},
        {"sum", &cpu.sum, &cuda.sum},
        {"dx", &cpu.dx, &cuda.dx},
        {"dresidual", &cpu.dresidual, &cuda.dresidual},
        {"dgamma", &cpu.dgamma, &cuda.dgamma},
        {"dbeta", &cpu.dbeta, &cuda.dbeta}})
    EXPECT_TRUE(matches_reference(*a, *b, 1e-10, std::string("f32 ") + name));
  // bf16 activations, f32 parameter gradients: activations and their gradients carry bf16 roundings
  // (<= 2^-8 relative each, NMSE ~1e-5; the loss itself is bf16, so allow 1e-4); dgamma/dbeta sum
  // many such terms in f32.
  const OpResult mixed =
      run_residual(Device::cuda, DType::bf16, DType::f32, x, residual, gamma, beta, seed_out, seed_sum, shape);
  for (auto [name, a, b] :
       {std::tuple<const char*, const std::vector<double>*, const std::vector<double>*>{"out", &cpu.out, &mixed.out},
        {"dx", &cpu.dx, &mixed.dx},
        {"dgamma", &cpu.dgamma, &mixed.dgamma},
        {"dbeta", &cpu.dbeta, &mixed.dbeta}})
    EXPECT_TRUE(matches_reference(*a, *b, 1e-4, std::string("bf16 ") + name));
  // The f32 sum of two bf16 values is exact; the bf16 op rounds it once: identical after rounding.
  std::vector<float> cpu_sum(cpu.sum.begin(), cpu.sum.end());
  EXPECT_EQ(coco::testing::to_f64(coco::testing::round_through<__nv_bfloat16>(cpu_sum)), mixed.sum);
}

TEST(LayerNormOps, RejectsMismatchedArguments) {
  const Tensor x = Tensor::zeros(Shape{2, 5}, DType::f32);
  const Tensor gamma = Tensor::zeros(Shape{5}, DType::f32), beta = Tensor::zeros(Shape{5}, DType::f32);
  EXPECT_THROW(coco::ops::layernorm(x, Tensor::zeros(Shape{4}, DType::f32), beta), coco::TensorError);
  EXPECT_THROW(coco::ops::layernorm(x, gamma.to(DType::f64), beta), coco::TensorError);
  EXPECT_THROW(coco::ops::layernorm(x, gamma, beta, 0.0), coco::TensorError);
  EXPECT_THROW(coco::ops::residual_layernorm(x, Tensor::zeros(Shape{5, 2}, DType::f32), gamma, beta),
               coco::TensorError);
  EXPECT_THROW(coco::ops::layernorm(x.to(DType::bf16), gamma.to(DType::bf16), beta.to(DType::bf16)), coco::TensorError);
  EXPECT_THROW(coco::ops::layernorm(x.to(DType::f64).to(Device::cuda), gamma.to(DType::f64).to(Device::cuda),
                                    beta.to(DType::f64).to(Device::cuda)),
               coco::TensorError);
}

}  // namespace
