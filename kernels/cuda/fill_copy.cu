// Fill and scale: grid-stride loops over flat buffers. (Copies are cudaMemcpyAsync calls in
// cuda_backend.cu, not kernels.)
#include "common.cuh"

namespace clarena::kernels::cuda {
namespace {

template <typename T>
__global__ void fill_kernel(int64_t n, T value, T* __restrict__ dst) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    dst[i] = value;
}

template <typename T>
__global__ void scale_kernel(int64_t n, T beta, T* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = beta * y[i];
}

}  // namespace

void fill(const Ctx& ctx, DType t, int64_t n, double value, void* dst) {
  if (n <= 0) return;
  if (t == DType::Int64) {
    fill_kernel<long long><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        n, static_cast<long long>(value), static_cast<long long*>(dst));
    after_launch(ctx);
    return;
  }
  dispatch_float(t, "fill", [&]<typename T>(T*) {
    fill_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, static_cast<T>(value),
                                                                static_cast<T*>(dst));
  });
  after_launch(ctx);
}

void scale_inplace(const Ctx& ctx, DType t, int64_t n, double beta, void* y) {
  if (n <= 0) return;
  if (beta == 0.0) {  // overwrite: never read y, which may hold garbage
    fill(ctx, t, n, 0.0, y);
    return;
  }
  if (beta == 1.0) return;
  dispatch_float(t, "scale", [&]<typename T>(T*) {
    scale_kernel<T>
        <<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, static_cast<T>(beta), static_cast<T*>(y));
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
