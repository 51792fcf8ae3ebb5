// The first ops (elementwise, reductions, matmul / bmm / linear, add_inplace) on tensors: forward and
// backward on Device::cuda (the SIMT emulator here, a GPU in the gpu build) against Device::cpu,
// in f32 and in bf16 / f16 with f32 gradient buffers; argument errors.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "engine/ops/elementwise.h"
#include "engine/ops/linear.h"
#include "engine/tape.h"
#include "tests/common/kernel_check.h"

namespace coco {
namespace {

using ops::Activation;
using testing::matches_reference;
using testing::random_floats;

using OpFn = std::function<Tensor(const std::vector<Tensor>&)>;

struct Result {
  std::vector<double> output;
  std::vector<std::vector<double>> grads;
};

// The values as `dtype` and back to f32, so that the f32 CPU reference sees exactly the inputs a
// 16-bit run sees.
std::vector<float> rounded(const std::vector<float>& values, DType dtype) {
  const Tensor t = Tensor::from_vector(values, {static_cast<int64_t>(values.size())}).to(dtype).to(DType::f32);
  return t.to_vector<float>();
}

// Forward and backward (seeded with fixed weights) of `fn` on `device` with inputs of `dtype`.
Result run(const OpFn& fn, const std::vector<std::vector<float>>& values, const std::vector<Shape>& shapes, DType dtype,
           Device device, DType grad_dtype) {
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < values.size(); ++i) {
    Tensor t = Tensor::from_vector(values[i], shapes[i]).to(dtype).to(device);
    t.set_requires_grad(true).set_grad_dtype(grad_dtype);
    inputs.push_back(t);
  }
  Tape tape;
  Tensor y;
  {
    Tape::Recording recording(tape);
    y = fn(inputs);
  }
  const std::vector<float> weights = rounded(random_floats(static_cast<size_t>(y.numel()), 99), dtype);
  tape.backward(y, Tensor::from_vector(weights, y.shape()).to(y.dtype()).to(device));
  Result result{y.to_f64(), {}};
  for (const Tensor& input : inputs) {
    EXPECT_TRUE(input.grad().defined());
    EXPECT_EQ(input.grad().dtype(), grad_dtype);
    result.grads.push_back(input.grad().defined() ? input.grad().to_f64() : std::vector<double>());
  }
  return result;
}

// Runs `fn` on cuda in `dtype` (gradients in `grad_dtype`) and on cpu in f32 over the same rounded
// inputs, and compares outputs and every gradient.
void cross_check(const std::string& what, const OpFn& fn, const std::vector<Shape>& shapes, DType dtype,
                 DType grad_dtype, double threshold) {
  std::vector<std::vector<float>> values;
  unsigned seed = 7;
  for (const Shape& shape : shapes)
    values.push_back(rounded(random_floats(static_cast<size_t>(shape.numel()), seed++), dtype));
  const Result reference = run(fn, values, shapes, DType::f32, Device::cpu, DType::f32);
  const Result got = run(fn, values, shapes, dtype, Device::cuda, grad_dtype);
  const std::string tag = what + " [" + dtype_name(dtype) + ", grads " + dtype_name(grad_dtype) + "]";
  EXPECT_TRUE(matches_reference(reference.output, got.output, threshold, tag + " output"));
  for (size_t i = 0; i < shapes.size(); ++i)
    EXPECT_TRUE(matches_reference(reference.grads[i], got.grads[i], threshold, tag + " grad #" + std::to_string(i)));
}

// NMSE limits, cuda vs cpu over identical inputs:
//   f32: both sides compute in f32 with different summation orders (K <= 130) -> ~1e-13; 1e-10.
//   bf16 (f32 gradient buffers): a backward passes through at most ~4 bf16 roundings in sequence
//        (saved pre-activation, dpre, the product, the incoming gradient), each adding NMSE
//        <= (2^-8)^2 = 1.5e-5 -> 1e-4 (the typical value is ~4x below: 4 * (2^-8)^2 / 3 = 2e-5).
//   f16: the same with 2^-11: 4 * 2.4e-7 -> 2e-6.
constexpr double kF32 = 1e-10, kBf16 = 1e-4, kF16 = 2e-6;

struct Precision {
  DType dtype, grad_dtype;
  double threshold;
};
const Precision kPrecisions[] = {{DType::f32, DType::f32, kF32},
                                 {DType::bf16, DType::f32, kBf16},
                                 {DType::bf16, DType::bf16, kBf16},
                                 {DType::f16, DType::f32, kF16}};

TEST(OpsBasic, ElementwiseCudaMatchesCpu) {
  for (const Precision& p : kPrecisions) {
    for (const Shape& shape : {Shape{1}, Shape{130}, Shape{3, 33}}) {
      const std::vector<Shape> two = {shape, shape};
      cross_check(
          "add", [](const auto& in) { return ops::add(in[0], in[1]); }, two, p.dtype, p.grad_dtype, p.threshold);
      cross_check(
          "sub", [](const auto& in) { return ops::sub(in[0], in[1]); }, two, p.dtype, p.grad_dtype, p.threshold);
      cross_check(
          "mul", [](const auto& in) { return ops::mul(in[0], in[1]); }, two, p.dtype, p.grad_dtype, p.threshold);
      cross_check(
          "scale", [](const auto& in) { return ops::scale(in[0], 0.625); }, {shape}, p.dtype, p.grad_dtype,
          p.threshold);
      cross_check(
          "add_scaled", [](const auto& in) { return ops::add_scaled(in[0], in[1], -1.5); }, two, p.dtype, p.grad_dtype,
          p.threshold);
    }
  }
}

TEST(OpsBasic, ReductionsCudaMatchCpu) {
  for (const Precision& p : kPrecisions) {
    for (const Shape& shape : {Shape{1}, Shape{7, 33}, Shape{2, 3, 130}}) {
      // Full sums of squares: no cancellation, so one output's relative error is meaningful.
      cross_check(
          "sum", [](const auto& in) { return ops::sum(ops::mul(in[0], in[0])); }, {shape}, p.dtype, p.grad_dtype,
          p.threshold);
      cross_check(
          "mean", [](const auto& in) { return ops::mean(ops::mul(in[0], in[0])); }, {shape}, p.dtype, p.grad_dtype,
          p.threshold);
      cross_check(
          "row_sum", [](const auto& in) { return ops::row_sum(in[0]); }, {shape}, p.dtype, p.grad_dtype, p.threshold);
    }
  }
}

TEST(OpsBasic, MatmulAndBmmCudaMatchCpu) {
  const int64_t M = 7, N = 33, K = 130, B = 3;
  for (const Precision& p : kPrecisions) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        const Shape a = ta ? Shape{K, M} : Shape{M, K}, b = tb ? Shape{N, K} : Shape{K, N};
        const std::string suffix = " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb);
        cross_check(
            "matmul" + suffix, [ta, tb](const auto& in) { return ops::matmul(in[0], in[1], ta, tb); }, {a, b}, p.dtype,
            p.grad_dtype, p.threshold);
        const Shape ba = ta ? Shape{B, K, M} : Shape{B, M, K}, bb = tb ? Shape{B, N, K} : Shape{B, K, N};
        cross_check(
            "bmm" + suffix, [ta, tb](const auto& in) { return ops::bmm(in[0], in[1], ta, tb); }, {ba, bb}, p.dtype,
            p.grad_dtype, p.threshold);
      }
    }
  }
}

