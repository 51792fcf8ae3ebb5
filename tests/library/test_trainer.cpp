// coco::Trainer (coco/trainer.h), the training API behind `coco train`: the same files as the command line, the
// metrics callback, step-by-step training, resume, a requested stop, evaluation, and misuse reported.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "coco/prepare.h"
#include "coco/trainer.h"
#include "engine/config.h"
#include "engine/runtime/counters.h"
#include "tests/train/train_test_util.h"

namespace coco {
namespace {

namespace fs = std::filesystem;
using testutil::TempDir;

const fs::path kEnglish = fs::path(COCO_SOURCE_DIR) / "tests" / "data" / "english";
const fs::path kTinyConfig = fs::path(COCO_SOURCE_DIR) / "examples" / "tiny.json";

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir("trainer");
    text::PrepareOptions options;
    options.inputs = {kEnglish / "alice.txt", kEnglish / "pride.txt"};
    options.output_dir = *work_ / "data";
    options.vocab_size = 300;
    options.valid_fraction = 0.3;
    options.document_boundary = text::DocumentBoundary::line;
    options.threads = 1;
    text::prepare(options);
    data_ = options.output_dir;
  }
  static void TearDownTestSuite() { delete work_; }

  static TrainerOptions options_for(const fs::path& run, std::vector<nlohmann::json>* records = nullptr) {
    TrainerOptions o;
    o.run_dir = run;
    o.overrides = {"data.dir=" + data_.string(), "train.log_every=1", "train.eval_every=3"};
    if (records) o.on_metrics = [records](const nlohmann::json& r) { records->push_back(r); };
    return o;
  }

  static inline TempDir* work_ = nullptr;
  static inline fs::path data_;
};

std::vector<nlohmann::json> metrics_of(const fs::path& run) { return testutil::metrics_without_timing(run); }

std::vector<nlohmann::json> without_timing(std::vector<nlohmann::json> records) {
  for (auto& r : records) r.erase("tokens_per_s");
  return records;
}

TEST_F(TrainerTest, WritesWhatCocoTrainWritesAndReportsEveryRecord) {
  const fs::path api_run = *work_ / "api", cli_run = *work_ / "cli";
  std::vector<nlohmann::json> records;
  std::vector<int64_t> steps;
  TrainerOptions o = options_for(api_run, &records);
  o.on_step = [&](const StepReport& r) { steps.push_back(r.step); };
  Trainer trainer = Trainer::from_file(kTinyConfig, o);
  EXPECT_EQ(trainer.step(), 0);
  EXPECT_EQ(trainer.total_steps(), 6);
  EXPECT_FALSE(trainer.resumed_from());
  EXPECT_EQ(trainer.run(), 6);
  EXPECT_TRUE(trainer.done());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  ASSERT_TRUE(trainer.last_checkpoint());
  EXPECT_EQ(trainer.last_checkpoint()->filename(), "step-00000006");

  const testutil::RunResult r =
      testutil::run_coco({"train", "--config", kTinyConfig.string(), "--out", cli_run.string(), "--set",
                          "data.dir=" + data_.string(), "--set", "train.log_every=1", "--set", "train.eval_every=3"},
                         work_->path());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // The same records (timing aside), bit for bit, and the callback saw each as written.
  EXPECT_EQ(metrics_of(api_run), metrics_of(cli_run));
  EXPECT_EQ(without_timing(records), metrics_of(api_run));
  EXPECT_EQ(records.size(), 6u + 2u);  // a record per step, evaluations at steps 3 and 6
  for (const char* file : {"config.json", "checkpoints/latest", "checkpoints/step-00000006/model.safetensors",
                           "checkpoints/step-00000006/vocab.txt"})
    EXPECT_TRUE(fs::exists(api_run / file)) << file;
  EXPECT_EQ(testutil::read_text(api_run / "config.json"), testutil::read_text(cli_run / "config.json"));
}

TEST_F(TrainerTest, StepByStepThenResumeMatchesOneUninterruptedRun) {
  const fs::path whole = *work_ / "whole", parts = *work_ / "parts";
  Trainer::from_file(kTinyConfig, options_for(whole)).run();
  {
    TrainerOptions o = options_for(parts);
    o.overrides.push_back("train.steps=6");
    Trainer first = Trainer::from_file(kTinyConfig, o);
    for (int i = 0; i < 4; ++i) {
      const StepReport report = first.train_step();
      EXPECT_EQ(report.step, i + 1);
      EXPECT_TRUE(std::isfinite(report.loss));
      EXPECT_TRUE(report.logged);
      EXPECT_NE(report.status.find("step " + std::to_string(i + 1) + "/6"), std::string::npos) << report.status;
    }
    EXPECT_EQ(first.save().filename(), "step-00000004");
  }  // the run directory is unlocked when the Trainer goes away
  Trainer second = Trainer::from_file(kTinyConfig, options_for(parts));
  ASSERT_TRUE(second.resumed_from());
  EXPECT_EQ(second.step(), 4);
  EXPECT_EQ(second.run(), 2);
  EXPECT_EQ(metrics_of(parts), metrics_of(whole));
}

