// CPU kernels of the convolution: im2col and its adjoint col2im over a batch of images, and the
// outer-axes transpose conv2d moves its matrices with. im2col and col2im are split over the
// (image, channel) pairs with the thread pool; a tile's size depends on the shape alone and each
// pair is one fixed computation (col2im adds a channel's contributions in the order
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

/// (Image, channel) pairs per tile: about 32k column entries of work, a function of the shape
/// only.
int64_t channel_tile(const Geometry& g) {
  const int64_t per_channel = std::max<int64_t>(1, g.kh * g.kw * g.oh * g.ow);
  return std::max<int64_t>(1, 32768 / per_channel);
}

/// Output rows narrower than this are written by one plain loop rather than fill / copy calls.
constexpr int64_t kShortRow = 8;

/// The output columns x in [lo, hi) whose input column x * sw - pw + off lies inside [0, width).
inline void valid_range(int64_t off, int64_t stride, int64_t size, int64_t out, int64_t& lo,
                        int64_t& hi) {
  // x * stride + off >= 0  <=>  x >= ceil(-off / stride); x * stride + off < size.
  lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  hi = size - off <= 0 ? 0 : (size - off - 1) / stride + 1;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
}

/// The columns of (image, channel) pairs q0 .. q1 (pair q: image q / channels, channel
/// q % channels; `image` is the first image, columns of leading dimension ld).
template <typename T>
void im2col_pairs(const Geometry& g, int64_t q0, int64_t q1, const T* image, int64_t ld,
                  T* columns) {
  const int64_t plane = g.oh * g.ow;
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t n = q / g.channels, c = q - n * g.channels;
    const T* src = image + q * g.height * g.width;
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        T* row = columns + ((c * g.kh + i) * g.kw + j) * ld + n * plane;
        const int64_t xoff = j * g.dw - g.pw;
        int64_t xlo, xhi;
        valid_range(xoff, g.sw, g.width, g.ow, xlo, xhi);
        for (int64_t y = 0; y < g.oh; ++y) {
          T* out = row + y * g.ow;
          const int64_t iy = y * g.sh - g.ph + i * g.dh;
          // Columns lo .. hi read the image, src[base + x * sw] (never outside it); the others
          // are padding.
          const bool row_in = iy >= 0 && iy < g.height;
          const int64_t lo = row_in ? xlo : 0, hi = row_in ? xhi : 0;
          const int64_t base = iy * g.width + xoff;
          if (g.ow < kShortRow) {
            // Short rows (ResNet's 7×7 down to 1×1 planes): one loop, no call per row.
            for (int64_t x = 0; x < g.ow; ++x)
              out[x] = x >= lo && x < hi ? src[base + x * g.sw] : T(0);
            continue;
          }
          std::fill(out, out + lo, T(0));
          if (g.sw == 1 && hi > lo)
            std::copy(src + base + lo, src + base + hi, out + lo);
          else
            for (int64_t x = lo; x < hi; ++x)
              out[x] = src[base + x * g.sw];
          std::fill(out + hi, out + g.ow, T(0));
        }
      }
  }
}

/// The adjoint of im2col_pairs: writes the (image, channel) planes q0 .. q1.
template <typename T>
void col2im_pairs(const Geometry& g, int64_t q0, int64_t q1, const T* columns, int64_t ld,
                  T* image) {
  const int64_t plane = g.oh * g.ow;
  for (int64_t q = q0; q < q1; ++q) {
    const int64_t n = q / g.channels, c = q - n * g.channels;
    T* dst = image + q * g.height * g.width;
    std::fill(dst, dst + g.height * g.width, T(0));
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const T* row = columns + ((c * g.kh + i) * g.kw + j) * ld + n * plane;
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

void CpuBackend::im2col(DType t, int64_t images, int64_t channels, int64_t height, int64_t width,
                        int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                        int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                        const void* image, int64_t columns_ld, void* columns) {
  const Geometry g = geometry(channels, height, width, kernel_h, kernel_w, stride_h, stride_w,
                              pad_h, pad_w, dilation_h, dilation_w);
  dispatch_float(t, "im2col", [&]<typename T>(T*) {
    parallel_tiles(images * channels, channel_tile(g), [&](int64_t lo, int64_t hi) {
      im2col_pairs(g, lo, hi, CLARENA_CTYPED(image), columns_ld, CLARENA_TYPED(columns));
    });
  });
}

void CpuBackend::col2im(DType t, int64_t images, int64_t channels, int64_t height, int64_t width,
                        int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                        int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                        const void* columns, int64_t columns_ld, void* image) {
  const Geometry g = geometry(channels, height, width, kernel_h, kernel_w, stride_h, stride_w,
                              pad_h, pad_w, dilation_h, dilation_w);
  dispatch_float(t, "col2im", [&]<typename T>(T*) {
    parallel_tiles(images * channels, channel_tile(g), [&](int64_t lo, int64_t hi) {
      col2im_pairs(g, lo, hi, CLARENA_CTYPED(columns), columns_ld, CLARENA_TYPED(image));
    });
  });
}

void CpuBackend::transpose_outer(DType t, int64_t a, int64_t b, int64_t inner, const void* src,
                                 void* dst) {
  // Tiles of destination blocks dst[j][i] (about 32k elements each); a block is a plain copy.
  const int64_t tile = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, inner));
  dispatch_all(t, "transpose_outer", [&]<typename T>(T*) {
    const T* s = CLARENA_CTYPED(src);
    T* d = CLARENA_TYPED(dst);
    parallel_tiles(a * b, tile, [&](int64_t lo, int64_t hi) {
      for (int64_t k = lo; k < hi; ++k) {
        const int64_t j = k / a, i = k - j * a;
        const T* from = s + (i * b + j) * inner;
        std::copy(from, from + inner, d + k * inner);
      }
    });
  });
}

}  // namespace clarena::kernels::cpu
