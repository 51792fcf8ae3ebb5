// NCCL for the emulated build: the calls engine/dist/nccl_communicator.cpp makes (unique ids,
// communicators, all-reduce, reduce-scatter, all-gather, broadcast, groups, abort and the error
// queries), declared by the real <nccl.h> and implemented here over MPI on the emulator's device
// memory (host memory), so that the gpu communication code runs unchanged in CI under mpirun.
//
// Like the real library it refuses bad arguments with its status codes: ncclInvalidArgument for a
// null or unknown communicator, a rank outside [0, nranks), a unique id that ncclGetUniqueId did not
// make, an unknown data type or reduction, a null buffer, a buffer that is not cudaMalloc memory or
// runs past the end of its allocation, a root outside the communicator, buffers that overlap other
// than in NCCL's in-place forms; ncclInvalidUsage for a communicator whose ranks disagree on its size
// or twice hold one rank, and for use after ncclCommAbort. Beyond the real library (which would hang
// or read the wrong bytes) every collective first compares its kind, count, type, reduction and root
// across the ranks, and a mismatch fails the call with ncclInvalidUsage on every rank. The reason of
// the last refusal is ncclGetLastError's text.
//
// Every process of MPI_COMM_WORLD must call ncclCommInitRank together (the ranks of a unique id are
// found with MPI_Comm_split); MPI must be initialised first. Collectives are submitted to the stream
// like kernels: they run at once (the emulated streams are synchronous), or become graph nodes
// during stream capture and run at cudaGraphLaunch (a failure there is the communicator's
// asynchronous error). A collective waiting for its peers polls, so ncclCommAbort from another
// thread (a watchdog) ends the wait with ncclSystemError.
#if (defined(COCO_CUDA_EMULATED) || defined(EMU_STANDALONE)) && defined(COCO_HAVE_MPI)

#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "engine/simt/cuda_emu.h"
#include "engine/simt/emu_internal.h"

