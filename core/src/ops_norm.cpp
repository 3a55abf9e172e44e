// Batch normalisation over the rows of [B, C]: forward (train / eval) and backward together.
#include "clarena/core/ops.h"
#include "op_helpers.h"

#include <cmath>

namespace clarena {
using autograd::Node;
using detail::backend;

namespace {
/// 1 / sqrt(var + eps), computed on the host (only the rare eval-mode gradient needs it).
Tensor inverse_std(const Tensor& var, double eps) {
  Tensor host = var.to(Device::cpu()).clone();
  auto invert = [&](auto* p) {
    for (int64_t i = 0; i < host.numel(); ++i)
      p[i] = 1 / std::sqrt(p[i] + eps);
  };
  if (host.dtype() == DType::Float32)
    invert(host.data<float>());
  else
    invert(host.data<double>());
  return host.to(var.device());
}
}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  double momentum, double eps) {
  detail::check_inputs("batch_norm", {x, gamma, beta, running_mean, running_var});
  detail::check_float("batch_norm", x);
  detail::check_rank("batch_norm", x, 2);
  const int64_t rows = x.size(0), cols = x.size(1);
  for (const Tensor* p : {&gamma, &beta, &running_mean, &running_var})
    if (p->dim() != 1 || p->size(0) != cols)
      detail::shape_mismatch("batch_norm", x, *p, "per-feature tensors must be [features]");
  Tensor y = detail::empty_like(x);
  auto& be = backend(x);
  const bool any = rows > 0 && cols > 0;  // no kernel sees an empty batch or feature axis
  if (!training) {
    if (any)
      be.batch_norm_eval(x.dtype(), rows, cols, x.raw(), gamma.raw(), beta.raw(),
                         running_mean.raw(), running_var.raw(), eps, y.raw());
    if (!autograd::any_needs_grad({x, gamma, beta})) return y;
    // Eval mode is an affine map per feature, y = x * scale + shift. Its gradient is rare
    // (a frozen backbone records nothing), so it reuses the element-wise ops.
    Tensor inv = inverse_std(running_var, eps);
    Tensor scale = mul(gamma, inv);
    Tensor shift = sub(beta, mul(running_mean.detach(), scale));
    return add(mul(x, scale), shift);
  }
  if (rows < 2)
    throw ValueError(
        "batch_norm: training needs more than one row per batch to estimate a "
        "variance, got shape " +
        shape_str(x.shape()));
  Tensor save_mean = Tensor::empty({cols}, x.dtype(), x.device());
  Tensor save_invstd = Tensor::empty({cols}, x.dtype(), x.device());
  if (any)
    be.batch_norm_train(x.dtype(), rows, cols, x.raw(), gamma.raw(), beta.raw(), eps, momentum,
                        running_mean.raw(), running_var.raw(), y.raw(), save_mean.raw(),
                        save_invstd.raw());
  if (!autograd::any_needs_grad({x, gamma, beta})) return y;
  auto node = autograd::make_node("batch_norm", {x, gamma, beta});
  node->save({x, gamma, save_mean, save_invstd});
  node->set_backward([rows, cols](Node& n, const Tensor& dy) -> std::vector<Tensor> {
    Tensor dx, dgamma, dbeta;
    if (n.needs_grad(0)) dx = detail::empty_like(dy);
    if (n.needs_grad(1)) dgamma = Tensor::empty({cols}, dy.dtype(), dy.device());
    if (n.needs_grad(2)) dbeta = Tensor::empty({cols}, dy.dtype(), dy.device());
    if (cols == 0) return {dx, dgamma, dbeta};  // training needs rows >= 2
    auto ptr = [](const Tensor& t) { return t.defined() ? t.raw() : nullptr; };
    backend(dy).batch_norm_backward(dy.dtype(), rows, cols, n.saved(0).raw(), n.saved(1).raw(),
                                    n.saved(2).raw(), n.saved(3).raw(), dy.raw(), ptr(dx),
                                    ptr(dgamma), ptr(dbeta));
    return {dx, dgamma, dbeta};
  });
  return autograd::attach(y, node);
}

}  // namespace clarena
