// The tape: recording, reverse replay, gradient accumulation on reuse, NoGrad, detach, release of
// saved tensors, and the errors for misuse. Uses small hand-written f64 CPU ops so that the tape is
// tested independently of the kernel library.
#include <gtest/gtest.h>

#include <memory>

#include "engine/autograd_check.h"
#include "engine/tape.h"

namespace coco {
namespace {

// y = x * x elementwise.
Tensor square(const Tensor& x) {
  std::vector<double> v = x.to_f64();
  for (double& e : v) e = e * e;
  Tensor y = Tensor::from_vector(v, x.shape());
  if (Tape* tape = Tape::recording_for({&x})) {
    tape->record("square", {x}, {y}, [x](BackwardContext& ctx) {
      std::vector<double> g = ctx.grad_output(0).to_f64(), xv = x.to_f64();
      for (size_t i = 0; i < g.size(); ++i) g[i] *= 2.0 * xv[i];
      ctx.accumulate(0, Tensor::from_vector(g, x.shape()));
    });
  }
  return y;
}

// y = a * b elementwise.
Tensor multiply(const Tensor& a, const Tensor& b) {
  std::vector<double> av = a.to_f64(), bv = b.to_f64(), y(av.size());
  for (size_t i = 0; i < y.size(); ++i) y[i] = av[i] * bv[i];
  Tensor out = Tensor::from_vector(y, a.shape());
  if (Tape* tape = Tape::recording_for({&a, &b})) {
    tape->record("multiply", {a, b}, {out}, [a, b](BackwardContext& ctx) {
      std::vector<double> g = ctx.grad_output(0).to_f64(), av = a.to_f64(), bv = b.to_f64();
      std::vector<double> ga(g.size()), gb(g.size());
      for (size_t i = 0; i < g.size(); ++i) {
        ga[i] = g[i] * bv[i];
        gb[i] = g[i] * av[i];
      }
      if (ctx.needs_grad(0)) ctx.accumulate(0, Tensor::from_vector(ga, a.shape()));
      if (ctx.needs_grad(1)) ctx.accumulate(1, Tensor::from_vector(gb, b.shape()));
    });
  }
  return out;
}

Tensor total(const Tensor& x) {
  double s = 0;
  for (double e : x.to_f64()) s += e;
  Tensor out = Tensor::from_vector(std::vector<double>{s}, Shape{});
  if (Tape* tape = Tape::recording_for({&x})) {
    tape->record("total", {x}, {out}, [shape = x.shape()](BackwardContext& ctx) {
      const double g = ctx.grad_output(0).item();
      ctx.accumulate(0, Tensor::full(shape, g, DType::f64));
    });
  }
  return out;
}

Tensor param(std::vector<double> v) {
  Tensor t = Tensor::from_vector(v, Shape{static_cast<int64_t>(v.size())});
  t.set_requires_grad(true);
  return t;
}

TEST(Tape, ChainRuleThroughSeveralOps) {
  Tensor x = param({1.0, -2.0, 3.0});
  Tape tape;
  Tensor loss;
  {
    Tape::Recording recording(tape);
    loss = total(square(x));
  }
  EXPECT_EQ(tape.op_names(), (std::vector<std::string>{"square", "total"}));
  tape.backward(loss);
  EXPECT_EQ(x.grad().to_f64(), (std::vector<double>{2.0, -4.0, 6.0}));
}

TEST(Tape, GradientsAccumulateWhenATensorIsUsedTwice) {
  // loss = sum(x * x) through multiply(x, x): both inputs are the same leaf (tied use).
  Tensor x = param({0.5, 4.0});
  Tape tape;
  Tensor loss;
  {
    Tape::Recording recording(tape);
    loss = total(multiply(x, x));
  }
  tape.backward(loss);
  EXPECT_EQ(x.grad().to_f64(), (std::vector<double>{1.0, 8.0}));
}

TEST(Tape, LeafGradientsAccumulateAcrossStepsUntilZeroed) {
  Tensor x = param({1.0, 2.0});
  for (int step = 0; step < 2; ++step) {
    Tape tape;
    Tensor loss;
    {
      Tape::Recording recording(tape);
      loss = total(square(x));
    }
    tape.backward(loss);
  }
  EXPECT_EQ(x.grad().to_f64(), (std::vector<double>{4.0, 8.0}));
  x.zero_grad();
  EXPECT_EQ(x.grad().to_f64(), (std::vector<double>{0.0, 0.0}));
}

TEST(Tape, NoGradAndDetachRecordNothing) {
  Tensor x = param({1.0});
  Tape tape;
  {
    Tape::Recording recording(tape);
    {
      NoGrad no_grad;
      Tensor y = square(x);
      EXPECT_FALSE(y.requires_grad());
    }
    Tensor z = square(x.detach());
    EXPECT_FALSE(z.requires_grad());
  }
  EXPECT_EQ(tape.size(), 0u);
}

TEST(Tape, OnlyInputsRequiringGradReceiveGradients) {
  Tensor a = param({2.0, 3.0});
  Tensor b = Tensor::from_vector(std::vector<double>{5.0, 7.0}, Shape{2});
  Tape tape;
  Tensor loss;
  {
    Tape::Recording recording(tape);
    loss = total(multiply(a, b));
  }
  tape.backward(loss);
  EXPECT_EQ(a.grad().to_f64(), (std::vector<double>{5.0, 7.0}));
  EXPECT_FALSE(b.grad().defined());
}

TEST(Tape, SavedTensorsAreReleasedAfterTheirNodeRan) {
  Tensor x = param({1.0, 2.0});
  Tape tape;
  Tensor loss;
  std::weak_ptr<Storage> saved;
  {
    Tape::Recording recording(tape);
    Tensor y = square(x);
    Tensor z = square(y);  // the closure saves y
    saved = y.storage();
    loss = total(z);
  }
  EXPECT_FALSE(saved.expired());  // alive: saved by square(y)
  tape.backward(loss);
  EXPECT_TRUE(saved.expired());
  EXPECT_EQ(x.grad().to_f64(), (std::vector<double>{4.0, 32.0}));  // d/dx x^4 = 4x^3
}

TEST(Tape, MisuseRaisesClearErrors) {
  Tensor x = param({1.0, 2.0});
  Tape tape;
  Tensor y, loss;
  {
    Tape::Recording recording(tape);
    y = square(x);
    loss = total(y);
  }
  EXPECT_THROW(tape.backward(y), std::logic_error);  // non-scalar without seed
  tape.backward(loss);
  EXPECT_THROW(tape.backward(loss), std::logic_error);  // twice
  Tensor constant = Tensor::full(Shape{}, 1.0, DType::f64);
  Tape other;
  EXPECT_THROW(other.backward(constant), std::logic_error);  // root does not require grad
  tape.clear();
  EXPECT_EQ(tape.size(), 0u);
}

TEST(Tape, WrongGradientShapeNamesTheOp) {
  Tensor x = param({1.0, 2.0});
  Tape tape;
  Tensor out = Tensor::full(Shape{}, 0.0, DType::f64);
  {
    Tape::Recording recording(tape);
    tape.record("broken_op", {x}, {out},
                [](BackwardContext& ctx) { ctx.accumulate(0, Tensor::zeros(Shape{3}, DType::f64)); });
  }
  try {
    tape.backward(out);
    FAIL() << "expected TensorError";
  } catch (const TensorError& e) {
    EXPECT_NE(std::string(e.what()).find("broken_op"), std::string::npos) << e.what();
  }
}

TEST(Tape, NonScalarRootWithSeed) {
  Tensor x = param({1.0, 2.0, 3.0});
  Tape tape;
  Tensor y;
  {
    Tape::Recording recording(tape);
    y = square(x);
  }
  tape.backward(y, Tensor::from_vector(std::vector<double>{1.0, 0.0, -1.0}, Shape{3}));
  EXPECT_EQ(x.grad().to_f64(), (std::vector<double>{2.0, 0.0, -6.0}));
}

TEST(Gradcheck, PassesForCorrectBackwardAndCatchesAWrongOne) {
  Tensor a = param({0.3, -1.2, 2.0}).set_name("a");
  Tensor b = param({1.5, 0.7, -0.4}).set_name("b");
  GradcheckReport good =
      gradcheck([](const std::vector<Tensor>& in) { return square(multiply(in[0], in[1])); }, {a, b});
  EXPECT_TRUE(good.ok) << good.worst;
  EXPECT_EQ(good.elements_checked, 6);

  auto wrong_square = [](const Tensor& x) {
    std::vector<double> v = x.to_f64();
    for (double& e : v) e = e * e;
    Tensor y = Tensor::from_vector(v, x.shape());
    if (Tape* tape = Tape::recording_for({&x}))
      tape->record("wrong_square", {x}, {y}, [x](BackwardContext& ctx) {
        ctx.accumulate(0, x.to(DType::f64));  // should be 2x * grad
      });
    return y;
  };
  GradcheckReport bad = gradcheck([&](const std::vector<Tensor>& in) { return wrong_square(in[0]); }, {a});
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.worst.find("'a'"), std::string::npos) << bad.worst;
}

}  // namespace
}  // namespace coco
