#include "clarena/nn/layers.h"

#include <cmath>

#include "clarena/core/ops.h"

namespace clarena::nn {

Linear::Linear(int64_t in_features, int64_t out_features, Generator& gen, bool bias) {
  if (in_features <= 0 || out_features <= 0)
    throw ValueError("Linear: features must be positive, got in=" + std::to_string(in_features) +
                     " out=" + std::to_string(out_features));
  // kaiming_uniform_(a=sqrt(5)) reduces to this bound, the same one torch uses for the bias.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  weight_ = register_parameter("weight",
                               Tensor::uniform({out_features, in_features}, -bound, bound, gen));
  if (bias) bias_ = register_parameter("bias", Tensor::uniform({out_features}, -bound, bound, gen));
}

Tensor Linear::forward(const Tensor& x) {
  return linear(x, weight_, bias_);
}
Tensor Linear::forward_relu(const Tensor& x) {
  return linear_relu(x, weight_, bias_);
}

Tensor ReLU::forward(const Tensor& x) {
  return relu(x);
}

BatchNorm1d::BatchNorm1d(int64_t num_features, double eps, double momentum)
    : eps_(eps), momentum_(momentum) {
  weight_ = register_parameter("weight", Tensor::ones({num_features}));
  bias_ = register_parameter("bias", Tensor::zeros({num_features}));
  running_mean_ = register_buffer("running_mean", Tensor::zeros({num_features}));
  running_var_ = register_buffer("running_var", Tensor::ones({num_features}));
}

Tensor BatchNorm1d::forward(const Tensor& x) {
  return batch_norm(x, weight_, bias_, running_mean_, running_var_, is_training(), momentum_, eps_);
}

Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules) {
  for (auto& m : modules)
    push_back(std::move(m));
}

void Sequential::push_back(std::shared_ptr<Module> module) {
  register_module(std::to_string(children().size()), std::move(module));
}

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& [name, child] : children())
    h = child->forward(h);
  return h;
}

MLP::MLP(int64_t input_dim, std::vector<int64_t> hidden_dims, Generator& gen, MLPOptions options)
    : input_dim_(input_dim), hidden_dims_(std::move(hidden_dims)), options_(std::move(options)) {
  if (hidden_dims_.empty()) throw ValueError("MLP: hidden_dims must name at least one layer");
  if (options_.activation != Activation::ReLU && options_.activation != Activation::Tanh &&
      options_.activation != Activation::Sigmoid && options_.activation != Activation::None)
    throw ValueError("MLP: unknown activation " +
                     std::to_string(static_cast<int>(options_.activation)) +
                     ", expected ReLU, Tanh, Sigmoid or None");
  auto fc = register_module("fc", std::make_shared<Sequential>());
  auto fc_bn =
      options_.batch_norm ? register_module("fc_bn", std::make_shared<Sequential>()) : nullptr;
  int64_t width = input_dim;
  for (int64_t hidden : hidden_dims_) {
    fc_.push_back(std::make_shared<Linear>(width, hidden, gen));
    fc->push_back(fc_.back());
    if (fc_bn) {
      bn_.push_back(std::make_shared<BatchNorm1d>(hidden));
      fc_bn->push_back(bn_.back());
    }
    width = hidden;
  }
}

const char* to_string(Activation a) {
  switch (a) {
    case Activation::ReLU:
      return "relu";
    case Activation::Tanh:
      return "tanh";
    case Activation::Sigmoid:
      return "sigmoid";
    case Activation::None:
      return "none";
  }
  return "?";
}

Tensor MLP::activate(const Tensor& x) const {
  switch (options_.activation) {
    case Activation::ReLU:
      return relu(x);
    case Activation::Tanh:
      return tanh(x);
    case Activation::Sigmoid:
      return sigmoid(x);
    case Activation::None:
      return x;
  }
  return x;
}

Tensor MLP::forward(const Tensor& x) {
  Tensor h = x.dim() > 2 ? x.reshape({x.size(0), -1}) : x;
  if (h.dim() != 2 || h.size(1) != input_dim_)
    throw ShapeError("MLP: expected input [batch, " + std::to_string(input_dim_) +
                     "] (or [batch, ...] of that many values), got " + shape_str(x.shape()));
  const bool fuse_relu = !options_.batch_norm && options_.activation == Activation::ReLU;
  for (size_t i = 0; i < fc_.size(); ++i) {
    if (fuse_relu) {
      h = fc_[i]->forward_relu(h);
      continue;
    }
    h = fc_[i]->forward(h);
    if (options_.batch_norm) h = bn_[i]->forward(h);
    h = activate(h);
  }
  return h;
}

}  // namespace clarena::nn
