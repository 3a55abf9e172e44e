// CPU kernels: 2-D max and average pooling over the planes of [planes, H, W], forward and
// backward, as PyTorch's CPU kernels compute them (ceil_mode false).
//
// Work is split over planes (N·C) with parallel_tiles; a tile's size depends on the shape alone
// and each plane is computed by one fixed loop, so results are bitwise the same at any thread
// count. The backward scatters each output's gradient in output order into its own plane (no
// two planes share an element), which a GPU's per-input gather reproduces bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../dispatch.h"
#include "cpu_backend.h"
#include "tap_table.h"
#include "thread_pool.h"

namespace clarena::kernels::cpu {
namespace {

/// Planes per tile: about 16K input elements of work, at least one plane.
int64_t plane_tile(const Pool2dShape& s) {
  const int64_t per_plane = std::max<int64_t>(1, s.height * s.width + s.out_h * s.out_w);
  return std::max<int64_t>(1, (int64_t{1} << 14) / per_plane);
}

/// The window of output (oh, ow), clipped to the input: [h0, h1) x [w0, w1).
struct Window {
  int64_t h0, h1, w0, w1;
};
inline Window window(const Pool2dShape& s, int64_t oh, int64_t ow) {
  const int64_t hs = oh * s.stride_h - s.pad_h, ws = ow * s.stride_w - s.pad_w;
  return {std::max<int64_t>(hs, 0), std::min(hs + s.kernel_h, s.height), std::max<int64_t>(ws, 0),
          std::min(ws + s.kernel_w, s.width)};
}

/// count_include_pad: the window clipped to the padded input (torch's divide_factor).
inline int64_t pad_count(const Pool2dShape& s, int64_t oh, int64_t ow) {
  const int64_t hs = oh * s.stride_h - s.pad_h, ws = ow * s.stride_w - s.pad_w;
  const int64_t he = std::min(hs + s.kernel_h, s.height + s.pad_h);
  const int64_t we = std::min(ws + s.kernel_w, s.width + s.pad_w);
  return (he - hs) * (we - ws);
}

/// One plane by the definition: each output's window in row-major order, torch's rule (the
/// first maximum wins, a NaN wins over anything, the last NaN).
template <typename T>
void max_pool_plane(const Pool2dShape& s, const T* xp, T* yp, int64_t* ip) {
  for (int64_t oh = 0; oh < s.out_h; ++oh)
    for (int64_t ow = 0; ow < s.out_w; ++ow) {
      const Window w = window(s, oh, ow);
      T best = -std::numeric_limits<T>::infinity();
      int64_t arg = w.h0 * s.width + w.w0;
      for (int64_t h = w.h0; h < w.h1; ++h)
        for (int64_t c = w.w0; c < w.w1; ++c) {
          const T v = xp[h * s.width + c];
          if (v > best || v != v) {
            best = v;
            arg = h * s.width + c;
          }
        }
      yp[oh * s.out_w + ow] = best;
      if (ip) ip[oh * s.out_w + ow] = arg;
    }
}

#if defined(__AVX512F__)
/// The same, 16 outputs at a time. `source` holds, tap by tap (row-major in the window), the
/// plane position each output reads there or -1 in the padding; `first` each output's initial
/// index (its window's first position inside the image). A plane of any size is then gathers
/// and masked selects along its outputs, with no per-row overhead (ResNet's 7×7 outputs).
void max_pool_plane_avx512(int64_t outputs, int64_t taps, const int32_t* source,
                           const int32_t* first, const float* xp, float* yp, int64_t* ip) {
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t o = 0; o < outputs; o += 16) {
    const __mmask16 live =
        outputs - o >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (outputs - o)) - 1);
    __m512 best = neg_inf;
    __m512i arg = _mm512_maskz_loadu_epi32(live, first + o);
    for (int64_t k = 0; k < taps; ++k) {
      const __m512i at = _mm512_maskz_loadu_epi32(live, source + k * outputs + o);
      const __mmask16 inside = _mm512_mask_cmpge_epi32_mask(live, at, _mm512_setzero_si512());
      const __m512 v = _mm512_mask_i32gather_ps(neg_inf, inside, at, xp, 4);
      const __mmask16 take =
          (_mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q)) &
          inside;
      best = _mm512_mask_mov_ps(best, take, v);
      arg = _mm512_mask_mov_epi32(arg, take, at);
    }
    _mm512_mask_storeu_ps(yp + o, live, best);
    if (ip) {
      _mm512_mask_storeu_epi64(ip + o, __mmask8(live),
                               _mm512_cvtepi32_epi64(_mm512_castsi512_si256(arg)));
      _mm512_mask_storeu_epi64(ip + o + 8, __mmask8(live >> 8),
                               _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(arg, 1)));
    }
  }
}
#endif

}  // namespace

