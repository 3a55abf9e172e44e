// Element-wise kernels: binary ops with optional row broadcast, axpby, relu/tanh/sigmoid forward
// and backward (the backward reads the forward's output), and the fused bias + ReLU epilogue.
// Flat ops are grid-stride loops; [rows, cols] ops use a 2-D grid (x over columns, y over rows,
// both grid-stride) so no per-element division is needed.
#include "common.cuh"

namespace clarena::kernels::cuda {
namespace {

template <Binary op, typename T>
__device__ __forceinline__ T apply(T a, T b) {
  if constexpr (op == Binary::Add) {
    return a + b;
  } else if constexpr (op == Binary::Sub) {
    return a - b;
  } else {
    return a * b;
  }
}

// No __restrict__: out may alias a or b (each element is read before it is written, by the
// same thread).
template <Binary op, typename T>
__global__ void binary_flat_kernel(int64_t n, const T* a, const T* b, T* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    out[i] = apply<op>(a[i], b[i]);
}

/// One operand is a [cols] row repeated over the rows (kRowA: a, else b).
template <Binary op, bool kRowA, typename T>
__global__ void binary_row_kernel(int64_t rows, int64_t cols, const T* a, const T* b, T* out) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t base = r * cols;
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < cols;
         c += int64_t{gridDim.x} * blockDim.x) {
      const T av = kRowA ? a[c] : a[base + c];
      const T bv = kRowA ? b[base + c] : b[c];
      out[base + c] = apply<op>(av, bv);
    }
  }
}

template <typename T>
__global__ void axpby_kernel(int64_t n, T alpha, const T* x, T beta, T* y) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = alpha * x[i] + beta * y[i];
}

template <typename T>
__global__ void axpy0_kernel(int64_t n, T alpha, const T* x, T* y) {  // beta == 0: y unread
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x)
    y[i] = alpha * x[i];
}

template <Unary f, typename T>
__global__ void unary_fwd_kernel(int64_t n, const T* x, T* y) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const T v = x[i];
    if constexpr (f == Unary::Relu) y[i] = v > T(0) ? v : T(0);
    if constexpr (f == Unary::Tanh) y[i] = dtanh(v);
    if constexpr (f == Unary::Sigmoid) y[i] = T(1) / (T(1) + dexp(-v));
  }
}

template <Unary f, typename T>
__global__ void unary_bwd_kernel(int64_t n, const T* y, const T* dy, T* dx) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const T v = y[i], g = dy[i];
    if constexpr (f == Unary::Relu) dx[i] = v > T(0) ? g : T(0);
    if constexpr (f == Unary::Tanh) dx[i] = g * (T(1) - v * v);
    if constexpr (f == Unary::Sigmoid) dx[i] = g * v * (T(1) - v);
  }
}

template <typename T>
__global__ void bias_relu_kernel(int64_t rows, int64_t cols, const T* __restrict__ bias,
                                 T* __restrict__ y) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    T* yr = y + r * cols;
    for (int64_t c = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; c < cols;
         c += int64_t{gridDim.x} * blockDim.x) {
      const T v = yr[c] + bias[c];
      yr[c] = v > T(0) ? v : T(0);
    }
  }
}

/// 2-D grid for [rows, cols]: x covers the columns (capped), y the rows (capped at 65535),
/// total blocks capped near a few waves of the card.
dim3 grid_2d(const Ctx& ctx, int64_t rows, int64_t cols) {
  const int64_t gx = std::max<int64_t>(
      1, std::min<int64_t>((cols + kBlock - 1) / kBlock, int64_t{ctx.sm_count} * 32));
  const int64_t cap_y = std::max<int64_t>(1, int64_t{ctx.sm_count} * 32 / gx);
  const int64_t gy = std::max<int64_t>(1, std::min<int64_t>({rows, cap_y, 65535}));
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
}

