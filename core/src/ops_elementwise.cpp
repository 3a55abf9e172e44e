// Element-wise ops and shape ops: forward and backward side by side.
#include "clarena/core/ops.h"
#include "op_helpers.h"

namespace clarena {
using autograd::Node;
using detail::backend;
using detail::empty_like;
using kernels::Binary;
using kernels::Broadcast;
using kernels::Unary;

namespace {

/// How two operands line up: same shape, or one is a row repeated over the other's rows.
struct Layout {
  Broadcast broadcast = Broadcast::None;
  int64_t rows = 1, cols = 1;
  Shape out_shape;
};

bool is_row_of(const Tensor& row, const Tensor& full) {
  if (full.dim() == 0) return false;
  const int64_t width = full.size(-1);
  if (row.dim() == 1) return row.size(0) == width;
  return row.dim() == full.dim() && row.numel() == width && row.size(-1) == width;
}

Layout layout_of(const char* op, const Tensor& a, const Tensor& b) {
  detail::check_inputs(op, {a, b});
  detail::check_float(op, a);
  if (a.shape() == b.shape()) return {Broadcast::None, 1, a.numel(), a.shape()};
  // rows = numel / width, and 0 when the row is empty (no division by zero).
  auto rows = [](const Tensor& t) { return t.size(-1) ? t.numel() / t.size(-1) : 0; };
  if (is_row_of(b, a)) return {Broadcast::RowB, rows(a), a.size(-1), a.shape()};
  if (is_row_of(a, b)) return {Broadcast::RowA, rows(b), b.size(-1), b.shape()};
  detail::shape_mismatch(op, a, b, "expected equal shapes or a row broadcast over a batch");
}

/// The gradient of an operand from the gradient of the output: summed over the rows when the
/// operand was the broadcast row, scaled by `sign`.
Tensor reduce_to(const Tensor& grad, const Shape& shape, bool was_row, const Layout& l,
                 double sign) {
  Tensor out = Tensor::empty(shape, grad.dtype(), grad.device());
  if (was_row)
    backend(grad).reduce_sum(grad.dtype(), 1, l.rows, l.cols, sign, grad.raw(), 0.0, out.raw());
  else
    backend(grad).axpby(grad.dtype(), grad.numel(), sign, grad.raw(), 0.0, out.raw());
  return out;
}

Tensor binary_forward(Binary op, const Layout& l, const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(l.out_shape, a.dtype(), a.device());
  backend(a).binary(op, l.broadcast, a.dtype(), l.rows, l.cols, a.raw(), b.raw(), out.raw());
  return out;
}

Tensor add_or_sub(const char* name, Binary op, const Tensor& a, const Tensor& b) {
  const Layout l = layout_of(name, a, b);
  Tensor out = binary_forward(op, l, a, b);
  if (!autograd::any_needs_grad({a, b})) return out;
  auto node = autograd::make_node(name, {a, b});
  const double b_sign = op == Binary::Sub ? -1.0 : 1.0;
  node->set_backward([l, b_sign, a_shape = a.shape(), b_shape = b.shape()](
                         Node& n, const Tensor& g) -> std::vector<Tensor> {
    const bool a_row = l.broadcast == Broadcast::RowA, b_row = l.broadcast == Broadcast::RowB;
    Tensor ga, gb;
    if (n.needs_grad(0)) ga = a_row ? reduce_to(g, a_shape, true, l, 1.0) : g;
    if (n.needs_grad(1)) gb = (b_row || b_sign < 0) ? reduce_to(g, b_shape, b_row, l, b_sign) : g;
    return {ga, gb};
  });
  return autograd::attach(out, node);
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  return add_or_sub("add", Binary::Add, a, b);
}
Tensor sub(const Tensor& a, const Tensor& b) {
  return add_or_sub("sub", Binary::Sub, a, b);
}

Tensor mul(const Tensor& a, const Tensor& b) {
  const Layout l = layout_of("mul", a, b);
  Tensor out = binary_forward(Binary::Mul, l, a, b);
  if (!autograd::any_needs_grad({a, b})) return out;
  auto node = autograd::make_node("mul", {a, b});
  // d(a*b)/da needs b and vice versa: save only what a needed gradient uses.
  node->save({autograd::needs_grad(b) ? a : Tensor(), autograd::needs_grad(a) ? b : Tensor()});
  node->set_backward([l, a_shape = a.shape(), b_shape = b.shape()](
                         Node& n, const Tensor& g) -> std::vector<Tensor> {
    // d(a*b)/da = g * b, summed over the rows when a was the broadcast row; likewise for b.
    auto grad_of = [&](const Tensor& other, const Shape& self_shape, bool self_row,
                       bool other_row) {
      Tensor prod = Tensor::empty(l.out_shape, g.dtype(), g.device());
      backend(g).binary(Binary::Mul, other_row ? Broadcast::RowB : Broadcast::None, g.dtype(),
                        l.rows, l.cols, g.raw(), other.raw(), prod.raw());
      return self_row ? reduce_to(prod, self_shape, true, l, 1.0) : prod;
    };
    const bool a_row = l.broadcast == Broadcast::RowA, b_row = l.broadcast == Broadcast::RowB;
    Tensor ga, gb;
    if (n.needs_grad(0)) ga = grad_of(n.saved(1), a_shape, a_row, b_row);
    if (n.needs_grad(1)) gb = grad_of(n.saved(0), b_shape, b_row, a_row);
    return {ga, gb};
  });
  return autograd::attach(out, node);
}

Tensor mul(const Tensor& a, double scalar) {
  detail::check_float("mul", a);
  Tensor out = empty_like(a);
  backend(a).axpby(a.dtype(), a.numel(), scalar, a.raw(), 0.0, out.raw());
  if (!autograd::any_needs_grad({a})) return out;
  auto node = autograd::make_node("mul_scalar", {a});
  node->set_backward([scalar](Node&, const Tensor& g) -> std::vector<Tensor> {
    Tensor ga = empty_like(g);
    backend(g).axpby(g.dtype(), g.numel(), scalar, g.raw(), 0.0, ga.raw());
    return {ga};
  });
  return autograd::attach(out, node);
}

namespace {
Tensor unary(const char* name, Unary f, const Tensor& x) {
  detail::check_float(name, x);
  Tensor y = empty_like(x);
  backend(x).unary_forward(f, x.dtype(), x.numel(), x.raw(), y.raw());
  if (!autograd::any_needs_grad({x})) return y;
  auto node = autograd::make_node(name, {x});
  node->save({y});  // all three derivatives are functions of the output
  node->set_backward([f](Node& n, const Tensor& g) -> std::vector<Tensor> {
    const Tensor& y = n.saved(0);
    Tensor gx = empty_like(g);
    backend(g).unary_backward(f, g.dtype(), g.numel(), y.raw(), g.raw(), gx.raw());
    return {gx};
  });
  return autograd::attach(y, node);
}
}  // namespace

Tensor relu(const Tensor& x) {
  return unary("relu", Unary::Relu, x);
}
Tensor tanh(const Tensor& x) {
  return unary("tanh", Unary::Tanh, x);
}
Tensor sigmoid(const Tensor& x) {
  return unary("sigmoid", Unary::Sigmoid, x);
}
Tensor exp(const Tensor& x) {
  return unary("exp", Unary::Exp, x);
}

Tensor square(const Tensor& x) {
  detail::check_float("square", x);
  Tensor y = empty_like(x);
  backend(x).binary(Binary::Mul, Broadcast::None, x.dtype(), 1, x.numel(), x.raw(), x.raw(),
                    y.raw());
  if (!autograd::any_needs_grad({x})) return y;
  auto node = autograd::make_node("square", {x});
  node->save({x});
  node->set_backward([](Node& n, const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = empty_like(g);
    backend(g).binary(Binary::Mul, Broadcast::None, g.dtype(), 1, g.numel(), g.raw(),
                      n.saved(0).raw(), gx.raw());
    backend(g).axpby(g.dtype(), g.numel(), 2.0, gx.raw(), 0.0, gx.raw());
    return {gx};
  });
  return autograd::attach(y, node);
}

// --- shape ops -------------------------------------------------------------------------

Tensor Tensor::reshape(const Shape& new_shape) const {
  Shape resolved = new_shape, given;
  int64_t infer = -1;
  for (size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1 && infer < 0)
      infer = static_cast<int64_t>(i);
    else
      given.push_back(resolved[i]);
  }
  const int64_t known = shape_numel(given, "reshape");  // checked: no negative size, no overflow
  if (infer >= 0 && known > 0 && numel() % known == 0) resolved[infer] = numel() / known;
  if (shape_numel(resolved) != numel() || (infer >= 0 && resolved[infer] < 0))
    throw ShapeError("reshape: cannot view shape " + shape_str(shape()) + " as " +
                     shape_str(new_shape));
  Tensor out = detach();
  out.impl_->shape = resolved;
  if (!autograd::any_needs_grad({*this})) return out;
  auto node = autograd::make_node("reshape", {*this});
  node->set_backward(
      [old = shape()](Node&, const Tensor& g) -> std::vector<Tensor> { return {g.reshape(old)}; });
  return autograd::attach(out, node);
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  out.copy_(*this);
  if (!autograd::any_needs_grad({*this})) return out;
  auto node = autograd::make_node("clone", {*this});
  node->set_backward([](Node&, const Tensor& g) -> std::vector<Tensor> { return {g}; });
  return autograd::attach(out, node);
}

}  // namespace clarena

