// conv2d: forward against a direct convolution written here, float64 gradient checks over a
// grid of shapes (batch 1, odd sizes, stride 2, padding, dilation 2, groups, 1×1 and 3×3
// kernels), batches cut into several chunks (forward and gradients against the direct
// convolution and its adjoint), the requires-grad rule (a frozen weight computes and saves
// nothing for itself; all frozen records no node), the same bits at 1, 2, 3, 7 and 16 threads,
// and the typed errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <ostream>
#include <string>
#include <vector>

#include "clarena/clarena.h"
#include "clarena/kernels/backend.h"
#include "gradcheck.h"

using namespace clarena;

namespace {

constexpr DType f64 = DType::Float64;

struct ConvCase {
  const char* name;
  int64_t n, c, h, w, c_out, kh, kw;
  Pair stride, padding, dilation;
  int64_t groups;
};

const std::vector<ConvCase> kCases = {
    {"batch1_3x3", 1, 1, 5, 5, 2, 3, 3, {1, 1}, {0, 0}, {1, 1}, 1},
    {"odd_pad1", 2, 3, 7, 6, 4, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1},
    {"stride2_pad1", 2, 3, 7, 7, 2, 3, 3, {2, 2}, {1, 1}, {1, 1}, 1},
    {"dilation2_pad2", 1, 2, 9, 8, 3, 3, 3, {1, 1}, {2, 2}, {2, 2}, 1},
    {"groups2_3x3", 2, 4, 5, 5, 4, 3, 3, {1, 1}, {1, 1}, {1, 1}, 2},
    {"groups2_1x1", 3, 4, 5, 4, 6, 1, 1, {1, 1}, {0, 0}, {1, 1}, 2},
    {"1x1_stride2", 2, 3, 6, 5, 5, 1, 1, {2, 2}, {0, 0}, {1, 1}, 1},
    {"1x1_pad1", 1, 2, 3, 4, 3, 1, 1, {1, 1}, {1, 1}, {1, 1}, 1},
    {"asymmetric", 1, 2, 6, 7, 2, 2, 3, {2, 1}, {0, 1}, {1, 2}, 1},
    {"depthwise", 2, 4, 4, 4, 4, 3, 3, {1, 1}, {1, 1}, {1, 1}, 4},
    {"stride2_even_crop", 1, 2, 8, 8, 3, 3, 3, {2, 2}, {0, 0}, {1, 1}, 1},
    // "Same" size with a kernel wider than the image: im2col's shifted-plane copy wraps past a
    // whole row, and the padding columns must be cleared again.
    {"same_kernel_wider_than_image", 2, 2, 3, 2, 2, 5, 5, {1, 1}, {2, 2}, {1, 1}, 1},
    // Small planes: the batch is one chunk, one im2col and one GEMM per group over all the images
    // (for a 1×1 kernel, x transposed to [C, N·H·W]); on the CPU a plane of 256 pixels or more
    // is one image per chunk (17×16). Batches of several chunks are below (kChunkCases).
    {"batched", 18, 2, 4, 4, 3, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1},
    {"batched_groups_1x1", 5, 4, 2, 3, 6, 1, 1, {1, 1}, {0, 0}, {1, 1}, 2},
    {"batched_groups_3x3", 3, 6, 5, 4, 9, 3, 3, {1, 1}, {1, 1}, {1, 1}, 3},
    {"two_images_large_plane", 2, 2, 17, 16, 3, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1},
    // Taps that only ever read padding, cropped away (ResNet-18's last stages at 28×28): a 1×1
    // plane keeps the centre tap; 2×2 at stride 2 keeps 2×2 taps; a 5×1 plane keeps the centre
    // column (three blocks of the weight); dilated and grouped versions.
    {"plane_1x1_pad1", 3, 4, 1, 1, 5, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1},
    {"plane_2x2_stride2_pad1", 2, 3, 2, 2, 4, 3, 3, {2, 2}, {1, 1}, {1, 1}, 1},
    {"plane_5x1_pad1", 2, 3, 5, 1, 2, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1},
    {"plane_2x2_dilated", 1, 2, 2, 2, 3, 3, 3, {1, 1}, {2, 2}, {2, 2}, 1},
    {"plane_1x1_groups2", 2, 4, 1, 1, 6, 3, 3, {1, 1}, {1, 1}, {1, 1}, 2},
};

Conv2dOptions options_of(const ConvCase& k) {
  return {k.stride, k.padding, k.dilation, k.groups};
}

/// The values of a float32 or float64 tensor, as double.
std::vector<double> values(const Tensor& t) {
  if (t.dtype() == f64) return t.to_vector<double>();
  const std::vector<float> v = t.to_vector<float>();
  return {v.begin(), v.end()};
}

Tensor randn(const Shape& shape, Generator& gen, DType t = f64) {
  return Tensor::normal(shape, 0.0, 1.0, gen, t);
}

/// The output height and width.
int64_t out_h(const ConvCase& k) {
  return (k.h + 2 * k.padding[0] - k.dilation[0] * (k.kh - 1) - 1) / k.stride[0] + 1;
}
int64_t out_w(const ConvCase& k) {
  return (k.w + 2 * k.padding[1] - k.dilation[1] * (k.kw - 1) - 1) / k.stride[1] + 1;
}

/// torch.nn.functional.conv2d by its definition, in double on the host.
std::vector<double> naive_conv(const ConvCase& k, const std::vector<double>& x,
                               const std::vector<double>& w, const std::vector<double>& b) {
  const int64_t oh = out_h(k), ow = out_w(k);
  const int64_t cin_g = k.c / k.groups, cout_g = k.c_out / k.groups;
  std::vector<double> y(static_cast<size_t>(k.n * k.c_out * oh * ow));
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t o = 0; o < k.c_out; ++o)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          double s = b.empty() ? 0.0 : b[static_cast<size_t>(o)];
          const int64_t group = o / cout_g;
          for (int64_t ci = 0; ci < cin_g; ++ci)
            for (int64_t i = 0; i < k.kh; ++i)
              for (int64_t j = 0; j < k.kw; ++j) {
                const int64_t iy = oy * k.stride[0] - k.padding[0] + i * k.dilation[0];
                const int64_t ix = ox * k.stride[1] - k.padding[1] + j * k.dilation[1];
                if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
                const int64_t c = group * cin_g + ci;
                s += x[static_cast<size_t>(((n * k.c + c) * k.h + iy) * k.w + ix)] *
                     w[static_cast<size_t>(((o * cin_g + ci) * k.kh + i) * k.kw + j)];
              }
          y[static_cast<size_t>(((n * k.c_out + o) * oh + oy) * ow + ox)] = s;
        }
  return y;
}

