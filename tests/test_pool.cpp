// Pooling (max, average, adaptive average), flatten and 4-D batch norm: forward values against
// naive loops, float64 gradient checks, PyTorch's tie and NaN rules, running statistics, errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "clarena/clarena.h"
#include "gradcheck.h"

using namespace clarena;

namespace {

constexpr DType f64 = DType::Float64;

Tensor randn(const Shape& shape, Generator& gen, double std = 1.0) {
  return Tensor::normal(shape, 0.0, std, gen, f64);
}

/// Distinct values 0.05 apart in a shuffled order: no ties, and a central difference of 1e-6
/// never changes a window's maximum.
Tensor distinct(const Shape& shape, Generator& gen) {
  std::vector<double> v(static_cast<size_t>(shape_numel(shape)));
  for (size_t i = 0; i < v.size(); ++i)
    v[i] = 0.05 * static_cast<double>(i) - 1.0;
  for (size_t i = v.size(); i > 1; --i)
    std::swap(v[i - 1], v[static_cast<size_t>(gen.below(i))]);
  return Tensor::from_vector(v, shape);
}

/// x in the element type `dt`.
Tensor as(const Tensor& x, DType dt) {
  if (dt == f64) return x;
  const std::vector<double> v = x.to_vector<double>();
  return Tensor::from_vector(std::vector<float>(v.begin(), v.end()), x.shape());
}

/// The elements as double, from either float type.
std::vector<double> values(const Tensor& x) {
  if (x.dtype() == f64) return x.to_vector<double>();
  const std::vector<float> v = x.to_vector<float>();
  return {v.begin(), v.end()};
}

struct Geometry {
  Shape shape;  // N, C, H, W
  Pair kernel, stride, padding;
};

/// The configurations of the checks: batch 1, odd sizes, stride != kernel, padding 1,
/// overlapping windows, non-square kernels.
std::vector<Geometry> geometries() {
  return {
      {{1, 1, 4, 4}, {2, 2}, {0, 0}, {0, 0}},  // stride = kernel
      {{2, 3, 5, 7}, {3, 3}, {2, 2}, {1, 1}},  // overlapping, padded, odd sizes
      {{1, 2, 7, 5}, {3, 2}, {1, 2}, {1, 0}},  // stride 1 rows, non-square kernel
      {{3, 1, 6, 6}, {2, 3}, {3, 1}, {1, 1}},  // stride > kernel rows: gaps
      {{2, 2, 3, 3}, {3, 3}, {1, 1}, {1, 1}},  // output as large as the input
  };
}

int64_t out_size(int64_t in, int64_t k, int64_t s, int64_t p) {
  return (in + 2 * p - k) / s + 1;
}

/// max or average pooling by the definition, in double on the host.
std::vector<double> naive_pool(const Tensor& x, const Geometry& g, bool max) {
  const std::vector<double> v = values(x);
  const int64_t planes = g.shape[0] * g.shape[1], H = g.shape[2], W = g.shape[3];
  const Pair st = g.stride[0] == 0 ? g.kernel : g.stride;
  const int64_t OH = out_size(H, g.kernel[0], st[0], g.padding[0]);
  const int64_t OW = out_size(W, g.kernel[1], st[1], g.padding[1]);
  std::vector<double> out;
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oh = 0; oh < OH; ++oh)
      for (int64_t ow = 0; ow < OW; ++ow) {
        double best = -std::numeric_limits<double>::infinity(), sum = 0;
        for (int64_t i = 0; i < g.kernel[0]; ++i)
          for (int64_t j = 0; j < g.kernel[1]; ++j) {
            const int64_t h = oh * st[0] - g.padding[0] + i, w = ow * st[1] - g.padding[1] + j;
            if (h < 0 || h >= H || w < 0 || w >= W) continue;  // -inf for max, 0 for the sum
            const double e = v[static_cast<size_t>((p * H + h) * W + w)];
            best = std::max(best, e);
            sum += e;
          }
        out.push_back(max ? best : sum / static_cast<double>(g.kernel[0] * g.kernel[1]));
      }
  return out;
}

