// Launch detection: rank, world size and local rank from each launcher's variables; inconsistent
// variables are refused naming the variable and value.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "engine/dist/communicator.h"
#include "engine/dist/launch.h"

namespace coco::dist {
namespace {

LaunchInfo launch_from(const std::map<std::string, std::string>& env) {
  return detect_launch([&env](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const std::map<std::string, std::string>& env) {
  try {
    launch_from(env);
  } catch (const DistConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Launch, NoLauncherIsOneProcess) {
  const LaunchInfo info = launch_from({});
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.local_rank, 0);
  EXPECT_EQ(info.launcher, "none");
  EXPECT_FALSE(info.distributed());
}

TEST(Launch, OpenMpiVariables) {
  const LaunchInfo info = launch_from({{"OMPI_COMM_WORLD_RANK", "5"},
                                       {"OMPI_COMM_WORLD_SIZE", "16"},
                                       {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                       {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
  EXPECT_EQ(info.launcher, "openmpi");
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world_size, 16);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_size, 4);
  EXPECT_TRUE(info.distributed());
}

TEST(Launch, PmiAndSlurm) {
  const LaunchInfo pmi = launch_from({{"PMI_RANK", "3"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "3"}});
  EXPECT_EQ(pmi.launcher, "pmi");
  EXPECT_EQ(pmi.rank, 3);
  EXPECT_EQ(pmi.local_rank, 3);
  EXPECT_EQ(pmi.local_size, 0);  // not said
  // srun: the local rank from SLURM_LOCALID; a non-numeric SLURM_NTASKS_PER_NODE ("4(x2)") is not an error.
  const LaunchInfo slurm = launch_from(
      {{"SLURM_PROCID", "6"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "2"}, {"SLURM_NTASKS_PER_NODE", "4(x2)"}});
  EXPECT_EQ(slurm.launcher, "slurm");
  EXPECT_EQ(slurm.rank, 6);
  EXPECT_EQ(slurm.world_size, 8);
  EXPECT_EQ(slurm.local_rank, 2);
  // Without a local id the local rank follows from the per-node count.
  const LaunchInfo derived =
      launch_from({{"SLURM_PROCID", "6"}, {"SLURM_NTASKS", "8"}, {"SLURM_NTASKS_PER_NODE", "4"}});
  EXPECT_EQ(derived.local_rank, 2);
}

TEST(Launch, OpenMpiWinsOverSlurm) {
  // mpirun inside an srun allocation: OpenMPI's own numbering is the job's.
  const LaunchInfo info = launch_from(
      {{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  EXPECT_EQ(info.launcher, "openmpi");
  EXPECT_EQ(info.world_size, 2);
}

TEST(Launch, InconsistentVariablesAreRefused) {
  std::string e = error_of({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}});
  EXPECT_NE(e.find("OMPI_COMM_WORLD_RANK=2"), std::string::npos) << e;
  EXPECT_NE(e.find("OMPI_COMM_WORLD_SIZE=2"), std::string::npos) << e;
  e = error_of({{"PMI_RANK", "0"}, {"PMI_SIZE", "two"}});
  EXPECT_NE(e.find("PMI_SIZE='two'"), std::string::npos) << e;
  e = error_of({{"SLURM_PROCID", "1"}});
  EXPECT_NE(e.find("SLURM_NTASKS is not set"), std::string::npos) << e;
  e = error_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "3"}});
  EXPECT_NE(e.find("local rank"), std::string::npos) << e;
  e = error_of({{"OMPI_COMM_WORLD_RANK", "-1"}, {"OMPI_COMM_WORLD_SIZE", "4"}});
  EXPECT_NE(e.find("OMPI_COMM_WORLD_RANK='-1'"), std::string::npos) << e;
}

// One GPU per process: the node-local rank picks the device; more processes than devices on a node is a
// launch error naming the counts (the emulator's one-device-per-process mode wraps instead).
TEST(Launch, DeviceForLocalRank) {
  const LaunchInfo two_nodes = launch_from({{"OMPI_COMM_WORLD_RANK", "13"},
                                            {"OMPI_COMM_WORLD_SIZE", "16"},
                                            {"OMPI_COMM_WORLD_LOCAL_RANK", "5"},
                                            {"OMPI_COMM_WORLD_LOCAL_SIZE", "8"}});
  EXPECT_EQ(device_for_local_rank(two_nodes, 8), 5);
  std::string error;
  try {
    device_for_local_rank(two_nodes, 4);
  } catch (const DistConfigError& e) {
    error = e.what();
  }
  EXPECT_NE(error.find("8 processes on this node (local rank 5) but only 4 CUDA devices"), std::string::npos) << error;
  EXPECT_EQ(device_for_local_rank(two_nodes, 4, /*device_per_process=*/true), 1);
  EXPECT_THROW(device_for_local_rank(two_nodes, 0, true), DistConfigError);
  // Slurm without a plain per-node count: the local rank alone must fit.
  const LaunchInfo slurm = launch_from(
      {{"SLURM_PROCID", "3"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "3"}, {"SLURM_NTASKS_PER_NODE", "4(x1)"}});
  EXPECT_EQ(device_for_local_rank(slurm, 4), 3);
  EXPECT_THROW(device_for_local_rank(slurm, 2), DistConfigError);
  EXPECT_EQ(device_for_local_rank(launch_from({}), 1), 0);
}

TEST(Launch, OneProcessGetsTheLocalCommunicator) {
  const auto comm = make_communicator(Device::cpu, LaunchInfo{});
  EXPECT_STREQ(comm->backend(), "local");
  EXPECT_EQ(comm->world_size(), 1);
  float data[3] = {1, 2, 3};
  comm->all_reduce(data, 3, DType::f32, ReduceOp::average);
  comm->wait();
  EXPECT_EQ(data[2], 3.0f);
  float gathered[3] = {};
  comm->all_gather(data, gathered, 3, DType::f32);
  EXPECT_EQ(gathered[1], 2.0f);
  EXPECT_THROW(comm->broadcast(data, 3, DType::f32, 1), CommError);
  CommOptions bad;
  bad.timeout_s = 0;
  EXPECT_THROW(make_communicator(Device::cpu, LaunchInfo{}, bad), DistConfigError);
}

}  // namespace
}  // namespace coco::dist
