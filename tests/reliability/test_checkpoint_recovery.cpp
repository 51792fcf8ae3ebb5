// Issue #11, classes 1, 2, 5, 6, 7, 8: lost `latest`, retention, the run directory lock, checkpoint
// checksums, trainer_state / optimizer validation, non-finite weights and moments, failing metrics writes.
// Every planted fault is checked for its exit code, a message naming the file (and key / tensor), and that
// no existing checkpoint changed.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "tests/reliability/reliability_util.h"
#include "tools/lib/checkpoint.h"

namespace coco::reliability {
namespace {

using testutil::TempDir;

class CheckpointRecovery : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    work_ = new TempDir("ckpt-recovery");
    testutil::prepare_corpus(work_->path(), work_->path() / "data");
    nlohmann::json c = testutil::tiny_paper_config(work_->path() / "data");
    c["train"]["steps"] = 30;
    c["train"]["log_every"] = 5;
    c["train"]["eval_every"] = 10;
    c["train"]["checkpoint_every"] = 10;
    c["train"]["keep_checkpoints"] = 2;
    config_ = testutil::write_config(work_->path() / "config.json", c);
    const RunResult r = run_coco_bounded(train_args(base()), work_->path());
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_TRUE(fs::exists(base() / "checkpoints" / "step-00000020"));
    ASSERT_TRUE(fs::exists(base() / "checkpoints" / "step-00000030"));
  }
  static void TearDownTestSuite() { delete work_; }

  static fs::path base() { return work_->path() / "base"; }
  static std::vector<std::string> train_args(const fs::path& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"train", "--config", config_.string(), "--out", out.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  }
  // A copy of the 30-step base run to damage.
  fs::path copy_of_base(const std::string& name) {
    const fs::path out = work_->path() / (name + "-" + std::to_string(copies_++));
    fs::copy(base(), out, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    return out;
  }
  static RunResult run(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {}) {
    return run_coco_bounded(args, work_->path(), env);
  }

  static TempDir* work_;
  static fs::path config_;
  static inline int copies_ = 0;
};

TempDir* CheckpointRecovery::work_ = nullptr;
fs::path CheckpointRecovery::config_;

TEST_F(CheckpointRecovery, UnusableLatestResumesFromTheNewestValidCheckpoint) {
  const std::map<std::string, std::function<void(const fs::path&)>> damages = {
      {"deleted", [](const fs::path& latest) { fs::remove(latest); }},
      {"dangling symlink",
       [](const fs::path& latest) {
         fs::remove(latest);
         fs::create_symlink("no-such-file", latest);
       }},
      {"symlink loop",
       [](const fs::path& latest) {
         fs::remove(latest);
         fs::create_symlink("latest", latest);
       }},
      {"names a missing checkpoint", [](const fs::path& latest) { testutil::write_text(latest, "step-00000099\n"); }},
      {"garbage", [](const fs::path& latest) { testutil::write_text(latest, "\x01\x02garbage"); }},
  };
  for (const auto& [what, damage] : damages) {
    const fs::path out = copy_of_base("lost-latest");
    damage(out / "checkpoints" / "latest");
    const auto step30 = fingerprint(out / "checkpoints" / "step-00000030");
    const RunResult r = run(train_args(out, {"--resume", "--set", "train.steps=40"}));
    ASSERT_EQ(r.exit_code, 0) << what << "\n" << r.out << r.err;
    EXPECT_TRUE(contains(r.out, "resuming from step-00000030, the newest valid checkpoint")) << what << "\n" << r.out;
    EXPECT_TRUE(contains(r.out, "(step 30)")) << what << "\n" << r.out;
    EXPECT_FALSE(contains(r.out, "starting from step 0")) << what;
    EXPECT_EQ(fingerprint(out / "checkpoints" / "step-00000030"), step30) << what;
    EXPECT_TRUE(fs::exists(out / "checkpoints" / "step-00000040" / "manifest.json")) << what;
    EXPECT_EQ(testutil::read_text(out / "checkpoints" / "latest"), "step-00000040\n") << what;
  }
}

TEST_F(CheckpointRecovery, ScanSkipsDamagedCandidatesAndKeepsLaterCheckpoints) {
  const fs::path out = copy_of_base("scan-skip");
  fs::remove(out / "checkpoints" / "latest");
  const fs::path model = out / "checkpoints" / "step-00000030" / "model.safetensors";
  flip_byte(model, tensor_offset(model, largest_tensor(model), 7));
  const auto step30 = fingerprint(out / "checkpoints" / "step-00000030");
  const RunResult r =
      run(train_args(out, {"--resume", "--set", "train.steps=25", "--set", "train.checkpoint_every=5"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "resuming from step-00000020")) << r.out;
  EXPECT_TRUE(contains(r.out, "skipped: " + model.string() + ": checksum mismatch")) << r.out;
  // The damaged later checkpoint is not pruned: only the user may decide it is worthless.
  EXPECT_EQ(fingerprint(out / "checkpoints" / "step-00000030"), step30);
  EXPECT_EQ(testutil::read_text(out / "checkpoints" / "latest"), "step-00000025\n");
}

TEST_F(CheckpointRecovery, NoValidCheckpointRefusesToStartOver) {
  const fs::path out = copy_of_base("all-damaged");
  fs::remove(out / "checkpoints" / "latest");
  for (const char* step : {"step-00000020", "step-00000030"})
    flip_byte(out / "checkpoints" / step / "trainer_state.json", 5);
  const auto before = fingerprint(out / "checkpoints");
  const RunResult r = run(train_args(out, {"--resume"}));
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "no checkpoint directory")) << r.err;
  EXPECT_TRUE(contains(r.err, "step-00000020/trainer_state.json: checksum mismatch")) << r.err;
  EXPECT_EQ(fingerprint(out / "checkpoints"), before);
}

