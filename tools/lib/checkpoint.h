// Training checkpoints moved to coco/checkpoint.h (namespace coco::checkpoint) with the training loop; the
// command-line tool and its tests keep using them under coco::tools.
#pragma once
#include "coco/checkpoint.h"

namespace coco::tools {
using namespace coco::checkpoint;
}  // namespace coco::tools
