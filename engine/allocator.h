// Caching allocator for device memory.
//
// Requests are rounded up to size classes (multiples of 512 bytes below 1 MiB; above that four
// classes per power of two, so at most 25% slack). Freed blocks go back to a per-(stream, class)
// cache and are reused by later requests on the same stream, so after a warm-up step a steady-state
// training step performs no backing cudaMalloc/cudaFree. Blocks are not moved between streams: a
// tensor used on a second stream must be kept alive by the caller until that stream is done.
#pragma once
#include <cstddef>
#include <cstdint>

#include "engine/runtime/cuda_api.h"

namespace coco {

struct AllocatorStats {
  size_t bytes_in_use = 0;    // sum of the size classes of live blocks
  size_t bytes_reserved = 0;  // live + cached, i.e. everything obtained from cudaMalloc
  size_t peak_bytes_in_use = 0;
  uint64_t backing_allocations = 0;  // cudaMalloc calls
  uint64_t backing_frees = 0;        // cudaFree calls
  uint64_t requests = 0;
  uint64_t cache_hits = 0;
};

class CachingAllocator {
 public:
  static CachingAllocator& instance();

  // Throws CudaError (with the allocator statistics) when the device is out of memory even after
  // the cache was released.
  void* allocate(size_t bytes, cudaStream_t stream);
  void deallocate(void* pointer);
  // Returns every cached (free) block to the device.
  void release_cached();

  AllocatorStats stats() const;
  void reset_peak();
  static size_t size_class(size_t bytes);

  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

 private:
  CachingAllocator();
  ~CachingAllocator();
  struct State;
  State* state_;
};

}  // namespace coco