/// The gradients of naive_conv for an output gradient dy: dx, dW and db by their definition.
struct NaiveGrads {
  std::vector<double> dx, dw, db;
};
NaiveGrads naive_conv_backward(const ConvCase& k, const std::vector<double>& x,
                               const std::vector<double>& w, const std::vector<double>& dy) {
  const int64_t oh = out_h(k), ow = out_w(k);
  const int64_t cin_g = k.c / k.groups, cout_g = k.c_out / k.groups;
  NaiveGrads g{std::vector<double>(x.size()), std::vector<double>(w.size()),
               std::vector<double>(static_cast<size_t>(k.c_out))};
  for (int64_t n = 0; n < k.n; ++n)
    for (int64_t o = 0; o < k.c_out; ++o)
      for (int64_t oy = 0; oy < oh; ++oy)
        for (int64_t ox = 0; ox < ow; ++ox) {
          const double d = dy[static_cast<size_t>(((n * k.c_out + o) * oh + oy) * ow + ox)];
          g.db[static_cast<size_t>(o)] += d;
          const int64_t group = o / cout_g;
          for (int64_t ci = 0; ci < cin_g; ++ci)
            for (int64_t i = 0; i < k.kh; ++i)
              for (int64_t j = 0; j < k.kw; ++j) {
                const int64_t iy = oy * k.stride[0] - k.padding[0] + i * k.dilation[0];
                const int64_t ix = ox * k.stride[1] - k.padding[1] + j * k.dilation[1];
                if (iy < 0 || iy >= k.h || ix < 0 || ix >= k.w) continue;
                const int64_t c = group * cin_g + ci;
                const auto xi = static_cast<size_t>(((n * k.c + c) * k.h + iy) * k.w + ix);
                const auto wi = static_cast<size_t>(((o * cin_g + ci) * k.kh + i) * k.kw + j);
                g.dx[xi] += d * w[wi];
                g.dw[wi] += d * x[xi];
              }
        }
  return g;
}

