// Permute gradients: f64 finite differences of the CPU split/merge kernels, the ops on the tape
// (split_heads, merge_heads, split_qkv with some outputs unused), and the ops on CUDA (emulated)
// against the CPU (bitwise: pure data movement).
#include <gtest/gtest.h>

#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/permute.h"
#include "engine/tape.h"
#include "kernels/permute.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;
using coco::kernels::HeadShape;

TEST(PermuteGradcheck, KernelSplitBackwardIsMerge) {
  for (const HeadShape s : {HeadShape{1, 1, 1, 1}, HeadShape{2, 7, 3, 2}, HeadShape{1, 5, 2, 3}}) {
    const size_t n = static_cast<size_t>(s.numel());
    std::vector<double> x = coco::gradcheck_weights(n, 1), w = coco::gradcheck_weights(n, 2);
    std::vector<double> dx(n);
    coco::kernels::cpu::merge_heads(dx.data(), w.data(), s);
    auto loss = [&] {
      std::vector<double> y(n);
      coco::kernels::cpu::split_heads(y.data(), x.data(), s);
      double total = 0.0;
      for (size_t i = 0; i < n; ++i) total += y[i] * w[i];
      return total;
    };
    EXPECT_TRUE(coco::gradcheck_raw({{"x", x, dx}}, loss).ok);

    std::vector<double> qkv = coco::gradcheck_weights(3 * n, 3), wq = coco::gradcheck_weights(n, 4),
                        wk = coco::gradcheck_weights(n, 5), wv = coco::gradcheck_weights(n, 6);
    std::vector<double> dqkv(3 * n);
    coco::kernels::cpu::merge_qkv(dqkv.data(), wq.data(), wk.data(), wv.data(), s);
    auto qkv_loss = [&] {
      std::vector<double> q(n), k(n), v(n);
      coco::kernels::cpu::split_qkv(q.data(), k.data(), v.data(), qkv.data(), s);
      double total = 0.0;
      for (size_t i = 0; i < n; ++i) total += q[i] * wq[i] + k[i] * wk[i] + v[i] * wv[i];
      return total;
    };
    const coco::GradcheckReport report = coco::gradcheck_raw({{"qkv", qkv, dqkv}}, qkv_loss);
    EXPECT_TRUE(report.ok) << report.worst;
  }
}

TEST(PermuteGradcheck, OpsOnTheTape) {
  Tensor x = Tensor::from_vector(coco::gradcheck_weights(2 * 3 * 6, 1), Shape{2, 3, 6});
  x.set_requires_grad(true).set_name("x");
  coco::GradcheckReport report = coco::gradcheck(
      [](const std::vector<Tensor>& in) {
        return coco::ops::merge_heads(
            coco::ops::mul(coco::ops::split_heads(in[0], 3), coco::ops::split_heads(in[0], 3)));
      },
      {x});
  EXPECT_TRUE(report.ok) << "split/merge: " << report.worst;
  Tensor qkv = Tensor::from_vector(coco::gradcheck_weights(2 * 3 * 12, 2), Shape{2, 3, 12});
  qkv.set_requires_grad(true).set_name("qkv");
  report = coco::gradcheck(
      [](const std::vector<Tensor>& in) {
        auto [q, k, v] = coco::ops::split_qkv(in[0], 2);
        return coco::ops::add(coco::ops::mul(q, k), v);
      },
      {qkv});
  EXPECT_TRUE(report.ok) << "split_qkv: " << report.worst;
  // Only q used: k and v receive zero gradient.
  report = coco::gradcheck(
      [](const std::vector<Tensor>& in) {
        auto [q, k, v] = coco::ops::split_qkv(in[0], 2);
        return coco::ops::mul(q, q);
      },
      {qkv});
  EXPECT_TRUE(report.ok) << "split_qkv (q only): " << report.worst;
}

std::pair<std::vector<double>, std::vector<double>> run_qkv(Device device, DType dtype,
                                                            const std::vector<float>& values,
                                                            const std::vector<float>& seed) {
  Tensor qkv = Tensor::from_vector(values, Shape{2, 7, 3 * 3 * 5}).to(dtype).to(device);
  qkv.set_requires_grad(true);
  coco::Tape tape;
  std::vector<double> out;
  {
    coco::Tape::Recording recording(tape);
    auto [q, k, v] = coco::ops::split_qkv(qkv, 3);
    const Tensor merged = coco::ops::merge_heads(coco::ops::add(coco::ops::mul(q, k), v));  // (2, 7, 15)
    out = merged.to_f64();
    tape.backward(merged, Tensor::from_vector(seed, merged.shape()).to(dtype).to(device));
  }
  return {out, qkv.grad().to_f64()};
}

TEST(PermuteOps, CudaMatchesCpu) {
  const auto values = coco::testing::round_through<__nv_bfloat16>(coco::testing::random_floats(2 * 7 * 45, 1));
  const auto seed = coco::testing::round_through<__nv_bfloat16>(coco::testing::random_floats(2 * 7 * 15, 2));
  const auto cpu = run_qkv(Device::cpu, DType::f32, values, seed);
  const auto cuda = run_qkv(Device::cuda, DType::f32, values, seed);
  EXPECT_EQ(cpu.first, cuda.first);
  EXPECT_EQ(cpu.second, cuda.second);
  const auto cpu64 = run_qkv(Device::cpu, DType::f64, values, seed);
  const auto cuda64 = run_qkv(Device::cuda, DType::f64, values, seed);
  EXPECT_EQ(cpu64.second, cuda64.second);
}

TEST(PermuteOps, RejectsBadShapes) {
  EXPECT_THROW(coco::ops::split_heads(Tensor::zeros(Shape{2, 3, 7}, DType::f32), 2), coco::TensorError);
  EXPECT_THROW(coco::ops::split_heads(Tensor::zeros(Shape{2, 6}, DType::f32), 2), coco::TensorError);
  EXPECT_THROW(coco::ops::split_qkv(Tensor::zeros(Shape{1, 2, 8}, DType::f32), 2), coco::TensorError);
  EXPECT_THROW(coco::ops::merge_heads(Tensor::zeros(Shape{1, 2, 8}, DType::f32)), coco::TensorError);
  EXPECT_THROW(coco::ops::split_heads(Tensor::zeros(Shape{1, 2, 8}, DType::i32), 2), coco::TensorError);
}

}  // namespace