TEST_F(CheckpointRecovery, LaterCheckpointThanTheResumedOneIsNeverPruned) {
  const fs::path out = copy_of_base("later");
  testutil::write_text(out / "checkpoints" / "latest", "step-00000020\n");
  const auto step30 = fingerprint(out / "checkpoints" / "step-00000030");
  const RunResult r = run(train_args(out, {"--resume", "--set", "train.steps=25", "--set", "train.checkpoint_every=5",
                                           "--set", "train.keep_checkpoints=1"}));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "(step 20)")) << r.out;
  EXPECT_EQ(fingerprint(out / "checkpoints" / "step-00000030"), step30);
  EXPECT_FALSE(fs::exists(out / "checkpoints" / "step-00000020"));  // keep 1: this run's own older one goes
  EXPECT_TRUE(fs::exists(out / "checkpoints" / "step-00000025"));
}

TEST_F(CheckpointRecovery, DamagedCheckpointIsRefusedByResumeEvalAndExport) {
  const fs::path out = copy_of_base("damaged");
  const fs::path dir = out / "checkpoints" / "step-00000030";
  const fs::path model = dir / "model.safetensors";
  // Random single-byte flips anywhere in the tensor data: every one is caught.
  std::mt19937 rng(11);
  const std::string original = testutil::read_text(model);
  const uint64_t first = tensor_offset(model, largest_tensor(model));
  for (int trial = 0; trial < 12; ++trial) {
    testutil::write_text(model, original);
    flip_byte(model, first + rng() % (original.size() - first));
    const auto before = fingerprint(out / "checkpoints");
    const RunResult resume = run(train_args(out, {"--resume", "--set", "train.steps=40"}));
    EXPECT_EQ(resume.exit_code, 2) << resume.err;
    EXPECT_TRUE(contains(resume.err, model.string() + ": checksum mismatch")) << resume.err;
    if (trial == 0) {
      const RunResult eval = run({"eval", "--checkpoint", dir.string()});
      EXPECT_EQ(eval.exit_code, 2) << eval.out << eval.err;
      EXPECT_TRUE(contains(eval.err, "model.safetensors: checksum mismatch")) << eval.err;
      const RunResult exported = run({"export", "--checkpoint", out.string(), "--out", (out / "hf").string()});
      EXPECT_EQ(exported.exit_code, 2) << exported.out << exported.err;
      EXPECT_TRUE(contains(exported.err, "model.safetensors: checksum mismatch")) << exported.err;
      EXPECT_FALSE(fs::exists(out / "hf" / "model.safetensors"));
    }
    EXPECT_EQ(fingerprint(out / "checkpoints"), before);
  }
  // A flip in the checkpoint's config.json, and a truncated optimizer file.
  testutil::write_text(model, original);
  flip_byte(dir / "config.json", 40);
  RunResult r = run({"eval", "--checkpoint", dir.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "config.json: checksum mismatch")) << r.err;
  flip_byte(dir / "config.json", 40);  // restored
  fs::resize_file(dir / "optimizer.safetensors", fs::file_size(dir / "optimizer.safetensors") - 4);
  r = run({"eval", "--checkpoint", dir.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_TRUE(contains(r.err, "optimizer.safetensors")) << r.err;
}

TEST_F(CheckpointRecovery, TrainerStateIsValidated) {
  const std::vector<std::tuple<std::string, std::function<void(nlohmann::json&)>, std::string>> cases = {
      {"fractional step", [](nlohmann::json& s) { s["step"] = 3.5; }, "key 'step': expected an integer"},
      {"step disagrees with the directory", [](nlohmann::json& s) { s["step"] = 31; }, "directory name"},
      {"negative step", [](nlohmann::json& s) { s["step"] = -30; }, "key 'step'"},
      {"negative cursor", [](nlohmann::json& s) { s["data"]["cursor"] = -1; }, "key 'data.cursor'"},
      {"cursor beyond the run", [](nlohmann::json& s) { s["data"]["cursor"] = uint64_t{1} << 62; }, "data."},
      {"negative tokens_seen", [](nlohmann::json& s) { s["tokens_seen"] = -5; }, "key 'tokens_seen'"},
      {"string tokens_seen", [](nlohmann::json& s) { s["tokens_seen"] = "many"; }, "key 'tokens_seen'"},
      {"skips beyond steps", [](nlohmann::json& s) { s["skipped_steps"] = 31; }, "key 'skipped_steps'"},
      {"missing data", [](nlohmann::json& s) { s.erase("data"); }, "key 'data'"},
      {"bad loss scale", [](nlohmann::json& s) { s["grad_scaler"]["scale"] = -1; }, "key 'grad_scaler.scale'"},
  };
  for (const auto& [what, mutate, expected] : cases) {
    const fs::path out = copy_of_base("state");
    const fs::path dir = out / "checkpoints" / "step-00000030";
    nlohmann::json state = nlohmann::json::parse(testutil::read_text(dir / "trainer_state.json"));
    mutate(state);
    testutil::write_text(dir / "trainer_state.json", state.dump(2));
    reseal(dir);
    const auto before = fingerprint(out / "checkpoints");
    const RunResult r = run(train_args(out, {"--resume", "--set", "train.steps=40"}));
    EXPECT_EQ(r.exit_code, 2) << what << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, "trainer_state.json")) << what << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, expected)) << what << "\n" << r.err;
    EXPECT_EQ(fingerprint(out / "checkpoints"), before) << what;
  }
}

