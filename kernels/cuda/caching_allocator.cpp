#include "caching_allocator.h"

#include <cuda_runtime_api.h>

#include <cstdio>
#include <string>

#include "check.h"
#include "clarena/core/errors.h"

namespace clarena::kernels::cuda {

size_t CachingAllocator::round_size(size_t bytes) {
  constexpr size_t kMin = 512, kSmall = size_t{1} << 20, kLarge = size_t{2} << 20;
  if (bytes <= kMin) return kMin;
  if (bytes <= kSmall) {
    size_t p = kMin;
    while (p < bytes)
      p <<= 1;
    return p;
  }
  return (bytes + kLarge - 1) / kLarge * kLarge;
}

void* CachingAllocator::allocate(size_t bytes, Counter* malloc_counter) {
  if (bytes == 0) return nullptr;
  const size_t rounded = round_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = free_.find(rounded);
  if (it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    stats_.bytes_cached -= static_cast<int64_t>(rounded);
    stats_.bytes_in_use += static_cast<int64_t>(rounded);
    in_use_.emplace(p, rounded);
    return p;
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, rounded);
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();  // clear the recorded error before retrying
    flush_locked();
    err = cudaMalloc(&p, rounded);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      throw OutOfMemory("CUDA out of memory on cuda:" + std::to_string(device_) +
                        ": tried to allocate " + std::to_string(bytes) + " bytes (rounded to " +
                        std::to_string(rounded) + "); " + std::to_string(stats_.bytes_in_use) +
                        " bytes in use, cache flushed");
    }
  }
  if (err != cudaSuccess) throw_cuda_error("cudaMalloc(&p, rounded)", err, __FILE__, __LINE__);
  ++stats_.device_mallocs;
  if (malloc_counter) ++*malloc_counter;
  stats_.bytes_in_use += static_cast<int64_t>(rounded);
  in_use_.emplace(p, rounded);
  return p;
}

void CachingAllocator::deallocate(void* ptr) {
  if (!ptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = in_use_.find(ptr);
  if (it == in_use_.end()) {
    // Called from destructors: report rather than throw.
    std::fprintf(stderr, "clarena: cuda:%d deallocate of a pointer it did not allocate (%p)\n",
                 device_, ptr);
    return;
  }
  const size_t rounded = it->second;
  in_use_.erase(it);
  free_[rounded].push_back(ptr);
  stats_.bytes_in_use -= static_cast<int64_t>(rounded);
  stats_.bytes_cached += static_cast<int64_t>(rounded);
}

void CachingAllocator::flush_locked() {
  // Cached blocks may still be read by work queued before they were freed: wait for it.
  CLARENA_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) {
      CLARENA_CUDA_CHECK(cudaFree(p));
      ++stats_.device_frees;
      stats_.bytes_cached -= static_cast<int64_t>(size);
    }
    blocks.clear();
  }
  free_.clear();
}

void CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  flush_locked();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace clarena::kernels::cuda
