// The CPU backend at 1, 2, 3, 7 and 16 threads, on sizes that leave remainders in every split:
// every element computed exactly once, results bitwise the same at every thread count (GEMM,
// optimizers, reductions, batch norm, max pooling, batched im2col/col2im, transpose_outer,
// training), and correct when several user threads call the engine at once.
#include <gtest/gtest.h>
#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define CLARENA_FOREIGN_MALLOC 1  // clang's sanitizers replace malloc
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CLARENA_FOREIGN_MALLOC 1  // GCC's likewise
#endif
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "clarena/clarena.h"
#include "clarena/kernels/backend.h"

namespace clarena {
namespace {

/// Runs f with the CPU backend at `threads` threads, then restores the previous count.
template <typename F>
auto at_threads(int threads, F&& f) {
  const int saved = num_threads();
  set_num_threads(threads);
  struct Restore {
    int n;
    ~Restore() { set_num_threads(n); }
  } restore{saved};
  return f();
}

class AtThreads : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(Threads, AtThreads, ::testing::Values(1, 2, 3, 7, 16));

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct GemmCase {
  int64_t m, n, k;
};
// Each product is above the split threshold unless tiny, and no extent is a multiple of a tile:
// 257 and 65,537 columns, 127 rows, a hidden layer of 100 at batch 64 (784→256→100). The second
// line crosses each block of the AVX-512 kernel (sgemm.cpp: 8×32 micro-tiles, k blocks of ≤ 384,
// 1024-row and 2048-column blocks) by one, from its smallest product (16×32×8) up.
const GemmCase kGemmCases[] = {
    {64, 257, 300}, {127, 7, 4099}, {3, 65537, 17}, {257, 257, 257}, {64, 100, 256}, {64, 256, 784},
    {1, 7, 1},      {7, 17, 1},     {1, 65537, 7},  {127, 3, 64},    {16, 32, 8},    {17, 33, 9},
    {1025, 40, 20}, {20, 2049, 20}, {17, 65, 385},  {31, 100, 769},  {64, 300, 576}};

/// C = alpha op(A) op(B) + beta C0 through the backend, on an output first filled with NaN (or
/// C0), so an element that is never written shows.
std::vector<float> backend_gemm(bool ta, bool tb, const GemmCase& s, const std::vector<float>& a,
                                const std::vector<float>& b, double beta,
                                const std::vector<float>& c0) {
  std::vector<float> c = beta == 0 ? std::vector<float>(static_cast<size_t>(s.m * s.n),
                                                        std::numeric_limits<float>::quiet_NaN())
                                   : c0;
  kernels::cpu_backend().gemm(DType::Float32, ta, tb, s.m, s.n, s.k, 0.75, a.data(), b.data(), beta,
                              c.data());
  return c;
}

TEST_P(AtThreads, GemmWritesEveryElementOnceAndMatchesOneThreadBitwise) {
  Generator gen(11);
  for (const GemmCase& s : kGemmCases)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (double beta : {0.0, 0.5}) {
          const auto a = Tensor::uniform({s.m * s.k}, -1, 1, gen).to_vector<float>();
          const auto b = Tensor::uniform({s.k * s.n}, -1, 1, gen).to_vector<float>();
          const auto c0 = Tensor::uniform({s.m * s.n}, -1, 1, gen).to_vector<float>();
          const auto c =
              at_threads(GetParam(), [&] { return backend_gemm(ta, tb, s, a, b, beta, c0); });
          const auto c1 = at_threads(1, [&] { return backend_gemm(ta, tb, s, a, b, beta, c0); });
          const std::string where = "m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                                    " k=" + std::to_string(s.k) + " ta=" + std::to_string(ta) +
                                    " tb=" + std::to_string(tb) + " beta=" + std::to_string(beta);
          ASSERT_TRUE(same_bits(c, c1)) << where;
          if (GetParam() != 1) continue;  // the same bits as this one, checked below
          // Against a double reference, within the worst-case float bound k·u·Σ|a||b|.
          for (int64_t i = 0; i < s.m; ++i)
            for (int64_t j = 0; j < s.n; ++j) {
              double ref = 0, abs_sum = 0;
              for (int64_t l = 0; l < s.k; ++l) {
                const double p = static_cast<double>(a[ta ? l * s.m + i : i * s.k + l]) *
                                 b[tb ? j * s.k + l : l * s.n + j];
                ref += p;
                abs_sum += std::abs(p);
              }
              ref = 0.75 * ref + beta * c0[i * s.n + j];
              const double tol = (s.k + 2) * 1.2e-7 * (abs_sum + std::abs(c0[i * s.n + j])) + 1e-30;
              ASSERT_NEAR(c[i * s.n + j], ref, tol) << where << " at (" << i << ", " << j << ")";
            }
        }
}

const int64_t kVectorSizes[] = {1, 7, 17, 257, 65537, (1 << 17) + 37};

/// Three optimizer steps on one parameter of n elements; returns the parameter's values.
std::vector<float> optimize(int64_t n, bool adam) {
  Generator gen(static_cast<uint64_t>(n));
  Tensor p = Tensor::uniform({n}, -1, 1, gen);
  p.requires_grad_(true);
  std::unique_ptr<optim::Optimizer> opt;
  if (adam)
    opt = std::make_unique<optim::Adam>(
        std::vector<Tensor>{p},
        optim::AdamOptions{.lr = 0.01, .beta2 = 0.9999, .weight_decay = 0.1});
  else
    opt = std::make_unique<optim::SGD>(
        std::vector<Tensor>{p},
        optim::SGDOptions{.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
  for (int step = 0; step < 3; ++step) {
    p.set_grad(Tensor::uniform({n}, -1, 1, gen));
    opt->step();
  }
  return p.to_vector<float>();
}

/// The same three steps element by element in double, torch's formulas.
std::vector<double> optimize_reference(int64_t n, bool adam) {
  Generator gen(static_cast<uint64_t>(n));
  const auto p0 = Tensor::uniform({n}, -1, 1, gen).to_vector<float>();
  std::vector<double> p(p0.begin(), p0.end()), m(p.size()), v(p.size());
  for (int step = 1; step <= 3; ++step) {
    const auto g = Tensor::uniform({n}, -1, 1, gen).to_vector<float>();
    for (size_t i = 0; i < p.size(); ++i) {
      if (adam) {
        const double d = g[i] + 0.1 * p[i];
        m[i] = 0.9 * m[i] + 0.1 * d;
        v[i] = 0.9999 * v[i] + (1 - 0.9999) * d * d;
        const double bc1 = 1 - std::pow(0.9, step), bc2 = 1 - std::pow(0.9999, step);
        p[i] -= 0.01 / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + 1e-8);
      } else {
        const double d = g[i] + 0.01 * p[i];
        m[i] = step == 1 ? d : 0.9 * m[i] + (1 - 0.1) * d;
        p[i] -= 0.1 * m[i];
      }
    }
  }
  return p;
}

TEST_P(AtThreads, OptimizersUpdateEveryElementAndMatchOneThreadBitwise) {
  for (bool adam : {false, true})
    for (int64_t n : kVectorSizes) {
      const auto p = at_threads(GetParam(), [&] { return optimize(n, adam); });
      const auto p1 = at_threads(1, [&] { return optimize(n, adam); });
      ASSERT_TRUE(same_bits(p, p1)) << (adam ? "adam" : "sgd") << " n=" << n;
      if (GetParam() != 1) continue;  // the same bits as this one, checked below
      const auto ref = optimize_reference(n, adam);
      for (int64_t i = 0; i < n; ++i)
        ASSERT_NEAR(p[i], ref[i], 1e-5 * (1 + std::abs(ref[i])))
            << (adam ? "adam" : "sgd") << " n=" << n << " element " << i;
    }
}

TEST_P(AtThreads, ReductionsAndSoftmaxMatchOneThreadBitwise) {
  struct Shape2 {
    int64_t rows, cols;
  };
  for (auto [rows, cols] : {Shape2{127, 257}, Shape2{1, 65537}, Shape2{65537, 7}, Shape2{3, 1}}) {
    auto compute = [&, rows = rows, cols = cols] {
      Generator gen(3);
      Tensor x = Tensor::uniform({rows, cols}, -4, 4, gen);
      Tensor labels = Tensor::zeros({rows}, DType::Int64);
      std::vector<float> out;
      for (const Tensor& t :
           {sum(x), mean(x), sum(x, 0), mean(x, 1), log_softmax(x), cross_entropy(x, labels)}) {
        const auto v = t.to_vector<float>();
        out.insert(out.end(), v.begin(), v.end());
      }
      return out;
    };
    const auto r = at_threads(GetParam(), compute);
    ASSERT_TRUE(same_bits(r, at_threads(1, compute))) << rows << "x" << cols;
    // Spot-check the whole sum against double.
    Generator gen(3);
    const auto x = Tensor::uniform({rows, cols}, -4, 4, gen).to_vector<float>();
    double ref = 0;
    for (float v : x)
      ref += v;
    EXPECT_NEAR(r[0], ref, 1e-6 * static_cast<double>(x.size()) * 4) << rows << "x" << cols;
  }
}

/// The batched im2col / col2im of `images` images into columns of leading dimension ld > images ·
/// plane, at `threads` threads, against one image per call at one thread: the same bits, image
/// n's block at column n · plane, the columns past images · plane untouched, every image element
/// written by col2im.
struct Im2colCase {
  int64_t images, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw;
};

void check_batched_im2col(int threads, const Im2colCase& g) {
  kernels::Backend& be = kernels::cpu_backend();
  const DType t = DType::Float32;
  const int64_t oh = (g.h + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  const int64_t ow = (g.w + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  const int64_t plane = oh * ow, rows = g.c * g.kh * g.kw, image = g.c * g.h * g.w;
  const int64_t ld = g.images * plane + 3;
  const std::string where = "images=" + std::to_string(g.images) + " c=" + std::to_string(g.c) +
                            " h=" + std::to_string(g.h) + " k=" + std::to_string(g.kh);
  Generator gen(static_cast<uint64_t>(g.images * 1000 + g.c));
  const auto x = Tensor::uniform({g.images * image}, -1, 1, gen).to_vector<float>();
  const auto cols_in = Tensor::uniform({rows * ld}, -1, 1, gen).to_vector<float>();
  const float nan = std::numeric_limits<float>::quiet_NaN();

  std::vector<float> cols(static_cast<size_t>(rows * ld), nan);
  at_threads(threads, [&] {
    be.im2col(t, g.images, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, x.data(),
              ld, cols.data());
    return 0;
  });
  std::vector<float> dx(static_cast<size_t>(g.images * image), nan);
  at_threads(threads, [&] {
    be.col2im(t, g.images, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw,
              cols_in.data(), ld, dx.data());
    return 0;
  });
  for (int64_t n = 0; n < g.images; ++n) {
    std::vector<float> one(static_cast<size_t>(rows * plane)), block(one.size());
    std::vector<float> one_image(static_cast<size_t>(image));
    for (int64_t r = 0; r < rows; ++r)
      std::copy(cols_in.begin() + r * ld + n * plane, cols_in.begin() + r * ld + (n + 1) * plane,
                block.begin() + r * plane);
    at_threads(1, [&] {
      be.im2col(t, 1, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw,
                x.data() + n * image, plane, one.data());
      be.col2im(t, 1, g.c, g.h, g.w, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, block.data(),
                plane, one_image.data());
      return 0;
    });
    for (int64_t r = 0; r < rows; ++r)
      ASSERT_EQ(0, std::memcmp(cols.data() + r * ld + n * plane, one.data() + r * plane,
                               static_cast<size_t>(plane) * sizeof(float)))
          << where << " im2col image " << n << " row " << r;
    ASSERT_TRUE(same_bits(std::vector<float>(dx.begin() + n * image, dx.begin() + (n + 1) * image),
                          one_image))
        << where << " col2im image " << n;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t col = g.images * plane; col < ld; ++col)
      ASSERT_TRUE(std::isnan(cols[static_cast<size_t>(r * ld + col)])) << where << " row " << r;
  // Against the definition: entry (c, i, j; n, y, x) is pixel (y·sh − ph + i·dh, x·sw − pw +
  // j·dw) of channel c of image n, or 0 in the padding; col2im adds each entry back there, in
  // the order (i, j, y, x), so in float the sums are these very ones.
  std::vector<float> dx_ref(static_cast<size_t>(g.images * image), 0.0f);
  for (int64_t c = 0; c < g.c; ++c)
    for (int64_t i = 0; i < g.kh; ++i)
      for (int64_t j = 0; j < g.kw; ++j)
        for (int64_t n = 0; n < g.images; ++n)
          for (int64_t y = 0; y < oh; ++y)
            for (int64_t xo = 0; xo < ow; ++xo) {
              const int64_t iy = y * g.sh - g.ph + i * g.dh, ix = xo * g.sw - g.pw + j * g.dw;
              const bool inside = iy >= 0 && iy < g.h && ix >= 0 && ix < g.w;
              const size_t pixel = static_cast<size_t>(n * image + (c * g.h + iy) * g.w + ix);
              const size_t entry =
                  static_cast<size_t>(((c * g.kh + i) * g.kw + j) * ld + n * plane + y * ow + xo);
              ASSERT_EQ(cols[entry], inside ? x[pixel] : 0.0f)
                  << where << " im2col entry (" << c << ", " << i << ", " << j << "; " << n << ", "
                  << y << ", " << xo << ")";
              if (inside) dx_ref[pixel] += cols_in[entry];
            }
  ASSERT_TRUE(same_bits(dx, dx_ref)) << where << " col2im against the definition";
}

TEST_P(AtThreads, BatchedIm2colCol2imMatchOneImageAtATime) {
  // Several tiles of (image, channel) pairs (64 channels of 14×14), stride, padding, dilation,
  // asymmetric options, 1×1 with stride 2 (image elements no entry reaches), a 2×2 plane (all
  // through the tap tables on AVX-512 builds: output rows under 16 pixels), an 18-wide one (rows).
  for (const Im2colCase& g : {Im2colCase{4, 64, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1},
                              Im2colCase{3, 5, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1},
                              Im2colCase{2, 3, 7, 5, 2, 3, 1, 2, 0, 1, 2, 1},
                              Im2colCase{5, 4, 9, 8, 1, 1, 2, 2, 0, 0, 1, 1},
                              Im2colCase{7, 33, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1},
                              Im2colCase{1, 2, 3, 3, 3, 3, 1, 1, 0, 0, 1, 1},
                              Im2colCase{3, 7, 20, 18, 3, 3, 1, 1, 1, 1, 1, 1}})
    check_batched_im2col(GetParam(), g);
}

TEST_P(AtThreads, TransposeOuterMovesEveryBlock) {
  struct Dims {
    int64_t a, b, inner;
  };
  for (const Dims& d : {Dims{3, 5, 7}, Dims{1, 1, 1}, Dims{64, 32, 49}, Dims{257, 3, 1},
                        Dims{2, 300, 4}, Dims{1, 9, 16}}) {
    const std::string where =
        std::to_string(d.a) + "x" + std::to_string(d.b) + "x" + std::to_string(d.inner);
    Generator gen(static_cast<uint64_t>(d.a * d.b));
    const auto src = Tensor::uniform({d.a * d.b * d.inner}, -1, 1, gen).to_vector<float>();
    std::vector<float> dst(src.size(), std::numeric_limits<float>::quiet_NaN());
    at_threads(GetParam(), [&] {
      kernels::cpu_backend().transpose_outer(DType::Float32, d.a, d.b, d.inner, src.data(),
                                             dst.data());
      return 0;
    });
    for (int64_t i = 0; i < d.a; ++i)
      for (int64_t j = 0; j < d.b; ++j)
        for (int64_t p = 0; p < d.inner; ++p)
          ASSERT_EQ(dst[static_cast<size_t>((j * d.a + i) * d.inner + p)],
                    src[static_cast<size_t>((i * d.b + j) * d.inner + p)])
              << where << " at (" << i << ", " << j << ", " << p << ")";
  }
  // int64 and float64 move as well (the kernel only copies).
  const std::vector<int64_t> isrc = {1, 2, 3, 4, 5, 6};
  std::vector<int64_t> idst(6);
  kernels::cpu_backend().transpose_outer(DType::Int64, 2, 3, 1, isrc.data(), idst.data());
  EXPECT_EQ(idst, (std::vector<int64_t>{1, 4, 2, 5, 3, 6}));
  const std::vector<double> dsrc = {1, 2, 3, 4, 5, 6};
  std::vector<double> ddst(6);
  kernels::cpu_backend().transpose_outer(DType::Float64, 3, 1, 2, dsrc.data(), ddst.data());
  EXPECT_EQ(ddst, dsrc);  // b = 1: the same order
}

/// Batch norm over [rows, cols, inner] through the backend at `threads` threads: training
/// forward (y, saved statistics, running statistics), eval, backward (dx, dgamma, dbeta), all
/// outputs first filled with NaN, in one vector.
std::vector<float> batch_norm_outputs(int threads, int64_t rows, int64_t cols, int64_t inner) {
  kernels::Backend& be = kernels::cpu_backend();
  const DType t = DType::Float32;
  const int64_t n = rows * cols * inner;
  Generator gen(static_cast<uint64_t>(n + cols));
  auto x = Tensor::uniform({n}, -1, 1, gen).to_vector<float>();
  for (float& v : x)
    v = 100 + v;  // a large mean: the shifted sums must keep the spread's digits
  const auto dy = Tensor::uniform({n}, -1, 1, gen).to_vector<float>();
  const auto gamma = Tensor::uniform({cols}, 0.5, 1.5, gen).to_vector<float>();
  const auto beta = Tensor::uniform({cols}, -1, 1, gen).to_vector<float>();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> y(n, nan), y_eval(n, nan), dx(n, nan), mean(cols, nan), invstd(cols, nan),
      dgamma(cols, nan), dbeta(cols, nan), running_mean(cols, 0.5f), running_var(cols, 2.0f);
  at_threads(threads, [&] {
    be.batch_norm_train(t, rows, cols, inner, x.data(), gamma.data(), beta.data(), 1e-5, 0.1,
                        running_mean.data(), running_var.data(), y.data(), mean.data(),
                        invstd.data());
    be.batch_norm_eval(t, rows, cols, inner, x.data(), gamma.data(), beta.data(),
                       running_mean.data(), running_var.data(), 1e-5, y_eval.data());
    be.batch_norm_backward(t, rows, cols, inner, x.data(), gamma.data(), mean.data(), invstd.data(),
                           dy.data(), dx.data(), dgamma.data(), dbeta.data());
    return 0;
  });
  std::vector<float> out;
  for (const auto* v :
       {&y, &y_eval, &dx, &mean, &invstd, &dgamma, &dbeta, &running_mean, &running_var})
    out.insert(out.end(), v->begin(), v->end());
  return out;
}

TEST_P(AtThreads, BatchNormMatchesOneThreadBitwiseAndDouble) {
  struct Dims {
    int64_t rows, cols, inner;
  };
  // BatchNorm1d (inner 1: one tile of many columns, or several past 1024), BatchNorm2d planes of
  // 255 and 1369 values (past the 1024 accumulator slots: folded), one row, one column.
  for (const Dims& d : {Dims{257, 7, 1}, Dims{65537, 3, 1}, Dims{3, 1025, 1}, Dims{7, 3, 255},
                        Dims{2, 5, 1369}, Dims{1, 2, 257}, Dims{17, 1, 16}}) {
    const std::string where =
        std::to_string(d.rows) + "x" + std::to_string(d.cols) + "x" + std::to_string(d.inner);
    const auto got = batch_norm_outputs(GetParam(), d.rows, d.cols, d.inner);
    ASSERT_TRUE(same_bits(got, batch_norm_outputs(1, d.rows, d.cols, d.inner))) << where;
    if (GetParam() != 1) continue;  // the same bits as this one, checked below
    // Against double: y and dx by the definition, from the same inputs.
    const int64_t n = d.rows * d.cols * d.inner, count = d.rows * d.inner;
    Generator gen(static_cast<uint64_t>(n + d.cols));
    auto x = Tensor::uniform({n}, -1, 1, gen).to_vector<float>();
    for (float& v : x)
      v = 100 + v;
    const auto dy = Tensor::uniform({n}, -1, 1, gen).to_vector<float>();
    const auto gamma = Tensor::uniform({d.cols}, 0.5, 1.5, gen).to_vector<float>();
    const auto beta = Tensor::uniform({d.cols}, -1, 1, gen).to_vector<float>();
    for (int64_t c = 0; c < d.cols; ++c) {
      auto at = [&](int64_t k) {
        const int64_t r = k / d.inner, i = k % d.inner;
        return static_cast<size_t>((r * d.cols + c) * d.inner + i);
      };
      double mean = 0, var = 0, sdy = 0, sdyx = 0;
      for (int64_t k = 0; k < count; ++k)
        mean += x[at(k)];
      mean /= static_cast<double>(count);
      for (int64_t k = 0; k < count; ++k)
        var += (x[at(k)] - mean) * (x[at(k)] - mean);
      var /= static_cast<double>(count);
      const double invstd = 1 / std::sqrt(var + 1e-5);
      // The backward takes the statistics as saved, in float.
      const size_t saved = static_cast<size_t>(3 * n + c);
      const double mean_f = got[saved], invstd_f = got[saved + static_cast<size_t>(d.cols)];
      ASSERT_NEAR(mean_f, mean, 1e-5 * std::abs(mean)) << where << " mean, column " << c;
      ASSERT_NEAR(invstd_f, invstd, 1e-5 * invstd) << where << " invstd, column " << c;
      for (int64_t k = 0; k < count; ++k) {
        sdy += dy[at(k)];
        sdyx += dy[at(k)] * (x[at(k)] - mean_f) * invstd_f;
      }
      for (int64_t k = 0; k < count; k += std::max<int64_t>(1, count / 97)) {
        const double xhat = (x[at(k)] - mean) * invstd;
        ASSERT_NEAR(got[at(k)], xhat * gamma[c] + beta[c], 2e-4) << where << " y, column " << c;
        const double xhat_f = (x[at(k)] - mean_f) * invstd_f;
        const double dx = gamma[c] * invstd_f / static_cast<double>(count) *
                          (static_cast<double>(count) * dy[at(k)] - sdy - xhat_f * sdyx);
        ASSERT_NEAR(got[static_cast<size_t>(2 * n) + at(k)], dx, 1e-3 * (1 + std::abs(dx)))
            << where << " dx, column " << c;
      }
      const size_t stats = static_cast<size_t>(3 * n + 2 * d.cols);
      EXPECT_NEAR(got[stats + c], sdyx, 1e-4 * (1 + std::abs(sdyx))) << where << " dgamma";
      EXPECT_NEAR(got[stats + d.cols + c], sdy, 1e-4 * (1 + std::abs(sdy))) << where << " dbeta";
    }
  }
}

/// Max pooling through the backend at `threads` threads, with and without indices; rows wider
/// than one 16-lane vector, ties and NaNs planted.
TEST_P(AtThreads, MaxPoolMatchesTheDefinition) {
  struct Case {
    int64_t planes, h, w, kh, kw, sh, sw, ph, pw;
  };
  for (const Case& g : {Case{3, 13, 70, 3, 3, 2, 2, 1, 1}, Case{5, 28, 28, 2, 2, 2, 2, 0, 0},
                        Case{257, 7, 7, 3, 3, 2, 2, 1, 1}, Case{2, 9, 40, 3, 2, 1, 1, 1, 0},
                        Case{1, 4, 37, 2, 3, 3, 1, 0, 1}}) {
    kernels::Pool2dShape s;
    s.planes = g.planes, s.height = g.h, s.width = g.w, s.kernel_h = g.kh, s.kernel_w = g.kw;
    s.stride_h = g.sh, s.stride_w = g.sw, s.pad_h = g.ph, s.pad_w = g.pw;
    s.out_h = (g.h + 2 * g.ph - g.kh) / g.sh + 1;
    s.out_w = (g.w + 2 * g.pw - g.kw) / g.sw + 1;
    const std::string where = std::to_string(g.planes) + "x" + std::to_string(g.h) + "x" +
                              std::to_string(g.w) + " k" + std::to_string(g.kh);
    const int64_t in = g.planes * g.h * g.w, out = g.planes * s.out_h * s.out_w;
    Generator gen(static_cast<uint64_t>(in));
    auto x = Tensor::uniform({in}, -1, 1, gen).to_vector<float>();
    for (int64_t i = 0; i < in; i += 5)
      x[static_cast<size_t>(i)] = 0.25f;  // ties
    for (int64_t i = 3; i < in; i += 97)
      x[static_cast<size_t>(i)] = std::numeric_limits<float>::quiet_NaN();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> y(out, nan), y_alone(out, nan);
    std::vector<int64_t> idx(out, -7);
    at_threads(GetParam(), [&] {
      kernels::cpu_backend().max_pool2d_forward(DType::Float32, s, x.data(), y.data(), idx.data());
      kernels::cpu_backend().max_pool2d_forward(DType::Float32, s, x.data(), y_alone.data(),
                                                nullptr);
      return 0;
    });
    ASSERT_TRUE(same_bits(y, y_alone)) << where;
    for (int64_t p = 0; p < g.planes; ++p)
      for (int64_t oh = 0; oh < s.out_h; ++oh)
        for (int64_t ow = 0; ow < s.out_w; ++ow) {
          // torch's loop: the first in-bounds element, then v > best or NaN takes over.
          const int64_t h0 = std::max<int64_t>(oh * g.sh - g.ph, 0);
          const int64_t w0 = std::max<int64_t>(ow * g.sw - g.pw, 0);
          float best = -std::numeric_limits<float>::infinity();
          int64_t arg = h0 * g.w + w0;
          for (int64_t h = oh * g.sh - g.ph; h < oh * g.sh - g.ph + g.kh; ++h)
            for (int64_t w = ow * g.sw - g.pw; w < ow * g.sw - g.pw + g.kw; ++w) {
              if (h < 0 || h >= g.h || w < 0 || w >= g.w) continue;
              const float v = x[static_cast<size_t>((p * g.h + h) * g.w + w)];
              if (v > best || std::isnan(v)) best = v, arg = h * g.w + w;
            }
          const size_t o = static_cast<size_t>((p * s.out_h + oh) * s.out_w + ow);
          ASSERT_EQ(idx[o], arg) << where << " output " << o;
          ASSERT_TRUE(best == y[o] || (std::isnan(best) && std::isnan(y[o])))
              << where << " output " << o;
        }
  }
}

/// A short training run of an MLP 784→256→100 with a 10-way head; returns every parameter's
/// bytes in order.
std::vector<float> train_mlp(int64_t batch, bool adam) {
  Generator gen(2026);
  nn::MLP backbone(784, {256, 100}, gen, {.batch_norm = batch > 1});
  nn::Linear head(100, 10, gen);
  std::vector<Tensor> params = backbone.parameters();
  for (const Tensor& p : head.parameters())
    params.push_back(p);
  std::unique_ptr<optim::Optimizer> opt;
  if (adam)
    opt = std::make_unique<optim::Adam>(params, optim::AdamOptions{.lr = 1e-3});
  else
    opt = std::make_unique<optim::SGD>(params, optim::SGDOptions{.lr = 0.05, .momentum = 0.9});
  for (int step = 0; step < 4; ++step) {
    Tensor x = Tensor::uniform({batch, 784}, 0, 1, gen);
    std::vector<int64_t> y(static_cast<size_t>(batch));
    for (int64_t i = 0; i < batch; ++i)
      y[static_cast<size_t>(i)] = static_cast<int64_t>(gen.next_u64() % 10);
    Tensor loss = cross_entropy(head(backbone(x)), Tensor::from_vector(y, {batch}));
    opt->zero_grad();
    loss.backward();
    opt->step();
  }
  std::vector<float> bytes;
  for (const Tensor& p : params) {
    const auto v = p.to_vector<float>();
    bytes.insert(bytes.end(), v.begin(), v.end());
  }
  for (const auto& [name, buffer] : backbone.named_buffers()) {
    const auto v = buffer.to_vector<float>();
    bytes.insert(bytes.end(), v.begin(), v.end());
  }
  return bytes;
}

TEST_P(AtThreads, TrainingGivesByteIdenticalParameters) {
  for (int64_t batch : {1, 3, 64, 127})
    for (bool adam : {false, true}) {
      const auto p = at_threads(GetParam(), [&] { return train_mlp(batch, adam); });
      const auto p1 = at_threads(1, [&] { return train_mlp(batch, adam); });
      ASSERT_TRUE(same_bits(p, p1)) << "batch " << batch << (adam ? " adam" : " sgd");
      for (float v : p)
        ASSERT_TRUE(std::isfinite(v));
    }
}

TEST(Threads, SetNumThreadsRefusesZero) {
  EXPECT_THROW(set_num_threads(0), ValueError);
  EXPECT_GE(num_threads(), 1);
}

/// Runs rounds(u) on `users` user threads at once (the pool at 3 threads); each returns how
/// many of its results were wrong, and none may be.
template <typename Rounds>
void expect_user_threads_right(int users, Rounds rounds) {
  at_threads(3, [&] {
    std::vector<int> wrong(static_cast<size_t>(users), 0);
    std::vector<std::thread> threads;
    for (int u = 0; u < users; ++u)
      threads.emplace_back([&, u] { wrong[static_cast<size_t>(u)] = rounds(u); });
    for (auto& t : threads)
      t.join();
    for (int u = 0; u < users; ++u)
      EXPECT_EQ(wrong[static_cast<size_t>(u)], 0) << "user thread " << u;
    return 0;
  });
}

TEST(Threads, SeveralUserThreadsGetCorrectProducts) {
  // Four user threads at once, each with its own products above the split threshold, against
  // results computed beforehand on one thread: the pool runs one job, the others run inline.
  constexpr int kUsers = 4, kRounds = 40;
  const GemmCase s{64, 257, 300};
  std::vector<std::vector<float>> a(kUsers), b(kUsers), expected(kUsers);
  Generator gen(99);
  for (int u = 0; u < kUsers; ++u) {
    a[u] = Tensor::uniform({s.m * s.k}, -1, 1, gen).to_vector<float>();
    b[u] = Tensor::uniform({s.k * s.n}, -1, 1, gen).to_vector<float>();
    expected[u] = at_threads(1, [&] { return backend_gemm(false, false, s, a[u], b[u], 0, {}); });
  }
  const auto train_expected = at_threads(1, [] { return train_mlp(3, true); });
  expect_user_threads_right(kUsers, [&](int u) {
    int wrong = 0;
    for (int r = 0; r < kRounds; ++r) {
      if (!same_bits(backend_gemm(false, false, s, a[u], b[u], 0, {}), expected[u])) ++wrong;
      if (r % 10 == 0 && !same_bits(train_mlp(3, true), train_expected)) ++wrong;
    }
    return wrong;
  });
}

// A weight that takes no gradient (a frozen layer, or no_grad) stays packed between Linear
// forwards (gemm_reusing_b) while its version holds. Every write must be seen.
std::vector<float> fresh_linear(const Tensor& x, const Tensor& w) {
  std::vector<float> y(static_cast<size_t>(x.size(0) * w.size(0)));
  const auto xs = x.to_vector<float>(), ws = w.to_vector<float>();
  kernels::cpu_backend().gemm(DType::Float32, false, true, x.size(0), w.size(0), x.size(1), 1.0,
                              xs.data(), ws.data(), 0.0, y.data());
  return y;
}

int64_t packed_reuses() {
  return kernels::cpu_backend().stats().packed_reuses;
}

#ifdef __AVX512F__
constexpr bool kPacksWeights = true;  // the AVX-512 GEMM keeps packed weights
#else
constexpr bool kPacksWeights = false;
#endif

TEST(PackedWeights, FrozenLinearReusesItsPackedWeightWithTheSameBits) {
  Generator gen(5);
  const Tensor x = Tensor::uniform({67, 300}, -1, 1, gen);
  const Tensor w = Tensor::uniform({257, 300}, -1, 1, gen);  // frozen: no grad
  const auto expected = fresh_linear(x, w);
  const int64_t before = packed_reuses();
  EXPECT_TRUE(same_bits(linear(x, w).to_vector<float>(), expected));
  EXPECT_TRUE(same_bits(linear(x, w).to_vector<float>(), expected));
  EXPECT_TRUE(same_bits(linear_relu(x, w, Tensor::zeros({257})).to_vector<float>(),
                        relu(Tensor::from_vector(expected, {67, 257})).to_vector<float>()));
  EXPECT_EQ(packed_reuses() - before, kPacksWeights ? 2 : 0);
  // A weight that trains is packed afresh by every product (its gradient flows).
  const Tensor trained = w.clone().requires_grad_();
  const int64_t trained_before = packed_reuses();
  linear(x, trained);
  linear(x, trained);
  EXPECT_EQ(packed_reuses(), trained_before);
}

TEST(PackedWeights, EveryWriteToTheWeightIsSeen) {
  Generator gen(6);
  const Tensor x = Tensor::uniform({40, 96}, -1, 1, gen);
  Tensor w = Tensor::uniform({64, 96}, -1, 1, gen);
  auto check = [&](const char* after) {
    linear(x, w);  // packs (or reuses) the current weight
    EXPECT_TRUE(same_bits(linear(x, w).to_vector<float>(), fresh_linear(x, w))) << after;
  };
  check("first use");
  w.copy_(Tensor::uniform({64, 96}, -1, 1, gen));
  check("copy_");
  w.data<float>()[5] = 3.0f;
  check("a write through data<float>()");
  static_cast<float*>(w.raw())[7] = -2.0f;
  w.bump_version();
  check("a write through raw() and bump_version()");
  {  // an optimizer step on a weight evaluated under no_grad
    w.requires_grad_(true);
    Tensor loss = sum(linear(x, w));
    loss.backward();
    optim::SGD sgd({w}, {.lr = 0.1});
    sgd.step();
    autograd::NoGradGuard no_grad;
    check("an SGD step");
  }
  {
    optim::Adam adam({w}, {.lr = 0.1});
    Tensor loss = sum(linear(x, w));
    loss.backward();
    adam.step();
    autograd::NoGradGuard no_grad;
    check("an Adam step");
  }
}

TEST(PackedWeights, FreedWeightsLeaveNothingBehind) {
  // Weights made and dropped in turn may reuse the same memory: each product must see its own.
  Generator gen(7);
  const Tensor x = Tensor::uniform({32, 128}, -1, 1, gen);
  for (int round = 0; round < 6; ++round) {
    const Tensor w = Tensor::uniform({96, 128}, -1, 1, gen);
    linear(x, w);
    EXPECT_TRUE(same_bits(linear(x, w).to_vector<float>(), fresh_linear(x, w))) << round;
  }
}

TEST(PackedWeights, SeveralUserThreadsShareFrozenWeights) {
  constexpr int kUsers = 4, kRounds = 30;
  Generator gen(8);
  const Tensor w = Tensor::uniform({257, 300}, -1, 1, gen);
  std::vector<Tensor> x;
  std::vector<std::vector<float>> expected;
  for (int u = 0; u < kUsers; ++u) {
    x.push_back(Tensor::uniform({33 + u, 300}, -1, 1, gen));
    expected.push_back(fresh_linear(x.back(), w));
  }
  expect_user_threads_right(kUsers, [&](int u) {
    int wrong = 0;
    for (int r = 0; r < kRounds; ++r) {
      // Another weight of the same shape now and then: entries come and go under the others.
      if (r % 7 == u) {
        Generator own(static_cast<uint64_t>(100 * u + r));
        linear(x[u], Tensor::uniform({257, 300}, -1, 1, own));
      }
      if (!same_bits(linear(x[u], w).to_vector<float>(), expected[u])) ++wrong;
    }
    return wrong;
  });
}

TEST(Embedding, TheLibraryLeavesTheHostsAllocatorAlone) {
#if !defined(__GLIBC__) || defined(CLARENA_FOREIGN_MALLOC)
  GTEST_SKIP() << "needs glibc's own malloc";
#else
  // glibc's adaptive mmap threshold never rises past 32 MiB, so a 48 MiB block is mmapped
  // unless someone called mallopt(M_MMAP_THRESHOLD) above it, as the CPU backend once did.
  Generator gen(1);
  matmul(Tensor::uniform({64, 300}, -1, 1, gen), Tensor::uniform({300, 257}, -1, 1, gen));
  const size_t before = mallinfo2().hblks;
  void* volatile block = std::malloc(48u << 20);  // volatile: the pair must not be elided
  const size_t after = mallinfo2().hblks;
  std::free(block);
  EXPECT_EQ(after, before + 1) << "a 48 MiB block stayed in the heap: M_MMAP_THRESHOLD was changed";
#endif
}

}  // namespace
}  // namespace clarena
