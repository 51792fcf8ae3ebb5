// The collectives on every rank of an mpirun job, on the MPI path (cpu) and the NCCL path (cuda: the
// NCCL shim over MPI in the emulated build), against a reference every rank computes for itself:
// the inputs are functions of (rank, index), small integers that every dtype holds
// exactly, so sums agree bit for bit; averages within one rounding of the dtype.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "engine/dist/communicator.h"
#include "engine/runtime/counters.h"
#include "engine/tensor.h"

namespace coco::dist {
namespace {

struct Case {
  Device device;
  DType dtype;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  return std::string(device_name(info.param.device)) + "_" + dtype_name(info.param.dtype);
}

Communicator& comm_for(Device device) {
  static std::unique_ptr<Communicator> comms[2];
  auto& comm = comms[device == Device::cpu ? 0 : 1];
  if (!comm) {
    CommOptions options;
    options.timeout_s = 120;
    comm = make_communicator(device, detect_launch(), options);
  }
  return *comm;
}

// A value of rank r at index i that every dtype holds exactly (a small integer), as it does sums of a
// few of them.
double input(int r, size_t i) { return static_cast<double>((r + 1) * static_cast<int>(i % 7) - 3 + 2 * r); }

Tensor make(const std::vector<double>& values, Case c) {
  std::vector<float> f(values.begin(), values.end());
  return Tensor::from_vector(f, {static_cast<int64_t>(f.size())}, Device::cpu).to(c.dtype).to(c.device);
}
std::vector<double> read(const Tensor& t) { return t.to(Device::cpu).to_f64(); }

// One rounding of `dtype` at `value` (a relative tolerance for averages).
double ulp(DType dtype, double value) {
  const double rel = dtype == DType::bf16  ? 1.0 / 128
                     : dtype == DType::f16 ? 1.0 / 1024
                     : dtype == DType::f32 ? 1e-6
                                           : 1e-12;
  return std::max(std::fabs(value), 1.0) * rel;
}

class Collectives : public testing::TestWithParam<Case> {};

TEST_P(Collectives, AllReduceSumAndAverage) {
  const Case c = GetParam();
  Communicator& comm = comm_for(c.device);
  const int n = comm.world_size(), me = comm.rank();
  for (size_t count : {size_t{1}, size_t{1000}, size_t{4099}}) {
    std::vector<double> mine(count), sum(count, 0.0);
    for (size_t i = 0; i < count; ++i) {
      mine[i] = input(me, i);
      for (int r = 0; r < n; ++r) sum[i] += input(r, i);
    }
    const Tensor summed = make(mine, c), averaged = make(mine, c);
    comm.all_reduce(summed, ReduceOp::sum);
    if (dtype_is_float(c.dtype)) comm.all_reduce(averaged, ReduceOp::average);
    comm.synchronize();
    const std::vector<double> got = read(summed);
    for (size_t i = 0; i < count; ++i) ASSERT_EQ(got[i], sum[i]) << "sum, count " << count << " index " << i;
    if (!dtype_is_float(c.dtype)) continue;
    const std::vector<double> avg = read(averaged);
    for (size_t i = 0; i < count; ++i)
      ASSERT_NEAR(avg[i], sum[i] / n, ulp(c.dtype, sum[i] / n)) << "average, count " << count << " index " << i;
  }
}

TEST_P(Collectives, ReduceScatter) {
  const Case c = GetParam();
  Communicator& comm = comm_for(c.device);
  const int n = comm.world_size(), me = comm.rank();
  const size_t block = 513;
  std::vector<double> mine(block * n);
  for (size_t j = 0; j < mine.size(); ++j) mine[j] = input(me, j);
  const Tensor send = make(mine, c);
  const Tensor recv = Tensor::zeros({static_cast<int64_t>(block)}, c.dtype, c.device);
  comm.reduce_scatter(send, recv, ReduceOp::sum);
  comm.synchronize();
  const std::vector<double> got = read(recv);
  for (size_t i = 0; i < block; ++i) {
    double expected = 0;
    for (int r = 0; r < n; ++r) expected += input(r, me * block + i);
    ASSERT_EQ(got[i], expected) << "index " << i;
  }
  // A recv that is not send / world size is refused before anything runs.
  const Tensor wrong = Tensor::zeros({static_cast<int64_t>(block + 1)}, c.dtype, c.device);
  EXPECT_THROW(comm.reduce_scatter(send, wrong, ReduceOp::sum), CommError);
}

TEST_P(Collectives, AllGatherAndBroadcast) {
  const Case c = GetParam();
  Communicator& comm = comm_for(c.device);
  const int n = comm.world_size(), me = comm.rank();
  const size_t block = 77;
  std::vector<double> mine(block);
  for (size_t i = 0; i < block; ++i) mine[i] = input(me, i) + me;
  const Tensor send = make(mine, c);
  const Tensor gathered = Tensor::zeros({static_cast<int64_t>(block * n)}, c.dtype, c.device);
  comm.all_gather(send, gathered);
  const int root = n - 1;
  const Tensor shared = make(mine, c);
  comm.broadcast(shared, root);
  comm.synchronize();
  const std::vector<double> all = read(gathered), from_root = read(shared);
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < block; ++i)
      ASSERT_EQ(all[r * block + i], input(r, i) + r) << "block " << r << " index " << i;
  for (size_t i = 0; i < block; ++i) ASSERT_EQ(from_root[i], input(root, i) + root) << "index " << i;
  comm.barrier();
}

// Ranks that call a collective with different sizes are all told so, instead of hanging or reading
// past a buffer; the communicator stays usable.
TEST_P(Collectives, MismatchedCountsAreRefusedOnEveryRank) {
  const Case c = GetParam();
  Communicator& comm = comm_for(c.device);
  const size_t count = comm.rank() == 0 ? 10 : 11;
  const Tensor data = make(std::vector<double>(11, 1.0), c);
  try {
    comm.all_reduce(data.data(), count, c.dtype, ReduceOp::sum);
    ADD_FAILURE() << "mismatched all_reduce was accepted";
  } catch (const DistConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("element counts 10..11"), std::string::npos) << e.what();
  }
  comm.all_reduce(data, ReduceOp::sum);
  comm.synchronize();
  EXPECT_EQ(read(data)[3], static_cast<double>(comm.world_size()));
}

