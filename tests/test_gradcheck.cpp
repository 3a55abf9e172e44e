// Gradient checks in float64 for every differentiable op, over a grid of shapes that includes
// batch size 1 and odd widths; each op is also checked with only one input requiring grad.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include "clarena/clarena.h"
#include "gradcheck.h"

using namespace clarena;

namespace {

constexpr DType f64 = DType::Float64;

Tensor randn(const Shape& shape, Generator& gen, double std = 1.0) {
  return Tensor::normal(shape, 0.0, std, gen, f64);
}

/// Uniform values in ±[0.1, 1.1): no element near 0 (for the ReLU kink).
Tensor away_from_zero(const Shape& shape, Generator& gen) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (double& x : v)
    x = (gen.uniform() < 0.5 ? -1 : 1) * (0.1 + gen.uniform());
  return Tensor::from_vector(v, shape);
}

Tensor labels_for(int64_t rows, int64_t classes, Generator& gen) {
  std::vector<int64_t> v(static_cast<size_t>(rows));
  for (auto& l : v)
    l = static_cast<int64_t>(gen.below(static_cast<uint64_t>(classes)));
  return Tensor::from_vector(v, {rows});
}

struct Case {
  std::vector<Tensor> inputs;
  gradcheck::Fn fn;
};
using Maker = std::function<Case(int64_t rows, int64_t cols, Generator& gen)>;

/// Binary ops, with the broadcast layouts: same shape, [B,N]∘[N], [N]∘[B,N], [B,N]∘[1,N].
void add_binary(std::map<std::string, Maker>& ops, const std::string& name,
                Tensor (*op)(const Tensor&, const Tensor&)) {
  auto f = [op](const std::vector<Tensor>& in) { return op(in[0], in[1]); };
  ops[name + "_same"] = [=](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g), randn({b, n}, g)}, f};
  };
  ops[name + "_row_b"] = [=](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g), randn({n}, g)}, f};
  };
  ops[name + "_row_a"] = [=](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({n}, g), randn({b, n}, g)}, f};
  };
  ops[name + "_row_1n"] = [=](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g), randn({1, n}, g)}, f};
  };
}