namespace emu::detail {
namespace {

constexpr char kIdMagic[] = "coco-emu-nccl-id";
constexpr uint32_t kCommMagic = 0x4E43434Cu;  // "NCCL"

struct EmuComm {
  uint32_t magic = kCommMagic;
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0;
  int nranks = 1;
  int device = 0;
  std::atomic<bool> aborted{false};
  std::atomic<int> async_error{ncclSuccess};
  std::string last_error;
};

struct NcclState {
  std::mutex mutex;
  std::unordered_set<EmuComm*> comms;
};
NcclState& nccl_state() {
  static NcclState* s = new NcclState;  // never destroyed: a watchdog may abort during exit
  return *s;
}
thread_local std::string t_last_error;  // refusals without a communicator
thread_local int t_group_depth = 0;

ncclResult_t refuse(EmuComm* comm, ncclResult_t status, std::string why) {
  if (comm) {
    std::lock_guard<std::mutex> lock(nccl_state().mutex);
    comm->last_error = why;
  }
  t_last_error = std::move(why);
  return status;
}

// A failed MPI call: ncclSystemError, with the call, file, line and MPI's text as ncclGetLastError's.
ncclResult_t mpi_failure(EmuComm* comm, int status, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = "?";
  int length = 0;
  MPI_Error_string(status, text, &length);
  return refuse(comm, ncclSystemError,
                std::string("MPI error ") + std::to_string(status) + " (" + text + ") in `" + call + "` at " + file +
                    ":" + std::to_string(line) + " under the emulated NCCL");
}
#define EMU_MPI_CHECK(comm, call)                                                           \
  do {                                                                                      \
    const int emu_mpi_status = (call);                                                      \
    if (emu_mpi_status != MPI_SUCCESS)                                                      \
      return ::emu::detail::mpi_failure((comm), emu_mpi_status, #call, __FILE__, __LINE__); \
  } while (0)

EmuComm* find_comm(ncclComm_t handle) {
  auto* comm = reinterpret_cast<EmuComm*>(handle);
  std::lock_guard<std::mutex> lock(nccl_state().mutex);
  return comm && nccl_state().comms.count(comm) && comm->magic == kCommMagic ? comm : nullptr;
}

// ---- element types and reductions
bool type_known(ncclDataType_t type) { return type >= 0 && type < ncclNumTypes; }
size_t type_size(ncclDataType_t type) {
  switch (type) {
    case ncclInt8:
    case ncclUint8:
    case ncclFloat8e4m3:
    case ncclFloat8e5m2:
      return 1;
    case ncclFloat16:
    case ncclBfloat16:
      return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
      return 4;
    default:
      return 8;
  }
}
const char* type_name(ncclDataType_t type) {
  static const char* names[] = {"ncclInt8",    "ncclUint8",    "ncclInt32",      "ncclUint32",
                                "ncclInt64",   "ncclUint64",   "ncclFloat16",    "ncclFloat32",
                                "ncclFloat64", "ncclBfloat16", "ncclFloat8e4m3", "ncclFloat8e5m2"};
  return type_known(type) ? names[type] : "?";
}

template <class Half, float (*to_float)(Half), Half (*from_float)(float), int kOp>
void half_reduce(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const Half*>(in);
  auto* b = static_cast<Half*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = to_float(a[i]), y = to_float(b[i]);
    const float r = kOp == ncclProd  ? x * y
                    : kOp == ncclMax ? (x > y ? x : y)
                    : kOp == ncclMin ? (x < y ? x : y)
                                     : x + y;
    b[i] = from_float(r);
  }
}
float bf16_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__nv_bfloat16 float_to_bf16(float x) { return __float2bfloat16(x); }
float f16_to_float(__half x) { return __half2float(x); }
__half float_to_f16(float x) { return __float2half(x); }

struct MpiTypes {
  MPI_Datatype half = MPI_DATATYPE_NULL;  // 2 opaque bytes (bf16 and f16)
  MPI_Op bf16[4] = {}, f16[4] = {};       // sum, prod, max, min
};
MpiTypes& mpi_types() {
  static MpiTypes types;
  return types;
}
ncclResult_t create_types(MpiTypes& t) {
  EMU_MPI_CHECK(nullptr, MPI_Type_contiguous(2, MPI_BYTE, &t.half));
  EMU_MPI_CHECK(nullptr, MPI_Type_commit(&t.half));
  EMU_MPI_CHECK(nullptr,
                MPI_Op_create(&half_reduce<__nv_bfloat16, bf16_to_float, float_to_bf16, ncclSum>, 1, &t.bf16[0]));
  EMU_MPI_CHECK(nullptr,
                MPI_Op_create(&half_reduce<__nv_bfloat16, bf16_to_float, float_to_bf16, ncclProd>, 1, &t.bf16[1]));
  EMU_MPI_CHECK(nullptr,
                MPI_Op_create(&half_reduce<__nv_bfloat16, bf16_to_float, float_to_bf16, ncclMax>, 1, &t.bf16[2]));
  EMU_MPI_CHECK(nullptr,
                MPI_Op_create(&half_reduce<__nv_bfloat16, bf16_to_float, float_to_bf16, ncclMin>, 1, &t.bf16[3]));
  EMU_MPI_CHECK(nullptr, MPI_Op_create(&half_reduce<__half, f16_to_float, float_to_f16, ncclSum>, 1, &t.f16[0]));
  EMU_MPI_CHECK(nullptr, MPI_Op_create(&half_reduce<__half, f16_to_float, float_to_f16, ncclProd>, 1, &t.f16[1]));
  EMU_MPI_CHECK(nullptr, MPI_Op_create(&half_reduce<__half, f16_to_float, float_to_f16, ncclMax>, 1, &t.f16[2]));
  EMU_MPI_CHECK(nullptr, MPI_Op_create(&half_reduce<__half, f16_to_float, float_to_f16, ncclMin>, 1, &t.f16[3]));
  return ncclSuccess;
}
// The 2-byte type and its reductions, made once (after MPI_Init: by the first ncclCommInitRank).
ncclResult_t ensure_types() {
  static const ncclResult_t status = create_types(mpi_types());
  return status;
}

MPI_Datatype mpi_type(ncclDataType_t type) {
  switch (type) {
    case ncclInt8:
      return MPI_INT8_T;
    case ncclUint8:
      return MPI_UINT8_T;
    case ncclInt32:
      return MPI_INT32_T;
    case ncclUint32:
      return MPI_UINT32_T;
    case ncclInt64:
      return MPI_INT64_T;
    case ncclUint64:
      return MPI_UINT64_T;
    case ncclFloat32:
      return MPI_FLOAT;
    case ncclFloat64:
      return MPI_DOUBLE;
    default:
      return mpi_types().half;
  }
}
// ncclAvg reduces as a sum; the average is taken afterwards (scale_average).
MPI_Op mpi_op(ncclRedOp_t op, ncclDataType_t type) {
  const int index = op == ncclProd ? 1 : op == ncclMax ? 2 : op == ncclMin ? 3 : 0;
  if (type == ncclBfloat16) return mpi_types().bf16[index];
  if (type == ncclFloat16) return mpi_types().f16[index];
  static const MPI_Op builtin[4] = {MPI_SUM, MPI_PROD, MPI_MAX, MPI_MIN};
  return builtin[index];
}

// ncclAvg: floating-point sums are multiplied by 1/n in their type's arithmetic (f32 for the
// 16-bit types), integer sums divided by n.
void scale_average(void* data, size_t count, ncclDataType_t type, int n) {
  switch (type) {
    case ncclFloat32:
      for (size_t i = 0; i < count; ++i) static_cast<float*>(data)[i] *= 1.0f / static_cast<float>(n);
      break;
    case ncclFloat64:
      for (size_t i = 0; i < count; ++i) static_cast<double*>(data)[i] *= 1.0 / n;
      break;
    case ncclBfloat16:
      for (size_t i = 0; i < count; ++i) {
        auto& x = static_cast<__nv_bfloat16*>(data)[i];
        x = __float2bfloat16(__bfloat162float(x) * (1.0f / static_cast<float>(n)));
      }
      break;
    case ncclFloat16:
      for (size_t i = 0; i < count; ++i) {
        auto& x = static_cast<__half*>(data)[i];
        x = __float2half(__half2float(x) * (1.0f / static_cast<float>(n)));
      }
      break;
    case ncclInt8:
      for (size_t i = 0; i < count; ++i) static_cast<int8_t*>(data)[i] /= n;
      break;
    case ncclUint8:
      for (size_t i = 0; i < count; ++i) static_cast<uint8_t*>(data)[i] /= n;
      break;
    case ncclInt32:
      for (size_t i = 0; i < count; ++i) static_cast<int32_t*>(data)[i] /= n;
      break;
    case ncclUint32:
      for (size_t i = 0; i < count; ++i) static_cast<uint32_t*>(data)[i] /= n;
      break;
    case ncclInt64:
      for (size_t i = 0; i < count; ++i) static_cast<int64_t*>(data)[i] /= n;
      break;
    case ncclUint64:
      for (size_t i = 0; i < count; ++i) static_cast<uint64_t*>(data)[i] /= n;
      break;
    default:
      break;
  }
}

// Waits for `request`, polling so that ncclCommAbort from another thread ends the wait.
ncclResult_t wait_request(EmuComm* comm, MPI_Request* request, const char* call) {
  for (int polls = 0;; ++polls) {
    int done = 0;
    EMU_MPI_CHECK(comm, MPI_Test(request, &done, MPI_STATUS_IGNORE));
    if (done) return ncclSuccess;
    if (comm->aborted.load())
      return refuse(comm, ncclSystemError, std::string(call) + ": the communicator was aborted (ncclCommAbort)");
    if (polls > 1000) std::this_thread::sleep_for(std::chrono::microseconds(polls > 10000 ? 1000 : 50));
  }
}

// The buffer is device memory of at least `bytes` from its start (the real NCCL needs memory the
// device can reach; here that is what cudaMalloc returned).
bool device_buffer(const void* pointer, size_t bytes) {
  if (bytes == 0) return true;
  if (!pointer) return false;
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) return false;
  return attributes.type == cudaMemoryTypeDevice && range_ok(pointer, bytes);
}
bool overlap(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  const auto x = reinterpret_cast<uintptr_t>(a), y = reinterpret_cast<uintptr_t>(b);
  return a_bytes && b_bytes && x < y + b_bytes && y < x + a_bytes;
}

enum class Kind : int64_t { all_reduce = 1, reduce_scatter, all_gather, broadcast };
const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::all_reduce:
      return "ncclAllReduce";
    case Kind::reduce_scatter:
      return "ncclReduceScatter";
    case Kind::all_gather:
      return "ncclAllGather";
    case Kind::broadcast:
      return "ncclBroadcast";
  }
  return "?";
}

