// Optimizers against hand-computed steps of torch.optim's update rules, and the skip of
// parameters without a gradient.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "clarena/clarena.h"
#include "clarena/kernels/backend.h"

using namespace clarena;
using Vec = std::vector<double>;

namespace {

/// torch.optim.SGD on one parameter, in double; `buf` empty until the first step.
struct SGDRef {
  explicit SGDRef(optim::SGDOptions options) : o(options) {}
  optim::SGDOptions o;
  Vec buf;
  void step(Vec& p, const Vec& g) {
    Vec d(p.size());
    for (size_t i = 0; i < p.size(); ++i)
      d[i] = g[i] + o.weight_decay * p[i];
    if (o.momentum != 0) {
      if (buf.empty())
        buf = d;
      else
        for (size_t i = 0; i < p.size(); ++i)
          buf[i] = o.momentum * buf[i] + (1 - o.dampening) * d[i];
      for (size_t i = 0; i < p.size(); ++i)
        d[i] = o.nesterov ? d[i] + o.momentum * buf[i] : buf[i];
    }
    for (size_t i = 0; i < p.size(); ++i)
      p[i] -= o.lr * d[i];
  }
};

/// torch.optim.Adam (weight decay as L2, no amsgrad) on one parameter, in double.
struct AdamRef {
  explicit AdamRef(optim::AdamOptions options) : o(options) {}
  optim::AdamOptions o;
  Vec m, v;
  int t = 0;
  void step(Vec& p, const Vec& g) {
    if (m.empty()) m = v = Vec(p.size(), 0.0);
    ++t;
    const double bc1 = 1 - std::pow(o.beta1, t), bc2 = 1 - std::pow(o.beta2, t);
    for (size_t i = 0; i < p.size(); ++i) {
      const double d = g[i] + o.weight_decay * p[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * d;
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * d * d;
      p[i] -= o.lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + o.eps);
    }
  }
};

const Vec kInit = {1.0, -2.0, 0.5, 3.0};
const std::vector<Vec> kGrads = {
    {0.1, -0.3, 2.0, 0.0}, {-0.5, 0.2, 1.0, 0.4}, {0.3, 0.3, -1.5, -0.2}};

void expect_near(const Vec& got, const Vec& want, double tol, const char* what, int step) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol) << what << ", step " << step << ", element " << i;
}

Tensor vec(const Vec& v) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
}

/// Runs the optimizer and the reference side by side over the three gradients above.
template <typename Opt, typename Ref, typename Options>
void compare(const Options& options, const char* what) {
  Tensor p = vec(kInit).requires_grad_();
  Opt opt({p}, options);
  Ref ref{options};
  Vec want = kInit;
  for (int s = 0; s < 3; ++s) {
    p.set_grad(vec(kGrads[static_cast<size_t>(s)]));
    opt.step();
    ref.step(want, kGrads[static_cast<size_t>(s)]);
    expect_near(p.to_vector<double>(), want, 1e-12, what, s + 1);
  }
  // The steps moved the parameter (the comparison is not vacuous).
  EXPECT_GT(std::abs(p.to_vector<double>()[0] - kInit[0]), 1e-3) << what;
}

bool bitwise_equal(const Tensor& t, const Vec& v) {
  const Vec got = t.to_vector<double>();
  return std::memcmp(got.data(), v.data(), v.size() * sizeof(double)) == 0;
}

}  // namespace

// --- SGD -----------------------------------------------------------------------------------

TEST(SGD, FirstStepByHand) {
  // p = 1, g = 0.5, wd 0.1: d = 0.6; p = 1 - 0.1 * 0.6 = 0.94 (momentum starts at d).
  Tensor p = Tensor::from_vector(Vec{1.0}, {1}).requires_grad_();
  optim::SGD opt({p}, {0.1, 0.9, 0, 0.1, false});
  p.set_grad(Tensor::from_vector(Vec{0.5}, {1}));
  opt.step();
  EXPECT_NEAR(p.item(), 0.94, 1e-15);
  // Second step: d = 0.5 + 0.094 = 0.594; buf = 0.9 * 0.6 + 0.594 = 1.134; p = 0.94 - 0.1134.
  opt.step();
  EXPECT_NEAR(p.item(), 0.94 - 0.1134, 1e-14);
}

