// GELU gradients: f64 finite differences of the CPU kernels (erf and tanh), ops::gelu on the tape,
// and the op on CUDA (emulated) against the CPU.
#include <gtest/gtest.h>

#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/activation.h"
#include "engine/ops/elementwise.h"
#include "engine/tape.h"
#include "kernels/gelu.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;
using coco::kernels::GeluApproximation;

TEST(GeluGradcheck, KernelBackward) {
  for (GeluApproximation a : {GeluApproximation::erf, GeluApproximation::tanh})
    for (int64_t n : {1, 7, 33, 130}) {
      std::vector<double> x = coco::gradcheck_weights(static_cast<size_t>(n), static_cast<unsigned>(n));
      for (double& v : x) v *= 4.0;  // cover the tails too
      const std::vector<double> w = coco::gradcheck_weights(static_cast<size_t>(n), 99);
      std::vector<double> dx(x.size());
      coco::kernels::cpu::gelu_backward(dx.data(), w.data(), x.data(), n, a);
      auto loss = [&] {
        std::vector<double> y(x.size());
        coco::kernels::cpu::gelu_forward(y.data(), x.data(), n, a);
        double total = 0.0;
        for (size_t i = 0; i < y.size(); ++i) total += y[i] * w[i];
        return total;
      };
      const coco::GradcheckReport report = coco::gradcheck_raw({{"x", x, dx}}, loss);
      EXPECT_TRUE(report.ok) << (a == GeluApproximation::erf ? "erf" : "tanh") << " n=" << n << ": " << report.worst;
    }
}

TEST(GeluGradcheck, OpOnTheTape) {
  Tensor x = Tensor::from_vector(coco::gradcheck_weights(2 * 3 * 5, 4), Shape{2, 3, 5});
  x.set_requires_grad(true).set_name("x");
  for (GeluApproximation a : {GeluApproximation::erf, GeluApproximation::tanh}) {
    const coco::GradcheckReport report =
        coco::gradcheck([a](const std::vector<Tensor>& in) { return coco::ops::gelu(in[0], a); }, {x});
    EXPECT_TRUE(report.ok) << report.worst;
  }
}

std::pair<std::vector<double>, std::vector<double>> run_gelu(Device device, DType dtype, GeluApproximation a,
                                                             const std::vector<float>& x_values,
                                                             const std::vector<float>& seed) {
  Tensor x = Tensor::from_vector(x_values, Shape{7, 33}).to(dtype).to(device);
  x.set_requires_grad(true);
  coco::Tape tape;
  std::vector<double> out;
  {
    coco::Tape::Recording recording(tape);
    const Tensor y = coco::ops::gelu(x, a);
    out = y.to_f64();
    tape.backward(y, Tensor::from_vector(seed, y.shape()).to(dtype).to(device));
  }
  return {out, x.grad().to_f64()};
}

TEST(GeluOps, CudaMatchesCpu) {
  const auto x = coco::testing::round_through<__nv_bfloat16>(coco::testing::random_floats(7 * 33, 1, -5.0f, 5.0f));
  const auto seed = coco::testing::round_through<__nv_bfloat16>(coco::testing::random_floats(7 * 33, 2));
  for (GeluApproximation a : {GeluApproximation::erf, GeluApproximation::tanh}) {
    const auto cpu = run_gelu(Device::cpu, DType::f32, a, x, seed);
    const auto cuda = run_gelu(Device::cuda, DType::f32, a, x, seed);
    // f32 both sides, same formulas; libm differences only.
    EXPECT_TRUE(coco::testing::matches_reference(cpu.first, cuda.first, 1e-12, "f32 forward"));
    EXPECT_TRUE(coco::testing::matches_reference(cpu.second, cuda.second, 1e-12, "f32 backward"));
    // bf16: one output rounding (<= 2^-8 relative): NMSE <= 1.5e-5.
    const auto bf16 = run_gelu(Device::cuda, DType::bf16, a, x, seed);
    EXPECT_TRUE(coco::testing::matches_reference(cpu.first, bf16.first, 3e-5, "bf16 forward"));
    EXPECT_TRUE(coco::testing::matches_reference(cpu.second, bf16.second, 3e-5, "bf16 backward"));
  }
}

TEST(GeluOps, RejectsUnsupportedDtypes) {
  EXPECT_THROW(coco::ops::gelu(Tensor::zeros(Shape{3}, DType::bf16)), coco::TensorError);
  EXPECT_THROW(coco::ops::gelu(Tensor::zeros(Shape{3}, DType::i32)), coco::TensorError);
  EXPECT_THROW(coco::ops::gelu(Tensor::zeros(Shape{3}, DType::f64, Device::cuda)), coco::TensorError);
}

}  // namespace
