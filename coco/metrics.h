// The objective's metric names: one vocabulary for metrics.jsonl, the training progress line, `coco eval`'s table
// and JSON, scripts/main.sh, `coco plot` and docs/metrics.md (which explains each one per preset).
//
//   loss                 weighted total
//   mlm_loss, mlm_acc    generator masked LM
//   rtd_loss, rtd_acc    discriminator binary head: replaced-token detection (lucidrains) or the copy loss (paper:
//                        the same binary task with the label convention flipped, 1 = original token)
//   clm_loss, clm_acc    paper only: corrective LM at the masked positions
//   cl_loss, cl_acc      sequence contrastive learning
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "coco/objective.h"

namespace coco::objective {

// The losses and the accuracies, in the order of metrics.jsonl's records (clm_* only where the objective has a CLM
// head, i.e. the paper preset).
inline constexpr const char* kLossKeys[] = {"loss", "mlm_loss", "rtd_loss", "clm_loss", "cl_loss"};
inline constexpr const char* kAccuracyKeys[] = {"mlm_acc", "rtd_acc", "cl_acc", "clm_acc"};

// The metric keys an objective reports, each loss followed by its accuracy (coco eval's table).
std::vector<std::string> metric_keys(const ObjectiveConfig& config);

// One line saying what `key` measures under `config` (its preset, weights and CLM form); "" for an unknown key.
std::string describe_metric(std::string_view key, const ObjectiveConfig& config);

}  // namespace coco::objective