TEST_F(CheckpointRecovery, NonFiniteMomentsAndWeightsAreRefusedOnLoad) {
  const float values[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()};
  {
    const fs::path out = copy_of_base("nan-moment");
    const fs::path dir = out / "checkpoints" / "step-00000030";
    const fs::path optimizer = dir / "optimizer.safetensors";
    const std::string moment = largest_tensor(optimizer, ".exp_avg_sq");
    patch_bytes(optimizer, tensor_offset(optimizer, moment, 3), &values[0], sizeof(float));
    reseal(dir);
    const auto before = fingerprint(out / "checkpoints");
    const RunResult r = run(train_args(out, {"--resume", "--set", "train.steps=40"}));
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_TRUE(contains(r.err, moment + "' holds a non-finite value")) << r.err;
    EXPECT_EQ(fingerprint(out / "checkpoints"), before);
  }
  {
    const fs::path out = copy_of_base("inf-weight");
    const fs::path dir = out / "checkpoints" / "step-00000030";
    const fs::path model = dir / "model.safetensors";
    const std::string weight = largest_tensor(model);
    patch_bytes(model, tensor_offset(model, weight, 5), &values[1], sizeof(float));
    reseal(dir);
    const RunResult r = run({"eval", "--checkpoint", dir.string()});
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_TRUE(contains(r.err, "model.safetensors: tensor '" + weight + "' holds a non-finite")) << r.err;
    EXPECT_FALSE(contains(r.out, "\"loss\": null"));
  }
}

