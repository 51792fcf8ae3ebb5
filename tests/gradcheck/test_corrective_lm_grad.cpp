// Corrective LM loss gradients: f64 finite differences of the CPU kernels composed as the op composes
// them (cross-entropy rows -> corrective LM loss; backward = cross-entropy backward with the row
// weights), then ops::corrective_lm_loss on the tape for both forms; the values against the formulas
// computed directly from the softmax; the code form against cross_entropy with weights P(replaced);
// the copy logits as a stop-gradient input; argument errors; and the op on CUDA (emulated) against
// the op on the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine/autograd_check.h"
#include "engine/gradcheck.h"
#include "engine/ops/elementwise.h"
#include "engine/ops/losses.h"
#include "engine/tape.h"
#include "kernels/corrective_lm.h"
#include "kernels/cross_entropy.h"
#include "tests/common/kernel_check.h"

namespace {

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tensor;
using coco::kernels::CorrectiveLmForm;
using coco::kernels::LossReduction;

constexpr int32_t kIgnore = -100;

struct Problem {
  int64_t rows, vocab;
  std::vector<double> logits, copy_logits;
  std::vector<int32_t> targets, samples;
};

// Every 4th row ignored; every other row "copied" (the sample equals the target).
Problem make_problem(int64_t rows, int64_t vocab, unsigned seed) {
  Problem p{rows,
            vocab,
            coco::gradcheck_weights(static_cast<size_t>(rows * vocab), seed),
            coco::gradcheck_weights(static_cast<size_t>(rows), seed + 1),
            {},
            {}};
  for (double& v : p.logits) v *= 3.0;
  for (double& v : p.copy_logits) v *= 4.0;
  std::mt19937 generator(seed + 2);
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t target = static_cast<int32_t>(generator() % vocab);
    p.targets.push_back(i % 4 == 3 ? kIgnore : target);
    p.samples.push_back(i % 2 == 0 ? target : static_cast<int32_t>((target + 1) % vocab));
  }
  return p;
}

const char* name_of(CorrectiveLmForm form) { return form == CorrectiveLmForm::code ? "code" : "paper"; }

// The loss through the CPU kernels, as the op computes it; row_weights receive d loss_i / d ce_i.
double kernel_loss(const Problem& p, const std::vector<double>& logits, CorrectiveLmForm form,
                   std::vector<double>* row_weights = nullptr, std::vector<double>* row_lse = nullptr,
                   std::vector<int32_t>* counts = nullptr) {
  const size_t rows = static_cast<size_t>(p.rows);
  std::vector<double> ce(rows), lse(rows), weights(rows);
  std::vector<int32_t> k(coco::kernels::kCrossEntropyCounts);
  double ce_mean = 0.0, loss = 0.0;
  coco::kernels::cpu::cross_entropy_forward(logits.data(), p.targets.data(), static_cast<const double*>(nullptr),
                                            p.rows, p.vocab, kIgnore, LossReduction::mean, &ce_mean, ce.data(),
                                            lse.data(), k.data());
  coco::kernels::cpu::corrective_lm_loss(ce.data(), p.copy_logits.data(), p.targets.data(), p.samples.data(), p.rows,
                                         kIgnore, form, &loss, weights.data());
  if (row_weights) *row_weights = weights;
  if (row_lse) *row_lse = lse;
  if (counts) *counts = k;
  return loss;
}

TEST(CorrectiveLmGradcheck, KernelComposition) {
  for (CorrectiveLmForm form : {CorrectiveLmForm::code, CorrectiveLmForm::paper}) {
    unsigned seed = 30;
    for (auto [rows, vocab] : {std::pair<int64_t, int64_t>{1, 5}, {4, 7}, {9, 13}, {6, 33}}) {
      Problem p = make_problem(rows, vocab, seed += 4);
      if (rows == 1) p.targets[0] = 2;  // the single row contributes
      std::vector<double> weights, lse;
      std::vector<int32_t> counts;
      kernel_loss(p, p.logits, form, &weights, &lse, &counts);
      const double dloss = 0.8;
      std::vector<double> dlogits(p.logits.size());
      coco::kernels::cpu::cross_entropy_backward(p.logits.data(), p.targets.data(), weights.data(), lse.data(),
                                                 counts.data(), p.rows, p.vocab, kIgnore, LossReduction::mean, &dloss,
                                                 dlogits.data());
      std::vector<double> logits = p.logits;
      const coco::GradcheckReport report =
          coco::gradcheck_raw({{"logits", logits, dlogits}}, [&] { return dloss * kernel_loss(p, logits, form); });
      EXPECT_TRUE(report.ok) << name_of(form) << " N=" << rows << " V=" << vocab << ": " << report.worst;
    }
  }
}

