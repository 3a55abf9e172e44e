// CPU kernels of the convolution: im2col and its adjoint col2im, over one image. Both are
// split over the channels with the thread pool; a tile's size depends on the shape alone and
// each channel is one fixed computation (col2im adds a channel's contributions in the order
// (i, j, y, x)), so results are bitwise the same at any thread count.
#include <algorithm>
#include <cstdint>

#include "../dispatch.h"
#include "cpu_backend.h"
#include "thread_pool.h"

namespace clarena::kernels::cpu {
namespace {

/// The geometry of one im2col / col2im call.
struct Geometry {
  int64_t channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
};

Geometry geometry(int64_t channels, int64_t height, int64_t width, int64_t kh, int64_t kw,
                  int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
  const int64_t oh = (height + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const int64_t ow = (width + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  return {channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow};
}

/// Channels per tile: about 32k column entries of work, a function of the shape only.
int64_t channel_tile(const Geometry& g) {
  const int64_t per_channel = std::max<int64_t>(1, g.kh * g.kw * g.oh * g.ow);
  return std::max<int64_t>(1, 32768 / per_channel);
}

/// The output columns x in [lo, hi) whose input column x * sw - pw + off lies inside [0, width).
inline void valid_range(int64_t off, int64_t stride, int64_t size, int64_t out, int64_t& lo,
                        int64_t& hi) {
  // x * stride + off >= 0  <=>  x >= ceil(-off / stride); x * stride + off < size.
  lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  hi = size - off <= 0 ? 0 : (size - off - 1) / stride + 1;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
}

template <typename T>
void im2col_channels(const Geometry& g, int64_t c0, int64_t c1, const T* image, T* columns) {
  const int64_t plane = g.oh * g.ow;
  for (int64_t c = c0; c < c1; ++c) {
    const T* src = image + c * g.height * g.width;
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        T* row = columns + ((c * g.kh + i) * g.kw + j) * plane;
        const int64_t xoff = j * g.dw - g.pw;
        int64_t xlo, xhi;
        valid_range(xoff, g.sw, g.width, g.ow, xlo, xhi);
        for (int64_t y = 0; y < g.oh; ++y) {
          T* out = row + y * g.ow;
          const int64_t iy = y * g.sh - g.ph + i * g.dh;
          if (iy < 0 || iy >= g.height) {
            std::fill(out, out + g.ow, T(0));
            continue;
          }
          // The input element of column x is src[base + x * sw] (never read outside the image).
          const int64_t base = iy * g.width + xoff;
          std::fill(out, out + xlo, T(0));
          if (g.sw == 1)
            std::copy(src + base + xlo, src + base + xhi, out + xlo);
          else
            for (int64_t x = xlo; x < xhi; ++x)
              out[x] = src[base + x * g.sw];
          std::fill(out + xhi, out + g.ow, T(0));
        }
      }
  }
}

template <typename T>
void col2im_channels(const Geometry& g, int64_t c0, int64_t c1, const T* columns, T* image) {
  const int64_t plane = g.oh * g.ow;
  for (int64_t c = c0; c < c1; ++c) {
    T* dst = image + c * g.height * g.width;
    std::fill(dst, dst + g.height * g.width, T(0));
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const T* row = columns + ((c * g.kh + i) * g.kw + j) * plane;
        const int64_t xoff = j * g.dw - g.pw;
        int64_t xlo, xhi;
        valid_range(xoff, g.sw, g.width, g.ow, xlo, xhi);
        for (int64_t y = 0; y < g.oh; ++y) {
          const int64_t iy = y * g.sh - g.ph + i * g.dh;
          if (iy < 0 || iy >= g.height) continue;
          const T* in = row + y * g.ow;
          const int64_t base = iy * g.width + xoff;
          for (int64_t x = xlo; x < xhi; ++x)
            dst[base + x * g.sw] += in[x];
        }
      }
  }
}

}  // namespace

void CpuBackend::im2col(DType t, int64_t channels, int64_t height, int64_t width, int64_t kernel_h,
                        int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                        int64_t pad_w, int64_t dilation_h, int64_t dilation_w, const void* image,
                        void* columns) {
  const Geometry g = geometry(channels, height, width, kernel_h, kernel_w, stride_h, stride_w,
                              pad_h, pad_w, dilation_h, dilation_w);
  dispatch_float(t, "im2col", [&]<typename T>(T*) {
    parallel_tiles(channels, channel_tile(g), [&](int64_t lo, int64_t hi) {
      im2col_channels(g, lo, hi, CLARENA_CTYPED(image), CLARENA_TYPED(columns));
    });
  });
}

void CpuBackend::col2im(DType t, int64_t channels, int64_t height, int64_t width, int64_t kernel_h,
                        int64_t kernel_w, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                        int64_t pad_w, int64_t dilation_h, int64_t dilation_w, const void* columns,
                        void* image) {
  const Geometry g = geometry(channels, height, width, kernel_h, kernel_w, stride_h, stride_w,
                              pad_h, pad_w, dilation_h, dilation_w);
  dispatch_float(t, "col2im", [&]<typename T>(T*) {
    parallel_tiles(channels, channel_tile(g), [&](int64_t lo, int64_t hi) {
      col2im_channels(g, lo, hi, CLARENA_CTYPED(columns), CLARENA_TYPED(image));
    });
  });
}

}  // namespace clarena::kernels::cpu
