// `coco train` and `coco eval`: command-line clients of the training API (coco/trainer.h, which documents the
// training step, metrics.jsonl and resume). The tool adds the progress display (a live line on a terminal) and
// SIGINT/SIGTERM handling: the first signal finishes the step, writes a checkpoint and exits 0.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "coco/trainer.h"

namespace coco::tools {

struct TrainOptions {
  std::string config_path;
  std::string out_dir;
  std::vector<std::string> overrides;  // --set key=value
  bool resume = false;
};

// Returns the process exit code (0, also after SIGINT/SIGTERM with a checkpoint written). Throws
// ConfigError / DataError (exit 2) and std::runtime_error (exit 1).
int run_train(const TrainOptions& options);

// coco::EvalOptions (coco/trainer.h) plus where to write the JSON report.
struct EvalOptions : coco::EvalOptions {
  std::string json_path;  // also write the JSON report there
};

int run_eval(const EvalOptions& options);

}  // namespace coco::tools
