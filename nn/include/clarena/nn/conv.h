// Image layers (NCHW) with PyTorch's conventions: shapes, initialisation, parameter names.
#pragma once

#include <memory>

#include "clarena/core/ops.h"
#include "clarena/core/random.h"
#include "clarena/nn/layers.h"

namespace clarena::nn {

/// torch.nn.Conv2d: weight [out, in / groups, kH, kW], bias [out]; both uniform in
/// ±1/sqrt(fan_in), fan_in = in / groups · kH · kW (kaiming_uniform_(a=√5) reduces to this
/// bound, as for Linear), the weight drawn first.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, Pair kernel, Generator& gen,
         const Conv2dOptions& options = {}, bool bias = true);
  /// A square kernel.
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel, Generator& gen,
         const Conv2dOptions& options = {}, bool bias = true)
      : Conv2d(in_channels, out_channels, Pair{kernel, kernel}, gen, options, bias) {}
  Tensor forward(const Tensor& x) override;
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  const Conv2dOptions& options() const { return options_; }

 private:
  Tensor weight_, bias_;
  Conv2dOptions options_;
};

/// Batch normalisation per channel of [N, C, H, W] (statistics over N·H·W); parameters and
/// buffers as BatchNorm1d's: weight 1, bias 0, running_mean 0, running_var 1.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t num_features, double eps = 1e-5, double momentum = 0.1);
  Tensor forward(const Tensor& x) override;

 private:
  Tensor weight_, bias_, running_mean_, running_var_;
  double eps_, momentum_;
};

/// Max pooling (stride {0, 0}: the kernel, as torch's stride=None).
class MaxPool2d : public Module {
 public:
  explicit MaxPool2d(Pair kernel, Pair stride = {0, 0}, Pair padding = {0, 0})
      : kernel_(kernel), stride_(stride), padding_(padding) {}
  Tensor forward(const Tensor& x) override;

 private:
  Pair kernel_, stride_, padding_;
};

/// Average pooling, padding counted in the divisor (count_include_pad=True).
class AvgPool2d : public Module {
 public:
  explicit AvgPool2d(Pair kernel, Pair stride = {0, 0}, Pair padding = {0, 0})
      : kernel_(kernel), stride_(stride), padding_(padding) {}
  Tensor forward(const Tensor& x) override;

 private:
  Pair kernel_, stride_, padding_;
};

/// Adaptive average pooling to output_size (ops support {1, 1}: the mean over H and W).
class AdaptiveAvgPool2d : public Module {
 public:
  explicit AdaptiveAvgPool2d(Pair output_size = {1, 1}) : output_size_(output_size) {}
  Tensor forward(const Tensor& x) override;

 private:
  Pair output_size_;
};

/// Merges dimensions start_dim.. into one ([N, C, H, W] → [N, C·H·W] by default).
class Flatten : public Module {
 public:
  explicit Flatten(int64_t start_dim = 1) : start_dim_(start_dim) {}
  Tensor forward(const Tensor& x) override;

 private:
  int64_t start_dim_;
};

/// torchvision's ResNet BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), both
/// convolutions 3×3 without bias, the stride on conv1; the shortcut is x, or when the shape
/// changes (stride ≠ 1 or in ≠ out) downsample = Sequential(1×1 conv with the stride, BN).
/// Children: conv1, bn1, conv2, bn2, downsample.0, downsample.1.
class BasicBlock : public Module {
 public:
  BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, Generator& gen);
  Tensor forward(const Tensor& x) override;

 private:
  std::shared_ptr<Conv2d> conv1_, conv2_;
  std::shared_ptr<BatchNorm2d> bn1_, bn2_;
  std::shared_ptr<Sequential> downsample_;  // null: identity shortcut
};

}  // namespace clarena::nn
