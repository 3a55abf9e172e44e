// Convolutional backbones for 1-channel images (nn::MLP, in layers.h, is the third kind).
#pragma once

#include <memory>

#include "clarena/core/random.h"
#include "clarena/nn/conv.h"
#include "clarena/nn/layers.h"

namespace clarena::nn {

struct CNNOptions {
  int64_t channels1 = 16, channels2 = 32;  // the two convolutions' output channels
  int64_t output_dim = 256;                // the final Linear's width
};

/// A small convnet for MNIST-sized images: two stages conv3×3 (padding 1, no bias: the batch
/// norm after it has one) → BatchNorm2d → ReLU → max pool 2×2, then flatten → Linear → ReLU.
/// Children: conv1, bn1, conv2, bn2, fc. On 1×28×28 inputs with the default options:
/// [B, 16, 14, 14] → [B, 32, 7, 7] → 1568 → 256, 406,512 parameters (16/32 channels rather than
/// 32/64: a third of the step time on CPU; docs/algorithms.md).
class CNN : public Backbone {
 public:
  CNN(int64_t in_channels, int64_t height, int64_t width, Generator& gen, CNNOptions options = {});
  Tensor forward(const Tensor& x) override;
  int64_t output_dim() const override { return options_.output_dim; }

 private:
  CNNOptions options_;
  int64_t in_channels_, height_, width_;
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Linear> fc_;
};

/// ResNet-18 as CLArena's (torchvision's layout without the fc): conv1 7×7 stride 2 padding 3
/// (no bias) → bn1 → ReLU → max pool 3×3 stride 2 padding 1 → layer1..layer4 of two
/// BasicBlocks each (64, 128, 256, 512 channels; strides 1, 2, 2, 2) → adaptive average pool
/// → flatten: 512 features. Parameter names as torchvision's (conv1, bn1, layer1.0.conv1, ...,
/// layer2.0.downsample.0, ...). 11,170,240 parameters on 1 input channel.
class ResNet18 : public Backbone {
 public:
  ResNet18(int64_t in_channels, Generator& gen);
  Tensor forward(const Tensor& x) override;
  int64_t output_dim() const override { return 512; }

 private:
  std::shared_ptr<Conv2d> conv1_;
  std::shared_ptr<BatchNorm2d> bn1_;
  std::shared_ptr<Sequential> layers_[4];
};

}  // namespace clarena::nn
