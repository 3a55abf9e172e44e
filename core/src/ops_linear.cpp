// Products: matmul, linear and the fused linear + ReLU, forward and backward side by side.
// Each input-gradient product runs only when that input needs a gradient, so a head fed by a
// frozen backbone computes its weight gradient and nothing else.
#include "clarena/core/ops.h"
#include "op_helpers.h"

namespace clarena {
using autograd::Node;
using detail::backend;

namespace {

/// out = op(a) · op(b), a fresh [m, n] tensor.
Tensor gemm(const Tensor& a, const Tensor& b, bool ta, bool tb, int64_t m, int64_t n, int64_t k) {
  Tensor out = Tensor::empty({m, n}, a.dtype(), a.device());
  backend(a).gemm(a.dtype(), ta, tb, m, n, k, 1.0, a.raw(), b.raw(), 0.0, out.raw());
  return out;
}

/// y = x · wᵀ for the forward of linear: when w takes no gradient from this product (a frozen
/// layer, or no_grad), the backend may keep w packed between calls while its version holds.
Tensor linear_product(const Tensor& x, const Tensor& w) {
  if (autograd::needs_grad(w)) return gemm(x, w, false, true, x.size(0), w.size(0), x.size(1));
  Tensor out = Tensor::empty({x.size(0), w.size(0)}, x.dtype(), x.device());
  backend(x).gemm_reusing_b(x.dtype(), false, true, x.size(0), w.size(0), x.size(1), 1.0, x.raw(),
                            w.raw(), 0.0, out.raw(), w.version());
  return out;
}

void check_linear(const char* op, const Tensor& x, const Tensor& w, const Tensor& b) {
  detail::check_inputs(op, {x, w, b});
  detail::check_float(op, x);
  detail::check_rank(op, x, 2);
  detail::check_rank(op, w, 2);
  if (x.size(1) != w.size(1))
    detail::shape_mismatch(op, x, w,
                           "input features must equal weight.size(1); weight is [out, in]");
  if (b.defined() && (b.dim() != 1 || b.size(0) != w.size(0)))
    detail::shape_mismatch(op, w, b, "bias must be [out]");
}

/// Gradients of y = x·Wᵀ + b given dy (the pre-activation gradient), as each input needs.
std::vector<Tensor> linear_backward(Node& n, const Tensor& dy, const Tensor& x, const Tensor& w) {
  const int64_t batch = dy.size(0), out = dy.size(1);
  Tensor dx, dw, db;
  if (n.needs_grad(0)) dx = gemm(dy, w, false, false, batch, w.size(1), out);
  if (n.needs_grad(1)) dw = gemm(dy, x, true, false, out, x.size(1), batch);
  if (n.needs_grad(2)) {
    db = Tensor::empty({out}, dy.dtype(), dy.device());
    backend(dy).reduce_sum(dy.dtype(), 1, batch, out, 1.0, dy.raw(), 0.0, db.raw());
  }
  return {dx, dw, db};
}

/// Saves x only when the weight needs a gradient and W only when x does.
std::shared_ptr<Node> linear_node(const char* name, const Tensor& x, const Tensor& w,
                                  const Tensor& b, const Tensor& extra) {
  auto node = autograd::make_node(name, {x, w, b});
  node->save(
      {autograd::needs_grad(w) ? x : Tensor(), autograd::needs_grad(x) ? w : Tensor(), extra});
  return node;
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b, bool ta, bool tb) {
  detail::check_inputs("matmul", {a, b});
  detail::check_float("matmul", a);
  detail::check_rank("matmul", a, 2);
  detail::check_rank("matmul", b, 2);
  const int64_t m = ta ? a.size(1) : a.size(0), k = ta ? a.size(0) : a.size(1);
  const int64_t kb = tb ? b.size(1) : b.size(0), n = tb ? b.size(0) : b.size(1);
  if (k != kb) detail::shape_mismatch("matmul", a, b, "inner dimensions differ");
  Tensor out = gemm(a, b, ta, tb, m, n, k);
  if (!autograd::any_needs_grad({a, b})) return out;
  auto node = autograd::make_node("matmul", {a, b});
  node->save({autograd::needs_grad(b) ? a : Tensor(), autograd::needs_grad(a) ? b : Tensor()});
  node->set_backward([ta, tb, m, n, k](Node& node, const Tensor& g) -> std::vector<Tensor> {
    const Tensor &a = node.saved(0), &b = node.saved(1);
    Tensor ga, gb;
    // C = op(A)·op(B): dA = dC·op(B)ᵀ (stored transposed when A was), dB = op(A)ᵀ·dC likewise.
    if (node.needs_grad(0))
      ga = ta ? gemm(b, g, tb, true, k, m, n) : gemm(g, b, false, !tb, m, k, n);
    if (node.needs_grad(1))
      gb = tb ? gemm(g, a, true, ta, n, k, m) : gemm(a, g, !ta, false, k, n, m);
    return {ga, gb};
  });
  return autograd::attach(out, node);
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  check_linear("linear", x, w, b);
  Tensor y = linear_product(x, w);
  if (b.defined())
    backend(y).binary(kernels::Binary::Add, kernels::Broadcast::RowB, y.dtype(), y.size(0),
                      y.size(1), y.raw(), b.raw(), y.raw());
  if (!autograd::any_needs_grad({x, w, b})) return y;
  auto node = linear_node("linear", x, w, b, Tensor());
  node->set_backward(
      [](Node& n, const Tensor& dy) { return linear_backward(n, dy, n.saved(0), n.saved(1)); });
  return autograd::attach(y, node);
}

Tensor linear_relu(const Tensor& x, const Tensor& w, const Tensor& b) {
  check_linear("linear_relu", x, w, b);
  if (!b.defined()) return relu(linear(x, w, b));
  Tensor y = linear_product(x, w);
  backend(y).bias_relu(y.dtype(), y.size(0), y.size(1), b.raw(), y.raw());
  if (!autograd::any_needs_grad({x, w, b})) return y;
  auto node = linear_node("linear_relu", x, w, b, y);
  node->set_backward([](Node& n, const Tensor& dy) {
    Tensor dz = Tensor::empty(dy.shape(), dy.dtype(), dy.device());
    backend(dy).unary_backward(kernels::Unary::Relu, dy.dtype(), dy.numel(), n.saved(2).raw(),
                               dy.raw(), dz.raw());
    return linear_backward(n, dz, n.saved(0), n.saved(1));
  });
  return autograd::attach(y, node);
}

}  // namespace clarena
