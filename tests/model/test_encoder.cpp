// The transformer encoder: shapes, parameter names, tying, padding, and f64 gradient checks of a
// tiny encoder (pre-norm and post-norm, with padding, relative-position bias and dropout).
#include <gtest/gtest.h>

#include <algorithm>

#include "engine/autograd_check.h"
#include "engine/ops/elementwise.h"
#include "engine/tape.h"
#include "model/encoder.h"
#include "tests/common/kernel_check.h"
#include "tests/common/tiny_configs.h"

namespace coco {
namespace {

Tensor ids_tensor(const std::vector<int32_t>& ids, int64_t batch, Device device = Device::cpu) {
  return Tensor::from_vector(ids, Shape{batch, static_cast<int64_t>(ids.size()) / batch}, device);
}

Tensor mask_of(const std::vector<int32_t>& ids, int64_t batch) {
  std::vector<uint8_t> mask;
  for (int32_t id : ids) mask.push_back(id != 0);
  return Tensor::from_vector(mask, Shape{batch, static_cast<int64_t>(ids.size()) / batch});
}

TEST(Encoder, ParameterNamesAreStable) {
  auto setup = testing::tiny_setup("paper");
  model::Initializer init(1, "bert");
  model::Encoder encoder(setup.model.discriminator, 24, 16, 0, {}, init, Device::cpu);
  std::vector<std::string> names;
  for (const auto& p : encoder.named_parameters("discriminator")) names.push_back(p.name);
  const std::vector<std::string> expected_prefix = {
      "discriminator.token_embedding",         "discriminator.position_embedding",
      "discriminator.relative_position_bias",  "discriminator.embedding_norm.weight",
      "discriminator.embedding_norm.bias",     "discriminator.layers.0.attn.qkv.weight",
      "discriminator.layers.0.attn.qkv.bias",  "discriminator.layers.0.attn.out.weight",
      "discriminator.layers.0.attn.out.bias",  "discriminator.layers.0.attn_norm.weight",
      "discriminator.layers.0.attn_norm.bias", "discriminator.layers.0.ff.fc1.weight"};
  ASSERT_GE(names.size(), expected_prefix.size());
  // Registration order is what the registry reports; the relative bias is registered before layers.
  for (const auto& name : expected_prefix)
    EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << "missing " << name;
  EXPECT_EQ(names.back(), "discriminator.layers.1.ff_norm.bias");
}

TEST(Encoder, ForwardShapesForBothNormPlacements) {
  for (const char* preset : {"paper", "lucidrains"}) {
    auto setup = testing::tiny_setup(preset);
    model::Initializer init(3, setup.model.discriminator.init);
    model::Encoder encoder(setup.model.discriminator, 24, 16, 0, {}, init, Device::cpu);
    const std::vector<int32_t> ids = {2, 5, 6, 7, 0, 0, 2, 9, 10, 11, 12, 13};
    Tensor h = encoder.forward(ids_tensor(ids, 2), mask_of(ids, 2), {true, 1, 0, 0});
    EXPECT_EQ(h.shape(), (Shape{2, 6, setup.model.discriminator.dim})) << preset;
    for (double v : h.to_f64()) ASSERT_TRUE(std::isfinite(v)) << preset;
  }
}

TEST(Encoder, PaddedKeysDoNotChangeTheOtherPositions) {
  auto setup = testing::tiny_setup("paper", /*dropout=*/false);
  model::Initializer init(5, "bert");
  model::Encoder encoder(setup.model.discriminator, 24, 16, 0, {}, init, Device::cpu);
  const std::vector<int32_t> a = {2, 5, 6, 7, 0, 0}, b = {2, 5, 6, 7, 0, 0};
  std::vector<int32_t> c = b;
  Tensor ha = encoder.forward(ids_tensor(a, 1), mask_of(a, 1), {false, 1, 0, 0});
  // Same tokens at the padded positions changed to other ids, still masked: unpadded outputs equal.
  c[4] = 9;
  c[5] = 11;
  std::vector<uint8_t> mask = {1, 1, 1, 1, 0, 0};
  Tensor hc = encoder.forward(ids_tensor(c, 1), Tensor::from_vector(mask, Shape{1, 6}), {false, 1, 0, 0});
  const auto va = ha.to_f64(), vc = hc.to_f64();
  const int64_t d = setup.model.discriminator.dim;
  for (int64_t i = 0; i < 4 * d; ++i) EXPECT_NEAR(va[i], vc[i], 1e-5) << i;
}

class EncoderGradcheck : public ::testing::TestWithParam<const char*> {};

TEST_P(EncoderGradcheck, F64FiniteDifferences) {
  auto setup = testing::tiny_setup(GetParam(), /*dropout=*/true);
  model::Initializer init(11, setup.model.discriminator.init, DType::f64);
  model::Encoder encoder(setup.model.discriminator, 24, 16, 0, {}, init, Device::cpu);
  const std::vector<int32_t> ids = {2, 5, 6, 7, 0, 2, 9, 10, 11, 12};
  const Tensor tokens = ids_tensor(ids, 2), mask = mask_of(ids, 2);
  std::vector<Tensor> params;
  for (const auto& p : encoder.named_parameters()) params.push_back(p.tensor);
  // Dropout on (training) with a fixed stream: the masks are the same in every evaluation.
  GradcheckOptions options;
  options.atol = 1e-6;
  options.rtol = 1e-4;
  // Only non-pad outputs enter the checked sum, as in every loss: hidden states at padded positions are
  // never used, and the padding row of the bert-initialised token table is frozen (no gradient).
  std::vector<double> keep;
  for (int32_t id : ids)
    for (int64_t c = 0; c < setup.model.discriminator.dim; ++c) keep.push_back(id != 0 ? 1.0 : 0.0);
  const Tensor keep_mask = Tensor::from_vector(keep, Shape{2, 5, setup.model.discriminator.dim});
  GradcheckReport report = gradcheck(
      [&](const std::vector<Tensor>&) {
        return ops::mul(encoder.forward(tokens, mask, {true, 7, 3, 1}), keep_mask);
      },
      params, options);
  EXPECT_TRUE(report.ok) << report.worst;
  EXPECT_GT(report.elements_checked, 500);
}

INSTANTIATE_TEST_SUITE_P(Presets, EncoderGradcheck, ::testing::Values("paper", "lucidrains"));

// bf16 on CUDA (the emulator without a GPU), head dim 16: every layer's attention takes the
// relative-position table inside the tensor-core kernels (no dense (H, T, T) bias op on the tape);
// on the CPU in f32 one dense bias is built and shared by the layers. Same weights (bf16-exact),
// same dropout masks: outputs and the table's gradient agree at bf16 tolerance.
TEST(Encoder, Bf16CudaAppliesTheRelativeTableInsideTensorCoreAttention) {
  auto setup = testing::tiny_setup("paper", /*dropout=*/true, /*vocab=*/24, /*dim=*/32);
  const model::EncoderConfig& config = setup.model.discriminator;
  ASSERT_EQ(config.dim / config.heads, 16);
  const std::vector<int32_t> ids = {2, 5, 6, 7, 8, 9, 10, 0, 0, 2, 9, 10, 11, 12, 13, 14, 15, 16};
  std::vector<double> keep;
  for (int32_t id : ids)
    for (int64_t c = 0; c < config.dim; ++c) keep.push_back(id != 0 ? 1.0 : 0.0);
  struct Run {
    std::vector<double> hidden, table_grad;
    std::vector<std::string> ops;
  };
  auto run = [&](Device device, DType dtype) {
    model::Initializer init(21, config.init, dtype);
    model::Encoder encoder(config, 24, 16, 0, {}, init, device);
    for (const auto& p : encoder.named_parameters()) {
      Tensor weight = p.tensor;  // shares the parameter's storage
      if (dtype == DType::f32) weight.copy_from(weight.to(DType::bf16).to(DType::f32));  // bf16-exact weights
      if (dtype != DType::f32) weight.set_grad_dtype(DType::f32);
    }
    const Tensor tokens = ids_tensor(ids, 2, device), mask = mask_of(ids, 2).to(device);
    const Tensor keep_mask = Tensor::from_vector(keep, Shape{2, 9, config.dim}).to(dtype).to(device);
    Tape tape;
    Tensor hidden;
    {
      Tape::Recording recording(tape);
      hidden = ops::mul(encoder.forward(tokens, mask, {true, 7, 3, 1}), keep_mask);
    }
    Run r{hidden.to(Device::cpu).to_f64(), {}, tape.op_names()};
    // A random upstream gradient (all ones would give ~0: the final LayerNorm's outputs sum to a constant).
    const std::vector<float> seed = testing::round_through<__nv_bfloat16>(testing::random_floats(keep.size(), 23));
    tape.backward(hidden, Tensor::from_vector(seed, hidden.shape()).to(dtype).to(device));
    r.table_grad = encoder.parameter("relative_position_bias").grad().to(Device::cpu).to_f64();
    return r;
  };
  const Run cpu = run(Device::cpu, DType::f32);
  const Run gpu = run(Device::cuda, DType::bf16);
  const auto count = [](const std::vector<std::string>& ops, const std::string& name) {
    return std::count(ops.begin(), ops.end(), name);
  };
  EXPECT_EQ(count(cpu.ops, "relative_position_bias"), 1);  // shared by both layers
  EXPECT_EQ(count(gpu.ops, "relative_position_bias"), 0);  // the table goes into the kernels
  EXPECT_EQ(count(gpu.ops, "attention"), config.depth);
  EXPECT_TRUE(testing::matches_reference(cpu.hidden, gpu.hidden, 1e-3, "hidden"));
  EXPECT_TRUE(testing::matches_reference(cpu.table_grad, gpu.table_grad, 1e-3, "relative table gradient"));
}

}  // namespace
}  // namespace coco