TEST(OpsBasic, LinearCudaMatchesCpu) {
  for (const Precision& p : kPrecisions) {
    for (Activation act : {Activation::none, Activation::gelu_erf, Activation::gelu_tanh}) {
      const std::string name = std::string("linear ") + kernels::activation_name(act);
      // x (2, 7, 33) -> 14 rows; out = 130 and out = 7 (not a multiple of 8: no fused GELU aux on a GPU).
      for (int64_t out : {130, 7}) {
        cross_check(
            name + " bias out=" + std::to_string(out),
            [act](const auto& in) { return ops::linear(in[0], in[1], in[2], act); },
            {Shape{2, 7, 33}, Shape{out, 33}, Shape{out}}, p.dtype, p.grad_dtype, p.threshold);
      }
      cross_check(
          name + " no bias", [act](const auto& in) { return ops::linear(in[0], in[1], Tensor(), act); },
          {Shape{5, 33}, Shape{16, 33}}, p.dtype, p.grad_dtype, p.threshold);
    }
  }
}

TEST(OpsBasic, ForwardValuesOnCpu) {
  const Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = Tensor::from_vector(std::vector<float>{6, 5, 4, 3, 2, 1}, {2, 3});
  EXPECT_EQ(ops::add(a, b).to_vector<float>(), std::vector<float>(6, 7.0f));
  EXPECT_EQ(ops::sub(a, b).to_vector<float>(), (std::vector<float>{-5, -3, -1, 1, 3, 5}));
  EXPECT_EQ(ops::mul(a, b).to_vector<float>(), (std::vector<float>{6, 10, 12, 12, 10, 6}));
  EXPECT_EQ(ops::scale(a, 2.0).to_vector<float>(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
  EXPECT_EQ(ops::add_scaled(a, b, -1.0).to_vector<float>(), ops::sub(a, b).to_vector<float>());
  const Tensor total = ops::sum(a);
  EXPECT_EQ(total.rank(), 0);
  EXPECT_EQ(total.item(), 21.0);
  EXPECT_EQ(ops::mean(a).item(), 3.5);
  EXPECT_EQ(ops::row_sum(a).to_vector<float>(), (std::vector<float>{6, 15}));
  EXPECT_EQ(ops::row_sum(a).shape(), (Shape{2}));
  // (2, 3) . (2, 3)^T
  EXPECT_EQ(ops::matmul(a, b, false, true).to_vector<float>(), (std::vector<float>{28, 10, 73, 28}));
  // linear: x (2, 3), W = b (2, 3), bias (2)
  const Tensor bias = Tensor::from_vector(std::vector<float>{1, -1}, {2});
  EXPECT_EQ(ops::linear(a, b, bias).to_vector<float>(), (std::vector<float>{29, 9, 74, 27}));
}

TEST(OpsBasic, AddInplace) {
  // Same dtype on both backends.
  for (Device device : {Device::cpu, Device::cuda}) {
    Tensor dst = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}).to(device);
    ops::add_inplace(dst, Tensor::from_vector(std::vector<float>{0.5f, 0.25f, -3}, {3}).to(device));
    EXPECT_EQ(dst.to_vector<float>(), (std::vector<float>{1.5f, 2.25f, 0}));
  }
  // f32 += bf16 / f16 on cuda, summed in f32 (0.1 is not representable in 16 bits: the sum keeps
  // the 16-bit source value exactly).
  for (DType src_dtype : {DType::bf16, DType::f16}) {
    Tensor dst = Tensor::from_vector(std::vector<float>{1e-3f, 0, 1000}, {3}).to(Device::cuda);
    const Tensor src = Tensor::from_vector(std::vector<float>{0.1f, 0.1f, 0.1f}, {3}).to(src_dtype).to(Device::cuda);
    const double s = src.to_f64()[0];
    ops::add_inplace(dst, src);
    const std::vector<float> got = dst.to_vector<float>();
    EXPECT_EQ(got[0], static_cast<float>(1e-3f + static_cast<float>(s)));
    EXPECT_EQ(got[1], static_cast<float>(s));
    EXPECT_EQ(got[2], 1000.0f + static_cast<float>(s));
  }
  // The CPU converts a differing source first.
  Tensor dst = Tensor::from_vector(std::vector<double>{1, 2}, {2});
  ops::add_inplace(dst, Tensor::from_vector(std::vector<float>{0.5f, 0.5f}, {2}));
  EXPECT_EQ(dst.to_vector<double>(), (std::vector<double>{1.5, 2.5}));
  // Other float pairs convert the source first (f16 += f32 here); non-float sources and mismatches
  // are errors naming the op and the tensors.
  Tensor half_dst = Tensor::full({2}, 1.0, DType::f16, Device::cuda);
  ops::add_inplace(half_dst, Tensor::full({2}, 0.5, DType::f32, Device::cuda));
  EXPECT_EQ(half_dst.to_f64(), (std::vector<double>{1.5, 1.5}));
  EXPECT_THROW(ops::add_inplace(half_dst, Tensor::zeros({2}, DType::i32, Device::cuda)), TensorError);
  Tensor small = Tensor::zeros({2}, DType::f32);
  try {
    ops::add_inplace(small, Tensor::zeros({3}, DType::f32));
    FAIL() << "expected TensorError";
  } catch (const TensorError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("add_inplace"), std::string::npos) << message;
    EXPECT_NE(message.find("(3,)"), std::string::npos) << message;
  }
}

