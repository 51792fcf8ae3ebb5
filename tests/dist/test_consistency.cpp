// Row sharding, the same-configuration check and averaging over ranks, under mpirun on both paths.
#include <gtest/gtest.h>

#include <memory>

#include "engine/dist/consistency.h"

namespace coco::dist {
namespace {

Communicator& comm_for(Device device) {
  static std::unique_ptr<Communicator> comms[2];
  auto& comm = comms[device == Device::cpu ? 0 : 1];
  if (!comm) comm = make_communicator(device, detect_launch());
  return *comm;
}

TEST(RankRows, GlobalRowsSplitEvenly) {
  EXPECT_EQ(rank_rows(12, 3, 0).begin, 0);
  EXPECT_EQ(rank_rows(12, 3, 2).begin, 8);
  EXPECT_EQ(rank_rows(12, 3, 2).end, 12);
  EXPECT_EQ(rank_rows(12, 1, 0).size(), 12);
  try {
    rank_rows(10, 3, 0);
    ADD_FAILURE() << "10 rows among 3 ranks accepted";
  } catch (const DistConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("global batch of 10 rows does not divide among 3 ranks"), std::string::npos);
  }
  EXPECT_THROW(rank_rows(12, 3, 3), DistConfigError);
}

class Consistency : public testing::TestWithParam<Device> {};

TEST_P(Consistency, SameConfigurationPassesADifferentOneIsRefusedEverywhere) {
  Communicator& comm = comm_for(GetParam());
  EXPECT_NO_THROW(require_same_on_all_ranks(comm, "configuration demo.json", R"({"lr": 1e-4})"));
  const std::string config = comm.rank() == 1 ? R"({"lr": 2e-4})" : R"({"lr": 1e-4})";
  try {
    require_same_on_all_ranks(comm, "configuration demo.json", config);
    ADD_FAILURE() << "a differing configuration was accepted on rank " << comm.rank();
  } catch (const DistConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("configuration demo.json differs between ranks: rank 1 differs from rank 0"),
              std::string::npos)
        << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Dist, Consistency, testing::Values(Device::cpu, Device::cuda),
                         [](const testing::TestParamInfo<Device>& info) { return device_name(info.param); });

}  // namespace
}  // namespace coco::dist
