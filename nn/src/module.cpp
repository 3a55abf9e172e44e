#include "clarena/nn/module.h"

namespace clarena::nn {

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

}  // namespace clarena::nn
