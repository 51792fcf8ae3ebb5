// A kernel fault in the middle of training on CUDA (injected by the emulator, EMU_FAULT_AT_LAUNCH: the kernel fails
// as a misaligned access would, and the error is sticky, as on a GPU): Trainer::train_step throws a CudaError naming
// it -- from an uncaptured step and from a replayed CUDA graph -- and destroying the Trainer afterwards (its step
// graph, upload ring, record copy, tensors, streams) throws nothing, so `coco train` prints the error and exits 1
// instead of ending in std::terminate. A checkpoint asked for after the fault fails the same way and leaves nothing
// behind: the last one before the fault stays the latest, intact. Emulated mode only: a GPU
// process cannot go on after a fault.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coco/trainer.h"
#include "engine/runtime/check.h"
#include "tests/train/train_test_util.h"
#if defined(COCO_CUDA_EMULATED)
#include "engine/simt/emu_control.h"
#endif

namespace coco {
namespace {

#if defined(COCO_CUDA_EMULATED)

namespace fs = std::filesystem;

class KernelFault : public ::testing::TestWithParam<bool> {  // runtime.cuda_graph
 protected:
  static void SetUpTestSuite() {
    dir_ = new testutil::TempDir("kernel-fault");
    testutil::prepare_corpus(dir_->path(), *dir_ / "data", 60);
  }
  static void TearDownTestSuite() { delete dir_; }
  void TearDown() override { emu::clear_sticky_error(); }
  static inline testutil::TempDir* dir_ = nullptr;
};

TEST_P(KernelFault, TheStepThrowsTheFaultAndTheTrainerUnwindsCleanly) {
  const bool graph = GetParam();
  nlohmann::json c = testutil::tiny_paper_config(*dir_ / "data");
  c["runtime"]["device"] = "cuda";
  c["runtime"]["cuda_graph"] = graph;
  c["train"]["steps"] = 8;
  c["train"]["micro_batch"] = 4;
  c["train"]["log_every"] = 2;
  c["train"]["eval_every"] = 0;
  c["train"]["checkpoint_every"] = 4;
  const std::string name = graph ? "graph" : "eager";
  TrainerOptions options;
  options.run_dir = *dir_ / name;
  {
    Trainer trainer = Trainer::from_json(c, name, options);
    for (int i = 0; i < 4; ++i) trainer.train_step();  // with the graph: captured at step 3, replayed at step 4
    ASSERT_TRUE(trainer.last_checkpoint().has_value());
    emu::ScopedConfig scope;
    scope->fault_at_launch = emu::stats().launches.load() + 40;  // a kernel of step 5
    try {
      trainer.train_step();
      ADD_FAILURE() << "a step with a faulting kernel succeeded";
    } catch (const CudaError& e) {
      EXPECT_NE(std::string(e.what()).find("misaligned address"), std::string::npos) << e.what();
      if (graph) {
        EXPECT_NE(std::string(e.what()).find("graph_launch"), std::string::npos) << e.what();
      }
    }
    EXPECT_NE(emu::last_diagnostic().find("injected fault"), std::string::npos) << emu::last_diagnostic();
    // Sticky: the next step fails as well, and so does a checkpoint (its weights cannot be read), which leaves
    // nothing behind: the last committed checkpoint stays the latest.
    EXPECT_THROW(trainer.train_step(), CudaError);
    EXPECT_THROW(trainer.save(), CudaError);
    std::vector<std::string> entries;
    for (const auto& entry : fs::directory_iterator(*dir_ / name / "checkpoints"))
      entries.push_back(entry.path().filename().string());
    std::sort(entries.begin(), entries.end());
    EXPECT_EQ(entries, (std::vector<std::string>{"latest", "step-00000004"}));
  }  // the Trainer is destroyed here, after the fault: nothing may throw (std::terminate would end the test binary)
  const fs::path checkpoint = *dir_ / name / "checkpoints" / "step-00000004";
  EXPECT_TRUE(fs::exists(checkpoint / "trainer_state.json")) << checkpoint;
}

INSTANTIATE_TEST_SUITE_P(CudaGraph, KernelFault, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) { return info.param ? "Graph" : "NoGraph"; });

#endif  // COCO_CUDA_EMULATED

}  // namespace
}  // namespace coco
