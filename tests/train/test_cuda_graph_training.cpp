// runtime.cuda_graph (coco/step_graph.h, issue #14 item 2) at the Trainer, on the emulated CUDA device: a run
// that captures its step once and replays it writes the same metrics.jsonl, bit for bit (every float as %.9g
// round-trips), as the same run without the graph -- with f32, with gradient accumulation and with f16 dynamic
// loss scaling, logging and non-logging steps, the final evaluation -- and resumes from a checkpoint exactly. A
// replayed non-logging step is one graph launch plus the ids' uploads: no kernel launch, no synchronisation, no
// device-to-host copy, no cudaMalloc; a replayed logging step waits for the device once (the record's copy,
// validation counts included). The key is validated where it cannot work. Capture-illegal calls inside a capture
// are covered by tests/engine/test_cuda_graph.cpp and tests/emu/test_graphs.cu. StepGraph's warm-up lasts until a step
// leaves the device memory as it found it (a step that keeps new blocks is not settled), and a disturbance between
// steps (an evaluation, a checkpoint) makes one more warm-up step.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "coco/step_graph.h"
#include "coco/train_config.h"
#include "coco/trainer.h"
#include "engine/config.h"
#include "engine/device.h"
#include "engine/tensor.h"
#include "engine/runtime/counters.h"
#include "tests/train/train_test_util.h"

namespace coco {
namespace {

namespace fs = std::filesystem;

class CudaGraphTraining : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testutil::TempDir("cuda-graph");
    testutil::prepare_corpus(dir_->path(), *dir_ / "data", 60);
  }
  static void TearDownTestSuite() { delete dir_; }

  // The tiny paper-preset model (d 32, 1 + 2 layers, T 16, micro-batch 4) on CUDA: 7 steps (2 of warm-up, the
  // capture at step 3, replays from there on), records at steps 3, 6 and 7, the final evaluation.
  static nlohmann::json config(bool graph, const std::string& precision = "f32", int64_t grad_accum = 1) {
    nlohmann::json c = testutil::tiny_paper_config(*dir_ / "data");
    c["runtime"]["device"] = "cuda";
    c["runtime"]["cuda_graph"] = graph;
    c["precision"] = precision;
    c["train"]["steps"] = 7;
    c["train"]["micro_batch"] = 4;
    c["train"]["grad_accum"] = grad_accum;
    c["train"]["log_every"] = 3;
    c["train"]["eval_every"] = 0;
    c["train"]["eval_batches"] = 1;
    c["train"]["checkpoint_every"] = 0;
    return c;
  }

  static TrainerOptions options(const std::string& name) {
    TrainerOptions o;
    o.run_dir = *dir_ / name;
    return o;
  }

  static std::vector<nlohmann::json> run(const nlohmann::json& c, const std::string& name) {
    Trainer trainer = Trainer::from_json(c, name, options(name));
    trainer.run();
    return testutil::metrics_without_timing(*dir_ / name);
  }

  static inline testutil::TempDir* dir_ = nullptr;
};

// The step records of a run: 3 of them (steps 3, 6, 7), with finite losses.
void expect_three_finite_step_records(const std::vector<nlohmann::json>& records) {
  std::vector<nlohmann::json> steps;
  for (const auto& r : records)
    if (!r.contains("split")) steps.push_back(r);
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[0]["step"], 3);
  EXPECT_EQ(steps[2]["step"], 7);
  for (const auto& r : steps) {
    EXPECT_TRUE(r["loss"].is_number()) << r.dump();
    EXPECT_TRUE(r["grad_norm"].is_number()) << r.dump();
  }
}