namespace clarena {

Tensor concat(const std::vector<Tensor>& tensors, int64_t dim) {
  if (tensors.empty()) throw ValueError("concat: no tensors given");
  const Tensor& first = tensors.front();
  dim = detail::wrap_dim("concat", dim, 2);
  int64_t total = 0;
  for (const Tensor& t : tensors) {
    detail::check_inputs("concat", {first, t});
    detail::check_rank("concat", t, 2);
    if (t.size(1 - dim) != first.size(1 - dim))
      detail::shape_mismatch("concat", first, t, "sizes must agree outside the concat dimension");
    total += t.size(dim);
  }
  const int64_t rows = dim == 0 ? total : first.size(0), cols = dim == 1 ? total : first.size(1);
  Tensor out = Tensor::empty({rows, cols}, first.dtype(), first.device());
  const size_t item = itemsize(first.dtype());
  // Each input is a block of the output: at a row offset (dim 0) or a column offset (dim 1).
  auto block_offset = [dim, cols, item](int64_t start) {
    return static_cast<size_t>(dim == 0 ? start * cols : start) * item;
  };
  int64_t start = 0;
  for (const Tensor& t : tensors) {
    backend(t).copy_block(t.dtype(), t.size(0), t.size(1), t.raw(), t.size(1),
                          static_cast<char*>(out.raw()) + block_offset(start), cols);
    start += t.size(dim);
  }
  if (!autograd::any_needs_grad(tensors)) return out;
  std::vector<Shape> shapes;
  for (const Tensor& t : tensors)
    shapes.push_back(t.shape());
  auto node = autograd::make_node("concat", tensors);
  node->set_backward([shapes, dim, cols, block_offset](Node& n, const Tensor& g) {
    std::vector<Tensor> grads(shapes.size());
    int64_t start = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      if (n.needs_grad(i)) {
        grads[i] = Tensor::empty(shapes[i], g.dtype(), g.device());
        backend(g).copy_block(g.dtype(), shapes[i][0], shapes[i][1],
                              static_cast<const char*>(g.raw()) + block_offset(start), cols,
                              grads[i].raw(), shapes[i][1]);
      }
      start += shapes[i][dim];
    }
    return grads;
  });
  return autograd::attach(out, node);
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  detail::check_rank("narrow", x, 2);
  dim = detail::wrap_dim("narrow", dim, 2);
  const int64_t size = x.size(dim);
  if (start < 0 || length < 0 || start > size || length > size - start)
    throw ValueError("narrow: block [" + std::to_string(start) + ", " + std::to_string(start) +
                     " + " + std::to_string(length) + ") of dim " + std::to_string(dim) +
                     " is outside " + x.str());
  const int64_t rows = x.size(0), cols = x.size(1);
  const int64_t out_rows = dim == 0 ? length : rows, out_cols = dim == 1 ? length : cols;
  const size_t offset = static_cast<size_t>(dim == 0 ? start * cols : start) * itemsize(x.dtype());
  Tensor out = Tensor::empty({out_rows, out_cols}, x.dtype(), x.device());
  if (out.numel() > 0)
    backend(x).copy_block(x.dtype(), out_rows, out_cols, static_cast<const char*>(x.raw()) + offset,
                          cols, out.raw(), out_cols);
  if (!autograd::any_needs_grad({x})) return out;
  auto node = autograd::make_node("narrow", {x});
  node->set_backward([shape = x.shape(), offset, out_rows, out_cols, cols](
                         Node&, const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = Tensor::zeros(shape, g.dtype(), g.device());
    if (g.numel() > 0)
      backend(g).copy_block(g.dtype(), out_rows, out_cols, g.raw(), out_cols,
                            static_cast<char*>(gx.raw()) + offset, cols);
    return {gx};
  });
  return autograd::attach(out, node);
}

}  // namespace clarena