std::map<std::string, Maker> all_ops() {
  std::map<std::string, Maker> ops;
  add_binary(ops, "add", &add);
  add_binary(ops, "sub", &sub);
  add_binary(ops, "mul", static_cast<Tensor (*)(const Tensor&, const Tensor&)>(&mul));
  ops["mul_scalar"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g)}, [](const std::vector<Tensor>& in) { return in[0] * -2.5; }};
  };
  // matmul: op(a) [b, n] · op(b) [n, 3], stored transposed when asked.
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const std::string name = std::string("matmul_") + (ta ? "t" : "n") + (tb ? "t" : "n");
      ops[name] = [=](int64_t b, int64_t n, Generator& g) {
        const int64_t m = 3;
        Tensor a = ta ? randn({n, b}, g) : randn({b, n}, g);
        Tensor c = tb ? randn({m, n}, g) : randn({n, m}, g);
        return Case{{a, c},
                    [=](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); }};
      };
    }
  ops["linear"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g), randn({5, n}, g), randn({5}, g)},
                [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }};
  };
  ops["linear_nobias"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g), randn({5, n}, g)},
                [](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }};
  };
  // Pre-activations stay away from the kink: |x·Wᵀ| <= 13 * 0.1 * 0.5 < 1 while the bias
  // columns alternate near +1.5 and -1.5, so both sides of the ReLU are exercised.
  ops["linear_relu"] = [](int64_t b, int64_t n, Generator& g) {
    Tensor x = Tensor::uniform({b, n}, -0.1, 0.1, g, f64);
    Tensor w = Tensor::uniform({5, n}, -0.5, 0.5, g, f64);
    std::vector<double> bias(5);
    for (size_t i = 0; i < bias.size(); ++i)
      bias[i] = (i % 2 ? -1.5 : 1.5) + 0.1 * g.uniform();
    return Case{{x, w, Tensor::from_vector(bias, {5})},
                [](const std::vector<Tensor>& in) { return linear_relu(in[0], in[1], in[2]); }};
  };
  ops["relu"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{away_from_zero({b, n}, g)},
                [](const std::vector<Tensor>& in) { return relu(in[0]); }};
  };
  ops["tanh"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g)}, [](const std::vector<Tensor>& in) { return tanh(in[0]); }};
  };
  ops["sigmoid"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g, 2.0)},
                [](const std::vector<Tensor>& in) { return sigmoid(in[0]); }};
  };
  ops["exp"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g)}, [](const std::vector<Tensor>& in) { return exp(in[0]); }};
  };
  ops["square"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g)}, [](const std::vector<Tensor>& in) { return square(in[0]); }};
  };
  // An EWC-shaped penalty: sum over "parameters" of F * (theta - theta*)^2, F and theta* fixed.
  ops["sum_list"] = [](int64_t b, int64_t n, Generator& g) {
    Tensor fisher = Tensor::uniform({b, n}, 0.1, 1.0, g, f64), anchor = randn({n}, g);
    return Case{{randn({b, n}, g), randn({n}, g), randn({}, g)},
                [fisher, anchor](const std::vector<Tensor>& in) {
                  return sum({sum(mul(fisher, square(in[0] - anchor))), sum(square(in[1] - anchor)),
                              in[2] * 3.0});
                }};
  };
  ops["narrow_dim0"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b + 2, n}, g)},
                [b](const std::vector<Tensor>& in) { return narrow(in[0], 0, 1, b) * 2.0; }};
  };
  ops["narrow_dim1"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n + 3}, g)},
                [n](const std::vector<Tensor>& in) { return narrow(in[0], -1, 2, n) * 2.0; }};
  };
  for (double temperature : {0.5, 2.0}) {
    const std::string suffix = temperature < 1 ? "_t05" : "_t2";
    ops["softmax" + suffix] = [temperature](int64_t b, int64_t n, Generator& g) {
      return Case{{randn({b, n}, g, 2.0)}, [temperature](const std::vector<Tensor>& in) {
                    return softmax(in[0], temperature) * in[0];  // weights differ per element
                  }};
    };
    ops["log_softmax" + suffix] = [temperature](int64_t b, int64_t n, Generator& g) {
      return Case{{randn({b, n}, g, 2.0)}, [temperature](const std::vector<Tensor>& in) {
                    return log_softmax(in[0], temperature);
                  }};
    };
  }
  // LwF's distillation term: soft cross-entropy between teacher and student at temperature 2.
  ops["distillation"] = [](int64_t b, int64_t n, Generator& g) {
    Tensor teacher = softmax(randn({b, n}, g, 2.0), 2.0);
    return Case{{randn({b, n}, g, 2.0)}, [teacher](const std::vector<Tensor>& in) {
                  return mean(sum(mul(teacher, log_softmax(in[0], 2.0)), 1)) * -1.0;
                }};
  };
  ops["sum"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g)}, [](const std::vector<Tensor>& in) { return sum(in[0]); }};
  };
  ops["mean"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g)}, [](const std::vector<Tensor>& in) { return mean(in[0]); }};
  };
  for (int64_t dim : {0, 1, -1}) {
    const std::string suffix = dim < 0 ? "_dim_minus1" : "_dim" + std::to_string(dim);
    ops["sum" + suffix] = [dim](int64_t b, int64_t n, Generator& g) {
      return Case{{randn({b, n}, g)},
                  [dim](const std::vector<Tensor>& in) { return sum(in[0], dim); }};
    };
    ops["mean" + suffix] = [dim](int64_t b, int64_t n, Generator& g) {
      return Case{{randn({b, n}, g)},
                  [dim](const std::vector<Tensor>& in) { return mean(in[0], dim); }};
    };
  }
  ops["log_softmax"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g, 2.0)},
                [](const std::vector<Tensor>& in) { return log_softmax(in[0]); }};
  };
  ops["cross_entropy"] = [](int64_t b, int64_t n, Generator& g) {
    Tensor labels = labels_for(b, n, g);
    return Case{{randn({b, n}, g, 2.0)},
                [labels](const std::vector<Tensor>& in) { return cross_entropy(in[0], labels); }};
  };
  // Training-mode batch norm needs two rows or more to estimate a variance.
  ops["batch_norm_train"] = [](int64_t b, int64_t n, Generator& g) {
    const int64_t rows = std::max<int64_t>(b, 2);
    Tensor rm = Tensor::zeros({n}, f64), rv = Tensor::ones({n}, f64);
    return Case{{randn({rows, n}, g), Tensor::uniform({n}, 0.5, 1.5, g, f64), randn({n}, g)},
                [rm, rv](const std::vector<Tensor>& in) {
                  return batch_norm(in[0], in[1], in[2], rm, rv, /*training=*/true);
                }};
  };
  ops["batch_norm_eval"] = [](int64_t b, int64_t n, Generator& g) {
    Tensor rm = randn({n}, g), rv = Tensor::uniform({n}, 0.5, 2.0, g, f64);
    return Case{{randn({b, n}, g), Tensor::uniform({n}, 0.5, 1.5, g, f64), randn({n}, g)},
                [rm, rv](const std::vector<Tensor>& in) {
                  return batch_norm(in[0], in[1], in[2], rm, rv, /*training=*/false);
                }};
  };
  ops["reshape"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g)}, [n](const std::vector<Tensor>& in) {
                  // Weights differ per element, so a wrong element order would show.
                  return in[0].reshape({n, -1});
                }};
  };
  ops["reshape_flat"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g)},
                [](const std::vector<Tensor>& in) { return in[0].reshape({-1}); }};
  };
  ops["clone"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g)},
                [](const std::vector<Tensor>& in) { return in[0].clone() * 3.0; }};
  };
  ops["concat_dim0"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g), randn({2, n}, g), randn({1, n}, g)},
                [](const std::vector<Tensor>& in) { return concat(in, 0); }};
  };
  ops["concat_dim1"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, 3}, g), randn({b, n}, g)},
                [](const std::vector<Tensor>& in) { return concat(in, 1); }};
  };
  ops["concat_dim_minus1"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g), randn({b, 1}, g), randn({b, 2}, g)},
                [](const std::vector<Tensor>& in) { return concat(in, -1); }};
  };
  // A small composite: a graph with a diamond and several op kinds.
  ops["composite"] = [](int64_t b, int64_t n, Generator& g) {
    return Case{{randn({b, n}, g), randn({n}, g)}, [](const std::vector<Tensor>& in) {
                  Tensor h = tanh(in[0] * in[1]);
                  return mean(log_softmax(h + sigmoid(h)) * h, 0);
                }};
  };
  return ops;
}

