#include "clarena/nn/optim.h"

#include <string>

#include "clarena/core/autograd.h"
#include "clarena/kernels/backend.h"

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
    kernels::SGDParams k{options_.lr,           options_.momentum, options_.dampening,
                         options_.weight_decay, options_.nesterov, false};
    if (options_.momentum != 0 && !momentum_[i].defined()) {
      momentum_[i] = Tensor::empty(p.shape(), p.dtype(), p.device());
      k.first_step = true;
    }
    kernels::backend_for(p.device())
        .sgd_update(p.dtype(), p.numel(), p.raw(), g.raw(),
                    momentum_[i].defined() ? momentum_[i].raw() : nullptr, k);
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
    kernels::Backend& backend = kernels::backend_for(p.device());
    if (!exp_avg_[i].defined()) {
      exp_avg_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
      exp_avg_sq_[i] = Tensor::zeros(p.shape(), p.dtype(), p.device());
      steps_[i] = Tensor::zeros({1}, DType::Float64, p.device());
    }
    if (!one_.defined() || one_.device() != p.device())
      one_ = Tensor::ones({1}, DType::Float64, p.device());
    backend.axpby(DType::Float64, 1, 1.0, one_.raw(), 1.0, steps_[i].raw());  // step += 1
    const kernels::AdamParams k{options_.lr,           options_.beta1,
                                options_.beta2,        options_.eps,
                                options_.weight_decay, static_cast<const double*>(steps_[i].raw())};
    backend.adam_update(p.dtype(), p.numel(), p.raw(), g.raw(), exp_avg_[i].raw(),
                        exp_avg_sq_[i].raw(), k);
  }
}

}  // namespace clarena::optim
