// Batch norm per column of [rows, cols, inner]: BatchNorm1d ([B, C], inner 1) and BatchNorm2d
// ([N, C, H·W]).
//
// The arithmetic is the CPU's (kernels/cpu/batchnorm.cpp): statistics, normalisation and the
// gradient sums in double, rounded to the element type only when stored, so a column with a large
// mean and a tiny variance (x = 1000 + 1e-3 * noise) keeps its digits.
//
// Training forward and backward are split over rows as well as columns, so a 256-wide layer
// still fills the card: pass 1 gives each block 32 consecutive columns (coalesced reads along a
// row) and one chunk of rows, 16 thread rows striding over the chunk; it writes per-chunk partial
// sums in double to scratch. Pass 2 (one thread per column) adds the chunks' partials in chunk
// order and writes the per-column results. Pass 3 is a flat element-wise kernel over [rows,
// cols] that writes y (or dx). Chunking depends on the shape and the card's SM count only, and
// every sum is taken in a fixed order, so results are bitwise the same run to run.
//
// Forward statistics in one pass: sums of d = x - K and d^2, with K the column's first element
// (the shifted-data algorithm): K lies within the column's range, so d is small when the spread is
// small and mean = K + S1/n, var = (S2 - S1^2/n)/n lose nothing to cancellation in double.
//
// With inner > 1 (images) pass 1 is a planar kernel instead: each block takes one column
// (channel) and one chunk of its rows·inner values, read contiguously along H·W, and reduces
// them with block_sum (a fixed order). Passes 2 and 3 are shared; inner = 1 runs exactly the
// 2-D kernels.
//
// gamma and beta may be null (treated as 1 and 0); running_mean/var may be null (not tracked).
#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {
namespace {

constexpr int kTx = 32, kTy = 16;

/// Sum over threadIdx.y of each column's value, in a fixed order, valid in thread row 0.
__device__ __forceinline__ double column_total(double v, double (*smem)[kTx + 1]) {
  const int tx = threadIdx.x, ty = threadIdx.y;
  __syncthreads();  // smem reuse
  smem[ty][tx] = v;
  __syncthreads();
  double s = 0;
  if (ty == 0) {
#pragma unroll
    for (int k = 0; k < kTy; ++k)
      s += smem[k][tx];
  }
  return s;
}

/// How the rows are cut into chunks for pass 1.
struct Chunks {
  int64_t chunk, count;
};

Chunks row_chunks(const Ctx& ctx, int64_t rows, int64_t cols) {
  const int64_t tiles = (cols + kTx - 1) / kTx;
  const int64_t want = int64_t{ctx.sm_count} * 4;
  int64_t z = (want + tiles - 1) / tiles;
  z = std::max<int64_t>(1, std::min<int64_t>({z, (rows + 63) / 64, 65535}));
  const int64_t chunk = (rows + z - 1) / z;
  return {chunk, (rows + chunk - 1) / chunk};
}

/// Blocks along the columns for pass 1: capped, the kernel strides over the rest.
unsigned column_tiles(const Ctx& ctx, int64_t cols) {
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>((cols + kTx - 1) / kTx, int64_t{ctx.sm_count} * 16)));
}

/// How the rows·inner values of a column are cut into chunks for the planar pass 1.
Chunks planar_chunks(const Ctx& ctx, int64_t count, int64_t cols) {
  const int64_t want = int64_t{ctx.sm_count} * 4;
  int64_t z = (want + cols - 1) / cols;
  z = std::max<int64_t>(1, std::min<int64_t>({z, (count + 1023) / 1024, 65535}));
  const int64_t chunk = (count + z - 1) / z;
  return {chunk, (count + chunk - 1) / chunk};
}

/// Element j of column c's rows·inner values (j = r * inner + i).
__device__ __forceinline__ int64_t planar_at(int64_t j, int64_t c, int64_t cols, int64_t inner) {
  const int64_t r = j / inner, i = j - r * inner;
  return (r * cols + c) * inner + i;
}

// --- training forward ----------------------------------------------------------------------