TEST(SGD, Plain) {
  compare<optim::SGD, SGDRef>(optim::SGDOptions{0.1, 0, 0, 0, false}, "plain");
}
TEST(SGD, Momentum) {
  compare<optim::SGD, SGDRef>(optim::SGDOptions{0.1, 0.9, 0, 0, false}, "momentum");
}
TEST(SGD, Dampening) {
  compare<optim::SGD, SGDRef>(optim::SGDOptions{0.1, 0.9, 0.1, 0, false}, "dampening");
}
TEST(SGD, Nesterov) {
  compare<optim::SGD, SGDRef>(optim::SGDOptions{0.1, 0.9, 0, 0, true}, "nesterov");
}
TEST(SGD, WeightDecay) {
  compare<optim::SGD, SGDRef>(optim::SGDOptions{0.1, 0, 0, 0.05, false}, "weight decay");
}
TEST(SGD, Everything) {
  compare<optim::SGD, SGDRef>(optim::SGDOptions{0.05, 0.8, 0, 0.01, true}, "nesterov+wd");
  compare<optim::SGD, SGDRef>(optim::SGDOptions{0.05, 0.8, 0.3, 0.01, false}, "damp+wd");
}

TEST(SGD, Float32Parameters) {
  Tensor p = Tensor::from_vector(std::vector<float>{1, 2}, {2}).requires_grad_();
  optim::SGD opt({p}, {0.5, 0, 0, 0, false});
  p.set_grad(Tensor::from_vector(std::vector<float>{1, -2}, {2}));
  opt.step();
  EXPECT_EQ(p.to_vector<float>(), (std::vector<float>{0.5f, 3.0f}));
}

TEST(SGD, StepRecordsNoGraph) {
  Tensor p = vec(kInit).requires_grad_();
  optim::SGD opt({p}, {0.1, 0.9, 0, 0.01, false});
  p.set_grad(vec(kGrads[0]));
  autograd::reset_stats();
  opt.step();
  EXPECT_EQ(autograd::stats().nodes_recorded, 0);
  EXPECT_TRUE(p.is_leaf());
  EXPECT_TRUE(p.requires_grad());
  opt.zero_grad();
  EXPECT_FALSE(p.grad().defined());
}

// --- Adam ----------------------------------------------------------------------------------

TEST(Adam, FirstStepMovesByLr) {
  // With bias correction the first step is lr * g / (|g| + eps): about lr in each element.
  Tensor p = vec(kInit).requires_grad_();
  optim::Adam opt({p}, {0.01, 0.9, 0.999, 1e-8, 0});
  p.set_grad(vec({0.1, -0.3, 2.0, 1e-3}));
  opt.step();
  expect_near(p.to_vector<double>(), {1.0 - 0.01, -2.0 + 0.01, 0.5 - 0.01, 3.0 - 0.01}, 1e-6,
              "adam first step", 1);
}

TEST(Adam, BiasCorrection) {
  compare<optim::Adam, AdamRef>(optim::AdamOptions{0.01, 0.9, 0.999, 1e-8, 0}, "adam");
}
TEST(Adam, OtherBetas) {
  compare<optim::Adam, AdamRef>(optim::AdamOptions{0.1, 0.5, 0.9, 1e-3, 0}, "adam betas");
}
TEST(Adam, L2WeightDecay) {
  compare<optim::Adam, AdamRef>(optim::AdamOptions{0.01, 0.9, 0.999, 1e-8, 0.1}, "adam wd");
}

// --- skipping parameters without a gradient ----------------------------------------------

TEST(Skip, SGDLeavesGradlessParameterAndItsMomentum) {
  const optim::SGDOptions o{0.1, 0.9, 0, 0.5, false};
  Tensor a = vec(kInit).requires_grad_(), b = vec(kInit).requires_grad_();
  optim::SGD opt({a, b}, o);
  for (int s = 0; s < 2; ++s) {
    a.set_grad(vec(kGrads[static_cast<size_t>(s)]));
    opt.step();
    EXPECT_FALSE(b.grad().defined());
    EXPECT_TRUE(bitwise_equal(b, kInit)) << "step " << s + 1;  // no weight decay, no momentum
  }
  EXPECT_FALSE(bitwise_equal(a, kInit));
  // b's first gradient: the result equals a fresh first step (momentum buffer = d).
  b.set_grad(vec(kGrads[2]));
  opt.step();
  SGDRef ref{o};
  Vec want = kInit;
  ref.step(want, kGrads[2]);
  expect_near(b.to_vector<double>(), want, 1e-15, "sgd skipped param", 3);
}

TEST(Skip, AdamLeavesGradlessParameterAndItsStepCount) {
  const optim::AdamOptions o{0.01, 0.9, 0.999, 1e-8, 0.1};
  Tensor a = vec(kInit).requires_grad_(), b = vec(kInit).requires_grad_();
  optim::Adam opt({a, b}, o);
  for (int s = 0; s < 2; ++s) {
    a.set_grad(vec(kGrads[static_cast<size_t>(s)]));
    opt.step();
    EXPECT_TRUE(bitwise_equal(b, kInit)) << "step " << s + 1;
  }
  b.set_grad(vec(kGrads[2]));
  opt.step();
  AdamRef ref{o};
  Vec want = kInit;
  ref.step(want, kGrads[2]);  // a first step: bias correction with t = 1
  expect_near(b.to_vector<double>(), want, 1e-14, "adam skipped param", 3);
}