// Every rank called the same collective with the same count, type, reduction and root.
ncclResult_t check_same_call(EmuComm* comm, Kind kind, size_t count, ncclDataType_t type, int op, int root) {
  const int64_t mine[5] = {static_cast<int64_t>(kind), static_cast<int64_t>(count), type, op, root};
  int64_t both[10], low[10];
  for (int i = 0; i < 5; ++i) {
    both[i] = mine[i];
    both[i + 5] = -mine[i];
  }
  MPI_Request request;
  EMU_MPI_CHECK(comm, MPI_Iallreduce(both, low, 10, MPI_INT64_T, MPI_MIN, comm->mpi, &request));
  if (ncclResult_t status = wait_request(comm, &request, kind_name(kind)); status != ncclSuccess) return status;
  static const char* what[5] = {"collective", "count", "data type", "reduction", "root"};
  for (int i = 0; i < 5; ++i)
    if (low[i] != -low[i + 5])
      return refuse(comm, ncclInvalidUsage,
                    std::string(kind_name(kind)) + " on rank " + std::to_string(comm->rank) + " of " +
                        std::to_string(comm->nranks) + ": the ranks disagree on the " + what[i] + " (" +
                        std::to_string(low[i]) + ".." + std::to_string(-low[i + 5]) + ", this rank " +
                        std::to_string(mine[i]) + ")");
  return ncclSuccess;
}

