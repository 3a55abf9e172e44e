// Autograd's recording rules, the backward engine, and the frozen-path structure of a training
// step: a frozen backbone records no node, saves no activation and keeps every bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "clarena/clarena.h"

using namespace clarena;
namespace ag = clarena::autograd;

namespace {

/// Bytes of a tensor of `shape` and `dtype`.
int64_t bytes_of(const Shape& shape, DType dtype) {
  return shape_numel(shape) * static_cast<int64_t>(itemsize(dtype));
}

/// The raw bytes of every tensor, to compare bit for bit.
std::vector<std::vector<float>> snapshot(const std::vector<Tensor>& tensors) {
  std::vector<std::vector<float>> out;
  for (const Tensor& t : tensors)
    out.push_back(t.to_vector<float>());
  return out;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

Tensor random_labels(int64_t n, int64_t classes, Generator& gen) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  for (auto& l : v)
    l = static_cast<int64_t>(gen.below(static_cast<uint64_t>(classes)));
  return Tensor::from_vector(v, {n});
}

std::vector<Tensor> concat(std::vector<Tensor> a, const std::vector<Tensor>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

}  // namespace

// --- recording rules ---------------------------------------------------------------------

TEST(Recording, NoNodeWhenNoInputRequiresGrad) {
  Tensor a = Tensor::ones({2, 3}), b = Tensor::ones({2, 3});
  ag::reset_stats();
  Tensor c = relu(a + b) * 2.0;
  EXPECT_EQ(ag::stats().nodes_recorded, 0);
  EXPECT_FALSE(c.requires_grad());
  EXPECT_EQ(c.grad_fn(), nullptr);
}

TEST(Recording, NodeWhenOneInputRequiresGrad) {
  Tensor a = Tensor::ones({2, 3}).requires_grad_(), b = Tensor::ones({2, 3});
  const int64_t base = ag::stats().saved_bytes;
  ag::reset_stats();
  Tensor c = a * b;
  EXPECT_EQ(ag::stats().nodes_recorded, 1);
  EXPECT_TRUE(c.requires_grad());
  ASSERT_NE(c.grad_fn(), nullptr);
  EXPECT_STREQ(c.grad_fn()->name(), "mul");
  // mul saves only what a's gradient needs: b.
  EXPECT_EQ(ag::stats().saved_bytes - base, bytes_of({2, 3}, DType::Float32));
}

TEST(Recording, NoGradGuardRecordsNothingAndRestores) {
  Tensor a = Tensor::ones({4}).requires_grad_();
  ASSERT_TRUE(ag::grad_mode_enabled());
  ag::reset_stats();
  {
    ag::NoGradGuard guard;
    EXPECT_FALSE(ag::grad_mode_enabled());
    {
      ag::NoGradGuard nested;
      EXPECT_FALSE(ag::grad_mode_enabled());
    }
    EXPECT_FALSE(ag::grad_mode_enabled());  // the nested guard restores "off"
    Tensor b = tanh(a * 3.0);
    EXPECT_FALSE(b.requires_grad());
    EXPECT_EQ(ag::stats().nodes_recorded, 0);
    EXPECT_EQ(ag::stats().peak_saved_bytes, 0);
  }
  EXPECT_TRUE(ag::grad_mode_enabled());
  Tensor c = a * 3.0;
  EXPECT_TRUE(c.requires_grad());
  EXPECT_EQ(ag::stats().nodes_recorded, 1);
}

TEST(Recording, NodesCountedAndSavedBytesReleased) {
  Generator gen(1);
  Tensor x = Tensor::normal({4, 6}, 0, 1, gen).requires_grad_();
  Tensor w = Tensor::normal({3, 6}, 0, 1, gen).requires_grad_();
  const int64_t base = ag::stats().saved_bytes;
  ag::reset_stats();
  Tensor y = sum(tanh(linear(x, w)));  // linear, tanh, sum
  EXPECT_EQ(ag::stats().nodes_recorded, 3);
  // linear saves x and w (both need grads), tanh its output [4, 3], sum nothing.
  const int64_t expected = bytes_of({4, 6}, DType::Float32) + bytes_of({3, 6}, DType::Float32) +
                           bytes_of({4, 3}, DType::Float32);
  EXPECT_EQ(ag::stats().saved_bytes - base, expected);
  y.backward();
  EXPECT_EQ(ag::stats().saved_bytes, base);
  EXPECT_EQ(ag::stats().peak_saved_bytes - base, expected);
  EXPECT_TRUE(x.grad().defined());
  EXPECT_TRUE(w.grad().defined());
}

TEST(Recording, ResetStatsZeroesCounts) {
  Tensor a = Tensor::ones({3}).requires_grad_();
  Tensor b = a * 2.0;
  EXPECT_GE(ag::stats().nodes_recorded, 1);
  ag::reset_stats();
  EXPECT_EQ(ag::stats().nodes_recorded, 0);
  EXPECT_EQ(ag::stats().peak_saved_bytes, ag::stats().saved_bytes);
}

// --- backward ----------------------------------------------------------------------------

TEST(Backward, RetainGraphAllowsASecondBackward) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}).requires_grad_();
  Tensor y = sum(x * x);
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  // d(sum x²)/dx = 2x, twice.
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{4, 8, 12}));
}