TEST_F(TrainerTest, AStopRequestWritesACheckpointAndEndsRun) {
  const fs::path run = *work_ / "stop";
  TrainerOptions o = options_for(run);
  int calls = 0;
  o.stop_requested = [&] { return ++calls == 2; };
  Trainer trainer = Trainer::from_file(kTinyConfig, o);
  EXPECT_EQ(trainer.run(), 2);
  EXPECT_EQ(trainer.step(), 2);
  ASSERT_TRUE(trainer.last_checkpoint());
  EXPECT_EQ(trainer.last_checkpoint()->filename(), "step-00000002");
}

TEST_F(TrainerTest, EvaluateReportsHeldOutMetricsWithoutWriting) {
  const fs::path run = *work_ / "evaluate";
  Trainer trainer = Trainer::from_file(kTinyConfig, options_for(run));
  trainer.train_step();
  const auto before = testutil::read_text(run / "metrics.jsonl");
  const nlohmann::json all = trainer.evaluate(0), two = trainer.evaluate(2);
  EXPECT_EQ(testutil::read_text(run / "metrics.jsonl"), before);
  for (const char* key : {"loss", "mlm_loss", "rtd_loss", "clm_loss", "cl_loss", "mlm_acc", "rtd_acc"})
    EXPECT_TRUE(all.contains(key) && std::isfinite(all[key].get<double>())) << key;
  EXPECT_EQ(all["split"], "valid");
  EXPECT_EQ(all["step"], 1);
  EXPECT_GE(all["sequences"].get<int64_t>(), two["sequences"].get<int64_t>());
}

TEST_F(TrainerTest, FromJsonAndMisuse) {
  nlohmann::json config = nlohmann::json::parse(testutil::read_text(kTinyConfig));
  config["data"]["dir"] = data_.string();
  config["train"]["steps"] = 2;
  TrainerOptions o;
  o.run_dir = *work_ / "json";
  Trainer trainer = Trainer::from_json(config, "my config", o);
  EXPECT_EQ(trainer.run(), 2);
  EXPECT_THROW(trainer.train_step(), std::logic_error);
  EXPECT_EQ(trainer.config()["train"]["steps"], 2);

  config["optim"]["lr_typo"] = 1;
  try {
    Trainer::from_json(config, "my config", o);
    ADD_FAILURE() << "an unknown key was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("my config"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("optim.lr_typo"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Trainer::from_file(kTinyConfig, TrainerOptions{}), std::invalid_argument);  // no run_dir
}

// Issue #14 at the Trainer: on the (emulated) CUDA device a non-logging step is decided on the device and
// reads nothing back; its record comes at the next logging step, whose losses stay finite, and a resumed
// run on CUDA still reproduces the uninterrupted one.
TEST_F(TrainerTest, ANonLoggingCudaStepReadsNothingBackAndResumesExactly) {
  const auto cuda_options = [](const fs::path& run, std::vector<nlohmann::json>* records) {
    TrainerOptions o = options_for(run, records);
    o.overrides.insert(o.overrides.end(),
                       {"runtime.device=cuda", "train.log_every=3", "train.eval_every=0", "train.steps=6"});
    return o;
  };
  std::vector<nlohmann::json> records;
  Trainer trainer = Trainer::from_file(kTinyConfig, cuda_options(*work_ / "cuda", &records));
  for (int i = 0; i < 4; ++i) trainer.train_step();  // warm-up, and the step-3 record
  runtime::StepProfile profile;
  const StepReport report = trainer.train_step();  // step 5: not logged
  const runtime::Counters step = profile.elapsed();
  std::printf("coco::Trainer non-logging CUDA step: %s\n", step.describe().c_str());
  EXPECT_FALSE(report.logged);
  EXPECT_EQ(step.d2h_copies, 0u) << step.describe();
  EXPECT_EQ(step.synchronizations(), 0u) << step.describe();
  EXPECT_EQ(step.device_mallocs, 0u) << step.describe();
  EXPECT_TRUE(std::isnan(report.loss)) << "the step's loss stays on the device until its record";
  EXPECT_NE(report.status.find("step 5/6 lr"), std::string::npos) << report.status;
  const StepReport last = trainer.train_step();
  EXPECT_TRUE(last.logged);
  EXPECT_TRUE(std::isfinite(last.loss));
  EXPECT_TRUE(std::isfinite(last.grad_norm));
  std::vector<nlohmann::json> training;
  for (const auto& r : records)
    if (!r.contains("split")) training.push_back(r);  // the final evaluation aside
  ASSERT_EQ(training.size(), 2u);                     // steps 3 and 6
  EXPECT_EQ(training[0]["step"], 3);
  EXPECT_EQ(training[1]["step"], 6);
  EXPECT_EQ(training[1]["skipped"], 0);

  // Two steps, a checkpoint, a new Trainer: the same records as one run.
  const fs::path parts = *work_ / "cuda-parts";
  {
    Trainer first = Trainer::from_file(kTinyConfig, cuda_options(parts, nullptr));
    for (int i = 0; i < 4; ++i) first.train_step();
    EXPECT_EQ(first.save().filename(), "step-00000004");
  }
  Trainer second = Trainer::from_file(kTinyConfig, cuda_options(parts, nullptr));
  ASSERT_TRUE(second.resumed_from());
  second.run();
  EXPECT_EQ(metrics_of(parts), metrics_of(*work_ / "cuda"));
}

}  // namespace
}  // namespace coco
