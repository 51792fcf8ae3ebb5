// engine/pinned_upload.h on the emulated CUDA device: the values arrive, an upload issues no
// synchronisation and no cudaMalloc once its slot is sized, one slot reuses the same pinned and device
// addresses (what a captured graph needs), a ring hands out its slots in turn, bad arguments are refused.
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "engine/pinned_upload.h"
#include "engine/runtime/counters.h"

namespace coco {
namespace {

std::vector<int32_t> ids(size_t n, int32_t first) {
  std::vector<int32_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

TEST(PinnedUpload, UploadsWithoutSynchronisingAndReusesItsSlot) {
  PinnedUpload upload(1);
  const std::vector<int32_t> first = ids(48, 5);
  const Tensor a = upload.upload(first.data(), Shape{4, 12}, DType::i32);
  EXPECT_EQ(a.device(), Device::cuda);
  EXPECT_EQ(a.shape(), (Shape{4, 12}));
  EXPECT_EQ(a.to_vector<int32_t>(), first);
  const void* device_address = a.data();

  const std::vector<int32_t> second = ids(48, 100);
  runtime::StepProfile profile;
  const Tensor b = upload.upload(second.data(), Shape{4, 12}, DType::i32);
  const runtime::Counters counters = profile.elapsed();
  EXPECT_EQ(counters.synchronizations(), 0u) << counters.describe();
  EXPECT_EQ(counters.h2d_copies, 1u) << counters.describe();
  EXPECT_EQ(counters.h2d_bytes, 48u * 4u) << counters.describe();
  EXPECT_EQ(counters.device_mallocs, 0u) << counters.describe();
  EXPECT_EQ(counters.host_allocs, 0u) << counters.describe();
  EXPECT_EQ(b.data(), device_address) << "one slot: the same device buffer every time";
  EXPECT_EQ(b.to_vector<int32_t>(), second);

  // Another shape gets a buffer of its own; the values are still right.
  const std::vector<int32_t> third = ids(10, -3);
  EXPECT_EQ(upload.upload(third.data(), Shape{2, 5}, DType::i32).to_vector<int32_t>(), third);
  EXPECT_EQ(upload.upload(nullptr, Shape{0, 5}, DType::i32).numel(), 0);
}

TEST(PinnedUpload, ARingHandsOutItsSlotsInTurn) {
  PinnedUpload upload(3);
  std::vector<const void*> addresses;
  std::vector<Tensor> kept;
  for (int k = 0; k < 6; ++k) {
    const std::vector<int32_t> values = ids(16, 10 * k);
    kept.push_back(upload.upload(values.data(), Shape{16}, DType::i32));
    addresses.push_back(kept.back().data());
    EXPECT_EQ(kept.back().to_vector<int32_t>(), values) << k;
  }
  EXPECT_NE(addresses[0], addresses[1]);
  EXPECT_NE(addresses[1], addresses[2]);
  EXPECT_EQ(addresses[0], addresses[3]);
  EXPECT_EQ(addresses[2], addresses[5]);
  // A slot's tensor holds its values until the slot comes round again.
  EXPECT_EQ(kept[4].to_vector<int32_t>(), ids(16, 40));
  EXPECT_EQ(upload.slots(), 3);
}

TEST(PinnedUpload, RefusesBadArguments) {
  EXPECT_THROW(PinnedUpload(0), std::invalid_argument);
  PinnedUpload upload(1);
  EXPECT_THROW(upload.upload(nullptr, Shape{3}, DType::i32), std::invalid_argument);
}

}  // namespace
}  // namespace coco
