// nn::Module: named parameters, buffers and children, as in torch.nn.Module.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "clarena/core/tensor.h"

namespace clarena::nn {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
 public:
  virtual ~Module() = default;
  virtual Tensor forward(const Tensor& x) = 0;
  Tensor operator()(const Tensor& x) { return forward(x); }

  /// Parameters and buffers with dotted names ("fc.0.weight"), children after own tensors.
  NamedTensors named_parameters() const;
  NamedTensors named_buffers() const;
  std::vector<Tensor> parameters() const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& children() const {
    return children_;
  }

  /// Training mode for this module and every child (batch norm reads it).
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// Sets requires_grad on every parameter: `requires_grad_(false)` freezes the module.
  Module& requires_grad_(bool on);
  void zero_grad();
  /// Moves every parameter and buffer to `device`, in place (handles stay valid).
  void to(Device device);
  /// Converts every parameter and floating-point buffer to `dtype` (Float32 or Float64), in
  /// place, as torch.nn.Module.double()/.float() do: handles stay valid, requires_grad is
  /// kept (a frozen module stays frozen), gradients are converted with their parameters,
  /// int64 buffers are left alone. Optimizers hold their own state: create them afterwards.
  /// Throws DTypeError for Int64.
  void to(DType dtype);
  int64_t num_parameters() const;
  /// Copies the values of every parameter and buffer of `other`, a module of the same
  /// structure, into this one's tensors in place (a snapshot, as load_state_dict of
  /// state_dict); requires_grad is left as it is. Throws ShapeError naming the first tensor
  /// whose name or shape differs, before copying anything.
  void copy_state_from(const Module& other);

 protected:
  /// Registers a leaf that requires grad; returns the stored handle.
  Tensor register_parameter(std::string name, Tensor value);
  Tensor register_buffer(std::string name, Tensor value);
  template <typename M>
  std::shared_ptr<M> register_module(std::string name, std::shared_ptr<M> module) {
    children_.emplace_back(std::move(name), module);
    return module;
  }

 private:
  void collect(const std::string& prefix, bool buffers, NamedTensors& out) const;

  NamedTensors parameters_, buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
  bool training_ = true;
};

}  // namespace clarena::nn