TEST_F(CheckpointRecovery, SecondTrainOnTheSameDirectoryExitsTwoNamingTheHolder) {
  const fs::path out = work_->path() / "locked";
  const std::string binary = testutil::coco_binary().string();
  std::vector<std::string> args = train_args(out, {"--set", "train.steps=100000"});
  const pid_t holder = ::fork();
  if (holder == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::vector<char*> argv = {const_cast<char*>(binary.c_str())};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  for (int i = 0; i < 1200 && !fs::exists(out / "metrics.jsonl"); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const RunResult second = run(train_args(out));
  EXPECT_EQ(second.exit_code, 2) << second.out << second.err;
  EXPECT_TRUE(contains(second.err, "pid " + std::to_string(holder))) << second.err;
  EXPECT_TRUE(contains(second.err, out.string())) << second.err;
  // The kernel releases the lock of a killed holder: the next run proceeds.
  ::kill(holder, SIGKILL);
  int status = 0;
  ::waitpid(holder, &status, 0);
  const RunResult third = run(train_args(out, {"--set", "train.steps=2", "--set", "optim.warmup_steps=1"}));
  EXPECT_EQ(third.exit_code, 0) << third.out << third.err;
}

TEST_F(CheckpointRecovery, FailingMetricsWritesStopTheRunAfterACheckpoint) {
  const fs::path out = work_->path() / "metrics-enospc";
  const RunResult r = run(train_args(out), {{"COCO_FAULT_INJECT", "metrics-enospc"}});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(contains(r.err, (out / "metrics.jsonl").string() + ": cannot write the metrics record: No space left"))
      << r.err;
  EXPECT_EQ(testutil::read_text(out / "checkpoints" / "latest"), "step-00000005\n");
  // And the run continues from there once the disk has room.
  const RunResult resumed = run(train_args(out, {"--resume"}));
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_TRUE(contains(resumed.out, "(step 5)")) << resumed.out;
}

// Retention at the library level: another run's checkpoints (another run_id) are never pruned, nor later ones.
struct Weights : Module {
  Weights() { register_parameter("w", Tensor::from_vector(std::vector<float>{1, 2, 3}, Shape{3})); }
};

TEST(CheckpointRetention, SparesOtherRunsAndLaterSteps) {
  TempDir dir("retention");
  Weights m;
  auto data = [&](const std::string& run_id, int64_t step) {
    nlohmann::json state = {{"step", step}, {"run_id", run_id}};
    return tools::CheckpointData{m.named_parameters(), nullptr, state, {{"k", 1}}};
  };
  for (int64_t step : {10, 20, 90}) tools::write_checkpoint(dir.path(), step, data("old-run", step), 5);
  // A new run in the same directory (its `latest` was lost) writes and prunes with keep = 1.
  for (int64_t step : {5, 15, 25}) tools::write_checkpoint(dir.path(), step, data("new-run", step), 1);
  const fs::path root = dir / "checkpoints";
  EXPECT_TRUE(fs::exists(root / "step-00000020"));   // the old run's, lower step: not this run's to prune
  EXPECT_TRUE(fs::exists(root / "step-00000090"));   // later step: kept
  EXPECT_FALSE(fs::exists(root / "step-00000005"));  // this run's older ones: pruned to keep = 1
  EXPECT_FALSE(fs::exists(root / "step-00000015"));
  EXPECT_TRUE(fs::exists(root / "step-00000025"));
}

TEST(CheckpointRetention, NonFiniteWeightsAreNeverWritten) {
  TempDir dir("nonfinite-write");
  Weights m;
  m.named_parameters()[0].tensor.copy_from(
      Tensor::from_vector(std::vector<float>{1, std::numeric_limits<float>::quiet_NaN(), 3}, Shape{3}));
  try {
    tools::write_checkpoint(dir.path(), 1, tools::CheckpointData{m.named_parameters(), nullptr, {}, {}}, 1);
    FAIL() << "expected a refusal";
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "tensor 'w' holds a non-finite value")) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "checkpoints" / "latest"));
  EXPECT_FALSE(fs::exists(dir / "checkpoints" / "step-00000001"));
}

TEST(CheckpointRetention, OptimizerStepCountsBeyondTheStepAreRefused) {
  TempDir dir("step-counts");
  Weights m;
  optim::AdamW optimizer(m.named_parameters());
  for (int i = 0; i < 3; ++i) {
    m.named_parameters()[0].tensor.autograd_meta()->grad = Tensor::from_vector(std::vector<float>{1, 1, 1}, Shape{3});
    optimizer.step(0.01);
  }
  const fs::path written =
      tools::write_checkpoint(dir.path(), 3, tools::CheckpointData{m.named_parameters(), &optimizer, {}, {}}, 1);
  optim::AdamW fresh(m.named_parameters());
  EXPECT_NO_THROW(tools::load_optimizer(written, fresh, 3));
  try {
    tools::load_optimizer(written, fresh, 2);
    FAIL() << "expected a refusal";
  } catch (const checkpoint::CheckpointError& e) {
    EXPECT_TRUE(contains(e.what(), "optimizer.safetensors: step count 3 of 'w'")) << e.what();
  }
}

}  // namespace
}  // namespace coco::reliability
