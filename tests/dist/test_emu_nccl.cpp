// The emulated NCCL (engine/simt/emu_nccl.cpp) called directly, under mpirun: NCCL's status codes
// for bad arguments, the cross-rank check of each collective, in-place forms, ncclAvg, stream
// capture, abort.
#include <gtest/gtest.h>
#include <mpi.h>
#include <nccl.h>

#include <cstring>
#include <vector>

#include "engine/runtime/cuda_api.h"

namespace {

struct World {
  int rank = 0, size = 1;
  ncclComm_t comm = nullptr;
};

World& world() {
  static World w = [] {
    World out;
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      MPI_Init(nullptr, nullptr);
      std::atexit([] { MPI_Finalize(); });
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &out.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &out.size);
    ncclUniqueId id{};
    if (out.rank == 0) {
      EXPECT_EQ(ncclGetUniqueId(&id), ncclSuccess);
    }
    MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
    EXPECT_EQ(ncclCommInitRank(&out.comm, out.size, id, out.rank), ncclSuccess);
    return out;
  }();
  return w;
}

template <class T>
T* device_copy(const std::vector<T>& host) {
  void* p = nullptr;
  EXPECT_EQ(cudaMalloc(&p, host.size() * sizeof(T)), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  return static_cast<T*>(p);
}
template <class T>
std::vector<T> host_copy(const T* device, size_t count) {
  std::vector<T> out(count);
  EXPECT_EQ(cudaMemcpy(out.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

TEST(EmuNccl, CommunicatorQueries) {
  World& w = world();
  ASSERT_NE(w.comm, nullptr);
  int count = 0, rank = -1, version = 0;
  EXPECT_EQ(ncclCommCount(w.comm, &count), ncclSuccess);
  EXPECT_EQ(count, w.size);
  EXPECT_EQ(ncclCommUserRank(w.comm, &rank), ncclSuccess);
  EXPECT_EQ(rank, w.rank);
  EXPECT_EQ(ncclGetVersion(&version), ncclSuccess);
  EXPECT_EQ(version, NCCL_VERSION_CODE);
  ncclResult_t async = ncclInternalError;
  EXPECT_EQ(ncclCommGetAsyncError(w.comm, &async), ncclSuccess);
  EXPECT_EQ(async, ncclSuccess);
}

TEST(EmuNccl, BadArgumentsGetNcclStatuses) {
  World& w = world();
  float* d = device_copy(std::vector<float>(8, 1.0f));
  std::vector<float> host(8, 1.0f);
  // All of these are refused locally, before any traffic, so the ranks stay in step.
  EXPECT_EQ(ncclAllReduce(d, d, 8, ncclFloat, ncclSum, nullptr, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(host.data(), host.data(), 8, ncclFloat, ncclSum, w.comm, nullptr), ncclInvalidArgument);
  EXPECT_NE(std::string(ncclGetLastError(w.comm)).find("not device memory"), std::string::npos)
      << ncclGetLastError(w.comm);
  EXPECT_EQ(ncclAllReduce(d, d, 9, ncclFloat, ncclSum, w.comm, nullptr), ncclInvalidArgument);  // past the allocation
  EXPECT_EQ(ncclAllReduce(d, d, 8, static_cast<ncclDataType_t>(42), ncclSum, w.comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(d, d, 8, ncclFloat, static_cast<ncclRedOp_t>(17), w.comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(d, d, 2, ncclFloat8e4m3, ncclSum, w.comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclBroadcast(d, d, 8, ncclFloat, w.size, w.comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclAllReduce(d, d + 1, 4, ncclFloat, ncclSum, w.comm, nullptr), ncclInvalidArgument);  // overlap
  // An unknown stream passes the cross-rank check (every rank makes the same call) and is refused.
  EXPECT_EQ(ncclAllReduce(d, d, 8, ncclFloat, ncclSum, w.comm, reinterpret_cast<cudaStream_t>(0x1234)),
            ncclUnhandledCudaError);
  ncclComm_t none = nullptr;
  ncclUniqueId forged{};
  EXPECT_EQ(ncclCommInitRank(&none, 2, forged, 0), ncclInvalidArgument);
  EXPECT_EQ(ncclCommInitRank(&none, 2, forged, 2), ncclInvalidArgument);
  EXPECT_EQ(ncclGroupEnd(), ncclInvalidUsage);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST(EmuNccl, RanksThatDisagreeAllFail) {
  World& w = world();
  if (w.size < 2) GTEST_SKIP() << "needs two ranks";
  float* d = device_copy(std::vector<float>(16, 1.0f));
  const size_t count = w.rank == 1 ? 16 : 8;
  EXPECT_EQ(ncclAllReduce(d, d, count, ncclFloat, ncclSum, w.comm, nullptr), ncclInvalidUsage);
  EXPECT_NE(std::string(ncclGetLastError(w.comm)).find("disagree on the count"), std::string::npos)
      << ncclGetLastError(w.comm);
  const ncclRedOp_t op = w.rank == 0 ? ncclMax : ncclSum;
  EXPECT_EQ(ncclAllReduce(d, d, 8, ncclFloat, op, w.comm, nullptr), ncclInvalidUsage);
  // Still usable afterwards.
  EXPECT_EQ(ncclAllReduce(d, d, 16, ncclFloat, ncclSum, w.comm, nullptr), ncclSuccess);
  EXPECT_EQ(host_copy(d, 16)[15], static_cast<float>(w.size));
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

TEST(EmuNccl, InPlaceFormsAverageAndMax) {
  World& w = world();
  const size_t block = 5, n = static_cast<size_t>(w.size);
  std::vector<int32_t> values(block * n);
  for (size_t j = 0; j < values.size(); ++j) values[j] = static_cast<int32_t>(j + 10 * w.rank);
  int32_t* d = device_copy(values);
  // In-place reduce-scatter: this rank's block of the send buffer is the receive buffer.
  ASSERT_EQ(ncclReduceScatter(d, d + w.rank * block, block, ncclInt32, ncclSum, w.comm, nullptr), ncclSuccess);
  const std::vector<int32_t> mine = host_copy(d + w.rank * block, block);
  for (size_t i = 0; i < block; ++i) {
    int32_t expected = 0;
    for (int r = 0; r < w.size; ++r) expected += static_cast<int32_t>(w.rank * block + i + 10 * r);
    EXPECT_EQ(mine[i], expected) << i;
  }
  // In-place all-gather puts every rank's block back in place.
  ASSERT_EQ(ncclAllGather(d + w.rank * block, d, block, ncclInt32, w.comm, nullptr), ncclSuccess);
  const std::vector<int32_t> all = host_copy(d, block * n);
  int32_t expected_last = 0;
  for (int r = 0; r < w.size; ++r) expected_last += static_cast<int32_t>(block * n - 1 + 10 * r);
  EXPECT_EQ(all[block * n - 1], expected_last);
  // ncclAvg on integers divides (rounding toward zero); ncclMax.
  std::vector<int32_t> one = {w.rank * 3 + 1};
  int32_t* a = device_copy(one);
  ASSERT_EQ(ncclAllReduce(a, a, 1, ncclInt32, ncclMax, w.comm, nullptr), ncclSuccess);
  EXPECT_EQ(host_copy(a, 1)[0], (w.size - 1) * 3 + 1);
  ASSERT_EQ(ncclAllReduce(a, a, 1, ncclInt32, ncclAvg, w.comm, nullptr), ncclSuccess);
  EXPECT_EQ(host_copy(a, 1)[0], (w.size - 1) * 3 + 1);
  EXPECT_EQ(cudaFree(a), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

// Captured into a graph, the collective runs at each launch, not at capture.
TEST(EmuNccl, CollectivesInStreamCapture) {
  World& w = world();
  float* d = device_copy(std::vector<float>(4, 1.0f));
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), cudaSuccess);
  ASSERT_EQ(ncclAllReduce(d, d, 4, ncclFloat, ncclSum, w.comm, stream), ncclSuccess);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  EXPECT_EQ(host_copy(d, 4)[0], 1.0f);  // not run yet
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  EXPECT_EQ(host_copy(d, 4)[3], static_cast<float>(w.size * w.size));
  EXPECT_EQ(cudaGraphExecDestroy(exec), cudaSuccess);
  EXPECT_EQ(cudaGraphDestroy(graph), cudaSuccess);
  EXPECT_EQ(cudaStreamDestroy(stream), cudaSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

// Last: a communicator of its own, aborted; later use is refused.
TEST(EmuNccl, AbortedCommunicatorIsRefused) {
  World& w = world();
  ncclUniqueId id{};
  if (w.rank == 0) {
    ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  }
  MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, MPI_COMM_WORLD);
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitRank(&comm, w.size, id, w.rank), ncclSuccess);
  EXPECT_EQ(ncclCommAbort(comm), ncclSuccess);
  float* d = device_copy(std::vector<float>(1, 1.0f));
  EXPECT_EQ(ncclAllReduce(d, d, 1, ncclFloat, ncclSum, comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclCommDestroy(w.comm), ncclSuccess);
  EXPECT_EQ(cudaFree(d), cudaSuccess);
}

}  // namespace
