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

/// best[i] = max(best[i], v[i]) for i < n, NaN winning (torch: take v when v > best or v is a
/// NaN); where v wins, arg[i] = base + i * step (arg may be null: values only).
template <typename T>
void max_select_row(int64_t n, const T* v, int64_t base, int64_t step, T* best, int64_t* arg) {
  int64_t i = 0;
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    // Lane l of the low half is output i + l, of the high half i + 8 + l (AVX512F alone: no
    // 64-bit multiply).
    const __m512i low =
        _mm512_set_epi64(7 * step, 6 * step, 5 * step, 4 * step, 3 * step, 2 * step, step, 0);
    const __m512i eight = _mm512_set1_epi64(8 * step);
    for (; i < n; i += 16) {
      const __mmask16 live = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
      const __m512 vi = _mm512_maskz_loadu_ps(live, v + i);
      const __m512 bi = _mm512_maskz_loadu_ps(live, best + i);
      const __mmask16 take =
          (_mm512_cmp_ps_mask(vi, bi, _CMP_GT_OQ) | _mm512_cmp_ps_mask(vi, vi, _CMP_UNORD_Q)) &
          live;
      _mm512_mask_storeu_ps(best + i, take, vi);
      if (arg && take) {
        const __m512i at = _mm512_add_epi64(_mm512_set1_epi64(base + i * step), low);
        _mm512_mask_storeu_epi64(arg + i, __mmask8(take), at);
        _mm512_mask_storeu_epi64(arg + i + 8, __mmask8(take >> 8), _mm512_add_epi64(at, eight));
      }
    }
    return;
  }
#endif
  for (; i < n; ++i) {
    const T vi = v[i];
    if (vi > best[i] || vi != vi) {
      best[i] = vi;
      if (arg) arg[i] = base + i * step;
    }
  }
}

}  // namespace

void CpuBackend::max_pool2d_forward(DType t, const Pool2dShape& s, const void* x_, void* y_,
                                    int64_t* indices) {
  dispatch_float(t, "max_pool2d", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(x_);
    T* y = CLARENA_TYPED(y_);
    const int64_t in_plane = s.height * s.width, out_plane = s.out_h * s.out_w;
    parallel_tiles(s.planes, plane_tile(s), [&](int64_t lo, int64_t hi) {
      // A whole output row at a time, window offset by window offset: each output still sees its
      // window in row-major order, but the inputs at one offset are first gathered into a
      // contiguous row (-inf where the offset falls in the padding: it never wins), so the
      // compare-and-select over the outputs runs in SIMD (per output, with branches, it
      // mispredicted about once per element on random data).
      thread_local std::vector<T> gathered;
      gathered.resize(static_cast<size_t>(s.out_w));
      T* g = gathered.data();
      for (int64_t p = lo; p < hi; ++p) {
        const T* xp = x + p * in_plane;
        for (int64_t oh = 0; oh < s.out_h; ++oh) {
          T* best = y + p * out_plane + oh * s.out_w;
          int64_t* arg = indices ? indices + p * out_plane + oh * s.out_w : nullptr;
          for (int64_t ow = 0; ow < s.out_w; ++ow) {
            best[ow] = -std::numeric_limits<T>::infinity();
            if (arg) {
              const Window w = window(s, oh, ow);
              arg[ow] = w.h0 * s.width + w.w0;
            }
          }
          const Window rows = window(s, oh, 0);
          for (int64_t h = rows.h0; h < rows.h1; ++h)
            for (int64_t j = 0; j < s.kernel_w; ++j) {
              const int64_t off = j - s.pad_w, stride = s.stride_w;
              // Outputs [first, end) have column ow * stride + off inside the input.
              const int64_t first = off >= 0 ? 0 : (-off + stride - 1) / stride;
              const int64_t end =
                  std::min(s.out_w, s.width - off <= 0 ? 0 : (s.width - off - 1) / stride + 1);
              const T* x_row = xp + h * s.width + off;
              std::fill(g, g + s.out_w, -std::numeric_limits<T>::infinity());
              for (int64_t ow = first; ow < end; ++ow)
                g[ow] = x_row[ow * stride];
              max_select_row(s.out_w, g, h * s.width + off, stride, best, arg);
            }
        }
      }
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
