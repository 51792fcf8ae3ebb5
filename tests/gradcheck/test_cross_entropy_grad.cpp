// Cross-entropy gradients: f64 finite differences of the CPU kernels (ignore rows, weights, mean and
// sum, the gradient written by the forward), then through ops::cross_entropy on the tape, and the op
// on CUDA (emulated) against the op on the CPU, forward and backward.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/losses.h"
#include "engine/tape.h"
#include "kernels/cross_entropy.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;
using coco::kernels::LossReduction;

constexpr int32_t kIgnore = -100;

struct Case {
  int64_t rows, vocab;
  bool weighted;
  LossReduction reduction;
};

std::string label(const Case& c) {
  return "N=" + std::to_string(c.rows) + " V=" + std::to_string(c.vocab) + (c.weighted ? " weighted" : "") +
         (c.reduction == LossReduction::mean ? " mean" : " sum");
}

std::vector<int32_t> make_targets(const Case& c, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(c.vocab - 1));
  std::vector<int32_t> targets(static_cast<size_t>(c.rows));
  for (int64_t i = 0; i < c.rows; ++i) targets[static_cast<size_t>(i)] = (i % 4 == 2) ? kIgnore : pick(generator);
  return targets;
}

std::vector<double> make_weights(const Case& c, unsigned seed) {
  std::vector<double> w = coco::gradcheck_weights(static_cast<size_t>(c.rows), seed);
  for (double& v : w) v = 0.2 + 0.5 * (v + 1.0);  // in [0.2, 1.2)
  return w;
}

void check_kernel_gradient(const Case& c, bool fused, unsigned seed) {
  const size_t n = static_cast<size_t>(c.rows * c.vocab), rows = static_cast<size_t>(c.rows);
  std::vector<double> logits = coco::gradcheck_weights(n, seed);
  for (double& v : logits) v *= 3.0;
  const std::vector<int32_t> targets = make_targets(c, seed + 1);
  const std::vector<double> weights = make_weights(c, seed + 2);
  const double* w = c.weighted ? weights.data() : nullptr;
  const double dloss = 0.7;
  std::vector<double> row_loss(rows), row_lse(rows), dlogits(n);
  int32_t counts[coco::kernels::kCrossEntropyCounts];
  double loss_value = 0.0;
  if (fused) {
    coco::kernels::cpu::cross_entropy_forward(logits.data(), targets.data(), w, c.rows, c.vocab, kIgnore, c.reduction,
                                              &loss_value, row_loss.data(), row_lse.data(), counts, dlogits.data(),
                                              dloss);
  } else {
    coco::kernels::cpu::cross_entropy_forward(logits.data(), targets.data(), w, c.rows, c.vocab, kIgnore, c.reduction,
                                              &loss_value, row_loss.data(), row_lse.data(), counts);
    coco::kernels::cpu::cross_entropy_backward(logits.data(), targets.data(), w, row_lse.data(), counts, c.rows,
                                               c.vocab, kIgnore, c.reduction, &dloss, dlogits.data());
  }
  auto loss = [&] {
    std::vector<double> rl(rows), lse(rows);
    int32_t k[coco::kernels::kCrossEntropyCounts];
    double value = 0.0;
    coco::kernels::cpu::cross_entropy_forward(logits.data(), targets.data(), w, c.rows, c.vocab, kIgnore, c.reduction,
                                              &value, rl.data(), lse.data(), k);
    return dloss * value;
  };
  const coco::GradcheckReport report = coco::gradcheck_raw({{"logits", logits, dlogits}}, loss);
  EXPECT_TRUE(report.ok) << label(c) << (fused ? " fused" : "") << ": " << report.worst;
  EXPECT_EQ(report.elements_checked, static_cast<long long>(n));
}

const Case kCases[] = {{3, 1, false, LossReduction::mean},
                       {4, 7, true, LossReduction::mean},
                       {5, 13, false, LossReduction::sum},
                       {2, 50, true, LossReduction::sum},
                       {6, 33, true, LossReduction::mean}};