const std::map<std::string, Maker>& ops() {
  static const std::map<std::string, Maker> table = all_ops();
  return table;
}

struct Param {
  std::string op;
  int64_t rows, cols;
};

// Readable parameters in test listings instead of gtest's byte dump.
void PrintTo(const Param& p, std::ostream* out) {
  *out << p.op << " [" << p.rows << ", " << p.cols << "]";
}

std::vector<Param> grid() {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1}, {1, 7}, {3, 5}, {8, 13}};
  std::vector<Param> out;
  for (const auto& [name, maker] : ops())
    for (auto [r, c] : shapes)
      out.push_back({name, r, c});
  return out;
}

/// The grid restricted to ops of two inputs or more.
std::vector<Param> multi_input_grid() {
  std::vector<Param> out;
  for (const Param& p : grid()) {
    Generator gen(0);
    if (ops().at(p.op)(p.rows, p.cols, gen).inputs.size() >= 2) out.push_back(p);
  }
  return out;
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return info.param.op + "_" + std::to_string(info.param.rows) + "x" +
         std::to_string(info.param.cols);
}

class GradCheck : public ::testing::TestWithParam<Param> {};
class GradCheckPartial : public ::testing::TestWithParam<Param> {};

TEST_P(GradCheck, AllInputs) {
  const Param& p = GetParam();
  Generator gen(Generator::derive(7, static_cast<uint64_t>(p.rows), static_cast<uint64_t>(p.cols)));
  Case c = ops().at(p.op)(p.rows, p.cols, gen);
  EXPECT_TRUE(gradcheck::check(c.fn, c.inputs));
}