void expect_near(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

// --- forward values -------------------------------------------------------------------------

TEST(Pool, MaxAndAvgMatchNaiveLoops) {
  Generator gen(1);
  for (const Geometry& g : geometries())
    for (DType dt : {DType::Float32, DType::Float64}) {
      Tensor x = as(randn(g.shape, gen), dt);
      Tensor m = max_pool2d(x, g.kernel, g.stride, g.padding);
      Tensor a = avg_pool2d(x, g.kernel, g.stride, g.padding);
      const Pair st = g.stride[0] == 0 ? g.kernel : g.stride;
      const Shape want = {g.shape[0], g.shape[1],
                          out_size(g.shape[2], g.kernel[0], st[0], g.padding[0]),
                          out_size(g.shape[3], g.kernel[1], st[1], g.padding[1])};
      EXPECT_EQ(m.shape(), want);
      EXPECT_EQ(a.shape(), want);
      const double tol = dt == DType::Float32 ? 1e-5 : 1e-12;
      expect_near(values(m), naive_pool(x, g, true), 0);
      expect_near(values(a), naive_pool(x, g, false), tol);
    }
}

TEST(Pool, StrideDefaultsToKernel) {
  Generator gen(2);
  Tensor x = randn({2, 3, 6, 4}, gen);
  EXPECT_EQ(max_pool2d(x, {2, 2}).to_vector<double>(),
            max_pool2d(x, {2, 2}, {2, 2}).to_vector<double>());
  EXPECT_EQ(avg_pool2d(x, {3, 2}).shape(), (Shape{2, 3, 2, 2}));
}

TEST(Pool, AvgCountsPaddingInTheDivisor) {
  // A 2x2 input of ones, kernel 3, padding 1, stride 1: every window holds 4 ones of 9 cells.
  Tensor x = Tensor::ones({1, 1, 2, 2}, f64);
  Tensor y = avg_pool2d(x, {3, 3}, {1, 1}, {1, 1});
  for (double v : y.to_vector<double>())
    EXPECT_DOUBLE_EQ(v, 4.0 / 9.0);
}

TEST(Pool, MaxTiesGoToTheFirstMaximum) {
  // Overlapping 2x2 windows, stride 1, over a constant plane with one padded border: the
  // gradient of each window lands on its first (top-left, in-bounds) element, as in PyTorch.
  Tensor x = Tensor::full({1, 1, 3, 3}, 2.0, f64);
  x.requires_grad_(true);
  Tensor y = max_pool2d(x, {2, 2}, {1, 1}, {1, 1});  // 4x4 output
  ASSERT_EQ(y.shape(), (Shape{1, 1, 4, 4}));
  y.backward(Tensor::ones(y.shape(), f64));
  // Window (oh, ow) starts at (oh - 1, ow - 1); its first in-bounds element is
  // (max(oh - 1, 0), max(ow - 1, 0)): rows 0, 0, 1, 2 and columns 0, 0, 1, 2, so element
  // (h, w) receives (h == 0 ? 2 : 1) * (w == 0 ? 2 : 1) gradients.
  const std::vector<double> want = {4, 2, 2, 2, 1, 1, 2, 1, 1};
  EXPECT_EQ(x.grad().to_vector<double>(), want);
}

TEST(Pool, MaxPropagatesNaN) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor x = Tensor::from_vector(std::vector<double>{1, nan, 3, 4, 5, 6, 7, 8}, {1, 1, 2, 4});
  x.requires_grad_(true);
  Tensor y = max_pool2d(x, {2, 2});
  const std::vector<double> v = y.to_vector<double>();
  EXPECT_TRUE(std::isnan(v[0]));
  EXPECT_EQ(v[1], 8);
  y.backward(Tensor::ones(y.shape(), f64));
  EXPECT_EQ(x.grad().to_vector<double>(), (std::vector<double>{0, 1, 0, 0, 0, 0, 0, 1}));
}

