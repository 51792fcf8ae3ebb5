// The `coco` binary end to end: help, exit codes, config and data errors, prepare -> train -> eval.
#include <gtest/gtest.h>

#include "tests/train/train_test_util.h"

namespace coco {
namespace {

using testutil::run_coco;
using testutil::RunResult;
using testutil::TempDir;
namespace fs = std::filesystem;

class CliTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(testutil::coco_binary())) << testutil::coco_binary();
    testutil::prepare_corpus(dir_.path(), dir_ / "data");
  }
  fs::path config(const nlohmann::json& j, const std::string& name = "config.json") {
    return testutil::write_config(dir_ / name, j);
  }
  RunResult train(const fs::path& config_path, const std::string& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"train", "--config", config_path.string(), "--out", (dir_ / out).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_coco(args, dir_.path());
  }
  TempDir dir_{"cli"};
};

TEST_F(CliTrain, HelpDocumentsEveryCommandAndOption) {
  RunResult r = run_coco({"--help"}, dir_.path());
  EXPECT_EQ(r.exit_code, 0);
  for (const char* word : {"prepare", "train", "eval"}) EXPECT_NE(r.out.find(word), std::string::npos);
  r = run_coco({"train", "--help"}, dir_.path());
  EXPECT_EQ(r.exit_code, 0);
  for (const char* option : {"--config", "--out", "--set", "--resume"})
    EXPECT_NE(r.out.find(option), std::string::npos) << option;
  r = run_coco({"prepare", "--help"}, dir_.path());
  for (const char* option : {"--vocab", "--vocab-size", "--valid-fraction", "--out"})
    EXPECT_NE(r.out.find(option), std::string::npos) << option;
  r = run_coco({"eval", "--help"}, dir_.path());
  EXPECT_NE(r.out.find("--checkpoint"), std::string::npos);
}

