// CPU kernels: Fused optimizer updates (torch.optim.SGD and Adam rules), split over the thread
// pool.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "clarena/kernels/backend.h"
#include "thread_pool.h"

namespace clarena::kernels::cpu {

/// torch.optim.SGD for one parameter, with the branches hoisted out of the loop so that each
/// variant is a straight vectorisable pass.
template <typename T, bool kNesterov, bool kFirstStep>
void sgd_momentum(int64_t n, T* p, const T* g, T* buf, T lr, T wd, T mom, T damp) {
  for (int64_t i = 0; i < n; ++i) {
    const T d = g[i] + wd * p[i];
    const T b = kFirstStep ? d : mom * buf[i] + (T(1) - damp) * d;
    buf[i] = b;
    p[i] -= lr * (kNesterov ? d + mom * b : b);
  }
}

/// Runs fn(begin, end) over [0, n) in pool-sized chunks when n is large enough to pay for it.
template <typename Fn>
void parallel_range(int64_t n, Fn&& fn) {
  constexpr int64_t kMinChunk = 1 << 15;
  ThreadPool& pool = ThreadPool::global();
  const int64_t chunks = std::min<int64_t>(pool.size(), n / kMinChunk);
  if (chunks <= 1) return fn(int64_t(0), n);
  const int64_t step = (n / chunks + 15) / 16 * 16;
  pool.run(static_cast<int>(chunks), [&](int i) {
    const int64_t lo = i * step;
    if (lo < n) fn(lo, std::min(n, lo + step));
  });
}

template <typename T>
void sgd_update(int64_t n, T* p, const T* g, T* buf, const SGDParams& o) {
  const T lr = T(o.lr), wd = T(o.weight_decay), mom = T(o.momentum), damp = T(o.dampening);
  parallel_range(n, [&](int64_t lo, int64_t hi) {
    const int64_t len = hi - lo;
    T *pp = p + lo, *bb = buf ? buf + lo : nullptr;
    const T* gg = g + lo;
    if (mom == T(0)) {
      for (int64_t i = 0; i < len; ++i)
        pp[i] -= lr * (gg[i] + wd * pp[i]);
    } else if (o.first_step) {
      (o.nesterov ? sgd_momentum<T, true, true> : sgd_momentum<T, false, true>)(len, pp, gg, bb, lr,
                                                                                wd, mom, damp);
    } else {
      (o.nesterov ? sgd_momentum<T, true, false>
                  : sgd_momentum<T, false, false>)(len, pp, gg, bb, lr, wd, mom, damp);
    }
  });
}

template <typename T>
void adam_update(int64_t n, T* p, const T* g, T* m, T* v, const AdamParams& o) {
  const T b1 = T(o.beta1), b2 = T(o.beta2), wd = T(o.weight_decay);
  const T bc1 = T(1 - std::pow(o.beta1, static_cast<double>(o.step)));
  const T bc2_sqrt = T(std::sqrt(1 - std::pow(o.beta2, static_cast<double>(o.step))));
  const T step_size = T(o.lr) / bc1, eps = T(o.eps);
  parallel_range(n, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      T d = g[i] + wd * p[i];
      m[i] = b1 * m[i] + (T(1) - b1) * d;
      v[i] = b2 * v[i] + (T(1) - b2) * d * d;
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
    }
  });
}

#define CLARENA_TYPED(ptr) static_cast<T*>(ptr)
#define CLARENA_CTYPED(ptr) static_cast<const T*>(ptr)

}  // namespace clarena::kernels::cpu
