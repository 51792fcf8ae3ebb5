// Training steps on the CPU backend give bitwise the same weights for any thread count (issue #18:
// determinism kept): the parallel kernels split their work into items whose results do not depend on
// the thread that computes them, and reductions add fixed blocks in order.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "coco/objective.h"
#include "coco/train_config.h"
#include "engine/config.h"
#include "engine/ops/optim.h"
#include "engine/runtime/cpu_backend.h"
#include "engine/tape.h"
#include "tests/common/tiny_configs.h"

namespace coco {
namespace {

// Three steps (forward, backward, clipping, the non-finite check, AdamW) from the same seed; returns
// every parameter's bytes. Shapes large enough that every parallel kernel splits its work.
std::vector<std::vector<char>> train_three_steps(const std::string& preset, int threads) {
  runtime::cpu::set_threads(threads);
  auto setup = testing::tiny_setup(preset, true, 3000, 64);
  objective::CocoModel model(setup.model, setup.objective, 5, Device::cpu);
  optim::AdamW adamw(model.named_parameters(), {0.9, 0.98, 1e-6, 0.01});
  std::mt19937 generator(3);
  std::uniform_int_distribution<int32_t> id(5, 2999);
  std::vector<int32_t> ids(32 * 16);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = i % 16 == 0 ? 2 : id(generator);
  const Tensor tokens = Tensor::from_vector(ids, Shape{32, 16});
  for (uint64_t step = 0; step < 3; ++step) {
    Tape tape;
    objective::Outputs out;
    {
      Tape::Recording recording(tape);
      out = model.forward(tokens, step, true);
    }
    tape.backward(out.loss);
    const std::vector<Tensor> gradients = adamw.gradients();
    const optim::ClipResult clip = optim::clip_grad_norm(gradients, 1.0);
    EXPECT_FALSE(optim::has_nonfinite(gradients));
    adamw.step(1e-3, clip.factor);
    adamw.zero_grad();
  }
  std::vector<std::vector<char>> bytes;
  for (const NamedParameter& p : model.named_parameters()) {
    const std::vector<float> values = p.tensor.to_vector<float>();
    const char* data = reinterpret_cast<const char*>(values.data());
    bytes.emplace_back(data, data + values.size() * sizeof(float));
  }
  return bytes;
}

TEST(CpuThreads, TrainingStepsAreBitwiseIndependentOfTheThreadCount) {
  for (const char* preset : {"paper", "lucidrains"}) {
    const auto one = train_three_steps(preset, 1);
    for (int threads : {2, 3}) {
      const auto other = train_three_steps(preset, threads);
      ASSERT_EQ(one.size(), other.size());
      for (size_t i = 0; i < one.size(); ++i)
        EXPECT_TRUE(one[i] == other[i]) << preset << ": parameter " << i << " differs at " << threads << " threads";
    }
  }
  runtime::cpu::set_threads(0);
}

TEST(CpuThreads, RuntimeThreadsIsAValidatedConfigKey) {
  nlohmann::json root = load_json_file(COCO_SOURCE_DIR "/configs/demo.json");
  data::PreparedMeta meta;
  meta.vocab_size = 8192;
  meta.pad_id = 0, meta.unk_id = 1, meta.cls_id = 2, meta.sep_id = 3, meta.mask_id = 4;
  train::take_vocabulary_from_data(root, meta);
  root["runtime"]["device"] = "cpu";
  const train::TrainConfig defaults = train::parse_train_config(root, "demo.json");
  EXPECT_EQ(defaults.threads, 0);
  // Absent when 0, so the canonical JSON (and the config hash) of older configs is unchanged.
  EXPECT_FALSE(train::train_config_to_json(defaults)["runtime"].contains("threads"));
  root["runtime"]["threads"] = 2;
  const train::TrainConfig two = train::parse_train_config(root, "demo.json");
  EXPECT_EQ(two.threads, 2);
  EXPECT_EQ(train::parse_train_config(train::train_config_to_json(two), "round trip").threads, 2);
  for (const nlohmann::json& bad : {nlohmann::json(-1), nlohmann::json("two"), nlohmann::json(1.5)}) {
    root["runtime"]["threads"] = bad;
    try {
      train::parse_train_config(root, "demo.json");
      ADD_FAILURE() << "runtime.threads = " << bad.dump() << " was accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("threads"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace coco