void CpuBackend::max_pool2d_forward(DType t, const Pool2dShape& s, const void* x_, void* y_,
                                    int64_t* indices) {
  dispatch_float(t, "max_pool2d", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(x_);
    T* y = CLARENA_TYPED(y_);
    const int64_t in_plane = s.height * s.width, out_plane = s.out_h * s.out_w;
#if defined(__AVX512F__)
    if constexpr (std::is_same_v<T, float>) {
      if (in_plane <= std::numeric_limits<int32_t>::max()) {
        // The gather tables, a function of the shape shared by every plane: the position
        // each tap reads (a pooling window is a convolution's receptive field), and each
        // output's first position inside the image (torch's initial index).
        const int64_t taps = s.kernel_h * s.kernel_w;
        const std::vector<int32_t> source =
            tap_table(conv_geometry(1, s.height, s.width, s.kernel_h, s.kernel_w, s.stride_h,
                                    s.stride_w, s.pad_h, s.pad_w, 1, 1));
        std::vector<int32_t> first(static_cast<size_t>(out_plane));
        for (int64_t oh = 0; oh < s.out_h; ++oh)
          for (int64_t ow = 0; ow < s.out_w; ++ow) {
            const Window w = window(s, oh, ow);
            first[oh * s.out_w + ow] = static_cast<int32_t>(w.h0 * s.width + w.w0);
          }
        parallel_tiles(s.planes, plane_tile(s), [&](int64_t lo, int64_t hi) {
          for (int64_t p = lo; p < hi; ++p)
            max_pool_plane_avx512(out_plane, taps, source.data(), first.data(), x + p * in_plane,
                                  y + p * out_plane, indices ? indices + p * out_plane : nullptr);
        });
        return;
      }
    }
#endif
    parallel_tiles(s.planes, plane_tile(s), [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p)
        max_pool_plane(s, x + p * in_plane, y + p * out_plane,
                       indices ? indices + p * out_plane : nullptr);
    });
  });
}

void CpuBackend::max_pool2d_backward(DType t, const Pool2dShape& s, const int64_t* indices,
                                     const void* dy_, void* dx_) {
  dispatch_float(t, "max_pool2d_backward", [&]<typename T>(T*) {
    const T* dy = CLARENA_CTYPED(dy_);
    T* dx = CLARENA_TYPED(dx_);
    const int64_t in_plane = s.height * s.width, out_plane = s.out_h * s.out_w;
    parallel_tiles(s.planes, plane_tile(s), [&](int64_t lo, int64_t hi) {
      std::fill(dx + lo * in_plane, dx + hi * in_plane, T(0));
      for (int64_t p = lo; p < hi; ++p) {
        const T* gp = dy + p * out_plane;
        const int64_t* ip = indices + p * out_plane;
        T* dp = dx + p * in_plane;
        for (int64_t o = 0; o < out_plane; ++o)
          dp[ip[o]] += gp[o];
      }
    });
  });
}

void CpuBackend::avg_pool2d_forward(DType t, const Pool2dShape& s, const void* x_, void* y_) {
  dispatch_float(t, "avg_pool2d", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(x_);
    T* y = CLARENA_TYPED(y_);
    const int64_t in_plane = s.height * s.width, out_plane = s.out_h * s.out_w;
    parallel_tiles(s.planes, plane_tile(s), [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        const T* xp = x + p * in_plane;
        T* yp = y + p * out_plane;
        for (int64_t oh = 0; oh < s.out_h; ++oh)
          for (int64_t ow = 0; ow < s.out_w; ++ow) {
            const Window w = window(s, oh, ow);
            T sum = 0;
            for (int64_t h = w.h0; h < w.h1; ++h)
              for (int64_t c = w.w0; c < w.w1; ++c)
                sum += xp[h * s.width + c];
            yp[oh * s.out_w + ow] = sum / static_cast<T>(pad_count(s, oh, ow));
          }
      }
    });
  });
}

void CpuBackend::avg_pool2d_backward(DType t, const Pool2dShape& s, const void* dy_, void* dx_) {
  dispatch_float(t, "avg_pool2d_backward", [&]<typename T>(T*) {
    const T* dy = CLARENA_CTYPED(dy_);
    T* dx = CLARENA_TYPED(dx_);
    const int64_t in_plane = s.height * s.width, out_plane = s.out_h * s.out_w;
    parallel_tiles(s.planes, plane_tile(s), [&](int64_t lo, int64_t hi) {
      std::fill(dx + lo * in_plane, dx + hi * in_plane, T(0));
      for (int64_t p = lo; p < hi; ++p) {
        const T* gp = dy + p * out_plane;
        T* dp = dx + p * in_plane;
        for (int64_t oh = 0; oh < s.out_h; ++oh)
          for (int64_t ow = 0; ow < s.out_w; ++ow) {
            const Window w = window(s, oh, ow);
            const T g = gp[oh * s.out_w + ow] / static_cast<T>(pad_count(s, oh, ow));
            for (int64_t h = w.h0; h < w.h1; ++h)
              for (int64_t c = w.w0; c < w.w1; ++c)
                dp[h * s.width + c] += g;
          }
      }
    });
  });
}

}  // namespace clarena::kernels::cpu
