#include "clarena/nn/conv.h"

#include <cmath>

#include "clarena/nn/backbones.h"

namespace clarena::nn {

// --- layers -----------------------------------------------------------------------------------

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, Pair kernel, Generator& gen,
               const Conv2dOptions& options, bool bias)
    : options_(options) {
  if (in_channels <= 0 || out_channels <= 0 || kernel[0] <= 0 || kernel[1] <= 0 ||
      options.groups <= 0 || in_channels % options.groups || out_channels % options.groups)
    throw ValueError("Conv2d: in_channels=" + std::to_string(in_channels) + ", out_channels=" +
                     std::to_string(out_channels) + ", kernel " + std::to_string(kernel[0]) + "x" +
                     std::to_string(kernel[1]) + " and groups=" + std::to_string(options.groups) +
                     " must be positive, the channels divisible by groups");
  const int64_t fan_in = in_channels / options.groups * kernel[0] * kernel[1];
  // kaiming_uniform_(a=sqrt(5)) reduces to this bound, the same one torch uses for the bias.
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  weight_ = register_parameter(
      "weight", Tensor::uniform({out_channels, in_channels / options.groups, kernel[0], kernel[1]},
                                -bound, bound, gen));
  if (bias) bias_ = register_parameter("bias", Tensor::uniform({out_channels}, -bound, bound, gen));
}

Tensor Conv2d::forward(const Tensor& x) {
  return conv2d(x, weight_, bias_, options_);
}

BatchNorm2d::BatchNorm2d(int64_t num_features, double eps, double momentum)
    : eps_(eps), momentum_(momentum) {
  weight_ = register_parameter("weight", Tensor::ones({num_features}));
  bias_ = register_parameter("bias", Tensor::zeros({num_features}));
  running_mean_ = register_buffer("running_mean", Tensor::zeros({num_features}));
  running_var_ = register_buffer("running_var", Tensor::ones({num_features}));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  if (x.dim() != 4)
    throw ShapeError("BatchNorm2d: expected input [N, C, H, W], got " + shape_str(x.shape()));
  return batch_norm(x, weight_, bias_, running_mean_, running_var_, is_training(), momentum_, eps_);
}

Tensor MaxPool2d::forward(const Tensor& x) {
  return max_pool2d(x, kernel_, stride_, padding_);
}

Tensor AvgPool2d::forward(const Tensor& x) {
  return avg_pool2d(x, kernel_, stride_, padding_);
}

Tensor AdaptiveAvgPool2d::forward(const Tensor& x) {
  return adaptive_avg_pool2d(x, output_size_);
}

Tensor Flatten::forward(const Tensor& x) {
  return flatten(x, start_dim_);
}

BasicBlock::BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, Generator& gen) {
  const Conv2dOptions strided{.stride = {stride, stride}, .padding = {1, 1}};
  conv1_ = register_module(
      "conv1", std::make_shared<Conv2d>(in_channels, out_channels, 3, gen, strided, false));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(out_channels));
  conv2_ =
      register_module("conv2", std::make_shared<Conv2d>(out_channels, out_channels, 3, gen,
                                                        Conv2dOptions{.padding = {1, 1}}, false));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(out_channels));
  if (stride != 1 || in_channels != out_channels) {
    downsample_ = register_module("downsample", std::make_shared<Sequential>());
    downsample_->push_back(std::make_shared<Conv2d>(
        in_channels, out_channels, 1, gen, Conv2dOptions{.stride = {stride, stride}}, false));
    downsample_->push_back(std::make_shared<BatchNorm2d>(out_channels));
  }
}

Tensor BasicBlock::forward(const Tensor& x) {
  Tensor h = relu(bn1_->forward(conv1_->forward(x)));
  h = bn2_->forward(conv2_->forward(h));
  return relu(h + (downsample_ ? downsample_->forward(x) : x));
}

// --- backbones --------------------------------------------------------------------------------

CNN::CNN(int64_t in_channels, int64_t height, int64_t width, Generator& gen, CNNOptions options)
    : options_(options), in_channels_(in_channels), height_(height), width_(width) {
  if (height < 4 || width < 4)
    throw ValueError("CNN: images must be at least 4x4 (two 2x2 poolings), got " +
                     std::to_string(height) + "x" + std::to_string(width));
  const Conv2dOptions same{.padding = {1, 1}};
  conv1_ = register_module(
      "conv1", std::make_shared<Conv2d>(in_channels, options_.channels1, 3, gen, same, false));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(options_.channels1));
  conv2_ = register_module("conv2", std::make_shared<Conv2d>(options_.channels1, options_.channels2,
                                                             3, gen, same, false));
  bn2_ = register_module("bn2", std::make_shared<BatchNorm2d>(options_.channels2));
  const int64_t flat = options_.channels2 * (height / 4) * (width / 4);
  fc_ = register_module("fc", std::make_shared<Linear>(flat, options_.output_dim, gen));
}

Tensor CNN::forward(const Tensor& x) {
  if (x.dim() != 4 || x.size(1) != in_channels_ || x.size(2) != height_ || x.size(3) != width_)
    throw ShapeError("CNN: expected input [batch, " + std::to_string(in_channels_) + ", " +
                     std::to_string(height_) + ", " + std::to_string(width_) + "], got " +
                     shape_str(x.shape()));
  Tensor h = max_pool2d(relu(bn1_->forward(conv1_->forward(x))), {2, 2});
  h = max_pool2d(relu(bn2_->forward(conv2_->forward(h))), {2, 2});
  return fc_->forward_relu(flatten(h, 1));
}

ResNet18::ResNet18(int64_t in_channels, Generator& gen) {
  conv1_ = register_module(
      "conv1", std::make_shared<Conv2d>(in_channels, 64, 7, gen,
                                        Conv2dOptions{.stride = {2, 2}, .padding = {3, 3}}, false));
  bn1_ = register_module("bn1", std::make_shared<BatchNorm2d>(64));
  const int64_t widths[4] = {64, 128, 256, 512};
  int64_t in = 64;
  for (int i = 0; i < 4; ++i) {
    const int64_t stride = i == 0 ? 1 : 2;
    layers_[i] = register_module("layer" + std::to_string(i + 1), std::make_shared<Sequential>());
    layers_[i]->push_back(std::make_shared<BasicBlock>(in, widths[i], stride, gen));
    layers_[i]->push_back(std::make_shared<BasicBlock>(widths[i], widths[i], 1, gen));
    in = widths[i];
  }
}

Tensor ResNet18::forward(const Tensor& x) {
  if (x.dim() != 4)
    throw ShapeError("ResNet18: expected input [batch, channels, height, width], got " +
                     shape_str(x.shape()));
  Tensor h = max_pool2d(relu(bn1_->forward(conv1_->forward(x))), {3, 3}, {2, 2}, {1, 1});
  for (auto& layer : layers_)
    h = layer->forward(h);
  return flatten(adaptive_avg_pool2d(h, {1, 1}), 1);
}

}  // namespace clarena::nn