void PrintTo(const ConvCase& k, std::ostream* os) {
  *os << k.name;
}

class Conv : public ::testing::TestWithParam<ConvCase> {};

std::string case_name(const ::testing::TestParamInfo<ConvCase>& info) {
  return info.param.name;
}

struct Inputs {
  Tensor x, w, b;
};

Inputs make_inputs(const ConvCase& k, uint64_t seed, DType t = f64) {
  Generator gen(seed);
  return {randn({k.n, k.c, k.h, k.w}, gen, t), randn({k.c_out, k.c / k.groups, k.kh, k.kw}, gen, t),
          randn({k.c_out}, gen, t)};
}

TEST_P(Conv, ForwardMatchesDirectConvolution) {
  const ConvCase& k = GetParam();
  for (DType t : {DType::Float64, DType::Float32})
    for (bool with_bias : {true, false}) {
      const Inputs in = make_inputs(k, 7, t);
      const Tensor b = with_bias ? in.b : Tensor();
      const Tensor y = conv2d(in.x, in.w, b, options_of(k));
      const std::vector<double> ref = naive_conv(k, values(in.x), values(in.w),
                                                 with_bias ? values(in.b) : std::vector<double>());
      ASSERT_EQ(y.shape(), (Shape{k.n, k.c_out, out_h(k), out_w(k)}));
      ASSERT_EQ(y.dtype(), t);
      const std::vector<double> got = values(y);
      const double tol = t == f64 ? 1e-12 : 1e-5;
      for (size_t i = 0; i < ref.size(); ++i)
        ASSERT_NEAR(got[i], ref[i], tol * (1 + std::abs(ref[i])))
            << "element " << i << (with_bias ? " with bias" : " without bias") << " "
            << dtype_name(t);
    }
}

TEST_P(Conv, GradcheckAllInputs) {
  const ConvCase& k = GetParam();
  const Inputs in = make_inputs(k, 11);
  const Conv2dOptions o = options_of(k);
  auto f = [o](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], o); };
  EXPECT_TRUE(gradcheck::check(f, {in.x, in.w, in.b}));
}

TEST_P(Conv, GradcheckOneInputAtATime) {
  const ConvCase& k = GetParam();
  const Inputs in = make_inputs(k, 13);
  const Conv2dOptions o = options_of(k);
  auto f = [o](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], o); };
  EXPECT_TRUE(gradcheck::check(f, {in.x, in.w, in.b}, {true, false, false})) << "x only";
  EXPECT_TRUE(gradcheck::check(f, {in.x, in.w, in.b}, {false, true, false})) << "weight only";
  EXPECT_TRUE(gradcheck::check(f, {in.x, in.w, in.b}, {false, false, true})) << "bias only";
  // Without a bias.
  auto g = [o](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], Tensor(), o); };
  EXPECT_TRUE(gradcheck::check(g, {in.x, in.w})) << "no bias";
}

// float32 takes the CPU's vector paths (AVX-512 builds: small-plane im2col and col2im, the
// cropped kernels) that the float64 gradient checks above do not reach.
TEST_P(Conv, Float32GradientsMatchDirectConvolution) {
  const ConvCase& k = GetParam();
  Inputs in = make_inputs(k, 17, DType::Float32);
  for (Tensor* t : {&in.x, &in.w, &in.b})
    t->requires_grad_(true);
  Tensor y = conv2d(in.x, in.w, in.b, options_of(k));
  Generator gen(18);
  const Tensor dy = randn(y.shape(), gen, DType::Float32);
  y.backward(dy);
  const NaiveGrads ref = naive_conv_backward(k, values(in.x), values(in.w), values(dy));
  auto expect_close = [](const char* what, const Tensor& got_t, const std::vector<double>& want) {
    const std::vector<double> got = values(got_t);
    ASSERT_EQ(got.size(), want.size()) << what;
    double scale = 1;
    for (double v : want)
      scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-5 * scale) << what << " element " << i;
  };
  expect_close("dx", in.x.grad(), ref.dx);
  expect_close("dW", in.w.grad(), ref.dw);
  expect_close("db", in.b.grad(), ref.db);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Conv, ::testing::ValuesIn(kCases), case_name);