TEST(Skip, ZeroGradBetweenStepsSkipsAgain) {
  Tensor p = vec(kInit).requires_grad_();
  optim::SGD opt({p}, {0.1, 0.9, 0, 0.1, false});
  p.set_grad(vec(kGrads[0]));
  opt.step();
  const Vec after_one = p.to_vector<double>();
  opt.zero_grad();
  opt.step();  // no gradient: nothing moves, even with momentum and weight decay
  EXPECT_TRUE(bitwise_equal(p, after_one));
}

// --- defaults and float32 against torch's formulas -------------------------------------------

TEST(Defaults, TorchOptimValues) {
  // torch.optim.SGD (2.x): lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False.
  const optim::SGDOptions sgd;
  EXPECT_EQ(sgd.lr, 1e-3);
  EXPECT_EQ(sgd.momentum, 0.0);
  EXPECT_EQ(sgd.dampening, 0.0);
  EXPECT_EQ(sgd.weight_decay, 0.0);
  EXPECT_FALSE(sgd.nesterov);
  // torch.optim.Adam: lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.
  const optim::AdamOptions adam;
  EXPECT_EQ(adam.lr, 1e-3);
  EXPECT_EQ(adam.beta1, 0.9);
  EXPECT_EQ(adam.beta2, 0.999);
  EXPECT_EQ(adam.eps, 1e-8);
  EXPECT_EQ(adam.weight_decay, 0.0);
}

/// torch computes 1 - beta as a Python double and rounds it once to float32; 1 - float(0.9999)
/// is 1.7e-4 off (relative), which moves every float32 step by ~8e-5. The float32 parameters
/// start at 0 so that their displacement is measured, not the rounding of a large value.
TEST(Adam, Float32OneMinusBetaInDouble) {
  const optim::AdamOptions o{1e-3, 0.9, 0.9999, 1e-8, 0};
  const int64_t n = 64;
  Generator gen(21);
  Tensor p = Tensor::zeros({n}).requires_grad_();
  optim::Adam opt({p}, o);
  AdamRef ref{o};
  Vec want(static_cast<size_t>(n), 0.0);
  for (int s = 0; s < 5; ++s) {
    Vec g(static_cast<size_t>(n));
    for (size_t i = 0; i < g.size(); ++i)  // one sign per element, so p moves monotonically
      g[i] = (i % 2 ? 1.0 : -1.0) * (0.5 + gen.uniform());
    std::vector<float> gf(g.begin(), g.end());
    for (size_t i = 0; i < g.size(); ++i)
      g[i] = gf[i];  // the reference sees the same float32 gradient
    p.set_grad(Tensor::from_vector(gf, {n}));
    opt.step();
    ref.step(want, g);
    const std::vector<float> got = p.to_vector<float>();
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-6 * std::abs(want[i])) << "step " << s + 1 << ", " << i;
  }
}

TEST(Adam, StepCountIsReadFromMemoryEachLaunch) {
  // One AdamParams, built once and launched three times with only the count in memory advanced
  // (what a replayed CUDA graph does), follows torch's three steps: nothing about the step is
  // baked into the launch.
  std::vector<double> p = {0.5, -1.25, 2.0}, m(3), v(3);
  const std::vector<double> g = {0.1, -0.3, 0.7};
  double step = 0;
  const kernels::AdamParams params{.lr = 0.1, .beta1 = 0.8, .beta2 = 0.99, .step = &step};
  std::vector<double> want = p, wm(3), wv(3);
  for (int s = 1; s <= 3; ++s) {
    step += 1;
    kernels::cpu_backend().adam_update(DType::Float64, 3, p.data(), g.data(), m.data(), v.data(),
                                       params);
    for (size_t i = 0; i < 3; ++i) {
      wm[i] = 0.8 * wm[i] + 0.2 * g[i];
      wv[i] = 0.99 * wv[i] + 0.01 * g[i] * g[i];
      want[i] -= 0.1 / (1 - std::pow(0.8, s)) * wm[i] /
                 (std::sqrt(wv[i]) / std::sqrt(1 - std::pow(0.99, s)) + 1e-8);
      EXPECT_NEAR(p[i], want[i], 1e-12) << "step " << s << ", " << i;
    }
  }
  const kernels::AdamParams no_step{};
  EXPECT_THROW(kernels::cpu_backend().adam_update(DType::Float64, 3, p.data(), g.data(), m.data(),
                                                  v.data(), no_step),
               ValueError);
}