// Each input alone requires grad: it gets a correct gradient and the others stay undefined.
TEST_P(GradCheckPartial, OneInputAtATime) {
  const Param& p = GetParam();
  Generator gen(Generator::derive(8, static_cast<uint64_t>(p.rows), static_cast<uint64_t>(p.cols)));
  Case c = ops().at(p.op)(p.rows, p.cols, gen);
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    std::vector<bool> needs(c.inputs.size(), false);
    needs[i] = true;
    EXPECT_TRUE(gradcheck::check(c.fn, c.inputs, needs)) << "only input " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, GradCheck, ::testing::ValuesIn(grid()), param_name);
INSTANTIATE_TEST_SUITE_P(Ops, GradCheckPartial, ::testing::ValuesIn(multi_input_grid()),
                         param_name);

// --- the checker itself must be able to fail ------------------------------------------------

TEST(GradCheckSelf, DetectsAWrongGradient) {
  // f(x) = x * stop_gradient(x): the analytic gradient misses one of the two terms.
  Generator gen(3);
  gradcheck::Fn f = [](const std::vector<Tensor>& in) { return in[0] * in[0].detach(); };
  EXPECT_FALSE(gradcheck::check(f, {randn({2, 3}, gen)}));
}

// --- cross_entropy and log_softmax stay finite and exact for huge logits ----------------------

template <typename T>
void check_huge_logits() {
  const DType dt = dtype_of<T>();
  // float32 holds 1e4 + log 2 to about 1e-3 (its spacing there), which bounds the accuracy of
  // everything computed from the log-sum-exp.
  const double tol = std::is_same_v<T, float> ? 2e-3 : 1e-9;
  // Row 0: label 0 holds the max, loss 0. Row 1: two logits tie at 1e4, label 0 is at 0:
  // loss = 1e4 + log 2.
  std::vector<T> v = {T(1e4), T(0), T(-1e4), T(0), T(1e4), T(1e4)};
  Tensor logits = Tensor::from_data(v.data(), {2, 3}, dt).requires_grad_();
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{0, 0}, {2});
  Tensor loss = cross_entropy(logits, labels);
  const double expected = (0.0 + (1e4 + std::log(2.0))) / 2;
  EXPECT_TRUE(std::isfinite(loss.item()));
  EXPECT_NEAR(loss.item(), expected, expected * 1e-6);
  loss.backward();
  // d loss / d logits = (softmax - onehot) / batch.
  const std::vector<double> want = {0, 0, 0, -0.5, 0.25, 0.25};
  const std::vector<T> got = logits.grad().template to_vector<T>();
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol) << i;

  Tensor ls = log_softmax(logits.detach());
  const std::vector<T> lv = ls.template to_vector<T>();
  EXPECT_NEAR(lv[0], 0.0, tol);
  EXPECT_NEAR(lv[1], -1e4, 1e4 * 1e-6);
  EXPECT_NEAR(lv[4], -std::log(2.0), tol);
  for (T x : lv)
    EXPECT_TRUE(std::isfinite(static_cast<double>(x)));
}

TEST(CrossEntropy, HugeLogitsFloat32) {
  check_huge_logits<float>();
}
TEST(CrossEntropy, HugeLogitsFloat64) {
  check_huge_logits<double>();
}

