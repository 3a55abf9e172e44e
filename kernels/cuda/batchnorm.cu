// BatchNorm1d over the rows of [rows, cols], per column.
//
// Train forward and backward give each block 32 consecutive columns (threadIdx.x, coalesced
// reads along a row) and 16 thread rows striding over the batch; per-column sums are combined
// through shared memory in a fixed order. Train forward: pass 1 mean, pass 2 the biased variance
// from the centred values (two-pass, no catastrophic cancellation), then the running statistics
// (unbiased variance, as torch does) and pass 3 writes y. Backward: one pass for sum(dy) and
// sum(dy * xhat) (dbeta and dgamma), a second for dx. Eval forward is an element-wise 2-D kernel.
// gamma and beta may be null (treated as 1 and 0); running_mean/var may be null (not tracked).
#include "common.cuh"

namespace clarena::kernels::cuda {
namespace {

constexpr int kTx = 32, kTy = 16;

/// Sum of v over threadIdx.y for each threadIdx.x, returned to every thread of the column.
template <typename T>
__device__ __forceinline__ T column_sum(T v, T (*smem)[kTx + 1], T* result) {
  const int tx = threadIdx.x, ty = threadIdx.y;
  __syncthreads();  // smem / result reuse
  smem[ty][tx] = v;
  __syncthreads();
  if (ty == 0) {
    T s = T(0);
#pragma unroll
    for (int k = 0; k < kTy; ++k)
      s += smem[k][tx];
    result[tx] = s;
  }
  __syncthreads();
  return result[tx];
}

template <typename T>
__global__ void bn_train_kernel(int64_t rows, int64_t cols, const T* __restrict__ x,
                                const T* __restrict__ gamma, const T* __restrict__ beta, T eps,
                                T momentum, T* __restrict__ running_mean,
                                T* __restrict__ running_var, T* __restrict__ y,
                                T* __restrict__ save_mean, T* __restrict__ save_invstd) {
  __shared__ T smem[kTy][kTx + 1];
  __shared__ T result[kTx];
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTx; c0 < cols;
       c0 += static_cast<int64_t>(gridDim.x) * kTx) {
    const int64_t c = c0 + tx;
    const bool valid = c < cols;
    T s = T(0);
    if (valid)
      for (int64_t r = ty; r < rows; r += kTy)
        s += x[r * cols + c];
    const T mean = column_sum(s, smem, result) / static_cast<T>(rows);
    T sq = T(0);
    if (valid)
      for (int64_t r = ty; r < rows; r += kTy) {
        const T d = x[r * cols + c] - mean;
        sq += d * d;
      }
    sq = column_sum(sq, smem, result);
    const T var = sq / static_cast<T>(rows);
    const T invstd = T(1) / dsqrt(var + eps);
    if (valid && ty == 0) {
      save_mean[c] = mean;
      save_invstd[c] = invstd;
      const T unbiased = rows > 1 ? sq / static_cast<T>(rows - 1) : var;
      if (running_mean) running_mean[c] = (T(1) - momentum) * running_mean[c] + momentum * mean;
      if (running_var) running_var[c] = (T(1) - momentum) * running_var[c] + momentum * unbiased;
    }
    if (valid) {
      const T g = gamma ? gamma[c] : T(1), b = beta ? beta[c] : T(0);
      const T k = invstd * g;
      for (int64_t r = ty; r < rows; r += kTy)
        y[r * cols + c] = (x[r * cols + c] - mean) * k + b;
    }
  }
}

template <typename T>
__global__ void bn_eval_kernel(int64_t rows, int64_t cols, const T* __restrict__ x,
                               const T* __restrict__ gamma, const T* __restrict__ beta,
                               const T* __restrict__ running_mean,
                               const T* __restrict__ running_var, T eps, T* __restrict__ y) {
  for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < cols;
       c += int64_t{gridDim.x} * blockDim.x) {
    const T g = gamma ? gamma[c] : T(1), b = beta ? beta[c] : T(0);
    const T k = g / dsqrt(running_var[c] + eps), m = running_mean[c];
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
      y[r * cols + c] = (x[r * cols + c] - m) * k + b;
  }
}