TEST(Pool, AdaptiveAvgToOneIsTheSpatialMean) {
  Generator gen(3);
  Tensor x = randn({2, 3, 5, 7}, gen);
  Tensor y = adaptive_avg_pool2d(x, {1, 1});
  ASSERT_EQ(y.shape(), (Shape{2, 3, 1, 1}));
  const std::vector<double> v = x.to_vector<double>(), got = y.to_vector<double>();
  for (int64_t p = 0; p < 6; ++p) {
    const double s = std::accumulate(v.begin() + p * 35, v.begin() + (p + 1) * 35, 0.0);
    EXPECT_NEAR(got[static_cast<size_t>(p)], s / 35, 1e-12);
  }
}

TEST(Pool, FlattenIsAView) {
  Generator gen(4);
  Tensor x = randn({2, 3, 4, 5}, gen);
  Tensor f = flatten(x);
  EXPECT_EQ(f.shape(), (Shape{2, 60}));
  EXPECT_EQ(f.raw(), x.raw());
  EXPECT_EQ(flatten(x, 2).shape(), (Shape{2, 3, 20}));
  EXPECT_EQ(flatten(x, 0).shape(), (Shape{120}));
  EXPECT_EQ(flatten(x, -1).shape(), (Shape{2, 3, 4, 5}));
  EXPECT_EQ(flatten(x, 1).to_vector<double>(), x.to_vector<double>());
}

TEST(Pool, SameBitsAtAnyThreadCount) {
  Generator gen(5);
  Tensor x = as(randn({8, 16, 13, 11}, gen), DType::Float32);
  auto run = [&] {
    Tensor xi = x.detach();
    xi.requires_grad_(true);
    Tensor y = add(max_pool2d(xi, {3, 3}, {2, 2}, {1, 1}).reshape({-1}),
                   avg_pool2d(xi, {3, 3}, {2, 2}, {1, 1}).reshape({-1}));
    y.backward(Tensor::ones(y.shape(), DType::Float32));
    std::vector<float> out = y.to_vector<float>(), g = xi.grad().to_vector<float>();
    out.insert(out.end(), g.begin(), g.end());
    return out;
  };
  const int before = num_threads();
  set_num_threads(1);
  const std::vector<float> one = run();
  set_num_threads(3);
  const std::vector<float> three = run();
  set_num_threads(before);
  EXPECT_EQ(one, three);
}

// --- gradients ------------------------------------------------------------------------------

TEST(PoolGrad, MaxPool) {
  Generator gen(10);
  for (const Geometry& g : geometries()) {
    Tensor x = distinct(g.shape, gen);
    EXPECT_TRUE(gradcheck::check(
        [g](const std::vector<Tensor>& in) {
          return max_pool2d(in[0], g.kernel, g.stride, g.padding);
        },
        {x}));
  }
}

TEST(PoolGrad, AvgPool) {
  Generator gen(11);
  for (const Geometry& g : geometries()) {
    Tensor x = randn(g.shape, gen);
    EXPECT_TRUE(gradcheck::check(
        [g](const std::vector<Tensor>& in) {
          return avg_pool2d(in[0], g.kernel, g.stride, g.padding);
        },
        {x}));
  }
}

TEST(PoolGrad, AdaptiveAvgPoolAndFlatten) {
  Generator gen(12);
  for (const Shape& s : {Shape{1, 1, 1, 1}, Shape{1, 3, 5, 7}, Shape{2, 2, 3, 4}}) {
    EXPECT_TRUE(gradcheck::check(
        [](const std::vector<Tensor>& in) {
          return adaptive_avg_pool2d(in[0], {1, 1});
        },
        {randn(s, gen)}));
    EXPECT_TRUE(gradcheck::check([](const std::vector<Tensor>& in) { return flatten(in[0]) * 2.0; },
                                 {randn(s, gen)}));
  }
}

