// How this process was launched: its rank, the world size and its rank on the node, read from the
// environment the launcher sets (OpenMPI's mpirun, a PMI launcher such as MPICH's hydra or Intel
// MPI, or Slurm's srun). Without any of them the run is one process, rank 0 of 1.
#pragma once
#include <functional>
#include <stdexcept>
#include <string>

namespace coco::dist {

// A launch or distributed setup that cannot work (inconsistent launcher variables, a world size the
// build cannot serve, collectives that do not match between ranks): the run stops with exit code 2.
class DistConfigError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

struct LaunchInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // the rank among the processes on this node: picks the GPU
  int local_size = 1;  // processes on this node; 0 when the launcher does not say
  // Which launcher the values came from: "none", "openmpi", "pmi" or "slurm".
  std::string launcher = "none";
  bool distributed() const { return world_size > 1 || launcher != "none"; }
};

// Reads the launch from `getenv` (std::getenv by default; tests pass their own). OpenMPI's
// OMPI_COMM_WORLD_* win over PMI_* (MPICH, Intel MPI), which win over SLURM_* (srun without mpirun).
// A variable that is not a number, a rank outside [0, size), or a launcher that sets only part of
// what it should throws DistConfigError naming the variable and its value.
using EnvLookup = std::function<const char*(const char*)>;
LaunchInfo detect_launch(const EnvLookup& getenv);
LaunchInfo detect_launch();

// The CUDA device of this process among the node's `device_count`: one GPU per process, picked by the
// node-local rank. Throws DistConfigError when the node has no device, or runs more processes than it has
// devices (local_size, or the local rank when the launcher does not say) -- unless `device_per_process`
// (the emulator gives every process a device of its own), where the index wraps.
int device_for_local_rank(const LaunchInfo& launch, int device_count, bool device_per_process = false);

}  // namespace coco::dist
