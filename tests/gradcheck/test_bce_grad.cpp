// BCE-with-logits gradients: f64 finite differences of the CPU kernels (both label conventions,
// with and without a mask), through ops::bce_with_logits on the tape, and the op on CUDA (emulated)
// against the op on the CPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/losses.h"
#include "engine/tape.h"
#include "kernels/bce.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;
using coco::kernels::BceLabels;

struct Flags {
  std::vector<uint8_t> replaced, valid;
};

Flags make_flags(size_t n, unsigned seed) {
  const std::vector<double> r = coco::gradcheck_weights(n, seed), v = coco::gradcheck_weights(n, seed + 1);
  Flags f;
  for (size_t i = 0; i < n; ++i) {
    f.replaced.push_back(r[i] > 0.3 ? 1 : 0);
    f.valid.push_back(v[i] > -0.6 ? 1 : 0);
  }
  return f;
}

void check_kernel_gradient(size_t n, BceLabels labels, bool masked, unsigned seed) {
  std::vector<double> logits = coco::gradcheck_weights(n, seed);
  for (double& v : logits) v *= 5.0;
  const Flags flags = make_flags(n, seed + 7);
  const uint8_t* valid = masked ? flags.valid.data() : nullptr;
  const double dloss = 1.3;
  double value = 0.0;
  int32_t counts[coco::kernels::kBceCounts];
  std::vector<double> dlogits(n);
  coco::kernels::cpu::bce_with_logits_forward(logits.data(), flags.replaced.data(), valid, static_cast<int64_t>(n),
                                              labels, &value, counts);
  coco::kernels::cpu::bce_with_logits_backward(logits.data(), flags.replaced.data(), valid, counts,
                                               static_cast<int64_t>(n), labels, &dloss, dlogits.data());
  auto loss = [&] {
    double v = 0.0;
    int32_t k[coco::kernels::kBceCounts];
    coco::kernels::cpu::bce_with_logits_forward(logits.data(), flags.replaced.data(), valid, static_cast<int64_t>(n),
                                                labels, &v, k);
    return dloss * v;
  };
  const coco::GradcheckReport report = coco::gradcheck_raw({{"logits", logits, dlogits}}, loss);
  EXPECT_TRUE(report.ok) << "n=" << n << " labels=" << static_cast<int>(labels) << (masked ? " masked" : "") << ": "
                         << report.worst;
}

TEST(BceGradcheck, KernelBackward) {
  unsigned seed = 3;
  for (size_t n : {1, 7, 33, 130})
    for (BceLabels labels : {BceLabels::replaced_is_one, BceLabels::original_is_one})
      for (bool masked : {false, true}) check_kernel_gradient(n, labels, masked && n > 1, seed += 2);
}

TEST(BceGradcheck, OpOnTheTape) {
  for (BceLabels labels : {BceLabels::replaced_is_one, BceLabels::original_is_one}) {
    const Flags flags = make_flags(24, 5);
    Tensor logits = Tensor::from_vector(coco::gradcheck_weights(24, 9), Shape{4, 6});
    logits.set_requires_grad(true).set_name("logits");
    const Tensor replaced = Tensor::from_vector(flags.replaced, Shape{4, 6});
    const Tensor valid = Tensor::from_vector(flags.valid, Shape{24});
    const coco::GradcheckReport report = coco::gradcheck(
        [&](const std::vector<Tensor>& in) {
          return coco::ops::bce_with_logits(in[0], replaced, {valid, labels}).loss;
        },
        {logits});
    EXPECT_TRUE(report.ok) << report.worst;
  }
}

TEST(BceGradcheck, RejectsMismatchedFlags) {
  const Tensor logits = Tensor::from_vector(std::vector<double>(6, 0.5), Shape{6});
  EXPECT_THROW(coco::ops::bce_with_logits(logits, Tensor::from_vector(std::vector<uint8_t>(5, 1), Shape{5})),
               coco::TensorError);
  EXPECT_THROW(coco::ops::bce_with_logits(logits, Tensor::from_vector(std::vector<int32_t>(6, 1), Shape{6})),
               coco::TensorError);
  const Tensor replaced = Tensor::from_vector(std::vector<uint8_t>(6, 1), Shape{6});
  EXPECT_THROW(
      coco::ops::bce_with_logits(logits, replaced, {Tensor::from_vector(std::vector<uint8_t>(3, 1), Shape{3})}),
      coco::TensorError);
}

TEST(BceOps, CudaMatchesCpu) {
  const size_t n = 517;
  const std::vector<float> values = coco::testing::random_floats(n, 11, -8.0f, 8.0f);
  const Flags flags = make_flags(n, 12);
  struct Out {
    std::vector<double> loss, grad;
    int64_t correct, count;
  };
  auto run = [&](Device device, DType dtype, BceLabels labels, const std::vector<float>& logit_values) {
    Tensor logits = Tensor::from_vector(logit_values, Shape{11, 47}).to(dtype).to(device);
    logits.set_requires_grad(true);
    if (dtype != DType::f32) logits.set_grad_dtype(DType::f32);
    const Tensor replaced = Tensor::from_vector(flags.replaced, Shape{11, 47}).to(device);
    const Tensor valid = Tensor::from_vector(flags.valid, Shape{11, 47}).to(device);
    coco::Tape tape;
    Out out;
    {
      coco::Tape::Recording recording(tape);
      const coco::ops::LossResult result = coco::ops::bce_with_logits(logits, replaced, {valid, labels});
      out.loss = result.loss.to_f64();
      out.correct = result.correct();
      out.count = result.count();
      tape.backward(coco::ops::scale(result.loss, 50.0));
    }
    out.grad = logits.grad().to_f64();
    return out;
  };
  const std::vector<float> rounded = coco::testing::round_through<__nv_bfloat16>(values);
  for (BceLabels labels : {BceLabels::replaced_is_one, BceLabels::original_is_one}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      // The CPU reference sees the values the CUDA run sees (bf16-rounded for bf16). Loss: f32 sums,
      // NMSE ~1e-13. Gradient: f32 NMSE ~1e-13; bf16 one rounding at 2^-8, NMSE ~5e-6.
      const std::vector<float>& input = dtype == DType::f32 ? values : rounded;
      const Out reference = run(Device::cpu, DType::f32, labels, input);
      const Out cuda = run(Device::cuda, dtype, labels, input);
      EXPECT_TRUE(coco::testing::matches_reference(reference.loss, cuda.loss, 1e-10, "loss"));
      EXPECT_TRUE(
          coco::testing::matches_reference(reference.grad, cuda.grad, dtype == DType::f32 ? 1e-10 : 2e-5, "dlogits"));
      EXPECT_EQ(reference.correct, cuda.correct);
      EXPECT_EQ(reference.count, cuda.count);
    }
  }
}

}  // namespace