template <Binary op, typename T>
void binary_typed(const Ctx& ctx, Broadcast bc, int64_t rows, int64_t cols, const T* a, const T* b,
                  T* out) {
  if (bc == Broadcast::None) {
    const int64_t n = rows * cols;
    binary_flat_kernel<op, T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(n, a, b, out);
  } else if (bc == Broadcast::RowA) {
    binary_row_kernel<op, true, T>
        <<<grid_2d(ctx, rows, cols), kBlock, 0, ctx.stream>>>(rows, cols, a, b, out);
  } else {
    binary_row_kernel<op, false, T>
        <<<grid_2d(ctx, rows, cols), kBlock, 0, ctx.stream>>>(rows, cols, a, b, out);
  }
}

}  // namespace

void binary(const Ctx& ctx, Binary op, Broadcast bc, DType t, int64_t rows, int64_t cols,
            const void* a, const void* b, void* out) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, "binary", [&]<typename T>(T*) {
    const T* ta = static_cast<const T*>(a);
    const T* tb = static_cast<const T*>(b);
    T* to = static_cast<T*>(out);
    switch (op) {
      case Binary::Add:
        binary_typed<Binary::Add>(ctx, bc, rows, cols, ta, tb, to);
        break;
      case Binary::Sub:
        binary_typed<Binary::Sub>(ctx, bc, rows, cols, ta, tb, to);
        break;
      case Binary::Mul:
        binary_typed<Binary::Mul>(ctx, bc, rows, cols, ta, tb, to);
        break;
    }
  });
  after_launch(ctx);
}

void axpby(const Ctx& ctx, DType t, int64_t n, double alpha, const void* x, double beta, void* y) {
  if (n <= 0) return;
  dispatch_float(t, "axpby", [&]<typename T>(T*) {
    if (beta == 0.0)
      axpy0_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
          n, static_cast<T>(alpha), static_cast<const T*>(x), static_cast<T*>(y));
    else
      axpby_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
          n, static_cast<T>(alpha), static_cast<const T*>(x), static_cast<T>(beta),
          static_cast<T*>(y));
  });
  after_launch(ctx);
}

void unary_forward(const Ctx& ctx, Unary f, DType t, int64_t n, const void* x, void* y) {
  if (n <= 0) return;
  dispatch_float(t, "unary", [&]<typename T>(T*) {
    const T* tx = static_cast<const T*>(x);
    T* ty = static_cast<T*>(y);
    const unsigned grid = grid_for(ctx, n);
    switch (f) {
      case Unary::Relu:
        unary_fwd_kernel<Unary::Relu, T><<<grid, kBlock, 0, ctx.stream>>>(n, tx, ty);
        break;
      case Unary::Tanh:
        unary_fwd_kernel<Unary::Tanh, T><<<grid, kBlock, 0, ctx.stream>>>(n, tx, ty);
        break;
      case Unary::Sigmoid:
        unary_fwd_kernel<Unary::Sigmoid, T><<<grid, kBlock, 0, ctx.stream>>>(n, tx, ty);
        break;
    }
  });
  after_launch(ctx);
}

void unary_backward(const Ctx& ctx, Unary f, DType t, int64_t n, const void* y, const void* dy,
                    void* dx) {
  if (n <= 0) return;
  dispatch_float(t, "unary_backward", [&]<typename T>(T*) {
    const T* ty = static_cast<const T*>(y);
    const T* tdy = static_cast<const T*>(dy);
    T* tdx = static_cast<T*>(dx);
    const unsigned grid = grid_for(ctx, n);
    switch (f) {
      case Unary::Relu:
        unary_bwd_kernel<Unary::Relu, T><<<grid, kBlock, 0, ctx.stream>>>(n, ty, tdy, tdx);
        break;
      case Unary::Tanh:
        unary_bwd_kernel<Unary::Tanh, T><<<grid, kBlock, 0, ctx.stream>>>(n, ty, tdy, tdx);
        break;
      case Unary::Sigmoid:
        unary_bwd_kernel<Unary::Sigmoid, T><<<grid, kBlock, 0, ctx.stream>>>(n, ty, tdy, tdx);
        break;
    }
  });
  after_launch(ctx);
}

void bias_relu(const Ctx& ctx, DType t, int64_t rows, int64_t cols, const void* bias, void* y) {
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, "bias_relu", [&]<typename T>(T*) {
    bias_relu_kernel<T><<<grid_2d(ctx, rows, cols), kBlock, 0, ctx.stream>>>(
        rows, cols, static_cast<const T*>(bias), static_cast<T*>(y));
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
