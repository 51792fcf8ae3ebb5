// `coco plot RUN [--out FILE.png]`: runs scripts/plot_metrics.py (Python 3 + matplotlib), which draws the run's
// metrics.jsonl into a PNG. The script is found next to the executable (a build directory inside the source tree:
// ../scripts/, up to three levels up) or in the source tree the tool was built from.
#pragma once
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace coco::tools {

// The plot script, or nullopt; `searched` receives every path looked at (for the error message).
std::optional<std::filesystem::path> find_plot_script(std::vector<std::filesystem::path>* searched = nullptr);

// Runs `python3 SCRIPT args...` and returns its exit code. A missing python3 or script is a std::runtime_error
// (exit 1) that says what to install.
int run_plot_script(const std::vector<std::string>& args);

}  // namespace coco::tools
