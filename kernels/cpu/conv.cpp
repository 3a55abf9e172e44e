// CPU kernels of the convolution: im2col and its adjoint col2im over a batch of images, and the
// outer-axes transpose conv2d moves its matrices with. im2col is split over the rows of the
// columns matrix, each written from end to end across all images; col2im over the channels
// (each adds a channel's contributions in the order (i, j, y, x)). A tile's size depends on the
// shape alone, so results are bitwise the same at any thread count. On AVX-512 builds, rows
// under 16 pixels (ResNet's planes at 28×28 inputs) skip the loops over short rows: at column
// stride 1, im2col copies each row with one masked load and store, and col2im sums each input
// row in a register over the taps that reach it; at other strides, a table of the position each
// tap reads per output pixel drives masked gathers and conflict-free scatters. Each gives the
// same values in the same order as the plain loops.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../conv_geometry.h"
#include "../dispatch.h"
#include "cpu_backend.h"
#include "tap_table.h"
#include "thread_pool.h"

namespace clarena::kernels::cpu {
namespace {

/// Output rows narrower than this are written by one plain loop rather than fill / copy calls.
constexpr int64_t kShortRow = 8;
/// About this many column entries per task (a function of the shape only).
constexpr int64_t kTaskEntries = 32768;

/// The output columns x in [lo, hi) whose input column x * sw - pw + off lies inside [0, width).
inline void valid_range(int64_t off, int64_t stride, int64_t size, int64_t out, int64_t& lo,
                        int64_t& hi) {
  // x * stride + off >= 0  <=>  x >= ceil(-off / stride); x * stride + off < size.
  lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  hi = size - off <= 0 ? 0 : (size - off - 1) / stride + 1;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
}

/// Rows r0 .. r1 of the columns (row r = (c, i, j)), each over all `images` side by side: the
/// writes run along the row (images · plane entries), the reads stay in one channel's planes.
template <typename T>
void im2col_rows(const ConvGeometry& g, int64_t images, int64_t r0, int64_t r1, const T* image,
                 int64_t ld, T* columns) {
  const int64_t plane = g.oh * g.ow, image_size = g.channels * g.height * g.width;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r / (g.kh * g.kw), i = r / g.kw % g.kh, j = r % g.kw;
    const int64_t xoff = j * g.dw - g.pw;
    int64_t xlo, xhi;
    valid_range(xoff, g.sw, g.width, g.ow, xlo, xhi);
    for (int64_t n = 0; n < images; ++n) {
      const T* src = image + n * image_size + c * g.height * g.width;
      T* out = columns + r * ld + n * plane;
      for (int64_t y = 0; y < g.oh; ++y, out += g.ow) {
        const int64_t iy = y * g.sh - g.ph + i * g.dh;
        // Columns lo .. hi read the image, src[base + x * sw] (never outside it); the others
        // are padding.
        const bool row_in = iy >= 0 && iy < g.height;
        const int64_t lo = row_in ? xlo : 0, hi = row_in ? xhi : 0;
        const int64_t base = iy * g.width + xoff;
        if (g.ow < kShortRow) {  // ResNet's 7×7 down to 1×1 planes: one loop, no call per row
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

/// The adjoint of im2col_rows for channels c0 .. c1 of every image: each plane is zeroed, then
/// gets its entries added in the order (i, j, y, x), as on the GPU.
template <typename T>
void col2im_channels(const ConvGeometry& g, int64_t images, int64_t c0, int64_t c1,
                     const T* columns, int64_t ld, T* image) {
  const int64_t plane = g.oh * g.ow, hw = g.height * g.width, image_size = g.channels * hw;
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t n = 0; n < images; ++n)
      std::fill_n(image + n * image_size + c * hw, hw, T(0));
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j) {
        const T* row = columns + ((c * g.kh + i) * g.kw + j) * ld;
        const int64_t xoff = j * g.dw - g.pw;
        int64_t xlo, xhi;
        valid_range(xoff, g.sw, g.width, g.ow, xlo, xhi);
        for (int64_t n = 0; n < images; ++n) {
          T* dst = image + n * image_size + c * hw;
          const T* in_plane = row + n * plane;
          for (int64_t y = 0; y < g.oh; ++y) {
            const int64_t iy = y * g.sh - g.ph + i * g.dh;
            if (iy < 0 || iy >= g.height) continue;
            const T* in = in_plane + y * g.ow;
            const int64_t base = iy * g.width + xoff;
            for (int64_t x = xlo; x < xhi; ++x)
              dst[base + x * g.sw] += in[x];
          }
        }
      }
  }
}

#if defined(__AVX512F__)
/// Rows narrower than this (ResNet's 7×7 down to 1×1 at 28×28 inputs) take the vector paths
/// below, where a loop per output row of a few pixels would cost more than its copies.
constexpr int64_t kGatherRow = 16;

inline __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1);
}

/// im2col_rows by the tap table: each image's plane of row r = (c, t) is masked gathers from
/// channel c (zeros in the padding), 16 pixels at a time.
void im2col_rows_gather(const ConvGeometry& g, const int32_t* table, int64_t images, int64_t r0,
                        int64_t r1, const float* image, int64_t ld, float* columns) {
  const int64_t plane = g.oh * g.ow, hw = g.height * g.width, taps = g.kh * g.kw;
  for (int64_t r = r0; r < r1; ++r) {
    const int32_t* tab = table + (r % taps) * plane;
    for (int64_t n = 0; n < images; ++n) {
      const float* src = image + (n * g.channels + r / taps) * hw;
      float* out = columns + r * ld + n * plane;
      for (int64_t o = 0; o < plane; o += 16) {
        const __mmask16 live = first_lanes(plane - o);
        const __m512i at = _mm512_maskz_loadu_epi32(live, tab + o);
        const __mmask16 inside = _mm512_mask_cmpge_epi32_mask(live, at, _mm512_setzero_si512());
        const __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), inside, at, src, 4);
        _mm512_mask_storeu_ps(out + o, live, v);
      }
    }
  }
}

