// Batch normalisation per channel over the rows of [B, C] or over N·H·W of [N, C, H, W]: forward
// (train / eval) and backward together. The kernels see [rows, cols, inner]: [B, C, 1] or
// [N, C, H·W].
#include "clarena/core/ops.h"
#include "op_helpers.h"

#include <cmath>
#include <string>

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

void* ptr(const Tensor& t) {
  return t.defined() ? t.raw() : nullptr;
}

/// Eval mode on [N, C, H, W] with a gradient: y = x * scale + shift per channel, scale =
/// gamma * invstd. One node: dx is the eval kernel on dy with a zero mean and no shift; dgamma
/// and dbeta are the training backward's sums with the running statistics in place of the
/// batch's (dgamma = sum dy * xhat, dbeta = sum dy), its dx not asked for.
Tensor eval_4d_with_grad(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                         const Tensor& running_mean, const Tensor& running_var, double eps,
                         const Tensor& y) {
  auto node = autograd::make_node("batch_norm", {x, gamma, beta});
  node->save({x.detach(), gamma.detach(), running_mean.detach().clone(),
              running_var.detach().clone(), inverse_std(running_var, eps)});
  const int64_t rows = x.size(0), cols = x.size(1), inner = x.size(2) * x.size(3);
  node->set_backward([rows, cols, inner, eps](Node& n, const Tensor& dy) -> std::vector<Tensor> {
    Tensor dx, dgamma, dbeta;
    if (n.needs_grad(0)) dx = detail::empty_like(dy);
    if (n.needs_grad(1)) dgamma = Tensor::empty({cols}, dy.dtype(), dy.device());
    if (n.needs_grad(2)) dbeta = Tensor::empty({cols}, dy.dtype(), dy.device());
    auto& be = backend(dy);
    if (rows * cols * inner == 0) {  // sums over nothing
      if (dgamma.defined()) be.fill(dy.dtype(), cols, 0.0, dgamma.raw());
      if (dbeta.defined()) be.fill(dy.dtype(), cols, 0.0, dbeta.raw());
      return {dx, dgamma, dbeta};
    }
    if (dx.defined()) {
      Tensor zero = Tensor::zeros({cols}, dy.dtype(), dy.device());
      be.batch_norm_eval(dy.dtype(), rows, cols, inner, dy.raw(), n.saved(1).raw(), nullptr,
                         zero.raw(), n.saved(3).raw(), eps, dx.raw());
    }
    if (dgamma.defined() || dbeta.defined())
      be.batch_norm_backward(dy.dtype(), rows, cols, inner, n.saved(0).raw(), n.saved(1).raw(),
                             n.saved(2).raw(), n.saved(4).raw(), dy.raw(), nullptr, ptr(dgamma),
                             ptr(dbeta));
    return {dx, dgamma, dbeta};
  });
  return autograd::attach(y, node);
}
}  // namespace

Tensor batch_norm(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                  const Tensor& running_mean, const Tensor& running_var, bool training,
                  double momentum, double eps) {
  detail::check_inputs("batch_norm", {x, gamma, beta, running_mean, running_var});
  detail::check_float("batch_norm", x);
  if (x.dim() != 2 && x.dim() != 4)
    throw ShapeError(
        "batch_norm: expected a 2-D [batch, features] or 4-D [N, C, H, W] tensor, got shape " +
        shape_str(x.shape()));
  const int64_t rows = x.size(0), cols = x.size(1),
                inner = x.dim() == 4 ? x.size(2) * x.size(3) : 1;
  for (const Tensor* p : {&gamma, &beta, &running_mean, &running_var})
    if (p->dim() != 1 || p->size(0) != cols)
      detail::shape_mismatch("batch_norm", x, *p, "per-feature tensors must be [features]");
  Tensor y = detail::empty_like(x);
  auto& be = backend(x);
  // No kernel sees an empty batch, feature or spatial axis.
  const bool any = rows > 0 && cols > 0 && inner > 0;
  if (!training) {
    if (any)
      be.batch_norm_eval(x.dtype(), rows, cols, inner, x.raw(), gamma.raw(), beta.raw(),
                         running_mean.raw(), running_var.raw(), eps, y.raw());
    if (!autograd::any_needs_grad({x, gamma, beta})) return y;
    if (x.dim() == 4) return eval_4d_with_grad(x, gamma, beta, running_mean, running_var, eps, y);
    // Eval mode is an affine map per feature, y = x * scale + shift. Its gradient is rare
    // (a frozen backbone records nothing), so it reuses the element-wise ops.
    Tensor inv = inverse_std(running_var, eps);
    Tensor scale = mul(gamma, inv);
    Tensor shift = sub(beta, mul(running_mean.detach(), scale));
    return add(mul(x, scale), shift);
  }
  if (rows * inner < 2)
    throw ValueError(std::string("batch_norm: training needs more than one ") +
                     (x.dim() == 2 ? "row per batch" : "value per channel") +
                     " to estimate a variance, got shape " + shape_str(x.shape()));
  Tensor save_mean = Tensor::empty({cols}, x.dtype(), x.device());
  Tensor save_invstd = Tensor::empty({cols}, x.dtype(), x.device());
  if (any) {
    running_mean.bump_version();
    running_var.bump_version();
  }
  if (any)
    be.batch_norm_train(x.dtype(), rows, cols, inner, x.raw(), gamma.raw(), beta.raw(), eps,
                        momentum, running_mean.raw(), running_var.raw(), y.raw(), save_mean.raw(),
                        save_invstd.raw());
  if (!autograd::any_needs_grad({x, gamma, beta})) return y;
  auto node = autograd::make_node("batch_norm", {x, gamma, beta});
  node->save({x, gamma, save_mean, save_invstd});
  node->set_backward([rows, cols, inner](Node& n, const Tensor& dy) -> std::vector<Tensor> {
    Tensor dx, dgamma, dbeta;
    if (n.needs_grad(0)) dx = detail::empty_like(dy);
    if (n.needs_grad(1)) dgamma = Tensor::empty({cols}, dy.dtype(), dy.device());
    if (n.needs_grad(2)) dbeta = Tensor::empty({cols}, dy.dtype(), dy.device());
    if (cols == 0) return {dx, dgamma, dbeta};  // training needs rows * inner >= 2
    backend(dy).batch_norm_backward(dy.dtype(), rows, cols, inner, n.saved(0).raw(),
                                    n.saved(1).raw(), n.saved(2).raw(), n.saved(3).raw(), dy.raw(),
                                    ptr(dx), ptr(dgamma), ptr(dbeta));
    return {dx, dgamma, dbeta};
  });
  return autograd::attach(y, node);
}

}  // namespace clarena