TEST_F(CudaGraphTraining, ReplayedStepsLogWhatUncapturedStepsLogAndStayOffTheHost) {
  // Graph on, step by step, with the profile of a replayed non-logging step (4) and logging step (6).
  const nlohmann::json c = config(true);
  std::vector<std::string> messages;
  TrainerOptions o = options("graph");
  o.on_message = [&](const std::string& line) { messages.push_back(line); };
  Trainer trainer = Trainer::from_json(c, "graph", o);
  trainer.train_step();  // warm-up, uncaptured
  trainer.train_step();  // warm-up, uncaptured
  trainer.train_step();  // captured, then replayed; logged
  runtime::StepProfile profile;
  const StepReport fourth = trainer.train_step();
  const runtime::Counters replay = profile.elapsed();
  trainer.train_step();
  profile.restart();
  const StepReport sixth = trainer.train_step();
  const runtime::Counters logging = profile.elapsed();
  trainer.run();
  std::printf("replayed step: %s\nreplayed logging step: %s\n", replay.describe().c_str(), logging.describe().c_str());
  EXPECT_FALSE(fourth.logged);
  EXPECT_EQ(replay.graph_launches, 1u) << replay.describe();
  EXPECT_EQ(replay.kernel_launches, 0u) << replay.describe();
  EXPECT_EQ(replay.gemm_calls, 0u) << replay.describe();
  EXPECT_EQ(replay.memsets, 0u) << replay.describe();
  EXPECT_EQ(replay.h2d_copies, 1u) << replay.describe();  // the micro-batch's ids into the graph's buffer
  EXPECT_EQ(replay.launches(), 2u) << replay.describe();
  EXPECT_EQ(replay.synchronizations(), 0u) << replay.describe();
  EXPECT_EQ(replay.d2h_copies, 0u) << replay.describe();
  EXPECT_EQ(replay.device_mallocs, 0u) << replay.describe();
  EXPECT_TRUE(sixth.logged);
  EXPECT_TRUE(std::isfinite(sixth.loss));
  EXPECT_EQ(logging.graph_launches, 1u) << logging.describe();
  EXPECT_EQ(logging.kernel_launches, 0u) << logging.describe();
  // At most one wait, for the record's copies, validation counts included (none under emulation, where the
  // copies have landed when the host asks), and no blocking copy of the counts.
  EXPECT_LE(logging.synchronizations(), 1u) << logging.describe();
  EXPECT_EQ(logging.blocking_copies, 0u) << logging.describe();
  EXPECT_EQ(logging.d2h_copies, 3u) << logging.describe();  // sums, step state, validation counts
  EXPECT_EQ(logging.device_mallocs, 0u) << logging.describe();

  const std::vector<nlohmann::json> graphed = testutil::metrics_without_timing(*dir_ / "graph");
  expect_three_finite_step_records(graphed);
  EXPECT_EQ(graphed, run(config(false), "plain"));
  // The record of step 6 carries the profile of step 4, and the start-up messages its line.
  std::vector<nlohmann::json> raw;
  std::istringstream lines(testutil::read_text(*dir_ / "graph" / "metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) raw.push_back(nlohmann::json::parse(line));
  ASSERT_GE(raw.size(), 2u);
  EXPECT_EQ(raw[1]["step"], 6);
  EXPECT_EQ(raw[1]["graph_launches_per_step"], 1) << raw[1].dump();
  EXPECT_EQ(raw[1]["kernels_per_step"], 0) << raw[1].dump();
  EXPECT_EQ(raw[1]["launches_per_step"], 2) << raw[1].dump();
  bool profiled = false;
  for (const auto& line : messages)
    if (line.rfind("step profile (step 4", 0) == 0) {
      profiled = true;
      EXPECT_NE(line.find("launches 2 (kernels 0, GEMMs 0, collectives 0, graphs 1,"), std::string::npos) << line;
      EXPECT_NE(line.find("syncs 0, d2h copies 0"), std::string::npos) << line;
      EXPECT_NE(line.find("cudaMalloc 0"), std::string::npos) << line;
    }
  EXPECT_TRUE(profiled);
}

TEST_F(CudaGraphTraining, GradientAccumulationAndF16LossScalingLogTheSameWithTheGraph) {
  const std::vector<nlohmann::json> accumulated = run(config(true, "f32", 2), "accum-graph");
  expect_three_finite_step_records(accumulated);
  EXPECT_EQ(accumulated, run(config(false, "f32", 2), "accum-plain"));

  const std::vector<nlohmann::json> scaled = run(config(true, "f16"), "f16-graph");
  expect_three_finite_step_records(scaled);
  EXPECT_EQ(scaled, run(config(false, "f16"), "f16-plain"));
}

TEST_F(CudaGraphTraining, AResumedGraphRunReproducesTheUninterruptedOne) {
  const std::vector<nlohmann::json> whole = run(config(true), "whole");
  {
    Trainer first = Trainer::from_json(config(true), "first", options("parts"));
    for (int i = 0; i < 4; ++i) first.train_step();  // warm-up, capture, a replay
    EXPECT_EQ(first.save().filename(), "step-00000004");
  }
  Trainer second = Trainer::from_json(config(true), "second", options("parts"));
  ASSERT_TRUE(second.resumed_from());
  second.run();  // a new warm-up (steps 5, 6) and capture (step 7)
  EXPECT_EQ(testutil::metrics_without_timing(*dir_ / "parts"), whole);
}

TEST_F(CudaGraphTraining, TheKeyIsRefusedWhereTheGraphCannotWork) {
  nlohmann::json c = config(true);
  c["runtime"]["device"] = "cpu";
  try {
    (void)train::parse_train_config(c, "cfg.json");
    FAIL() << "runtime.cuda_graph = true on the cpu device was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("cfg.json: key 'runtime.cuda_graph'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("runtime.device = cuda"), std::string::npos) << e.what();
  }
  c["runtime"]["cuda_graph"] = false;
  EXPECT_FALSE(train::parse_train_config(c, "cfg.json").cuda_graph.value());
  c["runtime"]["cuda_graph"] = "yes";
  EXPECT_THROW((void)train::parse_train_config(c, "cfg.json"), ConfigError);

  // Resolution: absent means on for cuda (one process, plain data parallelism and ZeRO-1 alike: use_cuda_graph
  // does not depend on the launch), as written otherwise, off on the cpu.
  c = config(true);
  c["runtime"].erase("cuda_graph");
  EXPECT_TRUE(train::use_cuda_graph(train::parse_train_config(c, "cfg.json")));
  c["optim"]["zero"] = 1;
  EXPECT_TRUE(train::use_cuda_graph(train::parse_train_config(c, "cfg.json")));
  c["runtime"]["cuda_graph"] = false;
  EXPECT_FALSE(train::use_cuda_graph(train::parse_train_config(c, "cfg.json")));
  c["runtime"]["cuda_graph"] = true;
  EXPECT_TRUE(train::use_cuda_graph(train::parse_train_config(c, "cfg.json")));
  c["optim"].erase("zero");
  c["runtime"]["device"] = "cpu";
  c["runtime"].erase("cuda_graph");
  EXPECT_FALSE(train::use_cuda_graph(train::parse_train_config(c, "cfg.json")));
  // The resolved configuration keeps the key only when it was written.
  EXPECT_FALSE(train::train_config_to_json(train::parse_train_config(c, "cfg.json"))["runtime"].contains("cuda_graph"));
}

// An evaluation and a checkpoint after every step: after the first, they borrow blocks and give them back, so the
// step is still captured at step 3 (before StepGraph::OtherWork measured them, every evaluation deferred the capture
// and a run evaluating every step was never captured), and the records are the uncaptured run's, bit for bit.
TEST_F(CudaGraphTraining, EvaluatingAndCheckpointingEveryStepStillCaptures) {
  nlohmann::json c = config(true);
  c["train"]["eval_every"] = 1;
  c["train"]["checkpoint_every"] = 1;
  c["train"]["keep_checkpoints"] = 1;
  std::vector<std::string> messages;
  TrainerOptions o = options("graph-eval-every-step");
  o.on_message = [&](const std::string& line) { messages.push_back(line); };
  {
    Trainer trainer = Trainer::from_json(c, "graph-eval-every-step", o);
    trainer.run();
  }
  const auto captured = std::find_if(messages.begin(), messages.end(), [](const std::string& line) {
    return line.find("runtime.cuda_graph: step 3 captured as one CUDA graph") != std::string::npos;
  });
  EXPECT_NE(captured, messages.end()) << "no capture at step 3";
  c["runtime"]["cuda_graph"] = false;
  const std::vector<nlohmann::json> graphed = testutil::metrics_without_timing(*dir_ / "graph-eval-every-step");
  EXPECT_EQ(graphed.size(), 3u + 7u);  // steps 3, 6, 7 and an evaluation after every step
  EXPECT_EQ(graphed, run(c, "eager-eval-every-step"));
}

// The warm-up of StepGraph (no Trainer): a step that keeps new device blocks (a persistent tensor, as ZeRO-1's new
// layout's descriptors in its second step) is not settled, so the capture waits for a step that keeps nothing; other
// work between steps makes one more warm-up; a step that keeps memory past kMaxWarmupSteps stays uncaptured (no
// error) and is captured once it stops keeping memory.
TEST(StepGraphWarmUp, CapturesOnlyAfterAStepThatKeptNoNewBlock) {
  using Phase = train::StepGraph::Phase;
  train::StepGraph graph(1);
  const StreamScope on_stream(graph.stream());
  std::vector<Tensor> kept;
  int64_t runs = 0;
  const auto step = [&] {
    Tensor scratch = Tensor::zeros({256}, DType::f32, Device::cuda);  // freed at the end: back to the cache
    scratch.fill_(1.0);
    if (runs < 3) kept.push_back(Tensor::zeros({1000 + 512 * runs}, DType::f32, Device::cuda));
  };
  std::vector<Phase> phases;
  for (int i = 0; i < 7; ++i) {
    phases.push_back(graph.next_phase());
    if (i == 4) {
      EXPECT_FALSE(graph.settled());  // other_work_ran
    }
    if (i == 5) {
      EXPECT_TRUE(graph.settled());
    }
    graph.run(step);
    ++runs;
    if (i == 3) graph.other_work_ran();  // run 4 settled, but something ran after it: one more warm-up
  }
  const std::vector<Phase> want = {Phase::warm_up, Phase::warm_up, Phase::warm_up, Phase::warm_up,
                                   Phase::warm_up, Phase::capture, Phase::replay};
  EXPECT_EQ(phases, want);
  EXPECT_EQ(graph.warm_up_steps(), 5);
  EXPECT_TRUE(graph.captured());
  EXPECT_GT(graph.nodes(), 0u);
}

TEST(StepGraphWarmUp, AStepThatKeepsNewMemoryStaysUncapturedUntilItStops) {
  train::StepGraph graph(1);
  const StreamScope on_stream(graph.stream());
  std::vector<Tensor> kept;
  int64_t runs = 0;
  const int64_t leaking = train::StepGraph::kMaxWarmupSteps + 2;
  const auto step = [&] {
    if (runs < leaking) kept.push_back(Tensor::zeros({4096 + 512 * runs}, DType::f32, Device::cuda));
    Tensor scratch = Tensor::zeros({64}, DType::f32, Device::cuda);
    scratch.fill_(2.0);
    ++runs;
  };
  for (int64_t i = 0; i <= leaking; ++i) {  // the runs that keep memory, then the first that keeps none
    EXPECT_EQ(graph.next_phase(), train::StepGraph::Phase::warm_up) << i;
    graph.run(step);
    EXPECT_EQ(graph.settled(), i == leaking) << i;
  }
  EXPECT_EQ(graph.next_phase(), train::StepGraph::Phase::capture);
  graph.run(step);
  EXPECT_TRUE(graph.captured());
  EXPECT_EQ(graph.warm_up_steps(), leaking + 1);
}

// StepGraph::OtherWork: work between steps that only borrows blocks from the cache leaves the warm-up settled; work
// that keeps a new block unsettles it (one more warm-up step).
TEST(StepGraphWarmUp, OtherWorkThatKeepsMemoryCostsOneMoreWarmUpStep) {
  train::StepGraph graph(1);
  const StreamScope on_stream(graph.stream());
  const auto step = [] { Tensor::zeros({128}, DType::f32, Device::cuda).fill_(1.0); };
  graph.run(step);
  graph.run(step);
  ASSERT_TRUE(graph.settled());
  {
    const train::StepGraph::OtherWork borrowing(&graph);
    Tensor::zeros({128}, DType::f32, Device::cuda).fill_(3.0);
  }
  EXPECT_TRUE(graph.settled());
  Tensor kept;
  {
    const train::StepGraph::OtherWork keeping(&graph);
    kept = Tensor::zeros({3000}, DType::f32, Device::cuda);
  }
  EXPECT_FALSE(graph.settled());
  EXPECT_EQ(graph.next_phase(), train::StepGraph::Phase::warm_up);
  graph.run(step);
  EXPECT_EQ(graph.next_phase(), train::StepGraph::Phase::capture);
  const train::StepGraph::OtherWork no_graph(nullptr);  // nothing to watch
}

}  // namespace
}  // namespace coco