// --- batches of several chunks ----------------------------------------------------------------

// conv2d cuts the batch into chunks (core/src/ops_conv.cpp, ConvGeometry::chunk). On the CPU: as
// many images as keep the columns [C·kH·kW, images·H_out·W_out] within 2^20 = 1,048,576 elements,
// and one image per chunk for planes of 256 pixels or more. These shapes need several chunks,
// most with a shorter last one (too large for a gradient check: the forward and the three
// gradients are checked against the direct convolution and its adjoint).
struct ChunkCase {
  ConvCase k;
  int64_t chunk;  // images per chunk by the rule above
};

const std::vector<ChunkCase> kChunkCases = {
    // 576 rows × 64 pixels = 36,864 per image: chunks of 28, 28 + 28 + 4.
    {{"chunks_28_28_4", 60, 64, 8, 8, 8, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1}, 28},
    // 1200 × 36 = 43,200: chunks of 24, 24 + 12, three groups.
    {{"chunks_groups_24_12", 36, 48, 6, 6, 6, 5, 5, {1, 1}, {2, 2}, {1, 1}, 3}, 24},
    // 288 × 49 = 14,112, stride 2: chunks of 74, 74 + 6.
    {{"chunks_stride2_74_6", 80, 32, 14, 14, 4, 3, 3, {2, 2}, {1, 1}, {1, 1}, 1}, 74},
    // 2520 × 24 = 60,480, dilated asymmetric 3×2 kernel: chunks of 17, 17 + 17 + 6.
    {{"chunks_dilated_17_17_6", 40, 420, 7, 9, 5, 3, 2, {2, 1}, {1, 0}, {2, 1}, 1}, 17},
    // 1×1, stride 1 (x transposed, no im2col): 256 × 25 = 6,400: chunks of 163, 163 + 1.
    {{"chunks_1x1_groups_163_1", 164, 256, 5, 5, 4, 1, 1, {1, 1}, {0, 0}, {1, 1}, 2}, 163},
    // A 16×16 plane (256 pixels): one image per chunk.
    {{"wide_plane_1_1_1", 3, 2, 16, 16, 3, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1}, 1},
};

void PrintTo(const ChunkCase& c, std::ostream* os) {
  *os << c.k.name;
}

class ConvChunks : public ::testing::TestWithParam<ChunkCase> {};

std::string chunk_case_name(const ::testing::TestParamInfo<ChunkCase>& info) {
  return info.param.k.name;
}

TEST_P(ConvChunks, ForwardAndGradientsMatchDirectConvolution) {
  const ConvCase& k = GetParam().k;
  Inputs in = make_inputs(k, 31);
  in.x.requires_grad_(true);
  in.w.requires_grad_(true);
  in.b.requires_grad_(true);
  Tensor y = conv2d(in.x, in.w, in.b, options_of(k));
  ASSERT_EQ(y.shape(), (Shape{k.n, k.c_out, out_h(k), out_w(k)}));
  Generator gen(32);
  const Tensor dy = randn(y.shape(), gen);
  y.backward(dy);
  const std::vector<double> x = values(in.x), w = values(in.w);
  const std::vector<double> y_ref = naive_conv(k, x, w, values(in.b));
  const NaiveGrads ref = naive_conv_backward(k, x, w, values(dy));
  // Sums of up to C·kH·kW (y, dx) or N·H_out·W_out (dW, db) products of values ~1: the
  // tolerance scales with the largest reference value.
  auto expect_close = [](const char* what, const std::vector<double>& got,
                         const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size()) << what;
    double scale = 1;
    for (double v : want)
      scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-12 * scale) << what << " element " << i;
  };
  expect_close("y", values(y), y_ref);
  expect_close("dx", values(in.x.grad()), ref.dx);
  expect_close("dw", values(in.w.grad()), ref.dw);
  expect_close("db", values(in.b.grad()), ref.db);
}

TEST_P(ConvChunks, OneGemmPerChunkAndGroup) {
  const ConvCase& k = GetParam().k;
  const int64_t chunks = (k.n + GetParam().chunk - 1) / GetParam().chunk;
  Inputs in = make_inputs(k, 33, DType::Float32);
  in.x.requires_grad_(true);
  in.w.requires_grad_(true);
  kernels::Counter& gemms = kernels::cpu_backend().stats().gemm_calls;
  const int64_t before = gemms;
  Tensor y = conv2d(in.x, in.w, in.b, options_of(k));
  EXPECT_EQ(gemms - before, chunks * k.groups) << "forward";
  const int64_t before_backward = gemms;
  sum(y).backward();
  EXPECT_EQ(gemms - before_backward, 2 * chunks * k.groups) << "dW and dx";
}

