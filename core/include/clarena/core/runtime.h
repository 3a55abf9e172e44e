// What a program asks of a device beyond tensors: whether it exists, waiting for it, timing work
// on it, and how much tensor memory it holds. The layers above core (nn, cl, programs) use these
// instead of reaching into the kernels, which are private to core.
#pragma once

#include <cstdint>
#include <functional>

#include "clarena/base/device.h"

namespace clarena {

/// True when this build has CUDA and at least one device is visible (never throws).
bool cuda_is_available();
/// Number of visible CUDA devices; 0 without CUDA, without a driver, or without a device.
int cuda_device_count();

/// Waits until `device` has finished all work queued so far (a no-op on the CPU).
void synchronize(Device device);

/// Runs `work` (which queues tensor ops on `device`) and returns the device time it took in
/// milliseconds: CUDA events on a GPU, a steady clock around synchronisations on the CPU. It
/// synchronises once, at the end: call it on sampled steps, not on every step.
double time_ms(Device device, const std::function<void()>& work);

/// How many times the host has waited for `device` so far: reads of its memory (item,
/// to_vector), synchronize, time_ms. Counted on the CPU as well, where waits are free, so that
/// a loop meant never to stall a GPU can be checked anywhere.
int64_t host_waits(Device device);

/// Tensor storage on a device, in bytes (what the allocator handed out, caches excluded).
struct MemoryStats {
  int64_t bytes_in_use = 0;
  int64_t peak_bytes_in_use = 0;  // since the start or the last reset_peak_memory_stats
};
MemoryStats memory_stats(Device device);
/// Restarts the peak at the bytes in use now (torch.cuda.reset_peak_memory_stats).
void reset_peak_memory_stats(Device device);

}  // namespace clarena
