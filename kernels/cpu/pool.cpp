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

}  // namespace

void CpuBackend::max_pool2d_forward(DType t, const Pool2dShape& s, const void* x_, void* y_,
                                    int64_t* indices) {
  dispatch_float(t, "max_pool2d", [&]<typename T>(T*) {
    const T* x = CLARENA_CTYPED(x_);
    T* y = CLARENA_TYPED(y_);
    const int64_t in_plane = s.height * s.width, out_plane = s.out_h * s.out_w;
    parallel_tiles(s.planes, plane_tile(s), [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        const T* xp = x + p * in_plane;
        T* yp = y + p * out_plane;
        int64_t* ip = indices + p * out_plane;
        for (int64_t oh = 0; oh < s.out_h; ++oh)
          for (int64_t ow = 0; ow < s.out_w; ++ow) {
            const Window w = window(s, oh, ow);
            // torch: the first maximum wins; a NaN wins over anything (the last NaN).
            T best = -std::numeric_limits<T>::infinity();
            int64_t arg = w.h0 * s.width + w.w0;
            for (int64_t h = w.h0; h < w.h1; ++h)
              for (int64_t c = w.w0; c < w.w1; ++c) {
                const T v = xp[h * s.width + c];
                if (v > best || std::isnan(v)) {
                  best = v;
                  arg = h * s.width + c;
                }
              }
            yp[oh * s.out_w + ow] = best;
            ip[oh * s.out_w + ow] = arg;
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