/// col2im_channels by the tap table, in the same order (tap, then pixel): within one tap the
/// pixels read distinct positions, so each 16-pixel gather-add-scatter has no conflicts, and
/// every element gets its terms in the order of the plain loops (the same bits).
void col2im_channels_gather(const ConvGeometry& g, const int32_t* table, int64_t images, int64_t c0,
                            int64_t c1, const float* columns, int64_t ld, float* image) {
  const int64_t plane = g.oh * g.ow, hw = g.height * g.width, taps = g.kh * g.kw;
  for (int64_t c = c0; c < c1; ++c) {
    for (int64_t n = 0; n < images; ++n)
      std::fill_n(image + (n * g.channels + c) * hw, hw, 0.0f);
    for (int64_t t = 0; t < taps; ++t) {
      const int32_t* tab = table + t * plane;
      const float* row = columns + (c * taps + t) * ld;
      for (int64_t n = 0; n < images; ++n) {
        float* dst = image + (n * g.channels + c) * hw;
        for (int64_t o = 0; o < plane; o += 16) {
          const __mmask16 live = first_lanes(plane - o);
          const __m512i at = _mm512_maskz_loadu_epi32(live, tab + o);
          const __mmask16 inside = _mm512_mask_cmpge_epi32_mask(live, at, _mm512_setzero_si512());
          const __m512 sum =
              _mm512_add_ps(_mm512_mask_i32gather_ps(_mm512_setzero_ps(), inside, at, dst, 4),
                            _mm512_maskz_loadu_ps(inside, row + n * plane + o));
          _mm512_mask_i32scatter_ps(dst, inside, at, sum, 4);
        }
      }
    }
  }
}

/// Lanes [lo, hi) of a 16-lane mask (0 <= lo <= hi <= 16).
inline __mmask16 lanes(int64_t lo, int64_t hi) {
  return static_cast<__mmask16>(first_lanes(hi) & ~first_lanes(lo));
}

/// im2col_rows for output rows under 16 pixels at column stride 1: each output row is one masked
/// load of its input row's segment (zero where padded) and one masked store. Cheaper than the
/// gathers, which on this Zen 4 cost about a cycle per element.
void im2col_rows_short(const ConvGeometry& g, int64_t images, int64_t r0, int64_t r1,
                       const float* image, int64_t ld, float* columns) {
  const int64_t plane = g.oh * g.ow, hw = g.height * g.width, taps = g.kh * g.kw;
  const __mmask16 row = first_lanes(g.ow);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t c = r / taps, i = r / g.kw % g.kh, j = r % g.kw;
    const int64_t xoff = j * g.dw - g.pw;
    int64_t xlo, xhi;
    valid_range(xoff, 1, g.width, g.ow, xlo, xhi);
    const __mmask16 valid = lanes(xlo, xhi);
    for (int64_t n = 0; n < images; ++n) {
      // Lane x of a row reads src[iy * width + xoff + x]: only the valid lanes are touched.
      const float* src = image + (n * g.channels + c) * hw + xoff;
      float* out = columns + r * ld + n * plane;
      for (int64_t y = 0; y < g.oh; ++y) {
        const int64_t iy = y * g.sh - g.ph + i * g.dh;
        const __m512 v = iy >= 0 && iy < g.height ? _mm512_maskz_loadu_ps(valid, src + iy * g.width)
                                                  : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(out + y * g.ow, row, v);
      }
    }
  }
}

