// The convolution's im2col and its adjoint col2im over a batch of images, as on the CPU
// (kernels/cpu/conv.cpp), each one launch whatever the number of images, and the outer-axes
// transpose conv2d moves its matrices with.
//
// im2col: one thread per (image, channel, output row, output column), writing its kh * kw
// column entries. col2im: one thread per image element, gathering the entries that im2col took
// from it in the order (i, j); no atomics, so the result is bitwise the same run to run (the CPU
// adds in the same per-element order: both are a plain sum over (i, j) of the same values).
// transpose_outer: one thread per destination element.
#include "../conv_geometry.h"
#include "common.cuh"
#include "cuda_backend.cuh"

namespace clarena::kernels::cuda {
namespace {

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    im2col_kernel(ConvGeometry g, int64_t images, const T* __restrict__ image, int64_t ld,
                  T* __restrict__ columns) {
  const int64_t plane = g.oh * g.ow, n = images * g.channels * plane;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += stride) {
    // q: the (image, channel) pair, image q / channels.
    const int64_t q = k / plane, p = k - q * plane, y = p / g.ow, x = p - y * g.ow;
    const int64_t img = q / g.channels, c = q - img * g.channels;
    const T* src = image + q * g.height * g.width;
    T* dst = columns + c * g.kh * g.kw * ld + img * plane + p;
    for (int64_t i = 0; i < g.kh; ++i) {
      const int64_t iy = y * g.sh - g.ph + i * g.dh;
      const bool row_in = iy >= 0 && iy < g.height;
      for (int64_t j = 0; j < g.kw; ++j) {
        const int64_t ix = x * g.sw - g.pw + j * g.dw;
        *dst = row_in && ix >= 0 && ix < g.width ? src[iy * g.width + ix] : T(0);
        dst += ld;
      }
    }
  }
}

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    col2im_kernel(ConvGeometry g, int64_t images, const T* __restrict__ columns, int64_t ld,
                  T* __restrict__ image) {
  const int64_t area = g.height * g.width, n = images * g.channels * area, plane = g.oh * g.ow;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += stride) {
    const int64_t q = k / area, p = k - q * area, iy = p / g.width, ix = p - iy * g.width;
    const int64_t img = q / g.channels, c = q - img * g.channels;
    const T* src = columns + c * g.kh * g.kw * ld + img * plane;
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
        sum += src[(i * g.kw + j) * ld + y * g.ow + x];
      }
    }
    image[k] = sum;
  }
}

template <typename T>
__global__ void CLARENA_BOUNDS(kBlock)
    transpose_outer_kernel(int64_t a, int64_t b, int64_t inner, const T* __restrict__ src,
                           T* __restrict__ dst) {
  const int64_t n = a * b * inner, block = a * inner;
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t k = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; k < n; k += stride) {
    // dst[j][i][p] = src[i][j][p]
    const int64_t j = k / block, r = k - j * block, i = r / inner, p = r - i * inner;
    dst[k] = src[(i * b + j) * inner + p];
  }
}

}  // namespace

void CudaBackend::im2col(DType t, int64_t images, int64_t channels, int64_t height, int64_t width,
                         int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                         int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                         const void* image, int64_t columns_ld, void* columns) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  const ConvGeometry g = conv_geometry(channels, height, width, kernel_h, kernel_w, stride_h,
                                       stride_w, pad_h, pad_w, dilation_h, dilation_w);
  const int64_t n = images * g.channels * g.oh * g.ow;
  if (n <= 0 || g.kh * g.kw <= 0) return;
  dispatch_float(t, "im2col", [&]<typename T>(T*) {
    im2col_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        g, images, static_cast<const T*>(image), columns_ld, static_cast<T*>(columns));
  });
  after_launch(ctx);
}

void CudaBackend::col2im(DType t, int64_t images, int64_t channels, int64_t height, int64_t width,
                         int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                         int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                         const void* columns, int64_t columns_ld, void* image) {
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  const ConvGeometry g = conv_geometry(channels, height, width, kernel_h, kernel_w, stride_h,
                                       stride_w, pad_h, pad_w, dilation_h, dilation_w);
  const int64_t n = images * g.channels * g.height * g.width;
  if (n <= 0) return;
  dispatch_float(t, "col2im", [&]<typename T>(T*) {
    col2im_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        g, images, static_cast<const T*>(columns), columns_ld, static_cast<T*>(image));
  });
  after_launch(ctx);
}

void CudaBackend::transpose_outer(DType t, int64_t a, int64_t b, int64_t inner, const void* src,
                                  void* dst) {
  const int64_t n = a * b * inner;
  if (n <= 0) return;
  Lock lock(*this);
  const Ctx& ctx = ctx_;
  dispatch_all(t, "transpose_outer", [&]<typename T>(T*) {
    transpose_outer_kernel<T><<<grid_for(ctx, n), kBlock, 0, ctx.stream>>>(
        a, b, inner, static_cast<const T*>(src), static_cast<T*>(dst));
  });
  after_launch(ctx);
}

}  // namespace clarena::kernels::cuda
