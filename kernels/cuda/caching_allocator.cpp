#include "caching_allocator.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "check.h"
#include "clarena/base/errors.h"

namespace clarena::kernels::cuda {
namespace {

class CudaDeviceMemory final : public DeviceMemory {
 public:
  explicit CudaDeviceMemory(cudaStream_t stream) : stream_(stream) {}
  cudaError_t malloc(void** ptr, size_t bytes) override { return cudaMalloc(ptr, bytes); }
  cudaError_t free(void* ptr) override { return cudaFree(ptr); }
  cudaError_t synchronize() override { return cudaStreamSynchronize(stream_); }

 private:
  cudaStream_t stream_;
};

}  // namespace

DeviceMemory& cuda_device_memory(cudaStream_t stream) {
  // One per stream, made once and kept for the life of the process (as the backends are).
  static std::mutex mu;
  static std::unordered_map<cudaStream_t, CudaDeviceMemory*> made;
  std::lock_guard<std::mutex> lock(mu);
  CudaDeviceMemory*& m = made[stream];
  if (!m) m = new CudaDeviceMemory(stream);
  return *m;
}

CachingAllocator::CachingAllocator(int device, DeviceMemory& memory, bool caching)
    : device_(device), memory_(memory), caching_(caching) {}

CachingAllocator::~CachingAllocator() {
  // Host bookkeeping only; device memory is left to the process exit.
  std::vector<Block*> seen;
  for (Pool* pool : {&small_free_, &large_free_})
    for (Block* b : *pool)
      seen.push_back(b);
  for (auto& [ptr, b] : allocated_)
    seen.push_back(b);
  for (Block* b : seen)
    delete b;
}

size_t CachingAllocator::round_size(size_t bytes) {
  if (bytes <= kMinBlock) return kMinBlock;
  if (bytes > std::numeric_limits<size_t>::max() - (kMinBlock - 1))
    throw OutOfMemory("CUDA allocation of " + std::to_string(bytes) +
                      " bytes: the size cannot be rounded up to a multiple of " +
                      std::to_string(kMinBlock) + " bytes without overflowing");
  return (bytes + kMinBlock - 1) / kMinBlock * kMinBlock;
}

size_t CachingAllocator::segment_size(size_t rounded) {
  if (rounded <= kSmallSize) return kSmallBuffer;
  if (rounded < kMinLargeAlloc) return kLargeBuffer;
  if (rounded > std::numeric_limits<size_t>::max() - (kRoundLarge - 1))
    return rounded;  // cannot round further; cudaMalloc will refuse it anyway
  return (rounded + kRoundLarge - 1) / kRoundLarge * kRoundLarge;
}

void CachingAllocator::throw_oom(size_t requested, size_t rounded) const {
  throw OutOfMemory("CUDA out of memory on cuda:" + std::to_string(device_) +
                    ": tried to allocate " + std::to_string(requested) + " bytes (a segment of " +
                    std::to_string(rounded) + "); " + std::to_string(stats_.bytes_in_use) +
                    " bytes in use, " + std::to_string(stats_.bytes_reserved) +
                    " reserved after releasing the free cached segments");
}

void* CachingAllocator::device_malloc_locked(size_t bytes, size_t requested,
                                             Counter* malloc_counter) {
  void* p = nullptr;
  cudaError_t err = memory_.malloc(&p, bytes);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear the recorded error before retrying
    release_free_segments_locked();
    err = memory_.malloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      throw_oom(requested, bytes);
    }
  }
  if (err != cudaSuccess) throw_cuda_error("cudaMalloc", err, __FILE__, __LINE__);
  ++stats_.device_mallocs;
  if (malloc_counter) ++*malloc_counter;
  return p;
}

void* CachingAllocator::allocate_uncached(size_t bytes, Counter* malloc_counter) {
  std::lock_guard<std::mutex> lock(mu_);
  void* p = device_malloc_locked(bytes, bytes, malloc_counter);
  uncached_.emplace(p, bytes);
  const auto b = static_cast<int64_t>(bytes);
  stats_.bytes_in_use += b;
  stats_.bytes_reserved += b;
  ++stats_.segments;
  ++stats_.blocks_in_use;
  return p;
}

