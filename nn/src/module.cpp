#include "clarena/nn/module.h"

#include <string>
#include <vector>

#include "clarena/core/errors.h"

namespace clarena::nn {

namespace {

template <typename From, typename To>
Tensor cast_on_host(const Tensor& t, DType dtype) {
  const std::vector<From> values = t.to_vector<From>();  // copies to the host when needed
  const std::vector<To> cast(values.begin(), values.end());
  return Tensor::from_data(cast.data(), t.shape(), dtype, t.device());
}

/// `t`'s values as floating-point `dtype`, on t's device, with no autograd history. A
/// one-off conversion (module set-up), so it goes through the host rather than a kernel.
Tensor cast_floating(const Tensor& t, DType dtype) {
  if (t.dtype() == DType::Float32) return cast_on_host<float, double>(t, dtype);
  return cast_on_host<double, float>(t, dtype);
}

/// Converts a floating-point leaf in place (all handles see it), keeping requires_grad and
/// converting its gradient, if any.
void convert_in_place(Tensor& t, DType dtype) {
  if (t.dtype() == dtype || t.dtype() == DType::Int64) return;
  const Tensor grad = t.grad();
  t.set_data(cast_floating(t, dtype));  // keeps requires_grad, drops the old-dtype grad
  if (grad.defined()) t.set_grad(cast_floating(grad, dtype));
}

}  // namespace

Tensor Module::register_parameter(std::string name, Tensor value) {
  value.requires_grad_(true);
  parameters_.emplace_back(std::move(name), value);
  return value;
}

Tensor Module::register_buffer(std::string name, Tensor value) {
  buffers_.emplace_back(std::move(name), value);
  return value;
}

void Module::collect(const std::string& prefix, bool buffers, NamedTensors& out) const {
  for (const auto& [name, tensor] : buffers ? buffers_ : parameters_)
    out.emplace_back(prefix + name, tensor);
  for (const auto& [name, child] : children_)
    child->collect(prefix + name + ".", buffers, out);
}

NamedTensors Module::named_parameters() const {
  NamedTensors out;
  collect("", false, out);
  return out;
}

NamedTensors Module::named_buffers() const {
  NamedTensors out;
  collect("", true, out);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [name, tensor] : named_parameters())
    out.push_back(tensor);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (const Tensor& p : parameters())
    n += p.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_)
    child->train(on);
}

Module& Module::requires_grad_(bool on) {
  for (Tensor& p : parameters())
    p.requires_grad_(on);
  return *this;
}

void Module::copy_state_from(const Module& other) {
  NamedTensors to = named_parameters(), from = other.named_parameters();
  const NamedTensors to_buffers = named_buffers(), from_buffers = other.named_buffers();
  to.insert(to.end(), to_buffers.begin(), to_buffers.end());
  from.insert(from.end(), from_buffers.begin(), from_buffers.end());
  if (to.size() != from.size())
    throw ShapeError("copy_state_from: the source has " + std::to_string(from.size()) +
                     " tensors, this module " + std::to_string(to.size()));
  for (size_t i = 0; i < to.size(); ++i)
    if (to[i].first != from[i].first || to[i].second.shape() != from[i].second.shape() ||
        to[i].second.dtype() != from[i].second.dtype())
      throw ShapeError("copy_state_from: tensor " + std::to_string(i) + " is " + to[i].first + " " +
                       to[i].second.str() + " here but " + from[i].first + " " +
                       from[i].second.str() + " in the source");
  for (size_t i = 0; i < to.size(); ++i)
    to[i].second.copy_(from[i].second);
}

void Module::zero_grad() {
  for (Tensor& p : parameters())
    p.zero_grad();
}

void Module::to(Device device) {
  for (auto& [name, t] : named_parameters())
    t.set_data(t.to(device));
  for (auto& [name, t] : named_buffers())
    t.set_data(t.to(device));
}

void Module::to(DType dtype) {
  if (dtype != DType::Float32 && dtype != DType::Float64)
    throw DTypeError(std::string("Module::to: parameters must be float32 or float64, got ") +
                     dtype_name(dtype));
  for (auto& [name, t] : named_parameters())
    convert_in_place(t, dtype);
  for (auto& [name, t] : named_buffers())
    convert_in_place(t, dtype);
}

}  // namespace clarena::nn
