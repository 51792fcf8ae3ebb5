#include "engine/allocator.h"

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/runtime/check.h"
#include "engine/runtime/cuda_calls.h"

namespace coco {

struct CachingAllocator::State {
  static constexpr PoolId kGeneral = 0;
  struct Block {
    size_t size_class;
    cudaStream_t stream;
    PoolId pool;
  };
  // (pool, stream, size class)
  using CacheKey = std::tuple<PoolId, cudaStream_t, size_t>;
  mutable std::mutex mutex;
  std::unordered_map<void*, Block> live;
  std::map<CacheKey, std::vector<void*>> cache;
  std::unordered_map<cudaStream_t, PoolId> active_pool;  // streams inside a PoolScope
  std::unordered_map<PoolId, size_t> pool_bytes;         // live pools: bytes of their blocks
  PoolId next_pool = 1;
  AllocatorStats stats;

  // Frees the general cache (private pools keep their blocks: a graph still addresses them).
  void release_cached_locked() {
    for (auto it = cache.begin(); it != cache.end();) {
      if (std::get<0>(it->first) != kGeneral) {
        ++it;
        continue;
      }
      for (void* p : it->second) {
        COCO_CUDA_CHECK(runtime::device_free(p));
        stats.backing_frees++;
        stats.bytes_reserved -= std::get<2>(it->first);
      }
      it = cache.erase(it);
    }
  }

  // A free block of `rounded` bytes for `pool` on `stream`, or nullptr.
  void* take_cached(PoolId pool, cudaStream_t stream, size_t rounded) {
    auto it = cache.find({pool, stream, rounded});
    if (it == cache.end() || it->second.empty()) return nullptr;
    void* pointer = it->second.back();
    it->second.pop_back();
    return pointer;
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
  const auto active = state_->active_pool.find(stream);
  const PoolId pool = active == state_->active_pool.end() || !state_->pool_bytes.count(active->second) ? State::kGeneral
                                                                                                       : active->second;
  void* pointer = state_->take_cached(pool, stream, rounded);
  const bool joins_pool = pool != State::kGeneral && !pointer;
  // A pool grows from the general cache before it asks the device.
  if (joins_pool) pointer = state_->take_cached(State::kGeneral, stream, rounded);
  if (pointer) {
    stats.cache_hits++;
  } else {
    cudaError_t status = runtime::device_malloc(&pointer, rounded);
    if (status == cudaErrorStreamCaptureUnsupported || status == cudaErrorStreamCaptureInvalidated ||
        status == cudaErrorStreamCaptureImplicit) {
      (void)cudaGetLastError();
      throw CudaError("CachingAllocator: a new block of " + std::to_string(rounded) +
                      " bytes is needed while a CUDA graph is being captured, where cudaMalloc is not allowed "
                      "(run the captured work once before the capture so that the cache holds its blocks): " +
                      cudaGetErrorString(status));
    }
    if (status != cudaSuccess && status != cudaErrorMemoryAllocation) {
      // Not a lack of memory: an earlier kernel fault ("sticky": every later call fails with it) or a broken
      // device. Freeing the cache would not help and would fail the same way.
      (void)cudaGetLastError();
      throw CudaError("CachingAllocator: cudaMalloc of " + std::to_string(rounded) +
                      " bytes failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
    }
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
  state_->live.emplace(pointer, State::Block{rounded, stream, pool});
  if (joins_pool) state_->pool_bytes[pool] += rounded;
  stats.bytes_in_use += rounded;
  if (stats.bytes_in_use > stats.peak_bytes_in_use) stats.peak_bytes_in_use = stats.bytes_in_use;
  return pointer;
}

void CachingAllocator::deallocate(void* pointer) {
  if (!pointer) return;
  std::lock_guard<std::mutex> lock(state_->mutex);
  auto it = state_->live.find(pointer);
  if (it == state_->live.end()) throw CudaError("CachingAllocator: freeing a pointer it did not allocate");
  state_->cache[{it->second.pool, it->second.stream, it->second.size_class}].push_back(pointer);
  state_->stats.bytes_in_use -= it->second.size_class;
  state_->live.erase(it);
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  state_->release_cached_locked();
}

CachingAllocator::PoolId CachingAllocator::create_pool() {
  std::lock_guard<std::mutex> lock(state_->mutex);
  const PoolId pool = state_->next_pool++;
  state_->pool_bytes.emplace(pool, 0);
  return pool;
}

void CachingAllocator::release_pool(PoolId pool) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  if (pool == State::kGeneral || !state_->pool_bytes.erase(pool)) return;
  for (auto& [pointer, block] : state_->live)
    if (block.pool == pool) block.pool = State::kGeneral;  // back to the general cache when freed
  for (auto it = state_->cache.begin(); it != state_->cache.end();) {
    const auto& [owner, stream, size] = it->first;
    if (owner != pool) {
      ++it;
      continue;
    }
    auto& general = state_->cache[{State::kGeneral, stream, size}];
    general.insert(general.end(), it->second.begin(), it->second.end());
    it = state_->cache.erase(it);
  }
}

size_t CachingAllocator::pool_bytes(PoolId pool) const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  const auto it = state_->pool_bytes.find(pool);
  return it == state_->pool_bytes.end() ? 0 : it->second;
}

CachingAllocator::PoolScope::PoolScope(PoolId pool, cudaStream_t stream) : stream_(stream) {
  State& state = *instance().state_;
  std::lock_guard<std::mutex> lock(state.mutex);
  if (pool != State::kGeneral && !state.pool_bytes.count(pool))
    throw std::invalid_argument("CachingAllocator::PoolScope: pool " + std::to_string(pool) +
                                " was not created by create_pool() or was released");
  auto [it, inserted] = state.active_pool.try_emplace(stream, pool);
  previous_ = inserted ? State::kGeneral : it->second;
  it->second = pool;
}

CachingAllocator::PoolScope::~PoolScope() {
  State& state = *instance().state_;
  std::lock_guard<std::mutex> lock(state.mutex);
  if (previous_ == State::kGeneral)
    state.active_pool.erase(stream_);
  else
    state.active_pool[stream_] = previous_;
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
