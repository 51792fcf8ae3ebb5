// The cuda device's communicator: NCCL, one process per GPU. Rank 0 makes the unique id and MPI
// broadcasts it; the GPU is the node-local rank's. Collectives run on a stream of their own: each is
// ordered after the work already queued on the caller's current stream by an event (no host wait),
// and wait() orders the caller's stream after them the same way, so they overlap with compute
// queued in between. A watchdog thread aborts the communicator (ncclCommAbort) when a collective
// call or synchronize() has waited longer than the timeout, so a dead or hanging peer ends in a
// CommError naming the rank instead of a hang. In the emulated build the same code runs against the
// NCCL shim (engine/simt/emu_nccl.cpp), whose collectives complete inside the call.
#if defined(COCO_HAVE_MPI)
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "engine/dist/communicator_internal.h"
#include "engine/dist/mpi_util.h"
#include "engine/runtime/check.h"
#include "engine/runtime/check_nccl.h"
#include "engine/runtime/counters.h"
#include "engine/runtime/cuda_calls.h"

namespace coco::dist::detail {
namespace {

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::f32:
      return ncclFloat32;
    case DType::f64:
      return ncclFloat64;
    case DType::bf16:
      return ncclBfloat16;
    case DType::f16:
      return ncclFloat16;
    case DType::i32:
      return ncclInt32;
    case DType::i64:
      return ncclInt64;
    case DType::u8:
      return ncclUint8;
  }
  throw CommError("NCCL: unknown dtype");
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const LaunchInfo& launch, const CommOptions& options) : options_(options) {
    ensure_mpi(launch);
    COCO_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &mpi_));
    COCO_MPI_CHECK(MPI_Comm_set_errhandler(mpi_, MPI_ERRORS_RETURN));
    COCO_MPI_CHECK(MPI_Comm_rank(mpi_, &rank_));
    COCO_MPI_CHECK(MPI_Comm_size(mpi_, &size_));
    int devices = 0;
    COCO_CUDA_CHECK(cudaGetDeviceCount(&devices));
    // One GPU per process, by node-local rank; the emulator gives every process a device of its own.
    COCO_CUDA_CHECK(cudaSetDevice(device_for_local_rank(launch, devices, /*device_per_process=*/kCudaEmulated)));
    ncclUniqueId id{};
    if (rank_ == 0) COCO_NCCL_CHECK(ncclGetUniqueId(&id));
    MPI_Request request;
    COCO_MPI_CHECK(MPI_Ibcast(&id, sizeof id, MPI_BYTE, 0, mpi_, &request));
    wait_with_deadline(&request, options_.timeout_s, rank_, size_, "broadcast of the NCCL unique id", mpi_);
    watchdog_ = std::thread([this] { watch(); });
    try {
      ncclComm_t comm = nullptr;
      guarded("ncclCommInitRank", [&] { COCO_NCCL_CHECK(ncclCommInitRank(&comm, size_, id, rank_)); });
      {
        std::lock_guard<std::mutex> lock(mutex_);
        comm_ = comm;
      }
      COCO_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
      COCO_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
      COCO_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    } catch (...) {
      release();
      throw;
    }
  }

  ~NcclCommunicator() override { release(); }

  void release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    if (comm_ && !aborted_.load()) (void)ncclCommDestroy(comm_);
    comm_ = nullptr;
    if (ready_) (void)cudaEventDestroy(ready_);
    if (done_) (void)cudaEventDestroy(done_);
    if (stream_) (void)cudaStreamDestroy(stream_);
    ready_ = done_ = nullptr;
    stream_ = nullptr;
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && mpi_ != MPI_COMM_NULL) MPI_Comm_free(&mpi_);
  }
  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  Device device() const override { return Device::cuda; }
  const char* backend() const override { return "nccl"; }

  void all_reduce(void* data, size_t count, DType dtype, ReduceOp op) override {
    enqueue("ncclAllReduce", count, dtype, op, 0,
            [&] { COCO_NCCL_CHECK(ncclAllReduce(data, data, count, nccl_type(dtype), nccl_op(op), comm_, stream_)); });
  }
  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op) override {
    enqueue("ncclReduceScatter", recv_count, dtype, op, 0, [&] {
      COCO_NCCL_CHECK(ncclReduceScatter(send, recv, recv_count, nccl_type(dtype), nccl_op(op), comm_, stream_));
    });
  }
  void all_gather(const void* send, void* recv, size_t send_count, DType dtype) override {
    enqueue("ncclAllGather", send_count, dtype, ReduceOp::sum, 0,
            [&] { COCO_NCCL_CHECK(ncclAllGather(send, recv, send_count, nccl_type(dtype), comm_, stream_)); });
  }
  void broadcast(void* data, size_t count, DType dtype, int root) override {
    check_root(root, "broadcast");
    enqueue("ncclBroadcast", count, dtype, ReduceOp::sum, root,
            [&] { COCO_NCCL_CHECK(ncclBroadcast(data, data, count, nccl_type(dtype), root, comm_, stream_)); });
  }

  // On the host over MPI: no stream work, no wait for the device.
  void sum_on_host(int64_t* values, size_t count) override {
    if (aborted_.load()) throw CommError("rank " + std::to_string(rank_) + ": sum_on_host on an aborted communicator");
    detail::sum_on_host(mpi_, options_.timeout_s, rank_, size_, options_.check_arguments, values, count);
  }

  void barrier() override {
    synchronize();
    MPI_Request request;
    COCO_MPI_CHECK(MPI_Ibarrier(mpi_, &request));
    wait_with_deadline(&request, options_.timeout_s, rank_, size_, "barrier", mpi_);
  }

  void wait() override {
    if (!pending_) return;
    COCO_CUDA_CHECK(cudaEventRecord(done_, stream_));
    COCO_CUDA_CHECK(cudaStreamWaitEvent(current_stream(), done_, 0));
    pending_ = false;
  }

  void synchronize() override {
    wait();
    // Poll rather than block, so that an asynchronous NCCL error or a stuck peer is noticed.
    guarded("synchronize", [&] {
      for (int polls = 0;; ++polls) {
        const cudaError_t status = cudaStreamQuery(current_stream());
        if (status == cudaSuccess) return;
        if (status != cudaErrorNotReady) COCO_CUDA_CHECK(status);
        ncclResult_t async = ncclSuccess;
        COCO_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async));
        COCO_NCCL_CHECK(async);
        if (aborted_.load()) throw CommError(timeout_message("synchronize"));
        std::this_thread::sleep_for(std::chrono::microseconds(polls > 1000 ? 1000 : 20));
      }
    });
  }

  [[noreturn]] void abort(int exit_code) override {
    if (comm_ && !aborted_.exchange(true)) (void)ncclCommAbort(comm_);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  static ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::average ? ncclAvg : ncclSum; }

  // The collective goes onto the communication stream after the caller's stream's queued work.
  template <class Call>
  void enqueue(const char* call, size_t count, DType dtype, ReduceOp op, int root, Call&& issue) {
    if (aborted_.load()) throw CommError("rank " + std::to_string(rank_) + ": " + call + " on an aborted communicator");
    if (op == ReduceOp::average && !dtype_is_float(dtype))
      throw CommError(std::string(call) + ": average of " + dtype_name(dtype) +
                      " elements; only floating-point types average");
    if (options_.check_arguments) check_same_call(mpi_, options_.timeout_s, rank_, size_, call, count, dtype, root);
    COCO_CUDA_CHECK(cudaEventRecord(ready_, current_stream()));
    COCO_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
    guarded(call, issue);
    runtime::count_library_call(runtime::LibraryCall::collective);  // the step profile's collectives_per_step
    pending_ = true;
  }

  // Runs `body` under the watchdog: past the timeout the communicator is aborted, which makes a
  // blocked NCCL call return; the failure is then reported as a timeout naming the rank.
  template <class Body>
  void guarded(const char* what, Body&& body) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      watched_ = what;
      watched_since_ = std::chrono::steady_clock::now();
    }
    wake_.notify_all();
    try {
      body();
    } catch (const CudaError& e) {
      clear_watch();
      if (aborted_.load()) throw CommError(timeout_message(what) + " [" + e.what() + "]");
      throw CommError("rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": " + e.what());
    } catch (...) {
      clear_watch();
      throw;
    }
    clear_watch();
  }
  void clear_watch() {
    std::lock_guard<std::mutex> lock(mutex_);
    watched_ = nullptr;
  }
  std::string timeout_message(const char* what) const {
    return "rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": " + what +
           " did not complete within " + std::to_string(static_cast<int>(options_.timeout_s)) + " s (" +
           absent_ranks(mpi_, rank_, size_, absent_ranks_grace(options_.timeout_s)) +
           "); the NCCL communicator was aborted";
  }

  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto timeout = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(options_.timeout_s));
    while (!stopping_) {
      if (!watched_) {
        wake_.wait(lock);
        continue;
      }
      const auto deadline = watched_since_ + timeout;
      if (std::chrono::steady_clock::now() >= deadline) {
        if (comm_ && !aborted_.exchange(true)) (void)ncclCommAbort(comm_);  // comm_ is set under the lock
        wake_.wait(lock);                                                   // until the watched call returns
        continue;
      }
      wake_.wait_until(lock, deadline);
    }
  }

  CommOptions options_;
  MPI_Comm mpi_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  bool pending_ = false;

  std::thread watchdog_;
  std::mutex mutex_;
  std::condition_variable wake_;
  const char* watched_ = nullptr;
  std::chrono::steady_clock::time_point watched_since_;
  bool stopping_ = false;
  std::atomic<bool> aborted_{false};
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(const LaunchInfo& launch, const CommOptions& options) {
  return std::make_unique<NcclCommunicator>(launch, options);
}

}  // namespace coco::dist::detail

#endif  // COCO_HAVE_MPI
