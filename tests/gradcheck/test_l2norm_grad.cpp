// Row L2 normalisation gradients: f64 finite differences of the CPU kernels (norms above and below
// eps), through ops::l2_normalize on the tape, and the op on CUDA (emulated) against the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/losses.h"
#include "engine/tape.h"
#include "kernels/l2norm.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;

struct RowShape {
  int64_t rows, dim;
};

// Every third row is scaled to a norm of about 0.01 and the others to about 0.9 sqrt(dim), so with
// eps = 0.05 some norms sit well below eps and some well above (a finite difference must not cross
// the clamp).
void check_kernel_gradient(const RowShape& s, double eps, unsigned seed) {
  const size_t n = static_cast<size_t>(s.rows * s.dim);
  std::vector<double> x = coco::gradcheck_weights(n, seed);
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t d = 0; d < s.dim; ++d)
      x[static_cast<size_t>(r * s.dim + d)] *= (r % 3 == 1) ? 0.02 / std::sqrt(static_cast<double>(s.dim)) : 1.5;
  const std::vector<double> w = coco::gradcheck_weights(n, seed + 1);
  std::vector<double> y(n), norms(static_cast<size_t>(s.rows)), dx(n);
  coco::kernels::cpu::l2_normalize_forward(x.data(), s.rows, s.dim, eps, y.data(), norms.data());
  for (double norm : norms) ASSERT_GT(std::fabs(norm - eps), 1e-3) << "a norm too close to eps for a finite difference";
  coco::kernels::cpu::l2_normalize_backward(x.data(), norms.data(), w.data(), s.rows, s.dim, eps, dx.data());
  auto loss = [&] {
    std::vector<double> out(n), nn(static_cast<size_t>(s.rows));
    coco::kernels::cpu::l2_normalize_forward(x.data(), s.rows, s.dim, eps, out.data(), nn.data());
    double total = 0.0;
    for (size_t i = 0; i < n; ++i) total += out[i] * w[i];
    return total;
  };
  const coco::GradcheckReport report = coco::gradcheck_raw({{"x", x, dx}}, loss);
  EXPECT_TRUE(report.ok) << "rows=" << s.rows << " dim=" << s.dim << " eps=" << eps << ": " << report.worst;
}

TEST(L2NormGradcheck, KernelBackward) {
  unsigned seed = 1;
  for (const RowShape& s : {RowShape{1, 1}, RowShape{3, 7}, RowShape{4, 33}, RowShape{2, 130}}) {
    check_kernel_gradient(s, 1e-12, seed += 2);
    // eps = 0.05: rows scaled by 0.02 have norms below eps (the clamped branch), the others above.
    if (s.dim > 1) check_kernel_gradient(s, 0.05, seed += 2);
  }
}

TEST(L2NormGradcheck, OpOnTheTape) {
  Tensor x = Tensor::from_vector(coco::gradcheck_weights(30, 4), Shape{2, 3, 5});
  x.set_requires_grad(true).set_name("x");
  const coco::GradcheckReport report =
      coco::gradcheck([](const std::vector<Tensor>& in) { return coco::ops::l2_normalize(in[0]); }, {x});
  EXPECT_TRUE(report.ok) << report.worst;
}

TEST(L2NormOps, CudaMatchesCpu) {
  const std::vector<float> values = coco::testing::random_floats(7 * 45, 2, -3.0f, 3.0f);
  const std::vector<float> seed_grad = coco::testing::random_floats(7 * 45, 3);
  auto run = [&](Device device, DType dtype, const std::vector<float>& x_values, const std::vector<float>& dy_values) {
    Tensor x = Tensor::from_vector(x_values, Shape{7, 45}).to(dtype).to(device);
    x.set_requires_grad(true);
    coco::Tape tape;
    std::vector<double> y;
    {
      coco::Tape::Recording recording(tape);
      const Tensor out = coco::ops::l2_normalize(x);
      y = out.to_f64();
      tape.backward(out, Tensor::from_vector(dy_values, Shape{7, 45}).to(dtype).to(device));
    }
    return std::make_pair(y, x.grad().to_f64());
  };
  // f32: NMSE ~1e-14. bf16: outputs and gradients rounded once at 2^-8: NMSE ~5e-6.
  const auto cpu = run(Device::cpu, DType::f32, values, seed_grad);
  const auto cuda = run(Device::cuda, DType::f32, values, seed_grad);
  EXPECT_TRUE(coco::testing::matches_reference(cpu.first, cuda.first, 1e-10, "y f32"));
  EXPECT_TRUE(coco::testing::matches_reference(cpu.second, cuda.second, 1e-10, "dx f32"));
  const std::vector<float> x16 = coco::testing::round_through<__nv_bfloat16>(values);
  const std::vector<float> dy16 = coco::testing::round_through<__nv_bfloat16>(seed_grad);
  const auto cpu16 = run(Device::cpu, DType::f32, x16, dy16);
  const auto cuda16 = run(Device::cuda, DType::bf16, x16, dy16);
  EXPECT_TRUE(coco::testing::matches_reference(cpu16.first, cuda16.first, 2e-5, "y bf16"));
  EXPECT_TRUE(coco::testing::matches_reference(cpu16.second, cuda16.second, 2e-5, "dx bf16"));
}

TEST(L2NormOps, RejectsBadArguments) {
  const Tensor x = Tensor::from_vector(std::vector<double>(6, 1.0), Shape{2, 3});
  EXPECT_THROW(coco::ops::l2_normalize(x, 0.0), coco::TensorError);
  EXPECT_THROW(coco::ops::l2_normalize(Tensor::from_vector(std::vector<int32_t>(6, 1), Shape{2, 3})),
               coco::TensorError);
}

}  // namespace
