#include "clarena/nn/optim.h"

#include <string>

#include "clarena/core/autograd.h"
#include "clarena/core/optim_ops.h"

namespace clarena::optim {
namespace {
void check_hyper(const char* optimizer, const char* name, double value, double low) {
  if (!(value >= low))
    throw ValueError(std::string(optimizer) + ": " + name + " must be >= " + std::to_string(low) +
                     ", got " + std::to_string(value));
}
}  // namespace

Optimizer::Optimizer(std::vector<Tensor> params) : params_(std::move(params)) {
  for (const Tensor& p : params_)
    if (!p.is_leaf()) throw ValueError("optimizer: can only optimise leaf tensors, got " + p.str());
}

void Optimizer::zero_grad() {
  for (Tensor& p : params_)
    p.zero_grad();
}

SGD::SGD(std::vector<Tensor> params, SGDOptions options)
    : Optimizer(std::move(params)), options_(options), momentum_(params_.size()) {
  check_hyper("SGD", "lr", options.lr, 0);
  check_hyper("SGD", "momentum", options.momentum, 0);
  check_hyper("SGD", "weight_decay", options.weight_decay, 0);
  if (options.nesterov && (options.momentum <= 0 || options.dampening != 0))
    throw ValueError("SGD: nesterov momentum requires a momentum and zero dampening");
}

void SGD::step() {
  autograd::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    SGDUpdate u{options_.lr,           options_.momentum, options_.dampening,
                options_.weight_decay, options_.nesterov, false};
    if (options_.momentum != 0 && !momentum_[i].defined()) {
      momentum_[i] = Tensor::empty(p.shape(), p.dtype(), p.device());
      u.first_step = true;
    }
    sgd_update_(p, g, momentum_[i], u);
  }
}

Adam::Adam(std::vector<Tensor> params, AdamOptions options)
    : Optimizer(std::move(params)),
      options_(options),
      exp_avg_(params_.size()),
      exp_avg_sq_(params_.size()),
      steps_(params_.size()) {
  check_hyper("Adam", "lr", options.lr, 0);
  check_hyper("Adam", "eps", options.eps, 0);
  check_hyper("Adam", "weight_decay", options.weight_decay, 0);
  if (!(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1))
    throw ValueError("Adam: betas must lie in [0, 1), got (" + std::to_string(options.beta1) +
                     ", " + std::to_string(options.beta2) + ")");
}

void Adam::step() {
  autograd::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i];
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (!exp_avg_[i].defined()) {
      exp_avg_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
      exp_avg_sq_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
      steps_[i] = Tensor::zeros({1}, DType::Float64, p.device());
    }
    const AdamUpdate u{options_.lr, options_.beta1, options_.beta2, options_.eps,
                       options_.weight_decay};
    adam_update_(p, g, exp_avg_[i], exp_avg_sq_[i], steps_[i], u);  // advances steps_[i] first
  }
}

}  // namespace clarena::optim
