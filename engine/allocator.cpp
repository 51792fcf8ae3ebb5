#include "engine/allocator.h"

#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"

namespace coco {

struct CachingAllocator::State {
  struct Block {
    size_t size_class;
    cudaStream_t stream;
  };
  mutable std::mutex mutex;
  std::unordered_map<void*, Block> live;
  std::map<std::pair<cudaStream_t, size_t>, std::vector<void*>> cache;
  AllocatorStats stats;

  void release_cached_locked() {
    for (auto& [key, pointers] : cache) {
      for (void* p : pointers) {
        COCO_CUDA_CHECK(runtime::device_free(p));
        stats.backing_frees++;
        stats.bytes_reserved -= key.second;
      }
    }
    cache.clear();
  }
};

CachingAllocator& CachingAllocator::instance() {
  // Never destroyed: tensors in static storage may release their blocks during exit.
  static CachingAllocator* allocator = new CachingAllocator();
  return *allocator;
}

CachingAllocator::CachingAllocator() : state_(new State) {}
CachingAllocator::~CachingAllocator() { delete state_; }

size_t CachingAllocator::size_class(size_t bytes) {
  if (bytes == 0) bytes = 1;
  constexpr size_t kSmallGranule = 512;
  constexpr size_t kLargeThreshold = size_t{1} << 20;
  if (bytes < kLargeThreshold) return (bytes + kSmallGranule - 1) / kSmallGranule * kSmallGranule;
  size_t power = kLargeThreshold;
  while (power * 2 <= bytes) power *= 2;
  const size_t step = power / 4;
  return (bytes + step - 1) / step * step;
}

void* CachingAllocator::allocate(size_t bytes, cudaStream_t stream) {
  const size_t rounded = size_class(bytes);
  std::lock_guard<std::mutex> lock(state_->mutex);
  auto& stats = state_->stats;
  stats.requests++;
  void* pointer = nullptr;
  auto it = state_->cache.find({stream, rounded});
  if (it != state_->cache.end() && !it->second.empty()) {
    pointer = it->second.back();
    it->second.pop_back();
    stats.cache_hits++;
  } else {
    cudaError_t status = runtime::device_malloc(&pointer, rounded);
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      state_->release_cached_locked();
      status = runtime::device_malloc(&pointer, rounded);
    }
    if (status != cudaSuccess) {
      (void)cudaGetLastError();
      throw CudaError("CachingAllocator: out of device memory allocating " + std::to_string(rounded) +
                      " bytes (in use " + std::to_string(stats.bytes_in_use) + ", reserved " +
                      std::to_string(stats.bytes_reserved) + ", peak " + std::to_string(stats.peak_bytes_in_use) +
                      "): " + cudaGetErrorString(status));
    }
    stats.backing_allocations++;
    stats.bytes_reserved += rounded;
  }
  state_->live.emplace(pointer, State::Block{rounded, stream});
  stats.bytes_in_use += rounded;
  if (stats.bytes_in_use > stats.peak_bytes_in_use) stats.peak_bytes_in_use = stats.bytes_in_use;
  return pointer;
}

void CachingAllocator::deallocate(void* pointer) {
  if (!pointer) return;
  std::lock_guard<std::mutex> lock(state_->mutex);
  auto it = state_->live.find(pointer);
  if (it == state_->live.end()) throw CudaError("CachingAllocator: freeing a pointer it did not allocate");
  state_->cache[{it->second.stream, it->second.size_class}].push_back(pointer);
  state_->stats.bytes_in_use -= it->second.size_class;
  state_->live.erase(it);
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->release_cached_locked();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->stats;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->stats.peak_bytes_in_use = state_->stats.bytes_in_use;
}

}  // namespace coco