TEST(PoolGrad, BatchNorm4d) {
  Generator gen(13);
  for (const Shape& s :
       {Shape{1, 3, 2, 3}, Shape{2, 2, 3, 1}, Shape{3, 1, 1, 1}, Shape{2, 3, 5, 3}}) {
    const int64_t c = s[1];
    Tensor gamma = Tensor::uniform({c}, 0.5, 1.5, gen, f64), beta = randn({c}, gen);
    for (bool training : {true, false}) {
      Tensor rm = randn({c}, gen), rv = Tensor::uniform({c}, 0.5, 2.0, gen, f64);
      auto f = [rm, rv, training](const std::vector<Tensor>& in) {
        return batch_norm(in[0], in[1], in[2], rm, rv, training);
      };
      EXPECT_TRUE(gradcheck::check(f, {randn(s, gen), gamma, beta}))
          << shape_str(s) << " training " << training;
      // One input at a time: the others come back undefined.
      EXPECT_TRUE(gradcheck::check(f, {randn(s, gen), gamma, beta}, {true, false, false}));
      EXPECT_TRUE(gradcheck::check(f, {randn(s, gen), gamma, beta}, {false, true, true}));
    }
  }
}

// --- batch norm on [N, C, H, W] --------------------------------------------------------------

TEST(BatchNorm4d, TrainingMatchesHandComputation) {
  Generator gen(20);
  const int64_t N = 3, C = 2, H = 3, W = 2, per = N * H * W;
  Tensor x = randn({N, C, H, W}, gen, 2.0);
  Tensor gamma = Tensor::from_vector(std::vector<double>{1.5, -0.5}, {C});
  Tensor beta = Tensor::from_vector(std::vector<double>{0.25, 1.0}, {C});
  Tensor rm = Tensor::from_vector(std::vector<double>{0.5, -1.0}, {C});
  Tensor rv = Tensor::from_vector(std::vector<double>{2.0, 0.5}, {C});
  const double momentum = 0.3, eps = 1e-3;
  Tensor y = batch_norm(x, gamma, beta, rm, rv, true, momentum, eps);
  const std::vector<double> v = x.to_vector<double>(), got = y.to_vector<double>();
  const std::vector<double> g = {1.5, -0.5}, b = {0.25, 1.0}, rm0 = {0.5, -1.0}, rv0 = {2.0, 0.5};
  for (int64_t c = 0; c < C; ++c) {
    auto at = [&](int64_t n, int64_t i) { return static_cast<size_t>((n * C + c) * H * W + i); };
    double mean = 0, sq = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < H * W; ++i)
        mean += v[at(n, i)];
    mean /= per;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < H * W; ++i)
        sq += (v[at(n, i)] - mean) * (v[at(n, i)] - mean);
    const double invstd = 1 / std::sqrt(sq / per + eps);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t i = 0; i < H * W; ++i)
        EXPECT_NEAR(got[at(n, i)], (v[at(n, i)] - mean) * invstd * g[c] + b[c], 1e-12);
    const size_t cc = static_cast<size_t>(c);
    EXPECT_NEAR(rm.to_vector<double>()[cc], (1 - momentum) * rm0[cc] + momentum * mean, 1e-12);
    EXPECT_NEAR(rv.to_vector<double>()[cc], (1 - momentum) * rv0[cc] + momentum * sq / (per - 1),
                1e-12);
  }
}

TEST(BatchNorm4d, EvalUsesRunningStatistics) {
  Generator gen(21);
  const int64_t N = 2, C = 3, H = 2, W = 3;
  Tensor x = randn({N, C, H, W}, gen);
  Tensor gamma = randn({C}, gen), beta = randn({C}, gen), rm = randn({C}, gen);
  Tensor rv = Tensor::uniform({C}, 0.5, 2.0, gen, f64);
  const std::vector<double> rm0 = rm.to_vector<double>(), rv0 = rv.to_vector<double>();
  Tensor y = batch_norm(x, gamma, beta, rm, rv, false, 0.1, 1e-5);
  EXPECT_EQ(rm.to_vector<double>(), rm0);  // eval leaves the running statistics alone
  EXPECT_EQ(rv.to_vector<double>(), rv0);
  const std::vector<double> v = x.to_vector<double>(), got = y.to_vector<double>(),
                            g = gamma.to_vector<double>(), b = beta.to_vector<double>();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < H * W; ++i) {
        const size_t k = static_cast<size_t>((n * C + c) * H * W + i), cc = static_cast<size_t>(c);
        EXPECT_NEAR(got[k], (v[k] - rm0[cc]) / std::sqrt(rv0[cc] + 1e-5) * g[cc] + b[cc], 1e-12);
      }
}

