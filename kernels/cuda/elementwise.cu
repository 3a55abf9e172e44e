// Element-wise kernels: binary ops with optional row broadcast, axpby, relu/tanh/sigmoid forward
// and backward (the backward reads the forward's output), and the fused bias + ReLU epilogue.
//
// Every kernel is a flat grid-stride loop over 16-byte packs (4 floats or 2 doubles, llm.c's
// Packed128) when all its pointers are 16-byte aligned, with the last n % 4 (or n % 2) elements
// done one by one; otherwise element by element. Row-broadcast kernels ([rows, cols] with one
// [cols] operand) are flat too: the column of an element is its index modulo cols, found with
// a multiply-high (Div32) rather than a division, so a 10-class output keeps every thread busy
// instead of a 2-D grid leaving 246 of 256 threads idle. They use packs when cols is a multiple
// of the pack width (a pack then never straddles two rows).
//
// ReLU follows torch: relu(NaN) = NaN (clamp_min), and its backward is threshold_backward on
// the output, dx = (y <= 0) ? 0 : dy, so a NaN output passes its gradient through.
#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {
namespace {

template <Binary op>
struct BinaryOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    if constexpr (op == Binary::Add) {
      return a + b;
    } else if constexpr (op == Binary::Sub) {
      return a - b;
    } else {
      return a * b;
    }
  }
};

template <typename T>
struct AxpbyOp {
  T alpha, beta;
  __device__ __forceinline__ T operator()(T x, T y) const { return alpha * x + beta * y; }
};
template <typename T>
struct ScaleOp {  // alpha * x (axpby with beta == 0: y is never read)
  T alpha;
  __device__ __forceinline__ T operator()(T x) const { return alpha * x; }
};

template <Unary f>
struct UnaryFwd {
  template <typename T>
  __device__ __forceinline__ T operator()(T x) const {
    if constexpr (f == Unary::Relu) {
      return relu_value(x);
    } else if constexpr (f == Unary::Tanh) {
      return dtanh(x);
    } else if constexpr (f == Unary::Exp) {
      return dexp(x);
    } else {
      return T(1) / (T(1) + dexp(-x));
    }
  }
};

template <Unary f>
struct UnaryBwd {  // (y, dy) -> dx
  template <typename T>
  __device__ __forceinline__ T operator()(T y, T g) const {
    if constexpr (f == Unary::Relu) {
      return relu_grad(y, g);
    } else if constexpr (f == Unary::Tanh) {
      return g * (T(1) - y * y);
    } else if constexpr (f == Unary::Exp) {
      return g * y;
    } else {
      return g * y * (T(1) - y);
    }
  }
};

struct BiasReluOp {  // (y, bias) -> relu(y + bias)
  template <typename T>
  __device__ __forceinline__ T operator()(T y, T b) const {
    return relu_value(y + b);
  }
};

// No __restrict__ on the map kernels: out may alias an input (each element is read before it is
// written, by the same thread).

/// out[i] = op(a[i]) over n elements; kVector: 16-byte packs (all pointers aligned).
template <bool kVector, typename T, typename Op>
__global__ void CLARENA_BOUNDS(kBlock) map1_kernel(int64_t n, const T* a, T* out, Op op) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  int64_t tail = 0;
  if constexpr (kVector) {
    constexpr int V = kVec<T>;
    const int64_t packs = n / V;
    for (int64_t k = first; k < packs; k += stride) {
      Packed<T> x = load_packed(a + k * V);
#pragma unroll
      for (int e = 0; e < V; ++e)
        x.v[e] = op(x.v[e]);
      store_packed(out + k * V, x);
    }
    tail = packs * V;
  }
  for (int64_t i = tail + first; i < n; i += stride)
    out[i] = op(a[i]);
}

