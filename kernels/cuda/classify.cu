// Classification helpers: argmax along the middle axis of [outer, reduce, inner], element-wise
// equality (0/1 int64) and the count of equal int64 pairs (for accuracy).
//
// argmax follows PyTorch: NaN is the maximum (the first NaN wins), and of equal maxima the first
// index wins. inner == 1 (the [batch, classes] case) gives each row to a warp or a block: each
// thread scans its strided elements, then the candidates are merged by `better`, which is
// symmetric (it compares values under that policy, then indices), so the merge order cannot
// change the answer. With inner > 1 one thread walks the reduced axis for each (o, i), reads
// coalesced across i.
#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {
namespace {

constexpr int64_t kNone = INT64_MAX;  // no candidate yet

template <typename T>
struct ValIdx {
  T v;
  int64_t i;
};

/// The better of two candidates: a real one over none; NaN over a number; the larger value; of
/// equal values (or two NaNs) the smaller index.
template <typename T>
__device__ __forceinline__ ValIdx<T> better(ValIdx<T> a, ValIdx<T> b) {
  if (a.i == kNone) return b;
  if (b.i == kNone) return a;
  const bool an = dnan(a.v), bn = dnan(b.v);
  if (an != bn) return an ? a : b;
  if (!an && a.v != b.v) return a.v > b.v ? a : b;
  return a.i <= b.i ? a : b;
}

template <typename T>
__device__ __forceinline__ ValIdx<T> warp_argmax(ValIdx<T> x) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    ValIdx<T> o{
        __shfl_xor_sync(0xffffffffu, x.v, off),
        static_cast<int64_t>(__shfl_xor_sync(0xffffffffu, static_cast<long long>(x.i), off))};
    x = better(x, o);
  }
  return x;
}

template <bool kBlockRow, typename T>
__global__ void CLARENA_BOUNDS(kBlockRow ? RowGroup::kRowBlock : RowGroup::kWarpBlock)
    argmax_rows_kernel(int64_t rows, int64_t cols, const T* __restrict__ x,
                       int64_t* __restrict__ out) {
  __shared__ T smem_v[32];
  __shared__ int64_t smem_i[32];
  const RowIter<kBlockRow> it;
  for (int64_t r = it.first; r < rows; r += it.stride) {
    const T* xr = x + r * cols;
    ValIdx<T> best{neg_inf<T>(), kNone};
    for (int64_t c = it.lane; c < cols; c += it.width)
      best = better(best, ValIdx<T>{xr[c], c});  // increasing c: ties keep the earlier index
    best = warp_argmax(best);
    if constexpr (kBlockRow) {
      const int l = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
      __syncthreads();
      if (l == 0) {
        smem_v[w] = best.v;
        smem_i[w] = best.i;
      }
      __syncthreads();
      best = l < nw ? ValIdx<T>{smem_v[l], smem_i[l]} : ValIdx<T>{neg_inf<T>(), kNone};
      best = warp_argmax(best);
    }
    if (it.lane == 0) out[r] = best.i;
  }
}

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    argmax_strided_kernel(int64_t outer, int64_t reduce, int64_t inner, const T* __restrict__ x,
                          int64_t* __restrict__ out) {
  const int64_t n = outer * inner;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n;
       k += int64_t{gridDim.x} * blockDim.x) {
    const int64_t o = k / inner, i = k - o * inner;
    const T* base = x + o * reduce * inner + i;
    int64_t best = 0;
    T bv = base[0];
    for (int64_t r = 1; r < reduce && !dnan(bv); ++r) {  // the first NaN is final
      const T v = base[r * inner];
      if (v > bv || dnan(v)) {
        bv = v;
        best = r;
      }
    }
    out[k] = best;
  }
}

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    equal_kernel(int64_t n, const T* __restrict__ a, const T* __restrict__ b,
                 int64_t* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = a[i] == b[i] ? 1 : 0;
}

__global__ void CLARENA_BOUNDS(kBlock)
    count_equal_kernel(int64_t n, const int64_t* __restrict__ a, const int64_t* __restrict__ b,
                       unsigned long long* __restrict__ counter) {
  __shared__ unsigned long long smem[32];
  unsigned long long c = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    c += a[i] == b[i] ? 1ull : 0ull;
  c = block_sum(c, smem);
  if (threadIdx.x == 0 && c != 0) atomicAdd(counter, c);  // integer sums: order-independent
}

}  // namespace

void CudaBackend::argmax(DType t, int64_t outer, int64_t reduce, int64_t inner, const void* x,
                         int64_t* out) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (outer <= 0 || inner <= 0) return;
  if (reduce <= 0) throw ValueError("argmax (cuda): the reduced axis is empty");
  dispatch_float(t, "argmax", [&]<typename T>(T*) {
    const T* tx = static_cast<const T*>(x);
    if (inner == 1) {
      launch_rows(ctx, outer, reduce, [&](auto block_row, unsigned grid, int block) {
        constexpr bool kB = decltype(block_row)::value;
        argmax_rows_kernel<kB, T><<<grid, block, 0, ctx.stream>>>(outer, reduce, tx, out);
      });
    } else {
      const int64_t n = outer * inner;
      argmax_strided_kernel<T>
          <<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(outer, reduce, inner, tx, out);
      after_launch(ctx);
    }
  });
}

void CudaBackend::equal(DType t, int64_t n, const void* a, const void* b, int64_t* out) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (n <= 0) return;
  dispatch_all(t, "equal", [&]<typename T>(T*) {
    equal_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, static_cast<const T*>(a),
                                                                 static_cast<const T*>(b), out);
  });
  after_launch(ctx);
}

int64_t CudaBackend::count_equal(int64_t n, const int64_t* a, const int64_t* b) {
  ++stats_.host_waits;
  Lock lock(*this);  // held through the wait: counter_host_ is shared
  const Ctx& ctx = ctx_;
  // The count goes to counter_dev_ (zeroed first), then to the pinned counter_host_.
  CLARENA_CUDA_CHECK(cudaMemsetAsync(counter_dev_, 0, sizeof(unsigned long long), ctx.stream));
  if (n > 0) {
    count_equal_kernel<<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, a, b, counter_dev_);
    after_launch(ctx);
  }
  CLARENA_CUDA_CHECK(cudaMemcpyAsync(counter_host_, counter_dev_, sizeof(unsigned long long),
                                     cudaMemcpyDeviceToHost, stream_));
  CLARENA_CUDA_CHECK(cudaStreamSynchronize(stream_));
  raise_label_error();
  return static_cast<int64_t>(*counter_host_);
}

}  // namespace clarena::kernels::cuda
