// The model and training step the benchmarks time: a backbone (an MLP, or the cnn and resnet18
// convnets on [B, 1, 28, 28] images) with a linear head, in three modes. The same steps as
// bench/torch_cpu_step.py's and bench/torch_step.py's.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "clarena/clarena.h"

namespace clarena::bench {

enum class Mode { Trainable, Frozen, ForwardOnly };
inline const char* mode_name(Mode m) {
  return m == Mode::Trainable ? "trainable" : m == Mode::Frozen ? "frozen" : "forward_only";
}

/// An MLP (input, hidden widths) or a convnet (`conv` = "cnn" | "resnet18", 1×28×28 inputs).
struct ModelShape {
  std::string name;
  int64_t input;
  std::vector<int64_t> hidden;
  int64_t classes;
  std::string conv = "";

  bool is_conv() const { return !conv.empty(); }
};

inline std::vector<ModelShape> model_shapes() {
  return {{"default", 784, {256, 256}, 10},
          {"deep", 784, std::vector<int64_t>(8, 256), 10},
          {"wide", 1024, {4096, 4096}, 100},
          {"cnn", 784, {}, 10, "cnn"},
          {"resnet18", 784, {}, 10, "resnet18"}};
}

inline std::shared_ptr<nn::Backbone> make_backbone(const ModelShape& s, Generator& gen) {
  if (s.conv == "cnn") return std::make_shared<nn::CNN>(1, 28, 28, gen);
  if (s.conv == "resnet18") return std::make_shared<nn::ResNet18>(1, gen);
  return std::make_shared<nn::MLP>(s.input, s.hidden, gen);
}

/// One model, one fixed batch, one optimizer: `step()` is a whole training step.
class StepModel {
 public:
  StepModel(const ModelShape& s, int64_t batch, Mode mode, Device device, uint64_t seed = 0)
      : mode_(mode) {
    Generator gen(seed);
    backbone_ = make_backbone(s, gen);
    head_ = std::make_shared<nn::Linear>(backbone_->output_dim(), s.classes, gen);
    backbone_->to(device);
    head_->to(device);
    const Shape input = s.is_conv() ? Shape{batch, 1, 28, 28} : Shape{batch, s.input};
    x_ = Tensor::normal(input, 0, 1, gen, DType::Float32, device);
    std::vector<int64_t> labels(static_cast<size_t>(batch));
    for (auto& y : labels)
      y = static_cast<int64_t>(gen.below(static_cast<uint64_t>(s.classes)));
    y_ = Tensor::from_vector(labels, {batch}, device);
    std::vector<Tensor> params = head_->parameters();
    if (mode == Mode::Frozen) {
      backbone_->requires_grad_(false);
      backbone_->eval();
    } else {
      for (const Tensor& p : backbone_->parameters())
        params.push_back(p);
    }
    // Training-mode batch norm needs two values per channel: batch 1 trains in eval mode.
    if (batch == 1) backbone_->eval();
    sgd_ = std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = 0.01, .momentum = 0.9});
  }

  /// Forward, loss, backward, optimizer step, zero grad; returns the loss tensor.
  Tensor step(double* backward_seconds = nullptr);

 private:
  Mode mode_;
  std::shared_ptr<nn::Backbone> backbone_;
  std::shared_ptr<nn::Linear> head_;
  Tensor x_, y_;
  std::unique_ptr<optim::SGD> sgd_;
};

}  // namespace clarena::bench
