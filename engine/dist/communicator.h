// Collective communication between the ranks of a data-parallel job, behind one interface:
//   * MpiCommunicator (cpu device): OpenMPI's non-blocking collectives on host memory;
//   * NcclCommunicator (cuda device): NCCL on device memory, on a stream of its own that is ordered
//     after the caller's stream by events (and the caller's stream after it, in wait()); in the
//     emulated build the same code runs against the NCCL shim (engine/simt/emu_nccl.cpp);
//   * LocalCommunicator: one process, no MPI (the collectives of a world of one).
// make_communicator picks one from the launch (engine/dist/launch.h) and the device.
//
// Collectives are started in the order they are called, identically on every rank (like MPI and
// NCCL, a rank that calls a different sequence is an error; with CommOptions::check_arguments the
// ranks compare each call's kind, count and type first and refuse a mismatch on every rank instead
// of hanging or reading past a buffer). A started collective is complete for later work after
// wait(): on the cpu the host then sees the results; on cuda, work queued afterwards on the caller's
// current stream does. synchronize() also blocks the host until then. A collective that does not
// complete within CommOptions::timeout_s (a peer died or hangs) throws CommError naming the call and
// the rank; abort() then ends every rank of the job.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "engine/device.h"
#include "engine/dist/launch.h"
#include "engine/dtype.h"

namespace coco {
class Tensor;
}

namespace coco::dist {

// A collective that failed at run time (an MPI or NCCL error, a timeout): exit code 1.
class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class ReduceOp { sum, average };

struct CommOptions {
  // Seconds a collective may take before the job is declared stuck (a dead or hanging peer).
  double timeout_s = 300.0;
  // Compare every collective's kind, element count and type across ranks before running it (one small
  // extra host all-reduce per call on MPI; the NCCL shim always checks).
  bool check_arguments = true;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual Device device() const = 0;
  virtual const char* backend() const = 0;  // "local", "mpi" or "nccl"

  // In place: every rank ends with the sum (or mean) of all ranks' `data`.
  virtual void all_reduce(void* data, size_t count, DType dtype, ReduceOp op) = 0;
  // `send` holds world_size blocks of `recv_count` elements; rank r receives the reduction of block r.
  virtual void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op) = 0;
  // `recv` receives world_size blocks of `send_count` elements, block r from rank r.
  virtual void all_gather(const void* send, void* recv, size_t send_count, DType dtype) = 0;
  // Every rank ends with `root`'s `data`.
  virtual void broadcast(void* data, size_t count, DType dtype, int root) = 0;
  // Returns once every rank has called it (host-side; completes started collectives first).
  virtual void barrier() = 0;
  // Started collectives are complete for later work (see the header comment).
  virtual void wait() = 0;
  // wait(), and the host blocks until the results are in memory.
  virtual void synchronize() = 0;
  // Blocking, on host memory: every rank ends with the sum over the ranks of its `count` values. A small
  // exchange of host-side counters (a stop flag, token counts) that neither queues device work nor waits
  // for the device (MPI on the host for the MPI and NCCL communicators), so that a step whose device work
  // is still queued need not drain the queue to agree on them. Ordered with the collectives like one
  // (every rank calls the same sequence). The default goes through all_reduce on the device and
  // synchronize() (for communicators without a host path, e.g. test wrappers).
  virtual void sum_on_host(int64_t* values, size_t count);
  // Ends the whole job with `exit_code` after a failure on this rank (MPI_Abort; ncclCommAbort
  // first), so that no other rank waits forever. Never returns.
  [[noreturn]] virtual void abort(int exit_code) = 0;

  // Tensor forms: contiguous tensors on this communicator's device, dtype taken from the tensor.
  void all_reduce(const Tensor& tensor, ReduceOp op);
  void reduce_scatter(const Tensor& send, const Tensor& recv, ReduceOp op);
  void all_gather(const Tensor& send, const Tensor& recv);
  void broadcast(const Tensor& tensor, int root);

 protected:
  // Throws CommError for a negative root, or a recv/send size pair that does not divide by the world.
  void check_root(int root, const char* call) const;
};

// The communicator for `device` in this launch: LocalCommunicator for a world of one started without
// a launcher; MPI (cpu) or NCCL (cuda) otherwise. Throws DistConfigError when the launch needs MPI and
// the build has none, or when MPI's world disagrees with the launcher's variables.
std::unique_ptr<Communicator> make_communicator(Device device, const LaunchInfo& launch,
                                                const CommOptions& options = {});

// True when this build has MPI (and so the MPI and NCCL communicators).
bool built_with_mpi();

}  // namespace coco::dist
