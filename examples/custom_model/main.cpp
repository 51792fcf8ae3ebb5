// A model of your own on cocolm's building blocks, built against the installed package: a two-layer MLP as a
// coco::Module, fitted to a synthetic regression with the tape autograd and plain SGD, once on the CPU backend
// and once on the CUDA backend (a real GPU in `gpu` builds, the SIMT emulator otherwise); then its weights go
// through a safetensors file and back. Exits non-zero unless the loss falls at least 10x on both backends and
// the reloaded model predicts exactly what the trained one does.
#include <cocolm/cocolm.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <unistd.h>
#include <vector>

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

Tensor uniform_init(Shape shape, int64_t fan_in, std::mt19937& generator, Device device) {
  const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
  std::uniform_real_distribution<float> uniform(-bound, bound);
  std::vector<float> values(static_cast<size_t>(shape.numel()));
  for (float& v : values) v = uniform(generator);
  return Tensor::from_vector(values, shape, device);
}

// A fully connected layer: y = activation(x W^T + b). Its parameters are registered with the Module, which
// names them ("weight", "bias"; "fc1.weight" inside Mlp) for optimizers and serialization.
class Dense : public coco::Module {
 public:
  Dense(int64_t in, int64_t out, coco::ops::Activation activation, std::mt19937& generator, Device device)
      : activation_(activation) {
    weight_ = register_parameter("weight", uniform_init(Shape{out, in}, in, generator, device));
    bias_ = register_parameter("bias", uniform_init(Shape{out}, in, generator, device), /*weight_decay=*/false);
  }
  Tensor forward(const Tensor& x) const { return coco::ops::linear(x, weight_, bias_, activation_); }

 private:
  coco::ops::Activation activation_;
  Tensor weight_, bias_;
};

class Mlp : public coco::Module {
 public:
  Mlp(Device device, uint32_t seed) {
    std::mt19937 generator(seed);
    fc1_ = register_module(
        "fc1", std::make_shared<Dense>(kInputs, kHidden, coco::ops::Activation::gelu_erf, generator, device));
    fc2_ = register_module("fc2", std::make_shared<Dense>(kHidden, 1, coco::ops::Activation::none, generator, device));
  }
  Tensor forward(const Tensor& x) const { return fc2_->forward(fc1_->forward(x)); }

 private:
  std::shared_ptr<Dense> fc1_, fc2_;
};

// Writes the module's parameters (f32, on any device) as a safetensors file.
void save(const Mlp& model, const std::filesystem::path& path) {
  std::vector<std::vector<float>> host;
  std::vector<coco::safetensors::TensorData> tensors;
  const auto parameters = model.named_parameters();
  host.reserve(parameters.size());
  for (const auto& p : parameters) {
    host.push_back(p.tensor.to(Device::cpu).to_vector<float>());
    const auto* bytes = reinterpret_cast<const uint8_t*>(host.back().data());
    tensors.push_back({p.name, DType::f32, p.tensor.shape().vec(), {bytes, host.back().size() * sizeof(float)}});
  }
  coco::safetensors::write_file(path.string(), tensors, {{"model", "mlp example"}});
}

// Copies a file written by save() into `model`'s parameters.
void load(Mlp& model, const std::filesystem::path& path) {
  const auto reader = coco::safetensors::Reader::open(path.string());
  for (const auto& p : model.named_parameters()) {
    const coco::safetensors::TensorInfo* info = reader.find(p.name);
    if (!info || info->shape != p.tensor.shape().vec()) throw std::runtime_error(path.string() + ": bad " + p.name);
    const auto bytes = reader.data(*info);
    Tensor destination = p.tensor.detach();
    destination.copy_from(Tensor::from_host(bytes.data(), p.tensor.shape(), DType::f32, Device::cpu));
  }
}

// Returns {first loss, last loss}; `model` ends trained.
std::pair<double, double> train(Mlp& model, const Data& data, Device device) {
  const Tensor x = Tensor::from_vector(data.x, Shape{kSamples, kInputs}, device);
  const Tensor y = Tensor::from_vector(data.y, Shape{kSamples, 1}, device);
  double first = 0, last = 0;
  Tape tape;
  for (int step = 0; step < kSteps; ++step) {
    Tensor loss;
    {
      Tape::Recording recording(tape);  // ops on tensors that require grad are recorded while this lives
      const Tensor error = coco::ops::sub(model.forward(x), y);
      loss = coco::ops::mean(coco::ops::mul(error, error));
    }
    tape.backward(loss);
    tape.clear();
    {
      coco::NoGrad no_grad;
      for (const auto& p : model.named_parameters()) {
        Tensor parameter = p.tensor;
        coco::ops::add_inplace(parameter, coco::ops::scale(parameter.grad(), -kLearningRate));
        parameter.zero_grad();
      }
    }
    const double value = loss.item();
    if (step == 0) first = value;
    last = value;
    if (step % 100 == 0 || step == kSteps - 1)
      std::printf("  [%s] step %3d  loss %.6f\n", coco::device_name(device), step, value);
  }
  return {first, last};
}

}  // namespace

int main() {
  std::printf("cocolm %s (%s build)\n", cocolm::version(), cocolm::cuda_mode());
  const Data data = make_data();
  int failures = 0;
  for (Device device : {Device::cpu, Device::cuda}) {
    if (device == Device::cuda && !coco::cuda_available()) {
      std::printf("no CUDA device: skipping the cuda backend\n");
      continue;
    }
    std::printf("training a 2-layer MLP (%zu parameters) on %s\n", Mlp(device, 42).parameter_count(),
                coco::device_name(device));
    Mlp model(device, 42);
    const auto [first, last] = train(model, data, device);
    const bool fitted = last * 10.0 <= first;
    std::printf("%s: loss %.6f -> %.6f (%.1fx lower) %s\n", coco::device_name(device), first, last, first / last,
                fitted ? "OK" : "FAILED: expected at least 10x");
    failures += fitted ? 0 : 1;

    // Through a safetensors file into a fresh model: the same predictions, bit for bit.
    const auto path =
        std::filesystem::temp_directory_path() / ("cocolm-mlp-" + std::to_string(::getpid()) + ".safetensors");
    save(model, path);
    Mlp reloaded(device, 7);
    load(reloaded, path);
    std::filesystem::remove(path);
    coco::NoGrad no_grad;
    const Tensor x = Tensor::from_vector(data.x, Shape{kSamples, kInputs}, device);
    const auto a = model.forward(x).to(Device::cpu).to_vector<float>();
    const auto b = reloaded.forward(x).to(Device::cpu).to_vector<float>();
    const bool same = a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
    std::printf("%s: safetensors round trip %s\n", coco::device_name(device),
                same ? "OK (identical predictions)" : "FAILED: predictions differ");
    failures += same ? 0 : 1;
  }
  return failures;
}
