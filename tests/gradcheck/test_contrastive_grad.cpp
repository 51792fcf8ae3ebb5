// Contrastive loss gradients: f64 finite differences of the CPU kernels (InfoNCE including theta,
// NT-Xent), through the ops on the tape composed with l2_normalize as the objective uses them, and
// the ops on CUDA (emulated) against the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/losses.h"
#include "engine/tape.h"
#include "kernels/contrastive.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;
using coco::kernels::ContrastiveKind;

struct Case {
  int64_t batch, dim;
};

std::vector<double> saved_buffer(ContrastiveKind kind, int64_t batch) {
  return std::vector<double>(static_cast<size_t>(coco::kernels::contrastive_saved_size(kind, batch)));
}

void check_info_nce(const Case& c, double theta_value, unsigned seed) {
  const size_t n = static_cast<size_t>(c.batch * c.dim);
  std::vector<double> a = coco::gradcheck_weights(n, seed), b = coco::gradcheck_weights(n, seed + 1);
  std::vector<double> theta = {theta_value};
  const double dloss = 0.9;
  std::vector<double> saved = saved_buffer(ContrastiveKind::info_nce, c.batch), da(n), db(n), dtheta(1);
  double value = 0.0;
  int32_t counts[coco::kernels::kContrastiveCounts];
  coco::kernels::cpu::info_nce_forward(a.data(), b.data(), theta.data(), c.batch, c.dim, &value, saved.data(), counts);
  coco::kernels::cpu::info_nce_backward(a.data(), b.data(), theta.data(), saved.data(), c.batch, c.dim, &dloss,
                                        da.data(), db.data(), dtheta.data());
  auto loss = [&] {
    std::vector<double> s = saved_buffer(ContrastiveKind::info_nce, c.batch);
    double v = 0.0;
    int32_t k[coco::kernels::kContrastiveCounts];
    coco::kernels::cpu::info_nce_forward(a.data(), b.data(), theta.data(), c.batch, c.dim, &v, s.data(), k);
    return dloss * v;
  };
  const coco::GradcheckReport report =
      coco::gradcheck_raw({{"a", a, da}, {"b", b, db}, {"theta", theta, dtheta}}, loss);
  EXPECT_TRUE(report.ok) << "info_nce B=" << c.batch << " D=" << c.dim << " theta=" << theta_value << ": "
                         << report.worst;
}

void check_nt_xent(const Case& c, double tau, unsigned seed) {
  const size_t n = static_cast<size_t>(c.batch * c.dim);
  std::vector<double> a = coco::gradcheck_weights(n, seed), b = coco::gradcheck_weights(n, seed + 1);
  const double dloss = 1.1;
  std::vector<double> saved = saved_buffer(ContrastiveKind::nt_xent, c.batch), da(n), db(n);
  double value = 0.0;
  int32_t counts[coco::kernels::kContrastiveCounts];
  coco::kernels::cpu::nt_xent_forward(a.data(), b.data(), c.batch, c.dim, tau, &value, saved.data(), counts);
  coco::kernels::cpu::nt_xent_backward(a.data(), b.data(), saved.data(), c.batch, c.dim, tau, &dloss, da.data(),
                                       db.data());
  auto loss = [&] {
    std::vector<double> s = saved_buffer(ContrastiveKind::nt_xent, c.batch);
    double v = 0.0;
    int32_t k[coco::kernels::kContrastiveCounts];
    coco::kernels::cpu::nt_xent_forward(a.data(), b.data(), c.batch, c.dim, tau, &v, s.data(), k);
    return dloss * v;
  };
  const coco::GradcheckReport report = coco::gradcheck_raw({{"a", a, da}, {"b", b, db}}, loss);
  EXPECT_TRUE(report.ok) << "nt_xent B=" << c.batch << " D=" << c.dim << " tau=" << tau << ": " << report.worst;
}

const Case kCases[] = {{1, 3}, {2, 5}, {3, 7}, {5, 4}, {8, 9}};

TEST(ContrastiveGradcheck, InfoNceKernelIncludingTheta) {
  unsigned seed = 1;
  for (const Case& c : kCases)
    for (double theta : {1.0, -0.5, 2.0}) check_info_nce(c, theta, seed += 2);
}

