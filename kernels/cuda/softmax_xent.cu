// Softmax family over the rows of [rows, cols]: log_softmax forward/backward and the fused,
// numerically stable cross-entropy forward/backward.
//
// Each row is handled by a warp (cols <= 1024) or a block (longer rows). The arithmetic mirrors
// the CPU backend (kernels/cpu/softmax_xent.cpp) step by step:
//   max      the row's maximum, NaN winning (so a NaN row stays NaN);
//   sum      sum of exp(x - max) with each exponential in the element type and the sum in
//            double (the max's term is exactly 1, and log(sum) ~ sum - 1 lives in the digits a
//            float sum would round off);
//   a row whose max is not finite (+inf, NaN, or every entry -inf) is NaN throughout: its
//            log_softmax, logsumexp, loss term and gradient, as PyTorch's log_softmax makes it.
// Results are formed as (x - max) - log(sum), never x - (max + log(sum)) rounded to float
// first: that rounding costs half an ulp of the max, the whole answer when the loss is near 0.
//
// Cross-entropy forward: one kernel writes lse[r] = T(max + log(sum)) and each row's loss
// (max - x[label]) + log(sum) in double to scratch; a second kernel (one block) takes their
// mean in a fixed order into loss[0]: deterministic, no host sync. rows == 0 writes NaN (the
// mean over nothing), as the CPU does. The backward recomputes max and sum from the logits (lse
// rounded to float would carry half an ulp of the max into every probability) and writes
// dx = g/rows * exp(x - max)/sum, the label's entry as -g/rows * (sum - e_label)/sum in double
// so it keeps its digits when p is close to 1.
//
// Labels outside [0, cols) are not checked on the host (that would need a sync): the kernels
// record the first bad (row, label) in a device record and raise a mapped host flag; the backend
// throws ValueError at its next synchronizing host read (copy_to_host, count_equal,
// synchronize). Rows with a bad label contribute NaN to the loss and no one-hot to the gradient.
#include <limits>

#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {
namespace {

struct MaxNanOp {  // NaN wins, as the CPU's row_max
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return (b > a || dnan(b)) ? b : a;
  }
};
struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
    v = op(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

/// Reduces over the row group (a warp, or the block), returned to every thread of the group.
/// smem holds 32 values; safe to call repeatedly.
template <bool kBlockRow, typename T, typename Op>
__device__ __forceinline__ T group_reduce(T v, T* smem, Op op, T identity) {
  v = warp_reduce(v, op);
  if constexpr (kBlockRow) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    v = warp_reduce(lane < nwarps ? smem[lane] : identity, op);
  }
  return v;
}

/// A row's max and sum(exp(x - max)) (in double); `sum` is NaN when max is not finite.
template <typename T>
struct RowStats {
  T max;
  double sum;
  __device__ __forceinline__ bool finite() const { return dfinite(max); }
};

template <bool kBlockRow, typename T>
__device__ __forceinline__ RowStats<T> row_stats(const T* __restrict__ xr, int64_t cols, int lane,
                                                 int width, T* smem_t, double* smem_d) {
  T mx = neg_inf<T>();
  for (int64_t c = lane; c < cols; c += width)
    mx = MaxNanOp{}(mx, xr[c]);
  mx = group_reduce<kBlockRow>(mx, smem_t, MaxNanOp{}, neg_inf<T>());
  if (!dfinite(mx)) return {mx, static_cast<double>(NAN)};  // uniform across the group
  double a0 = 0, a1 = 0;
  int64_t c = lane;
  for (; c + width < cols; c += 2 * width) {
    a0 += static_cast<double>(dexp(static_cast<T>(xr[c] - mx)));
    a1 += static_cast<double>(dexp(static_cast<T>(xr[c + width] - mx)));
  }
  if (c < cols) a0 += static_cast<double>(dexp(static_cast<T>(xr[c] - mx)));
  const double s = group_reduce<kBlockRow>(a0 + a1, smem_d, SumOp{}, 0.0);
  return {mx, s};
}

__device__ __forceinline__ void report_bad_label(LabelCheck check, int64_t row, int64_t label,
                                                 int64_t cols) {
  if (atomicCAS(&check.record->flag, 0u, 1u) == 0u) {
    check.record->row = row;
    check.record->label = label;
    check.record->cols = cols;
  }
  *reinterpret_cast<volatile int*>(check.host_flag) = 1;
}