TEST(BatchNorm4d, OneByOneImagesMatchTheTwoDimensionalOp) {
  // [N, C, 1, 1] normalises exactly as [N, C].
  Generator gen(22);
  Tensor x = randn({5, 4}, gen), gamma = randn({4}, gen), beta = randn({4}, gen);
  Tensor rm2 = Tensor::zeros({4}, f64), rv2 = Tensor::ones({4}, f64);
  Tensor rm4 = Tensor::zeros({4}, f64), rv4 = Tensor::ones({4}, f64);
  Tensor y2 = batch_norm(x, gamma, beta, rm2, rv2, true);
  Tensor y4 = batch_norm(x.reshape({5, 4, 1, 1}), gamma, beta, rm4, rv4, true);
  EXPECT_EQ(y2.to_vector<double>(), y4.to_vector<double>());
  EXPECT_EQ(rm2.to_vector<double>(), rm4.to_vector<double>());
  EXPECT_EQ(rv2.to_vector<double>(), rv4.to_vector<double>());
}

// --- errors ---------------------------------------------------------------------------------

TEST(PoolErrors, RanksKernelsPaddingAndOutputSize) {
  Tensor x4 = Tensor::zeros({1, 2, 4, 4}, f64);
  Tensor x3 = Tensor::zeros({2, 4, 4}, f64);
  EXPECT_THROW(max_pool2d(x3, {2, 2}), ShapeError);
  EXPECT_THROW(avg_pool2d(x3, {2, 2}), ShapeError);
  EXPECT_THROW(adaptive_avg_pool2d(x3, {1, 1}), ShapeError);
  EXPECT_THROW(max_pool2d(x4, {5, 2}), ShapeError);                  // larger than the input
  EXPECT_THROW(avg_pool2d(x4, {2, 7}, {1, 1}, {1, 1}), ShapeError);  // larger than padded
  EXPECT_NO_THROW(max_pool2d(x4, {6, 2}, {1, 1}, {1, 0}));           // padded input fits
  EXPECT_THROW(max_pool2d(x4, {2, 2}, {1, 1}, {2, 0}), ValueError);  // padding > kernel / 2
  EXPECT_THROW(avg_pool2d(x4, {3, 3}, {1, 1}, {-1, 0}), ValueError);
  EXPECT_THROW(max_pool2d(x4, {0, 2}), ValueError);
  EXPECT_THROW(max_pool2d(x4, {2, 2}, {-1, 1}), ValueError);
  EXPECT_THROW(max_pool2d(Tensor::zeros({1, 1, 2, 2}, DType::Int64), {2, 2}), DTypeError);
  try {
    adaptive_avg_pool2d(x4, {2, 2});
    ADD_FAILURE() << "no error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("(2, 2)"), std::string::npos) << e.what();
  }
  try {
    max_pool2d(x4, {2, 2}, {1, 1}, {3, 3});
    ADD_FAILURE() << "no error";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("padding"), std::string::npos) << e.what();
  }
  EXPECT_THROW(flatten(x4, 4), ValueError);
}

TEST(PoolErrors, BatchNorm4d) {
  Tensor g = Tensor::ones({2}, f64), b = Tensor::zeros({2}, f64);
  Tensor rm = Tensor::zeros({2}, f64), rv = Tensor::ones({2}, f64);
  EXPECT_THROW(batch_norm(Tensor::zeros({2, 2, 3}, f64), g, b, rm, rv, true), ShapeError);
  EXPECT_THROW(batch_norm(Tensor::zeros({2, 3, 2, 2}, f64), g, b, rm, rv, true), ShapeError);
  // One value per channel cannot give a variance.
  EXPECT_THROW(batch_norm(Tensor::zeros({1, 2, 1, 1}, f64), g, b, rm, rv, true), ValueError);
  EXPECT_NO_THROW(batch_norm(Tensor::zeros({1, 2, 1, 2}, f64), g, b, rm, rv, true));
  EXPECT_NO_THROW(batch_norm(Tensor::zeros({1, 2, 1, 1}, f64), g, b, rm, rv, false));
}

}  // namespace
