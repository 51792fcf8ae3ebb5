#include "engine/dist/mpi_util.h"
#if defined(COCO_HAVE_MPI)

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/runtime/cuda_api.h"

namespace coco::dist::detail {
namespace {

// Sums of 2-byte floating-point elements: widened to f32, added, rounded to nearest even once.
template <class Half, float (*to_float)(Half), Half (*from_float)(float)>
void half_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const Half*>(in);
  auto* b = static_cast<Half*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = from_float(to_float(a[i]) + to_float(b[i]));
}
float bf16_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__nv_bfloat16 float_to_bf16(float x) { return __float2bfloat16(x); }
float f16_to_float(__half x) { return __half2float(x); }
__half float_to_f16(float x) { return __float2half(x); }

struct HalfTypes {
  MPI_Datatype bf16 = MPI_DATATYPE_NULL, f16 = MPI_DATATYPE_NULL;
  MPI_Op bf16_sum = MPI_OP_NULL, f16_sum = MPI_OP_NULL;
};
HalfTypes& half_types() {
  static HalfTypes types = [] {
    HalfTypes t;
    COCO_MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &t.bf16));
    COCO_MPI_CHECK(MPI_Type_commit(&t.bf16));
    COCO_MPI_CHECK(MPI_Type_contiguous(2, MPI_BYTE, &t.f16));
    COCO_MPI_CHECK(MPI_Type_commit(&t.f16));
    COCO_MPI_CHECK(MPI_Op_create(&half_sum<__nv_bfloat16, bf16_to_float, float_to_bf16>, 1, &t.bf16_sum));
    COCO_MPI_CHECK(MPI_Op_create(&half_sum<__half, f16_to_float, float_to_f16>, 1, &t.f16_sum));
    return t;
  }();
  return types;
}

void finalize_at_exit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

void check_mpi(int status, const char* call, const char* file, int line) {
  if (status == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(status, text, &length) != MPI_SUCCESS) std::strcpy(text, "?");
  throw CommError("MPI error " + std::to_string(status) + " (" + text + ") in `" + call + "` at " + file + ":" +
                  std::to_string(line));
}

void ensure_mpi(const LaunchInfo& launch) {
  static std::once_flag once;
  std::call_once(once, [] {
    int initialized = 0;
    COCO_MPI_CHECK(MPI_Initialized(&initialized));
    if (!initialized) {
      int provided = 0;
      COCO_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
      std::atexit(finalize_at_exit);
    }
  });
  int rank = 0, size = 0;
  COCO_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  COCO_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  if (launch.launcher != "none" && (rank != launch.rank || size != launch.world_size))
    throw DistConfigError("launch: " + launch.launcher + "'s variables say rank " + std::to_string(launch.rank) +
                          " of " + std::to_string(launch.world_size) + ", MPI says rank " + std::to_string(rank) +
                          " of " + std::to_string(size) + " (a process started outside the MPI job?)");
}

MPI_Datatype mpi_datatype(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return MPI_FLOAT;
    case DType::f64:
      return MPI_DOUBLE;
    case DType::i32:
      return MPI_INT32_T;
    case DType::i64:
      return MPI_INT64_T;
    case DType::u8:
      return MPI_UINT8_T;
    case DType::bf16:
      return half_types().bf16;
    case DType::f16:
      return half_types().f16;
  }
  throw CommError("MPI: unknown dtype");
}

MPI_Op mpi_sum(DType dtype) {
  if (dtype == DType::bf16) return half_types().bf16_sum;
  if (dtype == DType::f16) return half_types().f16_sum;
  return MPI_SUM;
}

double absent_ranks_grace(double timeout_s) { return std::min(10.0, std::max(2.0, timeout_s / 10)); }