TEST(ContrastiveGradcheck, NtXentKernel) {
  unsigned seed = 100;
  for (const Case& c : kCases)
    for (double tau : {1.0, 0.3}) check_nt_xent(c, tau, seed += 2);
}

Tensor input(const std::vector<double>& values, const Shape& shape, const char* name) {
  Tensor t = Tensor::from_vector(values, shape);
  t.set_requires_grad(true).set_name(name);
  return t;
}

TEST(ContrastiveGradcheck, InfoNceOfNormalisedViewsOnTheTape) {
  // The `lucidrains` composition: l2-normalise both CLS vectors, then InfoNCE with a learnable theta.
  Tensor a = input(coco::gradcheck_weights(4 * 6, 7), Shape{4, 6}, "a");
  Tensor b = input(coco::gradcheck_weights(4 * 6, 8), Shape{4, 6}, "b");
  Tensor theta = input({1.0}, Shape{1}, "theta");
  const coco::GradcheckReport report = coco::gradcheck(
      [](const std::vector<Tensor>& in) {
        return coco::ops::info_nce(coco::ops::l2_normalize(in[0]), coco::ops::l2_normalize(in[1]), in[2]).loss;
      },
      {a, b, theta});
  EXPECT_TRUE(report.ok) << report.worst;
}

TEST(ContrastiveGradcheck, NtXentOfNormalisedViewsOnTheTape) {
  Tensor a = input(coco::gradcheck_weights(3 * 5, 9), Shape{3, 5}, "a");
  Tensor b = input(coco::gradcheck_weights(3 * 5, 10), Shape{3, 5}, "b");
  const coco::GradcheckReport report = coco::gradcheck(
      [](const std::vector<Tensor>& in) {
        return coco::ops::nt_xent(coco::ops::l2_normalize(in[0]), coco::ops::l2_normalize(in[1]), 0.5).loss;
      },
      {a, b});
  EXPECT_TRUE(report.ok) << report.worst;
}

TEST(ContrastiveGradcheck, ThetaAloneGetsItsGradient) {
  // Only theta requires grad: the op still records, and dtheta matches a finite difference.
  // b is a noisy copy of a, so the positives dominate and the loss depends clearly on theta.
  const std::vector<double> a_values = coco::gradcheck_weights(12, 1), noise = coco::gradcheck_weights(12, 2);
  std::vector<double> b_values(12);
  for (size_t i = 0; i < 12; ++i) b_values[i] = a_values[i] + 0.3 * noise[i];
  const Tensor a = Tensor::from_vector(a_values, Shape{3, 4});
  const Tensor b = Tensor::from_vector(b_values, Shape{3, 4});
  Tensor theta = input({0.3}, Shape{}, "theta");
  const coco::GradcheckReport report =
      coco::gradcheck([&](const std::vector<Tensor>& in) { return coco::ops::info_nce(a, b, in[0]).loss; }, {theta});
  EXPECT_TRUE(report.ok) << report.worst;
  EXPECT_EQ(report.elements_checked, 1);
  // The gradient is large enough for the check to mean something.
  Tensor theta_again = input({0.3}, Shape{}, "theta");
  coco::Tape tape;
  {
    coco::Tape::Recording recording(tape);
    tape.backward(coco::ops::info_nce(a, b, theta_again).loss);
  }
  EXPECT_GT(std::fabs(theta_again.grad().item()), 0.05);
}

TEST(ContrastiveOps, RejectsBadArguments) {
  const Tensor a = Tensor::from_vector(std::vector<double>(6, 0.5), Shape{2, 3});
  const Tensor b3 = Tensor::from_vector(std::vector<double>(9, 0.5), Shape{3, 3});
  const Tensor theta = Tensor::from_vector(std::vector<double>{1.0}, Shape{1});
  EXPECT_THROW(coco::ops::info_nce(a, b3, theta), coco::TensorError);
  EXPECT_THROW(coco::ops::info_nce(a, a, Tensor::from_vector(std::vector<double>{1.0, 2.0}, Shape{2})),
               coco::TensorError);
  EXPECT_THROW(coco::ops::nt_xent(a, a, 0.0), coco::TensorError);
  EXPECT_THROW(coco::ops::nt_xent(a, Tensor::from_vector(std::vector<double>(6, 0.5), Shape{6}), 1.0),
               coco::TensorError);
}

