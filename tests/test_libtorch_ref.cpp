// clarena against LibTorch on the same inputs: every op forward and backward, the modules with
// the same weights, the loss, and optimizer steps, in float64 (to 1e-10) and float32 (to 1e-5),
// at 1 and 7 threads on both sides. Built only when CMake finds LibTorch (Debian's
// libtorch-dev); the op-level behaviour it pins (ReLU of NaN, float32 cross-entropy near a
// zero loss, 1 - beta in double) is also covered by test_gradcheck and test_optim.
//
// Tolerances: an element passes when |got - want| <= rtol * max(|want|, scale), where scale is
// 0 for element-wise results (each element on its own) and the largest |want| of the tensor
// for results of sums (products, reductions, gradients, normalisation), whose rounding both
// libraries bound by the magnitude of the terms rather than of the result. NaN must meet NaN,
// infinities must be equal.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "clarena/clarena.h"

namespace {

using CT = clarena::Tensor;
using clarena::DType;
using clarena::Shape;
namespace F = torch::nn::functional;

struct Pair {
  CT c;
  torch::Tensor t;
};

/// The data type under test, its tolerance and the deterministic input stream of one case.
struct Env {
  DType dt;
  double rtol;
  clarena::Generator gen;
  torch::ScalarType st() const { return dt == DType::Float64 ? torch::kFloat64 : torch::kFloat32; }
};

std::vector<int64_t> sizes(const torch::Tensor& t) {
  return std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
}

std::vector<double> host(const CT& c) {
  if (c.dtype() == DType::Float32) {
    const std::vector<float> v = c.to_vector<float>();
    return {v.begin(), v.end()};
  }
  if (c.dtype() == DType::Int64) {
    const std::vector<int64_t> v = c.to_vector<int64_t>();
    return {v.begin(), v.end()};
  }
  return c.to_vector<double>();
}

std::vector<double> host(const torch::Tensor& t) {
  torch::Tensor d = t.detach().to(torch::kFloat64).contiguous();
  return {d.data_ptr<double>(), d.data_ptr<double>() + d.numel()};
}

/// A clarena tensor of dtype dt holding `values` (rounded once, as torch's .to(dtype) does).
CT make_c(const std::vector<double>& values, const Shape& shape, DType dt) {
  if (dt == DType::Float64) return CT::from_vector(values, shape);
  return CT::from_vector(std::vector<float>(values.begin(), values.end()), shape);
}

torch::Tensor make_t(const std::vector<double>& values, const Shape& shape, torch::ScalarType st) {
  return torch::tensor(values, torch::kFloat64).reshape(shape).to(st);
}

Pair make(Env& e, const std::vector<double>& values, const Shape& shape) {
  return {make_c(values, shape, e.dt), make_t(values, shape, e.st())};
}

Pair uniform(Env& e, const Shape& shape, double lo = -1, double hi = 1) {
  std::vector<double> v(static_cast<size_t>(clarena::shape_numel(shape)));
  for (double& x : v)
    x = lo + (hi - lo) * e.gen.uniform();
  return make(e, v, shape);
}

Pair normal(Env& e, const Shape& shape, double std = 1) {
  std::vector<double> v(static_cast<size_t>(clarena::shape_numel(shape)));
  for (double& x : v)
    x = std * e.gen.normal();
  return make(e, v, shape);
}

Pair leaf(Pair p) {
  p.c.requires_grad_();
  p.t.requires_grad_(true);
  return p;
}

Pair labels(Env& e, int64_t rows, int64_t classes) {
  std::vector<int64_t> v(static_cast<size_t>(rows));
  for (auto& l : v)
    l = static_cast<int64_t>(e.gen.below(static_cast<uint64_t>(classes)));
  return {CT::from_vector(v, {rows}), torch::tensor(v, torch::kLong)};
}

/// A clarena tensor converted to torch (the same values, the same dtype).
torch::Tensor to_torch(const CT& c, torch::ScalarType st) {
  return make_t(host(c), c.shape(), st);
}

/// `floor`: a scale below which differences count as rounding (for results that are zero in
/// exact arithmetic and noise in both libraries).
void expect_close(const CT& got, const torch::Tensor& want, double rtol, bool elementwise,
                  const std::string& what, double floor = 0) {
  ASSERT_TRUE(got.defined()) << what << ": clarena result undefined";
  ASSERT_TRUE(want.defined()) << what << ": torch result undefined";
  ASSERT_EQ(got.shape(), sizes(want)) << what;
  const std::vector<double> g = host(got), w = host(want);
  double scale = floor;
  if (!elementwise)
    for (double x : w)
      if (std::isfinite(x)) scale = std::max(scale, std::abs(x));
  int reported = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    bool ok;
    if (std::isnan(w[i]))
      ok = std::isnan(g[i]);
    else if (std::isinf(w[i]))
      ok = g[i] == w[i];
    else
      ok = std::abs(g[i] - w[i]) <= rtol * std::max(std::abs(w[i]), scale);
    if (!ok && reported++ < 5)
      ADD_FAILURE() << what << "[" << i << "]: clarena " << g[i] << ", torch " << w[i] << " (rtol "
                    << rtol << (elementwise ? ", element-wise" : ", of max |want|") << ")";
  }
}