TEST(OpsBasic, ArgumentErrorsNameOpAndShapes) {
  const Tensor a = Tensor::zeros({2, 3}, DType::f32), b = Tensor::zeros({3, 2}, DType::f32);
  auto expect_error = [](const std::function<void()>& call, const std::vector<std::string>& fragments) {
    try {
      call();
      ADD_FAILURE() << "expected TensorError mentioning " << fragments[0];
    } catch (const TensorError& e) {
      for (const std::string& fragment : fragments)
        EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_error([&] { ops::add(a, b); }, {"add", "(2, 3)", "(3, 2)"});
  expect_error([&] { ops::mul(a, Tensor::zeros({2, 3}, DType::f64)); }, {"mul", "f64"});
  expect_error([&] { ops::matmul(a, a); }, {"matmul", "(2, 3)"});
  expect_error([&] { ops::bmm(a, b); }, {"bmm", "rank 3"});
  expect_error([&] { ops::linear(a, Tensor::zeros({4, 5}, DType::f32)); }, {"linear", "5"});
  expect_error([&] { ops::linear(a, b.view({2, 3}), Tensor::zeros({3}, DType::f32)); }, {"linear", "bias"});
  expect_error([&] { ops::add(a.to(DType::bf16), a.to(DType::bf16)); }, {"add", "bf16", "cpu"});
  expect_error([&] { ops::sum(Tensor::zeros({2}, DType::i32)); }, {"sum", "i32"});
  expect_error([&] { ops::mean(Tensor::zeros({0}, DType::f32)); }, {"mean", "empty"});
  expect_error([&] { ops::add(a, a.to(Device::cuda)); }, {"add", "device"});
}

TEST(OpsBasic, RecordsOnTapeOnlyWhenNeeded) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2});
  Tensor W = Tensor::from_vector(std::vector<float>{1, 0, 0, 1}, {2, 2});
  Tape tape;
  {
    Tape::Recording recording(tape);
    ops::linear(x, W, Tensor(), Activation::gelu_erf);  // nothing requires grad
    EXPECT_EQ(tape.size(), 0u);
    W.set_requires_grad(true);
    Tensor loss = ops::sum(ops::linear(x, W, Tensor(), Activation::gelu_erf));
    EXPECT_EQ(tape.op_names(), (std::vector<std::string>{"linear", "sum"}));
    {
      NoGrad no_grad;
      ops::mul(loss, loss);
    }
    EXPECT_EQ(tape.size(), 2u);
  }
}

}  // namespace
}  // namespace coco