/// out[i] = op(a[i], b[i]) over n elements.
template <bool kVector, typename T, typename Op>
__global__ void CLARENA_BOUNDS(kBlock)
    map2_kernel(int64_t n, const T* a, const T* b, T* out, Op op) {
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  const int64_t first = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  int64_t tail = 0;
  if constexpr (kVector) {
    constexpr int V = kVec<T>;
    const int64_t packs = n / V;
    for (int64_t k = first; k < packs; k += stride) {
      Packed<T> x = load_packed(a + k * V);
      const Packed<T> y = load_packed(b + k * V);
#pragma unroll
      for (int e = 0; e < V; ++e)
        x.v[e] = op(x.v[e], y.v[e]);
      store_packed(out + k * V, x);
    }
    tail = packs * V;
  }
  for (int64_t i = tail + first; i < n; i += stride)
    out[i] = op(a[i], b[i]);
}

/// Row broadcast over [rows, cols] flattened: the full operand `full` is read at i, the row
/// operand at i mod cols; out[i] = kRowFirst ? op(row, full) : op(full, row). Index type I and
/// divider D are 32-bit when rows * cols < 2^31, else 64-bit. kVector: cols % V == 0 and every
/// pointer aligned, so a pack lies within one row and at a pack-aligned column.
template <bool kVector, bool kRowFirst, typename I, typename D, typename T, typename Op>
__global__ void CLARENA_BOUNDS(kBlock)
    row_map_kernel(I n, D cols, const T* full, const T* row, T* out, Op op) {
  constexpr I V = kVector ? kVec<T> : 1;
  const I stride = static_cast<I>(gridDim.x) * blockDim.x;
  // With packs, `cols` divides pack indices: cols (in packs) = cols / V.
  for (I k = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; k < n / V; k += stride) {
    const I c = cols.mod(k) * V;
    if constexpr (kVector) {
      Packed<T> x = load_packed(full + k * V);
      const Packed<T> r = load_packed(row + c);  // row may be out itself when rows == 1
#pragma unroll
      for (int e = 0; e < kVec<T>; ++e)
        x.v[e] = kRowFirst ? op(r.v[e], x.v[e]) : op(x.v[e], r.v[e]);
      store_packed(out + k * V, x);
    } else {
      const T x = full[k], r = row[c];
      out[k] = kRowFirst ? op(r, x) : op(x, r);
    }
  }
}

/// Blocks for a flat loop over n elements handled `per_thread` at a time.
unsigned flat_grid(const Ctx& ctx, int64_t n, int per_thread) {
  return grid_for(ctx, (n + per_thread - 1) / per_thread);
}

template <typename T, typename Op>
void map1(const Ctx& ctx, int64_t n, const T* a, T* out, Op op) {
  if (all_aligned16(a, out)) {
    map1_kernel<true, T><<<flat_grid(ctx, n, kVec<T>), kBlock, 0, ctx.stream>>>(n, a, out, op);
  } else {
    map1_kernel<false, T><<<flat_grid(ctx, n, 1), kBlock, 0, ctx.stream>>>(n, a, out, op);
  }
}

template <typename T, typename Op>
void map2(const Ctx& ctx, int64_t n, const T* a, const T* b, T* out, Op op) {
  if (all_aligned16(a, b, out)) {
    map2_kernel<true, T><<<flat_grid(ctx, n, kVec<T>), kBlock, 0, ctx.stream>>>(n, a, b, out, op);
  } else {
    map2_kernel<false, T><<<flat_grid(ctx, n, 1), kBlock, 0, ctx.stream>>>(n, a, b, out, op);
  }
}

template <bool kRowFirst, typename T, typename Op>
void row_map(const Ctx& ctx, int64_t rows, int64_t cols, const T* full, const T* row, T* out,
             Op op) {
  const int64_t n = rows * cols;
  const bool vec = cols % kVec<T> == 0 && all_aligned16(full, row, out);
  const int V = vec ? kVec<T> : 1;
  const unsigned grid = flat_grid(ctx, n, V);
  if (n <= kMax32) {
    const auto nn = static_cast<uint32_t>(n);
    const Div32 d(static_cast<uint32_t>(cols / V));
    if (vec)
      row_map_kernel<true, kRowFirst><<<grid, kBlock, 0, ctx.stream>>>(nn, d, full, row, out, op);
    else
      row_map_kernel<false, kRowFirst><<<grid, kBlock, 0, ctx.stream>>>(nn, d, full, row, out, op);
  } else {
    const auto nn = static_cast<uint64_t>(n);
    const Div64 d(static_cast<uint64_t>(cols / V));
    if (vec)
      row_map_kernel<true, kRowFirst><<<grid, kBlock, 0, ctx.stream>>>(nn, d, full, row, out, op);
    else
      row_map_kernel<false, kRowFirst><<<grid, kBlock, 0, ctx.stream>>>(nn, d, full, row, out, op);
  }
}