INSTANTIATE_TEST_SUITE_P(Dist, Collectives,
                         testing::Values(Case{Device::cpu, DType::f32}, Case{Device::cpu, DType::bf16},
                                         Case{Device::cpu, DType::f16}, Case{Device::cpu, DType::f64},
                                         Case{Device::cpu, DType::i32}, Case{Device::cuda, DType::f32},
                                         Case{Device::cuda, DType::bf16}, Case{Device::cuda, DType::f16},
                                         Case{Device::cuda, DType::i64}),
                         case_name);

TEST(Communicators, BackendsAndWorld) {
  const LaunchInfo launch = detect_launch();
  ASSERT_EQ(launch.launcher, "openmpi") << "run this test under mpirun";
  Communicator& cpu = comm_for(Device::cpu);
  Communicator& cuda = comm_for(Device::cuda);
  EXPECT_STREQ(cpu.backend(), "mpi");
  EXPECT_STREQ(cuda.backend(), "nccl");
  EXPECT_EQ(cpu.world_size(), launch.world_size);
  EXPECT_EQ(cuda.rank(), launch.rank);
  // Average of integers is refused (NCCL would divide, MPI cannot average).
  std::vector<int32_t> ints(4, 1);
  EXPECT_THROW(cpu.all_reduce(ints.data(), ints.size(), DType::i32, ReduceOp::average), CommError);
}

// The host-side sum of small counters (the trainer's per-step stop flag and token count): exact i64 sums
// on every rank, and on cuda no device work and no wait for the device (what the runtime counters see).
TEST(Communicators, SumOnHostAddsHostValuesWithoutDeviceWork) {
  for (Device device : {Device::cpu, Device::cuda}) {
    Communicator& comm = comm_for(device);
    const int r = comm.rank(), n = comm.world_size();
    std::vector<int64_t> values = {r + 1, (int64_t{1} << 40) * r + 7, 0};
    const runtime::StepProfile profile;
    comm.sum_on_host(values.data(), values.size());
    const runtime::Counters seen = profile.elapsed();
    EXPECT_EQ(values[0], int64_t{n} * (n + 1) / 2) << device_name(device);
    EXPECT_EQ(values[1], (int64_t{1} << 40) * (int64_t{n} * (n - 1) / 2) + 7 * n) << device_name(device);
    EXPECT_EQ(values[2], 0) << device_name(device);
    EXPECT_EQ(seen.launches(), 0u) << device_name(device) << ": " << seen.describe();
    EXPECT_EQ(seen.synchronizations(), 0u) << device_name(device) << ": " << seen.describe();
    comm.sum_on_host(nullptr, 0);  // nothing to add: still a call every rank makes
    comm.barrier();
  }
}

}  // namespace
}  // namespace coco::dist