/// Forward through both, backward with the same random output gradient, then the output and
/// the gradient of every leaf compared.
void check_op(Env& e, const std::string& name, const std::vector<Pair>& leaves,
              const std::function<CT(const std::vector<CT>&)>& fc,
              const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& ft,
              bool elementwise) {
  // Gradients are compared against the tensor's scale: even an element-wise op's backward
  // (tanh's 1 - y^2 near |y| = 1) amplifies an ulp of its saved output.
  std::vector<CT> cin;
  std::vector<torch::Tensor> tin;
  for (const Pair& p : leaves) {
    cin.push_back(p.c);
    tin.push_back(p.t);
  }
  CT yc = fc(cin);
  torch::Tensor yt = ft(tin);
  expect_close(yc, yt, e.rtol, elementwise, name + " forward");
  Pair dy = uniform(e, yc.shape(), -1, 1);
  yc.backward(dy.c);
  yt.backward(dy.t);
  for (size_t i = 0; i < leaves.size(); ++i)
    if (leaves[i].t.requires_grad())
      expect_close(leaves[i].c.grad(), leaves[i].t.grad(), e.rtol, false,
                   name + " grad of input " + std::to_string(i));
}

// --- the cases -------------------------------------------------------------------------------

using Case = std::function<void(Env&)>;

/// Shapes: tiny, odd, and one large enough that the CPU backend splits the work into tiles.
const std::vector<std::pair<int64_t, int64_t>> kShapes = {{1, 1}, {3, 5}, {7, 13}, {96, 160}};

void binary_case(Env& e, const char* op, int kind) {
  using TF = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>;
  using CF = std::function<CT(const CT&, const CT&)>;
  CF fc = kind == 0   ? CF([](const CT& a, const CT& b) { return clarena::add(a, b); })
          : kind == 1 ? CF([](const CT& a, const CT& b) { return clarena::sub(a, b); })
                      : CF([](const CT& a, const CT& b) { return clarena::mul(a, b); });
  TF ft = kind == 0   ? TF([](const torch::Tensor& a, const torch::Tensor& b) { return a + b; })
          : kind == 1 ? TF([](const torch::Tensor& a, const torch::Tensor& b) { return a - b; })
                      : TF([](const torch::Tensor& a, const torch::Tensor& b) { return a * b; });
  for (auto [rows, cols] : kShapes) {
    const std::string at =
        std::string(op) + " " + std::to_string(rows) + "x" + std::to_string(cols);
    // same shape, [N] row broadcast on either side, and a [1, N] row
    const std::vector<std::pair<Shape, Shape>> layouts = {{{rows, cols}, {rows, cols}},
                                                          {{rows, cols}, {cols}},
                                                          {{cols}, {rows, cols}},
                                                          {{rows, cols}, {1, cols}}};
    for (const auto& [sa, sb] : layouts) {
      std::vector<Pair> in = {leaf(normal(e, sa)), leaf(normal(e, sb))};
      check_op(
          e, at, in, [&](const std::vector<CT>& x) { return fc(x[0], x[1]); },
          [&](const std::vector<torch::Tensor>& x) { return ft(x[0], x[1]); }, true);
    }
  }
}

void unary_case(Env& e, const char* op, const std::function<CT(const CT&)>& fc,
                const std::function<torch::Tensor(const torch::Tensor&)>& ft) {
  for (auto [rows, cols] : kShapes) {
    std::vector<Pair> in = {leaf(normal(e, {rows, cols}, 2))};
    check_op(
        e, op, in, [&](const std::vector<CT>& x) { return fc(x[0]); },
        [&](const std::vector<torch::Tensor>& x) { return ft(x[0]); }, true);
  }
}

torch::Tensor t_linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  return F::linear(x, w, b);
}

/// The same weights as torch::nn modules hold them: clarena's parameter set to dtype dt and
/// copied into the torch parameter.
void copy_to_torch(const CT& c, torch::Tensor& t) {
  torch::NoGradGuard no_grad;
  t.copy_(to_torch(c, t.scalar_type()));
}

void set_dtype(clarena::nn::Module& m, DType dt) {
  for (auto& [name, p] : m.named_parameters())
    p.set_data(make_c(host(p), p.shape(), dt));
  for (auto& [name, b] : m.named_buffers())
    b.set_data(make_c(host(b), b.shape(), dt));
}

CT named(const clarena::nn::NamedTensors& all, const std::string& name) {
  for (const auto& [n, t] : all)
    if (n == name) return t;
  ADD_FAILURE() << "no tensor " << name;
  return CT();
}

/// Copies random values into the clarena parameter and the torch one (BatchNorm's affine
/// parameters start at 1 and 0, where a wrong gradient could hide).
void randomize(Env& e, CT& c, torch::Tensor& t, double lo, double hi) {
  Pair p = uniform(e, c.shape(), lo, hi);
  c.set_data(p.c);
  copy_to_torch(c, t);
}

