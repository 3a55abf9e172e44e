// cuda_probe: what this machine's CUDA offers, in a few lines, for the top of a GPU check's
// summary. Prints the library's probe (cudaGetDeviceCount classified: a device, no device, or a
// broken driver), the runtime and driver versions, and each device's name, compute capability,
// SM count, memory and L2.
//
// Exit status: 0 with at least one device; 3 when there is none (no GPU or no driver: the
// normal case on a CPU machine); 4 when CUDA is present but unusable (a driver error).
#include <cuda_runtime_api.h>

#include <cstdio>

#include "clarena/kernels/cuda_backend.h"

int main() {
  const clarena::kernels::CudaProbe& p = clarena::kernels::cuda_probe();
  int runtime = 0, driver = 0;
  (void)cudaRuntimeGetVersion(&runtime);
  (void)cudaDriverGetVersion(&driver);
  std::printf("cuda runtime %d.%d, driver API %d.%d\n", runtime / 1000, runtime % 1000 / 10,
              driver / 1000, driver % 1000 / 10);
  if (p.count == 0) {
    std::printf("%s\n", p.message.c_str());
    return p.no_device ? 3 : 4;
  }
  for (int i = 0; i < p.count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) {
      std::printf("cuda:%d: cudaGetDeviceProperties failed\n", i);
      return 4;
    }
    std::printf("cuda:%d: %s, compute capability %d.%d, %d SMs, %.1f GiB, L2 %.1f MiB\n", i,
                prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                static_cast<double>(prop.totalGlobalMem) / (1 << 30),
                static_cast<double>(prop.l2CacheSize) / (1 << 20));
  }
  return 0;
}
