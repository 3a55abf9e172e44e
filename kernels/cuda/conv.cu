// The convolution's im2col and its adjoint col2im over one image, as on the CPU
// (kernels/cpu/conv.cpp).
//
// im2col: one thread per (channel, output row, output column), writing its kh * kw column
// entries. col2im: one thread per image element, gathering the entries that im2col took from it
// in the order (i, j); no atomics, so the result is bitwise the same run to run (the CPU adds in
// the same per-element order: both are a plain sum over (i, j) of the same values).
#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {
namespace {

struct Geometry {
  int64_t channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
};

Geometry geometry(int64_t channels, int64_t height, int64_t width, int64_t kh, int64_t kw,
                  int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
  const int64_t oh = (height + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const int64_t ow = (width + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  return {channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow};
}

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    im2col_kernel(Geometry g, const T* __restrict__ image, T* __restrict__ columns) {
  const int64_t plane = g.oh * g.ow, n = g.channels * plane;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += stride) {
    const int64_t c = k / plane, p = k - c * plane, y = p / g.ow, x = p - y * g.ow;
    const T* src = image + c * g.height * g.width;
    T* dst = columns + c * g.kh * g.kw * plane + p;
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t iy = y * g.sh - g.ph + i * g.dh;
      const bool row_in = iy >= 0 && iy < g.height;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t ix = x * g.sw - g.pw + j * g.dw;
        *dst = row_in && ix >= 0 && ix < g.width ? src[iy * g.width + ix] : T(0);
        dst += plane;
      }
    }
  }
}

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    col2im_kernel(Geometry g, const T* __restrict__ columns, T* __restrict__ image) {
  const int64_t area = g.height * g.width, n = g.channels * area, plane = g.oh * g.ow;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += stride) {
    const int64_t c = k / area, p = k - c * area, iy = p / g.width, ix = p - iy * g.width;
    const T* src = columns + c * g.kh * g.kw * plane;
    T sum = T(0);
    for (int64_t i = 0; i < g.kh; ++i) {
      // Output row y reads iy when y * sh = iy + ph - i * dh.
      const int64_t ty = iy + g.ph - i * g.dh;
      if (ty < 0) break;  // larger i only lowers ty
      if (ty % g.sh != 0) continue;
      const int64_t y = ty / g.sh;
      if (y >= g.oh) continue;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t tx = ix + g.pw - j * g.dw;
        if (tx < 0) break;
        if (tx % g.sw != 0) continue;
        const int64_t x = tx / g.sw;
        if (x >= g.ow) continue;
        sum += src[(i * g.kw + j) * plane + y * g.ow + x];
      }
    }
    image[k] = sum;
  }
}

}  // namespace

void CudaBackend::im2col(DType t, int64_t channels, int64_t height, int64_t width, int64_t kernel_h,
                         int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                         int64_t pad_w, int64_t dilation_h, int64_t dilation_w, const void* image,
                         void* columns) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  const Geometry g = geometry(channels, height, width, kernel_h, kernel_w, stride_h, stride_w,
                              pad_h, pad_w, dilation_h, dilation_w);
  const int64_t n = g.channels * g.oh * g.ow;
  if (n <= 0 || g.kh * g.kw <= 0) return;
  dispatch_float(t, "im2col", [&]<typename T>(T*) {
    im2col_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(g, static_cast<const T*>(image),
                                                                  static_cast<T*>(columns));
  });
  after_launch(ctx);
}

void CudaBackend::col2im(DType t, int64_t channels, int64_t height, int64_t width, int64_t kernel_h,
                         int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                         int64_t pad_w, int64_t dilation_h, int64_t dilation_w, const void* columns,
                         void* image) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  const Geometry g = geometry(channels, height, width, kernel_h, kernel_w, stride_h, stride_w,
                              pad_h, pad_w, dilation_h, dilation_w);
  const int64_t n = g.channels * g.height * g.width;
  if (n <= 0) return;
  dispatch_float(t, "col2im", [&]<typename T>(T*) {
    col2im_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(g, static_cast<const T*>(columns),
                                                                  static_cast<T*>(image));
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