struct Call {
  Kind kind;
  const void* send;
  void* recv;
  size_t count;  // all_reduce, broadcast: the buffer; reduce_scatter: recvcount; all_gather: sendcount
  ncclDataType_t type;
  ncclRedOp_t op;
  int root;
};

// The collective itself, on host memory, when the stream reaches it.
ncclResult_t run(EmuComm* comm, const Call& c) {
  const size_t element = type_size(c.type);
  const int n = comm->nranks;
  const int count = static_cast<int>(c.count);
  const MPI_Datatype type = mpi_type(c.type);
  MPI_Request request = MPI_REQUEST_NULL;
  switch (c.kind) {
    case Kind::all_reduce:
      EMU_MPI_CHECK(comm, MPI_Iallreduce(c.send == c.recv ? MPI_IN_PLACE : c.send, c.recv, count, type,
                                         mpi_op(c.op, c.type), comm->mpi, &request));
      break;
    case Kind::reduce_scatter: {
      const bool in_place = static_cast<const char*>(c.send) + comm->rank * c.count * element == c.recv;
      if (in_place) {  // MPI's in-place form reads and writes the whole send buffer: work on a copy
        std::vector<char> whole(static_cast<const char*>(c.send),
                                static_cast<const char*>(c.send) + n * c.count * element);
        EMU_MPI_CHECK(comm, MPI_Ireduce_scatter_block(MPI_IN_PLACE, whole.data(), count, type, mpi_op(c.op, c.type),
                                                      comm->mpi, &request));
        if (ncclResult_t r = wait_request(comm, &request, kind_name(c.kind)); r != ncclSuccess) return r;
        std::memcpy(c.recv, whole.data(), c.count * element);
        if (c.op == ncclAvg) scale_average(c.recv, c.count, c.type, n);
        return ncclSuccess;
      }
      EMU_MPI_CHECK(comm,
                    MPI_Ireduce_scatter_block(c.send, c.recv, count, type, mpi_op(c.op, c.type), comm->mpi, &request));
      break;
    }
    case Kind::all_gather: {
      const bool in_place = static_cast<char*>(c.recv) + comm->rank * c.count * element == c.send;
      EMU_MPI_CHECK(comm, MPI_Iallgather(in_place ? MPI_IN_PLACE : c.send, count, type, c.recv, count, type, comm->mpi,
                                         &request));
      break;
    }
    case Kind::broadcast:
      if (comm->rank == c.root && c.send != c.recv && c.count) std::memcpy(c.recv, c.send, c.count * element);
      EMU_MPI_CHECK(comm, MPI_Ibcast(c.recv, count, type, c.root, comm->mpi, &request));
      break;
  }
  if (ncclResult_t r = wait_request(comm, &request, kind_name(c.kind)); r != ncclSuccess) return r;
  const bool reduces = c.kind == Kind::all_reduce || c.kind == Kind::reduce_scatter;
  if (reduces && c.op == ncclAvg) scale_average(c.recv, c.count, c.type, n);
  return ncclSuccess;
}