TEST(CrossEntropy, HandComputedSmall) {
  Tensor logits = Tensor::from_vector(std::vector<double>{1, 2, 3, 0.5, -1, 0}, {2, 3});
  Tensor labels = Tensor::from_vector(std::vector<int64_t>{2, 1}, {2});
  const double r0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3;
  const double r1 = std::log(std::exp(0.5) + std::exp(-1.0) + std::exp(0.0)) + 1;
  EXPECT_NEAR(cross_entropy(logits, labels).item(), (r0 + r1) / 2, 1e-12);
}

// --- float32 cross-entropy near a zero loss: as close to float64 as the inputs allow ------------

/// Logits near 10 whose label logit is 12 above the rest: loss ~ 9 e^-12 ~ 5e-5, where rounding
/// logsumexp (~10) to float32 first would cost ~5e-7, i.e. 1% of the loss.
struct NearZeroLoss {
  std::vector<float> logits;
  std::vector<int64_t> labels;
  int64_t rows = 4, cols = 10;
  NearZeroLoss() {
    Generator gen(11);
    for (int64_t r = 0; r < rows; ++r) {
      labels.push_back(static_cast<int64_t>(gen.below(static_cast<uint64_t>(cols))));
      for (int64_t c = 0; c < cols; ++c)
        logits.push_back(
            static_cast<float>(10.0 + 0.5 * gen.uniform() + (c == labels.back() ? 12.0 : 0.0)));
    }
  }
  /// Row r's log-softmax in double from the float inputs.
  std::vector<double> log_softmax_row(int64_t r) const {
    const float* x = logits.data() + r * cols;
    const double mx = *std::max_element(x, x + cols);
    double s = 0;
    for (int64_t c = 0; c < cols; ++c)
      s += std::exp(double(x[c]) - mx);
    std::vector<double> out;
    for (int64_t c = 0; c < cols; ++c)
      out.push_back((double(x[c]) - mx) - std::log(s));
    return out;
  }
};

TEST(CrossEntropy, Float32NearZeroLossMatchesFloat64) {
  const NearZeroLoss d;
  Tensor logits = Tensor::from_vector(d.logits, {d.rows, d.cols}).requires_grad_();
  Tensor labels = Tensor::from_vector(d.labels, {d.rows});
  Tensor loss = cross_entropy(logits, labels);
  loss.backward();
  double want = 0;
  std::vector<double> want_grad;
  for (int64_t r = 0; r < d.rows; ++r) {
    const std::vector<double> ls = d.log_softmax_row(r);
    want -= ls[static_cast<size_t>(d.labels[static_cast<size_t>(r)])] / double(d.rows);
    for (int64_t c = 0; c < d.cols; ++c)
      want_grad.push_back(
          (std::exp(ls[static_cast<size_t>(c)]) - (c == d.labels[static_cast<size_t>(r)])) /
          double(d.rows));
  }
  ASSERT_GT(want, 1e-5);
  ASSERT_LT(want, 1e-4);
  // Within a few float32 ulps of the loss itself (rounding logsumexp first misses by ~1%).
  EXPECT_NEAR(loss.item(), want, 4e-7 * want);
  const std::vector<float> grad = logits.grad().to_vector<float>();
  for (size_t i = 0; i < grad.size(); ++i)
    EXPECT_NEAR(grad[i], want_grad[i], 2e-6 * std::abs(want_grad[i])) << "element " << i;
}

TEST(LogSoftmax, Float32NearZeroMatchesFloat64) {
  const NearZeroLoss d;
  const std::vector<float> got =
      log_softmax(Tensor::from_vector(d.logits, {d.rows, d.cols})).to_vector<float>();
  for (int64_t r = 0; r < d.rows; ++r) {
    const std::vector<double> want = d.log_softmax_row(r);
    for (int64_t c = 0; c < d.cols; ++c) {
      const double w = want[static_cast<size_t>(c)];
      // The label's entry is ~-5e-6: a relative bound there fails if (x - lse) loses digits.
      EXPECT_NEAR(got[static_cast<size_t>(r * d.cols + c)], w, 2e-7 * std::abs(w) + 1e-12)
          << "row " << r << " col " << c;
    }
  }
}

