// The caching allocator: size classes, reuse, statistics, and the steady-state property that a
// repeated step performs no backing cudaMalloc/cudaFree after warm-up.
#include <gtest/gtest.h>

#include "engine/allocator.h"
#include "engine/tensor.h"

namespace coco {
namespace {

TEST(Allocator, SizeClasses) {
  EXPECT_EQ(CachingAllocator::size_class(1), 512u);
  EXPECT_EQ(CachingAllocator::size_class(512), 512u);
  EXPECT_EQ(CachingAllocator::size_class(513), 1024u);
  EXPECT_EQ(CachingAllocator::size_class(size_t{1} << 20), size_t{1} << 20);
  EXPECT_EQ(CachingAllocator::size_class((size_t{1} << 20) + 1), (size_t{1} << 20) + (size_t{1} << 18));
  for (size_t bytes : {size_t{3000000}, size_t{123456789}}) {
    const size_t c = CachingAllocator::size_class(bytes);
    EXPECT_GE(c, bytes);
    EXPECT_LE(c, bytes + bytes / 4 + 512);
  }
}

TEST(Allocator, FreedBlocksAreReusedAndStatsTrackUse) {
  auto& allocator = CachingAllocator::instance();
  const AllocatorStats before = allocator.stats();
  void* a = allocator.allocate(10000, nullptr);
  const AllocatorStats during = allocator.stats();
  EXPECT_EQ(during.bytes_in_use - before.bytes_in_use, CachingAllocator::size_class(10000));
  allocator.deallocate(a);
  void* b = allocator.allocate(9800, nullptr);  // same size class
  EXPECT_EQ(a, b);
  EXPECT_GT(allocator.stats().cache_hits, before.cache_hits);
  allocator.deallocate(b);
  EXPECT_EQ(allocator.stats().bytes_in_use, before.bytes_in_use);
  EXPECT_GE(allocator.stats().peak_bytes_in_use, during.bytes_in_use);
}

TEST(Allocator, ReleaseCachedReturnsMemory) {
  auto& allocator = CachingAllocator::instance();
  void* a = allocator.allocate(1 << 22, nullptr);
  allocator.deallocate(a);
  const AllocatorStats cached = allocator.stats();
  allocator.release_cached();
  const AllocatorStats released = allocator.stats();
  EXPECT_LT(released.bytes_reserved, cached.bytes_reserved);
  EXPECT_GT(released.backing_frees, cached.backing_frees);
}

TEST(Allocator, FreeingAForeignPointerIsAnError) {
  int local = 0;
  EXPECT_THROW(CachingAllocator::instance().deallocate(&local), std::exception);
}

// A stand-in for a training step: activations of several sizes allocated and freed in the same
// pattern every step.
void fake_step() {
  std::vector<Tensor> activations;
  for (int layer = 0; layer < 4; ++layer) {
    activations.push_back(Tensor::empty(Shape{16, 130}, DType::f32, Device::cuda));
    activations.push_back(Tensor::empty(Shape{16, 4 * 130}, DType::bf16, Device::cuda));
    Tensor scratch = Tensor::zeros(Shape{7, 33}, DType::f32, Device::cuda);
  }
  Tensor loss = Tensor::full(Shape{1}, 1.0, DType::f32, Device::cuda);
}

TEST(Allocator, SteadyStateStepMakesNoBackingAllocations) {
  fake_step();  // warm-up
  const AllocatorStats warm = CachingAllocator::instance().stats();
  for (int step = 0; step < 5; ++step) fake_step();
  const AllocatorStats steady = CachingAllocator::instance().stats();
  EXPECT_EQ(steady.backing_allocations, warm.backing_allocations);
  EXPECT_EQ(steady.backing_frees, warm.backing_frees);
  EXPECT_GT(steady.cache_hits, warm.cache_hits);
}

}  // namespace
}  // namespace coco