TEST_F(CliTrain, UsageErrorsExitTwo) {
  EXPECT_EQ(run_coco({}, dir_.path()).exit_code, 2);
  RunResult r = run_coco({"frobnicate"}, dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("frobnicate"), std::string::npos);
  r = run_coco({"train", "--config", "x.json"}, dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--out"), std::string::npos) << r.err;
  r = run_coco({"prepare", "--out", (dir_ / "p").string(), (dir_ / "corpus.txt").string()}, dir_.path());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--vocab"), std::string::npos) << r.err;
}

TEST_F(CliTrain, ConfigErrorsExitTwoNamingFileAndKey) {
  nlohmann::json c = testutil::tiny_paper_config(dir_ / "data");
  c["optim"]["lr_typo"] = 1;
  RunResult r = train(config(c, "typo.json"), "run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("typo.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("optim.lr_typo"), std::string::npos) << r.err;

  r = train(config(testutil::tiny_paper_config(dir_ / "data")), "run", {"--set", "train.keep_checkpoints=zero"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("train.keep_checkpoints"), std::string::npos) << r.err;

  r = train(dir_ / "no-such-config.json", "run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no-such-config.json"), std::string::npos) << r.err;
}

TEST_F(CliTrain, DataErrorsExitTwo) {
  const fs::path cfg = config(testutil::tiny_paper_config(dir_ / "data"));
  // Vocabulary size mismatch between meta.json and the config.
  RunResult r = train(cfg, "run", {"--set", "model.vocab_size=80"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("meta.json"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("model.vocab_size"), std::string::npos) << r.err;
  // Special ids that disagree with the vocabulary.
  r = train(cfg, "run", {"--set", "objective.mask_id=7"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("objective.mask_id"), std::string::npos) << r.err;
  // Missing data directory.
  r = train(cfg, "run", {"--set", "data.dir=" + (dir_ / "nowhere").string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("meta.json"), std::string::npos) << r.err;
  // A corrupted shard (one payload byte flipped): checksum error naming the file.
  const fs::path shard = dir_ / "data" / "train_000000.bin";
  std::string bytes = testutil::read_text(shard);
  bytes[bytes.size() / 2] ^= 0x10;
  testutil::write_text(shard, bytes);
  r = train(cfg, "run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("train_000000.bin"), std::string::npos) << r.err;
  // Truncated.
  testutil::write_text(shard, bytes.substr(0, bytes.size() - 5));
  r = train(cfg, "run");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("train_000000.bin"), std::string::npos) << r.err;
}

TEST_F(CliTrain, PrepareTrainEvalLossFalls) {
  // prepare through the CLI (plain progress lines: stdout is a file).
  RunResult r = run_coco({"prepare", "--vocab-size", "64", "--valid-fraction", "0.1", "--out",
                          (dir_ / "cli-data").string(), (dir_ / "corpus.txt").string()},
                         dir_.path());
  ASSERT_EQ(r.exit_code, 0) << "signal " << r.signal << ": " << r.err;
  EXPECT_NE(r.out.find("tokenizing"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\r'), std::string::npos);
  ASSERT_TRUE(fs::exists(dir_ / "cli-data" / "meta.json"));

  nlohmann::json c = testutil::tiny_paper_config(dir_ / "cli-data");
  c["train"]["steps"] = 60;
  c["train"]["log_every"] = 10;
  c["train"]["eval_every"] = 30;
  c["train"]["checkpoint_every"] = 30;
  r = train(config(c), "run");
  ASSERT_EQ(r.exit_code, 0) << "signal " << r.signal << ": " << r.err;
  const auto records = testutil::metrics_without_timing(dir_ / "run");
  std::vector<double> train_losses;
  int evals = 0;
  for (const auto& j : records) {
    if (j.contains("split")) {
      EXPECT_EQ(j["split"], "valid");
      ++evals;
      continue;
    }
    for (const char* key : {"step", "loss", "mlm_loss", "rtd_loss", "clm_loss", "cl_loss", "mlm_acc", "rtd_acc",
                            "cl_acc", "clm_acc", "lr", "grad_norm", "loss_scale", "skipped"})
      EXPECT_TRUE(j.contains(key)) << key << " missing in " << j.dump();
    train_losses.push_back(j["loss"].get<double>());
  }
  EXPECT_EQ(evals, 2);
  ASSERT_EQ(train_losses.size(), 6u);
  EXPECT_LT(train_losses.back(), train_losses.front()) << "the loss should fall over 60 steps";

  // The resolved config is complete and itself a valid config.
  const nlohmann::json resolved = nlohmann::json::parse(testutil::read_text(dir_ / "run" / "config.json"));
  EXPECT_EQ(resolved["train"]["steps"], 60);
  EXPECT_TRUE(resolved["objective"].contains("mask_prob"));
  EXPECT_TRUE(fs::exists(dir_ / "run" / "checkpoints" / "step-00000060" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir_ / "run" / "checkpoints" / "step-00000060" / "optimizer.safetensors"));

  // eval: table + JSON.
  r = run_coco({"eval", "--checkpoint", (dir_ / "run").string(), "--json", (dir_ / "eval.json").string()}, dir_.path());
  ASSERT_EQ(r.exit_code, 0) << "signal " << r.signal << ": " << r.err;
  EXPECT_NE(r.out.find("mlm_accuracy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("contrastive_accuracy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("clm_accuracy"), std::string::npos) << r.out;
  const nlohmann::json report = nlohmann::json::parse(testutil::read_text(dir_ / "eval.json"));
  EXPECT_EQ(report["step"], 60);
  EXPECT_EQ(report["split"], "valid");
  EXPECT_GE(report["mlm_acc"].get<double>(), 0.0);
  EXPECT_LE(report["mlm_acc"].get<double>(), 1.0);
  // The eval at the final step inside training saw the same batches with the same keys.
  double logged_final_eval = -1;
  for (const auto& j : records)
    if (j.contains("split") && j["step"] == 60) logged_final_eval = j["mlm_loss"].get<double>();
  EXPECT_EQ(report["mlm_loss"].get<double>(), logged_final_eval);

  // Resuming with a different model shape is refused, naming the difference.
  r = train(config(c), "run", {"--set", "model.discriminator.depth=3", "--set", "train.steps=70"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("model.discriminator.depth: 2 -> 3"), std::string::npos) << r.err;
}

TEST_F(CliTrain, LucidrainsPresetTrains) {
  nlohmann::json c = testutil::tiny_lucidrains_config(dir_ / "data");
  c["train"]["steps"] = 10;
  const RunResult r = train(config(c), "run");
  ASSERT_EQ(r.exit_code, 0) << "signal " << r.signal << ": " << r.err;
  const auto records = testutil::metrics_without_timing(dir_ / "run");
  ASSERT_FALSE(records.empty());
  EXPECT_FALSE(records.front().contains("clm_loss"));
  EXPECT_FALSE(records.front().contains("clm_acc"));
  EXPECT_TRUE(records.front().contains("rtd_loss"));
}

}  // namespace
}  // namespace coco