Tensor f64_tensor(const std::vector<double>& values, const Shape& shape, const char* name) {
  Tensor t = Tensor::from_vector(values, shape);
  t.set_requires_grad(true).set_name(name);
  return t;
}

TEST(CorrectiveLmGradcheck, OpOnTheTape) {
  for (CorrectiveLmForm form : {CorrectiveLmForm::code, CorrectiveLmForm::paper}) {
    const Problem p = make_problem(7, 11, 50);
    Tensor logits = f64_tensor(p.logits, Shape{p.rows, p.vocab}, "logits");
    const Tensor copy = Tensor::from_vector(p.copy_logits, Shape{p.rows, 1});
    const Tensor targets = Tensor::from_vector(p.targets, Shape{p.rows});
    const Tensor samples = Tensor::from_vector(p.samples, Shape{p.rows});
    const coco::GradcheckReport report = coco::gradcheck(
        [&](const std::vector<Tensor>& in) {
          return coco::ops::corrective_lm_loss(in[0], targets, copy, samples, {form, kIgnore}).loss;
        },
        {logits});
    EXPECT_TRUE(report.ok) << name_of(form) << ": " << report.worst;
  }
}

// The op's value against the formulas evaluated directly: p_t from the softmax, p1 = sigmoid(c).
TEST(CorrectiveLmOps, ValuesMatchTheFormulas) {
  const Problem p = make_problem(10, 9, 70);
  const Tensor logits = Tensor::from_vector(p.logits, Shape{p.rows, p.vocab});
  const Tensor copy = Tensor::from_vector(p.copy_logits, Shape{p.rows});
  const Tensor targets = Tensor::from_vector(p.targets, Shape{p.rows});
  const Tensor samples = Tensor::from_vector(p.samples, Shape{p.rows});
  double code = 0.0, paper = 0.0;
  int contributing = 0;
  for (int64_t i = 0; i < p.rows; ++i) {
    const int32_t t = p.targets[static_cast<size_t>(i)];
    if (t == kIgnore) continue;
    double z = 0.0;
    for (int64_t j = 0; j < p.vocab; ++j) z += std::exp(p.logits[static_cast<size_t>(i * p.vocab + j)]);
    const double p_t = std::exp(p.logits[static_cast<size_t>(i * p.vocab + t)]) / z;
    const double p1 = 1.0 / (1.0 + std::exp(-p.copy_logits[static_cast<size_t>(i)]));
    const bool copied = p.samples[static_cast<size_t>(i)] == t;
    code += (1.0 - p1) * -std::log(p_t);
    paper += -std::log(p1 * (copied ? 1.0 : 0.0) + (1.0 - p1) * p_t);
    ++contributing;
  }
  const coco::ops::LossResult code_result =
      coco::ops::corrective_lm_loss(logits, targets, copy, samples, {CorrectiveLmForm::code, kIgnore});
  const coco::ops::LossResult paper_result =
      coco::ops::corrective_lm_loss(logits, targets, copy, samples, {CorrectiveLmForm::paper, kIgnore});
  EXPECT_NEAR(code_result.loss.item(), code / contributing, 1e-12);
  EXPECT_NEAR(paper_result.loss.item(), paper / contributing, 1e-12);
  EXPECT_EQ(paper_result.count(), contributing);
  EXPECT_GT(paper_result.loss.item(), 0.0);
  // The mixture is at least the copy term, so the paper loss is below the replaced-only form's
  // -log(p0 p_t) wherever a row was copied: overall it differs from the code form.
  EXPECT_NE(code_result.loss.item(), paper_result.loss.item());
}