/// Pass 1: per chunk z and column c, partial[z][c] = (sum d, sum d^2) with d = x - x[0, c].
template <typename T>
__global__ void CLARENA_BOUNDS(kTx* kTy)
    bn_stats_kernel(int64_t rows, int64_t cols, int64_t chunk, const T* __restrict__ x,
                    double* __restrict__ s1, double* __restrict__ s2) {
  __shared__ double smem[kTy][kTx + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t z = blockIdx.y, begin = z * chunk, end = min(rows, begin + chunk);
  for (int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTx; c0 < cols;
       c0 += static_cast<int64_t>(gridDim.x) * kTx) {
    const int64_t c = c0 + tx;
    double a = 0, b = 0;
    if (c < cols) {
      const double k = static_cast<double>(x[c]);
      for (int64_t r = begin + ty; r < end; r += kTy) {
        const double d = static_cast<double>(x[r * cols + c]) - k;
        a += d;
        b += d * d;
      }
    }
    a = column_total(a, smem);
    b = column_total(b, smem);
    if (ty == 0 && c < cols) {
      s1[z * cols + c] = a;
      s2[z * cols + c] = b;
    }
  }
}

/// Planar pass 1 (inner > 1): block (c, z) sums d = x - x[0, c, 0] and d^2 over chunk z of
/// column c's values.
template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    bn_stats_planar_kernel(int64_t count, int64_t cols, int64_t inner, int64_t chunk,
                           const T* __restrict__ x, double* __restrict__ s1,
                           double* __restrict__ s2) {
  __shared__ double smem[32];
  const int64_t c = blockIdx.x, z = blockIdx.y, begin = z * chunk, end = min(count, begin + chunk);
  const double k = static_cast<double>(x[c * inner]);
  double a = 0, b = 0;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const double d = static_cast<double>(x[planar_at(j, c, cols, inner)]) - k;
    a += d;
    b += d * d;
  }
  a = block_sum(a, smem);
  b = block_sum(b, smem);
  if (threadIdx.x == 0) {
    s1[z * cols + c] = a;
    s2[z * cols + c] = b;
  }
}

/// Pass 2: one thread per column; keeps the double mean and invstd for pass 3. The column's
/// values number rows·inner; its first is x[c * inner].
template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    bn_finish_kernel(int64_t rows, int64_t inner, int64_t cols, int64_t chunks,
                     const T* __restrict__ x, const double* __restrict__ s1,
                     const double* __restrict__ s2, double eps, double momentum,
                     T* __restrict__ running_mean, T* __restrict__ running_var,
                     T* __restrict__ save_mean, T* __restrict__ save_invstd,
                     double* __restrict__ mean_d, double* __restrict__ invstd_d) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < cols;
       c += int64_t{gridDim.x} * blockDim.x) {
    double a = 0, b = 0;
    for (int64_t z = 0; z < chunks; ++z) {
      a += s1[z * cols + c];
      b += s2[z * cols + c];
    }
    const int64_t count = rows * inner;
    const double n = static_cast<double>(count);
    const double mean = static_cast<double>(x[c * inner]) + a / n;
    const double sq = fmax(0.0, b - a * a / n);  // sum of (x - mean)^2
    const double var = sq / n;
    const double invstd = 1.0 / sqrt(var + eps);
    save_mean[c] = static_cast<T>(mean);
    save_invstd[c] = static_cast<T>(invstd);
    mean_d[c] = mean;
    invstd_d[c] = invstd;
    const double unbiased = count > 1 ? sq / static_cast<double>(count - 1) : var;
    if (running_mean)
      running_mean[c] = static_cast<T>((1 - momentum) * running_mean[c] + momentum * mean);
    if (running_var)
      running_var[c] = static_cast<T>((1 - momentum) * running_var[c] + momentum * unbiased);
  }
}

/// Pass 3: y = (x - mean) * invstd * gamma + beta, in double, one element per thread step;
/// the column comes from the flat index through a multiply-high divider.
template <typename I, typename D, typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    bn_apply_kernel(I n, D cols, D inner, const T* __restrict__ x,
                    const double* __restrict__ mean_d, const double* __restrict__ invstd_d,
                    const T* __restrict__ gamma, const T* __restrict__ beta, T* __restrict__ y) {
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const I c = cols.mod(inner.div(i));
    const double g = gamma ? static_cast<double>(gamma[c]) : 1.0;
    const double b = beta ? static_cast<double>(beta[c]) : 0.0;
    y[i] = static_cast<T>((static_cast<double>(x[i]) - mean_d[c]) * invstd_d[c] * g + b);
  }
}