ncclResult_t collective(ncclComm_t handle, const Call& c, cudaStream_t stream) {
  EmuComm* comm = find_comm(handle);
  const std::string name = kind_name(c.kind);
  if (!comm) return refuse(nullptr, ncclInvalidArgument, name + ": comm is null or not a live communicator");
  if (comm->aborted.load()) return refuse(comm, ncclInvalidUsage, name + ": the communicator was aborted");
  if (!type_known(c.type))
    return refuse(comm, ncclInvalidArgument, name + ": invalid data type " + std::to_string(c.type));
  if (c.type == ncclFloat8e4m3 || c.type == ncclFloat8e5m2)
    return refuse(comm, ncclInvalidArgument,
                  name + ": " + type_name(c.type) + " is not supported by the emulated NCCL");
  const bool reduces = c.kind == Kind::all_reduce || c.kind == Kind::reduce_scatter;
  if (reduces && (c.op < 0 || c.op >= ncclNumOps))
    return refuse(comm, ncclInvalidArgument,
                  name + ": invalid reduction operation " + std::to_string(c.op) +
                      " (the emulated NCCL knows the built-in ones)");
  if (c.count > static_cast<size_t>(INT32_MAX / comm->nranks))
    return refuse(comm, ncclInvalidArgument,
                  name + ": count " + std::to_string(c.count) + " exceeds what the emulated NCCL carries");
  if (c.kind == Kind::broadcast && (c.root < 0 || c.root >= comm->nranks))
    return refuse(comm, ncclInvalidArgument,
                  name + ": root " + std::to_string(c.root) + " is not a rank of " + std::to_string(comm->nranks));
  const size_t element = type_size(c.type);
  const size_t block = c.count * element;
  const size_t n = static_cast<size_t>(comm->nranks);
  const size_t send_bytes = c.kind == Kind::reduce_scatter ? n * block : block;
  const size_t recv_bytes = c.kind == Kind::all_gather ? n * block : block;
  const bool sends = c.kind != Kind::broadcast || comm->rank == c.root;  // broadcast reads sendbuff at the root only
  if (sends && !device_buffer(c.send, send_bytes))
    return refuse(comm, ncclInvalidArgument,
                  name + ": sendbuff is not device memory holding " + std::to_string(send_bytes) + " bytes");
  if (!device_buffer(c.recv, recv_bytes))
    return refuse(comm, ncclInvalidArgument,
                  name + ": recvbuff is not device memory holding " + std::to_string(recv_bytes) + " bytes");
  const bool in_place = c.kind == Kind::reduce_scatter ? static_cast<const char*>(c.send) + comm->rank * block == c.recv
                        : c.kind == Kind::all_gather   ? static_cast<const char*>(c.recv) + comm->rank * block == c.send
                                                       : c.send == c.recv;
  if (sends && !in_place && overlap(c.send, send_bytes, c.recv, recv_bytes))
    return refuse(comm, ncclInvalidArgument,
                  name + ": sendbuff and recvbuff overlap other than in NCCL's in-place form");
  if (ncclResult_t status =
          check_same_call(comm, c.kind, c.count, c.type, reduces ? c.op : 0, c.kind == Kind::broadcast ? c.root : 0);
      status != ncclSuccess)
    return status;

  bool capturing = false;
  if (cudaError_t status = stream_work(stream, &capturing); status != cudaSuccess)
    return refuse(comm, ncclUnhandledCudaError, name + ": the stream refused the work (" + error_name(status) + ")");
  if (capturing) {
    const cudaError_t status = record_node(stream, cudaGraphNodeTypeKernel, [comm, c] {
      if (ncclResult_t r = run(comm, c); r != ncclSuccess) comm->async_error.store(r);
    });
    return status == cudaSuccess ? ncclSuccess
                                 : refuse(comm, ncclUnhandledCudaError, name + ": capture refused the work");
  }
  return run(comm, c);
}

}  // namespace
}  // namespace emu::detail

