// conv2d: torch.nn.functional.conv2d on NCHW, by im2col and the backend's GEMM, forward and
// backward side by side.
//
// Per image and group: columns [C_in/g·kH·kW, H_out·W_out] (im2col), out_g = W_g · columns_g
// (+ bias). Backward: dW_g += dY_g · columns_gᵀ over the batch (im2col again from the saved
// input), dcolumns_g = W_gᵀ · dY_g then col2im into dx, db = the sum of dY over N, H, W. Each
// gradient is computed only when its input needs it, and the node saves x only for dW and the
// weight only for dx. A 1×1 kernel with stride 1 and no padding uses the image as its own
// columns (no im2col, and dx is written by the GEMM directly).
//
// Small outputs (fewer than 256 pixels) are batched: the columns of several images side by side
// ([C_in·kH·kW, images·plane], gathered by strided copies), so that one GEMM per group covers
// them all; the output goes back to NCHW by strided copies, and the backward's GEMMs likewise
// take dY side by side.
//
// Allocation: per call, one columns buffer shared by the images of the batch, and when batched
// the side-by-side columns and a [C_out, images·plane] matrix (tensors: on the GPU they come from
// the caching allocator, no cudaMalloc in steady state; on the CPU a few mallocs per call, small
// next to the GEMMs).
#include <algorithm>
#include <string>

#include "clarena/core/ops.h"
#include "op_helpers.h"

namespace clarena {
using autograd::Node;
using detail::backend;

namespace {

/// Sizes of one conv2d call.
struct ConvGeometry {
  int64_t n, c, h, w;     // input
  int64_t c_out, kh, kw;  // weight
  int64_t groups;
  Pair stride, padding, dilation;
  int64_t oh, ow;