struct Out {
  std::vector<double> loss, da, db, dtheta;
  int64_t correct = 0, count = 0;
};

Out run_op(bool info, Device device, DType dtype, const std::vector<float>& a_values,
           const std::vector<float>& b_values, const Case& c) {
  Tensor a = Tensor::from_vector(a_values, Shape{c.batch, c.dim}).to(dtype).to(device);
  Tensor b = Tensor::from_vector(b_values, Shape{c.batch, c.dim}).to(dtype).to(device);
  Tensor theta = Tensor::from_vector(std::vector<float>{1.0f}, Shape{1}).to(device);
  for (Tensor* t : {&a, &b, &theta}) t->set_requires_grad(true);
  if (dtype != DType::f32) {
    a.set_grad_dtype(DType::f32);
    b.set_grad_dtype(DType::f32);
  }
  coco::Tape tape;
  Out out;
  {
    coco::Tape::Recording recording(tape);
    const Tensor na = coco::ops::l2_normalize(a), nb = coco::ops::l2_normalize(b);
    const coco::ops::LossResult result = info ? coco::ops::info_nce(na, nb, theta) : coco::ops::nt_xent(na, nb, 0.7);
    out.loss = result.loss.to_f64();
    out.correct = result.correct();
    out.count = result.count();
    tape.backward(coco::ops::scale(result.loss, 2.0));
  }
  out.da = a.grad().to_f64();
  out.db = b.grad().to_f64();
  if (info) out.dtheta = theta.grad().to_f64();
  return out;
}

TEST(ContrastiveOps, CudaMatchesCpu) {
  const Case c{11, 37};
  const size_t n = static_cast<size_t>(c.batch * c.dim);
  const std::vector<float> a = coco::testing::random_floats(n, 21), b = coco::testing::random_floats(n, 22);
  for (bool info : {true, false}) {
    // f32: NMSE ~1e-13 for the loss and every gradient.
    const Out cpu = run_op(info, Device::cpu, DType::f32, a, b, c);
    const Out cuda = run_op(info, Device::cuda, DType::f32, a, b, c);
    EXPECT_TRUE(coco::testing::matches_reference(cpu.loss, cuda.loss, 1e-10, "loss"));
    EXPECT_TRUE(coco::testing::matches_reference(cpu.da, cuda.da, 1e-10, "da"));
    EXPECT_TRUE(coco::testing::matches_reference(cpu.db, cuda.db, 1e-10, "db"));
    EXPECT_TRUE(coco::testing::matches_reference(cpu.dtheta, cuda.dtheta, 1e-10, "dtheta"));
    EXPECT_EQ(cpu.correct, cuda.correct);
    EXPECT_EQ(cuda.count, 2 * c.batch);
    // bf16 views: the normalised vectors and the view gradients are rounded to bf16 at each op
    // (l2_normalize output, contrastive gradient, l2_normalize gradient): a few roundings at 2^-8
    // and their propagation, NMSE ~1e-4 at most; the loss and dtheta are f32 sums of rounded
    // similarities: relative error ~1e-3, NMSE ~1e-6.
    const std::vector<float> a16 = coco::testing::round_through<__nv_bfloat16>(a);
    const std::vector<float> b16 = coco::testing::round_through<__nv_bfloat16>(b);
    const Out cpu16 = run_op(info, Device::cpu, DType::f32, a16, b16, c);
    const Out cuda16 = run_op(info, Device::cuda, DType::bf16, a16, b16, c);
    EXPECT_TRUE(coco::testing::matches_reference(cpu16.loss, cuda16.loss, 1e-5, "loss bf16"));
    EXPECT_TRUE(coco::testing::matches_reference(cpu16.da, cuda16.da, 3e-4, "da bf16"));
    EXPECT_TRUE(coco::testing::matches_reference(cpu16.db, cuda16.db, 3e-4, "db bf16"));
    EXPECT_TRUE(coco::testing::matches_reference(cpu16.dtheta, cuda16.dtheta, 1e-4, "dtheta bf16"));
  }
}

}  // namespace
