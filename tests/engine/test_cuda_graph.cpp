// CudaGraph (engine/cuda_graph.h) on the (emulated) CUDA device: captured tensor work runs only when
// replayed, reads its inputs at each replay, allocates from the graph's private pool (no cudaMalloc
// after a warm-up; the pool's blocks never go to tensors outside the graph), and a capture that makes
// a call capture refuses (a read of a device value, a new cudaMalloc) fails with CUDA's error, naming it.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/allocator.h"
#include "engine/cuda_graph.h"
#include "engine/device.h"
#include "engine/ops/elementwise.h"
#include "engine/runtime/check.h"
#include "engine/runtime/counters.h"
#include "engine/tensor.h"

namespace coco {
namespace {

// out = (a + b) * (a + b) through temporaries, as a step's scratch tensors would be.
Tensor square_of_sum(const Tensor& a, const Tensor& b) {
  const Tensor sum = ops::add(a, b);
  return ops::mul(sum, sum);
}

TEST(CudaGraph, ReplaysCapturedTensorWorkWithTheInputsOfEachReplay) {
  Stream stream;
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3}, Shape{3}).to(Device::cuda);
  Tensor b = Tensor::from_vector(std::vector<float>{1, 1, 1}, Shape{3}).to(Device::cuda);
  {
    StreamScope scope(stream.get());
    (void)square_of_sum(a, b);  // warm-up: the blocks are in the cache
  }
  stream.synchronize();
  const AllocatorStats warm = CachingAllocator::instance().stats();
  CudaGraph graph;
  Tensor out;
  graph.capture(stream.get(), [&] { out = square_of_sum(a, b); });
  EXPECT_TRUE(graph.captured());
  EXPECT_GE(graph.nodes(), 2u);
  EXPECT_EQ(CachingAllocator::instance().stats().backing_allocations, warm.backing_allocations);

  runtime::StepProfile profile;
  graph.replay(stream.get());
  const runtime::Counters replay = profile.elapsed();
  stream.synchronize();
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{4, 9, 16}));
  EXPECT_EQ(replay.graph_launches, 1u);
  EXPECT_EQ(replay.kernel_launches, 0u);
  a.copy_from(Tensor::from_vector(std::vector<float>{0, -1, 5}, Shape{3}));  // new inputs, same buffer
  graph.replay(stream.get());
  stream.synchronize();
  EXPECT_EQ(out.to_vector<float>(), (std::vector<float>{1, 0, 36}));
}

TEST(CudaGraph, PrivatePoolBlocksStayWithTheGraph) {
  auto& allocator = CachingAllocator::instance();
  Stream stream;
  const size_t bytes = 3 * 4096 + 100;  // a size class no other test uses
  // Warm cache: the pool takes the general cache's block instead of calling cudaMalloc.
  allocator.deallocate(allocator.allocate(bytes, stream.get()));
  const AllocatorStats warm = allocator.stats();
  const CachingAllocator::PoolId pool = allocator.create_pool();
  void* in_pool = nullptr;
  {
    CachingAllocator::PoolScope scope(pool, stream.get());
    in_pool = allocator.allocate(bytes, stream.get());
    allocator.deallocate(in_pool);
    EXPECT_EQ(allocator.allocate(bytes, stream.get()), in_pool);  // reused inside the pool
    allocator.deallocate(in_pool);
  }
  EXPECT_EQ(allocator.stats().backing_allocations, warm.backing_allocations);
  EXPECT_EQ(allocator.pool_bytes(pool), CachingAllocator::size_class(bytes));
  // Outside the pool the freed block is not handed out, and release_cached keeps it.
  void* outside = allocator.allocate(bytes, stream.get());
  EXPECT_NE(outside, in_pool);
  allocator.deallocate(outside);
  allocator.release_cached();
  {
    CachingAllocator::PoolScope scope(pool, stream.get());
    void* again = allocator.allocate(bytes, stream.get());
    EXPECT_EQ(again, in_pool);
    allocator.deallocate(again);
  }
  // Released, the pool's block is general again.
  allocator.release_pool(pool);
  EXPECT_EQ(allocator.pool_bytes(pool), 0u);
  void* general = allocator.allocate(bytes, stream.get());
  EXPECT_EQ(general, in_pool);
  allocator.deallocate(general);
  EXPECT_THROW(CachingAllocator::PoolScope(pool, stream.get()), std::invalid_argument);
}

void expect_capture_fails(const std::string& what, const std::function<void()>& work, const std::string& expected) {
  SCOPED_TRACE(what);
  Stream stream;
  CudaGraph graph;
  try {
    graph.capture(stream.get(), work);
    ADD_FAILURE() << "the capture succeeded";
  } catch (const CudaError& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
  EXPECT_FALSE(graph.captured());
  EXPECT_THROW(graph.replay(stream.get()), std::logic_error);
  // The stream works normally afterwards.
  StreamScope scope(stream.get());
  EXPECT_EQ(ops::add(Tensor::full(Shape{2}, 1.0, DType::f32, Device::cuda),
                     Tensor::full(Shape{2}, 2.0, DType::f32, Device::cuda))
                .to_vector<float>(),
            (std::vector<float>{3, 3}));
}

TEST(CudaGraph, CaptureFailsOnWhatCaptureRefuses) {
  const Tensor x = Tensor::full(Shape{4}, 2.0, DType::f32, Device::cuda);
  (void)ops::add(x, x);
  expect_capture_fails(
      "reading a device value", [&] { (void)ops::add(x, x).item(); },
      "operation not permitted when stream is capturing");
  expect_capture_fails(
      "a block the cache does not hold", [&] { (void)Tensor::empty(Shape{123457}, DType::f32, Device::cuda); },
      "while a CUDA graph is being captured, where cudaMalloc is not allowed");
  EXPECT_THROW(CudaGraph().capture(nullptr, [] {}), std::invalid_argument);
}

}  // namespace
}  // namespace coco