  int64_t cin_g() const { return c / groups; }
  int64_t cout_g() const { return c_out / groups; }
  int64_t k_g() const { return cin_g() * kh * kw; }  // rows of a group's columns
  int64_t plane() const { return oh * ow; }
  /// Images per GEMM: small outputs (ResNet's 4×4 and 2×2 stages) are batched until a GEMM has
  /// at least kBatchColumns columns. A function of the shape alone (determinism).
  int64_t chunk() const {
    constexpr int64_t kBatchColumns = 256;
    return std::max<int64_t>(1, std::min<int64_t>(n, kBatchColumns / plane()));
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

void im2col(const ConvGeometry& g, const Tensor& like, const void* image, void* columns) {
  backend(like).im2col(like.dtype(), g.c, g.h, g.w, g.kh, g.kw, g.stride[0], g.stride[1],
                       g.padding[0], g.padding[1], g.dilation[0], g.dilation[1], image, columns);
}

void col2im(const ConvGeometry& g, const Tensor& like, const void* columns, void* image) {
  backend(like).col2im(like.dtype(), g.c, g.h, g.w, g.kh, g.kw, g.stride[0], g.stride[1],
                       g.padding[0], g.padding[1], g.dilation[0], g.dilation[1], columns, image);
}

/// The columns of image i of x: x's own storage when direct, else `cols` filled by im2col.
const void* columns_of(const ConvGeometry& g, const Tensor& x, int64_t i, const Tensor& cols) {
  const void* image = at(x, i * g.c * g.h * g.w);
  if (g.direct()) return image;
  im2col(g, x, image, cols.raw());
  return cols.raw();
}

Tensor columns_buffer(const ConvGeometry& g, const Tensor& like) {
  return g.direct() ? Tensor()
                    : Tensor::empty({g.c * g.kh * g.kw, g.plane()}, like.dtype(), like.device());
}

/// The columns of images i0 .. i0 + count side by side: all [C·kH·kW, count·plane], image j at
/// column j·plane (one im2col into `cols` per image, then a strided copy).
void gather_columns(const ConvGeometry& g, const Tensor& x, int64_t i0, int64_t count,
                    const Tensor& cols, const Tensor& all) {
  const int64_t rows = g.c * g.kh * g.kw, ld = count * g.plane();
  for (int64_t j = 0; j < count; ++j)
    backend(x).copy_block(x.dtype(), rows, g.plane(), columns_of(g, x, i0 + j, cols), g.plane(),
                          at(all, j * g.plane()), ld);
}

/// The adjoint of gather_columns: image j's block of `all` into dx (by col2im through `cols`, or
/// a strided copy when the image is its own columns).
void scatter_columns(const ConvGeometry& g, const Tensor& all, int64_t i0, int64_t count,
                     const Tensor& cols, const Tensor& dx) {
  const int64_t rows = g.c * g.kh * g.kw, ld = count * g.plane();
  kernels::Backend& be = backend(dx);
  for (int64_t j = 0; j < count; ++j) {
    void* image = at(dx, (i0 + j) * g.c * g.h * g.w);
    be.copy_block(dx.dtype(), rows, g.plane(), at(all, j * g.plane()), ld,
                  g.direct() ? image : cols.raw(), g.plane());
    if (!g.direct()) col2im(g, dx, cols.raw(), image);
  }
}

/// Moves [C_out, plane] blocks between images of t (NCHW) and a [C_out, count·plane] matrix.
void images_to_matrix(const ConvGeometry& g, const Tensor& t, int64_t i0, int64_t count,
                      const Tensor& matrix, bool to_matrix) {
  const int64_t plane = g.plane(), ld = count * plane;
  for (int64_t j = 0; j < count; ++j) {
    void* image = at(t, (i0 + j) * g.c_out * plane);
    void* block = at(matrix, j * plane);
    if (to_matrix)
      backend(t).copy_block(t.dtype(), g.c_out, plane, image, plane, block, ld);
    else
      backend(t).copy_block(t.dtype(), g.c_out, plane, block, ld, image, plane);
  }
}

std::vector<Tensor> conv2d_backward(Node& node, const Tensor& dy, const ConvGeometry& g,
                                    const Shape& x_shape, const Shape& w_shape) {
  const Tensor &x = node.saved(0), &w = node.saved(1);
  kernels::Backend& be = backend(dy);
  const DType t = dy.dtype();
  const int64_t plane = g.plane(), kg = g.k_g(), cog = g.cout_g();
  const int64_t image = g.c * g.h * g.w, out_image = g.c_out * plane;
  Tensor dx, dw, db;
  if (node.needs_grad(0)) {
    dx = Tensor::empty(x_shape, t, dy.device());
    Tensor dcols = columns_buffer(g, dy);
    const int64_t chunk = g.chunk();
    if (chunk == 1) {
      for (int64_t i = 0; i < g.n; ++i) {
        void* target = g.direct() ? at(dx, i * image) : dcols.raw();
        for (int64_t gi = 0; gi < g.groups; ++gi)
          be.gemm(t, true, false, kg, plane, cog, 1.0, at(w, gi * cog * kg),
                  at(dy, i * out_image + gi * cog * plane), 0.0,
                  static_cast<char*>(target) + gi * kg * plane * itemsize(t));
        if (!g.direct()) col2im(g, dy, dcols.raw(), at(dx, i * image));
      }
    } else {
      // dcolumns_g = W_gᵀ · dY_g over `chunk` images per GEMM, then each image's block.
      Tensor dy_all = Tensor::empty({g.c_out, chunk * plane}, t, dy.device());
      Tensor all = Tensor::empty({g.c * g.kh * g.kw, chunk * plane}, t, dy.device());
      for (int64_t i0 = 0; i0 < g.n; i0 += chunk) {
        const int64_t count = std::min(chunk, g.n - i0), width = count * plane;
        images_to_matrix(g, dy, i0, count, dy_all, true);
        for (int64_t gi = 0; gi < g.groups; ++gi)
          be.gemm(t, true, false, kg, width, cog, 1.0, at(w, gi * cog * kg),
                  at(dy_all, gi * cog * width), 0.0, at(all, gi * kg * width));
        scatter_columns(g, all, i0, count, dcols, dx);
      }
    }
  }
  if (node.needs_grad(1)) {
    dw = Tensor::empty(w_shape, t, dy.device());
    if (g.n == 0) be.fill(t, dw.numel(), 0.0, dw.raw());
    Tensor cols = columns_buffer(g, dy);
    const int64_t chunk = g.chunk();
    if (chunk == 1) {
      for (int64_t i = 0; i < g.n; ++i) {
        const char* c = static_cast<const char*>(columns_of(g, x, i, cols));
        for (int64_t gi = 0; gi < g.groups; ++gi)
          be.gemm(t, false, true, cog, kg, plane, 1.0, at(dy, i * out_image + gi * cog * plane),
                  c + gi * kg * plane * itemsize(t), i == 0 ? 0.0 : 1.0, at(dw, gi * cog * kg));
      }
    } else {
      // dW_g += dY_g · columns_gᵀ over `chunk` images per GEMM (both side by side).
      Tensor all = Tensor::empty({g.c * g.kh * g.kw, chunk * plane}, t, dy.device());
      Tensor dy_all = Tensor::empty({g.c_out, chunk * plane}, t, dy.device());
      for (int64_t i0 = 0; i0 < g.n; i0 += chunk) {
        const int64_t count = std::min(chunk, g.n - i0), width = count * plane;
        gather_columns(g, x, i0, count, cols, all);
        images_to_matrix(g, dy, i0, count, dy_all, true);
        for (int64_t gi = 0; gi < g.groups; ++gi)
          be.gemm(t, false, true, cog, kg, width, 1.0, at(dy_all, gi * cog * width),
                  at(all, gi * kg * width), i0 == 0 ? 0.0 : 1.0, at(dw, gi * cog * kg));
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

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
              const Conv2dOptions& options) {
  const ConvGeometry g = check_conv(x, weight, bias, options);
  kernels::Backend& be = backend(x);
  const DType t = x.dtype();
  const int64_t plane = g.plane(), kg = g.k_g(), cog = g.cout_g();
  Tensor y = Tensor::empty({g.n, g.c_out, g.oh, g.ow}, t, x.device());
  {
    Tensor cols = columns_buffer(g, x);
    const int64_t chunk = g.chunk();
    if (chunk == 1) {
      for (int64_t i = 0; i < g.n; ++i) {
        const char* c = static_cast<const char*>(columns_of(g, x, i, cols));
        for (int64_t gi = 0; gi < g.groups; ++gi)
          be.gemm(t, false, false, cog, plane, kg, 1.0, at(weight, gi * cog * kg),
                  c + gi * kg * plane * itemsize(t), 0.0, at(y, (i * g.c_out + gi * cog) * plane));
      }
    } else {
      // Small outputs: `chunk` images per GEMM, [C_out, chunk·plane], then back to NCHW.
      Tensor all = Tensor::empty({g.c * g.kh * g.kw, chunk * plane}, t, x.device());
      Tensor y_all = Tensor::empty({g.c_out, chunk * plane}, t, x.device());
      for (int64_t i0 = 0; i0 < g.n; i0 += chunk) {
        const int64_t count = std::min(chunk, g.n - i0), width = count * plane;
        gather_columns(g, x, i0, count, cols, all);
        for (int64_t gi = 0; gi < g.groups; ++gi)
          be.gemm(t, false, false, cog, width, kg, 1.0, at(weight, gi * cog * kg),
                  at(all, gi * kg * width), 0.0, at(y_all, gi * cog * width));
        images_to_matrix(g, y, i0, count, y_all, false);
      }
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