// The code form is cross_entropy with the stop-gradient row weights P(replaced) = 1 - sigmoid(c).
TEST(CorrectiveLmOps, CodeFormIsCrossEntropyWeightedByPReplaced) {
  const Problem p = make_problem(8, 12, 90);
  std::vector<double> weights;
  for (double c : p.copy_logits) weights.push_back(1.0 / (1.0 + std::exp(c)));
  std::vector<double> grads[2], losses;
  for (int variant = 0; variant < 2; ++variant) {
    Tensor logits = f64_tensor(p.logits, Shape{p.rows, p.vocab}, "logits");
    const Tensor targets = Tensor::from_vector(p.targets, Shape{p.rows});
    coco::Tape tape;
    {
      coco::Tape::Recording recording(tape);
      const Tensor loss =
          variant == 0
              ? coco::ops::corrective_lm_loss(logits, targets, Tensor::from_vector(p.copy_logits, Shape{p.rows}),
                                              Tensor::from_vector(p.samples, Shape{p.rows}),
                                              {CorrectiveLmForm::code, kIgnore})
                    .loss
              : coco::ops::cross_entropy(logits, targets, {kIgnore, Tensor::from_vector(weights, Shape{p.rows})}).loss;
      losses.push_back(loss.item());
      tape.backward(loss);
    }
    grads[variant] = logits.grad().to_f64();
  }
  EXPECT_NEAR(losses[0], losses[1], 1e-13);
  ASSERT_EQ(grads[0].size(), grads[1].size());
  for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_NEAR(grads[0][i], grads[1][i], 1e-14) << i;
}

// With no copied row the paper form is plain cross-entropy plus a constant: the same gradient.
TEST(CorrectiveLmOps, PaperFormOnReplacedRowsHasThePlainCrossEntropyGradient) {
  Problem p = make_problem(6, 10, 110);
  for (size_t i = 0; i < p.samples.size(); ++i) p.samples[i] = (p.targets[i] + 1 + 10) % 10;
  std::vector<double> grads[2];
  double paper_loss = 0.0, ce_loss = 0.0;
  for (int variant = 0; variant < 2; ++variant) {
    Tensor logits = f64_tensor(p.logits, Shape{p.rows, p.vocab}, "logits");
    const Tensor targets = Tensor::from_vector(p.targets, Shape{p.rows});
    coco::Tape tape;
    {
      coco::Tape::Recording recording(tape);
      const Tensor loss = variant == 0
                              ? coco::ops::corrective_lm_loss(
                                    logits, targets, Tensor::from_vector(p.copy_logits, Shape{p.rows}),
                                    Tensor::from_vector(p.samples, Shape{p.rows}), {CorrectiveLmForm::paper, kIgnore})
                                    .loss
                              : coco::ops::cross_entropy(logits, targets).loss;
      (variant == 0 ? paper_loss : ce_loss) = loss.item();
      tape.backward(loss);
    }
    grads[variant] = logits.grad().to_f64();
  }
  double softplus_mean = 0.0;
  int contributing = 0;
  for (size_t i = 0; i < p.targets.size(); ++i) {
    if (p.targets[i] == kIgnore) continue;
    softplus_mean += std::log1p(std::exp(p.copy_logits[i]));
    ++contributing;
  }
  EXPECT_NEAR(paper_loss, ce_loss + softplus_mean / contributing, 1e-12);
  for (size_t i = 0; i < grads[0].size(); ++i) EXPECT_NEAR(grads[0][i], grads[1][i], 1e-14) << i;
}

TEST(CorrectiveLmOps, CopyLogitsAreAStopGradientInput) {
  const Problem p = make_problem(5, 6, 130);
  Tensor logits = f64_tensor(p.logits, Shape{p.rows, p.vocab}, "logits");
  Tensor copy = f64_tensor(p.copy_logits, Shape{p.rows}, "copy");
  coco::Tape tape;
  {
    coco::Tape::Recording recording(tape);
    const Tensor loss =
        coco::ops::corrective_lm_loss(logits, Tensor::from_vector(p.targets, Shape{p.rows}), copy,
                                      Tensor::from_vector(p.samples, Shape{p.rows}), {CorrectiveLmForm::paper, kIgnore})
            .loss;
    tape.backward(loss);
  }
  EXPECT_TRUE(logits.grad().defined());
  EXPECT_FALSE(copy.grad().defined());
}

