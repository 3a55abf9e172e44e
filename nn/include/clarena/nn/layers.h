// Layers with PyTorch's conventions: shapes, initialisation, parameter names.
#pragma once

#include <string>
#include <vector>

#include "clarena/core/random.h"
#include "clarena/nn/module.h"

namespace clarena::nn {

/// y = x Wᵀ + b with W [out, in]; W and b uniform in ±1/sqrt(in) (torch.nn.Linear's default).
class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias = true);
  Tensor forward(const Tensor& x) override;
  /// relu(forward(x)) in one fused op.
  Tensor forward_relu(const Tensor& x);
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }

 private:
  Tensor weight_, bias_;
};

class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
};

/// Normalises each feature of [B, C] by batch statistics in training and running statistics
/// in eval; weight/bias are the affine part, running_mean/running_var buffers.
class BatchNorm1d : public Module {
 public:
  explicit BatchNorm1d(int64_t num_features, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override;

 private:
  Tensor weight_, bias_, running_mean_, running_var_;
  double eps_, momentum_;
};

/// Children named "0", "1", ... applied in order.
class Sequential : public Module {
 public:
  Sequential() = default;
  explicit Sequential(std::vector<std::shared_ptr<Module>> modules);
  void push_back(std::shared_ptr<Module> module);
  Tensor forward(const Tensor& x) override;
  size_t size() const { return children().size(); }
};

/// The activation after each MLP layer (None: the layers stay linear).
enum class Activation { ReLU, Tanh, Sigmoid, None };

/// "relu", "tanh", "sigmoid" or "none".
const char* to_string(Activation a);

struct MLPOptions {
  Activation activation = Activation::ReLU;
  bool batch_norm = false;
};

/// A feature extractor in front of the CL heads (CLArena's CLBackbone): forward maps a batch
/// [B, ...] to features [B, output_dim()].
class Backbone : public Module {
 public:
  /// The width of the features forward returns, which the heads read.
  virtual int64_t output_dim() const = 0;
};

/// CLArena's MLP backbone: every layer Linear → (BatchNorm1d) → activation, the last one
/// included; the output width is the last hidden width. Parameters: fc.i.*, fc_bn.i.*.
/// Inputs of rank > 2 ([B, C, H, W] images) are flattened to [B, C·H·W] first, as CLArena's
/// x.view(batch_size, -1); a reshape of an input that requires no grad records no node.
class MLP : public Backbone {
 public:
  MLP(int64_t input_dim, std::vector<int64_t> hidden_dims, Generator& gen, MLPOptions options = {});
  Tensor forward(const Tensor& x) override;
  int64_t input_dim() const { return input_dim_; }
  int64_t output_dim() const override { return hidden_dims_.back(); }

 private:
  Tensor activate(const Tensor& x) const;

  int64_t input_dim_;
  std::vector<int64_t> hidden_dims_;
  MLPOptions options_;
  std::vector<std::shared_ptr<Linear>> fc_;
  std::vector<std::shared_ptr<BatchNorm1d>> bn_;
};

}  // namespace clarena::nn
