// Image layers and convolutional backbones: shapes, parameter names and counts,
// initialisation, and a frozen backbone that records and saves nothing.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "clarena/core/autograd.h"
#include "clarena/core/ops.h"
#include "clarena/nn/backbones.h"
#include "clarena/nn/conv.h"

using namespace clarena;
using ::testing::ElementsAre;

namespace {

std::vector<std::string> names(const nn::NamedTensors& tensors) {
  std::vector<std::string> out;
  for (const auto& [name, t] : tensors)
    out.push_back(name);
  return out;
}

Tensor images(Shape shape, uint64_t seed = 3) {
  Generator gen(seed);
  return Tensor::normal(shape, 0, 1, gen);
}

// Every value within ±bound, and not all the same.
void expect_uniform_within(const Tensor& t, double bound, const std::string& what) {
  const std::vector<float> v = t.to_vector<float>();
  ASSERT_FALSE(v.empty()) << what;
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  EXPECT_GE(*lo, -bound) << what;
  EXPECT_LE(*hi, bound) << what;
  EXPECT_LT(*lo, *hi) << what << ": all equal";
  if (v.size() >= 100) {  // spread over most of the range
    EXPECT_LT(*lo, -0.8 * bound) << what;
    EXPECT_GT(*hi, 0.8 * bound) << what;
  }
}

// Parameters of the torchvision-layout pieces, computed from the layout.
int64_t conv_params(int64_t in, int64_t out, int64_t k, bool bias) {
  return out * in * k * k + (bias ? out : 0);
}
int64_t bn_params(int64_t c) {
  return 2 * c;
}
int64_t block_params(int64_t in, int64_t out, int64_t stride) {
  int64_t n = conv_params(in, out, 3, false) + bn_params(out) + conv_params(out, out, 3, false) +
              bn_params(out);
  if (stride != 1 || in != out) n += conv_params(in, out, 1, false) + bn_params(out);
  return n;
}

}  // namespace

TEST(Conv2dModule, ShapesNamesAndOptions) {
  Generator gen(1);
  nn::Conv2d conv(3, 8, 3, gen, {.padding = {1, 1}});
  EXPECT_THAT(names(conv.named_parameters()), ElementsAre("weight", "bias"));
  EXPECT_EQ(conv.weight().shape(), (Shape{8, 3, 3, 3}));
  EXPECT_EQ(conv.bias().shape(), (Shape{8}));
  EXPECT_EQ(conv(images({2, 3, 10, 10})).shape(), (Shape{2, 8, 10, 10}));

  // The default options (GCC 12.2 at -O3 -march=native on AVX-512 once built a by-value
  // Conv2dOptions{} with padding {1, 0}: the module takes its options by reference).
  nn::Conv2d plain(3, 8, 3, gen);
  EXPECT_EQ(plain.options().padding, (Pair{0, 0}));
  EXPECT_EQ(plain.options().stride, (Pair{1, 1}));
  EXPECT_EQ(plain.options().dilation, (Pair{1, 1}));
  EXPECT_EQ(plain(images({2, 3, 10, 10})).shape(), (Shape{2, 8, 8, 8}));

  nn::Conv2d strided(3, 8, 3, gen, {.stride = {2, 2}, .padding = {1, 1}});
  EXPECT_EQ(strided(images({2, 3, 10, 10})).shape(), (Shape{2, 8, 5, 5}));

  nn::Conv2d no_bias(4, 6, {1, 3}, gen, {.groups = 2}, false);
  EXPECT_THAT(names(no_bias.named_parameters()), ElementsAre("weight"));
  EXPECT_EQ(no_bias.weight().shape(), (Shape{6, 2, 1, 3}));
  EXPECT_FALSE(no_bias.bias().defined());
  EXPECT_EQ(no_bias(images({1, 4, 5, 7})).shape(), (Shape{1, 6, 5, 5}));

  EXPECT_THROW(nn::Conv2d(0, 8, 3, gen), ValueError);
  EXPECT_THROW(nn::Conv2d(3, 8, 3, gen, {.groups = 2}), ValueError);  // 3 % 2
}

// torch.nn.Conv2d's reset_parameters: weight and bias uniform in ±1/sqrt(fan_in).
TEST(Conv2dModule, KaimingUniformBounds) {
  Generator gen(2);
  nn::Conv2d conv(16, 32, 3, gen);
  const double bound = 1.0 / std::sqrt(16.0 * 9.0);
  expect_uniform_within(conv.weight(), bound, "weight");
  expect_uniform_within(conv.bias(), bound, "bias");
  nn::Conv2d grouped(16, 32, 3, gen, {.groups = 4});
  expect_uniform_within(grouped.weight(), 1.0 / std::sqrt(4.0 * 9.0), "grouped weight");
  // Deterministic by generator: the same seed gives the same draws.
  Generator a(9), b(9);
  EXPECT_EQ(nn::Conv2d(2, 3, 3, a).weight().to_vector<float>(),
            nn::Conv2d(2, 3, 3, b).weight().to_vector<float>());
}

