// The cpu backend's communicator: MPI's non-blocking collectives on host memory, on a duplicate of
// MPI_COMM_WORLD that returns errors. Averages are sums scaled by 1 / world size on completion.
#if defined(COCO_HAVE_MPI)
#include <cstring>
#include <vector>

#include "engine/dist/communicator_internal.h"
#include "engine/dist/mpi_util.h"
#include "engine/runtime/cuda_api.h"

namespace coco::dist::detail {
namespace {

// data[i] *= scale for `count` floating-point elements of `dtype` on the host.
void scale_host(void* data, size_t count, DType dtype, double scale) {
  switch (dtype) {
    case DType::f32:
      for (size_t i = 0; i < count; ++i) static_cast<float*>(data)[i] *= static_cast<float>(scale);
      return;
    case DType::f64:
      for (size_t i = 0; i < count; ++i) static_cast<double*>(data)[i] *= scale;
      return;
    case DType::bf16:
      for (size_t i = 0; i < count; ++i) {
        auto& x = static_cast<__nv_bfloat16*>(data)[i];
        x = __float2bfloat16(__bfloat162float(x) * static_cast<float>(scale));
      }
      return;
    case DType::f16:
      for (size_t i = 0; i < count; ++i) {
        auto& x = static_cast<__half*>(data)[i];
        x = __float2half(__half2float(x) * static_cast<float>(scale));
      }
      return;
    default:
      throw CommError(std::string("average of ") + dtype_name(dtype) + " elements: only floating-point types average");
  }
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(const LaunchInfo& launch, const CommOptions& options) : options_(options) {
    ensure_mpi(launch);
    COCO_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &comm_));
    COCO_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    COCO_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    COCO_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  Device device() const override { return Device::cpu; }
  const char* backend() const override { return "mpi"; }

  void all_reduce(void* data, size_t count, DType dtype, ReduceOp op) override {
    prepare("all_reduce", data, count, dtype, op, 0);
    MPI_Request request;
    COCO_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, data, to_int(count, "all_reduce"), mpi_datatype(dtype), mpi_sum(dtype),
                                  comm_, &request));
    pending_.push_back({request, "all_reduce", op == ReduceOp::average ? data : nullptr, count, dtype});
  }

  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp op) override {
    prepare("reduce_scatter", send, recv_count, dtype, op, 0);
    if (recv_count > 0 && !recv) throw CommError("reduce_scatter: null receive buffer");
    MPI_Request request;
    COCO_MPI_CHECK(MPI_Ireduce_scatter_block(send, recv, to_int(recv_count, "reduce_scatter"), mpi_datatype(dtype),
                                             mpi_sum(dtype), comm_, &request));
    pending_.push_back({request, "reduce_scatter", op == ReduceOp::average ? recv : nullptr, recv_count, dtype});
  }

  void all_gather(const void* send, void* recv, size_t send_count, DType dtype) override {
    prepare("all_gather", send, send_count, dtype, ReduceOp::sum, 0);
    if (send_count > 0 && !recv) throw CommError("all_gather: null receive buffer");
    MPI_Request request;
    const int n = to_int(send_count, "all_gather");
    COCO_MPI_CHECK(MPI_Iallgather(send, n, mpi_datatype(dtype), recv, n, mpi_datatype(dtype), comm_, &request));
    pending_.push_back({request, "all_gather", nullptr, 0, dtype});
  }

  void broadcast(void* data, size_t count, DType dtype, int root) override {
    check_root(root, "broadcast");
    prepare("broadcast", data, count, dtype, ReduceOp::sum, root);
    MPI_Request request;
    COCO_MPI_CHECK(MPI_Ibcast(data, to_int(count, "broadcast"), mpi_datatype(dtype), root, comm_, &request));
    pending_.push_back({request, "broadcast", nullptr, 0, dtype});
  }

  void sum_on_host(int64_t* values, size_t count) override {
    detail::sum_on_host(comm_, options_.timeout_s, rank_, size_, options_.check_arguments, values, count);
  }

  void barrier() override {
    wait();
    MPI_Request request;
    COCO_MPI_CHECK(MPI_Ibarrier(comm_, &request));
    wait_with_deadline(&request, options_.timeout_s, rank_, size_, "barrier", comm_);
  }

  void wait() override {
    // In start order; a failure leaves the later requests to abort().
    for (Pending& p : pending_) {
      wait_with_deadline(&p.request, options_.timeout_s, rank_, size_, p.call, comm_);
      if (p.average_data) scale_host(p.average_data, p.average_count, p.dtype, 1.0 / size_);
    }
    pending_.clear();
  }
  void synchronize() override { wait(); }

  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);  // MPI_Abort does not return; in case an implementation does
  }

 private:
  struct Pending {
    MPI_Request request;
    const char* call;
    void* average_data;  // scaled by 1 / world size on completion (average); null for none
    size_t average_count;
    DType dtype;
  };

  void prepare(const char* call, const void* data, size_t count, DType dtype, ReduceOp op, int root) {
    if (count > 0 && !data)
      throw CommError(std::string(call) + ": null buffer for " + std::to_string(count) + " elements");
    if (op == ReduceOp::average && !dtype_is_float(dtype))
      throw CommError(std::string(call) + ": average of " + dtype_name(dtype) +
                      " elements; only floating-point types average");
    if (options_.check_arguments) check_same_call(comm_, options_.timeout_s, rank_, size_, call, count, dtype, root);
  }
  static int to_int(size_t count, const char* call) {
    if (count > static_cast<size_t>(INT32_MAX))
      throw CommError(std::string(call) + ": " + std::to_string(count) +
                      " elements exceed MPI's int count; split the buffer");
    return static_cast<int>(count);
  }

  CommOptions options_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  std::vector<Pending> pending_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const LaunchInfo& launch, const CommOptions& options) {
  return std::make_unique<MpiCommunicator>(launch, options);
}

}  // namespace coco::dist::detail

#endif  // COCO_HAVE_MPI
