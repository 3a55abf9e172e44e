// Device → backend dispatch.
#include "clarena/kernels/backend.h"

#include <chrono>
#include <string>

#include "clarena/base/errors.h"
#ifdef CLARENA_HAS_CUDA
#include "clarena/kernels/cuda_backend.h"
#endif

namespace clarena::kernels {

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

}  // namespace clarena::kernels