TEST(CorrectiveLmOps, BadArgumentsAreRejected) {
  const Problem p = make_problem(4, 5, 150);
  const Tensor logits = Tensor::from_vector(p.logits, Shape{4, 5});
  const Tensor targets = Tensor::from_vector(p.targets, Shape{4});
  const Tensor samples = Tensor::from_vector(p.samples, Shape{4});
  const Tensor copy = Tensor::from_vector(p.copy_logits, Shape{4});
  auto expect_error = [&](const Tensor& t, const Tensor& c, const Tensor& s, const std::string& needle) {
    try {
      coco::ops::corrective_lm_loss(logits, t, c, s, {CorrectiveLmForm::paper, kIgnore});
      ADD_FAILURE() << "expected TensorError containing '" << needle << "'";
    } catch (const coco::TensorError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error(targets, Tensor::from_vector(std::vector<double>{1.0, 2.0}, Shape{2}), samples, "copy logits");
  expect_error(targets, copy, Tensor::from_vector(std::vector<int32_t>{1, 2, 3}, Shape{3}), "samples");
  expect_error(targets, copy, Tensor::from_vector(std::vector<double>{1, 2, 3, 4}, Shape{4}), "samples must be i32");
  expect_error(Tensor::from_vector(std::vector<int32_t>{0, 9, 1, 2}, Shape{4}), copy, samples, "targets[1] = 9");
  expect_error(targets, copy.to(Device::cuda), samples, "corrective_lm_loss");
}

// The op on CUDA (emulated) vs the op on the CPU in f32, both forms: loss, counts and dlogits.
TEST(CorrectiveLmOps, CudaMatchesCpu) {
  const int64_t rows = 9, vocab = 301;
  std::vector<float> values = coco::testing::random_floats(static_cast<size_t>(rows * vocab), 3, -4.0f, 4.0f);
  const std::vector<float> copy_values = coco::testing::random_floats(static_cast<size_t>(rows), 4, -5.0f, 5.0f);
  std::vector<int32_t> targets, samples;
  for (int64_t i = 0; i < rows; ++i) {
    targets.push_back(i == 5 ? kIgnore : static_cast<int32_t>((i * 37) % vocab));
    samples.push_back(i % 3 == 0 ? targets.back() : static_cast<int32_t>((i * 11) % vocab));
  }
  for (CorrectiveLmForm form : {CorrectiveLmForm::code, CorrectiveLmForm::paper}) {
    for (DType cuda_dtype : {DType::f32, DType::bf16}) {
      // Both sides see the inputs rounded as the bf16 run sees them.
      const bool bf16 = cuda_dtype == DType::bf16;
      const std::vector<float> inputs = bf16 ? coco::testing::round_through<__nv_bfloat16>(values) : values;
      const std::vector<float> copy_inputs =
          bf16 ? coco::testing::round_through<__nv_bfloat16>(copy_values) : copy_values;
      struct Out {
        std::vector<double> loss, grad;
        int64_t correct, count;
      };
      auto run = [&](Device device, DType dtype) {
        Tensor logits = Tensor::from_vector(inputs, Shape{rows, vocab}).to(dtype).to(device);
        logits.set_requires_grad(true);
        if (dtype != DType::f32) logits.set_grad_dtype(DType::f32);
        const Tensor copy = Tensor::from_vector(copy_inputs, Shape{rows, 1}).to(dtype).to(device);
        coco::Tape tape;
        Out out;
        {
          coco::Tape::Recording recording(tape);
          const coco::ops::LossResult result =
              coco::ops::corrective_lm_loss(logits, Tensor::from_vector(targets, Shape{rows}).to(device), copy,
                                            Tensor::from_vector(samples, Shape{rows}).to(device), {form, kIgnore});
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
      const std::string what = std::string(name_of(form)) + (cuda_dtype == DType::bf16 ? " bf16" : " f32");
      // Same inputs, f32 math on both sides; the loss sums <= 301 terms per row and a few transcendental
      // calls: NMSE ~1e-13.
      EXPECT_TRUE(coco::testing::matches_reference(cpu.loss, cuda.loss, 1e-10, "loss " + what));
      // f32 gradient: NMSE ~1e-13; bf16: computed in f32 and rounded once to bf16 (unit roundoff
      // 2^-8): NMSE ~5e-6.
      const double grad_threshold = bf16 ? 2e-5 : 1e-10;
      EXPECT_TRUE(coco::testing::matches_reference(cpu.grad, cuda.grad, grad_threshold, "dlogits " + what));
      EXPECT_EQ(cpu.correct, cuda.correct) << what;
      EXPECT_EQ(cpu.count, 8) << what;
      EXPECT_EQ(cuda.count, 8) << what;
    }
  }
}

}  // namespace
