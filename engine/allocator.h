// Caching allocator for device memory.
//
// Requests are rounded up to size classes (multiples of 512 bytes below 1 MiB; above that four
// classes per power of two, so at most 25% slack). Freed blocks go back to a per-(stream, class)
// cache and are reused by later requests on the same stream, so after a warm-up step a steady-state
// training step performs no backing cudaMalloc/cudaFree. Blocks are not moved between streams: a
// tensor used on a second stream must be kept alive by the caller until that stream is done.
//
// Private pools (CUDA graphs): a captured graph keeps the addresses of every block its work touched,
// scratch included, and writes them again at each replay. Those blocks must not go to other tensors
// between replays, so a capture allocates from a private pool (PoolScope): a block allocated while
// the pool is active on its stream belongs to the pool for good, and once freed it is reused only by
// allocations in the same pool. The pool is filled from the general cache first (a warm-up step left
// the blocks there), so a capture after a warm-up needs no cudaMalloc (which capture forbids).
// release_cached() leaves pools alone; release_pool() hands a pool's blocks back once its graph is gone.
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

  // Private pools: ids come from create_pool(); while a PoolScope is active, allocations on its stream
  // come from the pool. release_pool returns the pool's free blocks to the general cache, and its
  // live blocks to it when they are freed; the id is not used again.
  using PoolId = uint64_t;
  PoolId create_pool();
  void release_pool(PoolId pool);
  // Bytes in a pool's blocks, live or free (0 for a released or unknown pool).
  size_t pool_bytes(PoolId pool) const;

  // Allocations on `stream` come from `pool` for the scope's lifetime (scopes on one stream nest).
  class PoolScope {
   public:
    PoolScope(PoolId pool, cudaStream_t stream);
    ~PoolScope();
    PoolScope(const PoolScope&) = delete;
    PoolScope& operator=(const PoolScope&) = delete;

   private:
    cudaStream_t stream_;
    PoolId previous_;
  };

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