TEST(Backward, SecondBackwardWithoutRetainThrows) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2}, {2}).requires_grad_();
  Tensor y = sum(x * x);
  y.backward();
  try {
    y.backward();
    FAIL() << "second backward did not throw";
  } catch (const AutogradError& e) {
    EXPECT_NE(std::string(e.what()).find("retain_graph"), std::string::npos) << e.what();
  }
}

TEST(Backward, GradsAccumulateAcrossCalls) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, -2}, {2}).requires_grad_();
  sum(x * 3.0).backward();
  sum(x * x).backward();
  // 3 + 2x
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{5, -1}));
}

TEST(Backward, ZeroGradMakesGradUndefined) {
  Tensor x = Tensor::ones({2}).requires_grad_();
  sum(x).backward();
  ASSERT_TRUE(x.grad().defined());
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
  sum(x * 2.0).backward();  // starts afresh, not from the old gradient
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{2, 2}));
}

TEST(Backward, RequiresGradOnNonLeafThrows) {
  Tensor x = Tensor::ones({2}).requires_grad_();
  Tensor y = x * 2.0;
  EXPECT_FALSE(y.is_leaf());
  EXPECT_THROW(y.requires_grad_(false), AutogradError);
  Tensor d = y.detach();
  EXPECT_TRUE(d.is_leaf());
  EXPECT_FALSE(d.requires_grad());
  EXPECT_NO_THROW(d.requires_grad_(true));
}

TEST(Backward, ExplicitOutputGradient) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3}).requires_grad_();
  Tensor y = x * 2.0;
  y.backward(Tensor::from_vector(std::vector<float>{1, 10, 100}, {3}));
  EXPECT_EQ(x.grad().to_vector<float>(), (std::vector<float>{2, 20, 200}));
}

TEST(Backward, DiamondSumsBothPaths) {
  // y = x*x + 3x: x feeds two branches whose gradients meet: 2x + 3.
  Tensor x = Tensor::from_vector(std::vector<double>{0.5, -1, 2}, {3}).requires_grad_();
  Tensor a = x * x;
  Tensor b = x * 3.0;
  sum(a + b).backward();
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{4, 1, 7}));
}

TEST(Backward, DiamondThroughAnInnerNode) {
  // h = tanh(x) is used twice: y = h*h + h; dy/dx = (2h + 1)(1 - h²).
  Tensor x = Tensor::from_vector(std::vector<double>{0.3, -0.7}, {2}).requires_grad_();
  Tensor h = tanh(x);
  sum(h * h + h).backward();
  const std::vector<double> g = x.grad().to_vector<double>();
  for (int i = 0; i < 2; ++i) {
    const double t = std::tanh(i == 0 ? 0.3 : -0.7);
    EXPECT_NEAR(g[static_cast<size_t>(i)], (2 * t + 1) * (1 - t * t), 1e-12);
  }
}

