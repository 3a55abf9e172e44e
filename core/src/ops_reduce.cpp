// Reductions, softmax family and classification helpers: forward and backward side by side.
#include "clarena/core/ops.h"
#include "op_helpers.h"

#include <cmath>
#include <limits>
#include <string>

namespace clarena {
using autograd::Node;
using detail::backend;
using detail::empty_like;

namespace {

/// Views x as [outer, reduce, inner] around `dim`.
struct Split3 {
  int64_t outer = 1, reduce = 1, inner = 1;
  Shape reduced_shape;  // x's shape without `dim`
};

Split3 split_at(const Tensor& x, int64_t dim) {
  Split3 s;
  for (int64_t d = 0; d < x.dim(); ++d) {
    const int64_t size = x.size(d);
    if (d < dim)
      s.outer *= size;
    else if (d == dim)
      s.reduce = size;
    else
      s.inner *= size;
    if (d != dim) s.reduced_shape.push_back(size);
  }
  return s;
}

/// Sum (scale 1) or mean (scale 1/reduce) over the middle axis of the split. Over an empty
/// axis the sum is 0 and the mean NaN (PyTorch's results); no kernel sees a zero-sized axis
/// or grid, on any device.
Tensor reduce(const char* name, const Tensor& x, const Split3& s, bool average) {
  detail::check_float(name, x);
  const double scale = !average   ? 1.0
                       : s.reduce ? 1.0 / static_cast<double>(s.reduce)
                                  : std::numeric_limits<double>::quiet_NaN();
  Tensor out = Tensor::empty(s.reduced_shape, x.dtype(), x.device());
  if (out.numel() == 0) {
    // nothing to compute
  } else if (s.reduce == 0) {
    backend(x).fill(x.dtype(), out.numel(), average ? scale : 0.0, out.raw());
  } else {
    backend(x).reduce_sum(x.dtype(), s.outer, s.reduce, s.inner, scale, x.raw(), 0.0, out.raw());
  }
  if (!autograd::any_needs_grad({x})) return out;
  auto node = autograd::make_node(name, {x});
  node->set_backward([s, scale, shape = x.shape()](Node&, const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = Tensor::empty(shape, g.dtype(), g.device());
    if (gx.numel() > 0)
      backend(g).expand(g.dtype(), s.outer, s.reduce, s.inner, scale, g.raw(), gx.raw());
    return {gx};
  });
  return autograd::attach(out, node);
}

Split3 whole(const Tensor& x) {
  return {1, x.numel(), 1, {}};
}

void check_logits(const char* op, const Tensor& logits, const Tensor& labels) {
  detail::check_float(op, logits);
  detail::check_rank(op, logits, 2);
  check_dtype(labels, DType::Int64, std::string(op) + " labels");
  if (labels.dim() != 1 || labels.size(0) != logits.size(0))
    detail::shape_mismatch(op, logits, labels,
                           "labels must be [batch] for logits [batch, classes]");
  if (labels.device() != logits.device())
    throw DeviceError(std::string(op) + ": logits " + logits.str() + " and labels " + labels.str() +
                      " are on different devices");
}

}  // namespace

Tensor sum(const Tensor& x) {
  return reduce("sum", x, whole(x), false);
}
Tensor mean(const Tensor& x) {
  return reduce("mean", x, whole(x), true);
}
Tensor sum(const Tensor& x, int64_t dim) {
  return reduce("sum", x, split_at(x, detail::wrap_dim("sum", dim, x.dim())), false);
}
Tensor mean(const Tensor& x, int64_t dim) {
  return reduce("mean", x, split_at(x, detail::wrap_dim("mean", dim, x.dim())), true);
}

Tensor sum(const std::vector<Tensor>& tensors) {
  if (tensors.empty()) throw ValueError("sum: no tensors given");
  Tensor total = tensors.front();
  for (size_t i = 1; i < tensors.size(); ++i)
    total = add(total, tensors[i]);
  return total;
}

Tensor log_softmax(const Tensor& x, double temperature) {
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw ValueError("log_softmax: temperature must be positive and finite, got " +
                     std::to_string(temperature));
  if (temperature != 1.0) return log_softmax(mul(x, 1.0 / temperature));
  detail::check_float("log_softmax", x);
  if (x.dim() == 0) throw ShapeError("log_softmax: expected at least 1-D, got shape []");
  // Empty rows (cols == 0) or no rows: an empty result, as in PyTorch; no kernel runs.
  const int64_t cols = x.size(-1), rows = cols == 0 ? 0 : x.numel() / cols;
  Tensor y = empty_like(x);
  if (rows > 0) backend(x).log_softmax_forward(x.dtype(), rows, cols, x.raw(), y.raw());
  if (!autograd::any_needs_grad({x})) return y;
  auto node = autograd::make_node("log_softmax", {x});
  node->save({y});
  node->set_backward([rows, cols](Node& n, const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = empty_like(g);
    if (rows > 0)
      backend(g).log_softmax_backward(g.dtype(), rows, cols, n.saved(0).raw(), g.raw(), gx.raw());
    return {gx};
  });
  return autograd::attach(y, node);
}

Tensor softmax(const Tensor& x, double temperature) {
  return exp(log_softmax(x, temperature));
}

Tensor cross_entropy(const Tensor& logits, const Tensor& labels) {
  check_logits("cross_entropy", logits, labels);
  const int64_t rows = logits.size(0), cols = logits.size(1);
  if (rows == 0) throw ShapeError("cross_entropy: empty batch " + shape_str(logits.shape()));
  if (cols == 0)
    throw ValueError("cross_entropy: logits " + shape_str(logits.shape()) +
                     " have 0 classes: no label can be in range");
  Tensor lse = Tensor::empty({rows}, logits.dtype(), logits.device());
  Tensor loss = Tensor::empty({}, logits.dtype(), logits.device());
  backend(logits).cross_entropy_forward(logits.dtype(), rows, cols, logits.raw(),
                                        labels.data<int64_t>(), lse.raw(), loss.raw());
  if (!autograd::any_needs_grad({logits})) return loss;
  auto node = autograd::make_node("cross_entropy", {logits});
  node->save({logits, labels, lse});
  node->set_backward([rows, cols](Node& n, const Tensor& g) -> std::vector<Tensor> {
    const Tensor& x = n.saved(0);
    Tensor gx = empty_like(x);
    backend(x).cross_entropy_backward(x.dtype(), rows, cols, x.raw(), n.saved(1).data<int64_t>(),
                                      n.saved(2).raw(), g.raw(), gx.raw());
    return {gx};
  });
  return autograd::attach(loss, node);
}

Tensor argmax(const Tensor& x, int64_t dim) {
  detail::check_float("argmax", x);
  const Split3 s = split_at(x, detail::wrap_dim("argmax", dim, x.dim()));
  // PyTorch raises here too: argmax has no identity to return for an empty dimension.
  if (s.reduce == 0)
    throw ValueError("argmax: cannot reduce over dimension " + std::to_string(dim) +
                     " of size 0 in shape " + shape_str(x.shape()));
  Tensor out = Tensor::empty(s.reduced_shape, DType::Int64, x.device());
  if (out.numel() > 0)
    backend(x).argmax(x.dtype(), s.outer, s.reduce, s.inner, x.raw(), out.data<int64_t>());
  return out;
}

Tensor eq(const Tensor& a, const Tensor& b) {
  detail::check_inputs("eq", {a, b});
  if (a.shape() != b.shape()) detail::shape_mismatch("eq", a, b);
  Tensor out = Tensor::empty(a.shape(), DType::Int64, a.device());
  if (a.numel() > 0) backend(a).equal(a.dtype(), a.numel(), a.raw(), b.raw(), out.data<int64_t>());
  return out;
}

int64_t count_correct(const Tensor& logits, const Tensor& labels) {
  check_logits("count_correct", logits, labels);
  Tensor predicted = argmax(logits, 1);
  if (labels.numel() == 0) return 0;
  return backend(logits).count_equal(labels.numel(), predicted.data<int64_t>(),
                                     labels.data<int64_t>());
}

double accuracy(const Tensor& logits, const Tensor& labels) {
  const int64_t n = labels.numel();
  return n == 0 ? 0.0 : static_cast<double>(count_correct(logits, labels)) / static_cast<double>(n);
}

}  // namespace clarena
