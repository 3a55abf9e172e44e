// Pooling over NCHW images and flatten: forward and backward side by side.
//
// PyTorch's semantics with ceil_mode false: out = (in + 2 * pad - kernel) / stride + 1; padding
// at most half the kernel; max pooling pads with -inf, saves the index (within the plane) of the
// first maximum of each window (a NaN wins, as in torch) and sends the gradient there; average
// pooling counts the padding in the divisor (count_include_pad).
#include "clarena/core/ops.h"
#include "op_helpers.h"

#include <string>

namespace clarena {
using autograd::Node;
using detail::backend;
using kernels::Pool2dShape;

namespace {

std::string pair_str(Pair p) {
  // Appended piece by piece: GCC 12 warns (-Wrestrict, falsely) on "(" + std::string&&.
  std::string s = "(";
  s += std::to_string(p[0]);
  s += ", ";
  s += std::to_string(p[1]);
  s += ")";
  return s;
}

/// Checks the arguments and works out the output's geometry.
Pool2dShape pool_shape(const char* op, const Tensor& x, Pair kernel, Pair stride, Pair padding) {
  detail::check_float(op, x);
  detail::check_rank(op, x, 4);
  if (stride[0] == 0 && stride[1] == 0) stride = kernel;
  const std::string args = " (kernel " + pair_str(kernel) + ", stride " + pair_str(stride) +
                           ", padding " + pair_str(padding) + ")";
  for (int d = 0; d < 2; ++d) {
    if (kernel[d] <= 0 || stride[d] <= 0)
      throw ValueError(std::string(op) + ": kernel and stride must be positive" + args);
    if (padding[d] < 0 || padding[d] > kernel[d] / 2)
      throw ValueError(std::string(op) +
                       ": padding must be non-negative and at most half the kernel" + args);
    if (x.size(2 + d) + 2 * padding[d] < kernel[d])
      throw ShapeError(std::string(op) + ": kernel larger than the padded input of shape " +
                       shape_str(x.shape()) + args);
  }
  Pool2dShape s;
  s.planes = x.size(0) * x.size(1);
  s.height = x.size(2);
  s.width = x.size(3);
  s.kernel_h = kernel[0];
  s.kernel_w = kernel[1];
  s.stride_h = stride[0];
  s.stride_w = stride[1];
  s.pad_h = padding[0];
  s.pad_w = padding[1];
  s.out_h = (s.height + 2 * s.pad_h - s.kernel_h) / s.stride_h + 1;
  s.out_w = (s.width + 2 * s.pad_w - s.kernel_w) / s.stride_w + 1;
  return s;
}

Shape out_shape(const Tensor& x, const Pool2dShape& s) {
  return {x.size(0), x.size(1), s.out_h, s.out_w};
}

}  // namespace

Tensor max_pool2d(const Tensor& x, Pair kernel, Pair stride, Pair padding) {
  const Pool2dShape s = pool_shape("max_pool2d", x, kernel, stride, padding);
  Tensor y = Tensor::empty(out_shape(x, s), x.dtype(), x.device());
  if (!autograd::any_needs_grad({x})) {  // the values alone: no indices to write
    if (y.numel() > 0) backend(x).max_pool2d_forward(x.dtype(), s, x.raw(), y.raw(), nullptr);
    return y;
  }
  Tensor indices = Tensor::empty(y.shape(), DType::Int64, x.device());
  if (y.numel() > 0)
    backend(x).max_pool2d_forward(x.dtype(), s, x.raw(), y.raw(), indices.data<int64_t>());
  auto node = autograd::make_node("max_pool2d", {x});
  node->save({indices});
  node->set_backward([s, shape = x.shape()](Node& n, const Tensor& dy) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(shape, dy.dtype(), dy.device());
    if (dx.numel() > 0)
      backend(dy).max_pool2d_backward(dy.dtype(), s, n.saved(0).data<int64_t>(), dy.raw(),
                                      dx.raw());
    return {dx};
  });
  return autograd::attach(y, node);
}

Tensor avg_pool2d(const Tensor& x, Pair kernel, Pair stride, Pair padding) {
  const Pool2dShape s = pool_shape("avg_pool2d", x, kernel, stride, padding);
  Tensor y = Tensor::empty(out_shape(x, s), x.dtype(), x.device());
  if (y.numel() > 0) backend(x).avg_pool2d_forward(x.dtype(), s, x.raw(), y.raw());
  if (!autograd::any_needs_grad({x})) return y;
  auto node = autograd::make_node("avg_pool2d", {x});
  node->set_backward([s, shape = x.shape()](Node&, const Tensor& dy) -> std::vector<Tensor> {
    Tensor dx = Tensor::empty(shape, dy.dtype(), dy.device());
    if (dx.numel() > 0) backend(dy).avg_pool2d_backward(dy.dtype(), s, dy.raw(), dx.raw());
    return {dx};
  });
  return autograd::attach(y, node);
}

Tensor adaptive_avg_pool2d(const Tensor& x, Pair output_size) {
  detail::check_float("adaptive_avg_pool2d", x);
  detail::check_rank("adaptive_avg_pool2d", x, 4);
  if (output_size != Pair{1, 1})
    throw ValueError("adaptive_avg_pool2d: output_size " + pair_str(output_size) +
                     " is not supported, only (1, 1)");
  const int64_t n = x.size(0), c = x.size(1);
  // The mean over H·W (the reduce kernels; its node carries the gradient), viewed as [N, C, 1, 1].
  return mean(x.reshape({n, c, x.size(2) * x.size(3)}), 2).reshape({n, c, 1, 1});
}

Tensor flatten(const Tensor& x, int64_t start_dim) {
  if (x.dim() == 0) return x.reshape({1});  // torch.flatten of a scalar: one element
  const int64_t start = detail::wrap_dim("flatten", start_dim, x.dim());
  Shape shape(x.shape().begin(), x.shape().begin() + start);
  int64_t rest = 1;
  for (int64_t d = start; d < x.dim(); ++d)
    rest *= x.size(d);
  shape.push_back(rest);
  return x.reshape(shape);
}

}  // namespace clarena