std::map<std::string, Case> cases() {
  std::map<std::string, Case> m;
  m["add"] = [](Env& e) { binary_case(e, "add", 0); };
  m["sub"] = [](Env& e) { binary_case(e, "sub", 1); };
  m["mul"] = [](Env& e) { binary_case(e, "mul", 2); };
  m["mul_scalar"] = [](Env& e) {
    unary_case(
        e, "mul_scalar", [](const CT& x) { return x * -0.37; },
        [](const torch::Tensor& x) { return x * -0.37; });
  };
  m["relu"] = [](Env& e) {
    unary_case(e, "relu", clarena::relu, [](const torch::Tensor& x) { return torch::relu(x); });
  };
  m["tanh"] = [](Env& e) {
    unary_case(e, "tanh", clarena::tanh, [](const torch::Tensor& x) { return torch::tanh(x); });
  };
  m["sigmoid"] = [](Env& e) {
    unary_case(e, "sigmoid", clarena::sigmoid,
               [](const torch::Tensor& x) { return torch::sigmoid(x); });
  };
  m["relu_nan"] = [](Env& e) {
    const double nan = std::nan("");
    const double inf = std::numeric_limits<double>::infinity();
    std::vector<Pair> in = {
        leaf(make(e, {nan, -1, 2, -0.0, 0, inf, -inf, 1e-30, -1e-30, nan}, {2, 5}))};
    check_op(
        e, "relu NaN", in, [](const std::vector<CT>& x) { return clarena::relu(x[0]); },
        [](const std::vector<torch::Tensor>& x) { return torch::relu(x[0]); }, true);
  };
  m["linear_relu_nan"] = [](Env& e) {
    // A NaN input row, a NaN bias column: fused linear + ReLU against relu(linear).
    const double nan = std::nan("");
    Pair x = normal(e, {4, 3});
    Pair w = normal(e, {5, 3});
    Pair b = make(e, {0.1, nan, -0.2, 0.3, 0}, {5});
    std::vector<double> xv = host(x.c);
    xv[3] = nan;  // row 1
    x = make(e, xv, {4, 3});
    std::vector<Pair> in = {leaf(x), leaf(w), leaf(b)};
    check_op(
        e, "linear_relu NaN", in,
        [](const std::vector<CT>& v) { return clarena::linear_relu(v[0], v[1], v[2]); },
        [](const std::vector<torch::Tensor>& v) { return torch::relu(t_linear(v[0], v[1], v[2])); },
        false);
  };
  m["matmul"] = [](Env& e) {
    for (auto [mm, nn] : kShapes)
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb) {
          const int64_t k = mm == 96 ? 130 : mm + 2;
          std::vector<Pair> in = {leaf(normal(e, ta ? Shape{k, mm} : Shape{mm, k})),
                                  leaf(normal(e, tb ? Shape{nn, k} : Shape{k, nn}))};
          check_op(
              e, "matmul ta=" + std::to_string(ta) + " tb=" + std::to_string(tb), in,
              [ta, tb](const std::vector<CT>& v) {
                return clarena::matmul(v[0], v[1], ta != 0, tb != 0);
              },
              [ta, tb](const std::vector<torch::Tensor>& v) {
                return (ta ? v[0].t() : v[0]).mm(tb ? v[1].t() : v[1]);
              },
              false);
        }
  };
  auto linear_like = [](bool relu) {
    return [relu](Env& e) {
      for (auto [batch, in_f] : kShapes)
        for (bool bias : {true, false}) {
          const int64_t out_f = batch == 96 ? 130 : in_f + 3;
          std::vector<Pair> in = {leaf(normal(e, {batch, in_f})), leaf(normal(e, {out_f, in_f})),
                                  bias ? leaf(normal(e, {out_f})) : Pair{}};
          if (!bias) in.pop_back();
          check_op(
              e, std::string(relu ? "linear_relu" : "linear") + (bias ? "" : " no bias"), in,
              [relu, bias](const std::vector<CT>& v) {
                CT b = bias ? v[2] : CT();
                return relu ? clarena::linear_relu(v[0], v[1], b) : clarena::linear(v[0], v[1], b);
              },
              [relu, bias](const std::vector<torch::Tensor>& v) {
                torch::Tensor y = t_linear(v[0], v[1], bias ? v[2] : torch::Tensor());
                return relu ? torch::relu(y) : y;
              },
              false);
        }
    };
  };
  m["linear"] = linear_like(false);
  m["linear_relu"] = linear_like(true);
  m["sum_mean"] = [](Env& e) {
    for (auto [rows, cols] : kShapes) {
      for (int mean = 0; mean < 2; ++mean) {
        const char* op = mean ? "mean" : "sum";
        std::vector<Pair> in = {leaf(normal(e, {rows, cols}))};
        check_op(
            e, std::string(op) + " all", in,
            [mean](const std::vector<CT>& v) {
              return mean ? clarena::mean(v[0]) : clarena::sum(v[0]);
            },
            [mean](const std::vector<torch::Tensor>& v) { return mean ? v[0].mean() : v[0].sum(); },
            false);
        for (int64_t dim : {0, 1, -1}) {
          std::vector<Pair> in2 = {leaf(normal(e, {rows, cols}))};
          check_op(
              e, std::string(op) + " dim " + std::to_string(dim), in2,
              [mean, dim](const std::vector<CT>& v) {
                return mean ? clarena::mean(v[0], dim) : clarena::sum(v[0], dim);
              },
              [mean, dim](const std::vector<torch::Tensor>& v) {
                return mean ? v[0].mean(dim) : v[0].sum(dim);
              },
              false);
        }
      }
      // A reduction along the middle of a 3-D tensor.
      std::vector<Pair> in3 = {leaf(normal(e, {2, rows, cols}))};
      check_op(
          e, "sum dim 1 of 3-D", in3,
          [](const std::vector<CT>& v) { return clarena::sum(v[0], 1); },
          [](const std::vector<torch::Tensor>& v) { return v[0].sum(1); }, false);
    }
  };
  m["log_softmax"] = [](Env& e) {
    for (auto [rows, cols] : kShapes) {
      std::vector<Pair> in = {leaf(normal(e, {rows, cols}, 3))};
      check_op(
          e, "log_softmax", in, [](const std::vector<CT>& v) { return clarena::log_softmax(v[0]); },
          [](const std::vector<torch::Tensor>& v) { return torch::log_softmax(v[0], -1); }, false);
    }
  };
  m["cross_entropy"] = [](Env& e) {
    for (auto [rows, cols] : kShapes) {
      Pair y = labels(e, rows, cols);
      std::vector<Pair> in = {leaf(normal(e, {rows, cols}, 3))};
      check_op(
          e, "cross_entropy", in,
          [&](const std::vector<CT>& v) { return clarena::cross_entropy(v[0], y.c); },
          [&](const std::vector<torch::Tensor>& v) { return F::cross_entropy(v[0], y.t); }, false);
    }
  };
  m["cross_entropy_near_zero"] = [](Env& e) {
    // Logits near 10, the label's 12 above: loss ~5e-5. torch's own float32 result is ~5e-4
    // off here (it rounds the log-sum before subtracting); clarena is compared against torch
    // in float64 on the same (rounded) inputs.
    const int64_t rows = 6, cols = 10;
    Pair y = labels(e, rows, cols);
    const std::vector<int64_t> lv = y.c.to_vector<int64_t>();
    std::vector<double> v;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        v.push_back(10 + 0.5 * e.gen.uniform() + (c == lv[static_cast<size_t>(r)] ? 12 : 0));
    CT xc = make_c(v, {rows, cols}, e.dt).requires_grad_();
    torch::Tensor xt = to_torch(xc, torch::kFloat64).requires_grad_(true);
    CT lc = clarena::cross_entropy(xc, y.c);
    torch::Tensor lt = F::cross_entropy(xt, y.t);
    expect_close(lc, lt, e.rtol, true, "cross_entropy near 0");
    lc.backward();
    lt.backward();
    expect_close(xc.grad(), xt.grad(), e.rtol, true, "cross_entropy near 0, grad");
    expect_close(clarena::log_softmax(xc.detach()), torch::log_softmax(xt.detach(), -1), e.rtol,
                 true, "log_softmax near 0");
  };
  auto batch_norm_case = [](bool training) {
    return [training](Env& e) {
      for (auto [rows, cols] : kShapes) {
        if (rows == 1) continue;  // training needs two rows (torch raises too)
        Pair rm = uniform(e, {cols}, -0.5, 0.5), rv = uniform(e, {cols}, 0.5, 2);
        std::vector<Pair> in = {leaf(normal(e, {rows, cols}, 2)), leaf(uniform(e, {cols}, 0.5, 2)),
                                leaf(uniform(e, {cols}, -1, 1))};
        const double momentum = 0.3, eps = 1e-4;
        check_op(
            e, training ? "batch_norm train" : "batch_norm eval", in,
            [&](const std::vector<CT>& v) {
              return clarena::batch_norm(v[0], v[1], v[2], rm.c, rv.c, training, momentum, eps);
            },
            [&](const std::vector<torch::Tensor>& v) {
              return torch::batch_norm(v[0], v[1], v[2], rm.t, rv.t, training, momentum, eps,
                                       false);
            },
            false);
        expect_close(rm.c, rm.t, e.rtol, false, "running_mean");
        expect_close(rv.c, rv.t, e.rtol, false, "running_var");
      }
    };
  };
  m["batch_norm_train"] = batch_norm_case(true);
  m["batch_norm_eval"] = batch_norm_case(false);
  // [N, C, H, W]: statistics per channel over N·H·W (torch's BatchNorm2d).
  m["batch_norm_4d"] = [](Env& e) {
    for (const Shape& s : {Shape{2, 3, 5, 7}, Shape{1, 4, 3, 3}, Shape{16, 8, 6, 6}})
      for (bool training : {true, false}) {
        Pair rm = uniform(e, {s[1]}, -0.5, 0.5), rv = uniform(e, {s[1]}, 0.5, 2);
        std::vector<Pair> in = {leaf(normal(e, s, 2)), leaf(uniform(e, {s[1]}, 0.5, 2)),
                                leaf(uniform(e, {s[1]}, -1, 1))};
        const double momentum = 0.3, eps = 1e-4;
        check_op(
            e, training ? "batch_norm 4d train" : "batch_norm 4d eval", in,
            [&](const std::vector<CT>& v) {
              return clarena::batch_norm(v[0], v[1], v[2], rm.c, rv.c, training, momentum, eps);
            },
            [&](const std::vector<torch::Tensor>& v) {
              return torch::batch_norm(v[0], v[1], v[2], rm.t, rv.t, training, momentum, eps,
                                       false);
            },
            false);
        expect_close(rm.c, rm.t, e.rtol, false, "4d running_mean");
        expect_close(rv.c, rv.t, e.rtol, false, "4d running_var");
      }
  };
  // Pooling: batch 1, odd sizes, stride != kernel, padding, overlapping windows.
  m["pool2d"] = [](Env& e) {
    struct G {
      Shape shape;
      int64_t kh, kw, sh, sw, ph, pw;
    };
    for (const G& g : {G{{1, 1, 4, 4}, 2, 2, 2, 2, 0, 0}, G{{2, 3, 9, 7}, 3, 3, 2, 2, 1, 1},
                       G{{2, 2, 7, 5}, 3, 2, 1, 2, 1, 0}, G{{4, 8, 16, 16}, 2, 2, 2, 2, 1, 1}}) {
      const clarena::Pair k{g.kh, g.kw}, s{g.sh, g.sw}, p{g.ph, g.pw};
      std::vector<Pair> in = {leaf(normal(e, g.shape))};
      check_op(
          e, "max_pool2d", in,
          [&](const std::vector<CT>& v) { return clarena::max_pool2d(v[0], k, s, p); },
          [&](const std::vector<torch::Tensor>& v) {
            return torch::max_pool2d(v[0], {g.kh, g.kw}, {g.sh, g.sw}, {g.ph, g.pw});
          },
          false);
      in = {leaf(normal(e, g.shape))};
      check_op(
          e, "avg_pool2d", in,
          [&](const std::vector<CT>& v) { return clarena::avg_pool2d(v[0], k, s, p); },
          [&](const std::vector<torch::Tensor>& v) {
            return torch::avg_pool2d(v[0], {g.kh, g.kw}, {g.sh, g.sw}, {g.ph, g.pw});
          },
          false);
      in = {leaf(normal(e, g.shape))};
      check_op(
          e, "adaptive_avg_pool2d", in,
          [&](const std::vector<CT>& v) {
            return clarena::adaptive_avg_pool2d(v[0], {1, 1});
          },
          [&](const std::vector<torch::Tensor>& v) {
            return torch::adaptive_avg_pool2d(v[0], {1, 1});
          },
          false);
    }
  };
  m["concat"] = [](Env& e) {
    for (auto [rows, cols] : kShapes)
      for (int64_t dim : {0, 1}) {
        std::vector<Pair> in = {leaf(normal(e, {rows, cols})),
                                leaf(normal(e, dim ? Shape{rows, 2} : Shape{2, cols})),
                                leaf(normal(e, {rows, cols}))};
        check_op(
            e, "concat dim " + std::to_string(dim), in,
            [dim](const std::vector<CT>& v) { return clarena::concat(v, dim); },
            [dim](const std::vector<torch::Tensor>& v) { return torch::cat(v, dim); }, true);
      }
  };
  m["reshape"] = [](Env& e) {
    for (auto [rows, cols] : kShapes) {
      std::vector<Pair> in = {leaf(normal(e, {rows, cols}))};
      check_op(
          e, "reshape", in,
          [cols](const std::vector<CT>& v) {
            return clarena::mul(v[0].reshape({cols, -1}), 2.0).reshape({-1});
          },
          [cols](const std::vector<torch::Tensor>& v) {
            return (v[0].reshape({cols, -1}) * 2.0).reshape({-1});
          },
          true);
    }
  };

  // --- modules, with the same weights ------------------------------------------------------
  m["module_linear"] = [](Env& e) {
    for (auto [batch, in_f] : kShapes) {
      const int64_t out_f = batch == 96 ? 130 : in_f + 2;
      for (int fused = 0; fused < 2; ++fused) {
        clarena::nn::Linear lc(in_f, out_f, e.gen);
        set_dtype(lc, e.dt);
        torch::nn::Linear lt(torch::nn::LinearOptions(in_f, out_f));
        lt->to(e.st());
        copy_to_torch(lc.weight(), lt->weight);
        copy_to_torch(lc.bias(), lt->bias);
        Pair x = normal(e, {batch, in_f});
        CT yc = fused ? lc.forward_relu(x.c) : lc(x.c);
        torch::Tensor yt = fused ? torch::relu(lt(x.t)) : lt(x.t);
        const std::string what = fused ? "Linear::forward_relu" : "Linear";
        expect_close(yc, yt, e.rtol, false, what);
        Pair dy = uniform(e, yc.shape());
        yc.backward(dy.c);
        yt.backward(dy.t);
        expect_close(lc.weight().grad(), lt->weight.grad(), e.rtol, false, what + " weight grad");
        expect_close(lc.bias().grad(), lt->bias.grad(), e.rtol, false, what + " bias grad");
      }
    }
  };
  m["module_batchnorm1d"] = [](Env& e) {
    for (auto [batch, features] : kShapes) {
      if (batch == 1) continue;
      clarena::nn::BatchNorm1d bc(features, 1e-5, 0.1);
      set_dtype(bc, e.dt);
      torch::nn::BatchNorm1d bt(torch::nn::BatchNorm1dOptions(features).eps(1e-5).momentum(0.1));
      bt->to(e.st());
      auto params = bc.named_parameters();
      CT w = named(params, "weight"), b = named(params, "bias");
      randomize(e, w, bt->weight, 0.5, 1.5);
      randomize(e, b, bt->bias, -0.5, 0.5);
      for (int step = 0; step < 3; ++step) {  // running statistics move at each training step
        Pair x = normal(e, {batch, features}, 1.5);
        bc.zero_grad();
        bt->zero_grad();
        CT yc = bc(x.c);
        torch::Tensor yt = bt(x.t);
        const std::string what = "BatchNorm1d train step " + std::to_string(step);
        expect_close(yc, yt, e.rtol, false, what);
        Pair dy = uniform(e, yc.shape());
        yc.backward(dy.c);
        yt.backward(dy.t);
        expect_close(w.grad(), bt->weight.grad(), e.rtol, false, what + " weight grad");
        expect_close(b.grad(), bt->bias.grad(), e.rtol, false, what + " bias grad");
        auto buffers = bc.named_buffers();
        expect_close(named(buffers, "running_mean"), bt->running_mean, e.rtol, false,
                     what + " running_mean");
        expect_close(named(buffers, "running_var"), bt->running_var, e.rtol, false,
                     what + " running_var");
      }
      bc.eval();
      bt->eval();
      Pair x = leaf(normal(e, {batch, features}));
      CT yc = bc(x.c);
      torch::Tensor yt = bt(x.t);
      expect_close(yc, yt, e.rtol, false, "BatchNorm1d eval");
      Pair dy = uniform(e, yc.shape());
      yc.backward(dy.c);
      yt.backward(dy.t);
      expect_close(x.c.grad(), x.t.grad(), e.rtol, false, "BatchNorm1d eval input grad");
    }
  };
  // MLP (every option) and a Sequential, each followed by a Linear head and the loss: output,
  // loss, the gradient of every parameter and BatchNorm's running statistics.
  m["module_mlp"] = [](Env& e) {
    struct Option {
      clarena::nn::Activation activation;
      bool batch_norm;
    };
    using A = clarena::nn::Activation;
    for (const Option& o : {Option{A::ReLU, false}, Option{A::ReLU, true}, Option{A::Tanh, false},
                            Option{A::Sigmoid, true}, Option{A::None, false}}) {
      const int64_t batch = 16, in_f = 20, classes = 7;
      const std::vector<int64_t> hidden = {24, 12};
      clarena::nn::MLP mc(in_f, hidden, e.gen, {o.activation, o.batch_norm});
      clarena::nn::Linear head_c(hidden.back(), classes, e.gen);
      set_dtype(mc, e.dt);
      set_dtype(head_c, e.dt);
      auto params = mc.named_parameters();
      std::vector<torch::nn::Linear> lin;
      std::vector<torch::nn::BatchNorm1d> bn;
      torch::nn::Sequential seq;
      int64_t width = in_f;
      for (size_t i = 0; i < hidden.size(); ++i) {
        const std::string k = std::to_string(i);
        lin.emplace_back(torch::nn::LinearOptions(width, hidden[i]));
        lin.back()->to(e.st());
        copy_to_torch(named(params, "fc." + k + ".weight"), lin.back()->weight);
        copy_to_torch(named(params, "fc." + k + ".bias"), lin.back()->bias);
        seq->push_back(lin.back());
        if (o.batch_norm) {
          bn.emplace_back(torch::nn::BatchNorm1dOptions(hidden[i]));
          bn.back()->to(e.st());
          CT w = named(params, "fc_bn." + k + ".weight"), b = named(params, "fc_bn." + k + ".bias");
          randomize(e, w, bn.back()->weight, 0.5, 1.5);
          randomize(e, b, bn.back()->bias, -0.5, 0.5);
          seq->push_back(bn.back());
        }
        if (o.activation == A::ReLU) seq->push_back(torch::nn::ReLU());
        if (o.activation == A::Tanh) seq->push_back(torch::nn::Tanh());
        if (o.activation == A::Sigmoid) seq->push_back(torch::nn::Sigmoid());
        width = hidden[i];
      }
      torch::nn::Linear head_t(torch::nn::LinearOptions(hidden.back(), classes));
      head_t->to(e.st());
      copy_to_torch(head_c.weight(), head_t->weight);
      copy_to_torch(head_c.bias(), head_t->bias);
      params = mc.named_parameters();  // after randomize: the same handles, new data
      for (int step = 0; step < 2; ++step) {
        const std::string what = "MLP " + std::string(to_string(o.activation)) +
                                 (o.batch_norm ? "+bn" : "") + " step " + std::to_string(step);
        mc.zero_grad();
        head_c.zero_grad();
        seq->zero_grad();
        head_t->zero_grad();
        Pair x = normal(e, {batch, in_f});
        Pair y = labels(e, batch, classes);
        CT hc = mc(x.c);
        torch::Tensor ht = seq->forward(x.t);
        expect_close(hc, ht, e.rtol, false, what + " features");
        CT lc = clarena::cross_entropy(head_c(hc), y.c);
        torch::Tensor lt = F::cross_entropy(head_t(ht), y.t);
        expect_close(lc, lt, e.rtol, false, what + " loss");
        lc.backward();
        lt.backward();
        for (size_t i = 0; i < hidden.size(); ++i) {
          const std::string k = std::to_string(i);
          expect_close(named(params, "fc." + k + ".weight").grad(), lin[i]->weight.grad(), e.rtol,
                       false, what + " fc." + k + ".weight grad");
          // Under batch norm the bias's gradient is zero in exact arithmetic: rounding noise in
          // both, measured against the weight gradient's scale.
          const double floor =
              o.batch_norm ? lin[i]->weight.grad().abs().max().item<double>() : 0.0;
          expect_close(named(params, "fc." + k + ".bias").grad(), lin[i]->bias.grad(), e.rtol,
                       false, what + " fc." + k + ".bias grad", floor);
          if (!o.batch_norm) continue;
          expect_close(named(params, "fc_bn." + k + ".weight").grad(), bn[i]->weight.grad(), e.rtol,
                       false, what + " fc_bn." + k + ".weight grad");
          expect_close(named(params, "fc_bn." + k + ".bias").grad(), bn[i]->bias.grad(), e.rtol,
                       false, what + " fc_bn." + k + ".bias grad");
          auto buffers = mc.named_buffers();
          expect_close(named(buffers, "fc_bn." + k + ".running_mean"), bn[i]->running_mean, e.rtol,
                       false, what + " running_mean " + k);
          expect_close(named(buffers, "fc_bn." + k + ".running_var"), bn[i]->running_var, e.rtol,
                       false, what + " running_var " + k);
        }
        expect_close(head_c.weight().grad(), head_t->weight.grad(), e.rtol, false,
                     what + " head weight grad");
      }
      mc.eval();
      seq->eval();
      Pair x = normal(e, {batch, in_f});
      expect_close(mc(x.c), seq->forward(x.t), e.rtol, false,
                   "MLP eval " + std::string(to_string(o.activation)));
    }
  };
  m["module_sequential"] = [](Env& e) {
    const int64_t batch = 96, in_f = 160, hidden = 130, classes = 10;
    auto l1 = std::make_shared<clarena::nn::Linear>(in_f, hidden, e.gen);
    auto l2 = std::make_shared<clarena::nn::Linear>(hidden, classes, e.gen);
    clarena::nn::Sequential sc({l1, std::make_shared<clarena::nn::ReLU>(), l2});
    set_dtype(sc, e.dt);
    torch::nn::Linear t1(torch::nn::LinearOptions(in_f, hidden)),
        t2(torch::nn::LinearOptions(hidden, classes));
    torch::nn::Sequential st(t1, torch::nn::ReLU(), t2);
    st->to(e.st());
    copy_to_torch(l1->weight(), t1->weight);
    copy_to_torch(l1->bias(), t1->bias);
    copy_to_torch(l2->weight(), t2->weight);
    copy_to_torch(l2->bias(), t2->bias);
    Pair x = leaf(normal(e, {batch, in_f}));
    Pair y = labels(e, batch, classes);
    CT lc = clarena::cross_entropy(sc(x.c), y.c);
    torch::Tensor lt = F::cross_entropy(st->forward(x.t), y.t);
    expect_close(lc, lt, e.rtol, false, "Sequential loss");
    lc.backward();
    lt.backward();
    expect_close(l1->weight().grad(), t1->weight.grad(), e.rtol, false, "Sequential 0.weight grad");
    expect_close(l1->bias().grad(), t1->bias.grad(), e.rtol, false, "Sequential 0.bias grad");
    expect_close(l2->weight().grad(), t2->weight.grad(), e.rtol, false, "Sequential 2.weight grad");
    expect_close(x.c.grad(), x.t.grad(), e.rtol, false, "Sequential input grad");
  };

  // --- optimizers: several steps on the same gradients ---------------------------------------
  // Three parameters, one large enough to be split into tiles (> 2^15 elements); the second
  // gets no gradient at step 2 (both libraries skip it: no decay, no momentum, no step count).
  // `init`: the parameters start in [-init, init]; small, the float32 comparison measures the
  // displacement rather than the rounding of a parameter near 1.
  auto optimizer_case = [](auto make_pair, double init) {
    return [make_pair, init](Env& e) {
      const std::vector<Shape> shapes = {{7, 13}, {5}, {200, 201}};
      std::vector<Pair> p;
      for (const Shape& s : shapes)
        p.push_back(leaf(uniform(e, s, -init, init)));
      std::vector<CT> pc;
      std::vector<torch::Tensor> pt;
      for (const Pair& x : p) {
        pc.push_back(x.c);
        pt.push_back(x.t);
      }
      auto [oc, ot, what] = make_pair(pc, pt);
      for (int step = 0; step < 5; ++step) {
        for (size_t i = 0; i < p.size(); ++i) {
          if (i == 1 && step == 2) {
            p[i].c.zero_grad();
            p[i].t.mutable_grad() = torch::Tensor();
            continue;
          }
          Pair g = normal(e, shapes[i], 0.5);
          p[i].c.set_grad(g.c);
          p[i].t.mutable_grad() = g.t;
        }
        oc->step();
        ot->step();
        for (size_t i = 0; i < p.size(); ++i)
          expect_close(p[i].c, p[i].t, e.rtol, false,
                       what + " step " + std::to_string(step + 1) + " param " + std::to_string(i));
      }
    };
  };
  struct SGDCase {
    const char* name;
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
  };
  for (const SGDCase& s :
       {SGDCase{"sgd", 0.1, 0, 0, 0, false}, SGDCase{"sgd_momentum", 0.1, 0.9, 0, 0, false},
        SGDCase{"sgd_dampening", 0.1, 0.9, 0.3, 0, false},
        SGDCase{"sgd_nesterov", 0.05, 0.9, 0, 0, true},
        SGDCase{"sgd_weight_decay", 0.1, 0, 0, 0.05, false},
        SGDCase{"sgd_all", 0.05, 0.8, 0.3, 0.01, false},
        SGDCase{"sgd_nesterov_wd", 0.05, 0.8, 0, 0.01, true}})
    m["optim_" + std::string(s.name)] = optimizer_case(
        [s](std::vector<CT> pc, std::vector<torch::Tensor> pt) {
          return std::make_tuple(
              std::make_unique<clarena::optim::SGD>(
                  pc, clarena::optim::SGDOptions{s.lr, s.momentum, s.dampening, s.weight_decay,
                                                 s.nesterov}),
              std::make_unique<torch::optim::SGD>(pt, torch::optim::SGDOptions(s.lr)
                                                          .momentum(s.momentum)
                                                          .dampening(s.dampening)
                                                          .weight_decay(s.weight_decay)
                                                          .nesterov(s.nesterov)),
              std::string(s.name));
        },
        1.0);
  struct AdamCase {
    const char* name;
    double lr, beta1, beta2, eps, weight_decay, init;
  };
  for (const AdamCase& a : {AdamCase{"adam", 1e-2, 0.9, 0.999, 1e-8, 0, 1},
                            AdamCase{"adam_weight_decay", 1e-2, 0.9, 0.999, 1e-8, 0.1, 1},
                            AdamCase{"adam_betas", 0.1, 0.5, 0.9, 1e-3, 0.01, 1},
                            // 1 - beta2 in double: 1 - float(0.9999) is 1.7e-4 off, which
                            // moves each step by ~8e-5 (relative)
                            AdamCase{"adam_beta2_9999", 1e-3, 0.9, 0.9999, 1e-8, 0, 1e-3},
                            AdamCase{"adam_small_params", 1e-3, 0.9, 0.999, 1e-8, 0.1, 1e-3}})
    m["optim_" + std::string(a.name)] = optimizer_case(
        [a](std::vector<CT> pc, std::vector<torch::Tensor> pt) {
          return std::make_tuple(
              std::make_unique<clarena::optim::Adam>(
                  pc, clarena::optim::AdamOptions{a.lr, a.beta1, a.beta2, a.eps, a.weight_decay}),
              std::make_unique<torch::optim::Adam>(pt, torch::optim::AdamOptions(a.lr)
                                                           .betas(std::make_tuple(a.beta1, a.beta2))
                                                           .eps(a.eps)
                                                           .weight_decay(a.weight_decay)),
              std::string(a.name));
        },
        a.init);
  return m;
}

