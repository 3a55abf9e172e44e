#include "clarena/core/runtime.h"

#include "clarena/kernels/backend.h"

namespace clarena {

void synchronize(Device device) {
  kernels::backend_for(device).synchronize();
}

double time_ms(Device device, const std::function<void()>& work) {
  return kernels::backend_for(device).time_ms(work);
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