// --- eval ----------------------------------------------------------------------------------

/// As the CPU: invstd = T(1 / sqrt(double(var) + eps)), then ((x - mean) * invstd) * gamma +
/// beta in the element type.
template <typename I, typename D, typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    bn_eval_kernel(I n, D cols, D inner, const T* __restrict__ x, const T* __restrict__ gamma,
                   const T* __restrict__ beta, const T* __restrict__ running_mean,
                   const T* __restrict__ running_var, double eps, T* __restrict__ y) {
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const I c = cols.mod(inner.div(i));
    const T invstd = static_cast<T>(1.0 / sqrt(static_cast<double>(running_var[c]) + eps));
    const T g = gamma ? gamma[c] : T(1), b = beta ? beta[c] : T(0);
    y[i] = (x[i] - running_mean[c]) * invstd * g + b;
  }
}

// --- backward ------------------------------------------------------------------------------

/// Pass 1: per chunk, partial sums of dy and dy * xhat, xhat = (x - mean) * invstd formed in the
/// element type as the CPU does.
template <typename T>
__global__ void CLARENA_BOUNDS(kTx* kTy)
    bn_grad_sums_kernel(int64_t rows, int64_t cols, int64_t chunk, const T* __restrict__ x,
                        const T* __restrict__ mean, const T* __restrict__ invstd,
                        const T* __restrict__ dy, double* __restrict__ s_dy,
                        double* __restrict__ s_dyx) {
  __shared__ double smem[kTy][kTx + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t z = blockIdx.y, begin = z * chunk, end = min(rows, begin + chunk);
  for (int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTx; c0 < cols;
       c0 += static_cast<int64_t>(gridDim.x) * kTx) {
    const int64_t c = c0 + tx;
    double a = 0, b = 0;
    if (c < cols) {
      const T m = mean[c], is = invstd[c];
      for (int64_t r = begin + ty; r < end; r += kTy) {
        const double xhat = static_cast<double>((x[r * cols + c] - m) * is);
        const double g = static_cast<double>(dy[r * cols + c]);
        a += g;
        b += g * xhat;
      }
    }
    a = column_total(a, smem);
    b = column_total(b, smem);
    if (ty == 0 && c < cols) {
      s_dy[z * cols + c] = a;
      s_dyx[z * cols + c] = b;
    }
  }
}

/// Planar pass 1 of the backward (inner > 1): block (c, z) over chunk z of column c's values.
template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    bn_grad_sums_planar_kernel(int64_t count, int64_t cols, int64_t inner, int64_t chunk,
                               const T* __restrict__ x, const T* __restrict__ mean,
                               const T* __restrict__ invstd, const T* __restrict__ dy,
                               double* __restrict__ s_dy, double* __restrict__ s_dyx) {
  __shared__ double smem[32];
  const int64_t c = blockIdx.x, z = blockIdx.y, begin = z * chunk, end = min(count, begin + chunk);
  const T m = mean[c], is = invstd[c];
  double a = 0, b = 0;
  for (int64_t j = begin + threadIdx.x; j < end; j += blockDim.x) {
    const int64_t at = planar_at(j, c, cols, inner);
    const double xhat = static_cast<double>((x[at] - m) * is);
    const double g = static_cast<double>(dy[at]);
    a += g;
    b += g * xhat;
  }
  a = block_sum(a, smem);
  b = block_sum(b, smem);
  if (threadIdx.x == 0) {
    s_dy[z * cols + c] = a;
    s_dyx[z * cols + c] = b;
  }
}

/// Pass 2: totals per column (kept in tot_dy / tot_dyx for pass 3), dgamma and dbeta.
template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    bn_grad_finish_kernel(int64_t cols, int64_t chunks, const double* __restrict__ s_dy,
                          const double* __restrict__ s_dyx, double* __restrict__ tot_dy,
                          double* __restrict__ tot_dyx, T* __restrict__ dgamma,
                          T* __restrict__ dbeta) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < cols;
       c += int64_t{gridDim.x} * blockDim.x) {
    double a = 0, b = 0;
    for (int64_t z = 0; z < chunks; ++z) {
      a += s_dy[z * cols + c];
      b += s_dyx[z * cols + c];
    }
    tot_dy[c] = a;
    tot_dyx[c] = b;
    if (dgamma) dgamma[c] = static_cast<T>(b);
    if (dbeta) dbeta[c] = static_cast<T>(a);
  }
}