TEST(BatchNorm2dModule, NamesValuesAndStatistics) {
  nn::BatchNorm2d bn(4);
  EXPECT_THAT(names(bn.named_parameters()), ElementsAre("weight", "bias"));
  EXPECT_THAT(names(bn.named_buffers()), ElementsAre("running_mean", "running_var"));
  const nn::NamedTensors buffers = bn.named_buffers();
  EXPECT_EQ(bn.named_parameters()[0].second.to_vector<float>(), std::vector<float>(4, 1.f));
  EXPECT_EQ(bn.named_parameters()[1].second.to_vector<float>(), std::vector<float>(4, 0.f));
  EXPECT_EQ(buffers[0].second.to_vector<float>(), std::vector<float>(4, 0.f));
  EXPECT_EQ(buffers[1].second.to_vector<float>(), std::vector<float>(4, 1.f));
  Tensor x = images({3, 4, 5, 5}) * 2.0 + Tensor::ones({3, 4, 5, 5});
  EXPECT_EQ(bn(x).shape(), (Shape{3, 4, 5, 5}));
  EXPECT_NE(buffers[0].second.to_vector<float>(), std::vector<float>(4, 0.f)) << "train updates";
  const std::vector<float> mean = buffers[0].second.to_vector<float>();
  bn.eval();
  bn(x);
  EXPECT_EQ(buffers[0].second.to_vector<float>(), mean) << "eval reads, never writes";
  EXPECT_THROW(bn(images({3, 4})), ShapeError);
}

TEST(PoolingModules, Shapes) {
  Tensor x = images({2, 3, 8, 8});
  EXPECT_EQ(nn::MaxPool2d({2, 2})(x).shape(), (Shape{2, 3, 4, 4}));
  EXPECT_EQ(nn::MaxPool2d({3, 3}, {2, 2}, {1, 1})(x).shape(), (Shape{2, 3, 4, 4}));
  EXPECT_EQ(nn::AvgPool2d({2, 2})(x).shape(), (Shape{2, 3, 4, 4}));
  EXPECT_EQ(nn::AvgPool2d({3, 3}, {1, 1}, {1, 1})(x).shape(), (Shape{2, 3, 8, 8}));
  EXPECT_EQ(nn::AdaptiveAvgPool2d({1, 1})(x).shape(), (Shape{2, 3, 1, 1}));
  EXPECT_EQ(nn::Flatten()(x).shape(), (Shape{2, 192}));
  EXPECT_EQ(nn::Flatten(2)(x).shape(), (Shape{2, 3, 64}));
  EXPECT_TRUE(nn::MaxPool2d({2, 2}).named_parameters().empty());
}

TEST(BasicBlockModule, IdentityAndDownsampleShortcuts) {
  Generator gen(4);
  nn::BasicBlock same(16, 16, 1, gen);
  EXPECT_THAT(names(same.named_parameters()),
              ElementsAre("conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight",
                          "bn2.bias"));
  EXPECT_EQ(same(images({2, 16, 6, 6})).shape(), (Shape{2, 16, 6, 6}));
  EXPECT_EQ(same.num_parameters(), block_params(16, 16, 1));

  nn::BasicBlock down(16, 32, 2, gen);
  EXPECT_THAT(
      names(down.named_parameters()),
      ElementsAre("conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight",
                  "bn2.bias", "downsample.0.weight", "downsample.1.weight", "downsample.1.bias"));
  EXPECT_THAT(
      names(down.named_buffers()),
      ElementsAre("bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var",
                  "downsample.1.running_mean", "downsample.1.running_var"));
  Tensor y = down(images({2, 16, 6, 6}));
  EXPECT_EQ(y.shape(), (Shape{2, 32, 3, 3}));
  const std::vector<float> v = y.to_vector<float>();
  EXPECT_GE(*std::min_element(v.begin(), v.end()), 0.f) << "ends with a ReLU";
  EXPECT_EQ(down.num_parameters(), block_params(16, 32, 2));
}

