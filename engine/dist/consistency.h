// What a data-parallel trainer checks and shares across its ranks, on any communicator:
//   * rank_rows: this rank's rows of a global batch, so that rank r of W reads global rows
//     [r G / W, (r + 1) G / W) and masks, samples and dropout keyed by the global row index give the
//     same run for any world size; a world size that does not divide the global batch is refused;
//   * require_same_on_all_ranks: the configuration (or any bytes) is identical on every rank, else
//     every rank refuses it naming the ranks that differ.
// (The step's metrics are summed over the ranks on the device, and host counts through
// Communicator::sum_on_host.) All are collectives except rank_rows: every rank calls them in the same order.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/dist/communicator.h"

namespace coco::dist {

struct RowRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

// Throws DistConfigError ("global batch of 10 rows does not divide among 3 ranks ...") when
// `global_rows` is not a positive multiple of `world_size`.
RowRange rank_rows(int64_t global_rows, int world_size, int rank);

// Throws DistConfigError on every rank when `bytes` differs between ranks; `what` names it in the
// message ("configuration configs/demo.json differs between ranks: rank 1 differs from rank 0").
void require_same_on_all_ranks(Communicator& comm, const std::string& what, const std::string& bytes);

// The mean over the ranks of each value (f64, exact for equal values).

}  // namespace coco::dist
