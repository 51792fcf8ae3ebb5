// Exact resume: a run interrupted (cleanly by SIGINT/SIGTERM, or by SIGKILL at chosen moments, including
// inside checkpoint writing) and resumed logs exactly the same metrics as an uninterrupted run.
#include <gtest/gtest.h>

#include <thread>

#include "tests/train/train_test_util.h"

namespace coco {
namespace {

using testutil::run_coco;
using testutil::RunResult;
using testutil::TempDir;
namespace fs = std::filesystem;

class Resume : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir("resume");
    testutil::prepare_corpus(work_->path(), work_->path() / "data");
    nlohmann::json c = testutil::tiny_paper_config(work_->path() / "data");
    c["train"]["steps"] = 30;
    c["train"]["log_every"] = 1;
    c["train"]["eval_every"] = 10;
    c["train"]["checkpoint_every"] = 10;
    c["train"]["grad_accum"] = 2;
    config_ = testutil::write_config(work_->path() / "config.json", c);
    const RunResult r = run({"train", "--config", config_.string(), "--out", (work_->path() / "reference").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    reference_ = testutil::metrics_without_timing(work_->path() / "reference");
  }
  static void TearDownTestSuite() { delete work_; }

  static RunResult run(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {}) {
    return run_coco(args, work_->path(), env);
  }
  static std::vector<std::string> train_args(const fs::path& out) {
    return {"train", "--config", config_.string(), "--out", out.string()};
  }

  // Interrupts a fresh run at `fault` (COCO_FAULT_INJECT), then resumes it to the end; returns its metrics.
  std::vector<nlohmann::json> interrupted_then_resumed(const std::string& fault, int expected_signal,
                                                       int expected_exit) {
    const fs::path out = work_->path() / ("run-" + std::to_string(runs_++));
    const RunResult first = run(train_args(out), {{"COCO_FAULT_INJECT", fault}});
    EXPECT_EQ(first.signal, expected_signal) << fault << "\n" << first.err;
    if (expected_signal == 0) {
      EXPECT_EQ(first.exit_code, expected_exit) << fault << "\n" << first.err;
    }
    std::vector<std::string> args = train_args(out);
    args.push_back("--resume");
    const RunResult second = run(args);
    EXPECT_EQ(second.exit_code, 0) << fault << "\n" << second.err;
    return testutil::metrics_without_timing(out);
  }

  static TempDir* work_;
  static fs::path config_;
  static std::vector<nlohmann::json> reference_;
  static inline int runs_ = 0;  // run directories are unique across the suite
};

TempDir* Resume::work_ = nullptr;
fs::path Resume::config_;
std::vector<nlohmann::json> Resume::reference_;

TEST_F(Resume, ReferenceRunLoggedEveryStep) {
  ASSERT_EQ(reference_.size(), 33u);  // 30 steps + 3 evaluations
  EXPECT_EQ(reference_.back()["step"], 30);
}

TEST_F(Resume, SigkillBetweenSteps) {
  for (const char* fault : {"after-step:1", "after-step:14", "after-step:20", "after-step:29"})
    EXPECT_EQ(interrupted_then_resumed(fault, SIGKILL, 0), reference_) << fault;
}

TEST_F(Resume, SigkillDuringCheckpointWriting) {
  for (const char* fault : {"checkpoint:after-model:20", "checkpoint:before-rename:20", "checkpoint:before-latest:20",
                            "checkpoint:after-latest:20", "checkpoint:before-latest:10"})
    EXPECT_EQ(interrupted_then_resumed(fault, SIGKILL, 0), reference_) << fault;
}

TEST_F(Resume, CleanStopBySignalWritesACheckpointAndExitsZero) {
  const fs::path out = work_->path() / "clean";
  const RunResult first = run(train_args(out), {{"COCO_FAULT_INJECT", "sigint@after-step:13"}});
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_NE(first.out.find("stopped by SIGINT after step 13"), std::string::npos) << first.out;
  EXPECT_EQ(testutil::read_text(out / "checkpoints" / "latest"), "step-00000013\n");
  std::vector<std::string> args = train_args(out);
  args.push_back("--resume");
  ASSERT_EQ(run(args).exit_code, 0);
  EXPECT_EQ(testutil::metrics_without_timing(out), reference_);

  EXPECT_EQ(interrupted_then_resumed("sigterm@after-step:10", 0, 0),
            reference_);  // coincides with a periodic checkpoint
}

TEST_F(Resume, ConsecutiveNonFiniteStepsAreSkippedThenStopTheRun) {
  const fs::path out = work_->path() / "nonfinite";
  std::vector<std::string> args = train_args(out);
  args.insert(args.end(), {"--set", "train.max_consecutive_skips=2"});
  const RunResult r = run(args, {{"COCO_FAULT_INJECT", "nonfinite-from-step:13"}});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("max_consecutive_skips"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("step-00000010"), std::string::npos) << r.err;  // the last good checkpoint
  EXPECT_EQ(testutil::read_text(out / "checkpoints" / "latest"), "step-00000010\n");
  const auto records = testutil::metrics_without_timing(out);
  ASSERT_GE(records.size(), 14u);
  int skipped = 0;
  for (const auto& j : records) {
    if (j.contains("split")) continue;
    const int64_t step = j["step"].get<int64_t>();
    EXPECT_EQ(j["skipped"].get<int>(), step >= 13 ? 1 : 0) << j.dump();
    if (step >= 13) {
      ++skipped;
      EXPECT_TRUE(j["grad_norm"].is_null());
    }
  }
  EXPECT_EQ(skipped, 3);
  // Skipped steps leave the weights alone: resuming without the fault reproduces the reference.
  std::vector<std::string> again = train_args(out);
  again.push_back("--resume");
  ASSERT_EQ(run(again).exit_code, 0);
  EXPECT_EQ(testutil::metrics_without_timing(out), reference_);
}

TEST_F(Resume, RealSigtermFromOutside) {
  // A longer run, stopped by an external SIGTERM once it has logged a few steps.
  const fs::path out = work_->path() / "external";
  const std::string binary = testutil::coco_binary().string();
  const std::vector<std::string> args = train_args(out);
  std::vector<std::string> full = args;
  full.push_back("--set");
  full.push_back("train.steps=100000");
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::vector<char*> argv = {const_cast<char*>(binary.c_str())};
    for (auto& a : full) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  for (int i = 0; i < 600 && testutil::read_text(out / "metrics.jsonl").size() < 2000; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const auto latest = testutil::read_text(out / "checkpoints" / "latest");
  ASSERT_FALSE(latest.empty());
  const auto state = nlohmann::json::parse(
      testutil::read_text(out / "checkpoints" / latest.substr(0, latest.size() - 1) / "trainer_state.json"));
  EXPECT_GT(state["step"].get<int64_t>(), 0);
  // train.steps differs from the reference run (so the LR schedule does), but the first step's loss is
  // computed before any update: same data order, masks and initial weights.
  const auto records = testutil::metrics_without_timing(out);
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(records.front()["loss"], reference_.front()["loss"]);
}

}  // namespace
}  // namespace coco