const std::map<std::string, Case>& registry() {
  static const std::map<std::string, Case> m = cases();
  return m;
}

std::vector<std::string> case_names() {
  std::vector<std::string> out;
  for (const auto& [name, fn] : registry())
    out.push_back(name);
  return out;
}

using Param = std::tuple<std::string, DType, int>;

class LibTorchRef : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    threads_before_ = clarena::num_threads();
    const int threads = std::get<2>(GetParam());
    clarena::set_num_threads(threads);
    at::set_num_threads(threads);
  }
  void TearDown() override { clarena::set_num_threads(threads_before_); }

 private:
  int threads_before_ = 1;
};

TEST_P(LibTorchRef, MatchesTorch) {
  const auto& [name, dt, threads] = GetParam();
  (void)threads;  // set in SetUp
  Env e{dt, dt == DType::Float64 ? 1e-10 : 1e-5, clarena::Generator(0x5eed)};
  registry().at(name)(e);
}

INSTANTIATE_TEST_SUITE_P(All, LibTorchRef,
                         ::testing::Combine(::testing::ValuesIn(case_names()),
                                            ::testing::Values(DType::Float64, DType::Float32),
                                            ::testing::Values(1, 7)),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           return std::get<0>(info.param) +
                                  (std::get<1>(info.param) == DType::Float64 ? "_f64" : "_f32") +
                                  "_t" + std::to_string(std::get<2>(info.param));
                         });

}  // namespace
