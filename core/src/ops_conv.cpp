// conv2d: torch.nn.functional.conv2d on NCHW, by im2col and the backend's GEMM, forward and
// backward side by side.
//
// The batch runs in chunks of images (ConvGeometry::chunk: a function of the shape and the
// device type alone; whole batches of small planes, bounded by a columns budget). Per chunk: one
// batched im2col writes the columns of all its images side by side, [C_in·kH·kW, count·plane]
// (image j at column j·plane; each group's rows are a block of C_in/g·kH·kW rows), then one GEMM
// per group gives Y_g = W_g · columns_g as [C_out, count·plane], moved to NCHW by one transpose of
// the outer axes (+ bias over the whole output). Backward, per chunk: dY moved to [C_out,
// count·plane] by one transpose; dW_g += dY_g · columns_gᵀ (im2col again from the saved input; the
// first chunk overwrites, the others accumulate, in a fixed order); dcolumns_g = W_gᵀ · dY_g, then
// one batched col2im into dx; db = the sum of dY over N, H, W. Each gradient is computed only when
// its input needs it, and the node saves x only for dW and the weight only for dx. A 1×1 kernel
// with stride 1 and no padding needs no im2col: the images' [C_in, count·plane] matrix is x
// transposed (and dx is dcolumns transposed back). A chunk of one image skips the transposes: its
// NCHW block already is the matrix.
//
// Allocation: per call, one columns buffer [C_in·kH·kW, chunk·plane] (shared by dW and dx in
// the backward; none for a direct chunk of one image) and, when chunks hold several images, one
// [C_out, chunk·plane] matrix for Y or dY (tensors: on the GPU they come from the caching
// allocator, no cudaMalloc in steady state; on the CPU a few mallocs per call, small next to
// the GEMMs).
#include <algorithm>
#include <string>
#include <vector>

#include "clarena/core/ops.h"
#include "op_helpers.h"

namespace clarena {
using autograd::Node;
using detail::backend;

namespace {

/// Elements of one chunk's columns matrix. On the CPU 2^20 (4 MiB of float32, well inside L3):
/// with our own GEMM, ResNet-18's steps ran 10–20% faster than at 2^18 (chosen on Eigen's GEMM,
/// which did worse on the larger products), three interleaved rounds; on a GPU 2^22 (16 MiB),
/// where the cost is in launches rather than caches, so that ResNet's small planes (7×7 down to
/// 1×1 on 28×28 inputs) take the whole batch in one chunk.
constexpr int64_t kCpuColumnsBudget = int64_t{1} << 20;
constexpr int64_t kGpuColumnsBudget = int64_t{1} << 22;
/// On the CPU, an output plane of this many pixels gives one image's GEMMs enough columns: such
/// images are a chunk each (batching them would only add the transposes).
constexpr int64_t kCpuWidePlane = 256;

/// Sizes of one conv2d call.
struct ConvGeometry {
  int64_t n, c, h, w;     // input
  int64_t c_out, kh, kw;  // weight
  int64_t groups;
  Pair stride, padding, dilation;
  int64_t oh, ow;
  bool cpu = true;  // the device type, which sets the chunk size

