// A caching allocator for one CUDA device, in the shape of PyTorch's CUDACachingAllocator.
//
// Sizes are rounded up to multiples of 512 bytes (never to powers of two). Requests of at most
// 1 MiB come from 2 MiB segments ("small pool"); larger ones from 20 MiB segments when they are
// under 10 MiB, else from a segment of their own size rounded to 2 MiB ("large pool"). A free
// block larger than the request is split (the rest stays cached: at least 512 bytes in the small
// pool, more than 1 MiB in the large pool); a freed block is merged with its free neighbours of
// the same segment. The smallest cached block that fits is used (best fit, then lowest address),
// so a training step in steady state (the same multiset of sizes every step) calls no cudaMalloc.
//
// Reuse is stream-ordered: every block belongs to the one stream the allocator was made for, and
// the backend enqueues all work on that stream, so a block freed on the host and handed out again
// is only touched by work queued after its last use. (A block used on another stream would need
// an event before reuse; the backend never does that.) When cudaMalloc fails, the device is
// synchronised, every wholly free segment is released and the call is retried once; a second
// failure throws clarena::OutOfMemory naming the size asked for.
//
// With caching off (CLARENA_CUDA_NO_CACHE=1 in the environment when the backend is created, like
// PyTorch's PYTORCH_NO_CUDA_MEMORY_CACHING) every allocation is its own cudaMalloc of exactly the
// size asked for, and every free a cudaFree after the stream has drained: slow, but it lets
// compute-sanitizer see overruns, use after free and uninitialised reads.
//
// Thread-safe: one mutex guards the pools.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <unordered_map>

#include "clarena/kernels/backend.h"

namespace clarena::kernels::cuda {

struct AllocatorStats {
  int64_t bytes_in_use = 0;    // rounded bytes handed out and not yet returned
  int64_t bytes_reserved = 0;  // bytes held from the driver (segments)
  int64_t bytes_cached = 0;    // bytes_reserved - bytes_in_use: free, cached blocks
  int64_t device_mallocs = 0;  // cudaMalloc calls that succeeded, since creation
  int64_t device_frees = 0;    // cudaFree calls, since creation
  int64_t segments = 0;        // segments currently held
  int64_t blocks_in_use = 0;   // blocks handed out and not yet returned
};

/// The driver calls the allocator makes; replaced by a host-memory fake in the device-free tests.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  virtual cudaError_t malloc(void** ptr, size_t bytes) = 0;
  virtual cudaError_t free(void* ptr) = 0;
  /// Waits for all work that may still touch cached memory.
  virtual cudaError_t synchronize() = 0;
};

/// cudaMalloc / cudaFree / cudaStreamSynchronize on `stream` (device already current).
DeviceMemory& cuda_device_memory(cudaStream_t stream);

class CachingAllocator {
 public:
  static constexpr size_t kMinBlock = 512;                    // every size is a multiple of this
  static constexpr size_t kSmallSize = size_t{1} << 20;       // largest request of the small pool
  static constexpr size_t kSmallBuffer = size_t{2} << 20;     // small-pool segment size
  static constexpr size_t kMinLargeAlloc = size_t{10} << 20;  // under this, 20 MiB segments
  static constexpr size_t kLargeBuffer = size_t{20} << 20;
  static constexpr size_t kRoundLarge = size_t{2} << 20;  // larger segments: multiples of this

  /// `memory` must outlive the allocator. `caching` false: one cudaMalloc per allocation.
  CachingAllocator(int device, DeviceMemory& memory, bool caching = true);
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;
  // Never frees in the destructor: it may run after the CUDA runtime has shut down.
  ~CachingAllocator();

  /// A block of at least `bytes` (the caller makes the device current). nullptr for 0 bytes.
  /// Adds the cudaMalloc calls it makes to *malloc_counter (may be null). Throws OutOfMemory.
  void* allocate(size_t bytes, Counter* malloc_counter);
  /// Returns a block to the cache (merging it with free neighbours); nullptr is ignored.
  /// Never throws: a pointer it did not hand out is reported on stderr and ignored.
  void deallocate(void* ptr);
  /// Synchronizes and releases every wholly free segment to the driver.
  void empty_cache();
  AllocatorStats stats() const;
  bool caching() const { return caching_; }

  /// The rounded size of a request: a multiple of kMinBlock, at least kMinBlock. Throws
  /// OutOfMemory when rounding would overflow size_t.
  static size_t round_size(size_t bytes);
  /// The segment cudaMalloc'ed for a rounded request that no cached block fits.
  static size_t segment_size(size_t rounded);

 private:
  struct Block {
    char* ptr = nullptr;
    size_t size = 0;
    bool allocated = false;
    bool small = false;     // pool
    Block* prev = nullptr;  // neighbours inside the same segment
    Block* next = nullptr;
  };
  struct BySizeThenAddress {
    bool operator()(const Block* a, const Block* b) const {
      return a->size != b->size ? a->size < b->size : a->ptr < b->ptr;
    }
  };
  using Pool = std::set<Block*, BySizeThenAddress>;

  Pool& pool_of(bool small) { return small ? small_free_ : large_free_; }
  void* allocate_uncached(size_t bytes, Counter* malloc_counter);
  /// cudaMalloc with one flush-and-retry; throws OutOfMemory.
  void* device_malloc_locked(size_t bytes, size_t requested, Counter* malloc_counter);
  void release_free_segments_locked();
  [[noreturn]] void throw_oom(size_t requested, size_t rounded) const;

  int device_;
  DeviceMemory& memory_;
  const bool caching_;
  mutable std::mutex mu_;
  Pool small_free_, large_free_;
  std::unordered_map<void*, Block*> allocated_;  // handed-out block by address
  std::unordered_map<void*, size_t> uncached_;   // caching off: address -> size
  AllocatorStats stats_;
};

}  // namespace clarena::kernels::cuda
