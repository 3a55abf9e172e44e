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
#include "clarena/base/errors.h"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {

constexpr int kBlock = 256;  // threads per block of the flat element-wise kernels

// Every kernel states its largest block in __launch_bounds__, so the compiler never gives a
// thread more registers than that block size allows (a launch would otherwise fail with "too
// many resources requested" on some cards).
#define CLARENA_BOUNDS(threads) __launch_bounds__(threads)

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

// --- 16-byte vector access (llm.c's Packed128) ---------------------------------------------

/// kVec<T> elements of T in 16 bytes: one 128-bit load or store (LDG.128 / STG.128).
template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));

template <typename T>
struct alignas(16) Packed {
  T v[kVec<T>];
};

/// p must be 16-byte aligned (checked on the host by `aligned16`).
template <typename T>
__device__ __forceinline__ Packed<T> load_packed(const T* p) {
  Packed<T> r;
  *reinterpret_cast<int4*>(r.v) = *reinterpret_cast<const int4*>(p);
  return r;
}
template <typename T>
__device__ __forceinline__ void store_packed(T* p, const Packed<T>& x) {
  *reinterpret_cast<int4*>(p) = *reinterpret_cast<const int4*>(x.v);
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}
template <typename... P>
bool all_aligned16(const P*... p) {
  return (aligned16(p) && ...);
}

// --- integer division by a divisor fixed at launch ---------------------------------------------

/// q = n / d and n % d for 32-bit n < 2^31 with one multiply-high and a shift (the magic number
/// of Granlund and Montgomery, as PyTorch's IntDivider): 64-bit division is ~70 instructions on
/// the GPU, enough to make a memory-bound kernel compute-bound.
struct Div32 {
  uint32_t d = 1, m = 0, shift = 0;
  Div32() = default;
  explicit Div32(uint32_t divisor) : d(divisor) {
    while (shift < 32 && (uint64_t{1} << shift) < d)
      ++shift;
    const uint64_t one = 1;
    m = static_cast<uint32_t>(((one << 32) * ((one << shift) - d)) / d + 1);
  }
  __device__ __forceinline__ uint32_t div(uint32_t n) const {
    return (__umulhi(n, m) + n) >> shift;
  }
  __device__ __forceinline__ uint32_t mod(uint32_t n) const { return n - div(n) * d; }
};

/// Plain 64-bit division, for tensors of 2^31 elements or more.
struct Div64 {
  uint64_t d = 1;
  Div64() = default;
  explicit Div64(uint64_t divisor) : d(divisor) {}
  __device__ __forceinline__ uint64_t div(uint64_t n) const { return n / d; }
  __device__ __forceinline__ uint64_t mod(uint64_t n) const { return n % d; }
};

/// Largest element count for which the 32-bit index kernels are used.
constexpr int64_t kMax32 = (int64_t{1} << 31) - 1;

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
template <typename T>
__device__ __forceinline__ bool dnan(T x) {
  return x != x;
}
/// torch.relu (clamp_min(x, 0)): NaN stays NaN, -0 stays -0; only x < 0 becomes 0.
template <typename T>
__device__ __forceinline__ T relu_value(T x) {
  return x < T(0) ? T(0) : x;
}
/// torch's threshold_backward(dy, y, 0) on the forward's output: a NaN output passes dy.
template <typename T>
__device__ __forceinline__ T relu_grad(T y, T dy) {
  return y <= T(0) ? T(0) : dy;
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