/// Pass 3: dx = k * (n * dy - sum_dy - xhat * sum_dy_xhat), k = gamma * invstd / n.
template <typename I, typename D, typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    bn_grad_apply_kernel(I n, D cols, D inner, int64_t count, const T* __restrict__ x,
                         const T* __restrict__ gamma, const T* __restrict__ mean,
                         const T* __restrict__ invstd, const T* __restrict__ dy,
                         const double* __restrict__ tot_dy, const double* __restrict__ tot_dyx,
                         T* __restrict__ dx) {
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  const double nr = static_cast<double>(count);
  for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const I c = cols.mod(inner.div(i));
    const T is = invstd[c];
    const double k = static_cast<double>((gamma ? gamma[c] : T(1)) * is) / nr;
    const double xhat = static_cast<double>((x[i] - mean[c]) * is);
    dx[i] = static_cast<T>(k * (nr * static_cast<double>(dy[i]) - tot_dy[c] - xhat * tot_dyx[c]));
  }
}

/// Launches an element-wise [rows, cols, inner] kernel with 32-bit indices when they suffice;
/// `launch` gets (n, cols divider, inner divider, grid).
template <typename Launch>
void launch_flat(const Ctx& ctx, int64_t rows, int64_t cols, int64_t inner, Launch&& launch) {
  const int64_t n = rows * cols * inner;
  const unsigned grid = grid_for(ctx, n);
  if (n <= kMax32)
    launch(static_cast<uint32_t>(n), Div32(static_cast<uint32_t>(cols)),
           Div32(static_cast<uint32_t>(inner)), grid);
  else
    launch(static_cast<uint64_t>(n), Div64(static_cast<uint64_t>(cols)),
           Div64(static_cast<uint64_t>(inner)), grid);
  after_launch(ctx);
}

}  // namespace

void CudaBackend::batch_norm_train(DType t, int64_t rows, int64_t cols, int64_t inner,
                                   const void* x, const void* gamma, const void* beta, double eps,
                                   double momentum, void* running_mean, void* running_var, void* y,
                                   void* save_mean, void* save_invstd) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (cols <= 0) return;
  if (rows <= 0 || inner <= 0)
    throw ValueError("batch_norm (cuda): training needs at least one value per column");
  dispatch_float(t, "batch_norm", [&]<typename T>(T*) {
    const T* tx = static_cast<const T*>(x);
    const Chunks ch =
        inner == 1 ? row_chunks(ctx, rows, cols) : planar_chunks(ctx, rows * inner, cols);
    auto* scratch = static_cast<double*>(
        ctx.scratch->get(sizeof(double) * static_cast<size_t>(cols) * (2 * ch.count + 2)));
    double *s1 = scratch, *s2 = s1 + ch.count * cols, *mean_d = s2 + ch.count * cols,
           *invstd_d = mean_d + cols;
    if (inner == 1)
      bn_stats_kernel<T><<<dim3(column_tiles(ctx, cols), static_cast<unsigned>(ch.count)),
                           dim3(kTx, kTy), 0, ctx.stream>>>(rows, cols, ch.chunk, tx, s1, s2);
    else
      bn_stats_planar_kernel<T>
          <<<dim3(static_cast<unsigned>(cols), static_cast<unsigned>(ch.count)), kBlock, 0,
             ctx.stream>>>(rows * inner, cols, inner, ch.chunk, tx, s1, s2);
    after_launch(ctx);
    bn_finish_kernel<T><<<grid_for(ctx, cols), kBlock, 0, ctx.stream>>>(
        rows, inner, cols, ch.count, tx, s1, s2, eps, momentum, static_cast<T*>(running_mean),
        static_cast<T*>(running_var), static_cast<T*>(save_mean), static_cast<T*>(save_invstd),
        mean_d, invstd_d);
    after_launch(ctx);
    launch_flat(ctx, rows, cols, inner, [&](auto n, auto d, auto di, unsigned grid) {
      bn_apply_kernel<<<grid, kBlock, 0, ctx.stream>>>(
          n, d, di, tx, mean_d, invstd_d, static_cast<const T*>(gamma), static_cast<const T*>(beta),
          static_cast<T*>(y));
    });
  });
}