extern "C" {

const char* ncclGetErrorString(ncclResult_t result) {
  switch (result) {
    case ncclSuccess:
      return "no error";
    case ncclUnhandledCudaError:
      return "unhandled cuda error (run with NCCL_DEBUG=INFO for details)";
    case ncclSystemError:
      return "unhandled system error (run with NCCL_DEBUG=INFO for details)";
    case ncclInternalError:
      return "internal error - please report this issue to the NCCL developers";
    case ncclInvalidArgument:
      return "invalid argument (run with NCCL_DEBUG=WARN for details)";
    case ncclInvalidUsage:
      return "invalid usage (run with NCCL_DEBUG=WARN for details)";
    case ncclRemoteError:
      return "remote process exited or there was a network error";
    case ncclInProgress:
      return "NCCL operation in progress";
    default:
      return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t comm) {
  using namespace emu::detail;
  if (EmuComm* c = find_comm(comm)) {
    std::lock_guard<std::mutex> lock(nccl_state().mutex);
    thread_local std::string copy;
    copy = c->last_error;
    return copy.c_str();
  }
  return t_last_error.c_str();
}

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return emu::detail::refuse(nullptr, ncclInvalidArgument, "ncclGetVersion: version is null");
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId* uniqueId) {
  using namespace emu::detail;
  if (!uniqueId) return refuse(nullptr, ncclInvalidArgument, "ncclGetUniqueId: uniqueId is null");
  std::memset(uniqueId->internal, 0, sizeof uniqueId->internal);
  std::memcpy(uniqueId->internal, kIdMagic, sizeof kIdMagic);
  std::random_device entropy;
  const uint64_t nonce = (static_cast<uint64_t>(entropy()) << 32) ^ entropy() ^
                         static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::memcpy(uniqueId->internal + sizeof kIdMagic, &nonce, sizeof nonce);
  return ncclSuccess;
}

ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId commId, int rank) {
  using namespace emu::detail;
  if (!comm) return refuse(nullptr, ncclInvalidArgument, "ncclCommInitRank: comm is null");
  *comm = nullptr;
  if (nranks < 1)
    return refuse(nullptr, ncclInvalidArgument, "ncclCommInitRank: nranks " + std::to_string(nranks) + " < 1");
  if (rank < 0 || rank >= nranks)
    return refuse(nullptr, ncclInvalidArgument,
                  "ncclCommInitRank: rank " + std::to_string(rank) + " is not in [0, " + std::to_string(nranks) + ")");
  if (std::memcmp(commId.internal, kIdMagic, sizeof kIdMagic) != 0)
    return refuse(nullptr, ncclInvalidArgument, "ncclCommInitRank: commId was not made by ncclGetUniqueId");
  int initialized = 0;
  EMU_MPI_CHECK(nullptr, MPI_Initialized(&initialized));
  if (!initialized)
    return refuse(nullptr, ncclSystemError,
                  "ncclCommInitRank: the emulated NCCL needs MPI initialised (it carries the traffic)");
  if (ncclResult_t status = ensure_types(); status != ncclSuccess) return status;
  uint64_t nonce = 0;
  std::memcpy(&nonce, commId.internal + sizeof kIdMagic, sizeof nonce);
  auto fresh = std::make_unique<EmuComm>();
  fresh->rank = rank;
  fresh->nranks = nranks;
  if (cudaGetDevice(&fresh->device) != cudaSuccess)
    return refuse(nullptr, ncclUnhandledCudaError, "ncclCommInitRank: cudaGetDevice failed");
  const int color = static_cast<int>(nonce % 0x7fffffffu);
  EMU_MPI_CHECK(nullptr, MPI_Comm_split(MPI_COMM_WORLD, color, rank, &fresh->mpi));
  EMU_MPI_CHECK(nullptr, MPI_Comm_set_errhandler(fresh->mpi, MPI_ERRORS_RETURN));
  int members = 0;
  EMU_MPI_CHECK(nullptr, MPI_Comm_size(fresh->mpi, &members));
  std::vector<int> claims(2 * static_cast<size_t>(members));
  const int mine[2] = {rank, nranks};
  EMU_MPI_CHECK(nullptr, MPI_Allgather(mine, 2, MPI_INT, claims.data(), 2, MPI_INT, fresh->mpi));
  std::vector<int> seen(static_cast<size_t>(std::max(nranks, 1)), 0);
  std::string problem;
  for (int i = 0; i < members && problem.empty(); ++i) {
    const int r = claims[2 * i], n = claims[2 * i + 1];
    if (n != nranks)
      problem = "ranks disagree on nranks (" + std::to_string(n) + " and " + std::to_string(nranks) + ")";
    else if (++seen[static_cast<size_t>(r)] > 1)
      problem = "rank " + std::to_string(r) + " was claimed twice";
  }
  if (problem.empty() && members != nranks)
    problem = std::to_string(members) + " processes joined a communicator of nranks " + std::to_string(nranks);
  if (!problem.empty()) {
    EMU_MPI_CHECK(nullptr, MPI_Comm_free(&fresh->mpi));
    return refuse(nullptr, ncclInvalidUsage, "ncclCommInitRank: " + problem);
  }
  std::lock_guard<std::mutex> lock(nccl_state().mutex);
  nccl_state().comms.insert(fresh.get());
  *comm = reinterpret_cast<ncclComm_t>(fresh.release());
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  using namespace emu::detail;
  EmuComm* c = find_comm(comm);
  if (!c) return refuse(nullptr, ncclInvalidArgument, "ncclCommDestroy: comm is null or not a live communicator");
  {
    std::lock_guard<std::mutex> lock(nccl_state().mutex);
    nccl_state().comms.erase(c);
  }
  int finalized = 0;
  EMU_MPI_CHECK(nullptr, MPI_Finalized(&finalized));
  const int freed = finalized ? MPI_SUCCESS : MPI_Comm_free(&c->mpi);
  c->magic = 0;
  delete c;
  EMU_MPI_CHECK(nullptr, freed);
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) {
  using namespace emu::detail;
  EmuComm* c = find_comm(comm);
  if (!c) return refuse(nullptr, ncclInvalidArgument, "ncclCommAbort: comm is null or not a live communicator");
  // A collective may still be polling in another thread: the communicator is left allocated (the
  // process is about to end) and its MPI communicator is not freed under that thread.
  c->aborted.store(true);
  std::lock_guard<std::mutex> lock(nccl_state().mutex);
  nccl_state().comms.erase(c);
  return ncclSuccess;
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* asyncError) {
  using namespace emu::detail;
  EmuComm* c = find_comm(comm);
  if (!c || !asyncError) return refuse(c, ncclInvalidArgument, "ncclCommGetAsyncError: null or unknown argument");
  *asyncError = static_cast<ncclResult_t>(c->async_error.load());
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  using namespace emu::detail;
  EmuComm* c = find_comm(comm);
  if (!c || !count) return refuse(c, ncclInvalidArgument, "ncclCommCount: null or unknown argument");
  *count = c->nranks;
  return ncclSuccess;
}