/// col2im_channels for input rows of at most 16 pixels at column stride 1: each input row is
/// summed in a register over the taps that reach it, in the plain loops' order (tap by tap from
/// zero: the same bits), from masked loads of the columns shifted into place, and stored once.
/// Adding into memory row by row instead stalled on every load after an overlapping store.
void col2im_channels_short(const ConvGeometry& g, int64_t images, int64_t c0, int64_t c1,
                           const float* columns, int64_t ld, float* image) {
  const int64_t plane = g.oh * g.ow, hw = g.height * g.width;
  const __mmask16 row = first_lanes(g.width);
  // Per kernel column j: the lanes ix it fills (output column x = ix - xoff read the image).
  std::vector<__mmask16> fills(static_cast<size_t>(g.kw));
  for (int64_t j = 0; j < g.kw; ++j) {
    int64_t xlo, xhi;
    valid_range(j * g.dw - g.pw, 1, g.width, g.ow, xlo, xhi);
    fills[j] = lanes(xlo + j * g.dw - g.pw, xhi + j * g.dw - g.pw);
  }
  for (int64_t c = c0; c < c1; ++c)
    for (int64_t n = 0; n < images; ++n)
      for (int64_t iy = 0; iy < g.height; ++iy) {
        __m512 sum = _mm512_setzero_ps();
        for (int64_t i = 0; i < g.kh; ++i) {
          const int64_t at = iy + g.ph - i * g.dh;  // y · sh for the output row y reaching iy
          if (at < 0) break;                        // and for every later i
          const int64_t y = g.sh == 1 ? at : at / g.sh;
          if (y >= g.oh || y * g.sh != at) continue;
          const float* in = columns + (c * g.kh + i) * g.kw * ld + n * plane + y * g.ow + g.pw;
          for (int64_t j = 0; j < g.kw; ++j, in += ld - g.dw)
            sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(fills[j], in));
        }
        _mm512_mask_storeu_ps(image + (n * g.channels + c) * hw + iy * g.width, row, sum);
      }
}
#endif

}  // namespace

void CpuBackend::im2col(DType t, int64_t images, int64_t channels, int64_t height, int64_t width,
                        int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                        int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                        const void* image, int64_t columns_ld, void* columns) {
  const ConvGeometry g = conv_geometry(channels, height, width, kernel_h, kernel_w, stride_h,
                                       stride_w, pad_h, pad_w, dilation_h, dilation_w);
  dispatch_float(t, "im2col", [&]<typename T>(T*) {
    const int64_t row_entries = std::max<int64_t>(1, images * g.oh * g.ow);
    const int64_t rows = channels * kernel_h * kernel_w;
    const int64_t tile = std::max<int64_t>(1, kTaskEntries / row_entries);
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float>) {
      if (g.ow < kGatherRow && g.sw == 1) {
        parallel_tiles(rows, tile, [&](int64_t lo, int64_t hi) {
          im2col_rows_short(g, images, lo, hi, CLARENA_CTYPED(image), columns_ld,
                            CLARENA_TYPED(columns));
        });
        return;
      }
      if (g.ow < kGatherRow) {
        const std::vector<int32_t> table = tap_table(g);
        parallel_tiles(rows, tile, [&](int64_t lo, int64_t hi) {
          im2col_rows_gather(g, table.data(), images, lo, hi, CLARENA_CTYPED(image), columns_ld,
                             CLARENA_TYPED(columns));
        });
        return;
      }
    }
#endif
    parallel_tiles(rows, tile, [&](int64_t lo, int64_t hi) {
      im2col_rows(g, images, lo, hi, CLARENA_CTYPED(image), columns_ld, CLARENA_TYPED(columns));
    });
  });
}

void CpuBackend::col2im(DType t, int64_t images, int64_t channels, int64_t height, int64_t width,
                        int64_t kernel_h, int64_t kernel_w, int64_t stride_h, int64_t stride_w,
                        int64_t pad_h, int64_t pad_w, int64_t dilation_h, int64_t dilation_w,
                        const void* columns, int64_t columns_ld, void* image) {
  const ConvGeometry g = conv_geometry(channels, height, width, kernel_h, kernel_w, stride_h,
                                       stride_w, pad_h, pad_w, dilation_h, dilation_w);
  dispatch_float(t, "col2im", [&]<typename T>(T*) {
    const int64_t channel_entries = std::max<int64_t>(1, images * g.kh * g.kw * g.oh * g.ow);
    const int64_t tile = std::max<int64_t>(1, kTaskEntries / channel_entries);
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float>) {
      if (g.width <= kGatherRow && g.sw == 1) {
        parallel_tiles(channels, tile, [&](int64_t lo, int64_t hi) {
          col2im_channels_short(g, images, lo, hi, CLARENA_CTYPED(columns), columns_ld,
                                CLARENA_TYPED(image));
        });
        return;
      }
      if (g.ow < kGatherRow) {
        const std::vector<int32_t> table = tap_table(g);
        parallel_tiles(channels, tile, [&](int64_t lo, int64_t hi) {
          col2im_channels_gather(g, table.data(), images, lo, hi, CLARENA_CTYPED(columns),
                                 columns_ld, CLARENA_TYPED(image));
        });
        return;
      }
    }
#endif
    parallel_tiles(channels, tile, [&](int64_t lo, int64_t hi) {
      col2im_channels(g, images, lo, hi, CLARENA_CTYPED(columns), columns_ld, CLARENA_TYPED(image));
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