void CudaBackend::batch_norm_eval(DType t, int64_t rows, int64_t cols, int64_t inner, const void* x,
                                  const void* gamma, const void* beta, const void* running_mean,
                                  const void* running_var, double eps, void* y) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (rows <= 0 || cols <= 0 || inner <= 0) return;
  dispatch_float(t, "batch_norm", [&]<typename T>(T*) {
    launch_flat(ctx, rows, cols, inner, [&](auto n, auto d, auto di, unsigned grid) {
      bn_eval_kernel<<<grid, kBlock, 0, ctx.stream>>>(
          n, d, di, static_cast<const T*>(x), static_cast<const T*>(gamma),
          static_cast<const T*>(beta), static_cast<const T*>(running_mean),
          static_cast<const T*>(running_var), eps, static_cast<T*>(y));
    });
  });
}

void CudaBackend::batch_norm_backward(DType t, int64_t rows, int64_t cols, int64_t inner,
                                      const void* x, const void* gamma, const void* save_mean,
                                      const void* save_invstd, const void* dy, void* dx,
                                      void* dgamma, void* dbeta) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (cols <= 0 || (!dx && !dgamma && !dbeta)) return;
  dispatch_float(t, "batch_norm_backward", [&]<typename T>(T*) {
    if (rows <= 0 || inner <= 0) {  // sums over no values
      if (dgamma) fill_on_stream(ctx, t, cols, 0.0, dgamma);
      if (dbeta) fill_on_stream(ctx, t, cols, 0.0, dbeta);
      return;
    }
    const T* tx = static_cast<const T*>(x);
    const T* tm = static_cast<const T*>(save_mean);
    const T* ti = static_cast<const T*>(save_invstd);
    const T* tdy = static_cast<const T*>(dy);
    const Chunks ch =
        inner == 1 ? row_chunks(ctx, rows, cols) : planar_chunks(ctx, rows * inner, cols);
    auto* scratch = static_cast<double*>(
        ctx.scratch->get(sizeof(double) * static_cast<size_t>(cols) * (2 * ch.count + 2)));
    double *s_dy = scratch, *s_dyx = s_dy + ch.count * cols, *tot_dy = s_dyx + ch.count * cols,
           *tot_dyx = tot_dy + cols;
    if (inner == 1)
      bn_grad_sums_kernel<T>
          <<<dim3(column_tiles(ctx, cols), static_cast<unsigned>(ch.count)), dim3(kTx, kTy), 0,
             ctx.stream>>>(rows, cols, ch.chunk, tx, tm, ti, tdy, s_dy, s_dyx);
    else
      bn_grad_sums_planar_kernel<T>
          <<<dim3(static_cast<unsigned>(cols), static_cast<unsigned>(ch.count)), kBlock, 0,
             ctx.stream>>>(rows * inner, cols, inner, ch.chunk, tx, tm, ti, tdy, s_dy, s_dyx);
    after_launch(ctx);
    bn_grad_finish_kernel<T><<<grid_for(ctx, cols), kBlock, 0, ctx.stream>>>(
        cols, ch.count, s_dy, s_dyx, tot_dy, tot_dyx, static_cast<T*>(dgamma),
        static_cast<T*>(dbeta));
    after_launch(ctx);
    if (dx)
      launch_flat(ctx, rows, cols, inner, [&](auto n, auto d, auto di, unsigned grid) {
        bn_grad_apply_kernel<<<grid, kBlock, 0, ctx.stream>>>(
            n, d, di, rows * inner, tx, static_cast<const T*>(gamma), tm, ti, tdy, tot_dy, tot_dyx,
            static_cast<T*>(dx));
      });
  });
}

}  // namespace clarena::kernels::cuda
