// The position each kernel tap reads for each output pixel of a plane: the gather table that
// the CPU's small-plane im2col/col2im (conv.cpp) and max pooling (pool.cpp) share.
#pragma once

#include <cstdint>
#include <vector>

#include "../conv_geometry.h"

namespace clarena::kernels::cpu {

/// For each kernel tap t = (i, j) and output pixel o = (y, x), the input position
/// iy · width + ix that (t, o) reads, or -1 in the padding, at table[t · plane + o]: a function
/// of the geometry alone. The plane must hold fewer than 2^31 pixels.
inline std::vector<int32_t> tap_table(const ConvGeometry& g) {
  const int64_t plane = g.oh * g.ow;
  std::vector<int32_t> table(static_cast<size_t>(g.kh * g.kw * plane));
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j)
      for (int64_t y = 0; y < g.oh; ++y)
        for (int64_t x = 0; x < g.ow; ++x) {
          const int64_t iy = y * g.sh - g.ph + i * g.dh, ix = x * g.sw - g.pw + j * g.dw;
          const bool inside = iy >= 0 && iy < g.height && ix >= 0 && ix < g.width;
          table[static_cast<size_t>((i * g.kw + j) * plane + y * g.ow + x)] =
              inside ? static_cast<int32_t>(iy * g.width + ix) : -1;
        }
  return table;
}

}  // namespace clarena::kernels::cpu
