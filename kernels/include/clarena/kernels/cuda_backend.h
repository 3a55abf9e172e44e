// The CUDA backend's entry points. Declared in every build; defined only when the library is
// built with CUDA (CLARENA_HAS_CUDA), so call them behind that macro or cuda_device_count().
//
// One backend per device: one stream (created non-blocking, all kernels, cuBLAS calls and copies
// go on it), one cuBLAS handle, one caching allocator. Work is asynchronous; copy_to_host,
// count_equal and synchronize wait for it. Cross-entropy labels outside [0, cols) are detected
// on the device and thrown as ValueError by the next of those synchronizing calls.
//
// Threads: every entry point may be called from several threads at once. The backend's host
// state (cuBLAS handle and its math mode, scratch buffer, timing events, the bad-label record) is
// guarded by one mutex per backend, taken while a call enqueues its work, never while it waits
// for the device; the allocator has its own mutex; the counters are atomic.
#pragma once

#include <cstdint>
#include <string>

#include "clarena/kernels/backend.h"

namespace clarena::kernels {

/// What the CUDA runtime said when first asked for its devices (cudaGetDeviceCount), once per
/// process.
struct CudaProbe {
  int count = 0;           // usable devices; 0 whenever `error` is not 0
  int error = 0;           // the cudaError_t value, 0 on success
  bool no_device = false;  // a machine without a GPU: no device, or no driver (errors 100, 35)
  /// "" when a device is usable; else what is wrong, naming the error, e.g. "no CUDA device:
  /// cudaGetDeviceCount returned cudaErrorInsufficientDriver (35): ...".
  std::string message;
};

/// The probe, made on first use. Errors other than "no device" (a broken or busy driver: 999,
/// 802, 3...) are also printed once to stderr, since they make every GPU test skip.
const CudaProbe& cuda_probe() noexcept;

/// Number of visible CUDA devices; 0 when there is no driver, no device, or any error (see
/// cuda_probe() for which).
int cuda_device_count_impl() noexcept;

/// The backend of CUDA device `index` (created on first use). Throws DeviceError naming the index
/// and the number of devices (or the probe's error) when it does not exist.
Backend& cuda_backend(int index);

/// TF32 tensor-core math for float32 GEMMs, process-wide. Off by default so results match the
/// CPU.
void set_tf32_enabled(bool enabled);
bool tf32_enabled();

/// Sets TF32 for a scope and restores the previous setting when the scope ends, also when it
/// ends by an exception.
class Tf32Guard {
 public:
  explicit Tf32Guard(bool enabled) : previous_(tf32_enabled()) { set_tf32_enabled(enabled); }
  ~Tf32Guard() { set_tf32_enabled(previous_); }
  Tf32Guard(const Tf32Guard&) = delete;
  Tf32Guard& operator=(const Tf32Guard&) = delete;

 private:
  bool previous_;
};

/// Returns every wholly free cached segment of every created CUDA backend to the driver.
void cuda_empty_cache();

/// False when CLARENA_CUDA_NO_CACHE is set to anything but "" or "0" (read once): each tensor
/// is then its own cudaMalloc of its exact size, so compute-sanitizer sees every overrun.
bool cuda_caching_enabled();

/// Caching allocator figures of one device (all zero when its backend was never created).
struct CudaMemoryStats {
  int64_t bytes_in_use = 0;    // bytes handed out (rounded sizes)
  int64_t bytes_cached = 0;    // bytes reserved from the driver and not handed out
  int64_t bytes_reserved = 0;  // bytes held from the driver
  int64_t device_mallocs = 0;  // cudaMalloc calls since the backend was created
  int64_t device_frees = 0;    // cudaFree calls since the backend was created
};
CudaMemoryStats cuda_memory_stats(int index);
int64_t cuda_bytes_in_use(int index);
int64_t cuda_bytes_cached(int index);
int64_t cuda_malloc_count(int index);

}  // namespace clarena::kernels
