// The CPU backend's thread pool, and GEMMs and optimizer updates split over it.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "../kernels/cpu/thread_pool.h"
#include "clarena/clarena.h"

namespace clarena {
namespace {

TEST(ThreadPool, RunsEveryTaskExactlyOnce) {
  kernels::ThreadPool pool(3);
  EXPECT_EQ(pool.size(), 3);
  for (int job = 0; job < 2000; ++job) {  // many back-to-back jobs: polling and sleeping paths
    const int n = 1 + job % 7;
    std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
    pool.run(n, [&](int i) { hits[static_cast<size_t>(i)].fetch_add(1); });
    for (int i = 0; i < n; ++i)
      ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "job " << job;
  }
}

TEST(ThreadPool, SingleThreadRunsInline) {
  kernels::ThreadPool pool(1);
  std::vector<int> order;
  pool.run(4, [&](int i) { order.push_back(i); });
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
}

/// C = op(A) op(B) in double, the reference for the split GEMMs.
std::vector<double> reference(const std::vector<float>& a, const std::vector<float>& b, bool ta,
                              bool tb, int64_t m, int64_t n, int64_t k) {
  std::vector<double> c(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t l = 0; l < k; ++l)
        s += static_cast<double>(a[ta ? l * m + i : i * k + l]) * b[tb ? j * k + l : l * n + j];
      c[i * n + j] = s;
    }
  return c;
}

TEST(ThreadPool, SplitGemmsMatchAReference) {
  // Before the first product of this process creates the pool: three threads, so the column
  // and row splits (with a ragged last block) are exercised.
  setenv("CLARENA_NUM_THREADS", "3", 1);
  Generator gen(5);
  struct Shape3 {
    int64_t m, n, k;
  };
  for (auto [m, n, k] : {Shape3{130, 203, 97}, Shape3{517, 61, 80}, Shape3{64, 784, 128}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        Tensor a = Tensor::uniform(ta ? Shape{k, m} : Shape{m, k}, -1, 1, gen);
        Tensor b = Tensor::uniform(tb ? Shape{n, k} : Shape{k, n}, -1, 1, gen);
        auto c = matmul(a, b, ta, tb).to_vector<float>();
        auto ref = reference(a.to_vector<float>(), b.to_vector<float>(), ta, tb, m, n, k);
        for (size_t i = 0; i < c.size(); ++i)
          ASSERT_NEAR(c[i], ref[i], 1e-4 + 1e-4 * std::abs(ref[i]))
              << "m=" << m << " n=" << n << " k=" << k << " ta=" << ta << " tb=" << tb;
      }
}

TEST(ThreadPool, SplitSgdUpdateMatchesTheRule) {
  setenv("CLARENA_NUM_THREADS", "3", 1);
  const int64_t n = (1 << 17) + 37;  // several chunks and a ragged end
  Generator gen(8);
  Tensor p = Tensor::uniform({n}, -1, 1, gen), g = Tensor::uniform({n}, -1, 1, gen);
  p.requires_grad_(true);
  const auto p0 = p.to_vector<float>(), g0 = g.to_vector<float>();
  p.set_grad(g);
  optim::SGD sgd({p}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.01});
  sgd.step();
  const auto p1 = p.to_vector<float>();
  for (int64_t i = 0; i < n; ++i) {
    const float d = g0[i] + 0.01f * p0[i];  // first step: the buffer is d itself
    ASSERT_NEAR(p1[i], p0[i] - 0.1f * d, 1e-6) << i;
  }
}

}  // namespace
}  // namespace clarena
