// Softmax family over the rows of [rows, cols]: log_softmax forward/backward and the fused,
// numerically stable cross-entropy forward/backward.
//
// Each row is handled by a warp (cols <= 1024) or a block (longer rows). The row's max and
// sum-of-exponentials are computed in one pass over the logits with the online rescaling
// (m, s) -> (max(m, x), s * exp(m - max) + exp(x - max)), then merged across threads.
//
// Cross-entropy forward reads the logits once, writes lse[r] per row, and a second tiny kernel
// (one block) reduces mean_r(lse[r] - x[r, label[r]]) into loss[0] on the device in a fixed order
// (deterministic, no host sync). The backward is one pass: dx = g/rows * (exp(x - lse) - onehot).
//
// Labels outside [0, cols) are not checked on the host (that would need a sync): the kernels
// record the first bad (row, label) in a device record and raise a mapped host flag; the backend
// throws ValueError at its next synchronizing host read (copy_to_host, count_equal,
// synchronize). Rows with a bad label contribute NaN to the loss and no one-hot to the gradient.
#include "common.cuh"

namespace clarena::kernels::cuda {
namespace {

template <typename T>
struct MaxSum {
  T m, s;
};

template <typename T>
__device__ __forceinline__ MaxSum<T> merge(MaxSum<T> a, MaxSum<T> b) {
  if (!(a.m == a.m)) return a;  // NaN propagates
  if (!(b.m == b.m)) return b;
  const T m = a.m > b.m ? a.m : b.m;
  if (m == neg_inf<T>()) return {m, T(0)};
  return {m, a.s * dexp(a.m - m) + b.s * dexp(b.m - m)};
}

template <typename T>
__device__ __forceinline__ MaxSum<T> warp_merge(MaxSum<T> v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    MaxSum<T> o{__shfl_xor_sync(0xffffffffu, v.m, off), __shfl_xor_sync(0xffffffffu, v.s, off)};
    v = merge(v, o);
  }
  return v;
}

/// Row logsumexp over the group's strided elements, returned to every thread of the group.
template <bool kBlockRow, typename T>
__device__ __forceinline__ T row_lse(const T* __restrict__ xr, int64_t cols, int lane, int width,
                                     T* smem_m, T* smem_s) {
  MaxSum<T> v{neg_inf<T>(), T(0)};
  for (int64_t c = lane; c < cols; c += width) {
    const T x = xr[c];
    if (x > v.m) {
      v.s = v.s * dexp(v.m - x) + T(1);
      v.m = x;
    } else if (v.m != neg_inf<T>() || !(x == x)) {
      v.s += dexp(x - v.m);  // NaN x (or NaN m) makes s NaN
      if (!(x == x)) v.m = x;
    }
  }
  v = warp_merge(v);
  if constexpr (kBlockRow) {
    const int l = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (l == 0) {
      smem_m[w] = v.m;
      smem_s[w] = v.s;
    }
    __syncthreads();
    v = l < nw ? MaxSum<T>{smem_m[l], smem_s[l]} : MaxSum<T>{neg_inf<T>(), T(0)};
    v = warp_merge(v);
  }
  // Like the CPU: a row whose max is +-inf or NaN gets that max as its logsumexp.
  return dfinite(v.m) ? v.m + dlog(v.s) : v.m;
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

template <bool kBlockRow, typename T>
__global__ void log_softmax_fwd_kernel(int64_t rows, int64_t cols, const T* __restrict__ x,
                                       T* __restrict__ y) {
  __shared__ T smem_m[32], smem_s[32];
  const RowIter<kBlockRow> it;
  for (int64_t r = it.first; r < rows; r += it.stride) {
    const T* xr = x + r * cols;
    const T lse = row_lse<kBlockRow>(xr, cols, it.lane, it.width, smem_m, smem_s);
    T* yr = y + r * cols;
    for (int64_t c = it.lane; c < cols; c += it.width)
      yr[c] = xr[c] - lse;
  }
}

template <bool kBlockRow, typename T>
__global__ void log_softmax_bwd_kernel(int64_t rows, int64_t cols, const T* __restrict__ y,
                                       const T* __restrict__ dy, T* __restrict__ dx) {
  __shared__ T smem[32];
  const RowIter<kBlockRow> it;
  for (int64_t r = it.first; r < rows; r += it.stride) {
    const T* dyr = dy + r * cols;
    T s = T(0);
    for (int64_t c = it.lane; c < cols; c += it.width)
      s += dyr[c];
    s = group_sum<kBlockRow>(s, smem);
    const T* yr = y + r * cols;
    T* dxr = dx + r * cols;
    for (int64_t c = it.lane; c < cols; c += it.width)
      dxr[c] = dyr[c] - dexp(yr[c]) * s;
  }
}

template <bool kBlockRow, typename T>
__global__ void xent_fwd_kernel(int64_t rows, int64_t cols, const T* __restrict__ x,
                                const int64_t* __restrict__ labels, T* __restrict__ lse,
                                LabelCheck check) {
  __shared__ T smem_m[32], smem_s[32];
  const RowIter<kBlockRow> it;
  for (int64_t r = it.first; r < rows; r += it.stride) {
    const T v = row_lse<kBlockRow>(x + r * cols, cols, it.lane, it.width, smem_m, smem_s);
    if (it.lane == 0) {
      lse[r] = v;
      const int64_t label = labels[r];
      if (label < 0 || label >= cols) report_bad_label(check, r, label, cols);
    }
  }
}

/// loss[0] = mean_r(lse[r] - x[r, label[r]]), one block, fixed order, accumulated in double.
template <typename T>
__global__ void xent_mean_kernel(int64_t rows, int64_t cols, const T* __restrict__ x,
                                 const int64_t* __restrict__ labels, const T* __restrict__ lse,
                                 T* __restrict__ loss) {
  __shared__ double smem[32];
  double acc = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const int64_t label = labels[r];
    acc += (label >= 0 && label < cols) ? static_cast<double>(lse[r] - x[r * cols + label])
                                        : static_cast<double>(NAN);
  }
  acc = block_sum(acc, smem);
  if (threadIdx.x == 0) loss[0] = static_cast<T>(acc / static_cast<double>(rows));
}

template <typename T>
__global__ void xent_bwd_kernel(int64_t rows, int64_t cols, const T* __restrict__ x,
                                const int64_t* __restrict__ labels, const T* __restrict__ lse,
                                const T* __restrict__ grad_loss, T* __restrict__ dx,
                                LabelCheck check) {
  const T scale = grad_loss[0] / static_cast<T>(rows);
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t label = labels[r];
    const bool bad = label < 0 || label >= cols;
    const T l = lse[r];
    const T* xr = x + r * cols;
    T* dr = dx + r * cols;
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < cols;
         c += int64_t{gridDim.x} * blockDim.x) {
      const T p = scale * dexp(xr[c] - l);
      dr[c] = c == label ? p - scale : p;
      if (bad && c == 0) report_bad_label(check, r, label, cols);
    }
  }
}

}  // namespace

