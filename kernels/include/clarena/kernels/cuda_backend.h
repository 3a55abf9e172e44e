// The CUDA backend's entry points. Declared in every build; defined only when the library is
// built with CUDA (CLARENA_HAS_CUDA), so call them behind that macro or cuda_device_count().
//
// One backend per device: one stream (created non-blocking, all kernels, cuBLAS calls and copies
// go on it), one cuBLAS handle, one caching allocator. Work is asynchronous; copy_to_host,
// count_equal and synchronize wait for it. Cross-entropy labels outside [0, cols) are detected
// on the device and thrown as ValueError by the next of those synchronizing calls.
#pragma once

#include <cstdint>

#include "clarena/kernels/backend.h"

namespace clarena::kernels {

/// Number of visible CUDA devices; 0 when there is no driver, no device, or any error.
int cuda_device_count_impl() noexcept;

/// The backend of CUDA device `index` (created on first use). Throws DeviceError naming the index
/// and the number of devices when it does not exist.
Backend& cuda_backend(int index);

/// TF32 tensor-core math for float32 GEMMs. Off by default so results match the CPU.
void set_tf32_enabled(bool enabled);
bool tf32_enabled();

/// Returns every cached (free) block of every created CUDA backend to the driver.
void cuda_empty_cache();

/// Caching allocator figures of one device (all zero when its backend was never created).
struct CudaMemoryStats {
  int64_t bytes_in_use = 0;    // bytes handed out (rounded sizes)
  int64_t bytes_cached = 0;    // bytes held in the free lists
  int64_t device_mallocs = 0;  // cudaMalloc calls since the backend was created
};
CudaMemoryStats cuda_memory_stats(int index);
int64_t cuda_bytes_in_use(int index);
int64_t cuda_bytes_cached(int index);
int64_t cuda_malloc_count(int index);

}  // namespace clarena::kernels
