// Checked CUDA and cuBLAS calls: a failure throws clarena::CudaError naming the call text, the
// error's name and description, the file and the line. Checks stay on in every build type.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <string>

#include "clarena/base/errors.h"

namespace clarena::kernels::cuda {

[[noreturn]] inline void throw_cuda_error(const char* call, cudaError_t err, const char* file,
                                          int line) {
  throw CudaError(std::string("CUDA call `") + call + "` failed: " + cudaGetErrorName(err) + " (" +
                  cudaGetErrorString(err) + ") at " + file + ":" + std::to_string(line));
}

[[noreturn]] inline void throw_cublas_error(const char* call, cublasStatus_t status,
                                            const char* file, int line) {
  throw CudaError(std::string("cuBLAS call `") + call + "` failed: " + cublasGetStatusName(status) +
                  " (" + cublasGetStatusString(status) + ") at " + file + ":" +
                  std::to_string(line));
}

}  // namespace clarena::kernels::cuda

#define CLARENA_CUDA_CHECK(call)                                                                \
  do {                                                                                          \
    cudaError_t clarena_cuda_err_ = (call);                                                     \
    if (clarena_cuda_err_ != cudaSuccess)                                                       \
      ::clarena::kernels::cuda::throw_cuda_error(#call, clarena_cuda_err_, __FILE__, __LINE__); \
  } while (0)

#define CLARENA_CUBLAS_CHECK(call)                                                                 \
  do {                                                                                             \
    cublasStatus_t clarena_cublas_st_ = (call);                                                    \
    if (clarena_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                               \
      ::clarena::kernels::cuda::throw_cublas_error(#call, clarena_cublas_st_, __FILE__, __LINE__); \
  } while (0)