  int64_t cin_g() const { return c / groups; }
  int64_t cout_g() const { return c_out / groups; }
  int64_t k_g() const { return cin_g() * kh * kw; }  // rows of a group's columns
  int64_t plane() const { return oh * ow; }
  int64_t rows() const { return c * kh * kw; }  // rows of the columns matrix
  /// Images per chunk: as many as keep the columns [C·kH·kW, images·plane] within the device
  /// type's budget, at least 1, at most the batch (on the CPU, 1 for planes of kCpuWidePlane
  /// pixels or more). A function of the shape and the device type alone, not of the thread
  /// count (determinism: dW sums the chunks in this order).
  int64_t chunk() const {
    if (cpu && plane() >= kCpuWidePlane) return 1;
    const int64_t budget = cpu ? kCpuColumnsBudget : kGpuColumnsBudget;
    return std::clamp<int64_t>(budget / (rows() * plane()), 1, std::max<int64_t>(n, 1));
  }
  /// The image is its own columns matrix [C, H·W].
  bool direct() const {
    return kh == 1 && kw == 1 && stride[0] == 1 && stride[1] == 1 && padding[0] == 0 &&
           padding[1] == 0;
  }
};

std::string pair_str(const Pair& p) {
  // Appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "(" + std::to_string(...).
  std::string s = "(";
  s += std::to_string(p[0]);
  s += ", ";
  s += std::to_string(p[1]);
  s += ")";
  return s;
}

ConvGeometry check_conv(const Tensor& x, const Tensor& w, const Tensor& b, const Conv2dOptions& o) {
  const char* op = "conv2d";
  detail::check_inputs(op, {x, w, b});
  detail::check_float(op, x);
  detail::check_rank(op, x, 4);
  detail::check_rank(op, w, 4);
  if (o.groups < 1)
    throw ValueError(std::string(op) + ": groups must be positive, got " +
                     std::to_string(o.groups));
  for (int d = 0; d < 2; ++d) {
    if (o.stride[d] < 1)
      throw ValueError(std::string(op) + ": stride must be positive, got " + pair_str(o.stride));
    if (o.dilation[d] < 1)
      throw ValueError(std::string(op) + ": dilation must be positive, got " +
                       pair_str(o.dilation));
    if (o.padding[d] < 0)
      throw ValueError(std::string(op) + ": padding must be non-negative, got " +
                       pair_str(o.padding));
  }
  for (int64_t d = 0; d < 4; ++d)
    if (w.size(d) < 1)
      throw ShapeError(std::string(op) + ": weight " + shape_str(w.shape()) +
                       " has an empty dimension");
  if (x.size(2) < 1 || x.size(3) < 1 || x.size(1) < 1)
    throw ShapeError(std::string(op) + ": input " + shape_str(x.shape()) +
                     " has no channels or an empty image");
  if (w.size(0) % o.groups != 0)
    detail::shape_mismatch(
        op, x, w,
        "weight.size(0) = out channels must be divisible by groups = " + std::to_string(o.groups));
  if (x.size(1) != w.size(1) * o.groups)
    detail::shape_mismatch(op, x, w,
                           "input channels must equal weight.size(1) * groups; groups = " +
                               std::to_string(o.groups) + ", weight is [out, in / groups, kH, kW]");
  if (b.defined() && (b.dim() != 1 || b.size(0) != w.size(0)))
    detail::shape_mismatch(op, w, b, "bias must be [out channels]");
  ConvGeometry g{x.size(0), x.size(1), x.size(2), x.size(3),  w.size(0), w.size(2), w.size(3),
                 o.groups,  o.stride,  o.padding, o.dilation, 0,         0};
  g.cpu = x.device().is_cpu();
  g.oh = (g.h + 2 * g.padding[0] - g.dilation[0] * (g.kh - 1) - 1) / g.stride[0] + 1;
  g.ow = (g.w + 2 * g.padding[1] - g.dilation[1] * (g.kw - 1) - 1) / g.stride[1] + 1;
  // The padded extent must hold one dilated kernel (the division above truncates toward 0).
  if (g.h + 2 * g.padding[0] < g.dilation[0] * (g.kh - 1) + 1 ||
      g.w + 2 * g.padding[1] < g.dilation[1] * (g.kw - 1) + 1 || g.oh < 1 || g.ow < 1)
    detail::shape_mismatch(op, x, w,
                           "output size would be < 1 with padding " + pair_str(o.padding) +
                               " and dilation " + pair_str(o.dilation));
  return g;
}

/// The element `offset` of t's storage (an image or a group's block).
void* at(const Tensor& t, int64_t offset) {
  return static_cast<char*>(t.raw()) + offset * static_cast<int64_t>(itemsize(t.dtype()));
}

/// [rows, chunk·plane] of like's type and device when `needed` (and the batch is not empty), else
/// an undefined tensor.
Tensor matrix_buffer(bool needed, int64_t rows, const ConvGeometry& g, const Tensor& like) {
  return needed && g.n > 0
             ? Tensor::empty({rows, g.chunk() * g.plane()}, like.dtype(), like.device())
             : Tensor();
}

/// The [rows, count·plane] matrix of images i0 .. i0 + count of t ([N, rows, plane]): t's own
/// block for one image, else `buf` filled by a transpose.
const void* as_matrix(const Tensor& t, int64_t rows, int64_t plane, int64_t i0, int64_t count,
                      const Tensor& buf) {
  const void* images = at(t, i0 * rows * plane);
  if (count == 1) return images;
  backend(t).transpose_outer(t.dtype(), count, rows, plane, images, buf.raw());
  return buf.raw();
}

/// Where to write the [rows, count·plane] matrix of images i0 .. i0 + count of t: t's own block
/// for one image, else `buf` (then moved into t by from_matrix).
void* matrix_target(const Tensor& t, int64_t rows, int64_t plane, int64_t i0, int64_t count,
                    const Tensor& buf) {
  return count == 1 ? at(t, i0 * rows * plane) : buf.raw();
}

/// The adjoint of as_matrix: `buf` into images i0 .. i0 + count of t (nothing for one image).
void from_matrix(const Tensor& buf, int64_t rows, int64_t plane, int64_t i0, int64_t count,
                 const Tensor& t) {
  if (count > 1)
    backend(t).transpose_outer(t.dtype(), rows, count, plane, buf.raw(), at(t, i0 * rows * plane));
}

/// The columns of images i0 .. i0 + count of x, [C·kH·kW, count·plane]: in `cols` by one
/// batched im2col, or the images' own matrix when direct.
const void* columns_of(const ConvGeometry& g, const Tensor& x, int64_t i0, int64_t count,
                       const Tensor& cols) {
  if (g.direct()) return as_matrix(x, g.c, g.plane(), i0, count, cols);
  backend(x).im2col(x.dtype(), count, g.c, g.h, g.w, g.kh, g.kw, g.stride[0], g.stride[1],
                    g.padding[0], g.padding[1], g.dilation[0], g.dilation[1],
                    at(x, i0 * g.c * g.h * g.w), count * g.plane(), cols.raw());
  return cols.raw();
}

/// Where the GEMMs write the dcolumns of images i0 .. i0 + count.
void* dcolumns_target(const ConvGeometry& g, const Tensor& dx, int64_t i0, int64_t count,
                      const Tensor& dcols) {
  return g.direct() ? matrix_target(dx, g.c, g.plane(), i0, count, dcols) : dcols.raw();
}

/// The adjoint of columns_of: dcolumns into images i0 .. i0 + count of dx (col2im, or the
/// transpose back when direct).
void columns_to_images(const ConvGeometry& g, const Tensor& dcols, int64_t i0, int64_t count,
                       const Tensor& dx) {
  if (g.direct()) return from_matrix(dcols, g.c, g.plane(), i0, count, dx);
  backend(dx).col2im(dx.dtype(), count, g.c, g.h, g.w, g.kh, g.kw, g.stride[0], g.stride[1],
                     g.padding[0], g.padding[1], g.dilation[0], g.dilation[1], dcols.raw(),
                     count * g.plane(), at(dx, i0 * g.c * g.h * g.w));
}

std::vector<Tensor> conv2d_backward(Node& node, const Tensor& dy, const ConvGeometry& g,
                                    const Shape& x_shape, const Shape& w_shape) {
  const Tensor &x = node.saved(0), &w = node.saved(1);
  kernels::Backend& be = backend(dy);
  const DType t = dy.dtype();
  const int64_t plane = g.plane(), kg = g.k_g(), cog = g.cout_g(), chunk = g.chunk();
  const size_t item = itemsize(t);
  const bool need_dx = node.needs_grad(0), need_dw = node.needs_grad(1);
  Tensor dx, dw, db;
  if (need_dx) dx = Tensor::empty(x_shape, t, dy.device());
  if (need_dw) {
    dw = Tensor::empty(w_shape, t, dy.device());
    if (g.n == 0) be.fill(t, dw.numel(), 0.0, dw.raw());
  }
  if (need_dx || need_dw) {
    // One columns buffer: the chunk's columns for dW, then its dcolumns for dx.
    const Tensor cols = matrix_buffer(!g.direct() || chunk > 1, g.rows(), g, dy);
    const Tensor dy_buf = matrix_buffer(chunk > 1, g.c_out, g, dy);
    for (int64_t i0 = 0; i0 < g.n; i0 += chunk) {
      const int64_t count = std::min(chunk, g.n - i0), width = count * plane;
      const char* dym = static_cast<const char*>(as_matrix(dy, g.c_out, plane, i0, count, dy_buf));
      if (need_dw) {
        // dW_g (+)= dY_g · columns_gᵀ
        const char* c = static_cast<const char*>(columns_of(g, x, i0, count, cols));
        for (int64_t gi = 0; gi < g.groups; ++gi)
          be.gemm(t, false, true, cog, kg, width, 1.0, dym + gi * cog * width * item,
                  c + gi * kg * width * item, i0 == 0 ? 0.0 : 1.0, at(dw, gi * cog * kg));
      }
      if (need_dx) {
        // dcolumns_g = W_gᵀ · dY_g, then into the images.
        char* target = static_cast<char*>(dcolumns_target(g, dx, i0, count, cols));
        for (int64_t gi = 0; gi < g.groups; ++gi)
          be.gemm(t, true, false, kg, width, cog, 1.0, at(w, gi * cog * kg),
                  dym + gi * cog * width * item, 0.0, target + gi * kg * width * item);
        columns_to_images(g, cols, i0, count, dx);
      }
    }
  }
  if (node.needs_grad(2)) {
    // Sum over H·W per (image, channel), then over the batch: a fixed order on every device.
    Tensor per_image = Tensor::empty({g.n, g.c_out}, t, dy.device());
    be.reduce_sum(t, g.n * g.c_out, plane, 1, 1.0, dy.raw(), 0.0, per_image.raw());
    db = Tensor::empty({g.c_out}, t, dy.device());
    be.reduce_sum(t, 1, g.n, g.c_out, 1.0, per_image.raw(), 0.0, db.raw());
  }
  return {dx, dw, db};
}

/// The kernel taps along one axis that read the image for some output: [lo, hi). Other taps
/// only ever meet padding. Returns false when the live taps are not one run.
bool live_taps(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad, int64_t dilation,
               int64_t& lo, int64_t& hi) {
  lo = k;
  hi = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int64_t first = i * dilation - pad;  // the row tap i reads for output 0
    const int64_t y = first >= 0 ? 0 : (-first + stride - 1) / stride;  // first output inside
    if (y < out && first + y * stride < in) {
      if (lo < k && hi != i) return false;  // a gap
      lo = std::min(lo, i);
      hi = i + 1;
    }
  }
  return lo < hi;
}

/// conv2d with the kernel cropped to its live taps when some taps only ever read padding, the
/// padding reduced to match: the same outputs (each live tap reads the same pixels; zeros times
/// weights add nothing), without multiplying the padding. ResNet-18's 3×3 convolutions on the
/// 2×2 and 1×1 planes of 28×28 inputs keep 4 and 1 of their 9 taps. Returns false when nothing
/// would be cropped.
bool cropped_conv(const Tensor& x, const Tensor& weight, const Tensor& bias, const ConvGeometry& g,
                  Tensor& y) {
  int64_t i0, i1, j0, j1;
  if (!live_taps(g.h, g.oh, g.kh, g.stride[0], g.padding[0], g.dilation[0], i0, i1) ||
      !live_taps(g.w, g.ow, g.kw, g.stride[1], g.padding[1], g.dilation[1], j0, j1))
    return false;
  if (i0 == 0 && i1 == g.kh && j0 == 0 && j1 == g.kw) return false;
  const Pair padding{g.padding[0] - i0 * g.dilation[0], g.padding[1] - j0 * g.dilation[1]};
  const int64_t kh = i1 - i0, kw = j1 - j0;
  const int64_t oh = (g.h + 2 * padding[0] - g.dilation[0] * (kh - 1) - 1) / g.stride[0] + 1;
  const int64_t ow = (g.w + 2 * padding[1] - g.dilation[1] * (kw - 1) - 1) / g.stride[1] + 1;
  if (padding[0] < 0 || padding[1] < 0 || oh != g.oh || ow != g.ow) return false;
  // weight[:, :, i0:i1, j0:j1], gradient included: one block of columns of [C_out·C_in/g,
  // kH·kW] per kernel row.
  const Tensor flat = weight.reshape({weight.size(0) * weight.size(1), g.kh * g.kw});
  std::vector<Tensor> rows;
  for (int64_t i = i0; i < i1; ++i)
    rows.push_back(narrow(flat, 1, i * g.kw + j0, kw));
  const Tensor cropped = (rows.size() == 1 ? rows[0] : concat(rows, 1))
                             .reshape({weight.size(0), weight.size(1), kh, kw});
  y = conv2d(x, cropped, bias, {g.stride, padding, g.dilation, g.groups});
  return true;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const Conv2dOptions& options) {
  const ConvGeometry g = check_conv(x, weight, bias, options);
  if (Tensor y; cropped_conv(x, weight, bias, g, y)) return y;
  kernels::Backend& be = backend(x);
  const DType t = x.dtype();
  const int64_t plane = g.plane(), kg = g.k_g(), cog = g.cout_g();
  Tensor y = Tensor::empty({g.n, g.c_out, g.oh, g.ow}, t, x.device());
  {
    const int64_t chunk = g.chunk();
    const size_t item = itemsize(t);
    const Tensor cols = matrix_buffer(!g.direct() || chunk > 1, g.rows(), g, x);
    const Tensor y_buf = matrix_buffer(chunk > 1, g.c_out, g, x);
    for (int64_t i0 = 0; i0 < g.n; i0 += chunk) {
      // Y_g = W_g · columns_g over the chunk's images, [C_out, count·plane], then to NCHW.
      const int64_t count = std::min(chunk, g.n - i0), width = count * plane;
      const char* c = static_cast<const char*>(columns_of(g, x, i0, count, cols));
      char* ym = static_cast<char*>(matrix_target(y, g.c_out, plane, i0, count, y_buf));
      for (int64_t gi = 0; gi < g.groups; ++gi)
        be.gemm(t, false, false, cog, width, kg, 1.0, at(weight, gi * cog * kg),
                c + gi * kg * width * item, 0.0, ym + gi * cog * width * item);
      from_matrix(y_buf, g.c_out, plane, i0, count, y);
    }
  }
  if (bias.defined() && g.n > 0) {
    // One image's bias plane [C_out, H_out·W_out], added to every image of the batch.
    Tensor bias_plane = Tensor::empty({g.c_out * plane}, t, x.device());
    be.expand(t, g.c_out, plane, 1, 1.0, bias.raw(), bias_plane.raw());
    be.binary(kernels::Binary::Add, kernels::Broadcast::RowB, t, g.n, g.c_out * plane, y.raw(),
              bias_plane.raw(), y.raw());
  }
  if (!autograd::any_needs_grad({x, weight, bias})) return y;
  auto node = autograd::make_node("conv2d", {x, weight, bias});
  node->save(
      {autograd::needs_grad(weight) ? x : Tensor(), autograd::needs_grad(x) ? weight : Tensor()});
  node->set_backward([g, x_shape = x.shape(), w_shape = weight.shape()](Node& n, const Tensor& dy) {
    return conv2d_backward(n, dy, g, x_shape, w_shape);
  });
  return autograd::attach(y, node);
}

}  // namespace clarena