TEST(CrossEntropyGradcheck, KernelBackward) {
  unsigned seed = 10;
  for (const Case& c : kCases) check_kernel_gradient(c, false, seed += 3);
}

TEST(CrossEntropyGradcheck, KernelGradientWrittenByTheForward) {
  unsigned seed = 40;
  for (const Case& c : kCases) check_kernel_gradient(c, true, seed += 3);
}

Tensor f64_tensor(const std::vector<double>& values, const Shape& shape, const char* name) {
  Tensor t = Tensor::from_vector(values, shape);
  t.set_requires_grad(true).set_name(name);
  return t;
}

TEST(CrossEntropyGradcheck, OpOnTheTape) {
  for (const Case& c : kCases) {
    for (bool fused : {false, true}) {
      const size_t n = static_cast<size_t>(c.rows * c.vocab);
      std::vector<double> values = coco::gradcheck_weights(n, 5);
      for (double& v : values) v *= 2.0;
      Tensor logits = f64_tensor(values, Shape{c.rows, c.vocab}, "logits");
      const Tensor targets = Tensor::from_vector(make_targets(c, 6), Shape{c.rows});
      const Tensor weights = Tensor::from_vector(make_weights(c, 7), Shape{c.rows});
      const coco::ops::CrossEntropyOptions options{kIgnore, c.weighted ? weights : Tensor(), c.reduction, fused};
      const coco::GradcheckReport report = coco::gradcheck(
          [&](const std::vector<Tensor>& in) { return coco::ops::cross_entropy(in[0], targets, options).loss; },
          {logits});
      EXPECT_TRUE(report.ok) << label(c) << (fused ? " fused" : "") << ": " << report.worst;
    }
  }
}

TEST(CrossEntropyGradcheck, WeightsAreAStopGradientInput) {
  const Case c{4, 9, true, LossReduction::mean};
  Tensor logits = f64_tensor(coco::gradcheck_weights(36, 3), Shape{4, 9}, "logits");
  Tensor weights = f64_tensor(make_weights(c, 4), Shape{4}, "weights");
  const Tensor targets = Tensor::from_vector(make_targets(c, 5), Shape{4});
  coco::Tape tape;
  {
    coco::Tape::Recording recording(tape);
    const coco::ops::LossResult result = coco::ops::cross_entropy(logits, targets, {kIgnore, weights});
    tape.backward(result.loss);
  }
  EXPECT_TRUE(logits.grad().defined());
  EXPECT_FALSE(weights.grad().defined());
}

TEST(CrossEntropyGradcheck, InPlaceGradientWhenTheTapeHoldsTheOnlyReference) {
  // logits = 1 * x is an intermediate the caller drops before backward: the backward may overwrite
  // it. The gradient must equal the one computed with the caller still holding the logits.
  const Case c{5, 11, true, LossReduction::mean};
  const std::vector<double> values = coco::gradcheck_weights(55, 8);
  const Tensor targets = Tensor::from_vector(make_targets(c, 9), Shape{5});
  const Tensor weights = Tensor::from_vector(make_weights(c, 10), Shape{5});
  std::vector<double> grads[2];
  for (int drop = 0; drop < 2; ++drop) {
    Tensor x = f64_tensor(values, Shape{5, 11}, "x");
    coco::Tape tape;
    Tensor kept;
    {
      coco::Tape::Recording recording(tape);
      Tensor logits = coco::ops::scale(x, 1.0);
      const Tensor loss = coco::ops::cross_entropy(logits, targets, {kIgnore, weights}).loss;
      if (!drop) kept = logits;
      logits = Tensor();
      tape.backward(loss);
    }
    grads[drop] = x.grad().to_f64();
    if (!drop) {
      EXPECT_EQ(kept.to_f64(), values);  // a held tensor is never overwritten
    }
  }
  EXPECT_EQ(grads[0], grads[1]);
}