TEST(Backward, DeepChainIsIterative) {
  // A chain far deeper than any recursion would survive, built, back-propagated and freed.
  constexpr int kDepth = 100000;
  Tensor x = Tensor::from_vector(std::vector<double>{1.5}, {1}).requires_grad_();
  const int64_t base = ag::stats().saved_bytes;
  {
    Tensor y = x;
    for (int i = 0; i < kDepth; ++i)
      y = y * 1.0;
    sum(y * 2.0).backward();
  }
  EXPECT_DOUBLE_EQ(x.grad().item(), 2.0);
  EXPECT_EQ(ag::stats().saved_bytes, base);
  // A deep graph dropped without any backward is freed as well (nodes still hold their
  // saved tensors: mul saves its other operand).
  {
    Tensor y = x;
    Tensor one = Tensor::full({1}, 1.0, DType::Float64);
    for (int i = 0; i < kDepth; ++i)
      y = y * one;
    EXPECT_GT(ag::stats().saved_bytes, base);
  }
  EXPECT_EQ(ag::stats().saved_bytes, base);
}

// --- the frozen path ---------------------------------------------------------------------

namespace {

constexpr int64_t kBatch = 16;

struct Step {
  int64_t nodes = 0;
  int64_t peak_saved = 0;   // over the step, above what was held before it
  int64_t after_saved = 0;  // after backward, above what was held before it
};

/// One training step: forward, cross_entropy, backward, optimizer step.
Step train_step(nn::Module& backbone, nn::Linear& head, optim::Optimizer& opt, const Tensor& x,
                const Tensor& labels) {
  opt.zero_grad();
  const int64_t base = ag::stats().saved_bytes;
  ag::reset_stats();
  Step s;
  {
    Tensor loss = cross_entropy(head(backbone(x)), labels);
    s.nodes = ag::stats().nodes_recorded;
    loss.backward();
  }
  s.peak_saved = ag::stats().peak_saved_bytes - base;
  s.after_saved = ag::stats().saved_bytes - base;
  opt.step();
  return s;
}

/// What the head and loss save: the head's input [B, 256] for its weight gradient (its own
/// input needs none), the loss its logits, labels and log-sum-exp.
int64_t head_and_loss_bytes() {
  return bytes_of({kBatch, 256}, DType::Float32) + bytes_of({kBatch, 10}, DType::Float32) +
         bytes_of({kBatch}, DType::Int64) + bytes_of({kBatch}, DType::Float32);
}

class FrozenPath : public ::testing::Test {
 protected:
  Generator gen{42};
  Tensor x = Tensor::normal({kBatch, 784}, 0, 1, gen);
  Tensor labels = random_labels(kBatch, 10, gen);
  optim::SGDOptions sgd{0.1, 0.9, 0, 1e-2, false};
};

}  // namespace

TEST_F(FrozenPath, FrozenBackboneRecordsOnlyHeadAndLoss) {
  nn::MLP backbone(784, {256, 256}, gen);
  nn::Linear head(256, 10, gen);
  backbone.requires_grad_(false);
  optim::SGD opt(concat(backbone.parameters(), head.parameters()), sgd);
  const auto backbone_before = snapshot(backbone.parameters());
  const auto head_before = snapshot(head.parameters());

  const Step s = train_step(backbone, head, opt, x, labels);

  EXPECT_EQ(s.nodes, 2);                           // head linear + cross_entropy
  EXPECT_EQ(s.peak_saved, head_and_loss_bytes());  // no backbone activation
  EXPECT_EQ(s.after_saved, 0);
  for (const auto& [name, p] : backbone.named_parameters()) {
    EXPECT_FALSE(p.requires_grad()) << name;
    EXPECT_FALSE(p.grad().defined()) << name;
  }
  const auto backbone_after = snapshot(backbone.parameters());
  for (size_t i = 0; i < backbone_before.size(); ++i)
    EXPECT_TRUE(bitwise_equal(backbone_before[i], backbone_after[i])) << "backbone param " << i;
  const auto head_after = snapshot(head.parameters());
  for (size_t i = 0; i < head_before.size(); ++i) {
    EXPECT_TRUE(head.parameters()[i].grad().defined());
    EXPECT_FALSE(bitwise_equal(head_before[i], head_after[i])) << "head param " << i;
  }

  // A second step (momentum buffers now live) keeps the same structure and bits.
  const Step s2 = train_step(backbone, head, opt, x, labels);
  EXPECT_EQ(s2.nodes, 2);
  EXPECT_EQ(s2.peak_saved, head_and_loss_bytes());
  const auto backbone_after2 = snapshot(backbone.parameters());
  for (size_t i = 0; i < backbone_before.size(); ++i)
    EXPECT_TRUE(bitwise_equal(backbone_before[i], backbone_after2[i])) << "backbone param " << i;
}

