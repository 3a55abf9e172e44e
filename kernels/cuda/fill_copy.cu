// Fill and scale: flat grid-stride loops over 16-byte packs when the buffer is aligned, element
// by element otherwise. (Copies are cudaMemcpyAsync calls in cuda_backend.cu, not kernels.)
#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {
namespace {

template <bool kVector, typename T>
__global__ void CLARENA_BOUNDS(kBlock) fill_kernel(int64_t n, T value, T* __restrict__ dst) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  int64_t tail = 0;
  if constexpr (kVector) {
    constexpr int V = kVec<T>;
    Packed<T> p;
#pragma unroll
    for (int e = 0; e < V; ++e)
      p.v[e] = value;
    const int64_t packs = n / V;
    for (int64_t k = first; k < packs; k += stride)
      store_packed(dst + k * V, p);
    tail = packs * V;
  }
  for (int64_t i = tail + first; i < n; i += stride)
    dst[i] = value;
}

template <bool kVector, typename T>
__global__ void CLARENA_BOUNDS(kBlock) scale_kernel(int64_t n, T beta, T* __restrict__ y) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  int64_t tail = 0;
  if constexpr (kVector) {
    constexpr int V = kVec<T>;
    const int64_t packs = n / V;
    for (int64_t k = first; k < packs; k += stride) {
      Packed<T> p = load_packed(y + k * V);
#pragma unroll
      for (int e = 0; e < V; ++e)
        p.v[e] = beta * p.v[e];
      store_packed(y + k * V, p);
    }
    tail = packs * V;
  }
  for (int64_t i = tail + first; i < n; i += stride)
    y[i] = beta * y[i];
}

template <typename T>
void fill_typed(const Ctx& ctx, int64_t n, T value, T* dst) {
  if (aligned16(dst))
    fill_kernel<true, T>
        <<<grid_for(ctx, (n + kVec<T> - 1) / kVec<T>), kBlock, 0, ctx.stream>>>(n, value, dst);
  else
    fill_kernel<false, T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, value, dst);
}

}  // namespace

void fill_on_stream(const Ctx& ctx, DType t, int64_t n, double value, void* dst) {
  if (n <= 0) return;
  dispatch_all(t, "fill", [&]<typename T>(T*) {
    fill_typed<T>(ctx, n, static_cast<T>(value), static_cast<T*>(dst));
  });
  after_launch(ctx);
}

void CudaBackend::fill(DType t, int64_t n, double value, void* dst) {
  Lock lock(*this);
  fill_on_stream(ctx_, t, n, value, dst);
}

void scale_inplace(const Ctx& ctx, DType t, int64_t n, double beta, void* y) {
  if (n <= 0) return;
  if (beta == 0.0) {  // overwrite: never read y, which may hold garbage
    fill_on_stream(ctx, t, n, 0.0, y);
    return;
  }
  if (beta == 1.0) return;
  dispatch_float(t, "scale", [&]<typename T>(T*) {
    T* ty = static_cast<T*>(y);
    if (aligned16(ty))
      scale_kernel<true, T><<<grid_for(ctx, (n + kVec<T> - 1) / kVec<T>), kBlock, 0, ctx.stream>>>(
          n, static_cast<T>(beta), ty);
    else
      scale_kernel<false, T>
          <<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, static_cast<T>(beta), ty);
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
