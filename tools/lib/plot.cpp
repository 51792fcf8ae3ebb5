#include "tools/lib/plot.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace coco::tools {

namespace fs = std::filesystem;

namespace {
constexpr const char* kScript = "scripts/plot_metrics.py";
}

std::optional<fs::path> find_plot_script(std::vector<fs::path>* searched) {
  std::vector<fs::path> candidates;
  std::error_code error;
  const fs::path executable = fs::read_symlink("/proc/self/exe", error);
  if (!error) {
    fs::path dir = executable.parent_path();
    for (int up = 0; up < 4 && !dir.empty(); ++up, dir = dir.parent_path()) {
      candidates.push_back(dir / kScript);
      if (dir == dir.root_path()) break;
    }
  }
#ifdef COCO_SOURCE_DIR
  candidates.push_back(fs::path(COCO_SOURCE_DIR) / kScript);
#endif
  for (const auto& candidate : candidates) {
    if (searched) searched->push_back(candidate);
    if (fs::is_regular_file(candidate, error)) return candidate;
  }
  return std::nullopt;
}

int run_plot_script(const std::vector<std::string>& args) {
  std::vector<fs::path> searched;
  const std::optional<fs::path> script = find_plot_script(&searched);
  if (!script) {
    std::string message = "coco plot: cannot find " + std::string(kScript) + " (looked at";
    for (const auto& path : searched) message.append(" ").append(path.string());  // not `" " + ...`: GCC 12 -Wrestrict
    throw std::runtime_error(message + "); run the coco built in the cocolm source tree, which ships the script");
  }
  std::vector<std::string> argv_strings = {"python3", script->string()};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  pid_t pid = 0;
  const int spawn_error = ::posix_spawnp(&pid, "python3", nullptr, nullptr, argv.data(), environ);
  if (spawn_error == ENOENT)
    throw std::runtime_error(
        "coco plot: python3 was not found on PATH; it draws the plot with matplotlib. Install both with "
        "scripts/setup.sh (or: apt-get install python3 python3-matplotlib)");
  if (spawn_error != 0)
    throw std::runtime_error(std::string("coco plot: cannot start python3: ") + std::strerror(spawn_error));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(std::string("coco plot: waitpid: ") + std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  throw std::runtime_error("coco plot: python3 " + script->string() + " was ended by signal " +
                           std::to_string(WTERMSIG(status)));
}

}  // namespace coco::tools
