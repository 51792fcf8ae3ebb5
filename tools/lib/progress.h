// The progress helpers moved to coco/progress.h (the training API formats its status lines with them); the
// command-line tool keeps using them under coco::tools.
#pragma once
#include "coco/progress.h"

namespace coco::tools {
using coco::format;
using coco::format_duration;
using coco::progress_bar;
using coco::ProgressLine;
}  // namespace coco::tools