/// PyTorch: a row whose max is +inf, NaN, or -inf everywhere is all NaN in log_softmax, its
/// loss and its gradient; a -inf entry beside finite ones is simply -inf (probability 0).
TEST(CrossEntropy, NonFiniteRowsAsTorch) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
  Tensor logits =
      Tensor::from_vector(std::vector<double>{inf, 1, -inf, -inf, nan, 1, -inf, 1}, {4, 2})
          .requires_grad_();
  const std::vector<double> ls = log_softmax(logits.detach()).to_vector<double>();
  for (size_t i = 0; i < 6; ++i)
    EXPECT_TRUE(std::isnan(ls[i])) << i;
  EXPECT_EQ(ls[6], -inf);
  EXPECT_EQ(ls[7], 0.0);
  // Row 3 alone: label 0 (the -inf) gives an infinite loss and a finite gradient (-1, 1).
  Tensor last = Tensor::from_vector(std::vector<double>{-inf, 1}, {1, 2}).requires_grad_();
  Tensor l3 = cross_entropy(last, Tensor::from_vector(std::vector<int64_t>{0}, {1}));
  EXPECT_EQ(l3.item(), inf);
  l3.backward();
  EXPECT_EQ(last.grad().to_vector<double>(), (std::vector<double>{-1, 1}));
  Tensor loss = cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{1, 0, 1, 0}, {4}));
  EXPECT_TRUE(std::isnan(loss.item()));
  loss.backward();
  const std::vector<double> g = logits.grad().to_vector<double>();
  for (size_t i = 0; i < 6; ++i)
    EXPECT_TRUE(std::isnan(g[i])) << i;
}

// --- ReLU of NaN: NaN forward, gradient passed through (torch's threshold_backward) -----------

/// torch.relu is clamp_min(x, 0): relu(NaN) = NaN, relu(-0) = -0; its backward is
/// threshold_backward(grad, result, 0) = (result <= 0 ? 0 : grad), so NaN passes the gradient.
template <typename T>
void check_relu_nan() {
  const DType dt = dtype_of<T>();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  std::vector<T> v = {nan, T(-1), T(2), T(-0.0), T(0)};
  Tensor x = Tensor::from_data(v.data(), {5}, dt).requires_grad_();
  Tensor y = relu(x);
  const std::vector<T> yv = y.template to_vector<T>();
  EXPECT_TRUE(std::isnan(yv[0]));
  EXPECT_EQ(yv[1], T(0));
  EXPECT_EQ(yv[2], T(2));
  EXPECT_EQ(yv[3], T(0));
  EXPECT_TRUE(std::signbit(yv[3]));  // -0 stays -0, as in torch
  y.backward(Tensor::full({5}, 3.0, dt));
  EXPECT_EQ(x.grad().template to_vector<T>(), (std::vector<T>{3, 0, 3, 0, 0}));
}

TEST(Relu, NaNAsTorchFloat32) {
  check_relu_nan<float>();
}
TEST(Relu, NaNAsTorchFloat64) {
  check_relu_nan<double>();
}

