// MPI helpers of the communicators: the checked-call macro, initialisation, element types, and
// waiting for requests with a deadline. Only built with MPI (COCO_HAVE_MPI).
#pragma once
#if defined(COCO_HAVE_MPI)
#include <mpi.h>

#include <string>

#include "engine/dist/communicator.h"

namespace coco::dist::detail {

// Throws CommError "MPI error <code> (<MPI's text>) in `call` at file:line". The communicators'
// MPI communicators return errors (MPI_ERRORS_RETURN) instead of MPI's default of aborting.
void check_mpi(int status, const char* call, const char* file, int line);

// Initialises MPI once (MPI_THREAD_FUNNELED: only the thread that made the communicator calls MPI)
// and finalises it at exit. Checks that MPI's world is the one the launcher described.
void ensure_mpi(const LaunchInfo& launch);

// The MPI datatype and the sum operation for `dtype` (bf16 and f16 are 2-byte types with sums of
// their own that add in f32 and round once per pair, as NCCL does).
MPI_Datatype mpi_datatype(DType dtype);
MPI_Op mpi_sum(DType dtype);

// Waits for `request` to complete, driving MPI's progress, for at most `timeout_s` seconds; past that
// throws CommError "rank R of W: <what> did not complete within T s (...)". With `comm` (the
// communicator the request runs on), the message names the ranks that did not also time out
// (absent_ranks), which are the dead or hanging ones.
void wait_with_deadline(MPI_Request* request, double timeout_s, int rank, int world, const std::string& what,
                        MPI_Comm comm = MPI_COMM_NULL);

// After a collective's deadline on `comm`: every rank that times out sends each other rank a word
// (point to point, a tag of its own, which no collective matches) and listens for up to `grace_s`
// seconds; the ranks not heard from are the ones that died, hang or never reached a collective. Returns
// the text for the error message: "rank 1 sent no word ..." or, when every rank answered, that they all
// wait. The unanswered sends are freed (the job is aborted next).
std::string absent_ranks(MPI_Comm comm, int rank, int world, double grace_s);
// The grace period for a collective timeout of `timeout_s`: a tenth of it, between 2 and 10 s (the ranks
// reach a collective up to a step apart, so they time out that far apart too).
double absent_ranks_grace(double timeout_s);

// Every rank's (kind, count, dtype, root) agree; otherwise every rank throws DistConfigError naming
// its own values and the range over the ranks. A blocking small all-reduce on `comm`.
void check_same_call(MPI_Comm comm, double timeout_s, int rank, int world, const char* call, size_t count, DType dtype,
                     int root);

// Communicator::sum_on_host on `comm`: the argument check first (when `check_arguments`), then a blocking
// MPI sum of `count` i64 values in host memory, waited for with the deadline.
void sum_on_host(MPI_Comm comm, double timeout_s, int rank, int world, bool check_arguments, int64_t* values,
                 size_t count);

}  // namespace coco::dist::detail

#define COCO_MPI_CHECK(call) ::coco::dist::detail::check_mpi((call), #call, __FILE__, __LINE__)

#endif  // COCO_HAVE_MPI
