// A caching allocator for one CUDA device.
//
// Freed blocks go back to size-keyed free lists instead of cudaFree, so a training step in steady
// state (the same multiset of sizes every step) never calls cudaMalloc. Sizes are rounded up
// (powers of two from 512 B to 1 MiB, multiples of 2 MiB above) so near sizes share a list.
// Reuse is safe without events because the backend issues all work on one stream per device:
// a block freed on the host and handed out again is only touched by later work on that stream.
// When cudaMalloc fails the cache is flushed (cudaFree of every cached block) and the call is
// retried once; a second failure throws clarena::OutOfMemory naming the size asked for.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>

#include "clarena/kernels/backend.h"
#include <unordered_map>
#include <vector>

namespace clarena::kernels::cuda {

struct AllocatorStats {
  int64_t bytes_in_use = 0;    // rounded bytes handed out and not yet returned
  int64_t bytes_cached = 0;    // rounded bytes held in the free lists
  int64_t device_mallocs = 0;  // cudaMalloc calls that succeeded, since creation
  int64_t device_frees = 0;    // cudaFree calls, since creation
};

class CachingAllocator {
 public:
  explicit CachingAllocator(int device) : device_(device) {}
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;
  // Never frees in the destructor: it may run after the CUDA runtime has shut down.
  ~CachingAllocator() = default;

  /// A block of at least `bytes` on this allocator's device (the caller makes it current).
  /// Returns nullptr for 0 bytes. Adds the cudaMalloc calls it makes to *malloc_counter.
  void* allocate(size_t bytes, Counter* malloc_counter);
  /// Returns a block to its free list; nullptr is ignored.
  void deallocate(void* ptr);
  /// Synchronizes the device and cudaFrees every cached block.
  void empty_cache();
  AllocatorStats stats() const;

  static size_t round_size(size_t bytes);

 private:
  void flush_locked();

  int device_;
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // rounded size -> cached blocks
  std::unordered_map<void*, size_t> in_use_;             // block -> rounded size
  AllocatorStats stats_;
};

}  // namespace clarena::kernels::cuda
