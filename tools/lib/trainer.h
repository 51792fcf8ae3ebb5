// `coco train` and `coco eval`: the training loop around coco::objective::CocoModel, with logging,
// evaluation on the held-out split, checkpoints and exact resume.
//
// One optimizer step: for each of train.grad_accum micro-batches, a forward pass recorded on a fresh
// tape (Philox step key = step * grad_accum + micro) and backward of loss / grad_accum; then non-finite
// gradients skip the step (counted; more than train.max_consecutive_skips in a row stop the run with the
// last good checkpoint kept), else the global norm is clipped and AdamW applies the scheduled LR.
//
// DIR/metrics.jsonl: one JSON object per logged step (floats as %.9g, non-finite as null):
//   {"step", "loss", "mlm_loss", "rtd_loss", ["clm_loss",] "cl_loss", "mlm_acc", "rtd_acc", "cl_acc", ["clm_acc",]
//    "lr", "grad_norm", "tokens_per_s", "loss_scale", "skipped", "epoch"}
// and per evaluation {"step", "split": "valid", "loss", ... "mlm_acc", "rtd_acc", "cl_acc", "sequences"}. The
// progress line and `coco eval` use the same names (coco/metrics.h; meanings in docs/metrics.md).
// On resume the file is cut back to the records of steps up to the checkpoint, so an interrupted and
// resumed run leaves the same records (timing aside) as an uninterrupted one.
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
