// The CPU backend at 1, 2, 3, 7 and 16 threads, on sizes that leave remainders in every split:
// every element computed exactly once, results bitwise the same at every thread count, and
// correct when several user threads call the engine at once.
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

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
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
// 257 and 65,537 columns, 127 rows, a hidden layer of 100 at batch 64 (784→256→100).
const GemmCase kGemmCases[] = {{64, 257, 300}, {127, 7, 4099}, {3, 65537, 17}, {257, 257, 257},
                               {64, 100, 256}, {64, 256, 784}, {1, 7, 1},      {7, 17, 1},
                               {1, 65537, 7},  {127, 3, 64}};

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
  at_threads(3, [&] {
    std::vector<int> wrong(kUsers, 0);
    std::vector<std::thread> users;
    for (int u = 0; u < kUsers; ++u)
      users.emplace_back([&, u] {
        for (int r = 0; r < kRounds; ++r) {
          if (!same_bits(backend_gemm(false, false, s, a[u], b[u], 0, {}), expected[u])) ++wrong[u];
          if (r % 10 == 0 && !same_bits(train_mlp(3, true), train_expected)) ++wrong[u];
        }
      });
    for (auto& t : users)
      t.join();
    for (int u = 0; u < kUsers; ++u)
      EXPECT_EQ(wrong[u], 0) << "user thread " << u;
    return 0;
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