TEST(CNNBackbone, ShapesNamesCountAndInit) {
  Generator gen(5);
  nn::CNN cnn(1, 28, 28, gen);
  EXPECT_EQ(cnn.output_dim(), 256);
  EXPECT_THAT(names(cnn.named_parameters()),
              ElementsAre("conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight",
                          "bn2.bias", "fc.weight", "fc.bias"));
  const int64_t expected = conv_params(1, 16, 3, false) + bn_params(16) +
                           conv_params(16, 32, 3, false) + bn_params(32) + 32 * 7 * 7 * 256 + 256;
  EXPECT_EQ(expected, 406512);  // what config.cpp's parameter cap assumes
  EXPECT_EQ(cnn.num_parameters(), expected);
  Tensor y = cnn(images({3, 1, 28, 28}));
  EXPECT_EQ(y.shape(), (Shape{3, 256}));
  for (const auto& [name, p] : cnn.named_parameters()) {
    if (name.starts_with("bn")) continue;
    const int64_t fan_in = p.dim() == 4   ? p.size(1) * p.size(2) * p.size(3)
                           : p.dim() == 2 ? p.size(1)
                                          : 0;
    if (fan_in) expect_uniform_within(p, 1.0 / std::sqrt(double(fan_in)), name);
  }
  expect_uniform_within(cnn.named_parameters()[7].second, 1.0 / std::sqrt(1568.0), "fc.bias");
  EXPECT_THROW(cnn(images({3, 784})), ShapeError);
  EXPECT_THROW(cnn(images({3, 1, 14, 14})), ShapeError);
  // Other sizes: the linear layer follows the image.
  nn::CNN small(3, 12, 8, gen, {.channels1 = 4, .channels2 = 6, .output_dim = 10});
  EXPECT_EQ(small(images({2, 3, 12, 8})).shape(), (Shape{2, 10}));
  EXPECT_EQ(small.named_parameters()[6].second.shape(), (Shape{10, 6 * 3 * 2}));
}

TEST(ResNet18Backbone, LayoutAndParameterCount) {
  Generator gen(6);
  nn::ResNet18 net(1, gen);
  EXPECT_EQ(net.output_dim(), 512);
  // From the layout: conv1 7x7 (no bias), bn1, then two BasicBlocks per stage.
  int64_t expected = conv_params(1, 64, 7, false) + bn_params(64);
  int64_t in = 64;
  for (int64_t width : {64, 128, 256, 512}) {
    expected += block_params(in, width, in == width ? 1 : 2) + block_params(width, width, 1);
    in = width;
  }
  // torchvision's resnet18 has 11,689,512: minus its fc (512·1000 + 1000) and the two
  // input channels fewer of conv1 (2·64·7·7).
  EXPECT_EQ(expected, 11689512 - (512 * 1000 + 1000) - 2 * 64 * 7 * 7);
  EXPECT_EQ(expected, 11170240);  // what config.cpp's parameter cap assumes
  EXPECT_EQ(net.num_parameters(), expected);
  const std::vector<std::string> n = names(net.named_parameters());
  const std::set<std::string> set(n.begin(), n.end());
  for (const char* key :
       {"conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer1.1.bn2.bias",
        "layer2.0.downsample.0.weight", "layer2.0.downsample.1.weight", "layer4.1.conv2.weight"})
    EXPECT_EQ(set.count(key), 1u) << key;
  EXPECT_EQ(set.count("layer1.0.downsample.0.weight"), 0u) << "stage 1 keeps its shape";
  EXPECT_EQ(set.count("conv1.bias"), 0u);
  EXPECT_EQ(n.size(), 60u);  // 20 convolutions (no bias) + 20 batch norms · 2
  Tensor y = net(images({2, 1, 28, 28}));
  EXPECT_EQ(y.shape(), (Shape{2, 512}));
}

// Freezing is a flag: a frozen CNN's forward records no node and saves nothing; only the
// head's linear and the loss are recorded, and the backbone gets no gradient.
TEST(CNNBackbone, FrozenBackboneRecordsOnlyTheHead) {
  Generator gen(7);
  nn::CNN cnn(1, 28, 28, gen);
  nn::Linear head(256, 10, gen);
  Tensor x = images({8, 1, 28, 28});
  Tensor y = Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7}, {8});

  autograd::reset_stats();
  cross_entropy(head(cnn(x)), y).backward();
  const int64_t trainable_nodes = autograd::stats().nodes_recorded;
  EXPECT_GT(trainable_nodes, 10);

  cnn.requires_grad_(false);
  cnn.zero_grad();
  head.zero_grad();
  autograd::reset_stats();
  const int64_t saved_before = autograd::stats().saved_bytes;
  Tensor features = cnn(x);
  EXPECT_FALSE(features.requires_grad());
  EXPECT_EQ(autograd::stats().nodes_recorded, 0);
  EXPECT_EQ(autograd::stats().saved_bytes, saved_before) << "the backbone saved an activation";
  Tensor loss = cross_entropy(head(features), y);
  EXPECT_EQ(autograd::stats().nodes_recorded, 2);  // linear + cross-entropy
  // What the head and loss keep: features [8, 256], the head's weights, probabilities, labels.
  const int64_t bound = 4 * 8 * 256 + 4 * (256 * 10 + 10) + 8 * 8 * 10 + 8 * 8;
  EXPECT_LE(autograd::stats().peak_saved_bytes - saved_before, bound);
  loss.backward();
  for (const auto& [name, p] : cnn.named_parameters())
    EXPECT_FALSE(p.grad().defined()) << name;
  EXPECT_TRUE(head.weight().grad().defined());
}
