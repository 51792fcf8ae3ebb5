// tools/lib/checkpoint: round trip of weights and AdamW state, retention, crash debris, `latest`.
#include "tools/lib/checkpoint.h"

#include <gtest/gtest.h>

#include "tests/train/train_test_util.h"

namespace coco::tools {
namespace {

using testutil::TempDir;
namespace fs = std::filesystem;

struct Layer : Module {
  Layer(const Shape& weight_shape, float base) {
    std::vector<float> w(static_cast<size_t>(weight_shape.numel())), b(3);
    for (size_t i = 0; i < w.size(); ++i) w[i] = base + 0.5f * static_cast<float>(i);
    for (size_t i = 0; i < b.size(); ++i) b[i] = base - static_cast<float>(i);
    register_parameter("weight", Tensor::from_vector(w, weight_shape));
    register_parameter("bias", Tensor::from_vector(b, Shape{3}), /*weight_decay=*/false);
  }
};

// Parameters "layer.weight" (2, 3) and "layer.bias" (3).
struct TwoTensors : Module {
  explicit TwoTensors(float base, Shape weight_shape = Shape{2, 3}) {
    register_module("layer", std::make_shared<Layer>(weight_shape, base));
  }
};

void take_step(TwoTensors& m, optim::AdamW& optimizer) {
  for (const auto& p : m.named_parameters()) {
    std::vector<float> g(static_cast<size_t>(p.tensor.numel()));
    for (size_t i = 0; i < g.size(); ++i) g[i] = 0.1f * static_cast<float>(i + 1);
    p.tensor.autograd_meta()->grad = Tensor::from_vector(g, p.tensor.shape());
  }
  optimizer.step(0.01);
}

TEST(Checkpoint, WeightsAndOptimizerStateRoundTripExactly) {
  TempDir dir("ckpt");
  TwoTensors a(1.0f);
  optim::AdamW opt_a(a.named_parameters());
  take_step(a, opt_a);
  take_step(a, opt_a);
  CheckpointData data{a.named_parameters(), &opt_a, {{"step", 2}}, {{"k", 1}}};
  const fs::path written = write_checkpoint(dir.path(), 2, data, 3);
  EXPECT_EQ(written.filename(), "step-00000002");
  ASSERT_EQ(latest_checkpoint(dir.path()), written);
  EXPECT_EQ(resolve_checkpoint_dir(dir.path()), written);
  EXPECT_EQ(read_json_file(written / "trainer_state.json")["step"], 2);

  TwoTensors b(-7.0f);
  optim::AdamW opt_b(b.named_parameters());
  load_weights(written, b.named_parameters());
  load_optimizer(written, opt_b);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a.named_parameters()[i].tensor.to_vector<float>(), b.named_parameters()[i].tensor.to_vector<float>());
    EXPECT_EQ(opt_a.exp_avg(i).to_vector<float>(), opt_b.exp_avg(i).to_vector<float>());
    EXPECT_EQ(opt_a.exp_avg_sq(i).to_vector<float>(), opt_b.exp_avg_sq(i).to_vector<float>());
    EXPECT_EQ(opt_b.step_count(i), 2);
  }
  // The continued trajectories agree bit for bit.
  take_step(a, opt_a);
  take_step(b, opt_b);
  EXPECT_EQ(a.named_parameters()[0].tensor.to_vector<float>(), b.named_parameters()[0].tensor.to_vector<float>());
}

TEST(Checkpoint, ShapeMismatchNamesTheTensor) {
  TempDir dir("ckpt");
  TwoTensors a(1.0f);
  const fs::path written = write_checkpoint(dir.path(), 1, CheckpointData{a.named_parameters(), nullptr, {}, {}}, 1);
  TwoTensors other(0.0f, Shape{3, 3});
  try {
    load_weights(written, other.named_parameters());
    FAIL() << "expected an error";
  } catch (const checkpoint::CheckpointError& e) {  // the user's data: exit 2
    EXPECT_NE(std::string(e.what()).find("layer.weight"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, KeepsTheNewestAndRemovesCrashDebris) {
  TempDir dir("ckpt");
  TwoTensors a(1.0f);
  const CheckpointData data{a.named_parameters(), nullptr, {}, {}};
  for (int64_t step : {10, 20, 30}) write_checkpoint(dir.path(), step, data, 2);
  const fs::path root = dir / "checkpoints";
  EXPECT_FALSE(fs::exists(root / "step-00000010"));
  EXPECT_TRUE(fs::exists(root / "step-00000020"));
  EXPECT_EQ(testutil::read_text(root / "latest"), "step-00000030\n");

  // Debris of a crashed timeline: a temporary directory goes; a later checkpoint stays (it may be the only
  // copy of work whose `latest` was lost).
  fs::create_directories(root / ".tmp-step-00000040");
  fs::create_directories(root / "step-00000050");
  write_checkpoint(dir.path(), 40, data, 2);
  EXPECT_FALSE(fs::exists(root / ".tmp-step-00000040"));
  EXPECT_TRUE(fs::exists(root / "step-00000050"));
  EXPECT_FALSE(fs::exists(root / "step-00000020"));
  EXPECT_TRUE(fs::exists(root / "step-00000030"));
  EXPECT_TRUE(fs::exists(root / "step-00000040" / "model.safetensors"));

  testutil::write_text(root / "latest", "garbage\n");
  EXPECT_THROW(latest_checkpoint(dir.path()), std::runtime_error);
  TempDir empty("ckpt");
  EXPECT_FALSE(latest_checkpoint(empty.path()).has_value());
  EXPECT_THROW(resolve_checkpoint_dir(empty.path()), std::invalid_argument);
}

}  // namespace
}  // namespace coco::tools