void* CachingAllocator::allocate(size_t bytes, Counter* malloc_counter) {
  if (bytes == 0) return nullptr;
  if (!caching_) return allocate_uncached(bytes, malloc_counter);
  const size_t rounded = round_size(bytes);
  const bool small = rounded <= kSmallSize;
  std::lock_guard<std::mutex> lock(mu_);
  Pool& pool = pool_of(small);
  Block key;
  key.size = rounded;
  Block* block = nullptr;
  if (auto it = pool.lower_bound(&key); it != pool.end()) {
    block = *it;
    pool.erase(it);
  } else {
    const size_t seg = segment_size(rounded);
    block = new Block;
    try {
      block->ptr = static_cast<char*>(device_malloc_locked(seg, bytes, malloc_counter));
    } catch (...) {
      delete block;
      throw;
    }
    block->size = seg;
    block->small = small;
    stats_.bytes_reserved += static_cast<int64_t>(seg);
    ++stats_.segments;
  }
  // Split when the rest is worth keeping: any whole block in the small pool, more than the small
  // pool's largest request in the large pool (smaller rests would only fragment it).
  const size_t rest = block->size - rounded;
  if (small ? rest >= kMinBlock : rest > kSmallSize) {
    Block* tail = new Block;
    tail->ptr = block->ptr + rounded;
    tail->size = rest;
    tail->small = small;
    tail->prev = block;
    tail->next = block->next;
    if (block->next) block->next->prev = tail;
    block->next = tail;
    block->size = rounded;
    pool.insert(tail);
  }
  block->allocated = true;
  allocated_.emplace(block->ptr, block);
  stats_.bytes_in_use += static_cast<int64_t>(block->size);
  ++stats_.blocks_in_use;
  return block->ptr;
}

void CachingAllocator::deallocate(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (!caching_) {
    auto it = uncached_.find(ptr);
    if (it == uncached_.end()) {
      std::fprintf(stderr, "clarena: cuda:%d deallocate of a pointer it did not allocate (%p)\n",
                   device_, ptr);
      return;
    }
    const auto b = static_cast<int64_t>(it->second);
    uncached_.erase(it);
    // The block may still be read by queued work: drain the stream first. Called from
    // destructors, so errors are reported, not thrown.
    cudaError_t err = memory_.synchronize();
    if (err == cudaSuccess) err = memory_.free(ptr);
    if (err != cudaSuccess)
      std::fprintf(stderr, "clarena: cuda:%d cudaFree(%p) failed: %s\n", device_, ptr,
                   cudaGetErrorString(err));
    ++stats_.device_frees;
    stats_.bytes_in_use -= b;
    stats_.bytes_reserved -= b;
    --stats_.segments;
    --stats_.blocks_in_use;
    return;
  }
  auto it = allocated_.find(ptr);
  if (it == allocated_.end()) {
    // Called from destructors: report rather than throw.
    std::fprintf(stderr, "clarena: cuda:%d deallocate of a pointer it did not allocate (%p)\n",
                 device_, ptr);
    return;
  }
  Block* block = it->second;
  allocated_.erase(it);
  block->allocated = false;
  stats_.bytes_in_use -= static_cast<int64_t>(block->size);
  --stats_.blocks_in_use;
  Pool& pool = pool_of(block->small);
  // Coalesce with free neighbours of the same segment.
  if (Block* prev = block->prev; prev && !prev->allocated) {
    pool.erase(prev);
    prev->size += block->size;
    prev->next = block->next;
    if (block->next) block->next->prev = prev;
    delete block;
    block = prev;
  }
  if (Block* next = block->next; next && !next->allocated) {
    pool.erase(next);
    block->size += next->size;
    block->next = next->next;
    if (next->next) next->next->prev = block;
    delete next;
  }
  pool.insert(block);
}

void CachingAllocator::release_free_segments_locked() {
  // Cached blocks may still be read by work queued before they were freed: wait for it.
  CLARENA_CUDA_CHECK(memory_.synchronize());
  for (Pool* pool : {&small_free_, &large_free_}) {
    for (auto it = pool->begin(); it != pool->end();) {
      Block* b = *it;
      if (b->prev || b->next) {  // part of a segment still (partly) in use
        ++it;
        continue;
      }
      CLARENA_CUDA_CHECK(memory_.free(b->ptr));
      ++stats_.device_frees;
      stats_.bytes_reserved -= static_cast<int64_t>(b->size);
      --stats_.segments;
      it = pool->erase(it);
      delete b;
    }
  }
}

void CachingAllocator::empty_cache() {
  if (!caching_) return;
  std::lock_guard<std::mutex> lock(mu_);
  release_free_segments_locked();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  AllocatorStats s = stats_;
  s.bytes_cached = s.bytes_reserved - s.bytes_in_use;
  return s;
}

}  // namespace clarena::kernels::cuda