void log_softmax_forward(const Ctx& ctx, DType t, int64_t rows, int64_t cols, const void* x,
                         void* y) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, "log_softmax", [&]<typename T>(T*) {
    launch_rows(ctx, rows, cols, [&](auto block_row, unsigned grid, int block) {
      constexpr bool kB = decltype(block_row)::value;
      log_softmax_fwd_kernel<kB, T><<<grid, block, 0, ctx.stream>>>(
          rows, cols, static_cast<const T*>(x), static_cast<T*>(y));
    });
  });
}

void log_softmax_backward(const Ctx& ctx, DType t, int64_t rows, int64_t cols, const void* y,
                          const void* dy, void* dx) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, "log_softmax_backward", [&]<typename T>(T*) {
    launch_rows(ctx, rows, cols, [&](auto block_row, unsigned grid, int block) {
      constexpr bool kB = decltype(block_row)::value;
      log_softmax_bwd_kernel<kB, T><<<grid, block, 0, ctx.stream>>>(
          rows, cols, static_cast<const T*>(y), static_cast<const T*>(dy), static_cast<T*>(dx));
    });
  });
}

void cross_entropy_forward(const Ctx& ctx, DType t, int64_t rows, int64_t cols, const void* logits,
                           const int64_t* labels, void* lse, void* loss) {
  if (rows <= 0) return;
  if (cols <= 0) throw ValueError("cross_entropy (cuda): no classes (cols == 0)");
  dispatch_float(t, "cross_entropy", [&]<typename T>(T*) {
    const T* x = static_cast<const T*>(logits);
    launch_rows(ctx, rows, cols, [&](auto block_row, unsigned grid, int block) {
      constexpr bool kB = decltype(block_row)::value;
      xent_fwd_kernel<kB, T>
          <<<grid, block, 0, ctx.stream>>>(rows, cols, x, labels, static_cast<T*>(lse), ctx.labels);
    });
    const int threads =
        static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, (rows + 31) / 32 * 32)));
    xent_mean_kernel<T><<<1, threads, 0, ctx.stream>>>(
        rows, cols, x, labels, static_cast<const T*>(lse), static_cast<T*>(loss));
    after_launch(ctx);
  });
}

void cross_entropy_backward(const Ctx& ctx, DType t, int64_t rows, int64_t cols, const void* logits,
                            const int64_t* labels, const void* lse, const void* grad_loss,
                            void* dlogits) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, "cross_entropy_backward", [&]<typename T>(T*) {
    const int64_t gx = std::max<int64_t>(
        1, std::min<int64_t>((cols + kBlock - 1) / kBlock, int64_t{ctx.sm_count} * 32));
    const int64_t gy = std::max<int64_t>(
        1, std::min<int64_t>({rows, std::max<int64_t>(1, int64_t{ctx.sm_count} * 32 / gx), 65535}));
    xent_bwd_kernel<T>
        <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), kBlock, 0, ctx.stream>>>(
            rows, cols, static_cast<const T*>(logits), labels, static_cast<const T*>(lse),
            static_cast<const T*>(grad_loss), static_cast<T*>(dlogits), ctx.labels);
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
