// CPU kernels: 2-D max and average pooling over the planes of [planes, H, W], forward and
// backward, as PyTorch's CPU kernels compute them (ceil_mode false).
//
// Work is split over planes (N·C) with parallel_tiles; a tile's size depends on the shape alone
// and each plane is computed by one fixed loop, so results are bitwise the same at any thread
// count. The backward scatters each output's gradient in output order into its own plane (no
// two planes share an element), which a GPU's per-input gather reproduces bit for bit.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

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

/// Returns take ? v : current and sets index to take ? at : index, by masks: GCC turns the
/// plain ternaries into jumps, which mispredict about once per window on random data.
template <typename T>
inline T select(bool take, T v, T current, int64_t& index, int64_t at) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  const Bits mask = Bits(0) - Bits(take);
  const uint64_t mask64 = uint64_t(0) - uint64_t(take);
  index = static_cast<int64_t>((static_cast<uint64_t>(at) & mask64) |
                               (static_cast<uint64_t>(index) & ~mask64));
  return std::bit_cast<T>((std::bit_cast<Bits>(v) & mask) | (std::bit_cast<Bits>(current) & ~mask));
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
        for (int64_t oh = 0; oh < s.out_h; ++oh) {
          // A whole output row at once, window offset by window offset: each output still sees
          // its window in row-major order (torch: the first maximum wins, a NaN wins over
          // anything, the last NaN), but the inner loop runs along the row with selects instead
          // of branches, which on random data mispredicted about once per window.
          T* y_row = yp + oh * s.out_w;
          int64_t* i_row = ip + oh * s.out_w;
          for (int64_t ow = 0; ow < s.out_w; ++ow) {
            const Window w = window(s, oh, ow);
            y_row[ow] = -std::numeric_limits<T>::infinity();
            i_row[ow] = w.h0 * s.width + w.w0;
          }
          const Window rows = window(s, oh, 0);
          for (int64_t h = rows.h0; h < rows.h1; ++h)
            for (int64_t j = 0; j < s.kernel_w; ++j) {
              // Outputs whose column ow * stride_w - pad_w + j lies inside the input.
              const int64_t off = j - s.pad_w;
              const int64_t first = off >= 0 ? 0 : (-off + s.stride_w - 1) / s.stride_w;
              const int64_t end =
                  std::min(s.out_w, s.width - off <= 0 ? 0 : (s.width - off - 1) / s.stride_w + 1);
              // Locals: the stores below could alias `s` for all the compiler knows.
              const int64_t stride = s.stride_w, base = h * s.width + off;
              const T* x_row = xp + base;
              for (int64_t ow = first; ow < end; ++ow) {
                const T v = x_row[ow * stride];
                y_row[ow] =
                    select((v > y_row[ow]) | (v != v), v, y_row[ow], i_row[ow], base + ow * stride);
              }
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
