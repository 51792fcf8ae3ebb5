// Dropout gradients: f64 finite differences of the CPU kernel for a fixed stream, ops::dropout on
// the tape (backward regenerates the mask), eval/p = 0 identity, and the op on CUDA (emulated)
// against the CPU: the same elements are dropped, f32 results are bitwise equal.
#include <gtest/gtest.h>

#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/dropout.h"
#include "engine/ops/elementwise.h"
#include "engine/rng/philox.h"
#include "engine/tape.h"
#include "kernels/dropout.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;
using coco::rng::Purpose;
using coco::rng::Stream;

TEST(DropoutGradcheck, KernelBackwardUsesTheSameMask) {
  const Stream rng(77, 3, Purpose::dropout_activation, 2);
  for (int64_t n : {1, 7, 33, 130}) {
    std::vector<double> x = coco::gradcheck_weights(static_cast<size_t>(n), 1);
    const std::vector<double> w = coco::gradcheck_weights(static_cast<size_t>(n), 2);
    std::vector<double> dx(x.size());
    coco::kernels::cpu::dropout_apply(dx.data(), w.data(), n, 0.4, rng, 11);
    auto loss = [&] {
      std::vector<double> y(x.size());
      coco::kernels::cpu::dropout_apply(y.data(), x.data(), n, 0.4, rng, 11);
      double total = 0.0;
      for (size_t i = 0; i < y.size(); ++i) total += y[i] * w[i];
      return total;
    };
    const coco::GradcheckReport report = coco::gradcheck_raw({{"x", x, dx}}, loss);
    EXPECT_TRUE(report.ok) << "n=" << n << ": " << report.worst;
  }
}

TEST(DropoutGradcheck, OpOnTheTape) {
  Tensor x = Tensor::from_vector(coco::gradcheck_weights(4 * 33, 5), Shape{4, 33});
  x.set_requires_grad(true).set_name("x");
  const Stream rng(1, 2, Purpose::dropout_residual);
  const coco::GradcheckReport report = coco::gradcheck(
      [&](const std::vector<Tensor>& in) {
        return coco::ops::dropout(coco::ops::mul(in[0], in[0]), 0.3, rng, true, 5);
      },
      {x});
  EXPECT_TRUE(report.ok) << report.worst;
}

TEST(DropoutOps, IdentityInEvalModeAndForZeroProbability) {
  const Tensor x = Tensor::from_vector(coco::gradcheck_weights(10, 1), Shape{10});
  const Stream rng(1, 2, Purpose::dropout_residual);
  EXPECT_TRUE(coco::ops::dropout(x, 0.5, rng, false).same(x));
  EXPECT_TRUE(coco::ops::dropout(x, 0.0, rng, true).same(x));
  EXPECT_THROW(coco::ops::dropout(x, 1.5, rng, true), coco::TensorError);
  EXPECT_THROW(coco::ops::dropout(x, -0.5, rng, false), coco::TensorError);
}

std::pair<std::vector<double>, std::vector<double>> run_dropout(Device device, DType dtype,
                                                                const std::vector<float>& values,
                                                                const std::vector<float>& seed, const Stream& rng) {
  Tensor x = Tensor::from_vector(values, Shape{3, 7, 33}).to(dtype).to(device);
  x.set_requires_grad(true);
  coco::Tape tape;
  std::vector<double> out;
  {
    coco::Tape::Recording recording(tape);
    const Tensor y = coco::ops::dropout(x, 0.2, rng, true, 1000);
    out = y.to_f64();
    tape.backward(y, Tensor::from_vector(seed, y.shape()).to(dtype).to(device));
  }
  return {out, x.grad().to_f64()};
}

TEST(DropoutOps, CudaMatchesCpuBitwise) {
  const Stream rng(123456789, 77, Purpose::dropout_attention, 5);
  const auto values = coco::testing::random_floats(3 * 7 * 33, 1);
  const auto seed = coco::testing::random_floats(3 * 7 * 33, 2);
  const auto cpu = run_dropout(Device::cpu, DType::f32, values, seed, rng);
  const auto cuda = run_dropout(Device::cuda, DType::f32, values, seed, rng);
  EXPECT_EQ(cpu.first, cuda.first);
  EXPECT_EQ(cpu.second, cuda.second);
  size_t dropped = 0;
  for (size_t i = 0; i < cpu.first.size(); ++i) {
    EXPECT_EQ(cpu.first[i] == 0.0, cpu.second[i] == 0.0) << "forward and backward masks differ at " << i;
    dropped += cpu.first[i] == 0.0;
  }
  EXPECT_GT(dropped, 0u);
  // bf16 on CUDA drops exactly the same elements.
  const auto bf16 = run_dropout(Device::cuda, DType::bf16, coco::testing::round_through<__nv_bfloat16>(values),
                                coco::testing::round_through<__nv_bfloat16>(seed), rng);
  for (size_t i = 0; i < cpu.first.size(); ++i) ASSERT_EQ(cpu.first[i] == 0.0, bf16.first[i] == 0.0) << i;
}

}  // namespace
