// Optimizers with torch.optim's update rules, fused per parameter (core's sgd_update_ and
// adam_update_).
// A parameter without a gradient is skipped entirely: no weight decay, no momentum step.
#pragma once

#include <vector>

#include "clarena/core/tensor.h"

namespace clarena::optim {

class Optimizer {
 public:
  explicit Optimizer(std::vector<Tensor> params);
  virtual ~Optimizer() = default;
  virtual void step() = 0;
  void zero_grad();  // to undefined, like set_to_none=True
  const std::vector<Tensor>& params() const { return params_; }

 protected:
  std::vector<Tensor> params_;
};

/// torch.optim.SGD's options under its names, with its defaults (torch 2.x): lr 1e-3,
/// momentum 0, dampening 0, weight_decay 0, nesterov false.
struct SGDOptions {
  double lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
};

class SGD : public Optimizer {
 public:
  SGD(std::vector<Tensor> params, SGDOptions options);
  void step() override;

 private:
  SGDOptions options_;
  std::vector<Tensor> momentum_;  // created on a parameter's first step
};

/// torch.optim.Adam's options with its defaults: lr 1e-3, betas (beta1, beta2) = (0.9, 0.999),
/// eps 1e-8, weight_decay 0 (L2 added to the gradient, not AdamW's decoupled decay).
struct AdamOptions {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
};

class Adam : public Optimizer {
 public:
  Adam(std::vector<Tensor> params, AdamOptions options);
  void step() override;

 private:
  AdamOptions options_;
  std::vector<Tensor> exp_avg_, exp_avg_sq_;
  // Per parameter, as torch counts them: a float64 [1] on the parameter's device, advanced
  // there, so a step launches nothing that depends on host state (CUDA-graph capturable).
  std::vector<Tensor> steps_;
};

}  // namespace clarena::optim
