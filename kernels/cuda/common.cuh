// Device helpers shared by the kernel families: launch geometry, warp/block reductions, math
// overloads for float and double, and the dtype dispatch. Header-only, included by .cu files.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "../dispatch.h"
#include "check.h"
#include "clarena/core/errors.h"
#include "ops.h"

namespace clarena::kernels::cuda {

constexpr int kBlock = 256;  // threads per block of the flat element-wise kernels

/// Blocks for a grid-stride loop over n items: enough to fill the card a few waves deep,
/// never more than the items need, at least 1.
inline unsigned grid_for(const Ctx& ctx, int64_t n, int block = kBlock) {
  const int64_t need = (n + block - 1) / block;
  const int64_t cap = static_cast<int64_t>(ctx.sm_count) * 32;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(need, cap)));
}

/// Counts the launch and checks it was accepted (launch errors are not sticky; execution
/// errors surface at the next synchronizing call).
inline void after_launch(const Ctx& ctx) {
  ++ctx.stats->kernel_launches;
  CLARENA_CUDA_CHECK(cudaGetLastError());
}

// --- math overloads --------------------------------------------------------------------------
__device__ __forceinline__ float dexp(float x) {
  return expf(x);
}
__device__ __forceinline__ double dexp(double x) {
  return exp(x);
}
__device__ __forceinline__ float dlog(float x) {
  return logf(x);
}
__device__ __forceinline__ double dlog(double x) {
  return log(x);
}
__device__ __forceinline__ float dtanh(float x) {
  return tanhf(x);
}
__device__ __forceinline__ double dtanh(double x) {
  return tanh(x);
}
__device__ __forceinline__ float dsqrt(float x) {
  return sqrtf(x);
}
__device__ __forceinline__ double dsqrt(double x) {
  return sqrt(x);
}
template <typename T>
__device__ __forceinline__ T neg_inf() {
  return -static_cast<T>(INFINITY);
}
template <typename T>
__device__ __forceinline__ bool dfinite(T x) {
  return isfinite(x);
}

// --- reductions ------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

/// Sum over the whole block, returned to every thread. blockDim.x must be a multiple of 32;
/// smem holds 32 values. Safe to call repeatedly (it syncs before reusing smem).
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  v = lane < nwarps ? smem[lane] : T(0);
  return warp_sum(v);
}

/// Sum over a row group: one warp (kBlockRow false) or the whole block (kBlockRow true).
template <bool kBlockRow, typename T>
__device__ __forceinline__ T group_sum(T v, T* smem) {
  if constexpr (kBlockRow) {
    return block_sum(v, smem);
  } else {
    return warp_sum(v);
  }
}

/// Geometry of the row-group kernels: a row is handled by one warp when it is short and by a
/// whole block when it is long. Threads of a group stride over the row's columns.
struct RowGroup {
  static constexpr int kWarpBlock = 256;  // 8 rows per block in warp mode
  static constexpr int kRowBlock = 512;   // 1 row per block in block mode
  static constexpr int64_t kWarpMaxCols = 1024;
};

/// Row index, stride and lane for the calling thread in a row-group kernel.
template <bool kBlockRow>
struct RowIter {
  int64_t first, stride;
  int lane, width;
  __device__ __forceinline__ RowIter() {
    if constexpr (kBlockRow) {
      first = blockIdx.x;
      stride = gridDim.x;
      lane = threadIdx.x;
      width = blockDim.x;
    } else {
      const int per_block = blockDim.x >> 5;
      first = static_cast<int64_t>(blockIdx.x) * per_block + (threadIdx.x >> 5);
      stride = static_cast<int64_t>(gridDim.x) * per_block;
      lane = threadIdx.x & 31;
      width = 32;
    }
  }
};

/// Launches kernel<kBlockRow> over `rows` row groups with the geometry chosen from `cols`.
/// `launch` is called as launch(std::bool_constant<B>{}, grid, block).
template <typename Launch>
void launch_rows(const Ctx& ctx, int64_t rows, int64_t cols, Launch&& launch) {
  if (cols > RowGroup::kWarpMaxCols) {
    const unsigned grid = static_cast<unsigned>(
        std::max<int64_t>(1, std::min<int64_t>(rows, int64_t{ctx.sm_count} * 16)));
    launch(std::true_type{}, grid, RowGroup::kRowBlock);
  } else {
    const int64_t per_block = RowGroup::kWarpBlock / 32;
    const unsigned grid = static_cast<unsigned>(std::max<int64_t>(
        1, std::min<int64_t>((rows + per_block - 1) / per_block, int64_t{ctx.sm_count} * 32)));
    launch(std::false_type{}, grid, RowGroup::kWarpBlock);
  }
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
