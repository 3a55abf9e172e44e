// The geometry of one im2col / col2im call, shared by the CPU and CUDA backends (private to
// kernels/): the sizes the Backend interface passes, and the output size they imply.
#pragma once

#include <cstdint>

namespace clarena::kernels {

struct ConvGeometry {
  int64_t channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow;
};

/// out = (in + 2 pad - dilation (kernel - 1) - 1) / stride + 1 in each direction, as torch.
inline ConvGeometry conv_geometry(int64_t channels, int64_t height, int64_t width, int64_t kh,
                                  int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                  int64_t dh, int64_t dw) {
  const int64_t oh = (height + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const int64_t ow = (width + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  return {channels, height, width, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow};
}

}  // namespace clarena::kernels
