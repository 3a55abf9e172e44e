// Modules: parameter names, modes, freezing, dtype conversion, Linear's initialisation,
// BatchNorm1d, MLP.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "clarena/clarena.h"
#include "clarena/kernels/backend.h"
#include "gradcheck.h"

using namespace clarena;

namespace {

std::vector<std::string> names_of(const nn::NamedTensors& tensors) {
  std::vector<std::string> out;
  for (const auto& [name, t] : tensors)
    out.push_back(name);
  return out;
}

void expect_all_near(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

/// The named buffer of a module (fails the test when missing).
Tensor buffer(const nn::Module& m, const std::string& name) {
  for (const auto& [n, t] : m.named_buffers())
    if (n == name) return t;
  ADD_FAILURE() << "no buffer " << name;
  return Tensor();
}

/// A float32 tensor's values as float64 (exact).
Tensor as_float64(const Tensor& t) {
  const std::vector<float> v = t.to_vector<float>();
  return Tensor::from_vector(std::vector<double>(v.begin(), v.end()), t.shape());
}

/// Every parameter and buffer of `m`, as doubles, in named order.
std::vector<std::vector<double>> values_of(const nn::Module& m) {
  std::vector<std::vector<double>> out;
  for (const auto& list : {m.named_parameters(), m.named_buffers()})
    for (const auto& [name, t] : list) {
      if (t.dtype() == DType::Float32) {
        const std::vector<float> v = t.to_vector<float>();
        out.emplace_back(v.begin(), v.end());
      } else {
        out.push_back(t.to_vector<double>());
      }
    }
  return out;
}

/// A module with an integer buffer, which Module::to(DType) must leave alone (as torch does
/// with BatchNorm's num_batches_tracked).
struct WithCounter : nn::Module {
  WithCounter() {
    weight = register_parameter("weight", Tensor::ones({3}));
    count = register_buffer("count", Tensor::from_vector(std::vector<int64_t>{7}, {1}));
  }
  Tensor forward(const Tensor& x) override { return x * weight; }
  Tensor weight, count;
};

}  // namespace

// --- names and structure -------------------------------------------------------------------

TEST(Module, MLPParameterNames) {
  Generator gen(0);
  nn::MLP mlp(8, {6, 4}, gen);
  EXPECT_EQ(names_of(mlp.named_parameters()),
            (std::vector<std::string>{"fc.0.weight", "fc.0.bias", "fc.1.weight", "fc.1.bias"}));
  EXPECT_TRUE(mlp.named_buffers().empty());
  EXPECT_EQ(mlp.parameters().size(), 4u);
  EXPECT_EQ(mlp.num_parameters(), 6 * 8 + 6 + 4 * 6 + 4);
  EXPECT_EQ(mlp.output_dim(), 4);
  EXPECT_EQ(mlp.input_dim(), 8);
  const auto params = mlp.named_parameters();
  EXPECT_EQ(params[0].second.shape(), (Shape{6, 8}));  // [out, in]
  EXPECT_EQ(params[3].second.shape(), (Shape{4}));
}

TEST(Module, MLPWithBatchNormNames) {
  Generator gen(0);
  nn::MLP mlp(8, {6, 4}, gen, {nn::Activation::ReLU, true});
  EXPECT_EQ(names_of(mlp.named_parameters()),
            (std::vector<std::string>{"fc.0.weight", "fc.0.bias", "fc.1.weight", "fc.1.bias",
                                      "fc_bn.0.weight", "fc_bn.0.bias", "fc_bn.1.weight",
                                      "fc_bn.1.bias"}));
  EXPECT_EQ(names_of(mlp.named_buffers()),
            (std::vector<std::string>{"fc_bn.0.running_mean", "fc_bn.0.running_var",
                                      "fc_bn.1.running_mean", "fc_bn.1.running_var"}));
  for (const auto& [name, b] : mlp.named_buffers())
    EXPECT_FALSE(b.requires_grad()) << name;
  for (const auto& [name, p] : mlp.named_parameters())
    EXPECT_TRUE(p.requires_grad()) << name;
}

TEST(Module, SequentialNamesChildrenByIndex) {
  Generator gen(0);
  nn::Sequential seq({std::make_shared<nn::Linear>(3, 4, gen), std::make_shared<nn::ReLU>(),
                      std::make_shared<nn::Linear>(4, 2, gen, /*bias=*/false)});
  EXPECT_EQ(seq.size(), 3u);
  ASSERT_EQ(seq.children().size(), 3u);
  EXPECT_EQ(seq.children()[0].first, "0");
  EXPECT_EQ(seq.children()[1].first, "1");
  EXPECT_EQ(seq.children()[2].first, "2");
  EXPECT_EQ(names_of(seq.named_parameters()),
            (std::vector<std::string>{"0.weight", "0.bias", "2.weight"}));
  // Forward applies the children in order.
  Tensor x = Tensor::normal({5, 3}, 0, 1, gen);
  const auto& l0 = static_cast<nn::Linear&>(*seq.children()[0].second);
  const auto& l2 = static_cast<nn::Linear&>(*seq.children()[2].second);
  EXPECT_EQ(seq(x).to_vector<float>(),
            linear(relu(linear(x, l0.weight(), l0.bias())), l2.weight()).to_vector<float>());
}

TEST(Module, TrainEvalPropagates) {
  Generator gen(0);
  nn::MLP mlp(4, {3, 3}, gen, {nn::Activation::ReLU, true});
  auto all_modes = [](const nn::Module& root) {
    std::vector<bool> modes{root.is_training()};
    std::vector<const nn::Module*> stack{&root};
    while (!stack.empty()) {
      const nn::Module* m = stack.back();
      stack.pop_back();
      for (const auto& [name, child] : m->children()) {
        modes.push_back(child->is_training());
        stack.push_back(child.get());
      }
    }
    return modes;
  };
  auto modes = all_modes(mlp);
  EXPECT_EQ(modes.size(), 7u);  // mlp, fc, fc_bn, 2 linears, 2 batch norms
  for (bool m : modes)
    EXPECT_TRUE(m);
  mlp.eval();
  for (bool m : all_modes(mlp))
    EXPECT_FALSE(m);
  mlp.train();
  for (bool m : all_modes(mlp))
    EXPECT_TRUE(m);
}

TEST(Module, RequiresGradOnModuleAndZeroGrad) {
  Generator gen(0);
  nn::MLP mlp(4, {3}, gen, {nn::Activation::ReLU, true});
  mlp.requires_grad_(false);
  for (const Tensor& p : mlp.parameters())
    EXPECT_FALSE(p.requires_grad());
  Tensor x = Tensor::normal({4, 4}, 0, 1, gen);
  EXPECT_FALSE(mlp(x).requires_grad());
  mlp.requires_grad_(true);
  for (const Tensor& p : mlp.parameters())
    EXPECT_TRUE(p.requires_grad());
  sum(mlp(x)).backward();
  for (const Tensor& p : mlp.parameters())
    EXPECT_TRUE(p.grad().defined());
  mlp.zero_grad();
  for (const Tensor& p : mlp.parameters())
    EXPECT_FALSE(p.grad().defined());
}

// --- dtype conversion (Module::to(DType), as torch.nn.Module.double() / .float()) ----------

TEST(ModuleTo, Float64MLPWithBatchNormMatchesFloat32) {
  Generator gen(4);
  nn::MLP mlp(6, {5, 4}, gen, {nn::Activation::Tanh, true});
  Tensor x = Tensor::normal({8, 6}, 0, 1, gen);
  mlp(x);  // move the running statistics away from their initial values
  sum(mlp(x)).backward();
  std::vector<std::vector<float>> grads;
  for (const Tensor& p : mlp.parameters())
    grads.push_back(p.grad().to_vector<float>());
  const std::vector<float> train32 = mlp(x).to_vector<float>();
  mlp.eval();
  const std::vector<float> eval32 = mlp(x).to_vector<float>();
  mlp.train();
  const Tensor first_weight = mlp.parameters()[0];  // a handle taken before the move
  const auto before = values_of(mlp);

  mlp.to(DType::Float64);
  EXPECT_EQ(first_weight.dtype(), DType::Float64);  // in place: old handles see the change
  for (const auto& [name, p] : mlp.named_parameters()) {
    EXPECT_EQ(p.dtype(), DType::Float64) << name;
    EXPECT_TRUE(p.requires_grad()) << name;
    EXPECT_TRUE(p.is_leaf()) << name;
  }
  for (const auto& [name, b] : mlp.named_buffers()) {
    EXPECT_EQ(b.dtype(), DType::Float64) << name;
    EXPECT_FALSE(b.requires_grad()) << name;
  }
  EXPECT_EQ(values_of(mlp), before);  // float32 -> float64 is exact
  const auto params = mlp.parameters();
  for (size_t i = 0; i < params.size(); ++i) {  // gradients move with their parameters
    ASSERT_TRUE(params[i].grad().defined()) << i;
    const std::vector<double> g = params[i].grad().to_vector<double>();
    EXPECT_EQ(g, std::vector<double>(grads[i].begin(), grads[i].end())) << i;
  }

  const Tensor x64 = as_float64(x);
  mlp.eval();  // first, while the running statistics are those eval32 used
  expect_all_near(eval32, mlp(x64).to_vector<double>(), 1e-5);
  mlp.train();
  const Tensor y64 = mlp(x64);
  EXPECT_EQ(y64.dtype(), DType::Float64);
  expect_all_near(train32, y64.to_vector<double>(), 1e-5);
  // Float32 input to a float64 module is a dtype error, not a silent conversion.
  EXPECT_THROW(mlp(x), DTypeError);

  // And back: the parameters round to their original float32 bits.
  mlp.to(DType::Float32);
  const auto back = values_of(mlp);
  for (size_t i = 0; i < mlp.parameters().size(); ++i)
    EXPECT_EQ(back[i], before[i]) << i;
  for (const Tensor& p : mlp.parameters())
    EXPECT_EQ(p.grad().dtype(), DType::Float32);
  EXPECT_EQ(mlp(x).to_vector<float>(), train32);  // same bits, same float32 forward
}

TEST(ModuleTo, FrozenModuleStaysFrozen) {
  Generator gen(1);
  nn::MLP mlp(4, {3}, gen, {nn::Activation::ReLU, true});
  mlp.requires_grad_(false);
  mlp.to(DType::Float64);
  for (const Tensor& p : mlp.parameters()) {
    EXPECT_EQ(p.dtype(), DType::Float64);
    EXPECT_FALSE(p.requires_grad());
    EXPECT_FALSE(p.grad().defined());
  }
  const auto nodes = autograd::stats().nodes_recorded;
  Tensor y = mlp(Tensor::normal({5, 4}, 0, 1, gen, DType::Float64));
  EXPECT_FALSE(y.requires_grad());
  EXPECT_EQ(autograd::stats().nodes_recorded, nodes);  // a frozen forward records nothing
}

TEST(ModuleTo, LeavesIntegerBuffersAloneAndRejectsInt64) {
  WithCounter m;
  m.to(DType::Float64);
  EXPECT_EQ(m.weight.dtype(), DType::Float64);
  EXPECT_EQ(m.count.dtype(), DType::Int64);
  EXPECT_EQ(m.count.to_vector<int64_t>(), std::vector<int64_t>{7});
  EXPECT_THROW(m.to(DType::Int64), DTypeError);
  EXPECT_EQ(m.weight.dtype(), DType::Float64);  // unchanged by the refused call
}

// End to end in float64: a small module converted with to(Float64) passes a gradient check
// for its input and every parameter (batch norm in training mode included).
TEST(ModuleTo, Float64GradientCheckOfAModule) {
  Generator gen(9);
  nn::Sequential net({std::make_shared<nn::Linear>(4, 5, gen), std::make_shared<nn::BatchNorm1d>(5),
                      std::make_shared<nn::ReLU>(), std::make_shared<nn::Linear>(5, 3, gen)});
  net.to(DType::Float64);
  std::vector<Tensor> inputs = net.parameters();  // the module's own handles
  inputs.push_back(Tensor::normal({6, 4}, 0, 1, gen, DType::Float64));
  EXPECT_TRUE(
      gradcheck::check([&](const std::vector<Tensor>& in) { return net(in.back()); }, inputs));
}

// --- Linear ----------------------------------------------------------------------------------

TEST(Linear, InitWithinTorchBounds) {
  Generator gen(11);
  nn::Linear layer(50, 20, gen);
  EXPECT_EQ(layer.in_features(), 50);
  EXPECT_EQ(layer.out_features(), 20);
  const double bound = 1.0 / std::sqrt(50.0);
  for (const Tensor& p : {layer.weight(), layer.bias()}) {
    const auto v = p.to_vector<float>();
    float lo = v[0], hi = v[0];
    for (float x : v) {
      EXPECT_LE(std::abs(x), bound);
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
    EXPECT_LT(lo, hi);          // not all equal
    EXPECT_GT(hi - lo, bound);  // and spread over the range
  }
}

TEST(Linear, SameSeedSameInit) {
  Generator g1(5), g2(5), g3(6);
  nn::Linear a(7, 3, g1), b(7, 3, g2), c(7, 3, g3);
  EXPECT_EQ(a.weight().to_vector<float>(), b.weight().to_vector<float>());
  EXPECT_NE(a.weight().to_vector<float>(), c.weight().to_vector<float>());
}

TEST(Linear, ForwardMatchesHandComputation) {
  Generator gen(0);
  nn::Linear layer(2, 2, gen);
  Tensor(layer.weight()).copy_(Tensor::from_vector(std::vector<float>{1, 2, 3, 4}, {2, 2}));
  Tensor(layer.bias()).copy_(Tensor::from_vector(std::vector<float>{0.5, -0.5}, {2}));
  Tensor x = Tensor::from_vector(std::vector<float>{1, -1, 2, 0}, {2, 2});
  // rows: [1,-1]·W^T = [-1, -1] + b; [2,0]·W^T = [2, 6] + b
  EXPECT_EQ(layer(x).to_vector<float>(), (std::vector<float>{-0.5, -1.5, 2.5, 5.5}));
  EXPECT_EQ(layer.forward_relu(x).to_vector<float>(), (std::vector<float>{0, 0, 2.5, 5.5}));
  EXPECT_THROW(nn::Linear(0, 3, gen), ValueError);
}

// --- BatchNorm1d -----------------------------------------------------------------------------

TEST(BatchNorm1d, TrainUsesBatchStatsAndUpdatesRunningStats) {
  nn::BatchNorm1d bn(2);
  // Column 0: 1, 2, 3, 6 (mean 3, biased var 3.5, unbiased 14/3); column 1: all 5.
  Tensor x = Tensor::from_vector(std::vector<float>{1, 5, 2, 5, 3, 5, 6, 5}, {4, 2});
  Tensor y = bn(x);
  const double inv0 = 1 / std::sqrt(3.5 + 1e-5);
  expect_all_near(y.to_vector<float>(), {-2 * inv0, 0, -1 * inv0, 0, 0, 0, 3 * inv0, 0}, 1e-5);
  expect_all_near(buffer(bn, "running_mean").to_vector<float>(), {0.1 * 3, 0.1 * 5}, 1e-6);
  expect_all_near(buffer(bn, "running_var").to_vector<float>(),
                  {0.9 * 1 + 0.1 * (14.0 / 3), 0.9 * 1 + 0.1 * 0}, 1e-6);
  // A second batch moves the running stats again, by momentum 0.1.
  bn(x);
  expect_all_near(buffer(bn, "running_mean").to_vector<float>(),
                  {0.9 * 0.3 + 0.1 * 3, 0.9 * 0.5 + 0.1 * 5}, 1e-6);
}

TEST(BatchNorm1d, EvalUsesRunningStatsAndLeavesThem) {
  nn::BatchNorm1d bn(2);
  buffer(bn, "running_mean").copy_(Tensor::from_vector(std::vector<float>{1, -2}, {2}));
  buffer(bn, "running_var").copy_(Tensor::from_vector(std::vector<float>{4, 0.25}, {2}));
  auto params = bn.parameters();  // weight, bias
  params[0].copy_(Tensor::from_vector(std::vector<float>{2, 1}, {2}));
  params[1].copy_(Tensor::from_vector(std::vector<float>{0, 10}, {2}));
  bn.eval();
  Tensor x = Tensor::from_vector(std::vector<float>{3, -2, 1, 0}, {2, 2});
  const double s0 = 2 / std::sqrt(4 + 1e-5), s1 = 1 / std::sqrt(0.25 + 1e-5);
  expect_all_near(bn(x).to_vector<float>(), {2 * s0, 10, 0, 2 * s1 + 10}, 1e-5);
  expect_all_near(buffer(bn, "running_mean").to_vector<float>(), {1, -2}, 0);
  expect_all_near(buffer(bn, "running_var").to_vector<float>(), {4, 0.25}, 0);
  // Eval works on a single row, where training cannot estimate a variance.
  EXPECT_NO_THROW(bn(Tensor::zeros({1, 2})));
  bn.train();
  EXPECT_THROW(bn(Tensor::zeros({1, 2})), ValueError);
}

// --- MLP -------------------------------------------------------------------------------------

TEST(MLP, ForwardMatchesManualLayers) {
  Generator gen(3);
  using A = nn::Activation;
  for (const A act : {A::ReLU, A::Tanh, A::Sigmoid, A::None}) {
    nn::MLP mlp(5, {4, 3}, gen, {act, false});
    Tensor x = Tensor::normal({6, 5}, 0, 1, gen);
    auto p = mlp.parameters();
    auto activate = [&](const Tensor& t) {
      if (act == A::ReLU) return relu(t);
      if (act == A::Tanh) return tanh(t);
      if (act == A::Sigmoid) return sigmoid(t);
      return t;
    };
    Tensor want = activate(linear(activate(linear(x, p[0], p[1])), p[2], p[3]));
    const auto got = mlp(x).to_vector<float>();
    expect_all_near(
        got,
        [&] {
          std::vector<double> w;
          for (float v : want.to_vector<float>())
            w.push_back(v);
          return w;
        }(),
        1e-6);
    EXPECT_EQ(mlp(x).shape(), (Shape{6, 3})) << to_string(act);
  }
}

TEST(MLP, RejectsBadConfigAndInput) {
  Generator gen(0);
  EXPECT_THROW(nn::MLP(4, {}, gen), ValueError);
  EXPECT_THROW(nn::MLP(4, {3}, gen, {static_cast<nn::Activation>(7), false}), ValueError);
  nn::MLP mlp(4, {3}, gen);
  EXPECT_THROW(mlp(Tensor::zeros({2, 5})), ShapeError);
}

TEST(BatchNormKernel, NullAffineAndRunningStatsMeanOneZeroAndUntracked) {
  // The backend contract (as the CUDA kernels and torch's affine / track_running_stats flags):
  // null gamma/beta act as 1/0, null running statistics are not updated.
  const int64_t rows = 5, cols = 3;
  std::vector<float> x(rows * cols);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(i * i % 7) - 2.5f;
  const std::vector<float> ones(cols, 1), zeros(cols, 0);
  std::vector<float> y_null(x.size()), y_full(x.size()), mean(cols), invstd(cols), rm(cols, 0),
      rv(cols, 1);
  auto& be = kernels::cpu_backend();
  be.batch_norm_train(DType::Float32, rows, cols, 1, x.data(), nullptr, nullptr, 1e-5, 0.1, nullptr,
                      nullptr, y_null.data(), mean.data(), invstd.data());
  be.batch_norm_train(DType::Float32, rows, cols, 1, x.data(), ones.data(), zeros.data(), 1e-5, 0.1,
                      rm.data(), rv.data(), y_full.data(), mean.data(), invstd.data());
  EXPECT_EQ(y_null, y_full);
  be.batch_norm_eval(DType::Float32, rows, cols, 1, x.data(), nullptr, nullptr, rm.data(),
                     rv.data(), 1e-5, y_null.data());
  be.batch_norm_eval(DType::Float32, rows, cols, 1, x.data(), ones.data(), zeros.data(), rm.data(),
                     rv.data(), 1e-5, y_full.data());
  EXPECT_EQ(y_null, y_full);
}
