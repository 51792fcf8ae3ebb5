// coco/train_config: strict parsing, --set overrides, the vocabulary taken from the data, schedule, shape
// differences.
#include "coco/train_config.h"

#include <gtest/gtest.h>

#include "coco/data_loader.h"
#include "tests/train/train_test_util.h"

namespace coco::train {
namespace {

using testutil::TempDir;

std::string error_of(const nlohmann::json& config, const std::vector<std::string>& overrides = {}) {
  TempDir dir("cfg");
  const auto path = testutil::write_config(dir / "c.json", config);
  try {
    load_train_config(path.string(), overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(TrainConfig, ParsesTinyConfigAndRoundTrips) {
  TempDir dir("cfg");
  const auto path = testutil::write_config(dir / "c.json", testutil::tiny_paper_config("data"));
  const TrainConfig c = load_train_config(path.string());
  EXPECT_EQ(c.model.vocab_size, 64);
  EXPECT_EQ(c.data.seq_len, 16);
  EXPECT_EQ(c.train.steps, 30);
  EXPECT_DOUBLE_EQ(c.optim.beta2, 0.98);
  EXPECT_EQ(c.device, Device::cpu);
  EXPECT_TRUE(std::filesystem::path(c.data.dir).is_absolute());
  const nlohmann::json j = train_config_to_json(c);
  const TrainConfig again = parse_train_config(j, "round-trip");
  EXPECT_EQ(train_config_to_json(again), j);
  EXPECT_EQ(config_hash(again), config_hash(c));
}

TEST(TrainConfig, ShippedDemoConfigTakesItsVocabularyFromTheData) {
  TempDir dir("cfg");
  testutil::prepare_corpus(dir.path(), dir / "data");  // 64 tokens, [PAD] [UNK] [CLS] [SEP] [MASK] = 0..4
  const TrainConfig c =
      load_train_config(std::string(COCO_SOURCE_DIR) + "/configs/demo.json", {"data.dir=" + (dir / "data").string()});
  EXPECT_EQ(c.model.discriminator.depth, 4);
  EXPECT_EQ(c.objective.preset, objective::Preset::paper);
  EXPECT_EQ(c.model.vocab_size, 64);
  EXPECT_EQ(c.objective.pad_id, 0);
  EXPECT_EQ(c.objective.unk_id, 1);
  EXPECT_EQ(c.objective.cls_id, 2);
  EXPECT_EQ(c.objective.sep_id, 3);
  EXPECT_EQ(c.objective.mask_id, 4);
  // The resolved config names the values used and is complete: parsing it needs no data.
  const nlohmann::json resolved = train_config_to_json(c);
  EXPECT_EQ(resolved["model"]["vocab_size"], 64);
  EXPECT_EQ(resolved["objective"]["mask_id"], 4);
  EXPECT_EQ(train_config_to_json(parse_train_config(resolved, "resolved")), resolved);
}

TEST(TrainConfig, VocabularyLeftToMissingDataIsAClearError) {
  TempDir dir("cfg");
  nlohmann::json c = testutil::tiny_paper_config(dir / "nowhere");
  c["model"]["vocab_size"] = "auto";
  const auto path = testutil::write_config(dir / "c.json", c);
  try {
    load_train_config(path.string());
    FAIL() << "expected a DataError";
  } catch (const data::DataError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("c.json"), std::string::npos) << message;
    EXPECT_NE(message.find("model.vocab_size"), std::string::npos) << message;
    EXPECT_NE(message.find("meta.json"), std::string::npos) << message;
    EXPECT_NE(message.find("coco prepare"), std::string::npos) << message;
  }
  // Without data.dir, and through the JSON parser without data: ConfigErrors naming the key.
  c["data"].erase("dir");
  testutil::write_config(path, c);
  EXPECT_THROW(load_train_config(path.string()), ConfigError);
  c["data"]["dir"] = "x";
  try {
    parse_train_config(c, "c.json");
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("'model.vocab_size'"), std::string::npos) << e.what();
  }
}

TEST(TrainConfig, ExplicitValuesThatDisagreeWithTheDataAreErrors) {
  TempDir dir("cfg");
  testutil::prepare_corpus(dir.path(), dir / "data");
  const data::PreparedMeta meta = data::PreparedMeta::read(dir / "data");
  const auto path = testutil::write_config(dir / "c.json", testutil::tiny_paper_config(dir / "data"));
  auto error = [&](const std::vector<std::string>& overrides, ConfigOrigin origin) {
    try {
      check_data_against_config(meta, load_train_config(path.string(), overrides), "c.json", origin);
    } catch (const data::DataError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error({}, ConfigOrigin::user), "");
  EXPECT_EQ(error({"objective.unk_id=-1"}, ConfigOrigin::user), "");  // explicitly unused: not compared
  std::string e = error({"model.vocab_size=80"}, ConfigOrigin::user);
  EXPECT_NE(e.find("model.vocab_size = 80"), std::string::npos) << e;
  EXPECT_NE(e.find("64 tokens"), std::string::npos) << e;
  EXPECT_NE(e.find("--set model.vocab_size=auto"), std::string::npos) << e;
  e = error({"objective.mask_id=7"}, ConfigOrigin::user);
  EXPECT_NE(e.find("'objective.mask_id' is 7"), std::string::npos) << e;
  EXPECT_NE(e.find("has it at 4"), std::string::npos) << e;
  EXPECT_NE(e.find("--set objective.mask_id=auto"), std::string::npos) << e;
  // A checkpoint's values are fixed by its weights: no advice to change them.
  e = error({"objective.mask_id=7"}, ConfigOrigin::checkpoint);
  EXPECT_EQ(e.find("--set"), std::string::npos) << e;
  EXPECT_NE(e.find("checkpoint's vocabulary"), std::string::npos) << e;
  // "auto" through --set takes the data's value.
  EXPECT_EQ(load_train_config(path.string(), {"objective.mask_id=auto", "model.vocab_size=auto"}).objective.mask_id, 4);
}

TEST(TrainConfig, OverridesApplyDottedKeys) {
  TempDir dir("cfg");
  const auto path = testutil::write_config(dir / "c.json", testutil::tiny_paper_config("data"));
  const TrainConfig c =
      load_train_config(path.string(), {"train.steps=200", "runtime.device=cpu", "optim.schedule=cosine"});
  EXPECT_EQ(c.train.steps, 200);
  EXPECT_EQ(c.optim.schedule, "cosine");
}

// train.global_batch fixes the rows per optimizer step; grad_accum follows from the launch's world size.
TEST(TrainConfig, GlobalBatchDerivesGradAccumPerWorldSize) {
  nlohmann::json config = testutil::tiny_paper_config("data");
  config["train"].erase("grad_accum");
  config["train"]["global_batch"] = 24;  // micro_batch 8
  TempDir dir("cfg");
  const auto path = testutil::write_config(dir / "c.json", config);
  TrainConfig c = load_train_config(path.string());
  EXPECT_EQ(c.train.global_batch, 24);
  const nlohmann::json resolved = train_config_to_json(c);
  EXPECT_EQ(resolved["train"]["global_batch"], 24);
  EXPECT_FALSE(resolved["train"].contains("grad_accum"));  // the run does not depend on the launch
  EXPECT_EQ(train_config_to_json(parse_train_config(resolved, "resolved")), resolved);
  for (const auto& [world, accum] : std::vector<std::pair<int, int64_t>>{{1, 3}, {3, 1}}) {
    TrainConfig launched = c;
    apply_world_size(launched, world, "c.json");
    EXPECT_EQ(launched.train.grad_accum, accum) << world;
    EXPECT_EQ(config_hash(launched), config_hash(c)) << world;
  }
  TrainConfig two = c;
  try {
    apply_world_size(two, 2, "c.json");
    ADD_FAILURE() << "24 rows on 2 ranks x micro_batch 8 accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("c.json: key 'train.global_batch': 24 rows are not divisible by 2 ranks x "
                                         "train.micro_batch 8 = 16"),
              std::string::npos)
        << e.what();
  }
  config["train"]["grad_accum"] = 2;
  EXPECT_NE(error_of(config).find("train.grad_accum"), std::string::npos) << error_of(config);
  config["train"].erase("grad_accum");
  config["train"]["global_batch"] = 20;
  EXPECT_NE(error_of(config).find("train.global_batch"), std::string::npos) << error_of(config);
}

TEST(TrainConfig, UnknownKeyNamesFileAndDottedKey) {
  nlohmann::json c = testutil::tiny_paper_config("data");
  c["train"]["stepz"] = 3;
  const std::string e = error_of(c);
  EXPECT_NE(e.find("c.json"), std::string::npos) << e;
  EXPECT_NE(e.find("train.stepz"), std::string::npos) << e;
  nlohmann::json top = testutil::tiny_paper_config("data");
  top["trian"] = nlohmann::json::object();
  EXPECT_NE(error_of(top).find("'trian'"), std::string::npos);
  EXPECT_NE(error_of(testutil::tiny_paper_config("data"), {"optim.betaz=1"}).find("optim.betaz"), std::string::npos);
}

TEST(TrainConfig, WrongTypesAndRangesAreErrors) {
  nlohmann::json c = testutil::tiny_paper_config("data");
  c["train"]["micro_batch"] = "eight";
  std::string e = error_of(c);
  EXPECT_NE(e.find("train.micro_batch"), std::string::npos) << e;
  EXPECT_NE(e.find("integer"), std::string::npos) << e;

  e = error_of(testutil::tiny_paper_config("data"), {"train.steps=0"});
  EXPECT_NE(e.find("train.steps"), std::string::npos) << e;
  EXPECT_NE(e.find("an integer in [1,"), std::string::npos) << e;

  e = error_of(testutil::tiny_paper_config("data"), {"optim.betas=[0.9, 1.5]"});
  EXPECT_NE(e.find("optim.betas"), std::string::npos) << e;

  e = error_of(testutil::tiny_paper_config("data"), {"optim.eps=0"});
  EXPECT_NE(e.find("optim.eps"), std::string::npos) << e;
  EXPECT_NE(e.find("(0, 1]"), std::string::npos) << e;

  e = error_of(testutil::tiny_paper_config("data"), {"optim.lr=10", "optim.weight_decay=10"});
  EXPECT_NE(e.find("optim.weight_decay"), std::string::npos) << e;
  EXPECT_NE(e.find("lr * weight_decay = 100"), std::string::npos) << e;

  e = error_of(testutil::tiny_paper_config("data"), {"optim.schedule=step"});
  EXPECT_NE(e.find("\"linear\", \"cosine\""), std::string::npos) << e;

  e = error_of(testutil::tiny_paper_config("data"), {"data.seq_len=64"});
  EXPECT_NE(e.find("data.seq_len"), std::string::npos) << e;
  EXPECT_NE(e.find("max_positions"), std::string::npos) << e;

  e = error_of(testutil::tiny_paper_config("data"), {"runtime.device=tpu"});
  EXPECT_NE(e.find("runtime.device"), std::string::npos) << e;

  e = error_of(testutil::tiny_paper_config("data"), {"train.micro_batch=1"});  // contrastive needs 2 rows
  EXPECT_NE(e.find("micro_batch"), std::string::npos) << e;
}

TEST(TrainConfig, MixedPrecisionNeedsTheCudaDevice) {
  const std::string e = error_of(testutil::tiny_paper_config("data"), {"precision=bf16", "runtime.device=cpu"});
  EXPECT_NE(e.find("'precision'"), std::string::npos) << e;
  EXPECT_NE(e.find("cuda"), std::string::npos) << e;
  EXPECT_NE(error_of(testutil::tiny_paper_config("data"), {"precision=f8"}).find("'precision'"), std::string::npos);
}

// ZeRO-1 shards every precision (f32 masters of 16-bit working copies too); only 0 and 1 are stages.
TEST(TrainConfig, ZeroStages) {
  EXPECT_EQ(error_of(testutil::tiny_paper_config("data"), {"optim.zero=1"}), "");
  for (const char* precision : {"precision=bf16", "precision=f16"})
    EXPECT_EQ(error_of(testutil::tiny_paper_config("data"), {"optim.zero=1", precision, "runtime.device=cuda"}), "")
        << precision;
  EXPECT_EQ(error_of(testutil::tiny_paper_config("data"), {"optim.zero=1", "dist.reduce_dtype=bf16"}), "");
  const std::string e = error_of(testutil::tiny_paper_config("data"), {"optim.zero=2"});
  EXPECT_NE(e.find("optim.zero"), std::string::npos) << e;
}

TEST(TrainConfig, MissingAndInvalidFiles) {
  EXPECT_THROW(load_train_config("/nonexistent/coco-config.json"), ConfigError);
  TempDir dir("cfg");
  testutil::write_text(dir / "bad.json", "{\"model\": ");
  try {
    load_train_config((dir / "bad.json").string());
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos);
  }
  nlohmann::json no_data = testutil::tiny_paper_config("data");
  no_data.erase("data");
  EXPECT_NE(error_of(no_data).find("'data'"), std::string::npos);
}

TEST(TrainConfig, LearningRateSchedule) {
  OptimConfig o;
  o.lr = 1.0;
  o.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(learning_rate(o, 14, 0), 0.25);
  EXPECT_DOUBLE_EQ(learning_rate(o, 14, 3), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 14, 4), 1.0);
  EXPECT_DOUBLE_EQ(learning_rate(o, 14, 9), 0.5);
  o.schedule = "cosine";
  EXPECT_NEAR(learning_rate(o, 14, 9), 0.5, 1e-12);
  EXPECT_NEAR(learning_rate(o, 14, 14), 0.0, 1e-12);
}

TEST(TrainConfig, ShapeDifferencesNameTheKeys) {
  TempDir dir("cfg");
  const auto path = testutil::write_config(dir / "c.json", testutil::tiny_paper_config("data"));
  const TrainConfig a = load_train_config(path.string());
  const TrainConfig b = load_train_config(
      path.string(), {"model.discriminator.depth=3", "train.steps=99", "model.discriminator.dropout.attention=0.0"});
  const auto diff = model_shape_differences(a, b);
  ASSERT_EQ(diff.size(), 1u);
  EXPECT_EQ(diff[0], "model.discriminator.depth: 2 -> 3");
  EXPECT_TRUE(model_shape_differences(a, a).empty());
}

}  // namespace
}  // namespace coco::train
