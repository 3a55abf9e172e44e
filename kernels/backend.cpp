// Device → backend dispatch, and the device queries that depend on the build.
#include "clarena/kernels/backend.h"

#include <chrono>
#include <string>

#include "clarena/core/errors.h"
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

namespace kernels {

double Backend::time_ms(const std::function<void()>& work) {
  synchronize();
  const auto start = std::chrono::steady_clock::now();
  work();
  synchronize();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

Backend& backend_for(Device device) {
  if (device.is_cpu()) return cpu_backend();
#ifdef CLARENA_HAS_CUDA
  return cuda_backend(device.index);
#else
  throw DeviceError("device " + device.str() +
                    " requested, but this build of clarena has no CUDA support "
                    "(configure with -DCLARENA_CUDA=ON)");
#endif
}

}  // namespace kernels
}  // namespace clarena
