// 2-D max and average pooling over the planes of [planes, H, W]: forward and backward.
//
// The arithmetic is the CPU's (kernels/cpu/pool.cpp), in the element type and in the same order,
// so the results match it bit for bit. Forward: one thread per output element. Backward: one
// thread per input element gathers the gradients of the windows that cover it, in output order
// (the CPU's scatter order): deterministic, no atomics.
#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {
namespace {

struct Geometry {
  int64_t height, width, out_h, out_w, kh, kw, sh, sw, ph, pw;
};

Geometry geometry(const Pool2dShape& s) {
  return {s.height,   s.width,    s.out_h,    s.out_w, s.kernel_h,
          s.kernel_w, s.stride_h, s.stride_w, s.pad_h, s.pad_w};
}

/// count_include_pad: the window clipped to the padded input (torch's divide_factor).
__device__ __forceinline__ int64_t pad_count(const Geometry& g, int64_t oh, int64_t ow) {
  const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
  const int64_t he = min(hs + g.kh, g.height + g.ph), we = min(ws + g.kw, g.width + g.pw);
  return (he - hs) * (we - ws);
}

/// The outputs whose windows cover input row (or column) i: [first, last).
__device__ __forceinline__ void covering(int64_t i, int64_t pad, int64_t k, int64_t stride,
                                         int64_t outs, int64_t& first, int64_t& last) {
  first = i + pad < k ? 0 : (i + pad - k) / stride + 1;
  last = min((i + pad) / stride + 1, outs);
}

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    max_pool_forward_kernel(int64_t n, Geometry g, const T* __restrict__ x, T* __restrict__ y,
                            int64_t* __restrict__ indices) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t ow = i % g.out_w, oh = (i / g.out_w) % g.out_h, p = i / (g.out_w * g.out_h);
    const T* xp = x + p * g.height * g.width;
    const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
    const int64_t h0 = max(hs, int64_t{0}), h1 = min(hs + g.kh, g.height);
    const int64_t w0 = max(ws, int64_t{0}), w1 = min(ws + g.kw, g.width);
    T best = neg_inf<T>();
    int64_t arg = h0 * g.width + w0;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t c = w0; c < w1; ++c) {
        const T v = xp[h * g.width + c];
        if (v > best || dnan(v)) {
          best = v;
          arg = h * g.width + c;
        }
      }
    y[i] = best;
    if (indices) indices[i] = arg;
  }
}

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    max_pool_backward_kernel(int64_t n, Geometry g, const int64_t* __restrict__ indices,
                             const T* __restrict__ dy, T* __restrict__ dx) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t in_plane = g.height * g.width, c = i % g.width, h = (i / g.width) % g.height;
    const int64_t p = i / in_plane, at = h * g.width + c, out_plane = g.out_h * g.out_w;
    int64_t oh0, oh1, ow0, ow1;
    covering(h, g.ph, g.kh, g.sh, g.out_h, oh0, oh1);
    covering(c, g.pw, g.kw, g.sw, g.out_w, ow0, ow1);
    const int64_t* ip = indices + p * out_plane;
    const T* gp = dy + p * out_plane;
    T acc = 0;
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow)
        if (ip[oh * g.out_w + ow] == at) acc += gp[oh * g.out_w + ow];
    dx[i] = acc;
  }
}

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    avg_pool_forward_kernel(int64_t n, Geometry g, const T* __restrict__ x, T* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t ow = i % g.out_w, oh = (i / g.out_w) % g.out_h, p = i / (g.out_w * g.out_h);
    const T* xp = x + p * g.height * g.width;
    const int64_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw;
    const int64_t h0 = max(hs, int64_t{0}), h1 = min(hs + g.kh, g.height);
    const int64_t w0 = max(ws, int64_t{0}), w1 = min(ws + g.kw, g.width);
    T sum = 0;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t c = w0; c < w1; ++c)
        sum += xp[h * g.width + c];
    y[i] = sum / static_cast<T>(pad_count(g, oh, ow));
  }
}

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    avg_pool_backward_kernel(int64_t n, Geometry g, const T* __restrict__ dy, T* __restrict__ dx) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % g.width, h = (i / g.width) % g.height, p = i / (g.height * g.width);
    int64_t oh0, oh1, ow0, ow1;
    covering(h, g.ph, g.kh, g.sh, g.out_h, oh0, oh1);
    covering(c, g.pw, g.kw, g.sw, g.out_w, ow0, ow1);
    const T* gp = dy + p * g.out_h * g.out_w;
    T acc = 0;
    for (int64_t oh = oh0; oh < oh1; ++oh)
      for (int64_t ow = ow0; ow < ow1; ++ow)
        acc += gp[oh * g.out_w + ow] / static_cast<T>(pad_count(g, oh, ow));
    dx[i] = acc;
  }
}

}  // namespace

void CudaBackend::max_pool2d_forward(DType t, const Pool2dShape& s, const void* x, void* y,
                                     int64_t* indices) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  const int64_t n = s.planes * s.out_h * s.out_w;
  if (n <= 0) return;
  dispatch_float(t, "max_pool2d", [&]<typename T>(T*) {
    max_pool_forward_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        n, geometry(s), static_cast<const T*>(x), static_cast<T*>(y), indices);
    after_launch(ctx);
  });
}

void CudaBackend::max_pool2d_backward(DType t, const Pool2dShape& s, const int64_t* indices,
                                      const void* dy, void* dx) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  const int64_t n = s.planes * s.height * s.width;
  if (n <= 0) return;
  dispatch_float(t, "max_pool2d_backward", [&]<typename T>(T*) {
    max_pool_backward_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        n, geometry(s), indices, static_cast<const T*>(dy), static_cast<T*>(dx));
    after_launch(ctx);
  });
}

void CudaBackend::avg_pool2d_forward(DType t, const Pool2dShape& s, const void* x, void* y) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  const int64_t n = s.planes * s.out_h * s.out_w;
  if (n <= 0) return;
  dispatch_float(t, "avg_pool2d", [&]<typename T>(T*) {
    avg_pool_forward_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        n, geometry(s), static_cast<const T*>(x), static_cast<T*>(y));
    after_launch(ctx);
  });
}

void CudaBackend::avg_pool2d_backward(DType t, const Pool2dShape& s, const void* dy, void* dx) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  const int64_t n = s.planes * s.height * s.width;
  if (n <= 0) return;
  dispatch_float(t, "avg_pool2d_backward", [&]<typename T>(T*) {
    avg_pool_backward_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        n, geometry(s), static_cast<const T*>(dy), static_cast<T*>(dx));
    after_launch(ctx);
  });
}

}  // namespace clarena::kernels::cuda