#define CLARENA_ROW_BOUNDS CLARENA_BOUNDS(kBlockRow ? RowGroup::kRowBlock : RowGroup::kWarpBlock)

template <bool kBlockRow, typename T>
__global__ void CLARENA_ROW_BOUNDS log_softmax_fwd_kernel(int64_t rows, int64_t cols,
                                                          const T* __restrict__ x,
                                                          T* __restrict__ y) {
  __shared__ T smem_t[32];
  __shared__ double smem_d[32];
  const RowIter<kBlockRow> it;
  for (int64_t r = it.first; r < rows; r += it.stride) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    const RowStats<T> s = row_stats<kBlockRow>(xr, cols, it.lane, it.width, smem_t, smem_d);
    if (!s.finite()) {
      for (int64_t c = it.lane; c < cols; c += it.width)
        yr[c] = static_cast<T>(NAN);
      continue;
    }
    const T log_sum = static_cast<T>(log(s.sum));
    for (int64_t c = it.lane; c < cols; c += it.width)
      yr[c] = (xr[c] - s.max) - log_sum;
  }
}

template <bool kBlockRow, typename T>
__global__ void CLARENA_ROW_BOUNDS log_softmax_bwd_kernel(int64_t rows, int64_t cols,
                                                          const T* __restrict__ y,
                                                          const T* __restrict__ dy,
                                                          T* __restrict__ dx) {
  __shared__ double smem[32];
  const RowIter<kBlockRow> it;
  for (int64_t r = it.first; r < rows; r += it.stride) {
    const T* dyr = dy + r * cols;
    double a = 0;
    for (int64_t c = it.lane; c < cols; c += it.width)
      a += static_cast<double>(dyr[c]);
    const T s = static_cast<T>(group_reduce<kBlockRow>(a, smem, SumOp{}, 0.0));
    const T* yr = y + r * cols;
    T* dxr = dx + r * cols;
    for (int64_t c = it.lane; c < cols; c += it.width)
      dxr[c] = dyr[c] - dexp(yr[c]) * s;
  }
}

/// lse[r] and row_loss[r] (double) for every row.
template <bool kBlockRow, typename T>
__global__ void CLARENA_ROW_BOUNDS xent_fwd_kernel(
    int64_t rows, int64_t cols, const T* __restrict__ x, const int64_t* __restrict__ labels,
    T* __restrict__ lse, double* __restrict__ row_loss, LabelCheck check) {
  __shared__ T smem_t[32];
  __shared__ double smem_d[32];
  const RowIter<kBlockRow> it;
  for (int64_t r = it.first; r < rows; r += it.stride) {
    const T* xr = x + r * cols;
    const RowStats<T> s = row_stats<kBlockRow>(xr, cols, it.lane, it.width, smem_t, smem_d);
    if (it.lane == 0) {
      const int64_t label = labels[r];
      const bool bad = label < 0 || label >= cols;
      if (bad) report_bad_label(check, r, label, cols);
      if (!s.finite()) {
        lse[r] = static_cast<T>(NAN);
        row_loss[r] = static_cast<double>(NAN);
      } else {
        const double log_sum = log(s.sum);
        lse[r] = static_cast<T>(static_cast<double>(s.max) + log_sum);
        row_loss[r] = bad ? static_cast<double>(NAN)
                          : (static_cast<double>(s.max) - static_cast<double>(xr[label])) + log_sum;
      }
    }
  }
}

constexpr int kMeanBlock = 1024;

/// loss[0] = T(sum_r v[r] / rows): one block, each thread a fixed strided subset with two
/// accumulators, then a fixed tree. rows == 0 gives NaN.
template <typename T>
__global__ void CLARENA_BOUNDS(kMeanBlock)
    mean_kernel(int64_t rows, const double* __restrict__ v, T* __restrict__ loss) {
  __shared__ double smem[32];
  double a0 = 0, a1 = 0;
  int64_t r = threadIdx.x;
  for (; r + kMeanBlock < rows; r += 2 * kMeanBlock) {
    a0 += v[r];
    a1 += v[r + kMeanBlock];
  }
  if (r < rows) a0 += v[r];
  const double total = block_sum(a0 + a1, smem);
  if (threadIdx.x == 0) loss[0] = static_cast<T>(total / static_cast<double>(rows));
}