template <typename T>
__global__ void bn_bwd_kernel(int64_t rows, int64_t cols, const T* __restrict__ x,
                              const T* __restrict__ gamma, const T* __restrict__ mean,
                              const T* __restrict__ invstd, const T* __restrict__ dy,
                              T* __restrict__ dx, T* __restrict__ dgamma, T* __restrict__ dbeta) {
  __shared__ T smem[kTy][kTx + 1];
  __shared__ T result[kTx];
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t c0 = static_cast<int64_t>(blockIdx.x) * kTx; c0 < cols;
       c0 += static_cast<int64_t>(gridDim.x) * kTx) {
    const int64_t c = c0 + tx;
    const bool valid = c < cols;
    const T m = valid ? mean[c] : T(0), is = valid ? invstd[c] : T(0);
    T s_dy = T(0), s_dyx = T(0);
    if (valid)
      for (int64_t r = ty; r < rows; r += kTy) {
        const T g = dy[r * cols + c];
        s_dy += g;
        s_dyx += g * ((x[r * cols + c] - m) * is);
      }
    s_dy = column_sum(s_dy, smem, result);
    s_dyx = column_sum(s_dyx, smem, result);
    if (valid && ty == 0) {
      if (dgamma) dgamma[c] = s_dyx;
      if (dbeta) dbeta[c] = s_dy;
    }
    if (dx && valid) {
      const T n = static_cast<T>(rows);
      const T k = (gamma ? gamma[c] : T(1)) * is / n;
      for (int64_t r = ty; r < rows; r += kTy) {
        const T xhat = (x[r * cols + c] - m) * is;
        dx[r * cols + c] = k * (n * dy[r * cols + c] - s_dy - xhat * s_dyx);
      }
    }
  }
}

unsigned column_tiles(const Ctx& ctx, int64_t cols) {
  return static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>((cols + kTx - 1) / kTx, int64_t{ctx.sm_count} * 16)));
}

}  // namespace

void batch_norm_train(const Ctx& ctx, DType t, int64_t rows, int64_t cols, const void* x,
                      const void* gamma, const void* beta, double eps, double momentum,
                      void* running_mean, void* running_var, void* y, void* save_mean,
                      void* save_invstd) {
  if (cols <= 0) return;
  if (rows <= 0) throw ValueError("batch_norm (cuda): training needs at least one row");
  dispatch_float(t, "batch_norm", [&]<typename T>(T*) {
    bn_train_kernel<T><<<column_tiles(ctx, cols), dim3(kTx, kTy), 0, ctx.stream>>>(
        rows, cols, static_cast<const T*>(x), static_cast<const T*>(gamma),
        static_cast<const T*>(beta), static_cast<T>(eps), static_cast<T>(momentum),
        static_cast<T*>(running_mean), static_cast<T*>(running_var), static_cast<T*>(y),
        static_cast<T*>(save_mean), static_cast<T*>(save_invstd));
  });
  after_launch(ctx);
}

void batch_norm_eval(const Ctx& ctx, DType t, int64_t rows, int64_t cols, const void* x,
                     const void* gamma, const void* beta, const void* running_mean,
                     const void* running_var, double eps, void* y) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, "batch_norm", [&]<typename T>(T*) {
    const int64_t gx = std::max<int64_t>(
        1, std::min<int64_t>((cols + kBlock - 1) / kBlock, int64_t{ctx.sm_count} * 32));
    const int64_t gy = std::max<int64_t>(
        1, std::min<int64_t>({rows, std::max<int64_t>(1, int64_t{ctx.sm_count} * 32 / gx), 65535}));
    bn_eval_kernel<T>
        <<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), kBlock, 0, ctx.stream>>>(
            rows, cols, static_cast<const T*>(x), static_cast<const T*>(gamma),
            static_cast<const T*>(beta), static_cast<const T*>(running_mean),
            static_cast<const T*>(running_var), static_cast<T>(eps), static_cast<T*>(y));
  });
  after_launch(ctx);
}

void batch_norm_backward(const Ctx& ctx, DType t, int64_t rows, int64_t cols, const void* x,
                         const void* gamma, const void* save_mean, const void* save_invstd,
                         const void* dy, void* dx, void* dgamma, void* dbeta) {
  if (cols <= 0 || (!dx && !dgamma && !dbeta)) return;
  dispatch_float(t, "batch_norm_backward", [&]<typename T>(T*) {
    bn_bwd_kernel<T><<<column_tiles(ctx, cols), dim3(kTx, kTy), 0, ctx.stream>>>(
        rows, cols, static_cast<const T*>(x), static_cast<const T*>(gamma),
        static_cast<const T*>(save_mean), static_cast<const T*>(save_invstd),
        static_cast<const T*>(dy), static_cast<T*>(dx), static_cast<T*>(dgamma),
        static_cast<T*>(dbeta));
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