/// The fused linear + bias + ReLU and the unfused relu(linear) agree bit for bit, NaN included:
/// a NaN bias makes its column NaN and passes that column's gradient to the bias and weight.
template <typename T>
void check_linear_relu_nan() {
  const DType dt = dtype_of<T>();
  const T nan = std::numeric_limits<T>::quiet_NaN();
  Generator gen(5);
  Tensor x = Tensor::normal({3, 4}, 0, 1, gen, dt);
  Tensor w = Tensor::normal({2, 4}, 0, 1, gen, dt);
  std::vector<T> bv = {nan, T(0.1)};
  Tensor b = Tensor::from_data(bv.data(), {2}, dt);
  Tensor dy = Tensor::normal({3, 2}, 0, 1, gen, dt);
  std::vector<std::vector<T>> outs[2];
  for (int fused = 0; fused < 2; ++fused) {
    Tensor xi = x.clone().requires_grad_(), wi = w.clone().requires_grad_(),
           bi = b.clone().requires_grad_();
    Tensor y = fused ? linear_relu(xi, wi, bi) : relu(linear(xi, wi, bi));
    y.backward(dy);
    for (const Tensor& t : {y, xi.grad(), wi.grad(), bi.grad()})
      outs[fused].push_back(t.template to_vector<T>());
  }
  const char* names[] = {"y", "dx", "dw", "db"};
  for (size_t k = 0; k < 4; ++k) {
    ASSERT_EQ(outs[0][k].size(), outs[1][k].size());
    for (size_t i = 0; i < outs[0][k].size(); ++i) {
      const T u = outs[0][k][i], f = outs[1][k][i];
      EXPECT_TRUE((std::isnan(u) && std::isnan(f)) || u == f)
          << names[k] << "[" << i << "]: unfused " << u << ", fused " << f;
    }
  }
  // Column 0 is NaN in every row; db[0] = sum of dy's column 0 (NaN passes the gradient).
  for (int64_t r = 0; r < 3; ++r)
    EXPECT_TRUE(std::isnan(outs[1][0][static_cast<size_t>(r * 2)]));
  const std::vector<T> dyv = dy.template to_vector<T>();
  EXPECT_NEAR(outs[1][3][0], dyv[0] + dyv[2] + dyv[4], 1e-5);
}

TEST(LinearRelu, NaNFusedMatchesUnfusedFloat32) {
  check_linear_relu_nan<float>();
}
TEST(LinearRelu, NaNFusedMatchesUnfusedFloat64) {
  check_linear_relu_nan<double>();
}

TEST(BatchNorm, TrainingNeedsTwoRows) {
  Tensor x = Tensor::ones({1, 4}, f64);
  Tensor g = Tensor::ones({4}, f64), b = Tensor::zeros({4}, f64);
  EXPECT_THROW(batch_norm(x, g, b, Tensor::zeros({4}, f64), Tensor::ones({4}, f64), true),
               ValueError);
}

}  // namespace

TEST(NewOps, ValuesAndRefusals) {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(narrow(x, 1, 1, 2).to_vector<double>(), (std::vector<double>{2, 3, 5, 6}));
  EXPECT_EQ(narrow(x, 0, 1, 1).to_vector<double>(), (std::vector<double>{4, 5, 6}));
  EXPECT_EQ(narrow(x, 1, 3, 0).numel(), 0);
  EXPECT_THROW(narrow(x, 1, 2, 2), ValueError);
  EXPECT_THROW(narrow(x, 1, -1, 1), ValueError);
  EXPECT_EQ(square(x).to_vector<double>(), (std::vector<double>{1, 4, 9, 16, 25, 36}));
  EXPECT_NEAR(exp(x).to_vector<double>()[1], std::exp(2.0), 1e-12);
  // softmax(x, T) = softmax(x / T): rows sum to 1 and match the closed form.
  std::vector<double> p = softmax(x, 2.0).to_vector<double>();
  const double z = std::exp(0.5) + std::exp(1.0) + std::exp(1.5);
  EXPECT_NEAR(p[0], std::exp(0.5) / z, 1e-12);
  EXPECT_NEAR(p[3] + p[4] + p[5], 1.0, 1e-12);
  EXPECT_THROW(softmax(x, 0.0), ValueError);
  EXPECT_THROW(log_softmax(x, -1.0), ValueError);
  EXPECT_THROW(log_softmax(x, std::numeric_limits<double>::infinity()), ValueError);
  EXPECT_THROW(sum(std::vector<Tensor>{}), ValueError);
  EXPECT_EQ(sum({x, x, x}).to_vector<double>(), (std::vector<double>{3, 6, 9, 12, 15, 18}));
}