std::string absent_ranks(MPI_Comm comm, int rank, int world, double grace_s) {
  constexpr int kTag = 0x7c0c;  // the "I time out too" word; collectives never match point-to-point tags
  const int word = rank;
  std::vector<MPI_Request> sends;
  for (int r = 0; r < world; ++r) {
    if (r == rank) continue;
    MPI_Request request;
    if (MPI_Isend(&word, 1, MPI_INT, r, kTag, comm, &request) == MPI_SUCCESS) sends.push_back(request);
  }
  std::vector<bool> heard(static_cast<size_t>(world), false);
  heard[static_cast<size_t>(rank)] = true;
  int answered = 1;
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(grace_s);
  while (answered < world && std::chrono::steady_clock::now() < until) {
    int waiting = 0;
    MPI_Status status;
    if (MPI_Iprobe(MPI_ANY_SOURCE, kTag, comm, &waiting, &status) != MPI_SUCCESS) break;
    if (!waiting) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    int from = -1;
    if (MPI_Recv(&from, 1, MPI_INT, status.MPI_SOURCE, kTag, comm, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
    if (!heard[static_cast<size_t>(status.MPI_SOURCE)]) ++answered;
    heard[static_cast<size_t>(status.MPI_SOURCE)] = true;
  }
  for (MPI_Request& request : sends) MPI_Request_free(&request);
  std::string absent;
  int count = 0;
  for (int r = 0; r < world; ++r)
    if (!heard[static_cast<size_t>(r)]) absent += (count++ ? ", " : "") + std::to_string(r);
  char grace[32];
  std::snprintf(grace, sizeof grace, "%g", grace_s);
  if (count == 0)
    return std::string("every other rank timed out waiting too (a collective slower than the timeout, or ranks ") +
           "calling different collectives)";
  return std::string(count == 1 ? "rank " : "ranks ") + absent + " sent no word within " + grace +
         " s after the deadline: dead, hanging or not at a collective";
}

void wait_with_deadline(MPI_Request* request, double timeout_s, int rank, int world, const std::string& what,
                        MPI_Comm comm) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s);
  for (int polls = 0;; ++polls) {
    int done = 0;
    COCO_MPI_CHECK(MPI_Test(request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    if (std::chrono::steady_clock::now() > deadline)
      throw CommError("rank " + std::to_string(rank) + " of " + std::to_string(world) + ": " + what +
                      " did not complete within " + std::to_string(static_cast<int>(timeout_s)) + " s (" +
                      (comm == MPI_COMM_NULL ? std::string("a peer rank died or stopped calling collectives")
                                             : absent_ranks(comm, rank, world, absent_ranks_grace(timeout_s))) +
                      ")");
    // Spin briefly for short collectives, then yield the core: ranks may share few cores.
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(polls > 10000 ? 1000 : 50));
  }
}

void check_same_call(MPI_Comm comm, double timeout_s, int rank, int world, const char* call, size_t count, DType dtype,
                     int root) {
  uint64_t hash = 1469598103934665603ull;  // FNV-1a of the call's name: the kind of collective
  for (const char* c = call; *c; ++c) hash = (hash ^ static_cast<unsigned char>(*c)) * 1099511628211ull;
  const int64_t kind = static_cast<int64_t>(hash >> 16);
  const int64_t mine[4] = {kind, static_cast<int64_t>(count), static_cast<int64_t>(dtype), root};
  int64_t both[8], low[8];
  for (int i = 0; i < 4; ++i) {
    both[i] = mine[i];
    both[i + 4] = -mine[i];
  }
  MPI_Request request;
  COCO_MPI_CHECK(MPI_Iallreduce(both, low, 8, MPI_INT64_T, MPI_MIN, comm, &request));
  wait_with_deadline(&request, timeout_s, rank, world, std::string("the argument check of ") + call, comm);
  for (int i = 0; i < 4; ++i)
    if (low[i] != -low[i + 4])
      throw DistConfigError("rank " + std::to_string(rank) + " of " + std::to_string(world) + ": " + call + " of " +
                            std::to_string(count) + " " + dtype_name(dtype) +
                            " elements does not match the other ranks' call (" +
                            (i == 0   ? "another collective"
                             : i == 1 ? "element counts " + std::to_string(low[1]) + ".." + std::to_string(-low[5])
                             : i == 2 ? std::string("another element type")
                                      : "roots " + std::to_string(low[3]) + ".." + std::to_string(-low[7])) +
                            "); every rank must run the same model and configuration");
}

void sum_on_host(MPI_Comm comm, double timeout_s, int rank, int world, bool check_arguments, int64_t* values,
                 size_t count) {
  if (count > 0 && !values) throw CommError("sum_on_host: null buffer for " + std::to_string(count) + " values");
  if (check_arguments) check_same_call(comm, timeout_s, rank, world, "sum_on_host", count, DType::i64, 0);
  if (count == 0) return;
  if (count > static_cast<size_t>(INT32_MAX))
    throw CommError("sum_on_host: " + std::to_string(count) + " values exceed MPI's int count");
  MPI_Request request;
  COCO_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, values, static_cast<int>(count), MPI_INT64_T, MPI_SUM, comm, &request));
  wait_with_deadline(&request, timeout_s, rank, world, "sum_on_host", comm);
}

}  // namespace coco::dist::detail

#endif  // COCO_HAVE_MPI
