// Fault driver for the dist_fault_* tests (run under mpirun with 2 ranks):
//   dist_fault dead-rank <cpu|cuda>: rank 1 kills itself (SIGKILL) in front of an all-reduce that
//     rank 0 enters; the launcher must end the job and name the rank.
//   dist_fault hung-rank <cpu|cuda>: rank 1 sleeps instead of joining; rank 0's collective times out
//     after 3 s, it prints the error and aborts the job, which also ends rank 1.
// Exit codes: 1 for the runtime failure; 0 only if the collective unexpectedly completes.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "engine/dist/communicator.h"
#include "engine/tensor.h"

int main(int argc, char** argv) {
  using namespace coco;
  using namespace coco::dist;
  if (argc != 3 || (std::strcmp(argv[1], "dead-rank") && std::strcmp(argv[1], "hung-rank")) ||
      (std::strcmp(argv[2], "cpu") && std::strcmp(argv[2], "cuda"))) {
    std::fprintf(stderr, "usage: dist_fault dead-rank|hung-rank cpu|cuda\n");
    return 2;
  }
  const bool dead = std::strcmp(argv[1], "dead-rank") == 0;
  const Device device = std::strcmp(argv[2], "cpu") == 0 ? Device::cpu : Device::cuda;
  CommOptions options;
  options.timeout_s = 3;
  options.check_arguments = false;  // the NCCL path then waits inside the (emulated) NCCL call: the watchdog ends it
  std::unique_ptr<Communicator> comm;
  try {
    comm = make_communicator(device, detect_launch(), options);
    const Tensor data = Tensor::full({1024}, 1.0, DType::f32, device);
    comm->all_reduce(data, ReduceOp::sum);  // a first collective that completes
    comm->synchronize();
    if (comm->rank() == 1) {
      if (dead) raise(SIGKILL);
      std::this_thread::sleep_for(std::chrono::seconds(120));
      return 0;
    }
    comm->all_reduce(data, ReduceOp::sum);
    comm->synchronize();
    std::fprintf(stderr, "dist_fault: the collective completed without rank 1\n");
    return 0;
  } catch (const CommError& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    std::fflush(stderr);
    if (comm) comm->abort(1);
    return 1;
  }
}