template <bool kBlockRow, typename T>
__global__ void CLARENA_ROW_BOUNDS xent_bwd_kernel(int64_t rows, int64_t cols,
                                                   const T* __restrict__ x,
                                                   const int64_t* __restrict__ labels,
                                                   const T* __restrict__ grad_loss,
                                                   T* __restrict__ dx, LabelCheck check) {
  __shared__ T smem_t[32];
  __shared__ double smem_d[32];
  const RowIter<kBlockRow> it;
  const double scale = static_cast<double>(grad_loss[0]) / static_cast<double>(rows);
  for (int64_t r = it.first; r < rows; r += it.stride) {
    const T* xr = x + r * cols;
    T* dr = dx + r * cols;
    const RowStats<T> s = row_stats<kBlockRow>(xr, cols, it.lane, it.width, smem_t, smem_d);
    if (!s.finite()) {
      for (int64_t c = it.lane; c < cols; c += it.width)
        dr[c] = static_cast<T>(NAN);
      continue;
    }
    const int64_t label = labels[r];
    const bool bad = label < 0 || label >= cols;
    if (bad && it.lane == 0) report_bad_label(check, r, label, cols);
    const T k = static_cast<T>(scale / s.sum);
    for (int64_t c = it.lane; c < cols; c += it.width) {
      const T e = dexp(static_cast<T>(xr[c] - s.max));
      dr[c] =
          c == label ? static_cast<T>(-scale * ((s.sum - static_cast<double>(e)) / s.sum)) : e * k;
    }
  }
}

}  // namespace

void CudaBackend::log_softmax_forward(DType t, int64_t rows, int64_t cols, const void* x, void* y) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, "log_softmax", [&]<typename T>(T*) {
    launch_rows(ctx, rows, cols, [&](auto block_row, unsigned grid, int block) {
      constexpr bool kB = decltype(block_row)::value;
      log_softmax_fwd_kernel<kB, T><<<grid, block, 0, ctx.stream>>>(
          rows, cols, static_cast<const T*>(x), static_cast<T*>(y));
    });
  });
}

void CudaBackend::log_softmax_backward(DType t, int64_t rows, int64_t cols, const void* y,
                                       const void* dy, void* dx) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, "log_softmax_backward", [&]<typename T>(T*) {
    launch_rows(ctx, rows, cols, [&](auto block_row, unsigned grid, int block) {
      constexpr bool kB = decltype(block_row)::value;
      log_softmax_bwd_kernel<kB, T><<<grid, block, 0, ctx.stream>>>(
          rows, cols, static_cast<const T*>(y), static_cast<const T*>(dy), static_cast<T*>(dx));
    });
  });
}

void CudaBackend::cross_entropy_forward(DType t, int64_t rows, int64_t cols, const void* logits,
                                        const int64_t* labels, void* lse, void* loss) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (rows <= 0) {  // the mean over an empty batch: NaN, as the CPU writes
    dispatch_float(t, "cross_entropy", [&]<typename T>(T*) {});
    fill_on_stream(ctx, t, 1, std::numeric_limits<double>::quiet_NaN(), loss);
    return;
  }
  if (cols <= 0) throw ValueError("cross_entropy (cuda): no classes (cols == 0)");
  dispatch_float(t, "cross_entropy", [&]<typename T>(T*) {
    const T* x = static_cast<const T*>(logits);
    auto* row_loss = static_cast<double*>(ctx.scratch->get(sizeof(double) * rows));
    launch_rows(ctx, rows, cols, [&](auto block_row, unsigned grid, int block) {
      constexpr bool kB = decltype(block_row)::value;
      xent_fwd_kernel<kB, T><<<grid, block, 0, ctx.stream>>>(
          rows, cols, x, labels, static_cast<T*>(lse), row_loss, ctx.labels);
    });
    mean_kernel<T><<<1, kMeanBlock, 0, ctx.stream>>>(rows, row_loss, static_cast<T*>(loss));
    after_launch(ctx);
  });
}

void CudaBackend::cross_entropy_backward(DType t, int64_t rows, int64_t cols, const void* logits,
                                         const int64_t* labels, const void* /*lse*/,
                                         const void* grad_loss, void* dlogits) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, "cross_entropy_backward", [&]<typename T>(T*) {
    launch_rows(ctx, rows, cols, [&](auto block_row, unsigned grid, int block) {
      constexpr bool kB = decltype(block_row)::value;
      xent_bwd_kernel<kB, T><<<grid, block, 0, ctx.stream>>>(
          rows, cols, static_cast<const T*>(logits), labels, static_cast<const T*>(grad_loss),
          static_cast<T*>(dlogits), ctx.labels);
    });
  });
}

}  // namespace clarena::kernels::cuda
