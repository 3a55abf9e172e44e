#include "clarena/core/runtime.h"

#include "clarena/core/threads.h"
#include "clarena/kernels/backend.h"
#ifdef CLARENA_HAS_CUDA
#include "clarena/kernels/cuda_backend.h"
#endif

namespace clarena {

int cuda_device_count() {
#ifdef CLARENA_HAS_CUDA
  return kernels::cuda_device_count_impl();
#else
  return 0;
#endif
}

bool cuda_is_available() {
  return cuda_device_count() > 0;
}

int num_threads() {
  return kernels::cpu_num_threads();
}

void set_num_threads(int n) {
  kernels::set_cpu_num_threads(n);
}

void synchronize(Device device) {
  kernels::backend_for(device).synchronize();
}

double time_ms(Device device, const std::function<void()>& work) {
  return kernels::backend_for(device).time_ms(work);
}

int64_t host_waits(Device device) {
  return kernels::backend_for(device).stats().host_waits.load();
}

MemoryStats memory_stats(Device device) {
  const kernels::KernelStats& stats = kernels::backend_for(device).stats();
  return {stats.bytes_in_use.load(), stats.peak_bytes_in_use.load()};
}

void reset_peak_memory_stats(Device device) {
  kernels::KernelStats& stats = kernels::backend_for(device).stats();
  stats.peak_bytes_in_use = stats.bytes_in_use.load();
}

}  // namespace clarena