TEST(CrossEntropyGradcheck, InvalidTargetsAreRejected) {
  const Tensor logits = Tensor::from_vector(coco::gradcheck_weights(12, 1), Shape{3, 4});
  const Tensor bad = Tensor::from_vector(std::vector<int32_t>{0, 4, kIgnore}, Shape{3});
  EXPECT_THROW(coco::ops::cross_entropy(logits, bad), coco::TensorError);
  const Tensor short_targets = Tensor::from_vector(std::vector<int32_t>{0, 1}, Shape{2});
  EXPECT_THROW(coco::ops::cross_entropy(logits, short_targets), coco::TensorError);
  const Tensor cuda_logits = logits.to(DType::f32).to(Device::cuda);
  EXPECT_THROW(coco::ops::cross_entropy(cuda_logits, bad.to(Device::cuda)), coco::TensorError);
  EXPECT_THROW(coco::ops::cross_entropy(cuda_logits, bad), coco::TensorError);  // device mismatch
}

// The op on CUDA (emulated) vs the op on the CPU in f32: loss, counts and dlogits.
void check_cross_backend(DType cuda_dtype, bool fused, double grad_threshold) {
  const Case c{7, 301, true, LossReduction::mean};
  const size_t n = static_cast<size_t>(c.rows * c.vocab);
  std::vector<float> values = coco::testing::random_floats(n, 3, -4.0f, 4.0f);
  values = cuda_dtype == DType::bf16 ? coco::testing::round_through<__nv_bfloat16>(values) : values;
  const std::vector<int32_t> targets = make_targets(c, 4);
  std::vector<float> weights(static_cast<size_t>(c.rows));
  for (size_t i = 0; i < weights.size(); ++i) weights[i] = 0.25f + 0.1f * static_cast<float>(i);

  struct Out {
    std::vector<double> loss, grad;
    int64_t correct, count;
  };
  auto run = [&](Device device, DType dtype) {
    Tensor logits = Tensor::from_vector(values, Shape{c.rows, c.vocab}).to(dtype).to(device);
    logits.set_requires_grad(true);
    if (dtype != DType::f32) logits.set_grad_dtype(DType::f32);
    const Tensor t = Tensor::from_vector(targets, Shape{c.rows}).to(device);
    const Tensor w = Tensor::from_vector(weights, Shape{c.rows}).to(device);
    coco::Tape tape;
    Out out;
    {
      coco::Tape::Recording recording(tape);
      const coco::ops::LossResult result = coco::ops::cross_entropy(logits, t, {kIgnore, w, c.reduction, fused});
      out.loss = result.loss.to_f64();
      out.correct = result.correct();
      out.count = result.count();
      tape.backward(coco::ops::scale(result.loss, 1.5));
    }
    out.grad = logits.grad().to_f64();
    return out;
  };
  const Out cpu = run(Device::cpu, DType::f32);
  const Out cuda = run(Device::cuda, cuda_dtype);
  // The loss is f32 on both sides with sums over <= 301 terms: NMSE ~1e-13.
  EXPECT_TRUE(coco::testing::matches_reference(cpu.loss, cuda.loss, 1e-10, "loss"));
  EXPECT_TRUE(coco::testing::matches_reference(cpu.grad, cuda.grad, grad_threshold, "dlogits"));
  EXPECT_EQ(cpu.correct, cuda.correct);
  EXPECT_EQ(cpu.count, cuda.count);
  EXPECT_EQ(cpu.count, 5);  // rows 2 and 6 ignored
}

TEST(CrossEntropyOps, CudaMatchesCpu) {
  // f32 gradient: NMSE ~1e-13. bf16 gradient: computed in f32 and rounded once to bf16, then
  // converted to the f32 gradient buffer: unit roundoff 2^-8, NMSE ~5e-6. The fused bf16 gradient
  // is rounded twice (written by the forward, scaled by the backward): NMSE ~1e-5.
  check_cross_backend(DType::f32, false, 1e-10);
  check_cross_backend(DType::f32, true, 1e-10);
  check_cross_backend(DType::bf16, false, 2e-5);
  check_cross_backend(DType::bf16, true, 4e-5);
}

}  // namespace
