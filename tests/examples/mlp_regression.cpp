// Embedding the engine as a user would: a two-layer MLP fitted to a synthetic regression with the
// tape autograd and plain SGD, once on the CPU backend and once on the CUDA backend (a real GPU in
// `gpu` builds, the SIMT emulator otherwise). Exits non-zero unless the loss falls at least 10x on
// both backends.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "engine/ops/elementwise.h"
#include "engine/ops/linear.h"
#include "engine/tape.h"
#include "engine/tensor.h"

using coco::Device;
using coco::DType;
using coco::Shape;
using coco::Tape;
using coco::Tensor;

namespace {

constexpr int kSamples = 256, kInputs = 8, kHidden = 32, kSteps = 300;
constexpr double kLearningRate = 0.1;

struct Data {
  std::vector<float> x, y;
};

// y = sin(x . a) + 0.5 * x0 * x1: smooth, nonlinear, learnable by a small MLP.
Data make_data() {
  std::mt19937 generator(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> a(kInputs);
  for (float& v : a) v = uniform(generator);
  Data d;
  for (int i = 0; i < kSamples; ++i) {
    float dot = 0;
    std::vector<float> row(kInputs);
    for (int j = 0; j < kInputs; ++j) {
      row[j] = uniform(generator);
      dot += row[j] * a[j];
    }
    d.x.insert(d.x.end(), row.begin(), row.end());
    d.y.push_back(std::sin(dot) + 0.5f * row[0] * row[1]);
  }
  return d;
}

Tensor init_param(Shape shape, int64_t fan_in, std::mt19937& generator, Device device) {
  const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  std::uniform_real_distribution<float> uniform(-bound, bound);
  std::vector<float> values(static_cast<size_t>(shape.numel()));
  for (float& v : values) v = uniform(generator);
  Tensor t = Tensor::from_vector(values, shape, device);
  t.set_requires_grad(true);
  return t;
}

// Returns {first loss, last loss}.
std::pair<double, double> train(Device device) {
  const Data data = make_data();
  Tensor x = Tensor::from_vector(data.x, Shape{kSamples, kInputs}, device);
  Tensor y = Tensor::from_vector(data.y, Shape{kSamples, 1}, device);
  std::mt19937 generator(42);
  std::vector<Tensor> params = {init_param(Shape{kHidden, kInputs}, kInputs, generator, device),
                                init_param(Shape{kHidden}, kInputs, generator, device),
                                init_param(Shape{1, kHidden}, kHidden, generator, device),
                                init_param(Shape{1}, kHidden, generator, device)};
  double first = 0, last = 0;
  Tape tape;
  for (int step = 0; step < kSteps; ++step) {
    Tensor loss;
    {
      Tape::Recording recording(tape);
      Tensor hidden = coco::ops::linear(x, params[0], params[1], coco::ops::Activation::gelu_erf);
      Tensor prediction = coco::ops::linear(hidden, params[2], params[3]);
      Tensor error = coco::ops::sub(prediction, y);
      loss = coco::ops::mean(coco::ops::mul(error, error));
    }
    tape.backward(loss);
    tape.clear();
    {
      coco::NoGrad no_grad;
      for (Tensor& p : params) {
        coco::ops::add_inplace(p, coco::ops::scale(p.grad(), -kLearningRate));
        p.zero_grad();
      }
    }
    const double value = loss.item();
    if (step == 0) first = value;
    last = value;
    if (step % 50 == 0 || step == kSteps - 1)
      std::printf("  [%s] step %3d  loss %.6f\n", coco::device_name(device), step, value);
  }
  return {first, last};
}

}  // namespace

int main() {
  int failures = 0;
  for (Device device : {Device::cpu, Device::cuda}) {
    if (device == Device::cuda && !coco::cuda_available()) {
      std::printf("no CUDA device: skipping the cuda backend\n");
      continue;
    }
    std::printf("training a 2-layer MLP on %s (%s)\n", coco::device_name(device),
                device == Device::cuda ? (coco::kCudaEmulated ? "SIMT emulator" : "GPU") : "CPU reference kernels");
    const auto [first, last] = train(device);
    const bool ok = last * 10.0 <= first;
    std::printf("%s: loss %.6f -> %.6f (%.1fx lower) %s\n", coco::device_name(device), first, last, first / last,
                ok ? "OK" : "FAILED: expected at least 10x");
    failures += ok ? 0 : 1;
  }
  return failures;
}
