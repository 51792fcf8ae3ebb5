#include "engine/dist/communicator.h"

#include <cstring>
#include <limits>
#include <vector>

#include "engine/dist/communicator_internal.h"
#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"
#include "engine/tensor.h"

namespace coco::dist {
namespace detail {

size_t byte_count(size_t count, DType dtype, const char* call) {
  const size_t element = dtype_size(dtype);
  if (count > std::numeric_limits<size_t>::max() / element)
    throw CommError(std::string(call) + ": " + std::to_string(count) + " elements of " + dtype_name(dtype) +
                    " overflow the byte count");
  return count * element;
}

}  // namespace detail

namespace {

// The collectives of a world of one: reductions are the identity, gathers and scatters copies.
class LocalCommunicator final : public Communicator {
 public:
  explicit LocalCommunicator(Device device) : device_(device) {}
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  Device device() const override { return device_; }
  const char* backend() const override { return "local"; }

  void all_reduce(void* data, size_t count, DType dtype, ReduceOp) override {
    check_buffer(data, count, dtype, "all_reduce");
  }
  void reduce_scatter(const void* send, void* recv, size_t recv_count, DType dtype, ReduceOp) override {
    check_buffer(send, recv_count, dtype, "reduce_scatter");
    copy(recv, send, detail::byte_count(recv_count, dtype, "reduce_scatter"));
  }
  void all_gather(const void* send, void* recv, size_t send_count, DType dtype) override {
    check_buffer(send, send_count, dtype, "all_gather");
    copy(recv, send, detail::byte_count(send_count, dtype, "all_gather"));
  }
  void broadcast(void* data, size_t count, DType dtype, int root) override {
    check_root(root, "broadcast");
    check_buffer(data, count, dtype, "broadcast");
  }
  void sum_on_host(int64_t* values, size_t count) override { check_buffer(values, count, DType::i64, "sum_on_host"); }
  void barrier() override {}
  void wait() override {}
  void synchronize() override {
    if (device_ == Device::cuda) COCO_CUDA_CHECK(runtime::stream_synchronize(current_stream()));
  }
  [[noreturn]] void abort(int exit_code) override { std::exit(exit_code); }

 private:
  void check_buffer(const void* data, size_t count, DType dtype, const char* call) const {
    if (count > 0 && !data)
      throw CommError(std::string(call) + ": null buffer for " + std::to_string(count) + " elements");
    (void)dtype;
  }
  void copy(void* dst, const void* src, size_t bytes) const {
    if (bytes == 0 || dst == src) return;
    if (device_ == Device::cpu)
      std::memmove(dst, src, bytes);
    else
      COCO_CUDA_CHECK(runtime::memcpy_async(dst, src, bytes, cudaMemcpyDeviceToDevice, current_stream()));
  }
  Device device_;
};

void check_tensor(const Communicator& comm, const Tensor& tensor, const char* call) {
  if (!tensor.defined()) throw CommError(std::string(call) + ": undefined tensor");
  if (tensor.device() != comm.device())
    throw CommError(std::string(call) + ": tensor '" + tensor.name() + "' is on " + device_name(tensor.device()) +
                    ", the communicator on " + device_name(comm.device()));
}

}  // namespace

void Communicator::check_root(int root, const char* call) const {
  if (root < 0 || root >= world_size())
    throw CommError(std::string(call) + ": root " + std::to_string(root) + " is not a rank of a world of " +
                    std::to_string(world_size()));
}

void Communicator::all_reduce(const Tensor& tensor, ReduceOp op) {
  check_tensor(*this, tensor, "all_reduce");
  all_reduce(tensor.data(), static_cast<size_t>(tensor.numel()), tensor.dtype(), op);
}

void Communicator::reduce_scatter(const Tensor& send, const Tensor& recv, ReduceOp op) {
  check_tensor(*this, send, "reduce_scatter");
  check_tensor(*this, recv, "reduce_scatter");
  if (send.dtype() != recv.dtype() || send.numel() != recv.numel() * world_size())
    throw CommError("reduce_scatter: send has " + std::to_string(send.numel()) + " " + dtype_name(send.dtype()) +
                    " elements, recv " + std::to_string(recv.numel()) + " " + dtype_name(recv.dtype()) +
                    "; expected send = world size " + std::to_string(world_size()) + " x recv, one dtype");
  reduce_scatter(send.data(), recv.data(), static_cast<size_t>(recv.numel()), recv.dtype(), op);
}

void Communicator::all_gather(const Tensor& send, const Tensor& recv) {
  check_tensor(*this, send, "all_gather");
  check_tensor(*this, recv, "all_gather");
  if (send.dtype() != recv.dtype() || recv.numel() != send.numel() * world_size())
    throw CommError("all_gather: send has " + std::to_string(send.numel()) + " " + dtype_name(send.dtype()) +
                    " elements, recv " + std::to_string(recv.numel()) + " " + dtype_name(recv.dtype()) +
                    "; expected recv = world size " + std::to_string(world_size()) + " x send, one dtype");
  all_gather(send.data(), recv.data(), static_cast<size_t>(send.numel()), send.dtype());
}

void Communicator::broadcast(const Tensor& tensor, int root) {
  check_tensor(*this, tensor, "broadcast");
  broadcast(tensor.data(), static_cast<size_t>(tensor.numel()), tensor.dtype(), root);
}

void Communicator::sum_on_host(int64_t* values, size_t count) {
  if (count == 0) return;
  if (!values) throw CommError("sum_on_host: null buffer for " + std::to_string(count) + " values");
  const Tensor buffer =
      Tensor::from_vector(std::vector<int64_t>(values, values + count), {static_cast<int64_t>(count)}, Device::cpu)
          .to(device());
  all_reduce(buffer, ReduceOp::sum);
  synchronize();
  const std::vector<int64_t> sums = buffer.to(Device::cpu).to_vector<int64_t>();
  std::memcpy(values, sums.data(), count * sizeof(int64_t));
}

bool built_with_mpi() {
#if defined(COCO_HAVE_MPI)
  return true;
#else
  return false;
#endif
}

std::unique_ptr<Communicator> make_communicator(Device device, const LaunchInfo& launch, const CommOptions& options) {
  if (!(options.timeout_s > 0))
    throw DistConfigError("communicator: timeout " + std::to_string(options.timeout_s) + " s is not positive");
  if (!launch.distributed()) return std::make_unique<LocalCommunicator>(device);
#if defined(COCO_HAVE_MPI)
  return device == Device::cpu ? detail::make_mpi_communicator(launch, options)
                               : detail::make_nccl_communicator(launch, options);
#else
  if (launch.world_size == 1) return std::make_unique<LocalCommunicator>(device);
  throw DistConfigError("launch: " + launch.launcher + " started " + std::to_string(launch.world_size) +
                        " ranks, but this build has no MPI (install libopenmpi-dev, see scripts/setup.sh, and "
                        "reconfigure)");
#endif
}

}  // namespace coco::dist
