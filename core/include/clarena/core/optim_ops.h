// Fused in-place optimizer updates of one parameter, as tensor functions: what nn's optimizers
// need from a device (the kernels behind them are private to core). Not differentiable: they
// record no graph node and write their tensors in place. Every tensor must be on the
// parameter's device, of its element type and of its element count; else DeviceError,
// DTypeError or ShapeError naming the update and the tensors.
#pragma once

#include "clarena/core/tensor.h"

namespace clarena {

/// torch.optim.SGD's hyper-parameters for one update (torch 2.x defaults: lr 1e-3, momentum,
/// dampening and weight_decay 0, no nesterov).
struct SGDUpdate {
  double lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  /// torch.optim.SGD sets the momentum buffer to the gradient on a parameter's first step: a
  /// host decision, as in torch, after which every step's arguments are constant.
  bool first_step = true;
};

/// param -= lr * d, d = grad + weight_decay * param, through the momentum buffer when momentum
/// is not 0 (then momentum_buf must be defined; it may be undefined otherwise).
void sgd_update_(const Tensor& param, const Tensor& grad, const Tensor& momentum_buf,
                 const SGDUpdate& update);

/// torch.optim.Adam's hyper-parameters (L2 weight decay added to the gradient, not AdamW's).
struct AdamUpdate {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
};

/// One Adam update. `step` is the parameter's step count, a float64 [1] on its device (0 before
/// the first update), as torch's capturable Adam keeps it: this advances it by one on the
/// device and forms the bias corrections from it there, so a step reads nothing back to the
/// host and bakes nothing that changes from step to step into its launches.
void adam_update_(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                  const Tensor& exp_avg_sq, const Tensor& step, const AdamUpdate& update);

}  // namespace clarena