INSTANTIATE_TEST_SUITE_P(Shapes, ConvChunks, ::testing::ValuesIn(kChunkCases), chunk_case_name);

// --- taps that only read padding ----------------------------------------------------------

/// The FLOPs the CPU backend's GEMMs multiply during f().
template <typename F>
int64_t gemm_flops(F&& f) {
  const int64_t before = kernels::cpu_backend().stats().gemm_flops;
  f();
  return kernels::cpu_backend().stats().gemm_flops - before;
}

TEST(ConvCrop, TapsThatOnlyReadPaddingAreNotMultiplied) {
  Generator gen(21);
  // ResNet-18's layer4 at 28×28 inputs: 3×3, padding 1 on a 1×1 plane keeps the centre tap:
  // forward 2·C_out·N·C_in, and each gradient as much again.
  Tensor x = randn({4, 8, 1, 1}, gen, DType::Float32),
         w = randn({16, 8, 3, 3}, gen, DType::Float32);
  x.requires_grad_(true);
  w.requires_grad_(true);
  Tensor y;
  EXPECT_EQ(gemm_flops([&] { y = conv2d(x, w, Tensor(), {{1, 1}, {1, 1}}); }), 2 * 16 * 4 * 8);
  EXPECT_EQ(gemm_flops([&] { sum(y).backward(); }), 2 * 2 * 16 * 4 * 8);
  // The gradient of the dropped taps is exactly zero, of the centre tap dY summed against x.
  const std::vector<float> dw = w.grad().to_vector<float>(), xv = x.to_vector<float>();
  for (int64_t o = 0; o < 16; ++o)
    for (int64_t c = 0; c < 8; ++c)
      for (int64_t t = 0; t < 9; ++t) {
        double want = 0;
        for (int64_t n = 0; n < 4 && t == 4; ++n)
          want += xv[static_cast<size_t>(n * 8 + c)];
        ASSERT_NEAR(dw[static_cast<size_t>((o * 8 + c) * 9 + t)], want, 1e-5)
            << "out " << o << " in " << c << " tap " << t;
      }
  // Stride 2 from 2×2 to 1×1: taps (1..2, 1..2), 4 of 9.
  Tensor x2 = randn({2, 3, 2, 2}, gen, DType::Float32),
         w2 = randn({5, 3, 3, 3}, gen, DType::Float32);
  EXPECT_EQ(gemm_flops([&] { conv2d(x2, w2, Tensor(), {{2, 2}, {1, 1}}); }), 2 * 5 * 2 * (3 * 4));
  // Every tap reads the image somewhere (2×2, stride 1): nothing is cropped.
  EXPECT_EQ(gemm_flops([&] { conv2d(x2, w2, Tensor(), {{1, 1}, {1, 1}}); }), 2 * 5 * 8 * (3 * 9));
}

// --- the requires-grad rule -----------------------------------------------------------------

TEST(ConvFreeze, FrozenWeightSavesOnlyTheWeightAndGetsNoGradient) {
  const ConvCase k = kCases[1];
  Inputs in = make_inputs(k, 3);
  in.x.requires_grad_(true);
  const int64_t saved_before = autograd::stats().saved_bytes;
  autograd::reset_stats();
  Tensor y = conv2d(in.x, in.w, in.b, options_of(k));
  EXPECT_EQ(autograd::stats().nodes_recorded, 1);
  // The input gradient needs the weight; nothing needs the input itself.
  EXPECT_EQ(autograd::stats().saved_bytes - saved_before, static_cast<int64_t>(in.w.nbytes()));
  sum(y).backward();
  EXPECT_TRUE(in.x.grad().defined());
  EXPECT_FALSE(in.w.grad().defined());
  EXPECT_FALSE(in.b.grad().defined());
}