template <Binary op, typename T>
void binary_typed(const Ctx& ctx, Broadcast bc, int64_t rows, int64_t cols, const T* a, const T* b,
                  T* out) {
  if (bc == Broadcast::None)
    map2(ctx, rows * cols, a, b, out, BinaryOp<op>{});
  else if (bc == Broadcast::RowA)
    row_map<true>(ctx, rows, cols, b, a, out, BinaryOp<op>{});
  else
    row_map<false>(ctx, rows, cols, a, b, out, BinaryOp<op>{});
}

}  // namespace

void CudaBackend::binary(Binary op, Broadcast bc, DType t, int64_t rows, int64_t cols,
                         const void* a, const void* b, void* out) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
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

void CudaBackend::axpby(DType t, int64_t n, double alpha, const void* x, double beta, void* y) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (n <= 0) return;
  dispatch_float(t, "axpby", [&]<typename T>(T*) {
    const T* tx = static_cast<const T*>(x);
    T* ty = static_cast<T*>(y);
    if (beta == 0.0)  // overwrite: y may hold garbage (NaN) and is never read
      map1(ctx, n, tx, ty, ScaleOp<T>{static_cast<T>(alpha)});
    else
      map2(ctx, n, tx, static_cast<const T*>(ty), ty,
           AxpbyOp<T>{static_cast<T>(alpha), static_cast<T>(beta)});
  });
  after_launch(ctx);
}

void CudaBackend::unary_forward(Unary f, DType t, int64_t n, const void* x, void* y) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (n <= 0) return;
  dispatch_float(t, "unary", [&]<typename T>(T*) {
    const T* tx = static_cast<const T*>(x);
    T* ty = static_cast<T*>(y);
    switch (f) {
      case Unary::Relu:
        map1(ctx, n, tx, ty, UnaryFwd<Unary::Relu>{});
        break;
      case Unary::Tanh:
        map1(ctx, n, tx, ty, UnaryFwd<Unary::Tanh>{});
        break;
      case Unary::Sigmoid:
        map1(ctx, n, tx, ty, UnaryFwd<Unary::Sigmoid>{});
        break;
      case Unary::Exp:
        map1(ctx, n, tx, ty, UnaryFwd<Unary::Exp>{});
        break;
    }
  });
  after_launch(ctx);
}

void CudaBackend::unary_backward(Unary f, DType t, int64_t n, const void* y, const void* dy,
                                 void* dx) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (n <= 0) return;
  dispatch_float(t, "unary_backward", [&]<typename T>(T*) {
    const T* ty = static_cast<const T*>(y);
    const T* tdy = static_cast<const T*>(dy);
    T* tdx = static_cast<T*>(dx);
    switch (f) {
      case Unary::Relu:
        map2(ctx, n, ty, tdy, tdx, UnaryBwd<Unary::Relu>{});
        break;
      case Unary::Tanh:
        map2(ctx, n, ty, tdy, tdx, UnaryBwd<Unary::Tanh>{});
        break;
      case Unary::Sigmoid:
        map2(ctx, n, ty, tdy, tdx, UnaryBwd<Unary::Sigmoid>{});
        break;
      case Unary::Exp:
        map2(ctx, n, ty, tdy, tdx, UnaryBwd<Unary::Exp>{});
        break;
    }
  });
  after_launch(ctx);
}

void CudaBackend::bias_relu(DType t, int64_t rows, int64_t cols, const void* bias, void* y) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  if (rows <= 0 || cols <= 0) return;
  dispatch_float(t, "bias_relu", [&]<typename T>(T*) {
    T* ty = static_cast<T*>(y);
    row_map<false>(ctx, rows, cols, static_cast<const T*>(ty), static_cast<const T*>(bias), ty,
                   BiasReluOp{});
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