TEST_F(FrozenPath, UnfrozenRecordsTheFullGraph) {
  nn::MLP backbone(784, {256, 256}, gen);
  nn::Linear head(256, 10, gen);
  optim::SGD opt(concat(backbone.parameters(), head.parameters()), sgd);
  const auto before = snapshot(backbone.parameters());

  const Step s = train_step(backbone, head, opt, x, labels);

  // MLP with ReLU and no batch norm fuses linear+ReLU: one node per layer, 2 + head + loss.
  EXPECT_EQ(s.nodes, 4);
  // Backbone layers save their inputs and outputs (and W when the input needs a gradient),
  // so the step holds far more than the head and loss alone.
  const int64_t backbone_bytes =
      bytes_of({kBatch, 784}, DType::Float32) + bytes_of({kBatch, 256}, DType::Float32) +  // 0
      bytes_of({kBatch, 256}, DType::Float32) + bytes_of({256, 256}, DType::Float32) +
      bytes_of({kBatch, 256}, DType::Float32) +  // layer 1: x, W, output
      bytes_of({10, 256}, DType::Float32);       // the head's W: its input now needs a grad
  EXPECT_EQ(s.peak_saved, head_and_loss_bytes() + backbone_bytes);
  EXPECT_EQ(s.after_saved, 0);
  for (const auto& [name, p] : backbone.named_parameters())
    EXPECT_TRUE(p.grad().defined()) << name;
  for (const auto& [name, p] : head.named_parameters())
    EXPECT_TRUE(p.grad().defined()) << name;
  const auto after = snapshot(backbone.parameters());
  for (size_t i = 0; i < before.size(); ++i)
    EXPECT_FALSE(bitwise_equal(before[i], after[i])) << i;
}

TEST_F(FrozenPath, FrozenBatchNormBackboneInEval) {
  nn::MLP backbone(784, {256, 256}, gen, {nn::Activation::ReLU, true});
  nn::Linear head(256, 10, gen);
  // Give the running statistics non-trivial values first, with one training-mode forward.
  {
    ag::NoGradGuard no_grad;
    backbone(x);
  }
  backbone.requires_grad_(false);
  backbone.eval();
  optim::SGD opt(concat(backbone.parameters(), head.parameters()), sgd);
  std::vector<Tensor> buffers;
  for (auto& [name, b] : backbone.named_buffers())
    buffers.push_back(b);
  ASSERT_EQ(buffers.size(), 4u);
  const auto buffers_before = snapshot(buffers);
  const auto params_before = snapshot(backbone.parameters());

  const Step s = train_step(backbone, head, opt, x, labels);

  EXPECT_EQ(s.nodes, 2);
  EXPECT_EQ(s.peak_saved, head_and_loss_bytes());
  const auto buffers_after = snapshot(buffers);
  for (size_t i = 0; i < buffers.size(); ++i)
    EXPECT_TRUE(bitwise_equal(buffers_before[i], buffers_after[i])) << "buffer " << i;
  const auto params_after = snapshot(backbone.parameters());
  for (size_t i = 0; i < params_before.size(); ++i) {
    EXPECT_FALSE(backbone.parameters()[i].grad().defined());
    EXPECT_TRUE(bitwise_equal(params_before[i], params_after[i])) << "param " << i;
  }
}

TEST_F(FrozenPath, UnfrozenBatchNormBackboneRecordsEveryLayer) {
  nn::MLP backbone(784, {256, 256}, gen, {nn::Activation::ReLU, true});
  nn::Linear head(256, 10, gen);
  optim::SGD opt(concat(backbone.parameters(), head.parameters()), sgd);
  const Step s = train_step(backbone, head, opt, x, labels);
  // Per layer: linear, batch_norm, relu; then head linear and loss.
  EXPECT_EQ(s.nodes, 2 * 3 + 2);
  for (const auto& [name, p] : backbone.named_parameters())
    EXPECT_TRUE(p.grad().defined()) << name;
}
