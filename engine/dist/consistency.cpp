#include "engine/dist/consistency.h"

#include "engine/tensor.h"

namespace coco::dist {
namespace {

uint64_t fnv1a(const std::string& bytes) {
  uint64_t hash = 1469598103934665603ull;
  for (unsigned char c : bytes) hash = (hash ^ c) * 1099511628211ull;
  return hash;
}

}  // namespace

RowRange rank_rows(int64_t global_rows, int world_size, int rank) {
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw DistConfigError("rank " + std::to_string(rank) + " is not a rank of a world of " +
                          std::to_string(world_size));
  if (global_rows < 1 || global_rows % world_size != 0)
    throw DistConfigError("global batch of " + std::to_string(global_rows) + " rows does not divide among " +
                          std::to_string(world_size) + " ranks (the global batch is world size x micro batch x " +
                          "gradient accumulation; choose a world size that divides it)");
  const int64_t per_rank = global_rows / world_size;
  return {rank * per_rank, (rank + 1) * per_rank};
}

void require_same_on_all_ranks(Communicator& comm, const std::string& what, const std::string& bytes) {
  const int n = comm.world_size();
  // The hash and the length, as i64, from every rank.
  const std::vector<int64_t> mine = {static_cast<int64_t>(fnv1a(bytes) >> 1), static_cast<int64_t>(bytes.size())};
  const Tensor send = Tensor::from_vector(mine, {2}, Device::cpu).to(comm.device());
  const Tensor all = Tensor::zeros({2 * static_cast<int64_t>(n)}, DType::i64, comm.device());
  comm.all_gather(send, all);
  comm.synchronize();
  const std::vector<int64_t> got = all.to(Device::cpu).to_vector<int64_t>();
  std::string differing;
  for (int r = 1; r < n; ++r)
    if (got[2 * r] != got[0] || got[2 * r + 1] != got[1])
      differing += (differing.empty() ? "" : ", ") + std::to_string(r);
  if (!differing.empty())
    throw DistConfigError(what + " differs between ranks: rank" +
                          (differing.find(',') == std::string::npos ? " " : "s ") + differing + " differ" +
                          (differing.find(',') == std::string::npos ? "s" : "") +
                          " from rank 0 (every rank must be started with the same configuration)");
}

}  // namespace coco::dist
