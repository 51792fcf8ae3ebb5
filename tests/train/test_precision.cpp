// Mixed precision through `coco train` on the CUDA backend (the SIMT emulator without a GPU):
// bf16 working weights with f32 masters, and f16 with dynamic loss scaling. Checkpoints hold the f32
// masters, the loss stays finite and resume reproduces the uninterrupted run.
#include <gtest/gtest.h>

#include "engine/io/safetensors.h"
#include "tests/train/train_test_util.h"

namespace coco {
namespace {

using testutil::run_coco;
using testutil::RunResult;
using testutil::TempDir;
namespace fs = std::filesystem;

class Precision : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    ASSERT_TRUE(fs::exists(testutil::coco_binary())) << testutil::coco_binary();
    testutil::prepare_corpus(dir_.path(), dir_ / "data");
  }
  RunResult train(const std::string& out, std::vector<std::string> extra = {}) {
    nlohmann::json c = testutil::tiny_paper_config(dir_ / "data");
    c["train"]["steps"] = 6;
    c["train"]["log_every"] = 1;
    c["train"]["eval_every"] = 0;
    c["train"]["checkpoint_every"] = 3;
    c["precision"] = GetParam();
    c["runtime"]["device"] = "cuda";
    const fs::path cfg = testutil::write_config(dir_ / (out + ".json"), c);
    std::vector<std::string> args = {"train", "--config", cfg.string(), "--out", (dir_ / out).string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_coco(args, dir_.path());
  }
  TempDir dir_{"precision"};
};

TEST_P(Precision, TrainsWithF32MastersAndResumesExactly) {
  const std::string precision = GetParam();
  RunResult r = train("run");
  ASSERT_EQ(r.exit_code, 0) << "signal " << r.signal << ": " << r.err;
  const auto records = testutil::metrics_without_timing(dir_ / "run");
  int applied = 0, train_records = 0;
  for (const auto& j : records) {
    if (j.contains("split")) continue;  // the held-out evaluation at the last step
    ++train_records;
    ASSERT_FALSE(j["loss"].is_null()) << j.dump();
    if (j["skipped"] == 0) ++applied;
    if (precision == "f16") {
      EXPECT_GE(j["loss_scale"].get<double>(), 1.0);
    } else {
      EXPECT_EQ(j["loss_scale"].get<double>(), 1.0);
    }
  }
  EXPECT_EQ(train_records, 6);
  EXPECT_GT(applied, 0);
  if (precision == "f16") {
    EXPECT_EQ(records.front()["loss_scale"].get<double>(), 65536.0);
  }
  // Checkpoints hold f32 master weights under the parameter names.
  const auto reader =
      safetensors::Reader::open((dir_ / "run" / "checkpoints" / "step-00000006" / "model.safetensors").string());
  ASSERT_FALSE(reader.tensors().empty());
  for (const auto& t : reader.tensors()) EXPECT_EQ(t.dtype, DType::f32) << t.name;
  EXPECT_NE(reader.find("discriminator.token_embedding"), nullptr);

  // SIGKILL right after step 4 (the last checkpoint is step 3), resume: identical metrics.
  r = train("interrupted", {});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  fs::remove_all(dir_ / "interrupted");
  r = run_coco({"train", "--config", (dir_ / "interrupted.json").string(), "--out", (dir_ / "interrupted").string()},
               dir_.path(), {{"COCO_FAULT_INJECT", "after-step:4"}});
  EXPECT_NE(r.signal, 0) << "the fault injection did not kill the run: " << r.out;
  r = run_coco({"train", "--config", (dir_ / "interrupted.json").string(), "--out", (dir_ / "interrupted").string()},
               dir_.path());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(testutil::metrics_without_timing(dir_ / "interrupted"), records);
}

INSTANTIATE_TEST_SUITE_P(MixedPrecision, Precision, ::testing::Values("bf16", "f16"));

}  // namespace
}  // namespace coco