TEST(ConvFreeze, FrozenInputSavesOnlyTheInput) {
  const ConvCase k = kCases[1];
  Inputs in = make_inputs(k, 4);
  in.w.requires_grad_(true);
  const int64_t saved_before = autograd::stats().saved_bytes;
  Tensor y = conv2d(in.x, in.w, Tensor(), options_of(k));
  EXPECT_EQ(autograd::stats().saved_bytes - saved_before, static_cast<int64_t>(in.x.nbytes()));
  sum(y).backward();
  EXPECT_FALSE(in.x.grad().defined());
  EXPECT_TRUE(in.w.grad().defined());
}

TEST(ConvFreeze, AllFrozenRecordsNoNode) {
  const ConvCase k = kCases[2];
  const Inputs in = make_inputs(k, 5);
  autograd::reset_stats();
  const int64_t saved_before = autograd::stats().saved_bytes;
  Tensor y = conv2d(in.x, in.w, in.b, options_of(k));
  EXPECT_EQ(autograd::stats().nodes_recorded, 0);
  EXPECT_EQ(autograd::stats().saved_bytes, saved_before);
  EXPECT_FALSE(y.requires_grad());
}

TEST(ConvFreeze, NoGradModeRecordsNoNode) {
  const ConvCase k = kCases[2];
  Inputs in = make_inputs(k, 6);
  in.x.requires_grad_(true);
  in.w.requires_grad_(true);
  autograd::reset_stats();
  autograd::NoGradGuard guard;
  Tensor y = conv2d(in.x, in.w, in.b, options_of(k));
  EXPECT_EQ(autograd::stats().nodes_recorded, 0);
  EXPECT_FALSE(y.requires_grad());
}

TEST(ConvEdge, EmptyBatchGivesEmptyOutputAndZeroWeightGradient) {
  ConvCase k = kCases[1];
  k.n = 0;
  Inputs in = make_inputs(k, 8);
  in.w.requires_grad_(true);
  in.b.requires_grad_(true);
  Tensor y = conv2d(in.x, in.w, in.b, options_of(k));
  EXPECT_EQ(y.shape(), (Shape{0, 4, 7, 6}));
  sum(y).backward();
  for (double v : in.w.grad().to_vector<double>())
    EXPECT_EQ(v, 0.0);
  for (double v : in.b.grad().to_vector<double>())
    EXPECT_EQ(v, 0.0);
}

// --- the same bits at any thread count ----------------------------------------------------

/// Output, dx, dW and db of a float32 conv at `threads` threads, concatenated.
std::vector<float> conv_run(int threads, const ConvCase& k) {
  const int saved = num_threads();
  set_num_threads(threads);
  Inputs in = make_inputs(k, 21, DType::Float32);
  in.x.requires_grad_(true);
  in.w.requires_grad_(true);
  in.b.requires_grad_(true);
  Tensor y = conv2d(in.x, in.w, in.b, options_of(k));
  Generator gen(22);
  y.backward(Tensor::normal(y.shape(), 0.0, 1.0, gen, DType::Float32));
  std::vector<float> all = y.to_vector<float>();
  for (const Tensor& t : {in.x.grad(), in.w.grad(), in.b.grad()}) {
    const std::vector<float> v = t.to_vector<float>();
    all.insert(all.end(), v.begin(), v.end());
  }
  set_num_threads(saved);
  return all;
}

class ConvThreads : public ::testing::TestWithParam<int> {};

