#include "engine/dist/launch.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <optional>

namespace coco::dist {
namespace {

// The integer value of `name`, nullopt when unset; a value that is not a non-negative integer is an error.
std::optional<int> read_int(const EnvLookup& getenv, const char* name) {
  const char* text = getenv(name);
  if (!text) return std::nullopt;
  const std::string value(text);
  int parsed = -1;
  const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), parsed);
  if (value.empty() || error != std::errc() || end != value.data() + value.size() || parsed < 0)
    throw DistConfigError("launch: environment variable " + std::string(name) + "='" + value +
                          "' is not a non-negative integer");
  return parsed;
}

struct LauncherVariables {
  const char* launcher;
  const char* rank;
  const char* size;
  const char* local_rank;  // may be absent: then the rank modulo the local size, or the rank
  const char* local_size;
};

constexpr LauncherVariables kLaunchers[] = {
    {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"},
    {"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"},
};

}  // namespace

LaunchInfo detect_launch(const EnvLookup& getenv) {
  for (const LauncherVariables& v : kLaunchers) {
    const std::optional<int> rank = read_int(getenv, v.rank);
    const std::optional<int> size = read_int(getenv, v.size);
    if (!rank && !size) continue;
    if (!rank || !size)
      throw DistConfigError(std::string("launch: ") + (rank ? v.size : v.rank) + " is not set but " +
                            (rank ? v.rank : v.size) + " is (" + v.launcher + " sets both)");
    if (*size < 1 || *rank >= *size)
      throw DistConfigError(std::string("launch: rank ") + v.rank + "=" + std::to_string(*rank) +
                            " is not below the world size " + v.size + "=" + std::to_string(*size));
    LaunchInfo info;
    info.launcher = v.launcher;
    info.rank = *rank;
    info.world_size = *size;
    // SLURM_NTASKS_PER_NODE may be a list such as "4(x2)" under heterogeneous layouts; only a plain
    // number is used, anything else leaves the local size unknown (one process per node assumed).
    std::optional<int> local_size;
    try {
      local_size = read_int(getenv, v.local_size);
    } catch (const DistConfigError&) {
      if (std::string(v.launcher) != "slurm") throw;
    }
    const std::optional<int> local_rank = read_int(getenv, v.local_rank);
    info.local_size = local_size.value_or(0);
    info.local_rank = local_rank.value_or(local_size && *local_size > 0 ? *rank % *local_size : 0);
    if ((local_size && info.local_rank >= *local_size) || info.local_rank > info.rank)
      throw DistConfigError(std::string("launch: local rank ") + v.local_rank + "=" + std::to_string(info.local_rank) +
                            " does not fit rank " + std::to_string(info.rank) +
                            (local_size
                                 ? " and local size " + std::string(v.local_size) + "=" + std::to_string(*local_size)
                                 : std::string()));
    return info;
  }
  return LaunchInfo{};
}

int device_for_local_rank(const LaunchInfo& launch, int device_count, bool device_per_process) {
  if (device_count < 1)
    throw DistConfigError("launch: rank " + std::to_string(launch.rank) + " (local rank " +
                          std::to_string(launch.local_rank) + ") sees no CUDA device");
  if (device_per_process) return launch.local_rank % device_count;
  const int processes = std::max(launch.local_size, launch.local_rank + 1);
  if (processes > device_count)
    throw DistConfigError("launch: " + std::to_string(processes) + " processes on this node (local rank " +
                          std::to_string(launch.local_rank) + ") but only " + std::to_string(device_count) +
                          " CUDA devices: expected one process per GPU (fewer ranks per node, e.g. mpirun --map-by "
                          "ppr:" +
                          std::to_string(device_count) + ":node)");
  return launch.local_rank;
}

LaunchInfo detect_launch() {
  return detect_launch([](const char* name) -> const char* { return std::getenv(name); });
}

}  // namespace coco::dist