ncclResult_t ncclCommCuDevice(const ncclComm_t comm, int* device) {
  using namespace emu::detail;
  EmuComm* c = find_comm(comm);
  if (!c || !device) return refuse(c, ncclInvalidArgument, "ncclCommCuDevice: null or unknown argument");
  *device = c->device;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  using namespace emu::detail;
  EmuComm* c = find_comm(comm);
  if (!c || !rank) return refuse(c, ncclInvalidArgument, "ncclCommUserRank: null or unknown argument");
  *rank = c->rank;
  return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  using namespace emu::detail;
  return collective(comm, {Kind::all_reduce, sendbuff, recvbuff, count, datatype, op, 0}, stream);
}

ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount, ncclDataType_t datatype,
                               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
  using namespace emu::detail;
  return collective(comm, {Kind::reduce_scatter, sendbuff, recvbuff, recvcount, datatype, op, 0}, stream);
}

ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount, ncclDataType_t datatype,
                           ncclComm_t comm, cudaStream_t stream) {
  using namespace emu::detail;
  return collective(comm, {Kind::all_gather, sendbuff, recvbuff, sendcount, datatype, ncclSum, 0}, stream);
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  using namespace emu::detail;
  return collective(comm, {Kind::broadcast, sendbuff, recvbuff, count, datatype, ncclSum, root}, stream);
}

// Groups: the emulated collectives run in call order, which every rank shares, so a group only has
// to be balanced.
ncclResult_t ncclGroupStart() {
  ++emu::detail::t_group_depth;
  return ncclSuccess;
}
ncclResult_t ncclGroupEnd() {
  using namespace emu::detail;
  if (t_group_depth == 0) return refuse(nullptr, ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  --t_group_depth;
  return ncclSuccess;
}

}  // extern "C"

#endif  // (COCO_CUDA_EMULATED || EMU_STANDALONE) && COCO_HAVE_MPI