TEST_P(ConvThreads, BitwiseSameAsOneThread) {
  // Large enough that the GEMMs, im2col/col2im and the transposes are split into several tiles;
  // the last three take several chunks (see kChunkCases), "wide" one image per chunk.
  const std::vector<ConvCase> cases = {
      {"wide", 4, 16, 28, 28, 32, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1},
      {"many_channels", 2, 64, 14, 14, 64, 3, 3, {2, 2}, {1, 1}, {1, 1}, 2},
      {"pointwise", 2, 64, 7, 7, 128, 1, 1, {1, 1}, {0, 0}, {1, 1}, 1},
      {"batched", 32, 128, 4, 4, 128, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1},
      {"batched_2x2", 32, 256, 2, 2, 256, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1},
      {"chunks_28_28_4", 60, 64, 8, 8, 32, 3, 3, {1, 1}, {1, 1}, {1, 1}, 1},
      {"chunks_groups_24_12", 36, 48, 6, 6, 12, 5, 5, {1, 1}, {2, 2}, {1, 1}, 3},
      {"chunks_1x1_163_1", 164, 256, 5, 5, 64, 1, 1, {1, 1}, {0, 0}, {1, 1}, 2},
  };
  for (const ConvCase& k : cases) {
    const std::vector<float> one = conv_run(1, k), many = conv_run(GetParam(), k);
    ASSERT_EQ(one.size(), many.size());
    EXPECT_EQ(0, std::memcmp(one.data(), many.data(), one.size() * sizeof(float))) << k.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Threads, ConvThreads, ::testing::Values(2, 3, 7, 16));

// --- errors -------------------------------------------------------------------------------

TEST(ConvErrors, BadShapesAndOptionsThrowTypedErrors) {
  Generator gen(9);
  const Tensor x = randn({2, 4, 6, 6}, gen), w = randn({6, 4, 3, 3}, gen), b = randn({6}, gen);
  auto opts = [](Pair s, Pair p, Pair d, int64_t g) { return Conv2dOptions{s, p, d, g}; };
  EXPECT_THROW(conv2d(randn({4, 6, 6}, gen), w), ShapeError);     // rank 3 input
  EXPECT_THROW(conv2d(x, randn({6, 4, 3}, gen)), ShapeError);     // rank 3 weight
  EXPECT_THROW(conv2d(x, randn({6, 3, 3, 3}, gen)), ShapeError);  // channel mismatch
  EXPECT_THROW(conv2d(x, w, randn({5}, gen)), ShapeError);        // bias size
  EXPECT_THROW(conv2d(x, w, randn({1, 6}, gen)), ShapeError);     // bias rank
  EXPECT_THROW(conv2d(x, randn({6, 4, 7, 7}, gen)), ShapeError);  // output < 1
  EXPECT_THROW(conv2d(x, randn({6, 2, 3, 3}, gen), Tensor(), opts({1, 1}, {0, 0}, {1, 1}, 3)),
               ShapeError);  // 4 input channels in 3 groups
  EXPECT_THROW(conv2d(x, randn({5, 2, 3, 3}, gen), Tensor(), opts({1, 1}, {0, 0}, {1, 1}, 2)),
               ShapeError);  // 5 output channels in 2 groups
  EXPECT_THROW(conv2d(x, w, b, opts({1, 1}, {0, 0}, {3, 3}, 1)), ShapeError);  // dilated: 7 > 6
  EXPECT_THROW(conv2d(x, w, b, opts({0, 1}, {0, 0}, {1, 1}, 1)), ValueError);
  EXPECT_THROW(conv2d(x, w, b, opts({1, -1}, {0, 0}, {1, 1}, 1)), ValueError);
  EXPECT_THROW(conv2d(x, w, b, opts({1, 1}, {0, 0}, {0, 1}, 1)), ValueError);
  EXPECT_THROW(conv2d(x, w, b, opts({1, 1}, {-1, 0}, {1, 1}, 1)), ValueError);
  EXPECT_THROW(conv2d(x, w, b, opts({1, 1}, {0, 0}, {1, 1}, 0)), ValueError);
  EXPECT_THROW(conv2d(x, Tensor::zeros({6, 4, 3, 3}, DType::Float32)), DTypeError);
  EXPECT_THROW(conv2d(x, w, Tensor::zeros({6}, DType::Float32)), DTypeError);
  EXPECT_THROW(
      conv2d(Tensor::zeros({2, 4, 6, 6}, DType::Int64), Tensor::zeros({6, 4, 3, 3}, DType::Int64)),
      DTypeError);
  // The message names both shapes.
  try {
    conv2d(x, randn({6, 3, 3, 3}, gen));
    FAIL() << "no throw";
  } catch (const ShapeError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("conv2d"), std::string::npos) << what;
    EXPECT_NE(what.find("[2, 4, 6, 6]"), std::string::npos) << what;
    EXPECT_NE(what.find("[6, 3, 3, 3]"), std::string::npos) << what;
  }
  // Valid edge: a kernel exactly as large as the padded image gives a 1×1 output.
  EXPECT_EQ(conv2d(x, randn({6, 4, 8, 8}, gen), Tensor(), opts({1, 1}, {1, 1}, {1, 1}, 1)).shape(),
            (Shape{2, 6, 1, 1}));
}

}  // namespace
