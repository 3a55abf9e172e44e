#include "clarena/core/optim_ops.h"

#include <map>
#include <mutex>
#include <string>

#include "op_helpers.h"

namespace clarena {
namespace {

/// The parameter is a float tensor; every other defined tensor is on its device, of its element
/// type and of its size.
void check_update(const char* op, const Tensor& param, std::initializer_list<Tensor> others) {
  if (!param.defined()) throw ValueError(std::string(op) + ": the parameter is undefined");
  detail::check_float(op, param);
  for (const Tensor& t : others) {
    if (!t.defined()) continue;
    detail::check_inputs(op, {param, t});
    if (t.numel() != param.numel())
      detail::shape_mismatch(op, param, t, "every buffer has the parameter's element count");
  }
}

/// 1.0 as a float64 [1] on `device`, made on first use and never freed (as the CUDA backends
/// are never destroyed, it must outlive every static destructor that might still step).
const Tensor& device_one(Device device) {
  static std::mutex mu;
  static auto* ones = new std::map<int, Tensor>();
  const int key = device.is_cpu() ? -1 : device.index;
  std::lock_guard<std::mutex> lock(mu);
  auto it = ones->find(key);
  if (it == ones->end()) it = ones->emplace(key, Tensor::ones({1}, DType::Float64, device)).first;
  return it->second;
}

}  // namespace

void sgd_update_(const Tensor& param, const Tensor& grad, const Tensor& momentum_buf,
                 const SGDUpdate& u) {
  check_update("sgd_update_", param, {grad, momentum_buf});
  if (!grad.defined()) throw ValueError("sgd_update_: the gradient is undefined");
  if (u.momentum != 0 && !momentum_buf.defined())
    throw ValueError("sgd_update_: momentum " + std::to_string(u.momentum) +
                     " needs a momentum buffer, got an undefined tensor");
  const kernels::SGDParams k{u.lr,           u.momentum, u.dampening,
                             u.weight_decay, u.nesterov, u.first_step};
  param.bump_version();
  detail::backend(param).sgd_update(param.dtype(), param.numel(), param.raw(), grad.raw(),
                                    momentum_buf.defined() ? momentum_buf.raw() : nullptr, k);
}

void adam_update_(const Tensor& param, const Tensor& grad, const Tensor& exp_avg,
                  const Tensor& exp_avg_sq, const Tensor& step, const AdamUpdate& u) {
  check_update("adam_update_", param, {grad, exp_avg, exp_avg_sq});
  if (!grad.defined() || !exp_avg.defined() || !exp_avg_sq.defined())
    throw ValueError("adam_update_: the gradient and both moment buffers must be defined");
  if (!step.defined() || step.dtype() != DType::Float64 || step.numel() != 1 ||
      step.device() != param.device())
    throw ValueError("adam_update_: the step count must be a float64 [1] on " +
                     param.device().str() + ", got " + (step.defined() ? step.str() : "undefined"));
  kernels::Backend& backend = detail::backend(param);
  const Tensor& one = device_one(param.device());
  backend.axpby(DType::Float64, 1, 1.0, one.raw(), 1.0, step.raw());  // step += 1
  const kernels::AdamParams k{u.lr,  u.beta1,        u.beta2,
                              u.eps, u.weight_decay, static_cast<const double*>(step.raw())};
  param.bump_version();
  backend.adam_update(param.dtype(), param.numel(), param.raw(), grad.raw(), exp_avg.raw(),
                      exp_avg_sq.raw(), k);
}

}  // namespace clarena
